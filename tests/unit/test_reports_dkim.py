"""DKIM verification of mailed reports (mxsec.reports.dkim) with real signatures.

Report messages of the corpus are signed by dkimpy with keys made here (RSA 2048 and Ed25519, RFC 8463)
and checked by :func:`mxsec.reports.dkim.verify` with an in-memory ``dnsfunc`` serving the key records.
The one real DNS exchange here is the timeout test: a UDP socket on 127.0.0.1 that never answers.

Keys and signing: tests/dkim_signing.py (Ed25519 signing works without PyNaCl there; verification never
needs it).
"""

from __future__ import annotations

import socket

import pytest

from mxsec.errors import ConfigError
from mxsec.reports import dkim as rdkim
from mxsec.reports.inputs import Options, ingest, message_input
from mxsec.storage.reportdb import ReportDB
from tests import tlsrpt_corpus as tc
from tests.dkim_signing import DOMAIN, EdKey, RsaKey, sign

CASE = tc.case("google-heartbeat")


# ------------------------------------------------------------------------------------------------ keys


@pytest.fixture(scope="module")
def rsa_key() -> RsaKey:
    return RsaKey()


@pytest.fixture(scope="module")
def ed_key() -> EdKey:
    return EdKey()


class Zone:
    """An in-memory ``dnsfunc``: name -> TXT text, or an exception to raise; records the names asked."""

    def __init__(self, records: dict[str, object] | None = None) -> None:
        self.records = dict(records or {})
        self.asked: list[str] = []

    def __call__(self, name: bytes, timeout: float = 5) -> bytes | None:
        text = name.decode().rstrip(".").lower()
        self.asked.append(text)
        value = self.records.get(text)
        if isinstance(value, BaseException):
            raise value
        return value.encode() if isinstance(value, str) else None


def key_name(selector: str = "s1", domain: str = DOMAIN) -> str:
    return f"{selector}._domainkey.{domain}"


# ------------------------------------------------------------------------------------------- verdicts


def test_rsa_signature_passes_with_its_domain(rsa_key):
    zone = Zone({key_name(): rsa_key.record()})
    assert rdkim.verify(sign(CASE.message(), rsa_key), zone) == ("pass", (DOMAIN,))
    assert zone.asked == [key_name()]


def test_ed25519_signature_passes_without_pynacl_at_verification(ed_key):
    zone = Zone({key_name(): ed_key.record()})
    assert rdkim.verify(sign(CASE.message(), ed_key), zone) == ("pass", (DOMAIN,))


@pytest.mark.parametrize("case", tc.corpus(), ids=lambda c: c.name)
def test_every_corpus_message_signed_passes(case, rsa_key):
    zone = Zone({key_name(): rsa_key.record()})
    assert rdkim.verify(sign(case.message(), rsa_key), zone) == ("pass", (DOMAIN,))


def test_crlf_delivery_of_a_signed_message_still_passes(rsa_key, ed_key):
    """IMAP hands messages over with CRLF line ends; the corpus writes LF: the signature must not care."""
    zone = Zone({key_name("r"): rsa_key.record(), key_name("e"): ed_key.record()})
    for key, selector in ((rsa_key, "r"), (ed_key, "e")):
        signed = sign(CASE.message(), key, selector=selector)
        crlf = signed.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
        assert rdkim.verify(crlf, zone)[0] == "pass"


@pytest.mark.parametrize("algorithm", ["rsa", "ed25519"])
def test_tampered_body_fails(algorithm, rsa_key, ed_key):
    key = rsa_key if algorithm == "rsa" else ed_key
    zone = Zone({key_name(): key.record()})
    signed = sign(CASE.message(), key)
    tampered = signed.replace(b"This is an aggregate TLS report", b"This is an aggregate TLS rep0rt")
    assert tampered != signed
    assert rdkim.verify(tampered, zone) == ("fail", ())


@pytest.mark.parametrize("algorithm", ["rsa", "ed25519"])
def test_tampered_signed_header_fails(algorithm, rsa_key, ed_key):
    key = rsa_key if algorithm == "rsa" else ed_key
    zone = Zone({key_name(): key.record()})
    signed = sign(CASE.message(), key)
    tampered = signed.replace(b"TLS-Report-Domain: example.com", b"TLS-Report-Domain: example.net")
    assert tampered != signed
    assert rdkim.verify(tampered, zone) == ("fail", ())


