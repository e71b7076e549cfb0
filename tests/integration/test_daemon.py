"""The daemon with protocol tcp: implicit TLS or a plain relay, plain and
TLS backends, verification and pins, SNI, keys, half-close, timeouts,
limits, reload, shutdown, and the command line."""
import os
import signal
import socket
import ssl
import subprocess
import time

import pytest

from conftest import BIN, ROOT

SUFFIX = "-asan" if os.environ.get("STP_SANITIZED") == "1" else ""
from helpers import (MemTLS, Server, client_ctx, digest_handler, echo_handler, free_port,
                     line_then_close_handler, never_connects, recv_all, recv_until, s_client,
                     server_ctx, tls_connect, wait_for)
from protocols import group, listener, listeners, tls_block


def conf(port, backend, tls="", extra="", backend_extra="", glob=""):
    return listener(port, backend, tls=tls, extra=extra, backend_extra=backend_extra, glob=glob)


def certs(pki, *pairs):
    return tls_block(pairs)


@pytest.fixture
def echo():
    srv = Server(echo_handler())
    yield srv
    srv.close()


def test_s_client_through_implicit_tls_to_plain_backend(daemon, pki):
    backend = Server(line_then_close_handler())
    port = free_port()
    d = daemon(conf(port, f"127.0.0.1:{backend.port}",
                    certs(pki, (pki.server_cert, pki.server_key))))
    r = s_client(port, ["-CAfile", str(pki.ca), "-verify_return_error", "-ign_eof",
                        "-servername", "localhost"], b"ping through the proxy\n")
    out = r.stdout.decode()
    assert "hello from the backend" in out, r.stderr.decode()
    assert "you said: ping through the proxy" in out
    assert "Verification: OK" in r.stderr.decode()
    line = d.wait_session()[0]
    assert "listener=front" in line and "upgraded=implicit" in line
    assert "tls=TLSv1.3" in line and f"backend=127.0.0.1:{backend.port}" in line
    assert "in=23 " in line
    assert bytes(backend.received) == b"ping through the proxy\n"
    backend.close()


def test_tls_backend_verified_by_ca_and_name(daemon, pki):
    backend = Server(echo_handler(), tls=server_ctx(pki.backend_cert, pki.backend_key))
    port = free_port()
    d = daemon(conf(port, f"localhost:{backend.port}", certs(pki, (pki.server_cert, pki.server_key)),
                    backend_extra=f'tls = "implicit"; ca = "{pki.ca}";'))
    with tls_connect(port, pki.ca) as c:
        assert recv_until(c, b"\n") == b"hello from the backend\n"
        c.sendall(b"over TLS twice\n")
        assert recv_until(c, b"twice\n") == b"over TLS twice\n"
    assert b"over TLS twice" in backend.received
    assert "end=client-closed" in d.wait_session()[0]
    backend.close()


def test_backend_with_wrong_certificate_never_gets_client_data(daemon, pki):
    backend = Server(echo_handler(), tls=server_ctx(pki.rogue_cert, pki.rogue_key))
    port = free_port()
    d = daemon(conf(port, f"127.0.0.1:{backend.port}", certs(pki, (pki.server_cert, pki.server_key)),
                    backend_extra=f'tls = "implicit"; ca = "{pki.ca}"; server_name = "backend.test";'))
    with tls_connect(port, pki.ca) as c:
        c.sendall(b"secret that must not cross\n")
        assert recv_all(c) == b""
    line = d.wait_session()[0]
    assert "end=backend-verify-failed" in line
    assert "unable to get local issuer certificate" in line
    assert backend.received == b""
    backend.close()


def test_backend_name_mismatch_is_refused(daemon, pki):
    backend = Server(echo_handler(), tls=server_ctx(pki.backend_cert, pki.backend_key))
    port = free_port()
    d = daemon(conf(port, f"127.0.0.1:{backend.port}", certs(pki, (pki.server_cert, pki.server_key)),
                    backend_extra=f'tls = "implicit"; ca = "{pki.ca}"; server_name = "mx.example";'))
    with tls_connect(port, pki.ca) as c:
        c.sendall(b"x")
        assert recv_all(c) == b""
    assert "hostname mismatch" in d.wait_session()[0]
    assert backend.received == b""
    backend.close()


