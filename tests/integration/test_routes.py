"""routes: the backend chosen by the server name of the client's TLS
handshake (SNI), first match, `*.domain` for any name under domain, the
listener's backend as the default; a name no route matches, with no
default, refused inside TLS (end=no-route).  Clients: Python ssl, openssl
s_client -servername, SMTP over implicit TLS to aiosmtpd,
ldapsearch -ZZ against slapd, psql against PostgreSQL."""
import os
import re
import signal
import socket
import ssl
import subprocess

import pytest

from helpers import (Server, backend_starttls, free_port, line_then_close_handler, recv_until, s_client, server_ctx,
                     wait_for)
from protocols import (WebBackend, listener, message, read_messages, read_reply, search_request,
                       starttls_request, tlv)
from postgres_backend import Postgres
from slapd_backend import Slapd
from smtp_backend import SMTPBackend
from test_metrics import scrape


def routes(*entries):
    """A routes list: entries of (names, address) or (names, address, backend text)."""
    items = []
    for e in entries:
        names, addr, extra = (e + ("",))[:3]
        addr = f"127.0.0.1:{addr}" if isinstance(addr, int) else addr
        ns = ", ".join(f'"{n}"' for n in names)
        items.append(f'{{ server_names = [ {ns} ]; backend = {{ address = "{addr}"; {extra} }}; }}')
    return "routes = ( " + ",\n      ".join(items) + " );"


def unverified():
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def who(port, name, ctx=None):
    """The banner of the backend that a client asking for name reaches
    (b"" when the proxy closes instead)."""
    ctx = ctx or unverified()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with ctx.wrap_socket(raw, server_hostname=name) as t:
            try:
                return recv_until(t, b"\n", timeout=10)
            except (ConnectionError, ssl.SSLError, OSError):
                return b""


def identified(tag):
    """A backend that says who it is, answers one line, and closes."""
    return Server(line_then_close_handler(banner=b"I am " + tag + b"\n"))


def session_backends(d):
    return [re.search(r" backend=(\S+)", l).group(1) for l in d.session_lines()]


def test_tcp_by_sni_exact_wildcard_default_and_no_sni(daemon, pki):
    a, b, c = identified(b"A"), identified(b"B"), identified(b"C")
    port = free_port()
    d = daemon(listener(port, c.port, name="edge", pki=pki,
                        certificates=[(pki.server_cert, pki.server_key),
                                      (pki.alt_cert, pki.alt_key)],
                        block=routes((["LocalHost", "a.test"], a.port),
                                     (["*.wild.test"], b.port))))
    try:
        # the certificate is chosen by SNI as before, and verifies
        assert who(port, "localhost", ssl.create_default_context(cafile=str(pki.ca))) == b"I am A\n"
        assert who(port, "x.wild.test", ssl.create_default_context(cafile=str(pki.ca))) == b"I am B\n"
        assert who(port, "A.TEST") == b"I am A\n"            # case-insensitive
        assert who(port, "deep.x.wild.test") == b"I am B\n"  # one label or more
        assert who(port, "wild.test") == b"I am C\n"         # not the domain itself
        assert who(port, "alt.test") == b"I am C\n"          # no route: the default
        assert who(port, None) == b"I am C\n"                # no SNI: the default
        # openssl s_client -servername, the same way
        out = s_client(port, ["-servername", "a.test", "-ign_eof"], data=b"ping\n").stdout
        assert b"I am A\nyou said: ping\n" in out
        out = s_client(port, ["-servername", "y.wild.test", "-ign_eof"], data=b"x\n").stdout
        assert b"I am B\n" in out
        d.wait_session(count=9)
        got = session_backends(d)
        assert [got.count(f"127.0.0.1:{s.port}") for s in (a, b, c)] == [3, 3, 3], got
        assert (a.connections, b.connections, c.connections) == (3, 3, 3)
    finally:
        for s in (a, b, c):
            s.close()


def test_unknown_name_without_default_is_refused_and_counted(daemon, pki):
    a = identified(b"A")
    port, stats = free_port(), free_port()
    d = daemon(listener(port, None, name="edge", pki=pki,
                        glob=f'stats = {{ listen = "127.0.0.1:{stats}"; }};',
                        block=routes((["a.test"], a.port))))
    try:
        assert who(port, "a.test") == b"I am A\n"
        # after its handshake the client is closed, and no backend is reached
        assert who(port, "b.test") == b""
        assert who(port, None) == b""
        out = s_client(port, ["-servername", "c.test"], data=b"x\n").stdout
        assert b"I am" not in out
        lines = d.wait_session(count=4)
        refused = [l for l in lines if "end=no-route" in l]
        assert len(refused) == 3, lines
        assert 'reason="no route for the server name \'b.test\', and the listener has no default backend"' \
            in "\n".join(refused)
        assert 'reason="the client sent no server name, and the listener has no default backend"' \
            in "\n".join(refused)
        assert all(" backend=- " in l and "tls=TLSv1.3" in l for l in refused)
        assert a.connections == 1
        m, _ = scrape(stats)
        assert m['starttls_proxy_backend_failures_total{listener="edge",reason="no_route"}'] == 3
        assert m['starttls_proxy_backend_failures_total{listener="edge",reason="unreachable"}'] == 0
    finally:
        a.close()


