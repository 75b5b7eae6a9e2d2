"""The report database on a real PostgreSQL server: the same checks as on SQLite, plus concurrent first use."""

from __future__ import annotations

import itertools
import threading

import pytest

from mxsec.store.base import StoreError
from mxsec.store.reportdb import SCHEMA_VERSION, ReportDB
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
        assert db.schema_version == SCHEMA_VERSION
        assert db.summary()["reports"] == len(shared.corpus_items())


def test_pg_unreachable_server_is_one_line_store_error():
    from .servers import free_port

    with pytest.raises(StoreError) as info:
        ReportDB(f"postgresql://postgres@127.0.0.1:{free_port()}/none")
    assert "\n" not in str(info.value)