def test_backend_pin(daemon, pki):
    backend = Server(echo_handler(), tls=server_ctx(pki.backend_cert, pki.backend_key))
    port = free_port()
    good, bad = pki.spki_pin(pki.backend_cert), pki.spki_pin(pki.rogue_cert)
    d = daemon(conf(port, f"127.0.0.1:{backend.port}", certs(pki, (pki.server_cert, pki.server_key)),
                    backend_extra=f'tls = "implicit"; ca = "{pki.ca}"; pin_sha256 = [ "{bad}" ];'))
    with tls_connect(port, pki.ca) as c:
        c.sendall(b"pinned data\n")
        assert recv_all(c) == b""
    line = d.wait_session()[0]
    assert "end=backend-verify-failed" in line and "matches no pin_sha256" in line
    assert good in line  # the log names the key it saw
    assert backend.received == b""
    # the right pin, with verify off: the pin alone is the check
    d.reload(conf(port, f"127.0.0.1:{backend.port}", certs(pki, (pki.server_cert, pki.server_key)),
                  backend_extra=f'tls = "implicit"; verify = false; pin_sha256 = [ "{bad}", "{good}" ];'))
    with tls_connect(port, pki.ca) as c:
        assert recv_until(c, b"\n") == b"hello from the backend\n"
    backend.close()


def test_sni_chooses_the_certificate(daemon, pki):
    backend = Server(echo_handler())
    port = free_port()
    daemon(conf(port, f"127.0.0.1:{backend.port}",
                certs(pki, (pki.server_cert, pki.server_key), (pki.alt_cert, pki.alt_key))))

    def subject(name):
        with tls_connect(port, pki.ca, server_name=name) as c:
            cert = c.getpeercert()
            return dict(x[0] for x in cert["subject"])["commonName"]

    assert subject("localhost") == "localhost"
    assert subject("alt.test") == "alt.test"
    assert subject("x.wild.test") == "alt.test"
    # an unknown name gets the default certificate (and so fails the name check)
    with pytest.raises(ssl.SSLCertVerificationError):
        subject("unknown.test")
    backend.close()


def test_encrypted_key_with_passphrase_file(daemon, pki, tmp_path, echo):
    port = free_port()
    tls = (f'tls = {{ certificates = ( {{ cert = "{pki.server_cert}"; key = "{pki.enc_key}"; '
           f'passphrase_file = "{pki.pass_file}"; }} ); }};')
    daemon(conf(port, f"127.0.0.1:{echo.port}", tls))
    with tls_connect(port, pki.ca) as c:
        assert recv_until(c, b"\n") == b"hello from the backend\n"


def test_encrypted_key_without_passphrase_fails_clearly(tmp_path, pki):
    cfg = tmp_path / "p.conf"
    cfg.write_text(conf(free_port(), "127.0.0.1:9",
                        f'tls = {{ certificates = ( {{ cert = "{pki.server_cert}"; key = "{pki.enc_key}"; }} ); }};'))
    r = subprocess.run([BIN, "-t", "-c", str(cfg)], capture_output=True, text=True)
    assert r.returncode == 1
    assert r.stdout == ""
    assert f"{cfg}:6: listeners.[0].tls.certificates.[0].key: {pki.enc_key} is encrypted" in r.stderr
    wrong = tmp_path / "wrong.pass"
    wrong.write_text("not it\n")
    cfg.write_text(conf(free_port(), "127.0.0.1:9",
                        f'tls = {{ certificates = ( {{ cert = "{pki.server_cert}"; key = "{pki.enc_key}"; '
                        f'passphrase_file = "{wrong}"; }} ); }};'))
    r = subprocess.run([BIN, "-t", "-c", str(cfg)], capture_output=True, text=True)
    assert r.returncode == 1
    assert f"passphrase_file: wrong passphrase for {pki.enc_key}" in r.stderr


