"""Guarantee 1, bounded memory, under floods of refused work: a client
that sends commands the proxy answers itself and never reads the answers
is paused like any other source whose destination is full.  Each test
floods the real daemon and fails if its peak RSS grows past a bound tied
to the listener's watermark."""
import os
import socket
import ssl
import threading
import time

import pytest

from helpers import Server, client_ctx, free_port, recv_until
from smtp_backend import SMTPBackend
from protocols import bind_request, line_server, read_reply
from test_ldap import ldap_conf
from test_line import line_conf
from test_smtp import smtp_conf

SANITIZED = os.environ.get("STP_SANITIZED") == "1"
FLOOD = 16 << 20          # bytes of refused commands
HIGH = 65536              # the listener's high watermark in these tests
WATERMARKS = f"high_watermark = {HIGH}; low_watermark = {HIGH // 4};"
# What a paused session may hold: its watermark in each direction, one
# read of input, one reply past the mark, the TLS layer's records, and the
# allocator's slack; under ASan the quarantine and redzones add their own.
SLACK_KIB = (4 * HIGH >> 10) + (24 << 10 if SANITIZED else 6 << 10)


class Flooder:
    """Sends payload (repeated) on a socket and never reads, until FLOOD
    bytes are out or the proxy has stopped taking them for a while."""

    def __init__(self, send, chunk):
        self.send, self.chunk = send, chunk
        self.sent = 0

    def run(self, stall=1.5, deadline=60):
        end = time.monotonic() + deadline
        last = time.monotonic()
        while self.sent < FLOOD and time.monotonic() < end:
            n = self.send(self.chunk)
            if n is None:
                break
            if n:
                self.sent += n
                last = time.monotonic()
            elif time.monotonic() - last > stall:
                break   # paused: the proxy reads no more
            else:
                time.sleep(0.01)
        return self.sent


def raw_sender(sock):
    sock.setblocking(False)

    def send(data):
        try:
            return sock.send(data)
        except BlockingIOError:
            return 0
        except (ConnectionResetError, BrokenPipeError):
            return None     # the proxy closed the connection
    return send


class TLSFlood:
    """A TLS client over memory BIOs that writes records and never reads
    the application data coming back (only the handshake)."""

    def __init__(self, sock, ca, name="localhost"):
        self.sock = sock
        self.inc, self.out = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.obj = client_ctx(ca).wrap_bio(self.inc, self.out, server_hostname=name)
        self.pending = b""
        sock.settimeout(10)
        while True:
            try:
                self.obj.do_handshake()
                break
            except ssl.SSLWantReadError:
                sock.sendall(self.out.read())
                self.inc.write(sock.recv(65536))
        sock.sendall(self.out.read())
        sock.setblocking(False)

    def send(self, data):
        if not self.pending:
            self.obj.write(data)
            self.pending = self.out.read()
        try:
            n = self.sock.send(self.pending)
        except BlockingIOError:
            return 0
        self.pending = self.pending[n:]
        return len(data) if not self.pending else 0


def peak_growth(d, flood):
    """Run flood() while sampling the daemon's RSS; the growth in KiB."""
    base = d.rss_kib()
    stop, peaks = threading.Event(), [base]

    def sample():
        while not stop.is_set():
            peaks.append(d.rss_kib())
            time.sleep(0.02)
    t = threading.Thread(target=sample, daemon=True)
    t.start()
    sent = flood()
    time.sleep(0.3)
    stop.set()
    t.join()
    return sent, max(peaks) - base


def check(d, name, flood):
    sent, grew = peak_growth(d, flood)
    report = f"{name}: {sent} bytes sent, the daemon grew by {grew} KiB (bound {SLACK_KIB} KiB)"
    print(report)
    assert grew < SLACK_KIB, report
    return sent


@pytest.fixture
def mta():
    b = SMTPBackend()
    yield b
    b.stop()


