"""A real LDAP server for the tests: OpenLDAP's slapd (Debian's slapd
package) run as an ordinary child process on loopback, with a throwaway
mdb database, one user, and a stats log that records every operation it
received, so that a test can assert what slapd did (or never did) see.

    with Slapd(tmp_path) as ldap:
        ...                      # ldap.url, ldap.user_dn, ldap.user_pw
        assert ldap.user_dn not in ldap.binds()

The system slapd service and its configuration are never used: the
configuration (slapd.conf style), database, pid file and log all live in a
fresh directory under tmpdir.  Every wait has a deadline.
"""
import base64
import collections
import hashlib
import os
import pathlib
import re
import signal
import socket
import subprocess
import tempfile
import time

import pytest

from helpers import free_port

SLAPD = os.environ.get("STP_SLAPD", "/usr/sbin/slapd")
SLAPADD = os.environ.get("STP_SLAPADD", "/usr/sbin/slapadd")
SCHEMA_DIR = "/etc/ldap/schema"
MODULE_DIR = "/usr/lib/ldap"

STARTTLS_OID = "1.3.6.1.4.1.1466.20037"
WHOAMI_OID = "1.3.6.1.4.1.4203.1.11.3"

# "conn=1000 op=0 BIND dn="uid=alice,..." method=128" and the like; the
# debug output of slapd 2.5 puts a hex timestamp and thread id in front.
_OP_RE = re.compile(r"\bconn=(\d+) op=(\d+) "
                    r"(BIND|SRCH|EXT|UNBIND|ADD|DEL|MOD|MODRDN|CMP|ABANDON|PASSMOD|WHOAMI)\b(.*)$")
_BIND_RE = re.compile(r'\bconn=\d+ op=\d+ BIND dn="((?:[^"\\]|\\.)*)" method=(\d+)')
_BIND_OK_RE = re.compile(r'\bconn=\d+ op=\d+ BIND dn="((?:[^"\\]|\\.)*)" mech=SIMPLE '
                         r'bind_ssf=\d+ ssf=(\d+)')
_ACCEPT_RE = re.compile(r"\bconn=(\d+) fd=\d+ ACCEPT from IP=([^ ]+) ")
_CONN_RE = re.compile(r"\bconn=(\d+) ")


Op = collections.namedtuple("Op", "conn op verb text details")


def ssha(password, salt=None):
    """An RFC 2307 {SSHA} userPassword value, as slappasswd would make it."""
    salt = os.urandom(8) if salt is None else salt
    digest = hashlib.sha1(password.encode() + salt).digest()
    return "{SSHA}" + base64.b64encode(digest + salt).decode()


def _ber_len(n):
    if n < 0x80:
        return bytes([n])
    b = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(b)]) + b


def _tlv(tag, value):
    return bytes([tag]) + _ber_len(len(value)) + value


def _probe_request(base, msgid=1):
    """An anonymous (bind-less) base-scope search for base, as BER."""
    req = (_tlv(0x04, base.encode()) + _tlv(0x0A, b"\x00") + _tlv(0x0A, b"\x00")
           + _tlv(0x02, b"\x00") + _tlv(0x02, b"\x00") + _tlv(0x01, b"\x00")
           + _tlv(0x87, b"objectClass") + _tlv(0x30, b""))
    return _tlv(0x30, _tlv(0x02, bytes([msgid])) + _tlv(0x63, req))


def _read_tlv(sock, buf):
    """Reads one whole BER element from sock (buf holds bytes already
    read); returns (tag, value, rest)."""
    def need(n):
        nonlocal buf
        while len(buf) < n:
            d = sock.recv(65536)
            if not d:
                raise ConnectionError("slapd closed the connection")
            buf += d
    need(2)
    tag, first = buf[0], buf[1]
    if first < 0x80:
        hdr, length = 2, first
    else:
        k = first & 0x7F
        need(2 + k)
        hdr, length = 2 + k, int.from_bytes(buf[2:2 + k], "big")
    need(hdr + length)
    return tag, buf[hdr:hdr + length], buf[hdr + length:]


