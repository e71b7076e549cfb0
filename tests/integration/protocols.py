"""The integration tests' one listener builder, and one table of the
protocols that have a cleartext upgrade.

listener(listen, backend, protocol=..., name=..., ...) writes the text of
a configuration with one listener; listeners(group(...), group(...),
glob=...) one with several.  Every test file builds its configuration
with these (test_tls_reasons.spread_conf aside, which spreads one setting
over each line on purpose).

PROTOCOLS maps a protocol name to a Protocol.  test_attacks.py runs every
attack against every entry, so that a protocol added here is attacked by
all of them.  An entry needs:

  listener     the keywords of listener() for the listener under attack:
               protocol, name, and the protocol's own block, e.g.
               dict(protocol="line", name="demo", line={"reply": "OK"})
  certificates certificates(pki) -> [(cert, key), ...] (default: pki's
               server certificate); one of them must match sni
  backend      backend(tmp_path) -> a real server, started, with .port
               and .stop()
  greet        greet(sock): what a client says and reads in cleartext
               before it sends the verb (default: nothing)
  verb         the upgrade request, as bytes
  answered     answered(sock): reads the proxy's answer to verb and
               asserts that it said yes
  upgrade      upgrade(sock): the whole cleartext upgrade, after which
               the client starts TLS (default: greet, verb, answered)
  probe        probe(tls_sock, backend): one exchange inside TLS that
               proves the session reaches the backend
  second_upgrade  second_upgrade(tls_sock) -> bool: sends verb again
               inside TLS and asserts what comes back; True if the
               session goes on (the probe is then run), False if the
               backend ended it
  injected     a request a man in the middle appends to verb in the same
               write (CVE-2011-0411); the proxy must discard it
  only_probe_seen  only_probe_seen(backend): asserts that the backend
               saw the probe and nothing of injected
  sni          the name the TLS client asks for (default "localhost")

The wire helpers an entry needs (SMTP replies, LDAP BER, IMAP lines, the
line and web servers) live here too, so that the per-protocol test files
can import them from here without importing one another."""
import dataclasses
import http.server
import os
import pathlib
import shutil
import socket
import struct
import tempfile
import threading
import weakref
from typing import Callable

from dovecot_backend import Dovecot
from helpers import Server, recv_until
from postgres_backend import Postgres
from slapd_backend import Slapd
from smtp_backend import SMTPBackend


# The builder

def _address(a):
    """A port on 127.0.0.1, or an address as it is written."""
    return f"127.0.0.1:{a}" if isinstance(a, int) else str(a)


def _value(v):
    """A libconfig value for a Python one: bool, int, str or path, a list
    (an array), a dict (a group)."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, dict):
        return "{ " + " ".join(f"{k} = {_value(x)};" for k, x in v.items()) + " }"
    if isinstance(v, (list, tuple)):
        return "[ " + ", ".join(_value(x) for x in v) + " ]"
    return f'"{v}"'


def tls_block(certificates, extra=""):
    """A listener's tls group: certificates is a list of (cert, key)."""
    items = ", ".join(f'{{ cert = "{c}"; key = "{k}"; }}' for c, k in certificates)
    return f"tls = {{ certificates = ( {items} );{' ' + extra if extra else ''} }};"


def group(listen, backend=None, *, protocol="tcp", name="front", pki=None, certificates=None,
          tls=None, tls_extra="", extra="", block="", backend_extra="", **settings):
    """One listener's group, for listeners().

    listen: a port on 127.0.0.1, an address, or a list of either.
    backend: the same (a port or an address); None writes no backend block.
    The tls group: tls, its whole text as given; else certificates, a list
    of (cert, key); else pki's server certificate; tls_extra goes inside
    it.  None of the three: no tls group.
    settings: the listener's other settings as Python values, None for
    absent (client_tls="none", require_tls=False, line={"reply": "OK"},
    timeouts={"connect": 1}); extra and block: more settings as text.

    The layout is that of the configurations the tests have always
    written: without glob and extra, tls is on line 6 (an error message
    that names that line is asserted in test_daemon.py)."""
    if isinstance(listen, (list, tuple)):
        where = _value([_address(a) for a in listen])
    else:
        where = _value(_address(listen))
    if tls is None:
        if certificates is None and pki is not None:
            certificates = [(pki.server_cert, pki.server_key)]
        tls = tls_block(certificates, tls_extra) if certificates else ""
    own = " ".join(f"{k} = {_value(v)};" for k, v in settings.items() if v is not None)
    to = ""
    if backend is not None:
        to = f'backend = {{ address = "{_address(backend)}"; {backend_extra} }};'
    return (f'  {{ name = "{name}"; listen = {where}; protocol = "{protocol}";\n'
            f"    {' '.join(s for s in (own, extra) if s)}\n"
            f"    {tls}\n"
            f"    {block}\n"
            f"    {to}\n"
            f"  }}")