def smtps_client(port, name):
    """An implicit-TLS submission: the greeting and EHLO reply, inside TLS."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with unverified().wrap_socket(raw, server_hostname=name) as t:
            greeting = read_reply(t)
            if not greeting.startswith(b"220 "):
                return int(greeting[:3] or b"0"), greeting.decode()
            t.sendall(b"EHLO client.test\r\n")
            code = int(read_reply(t)[:3])
            t.sendall(b"QUIT\r\n")
            read_reply(t)
            return code, greeting.decode()


def test_smtps_connects_after_the_handshake_and_refuses_with_421(daemon, pki):
    mta_a, mta_b = SMTPBackend(), SMTPBackend()
    mta_s = SMTPBackend(starttls_ctx=server_ctx(pki.backend_cert, pki.backend_key))
    port = free_port()
    d = daemon(listener(port, None, name="smtps", protocol="smtp", client_tls="implicit",
                        pki=pki, block=routes((["a.test"], mta_a.port), (["*.b.test"], mta_b.port),
                                              (["s.test"], mta_s.port, backend_starttls(pki)))))
    try:
        # a client that connects and sends nothing: no backend is reached
        with socket.create_connection(("127.0.0.1", port), timeout=10) as idle:
            idle.sendall(b"\x16")
            with unverified().wrap_socket(socket.create_connection(("127.0.0.1", port)),
                                          server_hostname="mx.b.test") as t:
                assert read_reply(t).startswith(b"220 ")
                t.sendall(b"QUIT\r\n")
                read_reply(t)
            assert mta_a.verbs() == [] and len(mta_b.verbs()) == 1
        assert smtps_client(port, "a.test")[0] == 250
        assert mta_a.verbs() == ["EHLO", "QUIT"]
        code, text = smtps_client(port, "c.test")
        assert code == 421 and "4.3.2 Service not available" in text
        # a route whose backend the proxy upgrades itself, after the client's handshake
        assert smtps_client(port, "s.test")[0] == 250
        assert mta_s.verbs() == ["EHLO", "STARTTLS", "EHLO", "QUIT"]
        lines = d.wait_session(count=5)
        assert any(f"backend=127.0.0.1:{mta_a.port} " in l for l in lines)
        assert any(f"backend=127.0.0.1:{mta_b.port} " in l for l in lines)
        assert sum("end=no-route" in l and "sni=c.test" in l for l in lines) == 1
    finally:
        for m in (mta_a, mta_b, mta_s):
            m.stop()


def ldap_env(pki):
    env = dict(os.environ)
    env.update(LDAPTLS_CACERT=str(pki.ca), LDAPTLS_REQCERT="demand")
    return env


def test_ldap_starttls_routed_to_slapd_and_unknown_refused(daemon, pki, tmp_path):
    with Slapd(tmp_path) as ldap:
        port = free_port()
        d = daemon(listener(port, None, name="ldap", protocol="ldap", pki=pki,
                            block=routes((["localhost"], ldap.port))))
        search = ["ldapsearch", "-ZZ", "-x", "-b", ldap.base, "(uid=alice)", "mail"]
        # libldap sends the host of the URL as SNI (not an address); it checks
        # the certificate against the peer's reverse name, not "localhost"
        env = {**ldap_env(pki), "LDAPTLS_REQCERT": "allow"}
        r = subprocess.run(search + ["-H", f"ldap://localhost:{port}"], capture_output=True,
                           text=True, env=env, timeout=30)
        assert r.returncode == 0, r.stderr
        assert "mail: alice@example.org" in r.stdout
        assert ldap.ext_oids() == []  # StartTLS was the proxy's
        before = ldap.connections()
        # an address in the URL: no SNI, no default, a Notice of Disconnection
        r = subprocess.run(search + ["-H", f"ldap://127.0.0.1:{port}"], capture_output=True,
                           text=True, env=env, timeout=30)
        assert r.returncode != 0 and "mail:" not in r.stdout
        # the same by hand: StartTLS, a handshake for another name, then a
        # Notice of Disconnection with unavailable (52) inside TLS
        with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
            c.sendall(starttls_request(1))
            assert [m[:3] for m in read_messages(c, 1)] == [(1, 0x78, 0)]
            with unverified().wrap_socket(c, server_hostname="other.test") as t:
                t.sendall(search_request(2, ldap.base))
                msgs = read_messages(t, 1)
                assert [m[:3] for m in msgs] == [(0, 0x78, 52)]
                assert b"1.3.6.1.4.1.1466.20036" in msgs[0][3]
        assert ldap.connections() == before
        # what the module lets through before TLS (an Abandon) reaches no route
        with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
            c.sendall(message(5, tlv(0x50, b"\x01")) + starttls_request(6))
            assert [m[:3] for m in read_messages(c, 1)] == [(6, 0x78, 0)]
            with unverified().wrap_socket(c, server_hostname="localhost") as t:
                t.sendall(search_request(7, ldap.base))
                assert read_messages(t, 2)[-1][:3] == (7, 0x65, 0)
        assert "ABANDON" not in ldap.verbs() and "SRCH" in ldap.verbs()
        lines = d.wait_session(count=4)
        assert f"backend=127.0.0.1:{ldap.port} " in lines[0] and "upgraded=starttls" in lines[0]
        assert all("end=no-route" in l and "upgraded=starttls" in l for l in lines[1:3]), lines


@pytest.fixture(scope="module")
def pg():
    p = Postgres()
    yield p
    p.stop()


def test_postgres_two_backends_told_apart_by_a_query(daemon, pki, pg, tmp_path):
    """One server reached two ways: over TCP by one route, over its unix
    socket by the other; inet_server_addr() tells them apart."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env.update(HOME=str(tmp_path), PGPASSFILE=os.devnull)
    port = free_port()
    sock = f"unix:{pg.sockdir}/.s.PGSQL.{pg.port}"
    d = daemon(listener(port, None, name="pg", protocol="postgres", pki=pki, require_tls=False,
                        block=routes((["db.test"], pg.port), (["*.local.test"], sock))))

    def ask(host, sslmode="require"):
        conninfo = (f"host={host} hostaddr=127.0.0.1 port={port} user=trustuser dbname=postgres "
                    f"sslmode={sslmode} connect_timeout=10")
        return subprocess.run(["psql", "-X", "-At", conninfo, "-c",
                               "SELECT coalesce(host(inet_server_addr()), 'unix')"],
                              capture_output=True, text=True, timeout=30, env=env)

    r = ask("db.test")
    assert r.returncode == 0 and r.stdout.strip() == "127.0.0.1", r.stderr
    r = ask("x.local.test")
    assert r.returncode == 0 and r.stdout.strip() == "unix", r.stderr
    r = ask("nowhere.test")
    assert r.returncode != 0 and "could not connect to the database server" in r.stderr
    # without require_tls a client may stay in cleartext: no handshake, no
    # server name, so the default, and there is none here
    r = ask("db.test", sslmode="disable")
    assert r.returncode != 0 and "could not connect to the database server" in r.stderr
    lines = d.wait_session(count=4)
    assert [l.count("end=no-route") for l in lines] == [0, 0, 1, 1]
    assert "sni=nowhere.test" in lines[2] and "upgraded=none" in lines[3]


