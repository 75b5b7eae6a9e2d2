"""The report database (mxsec.storage.reportdb) on SQLite: schema, de-duplication, transactions, summaries.

The same assertions run against a real PostgreSQL server in tests/integration/test_reports_store_pg.py.
"""

from __future__ import annotations

import dataclasses
import sqlite3
from datetime import date

import pytest

from mxsec.errors import ConfigError
from mxsec.storage.base import StoreError
from mxsec.storage.reportdb import NO_DOMAIN, Filters, Incoming, ReportDB
from mxsec.tlsrpt.parse import parse_report
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
    """Report integrity: a different copy under the same (organization, report-id) is stored too, never
    dropped; with equal authentication the first one stays the counted one."""
    case = tc.case("google-heartbeat")
    (first,) = db.ingest([incoming(case)])
    changed = dict(case.doc)
    changed["policies"] = [tc.entry(tc.sts_policy(), ok=1, failed=0)]
    (result,) = db.ingest([Incoming(parse_report(tc.as_json(changed)), "file")])
    assert result.outcome == "conflict" and result.id != first.id
    assert result.others == (first.id,) and not result.counted and result.auth == "none"
    assert db.summary()["successful_sessions"] == case.successful
    assert db.summary()["reports"] == 1
    copies = db.copies(result.id)
    assert [(c.id, c.counted, c.copies) for c in copies] == [(first.id, True, 2), (result.id, False, 2)]
    assert db.report(result.id).row.successful == 1  # the other copy is kept whole
    count, groups = db.conflicts()
    assert count == 1 and [[c.id for c in group] for group in groups] == [[first.id, result.id]]


def forged_and_genuine(org: str = "Google Inc.", rid: str = "2024-02-17T00:00:00Z_example.com") -> tuple[bytes, bytes]:
    """A forged report claiming 0 failures, and the genuine one with 4,000 (same organization and report-id)."""
    forged = tc.report(organization=org, report_id=rid, policies=[tc.sts_entry(ok=10000, failed=0)])
    genuine = tc.report(organization=org, report_id=rid, policies=[tc.sts_entry(
        ok=6000, failed=4000, details=[tc.detail("certificate-expired", 4000, receiving_mx_hostname="mx1.example.com")],
    )])
    return tc.as_json(forged), tc.as_json(genuine)


def check_authenticated_copy_wins(db: ReportDB) -> None:
    """Report integrity: a forged unauthenticated copy first, the DKIM-signed genuine one later: the genuine
    one is counted, the forged one stays visible as a conflict."""
    forged, genuine = forged_and_genuine()
    (fake,) = db.ingest([Incoming(parse_report(forged), "https", "192.0.2.66")], now=1000)
    assert fake.outcome == "stored" and fake.counted
    (real,) = db.ingest([Incoming(parse_report(genuine), "message", "<m@google>", dkim="pass",
                                  dkim_domains=("google.com",))], now=2000)
    assert real.outcome == "conflict" and real.counted and real.auth == "dkim" and real.others == (fake.id,)
    summary = db.summary()
    assert (summary["reports"], summary["failed_sessions"]) == (1, 4000)
    assert summary["by_result_type"] == {"certificate-expired": 4000}
    assert db.by_mx() == {"mx1.example.com": {"certificate-expired": 4000}}
    rows = db.reports()
    assert [(r.id, r.auth, r.copies) for r in rows] == [(real.id, "dkim", 2)]
    # A third, unauthenticated copy later changes nothing in the figures.
    third = forged.replace(b"10000", b"10001")
    (late,) = db.ingest([Incoming(parse_report(third), "https", "192.0.2.67")], now=3000)
    assert late.outcome == "conflict" and not late.counted and set(late.others) == {fake.id, real.id}
    assert db.summary()["failed_sessions"] == 4000
    assert [c.id for c in db.copies(fake.id)] == [real.id, fake.id, late.id]
    # Token and mTLS copies count as authenticated too; between two authenticated copies the first stays.
    (token,) = db.ingest([Incoming(parse_report(third.replace(b"10001", b"10002")), "https", "192.0.2.68",
                                   auth="token", auth_name="sha256:abcd")], now=4000)
    assert not token.counted and db.summary()["failed_sessions"] == 4000
    assert db.report(token.id).row.auth_name == "sha256:abcd"