def test_smtp_refused_commands_from_a_client_that_never_reads(daemon, pki, mta):
    """16 MiB of MAIL under require_tls, each answered 530 by the proxy."""
    port = free_port()
    d = daemon(smtp_conf(port, f"127.0.0.1:{mta.port}", pki=pki, extra=WATERMARKS), debug=False)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
        c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        assert read_reply(c).startswith(b"220 ")
        check(d, "smtp 530 flood", lambda: Flooder(raw_sender(c), b"MAIL\r\n" * 10000).run())
    assert "MAIL" not in mta.verbs()


def test_smtp_starttls_inside_tls_from_a_client_that_never_reads(daemon, pki, mta):
    """STARTTLS again and again inside TLS, each answered 503 by the proxy."""
    port = free_port()
    d = daemon(smtp_conf(port, f"127.0.0.1:{mta.port}", pki=pki, extra=WATERMARKS), debug=False)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
        c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        assert read_reply(c).startswith(b"220 ")
        c.sendall(b"STARTTLS\r\n")
        assert read_reply(c).startswith(b"220 2.0.0")
        t = TLSFlood(c, pki.ca)
        check(d, "smtp 503 flood inside TLS", lambda: Flooder(t.send, b"STARTTLS\r\n" * 1600).run())


def test_line_refusals_from_a_client_that_never_reads(daemon, pki):
    """One refusal line per byte: 16 MiB of LF under require_tls."""
    srv = line_server()
    port = free_port()
    d = daemon(line_conf(port, srv.port, pki, extra="require_tls = true; " + WATERMARKS),
               debug=False)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
        c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        check(d, "line refusal flood", lambda: Flooder(raw_sender(c), b"\n" * 65536).run())
    assert srv.received == b""
    srv.close()


def test_line_long_refusal_text_bounded_per_reply(daemon, pki):
    """A refusal of 500 bytes for every 1-byte line: the amplification is
    bounded by the watermark, not by one read of input."""
    srv = line_server()
    port = free_port()
    block = 'line = { refusal = "%s"; };' % ("E" * 500)
    d = daemon(line_conf(port, srv.port, pki, line_block=block,
                         extra="require_tls = true; " + WATERMARKS), debug=False)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
        c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        check(d, "line 500-byte refusal flood", lambda: Flooder(raw_sender(c), b"\n" * 65536).run())
    srv.close()


def test_ldap_confidentiality_required_from_a_client_that_never_reads(daemon, pki):
    """Binds before TLS, each answered confidentialityRequired by the proxy."""
    silent = Server(lambda conn, srv: conn.recv(1))   # the directory never answers
    port = free_port()
    d = daemon(ldap_conf(port, silent.port, pki, extra=WATERMARKS), debug=False)
    burst = b"".join(bind_request(i % 120 + 1, "cn=x", "") for i in range(2000))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
        c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        check(d, "ldap confidentialityRequired flood", lambda: Flooder(raw_sender(c), burst).run())
    silent.close()


def test_a_paused_client_gets_every_reply_once_it_reads(daemon, pki, mta):
    """The pause loses nothing: 20,000 refused commands sent before reading
    get 20,000 replies, in order, then the session goes on."""
    port = free_port()
    d = daemon(smtp_conf(port, f"127.0.0.1:{mta.port}", pki=pki, extra=WATERMARKS), debug=False)
    n = 20000
    with socket.create_connection(("127.0.0.1", port), timeout=30) as c:
        assert read_reply(c).startswith(b"220 ")
        sender = threading.Thread(target=c.sendall, args=(b"MAIL FROM:<a@b>\r\n" * n + b"QUIT\r\n",))
        sender.start()
        time.sleep(1.0)   # the proxy pauses the client meanwhile
        got = b""
        c.settimeout(30)
        while not got.endswith(b"221 Bye\r\n"):
            chunk = c.recv(65536)
            if not chunk:
                break
            got += chunk
        sender.join()
    lines = got.split(b"\r\n")
    assert lines.count(b"530 5.7.0 Must issue a STARTTLS command first") == n
    assert lines[n] .startswith(b"221"), lines[n - 2:n + 2]
    assert "end=client-closed" in d.wait_session()[0] or "end=backend-closed" in d.session_lines()[0]