@pytest.mark.parametrize("protocol,extra,why", [
    ("smtp", "", "the backend's greeting and replies are relayed before the upgrade"),
    ("imap", "", "the backend's greeting and replies are relayed before the upgrade"),
    ("pop3", "", "the backend's greeting and replies are relayed before the upgrade"),
    ("line", "", "the backend's lines are relayed before the upgrade"),
    ("ldap", "require_tls = false;", "cleartext operations are relayed before the upgrade"),
    ("tcp", 'client_tls = "none";', 'with client_tls = "none" there is none'),
])
def test_check_refuses_routes_where_the_backend_cannot_wait(tmp_path, protocol, extra, why):
    from conftest import BIN
    conf = tmp_path / "p.conf"
    conf.write_text(listener(free_port(), 9, name="edge", protocol=protocol, extra=extra,
                             block=routes((["a.test"], 10))))
    r = subprocess.run([BIN, "-t", "-c", str(conf)], capture_output=True, text=True, timeout=20)
    assert r.returncode != 0
    assert re.search(rf"^{re.escape(str(conf))}:\d+: listeners\.\[0\]\.routes: listener edge: ",
                     r.stderr, re.M), r.stderr
    assert why in r.stderr
    # the same listener with implicit TLS (or, for ldap, require_tls) is fine
    fixed = 'client_tls = "implicit";' if protocol != "ldap" else "require_tls = true;"
    conf.write_text(listener(free_port(), 9, name="edge", protocol=protocol, extra=fixed,
                             block=routes((["a.test"], 10))))
    r = subprocess.run([BIN, "-t", "-c", str(conf)], capture_output=True, text=True, timeout=20)
    assert r.returncode == 0, r.stderr


