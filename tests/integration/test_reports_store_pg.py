"""The report database on a real PostgreSQL server: the same checks as on SQLite, plus concurrent first use."""

from __future__ import annotations

import itertools
import threading

import pytest

from mxsec.storage.base import StoreError
from mxsec.storage.reportdb import ReportDB
from tests.unit import test_reports_store as shared

from .servers import postgres_server  # noqa: F401  (session fixture used by name)

_names = itertools.count()


@pytest.fixture
def pg_db(postgres_server):  # noqa: F811
    url = postgres_server.create_database(f"mxsec_reports_{next(_names)}")
    with ReportDB(url) as db:
        yield db


def test_pg_rpt_corpus_round_trip_exact_figures(pg_db):
    shared.check_corpus_round_trip(pg_db)


def test_pg_rpt_duplicates_stored_once(pg_db):
    shared.check_duplicates_stored_once(pg_db)


def test_pg_conflicting_copy_keeps_the_first(pg_db):
    shared.check_conflict_keeps_first(pg_db)


def test_pg_integrity_authenticated_copy_wins_over_earlier_forged_one(pg_db):
    shared.check_authenticated_copy_wins(pg_db)


def test_pg_integrity_duplicate_with_better_auth_vouches_for_the_copy(pg_db):
    shared.check_duplicate_with_better_auth_vouches_for_the_copy(pg_db)


def test_pg_integrity_retention_recounts_the_remaining_copy(pg_db):
    shared.check_retention_recounts(pg_db)


def test_pg_integrity_conflicts_follow_filters(pg_db):
    shared.check_conflicts_follow_filters(pg_db)


def test_pg_integrity_v1_database_upgrades_in_place(postgres_server):  # noqa: F811
    shared.check_v1_database_upgrades_in_place(postgres_server.create_database("mxsec_reports_v1"))


def test_pg_integrity_concurrent_conflicting_copies_count_one(postgres_server):  # noqa: F811
    """Writers storing different copies of one report at once still leave exactly one counted copy."""
    from mxsec.storage.reportdb import Incoming
    from mxsec.tlsrpt.parse import parse_report

    url = postgres_server.create_database("mxsec_reports_copies")
    ReportDB(url).close()
    errors: list[BaseException] = []
    forged, _ = shared.forged_and_genuine(rid="race")

    def write(index: int) -> None:
        try:
            with ReportDB(url) as db:
                body = forged.replace(b"10000", str(10000 + index).encode())
                db.ingest([Incoming(parse_report(body), "https", f"192.0.2.{index}")])
        except BaseException as exc:  # noqa: BLE001 - collected for the assertion
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors
    with ReportDB(url) as db:
        copies = db.copies(db.reports()[0].id)
        assert len(copies) == 6 and sum(c.counted for c in copies) == 1
        assert db.summary()["reports"] == 1 and db.conflicts()[0] == 1


def test_pg_ingest_batch_is_all_or_nothing(pg_db):
    shared.check_batch_is_atomic(pg_db)


def test_pg_filters(pg_db):
    shared.check_filters(pg_db)


def test_pg_same_answers_as_sqlite(pg_db, tmp_path):
    with ReportDB(f"sqlite:///{tmp_path}/r.sqlite3") as lite:
        lite.ingest(shared.corpus_items())
        pg_db.ingest(shared.corpus_items())
        assert pg_db.summary() == lite.summary()
        assert pg_db.by_mx() == lite.by_mx()
        assert pg_db.failing_sending_ips() == lite.failing_sending_ips()


def test_pg_first_use_by_several_processes_at_once(postgres_server):  # noqa: F811
    url = postgres_server.create_database("mxsec_reports_race")
    errors: list[BaseException] = []

    def open_and_ingest(index: int) -> None:
        try:
            with ReportDB(url) as db:
                db.ingest(shared.corpus_items())
        except BaseException as exc:  # noqa: BLE001 - collected for the assertion
            errors.append(exc)

    threads = [threading.Thread(target=open_and_ingest, args=(i,)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors
    with ReportDB(url) as db:
        assert db.schema_version == ReportDB.SCHEMA.version
        assert db.summary()["reports"] == len(shared.corpus_items())


def test_pg_unreachable_server_is_one_line_store_error():
    from .servers import free_port

    with pytest.raises(StoreError) as info:
        ReportDB(f"postgresql://postgres@127.0.0.1:{free_port()}/none")
    assert "\n" not in str(info.value)


def test_pg_rpt_batch_is_the_same_as_one_by_one(pg_db, postgres_server):  # noqa: F811
    with ReportDB(postgres_server.create_database(f"mxsec_reports_{next(_names)}")) as single:
        shared.check_batch_is_the_same_as_one_by_one(pg_db, single)


def test_pg_rpt_batch_outcomes_cover_every_path(pg_db):
    shared.check_batch_outcomes_cover_every_path(pg_db)
