"""Faults, load and churn: bad peers and many of them never crash the
daemon, leak descriptors or memory, lose bytes, or starve other clients."""
import asyncio
import hashlib
import os
import resource
import signal
import socket
import ssl
import struct
import subprocess
import threading
import time

import pytest

from conftest import BIN
from helpers import (MemTLS, Server, client_ctx, echo_handler, free_port, recv_all, recv_until,
                     server_ctx, tls_connect, wait_for)
from protocols import group, listeners, read_reply
from smtp_backend import SMTPBackend
from test_daemon import certs, conf
from test_smtp import smtp_conf

SANITIZED = os.environ.get("STP_SANITIZED") == "1"
heavy = pytest.mark.skipif(SANITIZED, reason="load test: run on the plain build only")


def raise_fd_limit():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


# Faults

def test_backend_resets_mid_stream(daemon, pki):
    def handler(conn, srv):
        conn.sendall(b"x" * 100000)
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        conn.close()  # a reset, with the client still sending

    backend = Server(handler)
    port = free_port()
    d = daemon(conf(port, f"127.0.0.1:{backend.port}", certs(pki, (pki.server_cert, pki.server_key))))
    with tls_connect(port, pki.ca) as c:
        c.sendall(b"y" * 50000)
        got = recv_all(c)
        assert len(got) <= 100000
    line = d.wait_session()[0]
    assert "end=backend-error" in line or "end=backend-closed" in line, line
    # the daemon goes on (what reaches this client depends on when the reset lands)
    with tls_connect(port, pki.ca) as c:
        assert c.version() == "TLSv1.3"
        recv_all(c)
    d.wait_session(count=2)
    backend.close()


def test_backend_answers_garbage_instead_of_tls(daemon, pki):
    def handler(conn, srv):
        conn.sendall(b"220 I do not speak TLS\r\n")
        time.sleep(1)

    backend = Server(handler)
    port = free_port()
    d = daemon(smtp_conf(port, f"127.0.0.1:{backend.port}", pki=pki,
                         backend_extra=f'tls = "implicit"; ca = "{pki.ca}"; server_name = "backend.test";'))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
        assert recv_all(c) == b"421 4.3.2 Service not available\r\n"
    line = d.wait_session()[0]
    assert "end=backend-tls-failed" in line
    assert "plaintext from the backend where a TLS ServerHello was expected" in line
    backend.close()


def test_client_leaves_right_after_starttls(daemon, pki):
    mta = SMTPBackend()
    port = free_port()
    d = daemon(smtp_conf(port, f"127.0.0.1:{mta.port}", pki=pki))
    for _ in range(20):
        with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
            read_reply(c)
            c.sendall(b"STARTTLS\r\n")
    lines = d.wait_session(count=20)
    assert all("end=" in l for l in lines)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
        assert read_reply(c).startswith(b"220 ")
    mta.stop()


def test_client_resets_mid_relay_with_data_queued_both_ways(daemon, pki):
    def handler(conn, srv):
        try:
            while True:
                conn.sendall(b"z" * 65536)  # the client never reads
        except OSError:
            pass

    backend = Server(handler)
    port = free_port()
    d = daemon(conf(port, f"127.0.0.1:{backend.port}", certs(pki, (pki.server_cert, pki.server_key))))
    fds0 = d.open_fds()
    for _ in range(5):
        c = tls_connect(port, pki.ca)
        c.sendall(os.urandom(1 << 20))
        time.sleep(0.2)
        c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        c.close()  # a reset, with bytes queued both ways
    lines = d.wait_session(count=5)
    assert all("end=client-error" in l or "end=client-closed" in l for l in lines), lines
    wait_for(lambda: d.open_fds() == fds0, 10, "descriptors back to where they were")
    backend.close()


# Slowloris

@heavy
def test_slowloris_is_closed_by_timeouts_and_starves_nobody(daemon, pki, tmp_path):
    """1000 connections that each send a byte a second: the cleartext and
    handshake timeouts close them all, and a normal SMTP session through
    the same listener completes meanwhile."""
    raise_fd_limit()
    mta = SMTPBackend()
    smtp_port, tls_port = free_port(), free_port()
    text = listeners(
        group(smtp_port, mta.port, protocol="smtp", name="mail", pki=pki,
              timeouts={"cleartext": 2, "handshake": 2}),
        group(tls_port, mta.port, name="tls", pki=pki, timeouts={"handshake": 2}))
    d = daemon(text, debug=False)
    slow = []
    for i in range(1000):
        s = socket.create_connection(("127.0.0.1", smtp_port if i % 2 == 0 else tls_port), timeout=5)
        s.setblocking(False)
        slow.append(s)
    hello = bytes.fromhex("16030100c8010000c40303") + os.urandom(64)
    t0 = time.monotonic()
    ok = {}

    def normal_session():
        r = subprocess.run(["swaks", "--server", f"127.0.0.1:{smtp_port}", "--tls",
                            "--from", "a@example.org", "--to", "b@example.org"],
                           capture_output=True, timeout=30)
        ok["rc"] = r.returncode
        ok["t"] = time.monotonic() - t0

    th = threading.Thread(target=normal_session)
    th.start()
    closed = set()
    for second in range(6):
        for i, s in enumerate(slow):
            if i in closed:
                continue
            try:
                s.send((b"E" if i % 2 == 0 else hello[second:second + 1]))
                while s.recv(4096):
                    pass
            except BlockingIOError:
                pass
            except OSError:
                closed.add(i)
        time.sleep(1)
        if len(closed) == len(slow):
            break
    th.join()
    for i, s in enumerate(slow):
        try:
            if s.recv(4096) == b"":
                closed.add(i)
        except BlockingIOError:
            pass
        except OSError:
            closed.add(i)
        s.close()
    assert ok.get("rc") == 0, "the normal session did not complete"
    assert len(closed) == 1000, f"{1000 - len(closed)} slow connections still open"
    wait_for(lambda: d.log().count("end=timeout-cleartext") >= 500 and
             d.log().count("end=timeout-handshake") >= 500, 15, "1000 timeout lines")
    print(f"slowloris: 1000 slow connections closed within {time.monotonic() - t0:.1f} s; "
          f"a swaks session completed in {ok['t']:.1f} s meanwhile")
    mta.stop()