def test_sighup_changes_a_route_and_open_sessions_keep_theirs(daemon, pki):
    a, b = identified(b"A"), identified(b"B")
    port = free_port()

    def conf(to):
        return listener(port, None, name="edge", pki=pki, block=routes((["a.test"], to)))

    d = daemon(conf(a.port))
    try:
        ctx = unverified()
        old = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=10),
                              server_hostname="a.test")
        assert recv_until(old, b"\n") == b"I am A\n"
        out = d.reload(conf(b.port))
        assert "reloaded" in out
        assert who(port, "a.test") == b"I am B\n"
        # the session opened before the reload still relays to A
        old.sendall(b"still here\n")
        assert recv_until(old, b"still here\n") == b"you said: still here\n"
        assert bytes(a.received) == b"still here\n"
        old.close()
        # a reload to routes that cannot work is refused, saying why; B stays
        out = d.reload(listener(port, None, name="edge", protocol="tcp", client_tls="none",
                                block=routes((["a.test"], a.port))))
        assert "the running configuration is kept" in out
        assert "listeners.[0].routes: listener edge: routes choose the backend by the server name" in out
        assert who(port, "a.test") == b"I am B\n"
        # a reload that drops the route: refused as no-route from then on
        d.reload(listener(port, None, name="edge", pki=pki, block=routes((["z.test"], b.port))))
        assert who(port, "a.test") == b""
        wait_for(lambda: any("end=no-route" in l for l in d.session_lines()), 10, "no-route")
    finally:
        a.close()
        b.close()


def test_each_route_has_its_own_backend_tls_pins_and_proxy_header(daemon, pki):
    """A route's backend block is a whole one: TLS verified against its
    own CA and server_name (and pins), and its own PROXY header."""
    tls_be = Server(line_then_close_handler(banner=b"I am TLS\n"),
                    tls=server_ctx(pki.backend_cert, pki.backend_key))
    pp_be = Server(line_then_close_handler(banner=b""))
    rogue = Server(line_then_close_handler(banner=b"I am rogue\n"),
                   tls=server_ctx(pki.rogue_cert, pki.rogue_key))
    port = free_port()
    tls_extra = f'tls = "implicit"; ca = "{pki.ca}"; server_name = "backend.test";'
    pin = f'pin_sha256 = [ "{pki.spki_pin(pki.backend_cert)}" ];'
    d = daemon(listener(port, None, name="edge", pki=pki,
                        block=routes((["tls.test"], tls_be.port, tls_extra + pin),
                                     (["pp.test"], pp_be.port, 'proxy_protocol = "v1";'),
                                     (["rogue.test"], rogue.port, tls_extra),
                                     (["name.test"], tls_be.port,
                                      f'tls = "implicit"; ca = "{pki.ca}"; server_name = "other.test";'))))
    try:
        assert who(port, "tls.test") == b"I am TLS\n"
        with unverified().wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=10),
                                      server_hostname="pp.test") as t:
            # the backend's one line is the header the proxy sent first
            said = recv_until(t, b"\n")
        assert re.fullmatch(rb"you said: PROXY TCP4 127\.0\.0\.1 127\.0\.0\.1 \d+ %d\r\n" % port, said)
        assert who(port, "rogue.test") == b""     # another CA: refused
        # the routes share one OpenSSL context (the same CA file), each
        # with its own name to check: not the one tls_be's certificate has
        assert who(port, "name.test") == b""
        lines = d.wait_session(count=4)
        assert any("end=backend-verify-failed" in l and f":{rogue.port} " in l for l in lines)
        assert any("end=backend-verify-failed" in l and "sni=name.test" in l for l in lines)
    finally:
        for s in (tls_be, pp_be, rogue):
            s.close()


def test_https_listener_routes_with_curl(daemon, pki):
    """protocol http with client_tls = "implicit": curl's SNI picks the
    web backend; a name with no route and no default gets 502 inside TLS."""
    a, b = WebBackend(b"site A\n"), WebBackend(b"site B\n")
    port = free_port()
    d = daemon(listener(port, None, name="web", protocol="http", client_tls="implicit", pki=pki,
                        block=routes((["a.test"], a.port), (["*.b.test"], b.port))))

    def curl(name):
        r = subprocess.run(["curl", "-sk", "--max-time", "10", "--resolve",
                            f"{name}:{port}:127.0.0.1", "-o", "-", "-w", "%{http_code}",
                            f"https://{name}:{port}/"], capture_output=True, text=True, timeout=20)
        return r.stdout

    try:
        assert curl("a.test") == "site A\n200"
        assert curl("www.b.test") == "site B\n200"
        assert curl("c.test").endswith("502")
        assert (a.seen, b.seen) == (["GET / HTTP/1.1"], ["GET / HTTP/1.1"])
        assert "end=no-route" in d.wait_session(count=3)[2]
    finally:
        a.close()
        b.close()
