"""protocol http, Guarantee 1 (bounded memory) for request heads: a client
cannot make the proxy hold more than the 16 KiB head bound plus one read
per connection, nor buffer what it streams behind a head before the TLS
handshake (CONNECT and Upgrade), nor, inside TLS, more than the
watermark while the backend is still being reached.

Each test floods the real daemon from many connections at once and
measures its resident memory (VmRSS at the start, VmHWM after: the peak);
the bound is tied to the limits: HTTP_HEAD_MAX (16 KiB), one read (the
read-ahead under a TLS filter takes up to 64 KiB at a time, libevent 4
KiB), high_watermark.
"""
import os
import socket
import ssl
import time

import pytest

from helpers import Server, client_ctx, free_port, never_connects, recv_until, wait_for
from protocols import listener

KIB = 1024
HEAD_MAX = 16 * KIB
ONE_READ = 64 * KIB
SLACK = 8 * 1024  # KiB: allocator arenas, OpenSSL and libevent tables
# OpenSSL reads a ClientHello of up to 131396 bytes (CLIENT_HELLO_MAX_LENGTH)
# into a buffer it grows by a third at a time, beside its record buffers:
# what a ClientHello that never ends costs, whoever sent it
CLIENT_HELLO_HELD = 3 * 128 * KIB + 64 * KIB


# a TLS server session being set up: the SSL object, its read and write
# record buffers, the filter bufferevent
TLS_STATE = 64 * KIB


def handshake_bound(junk):
    return (HEAD_MAX + ONE_READ + TLS_STATE +
            (CLIENT_HELLO_HELD if junk == "endless-clienthello" else 0))

SANITIZED = os.environ.get("STP_SANITIZED") == "1"
# ASan's shadow memory and quarantine make RSS meaningless as a bound
rss_test = pytest.mark.skipif(SANITIZED, reason="an RSS bound: run on the plain build only")


def http_conf(port, pki, backend, allow=(), extra=""):
    return listener(port, backend, protocol="http", name="web", pki=pki, extra=extra,
                    http={"connect_allow": list(allow)} if allow else None)


def unfinished_head(size):
    """A request line and fields of 200 bytes (under HTTP_FIELDS_MAX), size
    bytes in all, without the empty line that would end the head."""
    head = bytearray(b"GET / HTTP/1.1\r\nHost: localhost\r\n")
    i = 0
    while len(head) < size:
        line = b"X-Filler-%04d: " % i
        line += b"a" * (200 - len(line) - 2) + b"\r\n"
        head += line
        i += 1
    return bytes(head[:size])


class Flood:
    """Many non-blocking connections, each sending its own bytes as fast
    as the proxy takes them, none reading; bounded by a deadline."""

    def __init__(self, port, n):
        self.socks = []
        for _ in range(n):
            s = socket.create_connection(("127.0.0.1", port), timeout=10)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
            s.setblocking(False)
            self.socks.append(s)
        self.sent = [0] * n
        self.closed = [False] * n

    def send(self, payloads, deadline):
        """payloads[i]: bytes for connection i; stop when everything is
        out, the proxy closed, or the deadline passed.  Returns the bytes
        each connection got into the kernel."""
        off = [0] * len(self.socks)
        end = time.monotonic() + deadline
        while time.monotonic() < end:
            busy = False
            for i, s in enumerate(self.socks):
                p = payloads[i]
                if self.closed[i] or off[i] >= len(p):
                    continue
                busy = True
                try:
                    n = s.send(p[off[i]:off[i] + 65536])
                    off[i] += n
                    self.sent[i] += n
                except BlockingIOError:
                    pass
                except OSError:  # reset or EPIPE: the proxy closed
                    self.closed[i] = True
            if not busy:
                break
            time.sleep(0.001)
        return off

    def replies(self, timeout=15):
        """What each connection has received by the deadline (the first
        bytes are enough)."""
        got = [b""] * len(self.socks)
        end = time.monotonic() + timeout
        for i, s in enumerate(self.socks):
            s.setblocking(True)
            while b"\r\n" not in got[i] and time.monotonic() < end:
                s.settimeout(max(0.05, end - time.monotonic()))
                try:
                    d = s.recv(4096)
                except (socket.timeout, OSError):
                    break
                if not d:
                    break
                got[i] += d
        return got

    def close(self):
        for s in self.socks:
            s.close()


def report(name, d, rss0, bound, extra=""):
    hwm = d.rss_kib("VmHWM")
    text = (f"{name}: RSS at start {rss0} KiB, peak {hwm} KiB (+{hwm - rss0} KiB), "
            f"bound {bound} KiB (+{bound - rss0}){extra}")
    print(text)
    return hwm, text


