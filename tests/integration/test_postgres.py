"""protocol postgres: psql and psycopg2 (libpq 15) with every sslmode,
GSSENCRequest, cancel, PostgreSQL 17's direct TLS with Python's ssl, the
busy and unreachable answers and the proxy's own SSLRequest towards the
server, through the daemon to a real PostgreSQL 15 (postgres_backend.py).
The attacks are in test_postgres_attacks.py."""
import os
import re
import socket
import ssl
import struct
import subprocess
import threading
import time

import psycopg2
import psycopg2.errors
import pytest

from helpers import backend_starttls, client_ctx, free_port, wait_for
from postgres_backend import Postgres
from protocols import PG_SSL_REQUEST as SSL_REQUEST
from protocols import listener
from protocols import pg_query as query
from protocols import pg_startup as startup


def cancel_request(pid, key):
    return struct.pack("!IIII", 16, 80877102, pid, key)


def recv_exact(sock, n, timeout=10):
    sock.settimeout(timeout)
    buf = b""
    while len(buf) < n:
        d = sock.recv(n - len(buf))
        if not d:
            raise EOFError(f"EOF after {len(buf)} of {n} bytes: {buf!r}")
        buf += d
    return buf


def read_message(sock, timeout=10):
    """One backend message: (type byte, body)."""
    hdr = recv_exact(sock, 5, timeout)
    n = struct.unpack("!I", hdr[1:])[0]
    return hdr[:1], recv_exact(sock, n - 4, timeout)


def error_fields(body):
    """An ErrorResponse's fields by their type letter."""
    out = {}
    for f in body.split(b"\0"):
        if f:
            out[chr(f[0])] = f[1:].decode()
    return out


def read_error(sock, timeout=10):
    typ, body = read_message(sock, timeout)
    assert typ == b"E", (typ, body)
    return error_fields(body)


def eof(sock, timeout=5):
    """True when the peer closes (a reset counts) within timeout."""
    sock.settimeout(timeout)
    try:
        return sock.recv(1) == b""
    except (ConnectionResetError, ssl.SSLError):
        return True


def ready_query(sock, sql):
    """A simple query; the DataRow values (first column) until ReadyForQuery."""
    sock.sendall(query(sql))
    rows = []
    while True:
        typ, body = read_message(sock)
        if typ == b"D":
            n = struct.unpack("!i", body[2:6])[0]
            rows.append(body[6:6 + n].decode())
        elif typ == b"E":
            raise AssertionError(error_fields(body))
        elif typ == b"Z":
            return rows


def login_trust(sock, user="trustuser"):
    """A StartupMessage for a trust user; the BackendKeyData (pid, key)."""
    sock.sendall(startup(user))
    typ, body = read_message(sock)
    assert (typ, body) == (b"R", b"\0\0\0\0"), (typ, body)  # AuthenticationOk
    key = None
    while True:
        typ, body = read_message(sock)
        if typ == b"K":
            key = struct.unpack("!II", body)
        if typ == b"Z":
            return key


def pg_conf(port, backend, pki, extra="", backend_extra="", top="", tls=True, cert=None):
    """A postgres listener named pg on port, in front of backend (an
    address); extra and backend_extra as text, top the global settings."""
    cert = cert or (pki.server_cert, pki.server_key)
    return listener(port, backend, protocol="postgres", name="pg",
                    certificates=[cert] if tls else None, extra=extra,
                    backend_extra=backend_extra, glob=top)


def upgrade(sock, pki, alpn=None):
    """SSLRequest, 'S', then TLS on the same socket."""
    sock.sendall(SSL_REQUEST)
    assert recv_exact(sock, 1) == b"S"
    ctx = client_ctx(pki.ca)
    if alpn is not None:
        ctx.set_alpn_protocols(alpn)
    return ctx.wrap_socket(sock, server_hostname="localhost")


