"""`mxsec reports ingest` over many files uses two processes (mxsec.reports.parallel): the outcome must be the
one-process outcome: every line in input order, duplicates and conflicting copies across the two processes'
batches, rejected inputs, exit status, exact stored figures; and a failure in either process stops both."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

from tests import tlsrpt_corpus as tc

from .test_reports_cli import mxsec, summary


def _doc(index: int, ok: int) -> dict:
    return tc.report(organization="Parallel Reporter", report_id=f"p-{index}",
                     policies=[tc.sts_entry(ok=ok, failed=index % 3,
                                            details=[tc.detail("validation-failure", index % 3)] if index % 3 else None)])


def write_reports(directory: Path, count: int) -> tuple[list[str], int, int]:
    """*count* report files; file 600 repeats file 100 (a duplicate across the two processes' batches), file
    1020 is a different copy of file 550's report (a conflict), file 700 is not a report (rejected)."""
    directory.mkdir()
    paths, ok_sum, bad_sum = [], 0, 0
    for index in range(count):
        if index == 600:
            data = tc.as_gzip(_doc(100, 100))
        elif index == 1020:
            data = tc.as_gzip(_doc(550, 7))
        elif index == 700:
            data = b"{not json"
        else:
            doc = _doc(index, index)
            data = tc.as_gzip(doc)
            ok_sum += index
            bad_sum += index % 3
        path = directory / f"r{index:05d}.json.gz"
        path.write_bytes(data)
        paths.append(str(path))
    return paths, ok_sum, bad_sum


def test_rpt_ingest_in_two_processes_is_the_one_process_outcome(tmp_path):
    paths, ok_sum, bad_sum = write_reports(tmp_path / "files", 1050)  # three batches: parent, child, parent
    db = f"sqlite:///{tmp_path}/reports.sqlite3"
    result = mxsec("ingest", "--no-dkim", *paths, db=db)
    out, err = result.stdout.decode(), result.stderr.decode()
    assert "Traceback" not in out + err, err
    assert result.returncode == 1, err  # a rejected input wins over the conflict
    lines = out.splitlines()
    assert lines[-1] == "1050 input(s): 1047 stored, 1 duplicate, 1 conflicting, 1 rejected"
    named = [line.split(":", 1)[0] for line in lines[:-1]]
    assert named == [p for i, p in enumerate(paths) if i != 700]  # in input order, across both processes
    assert ": duplicate Parallel Reporter" in lines[600] and ": conflict Parallel Reporter" in lines[1019]
    assert f"{paths[700]}: rejected:" in err and "CONFLICT: report 'p-550'" in err
    data = summary(db)
    assert (data["reports"], data["successful_sessions"], data["failed_sessions"]) == (1047, ok_sum, bad_sum)
    again = mxsec("ingest", "-q", "--no-dkim", *paths, db=db)
    assert again.stdout.decode().splitlines()[-1] == "1050 input(s): 0 stored, 1049 duplicate, 0 conflicting, 1 rejected"
    assert again.returncode == 1


SCRIPT = textwrap.dedent("""
    import json, os, sys
    from mxsec.reports.inputs import Options
    from mxsec.reports.parallel import ingest_paths
    from mxsec.storage.reportdb import ReportDB

    db_url, fail_in, paths = sys.argv[1], sys.argv[2], sys.argv[3:]
    parent = os.getpid()
    original = ReportDB.ingest
    calls = []

    def ingest(self, items, **kwargs):
        calls.append(1)
        child = os.getpid() != parent
        if (fail_in == "child" and child) or (fail_in == "parent" and not child and len(calls) == 2):
            from mxsec.storage.base import StoreError
            raise StoreError("disk on fire")
        return original(self, items, **kwargs)

    ReportDB.ingest = ingest
    try:
        outcome = ingest_paths(lambda: ReportDB(db_url), paths, Options(), on_done=lambda item: print(item.name),
                               batch=10)
    except SystemExit as exc:
        print("exit", exc.code)
    except Exception as exc:
        print("raised", type(exc).__name__, exc)
    else:
        print("outcome", json.dumps([outcome.processes, outcome.inputs, outcome.counts]))
""")


def _run(tmp_path: Path, fail_in: str, count: int = 45) -> tuple[list[str], str, list[str]]:
    paths, _, _ = write_reports(tmp_path / f"files-{fail_in}", count)
    db = f"sqlite:///{tmp_path}/{fail_in}.sqlite3"
    result = subprocess.run([sys.executable, "-c", SCRIPT, db, fail_in, *paths], capture_output=True, text=True,
                            timeout=120, check=False)
    assert "Traceback" not in result.stderr, result.stderr
    return result.stdout.splitlines(), result.stderr, paths


def test_two_processes_take_turns_in_input_order(tmp_path):
    lines, _, paths = _run(tmp_path, "none")
    assert lines[-1] == 'outcome [2, 45, {"stored": 45, "duplicate": 0, "conflict": 0, "rejected": 0}]'
    assert lines[:-1] == paths  # five batches of ten and one of five, alternating between the processes


def test_a_failing_child_stops_both_and_keeps_what_was_committed(tmp_path):
    lines, err, paths = _run(tmp_path, "child")
    assert lines[-1] == "exit 2" and "mxsec: disk on fire" in err
    assert lines[:-1] == paths[:10]  # the parent's first batch; the child failed on the second
    with sqlite3.connect(tmp_path / "child.sqlite3") as conn:
        assert conn.execute("SELECT COUNT(*) FROM tlsrpt_report").fetchone() == (10,)


def test_a_failing_parent_stops_the_child(tmp_path):
    lines, err, paths = _run(tmp_path, "parent")
    assert lines[-1] == "raised StoreError disk on fire"
    assert lines[:-1] == paths[:20]  # batches 0 (parent) and 1 (child); the parent failed on batch 2
    with sqlite3.connect(tmp_path / "parent.sqlite3") as conn:
        assert conn.execute("SELECT COUNT(*) FROM tlsrpt_report").fetchone() == (20,)
