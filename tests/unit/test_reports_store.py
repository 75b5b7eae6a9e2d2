"""The report database (mxsec.store.reportdb) on SQLite: schema, de-duplication, transactions, summaries.

The same assertions run against a real PostgreSQL server in tests/integration/test_reports_store_pg.py.
"""

from __future__ import annotations

import sqlite3
from datetime import date

import pytest

from mxsec.errors import ConfigError
from mxsec.store.base import StoreError
from mxsec.store.reportdb import NO_DOMAIN, SCHEMA_VERSION, Filters, Incoming, ReportDB
from mxsec.tlsrpt.report import parse_report
from tests import tlsrpt_corpus as tc


def incoming(case: tc.Case, source: str = "file") -> Incoming:
    return Incoming(parse_report(case.json(), fallback_domain=case.fallback_domain), source, case.name)


def corpus_items() -> list[Incoming]:
    return [incoming(case) for case in tc.corpus()]


@pytest.fixture
def db(tmp_path):
    with ReportDB(f"sqlite:///{tmp_path}/reports.sqlite3") as handle:
        yield handle


def expected_totals(cases: list[tc.Case]) -> tuple[int, int, int]:
    return len(cases), sum(c.successful for c in cases), sum(c.failed for c in cases)


# ------------------------------------------------------------------------------------------- shared checks
# (imported by the PostgreSQL tests)


def check_corpus_round_trip(db: ReportDB) -> None:
    cases = tc.corpus()
    assert len(cases) >= 20
    results = db.ingest(corpus_items())
    assert [r.outcome for r in results] == ["stored"] * len(cases)
    summary = db.summary()
    reports, ok, bad = expected_totals(cases)
    assert (summary["reports"], summary["successful_sessions"], summary["failed_sessions"]) == (reports, ok, bad)
    # Per organization and per domain add up to the totals.
    assert sum(v["reports"] for v in summary["by_organization"].values()) == reports
    assert sum(v["failed_sessions"] for v in summary["by_organization"].values()) == bad
    assert sum(v["successful_sessions"] for v in summary["by_policy_domain"].values()) == ok
    # Every stored report gives back its raw JSON, byte for byte.
    for result, case in zip(results, cases):
        detail = db.report(result.id)
        assert detail is not None
        assert detail.raw_json == case.json()
        assert {w["code"] for w in detail.row.warnings} == set(case.warnings)
        assert tuple(p["policy_domain"] for p in detail.policies) == case.policy_domains


def check_duplicates_stored_once(db: ReportDB) -> None:
    first = db.ingest(corpus_items())
    again = db.ingest(corpus_items())
    assert {r.outcome for r in again} == {"duplicate"}
    assert [r.id for r in again] == [r.id for r in first]
    assert db.summary()["reports"] == len(first)


def check_conflict_keeps_first(db: ReportDB) -> None:
    case = tc.case("google-heartbeat")
    db.ingest([incoming(case)])
    changed = dict(case.doc)
    changed["policies"] = [tc.entry(tc.sts_policy(), ok=1, failed=0)]
    (result,) = db.ingest([Incoming(parse_report(tc.as_json(changed)), "file")])
    assert result.outcome == "conflict"
    assert db.summary()["successful_sessions"] == case.successful


def check_batch_is_atomic(db: ReportDB) -> None:
    items = corpus_items()

    class Boom(Exception):
        pass

    original = db._insert
    calls = {"n": 0}

    def failing(item, received):
        calls["n"] += 1
        if calls["n"] == 5:
            raise Boom()
        return original(item, received)

    db._insert = failing  # type: ignore[method-assign]
    with pytest.raises(Boom):
        db.ingest(items)
    db._insert = original  # type: ignore[method-assign]
    assert db.summary()["reports"] == 0
    assert [r.outcome for r in db.ingest(items)] == ["stored"] * len(items)


def check_filters(db: ReportDB) -> None:
    cases = tc.corpus()
    db.ingest(corpus_items())
    day = date(2024, 2, 17)
    only_day = db.summary(Filters(since=day, until=day))
    on_day = [c for c in cases if c.doc.get("date-range", {}).get("start-datetime", "").startswith("2024-02-17")]
    assert only_day["reports"] == len(on_day)
    assert db.summary(Filters(since=date(2030, 1, 1)))["reports"] == 0
    example = db.summary(Filters(domain="example.com"))
    assert set(example["by_policy_domain"]) == {"example.com"}
    assert example["successful_sessions"] == db.summary()["by_policy_domain"]["example.com"]["successful_sessions"]
    google = db.summary(Filters(organization="Google Inc."))
    assert set(google["by_organization"]) == {"Google Inc."}
    rows = db.reports(Filters(domain="company-y.example"))
    assert rows and all("company-y.example" in r.policy_domains for r in rows)


