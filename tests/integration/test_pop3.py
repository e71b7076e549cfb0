"""protocol pop3: Python's poplib, curl and openssl s_client -starttls pop3
through the daemon to Dovecot 2.3 (tests/integration/dovecot_backend.py,
a real POP3 server run as an ordinary process), and raw sockets for what
no client sends: commands injected behind STLS, pipelining, dot-stuffed
content, long lines.  Small fakes stand in for backends that misbehave
(no CAPA, a RETR answered before login, late replies, bytes after +OK)."""
import contextlib
import os
import poplib
import socket
import ssl
import subprocess
import time

import pytest

from helpers import Server, backend_starttls, client_ctx, free_port
from protocols import DovecotPOP3, listener

GREETING = b"+OK Dovecot (Debian) ready.\r\n"
STLS_OK = b"+OK Begin TLS negotiation\r\n"
AUTH_NEED_TLS = b"-ERR [AUTH] Authentication requires TLS: issue STLS first\r\n"
NEED_TLS = b"-ERR TLS required: issue STLS first\r\n"
TLS_ACTIVE = b"-ERR TLS already active\r\n"
UNAVAILABLE = b"-ERR [SYS/TEMP] Service not available\r\n"

# A second message, as its maildir file (bare LFs): a line that is a dot
# alone, a fake +OK status line, a fake proxy answer, dotted lines.
DOTTED = (b"From: Bob <bob@example.test>\n"
          b"To: Alice <alice@example.test>\n"
          b"Subject: dots\n"
          b"\n"
          b".\n"
          b"+OK fake\n"
          b"+OK Begin TLS negotiation\n"
          b"..two dots\n"
          b".a dot\n"
          b"-ERR fake\n"
          b"last\n")


def pop3_conf(port, backend, pki, extra="", backend_extra="", glob=""):
    """A pop3 listener on port in front of backend ("host:port")."""
    return listener(port, backend, protocol="pop3", name="pop3", pki=pki, extra=extra,
                    backend_extra=backend_extra, glob=glob)


@contextlib.contextmanager
def running_dovecot(**kw):
    d = DovecotPOP3(**kw)
    try:
        yield d
    finally:
        d.stop()


def add_message(d, data, name="1704067300.M2P1.stp:2,"):
    path = d.home / "Maildir" / "cur" / name
    path.write_bytes(data)
    st = os.stat(d.home)
    os.chown(path, st.st_uid, st.st_gid)


@pytest.fixture
def dovecot():
    with running_dovecot() as d:
        add_message(d, DOTTED)
        yield d


@pytest.fixture
def dovecot_tls(pki):
    """Dovecot with ssl = yes: it offers STLS itself, with pki's backend certificate."""
    with running_dovecot(tls=(pki.backend_cert, pki.backend_key)) as d:
        add_message(d, DOTTED)
        yield d


def dovecot_lines(d, text):
    return [l for l in d.log().splitlines() if text in l]


class Lines:
    """POP3 replies from a socket: line() one line with its CRLF, reply() a
    whole reply (a +OK to a multi-line command with its body)."""

    def __init__(self, sock):
        self.sock, self.buf = sock, b""

    def _fill(self, deadline):
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"nothing more within the time, have {self.buf!r}")
        self.sock.settimeout(left)
        try:
            d = self.sock.recv(65536)
        except (ConnectionResetError, ssl.SSLZeroReturnError, ssl.SSLEOFError):
            d = b""
        self.buf += d
        return d

    def line(self, timeout=10):
        deadline = time.monotonic() + timeout
        while b"\r\n" not in self.buf:
            if not self._fill(deadline):
                rest, self.buf = self.buf, b""
                return rest
        i = self.buf.index(b"\r\n") + 2
        line, self.buf = self.buf[:i], self.buf[i:]
        return line

    def reply(self, multi=False, timeout=10):
        out = self.line(timeout)
        if multi and out.startswith(b"+OK"):
            while True:
                line = self.line(timeout)
                out += line
                if line in (b".\r\n", b""):
                    break
        return out

    def quiet(self, seconds=0.5):
        if self.buf:
            return False
        self.sock.settimeout(seconds)
        try:
            d = self.sock.recv(65536)
        except (socket.timeout, ssl.SSLWantReadError):
            return True
        self.buf += d
        return False


def stls(c, r, pki, send=True):
    """STLS (unless it was pipelined already), its answer, the handshake.
    The TLS socket takes c's descriptor: close it, not c."""
    if send:
        c.sendall(b"STLS\r\n")
    assert r.line() == STLS_OK
    assert r.buf == b""
    t = client_ctx(pki.ca).wrap_socket(c, server_hostname="localhost")
    return t, Lines(t)


