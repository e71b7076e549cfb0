"""protocol http: curl through the daemon as an HTTP proxy (CONNECT) to
Python's http.server, RFC 2817 Upgrade: TLS/1.0, and the refusals."""
import socket
import ssl
import subprocess
import time

import pytest

from helpers import (MemTLS, client_ctx, free_port, never_connects, recv_all, recv_until)
from protocols import WebBackend, listener


@pytest.fixture
def web():
    w = WebBackend()
    yield w
    w.close()


def http_conf(port, pki, backend=None, allow=(), extra=""):
    return listener(port, backend, protocol="http", name="web", extra=extra,
                    certificates=[(pki.server_cert, pki.server_key), (pki.alt_cert, pki.alt_key)],
                    http={"connect_allow": list(allow)} if allow else None)


def curl(port, url, pki, *extra):
    return subprocess.run(["curl", "-sS", "--max-time", "20", "--proxy", f"http://127.0.0.1:{port}",
                           "--cacert", str(pki.ca), *extra, url], capture_output=True, timeout=30)


def test_curl_connect_to_an_allowed_name(daemon, pki, web):
    port = free_port()
    d = daemon(http_conf(port, pki, backend=f"127.0.0.1:{web.port}", allow=["alt.test:443"]))
    r = curl(port, "https://alt.test/index.html", pki)
    assert r.returncode == 0, r.stderr
    assert r.stdout == b"hello from the web backend\n"
    assert web.seen == ["GET /index.html HTTP/1.1"]
    line = d.wait_session()[0]
    assert "upgraded=starttls" in line and "sni=alt.test" in line


def test_curl_connect_to_the_target_itself(daemon, pki, web):
    """Without backend.address the proxy reaches the CONNECT target."""
    port = free_port()
    d = daemon(http_conf(port, pki, allow=[f"localhost:{web.port}"]))
    r = curl(port, f"https://localhost:{web.port}/direct", pki)
    assert r.returncode == 0, r.stderr
    assert r.stdout == b"hello from the web backend\n"
    assert web.seen == ["GET /direct HTTP/1.1"]
    assert f":{web.port}" in d.wait_session()[0]


def test_wildcard_rule(daemon, pki, web):
    port = free_port()
    daemon(http_conf(port, pki, backend=f"127.0.0.1:{web.port}", allow=["*.wild.test:443"]))
    r = curl(port, "https://www.wild.test/", pki)
    assert r.returncode == 0, r.stderr
    r = curl(port, "https://wild.test/", pki)  # the suffix itself does not match
    assert r.returncode != 0 and b"403" in r.stderr


def test_target_not_allowed_gets_403(daemon, pki, web):
    port = free_port()
    d = daemon(http_conf(port, pki, backend=f"127.0.0.1:{web.port}", allow=["alt.test:443"]))
    for url in ("https://example.com/", "https://alt.test:8443/"):
        r = curl(port, url, pki)
        assert r.returncode != 0
        assert b"CONNECT tunnel failed, response 403" in r.stderr
    assert web.seen == []
    assert "http.connect_allow does not allow" in d.wait_session(count=2)[1]


def test_nothing_is_allowed_by_default(daemon, pki, web):
    port = free_port()
    daemon(http_conf(port, pki, backend=f"127.0.0.1:{web.port}"))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
        c.sendall(b"CONNECT 127.0.0.1:%d HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n" % web.port)
        assert recv_all(c).startswith(b"HTTP/1.1 403 Forbidden\r\n")


def test_plain_request_gets_426(daemon, pki, web):
    port = free_port()
    daemon(http_conf(port, pki, backend=f"127.0.0.1:{web.port}", allow=["alt.test:443"]))
    r = subprocess.run(["curl", "-si", f"http://127.0.0.1:{port}/"], capture_output=True, timeout=20)
    head = r.stdout.split(b"\r\n\r\n")[0]
    assert head.startswith(b"HTTP/1.1 426 Upgrade Required")
    assert b"Upgrade: TLS/1.0, HTTP/1.1" in head
    assert web.seen == []


def test_plain_request_is_relayed_without_require_tls(daemon, pki, web):
    port = free_port()
    daemon(http_conf(port, pki, backend=f"127.0.0.1:{web.port}", extra="require_tls = false;"))
    r = subprocess.run(["curl", "-s", f"http://127.0.0.1:{port}/plain"], capture_output=True, timeout=20)
    assert r.stdout == b"hello from the web backend\n"
    assert web.seen == ["GET /plain HTTP/1.1"]


