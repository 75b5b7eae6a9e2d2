"""The dashboard's query string: the date range (``since``/``until``, inclusive UTC days) and paging.

Bad values raise :class:`PageError` (status 400) with a one-line message; the page handlers never see them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from urllib.parse import quote, urlencode

from starlette.datastructures import QueryParams

_DAY = re.compile(r"\d{4}-\d{2}-\d{2}")
#: Longest accepted query value (a date is 10 characters; anything far longer is not a date).
_MAX_VALUE = 64


class PageError(Exception):
    """A page cannot be shown: ``status`` (400, 404, 503) and a one-line ``message`` for the error page."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class DateRange:
    since: date | None = None
    until: date | None = None

    @property
    def query(self) -> str:
        """``?since=…&until=…`` (only the set values), or ``""``: appended to every link of a page."""
        values = {k: v.isoformat() for k, v in (("since", self.since), ("until", self.until)) if v is not None}
        return "?" + urlencode(values) if values else ""

    def join(self, **extra: object) -> str:
        """The query string with more parameters (for paging links)."""
        values: dict[str, object] = {
            k: v.isoformat() for k, v in (("since", self.since), ("until", self.until)) if v is not None
        }
        values.update({k: v for k, v in extra.items() if v is not None})
        return "?" + urlencode(values) if values else ""

    @property
    def active(self) -> bool:
        return self.since is not None or self.until is not None

    def describe(self) -> str:
        if self.since and self.until:
            return f"{self.since.isoformat()} to {self.until.isoformat()}"
        if self.since:
            return f"since {self.since.isoformat()}"
        if self.until:
            return f"until {self.until.isoformat()}"
        return "all stored reports"


def _one(params: QueryParams, name: str) -> str | None:
    values = params.getlist(name)
    if len(values) > 1:
        raise PageError(400, f"'{name}' is given {len(values)} times; give it once")
    if not values:
        return None
    value = values[0].strip()
    return value or None


def parse_day(name: str, value: str | None) -> date | None:
    if value is None:
        return None
    if len(value) > _MAX_VALUE or not _DAY.fullmatch(value):
        raise PageError(400, f"'{name}' must be a date written YYYY-MM-DD, not {_show(value)}")
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise PageError(400, f"'{name}' is not a valid date: {_show(value)}") from None


def date_range(params: QueryParams) -> DateRange:
    since = parse_day("since", _one(params, "since"))
    until = parse_day("until", _one(params, "until"))
    if since and until and since > until:
        raise PageError(400, f"'since' ({since.isoformat()}) is after 'until' ({until.isoformat()})")
    return DateRange(since, until)


def page_number(params: QueryParams, *, last: int) -> int:
    """``page`` (1-based), clamped to 1..last; a value that is not a small positive integer is a 400."""
    value = _one(params, "page")
    if value is None:
        return 1
    if len(value) > 9 or not value.isdigit() or int(value) < 1:
        raise PageError(400, f"'page' must be a positive whole number, not {_show(value)}")
    return min(int(value), max(last, 1))


def optional_text(params: QueryParams, name: str) -> str | None:
    value = params.getlist(name)
    if len(value) > 1:
        raise PageError(400, f"'{name}' is given {len(value)} times; give it once")
    return value[0] if value else None


def quick_ranges(today: date | None = None) -> list[tuple[str, DateRange]]:
    """The preset ranges offered next to the filter form, ending today (UTC)."""
    today = today or datetime.now(UTC).date()
    return [
        (label, DateRange(today - timedelta(days=days - 1), today))
        for label, days in (("7 days", 7), ("30 days", 30), ("90 days", 90), ("1 year", 365))
    ]


def presets(current: DateRange, extra: dict[str, object] | None = None,
            today: date | None = None) -> list[tuple[str, str, bool]]:
    """(label, href, is-current) for the preset ranges and "all" (other query parameters kept)."""
    extra = {k: v for k, v in (extra or {}).items() if v is not None}
    out = [(label, rng.join(**extra) or "?", rng == current) for label, rng in quick_ranges(today)]
    out.append(("all", DateRange().join(**extra) or "?", not current.active))
    return out


def segment(value: str) -> str:
    """A value quoted for one URL path segment (every reserved character escaped, '/' included)."""
    return quote(value, safe="")


def _show(value: str) -> str:
    text = value if len(value) <= 40 else value[:40] + "…"
    return repr(text)
