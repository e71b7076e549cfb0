"""Guarantee 4, logs cannot be forged: every value a peer chooses is
escaped in every log line, at every level (the daemon runs with -d here,
so the debug lines are checked too)."""
import socket
import struct

from helpers import Server, client_ctx, echo_handler, free_port, recv_until
from test_daemon import certs, conf

SIG = b"\r\n\r\n\x00\r\nQUIT\n"
FORGED = b"\nsession listener=forged client=1.2.3.4 end=client-closed x=\"\r"


def assert_unforgeable(d, sessions=1):
    log = d.log()
    for line in log.splitlines():
        assert not any(ord(ch) < 0x20 and ch != "\t" for ch in line), repr(line)
    assert "listener=forged" not in log, log[-3000:]
    lines = d.session_lines()
    assert len(lines) == sessions, lines
    for line in lines:
        assert line.count(" end=") == 1 and line.count(" client=") == 1, line
    return lines


def proxy_v2_unix(src_path, dst_path=b"/run/proxy.sock"):
    body = src_path.ljust(108, b"\0") + dst_path.ljust(108, b"\0")
    return SIG + bytes([0x21, 0x31]) + struct.pack("!H", len(body)) + body


def test_proxy_header_unix_path_cannot_forge_lines_or_keys(daemon):
    """A balancer's header may name a unix socket path of any bytes: it
    lands in client= of the session line and in debug lines, escaped."""
    backend = Server(echo_handler(banner=b""))
    port = free_port()
    text = conf(port, f"127.0.0.1:{backend.port}",
                extra='accept_proxy_protocol = true; client_tls = "none";')
    d = daemon(text)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
        c.sendall(proxy_v2_unix(b"/tmp/x y" + FORGED) + b"ping\n")
        assert recv_until(c, b"ping\n") == b"ping\n"
    d.wait_session()
    line = assert_unforgeable(d)[0]
    assert " client=unix:/tmp/x\\x20y\\x0asession\\x20listener\\x3dforged" in line, line
    backend.close()


def test_sni_cannot_forge_lines_or_keys(daemon, pki):
    """An SNI name is the client's choice: escaped in the debug line that
    reports the handshake and in sni= of the session line."""
    backend = Server(echo_handler(banner=b""))
    port = free_port()
    d = daemon(conf(port, f"127.0.0.1:{backend.port}", certs(pki, (pki.server_cert, pki.server_key))))
    name = "evil.test" + FORGED.decode()
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    with client_ctx().wrap_socket(raw, server_hostname=name) as c:
        c.sendall(b"ping\n")
        assert recv_until(c, b"ping\n") == b"ping\n"
    d.wait_session()
    line = assert_unforgeable(d)[0]
    assert " sni=evil.test\\x0asession\\x20listener\\x3dforged" in line, line
    assert "sni=evil.test\\x0a" in [l for l in d.log().splitlines() if "client TLS" in l][0]
    backend.close()
