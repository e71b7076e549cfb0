"""Scale-out behind an existing balancer: HAProxy in TCP mode with
send-proxy-v2 in front of two starttls-proxy instances that share a
session-ticket key file, SMTP STARTTLS clients through it, aiosmtpd
behind."""
import base64
import os
import re
import signal
import socket
import subprocess

from conftest import Daemon
from helpers import client_ctx, free_port
from protocols import listener, read_reply
from smtp_backend import SMTPBackend
from test_proxy_protocol import HAProxy


def instance_conf(port, mta, pki, keys):
    return listener(port, mta, protocol="smtp", name="submission", accept_proxy_protocol=True,
                    pki=pki, tls_extra=f'ticket_key_file = "{keys}";', glob="shutdown_timeout = 20;")


def smtp_session(port, pki, quit=True):
    c = socket.create_connection(("127.0.0.1", port), timeout=10)
    me = c.getsockname()[1]
    assert read_reply(c).startswith(b"220 ")
    c.sendall(b"EHLO client.test\r\n")
    read_reply(c)
    c.sendall(b"STARTTLS\r\n")
    assert read_reply(c).startswith(b"220 2.0.0")
    t = client_ctx(pki.ca).wrap_socket(c, server_hostname="localhost")
    t.sendall(b"EHLO client.test\r\n")
    read_reply(t)
    if quit:
        t.sendall(b"QUIT\r\n")
        assert read_reply(t).startswith(b"221")
        t.close()
        return me, None
    return me, t


def which(instances, port):
    """The instance whose log has a session from this client port."""
    # the debug line of the PROXY header names the client while it is open
    hits = [i for i, d in enumerate(instances)
            if re.search(rf"PROXY v2 header: client 127\.0\.0\.1:{port}$", d.log(), re.M)]
    return hits[0] if len(hits) == 1 else None


def s_client(port, pki, *args):
    r = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-starttls", "smtp",
                        "-servername", "localhost", "-CAfile", str(pki.ca), "-ign_eof", *args],
                       input=b"QUIT\r\n", capture_output=True, timeout=20)
    for line in r.stdout.decode(errors="replace").splitlines():
        if line.startswith(("New,", "Reused,")):
            return line.split(",")[0]
    raise AssertionError(r.stdout.decode(errors="replace") + r.stderr.decode(errors="replace"))


def test_two_instances_behind_haproxy(pki, tmp_path):
    mta = SMTPBackend()
    keys = tmp_path / "tickets.keys"
    keys.write_text(base64.b64encode(os.urandom(80)).decode() + "\n")
    ports = [free_port(), free_port()]
    instances = []
    for i, port in enumerate(ports):
        (tmp_path / f"i{i}").mkdir()
        instances.append(Daemon(tmp_path / f"i{i}", instance_conf(port, mta.port, pki, keys)).start())
    lb = HAProxy(tmp_path, ports, "send-proxy-v2")
    try:
        # sessions spread over both instances, each logging the real client
        seen = set()
        for _ in range(10):
            me, _ = smtp_session(lb.port, pki)
            i = which(instances, me)
            assert i is not None, f"no instance got client port {me}"
            # and its session line names the client, not haproxy
            instances[i].wait_log(rf"session listener=submission client=127\.0\.0\.1:{me} ")
            seen.add(i)
        assert seen == {0, 1}
        assert len(mta.messages) == 0 and mta.verbs().count("QUIT") >= 10

        # a TLS session made on one instance resumes on the other
        sess = tmp_path / "sess.pem"
        assert s_client(lb.port, pki, "-sess_out", str(sess)) == "New"
        assert s_client(lb.port, pki, "-sess_in", str(sess)) == "Reused"  # round robin: the other
        assert s_client(lb.port, pki, "-sess_in", str(sess)) == "Reused"

        # stopping one instance loses no session that was open on it
        open_sessions = [smtp_session(lb.port, pki, quit=False) for _ in range(4)]
        on = [which(instances, me) for me, _ in open_sessions]
        assert 0 in on and 1 in on
        instances[0].send_signal(signal.SIGTERM)
        instances[0].wait_log("shutting down")
        for me, t in open_sessions:
            t.sendall(b"MAIL FROM:<a@example.org>\r\n")
            assert read_reply(t) == b"250 OK\r\n"
            t.sendall(b"QUIT\r\n")
            assert read_reply(t).startswith(b"221")
            t.close()
        assert instances[0].proc.wait(20) == 0
        # and new sessions go to the instance left
        for _ in range(4):
            me, _ = smtp_session(lb.port, pki)
    finally:
        lb.stop()
        for d in instances:
            assert d.stop() in (0, None)
        mta.stop()
