"""tls.ticket_key_file: session tickets that one instance issues resume
on another instance that shares the key file, and not on one that does
not; an earlier key (a rotation) still resumes.  And Guarantee 3: a
session resumes only under the client-certificate policy (verify_client,
the CA certificates of client_ca) it was made under."""
import base64
import os
import subprocess

import pytest

from helpers import Server, free_port, line_then_close_handler, wait_for
from protocols import listener


def key_line():
    return base64.b64encode(os.urandom(80)).decode() + "\n"


def tls_conf(port, backend, pki, keyfile):
    return listener(port, backend, name="imaps", pki=pki, tls_extra=f'ticket_key_file = "{keyfile}";')


def s_client(port, pki, *args):
    r = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-servername",
                        "localhost", "-CAfile", str(pki.ca), "-ign_eof", *args],
                       input=b"a line\n", capture_output=True, timeout=20)
    out = r.stdout.decode(errors="replace")
    for line in out.splitlines():
        if line.startswith(("New,", "Reused,")):
            return line.split(",")[0]
    raise AssertionError(out + r.stderr.decode())


def test_tickets_resume_across_instances_sharing_the_key_file(pki, tmp_path):
    backend = Server(line_then_close_handler())
    shared, other = tmp_path / "shared.keys", tmp_path / "other.keys"
    shared.write_text("# current, then previous\n" + key_line() + key_line())
    other.write_text(key_line())
    a, b, c = free_port(), free_port(), free_port()
    from conftest import Daemon
    ds = []
    for port, keys, sub in ((a, shared, "a"), (b, shared, "b"), (c, other, "c")):
        (tmp_path / sub).mkdir()
        ds.append(Daemon(tmp_path / sub, tls_conf(port, backend.port, pki, keys)).start())
    try:
        sess = tmp_path / "session.pem"
        assert s_client(a, pki, "-sess_out", str(sess)) == "New"
        assert s_client(b, pki, "-sess_in", str(sess)) == "Reused"   # another instance
        assert s_client(c, pki, "-sess_in", str(sess)) == "New"      # another key file
        # rotation: a new current key in front; the old one still decrypts
        shared.write_text(key_line() + shared.read_text())
        ds[1].reload()
        assert s_client(b, pki, "-sess_in", str(sess)) == "Reused"
        # a key file that is not one is refused clearly, and the old keys are kept
        shared.write_text("not a key\n")
        out = ds[0].reload()
        assert "line 1: not a key (expected the base64 of 80 random bytes" in out
        assert s_client(a, pki, "-sess_in", str(sess)) == "Reused"
    finally:
        for d in ds:
            assert d.stop() == 0
        backend.close()


# Guarantee 3: a resumed session is accepted only under the
# client-certificate policy it was made under.  The ticket key stays the
# same across these reloads (the ticket still decrypts); what must refuse
# it is the session id context, which carries the policy.

def policy_conf(port, backend, pki, keyfile, verify="none", client_ca=None, name="imaps"):
    ca = f'client_ca = "{client_ca}";' if client_ca else ""
    return listener(port, backend, name=name, pki=pki,
                    tls_extra=f'verify_client = "{verify}"; {ca} ticket_key_file = "{keyfile}";')


def attempt(port, pki, version, *args):
    """One s_client connection: ("New" | "Reused" | "failed", relayed?)."""
    r = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-servername",
                        "localhost", "-CAfile", str(pki.ca), "-ign_eof", version, *args],
                       input=b"a line\n", capture_output=True, timeout=20)
    out = r.stdout.decode(errors="replace")
    how = "failed"
    for line in out.splitlines():
        if line.startswith(("New,", "Reused,")):
            how = line.split(",")[0]
    return how, "you said: a line" in out


def handshake_failures(d):
    return [l for l in d.session_lines() if "end=handshake-failed" in l]


def make_daemon(tmp_path, sub, conf):
    from conftest import Daemon
    (tmp_path / sub).mkdir()
    return Daemon(tmp_path / sub, conf).start()