def check_duplicate_with_better_auth_vouches_for_the_copy(db: ReportDB) -> None:
    """Forged copy first, the genuine one POSTed without authentication (not counted: later), then the genuine
    one again DKIM-signed: a duplicate, which raises the stored copy's auth and makes it the counted one."""
    forged, genuine = forged_and_genuine(rid="dup-vouch")
    (fake,) = db.ingest([Incoming(parse_report(forged), "https", "192.0.2.66")], now=1000)
    (open_post,) = db.ingest([Incoming(parse_report(genuine), "https", "203.0.113.5")], now=2000)
    assert open_post.outcome == "conflict" and not open_post.counted
    assert db.summary()["failed_sessions"] == 0
    (again,) = db.ingest([Incoming(parse_report(genuine), "message", "<m@google>", dkim="pass")], now=3000)
    assert again.outcome == "duplicate" and again.id == open_post.id and again.counted and again.auth == "dkim"
    assert db.summary()["failed_sessions"] == 4000
    row = db.report(open_post.id).row
    assert row.auth == "dkim" and row.source == "https"  # where it came from first is kept
    assert row.warnings[-1]["code"] == "auth-dkim" and "<m@google>" in row.warnings[-1]["message"]


def check_retention_recounts(db: ReportDB) -> None:
    """A counted copy deleted by retention hands over to the remaining copy (of a later day)."""
    forged, genuine = forged_and_genuine(rid="retention")
    early = forged.replace(b"2024-02-17", b"2024-01-05")  # a copy claiming another day
    (old,) = db.ingest([Incoming(parse_report(early), "message", "<a>", dkim="pass")], now=1000)
    (new,) = db.ingest([Incoming(parse_report(genuine), "https", "192.0.2.1")], now=2000)
    assert old.counted and not new.counted
    assert db.delete_before(date(2024, 2, 1)) == 1
    assert [(c.id, c.counted) for c in db.copies(new.id)] == [(new.id, True)]
    assert db.summary()["failed_sessions"] == 4000 and db.conflicts() == (0, [])


def check_conflicts_follow_filters(db: ReportDB) -> None:
    forged, genuine = forged_and_genuine(rid="filters")
    db.ingest([Incoming(parse_report(forged), "https", "x")])
    db.ingest([Incoming(parse_report(genuine), "https", "y")])
    assert db.conflicts()[0] == 1
    assert db.conflicts(Filters(organization="Google Inc."))[0] == 1
    assert db.conflicts(Filters(organization="Other"))[0] == 0
    assert db.conflicts(Filters(domain="example.com"))[0] == 1
    assert db.conflicts(Filters(domain="other.example"))[0] == 0
    assert db.conflicts(Filters(since=date(2030, 1, 1)))[0] == 0
    assert db.conflicts(Filters(since=date(2024, 2, 17), until=date(2024, 2, 17)))[0] == 1
    assert db.conflicts(limit=0) == (1, [])


V1_REPORT_COLUMNS = (
    "organization_name, report_id, contact_info, submitter, start_ts, end_ts, successful, failed, source, "
    "source_name, source_format, dkim, dkim_domains, warnings, raw_sha256, raw_json, received_ts"
)


