"""stats: the Prometheus endpoint, scraped with curl while sessions run;
its numbers match what the test did."""
import os
import re
import socket
import subprocess
import time

import pytest

from helpers import (Server, client_ctx, echo_handler, free_port, never_connects, recv_all,
                     recv_until, tls_connect, wait_for)
from smtp_backend import SMTPBackend
from protocols import group, listener, listeners, read_reply


def scrape(port):
    r = subprocess.run(["curl", "-sS", "--max-time", "10", f"http://127.0.0.1:{port}/metrics"],
                       capture_output=True, text=True, timeout=20)
    assert r.returncode == 0, r.stderr
    values = {}
    for line in r.stdout.splitlines():
        if line.startswith("#") or not line:
            continue
        name, value = line.rsplit(" ", 1)
        values[name] = float(value)
    return values, r.stdout


@pytest.mark.parametrize("workers", [1, 2])
def test_metrics_match_what_the_sessions_did(daemon, pki, workers):
    mta = SMTPBackend()
    echo = Server(echo_handler())
    stats, smtp, tls, dead = free_port(), free_port(), free_port(), free_port()
    d = daemon(listeners(group(smtp, mta.port, protocol="smtp", name="mail", pki=pki),
                         group(tls, echo.port, name="tls", pki=pki),
                         group(dead, free_port(), name="down", pki=pki),
                         glob=f'workers = {workers};\nstats = {{ listen = "127.0.0.1:{stats}"; }};'))
    # three implicit TLS sessions left open while we scrape
    open_tls = [tls_connect(tls, pki.ca) for _ in range(3)]
    for c in open_tls:
        assert recv_until(c, b"\n") == b"hello from the backend\n"
    # two SMTP STARTTLS sessions, one with an injection behind the verb
    for inject in (b"", b"RSET\r\n"):
        with socket.create_connection(("127.0.0.1", smtp), timeout=10) as c:
            read_reply(c)
            c.sendall(b"STARTTLS\r\n" + inject)
            read_reply(c)
            with client_ctx(pki.ca).wrap_socket(c, server_hostname="localhost") as t:
                t.sendall(b"QUIT\r\n")
                read_reply(t)
    # a plaintext client on the implicit listener, a backend that is down
    with socket.create_connection(("127.0.0.1", tls), timeout=10) as c:
        c.sendall(b"HELLO\r\n")
        recv_all(c)
    with tls_connect(dead, pki.ca) as c:
        recv_all(c)
    d.wait_session(count=4)

    m, text = scrape(stats)
    assert m['starttls_proxy_sessions_active{listener="tls"}'] == 3
    assert m['starttls_proxy_sessions_accepted_total{listener="tls"}'] == 4
    assert m['starttls_proxy_sessions_accepted_total{listener="mail"}'] == 2
    assert m['starttls_proxy_sessions_active{listener="mail"}'] == 0
    assert m['starttls_proxy_upgrades_total{listener="mail",kind="starttls"}'] == 2
    assert m['starttls_proxy_upgrades_total{listener="tls",kind="implicit"}'] == 3
    assert m['starttls_proxy_injections_total{listener="mail"}'] == 1
    assert m['starttls_proxy_injected_bytes_total{listener="mail"}'] == 6
    assert m['starttls_proxy_handshake_failures_total{listener="tls",reason="plaintext"}'] == 1
    assert m['starttls_proxy_backend_failures_total{listener="down",reason="unreachable"}'] == 1
    assert m['starttls_proxy_tls_sessions_total{listener="tls",version="TLSv1.3",'
             'cipher="TLS_AES_256_GCM_SHA384"}'] == 3
    assert m["starttls_proxy_workers"] == workers
    assert m["starttls_proxy_process_open_fds"] > 6
    assert m["starttls_proxy_process_resident_memory_bytes"] > 1 << 20
    for c in open_tls:
        c.sendall(b"twelve bytes")
        recv_until(c, b"bytes")
        c.close()
    d.wait_session(count=7)
    m, _ = scrape(stats)
    assert m['starttls_proxy_sessions_active{listener="tls"}'] == 0
    assert m['starttls_proxy_bytes_in_total{listener="tls"}'] == 3 * 12  # a failed handshake counts no bytes
    assert m['starttls_proxy_bytes_out_total{listener="tls"}'] == 3 * (23 + 12)
    # anything but GET /metrics
    r = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}",
                        f"http://127.0.0.1:{stats}/"], capture_output=True, text=True)
    assert r.stdout == "404"
    mta.stop()
    echo.close()


