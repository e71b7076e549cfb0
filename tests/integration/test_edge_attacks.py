"""Attacks on the edge policy (access, client_limits, routes): each test
measures one thing an outsider can do; a confirmed break of a guarantee
is marked xfail(strict=True) with the figure in its reason."""
import re
import subprocess
import time

import pytest

from helpers import connect_from, free_port, recv_all, wait_for
from protocols import group, listener, listeners
from test_client_limits import stats_glob, table
from test_routes import identified, routes

VERSIONS = ["-tls1_2", "-tls1_3"]


def sclient(port, pki, version, name, *args):
    """openssl s_client -servername name: (New|Reused|failed, banner line or None)."""
    r = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-servername", name,
                        "-ign_eof", version, *args],
                       input=b"hi\n", capture_output=True, timeout=20)
    out = r.stdout.decode(errors="replace")
    how = "failed"
    for line in out.splitlines():
        if line.startswith(("New,", "Reused,")):
            how = line.split(",")[0]
    m = re.search(r"I am (\w+)", out)
    return how, m.group(1) if m else None


@pytest.mark.parametrize("version,extra", [
    pytest.param("-tls1_2", (), id="tls12-ticket"),
    pytest.param("-tls1_2", ("-no_ticket",), id="tls12-cache"),
    pytest.param("-tls1_3", (), id="tls13-ticket"),
])
def test_resumed_session_follows_the_sni_it_sends(daemon, pki, tmp_path, version, extra):
    """Routes say: the backend chosen by the SNI of the client's handshake.
    A session made with SNI localhost (route A), then resumed with SNI
    alt.test (route B, another certificate): it must reach B, or not be
    resumed at all; and the log must say the name the client sent."""
    a, b, c = identified(b"A"), identified(b"B"), identified(b"C")
    port = free_port()
    d = daemon(listener(port, c.port, name="edge", pki=pki,
                        certificates=[(pki.server_cert, pki.server_key),
                                      (pki.alt_cert, pki.alt_key)],
                        block=routes((["localhost"], a.port), (["alt.test"], b.port))))
    sess = tmp_path / "sess.pem"
    try:
        first = sclient(port, pki, version, "localhost", "-sess_out", str(sess), *extra)
        assert first == ("New", "A")
        again = sclient(port, pki, version, "alt.test", "-sess_in", str(sess), *extra)
        d.wait_session(count=2)
        snis = [re.search(r" sni=(\S+)", l).group(1) for l in d.session_lines()]
        print(f"\n{version} {extra}: first {first}, then {again}; logged sni {snis}")
        assert again[0] in ("New", "Reused"), again
        assert again[1] == "B" or again[0] != "Reused", again
        assert snis[1] == "alt.test", snis
    finally:
        for s in (a, b, c):
            s.close()


def test_no_route_reason_cannot_forge_lines(daemon, pki):
    a = identified(b"A")
    port = free_port()
    d = daemon(listener(port, None, name="edge", pki=pki, block=routes((["a.test"], a.port))))
    try:
        evil = "x\nsession listener=forged end=client-closed\x1b[2J"
        sclient(port, pki, "-tls1_3", evil)
        sclient(port, pki, "-tls1_2", evil)
        d.wait_session(count=2)
        log = d.log()
        print("\n" + "\n".join(l for l in log.splitlines() if "forged" in l))
        lines = log.splitlines()
        assert not any("forged" in l and "session listener=edge" not in l and "sni=" not in l
                       for l in lines)
        assert "\x1b" not in log
        for l in d.session_lines():
            bare = re.sub(r' reason="[^"]*"$', "", l)    # the quoted reason, whole
            assert bare.count(" end=") == 1 and '"' not in bare, l
    finally:
        a.close()


