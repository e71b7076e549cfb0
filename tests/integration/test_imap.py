"""protocol imap: Python's imaplib, curl imap:// and openssl s_client
-starttls imap through the daemon to Dovecot 2.3 (a real IMAP server,
tests/integration/dovecot_backend.py), and raw sockets for what no client
sends: injection behind STARTTLS, pipelining, literals of both kinds,
oversized lines.  Dovecot's own log (auth_debug, auth_verbose) shows what
reached it.  Misbehaving backends are small fakes."""
import base64
import imaplib
import socket
import ssl
import subprocess
import time

import pytest

from dovecot_backend import Dovecot
from helpers import Server, backend_starttls, client_ctx, free_port, s_client, wait_for
from protocols import listener

STARTTLS_OK = b"OK Begin TLS negotiation now\r\n"
UNAVAILABLE = b"* BYE [UNAVAILABLE] Service not available\r\n"
TOOBIG = b"* BAD [TOOBIG] Line too long\r\n"
PRIVACY_NO = b"NO [PRIVACYREQUIRED] Use STARTTLS before authenticating\r\n"
PRIVACY_BAD = b"BAD [PRIVACYREQUIRED] Use STARTTLS first\r\n"


def imap_conf(port, backend, pki, extra="", backend_extra="", glob="", name="imap"):
    """One imap listener on 127.0.0.1:port in front of backend (a port
    on 127.0.0.1, or host:port)."""
    return listener(port, backend, protocol="imap", name=name, pki=pki, extra=extra,
                    backend_extra=backend_extra, glob=glob)


@pytest.fixture
def dovecot(tmp_path):
    d = Dovecot(tmp_path, extra="imap_id_log = *\n")
    yield d
    d.stop()


class Imap:
    """What an IMAP client reads from a socket: whole response lines, each
    with the literals it announces and the rest of its line after them.
    line() returns b"" once the peer has closed."""

    def __init__(self, sock):
        self.sock, self.buf = sock, b""

    def _fill(self, deadline):
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"nothing whole within the deadline, have {self.buf!r}")
        self.sock.settimeout(left)
        try:
            d = self.sock.recv(65536)
        except (ConnectionResetError, ssl.SSLZeroReturnError, ssl.SSLEOFError):
            d = b""
        if not d:
            return False
        self.buf += d
        return True

    def line(self, timeout=10):
        deadline = time.monotonic() + timeout
        pos = 0
        while True:
            nl = self.buf.find(b"\r\n", pos)
            if nl < 0:
                if not self._fill(deadline):
                    rest, self.buf = self.buf, b""
                    return rest
                continue
            head = self.buf[:nl]
            if head.endswith(b"}") and b"{" in head and not head.startswith(b"+"):
                n = int(head[head.rindex(b"{") + 1:-1])
                while len(self.buf) < nl + 2 + n:
                    if not self._fill(deadline):
                        rest, self.buf = self.buf, b""
                        return rest
                pos = nl + 2 + n
                continue
            out, self.buf = self.buf[:nl + 2], self.buf[nl + 2:]
            return out

    def until(self, tag, timeout=10):
        """Every line up to and including the tagged completion for tag."""
        out = []
        while True:
            ln = self.line(timeout)
            out.append(ln)
            if not ln or ln.startswith(tag + b" "):
                return out

    def quiet(self, seconds=0.5):
        """True if nothing at all arrives for that long."""
        if self.buf:
            return False
        self.sock.settimeout(seconds)
        try:
            d = self.sock.recv(65536)
        except socket.timeout:
            return True
        except (ConnectionResetError, ssl.SSLError):
            return False
        self.buf += d
        return False

    def closed(self, timeout=10):
        """True once the peer has closed (what comes before is dropped)."""
        deadline = time.monotonic() + timeout
        self.buf = b""
        while time.monotonic() < deadline:
            if not self._fill(deadline):
                return True
            self.buf = b""
        return False


def connect(port):
    c = socket.create_connection(("127.0.0.1", port), timeout=10)
    return c, Imap(c)


def starttls(c, r, pki, tag=b"S"):
    """The proxy's STARTTLS, then TLS; nothing may follow its OK in cleartext."""
    c.sendall(tag + b" STARTTLS\r\n")
    assert r.until(tag) == [tag + b" " + STARTTLS_OK]
    assert r.buf == b""
    t = client_ctx(pki.ca).wrap_socket(c, server_hostname="localhost")
    return t, Imap(t)


def auth_requests(dove):
    """The authentication requests that reached Dovecot's auth process."""
    return [l for l in dove.log().splitlines() if "client in: AUTH" in l]


