"""Lab MX servers (mxsec.lab.mx) on 127.0.91.x port 25, driven with smtplib. Needs root (port 25)."""

from __future__ import annotations

import json
import os
import smtplib
import ssl
import time
from pathlib import Path

import pytest

pytest.importorskip("aiosmtpd")

from mxsec.testing.pki import TestCA
from mxsec.lab.mx import (
    MxFarm,
    MxFarmProcess,
    MxSpec,
    load_ca,
    read_received,
    read_sessions,
    save_ca,
    spki_sha256,
)

pytestmark = [
    pytest.mark.lab,
    pytest.mark.skipif(os.geteuid() != 0, reason="binds port 25: needs root"),
]

SPECS = [
    MxSpec("mx1.mxtest.test", "127.0.91.1", "valid"),
    MxSpec("mx2.mxtest.test", "127.0.91.2", "no-starttls"),
    MxSpec("mx3.mxtest.test", "127.0.91.3", "expired"),
    MxSpec("mx4.mxtest.test", "127.0.91.4", "wrong-name"),
    MxSpec("mx5.mxtest.test", "127.0.91.5", "untrusted"),
]


@pytest.fixture(scope="module")
def ca() -> TestCA:
    return TestCA("mxsec lab test CA")


@pytest.fixture(scope="module")
def farm(ca: TestCA, tmp_path_factory: pytest.TempPathFactory):
    with MxFarm(SPECS, ca, tmp_path_factory.mktemp("mail")) as running:
        yield running


def _client(address: str, host_name: str) -> smtplib.SMTP:
    client = smtplib.SMTP(timeout=5)
    client.connect(address, 25)
    client._host = host_name  # smtplib sends this as SNI and checks the certificate against it
    return client


def _context(ca: TestCA) -> ssl.SSLContext:
    return ssl.create_default_context(cadata=ca.cert_pem.decode())


def _wait_sessions(farm: MxFarm, name: str, count: int) -> list:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        sessions = farm.sessions(name)
        if len(sessions) >= count:
            return sessions
        time.sleep(0.05)
    return farm.sessions(name)


def test_valid_mx_offers_starttls_and_stores_message_with_tls_facts(farm: MxFarm, ca: TestCA) -> None:
    before = len(farm.received("mx1.mxtest.test"))
    client = _client("127.0.91.1", "mx1.mxtest.test")
    try:
        client.ehlo("client.example")
        assert client.has_extn("starttls")
        client.starttls(context=_context(ca))
        client.ehlo("client.example")
        client.sendmail("alice@sender.test", ["bob@mxtest.test", "carol@mxtest.test"],
                        "Subject: hello\r\nX-Test: 1\r\n\r\nbody\r\n")
    finally:
        client.quit()
    messages = farm.received("mx1.mxtest.test")
    assert len(messages) == before + 1
    message = messages[-1]
    assert message.tls is True
    assert message.tls_version in ("TLSv1.2", "TLSv1.3")
    assert message.cipher
    assert message.sni == "mx1.mxtest.test"
    assert message.mail_from == "alice@sender.test"
    assert message.rcpt_tos == ("bob@mxtest.test", "carol@mxtest.test")
    assert message.peer and message.peer.startswith("127.")
    assert message.local == "127.0.91.1"
    assert message.helo == "client.example"
    assert message.headers["subject"] == "hello"
    assert "body" in message.data
    # Another process can read the same facts from the files.
    assert read_received(farm.mail_dir, "mx1.mxtest.test")[-1] == message
    assert Path(message.path).parent.name == "new"
    session = _wait_sessions(farm, "mx1.mxtest.test", 1)[-1]
    assert session.starttls and session.tls and session.sni == "mx1.mxtest.test" and session.messages == 1


def test_no_starttls_mx_does_not_offer_it_and_stores_plaintext(farm: MxFarm) -> None:
    with smtplib.SMTP("127.0.91.2", 25, timeout=5) as client:
        client.ehlo("client.example")
        assert not client.has_extn("starttls")
        code, _ = client.docmd("STARTTLS")
        assert code in (454, 500, 502)  # aiosmtpd: "454 TLS not available"
        client.sendmail("alice@sender.test", ["bob@mxtest.test"], "Subject: plain\r\n\r\nx\r\n")
    message = farm.received("mx2.mxtest.test")[-1]
    assert message.tls is False and message.tls_version is None and message.sni is None
    assert farm.cert_pem("mx2.mxtest.test") is None


