"""``mxsec tlsrpt follow-log`` as a process: a Postfix 3.7 log in, exact counts out, with TLSRPT records from
real DNS (a private FakeWorld), the policy the daemon recorded, resumption without double counting, rotation
by rename and by truncation, and the sessions that carried mxsec's own reports left out (RFC 8460 §3)."""

from __future__ import annotations

import os
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest

from mxsec.storage.senderdb import SenderDB
from mxsec.sts.policy import parse_policy
from mxsec.tlsrpt.served import served_from_verdict
from mxsec.verdict import Verdict

from .conftest import running_world
from .daemonproc import MXSEC

pytestmark = pytest.mark.integration

STAMP = datetime.now(UTC).strftime("%b %e %H:%M:%S")
DAY = datetime.now(UTC).date()


def _qid(tag: str) -> str:
    """A Postfix queue id (hexadecimal) for a short test tag."""
    return "4B" + tag.encode().hex().upper().ljust(8, "0")


def ok(pid: int, qid: str, domain: str, host: str = "mx1", level: str = "Verified") -> str:
    qid = _qid(qid)
    return (f"{STAMP} mta postfix/smtp[{pid}]: {level} TLS connection established to {host}.{domain}[192.0.2.{pid % 200}]:25: "
            f"TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits)\n"
            f"{STAMP} mta postfix/smtp[{pid}]: {qid}: to=<u@{domain}>, relay={host}.{domain}[192.0.2.{pid % 200}]:25, "
            f"delay=0.1, delays=0/0/0.05/0.05, dsn=2.0.0, status=sent (250 2.0.0 Ok)\n")


def mismatch(pid: int, qid: str, domain: str) -> str:
    qid = _qid(qid)
    return (f"{STAMP} mta postfix/smtp[{pid}]: server certificate verification failed for mx1.{domain}"
            f"[192.0.2.{pid % 200}]:25: num=62:hostname mismatch\n"
            f"{STAMP} mta postfix/smtp[{pid}]: {qid}: to=<u@{domain}>, relay=mx1.{domain}[192.0.2.{pid % 200}]:25, "
            f"delay=0.1, delays=0/0/0.05/0.05, dsn=4.7.5, status=deferred (Server certificate not verified)\n")


def follow(world, db_url: str, log: Path, *extra: str) -> subprocess.CompletedProcess:
    host, port = world.dns_address
    return subprocess.run([MXSEC, "tlsrpt", "follow-log", str(log), "--mta", "postfix", "--db", db_url,
                           "--nameserver", f"{host}:{port}", "--once", *extra],
                          capture_output=True, text=True, timeout=120, check=False)


def totals(db_url: str) -> dict[str, tuple[int, int]]:
    with SenderDB(db_url) as db:
        return db.day_totals(DAY)


def test_rpt_i_13_ec_34_postfix_log_counts_resume_rotation_and_report_exclusion(tmp_path):
    db_url = f"sqlite:///{tmp_path}/tlsrpt.sqlite3"
    log = tmp_path / "maillog"
    with running_world() as world:
        for domain in ("sts.test", "plain.test"):
            world.set_record(f"_smtp._tls.{domain}", "TXT", [f"v=TLSRPTv1; rua=mailto:r@{domain}"])
        world.set_record("_smtp._tls.two.test", "TXT", ["v=TLSRPTv1; rua=mailto:a@two.test",
                                                        "v=TLSRPTv1; rua=mailto:b@two.test"])
        policy = parse_policy("version: STSv1\nmode: enforce\nmx: mx1.sts.test\nmax_age: 86400\n")
        served = served_from_verdict(Verdict("sts.test", policy=policy))
        with SenderDB(db_url) as db:
            db.add_served([("sts.test", served.fingerprint(), served.to_json(), 0)])
            db.remember_message("<report-1@sender.test>")
        log.write_text(
            ok(101, "A1", "sts.test") + mismatch(102, "A2", "sts.test") + ok(103, "A3", "plain.test")
            + ok(104, "A4", "nope.test")  # no _smtp._tls record: not counted
            + ok(105, "A5", "two.test")  # two records: RFC 8460 §3 says none applies
            + f"{STAMP} mta postfix/cleanup[9]: {_qid('A6')}: message-id=<report-1@sender.test>\n" + ok(106, "A6", "plain.test")
        )
        first = follow(world, db_url, log, "--from-start")
        assert first.returncode == 0, first.stderr
        assert "Traceback" not in first.stderr, first.stderr
        assert totals(db_url) == {"sts.test": (1, 1), "plain.test": (1, 0)}
        with SenderDB(db_url) as db:
            (sts,) = db.totals(DAY, "sts.test")
            assert sts.policy.type.value == "sts" and "mode: enforce" in sts.policy.strings
            ((failure, n),) = sts.failures
            assert (failure.result_type, failure.receiving_mx_hostname, n) == (
                "certificate-host-mismatch", "mx1.sts.test", 1)
            (plain,) = db.totals(DAY, "plain.test")
            assert plain.policy.type.value == "no-policy-found"

        # again: nothing new, nothing counted twice
        assert follow(world, db_url, log).returncode == 0
        assert totals(db_url) == {"sts.test": (1, 1), "plain.test": (1, 0)}

        # more lines, then rotation by rename while the follower is stopped
        with log.open("a") as fh:
            fh.write(ok(107, "B1", "plain.test"))
        os.rename(log, tmp_path / "maillog.1")
        log.write_text(ok(108, "B2", "plain.test") + ok(109, "B3", "sts.test"))
        assert follow(world, db_url, log).returncode == 0
        assert totals(db_url) == {"sts.test": (2, 1), "plain.test": (3, 0)}

        # rotation by truncation (copytruncate)
        log.write_text(ok(110, "C1", "plain.test"))
        assert follow(world, db_url, log).returncode == 0
        assert totals(db_url) == {"sts.test": (2, 1), "plain.test": (4, 0)}


def test_hostile_log_lines_are_skipped_and_bad_input_is_one_line(tmp_path):
    db_url = f"sqlite:///{tmp_path}/tlsrpt.sqlite3"
    log = tmp_path / "maillog"
    with running_world() as world:
        world.set_record("_smtp._tls.plain.test", "TXT", ["v=TLSRPTv1; rua=mailto:r@plain.test"])
        log.write_bytes(b"\xff\xfe garbage\n" + b"x" * 100_000 + b"\n\x00\x1b[31m\n"
                        + ok(101, "A1", "plain.test").encode())
        result = follow(world, db_url, log, "--from-start")
        assert result.returncode == 0, result.stderr
        assert totals(db_url) == {"plain.test": (1, 0)}
        missing = follow(world, db_url, tmp_path / "nope.log")
        assert missing.returncode == 2 and missing.stderr.strip().endswith("no such log file")
        bad_ip = follow(world, db_url, log, "--sending-ip", "not-an-ip")
        assert bad_ip.returncode == 2 and "--sending-ip" in bad_ip.stderr and "Traceback" not in bad_ip.stderr
