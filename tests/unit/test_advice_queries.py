"""The advisor's read-only report queries (ReportDB.totals_by_organization, failures_by_mx_and_organization,
policies_by_day) through mxsec.check.advice_gather.report_figures, on SQLite (PostgreSQL: the same check in
tests/integration/test_advice_queries_pg.py).

Reports are written here: one domain with both an ``sts`` and a ``tlsa`` policy in the same report (only ``sts``
counts), another domain, a report outside the window, and a conflicting unauthenticated copy (not counted).
"""

from __future__ import annotations

import datetime as dt
import json

from mxsec.check.advice import DayPolicy, MxFailure, SessionCounts
from mxsec.check.advice_gather import report_figures, window
from mxsec.storage.reportdb import Incoming, ReportDB
from mxsec.tlsrpt.parse import parse_report

DOMAIN = "example.com"
STS = ["version: STSv1", "mode: testing", "mx: mx1.example.com", "mx: mx2.example.com", "max_age: 86400"]


def report(org: str, day: dt.date, rid: str, policies: list[dict]) -> bytes:
    start = f"{day.isoformat()}T00:00:00Z"
    return json.dumps({
        "organization-name": org, "contact-info": "tlsrpt@reporter.example", "report-id": rid,
        "date-range": {"start-datetime": start, "end-datetime": f"{day.isoformat()}T23:59:59Z"},
        "policies": policies,
    }).encode()


def policy(ptype: str, domain: str, ok: int, bad: int, details: list[tuple[str, str, int]] = (),
           strings: list[str] | None = None) -> dict:
    entry: dict = {"policy": {"policy-type": ptype, "policy-domain": domain,
                              "policy-string": strings or (STS if ptype == "sts" else ["3 1 1 " + "ab" * 32])},
                   "summary": {"total-successful-session-count": ok, "total-failure-session-count": bad}}
    if details:
        entry["failure-details"] = [{"result-type": rt, "receiving-mx-hostname": host, "failed-session-count": n}
                                    for rt, host, n in details]
    return entry


def check_report_figures(db: ReportDB) -> None:
    since, until = window(dt.date(2026, 12, 3), 14)
    assert (since, until) == (dt.date(2026, 11, 19), dt.date(2026, 12, 2))
    d1, d2 = dt.date(2026, 11, 20), dt.date(2026, 11, 21)
    items = [
        report("Google Inc.", d1, "g1", [
            policy("sts", DOMAIN, 1000, 30, [("certificate-expired", "MX2.example.com.", 30)]),
            policy("tlsa", DOMAIN, 500, 99, [("validation-failure", "mx1.example.com", 99)]),
        ]),
        report("Google Inc.", d2, "g2", [
            policy("sts", DOMAIN, 900, 20, [("certificate-expired", "mx2.example.com", 15),
                                            ("sts-policy-fetch-error", "", 5)],
                   strings=[s.replace("testing", "enforce") for s in STS]),
        ]),
        report("Mail.example", d2, "m1", [policy("sts", DOMAIN, 100, 0), policy("sts", "example.org", 7, 7)]),
        report("Mail.example", dt.date(2026, 11, 18), "m0", [policy("sts", DOMAIN, 5, 5, [
            ("certificate-expired", "mx2.example.com", 5)])]),  # the day before the window
    ]
    db.ingest([Incoming(parse_report(raw), "message", f"<{i}@x>", dkim="pass") for i, raw in enumerate(items)])
    forged = report("Google Inc.", d1, "g1", [policy("sts", DOMAIN, 1, 999_999, [
        ("certificate-expired", "mx1.example.com", 999_999)])])
    db.ingest([Incoming(parse_report(forged), "https", "192.0.2.66")])  # a conflicting copy: stored, not counted

    figures = report_figures(db, DOMAIN, since, until)
    assert (figures.since, figures.until, figures.reports) == (since, until, 3)
    assert dict(figures.by_organization) == {"Google Inc.": SessionCounts(1900, 50),
                                             "Mail.example": SessionCounts(100, 0)}
    assert list(figures.failures) == [
        MxFailure("mx2.example.com", "certificate-expired", "Google Inc.", 45, d1, d2),
        MxFailure("", "sts-policy-fetch-error", "Google Inc.", 5, d2, d2),
    ]
    enforce = tuple(s.replace("testing", "enforce") for s in STS)
    assert sorted(figures.days, key=lambda d: (d.day, d.policy_string)) == [
        DayPolicy(d1, "sts", tuple(STS), SessionCounts(1000, 30)),
        DayPolicy(d2, "sts", enforce, SessionCounts(900, 20)),
        DayPolicy(d2, "sts", tuple(STS), SessionCounts(100, 0)),
    ]


def test_report_figures_on_sqlite(tmp_path) -> None:
    with ReportDB(f"sqlite:///{tmp_path / 'r.sqlite3'}") as db:
        check_report_figures(db)
