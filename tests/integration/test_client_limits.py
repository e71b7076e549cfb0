"""client_limits: open sessions per address and per prefix, new sessions
per second with a burst, one table shared by every worker, bounded and
surviving SIGHUP; each protocol's busy reply seen with its real client
(swaks, imaplib, poplib, ldapsearch, curl, psql); every session gives its
place back exactly once, however it ends; and a flood of 10,000 addresses
(PROXY v2) neither grows the daemon nor pushes out the addresses that
hold sessions."""
import contextlib
import imaplib
import os
import poplib
import re
import signal
import socket
import subprocess
import time

import pytest

from helpers import (Server, client_ctx, connect_from, echo_handler, free_port,
                     line_then_close_handler, proxy_v2, recv_all, recv_until, wait_for)
from protocols import group, listener, listeners
from smtp_backend import SMTPBackend
from test_access import SourceIMAP, SourcePOP3
from test_metrics import scrape


SANITIZED = os.environ.get("STP_SANITIZED") == "1"


@pytest.fixture
def echo():
    s = Server(echo_handler(banner=b"backend\n"))
    yield s
    s.close()


@pytest.fixture
def silent():
    """A backend that says nothing first: sessions in front of it wait."""
    s = Server(echo_handler(banner=b""))
    yield s
    s.close()


def stats_glob(port, workers=1):
    return (f'workers = {workers}; shutdown_timeout = 0;\n'
            f'stats = {{ listen = "127.0.0.1:{port}"; }};')


def table(stats, name):
    """The client table's figures of listener name, from /metrics."""
    values, _ = scrape(stats)
    return {k: values.get(f'starttls_proxy_client_table_{k}{{listener="{name}"}}')
            for k in ("size", "entries", "sessions", "evictions_total")}


def admitted(port, source, token=b"backend\n"):
    """A session from source that got through: the backend's banner came."""
    c = connect_from(port, source)
    if token not in recv_until(c, token, timeout=5):
        c.close()
        return None
    return c


def refused(port, source):
    with connect_from(port, source) as c:
        try:
            return recv_all(c, timeout=5) == b""
        except ConnectionError:
            return True


def limit_lines(d, count):
    wait_for(lambda: len([l for l in d.session_lines() if " end=client-limit " in l]) >= count,
             10, f"{count} end=client-limit line(s)")
    return [l for l in d.session_lines() if " end=client-limit " in l]


# per address, per prefix, per second

def test_per_address_with_swaks(daemon, pki):
    """sessions_per_address = 2: with two sessions open from 127.0.0.20,
    swaks from there gets 421 4.7.0, swaks from 127.0.0.21 delivers; once
    one of the two ends, 127.0.0.20 delivers too."""
    mta = SMTPBackend()
    try:
        port = free_port()
        d = daemon(listener(port, mta.port, protocol="smtp", name="mx", pki=pki,
                            client_limits={"sessions_per_address": 2}))

        def swaks(source):
            return subprocess.run(
                ["swaks", "--server", f"127.0.0.1:{port}", "--local-interface", source,
                 "--tls", "--tls-verify", "--tls-ca-path", str(pki.ca), "--tls-sni", "localhost",
                 "--from", "a@example.org", "--to", "b@example.org", "--timeout", "10"],
                capture_output=True, text=True, timeout=60)

        held = [admitted(port, "127.0.0.20", b"220 ") for _ in range(2)]
        assert all(held)
        r = swaks("127.0.0.20")
        assert r.returncode != 0
        assert "<** 421 4.7.0 Too many connections from your address" in r.stdout, r.stdout
        assert swaks("127.0.0.21").returncode == 0
        held.pop().close()
        wait_for(lambda: len(d.session_lines()) >= 3, 10, "the held session's end")
        assert swaks("127.0.0.20").returncode == 0
        assert len(mta.messages) == 2
        lines = limit_lines(d, 1)
        assert len(lines) == 1 and "client=127.0.0.20:" in lines[0]
        assert 'reason="over client_limits.sessions_per_address (2)"' in lines[0], lines
        assert " backend=- " in lines[0]
        for c in held:
            c.close()
    finally:
        mta.stop()


