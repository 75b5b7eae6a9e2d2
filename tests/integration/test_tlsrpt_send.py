"""``mxsec tlsrpt send`` for real: the ``rua`` records come from DNS (a private FakeWorld on 127.0.80.x), mailed
reports go to an SMTP relay (aiosmtpd on 127.0.0.1), HTTPS reports to ``mxsec reports serve`` over TLS; the
mailed ones are then read by our own receiving side (``mxsec reports ingest --require-dkim``), which must see
the DKIM signature pass and exactly the sessions that were counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
import trustme
from aiosmtpd.controller import Controller

from mxsec.net.dns import DnsClient
from mxsec.net.guard import AddressGuard
from mxsec.net.submit import SmtpRelay
from mxsec.sender.send import DkimSettings, Sender, SendSettings
from mxsec.storage.reportdb import ReportDB
from mxsec.storage.senderdb import SenderDB
from mxsec.tlsrpt.dkim_sign import generate_key, key_record, load_signing_key
from mxsec.tlsrpt.schedule import RetryPolicy
from mxsec.tlsrpt.session import Failure, Policy, PolicyOutcome, PolicyType, Session, Tally

from .conftest import dns_settings_for, running_world
from .daemonproc import MXSEC
from .servers import free_port, running_report_server

pytestmark = pytest.mark.integration

HOST = "127.0.0.1"
SUBMITTER = "sender.test"


class Inbox:
    """An SMTP relay that keeps every message it accepts (or answers 451 while ``busy``)."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, list[str], bytes]] = []
        self.busy = False

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 - aiosmtpd's hook name
        if self.busy:
            return "451 4.3.0 try again later"
        self.messages.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.original_content))
        return "250 2.0.0 queued"


@contextlib.contextmanager
def smtp_relay() -> Iterator[tuple[Inbox, int]]:
    inbox = Inbox()
    port = free_port()
    controller = Controller(inbox, hostname=HOST, port=port)
    controller.start()
    try:
        yield inbox, port
    finally:
        controller.stop()


@contextlib.contextmanager
def report_server(db_url: str, cert: str, key: str) -> Iterator[int]:
    with ReportDB(db_url) as db, running_report_server(db, cert=cert, key=key) as port:
        yield port


def sts(domain: str) -> Policy:
    return Policy(PolicyType.STS, domain, ("version: STSv1", "mode: enforce", f"mx: mx.{domain}", "max_age: 86400"),
                  (f"mx.{domain}",))


def count_day(db: SenderDB, day: date, domains: list[str]) -> dict[str, tuple[int, int]]:
    tally = Tally()
    expected = {}
    for n, domain in enumerate(domains, start=1):
        bad = Failure("certificate-expired", "192.0.2.7", f"mx.{domain}", None, "192.0.2.25", None, "expired")
        for _ in range(10 * n):
            tally.add(Session(domain, (PolicyOutcome(sts(domain), False),)), day)
        for _ in range(n):
            tally.add(Session(domain, (PolicyOutcome(sts(domain), True, (bad,)),)), day)
        expected[domain] = (10 * n, n)
    db.add(tally)
    return expected


@pytest.fixture
def pki(tmp_path: Path) -> dict[str, str]:
    ca = trustme.CA()
    cert = ca.issue_cert("reports.rcv.test", HOST)
    paths = {"cert": tmp_path / "cert.pem", "key": tmp_path / "key.pem", "ca": tmp_path / "ca.pem"}
    cert.cert_chain_pems[0].write_to_path(str(paths["cert"]))
    cert.private_key_pem.write_to_path(str(paths["key"]))
    ca.cert_pem.write_to_path(str(paths["ca"]))
    return {k: str(v) for k, v in paths.items()}