def test_imaplib_starttls_login_fetch_byte_for_byte(daemon, pki, dovecot):
    """imaplib: the cleartext capabilities offer STARTTLS and LOGINDISABLED
    and no AUTH=, starttls() verifies the proxy's certificate, and inside
    TLS the capabilities are Dovecot's own (AUTH=PLAIN, no STARTTLS);
    LOGIN, SELECT and FETCH give the message byte for byte."""
    port = free_port()
    d = daemon(imap_conf(port, dovecot.imap_port, pki))
    c = imaplib.IMAP4("127.0.0.1", port, timeout=10)
    assert c.welcome == (b"* OK [CAPABILITY IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE "
                         b"LITERAL+ STARTTLS LOGINDISABLED] Dovecot (Debian) ready.")
    assert "STARTTLS" in c.capabilities and "LOGINDISABLED" in c.capabilities
    assert not any(x.startswith("AUTH=") for x in c.capabilities)
    c.starttls(ssl_context=client_ctx(pki.ca))
    assert "STARTTLS" not in c.capabilities and "LOGINDISABLED" not in c.capabilities
    assert "AUTH=PLAIN" in c.capabilities
    assert c.login(dovecot.user, dovecot.password)[0] == "OK"
    assert c.select("INBOX") == ("OK", [b"1"])
    typ, data = c.fetch(b"1", "(BODY.PEEK[])")
    assert typ == "OK" and data[0][1] == dovecot.message
    c.logout()
    line = d.wait_session()[0]
    assert "listener=imap" in line and "upgraded=starttls" in line and "tls=TLSv1.3" in line
    assert "discarded=" not in line
    assert "end=backend-closed" in line or "end=client-closed" in line
    logins = dovecot.wait_logins()
    assert len(logins) == 1 and "user=<alice>" in logins[0]


def test_imaplib_login_with_a_synchronizing_literal(daemon, pki, dovecot):
    """imaplib sends LOGIN's password as a literal "{n}" and waits for
    Dovecot's "+", which the proxy relays; then the n bytes pass as data."""
    port = free_port()
    daemon(imap_conf(port, dovecot.imap_port, pki))
    c = imaplib.IMAP4("127.0.0.1", port, timeout=10)
    c.starttls(ssl_context=client_ctx(pki.ca))
    c.literal = dovecot.password.encode()
    typ, data = c._simple_command("LOGIN", dovecot.user)
    assert typ == "OK", data
    c.state = "AUTH"
    c.select("INBOX")
    typ, data = c.fetch(b"1", "(BODY.PEEK[])")
    assert data[0][1] == dovecot.message
    c.logout()
    assert "user=<alice>" in dovecot.wait_logins()[0]


def test_curl_fetches_the_message_over_starttls(daemon, pki, dovecot, tmp_path):
    """curl imap:// --ssl-reqd: CAPABILITY, STARTTLS, CAPABILITY again,
    AUTHENTICATE PLAIN with an initial response (SASL-IR), SELECT, FETCH."""
    port = free_port()
    daemon(imap_conf(port, dovecot.imap_port, pki))
    r = subprocess.run(["curl", "-q", "-sS", "--max-time", "20", "--ssl-reqd",
                        "--cacert", str(pki.ca), "-u", f"{dovecot.user}:{dovecot.password}",
                        f"imap://localhost:{port}/INBOX;UID=1"],
                       capture_output=True, timeout=30, env={"HOME": str(tmp_path), "PATH": "/usr/bin:/bin"})
    assert r.returncode == 0, r.stderr.decode()
    assert r.stdout == dovecot.message
    assert "method=PLAIN" in dovecot.wait_logins()[0]


def test_openssl_s_client_starttls_imap_verifies_the_chain(daemon, pki, dovecot):
    """openssl s_client -starttls imap (". CAPABILITY", ". STARTTLS"),
    then a command inside TLS."""
    port = free_port()
    daemon(imap_conf(port, dovecot.imap_port, pki))
    r = s_client(port, ["-starttls", "imap", "-CAfile", str(pki.ca), "-verify_return_error",
                        "-servername", "localhost", "-ign_eof"],
                 b"a CAPABILITY\r\na LOGOUT\r\n")
    out, err = r.stdout.decode(), r.stderr.decode()
    assert r.returncode == 0, err
    assert "Verification: OK" in err
    caps = out.split("* CAPABILITY", 1)[1].split("\n", 1)[0]
    assert "AUTH=PLAIN" in caps and "STARTTLS" not in caps
    assert "* BYE Logging out" in out


def test_credentials_before_tls_never_reach_dovecot(daemon, pki, dovecot):
    """Under require_tls LOGIN and AUTHENTICATE before TLS get NO
    [PRIVACYREQUIRED] and other commands BAD [PRIVACYREQUIRED]; Dovecot's
    auth log shows one authentication, alice's inside TLS, and no trace of
    mallory's credentials."""
    port = free_port()
    daemon(imap_conf(port, dovecot.imap_port, pki))
    ir = base64.b64encode(b"\0mallory\0mallory-pw")
    c, r = connect(port)
    with c:
        assert r.line().startswith(b"* OK [CAPABILITY ")
        c.sendall(b"a1 LOGIN mallory mallory-pw\r\n")
        assert r.until(b"a1") == [b"a1 " + PRIVACY_NO]
        c.sendall(b"a2 AUTHENTICATE PLAIN " + ir + b"\r\n")
        assert r.until(b"a2") == [b"a2 " + PRIVACY_NO]
        c.sendall(b"a3 AUTHENTICATE PLAIN\r\n")
        assert r.until(b"a3") == [b"a3 " + PRIVACY_NO]   # no "+": no dialogue
        c.sendall(b"a4 SELECT INBOX\r\na5 ENABLE IMAP4rev2\r\n")
        assert r.until(b"a5") == [b"a4 " + PRIVACY_BAD, b"a5 " + PRIVACY_BAD]
        c.sendall(b"a6 NOOP\r\na7 ID (\"name\" \"stp-test\")\r\n")
        assert r.until(b"a6") == [b"a6 OK NOOP completed.\r\n"]
        assert r.until(b"a7")[-1] == b"a7 OK ID completed.\r\n"
        t, rt = starttls(c, r, pki)
        t.sendall(b"b1 LOGIN alice " + dovecot.password.encode() + b"\r\n")
        assert rt.until(b"b1")[-1].startswith(b"b1 OK ")
        t.sendall(b"b2 LOGOUT\r\n")
        rt.until(b"b2")
        t.close()
    dovecot.wait_log("Logged out")
    log = dovecot.log()
    assert "ID sent: name=stp-test" in log        # the allowed ID reached it
    assert "mallory" not in log and ir.decode() not in log
    reqs = auth_requests(dovecot)
    assert len(reqs) == 1, reqs
    assert "secured" in reqs[0]
    assert len(dovecot.wait_logins()) == 1 and "user=<alice>" in dovecot.logins()[0]


