"""The TLSRPT sender's database on SQLite: additive counts, the failure-row cap across flushes, positions written
with the counts, served policies, reports and deliveries. (PostgreSQL: tests/integration/test_tlsrpt_collect.py.)"""

from __future__ import annotations

from datetime import date

import pytest

from mxsec.errors import ConfigError
from mxsec.storage.senderdb import SenderDB
from mxsec.tlsrpt.session import Failure, Policy, PolicyOutcome, PolicyType, Session, Tally, folded

DAY = date(2026, 12, 1)
STS = Policy(PolicyType.STS, "example.com", ("version: STSv1", "mode: enforce", "mx: mx.example.com"), ("mx.example.com",))


def tally(sessions: list[Session], day: date = DAY) -> Tally:
    t = Tally()
    for s in sessions:
        t.add(s, day)
    return t


def failing(ip: str, result: str = "certificate-expired") -> Session:
    return Session("example.com", (PolicyOutcome(STS, True, (Failure(result, ip, "mx.example.com"),)),),
                   "v=TLSRPTv1; rua=mailto:r@example.com")


@pytest.fixture
def db(tmp_path):
    with SenderDB(f"sqlite:///{tmp_path}/s.sqlite3") as d:
        yield d


def test_counts_add_up_across_writes_and_a_restart(tmp_path):
    url = f"sqlite:///{tmp_path}/s.sqlite3"
    ok = Session("example.com", (PolicyOutcome(STS, False),))
    with SenderDB(url) as db:
        db.add(tally([ok, ok, failing("192.0.2.1")]))
        db.add(tally([ok, failing("192.0.2.1"), failing("192.0.2.2")]))
    with SenderDB(url) as db:  # a new process: nothing lost
        assert db.day_totals(DAY) == {"example.com": (3, 3)}
        (totals,) = db.totals(DAY, "example.com")
        assert totals.policy == STS
        assert [(f.sending_mta_ip, n) for f, n in totals.failures] == [("192.0.2.1", 2), ("192.0.2.2", 1)]
        assert db.record("example.com") == "v=TLSRPTv1; rua=mailto:r@example.com"
        assert db.schema_version == 2


def test_failure_rows_are_capped_across_flushes_and_the_rest_folded(tmp_path):
    with SenderDB(f"sqlite:///{tmp_path}/s.sqlite3", max_failure_rows=5) as db:
        for start in range(0, 40, 4):  # ten flushes of four new sending IPs each
            db.add(tally([failing(f"192.0.2.{i}") for i in range(start, start + 4)]))
        db.add(tally([failing("192.0.2.0")]))  # an existing row still counts
        (totals,) = db.totals(DAY, "example.com")
    rows = dict(totals.failures)
    assert len(rows) == 6  # five kept + one folded row
    assert sum(rows.values()) == totals.failed == 41
    assert rows[folded(Failure("certificate-expired", "192.0.2.9"))] == 35
    assert rows[Failure("certificate-expired", "192.0.2.0", "mx.example.com")] == 2


def test_positions_are_written_with_the_counts(db):
    db.add(Tally(), positions={"log:/var/log/mail.log": '{"inode": 5, "offset": 10}'})
    assert db.position("log:/var/log/mail.log") == '{"inode": 5, "offset": 10}'
    db.add(tally([failing("192.0.2.1")]), positions={"log:/var/log/mail.log": '{"inode": 5, "offset": 99}'})
    assert db.position("log:/var/log/mail.log") == '{"inode": 5, "offset": 99}'
    assert db.position("other") is None


def test_served_policies_latest_before_the_time(db):
    db.add_served([("example.com", "a", '{"v": 1}', 1000), ("example.com", "b", '{"v": 2}', 2000)])
    assert db.served_at("example.com", 999 - 5) is None
    assert db.served_at("example.com", 1500) == '{"v": 1}'
    assert db.served_at("example.com", 1996) == '{"v": 2}'  # 5 s of slack
    assert db.delete_served_before(3000) == 1
    assert db.served_at("example.com", 1500) is None and db.served_at("example.com", 5000) == '{"v": 2}'


def test_reports_deliveries_and_message_ids(db):
    db.add(tally([failing("192.0.2.1")]))
    assert db.unreported(date(2026, 12, 2)) == [(DAY, "example.com")]
    row = db.save_report(DAY, "example.com", "id-1@s.example", "f.json.gz", b"gz", 0, 1, now=10)
    assert db.unreported(date(2026, 12, 2)) == []
    again = db.save_report(DAY, "example.com", "id-1@s.example", "f.json.gz", b"gz2", 0, 1, now=20)
    assert again.pk == row.pk and db.report_gz(row.pk) == b"gz2"
    db.add_delivery(row, "mailto:r@example.com", next_attempt=100)
    db.add_delivery(row, "mailto:r@example.com", next_attempt=999)  # already there: unchanged
    (delivery,) = db.deliveries(states=("pending",), due_before=100)
    assert db.deliveries(due_before=99) == []
    db.record_attempt(delivery, state="pending", at=100, next_attempt=400, error="451 later")
    (delivery,) = db.deliveries()
    assert (delivery.attempts, delivery.first_attempt_ts, delivery.next_attempt_ts, delivery.last_error) == (
        1, 100, 400, "451 later")
    with pytest.raises(ValueError):
        db.record_attempt(delivery, state="lost", at=1, next_attempt=1, error=None)
    db.remember_message("<m@s.example>")
    assert db.is_report_message("<m@s.example>") and not db.is_report_message("<x@s.example>")
    assert db.delete_days_before(date(2026, 12, 2)) == 1
    assert db.reports() == [] and db.day_totals(DAY) == {}


def test_bad_urls_are_one_line_config_errors(tmp_path):
    for url in ("", "sqlite://relative", "mysql://x/y", "sqlite:///a\nb"):
        with pytest.raises(ConfigError):
            SenderDB(url)


def test_one_sending_lease_per_sqlite_database(tmp_path):
    url = f"sqlite:///{tmp_path}/sender.sqlite3"
    first, second = SenderDB(url), SenderDB(url)
    try:
        assert first.take_sending_lease() and first.take_sending_lease()  # held: asking again is fine
        assert not second.take_sending_lease()
        first.close()
        assert second.take_sending_lease()
    finally:
        first.close()
        second.close()
