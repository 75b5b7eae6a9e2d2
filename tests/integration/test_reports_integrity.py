"""Report integrity, through real parts: ``mxsec reports serve``'s app under uvicorn with TLS on 127.0.0.1, the
``mxsec`` CLI as a subprocess, DKIM keys served by the session FakeWorld's DNS, SQLite and PostgreSQL.

The attack this guards against (measured before the fix): anyone can POST a report to /tlsrpt; a forged
"Google Inc." report under the report-id the real one will carry (they are predictable) made the genuine,
DKIM-signed report arrive later as a ``conflict`` that was dropped, with exit 0, and the dashboard showed 0
failures instead of 4,000. Now every copy is kept, the authenticated one is counted, and the conflict is
reported by ``ingest`` (exit 3), ``summary`` (text and JSON) and the dashboard.
"""

from __future__ import annotations

import contextlib
import json
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trustme

from mxsec.reports.web.post_auth import PostAuth
from mxsec.storage.reportdb import ReportDB
from tests import tlsrpt_corpus as tc
from tests.dkim_signing import RsaKey, sign
from tests.integration.conftest import unique_domain
from tests.unit.test_reports_store import forged_and_genuine

from .daemonproc import MXSEC
from .servers import postgres_server, running_report_server  # noqa: F401  (session fixture used by name)

pytestmark = pytest.mark.integration

HOST = "127.0.0.1"
TOKEN = "integrity-token-0123456789abcdef"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The server's certificate, a CA for reporters' client certificates, and one client certificate from a
    CA the server does not know."""
    directory = tmp_path_factory.mktemp("pki")
    server_ca, client_ca, stranger_ca = trustme.CA(), trustme.CA(), trustme.CA()
    server = server_ca.issue_cert(HOST)
    files = {"cert": directory / "cert.pem", "key": directory / "key.pem", "client_ca": directory / "clients.pem"}
    server.cert_chain_pems[0].write_to_path(str(files["cert"]))
    server.private_key_pem.write_to_path(str(files["key"]))
    client_ca.cert_pem.write_to_path(str(files["client_ca"]))

    def context(client: Any = None) -> ssl.SSLContext:
        ctx = ssl.create_default_context()
        server_ca.configure_trust(ctx)
        if client is not None:
            client.configure_cert(ctx)
        return ctx

    return {
        **{name: str(path) for name, path in files.items()},
        "plain": context(),
        "reporter": context(client_ca.issue_cert("reporter.example", common_name="tlsrpt.reporter.example")),
        "stranger": context(stranger_ca.issue_cert("stranger.example")),
    }


@contextlib.contextmanager
def serving(db: ReportDB, pki: dict[str, Any], **kwargs: Any) -> Iterator[str]:
    with running_report_server(db, cert=pki["cert"], key=pki["key"], host=HOST, **kwargs) as port:
        yield f"https://{HOST}:{port}"


def post(base: str, context: ssl.SSLContext, body: bytes, **headers: str) -> httpx.Response:
    with httpx.Client(verify=context, timeout=10) as client:
        return client.post(f"{base}/tlsrpt", content=body,
                           headers={"content-type": "application/tlsrpt+gzip", **headers})


def mxsec(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([MXSEC, "reports", *args], capture_output=True, text=True, timeout=120, check=False)


def signed_mail(fake_world: Any, tmp_path: Path, report_json: bytes) -> tuple[Path, str]:
    """The genuine report in an RFC 8460 §5.3 message, DKIM-signed with a key the FakeWorld's DNS publishes."""
    domain = unique_domain("google-reporter")
    key = RsaKey()
    fake_world.set_record(f"sel._domainkey.{domain}", "TXT", [key.record()])
    message = tc.as_email(tc.as_gzip(report_json), submitter=domain)
    path = tmp_path / "genuine.eml"
    path.write_bytes(sign(message, key, selector="sel", domain=domain))
    return path, domain