def test_command_injected_behind_starttls_is_discarded(daemon, pki, dovecot):
    """CVE-2011-0411: "S STARTTLS\\r\\nX LOGIN alice ...\\r\\n" in one
    write: the LOGIN is discarded, never relayed nor answered, inside TLS
    the first answer is to the client's own command, and Dovecot saw no
    authentication."""
    port = free_port()
    d = daemon(imap_conf(port, dovecot.imap_port, pki))
    c, r = connect(port)
    with c:
        r.line()
        c.sendall(b"S STARTTLS\r\nX LOGIN alice " + dovecot.password.encode() + b"\r\n")
        assert r.until(b"S") == [b"S " + STARTTLS_OK]
        t = client_ctx(pki.ca).wrap_socket(c, server_hostname="localhost")
        rt = Imap(t)
        t.sendall(b"a NOOP\r\n")
        assert rt.until(b"a") == [b"a OK NOOP completed.\r\n"]
        assert rt.quiet(0.5)
        t.close()
    line = d.wait_session()[0]
    assert "discarded=" in line
    assert "discarded" in d.log() and "STARTTLS command injection" in d.log()
    assert auth_requests(dovecot) == []


def test_refused_synchronizing_literal_gets_no_continuation(daemon, pki, dovecot):
    """"a LOGIN {5}" before TLS: NO at once, never a "+" (the client must
    not send its password); what follows is read as commands."""
    port = free_port()
    daemon(imap_conf(port, dovecot.imap_port, pki))
    c, r = connect(port)
    with c:
        r.line()
        c.sendall(b"a LOGIN {5}\r\n")
        assert r.line() == b"a " + PRIVACY_NO
        assert r.quiet(0.5)
        c.sendall(b"b NOOP\r\n")
        assert r.until(b"b") == [b"b OK NOOP completed.\r\n"]
    assert auth_requests(dovecot) == []


def test_refused_literal_plus_is_skipped_unread(daemon, pki, dovecot):
    """"a LOGIN {n+}": the n bytes are data even when they read as a
    command; the whole command is answered once, and none of it reaches
    Dovecot."""
    port = free_port()
    daemon(imap_conf(port, dovecot.imap_port, pki))
    hidden = b"x LOGIN alice " + dovecot.password.encode() + b"\r\n"
    c, r = connect(port)
    with c:
        r.line()
        c.sendall(b"a LOGIN {%d+}\r\n%s {4+}\r\nb OK\r\n" % (len(hidden), hidden))
        assert r.until(b"a") == [b"a " + PRIVACY_NO]
        c.sendall(b"c NOOP\r\n")
        assert r.until(b"c") == [b"c OK NOOP completed.\r\n"]
    assert auth_requests(dovecot) == []


def test_relayed_literals_reach_dovecot_as_literals(daemon, pki, dovecot):
    """ID before TLS with a synchronizing literal (Dovecot's "+ OK"
    relayed, then the data) and with LITERAL+ (Dovecot offers it); inside
    TLS, LOGIN with two non-synchronizing literals."""
    port = free_port()
    daemon(imap_conf(port, dovecot.imap_port, pki))
    c, r = connect(port)
    with c:
        r.line()
        c.sendall(b"a1 ID (\"name\" {8}\r\n")
        assert r.line() == b"+ OK\r\n"
        c.sendall(b"stp-sync \"x\" \"y\")\r\n")
        assert r.until(b"a1")[-1] == b"a1 OK ID completed.\r\n"
        c.sendall(b"a2 ID (\"name\" {9+}\r\nstp-plus! \"x\" \"y\")\r\n")
        assert r.until(b"a2")[-1] == b"a2 OK ID completed.\r\n"
        t, rt = starttls(c, r, pki)
        u, pw = dovecot.user.encode(), dovecot.password.encode()
        t.sendall(b"b1 LOGIN {%d+}\r\n%s {%d+}\r\n%s\r\n" % (len(u), u, len(pw), pw))
        assert rt.until(b"b1")[-1].startswith(b"b1 OK ")
        t.sendall(b"b2 SELECT INBOX\r\nb3 FETCH 1 BODY.PEEK[]\r\n")
        rt.until(b"b2")
        fetched = rt.until(b"b3")
        assert dovecot.message in fetched[0]
        t.close()
    assert "user=<alice>" in dovecot.wait_logins()[0]
    # Dovecot logs the first ID of a connection: the second, on its own
    c, r = connect(port)
    with c:
        r.line()
        c.sendall(b"a ID (\"name\" {9+}\r\nstp-plus! \"x\" \"y\")\r\na LOGOUT\r\n")
        r.until(b"a")
        r.until(b"a")
    dovecot.wait_log("ID sent: name=stp-plus!")
    assert "ID sent: name=stp-sync, x=y" in dovecot.log()


