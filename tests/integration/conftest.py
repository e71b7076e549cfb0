"""Fixtures for the integration tests: certificates made with the openssl
command, the real daemon started on loopback, and small real servers.

Every test gets its own directory (pytest's tmp_path) for its configuration
and log; the log is printed only when the test fails.
"""
import os
import pathlib
import re
import signal
import socket
import subprocess
import time

import pytest

from helpers import free_port, wait_for

ROOT = pathlib.Path(__file__).resolve().parents[2]
BIN = os.environ.get("STP_BIN", str(ROOT / "build" / "starttls-proxy"))


def run(*args, **kw):
    return subprocess.run(args, check=True, capture_output=True, **kw)


class PKI:
    """A CA, server certificates for several names, and odd keys."""

    def __init__(self, d):
        self.d = d
        d.mkdir(parents=True, exist_ok=True)
        self.ca_key, self.ca = self._ca("ca", "starttls-proxy test CA")
        self.other_ca_key, self.other_ca = self._ca("otherca", "another CA")
        self.server_cert, self.server_key = self.leaf("server", "localhost",
                                                       ["DNS:localhost", "IP:127.0.0.1", "IP:::1"])
        self.alt_cert, self.alt_key = self.leaf("alt", "alt.test", ["DNS:alt.test", "DNS:*.wild.test"])
        self.backend_cert, self.backend_key = self.leaf("backend", "backend.test",
                                                         ["DNS:backend.test", "DNS:localhost", "IP:127.0.0.1"])
        self.rogue_cert, self.rogue_key = self.leaf("rogue", "backend.test",
                                                     ["DNS:backend.test", "DNS:localhost", "IP:127.0.0.1"],
                                                     ca=(self.other_ca, self.other_ca_key))
        self.client_cert, self.client_key = self.leaf("client", "client.test", ["DNS:client.test"],
                                                       usage="clientAuth")
        # an encrypted PKCS#8 key for the server certificate
        self.passphrase = "correct horse battery staple"
        self.pass_file = d / "server.pass"
        self.pass_file.write_text(self.passphrase + "\n")
        self.enc_key = d / "server.enc.key"
        run("openssl", "pkcs8", "-topk8", "-v2", "aes-256-cbc", "-in", str(self.server_key),
            "-out", str(self.enc_key), "-passout", "pass:" + self.passphrase)

    def _ca(self, name, cn):
        key, cert = self.d / f"{name}.key", self.d / f"{name}.pem"
        run("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
            "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", f"/CN={cn}",
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign")
        return key, cert

    def leaf(self, name, cn, sans, ca=None, usage="serverAuth"):
        ca_cert, ca_key = ca or (self.ca, self.ca_key)
        key, csr, cert = self.d / f"{name}.key", self.d / f"{name}.csr", self.d / f"{name}.pem"
        ext = self.d / f"{name}.ext"
        ext.write_text("subjectAltName=%s\nextendedKeyUsage=%s\nbasicConstraints=CA:FALSE\n"
                       % (",".join(sans), usage))
        run("openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", str(key), "-out", str(csr), "-subj", f"/CN={cn}")
        run("openssl", "x509", "-req", "-in", str(csr), "-CA", str(ca_cert), "-CAkey", str(ca_key),
            "-CAcreateserial", "-out", str(cert), "-days", "2", "-extfile", str(ext))
        return cert, key

    def spki_pin(self, cert):
        pub = run("openssl", "x509", "-in", str(cert), "-pubkey", "-noout").stdout
        der = run("openssl", "pkey", "-pubin", "-outform", "DER", input=pub).stdout
        import base64
        import hashlib
        return base64.b64encode(hashlib.sha256(der).digest()).decode()


@pytest.fixture(scope="session")
def pki(tmp_path_factory):
    return PKI(tmp_path_factory.mktemp("pki"))


class Daemon:
    """The real starttls-proxy, in the foreground, logging to a file."""

    def __init__(self, d, conf_text, args=(), debug=True, prefix=()):
        self.d = d
        self.conf = d / "proxy.conf"
        self.conf.write_text(conf_text)
        self.logpath = d / "proxy.log"
        self.args = list(args)
        self.debug = debug
        self.prefix = list(prefix)
        self.proc = None

    def start(self, wait=True):
        self.logf = open(self.logpath, "ab")
        argv = self.prefix + [BIN, "-d" if self.debug else "-f", "-c", str(self.conf)] + self.args
        self.proc = subprocess.Popen(argv, stdout=self.logf, stderr=subprocess.STDOUT)
        if wait:
            wait_for(lambda: "started" in self.log() or self.proc.poll() is not None, 60,
                     "the daemon to start")
            if self.proc.poll() is not None:
                raise AssertionError("daemon exited at start-up:\n" + self.log())
        return self

    @property
    def pid(self):
        return self.proc.pid

    def log(self):
        try:
            return self.logpath.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def wait_log(self, pattern, timeout=10, count=1):
        rx = re.compile(pattern)
        wait_for(lambda: len(rx.findall(self.log())) >= count, timeout,
                 f"log line /{pattern}/ x{count}")
        return rx.findall(self.log())

    def session_lines(self):
        return [l for l in self.log().splitlines() if " session listener=" in l]

    def wait_session(self, timeout=10, count=1):
        wait_for(lambda: len(self.session_lines()) >= count, timeout, f"{count} session line(s)")
        return self.session_lines()

    def send_signal(self, sig):
        self.proc.send_signal(sig)

    def reload(self, conf_text=None):
        """SIGHUP, and wait until the daemon says how the reload went."""
        if conf_text is not None:
            self.conf.write_text(conf_text)
        start = len(self.log())
        self.send_signal(signal.SIGHUP)
        wait_for(lambda: "reloaded " in self.log()[start:] or
                 "the running configuration is kept" in self.log()[start:], 10, "the reload")
        return self.log()[start:]

    def rss_kib(self, field="VmRSS"):
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
        return 0

    def open_fds(self):
        return len(os.listdir(f"/proc/{self.pid}/fd"))

    def stop(self, sig=signal.SIGTERM, timeout=15):
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def daemon(tmp_path, request):
    """daemon(conf_text) starts the proxy; it is stopped after the test."""
    started = []

    def make(conf_text, args=(), start=True, debug=True, prefix=()):
        d = Daemon(tmp_path, conf_text, args, debug, prefix)
        started.append(d)
        return d.start() if start else d

    yield make
    for d in started:
        rc = d.stop()
        failed = getattr(request.node, "rep_call", None)
        if failed is not None and failed.failed:
            print(f"---- daemon log (exit {rc}) ----\n{d.log()}")
        # the daemon must never die of anything but our signal
        assert rc in (0, None), f"daemon exited {rc}:\n{d.log()[-4000:]}"
        assert "AddressSanitizer" not in d.log() and "runtime error" not in d.log(), d.log()


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)
