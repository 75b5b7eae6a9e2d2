"""`mxsec reports fetch-imap` against a real Dovecot (tests/integration/dovecot.py) on 127.0.0.1.

The report corpus (tests/tlsrpt_corpus.py) is delivered with IMAP APPEND into a test user's INBOX; the
command runs as a subprocess over implicit TLS (or STARTTLS, or plain IMAP on loopback) with the test CA as
--ca-file, and the mailbox is looked at afterwards over IMAP. Each test has its own IMAP user (a fresh
mailbox) and its own SQLite database. DKIM keys, where needed, are served by the session FakeWorld's DNS.

Dovecot is a hard requirement: when it is missing these tests fail (scripts/install-system-deps.sh installs it).
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from mxsec.reports.imap import Account, Plan, fetch_reports
from mxsec.reports.inputs import Options, count_outcomes
from mxsec.storage.reportdb import Filters, ReportDB
from tests import tlsrpt_corpus as tc
from tests.dkim_signing import RsaKey, sign
from tests.integration.conftest import unique_domain
from tests.integration.dovecot import (
    CAPABILITY_WITHOUT_MOVE,
    CAPABILITY_WITHOUT_MOVE_OR_UIDPLUS,
    DovecotServer,
    running_dovecot,
)

from .daemonproc import MXSEC, free_port

pytestmark = pytest.mark.integration

PASSWORD = "correct horse \"battery\" staple\\"  # quotes and a backslash: the LOGIN command must quote them
INTL_USER, INTL_PASSWORD = "intl", "pässwörd-ünïcode"  # beyond ASCII: AUTHENTICATE PLAIN
USERS = {f"u{n}": PASSWORD for n in range(1, 25)} | {INTL_USER: INTL_PASSWORD}
NOT_A_REPORT = (b"From: Someone <someone@example.org>\r\nTo: tlsrpt@example.com\r\nSubject: hello\r\n"
                b"Message-ID: <not-a-report@example.org>\r\n\r\nJust a note, no report attached.\r\n")

_free_users = itertools.count(1)


@pytest.fixture(scope="module")
def dovecot() -> Iterator[DovecotServer]:
    with running_dovecot(USERS) as server:
        yield server


@pytest.fixture
def user(dovecot) -> str:
    """A user of its own for this test (an empty INBOX, no folders)."""
    name = f"u{next(_free_users)}"
    assert name in USERS, "more tests than prepared users: raise the count in USERS"
    return name


@pytest.fixture
def password_file(tmp_path) -> Path:
    path = tmp_path / "imap-password"
    path.write_text(PASSWORD + "\n", encoding="utf-8")
    path.chmod(0o600)
    return path


@pytest.fixture
def db_url(tmp_path) -> str:
    return f"sqlite:///{tmp_path}/reports.sqlite3"


def fetch(dovecot: DovecotServer, user: str, db_url: str, *args: str, password_file: Path | None = None,
          security: str = "tls", ca: bool = True, env: dict[str, str] | None = None,
          port: int | None = None) -> subprocess.CompletedProcess:
    if port is None:
        port = dovecot.tls_port if security == "tls" else dovecot.port
    cmd = [MXSEC, "reports", "fetch-imap", "--host", "127.0.0.1", "--port", str(port), "--security", security,
           "--user", user, "--db", db_url, "--no-dkim", "--timeout", "10"]
    if ca:
        cmd += ["--ca-file", str(dovecot.ca_file)]
    if password_file is not None:
        cmd += ["--password-file", str(password_file)]
    cmd += list(args)
    full_env = {k: v for k, v in os.environ.items() if k != "MXSEC_IMAP_PASSWORD"} | (env or {})
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=full_env, check=False)


def total_line(result: subprocess.CompletedProcess) -> str:
    return result.stdout.strip().splitlines()[-1]


def assert_one_line_error(result: subprocess.CompletedProcess, *words: str) -> None:
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr + result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mxsec: "), result.stderr
    for word in words:
        assert word in lines[0], lines[0]
    assert result.stdout == ""


def summary(db_url: str) -> dict:
    with ReportDB(db_url) as db:
        return db.summary(Filters())


def unseen(flags: dict[int, set[str]]) -> set[int]:
    return {uid for uid, f in flags.items() if "\\Seen" not in f}


# ------------------------------------------------------------------------------------ the whole corpus


def test_corpus_over_tls_then_nothing_new_then_all_again_as_duplicates(dovecot, user, db_url, password_file,
                                                                       tmp_path):
    cases = tc.corpus()
    dovecot.append(user, [case.message() for case in cases])
    first = fetch(dovecot, user, db_url, password_file=password_file)
    assert first.returncode == 0, first.stderr
    assert total_line(first) == f"{len(cases)} message(s): {len(cases)} stored, 0 duplicate, 0 conflicting, 0 rejected"
    names = [line.split(":", 2)[:2] for line in first.stdout.splitlines()[:-1]]
    assert names == [["imap", f"INBOX/{uid}"] for uid in range(1, len(cases) + 1)]

    figures = summary(db_url)
    assert figures["reports"] == len(cases)
    assert figures["successful_sessions"] == sum(case.successful for case in cases)
    assert figures["failed_sessions"] == sum(case.failed for case in cases)
    flags = dovecot.flags(user)
    assert len(flags) == len(cases) and not unseen(flags)

    # The same messages read as files by `reports ingest` give the very same summary.
    files = []
    for number, case in enumerate(cases):
        path = tmp_path / f"{number:02d}.eml"
        path.write_bytes(case.message())
        files.append(str(path))
    file_db = f"sqlite:///{tmp_path}/files.sqlite3"
    ingested = subprocess.run([MXSEC, "reports", "ingest", "--no-dkim", "--db", file_db, "-q", *files],
                              capture_output=True, text=True, timeout=120, check=False)
    assert ingested.returncode == 0, ingested.stderr
    assert summary(file_db) == figures

    with ReportDB(db_url) as db:
        rows = db.reports(limit=1000)
    assert {row.source for row in rows} == {"imap"} and {row.dkim for row in rows} == {None}

    second = fetch(dovecot, user, db_url, password_file=password_file)
    assert second.returncode == 0, second.stderr
    assert second.stdout.strip() == "0 message(s): 0 stored, 0 duplicate, 0 conflicting, 0 rejected"

    again = fetch(dovecot, user, db_url, "--all", "-q", password_file=password_file)
    assert again.returncode == 0, again.stderr
    assert again.stdout.strip() == (
        f"{len(cases)} message(s): 0 stored, {len(cases)} duplicate, 0 conflicting, 0 rejected"
    )
    assert summary(db_url) == figures
    assert not unseen(dovecot.flags(user))


def test_starttls_with_password_from_the_environment(dovecot, user, db_url):
    dovecot.append(user, [tc.case("google-heartbeat").message()])
    result = fetch(dovecot, user, db_url, security="starttls", env={"MXSEC_IMAP_PASSWORD": PASSWORD})
    assert result.returncode == 0, result.stderr
    assert total_line(result).startswith("1 message(s): 1 stored")
    logins = [line for line in dovecot.log_text().splitlines() if f"Login: user=<{user}>" in line]
    assert logins and all("TLS" in line for line in logins), logins  # STARTTLS really happened


def test_plain_imap_is_allowed_on_loopback_only(dovecot, user, db_url, password_file):
    dovecot.append(user, [tc.case("google-heartbeat").message()])
    result = fetch(dovecot, user, db_url, security="none", ca=False, password_file=password_file)
    assert result.returncode == 0, result.stderr
    assert total_line(result).startswith("1 message(s): 1 stored")
    refused = subprocess.run(
        [MXSEC, "reports", "fetch-imap", "--host", "imap.example.com", "--security", "none", "--user", user,
         "--password-file", str(password_file), "--db", db_url],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert_one_line_error(refused, "--security none", "loopback")


def test_non_ascii_password_logs_in_with_authenticate_plain(dovecot, db_url, tmp_path):
    secret = tmp_path / "pw"
    secret.write_text(INTL_PASSWORD + "\r\n", encoding="utf-8")
    dovecot.append(INTL_USER, [tc.case("google-heartbeat").message()])
    result = fetch(dovecot, INTL_USER, db_url, password_file=secret)
    assert result.returncode == 0, result.stderr
    assert total_line(result).startswith("1 message(s): 1 stored")


# ------------------------------------------------------------------------------- rejected messages


def test_non_report_is_rejected_and_left_unseen_then_moved_aside(dovecot, user, db_url, password_file):
    dovecot.append(user, [tc.case("google-heartbeat").message(), NOT_A_REPORT])
    first = fetch(dovecot, user, db_url, password_file=password_file)
    assert first.returncode == 1
    assert total_line(first) == "2 message(s): 1 stored, 0 duplicate, 0 conflicting, 1 rejected"
    assert first.stderr.strip() == "imap:INBOX/2: rejected: message holds no TLSRPT report"
    assert unseen(dovecot.flags(user)) == {2}

    again = fetch(dovecot, user, db_url, password_file=password_file)  # still there, still rejected
    assert again.returncode == 1 and total_line(again).startswith("1 message(s): 0 stored")

    moved = fetch(dovecot, user, db_url, "--move-rejected", "Rejected", password_file=password_file)
    assert moved.returncode == 1
    assert "Rejected" in dovecot.folders(user)
    assert set(dovecot.flags(user)) == {1}  # only the stored report is left in INBOX
    assert list(dovecot.flags(user, "Rejected").values()) == [set()]  # moved unseen, for a person to look at

    calm = fetch(dovecot, user, db_url, password_file=password_file)
    assert calm.returncode == 0 and total_line(calm).startswith("0 message(s)")
    assert summary(db_url)["reports"] == 1


def test_oversized_message_is_rejected_unread(dovecot, user, db_url, password_file):
    big = tc.case("google-heartbeat").message(
        extra_parts=(tc.MIMEText("x" * 5000, "plain"),), report_id="<big@reporter.example>"
    )
    small = tc.case("rfc-errata-6241").message()
    assert len(big) > 4096 > len(small)
    dovecot.append(user, [big, small])
    result = fetch(dovecot, user, db_url, "--max-size", "4096", password_file=password_file)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("imap:INBOX/1: rejected: ")
    assert "more than the limit of 4096" in lines[0]
    assert unseen(dovecot.flags(user)) == {1}
    assert summary(db_url)["reports"] == 1


# --------------------------------------------------------------------------------- moving, limits


def test_move_to_a_new_folder_with_a_non_ascii_name(dovecot, user, db_url, password_file):
    dovecot.append(user, [case.message() for case in tc.corpus()[:3]])
    result = fetch(dovecot, user, db_url, "--move-to", "Rapports/Traités", "--json", password_file=password_file)
    assert result.returncode == 0, result.stderr
    objects = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(o["uid"], o["action"], o["folder"]) for o in objects] == [
        (uid, "moved", "Rapports/Traités") for uid in (1, 2, 3)
    ]
    assert all(o["reports"][0]["outcome"] == "stored" for o in objects)
    assert "Rapports/Trait&AOk-s" in dovecot.folders(user)  # modified UTF-7 (RFC 3501 §5.1.3)
    assert dovecot.flags(user) == {}
    moved = dovecot.flags(user, "Rapports/Trait&AOk-s")
    assert len(moved) == 3 and not unseen(moved)


def test_limit_reads_the_oldest_first_and_leaves_the_rest(dovecot, user, db_url, password_file):
    dovecot.append(user, [case.message() for case in tc.corpus()[:5]])
    totals = []
    for _run in range(4):
        result = fetch(dovecot, user, db_url, "--limit", "2", "-q", password_file=password_file)
        assert result.returncode == 0, result.stderr
        totals.append(result.stdout.strip())
    assert totals == [
        "2 message(s): 2 stored, 0 duplicate, 0 conflicting, 0 rejected; 3 more left for the next run (--limit)",
        "2 message(s): 2 stored, 0 duplicate, 0 conflicting, 0 rejected; 1 more left for the next run (--limit)",
        "1 message(s): 1 stored, 0 duplicate, 0 conflicting, 0 rejected",
        "0 message(s): 0 stored, 0 duplicate, 0 conflicting, 0 rejected",
    ]


@pytest.mark.parametrize("capability,method", [
    (CAPABILITY_WITHOUT_MOVE, "COPY+UID EXPUNGE"),
    (CAPABILITY_WITHOUT_MOVE_OR_UIDPLUS, "COPY+EXPUNGE"),
    (None, "MOVE"),
])
def test_moving_falls_back_to_copy_and_expunge(capability, method, db_url):
    """In process, to see which way messages were moved: servers without MOVE (RFC 6851) get COPY."""
    with running_dovecot({"m": "pw-move"}, capability=capability) as server:
        server.append("m", [case.message() for case in tc.corpus()[:3]] + [NOT_A_REPORT])
        account = Account(host="127.0.0.1", port=server.tls_port, user="m", password="pw-move",
                          ca_file=str(server.ca_file), timeout=10)
        with ReportDB(db_url) as db:
            run = fetch_reports(db, account, Plan(move_to="Done", move_rejected="Bad"), Options())
        assert run.move_method == method
        assert count_outcomes(run.inputs) == {"stored": 3, "duplicate": 0, "conflict": 0, "rejected": 1}
        assert server.flags("m") == {}
        done = server.flags("m", "Done")
        assert len(done) == 3 and not unseen(done)
        assert list(server.flags("m", "Bad").values()) == [set()]


# -------------------------------------------------------------------------------------- failures


def test_wrong_password_is_one_line_exit_2(dovecot, user, db_url, tmp_path):
    wrong = tmp_path / "wrong"
    wrong.write_text("not the password\n")
    result = fetch(dovecot, user, db_url, password_file=wrong)
    assert_one_line_error(result, f"login as '{user}' failed", "AUTHENTICATIONFAILED")


def test_connection_refused_is_one_line_exit_2(dovecot, user, db_url, password_file):
    result = fetch(dovecot, user, db_url, password_file=password_file, port=free_port())
    assert_one_line_error(result, "connection refused")


def test_untrusted_certificate_is_one_line_exit_2(dovecot, user, db_url, password_file):
    result = fetch(dovecot, user, db_url, password_file=password_file, ca=False)
    assert_one_line_error(result, "TLS certificate not accepted")
    result = fetch(dovecot, user, db_url, password_file=password_file, ca=False, security="starttls")
    assert_one_line_error(result, "TLS certificate not accepted")


def test_tls_to_a_plain_port_is_one_line_exit_2(dovecot, user, db_url, password_file):
    result = fetch(dovecot, user, db_url, password_file=password_file, port=dovecot.port)
    assert_one_line_error(result, "TLS failed", "--security starttls")


def test_unusable_ca_file_is_one_line_exit_2(dovecot, user, db_url, password_file, tmp_path):
    not_pem = tmp_path / "not.pem"
    not_pem.write_text("hello\n")
    for path, words in ((tmp_path / "missing.pem", "no such file"), (not_pem, "not usable PEM")):
        result = fetch(dovecot, user, db_url, "--ca-file", str(path), password_file=password_file, ca=False)
        assert_one_line_error(result, "--ca-file", words)


def test_no_such_mailbox_is_one_line_exit_2(dovecot, user, db_url, password_file):
    result = fetch(dovecot, user, db_url, "--mailbox", "Nope", password_file=password_file)
    assert_one_line_error(result, "no mailbox 'Nope'")


@pytest.mark.parametrize("setup,words", [
    ("none", "MXSEC_IMAP_PASSWORD"),
    ("missing", "no such file"),
    ("empty", "first line is empty"),
])
def test_password_problems_are_one_line_exit_2(setup, words, dovecot, user, db_url, tmp_path):
    path = tmp_path / "pw"
    if setup == "empty":
        path.write_text("\nsecond line\n")
    result = fetch(dovecot, user, db_url, password_file=None if setup == "none" else path)
    assert_one_line_error(result, words)


def test_move_to_the_mailbox_read_is_refused(dovecot, user, db_url, password_file):
    result = fetch(dovecot, user, db_url, "--move-to", "INBOX", password_file=password_file)
    assert_one_line_error(result, "--move-to", "mailbox being read")


# ------------------------------------------------------------------------------------------ DKIM


def test_require_dkim_over_imap_with_keys_from_dns(dovecot, user, db_url, password_file, fake_world):
    domain = unique_domain("imap-dkim")
    key = RsaKey()
    fake_world.set_record(f"s1._domainkey.{domain}", "TXT", [key.record("s=tlsrpt; ")])
    signed = sign(tc.case("google-heartbeat").message(), key, domain=domain)
    unsigned = tc.case("rfc-errata-6241").message()
    dovecot.append(user, [signed, unsigned])
    host, port = fake_world.dns_address
    cmd_extra = ["--dkim", "--require-dkim", "--nameserver", f"{host}:{port}"]
    result = fetch(dovecot, user, db_url, *cmd_extra, password_file=password_file)
    assert result.returncode == 1
    assert total_line(result) == "2 message(s): 1 stored, 0 duplicate, 0 conflicting, 1 rejected"
    assert "imap:INBOX/2: rejected: DKIM none" in result.stderr
    assert unseen(dovecot.flags(user)) == {2}
    with ReportDB(db_url) as db:
        (row,) = db.reports(limit=10)
        assert row.dkim == "pass" and db.report(row.id).dkim_domains == [domain]


def test_integrity_conflicting_copy_is_reported_and_exits_3(dovecot, user, db_url, password_file):
    """Report integrity: a forged report stored first (an open POST, say), then the real one fetched over IMAP:
    both kept, a CONFLICT line on stderr, exit 3; the message is still handled (seen)."""
    from mxsec.storage.reportdb import Incoming
    from mxsec.tlsrpt.parse import parse_report
    from tests.unit.test_reports_store import forged_and_genuine

    forged, genuine = forged_and_genuine(rid="imap-conflict")
    with ReportDB(db_url) as db:
        (fake,) = db.ingest([Incoming(parse_report(forged), "https", "192.0.2.66")])
    dovecot.append(user, [tc.as_email(tc.as_gzip(genuine))])
    result = fetch(dovecot, user, db_url, password_file=password_file)
    assert result.returncode == 3, (result.stdout, result.stderr)
    assert total_line(result) == "1 message(s): 0 stored, 0 duplicate, 1 conflicting, 0 rejected"
    (line,) = [x for x in result.stderr.splitlines() if "CONFLICT" in x]
    assert f"(ids {fake.id}, " in line and f"the figures count id {fake.id}, not this copy" in line
    with ReportDB(db_url) as db:
        assert db.conflicts()[0] == 1 and len(db.copies(fake.id)) == 2
    assert unseen(dovecot.flags(user)) == set()
