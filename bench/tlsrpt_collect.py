"""TLSRPT collector: ``mxsec tlsrpt collect`` beside sys4's ``tlsrpt-collectd`` in the same run.

    .venv/bin/python bench/tlsrpt_collect.py [--blast 100000] [--rounds 3] [--rates 10000,25000,50000,75000]
        [--seconds 3] [--senders 8] [--mixes A,B,C] [--only mxsec,sys4,bare] [--peer DIR | --no-peer] [--qlen N]
        [--json FILE]

Both collectors receive libtlsrpt's datagram protocol v1 (one JSON object per ``AF_UNIX``/``SOCK_DGRAM``
datagram, byte for byte the encoding of libtlsrpt 0.5) and count sessions into SQLite:

- mxsec: ``mxsec tlsrpt collect --socket S --db sqlite:///F`` (this checkout's virtualenv);
- sys4: ``tlsrpt-collectd --socketname S --storage sqlite:///F`` from the PyPI package ``tlsrpt-reporter``,
  installed on first use into its own virtualenv ``bench/.venv-tlsrpt`` (``--peer DIR`` uses another
  virtualenv's ``bin`` directory; ``--no-peer`` skips it);
- bare: the floor, not a collector: a Python loop that only receives (``recv_into``, ``poll`` when the queue is
  empty, the same loop as mxsec's) and counts, publishing its count to a file every 0.1 s. What it loses in
  the paced phase is lost to the machine (scheduling and wake-up latency against a queue of 11), not to any
  collector's work.

For every datagram mix (A: 100 distinct datagrams, B: 5,000, C: 50,000; about 80 % successful sessions, one
policy per datagram as Postfix sends them) both collectors are started, each on a fresh database, and measured
in turn (blast round 1 to mxsec, then to sys4, round 2 to mxsec, …; each paced rate likewise), so that a change
in the machine's load during the run falls on both:

1. **blast** (``--rounds`` times; the best round and the median are shown): a separate sender process (no GIL
   shared with anything) sends ``--blast`` datagrams, cycling through the mix, with *blocking* ``sendto``: when
   the collector's queue is full the sender waits, so the sender's elapsed time is the collector's sustained
   receive rate and nothing is lost. Then the stored total is polled until it equals what was sent ("all stored
   after": sys4 commits every 1,000 datagrams or after 5 s without any, mxsec once a second). Collector CPU
   (user + system, all threads, from ``/proc``) is taken over each blast, and so is the CPU the rest of the
   machine used meanwhile (busy time from ``/proc/stat`` minus the collector's and the sender's): shown per
   round in parentheses.
2. **paced**: for each rate of ``--rates``, ``--seconds`` seconds of ``MSG_DONTWAIT`` sends (what libtlsrpt
   does) from ``--senders`` sockets in turn (one per MTA delivery process): a send that fails with ``EAGAIN``
   (queue full) is a lost session, exactly as in an MTA.
3. The stored total must reach everything the kernel accepted (blast + paced sends that did not fail); then
   ``SIGTERM``, and the total is read again.

The queue limit is ``net.unix.max_dgram_qlen`` (10 on a default Linux: about 11 datagrams). ``--qlen N`` runs
the whole benchmark inside a new network namespace (``unshare --net``, root) with the limit set to N there,
leaving the machine's own setting alone.

Bounded: fixed datagram counts, every send loop has a time limit, every wait a timeout; the collectors are
stopped and the temporary directory removed at the end, also on error or Ctrl-C.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import multiprocessing
import os
import random
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from mxsec.testing.libtlsrpt import Detail, Pol
from mxsec.testing.libtlsrpt import encode as encode_datagram

MXSEC = str(Path(sys.executable).with_name("mxsec"))
BENCH = Path(__file__).resolve().parent
PEER_VENV = BENCH / ".venv-tlsrpt"
PEER_PACKAGE = "tlsrpt-reporter==0.6.0"
MIXES = {"A": 100, "B": 5_000, "C": 50_000}
#: mxsec, sys4's collectd, and a bare receiver (the floor: receives and counts, nothing else)
KINDS = ("mxsec", "sys4", "bare")

BARE_RECEIVER = r"""
import os, select, signal, socket, sys, time
path, counter = sys.argv[1], sys.argv[2]
stop = []
signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
sock.bind(path)
sock.setblocking(False)
poller = select.poll()
poller.register(sock.fileno(), select.POLLIN)
buffer = bytearray(262145)
recv_into = sock.recv_into
count = 0
def publish():
    with open(counter + ".tmp", "w") as f:
        f.write(str(count))
    os.replace(counter + ".tmp", counter)
