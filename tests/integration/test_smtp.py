"""protocol smtp: swaks, openssl s_client -starttls smtp and Python's
smtplib and ssl through the daemon to aiosmtpd (a real SMTP server)."""
import socket
import ssl
import subprocess
import time

import pytest

from helpers import (MemTLS, Server, backend_starttls, client_ctx, free_port, recv_all, recv_until,
                     s_client, server_ctx, wait_for)
from protocols import listener, read_reply
from smtp_backend import SMTPBackend


def smtp_conf(port, backend, extra="", backend_extra="", pki=None, glob=""):
    return listener(port, backend, protocol="smtp", name="submission", pki=pki, extra=extra,
                    backend_extra=backend_extra, glob=glob)


@pytest.fixture
def mta(pki):
    b = SMTPBackend(starttls_ctx=server_ctx(pki.backend_cert, pki.backend_key))
    yield b
    b.stop()


class Replies:
    """Whole SMTP replies from a socket, one at a time, in order: a reply
    ends with a line whose code is not followed by '-'.  next() returns
    b"" once the peer has closed and nothing is left."""

    def __init__(self, sock):
        self.sock, self.buf = sock, b""

    def _take(self):
        pos = 0
        while True:
            nl = self.buf.find(b"\r\n", pos)
            if nl < 0:
                return None
            line, pos = self.buf[pos:nl], nl + 2
            if line[3:4] != b"-":
                reply, self.buf = self.buf[:pos], self.buf[pos:]
                return reply

    def next(self, timeout=10):
        deadline = time.monotonic() + timeout
        while True:
            reply = self._take()
            if reply is not None:
                return reply
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no whole reply within {timeout}s, have {self.buf!r}")
            self.sock.settimeout(left)
            try:
                d = self.sock.recv(65536)
            except (ConnectionResetError, ssl.SSLZeroReturnError):
                d = b""
            if not d:
                rest, self.buf = self.buf, b""
                return rest
            self.buf += d

    def quiet(self, seconds=0.5):
        """True if nothing at all arrives for that long."""
        if self.buf:
            return False
        self.sock.settimeout(seconds)
        try:
            d = self.sock.recv(65536)
        except socket.timeout:
            return True
        self.buf += d
        return False


def starttls(sock, pki, name="localhost"):
    sock.sendall(b"STARTTLS\r\n")
    assert read_reply(sock).startswith(b"220 2.0.0")
    return client_ctx(pki.ca).wrap_socket(sock, server_hostname=name)


MESSAGE = (b"From: sender@example.org\r\nTo: rcpt@example.net\r\nSubject: through the proxy\r\n\r\n"
           b"line one\r\n.a line that starts with a dot\r\n\r\n\xc3\xa9 eight bit\r\nlast line\r\n")


def test_swaks_sends_a_message_byte_for_byte(daemon, pki, mta, tmp_path):
    port = free_port()
    d = daemon(smtp_conf(port, f"127.0.0.1:{mta.port}", pki=pki))
    msg = tmp_path / "message.eml"
    msg.write_bytes(MESSAGE[:-2])  # swaks ends the data with CRLF itself
    r = subprocess.run(["swaks", "--server", f"127.0.0.1:{port}", "--tls", "--tls-verify",
                        "--tls-ca-path", str(pki.ca), "--tls-sni", "localhost",
                        "--from", "sender@example.org", "--to", "rcpt@example.net",
                        "--data", str(msg)], capture_output=True, timeout=30)
    out = r.stdout.decode(errors="replace")
    assert r.returncode == 0, out + r.stderr.decode()
    assert "<-  220 2.0.0 Ready to start TLS" in out
    assert "<~  250 OK message accepted" in out
    assert len(mta.messages) == 1
    frm, rcpts, content = mta.messages[0]
    assert (frm, rcpts) == ("sender@example.org", ["rcpt@example.net"])
    assert content == MESSAGE
    assert "STARTTLS" not in mta.verbs()
    line = d.wait_session()[0]
    assert "upgraded=starttls" in line and "tls=TLSv1.3" in line and "discarded=" not in line


