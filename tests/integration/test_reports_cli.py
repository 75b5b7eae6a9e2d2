"""`mxsec reports ingest` and `mxsec reports summary` as a user runs them: the whole corpus as report files,
as messages, as an mbox, through a Maildir and through stdin; exact figures; duplicates stored once; a crash
in the middle of an input stores all of it or none of it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests import tlsrpt_corpus as tc

from .daemonproc import MXSEC

CASES = tc.corpus()
REPORTS = len(CASES)
SUCCESSFUL = sum(c.successful for c in CASES)
FAILED = sum(c.failed for c in CASES)


def mxsec(*args: str, db: str | None = None, input: bytes | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    cmd = [MXSEC, "reports", *args]
    if db is not None:
        cmd += ["--db", db]
    env = {k: v for k, v in os.environ.items() if k != "MXSEC_REPORTS_DB"}
    return subprocess.run(cmd, capture_output=True, input=input, timeout=timeout, check=False, env=env)


def summary(db: str, *args: str) -> dict:
    result = mxsec("summary", "--json", *args, db=db)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def assert_exact(data: dict, reports: int = REPORTS, ok: int = SUCCESSFUL, bad: int = FAILED) -> None:
    assert (data["reports"], data["successful_sessions"], data["failed_sessions"]) == (reports, ok, bad)


def assert_clean(result: subprocess.CompletedProcess) -> None:
    text = result.stdout.decode() + result.stderr.decode()
    assert "Traceback" not in text, text


@pytest.fixture
def db(tmp_path) -> str:
    return f"sqlite:///{tmp_path}/reports.sqlite3"


def write_files(directory: Path) -> list[str]:
    """Each report packed a different way: .json, .json.gz with the RFC file name, bare .gz, zip."""
    directory.mkdir()
    paths = []
    for index, case in enumerate(CASES):
        if index % 4 == 0:
            path, data = directory / f"{case.name}.json", case.json()
        elif index % 4 == 1:
            path, data = directory / tc.report_filename("reporter.example", "example.com", unique=case.name), case.gzip()
        elif index % 4 == 2:
            path, data = directory / f"{case.name}.gz", case.gzip()
        else:
            path, data = directory / f"{case.name}.zip", tc.as_zip({f"{case.name}.json": case.json()})
        path.write_bytes(data)
        paths.append(str(path))
    return paths


def make_maildir(root: Path, messages: list[bytes]) -> Path:
    for sub in ("cur", "new", "tmp"):
        (root / sub).mkdir(parents=True)
    for index, message in enumerate(messages):
        (root / "new" / f"{1700000000 + index}.M{index}P1.test").write_bytes(message)
    return root


def test_rpt_ingest_files_exact_summary_and_duplicates(db, tmp_path):
    paths = write_files(tmp_path / "files")
    first = mxsec("ingest", *paths, db=db)
    assert first.returncode == 0, first.stderr
    assert f"{REPORTS} stored, 0 duplicate" in first.stdout.decode()
    data = summary(db)
    assert_exact(data)
    again = mxsec("ingest", "-q", *paths, db=db)
    assert again.returncode == 0
    assert f"0 stored, {REPORTS} duplicate" in again.stdout.decode()
    assert_exact(summary(db))
    # the stable keys and shapes of docs/reports.md
    for key in ("by_result_type", "by_organization", "by_policy_domain"):
        assert isinstance(data[key], dict)
    assert sum(data["by_result_type"].values()) > 0
    assert data["by_organization"]["Google Inc."]["reports"] == sum(
        1 for c in CASES if c.doc.get("organization-name") == "Google Inc.")


def test_rpt_ingest_messages_mbox_and_stdin(db, tmp_path):
    emls = []
    for case in CASES[:10]:
        path = tmp_path / f"{case.name}.eml"
        path.write_bytes(case.message())
        emls.append(str(path))
    mbox = tmp_path / "reports.mbox"
    mbox.write_bytes(tc.as_mbox([case.message() for case in CASES[10:20]]))
    result = mxsec("ingest", "--no-dkim", *emls, str(mbox), db=db)
    assert result.returncode == 0, result.stderr
    assert "20 stored" in result.stdout.decode()
    for case in CASES[20:]:
        piped = mxsec("ingest", "--no-dkim", "-", db=db, input=case.gzip() if len(case.name) % 2 else case.message())
        assert piped.returncode == 0, piped.stderr
    assert_exact(summary(db))


def test_rpt_ingest_maildir_moves_processed_and_rejected(db, tmp_path):
    messages = [case.message() for case in CASES] + [b"From: a@b.example\r\nSubject: hello\r\n\r\nnot a report\r\n"]
    maildir = make_maildir(tmp_path / "Maildir", messages)
    done, bad = tmp_path / "Done", tmp_path / "Rejected"
    result = mxsec("ingest", "--no-dkim", str(maildir), "--move-processed", str(done), "--move-rejected", str(bad),
                   db=db)
    assert result.returncode == 1  # one rejected input
    assert_clean(result)
    assert "holds no TLSRPT report" in result.stderr.decode()
    assert_exact(summary(db))
    assert list((maildir / "new").iterdir()) == []
    assert len(list((done / "cur").iterdir())) == REPORTS
    assert len(list((bad / "cur").iterdir())) == 1
    # Without --move-processed the messages stay and a second run finds only duplicates.
    again = make_maildir(tmp_path / "Again", [case.message() for case in CASES[:3]])
    result = mxsec("ingest", "--no-dkim", str(again), db=db)
    assert result.returncode == 0
    assert "0 stored, 3 duplicate" in result.stdout.decode()
    assert len(list((again / "new").iterdir())) == 3


def test_rejected_inputs_are_reported_and_the_rest_stored(db, tmp_path):
    good = tmp_path / "good.json"
    good.write_bytes(CASES[0].json())
    broken = tmp_path / "broken.json"
    broken.write_bytes(b'{"organization-name": "x"')
    bomb = tmp_path / "bomb.gz"
    bomb.write_bytes(tc.gzip_bomb(1 << 30))
    result = mxsec("ingest", str(broken), str(good), str(bomb), str(tmp_path / "missing.json"), db=db)
    assert result.returncode == 1
    assert_clean(result)
    err = result.stderr.decode().strip().splitlines()
    assert len(err) == 3 and all(": rejected: " in line for line in err)
    assert "no such file" in err[2]
    assert_exact(summary(db), 1, CASES[0].successful, CASES[0].failed)


@pytest.mark.parametrize("args", [
    ("summary", "--db", "mysql://x/y"),
    ("summary", "--since", "yesterday"),
    ("summary", "--threshold", "lots", "--db", "sqlite:///{tmp}/r.sqlite3"),
    ("summary", "--domain", "bad..name", "--db", "sqlite:///{tmp}/r.sqlite3"),
    ("ingest", "--db", "sqlite:///{tmp}/file/sub/r.sqlite3", "x.json"),
])
def test_usage_errors_are_one_line_exit_2(args, tmp_path):
    (tmp_path / "file").write_text("not a directory")
    result = mxsec(*[a.replace("{tmp}", str(tmp_path)) for a in args])
    assert result.returncode == 2, result
    assert_clean(result)
    assert len(result.stderr.decode().strip().splitlines()) == 1


def test_summary_filters_and_alert_mode(db, tmp_path):
    paths = write_files(tmp_path / "files")
    assert mxsec("ingest", *paths, db=db).returncode == 0
    on_day = summary(db, "--since", "2024-02-17", "--until", "2024-02-17")
    assert on_day["reports"] == REPORTS - 2  # the two RFC-example reports are from 2016
    company = summary(db, "--domain", "company-y.example")
    assert set(company["by_policy_domain"]) == {"company-y.example"}
    alert = mxsec("summary", "--fail-on-failures", db=db)
    assert alert.returncode == 1
    assert f"{FAILED:,} failed session(s), more than 0" in alert.stderr.decode()
    assert mxsec("summary", "--fail-on-failures", "--threshold", str(FAILED), db=db).returncode == 0
    assert mxsec("summary", "--fail-on-failures", "--threshold", "1%", db=db).returncode == 0
    quiet_day = mxsec("summary", "--fail-on-failures", "--since", "2030-01-01", db=db)
    assert quiet_day.returncode == 0
    assert "No reports stored for these filters" in quiet_day.stdout.decode()
    text = mxsec("summary", db=db).stdout.decode()
    for heading in ("Per day", "Per reporter", "Per policy domain", "Top result types", "Failures per MX host",
                    "Failing sending IPs"):
        assert heading in text


def test_hostile_names_do_not_reach_the_terminal_raw(db, tmp_path):
    doc = tc.report(organization="Evil\x1b[2J\x07 Corp", report_id="evil-1",
                    policies=[tc.entry(tc.sts_policy(), ok=1)])
    path = tmp_path / "evil.json"
    path.write_bytes(tc.as_json(doc))
    result = mxsec("ingest", str(path), db=db)
    assert result.returncode == 0
    assert b"\x1b" not in result.stdout and b"\x07" not in result.stdout
    shown = mxsec("summary", db=db)
    assert b"\x1b[2J" not in shown.stdout


def test_rpt_crash_mid_input_stores_all_or_nothing(db, tmp_path):
    """kill -9 while a large mbox is being stored: afterwards the mbox's reports are all there or none is;
    ingesting it again completes it, and everything stored before the crash is intact."""
    first = tmp_path / "first.json"
    first.write_bytes(CASES[0].json())
    assert mxsec("ingest", str(first), db=db).returncode == 0
    messages = []
    for index in range(3000):
        doc = tc.report(report_id=f"bulk-{index}", policies=[tc.entry(tc.sts_policy(), ok=index, failed=1, details=[
            tc.detail("certificate-expired", 1, sending_mta_ip="192.0.2.7")])])
        messages.append(tc.as_email(doc))
    mbox = tmp_path / "big.mbox"
    mbox.write_bytes(tc.as_mbox(messages))
    proc = subprocess.Popen([MXSEC, "reports", "ingest", "--no-dkim", "-q", "--db", db, str(mbox)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    path = Path(db.removeprefix("sqlite:///"))
    wal = path.with_name(path.name + "-wal")
    deadline = time.monotonic() + 60
    # Wait until the transaction is under way (the WAL grows), then kill.
    start_size = wal.stat().st_size if wal.exists() else 0
    while time.monotonic() < deadline and proc.poll() is None:
        if wal.exists() and wal.stat().st_size > start_size + 64 * 1024:
            break
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    stored = summary(db)["reports"] - 1
    assert stored in (0, 3000)
    assert summary(db, "--organization", CASES[0].doc["organization-name"])["reports"] >= 1
    again = mxsec("ingest", "--no-dkim", "-q", str(mbox), db=db)
    assert again.returncode == 0
    assert summary(db)["reports"] == 3001


def test_prune_deletes_old_reports_only(db, tmp_path):
    paths = write_files(tmp_path / "files")
    assert mxsec("ingest", *paths, db=db).returncode == 0
    result = mxsec("prune", "--before", "2020-01-01", db=db)
    assert result.returncode == 0, result.stderr
    assert result.stdout.decode().startswith("2 report(s) from before 2020-01-01 deleted")
    assert summary(db)["reports"] == REPORTS - 2
    both = mxsec("prune", "--before", "2020-01-01", "--older-than", "3", db=db)
    assert both.returncode == 2 and len(both.stderr.decode().strip().splitlines()) == 1
    assert mxsec("prune", "--older-than", "1", db=db).returncode == 0
    assert summary(db)["reports"] == 0
