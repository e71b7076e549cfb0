"""Guarantee 2 for smtp, nothing crosses the upgrade: STARTTLS is honoured
only when no command and no dialogue is open, a SASL dialogue keeps the
client's lines as SASL responses (RFC 4954), BDAT is a chunk only when
the backend offered CHUNKING (RFC 3030), and a backend reply is one unit,
dropped or relayed whole, so that no fragment of a cleartext reply
reaches the client inside TLS.

The attacks are those of an attacker on the path before TLS, who can add
bytes in front of the client's STARTTLS: aiosmtpd (a real server, AUTH
LOGIN allowed in cleartext, no CHUNKING) answers them; misbehaving
backends are small fakes."""
import smtplib
import socket
import threading
import time

import pytest

from helpers import Server, client_ctx, free_port, server_ctx, wait_for
from smtp_backend import SMTPBackend
from test_smtp import Replies, smtp_conf

STARTTLS_OK = b"220 2.0.0 Ready to start TLS\r\n"
USERNAME = b"334 VXNlciBOYW1lAA==\r\n"  # "User Name\0", aiosmtpd's AUTH LOGIN
PASSWORD = b"334 UGFzc3dvcmQA\r\n"      # "Password\0"
BACKEND_ERROR = b"421 4.3.0 Service not available: backend protocol error\r\n"


@pytest.fixture
def mta(pki):
    b = SMTPBackend(starttls_ctx=server_ctx(pki.backend_cert, pki.backend_key))
    yield b
    b.stop()


def mx_conf(port, mta, pki):
    """A port-25 MX: TLS offered, not required (RFC 3207 section 4)."""
    return smtp_conf(port, f"127.0.0.1:{mta.port}", pki=pki, extra="require_tls = false;")


def greet(c):
    r = Replies(c)
    assert r.next().startswith(b"220 ")
    c.sendall(b"EHLO client.test\r\n")
    assert b"250-STARTTLS\r\n" in r.next()
    return r


def upgrade(c, r, pki):
    """STARTTLS, answered by the proxy, then TLS; the replies inside it."""
    c.sendall(b"STARTTLS\r\n")
    assert r.next() == STARTTLS_OK
    assert r.buf == b""
    t = client_ctx(pki.ca).wrap_socket(c, server_hostname="localhost")
    return t, Replies(t)


def ehlo_in_tls_is_a_command(t, rt, mta):
    """The first EHLO inside TLS gets an EHLO reply from the backend, which
    saw it as a command, not as a SASL response (the RSET that the proxy
    may send after the upgrade aside)."""
    n = len(mta.verbs())
    t.sendall(b"EHLO client.test\r\n")
    ehlo = rt.next()
    assert ehlo.startswith(b"250-backend.test\r\n"), ehlo
    assert b"STARTTLS" not in ehlo
    assert [v for v in mta.verbs()[n:] if v != "RSET"] == ["EHLO"]


@pytest.mark.parametrize("end", ["cancel", "complete"])
def test_starttls_injected_into_an_auth_dialogue_is_a_sasl_response(daemon, pki, mta, end):
    """An attacker sends AUTH LOGIN in front of the client's STARTTLS, in
    one flight.  The 334 leaves AUTH open: STARTTLS is then the client's
    SASL response (the username), relayed, and the backend asks for the
    password; nothing answers 220.  Only when the dialogue has ended (a
    "*" cancels it, RFC 4954; or a password completes it) is STARTTLS the
    upgrade verb again, and the first EHLO inside TLS is a command."""
    port = free_port()
    d = daemon(mx_conf(port, mta, pki))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
        r = greet(c)
        c.sendall(b"AUTH LOGIN\r\nSTARTTLS\r\n")
        assert r.next() == USERNAME
        assert r.next() == PASSWORD     # STARTTLS went to the backend as the username
        assert r.quiet(0.5)             # and no 220 behind it
        if end == "cancel":
            c.sendall(b"*\r\n")
            assert r.next() == b"501 5.7.0 Auth aborted\r\n"
        else:
            c.sendall(b"STARTTLS\r\n")  # the password, this time
            assert r.next() == b"235 2.7.0 Authentication successful\r\n"
        t, rt = upgrade(c, r, pki)
        ehlo_in_tls_is_a_command(t, rt, mta)
        t.sendall(b"QUIT\r\n")
        assert rt.next().startswith(b"221")
    assert mta.verbs() == ["EHLO", "AUTH", "EHLO", "QUIT"]
    assert "STARTTLS" not in mta.verbs()
    assert "upgraded=starttls" in d.wait_session()[0]


