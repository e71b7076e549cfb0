"""systemd integration without systemd: a notification socket made by the
test stands in for the service manager (Type=notify), and Debian's
systemd-socket-activate passes listening sockets as systemd does."""
import os
import signal
import socket

import pytest

from helpers import Server, echo_handler, free_port, recv_until, tls_connect, wait_for
from test_daemon import certs, conf


@pytest.fixture
def notify_socket(tmp_path, monkeypatch):
    path = str(tmp_path / "notify")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(path)
    s.settimeout(10)
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    yield s
    s.close()


def next_message(s):
    return s.recv(4096).decode()


def test_ready_reloading_stopping(daemon, pki, notify_socket):
    echo = Server(echo_handler())
    port = free_port()
    d = daemon(conf(port, f"127.0.0.1:{echo.port}", certs(pki, (pki.server_cert, pki.server_key))))
    msg = next_message(notify_socket)
    assert msg.startswith("READY=1")
    # ready means ready: the listener accepts by now
    with tls_connect(port, pki.ca) as c:
        assert recv_until(c, b"\n") == b"hello from the backend\n"
    d.send_signal(signal.SIGHUP)
    msg = next_message(notify_socket)
    assert msg.startswith("RELOADING=1\nMONOTONIC_USEC=")
    assert next_message(notify_socket).startswith("READY=1")
    d.send_signal(signal.SIGTERM)
    assert next_message(notify_socket).startswith("STOPPING=1")
    assert d.proc.wait(10) == 0
    echo.close()


def test_socket_activation(daemon, pki):
    echo = Server(echo_handler())
    port = free_port()
    unused = free_port()
    # the activator binds both; the daemon must use the one it names and
    # could not bind that address itself while the activator's socket is open
    d = daemon(conf(port, f"127.0.0.1:{echo.port}", certs(pki, (pki.server_cert, pki.server_key))),
               prefix=["systemd-socket-activate", "-l", f"127.0.0.1:{port}",
                       "-l", f"127.0.0.1:{unused}"], start=False)
    d.start(wait=False)
    wait_for(lambda: "Listening on" in d.log(), 10, "the activator to listen")
    # the activator starts the daemon on the first connection, which the
    # daemon then accepts on the socket it was passed
    with tls_connect(port, pki.ca) as c:
        assert recv_until(c, b"\n") == b"hello from the backend\n"
    assert "systemd passed 2 listening sockets" in d.log()
    assert f"systemd passed a socket on 127.0.0.1:{unused} that no listener names: closed" in d.log()
    echo.close()


def test_socket_activation_with_two_workers(daemon, pki):
    """Both workers accept from the one socket systemd passed: they could
    not bind their own next to it if it belonged to another user."""
    echo = Server(echo_handler())
    port = free_port()
    d = daemon(conf(port, f"127.0.0.1:{echo.port}", certs(pki, (pki.server_cert, pki.server_key)),
                    glob="workers = 2;"),
               prefix=["systemd-socket-activate", "-l", f"127.0.0.1:{port}"], start=False)
    d.start(wait=False)
    wait_for(lambda: "Listening on" in d.log(), 10, "the activator to listen")
    conns = [tls_connect(port, pki.ca) for _ in range(20)]
    for c in conns:
        assert recv_until(c, b"\n") == b"hello from the backend\n"
        c.close()
    assert "2 workers" in d.log()
    echo.close()
