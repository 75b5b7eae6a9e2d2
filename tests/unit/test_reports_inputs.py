"""Inputs of `mxsec reports ingest` (mxsec.reports.inputs): what a file holds, messages, mbox groups, DKIM rules."""

from __future__ import annotations

import pytest

from mxsec.reports.inputs import Options, bytes_inputs, count_outcomes, ingest, kind_of, path_inputs
from mxsec.storage.reportdb import ReportDB
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


# ------------------------------------------------------------------------- hostile archives (EC-40, RPT-I-45)

import gzip  # noqa: E402
import io  # noqa: E402
import logging  # noqa: E402
import os  # noqa: E402
import stat  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
import zipfile  # noqa: E402
import zlib  # noqa: E402

from mxsec.fsutil import make_dirs  # noqa: E402
from mxsec.reports.inputs import report_input  # noqa: E402
from mxsec.tlsrpt.parse import parse_report  # noqa: E402
from mxsec.tlsrpt.report import Limits, ReportError  # noqa: E402


def _cpu(fn):
    start = time.process_time()
    try:
        fn()
    except ReportError as exc:
        return time.process_time() - start, exc.code
    return time.process_time() - start, None


def test_ec_40_gzip_of_499000_one_byte_members_is_refused_at_once(tmp_path):
    # the measured attack: ~10 MiB of one-byte gzip members (181 s of CPU before the member cap)
    bomb = gzip.compress(b"x", mtime=0) * 499_000
    assert 9 * 1024 * 1024 < len(bomb) <= 10 * 1024 * 1024
    path = tmp_path / "bomb.json.gz"
    path.write_bytes(bomb)
    start = time.process_time()
    (item,) = path_inputs(str(path), Options())
    assert time.process_time() - start < 0.5
    assert item.rejected and "more than 64 members" in item.error
    seconds, code = _cpu(lambda: parse_report(bomb))
    assert code == "too-many-members" and seconds < 0.5


def test_ec_40_gzip_members_are_inflated_in_linear_time_even_without_the_cap():
    one = gzip.compress(b"x", mtime=0)
    uncapped = Limits(max_archive_members=10**7)
    small, code = _cpu(lambda: parse_report(one * 20_000, limits=uncapped))
    assert code == "not-json"  # "xxxx…" inflated whole, then refused as JSON
    large, code = _cpu(lambda: parse_report(one * 80_000, limits=uncapped))
    assert code == "not-json"
    # four times the members: about four times the work (quadratic copying of the rest would be sixteen)
    assert large < 8 * small + 0.05, (small, large)


