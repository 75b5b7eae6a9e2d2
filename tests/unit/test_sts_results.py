"""mxsec.results and mxsec.sts.fetch: RFC 8460 result types (RPT-I-38) and the fetch-problem mapping (STS-B-*, STS-C-15)."""

from __future__ import annotations

import pytest

from mxsec.results import ResultType
from mxsec.sts.fetch import FetchProblem, result_type_for


def test_rpt_i_38_all_eleven_result_types() -> None:
    assert sorted(t.value for t in ResultType) == sorted(
        [
            "starttls-not-supported",
            "certificate-host-mismatch",
            "certificate-expired",
            "certificate-not-trusted",
            "validation-failure",
            "tlsa-invalid",
            "dnssec-invalid",
            "dane-required",
            "sts-policy-fetch-error",
            "sts-policy-invalid",
            "sts-webpki-invalid",
        ]
    )


def test_rpt_i_38_result_types_behave_as_strings() -> None:
    assert ResultType.STS_POLICY_INVALID == "sts-policy-invalid"
    assert str(ResultType.STS_WEBPKI_INVALID) == "sts-webpki-invalid"
    assert f"{ResultType.DANE_REQUIRED}" == "dane-required"
    assert ResultType("tlsa-invalid") is ResultType.TLSA_INVALID


def test_sts_b_13_fetch_problem_values() -> None:
    assert {p.value for p in FetchProblem} == {
        "dns-error",
        "connect-error",
        "timeout",
        "tls-error",
        "certificate-invalid",
        "http-status",
        "redirect",
        "media-type",
        "too-large",
        "policy-invalid",
        "address-refused",
    }
    assert str(FetchProblem.TOO_LARGE) == "too-large"


def test_sts_b_4_certificate_problem_is_webpki_invalid() -> None:
    assert result_type_for(FetchProblem.CERTIFICATE_INVALID) is ResultType.STS_WEBPKI_INVALID


def test_sts_c_15_invalid_policy_is_policy_invalid() -> None:
    assert result_type_for(FetchProblem.POLICY_INVALID) is ResultType.STS_POLICY_INVALID


def test_sts_b_2_wrong_media_type_is_policy_invalid() -> None:
    assert result_type_for(FetchProblem.MEDIA_TYPE) is ResultType.STS_POLICY_INVALID


@pytest.mark.parametrize(
    "problem",
    [
        FetchProblem.DNS_ERROR,  # EC-10: mta-sts name without address
        FetchProblem.CONNECT_ERROR,
        FetchProblem.TIMEOUT,  # STS-B-12
        FetchProblem.TLS_ERROR,  # STS-B-16
        FetchProblem.HTTP_STATUS,  # STS-B-8, EC-10
        FetchProblem.REDIRECT,  # STS-B-9, EC-9
        FetchProblem.TOO_LARGE,  # STS-B-12
        FetchProblem.ADDRESS_REFUSED,
    ],
)
def test_sts_b_8_b_9_b_12_ec_9_ec_10_retrieval_failures_are_fetch_errors(problem: FetchProblem) -> None:
    assert result_type_for(problem) is ResultType.STS_POLICY_FETCH_ERROR


def test_sts_b_13_every_problem_is_mapped_to_an_sts_result_type() -> None:
    for problem in FetchProblem:
        assert result_type_for(problem).value.startswith("sts-")


def test_sts_b_13_mapping_accepts_plain_string_values() -> None:
    assert result_type_for("redirect") is ResultType.STS_POLICY_FETCH_ERROR  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        result_type_for("no-such-problem")  # type: ignore[arg-type]


def test_rpt_result_types_fall_in_the_rfc_8460_groups():
    from mxsec.results import ResultType

    groups = {rt.value: rt.group for rt in ResultType}
    assert [k for k, g in groups.items() if g == "TLS negotiation"] == [
        "starttls-not-supported", "certificate-host-mismatch", "certificate-expired", "certificate-not-trusted",
        "validation-failure"]
    assert [k for k, g in groups.items() if g == "DANE"] == ["tlsa-invalid", "dnssec-invalid", "dane-required"]
    assert [k for k, g in groups.items() if g == "MTA-STS"] == [
        "sts-policy-fetch-error", "sts-policy-invalid", "sts-webpki-invalid"]
