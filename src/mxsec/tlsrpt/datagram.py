"""libtlsrpt's datagram protocol, version "1": bytes in, :class:`~mxsec.tlsrpt.session.Session` out. Sans-I/O.

Postfix 3.10+ (``smtp_tlsrpt_enable = yes``) reports every SMTP/TLS session to a collector through the C
library libtlsrpt, one JSON object per Unix datagram. The members (short names are libtlsrpt's):

``dpv``
    protocol version, the string ``"1"``; anything else is refused (not counted under a guessed meaning).
``d``
    the report domain (the recipient domain whose ``_smtp._tls`` record the MTA found).
``pr``
    that record's text (``v=TLSRPTv1; rua=...``).
``policies``
    one entry per policy that applied to the session (Postfix sends one; the library allows several):
    ``policy-type`` 1 = ``tlsa``, 2 = ``sts``, 9 = ``no-policy-found``; ``policy-domain`` (Postfix omits it
    for no-policy-found: the report domain is used, RFC 8460 §4.4 requires the member); ``policy-string`` and
    ``mx-host`` arrays (omitted when empty); ``failure-details``; ``t`` the number of failure details (not a
    session count; ignored); ``f`` the session's result under this policy, 0 success, 1 failure.
``failure-details[]``
    ``c`` result code (201..205, 301..306; see :data:`~mxsec.tlsrpt.session.RESULT_CODES`), optional ``s``
    sending-mta-ip, ``n`` receiving-mx-hostname, ``h`` receiving-mx-helo, ``r`` receiving-ip, ``a``
    additional-information, ``f`` failure-reason-code (``f`` means something else here than one level up).

Datagrams are hostile input: whatever the bytes, :func:`parse_datagram` returns a session or raises
:class:`DatagramError` with a stable ``code`` (for the collector's log and metrics) — never anything else.
Bytes that are not UTF-8 are decoded with replacement characters (libtlsrpt passes bytes >= 0x80 through
unchecked), counted as a warning, not a refusal: the session did happen. Unknown members are ignored (later
library versions may add some). Unknown result codes are kept as ``validation-failure`` with the code in
``additional-information`` (RFC 8460 §4.3.3). Long optional texts are cut to :data:`MAX_TEXT`; sizes, policy
and detail counts are bounded (:class:`DatagramLimits`).
"""

from __future__ import annotations

from dataclasses import dataclass

import msgspec

from mxsec.errors import ParseError
from mxsec.names import DomainError, normalize_domain
from mxsec.tlsrpt.session import (
    Failure,
    Policy,
    PolicyOutcome,
    PolicyType,
    Session,
    result_type_for_code,
)

__all__ = [
    "DEFAULT_LIMITS",
    "ERROR_CODES",
    "MAX_DATAGRAM",
    "MAX_TEXT",
    "DatagramError",
    "DatagramParser",
    "DatagramLimits",
    "Parsed",
    "parse_datagram",
]

#: Largest datagram read (libtlsrpt's own sends fail above about 212 KB).
MAX_DATAGRAM = 256 * 1024
#: Optional texts (HELO reply, failure-reason-code, additional-information) are cut to this many characters.
MAX_TEXT = 1000

#: Every :attr:`DatagramError.code`.
ERROR_CODES = (
    "too-large",
    "not-json",
    "bad-type",
    "unknown-version",
    "bad-domain",
    "no-record",
    "no-policies",
    "too-many",
    "bad-policy-type",
    "bad-result-code",
    "too-long",
)

_POLICY_TYPES = {1: PolicyType.TLSA, 2: PolicyType.STS, 9: PolicyType.NO_POLICY_FOUND}


@dataclass(frozen=True)
class DatagramLimits:
    max_bytes: int = MAX_DATAGRAM
    max_policies: int = 16
    max_details: int = 256
    max_strings: int = 1024
    #: A policy string, MX pattern, domain or address longer than this refuses the datagram (a TLSA record
    #: of a whole certificate in hex is a few kilobytes).
    max_string: int = 65536


DEFAULT_LIMITS = DatagramLimits()