def test_starttls_injected_into_a_sasl_dialogue_is_a_response(daemon, pki, dovecot):
    """An attacker puts AUTHENTICATE PLAIN in front of the client's
    STARTTLS (no require_tls): Dovecot's "+" leaves AUTHENTICATE open, so
    the STARTTLS line is the client's SASL response, relayed; nothing says
    "Begin TLS".  Once the dialogue has ended, STARTTLS is the verb again."""
    port = free_port()
    daemon(imap_conf(port, dovecot.imap_port, pki, extra="require_tls = false;"))
    c, r = connect(port)
    with c:
        r.line()
        c.sendall(b"x AUTHENTICATE PLAIN\r\nS STARTTLS\r\n")
        assert r.line() == b"+ \r\n"
        end = r.until(b"x")
        assert end[-1].startswith(b"x BAD ") or end[-1].startswith(b"x NO "), end
        assert not any(b"Begin TLS" in l for l in end)
        assert r.quiet(0.5)
        t, rt = starttls(c, r, pki)
        t.sendall(b"a NOOP\r\n")
        assert rt.until(b"a") == [b"a OK NOOP completed.\r\n"]
        t.close()
    assert len(auth_requests(dovecot)) == 1


def test_second_starttls_inside_tls(daemon, pki, dovecot):
    port = free_port()
    daemon(imap_conf(port, dovecot.imap_port, pki))
    c, r = connect(port)
    with c:
        r.line()
        t, rt = starttls(c, r, pki)
        t.sendall(b"a STARTTLS\r\n")
        assert rt.until(b"a") == [b"a BAD TLS already active\r\n"]
        t.sendall(b"b CAPABILITY\r\n")
        caps = rt.until(b"b")
        assert caps[0].startswith(b"* CAPABILITY ") and b"STARTTLS" not in caps[0]
        t.close()


def test_capability_in_the_tagged_ok_to_login_is_rewritten(daemon, pki, tmp_path):
    """A backend that advertises STARTTLS and LOGINDISABLED everywhere
    (the greeting, * CAPABILITY, and the OK to LOGIN): before TLS the
    client sees them once each, inside TLS never."""
    caps = b"IMAP4rev1 LITERAL+ STARTTLS LOGINDISABLED AUTH=PLAIN"

    def answer(tag, verb, line):
        if verb == b"CAPABILITY":
            return b"* CAPABILITY " + caps + b"\r\n" + tag + b" OK done\r\n"
        if verb == b"LOGIN":
            return tag + b" OK [CAPABILITY " + caps + b" IDLE] Logged in\r\n"
        return tag + b" OK done\r\n"
    be = FakeImap(b"* OK [CAPABILITY " + caps + b"] fake ready\r\n", answer)
    port = free_port()
    daemon(imap_conf(port, be.port, pki))
    c, r = connect(port)
    with c:
        assert r.line() == (b"* OK [CAPABILITY IMAP4rev1 LITERAL+ STARTTLS LOGINDISABLED] "
                            b"fake ready\r\n")
        c.sendall(b"a CAPABILITY\r\n")
        assert r.until(b"a")[0] == b"* CAPABILITY IMAP4rev1 LITERAL+ STARTTLS LOGINDISABLED\r\n"
        t, rt = starttls(c, r, pki)
        t.sendall(b"b CAPABILITY\r\n")
        assert rt.until(b"b")[0] == b"* CAPABILITY IMAP4rev1 LITERAL+ AUTH=PLAIN\r\n"
        t.sendall(b"c LOGIN alice pw\r\n")
        assert rt.until(b"c") == [b"c OK [CAPABILITY IMAP4rev1 LITERAL+ AUTH=PLAIN IDLE] "
                                  b"Logged in\r\n"]
        # authenticated: relayed as it is from now on
        t.sendall(b"d CAPABILITY\r\n")
        assert rt.until(b"d")[0] == b"* CAPABILITY " + caps + b"\r\n"
        t.close()
    be.close()


