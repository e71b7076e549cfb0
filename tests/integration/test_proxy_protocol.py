"""The PROXY protocol: HAProxy (Debian's haproxy) in front sends v1 and v2
headers, and the proxy sends v1 and v2 headers to a backend that reads
them."""
import ipaddress
import socket
import ssl
import struct
import subprocess
import time

import pytest

from helpers import (Server, client_ctx, echo_handler, free_port, recv_all, recv_until, tls_connect,
                     wait_for)
from protocols import listener

SIG = b"\r\n\r\n\x00\r\nQUIT\n"


class HAProxy:
    """haproxy in TCP mode, in the foreground, in front of servers."""

    def __init__(self, tmp_path, servers, send="send-proxy-v2"):
        self.port = free_port()
        lines = "\n".join(f"  server s{i} 127.0.0.1:{p} {send}" for i, p in enumerate(servers))
        self.cfg = tmp_path / "haproxy.cfg"
        self.cfg.write_text(f"""
global
  maxconn 1000
defaults
  mode tcp
  timeout connect 2s
  timeout client 30s
  timeout server 30s
  retries 3
  option redispatch
frontend front
  bind 127.0.0.1:{self.port}
  default_backend back
backend back
  balance roundrobin
{lines}
""")
        self.log = open(tmp_path / "haproxy.log", "wb")
        self.proc = subprocess.Popen(["haproxy", "-f", str(self.cfg), "-db"],
                                     stdout=self.log, stderr=subprocess.STDOUT)
        wait_for(lambda: self._listening(), 10, "haproxy to listen")

    def _listening(self):
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
            return True
        except OSError:
            return False

    def stop(self):
        self.proc.terminate()
        self.proc.wait(10)
        self.log.close()


def tls_listener(port, backend, pki, extra="", backend_extra=""):
    return listener(port, backend, name="imaps", pki=pki, extra=extra, backend_extra=backend_extra)


@pytest.mark.parametrize("send", ["send-proxy", "send-proxy-v2"])
def test_client_address_from_haproxy(daemon, pki, tmp_path, send):
    echo = Server(echo_handler())
    port = free_port()
    d = daemon(tls_listener(port, echo.port, pki, "accept_proxy_protocol = true;"))
    lb = HAProxy(tmp_path, [port], send)
    try:
        with tls_connect(lb.port, pki.ca) as c:
            me = c.getsockname()
            assert recv_until(c, b"\n") == b"hello from the backend\n"
        # the real client's address, not haproxy's (haproxy's own readiness
        # probe made a session first, logged with the probe's address)
        d.wait_log(rf"session listener=imaps client=127\.0\.0\.1:{me[1]} .*upgraded=implicit")
    finally:
        lb.stop()
    echo.close()


def test_connection_without_a_header_is_closed(daemon, pki):
    echo = Server(echo_handler())
    port = free_port()
    d = daemon(tls_listener(port, echo.port, pki, "accept_proxy_protocol = true;"))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
        c.sendall(b"\x16\x03\x01\x00\x05hello")  # TLS, not a PROXY header
        assert recv_all(c) == b""
    line = d.wait_session()[0]
    assert "end=proxy-header-invalid" in line
    assert echo.connections == 0
    # a header with bytes of the client behind it in the same write
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        me = raw.getsockname()
        raw.sendall(b"PROXY TCP4 192.0.2.7 127.0.0.1 40000 %d\r\n" % port)
        with client_ctx(pki.ca).wrap_socket(raw, server_hostname="localhost") as c:
            assert recv_until(c, b"\n") == b"hello from the backend\n"
    assert "client=192.0.2.7:40000 " in d.wait_session(count=2)[1]
    echo.close()


def header_server():
    """Reads the PROXY header the proxy sends, records it, then echoes."""
    def handler(conn, srv):
        conn.settimeout(10)
        buf = b""
        while not (buf.startswith(b"PROXY") and b"\r\n" in buf) and not (
                buf.startswith(SIG) and len(buf) >= 16 and len(buf) >= 16 + struct.unpack("!H", buf[14:16])[0]):
            d = conn.recv(4096)
            if not d:
                return
            buf += d
        if buf.startswith(SIG):
            n = 16 + struct.unpack("!H", buf[14:16])[0]
        else:
            n = buf.index(b"\r\n") + 2
        srv.record(buf[:n])
        rest = buf[n:]
        conn.sendall(b"hello from the backend\n" + rest)
        while True:
            d = conn.recv(4096)
            if not d:
                return
            conn.sendall(d)
    return Server(handler)


def parse_v2(h):
    assert h[:12] == SIG and h[12] == 0x21
    fam, length = h[13], struct.unpack("!H", h[14:16])[0]
    body = h[16:16 + length]
    assert fam == 0x11
    src = str(ipaddress.IPv4Address(body[0:4]))
    dst = str(ipaddress.IPv4Address(body[4:8]))
    sport, dport = struct.unpack("!HH", body[8:12])
    tlvs, i = {}, 12
    while i < len(body):
        t, l = body[i], struct.unpack("!H", body[i + 1:i + 3])[0]
        tlvs[t] = body[i + 3:i + 3 + l]
        i += 3 + l
    return src, sport, dst, dport, tlvs


def test_v1_header_to_the_backend(daemon, pki):
    backend = header_server()
    port = free_port()
    d = daemon(tls_listener(port, backend.port, pki, backend_extra='proxy_protocol = "v1";'))
    with tls_connect(port, pki.ca) as c:
        me = c.getsockname()
        assert recv_until(c, b"\n") == b"hello from the backend\n"
    assert bytes(backend.received) == b"PROXY TCP4 127.0.0.1 127.0.0.1 %d %d\r\n" % (me[1], port)
    backend.close()


def test_v2_header_to_the_backend_says_how_the_client_reached_tls(daemon, pki):
    backend = header_server()
    port = free_port()
    d = daemon(tls_listener(port, backend.port, pki, backend_extra='proxy_protocol = "v2";'))
    with tls_connect(port, pki.ca) as c:
        me = c.getsockname()
        assert recv_until(c, b"\n") == b"hello from the backend\n"
    src, sport, dst, dport, tlvs = parse_v2(bytes(backend.received))
    assert (src, sport, dst, dport) == ("127.0.0.1", me[1], "127.0.0.1", port)
    assert tlvs[0x02] == b"localhost"                      # AUTHORITY: the SNI
    ssl_tlv = tlvs[0x20]
    assert ssl_tlv[0] & 0x01                                # PP2_CLIENT_SSL
    assert b"TLSv1.3" in ssl_tlv and b"TLS_AES_256_GCM_SHA384" in ssl_tlv
    assert tlvs[0xE5] == b"implicit"
    backend.close()


def test_inbound_and_outbound_together_carry_the_real_client(daemon, pki, tmp_path):
    backend = header_server()
    port = free_port()
    d = daemon(tls_listener(port, backend.port, pki, "accept_proxy_protocol = true;",
                            'proxy_protocol = "v2";'))
    lb = HAProxy(tmp_path, [port], "send-proxy-v2")
    try:
        with tls_connect(lb.port, pki.ca) as c:
            me = c.getsockname()
            assert recv_until(c, b"\n") == b"hello from the backend\n"
    finally:
        lb.stop()
    src, sport, dst, dport, tlvs = parse_v2(bytes(backend.received))
    assert (src, sport, dport) == ("127.0.0.1", me[1], lb.port)  # the client, and what it dialled
    backend.close()
