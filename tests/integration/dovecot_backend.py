"""A real IMAP and POP3 server for the tests: Dovecot 2.3 (Debian's
dovecot-imapd and dovecot-pop3d), run by the test as an ordinary process
(dovecot -F -c <conf>) with a configuration of its own, never the system's.

Everything of it is under the test's directory: the configuration, its
base_dir (sockets, pid file), state_dir, its log (log_path: auth_verbose,
auth_debug and mail_debug, so that a test can read what reached it), and a
passwd-file with one user.  The one exception is the mail home: Dovecot
never gives mail to uid 0, so when the tests run as root the mailbox
belongs to "nobody", and sits in a directory of its own under /tmp that
nobody and dovecot can traverse (pytest's own directories are mode 0700),
with the passwd-file that Dovecot's auth process reads as dovecot; it is
removed by stop().  The login processes run as Debian's dovenull and the
internal ones as dovecot (both made by the dovecot-core package); run by
another user, everything runs as that user and nothing is chrooted.

    d = Dovecot(tmp_path)                       # imap and pop3, cleartext
    d = Dovecot(tmp_path, tls=(cert, key))      # ssl = yes: STARTTLS, STLS
    d.imap_port, d.pop3_port, d.user, d.password, d.message (bytes)
    d.log()                                     # Dovecot's log so far
    d.stop()

disable_plaintext_auth is "no" unless plaintext_auth=False; Dovecot takes
a connection as secured (TLS, or from login_trusted_networks, or from its
own address), and without TLS refuses plaintext authentication on any
other when plaintext_auth is False (it then advertises LOGINDISABLED).
host is the address Dovecot listens on: on 127.0.0.2 a client from
127.0.0.1 is not its own address, so that this matters.  haproxy=True
makes both listeners expect a PROXY protocol header from 127.0.0.0/8
(Dovecot's haproxy = yes and haproxy_trusted_networks).
"""
import grp
import os
import pathlib
import pwd
import shutil
import socket
import subprocess
import tempfile
import time

from helpers import free_port, wait_for

USER = "alice"
PASSWORD = "alice-secret-pw"
# The message in the mailbox, with CRLF line endings: Dovecot serves a
# maildir file as it is, so FETCH BODY[] must give back these bytes.
MESSAGE = (b"Return-Path: <bob@example.test>\r\n"
           b"From: Bob <bob@example.test>\r\n"
           b"To: Alice <alice@example.test>\r\n"
           b"Subject: a message behind starttls-proxy\r\n"
           b"Date: Mon, 01 Jan 2024 00:00:00 +0000\r\n"
           b"Message-ID: <1@example.test>\r\n"
           b"\r\n"
           b"Hello Alice,\r\n"
           b"\r\n"
           b"this line has {5} braces and a \"quoted\" word.\r\n"
           b". a line with only a dot before it\r\n"
           b"-- \r\nBob\r\n")


def dovecot_available():
    return shutil.which("dovecot") is not None or os.path.exists("/usr/sbin/dovecot")


def dovecot_binary():
    return shutil.which("dovecot") or "/usr/sbin/dovecot"


