"""ldap, Guarantee 1 inside TLS: the module holds no message whole there.
A message that announces a length far beyond what it sends (4 GiB) is
classified from its first bytes and then streamed to the directory, or
dropped when the proxy answers it itself; the daemon's RSS must stay
within a bound tied to the listener's watermarks however much follows.

Measured on the daemon as it was before (held whole up to 4 GiB): the
Abandon flood grew it by about 110 MB."""
import socket
import ssl
import time

import pytest

from helpers import Server, free_port
from test_floods import SLACK_KIB, WATERMARKS, TLSFlood, peak_growth
from protocols import bind_request, read_messages, starttls_request, tlv
from test_ldap import ldap_conf

FILLER = 96 << 20       # bytes sent after the header
CHUNK = 64 << 10
HUGE = 0xFFFFFFF0       # what the header announces: just under 4 GiB


def ber_len4(n):
    return b"\x84" + n.to_bytes(4, "big")


def huge_abandon_head(msgid=2, target=1):
    """An LDAPMessage header announcing HUGE bytes, the messageID and the
    AbandonRequest: what follows is read as its controls."""
    return b"\x30" + ber_len4(HUGE) + bytes([0x02, 0x01, msgid, 0x50, 0x01, target])


def huge_starttls_head(msgid=2):
    """A StartTLS (requestName [0] the OID) announcing HUGE bytes: the
    rest would be its controls, one control whose value is the filler."""
    op = tlv(0x77, tlv(0x80, b"1.3.6.1.4.1.1466.20037"))
    ctl_type = tlv(0x04, b"1.2.3.4")
    rest = HUGE - 3 - len(op)                    # after SEQUENCE header, messageID, op
    value_len = rest - 6 - 6 - len(ctl_type) - 6  # [0] hdr, SEQUENCE hdr, type, value hdr
    return (b"\x30" + ber_len4(HUGE) + bytes([0x02, 0x01, msgid]) + op
            + b"\xa0" + ber_len4(rest - 6)
            + b"\x30" + ber_len4(rest - 12)
            + ctl_type + b"\x04" + ber_len4(value_len))


class Sink:
    """A directory that reads everything and answers nothing; counts bytes."""

    def __init__(self):
        self.got = 0
        self.srv = Server(self._handle)
        self.port = self.srv.port

    def _handle(self, conn, srv):
        while True:
            d = conn.recv(1 << 20)
            if not d:
                return
            self.got += len(d)

    def close(self):
        self.srv.close()


def flood(send, head, limit=FILLER, stall=3.0, deadline=120):
    """head, then limit bytes of filler through send(); stops early when
    the proxy stops taking them for stall seconds."""
    filler = b"\x00" * CHUNK
    end = time.monotonic() + deadline
    while not send(head):
        time.sleep(0.01)
    sent, last = len(head), time.monotonic()
    while sent - len(head) < limit and time.monotonic() < end:
        if send(filler):
            sent += len(filler)
            last = time.monotonic()
        elif time.monotonic() - last > stall:
            break
        else:
            time.sleep(0.005)
    return sent


def tls_client(port, pki, implicit):
    c = socket.create_connection(("127.0.0.1", port), timeout=10)
    if not implicit:
        c.sendall(starttls_request(1))
        assert [m[:3] for m in read_messages(c, 1)] == [(1, 0x78, 0)]
    return c, TLSFlood(c, pki.ca)


def check(d, name, run):
    sent, grew = peak_growth(d, run)
    report = f"{name}: {sent} bytes sent, the daemon grew by {grew} KiB (bound {SLACK_KIB} KiB)"
    print(report)
    assert grew < SLACK_KIB, report
    return sent