def capabilities(reply):
    return [l for l in reply.split(b"\r\n")[1:] if l and l != b"."]


def unstuffed(message):
    """A message as poplib's retr() gives it: lines without their ends."""
    return message.replace(b"\r\n", b"\n").split(b"\n")[:-1]


# -- real clients -------------------------------------------------------------

def test_poplib_stls_then_login_and_retr_byte_for_byte(daemon, pki, dovecot):
    """poplib: the greeting is Dovecot's; the cleartext CAPA offers STLS
    and, under require_tls, neither USER nor SASL; stls(); inside TLS the
    CAPA is Dovecot's without STLS; USER/PASS, RETR of both messages as
    their lines, dots and the fake "+OK" line included."""
    port = free_port()
    d = daemon(pop3_conf(port, f"127.0.0.1:{dovecot.pop3_port}", pki))
    p = poplib.POP3("127.0.0.1", port, timeout=10)
    assert p.getwelcome() == GREETING.rstrip(b"\r\n")
    caps = p.capa()
    assert "STLS" in caps and "USER" not in caps and "SASL" not in caps, caps
    assert "PIPELINING" in caps and "TOP" in caps
    p.stls(client_ctx(pki.ca))
    caps = p.capa()
    assert "STLS" not in caps and "USER" in caps and caps["SASL"] == ["PLAIN", "LOGIN"], caps
    p.user(dovecot.user)
    assert p.pass_(dovecot.password).startswith(b"+OK")
    assert p.stat()[0] == 2
    resp, lines, octets = p.retr(1)
    assert lines == unstuffed(dovecot.message)
    assert octets == len(dovecot.message)
    resp, lines, octets = p.retr(2)
    assert lines == DOTTED.split(b"\n")[:-1]
    assert b"+OK fake" in lines and b"." in lines
    resp, lines, _ = p.top(2, 0)
    assert lines == DOTTED.split(b"\n")[:3] + [b""]
    assert p.quit().startswith(b"+OK")
    line = d.wait_session()[0]
    assert "upgraded=starttls" in line and "end=" in line
    assert "discarded=" not in line
    logins = [l for l in dovecot.wait_logins() if "pop3-login" in l]
    assert len(logins) == 1 and "user=<alice>" in logins[0]


def test_poplib_apop_uses_the_relayed_timestamp(daemon, pki):
    """APOP (RFC 1939 section 7) hashes the greeting's timestamp: it works
    through the proxy only because the greeting is relayed as it is."""
    with running_dovecot(extra="auth_mechanisms = plain login apop\n") as dv:
        port = free_port()
        daemon(pop3_conf(port, f"127.0.0.1:{dv.pop3_port}", pki))
        p = poplib.POP3("127.0.0.1", port, timeout=10)
        welcome = p.getwelcome()
        assert welcome.startswith(b"+OK Dovecot (Debian) ready. <") and welcome.endswith(b">")
        with pytest.raises(poplib.error_proto, match=r"\[AUTH\]"):
            p.apop(dv.user, dv.password)    # refused in cleartext
        p.stls(client_ctx(pki.ca))
        assert p.apop(dv.user, dv.password).startswith(b"+OK")
        assert p.stat()[0] == 1
        p.quit()
        assert any("method=APOP" in l for l in dv.wait_logins())


def test_curl_ssl_reqd_retrieves_the_message(daemon, pki, dovecot):
    """curl pop3:// --ssl-reqd: CAPA (STLS must be offered), STLS, CAPA
    inside TLS, AUTH PLAIN, RETR; the message byte for byte; then LIST."""
    port = free_port()
    daemon(pop3_conf(port, f"127.0.0.1:{dovecot.pop3_port}", pki))
    base = ["curl", "-q", "-sS", "--max-time", "20", "--ssl-reqd", "--cacert", str(pki.ca),
            "-u", f"{dovecot.user}:{dovecot.password}"]
    r = subprocess.run(base + [f"pop3://localhost:{port}/1"], capture_output=True, timeout=30)
    assert r.returncode == 0, r.stderr
    assert r.stdout == dovecot.message
    r = subprocess.run(base + [f"pop3://localhost:{port}/"], capture_output=True, timeout=30)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split(b"\r\n")[:2] == [b"1 %d" % len(dovecot.message), b"2 %d" % (len(DOTTED) + 11)]
    assert len([l for l in dovecot.wait_logins(2) if "method=PLAIN" in l]) == 2


