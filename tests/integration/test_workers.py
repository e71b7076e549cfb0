"""workers: several event loops, each on its own thread with its own
SO_REUSEPORT listening sockets, sharing the configuration and the TLS
contexts; reload and graceful shutdown with two workers."""
import os
import re
import signal
import socket
import time

import pytest

from helpers import Server, echo_handler, free_port, recv_all, recv_until, tls_connect, wait_for
from test_daemon import certs, conf


def threads(pid):
    return len(os.listdir(f"/proc/{pid}/task"))


def test_two_workers_share_the_load(daemon, pki):
    backend = Server(echo_handler())
    port = free_port()
    d = daemon(conf(port, f"127.0.0.1:{backend.port}", certs(pki, (pki.server_cert, pki.server_key)),
                    glob="workers = 2;"))
    assert "2 workers" in d.log()
    assert threads(d.pid) == 3  # the main thread and two workers
    conns = [tls_connect(port, pki.ca) for _ in range(40)]
    for c in conns:
        assert recv_until(c, b"\n") == b"hello from the backend\n"
    used = set(re.findall(r"accepted \S+ in worker (\d)", d.log()))
    assert used == {"0", "1"}, "the kernel gave every connection to one worker"
    for i, c in enumerate(conns):
        c.sendall(b"n%d\n" % i)
        assert recv_until(c, b"\n") == b"n%d\n" % i
        c.close()
    d.wait_session(count=40)
    backend.close()


def test_workers_zero_means_one_per_cpu(daemon, pki):
    backend = Server(echo_handler())
    port = free_port()
    d = daemon(conf(port, f"127.0.0.1:{backend.port}", extra='client_tls = "none";',
                    glob="workers = 0;"))
    n = os.cpu_count()
    assert f"{n} worker" in d.log()
    assert threads(d.pid) == n + 1
    backend.close()


def test_reload_with_two_workers(daemon, pki, tmp_path):
    backend = Server(echo_handler())
    cert, key = tmp_path / "live.pem", tmp_path / "live.key"
    cert.write_bytes(pki.server_cert.read_bytes())
    key.write_bytes(pki.server_key.read_bytes())
    port, port2 = free_port(), free_port()
    text = conf(port, f"127.0.0.1:{backend.port}", certs(pki, (cert, key)), glob="workers = 2;")
    d = daemon(text)
    old = [tls_connect(port, pki.ca) for _ in range(10)]
    for c in old:
        recv_until(c, b"\n")
    cert.write_bytes(pki.alt_cert.read_bytes())
    key.write_bytes(pki.alt_key.read_bytes())
    out = d.reload(text.replace(f'listen = "127.0.0.1:{port}"',
                                f'listen = [ "127.0.0.1:{port}", "127.0.0.1:{port2}" ]'))
    assert "reloaded" in out
    for p in (port, port2):
        for _ in range(10):  # enough to reach both workers
            with tls_connect(p, pki.ca, server_name="alt.test") as c:
                assert dict(x[0] for x in c.getpeercert()["subject"])["commonName"] == "alt.test"
    for c in old:
        c.sendall(b"still\n")
        assert recv_until(c, b"\n") == b"still\n"
        c.close()
    backend.close()


def test_graceful_shutdown_with_two_workers(daemon, pki):
    backend = Server(echo_handler())
    port = free_port()
    d = daemon(conf(port, f"127.0.0.1:{backend.port}", certs(pki, (pki.server_cert, pki.server_key)),
                    glob="workers = 2; shutdown_timeout = 10;"))
    conns = [tls_connect(port, pki.ca) for _ in range(20)]
    for c in conns:
        recv_until(c, b"\n")
    assert set(re.findall(r"accepted \S+ in worker (\d)", d.log())) == {"0", "1"}
    d.send_signal(signal.SIGTERM)
    d.wait_log("shutting down")
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=5)
    for i, c in enumerate(conns):
        c.sendall(b"bye %d\n" % i)
        assert recv_until(c, b"\n") == b"bye %d\n" % i
    assert d.proc.poll() is None
    for c in conns:
        c.close()
    assert d.proc.wait(15) == 0
    assert len(d.session_lines()) == 20
    backend.close()


def test_shutdown_timeout_with_two_workers(daemon, pki):
    backend = Server(echo_handler())
    port = free_port()
    d = daemon(conf(port, f"127.0.0.1:{backend.port}", certs(pki, (pki.server_cert, pki.server_key)),
                    glob="workers = 2; shutdown_timeout = 1;"))
    conns = [tls_connect(port, pki.ca) for _ in range(10)]
    for c in conns:
        recv_until(c, b"\n")
    t0 = time.monotonic()
    d.send_signal(signal.SIGTERM)
    assert d.proc.wait(10) == 0
    assert time.monotonic() - t0 < 5
    assert d.log().count("end=shutdown") == 10
    for c in conns:
        c.close()
    backend.close()
