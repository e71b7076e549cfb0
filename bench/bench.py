#!/usr/bin/env python3
"""The benchmark: starttls-proxy against stunnel4, HAProxy and nginx.

Run by scripts/bench, which builds the daemon, bench/loadgen and bench/sink
first.  Each proxy in turn relays, on loopback, to the same plaintext sinks
(bench/sink), with the same certificate (ECDSA P-256, and RSA-2048 for one
handshake figure) and the same TLS versions (1.2 and 1.3: nginx 1.22 leaves
1.3 out by default, so its configuration names both).  A proxy's cost is its
own CPU time (utime + stime of all its threads and processes, read from
/proc before and after a run) or its RSS; wall-clock rates are shown apart.
Every figure is the median of --runs runs (3 by default), with the spread
(min-max) of the runs beside it, and the runs of the proxies are interleaved
(the order rotates from run to run) so that a change of the background load
hits them alike.

Figures: a plaintext relay (the system-call floor); bulk relay CPU-s per GiB,
1 and 8 connections, implicit TLS and SMTP STARTTLS (DATA of 64-byte lines);
CPU per full handshake (implicit TLS, ECDSA and RSA); CPU per SMTP STARTTLS
session and one client's session latency; RSS per idle session (implicit TLS
and SMTP STARTTLS); the floors from `openssl speed`.  nginx is its mail proxy
for SMTP and its stream module for implicit TLS and plaintext.
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
PEERS = ("stp", "stunnel", "haproxy", "nginx")
OTHERS = ("stunnel", "haproxy", "nginx")
LABEL = {"stp": "starttls-proxy", "stunnel": "stunnel", "haproxy": "HAProxy", "nginx": "nginx"}
# what each proxy can do: plain = a tcp relay without TLS, tls = implicit TLS
# in front of a tcp backend, smtp = SMTP with STARTTLS (the proxy plays it)
CAN = {"stp": {"plain", "tls", "smtp"}, "stunnel": {"tls", "smtp"},
       "haproxy": {"plain", "tls"}, "nginx": {"plain", "tls", "smtp"}}
NGINX_MODULES = "/usr/lib/nginx/modules"

children = []           # every process we started, for the clean-up
log_dir = None
t0 = time.monotonic()
loads = []              # (figure, the 1-minute load average at its start)


def say(msg):
    print(f"[{time.monotonic() - t0:6.1f}s] {msg}", file=sys.stderr, flush=True)


def loadavg():
    with open("/proc/loadavg") as f:
        return f.read().split()[:3]


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


# ---------------------------------------------------------------- the sinks

class Sink:
    def __init__(self, binary, mode, *extra):
        self.p = spawn([binary, mode, "0"] + [str(x) for x in extra], f"sink-{mode}",
                       stdout=subprocess.PIPE)
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
    """One running instance of a proxy with a listener per service it can do
    (of those asked for): plain (tcp, no TLS), tls (implicit TLS), smtp
    (SMTP STARTTLS), all in front of the sinks."""

    def __init__(self, kind, cert, sinks, services=("plain", "tls", "smtp"), workers=1,
                 maxconn=10000, tag=""):
        self.kind, self.cert, self.workers, self.maxconn = kind, cert, workers, maxconn
        self.ports = {s: free_port() for s in services if s in CAN[kind]}
        name = f"{kind}-{cert['name']}-w{workers}{tag}"
        self.name = name
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

    def command(self):
        if self.kind == "stp":
            return [ARGS.stp, "-f", "-c", self.cfg]
        if self.kind == "stunnel":
            return ["stunnel", self.cfg]
        if self.kind == "haproxy":
            return ["haproxy", "-f", self.cfg, "-db"]
        return ["nginx", "-p", log_dir, "-c", self.cfg,
                "-e", os.path.join(log_dir, f"{self.name}.error.log")]

    def config(self, cert, sinks):
        c, k = cert["crt"], cert["key"]
        raw, smtp = sinks["raw"].port, sinks["smtp"].port
        P = self.ports
        if self.kind == "stp":
            w = f"workers = {self.workers};\n" if self.workers != 1 else ""
            tls = f'tls = {{ certificates = ( {{ cert = "{c}"; key = "{k}"; }} ); }};'
            ls = []
            if "plain" in P:
                ls.append(f'  {{ name = "plain"; listen = "127.0.0.1:{P["plain"]}"; protocol = "tcp";\n'
                          f'    client_tls = "none"; backend = {{ address = "127.0.0.1:{raw}"; }}; }}')
            if "tls" in P:
                ls.append(f'  {{ name = "tls"; listen = "127.0.0.1:{P["tls"]}"; protocol = "tcp";\n'
                          f'    {tls}\n    backend = {{ address = "127.0.0.1:{raw}"; }}; }}')
            if "smtp" in P:
                ls.append(f'  {{ name = "smtp"; listen = "127.0.0.1:{P["smtp"]}"; protocol = "smtp";\n'
                          f'    {tls}\n    backend = {{ address = "127.0.0.1:{smtp}"; }}; }}')
            return (f"# starttls-proxy, written by bench/bench.py\nlog_level = \"warning\";\n"
                    f"max_connections = {max(self.maxconn, 10000)};\n{w}listeners = (\n"
                    + ",\n".join(ls) + "\n);\n")
        if self.kind == "stunnel":
            out = "; stunnel, written by bench/bench.py\nforeground = yes\npid =\ndebug = 3\n"
            if "tls" in P:
                out += f"[tls]\naccept = 127.0.0.1:{P['tls']}\nconnect = 127.0.0.1:{raw}\ncert = {c}\nkey = {k}\n"
            if "smtp" in P:
                out += (f"[smtp]\naccept = 127.0.0.1:{P['smtp']}\nconnect = 127.0.0.1:{smtp}\n"
                        f"cert = {c}\nkey = {k}\n"
                        "; in server mode stunnel plays the STARTTLS side of SMTP itself\n"
                        "protocol = smtp\n")
            return out
        if self.kind == "haproxy":
            out = (f"# HAProxy, written by bench/bench.py\nglobal\n  nbthread {self.workers or NPROC}\n"
                   f"  maxconn {self.maxconn}\ndefaults\n  mode tcp\n  timeout connect 10s\n"
                   "  timeout client 900s\n  timeout server 900s\n"
                   f"backend sink\n  server sink 127.0.0.1:{raw}\n")
            if "tls" in P:
                out += f"frontend tls\n  bind 127.0.0.1:{P['tls']} ssl crt {cert['pem']}\n  default_backend sink\n"
            if "plain" in P:
                out += f"frontend plain\n  bind 127.0.0.1:{P['plain']}\n  default_backend sink\n"
            return out
        # nginx: one process (master_process off), so that it dies with us;
        # its mail proxy for SMTP, its stream module for tls and plain
        conns = min(2 * self.maxconn + 200, resource.getrlimit(resource.RLIMIT_NOFILE)[1])
        d = log_dir
        out = (f"# nginx, written by bench/bench.py\n"
               f"load_module {NGINX_MODULES}/ngx_mail_module.so;\n"
               f"load_module {NGINX_MODULES}/ngx_stream_module.so;\n"
               f"daemon off;\nmaster_process off;\nworker_processes 1;\n"
               f"pid {d}/{self.name}.pid;\nlock_file {d}/{self.name}.lock;\n"
               f"error_log {d}/{self.name}.error.log warn;\n"
               f"events {{ worker_connections {conns}; }}\n")
        tlsconf = (f"    ssl_certificate {c};\n    ssl_certificate_key {k};\n"
                   "    ssl_protocols TLSv1.2 TLSv1.3;\n")
        if "smtp" in P:
            out += ("mail {\n  server_name localhost;\n"
                    f"  auth_http 127.0.0.1:{sinks['auth'].port}/auth;\n"
                    "  xclient off;\n  proxy on;\n"
                    f"  server {{\n    listen 127.0.0.1:{P['smtp']};\n    protocol smtp;\n"
                    "    smtp_auth none;\n    starttls only;\n" + tlsconf + "  }\n}\n")
        if "tls" in P or "plain" in P:
            out += "stream {\n"
            if "tls" in P:
                out += (f"  server {{\n    listen 127.0.0.1:{P['tls']} ssl;\n" + tlsconf +
                        f"    proxy_pass 127.0.0.1:{raw};\n  }}\n")
            if "plain" in P:
                out += f"  server {{\n    listen 127.0.0.1:{P['plain']};\n    proxy_pass 127.0.0.1:{raw};\n  }}\n"
            out += "}\n"
        return out

    def alive(self):
        return self.p.poll() is None

    def close(self):
        stop(self.p)


# ---------------------------------------------------------------- measurements

runs_log = []          # every run, for RESULTS.md
results = {}           # (figure key, peer) -> dict(cost=, lo=, hi=, rate=, n=, ...)
negotiated = {}        # (peer, cert name) -> a loadgen result with the TLS parameters


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
    if ok and res.get("proto", "-") != "-":
        negotiated.setdefault((proxy.kind, proxy.cert["name"]), res)
    if not ok:
        say(f"  {proxy.kind} {what}: FAILED (rc={rc}) {res}")
        return None
    return rec


def median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def record(key, peer, costs, rates, extra=None):
    cs = [c for c in costs if c is not None]
    results[(key, peer)] = {"cost": median(cs), "lo": min(cs) if cs else None,
                            "hi": max(cs) if cs else None, "rate": median(rates),
                            "n": len(cs), **(extra or {})}


def rotated(peers, r):
    """The peers in the order of run r: each run starts with another peer."""
    peers = list(peers)
    k = r % len(peers) if peers else 0
    return peers[k:] + peers[:k]


def figure_start(key):
    loads.append((key, loadavg()[0]))


def say_figure(key, nd, unit):
    say(f"  {key}: " + ", ".join(
        f"{p} {fmt(results[(key, p)]['cost'], nd)} {unit}" for p in PEERS if (key, p) in results))


def bulk_figures(inst, sinks):
    total = ARGS.bulk_mib << 20
    for mode in ("plain", "tls", "smtp"):
        for conns in (1, 8):
            key = f"bulk-{mode}-{conns}"
            figure_start(key)
            peers = [p for p in inst if mode in inst[p].ports]
            per = {p: ([], []) for p in peers}
            for r in range(ARGS.runs):
                for peer in rotated(peers, r):
                    i = inst[peer]
                    args = ["bulk", "-c", str(conns), "-b", str(total // conns),
                            "-T", str(min(conns, NPROC)), "-w", "300"]
                    if mode != "tls":
                        args.append("--" + mode)
                    args.append(f"127.0.0.1:{i.ports[mode]}")
                    rec = measure(i, key, args, 330, sinks["smtp" if mode == "smtp" else "raw"],
                                  total)
                    if rec:
                        gib = int(rec["res"]["bytes"]) / GIB
                        per[peer][0].append(rec["cpu"] / gib)
                        per[peer][1].append(float(rec["res"]["mib_s"]))
            for peer, (c, w) in per.items():
                record(key, peer, c, w)
            say_figure(key, 2, "CPU-s/GiB")


def handshake_figures(inst, cert):
    key = f"hs-tls-{cert['name']}"
    figure_start(key)
    peers = [p for p in inst if "tls" in inst[p].ports]
    per = {p: ([], []) for p in peers}
    for r in range(ARGS.runs):
        for peer in rotated(peers, r):
            i = inst[peer]
            args = ["handshake", "-c", str(ARGS.hs_concurrency), "-n", "100000000",
                    "-d", str(ARGS.hs_seconds), "-T", str(NPROC), "-w", str(ARGS.hs_seconds + 20),
                    f"127.0.0.1:{i.ports['tls']}"]
            rec = measure(i, key, args, ARGS.hs_seconds + 40)
            if rec:
                n = int(rec["res"]["handshakes"])
                if n > 0:
                    per[peer][0].append(rec["cpu"] * 1000 / n)
                    per[peer][1].append(float(rec["res"]["hs_s"]))
    for peer, (c, w) in per.items():
        record(key, peer, c, w)
    say_figure(key, 3, "CPU-ms")


def session_figures(inst):
    """CPU per SMTP STARTTLS session, N at a time; then one client's latency."""
    peers = [p for p in inst if "smtp" in inst[p].ports]
    for key, extra in (("sess-smtp", []), ("sess-smtp-notxn", ["--no-txn"])):
        if key == "sess-smtp-notxn" and "notxn" in SKIP:
            continue
        figure_start(key)
        per = {p: ([], []) for p in peers}
        for r in range(ARGS.runs):
            for peer in rotated(peers, r):
                i = inst[peer]
                args = ["session"] + extra + ["-c", str(ARGS.hs_concurrency), "-n", "100000000",
                                              "-d", str(ARGS.hs_seconds), "-T", str(NPROC),
                                              "-w", str(ARGS.hs_seconds + 20),
                                              f"127.0.0.1:{i.ports['smtp']}"]
                rec = measure(i, key, args, ARGS.hs_seconds + 40)
                if rec:
                    n = int(rec["res"]["ok"])
                    if n > 0:
                        per[peer][0].append(rec["cpu"] * 1000 / n)
                        per[peer][1].append(float(rec["res"]["hs_s"]))
        for peer, (c, w) in per.items():
            record(key, peer, c, w)
        say_figure(key, 3, "CPU-ms")
    key = "lat-smtp"
    figure_start(key)
    per = {p: ([], [], [], []) for p in peers}
    for r in range(ARGS.runs):
        for peer in rotated(peers, r):
            i = inst[peer]
            args = ["session", "-c", "1", "-T", "1", "-n", "100000000", "-d", str(ARGS.lat_seconds),
                    "-w", str(ARGS.lat_seconds + 20), f"127.0.0.1:{i.ports['smtp']}"]
            rec = measure(i, key, args, ARGS.lat_seconds + 40)
            if rec and int(rec["res"]["lat_n"]) > 0:
                res = rec["res"]
                per[peer][0].append(float(res["lat_p50_ms"]))
                per[peer][1].append(float(res["hs_s"]))
                per[peer][2].append(float(res["lat_p90_ms"]))
                per[peer][3].append(float(res["lat_p99_ms"]))
    for peer, (c, w, p90, p99) in per.items():
        record(key, peer, c, w, {"p90": median(p90), "p99": median(p99)})
    say_figure(key, 2, "ms p50")


