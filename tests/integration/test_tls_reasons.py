"""What the daemon says when TLS goes wrong: a handshake-failure reason that
tells a client that never spoke TLS from one that did and then wrote
cleartext (libldap after rejecting our certificate), and -t errors about
certificate, key and CA files that name the line of the very setting."""
import os
import socket
import ssl
import subprocess
import time

import pytest

from conftest import BIN
from helpers import MemTLS, Server, client_ctx, echo_handler, free_port, record_handler, server_ctx
from protocols import listener
from slapd_backend import Slapd

AFTER = "the client sent plaintext inside TLS after the handshake (it may have rejected our certificate)"
DURING = "the client sent plaintext during the TLS handshake (it may have rejected our certificate)"
BEFORE = "plaintext from the client where a TLS ClientHello was expected"
# an LDAP UnbindRequest, as libldap sends it in the clear after giving up on TLS
UNBIND = bytes.fromhex("30050201024200")


def reason(line):
    return line.split(' reason="', 1)[1].rstrip('"') if ' reason="' in line else None


@pytest.fixture
def slapd(tmp_path):
    s = Slapd(tmp_path / "slapd")
    yield s
    s.stop()


def ldap_conf(port, backend_port, cert, key):
    return listener(port, backend_port, protocol="ldap", name="directory", certificates=[(cert, key)])


@pytest.mark.parametrize("version", ["TLSv1.2", "TLSv1.3"])
@pytest.mark.parametrize("why", ["name", "ca"])
def test_ldapwhoami_that_rejects_our_certificate(daemon, pki, slapd, why, version):
    """Debian's ldapwhoami (libldap over GnuTLS) completes the handshake,
    then checks the certificate, rejects it (a name it does not carry, or a
    CA it does not trust) and sends its Unbind in cleartext: the reason
    says that, not that a ClientHello was expected."""
    port = free_port()
    # the alt certificate names alt.test, not localhost
    cert, key = (pki.alt_cert, pki.alt_key) if why == "name" else (pki.server_cert, pki.server_key)
    d = daemon(ldap_conf(port, slapd.port, cert, key))
    env = dict(os.environ, LDAPTLS_REQCERT="demand",
               LDAPTLS_CACERT=str(pki.ca if why == "name" else pki.other_ca))
    if version == "TLSv1.2":
        env["LDAPTLS_CIPHER_SUITE"] = "NORMAL:-VERS-TLS1.3"   # a GnuTLS priority string
    r = subprocess.run(["ldapwhoami", "-ZZ", "-x", "-H", f"ldap://localhost:{port}",
                        "-D", slapd.user_dn, "-w", slapd.user_pw],
                       env=env, capture_output=True, text=True, timeout=30)
    assert r.returncode != 0 and "ldap_start_tls" in r.stderr, r.stderr
    line = d.wait_session()[0]
    assert reason(line) == AFTER, line
    assert "TLS error with the client: error:0A00010B:SSL routines::wrong version number" in d.log()
    assert "BIND" not in slapd.verbs() and "UNBIND" not in slapd.verbs()


def tcp_conf(port, backend_port, pki, backend_extra=""):
    return listener(port, backend_port, pki=pki, backend_extra=backend_extra)


@pytest.fixture
def quiet():
    """A backend that reads and records, and never writes."""
    s = Server(record_handler)
    yield s
    s.close()


def ctx_for(version):
    ctx = client_ctx()
    ctx.minimum_version = ctx.maximum_version = getattr(ssl.TLSVersion, version.replace(".", "_"))
    return ctx


@pytest.mark.parametrize("version", ["TLSv1.2", "TLSv1.3"])
def test_plaintext_after_the_handshake(daemon, pki, quiet, version):
    port = free_port()
    d = daemon(tcp_conf(port, quiet.port, pki))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
        t = MemTLS(c, ctx_for(version), "localhost")
        t.handshake()
        c.sendall(UNBIND)
        with pytest.raises(ssl.SSLError, match="PROTOCOL_VERSION"):   # the proxy's alert
            t.recv()
    line = d.wait_session()[0]
    assert reason(line) == AFTER, line
    assert quiet.received == b""


