"""Delivery attempts read from MTA mail logs: the shared model of the log parsers. Sans-I/O.

The TLSRPT sender counts TLS sessions per recipient domain (RFC 8460 §4). Postfix before 3.10 and Exim have no
TLSRPT hook, but their mail logs say enough: :mod:`mxsec.tlsrpt.postfix_log` and :mod:`mxsec.tlsrpt.exim_log`
turn log lines into :class:`Attempt` values, one per SMTP session with one MX host, which the log follower later
turns into :class:`mxsec.tlsrpt.session.Session` values (it knows the policy of each domain; the parsers do not).

What one attempt is
    One SMTP session with one MX host, in which TLS was negotiated, or failed for a reason RFC 8460 §4.3 has a
    result type for. Mail logs are written per *recipient*, so the parsers hold a session open while further
    recipient lines of the same session may follow (:class:`SessionDeduper`) and count them in
    :attr:`Attempt.recipients` instead of making more attempts. A session that carried recipients of several
    domains yields one attempt per domain: reports are per recipient domain, and each domain's report must
    count the session. Several MX hosts tried for one message are several sessions, so several attempts.

    A connection reused for another message (Postfix ``conn_use=N`` with N > 1 or ``TLS connection reused``,
    Exim ``H=host [ip]*``) is *not* a new attempt: no new TLS handshake took place, and RFC 8460 counts TLS
    sessions. A plaintext retry of the same host straight after a failed TLS handshake (Postfix at level
    ``may``, Exim ``tls_tempfail_tryclear``) is not a new attempt either: the failure was counted once.

What is left out
    Transient failures that are not TLS failures — TCP connection refused or timed out, a connection lost
    before STARTTLS, a 4xx greeting, DNS failures of the MX lookup — produce no attempt: RFC 8460 §4.3.4 says
    such failures need not be reported, and the log cannot tell which TLS outcome the session would have
    had. Problems of the sending side itself (its TLS engine unavailable, an invalid policy table) produce
    none either: they say nothing about the receiving domain.

What the caller must do
    * Feed every line once. Feeding the same lines again (a restart that re-reads a log) counts them again:
      remembering the file offset is the caller's concern, the parsers keep no history beyond a few seconds
      of lines (:data:`TOMBSTONE_LINES`).
    * Call ``flush()`` at the end of the input (and may call it when the log has been quiet for a while): it
      emits the sessions still held open. Later lines of a flushed session are still recognised for a while
      and not counted again.
    * Leave out attempts whose :attr:`Attempt.message_id` is one of its own TLSRPT report messages (RFC 8460
      §3: sessions that carried reports are not reported).

Time stamps
    Syslog (``Dec  2 18:00:01``) and Postfix ``maillog_file`` (``Dec 02 18:00:01``) stamps carry neither year
    nor zone: the year comes from ``year=`` (then a step from December to January moves to the next year) or
    from ``clock=`` (the latest year that does not put the stamp more than a day in the future), and the
    zone from ``tz=`` (default UTC). RFC 3339 stamps and Exim's (``2026-12-02 18:00:01`` with an optional
    ``+0100``) bring their own year; without an offset they are read in ``tz`` too. :attr:`Attempt.time` is
    always UTC, or ``None`` when the line's stamp could not be read.

Hostile input
    The parsers never raise on any input: bytes are decoded as UTF-8 with replacement characters, a line is
    cut at :data:`MAX_LINE_CHARS`, reason texts at :data:`MAX_REASON_CHARS` with control characters replaced,
    host names and addresses are checked before they are kept, and every table of state is capped (the
    ``MAX_*`` constants; the oldest entry goes first).
"""

from __future__ import annotations

import enum
import ipaddress
import re
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, tzinfo

from mxsec.names import DomainError, normalize_domain
from mxsec.results import ResultType

__all__ = [
    "LINGER_LINES",
    "LogParser",
    "MAX_LINE_CHARS",
    "MAX_OPEN_SESSIONS",
    "MAX_REASON_CHARS",
    "MAX_TOMBSTONES",
    "TOMBSTONE_LINES",
    "Attempt",
    "Draft",
    "ParserStats",
    "SessionDeduper",
    "StampReader",
    "TlsOutcome",
    "classify_certificate_error",
    "clean_reason",
    "iter_lines",
    "mx_host",
    "mx_ip",
    "recipient_domain",
]