def direct(port, pki, alpn):
    """PostgreSQL 17's direct TLS: a ClientHello as the first byte."""
    ctx = client_ctx(pki.ca)
    if alpn is not None:
        ctx.set_alpn_protocols(alpn)
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    try:
        return ctx.wrap_socket(raw, server_hostname="localhost")
    except BaseException:
        raw.close()
        raise


@pytest.fixture(scope="module")
def pg():
    s = Postgres()
    yield s
    s.stop()


@pytest.fixture(scope="module")
def pg_tls(pki):
    """ssl = on with the backend certificate, hostssl only."""
    s = Postgres(ssl_pki=pki)
    yield s
    s.stop()


@pytest.fixture
def env(tmp_path):
    """libpq's environment: no ~/.postgresql, no password file, no
    Kerberos credentials (so gssencmode's default, prefer, sends nothing)."""
    e = dict(os.environ)
    for k in list(e):
        if k.startswith("PG"):
            del e[k]
    e.update(HOME=str(tmp_path), PGPASSFILE=os.devnull,
             KRB5CCNAME=f"FILE:{tmp_path}/no-ccache", KRB5_CONFIG=os.devnull)
    return e


def psql(port, sql, env, sslmode="require", user="alice", password="alicepw", extra=""):
    conninfo = (f"host=127.0.0.1 port={port} user={user} password={password} dbname=postgres "
                f"sslmode={sslmode} connect_timeout=10 {extra}")
    return subprocess.run(["psql", "-X", "-At", "-v", "ON_ERROR_STOP=1", conninfo, "-c", sql],
                          capture_output=True, text=True, timeout=60, env=env)


# psycopg2 runs libpq in this process: its environment is this one's
@pytest.fixture
def py_env(env, monkeypatch):
    for k in list(os.environ):
        if k.startswith("PG") or k.startswith("KRB5"):
            monkeypatch.delenv(k)
    for k in ("HOME", "PGPASSFILE", "KRB5CCNAME", "KRB5_CONFIG"):
        monkeypatch.setenv(k, env[k])


def connect(port, sslmode="require", **kw):
    args = dict(host="127.0.0.1", port=port, user="alice", password="alicepw",
                dbname="postgres", sslmode=sslmode, connect_timeout=10)
    args.update(kw)
    return psycopg2.connect(**args)


# psql, each sslmode

@pytest.mark.parametrize("mode,extra", [
    ("require", ""),
    ("prefer", ""),
    ("verify-ca", "sslrootcert={ca}"),
    ("verify-full", "sslrootcert={ca} hostaddr=127.0.0.1 host=localhost"),
])
def test_psql_through_tls(daemon, pki, pg, env, mode, extra):
    port = free_port()
    d = daemon(pg_conf(port, f"127.0.0.1:{pg.port}", pki))
    before = len(pg.connections())
    r = psql(port, "SELECT 40 + 2, current_user", env, sslmode=mode,
             extra=extra.format(ca=pki.ca))
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "42|alice"
    line = d.wait_session()[0]
    # psql sends Terminate and closes; PostgreSQL, given the Terminate,
    # closes too: either end may reach the proxy first
    assert "upgraded=starttls" in line and "tls=TLSv1.3" in line
    assert "end=client-closed" in line or "end=backend-closed" in line, line
    # the backend leg is plaintext: the server saw no SSL
    conns = pg.connections()[before:]
    assert len(conns) == 1 and "user=alice" in conns[0] and "SSL enabled" not in conns[0]


def test_psql_verify_full_checks_the_name(daemon, pki, pg, env):
    """libpq checks the proxy's certificate: a name it does not carry fails."""
    port = free_port()
    daemon(pg_conf(port, f"127.0.0.1:{pg.port}", pki, cert=(pki.alt_cert, pki.alt_key)))
    r = psql(port, "SELECT 1", env, sslmode="verify-full",
             extra=f"sslrootcert={pki.ca} hostaddr=127.0.0.1 host=localhost")
    assert r.returncode != 0
    assert "does not match host name" in r.stderr, r.stderr