publish()
next_publish = time.monotonic() + 0.1
while not stop:
    try:
        while True:
            recv_into(buffer)
            count += 1
    except BlockingIOError:
        pass
    if time.monotonic() >= next_publish:
        publish()
        next_publish = time.monotonic() + 0.1
    poller.poll(100)
publish()
"""
CLK_TCK = os.sysconf("SC_CLK_TCK")
INNER_ENV = "MXSEC_BENCH_TLSRPT_NETNS"

# ------------------------------------------------------------------------------------------ the datagrams


def encode(domain: str, record: str, ptype: int, pdomain: str | None, strings: list[str], mx: list[str],
           details: list[dict[str, object]], failed: bool) -> bytes:
    """One datagram with one policy, byte for byte as libtlsrpt 0.5 writes it (see mxsec.testing.libtlsrpt)."""
    items = [Detail(int(d["c"]), **{k: str(d[k]) for k in ("s", "n", "h", "r", "a", "f") if k in d}) for d in details]
    return encode_datagram(domain, record, [Pol(ptype, pdomain, strings, mx, items, failed)])


CODES = [201, 202, 203, 204, 205, 301, 302, 303, 304, 305, 306]
REASONS = {201: "STARTTLS not offered", 202: "hostname mismatch", 203: "unable to get local issuer certificate",
           204: "certificate has expired", 205: "handshake failure", 301: "policy fetch timeout",
           302: "invalid policy", 303: "policy host certificate not trusted", 304: "no TLSA record matched",
           305: "DNSSEC validation failed", 306: "TLSA records unusable"}


def make_mix(distinct: int, seed: int = 8460) -> list[bytes]:
    """*distinct* different datagrams: about 80 % successful sessions (one per report domain and policy, as
    Postfix sends them: byte for byte the same for every session to that domain), 20 % failed ones with one
    failure detail each (sending and receiving addresses, MX host, EHLO reply and reason varied), one policy
    per datagram: 60 % sts, 25 % tlsa (DANE, policy-domain = MX host), 15 % no-policy-found."""
    rng = random.Random(seed + distinct)
    domains = max(1, distinct * 4 // 5)
    out: list[bytes] = []
    for index in range(distinct):
        n = index % domains
        domain = f"mail{n}.d{n % 97}.example"
        record = f"v=TLSRPTv1; rua=mailto:tlsrpt@{domain}"
        kind = n % 20
        mx1, mx2 = f"mx1.{domain}", f"mx2.{domain}"
        if kind < 12:
            ptype, pdomain = 2, domain
            strings = ["version: STSv1", "mode: enforce", f"mx: {mx1}", f"mx: {mx2}", "max_age: 604800"]
            mx = [mx1, mx2]
        elif kind < 17:
            ptype, pdomain = 1, mx1
            digest = hashlib.sha256(domain.encode()).hexdigest().upper()
            strings = [f"3 1 1 {digest}"]
            mx = []
        else:
            ptype, pdomain, strings, mx = 9, None, [], []
        failed = index >= domains
        details: list[dict[str, object]] = []
        if failed:
            code = rng.choice(CODES[:5] if ptype == 9 else CODES)
            host = rng.choice([mx1, mx2])
            details.append({"c": code, "s": f"192.0.2.{rng.randint(1, 254)}", "n": host,
                            "h": f"{host} ESMTP ready\r\n250-PIPELINING\r\n250 STARTTLS",
                            "r": f"198.51.100.{rng.randint(1, 254)}", "f": f"{REASONS[code]} #{index}"})
        out.append(encode(domain, record, ptype, pdomain, strings, mx, details, failed))
    rng.shuffle(out)
    return out


# ------------------------------------------------------------------------------------------ the senders


def _blast(path: str, datagrams: list[bytes], count: int, limit: float, conn) -> None:
    """Blocking sends: a full queue makes ``sendto`` wait for the collector."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.settimeout(limit)
    send = sock.sendto
    n = len(datagrams)
    sent = 0
    cpu = time.process_time()
    began = time.perf_counter()
    deadline = began + limit
    error = None
    try:
        for i in range(count):
            send(datagrams[i % n], path)
            sent += 1
            if sent & 4095 == 0 and time.perf_counter() > deadline:
                break
    except OSError as exc:
        error = str(exc)
    conn.send({"sent": sent, "seconds": time.perf_counter() - began, "cpu": time.process_time() - cpu,
               "error": error})


