"""TLSRPT sending side: building a day's reports from the counted sessions.

    .venv/bin/python bench/tlsrpt_report.py [--sessions 1000000] [--domains 10000] [--distinct-failures 200000]

1. Counts ``--sessions`` sessions of yesterday into a fresh SQLite sender database, spread over ``--domains``
   report domains (Zipf-like: a few domains get most of the mail), each under an STS, TLSA or no-policy-found
   policy; one in ten fails, with failure details drawn from ``--distinct-failures`` combinations (sending IP,
   MX, result type). The counting goes through :class:`mxsec.tlsrpt.session.Tally` and ``SenderDB.add`` in
   batches of 100,000 sessions (as a collector's flushes would), and its time is printed too.
2. Times ``mxsec tlsrpt report --day YESTERDAY`` as a user runs it (a fresh process): one report per domain,
   built, gzipped and stored for ``send``; then again with ``--out DIR`` (each report also written as a file:
   creating 10,000 files is the slow part on some file systems). Checks that the reports' session totals are
   exactly the counted ones, and prints the peak memory.

Bounded: fixed counts, each step run once.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from mxsec.storage.senderdb import SenderDB
from mxsec.tlsrpt.session import Failure, Policy, PolicyOutcome, PolicyType, Session, Tally

MXSEC = str(Path(sys.executable).with_name("mxsec"))
RESULTS = ("certificate-expired", "certificate-host-mismatch", "starttls-not-supported", "certificate-not-trusted",
           "validation-failure")


def policies_for(domain: str, n: int) -> Policy:
    kind = n % 3
    if kind == 0:
        return Policy(PolicyType.STS, domain, ("version: STSv1", "mode: enforce", f"mx: mx.{domain}", "max_age: 86400"),
                      (f"mx.{domain}",))
    if kind == 1:
        return Policy(PolicyType.TLSA, f"mx.{domain}", ("3 1 1 " + f"{n:064X}",))
    return Policy(PolicyType.NO_POLICY_FOUND, domain)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sessions", type=int, default=1_000_000)
    ap.add_argument("--domains", type=int, default=10_000)
    ap.add_argument("--distinct-failures", type=int, default=200_000)
    args = ap.parse_args()
    rng = random.Random(8460)
    day = datetime.now(UTC).date() - timedelta(days=1)
    domains = [f"d{i}.example" for i in range(args.domains)]
    policies = [policies_for(d, i) for i, d in enumerate(domains)]
    # Zipf-like weights, but every domain gets at least one session
    weights = [1.0 / (i + 1) ** 0.8 for i in range(args.domains)]
    with tempfile.TemporaryDirectory(prefix="mxsec-bench-") as tmp:
        url = f"sqlite:///{tmp}/tlsrpt.sqlite3"
        db = SenderDB(url)
        expected_ok = expected_bad = 0
        started = time.perf_counter()
        remaining = args.sessions
        first = True
        while remaining > 0:
            batch = min(100_000, remaining)
            remaining -= batch
            tally = Tally()
            picks = list(range(args.domains)) if first else []
            first = False
            picks += rng.choices(range(args.domains), weights, k=batch - len(picks))
            for index in picks:
                domain, policy = domains[index], policies[index]
                if rng.random() < 0.1:
                    combo = rng.randrange(args.distinct_failures)
                    failure = Failure(RESULTS[combo % len(RESULTS)], f"192.0.{combo // 256 % 256}.{combo % 256}",
                                      f"mx.{domain}", None, "198.51.100.25", None, None)
                    outcome = PolicyOutcome(policy, True, (failure,))
                    expected_bad += 1
                else:
                    outcome = PolicyOutcome(policy, False)
                    expected_ok += 1
                tally.add(Session(domain, (outcome,)), day)
            db.add(tally)
        counting = time.perf_counter() - started
        db.close()
        print(f"counted {args.sessions:,} sessions over {args.domains:,} domains in {counting:.1f} s "
              f"({args.sessions / counting:,.0f} sessions/s through Tally + SenderDB.add)")

        if os.environ.get("MXSEC_BENCH_KEEP"):
            import shutil
            shutil.copy(f"{tmp}/tlsrpt.sqlite3", os.environ["MXSEC_BENCH_KEEP"])
        out = Path(tmp) / "out"
        base = [MXSEC, "tlsrpt", "report", "--db", url, "--day", day.isoformat(), "--organization-name",
                "Bench Mail", "--contact-info", "tlsrpt@bench.example"]
        for label, cmd in (("built and stored", base),
                           ("built, stored and written as files", [*base, "--out", str(out)])):
            started = time.perf_counter()
            result = subprocess.run(cmd, capture_output=True, text=True, check=False)
            elapsed = time.perf_counter() - started
            if result.returncode != 0:
                print(result.stderr, file=sys.stderr)
                return 1
            peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
            print(f"mxsec tlsrpt report: {args.domains:,} reports of {args.sessions:,} sessions {label} in "
                  f"{elapsed:.1f} s (peak RSS so far {peak:.0f} MiB; target: under 10 s)")
        files = sorted(out.iterdir())
        got_ok = got_bad = 0
        for path in files:
            doc = json.loads(gzip.decompress(path.read_bytes()))
            for entry in doc["policies"]:
                got_ok += entry["summary"]["total-successful-session-count"]
                got_bad += entry["summary"]["total-failure-session-count"]
        assert len(files) == args.domains, (len(files), args.domains)
        assert (got_ok, got_bad) == (expected_ok, expected_bad), ((got_ok, got_bad), (expected_ok, expected_bad))
        print(f"totals exact: {got_ok:,} successful, {got_bad:,} failed sessions in {len(files):,} files")
    return 0


if __name__ == "__main__":
    sys.exit(main())
