"""stats: the Prometheus endpoint, scraped with curl while sessions run;
its numbers match what the test did."""
import re
import socket
import subprocess

import pytest

from helpers import (Server, client_ctx, echo_handler, free_port, never_connects, recv_all,
                     recv_until, tls_connect)
from smtp_backend import SMTPBackend
from test_smtp import read_reply


def scrape(port):
    r = subprocess.run(["curl", "-sS", "--max-time", "10", f"http://127.0.0.1:{port}/metrics"],
                       capture_output=True, text=True, timeout=20)
    assert r.returncode == 0, r.stderr
    values = {}
    for line in r.stdout.splitlines():
        if line.startswith("#") or not line:
            continue
        name, value = line.rsplit(" ", 1)
        values[name] = float(value)
    return values, r.stdout


@pytest.mark.parametrize("workers", [1, 2])
def test_metrics_match_what_the_sessions_did(daemon, pki, workers):
    mta = SMTPBackend()
    echo = Server(echo_handler())
    stats, smtp, tls, dead = free_port(), free_port(), free_port(), free_port()
    cert = f'tls = {{ certificates = ( {{ cert = "{pki.server_cert}"; key = "{pki.server_key}"; }} ); }};'
    d = daemon(f"""
workers = {workers};
stats = {{ listen = "127.0.0.1:{stats}"; }};
listeners = (
  {{ name = "mail"; listen = "127.0.0.1:{smtp}"; protocol = "smtp"; {cert}
     backend = {{ address = "127.0.0.1:{mta.port}"; }}; }},
  {{ name = "tls"; listen = "127.0.0.1:{tls}"; protocol = "tcp"; {cert}
     backend = {{ address = "127.0.0.1:{echo.port}"; }}; }},
  {{ name = "down"; listen = "127.0.0.1:{dead}"; protocol = "tcp"; {cert}
     backend = {{ address = "127.0.0.1:{free_port()}"; }}; }}
);
""")
    # three implicit TLS sessions left open while we scrape
    open_tls = [tls_connect(tls, pki.ca) for _ in range(3)]
    for c in open_tls:
        assert recv_until(c, b"\n") == b"hello from the backend\n"
    # two SMTP STARTTLS sessions, one with an injection behind the verb
    for inject in (b"", b"RSET\r\n"):
        with socket.create_connection(("127.0.0.1", smtp), timeout=10) as c:
            read_reply(c)
            c.sendall(b"STARTTLS\r\n" + inject)
            read_reply(c)
            with client_ctx(pki.ca).wrap_socket(c, server_hostname="localhost") as t:
                t.sendall(b"QUIT\r\n")
                read_reply(t)
    # a plaintext client on the implicit listener, a backend that is down
    with socket.create_connection(("127.0.0.1", tls), timeout=10) as c:
        c.sendall(b"HELLO\r\n")
        recv_all(c)
    with tls_connect(dead, pki.ca) as c:
        recv_all(c)
    d.wait_session(count=4)

    m, text = scrape(stats)
    assert m['starttls_proxy_sessions_active{listener="tls"}'] == 3
    assert m['starttls_proxy_sessions_accepted_total{listener="tls"}'] == 4
    assert m['starttls_proxy_sessions_accepted_total{listener="mail"}'] == 2
    assert m['starttls_proxy_sessions_active{listener="mail"}'] == 0
    assert m['starttls_proxy_upgrades_total{listener="mail",kind="starttls"}'] == 2
    assert m['starttls_proxy_upgrades_total{listener="tls",kind="implicit"}'] == 3
    assert m['starttls_proxy_injections_total{listener="mail"}'] == 1
    assert m['starttls_proxy_injected_bytes_total{listener="mail"}'] == 6
    assert m['starttls_proxy_handshake_failures_total{listener="tls",reason="plaintext"}'] == 1
    assert m['starttls_proxy_backend_failures_total{listener="down",reason="unreachable"}'] == 1
    assert m['starttls_proxy_tls_sessions_total{listener="tls",version="TLSv1.3",'
             'cipher="TLS_AES_256_GCM_SHA384"}'] == 3
    assert m["starttls_proxy_workers"] == workers
    assert m["starttls_proxy_process_open_fds"] > 6
    assert m["starttls_proxy_process_resident_memory_bytes"] > 1 << 20
    for c in open_tls:
        c.sendall(b"twelve bytes")
        recv_until(c, b"bytes")
        c.close()
    d.wait_session(count=7)
    m, _ = scrape(stats)
    assert m['starttls_proxy_sessions_active{listener="tls"}'] == 0
    assert m['starttls_proxy_bytes_in_total{listener="tls"}'] == 3 * 12  # a failed handshake counts no bytes
    assert m['starttls_proxy_bytes_out_total{listener="tls"}'] == 3 * (23 + 12)
    # anything but GET /metrics
    r = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}",
                        f"http://127.0.0.1:{stats}/"], capture_output=True, text=True)
    assert r.stdout == "404"
    mta.stop()
    echo.close()


def test_backend_timeout_is_counted_once_and_ends_the_session(daemon, pki):
    """An SMTP backend that never completes the connect (its accept queue is
    full): the client gets 421 once, the session ends, and the timeout is
    counted once.  The backend's socket is abandoned: if it connects later,
    nothing of the client's reaches it."""
    import time
    with never_connects() as bport:
        stats, port = free_port(), free_port()
        d = daemon(f"""
    stats = {{ listen = "127.0.0.1:{stats}"; }};
    listeners = (
      {{ name = "mail"; listen = "127.0.0.1:{port}"; protocol = "smtp";
         timeouts = {{ connect = 1; }};
         backend = {{ address = "127.0.0.1:{bport}"; }}; }}
    );
    """)
        with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
            c.sendall(b"EHLO client.test\r\n")
            assert recv_all(c, timeout=10) == b"421 4.3.2 Service not available\r\n"
        line = d.wait_session()[0]
        assert "end=backend-timeout" in line, line
        time.sleep(0.5)  # a session that lived on would count again every tick
        values, text = scrape(stats)
        assert values['starttls_proxy_backend_failures_total{listener="mail",reason="timeout"}'] == 1, text
        assert values['starttls_proxy_sessions_active{listener="mail"}'] == 0, text
        assert d.log().count("end=backend-timeout") == 1
