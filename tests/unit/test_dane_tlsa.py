"""mxsec.dane.tlsa: TLSA presentation form, usability, digest agility, generator (DANE-H-12, H-20..H-24, H-34..H-37)."""

from __future__ import annotations

import hashlib

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from mxsec.dane.tlsa import (
    DEFAULT_DIGEST_ORDER,
    TlsaError,
    TlsaRecord,
    describe,
    from_rdata,
    parse_tlsa,
    partition,
    select_usable,
    spki_of_certificate,
    tlsa_for_certificate,
    tlsa_owner,
    usable,
)
from mxsec.testing.pki import TestCA, pem_to_der
from mxsec.errors import ParseError
from mxsec.names import DomainError

D32 = bytes(range(32))
D64 = bytes(range(64))
H32 = D32.hex().upper()


@pytest.fixture(scope="module")
def leaf() -> bytes:
    return pem_to_der(TestCA("tlsa test root").issue(["mx.example.test"])[0])


# --- parsing ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        f"3 1 1 {H32}",
        f"3 1 1 {H32.lower()}",
        f"  3\t1 1 {H32[:20]} {H32[20:]}  ",
        f"3 1 1 ( {H32[:30]}\n        {H32[30:]} )",
        f"3 1 1 ( {H32[:30]} ; first half\n {H32[30:]} ) ; second half",
        f"003 01 1 {H32}",
    ],
)
def test_dane_h_20_parse_presentation_forms(text: str) -> None:
    assert parse_tlsa(text) == TlsaRecord(3, 1, 1, D32)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "needs usage"),
        ("3 1 1", "no certificate association data"),
        ("3 1", "needs usage"),
        ("256 1 1 00", "invalid usage"),
        ("3 -1 1 00", "invalid selector"),
        ("3 1 x 00", "invalid matching type"),
        ("3 1 1 0G", "not hexadecimal"),
        ("3 1 1 ABC", "odd number"),
        ("3 1 1 \u0661\u0662", "not hexadecimal"),
        ("\u0663 1 1 00", "invalid usage"),
        ("3 1 1 " + "00" * 70000, "longer than"),
    ],
)
def test_dane_h_20_parse_errors(text: str, message: str) -> None:
    with pytest.raises(TlsaError, match=message) as info:
        parse_tlsa(text)
    assert isinstance(info.value, ParseError)
    assert info.value.result_type == "tlsa-invalid"


def test_dane_h_20_parse_rejects_non_text() -> None:
    with pytest.raises(TlsaError):
        parse_tlsa(b"3 1 1 00")  # type: ignore[arg-type]


def test_dane_h_20_unknown_values_still_parse() -> None:
    assert parse_tlsa("255 7 9 00") == TlsaRecord(255, 7, 9, b"\x00")


def test_rpt_policy_string_to_text() -> None:
    record = TlsaRecord(3, 0, 1, bytes.fromhex("1f850a337e6db9c609c522d136a475638cc43e1ed424f8eec8513d747d1d085d"))
    assert record.to_text() == "3 0 1 1F850A337E6DB9C609C522D136A475638CC43E1ED424F8EEC8513D747D1D085D"
    assert str(record) == record.to_text()
    assert parse_tlsa(record.to_text()) == record
    assert "3 0 1 1F85" in repr(record)


def test_from_rdata() -> None:
    assert from_rdata(2, 0, 1, bytearray(D32)) == TlsaRecord(2, 0, 1, D32)
    assert from_rdata(3, 1, 1, b"") == TlsaRecord(3, 1, 1, b"")  # representable on the wire; unusable
    for bad in ((256, 1, 1, D32), (3, -1, 1, D32), (3, 1, True, D32), (3, 1, 1, "00"), (3, 1, 1, b"x" * 70000)):
        with pytest.raises(TlsaError):
            from_rdata(*bad)  # type: ignore[arg-type]


def test_describe() -> None:
    assert describe(TlsaRecord(3, 1, 1, D32)) == "DANE-EE(3) SPKI(1) SHA2-256(1)"
    assert describe(TlsaRecord(2, 0, 0, b"x")) == "DANE-TA(2) Cert(0) Full(0)"
    assert describe(TlsaRecord(2, 0, 2, D64)) == "DANE-TA(2) Cert(0) SHA2-512(2)"