class FakeImap:
    """A small IMAP server: greeting, then for each command line the bytes
    answer(tag, verb, line) returns (b"" says nothing).  It records the
    lines it received."""

    def __init__(self, greeting, answer=None, tls=None):
        self.lines = []
        self.greeting = greeting
        self.answer = answer or (lambda tag, verb, line: tag + b" OK done\r\n")
        self.srv = Server(self._handle, tls=tls)
        self.port = self.srv.port

    def _handle(self, conn, srv):
        conn.sendall(self.greeting)
        buf = b""
        while True:
            while b"\n" not in buf:
                d = conn.recv(65536)
                if not d:
                    return
                buf += d
            line, buf = buf.split(b"\n", 1)
            self.lines.append(line + b"\n")
            words = line.rstrip(b"\r").split(b" ")
            out = self.answer(words[0], words[1].upper() if len(words) > 1 else b"", line)
            if out is None:
                return
            if out:
                conn.sendall(out)

    def close(self):
        self.srv.close()


def test_starttls_pipelined_behind_a_slow_command_waits(daemon, pki):
    """STARTTLS pipelined behind a NOOP that the backend answers late: the
    proxy reads no further until the NOOP's completion has been relayed,
    and only then answers STARTTLS."""
    def answer(tag, verb, line):
        if verb == b"NOOP":
            time.sleep(0.5)
        return tag + b" OK " + verb + b" done\r\n"
    be = FakeImap(b"* OK [CAPABILITY IMAP4rev1] fake ready\r\n", answer)
    port = free_port()
    daemon(imap_conf(port, be.port, pki))
    c, r = connect(port)
    with c:
        r.line()
        c.sendall(b"a NOOP\r\nS STARTTLS\r\n")
        assert r.line() == b"a OK NOOP done\r\n"
        assert r.line() == b"S " + STARTTLS_OK
        t = client_ctx(pki.ca).wrap_socket(c, server_hostname="localhost")
        t.sendall(b"b CAPABILITY\r\n")
        assert Imap(t).until(b"b") == [b"b OK CAPABILITY done\r\n"]
        t.close()
    assert [l.split(b" ")[1] for l in be.lines] == [b"NOOP\r\n", b"CAPABILITY\r\n"]
    be.close()


def test_backend_responses_from_before_the_upgrade_are_dropped(daemon, pki):
    """A backend that answers NOOP, then after the client's STARTTLS
    sends more (untagged data, a tagged OK to a tag the client will use,
    a literal holding another, a "+", a BYE): none of it reaches the
    client inside TLS, where the first thing it reads answers its own
    first command.  After that, a tagged OK to no command sent inside TLS
    and untagged data while none is open are dropped too."""
    class Late(FakeImap):
        def _handle(self, conn, srv):
            conn.sendall(self.greeting)
            f = conn.makefile("rb")
            line = f.readline()                     # a NOOP
            conn.sendall(line.split(b" ")[0] + b" OK done\r\n")
            time.sleep(0.5)                         # the client upgrades meanwhile
            conn.sendall(b"* OK [ALERT] injected\r\nb OK [ALERT] injected\r\n"
                         b"* 1 FETCH (BODY[] {12}\r\nb OK injectx)\r\n"
                         b"+ injected\r\n* BYE injected\r\n")
            line = f.readline()                     # the client's first inside TLS
            self.lines.append(line)
            conn.sendall(b"* CAPABILITY IMAP4rev1\r\n" + line.split(b" ")[0] + b" OK done\r\n"
                         b"c OK [ALERT] injected late\r\n* OK [ALERT] injected late\r\n")
            line = f.readline()
            self.lines.append(line)
            conn.sendall(line.split(b" ")[0] + b" OK done\r\n")
            f.readline()
    be = Late(b"* OK fake ready\r\n")
    port = free_port()
    d = daemon(imap_conf(port, be.port, pki))
    c, r = connect(port)
    with c:
        r.line()
        c.sendall(b"a NOOP\r\n")
        assert r.until(b"a") == [b"a OK done\r\n"]
        t, rt = starttls(c, r, pki)
        time.sleep(1.0)
        t.sendall(b"b CAPABILITY\r\n")
        assert rt.until(b"b") == [b"* CAPABILITY IMAP4rev1\r\n", b"b OK done\r\n"]
        assert rt.quiet(0.5)
        t.sendall(b"c NOOP\r\n")
        assert rt.until(b"c") == [b"c OK done\r\n"]
        assert rt.quiet(0.3)
        t.close()
    assert "answered nothing the client asked inside TLS" in d.log()
    be.close()


def test_unexpected_continuation_ends_the_session(daemon, pki):
    """A "+" from the backend when nothing asked for one: the client could
    not tell what it asks for, so the session ends."""
    be = FakeImap(b"* OK fake ready\r\n", lambda tag, verb, line: b"+ send me more\r\n")
    port = free_port()
    d = daemon(imap_conf(port, be.port, pki))
    c, r = connect(port)
    with c:
        r.line()
        c.sendall(b"a NOOP\r\n")
        assert r.line() == b"* BYE [UNAVAILABLE] Service not available: backend protocol error\r\n"
        assert r.closed()
    assert "end=backend-error" in d.wait_session()[0]
    be.close()


def test_preauth_greeting_on_a_starttls_listener(daemon, pki):
    be = FakeImap(b"* PREAUTH [CAPABILITY IMAP4rev1] Logged in as alice\r\n")
    port = free_port()
    d = daemon(imap_conf(port, be.port, pki))
    c, r = connect(port)
    with c:
        assert r.line() == UNAVAILABLE
        assert r.closed()
    line = d.wait_session()[0]
    assert "end=backend-error" in line and "PREAUTH" in line
    be.close()