@rss_test
def test_unfinished_heads_hold_at_most_the_head_bound(daemon, pki):
    """200 connections, each with 16 KiB of header fields less one byte and
    no empty line: the proxy must hold them (the head may still end).  Then
    each goes on sending fields, 512 KiB more: each gets 431 past 16 KiB
    and what follows is dropped, not buffered.  Peak RSS within
    200 * (16 KiB + 64 KiB) of the start."""
    n = 200
    port = free_port()
    d = daemon(http_conf(port, pki, "127.0.0.1:9", allow=["alt.test:443"]), debug=False)
    rss0 = d.rss_kib()
    bound = rss0 + n * (HEAD_MAX + ONE_READ) // KIB + SLACK
    flood = Flood(port, n)
    try:
        held = unfinished_head(HEAD_MAX - 1)
        off = flood.send([held] * n, 30)
        assert off == [len(held)] * n
        time.sleep(1.0)  # for the proxy to read what the kernel holds
        rss1 = d.rss_kib()
        assert d.session_lines() == [], "a head under the bound was refused"
        # the rest of a head that never ends
        more = unfinished_head(HEAD_MAX - 1 + 512 * KIB)[HEAD_MAX - 1:]
        flood.send([more] * n, 30)
        got = flood.replies()
    finally:
        flood.close()
    hwm, text = report("unfinished heads", d, rss0, bound,
                       f"; holding {n} x {HEAD_MAX - 1} bytes: {rss1} KiB (+{rss1 - rss0});"
                       f" sent after them {sum(flood.sent) - n * len(held)} bytes")
    assert hwm <= bound, text
    assert sum(g.startswith(b"HTTP/1.1 431 ") for g in got) >= n * 9 // 10, (text, got[:3])
    lines = d.wait_session(count=n, timeout=30)
    assert all("end=protocol-error" in l and "larger than 16 KiB" in l for l in lines), lines[:3]


@rss_test
@pytest.mark.parametrize("junk", ["cleartext", "endless-clienthello"])
def test_bytes_streamed_after_a_connect_head_are_not_buffered(daemon, pki, junk):
    """100 clients send an allowed CONNECT and stream 4 MiB behind it without
    reading: the proxy holds the client while it reaches the backend,
    answers 200, discards what came behind the head and starts TLS, which
    the bytes fail.  Peak RSS within 100 * (16 KiB + 64 KiB + TLS_STATE) of
    the start;
    for bytes that make a ClientHello that never ends, OpenSSL's own bound
    on a handshake message adds CLIENT_HELLO_HELD per connection."""
    n = 100
    backend = Server(lambda conn, srv: conn.recv(1))
    port = free_port()
    d = daemon(http_conf(port, pki, f"127.0.0.1:{backend.port}", allow=["alt.test:443"]),
               debug=False)
    rss0 = d.rss_kib()
    bound = rss0 + n * handshake_bound(junk) // KIB + SLACK
    head = b"CONNECT alt.test:443 HTTP/1.1\r\nHost: alt.test:443\r\n\r\n"
    flood = Flood(port, n)
    try:
        flood.send([head + stream(junk, 4 << 20)] * n, 30)
        time.sleep(1.0)  # time for the proxy to read what the kernel holds, if it would
    finally:
        flood.close()
    hwm, text = report(f"CONNECT + {junk}", d, rss0, bound,
                       f"; the clients got {sum(flood.sent) >> 20} MiB into the kernel")
    assert hwm <= bound, text
    lines = d.wait_session(count=n, timeout=30)
    assert all("end=handshake-failed" in l or "end=client" in l for l in lines), \
        [l for l in lines if "end=handshake-failed" not in l][:3]
    backend.close()


@rss_test
def test_bytes_streamed_behind_a_held_connect_stay_in_the_kernel(daemon, pki):
    """The same while the backend does not answer: the proxy holds the
    client and does not read it, so it holds nothing of what it streams;
    504 after timeouts.connect."""
    n = 100
    with never_connects() as bport:
        port = free_port()
        d = daemon(http_conf(port, pki, f"127.0.0.1:{bport}", allow=["alt.test:443"],
                             extra="timeouts = { connect = 4; };"), debug=False)
        rss0 = d.rss_kib()
        bound = rss0 + n * (HEAD_MAX + ONE_READ) // KIB + SLACK
        head = b"CONNECT alt.test:443 HTTP/1.1\r\nHost: alt.test:443\r\n\r\n"
        flood = Flood(port, n)
        try:
            flood.send([head + stream("cleartext", 8 << 20)] * n, 3)
            rss1 = d.rss_kib()
            got = flood.replies()
        finally:
            flood.close()
        hwm, text = report("held CONNECT", d, rss0, bound,
                           f"; while held {rss1} KiB; the clients got {sum(flood.sent) >> 20} MiB"
                           " into the kernel")
        assert hwm <= bound, text
        assert sum(g.startswith(b"HTTP/1.1 504 ") for g in got) >= n * 9 // 10, (text, got[:3])
        lines = d.wait_session(count=n, timeout=30)
    assert all("end=backend-timeout" in l for l in lines), lines[:3]


