"""What one policy fetch gave (RFC 8461 §3.3): the body, or the problem that stopped it, and the RFC 8460
result type a sending MTA reports for that problem. Pure data, no I/O.

The HTTPS adapter (:mod:`mxsec.net.https`) returns a :class:`FetchOutcome`; the daemon's service and the
checker's rules read it; tests build it by hand.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from mxsec.results import ResultType

__all__ = ["FetchOutcome", "FetchProblem", "result_type_for"]


@dataclass(frozen=True)
class FetchOutcome:
    """``body`` when the fetch succeeded (``problem`` ``None``); else ``problem`` and ``detail`` say why.
    ``status``, ``content_type`` and ``address`` are the HTTP status, the media type and the address the
    answer came from, and ``certificate_not_after`` when the policy host's certificate expires, when known."""

    body: bytes | None
    problem: FetchProblem | None
    detail: str
    status: int | None = None
    content_type: str | None = None
    address: str | None = None
    #: when the policy host's certificate expires (unix time), when the answer came over verified TLS
    certificate_not_after: float | None = None

    @property
    def ok(self) -> bool:
        return self.problem is None and self.body is not None


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