def listeners(*groups, glob=""):
    """A configuration: the global settings glob (text), then the listeners."""
    return f"\n{glob}\nlisteners = (\n" + ",\n".join(groups) + "\n);\n"


def listener(listen, backend=None, *, glob="", **kw):
    """A configuration with one listener: group()'s arguments, and glob."""
    return listeners(group(listen, backend, **kw), glob=glob)


# smtp

_unread = weakref.WeakKeyDictionary()   # what a read brought past the reply it read


def read_reply(sock, timeout=10):
    """One whole SMTP reply (all its lines); what came after it in the same
    read is kept for the next call (replies may share a TCP read or a TLS
    record)."""
    sock.settimeout(timeout)
    buf = _unread.pop(sock, b"")
    while True:
        end = 0
        for line in buf.split(b"\r\n")[:-1]:
            end += len(line) + 2
            if len(line) >= 4 and line[3:4] == b" " or len(line) == 3:
                if end < len(buf):
                    _unread[sock] = buf[end:]
                return buf[:end]
        chunk = sock.recv(4096)
        if not chunk:
            return buf
        buf += chunk


# ldap: BER, enough to write the requests the tests need

STARTTLS_OID = b"1.3.6.1.4.1.1466.20037"


def tlv(tag, value):
    n = len(value)
    if n < 0x80:
        return bytes([tag, n]) + value
    if n < 0x100:
        return bytes([tag, 0x81, n]) + value
    return bytes([tag, 0x82, n >> 8, n & 0xff]) + value


def message(msgid, op):
    return tlv(0x30, tlv(0x02, bytes([msgid])) + op)


def starttls_request(msgid):
    return message(msgid, tlv(0x77, tlv(0x80, STARTTLS_OID)))


def bind_request(msgid, dn, password):
    return message(msgid, tlv(0x60, tlv(0x02, b"\x03") + tlv(0x04, dn.encode()) +
                              tlv(0x80, password.encode())))


def search_request(msgid, base):
    # base-object search, no filter beyond (objectClass=*), all attributes
    return message(msgid, tlv(0x63, tlv(0x04, base.encode()) + tlv(0x0a, b"\x00") +
                              tlv(0x0a, b"\x00") + tlv(0x02, b"\x00") + tlv(0x02, b"\x00") +
                              tlv(0x01, b"\x00") + tlv(0x87, b"objectClass") + tlv(0x30, b"")))


def read_messages(sock, count, timeout=10):
    """count whole LDAPMessages: a list of (msgid, op tag, resultCode or None, raw)."""
    sock.settimeout(timeout)
    buf, out = b"", []
    while len(out) < count:
        while True:
            if len(buf) >= 2:
                n = buf[1]
                hdr = 2
                if n & 0x80:
                    k = n & 0x7f
                    if len(buf) >= 2 + k:
                        n = int.from_bytes(buf[2:2 + k], "big")
                        hdr = 2 + k
                    else:
                        n = None
                if n is not None and len(buf) >= hdr + n:
                    break
            chunk = sock.recv(65536)
            if not chunk:
                return out
            buf += chunk
        raw, buf = buf[:hdr + n], buf[hdr + n:]
        body = raw[hdr:]
        idlen = body[1]
        msgid = int.from_bytes(body[2:2 + idlen], "big")
        op = body[2 + idlen:]
        optag = op[0]
        ophdr = 2 + (op[1] & 0x7f if op[1] & 0x80 else 0)
        code = op[ophdr + 2] if len(op) > ophdr + 2 and op[ophdr] == 0x0a else None
        out.append((msgid, optag, code, raw))
    return out