def test_unsigned_message_is_none():
    zone = Zone()
    assert rdkim.verify(CASE.message(), zone) == ("none", ())
    assert zone.asked == []


def test_missing_key_fails(rsa_key):
    assert rdkim.verify(sign(CASE.message(), rsa_key), Zone()) == ("fail", ())


def test_key_of_another_signer_fails(rsa_key):
    other = RsaKey()
    assert rdkim.verify(sign(CASE.message(), rsa_key), Zone({key_name(): other.record()})) == ("fail", ())


def test_ed25519_signature_against_rsa_record_fails(rsa_key, ed_key):
    assert rdkim.verify(sign(CASE.message(), ed_key), Zone({key_name(): rsa_key.record()})) == ("fail", ())


def test_revoked_key_fails(rsa_key):
    zone = Zone({key_name(): "v=DKIM1; k=rsa; p="})
    assert rdkim.verify(sign(CASE.message(), rsa_key), zone) == ("fail", ())


@pytest.mark.parametrize("record", ["garbage", "v=DKIM1; k=rsa; p=!!!notbase64", "v=DKIM2; p=AAAA",
                                    "v=DKIM1; k=dsa; p=AAAA", "v=DKIM1; p=AAAA; p=BBBB"])
def test_unusable_key_records_fail(record, rsa_key):
    assert rdkim.verify(sign(CASE.message(), rsa_key), Zone({key_name(): record})) == ("fail", ())


def test_lookup_failure_is_temperror(rsa_key):
    zone = Zone({key_name(): rdkim.KeyLookupFailed("timed out")})
    assert rdkim.verify(sign(CASE.message(), rsa_key), zone) == ("temperror", ())


