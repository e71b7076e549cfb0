"""ldap: StartTLS in every encoding a directory would take as one is
answered by the proxy and never reaches the directory, before TLS and
inside it.

OpenLDAP's slapd (liblber) is lenient: lengths in any long form (up to 4
octets for the message, 8 inside it), a messageID with a leading zero
octet, and in the ExtendedRequest it takes the first element after the
protocolOp header as the requestName whatever its tag, even when the
ExtendedRequest is empty or shorter than that element.
test_slapd_takes_them_all_as_starttls shows it does, against a real slapd
with TLS; the other tests send each encoding through the proxy (to a
slapd without TLS, whose log must show no EXT).  The proxy answers a
valid one with success, and the rest with protocolError (or
unavailableCriticalExtension for a critical control); inside TLS every
one gets operationsError, or protocolError when it cannot be read."""
import socket

import pytest

from helpers import client_ctx, free_port
from slapd_backend import Slapd
from protocols import bind_request, read_messages, search_request
from test_ldap import ldap_conf

OID = b"1.3.6.1.4.1.1466.20037"


def blen(n, octets=None):
    """A BER length: minimal, or in the long form with that many octets."""
    if octets is None:
        if n < 0x80:
            return bytes([n])
        octets = (n.bit_length() + 7) // 8
    return bytes([0x80 | octets]) + n.to_bytes(octets, "big")


def tlv(tag, value, octets=None):
    return (bytes([tag]) if isinstance(tag, int) else tag) + blen(len(value), octets) + value


def msg(op, msgid=b"\x01", seq=None, idl=None, after=b""):
    return tlv(0x30, tlv(0x02, msgid, idl) + op + after, seq)


def ext(name, op=None):
    return tlv(0x77, name, op)


NAME = tlv(0x80, OID)
CONTROL = tlv(0x30, tlv(0x04, b"2.16.840.1.113730.3.4.2"))            # ManageDsaIT
CRITICAL = tlv(0x30, tlv(0x04, b"2.16.840.1.113730.3.4.2") + b"\x01\x01\xff")

SUCCESS, OPERATIONS_ERROR, PROTOCOL_ERROR, CRITICAL_EXT = 0, 1, 2, 12

# (id, bytes, slapd's answer with TLS (SUCCESS: it starts TLS; None: it
#  closes), the proxy's answer before TLS, the proxy's answer inside TLS)
CASES = [
    ("minimal", msg(ext(NAME)), SUCCESS, SUCCESS, OPERATIONS_ERROR),
    ("message length 0x81", msg(ext(NAME), seq=1), SUCCESS, SUCCESS, OPERATIONS_ERROR),
    ("message length 0x84", msg(ext(NAME), seq=4), SUCCESS, SUCCESS, OPERATIONS_ERROR),
    ("message length 0x85", msg(ext(NAME), seq=5), None, SUCCESS, OPERATIONS_ERROR),
    ("messageID length 0x84", msg(ext(NAME), idl=4), SUCCESS, SUCCESS, OPERATIONS_ERROR),
    ("messageID length 0x88", msg(ext(NAME), idl=8), SUCCESS, SUCCESS, OPERATIONS_ERROR),
    ("messageID 00 01", msg(ext(NAME), msgid=b"\x00\x01"), SUCCESS, SUCCESS, OPERATIONS_ERROR),
    ("op length 0x82", msg(ext(NAME, op=2)), SUCCESS, SUCCESS, OPERATIONS_ERROR),
    ("op length 0x88", msg(ext(NAME, op=8)), SUCCESS, SUCCESS, OPERATIONS_ERROR),
    ("OID length 0x81", msg(ext(tlv(0x80, OID, 1))), SUCCESS, SUCCESS, OPERATIONS_ERROR),
    ("OID length 0x88", msg(ext(tlv(0x80, OID, 8))), SUCCESS, SUCCESS, OPERATIONS_ERROR),
    ("OID length 0xfe", msg(ext(tlv(0x80, OID, 126))), PROTOCOL_ERROR, SUCCESS, OPERATIONS_ERROR),
    ("every length 0x84", msg(ext(tlv(0x80, OID, 4), op=4), seq=4, idl=4), SUCCESS, SUCCESS,
     OPERATIONS_ERROR),
    ("a control", msg(ext(NAME), after=tlv(0xa0, CONTROL)), SUCCESS, SUCCESS, OPERATIONS_ERROR),
    ("a critical control", msg(ext(NAME), after=tlv(0xa0, CRITICAL)), CRITICAL_EXT, CRITICAL_EXT,
     OPERATIONS_ERROR),
    ("name as OCTET STRING", msg(ext(tlv(0x04, OID))), SUCCESS, PROTOCOL_ERROR, OPERATIONS_ERROR),
    ("name tag [APPLICATION 0]", msg(ext(tlv(0x40, OID))), SUCCESS, PROTOCOL_ERROR,
     OPERATIONS_ERROR),
    ("name multi-octet tag 9f 00", msg(ext(tlv(b"\x9f\x00", OID))), SUCCESS, PROTOCOL_ERROR,
     OPERATIONS_ERROR),
    ("name multi-octet tag 9f 81 00", msg(ext(tlv(b"\x9f\x81\x00", OID))), SUCCESS,
     PROTOCOL_ERROR, OPERATIONS_ERROR),
    ("name constructed", msg(ext(tlv(0xa0, OID))), SUCCESS, PROTOCOL_ERROR, PROTOCOL_ERROR),
    ("empty op, name after it", msg(ext(b"") + NAME), SUCCESS, PROTOCOL_ERROR, PROTOCOL_ERROR),
    ("op shorter than the name", msg(b"\x77\x02" + NAME), SUCCESS, PROTOCOL_ERROR,
     PROTOCOL_ERROR),
    ("junk after the name", msg(ext(NAME + b"\x04\x00")), SUCCESS, PROTOCOL_ERROR,
     OPERATIONS_ERROR),
    ("a requestValue", msg(ext(NAME + b"\x81\x00")), PROTOCOL_ERROR, PROTOCOL_ERROR,
     OPERATIONS_ERROR),
    ("primitive op 0x57", msg(tlv(0x57, NAME)), PROTOCOL_ERROR, PROTOCOL_ERROR, OPERATIONS_ERROR),
    ("OID and a NUL", msg(ext(tlv(0x80, OID + b"\x00"))), PROTOCOL_ERROR, PROTOCOL_ERROR,
     OPERATIONS_ERROR),
    ("messageID 0", msg(ext(NAME), msgid=b"\x00"), SUCCESS, PROTOCOL_ERROR, OPERATIONS_ERROR),
]