def test_per_prefix_ipv4_and_ipv6(daemon, echo):
    """sessions_per_prefix = 2 by /24 and /64 (the defaults), addresses
    from PROXY v2 headers."""
    port = free_port()
    d = daemon(listener(port, echo.port, name="edge", client_tls="none",
                        accept_proxy_protocol=True, client_limits={"sessions_per_prefix": 2}))

    def session(src):
        c = socket.create_connection(("127.0.0.1", port), timeout=10)
        c.sendall(proxy_v2((src, 40000), ("127.0.0.1", port)))
        try:
            if recv_until(c, b"backend\n", timeout=5) == b"backend\n":
                return c
        except ConnectionError:
            pass
        c.close()
        return None

    held = [session(a) for a in ("2001:db8:1:2::a", "2001:db8:1:2::b",
                                 "198.51.100.1", "198.51.100.2")]
    assert all(held)
    assert session("2001:db8:1:2:ffff::1") is None
    assert session("198.51.100.200") is None
    other = [session("2001:db8:1:3::1"), session("198.51.101.1")]
    assert all(other)
    lines = limit_lines(d, 2)
    assert any("client=[2001:db8:1:2:ffff::1]:40000" in l and
               "sessions_per_prefix (2, /64)" in l for l in lines), lines
    assert any("client=198.51.100.200:40000" in l and
               "sessions_per_prefix (2, /24)" in l for l in lines), lines
    for c in held + other:
        c.close()


def test_new_per_second_with_burst(daemon, echo):
    """new_per_second = 2, burst = 3: three at once, then one each 500 ms;
    a refused attempt takes no token; other addresses have their own."""
    port = free_port()
    d = daemon(listener(port, echo.port, name="rate", client_tls="none",
                        client_limits={"new_per_second": 2, "burst": 3}))

    def attempt(source):
        c = admitted(port, source)
        if c is None:
            return False
        c.close()
        return True

    start = time.monotonic()
    got = [attempt("127.0.0.30") for _ in range(6)]
    assert time.monotonic() - start < 0.45, "too slow a machine for this test"
    assert got == [True, True, True, False, False, False]
    assert attempt("127.0.0.31")
    time.sleep(0.55)
    assert attempt("127.0.0.30")
    assert not attempt("127.0.0.30")
    lines = limit_lines(d, 4)
    assert all('reason="over client_limits.new_per_second (2)"' in l for l in lines), lines


# the busy reply of every protocol, with its real client

def _swaks(port, pki, tmp_path):
    r = subprocess.run(["swaks", "--server", f"127.0.0.1:{port}", "--quit-after", "CONNECT",
                        "--timeout", "10"], capture_output=True, text=True, timeout=60)
    assert "<** 421 4.7.0 Too many connections from your address" in r.stdout, r.stdout


def _imaplib(port, pki, tmp_path):
    with pytest.raises(imaplib.IMAP4.error) as e:
        SourceIMAP(port, "127.0.0.1")
    assert "BYE [UNAVAILABLE] Too many connections from your address" in str(e.value)


def _poplib(port, pki, tmp_path):
    with pytest.raises(poplib.error_proto) as e:
        SourcePOP3(port, "127.0.0.1")
    assert str(e.value).startswith("b'-ERR [SYS/TEMP] Too many connections from your address")


def _ldapsearch(port, pki, tmp_path):
    env = dict(os.environ, LDAPTLS_CACERT=str(pki.ca), LDAPTLS_REQCERT="demand")
    r = subprocess.run(["ldapsearch", "-ZZ", "-x", "-H", f"ldap://127.0.0.1:{port}",
                        "-b", "dc=example,dc=org", "-o", "nettimeout=10"],
                       capture_output=True, text=True, timeout=30, env=env)
    assert r.returncode != 0 and "Server is busy (51)" in r.stderr, r.stderr


