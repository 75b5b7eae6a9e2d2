"""The advisor's report queries on a real PostgreSQL server: the same check as on SQLite
(tests/unit/test_advice_queries.py)."""

from __future__ import annotations

import pytest

from mxsec.storage.reportdb import ReportDB
from tests.unit.test_advice_queries import check_report_figures

from .servers import postgres_server  # noqa: F401  (session fixture used by name)

pytestmark = pytest.mark.integration


def test_pg_report_figures(postgres_server):  # noqa: F811
    with ReportDB(postgres_server.create_database("mxsec_reports_advice")) as db:
        check_report_figures(db)
