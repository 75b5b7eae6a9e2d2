"""Small helpers the TLSRPT report modules share (:mod:`~mxsec.tlsrpt.report`, :mod:`~mxsec.tlsrpt.ijson`,
:mod:`~mxsec.tlsrpt.parse`, :mod:`~mxsec.tlsrpt.filenames`): a domain name read leniently, a datetime written in
RFC 3339, how a message names a JSON value's type and quotes a piece of the input. Sans-I/O.
"""

from __future__ import annotations

import functools
from datetime import UTC, datetime
from typing import Any

from mxsec.errors import ParseError
from mxsec.names import normalize_domain

__all__ = ["format_datetime", "json_type", "show", "try_domain"]


@functools.lru_cache(maxsize=8192)
def try_domain(text: str) -> str | None:
    """*text* as lower-case A-labels when it is a domain name, else ``None`` (memoised)."""
    try:
        return normalize_domain(text.strip())
    except (ParseError, ValueError, UnicodeError):
        return None


def format_datetime(value: datetime) -> str:
    """*value* in RFC 3339 form in UTC (``…Z``), with a fraction of a second only when it has one."""
    text = value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S")
    if value.microsecond:
        text += f".{value.microsecond:06d}".rstrip("0")
    return text + "Z"


def json_type(value: Any) -> str:
    """The JSON type of a decoded value as a message names it: ``null``, ``a string``, ``an object``…"""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def show(text: str) -> str:
    """*text* quoted for a one-line message, cut to 80 characters."""
    shown = repr(text)
    return shown if len(shown) <= 80 else shown[:77] + "..."