def test_openssl_s_client_starttls_verifies_the_chain(daemon, pki, mta):
    port = free_port()
    daemon(smtp_conf(port, f"127.0.0.1:{mta.port}", pki=pki))
    r = s_client(port, ["-starttls", "smtp", "-CAfile", str(pki.ca), "-verify_return_error",
                        "-servername", "localhost", "-ign_eof"], b"EHLO client.test\r\nQUIT\r\n")
    out, err = r.stdout.decode(), r.stderr.decode()
    assert r.returncode == 0, err
    assert "Verification: OK" in err
    assert "250-backend.test" in out and "221" in out
    ehlo = out.split("250-backend.test", 1)[1].split("221", 1)[0]
    assert "STARTTLS" not in ehlo  # removed inside TLS, though the backend offers it
    assert "AUTH LOGIN PLAIN" in ehlo


def test_cleartext_ehlo_advertises_starttls_hides_auth(daemon, pki, mta):
    port = free_port()
    daemon(smtp_conf(port, f"127.0.0.1:{mta.port}", pki=pki))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
        assert read_reply(c).startswith(b"220 ")
        c.sendall(b"EHLO client.test\r\n")
        ehlo = read_reply(c)
    lines = ehlo.split(b"\r\n")[:-1]
    assert lines[0] == b"250-backend.test"
    assert lines[-2:] == [b"250-STARTTLS", b"250 HELP"]
    assert sum(b"STARTTLS" in l for l in lines) == 1
    assert not any(b"AUTH" in l for l in lines)
    assert b"250-SIZE 33554432" in lines


def test_require_tls_refuses_mail_and_the_server_never_sees_it(daemon, pki, mta):
    port = free_port()
    d = daemon(smtp_conf(port, f"127.0.0.1:{mta.port}", pki=pki))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
        read_reply(c)
        c.sendall(b"EHLO client.test\r\n")
        read_reply(c)
        for cmd in (b"MAIL FROM:<a@example.org>", b"RCPT TO:<b@example.org>", b"DATA",
                    b"AUTH PLAIN AGFsaWNlAHNlY3JldA==", b"VRFY root"):
            c.sendall(cmd + b"\r\n")
            assert read_reply(c) == b"530 5.7.0 Must issue a STARTTLS command first\r\n"
        c.sendall(b"NOOP\r\n")
        assert read_reply(c).startswith(b"250")
        c.sendall(b"QUIT\r\n")
        assert read_reply(c).startswith(b"221")
    d.wait_session()
    assert mta.verbs() == ["EHLO", "NOOP", "QUIT"]


def test_command_injected_behind_starttls_never_reaches_the_server(daemon, pki, mta):
    """CVE-2011-0411: "STARTTLS\\r\\nRSET\\r\\n" in one write."""
    port = free_port()
    d = daemon(smtp_conf(port, f"127.0.0.1:{mta.port}", pki=pki))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
        read_reply(c)
        c.sendall(b"EHLO client.test\r\n")
        read_reply(c)
        c.sendall(b"STARTTLS\r\nRSET\r\n")
        c.settimeout(10)
        got = b""
        while b"\r\n" not in got:
            got += c.recv(4096)
        assert got == b"220 2.0.0 Ready to start TLS\r\n"
        t = client_ctx(pki.ca).wrap_socket(c, server_hostname="localhost")
        t.sendall(b"NOOP\r\n")
        # the first reply inside TLS is the one to NOOP: nothing answers RSET
        assert read_reply(t) == b"250 OK\r\n"
        t.sendall(b"QUIT\r\n")
        read_reply(t)
    line = d.wait_session()[0]
    assert "discarded=6" in line
    assert "RSET" not in mta.verbs()
    assert "command injection" in d.log()


