"""Guarantee 1 for pop3: floods from clients that never read, and from a
backend whose reply never ends, against the real daemon in front of
Dovecot (or a fake where Dovecot would not do it).  Each test fails if
the daemon's peak RSS grows past a bound tied to the listener's
watermark (test_floods.py's SLACK_KIB)."""
import socket
import time

import pytest

from helpers import Server, free_port
from test_floods import WATERMARKS, Flooder, TLSFlood, check, raw_sender
from test_pop3 import GREETING, STLS_OK, Lines, pop3_conf, running_dovecot


@pytest.fixture
def dovecot():
    with running_dovecot() as d:
        yield d


def test_refused_logins_from_a_client_that_never_reads(daemon, pki, dovecot):
    """16 MiB of USER under require_tls, each answered -ERR [AUTH] by the
    proxy, none of it read by the client, none of it seen by Dovecot."""
    port = free_port()
    d = daemon(pop3_conf(port, f"127.0.0.1:{dovecot.pop3_port}", pki, extra=WATERMARKS),
               debug=False)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
        c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        assert Lines(c).line() == GREETING
        sent = check(d, "pop3 -ERR [AUTH] flood",
                     lambda: Flooder(raw_sender(c), b"USER x\r\n" * 8192).run())
        assert sent > 1 << 20
    assert dovecot.logins() == [] and "client in: AUTH" not in dovecot.log()


def test_stls_inside_tls_from_a_client_that_never_reads(daemon, pki, dovecot):
    """STLS again and again inside TLS, each answered -ERR TLS already
    active by the proxy."""
    port = free_port()
    d = daemon(pop3_conf(port, f"127.0.0.1:{dovecot.pop3_port}", pki, extra=WATERMARKS),
               debug=False)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
        c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        r = Lines(c)
        assert r.line() == GREETING
        c.sendall(b"STLS\r\n")
        assert r.line() == STLS_OK
        t = TLSFlood(c, pki.ca)
        check(d, "pop3 -ERR TLS already active flood inside TLS",
              lambda: Flooder(t.send, b"STLS\r\n" * 2700).run())


def test_capa_flood_relayed_to_dovecot(daemon, pki, dovecot):
    """CAPA is relayed: Dovecot answers each, the proxy rewrites each, the
    client reads none.  The queue of open commands and the watermarks
    pause the client and the backend; nothing is held past them."""
    port = free_port()
    d = daemon(pop3_conf(port, f"127.0.0.1:{dovecot.pop3_port}", pki, extra=WATERMARKS),
               debug=False)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
        c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        assert Lines(c).line() == GREETING
        check(d, "pop3 CAPA flood", lambda: Flooder(raw_sender(c), b"CAPA\r\n" * 10000).run())


def endless_body_backend(total=64 << 20):
    """Answers RETR with a body that goes on for total bytes (dot-stuffed
    lines, "+OK" lines among them) and never ends, before any login."""
    line = b"..+OK " + b"x" * 90 + b"\r\n"

    def handler(conn, srv):
        conn.sendall(b"+OK endless\r\n")
        buf = b""
        while b"\n" not in buf:
            d = conn.recv(4096)
            if not d:
                return
            buf += d
        conn.sendall(b"+OK body follows\r\n")
        block, sent = line * 680, 0
        try:
            while sent < total:
                conn.sendall(block)
                sent += len(block)
        except OSError:
            pass
        srv.record(str(sent).encode())
    return Server(handler)


def test_an_endless_body_to_a_client_that_never_reads(daemon, pki):
    """A multi-line body is streamed, never held whole: a backend sending
    64 MiB of body to a client that does not read is paused at the
    watermark, and the STLS the client pipelined behind RETR is never
    answered."""
    srv = endless_body_backend()
    port = free_port()
    d = daemon(pop3_conf(port, f"127.0.0.1:{srv.port}", pki,
                         extra="require_tls = false; " + WATERMARKS), debug=False)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
        c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        assert Lines(c).line() == b"+OK endless\r\n"

        def flood():
            c.sendall(b"RETR 1\r\nSTLS\r\n")
            time.sleep(2)
            return 0
        check(d, "pop3 endless body", flood)
        # now read some: body, and never the proxy's +OK in it
        c.settimeout(5)
        got = b""
        while len(got) < 256 << 10:
            x = c.recv(1 << 16)
            assert x, "the proxy closed the connection"
            got += x
        assert got.startswith(b"+OK body follows\r\n..+OK x") and b"Begin TLS" not in got
    srv.close()
