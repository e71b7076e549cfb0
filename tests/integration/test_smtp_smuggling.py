"""SMTP smuggling (CVE-2023-51764 and its kin): before TLS, a command line
that ends in a bare LF or holds a bare CR, and message content with a bare
LF or CR anywhere (so every end-of-data look-alike, "<LF>.<LF>",
"<LF>.<CR><LF>", "<CR><LF>.<LF>", "<CR>.<CR>" ...), get "500 5.5.2" and a
close, and none of it reaches the backend, so that the proxy and any
backend agree on where a command and a message end.

Two backends: aiosmtpd, a real server, which ends commands at a bare LF
and the data only at CRLF.CRLF; and a lenient fake that also ends lines
at a bare CR or LF and the data at a dot alone between any of them, as
Postfix did before smtpd_forbid_bare_newline and Sendmail before its 'o'
option.  Behind the proxy neither gets a smuggled command or message."""
import re
import socket
import time

import pytest

from helpers import Server, client_ctx, free_port, server_ctx
from smtp_backend import SMTPBackend
from test_smtp import Replies, smtp_conf

BARE = b"500 5.5.2 Bare CR or LF not allowed\r\n"
SMUGGLED = (b"MAIL FROM:<ceo@example.org>\r\nRCPT TO:<victim@example.net>\r\nDATA\r\n"
            b"From: ceo@example.org\r\nSubject: smuggled\r\n\r\npay now\r\n.\r\n")


@pytest.fixture
def mta(pki):
    b = SMTPBackend(starttls_ctx=server_ctx(pki.backend_cert, pki.backend_key))
    yield b
    b.stop()


def lenient_backend():
    """A fake MTA that takes CRLF, a bare LF or a bare CR for a line
    ending, and a dot alone on such a line for the end of the data.  It
    records its commands (srv.commands) and messages (srv.messages)."""
    ending = re.compile(rb"\r\n|\r|\n")

    def handler(conn, srv):
        conn.sendall(b"220 lenient.test ESMTP\r\n")
        buf, data, message = b"", False, []
        conn.settimeout(0.3)
        while True:
            m = ending.search(buf)
            if m is None or (m.group() == b"\r" and m.end() == len(buf)):
                try:
                    d = conn.recv(65536)
                except socket.timeout:
                    if m is None:
                        continue
                    d = b""     # a CR at the end, and nothing after it: bare
                    if not buf:
                        continue
                else:
                    if not d:
                        return
                    buf += d
                    continue
            line, buf = buf[:m.start()], buf[m.end():]
            if data:
                if line == b".":
                    srv.messages.append(b"\n".join(message))
                    data, message = False, []
                    conn.sendall(b"250 2.0.0 queued\r\n")
                else:
                    message.append(line)
                continue
            srv.commands.append(line)
            verb = line.split(b" ")[0].upper()
            if verb == b"EHLO":
                conn.sendall(b"250-lenient.test\r\n250 PIPELINING\r\n")
            elif verb == b"DATA":
                data = True
                conn.sendall(b"354 go ahead\r\n")
            elif verb == b"QUIT":
                conn.sendall(b"221 bye\r\n")
                return
            else:
                conn.sendall(b"250 OK\r\n")
    srv = Server(handler)
    srv.commands, srv.messages = [], []
    return srv


@pytest.fixture
def lenient():
    be = lenient_backend()
    yield be
    be.close()


def refused(c, r, d):
    """500 5.5.2 and a close, with end=protocol-error."""
    assert r.next() == BARE
    assert r.next() == b""
    c.close()   # the proxy lingers, reading, until the client closes too
    line = d.wait_session()[0]
    assert "end=protocol-error" in line and "bare CR or LF" in line, line
    return line


@pytest.mark.parametrize("line", [
    b"EHLO client.test\n",
    b"NOOP\rMAIL FROM:<evil@example.org>\r\n",
    b"EHLO client.test\r\r\n",
    b"\n",
], ids=["bare-lf", "bare-cr-inside", "cr-cr-lf", "lone-lf"])
def test_bare_line_ending_in_a_command_is_refused(daemon, pki, lenient, line):
    """Under require_tls: "NOOP<CR>MAIL ..." is one line to the proxy, so
    one allowed NOOP, but two commands to a server that ends lines at a
    bare CR, the second past require_tls.  The proxy refuses the line and
    closes; the backend gets nothing of it."""
    port = free_port()
    d = daemon(smtp_conf(port, f"127.0.0.1:{lenient.port}", pki=pki))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
        r = Replies(c)
        assert r.next().startswith(b"220 ")
        c.sendall(line)
        refused(c, r, d)
    time.sleep(0.3)
    assert lenient.commands == []


def test_bare_lf_command_to_aiosmtpd(daemon, pki, mta):
    """aiosmtpd itself ends a command at a bare LF; the proxy refuses it
    before TLS, without relaying it."""
    port = free_port()
    d = daemon(smtp_conf(port, f"127.0.0.1:{mta.port}", pki=pki, extra="require_tls = false;"))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
        r = Replies(c)
        assert r.next().startswith(b"220 ")
        c.sendall(b"EHLO client.test\r\nNOOP\r\n")
        assert r.next().startswith(b"250-")
        assert r.next() == b"250 OK\r\n"
        c.sendall(b"RSET\n")
        refused(c, r, d)
    assert mta.verbs() == ["EHLO", "NOOP"]


def start_data(c, r):
    c.sendall(b"EHLO client.test\r\n")
    assert r.next().startswith(b"250-")
    c.sendall(b"MAIL FROM:<alice@example.org>\r\nRCPT TO:<bob@example.net>\r\nDATA\r\n")
    assert r.next() == b"250 OK\r\n"
    assert r.next() == b"250 OK\r\n"
    assert r.next().startswith(b"354 ")


