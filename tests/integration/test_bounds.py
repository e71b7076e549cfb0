"""Guarantee 1, bounded memory, buffer by buffer: the PROXY header, the
client's input held while the backend is being reached, and the proxy's
own STARTTLS dialogue with a backend.  Each test floods one buffer and
fails if the daemon's RSS grows past a bound tied to the setting that
should hold it."""
import socket
import threading
import time

import pytest

from helpers import Server, free_port, never_connects
from protocols import PROTOCOLS, listener
from test_daemon import conf
from test_floods import FLOOD, HIGH, SLACK_KIB, WATERMARKS, Flooder, check, raw_sender


def test_bytes_instead_of_a_proxy_header_are_not_kept(daemon):
    """A connection that should start with a PROXY header and sends
    megabytes of anything else is closed once a header cannot fit."""
    port = free_port()
    d = daemon(conf(port, "127.0.0.1:9", extra='accept_proxy_protocol = true; client_tls = "none";'),
               debug=False)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
        sent = check(d, "no PROXY header", lambda: Flooder(raw_sender(c), b"x" * 65536).run())
    assert sent < FLOOD
    assert "end=proxy-header-invalid" in d.wait_session()[0]


@pytest.mark.parametrize("proto", ["tcp", "line", "smtp"])
def test_client_input_held_while_the_backend_is_reached(daemon, pki, proto):
    """The backend never answers the connect: what the client sends
    meanwhile is held up to the high watermark, then the client is paused
    (for smtp, nothing may be sent before the greeting anyway)."""
    port = free_port()
    with never_connects() as dead:
        backend = f"127.0.0.1:{dead}"
        extra = WATERMARKS + " timeouts = { connect = 30; };"
        tls = dict(client_tls="none") if proto == "tcp" else dict(pki=pki)
        d = daemon(listener(port, backend, protocol=proto, extra=extra, **tls), debug=False)
        with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
            sent = check(d, f"{proto}: input while connecting",
                         lambda: Flooder(raw_sender(c), b"PING\r\n" * 10000).run())
        assert sent < FLOOD


def flooding_backend(greeting=b""):
    """A backend that sends greeting, then bytes without end."""
    def handler(conn, srv):
        try:
            if greeting:
                conn.sendall(greeting)
            while True:
                conn.sendall(b"A" * 65536)
        except OSError:
            pass
    return Server(handler)


@pytest.mark.parametrize("proto", ["smtp", "line", "ldap"])
def test_backend_starttls_dialogue_is_bounded(daemon, pki, proto):
    """backend.tls = "starttls" towards a backend that answers the
    proxy's dialogue with an endless stream: the attempt fails closed
    within the dialogue's own limits, and the daemon does not grow."""
    greeting = {
        "smtp": b"220 flood.test ESMTP\r\n250-",   # an EHLO reply line without end
        "line": b"OK",                               # a reply line without end
        "ldap": b"\x30\x83\x00\xf0\x00\x02\x01\x01\x78",  # a 61 KiB response, then more
    }[proto]
    srv = flooding_backend(greeting)
    port = free_port()
    extra = WATERMARKS
    bup = f'tls = "starttls"; ca = "{pki.ca}"; server_name = "backend.test";'
    d = daemon(PROTOCOLS[proto].conf(port, srv.port, pki, extra=extra, backend_extra=bup),
               debug=False)
    base = d.rss_kib()
    peaks = []
    with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
        for _ in range(100):
            peaks.append(d.rss_kib())
            time.sleep(0.02)
        c.settimeout(10)
        c.recv(4096)
    line = d.wait_session()[0]
    grew = max(peaks) - base
    print(f"{proto}: backend STARTTLS flood: the daemon grew by {grew} KiB; {line}")
    assert "end=backend-tls-failed" in line, line
    assert grew < SLACK_KIB
    srv.close()