def test_client_half_close_passes_on_as_shutdown(daemon, pki):
    """The client sends, then a close_notify; the backend sees EOF and can
    still answer, and the answer reaches the client."""
    backend = Server(digest_handler())
    port = free_port()
    d = daemon(conf(port, f"127.0.0.1:{backend.port}", certs(pki, (pki.server_cert, pki.server_key))))
    data = os.urandom(300000)
    import hashlib
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        t = MemTLS(raw, client_ctx(pki.ca), "localhost")
        t.handshake()
        t.send(data)
        t.close_notify()
        answer = b""
        while b"\n" not in answer:
            chunk = t.recv()
            if not chunk:
                break
            answer += chunk
    assert answer == f"{len(data)} {hashlib.sha256(data).hexdigest()}\n".encode()
    line = d.wait_session()[0]
    assert "end=client-closed" in line and f"in={len(data)} " in line
    backend.close()


def test_backend_half_close_reaches_client_while_client_still_sends(daemon, pki):
    """The backend half-closes first; the client gets a close_notify and
    can still send, and the backend still receives."""
    got = []

    def handler(conn, srv):
        conn.sendall(b"last words\n")
        conn.shutdown(socket.SHUT_WR)
        buf = b""
        while True:
            c = conn.recv(65536)
            if not c:
                break
            buf += c
        got.append(buf)

    backend = Server(handler)
    port = free_port()
    d = daemon(conf(port, f"127.0.0.1:{backend.port}", certs(pki, (pki.server_cert, pki.server_key))))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        t = MemTLS(raw, client_ctx(pki.ca), "localhost")
        t.handshake()
        text = b""
        while True:
            c = t.recv()
            if not c:
                break  # the close_notify
            text += c
        assert text == b"last words\n"
        t.send(b"after your EOF\n")
        t.close_notify()
        wait_for(lambda: got, 10, "the backend to see the client's EOF")
    assert got == [b"after your EOF\n"]
    assert "end=backend-closed" in d.wait_session()[0]
    backend.close()


def test_plain_relay_half_close(daemon):
    backend = Server(digest_handler())
    port = free_port()
    d = daemon(conf(port, f"127.0.0.1:{backend.port}", extra='client_tls = "none";'))
    import hashlib
    data = os.urandom(100000)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
        c.sendall(data)
        c.shutdown(socket.SHUT_WR)
        assert recv_all(c) == f"{len(data)} {hashlib.sha256(data).hexdigest()}\n".encode()
    assert "upgraded=none" in d.wait_session()[0]
    backend.close()


def _sample_peak(d, stop, peaks):
    while not stop.is_set():
        try:
            peaks.append(d.rss_kib("VmRSS"))
        except (FileNotFoundError, ProcessLookupError):
            return
        time.sleep(0.05)


@pytest.mark.parametrize("front", ["implicit", "starttls"])
def test_backpressure_slow_backend_bounds_memory(daemon, pki, front):
    """256 MiB from a fast client to a backend that reads slowly: the proxy
    stops reading instead of buffering, and every byte arrives in order.
    With implicit TLS, OpenSSL reads the socket; after STARTTLS (the line
    protocol), a TLS filter over the socket bufferevent and the proxy's own
    read-ahead under it, which must stop when the filter stops."""
    import threading
    from helpers import pattern
    total = 256 << 20
    blocks, digest = pattern(total)
    backend = Server(digest_handler(delay=0.001, chunk=65536))
    port = free_port()
    if front == "implicit":
        text = conf(port, f"127.0.0.1:{backend.port}", certs(pki, (pki.server_cert, pki.server_key)))
    else:
        text = conf(port, f"127.0.0.1:{backend.port}", certs(pki, (pki.server_cert, pki.server_key)),
                    extra='line = { reply = "OK"; };').replace('protocol = "tcp"', 'protocol = "line"')
    d = daemon(text, debug=False)
    rss0 = d.rss_kib()
    stop, peaks = threading.Event(), []
    sampler = threading.Thread(target=_sample_peak, args=(d, stop, peaks), daemon=True)
    sampler.start()
    t0 = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=120) as raw:
        if front == "starttls":
            raw.sendall(b"STARTTLS\r\n")
            assert recv_until(raw, b"\n") == b"OK\r\n"
        t = MemTLS(raw, client_ctx(pki.ca), "localhost")
        t.handshake()
        for b in blocks:
            t.send(b)
        t.close_notify()  # a TLS half-close: the proxy passes the EOF on
        answer = b""
        while b"\n" not in answer:
            chunk = t.recv()
            if not chunk:
                break
            answer += chunk
    elapsed = time.monotonic() - t0
    stop.set()
    sampler.join()
    hwm = d.rss_kib("VmHWM")
    assert answer.decode().split() == [str(total), digest]
    report = (f"backpressure client->backend ({front}): {total} bytes in {elapsed:.1f} s, "
              f"proxy RSS at start {rss0} KiB, peak {hwm} KiB (VmHWM), sampled max {max(peaks)} KiB")
    print(report)
    (ROOT / "tests" / "integration" / ".figures").mkdir(exist_ok=True)
    (ROOT / "tests" / "integration" / ".figures" / f"backpressure_c2b_{front}{SUFFIX}.txt").write_text(report + "\n")
    assert hwm < 64 * 1024, report
    backend.close()