def _paced(path: str, datagrams: list[bytes], rate: int, seconds: float, senders: int, conn) -> None:
    """``MSG_DONTWAIT`` sends on a fixed schedule (*rate* per second for *seconds*) over *senders* sockets in
    turn (an MTA's delivery processes each have their own libtlsrpt socket, and a socket's send buffer caps
    how many of its datagrams can wait in the collector's queue); ``EAGAIN`` = lost."""
    socks = []
    for _ in range(senders):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.connect(path)
        socks.append(sock)
    sends = [sock.send for sock in socks]
    flags = socket.MSG_DONTWAIT
    n = len(datagrams)
    accepted = lost = i = 0
    error = None
    cpu = time.process_time()
    began = time.perf_counter()
    end = began + seconds
    total = int(rate * seconds)
    while i < total:
        now = time.perf_counter()
        if now >= end + 1.0:  # the sender fell far behind its schedule: stop (reported as attempted < planned)
            break
        due = min(total, int((now - began) * rate) + 1)
        if i >= due:
            time.sleep(min(0.0002, (i - (now - began) * rate) / rate))
            continue
        while i < due:
            try:
                sends[i % senders](datagrams[i % n], flags)
                accepted += 1
            except BlockingIOError:
                lost += 1
            except OSError as exc:
                error = str(exc)
                break
            i += 1
        if error:
            break
    conn.send({"attempted": accepted + lost, "accepted": accepted, "lost": lost,
               "seconds": time.perf_counter() - began, "cpu": time.process_time() - cpu, "error": error})


def run_sender(target, *args, timeout: float) -> dict:
    ctx = multiprocessing.get_context("fork")
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=target, args=(*args, child), daemon=True)
    proc.start()
    child.close()
    try:
        if not parent.poll(timeout):
            raise RuntimeError(f"sender gave no result within {timeout:.0f} s")
        return parent.recv()
    finally:
        proc.join(5)
        if proc.is_alive():
            proc.kill()
            proc.join(5)


# ------------------------------------------------------------------------------------------ the collectors