@rss_test
@pytest.mark.parametrize("junk", ["cleartext", "endless-clienthello"])
def test_bytes_streamed_after_an_upgrade_head_are_not_buffered(daemon, pki, junk):
    """100 clients send an Upgrade: TLS/1.0 request and stream 4 MiB behind
    it without reading: 101, the bytes behind the head are discarded, and
    the handshake fails on what follows (or OpenSSL bounds the endless
    ClientHello); nothing reaches the backend."""
    n = 100
    backend = Server(lambda conn, srv: srv.record(conn.recv(65536)))
    port = free_port()
    d = daemon(http_conf(port, pki, f"127.0.0.1:{backend.port}"), debug=False)
    rss0 = d.rss_kib()
    bound = rss0 + n * handshake_bound(junk) // KIB + SLACK
    head = (b"OPTIONS * HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade\r\n"
            b"Upgrade: TLS/1.2,TLS/1.1,TLS/1.0\r\n\r\n")
    flood = Flood(port, n)
    try:
        flood.send([head + stream(junk, 4 << 20)] * n, 30)
        time.sleep(1.0)  # time for the proxy to read what the kernel holds, if it would
    finally:
        flood.close()
    hwm, text = report(f"Upgrade + {junk}", d, rss0, bound,
                       f"; the clients got {sum(flood.sent) >> 20} MiB into the kernel")
    assert hwm <= bound, text
    lines = d.wait_session(count=n, timeout=30)
    assert all("end=handshake-failed" in l or "end=client" in l for l in lines), \
        [l for l in lines if "end=handshake-failed" not in l][:3]
    assert backend.connections == 0
    backend.close()


@rss_test
def test_upgraded_clients_wait_for_the_backend_within_the_watermark(daemon, pki):
    """Upgrade, TLS, then each of 20 clients streams 8 MiB inside TLS while
    the backend does not answer: the proxy keeps the request and what
    follows for the backend, up to high_watermark (64 KiB here), then stops
    reading.  Peak RSS within 20 * (64 KiB + 64 KiB read + TLS_STATE + 48
    KiB of an established TLS session and its decrypted input)."""
    n, hw = 20, 64 * KIB
    with never_connects() as bport:
        port = free_port()
        d = daemon(http_conf(port, pki, f"127.0.0.1:{bport}",
                             extra=f"high_watermark = {hw}; low_watermark = {hw // 4};"
                                   " timeouts = { connect = 6; };"), debug=False)
        rss0 = d.rss_kib()
        bound = rss0 + n * (hw + ONE_READ + TLS_STATE + 48 * KIB) // KIB + SLACK
        ctx = client_ctx(pki.ca)
        conns = []
        for _ in range(n):
            c = socket.create_connection(("127.0.0.1", port), timeout=10)
            c.sendall(b"OPTIONS * HTTP/1.1\r\nHost: localhost\r\nUpgrade: TLS/1.0\r\n"
                      b"Connection: Upgrade\r\n\r\n")
            assert recv_until(c, b"\r\n\r\n").startswith(b"HTTP/1.1 101 ")
            conns.append(ctx.wrap_socket(c, server_hostname="localhost"))
        sent = [0] * n
        block = os.urandom(16 * KIB)
        end = time.monotonic() + 4
        for t in conns:
            t.setblocking(False)
        while time.monotonic() < end and min(sent) < (8 << 20):
            progress = False
            for i, t in enumerate(conns):
                if sent[i] >= (8 << 20):
                    continue
                try:
                    sent[i] += t.send(block)
                    progress = True
                except (ssl.SSLWantWriteError, ssl.SSLWantReadError, BlockingIOError):
                    pass
            if not progress:
                time.sleep(0.005)
        rss1 = d.rss_kib()
        hwm, text = report("upgraded, backend not up", d, rss0, bound,
                           f"; after streaming {rss1} KiB; the clients got {sum(sent) >> 20} MiB in")
        for t in conns:
            t.close()
        assert hwm <= bound, text
        lines = d.wait_session(count=n, timeout=30)
    assert len(lines) == n


def stream(kind, size):
    """What a client streams behind its head: cleartext, or a TLS record
    that starts a ClientHello of 128 KiB and records of handshake bytes
    that go on (OpenSSL takes a ClientHello of up to 131396 bytes)."""
    if kind == "cleartext":
        return b"GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n" * (size // 36 + 1)
    body = b"\x01" + (128 * KIB).to_bytes(3, "big") + b"\x03\x03" + b"\x00" * (16 * KIB - 6)
    out = bytearray(b"\x16\x03\x01" + len(body).to_bytes(2, "big") + body)
    filler = b"\x16\x03\x03" + (16 * KIB).to_bytes(2, "big") + b"\x00" * (16 * KIB)
    while len(out) < size:
        out += filler
    return bytes(out[:size])