# ------------------------------------------------------------------------------------------- tests


def test_rpt_corpus_round_trip_exact_figures(db):
    check_corpus_round_trip(db)


def test_rpt_duplicates_stored_once(db):
    check_duplicates_stored_once(db)


def test_rpt_conflicting_copy_keeps_the_first(db):
    check_conflict_keeps_first(db)


def test_rpt_ingest_batch_is_all_or_nothing(db):
    check_batch_is_atomic(db)


def test_filters_by_day_domain_and_organization(db):
    check_filters(db)


def test_result_types_sum_failure_details(db):
    db.ingest(corpus_items())
    by_type = db.summary()["by_result_type"]
    expected: dict[str, int] = {}
    for case in tc.corpus():
        for policy in parse_report(case.json(), fallback_domain=case.fallback_domain).policies:
            for detail in policy.failure_details:
                expected[detail.result_type] = expected.get(detail.result_type, 0) + detail.failed_session_count
    assert by_type == expected
    # Most failures first.
    assert list(by_type.values()) == sorted(by_type.values(), reverse=True)


def test_ec_36_report_without_policy_domain_is_counted_under_none(db):
    doc = tc.report(report_id="no-domain", policies=[tc.entry(tc.no_policy(None), ok=7)])
    (result,) = db.ingest([Incoming(parse_report(tc.as_json(doc)), "file")])
    assert result.outcome == "stored"
    summary = db.summary()
    assert summary["by_policy_domain"][NO_DOMAIN] == {"reports": 1, "successful_sessions": 7, "failed_sessions": 0}
    assert db.summary(Filters(domain=NO_DOMAIN))["successful_sessions"] == 7


def test_report_without_policies_still_counts_as_a_report(db):
    doc = tc.report(report_id="empty", policies=[])
    db.ingest([Incoming(parse_report(tc.as_json(doc)), "file")])
    assert db.summary()["reports"] == 1
    assert db.summary(Filters(domain="example.com"))["reports"] == 0


def test_by_day_and_failing_sending_ips(db):
    db.ingest(corpus_items())
    days = db.by_day()
    assert date(2024, 2, 17) in days and date(2016, 4, 1) in days
    ips = db.failing_sending_ips(limit=3)
    assert len(ips) <= 3 and all(ip for ip, _type, _count in ips)
    assert [c for _ip, _t, c in ips] == sorted((c for _ip, _t, c in ips), reverse=True)


def test_stored_warnings_include_transport_ones(db):
    from mxsec.tlsrpt.report import ReportWarning

    item = incoming(tc.case("google-heartbeat"))
    warning = ReportWarning("not-multipart-report", "message is text/plain")
    (result,) = db.ingest([Incoming(item.report, "message", "<id@x>", dkim="none", transport_warnings=(warning,))])
    detail = db.report(result.id)
    assert detail.row.warnings[0] == {"code": "not-multipart-report", "message": "message is text/plain"}
    assert detail.row.dkim == "none" and detail.row.source == "message" and detail.row.source_name == "<id@x>"


def test_schema_is_versioned_and_reopening_keeps_data(tmp_path):
    url = f"sqlite:///{tmp_path}/r.sqlite3"
    with ReportDB(url) as first:
        first.ingest(corpus_items()[:3])
        assert first.schema_version == SCHEMA_VERSION
    with ReportDB(url) as second:
        assert second.summary()["reports"] == 3


def test_newer_schema_is_refused_with_one_line(tmp_path):
    path = tmp_path / "r.sqlite3"
    ReportDB(f"sqlite:///{path}").close()
    conn = sqlite3.connect(path)
    conn.execute("UPDATE tlsrpt_schema_version SET version = 99")
    conn.commit()
    conn.close()
    with pytest.raises(ConfigError, match="newer mxsec") as info:
        ReportDB(f"sqlite:///{path}")
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("url", ["", "mysql://x/y", "sqlite://relative", "sqlite:///", "sqlite:///dir/"])
def test_bad_urls_are_config_errors(url):
    with pytest.raises(ConfigError):
        ReportDB(url)


def test_unwritable_location_is_a_store_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(StoreError):
        ReportDB(f"sqlite:///{blocker}/sub/r.sqlite3")


def test_retention_deletes_old_reports_with_their_rows(db):
    db.ingest(corpus_items())
    gone = db.delete_before(date(2020, 1, 1))
    assert gone == 2  # the two RFC-example reports of 2016
    assert db.summary()["reports"] == len(tc.corpus()) - 2
    (orphans,) = db._query("SELECT COUNT(*) FROM tlsrpt_failure WHERE report NOT IN (SELECT id FROM tlsrpt_report)")
    assert orphans[0] == 0