ENDS = [b"\n.\n", b"\n.\r\n", b"\r\n.\n", b"\r.\r", b"\r\n.\r", b"\r.\r\n"]
END_IDS = ["lf.lf", "lf.crlf", "crlf.lf", "cr.cr", "crlf.cr", "cr.crlf"]


@pytest.mark.parametrize("split", [False, True], ids=["one-write", "split-at-the-dot"])
@pytest.mark.parametrize("end", ENDS, ids=END_IDS)
def test_smuggled_message_never_reaches_a_lenient_backend(daemon, pki, lenient, end, split):
    """require_tls = false (a port-25 MX): message content whose end is
    written with a bare LF or CR, then a second, forged message.  The
    lenient backend would end the first message there and take the forged
    one; behind the proxy the client gets 500 5.5.2 and a close, and the
    backend gets neither the forged commands nor a message."""
    port = free_port()
    d = daemon(smtp_conf(port, f"127.0.0.1:{lenient.port}", pki=pki, extra="require_tls = false;"))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
        c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        r = Replies(c)
        assert r.next().startswith(b"220 ")
        start_data(c, r)
        head = b"From: alice@example.org\r\nSubject: hello\r\n\r\nhello"
        if split:
            c.sendall(head + end[:2])
            time.sleep(0.2)
            c.sendall(end[2:] + SMUGGLED)
        else:
            c.sendall(head + end + SMUGGLED)
        refused(c, r, d)
    time.sleep(0.3)
    assert lenient.messages == []
    assert not any(b"ceo@" in l for l in lenient.commands), lenient.commands
    assert [l.split(b" ")[0] for l in lenient.commands] == [b"EHLO", b"MAIL", b"RCPT", b"DATA"]


@pytest.mark.parametrize("end", ENDS, ids=END_IDS)
def test_smuggled_message_never_reaches_aiosmtpd(daemon, pki, mta, end):
    """The same against aiosmtpd: it gets no message at all, neither the
    first nor the forged one."""
    port = free_port()
    d = daemon(smtp_conf(port, f"127.0.0.1:{mta.port}", pki=pki, extra="require_tls = false;"))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
        r = Replies(c)
        assert r.next().startswith(b"220 ")
        start_data(c, r)
        c.sendall(b"Subject: hello\r\n\r\nhello" + end + SMUGGLED)
        refused(c, r, d)
    time.sleep(0.3)
    assert mta.messages == []
    assert mta.verbs() == ["EHLO", "MAIL", "RCPT", "DATA"]


def test_bare_lf_inside_the_content_is_refused_before_tls(daemon, pki, mta):
    """Not only end-of-data look-alikes: before TLS any line of content
    that ends in a bare LF is refused, since a server that takes LF for a
    line ending reads different lines than one that does not."""
    port = free_port()
    d = daemon(smtp_conf(port, f"127.0.0.1:{mta.port}", pki=pki, extra="require_tls = false;"))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
        r = Replies(c)
        assert r.next().startswith(b"220 ")
        start_data(c, r)
        c.sendall(b"Subject: hello\r\n\r\na unix line\nand more\r\n.\r\n")
        refused(c, r, d)
    assert mta.messages == []


def test_crlf_message_with_dot_lines_goes_through_before_tls(daemon, pki, mta):
    """Strict is not broken: a message with only CRLF, dot-stuffed lines,
    8-bit text and an empty line is relayed as it is in cleartext (aiosmtpd
    removes the dot-stuffing)."""
    port = free_port()
    daemon(smtp_conf(port, f"127.0.0.1:{mta.port}", pki=pki, extra="require_tls = false;"))
    content = (b"Subject: hello\r\n\r\n..a dot line\r\n\r\n\xc3\xa9t\xc3\xa9\r\n"
               b". not the end\r\nlast\r\n")
    with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
        r = Replies(c)
        assert r.next().startswith(b"220 ")
        start_data(c, r)
        c.sendall(content + b".\r\n")
        assert r.next() == b"250 OK message accepted\r\n"
        c.sendall(b"QUIT\r\n")
        assert r.next().startswith(b"221")
    assert [m[2] for m in mta.messages] == [content.replace(b"\r\n.", b"\r\n")]


def test_inside_tls_bare_lf_is_content_for_the_proxy_and_for_aiosmtpd(daemon, pki, mta):
    """Inside TLS the proxy keeps bare line endings as content (only
    CRLF.CRLF ends the data), and aiosmtpd reads DATA the same way: one
    message, with "<LF>.<LF>" and the lines after it in its content."""
    port = free_port()
    daemon(smtp_conf(port, f"127.0.0.1:{mta.port}", pki=pki))
    content = b"Subject: hello\r\n\r\nhello\n.\nMAIL FROM:<ceo@example.org>\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
        r = Replies(c)
        assert r.next().startswith(b"220 ")
        c.sendall(b"STARTTLS\r\n")
        assert r.next().startswith(b"220 2.0.0")
        t = client_ctx(pki.ca).wrap_socket(c, server_hostname="localhost")
        rt = Replies(t)
        start_data(t, rt)
        t.sendall(content + b".\r\n")
        assert rt.next() == b"250 OK message accepted\r\n"
        t.sendall(b"QUIT\r\n")
        assert rt.next().startswith(b"221")
    assert [m[2] for m in mta.messages] == [content]
    assert mta.verbs().count("MAIL") == 1  # the one before the content