def test_routes_endings_give_the_place_back(daemon, pki):
    """A routed listener (no default) with sessions_per_address = 2: ends
    by no-route, a route's backend unreachable, a handshake timeout, a
    failed handshake; afterwards the table counts no session and the
    address is admitted again."""
    a = identified(b"A")
    port, stats = free_port(), free_port()
    d = daemon(listener(port, None, name="edge", pki=pki,
                        block=routes((["a.test"], a.port), (["dead.test"], free_port())),
                        client_limits={"sessions_per_address": 2},
                        timeouts={"handshake": 1},
                        glob=stats_glob(stats, workers=2)))
    try:
        for _ in range(3):
            sclient(port, pki, "-tls1_3", "nowhere.test")
            sclient(port, pki, "-tls1_2", "dead.test")
            with connect_from(port, "127.0.0.1") as c:
                c.sendall(b"GET / HTTP/1.0\r\n\r\n")
                recv_all(c)
        d.wait_session(count=9, timeout=20)
        # a session gives its place back when it is freed, after its line
        wait_for(lambda: table(stats, "edge")["sessions"] == 0, 5, "the places given back")
        # two that never start their handshake: counted while open (the
        # gauge is live), given back by the handshake timeout
        quiet = [connect_from(port, "127.0.0.1") for _ in range(2)]
        wait_for(lambda: table(stats, "edge")["sessions"] == 2, 5, "two sessions counted")
        d.wait_session(count=11, timeout=20)
        for c in quiet:
            c.close()
        got = [re.search(r" end=(\S+)", l).group(1) for l in d.session_lines()]
        print("\n", sorted(set(got)), table(stats, "edge"))
        wait_for(lambda: table(stats, "edge")["sessions"] == 0, 5, "no session counted")
        assert sclient(port, pki, "-tls1_3", "a.test")[1] == "A"
        assert sclient(port, pki, "-tls1_3", "a.test")[1] == "A"
    finally:
        a.close()


def proxy_v2_unix(path=b"/run/client.sock"):
    """A PROXY v2 PROXY header of family AF_UNIX stream (0x31)."""
    import struct
    body = path.ljust(108, b"\0") + b"/run/lb.sock".ljust(108, b"\0")
    return b"\r\n\r\n\x00\r\nQUIT\n" + bytes([0x21, 0x31]) + struct.pack("!H", len(body)) + body


def test_proxy_unix_source_and_unknown_under_client_limits(daemon):
    """A PROXY v1 UNKNOWN header keeps the connection's own address and is
    counted on it; a v2 AF_UNIX one names no IP address, and the manual
    says (client_limits) "Clients without an IP address are not limited":
    measured as such, so that a change of either is seen."""
    import socket
    from helpers import Server, echo_handler
    echo = Server(echo_handler(banner=b"backend\n"))
    port, stats = free_port(), free_port()
    d = daemon(listener(port, echo.port, name="lb", client_tls="none", accept_proxy_protocol=True,
                        client_limits={"sessions_per_address": 1},
                        glob=stats_glob(stats)))
    held = []

    def attempt(header):
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        held.append(s)
        s.sendall(header)
        s.settimeout(2)
        try:
            return s.recv(100)
        except socket.timeout:
            return b"(nothing)"
    try:
        unknown = [attempt(b"PROXY UNKNOWN\r\n") for _ in range(3)]
        unix = [attempt(proxy_v2_unix()) for _ in range(5)]
        t = table(stats, "lb")
        print(f"\nUNKNOWN admitted {unknown.count(b'backend' + chr(10).encode())}/3, "
              f"AF_UNIX admitted {unix.count(b'backend' + chr(10).encode())}/5, table {t}")
        assert unknown.count(b"backend\n") == 1, unknown
        assert unix.count(b"backend\n") == 5, unix     # documented: not limited
    finally:
        for s in held:
            s.close()
        echo.close()


def test_proxy_unix_path_cannot_forge_log_lines(daemon):
    """The AF_UNIX path of a PROXY v2 header is the peer's bytes: escaped
    in client= of the session line and in the debug lines, denied or not."""
    import socket
    port = free_port()
    d = daemon(listener(port, free_port(), name="lb", client_tls="none",
                        accept_proxy_protocol=True, access=["deny all"]))
    evil = b'/x y=z "q"\nsession listener=forged end=client-closed\x7f\xff'
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(proxy_v2_unix(evil))
        recv_all(s, timeout=5)
    line = d.wait_session()[0]
    print("\n" + line)
    assert " end=denied " in line
    client = re.search(r" client=(\S+) ", line).group(1)
    assert client.startswith("unix:/x\\x20y\\x3dz"), client
    for l in d.log().splitlines():
        assert not l.startswith("session listener=forged") and "\x7f" not in l, l


def pg_startup():
    import struct
    body = struct.pack("!I", 196608) + b"user\0u\0database\0d\0\0"
    return struct.pack("!I", len(body) + 4) + body