def test_curl_without_tls_is_refused(daemon, pki, dovecot):
    """curl without --ssl-reqd does not upgrade, and the cleartext CAPA
    offers it neither USER nor SASL: it gives up (login denied) without
    sending a credential, and Dovecot sees no login attempt."""
    port = free_port()
    daemon(pop3_conf(port, f"127.0.0.1:{dovecot.pop3_port}", pki))
    r = subprocess.run(["curl", "-q", "-sS", "--max-time", "20", "-u",
                        f"{dovecot.user}:{dovecot.password}", f"pop3://127.0.0.1:{port}/1"],
                       capture_output=True, timeout=30)
    assert r.returncode != 0 and r.stdout == b""
    time.sleep(0.5)
    assert dovecot.logins() == []
    assert dovecot_lines(dovecot, "client in: AUTH") == []
    assert dovecot.password not in dovecot.log()


def test_openssl_s_client_starttls_pop3(daemon, pki, dovecot_tls):
    """openssl s_client -starttls pop3 -verify_return_error (it sends STLS
    at once, without CAPA): the chain and the name verify, and inside TLS
    the CAPA is Dovecot's without the STLS that Dovecot offers."""
    port = free_port()
    d = daemon(pop3_conf(port, f"127.0.0.1:{dovecot_tls.pop3_port}", pki))
    r = subprocess.run(["openssl", "s_client", "-starttls", "pop3", "-connect", f"127.0.0.1:{port}",
                        "-servername", "localhost", "-CAfile", str(pki.ca), "-verify_return_error",
                        "-verify_hostname", "localhost",
                        "-quiet", "-crlf"],
                       input=b"CAPA\nQUIT\n", capture_output=True, timeout=30)
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert b"+OK\r\nCAPA\r\nTOP\r\n" in out and b"USER\r\n" in out and b"SASL PLAIN LOGIN\r\n" in out
    assert b"STLS" not in out
    assert out.endswith(b"+OK Logging out\r\n")
    assert "upgraded=starttls" in d.wait_session()[0]


# -- what require_tls refuses -------------------------------------------------

def test_refused_commands_never_reach_dovecot(daemon, pki, dovecot):
    """USER, PASS, APOP and AUTH get -ERR [AUTH], other commands -ERR, from
    the proxy; Dovecot's log shows no authentication, no credential and
    no command of them (with auth_debug it logs every auth request and
    auth_debug_passwords the passwords)."""
    port = free_port()
    daemon(pop3_conf(port, f"127.0.0.1:{dovecot.pop3_port}", pki))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
        r = Lines(c)
        assert r.line() == GREETING
        for cmd in (b"USER alice", b"PASS " + dovecot.password.encode(),
                    b"APOP alice 0123456789abcdef0123456789abcdef", b"AUTH PLAIN",
                    b"AUTH PLAIN AGFsaWNlAGFsaWNlLXNlY3JldC1wdw==", b"AUTH"):
            c.sendall(cmd + b"\r\n")
            assert r.line() == AUTH_NEED_TLS, cmd
        for cmd in (b"NOOP", b"STAT", b"RETR 1", b"LIST", b"XTND XLIST", b""):
            c.sendall(cmd + b"\r\n")
            assert r.line() == NEED_TLS, cmd
        c.sendall(b"QUIT\r\n")
        assert r.line() == b"+OK Logging out\r\n"
    time.sleep(0.5)
    log = dovecot.log()
    assert dovecot.logins() == [] and "client in: AUTH" not in log
    assert dovecot.password not in log and "AGFsaWNl" not in log
    # (the fixture's own probe connections close without a word)
    gone = dovecot_lines(dovecot, "pop3-login: Info: Disconnected: Aborted login by logging out")
    assert len(gone) == 1 and "(no auth attempts" in gone[0], gone


def test_line_too_long_before_tls(daemon, pki, dovecot):
    """A command line over 4 KiB before TLS: -ERR Line too long, a close,
    and the line never reaches Dovecot."""
    port = free_port()
    d = daemon(pop3_conf(port, f"127.0.0.1:{dovecot.pop3_port}", pki))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
        r = Lines(c)
        assert r.line() == GREETING
        c.sendall(b"CAPA " + b"x" * 5000 + b"\r\n")
        assert r.line() == b"-ERR Line too long\r\n"
        assert r.line() == b""
    assert "end=protocol-error" in d.wait_session()[0]
    assert "a command line longer than 4 KiB before TLS" in d.session_lines()[0]


