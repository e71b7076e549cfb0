"""The pid file: written through no link, only into a regular file of
ours, refused with a clear error (exit 1) otherwise, and removed at exit
only if it is still the file the daemon wrote."""
import os
import signal
import stat
import subprocess

import pytest

from conftest import BIN
from helpers import free_port, wait_for
from protocols import listener

VICTIM = "precious: must never be written\n"


def conf(tmp_path):
    text = listener(free_port(), free_port(), client_tls="none")
    path = tmp_path / "proxy.conf"
    path.write_text(text)
    return path


def run_refused(tmp_path, pidfile, foreground=True, victim=None):
    """Start; return the exit status and stderr.  A daemon that did not
    refuse (a broken build) is stopped, also one that went to the
    background, found by the pid it wrote."""
    argv = [BIN] + (["-f"] if foreground else []) + ["-c", str(conf(tmp_path)),
                                                     "-p", str(pidfile)]
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _, err = p.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        p.kill()
        _, err = p.communicate()
    for f in (victim, pidfile):
        try:
            pid = int(open(f).read().split()[0]) if os.path.isfile(f) else 0
            with open(f"/proc/{pid}/cmdline", "rb") as c:
                if c.read().split(b"\0")[0] == BIN.encode():
                    os.kill(pid, signal.SIGTERM)
        except (TypeError, OSError, ValueError, IndexError):
            pass
    return p.returncode, err


@pytest.fixture
def running(tmp_path):
    """running(pidfile, **popen) starts the daemon in the foreground; what
    the test does not stop is killed at the end."""
    started = []

    def start(pidfile, **kw):
        argv = [BIN, "-f", "-c", str(conf(tmp_path)), "-p", str(pidfile)]
        log = tmp_path / "proxy.log"
        with open(log, "wb") as f:  # a fresh log: "started" is this run's
            p = subprocess.Popen(argv, stdout=f, stderr=subprocess.STDOUT, **kw)
        started.append(p)
        wait_for(lambda: "started" in log.read_text() or p.poll() is not None, 30,
                 "the daemon to start")
        assert p.poll() is None, log.read_text()
        return p

    yield start
    for p in started:
        if p.poll() is None:
            p.kill()
            p.wait()


def stop(p):
    p.send_signal(signal.SIGTERM)
    assert p.wait(15) == 0


def victim_file(tmp_path):
    v = tmp_path / "victim"
    v.write_text(VICTIM)
    os.chmod(v, 0o600)
    return v, os.stat(v)


def assert_untouched(v, st0):
    st = os.stat(v)
    assert v.read_text() == VICTIM
    assert (st.st_mode, st.st_size, st.st_mtime_ns, st.st_ino) == \
        (st0.st_mode, st0.st_size, st0.st_mtime_ns, st0.st_ino)


@pytest.mark.parametrize("foreground", [True, False], ids=["foreground", "daemonizing"])
def test_symlink_at_the_pidfile_path_is_refused_and_the_victim_untouched(tmp_path, foreground):
    """Regression: pidfile_write() opened the path with O_CREAT|O_TRUNC and
    followed a symlink planted there, truncating and writing its target
    as root.  Now the daemon refuses to start, with the reason on the
    terminal even when it would daemonize, and the target is unchanged."""
    v, st0 = victim_file(tmp_path)
    link = tmp_path / "proxy.pid"
    link.symlink_to(v)
    rc, err = run_refused(tmp_path, link, foreground, victim=v)
    assert_untouched(v, st0)
    assert rc == 1, (rc, err)
    assert (f"starttls-proxy: pidfile: {link} is a symbolic link; expected a regular file "
            "or no file (not followed)") in err, err
    assert link.is_symlink() and os.readlink(link) == str(v)


def test_dangling_symlink_creates_nothing_where_it_points(tmp_path):
    target = tmp_path / "created-through-the-link"
    link = tmp_path / "proxy.pid"
    link.symlink_to(target)
    rc, err = run_refused(tmp_path, link, victim=target)
    assert not target.exists() and link.is_symlink()
    assert rc == 1 and f"pidfile: {link} is a symbolic link" in err, (rc, err)


def test_hard_link_to_another_file_is_refused(tmp_path):
    v, st0 = victim_file(tmp_path)
    pidfile = tmp_path / "proxy.pid"
    os.link(v, pidfile)
    rc, err = run_refused(tmp_path, pidfile, victim=v)
    assert_untouched(v, st0)
    assert rc == 1, (rc, err)
    assert (f"starttls-proxy: pidfile: {pidfile} has 2 links; expected a file of its own "
            "(not written)") in err, err


@pytest.mark.parametrize("kind", ["directory", "FIFO"])
def test_not_a_regular_file_is_refused(tmp_path, kind):
    pidfile = tmp_path / "proxy.pid"
    if kind == "directory":
        pidfile.mkdir()
    else:
        os.mkfifo(pidfile)
    rc, err = run_refused(tmp_path, pidfile)
    assert rc == 1, (rc, err)
    assert (f"starttls-proxy: pidfile: {pidfile} is a {kind}; expected a regular file "
            "or no file (not written)") in err, err


def test_a_file_of_another_user_is_refused(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("needs root to give the file away")
    pidfile = tmp_path / "proxy.pid"
    pidfile.write_text("12345\n")
    nobody = int(subprocess.run(["id", "-u", "nobody"], capture_output=True, text=True).stdout)
    os.chown(pidfile, nobody, -1)
    rc, err = run_refused(tmp_path, pidfile)
    assert pidfile.read_text() == "12345\n"
    assert rc == 1, (rc, err)
    assert f"pidfile: {pidfile} belongs to uid {nobody}; expected a file of uid 0" in err, err


def test_pid_written_mode_0644_and_removed_at_exit(tmp_path, running):
    """Also under umask 077, and over a stale pid file of ours."""
    pidfile = tmp_path / "proxy.pid"
    pidfile.write_text("999999\nstale\n")
    os.chmod(pidfile, 0o600)
    p = running(pidfile, preexec_fn=lambda: os.umask(0o077))
    assert pidfile.read_text() == f"{p.pid}\n"
    assert stat.S_IMODE(os.stat(pidfile).st_mode) == 0o644
    stop(p)
    assert not os.path.lexists(pidfile)
    p = running(pidfile, preexec_fn=lambda: os.umask(0o077))
    assert pidfile.read_text() == f"{p.pid}\n"
    assert stat.S_IMODE(os.stat(pidfile).st_mode) == 0o644
    stop(p)
    assert not os.path.lexists(pidfile)


@pytest.mark.parametrize("replacement", ["symlink", "file"])
def test_exit_removes_only_the_file_it_wrote(tmp_path, running, replacement):
    """Something put in the pid file's place while the daemon runs is left
    alone at exit (and a symlink's target is not touched)."""
    v, st0 = victim_file(tmp_path)
    pidfile = tmp_path / "proxy.pid"
    p = running(pidfile)
    assert pidfile.read_text() == f"{p.pid}\n"
    pidfile.unlink()
    if replacement == "symlink":
        pidfile.symlink_to(v)
    else:
        pidfile.write_text("someone else's\n")
    stop(p)
    assert os.path.lexists(pidfile)
    if replacement == "symlink":
        assert pidfile.is_symlink()
    else:
        assert pidfile.read_text() == "someone else's\n"
    assert_untouched(v, st0)
