"""TLSRPT receiving side: ingest rate end to end, and parse rate beside parsedmarc's in the same run.

    .venv/bin/python bench/reports_ingest.py [--reports 10000] [--parsedmarc PYTHON | --no-peer] [--postgres]

1. Writes ``--reports`` report files (gzip, the RFC 8460 file names; one to three policies each, Google-,
   Microsoft- and RFC-style, a quarter with failure details) into a temporary directory.
2. Times ``mxsec reports ingest -q --db sqlite:///…`` over all of them, as a user runs it (a fresh command,
   which forks a second process for this many files; new database, every report parsed, stored with its
   policies, failure details and raw JSON), and checks
   the stored totals are exact (the files are synced to disk first, so the generator's own writes do not land
   in the timed run). Then times the same command again (all duplicates). The command runs as an
   installed one does: byte code cached (``PYTHONDONTWRITEBYTECODE`` is dropped for it and one small ingest
   into a scratch database comes first), so a fresh process pays for its imports but not for compiling them.
   With ``--postgres`` the same two runs go into a throw-away PostgreSQL server (``initdb`` in a temporary
   directory, listening on 127.0.0.1 only, default durability settings: fsync on, synchronous commit), which
   is stopped and removed at the end, also on an error or Ctrl-C.
3. A gzip bomb (1 GiB of JSON text, about 1 MB compressed) given to ``parse_report`` in a fresh process: the
   time to refuse it and the growth of peak memory (ru_maxrss) above the process's baseline.
4. Parse only, in-process, over the same gzip bytes: ``mxsec.tlsrpt.parse.parse_report``, and the peer
   parsedmarc's ``parse_report_file`` (what its CLI runs per file: detect, gunzip, parse) and its bare
   ``parse_smtp_tls_report_json`` (JSON in, no validation) in parsedmarc's own virtualenv
   (``bench/.parsedmarc-venv``, made with pip on first use; ``--parsedmarc PYTHON`` to use another).
   Prints reports/s and the ratios.
5. PASS/FAIL lines for the targets: parse >= 1.5x parsedmarc's ``parse_report_file``, ingest into SQLite
   >= 10,000 reports/s (new database, fresh process, imports included), exact stored totals.

Bounded: a fixed number of files, each step run once (parse steps take the best of three passes).
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MXSEC = str(Path(sys.executable).with_name("mxsec"))
BENCH = Path(__file__).resolve().parent
PEER_VENV = BENCH / ".parsedmarc-venv"
PEER_PACKAGE = "parsedmarc==11.1.0"
DAY = 1708128000  # 2024-02-17


def make_report(index: int, rng: random.Random) -> tuple[dict, int, int]:
    day = DAY - 86400 * (index % 30)
    start = time.strftime("%Y-%m-%dT00:00:00Z", time.gmtime(day))
    end = time.strftime("%Y-%m-%dT23:59:59Z", time.gmtime(day))
    domain = f"d{index % 50}.example"
    policies = []
    ok_total = bad_total = 0
    for number in range(rng.randint(1, 3)):
        ok = rng.randint(0, 5000)
        details = []
        if rng.random() < 0.25:
            for kind in rng.sample(["certificate-expired", "starttls-not-supported", "validation-failure",
                                    "sts-policy-fetch-error", "certificate-host-mismatch"], rng.randint(1, 3)):
                details.append({
                    "result-type": kind, "sending-mta-ip": f"192.0.2.{rng.randint(1, 254)}",
                    "receiving-mx-hostname": f"mx{number}.{domain}", "receiving-ip": "198.51.100.7",
                    "failed-session-count": rng.randint(1, 40),
                })
        bad = sum(d["failed-session-count"] for d in details)
        policy_type = ["sts", "tlsa", "no-policy-found"][number % 3]
        policies.append({
            "policy": {
                "policy-type": policy_type,
                "policy-string": ["version: STSv1", "mode: enforce", f"mx: *.{domain}", "max_age: 604800"]
                if policy_type == "sts" else [],
                "policy-domain": domain,
                "mx-host": [f"*.{domain}"],
            },
            "summary": {"total-successful-session-count": ok, "total-failure-session-count": bad},
            **({"failure-details": details} if details else {}),
        })
        ok_total += ok
        bad_total += bad
    doc = {
        "organization-name": ["Google Inc.", "Microsoft Corporation", "Reporter Example"][index % 3],
        "date-range": {"start-datetime": start, "end-datetime": end},
        "contact-info": "smtp-tls-reporting@reporter.example",
        "report-id": f"{start}_{domain}_{index}",
        "policies": policies,
    }
    return doc, ok_total, bad_total


def write_corpus(directory: Path, count: int) -> tuple[list[bytes], int, int]:
    rng = random.Random(8460)
    payloads: list[bytes] = []
    ok_sum = bad_sum = 0
    for index in range(count):
        doc, ok, bad = make_report(index, rng)
        raw = json.dumps(doc).encode()
        payloads.append(raw)
        ok_sum += ok
        bad_sum += bad
        name = f"reporter.example!{doc['policies'][0]['policy']['policy-domain']}!{DAY}!{DAY + 86399}!{index}.json.gz"
        (directory / name).write_bytes(gzip.compress(raw, 6, mtime=0))
    return payloads, ok_sum, bad_sum


#: The environment of the timed ``mxsec`` runs: as installed, with byte code written and reused.
INSTALLED_ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def run_ingest(files: list[str], db: str) -> float:
    began = time.perf_counter()
    # The argument list is given through xargs-like chunks only if it is too long for one exec.
    chunks = [files[i:i + 20000] for i in range(0, len(files), 20000)]
    for chunk in chunks:
        result = subprocess.run([MXSEC, "reports", "ingest", "-q", "--no-dkim", "--db", db, *chunk],
                                capture_output=True, text=True, timeout=1800, check=False, env=INSTALLED_ENV)
        if result.returncode != 0:
            raise SystemExit(f"ingest failed ({result.returncode}): {result.stderr[-2000:]}")
    return time.perf_counter() - began


def warm_up(files: list[str], work: Path) -> None:
    """One small ingest into a scratch database: byte code compiled and cached, as after an installation."""
    run_ingest(files[:5], f"sqlite:///{work / 'warm-up.sqlite3'}")


def postgres_ingest(files: list[str], count: int, ok_sum: int, bad_sum: int) -> dict:
    from mxsec.testing.servers import postgres_bindir, running_postgres

    if postgres_bindir() is None:
        raise SystemExit("--postgres: PostgreSQL is not installed (Debian package: postgresql)")

    def query(server, statement: str) -> list[tuple]:
        with server.admin(server.dbname) as conn:
            return conn.execute(statement).fetchall()

    with running_postgres("bench", durable=True) as server:
        first = run_ingest(files, server.url)
        ((stored, ok, bad),) = query(
            server, "SELECT COUNT(*), COALESCE(SUM(successful), 0), COALESCE(SUM(failed), 0) FROM tlsrpt_report")
        again = run_ingest(files, server.url)
        version = query(server, "SHOW server_version")[0][0]
    return {"first": first, "again": again, "exact": (stored, ok, bad) == (count, ok_sum, bad_sum),
            "stored": (int(stored), int(ok), int(bad)), "version": version}


def ensure_peer() -> str:
    python = PEER_VENV / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(PEER_VENV)], check=True, timeout=300)
        result = subprocess.run([str(PEER_VENV / "bin" / "pip"), "install", "-q", PEER_PACKAGE],
                                capture_output=True, text=True, timeout=900, check=False)
        if result.returncode != 0:
            shutil.rmtree(PEER_VENV, ignore_errors=True)
            raise SystemExit(f"pip install {PEER_PACKAGE} failed: {result.stderr.strip()[-500:]}")
    return str(python)


def parse_rate_mxsec(payloads: list[bytes]) -> float:
    from mxsec.tlsrpt.parse import parse_report

    best = float("inf")
    for _ in range(3):
        began = time.perf_counter()
        for raw in payloads:
            parse_report(raw)
        best = min(best, time.perf_counter() - began)
    return len(payloads) / best


PARSEDMARC_SCRIPT = r"""
import base64, gzip, json, sys, time
from parsedmarc import parse_report_file, parse_smtp_tls_report_json
payloads = [base64.b64decode(line) for line in open(sys.argv[1]).read().split() if line]
texts = [gzip.decompress(p).decode() for p in payloads]