def test_rpt_i_9_24_25_reports_reach_every_rua_and_our_receiver_sees_dkim_pass_and_exact_counts(tmp_path, pki):
    yesterday = datetime.now(UTC).date() - timedelta(days=1)
    domains = ["spaced.test", "ext-first.test", "odd-schemes.test", "no-record.test", "wrong-path.test"]
    key = load_signing_key(generate_key("ed25519"))
    with running_world() as world, smtp_relay() as (inbox, smtp_port), \
            report_server(f"sqlite:///{tmp_path}/posted.sqlite3", pki["cert"], pki["key"]) as https_port:
        world.set_record("reports.rcv.test", "A", [HOST])
        world.set_record(f"tlsrpt._domainkey.{SUBMITTER}", "TXT", [key_record(key)])
        # RFC 8460 §3 grammar the reference sender rejects: spaces around the comma, an extension before rua,
        # percent-encoding, unsupported schemes next to usable ones.
        world.set_record("_smtp._tls.spaced.test", "TXT",
                         [f"v=TLSRPTv1; rua=mailto:tlsrpt@rcv.test , https://reports.rcv.test:{https_port}/tlsrpt"])
        world.set_record("_smtp._tls.ext-first.test", "TXT", ["v=TLSRPTv1; ext=yes; rua=mailto:a%2Bb@rcv.test"])
        # RPT-I-25: only a 2xx answer is a delivery; a 404 is retried later
        world.set_record("_smtp._tls.wrong-path.test", "TXT", [f"v=TLSRPTv1; rua=https://reports.rcv.test:{https_port}/nope"])
        world.set_record("_smtp._tls.odd-schemes.test", "TXT",
                         ["v=TLSRPTv1; rua=ftp://rcv.test/x,mailto:odd@rcv.test"])
        with SenderDB(f"sqlite:///{tmp_path}/sender.sqlite3") as db:
            expected = count_day(db, yesterday, domains)
            settings = SendSettings(
                organization_name="Sender Test GmbH", contact_info=f"tlsrpt@{SUBMITTER}",
                relay=SmtpRelay(HOST, smtp_port, starttls="none", timeout=10),
                dkim=DkimSettings(key, "tlsrpt", SUBMITTER), max_delay=0, ca_file=pki["ca"], https_timeout=10)
            sender = Sender(db, DnsClient(dns_settings_for(world)), AddressGuard(["127.0.0.0/8"]), settings)
            lines = asyncio.run(sender.run_once())
            by_destination = {(line.domain, line.destination): line for line in lines}
            assert by_destination[("spaced.test", "mailto:tlsrpt@rcv.test")].state == "delivered"
            https_line = by_destination[("spaced.test", f"https://reports.rcv.test:{https_port}/tlsrpt")]
            assert https_line.state == "delivered", https_line.detail
            assert by_destination[("ext-first.test", "mailto:a%2Bb@rcv.test")].state == "delivered"
            assert by_destination[("odd-schemes.test", "ftp://rcv.test/x")].state == "skipped"
            assert by_destination[("odd-schemes.test", "mailto:odd@rcv.test")].state == "delivered"
            assert by_destination[("no-record.test", "(none)")].state == "skipped"
            wrong = by_destination[("wrong-path.test", f"https://reports.rcv.test:{https_port}/nope")]
            assert wrong.state == "pending" and "HTTP 404" in wrong.detail
            # a second pass sends nothing again
            assert asyncio.run(sender.run_once()) == []
            assert len(inbox.messages) == 3
            assert sorted(rcpt for _, rcpts, _ in inbox.messages for rcpt in rcpts) == [
                "a+b@rcv.test", "odd@rcv.test", "tlsrpt@rcv.test"]
            # RPT-I-13: the Message-IDs of the report messages are remembered for the log followers
            for _, _, data in inbox.messages:
                msgid = next(line for line in data.decode().splitlines() if line.lower().startswith("message-id:"))
                assert db.is_report_message(msgid.split(":", 1)[1].strip())

        maildir = tmp_path / "Maildir"
        for sub in ("cur", "new", "tmp"):
            (maildir / sub).mkdir(parents=True)
        for n, (_, _, data) in enumerate(inbox.messages):
            (maildir / "new" / f"{n}.eml").write_bytes(data)
        host, port = world.dns_address
        received = f"sqlite:///{tmp_path}/received.sqlite3"
        result = subprocess.run([MXSEC, "reports", "ingest", "--db", received, "--nameserver", f"{host}:{port}",
                                 "--require-dkim", "--json", str(maildir)],
                                capture_output=True, text=True, timeout=120, check=False)
        assert result.returncode == 0, result.stdout + result.stderr
    with ReportDB(received) as rdb:
        rows = rdb.reports(limit=10)
        assert {r.dkim for r in rows} == {"pass"}
        summary = rdb.summary()
    assert summary["by_policy_domain"] == {
        d: {"reports": 1, "successful_sessions": expected[d][0], "failed_sessions": expected[d][1]}
        for d in ("spaced.test", "ext-first.test", "odd-schemes.test")}
    assert summary["by_result_type"] == {"certificate-expired": sum(expected[d][1] for d in
                                                                    ("spaced.test", "ext-first.test", "odd-schemes.test"))}
    with ReportDB(f"sqlite:///{tmp_path}/posted.sqlite3") as posted:
        assert posted.summary()["by_policy_domain"] == {
            "spaced.test": {"reports": 1, "successful_sessions": expected["spaced.test"][0],
                            "failed_sessions": expected["spaced.test"][1]}}


