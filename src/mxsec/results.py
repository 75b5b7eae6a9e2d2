"""RFC 8460 result types (§4.3): the names every part of mxsec reports a TLS problem by. Sans-I/O.

The MTA-STS fetch problems and their result types are in :mod:`mxsec.sts.fetch`; the DANE rules, the log
parsers of the TLSRPT sender, the received reports and the checker all use :class:`ResultType`.
"""

from __future__ import annotations

import enum

__all__ = ["ResultType"]


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