@pytest.mark.parametrize(
    ("address", "name", "error"),
    [
        ("127.0.91.3", "mx3.mxtest.test", "certificate has expired"),
        ("127.0.91.4", "mx4.mxtest.test", "mismatch"),
        ("127.0.91.5", "mx5.mxtest.test", "unable to get local issuer certificate"),
    ],
)
def test_bad_certificates_fail_verification_and_are_recorded(
    farm: MxFarm, ca: TestCA, address: str, name: str, error: str
) -> None:
    before = len(farm.sessions(name))
    client = _client(address, name)
    try:
        client.ehlo("client.example")
        assert client.has_extn("starttls")
        with pytest.raises(ssl.SSLCertVerificationError, match=error):
            client.starttls(context=_context(ca))
    finally:
        client.close()
    session = _wait_sessions(farm, name, before + 1)[-1]
    assert session.starttls and not session.tls and session.messages == 0
    assert session.tls_error
    assert session.sni == name  # recorded even though the handshake failed
    assert farm.received(name) == []


def test_certificates_are_written_for_tlsa(farm: MxFarm, ca: TestCA) -> None:
    valid = farm.cert_pem("mx1.mxtest.test")
    assert valid is not None
    assert (farm.mail_dir / "mx1.mxtest.test" / "cert.pem").read_bytes() == valid
    # Lab-CA leaves share one key; the untrusted CA's leaves have another.
    assert spki_sha256(valid) == spki_sha256(farm.cert_pem("mx3.mxtest.test"))
    assert spki_sha256(valid) != spki_sha256(farm.cert_pem("mx5.mxtest.test"))
    assert len(spki_sha256(valid)) == 64


def test_ca_round_trip(tmp_path: Path) -> None:
    ca = TestCA("round trip")
    save_ca(ca, tmp_path)
    loaded = load_ca(tmp_path)
    assert loaded.cert_pem == ca.cert_pem
    cert_pem, _ = loaded.issue(["mx.example.test"])
    context = ssl.create_default_context(cadata=ca.cert_pem.decode())
    # The issued certificate chains to the original CA.
    from cryptography import x509

    leaf = x509.load_pem_x509_certificate(cert_pem)
    leaf.verify_directly_issued_by(ca.cert)
    assert context.cert_store_stats()["x509_ca"] == 1
    assert load_ca(tmp_path / "new").cert_pem  # created when missing
    assert (tmp_path / "new" / "ca.key").stat().st_mode & 0o077 == 0


def test_cli_process_ready_file_and_sigterm(tmp_path: Path) -> None:
    specs = [
        MxSpec("cli1.mxtest.test", "127.0.91.11", "valid"),
        MxSpec("cli2.mxtest.test", "127.0.91.12", "no-starttls"),
    ]
    ca_dir = tmp_path / "ca"
    process = MxFarmProcess(specs, tmp_path / "mail", ca_dir)
    process.start()
    try:
        ready = json.loads(process.ready_file.read_text())
        assert ready["pid"] == process.proc.pid
        assert [item["address"] for item in ready["mx"]] == ["127.0.91.11", "127.0.91.12"]
        ca = load_ca(ca_dir, create=False)
        client = _client("127.0.91.11", "cli1.mxtest.test")
        try:
            client.starttls(context=_context(ca))
            client.sendmail("a@sender.test", ["b@mxtest.test"], "Subject: cli\r\n\r\nx\r\n")
        finally:
            client.quit()
        received = read_received(tmp_path / "mail", "cli1.mxtest.test")
        assert len(received) == 1 and received[0].sni == "cli1.mxtest.test"
        proc = process.proc
    finally:
        process.stop()
    assert proc.returncode == 0
    assert not process.ready_file.exists()
    assert read_sessions(tmp_path / "mail", "cli1.mxtest.test")[-1].messages == 1
    with pytest.raises(OSError):
        smtplib.SMTP("127.0.91.11", 25, timeout=2)
