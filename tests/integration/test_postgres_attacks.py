"""protocol postgres under attack: malformed startup packets, cleartext
injected behind the SSLRequest (the server's CVE-2021-23214), a ClientHello
in 1-byte segments, a second upgrade inside TLS, a server that answers
the proxy's SSLRequest with bytes after its 'S' (the client's
CVE-2021-23222) or with 'N', a CancelRequest that must reach the server
before any close, and floods (Guarantee 1, the daemon's RSS measured)."""
import socket
import ssl
import struct
import time

import pytest

from helpers import (MemTLS, Server, backend_starttls, client_ctx, free_port, never_connects,
                     server_ctx, wait_for)
from postgres_backend import Postgres
from test_floods import FLOOD, SLACK_KIB, WATERMARKS, Flooder, peak_growth, raw_sender
from protocols import PG_GSSENC_REQUEST as GSSENC_REQUEST
from test_postgres import (SSL_REQUEST, cancel_request, eof, login_trust, pg_conf, query,
                           read_error, ready_query, recv_exact, startup, upgrade)


@pytest.fixture(scope="module")
def pg():
    s = Postgres()
    yield s
    s.stop()


def refused(port, data, code="08P01", tls=None):
    """data on a new connection (inside TLS after an SSLRequest with tls):
    an ErrorResponse with code, then the proxy closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
        s = upgrade(c, tls) if tls is not None else c
        s.sendall(data)
        f = read_error(s)
        assert (f["S"], f["C"]) == ("FATAL", code), f
        assert eof(s)
        return f["M"]


@pytest.mark.parametrize("name,packet,message", [
    ("length 7", struct.pack("!II", 7, 196608), "invalid length of startup packet"),
    ("length 10001", struct.pack("!II", 10001, 196608) + b"\0" * 100,
     "invalid length of startup packet"),
    ("length 2^32-1", b"\xff\xff\xff\xff", "invalid length of startup packet"),
    ("length 0", b"\0\0\0\0", "invalid length of startup packet"),
    ("protocol 2.0", startup("alice", version=0x00020000),
     "unsupported frontend protocol: the server supports 3.0"),
    ("unknown request code", struct.pack("!II", 8, 80877199),
     "unsupported frontend protocol: the server supports 3.0"),
    ("CancelRequest of 12 bytes", struct.pack("!III", 12, 80877102, 1),
     "invalid length of CancelRequest"),
    ("CancelRequest of 20 bytes", struct.pack("!IIIII", 20, 80877102, 1, 2, 3),
     "invalid length of CancelRequest"),
    ("SSLRequest of 12 bytes", struct.pack("!III", 12, 80877103, 0),
     "invalid length of SSLRequest or GSSENCRequest"),
    ("a second GSSENCRequest", None, "unexpected GSSENCRequest"),
])
def test_malformed_startup_packets_get_08p01(daemon, pki, pg, name, packet, message):
    port = free_port()
    d = daemon(pg_conf(port, f"127.0.0.1:{pg.port}", pki, extra="require_tls = false;"))
    before = pg.received()
    if packet is None:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
            c.sendall(GSSENC_REQUEST)
            assert recv_exact(c, 1) == b"N"
            c.sendall(GSSENC_REQUEST)
            f = read_error(c)
            assert (f["C"], f["M"]) == ("08P01", message)
            assert eof(c)
    else:
        assert refused(port, packet) == message
    line = d.wait_session()[0]
    assert "end=protocol-error" in line and "backend=-" in line
    time.sleep(0.2)
    assert pg.received() == before


@pytest.mark.parametrize("name,packet", [
    ("SSLRequest", SSL_REQUEST),
    ("GSSENCRequest", GSSENC_REQUEST),
    ("length 10001", struct.pack("!II", 10001, 196608)),
])
def test_refused_inside_tls(daemon, pki, pg, name, packet):
    """A second upgrade inside TLS is refused, never a second handshake."""
    port = free_port()
    d = daemon(pg_conf(port, f"127.0.0.1:{pg.port}", pki))
    refused(port, packet, tls=pki)
    assert d.log().count("handshake -> ") == 1
    assert "backend=-" in d.wait_session()[0]


def test_startupmessage_of_10000_bytes_is_relayed(daemon, pki, pg):
    """The bound is the server's own: 10,000 bytes is still a packet."""
    port = free_port()
    d = daemon(pg_conf(port, f"127.0.0.1:{pg.port}", pki))
    pad = "x" * (10000 - len(startup("trustuser", application_name="")))
    packet = startup("trustuser", application_name=pad)
    assert len(packet) == 10000
    with socket.create_connection(("127.0.0.1", port), timeout=10) as c, upgrade(c, pki) as t:
        t.sendall(packet)
        assert recv_exact(t, 9) == b"R\0\0\0\x08\0\0\0\0"  # AuthenticationOk
    assert "upgraded=starttls" in d.wait_session()[0]


