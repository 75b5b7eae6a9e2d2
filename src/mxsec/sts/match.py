"""Matching MX host names against policy ``mx`` patterns (RFC 8461 §4.1). Sans-I/O.

* The MX host **name** (as found in the MX record, before any CNAME expansion, STS-E-2) is matched, never
  an address and never the certificate (EC-22).
* ``*`` is only valid as the whole left-most label of a pattern and stands for exactly one label
  (STS-E-3): ``*.example.com`` matches ``mail.example.com`` but neither ``example.com`` nor
  ``a.b.example.com``.
* Comparison is case-insensitive on A-labels; the trailing root dot of the host is removed (STS-E-4). A
  U-label host is converted to A-labels first. Patterns must already be A-labels (STS-C-6): a pattern with
  non-ASCII characters matches nothing.
* Odd input never raises; it simply does not match.
"""

from __future__ import annotations

from collections.abc import Iterable

from mxsec.names import DomainError, normalize_domain

__all__ = ["matching_pattern", "mx_matches"]


def _host_name(host: object) -> str | None:
    if not isinstance(host, str):
        return None
    try:
        return normalize_domain(host)
    except DomainError:
        return None


def _split_pattern(pattern: object) -> tuple[bool, str] | None:
    """Return ``(is_wildcard, base_name)`` for a usable pattern, else ``None``."""
    if not isinstance(pattern, str) or not pattern.isascii():
        return None
    wildcard = pattern.startswith("*.")
    base = pattern[2:] if wildcard else pattern
    if not base or "*" in base:
        return None
    try:
        return wildcard, normalize_domain(base)
    except DomainError:
        return None


def mx_matches(pattern: str, host: str) -> bool:
    """True when MX host name *host* matches policy pattern *pattern*. Never raises."""
    try:
        parsed = _split_pattern(pattern)
        if parsed is None:
            return False
        name = _host_name(host)
        if name is None:
            return False
        wildcard, base = parsed
        if not wildcard:
            return name == base
        first, dot, rest = name.partition(".")
        return bool(dot) and bool(first) and rest == base
    except Exception:  # noqa: BLE001 - contract: matching never raises
        return False


def matching_pattern(patterns: Iterable[str], host: str) -> str | None:
    """The first pattern (as given) that *host* matches, or ``None``. Never raises."""
    try:
        name = _host_name(host)
        if name is None:
            return None
        for pattern in patterns:
            if mx_matches(pattern, name):
                return pattern
    except Exception:  # noqa: BLE001 - e.g. a non-iterable patterns argument
        return None
    return None