def test_backend_unreachable(daemon, pki):
    dead = free_port()
    port = free_port()
    d = daemon(imap_conf(port, dead, pki))
    c, r = connect(port)
    with c:
        assert r.line() == UNAVAILABLE
        assert r.closed()
    assert "end=backend-unreachable" in d.wait_session()[0]


def test_busy_past_max_connections(daemon, pki, dovecot):
    port = free_port()
    d = daemon(imap_conf(port, dovecot.imap_port, pki, extra="max_connections = 1;"))
    c1, r1 = connect(port)
    with c1:
        assert r1.line().startswith(b"* OK ")
        c2, r2 = connect(port)
        with c2:
            assert r2.line() == b"* BYE [UNAVAILABLE] Too many connections, try again later\r\n"
            assert r2.closed()
    d.wait_log("max_connections")


def test_line_too_long_before_tls(daemon, pki, dovecot):
    """8 KiB before TLS, literals included: * BAD [TOOBIG], then a close."""
    port = free_port()
    d = daemon(imap_conf(port, dovecot.imap_port, pki))
    for data in (b"a NOOP " + b"x" * 9000 + b"\r\n",
                 b"a ID (\"name\" {8200+}\r\n" + b"x" * 8200 + b")\r\n",
                 b"a ID (\"name\" {8000+}\r\n" + b"x" * 8000 + b" \"more\" {300+}\r\n"):
        c, r = connect(port)
        with c:
            r.line()
            c.sendall(data)
            assert r.line() == TOOBIG
            assert r.closed()
    lines = d.wait_session(count=3)
    assert all("end=protocol-error" in l for l in lines)
    assert "ID sent" not in dovecot.log()


def test_line_too_long_inside_tls_before_authentication(daemon, pki, dovecot):
    """Inside TLS a line holds 64 KiB; a literal of any size is streamed."""
    port = free_port()
    d = daemon(imap_conf(port, dovecot.imap_port, pki))
    c, r = connect(port)
    with c:
        r.line()
        t, rt = starttls(c, r, pki)
        t.sendall(b"a NOOP " + b"x" * 70000 + b"\r\n")
        assert rt.line() == TOOBIG
        assert rt.closed()
        t.close()
    assert "end=protocol-error" in d.wait_session()[0]


def test_bare_newlines_before_tls_are_not_relayed(daemon, pki, dovecot):
    """Before TLS a line must end in CRLF and hold no other CR: servers
    disagree on bare ones, and "a NOOP<CR>b LOGIN ..." is one allowed
    command to the proxy but two to such a server."""
    port = free_port()
    daemon(imap_conf(port, dovecot.imap_port, pki, extra="require_tls = false;"))
    c, r = connect(port)
    with c:
        r.line()
        c.sendall(b"a NOOP\rb LOGIN alice " + dovecot.password.encode() + b"\r\n")
        assert r.line() == b"a BAD Bare CR, LF or NUL not allowed before TLS\r\n"
        c.sendall(b"c NOOP\n")
        assert r.line() == b"c BAD Bare CR, LF or NUL not allowed before TLS\r\n"
        c.sendall(b"d NOOP\r\n")
        assert r.until(b"d") == [b"d OK NOOP completed.\r\n"]
    assert auth_requests(dovecot) == []


def test_cleartext_login_without_require_tls_then_transparent(daemon, pki, dovecot):
    """Without require_tls, LOGIN in cleartext is relayed; once it
    succeeds nothing is left to enforce (STARTTLS belongs to the
    not-authenticated state), and the session is relayed as it is."""
    port = free_port()
    d = daemon(imap_conf(port, dovecot.imap_port, pki, extra="require_tls = false;"))
    c = imaplib.IMAP4("127.0.0.1", port, timeout=10)
    assert "STARTTLS" in c.capabilities and "AUTH=PLAIN" in c.capabilities
    assert "LOGINDISABLED" not in c.capabilities
    c.login(dovecot.user, dovecot.password)
    c.select("INBOX")
    assert c.fetch(b"1", "(BODY.PEEK[])")[1][0][1] == dovecot.message
    tag = c._new_tag()
    c.send(tag + b" STARTTLS\r\n")                 # Dovecot's answer, not the proxy's
    answer = c.readline()
    assert answer.startswith(tag + b" BAD ") and b"Begin TLS" not in answer, answer
    c.logout()
    assert "upgraded=none" in d.wait_session()[0]
    assert "-> relay" in d.log()


