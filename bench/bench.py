#!/usr/bin/env python3
"""The benchmark: starttls-proxy, stunnel4 and HAProxy side by side.

Run by scripts/bench, which builds the daemon, bench/loadgen and bench/sink
first.  Each proxy terminates TLS in turn, on loopback, in front of the same
plaintext sink (bench/sink), with the same certificate (ECDSA P-256, and
RSA-2048 for the handshake figures) and the TLS 1.3 defaults of each.  A
proxy's cost is its own CPU time (utime + stime of all its threads and
processes, read from /proc before and after a run); wall-clock rates are
shown beside it.  Every figure is the median of --runs runs (3 by default),
and the runs of the three proxies are interleaved so that a change of the
background load hits them alike.

Figures: (1) bulk relay CPU-s per GiB, 1 and 8 connections, implicit TLS and
SMTP STARTTLS; (2) CPU-ms per full handshake and handshakes/s; (3) RSS per
idle TLS session with N sessions open; (4) the floors from `openssl speed`;
then the same daemon with `workers = N` (HAProxy with `nbthread N`).
"""
import argparse
import ctypes
import datetime
import os
import platform
import re
import resource
import select
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
TOP = os.path.dirname(HERE)
CLK_TCK = os.sysconf("SC_CLK_TCK")
GIB = 1 << 30
PEERS = ("stp", "stunnel", "haproxy")
LABEL = {"stp": "starttls-proxy", "stunnel": "stunnel", "haproxy": "HAProxy"}

children = []           # every process we started, for the clean-up
log_dir = None
t0 = time.monotonic()


def say(msg):
    print(f"[{time.monotonic() - t0:6.1f}s] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- processes

_libc = ctypes.CDLL(None, use_errno=True)


def _die_with_parent():
    _libc.prctl(1, signal.SIGKILL)      # PR_SET_PDEATHSIG: no orphans left behind


def spawn(args, name, stdin=subprocess.DEVNULL, stdout=None):
    """Start a process; its stderr (and stdout unless piped) go to a log file."""
    logf = open(os.path.join(log_dir, f"{name}.log"), "ab")
    p = subprocess.Popen(args, stdin=stdin, stdout=stdout if stdout is not None else logf,
                         stderr=logf, preexec_fn=_die_with_parent, cwd=log_dir)
    p.logname = logf.name
    logf.close()
    p.rbuf = b""
    children.append(p)
    return p


def stop(p, sig=signal.SIGTERM, timeout=10):
    if p is None or p.poll() is not None:
        return
    try:
        p.send_signal(sig)
        p.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait(timeout=5)
    except ProcessLookupError:
        pass


def cleanup():
    for p in reversed(children):
        if p.poll() is None:
            try:
                p.terminate()
            except ProcessLookupError:
                pass
    deadline = time.monotonic() + 5
    for p in children:
        try:
            p.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()


def readline(p, timeout):
    """One line of a piped stdout, or None after timeout or at EOF."""
    deadline = time.monotonic() + timeout
    fd = p.stdout.fileno()
    while b"\n" not in p.rbuf:
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        r, _, _ = select.select([fd], [], [], left)
        if not r:
            return None
        chunk = os.read(fd, 4096)
        if not chunk:
            return None
        p.rbuf += chunk
    line, p.rbuf = p.rbuf.split(b"\n", 1)
    return line.decode(errors="replace")


def run(args, timeout, name):
    """Run to completion; returns (exit status, stdout)."""
    logf = open(os.path.join(log_dir, f"{name}.log"), "ab")
    p = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=logf, stdin=subprocess.DEVNULL,
                         preexec_fn=_die_with_parent, cwd=log_dir)
    logf.close()
    children.append(p)
    try:
        out, _ = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        out, _ = p.communicate(timeout=5)
        return -1, out.decode(errors="replace")
    return p.returncode, out.decode(errors="replace")


def proc_tree(pid):
    """pid and all its descendants."""
    parent = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    rest = f.read().rsplit(")", 1)[1].split()
                parent[int(d)] = int(rest[1])
            except (OSError, IndexError):
                pass
    tree, todo = [], [pid]
    while todo:
        p = todo.pop()
        tree.append(p)
        todo.extend(c for c, pp in parent.items() if pp == p)
    return tree


def cpu_seconds(pid):
    """utime + stime of pid and its descendants (all their threads, live or gone)."""
    total = 0
    for p in proc_tree(pid):
        try:
            with open(f"/proc/{p}/stat") as f:
                rest = f.read().rsplit(")", 1)[1].split()
            total += int(rest[11]) + int(rest[12])   # fields 14 and 15
        except (OSError, IndexError):
            pass
    return total / CLK_TCK


def rss_kib(pid):
    total = 0
    for p in proc_tree(pid):
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total


def listening(port):
    """Whether something listens on 127.0.0.1:port (from /proc/net/tcp)."""
    want = f"0100007F:{port:04X}"
    with open("/proc/net/tcp") as f:
        for line in f:
            parts = line.split()
            if len(parts) > 3 and parts[1] == want and parts[3] == "0A":
                return True
    return False


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def kv(line):
    return dict(re.findall(r"(\w+)=(\S+)", line))


# ---------------------------------------------------------------- the sink

class Sink:
    def __init__(self, binary, mode):
        self.p = spawn([binary, mode, "0"], f"sink-{mode}", stdout=subprocess.PIPE)
        line = readline(self.p, 10)
        if not line or not line.startswith("LISTENING"):
            raise SystemExit(f"bench: sink {mode} did not start (see {self.p.logname})")
        self.port = int(kv(line)["port"])

    def counters(self):
        self.p.send_signal(signal.SIGUSR1)
        line = readline(self.p, 10)
        if not line or not line.startswith("SINK"):
            raise SystemExit("bench: the sink did not report")
        return {k: int(v) for k, v in kv(line).items()}