class Collector:
    def __init__(self, kind: str, work: Path, peer_bin: str | None) -> None:
        self.kind = kind
        self.dir = work
        self.socket = str(work / f"{kind}.sock")
        self.db = work / f"{kind}.sqlite3"
        self.log = work / f"{kind}.log"
        if kind == "mxsec":
            config = work / "empty.toml"
            config.touch()
            self.argv = [MXSEC, "tlsrpt", "collect", "--socket", self.socket, "--db", f"sqlite:///{self.db}",
                         "--config", str(config), "--log-format", "text"]
            self.query = "SELECT COALESCE(SUM(successful + failed), 0) FROM tlsrpt_out_policy"
        elif kind == "bare":
            self.counter = work / "bare.count"
            self.argv = [sys.executable, "-c", BARE_RECEIVER, self.socket, str(self.counter)]
            self.query = ""
        else:
            assert peer_bin is not None
            self.argv = [os.path.join(peer_bin, "tlsrpt-collectd"), "--socketname", self.socket,
                         "--storage", f"sqlite://{self.db}", "--log_level", "warning"]
            self.query = "SELECT COALESCE(SUM(cntrtotal), 0) FROM finalresults"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("TLSRPT_COLLECTD_")}
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                         cwd=self.dir, env=env, start_new_session=True)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.kind} exited with {self.proc.returncode}: {self.tail()}")
            if os.path.exists(self.socket) and self._ready():
                return
            time.sleep(0.05)
        raise RuntimeError(f"{self.kind} did not start: {self.tail()}")

    def _ready(self) -> bool:
        # the database exists with its tables (sys4 binds the socket before it opens the database)
        try:
            self.stored()
            return True
        except sqlite3.Error:
            return False

    def tail(self) -> str:
        try:
            return self.log.read_text(errors="replace")[-2000:]
        except OSError:
            return ""

    def stored(self) -> int:
        if self.kind == "bare":
            try:
                return int(self.counter.read_text())
            except (OSError, ValueError):
                raise sqlite3.OperationalError("no count yet") from None
        if not self.db.exists():
            raise sqlite3.OperationalError("no database yet")
        conn = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=5)
        try:
            return int(conn.execute(self.query).fetchone()[0])
        finally:
            conn.close()

    def wait_stored(self, expected: int, timeout: float) -> tuple[int, float]:
        """Poll until *expected* sessions are stored; (stored, seconds waited)."""
        began = time.monotonic()
        stored = -1
        while time.monotonic() - began < timeout:
            try:
                stored = self.stored()
            except sqlite3.Error:
                stored = -1
            if stored >= expected:
                break
            time.sleep(0.02)
        return stored, time.monotonic() - began

    def cpu(self) -> float:
        """User + system seconds of the collector process (all its threads)."""
        assert self.proc is not None
        with open(f"/proc/{self.proc.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK

    def stop(self) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
            return None

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


# ---------------------------------------------------------------------------------------------- the run


@dataclass
class Result:
    kind: str
    mix: str
    distinct: int
    blast_sent: int = 0
    blast_seconds: float = 0.0
    blast_rate: float = 0.0
    blast_cpu_us: float = 0.0
    all_stored_after: float = 0.0
    blast_stored: int = 0
    blast_others: float = 0.0
    blast_median: float = 0.0
    rounds: list[dict] = field(default_factory=list)
    paced: list[dict] = field(default_factory=list)
    accepted_total: int = 0
    stored_before_stop: int = 0
    stored_final: int = 0
    exit_status: int | None = None
    errors: list[str] = field(default_factory=list)


def _blast_round(collector: Collector, result: Result, datagrams: list[bytes], args) -> None:
    cpu0, stat0 = collector.cpu(), cpu_stat()
    blast = run_sender(_blast, collector.socket, datagrams, args.blast, args.blast_limit,
                       timeout=args.blast_limit + 30)
    cpu1, stat1 = collector.cpu(), cpu_stat()
    busy = (stat1[1] - stat0[1]) / CLK_TCK
    capacity = (stat1[0] - stat0[0]) / CLK_TCK
    others = max(0.0, busy - (cpu1 - cpu0) - blast["cpu"]) / max(1e-9, capacity) * 100
    if blast["error"]:
        result.errors.append(f"blast: {blast['error']}")
    result.accepted_total += blast["sent"]
    stored, waited = collector.wait_stored(result.accepted_total, timeout=30)
    result.rounds.append({"sent": blast["sent"], "seconds": blast["seconds"], "rate": blast["sent"] / blast["seconds"],
                          "cpu_us": (cpu1 - cpu0) / max(1, blast["sent"]) * 1e6,
                          "all_stored_after": blast["seconds"] + waited, "stored": stored,
                          "sender_cpu_us": blast["cpu"] / max(1, blast["sent"]) * 1e6,
                          "others_cpu_percent": others})


def _paced_run(collector: Collector, result: Result, datagrams: list[bytes], rate: int, args) -> None:
    cpu0, stat0 = collector.cpu(), cpu_stat()
    paced = run_sender(_paced, collector.socket, datagrams, rate, args.seconds, args.senders,
                       timeout=args.seconds + 30)
    cpu1, stat1 = collector.cpu(), cpu_stat()
    busy = (stat1[1] - stat0[1]) / CLK_TCK
    capacity = (stat1[0] - stat0[0]) / CLK_TCK
    paced["others_cpu_percent"] = max(0.0, busy - (cpu1 - cpu0) - paced["cpu"]) / max(1e-9, capacity) * 100
    paced["rate"] = rate
    if paced["error"]:
        result.errors.append(f"paced {rate}/s: {paced['error']}")
    result.accepted_total += paced["accepted"]
    result.paced.append(paced)
    time.sleep(0.5)  # let the queue drain


def measure(kinds: list[str], mix: str, datagrams: list[bytes], args, work: Path,
            peer_bin: str | None) -> list[Result]:
    """Both collectors of one mix, each on a fresh database, started side by side and measured in turn (each
    blast round and each paced rate goes to one collector, then to the other), so a change in the machine's
    load during the run falls on both."""
    results = {kind: Result(kind, mix, len(datagrams)) for kind in kinds}
    collectors: dict[str, Collector] = {}
    live = list(kinds)

    def guarded(kind: str, step) -> None:
        if kind not in live:
            return
        try:
            step(collectors[kind], results[kind])
        except Exception as exc:  # noqa: BLE001 - reported; the other collector goes on
            results[kind].errors.append(f"{type(exc).__name__}: {exc}; log: {collectors[kind].tail()[-500:]}")
            live.remove(kind)

    try:
        for kind in kinds:
            where = work / f"{kind}-{mix}"
            where.mkdir()
            collectors[kind] = Collector(kind, where, peer_bin)
            guarded(kind, lambda c, r: c.start())
        for _ in range(args.rounds):
            for kind in kinds:
                guarded(kind, lambda c, r: _blast_round(c, r, datagrams, args))
        for rate in args.rates:
            for kind in kinds:
                guarded(kind, lambda c, r, rate=rate: _paced_run(c, r, datagrams, rate, args))

        def finish(c: Collector, r: Result) -> None:
            r.stored_before_stop, _ = c.wait_stored(r.accepted_total, timeout=60)
            r.exit_status = c.stop()
            r.stored_final = c.stored()

        for kind in kinds:
            guarded(kind, finish)
    finally:
        for collector in collectors.values():
            collector.kill()
    for result in results.values():
        if result.rounds:
            best = max(result.rounds, key=lambda r: r["rate"])
            result.blast_sent = best["sent"]
            result.blast_seconds = best["seconds"]
            result.blast_rate = best["rate"]
            result.blast_cpu_us = best["cpu_us"]
            result.all_stored_after = best["all_stored_after"]
            result.blast_stored = best["stored"]
            result.blast_others = best["others_cpu_percent"]
            result.blast_median = sorted(r["rate"] for r in result.rounds)[len(result.rounds) // 2]
    return [results[kind] for kind in kinds]


def ensure_peer() -> str:
    python = PEER_VENV / "bin" / "python"
    if not (PEER_VENV / "bin" / "tlsrpt-collectd").exists():
        subprocess.run([sys.executable, "-m", "venv", str(PEER_VENV)], check=True, timeout=300)
        (PEER_VENV / ".gitignore").write_text("*\n")
        result = subprocess.run([str(python), "-m", "pip", "install", "-q", PEER_PACKAGE],
                                capture_output=True, text=True, timeout=900, check=False)
        if result.returncode != 0:
            shutil.rmtree(PEER_VENV, ignore_errors=True)
            raise SystemExit(f"pip install {PEER_PACKAGE} failed: {result.stderr.strip()[-500:]}")
    return str(PEER_VENV / "bin")


def _fmt_rate(value: float) -> str:
    return f"{value:,.0f}"


def _loss(p: dict) -> str:
    share = 100.0 * p["lost"] / p["attempted"] if p["attempted"] else 0.0
    return f"{p['lost']:,} ({share:.2f} %) [{p.get('others_cpu_percent', 0):.0f} %]"


def report(results: list[Result], args, qlen: int) -> None:
    by = {(r.kind, r.mix): r for r in results}
    kinds = [k for k in KINDS if any(r.kind == k for r in results)]
    both = "mxsec" in kinds and "sys4" in kinds
    mine, theirs = (kinds.index("mxsec"), kinds.index("sys4")) if both else (0, 0)
    print()
    print(f"net.unix.max_dgram_qlen = {qlen}; blast {args.blast:,} datagrams × {args.rounds} rounds per mix and "
          f"collector; paced "
          f"{args.seconds:g} s per rate from {args.senders} sockets")
    head = "| mix | measure | " + " | ".join(kinds) + (" | mxsec ÷ sys4 |" if both else " |")
    print(head)
    print("|---|---|" + "---:|" * (len(kinds) + (1 if both else 0)))
    for mix in args.mixes:
        rows: list[tuple[str, list[str], str]] = []
        res = [by.get((k, mix)) for k in kinds]

        def ratio(values: list[float], higher_is_better: bool = True) -> str:
            if not both or not values[theirs]:
                return ""
            value = values[mine] / values[theirs]
            return f"**{value:.2f}×**" if higher_is_better else f"{value:.2f}×"

        rates = [r.blast_rate if r else 0.0 for r in res]
        rows.append((f"blast, blocking sends: datagrams/s (best of {args.rounds})", [_fmt_rate(v) for v in rates],
                     ratio(rates)))
        medians = [r.blast_median if r else 0.0 for r in res]
        rows.append(("blast: median of the rounds", [_fmt_rate(v) for v in medians], ratio(medians)))
        cpu = [r.blast_cpu_us if r else 0.0 for r in res]
        rows.append(("collector CPU per datagram, µs (best round)", [f"{v:.1f}" for v in cpu], ratio(cpu, False)))
        others = [r.blast_others if r else 0.0 for r in res]
        rows.append(("other processes' CPU in the best round, % of the machine", [f"{v:.0f}" for v in others], ""))
        after = [r.all_stored_after if r else 0.0 for r in res]
        rows.append(("all stored after, s (best round)", [f"{v:.2f}" for v in after], ""))
        for index, rate in enumerate(args.rates):
            cells = []
            for r in res:
                p = r.paced[index] if r and index < len(r.paced) else None
                cells.append(_loss(p) if p else "–")
            rows.append((f"paced {rate:,}/s × {args.seconds:g} s: lost [other processes' CPU]", cells, ""))
        cells = []
        for r in res:
            if r is None:
                cells.append("–")
                continue
            ok = r.stored_final == r.accepted_total and not r.errors
            cells.append(f"{'yes' if ok else 'NO'} ({r.stored_final:,} of {r.accepted_total:,})")
        rows.append(("stored = accepted by the kernel", cells, ""))
        for name, cells, extra in rows:
            print(f"| {mix} ({MIXES[mix]:,} distinct) | {name} | " + " | ".join(cells)
                  + (f" | {extra} |" if both else " |"))
    for r in results:
        for error in r.errors:
            print(f"error ({r.kind}, mix {r.mix}): {error}")
    if "mxsec" in kinds:
        mx = [r for r in results if r.kind == "mxsec"]
        worst = min(r.blast_rate for r in mx)
        no_loss = all(p["lost"] == 0 for r in mx for p in r.paced if p["rate"] <= 50_000)
        print(f"target >= 50,000 datagrams/s sustained (blast, every mix): {'PASS' if worst >= 50_000 else 'FAIL'} "
              f"(lowest {worst:,.0f}/s)")
        print(f"target none lost at 50,000/s paced (every mix): {'PASS' if no_loss else 'FAIL'}")
        if both:
            ratios = [by[("mxsec", m)].blast_rate / by[("sys4", m)].blast_rate for m in args.mixes
                      if by.get(("sys4", m)) and by[("sys4", m)].blast_rate]
            if ratios:
                print(f"target >= 2x sys4 (blast, every mix): {'PASS' if min(ratios) >= 2 else 'FAIL'} "
                      f"(lowest {min(ratios):.2f}x)")


def cpu_stat() -> tuple[int, int]:
    """(all CPU time, busy CPU time) in clock ticks since boot, over all CPUs."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    total = sum(values[:8])
    return total, total - values[3] - values[4]


def idle_share(seconds: float = 1.0) -> float:
    """Percent of CPU time idle over *seconds* (all CPUs)."""
    def sample() -> tuple[int, int]:
        values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        return values[3] + values[4], sum(values)
    idle0, total0 = sample()
    time.sleep(seconds)
    idle1, total1 = sample()
    return 100.0 * (idle1 - idle0) / max(1, total1 - total0)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blast", type=int, default=100_000, help="datagrams per blast (default 100,000)")
    parser.add_argument("--rounds", type=int, default=3, help="blasts per mix and collector (best and median shown)")
    parser.add_argument("--blast-limit", type=float, default=120.0, help="seconds a blast may take at most")
    parser.add_argument("--rates", default="10000,25000,50000,75000", help="paced rates, datagrams/s")
    parser.add_argument("--seconds", type=float, default=3.0, help="seconds per paced rate (default 3)")
    parser.add_argument("--senders", type=int, default=8, help="sockets the paced sender sends from in turn (8)")
    parser.add_argument("--mixes", default="A,B,C", help="A (100 distinct), B (5,000), C (50,000)")
    parser.add_argument("--only", default="mxsec,sys4,bare", help="collectors to run (bare: the receive-only floor)")
    parser.add_argument("--peer", metavar="DIR", help="bin directory of a virtualenv with tlsrpt-reporter")
    parser.add_argument("--no-peer", action="store_true", help="skip sys4's tlsrpt-collectd")
    parser.add_argument("--qlen", type=int, help="run in a new network namespace with this max_dgram_qlen (root)")
    parser.add_argument("--json", metavar="FILE", help="write every figure to FILE")
    args = parser.parse_args()
    args.rates = [int(r) for r in args.rates.split(",") if r]
    args.mixes = [m.strip().upper() for m in args.mixes.split(",") if m.strip()]
    kinds = [k.strip() for k in args.only.split(",") if k.strip()]
    if args.no_peer:
        kinds = [k for k in kinds if k != "sys4"]
    kinds = [k for k in KINDS if k in kinds]
    unknown = [m for m in args.mixes if m not in MIXES] + [k for k in args.only.split(",") if k.strip() not in KINDS]
    if unknown:
        parser.error(f"unknown: {', '.join(unknown)}")
    peer_bin = (args.peer or ensure_peer()) if "sys4" in kinds else None

    if args.qlen is not None and os.environ.get(INNER_ENV) != "1":
        # the queue limit is per network namespace: set it in a new one and run there
        argv = [a for a in sys.argv[1:]]
        script = f'echo {int(args.qlen)} > /proc/sys/net/unix/max_dgram_qlen && exec "$@"'
        env = {**os.environ, INNER_ENV: "1"}
        if peer_bin:
            argv += ["--peer", peer_bin] if not args.peer else []
        return subprocess.run(["unshare", "--net", "--", "sh", "-c", script, "sh", sys.executable, __file__, *argv],
                              env=env, check=False).returncode

    qlen = int(Path("/proc/sys/net/unix/max_dgram_qlen").read_text())
    idle = idle_share()
    print(f"machine: {os.cpu_count()} CPUs, {idle:.0f} % idle over the last second, load average "
          f"{os.getloadavg()[0]:.2f}; net.unix.max_dgram_qlen = {qlen}"
          + ("  [WARNING: a busy machine makes the figures noisy]" if idle < 85 else ""))
    work = Path(tempfile.mkdtemp(prefix="mxsec-bench-tlsrpt-"))
    results: list[Result] = []
    began = time.monotonic()
    try:
        for mix in args.mixes:
            datagrams = make_mix(MIXES[mix])
            size = sum(len(d) for d in datagrams) / len(datagrams)
            print(f"mix {mix}: {len(datagrams):,} distinct datagrams, {size:.0f} bytes on average")
            for result in measure(kinds, mix, datagrams, args, work, peer_bin):
                kind = result.kind
                results.append(result)
                lost = ", ".join(f"{p['rate']:,}/s: {p['lost']:,} lost of {p['attempted']:,}" for p in result.paced)
                rounds = " / ".join(f"{r['rate']:,.0f} ({r['others_cpu_percent']:.0f} %)" for r in result.rounds)
                print(f"  {kind}: blast rounds {rounds}/s; best {result.blast_rate:,.0f}/s ({result.blast_sent:,} in "
                      f"{result.blast_seconds:.2f} s, {result.blast_cpu_us:.1f} µs CPU each, all stored after "
                      f"{result.all_stored_after:.2f} s); paced {lost}; stored {result.stored_final:,} of "
                      f"{result.accepted_total:,} accepted; exit {result.exit_status}"
                      + (f"; ERRORS: {result.errors}" if result.errors else ""), flush=True)
        report(results, args, qlen)
        print(f"whole run {time.monotonic() - began:.0f} s; {idle_share():.0f} % idle just after")
        if args.json:
            Path(args.json).parent.mkdir(parents=True, exist_ok=True)
            Path(args.json).write_text(json.dumps({"qlen": qlen, "blast": args.blast, "rounds": args.rounds,
                                                   "rates": args.rates,
                                                   "seconds": args.seconds,
                                                   "results": [asdict(r) for r in results]}, indent=1))
        exact = all(r.stored_final == r.accepted_total and not r.errors for r in results if r.kind == "mxsec")
        return 0 if exact else 1
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