def test_line_too_long_inside_tls_before_login(daemon, pki, dovecot):
    """Inside TLS, until the client has logged in, lines are bounded too:
    16 KiB (Dovecot itself takes SASL responses up to 8 KiB)."""
    port = free_port()
    d = daemon(pop3_conf(port, f"127.0.0.1:{dovecot.pop3_port}", pki))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
        r = Lines(c)
        assert r.line() == GREETING
        t, rt = stls(c, r, pki)
        t.sendall(b"NOOP " + b"x" * 1000 + b"\r\n")    # Dovecot takes 1 KiB before login
        assert rt.line() == b"-ERR Unknown command.\r\n"
        t.sendall(b"CAPA " + b"x" * 17000 + b"\r\n")
        assert rt.line() == b"-ERR Line too long\r\n"
        assert rt.line() == b""
        t.close()
    assert "a command line longer than 16 KiB inside TLS before authentication" in \
        d.wait_session()[0]


def test_cleartext_login_without_require_tls_ends_the_parsing(daemon, pki, dovecot):
    """require_tls = false (a listener that offers TLS): a cleartext login
    goes through, and after it (the TRANSACTION state, RFC 2595 section 4)
    STLS is Dovecot's to answer; the session is relayed as it is."""
    port = free_port()
    d = daemon(pop3_conf(port, f"127.0.0.1:{dovecot.pop3_port}", pki, extra="require_tls = false;"))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
        r = Lines(c)
        assert r.line() == GREETING
        c.sendall(b"USER alice\r\nPASS " + dovecot.password.encode() + b"\r\nSTLS\r\nSTAT\r\nQUIT\r\n")
        assert r.line() == b"+OK\r\n"
        assert r.line() == b"+OK Logged in.\r\n"
        assert r.line() == b"-ERR Unknown command: STLS\r\n"
        assert r.line().startswith(b"+OK 2 ")
        assert r.line() == b"+OK Logging out.\r\n"
    assert "upgraded=none" in d.wait_session()[0]


# -- nothing crosses the upgrade ----------------------------------------------

def test_commands_injected_behind_stls_are_discarded(daemon, pki, dovecot):
    """An attacker appends USER and PASS to the client's STLS (CVE-2011-0411):
    the proxy discards them at the upgrade; inside TLS nothing answers
    them, and Dovecot never sees them."""
    port = free_port()
    d = daemon(pop3_conf(port, f"127.0.0.1:{dovecot.pop3_port}", pki))
    injected = b"USER alice\r\nPASS " + dovecot.password.encode() + b"\r\nRETR 1\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
        r = Lines(c)
        assert r.line() == GREETING
        c.sendall(b"STLS\r\n" + injected)
        assert r.line() == STLS_OK
        t = client_ctx(pki.ca).wrap_socket(c, server_hostname="localhost")
        rt = Lines(t)
        assert rt.quiet(1.0)
        t.sendall(b"CAPA\r\n")
        assert rt.reply(multi=True).startswith(b"+OK\r\nCAPA\r\n")
        t.sendall(b"STAT\r\n")      # not logged in: nothing of the injection ran
        assert rt.line() == b"-ERR Unknown command.\r\n"
        t.close()
    line = d.wait_session()[0]
    assert f"discarded={len(injected)}" in line
    assert dovecot.logins() == [] and "client in: AUTH" not in dovecot.log()


def test_a_second_stls_inside_tls(daemon, pki, dovecot):
    port = free_port()
    daemon(pop3_conf(port, f"127.0.0.1:{dovecot.pop3_port}", pki))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
        r = Lines(c)
        assert r.line() == GREETING
        t, rt = stls(c, r, pki)
        t.sendall(b"STLS\r\nSTLS\r\nCAPA\r\n")
        assert rt.line() == TLS_ACTIVE
        assert rt.line() == TLS_ACTIVE
        assert b"STLS" not in rt.reply(multi=True)
        t.close()


def test_pipelined_capa_list_retr_stls_against_dovecot(daemon, pki, dovecot):
    """Before login Dovecot answers LIST and RETR with -ERR (one line
    each); CAPA has a body.  STLS pipelined behind them is answered after
    all three replies, in order."""
    port = free_port()
    daemon(pop3_conf(port, f"127.0.0.1:{dovecot.pop3_port}", pki, extra="require_tls = false;"))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
        r = Lines(c)
        assert r.line() == GREETING
        c.sendall(b"CAPA\r\nLIST\r\nRETR 1\r\nSTLS\r\n")
        capa = r.reply(multi=True)
        assert capabilities(capa)[-1] == b"STLS" and b"USER" in capabilities(capa)
        assert r.line() == b"-ERR Unknown command.\r\n"
        assert r.line() == b"-ERR Unknown command.\r\n"
        t, rt = stls(c, r, pki, send=False)
        t.sendall(b"USER alice\r\nPASS " + dovecot.password.encode() + b"\r\nRETR 2\r\nQUIT\r\n")
        assert rt.line() == b"+OK\r\n"
        assert rt.line() == b"+OK Logged in.\r\n"
        body = rt.reply(multi=True)
        assert body.split(b"\r\n")[5:9] == [b"..", b"+OK fake", b"+OK Begin TLS negotiation",
                                            b"...two dots"]
        assert rt.line() == b"+OK Logging out.\r\n"
        t.close()


