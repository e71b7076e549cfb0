"""One session per protocol through the daemon running under valgrind:
no memory errors, no leaks, and no descriptor left open at exit."""
import os
import re
import signal
import socket
import subprocess

import pytest

from helpers import client_ctx, echo_handler, free_port, recv_until, Server, tls_connect
from smtp_backend import SMTPBackend
from slapd_backend import Slapd
from protocols import (DovecotIMAP, WebBackend, group, imap_line, line_server, listeners,
                       read_messages, read_reply, search_request, starttls_request)

pytestmark = pytest.mark.skipif(os.environ.get("STP_SANITIZED") == "1",
                                reason="valgrind runs on the plain build")


def test_one_session_per_protocol_under_valgrind(daemon, pki, tmp_path):
    mta, ldap, web, line, echo = (SMTPBackend(), Slapd(tmp_path / "slapd"), WebBackend(),
                                  line_server(), Server(echo_handler()))
    imap = DovecotIMAP(tmp_path)
    p = {k: free_port() for k in ("smtp", "ldap", "http", "line", "tcp", "imap")}
    text = listeners(
        group(p["smtp"], mta.port, protocol="smtp", name="smtp", pki=pki),
        group(p["ldap"], ldap.port, protocol="ldap", name="ldap", pki=pki),
        group(p["http"], web.port, protocol="http", name="http", pki=pki,
              http={"connect_allow": ["localhost:443"]}),
        group(p["line"], line.port, protocol="line", name="line", pki=pki),
        group(p["tcp"], f"localhost:{echo.port}", name="tcp", pki=pki, backend_extra='tls = "none";'),
        group(p["imap"], imap.port, protocol="imap", name="imap", pki=pki),
        glob="shutdown_timeout = 5;")
    vlog = tmp_path / "valgrind.log"
    d = daemon(text, debug=False, prefix=[
        "valgrind", "--leak-check=full", "--show-leak-kinds=definite,indirect,possible",
        "--errors-for-leak-kinds=definite,indirect,possible", "--track-fds=yes",
        "--error-exitcode=99", f"--log-file={vlog}"])
    ctx = client_ctx(pki.ca)

    with socket.create_connection(("127.0.0.1", p["smtp"]), timeout=30) as c:
        read_reply(c, 30)
        c.sendall(b"STARTTLS\r\n")
        read_reply(c, 30)
        with ctx.wrap_socket(c, server_hostname="localhost") as t:
            t.sendall(b"EHLO v.test\r\n")
            read_reply(t, 30)
            t.sendall(b"QUIT\r\n")
            assert read_reply(t, 30).startswith(b"221")
    with socket.create_connection(("127.0.0.1", p["ldap"]), timeout=30) as c:
        c.sendall(starttls_request(1))
        read_messages(c, 1, 30)
        with ctx.wrap_socket(c, server_hostname="localhost") as t:
            t.sendall(search_request(2, ldap.base))
            assert [m[0] for m in read_messages(t, 2, 30)] == [2, 2]
    with socket.create_connection(("127.0.0.1", p["http"]), timeout=30) as c:
        c.sendall(b"CONNECT localhost:443 HTTP/1.1\r\nHost: localhost\r\n\r\n")
        recv_until(c, b"\r\n\r\n", 30)
        with ctx.wrap_socket(c, server_hostname="localhost") as t:
            t.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            assert recv_until(t, b"backend\n", 30).endswith(b"hello from the web backend\n")
    with socket.create_connection(("127.0.0.1", p["line"]), timeout=30) as c:
        c.sendall(b"STARTTLS\r\n")
        with ctx.wrap_socket(c, server_hostname="localhost") as t:
            t.sendall(b"PING\r\n")
            assert recv_until(t, b"\n", 30) == b"PONG\r\n"
    with tls_connect(p["tcp"], pki.ca, timeout=30) as t:
        assert recv_until(t, b"\n", 30) == b"hello from the backend\n"
    with socket.create_connection(("127.0.0.1", p["imap"]), timeout=30) as c:
        imap_line(c, 30)
        c.sendall(b"a LOGIN {5}\r\nb STARTTLS\r\n")   # refused at once, no "+"
        assert imap_line(c, 30).startswith(b"a NO [PRIVACYREQUIRED]")
        assert imap_line(c, 30) == b"b OK Begin TLS negotiation now\r\n"
        with ctx.wrap_socket(c, server_hostname="localhost") as t:
            pw = imap.dovecot.password.encode()
            t.sendall(b"c LOGIN alice {%d}\r\n" % len(pw))
            assert imap_line(t, 30) == b"+ OK\r\n"
            t.sendall(pw + b"\r\nd LOGOUT\r\n")
            assert b"d OK" in recv_until(t, b"d OK", 30)

    d.wait_session(count=6, timeout=60)
    rc = d.stop(timeout=60)
    text = vlog.read_text()
    assert rc == 0, text[-3000:]
    assert re.search(r"ERROR SUMMARY: 0 errors", text), text[-3000:]
    assert "definitely lost: 0 bytes" in text or "All heap blocks were freed" in text, text[-3000:]
    # at exit only stdin, stdout, stderr and valgrind's log are open
    m = re.search(r"FILE DESCRIPTORS: (\d+) open", text)
    assert m and int(m.group(1)) <= 4, text[-3000:]
    print("valgrind: " + "; ".join(l.split("== ", 1)[1] for l in text.splitlines()
                                    if "ERROR SUMMARY" in l or "FILE DESCRIPTORS" in l
                                    or "definitely lost" in l or "All heap" in l))
    for s in (mta, ldap, imap):
        s.stop()
    for s in (web, line, echo):
        s.close()