def test_psql_sslmode_disable_is_relayed_without_require_tls(daemon, pki, pg, env):
    port = free_port()
    d = daemon(pg_conf(port, f"127.0.0.1:{pg.port}", pki, extra="require_tls = false;"))
    r = psql(port, "SELECT 6 * 7", env, sslmode="disable")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "42"
    line = d.wait_session()[0]
    assert "upgraded=none" in line and "tls=-" in line


def test_psql_sslmode_disable_is_refused_under_require_tls(daemon, pki, pg, env):
    """Guarantee 5: a StartupMessage before TLS gets 28000 from the proxy
    and never reaches the server."""
    port = free_port()
    d = daemon(pg_conf(port, f"127.0.0.1:{pg.port}", pki))
    before = pg.received()
    r = psql(port, "SELECT 1", env, sslmode="disable")
    assert r.returncode != 0
    assert "FATAL:  TLS is required: connect with sslmode=require" in r.stderr, r.stderr
    line = d.wait_session()[0]
    assert "end=protocol-error" in line and "backend=-" in line
    assert 'reason="a StartupMessage before TLS (require_tls)"' in line
    with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
        c.sendall(startup("alice"))
        f = read_error(c)
        assert (f["S"], f["V"], f["C"]) == ("FATAL", "FATAL", "28000")
        assert "sslmode=require" in f["M"]
        assert eof(c)
    time.sleep(0.2)
    assert pg.received() == before


# psycopg2, each sslmode