def test_gzip_member_cap_allows_a_few_members_and_is_configurable():
    data = CASE.json()
    parts = b"".join(gzip.compress(data[i:i + 50]) for i in range(0, len(data), 50))
    assert parse_report(parts).raw_json == data
    count = -(-len(data) // 50)
    assert _cpu(lambda: parse_report(parts, limits=Limits(max_archive_members=count - 1)))[1] == "too-many-members"


def test_ec_40_zip_with_thousands_of_entries_is_refused_before_reading_them():
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for number in range(20_000):
            archive.writestr(f"{number}.txt", b"")
        archive.writestr("report.json", CASE.json())
    seconds, code = _cpu(lambda: parse_report(buffer.getvalue()))
    assert code == "too-many-members" and seconds < 0.2


def _zip_entry(name: str, payload: bytes, *, declared: int | None = None) -> bytes:
    """A one-entry deflated zip whose declared uncompressed size may lie."""
    packer = zlib.compressobj(9, zlib.DEFLATED, -15)
    body = packer.compress(payload) + packer.flush()
    size = len(payload) if declared is None else declared
    crc = zlib.crc32(payload)
    name_bytes = name.encode()
    local = (b"PK\x03\x04" + (20).to_bytes(2, "little") + bytes(2) + (8).to_bytes(2, "little") + bytes(4)
             + crc.to_bytes(4, "little") + len(body).to_bytes(4, "little") + size.to_bytes(4, "little")
             + len(name_bytes).to_bytes(2, "little") + bytes(2) + name_bytes)
    central = (b"PK\x01\x02" + (20).to_bytes(2, "little") * 2 + bytes(2) + (8).to_bytes(2, "little") + bytes(4)
               + crc.to_bytes(4, "little") + len(body).to_bytes(4, "little") + size.to_bytes(4, "little")
               + len(name_bytes).to_bytes(2, "little") + bytes(8) + bytes(4) + (0).to_bytes(4, "little")
               + name_bytes)
    offset = len(local) + len(body)
    end = (b"PK\x05\x06" + bytes(4) + (1).to_bytes(2, "little") * 2 + len(central).to_bytes(4, "little")
           + offset.to_bytes(4, "little") + bytes(2))
    return local + body + central + end


def test_ec_40_zip_size_and_ratio_caps():
    # sanity: the hand-made archive is a valid one
    assert parse_report(_zip_entry("r.json", CASE.json())).raw_json == CASE.json()
    # a 15 MiB run of spaces deflates ~1000:1: refused for its ratio although under the 16 MiB output cap
    bomb = _zip_entry("r.json", b"{" + b" " * (15 * 1024 * 1024) + b"}")
    seconds, code = _cpu(lambda: parse_report(bomb))
    assert code == "decompressed-too-large" and seconds < 0.5
    # a declared size beyond the output cap is refused before inflating
    liar = _zip_entry("r.json", CASE.json(), declared=1 << 30)
    assert _cpu(lambda: parse_report(liar))[1] == "decompressed-too-large"
    # a declared size of 10 bytes does not let more through: the read stops there and the CRC tells
    assert _cpu(lambda: parse_report(_zip_entry("r.json", b" " * 5000 + CASE.json(), declared=10)))[1] == "bad-zip"


def test_zip_central_directory_size_is_capped():
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("r" * 60_000 + ".txt", b"")
        archive.writestr("s" * 60_000 + ".json", CASE.json())
    assert _cpu(lambda: parse_report(buffer.getvalue()))[1] == "bad-zip"


# ------------------------------------------------------------------------- symbolic links, FIFOs, devices


def _maildir(root):
    for sub in ("cur", "new", "tmp"):
        (root / sub).mkdir(parents=True)
    return root


def test_maildir_symlinks_are_skipped_with_a_warning_never_followed(tmp_path, caplog):
    outside = tmp_path / "secret.eml"
    outside.write_bytes(CASE.message())
    box = _maildir(tmp_path / "box")
    (box / "new" / "1.link").symlink_to(outside)
    (box / "new" / "2.real").write_bytes(CASE.message())
    with caplog.at_level(logging.WARNING, logger="mxsec.reports"):
        items = list(path_inputs(str(box), Options()))
    assert [item.name for item in items] == [str(box / "new" / "2.real")]
    assert not items[0].rejected
    (warning,) = [r for r in caplog.records if "1.link" in r.getMessage()]
    assert warning.getMessage() == f"{box / 'new' / '1.link'}: skipped: a symbolic link in a Maildir"


def test_fifo_given_to_ingest_is_refused_without_opening_it(tmp_path):
    fifo = tmp_path / "report.json"
    os.mkfifo(fifo)
    results: list = []
    worker = threading.Thread(target=lambda: results.extend(path_inputs(str(fifo), Options())), daemon=True)
    worker.start()
    worker.join(5)
    if worker.is_alive():  # unblock the reader so the test run can go on, then fail
        fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        os.close(fd)
        worker.join(5)
        pytest.fail("reading a FIFO blocked")
    (item,) = results
    assert item.rejected and item.error == "skipped: a FIFO, not a regular file"


def test_fifo_and_device_in_a_maildir_are_skipped(tmp_path, caplog):
    box = _maildir(tmp_path / "box")
    os.mkfifo(box / "cur" / "1.fifo")
    (box / "cur" / "2.null").symlink_to("/dev/null")
    (box / "cur" / "3.real").write_bytes(CASE.message())
    with caplog.at_level(logging.WARNING, logger="mxsec.reports"):
        items = list(path_inputs(str(box), Options()))
    assert [os.path.basename(item.name) for item in items] == ["3.real"]
    messages = sorted(r.getMessage() for r in caplog.records)
    assert messages == [f"{box / 'cur' / '1.fifo'}: skipped: a FIFO in a Maildir",
                        f"{box / 'cur' / '2.null'}: skipped: a symbolic link in a Maildir"]


def test_device_given_to_ingest_is_refused():
    (item,) = path_inputs("/dev/zero", Options())
    assert item.rejected and item.error == "skipped: a device, not a regular file"


# ------------------------------------------------------------------------- directory modes under any umask


@pytest.fixture
def open_umask():
    previous = os.umask(0)
    try:
        yield
    finally:
        os.umask(previous)


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_state_directories_are_0750_under_umask_000(tmp_path, open_umask):
    from mxsec.sender.collect import save_spill
    from mxsec.storage.sqlite import SqliteStore
    from mxsec.tlsrpt.session import Tally

    with ReportDB(f"sqlite:///{tmp_path}/data/mxsec/reports.sqlite3"):
        pass
    assert _mode(tmp_path / "data") == 0o750 and _mode(tmp_path / "data" / "mxsec") == 0o750
    store = SqliteStore(str(tmp_path / "state" / "cache" / "cache.sqlite3"))
    store.close()
    assert _mode(tmp_path / "state") == 0o750 and _mode(tmp_path / "state" / "cache") == 0o750
    save_spill(str(tmp_path / "spill" / "dir"), Tally())
    assert _mode(tmp_path / "spill") == 0o750 and _mode(tmp_path / "spill" / "dir") == 0o750


def test_maildir_move_target_is_0750_under_umask_000(tmp_path, open_umask):
    box = tmp_path / "box"
    for sub in ("cur", "new", "tmp"):
        (box / sub).mkdir(parents=True, mode=0o700)
    (box / "new" / "1.msg").write_bytes(CASE.message())
    options = Options(move_processed=tmp_path / "done" / "box")
    with ReportDB(f"sqlite:///{tmp_path}/r.sqlite3") as db:
        ingest(db, path_inputs(str(box), options), options)
    for directory in (tmp_path / "done", tmp_path / "done" / "box", tmp_path / "done" / "box" / "cur"):
        assert _mode(directory) == 0o750, directory
    assert (tmp_path / "done" / "box" / "cur" / "1.msg:2,S").is_file()


def test_make_dirs_leaves_existing_directories_alone(tmp_path, open_umask):
    existing = tmp_path / "existing"
    existing.mkdir(mode=0o711)
    os.chmod(existing, 0o711)
    make_dirs(existing / "a" / "b")
    make_dirs(existing / "a" / "b")  # again: nothing to do
    assert _mode(existing) == 0o711
    assert _mode(existing / "a") == 0o750 and _mode(existing / "a" / "b") == 0o750
    (tmp_path / "file").write_text("")
    with pytest.raises(FileExistsError):
        make_dirs(tmp_path / "file" / "sub")


def test_report_input_refuses_bombs_with_one_line():
    item = report_input(gzip.compress(b"x") * 1000, "x.json.gz", "file")
    assert item.rejected and "\n" not in item.error