def test_stls_injected_into_an_auth_dialogue_is_a_sasl_response(daemon, pki, dovecot):
    """An attacker puts AUTH PLAIN in front of the client's STLS (without
    require_tls, where AUTH goes to the backend).  Dovecot's "+ " opens
    the dialogue: STLS is then the client's SASL response, relayed, and
    Dovecot refuses it as bad base64; nothing answers +OK Begin TLS.  The
    next STLS is the verb again."""
    port = free_port()
    daemon(pop3_conf(port, f"127.0.0.1:{dovecot.pop3_port}", pki, extra="require_tls = false;"))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
        r = Lines(c)
        assert r.line() == GREETING
        c.sendall(b"AUTH PLAIN\r\nSTLS\r\n")
        assert r.line() == b"+ \r\n"
        err = r.line(timeout=15)    # after Dovecot's auth failure delay
        assert err.startswith(b"-ERR ") and b"Begin TLS" not in err, err
        assert r.quiet(0.5)
        t, rt = stls(c, r, pki)
        t.sendall(b"CAPA\r\n")
        assert rt.reply(multi=True).startswith(b"+OK\r\nCAPA\r\n")
        t.close()
    assert dovecot_lines(dovecot, "client in: AUTH"), "the AUTH reached Dovecot"


def test_mechanism_lists_before_stls(daemon, pki, dovecot):
    """AUTH alone, and AUTH with two spaces before the mechanism, get
    Dovecot's mechanism list, a multi-line reply (Dovecot reads both as
    Outlook's SASL discovery); a STLS pipelined behind them is the
    proxy's, after both lists."""
    port = free_port()
    daemon(pop3_conf(port, f"127.0.0.1:{dovecot.pop3_port}", pki, extra="require_tls = false;"))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
        r = Lines(c)
        assert r.line() == GREETING
        c.sendall(b"AUTH\r\nAUTH  PLAIN\r\nSTLS\r\n")
        assert r.reply(multi=True) == b"+OK\r\nPLAIN\r\nLOGIN\r\n.\r\n"
        assert r.reply(multi=True) == b"+OK\r\nPLAIN\r\nLOGIN\r\n.\r\n"
        t, rt = stls(c, r, pki, send=False)
        t.close()


def test_a_cr_inside_a_verb_is_refused_before_tls(daemon, pki, dovecot):
    """Dovecot's pop3-login skips every CR in a command name: "ST<CR>LS" is
    STLS to it, and starts its TLS (shown here without the proxy).  The
    proxy, which would see another verb, refuses a command line with a CR
    inside before TLS, even without require_tls."""
    with socket.create_connection(("127.0.0.1", dovecot.pop3_port), timeout=10) as direct:
        r = Lines(direct)
        assert r.line() == GREETING
        direct.sendall(b"ST\rLS\r\n")
        assert r.line() == b"-ERR TLS support isn't enabled.\r\n"     # STLS it was
    port = free_port()
    daemon(pop3_conf(port, f"127.0.0.1:{dovecot.pop3_port}", pki, extra="require_tls = false;"))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
        r = Lines(c)
        assert r.line() == GREETING
        c.sendall(b"ST\rLS\r\nUS\rER alice\r\nCAPA\r\n")
        assert r.line() == b"-ERR Command line with a CR or NUL refused\r\n"
        assert r.line() == b"-ERR Command line with a CR or NUL refused\r\n"
        assert r.reply(multi=True).startswith(b"+OK\r\nCAPA\r\n")


class FakePOP3:
    """A POP3 server that answers by a table of verbs, for what Dovecot
    does not do.  answers maps an upper-case verb to the bytes to send
    (which may be a list of pieces sent with a pause between them)."""

    def __init__(self, answers, greeting=b"+OK fake POP3 ready\r\n", after=None, tls=None):
        self.answers, self.greeting, self.after = answers, greeting, after
        self.lines = []
        self.srv = Server(self._handle, tls=tls)
        self.port = self.srv.port

    def _handle(self, conn, srv):
        conn.sendall(self.greeting)
        buf = b""
        while True:
            while b"\n" not in buf:
                d = conn.recv(4096)
                if not d:
                    return
                buf += d
            line, buf = buf.split(b"\n", 1)
            line = line.rstrip(b"\r")
            self.lines.append(line)
            verb = line.split(b" ")[0].upper()
            ans = self.answers.get(verb, b"-ERR unknown\r\n")
            for piece in (ans if isinstance(ans, list) else [ans]):
                conn.sendall(piece)
                time.sleep(0.05)
            if self.after is not None:
                time.sleep(self.after[0])
                conn.sendall(self.after[1])
            if verb == b"QUIT":
                return

    def close(self):
        self.srv.close()


