"""imap, Guarantee 1: floods of refused commands from a client that never
reads, literals of any announced size (refused ones skipped, relayed
ones streamed), a backend that never reads or never answers, and a
backend response with an endless literal to a client that never reads.
Each test measures the daemon's RSS under the flood, as test_floods.py
does, against a bound tied to the listener's watermarks; what reached
the backend is checked too."""
import socket
import time

import pytest

from dovecot_backend import Dovecot
from helpers import Server, free_port
from test_floods import SLACK_KIB, WATERMARKS, Flooder, TLSFlood, check, raw_sender
from test_imap import Imap, auth_requests, connect, imap_conf, starttls

PIPELINE_MAX = 32
# a held session never sees its client leave: do not wait for it at exit
QUICK_EXIT = "shutdown_timeout = 1;"


@pytest.fixture
def dovecot(tmp_path):
    d = Dovecot(tmp_path)
    yield d
    d.stop()


def small_rcvbuf(c):
    c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)


def test_refused_logins_from_a_client_that_never_reads(daemon, pki, dovecot):
    """16 MiB of LOGIN before TLS, each answered NO [PRIVACYREQUIRED] by
    the proxy, read by no one: the client is paused at the watermark, and
    Dovecot sees no authentication."""
    port = free_port()
    d = daemon(imap_conf(port, dovecot.imap_port, pki, extra=WATERMARKS), debug=False)
    c, r = connect(port)
    with c:
        small_rcvbuf(c)
        r.line()
        sent = check(d, "imap NO [PRIVACYREQUIRED] flood",
                     lambda: Flooder(raw_sender(c), b"a LOGIN alice pw\r\n" * 4000).run())
        assert sent < 16 << 20, "the proxy never paused the client"
    assert auth_requests(dovecot) == []


def test_starttls_inside_tls_from_a_client_that_never_reads(daemon, pki, dovecot):
    """STARTTLS again and again inside TLS, each answered BAD by the proxy."""
    port = free_port()
    d = daemon(imap_conf(port, dovecot.imap_port, pki, extra=WATERMARKS), debug=False)
    c, r = connect(port)
    with c:
        small_rcvbuf(c)
        r.line()
        c.sendall(b"S STARTTLS\r\n")
        assert r.line() == b"S OK Begin TLS negotiation now\r\n"
        t = TLSFlood(c, pki.ca)
        check(d, "imap BAD TLS already active flood inside TLS",
              lambda: Flooder(t.send, b"a STARTTLS\r\n" * 1300).run())


def test_refused_literals_are_skipped_not_held(daemon, pki, dovecot):
    """LOGIN with a non-synchronizing literal of just under 8 KiB, again
    and again: the data is skipped as it comes, one NO per command."""
    port = free_port()
    d = daemon(imap_conf(port, dovecot.imap_port, pki, extra=WATERMARKS), debug=False)
    one = b"a LOGIN {8100+}\r\n" + b"x" * 8100 + b"\r\n"
    c, r = connect(port)
    with c:
        small_rcvbuf(c)
        r.line()
        check(d, "imap refused LOGIN {8100+} flood",
              lambda: Flooder(raw_sender(c), one * 64).run())
    assert auth_requests(dovecot) == []


class Deaf:
    """An IMAP server that greets (offering LITERAL+) and then reads
    nothing, or reads and answers nothing (answers=False)."""

    def __init__(self, reads=False, greeting=b"* OK [CAPABILITY IMAP4rev1 LITERAL+] deaf\r\n"):
        self.received = bytearray()

        def handler(conn, srv):
            conn.sendall(greeting)
            while reads:
                d = conn.recv(65536)
                if not d:
                    return
                self.received += d
            time.sleep(60)
        self.srv = Server(handler)
        self.port = self.srv.port

    def close(self):
        self.srv.close()