def best_rate(call, items):
    failed, best = 0, float("inf")
    for _ in range(3):
        began = time.perf_counter()
        for item in items:
            try:
                call(item)
            except Exception:
                failed += 1
        best = min(best, time.perf_counter() - began)
    return len(items) / best, failed // 3

file_rate, file_failed = best_rate(lambda p: parse_report_file(p, offline=True), payloads)
json_rate, json_failed = best_rate(parse_smtp_tls_report_json, texts)
print(json.dumps({"file": file_rate, "json": json_rate, "failed": file_failed + json_failed}))
"""


def parse_rate_parsedmarc(python: str, payloads: list[bytes], directory: Path) -> dict | None:
    import base64

    lines = directory / "payloads.b64"
    lines.write_text("\n".join(base64.b64encode(p).decode() for p in payloads))
    script = directory / "pm.py"
    script.write_text(PARSEDMARC_SCRIPT)
    result = subprocess.run([python, str(script), str(lines)], capture_output=True, text=True, timeout=1800,
                            check=False)
    if result.returncode != 0:
        print(f"parsedmarc run failed: {result.stderr.strip()[-500:]}")
        return None
    return json.loads(result.stdout.strip().splitlines()[-1])


BOMB_SCRIPT = r"""
import json, resource, sys, time, zlib
from mxsec.tlsrpt.parse import parse_report
from mxsec.tlsrpt.report import ReportError
nominal = 1 << 30
packer = zlib.compressobj(9, zlib.DEFLATED, 31)  # gzip container
chunk = b" " * (1 << 20)
parts = [packer.compress(b'{"organization-name": "' )]
for _ in range(nominal // len(chunk)):
    parts.append(packer.compress(chunk))
parts.append(packer.flush())
bomb = b"".join(parts)
del parts
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
began = time.perf_counter()
try:
    parse_report(bomb)
    code = "accepted"
except ReportError as exc:
    code = exc.code
took = time.perf_counter() - began
grew = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base
print(json.dumps({"compressed": len(bomb), "code": code, "seconds": took, "rss_growth_kib": grew}))
"""


def gzip_bomb_check() -> dict:
    result = subprocess.run([sys.executable, "-c", BOMB_SCRIPT], capture_output=True, text=True, timeout=300,
                            check=False)
    if result.returncode != 0:
        raise SystemExit(f"gzip bomb run failed: {result.stderr.strip()[-500:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reports", type=int, default=10_000)
    parser.add_argument("--parsedmarc", metavar="PYTHON", help="a Python interpreter with parsedmarc installed")
    parser.add_argument("--no-peer", action="store_true", help="skip parsedmarc")
    parser.add_argument("--postgres", action="store_true",
                        help="also ingest into a throw-away PostgreSQL server on 127.0.0.1 (needs initdb)")
    args = parser.parse_args()
    # SIGTERM unwinds like Ctrl-C: the throw-away PostgreSQL server and the temporary files go too.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    work = Path(tempfile.mkdtemp(prefix="mxsec-bench-reports-"))
    try:
        corpus = work / "reports"
        corpus.mkdir()
        payloads, ok_sum, bad_sum = write_corpus(corpus, args.reports)
        os.sync()  # the generator's writes reach the disk now, not during the timed runs
        files = sorted(str(p) for p in corpus.iterdir())
        db_path = work / "reports.sqlite3"
        db = f"sqlite:///{db_path}"
        warm_up(files, work)
        first = run_ingest(files, db)
        conn = sqlite3.connect(db_path)
        (stored, ok, bad), = conn.execute("SELECT COUNT(*), SUM(successful), SUM(failed) FROM tlsrpt_report")
        (policies,), = conn.execute("SELECT COUNT(*) FROM tlsrpt_policy")
        (details,), = conn.execute("SELECT COUNT(*) FROM tlsrpt_failure")
        conn.close()
        exact = (stored, ok, bad) == (args.reports, ok_sum, bad_sum)
        again = run_ingest(files, db)
        size = db_path.stat().st_size
        print(f"reports: {args.reports:,} gzip files, {policies:,} policies, {details:,} failure details")
        ingest_rate = args.reports / first
        print(f"ingest into SQLite (new database, one command): {first:.2f} s = {ingest_rate:,.0f} reports/s")
        print(f"ingest again (all duplicates): {again:.2f} s = {args.reports / again:,.0f} reports/s")
        print(f"stored totals exact: {exact} ({stored:,} reports, {ok:,} successful, {bad:,} failed); "
              f"database {size / 1e6:.1f} MB")
        if args.postgres:
            pg = postgres_ingest(files, args.reports, ok_sum, bad_sum)
            exact = exact and pg["exact"]
            print(f"ingest into PostgreSQL {pg['version']} (new database, one command): {pg['first']:.2f} s = "
                  f"{args.reports / pg['first']:,.0f} reports/s")
            print(f"ingest into PostgreSQL again (all duplicates): {pg['again']:.2f} s = "
                  f"{args.reports / pg['again']:,.0f} reports/s")
            print(f"PostgreSQL stored totals exact: {pg['exact']} ({pg['stored'][0]:,} reports, "
                  f"{pg['stored'][1]:,} successful, {pg['stored'][2]:,} failed)")
        bomb = gzip_bomb_check()
        print(f"gzip bomb (1 GiB of JSON text in {bomb['compressed'] / 1e6:.1f} MB): refused as {bomb['code']!r} in "
              f"{bomb['seconds'] * 1000:.0f} ms, peak memory +{bomb['rss_growth_kib'] / 1024:.1f} MiB  [target < 1 s "
              f"and < 64 MB: {'PASS' if bomb['seconds'] < 1 and bomb['rss_growth_kib'] < 62500 else 'FAIL'}]")
        packed = [gzip.compress(p, 6, mtime=0) for p in payloads]
        mine = parse_rate_mxsec(packed)
        print(f"parse only (gzip bytes in), mxsec parse_report: {mine:,.0f} reports/s")
        if not args.no_peer:
            theirs = parse_rate_parsedmarc(args.parsedmarc or ensure_peer(), packed, work)
            if theirs:
                print(f"parse only (gzip bytes in), parsedmarc parse_report_file: {theirs['file']:,.0f} reports/s")
                print(f"parse only (JSON text in), parsedmarc parse_smtp_tls_report_json: {theirs['json']:,.0f} "
                      f"reports/s ({theirs['failed']} refused)")
                ratio = mine / theirs["file"]
                print(f"ratio mxsec / parsedmarc parse_report_file: {ratio:.2f}x")
                print(f"PASS/FAIL parse >= 1.5x parsedmarc parse_report_file: {'PASS' if ratio >= 1.5 else 'FAIL'} "
                      f"({ratio:.2f}x)")
        print(f"PASS/FAIL ingest into SQLite >= 10,000 reports/s: {'PASS' if ingest_rate >= 10_000 else 'FAIL'} "
              f"({ingest_rate:,.0f}/s)")
        print(f"PASS/FAIL stored totals exact: {'PASS' if exact else 'FAIL'}")
        return 0 if exact else 1
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