def test_starttls_waits_for_earlier_pipelined_reply(daemon, pki, mta):
    port = free_port()
    daemon(smtp_conf(port, f"127.0.0.1:{mta.port}", pki=pki))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
        read_reply(c)
        c.sendall(b"EHLO client.test\r\nNOOP\r\nSTARTTLS\r\n")
        buf = b""
        c.settimeout(10)
        while b"220 2.0.0" not in buf:
            buf += c.recv(4096)
        lines = buf.split(b"\r\n")
        assert lines[-2] == b"220 2.0.0 Ready to start TLS"
        assert lines[-3] == b"250 OK"  # NOOP's reply came first
        assert lines[0] == b"250-backend.test"
        t = client_ctx(pki.ca).wrap_socket(c, server_hostname="localhost")
        t.sendall(b"QUIT\r\n")
        assert read_reply(t).startswith(b"221")


def test_pipelined_commands_keep_their_order_inside_tls(daemon, pki, mta):
    port = free_port()
    daemon(smtp_conf(port, f"127.0.0.1:{mta.port}", pki=pki))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
        read_reply(c)
        t = starttls(c, pki)
        t.sendall(b"EHLO client.test\r\n")
        read_reply(t)
        t.sendall(b"MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.org>\r\nRCPT TO:<c@example.org>\r\nDATA\r\n")
        buf = b""
        t.settimeout(10)
        while b"354" not in buf:
            buf += t.recv(4096)
        assert buf.split(b"\r\n")[:4] == [b"250 OK", b"250 OK", b"250 OK",
                                          b"354 End data with <CR><LF>.<CR><LF>"]
        t.sendall(b"Subject: pipelined\r\n\r\nSTARTTLS\r\nQUIT\r\n.\r\nNOOP\r\n")
        assert read_reply(t) == b"250 OK message accepted\r\n"
        assert read_reply(t) == b"250 OK\r\n"
        t.sendall(b"QUIT\r\n")
        read_reply(t)
    # DATA content is content: the "STARTTLS" and "QUIT" lines in it were not commands
    assert mta.messages[0][2] == b"Subject: pipelined\r\n\r\nSTARTTLS\r\nQUIT\r\n"


def test_second_starttls_inside_tls_is_refused(daemon, pki, mta):
    port = free_port()
    daemon(smtp_conf(port, f"127.0.0.1:{mta.port}", pki=pki))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
        read_reply(c)
        t = starttls(c, pki)
        t.sendall(b"EHLO client.test\r\n")
        assert b"STARTTLS" not in read_reply(t)
        t.sendall(b"STARTTLS\r\n")
        assert read_reply(t) == b"503 5.5.1 TLS already active\r\n"
        t.sendall(b"NOOP\r\n")
        assert read_reply(t) == b"250 OK\r\n"
    assert "STARTTLS" not in mta.verbs()


