"""Sample TLSRPT reports that look like a month of real ones, for trying the report tools and for the docs.

    python -m mxsec.testing.sample_reports OUTDIR [--days 30] [--end YYYY-MM-DD] [--seed 8460]

Writes one gzip report per reporter, policy domain and day, named as RFC 8460 §5.1 says, for two policy
domains (``example.com`` with MTA-STS, ``example.net`` with DANE) and three reporters. The month has two
incidents a domain owner should spot: ``mx2.example.com``'s certificate expires for three days
(``certificate-expired`` from every reporter), and one sending network strips STARTTLS for a week
(``starttls-not-supported`` from a single IP). Names and addresses are documentation ones (RFC 2606, 5737).

``write_samples(..., domain=..., mx=(first, second))`` puts the MTA-STS half under another domain and MX pair
(the lab's advisor test uses a ``.test`` domain); the defaults write exactly the files above.
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
STS_DOMAIN = "example.com"
STS_MX = ("mx1.example.com", "mx2.example.com")


def sts_policy(mx: tuple[str, str] = STS_MX) -> list[str]:
    """The policy-string the sample reports name for the MTA-STS domain."""
    return ["version: STSv1", "mode: enforce", *(f"mx: {host}" for host in mx), "max_age: 604800"]


STS_POLICY = sts_policy()
TLSA = ["3 1 1 " + "5f" * 32]


def _day_report(day: date, reporter: tuple[str, str, int], domain: str, incident: dict[tuple[str, str, str], int],
                rng: random.Random, index: int, *, sts_domain: str = STS_DOMAIN,
                sts_mx: tuple[str, str] = STS_MX) -> dict:
    organization, contact, volume = reporter
    sessions = int(volume * rng.uniform(0.7, 1.3))
    details: list[dict[str, str | int]] = []
    failed = 0
    for (result_type, host, ip), count in incident.items():
        if count:
            details.append({
                "result-type": result_type, "sending-mta-ip": ip, "receiving-mx-hostname": host,
                "receiving-ip": "198.51.100.25" if host == sts_mx[1] else "198.51.100.24",
                "failed-session-count": count,
            })
            failed += count
    if domain == sts_domain:
        policy = {"policy-type": "sts", "policy-string": sts_policy(sts_mx), "policy-domain": domain,
                  "mx-host": list(sts_mx)}
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


def write_samples(directory: Path, *, days: int = 30, end: date | None = None, seed: int = 8460,
                  domain: str = STS_DOMAIN, mx: tuple[str, str] = STS_MX) -> list[Path]:
    """Write the sample month into ``directory``; ``domain`` and ``mx`` (first, second MX host: the second's
    certificate expires) name the MTA-STS domain. Returns the files written."""
    if len(mx) != 2:
        raise ValueError("mx: two MX host names (the second is the one whose certificate expires)")
    mx = (mx[0], mx[1])
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
            for policy_domain in (domain, "example.net"):
                incident: dict[tuple[str, str, str], int] = {}
                if policy_domain == domain and expired:
                    incident[("certificate-expired", mx[1], f"192.0.2.{10 + number}")] = int(
                        reporter[2] * rng.uniform(0.3, 0.5))
                if policy_domain == domain and stripping and number == 0:
                    incident[("starttls-not-supported", mx[0], "203.0.113.66")] = rng.randint(20, 90)
                if rng.random() < 0.1:
                    incident[("validation-failure", mx[0] if policy_domain == domain else "mx.example.net",
                              f"192.0.2.{100 + number}")] = rng.randint(1, 3)
                doc = _day_report(day, reporter, policy_domain, incident, rng, offset, sts_domain=domain, sts_mx=mx)
                begin = int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp())
                submitter = reporter[1].split("@")[1]
                path = directory / f"{submitter}!{policy_domain}!{begin}!{begin + 86399}!{offset}.json.gz"
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