def test_starttls_waits_for_the_reply_to_auth(daemon, pki, mta):
    """AUTH LOGIN injected alone; the client's STARTTLS comes once the
    proxy has relayed AUTH and before the backend's 334: it is held, then
    relayed as the SASL response, never answered 220."""
    port = free_port()
    daemon(mx_conf(port, mta, pki))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
        r = greet(c)
        c.sendall(b"AUTH LOGIN\r\n")
        c.sendall(b"STARTTLS\r\n")
        assert r.next() == USERNAME
        assert r.next() == PASSWORD
        c.sendall(b"*\r\n")
        assert r.next() == b"501 5.7.0 Auth aborted\r\n"
        t, rt = upgrade(c, r, pki)
        ehlo_in_tls_is_a_command(t, rt, mta)


def test_sasl_dialogue_inside_tls_relays_starttls_as_a_response(daemon, pki, mta):
    """Inside TLS a SASL response that reads "STARTTLS" (valid base64) is
    the client's, for the backend: the proxy does not answer it 503."""
    port = free_port()
    daemon(smtp_conf(port, f"127.0.0.1:{mta.port}", pki=pki))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
        r = Replies(c)
        assert r.next().startswith(b"220 ")
        t, rt = upgrade(c, r, pki)
        t.sendall(b"EHLO client.test\r\n")
        assert rt.next().startswith(b"250-")
        t.sendall(b"AUTH LOGIN\r\n")
        assert rt.next() == USERNAME
        t.sendall(b"STARTTLS\r\n")
        assert rt.next() == PASSWORD
        t.sendall(b"STARTTLS\r\n")
        assert rt.next() == b"235 2.7.0 Authentication successful\r\n"
        t.sendall(b"STARTTLS\r\n")      # a command again
        assert rt.next() == b"503 5.5.1 TLS already active\r\n"
    assert mta.verbs() == ["EHLO", "AUTH"]


class Injector:
    """An attacker on the path between a client and the proxy: it relays
    both ways, and puts `inject` in front of the client's first
    STARTTLS."""

    def __init__(self, target, inject):
        self.target, self.inject = target, inject
        self.injected = False
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        try:
            client, _ = self.sock.accept()
        except OSError:
            return
        server = socket.create_connection(("127.0.0.1", self.target), timeout=30)
        threading.Thread(target=self._pump, args=(server, client, False), daemon=True).start()
        self._pump(client, server, True)

    def _pump(self, src, dst, from_client):
        try:
            while True:
                d = src.recv(65536)
                if not d:
                    break
                if from_client and not self.injected and d.startswith(b"STARTTLS\r\n"):
                    d = self.inject + d
                    self.injected = True
                dst.sendall(d)
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def close(self):
        self.sock.close()