# Churn

async def _churn(port, n, concurrency, tls_ctx=None):
    sem = asyncio.Semaphore(concurrency)
    failures = 0

    async def one():
        nonlocal failures
        async with sem:
            try:
                r, w = await asyncio.wait_for(asyncio.open_connection(
                    "127.0.0.1", port, ssl=tls_ctx, server_hostname="localhost" if tls_ctx else None), 10)
                w.write(b"ping\n")
                line = await asyncio.wait_for(r.readline(), 10)
                if not line.startswith(b"hello"):
                    failures += 1
                w.close()
                try:
                    await asyncio.wait_for(w.wait_closed(), 5)
                except (ssl.SSLError, OSError, asyncio.TimeoutError):
                    pass
            except (OSError, asyncio.TimeoutError, ssl.SSLError):
                failures += 1

    await asyncio.gather(*(one() for _ in range(n)))
    return failures


@heavy
def test_churn_returns_descriptors_and_memory(daemon, pki):
    """20,000 sessions opened and closed (18,000 plain, 2,000 TLS): the
    open descriptors come back to where they started and the RSS stays
    within 10 % of where it was after a warm-up."""
    raise_fd_limit()
    backend = Server(echo_handler(b"hello\n"))
    plain, tls = free_port(), free_port()
    text = listeners(group(plain, backend.port, name="plain", client_tls="none"),
                     group(tls, backend.port, name="tls", pki=pki))
    d = daemon(text, debug=False)
    ctx = client_ctx(pki.ca)
    assert asyncio.run(_churn(plain, 500, 50)) == 0
    assert asyncio.run(_churn(tls, 100, 20, ctx)) == 0
    wait_for(lambda: d.log().count(" session ") >= 600, 30, "the warm-up")
    fds0, rss0 = d.open_fds(), d.rss_kib()
    t0 = time.monotonic()
    failures = asyncio.run(_churn(plain, 18000, 100))
    failures += asyncio.run(_churn(tls, 2000, 20, ctx))
    elapsed = time.monotonic() - t0
    wait_for(lambda: d.log().count(" session ") >= 20600, 60, "every session to end")
    wait_for(lambda: d.open_fds() == fds0, 10, "descriptors back to the start")
    rss1 = d.rss_kib()
    report = (f"churn: 20000 sessions in {elapsed:.1f} s, {failures} failed; fds {fds0} -> "
              f"{d.open_fds()}; RSS {rss0} KiB -> {rss1} KiB ({(rss1 - rss0) * 100 / rss0:+.1f} %)")
    print(report)
    assert failures == 0, report
    assert rss1 <= rss0 * 1.10, report
    backend.close()


# Reload storm

async def _echo_sessions(port, ctx, n, size):
    payloads = [os.urandom(size) for _ in range(n)]
    results = []

    async def one(data):
        r, w = await asyncio.open_connection("127.0.0.1", port, ssl=ctx, server_hostname="localhost")
        assert await r.readline() == b"hello from the backend\n"
        got = bytearray()

        async def reader():
            while len(got) < len(data):
                chunk = await r.read(65536)
                if not chunk:
                    break
                got.extend(chunk)

        rt = asyncio.create_task(reader())
        for i in range(0, len(data), 8192):
            w.write(data[i:i + 8192])
            await w.drain()
            await asyncio.sleep(0.05)
        await asyncio.wait_for(rt, 60)
        w.close()
        results.append(hashlib.sha256(got).digest() == hashlib.sha256(data).digest())

    await asyncio.gather(*(one(p) for p in payloads))
    return results


@pytest.mark.parametrize("workers", [1, 2])
def test_sighup_every_100ms_while_200_sessions_relay(daemon, pki, workers):
    backend = Server(echo_handler())
    port = free_port()
    d = daemon(conf(port, f"127.0.0.1:{backend.port}", certs(pki, (pki.server_cert, pki.server_key)),
                    glob=f"workers = {workers};"), debug=False)
    stop = threading.Event()
    hups = [0]

    def storm():
        while not stop.is_set():
            d.send_signal(signal.SIGHUP)
            hups[0] += 1
            time.sleep(0.1)

    th = threading.Thread(target=storm)
    th.start()
    try:
        results = asyncio.run(_echo_sessions(port, client_ctx(pki.ca), 200, 256 * 1024))
    finally:
        stop.set()
        th.join()
    assert len(results) == 200 and all(results), f"{results.count(False)} sessions lost bytes"
    lines = d.wait_session(count=200, timeout=30)
    assert all("end=client-closed" in l or "end=backend-closed" in l for l in lines)
    assert hups[0] >= 10 and d.log().count("reloaded ") >= 5
    print(f"reload storm ({workers} worker(s)): {hups[0]} SIGHUPs while 200 TLS sessions echoed 256 KiB each; "
          f"200 of 200 checksums matched")
    backend.close()
