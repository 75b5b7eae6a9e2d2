#!/usr/bin/env python3
"""Bulk ``mxsec check`` over 1,000 lab domains: does it finish, is every answer right, how fast is it.

    sudo .venv/bin/python bench/check_bulk.py                       # 1,000 domains, about a minute
    sudo .venv/bin/python bench/check_bulk.py --domains 100         # smoke run
    sudo .venv/bin/python bench/check_bulk.py --concurrency 20 --concurrency 100 --json bench/results/check_bulk.json

What it does:

1. Writes a scenario file with ``--domains`` generated domains (a realistic mix, see ``TEMPLATES``: mostly
   MTA-STS enforce with valid certificates and TLSRPT, some DANE with signed TLSA records, some testing mode,
   unsigned zones, domains without any policy, and about 3 % broken on purpose) and ``domains.txt``, in a
   temporary directory.
2. Brings up a lab from it (``mxsec.lab.runner.up``, prefix ``mxsec-k<pid>``) whose MX and policy hosts get
   their addresses from ``198.18.0.0/15`` (RFC 2544, the benchmarking range) instead of the default
   ``203.0.113.0/24``, which holds only 245 hosts: ``Topology(host_net=...)`` is an existing parameter of the
   lab, so the default lab is untouched. Knot signs every zone, Unbound validates, the MX farm serves one
   STARTTLS server per MX address, the policy hosts serve every ``mta-sts.<domain>`` by SNI.
3. For each concurrency, runs ``mxsec check --from-file domains.txt --json --concurrency N`` inside the
   sender namespace (``ip netns exec``) against the lab's resolver, once with the SMTP probes and once with
   ``--no-smtp``; Unbound's cache is flushed before every run, so each one starts cold.
4. Verifies each run: exactly one JSON line per domain, no traceback, the exit status (1: some domains are
   broken on purpose), and for every domain the finding codes its template must produce, each as often as
   listed, no other error or warning finding, and errors only where the template is broken on purpose (an
   info finding the template does not list is only noted). Prints a table: wall time, domains/s, CPU time
   of the checker. Exit status 1 when any run has a problem.
5. Tears the lab down (also on failure, Ctrl-C or SIGTERM); keeps the temporary directory (the checker's
   output, the scenario file) when a run had a problem, and says where.

Root is needed (network namespaces). Nothing is sent outside the lab's namespaces.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mxsec.lab import runner
from mxsec.lab.prerequisites import prerequisites
from mxsec.lab.topology import Topology

MXSEC = str(Path(sys.executable).with_name("mxsec"))
#: RFC 2544 benchmarking range: room for 131,000 lab hosts (203.0.113.0/24 holds 245)
HOST_NET = "198.18.0.0/15"
CHECK_TIMEOUT = 900.0  # seconds, per checker run (a bound, not an expectation)


# --------------------------------------------------------------------------------------------- the mix


@dataclass(frozen=True)
class Template:
    """One kind of generated domain: how many per 1,000, its scenario entry, the findings it must produce."""

    key: str  # also the domain's first label: <key>-0001.test
    per_mille: int
    about: str
    body: str  # scenario TOML lines; {d} is the domain
    #: every finding code expected with the SMTP probes / with --no-smtp, as many times as listed (one per MX
    #: host or MX address for per-host findings); exactly these, no others
    codes: tuple[str, ...]
    codes_no_smtp: tuple[str, ...]
    broken: bool = False  # broken on purpose: error findings expected
    errors: frozenset[str] = frozenset()  # the error codes among ``codes``
    errors_no_smtp: frozenset[str] = frozenset()


def _t(key: str, per_mille: int, about: str, body: str, codes: list[str], no_smtp: list[str],
       errors: set[str] = frozenset(), errors_no_smtp: set[str] = frozenset()) -> Template:
    return Template(key, per_mille, about, body, tuple(sorted(codes)), tuple(sorted(no_smtp)), bool(errors),
                    frozenset(errors), frozenset(errors_no_smtp))


_TLSRPT = 'tlsrpt = "mailto:tlsrpt@{d}"\n'
_DELIVERED = 'expect = { result = "delivered", tls = "verified" }\n'
_DANE = 'expect = { result = "delivered", tls = "dane" }\n'
_DEFERRED = 'expect = { result = "deferred", reason = "Server certificate not verified" }\n'
_ONE_MX = 'mx = [{ host = "mx1.{d}", cert = "{cert}" }]\n'
_ENFORCE = 'sts = { id = "20260101T000000", mode = "{mode}", mx = [{mx}], max_age = 604800 }\n'


def _one_mx(cert: str = "valid") -> str:
    return _ONE_MX.replace("{cert}", cert)


def _sts(mode: str = "enforce", mx: str = '"mx1.{d}"') -> str:
    return _ENFORCE.replace("{mode}", mode).replace("{mx}", mx)


# Finding codes, as the checker's catalogue names them (src/mxsec/check/findings.py). Lists, not sets: a code
# that is per MX host (dane-tlsa-missing) or per MX address (smtp-tls-ok) appears once per host/address.
# Every listed code must be there, as often as listed; any other error or warning is a failure; another
# info finding is only noted (the catalogue grows).
ENF, TESTING, RPT = "sts-mode-enforce", "sts-mode-testing", "tlsrpt-ok"
TLS_OK, NO_TLSA, UNSIGNED = "smtp-tls-ok", "dane-tlsa-missing", "dnssec-unsigned"
DANE_OK, ONE_TLSA, NO_STS = "dane-ok", "dane-no-rollover", "sts-txt-missing"
LOOKUPS_FAIL = ["mx-lookup-failed", "sts-txt-lookup-failed", "tlsrpt-lookup-failed"]

TEMPLATES: tuple[Template, ...] = (
    _t("enf", 540, "MTA-STS enforce, one MX with a valid certificate, TLSRPT (signed zone, no TLSA)",
       _one_mx() + _sts() + _TLSRPT + _DELIVERED,
       [ENF, RPT, TLS_OK, NO_TLSA], [ENF, RPT, NO_TLSA]),
    _t("enf2", 100, "MTA-STS enforce with a wildcard pattern, two MX hosts with valid certificates, TLSRPT",
       'mx = [{ host = "mx1.{d}", cert = "valid" }, { host = "mx2.{d}", cert = "valid", preference = 20 }]\n'
       + _sts(mx='"*.{d}"') + _TLSRPT + _DELIVERED,
       [ENF, RPT, TLS_OK, TLS_OK, NO_TLSA, NO_TLSA], [ENF, RPT, NO_TLSA, NO_TLSA]),
    _t("dane", 120, "DANE only: signed zone, TLSA 3 1 1 of the MX key, valid certificate, TLSRPT",
       _one_mx() + 'tlsa = "match"\n' + _TLSRPT + _DANE,
       [DANE_OK, ONE_TLSA, RPT, TLS_OK, NO_STS], [ONE_TLSA, RPT, NO_STS]),
    _t("danests", 50, "DANE (current + next key) and MTA-STS enforce, valid certificate, TLSRPT",
       _one_mx() + _sts() + 'tlsa = "rollover"\n' + _TLSRPT + _DANE,
       [DANE_OK, RPT, TLS_OK, ENF], [ENF, RPT]),
    _t("testing", 60, "MTA-STS testing, valid certificate, TLSRPT",
       _one_mx() + _sts("testing") + _TLSRPT + _DELIVERED,
       [TESTING, RPT, TLS_OK, NO_TLSA], [TESTING, RPT, NO_TLSA]),
    _t("unsigned", 60, "unsigned zone, MTA-STS enforce, valid certificate, TLSRPT",
       'dnssec = "unsigned"\n' + _one_mx() + _sts() + _TLSRPT + _DELIVERED,
       [ENF, RPT, TLS_OK, UNSIGNED], [ENF, RPT, UNSIGNED]),
    _t("nopolicy", 40, "unsigned zone, no MTA-STS, no TLSRPT, valid certificate (opportunistic TLS)",
       'dnssec = "unsigned"\n' + _one_mx() + 'expect = { result = "delivered", tls = "any" }\n',
       [NO_STS, "tlsrpt-missing", TLS_OK, UNSIGNED], [NO_STS, "tlsrpt-missing", UNSIGNED]),
    # --- broken on purpose (30 per 1,000) ----------------------------------------------------------------
    _t("badcert", 6, "BROKEN: enforce, MX certificate for another name",
       _one_mx("wrong-name") + _sts() + _TLSRPT + _DEFERRED,
       [ENF, RPT, TLS_OK, "smtp-certificate-host-mismatch", NO_TLSA], [ENF, RPT, NO_TLSA],
       {"smtp-certificate-host-mismatch"}),
    _t("expired", 6, "BROKEN: enforce, expired MX certificate",
       _one_mx("expired") + _sts() + _TLSRPT + _DEFERRED,
       [ENF, RPT, TLS_OK, "smtp-certificate-expired", NO_TLSA], [ENF, RPT, NO_TLSA],
       {"smtp-certificate-expired"}),
    _t("pol404", 5, "BROKEN: policy host answers 404",
       _one_mx() + _sts() + 'policy_host = { behaviour = "404", cert = "valid" }\n' + _TLSRPT
       + 'expect = { result = "delivered", tls = "any" }\n',
       ["sts-policy-status", RPT, TLS_OK, NO_TLSA], ["sts-policy-status", RPT, NO_TLSA],
       {"sts-policy-status"}, {"sts-policy-status"}),
    _t("danebad", 5, "BROKEN: TLSA does not match the MX key",
       _one_mx() + 'tlsa = "mismatch"\n' + _TLSRPT + _DEFERRED,
       ["dane-mismatch", ONE_TLSA, RPT, TLS_OK, NO_STS], [ONE_TLSA, RPT, NO_STS],
       {"dane-mismatch"}),
    _t("bogus", 4, "BROKEN: bogus DNSSEC (DS does not match the key): SERVFAIL",
       'dnssec = "bogus"\n' + _one_mx() + _sts() + _TLSRPT
       + 'expect = { result = "deferred", reason = "Host or domain name not found" }\n',
       LOOKUPS_FAIL, LOOKUPS_FAIL, set(LOOKUPS_FAIL), set(LOOKUPS_FAIL)),
    _t("notcov", 4, "BROKEN: enforce policy that does not list the MX host",
       _one_mx() + _sts(mx='"mx9.{d}"') + _TLSRPT + _DEFERRED,
       [ENF, "sts-mx-not-covered", "sts-pattern-unused", RPT, TLS_OK, NO_TLSA],
       [ENF, "sts-mx-not-covered", "sts-pattern-unused", RPT, NO_TLSA],
       {"sts-mx-not-covered"}, {"sts-mx-not-covered"}),
)
assert sum(t.per_mille for t in TEMPLATES) == 1000


def mix(total: int, kinds=TEMPLATES) -> dict[str, int]:
    """Domains per kind (anything with ``key`` and ``per_mille``) for ``total`` domains: proportional, at least
    one each, the rest on ``enf``."""
    counts = {t.key: max(1, round(t.per_mille * total / 1000)) for t in kinds}
    counts["enf"] += total - sum(counts.values())
    if counts["enf"] < 1:
        raise SystemExit(f"--domains {total}: too few for one domain of each of the {len(kinds)} kinds")
    return counts


def generate(total: int, directory: Path) -> tuple[Path, Path, dict[str, Template]]:
    """Write ``scenarios.toml`` and ``domains.txt``; returns their paths and domain -> template."""
    by_domain: dict[str, Template] = {}
    entries: list[str] = ["# generated by bench/check_bulk.py\n"]
    counts = mix(total)
    # interleave the kinds (round robin), so the checker meets them in a realistic order
    queues = {t.key: [f"{t.key}-{i:04d}" for i in range(1, counts[t.key] + 1)] for t in TEMPLATES}
    templates = {t.key: t for t in TEMPLATES}
    order: list[str] = []
    while any(queues.values()):
        for key in list(queues):
            if queues[key]:
                order.append(queues[key].pop(0))
    for name in order:
        t = templates[name.rsplit("-", 1)[0]]
        domain = f"{name}.test"
        by_domain[domain] = t
        body = t.body.replace("{d}", domain)
        entries.append(f'[[scenario]]\nname = "{name}"\nabout = "{t.about}"\n{body}\n')
    scenarios = directory / "scenarios.toml"
    scenarios.write_text("".join(entries), encoding="utf-8")
    domains = directory / "domains.txt"
    domains.write_text("".join(f"{d}\n" for d in by_domain), encoding="utf-8")
    return scenarios, domains, by_domain


# --------------------------------------------------------------------------------------------- runs


@dataclass
class RunResult:
    label: str
    smtp: bool
    concurrency: int
    domains: int
    wall: float = 0.0
    cpu: float = 0.0  # user + system seconds of the checker process
    max_rss_mb: float = 0.0
    machine_busy: float = 0.0  # share of all CPUs busy during the run (checker + lab + anything else)
    exit_code: int | None = None
    lines: int = 0
    checker_elapsed: float | None = None  # from the checker's summary: start of the first check to the last
    problems: list[str] = field(default_factory=list)
    severities: Counter = field(default_factory=Counter)  # worst severity per domain
    codes: Counter = field(default_factory=Counter)
    extra_info: Counter = field(default_factory=Counter)  # "<template>: <code>" -> domains (not a failure)

    @property
    def rate(self) -> float:
        return self.domains / self.wall if self.wall else 0.0

    def to_json(self) -> dict[str, Any]:
        return {"label": self.label, "smtp": self.smtp, "concurrency": self.concurrency, "domains": self.domains,
                "wall_s": round(self.wall, 3), "rate_per_s": round(self.rate, 1), "cpu_s": round(self.cpu, 2),
                "cpu_ms_per_domain": round(1000 * self.cpu / max(self.domains, 1), 2),
                "max_rss_mb_children": round(self.max_rss_mb, 1),
                "machine_busy": round(self.machine_busy, 3), "exit_code": self.exit_code, "json_lines": self.lines,
                "checker_elapsed_s": self.checker_elapsed, "problems": self.problems,
                "worst_severity": dict(self.severities), "codes": dict(self.codes),
                "extra_info_findings": dict(self.extra_info)}


def flush_resolver(topo: Topology) -> None:
    """Empty Unbound's caches (every run starts cold), through its control socket."""
    conf = str(topo.state_dir / "dns" / "unbound" / "unbound.conf")
    for cmd in (["flush_zone", "."], ["flush_bogus"], ["flush_negative"], ["flush_infra", "all"]):
        subprocess.run(["unbound-control", "-c", conf, *cmd], check=True, capture_output=True, timeout=20)