FAKE_CAPA = b"+OK\r\nTOP\r\nUSER\r\nPIPELINING\r\n.\r\n"
FAKE_RETR = (b"+OK 140 octets\r\nSubject: x\r\n\r\n..\r\n+OK Begin TLS negotiation\r\n"
             b"+OK fake\r\n.\n.\r\nbare LF\n.\r\n...\r\n-ERR x\r\n.\r\n")


def test_stls_waits_for_a_dot_stuffed_body_in_pieces(daemon, pki):
    """A backend that serves LIST and RETR before login (none real does;
    the proxy must still frame it): LIST, RETR, STLS pipelined.  The body,
    sent in pieces, holds a fake "+OK Begin TLS negotiation" line, a dot
    line after a bare LF (which a backend does not dot-stuff) and ".."
    lines; the proxy's +OK comes only after the
    real end, and the first reply inside TLS answers the first command
    inside TLS."""
    pieces = [FAKE_RETR[:20], FAKE_RETR[20:47], FAKE_RETR[47:80], FAKE_RETR[80:]]
    fake = FakePOP3({b"LIST": b"+OK\r\n1 140\r\n.\r\n", b"RETR": pieces, b"CAPA": FAKE_CAPA,
                     b"QUIT": b"+OK bye\r\n"})
    port = free_port()
    daemon(pop3_conf(port, f"127.0.0.1:{fake.port}", pki, extra="require_tls = false;"))
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
            r = Lines(c)
            assert r.line() == b"+OK fake POP3 ready\r\n"
            c.sendall(b"LIST\r\nRETR 1\r\nSTLS\r\n")
            assert r.reply(multi=True) == b"+OK\r\n1 140\r\n.\r\n"
            got = b""
            while not got.endswith(b"-ERR x\r\n.\r\n"):
                line = r.line()
                assert line, got
                got += line
            assert got == FAKE_RETR
            t, rt = stls(c, r, pki, send=False)
            t.sendall(b"CAPA\r\n")
            assert rt.reply(multi=True) == FAKE_CAPA
            t.sendall(b"QUIT\r\n")
            assert rt.line() == b"+OK bye\r\n"
            t.close()
        assert fake.lines == [b"LIST", b"RETR 1", b"CAPA", b"QUIT"]
    finally:
        fake.close()


def test_late_backend_lines_are_dropped_inside_tls(daemon, pki):
    """A backend that sends a stale line 0.3 s after each reply: the one
    that comes after the upgrade answers nothing asked inside TLS and is
    dropped, so that the client's first CAPA gets the CAPA reply."""
    fake = FakePOP3({b"CAPA": FAKE_CAPA, b"NOOP": b"+OK\r\n"},
                    after=(0.3, b"+OK stale reply from before TLS\r\n"))
    port = free_port()
    d = daemon(pop3_conf(port, f"127.0.0.1:{fake.port}", pki))
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
            r = Lines(c)
            r.line()
            c.sendall(b"CAPA\r\n")
            assert capabilities(r.reply(multi=True)) == [b"TOP", b"PIPELINING", b"STLS"]
            t, rt = stls(c, r, pki)
            time.sleep(0.6)
            t.sendall(b"CAPA\r\n")
            assert rt.reply(multi=True) == FAKE_CAPA
            t.close()
        d.wait_log("discarded %d bytes from the backend" % len(b"+OK stale reply from before TLS\r\n"))
    finally:
        fake.close()


def test_backend_without_capa_gets_the_proxys_list(daemon, pki):
    """An RFC 1939 server answers CAPA with -ERR: the proxy answers with a
    list of its own holding STLS, so that poplib's stls() (which wants STLS
    in CAPA) upgrades; inside TLS the -ERR is the server's."""
    fake = FakePOP3({b"USER": b"+OK\r\n", b"PASS": b"+OK in\r\n", b"STAT": b"+OK 0 0\r\n",
                     b"QUIT": b"+OK bye\r\n"})
    port = free_port()
    daemon(pop3_conf(port, f"127.0.0.1:{fake.port}", pki))
    try:
        p = poplib.POP3("127.0.0.1", port, timeout=10)
        assert p.capa() == {"STLS": []}
        p.stls(client_ctx(pki.ca))
        with pytest.raises(poplib.error_proto):
            p.capa()
        p.user("alice")
        p.pass_("x")
        assert p.stat() == (0, 0)
        p.quit()
        # stls() asks CAPA itself first
        assert fake.lines == [b"CAPA", b"CAPA", b"CAPA", b"USER alice", b"PASS x", b"STAT",
                              b"QUIT"]
    finally:
        fake.close()


