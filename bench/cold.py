#!/usr/bin/env python3
"""Cold policy resolution against a real DNS: mxsec daemon (DANE on, DANE off) vs postfix-mta-sts-resolver.

    sudo .venv/bin/python bench/cold.py                               # 1,000 domains, 3 rounds, a few minutes
    sudo .venv/bin/python bench/cold.py --domains 200 --rounds 1      # smoke run
    sudo .venv/bin/python bench/cold.py --profile                     # + one DANE-on run under py-spy
    sudo .venv/bin/python bench/cold.py --json bench/results/cold.json

bench/socketmap.py measures cold resolution against a Python fake world whose DNS server dominates the CPU;
here the DNS is the lab's: Knot serving signed zones and Unbound validating (198.51.100.53), MX STARTTLS
servers and the policy hosts (``mta-sts.<domain>`` by SNI, certificates from the lab CA).

1. Writes a scenario file with ``--domains`` generated domains (``KINDS``: mostly MTA-STS enforce in signed
   zones, some with two MX hosts, DANE + MTA-STS, unsigned, testing, no policy, and domains hosted on a few
   shared provider MX hosts ``mx1/mx2.provider-K.test``) and brings the lab up from it, as
   bench/check_bulk.py does (``mxsec.lab.runner.up``, prefix ``mxsec-c<pid>``, hosts in 198.18.0.0/15).
2. Each round runs every server once, interleaved: Unbound's cache flushed, the server started fresh inside
   the sender namespace (empty memory cache), bench/loadgen.py's ``cold`` mode (each domain asked once,
   100 concurrent clients) run inside the same namespace, the server stopped. Every reply is judged against
   the domain's kind and the server (see ``expected``).
3. Prints medians over the rounds per server: total seconds, domains/s, server CPU, CPU of Unbound, Knot,
   the policy hosts and the MX farm during the run, wrong/unanswered replies (per kind); the ratios
   peer ÷ mxsec with PASS/FAIL lines; tears the lab down (also on failure, Ctrl-C or SIGTERM).

Root is needed (network namespaces). Nothing is sent outside the lab's namespaces. Results and method:
docs/benchmarks.md, "Cold policy resolution against a real DNS (lab)".
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from check_bulk import HOST_NET, MXSEC, flush_resolver, ready_machine
from check_bulk import mix as bulk_mix
from socketmap import PEER_PACKAGE, PEER_VENV, clean_env, cpu_idle, ensure_peer_venv, median

from mxsec.lab import runner
from mxsec.lab import state as lab_state
from mxsec.lab.prerequisites import prerequisites
from mxsec.lab.topology import Topology

BENCH = Path(__file__).resolve().parent
PYTHON = sys.executable
SERVERS = ("mxsec", "mxsec-nodane", "peer")
LABEL = {"mxsec": "mxsec DANE on", "mxsec-nodane": "mxsec DANE off", "peer": "peer 1.5.1"}
PORTS = {"mxsec": 10471, "mxsec-nodane": 10472, "peer": 10473}
PROVIDERS = 5  # shared provider MX zones for the hosted domains
CONNS = 100


class BenchError(Exception):
    pass


def log(msg: str) -> None:
    print(msg, flush=True)


# --------------------------------------------------------------------------------------------- the mix


@dataclass(frozen=True)
class Kind:
    """One kind of generated domain: how many per 1,000, its scenario entry, the reply each server owes."""

    key: str  # also the domain's first label: <key>-0001.test
    per_mille: int
    about: str
    body: str  # scenario TOML lines; {d} is the domain, {p} the provider zone of a hosted domain
    dane: str  # reply of mxsec with DANE on: "secure" | "dane-only" | "notfound"
    sts: str  # reply of mxsec with DANE off and of the peer (MTA-STS only)
    match: tuple[str, ...] = ()  # the policy's patterns in a "secure" reply, in Postfix's form (MX not known)
    mx: tuple[str, ...] = ()  # the MX host names: mxsec with DANE on knows them and lists these in match=


_VERIFIED = 'expect = { result = "delivered", tls = "verified" }\n'
_ONE_MX = 'mx = [{ host = "mx1.{d}", cert = "valid" }]\n'
_TWO_MX = 'mx = [{ host = "mx1.{d}", cert = "valid" }, { host = "mx2.{d}", cert = "valid", preference = 20 }]\n'


def _sts(mode: str = "enforce", mx: str = '"mx1.{d}"') -> str:
    return f'sts = {{ id = "20260101T000000", mode = "{mode}", mx = [{mx}], max_age = 604800 }}\n'


KINDS: tuple[Kind, ...] = (
    Kind("enf", 480, "MTA-STS enforce, one MX, signed zone without TLSA",
         _ONE_MX + _sts() + _VERIFIED, "secure", "secure", ("mx1.{d}",), ("mx1.{d}",)),
    Kind("enf2", 100, "MTA-STS enforce, two MX hosts, pattern *.domain, signed zone without TLSA",
         _TWO_MX + _sts(mx='"*.{d}"') + _VERIFIED, "secure", "secure", (".{d}",), ("mx1.{d}", "mx2.{d}")),
    Kind("dane", 100, "DANE (signed zone, TLSA 3 1 1 of the MX key) and MTA-STS enforce",
         _ONE_MX + _sts() + 'tlsa = "match"\n' + 'expect = { result = "delivered", tls = "dane" }\n',
         "dane-only", "secure", ("mx1.{d}",), ("mx1.{d}",)),
    Kind("hosted", 200, "MTA-STS enforce, MX on a shared provider (mx1/mx2.provider-K.test), signed zone",
         'records = ["{d}. MX 10 mx1.{p}.", "{d}. MX 20 mx2.{p}."]\n' + _sts(mx='"*.{p}"') + _VERIFIED,
         "secure", "secure", (".{p}",), ("mx1.{p}", "mx2.{p}")),
    Kind("unsigned", 50, "unsigned zone, MTA-STS enforce, one MX",
         'dnssec = "unsigned"\n' + _ONE_MX + _sts() + _VERIFIED, "secure", "secure", ("mx1.{d}",), ("mx1.{d}",)),
    Kind("testing", 30, "MTA-STS testing, one MX, signed zone without TLSA",
         _ONE_MX + _sts("testing") + _VERIFIED, "notfound", "notfound"),
    Kind("nopolicy", 40, "no MTA-STS, no TLSA, one MX, signed zone",
         _ONE_MX + 'expect = { result = "delivered", tls = "any" }\n', "notfound", "notfound"),
)
assert sum(k.per_mille for k in KINDS) == 1000
KIND = {k.key: k for k in KINDS}


def mix(total: int) -> dict[str, int]:
    """Domains per kind for ``total`` domains (check_bulk's rule: proportional, at least one each)."""
    return bulk_mix(total, KINDS)


def provider_of(name: str) -> str:
    """The provider zone of a hosted domain (round robin over the providers)."""
    return f"provider-{int(name.rsplit('-', 1)[1]) % PROVIDERS + 1}.test"


def generate(total: int, directory: Path) -> tuple[Path, list[str], dict[str, Kind]]:
    """Write ``scenarios.toml``; returns its path, the domains in asking order and domain -> kind."""
    counts = mix(total)
    queues = {k.key: [f"{k.key}-{i:04d}" for i in range(1, counts[k.key] + 1)] for k in KINDS}
    order: list[str] = []
    while any(queues.values()):  # interleave the kinds (round robin): a realistic order of arrival
        for key in queues:
            if queues[key]:
                order.append(queues[key].pop(0))
    entries = ["# generated by bench/cold.py\n"]
    for i in range(1, PROVIDERS + 1):  # the shared MX hosts (their own zones; not asked for)
        p = f"provider-{i}.test"
        entries.append(f'[[scenario]]\nname = "provider-{i}"\nabout = "shared MX hosts of hosted domains"\n'
                       f'mx = [{{ host = "mx1.{p}", cert = "valid" }}, '
                       f'{{ host = "mx2.{p}", cert = "valid", preference = 20 }}]\n'
                       'expect = { result = "delivered", tls = "any" }\n\n')
    by_domain: dict[str, Kind] = {}
    for name in order:
        kind = KIND[name.rsplit("-", 1)[0]]
        domain = f"{name}.test"
        by_domain[domain] = kind
        body = kind.body.replace("{d}", domain).replace("{p}", provider_of(name))
        entries.append(f'[[scenario]]\nname = "{name}"\nabout = "{kind.about}"\n{body}\n')
    scenarios = directory / "scenarios.toml"
    scenarios.write_text("".join(entries), encoding="utf-8")
    return scenarios, [f"{n}.test" for n in order], by_domain


# --------------------------------------------------------------------------------------------- judging


def expected(kind: Kind, server: str, domain: str) -> tuple[str, frozenset[str]]:
    """(reply kind, match= names) that ``server`` owes for ``domain``: with DANE on, mxsec has looked the MX
    hosts up and lists those the policy allows (docs/daemon.md, ``strict_mx_names``); without, the policy's
    patterns (so does the peer)."""
    want = kind.dane if server == "mxsec" else kind.sts
    names = kind.mx if server == "mxsec" else kind.match
    provider = provider_of(domain.removesuffix(".test")) if kind.key == "hosted" else ""
    patterns = frozenset(m.replace("{d}", domain).replace("{p}", provider)
                         for m in names) if want == "secure" else frozenset()
    return want, patterns


def judge(reply: str, want: str, patterns: frozenset[str]) -> str | None:
    """None when ``reply`` is right, else a short class of what is wrong."""
    if reply.startswith("<"):  # <no reply>, <connection lost>, ...
        return "unanswered"
    if reply.startswith("TEMP"):
        return "TEMP"
    if want == "notfound":
        return None if reply == "NOTFOUND " else f"not NOTFOUND ({' '.join(reply.split()[:2])})"
    if want == "dane-only":
        return None if reply == "OK dane-only" else f"not OK dane-only ({' '.join(reply.split()[:2])})"
    if not reply.startswith("OK secure "):
        return f"not OK secure ({' '.join(reply.split()[:2])})"
    found = re.search(r"\bmatch=(\S+)", reply)
    got = frozenset(found.group(1).split(":")) if found else frozenset()
    return None if got == patterns else "OK secure, other match="


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, round(p * (len(values) - 1)))]