def test_backpressure_slow_client_bounds_memory(daemon, pki):
    """The backend sends 128 MiB fast, the client reads slowly."""
    import hashlib
    from helpers import pattern
    total = 128 << 20
    blocks, digest = pattern(total)

    def handler(conn, srv):
        for b in blocks:
            conn.sendall(b)
        conn.shutdown(socket.SHUT_WR)
        conn.recv(1)

    backend = Server(handler)
    port = free_port()
    d = daemon(conf(port, f"127.0.0.1:{backend.port}", certs(pki, (pki.server_cert, pki.server_key))),
               debug=False)
    t0 = time.monotonic()
    h, n = hashlib.sha256(), 0
    with tls_connect(port, pki.ca, timeout=120) as c:
        while True:
            chunk = c.recv(65536)
            if not chunk:
                break
            h.update(chunk)
            n += len(chunk)
            if n >> 22 != (n - len(chunk)) >> 22:
                time.sleep(0.05)  # a slow reader: 50 ms every 4 MiB
    elapsed = time.monotonic() - t0
    hwm = d.rss_kib("VmHWM")
    report = f"backpressure backend->client: {n} bytes in {elapsed:.1f} s, proxy peak RSS {hwm} KiB"
    print(report)
    (ROOT / "tests" / "integration" / ".figures").mkdir(exist_ok=True)
    (ROOT / "tests" / "integration" / ".figures" / f"backpressure_b2c{SUFFIX}.txt").write_text(report + "\n")
    assert (n, h.hexdigest()) == (total, digest)
    assert hwm < 64 * 1024, report
    backend.close()


def test_idle_timeout(daemon, pki, echo):
    port = free_port()
    d = daemon(conf(port, f"127.0.0.1:{echo.port}", certs(pki, (pki.server_cert, pki.server_key)),
                    extra="timeouts = { idle = 1; };"))
    with tls_connect(port, pki.ca) as c:
        assert recv_until(c, b"\n") == b"hello from the backend\n"
        t0 = time.monotonic()
        assert recv_all(c, timeout=10) == b""
        assert 0.8 < time.monotonic() - t0 < 4
    line = d.wait_session()[0]
    assert "end=timeout-idle" in line and 'reason="no data either way for 1 s"' in line


def test_handshake_timeout(daemon, pki, echo):
    port = free_port()
    d = daemon(conf(port, f"127.0.0.1:{echo.port}", certs(pki, (pki.server_cert, pki.server_key)),
                    extra="timeouts = { handshake = 1; };"))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
        t0 = time.monotonic()
        assert c.recv(100) == b""
        assert 0.8 < time.monotonic() - t0 < 4
    line = d.wait_session()[0]
    assert "end=timeout-handshake" in line and "backend=-" in line
    assert echo.connections == 0