def run_check(topo: Topology, domains_file: Path, by_domain: dict[str, Template], *, smtp: bool,
              concurrency: int, out_dir: Path, timeout: float, smtp_timeout: float) -> RunResult:
    paths = runner.LabPaths.of(topo)
    label = f"{'SMTP' if smtp else '--no-smtp'}, concurrency {concurrency}"
    result = RunResult(label, smtp, concurrency, len(by_domain))
    argv = ["ip", "netns", "exec", topo.sender_ns, MXSEC, "check", "--from-file", str(domains_file), "--json",
            "--concurrency", str(concurrency), "--nameserver", topo.resolver_ip, "--ca-file", str(paths.ca_file),
            "--allow-address", topo.host_net, "--allow-address", topo.dns_net,
            "--timeout", str(timeout), "--smtp-timeout", str(smtp_timeout)]
    if not smtp:
        argv.append("--no-smtp")
    tag = f"{'smtp' if smtp else 'nosmtp'}-c{concurrency}"
    stdout_path, stderr_path = out_dir / f"{tag}.jsonl", out_dir / f"{tag}.stderr"
    flush_resolver(topo)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    machine_before = cpu_snapshot()
    t0 = time.monotonic()
    with open(stdout_path, "wb") as out, open(stderr_path, "wb") as err:
        proc = subprocess.Popen(argv, stdout=out, stderr=err, stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            result.exit_code = proc.wait(CHECK_TIMEOUT)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
            result.problems.append(f"the checker did not finish within {CHECK_TIMEOUT:g} s (killed)")
        except BaseException:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
            raise
    result.wall = time.monotonic() - t0
    result.machine_busy = 1 - idle_between(machine_before, cpu_snapshot())
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    result.cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    result.max_rss_mb = after.ru_maxrss / 1024  # the largest child so far (KiB on Linux)
    stderr = stderr_path.read_text(errors="replace")
    found = re.search(r"(\d+) domains in ([\d.]+) s", stderr)  # the checker's own summary (after imports)
    if found:
        result.checker_elapsed = float(found.group(2))
    if "Traceback" in stderr:
        result.problems.append(f"traceback on stderr (see {stderr_path})")
    verify(result, stdout_path.read_text(errors="replace"), by_domain)
    expected_exit = 1 if any(t.errors if smtp else t.errors_no_smtp for t in set(by_domain.values())) else 0
    if result.exit_code != expected_exit:
        result.problems.append(f"exit status {result.exit_code}, expected {expected_exit}")
    return result


def verify(result: RunResult, stdout: str, by_domain: dict[str, Template]) -> None:
    seen: Counter = Counter()
    mismatches: dict[tuple[str, tuple, tuple, tuple], list[str]] = defaultdict(list)
    for n, line in enumerate(stdout.splitlines(), 1):
        if not line.strip():
            continue
        result.lines += 1
        try:
            obj = json.loads(line)
        except ValueError:
            result.problems.append(f"line {n} is not JSON: {line[:80]!r}")
            continue
        domain = obj.get("domain")
        seen[domain] += 1
        t = by_domain.get(domain)
        if t is None:
            result.problems.append(f"line {n}: unknown domain {domain!r}")
            continue
        findings = obj.get("findings") or []
        codes = Counter(f["code"] for f in findings)
        errors = frozenset(f["code"] for f in findings if f["severity"] == "error")
        result.codes.update(f["code"] for f in findings)
        sev = {f["severity"] for f in findings}
        result.severities["error" if "error" in sev else "warning" if "warning" in sev else "ok"] += 1
        want = Counter(t.codes if result.smtp else t.codes_no_smtp)
        want_errors = t.errors if result.smtp else t.errors_no_smtp
        severity = {f["code"]: f["severity"] for f in findings}
        surplus = codes - want
        extra = Counter({c: n for c, n in surplus.items() if severity[c] != "info"})
        for c in surplus:
            if severity[c] == "info":
                result.extra_info[f"{t.key}: {c}"] += 1
        absent = want - codes
        if extra or absent or errors != want_errors:
            key = (t.key, tuple(sorted(extra.elements())), tuple(sorted(absent.elements())),
                   tuple(sorted(errors ^ want_errors)))
            mismatches[key].append(domain)
            detail = [f"{f['severity']} {f['code']}: {f['message']}" for f in findings
                      if f["code"] in extra or (f["severity"] == "error") != (f["code"] in want_errors)]
            mismatches[key].append("  " + "; ".join(detail)[:300])
    missing = [d for d in by_domain if seen[d] == 0]
    doubled = [d for d, c in seen.items() if c > 1]
    if missing:
        result.problems.append(f"{len(missing)} domain(s) without a JSON line, e.g. {', '.join(missing[:5])}")
    if doubled:
        result.problems.append(f"{len(doubled)} domain(s) with more than one line, e.g. {', '.join(doubled[:5])}")
    for (key, extra, absent, severity), items in sorted(mismatches.items(), key=lambda kv: kv[0][0]):
        domains = items[0::2]
        result.problems.append(
            f"{len(domains)} '{key}' domain(s) with unexpected findings: extra {list(extra)}, missing "
            f"{list(absent)}, error severity differs for {list(severity)}; e.g. {', '.join(domains[:3])}:{items[1]}")


# --------------------------------------------------------------------------------------------- report


def machine() -> dict[str, Any]:
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = 0
    try:
        mem = int(Path("/proc/meminfo").read_text().split()[1]) // 1024 // 1024
    except (OSError, ValueError, IndexError):
        pass
    return {"cpus": os.cpu_count(), "cpu": cpu, "mem_gib": mem, "kernel": platform.release(),
            "python": platform.python_version()}


def cpu_snapshot() -> tuple[int, int]:
    """(idle + iowait, total) jiffies of the whole machine."""
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    return fields[3] + fields[4], sum(fields)


def idle_between(a: tuple[int, int], b: tuple[int, int]) -> float:
    return (b[0] - a[0]) / max(b[1] - a[1], 1)


def ready_machine(say, idle: float) -> dict[str, Any]:
    """Open-files limit up to the hard limit (the MX farm listens on >1,000 addresses); ``say`` the machine and
    its idle share (0..1) before the run, with a warning under 85 %. Returns the machine's facts."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    facts = machine()
    say(f"machine: {facts['cpus']} CPUs ({facts['cpu']}), {facts['mem_gib']} GiB, kernel {facts['kernel']}, "
        f"Python {facts['python']}; CPU idle before the run: {100 * idle:.0f} %")
    if idle < 0.85:
        say("warning: the machine is busy; figures will be lower than on a quiet machine")
    return facts


def idle_share(seconds: float = 1.0) -> float:
    a = cpu_snapshot()
    time.sleep(seconds)
    return idle_between(a, cpu_snapshot())


def print_table(results: list[RunResult]) -> None:
    head = ("run", "domains", "JSON lines", "wall s", "domains/s", "checks s", "checker CPU s", "CPU ms/domain",
            "machine busy", "problems")
    rows = [(r.label, str(r.domains), str(r.lines), f"{r.wall:.1f}", f"{r.rate:.1f}",
             f"{r.checker_elapsed:.1f}" if r.checker_elapsed is not None else "?", f"{r.cpu:.1f}",
             f"{1000 * r.cpu / max(r.domains, 1):.1f}", f"{100 * r.machine_busy:.0f} %", str(len(r.problems)))
            for r in results]
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(head)]
    print()
    print("  ".join(h.ljust(w) for h, w in zip(head, widths)))
    print("  ".join("-" * w for w in widths))
    for row in rows:
        print("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))))
    for r in results:
        for p in r.problems:
            print(f"[{r.label}] {p}")
        if r.extra_info:
            print(f"[{r.label}] note, info findings not in the templates: "
                  + ", ".join(f"{k} ×{n}" for k, n in sorted(r.extra_info.items())))


# --------------------------------------------------------------------------------------------- main


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--domains", type=int, default=1000, help="generated domains (default 1000)")
    ap.add_argument("--concurrency", type=int, action="append",
                    help="--concurrency of mxsec check (repeatable; default 20 and 50)")
    ap.add_argument("--no-smtp-run", choices=("yes", "no"), default="yes",
                    help="also run with --no-smtp (default yes)")
    ap.add_argument("--timeout", type=float, default=3.0, help="mxsec check --timeout (default 3)")
    ap.add_argument("--smtp-timeout", type=float, default=5.0, help="mxsec check --smtp-timeout (default 5)")
    ap.add_argument("--prefix", default=f"mxsec-k{os.getpid()}", help="lab prefix (default mxsec-k<pid>)")
    ap.add_argument("--json", dest="json_file", help="write every figure to this file")
    ap.add_argument("--keep", action="store_true", help="leave the lab up (tear it down with mxsec lab down "
                                                        "--prefix P) and keep the temporary directory")
    args = ap.parse_args()
    concurrencies = args.concurrency or [20, 50]
    if args.domains < len(TEMPLATES) + 1:
        ap.error(f"--domains: at least {len(TEMPLATES) + 1}")
    reason = prerequisites()
    if reason:
        print(f"check_bulk: {reason}", file=sys.stderr)
        return 2

    idle = idle_share()
    facts = ready_machine(print, idle)

    work = Path(tempfile.mkdtemp(prefix="mxsec-check-bulk-"))
    scenarios, domains_file, by_domain = generate(args.domains, work)
    counts = Counter(t.key for t in by_domain.values())
    print(f"{len(by_domain)} domains: " + ", ".join(f"{k} {counts[k]}" for k in (t.key for t in TEMPLATES))
          + f" ({sum(counts[t.key] for t in TEMPLATES if t.broken)} broken on purpose); files in {work}")

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the finally below (lab down) on SIGTERM
    topo = Topology(prefix=args.prefix, host_net=HOST_NET)
    results: list[RunResult] = []
    lab_up = 0.0
    steps: list[str] = []
    started = time.monotonic()
    runner.down(topo)  # remains of a crashed run with the same prefix
    completed = False

    def progress(msg: str) -> None:
        steps.append(msg)
        print(f"  lab: {msg}", flush=True)

    try:
        t0 = time.monotonic()
        status = runner.up(topo, scenarios, progress=progress)
        lab_up = time.monotonic() - t0
        hosts = len(status["lab"]["hosts"])
        print(f"lab {topo.prefix!r} up in {lab_up:.1f} s: {hosts} host addresses in {HOST_NET}", flush=True)
        for c in concurrencies:
            for smtp in (True, False) if args.no_smtp_run == "yes" else (True,):
                r = run_check(topo, domains_file, by_domain, smtp=smtp, concurrency=c, out_dir=work,
                              timeout=args.timeout, smtp_timeout=args.smtp_timeout)
                print(f"  {r.label}: {r.lines} lines in {r.wall:.1f} s = {r.rate:.1f} domains/s, "
                      f"{len(r.problems)} problem(s)", flush=True)
                results.append(r)
        completed = True
    finally:
        if args.keep:
            print(f"lab kept: mxsec lab down --prefix {topo.prefix}; files in {work}")
        else:
            t0 = time.monotonic()
            runner.down(topo)
            print(f"lab torn down in {time.monotonic() - t0:.1f} s")
            if not completed:
                shutil.rmtree(work, ignore_errors=True)
    total = time.monotonic() - started

    print_table(results)
    print(f"\nlab up {lab_up:.1f} s, whole bench {total:.1f} s; "
          f"worst severity per domain (first run): {dict(results[0].severities) if results else {}}")
    if args.json_file:
        Path(args.json_file).parent.mkdir(parents=True, exist_ok=True)
        doc = {"when": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()), "machine": facts,
               "idle_before": round(idle, 3), "domains": len(by_domain), "mix": dict(counts),
               "host_net": HOST_NET, "lab_up_s": round(lab_up, 2), "lab_steps": steps, "total_s": round(total, 1),
               "runs": [r.to_json() for r in results]}
        Path(args.json_file).write_text(json.dumps(doc, indent=1))
        print(f"figures written to {args.json_file}")
    failed = any(r.problems for r in results) or not results
    if failed and not args.keep:
        print(f"the checker's output and the scenario file are in {work}")
    elif not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