# --------------------------------------------------------------------------------------------- Unbound

#: Unbound's counters shown per run (``unbound-control stats``): queries received, cache misses, the longest
#: request list, queries dropped because the request list was full, queries that pushed out an older one
UNBOUND_STATS = {"total.num.queries": "queries", "total.num.cachemiss": "cache misses",
                 "total.requestlist.max": "request list max", "total.requestlist.exceeded": "dropped (list full)",
                 "total.requestlist.overwritten": "jostled out"}


def unbound_stats(topo: Topology, reset: bool) -> dict[str, float]:
    """Unbound's totals since the last reset (``stats`` resets them, ``stats_noreset`` does not)."""
    conf = str(topo.state_dir / "dns" / "unbound" / "unbound.conf")
    proc = subprocess.run(["unbound-control", "-c", conf, "stats" if reset else "stats_noreset"],
                          capture_output=True, text=True, timeout=20, check=False)
    out: dict[str, float] = {}
    for line in proc.stdout.splitlines():
        key, _, value = line.partition("=")
        if key in UNBOUND_STATS:
            try:
                out[UNBOUND_STATS[key]] = float(value)
            except ValueError:
                pass
    return out


# --------------------------------------------------------------------------------------------- processes


def all_stats() -> dict[int, tuple[int, float]]:
    """pid -> (parent pid, CPU seconds user + system) of every process."""
    tick = os.sysconf("SC_CLK_TCK")
    out: dict[int, tuple[int, float]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                fields = handle.read().rpartition(")")[2].split()
        except OSError:
            continue
        out[int(entry)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / tick)
    return out


def tree_cpu(roots: list[int], stats: dict[int, tuple[int, float]]) -> float:
    """CPU seconds of ``roots`` and all their descendants."""
    children: dict[int, list[int]] = defaultdict(list)
    for pid, (ppid, _) in stats.items():
        children[ppid].append(pid)
    total, todo, seen = 0.0, list(roots), set()
    while todo:
        pid = todo.pop()
        if pid in seen or pid not in stats:
            continue
        seen.add(pid)
        total += stats[pid][1]
        todo.extend(children.get(pid, ()))
    return total


LAB_GROUPS = ("unbound", "knot", "policy-hosts", "mx-farm")


def lab_groups(prefix: str) -> dict[str, list[int]]:
    """The lab's processes per group (from the lab's state file)."""
    st = lab_state.load(prefix)
    groups: dict[str, list[int]] = {g: [] for g in LAB_GROUPS}
    for p in st.processes if st else ():
        name = p.name.removeprefix("dns:")
        for g in LAB_GROUPS:
            if name.startswith(g.replace("knot", "knotd")):
                groups[g].append(p.pid)
    return groups


class Server:
    """One server process in the sender namespace (its own process group)."""

    def __init__(self, name: str, argv: list[str], ns: str, port: int, logfile: Path,
                 env: dict[str, str] | None = None) -> None:
        self.name, self.port, self.ns, self.logfile = name, port, ns, logfile
        self.command = " ".join(argv)
        with open(logfile, "ab") as out:
            self.proc = subprocess.Popen(["ip", "netns", "exec", ns, *argv], stdin=subprocess.DEVNULL, stdout=out,
                                         stderr=subprocess.STDOUT, start_new_session=True, env=clean_env(env))

    def wait_listening(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BenchError(f"{self.name} exited with {self.proc.returncode}: {self.tail()}")
            ss = subprocess.run(["ip", "netns", "exec", self.ns, "ss", "-Hltn", f"sport = :{self.port}"],
                                capture_output=True, text=True, timeout=10, check=False)
            if f":{self.port}" in ss.stdout:
                return
            time.sleep(0.1)
        raise BenchError(f"{self.name} not listening on 127.0.0.1:{self.port} after {timeout:g} s: {self.tail()}")

    def tail(self, lines: int = 5) -> str:
        try:
            return " | ".join(self.logfile.read_text(errors="replace").strip().splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
            if self.proc.poll() is not None:
                return
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                return
            try:
                self.proc.wait(wait)
                return
            except subprocess.TimeoutExpired:
                continue


# --------------------------------------------------------------------------------------------- the bench


class Bench:
    def __init__(self, args: argparse.Namespace, topo: Topology, work: Path) -> None:
        self.args, self.topo, self.work = args, topo, work
        self.paths = runner.LabPaths.of(topo)
        self.ca = str(self.paths.ca_file)
        self.live: list[Server] = []
        self.pyspy: subprocess.Popen | None = None

    def server_argv(self, name: str) -> tuple[list[str], dict[str, str] | None]:
        port = PORTS[name]
        if name == "peer":
            cfg = self.work / "peer.yml"
            cfg.write_text("host: 127.0.0.1\n"
                           f"port: {port}\n"
                           "reuse_port: true\n"
                           "cache_grace: 3600\n"
                           "cache:\n  type: internal\n"
                           "default_zone:\n  strict_testing: false\n  timeout: 4\n"
                           "proactive_policy_fetching:\n  enabled: false\n")
            return [str(PEER_VENV / "bin" / "mta-sts-daemon"), "-c", str(cfg), "-v", "info"], {"SSL_CERT_FILE": self.ca}
        cfg = self.work / ("on.toml" if name == "mxsec" else "off.toml")
        cfg.write_text("[dane]\nenabled = %s\n" % ("true" if name == "mxsec" else "false"))
        return [MXSEC, "daemon", "--listen", f"127.0.0.1:{port}", "--cache", "memory://", "--config", str(cfg),
                "--nameserver", self.topo.resolver_ip, "--ca-file", self.ca,
                "--allow-address", self.topo.host_net, "--allow-address", self.topo.dns_net,
                *self.args.mxsec_arg], None

    def start(self, name: str, tag: str) -> Server:
        argv, env = self.server_argv(name)
        srv = Server(name, argv, self.topo.sender_ns, PORTS[name], self.work / f"{tag}.log", env)
        self.live.append(srv)
        srv.wait_listening()
        time.sleep(0.3)  # let it finish starting (imports after bind, if any)
        return srv

    def stop(self, srv: Server) -> None:
        srv.stop()
        if srv in self.live:
            self.live.remove(srv)

    def loadgen(self, port: int, domains: list[str]) -> dict:
        job = {"mode": "cold", "host": "127.0.0.1", "port": port, "domains": domains, "conns": CONNS,
               "timeout": self.args.run_timeout, "budget": self.args.run_timeout + 30, "answers": True}
        proc = subprocess.Popen(["ip", "netns", "exec", self.topo.sender_ns, PYTHON, str(BENCH / "loadgen.py"), "-"],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                start_new_session=True, env=clean_env())
        try:
            out, err = proc.communicate(json.dumps(job), timeout=self.args.run_timeout + 60)
        except BaseException:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
            raise
        try:
            res = json.loads(out.strip().splitlines()[-1])
        except (ValueError, IndexError):
            raise BenchError(f"load generator failed: {err.strip()[-300:]}") from None
        if "error" in res:
            raise BenchError(f"load generator: {res['error']}")
        return res

    def one_run(self, name: str, domains: list[str], by_domain: dict[str, Kind], tag: str,
                profile: Path | None = None) -> dict[str, Any]:
        flush_resolver(self.topo)
        srv = self.start(name, tag)
        unbound_stats(self.topo, reset=True)
        try:
            if profile is not None:
                with open(self.work / f"{tag}.py-spy.log", "wb") as spylog:
                    self.pyspy = subprocess.Popen(
                        [str(Path(PYTHON).with_name("py-spy")), "record", "--pid", str(srv.proc.pid),
                         "--format", "raw", "--rate", "200", "--nonblocking", "-o", str(profile)],
                        stdin=subprocess.DEVNULL, stdout=spylog, stderr=subprocess.STDOUT, start_new_session=True)
                time.sleep(1.5)
                if self.pyspy.poll() is not None:
                    raise BenchError(f"py-spy exited: {(self.work / f'{tag}.py-spy.log').read_text()[-300:]}")
            groups = lab_groups(self.topo.prefix)
            before = all_stats()
            res = self.loadgen(PORTS[name], domains)
            after = all_stats()
            unbound = unbound_stats(self.topo, reset=False)
            if srv.proc.poll() is not None:
                raise BenchError(f"{name} died during the run: {srv.tail()}")
        finally:
            if self.pyspy is not None:
                self.pyspy.send_signal(signal.SIGINT)
                try:
                    self.pyspy.wait(60)
                except subprocess.TimeoutExpired:
                    os.killpg(self.pyspy.pid, signal.SIGKILL)
                    self.pyspy.wait(10)
                self.pyspy = None
            self.stop(srv)
        answers: dict[str, str] = res.pop("answers", {})
        answer_ms: dict[str, float] = res.pop("answer_ms", {})
        lat: dict[str, list[float]] = defaultdict(list)
        for d, ms in answer_ms.items():
            lat[by_domain[d].key].append(ms)
        latency = {k: {"p50_ms": pct(v, 0.5), "p90_ms": pct(v, 0.9), "max_ms": max(v)} for k, v in lat.items()}
        cpu = {"server": tree_cpu([srv.proc.pid], after) - tree_cpu([srv.proc.pid], before)}
        for g, pids in groups.items():
            cpu[g] = tree_cpu(pids, after) - tree_cpu(pids, before)
        wrong: dict[str, Counter] = defaultdict(Counter)
        examples: dict[str, str] = {}
        for d in domains:
            kind = by_domain[d]
            want, patterns = expected(kind, name, d)
            what = judge(answers.get(d, "<no reply>"), want, patterns)
            if what is not None:
                wrong[kind.key][what] += 1
                examples.setdefault(f"{kind.key}: {what}", f"{d} -> {answers.get(d, '<no reply>')[:120]!r}")
        n_wrong = sum(sum(c.values()) for c in wrong.values())
        unanswered = sum(c["unanswered"] for c in wrong.values())
        return {"server": name, "seconds": res["seconds"], "rate": round(len(domains) / res["seconds"], 1),
                "cpu_s": {k: round(v, 2) for k, v in cpu.items()}, "wrong": n_wrong, "unanswered": unanswered,
                "wrong_by_kind": {k: dict(c) for k, c in wrong.items()}, "wrong_examples": examples,
                "p50_ms": res.get("p50_ms"), "p99_ms": res.get("p99_ms"), "max_ms": res.get("max_ms"),
                "latency_by_kind": latency, "unbound": unbound,
                "timed_out": res.get("timed_out"), "command": srv.command}

    def close(self) -> None:
        if self.pyspy is not None and self.pyspy.poll() is None:
            os.killpg(self.pyspy.pid, signal.SIGKILL)
        for srv in list(self.live):
            self.stop(srv)


# --------------------------------------------------------------------------------------------- profile


def profile_report(raw: Path, top: int = 25) -> dict[str, Any]:
    """Own time per function (leaf frames) and inclusive time of mxsec/dnspython/aiohttp functions, from
    py-spy's ``--format raw`` (collapsed stacks: ``frame;frame;... count``)."""
    own: Counter = Counter()
    incl: Counter = Counter()
    total = 0
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = [_frame(f) for f in stack.split(";") if f]
        if not frames:
            continue
        own[frames[-1]] += n
        for f in set(frames):
            if any(tag in f for tag in ("mxsec/", "dns/", "aiohttp/")):
                incl[f] += n
    return {"samples": total, "own": own.most_common(top), "inclusive": incl.most_common(top)}


def _frame(frame: str) -> str:
    """``func (path:line)`` -> ``func (short path)``: one entry per function, not per line."""
    m = re.match(r"^(.*) \((.*?)(?::\d+)?\)$", frame.strip())
    if not m:
        return frame.strip()
    func, path = m.groups()
    for cut in ("site-packages/", "/src/", "/lib/python3"):
        if cut in path:
            path = path.split(cut, 1)[1]
            break
    return f"{func} ({path})"


def print_profile(prof: dict[str, Any]) -> None:
    total = max(prof["samples"], 1)
    log(f"\nprofile of mxsec DANE on (py-spy, {prof['samples']} samples on CPU)")
    log("top own time (leaf frames):")
    for f, n in prof["own"]:
        log(f"  {100 * n / total:5.1f} %  {f}")
    log("top inclusive time (mxsec, dnspython, aiohttp frames):")
    for f, n in prof["inclusive"]:
        log(f"  {100 * n / total:5.1f} %  {f}")


# --------------------------------------------------------------------------------------------- report


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {"rounds": len(runs)}
    out["seconds"] = median([r["seconds"] for r in runs])
    out["rate"] = median([r["rate"] for r in runs])
    out["cpu_s"] = {k: median([r["cpu_s"][k] for r in runs]) for k in runs[0]["cpu_s"]}
    out["wrong"] = sum(r["wrong"] for r in runs)
    out["unanswered"] = sum(r["unanswered"] for r in runs)
    by_kind: dict[str, Counter] = defaultdict(Counter)
    for r in runs:
        for k, c in r["wrong_by_kind"].items():
            by_kind[k].update(c)
    out["wrong_by_kind"] = {k: dict(c) for k, c in by_kind.items()}
    out["p50_ms"] = median([r["p50_ms"] for r in runs])
    out["p99_ms"] = median([r["p99_ms"] for r in runs])
    out["max_ms"] = median([r["max_ms"] for r in runs])
    out["unbound"] = {k: median([r["unbound"].get(k) for r in runs]) for k in UNBOUND_STATS.values()}
    out["latency_by_kind"] = {k: {q: median([r["latency_by_kind"].get(k, {}).get(q) for r in runs])
                                  for q in ("p50_ms", "p90_ms", "max_ms")}
                              for k in runs[0]["latency_by_kind"]}
    return out


def table(summary: dict[str, dict[str, Any]], n: int) -> list[str]:
    names = [s for s in SERVERS if s in summary]

    def fmt(v: Any) -> str:
        if v is None:
            return "-"
        if isinstance(v, float):
            return f"{v:.1f}" if v >= 10 else f"{v:.2f}"
        return str(v)

    rows = [(f"total s ({n} domains, {CONNS} clients)", lambda s: summary[s]["seconds"]),
            ("domains/s", lambda s: summary[s]["rate"]),
            ("latency p50 / max, ms", lambda s: f"{fmt(summary[s]['p50_ms'])} / {fmt(summary[s]['max_ms'])}"),
            ("server CPU s", lambda s: summary[s]["cpu_s"]["server"])]
    rows += [(f"{g} CPU s", (lambda g: lambda s: summary[s]["cpu_s"][g])(g)) for g in LAB_GROUPS]
    rows += [(f"Unbound: {k}", (lambda k: lambda s: summary[s]["unbound"].get(k))(k)) for k in UNBOUND_STATS.values()]
    rows += [("wrong replies (all rounds)", lambda s: summary[s]["wrong"]),
             ("  of which unanswered", lambda s: summary[s]["unanswered"])]
    width = 36
    lines = [f"{'':{width}}" + "".join(f"{LABEL[s]:>17}" for s in names), "-" * (width + 17 * len(names))]
    for label, get in rows:
        lines.append(f"{label:{width}}" + "".join(f"{fmt(get(s)):>17}" for s in names))
    lines.append("latency per kind, p50 / p90 / max ms:")
    for k in KINDS:
        cells = []
        for s in names:
            q = summary[s]["latency_by_kind"].get(k.key)
            cells.append(f"{q['p50_ms']:.0f} / {q['p90_ms']:.0f} / {q['max_ms']:.0f}" if q and q["max_ms"] else "-")
        lines.append(f"  {k.key:{width - 2}}" + "".join(f"{c:>17}" for c in cells))
    for s in names:
        for k, c in summary[s]["wrong_by_kind"].items():
            lines.append(f"  {LABEL[s]}: wrong for {k}: " + ", ".join(f"{what} ×{m}" for what, m in c.items()))
    return lines


def verdicts(summary: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    peer = summary.get("peer")
    for name, target in (("mxsec", 1.2), ("mxsec-nodane", 1.5)):
        mine = summary.get(name)
        if not peer or not mine or not mine["seconds"]:
            continue
        ratio = peer["seconds"] / mine["seconds"]
        ok = ratio >= target and mine["wrong"] == 0
        out.append({"check": f"{LABEL[name]} >= {target}x faster than the peer, all correct "
                             f"(peer ÷ mxsec = {ratio:.2f}x, wrong {mine['wrong']})",
                    "ratio": round(ratio, 3), "target": target, "pass": ok})
    return out


# --------------------------------------------------------------------------------------------- main


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--domains", type=int, default=1000, help="generated domains (default 1000)")
    ap.add_argument("--rounds", type=int, default=3, help="rounds, servers interleaved in each (default 3)")
    ap.add_argument("--servers", default=",".join(SERVERS),
                    help=f"comma list of servers (default {','.join(SERVERS)})")
    ap.add_argument("--mxsec-arg", action="append", default=[], metavar="ARG",
                    help="extra argument for both mxsec daemons (repeatable)")
    ap.add_argument("--profile", action="store_true",
                    help="after the rounds, one more mxsec DANE-on run under py-spy; prints the top functions")
    ap.add_argument("--run-timeout", type=float, default=180.0, help="bound of one run, seconds (default 180)")
    ap.add_argument("--prefix", default=f"mxsec-c{os.getpid()}", help="lab prefix (default mxsec-c<pid>)")
    ap.add_argument("--json", dest="json_file", help="write every figure to this file")
    ap.add_argument("--keep", action="store_true", help="leave the lab up (tear it down with mxsec lab down "
                                                        "--prefix P) and keep the temporary directory")
    args = ap.parse_args()
    servers = [s.strip() for s in args.servers.split(",") if s.strip()]
    if not servers or set(servers) - set(SERVERS):
        ap.error(f"--servers: choose from {','.join(SERVERS)}")
    if args.domains < len(KINDS) + 1:
        ap.error(f"--domains: at least {len(KINDS) + 1}")
    if args.rounds < 1:
        ap.error("--rounds: at least 1")
    reason = prerequisites()
    if reason:
        print(f"cold: {reason}", file=sys.stderr)
        return 2
    if args.json_file:
        args.json_file = str(Path(args.json_file).resolve())
    if "peer" in servers:
        ensure_peer_venv()
    pyspy = Path(PYTHON).with_name("py-spy")
    if args.profile and not pyspy.exists():
        log("installing py-spy into the venv (once)")
        subprocess.run([PYTHON, "-m", "pip", "install", "-q", "py-spy"], check=True, timeout=600)

    idle = cpu_idle(1.0)
    facts = ready_machine(log, idle / 100)

    work = Path(tempfile.mkdtemp(prefix="mxsec-cold-"))
    scenarios, domains, by_domain = generate(args.domains, work)
    counts = Counter(k.key for k in by_domain.values())
    log(f"{len(domains)} domains: " + ", ".join(f"{k.key} {counts[k.key]}" for k in KINDS)
        + f" (+ {PROVIDERS} provider zones); files in {work}")

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the finally below (lab down) on SIGTERM
    topo = Topology(prefix=args.prefix, host_net=HOST_NET)
    bench = Bench(args, topo, work)
    per: dict[str, list[dict[str, Any]]] = {s: [] for s in servers}
    doc: dict[str, Any] = {"when": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()), "machine": facts,
                           "cpu_idle_before_pct": idle, "domains": len(domains), "mix": dict(counts),
                           "providers": PROVIDERS, "concurrency": CONNS, "peer_package": PEER_PACKAGE,
                           "rounds": args.rounds, "servers": servers}
    prof: dict[str, Any] | None = None
    started = time.monotonic()
    runner.down(topo)  # remains of a crashed run with the same prefix
    completed = False
    try:
        t0 = time.monotonic()
        runner.up(topo, scenarios, progress=lambda msg: log(f"  lab: {msg}"))
        doc["lab_up_s"] = round(time.monotonic() - t0, 1)
        log(f"lab {topo.prefix!r} up in {doc['lab_up_s']} s")
        resolv = Path("/etc/netns") / topo.sender_ns / "resolv.conf"
        text = resolv.read_text() if resolv.exists() else ""
        if f"nameserver {topo.resolver_ip}" not in text:
            raise BenchError(f"{resolv} does not point at the lab's Unbound ({topo.resolver_ip}): {text!r}")
        for r in range(1, args.rounds + 1):
            for s in servers:
                res = bench.one_run(s, domains, by_domain, f"r{r}-{s}")
                per[s].append(res)
                log(f"  round {r} {LABEL[s]}: {res['seconds']:.2f} s, {res['rate']:.0f} domains/s, "
                    f"server CPU {res['cpu_s']['server']:.1f} s, unbound {res['cpu_s']['unbound']:.1f} s, "
                    f"{res['unbound'].get('queries', 0):.0f} queries, "
                    f"wrong {res['wrong']}" + (f" e.g. {next(iter(res['wrong_examples'].values()))}"
                                               if res["wrong"] else ""))
        if args.profile:
            raw = work / "profile-mxsec.txt"
            res = bench.one_run("mxsec", domains, by_domain, "profile-mxsec", profile=raw)
            log(f"  profile run (under py-spy, not counted): {res['seconds']:.2f} s, wrong {res['wrong']}")
            if not raw.exists():
                raise BenchError(f"py-spy wrote no profile; see {work}/profile-mxsec.py-spy.log")
            prof = profile_report(raw)
            prof["run"] = res
            prof["raw_file"] = str(raw)
        completed = True
    except BenchError as exc:
        log(f"cold: error: {exc}")
    finally:
        bench.close()
        if args.keep:
            log(f"lab kept: mxsec lab down --prefix {topo.prefix}; files in {work}")
        else:
            t0 = time.monotonic()
            runner.down(topo)
            log(f"lab torn down in {time.monotonic() - t0:.1f} s")
    summary = {s: summarise(per[s]) for s in servers if per[s]}
    lines = table(summary, len(domains)) if summary else []
    checks = verdicts(summary)
    lines.append("")
    lines.append(f"median of {args.rounds} round(s), servers interleaved in each; Unbound flushed and the server "
                 f"started fresh before every run; CPU idle before the run: {idle:.0f} %")
    for c in checks:
        lines.append(f"{'PASS' if c['pass'] else 'FAIL'} {c['check']}")
    log("\n" + "\n".join(lines))
    if prof is not None:
        print_profile(prof)
    doc.update(total_s=round(time.monotonic() - started, 1), completed=completed, summary=summary,
               runs=per, targets=checks, table="\n".join(lines), profile=prof)
    if args.json_file:
        Path(args.json_file).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json_file).write_text(json.dumps(doc, indent=1) + "\n")
        log(f"figures written to {args.json_file}")
    bad = not completed or any(s["wrong"] for s in summary.values())
    if not args.keep:
        if bad or args.profile:
            log(f"logs, scenario file{' and profile' if args.profile else ''} kept in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