def test_cleartext_injected_behind_the_sslrequest_is_discarded(daemon, pki, pg):
    """CVE-2021-23214 for the proxy: a StartupMessage and a query sent in the
    same write as the SSLRequest are discarded and counted, never relayed
    as if they came inside TLS."""
    port = free_port()
    d = daemon(pg_conf(port, f"127.0.0.1:{pg.port}", pki))
    injected = startup("alice") + query("DROP TABLE IF EXISTS injected")
    before = len(pg.connections())
    with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
        c.sendall(SSL_REQUEST + injected)
        assert recv_exact(c, 1) == b"S"
        with client_ctx(pki.ca).wrap_socket(c, server_hostname="localhost") as t:
            login_trust(t)  # the first thing the server reads is this one
            assert ready_query(t, "SELECT current_user") == ["trustuser"]
    line = d.wait_session()[0]
    assert f"discarded={len(injected)} " in line
    assert "STARTTLS command injection attempt" in d.log()
    conns = pg.connections()[before:]
    assert len(conns) == 1 and "user=trustuser" in conns[0]


def test_a_second_sslrequest_in_the_same_write_is_discarded(daemon, pki, pg):
    port = free_port()
    d = daemon(pg_conf(port, f"127.0.0.1:{pg.port}", pki))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
        c.sendall(SSL_REQUEST + SSL_REQUEST)
        assert recv_exact(c, 1) == b"S"
        with client_ctx(pki.ca).wrap_socket(c, server_hostname="localhost") as t:
            login_trust(t)
    assert "discarded=8 " in d.wait_session()[0]


def test_gssencrequest_and_sslrequest_in_one_write(daemon, pki, pg):
    """Both are answered in order, 'N' then 'S'; nothing is discarded."""
    port = free_port()
    d = daemon(pg_conf(port, f"127.0.0.1:{pg.port}", pki))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
        c.sendall(GSSENC_REQUEST + SSL_REQUEST)
        assert recv_exact(c, 2) == b"NS"
        with client_ctx(pki.ca).wrap_socket(c, server_hostname="localhost") as t:
            login_trust(t)
    assert "discarded" not in d.wait_session()[0]


def split_handshake(c, ctx, name="localhost"):
    """A ClientHello with every byte in its own TCP segment; then the rest
    of the handshake over memory BIOs."""
    c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    t = MemTLS(c, ctx, name)
    try:
        t.obj.do_handshake()
    except ssl.SSLWantReadError:
        pass
    hello = t.out.read()
    for i in range(len(hello)):
        c.sendall(hello[i:i + 1])
        time.sleep(0.0005)
    t.handshake()
    return t


def memtls_message(t):
    buf = b""
    while len(buf) < 5 or len(buf) < 1 + struct.unpack("!I", buf[1:5])[0]:
        d = t.recv()
        if not d:
            raise EOFError(buf)
        buf += d
    return buf