# line: the demo protocol's server

def line_server():
    """PING -> PONG, QUIT -> BYE and close, anything else -> ECHO <line>."""
    def handler(conn, srv):
        buf = b""
        while True:
            while b"\n" not in buf:
                d = conn.recv(4096)
                if not d:
                    return
                buf += d
            line, buf = buf.split(b"\n", 1)
            srv.record(line + b"\n")
            word = line.rstrip(b"\r")
            if word == b"PING":
                conn.sendall(b"PONG\r\n")
            elif word == b"QUIT":
                conn.sendall(b"BYE\r\n")
                return
            else:
                conn.sendall(b"ECHO " + word + b"\r\n")
    return Server(handler)


# http: a web server behind the proxy

class WebBackend:
    """http.server on 127.0.0.1, recording the request lines it saw."""

    def __init__(self, body=b"hello from the web backend\n"):
        seen = self.seen = []

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):
                seen.append(self.requestline)
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_OPTIONS = do_GET

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()

    stop = close


# pop3: Dovecot, and POP3 replies

class _HaproxiedDovecot(Dovecot):
    """With haproxy = yes Dovecot greets only after a PROXY header, which
    the start-up probe of dovecot_backend.Dovecot does not send: this one
    sends a v1 header for an unknown connection first."""

    def _listening(self):
        for port in (self.imap_port, self.pop3_port):
            try:
                with socket.create_connection((self.host, port), timeout=1) as s:
                    s.sendall(b"PROXY UNKNOWN\r\n")
                    s.settimeout(2)
                    if not s.recv(1024):
                        return False
            except OSError:
                return False
        return True


class DovecotPOP3:
    """Dovecot (dovecot_backend.py) under a directory of its own that its
    auth process (user dovecot) can reach: pytest's directories are mode
    0700.  .port is its POP3 port; the rest is the Dovecot's."""

    def __init__(self, **kw):
        self.base = tempfile.mkdtemp(prefix="stp-pop3-dovecot-")
        os.chmod(self.base, 0o755)
        try:
            self.dovecot = (_HaproxiedDovecot if kw.get("haproxy") else Dovecot)(self.base, **kw)
        except BaseException:
            shutil.rmtree(self.base, ignore_errors=True)
            raise
        self.port = self.dovecot.pop3_port

    def __getattr__(self, name):
        return getattr(self.__dict__["dovecot"], name)

    def stop(self):
        self.dovecot.stop()
        shutil.rmtree(self.base, ignore_errors=True)


def pop3_reply(sock, multi=False, timeout=10):
    """One POP3 reply: a status line, and with multi a +OK's body up to
    ".CRLF"; what came after it in the same read is kept for the next
    call.  b"" once the peer has closed."""
    sock.settimeout(timeout)
    buf = _unread.pop(sock, b"")
    while True:
        end = buf.find(b"\r\n") + 2
        if end > 1 and multi and buf.startswith(b"+OK"):
            stop = (b"\r\n" + buf[end:]).find(b"\r\n.\r\n")
            end = end + stop + 3 if stop >= 0 else 1
        if end > 1:
            if end < len(buf):
                _unread[sock] = buf[end:]
            return buf[:end]
        chunk = sock.recv(65536)
        if not chunk:
            return buf
        buf += chunk


# postgres: startup packets and messages

PG_SSL_REQUEST = struct.pack("!II", 8, 80877103)
PG_GSSENC_REQUEST = struct.pack("!II", 8, 80877104)


def pg_startup(user, database="postgres", version=0x00030000, **params):
    """A StartupMessage (protocol 3.0 unless version says otherwise)."""
    body = struct.pack("!I", version)
    for k, v in [("user", user), ("database", database)] + list(params.items()):
        body += k.encode() + b"\0" + v.encode() + b"\0"
    body += b"\0"
    return struct.pack("!I", len(body) + 4) + body


