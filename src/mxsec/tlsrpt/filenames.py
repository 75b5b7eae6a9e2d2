"""TLSRPT report file names (RFC 8460 §5.1): ``submitter!policy-domain!begin!end[!unique-id].json[.gz]`` read back
into their parts. Sans-I/O. (The sending side writes them in :mod:`mxsec.tlsrpt.build`.)
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import NamedTuple

from mxsec.tlsrpt.values import try_domain

__all__ = ["ReportFilename", "filename_parts"]


class ReportFilename(NamedTuple):
    """The parts of ``submitter!policy-domain!begin!end[!unique-id].json[.gz]`` (RPT-I-26, RPT-I-27)."""

    submitter: str
    policy_domain: str
    begin: datetime
    end: datetime
    unique_id: str | None


_FILENAME_RE = re.compile(
    r"(?P<submitter>[^!]+)!(?P<domain>[^!]+)!(?P<begin>[0-9]{1,12})!(?P<end>[0-9]{1,12})"
    r"(?:!(?P<id>[^!]+?))?\.json(?:\.gz)?",
    re.IGNORECASE | re.ASCII,
)


def filename_parts(name: str) -> ReportFilename | None:
    """Split a report file name (a path is allowed; only its last component counts); ``None`` when it does
    not follow RFC 8460 §5.1. Domains come back as lower-case A-labels, timestamps as aware UTC datetimes.

    Lenient where it costs nothing: the extension may be in any case, the unique id may hold any character
    but ``!``. Strict where the parts would be wrong: exactly four or five ``!``-separated parts, Unix
    timestamps as digits, valid domain names.
    """
    if not isinstance(name, str) or len(name) > 4096:
        return None
    base = re.split(r"[/\\]", name)[-1]
    match = _FILENAME_RE.fullmatch(base)
    if match is None:
        return None
    submitter = try_domain(match["submitter"])
    domain = try_domain(match["domain"])
    if submitter is None or domain is None:
        return None
    try:
        begin = datetime.fromtimestamp(int(match["begin"]), tz=UTC)
        end = datetime.fromtimestamp(int(match["end"]), tz=UTC)
    except (ValueError, OverflowError, OSError):
        return None
    return ReportFilename(submitter, domain, begin, end, match["id"])