def test_large_message_with_smtplib_byte_for_byte(daemon, pki, mta):
    """A 16 MiB message from Python's smtplib over STARTTLS: the proxy reads
    it in large pieces under TLS, parses it as DATA content to its end, and
    aiosmtpd gets it byte for byte (lines with leading dots included)."""
    import hashlib
    import smtplib
    port = free_port()
    daemon(smtp_conf(port, f"127.0.0.1:{mta.port}", pki=pki), debug=False)
    line = b"." + b"0123456789abcdef" * 4 + b"\r\n"
    body = b"Subject: large\r\n\r\n" + line * ((16 << 20) // len(line))
    with smtplib.SMTP("127.0.0.1", port, timeout=60) as c:
        c.starttls(context=client_ctx(pki.ca))
        c.ehlo("client.test")
        assert c.sendmail("a@example.org", ["b@example.org"], body) == {}
    assert len(mta.messages) == 1
    content = mta.messages[0][2]
    assert (len(content), hashlib.sha256(content).hexdigest()) == \
        (len(body), hashlib.sha256(body).hexdigest())


def test_pipelined_commands_then_close_notify_are_all_answered(daemon, pki, mta):
    """Inside TLS a client pipelines EHLO, STARTTLS (answered 503 by the
    proxy, so held until the EHLO reply has gone out) and QUIT, with its
    close_notify in the same flight.  The TLS filter reports that EOF while
    the commands are held; it must reach the backend after QUIT, not
    before: every command is answered, QUIT by the backend."""
    port = free_port()
    daemon(smtp_conf(port, f"127.0.0.1:{mta.port}", pki=pki))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
        assert read_reply(c).startswith(b"220 ")
        c.sendall(b"STARTTLS\r\n")
        assert read_reply(c).startswith(b"220 2.0.0")
        t = MemTLS(c, client_ctx(pki.ca), "localhost")
        t.handshake()
        t.obj.write(b"EHLO client.test\r\nSTARTTLS\r\nQUIT\r\n")
        t.close_notify()  # flushes the commands and the close_notify together
        got = b""
        while True:
            chunk = t.recv()
            if not chunk:
                break
            got += chunk
    lines = got.split(b"\r\n")
    assert lines[0].startswith(b"250-"), got
    assert b"503 5.5.1 TLS already active" in lines, got
    assert lines[-2].startswith(b"221"), got
    assert mta.verbs() == ["EHLO", "QUIT"]


def test_cleartext_transaction_is_forgotten_after_the_upgrade(daemon, pki, mta):
    """Without require_tls a transaction may start in cleartext; after
    STARTTLS the backend gets an RSET whose reply the client never sees."""
    port = free_port()
    daemon(smtp_conf(port, f"127.0.0.1:{mta.port}", pki=pki, extra="require_tls = false;"))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
        read_reply(c)
        c.sendall(b"EHLO client.test\r\n")
        ehlo = read_reply(c)
        assert b"AUTH" in ehlo and ehlo.endswith(b"250-STARTTLS\r\n250 HELP\r\n")
        c.sendall(b"MAIL FROM:<cleartext@example.org>\r\n")
        assert read_reply(c) == b"250 OK\r\n"
        t = starttls(c, pki)
        t.sendall(b"EHLO client.test\r\n")
        read_reply(t)
        t.sendall(b"MAIL FROM:<tls@example.org>\r\n")
        assert read_reply(t) == b"250 OK\r\n"  # no "nested MAIL command"
    assert mta.verbs()[:5] == ["EHLO", "MAIL", "RSET", "EHLO", "MAIL"]


def test_line_too_long_before_tls(daemon, pki, mta):
    port = free_port()
    d = daemon(smtp_conf(port, f"127.0.0.1:{mta.port}", pki=pki))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
        read_reply(c)
        c.sendall(b"EHLO " + b"x" * 5000 + b"\r\n")
        assert recv_all(c) == b"500 5.5.2 Line too long\r\n"
    line = d.wait_session()[0]
    assert "end=protocol-error" in line and "longer than 4 KiB before TLS" in line
    assert mta.verbs() == []


def test_backend_down_gives_421(daemon, pki):
    port = free_port()
    d = daemon(smtp_conf(port, f"127.0.0.1:{free_port()}", pki=pki))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
        assert recv_all(c) == b"421 4.3.2 Service not available\r\n"
    assert "end=backend-unreachable" in d.wait_session()[0]


def test_tls_backend_implicit_smtps(daemon, pki, tmp_path):
    mta = SMTPBackend(implicit_ctx=server_ctx(pki.backend_cert, pki.backend_key))
    port = free_port()
    try:
        d = daemon(smtp_conf(port, f"127.0.0.1:{mta.port}", pki=pki,
                             backend_extra=f'tls = "implicit"; ca = "{pki.ca}"; server_name = "backend.test";'))
        msg = tmp_path / "m.eml"
        msg.write_bytes(MESSAGE[:-2])
        r = subprocess.run(["swaks", "--server", f"127.0.0.1:{port}", "--tls", "--from", "a@example.org",
                            "--to", "b@example.org", "--data", str(msg)], capture_output=True, timeout=30)
        assert r.returncode == 0, r.stdout.decode()
        assert mta.messages[0][2] == MESSAGE
        assert "upgraded=starttls" in d.wait_session()[0]
    finally:
        mta.stop()


def test_tls_backend_starttls(daemon, pki, tmp_path):
    """backend.tls = "starttls": the proxy reads aiosmtpd's greeting, sends
    EHLO and STARTTLS itself, verifies the backend's certificate, and only
    then lets the client's commands through, all of them inside TLS.  The
    client (swaks, STARTTLS on its own side) sees the backend's greeting."""
    mta = SMTPBackend(starttls_ctx=server_ctx(pki.backend_cert, pki.backend_key))
    port = free_port()
    try:
        d = daemon(smtp_conf(port, f"127.0.0.1:{mta.port}", pki=pki,
                             backend_extra=backend_starttls(pki)))
        msg = tmp_path / "m.eml"
        msg.write_bytes(MESSAGE[:-2])
        r = subprocess.run(["swaks", "--server", f"127.0.0.1:{port}", "--tls", "--from", "a@example.org",
                            "--to", "b@example.org", "--data", str(msg)], capture_output=True, timeout=30)
        out = r.stdout.decode(errors="replace")
        assert r.returncode == 0, out
        assert "<-  220 backend.test" in out, out  # aiosmtpd's own greeting
        assert mta.messages[0][2] == MESSAGE
        verbs = mta.verbs()
        # the proxy's EHLO and STARTTLS in cleartext, then everything in TLS
        assert verbs[:2] == ["EHLO", "STARTTLS"], verbs
        assert mta.recorder.in_tls[:2] == [False, False]
        assert all(mta.recorder.in_tls[2:]) and "MAIL" in verbs[2:], list(zip(verbs, mta.recorder.in_tls))
        assert "upgraded=starttls" in d.wait_session()[0]
    finally:
        mta.stop()


def test_tls_backend_starttls_behind_implicit_tls(daemon, pki, tmp_path):
    """Port 465 in front of a backend that wants STARTTLS: the backend's
    dialogue usually ends while the client is still in its own handshake;
    the greeting kept from it must still reach the client once its TLS is
    up (swaks --tlsc waits for it)."""
    mta = SMTPBackend(starttls_ctx=server_ctx(pki.backend_cert, pki.backend_key))
    port = free_port()
    try:
        d = daemon(smtp_conf(port, f"127.0.0.1:{mta.port}", pki=pki,
                             extra='client_tls = "implicit";',
                             backend_extra=backend_starttls(pki)))
        msg = tmp_path / "m.eml"
        msg.write_bytes(MESSAGE[:-2])
        r = subprocess.run(["swaks", "--server", f"127.0.0.1:{port}", "--tlsc", "--from", "a@example.org",
                            "--to", "b@example.org", "--data", str(msg), "--timeout", "10"],
                           capture_output=True, timeout=30)
        out = r.stdout.decode(errors="replace")
        assert r.returncode == 0, out
        assert "<~  220 backend.test" in out, out
        assert mta.messages[0][2] == MESSAGE
        assert "upgraded=implicit" in d.wait_session()[0]
    finally:
        mta.stop()


def test_tls_backend_starttls_refused_when_not_offered(daemon, pki):
    """A backend that does not offer STARTTLS (aiosmtpd without a TLS
    context): the client gets 421, and nothing of its reaches the backend."""
    mta = SMTPBackend()
    port = free_port()
    try:
        d = daemon(smtp_conf(port, f"127.0.0.1:{mta.port}", pki=pki,
                             backend_extra=backend_starttls(pki)))
        with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
            assert recv_all(c, timeout=10) == b"421 4.3.2 Service not available\r\n"
        line = d.wait_session()[0]
        assert "end=backend-tls-failed" in line, line
        assert 'reason="STARTTLS with the backend: the backend does not offer STARTTLS"' in line, line
        assert mta.verbs() == ["EHLO"]
    finally:
        mta.stop()


def test_tls_backend_starttls_certificate_rejected(daemon, pki):
    """STARTTLS with the backend works but its certificate does not match
    server_name: the session ends before any client command is relayed."""
    mta = SMTPBackend(starttls_ctx=server_ctx(pki.backend_cert, pki.backend_key))
    port = free_port()
    try:
        d = daemon(smtp_conf(port, f"127.0.0.1:{mta.port}", pki=pki,
                             backend_extra=backend_starttls(pki, "other.test")))
        with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
            assert recv_all(c, timeout=10) == b"421 4.3.2 Service not available\r\n"
        line = d.wait_session()[0]
        assert "end=backend-verify-failed" in line, line
        assert mta.verbs() == ["EHLO", "STARTTLS"]
    finally:
        mta.stop()


def test_tls_backend_starttls_refuses_bytes_injected_after_220(daemon, pki):
    """A backend (or someone on the path to it) that sends more after its
    220 to STARTTLS: those bytes would be read as the server's side of the
    handshake, or as replies inside TLS.  The proxy gives up on that
    backend, and the client gets 421."""
    seen = []

    def handler(conn, srv):
        conn.sendall(b"220 fake.test ESMTP\r\n")
        buf = b""
        for want in (b"EHLO", b"STARTTLS"):
            while b"\r\n" not in buf:
                buf += conn.recv(4096)
            line, buf = buf.split(b"\r\n", 1)
            seen.append(line)
            assert line.startswith(want)
            conn.sendall(b"250-fake.test\r\n250 STARTTLS\r\n" if want == b"EHLO" else
                         b"220 2.0.0 go ahead\r\n250 injected\r\n")
        conn.recv(4096)

    fake = Server(handler)
    port = free_port()
    d = daemon(smtp_conf(port, f"127.0.0.1:{fake.port}", pki=pki,
                         backend_extra=backend_starttls(pki)))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
        assert recv_all(c, timeout=10) == b"421 4.3.2 Service not available\r\n"
    line = d.wait_session()[0]
    assert "end=backend-tls-failed" in line, line
    assert "the backend sent bytes after its 220 reply, before TLS" in line, line
    assert [l.split()[0] for l in seen] == [b"EHLO", b"STARTTLS"]
    fake.close()


def test_tls_backend_starttls_refusal_text_cannot_forge_log_keys(daemon, pki):
    """A backend's refusal text is quoted in the session line; quotes in it
    must not end the value and forge keys of their own."""
    def handler(conn, srv):
        conn.sendall(b"220 fake.test ESMTP\r\n")
        buf = b""
        for reply in (b"250-fake.test\r\n250 STARTTLS\r\n", b'454 no TLS" end=client-closed x="\r\n'):
            while b"\r\n" not in buf:
                buf += conn.recv(4096)
            _, buf = buf.split(b"\r\n", 1)
            conn.sendall(reply)
        conn.recv(4096)

    fake = Server(handler)
    port = free_port()
    d = daemon(smtp_conf(port, f"127.0.0.1:{fake.port}", pki=pki,
                         backend_extra=backend_starttls(pki)))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
        assert recv_all(c, timeout=10) == b"421 4.3.2 Service not available\r\n"
    line = d.wait_session()[0]
    assert line.endswith("reason=\"STARTTLS with the backend: STARTTLS refused: "
                         "454 no TLS' end=client-closed x='\""), line
    assert line.count('"') == 2 and line.count(" end=") == 2, line  # ours, and the quoted one
    fake.close()


def test_cleartext_timeout(daemon, pki, mta):
    port = free_port()
    d = daemon(smtp_conf(port, f"127.0.0.1:{mta.port}", pki=pki, extra="timeouts = { cleartext = 1; };"))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
        read_reply(c)
        c.sendall(b"EHLO client.test\r\n")
        t0 = time.monotonic()
        read_reply(c)
        assert recv_all(c) == b""
        assert time.monotonic() - t0 < 4
    assert "end=timeout-cleartext" in d.wait_session()[0]


def test_garbage_instead_of_client_hello(daemon, pki, mta):
    """Cleartext after the verb's answer, where the ClientHello should
    be: dropped and counted like bytes behind the verb (SPEC), never
    relayed; the client that then sends no ClientHello meets the
    handshake timeout, and one that sends over 16 KiB of it meets the
    TLS layer, which says what it got."""
    port = free_port()
    d = daemon(smtp_conf(port, f"127.0.0.1:{mta.port}", pki=pki,
                         extra="timeouts = { handshake = 1; };"))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
        read_reply(c)
        c.sendall(b"STARTTLS\r\n")
        assert read_reply(c).startswith(b"220")
        c.sendall(b"MAIL FROM:<plaintext@example.org>\r\n")
        recv_all(c)
    line = d.wait_session()[0]
    assert "end=timeout-handshake" in line and "discarded=35" in line, line
    with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
        read_reply(c)
        c.sendall(b"STARTTLS\r\n")
        assert read_reply(c).startswith(b"220")
        c.sendall(b"MAIL FROM:<plaintext@example.org>\r\n" * 500)
        recv_all(c)
    line = d.wait_session(count=2)[1]
    assert "end=handshake-failed" in line and "plaintext from the client" in line, line
    assert "discarded=16384" in line, line
    assert "MAIL" not in mta.verbs()
    # the daemon goes on
    with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
        assert read_reply(c).startswith(b"220 ")


def test_client_hello_in_one_byte_writes(daemon, pki, mta):
    from helpers import MemTLS
    port = free_port()
    daemon(smtp_conf(port, f"127.0.0.1:{mta.port}", pki=pki))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
        c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        read_reply(c)
        c.sendall(b"STARTTLS\r\n")
        read_reply(c)
        t = MemTLS(c, client_ctx(pki.ca), "localhost")
        try:
            t.obj.do_handshake()
        except ssl.SSLWantReadError:
            pass
        hello = t.out.read()
        assert hello[0] == 0x16
        for i in range(len(hello)):
            c.sendall(hello[i:i + 1])
            time.sleep(0.001)
        t.handshake()
        t.send(b"NOOP\r\n")
        assert t.recv() == b"250 OK\r\n"


def test_busy_reply_past_max_connections(daemon, pki, mta):
    port = free_port()
    d = daemon(smtp_conf(port, f"127.0.0.1:{mta.port}", pki=pki, extra="max_connections = 1;"))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as a:
        assert read_reply(a).startswith(b"220 ")
        with socket.create_connection(("127.0.0.1", port), timeout=10) as b:
            assert recv_all(b) == b"421 4.3.2 Too many connections, try again later\r\n"
        a.sendall(b"NOOP\r\n")
        assert read_reply(a) == b"250 OK\r\n"
    d.wait_log("max_connections")


def test_client_disconnects_mid_handshake(daemon, pki, mta):
    port = free_port()
    d = daemon(smtp_conf(port, f"127.0.0.1:{mta.port}", pki=pki))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
        read_reply(c)
        c.sendall(b"STARTTLS\r\n")
        read_reply(c)
        c.sendall(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")  # a ClientHello cut short
    line = d.wait_session()[0]
    assert "end=handshake-failed" in line
    assert "the client closed the connection during the TLS handshake" in line
    with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
        assert read_reply(c).startswith(b"220 ")


def test_no_shared_cipher_is_logged(daemon, pki, mta):
    port = free_port()
    daemon_ = daemon(smtp_conf(port, f"127.0.0.1:{mta.port}", pki=pki))
    r = s_client(port, ["-starttls", "smtp", "-tls1_2", "-cipher", "AES128-SHA"])
    assert r.returncode != 0
    line = daemon_.wait_session()[0]
    assert "end=handshake-failed" in line and "no shared cipher with the client" in line