def pg_query(sql):
    """A simple Query message."""
    body = sql.encode() + b"\0"
    return b"Q" + struct.pack("!I", len(body) + 4) + body


def pg_until_ready(sock, timeout=10):
    """The server's messages, (type, body), up to and including
    ReadyForQuery; what came after it in the same read is kept for the
    next call."""
    sock.settimeout(timeout)
    buf, out = _unread.pop(sock, b""), []
    while True:
        while len(buf) >= 5 and len(buf) >= 1 + struct.unpack("!I", buf[1:5])[0]:
            n = 1 + struct.unpack("!I", buf[1:5])[0]
            out.append((buf[:1], buf[5:n]))
            buf = buf[n:]
            if out[-1][0] in (b"Z", b"E"):
                if buf:
                    _unread[sock] = buf
                return out
        chunk = sock.recv(65536)
        if not chunk:
            return out
        buf += chunk


# The table

def _nothing(sock):
    pass


def _server_certificate(pki):
    return [(pki.server_cert, pki.server_key)]


@dataclasses.dataclass(frozen=True)
class Protocol:
    """One protocol with a cleartext upgrade; the fields are described at
    the top of this file."""
    listener: dict
    backend: Callable
    verb: bytes
    answered: Callable
    probe: Callable
    second_upgrade: Callable
    injected: bytes
    only_probe_seen: Callable
    greet: Callable = _nothing
    upgrade: Callable = None
    sni: str = "localhost"
    certificates: Callable = _server_certificate

    def __post_init__(self):
        if self.upgrade is None:
            def upgrade(sock):
                self.greet(sock)
                sock.sendall(self.verb)
                self.answered(sock)
            object.__setattr__(self, "upgrade", upgrade)

    def conf(self, port, backend_port, pki, **kw):
        """The configuration of this protocol's listener on port, in
        front of the backend on backend_port; kw as listener()'s."""
        return listener(port, backend_port, certificates=self.certificates(pki),
                        **{**self.listener, **kw})


def _smtp_greet(c):
    read_reply(c)
    c.sendall(b"EHLO client.test\r\n")
    read_reply(c)


def _smtp_answered(c):
    assert read_reply(c).startswith(b"220 2.0.0")


def _smtp_upgrade(c):
    assert read_reply(c).startswith(b"220 ")
    c.sendall(b"EHLO client.test\r\n")
    read_reply(c)
    c.sendall(b"STARTTLS\r\n")
    assert read_reply(c) == b"220 2.0.0 Ready to start TLS\r\n"


def _smtp_probe(t, be):
    t.sendall(b"NOOP\r\n")
    assert read_reply(t) == b"250 OK\r\n"


def _smtp_second_upgrade(t):
    t.sendall(b"STARTTLS\r\n")
    assert read_reply(t) == b"503 5.5.1 TLS already active\r\n"
    return True


def _smtp_only_probe_seen(be):
    assert "MAIL" not in be.verbs()


def _line_answered(c):
    assert recv_until(c, b"\n") == b"OK\r\n"


def _line_probe(t, be):
    t.sendall(b"PING\r\n")
    assert recv_until(t, b"\n") == b"PONG\r\n"


def _line_second_upgrade(t):
    t.sendall(b"STARTTLS\r\n")
    assert recv_until(t, b"\n") == b"ECHO STARTTLS\r\n"  # the backend's, not "OK"
    return True


def _line_only_probe_seen(be):
    assert bytes(be.received) == b"PING\r\n"  # the probe's only


def _ldap_answered(c):
    assert [m[:3] for m in read_messages(c, 1)] == [(1, 0x78, 0)]


def _ldap_probe(t, be):
    t.sendall(search_request(5, be.base))
    assert [m[0] for m in read_messages(t, 2)] == [5, 5]


def _ldap_second_upgrade(t):
    t.sendall(starttls_request(2))
    assert [m[:3] for m in read_messages(t, 1)] == [(2, 0x78, 1)]
    return True


def _ldap_only_probe_seen(be):
    assert len([op for op in be.ops() if op.startswith("SRCH")]) == 1