def test_handshake_failure_is_logged_in_words(daemon, pki, echo):
    port = free_port()
    d = daemon(conf(port, f"127.0.0.1:{echo.port}", certs(pki, (pki.server_cert, pki.server_key))))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
        c.sendall(b"GET / HTTP/1.0\r\n\r\n")
        recv_all(c)
    line = d.wait_session()[0]
    assert "end=handshake-failed" in line
    assert "plaintext from the client where a TLS ClientHello was expected" in line
    # a client that rejects our certificate
    r = s_client(port, ["-CAfile", str(pki.other_ca), "-verify_return_error"])
    assert r.returncode != 0
    line = d.wait_session(count=2)[1]
    assert "the client rejected our certificate" in line, line


def test_backend_unreachable(daemon, pki):
    port, dead = free_port(), free_port()
    d = daemon(conf(port, f"127.0.0.1:{dead}", certs(pki, (pki.server_cert, pki.server_key))))
    with tls_connect(port, pki.ca) as c:
        assert recv_all(c) == b""
    line = d.wait_session()[0]
    assert "end=backend-unreachable" in line and "Connection refused" in line


def test_backend_connect_timeout(daemon, pki):
    # a connect that never completes: the connect timeout must fire
    with never_connects() as bport:
        port = free_port()
        d = daemon(conf(port, f"127.0.0.1:{bport}",
                        certs(pki, (pki.server_cert, pki.server_key)),
                        extra="timeouts = { connect = 1; };"))
        with tls_connect(port, pki.ca) as c:
            t0 = time.monotonic()
            assert recv_all(c) == b""
            assert time.monotonic() - t0 < 5
        line = d.wait_session()[0]
        assert "end=backend-timeout" in line, line
        assert "no connection to the backend within 1 s" in line


def test_backend_by_name_unix_socket_and_ipv6(daemon, pki, tmp_path):
    path = str(tmp_path / "backend.sock")
    unix = Server(echo_handler(b"unix says hi\n"), path=path)
    v6 = Server(echo_handler(b"v6 says hi\n"), family=socket.AF_INET6, host="::1")
    named = Server(echo_handler(b"named says hi\n"))
    p1, p2, p3 = free_port(), free_port(socket.AF_INET6, "::1"), free_port()
    text = listeners(
        group(p1, f"unix:{path}", name="unix", client_tls="none"),
        group(f"[::1]:{p2}", f"[::1]:{v6.port}", name="v6", client_tls="none"),
        group([f"127.0.0.1:{p3}"], f"localhost:{named.port}", name="named", client_tls="none"))
    d = daemon(text)
    with socket.create_connection(("127.0.0.1", p1), timeout=5) as c:
        assert recv_until(c, b"\n") == b"unix says hi\n"
    with socket.create_connection(("::1", p2), timeout=5) as c:
        assert recv_until(c, b"\n") == b"v6 says hi\n"
    with socket.create_connection(("127.0.0.1", p3), timeout=5) as c:
        assert recv_until(c, b"\n") == b"named says hi\n"
    lines = d.wait_session(count=3)
    assert any(f"backend=unix:{path}" in l for l in lines)
    assert any(f"client=[::1]:" in l and f"backend=[::1]:{v6.port}" in l for l in lines)
    for s in (unix, v6, named):
        s.close()


def test_max_connections_per_listener(daemon, echo):
    port = free_port()
    d = daemon(conf(port, f"127.0.0.1:{echo.port}", extra='client_tls = "none"; max_connections = 2;'))
    a = socket.create_connection(("127.0.0.1", port), timeout=5)
    b = socket.create_connection(("127.0.0.1", port), timeout=5)
    assert recv_until(a, b"\n") and recv_until(b, b"\n")
    with socket.create_connection(("127.0.0.1", port), timeout=5) as c:
        assert recv_all(c) == b""  # refused: closed at once
    d.wait_log(r"refused 127\.0\.0\.1:\d+: the listener's max_connections \(2\) reached")
    a.sendall(b"still served\n")
    assert recv_until(a, b"served\n") == b"still served\n"
    a.close()
    d.wait_session()
    with socket.create_connection(("127.0.0.1", port), timeout=5) as c:
        assert recv_until(c, b"\n") == b"hello from the backend\n"
    b.close()