@pytest.mark.parametrize("why", [
    "client_limit", "denied",
])
def test_refused_clients_do_not_take_the_places_of_others(daemon, why):
    """postgres (its refusals wait for the client's first message):
    max_connections = 8.  An address over sessions_per_address = 1, or
    one the access list denies, opens 9 connections and says nothing.
    Another address must still be served: a refused client holds no
    place that an admitted one needs."""
    import socket
    from helpers import Server, echo_handler
    backend = Server(echo_handler(banner=b""))
    port, stats = free_port(), free_port()
    d = daemon(listener(port, backend.port, name="pg", protocol="postgres", client_tls="none",
                        max_connections=8, access=["deny 127.0.0.66"],
                        client_limits={"sessions_per_address": 1},
                        glob=stats_glob(stats)))
    bad = "127.0.0.65" if why == "client_limit" else "127.0.0.66"
    hogs = [connect_from(port, bad) for _ in range(9)]
    try:
        wait_for(lambda: d.log().count(f"accepted {bad}:") >= 9, 10, "nine accepted")
        from test_metrics import scrape
        values, _ = scrape(stats)
        active = values.get('starttls_proxy_sessions_active{listener="pg"}')
        with connect_from(port, "127.0.0.67") as c:
            c.sendall(pg_startup())
            c.settimeout(3)
            try:
                got = c.recv(200)
            except socket.timeout:
                got = b"(nothing: relayed, the backend says nothing)"
        print(f"\n{why}: {bad} x9 silent; active {active}; 127.0.0.67 got {got[:60]!r}")
        assert b"53300" not in got and b"too many" not in got, got
    finally:
        for h in hogs:
            h.close()
        backend.close()


def test_mapped_and_plain_ipv4_are_one_address(daemon):
    """PROXY v1 TCP4 192.0.2.80 holds the one session sessions_per_address
    allows; the same address as TCP6 ::ffff:192.0.2.80 (v1 and v2) is
    refused as that address, and a deny rule written for the IPv4 address
    denies the mapped spelling (and the mapped rule the plain one)."""
    import socket
    from helpers import Server, echo_handler, proxy_v2
    echo = Server(echo_handler(banner=b"backend\n"))
    port = free_port()
    d = daemon(listener(port, echo.port, name="lb", client_tls="none", accept_proxy_protocol=True,
                        access=["deny 192.0.2.99", "deny ::ffff:192.0.2.98"],
                        client_limits={"sessions_per_address": 1, "sessions_per_prefix": 2}))
    held = []

    def attempt(header):
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        held.append(s)
        s.sendall(header)
        s.settimeout(3)
        try:
            return s.recv(100) == b"backend\n"
        except (socket.timeout, ConnectionError):
            return False
    try:
        got = [attempt(b"PROXY TCP4 192.0.2.80 127.0.0.1 4000 25\r\n"),
               attempt(b"PROXY TCP6 ::ffff:192.0.2.80 ::1 4000 25\r\n"),
               attempt(proxy_v2(("::ffff:192.0.2.80", 4000), ("::1", 25))),
               attempt(b"PROXY TCP6 ::ffff:192.0.2.99 ::1 4000 25\r\n"),
               attempt(b"PROXY TCP4 192.0.2.98 127.0.0.1 4000 25\r\n"),
               attempt(b"PROXY TCP6 ::ffff:192.0.2.81 ::1 4000 25\r\n"),
               attempt(b"PROXY TCP4 192.0.2.82 127.0.0.1 4000 25\r\n")]
        print("\n", got)
        assert got == [True, False, False, False, False, True, False], got
        ends = [re.search(r" end=(\S+)", l).group(1) for l in d.wait_session(count=5)]
        assert sorted(ends) == ["client-limit", "client-limit", "client-limit",
                                "denied", "denied"], ends
    finally:
        for s in held:
            s.close()
        echo.close()