def test_rpt_i_10_29_failed_deliveries_back_off_and_give_up_after_24_hours(tmp_path):
    yesterday = date(2026, 11, 30)
    now = {"t": datetime(2026, 12, 1, 0, 0, tzinfo=UTC).timestamp()}
    with running_world() as world, smtp_relay() as (inbox, smtp_port):
        world.set_record("_smtp._tls.slow.test", "TXT", ["v=TLSRPTv1; rua=mailto:r@slow.test"])
        world.set_record("_smtp._tls.fine.test", "TXT", ["v=TLSRPTv1; rua=mailto:r@fine.test"])
        with SenderDB(f"sqlite:///{tmp_path}/sender.sqlite3") as db:
            count_day(db, yesterday, ["slow.test"])
            settings = SendSettings(
                organization_name="O", contact_info=f"tlsrpt@{SUBMITTER}",
                relay=SmtpRelay(HOST, smtp_port, starttls="none", timeout=10), max_delay=0,
                retry=RetryPolicy(first_retry=300, max_retry=4 * 3600, give_up_after=86400))
            sender = Sender(db, DnsClient(dns_settings_for(world)), AddressGuard(["127.0.0.0/8"]), settings,
                            clock=lambda: now["t"])
            inbox.busy = True
            (line,) = asyncio.run(sender.run_once())
            assert line.state == "pending" and line.attempts == 1 and "451" in line.detail
            # nothing is due before the backoff has passed
            now["t"] += 299
            assert asyncio.run(sender.run_once()) == []
            waits = []
            last = now["t"] - 299
            for _ in range(30):
                (delivery,) = db.deliveries()
                if delivery.state != "pending":
                    break
                waits.append(delivery.next_attempt_ts - last)
                now["t"] = last = delivery.next_attempt_ts
                asyncio.run(sender.run_once())
            (delivery,) = db.deliveries()
            assert delivery.state == "failed"
            assert waits[:4] == [300, 600, 1200, 2400]
            assert delivery.last_attempt_ts - delivery.first_attempt_ts == 86400
            # a day missed while the sender was down is still reported, and one failing destination does not
            # hold up another
            count_day(db, date(2026, 11, 29), ["fine.test"])
            inbox.busy = False
            lines = asyncio.run(sender.run_once())
            assert [(line.domain, line.state) for line in lines] == [("fine.test", "delivered")]
            assert len(inbox.messages) == 1