def test_max_connections_global(daemon, echo):
    port = free_port()
    d = daemon(conf(port, f"127.0.0.1:{echo.port}", extra='client_tls = "none";',
                    glob="max_connections = 1;"))
    a = socket.create_connection(("127.0.0.1", port), timeout=5)
    assert recv_until(a, b"\n")
    with socket.create_connection(("127.0.0.1", port), timeout=5) as c:
        assert recv_all(c) == b""
    d.wait_log(r"the global max_connections \(1\) reached")
    a.close()


def test_sighup_swaps_certificate_and_keeps_open_sessions(daemon, pki, tmp_path, echo):
    cert, key = tmp_path / "live.pem", tmp_path / "live.key"
    cert.write_bytes(pki.server_cert.read_bytes())
    key.write_bytes(pki.server_key.read_bytes())
    port = free_port()
    d = daemon(conf(port, f"127.0.0.1:{echo.port}", certs(pki, (cert, key))))
    old = tls_connect(port, pki.ca)
    assert recv_until(old, b"\n") == b"hello from the backend\n"
    cert.write_bytes(pki.alt_cert.read_bytes())
    key.write_bytes(pki.alt_key.read_bytes())
    d.reload()
    assert "reloaded" in d.log()
    with tls_connect(port, pki.ca, server_name="alt.test") as c:
        assert dict(x[0] for x in c.getpeercert()["subject"])["commonName"] == "alt.test"
    old.sendall(b"the old session still flows\n")
    assert recv_until(old, b"flows\n") == b"the old session still flows\n"
    assert dict(x[0] for x in old.getpeercert()["subject"])["commonName"] == "localhost"
    old.close()


def test_broken_reload_keeps_running_configuration(daemon, pki, echo):
    port = free_port()
    good = conf(port, f"127.0.0.1:{echo.port}", certs(pki, (pki.server_cert, pki.server_key)))
    d = daemon(good)
    d.reload(good.replace('protocol = "tcp"', 'protocol = "tcpp"'))
    assert 'unknown protocol "tcpp"' in d.log()
    assert "reload of" in d.log() and "failed: the running configuration is kept" in d.log()
    with tls_connect(port, pki.ca) as c:
        assert recv_until(c, b"\n") == b"hello from the backend\n"
    # a reload that cannot bind keeps everything too
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen(1)
    bport = busy.getsockname()[1]
    d.reload(good.replace(f'listen = "127.0.0.1:{port}"', f'listen = [ "127.0.0.1:{port}", "127.0.0.1:{bport}" ]'))
    assert f"cannot listen on 127.0.0.1:{bport}" in d.log()
    with tls_connect(port, pki.ca) as c:
        assert recv_until(c, b"\n") == b"hello from the backend\n"
    busy.close()


def test_reload_adds_and_removes_listeners(daemon, echo):
    p1, p2 = free_port(), free_port()
    one = conf(p1, f"127.0.0.1:{echo.port}", extra='client_tls = "none";')
    d = daemon(one)
    d.reload(one.replace(f'listen = "127.0.0.1:{p1}"', f'listen = "127.0.0.1:{p2}"'))
    with socket.create_connection(("127.0.0.1", p2), timeout=5) as c:
        assert recv_until(c, b"\n")
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", p1), timeout=5)


def test_sigterm_lets_open_sessions_finish(daemon, pki, echo):
    port = free_port()
    d = daemon(conf(port, f"127.0.0.1:{echo.port}", certs(pki, (pki.server_cert, pki.server_key))))
    c = tls_connect(port, pki.ca)
    assert recv_until(c, b"\n")
    d.send_signal(signal.SIGTERM)
    d.wait_log("shutting down")
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=5)
    c.sendall(b"still here\n")
    assert recv_until(c, b"here\n") == b"still here\n"
    assert d.proc.poll() is None
    c.close()
    assert d.proc.wait(10) == 0
    assert "end=client-closed" in d.session_lines()[0]


def test_sigterm_closes_sessions_after_shutdown_timeout(daemon, pki, echo):
    port = free_port()
    d = daemon(conf(port, f"127.0.0.1:{echo.port}", certs(pki, (pki.server_cert, pki.server_key)),
                    glob="shutdown_timeout = 1;"))
    c = tls_connect(port, pki.ca)
    assert recv_until(c, b"\n")
    t0 = time.monotonic()
    d.send_signal(signal.SIGTERM)
    assert d.proc.wait(10) == 0
    assert 0.8 < time.monotonic() - t0 < 5
    assert "end=shutdown" in d.session_lines()[0]
    assert recv_all(c) == b""
    c.close()


