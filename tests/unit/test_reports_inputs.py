"""Inputs of `mxsec reports ingest` (mxsec.reports.inputs): what a file holds, messages, mbox groups, DKIM rules."""

from __future__ import annotations

import pytest

from mxsec.reports.inputs import Options, bytes_inputs, count_outcomes, ingest, kind_of, path_inputs
from mxsec.store.reportdb import ReportDB
from tests import tlsrpt_corpus as tc

CASE = tc.case("google-heartbeat")


@pytest.mark.parametrize("data,kind", [
    (CASE.json(), "report"),
    (b"\xef\xbb\xbf  " + CASE.json(), "report"),
    (CASE.gzip(), "report"),
    (tc.as_zip({"r.json": CASE.json()}), "report"),
    (CASE.message(), "message"),
    (tc.as_mbox([CASE.message()]), "mbox"),
])
def test_ec_content_decides_the_kind_not_the_name(data, kind):
    assert kind_of(data) == kind


def test_message_without_report_is_rejected_with_one_line():
    (item,) = bytes_inputs(b"Subject: hi\r\n\r\nhello\r\n", "x.eml", "file", Options())
    assert item.rejected and item.error == "message holds no TLSRPT report"


def test_message_reports_carry_headers_and_transport_warnings():
    data = CASE.message(content_type="application/octet-stream")
    (item,) = bytes_inputs(data, "x.eml", "file", Options())
    assert not item.rejected
    (incoming,) = item.incoming
    assert incoming.source == "message" and incoming.source_name.startswith("<")
    assert incoming.transport_warnings  # the undeclared attachment type is recorded


@pytest.mark.parametrize("verdict,accepted", [("pass", True), ("fail", False), ("none", False), ("temperror", False)])
def test_rpt_require_dkim_accepts_only_pass(verdict, accepted):
    options = Options(dkim=lambda data: (verdict, ("reporter.example",) if verdict == "pass" else ()),
                      require_dkim=True)
    (item,) = bytes_inputs(CASE.message(), "x.eml", "file", options)
    assert item.rejected is not accepted
    if accepted:
        assert item.incoming[0].dkim == "pass" and item.incoming[0].dkim_domains == ("reporter.example",)
    else:
        assert f"DKIM {verdict}" in item.error


def test_dkim_verdict_is_recorded_without_require():
    (item,) = bytes_inputs(CASE.message(), "x.eml", "file", Options(dkim=lambda data: ("fail", ())))
    assert item.incoming[0].dkim == "fail"
    assert "dkim-fail" in {w.code for w in item.incoming[0].transport_warnings}


def test_mbox_messages_are_one_group_and_never_split(tmp_path):
    messages = [tc.as_email(tc.report(report_id=f"m{i}", policies=[tc.entry(tc.sts_policy(), ok=1)]))
                for i in range(7)]
    path = tmp_path / "in.mbox"
    path.write_bytes(tc.as_mbox(messages))
    single = tmp_path / "one.json"
    single.write_bytes(CASE.json())
    batches: list[int] = []
    with ReportDB(f"sqlite:///{tmp_path}/r.sqlite3") as db:
        original = db.ingest

        def counting(items, **kw):
            batches.append(len(items))
            return original(items, **kw)

        db.ingest = counting  # type: ignore[method-assign]
        inputs = [*path_inputs(str(single), Options()), *path_inputs(str(path), Options()),
                  *path_inputs(str(single), Options())]
        done = ingest(db, inputs, batch=2)
    # one file, then the whole mbox in one transaction with it, then the last file
    assert batches == [8, 1]
    assert count_outcomes(done) == {"stored": 8, "duplicate": 1, "conflict": 0, "rejected": 0}


def test_directory_that_is_not_a_maildir_and_missing_files(tmp_path):
    (item,) = path_inputs(str(tmp_path), Options())
    assert item.rejected and "not a Maildir" in item.error
    (item,) = path_inputs(str(tmp_path / "nope"), Options())
    assert item.error == "no such file"


def test_stdin_reader_is_used_for_dash():
    (item,) = path_inputs("-", Options(), stdin=lambda: CASE.gzip())
    assert not item.rejected and item.incoming[0].source == "stdin"
