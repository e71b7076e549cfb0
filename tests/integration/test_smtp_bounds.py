"""Guarantee 1 for what smtp holds itself: a backend reply is held whole
until its last line, up to 16 KiB (SMTP_REPLY_MAX), and at most 64
commands (SMTP_PIPELINE_MAX) await their replies.  Past the first the
client gets 421 and the session is closed; at the second the proxy stops
reading from the client.  Each test measures the daemon's RSS under the
flood, as test_floods.py does, against a bound tied to the watermarks."""
import socket
import threading
import time

from helpers import Server, free_port, wait_for
from test_floods import SLACK_KIB, WATERMARKS, Flooder, check, raw_sender
from test_smtp import Replies, smtp_conf

PIPELINE_MAX = 64
# a held session never sees its client leave: do not wait for it at exit
QUICK_EXIT = "shutdown_timeout = 1;"


def endless_ehlo_backend(line=b"250-" + b"x" * 72 + b"\r\n", total=64 << 20):
    """Greets, then answers EHLO with continuation lines and never a last
    one: 64 MiB of them, or until the proxy closes the connection."""
    def handler(conn, srv):
        conn.sendall(b"220 huge.test ESMTP\r\n")
        buf = b""
        while b"\r\n" not in buf:
            d = conn.recv(4096)
            if not d:
                return
            buf += d
        block = line * (65536 // len(line))
        sent = 0
        try:
            while sent < total:
                conn.sendall(block)
                sent += len(block)
        except OSError:
            pass
        srv.sent = sent
    srv = Server(handler)
    srv.sent = None
    return srv


def test_huge_multiline_ehlo_reply_gets_421_and_a_close(daemon, pki):
    """The proxy holds an EHLO reply until its last line to rewrite it; a
    backend that never ends one is cut off past 16 KiB: the client gets
    421, the backend connection is closed, and the daemon does not grow."""
    be = endless_ehlo_backend()
    port = free_port()
    d = daemon(smtp_conf(port, f"127.0.0.1:{be.port}", pki=pki, extra=WATERMARKS, glob=QUICK_EXIT),
               debug=False)
    got = []

    def client():
        with socket.create_connection(("127.0.0.1", port), timeout=20) as c:
            r = Replies(c)
            got.append(r.next())
            c.sendall(b"EHLO client.test\r\n")
            got.append(r.next(timeout=20))
            got.append(r.next(timeout=20))

    def flood():
        t = threading.Thread(target=client)
        t.start()
        t.join(30)
        wait_for(lambda: be.sent is not None, 30, "the backend to be cut off")
        return be.sent

    sent = check(d, "an endless EHLO reply", flood)
    assert got[0].startswith(b"220 ")
    assert got[1:] == [b"421 4.3.0 Service not available: backend protocol error\r\n", b""]
    assert sent < 64 << 20      # cut off, not read to the end
    line = d.wait_session()[0]
    assert "end=backend-error" in line and "longer than 16 KiB" in line, line
    be.close()


def silent_backend(greet=True):
    """Accepts, greets (or not), reads everything and never answers."""
    def handler(conn, srv):
        if greet:
            conn.sendall(b"220 silent.test ESMTP\r\n")
        while True:
            d = conn.recv(65536)
            if not d:
                return
            srv.record(d)
    return Server(handler)


def test_pipelined_commands_to_a_backend_that_never_answers(daemon, pki):
    """16 MiB of NOOP, allowed before TLS, pipelined to a backend that
    never answers: the proxy relays 64 of them, then stops reading from
    the client until replies come back; none come, so the client is held
    and the daemon does not grow."""
    be = silent_backend()
    port = free_port()
    d = daemon(smtp_conf(port, f"127.0.0.1:{be.port}", pki=pki, extra=WATERMARKS, glob=QUICK_EXIT),
               debug=False)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
        r = Replies(c)
        assert r.next().startswith(b"220 ")
        sent = check(d, "NOOP pipelined to a silent backend",
                     lambda: Flooder(raw_sender(c), b"NOOP\r\n" * 10000).run())
        time.sleep(0.3)
        assert bytes(be.received) == b"NOOP\r\n" * PIPELINE_MAX
        assert sent < 16 << 20, sent   # held, not read to the end
    be.close()


def test_commands_behind_a_greeting_that_never_comes(daemon, pki):
    """A backend that never even greets: the greeting is the one reply
    due, so the proxy relays 63 commands behind it and answers nothing
    itself (a 530 may not overtake the greeting): MAIL, refused under
    require_tls, waits with everything behind it."""
    be = silent_backend(greet=False)
    port = free_port()
    d = daemon(smtp_conf(port, f"127.0.0.1:{be.port}", pki=pki, extra=WATERMARKS, glob=QUICK_EXIT),
               debug=False)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
        c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        check(d, "commands behind a missing greeting",
              lambda: Flooder(raw_sender(c), b"NOOP\r\nMAIL FROM:<a@b>\r\n" * 5000).run())
        time.sleep(0.3)
        assert bytes(be.received) == b"NOOP\r\n"   # the MAIL behind it waits
        c.setblocking(True)
        c.settimeout(0.5)
        try:
            assert c.recv(4096) == b""
        except socket.timeout:
            pass        # nothing answered
    be.close()