def test_client_certificate_required(daemon, pki, echo):
    port = free_port()
    tls = (f'tls = {{ certificates = ( {{ cert = "{pki.server_cert}"; key = "{pki.server_key}"; }} ); '
           f'client_ca = "{pki.ca}"; verify_client = "require"; }};')
    d = daemon(conf(port, f"127.0.0.1:{echo.port}", tls))
    with tls_connect(port, pki.ca, cert=pki.client_cert, key=pki.client_key) as c:
        assert recv_until(c, b"\n") == b"hello from the backend\n"
    with pytest.raises((ssl.SSLError, ConnectionError)):
        with tls_connect(port, pki.ca) as c:
            c.sendall(b"x")
            c.recv(10)
    lines = [l for l in d.wait_session(count=2) if "end=handshake-failed" in l]
    assert len(lines) == 1 and "sent no certificate" in lines[0], d.session_lines()


def test_min_version_tls13(daemon, pki, echo):
    port = free_port()
    tls = (f'tls = {{ certificates = ( {{ cert = "{pki.server_cert}"; key = "{pki.server_key}"; }} ); '
           f'min_version = "TLSv1.3"; }};')
    d = daemon(conf(port, f"127.0.0.1:{echo.port}", tls))
    ctx = client_ctx(pki.ca)
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    with pytest.raises(ssl.SSLError):
        with ctx.wrap_socket(socket.create_connection(("127.0.0.1", port)), server_hostname="localhost"):
            pass
    assert "offered no TLS version we accept" in d.wait_session()[0]


def test_self_signed_default_certificate(daemon, echo):
    port = free_port()
    d = daemon(conf(port, f"127.0.0.1:{echo.port}"))
    fp = d.wait_log(r"self-signed certificate made at start-up, SHA-256 fingerprint ([0-9A-F:]{95})")[0]
    with tls_connect(port) as c:
        der = c.getpeercert(binary_form=True)
        assert recv_until(c, b"\n") == b"hello from the backend\n"
    import hashlib
    assert ":".join(f"{b:02X}" for b in hashlib.sha256(der).digest()) == fp


# The command line


def test_test_flag_on_good_and_broken_configurations(tmp_path, pki):
    good = tmp_path / "good.conf"
    good.write_text(conf(free_port(), "127.0.0.1:25", certs(pki, (pki.server_cert, pki.server_key))))
    r = subprocess.run([BIN, "-t", "-c", str(good)], capture_output=True, text=True)
    assert (r.returncode, r.stdout, r.stderr) == (0, "configuration OK\n", "")
    bad = tmp_path / "bad.conf"
    bad.write_text('listeners = (\n  { name = "x"; listen = "127.0.0.1:25";\n'
                   '    protocol = "smpt";\n    backend = { address = "127.0.0.1:25"; }; }\n);\n')
    r = subprocess.run([BIN, "--test", "--config", str(bad)], capture_output=True, text=True)
    assert r.returncode == 1 and r.stdout == ""
    assert r.stderr.startswith(f'{bad}:3: listeners.[0].protocol: unknown protocol "smpt" (expected one of ')
    missing = tmp_path / "nope.pem"
    bad.write_text(conf(free_port(), "127.0.0.1:25", certs(pki, (missing, pki.server_key))))
    r = subprocess.run([BIN, "-t", "-c", str(bad)], capture_output=True, text=True)
    assert r.returncode == 1
    assert f"listeners.[0].tls.certificates.[0].cert: cannot read {missing}: No such file or directory" in r.stderr
    r = subprocess.run([BIN, "-t", "-c", str(tmp_path / "absent.conf")], capture_output=True, text=True)
    assert r.returncode == 1 and "absent.conf: cannot read the file" in r.stderr


def test_shipped_example_configuration_is_valid():
    r = subprocess.run([BIN, "-t", "-c", str(ROOT / "etc" / "starttls-proxy.conf")],
                       capture_output=True, text=True)
    assert (r.returncode, r.stdout) == (0, "configuration OK\n"), r.stderr