def write_v1_database(url: str) -> None:
    """A database as mxsec wrote it at schema version 1 (unique (organization, report-id)), with policies and
    failure details; one report DKIM-signed."""
    import hashlib

    class V1(ReportDB):
        SCHEMA = dataclasses.replace(ReportDB.SCHEMA, version=1)

    with V1(url) as old:
        assert old.schema_version == 1
        with old._transaction():
            for number, case in enumerate(tc.corpus()[:4]):
                report = parse_report(case.json(), fallback_domain=case.fallback_domain)
                raw = report.raw_json
                (pk,) = old._execute(
                    f"INSERT INTO tlsrpt_report ({V1_REPORT_COLUMNS}) VALUES ({', '.join('?' * 17)}) RETURNING id",
                    (report.organization_name, report.report_id, report.contact_info, report.submitter,
                     int(report.start.timestamp()), int(report.end.timestamp()), report.successful, report.failed,
                     "message", f"<{number}@x>", report.source_format, "pass" if number == 0 else None, "[]", "[]",
                     hashlib.sha256(raw).hexdigest(), raw, 1000 + number),
                ).fetchone()
                for position, policy in enumerate(report.policies):
                    (ppk,) = old._execute(
                        "INSERT INTO tlsrpt_policy (report, position, policy_type, policy_domain, policy_string, "
                        "mx_host, successful, failed) VALUES (?, ?, ?, ?, '[]', '[]', ?, ?) RETURNING id",
                        (pk, position, policy.policy_type, policy.policy_domain, policy.successful, policy.failed),
                    ).fetchone()
                    for detail in policy.failure_details:
                        old._execute(
                            "INSERT INTO tlsrpt_failure (policy, report, result_type, failed_session_count) "
                            "VALUES (?, ?, ?, ?)", (ppk, pk, detail.result_type, detail.failed_session_count))


def check_v1_database_upgrades_in_place(url: str) -> None:
    """Report integrity, schema migration 1 -> 2: rows, ids, policies and failure details kept; existing rows
    counted; a DKIM pass becomes auth dkim; conflicting copies can be stored afterwards."""
    write_v1_database(url)
    cases = tc.corpus()[:4]
    with ReportDB(url) as db:
        assert db.schema_version == ReportDB.SCHEMA.version == 2
        summary = db.summary()
        assert (summary["reports"], summary["successful_sessions"], summary["failed_sessions"]) == \
            expected_totals(cases)
        by_type = sum(summary["by_result_type"].values())
        assert by_type == sum(d.failed_session_count for c in cases for p in parse_report(
            c.json(), fallback_domain=c.fallback_domain).policies for d in p.failure_details)
        rows = sorted(db.reports(limit=10), key=lambda r: r.id)
        assert [r.auth for r in rows] == ["dkim", "none", "none", "none"]
        assert all(r.counted and r.copies == 1 for r in rows)
        changed = dict(cases[1].doc)
        changed["policies"] = [tc.entry(tc.sts_policy(), ok=1, failed=0)]
        (result,) = db.ingest([Incoming(parse_report(tc.as_json(changed)), "https", "x")])
        assert result.outcome == "conflict" and not result.counted
        assert db.summary()["reports"] == len(cases)


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


def mixed_batch() -> list[Incoming]:
    """New reports, in-batch duplicates, conflicting copies (forged then DKIM-signed), an identical copy arriving
    authenticated (auth raised), an unauthenticated duplicate of a conflict, and a report whose copies already
    differ: every path of ingest, several times in one batch."""
    forged, genuine = forged_and_genuine(rid="batch-mix")
    other = tc.as_json(tc.report(organization="Microsoft Corporation", report_id="m-1",
                                 policies=[tc.sts_entry(ok=5, failed=0)]))
    cases = tc.corpus()[:6]
    items = [incoming(case) for case in cases]
    items += [
        Incoming(parse_report(forged), "https", "192.0.2.66"),
        incoming(cases[0]),  # duplicate of an earlier row of this batch
        Incoming(parse_report(other), "https", "192.0.2.7"),
        Incoming(parse_report(genuine), "message", "<m@google>", dkim="pass"),  # conflict, authenticated: counted
        Incoming(parse_report(forged), "https", "192.0.2.67"),  # duplicate of the uncounted forged copy
        Incoming(parse_report(other), "message", "<m@microsoft>", dkim="pass"),  # same JSON, now authenticated
        incoming(cases[1], "stdin"),
        Incoming(parse_report(genuine), "https", "192.0.2.68", auth="token", auth_name="sha256:ab"),
    ]
    return items


