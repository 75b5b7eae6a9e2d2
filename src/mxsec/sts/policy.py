"""The MTA-STS policy file (RFC 8461 §3.2). Sans-I/O.

Grammar (RFC 8461 §3.2, abridged)::

    sts-policy-record   = sts-policy-field *WSP *(sts-policy-term sts-policy-field *WSP) [sts-policy-term]
    sts-policy-field    = key ":" *WSP value           ; no WSP before the key or the colon
    sts-policy-term     = LF / CRLF
    version: STSv1      mode: testing / enforce / none  max_age: 1*10DIGIT   mx: ["*."] Domain
    sts-policy-ext-name = ALPHA/DIGIT *31(ALPHA / DIGIT / "_" / "-" / ".")
    sts-policy-ext-value = vchar [*(%x20 / vchar) vchar] ; vchar = %x21-7E / UTF-8; no CTLs

Leniencies and choices beyond the grammar are listed in docs/decisions.md (BOM, empty lines, trailing dot
on ``mx``, IP-address ``mx`` entries, ``max_age`` cap, first-wins duplicates, mode ``none``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from email.message import Message

from mxsec.errors import ParseError
from mxsec.names import DomainError, is_ip_literal, normalize_domain

__all__ = [
    "MAX_AGE_LIMIT",
    "MAX_POLICY_BYTES",
    "MODES",
    "PolicyError",
    "StsPolicy",
    "format_policy",
    "media_type_ok",
    "parse_policy",
]

#: Largest ``max_age`` (one year of 365.25 days), RFC 8461 §3.2.
MAX_AGE_LIMIT = 31557600
#: Larger bodies are refused (RFC 8461 §3.3 suggests a 64 KB cap for the fetch as well).
MAX_POLICY_BYTES = 64 * 1024
MODES = ("enforce", "testing", "none")

_RESULT_TYPE = "sts-policy-invalid"
_BOM = "\ufeff"
_WSP = " \t"
_KEY_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,31}")
_CTL_RE = re.compile(r"[\x00-\x1f\x7f]")
_MAX_AGE_RE = re.compile(r"[0-9]{1,10}")
_ACCEPTED_CHARSETS = frozenset({"utf-8", "us-ascii"})


class PolicyError(ParseError):
    """The policy body is not a valid MTA-STS policy (reported as ``sts-policy-invalid``, RFC 8460 §4.3.2)."""

    result_type = _RESULT_TYPE


@dataclass(frozen=True)
class StsPolicy:
    """A parsed policy.

    ``mx`` holds the effective patterns, lower-case, without a trailing dot, in file order. ``lines`` holds
    the effective fields as ``"key: value"`` (value as written, surrounding WSP removed) in file order; it is
    the TLSRPT ``policy-string``. Lines the parser ignores (empty lines, later duplicates of non-``mx``
    fields, ignored ``mx`` entries) are not in ``lines``. ``extensions`` holds unknown fields (first wins).
    """

    mode: str
    max_age: int
    mx: tuple[str, ...]
    lines: tuple[str, ...]
    extensions: tuple[tuple[str, str], ...] = ()
    warnings: tuple[str, ...] = ()

    def to_text(self, newline: str = "\r\n") -> str:
        """Re-serialise ``lines``, each followed by *newline* (CRLF by default, like :func:`format_policy`)."""
        return "".join(line + newline for line in self.lines)


def parse_policy(body: bytes | str) -> StsPolicy:
    """Parse a policy body; raise :class:`PolicyError` if it is not a valid policy."""
    text = _decode(body)
    warnings: list[str] = []
    if text.startswith(_BOM):
        text = text[1:]
        warnings.append("leading byte order mark (BOM) removed")

    raw_lines = text.split("\n")
    # Every element but the last was followed by LF; the last is "" when the body ends with a terminator
    # (normal, no warning), otherwise it is an unterminated final line (allowed by the grammar).
    last_unterminated = raw_lines.pop()

    # (kind, key, value); kind is "field" for a kept line, "mx" for an mx line decided after the mode is known
    entries: list[tuple[str, str, str]] = []
    seen: set[str] = set()
    fields: dict[str, str] = {}
    extensions: list[tuple[str, str]] = []
    for number, line in enumerate([*raw_lines, last_unterminated], start=1):
        if number > len(raw_lines):
            if not last_unterminated:
                break
        elif line.endswith("\r"):
            line = line[:-1]  # CRLF terminator
        if "\r" in line:
            raise PolicyError(f"line {number}: carriage return inside a line")
        if not line.strip(_WSP):
            warnings.append(f"line {number}: empty line ignored")
            continue
        key, value = _split_field(line, number)
        if key != "mx" and key in seen:
            warnings.append(f"line {number}: duplicate {key!r} field ignored (the first one is used)")
            continue
        seen.add(key)
        if key == "mx":
            entries.append(("mx", key, value))
            continue
        if key == "version":
            if value != "STSv1":
                raise PolicyError(f"line {number}: version must be STSv1, not {_show(value)}")
        elif key == "mode":
            if value not in MODES:
                raise PolicyError(f"line {number}: mode must be enforce, testing or none, not {_show(value)}")
        elif key == "max_age":
            if not _MAX_AGE_RE.fullmatch(value):
                raise PolicyError(f"line {number}: max_age must be 1 to 10 digits, not {_show(value)}")
        else:
            extensions.append((key, value))
        fields[key] = value
        entries.append(("field", key, value))

    for required in ("version", "mode", "max_age"):
        if required not in fields:
            hint = ""
            if any(k.lower() == required for k, _ in extensions):
                hint = " (field names are case-sensitive)"
            raise PolicyError(f"missing {required} field{hint}")
    mode = fields["mode"]
    max_age = int(fields["max_age"])
    if max_age > MAX_AGE_LIMIT:
        warnings.append(f"max_age {max_age} is above {MAX_AGE_LIMIT}; capped to {MAX_AGE_LIMIT}")
        max_age = MAX_AGE_LIMIT

    lines: list[str] = []
    patterns: list[str] = []
    for kind, key, value in entries:
        if kind == "mx":
            try:
                pattern, note = _check_mx(value)
            except PolicyError as exc:
                if mode != "none":
                    raise
                warnings.append(f"mx {_show(value)} ignored in mode none: {exc}")
                continue
            if note:
                warnings.append(note)
            if pattern is None:
                continue
            patterns.append(pattern)
        lines.append(f"{key}: {value}")

    if mode != "none" and not patterns:
        raise PolicyError(f"mode {mode} needs at least one valid mx field")
    return StsPolicy(
        mode=mode,
        max_age=max_age,
        mx=tuple(patterns),
        lines=tuple(lines),
        extensions=tuple(extensions),
        warnings=tuple(warnings),
    )


def _decode(body: bytes | str) -> str:
    if isinstance(body, (bytes, bytearray, memoryview)):
        raw = bytes(body)
        if len(raw) > MAX_POLICY_BYTES:
            raise PolicyError(f"policy larger than {MAX_POLICY_BYTES} bytes")
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise PolicyError(f"policy is not valid UTF-8 (byte {exc.start})") from None
    if not isinstance(body, str):
        raise PolicyError(f"policy must be bytes or text, not {type(body).__name__}")
    if len(body) > MAX_POLICY_BYTES:
        raise PolicyError(f"policy larger than {MAX_POLICY_BYTES} bytes")
    try:
        size = len(body.encode("utf-8"))
    except UnicodeEncodeError:
        raise PolicyError("policy text cannot be encoded as UTF-8 (lone surrogate)") from None
    if size > MAX_POLICY_BYTES:
        raise PolicyError(f"policy larger than {MAX_POLICY_BYTES} bytes")
    return body


def _split_field(line: str, number: int) -> tuple[str, str]:
    """Split ``key ":" *WSP value *WSP`` and check the generic key and value syntax."""
    key, colon, rest = line.partition(":")
    if not colon:
        raise PolicyError(f"line {number}: no ':' in {_show(line)}")
    if not _KEY_RE.fullmatch(key):
        if key[:1] in (" ", "\t"):
            raise PolicyError(f"line {number}: whitespace before the key")
        if key[-1:] in (" ", "\t"):
            raise PolicyError(f"line {number}: whitespace before the ':'")
        raise PolicyError(f"line {number}: invalid key {_show(key)}")
    value = rest.strip(_WSP)
    if not value:
        raise PolicyError(f"line {number}: {key!r} has no value")
    ctl = _CTL_RE.search(value)
    if ctl:
        raise PolicyError(f"line {number}: control character U+{ord(ctl.group()):04X} in the value of {key!r}")
    return key, value


def _check_mx(value: str) -> tuple[str | None, str | None]:
    """Validate one ``mx`` value (STS-C-5..C-7, EC-16, EC-18, EC-20).

    Returns ``(pattern, warning)``; ``pattern`` is ``None`` when the entry is ignored (an IP address).
    Raises :class:`PolicyError` for a malformed pattern.
    """
    note = None
    name = value
    if name.endswith(".") and name not in (".", "*."):
        name = name[:-1]
        note = f"mx {_show(value)}: trailing dot removed"
    if is_ip_literal(name) or _all_numeric_tail(name):
        return None, f"mx {_show(value)} is an IP address, not a host name; entry ignored"
    if not name.isascii():
        raise PolicyError(f"mx {_show(value)} is not an A-label (U-labels are not allowed; use Punycode)")
    if any(ch in name for ch in " \t,;"):
        raise PolicyError(f"mx {_show(value)}: one pattern per mx line")
    wildcard = name.startswith("*.")
    base = name[2:] if wildcard else name
    if "*" in base:
        raise PolicyError(f"mx {_show(value)}: '*' is allowed only as the whole left-most label")
    if base.endswith("."):
        raise PolicyError(f"mx {_show(value)}: empty label")
    try:
        base = normalize_domain(base)
    except DomainError as exc:
        raise PolicyError(f"mx {_show(value)}: {exc}") from None
    return ("*." + base if wildcard else base), note


def _all_numeric_tail(name: str) -> bool:
    last = name.rpartition(".")[2]
    return last.isascii() and last.isdigit()


def media_type_ok(content_type: str | None) -> bool:
    """True when a ``Content-Type`` header value is ``text/plain`` (STS-B-2/B-3, EC-7, EC-8).

    Only the media type is compared (case-insensitively); of the parameters, only ``charset`` matters and it
    must be ``utf-8`` or ``us-ascii`` when present. A missing header gives ``False``.
    """
    if not isinstance(content_type, str) or not content_type.strip():
        return False
    media_type = content_type.split(";", 1)[0].strip(" \t").lower()
    if media_type != "text/plain":
        return False
    if ";" not in content_type:
        return True
    try:
        header = Message()
        header["Content-Type"] = content_type
        charset = header.get_param("charset", header="content-type")
    except Exception:  # noqa: BLE001 - a malformed header is simply not acceptable
        return False
    if charset is None:
        return True
    if isinstance(charset, tuple):  # RFC 2231 form: (charset, language, value)
        charset = charset[2]
    return isinstance(charset, str) and charset.strip().lower() in _ACCEPTED_CHARSETS


def format_policy(mode: str, mx: Iterable[str], max_age: int) -> str:
    """Generate a policy body: ``version``, ``mode``, one ``mx`` line per pattern, ``max_age``.

    Lines end in CRLF (what the RFC prose says; every parser accepts it). Patterns are written lower-case
    without a trailing dot. Raises :class:`PolicyError` for an invalid mode, pattern or max_age, or for
    mode enforce/testing without any pattern. The output always parses back with :func:`parse_policy`.
    """
    if mode not in MODES:
        raise PolicyError(f"mode must be enforce, testing or none, not {mode!r}")
    if isinstance(max_age, bool) or not isinstance(max_age, int) or not 0 <= max_age <= MAX_AGE_LIMIT:
        raise PolicyError(f"max_age must be an integer from 0 to {MAX_AGE_LIMIT}, not {max_age!r}")
    if isinstance(mx, str):
        mx = (mx,)
    patterns: list[str] = []
    for value in mx:
        if not isinstance(value, str):
            raise PolicyError(f"mx pattern must be text, not {type(value).__name__}")
        pattern, _note = _check_mx(value)
        if pattern is None:
            raise PolicyError(f"mx {value!r} is an IP address, not a host name")
        patterns.append(pattern)
    if mode != "none" and not patterns:
        raise PolicyError(f"mode {mode} needs at least one mx pattern")
    lines = ["version: STSv1", f"mode: {mode}", *(f"mx: {p}" for p in patterns), f"max_age: {max_age}"]
    return "".join(line + "\r\n" for line in lines)


def _show(text: str) -> str:
    shown = repr(text)
    return shown if len(shown) <= 80 else shown[:77] + "..."
