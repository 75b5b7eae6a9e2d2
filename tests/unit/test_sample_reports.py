"""The sample month of mxsec.testing.sample_reports (docs and trying the tools): clean reports, visible incidents."""

from __future__ import annotations

from datetime import date

from mxsec.testing.sample_reports import write_samples
from mxsec.reports.inputs import Options, ingest, path_inputs
from mxsec.storage.reportdb import Filters, ReportDB


def test_sample_month_parses_cleanly_and_shows_both_incidents(tmp_path):
    files = write_samples(tmp_path / "r", days=30, end=date(2026, 11, 23))
    assert len(files) == 30 * 3 * 2
    with ReportDB(f"sqlite:///{tmp_path}/db.sqlite3") as db:
        done = ingest(db, [item for path in files for item in path_inputs(str(path), Options())])
        assert all(not item.rejected for item in done)
        assert all(not item.incoming[0].report.warnings for item in done)
        summary = db.summary()
        assert summary["reports"] == 180
        by_type = summary["by_result_type"]
        assert list(by_type)[:2] == ["certificate-expired", "starttls-not-supported"]
        expired_days = [day for day, types in db.failures_by_day().items() if "certificate-expired" in types]
        assert len(expired_days) == 3
        assert db.failing_sending_ips(Filters(domain="example.com"))[0][0] in {"203.0.113.66", "192.0.2.10"}