HTTP_CONNECT = b"CONNECT alt.test:443 HTTP/1.1\r\nHost: alt.test:443\r\n\r\n"


def _http_answered(c):
    assert recv_until(c, b"\r\n\r\n").startswith(b"HTTP/1.1 200")


def _http_upgrade(c):
    c.sendall(HTTP_CONNECT)
    assert recv_until(c, b"\r\n\r\n") == b"HTTP/1.1 200 Connection established\r\n\r\n"


def _http_probe(t, be):
    t.sendall(b"GET /probe HTTP/1.1\r\nHost: alt.test\r\n\r\n")
    assert recv_until(t, b"backend\n").endswith(b"hello from the web backend\n")


def _http_second_upgrade(t):
    t.sendall(b"CONNECT alt.test:443 HTTP/1.1\r\nHost: alt.test\r\n\r\n")
    # http.server's own refusal, and it closes: no tunnel in the tunnel
    reply = recv_until(t, b"</html>\n")
    assert reply.startswith(b"HTTP/1.1 501 Unsupported method ('CONNECT')")
    return False


# imap: Dovecot, and the lines a client reads

def imap_line(sock, timeout=10):
    """One IMAP response line, read a byte at a time, so that nothing
    after it (a ClientHello's answer) is taken from the socket."""
    sock.settimeout(timeout)
    buf = b""
    while not buf.endswith(b"\r\n"):
        d = sock.recv(1)
        if not d:
            break
        buf += d
    return buf


class DovecotIMAP:
    """Dovecot (tests/integration/dovecot_backend.py) as a backend of the
    table: its IMAP port, and ID and authentication logged."""

    def __init__(self, tmp_path):
        self.dovecot = Dovecot(pathlib.Path(tmp_path), extra="imap_id_log = *\n")
        self.port = self.dovecot.imap_port

    def stop(self):
        self.dovecot.stop()


def _imap_greet(c):
    assert imap_line(c).startswith(b"* OK [CAPABILITY ")


def _imap_answered(c):
    assert imap_line(c) == b"S OK Begin TLS negotiation now\r\n"


def _imap_probe(t, be):
    t.sendall(b"P ID (\"name\" \"probe\")\r\n")
    got = b""
    t.settimeout(10)
    while b"P OK" not in got:
        d = t.recv(65536)
        if not d:
            break
        got += d
    # the first thing read inside TLS answers the probe
    assert got == b'* ID ("name" "Dovecot")\r\nP OK ID completed.\r\n', got


def _imap_second_upgrade(t):
    t.sendall(b"S2 STARTTLS\r\n")
    assert imap_line(t) == b"S2 BAD TLS already active\r\n"
    return True


def _imap_only_probe_seen(be):
    be.dovecot.wait_log("ID sent: name=probe")
    log = be.dovecot.log()
    assert "client in: AUTH" not in log and "mallory" not in log


def _http_only_probe_seen(be):
    assert be.seen == ["GET /probe HTTP/1.1"]


POP3_INJECTED = b"AUTH PLAIN AGFsaWNlAGFsaWNlLXNlY3JldC1wdw==\r\n"    # alice's credentials


def _pop3_greet(c):
    assert pop3_reply(c).startswith(b"+OK Dovecot")


def _pop3_answered(c):
    assert pop3_reply(c) == b"+OK Begin TLS negotiation\r\n"


def _pop3_probe(t, be):
    t.sendall(b"CAPA\r\n")
    capa = pop3_reply(t, multi=True)
    assert capa.startswith(b"+OK\r\nCAPA\r\n") and b"STLS" not in capa, capa


def _pop3_second_upgrade(t):
    t.sendall(b"STLS\r\n")
    assert pop3_reply(t) == b"-ERR TLS already active\r\n"
    return True


def _pop3_only_probe_seen(be):
    # with auth_debug Dovecot logs every authentication request it gets
    assert "client in: AUTH" not in be.log() and be.logins() == []


def _pg_answered(c):
    c.settimeout(10)
    assert c.recv(1) == b"S"