def test_real_dns_timeout_is_temperror(rsa_key):
    """A resolver on 127.0.0.1 that never answers: dnspython times out, the verdict is temperror."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))
        port = silent.getsockname()[1]
        verifier = rdkim.make_verifier([f"127.0.0.1:{port}"], timeout=0.3)
        assert verifier(sign(CASE.message(), rsa_key)) == ("temperror", ())
        assert verifier(CASE.message()) == ("none", ())  # nothing to look up, no waiting


@pytest.mark.parametrize("service", ["s=tlsrpt; ", "s=email; ", "s=*; ", "s=email:tlsrpt; ", "s=tlsrpt:other; ", ""])
def test_key_record_service_types_for_reports_are_accepted(service, rsa_key, ed_key):
    for key in (rsa_key, ed_key):
        zone = Zone({key_name(): key.record(service)})
        assert rdkim.verify(sign(CASE.message(), key), zone) == ("pass", (DOMAIN,)), (service, key.algorithm)


@pytest.mark.parametrize("service", ["s=other; ", "s=foo:bar; "])
def test_key_record_for_other_services_fails(service, rsa_key):
    zone = Zone({key_name(): rsa_key.record(service)})
    assert rdkim.verify(sign(CASE.message(), rsa_key), zone) == ("fail", ())


def test_one_good_signature_among_bad_ones_passes_with_only_its_domain(rsa_key, ed_key):
    stranger = RsaKey()
    message = sign(CASE.message(), rsa_key, selector="good", domain="good.example")
    message = sign(message, stranger, selector="bad", domain="bad.example")  # key published is not this one
    message = sign(message, ed_key, selector="gone", domain="gone.example")  # no key published at all
    zone = Zone({key_name("good", "good.example"): rsa_key.record(),
                 key_name("bad", "bad.example"): RsaKey().record()})
    assert rdkim.verify(message, zone) == ("pass", ("good.example",))
    assert len(zone.asked) == 3


def test_two_good_signatures_give_both_domains_in_order(rsa_key, ed_key):
    message = sign(sign(CASE.message(), rsa_key, domain="first.example"), ed_key, domain="second.example")
    zone = Zone({key_name(domain="first.example"): rsa_key.record(),
                 key_name(domain="second.example"): ed_key.record()})
    # the signature added last is on top and checked first
    assert rdkim.verify(message, zone) == ("pass", ("second.example", "first.example"))


def test_a_good_signature_beyond_the_limit_is_not_looked_at(rsa_key):
    message = sign(CASE.message(), rsa_key)  # the good one ends up at the bottom
    for number in range(rdkim.MAX_SIGNATURES):
        message = sign(message, rsa_key, selector=f"x{number}", domain="nokey.example")
    zone = Zone({key_name(): rsa_key.record()})
    assert rdkim.verify(message, zone) == ("fail", ())
    assert len(zone.asked) == rdkim.MAX_SIGNATURES and key_name() not in zone.asked


@pytest.mark.parametrize("data", [
    b"",
    b"\x00\xff\xfe garbage",
    b"DKIM-Signature: this is not a tag list\r\nFrom: a@b.example\r\n\r\nbody\r\n",
    b"DKIM-Signature: v=1; a=rsa-sha256; d=x.example; s=s; h=from; bh=AAAA; b=AAAA\r\n\r\nno from\r\n",
])
def test_malformed_input_gives_a_verdict_not_an_exception(data):
    status, domains = rdkim.verify(data, Zone())
    assert status in ("none", "fail") and domains == ()


# ------------------------------------------------------------------------------ resolvers and settings


@pytest.mark.parametrize("nameservers,words", [
    (["not-an-address"], "not-an-address"),
    (["127.0.0.1:53", "127.0.0.2:5353"], "same port"),
])
def test_bad_nameserver_settings_are_config_errors(nameservers, words):
    with pytest.raises(ConfigError, match=words):
        rdkim.make_verifier(nameservers)


# ------------------------------------------------------------------------------- messages and storage


def _verifier(zone: Zone):
    return lambda data: rdkim.verify(data, zone)


def test_require_dkim_rejects_unsigned_and_failed_accepts_signed(rsa_key):
    zone = Zone({key_name(): rsa_key.record()})
    options = Options(dkim=_verifier(zone), require_dkim=True)
    signed = sign(CASE.message(), rsa_key)
    unsigned = message_input(CASE.message(), "unsigned.eml", "message", options)
    assert unsigned.rejected and "DKIM none" in unsigned.error
    broken = message_input(signed.replace(b"aggregate", b"aggregated"), "broken.eml", "message", options)
    assert broken.rejected and "DKIM fail" in broken.error
    good = message_input(signed, "good.eml", "message", options)
    assert not good.rejected
    assert [(i.dkim, i.dkim_domains) for i in good.incoming] == [("pass", (DOMAIN,))]


def test_require_dkim_rejects_temperror(rsa_key):
    zone = Zone({key_name(): rdkim.KeyLookupFailed("SERVFAIL")})
    item = message_input(sign(CASE.message(), rsa_key), "x.eml", "message",
                         Options(dkim=_verifier(zone), require_dkim=True))
    assert item.rejected and "DKIM temperror" in item.error


def test_dkim_status_is_stored_with_each_report(tmp_path, rsa_key, ed_key):
    zone = Zone({key_name(): rsa_key.record(), key_name("e", "other.example"): ed_key.record()})
    options = Options(dkim=_verifier(zone))
    first, second, third = (tc.as_email(tc.report(report_id=f"dkim-{n}", policies=[tc.entry(tc.sts_policy(), ok=n)]))
                            for n in (1, 2, 3))
    items = [
        message_input(sign(first, rsa_key), "signed.eml", "message", options),
        message_input(sign(second, ed_key, selector="e", domain="other.example").replace(b"aggregate", b"altered"),
                      "tampered.eml", "message", options),
        message_input(third, "unsigned.eml", "message", options),
    ]
    assert not any(item.rejected for item in items)
    with ReportDB(f"sqlite:///{tmp_path}/r.sqlite3") as db:
        ingest(db, items, options)
        stored = {item.name: db.report(item.results[0].id) for item in items}
    assert stored["signed.eml"].row.dkim == "pass"
    assert stored["signed.eml"].dkim_domains == [DOMAIN]
    assert stored["tampered.eml"].row.dkim == "fail"
    assert stored["tampered.eml"].dkim_domains == []
    assert stored["unsigned.eml"].row.dkim == "none"
    codes = {w["code"] if isinstance(w, dict) else w for w in stored["tampered.eml"].row.warnings}
    assert "dkim-fail" in codes, stored["tampered.eml"].row.warnings