class DatagramError(ParseError):
    """A datagram that cannot be counted; ``code`` is one of :data:`ERROR_CODES`."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True, slots=True)
class Parsed:
    """A counted session and what was odd about the datagram (``warnings``: short codes)."""

    session: Session
    warnings: tuple[str, ...] = ()


# ----------------------------------------------------------------------------------------------- schema
# msgspec checks the types in C; values are checked below.


class _Detail(msgspec.Struct):
    c: int
    s: str | None = None
    n: str | None = None
    h: str | None = None
    r: str | None = None
    a: str | None = None
    f: str | None = None


class _Policy(msgspec.Struct):
    policy_type: int = msgspec.field(name="policy-type")
    policy_domain: str | None = msgspec.field(default=None, name="policy-domain")
    policy_string: list[str] | None = msgspec.field(default=None, name="policy-string")
    mx_host: list[str] | None = msgspec.field(default=None, name="mx-host")
    failure_details: list[_Detail] | None = msgspec.field(default=None, name="failure-details")
    f: int | None = None


class _Datagram(msgspec.Struct):
    dpv: str | int
    d: str
    policies: list[_Policy]
    pr: str | None = None


_decoder = msgspec.json.Decoder(_Datagram)


def _domain(text: str, what: str, cache: dict[str, str]) -> str:
    cached = cache.get(text)
    if cached is not None:
        return cached
    try:
        value = normalize_domain(text)
    except (DomainError, ValueError):
        raise DatagramError("bad-domain", f"{what} is not a domain name: {text[:80]!r}") from None
    if len(cache) < DatagramParser.CACHE_LIMIT:
        cache[text] = value
    return value


def _pattern(text: str, cache: dict[str, str]) -> str:
    """An ``mx-host`` pattern as an A-label (``*.`` kept)."""
    if text.startswith("*."):
        return "*." + _domain(text[2:], "mx-host", cache)
    return _domain(text, "mx-host", cache)


def _text(value: str | None, warnings: list[str]) -> str | None:
    if value is None or value == "":
        return None
    if len(value) > MAX_TEXT:
        warnings.append("text-cut")
        return value[:MAX_TEXT]
    return value


class DatagramParser:
    """:func:`parse_datagram` with caches for one collector: normalised domains, policies, and whole datagrams
    (they repeat byte for byte: every successful session to a domain under one policy looks the same, so the
    result of a recent one is reused). Each cache is bounded and emptied when full."""

    __slots__ = ("limits", "cache_limit", "domains", "policies", "seen")

    #: Entries per cache by default.
    CACHE_LIMIT = 16384

    def __init__(self, limits: DatagramLimits = DEFAULT_LIMITS, *, cache_limit: int = CACHE_LIMIT) -> None:
        self.limits = limits
        self.cache_limit = cache_limit
        self.domains: dict[str, str] = {}
        self.policies: dict[tuple[PolicyType, str, tuple[str, ...], tuple[str, ...]], Policy] = {}
        self.seen: dict[bytes, Parsed] = {}

    def parse(self, data: bytes) -> Parsed:
        """The session one datagram reports. Raises :class:`DatagramError` and nothing else."""
        known = self.seen.get(data)
        if known is not None:
            return known
        parsed = _parse(data, self.limits, self)
        if len(self.seen) >= self.cache_limit:
            self.seen.clear()
        self.seen[data] = parsed
        return parsed


_default_parser = DatagramParser()


def parse_datagram(data: bytes, limits: DatagramLimits = DEFAULT_LIMITS) -> Parsed:
    """The session one datagram reports. Raises :class:`DatagramError` and nothing else."""
    if limits is DEFAULT_LIMITS:
        return _default_parser.parse(data)
    return DatagramParser(limits).parse(data)


def _parse(data: bytes, limits: DatagramLimits, ctx: DatagramParser) -> Parsed:
    if len(data) > limits.max_bytes:
        raise DatagramError("too-large", f"datagram of {len(data)} bytes (limit {limits.max_bytes})")
    warnings: list[str] = []
    try:
        raw = _decoder.decode(data)
    except msgspec.ValidationError as exc:
        raise DatagramError("bad-type", f"unexpected member type: {str(exc)[:200]}") from None
    except msgspec.DecodeError as exc:
        text = str(exc)
        if "UTF-8" in text or "utf-8" in text:
            try:
                raw = _decoder.decode(data.decode("utf-8", "replace").encode("utf-8"))
            except msgspec.ValidationError as exc2:
                raise DatagramError("bad-type", f"unexpected member type: {str(exc2)[:200]}") from None
            except msgspec.DecodeError:
                raise DatagramError("not-json", f"not a JSON object: {text[:200]}") from None
            warnings.append("non-utf8")
        else:
            raise DatagramError("not-json", f"not a JSON object: {text[:200]}") from None
    except (ValueError, RecursionError) as exc:  # pragma: no cover - msgspec raises the above
        raise DatagramError("not-json", f"not a JSON object: {str(exc)[:200]}") from None
    if raw.dpv != "1":
        raise DatagramError("unknown-version", f"protocol version {str(raw.dpv)[:20]!r} (this collector knows \"1\")")
    domain = _domain(raw.d, "d", ctx.domains)
    record = raw.pr
    if not record or not record.startswith("v=TLSRPTv1"):
        raise DatagramError("no-record", "no TLSRPT record (pr) in the datagram")
    if len(record) > limits.max_string:
        raise DatagramError("too-long", "pr is too long")
    if not raw.policies:
        raise DatagramError("no-policies", "the datagram has no policy")
    if len(raw.policies) > limits.max_policies:
        raise DatagramError("too-many", f"{len(raw.policies)} policies (limit {limits.max_policies})")
    outcomes = tuple(_outcome(p, domain, limits, ctx, warnings) for p in raw.policies)
    return Parsed(Session(domain, outcomes, record), tuple(warnings))


def _strings(values: list[str] | None, name: str, limits: DatagramLimits) -> tuple[str, ...]:
    if not values:
        return ()
    if len(values) > limits.max_strings:
        raise DatagramError("too-many", f"{len(values)} {name} entries (limit {limits.max_strings})")
    for value in values:
        if len(value) > limits.max_string:
            raise DatagramError("too-long", f"a {name} entry of {len(value)} characters")
    return tuple(values)


def _outcome(raw: _Policy, domain: str, limits: DatagramLimits, ctx: DatagramParser,
             warnings: list[str]) -> PolicyOutcome:
    ptype = _POLICY_TYPES.get(raw.policy_type)
    if ptype is None:
        raise DatagramError("bad-policy-type", f"policy-type {raw.policy_type} (known: 1, 2, 9)")
    if raw.policy_domain:
        if len(raw.policy_domain) > limits.max_string:
            raise DatagramError("too-long", "policy-domain is too long")
        pdomain = _domain(raw.policy_domain, "policy-domain", ctx.domains)
    else:
        pdomain = domain
        if ptype is not PolicyType.NO_POLICY_FOUND:
            warnings.append("no-policy-domain")
    strings = _strings(raw.policy_string, "policy-string", limits)
    mx = _strings(raw.mx_host, "mx-host", limits)
    key = (ptype, pdomain, strings, mx)
    policy = ctx.policies.get(key)
    if policy is None:
        policy = Policy(ptype, pdomain, strings, tuple(_pattern(m, ctx.domains) for m in mx))
        if len(ctx.policies) < ctx.cache_limit:
            ctx.policies[key] = policy
    details = raw.failure_details or ()
    if len(details) > limits.max_details:
        raise DatagramError("too-many", f"{len(details)} failure-details (limit {limits.max_details})")
    failures = tuple(_failure(d, limits, warnings) for d in details)
    if raw.f is None:
        failed = bool(failures)
        warnings.append("no-result")
    elif raw.f in (0, 1):
        failed = raw.f == 1
    else:
        raise DatagramError("bad-type", f"policy result f={raw.f} (expected 0 or 1)")
    return PolicyOutcome(policy, failed, failures)


def _failure(raw: _Detail, limits: DatagramLimits, warnings: list[str]) -> Failure:
    if not 0 <= raw.c < 1000:
        raise DatagramError("bad-result-code", f"result code {raw.c}")
    result_type, note = result_type_for_code(raw.c)
    if note is not None:
        warnings.append("unknown-result-code")
    info = _text(raw.a, warnings)
    if note is not None:
        info = note if info is None else f"{note}; {info}"[:MAX_TEXT]
    for value in (raw.s, raw.n, raw.r):
        if value is not None and len(value) > 255:
            raise DatagramError("too-long", "an address or host name longer than 255 characters")
    host = raw.n.lower().rstrip(".") if raw.n else None
    return Failure(
        result_type.value,
        raw.s or None,
        host or None,
        _text(raw.h, warnings),
        raw.r or None,
        info,
        _text(raw.f, warnings),
    )