VERSIONS = ["-tls1_2", "-tls1_3"]


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("before", ["none", "optional"])
def test_ticket_made_without_a_certificate_does_not_pass_require(pki, tmp_path, version, before):
    """(a) A session made with no client certificate under verify_client
    none (or optional) is not resumed once a reload has made it require:
    the client makes a full handshake, is refused, nothing is relayed."""
    backend = Server(line_then_close_handler())
    keys = tmp_path / "tickets.keys"
    keys.write_text(key_line())
    port = free_port()
    ca = pki.ca if before == "optional" else None
    d = make_daemon(tmp_path, "d", policy_conf(port, backend.port, pki, keys, before, ca))
    try:
        sess = tmp_path / "sess.pem"
        assert attempt(port, pki, version, "-sess_out", str(sess)) == ("New", True)
        assert attempt(port, pki, version, "-sess_in", str(sess)) == ("Reused", True)
        assert backend.connections == 2
        d.reload(policy_conf(port, backend.port, pki, keys, "require", pki.ca))
        for i in range(3):
            how, relayed = attempt(port, pki, version, "-sess_in", str(sess))
            assert how != "Reused" and not relayed, (i, how)
            wait_for(lambda: len(handshake_failures(d)) == i + 1, 10, "the refusal")
            assert "the client sent no certificate (verify_client = require)" in \
                handshake_failures(d)[-1], handshake_failures(d)[-1]
        assert backend.connections == 2 and backend.received.count(b"a line") == 2
        # a client with a certificate from client_ca still gets in
        assert attempt(port, pki, version, "-cert", str(pki.client_cert), "-key",
                       str(pki.client_key)) == ("New", True)
    finally:
        assert d.stop() == 0
        backend.close()


@pytest.mark.parametrize("version", VERSIONS)
def test_client_of_a_withdrawn_ca_cannot_resume(pki, tmp_path, version):
    """(b) client_ca rewritten in place with another CA: a client whose
    certificate only the withdrawn CA signed cannot resume its session,
    however often it tries, and gets no new ticket to try with."""
    withdrawn = pki.leaf("withdrawn-client", "withdrawn.test", ["DNS:withdrawn.test"],
                         ca=(pki.other_ca, pki.other_ca_key), usage="clientAuth")
    backend = Server(line_then_close_handler())
    keys, clients = tmp_path / "tickets.keys", tmp_path / "clients.pem"
    keys.write_text(key_line())
    clients.write_bytes(pki.other_ca.read_bytes())
    port = free_port()
    conf = policy_conf(port, backend.port, pki, keys, "require", clients)
    d = make_daemon(tmp_path, "d", conf)
    cert = ("-cert", str(withdrawn[0]), "-key", str(withdrawn[1]))
    try:
        sess = tmp_path / "sess.pem"
        assert attempt(port, pki, version, *cert, "-sess_out", str(sess)) == ("New", True)
        assert attempt(port, pki, version, *cert, "-sess_in", str(sess)) == ("Reused", True)
        clients.write_bytes(pki.ca.read_bytes())
        d.reload(conf)                      # the same file name, another CA in it
        for i in range(3):
            fresh = tmp_path / f"fresh{i}.pem"
            how, relayed = attempt(port, pki, version, *cert, "-sess_in", str(sess),
                                   "-sess_out", str(fresh))
            assert how != "Reused" and not relayed, (i, how)
            wait_for(lambda: len(handshake_failures(d)) == i + 1, 10, "the refusal")
            assert "client certificate rejected" in handshake_failures(d)[-1]
            assert not fresh.exists(), "a ticket for a refused client"
        assert backend.connections == 2
        # the new CA's client is let in
        assert attempt(port, pki, version, "-cert", str(pki.client_cert), "-key",
                       str(pki.client_key)) == ("New", True)
    finally:
        assert d.stop() == 0
        backend.close()