def test_oversize_header_block_gets_431(daemon, pki, web):
    port = free_port()
    d = daemon(http_conf(port, pki, backend=f"127.0.0.1:{web.port}", allow=["alt.test:443"]))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
        c.sendall(b"CONNECT alt.test:443 HTTP/1.1\r\n")
        for i in range(400):  # a header block that never ends
            c.sendall(b"X-Filler-%d: %s\r\n" % (i, b"a" * 60))
        assert recv_all(c).startswith(b"HTTP/1.1 431 Request Header Fields Too Large\r\n")
    assert "end=protocol-error" in d.wait_session()[0]


def test_malformed_request_gets_400(daemon, pki, web):
    port = free_port()
    daemon(http_conf(port, pki, backend=f"127.0.0.1:{web.port}", allow=["alt.test:443"]))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
        c.sendall(b"CONNECT alt.test:443 HTTP/1.1\r\nHost : alt.test\r\n\r\n")
        assert recv_all(c).startswith(b"HTTP/1.1 400 Bad Request\r\n")


def test_upgrade_tls_10(daemon, pki, web):
    """RFC 2817: 101, TLS, then the original request is relayed inside TLS."""
    port = free_port()
    d = daemon(http_conf(port, pki, backend=f"127.0.0.1:{web.port}"))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
        c.sendall(b"GET /upgraded HTTP/1.1\r\nHost: localhost\r\nUpgrade: TLS/1.0\r\n"
                  b"Connection: Upgrade\r\n\r\n")
        head = recv_until(c, b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101 Switching Protocols\r\n")
        assert b"Upgrade: TLS/1.0, HTTP/1.1\r\n" in head
        with client_ctx(pki.ca).wrap_socket(c, server_hostname="localhost") as t:
            resp = recv_until(t, b"backend\n")
            assert resp.startswith(b"HTTP/1.1 200 OK")
            assert resp.endswith(b"hello from the web backend\n")
    assert web.seen == ["GET /upgraded HTTP/1.1"]
    assert "upgraded=starttls" in d.wait_session()[0]


def test_request_smuggled_behind_connect_is_discarded(daemon, pki, web):
    port = free_port()
    d = daemon(http_conf(port, pki, backend=f"127.0.0.1:{web.port}", allow=["alt.test:443"]))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
        c.sendall(b"CONNECT alt.test:443 HTTP/1.1\r\nHost: alt.test\r\n\r\n"
                  b"GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n")
        assert recv_until(c, b"\r\n\r\n") == b"HTTP/1.1 200 Connection established\r\n\r\n"
        with client_ctx(pki.ca).wrap_socket(c, server_hostname="alt.test") as t:
            t.sendall(b"GET /inside HTTP/1.1\r\nHost: alt.test\r\n\r\n")
            assert recv_until(t, b"backend\n").endswith(b"hello from the web backend\n")
    assert web.seen == ["GET /inside HTTP/1.1"]
    assert "discarded=" in d.wait_session()[0]


def test_backend_unreachable_gets_502(daemon, pki):
    port = free_port()
    daemon(http_conf(port, pki, backend=f"127.0.0.1:{free_port()}", allow=["alt.test:443"]))
    r = curl(port, "https://alt.test/", pki)
    assert r.returncode != 0 and b"CONNECT tunnel failed, response 502" in r.stderr


def test_backend_timeout_gets_504(daemon, pki):
    with never_connects() as bport:
        port = free_port()
        daemon(http_conf(port, pki, backend=f"127.0.0.1:{bport}", allow=["alt.test:443"],
                         extra="timeouts = { connect = 1; };"))
        r = curl(port, "https://alt.test/", pki)
        assert r.returncode != 0 and b"CONNECT tunnel failed, response 504" in r.stderr


def test_busy_gets_503(daemon, pki, web):
    port = free_port()
    daemon(http_conf(port, pki, backend=f"127.0.0.1:{web.port}", allow=["alt.test:443"],
                     extra="max_connections = 1;"))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as a:
        time.sleep(0.2)
        with socket.create_connection(("127.0.0.1", port), timeout=10) as b:
            assert recv_all(b).startswith(b"HTTP/1.1 503 Service Unavailable\r\n")


def test_plain_request_to_unreachable_backend_gets_502(daemon, pki):
    port = free_port()
    daemon(http_conf(port, pki, backend=f"127.0.0.1:{free_port()}", extra="require_tls = false;"))
    r = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}",
                        f"http://127.0.0.1:{port}/"], capture_output=True, timeout=20)
    assert r.stdout == b"502"