def answer(sock):
    (mid, tag, code, _), = read_messages(sock, 1)
    assert tag == 0x78, hex(tag)
    return code


@pytest.fixture
def slapd(tmp_path):
    s = Slapd(tmp_path)
    yield s
    s.stop()


@pytest.fixture
def tls_slapd(tmp_path, pki):
    s = Slapd(tmp_path, tls=(pki.backend_cert, pki.backend_key, pki.ca))
    yield s
    s.stop()


def test_slapd_takes_them_all_as_starttls(tls_slapd):
    """The premise, shown on slapd with TLS: it answers success (and would
    start TLS) for every encoding marked so; a critical control gets
    unavailableCriticalExtension, which shows it read the request as a
    StartTLS too."""
    wrong = []
    for name, data, want, _, _ in CASES:
        with socket.create_connection(("127.0.0.1", tls_slapd.port), timeout=10) as c:
            c.sendall(data)
            try:
                code = answer(c)
            except (AssertionError, ValueError, IndexError, OSError):
                code = None
        if code != want:
            wrong.append((name, code, want))
    assert wrong == [], wrong


@pytest.mark.parametrize("require_tls", [True, False], ids=["require_tls", "optional_tls"])
def test_the_proxy_answers_them_before_tls(daemon, pki, slapd, require_tls):
    """Answered by the proxy; after a success, TLS and a search inside it;
    after a refusal, a plain StartTLS on the same connection still works."""
    port = free_port()
    daemon(ldap_conf(port, slapd.port, pki, extra=f"require_tls = {str(require_tls).lower()};"))
    wrong = []
    for name, data, _, before, _ in CASES:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
            c.sendall(data)
            code = answer(c)
            if code != before:
                wrong.append((name, code, before))
                continue
            if code != SUCCESS:
                c.sendall(msg(ext(NAME), msgid=b"\x02"))
                assert answer(c) == SUCCESS, name
            with client_ctx(pki.ca).wrap_socket(c, server_hostname="localhost") as t:
                t.sendall(search_request(3, slapd.base))
                assert [m[:3] for m in read_messages(t, 2)] == [(3, 0x64, None),
                                                                (3, 0x65, 0)], name
    assert wrong == [], wrong
    assert slapd.ext_oids() == []
    assert slapd.verbs().count("SRCH") == len(CASES)


@pytest.mark.parametrize("implicit", [False, True], ids=["after-starttls", "implicit"])
def test_the_proxy_refuses_them_inside_tls(daemon, pki, slapd, implicit):
    """Inside TLS every one is refused by the proxy, and a bind behind it
    is relayed as usual."""
    port = free_port()
    daemon(ldap_conf(port, slapd.port, pki,
                     extra='client_tls = "implicit";' if implicit else ""))
    wrong = []
    for name, data, _, _, inside in CASES:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
            if not implicit:
                c.sendall(msg(ext(NAME)))
                assert answer(c) == SUCCESS
            with client_ctx(pki.ca).wrap_socket(c, server_hostname="localhost") as t:
                t.sendall(data + bind_request(5, slapd.user_dn, slapd.user_pw))
                got = [m[:3] for m in read_messages(t, 2)]
                mid = 0 if name == "messageID 0" else 1
                if got != [(mid, 0x78, inside), (5, 0x61, 0)]:
                    wrong.append((name, got))
    assert wrong == [], wrong
    assert slapd.ext_oids() == []
    assert len(slapd.successful_binds()) == len(CASES)


def test_cleartext_starttls_over_64kib_is_a_protocol_error(daemon, pki, slapd):
    """Before TLS a message is limited to 64 KiB, StartTLS too: a Notice of
    Disconnection (protocolError) and a close."""
    port = free_port()
    d = daemon(ldap_conf(port, slapd.port, pki))
    pad = tlv(0xa0, tlv(0x30, tlv(0x04, b"1.2.3") + tlv(0x04, b"x" * 65536)))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
        c.sendall(msg(ext(NAME), after=pad))
        assert [m[:3] for m in read_messages(c, 1)] == [(0, 0x78, 2)]
    assert "end=protocol-error" in d.wait_session()[0]
    assert slapd.verbs() == []