def test_send_cli_dry_run_writes_messages_and_post_bodies(tmp_path):
    yesterday = datetime.now(UTC).date() - timedelta(days=1)
    key_file = tmp_path / "dkim.pem"
    key_file.write_bytes(generate_key("rsa", 2048))
    db_url = f"sqlite:///{tmp_path}/sender.sqlite3"
    with SenderDB(db_url) as db:
        count_day(db, yesterday, ["dry.test"])
    out = tmp_path / "out"
    with running_world() as world:
        world.set_record("_smtp._tls.dry.test", "TXT",
                         ["v=TLSRPTv1; rua=mailto:r@dry.test,https://reports.dry.test/tlsrpt"])
        host, port = world.dns_address
        result = subprocess.run(
            [MXSEC, "tlsrpt", "send", "--db", db_url, "--organization-name", "Dry Run Ltd", "--contact-info",
             f"tlsrpt@{SUBMITTER}", "--nameserver", f"{host}:{port}", "--dkim-key", str(key_file),
             "--dkim-selector", "tlsrpt", "--dry-run", "--out", str(out), "--json"],
            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert {(line["destination"], line["state"]) for line in lines} == {
        ("mailto:r@dry.test", "dry-run"), ("https://reports.dry.test/tlsrpt", "dry-run")}
    names = sorted(p.name for p in out.iterdir())
    assert any(n.endswith(".eml") for n in names) and any(n.endswith(".json.gz") for n in names)
    eml = next(p for p in out.iterdir() if p.name.endswith(".eml")).read_bytes()
    assert eml.startswith(b"DKIM-Signature:") and b"TLS-Required: No" in eml
    # nothing was marked delivered
    with SenderDB(db_url) as db:
        assert {d.state for d in db.deliveries()} == {"pending"}


def test_unfinished_day_is_sent_now_once_without_state(tmp_path):
    today = datetime.now(UTC).date()
    db_url = f"sqlite:///{tmp_path}/sender.sqlite3"
    with SenderDB(db_url) as db:
        expected = count_day(db, today, ["trial.test"])
    with running_world() as world, smtp_relay() as (inbox, smtp_port):
        world.set_record("_smtp._tls.trial.test", "TXT", ["v=TLSRPTv1; rua=mailto:r@trial.test"])
        host, port = world.dns_address
        args = [MXSEC, "tlsrpt", "send", "--db", db_url, "--organization-name", "Trial", "--contact-info",
                f"tlsrpt@{SUBMITTER}", "--nameserver", f"{host}:{port}", "--smtp", f"{HOST}:{smtp_port}",
                "--smtp-starttls", "none", "--day", "today", "--unfinished", "--json"]
        result = subprocess.run(args, capture_output=True, text=True, timeout=120, check=False)
        assert result.returncode == 0, result.stderr
        (line,) = [json.loads(x) for x in result.stdout.splitlines()]
        assert (line["destination"], line["state"]) == ("mailto:r@trial.test", "delivered")
        refused = subprocess.run(args[:-2] + ["--json"], capture_output=True, text=True, timeout=60,
                                 check=False)
        assert refused.returncode == 2 and "is not over yet" in refused.stderr
    (message,) = inbox.messages
    from mxsec.tlsrpt.message import extract_reports

    (attachment,) = extract_reports(message[2]).attachments
    report = attachment.parse()
    assert (report.successful, report.failed) == expected["trial.test"]
    with SenderDB(db_url) as db:
        assert db.reports() == [] and db.deliveries() == []


def test_one_reporter_per_database_a_second_send_does_nothing(tmp_path):
    """Two `mxsec tlsrpt send` on one database (two hosts of a fleet): the second does nothing while the
    first holds the sending lease, and takes over once it is gone."""
    yesterday = datetime.now(UTC).date() - timedelta(days=1)
    db_url = f"sqlite:///{tmp_path}/sender.sqlite3"
    with SenderDB(db_url) as db:
        count_day(db, yesterday, ["lease.test"])
    with running_world() as world, smtp_relay() as (inbox, smtp_port):
        world.set_record("_smtp._tls.lease.test", "TXT", ["v=TLSRPTv1; rua=mailto:r@lease.test"])
        host, port = world.dns_address
        args = [MXSEC, "tlsrpt", "send", "--db", db_url, "--organization-name", "Lease", "--contact-info",
                f"tlsrpt@{SUBMITTER}", "--nameserver", f"{host}:{port}", "--smtp", f"{HOST}:{smtp_port}",
                "--smtp-starttls", "none", "--max-delay", "0", "--json"]
        with SenderDB(db_url) as reporter:
            assert reporter.take_sending_lease()
            second = subprocess.run(args, capture_output=True, text=True, timeout=120, check=False)
            assert second.returncode == 0 and second.stdout == ""
            assert "another `mxsec tlsrpt send` is sending from this database" in second.stderr
            assert inbox.messages == [] and reporter.deliveries() == []
        taken_over = subprocess.run(args, capture_output=True, text=True, timeout=120, check=False)
        assert taken_over.returncode == 0, taken_over.stderr
        assert "delivered" in [json.loads(x)["state"] for x in taken_over.stdout.splitlines()]
        assert len(inbox.messages) == 1
