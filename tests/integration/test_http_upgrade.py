"""protocol http, RFC 2817 Upgrade to TLS: the request that asked for TLS
reaches the backend inside TLS without its hop-by-hop fields (Connection,
Upgrade and every field that Connection names, RFC 9110 section 7.6.1),
and any TLS/1.x token of an Upgrade list qualifies.

The real thing first: CUPS' ipptool -E (RFC 2817 through
"OPTIONS * HTTP/1.1", "Upgrade: TLS/1.2,TLS/1.1,TLS/1.0") through the proxy
to CUPS' ippeveprinter, which knows RFC 2817 itself: before the fix it
answered a second 101 inside TLS and ipptool reconnected in a tight loop.
Then raw sockets against a backend that records the bytes it receives.
"""
import os
import pathlib
import re
import shutil
import socket
import subprocess
import threading
import time

import pytest

from helpers import (Server, client_ctx, free_port, never_connects, recv_all, recv_until,
                     wait_for)
from protocols import listener

IPPTOOL_TESTS = pathlib.Path("/usr/share/cups/ipptool")


def upgrade_conf(port, pki, backend, extra=""):
    return listener(port, backend, protocol="http", name="ipp", pki=pki, extra=extra)


# The real thing: ipptool -E through the proxy to ippeveprinter

BUS_CONF = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <listen>unix:tmpdir={dir}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_destination="*"/>
    <allow receive_sender="*"/>
  </policy>