@pytest.mark.parametrize("inject", [b"AUTH LOGIN\r\n", b"BDAT 12\r\nAUTH LOGIN\r\n"])
def test_smtplib_sees_the_injection_instead_of_a_broken_tls_session(daemon, pki, mta, inject):
    """Python's smtplib through an attacker who injects AUTH LOGIN (bare,
    or hidden in a BDAT "chunk" that aiosmtpd, offering no CHUNKING, runs
    as commands) in front of its STARTTLS: smtplib gets the backend's
    reply for an answer and gives up, and what follows is the backend
    asking for a password (STARTTLS was the username), never a 220 that
    would start TLS with a backend waiting in a SASL dialogue."""
    port = free_port()
    d = daemon(mx_conf(port, mta, pki))
    mitm = Injector(port, inject)
    codes = []
    try:
        c = smtplib.SMTP("127.0.0.1", mitm.port, timeout=10)
        c.ehlo("client.test")
        with pytest.raises(smtplib.SMTPResponseException) as e:
            c.starttls(context=client_ctx(pki.ca))
        codes.append(e.value.smtp_code)
        c.sock.settimeout(1.0)
        while True:
            try:
                codes.append(c.getreply()[0])
            except smtplib.SMTPServerDisconnected:
                break
        c.close()
    finally:
        mitm.close()
    assert mitm.injected
    assert 220 not in codes and codes[-1] == 334, codes
    assert codes == ([334, 334] if inject.startswith(b"AUTH") else [500, 334, 334]), codes
    assert "STARTTLS" not in mta.verbs()
    line = d.wait_session()[0]
    assert "upgraded=none" in line and "end=client-closed" in line, line


def test_bdat_without_chunking_is_a_command_before_tls(daemon, pki, mta):
    """aiosmtpd offers no CHUNKING, so it takes "BDAT 12" for an unknown
    command and what follows for commands: so must the proxy.  The AUTH
    LOGIN behind the BDAT is a command, its 334 opens a dialogue, and the
    client's STARTTLS is the username, not the upgrade."""
    port = free_port()
    daemon(mx_conf(port, mta, pki))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
        r = greet(c)
        c.sendall(b"BDAT 12\r\nAUTH LOGIN\r\nSTARTTLS\r\n")
        assert r.next().startswith(b"500 ")  # aiosmtpd: BDAT not recognized
        assert r.next() == USERNAME
        assert r.next() == PASSWORD
        assert r.quiet(0.5)
        c.sendall(b"*\r\n")
        assert r.next() == b"501 5.7.0 Auth aborted\r\n"
        t, rt = upgrade(c, r, pki)
        ehlo_in_tls_is_a_command(t, rt, mta)
    # BDAT was relayed before TLS: the backend forgets it through an RSET
    assert mta.verbs() == ["EHLO", "AUTH", "RSET", "EHLO"]


def test_bdat_without_chunking_cannot_carry_starttls_to_the_backend(daemon, pki, mta):
    """Inside TLS, a BDAT "chunk" holding STARTTLS: aiosmtpd would run it,
    and offers STARTTLS itself.  The proxy reads it as the command it is
    and answers 503; the backend never sees a STARTTLS."""
    port = free_port()
    daemon(smtp_conf(port, f"127.0.0.1:{mta.port}", pki=pki))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
        r = Replies(c)
        assert r.next().startswith(b"220 ")
        t, rt = upgrade(c, r, pki)
        t.sendall(b"EHLO client.test\r\n")
        assert b"CHUNKING" not in rt.next()
        t.sendall(b"BDAT 10\r\nSTARTTLS\r\nNOOP\r\n")
        assert rt.next().startswith(b"500 ")
        assert rt.next() == b"503 5.5.1 TLS already active\r\n"
        assert rt.next() == b"250 OK\r\n"
    assert mta.verbs() == ["EHLO", "NOOP"]


