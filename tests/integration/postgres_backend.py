"""A real PostgreSQL server for the tests: Debian's postgresql-15 run as
an ordinary child process on 127.0.0.1, with a throwaway cluster made by
initdb, log_connections on (its log says whether each connection used
SSL), and two roles:

    alice      password alicepw, SCRAM-SHA-256
    trustuser  no password (trust), for raw clients that write their own
               StartupMessage and read AuthenticationOk back

    pg = Postgres(ssl_pki=None)        # host lines: SSL or not
    pg = Postgres(ssl_pki=pki)         # ssl = on with pki's backend
                                       #   certificate; hostssl lines only
    ...                                # pg.port, pg.log(), pg.connections()
    pg.stop()

The server refuses to run as root, so initdb and postgres run as the
postgres system user (setpriv, which execs: the pid we hold is the
server's).  pytest's tmp_path is private to root, so the cluster lives in
a directory of its own under the system's temporary directory, owned by
postgres and removed at stop.  initdb runs once per test run, into a
template that each cluster copies.  The Debian default cluster (and
pg_ctlcluster) is never used.
"""
import atexit
import os
import pathlib
import pwd
import re
import shutil
import signal
import subprocess
import tempfile
import threading

from helpers import free_port, wait_for

PGBIN = pathlib.Path(os.environ.get("STP_PGBIN", "/usr/lib/postgresql/15/bin"))
PGUSER = os.environ.get("STP_PGUSER", "postgres")

_template_lock = threading.Lock()
_template = None


def _ids():
    pw = pwd.getpwnam(PGUSER)
    return pw.pw_uid, pw.pw_gid


def _as_pg(argv):
    uid, gid = _ids()
    return ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups", "--"] + argv


def _own(path, mode=None):
    uid, gid = _ids()
    os.chown(path, uid, gid)
    if mode is not None:
        os.chmod(path, mode)


def _template_dir():
    """initdb once per test run; each cluster copies the result."""
    global _template
    with _template_lock:
        if _template is None:
            root = pathlib.Path(tempfile.mkdtemp(prefix="stp-pg-template-"))
            atexit.register(shutil.rmtree, root, True)
            _own(root, 0o700)
            data = root / "data"
            subprocess.run(_as_pg([str(PGBIN / "initdb"), "-D", str(data), "-U", "postgres",
                                   "--auth=trust", "--no-sync", "--no-instructions",
                                   "-E", "UTF8", "--locale=C"]),
                           check=True, capture_output=True, timeout=120)
            _template = data
        return _template


class Postgres:
    def __init__(self, ssl_pki=None, extra=()):
        self.root = pathlib.Path(tempfile.mkdtemp(prefix="stp-pg-"))
        _own(self.root, 0o700)
        self.data = self.root / "data"
        subprocess.run(["cp", "-a", str(_template_dir()), str(self.data)], check=True)
        self.sockdir = self.root / "sock"
        self.sockdir.mkdir()
        _own(self.sockdir, 0o700)
        self.port = free_port()
        self.ssl = ssl_pki is not None
        hba = ["local all all trust"]
        if self.ssl:
            hba += ["hostssl all trustuser 127.0.0.1/32 trust",
                    "hostssl all all 127.0.0.1/32 scram-sha-256",
                    "hostnossl all all 127.0.0.1/32 reject"]
        else:
            hba += ["host all trustuser 127.0.0.1/32 trust",
                    "host all all 127.0.0.1/32 scram-sha-256"]
        (self.data / "pg_hba.conf").write_text("\n".join(hba) + "\n")
        opts = ["listen_addresses=127.0.0.1", f"port={self.port}",
                f"unix_socket_directories={self.sockdir}", "log_connections=on",
                "log_disconnections=off", "fsync=off", "synchronous_commit=off",
                "full_page_writes=off", "shared_buffers=16MB", "max_connections=40",
                "log_line_prefix=%m [%p] ", "log_min_messages=info"]
        if self.ssl:
            cert, key = self.root / "server.crt", self.root / "server.key"
            shutil.copy(ssl_pki.backend_cert, cert)
            shutil.copy(ssl_pki.backend_key, key)
            _own(cert, 0o644)
            _own(key, 0o600)
            opts += ["ssl=on", f"ssl_cert_file={cert}", f"ssl_key_file={key}"]
        else:
            opts += ["ssl=off"]
        opts += list(extra)
        self.logpath = self.root / "postgres.log"
        self.logf = open(self.logpath, "ab")
        argv = [str(PGBIN / "postgres"), "-D", str(self.data)]
        for o in opts:
            argv += ["-c", o]
        self.proc = subprocess.Popen(_as_pg(argv), stdout=self.logf, stderr=subprocess.STDOUT)
        try:
            wait_for(lambda: "ready to accept connections" in self.log() or
                     self.proc.poll() is not None, 60, "postgres to start")
            if self.proc.poll() is not None:
                raise AssertionError("postgres exited at start-up:\n" + self.log())
            self.sql("CREATE ROLE alice LOGIN PASSWORD 'alicepw'; CREATE ROLE trustuser LOGIN;")
        except BaseException:
            self.stop()
            raise

    def sql(self, text):
        """text through psql over the unix socket, as the superuser."""
        r = subprocess.run(["psql", "-X", "-q", "-At", "-h", str(self.sockdir), "-p", str(self.port),
                            "-U", "postgres", "-d", "postgres", "-c", text],
                           capture_output=True, text=True, timeout=30)
        if r.returncode != 0:
            raise AssertionError(f"psql {text!r}: {r.stderr}")
        return r.stdout

    def log(self):
        try:
            return self.logpath.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def connections(self):
        """The log's 'connection authorized' lines, in order: what each
        session was, SSL or not."""
        return re.findall(r"connection authorized: .*", self.log())

    def received(self):
        """How many connections the server accepted on TCP (cancel requests
        included)."""
        return len(re.findall(r"connection received: host=127\.0\.0\.1", self.log()))

    def stop(self):
        proc = getattr(self, "proc", None)
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGINT)  # fast shutdown: clients are cut off
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if getattr(self, "logf", None) is not None:
            self.logf.close()
        shutil.rmtree(self.root, ignore_errors=True)
