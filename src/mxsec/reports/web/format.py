"""How the dashboard shows numbers, rates, dates and result types (Jinja filters and globals).

Numbers below a million are written in full with thousands separators; larger ones compactly (``12.3M``),
with the exact value in the element's title. Rates are truncated, never rounded up, so a domain with one
failure in a million sessions reads ``99.99%``, not ``100%``.
"""

from __future__ import annotations

import math
from datetime import date, datetime
from typing import Any

from mxsec.results import ResultType

#: A success rate at or above this is shown as good (green); at or above WARN_RATE as a warning (amber);
#: below as bad (red). TLS failures are rare on a healthy domain, so the bar is high.
GOOD_RATE = 0.999
WARN_RATE = 0.98

_SUFFIXES = ((10**15, "Q"), (10**12, "T"), (10**9, "B"), (10**6, "M"))

#: What each RFC 8460 §4.3 result type means, for the dashboard's titles (the group comes from ResultType).
RESULT_TYPE_HELP: dict[ResultType, str] = {
    ResultType.STARTTLS_NOT_SUPPORTED: "The MX did not offer STARTTLS.",
    ResultType.CERTIFICATE_HOST_MISMATCH: "The MX certificate does not name the MX host.",
    ResultType.CERTIFICATE_EXPIRED: "The MX certificate has expired.",
    ResultType.CERTIFICATE_NOT_TRUSTED: "The MX certificate does not chain to a trusted root.",
    ResultType.VALIDATION_FAILURE: "Another certificate or TLS validation failure.",
    ResultType.TLSA_INVALID: "The TLSA records were erroneous or matched no certificate.",
    ResultType.DNSSEC_INVALID: "The resolver gave no DNSSEC-valid answer.",
    ResultType.DANE_REQUIRED: "The sender requires DANE but found no valid TLSA records.",
    ResultType.STS_POLICY_FETCH_ERROR: "The MTA-STS policy could not be fetched over HTTPS.",
    ResultType.STS_POLICY_INVALID: "The MTA-STS policy was fetched but did not validate.",
    ResultType.STS_WEBPKI_INVALID: "The policy host's HTTPS certificate did not validate.",
}


def count(value: Any) -> str:
    """``1234`` → ``1,234``; ``12_345_678`` → ``12.3M``; ``9e15`` → ``9.0Q``."""
    if value is None:
        return "—"
    number = int(value)
    for size, suffix in _SUFFIXES:
        if abs(number) >= size:
            scaled = number / size
            text = f"{scaled:.1f}" if abs(scaled) < 100 else f"{scaled:.0f}"
            return text + suffix
    return f"{number:,}"


def exact(value: Any) -> str:
    return "" if value is None else f"{int(value):,}"


def percent(rate: float | None) -> str:
    """A success rate (0..1) as text: two decimals above 99% (where the differences matter), one below;
    truncated so that anything short of all sessions never shows as 100%."""
    if rate is None:
        return "—"
    if rate >= 1:
        return "100%"
    digits = 2 if rate >= 0.99 else 1
    scale = 10**digits
    value = math.floor(rate * 100 * scale) / scale
    return f"{value:.{digits}f}%"


def rate_class(rate: float | None) -> str:
    """CSS class for a success rate: ``good``, ``warn``, ``bad`` or ``none`` (no sessions)."""
    if rate is None:
        return "none"
    if rate >= GOOD_RATE:
        return "good"
    if rate >= WARN_RATE:
        return "warn"
    return "bad"


def day(value: date | datetime | None) -> str:
    if value is None:
        return "—"
    if isinstance(value, datetime):
        value = value.date()
    return value.isoformat()


def timestamp(value: datetime | None) -> str:
    if value is None:
        return "—"
    return value.strftime("%Y-%m-%d %H:%M:%S UTC")


def _known(name: str) -> ResultType | None:
    try:
        return ResultType(name)
    except ValueError:
        return None


def result_type_group(name: str) -> str:
    known = _known(name)
    return known.group if known else "other"


def result_type_help(name: str) -> str:
    """The title text for a result type: its RFC 8460 group and meaning, or a note that it is not in the RFC."""
    known = _known(name)
    if known:
        return f"{known.group}: {RESULT_TYPE_HELP[known]}"
    return "Not an RFC 8460 result type (kept as the reporter wrote it)."


def register(env: Any) -> None:
    """Install the filters and globals on a Jinja environment."""
    env.filters.update(
        count=count, exact=exact, percent=percent, rate_class=rate_class, day=day, timestamp=timestamp,
    )
    env.globals.update(
        result_type_help=result_type_help, result_type_group=result_type_group, GOOD_RATE=GOOD_RATE,
        WARN_RATE=WARN_RATE,
    )