def chunking_backend():
    """A fake ESMTP server that offers CHUNKING in its first EHLO reply
    only: BDAT is a chunk while offered, an unknown command after the
    next EHLO.  It records its commands and chunks."""
    def handler(conn, srv):
        conn.sendall(b"220 chunky.test ESMTP\r\n")
        buf, ehlos = b"", 0
        while True:
            while b"\r\n" not in buf:
                d = conn.recv(65536)
                if not d:
                    return
                buf += d
            line, buf = buf.split(b"\r\n", 1)
            verb = line.split(b" ")[0].upper()
            srv.commands.append(verb.decode())
            if verb == b"EHLO":
                ehlos += 1
                conn.sendall(b"250-chunky.test\r\n250-CHUNKING\r\n250 PIPELINING\r\n"
                             if ehlos == 1 else b"250-chunky.test\r\n250 PIPELINING\r\n")
            elif verb == b"BDAT" and ehlos == 1:
                n = int(line.split(b" ")[1])
                while len(buf) < n:
                    buf += conn.recv(65536)
                srv.chunks.append(buf[:n])
                buf = buf[n:]
                conn.sendall(b"250 2.0.0 %d octets received\r\n" % n)
            elif verb in (b"NOOP", b"MAIL", b"RCPT", b"RSET"):
                conn.sendall(b"250 OK\r\n")
            else:
                conn.sendall(b"502 5.5.1 unknown command\r\n")
    srv = Server(handler)
    srv.commands, srv.chunks = [], []
    return srv


def test_bdat_is_a_chunk_only_while_the_last_ehlo_offers_chunking(daemon, pki):
    """With CHUNKING offered, a chunk that holds "STARTTLS" is content,
    relayed to the backend; after an EHLO whose reply does not offer it,
    the same bytes are a command again (a new EHLO reply replaces the
    last)."""
    be = chunking_backend()
    port = free_port()
    daemon(smtp_conf(port, f"127.0.0.1:{be.port}", pki=pki))
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
            r = Replies(c)
            assert r.next().startswith(b"220 ")
            t, rt = upgrade(c, r, pki)
            t.sendall(b"EHLO client.test\r\n")
            assert b"250-CHUNKING\r\n" in rt.next()
            t.sendall(b"MAIL FROM:<a@example.org>\r\nBDAT 10 LAST\r\nSTARTTLS\r\n")
            assert rt.next() == b"250 OK\r\n"
            assert rt.next() == b"250 2.0.0 10 octets received\r\n"
            t.sendall(b"EHLO client.test\r\n")
            assert b"CHUNKING" not in rt.next()
            t.sendall(b"BDAT 10\r\nSTARTTLS\r\n")
            assert rt.next() == b"502 5.5.1 unknown command\r\n"
            assert rt.next() == b"503 5.5.1 TLS already active\r\n"
        assert be.chunks == [b"STARTTLS\r\n"]
        assert be.commands == ["EHLO", "MAIL", "BDAT", "EHLO", "BDAT"]
    finally:
        be.close()


def mixed_code_backend(first):
    """A fake backend whose reply to the first EHLO is `first` (lines with
    different codes); later EHLOs get a clean reply."""
    def handler(conn, srv):
        conn.sendall(b"220 mixed.test ESMTP\r\n")
        buf, ehlos = b"", 0
        while True:
            while b"\r\n" not in buf:
                d = conn.recv(65536)
                if not d:
                    return
                buf += d
            line, buf = buf.split(b"\r\n", 1)
            verb = line.split(b" ")[0].upper()
            srv.record(verb + b"\n")
            if verb == b"EHLO":
                ehlos += 1
                conn.sendall(first if ehlos == 1 else b"250-mixed.test\r\n250 SIZE 1000\r\n")
            else:
                conn.sendall(b"250 OK\r\n")
    return Server(handler)