# --- usability ----------------------------------------------------------------------------------------------


def test_dane_h_24_ec_33_pkix_usages_unusable() -> None:
    assert "PKIX-TA(0)" in usable(TlsaRecord(0, 1, 1, D32))
    assert "PKIX-EE(1)" in usable(TlsaRecord(1, 1, 1, D32))


@pytest.mark.parametrize(
    ("record", "reason"),
    [
        (TlsaRecord(4, 1, 1, D32), "unknown certificate usage 4"),
        (TlsaRecord(255, 1, 1, D32), "unknown certificate usage 255"),
        (TlsaRecord(3, 2, 1, D32), "unknown selector 2"),
        (TlsaRecord(3, 255, 1, D32), "unknown selector 255"),
        (TlsaRecord(3, 1, 3, D32), "unknown matching type 3"),
        (TlsaRecord(3, 1, 255, D32), "unknown matching type 255"),
        (TlsaRecord(3, 1, 1, b""), "empty"),
        (TlsaRecord(3, 1, 0, b""), "empty"),
    ],
)
def test_dane_h_20_h_34_h_35_unknown_or_empty_unusable(record: TlsaRecord, reason: str) -> None:
    assert reason in usable(record)


@pytest.mark.parametrize(
    ("record", "reason"),
    [
        (TlsaRecord(3, 1, 1, D32[:31]), "SHA2-256 data is 31 octets, not 32"),
        (TlsaRecord(3, 1, 1, D64), "SHA2-256 data is 64 octets, not 32"),
        (TlsaRecord(2, 0, 2, D32), "SHA2-512 data is 32 octets, not 64"),
        (TlsaRecord(2, 0, 2, D64 + b"\x00"), "SHA2-512 data is 65 octets, not 64"),
    ],
)
def test_dane_h_20_wrong_digest_length_unusable(record: TlsaRecord, reason: str) -> None:
    assert usable(record) == reason


def test_dane_h_20_full_data_must_parse(leaf: bytes) -> None:
    assert usable(TlsaRecord(3, 0, 0, leaf)) is None
    assert usable(TlsaRecord(3, 1, 0, spki_of_certificate(leaf))) is None
    assert "certificate" in usable(TlsaRecord(3, 0, 0, b"\x30\x03\x02\x01\x00"))
    assert "certificate" in usable(TlsaRecord(2, 0, 0, leaf + b"\x00"))
    assert "SubjectPublicKeyInfo" in usable(TlsaRecord(3, 1, 0, leaf))  # a certificate is not an SPKI
    assert "SubjectPublicKeyInfo" in usable(TlsaRecord(3, 1, 0, D32))
    assert "SubjectPublicKeyInfo" in usable(TlsaRecord(3, 1, 0, spki_of_certificate(leaf) + b"\x00"))


def test_dane_h_20_valid_records_usable() -> None:
    for record in (TlsaRecord(3, 1, 1, D32), TlsaRecord(2, 0, 1, D32), TlsaRecord(3, 0, 2, D64)):
        assert usable(record) is None


def test_dane_h_20_malformed_fields_are_a_reason_not_an_exception() -> None:
    assert usable(TlsaRecord("3", 1, 1, D32)) == "malformed record fields"  # type: ignore[arg-type]
    assert usable(TlsaRecord(3, 1, 1, "00")) == "malformed record fields"  # type: ignore[arg-type]
    assert "not a TLSA record" in usable("3 1 1 00")  # type: ignore[arg-type]


def test_dane_h_21_digest_outside_the_order_is_too_weak() -> None:
    assert "not accepted by the digest policy" in usable(TlsaRecord(3, 1, 1, D32), order=(2,))
    assert usable(TlsaRecord(3, 1, 2, D64), order=(2,)) is None
    assert usable(TlsaRecord(3, 1, 0, b"\x00"), order=(2,)) is not None  # Full(0) still checked for shape


# --- digest agility -----------------------------------------------------------------------------------------


def test_dane_h_36_strongest_digest_and_full_kept() -> None:
    r311, r312 = TlsaRecord(3, 1, 1, D32), TlsaRecord(3, 1, 2, D64)
    full = TlsaRecord(3, 0, 0, b"x")  # unusable (not a certificate) but shows Full(0) is judged on its own
    kept, dropped = partition([r311, r312, full])
    assert kept == [r312]
    assert [r for r, _ in dropped] == [full, r311]
    assert "digest agility" in dict(dropped)[r311]