def test_relayed_literal_to_a_backend_that_never_reads(daemon, pki):
    """Inside TLS, ID with a literal announced as 1 GiB to a backend that
    reads nothing: the literal is streamed, never held, so the proxy stops
    reading at the watermark towards the backend."""
    be = Deaf()
    port = free_port()
    d = daemon(imap_conf(port, be.port, pki, extra=WATERMARKS, glob=QUICK_EXIT), debug=False)
    c, r = connect(port)
    with c:
        r.line()
        c.sendall(b"S STARTTLS\r\n")
        assert r.line() == b"S OK Begin TLS negotiation now\r\n"
        t = TLSFlood(c, pki.ca)
        while not t.send(b"a ID (\"name\" {1073741824+}\r\n"):
            time.sleep(0.01)
        sent = check(d, "imap 1 GiB literal to a backend that never reads",
                     lambda: Flooder(t.send, b"x" * 65536).run())
        assert sent < 16 << 20, "the proxy never paused the client"
    be.close()


def test_pipelined_commands_to_a_backend_that_never_answers(daemon, pki):
    """NOOPs with tags of their own, allowed before TLS, to a backend
    that reads but never answers: 32 are relayed, then the proxy reads no
    more from the client."""
    be = Deaf(reads=True)
    port = free_port()
    d = daemon(imap_conf(port, be.port, pki, extra=WATERMARKS, glob=QUICK_EXIT), debug=False)
    burst = b"".join(b"t%d NOOP\r\n" % i for i in range(20000))
    c, r = connect(port)
    with c:
        r.line()
        sent = check(d, "imap NOOP pipelined to a silent backend",
                     lambda: Flooder(raw_sender(c), burst).run())
        time.sleep(0.3)
        assert bytes(be.received) == b"".join(b"t%d NOOP\r\n" % i for i in range(PIPELINE_MAX))
        assert sent < 16 << 20, "the proxy never paused the client"
    be.close()


def test_commands_behind_a_greeting_that_never_comes(daemon, pki):
    """A backend that never greets: a LOGIN, which the proxy refuses,
    waits for the greeting (its NO may not come first), and so does
    everything behind it, the NOOP that would be relayed included."""
    be = Deaf(reads=True, greeting=b"")
    port = free_port()
    d = daemon(imap_conf(port, be.port, pki, extra=WATERMARKS, glob=QUICK_EXIT), debug=False)
    c, r = connect(port)
    with c:
        small_rcvbuf(c)
        check(d, "imap commands behind a missing greeting",
              lambda: Flooder(raw_sender(c), b"b LOGIN x y\r\na NOOP\r\n" * 5000).run())
        time.sleep(0.3)
        assert bytes(be.received) == b""
        assert r.quiet(0.5)
    be.close()


def test_endless_backend_literal_to_a_client_that_never_reads(daemon, pki):
    """A backend that answers NOOP with an untagged response whose literal
    never ends, to a client that reads nothing: the literal is streamed,
    the backend paused at the watermark towards the client."""
    def handler(conn, srv):
        conn.sendall(b"* OK fake ready\r\n")
        f = conn.makefile("rb")
        tag = f.readline().split(b" ")[0]
        conn.sendall(b"* 1 FETCH (BODY[] {1073741824}\r\n")
        block = b"y" * 65536
        srv.sent = 0
        try:
            while srv.sent < 256 << 20:
                conn.sendall(block)
                srv.sent += len(block)
        except OSError:
            pass
        conn.sendall(b")\r\n" + tag + b" OK done\r\n")
    be = Server(handler)
    be.sent = 0
    port = free_port()
    d = daemon(imap_conf(port, be.port, pki, extra=WATERMARKS + " require_tls = false;",
                         glob=QUICK_EXIT), debug=False)
    c, r = connect(port)
    with c:
        small_rcvbuf(c)
        r.line()

        def flood():
            c.sendall(b"a NOOP\r\n")
            last, start = -1, time.monotonic()
            while time.monotonic() - start < 20:
                time.sleep(0.5)
                if be.sent == last:
                    break       # paused
                last = be.sent
            return be.sent
        sent = check(d, "imap endless backend literal to a client that never reads", flood)
        assert sent < 64 << 20, "the proxy never paused the backend"
    be.close()