#: Longer lines are cut (Postfix writes at most about 2 KB per record, Exim up to a few KB).
MAX_LINE_CHARS = 16384
#: ``failure_reason_code`` values are cut to this length.
MAX_REASON_CHARS = 200
#: A session stays open this many lines after its last recipient line (other processes write in between).
LINGER_LINES = 512
#: At most this many sessions are held open at once; beyond that the least recently touched one is emitted.
MAX_OPEN_SESSIONS = 10_000
#: A closed session is remembered this many lines, so late lines of it are not counted as a new session.
TOMBSTONE_LINES = 4096
#: At most this many closed sessions are remembered.
MAX_TOMBSTONES = 20_000

_MONTHS = {name: number for number, name in enumerate(
    ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"), start=1)}
_CONTROL = {code: "?" for code in (*range(0x20), 0x7F)}
_HOST_RE = re.compile(r"[a-z0-9_](?:[a-z0-9_.-]{0,251}[a-z0-9_])?")
_IP_CHARS_RE = re.compile(r"[0-9A-Fa-f:.]{2,45}")
_NUM_RE = re.compile(r"num=(\d{1,4}):")
_CACHE_MAX = 4096
_domain_cache: dict[str, str | None] = {}
_host_cache: dict[str, str | None] = {}
_ip_cache: dict[str, str | None] = {}


class TlsOutcome(str, enum.Enum):
    """How far TLS got in a session: the peer certificate's standing, or no TLS at all.

    The first four are Postfix's words (``Verified``: chain and name matched; ``Trusted``: chain trusted, name
    not matched or not checked; ``Untrusted``: chain not trusted; ``Anonymous``: no certificate). Exim's
    ``CV=yes``/``CV=dane`` is ``verified``, ``CV=no`` ``untrusted``."""

    VERIFIED = "verified"
    TRUSTED = "trusted"
    UNTRUSTED = "untrusted"
    ANONYMOUS = "anonymous"
    NONE = "none"

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True, slots=True)
class Attempt:
    """One SMTP session with one MX host towards one recipient domain, as the mail log tells it.

    ``result_type`` is ``None`` when the TLS part of the session succeeded as far as the MTA's policy asked
    (also a plaintext session the MTA was content with: ``tls`` is then ``none``; whether that is a failure
    depends on the domain's policy, which the caller knows), otherwise the RFC 8460 §4.3 type with
    ``failure_reason_code`` the short reason from the log. ``message_id`` is the message's Message-ID without
    angle brackets, when the log named it."""

    time: datetime | None
    mta: str
    queue_id: str
    domain: str
    recipients: int
    mx_host: str | None
    mx_ip: str | None
    tls: TlsOutcome
    dane: bool
    result_type: ResultType | None
    failure_reason_code: str | None
    message_id: str | None

    @property
    def failed(self) -> bool:
        return self.result_type is not None

    @property
    def day(self) -> date | None:
        """The UTC day the session belongs to in reports."""
        return self.time.date() if self.time is not None else None


@dataclass(slots=True)
class ParserStats:
    """Counters of a parser, for the follower's health output."""

    lines: int = 0  # lines fed
    attempts: int = 0  # attempts emitted
    dropped: int = 0  # sessions left out because no recipient domain was ever seen for them
    evicted: int = 0  # state entries pushed out by a cap
    errors: int = 0  # lines skipped because the parser itself failed on them (a bug; never expected)


# ------------------------------------------------------------------------------------------------ text helpers


def iter_lines(data: str | bytes | bytearray) -> Iterator[str]:
    """The lines of *data* (one line or several separated by ``\\n``), decoded and cut to
    :data:`MAX_LINE_CHARS`. Anything that is not text yields nothing."""
    if isinstance(data, (bytes, bytearray)):
        data = bytes(data).decode("utf-8", "replace")
    elif not isinstance(data, str):
        return
    if "\n" not in data:
        parts = [data]
    else:
        parts = data.split("\n")
    for part in parts:
        if len(part) > MAX_LINE_CHARS:
            part = part[:MAX_LINE_CHARS]
        if part.endswith("\r"):
            part = part[:-1]
        if part:
            yield part


def clean_reason(text: str) -> str:
    """*text* made safe for a report: control characters replaced by ``?``, cut to :data:`MAX_REASON_CHARS`."""
    text = text.strip()
    if len(text) > MAX_REASON_CHARS:
        text = text[:MAX_REASON_CHARS]
    return text.translate(_CONTROL)


def mx_host(text: str | None) -> str | None:
    """A host name as logged, lower-cased without the trailing dot, or ``None`` when it does not look like
    one (``unknown``, empty, or characters no DNS name has). Cached."""
    if not text:
        return None
    try:
        return _host_cache[text]
    except KeyError:
        pass
    lowered = text.lower().rstrip(".")
    name = None if len(text) > 254 or lowered == "unknown" or not _HOST_RE.fullmatch(lowered) else lowered
    _remember(_host_cache, text, name)
    return name


def mx_ip(text: str | None) -> str | None:
    """An IPv4/IPv6 address in its canonical text form, or ``None``. Cached."""
    if not text:
        return None
    try:
        return _ip_cache[text]
    except KeyError:
        pass
    value: str | None = None
    if _IP_CHARS_RE.fullmatch(text) or text[:5].lower() == "ipv6:":
        try:
            value = str(ipaddress.ip_address(text[5:] if text[:5].lower() == "ipv6:" else text))
        except ValueError:
            value = None
    _remember(_ip_cache, text, value)
    return value


def _remember(cache: dict[str, str | None], key: str, value: str | None) -> None:
    if len(cache) >= _CACHE_MAX:
        cache.clear()
    cache[key] = value


def recipient_domain(address: str) -> str | None:
    """The domain of a recipient address as a lower-case A-label, or ``None`` when it has none or it does
    not normalise (cached: logs name the same few domains over and over)."""
    at = address.rfind("@")
    if at < 0:
        return None
    raw = address[at + 1:]
    if raw.endswith(">"):
        raw = raw[:-1]
    try:
        return _domain_cache[raw]
    except KeyError:
        pass
    try:
        domain: str | None = normalize_domain(raw)
    except (DomainError, ValueError, UnicodeError):
        domain = None
    _remember(_domain_cache, raw, domain)
    return domain


def classify_certificate_error(text: str) -> ResultType:
    """The RFC 8460 type of an X.509 verification error text as OpenSSL and Postfix log it (Postfix
    ``tls_verify.c``: ``untrusted issuer …``, ``num=62:hostname mismatch``; Exim ``error=certificate has
    expired``). Numbers are OpenSSL's ``X509_V_ERR_*`` codes; the text decides when there is none.

    * host names: 62 hostname mismatch, 64 IP address mismatch, Exim's ``certificate name mismatch``
      → ``certificate-host-mismatch``;
    * validity period: 9 not yet valid, 10 expired → ``certificate-expired`` (RFC 8460 §4.3.1 has only the
      one type for the certificate's dates);
    * trust: 2/20 issuer unknown, 18 self-signed, 19 self-signed in chain, 21 unable to verify the first
      certificate, 23 revoked, 24 invalid CA, 27 not trusted, 28 rejected → ``certificate-not-trusted``;
    * 65 no matching DANE TLSA records and anything else → ``validation-failure`` (see
      :mod:`mxsec.tlsrpt.postfix_log` for why a TLSA mismatch is not ``tlsa-invalid``).
    """
    lowered = text.lower()
    number = _NUM_RE.search(lowered)
    code = int(number.group(1)) if number else -1
    if code in (62, 64) or "hostname mismatch" in lowered or "name mismatch" in lowered \
            or "ip address mismatch" in lowered:
        return ResultType.CERTIFICATE_HOST_MISMATCH
    if code == 65 or "matching dane" in lowered or "dane tlsa" in lowered:
        return ResultType.VALIDATION_FAILURE
    if code in (9, 10) or "expired" in lowered or "not yet valid" in lowered:
        return ResultType.CERTIFICATE_EXPIRED
    if code in (2, 18, 19, 20, 21, 23, 24, 27, 28) or any(word in lowered for word in (
            "untrusted issuer", "self-signed", "self signed", "not trusted", "unable to get",
            "unable to verify", "revoked", "invalid ca", "rejected")):
        return ResultType.CERTIFICATE_NOT_TRUSTED
    return ResultType.VALIDATION_FAILURE


# ------------------------------------------------------------------------------------------------ time stamps


class StampReader:
    """Turns log time stamps into UTC datetimes (see the module docstring, "Time stamps"). Results are cached
    per stamp text: a busy log repeats each second's stamp many times."""

    __slots__ = ("year", "clock", "tz", "_last_month", "_cache_key", "_cache_value")

    def __init__(self, *, year: int | None = None, clock: Callable[[], datetime] | None = None,
                 tz: tzinfo | None = None) -> None:
        self.year = year
        self.clock = clock
        self.tz = tz if tz is not None else UTC
        self._last_month = 0
        self._cache_key: str | None = None
        self._cache_value: datetime | None = None

    def _local(self, value: datetime) -> datetime | None:
        try:
            if value.tzinfo is None:
                value = value.replace(tzinfo=self.tz)
            return value.astimezone(UTC)
        except (ValueError, OverflowError):
            return None

    def syslog(self, month_name: str, day: str, hms: str) -> datetime | None:
        """A stamp without year (``Dec``, `` 2`` or ``02``, ``18:00:01``)."""
        key = f"{month_name} {day} {hms}"
        if key == self._cache_key:
            return self._cache_value
        value = self._syslog(month_name, day, hms)
        self._cache_key, self._cache_value = key, value
        return value

    def _syslog(self, month_name: str, day: str, hms: str) -> datetime | None:
        month = _MONTHS.get(month_name)
        if month is None:
            return None
        try:
            day_number = int(day)
            hour, minute, second = int(hms[0:2]), int(hms[3:5]), int(hms[6:8])
        except ValueError:
            return None
        if self.year is not None:
            year = self.year
            if self._last_month and month < self._last_month - 6:  # December → January: a new year
                year = self.year = self.year + 1
                self._last_month = month
            elif self._last_month and month > self._last_month + 6:  # a late line from the old year
                year -= 1
            else:
                self._last_month = month
            return self._build(year, month, day_number, hour, minute, second)
        if self.clock is not None:
            try:
                now = self.clock()
                now = now.astimezone(UTC) if now.tzinfo is not None else now.replace(tzinfo=UTC)
            except (TypeError, ValueError, OverflowError, AttributeError):
                return None
            value = self._build(now.year, month, day_number, hour, minute, second)
            if value is None or value > now + timedelta(days=1):
                value = self._build(now.year - 1, month, day_number, hour, minute, second)
            return value
        return None

    def _build(self, year: int, month: int, day: int, hour: int, minute: int, second: int) -> datetime | None:
        try:
            return self._local(datetime(year, month, day, hour, minute, second))
        except (ValueError, OverflowError):
            return None

    def iso(self, text: str) -> datetime | None:
        """An RFC 3339 / ISO 8601 stamp (``2026-12-02T18:00:01.123456+00:00``, ``…Z``) or Exim's
        (``2026-12-02 18:00:01[.123][ +0100]``)."""
        if text == self._cache_key:
            return self._cache_value
        value: datetime | None
        try:
            candidate = text
            if len(candidate) > 5 and candidate[-5] in "+-" and candidate[-4:].isdigit() and candidate[-6] != ":":
                candidate = candidate[:-2] + ":" + candidate[-2:]  # +0100 → +01:00
            candidate = candidate.replace(" +", "+").replace(" -", "-")
            value = self._local(datetime.fromisoformat(candidate))
        except (ValueError, OverflowError):
            value = None
        self._cache_key, self._cache_value = text, value
        return value


# ------------------------------------------------------------------------------------------------ sessions


@dataclass(slots=True, eq=False)
class Draft:
    """A session being put together from log lines; becomes one :class:`Attempt` per recipient domain."""

    mta: str
    queue_id: str = ""
    time: datetime | None = None
    mx_host: str | None = None
    mx_ip: str | None = None
    tls: TlsOutcome = TlsOutcome.NONE
    dane: bool = False
    result_type: ResultType | None = None
    failure_reason_code: str | None = None
    message_id: str | None = None
    domains: dict[str, int] = field(default_factory=dict)
    touched: int = 0
    #: only recipients of this domain are added (set by callers that adopt the first domain they see)
    only_domain: str | None = None

    @property
    def failed(self) -> bool:
        return self.result_type is not None

    def fail(self, result_type: ResultType, reason: str | None) -> None:
        self.result_type = result_type
        self.failure_reason_code = clean_reason(reason) if reason else None

    def add_recipient(self, address: str) -> bool:
        """Count one recipient (by its domain); ``False`` when the address has no usable domain."""
        domain = recipient_domain(address)
        if domain is None:
            return False
        return self.add_domain(domain)

    def add_domain(self, domain: str, count: int = 1) -> bool:
        if self.only_domain is not None and domain != self.only_domain:
            return False
        self.domains[domain] = self.domains.get(domain, 0) + count
        return True

    def attempts(self) -> list[Attempt]:
        return [
            Attempt(
                time=self.time, mta=self.mta, queue_id=self.queue_id, domain=domain, recipients=count,
                mx_host=self.mx_host, mx_ip=self.mx_ip, tls=self.tls, dane=self.dane,
                result_type=self.result_type, failure_reason_code=self.failure_reason_code,
                message_id=self.message_id,
            )
            for domain, count in self.domains.items()
        ]


class SessionDeduper:
    """The rule "one attempt per SMTP session, not per recipient line", shared by both parsers.

    A parser opens a :class:`Draft` under a key that names the session (Postfix: process, queue id and relay;
    Exim: message id, host and address) and touches it for every further recipient line of that session.
    A draft is *closed* — handed back to the parser to become attempts — when the parser says so (a line that
    can only belong to another session), when :data:`LINGER_LINES` lines have passed without a touch (recipient
    lines of one session come in a burst, possibly interleaved with other processes' lines), when more than
    :data:`MAX_OPEN_SESSIONS` are open (the oldest goes), or on :meth:`flush`. A closed key is remembered for
    :data:`TOMBSTONE_LINES` lines (:meth:`recent`), so that a late line of a closed session is recognised.
    The line counter advances with :meth:`tick`, once per line fed."""

    __slots__ = ("line", "linger", "max_open", "tombstone_lines", "max_tombstones", "_open", "_closed",
                 "evicted", "_check_open", "_check_closed")

    def __init__(self, *, linger: int = LINGER_LINES, max_open: int = MAX_OPEN_SESSIONS,
                 tombstone_lines: int = TOMBSTONE_LINES, max_tombstones: int = MAX_TOMBSTONES) -> None:
        self.line = 0
        self.linger = linger
        self.max_open = max_open
        self.tombstone_lines = tombstone_lines
        self.max_tombstones = max_tombstones
        self._open: OrderedDict[Hashable, Draft] = OrderedDict()
        self._closed: OrderedDict[Hashable, tuple[int, Draft]] = OrderedDict()
        self.evicted = 0
        self._check_open = 0  # the line at which the oldest open draft may have lingered long enough
        self._check_closed = 0

    def __len__(self) -> int:
        return len(self._open)

    @property
    def remembered(self) -> int:
        return len(self._closed)

    def tick(self) -> list[Draft]:
        """Advance one line; returns the drafts whose linger time is over."""
        line = self.line = self.line + 1
        if line < self._check_open and line < self._check_closed:
            return []
        out: list[Draft] = []
        opened = self._open
        if line >= self._check_open:
            limit = line - self.linger
            while opened:
                key = next(iter(opened))
                draft = opened[key]
                if draft.touched >= limit:
                    break
                del opened[key]
                self._remember(key, draft)
                out.append(draft)
            # The oldest open draft is first: nothing can expire before it does.
            self._check_open = opened[next(iter(opened))].touched + self.linger + 1 if opened else line + self.linger
        closed = self._closed
        if line >= self._check_closed:
            limit = line - self.tombstone_lines
            while closed:
                key = next(iter(closed))
                if closed[key][0] >= limit:
                    break
                del closed[key]
            self._check_closed = closed[next(iter(closed))][0] + self.tombstone_lines + 1 if closed \
                else line + self.tombstone_lines
        return out

    def get(self, key: Hashable) -> Draft | None:
        """The open draft of *key*, touched (its linger time starts again), or ``None``."""
        draft = self._open.get(key)
        if draft is not None:
            draft.touched = self.line
            self._open.move_to_end(key)
        return draft

    def recent(self, key: Hashable) -> Draft | None:
        """The draft of *key* if it was closed within the last :data:`TOMBSTONE_LINES` lines."""
        entry = self._closed.get(key)
        return entry[1] if entry is not None else None

    def open(self, key: Hashable, draft: Draft) -> list[Draft]:
        """Hold *draft* open under *key*; returns drafts closed to make room (one already under *key*, or the
        oldest when :data:`MAX_OPEN_SESSIONS` is reached)."""
        out = self.close(key)
        draft.touched = self.line
        self._open[key] = draft
        if len(self._open) > self.max_open:
            old_key, old = self._open.popitem(last=False)
            self._remember(old_key, old)
            self.evicted += 1
            out.append(old)
        return out

    def close(self, key: Hashable) -> list[Draft]:
        draft = self._open.pop(key, None)
        if draft is None:
            return []
        self._remember(key, draft)
        return [draft]

    def flush(self) -> list[Draft]:
        """Close every open draft (their keys stay remembered)."""
        out = list(self._open.values())
        for key, draft in self._open.items():
            self._remember(key, draft)
        self._open.clear()
        return out

    def _remember(self, key: Hashable, draft: Draft) -> None:
        closed = self._closed
        closed.pop(key, None)
        closed[key] = (self.line, draft)
        if len(closed) > self.max_tombstones:
            closed.popitem(last=False)


# ------------------------------------------------------------------------------------------------ parsers


class LogParser:
    """What the MTA log parsers share: time stamps, open sessions, counters, feeding and output.

    A subclass reads one line in ``_line(text, drafts)`` (appending drafts it closes), forgets its per-line
    collecting state in ``_stop_collecting()`` before a flush, and says how much it holds in ``state_size``."""

    mta = ""

    def __init__(self, *, year: int | None = None, clock: Callable[[], datetime] | None = None,
                 tz: tzinfo | None = None, linger: int | None = None) -> None:
        self.stamps = StampReader(year=year, clock=clock, tz=tz)
        self.sessions = SessionDeduper() if linger is None else SessionDeduper(linger=linger)
        self._stats = ParserStats()

    def feed(self, line: str | bytes) -> list[Attempt]:
        """Read one log line (or several separated by newlines); returns the attempts completed so far."""
        if type(line) is str and 0 < len(line) <= MAX_LINE_CHARS:  # the common case: one line of text
            newline = line.find("\n")
            if newline < 0 and line[-1] != "\r":
                return self._feed_one(line)
            if newline < 0 or newline == len(line) - 1:
                return self._feed_one(line.rstrip("\r\n"))
        out: list[Attempt] = []
        for text in iter_lines(line):
            out += self._feed_one(text)
        return out

    def _feed_one(self, text: str) -> list[Attempt]:
        self._stats.lines += 1
        drafts = self.sessions.tick()
        try:
            self._line(text, drafts)
        except Exception:  # pragma: no cover - a bug must not stop the follower: the line is skipped
            self._stats.errors += 1
        return self._attempts(drafts) if drafts else []

    def flush(self) -> list[Attempt]:
        """Emit every session still held open (at the end of the input, or after a quiet spell). Sessions that
        still wait for the recipient domain of their message stay: their domain may yet come."""
        self._stop_collecting()
        return self._attempts(self.sessions.flush())

    @property
    def stats(self) -> ParserStats:
        """A snapshot of the counters."""
        s = self._stats
        return ParserStats(s.lines, s.attempts, s.dropped, s.evicted + self.sessions.evicted, s.errors)

    def _line(self, text: str, out: list[Draft]) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _stop_collecting(self) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _attempts(self, drafts: list[Draft]) -> list[Attempt]:
        if not drafts:
            return []
        out: list[Attempt] = []
        for draft in drafts:
            attempts = draft.attempts()
            if not attempts:
                self._stats.dropped += 1
            out.extend(attempts)
        self._stats.attempts += len(out)
        return out