# -- implicit TLS, backend TLS, unavailability ---------------------------------

def test_implicit_pop3s_hides_the_backends_stls(daemon, pki, dovecot_tls):
    """client_tls = "implicit" (POP3S, port 995) in front of a Dovecot that
    offers STLS: the client, in TLS already, never sees STLS offered, and
    STLS gets -ERR TLS already active."""
    port = free_port()
    daemon(pop3_conf(port, f"127.0.0.1:{dovecot_tls.pop3_port}", pki,
                     extra='client_tls = "implicit";'))
    p = poplib.POP3_SSL("127.0.0.1", port, timeout=10, context=client_ctx(pki.ca))
    assert p.getwelcome() == GREETING.rstrip(b"\r\n")
    caps = p.capa()
    assert "STLS" not in caps and "USER" in caps, caps
    with pytest.raises(poplib.error_proto, match="TLS already active"):
        p._shortcmd("STLS")
    p.user(dovecot_tls.user)
    p.pass_(dovecot_tls.password)
    assert p.retr(1)[1] == unstuffed(dovecot_tls.message)
    p.quit()


def test_backend_starttls_to_dovecot(daemon, pki, dovecot_tls):
    """backend.tls = "starttls": the proxy reads Dovecot's greeting, sends
    STLS and starts TLS itself before any client command; the client gets
    the greeting once, then its own session.  Dovecot's log shows the leg
    was TLS, and that it saw the login only inside it."""
    port = free_port()
    d = daemon(pop3_conf(port, f"127.0.0.1:{dovecot_tls.pop3_port}", pki,
                         backend_extra=backend_starttls(pki)))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
        r = Lines(c)
        assert r.line() == GREETING
        assert r.quiet(0.5)     # once only
        t, rt = stls(c, r, pki)
        t.sendall(b"CAPA\r\n")
        caps = capabilities(rt.reply(multi=True))
        assert b"STLS" not in caps and b"USER" in caps
        t.sendall(b"USER alice\r\nPASS " + dovecot_tls.password.encode() + b"\r\nRETR 1\r\nQUIT\r\n")
        assert rt.line() == b"+OK\r\n"
        assert rt.line() == b"+OK Logged in.\r\n"
        assert rt.reply(multi=True).endswith(b"Bob\r\n.\r\n")
        assert rt.line() == b"+OK Logging out.\r\n"
        t.close()
    assert "end=" in d.wait_session()[0]
    login, = dovecot_tls.wait_logins()
    assert "user=<alice>" in login and ", TLS," in login, login


def test_backend_starttls_refused(daemon, pki, dovecot):
    """A backend without TLS answers the proxy's STLS with -ERR (the proxy
    does not ask CAPA first: SPEC says STLS, +OK): the client gets
    -ERR [SYS/TEMP] and a close, end=backend-tls-failed."""
    port = free_port()
    d = daemon(pop3_conf(port, f"127.0.0.1:{dovecot.pop3_port}", pki,
                         backend_extra=backend_starttls(pki)))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
        r = Lines(c)
        assert r.line() == UNAVAILABLE
        assert r.line() == b""
    line = d.wait_session()[0]
    assert "end=backend-tls-failed" in line
    assert "STLS with the backend: STLS refused: -ERR" in line


def test_backend_starttls_bytes_after_ok(daemon, pki):
    """Bytes after the backend's +OK to STLS, before TLS, fail the leg closed."""
    fake = FakePOP3({b"STLS": b"+OK go ahead\r\n+OK injected\r\n"})
    port = free_port()
    d = daemon(pop3_conf(port, f"127.0.0.1:{fake.port}", pki, backend_extra=backend_starttls(pki)))
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
            r = Lines(c)
            assert r.line() == UNAVAILABLE
            assert r.line() == b""
        line = d.wait_session()[0]
        assert "end=backend-tls-failed" in line and "bytes after its +OK" in line
    finally:
        fake.close()


def test_backend_unreachable(daemon, pki):
    port, dead = free_port(), free_port()
    d = daemon(pop3_conf(port, f"127.0.0.1:{dead}", pki))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
        r = Lines(c)
        assert r.line() == UNAVAILABLE
        assert r.line() == b""
    assert "end=backend-unreachable" in d.wait_session()[0]