def check_forged_post_then_dkim_mail(db: ReportDB, db_url: str, fake_world: Any, pki: dict[str, Any],
                                     tmp_path: Path) -> None:
    forged, genuine = forged_and_genuine(rid="2024-02-17T00:00:00Z_example.com")
    with serving(db, pki) as base:
        answer = post(base, pki["plain"], tc.as_gzip(forged))
        assert answer.status_code == 201, answer.text
        assert answer.json() == {"outcome": "stored", "id": answer.json()["id"], "auth": "none", "counted": True}
    forged_id = answer.json()["id"]

    mail, domain = signed_mail(fake_world, tmp_path, genuine)
    host, port = fake_world.dns_address
    ingest = mxsec("ingest", "--db", db_url, "--nameserver", f"{host}:{port}", "--require-dkim", str(mail))
    assert ingest.returncode == 3, (ingest.stdout, ingest.stderr)
    assert "Traceback" not in ingest.stderr
    assert ingest.stdout.strip().splitlines()[-1] == "1 input(s): 0 stored, 0 duplicate, 1 conflicting, 0 rejected"
    (line,) = [x for x in ingest.stderr.splitlines() if "CONFLICT" in x]
    assert f"is stored in 2 different copies (ids {forged_id}, " in line and "(auth dkim)" in line
    assert "the figures now count this copy" in line

    summary = mxsec("summary", "--db", db_url, "--json")
    assert summary.returncode == 0, summary.stderr
    data = json.loads(summary.stdout)
    assert (data["reports"], data["successful_sessions"], data["failed_sessions"]) == (1, 6000, 4000)
    assert data["by_result_type"] == {"certificate-expired": 4000}
    assert data["by_organization"]["Google Inc."]["failed_sessions"] == 4000
    assert data["conflicts"]["count"] == 1
    (group,) = data["conflicts"]["reports"]
    assert (group["organization"], group["report_id"]) == ("Google Inc.", "2024-02-17T00:00:00Z_example.com")
    assert [(c["auth"], c["counted"], c["source"], c["failed_sessions"]) for c in group["copies"]] == [
        ("dkim", True, "message", 4000), ("none", False, "https", 0)]
    assert group["copies"][1]["source_name"] == HOST and group["copies"][1]["id"] == forged_id

    text = mxsec("summary", "--db", db_url)
    assert text.returncode == 0 and "CONFLICTS: 1 report(s)" in text.stdout
    assert "failed sessions 4,000" in text.stdout
    cron = mxsec("summary", "--db", db_url, "-q", "--fail-on-conflicts")
    assert cron.returncode == 3 and "CONFLICTS: 1 report(s)" in cron.stdout
    assert cron.stderr.strip() == "mxsec: 1 report(s) stored in conflicting copies"
    both = mxsec("summary", "--db", db_url, "-q", "--fail-on-conflicts", "--fail-on-failures", "--threshold", "5000")
    assert both.returncode == 3  # 4,000 failures are under the threshold: only the conflict trips
    quiet = mxsec("summary", "--db", db_url, "-q", "--fail-on-conflicts", "--since", "2030-01-01")
    assert (quiet.returncode, quiet.stdout, quiet.stderr) == (0, "", "")  # no conflict in that range

    # Ingesting the genuine mail again: nothing new, but the report is still in conflict: said again, exit 3.
    again = mxsec("ingest", "--db", db_url, "--nameserver", f"{host}:{port}", str(mail))
    assert again.returncode == 3 and "a copy identical to this one" in again.stderr

    with serving(db, pki) as base, httpx.Client(verify=pki["plain"], timeout=10) as client:
        page = client.get(f"{base}/").text
        assert 'id="card-failed"><span class="num" title="4,000">4,000<' in page
        assert 'id="conflicts"' in page and "1 report received in conflicting copies" in page
        detail = client.get(f"{base}/report/{forged_id}").text
        assert "This copy is not counted" in detail and "DKIM pass" in detail
        genuine_page = client.get(f"{base}/report/{group['copies'][0]['id']}").text
        assert domain in genuine_page  # the DKIM signing domain, on the counted copy's page


