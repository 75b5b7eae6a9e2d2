"""serve-policy's ACME pieces without an ACME server: renewal times and backoff, the TLS-ALPN-01 certificate,
the challenge board, the certificate store, and the manager's order bookkeeping with a fake account."""

from __future__ import annotations

import asyncio
import datetime as _dt
import hashlib
import logging
import os
import ssl
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from mxsec.errors import ConfigError
from mxsec.serve_policy.acme import AcmeManager, AcmeOptions
from mxsec.serve_policy.certstore import CertStore, context_from_pem
from mxsec.serve_policy.challenges import (
    ACME_TLS_ALPN,
    HTTP01_PREFIX,
    ID_PE_ACME_IDENTIFIER,
    PendingChallenges,
    tls_alpn_certificate,
)
from mxsec.serve_policy.renewal import HostRenewal, renewal_due, retry_delay
from mxsec.testing.pki import TestCA, key_to_pem, new_key

UTC = _dt.UTC
T0 = _dt.datetime(2026, 12, 1, tzinfo=UTC)
DAY = _dt.timedelta(days=1)
HOST = "mta-sts.example.test"


# --------------------------------------------------------------------------- renewal (pure)
def test_renewal_when_a_third_of_the_lifetime_remains() -> None:
    assert renewal_due(T0, T0 + 90 * DAY) == T0 + 60 * DAY
    assert renewal_due(T0, T0 + 6 * DAY) == T0 + 4 * DAY
    assert renewal_due(T0, T0 + 90 * DAY, renew_before=10 * DAY) == T0 + 80 * DAY
    # asked to renew earlier than the certificate's start: due at once
    assert renewal_due(T0, T0 + 5 * DAY, renew_before=30 * DAY) < T0


def test_retry_delay_doubles_up_to_six_hours_with_jitter_and_retry_after() -> None:
    assert [retry_delay(n) for n in (1, 2, 3, 4)] == [60, 120, 240, 480]
    assert retry_delay(30) == 6 * 3600
    assert retry_delay(1, jitter=0.5) == pytest.approx(57.0)
    assert retry_delay(1, retry_after=900) == 900
    assert retry_delay(1, retry_after=10**9) == 24 * 3600  # a server cannot park us for years
    assert retry_delay(3, first=1) == 4


def test_host_renewal_states() -> None:
    renewal = HostRenewal(HOST)
    assert renewal.wants_order(T0) and renewal.next_wakeup() is None  # no certificate: now
    delay = renewal.failed(T0, "boom", first=60)
    assert delay == 60 and renewal.failures == 1 and renewal.last_error == "boom"
    assert not renewal.wants_order(T0 + _dt.timedelta(seconds=59))
    assert renewal.wants_order(T0 + _dt.timedelta(seconds=60))
    assert renewal.next_wakeup() == T0 + _dt.timedelta(seconds=60)
    renewal.succeeded(T0, T0 + 90 * DAY)
    assert renewal.failures == 0 and renewal.next_attempt is None and renewal.due == T0 + 60 * DAY
    assert not renewal.wants_order(T0 + 59 * DAY) and renewal.wants_order(T0 + 60 * DAY)


# --------------------------------------------------------------------------- challenges
def test_tls_alpn_01_certificate_carries_the_digest_in_a_critical_extension() -> None:  # RFC 8737 §3
    key_authorization = "token-abc.thumbprint-xyz"
    cert_pem, key_pem = tls_alpn_certificate(HOST, key_authorization)
    cert = x509.load_pem_x509_certificate(cert_pem)
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == [HOST]
    extension = cert.extensions.get_extension_for_oid(ID_PE_ACME_IDENTIFIER)
    assert extension.critical
    assert extension.value.value == b"\x04\x20" + hashlib.sha256(key_authorization.encode()).digest()
    key = serialization.load_pem_private_key(key_pem, None)
    assert key.public_key().public_numbers() == cert.public_key().public_numbers()


def test_challenge_board() -> None:
    board = PendingChallenges()
    board.add_http01("tok", "tok.thumb")
    assert board.http01_answer(HTTP01_PREFIX + "tok") == "tok.thumb"
    assert board.http01_answer(HTTP01_PREFIX + "other") is None
    assert board.http01_answer("/.well-known/mta-sts.txt") is None
    board.remove_http01("tok")
    assert board.http01_answer(HTTP01_PREFIX + "tok") is None
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    board.add_tls_alpn01("MTA-STS.Example.Test", ctx)
    assert board.tls_alpn01_context(HOST) is ctx and board.tls_alpn01_context(None) is None
    board.remove_tls_alpn01(HOST)
    assert board.tls_alpn01_context(HOST) is None