def _pg_probe(t, be):
    """A trust user's StartupMessage, then a query, inside TLS."""
    t.sendall(pg_startup("trustuser"))
    msgs = pg_until_ready(t)
    assert msgs[0] == (b"R", b"\0\0\0\0") and msgs[-1][0] == b"Z", msgs
    t.sendall(pg_query("SELECT 'probe'"))
    msgs = pg_until_ready(t)
    assert (b"D", b"\0\x01\0\0\0\x05probe") in msgs, msgs


def _pg_second_upgrade(t):
    t.sendall(PG_SSL_REQUEST)
    msgs = pg_until_ready(t)
    assert len(msgs) == 1 and msgs[0][0] == b"E" and b"C08P01\0" in msgs[0][1], msgs
    return False    # the proxy closes


def _pg_only_probe_seen(be):
    conns = [c for c in be.connections() if "user=postgres " not in c]
    assert len(conns) == 1 and "user=trustuser" in conns[0], conns


PROTOCOLS = {
    "smtp": Protocol(
        listener=dict(protocol="smtp", name="submission"),
        backend=lambda tmp_path: SMTPBackend(),
        greet=_smtp_greet, verb=b"STARTTLS\r\n", answered=_smtp_answered, upgrade=_smtp_upgrade,
        probe=_smtp_probe, second_upgrade=_smtp_second_upgrade,
        injected=b"MAIL FROM:<evil@example.org>\r\n", only_probe_seen=_smtp_only_probe_seen),
    "line": Protocol(
        listener=dict(protocol="line", name="demo", line={"reply": "OK"}),
        backend=lambda tmp_path: line_server(),
        verb=b"STARTTLS\r\n", answered=_line_answered,
        probe=_line_probe, second_upgrade=_line_second_upgrade,
        injected=b"PING\r\n", only_probe_seen=_line_only_probe_seen),
    "ldap": Protocol(
        listener=dict(protocol="ldap", name="directory"),
        backend=lambda tmp_path: Slapd(pathlib.Path(tmp_path) / "slapd"),
        verb=starttls_request(1), answered=_ldap_answered,
        probe=_ldap_probe, second_upgrade=_ldap_second_upgrade,
        injected=search_request(9, "dc=example,dc=org"), only_probe_seen=_ldap_only_probe_seen),
    "http": Protocol(
        listener=dict(protocol="http", name="web", http={"connect_allow": ["alt.test:443"]}),
        certificates=lambda pki: [(pki.server_cert, pki.server_key), (pki.alt_cert, pki.alt_key)],
        backend=lambda tmp_path: WebBackend(),
        verb=HTTP_CONNECT, answered=_http_answered, upgrade=_http_upgrade,
        probe=_http_probe, second_upgrade=_http_second_upgrade,
        injected=b"GET /injected HTTP/1.1\r\nHost: alt.test\r\n\r\n",
        only_probe_seen=_http_only_probe_seen, sni="alt.test"),
    "imap": Protocol(
        listener=dict(protocol="imap", name="imap"),
        backend=DovecotIMAP,
        greet=_imap_greet, verb=b"S STARTTLS\r\n", answered=_imap_answered,
        probe=_imap_probe, second_upgrade=_imap_second_upgrade,
        injected=b"X LOGIN mallory mallory-pw\r\n", only_probe_seen=_imap_only_probe_seen),
    "pop3": Protocol(
        listener=dict(protocol="pop3", name="pop3"),
        backend=lambda tmp_path: DovecotPOP3(),
        greet=_pop3_greet, verb=b"STLS\r\n", answered=_pop3_answered,
        probe=_pop3_probe, second_upgrade=_pop3_second_upgrade,
        injected=POP3_INJECTED, only_probe_seen=_pop3_only_probe_seen),
    "postgres": Protocol(
        listener=dict(protocol="postgres", name="db"),
        backend=lambda tmp_path: Postgres(),
        verb=PG_SSL_REQUEST, answered=_pg_answered,
        probe=_pg_probe, second_upgrade=_pg_second_upgrade,
        # CVE-2021-23214: alice's StartupMessage and a query behind the SSLRequest
        injected=pg_startup("alice") + pg_query("DROP TABLE IF EXISTS injected"),
        only_probe_seen=_pg_only_probe_seen),
}
