"""Small real peers for the integration tests: servers in threads, TLS
clients, and bounded waiting.  Loopback only; every loop has a deadline."""
import contextlib
import hashlib
import socket
import ssl
import subprocess
import threading
import time


@contextlib.contextmanager
def never_connects():
    """The port of a listening socket whose accept queue is full: the
    kernel drops further SYNs, so a connect to it never completes (for
    connect timeouts).  Closed on leaving the with block."""
    full = socket.socket()
    fillers = []
    try:
        full.bind(("127.0.0.1", 0))
        full.listen(0)
        for _ in range(4):
            f = socket.socket()
            fillers.append(f)
            f.setblocking(False)
            f.connect_ex(full.getsockname())
        time.sleep(0.2)
        yield full.getsockname()[1]
    finally:
        for f in fillers:
            f.close()
        full.close()


def backend_starttls(pki, server_name="backend.test"):
    """The backend block's settings for the proxy's own STARTTLS towards
    a test backend that has pki's backend certificate."""
    return f'tls = "starttls"; ca = "{pki.ca}"; server_name = "{server_name}";'


def free_port(family=socket.AF_INET, host="127.0.0.1"):
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def wait_for(cond, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.02)
    if cond():
        return
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


class Server:
    """A TCP (or TLS, or unix) server whose connections are handled by
    handler(conn, server) in threads.  It records what it saw."""

    def __init__(self, handler, tls=None, family=socket.AF_INET, host="127.0.0.1", path=None):
        self.handler = handler
        self.tls = tls
        self.received = bytearray()
        self.connections = 0
        self.errors = []
        self.lock = threading.Lock()
        if path is not None:
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.bind(path)
            self.port = None
        else:
            self.sock = socket.socket(family, socket.SOCK_STREAM)
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self.sock.bind((host, 0))
            self.port = self.sock.getsockname()[1]
        self.sock.listen(256)
        self.sock.settimeout(0.2)
        self.stopping = False
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def _loop(self):
        while not self.stopping:
            try:
                conn, _ = self.sock.accept()
            except (socket.timeout, OSError):
                continue
            with self.lock:
                self.connections += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn):
        conn.settimeout(60)
        try:
            if self.tls is not None:
                conn = self.tls.wrap_socket(conn, server_side=True)
            self.handler(conn, self)
        except Exception as e:  # recorded, so that a test can see it
            self.errors.append(repr(e))
        finally:
            try:
                conn.close()
            except OSError:
                pass

    def record(self, data):
        with self.lock:
            self.received += data

    def close(self):
        self.stopping = True
        self.thread.join(2)
        self.sock.close()

    stop = close  # the name the other test backends use


def record_handler(conn, srv):
    """Reads and records until EOF, and never writes."""
    while True:
        d = conn.recv(65536)
        if not d:
            return
        srv.record(d)


def echo_handler(banner=b"hello from the backend\n"):
    """Sends a banner, then echoes until EOF, then half-closes."""
    def handler(conn, srv):
        if banner:
            conn.sendall(banner)
        while True:
            d = conn.recv(65536)
            if not d:
                break
            srv.record(d)
            conn.sendall(d)
        if isinstance(conn, ssl.SSLSocket):
            conn = conn.unwrap()
        conn.shutdown(socket.SHUT_WR)
    return handler


def line_then_close_handler(banner=b"hello from the backend\n"):
    """Sends a banner, answers one line with "you said: ...", then closes."""
    def handler(conn, srv):
        conn.sendall(banner)
        buf = b""
        while b"\n" not in buf:
            d = conn.recv(4096)
            if not d:
                return
            buf += d
        srv.record(buf)
        conn.sendall(b"you said: " + buf)
    return handler


def digest_handler(delay=0.0, chunk=65536):
    """Reads to EOF (slowly with delay), then answers '<count> <sha256>\\n'."""
    def handler(conn, srv):
        h, n = hashlib.sha256(), 0
        while True:
            d = conn.recv(chunk)
            if not d:
                break
            h.update(d)
            n += len(d)
            if delay:
                time.sleep(delay)
        srv.record(f"{n} {h.hexdigest()}".encode())
        conn.sendall(f"{n} {h.hexdigest()}\n".encode())
    return handler