def test_dane_h_36_rfc_example_keeps_full_records(leaf: bytes) -> None:
    r311, r312 = TlsaRecord(3, 1, 1, D32), TlsaRecord(3, 1, 2, D64)
    r310 = TlsaRecord(3, 1, 0, spki_of_certificate(leaf))
    assert select_usable([r311, r312, r310]) == [r312, r310]


def test_dane_h_36_agility_is_per_usage_and_selector() -> None:
    records = [
        TlsaRecord(3, 1, 1, D32),
        TlsaRecord(3, 0, 2, D64),  # other selector: does not displace 3 1 1
        TlsaRecord(2, 1, 2, D64),  # other usage: does not displace 3 1 1
        TlsaRecord(2, 1, 1, D32),
    ]
    assert select_usable(records) == [records[0], records[1], records[2]]


def test_dane_h_36_malformed_stronger_digest_does_not_displace() -> None:
    good = TlsaRecord(3, 1, 1, D32)
    broken = TlsaRecord(3, 1, 2, D32)  # wrong length: dropped first, so SHA2-256 stays the strongest
    assert select_usable([good, broken]) == [good]


def test_dane_h_37_configurable_order() -> None:
    r311, r312 = TlsaRecord(3, 1, 1, D32), TlsaRecord(3, 1, 2, D64)
    assert DEFAULT_DIGEST_ORDER == (2, 1)
    assert select_usable([r311, r312], order=(1, 2)) == [r311]
    assert select_usable([r311, r312], order=(1,)) == [r311]


def test_select_usable_removes_duplicates() -> None:
    r = TlsaRecord(3, 1, 1, D32)
    assert select_usable([r, r, TlsaRecord(3, 1, 1, bytes(D32))]) == [r]


# --- generator ----------------------------------------------------------------------------------------------


def test_tlsa_for_certificate_defaults_3_1_1(leaf: bytes) -> None:
    cert = x509.load_der_x509_certificate(leaf)
    spki = cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert spki_of_certificate(leaf) == spki
    expected = TlsaRecord(3, 1, 1, hashlib.sha256(spki).digest())
    assert tlsa_for_certificate(leaf) == expected
    pem = cert.public_bytes(serialization.Encoding.PEM)
    assert tlsa_for_certificate(pem) == expected
    assert tlsa_for_certificate(pem.decode()) == expected
    assert tlsa_for_certificate(cert) == expected


@pytest.mark.parametrize(("selector", "mtype"), [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (1, 2)])
def test_dane_h_34_h_35_generator_all_selectors_and_types(leaf: bytes, selector: int, mtype: int) -> None:
    record = tlsa_for_certificate(leaf, 2, selector, mtype)
    selected = leaf if selector == 0 else spki_of_certificate(leaf)
    expected = {0: selected, 1: hashlib.sha256(selected).digest(), 2: hashlib.sha512(selected).digest()}[mtype]
    assert record == TlsaRecord(2, selector, mtype, expected)
    assert usable(record) is None


def test_tlsa_for_certificate_errors(leaf: bytes) -> None:
    for bad in (b"not a certificate", "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", 42):
        with pytest.raises(TlsaError):
            tlsa_for_certificate(bad)  # type: ignore[arg-type]
    with pytest.raises(TlsaError):
        tlsa_for_certificate(leaf, 3, 2, 1)
    with pytest.raises(TlsaError):
        tlsa_for_certificate(leaf, 3, 1, 3)
    with pytest.raises(TlsaError):
        tlsa_for_certificate(leaf, 256, 1, 1)


def test_dane_h_12_tlsa_owner() -> None:
    assert tlsa_owner("mx.example.com") == "_25._tcp.mx.example.com."
    assert tlsa_owner("MX.Example.COM.") == "_25._tcp.mx.example.com."
    assert tlsa_owner("mx.example.com", 465) == "_465._tcp.mx.example.com."
    assert tlsa_owner("bücher.example") == "_25._tcp.xn--bcher-kva.example."
    with pytest.raises(DomainError):
        tlsa_owner("192.0.2.1")
    with pytest.raises(TlsaError):
        tlsa_owner("mx.example.com", 0)