def _parse_elems(data):
    out = []
    while data:
        tag, first = data[0], data[1]
        if first < 0x80:
            hdr, length = 2, first
        else:
            k = first & 0x7F
            hdr, length = 2 + k, int.from_bytes(data[2:2 + k], "big")
        out.append((tag, data[hdr:hdr + length]))
        data = data[hdr + length:]
    return out


class SlapdError(RuntimeError):
    pass


class Slapd:
    """slapd on 127.0.0.1:port, suffix dc=example,dc=org, with
    rootdn cn=admin,dc=example,dc=org / adminpw and one user,
    uid=alice,ou=people,dc=example,dc=org / alicepw (inetOrgPerson,
    cn Alice, sn Example, mail alice@example.org).

    tls=(cert, key, ca) also configures TLS: StartTLS on the ldap://
    listener and, with ldaps=True, an ldaps:// listener on ldaps_port.

    The stats log (slapd -d 256 on stderr) is in logpath; log(), ops(),
    verbs(), binds() and connections() read it.  The connections of the
    readiness probe are left out of all of them except log(all=True)."""

    base = "dc=example,dc=org"
    admin_dn = "cn=admin,dc=example,dc=org"
    admin_pw = "adminpw"
    user_dn = "uid=alice,ou=people,dc=example,dc=org"
    user_pw = "alicepw"
    user_uid = "alice"
    user_mail = "alice@example.org"

    def __init__(self, tmpdir, tls=None, ldaps=False, debug=256, timeout=10.0):
        self.tls = tuple(str(p) for p in tls) if tls else None
        if ldaps and not self.tls:
            raise ValueError("ldaps=True needs tls=(cert, key, ca)")
        self.debug = debug
        self.proc = None
        self._logf = None
        self._probe_conns = set()
        root = pathlib.Path(str(tmpdir))
        root.mkdir(parents=True, exist_ok=True)
        self.dir = pathlib.Path(tempfile.mkdtemp(prefix="slapd-", dir=str(root)))
        self.dbdir = self.dir / "db"
        self.dbdir.mkdir()
        self.confpath = self.dir / "slapd.conf"
        self.ldifpath = self.dir / "data.ldif"
        self.logpath = self.dir / "slapd.log"
        self.confpath.write_text(self._config())
        self.ldifpath.write_text(self._ldif())
        self._slapadd()
        # free_port() can race with other processes: try a few ports.
        last = None
        for _ in range(3):
            self.port = free_port()
            self.ldaps_port = free_port() if ldaps else None
            self.url = f"ldap://127.0.0.1:{self.port}"
            self.ldaps_url = f"ldaps://127.0.0.1:{self.ldaps_port}" if ldaps else None
            try:
                self._start(timeout)
                return
            except SlapdError as e:
                last = e
                if "Address already in use" not in self.log(all=True):
                    break
        raise last

    # -- setting up ---------------------------------------------------------

    def _config(self):
        lines = [
            "# generated by tests/integration/slapd_backend.py",
            f"include {SCHEMA_DIR}/core.schema",
            f"include {SCHEMA_DIR}/cosine.schema",
            f"include {SCHEMA_DIR}/inetorgperson.schema",
            f"modulepath {MODULE_DIR}",
            "moduleload back_mdb",
            f"pidfile {self.dir / 'slapd.pid'}",
            f"argsfile {self.dir / 'slapd.args'}",
            "sizelimit 500",
            "threads 4",
        ]
        if self.tls:
            cert, key, ca = self.tls
            lines += [f"TLSCertificateFile {cert}",
                      f"TLSCertificateKeyFile {key}",
                      f"TLSCACertificateFile {ca}",
                      "TLSVerifyClient never"]
        lines += [
            "",
            "database mdb",
            "maxsize 16777216",
            f'suffix "{self.base}"',
            f'rootdn "{self.admin_dn}"',
            f"rootpw {self.admin_pw}",
            f"directory {self.dbdir}",
            "index objectClass eq",
            "index uid eq",
            # users can bind; everybody (anonymous too) can read the rest
            "access to attrs=userPassword",
            "  by self write",
            "  by anonymous auth",
            "  by * none",
            "access to *",
            "  by * read",
            "",
        ]
        return "\n".join(lines)

    def _ldif(self):
        return "\n".join([
            f"dn: {self.base}",
            "objectClass: top",
            "objectClass: dcObject",
            "objectClass: organization",
            "dc: example",
            "o: Example",
            "",
            "dn: ou=people,dc=example,dc=org",
            "objectClass: top",
            "objectClass: organizationalUnit",
            "ou: people",
            "",
            f"dn: {self.user_dn}",
            "objectClass: top",
            "objectClass: person",
            "objectClass: organizationalPerson",
            "objectClass: inetOrgPerson",
            f"uid: {self.user_uid}",
            "cn: Alice",
            "sn: Example",
            f"mail: {self.user_mail}",
            f"userPassword: {ssha(self.user_pw)}",
            "",
        ])

    def _slapadd(self):
        argv = [SLAPADD, "-q", "-f", str(self.confpath), "-b", self.base, "-l", str(self.ldifpath)]
        try:
            r = subprocess.run(argv, capture_output=True, text=True, timeout=30)
        except subprocess.TimeoutExpired as e:
            raise SlapdError(f"slapadd timed out: {e}") from None
        if r.returncode != 0:
            raise SlapdError(f"slapadd failed ({r.returncode}):\n{r.stdout}{r.stderr}\n"
                             f"--- slapd.conf ---\n{self.confpath.read_text()}")

    def _start(self, timeout):
        urls = self.url + "/"
        if self.ldaps_url:
            urls += " " + self.ldaps_url + "/"
        argv = [SLAPD, "-d", str(self.debug), "-h", urls, "-f", str(self.confpath)]
        if self._logf is not None:
            self._logf.close()
        self._logf = open(self.logpath, "ab")
        t0 = time.monotonic()
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=self._logf,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        try:
            self._wait_ready(t0 + timeout)
        except SlapdError:
            self._terminate()
            raise
        self.startup_time = time.monotonic() - t0

    def _wait_ready(self, deadline):
        err = "no attempt"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SlapdError(f"slapd exited with status {self.proc.returncode} before it was "
                                 f"ready on {self.url}\n--- {self.logpath} ---\n{self.log(all=True)}")
            try:
                if self.probe(timeout=max(0.1, min(2.0, deadline - time.monotonic()))):
                    return
                err = "probe search did not succeed"
            except OSError as e:
                err = repr(e)
            time.sleep(0.02)
        raise SlapdError(f"slapd not ready on {self.url} within the deadline ({err})\n"
                         f"--- {self.logpath} ---\n{self.log(all=True)}")

    def probe(self, timeout=2.0):
        """One anonymous base search of the suffix, without a bind, on a raw
        socket; True if it succeeded.  Its connection is left out of ops()."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=timeout) as s:
            self._probe_conns.add(("127.0.0.1", s.getsockname()[1]))
            s.sendall(_probe_request(self.base))
            buf = b""
            while True:
                tag, value, buf = _read_tlv(s, buf)
                if tag != 0x30:
                    return False
                elems = _parse_elems(value)
                if len(elems) < 2:
                    return False
                op_tag, op = elems[1]
                if op_tag == 0x65:  # SearchResultDone
                    result = _parse_elems(op)
                    return bool(result) and result[0] == (0x0A, b"\x00")
                if op_tag not in (0x64, 0x73):  # entry, reference
                    return False

    # -- stopping -----------------------------------------------------------

    def _terminate(self, timeout=5.0):
        p = self.proc
        if p is not None and p.poll() is None:
            try:
                p.send_signal(signal.SIGTERM)
                p.wait(timeout)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout)
            except ProcessLookupError:
                pass
        if self._logf is not None:
            self._logf.close()
            self._logf = None

    def stop(self):
        """SIGTERM, wait up to 5 s, then SIGKILL.  Idempotent; the log stays
        readable afterwards."""
        self._terminate()

    close = stop

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()

    # -- what slapd saw -----------------------------------------------------

    def _excluded_conns(self, text):
        conns = set()
        for m in _ACCEPT_RE.finditer(text):
            host, _, port = m.group(2).rpartition(":")
            if (host, int(port) if port.isdigit() else -1) in self._probe_conns:
                conns.add(m.group(1))
        return conns

    def log(self, all=False):
        """The text of slapd's log; without all=True, the lines of the
        readiness probe's connections are left out."""
        try:
            text = self.logpath.read_text(errors="replace")
        except FileNotFoundError:
            return ""
        if all:
            return text
        skip = self._excluded_conns(text)
        if not skip:
            return text
        keep = []
        for line in text.splitlines(keepends=True):
            m = _CONN_RE.search(line)
            if m and m.group(1) in skip:
                continue
            keep.append(line)
        return "".join(keep)

    def op_records(self):
        """One Op(conn, op, verb, text, details) per operation received, in
        order: text is its first stats line without "conn=N op=M " (e.g.
        'BIND dn="..." method=128', 'SRCH base="..." scope=2 ...',
        'EXT oid=...'); details are its further lines (the bind's
        'mech=SIMPLE bind_ssf=0 ssf=0' when it succeeded, 'SRCH attr=...',
        'WHOAMI', ...).  Result lines are not included."""
        ops, index = [], {}
        for line in self.log().splitlines():
            m = _OP_RE.search(line)
            if not m:
                continue
            key = (int(m.group(1)), int(m.group(2)))
            text = (m.group(3) + m.group(4)).rstrip()
            if key in index:
                index[key].details.append(text)
            else:
                index[key] = Op(key[0], key[1], m.group(3), text, [])
                ops.append(index[key])
        return ops

    def ops(self):
        """The operations received, in order, one string each:
        'BIND dn="uid=alice,..." method=128', 'SRCH base="..." ...',
        'EXT oid=1.3.6.1.4.1.1466.20037', 'UNBIND', ..."""
        return [o.text for o in self.op_records()]

    def verbs(self):
        """Just the operation names: ["BIND", "SRCH", "EXT", "UNBIND", ...]."""
        return [o.verb for o in self.op_records()]

    def binds(self):
        """The DNs of every BIND request received, successful or not ("" for
        an anonymous or SASL bind)."""
        return [m.group(1) for m in _BIND_RE.finditer(self.log())]

    def successful_binds(self):
        """(dn, ssf) of every simple bind slapd accepted; ssf > 0 means the
        connection was under TLS (e.g. 256) when it bound."""
        return [(m.group(1), int(m.group(2))) for m in _BIND_OK_RE.finditer(self.log())]

    def ext_oids(self):
        """The OIDs of the extended operations received (StartTLS is
        STARTTLS_OID)."""
        out = []
        for o in self.op_records():
            m = re.match(r"EXT oid=(\S+)", o.text) if o.verb == "EXT" else None
            if m:
                out.append(m.group(1))
        return out

    def connections(self):
        """How many connections slapd accepted (the probe's not counted)."""
        text = self.log(all=True)
        skip = self._excluded_conns(text)
        return sum(1 for m in _ACCEPT_RE.finditer(text) if m.group(1) not in skip)

    def wait_log(self, pattern, timeout=5.0):
        """Waits until the log (probe lines left out) matches the regex
        pattern; returns the match.  slapd logs some lines (UNBIND, closed)
        only after the client has gone, hence this."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            m = rx.search(self.log())
            if m or time.monotonic() >= deadline:
                break
            time.sleep(0.02)
        if not m:
            raise AssertionError(f"timed out after {timeout}s waiting for /{pattern}/ in "
                                 f"{self.logpath}:\n{self.log()}")
        return m


@pytest.fixture
def slapd(tmp_path):
    """A plain (no TLS) Slapd for one test; its log is printed on failure."""
    s = Slapd(tmp_path)
    try:
        yield s
    finally:
        s.stop()
        print(f"--- slapd log {s.logpath} ---\n{s.log(all=True)}")