</busconfig>
"""


class PrivateBus:
    """A throwaway dbus-daemon for ippeveprinter, which asks Avahi for
    DNS-SD at start-up whatever -r says (AVAHI_CLIENT_NO_FAIL: it needs a
    system bus, not an avahi-daemon).  Nothing of the machine's own bus."""

    def __init__(self, d):
        d.mkdir(exist_ok=True)
        conf = d / "bus.conf"
        conf.write_text(BUS_CONF.format(dir=d))
        r, w = os.pipe()
        self.proc = subprocess.Popen(["dbus-daemon", "--nofork", "--nopidfile",
                                      f"--config-file={conf}", f"--print-address={w}"],
                                     pass_fds=(w,), stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        os.close(w)
        with os.fdopen(r) as f:
            self.address = f.readline().strip()
        assert self.address.startswith("unix:"), self.address

    def close(self):
        self.proc.terminate()
        self.proc.wait(10)


class Printer:
    """ippeveprinter on loopback, as an ordinary process: its spool, its
    keys and HOME in the test's directory, DNS-SD registration off (-r
    off), its verbose log in a file."""

    def __init__(self, d, env):
        self.d = d
        (d / "keys").mkdir(exist_ok=True)  # its own certificate, made on first use
        for _ in range(5):
            self.port = free_port()
            # -n localhost: it listens on 127.0.0.1 and ::1 (-n 127.0.0.1
            # fails, it wants an IPv6 listener too)
            self.logpath = d / f"ippeveprinter-{self.port}.log"
            with open(self.logpath, "wb") as log:
                self.proc = subprocess.Popen(
                    ["ippeveprinter", "-v", "-r", "off", "-p", str(self.port), "-n", "localhost",
                     "-d", str(d / "spool"), "-K", str(d / "keys"), "Test Printer"],
                    stdout=log, stderr=subprocess.STDOUT, env=env)
            wait_for(lambda: "printer-uuid=" in self.log() or self.proc.poll() is not None, 20,
                     "ippeveprinter to listen")
            if self.proc.poll() is None:
                return
        raise AssertionError("ippeveprinter did not start:\n" + self.log())

    def log(self):
        return self.logpath.read_text(errors="replace")

    def close(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class Tap:
    """A TCP relay in front of a server that keeps every byte each
    connection sent towards the server: what the backend received."""

    def __init__(self, port):
        self.streams = []
        self.lock = threading.Lock()

        def handler(conn, srv):
            up = socket.create_connection(("127.0.0.1", port), timeout=30)
            seen = bytearray()
            with self.lock:
                self.streams.append(seen)

            def down():
                try:
                    while True:
                        d = up.recv(65536)
                        if not d:
                            break
                        conn.sendall(d)
                    conn.shutdown(socket.SHUT_WR)
                except OSError:
                    pass

            t = threading.Thread(target=down, daemon=True)
            t.start()
            try:
                while True:
                    d = conn.recv(65536)
                    if not d:
                        break
                    seen += d
                    up.sendall(d)
                up.shutdown(socket.SHUT_WR)
            except OSError:
                pass
            t.join(30)
            up.close()

        self.server = Server(handler)
        self.port = self.server.port

    def close(self):
        self.server.close()


@pytest.fixture
def printer(tmp_path):
    for tool in ("ipptool", "ippeveprinter", "dbus-daemon"):
        assert shutil.which(tool), f"{tool} is missing: scripts/deps installs cups-ipp-utils and dbus"
    home = tmp_path / "home"
    home.mkdir()
    bus = PrivateBus(tmp_path / "bus")
    env = dict(os.environ, HOME=str(home), DBUS_SYSTEM_BUS_ADDRESS=bus.address,
               LC_ALL="C", CUPS_SERVERROOT=str(tmp_path / "cups"))
    p = Printer(tmp_path, env)
    p.env = env
    yield p
    p.close()
    bus.close()


def ipptool(port, env, test="get-printer-attributes.test", timeout=30):
    """ipptool -E: RFC 2817 Upgrade on an ipp:// URI.  It does not verify
    the server's certificate (CUPS 2.4 ipptool never calls
    httpCredentialsGetTrust()), so it needs no trust store; HOME points
    at the test's directory all the same."""
    return subprocess.run(["ipptool", "-E", "-T", "10", "-tv",
                           f"ipp://127.0.0.1:{port}/ipp/print", str(IPPTOOL_TESTS / test)],
                          capture_output=True, timeout=timeout, env=env)


def test_ipptool_upgrade_reaches_ippeveprinter_once(daemon, pki, printer):
    """Regression: ipptool -E through the proxy to ippeveprinter.  The
    OPTIONS * that asked for TLS reaches the printer inside TLS without
    Connection and Upgrade, so the printer answers it (200) instead of a
    second 101; ipptool succeeds on one connection instead of
    reconnecting in a tight loop."""
    tap = Tap(printer.port)
    port = free_port()
    d = daemon(upgrade_conf(port, pki, f"127.0.0.1:{tap.port}"))
    r = ipptool(port, printer.env)
    out = r.stdout.decode(errors="replace")
    time.sleep(0.5)  # a looping ipptool would have opened more sessions by now
    sessions = d.session_lines()
    what = (f"ipptool exit {r.returncode}, {len(sessions)} proxy sessions:\n" +
            "\n".join(sessions[:3]) + "\n" + out[-1500:] + r.stderr.decode(errors="replace"))
    assert r.returncode == 0 and len(sessions) == 1, what
    assert re.search(r"Get printer attributes using get-printer-attributes\s+\[PASS\]", out), out
    assert "upgraded=starttls" in sessions[0] and "tls=TLSv1." in sessions[0], sessions[0]
    # the backend saw one connection, and on it one stream of requests
    # with no upgrade in it: the OPTIONS without its hop-by-hop fields,
    # then the IPP request itself
    assert len(tap.streams) == 1, [bytes(s[:200]) for s in tap.streams]
    stream = bytes(tap.streams[0])
    head = stream.split(b"\r\n\r\n")[0] + b"\r\n\r\n"
    assert re.fullmatch(rb"OPTIONS \* HTTP/1\.1\r\nHost: localhost:%d\r\n"
                        rb"User-Agent: CUPS/[^\r\n]*\r\n\r\n" % port, head), head
    assert b"POST /ipp/print HTTP/1.1\r\n" in stream
    assert re.search(rb"(?im)^(upgrade|connection):", stream) is None, stream[:2000]
    plog = printer.log()
    assert plog.count("Accepted connection") == 1, plog
    assert "localhost OPTIONS *" in plog and "Get-Printer-Attributes successful-ok" in plog, plog
    assert "Switching Protocols" not in plog and "Upgrading to encrypted" not in plog, plog
    tap.close()


def test_ipptool_upgrade_without_the_proxy_is_rfc2817(printer):
    """The reference: ipptool -E straight to ippeveprinter upgrades once
    and succeeds (what the proxy must not do a second time for it)."""
    r = ipptool(printer.port, printer.env)
    assert r.returncode == 0, r.stdout.decode(errors="replace")[-2000:]
    plog = printer.log()
    assert plog.count("Switching Protocols") == 1 and plog.count("Accepted connection") == 1, plog


# Raw sockets against a backend that records what it receives

class HeadBackend:
    """Reads one request head per connection, keeps it byte for byte and
    answers 200 with a short body; then closes."""

    BODY = b"from the recording backend\n"

    def __init__(self):
        self.heads = []

        def handler(conn, srv):
            buf = b""
            while b"\r\n\r\n" not in buf and b"\n\n" not in buf:
                d = conn.recv(65536)
                if not d:
                    return
                buf += d
            self.heads.append(buf)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s"
                         % (len(self.BODY), self.BODY))

        self.server = Server(handler)
        self.port = self.server.port

    def close(self):
        self.server.close()


@pytest.fixture
def heads():
    b = HeadBackend()
    yield b
    b.close()


def upgrade(port, pki, head):
    """Send head, expect 101; TLS; return (the 101 head, what came inside TLS)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
        c.sendall(head)
        resp = recv_until(c, b"\r\n\r\n")
        assert resp.startswith(b"HTTP/1.1 101 Switching Protocols\r\n"), resp
        with client_ctx(pki.ca).wrap_socket(c, server_hostname="localhost") as t:
            return resp, recv_all(t)


def refused(port, head):
    with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
        c.sendall(head)
        return recv_all(c)


def test_connection_names_other_fields(daemon, pki, heads):
    """Connection: Upgrade, X-Foo: X-Foo goes too; every other field
    reaches the backend byte for byte, in order, with its spacing."""
    port = free_port()
    daemon(upgrade_conf(port, pki, f"127.0.0.1:{heads.port}"))
    _, inside = upgrade(port, pki, b"GET /named HTTP/1.1\r\nHost: localhost\r\nX-Foo: 1\r\n"
                        b"Connection: Upgrade, X-Foo\r\nUpgrade: TLS/1.0\r\n"
                        b"X-Bar:   spaced  out \t\r\nAccept: */*\r\n\r\n")
    assert inside.endswith(HeadBackend.BODY), inside
    assert heads.heads == [b"GET /named HTTP/1.1\r\nHost: localhost\r\n"
                           b"X-Bar:   spaced  out \t\r\nAccept: */*\r\n\r\n"]


def test_several_connection_fields(daemon, pki, heads):
    """Connection may come several times; what each names goes, including
    Keep-Alive when keep-alive is named."""
    port = free_port()
    daemon(upgrade_conf(port, pki, f"127.0.0.1:{heads.port}"))
    upgrade(port, pki, b"OPTIONS * HTTP/1.1\r\nConnection: keep-alive\r\nHost: localhost\r\n"
            b"Keep-Alive: timeout=5\r\nConnection: Upgrade\r\nX-A: a\r\nConnection: ,X-A,,\r\n"
            b"Upgrade: TLS/1.0\r\nX-B: b\r\n\r\n")
    assert heads.heads == [b"OPTIONS * HTTP/1.1\r\nHost: localhost\r\nX-B: b\r\n\r\n"]


@pytest.mark.parametrize("tokens,echo", [
    (b"TLS/1.2,TLS/1.1,TLS/1.0", b"TLS/1.2"),   # CUPS' list
    (b"TLS/1.0", b"TLS/1.0"),
    (b"TLS/1.3", b"TLS/1.3"),
    (b"h2c, TLS/1.1", b"TLS/1.1"),
    (b"websocket , TLS/1.2 ,h2c", b"TLS/1.2"),
])
def test_upgrade_lists_with_a_tls_token(daemon, pki, heads, tokens, echo):
    """Any TLS/1.x token of the list qualifies; the 101 names the first
    one the client listed (RFC 9110 section 7.8: only a protocol the
    client offered)."""
    port = free_port()
    daemon(upgrade_conf(port, pki, f"127.0.0.1:{heads.port}"))
    resp, inside = upgrade(port, pki, b"OPTIONS * HTTP/1.1\r\nHost: localhost\r\nUpgrade: %s\r\n"
                           b"Connection: Upgrade\r\n\r\n" % tokens)
    assert b"\r\nUpgrade: %s, HTTP/1.1\r\n" % echo in resp, resp
    assert b"\r\nConnection: Upgrade\r\n" in resp, resp
    assert inside.endswith(HeadBackend.BODY)
    assert heads.heads == [b"OPTIONS * HTTP/1.1\r\nHost: localhost\r\n\r\n"]


@pytest.mark.parametrize("fields", [
    b"Upgrade: h2c\r\nConnection: Upgrade, HTTP2-Settings\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n",
    b"Upgrade: websocket\r\nConnection: Upgrade\r\n",
    b"Upgrade: TLS/2.0, TLS\r\nConnection: Upgrade\r\n",
    b"Upgrade: TLS/1.x, XTLS/1.0, TLS/1.0a\r\nConnection: Upgrade\r\n",
    b"Upgrade: TLS/1.2\r\nConnection: keep-alive\r\n",
    b"Upgrade: TLS/1.2\r\n",
    b"X-Upgrade: TLS/1.2\r\nConnection: Upgrade\r\n",
])
def test_upgrade_lists_without_a_tls_token_get_426(daemon, pki, heads, fields):
    """No TLS/1.x token, or no Connection: Upgrade: not an upgrade to TLS,
    so 426 under require_tls, and nothing reaches the backend."""
    port = free_port()
    d = daemon(upgrade_conf(port, pki, f"127.0.0.1:{heads.port}"))
    resp = refused(port, b"GET / HTTP/1.1\r\nHost: localhost\r\n" + fields + b"\r\n")
    assert resp.startswith(b"HTTP/1.1 426 Upgrade Required\r\n"), resp
    assert b"\r\nUpgrade: TLS/1.0, HTTP/1.1\r\n" in resp
    assert heads.heads == []
    assert "end=protocol-error" in d.wait_session()[0]


def test_names_and_tokens_ignore_case(daemon, pki, heads):
    port = free_port()
    daemon(upgrade_conf(port, pki, f"127.0.0.1:{heads.port}"))
    resp, _ = upgrade(port, pki, b"GET /case HTTP/1.1\r\nhost: localhost\r\nupgrade: tls/1.1\r\n"
                      b"CONNECTION: UPGRADE, x-foo\r\nX-FOO: y\r\nx-Keep: z\r\n\r\n")
    assert b"\r\nUpgrade: TLS/1.1, HTTP/1.1\r\n" in resp, resp
    assert heads.heads == [b"GET /case HTTP/1.1\r\nhost: localhost\r\nx-Keep: z\r\n\r\n"]


def test_lf_only_head_is_kept_as_sent(daemon, pki, heads):
    """Lines that end in a bare LF keep their ending."""
    port = free_port()
    daemon(upgrade_conf(port, pki, f"127.0.0.1:{heads.port}"))
    upgrade(port, pki, b"GET /lf HTTP/1.1\nHost: localhost\nConnection: upgrade\n"
            b"Upgrade: TLS/1.2\nAccept: */*\r\n\n")
    assert heads.heads == [b"GET /lf HTTP/1.1\nHost: localhost\nAccept: */*\r\n\n"]


def test_upgrade_with_a_body_gets_400(daemon, pki, heads):
    """A request with a body cannot be upgraded, whatever TLS/1.x it names."""
    port = free_port()
    d = daemon(upgrade_conf(port, pki, f"127.0.0.1:{heads.port}"))
    cases = [(tokens, body) for tokens in (b"TLS/1.2,TLS/1.1,TLS/1.0", b"TLS/1.2")
             for body in (b"Content-Length: 5\r\n", b"Transfer-Encoding: chunked\r\n")]
    for tokens, body in cases:
        resp = refused(port, b"POST /ipp/print HTTP/1.1\r\nHost: localhost\r\n"
                       b"Connection: Upgrade\r\nUpgrade: " + tokens + b"\r\n" + body +
                       b"\r\nhello")
        assert resp.startswith(b"HTTP/1.1 400 Bad Request\r\n"), (tokens, body, resp)
    assert heads.heads == []
    lines = d.wait_session(count=len(cases))
    assert all("with a body" in l for l in lines), lines


def test_connection_that_is_not_a_token_list_gets_400(daemon, pki, heads):
    """A Connection list the proxy cannot read names fields it cannot tell:
    the request is refused, not relayed with them."""
    port = free_port()
    d = daemon(upgrade_conf(port, pki, f"127.0.0.1:{heads.port}"))
    resp = refused(port, b"OPTIONS * HTTP/1.1\r\nHost: localhost\r\nUpgrade: TLS/1.2\r\n"
                   b"Connection: Upgrade, X Foo\r\nX: 1\r\n\r\n")
    assert resp.startswith(b"HTTP/1.1 400 Bad Request\r\n"), resp
    assert heads.heads == []
    assert "Connection field" in d.wait_session()[0]


def test_smuggled_request_behind_upgrade_is_discarded(daemon, pki, heads):
    """What follows the head before the ClientHello is dropped as
    injected, with the rewrite: the backend sees only the rewritten
    head."""
    port = free_port()
    d = daemon(upgrade_conf(port, pki, f"127.0.0.1:{heads.port}"))
    _, inside = upgrade(port, pki, b"OPTIONS * HTTP/1.1\r\nHost: localhost\r\nUpgrade: TLS/1.0\r\n"
                        b"Connection: Upgrade\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n")
    assert inside.endswith(HeadBackend.BODY)
    assert heads.heads == [b"OPTIONS * HTTP/1.1\r\nHost: localhost\r\n\r\n"]
    assert "discarded=" in d.wait_session()[0]


def test_curl_cannot_upgrade_but_is_told_to(daemon, pki, heads):
    """curl cannot do RFC 2817 (it has no TLS upgrade of an http:// URL);
    with the two fields set by hand it gets the proxy's 101 naming its
    token, and nothing reaches the backend in cleartext."""
    port = free_port()
    d = daemon(upgrade_conf(port, pki, f"127.0.0.1:{heads.port}", extra="timeouts = { handshake = 2; };"))
    r = subprocess.run(["curl", "-sS", "-i", "--max-time", "10", "-H", "Upgrade: TLS/1.2",
                        "-H", "Connection: Upgrade", f"http://127.0.0.1:{port}/curl"],
                       capture_output=True, timeout=30)
    head = r.stdout.split(b"\r\n\r\n")[0]
    assert head.startswith(b"HTTP/1.1 101 Switching Protocols\r\n"), (r.stdout, r.stderr)
    assert b"\r\nUpgrade: TLS/1.2, HTTP/1.1\r\n" in head + b"\r\n", head
    assert heads.heads == []
    assert "end=handshake-failed" in d.wait_session(timeout=15)[0] or \
        "end=timeout-handshake" in d.wait_session(timeout=15)[0]