def idle_figures(peers, cert, sinks, mode):
    """RSS per idle session: a fresh proxy per run, warmed up, then N sessions held."""
    n = ARGS.idle
    key = f"idle-{mode}"
    figure_start(key)
    peers = [p for p in peers if mode in CAN[p]]
    per = {p: ([], []) for p in peers}
    errs = {p: [] for p in peers}
    hopeless = set()
    smtp = ["--smtp"] if mode == "smtp" else []
    for r in range(ARGS.runs):
        for peer in rotated(peers, r):
            if peer in hopeless:
                continue
            inst = Proxy(peer, cert, sinks, services=(mode,), maxconn=MAXCONN,
                         tag=f"-{key}{r}")
            try:
                port = inst.ports[mode]
                # a few sessions first, so that what is set up once is in RSS at 0
                loadgen(["handshake"] + smtp + ["-c", "4", "-n", "20", "-w", "60",
                                                f"127.0.0.1:{port}"], 90, f"loadgen-{peer}")
                time.sleep(0.5)
                rss0 = rss_kib(inst.pid)
                cpu0 = cpu_seconds(inst.pid)
                lg = spawn([os.path.join(ARGS.bindir, "loadgen"), "idle"] + smtp +
                           ["-c", str(n), "-T", str(NPROC), "-o", "64",
                            "-w", str(ARGS.idle_timeout), f"127.0.0.1:{port}"],
                           f"loadgen-{peer}-{key}", stdin=subprocess.PIPE, stdout=subprocess.PIPE)
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
                    say(f"  {peer} {key}: {opened} of {n} open, {bad} errors, proxy alive: {alive}")
                if opened == 0:
                    hopeless.add(peer)      # no point in waiting for the other runs
            finally:
                inst.close()
    for peer in peers:
        record(key, peer, per[peer][0], per[peer][1], {"errors": max(errs[peer] or [n])})
    say_figure(key, 1, "KiB")