def pattern(total, block=1 << 20):
    """total bytes of a deterministic pattern, as blocks, and its digest."""
    import random
    rnd = random.Random(42)
    base = bytes(rnd.getrandbits(8) for _ in range(4096)) * (block // 4096)
    h = hashlib.sha256()
    blocks = []
    sent = 0
    i = 0
    while sent < total:
        b = (i.to_bytes(8, "big") + base)[:min(block, total - sent)]
        blocks.append(b)
        h.update(b)
        sent += len(b)
        i += 1
    return blocks, h.hexdigest()


def client_ctx(ca=None, cert=None, key=None):
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(ca) if ca else None)
    if ca is None:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if cert:
        ctx.load_cert_chain(str(cert), str(key))
    return ctx


def server_ctx(cert, key):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(cert), str(key))
    return ctx


def tls_connect(port, ca=None, server_name="localhost", host="127.0.0.1", timeout=10, **kw):
    raw = socket.create_connection((host, port), timeout=timeout)
    return client_ctx(ca, **kw).wrap_socket(raw, server_hostname=server_name)


def recv_until(sock, token, timeout=10, limit=1 << 20):
    sock.settimeout(timeout)
    buf = b""
    while token not in buf and len(buf) < limit:
        d = sock.recv(65536)
        if not d:
            break
        buf += d
    return buf


def recv_all(sock, timeout=10):
    sock.settimeout(timeout)
    buf = b""
    while True:
        try:
            d = sock.recv(65536)
        except ssl.SSLZeroReturnError:
            break
        if not d:
            break
        buf += d
    return buf


class MemTLS:
    """A TLS client over a plain socket through memory BIOs, so that it can
    send a close_notify and go on reading: a TLS half-close."""

    def __init__(self, sock, ctx, server_name):
        self.sock = sock
        self.inc, self.out = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.obj = ctx.wrap_bio(self.inc, self.out, server_hostname=server_name)

    def _flush(self):
        d = self.out.read()
        if d:
            self.sock.sendall(d)

    def _fill(self):
        d = self.sock.recv(65536)
        if d:
            self.inc.write(d)
        else:
            self.inc.write_eof()
        return d

    def handshake(self):
        while True:
            try:
                self.obj.do_handshake()
                self._flush()
                return
            except ssl.SSLWantReadError:
                self._flush()
                if not self._fill():
                    raise ConnectionError("EOF during handshake")

    def send(self, data):
        self.obj.write(data)
        self._flush()

    def recv(self):
        while True:
            try:
                return self.obj.read(65536)
            except ssl.SSLWantReadError:
                self._flush()
                if not self._fill():
                    return b""
            except ssl.SSLZeroReturnError:
                return b""

    def close_notify(self):
        try:
            self.obj.unwrap()
        except ssl.SSLWantReadError:
            pass
        self._flush()


def s_client(port, args=(), data=b"", timeout=20):
    """openssl s_client; returns the CompletedProcess (stdout and stderr as text)."""
    argv = ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-brief"] + list(args)
    return subprocess.run(argv, input=data, capture_output=True, timeout=timeout)


PROXY_V2_SIG = b"\r\n\r\n\x00\r\nQUIT\n"


def proxy_v2(src, dst=("127.0.0.1", 0)):
    """A PROXY protocol v2 PROXY header (TCP over IPv4 or IPv6, by the
    source address) saying that src (host, port) connected to dst, as a
    balancer puts it before the client's first byte."""
    import ipaddress
    import struct
    s, d = ipaddress.ip_address(src[0]), ipaddress.ip_address(dst[0])
    if s.version == 4:
        d4 = d if d.version == 4 else ipaddress.ip_address("127.0.0.1")
        body = s.packed + d4.packed + struct.pack("!HH", src[1], dst[1])
        fam = 0x11
    else:
        d6 = d if d.version == 6 else ipaddress.ip_address("::1")
        body = s.packed + d6.packed + struct.pack("!HH", src[1], dst[1])
        fam = 0x21
    return PROXY_V2_SIG + bytes([0x21, fam]) + struct.pack("!H", len(body)) + body


def connect_from(port, source, host="127.0.0.1", timeout=10):
    """A TCP connection to host:port from the loopback address source."""
    return socket.create_connection((host, port), timeout=timeout, source_address=(source, 0))
