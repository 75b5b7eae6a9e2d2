"""mxsec.dane.verify: presented chains against TLSA records (DANE-H-18..H-36, EC-31..EC-33).

Every chain is generated here with mxsec.testing.pki. Tables: each row is
``(row id, records(w), chain(w), names, expected)`` where ``w`` is the module's certificate world and
``expected`` is ``(ok, authenticated, result_type)``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from types import SimpleNamespace

import pytest

from mxsec.dane.tlsa import TlsaRecord, spki_of_certificate, tlsa_for_certificate
from mxsec.dane.verify import ANCHOR_FROM_DNS, MAX_CHAIN, DaneResult, verify_chain
from mxsec.testing.pki import TestCA, new_key, pem_to_der, self_signed

NOW = dt.datetime.now(dt.UTC)
NAME = "mx.example.test"
OK = (True, True, None)
FAIL = (False, False, "validation-failure")
EXPIRED = (False, False, "certificate-expired")
MISMATCH = (False, False, "certificate-host-mismatch")
UNAUTHENTICATED = (True, False, "tlsa-invalid")


def tlsa(cert: bytes, usage: int = 3, selector: int = 1, mtype: int = 1) -> TlsaRecord:
    return tlsa_for_certificate(cert, usage, selector, mtype)


@pytest.fixture(scope="module")
def w() -> SimpleNamespace:
    day = dt.timedelta(days=1)
    root = TestCA("dane test root")
    sub = root.intermediate("dane issuing CA")
    expired_sub = root.intermediate("dane expired CA", not_before=NOW - 400 * day, not_after=NOW - day)
    not_ca = root.intermediate("dane not-a-CA", ca=False)
    impostor = TestCA("dane issuing CA")  # same name as sub, other key
    private = TestCA("private CA, in no WebPKI store")

    def leaf(ca: TestCA, names: list[str] = [NAME], **kwargs: object) -> bytes:  # noqa: B006
        return pem_to_der(ca.issue(names, fresh_key=True, **kwargs)[0])  # type: ignore[arg-type]

    key = new_key()
    return SimpleNamespace(
        root=root.cert_der,
        sub=sub.cert_der,
        expired_sub=expired_sub.cert_der,
        not_ca=not_ca.cert_der,
        private=private.cert_der,
        other_root=TestCA("unrelated root").cert_der,
        leaf=leaf(sub),
        leaf_same_key=pem_to_der(sub.issue([NAME], key=key)[0]),
        leaf_same_key_2=pem_to_der(sub.issue([NAME, "second.example.test"], key=key)[0]),
        direct=leaf(root),
        private_leaf=leaf(private),
        expired=leaf(sub, not_before=NOW - 30 * day, not_after=NOW - day),
        future=leaf(sub, not_before=NOW + day, not_after=NOW + 30 * day),
        wrong_name=leaf(sub, ["other.example.test"]),
        wildcard=leaf(sub, ["*.example.test"]),
        cn_only=leaf(sub, [], common_name=NAME),
        san_and_cn=leaf(sub, ["other.example.test"], common_name=NAME),
        upper=leaf(sub, ["MX.Example.TEST"]),
        under_expired_sub=leaf(expired_sub),
        under_not_ca=leaf(not_ca),
        forged=leaf(impostor),
        self_signed=pem_to_der(self_signed([NAME], key=new_key())[0]),
    )


Row = tuple[str, Callable[[SimpleNamespace], list[TlsaRecord]], Callable[[SimpleNamespace], list[bytes]], tuple[str, ...], tuple[bool, bool, str | None]]


def run_row(w: SimpleNamespace, row: Row) -> DaneResult:
    _, records, chain, names, (ok, authenticated, result_type) = row
    result = verify_chain(records(w), chain(w), names=names, now=NOW)
    assert (result.ok, result.authenticated, result.result_type) == (ok, authenticated, result_type), result.reason
    assert result.tls_required
    assert (result.matched is not None) == authenticated
    return result


def rows(*table: Row) -> pytest.MarkDecorator:
    return pytest.mark.parametrize("row", table, ids=[r[0] for r in table])


N = (NAME,)

# --- DANE-EE(3) ----------------------------------------------------------------------------------------------


@rows(
    ("leaf-only-3-1-1", lambda w: [tlsa(w.direct)], lambda w: [w.direct], N, OK),
    ("leaf+intermediate-3-1-1", lambda w: [tlsa(w.leaf)], lambda w: [w.leaf, w.sub], N, OK),
    ("private-ca-3-1-1", lambda w: [tlsa(w.private_leaf)], lambda w: [w.private_leaf, w.private], N, OK),
    ("self-signed-3-1-1", lambda w: [tlsa(w.self_signed)], lambda w: [w.self_signed], N, OK),
    ("unrelated-rest-of-chain", lambda w: [tlsa(w.leaf)], lambda w: [w.leaf, w.other_root, w.private], N, OK),
    ("no-names-needed", lambda w: [tlsa(w.leaf)], lambda w: [w.leaf], (), OK),
    ("other-leaf", lambda w: [tlsa(w.leaf)], lambda w: [w.direct, w.sub], N, FAIL),
    ("ee-record-of-the-ca", lambda w: [tlsa(w.sub)], lambda w: [w.leaf, w.sub], N, FAIL),
)
def test_dane_h_26_dane_ee_matches_leaf_only(w: SimpleNamespace, row: Row) -> None:
    result = run_row(w, row)
    if result.ok:
        assert result.depth == 0


@rows(
    ("wrong-name-3-1-1", lambda w: [tlsa(w.wrong_name)], lambda w: [w.wrong_name, w.sub], N, OK),
    ("wrong-name-3-0-1", lambda w: [tlsa(w.wrong_name, 3, 0, 1)], lambda w: [w.wrong_name], N, OK),
)
def test_dane_h_26_dane_ee_ignores_names(w: SimpleNamespace, row: Row) -> None:
    run_row(w, row)


@rows(
    ("expired-3-1-1", lambda w: [tlsa(w.expired)], lambda w: [w.expired, w.sub], N, OK),
    ("not-yet-valid-3-1-1", lambda w: [tlsa(w.future)], lambda w: [w.future, w.sub], N, OK),
    ("under-expired-ca-3-1-1", lambda w: [tlsa(w.under_expired_sub)], lambda w: [w.under_expired_sub, w.expired_sub], N, OK),
    ("under-non-ca-3-1-1", lambda w: [tlsa(w.under_not_ca)], lambda w: [w.under_not_ca, w.not_ca], N, OK),
    ("forged-issuer-3-1-1", lambda w: [tlsa(w.forged)], lambda w: [w.forged, w.sub], N, OK),
)
def test_dane_h_27_dane_ee_no_expiry_or_chain_checks(w: SimpleNamespace, row: Row) -> None:
    run_row(w, row)


# --- selectors and matching types ---------------------------------------------------------------------------


@rows(
    ("3-0-1-cert", lambda w: [tlsa(w.leaf, 3, 0, 1)], lambda w: [w.leaf], N, OK),
    ("3-1-1-spki", lambda w: [tlsa(w.leaf, 3, 1, 1)], lambda w: [w.leaf], N, OK),
    ("3-0-1-with-spki-digest", lambda w: [TlsaRecord(3, 0, 1, tlsa(w.leaf, 3, 1, 1).data)], lambda w: [w.leaf], N, FAIL),
    ("3-1-1-with-cert-digest", lambda w: [TlsaRecord(3, 1, 1, tlsa(w.leaf, 3, 0, 1).data)], lambda w: [w.leaf], N, FAIL),
    ("same-key-new-cert-3-1-1", lambda w: [tlsa(w.leaf_same_key, 3, 1, 1)], lambda w: [w.leaf_same_key_2], N, OK),
    ("same-key-new-cert-3-0-1", lambda w: [tlsa(w.leaf_same_key, 3, 0, 1)], lambda w: [w.leaf_same_key_2], N, FAIL),
    ("2-0-1-intermediate", lambda w: [tlsa(w.sub, 2, 0, 1)], lambda w: [w.leaf, w.sub], N, OK),
    ("2-1-1-intermediate", lambda w: [tlsa(w.sub, 2, 1, 1)], lambda w: [w.leaf, w.sub], N, OK),
)
def test_dane_h_34_selector_cert_vs_spki(w: SimpleNamespace, row: Row) -> None:
    run_row(w, row)


@rows(
    ("3-1-0", lambda w: [tlsa(w.leaf, 3, 1, 0)], lambda w: [w.leaf], N, OK),
    ("3-0-0", lambda w: [tlsa(w.leaf, 3, 0, 0)], lambda w: [w.leaf], N, OK),
    ("3-1-2", lambda w: [tlsa(w.leaf, 3, 1, 2)], lambda w: [w.leaf], N, OK),
    ("3-0-2", lambda w: [tlsa(w.leaf, 3, 0, 2)], lambda w: [w.leaf], N, OK),
    ("3-1-0-other-key", lambda w: [tlsa(w.direct, 3, 1, 0)], lambda w: [w.leaf], N, FAIL),
    ("2-1-0-in-chain", lambda w: [tlsa(w.sub, 2, 1, 0)], lambda w: [w.leaf, w.sub], N, OK),
    ("2-0-2-in-chain", lambda w: [tlsa(w.sub, 2, 0, 2)], lambda w: [w.leaf, w.sub], N, OK),
)
def test_dane_h_35_matching_types_full_sha256_sha512(w: SimpleNamespace, row: Row) -> None:
    run_row(w, row)


def test_dane_h_20_wrong_digest_length_unusable(w: SimpleNamespace) -> None:
    short = TlsaRecord(3, 1, 1, tlsa(w.leaf).data[:31])
    result = verify_chain([short], [w.leaf], names=N, now=NOW)
    assert (result.ok, result.authenticated, result.result_type) == UNAUTHENTICATED
    assert result.unusable == ((short, "SHA2-256 data is 31 octets, not 32"),)


# --- usable / unusable sets ---------------------------------------------------------------------------------


@rows(
    ("only-pkix", lambda w: [tlsa(w.leaf, 0), tlsa(w.leaf, 1)], lambda w: [w.leaf], N, UNAUTHENTICATED),
    ("only-pkix-garbage-chain", lambda w: [tlsa(w.leaf, 1, 0, 1)], lambda w: [b"garbage"], N, UNAUTHENTICATED),
    ("only-pkix-empty-chain", lambda w: [tlsa(w.leaf, 0, 0, 1)], lambda w: [], N, UNAUTHENTICATED),
)
def test_ec_33_dane_h_24_only_pkix_usages_no_usable_records(w: SimpleNamespace, row: Row) -> None:
    result = run_row(w, row)
    assert len(result.unusable) == len(row[1](w))
    assert all("not used for SMTP" in reason for _, reason in result.unusable)


def test_dane_h_18_all_unusable_tls_required_unauthenticated(w: SimpleNamespace) -> None:
    records = [TlsaRecord(3, 1, 1, b"\x00"), TlsaRecord(4, 1, 1, bytes(32)), TlsaRecord(3, 2, 1, bytes(32))]
    result = verify_chain(records, [w.wrong_name], names=N, now=NOW)
    assert result == DaneResult(
        ok=True,
        matched=None,
        result_type="tlsa-invalid",
        reason=result.reason,
        unusable=tuple((r, result.unusable[i][1]) for i, r in enumerate(records)),
        authenticated=False,
        tls_required=True,
    )


def test_dane_h_19_no_records_dane_does_not_apply(w: SimpleNamespace) -> None:
    result = verify_chain([], [w.leaf], names=N, now=NOW)
    assert (result.ok, result.authenticated, result.tls_required, result.result_type) == (True, False, False, None)


@rows(
    ("3-1-1-other-key", lambda w: [tlsa(w.direct)], lambda w: [w.leaf, w.sub], N, FAIL),
    ("2-1-1-other-ca", lambda w: [tlsa(w.private, 2)], lambda w: [w.leaf, w.sub], N, FAIL),
    ("both-miss", lambda w: [tlsa(w.direct), tlsa(w.private, 2)], lambda w: [w.leaf, w.sub], N, FAIL),
)
def test_dane_h_22_usable_records_none_matches(w: SimpleNamespace, row: Row) -> None:
    run_row(w, row)


@rows(
    ("ee-miss-ta-match", lambda w: [tlsa(w.direct), tlsa(w.sub, 2)], lambda w: [w.leaf, w.sub], N, OK),
    ("ee-match-ta-miss", lambda w: [tlsa(w.leaf), tlsa(w.private, 2)], lambda w: [w.leaf, w.sub], N, OK),
    ("two-ee-one-matches", lambda w: [tlsa(w.direct), tlsa(w.leaf, 3, 0, 1)], lambda w: [w.leaf], N, OK),
    ("pkix-plus-matching-ee", lambda w: [tlsa(w.direct, 1), tlsa(w.leaf)], lambda w: [w.leaf], N, OK),
)
def test_ec_32_dane_h_23_any_single_usable_match_suffices(w: SimpleNamespace, row: Row) -> None:
    run_row(w, row)


def test_ec_32_matched_record_is_the_ta_record(w: SimpleNamespace) -> None:
    ta = tlsa(w.sub, 2)
    result = verify_chain([tlsa(w.direct), ta], [w.leaf, w.sub], names=N, now=NOW)
    assert result.ok and result.matched == ta and result.depth == 1


def test_ec_32_failure_reports_the_furthest_check(w: SimpleNamespace) -> None:
    # DANE-EE misses, DANE-TA chains fine but the name is wrong: report the name, not "no match".
    result = verify_chain([tlsa(w.direct), tlsa(w.sub, 2)], [w.wrong_name, w.sub], names=N, now=NOW)
    assert result.result_type == "certificate-host-mismatch"


# --- digest agility -----------------------------------------------------------------------------------------


@rows(
    ("311-match-312-miss", lambda w: [tlsa(w.leaf, 3, 1, 1), tlsa(w.direct, 3, 1, 2)], lambda w: [w.leaf], N, FAIL),
    ("311-miss-312-match", lambda w: [tlsa(w.direct, 3, 1, 1), tlsa(w.leaf, 3, 1, 2)], lambda w: [w.leaf], N, OK),
    ("311-match-312-miss-310-match", lambda w: [tlsa(w.leaf, 3, 1, 1), tlsa(w.direct, 3, 1, 2), tlsa(w.leaf, 3, 1, 0)], lambda w: [w.leaf], N, OK),
    ("311-match-302-miss-other-selector", lambda w: [tlsa(w.leaf, 3, 1, 1), tlsa(w.direct, 3, 0, 2)], lambda w: [w.leaf], N, OK),
    ("211-match-212-miss", lambda w: [tlsa(w.sub, 2, 1, 1), tlsa(w.private, 2, 1, 2)], lambda w: [w.leaf, w.sub], N, FAIL),
    ("311-match-312-malformed", lambda w: [tlsa(w.leaf, 3, 1, 1), TlsaRecord(3, 1, 2, bytes(32))], lambda w: [w.leaf], N, OK),
)
def test_dane_h_36_strongest_digest_wins(w: SimpleNamespace, row: Row) -> None:
    result = run_row(w, row)
    if row[0] == "311-match-312-miss":
        assert any("digest agility" in reason for _, reason in result.unusable)


def test_dane_h_37_order_changes_the_outcome(w: SimpleNamespace) -> None:
    records = [tlsa(w.leaf, 3, 1, 1), tlsa(w.direct, 3, 1, 2)]
    assert verify_chain(records, [w.leaf], names=N, now=NOW, order=(1, 2)).ok


# --- DANE-TA(2) ---------------------------------------------------------------------------------------------


@rows(
    ("2-1-1-intermediate", lambda w: [tlsa(w.sub, 2)], lambda w: [w.leaf, w.sub], N, OK),
    ("2-1-1-private-root", lambda w: [tlsa(w.private, 2)], lambda w: [w.private_leaf, w.private], N, OK),
    ("2-0-1-root-in-chain", lambda w: [tlsa(w.root, 2, 0, 1)], lambda w: [w.leaf, w.sub, w.root], N, OK),
    ("2-1-1-root-unordered", lambda w: [tlsa(w.root, 2)], lambda w: [w.leaf, w.root, w.sub], N, OK),
    ("2-1-1-extra-unrelated-certs", lambda w: [tlsa(w.sub, 2)], lambda w: [w.leaf, w.other_root, w.private, w.sub], N, OK),
    ("2-1-1-direct-from-root", lambda w: [tlsa(w.root, 2)], lambda w: [w.direct, w.root], N, OK),
)
def test_ec_31_dane_h_29_ta_is_the_matching_chain_certificate(w: SimpleNamespace, row: Row) -> None:
    run_row(w, row)


@rows(
    ("forged-issuer-signature", lambda w: [tlsa(w.sub, 2)], lambda w: [w.forged, w.sub], N, FAIL),
    ("leaf-of-other-ca", lambda w: [tlsa(w.sub, 2)], lambda w: [w.direct, w.sub], N, FAIL),
    ("missing-intermediate", lambda w: [tlsa(w.root, 2)], lambda w: [w.leaf, w.root], N, FAIL),
    ("intermediate-not-a-ca", lambda w: [tlsa(w.root, 2)], lambda w: [w.under_not_ca, w.not_ca, w.root], N, FAIL),
    ("intermediate-expired", lambda w: [tlsa(w.root, 2)], lambda w: [w.under_expired_sub, w.expired_sub, w.root], N, EXPIRED),
    ("leaf-expired", lambda w: [tlsa(w.sub, 2)], lambda w: [w.expired, w.sub], N, EXPIRED),
    ("leaf-not-yet-valid", lambda w: [tlsa(w.sub, 2)], lambda w: [w.future, w.sub], N, FAIL),
)
def test_dane_h_29_ta_chain_signatures_and_validity_checked(w: SimpleNamespace, row: Row) -> None:
    run_row(w, row)


def test_dane_h_27_expired_leaf_3_1_1_ok_but_2_1_1_expired(w: SimpleNamespace) -> None:
    assert verify_chain([tlsa(w.expired)], [w.expired, w.sub], names=N, now=NOW).ok
    result = verify_chain([tlsa(w.sub, 2)], [w.expired, w.sub], names=N, now=NOW)
    assert (result.ok, result.result_type) == (False, "certificate-expired")


def test_dane_h_29_ta_own_expiry_not_checked(w: SimpleNamespace) -> None:
    run_row(w, ("ta-expired", lambda w: [tlsa(w.expired_sub, 2)], lambda w: [w.under_expired_sub, w.expired_sub], N, OK))


def test_dane_h_29_ta_need_not_be_a_ca(w: SimpleNamespace) -> None:
    run_row(w, ("ta-not-ca", lambda w: [tlsa(w.not_ca, 2)], lambda w: [w.under_not_ca, w.not_ca], N, OK))


def test_dane_h_29_leaf_is_no_trust_anchor_unless_self_issued(w: SimpleNamespace) -> None:
    run_row(w, ("2-1-1-leaf", lambda w: [tlsa(w.leaf, 2)], lambda w: [w.leaf, w.sub], N, FAIL))
    result = run_row(w, ("2-0-1-self-signed", lambda w: [tlsa(w.self_signed, 2, 0, 1)], lambda w: [w.self_signed], N, OK))
    assert result.depth == 0
    run_row(w, ("2-0-1-self-signed-name", lambda w: [tlsa(w.self_signed, 2, 0, 1)], lambda w: [w.self_signed], ("x.test",), MISMATCH))


@rows(
    ("2-1-1-root-absent", lambda w: [tlsa(w.root, 2, 1, 1)], lambda w: [w.leaf, w.sub], N, FAIL),
    ("2-0-1-root-absent", lambda w: [tlsa(w.root, 2, 0, 1)], lambda w: [w.leaf, w.sub], N, FAIL),
    ("2-1-2-root-absent", lambda w: [tlsa(w.root, 2, 1, 2)], lambda w: [w.leaf, w.sub], N, FAIL),
    ("2-0-0-root-absent", lambda w: [tlsa(w.root, 2, 0, 0)], lambda w: [w.leaf, w.sub], N, OK),
    ("2-0-0-sub-absent", lambda w: [tlsa(w.sub, 2, 0, 0)], lambda w: [w.leaf], N, OK),
    ("2-0-0-absent-wrong-ta", lambda w: [tlsa(w.private, 2, 0, 0)], lambda w: [w.leaf, w.sub], N, FAIL),
    ("2-0-0-absent-name-mismatch", lambda w: [tlsa(w.root, 2, 0, 0)], lambda w: [w.wrong_name, w.sub], N, MISMATCH),
    ("2-0-0-absent-expired-intermediate", lambda w: [tlsa(w.root, 2, 0, 0)], lambda w: [w.under_expired_sub, w.expired_sub], N, EXPIRED),
)
def test_dane_h_30_ec_31_digest_ta_must_be_in_chain_full_cert_need_not(w: SimpleNamespace, row: Row) -> None:
    result = run_row(w, row)
    if result.ok:
        assert result.depth == ANCHOR_FROM_DNS


@rows(
    ("2-1-0-root-absent", lambda w: [tlsa(w.root, 2, 1, 0)], lambda w: [w.leaf, w.sub], N, OK),
    ("2-1-0-sub-absent", lambda w: [tlsa(w.sub, 2, 1, 0)], lambda w: [w.leaf], N, OK),
    ("2-1-0-wrong-key", lambda w: [tlsa(w.private, 2, 1, 0)], lambda w: [w.leaf, w.sub], N, FAIL),
    ("2-1-0-forged-issuer", lambda w: [tlsa(w.sub, 2, 1, 0)], lambda w: [w.forged], N, FAIL),
    ("2-1-0-expired-top", lambda w: [tlsa(w.root, 2, 1, 0)], lambda w: [w.under_expired_sub, w.expired_sub], N, EXPIRED),
)
def test_dane_h_31_full_ta_key_absent_from_chain(w: SimpleNamespace, row: Row) -> None:
    run_row(w, row)


# --- names under DANE-TA(2) ---------------------------------------------------------------------------------


@rows(
    ("exact", lambda w: [tlsa(w.sub, 2)], lambda w: [w.leaf, w.sub], N, OK),
    ("wrong-name", lambda w: [tlsa(w.sub, 2)], lambda w: [w.wrong_name, w.sub], N, MISMATCH),
    ("no-reference-names", lambda w: [tlsa(w.sub, 2)], lambda w: [w.leaf, w.sub], (), MISMATCH),
    ("second-reference-name", lambda w: [tlsa(w.sub, 2)], lambda w: [w.wrong_name, w.sub], (NAME, "other.example.test"), OK),
    ("case-insensitive", lambda w: [tlsa(w.sub, 2)], lambda w: [w.upper, w.sub], ("mx.EXAMPLE.test.",), OK),
    ("cn-only-without-san", lambda w: [tlsa(w.sub, 2)], lambda w: [w.cn_only, w.sub], N, OK),
    ("cn-ignored-with-dns-san", lambda w: [tlsa(w.sub, 2)], lambda w: [w.san_and_cn, w.sub], N, MISMATCH),
    ("unusable-reference-name", lambda w: [tlsa(w.sub, 2)], lambda w: [w.leaf, w.sub], ("192.0.2.1", "", "a..b"), MISMATCH),
)
def test_dane_h_33_ta_name_checks(w: SimpleNamespace, row: Row) -> None:
    run_row(w, row)


@rows(
    ("one-label", lambda w: [tlsa(w.sub, 2)], lambda w: [w.wildcard, w.sub], N, OK),
    ("other-label", lambda w: [tlsa(w.sub, 2)], lambda w: [w.wildcard, w.sub], ("smtp.example.test",), OK),
    ("two-labels", lambda w: [tlsa(w.sub, 2)], lambda w: [w.wildcard, w.sub], ("a.mx.example.test",), MISMATCH),
    ("no-label", lambda w: [tlsa(w.sub, 2)], lambda w: [w.wildcard, w.sub], ("example.test",), MISMATCH),
    ("other-domain", lambda w: [tlsa(w.sub, 2)], lambda w: [w.wildcard, w.sub], ("mx.example.org",), MISMATCH),
)
def test_dane_h_33_wildcard_left_most_label_only(w: SimpleNamespace, row: Row) -> None:
    run_row(w, row)


@pytest.mark.parametrize(
    ("pattern", "reference", "expected"),
    [
        ("*.example.test", "mx.example.test", True),
        ("*.test", "example.test", False),  # a wildcard needs two labels after it
        ("m*.example.test", "mx.example.test", False),  # partial-label wildcards are not accepted
        ("mx.*.test", "mx.example.test", False),
        ("*.*.test", "a.b.test", False),
        ("*", "test", False),
        ("mx.example.test", "mx.example.test", True),
    ],
)
def test_dane_h_33_wildcard_patterns(pattern: str, reference: str, expected: bool) -> None:
    from mxsec.dane.verify import _dns_match

    assert _dns_match(pattern, reference) is expected


# --- hostile or odd input -----------------------------------------------------------------------------------


@rows(
    ("malformed-leaf", lambda w: [tlsa(w.leaf)], lambda w: [b"\x30\x82\x01\x00junk"], N, FAIL),
    ("malformed-intermediate", lambda w: [tlsa(w.leaf)], lambda w: [w.leaf, w.sub[:-5]], N, FAIL),
    ("trailing-garbage", lambda w: [tlsa(w.leaf)], lambda w: [w.leaf + b"\x00"], N, FAIL),
    ("empty-chain", lambda w: [tlsa(w.leaf)], lambda w: [], N, FAIL),
    ("empty-element", lambda w: [tlsa(w.leaf)], lambda w: [b""], N, FAIL),
    ("not-bytes", lambda w: [tlsa(w.leaf)], lambda w: ["text"], N, FAIL),
    ("too-long", lambda w: [tlsa(w.leaf)], lambda w: [w.leaf] + [w.sub] * MAX_CHAIN, N, FAIL),
    ("longest-allowed", lambda w: [tlsa(w.sub, 2)], lambda w: [w.leaf] + [w.other_root] * (MAX_CHAIN - 2) + [w.sub], N, OK),
)
def test_malformed_chains_are_validation_failures(w: SimpleNamespace, row: Row) -> None:
    run_row(w, row)


def test_naive_now_is_utc_and_bytearray_chain(w: SimpleNamespace) -> None:
    naive = NOW.replace(tzinfo=None)
    assert verify_chain([tlsa(w.sub, 2)], [bytearray(w.leaf), memoryview(w.sub)], names=N, now=naive).ok


def test_now_decides_validity(w: SimpleNamespace) -> None:
    later = NOW + dt.timedelta(days=60)  # the leaf (30 days) has expired by then; the CA has not
    result = verify_chain([tlsa(w.sub, 2)], [w.leaf, w.sub], names=N, now=later)
    assert result.result_type == "certificate-expired"
    with pytest.raises(TypeError):
        verify_chain([tlsa(w.sub, 2)], [w.leaf, w.sub], names=N, now="2024-01-01")  # type: ignore[arg-type]


def test_spki_digest_uses_the_encoded_spki(w: SimpleNamespace) -> None:
    record = TlsaRecord(3, 1, 0, spki_of_certificate(w.leaf))
    assert verify_chain([record], [w.leaf], names=N, now=NOW).ok


# --- DANE-H-32: name constraints of the trust anchor and intermediates ----------------------------------------


@pytest.fixture(scope="module")
def nc() -> SimpleNamespace:
    root = TestCA("nc root")
    only_example = root.intermediate("nc permits example.test", permitted=["example.test"])
    not_mx = root.intermediate("nc excludes mx.example.test", excluded=["mx.example.test"])
    return SimpleNamespace(
        root=root.cert_der, only_example=only_example.cert_der, not_mx=not_mx.cert_der,
        inside=pem_to_der(only_example.issue([NAME], fresh_key=True)[0]),
        outside=pem_to_der(only_example.issue([NAME, "mx.elsewhere.test"], fresh_key=True)[0]),
        excluded=pem_to_der(not_mx.issue([NAME], fresh_key=True)[0]),
    )


@pytest.mark.parametrize(("leaf", "ca", "anchor", "expected"), [
    ("inside", "only_example", "ca", OK),
    ("inside", "only_example", "root", OK),
    ("outside", "only_example", "ca", FAIL),    # the anchor's own constraints apply
    ("outside", "only_example", "root", FAIL),  # an intermediate below the anchor constrains too
    ("excluded", "not_mx", "ca", FAIL),
])
def test_dane_h_32_ta_name_constraints_applied(nc: SimpleNamespace, leaf: str, ca: str, anchor: str,
                                               expected: tuple) -> None:
    chain = [getattr(nc, leaf), getattr(nc, ca), nc.root]
    anchor_der = getattr(nc, ca) if anchor == "ca" else nc.root
    result = verify_chain([tlsa(anchor_der, usage=2)], chain, names=N, now=NOW)
    assert (result.ok, result.authenticated, result.result_type) == expected, result.reason
    if not result.ok:
        assert "name constraints" in result.reason


def test_dane_h_32_constraints_do_not_apply_to_dane_ee(nc: SimpleNamespace) -> None:
    result = verify_chain([tlsa(nc.outside)], [nc.outside, nc.only_example], names=N, now=NOW)
    assert result.ok and result.authenticated


def test_dane_h_25_pkix_records_are_not_mixed_into_dane_processing(w: SimpleNamespace) -> None:
    # A PKIX-EE(1) record that would match the leaf is ignored; the DANE-TA record decides alone.
    records = [tlsa(w.leaf, usage=1), tlsa(w.other_root, usage=2)]
    result = verify_chain(records, [w.leaf, w.sub, w.root], names=N, now=NOW)
    assert not result.ok and result.matched is None
    assert any(r.usage == 1 for r, _why in result.unusable)