def test_busy(daemon, pki, dovecot):
    """Past max_connections: the busy reply, written at accept."""
    port = free_port()
    daemon(pop3_conf(port, f"127.0.0.1:{dovecot.pop3_port}", pki, extra="max_connections = 1;"))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as first:
        assert Lines(first).line() == GREETING
        with socket.create_connection(("127.0.0.1", port), timeout=10) as second:
            r = Lines(second)
            assert r.line() == b"-ERR [SYS/TEMP] Too many connections, try again later\r\n"
            assert r.line() == b""


# -- deployment (doc/deploy.md) -----------------------------------------------

@pytest.mark.parametrize("leg", ["starttls", "plaintext"])
def test_dovecot_behind_the_proxy_protocol(daemon, pki, leg):
    """doc/deploy.md's Dovecot: the proxy sends a PROXY v2 header
    (Dovecot's haproxy = yes), so that Dovecot logs the client's own
    address, here 127.0.0.3, not the proxy's.  The header goes out before
    the client's STLS, so it cannot say TLS: with disable_plaintext_auth
    Dovecot then refuses the password over a plaintext leg, and takes it
    over the proxy's own STLS (backend.tls = "starttls")."""
    with running_dovecot(tls=(pki.backend_cert, pki.backend_key), host="127.0.0.2",
                         haproxy=True, plaintext_auth=False) as dv:
        port = free_port()
        extra = 'proxy_protocol = "v2";'
        if leg == "starttls":
            extra += backend_starttls(pki)
        daemon(pop3_conf(port, f"127.0.0.2:{dv.pop3_port}", pki, backend_extra=extra))
        with socket.create_connection(("127.0.0.1", port), timeout=10,
                                      source_address=("127.0.0.3", 0)) as c:
            r = Lines(c)
            assert r.line() == GREETING
            t, rt = stls(c, r, pki)
            t.sendall(b"USER alice\r\nPASS " + dv.password.encode() + b"\r\n")
            user, pw = rt.line(), rt.line(timeout=15)
            t.close()
        if leg == "starttls":
            assert (user, pw) == (b"+OK\r\n", b"+OK Logged in.\r\n")
            login, = dv.wait_logins()
            assert "rip=127.0.0.3" in login and ", TLS," in login, login
        else:
            assert user.startswith(b"-ERR [AUTH] Plaintext authentication disallowed"), user
            assert dv.logins() == []
            assert any("rip=127.0.0.3" in l for l in dovecot_lines(dv, "pop3-login: Info"))


def test_a_client_cannot_speak_for_a_trusted_proxy(daemon, pki):
    """An operator may list the proxy in Dovecot's login_trusted_networks
    (Dovecot then takes the leg as secured).  Dovecot believes XCLIENT from
    a trusted peer, and says so in its greeting: relayed, a client's
    XCLIENT ADDR=... would set the address Dovecot logs and authenticates
    with (shown here without the proxy).  The proxy refuses XCLIENT and
    XOIP, inside TLS too."""
    with running_dovecot(trusted_networks="127.0.0.0/8") as dv:
        with socket.create_connection(("127.0.0.1", dv.pop3_port), timeout=10) as direct:
            r = Lines(direct)
            assert r.line() == b"+OK [XCLIENT] Dovecot (Debian) ready.\r\n"
            direct.sendall(b"XCLIENT ADDR=192.0.2.66\r\nQUIT\r\n")
            assert r.line() == b"+OK Updated\r\n"
        port = free_port()
        daemon(pop3_conf(port, f"127.0.0.1:{dv.pop3_port}", pki))
        with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
            r = Lines(c)
            assert r.line() == b"+OK [XCLIENT] Dovecot (Debian) ready.\r\n"
            c.sendall(b"XCLIENT ADDR=192.0.2.66\r\n")
            assert r.line() == b"-ERR XCLIENT is not allowed through the proxy\r\n"
            t, rt = stls(c, r, pki)
            t.sendall(b"XCLIENT ADDR=192.0.2.66\r\nXOIP 192.0.2.66\r\nUSER alice\r\nPASS " +
                      dv.password.encode() + b"\r\n")
            assert rt.line() == b"-ERR XCLIENT is not allowed through the proxy\r\n"
            assert rt.line() == b"-ERR XCLIENT is not allowed through the proxy\r\n"
            assert rt.line() == b"+OK\r\n"
            assert rt.line() == b"+OK Logged in.\r\n"
            t.close()
        login, = dv.wait_logins()
        assert "rip=127.0.0.1" in login and "192.0.2.66" not in login, login