@pytest.mark.parametrize("implicit", [False, True], ids=["after-starttls", "implicit"])
def test_4gib_abandon_inside_tls_streams_to_the_directory(daemon, pki, implicit):
    """The AbandonRequest's target is in its first bytes: the module reads
    that much and streams the rest, however long it says it is."""
    sink = Sink()
    port = free_port()
    extra = WATERMARKS + (' client_tls = "implicit";' if implicit else "")
    d = daemon(ldap_conf(port, sink.port, pki, extra=extra), debug=False)
    c, t = tls_client(port, pki, implicit)
    with c:
        sent = check(d, "ldap 4 GiB abandon inside TLS",
                     lambda: flood(t.send, huge_abandon_head()))
        assert sent >= FILLER, f"the proxy stopped reading after {sent} bytes"
        deadline = time.monotonic() + 30
        while sink.got < FILLER and time.monotonic() < deadline:
            time.sleep(0.05)
        assert sink.got >= FILLER, f"the directory got {sink.got} of {sent} bytes"
    sink.close()


def test_4gib_starttls_inside_tls_is_refused_from_its_first_bytes(daemon, pki):
    """A second StartTLS, padded with a control to 4 GiB: operationsError at
    once, the rest dropped as it comes, never held and never relayed."""
    sink = Sink()
    port = free_port()
    d = daemon(ldap_conf(port, sink.port, pki, extra=WATERMARKS), debug=False)
    c, t = tls_client(port, pki, False)
    with c:
        sent = check(d, "ldap 4 GiB StartTLS inside TLS",
                     lambda: flood(t.send, huge_starttls_head()))
        assert sent >= FILLER, f"the proxy stopped reading after {sent} bytes"
    time.sleep(0.3)
    assert sink.got == 0
    sink.close()


def test_96mib_starttls_inside_tls_then_the_session_goes_on(daemon, pki, tmp_path):
    """The same, whole (96 MiB of control value), against slapd: the
    proxy answers operationsError, slapd never sees an EXT, and a bind
    sent behind it is relayed and answered."""
    from slapd_backend import Slapd
    s = Slapd(tmp_path)
    try:
        port = free_port()
        d = daemon(ldap_conf(port, s.port, pki, extra=WATERMARKS), debug=False)
        c, t = tls_client(port, pki, False)
        op = tlv(0x77, tlv(0x80, b"1.3.6.1.4.1.1466.20037"))
        ctl_type = tlv(0x04, b"1.2.3.4")
        value = b"\x04" + ber_len4(FILLER)
        ctl = b"\x30" + ber_len4(len(ctl_type) + len(value) + FILLER) + ctl_type + value
        ctls = b"\xa0" + ber_len4(len(ctl) + FILLER) + ctl
        body = bytes([0x02, 0x01, 2]) + op + ctls
        head = b"\x30" + ber_len4(len(body) + FILLER) + body
        with c:
            sent = check(d, "ldap 96 MiB StartTLS inside TLS then a bind",
                         lambda: flood(t.send, head))
            assert sent == len(head) + FILLER, f"the proxy stopped reading after {sent} bytes"
            while not t.send(bind_request(3, s.user_dn, s.user_pw)):
                time.sleep(0.01)
            t.sock.setblocking(True)
            t.sock.settimeout(10)
            got, out = [], b""
            deadline = time.monotonic() + 20
            while len(got) < 2 and time.monotonic() < deadline:
                try:
                    chunk = t.obj.read(65536)
                except ssl.SSLWantReadError:
                    t.inc.write(t.sock.recv(65536))
                    continue
                out += chunk
                got = parse(out)
            assert got[:2] == [(2, 0x78, 1), (3, 0x61, 0)], got
        assert s.ext_oids() == []
        assert [dn for dn, _ in s.successful_binds()] == [s.user_dn]
    finally:
        s.stop()


def parse(buf):
    """(msgid, op tag, resultCode) of the whole messages in buf."""
    out = []
    while len(buf) >= 2:
        n, hdr = buf[1], 2
        if n & 0x80:
            k = n & 0x7F
            n, hdr = int.from_bytes(buf[2:2 + k], "big"), 2 + k
        if len(buf) < hdr + n:
            break
        body, buf = buf[hdr:hdr + n], buf[hdr + n:]
        idlen = body[1]
        op = body[2 + idlen:]
        ophdr = 2 + (op[1] & 0x7F if op[1] & 0x80 else 0)
        out.append((int.from_bytes(body[2:2 + idlen], "big"), op[0], op[ophdr + 2]))
    return out