def test_the_board_is_bounded() -> None:
    board = PendingChallenges()
    for n in range(1000):
        board.add_http01(str(n), "x")
    with pytest.raises(RuntimeError):
        board.add_http01("one-more", "x")


def test_challenge_context_offers_only_acme_tls_and_leaves_no_key_file(tmp_path: Path) -> None:
    cert_pem, key_pem = tls_alpn_certificate(HOST, "a.b")
    ctx = context_from_pem(cert_pem, key_pem, tmp_path, alpn=[ACME_TLS_ALPN])
    assert isinstance(ctx, ssl.SSLContext)
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- the certificate store
@pytest.fixture
def ca() -> TestCA:
    return TestCA()


def test_store_is_private_and_saves_key_and_chain_together(tmp_path: Path, ca: TestCA) -> None:
    store = CertStore(tmp_path / "acme")
    store.prepare()
    assert stat.S_IMODE((tmp_path / "acme").stat().st_mode) == 0o700
    assert store.load(HOST) is None
    cert, key = ca.issue([HOST])
    loaded = store.save(HOST, key, cert + ca.cert_pem)
    path = tmp_path / "acme" / "certs" / f"{HOST}.pem"
    assert loaded.cert_path == loaded.key_path == str(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    again = store.load(HOST)
    assert again is not None and again.serial == loaded.serial and again.not_before is not None
    assert store.hosts() == [HOST]


def test_store_keeps_the_old_certificate_when_the_new_one_is_wrong(tmp_path: Path, ca: TestCA) -> None:
    store = CertStore(tmp_path / "acme")
    store.prepare()
    cert, key = ca.issue([HOST])
    first = store.save(HOST, key, cert)
    wrong, wrong_key = ca.issue(["mta-sts.other.test"])
    with pytest.raises(ConfigError, match="does not cover mta-sts.example.test"):
        store.save(HOST, wrong_key, wrong)
    with pytest.raises(ConfigError, match="does not belong"):
        store.save(HOST, key_to_pem(new_key()), cert)  # a key that is not the certificate's
    kept = store.load(HOST)
    assert kept is not None and kept.serial == first.serial
    assert sorted(p.name for p in (tmp_path / "acme" / "certs").iterdir()) == [f"{HOST}.pem"]


def test_an_expired_stored_certificate_is_not_served(tmp_path: Path, ca: TestCA) -> None:
    store = CertStore(tmp_path / "acme")
    store.prepare()
    cert, key = ca.issue([HOST])
    store.save(HOST, key, cert)
    assert store.load(HOST, now=_dt.datetime.now(UTC) + 3650 * DAY) is None


def test_store_refuses_an_open_directory_and_odd_host_names(tmp_path: Path) -> None:
    open_dir = tmp_path / "open"
    open_dir.mkdir()
    os.chmod(open_dir, 0o755)
    with pytest.raises(ConfigError, match="open to other users"):
        CertStore(open_dir).prepare()
    with pytest.raises(ValueError):
        CertStore(tmp_path).cert_path("../etc/passwd")


# --------------------------------------------------------------------------- the manager, with a fake account
class FakeAccount:
    """Answers orders from a test CA; fails for the hosts in ``failing``."""

    def __init__(self, ca: TestCA) -> None:
        self.ca = ca
        self.failing: set[str] = set()
        self.orders: list[str] = []

    def order(self, host: str, board: object, challenge_types: object) -> tuple[bytes, bytes]:
        from mxsec.net.acme import AcmeError

        self.orders.append(host)
        if host in self.failing:
            raise AcmeError(f"validation failed: {host}: tls-alpn-01 failed: connection refused")
        cert, key = self.ca.issue([host])
        return key, cert + self.ca.cert_pem


@pytest.fixture
def manager(tmp_path: Path, ca: TestCA) -> tuple[AcmeManager, FakeAccount]:
    acme = AcmeManager(AcmeOptions(directory_url="https://acme.invalid/dir", state_dir=str(tmp_path / "acme"),
                                   retry_first=60))
    fake = FakeAccount(ca)
    acme._account = fake
    return acme, fake


async def test_orders_every_host_without_a_certificate_and_serves_it(manager, caplog) -> None:
    acme, fake = manager
    acme.set_hosts([HOST, "mta-sts.other.test"])
    assert acme.context_for(HOST) is None and acme.default_context() is None
    with caplog.at_level(logging.INFO, logger="mxsec.serve_policy"):
        assert await acme.order(HOST) and await acme.order("mta-sts.other.test")
    assert fake.orders == [HOST, "mta-sts.other.test"]
    assert acme.context_for(HOST) is not None and acme.context_for("MTA-STS.EXAMPLE.TEST") is not None
    assert acme.default_context() is acme.context_for(HOST)
    assert [r.getMessage() for r in caplog.records].count("certificate obtained") == 2
    assert all(not r.wants_order(_dt.datetime.now(UTC)) for r in acme.renewals.values())


async def test_a_failure_keeps_the_previous_certificate_and_backs_off(manager, caplog) -> None:
    acme, fake = manager
    acme.set_hosts([HOST])
    await acme.order(HOST)
    served = acme.context_for(HOST)
    fake.failing.add(HOST)
    with caplog.at_level(logging.INFO, logger="mxsec.serve_policy"):
        assert not await acme.order(HOST)
        assert not await acme.order(HOST)
    assert acme.context_for(HOST) is served
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert [e.failures for e in errors] == [1, 2]
    assert errors[0].serving.startswith("the previous certificate (expires ")
    assert 108 <= errors[1].retry_in <= 120  # 60 s doubled, minus up to a tenth of jitter
    assert acme.renewals[HOST].last_error.startswith("validation failed")


async def test_dropped_hosts_are_forgotten_and_a_new_manager_loads_what_was_stored(manager, tmp_path) -> None:
    acme, _ = manager
    acme.set_hosts([HOST, "mta-sts.other.test"])
    await acme.order(HOST)
    acme.set_hosts(["mta-sts.other.test"])
    assert acme.context_for(HOST) is None and list(acme.renewals) == ["mta-sts.other.test"]
    fresh = AcmeManager(AcmeOptions(directory_url="https://acme.invalid/dir", state_dir=str(tmp_path / "acme")))
    fresh.set_hosts([HOST])
    assert fresh.context_for(HOST) is not None
    assert not fresh.renewals[HOST].wants_order(_dt.datetime.now(UTC))


async def test_the_loop_orders_due_hosts_and_sleeps_until_the_next(manager) -> None:
    acme, fake = manager
    acme.set_hosts([HOST])
    task = asyncio.create_task(acme.run())
    try:
        for _ in range(100):
            if fake.orders:
                break
            await asyncio.sleep(0.02)
        acme.set_hosts([HOST, "mta-sts.late.test"])  # a reload wakes the loop
        for _ in range(100):
            if len(fake.orders) == 2:
                break
            await asyncio.sleep(0.02)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert fake.orders == [HOST, "mta-sts.late.test"]


def test_http_01_only_needs_a_plain_listener(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="needs --acme-http-listen"):
        AcmeManager(AcmeOptions(directory_url="https://acme.invalid/dir", state_dir=str(tmp_path / "a"),
                                challenges=("http-01",)))
    acme = AcmeManager(AcmeOptions(directory_url="https://acme.invalid/dir", state_dir=str(tmp_path / "b")),
                       http01=True)
    assert acme.challenge_types == ("tls-alpn-01", "http-01")


async def test_a_certificate_from_another_acme_server_is_served_and_replaced_at_once(manager, tmp_path) -> None:
    """Staging first, then production with the same state directory: the staging certificate is not kept until
    its renewal date."""
    acme, fake = manager
    acme.set_hosts([HOST])
    await acme.order(HOST)
    assert acme.store.issuer_directory(HOST) == "https://acme.invalid/dir"
    other = AcmeManager(AcmeOptions(directory_url="https://other-ca.invalid/dir", state_dir=str(tmp_path / "acme")))
    other._account = fake
    other.set_hosts([HOST])
    assert other.context_for(HOST) is not None  # served meanwhile
    assert other.renewals[HOST].wants_order(_dt.datetime.now(UTC))
    assert await other.order(HOST)
    assert other.store.issuer_directory(HOST) == "https://other-ca.invalid/dir"
    assert not other.renewals[HOST].wants_order(_dt.datetime.now(UTC))


def test_a_refused_challenge_choice_creates_no_state_directory(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        AcmeManager(AcmeOptions(directory_url="https://acme.invalid/dir", state_dir=str(tmp_path / "never"),
                                challenges=("http-01",)))
    assert not (tmp_path / "never").exists()
