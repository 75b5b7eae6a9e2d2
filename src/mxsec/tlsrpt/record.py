"""The TLSRPT TXT record at ``_smtp._tls.<domain>`` (RFC 8460 §3). Sans-I/O.

Grammar (RFC 8460 §3)::

    tlsrpt-record    = tlsrpt-version 1*(field-delim tlsrpt-field) [field-delim]
    field-delim      = *WSP ";" *WSP
    tlsrpt-field     = tlsrpt-rua / tlsrpt-extension      ; tlsrpt-rua is required
    tlsrpt-version   = %s"v=TLSRPTv1"
    tlsrpt-rua       = %s"rua=" tlsrpt-uri *(*WSP "," *WSP tlsrpt-uri)
    tlsrpt-uri       = URI        ; RFC 3986; "," "!" and ";" MUST be percent-encoded
    tlsrpt-extension = tlsrpt-ext-name "=" tlsrpt-ext-value
    tlsrpt-ext-name  = (ALPHA / DIGIT) *31(ALPHA / DIGIT / "_" / "-" / ".")
    tlsrpt-ext-value = 1*(%x21-3A / %x3C / %x3E-7E)

Project rules on top of the grammar (docs/generate.md, "The TLSRPT record"):

* The record syntax outside ``rua`` is strict, as for the MTA-STS record (``mxsec.sts.record``): printable
  US-ASCII, ``v=TLSRPTv1`` first and exact (RPT-I-2), WSP only next to ``;`` and ``,``, no empty fields.
* Duplicate fields: the first wins, later ones are dropped with a warning (same rule as STS-A-17).
* ``rua`` entries are judged one by one (the lesson of sys4/tlsrpt-reporter#54). An entry that is not a URI
  at all (a bare ``user@example.com`` with its ``mailto:`` missing, whitespace inside, an unencoded ``!``, an
  empty entry) is dropped with a warning whose ``breaks_grammar`` is true; the record is invalid only when no
  URI is left. A URI with another scheme than ``mailto:``/``https:``, or a ``mailto:`` without a sane
  address, or an ``https:`` URI without a host, is kept in ``rua`` but flagged and left out of
  ``usable_rua`` (RPT-I-3, RPT-I-11).
* Every failure and every warning carries a stable machine ``code`` (see :data:`ERROR_CODES` and
  :data:`WARNING_CODES`) so the domain checker can turn it into a finding.
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from mxsec.errors import ParseError
from mxsec.names import DomainError, is_ip_literal, normalize_domain

__all__ = [
    "ERROR_CODES",
    "MAX_RECORD_CHARS",
    "OWNER_PREFIX",
    "VERSION",
    "WARNING_CODES",
    "TlsrptRecord",
    "TlsrptRecordError",
    "TlsrptSelection",
    "TlsrptWarning",
    "check_uri",
    "format_record",
    "looks_like_tlsrpt",
    "parse_record",
    "select_record",
    "tlsrpt_owner",
]

#: Longer TXT records are refused outright (hostile input stays cheap).
MAX_RECORD_CHARS = 8192
#: The record lives at ``_smtp._tls.<domain>`` (RPT-I-1), never ``_smtp._tcp`` (EC-39).
OWNER_PREFIX = "_smtp._tls"
VERSION = "TLSRPTv1"

_VERSION_FIELD = "v=" + VERSION
_WSP = " \t"
_SUPPORTED_SCHEMES = ("mailto", "https")
_TEXT_RE = re.compile(r"[\x20-\x7e\t]*")
_EXT_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,31}")
_EXT_VALUE_RE = re.compile(r"[\x21-\x3a\x3c\x3e-\x7e]+")
_SCHEME_RE = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*")
# RFC 3986 characters: unreserved, sub-delims, gen-delims, and percent-encoded octets.
_URI_RE = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:(?:[A-Za-z0-9\-._~!$&'()*+,;=:@/?#\[\]]|%[0-9A-Fa-f]{2})*")
_VERSION_ANYWHERE_RE = re.compile(r"(?:^|;)[ \t]*v[ \t]*=[ \t]*TLSRPTv1[ \t]*(?:;|$)", re.IGNORECASE)
_LOCAL_PART_BAD = frozenset('<>()[]\\,;:"')
_LOCAL_RE = re.compile(r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+")

#: ``code`` of every :class:`TlsrptRecordError` :func:`parse_record` and :func:`format_record` raise.
ERROR_CODES = frozenset(
    {
        "not-text",  # the input is not a str
        "too-long",  # longer than MAX_RECORD_CHARS
        "invalid-character",  # a control character or non-ASCII
        "version-missing",  # does not begin with v=TLSRPTv1 and has no such field
        "version-not-first",  # v=TLSRPTv1 present but not the first thing in the record (RPT-I-2)
        "version-invalid",  # begins with v= but the value is not exactly TLSRPTv1 (case-sensitive)
        "missing-delimiter",  # v=TLSRPTv1 not followed by ";"
        "trailing-whitespace",  # whitespace after the last field, not followed by ";"
        "empty-field",  # ";;"
        "bad-field",  # a field without "="
        "bad-field-name",  # a field name outside the extension-name rule
        "bad-field-value",  # an extension value outside the extension-value rule
        "rua-separator",  # rua URIs separated by ";" instead of ","
        "rua-missing",  # no rua field (RPT-I-3)
        "rua-empty",  # "rua=" with nothing after it
        # every rua entry was dropped; the code is the first entry's problem:
        "rua-empty-uri",
        "rua-missing-mailto",
        "rua-invalid-uri",
        "rua-unencoded-char",
        # only from format_record (the generator refuses what the parser would flag):
        "rua-unsupported-scheme",
        "rua-bad-mailto",
        "rua-bad-https",
        "rua-duplicate-uri",
        "duplicate-field",
    }
)

#: ``code`` of every :class:`TlsrptWarning` :func:`parse_record` can attach to a record.
WARNING_CODES = frozenset(
    {
        "duplicate-field",  # a later field with the same name was ignored (first wins)
        "rua-empty-uri",  # "a,,b" or a trailing ","                               (breaks_grammar)
        "rua-missing-mailto",  # "user@example.com" without "mailto:" (sys4#54)       (breaks_grammar)
        "rua-invalid-uri",  # not an RFC 3986 URI                                     (breaks_grammar)
        "rua-unencoded-char",  # "!" inside a URI (RPT-I-4)                            (breaks_grammar)
        "rua-unsupported-scheme",  # a URI whose scheme is not mailto or https (RPT-I-11)
        "rua-bad-mailto",  # mailto: without one sane address
        "rua-bad-https",  # https: without a usable host or port
        "rua-duplicate-uri",  # the same URI twice; kept once
        "rua-none-usable",  # no mailto:/https: URI a reporter could use (RPT-I-11)
    }
)


class TlsrptRecordError(ParseError):
    """The TXT record is not a valid TLSRPT record; ``code`` says which rule it breaks (see ERROR_CODES).

    ``result_type`` stays ``None``: a domain without a usable TLSRPT record simply gets no reports; that is
    not a failure RFC 8460 reports.
    """

    result_type = None

    def __init__(self, message: str, *, code: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class TlsrptWarning:
    """Something the parser tolerated. ``breaks_grammar`` is true when the record text is outside the RFC 8460
    ABNF because of it (a strict reporter may ignore the whole record), so a checker should call it an error."""

    code: str
    message: str
    breaks_grammar: bool = False

    def __str__(self) -> str:
        return self.message


@dataclass(frozen=True)
class TlsrptRecord:
    """A parsed ``v=TLSRPTv1`` record.

    ``rua`` holds the syntactically valid URIs in record order (duplicates once); ``usable_rua`` the subset a
    reporter can deliver to (``mailto:`` with one sane address, ``https:`` with a host). ``extensions`` holds
    the unknown fields in record order (first wins; RPT-I-8).
    """

    rua: tuple[str, ...]
    usable_rua: tuple[str, ...]
    extensions: tuple[tuple[str, str], ...] = ()
    warnings: tuple[TlsrptWarning, ...] = ()
    version: str = VERSION

    @property
    def warning_codes(self) -> tuple[str, ...]:
        return tuple(w.code for w in self.warnings)


@dataclass(frozen=True)
class TlsrptSelection:
    """Outcome of discovery over all TXT records at ``_smtp._tls.<domain>`` (RPT-I-6).

    ``problem`` is ``None`` (``record`` is set), ``"no-record"``, ``"several-records"`` or
    ``"invalid: <reason>"``. ``error`` is the parse error of the one candidate when it is invalid, or of a
    near miss (``v=tlsrptv1;…``, ``V=TLSRPTv1``…) when nothing counted as a TLSRPT record. ``discarded`` is the
    number of TXT records that were not TLSRPT records.
    """

    record: TlsrptRecord | None
    problem: str | None
    error: TlsrptRecordError | None = None
    discarded: int = 0


def tlsrpt_owner(domain: str) -> str:
    """``_smtp._tls.<domain>``: where the record lives (RPT-I-1; not ``_smtp._tcp``, EC-39).

    *domain* goes through :func:`mxsec.names.normalize_domain` (A-labels, lower case, no trailing dot);
    raises its ``DomainError`` for a bad name.
    """
    return f"{OWNER_PREFIX}.{normalize_domain(domain)}"


def looks_like_tlsrpt(text: str) -> bool:
    """Does this TXT record count as a TLSRPT record when filtering (RPT-I-6)?

    ``v=TLSRPTv1`` followed by the end, WSP or ``;`` (the same reading of the grammar as for ``v=STSv1``,
    erratum 6285 / EC-13): ``v=TLSRPTv1 ;rua=…`` counts, ``v=TLSRPTv10;`` does not.
    """
    if not isinstance(text, str) or not text.startswith(_VERSION_FIELD):
        return False
    rest = text[len(_VERSION_FIELD) :]
    return rest == "" or rest[0] in "; \t"


def select_record(strings: Sequence[str]) -> TlsrptSelection:
    """Apply RFC 8460 §3 to all TXT records at ``_smtp._tls.<domain>`` (RPT-I-6); never raises.

    Each string is one already-joined record (RPT-I-7: the DNS adapter concatenates the character-strings
    without spaces). Records that are not TLSRPT records are discarded; exactly one must remain and be valid.
    """
    try:
        texts = [s for s in strings if isinstance(s, str)] if not isinstance(strings, (str, bytes)) else []
    except TypeError:
        texts = []
    candidates = [s for s in texts if looks_like_tlsrpt(s)]
    discarded = len(texts) - len(candidates)
    if not candidates:
        near_miss = None
        for text in texts:
            if text.lstrip(_WSP)[:2].lower() == "v=" and "tlsrpt" in text[:20].lower():
                try:
                    parse_record(text)
                except TlsrptRecordError as exc:
                    near_miss = exc
                    break
        return TlsrptSelection(None, "no-record", near_miss, discarded)
    if len(candidates) > 1:
        return TlsrptSelection(None, "several-records", None, discarded)
    try:
        return TlsrptSelection(parse_record(candidates[0]), None, None, discarded)
    except TlsrptRecordError as exc:
        return TlsrptSelection(None, f"invalid: {exc}", exc, discarded)


def parse_record(text: str) -> TlsrptRecord:
    """Parse one (already joined) TXT record; raise :class:`TlsrptRecordError` if it is not valid."""
    if not isinstance(text, str):
        raise TlsrptRecordError(f"record must be text, not {type(text).__name__}", code="not-text")
    if len(text) > MAX_RECORD_CHARS:
        raise TlsrptRecordError(f"record longer than {MAX_RECORD_CHARS} characters", code="too-long")
    if not _TEXT_RE.fullmatch(text):
        bad = next(ch for ch in text if not (ch == "\t" or " " <= ch <= "~"))
        raise TlsrptRecordError(
            f"record contains character U+{ord(bad):04X} (only printable US-ASCII is allowed)",
            code="invalid-character",
        )
    if not text.startswith(_VERSION_FIELD):
        _raise_version_problem(text)

    rest = text[len(_VERSION_FIELD) :]
    parts = rest.split(";")
    head = parts[0]
    if head.strip(_WSP):
        if head[0] in _WSP:
            raise TlsrptRecordError('"v=TLSRPTv1" must be followed by ";"', code="missing-delimiter")
        raise TlsrptRecordError(
            f"version must be exactly {VERSION!r}, not {_show(VERSION + head.split(' ')[0])}", code="version-invalid"
        )
    last = parts[-1]
    if len(parts) > 1 and last.strip(_WSP) and last != last.rstrip(_WSP):
        raise TlsrptRecordError(
            "whitespace after the last field (allowed only before a ';')", code="trailing-whitespace"
        )
    fields = [part.strip(_WSP) for part in parts[1:]]
    if fields and fields[-1] == "" and len(fields) > 1:
        fields.pop()  # the optional trailing delimiter
    if not fields or fields == [""]:
        raise TlsrptRecordError("record has no rua field", code="rua-missing")

    seen = {"v"}
    rua_value: str | None = None
    extensions: list[tuple[str, str]] = []
    warnings: list[TlsrptWarning] = []
    for field in fields:
        if not field:
            raise TlsrptRecordError("empty field between two semicolons", code="empty-field")
        name, eq, value = field.partition("=")
        if _looks_like_uri_or_address(field) and not _EXT_NAME_RE.fullmatch(name):
            raise TlsrptRecordError(
                f"{_show(field)} is not a field: separate rua URIs with ',' not ';'", code="rua-separator"
            )
        if not eq:
            raise TlsrptRecordError(f"field {_show(field)} has no '='", code="bad-field")
        if not _EXT_NAME_RE.fullmatch(name):
            raise TlsrptRecordError(f"invalid field name {_show(name)}", code="bad-field-name")
        if name == "rua":
            if not value.strip(_WSP):
                raise TlsrptRecordError("rua has no URI", code="rua-empty")
        elif not _EXT_VALUE_RE.fullmatch(value):
            raise TlsrptRecordError(f"invalid value for field {name!r}", code="bad-field-value")
        if name in seen:
            warnings.append(
                TlsrptWarning("duplicate-field", f"duplicate field {name!r} ignored (the first one is used)")
            )
            continue
        seen.add(name)
        if name == "rua":
            rua_value = value
        else:
            extensions.append((name, value))
    if rua_value is None:
        hint = " (field names are case-sensitive)" if any(n.lower() == "rua" for n, _ in extensions) else ""
        raise TlsrptRecordError(f"record has no rua field{hint}", code="rua-missing")

    rua, usable, rua_warnings = _parse_rua(rua_value)
    warnings.extend(rua_warnings)
    return TlsrptRecord(
        rua=rua, usable_rua=usable, extensions=tuple(extensions), warnings=tuple(warnings), version=VERSION
    )


def _raise_version_problem(text: str) -> None:
    stripped = text.lstrip(_WSP)
    if stripped != text and stripped.startswith(_VERSION_FIELD):
        raise TlsrptRecordError('whitespace before "v=TLSRPTv1" (it must be the very first thing)',
                                code="version-not-first")
    head = stripped.split(";", 1)[0]
    name, eq, value = head.partition("=")
    if eq and name.strip(_WSP).lower() == "v":
        if not value.strip(_WSP).lower().startswith("tlsrpt"):
            raise TlsrptRecordError(
                f'record does not begin with "v=TLSRPTv1" (it begins with {_show(head.split(" ")[0])})',
                code="version-missing",
            )
        if name != "v" or value != value.strip(_WSP):
            raise TlsrptRecordError(
                f'record must begin with "v=TLSRPTv1" exactly, not {_show(head.strip(_WSP))}',
                code="version-invalid",
            )
        raise TlsrptRecordError(
            f"version must be exactly {VERSION!r} (case-sensitive), not {_show(value.strip(_WSP))}",
            code="version-invalid",
        )
    if _VERSION_ANYWHERE_RE.search(text):
        raise TlsrptRecordError('"v=TLSRPTv1" must be the first field', code="version-not-first")
    raise TlsrptRecordError('record does not begin with "v=TLSRPTv1"', code="version-missing")


def _looks_like_uri_or_address(field: str) -> bool:
    """A field that is really a URI (or a bare address) after a ';' that should have been a ','."""
    scheme, colon, _ = field.partition(":")
    if colon and _SCHEME_RE.fullmatch(scheme) and scheme.lower() in (*_SUPPORTED_SCHEMES, "http"):
        return True
    return "=" not in field and _looks_like_address(field)


def _parse_rua(value: str) -> tuple[tuple[str, ...], tuple[str, ...], list[TlsrptWarning]]:
    entries = [entry.strip(_WSP) for entry in value.split(",")]
    rua: list[str] = []
    usable: list[str] = []
    warnings: list[TlsrptWarning] = []
    first_error: TlsrptWarning | None = None
    seen: set[str] = set()
    for entry in entries:
        code, message, fatal = check_uri(entry)
        if fatal:
            assert code is not None  # a fatal entry always has a code
            warning = TlsrptWarning(code, f"rua entry ignored: {message}", breaks_grammar=True)
            warnings.append(warning)
            first_error = first_error or TlsrptWarning(code, message, True)
            continue
        key = _uri_key(entry)
        if key in seen:
            warnings.append(TlsrptWarning("rua-duplicate-uri", f"rua URI {_show(entry)} is listed twice"))
            continue
        seen.add(key)
        rua.append(entry)
        if code is None:
            usable.append(entry)
        else:
            warnings.append(TlsrptWarning(code, message))
    if not rua:
        assert first_error is not None
        raise TlsrptRecordError(f"rua holds no URI: {first_error.message}", code=first_error.code)
    if not usable:
        warnings.append(
            TlsrptWarning("rua-none-usable", "no rua URI a reporter can use (only mailto: and https: work)")
        )
    return tuple(rua), tuple(usable), warnings


def _uri_key(uri: str) -> str:
    scheme, _, rest = uri.partition(":")
    return scheme.lower() + ":" + rest


def check_uri(uri: str) -> tuple[str | None, str, bool]:
    """Judge one ``rua`` entry (already split on ``,`` and stripped of WSP): ``(code, message, fatal)``.

    ``code`` is ``None`` when a reporter can use the URI (``message`` is then ``""``). ``fatal`` is true when the
    entry is not a URI at all (it breaks the grammar and is dropped); otherwise the URI is valid but unusable
    (unsupported scheme, bad ``mailto:`` address, ``https:`` without a host). Never raises.
    """
    if not isinstance(uri, str) or not uri:
        return "rua-empty-uri", "empty URI in the rua list", True
    if not _URI_RE.fullmatch(uri):
        if _looks_like_address(uri):
            return "rua-missing-mailto", f"{_show(uri)} is not a URI: write 'mailto:{uri}'", True
        if any(ch in _WSP for ch in uri):
            return "rua-invalid-uri", f"{_show(uri)} is not a URI (whitespace inside)", True
        if not uri.isascii() or any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in uri):
            return "rua-invalid-uri", f"{_show(uri)} is not a URI (characters must be percent-encoded)", True
        if ":" not in uri or not _SCHEME_RE.fullmatch(uri.partition(":")[0]):
            return "rua-invalid-uri", f"{_show(uri)} is not a URI (no scheme such as mailto: or https:)", True
        return "rua-invalid-uri", f"{_show(uri)} is not a URI (invalid characters or percent-encoding)", True
    if "!" in uri:
        return (
            "rua-unencoded-char",
            f"{_show(uri)}: '!' must be percent-encoded as %21 (TLSRPT has no '!size' suffix as DMARC does)",
            True,
        )
    scheme, _, rest = uri.partition(":")
    scheme = scheme.lower()
    if scheme == "mailto":
        problem = _mailto_problem(rest)
        if problem:
            return "rua-bad-mailto", f"{_show(uri)}: {problem}", False
        return None, "", False
    if scheme == "https":
        problem = _https_problem(uri)
        if problem:
            return "rua-bad-https", f"{_show(uri)}: {problem}", False
        return None, "", False
    hint = " (use https:)" if scheme == "http" else ""
    return (
        "rua-unsupported-scheme",
        f"{_show(uri)}: scheme {scheme!r} is not supported; only mailto: and https: are{hint}",
        False,
    )


def _looks_like_address(text: str) -> bool:
    """``local@domain`` without a scheme: the common "forgot mailto:" mistake (sys4/tlsrpt-reporter#54)."""
    if text.count("@") != 1:
        return False
    local, domain = text.split("@")
    if not _LOCAL_RE.fullmatch(local) or not domain:
        return False
    try:
        normalize_domain(domain)
    except DomainError:
        return False
    return True


def _mailto_problem(body: str) -> str | None:
    address, _, _hfields = body.partition("?")
    if not address:
        return "no address after 'mailto:'"
    if address.startswith("//"):
        return "no '//' after 'mailto:' (write mailto:user@example.com)"
    decoded = urllib.parse.unquote(address, errors="replace")
    if decoded.count("@") != 1:
        return "not one address of the form user@domain"
    local, domain = decoded.split("@")
    if not local:
        return "empty local part before '@'"
    if any(ch in _LOCAL_PART_BAD or ord(ch) <= 0x20 or ord(ch) == 0x7F for ch in local):
        return f"local part {_show(local)} has characters an address cannot have unquoted"
    if local.startswith(".") or local.endswith(".") or ".." in local:
        return f"local part {_show(local)} has a misplaced '.'"
    try:
        normalize_domain(domain)
    except DomainError as exc:
        return f"domain: {exc}"
    return None


def _https_problem(uri: str) -> str | None:
    try:
        split = urllib.parse.urlsplit(uri)
        host = split.hostname
        port = split.port
    except ValueError as exc:
        return f"cannot be parsed ({exc})"
    if not uri.partition(":")[2].startswith("//"):
        return "no '//' and host after 'https:'"
    if not host:
        return "no host"
    if port == 0:
        return "port 0"
    if is_ip_literal(host):
        return None
    try:
        normalize_domain(host)
    except DomainError as exc:
        return f"host: {exc}"
    return None


def format_record(rua: Iterable[str], extensions: Iterable[tuple[str, str]] = ()) -> str:
    """Build ``v=TLSRPTv1; rua=URI[,URI...][; name=value ...]``; the generator behind ``mxsec generate tlsrpt``.

    Every URI must be usable (``mailto:`` with one sane address, or ``https:`` with a host) and listed once;
    extension names and values must follow the grammar and not repeat ``v``/``rua``. Raises
    :class:`TlsrptRecordError` with the same codes the parser uses. The output always parses back with
    :func:`parse_record` to the same URIs and extensions, without warnings.
    """
    if isinstance(rua, str):
        rua = (rua,)
    uris: list[str] = []
    seen: set[str] = set()
    for uri in rua:
        if not isinstance(uri, str):
            raise TlsrptRecordError(f"rua URI must be text, not {type(uri).__name__}", code="rua-invalid-uri")
        if "," in uri or ";" in uri:
            raise TlsrptRecordError(
                f"{_show(uri)}: ',' and ';' must be percent-encoded inside a URI (%2C, %3B)",
                code="rua-unencoded-char",
            )
        code, message, _fatal = check_uri(uri)
        if code is not None:
            raise TlsrptRecordError(message, code=code)
        key = _uri_key(uri)
        if key in seen:
            raise TlsrptRecordError(f"rua URI {_show(uri)} is listed twice", code="rua-duplicate-uri")
        seen.add(key)
        uris.append(uri)
    if not uris:
        raise TlsrptRecordError("at least one rua URI is needed", code="rua-missing")
    parts = [_VERSION_FIELD, "rua=" + ",".join(uris)]
    names = {"v", "rua"}
    for name, value in extensions:
        if not isinstance(name, str) or not _EXT_NAME_RE.fullmatch(name):
            raise TlsrptRecordError(f"invalid field name {name!r}", code="bad-field-name")
        if not isinstance(value, str) or not _EXT_VALUE_RE.fullmatch(value):
            raise TlsrptRecordError(f"invalid value for field {name!r}", code="bad-field-value")
        if name in names:
            raise TlsrptRecordError(f"duplicate field {name!r}", code="duplicate-field")
        names.add(name)
        parts.append(f"{name}={value}")
    return "; ".join(parts)


def _show(text: str) -> str:
    shown = repr(text)
    return shown if len(shown) <= 80 else shown[:77] + "..."
