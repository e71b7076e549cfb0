"""protocol ldap: ldapsearch -ZZ, ldapwhoami -ZZ and python3-ldap3 through
the daemon to a real slapd, and raw LDAP messages for what the proxy must
refuse."""
import os
import socket
import ssl
import subprocess
import time

import pytest

from helpers import (MemTLS, backend_starttls, client_ctx, free_port, recv_all)
from protocols import (STARTTLS_OID, bind_request, listener, message, read_messages,
                       search_request, starttls_request, tlv)
from slapd_backend import Slapd


def ldap_conf(port, backend_port, pki, extra="", backend_extra=""):
    return listener(port, backend_port, protocol="ldap", name="directory", pki=pki, extra=extra,
                    backend_extra=backend_extra)


@pytest.fixture
def slapd(tmp_path):
    s = Slapd(tmp_path)
    yield s
    s.stop()


def ldap_env(pki):
    env = dict(os.environ)
    env.update(LDAPTLS_CACERT=str(pki.ca), LDAPTLS_REQCERT="demand")
    return env


def test_ldapsearch_zz_through_the_proxy(daemon, pki, slapd):
    port = free_port()
    d = daemon(ldap_conf(port, slapd.port, pki))
    r = subprocess.run(["ldapsearch", "-ZZ", "-x", "-H", f"ldap://127.0.0.1:{port}",
                        "-b", slapd.base, "(uid=alice)", "mail"],
                       capture_output=True, text=True, env=ldap_env(pki), timeout=30)
    assert r.returncode == 0, r.stderr
    assert "mail: alice@example.org" in r.stdout
    assert slapd.ext_oids() == []  # the StartTLS never reached slapd
    line = d.wait_session()[0]
    assert "upgraded=starttls" in line and "tls=TLSv1.3" in line


def test_ldapwhoami_zz_with_simple_bind(daemon, pki, slapd):
    port = free_port()
    daemon(ldap_conf(port, slapd.port, pki))
    r = subprocess.run(["ldapwhoami", "-ZZ", "-x", "-H", f"ldap://127.0.0.1:{port}",
                        "-D", slapd.user_dn, "-w", slapd.user_pw],
                       capture_output=True, text=True, env=ldap_env(pki), timeout=30)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == f"dn:{slapd.user_dn}"
    assert slapd.user_dn in slapd.binds()


def test_cleartext_bind_gets_confidentiality_required_and_slapd_never_sees_it(daemon, pki, slapd):
    port = free_port()
    d = daemon(ldap_conf(port, slapd.port, pki))
    r = subprocess.run(["ldapwhoami", "-x", "-H", f"ldap://127.0.0.1:{port}",
                        "-D", slapd.user_dn, "-w", slapd.user_pw],
                       capture_output=True, text=True, env=ldap_env(pki), timeout=30)
    assert r.returncode == 13, (r.stdout, r.stderr)
    assert "Confidentiality required (13)" in r.stderr
    d.wait_session()
    assert slapd.user_dn not in slapd.binds()
    assert "BIND" not in slapd.verbs()


def test_python_ldap3_start_tls_then_search(daemon, pki, slapd):
    import ldap3
    port = free_port()
    daemon(ldap_conf(port, slapd.port, pki))
    tls = ldap3.Tls(ca_certs_file=str(pki.ca), validate=ssl.CERT_REQUIRED)
    server = ldap3.Server("localhost", port=port, tls=tls, get_info=ldap3.NONE)
    conn = ldap3.Connection(server, user=slapd.user_dn, password=slapd.user_pw)
    conn.open()
    assert conn.start_tls()
    assert conn.bind()
    assert conn.search(slapd.base, "(uid=alice)", attributes=["cn", "mail"])
    assert conn.entries[0].mail.value == "alice@example.org"
    conn.unbind()
    assert [dn for dn, _ in slapd.successful_binds()] == [slapd.user_dn]
    assert slapd.ext_oids() == []


def test_starttls_behind_an_outstanding_search_gets_operations_error(daemon, pki, slapd):
    port = free_port()
    daemon(ldap_conf(port, slapd.port, pki, extra="require_tls = false;"))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
        c.sendall(search_request(1, slapd.base) + starttls_request(2))
        msgs = read_messages(c, 3)
    by_id = {}
    for msgid, tag, code, _ in msgs:
        by_id.setdefault(msgid, []).append((tag, code))
    assert by_id[2] == [(0x78, 1)]          # ExtendedResponse, operationsError
    assert by_id[1][-1] == (0x65, 0)        # SearchResultDone, success
    assert "EXT" not in slapd.verbs()


def _starttls_raw(c, pki, msgid=1):
    c.sendall(starttls_request(msgid))
    (mid, tag, code, raw), = read_messages(c, 1)
    assert (mid, tag, code) == (msgid, 0x78, 0)
    assert STARTTLS_OID in raw  # the responseName
    return client_ctx(pki.ca).wrap_socket(c, server_hostname="localhost")


def test_second_starttls_inside_tls_gets_operations_error(daemon, pki, slapd):
    port = free_port()
    daemon(ldap_conf(port, slapd.port, pki))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
        with _starttls_raw(c, pki) as t:
            t.sendall(starttls_request(2))
            assert [m[:3] for m in read_messages(t, 1)] == [(2, 0x78, 1)]
            t.sendall(bind_request(3, slapd.user_dn, slapd.user_pw))
            assert [m[:3] for m in read_messages(t, 1)] == [(3, 0x61, 0)]


