"""The JSON text of a TLSRPT report to Python values, under I-JSON (RFC 7493) and the report limits. Sans-I/O.

:func:`load_json` is strict on hostile input (RFC 8460 §7, RPT-I-31, RPT-I-45, EC-40): UTF-8 only, JSON
nesting depth, number of containers and values, string lengths, integers within ±(2^53-1), numbers that fit a
double, no escaped lone surrogate, no duplicate member name. Every refusal is a
:class:`~mxsec.tlsrpt.report.ReportError` with a one-line message.

The structure is checked before anything is decoded: a pre-scan of the JSON text (strings blanked out by one
linear regular-expression pass) counts containers and nesting depth, so ``[[[[…`` or ``[[],[],…]`` are
refused before :mod:`json` builds anything. A text too short to break a limit takes a quicker way with the same
answers (see :func:`load_json`).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from typing import Any

from mxsec.tlsrpt.report import Limits, ReportError, Warnings
from mxsec.tlsrpt.values import json_type, show

__all__ = ["MAX_SAFE_INTEGER", "load_json"]

_UTF8_BOM = b"\xef\xbb\xbf"

#: I-JSON (RFC 7493 §2.2): integers outside this range cannot be represented exactly everywhere.
MAX_SAFE_INTEGER = 2**53 - 1


# A JSON string, or an unterminated one running to the end of the text. Possessive quantifiers and the
# always-matching tail keep this linear: every '"' outside a string starts a match that ends at the closing
# quote or at the end of the text, so the engine never rescans.
_STRING_RE = re.compile(r'"(?:[^"\\]++|\\.)*+(?:"|\\?\Z)', re.DOTALL)
_BRACKET_RE = re.compile(r"[\[\]{}]")


def load_json(payload: bytes, limits: Limits, warnings: Warnings) -> dict[str, Any]:
    body = payload
    if body.startswith(_UTF8_BOM):
        body = body[len(_UTF8_BOM) :]
        warnings.add("utf8-bom", "UTF-8 byte order mark before the JSON text ignored")
    if not body.strip():
        raise ReportError("empty", "report is empty")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ReportError("not-utf8", f"report is not UTF-8 (invalid byte at offset {exc.start})") from None
    # A text no longer than the string limit cannot hold a too-long string, nor more values or containers than
    # the limits allow; without a surrogate escape it cannot hold a lone surrogate. Such texts (nearly every
    # real report) are decoded without the pre-scan and the per-string checks, then checked for depth and
    # number ranges. Whatever goes wrong on that path is decided by the full path, so errors are the same.
    size = len(text)
    if (
        size <= limits.max_string_chars and size <= limits.max_values and size <= 2 * limits.max_containers
        and _SURROGATE_ESCAPE_RE.search(text) is None
    ):
        try:
            document = _FAST_DECODER.decode(text)
            _check_tree(document, limits.max_depth)
        except (ValueError, RecursionError):
            document = _load_json_checked(text, limits)
    else:
        document = _load_json_checked(text, limits)
    if isinstance(document, str):
        _check_string(document, limits.max_string_chars)
    if not isinstance(document, dict):
        raise ReportError("not-an-object", f"report JSON must be an object, not {json_type(document)}")
    return document


def _load_json_checked(text: str, limits: Limits) -> Any:
    _prescan(text, limits)
    decoder = json.JSONDecoder(
        object_pairs_hook=_object_hook(limits.max_string_chars),
        parse_int=_parse_int,
        parse_float=_parse_float,
        parse_constant=_parse_constant,
        strict=True,
    )
    try:
        return decoder.decode(text)
    except ReportError:
        raise  # from a hook (ReportError is a ValueError too)
    except json.JSONDecodeError as exc:
        where = f"line {exc.lineno} column {exc.colno}"
        raise ReportError("not-json", f"report is not valid JSON: {exc.msg} at {where}") from None
    except RecursionError:
        raise ReportError("too-deep", "report JSON is nested too deeply") from None
    except ValueError as exc:  # e.g. an integer with more digits than int() accepts
        raise ReportError("not-json", f"report is not valid JSON: {_clip(str(exc))}") from None


def _check_tree(document: Any, max_depth: int) -> None:
    """What the fast path's decoder did not check: nesting depth and I-JSON number ranges."""
    stack = [([document], 0)]
    while stack:
        value, depth = stack.pop()
        if depth > max_depth:
            raise ReportError("too-deep", f"report JSON is nested deeper than {max_depth} levels")
        children = value.values() if isinstance(value, dict) else value
        for child in children:
            kind = type(child)
            if kind is dict or kind is list:
                stack.append((child, depth + 1))
            elif kind is int:
                if not -MAX_SAFE_INTEGER <= child <= MAX_SAFE_INTEGER:
                    _parse_int(str(child))
            elif kind is float and not math.isfinite(child):
                raise ReportError("number-out-of-range", f"number {child!r} overflows a double")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        seen: set[str] = set()
        for key, _value in pairs:
            if key in seen:
                raise ReportError(
                    "duplicate-key", f"member {show(key)} appears twice in one object (I-JSON, RFC 7493 §2.3)"
                )
            seen.add(key)
    return result