def check_batch_is_the_same_as_one_by_one(batch_db: ReportDB, single_db: ReportDB) -> None:
    """ingest() writes a batch the quick way where it can (stored copies looked up for the whole batch, new rows
    written together): outcomes, ids, auth, counted copies and stored rows must be those of the reports
    ingested one at a time the general way (every statement on its own, as before batches were written together),
    also when the same batch comes a second time."""
    single_db._ingest_batch = lambda items, received: [  # type: ignore[method-assign]
        single_db._insert(item, received) for item in items]
    for _round in range(2):
        items = mixed_batch()
        together = batch_db.ingest(items, now=1000)
        alone = [single_db.ingest([item], now=1000)[0] for item in items]
        assert _by_rank(together) == _by_rank(alone)
    assert {r.outcome for r in together} == {"duplicate"}  # the second round
    assert batch_db.summary() == single_db.summary()
    rows = [batch_db.reports(limit=1000), single_db.reports(limit=1000)]
    assert [[(r.organization_name, r.report_id, r.auth, r.counted, r.copies, r.warnings) for r in side]
            for side in rows] == [[(r.organization_name, r.report_id, r.auth, r.counted, r.copies, r.warnings)
                                   for r in rows[1]]] * 2
    assert [batch_db.report(r.id).policies for r in rows[0]] == [single_db.report(r.id).policies for r in rows[1]]
    assert batch_db.conflicts()[0] == single_db.conflicts()[0] == 1


def _by_rank(results: list) -> list:
    """*results* with each row id replaced by its rank among the ids they name. SQLite gives the same ids either
    way; PostgreSQL's sequence may leave gaps (ids handed out to a batch and not used), never a different order."""
    from dataclasses import replace

    ids = sorted({pk for r in results for pk in (r.id, r.counted_id, *r.others) if pk is not None})
    rank = {pk: n for n, pk in enumerate(ids)}
    return [replace(r, id=rank[r.id], counted_id=rank.get(r.counted_id), others=tuple(rank[o] for o in r.others))
            for r in results]


def check_batch_outcomes_cover_every_path(db: ReportDB) -> None:
    outcomes = [r.outcome for r in db.ingest(mixed_batch(), now=1000)]
    assert outcomes[:6] == ["stored"] * 6
    assert outcomes[6:] == ["stored", "duplicate", "stored", "conflict", "duplicate", "duplicate", "duplicate",
                            "duplicate"]
    # The signed copy is counted; the identical copy of the Microsoft report raised its auth to dkim.
    rows = {(r.organization_name, r.report_id): r for r in db.reports(limit=1000)}
    assert rows[("Microsoft Corporation", "m-1")].auth == "dkim"
    assert db.summary()["failed_sessions"] >= 4000


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


def test_integrity_authenticated_copy_wins_over_earlier_forged_one(db):
    check_authenticated_copy_wins(db)


def test_integrity_duplicate_with_better_auth_vouches_for_the_copy(db):
    check_duplicate_with_better_auth_vouches_for_the_copy(db)


def test_integrity_retention_recounts_the_remaining_copy(db):
    check_retention_recounts(db)


def test_integrity_conflicts_follow_filters(db):
    check_conflicts_follow_filters(db)


def test_integrity_v1_database_upgrades_in_place(tmp_path):
    check_v1_database_upgrades_in_place(f"sqlite:///{tmp_path}/v1.sqlite3")


def test_integrity_unknown_auth_is_refused(db):
    with pytest.raises(ValueError):
        db.ingest([Incoming(parse_report(tc.case("google-heartbeat").json()), "file", auth="password")])


def test_rpt_ingest_batch_is_all_or_nothing(db):
    check_batch_is_atomic(db)


def test_rpt_batch_is_the_same_as_one_by_one(db, tmp_path):
    with ReportDB(f"sqlite:///{tmp_path}/single.sqlite3") as single:
        check_batch_is_the_same_as_one_by_one(db, single)
        assert [r.id for r in db.reports(limit=1000)] == [r.id for r in single.reports(limit=1000)]  # same ids


def test_rpt_batch_outcomes_cover_every_path(db):
    check_batch_outcomes_cover_every_path(db)


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
        assert first.schema_version == ReportDB.SCHEMA.version
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