@pytest.mark.parametrize("mode", ["disable", "require", "verify-ca", "verify-full"])
def test_psycopg2_each_sslmode(daemon, pki, pg, py_env, mode):
    port = free_port()
    extra = "require_tls = false;" if mode == "disable" else ""
    d = daemon(pg_conf(port, f"127.0.0.1:{pg.port}", pki, extra=extra))
    kw = {}
    if mode.startswith("verify"):
        kw = dict(sslrootcert=str(pki.ca), host="localhost", hostaddr="127.0.0.1")
    conn = connect(port, mode, gssencmode="disable", **kw)
    try:
        cur = conn.cursor()
        cur.execute("SELECT %s + %s, current_user", (40, 2))
        assert cur.fetchone() == (42, "alice")
        cur.execute("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        assert cur.fetchone() == (False,)  # the backend leg
    finally:
        conn.close()
    line = d.wait_session()[0]
    assert ("upgraded=none" if mode == "disable" else "upgraded=starttls") in line


def test_gssencmode_prefer_gets_n_then_tls_on_the_same_connection(daemon, pki, pg, env, tmp_path):
    """libpq 15 built with GSSAPI sends a GSSENCRequest first when it has
    Kerberos credentials: a credential cache with a TGT is enough for it to
    try (nothing is ever checked against a KDC: the proxy answers 'N').
    It then sends its SSLRequest on the same connection."""
    ccache = tmp_path / "krb5cc"
    write_ccache(ccache)
    env = dict(env, KRB5CCNAME=f"FILE:{ccache}")
    port = free_port()
    d = daemon(pg_conf(port, f"127.0.0.1:{pg.port}", pki))
    r = psql(port, "SELECT 'gss-then-tls'", env, sslmode="require", extra="gssencmode=prefer")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "gss-then-tls"
    lines = d.wait_session()
    assert len(lines) == 1 and "upgraded=starttls" in lines[0]
    # gssencmode=require cannot be had from the proxy
    r = psql(port, "SELECT 1", env, sslmode="disable", extra="gssencmode=require")
    assert r.returncode != 0
    assert "server doesn't support GSSAPI encryption" in r.stderr, r.stderr


def write_ccache(path, user=b"alice", realm=b"STARTTLS-PROXY.TEST"):
    """A MIT krb5 FILE credential cache (format 4) holding a made-up TGT."""
    def counted(b):
        return struct.pack("!I", len(b)) + b

    def principal(kind, comps):
        return struct.pack("!II", kind, len(comps)) + counted(realm) + b"".join(map(counted, comps))
    now = int(time.time())
    data = struct.pack("!HH", 0x0504, 12) + struct.pack("!HHii", 1, 8, 0, 0)
    data += principal(1, [user])
    data += principal(1, [user]) + principal(2, [b"krbtgt", realm])
    data += struct.pack("!H", 18) + counted(os.urandom(32))      # aes256 key
    data += struct.pack("!IIII", now, now, now + 86400, now + 86400)
    data += b"\0" + struct.pack("!I", 0x00400000) + struct.pack("!II", 0, 0)
    data += counted(os.urandom(64)) + counted(b"")
    path.write_bytes(data)


# cancel

def run_cancelled(conn, delay=1.0):
    """SELECT pg_sleep(30), cancelled with connection.cancel() from another
    thread: the error and how long the query took."""
    cur = conn.cursor()
    timer = threading.Timer(delay, conn.cancel)
    t0 = time.monotonic()
    timer.start()
    try:
        with pytest.raises(psycopg2.errors.QueryCanceled) as e:
            cur.execute("SELECT pg_sleep(30)")
    finally:
        timer.cancel()
    return e.value, time.monotonic() - t0


def test_psycopg2_cancel_ends_the_query(daemon, pki, pg, py_env):
    """libpq 15 sends its CancelRequest in cleartext on a new connection,
    whatever sslmode says: the proxy relays it, under require_tls too."""
    port = free_port()
    d = daemon(pg_conf(port, f"127.0.0.1:{pg.port}", pki))
    conn = connect(port, "require", gssencmode="disable")
    try:
        err, took = run_cancelled(conn)
        assert err.pgcode == "57014"
        assert took < 8
        conn.rollback()  # the session goes on
        cur = conn.cursor()
        cur.execute("SELECT 1")
        assert cur.fetchone() == (1,)
    finally:
        conn.close()
    lines = d.wait_session(count=2)
    cancel = [l for l in lines if "upgraded=none" in l]
    assert len(cancel) == 1 and "in=16 " in cancel[0] and "end=backend-closed" in cancel[0]


def test_cancel_inside_tls_over_a_tls_backend_leg(daemon, pki, pg_tls):
    """A CancelRequest as the first message inside TLS (PostgreSQL 17's
    libpq sends it so), relayed over the backend leg's TLS: the real
    server cancels the query."""
    port = free_port()
    daemon(pg_conf(port, f"127.0.0.1:{pg_tls.port}", pki, backend_extra=backend_starttls(pki)))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as c, upgrade(c, pki) as t:
        pid, key = login_trust(t)
        t.sendall(query("SELECT pg_sleep(30)"))
        time.sleep(0.5)
        t0 = time.monotonic()
        with socket.create_connection(("127.0.0.1", port), timeout=10) as c2, \
                upgrade(c2, pki) as t2:
            t2.sendall(cancel_request(pid, key))
            assert eof(t2)  # the server closes a cancel connection at once
        typ, body = read_message(t, 15)
        while typ == b"T":  # the RowDescription of pg_sleep's result
            typ, body = read_message(t, 15)
        assert typ == b"E" and error_fields(body)["C"] == "57014", body
        assert time.monotonic() - t0 < 8
    conns = [c for c in pg_tls.connections() if "user=trustuser" in c]
    assert len(conns) == 1 and "SSL enabled" in conns[0]


# direct TLS (PostgreSQL 17)

def test_direct_tls_with_alpn_postgresql(daemon, pki, pg):
    port = free_port()
    d = daemon(pg_conf(port, f"127.0.0.1:{pg.port}", pki))
    with direct(port, pki, ["postgresql"]) as t:
        assert t.selected_alpn_protocol() == "postgresql"
        login_trust(t)
        assert ready_query(t, "SELECT current_user") == ["trustuser"]
    line = d.wait_session()[0]
    assert "upgraded=implicit" in line and "tls=TLSv1.3" in line and "discarded" not in line


@pytest.mark.parametrize("alpn", [None, ["h2", "http/1.1"]])
def test_direct_tls_without_alpn_postgresql_is_refused(daemon, pki, pg, alpn):
    """PostgreSQL 17 refuses a direct ClientHello that does not name
    "postgresql" with no_application_protocol; so does the proxy, with no
    ALPN extension at all too."""
    port = free_port()
    d = daemon(pg_conf(port, f"127.0.0.1:{pg.port}", pki))
    before = pg.received()
    with pytest.raises(ssl.SSLError, match="no application protocol"):
        direct(port, pki, alpn)
    line = d.wait_session()[0]
    assert "end=handshake-failed" in line and "backend=-" in line
    assert "without offering the protocol's ALPN name" in line
    assert pg.received() == before


@pytest.mark.parametrize("alpn,selected", [(["postgresql"], "postgresql"),
                                           (["h2", "postgresql"], "postgresql"),
                                           (["h2"], None), (None, None)])
def test_alpn_after_sslrequest(daemon, pki, pg, alpn, selected):
    """After an SSLRequest, postgresql is selected when offered; a client
    that offers only others goes on without ALPN."""
    port = free_port()
    daemon(pg_conf(port, f"127.0.0.1:{pg.port}", pki))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as c, \
            upgrade(c, pki, alpn) as t:
        assert t.selected_alpn_protocol() == selected
        login_trust(t)
        assert ready_query(t, "SELECT 1") == ["1"]


def test_implicit_listener_requires_alpn(daemon, pki, pg):
    """client_tls = "implicit": every connection is direct TLS."""
    port = free_port()
    d = daemon(pg_conf(port, f"127.0.0.1:{pg.port}", pki, extra='client_tls = "implicit";'))
    with direct(port, pki, ["postgresql"]) as t:
        login_trust(t)
        assert ready_query(t, "SELECT 2") == ["2"]
    with pytest.raises(ssl.SSLError, match="no application protocol"):
        direct(port, pki, None)
    lines = d.wait_session(count=2)
    assert any("upgraded=implicit" in l and "end=client-closed" in l for l in lines)
    assert any("end=handshake-failed" in l for l in lines)


def test_client_tls_none_answers_sslrequest_n(daemon, pki, pg, env):
    """client_tls = "none": the proxy is a server without SSL; sslmode=prefer
    goes on in cleartext, require fails."""
    port = free_port()
    daemon(pg_conf(port, f"127.0.0.1:{pg.port}", pki, extra='client_tls = "none";', tls=False))
    r = psql(port, "SELECT 'plain'", env, sslmode="prefer")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "plain"
    r = psql(port, "SELECT 1", env, sslmode="require")
    assert r.returncode != 0 and "server does not support SSL" in r.stderr, r.stderr
    with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
        c.sendall(SSL_REQUEST)
        assert recv_exact(c, 1) == b"N"
        c.sendall(SSL_REQUEST)  # once, as a server without SSL allows it
        assert read_error(c)["C"] == "08P01"


# the proxy's own answers: busy, unreachable

def test_busy_is_53300_inside_tls_after_the_startupmessage(daemon, pki, pg, env, py_env):
    port = free_port()
    d = daemon(pg_conf(port, f"127.0.0.1:{pg.port}", pki, extra="max_connections = 1;"))
    held = connect(port, "require", gssencmode="disable")
    try:
        before = pg.received()
        r = psql(port, "SELECT 1", env)
        assert r.returncode != 0
        assert "FATAL:  sorry, too many clients already" in r.stderr, r.stderr
        with socket.create_connection(("127.0.0.1", port), timeout=10) as c, upgrade(c, pki) as t:
            t.settimeout(0.5)
            with pytest.raises(socket.timeout):  # nothing before the StartupMessage
                t.recv(1)
            t.sendall(startup("alice"))
            f = read_error(t)
            assert (f["S"], f["V"], f["C"]) == ("FATAL", "FATAL", "53300")
            assert eof(t)
        assert pg.received() == before
    finally:
        held.close()
    lines = d.wait_session(count=3)
    busy = [l for l in lines if "end=busy" in l]
    assert len(busy) == 2 and all("backend=-" in l and "upgraded=starttls" in l for l in busy)
    assert "max_connections (1) reached" in d.log()
    # capacity is back once the held session has gone
    r = psql(port, "SELECT 'room'", env)
    assert r.returncode == 0 and r.stdout.strip() == "room", r.stderr


def test_busy_in_cleartext_without_require_tls(daemon, pki, pg):
    port = free_port()
    d = daemon(pg_conf(port, f"127.0.0.1:{pg.port}", pki,
                       extra="max_connections = 1; require_tls = false;"))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as held:
        held.sendall(startup("trustuser"))
        assert read_message(held)[0] == b"R"
        with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
            c.sendall(startup("trustuser"))
            assert read_error(c)["C"] == "53300"
            assert eof(c)
    assert any("end=busy" in l and "upgraded=none" in l for l in d.wait_session(count=1))


def test_refusing_sessions_are_bounded(daemon, pki, pg):
    """At most 16 refusing sessions per worker, each within the cleartext
    timeout; past that a busy client is closed at once."""
    port = free_port()
    d = daemon(pg_conf(port, f"127.0.0.1:{pg.port}", pki,
                       extra="max_connections = 1; timeouts = { cleartext = 3; };"))
    held = upgrade(socket.create_connection(("127.0.0.1", port), timeout=10), pki)
    waiting = []
    try:
        login_trust(held)
        for _ in range(16):
            waiting.append(socket.create_connection(("127.0.0.1", port), timeout=10))
        wait_for(lambda: d.log().count("accepted") == 17, 10, "16 refusing sessions")
        t0 = time.monotonic()
        with socket.create_connection(("127.0.0.1", port), timeout=10) as extra:
            assert eof(extra, 2)
        assert time.monotonic() - t0 < 1.5  # closed at once, not a refusing session
        # each refusing session ends within the cleartext timeout
        lines = d.wait_session(count=16, timeout=10)
        assert all("end=timeout-cleartext" in l for l in lines[:16])
        assert "a client refused for max_connections sent nothing to refuse within 3 s" in lines[0]
        for w in waiting:
            assert eof(w, 1)
        # and the pool is free again: a refused client gets its answer
        with socket.create_connection(("127.0.0.1", port), timeout=10) as c, upgrade(c, pki) as t:
            t.sendall(startup("alice"))
            assert read_error(t)["C"] == "53300"
    finally:
        held.close()
        for w in waiting:
            w.close()


def test_refusing_sessions_have_their_own_deadline(daemon, pki, pg):
    """Without require_tls nothing bounds an ordinary session's cleartext
    phase, nor its time inside TLS; a refusing session is bounded by
    timeouts.cleartext in both."""
    port = free_port()
    d = daemon(pg_conf(port, f"127.0.0.1:{pg.port}", pki,
                       extra="max_connections = 1; require_tls = false; "
                             "timeouts = { cleartext = 2; };"))
    held = upgrade(socket.create_connection(("127.0.0.1", port), timeout=10), pki)
    try:
        login_trust(held)
        with socket.create_connection(("127.0.0.1", port), timeout=10) as plain, \
                socket.create_connection(("127.0.0.1", port), timeout=10) as c, \
                upgrade(c, pki) as t:
            t0 = time.monotonic()
            assert eof(plain, 6) and eof(t, 6)
            assert time.monotonic() - t0 < 4.5
        lines = d.wait_session(count=2)
        assert all("end=timeout-cleartext" in l for l in lines), lines
        assert any("upgraded=starttls" in l for l in lines)
    finally:
        held.close()


def test_unreachable_backend_is_08006_inside_tls_after_the_startupmessage(daemon, pki, env):
    port, dead = free_port(), free_port()
    d = daemon(pg_conf(port, f"127.0.0.1:{dead}", pki))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as c, upgrade(c, pki) as t:
        t.settimeout(0.5)
        with pytest.raises(socket.timeout):  # the backend is not tried before it
            t.recv(1)
        assert "connecting to the backend" not in d.log()
        t.sendall(startup("alice"))
        f = read_error(t)
        assert (f["S"], f["C"]) == ("FATAL", "08006")
        assert f["M"] == "could not connect to the database server"
        assert eof(t)
    assert "end=backend-unreachable" in d.wait_session()[0]
    r = psql(port, "SELECT 1", env)
    assert "FATAL:  could not connect to the database server" in r.stderr, r.stderr


# the proxy's own SSLRequest towards the server

def test_backend_starttls_to_a_hostssl_server(daemon, pki, pg_tls, env):
    """backend.tls = "starttls": SSLRequest, 'S', verified TLS; the server
    allows hostssl only, and its log shows SSL for the proxy's connection.
    SCRAM's channel binding would bind to the proxy's certificate: libpq's
    default (prefer) fails against it, channel_binding=disable works."""
    port = free_port()
    d = daemon(pg_conf(port, f"127.0.0.1:{pg_tls.port}", pki, backend_extra=backend_starttls(pki)))
    before = len(pg_tls.connections())
    r = psql(port, "SELECT 'over tls both ways'", env, extra="channel_binding=disable")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "over tls both ways"
    conns = pg_tls.connections()[before:]
    assert len(conns) == 1 and "user=alice" in conns[0] and "SSL enabled" in conns[0]
    r = psql(port, "SELECT 1", env)
    assert r.returncode != 0 and "FATAL:  SCRAM channel binding check failed" in r.stderr, r.stderr
    lines = d.wait_session(count=2)
    assert all("upgraded=starttls" in l for l in lines)


def test_channel_binding_works_with_the_backends_own_certificate(daemon, pki, pg_tls, env):
    """The listener presents the server's certificate: SCRAM-SHA-256-PLUS
    binds to the same certificate on both legs."""
    port = free_port()
    daemon(pg_conf(port, f"127.0.0.1:{pg_tls.port}", pki, backend_extra=backend_starttls(pki),
                   cert=(pki.backend_cert, pki.backend_key)))
    r = psql(port, "SELECT 'bound'", env, extra="channel_binding=require")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "bound"


def test_backend_starttls_against_a_server_without_ssl(daemon, pki, pg):
    """'N' from the server fails the backend closed: 08006 to the client
    inside its TLS, after its StartupMessage."""
    port = free_port()
    d = daemon(pg_conf(port, f"127.0.0.1:{pg.port}", pki, backend_extra=backend_starttls(pki)))
    before = len(pg.connections())
    with socket.create_connection(("127.0.0.1", port), timeout=10) as c, upgrade(c, pki) as t:
        t.sendall(startup("trustuser"))
        assert read_error(t)["C"] == "08006"
    line = d.wait_session()[0]
    assert "end=backend-tls-failed" in line and "refused ('N'" in line
    assert len(pg.connections()) == before


def test_metrics_count_postgres_sessions(daemon, pki, pg, env):
    port, stats = free_port(), free_port()
    d = daemon(pg_conf(port, f"127.0.0.1:{pg.port}", pki, extra="max_connections = 1;",
                       top=f'stats = {{ listen = "127.0.0.1:{stats}"; }};'))
    assert psql(port, "SELECT 1", env).returncode == 0
    d.wait_session(count=1)  # its slot is free again
    with socket.create_connection(("127.0.0.1", port), timeout=10) as held:
        held.sendall(SSL_REQUEST)
        assert recv_exact(held, 1) == b"S"
        d.wait_log("upgrading -> handshake")
        with socket.create_connection(("127.0.0.1", port), timeout=10) as c, upgrade(c, pki) as t:
            t.sendall(startup("alice"))
            assert read_error(t)["C"] == "53300"
    d.wait_session(count=3)
    import urllib.request
    body = urllib.request.urlopen(f"http://127.0.0.1:{stats}/metrics", timeout=10).read().decode()
    assert re.search(r'sessions_refused_total\{listener="pg",reason="max_connections"\} 1\b', body), body
    assert re.search(r'upgrades_total\{listener="pg",kind="starttls"\} 2\b', body), body