def test_integrity_forged_post_then_dkim_signed_report_sqlite(fake_world, pki, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/reports.sqlite3"
    with ReportDB(url) as db:
        check_forged_post_then_dkim_mail(db, url, fake_world, pki, tmp_path)


def test_integrity_forged_post_then_dkim_signed_report_postgresql(fake_world, pki, tmp_path: Path,
                                                                  postgres_server) -> None:  # noqa: F811
    url = postgres_server.create_database("mxsec_integrity")
    with ReportDB(url) as db:
        check_forged_post_then_dkim_mail(db, url, fake_world, pki, tmp_path)


def test_integrity_post_auth_token_and_client_certificate(pki, tmp_path: Path) -> None:
    """Over real TLS: an open POST is recorded auth none; a client certificate from the configured CA makes a
    copy ``mtls`` (counted over the earlier open one); a certificate from another CA fails the handshake
    and the server keeps serving; a wrong token is 401, a right one ``token``; the dashboard needs no
    certificate."""
    forged, genuine = forged_and_genuine(rid="mtls")
    auth = PostAuth.build(tokens=[TOKEN], client_ca=pki["client_ca"])
    with ReportDB(f"sqlite:///{tmp_path}/r.sqlite3") as db, serving(db, pki, post_auth=auth) as base:
        fake = post(base, pki["plain"], tc.as_gzip(forged))
        assert fake.status_code == 201 and fake.json()["auth"] == "none"
        real = post(base, pki["reporter"], tc.as_gzip(genuine))
        assert real.status_code == 200, real.text
        assert real.json() == {"outcome": "conflict", "id": real.json()["id"], "auth": "mtls", "counted": True,
                               "other_copies": [fake.json()["id"]]}
        assert db.report(real.json()["id"]).row.auth_name.startswith("CN=tlsrpt.reporter.example")
        assert db.totals().failed_sessions == 4000

        with pytest.raises(httpx.TransportError):
            post(base, pki["stranger"], tc.as_gzip(genuine.replace(b"6000", b"6001")))
        wrong = post(base, pki["plain"], tc.as_gzip(genuine), authorization="Bearer not-" + TOKEN)
        assert wrong.status_code == 401
        third = post(base, pki["plain"], tc.as_gzip(genuine.replace(b"6000", b"6002")),
                     authorization="Bearer " + TOKEN)
        assert third.status_code == 200 and third.json()["auth"] == "token" and not third.json()["counted"]
        assert len(db.copies(real.json()["id"])) == 3  # the stranger's copy never arrived
        with httpx.Client(verify=pki["plain"], timeout=10) as client:
            assert client.get(f"{base}/").status_code == 200

    required = PostAuth.build(tokens=[TOKEN], client_ca=pki["client_ca"], require=True)
    with ReportDB(f"sqlite:///{tmp_path}/required.sqlite3") as db, serving(db, pki, post_auth=required) as base:
        refused = post(base, pki["plain"], tc.as_gzip(forged))
        assert refused.status_code == 401 and refused.json()["error"] == "unauthorized"
        assert post(base, pki["reporter"], tc.as_gzip(genuine)).status_code == 201
        assert post(base, pki["plain"], tc.as_gzip(forged), authorization="Bearer " + TOKEN).status_code == 200
        assert db.totals().failed_sessions == 4000


def test_serve_refuses_a_client_ca_without_tls(tmp_path: Path, pki) -> None:
    from mxsec.errors import ConfigError
    from mxsec.reports.web.server import build_server

    with ReportDB(f"sqlite:///{tmp_path}/r.sqlite3") as db, pytest.raises(ConfigError, match="needs TLS"):
        build_server(db, post_auth=PostAuth.build(client_ca=pki["client_ca"]))


def test_serve_config_with_require_auth_and_nothing_else_is_one_line(tmp_path: Path) -> None:
    config = tmp_path / "mxsec.toml"
    config.write_text("[reports]\npost_require_auth = true\n")
    result = mxsec("serve", "--db", f"sqlite:///{tmp_path}/r.sqlite3", "--listen", f"{HOST}:0",
                   "--config", str(config))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "reports.post_require_auth needs" in result.stderr and len(result.stderr.strip().splitlines()) == 1
