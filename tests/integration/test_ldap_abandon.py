"""ldap, Guarantee 2 with require_tls = false: an abandoned request still
counts as outstanding until its final response has been relayed.  RFC 4511
section 4.11 lets a directory answer a request it was asked to abandon;
if the proxy forgot the request at the Abandon, StartTLS went through at
once and the late answer to a search sent in cleartext (by a man in the
middle, say) arrived inside TLS as the answer to the client's own search
with the same messageID.

A misbehaving fake directory answers abandoned searches when told to;
slapd (which never answers an abandoned request) covers the normal path."""
import socket
import threading
import time

import pytest

from helpers import Server, client_ctx, free_port
from slapd_backend import Slapd
from protocols import read_messages, tlv
from test_ldap import ldap_conf

NOT_TLS = "require_tls = false;"

@pytest.fixture
def slapd(tmp_path):
    s = Slapd(tmp_path)
    yield s
    s.stop()


def ber_int(n):
    return n.to_bytes(max(1, (n.bit_length() + 8) // 8), "big")


def msg(msgid, op):
    return tlv(0x30, tlv(0x02, ber_int(msgid)) + op)


def search(msgid, base):
    return msg(msgid, tlv(0x63, tlv(0x04, base.encode()) + tlv(0x0A, b"\x00") +
                      tlv(0x0A, b"\x00") + tlv(0x02, b"\x00") + tlv(0x02, b"\x00") +
                      tlv(0x01, b"\x00") + tlv(0x87, b"objectClass") + tlv(0x30, b"")))


def abandon(msgid, target):
    return msg(msgid, tlv(0x50, ber_int(target)))


def starttls(msgid):
    return msg(msgid, tlv(0x77, tlv(0x80, b"1.3.6.1.4.1.1466.20037")))


def entry(msgid, dn):
    return msg(msgid, tlv(0x64, tlv(0x04, dn.encode()) + tlv(0x30, b"")))


def done(msgid):
    return msg(msgid, tlv(0x65, b"\x0a\x01\x00\x04\x00\x04\x00"))


def split(buf):
    """The whole messages at the start of buf, and the rest."""
    out = []
    while len(buf) >= 2:
        n, hdr = buf[1], 2
        if n & 0x80:
            k = n & 0x7F
            if len(buf) < 2 + k:
                break
            n, hdr = int.from_bytes(buf[2:2 + k], "big"), 2 + k
        if len(buf) < hdr + n:
            break
        out.append(buf[:hdr + n])
        buf = buf[hdr + n:]
    return out, buf


def parse_request(raw):
    """(msgid, op tag, search base or None) of one request."""
    body = raw[2:] if raw[1] < 0x80 else raw[2 + (raw[1] & 0x7F):]
    idlen = body[1]
    msgid = int.from_bytes(body[2:2 + idlen], "big")
    op = body[2 + idlen:]
    base = None
    if op[0] == 0x63:
        ophdr = 2 if op[1] < 0x80 else 2 + (op[1] & 0x7F)
        blen = op[ophdr + 1]
        base = op[ophdr + 2:ophdr + 2 + blen].decode()
    return msgid, op[0], base


class Directory:
    """A fake directory: a search of dc=late is answered (an entry named
    cn=late-answer, then done) only when answer_late() is called, even if
    abandoned; any other search gets an entry named cn=<its base>."""

    def __init__(self):
        self.late = []
        self.requests = []
        self.go = threading.Event()
        self.srv = Server(self._handle)
        self.port = self.srv.port

    def answer_late(self):
        self.go.set()

    def _handle(self, conn, srv):
        conn.settimeout(0.05)
        buf = b""
        while True:
            if self.go.is_set() and self.late:
                for mid in self.late:
                    conn.sendall(entry(mid, "cn=late-answer") + done(mid))
                self.late = []
            try:
                d = conn.recv(65536)
            except socket.timeout:
                continue
            if not d:
                return
            msgs, buf = split(buf + d)
            for raw in msgs:
                mid, tag, base = parse_request(raw)
                self.requests.append((mid, tag, base))
                if tag == 0x63 and base == "dc=late":
                    self.late.append(mid)
                elif tag == 0x63:
                    conn.sendall(entry(mid, "cn=" + base) + done(mid))

    def close(self):
        self.srv.close()


@pytest.fixture
def directory():
    d = Directory()
    yield d
    d.close()


def _elems(data):
    """(tag, content) of each TLV in data."""
    out = []
    while data:
        n, hdr = data[1], 2
        if n & 0x80:
            k = n & 0x7F
            n, hdr = int.from_bytes(data[2:2 + k], "big"), 2 + k
        out.append((data[0], data[hdr:hdr + n]))
        data = data[hdr + n:]
    return out


def names(msgs):
    """The objectName of every SearchResultEntry in msgs (read_messages)."""
    out = []
    for _, tag, _, raw in msgs:
        if tag == 0x64:
            (_, body), = _elems(raw)
            _, (_, op) = _elems(body)[:2]
            out.append(_elems(op)[0][1].decode())
    return out


def test_abandoned_search_keeps_starttls_refused_until_its_late_answer(daemon, pki, directory):
    port = free_port()
    daemon(ldap_conf(port, directory.port, pki, extra=NOT_TLS))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
        # the search and its Abandon: cleartext, as a man in the middle would send them
        c.sendall(search(5, "dc=late") + abandon(6, 5) + starttls(7))
        assert [m[:3] for m in read_messages(c, 1)] == [(7, 0x78, 1)]   # operationsError
        directory.answer_late()
        late = read_messages(c, 2)
        assert [m[:3] for m in late] == [(5, 0x64, None), (5, 0x65, 0)]
        assert names(late) == ["cn=late-answer"]   # delivered in cleartext, where it belongs
        c.sendall(starttls(8))
        assert [m[:3] for m in read_messages(c, 1)] == [(8, 0x78, 0)]
        with client_ctx(pki.ca).wrap_socket(c, server_hostname="localhost") as t:
            t.sendall(search(5, "dc=client"))
            got = read_messages(t, 2)
            assert names(got) == ["cn=dc=client"], names(got)
            assert [m[:3] for m in got] == [(5, 0x64, None), (5, 0x65, 0)]
    assert [r[1] for r in directory.requests] == [0x63, 0x50, 0x63]  # no StartTLS


def test_directory_that_never_answers_an_abandoned_request(daemon, pki, directory):
    """StartTLS stays refused on that connection (the SPEC accepts it: the
    client may retry on a new one); the session itself goes on."""
    port = free_port()
    daemon(ldap_conf(port, directory.port, pki, extra=NOT_TLS))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
        c.sendall(search(5, "dc=late") + abandon(6, 5))
        time.sleep(0.3)
        for mid in (7, 8):
            c.sendall(starttls(mid))
            assert [m[:3] for m in read_messages(c, 1)] == [(mid, 0x78, 1)]
        c.sendall(search(9, "dc=now"))
        assert names(read_messages(c, 2)) == ["cn=dc=now"]
    with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
        c.sendall(starttls(1))
        assert [m[:3] for m in read_messages(c, 1)] == [(1, 0x78, 0)]


@pytest.mark.parametrize("in_tls", [False, True], ids=["cleartext", "inside-tls"])
def test_many_never_answered_abandons_do_not_stall_the_session(daemon, pki, directory, in_tls):
    """300 abandoned searches the directory never answers, more than the
    256 the proxy tracks: it forgets abandoned ones rather than wait for
    answers that never come, and a search after them is answered.  Before
    TLS, having forgotten one, it refuses StartTLS from then on, even once
    the directory has answered them all (inside TLS it refuses it anyway);
    inside TLS the late answers are delivered but for the forgotten
    ones."""
    port = free_port()
    daemon(ldap_conf(port, directory.port, pki, extra=NOT_TLS))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
        s = c
        if in_tls:
            c.sendall(starttls(1))
            assert [m[:3] for m in read_messages(c, 1)] == [(1, 0x78, 0)]
            s = client_ctx(pki.ca).wrap_socket(c, server_hostname="localhost")
        burst = b"".join(search(i, "dc=late") + abandon(1000 + i, i) for i in range(2, 302))
        s.sendall(burst + search(500, "dc=after"))
        got = read_messages(s, 2, timeout=10)
        assert [m[:3] for m in got] == [(500, 0x64, None), (500, 0x65, 0)], got
        s.sendall(starttls(501))
        assert [m[:3] for m in read_messages(s, 1)] == [(501, 0x78, 1)]
        # every one answered after all: the one forgotten may be too, so
        # StartTLS stays refused on this connection
        directory.answer_late()
        # inside TLS the answers to the 45 forgotten ones (300 + 1 - 256)
        # are dropped as answers to nothing asked
        n = 300 - 45 if in_tls else 300
        late = read_messages(s, 2 * n, timeout=20)
        assert len(late) == 2 * n and names(late) == ["cn=late-answer"] * n
        s.sendall(starttls(502))
        assert [m[:3] for m in read_messages(s, 1)] == [(502, 0x78, 1)]
        if in_tls:
            s.close()
    assert sum(1 for r in directory.requests if r[1] == 0x63) == 301


def test_slapd_search_abandon_then_starttls(daemon, pki, slapd):
    """The normal path: an Abandon of a search slapd has already answered
    leaves nothing outstanding, and StartTLS then goes through."""
    port = free_port()
    daemon(ldap_conf(port, slapd.port, pki, extra=NOT_TLS))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
        c.sendall(search(1, slapd.base))
        assert [m[:3] for m in read_messages(c, 2)] == [(1, 0x64, None), (1, 0x65, 0)]
        c.sendall(abandon(2, 1) + starttls(3))
        assert [m[:3] for m in read_messages(c, 1)] == [(3, 0x78, 0)]
        with client_ctx(pki.ca).wrap_socket(c, server_hostname="localhost") as t:
            t.sendall(search(4, slapd.base))
            assert [m[:3] for m in read_messages(t, 2)] == [(4, 0x64, None), (4, 0x65, 0)]
    slapd.wait_log(r"ABANDON msg=1")
    assert slapd.verbs()[:3] == ["SRCH", "ABANDON", "SRCH"], slapd.verbs()
    assert slapd.ext_oids() == []