class Dovecot:
    def __init__(self, d, tls=None, plaintext_auth=True, trusted_networks="",
                 host="127.0.0.1", haproxy=False, extra=""):
        self.d = pathlib.Path(d) / "dovecot"
        self.d.mkdir(parents=True, exist_ok=True)
        self.host = host
        self.imap_port = free_port(host=host)
        self.pop3_port = free_port(host=host)
        self.user, self.password, self.message = USER, PASSWORD, MESSAGE
        self.logpath = self.d / "dovecot.log"
        self.root = os.geteuid() == 0
        if self.root:
            mail = pwd.getpwnam("nobody")
            self.maildirs = pathlib.Path(tempfile.mkdtemp(prefix="stp-dovecot-mail-"))
            os.chmod(self.maildirs, 0o755)
            users = f"default_login_user = dovenull\ndefault_internal_user = dovecot\n"
            chroot = unchrooted = ""
        else:
            mail = pwd.getpwuid(os.geteuid())
            self.maildirs = self.d / "home"
            self.maildirs.mkdir(exist_ok=True)
            users = (f"default_login_user = {mail.pw_name}\n"
                     f"default_internal_user = {mail.pw_name}\n"
                     f"default_internal_group = {grp.getgrgid(os.getegid()).gr_name}\n")
            chroot = "  chroot =\n"
            unchrooted = "".join(f"service {s} {{\n  chroot =\n}}\n" for s in ("anvil", "ipc"))
        self.home = self.maildirs / USER
        self._make_mailbox(mail.pw_uid, mail.pw_gid)

        # read by Dovecot's auth process, which runs as default_internal_user
        passwd = self.maildirs / "passwd"
        passwd.write_text(f"{USER}:{{PLAIN}}{PASSWORD}::::::\n")
        ssl = "ssl = no\n"
        if tls is not None:
            cert, key = tls
            ssl = f"ssl = yes\nssl_cert = <{cert}\nssl_key = <{key}\nssl_min_protocol = TLSv1.2\n"
        haproxy_conf = ""
        self.haproxy = haproxy
        if haproxy:
            haproxy_conf = "    haproxy = yes\n"
            extra = f"haproxy_trusted_networks = 127.0.0.0/8\n{extra}"
        self.conf = self.d / "dovecot.conf"
        self.conf.write_text(f"""\
# starttls-proxy test backend ({self.d})
base_dir = {self.d}/run
state_dir = {self.d}/state
log_path = {self.logpath}
instance_name = stp-dovecot-{os.getpid()}-{self.imap_port}
protocols = imap pop3
listen = {host}
{users}first_valid_uid = {mail.pw_uid}
last_valid_uid = {mail.pw_uid}
first_valid_gid = {mail.pw_gid}
last_valid_gid = {mail.pw_gid}
{ssl}disable_plaintext_auth = {"no" if plaintext_auth else "yes"}
login_trusted_networks = {trusted_networks}
auth_mechanisms = plain login
auth_verbose = yes
auth_debug = yes
auth_debug_passwords = yes
mail_debug = yes
verbose_ssl = yes
log_timestamp = "%Y-%m-%d %H:%M:%S "
passdb {{
  driver = passwd-file
  args = scheme=PLAIN {passwd}
}}
userdb {{
  driver = static
  args = uid={mail.pw_uid} gid={mail.pw_gid} home={self.maildirs}/%u
}}
mail_location = maildir:~/Maildir
service imap-login {{
{chroot}  inet_listener imap {{
    address = {host}
    port = {self.imap_port}
{haproxy_conf}  }}
  inet_listener imaps {{
    port = 0
  }}
}}
service pop3-login {{
{chroot}  inet_listener pop3 {{
    address = {host}
    port = {self.pop3_port}
{haproxy_conf}  }}
  inet_listener pop3s {{
    port = 0
  }}
}}
service stats {{
  inet_listener http {{
    port = 0
  }}
}}
{unchrooted}{extra}""")
        self.logf = open(self.d / "dovecot.stderr", "ab")
        self.proc = subprocess.Popen([dovecot_binary(), "-F", "-c", str(self.conf)],
                                     stdout=self.logf, stderr=subprocess.STDOUT)
        try:
            wait_for(lambda: self._listening() or self.proc.poll() is not None, 30,
                     "dovecot to listen")
            if self.proc.poll() is not None:
                raise AssertionError("dovecot exited at start-up:\n" + self.all_output())
        except BaseException:
            self.stop()
            raise

    def _make_mailbox(self, uid, gid):
        maildir = self.home / "Maildir"
        for sub in ("cur", "new", "tmp"):
            (maildir / sub).mkdir(parents=True, exist_ok=True)
        (maildir / "cur" / "1704067200.M1P1.stp:2,").write_bytes(MESSAGE)
        for p in [self.home] + [q for q in self.home.rglob("*")]:
            os.chown(p, uid, gid)

    def _listening(self):
        for port in (self.imap_port, self.pop3_port):
            try:
                with socket.create_connection((self.host, port), timeout=1) as s:
                    s.settimeout(2)
                    if self.haproxy:    # it waits for the header first
                        s.sendall(b"PROXY UNKNOWN\r\n")
                    if not s.recv(1024):
                        return False
            except OSError:
                return False
        return True

    def log(self):
        try:
            return self.logpath.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def all_output(self):
        out = self.log()
        try:
            out += (self.d / "dovecot.stderr").read_text(errors="replace")
        except FileNotFoundError:
            pass
        return out

    def wait_log(self, text, timeout=10):
        wait_for(lambda: text in self.log(), timeout, f"{text!r} in dovecot's log")

    def logins(self):
        """imap-login's and pop3-login's "Login:" lines."""
        return [l for l in self.log().splitlines() if "-login: Info: Login: " in l]

    def wait_logins(self, count=1, timeout=10):
        """The "Login:" lines once there are count of them: Dovecot may
        write its line after the client has read its answer."""
        wait_for(lambda: len(self.logins()) >= count, timeout, f"{count} login line(s) in dovecot's log")
        return self.logins()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.logf.close()
        if self.root:
            shutil.rmtree(self.maildirs, ignore_errors=True)