def test_backend_timeout_is_counted_once_and_ends_the_session(daemon, pki):
    """An SMTP backend that never completes the connect (its accept queue is
    full): the client gets 421 once, the session ends, and the timeout is
    counted once.  The backend's socket is abandoned: if it connects later,
    nothing of the client's reaches it."""
    import time
    with never_connects() as bport:
        stats, port = free_port(), free_port()
        d = daemon(listener(port, bport, protocol="smtp", name="mail", timeouts={"connect": 1},
                            glob=f'stats = {{ listen = "127.0.0.1:{stats}"; }};'))
        with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
            c.sendall(b"EHLO client.test\r\n")
            assert recv_all(c, timeout=10) == b"421 4.3.2 Service not available\r\n"
        line = d.wait_session()[0]
        assert "end=backend-timeout" in line, line
        time.sleep(0.5)  # a session that lived on would count again every tick
        values, text = scrape(stats)
        assert values['starttls_proxy_backend_failures_total{listener="mail",reason="timeout"}'] == 1, text
        assert values['starttls_proxy_sessions_active{listener="mail"}'] == 0, text
        assert d.log().count("end=backend-timeout") == 1


# The endpoint's own limits (Guarantee 1): one request per connection, a
# bounded head, 16 connections, deadlines.  Constants as in src/stats.c.
CONNS_MAX = 16
HEAD_TIMEOUT = 5
ANSWER_TIMEOUT = 10
SANITIZED = os.environ.get("STP_SANITIZED") == "1"


def stats_only(port):
    return listener(free_port(), free_port(), name="t", client_tls="none",
                    glob=f'stats = {{ listen = "127.0.0.1:{port}"; }};')