def test_bind_pipelined_behind_starttls_is_discarded(daemon, pki, slapd):
    port = free_port()
    d = daemon(ldap_conf(port, slapd.port, pki))
    bind = bind_request(2, slapd.user_dn, slapd.user_pw)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
        c.sendall(starttls_request(1) + bind)
        (mid, tag, code, _), = read_messages(c, 1)
        assert (mid, tag, code) == (1, 0x78, 0)
        with client_ctx(pki.ca).wrap_socket(c, server_hostname="localhost") as t:
            t.sendall(search_request(3, slapd.base))
            msgs = read_messages(t, 2)
            assert [m[0] for m in msgs] == [3, 3]  # nothing answers the injected bind
    assert f"discarded={len(bind)}" in d.wait_session()[0]
    assert "BIND" not in slapd.verbs()


def test_malformed_starttls_gets_protocol_error(daemon, pki, slapd):
    port = free_port()
    daemon(ldap_conf(port, slapd.port, pki))
    bad = message(1, tlv(0x77, tlv(0x80, STARTTLS_OID) + tlv(0x81, b"value")))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
        c.sendall(bad)
        assert [m[:3] for m in read_messages(c, 1)] == [(1, 0x78, 2)]
        _starttls_raw(c, pki, msgid=2).close()


@pytest.mark.parametrize("data,why", [
    (b"\x30\x80\x02\x01\x01\x42\x00\x00\x00", "indefinite length"),
    (b"\x30\xff\x00\x00\x00\x00\x05", "the reserved length octet 0xff"),
    (b"\x30\x88\x01\x00\x00\x00\x00\x00\x00\x00", "a length of 2^56"),
    (b"\x30\x84\x00\x10\x00\x00\x02\x01\x01\x60", "a message over 64 KiB before TLS"),
    (b"GET / HTTP/1.1\r\n\r\n", "not BER at all"),
])
def test_bad_ber_gets_a_notice_of_disconnection(daemon, pki, slapd, data, why):
    port = free_port()
    d = daemon(ldap_conf(port, slapd.port, pki))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
        c.sendall(data)
        msgs = read_messages(c, 1)
        assert [m[:3] for m in msgs] == [(0, 0x78, 2)], why  # protocolError, messageID 0
        assert b"1.3.6.1.4.1.1466.20036" in msgs[0][3]
        assert recv_all(c) == b""
    assert "end=protocol-error" in d.wait_session()[0]
    assert slapd.verbs() == []


def test_truncated_message_then_close(daemon, pki, slapd):
    port = free_port()
    d = daemon(ldap_conf(port, slapd.port, pki))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
        c.sendall(bind_request(1, slapd.user_dn, slapd.user_pw)[:12])
    assert "end=client-closed" in d.wait_session()[0]
    assert slapd.verbs() == []


def test_backend_down_gives_notice_of_disconnection_unavailable(daemon, pki):
    port = free_port()
    d = daemon(ldap_conf(port, free_port(), pki))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
        msgs = read_messages(c, 1)
        assert [m[:3] for m in msgs] == [(0, 0x78, 52)]
    assert "end=backend-unreachable" in d.wait_session()[0]


def test_busy_gets_notice_of_disconnection_busy(daemon, pki, slapd):
    port = free_port()
    daemon(ldap_conf(port, slapd.port, pki, extra="max_connections = 1;"))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as a:
        time.sleep(0.2)
        with socket.create_connection(("127.0.0.1", port), timeout=10) as b:
            assert [m[:3] for m in read_messages(b, 1)] == [(0, 0x78, 51)]


def test_backend_starttls_to_slapd(daemon, pki, tmp_path):
    """backend.tls = "starttls": the proxy sends its own StartTLS to slapd,
    verifies slapd's certificate, and the client's bind (ldapwhoami -ZZ on
    its side) reaches slapd only inside that TLS (slapd logs ssf > 0)."""
    s = Slapd(tmp_path, tls=(pki.backend_cert, pki.backend_key, pki.ca))
    try:
        port = free_port()
        d = daemon(ldap_conf(port, s.port, pki, backend_extra=backend_starttls(pki)))
        r = subprocess.run(["ldapwhoami", "-ZZ", "-x", "-H", f"ldap://127.0.0.1:{port}",
                            "-D", s.user_dn, "-w", s.user_pw],
                           capture_output=True, text=True, env=ldap_env(pki), timeout=30)
        assert r.returncode == 0, r.stderr
        assert r.stdout.strip() == f"dn:{s.user_dn}"
        binds = s.successful_binds()
        assert len(binds) == 1 and binds[0][0] == s.user_dn and binds[0][1] > 0, binds
        # one StartTLS (the proxy's own, first; the client's never arrives), then WhoAmI
        assert s.ext_oids() == [STARTTLS_OID.decode(), "1.3.6.1.4.1.4203.1.11.3"], s.ext_oids()
        assert "upgraded=starttls" in d.wait_session()[0]
    finally:
        s.stop()


def test_backend_starttls_refused_by_slapd_without_tls(daemon, pki, slapd):
    """slapd without TLS refuses the proxy's StartTLS: the client gets a
    Notice of Disconnection, and its bind never reaches slapd."""
    port = free_port()
    d = daemon(ldap_conf(port, slapd.port, pki, backend_extra=backend_starttls(pki)))
    r = subprocess.run(["ldapwhoami", "-ZZ", "-x", "-H", f"ldap://127.0.0.1:{port}",
                        "-D", slapd.user_dn, "-w", slapd.user_pw],
                       capture_output=True, text=True, env=ldap_env(pki), timeout=30)
    assert r.returncode != 0
    line = d.wait_session()[0]
    assert "end=backend-tls-failed" in line, line
    assert "StartTLS with the backend: StartTLS refused: resultCode" in line, line
    assert "BIND" not in slapd.verbs()