@pytest.mark.parametrize("direct", [False, True])
def test_client_hello_in_one_byte_segments(daemon, pki, pg, direct):
    """After the SSLRequest, and as direct TLS, where the first segment
    holds only the record's first byte."""
    port = free_port()
    d = daemon(pg_conf(port, f"127.0.0.1:{pg.port}", pki))
    ctx = client_ctx(pki.ca)
    ctx.set_alpn_protocols(["postgresql"])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
        if not direct:
            c.sendall(SSL_REQUEST)
            assert recv_exact(c, 1) == b"S"
        t = split_handshake(c, ctx)
        assert t.obj.selected_alpn_protocol() == "postgresql"
        t.send(startup("trustuser"))
        assert memtls_message(t)[:9] == b"R\0\0\0\x08\0\0\0\0"
        t.close_notify()
    line = d.wait_session()[0]
    assert ("upgraded=implicit" if direct else "upgraded=starttls") in line
    assert "discarded" not in line


# A server that misbehaves after the proxy's SSLRequest.  No real server
# does: these are small fakes that answer just that.

def fake_server(reply, later=b""):
    def handler(conn, srv):
        srv.record(recv_exact(conn, 8))
        conn.sendall(reply)
        if later:
            time.sleep(0.3)
            conn.sendall(later)
        conn.settimeout(5)
        while True:
            d = conn.recv(4096)
            if not d:
                return
            srv.record(d)
    return Server(handler)


@pytest.mark.parametrize("name,reply,later,reason", [
    ("bytes after S in the same write", b"S" + b"E\0\0\0\x08junk", b"",
     "9 bytes after its 'S', before TLS"),
    ("bytes after S later", b"S", b"E\0\0\0\x08junk", "TLS with backend"),
    ("N", b"N", b"", "refused ('N'"),
    ("an ErrorResponse", b"E\0\0\0\x08junk", b"", "answered with an ErrorResponse"),
])
def test_backend_sslrequest_answer_must_be_s_alone(daemon, pki, name, reply, later, reason):
    """CVE-2021-23222 for the proxy as the server's client: whatever is not
    'S' alone fails the backend closed; the client gets 08006 inside its
    TLS, after its StartupMessage, and nothing of the client's reaches the
    server."""
    srv = fake_server(reply, later)
    try:
        port = free_port()
        d = daemon(pg_conf(port, f"127.0.0.1:{srv.port}", pki, backend_extra=backend_starttls(pki)))
        with socket.create_connection(("127.0.0.1", port), timeout=10) as c, upgrade(c, pki) as t:
            t.sendall(startup("alice"))
            assert read_error(t, 15)["C"] == "08006"
            assert eof(t)
        line = d.wait_session()[0]
        assert "end=backend-tls-failed" in line and reason in line, line
        time.sleep(0.2)
        assert bytes(srv.received[:8]) == SSL_REQUEST
        assert b"alice" not in bytes(srv.received)
    finally:
        srv.close()


@pytest.mark.parametrize("backend_tls", [False, True])
def test_cancel_reaches_the_backend_before_any_close(daemon, pki, backend_tls):
    """A client that sends its CancelRequest and closes at once: the 16
    bytes still reach the backend, over the backend leg's TLS too, before
    the proxy closes that connection."""
    srv = Server(lambda conn, srv: record_until_eof(conn, srv),
                 tls=server_ctx(pki.backend_cert, pki.backend_key) if backend_tls else None)
    try:
        port = free_port()
        extra = (f'tls = "implicit"; ca = "{pki.ca}"; server_name = "backend.test";'
                 if backend_tls else "")
        d = daemon(pg_conf(port, f"127.0.0.1:{srv.port}", pki, backend_extra=extra))
        for _ in range(5):
            with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
                c.sendall(cancel_request(4242, 0x5eed) + b"more bytes that are nobody's")
        wait_for(lambda: len(d.session_lines()) == 5, 15, "five sessions")
        wait_for(lambda: bytes(srv.received) == cancel_request(4242, 0x5eed) * 5, 5,
                 "the five CancelRequests, whole, at the backend")
        assert srv.errors == []
    finally:
        srv.close()


def record_until_eof(conn, srv):
    conn.settimeout(10)
    while True:
        d = conn.recv(4096)
        if not d:
            return
        srv.record(d)