def workers_figures(cert, sinks, w):
    """starttls-proxy with workers = w against itself with 1, HAProxy nbthread w against 1."""
    peers = [p for p in ("stp", "haproxy") if p in ARGS.peers]
    inst = {}
    try:
        for p in peers:
            inst[p] = Proxy(p, cert, sinks, services=("tls",), workers=w, maxconn=MAXCONN)
        total = ARGS.bulk_mib << 20
        per_b = {p: ([], []) for p in inst}
        per_h = {p: ([], []) for p in inst}
        for r in range(ARGS.runs):
            for p in rotated(inst, r):
                i = inst[p]
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
    f["crypto"] = GIB / f["aead_Bps"] if f["aead_Bps"] else None
    if f["kx_s"]:
        f["hs-ecdsa"] = 1000 / f["ecdsa_sign_s"] + 2000 / f["kx_s"] if f["ecdsa_sign_s"] else None
        f["hs-rsa"] = 1000 / f["rsa_sign_s"] + 2000 / f["kx_s"] if f["rsa_sign_s"] else None
    return f


def relay_floor(conns):
    """The best plaintext relay of the run with that many connections (CPU-s/GiB)."""
    xs = [results[(f"bulk-plain-{conns}", p)]["cost"] for p in PEERS
          if (f"bulk-plain-{conns}", p) in results and results[(f"bulk-plain-{conns}", p)]["cost"]]
    return min(xs) if xs else None


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
    ngx = [l.strip() for l in cmd(["nginx", "-V"]).splitlines()[:2]]
    pk = cmd(["dpkg-query", "-W", "-f=${Package} ${Version}; ", "nginx-light", "libnginx-mod-mail",
              "libnginx-mod-stream"]).strip()
    return {"starttls-proxy": "; ".join(l.strip() for l in cmd([ARGS.stp, "-V"]).splitlines() if l.strip()),
            "starttls-proxy source (when the bench started)": source,
            "stunnel": "; ".join(l.strip() for l in st[:3]),
            "HAProxy": cmd(["haproxy", "-v"]).splitlines()[0].strip(),
            "nginx": "; ".join(ngx) + f" (Debian packages: {pk.rstrip('; ')})",
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
    return {"nproc": NPROC, "cpu": model, "kernel": platform.release(), "memory": mem,
            "RLIMIT_NOFILE": "%d/%d" % resource.getrlimit(resource.RLIMIT_NOFILE),
            "load average before the run (other work on the machine)": " ".join(loadavg())}


def util(key, peer):
    """Median number of CPUs the proxy kept busy during the runs of a figure."""
    return median([r.get("util") for r in runs_log
                   if r["what"] == key and r["peer"] == peer and r["ok"]])


# The rows: key, label, digits, the target (None, or (goal, peers the goal is
# relative to, or None for an absolute goal)), the unit of the rate.
def row_specs(w):
    rows = []
    for conns in (1, 8):
        rows.append((f"bulk-plain-{conns}", f"plaintext relay (no TLS), {conns} conn{'s' if conns > 1 else ''}: "
                     "CPU-s/GiB", 2, None, "MiB/s"))
    for conns in (1, 8):
        rows.append((f"bulk-tls-{conns}", f"bulk, implicit TLS, {conns} conn{'s' if conns > 1 else ''}: CPU-s/GiB",
                     2, (0.75, ("haproxy",)), "MiB/s"))
    for cert, clabel in (("ecdsa", "ECDSA P-256"), ("rsa", "RSA-2048")):
        rows.append((f"hs-tls-{cert}", f"full handshake, implicit TLS, {clabel}: CPU-ms", 3,
                     (0.8, ("haproxy",)), "/s"))
    rows.append(("idle-tls", f"RSS per idle TLS session, implicit, {ARGS.idle} open: KiB", 1,
                 (0.75, ("haproxy",)), "opened/s"))
    rows.append(("sess-smtp", "CPU per SMTP STARTTLS session (greeting, EHLO, STARTTLS, handshake, "
                 "EHLO, MAIL, RCPT, NOOP, QUIT), ECDSA: CPU-ms", 3, (0.8, ("nginx",)), "/s"))
    rows.append(("sess-smtp-notxn", "the same without EHLO, MAIL, RCPT after the handshake "
                 "(nginx then never opens its backend): CPU-ms", 3, None, "/s"))
    rows.append(("idle-smtp", f"RSS per idle SMTP STARTTLS session (after RCPT, NOOP), {ARGS.idle} open: KiB",
                 1, (0.75, ("nginx",)), "opened/s"))
    for conns in (1, 8):
        rows.append((f"bulk-smtp-{conns}", f"bulk, SMTP STARTTLS, DATA of 64-byte lines, {conns} "
                     f"conn{'s' if conns > 1 else ''}: CPU-s/GiB", 2, (0.75, ("nginx", "stunnel")), "MiB/s"))
    rows.append(("lat-smtp", "one SMTP STARTTLS session's latency, one client, p50: ms", 2,
                 (2.0, None), "sessions/s"))
    if w > 1:
        rows.append((f"bulk-tls-8-w{w}", f"bulk, implicit TLS, 8 conns, workers = {w}: CPU-s/GiB",
                     2, None, "MiB/s"))
        rows.append((f"hs-tls-ecdsa-w{w}", f"full handshake, implicit TLS, ECDSA, workers = {w}: CPU-ms",
                     3, None, "/s"))
    return [r for r in rows if any((r[0], p) in results for p in PEERS)]


def floor_of(key, fl):
    """(floor value, how it is made) for a row, or (None, "")."""
    m = re.match(r"bulk-(tls|smtp)-(\d+)$", key)
    if m:
        relay = relay_floor(int(m.group(2)))
        if fl.get("crypto") and relay:
            return fl["crypto"] + relay, f"{fl['crypto']:.2f} + {relay:.2f}"
        if fl.get("crypto"):
            return fl["crypto"], f"{fl['crypto']:.2f} (crypto)"
        return None, ""
    v = (fl.get("hs-ecdsa") if key.startswith(("hs-tls-ecdsa", "sess-smtp")) else
         fl.get("hs-rsa") if key == "hs-tls-rsa" else None)
    return v, fmt(v, 3) if v else ""


def verdicts(w, fl):
    """Per row: (spec, cells, floor text, best peer, ratio to best, target text,
    ratio to the target, MET/MISSED)."""
    out = []
    for key, label, nd, target, _unit in row_specs(w):
        cells, costs = {}, {}
        for p in PEERS:
            r = results.get((key, p))
            mode = "smtp" if "smtp" in key else "plain" if "plain" in key else "tls"
            if mode not in CAN[p] or (re.search(r"-w\d+$", key) and p in ("stunnel", "nginx")):
                cells[p] = "n/a"
                continue
            if r is None or r["cost"] is None:
                cells[p] = "-"
                continue
            costs[p] = r["cost"]
            c = fmt(r["cost"], nd)
            if r["n"] > 1:
                c += f" ({fmt(r['lo'], nd)}–{fmt(r['hi'], nd)})"
            if key.startswith("idle-") and r.get("errors"):
                c += f" [{r['errors']} failed]"
            cells[p] = c
        others = {p: costs[p] for p in OTHERS if p in costs}
        best = min(others, key=others.get) if others else None
        me = costs.get("stp")
        rb = me / others[best] if me is not None and best else None
        fval, ftext = floor_of(key, fl)
        ttext, rt, verdict = "", None, ""
        if target:
            goal, tpeers = target
            if tpeers is None:
                ttext = f"≤ {goal:g} ms"
                rt = me
                verdict = "-" if me is None else "MET" if me <= goal else "MISSED"
            else:
                tp = {p: others[p] for p in tpeers if p in others}
                names = " and ".join(LABEL[p] for p in tpeers)
                ttext = f"≤ {goal:g} × {'the best of ' if len(tpeers) > 1 else ''}{names}"
                if me is not None and tp:
                    rt = me / min(tp.values())
                    verdict = "MET" if rt <= goal else "MISSED"
                else:
                    verdict = "-"
        out.append({"key": key, "label": label, "nd": nd, "cells": cells, "floor": ftext,
                    "fval": fval, "best": best, "rb": rb, "ttext": ttext, "rt": rt,
                    "verdict": verdict, "abs": target is not None and target[1] is None})
    return out


def render(vs):
    head = ["figure", "starttls-proxy", "stunnel", "HAProxy", "nginx", "floor",
            "best peer", "ratio to best peer", "target", "ratio to target", ""]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for v in vs:
        c = v["cells"]
        rt = fmt(v["rt"], 2) + (" ms" if v["abs"] and v["rt"] is not None else "")
        lines.append("| " + " | ".join([v["label"], c["stp"], c["stunnel"], c["haproxy"], c["nginx"],
                                         v["floor"], LABEL.get(v["best"], "-"), fmt(v["rb"], 2),
                                         v["ttext"], rt if v["ttext"] else "", v["verdict"]]) + " |")
    return "\n".join(lines)


def render_rates(w):
    head = ["figure", "starttls-proxy", "stunnel", "HAProxy", "nginx"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for key, label, nd, target, unit in row_specs(w):
        cells = []
        for p in PEERS:
            r = results.get((key, p))
            if r is None or r["rate"] is None:
                cells.append("-")
                continue
            c = f"{r['rate']:.0f} {unit}" if r["rate"] >= 10 else f"{r['rate']:.1f} {unit}"
            if key == "lat-smtp":
                c += f"; p90 {fmt(r.get('p90'), 2)}, p99 {fmt(r.get('p99'), 2)} ms"
            u = util(key, p)
            if u is not None and not key.startswith(("idle", "lat")):
                c += f" ({u:.2f} CPUs)"
            cells.append(c)
        lines.append("| " + " | ".join([label.split(":")[0]] + cells) + " |")
    return "\n".join(lines)


def neg_text(peer):
    e, r = negotiated.get((peer, "ecdsa")), negotiated.get((peer, "rsa"))
    if not e:
        return "-"
    t = f"{e['proto']} {e['cipher']} {e['group']}"
    if r:
        t += f"; RSA signature {r['sig']}"
    return t


def report(fl, w, w_note, elapsed, vers, mach):
    vs = verdicts(w, fl)
    table = render(vs)
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
    md.append(f"Each figure is the median of {ARGS.runs} run{'s' if ARGS.runs > 1 else ''}, "
              "with the spread of the runs (min–max) in brackets; the runs of the proxies are "
              "interleaved (one run of each in turn, the order rotating from run to run). "
              "CPU is the proxy's own (utime + stime of all its threads and processes, from "
              "/proc); RSS is the sum over its processes. Lower is better everywhere. \"ratio to "
              "best peer\" is starttls-proxy / the best (lowest) of the other proxies; \"ratio to "
              "target\" is starttls-proxy / the proxy the issue names (for bulk SMTP, the better "
              "of nginx and stunnel), against the target; for the latency it is starttls-proxy's "
              "p50 itself. n/a: the proxy cannot do it.\n")
    md.append("Rates (wall clock, medians; in brackets the CPUs the proxy kept busy, CPU-s / wall-s):\n")
    md.append(render_rates(w))
    md.append("")
    md.append("### What was measured\n")
    negs = {p: neg_text(p) for p in PEERS if negotiated.get((p, "ecdsa"))}
    if len(set(negs.values())) == 1:
        negs_text = f"{next(iter(negs.values()))} with every proxy"
    else:
        negs_text = "; ".join(f"{LABEL[p]}: {t}" for p, t in negs.items())
    md.append("- TLS: each proxy with TLS 1.2 and 1.3 enabled and otherwise its own defaults; "
              f"the client offers OpenSSL's defaults. Negotiated: {negs_text}.")
    md.append(f"- Plaintext relay: {ARGS.bulk_mib} MiB per run through a tcp relay without TLS "
              "(starttls-proxy `protocol = \"tcp\"; client_tls = \"none\"`, HAProxy `mode tcp`, nginx "
              "`stream` with `proxy_pass`; stunnel cannot relay without TLS): the system-call floor. "
              "The floor of a bulk TLS row is the AEAD's cost from `openssl speed` (one decryption "
              "per byte relayed) + the best plaintext relay of the run with as many connections.")
    md.append(f"- Bulk: {ARGS.bulk_mib} MiB per run, split over the connections; implicit TLS sends "
              "raw bytes then close_notify; SMTP STARTTLS does greeting, EHLO, STARTTLS, handshake, "
              "EHLO, MAIL, RCPT, DATA, the payload as 64-byte CRLF lines, '.', QUIT. The sink checks "
              "that every byte arrived.")
    md.append(f"- Handshakes: {ARGS.hs_seconds:g} s per run, {ARGS.hs_concurrency} at a time, a fresh "
              "SSL per session, no session cache, no ticket (full handshakes only); each sends one "
              "line and reads one reply line through the proxy, then closes.")
    md.append(f"- SMTP sessions: {ARGS.hs_seconds:g} s per run, {ARGS.hs_concurrency} at a time, full "
              "handshakes as above: greeting, EHLO, STARTTLS, handshake, EHLO, MAIL FROM, RCPT TO, "
              "NOOP, QUIT. MAIL and RCPT are there because nginx's mail proxy with `smtp_auth none` "
              "opens its backend only at RCPT TO (it answers the greeting, EHLO, STARTTLS, MAIL and "
              "NOOP itself, asks auth_http at RCPT, then replays EHLO, MAIL, RCPT to the backend and "
              "relays from there on): without them nginx would do a session's work without a "
              "backend connection while the others open one at accept. The row without them "
              "(greeting, EHLO, STARTTLS, handshake, NOOP, QUIT, as the issue words it) is shown "
              "for what it is: there nginx's NOOP never reaches the backend.")
    md.append(f"- Latency: one client, sequential sessions as above for {ARGS.lat_seconds:g} s per run, "
              "each timed from just before connect(2) to the reply to its NOOP; the figure is the "
              "median of the runs' p50s (p90 and p99 in the rates table).")
    md.append(f"- Idle: (RSS with {ARGS.idle} sessions open − RSS before) / sessions, ECDSA; implicit "
              "TLS: each session handshaked and one line relayed; SMTP STARTTLS: greeting, EHLO, "
              "STARTTLS, handshake, EHLO, MAIL, RCPT, NOOP, so that every proxy holds its backend "
              "connection too; a fresh proxy per run, warmed up with 20 sessions.")
    lg_lat = median([r["lg_cpu"] * 1000 / int(r["res"]["lat_n"]) for r in runs_log
                     if r["ok"] and r["what"] == "lat-smtp" and r["peer"] == "stp"
                     and int(r["res"].get("lat_n", 0)) > 0])
    if lg_lat:
        md.append(f"- The client's own CPU per session in starttls-proxy's latency runs: "
                  f"{lg_lat:.2f} ms (its side of the handshake and of the dialogue), part of "
                  "every session's latency on this machine.")
    lg_hs = median([r["lg_cpu"] * 1000 / int(r["res"]["handshakes"]) for r in runs_log
                    if r["ok"] and r["what"] == "hs-tls-ecdsa" and "lg_cpu" in r
                    and int(r["res"]["handshakes"]) > 0])
    lg_bulk = median([r["lg_cpu"] / (int(r["res"]["bytes"]) / GIB) for r in runs_log
                      if r["ok"] and r["what"].startswith("bulk-tls-") and "lg_cpu" in r
                      and int(r["res"]["bytes"]) > 0])
    if lg_hs or lg_bulk:
        md.append(f"- The load generator's own CPU (the client side, same machine): "
                  f"{fmt(lg_bulk, 2)} CPU-s/GiB in bulk TLS, {fmt(lg_hs, 3)} CPU-ms per full "
                  "handshake (ECDSA): the rates are bounded by the client side as much as by the proxy.")
    if fl:
        md.append(f"- Floors (`openssl speed`, same run): {fl['aead']} with 16 KiB blocks "
                  f"{fl['aead_Bps'] / 1e9 if fl.get('aead_Bps') else 0:.2f} GB/s, i.e. "
                  f"{fmt(fl.get('crypto'), 3)} CPU-s/GiB; ECDSA P-256 sign "
                  f"{fmt(fl.get('ecdsa_sign_s'), 0)}/s, RSA-2048 sign {fmt(fl.get('rsa_sign_s'), 0)}/s, "
                  f"{fl['kx']} {fmt(fl.get('kx_s'), 0)}/s; a server handshake's floor is one "
                  "signature + 2 × key exchange (key generation and derivation).")
    md.append("- Load: the 1-minute load average at the start of each figure: "
              + ", ".join(f"{k} {l}" for k, l in loads) +
              " (the bench itself adds up to 2: the proxy, the load generator and the sinks; "
              "stunnel's thread per session adds to it while it holds the idle sessions).")
    if w > 1:
        md.append(f"- Workers: {w_note}")
    md.append("")
    md.append("### How each peer was set up, and what it did\n")
    md.extend(PEER_NOTES)
    md.append("\n## Targets (issue: performance, round 2)\n")
    md.extend(targets(vs))
    md.append("\n## Every run\n")
    md.append("<details><summary>each run's figures</summary>\n")
    md.append("| proxy | figure | cert | workers | CPU s | result |")
    md.append("|---|---|---|---|---|---|")
    for r in runs_log:
        res = r["res"] or {}
        keep = {k: res[k] for k in ("bytes", "secs", "mib_s", "ok", "handshakes", "hs_s", "errors",
                                     "lat_n", "lat_p50_ms", "lat_p99_ms",
                                     "rss0_kib", "rssN_kib", "sessions") if k in res}
        if r["what"].startswith("bulk"):
            keep.pop("lat_n", None), keep.pop("lat_p50_ms", None), keep.pop("lat_p99_ms", None)
        md.append(f"| {LABEL[r['peer']]} | {r['what']} | {r['cert']} | {r['workers']} | "
                  f"{r['cpu']:.2f} | {'ok' if r['ok'] else 'FAILED'} "
                  + " ".join(f"{k}={v}" for k, v in keep.items()) + " |")
    md.append("\n</details>")
    return table, "\n".join(md) + "\n"


PEER_NOTES = [
    "- starttls-proxy: one process, one worker; listeners `protocol = \"tcp\"` (implicit TLS, and "
    "`client_tls = \"none\"` for the plaintext relay) and `protocol = \"smtp\"` (STARTTLS, "
    "`require_tls` by default). It connects to the backend at accept and relays the backend's "
    "greeting and replies.",
    "- stunnel: one process, a thread per session; `protocol = smtp` in server mode plays the "
    "STARTTLS side itself. In that mode it waits 200 ms per session to see whether the client "
    "speaks TLS first, so its session latency is about 200 ms and its session rate is bounded "
    "by that, not its CPU per session. It cannot relay without TLS (n/a).",
    "- HAProxy: `mode tcp`, `nbthread 1`, one process; TLS with `bind ... ssl crt`; no SMTP "
    "STARTTLS (n/a).",
    "- nginx 1.22 (Debian's nginx-light with libnginx-mod-mail and libnginx-mod-stream, loaded "
    "with `load_module`): one process (`master_process off`, `daemon off`, so that it dies with "
    "the bench), its own configuration, pid, lock and error log in the run's directory, only "
    "loopback ports. Implicit TLS and the plaintext relay are its `stream` module "
    "(`listen ... ssl`, `proxy_pass`); SMTP is its mail proxy: `protocol smtp; smtp_auth none; "
    "starttls only; xclient off; proxy on;` with `auth_http` answered by `bench/sink auth` (its "
    "own process, so not counted as nginx's CPU) with `Auth-Status: OK`, `Auth-Server: "
    "127.0.0.1`, `Auth-Port:` the SMTP sink. What it requires of an SMTP client: the mail proxy "
    "answers the greeting, EHLO, STARTTLS, MAIL and NOOP itself; only RCPT TO (after a MAIL "
    "FROM, else `503 5.5.1`) makes it ask auth_http (one HTTP/1.0 request per session), connect "
    "to the backend, send `EHLO localhost` (its `server_name`; with `xclient off` the client's "
    "EHLO name is not passed), the client's MAIL and RCPT, and relay the backend's RCPT reply; "
    "from then on it relays both ways. `starttls only` refuses AUTH before TLS but not MAIL. "
    "nginx 1.22's default `ssl_protocols` leaves out TLS 1.3, so both stream and mail name "
    "`TLSv1.2 TLSv1.3`; otherwise its TLS defaults (no session cache, tickets on: the client "
    "refuses tickets). Its mail relay buffer is `proxy_buffer` 4k (the default), the stream "
    "module's `proxy_buffer_size` 16k. Its one-client SMTP latency (about 45 ms) is Nagle's "
    "algorithm against the client's delayed ACK: the mail module never sets TCP_NODELAY (the "
    "stream module does, `tcp_nodelay on` by default), and after the handshake it writes "
    "OpenSSL's two TLS 1.3 session tickets and then the next reply as separate small "
    "segments, so the later ones wait for the ACK of the first (up to 40 ms on Linux); the "
    "row without MAIL and RCPT shows it too, with no backend at all. It costs no CPU and "
    "does not show with 16 sessions at a time.",
]


def targets(vs):
    out = []
    for v in vs:
        if not v["ttext"]:
            continue
        if v["rt"] is None:
            out.append(f"- {v['label']}: not measured")
            continue
        if v["abs"]:
            out.append(f"- {v['label']}: starttls-proxy {v['rt']:.2f} ms (target {v['ttext']}) {v['verdict']}")
        else:
            out.append(f"- {v['label']}: {v['rt']:.2f} (target {v['ttext']}) {v['verdict']}")
    worse = [f"{v['key']} ({v['rb']:.2f}× {LABEL[v['best']]})" for v in vs
             if v["rb"] is not None and v["rb"] > 1]
    out.append("- every figure at least as good as the best peer's: " +
               ("met" if not worse else "MISSED for " + ", ".join(worse)))
    r = results.get(("idle-tls", "stp"))
    if r and ARGS.idle < 10000 and ARGS.idle >= IDLE_FIT:
        out.append(f"- idle sessions: {ARGS.idle}, not 10,000: the hard RLIMIT_NOFILE here is "
                   f"{resource.getrlimit(resource.RLIMIT_NOFILE)[1]} (no CAP_SYS_RESOURCE to raise "
                   "it), which caps stunnel at 125/256 of it and each proxy at half of it")
    return out


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


README_BEGIN = "<!-- bench/RESULTS.md table: scripts/bench rewrites from here -->"
README_END = "<!-- to here -->"


def sync_readme(md, readme=os.path.join(TOP, "README.md")):
    """Put the results table of a full run into README's performance section.

    The README quotes the table itself, with the line that says when and
    from which source it was measured, so that it never shows older figures
    than bench/RESULTS.md."""
    lines = md.splitlines()
    when = next((l for l in lines if l.startswith("Written by")), "")
    src = next((l for l in lines if "starttls-proxy source" in l), "")
    try:
        start = lines.index("## Results")
    except ValueError:
        return False
    table = []
    for l in lines[start + 1:]:
        if l.startswith("|"):
            table.append(l)
        elif table:
            break
    with open(readme) as f:
        text = f.read()
    if README_BEGIN not in text or README_END not in text:
        return False
    head, rest = text.split(README_BEGIN, 1)
    _, tail = rest.split(README_END, 1)
    body = [README_BEGIN, "", when.rstrip("."), "(" + src.lstrip("- ").replace("starttls-proxy source (when the bench started): ", "") + "),",
            "medians of 3 interleaved runs with their spread; lower is better:", ""]
    body += table + ["", README_END]
    with open(readme, "w") as f:
        f.write(head + "\n".join(body) + tail)
    return True


def main():
    global ARGS, NPROC, MAXCONN, SKIP, IDLE_FIT, log_dir
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="one run, small sizes: for trying it")
    ap.add_argument("--workers", type=int, default=1,
                    help="also measure starttls-proxy with workers = N against HAProxy's "
                    "nbthread N (default 1: not measured)")
    ap.add_argument("--runs", type=int, help="runs per figure (default 3; --quick: 1)")
    ap.add_argument("--bulk-mib", type=int, help="MiB per bulk run (default 512; --quick: 128)")
    ap.add_argument("--hs-seconds", type=float,
                    help="seconds per handshake and session run (default 2; --quick: 1)")
    ap.add_argument("--lat-seconds", type=float,
                    help="seconds per latency run (default 2; --quick: 1)")
    ap.add_argument("--hs-concurrency", type=int, default=16)
    ap.add_argument("--idle", type=int, help="idle sessions per run (default 5000, or what "
                    "RLIMIT_NOFILE allows; --quick: 1000)")
    ap.add_argument("--idle-timeout", type=int, default=120)
    ap.add_argument("--speed-seconds", type=int, default=1)
    ap.add_argument("--peers", default="stp,stunnel,haproxy,nginx", help="which proxies (default all)")
    ap.add_argument("--skip", default="", help="comma-separated: bulk,handshake,session,notxn,"
                    "idle,floors")
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
    ARGS.bulk_mib = ARGS.bulk_mib or (128 if q else 512)
    ARGS.hs_seconds = ARGS.hs_seconds or (1 if q else 2)
    ARGS.lat_seconds = ARGS.lat_seconds or (1 if q else 2)
    ARGS.peers = [p for p in ARGS.peers.split(",") if p]
    for p in ARGS.peers:
        if p not in PEERS:
            raise SystemExit(f"bench: unknown peer {p} (known: {','.join(PEERS)})")
    SKIP = set(ARGS.skip.split(","))
    NPROC = len(os.sched_getaffinity(0))

    # descriptors: as many as the machine allows, for the proxies and the idle sessions
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    IDLE_FIT = min((hard * 125) // 256 - 15,      # stunnel allows max_fds * 125/256 clients
                   (hard - 64) // 2)              # a proxy holds two descriptors per session
    ARGS.idle = ARGS.idle or min(1000 if q else 5000, IDLE_FIT)
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
        vers, mach = versions(), machine()
        certs = make_certs(log_dir)
        ecdsa, rsa = certs
        sink = os.path.join(ARGS.bindir, "sink")
        sinks = {"raw": Sink(sink, "raw"), "smtp": Sink(sink, "smtp")}
        sinks["auth"] = Sink(sink, "auth", sinks["smtp"].port)
        peers = [p for p in PEERS if p in ARGS.peers]

        if not {"bulk", "handshake", "session"} <= SKIP:
            say("plaintext relay, bulk, handshakes, SMTP sessions: ECDSA certificate")
            inst = {p: Proxy(p, ecdsa, sinks, maxconn=MAXCONN) for p in peers}
            try:
                if "bulk" not in SKIP:
                    bulk_figures(inst, sinks)
                if "handshake" not in SKIP:
                    handshake_figures(inst, ecdsa)
                if "session" not in SKIP:
                    session_figures(inst)
            finally:
                for i in inst.values():
                    i.close()
        if "handshake" not in SKIP:
            say("handshakes: RSA certificate")
            inst = {p: Proxy(p, rsa, sinks, services=("tls",), maxconn=MAXCONN) for p in peers}
            try:
                handshake_figures(inst, rsa)
            finally:
                for i in inst.values():
                    i.close()

        if "idle" not in SKIP:
            for mode in ("tls", "smtp"):
                say(f"idle sessions, {mode}: {ARGS.idle} per run")
                idle_figures(peers, ecdsa, sinks, mode)

        w = ARGS.workers
        w_note = ""
        if w != 1:
            say(f"workers = {w}")
            workers_figures(ecdsa, sinks, w)
            w_note = (f"starttls-proxy with `workers = {w}` and HAProxy with `nbthread {w or NPROC}`, "
                      "bulk with 8 connections and handshakes, implicit TLS, ECDSA; the load "
                      f"generator and the sink run on the same {NPROC} CPUs.")

        fl = {}
        if "floors" not in SKIP:
            say("floors: openssl speed")
            neg = negotiated.get(("stp", "ecdsa")) or {}
            fl = floors(neg.get("cipher", "TLS_AES_256_GCM_SHA384"), neg.get("group", "x25519"))

        for s in sinks.values():
            stop(s.p)
        elapsed = time.monotonic() - t0
        mach["load average after the run (including the bench)"] = " ".join(loadavg())
        table, md = report(fl, w, w_note, elapsed, vers, mach)
        out = ARGS.out or (os.path.join(log_dir, "RESULTS.md") if q else os.path.join(HERE, "RESULTS.md"))
        with open(out, "w") as f:
            f.write(md)
        with open(os.path.join(log_dir, "RESULTS.md"), "w") as f:
            f.write(md)
        if out == os.path.join(HERE, "RESULTS.md") and sync_readme(md):
            say("README.md: the performance section now shows this table")
        print(table)
        print()
        print("\n".join(targets(verdicts(w, fl))))
        say(f"done in {elapsed / 60:.1f} minutes; report written to {os.path.relpath(out, TOP)}")
        failed = [r for r in runs_log if not r["ok"]]
        if failed:
            say(f"{len(failed)} run(s) failed: see the report and {log_dir}")
        return 1 if failed else 0
    finally:
        cleanup()


if __name__ == "__main__":
    sys.exit(main())