@pytest.mark.parametrize("version", ["TLSv1.2", "TLSv1.3"])
def test_plaintext_in_the_middle_of_the_handshake(daemon, pki, quiet, version):
    """The client sent its ClientHello and got the server's flight, then
    wrote cleartext instead of its next handshake message."""
    port = free_port()
    d = daemon(tcp_conf(port, quiet.port, pki))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
        t = MemTLS(c, ctx_for(version), "localhost")
        with pytest.raises(ssl.SSLWantReadError):
            t.obj.do_handshake()
        t._flush()
        assert c.recv(65536)[:1] == b"\x16"    # the ServerHello, at least
        time.sleep(0.2)                         # the rest of the flight
        c.sendall(UNBIND)
        c.settimeout(10)
        while c.recv(65536):
            pass
    line = d.wait_session()[0]
    assert "end=handshake-failed" in line and reason(line) == DURING, line
    assert quiet.connections == 0


@pytest.mark.parametrize("data", [UNBIND, b"GET / HTTP/1.0\r\n\r\n", b"EHLO client.test\r\n"])
def test_plaintext_instead_of_a_client_hello_keeps_its_words(daemon, pki, quiet, data):
    port = free_port()
    d = daemon(tcp_conf(port, quiet.port, pki))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
        c.sendall(data)
        c.settimeout(10)
        while c.recv(65536):
            pass
    line = d.wait_session()[0]
    assert "end=handshake-failed" in line and reason(line) == BEFORE, line
    assert quiet.connections == 0


def test_plain_backend_behind_backend_tls_keeps_its_words(daemon, pki):
    backend = Server(echo_handler(b"* OK a plaintext greeting\r\n"))
    port = free_port()
    d = daemon(tcp_conf(port, backend.port, pki,
                        f'tls = "implicit"; ca = "{pki.ca}"; server_name = "backend.test";'))
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
            t = MemTLS(c, client_ctx(pki.ca), "localhost")
            t.handshake()
            t.send(b"hello\n")
            assert t.recv() == b""
        line = d.wait_session()[0]
        assert "plaintext from the backend where a TLS ServerHello was expected" in line, line
    finally:
        backend.close()


def test_backend_that_writes_plaintext_after_the_handshake(daemon, pki):
    """The same words for the other side: a TLS backend that completes its
    handshake, then writes cleartext."""
    def handler(conn, srv):
        obj = server_ctx(pki.backend_cert, pki.backend_key)
        inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
        s = obj.wrap_bio(inc, out, server_side=True)
        while True:
            try:
                s.do_handshake()
                break
            except ssl.SSLWantReadError:
                if out.pending:
                    conn.sendall(out.read())
                d = conn.recv(65536)
                if not d:
                    return
                inc.write(d)
        if out.pending:
            conn.sendall(out.read())
        time.sleep(0.2)
        conn.sendall(b"* OK plaintext after TLS\r\n")
        while conn.recv(65536):
            pass
    backend = Server(handler)
    port = free_port()
    d = daemon(tcp_conf(port, backend.port, pki,
                        f'tls = "implicit"; ca = "{pki.ca}"; server_name = "backend.test";'))
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
            t = MemTLS(c, client_ctx(pki.ca), "localhost")
            t.handshake()
            t.send(b"hello\n")
            assert t.recv() == b""
        line = d.wait_session()[0]
        assert "the backend sent plaintext inside TLS after the handshake" in line, line
        assert "ServerHello was expected" not in line
    finally:
        backend.close()


# -t: errors about files name the line of their own setting

def line_of(text, needle, nth=0):
    hits = [i + 1 for i, l in enumerate(text.splitlines()) if needle in l]
    return hits[nth]


def check(tmp_path, text):
    cfg = tmp_path / "proxy.conf"
    cfg.write_text(text)
    r = subprocess.run([BIN, "-t", "-c", str(cfg)], capture_output=True, text=True, timeout=30)
    assert r.returncode == 1 and r.stdout == "", r
    return cfg, r.stderr


def spread_conf(cert, key, passphrase=None, second=None, tls_extra="", backend_extra=""):
    """A configuration with one setting per line, so that the line of a
    setting and of its group differ."""
    pw = f'\n          passphrase_file = "{passphrase}";' if passphrase else ""
    more = ""
    if second:
        more = (',\n        {\n          cert = "%s";\n          key = "%s";\n        }' % second)
    return f"""listeners = (
  {{
    name = "front";
    listen = "127.0.0.1:{free_port()}";
    protocol = "tcp";
    tls = {{
      certificates = (
        {{
          cert = "{cert}";
          key = "{key}";{pw}
        }}{more}
      );{tls_extra}
    }};
    backend = {{
      address = "127.0.0.1:9";{backend_extra}
    }};
  }}
);
"""


