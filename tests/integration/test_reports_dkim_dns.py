"""`mxsec reports ingest --require-dkim` with DKIM keys looked up for real over DNS (the session FakeWorld).

Signed report messages (.eml files) whose public keys the FakeWorld's DNS serves on 127.0.80.1; the command
runs as a subprocess with --nameserver pointing there. Nothing leaves 127.0.0.0/8.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from mxsec.storage.reportdb import ReportDB
from tests import tlsrpt_corpus as tc
from tests.dkim_signing import EdKey, RsaKey, sign
from tests.integration.conftest import unique_domain

from .daemonproc import MXSEC

pytestmark = pytest.mark.integration


def ingest(fake_world, db_url: str, *paths: Path, require: bool = True) -> subprocess.CompletedProcess:
    host, port = fake_world.dns_address
    cmd = [MXSEC, "reports", "ingest", "--db", db_url, "--nameserver", f"{host}:{port}",
           *(["--require-dkim"] if require else []), *map(str, paths)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)


def write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def stored_dkim(db_url: str) -> dict[str, tuple[str | None, list[str]]]:
    with ReportDB(db_url) as db:
        return {row.report_id: (row.dkim, db.report(row.id).dkim_domains) for row in db.reports(limit=100)}


def test_signed_reports_pass_with_keys_from_dns_and_unsigned_is_rejected(fake_world, tmp_path):
    rsa_domain, ed_domain = unique_domain("dkim-rsa"), unique_domain("dkim-ed")
    rsa_key, ed_key = RsaKey(), EdKey()
    fake_world.set_record(f"sel._domainkey.{rsa_domain}", "TXT", [rsa_key.record("s=tlsrpt; ")])
    fake_world.set_record(f"sel._domainkey.{ed_domain}", "TXT", [ed_key.record()])
    first, second = tc.case("rfc-errata-6241"), tc.case("google-heartbeat")
    signed_rsa = write(tmp_path, "rsa.eml", sign(first.message(), rsa_key, selector="sel", domain=rsa_domain))
    signed_ed = write(tmp_path, "ed.eml", sign(second.message(), ed_key, selector="sel", domain=ed_domain))
    unsigned = write(tmp_path, "unsigned.eml", tc.case("microsoft-no-timezone").message())
    db_url = f"sqlite:///{tmp_path}/r.sqlite3"

    result = ingest(fake_world, db_url, signed_rsa, signed_ed, unsigned)
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.strip() == (
        f"{unsigned}: rejected: DKIM none: rejected by --require-dkim (RFC 8460 §3 wants mailed reports signed)"
    )
    assert result.stdout.strip().splitlines()[-1] == "3 input(s): 2 stored, 0 duplicate, 0 conflicting, 1 rejected"
    assert stored_dkim(db_url) == {
        first.doc["report-id"]: ("pass", [rsa_domain]),
        second.doc["report-id"]: ("pass", [ed_domain]),
    }


def test_key_removed_from_dns_fails_and_servfail_is_temperror(fake_world, tmp_path):
    domain = unique_domain("dkim-gone")
    key = RsaKey()
    name = f"sel._domainkey.{domain}"
    message = write(tmp_path, "m.eml", sign(tc.case("google-heartbeat").message(), key, selector="sel", domain=domain))
    db_url = f"sqlite:///{tmp_path}/r.sqlite3"

    result = ingest(fake_world, db_url, message)  # no key published at all
    assert result.returncode == 1 and "rejected: DKIM fail" in result.stderr

    fake_world.set_record(name, "TXT", [key.record()])
    fake_world.set_failure(name, "servfail")
    try:
        result = ingest(fake_world, db_url, message)
    finally:
        fake_world.set_failure(name, None)
    assert result.returncode == 1 and "rejected: DKIM temperror" in result.stderr

    # without --require-dkim a failed verification is stored, with its verdict
    result = ingest(fake_world, db_url, write(tmp_path, "t.eml", message.read_bytes().replace(b"aggregate", b"altered")),
                    require=False)
    assert result.returncode == 0, result.stderr
    assert list(stored_dkim(db_url).values()) == [("fail", [])]

    result = ingest(fake_world, db_url, message)  # the key is back: it passes; the report is already stored
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "1 input(s): 0 stored, 1 duplicate, 0 conflicting, 0 rejected"