def _curl(port, pki, tmp_path):
    r = subprocess.run(["curl", "-sS", "--max-time", "10", "--proxy", f"http://127.0.0.1:{port}",
                        "--cacert", str(pki.ca), "https://alt.test/"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode != 0 and "CONNECT tunnel failed, response 503" in r.stderr, r.stderr


def _psql(port, pki, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env.update(HOME=str(tmp_path), PGPASSFILE=os.devnull, KRB5CCNAME=f"FILE:{tmp_path}/none",
               KRB5_CONFIG=os.devnull)
    def psql(sslmode):
        return subprocess.run(["psql", "-X", "-At", f"host=127.0.0.1 port={port} user=alice "
                               f"dbname=postgres sslmode={sslmode} gssencmode=disable "
                               "connect_timeout=10", "-c", "SELECT 1"],
                              capture_output=True, text=True, timeout=30, env=env)
    # the 53300 answers the SSLRequest, before any handshake: libpq 15
    # (after CVE-2024-10977) shows no server text there, only that it came
    r = psql("require")
    assert r.returncode != 0
    assert "server sent an error response during SSL exchange" in r.stderr, r.stderr
    # and as the answer to a StartupMessage, in its words
    r = psql("disable")
    assert r.returncode != 0
    assert "FATAL:  sorry, too many connections from your address" in r.stderr, r.stderr


BUSY = {
    "smtp": (dict(protocol="smtp"), _swaks),
    "imap": (dict(protocol="imap"), _imaplib),
    "pop3": (dict(protocol="pop3"), _poplib),
    "ldap": (dict(protocol="ldap"), _ldapsearch),
    "http": (dict(protocol="http", http={"connect_allow": ["alt.test:443"]}), _curl),
    "postgres": (dict(protocol="postgres"), _psql),
}


@pytest.mark.parametrize("proto", sorted(BUSY))
def test_busy_reply_of_each_protocol(daemon, pki, silent, tmp_path, proto):
    """sessions_per_address = 1 and one session open from 127.0.0.1: the
    real client gets the protocol's busy reply, and the backend never
    hears of it."""
    settings, client = BUSY[proto]
    port = free_port()
    d = daemon(listener(port, silent.port, name=proto,
                        certificates=[(pki.server_cert, pki.server_key), (pki.alt_cert, pki.alt_key)],
                        client_limits={"sessions_per_address": 1}, **settings))
    holder = connect_from(port, "127.0.0.1")
    try:
        wait_for(lambda: "accepted 127.0.0.1:" in d.log(), 10, "the holder")
        client(port, pki, tmp_path)
        want = 2 if proto == "postgres" else 1      # psql tries twice
        lines = limit_lines(d, want)
        assert len(lines) == want and all(" backend=- " in l for l in lines), lines
        time.sleep(0.3)
        assert silent.connections <= 1   # the holder's, where the protocol connects early
    finally:
        holder.close()


# one table for every worker, through reloads, given back exactly

def test_limits_hold_across_workers(daemon, echo):
    """Four workers, the kernel spreading the connections between them:
    sessions_per_address = 3 still admits exactly three."""
    port, stats = free_port(), free_port()
    d = daemon(listener(port, echo.port, name="wide", client_tls="none",
                        client_limits={"sessions_per_address": 3},
                        glob=stats_glob(stats, workers=4)))
    socks = [connect_from(port, "127.0.0.50") for _ in range(12)]
    ok = []
    for c in socks:
        try:
            ok.append(recv_until(c, b"backend\n", timeout=5) == b"backend\n")
        except ConnectionError:
            ok.append(False)
    assert sum(ok) == 3, ok
    workers = set(re.findall(r"accepted 127\.0\.0\.50:\d+ in worker (\d+)", d.log()))
    assert len(workers) > 1, "the kernel gave every connection to one worker"
    assert table(stats, "wide")["sessions"] == 3
    values, _ = scrape(stats)
    assert values['starttls_proxy_sessions_refused_total{listener="wide",reason="client_limit"}'] == 9
    for c in socks:
        c.close()
    wait_for(lambda: table(stats, "wide")["sessions"] == 0, 10, "every place given back")


def test_sighup_keeps_the_table_and_its_counts(daemon, echo):
    """Two sessions open before a reload still count after it, under the
    new limit, and give their places back when they end; a changed
    table_size waits for a restart."""
    port, stats = free_port(), free_port()

    def conf(limits):
        return listener(port, echo.port, name="kept", client_tls="none", client_limits=limits,
                        glob=stats_glob(stats))

    d = daemon(conf({"sessions_per_address": 2, "table_size": 256}))
    old = [admitted(port, "127.0.0.40") for _ in range(2)]
    assert all(old)
    assert refused(port, "127.0.0.40")
    out = d.reload(conf({"sessions_per_address": 3, "table_size": 1024}))
    assert "reloaded" in out
    assert re.search(r"client_limits\.table_size: 1024 takes effect at the next restart; "
                     r"listener kept keeps its table of 256 entries", out), out
    new = admitted(port, "127.0.0.40")
    assert new is not None
    assert refused(port, "127.0.0.40")
    assert table(stats, "kept") == {"size": 256, "entries": 1, "sessions": 3,
                                    "evictions_total": 0}
    for c in old:
        c.close()
    wait_for(lambda: table(stats, "kept")["sessions"] == 1, 10, "the old sessions' places")
    more = [admitted(port, "127.0.0.40") for _ in range(2)]
    assert all(more)
    assert refused(port, "127.0.0.40")
    # limits off: the table keeps counting what it counted
    d.reload(conf({}))
    for c in more + [new]:
        c.close()
    wait_for(lambda: table(stats, "kept")["sessions"] == 0, 10, "every place given back")


def test_every_end_gives_the_place_back(daemon, pki, echo):
    """Two workers, five listeners, sessions ending every way there is:
    the client closes, the backend closes, the backend is unreachable, the
    idle timeout, a failed TLS handshake, a protocol error, a client-limit
    refusal, a shutdown.  Afterwards every table counts no session."""
    stats = free_port()
    closing = Server(line_then_close_handler(banner=b"bye\n"))
    ports = {k: free_port() for k in ("plain", "closing", "dead", "tls", "pg")}
    limits = {"sessions_per_address": 4, "sessions_per_prefix": 100}
    d = daemon(listeners(
        group(ports["plain"], echo.port, name="plain", client_tls="none", client_limits=limits,
              timeouts={"idle": 1}),
        group(ports["closing"], closing.port, name="closing", client_tls="none",
              client_limits=limits),
        group(ports["dead"], free_port(), name="dead", client_tls="none", client_limits=limits),
        group(ports["tls"], echo.port, name="tls", pki=pki, client_limits=limits),
        group(ports["pg"], echo.port, name="pg", protocol="postgres", client_tls="none",
              client_limits=limits),
        glob=stats_glob(stats, workers=2)))
    ends = 0
    for i in range(8):
        src = f"127.0.1.{i + 1}"
        # the client closes
        c = admitted(ports["plain"], src)
        c.close()
        # the backend closes
        with connect_from(ports["closing"], src) as c:
            c.sendall(b"x\n")
            recv_all(c)
        # the backend is unreachable
        with connect_from(ports["dead"], src) as c:
            recv_all(c)
        # a failed handshake
        with connect_from(ports["tls"], src) as c:
            c.sendall(b"GET / HTTP/1.0\r\n\r\n")
            recv_all(c)
        # a protocol error
        with connect_from(ports["pg"], src) as c:
            c.sendall(b"\0\0\0\4garbage")
            recv_all(c)
        ends += 5
    # the idle timeout, and client-limit refusals while four are open
    idle = [admitted(ports["plain"], "127.0.2.1") for _ in range(4)]
    assert all(idle)
    for _ in range(3):
        assert refused(ports["plain"], "127.0.2.1")
    ends += 7
    lines = d.wait_session(count=ends, timeout=20)
    got = {m for l in lines for m in re.findall(r" end=(\S+)", l)}
    assert {"client-closed", "backend-closed", "backend-unreachable", "timeout-idle",
            "handshake-failed", "protocol-error", "client-limit"} <= got, got
    for name in ports:
        t = table(stats, name)
        assert t["sessions"] == 0 and t["entries"] > 0, (name, t)
    # sessions ended by the shutdown give theirs back too: the daemon's
    # own exit is clean under the sanitizers (no hold outlives its table)
    open_now = [admitted(ports["plain"], "127.0.2.2") for _ in range(2)]
    assert table(stats, "plain")["sessions"] == 2
    assert d.stop() == 0
    assert " end=shutdown " in d.log()
    for c in idle + open_now:
        c.close()
    closing.close()


# the flood

def test_ten_thousand_addresses_stay_in_a_bounded_table(daemon):
    """table_size = 4096 and sessions_per_address = 1; eight addresses
    hold a session each while 10,000 others (PROXY v2, IPv6) open one and
    close it, 200 at a time.  Every one of the 10,000 is admitted (idle
    entries are reused), the table never has more than 4096 entries, the
    eight holders are still counted (a second session from each is
    refused), and the daemon's memory stays within the table's bound."""
    port, stats = free_port(), free_port()
    size = 4096
    d = daemon(listener(port, free_port(), name="flood", protocol="postgres", client_tls="none",
                        accept_proxy_protocol=True,
                        client_limits={"sessions_per_address": 1, "table_size": size},
                        glob=stats_glob(stats)), debug=False)

    def header(addr):
        return proxy_v2((addr, 40000), ("127.0.0.1", port))

    holders = []
    for i in range(8):
        c = socket.create_connection(("127.0.0.1", port), timeout=10)
        c.sendall(header(f"2001:db8:0:1::{i + 1:x}"))
        holders.append(c)
    wait_for(lambda: table(stats, "flood")["sessions"] == 8, 10, "the eight holders")

    def flood(first, count, batch=200):
        """batch sessions at a time, each batch over before the next, so
        that what the daemon holds is the table, not a backlog"""
        for b in range(first, first + count, batch):
            socks = []
            for i in range(b, min(b + batch, first + count)):
                s = socket.create_connection(("127.0.0.1", port), timeout=10)
                s.sendall(header(f"2001:db8:f:{i >> 16:x}:{i & 0xffff:x}::1"))
                socks.append(s)
            for s in socks:
                s.close()
            wait_for(lambda: d.log().count(" session listener=") >= min(b + batch, first + count),
                     30, "the batch's sessions to end")

    flood(0, 1000)                          # warm the allocator
    before = d.rss_kib()
    t0 = time.monotonic()
    flood(1000, 10000)
    seconds = time.monotonic() - t0
    after = d.rss_kib()
    t = table(stats, "flood")
    lines = d.session_lines()
    assert len(lines) == 11000
    assert not any(" end=client-limit " in l for l in lines)   # none refused: eviction works
    assert t["entries"] <= size and t["sessions"] == 8, t
    assert t["evictions_total"] >= 11000 - size, t
    # the holders were never evicted
    for i in range(8):
        with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
            c.sendall(header(f"2001:db8:0:1::{i + 1:x}"))
    limited = limit_lines(d, 8)
    assert len(limited) == 8 and all("sessions_per_address (1)" in l for l in limited)
    entry_bytes = 64   # an entry and its share of the hash heads, rounded up
    bound_kib = size * entry_bytes // 1024
    print(f"\nflood: 10,000 addresses in {seconds:.1f} s; VmRSS {before} KiB before, "
          f"{after} KiB after ({after - before:+d} KiB); table {t['entries']:.0f}/{size} "
          f"entries ({bound_kib} KiB of entries), {t['evictions_total']:.0f} evictions")
    # the growth over 10,000 new addresses stays under what the table itself
    # may take (ASan's shadow and quarantine get room of their own)
    assert after - before < bound_kib + (8 << 10 if SANITIZED else 0), (before, after)
    for c in holders:
        c.close()
    wait_for(lambda: table(stats, "flood")["sessions"] == 0, 10, "the holders' places")