def test_t_names_the_line_of_cert_key_and_passphrase_file(tmp_path, pki):
    missing = tmp_path / "missing.pem"
    wrong = tmp_path / "wrong.pass"
    wrong.write_text("not it\n")
    p = "listeners.[0].tls.certificates.[0]"
    cases = [
        # (cert, key, passphrase_file, the setting named, the words)
        (missing, pki.server_key, None, "cert", f"cannot read {missing}: No such file or directory"),
        (pki.server_key, pki.server_key, None, "cert", f"no certificate in {pki.server_key}"),
        (pki.server_cert, missing, None, "key", f"cannot read {missing}: No such file or directory"),
        (pki.server_cert, pki.alt_key, None, "key",
         f"the key in {pki.alt_key} does not match the certificate in {pki.server_cert}"),
        (pki.server_cert, pki.server_cert, None, "key", f"no private key in {pki.server_cert}"),
        (pki.server_cert, pki.enc_key, None, "key", f"{pki.enc_key} is encrypted"),
        (pki.server_cert, pki.enc_key, missing, "passphrase_file",
         f"cannot read {missing}: No such file or directory"),
        (pki.server_cert, pki.enc_key, wrong, "passphrase_file", f"wrong passphrase for {pki.enc_key}"),
    ]
    wrong_lines = []
    for cert, key, pw, setting, words in cases:
        text = spread_conf(cert, key, pw)
        cfg, err = check(tmp_path, text)
        want = f"{cfg}:{line_of(text, setting + ' = ')}: {p}.{setting}: {words}"
        if want not in err:
            wrong_lines.append((want, err))
    # the second certificate of the list: its own lines
    text = spread_conf(pki.server_cert, pki.server_key, second=(pki.alt_cert, missing))
    cfg, err = check(tmp_path, text)
    want = (f"{cfg}:{line_of(text, 'key = ', 1)}: listeners.[0].tls.certificates.[1].key: "
            f"cannot read {missing}")
    if want not in err:
        wrong_lines.append((want, err))
    assert wrong_lines == []


def test_t_names_the_line_of_client_ca_ticket_key_file_and_backend_files(tmp_path, pki):
    missing = tmp_path / "missing.pem"
    bad_keys = tmp_path / "bad.keys"
    bad_keys.write_text("not a key\n")
    good = (pki.server_cert, pki.server_key)
    cases = [
        (dict(tls_extra=f'\n      verify_client = "require";\n      client_ca = "{missing}";'),
         "client_ca", "listeners.[0].tls.client_ca",
         f"cannot load CA certificates from {missing}: No such file or directory"),
        (dict(tls_extra=f'\n      ticket_key_file = "{missing}";'),
         "ticket_key_file", "listeners.[0].tls.ticket_key_file",
         f"cannot read {missing}: No such file or directory"),
        (dict(tls_extra=f'\n      ticket_key_file = "{bad_keys}";'),
         "ticket_key_file", "listeners.[0].tls.ticket_key_file", f"{bad_keys} line 1: not a key"),
        (dict(backend_extra=f'\n      tls = "implicit";\n      ca = "{missing}";'),
         "ca = ", "listeners.[0].backend.ca",
         f"cannot load CA certificates from {missing}: No such file or directory"),
        (dict(backend_extra=f'\n      tls = "implicit";\n      cert = "{missing}";\n      key = "{pki.client_key}";'),
         "cert = ", "listeners.[0].backend.cert", f"cannot load a certificate from {missing}"),
        (dict(backend_extra=f'\n      tls = "implicit";\n      cert = "{pki.client_cert}";\n      key = "{missing}";'),
         "key = ", "listeners.[0].backend.key", f"cannot read {missing}"),
        (dict(backend_extra=f'\n      tls = "implicit";\n      cert = "{pki.client_cert}";\n      key = "{pki.alt_key}";'),
         "key = ", "listeners.[0].backend.key",
         f"the key in {pki.alt_key} does not match the certificate in {pki.client_cert}"),
    ]
    wrong_lines = []
    for kw, needle, path, words in cases:
        text = spread_conf(*good, **kw)
        cfg, err = check(tmp_path, text)
        # the last line holding the needle: the backend's, after the certificate's
        n = [i + 1 for i, l in enumerate(text.splitlines()) if needle in l][-1]
        want = f"{cfg}:{n}: {path}: {words}"
        if want not in err:
            wrong_lines.append((want, err))
    assert wrong_lines == []
