"""Sample TLSRPT reports that look like a month of real ones, for trying the report tools and for the docs.

    python -m mxsec.testing.sample_reports OUTDIR [--days 30] [--end YYYY-MM-DD] [--seed 8460]

Writes one gzip report per reporter, policy domain and day, named as RFC 8460 §5.1 says, for two policy
domains (``example.com`` with MTA-STS, ``example.net`` with DANE) and three reporters. The month has two
incidents a domain owner should spot: ``mx2.example.com``'s certificate expires for three days
(``certificate-expired`` from every reporter), and one sending network strips STARTTLS for a week
(``starttls-not-supported`` from a single IP). Names and addresses are documentation ones (RFC 2606, 5737).
"""

from __future__ import annotations

import argparse
import gzip
import json
import random
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from mxsec.fsutil import make_dirs

REPORTERS = (
    ("Google Inc.", "smtp-tls-reporting@google.example", 4000),
    ("Microsoft Corporation", "tlsrpt-noreply@microsoft.example", 1500),
    ("Mail.example", "tlsrpt@mail.example", 300),
)
STS_POLICY = ["version: STSv1", "mode: enforce", "mx: mx1.example.com", "mx: mx2.example.com", "max_age: 604800"]
TLSA = ["3 1 1 " + "5f" * 32]


def _day_report(day: date, reporter: tuple[str, str, int], domain: str, incident: dict[tuple[str, str, str], int],
                rng: random.Random, index: int) -> dict:
    organization, contact, volume = reporter
    sessions = int(volume * rng.uniform(0.7, 1.3))
    details: list[dict[str, str | int]] = []
    failed = 0
    for (result_type, host, ip), count in incident.items():
        if count:
            details.append({
                "result-type": result_type, "sending-mta-ip": ip, "receiving-mx-hostname": host,
                "receiving-ip": "198.51.100.25" if host.startswith("mx2") else "198.51.100.24",
                "failed-session-count": count,
            })
            failed += count
    if domain == "example.com":
        policy = {"policy-type": "sts", "policy-string": STS_POLICY, "policy-domain": domain,
                  "mx-host": ["mx1.example.com", "mx2.example.com"]}
    else:
        policy = {"policy-type": "tlsa", "policy-string": TLSA, "policy-domain": domain,
                  "mx-host": ["mx.example.net"]}
    entry: dict = {"policy": policy, "summary": {"total-successful-session-count": max(sessions - failed, 0),
                                                 "total-failure-session-count": failed}}
    if details:
        entry["failure-details"] = details
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    return {
        "organization-name": organization,
        "date-range": {"start-datetime": start.strftime("%Y-%m-%dT%H:%M:%SZ"),
                       "end-datetime": (start + timedelta(seconds=86399)).strftime("%Y-%m-%dT%H:%M:%SZ")},
        "contact-info": contact,
        "report-id": f"{start:%Y-%m-%dT%H:%M:%SZ}_{domain}_{index}",
        "policies": [entry],
    }


def write_samples(directory: Path, *, days: int = 30, end: date | None = None, seed: int = 8460) -> list[Path]:
    rng = random.Random(seed)
    last = end or datetime.now(UTC).date() - timedelta(days=1)
    first = last - timedelta(days=days - 1)
    make_dirs(directory, 0o755)
    written: list[Path] = []
    for offset in range(days):
        day = first + timedelta(days=offset)
        expired = days // 2 <= offset < days // 2 + 3
        stripping = days // 4 <= offset < days // 4 + 7
        for number, reporter in enumerate(REPORTERS):
            for domain in ("example.com", "example.net"):
                incident: dict[tuple[str, str, str], int] = {}
                if domain == "example.com" and expired:
                    incident[("certificate-expired", "mx2.example.com", f"192.0.2.{10 + number}")] = int(
                        reporter[2] * rng.uniform(0.3, 0.5))
                if domain == "example.com" and stripping and number == 0:
                    incident[("starttls-not-supported", "mx1.example.com", "203.0.113.66")] = rng.randint(20, 90)
                if rng.random() < 0.1:
                    incident[("validation-failure", "mx1.example.com" if domain == "example.com" else "mx.example.net",
                              f"192.0.2.{100 + number}")] = rng.randint(1, 3)
                doc = _day_report(day, reporter, domain, incident, rng, offset)
                begin = int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp())
                submitter = reporter[1].split("@")[1]
                path = directory / f"{submitter}!{domain}!{begin}!{begin + 86399}!{offset}.json.gz"
                path.write_bytes(gzip.compress(json.dumps(doc, indent=1).encode(), mtime=0))
                written.append(path)
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("outdir", type=Path)
    parser.add_argument("--days", type=int, default=30, choices=range(1, 367), metavar="1..366")
    parser.add_argument("--end", type=date.fromisoformat, help="last day (default: yesterday, UTC)")
    parser.add_argument("--seed", type=int, default=8460)
    args = parser.parse_args()
    paths = write_samples(args.outdir, days=args.days, end=args.end, seed=args.seed)
    print(f"{len(paths)} reports written to {args.outdir}")


if __name__ == "__main__":
    main()
