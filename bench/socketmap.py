"""Socketmap benchmark: mxsec daemon vs postfix-mta-sts-resolver vs a bare responder.

    sudo .venv/bin/python bench/socketmap.py [--quick] [--only mxsec,peer,ceiling] [--json FILE]

Everything runs inside a network namespace that this script creates (only ``lo``
inside, ``/etc/netns/NS/resolv.conf`` -> 127.0.0.53): the fake world (DNS on
127.0.0.53:53, HTTPS on 127.0.0.80:443), the three servers and the load
generator.  No packet can leave the namespace.  The namespace, its
/etc/netns directory and every process are removed at the end, also on error,
Ctrl-C or SIGTERM.

The outer process (root, host namespace) prepares the peer's venv, creates the
namespace and re-runs this script with ``--inner`` under ``ip netns exec``; the
inner process starts the children, drives ``bench/loadgen.py`` and prints the
table.  See bench/README.md and docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
PEER_VENV = BENCH / ".peer-venv"
PEER_PACKAGE = "postfix-mta-sts-resolver==1.5.1"
SERVERS = ("mxsec", "peer", "ceiling")

DNS_ADDR = "127.0.0.53"
HTTPS_ADDR = "127.0.0.80"
CONTROL = ("127.0.0.1", 10480)
PORTS = {"mxsec": 10461, "peer": 10462, "ceiling": 10463}

# Fake-world domain ranges (d{i}.bench.test): cached set shared (each server has
# its own cache), cold and single-flight ranges separate per server.
CACHED = range(50)
COLD = {"mxsec": 100, "peer": 1100}  # + count
SINGLE = {"mxsec": 2100, "peer": 2101}
WORLD_DOMAINS = 2110

OUTER_BUDGET = 600.0  # hard stop for the whole run, seconds


class BenchError(Exception):
    pass


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def domain(i: int) -> str:
    return f"d{i}.bench.test"


def clean_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    env.pop("PYTHONPATH", None)
    env.update(extra or {})
    return env


# =========================================================================== outer


def run(cmd: list[str], check: bool = True, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, check=check, capture_output=True, text=True, **kw)


def ensure_peer_venv() -> Path:
    exe = PEER_VENV / "bin" / "mta-sts-daemon"
    if exe.exists():
        return exe
    log(f"bench: creating {PEER_VENV} and installing {PEER_PACKAGE} (once)")
    python = shutil.which("python3") or sys.executable
    run([python, "-m", "venv", str(PEER_VENV)])
    res = run([str(PEER_VENV / "bin" / "pip"), "install", "-q", PEER_PACKAGE], check=False, timeout=600)
    if res.returncode != 0 or not exe.exists():
        tail = (res.stderr or res.stdout).strip().splitlines()[-3:]
        raise BenchError(f"pip install {PEER_PACKAGE} failed: {' | '.join(tail)}")
    return exe


def outer(args: argparse.Namespace, argv: list[str]) -> int:
    if os.geteuid() != 0:
        raise BenchError("needs root (network namespace): run  sudo .venv/bin/python bench/socketmap.py")
    if not shutil.which("ip"):
        raise BenchError("iproute2 'ip' not found")
    if "peer" in args.only:
        ensure_peer_venv()
    ns = f"mxsec-bench-{os.getpid()}"
    etc = Path("/etc/netns") / ns
    child: subprocess.Popen | None = None
    stopping = {"signal": None}

    def on_signal(signum, _frame):
        stopping["signal"] = signum
        if child is not None and child.poll() is None:
            try:
                os.killpg(child.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    try:
        run(["ip", "netns", "add", ns])
        run(["ip", "-n", ns, "link", "set", "lo", "up"])
        etc.mkdir(parents=True, exist_ok=True)
        (etc / "resolv.conf").write_text(f"nameserver {DNS_ADDR}\noptions timeout:2 attempts:2\n")
        check = run(["ip", "netns", "exec", ns, "sh", "-c", "cat /etc/resolv.conf; ip -o link"], check=False)
        links = [ln for ln in check.stdout.splitlines() if ": " in ln and not ln.startswith(("nameserver", "options"))]
        if f"nameserver {DNS_ADDR}" not in check.stdout or len(links) != 1 or ": lo:" not in links[0]:
            raise BenchError(f"namespace {ns} not as expected: {check.stdout.strip()!r} {check.stderr.strip()!r}")
        if stopping["signal"] is not None:
            return 128 + stopping["signal"]
        cmd = ["ip", "netns", "exec", ns, sys.executable, str(Path(__file__).resolve()), "--inner", *argv]
        child = subprocess.Popen(cmd, start_new_session=True, env=clean_env({"MXSEC_BENCH_NS": ns}))
        try:
            rc = child.wait(timeout=OUTER_BUDGET)
        except subprocess.TimeoutExpired:
            log(f"bench: over the {OUTER_BUDGET:.0f}s budget; stopping")
            os.killpg(child.pid, signal.SIGTERM)
            try:
                rc = child.wait(timeout=20)
            except subprocess.TimeoutExpired:
                rc = 1
        if stopping["signal"] is not None:
            try:
                child.wait(timeout=20)
            except subprocess.TimeoutExpired:
                pass
            rc = 128 + stopping["signal"]
        return rc
    finally:
        if child is not None and child.poll() is None:
            try:
                os.killpg(child.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            child.wait(timeout=10)
        # Anything still inside the namespace was started by this run: end it by pid.
        pids = run(["ip", "netns", "pids", ns], check=False).stdout.split()
        for pid in pids:
            try:
                os.kill(int(pid), signal.SIGKILL)
            except (ProcessLookupError, ValueError):
                pass
        if pids:
            time.sleep(0.2)
        run(["ip", "netns", "del", ns], check=False)
        shutil.rmtree(etc, ignore_errors=True)
        for s, h in old.items():
            signal.signal(s, h)


# =========================================================================== inner


class Children:
    """Processes started by the inner run; each in its own process group."""

    def __init__(self, state: Path) -> None:
        self.state = state
        self.procs: dict[str, subprocess.Popen] = {}
        self.logs: dict[str, Path] = {}

    def start(self, name: str, cmd: list[str], env: dict[str, str] | None = None) -> subprocess.Popen:
        logf = self.state / f"{name}.log"
        self.logs[name] = logf
        with open(logf, "wb") as out:
            proc = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True, env=clean_env(env), cwd=str(self.state),
            )
        self.procs[name] = proc
        return proc

    def tail(self, name: str, lines: int = 5) -> str:
        try:
            text = self.logs[name].read_text(errors="replace").strip().splitlines()
        except (KeyError, OSError):
            return "(no log)"
        return " | ".join(text[-lines:]) or "(empty log)"

    def stop(self, name: str, timeout: float = 5.0) -> None:
        proc = self.procs.pop(name, None)
        if proc is None or proc.poll() is not None:
            return
        for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                return
            try:
                proc.wait(timeout=wait)
                return
            except subprocess.TimeoutExpired:
                continue

    def stop_all(self) -> None:
        for name in list(self.procs):
            self.stop(name, timeout=3.0)


def wait_port(host: str, port: int, proc: subprocess.Popen, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.1)
    return False


def control(method: str, path: str) -> dict:
    req = urllib.request.Request(f"http://{CONTROL[0]}:{CONTROL[1]}{path}", method=method,
                                 data=b"" if method == "POST" else None)
    with urllib.request.urlopen(req, timeout=10) as resp:
        body = resp.read()
    return json.loads(body) if body.strip() else {}


class Inner:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.quick = args.quick
        self.state = Path(tempfile.mkdtemp(prefix="mxsec-bench-"))
        self.kids = Children(self.state)
        self.python = sys.executable
        self.loadgen_proc: subprocess.Popen | None = None
        self.results: dict = {"servers": {}, "phases": {}}
        self.loops: dict[str, str] = {}

    # ------------------------------------------------------------------ setup
    def start_world(self) -> None:
        world_dir = self.state / "world"
        cmd = [
            self.python, "-m", "mxsec.testing.fakeworld",
            "--dns", f"{DNS_ADDR}:53", "--https", f"{HTTPS_ADDR}:443",
            "--state-dir", str(world_dir), "--generate", str(WORLD_DOMAINS),
            "--control", f"{CONTROL[0]}:{CONTROL[1]}", "--prewarm",
        ]
        t0 = time.monotonic()
        proc = self.kids.start("fakeworld", cmd)
        ready = world_dir / "ready.json"
        deadline = t0 + 120
        while not ready.exists():
            if proc.poll() is not None:
                raise BenchError(f"fake world exited ({proc.returncode}): {self.kids.tail('fakeworld')}")
            if time.monotonic() > deadline:
                raise BenchError(f"fake world not ready after 120 s: {self.kids.tail('fakeworld')}")
            time.sleep(0.1)
        self.ca = world_dir / "ca.pem"
        self.results["fakeworld_start_s"] = round(time.monotonic() - t0, 2)
        log(f"bench: fake world ready in {self.results['fakeworld_start_s']} s ({WORLD_DOMAINS} domains)")

    def start_server(self, name: str) -> None:
        port = PORTS[name]
        if name == "mxsec":
            exe = self.args.mxsec or str(Path(self.python).parent / "mxsec")
            cmd = [
                exe, "daemon", "--listen", f"127.0.0.1:{port}", "--cache", "memory://",
                "--nameserver", DNS_ADDR, "--ca-file", str(self.ca), "--allow-address", "127.0.0.0/8",
                *self.args.mxsec_arg,
            ]
            env = None
            self.loops[name] = python_loop(exe)
        elif name == "peer":
            cfg = self.state / "peer.yml"
            cfg.write_text(
                "host: 127.0.0.1\n"
                f"port: {port}\n"
                "reuse_port: true\n"
                "cache_grace: 3600\n"
                "cache:\n  type: internal\n"
                "default_zone:\n  strict_testing: false\n  timeout: 4\n"
                "proactive_policy_fetching:\n  enabled: false\n"
            )
            cmd = [str(PEER_VENV / "bin" / "mta-sts-daemon"), "-c", str(cfg), "-v", "info"]
            env = {"SSL_CERT_FILE": str(self.ca)}
        else:
            loop = self.loops.get("mxsec") or python_loop(self.python)
            cmd = [self.python, str(BENCH / "ceiling.py"), "--listen", f"127.0.0.1:{port}",
                   "--loop", "uvloop" if loop == "uvloop" else "asyncio"]
            env = None
            self.loops[name] = loop
        proc = self.kids.start(name, cmd, env)
        if not wait_port("127.0.0.1", port, proc, 30.0):
            state = f"exited with {proc.returncode}" if proc.poll() is not None else "not listening after 30 s"
            raise BenchError(f"{name} did not start ({state}): {self.kids.tail(name)}")
        if name == "peer":
            time.sleep(0.2)
            text = self.kids.logs[name].read_text(errors="replace")
            self.loops[name] = "uvloop" if "uvloop enabled" in text else "asyncio"
        self.results["servers"][name] = {"command": " ".join(cmd), "loop": self.loops[name], "port": port}
        log(f"bench: {name} listening on 127.0.0.1:{port} (loop: {self.loops[name]})")

    # ------------------------------------------------------------------ loadgen
    def cpu(self, name: str) -> float | None:
        """CPU seconds (user + system) used so far by child ``name``."""
        proc = self.kids.procs.get(name)
        return proc_cpu(proc.pid) if proc is not None else None

    def loadgen(self, name: str, job: dict, budget: float) -> dict:
        cpu0 = {n: self.cpu(n) for n in (name, "fakeworld")}
        res = self._loadgen(name, job, budget)
        for n, before in cpu0.items():
            after = self.cpu(n)
            if before is not None and after is not None:
                res[f"cpu_s_{'server' if n == name else n}"] = round(after - before, 2)
        return res

    def _loadgen(self, name: str, job: dict, budget: float) -> dict:
        job = dict(job, host="127.0.0.1", port=PORTS[name], budget=budget)
        proc = self.loadgen_proc = subprocess.Popen(
            [self.python, str(BENCH / "loadgen.py"), "-"], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
            env=clean_env(),
        )
        try:
            out, err = proc.communicate(json.dumps(job), timeout=budget + 15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise BenchError(f"load generator stuck ({job['mode']} on {name})")
        finally:
            self.loadgen_proc = None
        try:
            res = json.loads(out.strip().splitlines()[-1])
        except (ValueError, IndexError):
            raise BenchError(f"load generator failed ({job['mode']} on {name}): {err.strip()[-300:]}")
        if "error" in res:
            raise BenchError(f"{job['mode']} on {name}: {res['error']}; server log: {self.kids.tail(name, 3)}")
        if self.kids.procs.get(name) is not None and self.kids.procs[name].poll() is not None:
            raise BenchError(f"{name} died during {job['mode']}: {self.kids.tail(name)}")
        return res

    # ------------------------------------------------------------------ phases
    def phase(self, key: str, name: str, res: dict) -> dict:
        self.results["phases"].setdefault(key, {})[name] = res
        return res

    def run(self) -> None:
        q = self.quick
        servers = [s for s in SERVERS if s in self.args.only]
        resolvers = [s for s in servers if s != "ceiling"]
        cached = [domain(i) for i in CACHED]
        warm_s, dur_s = (0.3, 1.5) if q else (0.5, 3.0)
        fixed_s = 1.0 if q else 2.0
        rounds = self.args.rounds or (1 if q else 3)
        self.results["method"] = {"rounds": rounds, "warmup_s": warm_s, "duration_s": dur_s}
        cold_n = 300 if q else 1000

        if resolvers:
            self.start_world()
        for s in servers:
            self.start_server(s)

        for s in resolvers if "cached" in self.args.phases else []:
            res = self.loadgen(s, {"mode": "warm", "domains": cached, "timeout": 30}, 45)
            if not res["complete"]:
                raise BenchError(f"{s}: {res['pending']} cached domains never answered OK secure, "
                                 f"e.g. {res['last_bad']}")
            res.pop("replies", None)
            self.phase("warm", s, res)
            log(f"bench: {s} warm ({res['rounds']} round(s), {res['seconds']} s)")

        # Cached phases: ROUNDS rounds, servers interleaved inside each round (so
        # drift and noise from other processes hit all three alike); each figure
        # is the median over the rounds.
        def cached_phase(key: str, job_for, budget: float, label: str) -> None:
            per: dict[str, list[dict]] = {s: [] for s in servers}
            for r in range(rounds):
                for s in servers:
                    job = job_for(s)
                    res = self.loadgen(s, job, budget)
                    if res.get("cpu_s_server") is not None and res.get("rate"):
                        # server CPU per reply (the warm-up runs at the same rate as the timed part)
                        spent = res["rate"] * (job["warmup"] + job["duration"])
                        res["cpu_us_per_reply"] = round(res["cpu_s_server"] * 1e6 / spent, 2)
                    per[s].append(res)
            for s in servers:
                res = aggregate(per[s])
                self.phase(key, s, res)
                p50, p99 = res.get("p50_ms", res.get("batch_p50_ms")), res.get("p99_ms", res.get("batch_p99_ms"))
                log(f"bench: {label} {s}: {res['rate']:.0f}/s p50 {p50} ms p99 {p99} ms "
                    f"wrong {res['errors']} (median of {rounds}: {[round(x['rate']) for x in per[s]]})")

        if "cached" in self.args.phases:
            cached_phase("one_at_a_time", lambda s: {"mode": "closed", "domains": cached, "conns": 64,
                                                     "warmup": warm_s, "duration": dur_s},
                         warm_s + dur_s + 20, "one-at-a-time")
            cached_phase("pipelined", lambda s: {"mode": "pipelined", "domains": cached, "conns": 16, "depth": 64,
                                                 "warmup": warm_s, "duration": dur_s},
                         warm_s + dur_s + 20, "pipelined")
            cached_phase("half_load", lambda s: {"mode": "paced", "domains": cached, "conns": 64,
                                                 "rate": max(100.0,
                                                             self.results["phases"]["one_at_a_time"][s]["rate"] / 2),
                                                 "warmup": warm_s, "duration": dur_s},
                         warm_s + dur_s + 20, "half load")
            if self.args.fixed_rate > 0:
                cached_phase("fixed_rate", lambda s: {"mode": "paced", "domains": cached, "conns": 64,
                                                      "rate": float(self.args.fixed_rate),
                                                      "warmup": warm_s, "duration": fixed_s},
                             warm_s + fixed_s + 20, f"fixed {self.args.fixed_rate}/s")

        for s in resolvers if "cold" in self.args.phases else []:
            names = [domain(COLD[s] + i) for i in range(cold_n)]
            control("POST", "/reset")
            res = self.loadgen(s, {"mode": "cold", "domains": names, "conns": 100, "timeout": 90}, 100)
            st = control("GET", "/stats")
            res["world_dns_queries"] = st.get("dns_total")
            res["world_https_requests"] = st.get("https_total")
            self.phase("cold", s, res)
            log(f"bench: cold {s}: {res['seconds']} s for {cold_n}, wrong {res['errors']}, "
                f"unanswered {res['unanswered']}")
        for s in resolvers if "single" in self.args.phases else []:
            name = domain(SINGLE[s])
            control("POST", "/reset")
            res = self.loadgen(s, {"mode": "single", "domains": [name], "conns": 100, "depth": 10, "timeout": 30}, 40)
            time.sleep(0.3)  # let any straggling fetch reach the fake world's counters
            st = control("GET", "/stats")
            res["txt_lookups"] = st.get("dns_queries", {}).get(f"_mta-sts.{name} TXT", 0)
            res["https_fetches"] = st.get("https_requests", {}).get(f"mta-sts.{name}", 0)
            res["world_dns_queries"] = st.get("dns_queries", {})
            self.phase("single_flight", s, res)
            log(f"bench: single-flight {s}: {res['ok']}/{res['queries']} ok, TXT {res['txt_lookups']}, "
                f"HTTPS {res['https_fetches']}")

    # ------------------------------------------------------------------ report
    def report(self) -> None:
        P = self.results["phases"]
        servers = [s for s in SERVERS if s in self.args.only]

        def get(phase, s, key):
            v = P.get(phase, {}).get(s, {}).get(key)
            return v

        rows = [
            ("one-at-a-time, 64 conns: replies/s", "one_at_a_time", "rate", "hi"),
            ("  p50 latency, ms", "one_at_a_time", "p50_ms", "lo"),
            ("  p99 latency, ms", "one_at_a_time", "p99_ms", "lo"),
            ("  server CPU us per reply", "one_at_a_time", "cpu_us_per_reply", "lo"),
            ("  wrong replies", "one_at_a_time", "errors", None),
            ("pipelined 16x64: replies/s", "pipelined", "rate", "hi"),
            ("  server CPU us per reply", "pipelined", "cpu_us_per_reply", "lo"),
            ("  wrong replies", "pipelined", "errors", None),
            ("half load (own peak/2): replies/s", "half_load", "rate", None),
            ("  p50 latency, ms", "half_load", "p50_ms", "lo"),
            ("  p99 latency, ms", "half_load", "p99_ms", "lo"),
            ("  p99 latency, ms, best round", "half_load", "p99_ms_best", "lo"),
            ("  wrong replies", "half_load", "errors", None),
            ("fixed rate: replies/s", "fixed_rate", "rate", None),
            ("  p50 latency, ms", "fixed_rate", "p50_ms", "lo"),
            ("  p99 latency, ms", "fixed_rate", "p99_ms", "lo"),
            ("  p99 latency, ms, best round", "fixed_rate", "p99_ms_best", "lo"),
            ("  wrong replies", "fixed_rate", "errors", None),
            ("cold, 100 clients: total s", "cold", "seconds", "lo"),
            ("  domains/s", "cold", "rate", "hi"),
            ("  server CPU s", "cold", "cpu_s_server", "lo"),
            ("  wrong answers", "cold", "errors", None),
            ("  unanswered", "cold", "unanswered", None),
            ("single-flight 1000 q: TXT lookups", "single_flight", "txt_lookups", None),
            ("  HTTPS fetches", "single_flight", "https_fetches", None),
            ("  answered OK secure", "single_flight", "ok", None),
            ("  total s", "single_flight", "seconds", None),
        ]
        if self.results["phases"].get("cold"):
            n = next(iter(P["cold"].values()))["domains"]
            rows = [(f"cold, {n} domains, 100 clients: total s",) + r[1:] if r[1:3] == ("cold", "seconds") else r
                    for r in rows]

        def fmt(v):
            if v is None:
                return "-"
            if isinstance(v, float):
                if v >= 1000:
                    return f"{v:,.0f}"
                if v >= 10:
                    return f"{v:.1f}"
                return f"{v:.3f}"
            return f"{v:,}" if isinstance(v, int) else str(v)

        head = f"{'':38}" + "".join(f"{s:>12}" for s in SERVERS) + f"{'mxsec/peer':>12}{'mxsec/ceil':>12}"
        lines = [head, "-" * len(head)]
        for label, phase, key, kind in rows:
            vals = {s: get(phase, s, key) if s in servers else None for s in SERVERS}
            if all(v is None for v in vals.values()):
                continue
            r1 = r2 = "-"
            if kind and isinstance(vals["mxsec"], (int, float)):
                if isinstance(vals["peer"], (int, float)) and vals["peer"]:
                    r1 = f"{vals['mxsec'] / vals['peer']:.2f}x"
                if isinstance(vals["ceiling"], (int, float)) and vals["ceiling"]:
                    r2 = f"{vals['mxsec'] / vals['ceiling']:.2f}x"
            lines.append(f"{label:38}" + "".join(f"{fmt(vals[s]):>12}" for s in SERVERS) + f"{r1:>12}{r2:>12}")
        loops = ", ".join(f"{s}: {self.loops.get(s, '-')}" for s in servers)
        lines.append("")
        gen = next((r.get("loadgen_loop") for ph in P.values() for r in ph.values() if r.get("loadgen_loop")), "-")
        lines.append(f"event loops: {loops}; load generator: {gen} (one process)")
        m = self.results.get("method", {})
        lines.append(f"cached phases: median of {m.get('rounds')} round(s) of {m.get('duration_s')} s "
                     f"after {m.get('warmup_s')} s warm-up, "
                     f"servers interleaved; machine idle before the run: {self.results.get('cpu_idle_before_pct')}%")
        lines.append("ratios are mxsec / other; for latency, CPU and total time lower is better")
        lines.extend(self.verdicts())
        text = "\n".join(lines)
        print(text, flush=True)
        self.results["table"] = text

    def verdicts(self) -> list[str]:
        P = self.results["phases"]
        out = []
        if "mxsec" not in self.args.only:
            return out

        def v(phase, s, key):
            return P.get(phase, {}).get(s, {}).get(key)

        checks = []
        m, p, c = v("pipelined", "mxsec", "rate"), v("pipelined", "peer", "rate"), None
        if m and p:
            checks.append((f"pipelined >= 10x peer ({m / p:.1f}x)", m >= 10 * p))
        m, c = v("one_at_a_time", "mxsec", "rate"), v("one_at_a_time", "ceiling", "rate")
        if m and c:
            checks.append((f"one-at-a-time >= 0.8x ceiling ({m / c:.2f}x)", m >= 0.8 * c))
        p99, best = v("half_load", "mxsec", "p99_ms"), v("half_load", "mxsec", "p99_ms_best")
        if p99 is not None:
            checks.append((f"p99 at half load < 1 ms (median {p99} ms, best round {best} ms)", p99 < 1.0))
        m, p = v("cold", "mxsec", "seconds"), v("cold", "peer", "seconds")
        if m and p:
            ok = v("cold", "mxsec", "errors") == 0 and v("cold", "mxsec", "unanswered") == 0
            checks.append((f"cold >= 1.2x faster than peer, all correct "
                           f"({p / m:.2f}x, wrong {v('cold', 'mxsec', 'errors')})", p / m >= 1.2 and ok))
        t, h, ok = (v("single_flight", "mxsec", "txt_lookups"), v("single_flight", "mxsec", "https_fetches"),
                    v("single_flight", "mxsec", "ok"))
        if t is not None:
            checks.append((f"single-flight: 1 TXT, 1 HTTPS, 1000 answered ({t}, {h}, {ok})",
                           t == 1 and h == 1 and ok == 1000))
        if checks:
            out.append("targets (mxsec): "
                       + "; ".join(f"{'PASS' if good else 'FAIL'} {label}" for label, good in checks))
        self.results["targets"] = [{"check": label, "pass": good} for label, good in checks]
        return out

    def close(self) -> None:
        if self.loadgen_proc is not None and self.loadgen_proc.poll() is None:
            try:
                os.killpg(self.loadgen_proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.kids.stop_all()
        if self.args.keep_state:
            log(f"bench: state and logs kept in {self.state}")
        else:
            shutil.rmtree(self.state, ignore_errors=True)


def proc_cpu(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            fields = handle.read().rpartition(")")[2].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def median(values: list[float]) -> float | None:
    values = sorted(v for v in values if v is not None)
    if not values:
        return None
    mid = len(values) // 2
    return values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2


def aggregate(runs: list[dict]) -> dict:
    """Median of the figures of several rounds; counts are summed."""
    out = dict(runs[-1])
    for key in ("rate", "p50_ms", "p99_ms", "p999_ms", "max_ms", "offered_rate", "target_rate",
                "batch_p50_ms", "batch_p99_ms"):
        if key in out:
            v = median([r.get(key) for r in runs])
            out[key] = round(v, 4) if v is not None else None
    if "cpu_us_per_reply" in out:
        out["cpu_us_per_reply"] = median([r.get("cpu_us_per_reply") for r in runs])
    for key in ("replies", "ok", "errors", "conn_errors", "late", "samples", "cpu_s_server", "cpu_s_fakeworld"):
        if key in out:
            out[key] = sum(r.get(key, 0) for r in runs)
    # Other processes on the machine only ever add latency: the best round is the
    # closest to the server's own figure (the table shows it next to the median).
    if out.get("p99_ms") is not None:
        out["p99_ms_best"] = min(r["p99_ms"] for r in runs if r.get("p99_ms") is not None)
        out["p50_ms_best"] = min(r["p50_ms"] for r in runs if r.get("p50_ms") is not None)
    out["rate_best"] = max((r.get("rate") or 0) for r in runs)
    out["bad_samples"] = [s for r in runs for s in r.get("bad_samples", [])][:5]
    out["rounds"] = [{k: r.get(k) for k in ("rate", "p50_ms", "p99_ms", "p999_ms", "errors", "late", "cpu_us_per_reply")
                      if k in r} for r in runs]
    return out


def cpu_idle(seconds: float = 1.0) -> float:
    """Percent of CPU time idle on the whole machine over ``seconds``."""
    def sample():
        with open("/proc/stat") as handle:
            vals = [int(x) for x in handle.readline().split()[1:]]
        return vals[3] + vals[4], sum(vals)

    i0, t0 = sample()
    time.sleep(seconds)
    i1, t1 = sample()
    return round(100.0 * (i1 - i0) / max(1, t1 - t0), 1)


def python_loop(exe: str) -> str:
    """'uvloop' when the interpreter behind ``exe`` (a script or python) imports uvloop."""
    python = exe
    try:
        with open(exe, "rb") as handle:
            first = handle.readline()
        if first.startswith(b"#!"):
            python = first[2:].decode().strip().split()[0]
    except OSError:
        pass
    if "python" not in Path(python).name:
        python = sys.executable  # a wrapper script: assume it runs this venv's python
    res = subprocess.run([python, "-c", "import uvloop"], check=False, capture_output=True)
    return "uvloop" if res.returncode == 0 else "asyncio"


def inner(args: argparse.Namespace) -> int:
    def on_term(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGHUP, on_term)
    # Safety: only run where DNS goes to the fake world (a namespace of ours).
    resolv = Path("/etc/resolv.conf").read_text()
    servers_ns = [ln.split()[1] for ln in resolv.splitlines() if ln.startswith("nameserver")]
    if "peer" in args.only and (not servers_ns or not all(a.startswith("127.") for a in servers_ns)):
        raise BenchError(f"/etc/resolv.conf points at {servers_ns}: "
                         "refusing to run the peer outside the bench namespace")
    bench = Inner(args)
    t0 = time.monotonic()
    try:
        idle = cpu_idle(1.0)
        bench.results["cpu_idle_before_pct"] = idle
        if idle < 85.0:
            log(f"bench: WARNING: the machine is busy before the run ({idle}% idle): figures will be noisy")
        bench.run()
        bench.results["cpu_idle_after_pct"] = cpu_idle(0.5)
        bench.results["elapsed_s"] = round(time.monotonic() - t0, 1)
        bench.results["meta"] = {
            "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
            "cpus": os.cpu_count(),
            "kernel": platform.release(),
            "python": platform.python_version(),
            "quick": args.quick,
            "namespace": os.environ.get("MXSEC_BENCH_NS"),
            "peer_package": PEER_PACKAGE,
            "loops": bench.loops,
        }
        bench.report()
        log(f"bench: done in {bench.results['elapsed_s']} s")
        if args.json:
            Path(args.json).write_text(json.dumps(bench.results, indent=2) + "\n")
            log(f"bench: figures written to {args.json}")
        return 0
    except BenchError as exc:
        print(f"bench: error: {exc}", file=sys.stderr, flush=True)
        return 1
    except KeyboardInterrupt:
        print("bench: interrupted; cleaning up", file=sys.stderr, flush=True)
        return 130
    finally:
        bench.close()


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(
        description="mxsec daemon vs postfix-mta-sts-resolver vs a bare responder (socketmap)")
    parser.add_argument("--quick", action="store_true", help="short durations (smoke run, ~40 s)")
    parser.add_argument("--only", default="mxsec,peer,ceiling", help="comma list of servers: mxsec,peer,ceiling")
    parser.add_argument("--json", metavar="FILE", help="write every figure to FILE")
    parser.add_argument("--mxsec", metavar="EXE", help="mxsec executable (default: next to this python)")
    parser.add_argument("--mxsec-arg", action="append", default=[], metavar="ARG",
                        help="extra argument for mxsec daemon (repeatable)")
    parser.add_argument("--phases", default="cached,cold,single",
                        help="comma list of phases: cached (one-at-a-time, pipelined, half load), cold, single")
    parser.add_argument("--fixed-rate", type=int, default=10000,
                        help="also measure latency at this rate for every server (0 = skip; default 10000/s)")
    parser.add_argument("--rounds", type=int, default=0, help="rounds of the cached phases (default 3, quick 1)")
    parser.add_argument("--keep-state", action="store_true", help="keep the state directory (logs) of the inner run")
    parser.add_argument("--inner", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.only = [s.strip() for s in args.only.split(",") if s.strip()]
    args.phases = [s.strip() for s in args.phases.split(",") if s.strip()]
    if not args.phases or set(args.phases) - {"cached", "cold", "single"}:
        parser.error("--phases: choose from cached,cold,single")
    bad = [s for s in args.only if s not in SERVERS]
    if bad or not args.only:
        parser.error(f"--only: unknown server(s) {bad}; choose from {','.join(SERVERS)}")
    if args.json:
        args.json = str(Path(args.json).resolve())
        argv = [a for a in argv]  # the inner process gets the absolute path below
        if "--json" in argv:
            argv[argv.index("--json") + 1] = args.json
        else:
            argv = [a if not a.startswith("--json=") else f"--json={args.json}" for a in argv]
    try:
        if args.inner:
            return inner(args)
        return outer(args, argv)
    except BenchError as exc:
        print(f"bench: error: {exc}", file=sys.stderr, flush=True)
        return 1


if __name__ == "__main__":
    sys.exit(main())