def exchange(port, data, timeout=10):
    """Send data, half-close, and read until the daemon closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as c:
        c.sendall(data)
        c.shutdown(socket.SHUT_WR)
        return recv_all(c, timeout=timeout)


def test_pipelined_flood_on_connections_that_never_read_bounds_memory(daemon):
    """Regression: evhttp read pipelined requests from a client that never
    read its answers without limit (256 MiB of RSS in 2 s).  Eight such
    clients flood GET /metrics for 2 s, reconnecting whenever the daemon
    closes them; the daemon's peak RSS stays within a few MiB of where it
    started, and a normal scrape works afterwards."""
    stats = free_port()
    d = daemon(stats_only(stats), debug=False)
    scrape(stats)
    time.sleep(0.2)
    rss0, hwm0 = d.rss_kib(), d.rss_kib("VmHWM")
    burst = b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n" * 2000

    def connect():
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # and never read
        s.connect(("127.0.0.1", stats))
        s.setblocking(False)
        return s

    socks = [connect() for _ in range(8)]
    sent = reconnects = 0
    t0 = time.monotonic()
    while time.monotonic() - t0 < 2:
        for i, s in enumerate(socks):
            try:
                sent += s.send(burst)
            except BlockingIOError:
                pass
            except OSError:  # closed by the daemon: come back
                s.close()
                socks[i] = connect()
                reconnects += 1
    hwm1 = d.rss_kib("VmHWM")
    for s in socks:
        s.close()
    growth = hwm1 - max(rss0, hwm0)
    report = (f"/metrics pipelined flood: {sent >> 20} MiB sent in 2 s on 8 connections "
              f"({reconnects} reconnects); RSS {rss0} KiB at start, peak {hwm1} KiB "
              f"(VmHWM, {growth:+d} KiB)")
    print(report)
    # 16 connections x (an 8 KiB head + a 4 KiB answer) is under 256 KiB;
    # ASan's quarantine (8 MiB) and its shadow add to the plain build's allowance
    assert growth < (16 if SANITIZED else 4) * 1024, report
    m, _ = scrape(stats)
    assert m["starttls_proxy_workers"] == 1


def test_connection_limit_closes_the_oldest_and_scrapes_still_work(daemon):
    """64 connections that send nothing: the endpoint holds at most 16, each
    new one closing the oldest, so the daemon's descriptors stay bounded and
    a scrape by curl works while all of them are still open."""
    stats = free_port()
    d = daemon(stats_only(stats))
    fds0 = d.open_fds()
    idle = [socket.create_connection(("127.0.0.1", stats), timeout=10) for _ in range(64)]
    # the first 48 are closed by the daemon (EOF) as the others come
    for i, c in enumerate(idle[:64 - CONNS_MAX]):
        try:
            assert recv_all(c, timeout=3) == b""
        except TimeoutError:
            raise AssertionError(f"connection {i + 1} of 64 still open: more than {CONNS_MAX} "
                                 f"held (fds {fds0} -> {d.open_fds()})") from None
    assert d.open_fds() <= fds0 + CONNS_MAX, (fds0, d.open_fds())
    assert d.log().count("closed: the endpoint's connection limit") == 64 - CONNS_MAX
    assert "stats: 16 connections open: closing the oldest, from 127.0.0.1:" in d.log()
    # and the last 16 are still open
    for c in idle[64 - CONNS_MAX:]:
        c.setblocking(False)
        with pytest.raises(BlockingIOError):
            c.recv(1)
    m, _ = scrape(stats)
    assert m["starttls_proxy_process_open_fds"] <= fds0 + CONNS_MAX
    for c in idle:
        c.close()
    wait_for(lambda: d.open_fds() == fds0, 10, "the descriptors back to the start")


def test_idle_slow_and_lingering_connections_are_timed_out(daemon):
    """A connection that sends nothing and one that sends its head a byte at
    a time are closed 5 s after they came, without an answer; one that got
    its answer but never closes its side is closed 10 s after its request."""
    stats = free_port()
    d = daemon(stats_only(stats))
    t0 = time.monotonic()
    idle = socket.create_connection(("127.0.0.1", stats), timeout=20)
    slow = socket.create_connection(("127.0.0.1", stats), timeout=20)
    linger = socket.create_connection(("127.0.0.1", stats), timeout=20)
    linger.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    answer = recv_all(linger)  # the daemon's half-close ends the answer
    assert answer.startswith(b"HTTP/1.1 200 OK\r\n")
    closed = {}
    head = b"GET /metrics HTTP/1.1\r\nHost: x\r\n" + b"X-Slow: " + b"a" * 100
    sent = 0
    while time.monotonic() - t0 < ANSWER_TIMEOUT + 5 and len(closed) < 3:
        for name, c in (("idle", idle), ("slow", slow)):
            if name in closed:
                continue
            c.setblocking(False)
            try:
                data = c.recv(65536)
            except BlockingIOError:
                continue
            except ConnectionResetError:
                data = b""
            assert data == b"", (name, data)
            closed[name] = time.monotonic() - t0
        if "linger" not in closed and "answered; the client did not close in time" in d.log():
            closed["linger"] = time.monotonic() - t0
        if "slow" not in closed and sent < len(head):
            try:
                slow.send(head[sent:sent + 1])
                sent += 1
            except OSError:
                pass
        time.sleep(0.1)
    report = f"closed after (s): {closed}; slow sent {sent} bytes"
    print(report)
    assert HEAD_TIMEOUT - 0.5 <= closed.get("idle", 99) <= HEAD_TIMEOUT + 2, report
    assert HEAD_TIMEOUT - 0.5 <= closed.get("slow", 99) <= HEAD_TIMEOUT + 2, report
    assert ANSWER_TIMEOUT - 0.5 <= closed.get("linger", 99) <= ANSWER_TIMEOUT + 2, report
    assert d.log().count("closed: no whole request in time") == 2
    for c in (idle, slow, linger):
        c.close()


def test_one_answer_per_connection_then_close(daemon):
    """Pipelined requests get one answer, with Connection: close, and the
    connection ends after it; the rest is never answered."""
    stats = free_port()
    daemon(stats_only(stats))
    answer = exchange(stats, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n" * 3)
    assert answer.count(b"HTTP/1.1 ") == 1, answer[:200]
    head, body = answer.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"\r\nConnection: close" in head
    assert b"\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8" in head
    assert f"\r\nContent-Length: {len(body)}".encode() in head
    assert body.startswith(b"# HELP starttls_proxy_")


@pytest.mark.parametrize("request_, status", [
    (b"HEAD /metrics HTTP/1.0\r\n\r\n", 200),
    (b"GET /metrics?x=1 HTTP/1.1\r\nHost: x\r\n\r\n", 200),
    (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", 404),
    (b"POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n", 405),
    (b"GET /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello", 413),
    (b"GET /metrics HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 413),
    (b"GET /metrics HTTP/1.1\r\nX: " + b"a" * 9000 + b"\r\n\r\n", 431),
    (b"GET /metrics HTTP/2.0\r\n\r\n", 505),
    (b"garbage\r\n\r\n", 400),
])
def test_strict_answers(daemon, request_, status):
    """Only GET or HEAD /metrics is answered with the figures; a body, a head
    over 8 KiB, another version or garbage get their error, then close."""
    stats = free_port()
    daemon(stats_only(stats))
    answer = exchange(stats, request_)
    assert answer.startswith(f"HTTP/1.1 {status} ".encode()), answer[:200]
    head, body = answer.split(b"\r\n\r\n", 1)
    assert b"\r\nConnection: close" in head
    if request_.startswith(b"HEAD"):
        assert body == b"" and b"\r\nContent-Length: " in head
    if status == 405:
        assert b"\r\nAllow: GET, HEAD\r\n" in head + b"\r\n"