def test_cancel_inside_tls_is_relayed(daemon, pki):
    srv = Server(lambda conn, srv: record_until_eof(conn, srv))
    try:
        port = free_port()
        d = daemon(pg_conf(port, f"127.0.0.1:{srv.port}", pki))
        with socket.create_connection(("127.0.0.1", port), timeout=10) as c, upgrade(c, pki) as t:
            t.sendall(cancel_request(7, 8))
            wait_for(lambda: bytes(srv.received) == cancel_request(7, 8), 5, "the cancel")
        line = d.wait_session()[0]
        assert "upgraded=starttls" in line
    finally:
        srv.close()


def test_backend_offers_alpn(daemon, pki):
    """Towards a backend over TLS from the first byte (PostgreSQL 17's direct
    TLS, which requires it) the proxy offers ALPN postgresql."""
    ctx = server_ctx(pki.backend_cert, pki.backend_key)
    ctx.set_alpn_protocols(["postgresql"])

    def handler(conn, srv):
        srv.record((conn.selected_alpn_protocol() or "none").encode())
    srv = Server(handler, tls=ctx)
    try:
        port = free_port()
        d = daemon(pg_conf(port, f"127.0.0.1:{srv.port}", pki,
                           backend_extra=f'tls = "implicit"; ca = "{pki.ca}"; '
                                         'server_name = "backend.test";'))
        with socket.create_connection(("127.0.0.1", port), timeout=10) as c, upgrade(c, pki) as t:
            t.sendall(startup("alice"))
            wait_for(lambda: bytes(srv.received) == b"postgresql", 10, "the backend's ALPN")
        d.wait_session()
    finally:
        srv.close()


# Guarantee 1

def test_a_flood_after_a_cancelrequest_is_dropped_in_bounded_memory(daemon, pki):
    """The server keeps the cancel connection open until the client has
    gone; the client floods it meanwhile."""
    srv = Server(lambda conn, srv: record_until_eof(conn, srv))
    try:
        port = free_port()
        d = daemon(pg_conf(port, f"127.0.0.1:{srv.port}", pki, extra=WATERMARKS), debug=False)
        with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
            c.sendall(cancel_request(1, 2))
            wait_for(lambda: len(srv.received) == 16, 5, "the cancel")
            sent, grew = peak_growth(d, lambda: Flooder(raw_sender(c), b"\0" * 65536).run())
        report = f"cancel flood: {sent} bytes, grew {grew} KiB (bound {SLACK_KIB} KiB)"
        print(report)
        assert sent >= FLOOD, report  # dropped as it comes, never paused
        assert grew < SLACK_KIB, report
        assert bytes(srv.received) == cancel_request(1, 2)
    finally:
        srv.close()


def test_a_flood_behind_a_startupmessage_waits_in_the_kernel(daemon, pki):
    """The StartupMessage waits for a backend that never answers the
    connect; nothing after it is read meanwhile, and the connect timeout
    ends it with 08006."""
    with never_connects() as dead:
        port = free_port()
        d = daemon(pg_conf(port, f"127.0.0.1:{dead}", pki,
                           extra=WATERMARKS + " timeouts = { connect = 4; };"), debug=False)
        with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
            t = upgrade(c, pki)
            t.sendall(startup("alice"))
            sent, grew = peak_growth(d, lambda: Flooder(lambda b: tls_send(t, b), b"\0" * 16384)
                                     .run(stall=1.0, deadline=3))
            report = f"held flood: {sent} bytes, grew {grew} KiB (bound {SLACK_KIB} KiB)"
            print(report)
            assert grew < SLACK_KIB, report
            assert sent < FLOOD
            t.setblocking(True)
            f = read_error(t, 15)
            assert f["C"] == "08006" and "did not answer in time" in f["M"]
        assert "end=backend-timeout" in d.wait_session()[0]


def tls_send(t, data):
    t.setblocking(False)
    try:
        return t.send(data)
    except (ssl.SSLWantWriteError, BlockingIOError):
        return 0