@pytest.mark.parametrize("version", VERSIONS)
def test_same_policy_resumes_across_instances_and_another_policy_does_not(pki, tmp_path, version):
    """(c) Instances that share ticket_key_file and have the same policy
    (the same CA certificates, in files of their own) resume each other's
    sessions; one with the same key file but another policy does not."""
    backend = Server(line_then_close_handler())
    keys = tmp_path / "tickets.keys"
    keys.write_text(key_line())
    cas = []
    for sub in ("a", "b"):
        p = tmp_path / f"{sub}-clients.pem"
        p.write_bytes(pki.ca.read_bytes())
        cas.append(p)
    mixed = tmp_path / "c-clients.pem"         # the same CA and one more
    mixed.write_bytes(pki.ca.read_bytes() + pki.other_ca.read_bytes())
    pa, pb, pc, pd = free_port(), free_port(), free_port(), free_port()
    ds = [make_daemon(tmp_path, "a", policy_conf(pa, backend.port, pki, keys, "require", cas[0])),
          make_daemon(tmp_path, "b", policy_conf(pb, backend.port, pki, keys, "require", cas[1])),
          make_daemon(tmp_path, "c", policy_conf(pc, backend.port, pki, keys, "require", mixed)),
          make_daemon(tmp_path, "d", policy_conf(pd, backend.port, pki, keys, "optional", cas[0]))]
    cert = ("-cert", str(pki.client_cert), "-key", str(pki.client_key))
    try:
        sess = tmp_path / "sess.pem"
        assert attempt(pa, pki, version, *cert, "-sess_out", str(sess)) == ("New", True)
        assert attempt(pb, pki, version, *cert, "-sess_in", str(sess)) == ("Reused", True)
        assert attempt(pa, pki, version, *cert, "-sess_in", str(sess)) == ("Reused", True)
        # another CA list, another verify_client: full handshakes (let in, having a certificate)
        assert attempt(pc, pki, version, *cert, "-sess_in", str(sess)) == ("New", True)
        assert attempt(pd, pki, version, *cert, "-sess_in", str(sess)) == ("New", True)
    finally:
        for d in ds:
            assert d.stop() == 0
        backend.close()


@pytest.mark.parametrize("version", VERSIONS)
def test_reload_that_keeps_the_policy_still_resumes(pki, tmp_path, version):
    """(d) A reload that leaves verify_client and the CA certificates as
    they were keeps resumption working, even if client_ca's file is
    rewritten (the same certificates in another order, with comments)."""
    backend = Server(line_then_close_handler())
    keys, clients = tmp_path / "tickets.keys", tmp_path / "clients.pem"
    keys.write_text(key_line())
    clients.write_bytes(pki.ca.read_bytes() + pki.other_ca.read_bytes())
    port = free_port()
    conf = policy_conf(port, backend.port, pki, keys, "require", clients)
    d = make_daemon(tmp_path, "d", conf)
    cert = ("-cert", str(pki.client_cert), "-key", str(pki.client_key))
    try:
        sess = tmp_path / "sess.pem"
        assert attempt(port, pki, version, *cert, "-sess_out", str(sess)) == ("New", True)
        d.reload(conf)
        assert attempt(port, pki, version, *cert, "-sess_in", str(sess)) == ("Reused", True)
        clients.write_bytes(b"# client CAs\n" + pki.other_ca.read_bytes() + b"\n" +
                            pki.ca.read_bytes())
        d.reload(conf)
        assert attempt(port, pki, version, *cert, "-sess_in", str(sess)) == ("Reused", True)
    finally:
        assert d.stop() == 0
        backend.close()


@pytest.mark.parametrize("version", VERSIONS)
def test_policy_follows_sessions_made_on_an_sni_certificate(pki, tmp_path, version):
    """A listener with two certificates has a context for each, switched by
    SNI after OpenSSL has decided on resumption: a session made under the
    second certificate resumes while the policy stays, and not after it
    changed."""
    backend = Server(line_then_close_handler())
    keys = tmp_path / "tickets.keys"
    keys.write_text(key_line())
    port = free_port()

    def conf(verify):
        return policy_conf(port, backend.port, pki, keys, verify, pki.ca).replace(
            f'key = "{pki.server_key}"; }}',
            f'key = "{pki.server_key}"; }}, {{ cert = "{pki.alt_cert}"; key = "{pki.alt_key}"; }}')
    d = make_daemon(tmp_path, "d", conf("optional"))
    # (the name checked: only the second certificate passes)
    alt = ("-servername", "alt.test", "-verify_hostname", "alt.test", "-verify_return_error")
    try:
        sess = tmp_path / "sess.pem"
        assert attempt(port, pki, version, *alt, "-sess_out", str(sess)) == ("New", True)
        assert attempt(port, pki, version, *alt, "-sess_in", str(sess)) == ("Reused", True)
        d.reload(conf("optional"))
        assert attempt(port, pki, version, *alt, "-sess_in", str(sess)) == ("Reused", True)
        d.reload(conf("require"))
        how, relayed = attempt(port, pki, version, *alt, "-sess_in", str(sess))
        assert how != "Reused" and not relayed
        wait_for(lambda: len(handshake_failures(d)) == 1, 10, "the refusal")
        assert "sent no certificate" in handshake_failures(d)[0]
        assert backend.connections == 3
    finally:
        assert d.stop() == 0
        backend.close()