def test_implicit_tls_imaps(daemon, pki, tmp_path):
    """client_tls = "implicit" (IMAPS, port 993) in front of a Dovecot
    that offers STARTTLS itself (ssl = yes): TLS from the first byte, and
    neither the greeting nor the capabilities show STARTTLS or
    LOGINDISABLED."""
    dove = Dovecot(tmp_path, tls=(pki.backend_cert, pki.backend_key))
    try:
        port = free_port()
        d = daemon(imap_conf(port, dove.imap_port, pki, extra='client_tls = "implicit";'))
        c = imaplib.IMAP4_SSL("127.0.0.1", port, ssl_context=client_ctx(pki.ca), timeout=10)
        assert b"STARTTLS" not in c.welcome and b"AUTH=PLAIN" in c.welcome
        assert "STARTTLS" not in c.capabilities and "AUTH=PLAIN" in c.capabilities
        with pytest.raises(imaplib.IMAP4.error, match="TLS already active"):
            c._simple_command("STARTTLS")
        c.login(dove.user, dove.password)
        c.select("INBOX")
        assert c.fetch(b"1", "(BODY.PEEK[])")[1][0][1] == dove.message
        c.logout()
        assert "upgraded=implicit" in d.wait_session()[0]
        assert ", TLS," not in dove.wait_logins()[0]     # the backend leg is plaintext
    finally:
        dove.stop()


def dovecot_with_tls(tmp_path, pki, **kw):
    """Dovecot with ssl = yes and disable_plaintext_auth = yes, on
    127.0.0.2: to the proxy, whose address is 127.0.0.1, the connection
    is not secured until it is in TLS, so Dovecot offers LOGINDISABLED in
    cleartext and takes no password there."""
    return Dovecot(tmp_path, tls=(pki.backend_cert, pki.backend_key), plaintext_auth=False,
                   host="127.0.0.2", **kw)


def test_backend_starttls_towards_dovecot(daemon, pki, tmp_path):
    """backend.tls = "starttls": the proxy sends Dovecot CAPABILITY (its
    greeting lists them already: not needed) and STARTTLS, verifies its
    certificate, and only then relays the client; Dovecot's log shows the
    login over TLS.  The client sees Dovecot's greeting, with Dovecot's own
    LOGINDISABLED kept before TLS."""
    dove = dovecot_with_tls(tmp_path, pki)
    try:
        port = free_port()
        d = daemon(imap_conf(port, f"127.0.0.2:{dove.imap_port}", pki,
                             backend_extra=backend_starttls(pki)))
        c = imaplib.IMAP4("127.0.0.1", port, timeout=10)
        assert c.welcome.endswith(b"] Dovecot (Debian) ready.")
        assert "LOGINDISABLED" in c.capabilities and "STARTTLS" in c.capabilities
        c.starttls(ssl_context=client_ctx(pki.ca))
        c.login(dove.user, dove.password)
        c.select("INBOX")
        assert c.fetch(b"1", "(BODY.PEEK[])")[1][0][1] == dove.message
        c.logout()
        d.wait_session()
        logins = dove.wait_logins()
        assert len(logins) == 1 and ", TLS," in logins[0] and "user=<alice>" in logins[0], logins
        assert "backend 127.0.0.2:%d upgraded" % dove.imap_port in d.log()
    finally:
        dove.stop()


def test_without_backend_tls_dovecot_refuses_the_plaintext_login(daemon, pki, tmp_path):
    """The same Dovecot in front of a plain backend leg: LOGIN inside the
    client's TLS reaches Dovecot in cleartext, which refuses it
    (disable_plaintext_auth): what doc/deploy.md says to configure."""
    dove = dovecot_with_tls(tmp_path, pki)
    try:
        port = free_port()
        daemon(imap_conf(port, f"127.0.0.2:{dove.imap_port}", pki))
        c = imaplib.IMAP4("127.0.0.1", port, timeout=10)
        c.starttls(ssl_context=client_ctx(pki.ca))
        assert "LOGINDISABLED" not in c.capabilities    # removed inside TLS
        with pytest.raises(imaplib.IMAP4.error) as e:
            c.login(dove.user, dove.password)
        c.shutdown()
        assert "PRIVACYREQUIRED" in str(e.value) or "disallowed" in str(e.value)
        assert dove.logins() == []
    finally:
        dove.stop()


def test_trusted_networks_let_dovecot_take_the_login(daemon, pki, tmp_path):
    """login_trusted_networks with the proxy's address: Dovecot takes the
    plaintext leg as secured (doc/deploy.md)."""
    dove = dovecot_with_tls(tmp_path, pki, trusted_networks="127.0.0.1/32")
    try:
        port = free_port()
        daemon(imap_conf(port, f"127.0.0.2:{dove.imap_port}", pki))
        c = imaplib.IMAP4("127.0.0.1", port, timeout=10)
        c.starttls(ssl_context=client_ctx(pki.ca))
        c.login(dove.user, dove.password)
        c.logout()
        wait_for(lambda: dove.logins(), 10, "dovecot's login line")
        assert "secured" in dove.wait_logins()[0] and ", TLS," not in dove.wait_logins()[0]
    finally:
        dove.stop()


def test_backend_starttls_not_offered(daemon, pki, dovecot):
    """Dovecot without ssl offers no STARTTLS: the client gets * BYE
    [UNAVAILABLE], end=backend-tls-failed, and nothing it sent reached
    Dovecot (not even an allowed ID)."""
    port = free_port()
    d = daemon(imap_conf(port, dovecot.imap_port, pki, backend_extra=backend_starttls(pki)))
    c, r = connect(port)
    with c:
        c.sendall(b"a ID (\"name\" \"never-seen\")\r\n")
        assert r.line() == UNAVAILABLE
        assert r.closed()
    line = d.wait_session()[0]
    assert "end=backend-tls-failed" in line and "does not offer STARTTLS" in line
    assert "never-seen" not in dovecot.log()


