"""The MTA-STS TXT record at ``_mta-sts.<domain>`` (RFC 8461 §3.1). Sans-I/O.

Grammar (RFC 8461 §3.1)::

    sts-text-record = sts-version 1*(sts-field-delim sts-field) [sts-field-delim]
    sts-field       = sts-id / sts-extension
    sts-field-delim = *WSP ";" *WSP
    sts-version     = %s"v=STSv1"
    sts-id          = %s"id=" 1*32(ALPHA / DIGIT)
    sts-extension   = sts-ext-name "=" sts-ext-value
    sts-ext-name    = (ALPHA / DIGIT) 0*31(ALPHA / DIGIT / "_" / "-" / ".")
    sts-ext-value   = 1*(%x21-3A / %x3C / %x3E-7E)

Project rules on top of the grammar (docs/decisions.md): a field named ``id`` must hold a valid id (it is
never taken as an extension); duplicate fields keep the first one and add a warning (STS-A-17); a record
with no ``id`` is invalid (STS-A-4).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from mxsec.errors import ParseError

__all__ = [
    "MAX_RECORD_CHARS",
    "RecordError",
    "RecordSelection",
    "StsRecord",
    "format_record",
    "is_valid_id",
    "parse_record",
    "select_record",
]

#: Longer TXT records are refused outright (hostile input stays cheap).
MAX_RECORD_CHARS = 4096

_VERSION = "v=STSv1"
_WSP = " \t"
_ID_RE = re.compile(r"[A-Za-z0-9]{1,32}")
_EXT_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,31}")
_EXT_VALUE_RE = re.compile(r"[\x21-\x3a\x3c\x3e-\x7e]+")
_FIELD_TEXT_RE = re.compile(r"[\x20-\x7e\t]*")


class RecordError(ParseError):
    """The TXT record is not a valid MTA-STS record.

    ``result_type`` stays ``None``: an unusable record means "no policy discovered" (RFC 8461 §3.1), which
    is not a failure a sending MTA reports.
    """

    result_type = None


@dataclass(frozen=True)
class StsRecord:
    """A parsed ``v=STSv1`` record. ``extensions`` holds the other fields in record order (first wins)."""

    id: str
    extensions: tuple[tuple[str, str], ...] = ()
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class RecordSelection:
    """Outcome of discovery over all TXT records at ``_mta-sts.<domain>``.

    ``problem`` is ``None`` (``record`` is set), ``"no-record"``, ``"several-records"`` or
    ``"invalid: <reason>"``.
    """

    record: StsRecord | None
    problem: str | None


def is_valid_id(text: str) -> bool:
    """True when *text* is a valid policy id: 1 to 32 ASCII letters and digits (RFC 8461 §3.1)."""
    return isinstance(text, str) and _ID_RE.fullmatch(text) is not None


def parse_record(text: str) -> StsRecord:
    """Parse one (already joined, STS-A-11) TXT record; raise :class:`RecordError` if it is not valid."""
    if not isinstance(text, str):
        raise RecordError(f"record must be text, not {type(text).__name__}")
    if len(text) > MAX_RECORD_CHARS:
        raise RecordError(f"record longer than {MAX_RECORD_CHARS} characters")
    if not text.startswith(_VERSION):
        raise RecordError('record does not begin with "v=STSv1"')
    if not _FIELD_TEXT_RE.fullmatch(text):
        bad = next(ch for ch in text if not (ch == "\t" or " " <= ch <= "~"))
        raise RecordError(f"record contains {_describe(bad)} (only printable US-ASCII is allowed)")

    # After the version: one or more (delimiter field), then an optional delimiter. Splitting on ";"
    # yields the WSP before the first ";", then each field with its surrounding WSP.
    rest = text[len(_VERSION) :]
    parts = rest.split(";")
    if parts[0].strip(_WSP):
        raise RecordError('"v=STSv1" must be followed by ";"')
    if len(parts) == 1:
        raise RecordError("record has no id field")
    last = parts[-1]
    if last.strip(_WSP) and last != last.rstrip(_WSP):
        raise RecordError("whitespace after the last field (allowed only before a ';')")
    fields = [part.strip(_WSP) for part in parts[1:]]
    if fields[-1] == "" and len(fields) > 1:
        fields.pop()  # the optional trailing delimiter
    if not fields or fields == [""]:
        raise RecordError("record has no id field")

    record_id: str | None = None
    seen = {"v"}
    extensions: list[tuple[str, str]] = []
    warnings: list[str] = []
    for field in fields:
        if not field:
            raise RecordError("empty field between two semicolons")
        name, eq, value = field.partition("=")
        if not eq:
            raise RecordError(f"field {field!r} has no '='")
        if not _EXT_NAME_RE.fullmatch(name):
            raise RecordError(f"invalid field name {name!r}")
        if name == "id":
            if not is_valid_id(value):
                raise RecordError(f"invalid id {value!r} (1 to 32 letters and digits)")
        elif not _EXT_VALUE_RE.fullmatch(value):
            raise RecordError(f"invalid value for field {name!r}")
        if name in seen:
            warnings.append(f"duplicate field {name!r} ignored (the first one is used)")
            continue
        seen.add(name)
        if name == "id":
            record_id = value
        else:
            extensions.append((name, value))
    if record_id is None:
        hint = " (field names are case-sensitive)" if any(n.lower() == "id" for n, _ in extensions) else ""
        raise RecordError(f"record has no id field{hint}")
    return StsRecord(id=record_id, extensions=tuple(extensions), warnings=tuple(warnings))


def _looks_like_sts(text: str) -> bool:
    """Does this TXT record count as an MTA-STS record when filtering (STS-A-8, EC-13)?

    ``v=STSv1`` followed by the end, WSP or ``;``. So ``v=STSv1 ;id=1`` counts (erratum 6285), while
    ``v=STSv10;`` does not.
    """
    if not text.startswith(_VERSION):
        return False
    rest = text[len(_VERSION) :]
    return rest == "" or rest[0] in "; \t"


def select_record(strings: Sequence[str]) -> RecordSelection:
    """Apply RFC 8461 §3.1 to all TXT records found at ``_mta-sts.<domain>`` (STS-A-8, STS-A-9).

    Records that are not MTA-STS records are discarded; exactly one must remain and be valid.
    """
    candidates = [s for s in strings if isinstance(s, str) and _looks_like_sts(s)]
    if not candidates:
        return RecordSelection(None, "no-record")
    if len(candidates) > 1:
        return RecordSelection(None, "several-records")
    try:
        return RecordSelection(parse_record(candidates[0]), None)
    except RecordError as exc:
        return RecordSelection(None, f"invalid: {exc}")


def format_record(id: str, extensions: Iterable[tuple[str, str]] = ()) -> str:  # noqa: A002 - RFC name
    """Build the canonical record text ``v=STSv1; id=<id>[; name=value ...]``.

    Raises :class:`RecordError` for an invalid id, extension name or value, or a duplicate field name.
    """
    if not is_valid_id(id):
        raise RecordError(f"invalid id {id!r} (1 to 32 letters and digits)")
    parts = [_VERSION, f"id={id}"]
    seen = {"v", "id"}
    for name, value in extensions:
        if not isinstance(name, str) or not _EXT_NAME_RE.fullmatch(name):
            raise RecordError(f"invalid field name {name!r}")
        if not isinstance(value, str) or not _EXT_VALUE_RE.fullmatch(value):
            raise RecordError(f"invalid value for field {name!r}")
        if name in seen:
            raise RecordError(f"duplicate field {name!r}")
        seen.add(name)
        parts.append(f"{name}={value}")
    return "; ".join(parts)


def _describe(ch: str) -> str:
    return f"character U+{ord(ch):04X}"