@pytest.mark.parametrize("first", [
    b"250-cleartext-a\r\n250-cleartext-b\r\n550 cleartext-c\r\n",
    b"250-cleartext-a\r\n250-cleartext-b\r\n451 cleartext-c\r\n",
    b"250-cleartext-a\r\n250-cleartext-b\r\n250-cleartext-c\r\n550 cleartext-d\r\n",
    b"550-cleartext-a\r\n250 cleartext-b\r\n",
], ids=["250-then-550", "250-then-451", "three-then-550", "550-then-250"])
def test_mixed_code_ehlo_reply_never_reaches_the_client_inside_tls(daemon, pki, first):
    """A multiline EHLO reply whose lines carry different codes (RFC 5321
    section 4.2.1 forbids it) is a backend protocol error: the client gets
    421 and the session ends, so no line of it can be held over and shown
    inside TLS.  The client here goes on and upgrades if it can, and
    whatever it gets inside TLS must hold no cleartext line."""
    be = mixed_code_backend(first)
    port = free_port()
    d = daemon(smtp_conf(port, f"127.0.0.1:{be.port}", pki=pki, extra="require_tls = false;"))
    in_tls = b""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
        r = Replies(c)
        assert r.next().startswith(b"220 ")
        c.sendall(b"EHLO client.test\r\n")
        answer = r.next()
        if answer != BACKEND_ERROR:
            c.sendall(b"STARTTLS\r\n")
            if r.next() == STARTTLS_OK:
                t = client_ctx(pki.ca).wrap_socket(c, server_hostname="localhost")
                t.sendall(b"EHLO client.test\r\n")
                rt = Replies(t)
                in_tls = rt.next()
                t.sendall(b"NOOP\r\n")
                in_tls += rt.next()
        else:
            assert r.next() == b""  # closed
    assert b"cleartext" not in in_tls, in_tls
    assert answer == BACKEND_ERROR
    line = d.wait_session()[0]
    assert "end=backend-error" in line and "different codes" in line, line
    be.close()


def test_mixed_code_reply_to_any_command_is_a_backend_error(daemon, pki):
    """The same rule for every reply, not only EHLO's: "250-" then "550"
    to NOOP.  Nothing of it is relayed; the client gets the 421 alone."""
    def handler(conn, srv):
        conn.sendall(b"220 mixed.test ESMTP\r\n")
        buf = b""
        while True:
            while b"\r\n" not in buf:
                d = conn.recv(4096)
                if not d:
                    return
                buf += d
            line, buf = buf.split(b"\r\n", 1)
            conn.sendall(b"250-half of it\r\n550 the other half\r\n"
                         if line.upper().startswith(b"NOOP") else b"250 OK\r\n")
    be = Server(handler)
    port = free_port()
    d = daemon(smtp_conf(port, f"127.0.0.1:{be.port}", pki=pki))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
        r = Replies(c)
        assert r.next().startswith(b"220 ")
        c.sendall(b"NOOP\r\n")
        assert r.next() == BACKEND_ERROR
        assert r.next() == b""
    assert "different codes" in d.wait_session()[0]
    be.close()


def test_unsolicited_reply_half_sent_holds_starttls(daemon, pki):
    """A backend that has sent the first line of a reply nobody asked for
    ("421-"), and the rest only later: STARTTLS waits until the reply is
    whole and relayed in cleartext, so that its last line cannot come
    inside TLS as the answer to the client's first command there."""
    gate = threading.Event()

    def handler(conn, srv):
        conn.sendall(b"220 slow.test ESMTP\r\n")
        buf = b""
        while True:
            while b"\r\n" not in buf:
                d = conn.recv(4096)
                if not d:
                    return
                buf += d
            line, buf = buf.split(b"\r\n", 1)
            if line.upper().startswith(b"NOOP") and not gate.is_set():
                conn.sendall(b"250 OK\r\n421-cleartext: the first half\r\n")
                gate.wait(10)
                time.sleep(0.5)
                conn.sendall(b"421 cleartext: the last half\r\n")
            else:
                conn.sendall(b"250 OK\r\n")
    be = Server(handler)
    port = free_port()
    daemon(smtp_conf(port, f"127.0.0.1:{be.port}", pki=pki))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
        r = Replies(c)
        assert r.next().startswith(b"220 ")
        c.sendall(b"NOOP\r\n")
        assert r.next() == b"250 OK\r\n"
        time.sleep(0.3)
        c.sendall(b"STARTTLS\r\n")
        gate.set()
        assert r.next() == b"421-cleartext: the first half\r\n421 cleartext: the last half\r\n"
        assert r.next() == STARTTLS_OK
        t = client_ctx(pki.ca).wrap_socket(c, server_hostname="localhost")
        t.sendall(b"NOOP\r\n")
        got = Replies(t).next()
        assert got == b"250 OK\r\n", got
    be.close()
