"""protocol line: the upgradeable-stream demo (PING, PONG, STARTTLS, QUIT),
driven by an asyncio client that upgrades with StreamWriter.start_tls, in
front of a line server that answers PING with PONG."""
import asyncio
import socket
import ssl
import time

import pytest

from helpers import (MemTLS, Server, backend_starttls, client_ctx, free_port, recv_all, recv_until,
                     server_ctx)
from protocols import line_server, listener


def line_conf(port, backend, pki, line_block="", extra="", backend_extra=""):
    return listener(port, backend, protocol="line", name="demo", pki=pki, extra=extra,
                    block=line_block, backend_extra=backend_extra)


async def demo_client(port, ca, expect_reply=None):
    """The asyncio demo: PING, PONG, STARTTLS, start_tls, PING, PONG, QUIT."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    transcript = []
    writer.write(b"PING\r\n")
    transcript.append(await asyncio.wait_for(reader.readline(), 10))
    writer.write(b"STARTTLS\r\n")
    await writer.drain()
    if expect_reply is not None:
        transcript.append(await asyncio.wait_for(reader.readline(), 10))
    await asyncio.wait_for(writer.start_tls(client_ctx(ca), server_hostname="localhost"), 10)
    writer.write(b"PING\r\n")
    transcript.append(await asyncio.wait_for(reader.readline(), 10))
    writer.write(b"QUIT\r\n")
    transcript.append(await asyncio.wait_for(reader.readline(), 10))
    transcript.append(await asyncio.wait_for(reader.read(), 10))
    writer.close()
    return transcript


@pytest.fixture
def backend():
    srv = line_server()
    yield srv
    srv.close()


def test_asyncio_demo_client_without_reply(daemon, pki, backend):
    port = free_port()
    d = daemon(line_conf(port, backend.port, pki))
    t = asyncio.run(demo_client(port, pki.ca))
    assert t == [b"PONG\r\n", b"PONG\r\n", b"BYE\r\n", b""]
    assert bytes(backend.received) == b"PING\r\nPING\r\nQUIT\r\n"
    line = d.wait_session()[0]
    assert "upgraded=starttls" in line and "tls=TLSv1.3" in line


def test_asyncio_demo_client_with_reply_ok(daemon, pki, backend):
    port = free_port()
    d = daemon(line_conf(port, backend.port, pki, 'line = { reply = "OK"; };'))
    t = asyncio.run(demo_client(port, pki.ca, expect_reply=True))
    assert t == [b"PONG\r\n", b"OK\r\n", b"PONG\r\n", b"BYE\r\n", b""]
    assert b"STARTTLS" not in backend.received
    d.wait_session()


def test_lf_line_endings_and_custom_verb(daemon, pki, backend):
    port = free_port()
    daemon(line_conf(port, backend.port, pki, 'line = { command = "UPGRADE"; reply = "GO AHEAD"; };'))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
        c.sendall(b"PING\n")
        assert recv_until(c, b"\n") == b"PONG\r\n"
        c.sendall(b"starttls\n")  # not the configured verb: relayed
        assert recv_until(c, b"\n") == b"ECHO starttls\r\n"
        c.sendall(b"upgrade\n")
        assert recv_until(c, b"\n") == b"GO AHEAD\n"  # in the client's line ending
        t = client_ctx(pki.ca).wrap_socket(c, server_hostname="localhost")
        t.sendall(b"PING\n")
        assert recv_until(t, b"\n") == b"PONG\r\n"


def test_require_tls_refuses_lines_before_the_upgrade(daemon, pki, backend):
    port = free_port()
    daemon(line_conf(port, backend.port, pki, extra="require_tls = true;"))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
        c.sendall(b"PING\r\nQUIT\r\n")
        assert recv_until(c, b"required\r\nERR STARTTLS required\r\n") == \
            b"ERR STARTTLS required\r\nERR STARTTLS required\r\n"
        c.sendall(b"STARTTLS\r\n")
        t = client_ctx(pki.ca).wrap_socket(c, server_hostname="localhost")
        t.sendall(b"PING\r\n")
        assert recv_until(t, b"\n") == b"PONG\r\n"
    assert bytes(backend.received) == b"PING\r\n"  # only the one sent inside TLS


def test_client_hello_in_the_same_write_as_the_verb(daemon, pki, backend):
    """A client with no reply to wait for sends its ClientHello at once:
    it must be kept for the handshake, not discarded."""
    port = free_port()
    d = daemon(line_conf(port, backend.port, pki))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
        t = MemTLS(c, client_ctx(pki.ca), "localhost")
        try:
            t.obj.do_handshake()
        except ssl.SSLWantReadError:
            pass
        c.sendall(b"STARTTLS\r\n" + t.out.read())
        t.handshake()
        t.send(b"PING\r\n")
        assert t.recv() == b"PONG\r\n"
        t.close_notify()
    line = d.wait_session()[0]
    assert "discarded=" not in line and "upgraded=starttls" in line


def test_injection_behind_the_verb_is_discarded(daemon, pki, backend):
    port = free_port()
    d = daemon(line_conf(port, backend.port, pki))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
        t = MemTLS(c, client_ctx(pki.ca), "localhost")
        try:
            t.obj.do_handshake()
        except ssl.SSLWantReadError:
            pass
        c.sendall(b"STARTTLS\r\nQUIT\r\n" + t.out.read())
        t.handshake()
        t.send(b"PING\r\n")
        assert t.recv() == b"PONG\r\n"
    assert bytes(backend.received) == b"PING\r\n"
    assert "discarded=6" in d.wait_session()[0]


def test_pipelined_ping_then_starttls_answers_in_order(daemon, pki, backend):
    port = free_port()
    daemon(line_conf(port, backend.port, pki, 'line = { reply = "OK"; };'))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
        c.sendall(b"PING\r\nPING\r\nSTARTTLS\r\n")
        assert recv_until(c, b"OK\r\n") == b"PONG\r\nPONG\r\nOK\r\n"
        t = client_ctx(pki.ca).wrap_socket(c, server_hostname="localhost")
        t.sendall(b"PING\r\n")
        assert recv_until(t, b"\n") == b"PONG\r\n"


def test_overlong_line_before_tls_closes(daemon, pki, backend):
    port = free_port()
    d = daemon(line_conf(port, backend.port, pki))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
        c.sendall(b"x" * 9000)
        assert recv_all(c) == b""
    line = d.wait_session()[0]
    assert "end=protocol-error" in line and "longer than 8 KiB" in line
    assert backend.received == b""


def test_after_the_upgrade_long_lines_pass_transparently(daemon, pki, backend):
    port = free_port()
    daemon(line_conf(port, backend.port, pki))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
        c.sendall(b"STARTTLS\r\n")
        t = client_ctx(pki.ca).wrap_socket(c, server_hostname="localhost")
        t.sendall(b"y" * 20000 + b"\r\n")
        assert recv_until(t, b"\n") == b"ECHO " + b"y" * 20000 + b"\r\n"


def test_backend_bytes_before_the_first_request_inside_tls_are_dropped(daemon, pki):
    """Response injection: a line the backend sends late, after the upgrade
    but before the client asked anything inside TLS, is not delivered as if
    it answered a request made inside TLS."""
    def handler(conn, srv):
        buf = b""
        while True:
            d = conn.recv(4096)
            if not d:
                return
            buf += d
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                srv.record(line + b"\n")
                if line.strip() == b"PING" and len(srv.received) == 6:
                    conn.sendall(b"PONG\r\n")
                    time.sleep(0.3)
                    conn.sendall(b"LATE FROM CLEARTEXT\r\n")
                elif line.strip() == b"PING":
                    conn.sendall(b"PONG\r\n")

    from helpers import Server
    backend = Server(handler)
    port = free_port()
    d = daemon(line_conf(port, backend.port, pki))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
        c.sendall(b"PING\r\n")
        assert recv_until(c, b"\n") == b"PONG\r\n"
        c.sendall(b"STARTTLS\r\n")
        with client_ctx(pki.ca).wrap_socket(c, server_hostname="localhost") as t:
            time.sleep(0.8)
            t.sendall(b"PING\r\n")
            assert recv_until(t, b"\n") == b"PONG\r\n"
    d.wait_log("discarded 21 bytes from the backend .* answered nothing the client asked inside TLS")
    backend.close()


def starttls_line_server(pki, reply):
    """A line server that upgrades too: STARTTLS first (answered with reply,
    if any), then TLS with the backend certificate, then PING -> PONG and
    QUIT -> BYE.  It records each line with whether it came inside TLS."""
    ctx = server_ctx(pki.backend_cert, pki.backend_key)

    def handler(conn, srv):
        line = b""
        while not line.endswith(b"\n"):  # a byte at a time: a ClientHello may follow
            d = conn.recv(1)
            if not d:
                return
            line += d
        srv.record(b"cleartext " + line)
        if line.rstrip(b"\r\n") != b"STARTTLS":
            return
        if reply:
            conn.sendall(reply + b"\r\n")
        t = ctx.wrap_socket(conn, server_side=True)
        buf = b""
        while True:
            while b"\n" not in buf:
                d = t.recv(4096)
                if not d:
                    return
                buf += d
            line, buf = buf.split(b"\n", 1)
            srv.record(b"tls " + line + b"\n")
            word = line.rstrip(b"\r")
            t.sendall(b"PONG\r\n" if word == b"PING" else b"BYE\r\n")
            if word == b"QUIT":
                # read the proxy's close_notify, if it comes, so that the
                # close is a FIN and not a reset that destroys the BYE
                t.settimeout(0.5)
                try:
                    while t.recv(4096):
                        pass
                except (OSError, ssl.SSLError):
                    pass
                t.close()
                return
    return Server(handler)


@pytest.mark.parametrize("reply", [b"", b"OK"])
def test_backend_starttls(daemon, pki, reply):
    """backend.tls = "starttls" on a line listener: the proxy sends STARTTLS
    to the backend itself (and waits for line.reply when it is set), checks
    the backend's certificate, and relays the client's lines, cleartext ones
    included, only inside that TLS."""
    backend = starttls_line_server(pki, reply)
    port = free_port()
    block = f'line = {{ reply = "{reply.decode()}"; }};' if reply else ""
    text = line_conf(port, backend.port, pki, block, backend_extra=backend_starttls(pki))
    d = daemon(text)
    t = asyncio.run(demo_client(port, pki.ca, expect_reply=True if reply else None))
    assert t == ([b"PONG\r\n"] + ([reply + b"\r\n"] if reply else []) +
                 [b"PONG\r\n", b"BYE\r\n", b""])
    assert bytes(backend.received) == b"cleartext STARTTLS\r\ntls PING\r\ntls PING\r\ntls QUIT\r\n"
    assert "upgraded=starttls" in d.wait_session()[0]
    backend.close()


def test_backend_starttls_wrong_reply(daemon, pki):
    """The backend answers something else than line.reply: no TLS, and the
    client's lines never reach it."""
    backend = starttls_line_server(pki, b"ERR no")
    port = free_port()
    text = line_conf(port, backend.port, pki, 'line = { reply = "OK"; };',
                     backend_extra=backend_starttls(pki))
    d = daemon(text)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
        c.sendall(b"PING\r\n")
        assert recv_all(c, timeout=10) == b""
    line = d.wait_session()[0]
    assert "end=backend-tls-failed" in line, line
    assert "STARTTLS with the backend: the backend answered 'ERR no'\"" in line, line
    assert bytes(backend.received) == b"cleartext STARTTLS\r\n"
    backend.close()


def test_backend_starttls_client_half_close_during_dialogue(daemon, pki):
    """A client that sends its line and shuts its side at once (nc -N): the
    EOF must wait until the backend's upgrade is done and the line has gone
    through it, not cut the dialogue short."""
    backend = starttls_line_server(pki, b"OK")
    port = free_port()
    text = line_conf(port, backend.port, pki, 'line = { reply = "OK"; };',
                     extra="require_tls = false;", backend_extra=backend_starttls(pki))
    d = daemon(text)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
        c.sendall(b"PING\r\nQUIT\r\n")
        c.shutdown(socket.SHUT_WR)
        got = recv_all(c, timeout=10)
    assert got == b"PONG\r\nBYE\r\n", (got, bytes(backend.received), backend.errors)
    assert bytes(backend.received) == b"cleartext STARTTLS\r\ntls PING\r\ntls QUIT\r\n"
    d.wait_session()
    backend.close()