# ---------------------------------------------------------------- the proxies

class Proxy:
    """One running instance of a proxy: an implicit TLS listener and, where
    the proxy has one, an SMTP STARTTLS listener, both in front of the sinks."""
    smtp = True

    def __init__(self, kind, cert, sinks, workers=1, maxconn=10000, tag=""):
        self.kind, self.cert, self.workers, self.maxconn = kind, cert, workers, maxconn
        self.ports = {"tls": free_port()}
        if self.smtp_ok():
            self.ports["smtp"] = free_port()
        name = f"{kind}-{cert['name']}-w{workers}{tag}"
        self.cfg = os.path.join(log_dir, f"{name}.conf")
        with open(self.cfg, "w") as f:
            f.write(self.config(cert, sinks))
        self.p = spawn(self.command(), name)
        deadline = time.monotonic() + 15
        while not all(listening(p) for p in self.ports.values()):
            if self.p.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"bench: {kind} did not start; see {self.p.logname}")
            time.sleep(0.05)
        time.sleep(0.1)
        self.pid = self.p.pid

    def smtp_ok(self):
        return self.kind != "haproxy"

    def command(self):
        return {"stp": [ARGS.stp, "-f", "-c", self.cfg],
                "stunnel": ["stunnel", self.cfg],
                "haproxy": ["haproxy", "-f", self.cfg, "-db"]}[self.kind]

    def config(self, cert, sinks):
        c, k = cert["crt"], cert["key"]
        raw, smtp = sinks["raw"].port, sinks["smtp"].port
        tls, sp = self.ports["tls"], self.ports.get("smtp")
        if self.kind == "stp":
            w = f"workers = {self.workers};\n" if self.workers != 1 else ""
            return f"""# starttls-proxy, written by bench/bench.py
log_level = "warning";
max_connections = {max(self.maxconn, 10000)};
{w}listeners = (
  {{ name = "tls"; listen = "127.0.0.1:{tls}"; protocol = "tcp";
    tls = {{ certificates = ( {{ cert = "{c}"; key = "{k}"; }} ); }};
    backend = {{ address = "127.0.0.1:{raw}"; }}; }},
  {{ name = "smtp"; listen = "127.0.0.1:{sp}"; protocol = "smtp";
    tls = {{ certificates = ( {{ cert = "{c}"; key = "{k}"; }} ); }};
    backend = {{ address = "127.0.0.1:{smtp}"; }}; }}
);
"""
        if self.kind == "stunnel":
            return f"""; stunnel, written by bench/bench.py
foreground = yes
pid =
debug = 3
[tls]
accept = 127.0.0.1:{tls}
connect = 127.0.0.1:{raw}
cert = {c}
key = {k}
[smtp]
accept = 127.0.0.1:{sp}
connect = 127.0.0.1:{smtp}
cert = {c}
key = {k}
; in server mode stunnel plays the STARTTLS side of SMTP itself
protocol = smtp
"""
        return f"""# HAProxy, written by bench/bench.py
global
  nbthread {self.workers or NPROC}
  maxconn {self.maxconn}
defaults
  mode tcp
  timeout connect 10s
  timeout client 900s
  timeout server 900s
frontend tls
  bind 127.0.0.1:{tls} ssl crt {cert['pem']}
  default_backend sink
backend sink
  server sink 127.0.0.1:{raw}
"""

    def alive(self):
        return self.p.poll() is None

    def close(self):
        stop(self.p)


# ---------------------------------------------------------------- measurements

runs_log = []          # every run, for RESULTS.md


def loadgen(args, timeout, name):
    rc, out = run([os.path.join(ARGS.bindir, "loadgen")] + args, timeout, name)
    res = None
    for line in out.splitlines():
        if line.startswith("RESULT"):
            res = kv(line)
    return rc, res


def measure(proxy, what, args, timeout, sink=None, expect_bytes=0):
    """One run of loadgen against proxy; returns a dict or None on failure."""
    if not proxy.alive():
        say(f"  {proxy.kind} is not running any more")
        return None
    before_sink = sink.counters() if sink else None
    cpu0 = cpu_seconds(proxy.pid)
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)    # only loadgen ends meanwhile
    rc, res = loadgen(args, timeout, f"loadgen-{proxy.kind}")
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    time.sleep(0.3)           # let the proxy finish closing the sessions
    cpu1 = cpu_seconds(proxy.pid)
    ok = rc == 0 and res is not None
    if ok and sink:
        got = sink.counters()["bytes"] - before_sink["bytes"]
        if not expect_bytes <= got <= expect_bytes + 64 * int(res["conns"]):
            say(f"  {proxy.kind} {what}: the sink got {got} bytes, expected {expect_bytes}")
            ok = False
    rec = {"peer": proxy.kind, "what": what, "cpu": cpu1 - cpu0, "rc": rc,
           "res": res, "ok": ok, "cert": proxy.cert["name"], "workers": proxy.workers}
    rec["lg_cpu"] = ru1.ru_utime + ru1.ru_stime - ru0.ru_utime - ru0.ru_stime
    if res and float(res.get("secs", 0)) > 0:
        rec["util"] = (cpu1 - cpu0) / float(res["secs"])     # CPUs the proxy kept busy
    runs_log.append(rec)
    if not ok:
        say(f"  {proxy.kind} {what}: FAILED (rc={rc}) {res}")
        return None
    return rec


