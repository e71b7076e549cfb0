"""tls.ticket_key_file: session tickets that one instance issues resume
on another instance that shares the key file, and not on one that does
not; an earlier key (a rotation) still resumes."""
import base64
import os
import subprocess

from helpers import Server, free_port, line_then_close_handler


def key_line():
    return base64.b64encode(os.urandom(80)).decode() + "\n"


def tls_conf(port, backend, pki, keyfile):
    return f"""
listeners = (
  {{ name = "imaps"; listen = "127.0.0.1:{port}"; protocol = "tcp";
     tls = {{ certificates = ( {{ cert = "{pki.server_cert}"; key = "{pki.server_key}"; }} );
             ticket_key_file = "{keyfile}"; }};
     backend = {{ address = "127.0.0.1:{backend}"; }}; }}
);
"""


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