def test_version_help_and_usage_errors():
    r = subprocess.run([BIN, "-V"], capture_output=True, text=True)
    assert r.returncode == 0
    assert r.stdout.startswith("starttls-proxy ")
    assert "libevent 2.1" in r.stdout and "OpenSSL 3" in r.stdout and "libconfig 1." in r.stdout
    r = subprocess.run([BIN, "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "usage: starttls-proxy [-fdtVh]" in r.stdout
    r = subprocess.run([BIN, "-x"], capture_output=True, text=True)
    assert r.returncode == 2 and "usage:" in r.stderr
    r = subprocess.run([BIN, "extra"], capture_output=True, text=True)
    assert r.returncode == 2


def test_daemonizes_writes_pidfile_and_drops_privileges(tmp_path, echo):
    if os.geteuid() != 0:
        pytest.skip("needs root to drop privileges")
    port = free_port()
    cfg = tmp_path / "d.conf"
    pidfile = tmp_path / "proxy.pid"
    cfg.write_text(conf(port, f"127.0.0.1:{echo.port}", extra='client_tls = "none";',
                        glob='log_target = "syslog";'))
    r = subprocess.run([BIN, "-c", str(cfg), "-p", str(pidfile), "-u", "nobody"],
                       capture_output=True, text=True, timeout=10)
    assert r.returncode == 0, r.stderr
    wait_for(lambda: pidfile.exists() and pidfile.read_text().strip(), 5, "the pid file")
    pid = int(pidfile.read_text())
    try:
        with open(f"/proc/{pid}/status") as f:
            uid_line = [l for l in f if l.startswith("Uid:")][0]
        nobody = int(subprocess.run(["id", "-u", "nobody"], capture_output=True, text=True).stdout)
        assert uid_line.split()[1:] == [str(nobody)] * 4
        with socket.create_connection(("127.0.0.1", port), timeout=5) as c:
            assert recv_until(c, b"\n") == b"hello from the backend\n"
    finally:
        os.kill(pid, signal.SIGTERM)
    wait_for(lambda: not os.path.exists(f"/proc/{pid}"), 10, "the daemon to exit")


def _cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_descriptor_exhaustion_pauses_accepting_without_spinning(daemon, tmp_path, echo):
    """With a low descriptor limit, accept() fails with EMFILE: open sessions
    go on, the log says so at most once a second, the loop does not spin,
    and accepting resumes when descriptors free up."""
    import resource
    port = free_port()
    d = daemon(conf(port, f"127.0.0.1:{echo.port}", extra='client_tls = "none";'), start=False,
               debug=False)
    d.logf = open(d.logpath, "ab")
    d.proc = subprocess.Popen(
        [BIN, "-f", "-c", str(d.conf)], stdout=d.logf, stderr=subprocess.STDOUT,
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (48, 48)))
    wait_for(lambda: "started" in d.log(), 10, "the daemon to start")
    first = socket.create_connection(("127.0.0.1", port), timeout=5)
    assert recv_until(first, b"\n") == b"hello from the backend\n"
    clients = []
    for _ in range(40):  # more than the descriptors allow: 2 per session
        clients.append(socket.create_connection(("127.0.0.1", port), timeout=5))
    d.wait_log("cannot accept: Too many open files")
    cpu0, t0 = _cpu_seconds(d.pid), time.monotonic()
    time.sleep(2)
    cpu = (_cpu_seconds(d.pid) - cpu0) / (time.monotonic() - t0)
    assert cpu < 0.2, f"the daemon used {cpu:.0%} of a CPU while out of descriptors"
    warnings = d.log().count("cannot accept")
    assert warnings <= 4, d.log()
    first.sendall(b"still served\n")
    assert recv_until(first, b"served\n") == b"still served\n"
    for c in clients:
        c.close()
    first.close()
    wait_for(lambda: d.open_fds() < 20, 10, "descriptors to free up")
    with socket.create_connection(("127.0.0.1", port), timeout=5) as c:
        assert recv_until(c, b"\n") == b"hello from the backend\n"
