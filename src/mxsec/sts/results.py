"""RFC 8460 result types and the ways an MTA-STS policy fetch can fail. Sans-I/O."""

from __future__ import annotations

import enum

__all__ = ["FetchProblem", "ResultType", "result_type_for"]


class ResultType(str, enum.Enum):
    """The ``result-type`` values of RFC 8460 §4.3 (the value is the name used in reports)."""

    # §4.3.1 Negotiation failures
    STARTTLS_NOT_SUPPORTED = "starttls-not-supported"
    CERTIFICATE_HOST_MISMATCH = "certificate-host-mismatch"
    CERTIFICATE_EXPIRED = "certificate-expired"
    CERTIFICATE_NOT_TRUSTED = "certificate-not-trusted"
    VALIDATION_FAILURE = "validation-failure"
    # §4.3.2.1 DANE-specific policy failures
    TLSA_INVALID = "tlsa-invalid"
    DNSSEC_INVALID = "dnssec-invalid"
    DANE_REQUIRED = "dane-required"
    # §4.3.2.2 MTA-STS-specific policy failures
    STS_POLICY_FETCH_ERROR = "sts-policy-fetch-error"
    STS_POLICY_INVALID = "sts-policy-invalid"
    STS_WEBPKI_INVALID = "sts-webpki-invalid"

    def __str__(self) -> str:
        return self.value

    @property
    def group(self) -> str:
        """The RFC 8460 §4.3 group: ``TLS negotiation`` (§4.3.1), ``DANE`` (§4.3.2.1) or ``MTA-STS``
        (§4.3.2.2)."""
        if self.value.startswith("sts-"):
            return "MTA-STS"
        if self in (ResultType.TLSA_INVALID, ResultType.DNSSEC_INVALID, ResultType.DANE_REQUIRED):
            return "DANE"
        return "TLS negotiation"


class FetchProblem(str, enum.Enum):
    """Every way fetching ``https://mta-sts.<domain>/.well-known/mta-sts.txt`` can fail (RFC 8461 §3.3)."""

    DNS_ERROR = "dns-error"  # the policy host has no address, or its lookup failed
    CONNECT_ERROR = "connect-error"  # TCP connection refused, reset or unreachable
    TIMEOUT = "timeout"  # the total deadline passed (§3.3 allows a time-out)
    TLS_ERROR = "tls-error"  # TLS handshake failed, or the server offers less than TLS 1.2 (§7.2)
    CERTIFICATE_INVALID = "certificate-invalid"  # untrusted, expired or wrong-name certificate (§3.3)
    HTTP_STATUS = "http-status"  # any status other than 200 (§3.3)
    REDIRECT = "redirect"  # a 3xx answer; redirects are never followed (§3.3)
    MEDIA_TYPE = "media-type"  # Content-Type is not text/plain (§3.2)
    TOO_LARGE = "too-large"  # the body exceeds the size cap (§3.3)
    POLICY_INVALID = "policy-invalid"  # the body does not parse as a policy (§3.2)
    ADDRESS_REFUSED = "address-refused"  # the policy host resolves to a forbidden address (SSRF guard)

    def __str__(self) -> str:
        return self.value


# How each fetch problem is reported (RFC 8460 §4.3.2.2):
# * sts-webpki-invalid   "the MTA-STS policy could not be authenticated using PKIX validation": the policy
#                         host's certificate failed (RFC 8461 §3.3: valid for mta-sts.<domain>, trusted chain,
#                         unexpired).
# * sts-policy-invalid   "a validation error for the retrieved STS policy": a body was retrieved but is not a
#                         policy; a wrong media type is the check of RFC 8461 §3.2 on the retrieved document.
# * sts-policy-fetch-error "a failure to retrieve an MTA-STS policy": everything before a policy document is in
#                         hand — name resolution, connection, time-out, TLS handshake (TLS >= 1.2, RFC 8461
#                         §7.2), non-200 status and redirects (RFC 8461 §3.3), a body over the size cap
#                         (RFC 8461 §3.3: the fetch is abandoned), and an address refused by the SSRF guard.
_RESULT_TYPES: dict[FetchProblem, ResultType] = {
    FetchProblem.DNS_ERROR: ResultType.STS_POLICY_FETCH_ERROR,
    FetchProblem.CONNECT_ERROR: ResultType.STS_POLICY_FETCH_ERROR,
    FetchProblem.TIMEOUT: ResultType.STS_POLICY_FETCH_ERROR,
    FetchProblem.TLS_ERROR: ResultType.STS_POLICY_FETCH_ERROR,
    FetchProblem.CERTIFICATE_INVALID: ResultType.STS_WEBPKI_INVALID,
    FetchProblem.HTTP_STATUS: ResultType.STS_POLICY_FETCH_ERROR,
    FetchProblem.REDIRECT: ResultType.STS_POLICY_FETCH_ERROR,
    FetchProblem.MEDIA_TYPE: ResultType.STS_POLICY_INVALID,
    FetchProblem.TOO_LARGE: ResultType.STS_POLICY_FETCH_ERROR,
    FetchProblem.POLICY_INVALID: ResultType.STS_POLICY_INVALID,
    FetchProblem.ADDRESS_REFUSED: ResultType.STS_POLICY_FETCH_ERROR,
}


def result_type_for(problem: FetchProblem) -> ResultType:
    """The RFC 8460 result type a sending MTA reports for *problem* (see the table above)."""
    return _RESULT_TYPES[FetchProblem(problem)]