def _prescan(text: str, limits: Limits) -> None:
    """Refuse too deep or too big structures before :mod:`json` builds them (linear time, C-speed scans)."""
    skeleton = _STRING_RE.sub('""', text)
    values = skeleton.count(",") + 1
    if values > limits.max_values:
        raise ReportError("too-many-values", f"report JSON has more than {limits.max_values} values")
    depth = 0
    containers = 0
    for match in _BRACKET_RE.finditer(skeleton):
        if match.group() in "[{":
            depth += 1
            containers += 1
            if depth > limits.max_depth:
                raise ReportError("too-deep", f"report JSON is nested deeper than {limits.max_depth} levels")
            if containers > limits.max_containers:
                raise ReportError(
                    "too-many-values", f"report JSON has more than {limits.max_containers} arrays and objects"
                )
        else:
            depth -= 1  # unbalanced brackets are json's to report


def _object_hook(max_chars: int) -> Callable[[list[tuple[str, Any]]], dict[str, Any]]:
    def hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        result: dict[str, Any] = {}
        for key, value in pairs:
            _check_string(key, max_chars)
            if key in result:
                raise ReportError(
                    "duplicate-key", f"member {show(key)} appears twice in one object (I-JSON, RFC 7493 §2.3)"
                )
            if isinstance(value, str):
                _check_string(value, max_chars)
            elif isinstance(value, list):
                _check_list(value, max_chars)
            result[key] = value
        return result

    return hook


def _check_list(items: list[Any], max_chars: int) -> None:
    # Objects inside were checked by their own hook call; nested arrays are reached only from here.
    stack = [items]
    while stack:
        for item in stack.pop():
            if isinstance(item, str):
                _check_string(item, max_chars)
            elif isinstance(item, list):
                stack.append(item)


def _check_string(text: str, max_chars: int) -> None:
    if len(text) > max_chars:
        raise ReportError("string-too-long", f"a string in the report is longer than {max_chars} characters")
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise ReportError("lone-surrogate", "a string in the report holds an escaped lone surrogate") from None


def _parse_int(text: str) -> int:
    if len(text.lstrip("-")) > 16 or abs(value := int(text)) > MAX_SAFE_INTEGER:
        raise ReportError("number-out-of-range", f"integer {show(text)} is outside ±(2^53-1) (I-JSON)")
    return value


def _parse_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ReportError("number-out-of-range", f"number {show(text)} overflows a double")
    return value


def _parse_constant(text: str) -> Any:
    raise ReportError("not-json", f"report is not valid JSON: {text} is not a JSON value")


_SURROGATE_ESCAPE_RE = re.compile(r"\\u[dD][89a-fA-F]")
_FAST_DECODER = json.JSONDecoder(object_pairs_hook=_unique_keys, parse_constant=_parse_constant, strict=True)


def _clip(text: str) -> str:
    line = text.splitlines()[0] if text else ""
    return line if len(line) <= 120 else line[:117] + "..."