def median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


results = {}           # (figure key, peer) -> dict(cost=, rate=, n=)
negotiated = {}


def record(key, peer, costs, rates, extra=None):
    results[(key, peer)] = {"cost": median(costs), "rate": median(rates),
                            "n": len([c for c in costs if c is not None]), **(extra or {})}


def bulk_figures(instances, sinks):
    total = ARGS.bulk_mib << 20
    for mode in ("tls", "smtp"):
        for conns in (1, 8):
            key = f"bulk-{mode}-{conns}"
            per = {p: ([], []) for p in instances}
            for r in range(ARGS.runs):
                for peer, inst in instances.items():
                    if mode not in inst.ports:
                        continue
                    args = ["bulk", "-c", str(conns), "-b", str(total // conns),
                            "-T", str(min(conns, NPROC)), "-w", "300"]
                    if mode == "smtp":
                        args.append("--smtp")
                    args.append(f"127.0.0.1:{inst.ports[mode]}")
                    rec = measure(inst, key, args, 330, sinks["raw" if mode == "tls" else "smtp"],
                                  total)
                    if rec:
                        res = rec["res"]
                        gib = int(res["bytes"]) / GIB
                        per[peer][0].append(rec["cpu"] / gib)
                        per[peer][1].append(float(res["mib_s"]))
                        negotiated.setdefault("bulk", res)
            for peer, (c, w) in per.items():
                if mode in instances[peer].ports:
                    record(key, peer, c, w)
            say(f"  {key}: " + ", ".join(
                f"{p} {fmt(results[(key, p)]['cost'], 2)} CPU-s/GiB" for p in per
                if (key, p) in results))


def handshake_figures(instances, cert, keys_out=None):
    for mode in ("tls", "smtp"):
        key = f"hs-{mode}-{cert['name']}"
        per = {p: ([], []) for p in instances}
        for r in range(ARGS.runs):
            for peer, inst in instances.items():
                if mode not in inst.ports:
                    continue
                args = ["handshake", "-c", str(ARGS.hs_concurrency), "-n", "100000000",
                        "-d", str(ARGS.hs_seconds), "-T", str(NPROC), "-w", str(ARGS.hs_seconds + 20)]
                if mode == "smtp":
                    args.append("--smtp")
                args.append(f"127.0.0.1:{inst.ports[mode]}")
                rec = measure(inst, key, args, ARGS.hs_seconds + 40)
                if rec:
                    n = int(rec["res"]["handshakes"])
                    if n > 0:
                        per[peer][0].append(rec["cpu"] * 1000 / n)
                        per[peer][1].append(float(rec["res"]["hs_s"]))
                        negotiated.setdefault(f"hs-{cert['name']}", rec["res"])
        for peer, (c, w) in per.items():
            if mode in instances[peer].ports:
                record(key, peer, c, w)
        if keys_out is not None:
            keys_out.append(key)
        say(f"  {key}: " + ", ".join(
            f"{p} {fmt(results[(key, p)]['cost'], 3)} ms" for p in per if (key, p) in results))


def idle_figures(peers, cert, sinks):
    n = ARGS.idle
    key = "idle"
    per = {p: ([], []) for p in peers}
    errs = {p: [] for p in peers}
    hopeless = set()
    for r in range(ARGS.runs):
        for peer in peers:
            if peer in hopeless:
                continue
            inst = Proxy(peer, cert, sinks, maxconn=MAXCONN, tag=f"-idle{r}")
            try:
                # a few sessions first, so that what is set up once is in RSS at 0
                loadgen(["handshake", "-c", "4", "-n", "20", "-w", "60",
                         f"127.0.0.1:{inst.ports['tls']}"], 90, f"loadgen-{peer}")
                time.sleep(0.5)
                rss0 = rss_kib(inst.pid)
                cpu0 = cpu_seconds(inst.pid)
                lg = spawn([os.path.join(ARGS.bindir, "loadgen"), "idle", "-c", str(n),
                            "-T", str(NPROC), "-o", "64", "-w", str(ARGS.idle_timeout),
                            f"127.0.0.1:{inst.ports['tls']}"],
                           f"loadgen-{peer}-idle", stdin=subprocess.PIPE, stdout=subprocess.PIPE)
                line = readline(lg, ARGS.idle_timeout + 10) or ""
                ready = kv(line) if line.startswith("READY") else {}
                time.sleep(1.0)
                rssn = rss_kib(inst.pid)
                cpu1 = cpu_seconds(inst.pid)
                alive = inst.alive()
                lg.send_signal(signal.SIGUSR1)
                res = None
                while True:
                    l2 = readline(lg, 30)
                    if l2 is None:
                        break
                    if l2.startswith("RESULT"):
                        res = kv(l2)
                        break
                stop(lg, timeout=10)
                opened = int(ready.get("sessions", 0))
                bad = int(ready.get("errors", n)) + (int(res.get("dropped", 0)) if res else 0)
                ok = opened == n and bad == 0 and alive
                rec = {"peer": peer, "what": key, "cpu": cpu1 - cpu0, "rc": 0 if ok else 1,
                       "res": {"rss0_kib": rss0, "rssN_kib": rssn, "sessions": opened,
                               "errors": bad, "secs": ready.get("secs")},
                       "ok": ok, "cert": cert["name"], "workers": 1}
                runs_log.append(rec)
                errs[peer].append(bad + (n - opened))
                if opened > 0:
                    per[peer][0].append((rssn - rss0) / opened)
                    if ready.get("secs"):
                        per[peer][1].append(opened / float(ready["secs"]))
                if not ok:
                    say(f"  {peer} idle: {opened} of {n} open, {bad} errors, proxy alive: {alive}")
                if opened == 0:
                    hopeless.add(peer)      # no point in waiting for the other runs
            finally:
                inst.close()
    for peer in peers:
        record(key, peer, per[peer][0], per[peer][1], {"errors": max(errs[peer] or [n])})
    say(f"  idle ({n} sessions): " + ", ".join(
        f"{p} {fmt(results[(key, p)]['cost'], 1)} KiB" for p in peers))


def workers_figures(cert, sinks, w):
    """starttls-proxy with workers = w against itself with 1, HAProxy nbthread w against 1."""
    peers = [p for p in ("stp", "haproxy") if p in ARGS.peers]
    inst = {}
    try:
        for p in peers:
            inst[p] = Proxy(p, cert, sinks, workers=w, maxconn=MAXCONN)
        total = ARGS.bulk_mib << 20
        per_b = {p: ([], []) for p in inst}
        per_h = {p: ([], []) for p in inst}
        for r in range(ARGS.runs):
            for p, i in inst.items():
                rec = measure(i, f"bulk-tls-8-w{w}",
                              ["bulk", "-c", "8", "-b", str(total // 8), "-T", str(NPROC),
                               "-w", "300", f"127.0.0.1:{i.ports['tls']}"], 330, sinks["raw"], total)
                if rec:
                    per_b[p][0].append(rec["cpu"] / (int(rec["res"]["bytes"]) / GIB))
                    per_b[p][1].append(float(rec["res"]["mib_s"]))
                rec = measure(i, f"hs-tls-{cert['name']}-w{w}",
                              ["handshake", "-c", str(ARGS.hs_concurrency), "-n", "100000000",
                               "-d", str(ARGS.hs_seconds), "-T", str(NPROC),
                               "-w", str(ARGS.hs_seconds + 20), f"127.0.0.1:{i.ports['tls']}"],
                              ARGS.hs_seconds + 40)
                if rec and int(rec["res"]["handshakes"]) > 0:
                    per_h[p][0].append(rec["cpu"] * 1000 / int(rec["res"]["handshakes"]))
                    per_h[p][1].append(float(rec["res"]["hs_s"]))
        for p in inst:
            record(f"bulk-tls-8-w{w}", p, *per_b[p])
            record(f"hs-tls-{cert['name']}-w{w}", p, *per_h[p])
    finally:
        for i in inst.values():
            i.close()


# ---------------------------------------------------------------- floors

def speed(args, runs):
    out = []
    for _ in range(runs):
        rc, o = run(["openssl", "speed", "-mr", "-seconds", str(ARGS.speed_seconds)] + args,
                    60 + 10 * ARGS.speed_seconds, "openssl-speed")
        out.append(o)
    return out


def floors(cipher, group):
    aead = ("aes-256-gcm" if "AES_256_GCM" in cipher else
            "aes-128-gcm" if "AES_128_GCM" in cipher else
            "chacha20-poly1305" if "CHACHA20" in cipher else "aes-256-gcm")
    kx = {"x25519": "ecdhx25519", "x448": "ecdhx448", "secp256r1": "ecdhp256",
          "prime256v1": "ecdhp256", "secp384r1": "ecdhp384"}.get(group, "ecdhx25519")
    bps = []
    for o in speed(["-evp", aead, "-bytes", "16384"], ARGS.runs):
        m = re.search(r"^\+F:\d+:[^:]+:([\d.]+)", o, re.M)
        if m:
            bps.append(float(m.group(1)))
    ecdsa, rsa, dh = [], [], []
    for o in speed(["ecdsap256", "rsa2048", kx], ARGS.runs):
        m = re.search(r"^\+F4:\d+:256:([\d.]+):", o, re.M)
        if m:
            ecdsa.append(float(m.group(1)))
        m = re.search(r"^\+F2:\d+:2048:([\d.]+):", o, re.M)
        if m:
            rsa.append(float(m.group(1)))
        m = re.search(r"^\+F5:\d+:\d+:([\d.]+):", o, re.M)
        if m:
            dh.append(float(m.group(1)))
    f = {"aead": aead, "kx": kx, "aead_Bps": median(bps), "ecdsa_sign_s": median(ecdsa),
         "rsa_sign_s": median(rsa), "kx_s": median(dh)}
    f["bulk"] = GIB / f["aead_Bps"] if f["aead_Bps"] else None
    if f["kx_s"]:
        f["hs-ecdsa"] = 1000 / f["ecdsa_sign_s"] + 2000 / f["kx_s"] if f["ecdsa_sign_s"] else None
        f["hs-rsa"] = 1000 / f["rsa_sign_s"] + 2000 / f["kx_s"] if f["rsa_sign_s"] else None
    return f


# ---------------------------------------------------------------- report

def fmt(x, nd):
    return "-" if x is None else f"{x:.{nd}f}"


def versions():
    def cmd(args):
        try:
            p = subprocess.run(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=10)
            return p.stdout.decode(errors="replace")
        except (OSError, subprocess.TimeoutExpired) as e:
            return str(e)
    st = [l for l in cmd(["stunnel", "-version"]).splitlines()
          if not l.startswith("Initializing") and l.strip()]
    head = cmd(["git", "-C", TOP, "log", "-1", "--format=%h %s"]).strip()
    dirty = cmd(["git", "-C", TOP, "status", "--porcelain", "--untracked-files=no", "--",
                 "src", "configure.ac", "Makefile.am"]).split()[1::2]
    source = f"git {head}" + (f", with uncommitted changes to {', '.join(dirty)}" if dirty else "")
    if ARGS.source:
        source = ARGS.source
    return {"starttls-proxy": "; ".join(l.strip() for l in cmd([ARGS.stp, "-V"]).splitlines() if l.strip()),
            "starttls-proxy source (when the bench started)": source,
            "stunnel": "; ".join(l.strip() for l in st[:3]),
            "HAProxy": cmd(["haproxy", "-v"]).splitlines()[0].strip(),
            "openssl": cmd(["openssl", "version"]).strip()}


def machine():
    model = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem = "?"
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal"):
                mem = f"{int(line.split()[1]) // 1024} MiB"
    with open("/proc/loadavg") as f:
        load = " ".join(f.read().split()[:3])
    return {"nproc": NPROC, "cpu": model, "kernel": platform.release(), "memory": mem,
            "RLIMIT_NOFILE": "%d/%d" % resource.getrlimit(resource.RLIMIT_NOFILE),
            "load average before the run (other work on the machine)": load}


def util(key, peer):
    """Median number of CPUs the proxy kept busy during the runs of a figure."""
    return median([r.get("util") for r in runs_log
                   if r["what"] == key and r["peer"] == peer and r["ok"]])


def build_table(fl, w):
    """Rows: (figure, {peer: cell}, floor cell, ratio to best peer, ratio to floor)."""
    rows = []

    def cost_row(label, key, nd, floor=None, rate_unit="", rate_nd=0, lower=True, scale=1.0):
        cells, costs = {}, {}
        for p in PEERS:
            r = results.get((key, p))
            if r is None or r["cost"] is None:
                cells[p] = ("n/a" if (p == "haproxy" and "smtp" in key) or
                            (p == "stunnel" and "-w" in key) else "-")
                continue
            costs[p] = r["cost"] * scale
            c = fmt(costs[p], nd)
            if rate_unit and r["rate"] is not None:
                c += f" ({r['rate']:.{rate_nd}f} {rate_unit})"
            cells[p] = c
        peers = [costs[p] for p in ("stunnel", "haproxy") if p in costs]
        best = (min(peers) if lower else max(peers)) if peers else None
        me = costs.get("stp")
        rb = me / best if me is not None and best else None
        rf = me / floor if me is not None and floor else None
        rows.append((label, cells, fmt(floor, nd) if floor else "", fmt(rb, 2), fmt(rf, 1)))

    aead = fl.get("aead", "AEAD").upper()
    for mode, mlabel in (("tls", "implicit TLS"), ("smtp", "SMTP STARTTLS")):
        for conns in (1, 8):
            cost_row(f"bulk, {mlabel}, {conns} conn{'s' if conns > 1 else ''}: CPU-s/GiB (MiB/s)",
                     f"bulk-{mode}-{conns}", 2, fl.get("bulk"), "MiB/s")
    for cert, clabel in (("ecdsa", "ECDSA P-256"), ("rsa", "RSA-2048")):
        for mode, mlabel in (("tls", "implicit TLS"), ("smtp", "SMTP STARTTLS")):
            cost_row(f"full handshake, {mlabel}, {clabel}: CPU-ms (handshakes/s)",
                     f"hs-{mode}-{cert}", 3, fl.get(f"hs-{cert}"), "/s")
    cost_row(f"RSS per idle TLS session, {ARGS.idle} open: KiB (sessions opened/s)",
             "idle", 1, None, "/s")
    if w > 1:
        cost_row(f"bulk, implicit TLS, 8 conns, workers = {w}: CPU-s/GiB (MiB/s)",
                 f"bulk-tls-8-w{w}", 2, fl.get("bulk"), "MiB/s")
        cost_row(f"full handshake, implicit TLS, ECDSA, workers = {w}: CPU-ms (handshakes/s)",
                 f"hs-tls-ecdsa-w{w}", 3, fl.get("hs-ecdsa"), "/s")
        # scaling: rate with w workers / rate with 1
        for key1, keyw, label in ((f"bulk-tls-8", f"bulk-tls-8-w{w}", "bulk MiB/s"),
                                  (f"hs-tls-ecdsa", f"hs-tls-ecdsa-w{w}", "handshakes/s")):
            cells = {}
            vals = {}
            for p in PEERS:
                a, b = results.get((key1, p)), results.get((keyw, p))
                if p == "stunnel":
                    cells[p] = "n/a"
                elif a and b and a["rate"] and b["rate"]:
                    vals[p] = b["rate"] / a["rate"]
                    u1, u2 = util(key1, p), util(keyw, p)
                    cells[p] = f"{vals[p]:.2f}" + (f" ({u1:.2f} → {u2:.2f} CPUs)" if u1 and u2 else "")
                else:
                    cells[p] = "-"
            rb = vals["stp"] / vals["haproxy"] if "stp" in vals and vals.get("haproxy") else None
            rows.append((f"scaling, {label}, {w} workers / 1 (HAProxy: nbthread)", cells,
                         "", fmt(rb, 2), ""))
    return rows


def render(rows):
    head = ["figure", "starttls-proxy", "stunnel", "HAProxy", "floor",
            "ratio to best peer", "ratio to floor"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for label, cells, floor, rb, rf in rows:
        lines.append("| " + " | ".join([label, cells["stp"], cells["stunnel"], cells["haproxy"],
                                         floor, rb, rf]) + " |")
    return "\n".join(lines)


def targets(w):
    out = []

    def ratio(key, peer="haproxy", field="cost"):
        a, b = results.get((key, "stp")), results.get((key, peer))
        if a and b and a[field] is not None and b[field]:
            return a[field] / b[field]
        return None

    def line(what, r, goal, lower=True):
        if r is None:
            out.append(f"- {what}: not measured")
            return
        met = r <= goal if lower else r >= goal
        out.append(f"- {what}: {r:.2f} (target {'≤' if lower else '≥'} {goal}) "
                   f"{'met' if met else 'MISSED'}")

    line("bulk CPU/GiB, implicit, 1 conn, ratio to HAProxy", ratio("bulk-tls-1"), 0.75)
    line("bulk CPU/GiB, implicit, 8 conns, ratio to HAProxy", ratio("bulk-tls-8"), 0.75)
    line("CPU per full handshake, implicit, ECDSA, ratio to HAProxy", ratio("hs-tls-ecdsa"), 0.8)
    line("RSS per idle TLS session, ratio to HAProxy", ratio("idle"), 0.75)
    r = results.get(("idle", "stp"))
    if r:
        e = r.get("errors")
        out.append(f"- {ARGS.idle} concurrent sessions on one worker without an error: "
                   f"{'met' if e == 0 else 'MISSED'} (worst run: {e} sessions failed)"
                   + ("" if ARGS.idle >= 10000 or ARGS.idle < IDLE_FIT else
                      f"; {ARGS.idle}, not 10,000: the hard RLIMIT_NOFILE here is "
                      f"{resource.getrlimit(resource.RLIMIT_NOFILE)[1]} (no CAP_SYS_RESOURCE to raise it), "
                      "which caps stunnel at 125/256 of it and each proxy at half of it"))
    if w > 1:
        for key1, keyw, what in (("bulk-tls-8", f"bulk-tls-8-w{w}", "bulk throughput"),
                                 ("hs-tls-ecdsa", f"hs-tls-ecdsa-w{w}", "handshakes per second")):
            a, b = results.get((key1, "stp")), results.get((keyw, "stp"))
            rr = b["rate"] / a["rate"] if a and b and a["rate"] and b["rate"] else None
            line(f"workers = {w}: {what}, ratio to one worker", rr, 1.7, lower=False)
    worse = []
    for (key, peer), r in results.items():
        if peer != "stp" or key.startswith("scaling"):
            continue
        peers = [results[(key, p)]["cost"] for p in ("stunnel", "haproxy")
                 if (key, p) in results and results[(key, p)]["cost"] is not None]
        if r["cost"] is not None and peers and r["cost"] > min(peers):
            worse.append(f"{key} ({r['cost'] / min(peers):.2f}× the best peer)")
    out.append("- every figure at least as good as the best peer's: " +
               ("met" if not worse else "MISSED for " + ", ".join(sorted(worse))))
    return out


def report(fl, w, w_note, elapsed, vers, mach):
    rows = build_table(fl, w)
    table = render(rows)
    neg = negotiated.get("bulk") or negotiated.get("hs-ecdsa") or {}
    negr = negotiated.get("hs-rsa") or {}
    md = []
    md.append("# starttls-proxy benchmark results\n")
    md.append(f"Written by `scripts/bench` on {datetime.datetime.now().strftime('%Y-%m-%d %H:%M')} "
              f"in {elapsed / 60:.1f} minutes{' (--quick: one run, small sizes; not for comparison)' if ARGS.quick else ''}.\n")
    md.append(f"Command line: `{ARGS.cmdline}`\n")
    md.append("## Machine\n")
    for k, v in mach.items():
        md.append(f"- {k}: {v}")
    md.append("\n## Versions\n")
    for k, v in vers.items():
        md.append(f"- {k}: {v}")
    md.append("\n## Results\n")
    md.append(table)
    md.append("")
    md.append(f"Each figure is the median of {ARGS.runs} run{'s' if ARGS.runs > 1 else ''}; "
              "the runs of the three proxies are interleaved. CPU is the proxy's own "
              "(utime + stime of all its threads and processes, from /proc); the wall-clock rate "
              "is in brackets. Costs: lower is better, and the ratios are starttls-proxy / the "
              "best (lowest) peer and starttls-proxy / the floor. Scaling rows: higher is better, "
              "and the ratio is starttls-proxy's / HAProxy's.\n")
    md.append("- Negotiated: " + ", ".join(f"{k} {neg.get(k, '-')}" for k in ("proto", "cipher", "group", "sig"))
              + f" (ECDSA certificate); RSA certificate: signature {negr.get('sig', '-')}. "
              "Nothing is forced: each proxy runs with its TLS defaults, the client offers OpenSSL's.")
    md.append(f"- Bulk: {ARGS.bulk_mib} MiB per run, split over the connections; implicit TLS sends raw "
              "bytes then close_notify; SMTP STARTTLS does greeting, EHLO, STARTTLS, handshake, EHLO, "
              "MAIL, RCPT, DATA, the payload as 64-byte CRLF lines, '.', QUIT. The sink checks "
              "that every byte arrived.")
    md.append(f"- Handshakes: {ARGS.hs_seconds} s per run, {ARGS.hs_concurrency} at a time, a fresh "
              "SSL per session, no session cache, no ticket (full handshakes only); each sends one "
              "line and reads one reply line through the proxy, then closes. stunnel's SMTP server "
              "mode waits 200 ms per session to see whether the client speaks TLS first, which "
              "bounds its STARTTLS handshakes/s, not its CPU per handshake.")
    lg_hs = median([r["lg_cpu"] * 1000 / int(r["res"]["handshakes"]) for r in runs_log
                    if r["ok"] and r["what"] == "hs-tls-ecdsa" and "lg_cpu" in r
                    and int(r["res"]["handshakes"]) > 0])
    lg_bulk = median([r["lg_cpu"] / (int(r["res"]["bytes"]) / GIB) for r in runs_log
                      if r["ok"] and r["what"].startswith("bulk-tls-") and "lg_cpu" in r
                      and int(r["res"]["bytes"]) > 0])
    if lg_hs or lg_bulk:
        md.append(f"- The load generator's own CPU (the client side, same machine): "
                  f"{fmt(lg_bulk, 2)} CPU-s/GiB in bulk, {fmt(lg_hs, 3)} CPU-ms per full "
                  "handshake (ECDSA): the handshake rates above are bounded by the client "
                  "side as much as by the proxy.")
    md.append(f"- Idle: (RSS with {ARGS.idle} sessions open − RSS before) / sessions, implicit TLS, "
              "ECDSA, each session handshaked and one line relayed; a fresh proxy per run, "
              "warmed up with 20 sessions. stunnel runs a thread per session.")
    if fl:
        md.append(f"- Floors (`openssl speed`, same run): {fl['aead']} with 16 KiB blocks "
                  f"{fl['aead_Bps'] / 1e9 if fl.get('aead_Bps') else 0:.2f} GB/s, i.e. "
                  f"{fmt(fl.get('bulk'), 3)} CPU-s/GiB (one decryption per byte relayed); "
                  f"ECDSA P-256 sign {fmt(fl.get('ecdsa_sign_s'), 0)}/s, RSA-2048 sign "
                  f"{fmt(fl.get('rsa_sign_s'), 0)}/s, {fl['kx']} {fmt(fl.get('kx_s'), 0)}/s; "
                  "a server handshake's floor is one signature + 2 × key exchange "
                  "(key generation and derivation).")
    md.append(f"- Workers: {w_note}")
    md.append("\n## Targets (issue 6)\n")
    md.extend(targets(w))
    md.append("\n## Every run\n")
    md.append("<details><summary>each run's figures</summary>\n")
    md.append("| proxy | figure | cert | workers | CPU s | result |")
    md.append("|---|---|---|---|---|---|")
    for r in runs_log:
        res = r["res"] or {}
        keep = {k: res[k] for k in ("bytes", "secs", "mib_s", "handshakes", "hs_s", "errors",
                                     "rss0_kib", "rssN_kib", "sessions") if k in res}
        md.append(f"| {LABEL[r['peer']]} | {r['what']} | {r['cert']} | {r['workers']} | "
                  f"{r['cpu']:.2f} | {'ok' if r['ok'] else 'FAILED'} "
                  + " ".join(f"{k}={v}" for k, v in keep.items()) + " |")
    md.append("\n</details>")
    return table, "\n".join(md) + "\n"


# ---------------------------------------------------------------- main

def make_certs(d):
    certs = []
    for name, alg in (("ecdsa", ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"]),
                      ("rsa", ["-newkey", "rsa:2048"])):
        crt, key, pem = (os.path.join(d, f"{name}.{x}") for x in ("crt", "key", "pem"))
        rc, _ = run(["openssl", "req", "-x509", "-nodes", "-days", "30", "-subj", "/CN=localhost",
                     "-addext", "subjectAltName=DNS:localhost", "-keyout", key, "-out", crt] + alg,
                    60, "openssl-req")
        if rc != 0:
            raise SystemExit("bench: openssl req failed")
        with open(pem, "w") as f:
            f.write(open(crt).read() + open(key).read())
        certs.append({"name": name, "crt": crt, "key": key, "pem": pem})
    return certs


def main():
    global ARGS, NPROC, MAXCONN, log_dir
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="one run, small sizes: for trying it")
    ap.add_argument("--workers", type=int, default=2,
                    help="also measure starttls-proxy with workers = N (default 2; 1: skip)")
    ap.add_argument("--runs", type=int, help="runs per figure (default 3; --quick: 1)")
    ap.add_argument("--bulk-mib", type=int, help="MiB per bulk run (default 512; --quick: 64)")
    ap.add_argument("--hs-seconds", type=float, help="seconds per handshake run (default 2; --quick: 1)")
    ap.add_argument("--hs-concurrency", type=int, default=16)
    ap.add_argument("--idle", type=int, help="idle sessions (default 10000, or what RLIMIT_NOFILE allows; --quick: 1000)")
    ap.add_argument("--idle-timeout", type=int, default=120)
    ap.add_argument("--speed-seconds", type=int, default=1)
    ap.add_argument("--peers", default="stp,stunnel,haproxy", help="which proxies (default all)")
    ap.add_argument("--skip", default="", help="comma-separated: bulk,handshake,idle,workers,floors")
    ap.add_argument("--stp", default=os.path.join(TOP, "build", "starttls-proxy"))
    ap.add_argument("--bindir", default=os.path.join(TOP, "build", "bench"))
    ap.add_argument("--out", help="where to write the report (default bench/RESULTS.md; "
                    "--quick: the run's log directory)")
    ap.add_argument("--cmdline", default=None)
    ap.add_argument("--source", default="", help="what the daemon was built from, for the report "
                    "(default: the git state of this tree)")
    ARGS = ap.parse_args()
    ARGS.cmdline = ARGS.cmdline or " ".join(shlex.quote(a) for a in sys.argv)
    q = ARGS.quick
    ARGS.runs = ARGS.runs or (1 if q else 3)
    ARGS.bulk_mib = ARGS.bulk_mib or (64 if q else 512)
    ARGS.hs_seconds = ARGS.hs_seconds or (1 if q else 2)
    ARGS.peers = [p for p in ARGS.peers.split(",") if p]
    skip = set(ARGS.skip.split(","))
    NPROC = len(os.sched_getaffinity(0))

    # descriptors: as many as the machine allows, for the proxies and the idle sessions
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    global IDLE_FIT
    IDLE_FIT = fit = min((hard * 125) // 256 - 15,      # stunnel allows max_fds * 125/256 clients
              (hard - 64) // 2)              # a proxy holds two descriptors per session
    ARGS.idle = ARGS.idle or min(1000 if q else 10000, fit)
    MAXCONN = min(ARGS.idle + 100, (hard - 64) // 2)

    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    log_dir = os.path.join(HERE, f"results-{stamp}")
    os.makedirs(log_dir, exist_ok=True)
    say(f"logs, configurations and certificates in {log_dir}")

    def on_signal(sig, frame):
        cleanup()
        raise SystemExit(f"bench: interrupted by signal {sig}")
    for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, on_signal)

    try:
        certs = make_certs(log_dir)
        ecdsa, rsa = certs
        sinks = {"raw": Sink(os.path.join(ARGS.bindir, "sink"), "raw"),
                 "smtp": Sink(os.path.join(ARGS.bindir, "sink"), "smtp")}
        vers, mach = versions(), machine()

        for cert in certs:
            if "bulk" in skip and "handshake" in skip:
                break
            say(f"bulk and handshakes, {cert['name']} certificate")
            inst = {p: Proxy(p, cert, sinks, maxconn=MAXCONN) for p in PEERS if p in ARGS.peers}
            try:
                if cert is ecdsa and "bulk" not in skip:
                    bulk_figures(inst, sinks)
                if "handshake" not in skip:
                    handshake_figures(inst, cert)
            finally:
                for i in inst.values():
                    i.close()

        if "idle" not in skip:
            say(f"idle sessions: {ARGS.idle} per run")
            idle_figures([p for p in PEERS if p in ARGS.peers], ecdsa, sinks)

        w = ARGS.workers
        w_note = "not measured"
        if w != 1 and "workers" not in skip:
            probe = os.path.join(log_dir, "workers-probe.conf")
            with open(probe, "w") as f:
                f.write(f'workers = {w};\nlisteners = ( {{ name = "p"; listen = "127.0.0.1:{free_port()}"; '
                        f'protocol = "tcp"; tls = {{ certificates = ( {{ cert = "{ecdsa["crt"]}"; '
                        f'key = "{ecdsa["key"]}"; }} ); }}; backend = {{ address = "127.0.0.1:9"; }}; }} );\n')
            rc, out = run([ARGS.stp, "-t", "-c", probe], 30, "workers-probe")
            if "configuration OK" in out:
                say(f"workers = {w}")
                workers_figures(ecdsa, sinks, w)
                w_note = (f"starttls-proxy with `workers = {w}` and HAProxy with `nbthread {w or NPROC}`, "
                          "bulk with 8 connections and handshakes, implicit TLS, ECDSA, against "
                          "the same proxy with one worker (one thread). The load generator and "
                          f"the sink run on the same {NPROC} CPUs as the proxy, so the scaling "
                          "rows are bounded by the CPU they leave to it: in brackets, the CPUs "
                          "the proxy kept busy (CPU-s / wall-s) with one worker and with "
                          f"{w}. stunnel has no such setting (a thread per session, on every "
                          "CPU in all the rows above).")
                u = util("hs-tls-ecdsa", "stp"), util("bulk-tls-8", "stp")
                if all(u) and max(u) < 0.9:
                    w_note += (f" With one worker the daemon kept only {u[0]:.2f} CPUs busy in "
                               f"handshakes and {u[1]:.2f} in bulk: it was not the bottleneck, so "
                               f"a second worker cannot raise the rates on {NPROC} CPUs shared "
                               "with the load generator; the 1.7× target needs CPUs to spare "
                               "(or the generator on another machine).")
            else:
                say(f"workers = {w}: not supported by this build (starttls-proxy -t refused it)")
                w = 1
                w_note = (f"`workers = {ARGS.workers}` is not supported by this build "
                          f"(`starttls-proxy -t` refused it; see {os.path.relpath(log_dir, TOP)}"
                          "/workers-probe.log): only one worker measured.")
        else:
            w = 1

        fl = {}
        if "floors" not in skip:
            say("floors: openssl speed")
            neg = negotiated.get("bulk") or negotiated.get("hs-ecdsa") or {}
            fl = floors(neg.get("cipher", "TLS_AES_256_GCM_SHA384"), neg.get("group", "x25519"))

        for s in sinks.values():
            stop(s.p)
        elapsed = time.monotonic() - t0
        with open("/proc/loadavg") as f:
            mach["load average after the run (including the bench)"] = " ".join(f.read().split()[:3])
        table, md = report(fl, w, w_note, elapsed, vers, mach)
        out = ARGS.out or (os.path.join(log_dir, "RESULTS.md") if q else os.path.join(HERE, "RESULTS.md"))
        with open(out, "w") as f:
            f.write(md)
        with open(os.path.join(log_dir, "RESULTS.md"), "w") as f:
            f.write(md)
        print(table)
        print()
        print("\n".join(targets(w)))
        say(f"done in {elapsed / 60:.1f} minutes; report written to {os.path.relpath(out, TOP)}")
        failed = [r for r in runs_log if not r["ok"]]
        if failed:
            say(f"{len(failed)} run(s) failed: see the report and {log_dir}")
        return 1 if failed else 0
    finally:
        cleanup()


if __name__ == "__main__":
    sys.exit(main())
