"""The STARTTLS attack classes of Poddebniak et al., "Why TLS is better
without STARTTLS" (USENIX Security 2021), and CVE-2011-0411, for each
protocol: command injection, stripping, a second upgrade inside TLS, a
ClientHello split across many reads, and response injection.

Command injection and stripping for each protocol also have tests next
to that protocol's other tests (test_smtp.py, test_line.py, test_ldap.py,
test_http.py); this file holds the cases that are alike across protocols
and the ones that need a misbehaving backend, which no real server is."""
import socket
import ssl
import time

import pytest

from helpers import MemTLS, Server, client_ctx, free_port
from protocols import (PROTOCOLS, message, read_messages, read_reply, search_request,
                       starttls_request, tlv)


@pytest.fixture(params=list(PROTOCOLS))
def front(request, daemon, pki, tmp_path):
    """The daemon with one listener of the protocol, in front of a real
    server, and a probe that proves the session works inside TLS."""
    port = free_port()
    proto = PROTOCOLS[request.param]
    be = proto.backend(tmp_path)
    d = daemon(proto.conf(port, be.port, pki))
    yield dict(proto=request.param, entry=proto, port=port, daemon=d,
               probe=lambda t: proto.probe(t, be), upgrade=proto.upgrade, name=proto.sni,
               backend=be, pki=pki)
    be.stop()


def test_client_hello_split_across_many_reads(front):
    """Every byte of the ClientHello in its own TCP segment."""
    with socket.create_connection(("127.0.0.1", front["port"]), timeout=10) as c:
        c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        front["upgrade"](c)
        t = MemTLS(c, client_ctx(front["pki"].ca), front["name"])
        try:
            t.obj.do_handshake()
        except ssl.SSLWantReadError:
            pass
        hello = t.out.read()
        for i in range(len(hello)):
            c.sendall(hello[i:i + 1])
            time.sleep(0.0005)
        t.handshake()
        # the rest of the conversation over the memory-BIO client
        wrapped = _MemSock(t)
        front["probe"](wrapped)
        t.close_notify()
    assert "upgraded=starttls" in front["daemon"].wait_session()[0]


class _MemSock:
    """Just enough of a socket over MemTLS for the probes."""

    def __init__(self, t):
        self.t = t

    def sendall(self, data):
        self.t.send(data)

    def recv(self, n):
        return self.t.recv()

    def settimeout(self, timeout):
        self.t.sock.settimeout(timeout)


def test_second_upgrade_inside_tls_is_refused(front):
    """Inside TLS the proxy never starts a second handshake: SMTP and LDAP
    refuse the verb; line and http relay it to the backend, which is not
    an upgrade (the proxy answers nothing and stays in the same TLS)."""
    with socket.create_connection(("127.0.0.1", front["port"]), timeout=10) as c:
        front["upgrade"](c)
        with client_ctx(front["pki"].ca).wrap_socket(c, server_hostname=front["name"]) as t:
            if front["entry"].second_upgrade(t):
                front["probe"](t)
    assert front["daemon"].log().count("handshake -> ") == 1


def test_command_injected_behind_the_verb_is_never_answered(front):
    """CVE-2011-0411 for every protocol: a request pipelined behind the
    verb, in the same write, never reaches the backend and is never
    answered inside TLS."""
    proto = front["entry"]
    injected, verb = proto.injected, proto.verb
    with socket.create_connection(("127.0.0.1", front["port"]), timeout=10) as c:
        proto.greet(c)
        c.sendall(verb + injected)
        proto.answered(c)
        with client_ctx(front["pki"].ca).wrap_socket(c, server_hostname=front["name"]) as t:
            front["probe"](t)  # its answer is the first thing read inside TLS
    line = front["daemon"].wait_session()[0]
    assert f"discarded={len(injected)}" in line
    proto.only_probe_seen(front["backend"])


# Response injection: a backend that answers the cleartext phase late.
# No real server misbehaves like this on purpose, so these two are small
# fakes that speak just enough of the protocol.

def late_smtp_server():
    def handler(conn, srv):
        conn.sendall(b"220 fake.test ESMTP\r\n")
        buf = b""
        while True:
            while b"\r\n" not in buf:
                d = conn.recv(4096)
                if not d:
                    return
                buf += d
            line, buf = buf.split(b"\r\n", 1)
            srv.record(line + b"\r\n")
            verb = line.split(b" ")[0].upper()
            if verb == b"EHLO":
                conn.sendall(b"250-fake.test\r\n250 PIPELINING\r\n")
            elif verb == b"NOOP" and srv.received.count(b"NOOP") == 1:
                conn.sendall(b"250 OK\r\n")
                time.sleep(0.3)  # then a reply nobody asked for
                conn.sendall(b"250 INJECTED late reply\r\n")
            else:
                conn.sendall(b"250 OK\r\n")
    return Server(handler)


def test_smtp_late_reply_is_not_delivered_inside_tls(daemon, pki):
    be = late_smtp_server()
    port = free_port()
    d = daemon(PROTOCOLS["smtp"].conf(port, be.port, pki))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
        read_reply(c)
        c.sendall(b"EHLO client.test\r\n")
        read_reply(c)
        c.sendall(b"NOOP\r\n")
        assert read_reply(c) == b"250 OK\r\n"
        c.sendall(b"STARTTLS\r\n")
        assert read_reply(c).startswith(b"220 2.0.0")
        with client_ctx(pki.ca).wrap_socket(c, server_hostname="localhost") as t:
            time.sleep(0.8)
            t.sendall(b"RSET\r\n")
            assert read_reply(t) == b"250 OK\r\n"  # RSET's, not the late one
    d.wait_log("discarded 25 bytes from the backend")
    be.close()


def late_ldap_server():
    """Answers every request with its final response; after the first
    search it also sends a BindResponse for messageID 7, late."""
    def handler(conn, srv):
        buf, searches = b"", 0
        while True:
            while len(buf) < 2 or len(buf) < 2 + buf[1]:
                d = conn.recv(4096)
                if not d:
                    return
                buf += d
            n = 2 + buf[1]
            msg, buf = buf[:n], buf[n:]
            srv.record(msg)
            msgid, op = msg[4], msg[5]
            if op == 0x63:
                searches += 1
                conn.sendall(message(msgid, tlv(0x65, tlv(0x0a, b"\x00") + tlv(0x04, b"") +
                                                tlv(0x04, b""))))
                if searches == 1:
                    time.sleep(0.3)
                    conn.sendall(message(7, tlv(0x61, tlv(0x0a, b"\x00") + tlv(0x04, b"") +
                                                tlv(0x04, b"late"))))
    return Server(handler)


def test_ldap_late_response_is_not_delivered_inside_tls(daemon, pki):
    be = late_ldap_server()
    port = free_port()
    d = daemon(PROTOCOLS["ldap"].conf(port, be.port, pki, extra="require_tls = false;"))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
        c.sendall(search_request(2, "dc=example,dc=org"))
        assert [m[:3] for m in read_messages(c, 1)] == [(2, 0x65, 0)]
        c.sendall(starttls_request(3))
        assert [m[:3] for m in read_messages(c, 1)] == [(3, 0x78, 0)]
        with client_ctx(pki.ca).wrap_socket(c, server_hostname="localhost") as t:
            time.sleep(0.8)
            t.sendall(search_request(4, "dc=example,dc=org"))
            assert [m[:3] for m in read_messages(t, 1)] == [(4, 0x65, 0)]
    d.wait_log("discarded .* bytes from the backend")
    be.close()