def test_backend_starttls_bytes_after_ok(daemon, pki):
    """Bytes behind the backend's OK to STARTTLS, before TLS, fail the
    backend leg closed."""
    def answer(tag, verb, line):
        if verb == b"STARTTLS":
            return tag + b" OK Begin TLS negotiation now.\r\n* OK [ALERT] injected\r\n"
        return tag + b" OK done\r\n"
    be = FakeImap(b"* OK [CAPABILITY IMAP4rev1 STARTTLS] fake ready\r\n", answer)
    port = free_port()
    d = daemon(imap_conf(port, be.port, pki, backend_extra=backend_starttls(pki)))
    c, r = connect(port)
    with c:
        assert r.line() == UNAVAILABLE
    line = d.wait_session()[0]
    assert "end=backend-tls-failed" in line and "bytes after its OK" in line
    assert [l for l in be.lines] == [b"A2 STARTTLS\r\n"]
    be.close()


def test_backend_starttls_asks_for_capabilities(daemon, pki):
    """A greeting without a capability list: A1 CAPABILITY first; the
    backend refusing STARTTLS fails the leg."""
    def answer(tag, verb, line):
        if verb == b"CAPABILITY":
            return b"* CAPABILITY IMAP4rev1 STARTTLS\r\n" + tag + b" OK done\r\n"
        return tag + b" NO [UNAVAILABLE] not today\r\n"
    be = FakeImap(b"* OK fake ready\r\n", answer)
    port = free_port()
    d = daemon(imap_conf(port, be.port, pki, backend_extra=backend_starttls(pki)))
    c, r = connect(port)
    with c:
        assert r.line() == UNAVAILABLE
    line = d.wait_session()[0]
    assert "end=backend-tls-failed" in line and "STARTTLS refused" in line
    assert be.lines == [b"A1 CAPABILITY\r\n", b"A2 STARTTLS\r\n"]
    be.close()


def test_literal_plus_to_a_backend_without_it_is_refused(daemon, pki):
    """A backend that does not offer LITERAL+ reads "{n+}" as a syntax
    error and the n bytes after it as commands: an allowed ID would carry
    a LOGIN past require_tls.  The proxy refuses the ID itself and skips
    the literal; the backend sees neither."""
    be = FakeImap(b"* OK [CAPABILITY IMAP4rev1] no literal+ here\r\n")
    port = free_port()
    daemon(imap_conf(port, be.port, pki))
    hidden = b"x LOGIN alice secret\r\n"
    c, r = connect(port)
    with c:
        r.line()
        c.sendall(b"a ID (\"name\" {%d+}\r\n%s)\r\nb NOOP\r\n" % (len(hidden), hidden))
        assert r.until(b"a") == [b"a BAD Non-synchronizing literal not supported here\r\n"]
        assert r.until(b"b") == [b"b OK done\r\n"]
    assert be.lines == [b"b NOOP\r\n"]
    be.close()


def test_proxy_protocol_gives_dovecot_the_clients_address(daemon, pki, tmp_path):
    """backend.proxy_protocol = "v2" with Dovecot's haproxy = yes: Dovecot
    logs the client's address (here 127.0.0.3), not the proxy's
    (doc/deploy.md)."""
    dove = Dovecot(tmp_path, haproxy=True)
    try:
        port = free_port()
        daemon(imap_conf(port, dove.imap_port, pki, backend_extra='proxy_protocol = "v2";'))
        raw = socket.socket()
        raw.bind(("127.0.0.3", 0))
        raw.settimeout(10)
        raw.connect(("127.0.0.1", port))
        r = Imap(raw)
        assert r.line().startswith(b"* OK [CAPABILITY ")
        t, rt = starttls(raw, r, pki)
        t.sendall(b"a LOGIN alice " + dove.password.encode() + b"\r\nb LOGOUT\r\n")
        assert rt.until(b"a")[-1].startswith(b"a OK ")
        rt.until(b"b")
        t.close()
        wait_for(lambda: dove.logins(), 10, "dovecot's login line")
        assert "rip=127.0.0.3" in dove.wait_logins()[0], dove.logins()
    finally:
        dove.stop()


def test_backend_starttls_refusal_text_cannot_forge_log_keys(daemon, pki):
    """Guarantee 4: the backend's refusal text is quoted in the session
    line; quotes in it do not end the value and forge keys of their own."""
    be = FakeImap(b"* OK [CAPABILITY IMAP4rev1 STARTTLS] fake ready\r\n",
                  lambda tag, verb, line: tag + b' NO no TLS" end=client-closed x="\r\n')
    port = free_port()
    d = daemon(imap_conf(port, be.port, pki, backend_extra=backend_starttls(pki)))
    c, r = connect(port)
    with c:
        assert r.line() == UNAVAILABLE
    line = d.wait_session()[0]
    assert line.endswith("reason=\"STARTTLS with the backend: STARTTLS refused: "
                         "A2 NO no TLS' end=client-closed x='\""), line
    assert line.count('"') == 2 and line.count(" end=") == 2, line
    be.close()