@pytest.mark.parametrize("limits", [
    pytest.param({"new_per_second": 1, "burst": 1}, id="rate"),
    pytest.param({"sessions_per_address": 1}, id="per-address"),
])
def test_client_limit_on_implicit_tls_costs_no_handshake(daemon, pki, limits):
    """SPEC, client_limits: past a limit "the protocol's busy reply before
    TLS where it has one, else a close".  An implicit-TLS postgres
    listener has no reply before TLS: a client past its limit must get a
    close, not a TLS handshake (the private-key operation new_per_second
    is there to ration)."""
    import socket
    import ssl
    from helpers import Server, echo_handler
    backend = Server(echo_handler(banner=b""))
    port = free_port()
    d = daemon(listener(port, backend.port, name="pgs", protocol="postgres", client_tls="implicit",
                        pki=pki, client_limits=limits))
    ctx = ssl.create_default_context(cafile=str(pki.ca))
    ctx.set_alpn_protocols(["postgresql"])
    keep, handshakes = [], 0
    try:
        for _ in range(10):
            raw = connect_from(port, "127.0.0.90")
            try:
                t = ctx.wrap_socket(raw, server_hostname="localhost")
                handshakes += 1
                keep.append(t)
            except (ssl.SSLError, ConnectionError, OSError):
                raw.close()
        for t in keep[1:]:
            t.close()
        wait_for(lambda: len([l for l in d.session_lines() if " end=client-limit " in l]) >= 9,
                 15, "nine refusals")
        print(f"\n{limits}: {handshakes} of 10 attempts got a TLS handshake")
        assert handshakes == 1, handshakes
    finally:
        for t in keep:
            t.close()
        backend.close()


def test_postgres_client_limit_answers_before_tls(daemon, pki):
    """STARTTLS postgres, sessions_per_address = 1, one session open: the
    over-limit client's SSLRequest gets the busy reply before TLS (an
    ErrorResponse, as access answers 28000), not 'S' and a handshake."""
    import struct
    from helpers import Server, echo_handler
    backend = Server(echo_handler(banner=b""))
    port = free_port()
    d = daemon(listener(port, backend.port, name="pg", protocol="postgres", pki=pki,
                        access=["deny 127.0.0.92"], client_limits={"sessions_per_address": 1}))
    ssl_request = struct.pack("!II", 8, 80877103)
    holder = connect_from(port, "127.0.0.91")
    try:
        wait_for(lambda: "accepted 127.0.0.91:" in d.log(), 10, "the holder")
        answers = {}
        for who in ("127.0.0.91", "127.0.0.92"):
            with connect_from(port, who) as c:
                c.sendall(ssl_request)
                c.settimeout(5)
                answers[who] = c.recv(1)
        print(f"\nSSLRequest answered: over the limit {answers['127.0.0.91']!r}, "
              f"denied {answers['127.0.0.92']!r}")
        assert answers["127.0.0.92"] == b"E"
        assert answers["127.0.0.91"] == b"E", answers
    finally:
        holder.close()
        backend.close()


# A limit that a reload adds where there was none counts the sessions
# opened after the reload (starttls-proxy.conf(5), client_limits): the
# sessions opened before it were admitted without an entry for it.


def test_refusal_flood_log_volume(daemon, pki):
    """1,000 connections from one address past new_per_second (smtp: 554
    at once, then a close) and 1,000 past max_connections: measured, and
    each refusal by policy is one line at most (no second line per
    refusal at the default level), every one of them escaped."""
    from helpers import Server, echo_handler
    backend = Server(echo_handler(banner=b""))
    p1, p2 = free_port(), free_port()
    d = daemon(listeners(
        group(p1, backend.port, protocol="smtp", name="rate", pki=pki,
              client_limits={"new_per_second": 1, "burst": 1}),
        group(p2, backend.port, protocol="smtp", name="full", pki=pki, max_connections=1)),
        debug=False)
    hold = connect_from(p2, "127.0.6.1")
    try:
        wait_for(lambda: backend.connections >= 1, 10, "the holder on full")
        for port in (p1, p2):
            for b in range(0, 1000, 100):
                socks = [connect_from(port, "127.0.6.2") for _ in range(100)]
                for s in socks:
                    s.close()
        wait_for(lambda: d.log().count(" listener=rate ") >= 999, 30, "the refusals on rate")
        time.sleep(0.5)
        log = d.log().splitlines()
        rate = [l for l in log if "listener=rate" in l or "listener rate" in l]
        full = [l for l in log if "listener=full" in l or "listener full" in l]
        print(f"\nnew_per_second: {len(rate)} lines, {sum(map(len, rate))} bytes for 1,000 "
              f"attempts; max_connections: {len(full)} lines, {sum(map(len, full))} bytes")
        assert len(rate) <= 1001 and len(full) <= 1000    # (one admitted on rate)
    finally:
        hold.close()
        backend.close()
