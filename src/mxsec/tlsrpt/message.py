"""TLSRPT report messages (RFC 8460 §5.3) and mbox files: bytes in, report attachments out. Sans-I/O.

:func:`extract_reports` reads one RFC 5322 message with the standard :mod:`email` package
(``policy=email.policy.default``) and returns the report attachments it carries, each with the
``TLS-Report-Domain`` / ``TLS-Report-Submitter`` headers and the ``Subject`` of the message that carried it
(RPT-I-17..22). It finds reports the way senders really send them (docs/reports.md, quirk 13):

* ``application/tlsrpt+gzip`` and ``application/tlsrpt+json`` parts (the RFC way), in a
  ``multipart/report; report-type=tlsrpt`` message or anywhere else;
* parts with another type (``application/octet-stream``, ``application/gzip``, ``application/json``…)
  whose file name ends in ``.json``, ``.json.gz`` or ``.zip``, or whose content is gzip, zip or a JSON object;
* a payload in base64 without a ``Content-Transfer-Encoding: base64`` header;
* forwarded or wrapped messages (``message/rfc822`` parts, nested).

The attachment bytes are returned as sent (gzip, zip or JSON): :meth:`ReportAttachment.parse` hands them to
:func:`mxsec.tlsrpt.parse.parse_report` with the fallback domain EC-36 asks for. Verifying the DKIM
signature (RPT-I-14) needs DNS and belongs to the caller.

Hostile input (RPT-I-45): the message size, the number of MIME parts, their nesting and the number of
attachments are bounded (:class:`MessageLimits`); every refusal is a :class:`MessageError` with a stable
``code``. The :mod:`email` package is lenient and records defects instead of failing, but it can still raise
unexpected exceptions on pathological input; those are turned into ``MessageError`` too.
"""

from __future__ import annotations

import base64
import binascii
import email.policy
import io
import re
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from email.message import EmailMessage
from email.parser import BytesParser
from typing import Any, NamedTuple

from mxsec.errors import ParseError
from mxsec.names import normalize_domain
from mxsec.tlsrpt.filenames import filename_parts
from mxsec.tlsrpt.parse import parse_report
from mxsec.tlsrpt.report import DEFAULT_LIMITS, Limits, Report, ReportWarning
from mxsec.tlsrpt.unpack import GZIP_MAGIC, ZIP_MAGIC

__all__ = [
    "ERROR_CODES",
    "REPORT_CONTENT_TYPES",
    "WARNING_CODES",
    "MessageError",
    "MessageLimits",
    "ReportAttachment",
    "ReportMessage",
    "SubjectParts",
    "cross_check",
    "extract_reports",
    "iter_mbox",
    "looks_like_mbox",
    "parse_subject",
]

MiB = 1024 * 1024
REPORT_CONTENT_TYPES = ("application/tlsrpt+gzip", "application/tlsrpt+json")


@dataclass(frozen=True)
class MessageLimits:
    #: Bytes of one message. RFC 8460 §5.2: ~10 MB is a common receiver limit; base64 adds a third.
    max_message_bytes: int = 32 * MiB
    #: MIME parts in one message, nested messages included.
    max_parts: int = 1000
    #: Nesting of multiparts and message/rfc822 parts.
    max_depth: int = 16
    #: Report attachments taken from one message.
    max_attachments: int = 100
    #: Bytes of one header field the parser has to decode (Content-Type, Content-Disposition,
    #: Content-Transfer-Encoding, Subject, Message-ID, TLS-Report-Domain, TLS-Report-Submitter), unfolded.
    #: The email package decodes these in quadratic time or worse on hostile text: 2 KiB costs ~0.1 s.
    max_header_bytes: int = 2048
    #: Bytes of all those header fields together, over the whole message.
    max_header_total: int = 65536
    #: Header fields of any kind in the whole message.
    max_header_fields: int = 10_000


DEFAULT_MESSAGE_LIMITS = MessageLimits()

#: ``code`` of every :class:`MessageError`.
ERROR_CODES = frozenset(
    {
        "not-bytes",  # the input is not bytes
        "empty",  # nothing but whitespace
        "too-large",  # larger than max_message_bytes
        "too-many-parts",  # more MIME parts than max_parts
        "too-deep",  # MIME nesting deeper than max_depth
        "too-many-attachments",  # more report attachments than max_attachments
        "header-too-long",  # a decoded header field over max_header_bytes, or all of them over max_header_total
        "too-many-headers",  # more header fields than max_header_fields
        "unreadable",  # the email package failed on the message
        "not-mbox",  # iter_mbox: the data does not begin with a "From " line
    }
)

#: ``code`` of the warnings in :attr:`ReportMessage.warnings` and :attr:`ReportAttachment.warnings`, and of
#: those :func:`cross_check` returns.
WARNING_CODES = frozenset(
    {
        "not-multipart-report",  # the top level is not multipart/report; report-type=tlsrpt (RPT-I-17)
        "generic-content-type",  # an attachment found by its file name or content, not its content type
        "undeclared-base64",  # base64 content without Content-Transfer-Encoding: base64
        "forwarded",  # the attachment was inside a message/rfc822 part
        "missing-report-domain",  # no TLS-Report-Domain header (RPT-I-18)
        "missing-report-submitter",  # no TLS-Report-Submitter header (RPT-I-18)
        "header-unreadable",  # a header the email package could not parse
        "mime-defects",  # the email package noted defects (bad base64 padding, missing boundaries...)
        # cross_check (RPT-I-19, RPT-I-44: the body is authoritative; these only say where the rest disagrees)
        "report-domain-mismatch",  # TLS-Report-Domain is none of the report's policy domains
        "submitter-mismatch",  # TLS-Report-Submitter is not the domain of contact-info
        "filename-mismatch",  # the file name's domain or timestamps disagree with the body
        "subject-mismatch",  # the Subject's Report-ID or domains disagree with the body or the headers
    }
)


class MessageError(ParseError):
    """The message (or mbox) cannot be read; ``code`` (see :data:`ERROR_CODES`) says why."""

    result_type = None

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class SubjectParts(NamedTuple):
    """``Report Domain: <policy-domain> Submitter: <submitter> Report-ID: <id>`` (RPT-I-21)."""

    policy_domain: str
    submitter: str
    report_id: str


@dataclass(frozen=True)
class ReportAttachment:
    """One report found in a message: its bytes as sent and what the carrying message said about it.

    ``report_domain``, ``report_submitter`` and ``subject`` come from the innermost message carrying the
    attachment that has them (a forward's own headers are used only when the forwarded message lacks them).
    ``nesting`` is the number of ``message/rfc822`` levels around the attachment (0 for a direct report).
    """

    data: bytes
    content_type: str
    filename: str | None
    report_domain: str | None
    report_submitter: str | None
    subject: str | None
    message_id: str | None
    nesting: int = 0
    warnings: tuple[ReportWarning, ...] = ()

    @property
    def fallback_domain(self) -> str | None:
        """Where a report without ``policy-domain`` gets one (EC-36): the ``TLS-Report-Domain`` header, else
        the file name (RPT-I-26), else the Subject (RPT-I-21). Lower-case A-labels, or ``None``."""
        for candidate in (
            self.report_domain,
            (parts.policy_domain if self.filename and (parts := filename_parts(self.filename)) else None),
            (subject.policy_domain if self.subject and (subject := parse_subject(self.subject)) else None),
        ):
            domain = _try_domain(candidate)
            if domain is not None:
                return domain
        return None

    def parse(self, *, limits: Limits = DEFAULT_LIMITS) -> Report:
        """:func:`parse_report` on the attachment with :attr:`fallback_domain`; raises its ``ReportError``."""
        return parse_report(self.data, limits=limits, fallback_domain=self.fallback_domain)


@dataclass(frozen=True)
class ReportMessage:
    """What :func:`extract_reports` found: the attachments in message order, the top-level headers, and
    whether the message has the RFC 8460 §5.3 shape (``multipart/report; report-type=tlsrpt``)."""

    attachments: tuple[ReportAttachment, ...]
    subject: str | None
    message_id: str | None
    report_domain: str | None
    report_submitter: str | None
    is_tlsrpt_report: bool
    warnings: tuple[ReportWarning, ...] = ()


# ------------------------------------------------------------------------------------------------ reading


def extract_reports(data: bytes, *, limits: MessageLimits = DEFAULT_MESSAGE_LIMITS) -> ReportMessage:
    """Find the report attachments of one RFC 5322 message; raise :class:`MessageError` if it is unreadable.

    A message without any report gives a :class:`ReportMessage` with no attachments (not an error): the
    caller decides how to count it.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise MessageError("not-bytes", f"a message must be bytes, not {type(data).__name__}")
    raw = bytes(data)
    if len(raw) > limits.max_message_bytes:
        raise MessageError(
            "too-large", f"message is {len(raw)} bytes, more than the limit of {limits.max_message_bytes}"
        )
    if not raw.strip():
        raise MessageError("empty", "message is empty")
    _precheck(raw, limits)
    try:
        message = BytesParser(policy=email.policy.default).parsebytes(raw)
    except RecursionError:
        raise MessageError("too-deep", "message is nested too deeply (MIME parts or header comments)") from None
    except Exception as exc:  # noqa: BLE001 - the email package's failure modes are not all documented
        raise MessageError("unreadable", f"message cannot be parsed ({type(exc).__name__})") from None
    walker = _Walker(limits)
    try:
        walker.walk(message)
        top = walker.headers(message, None)
        content_type = _safe(lambda: message.get_content_type(), "text/plain")
        report_type = _safe(lambda: str(message.get_param("report-type", "") or ""), "")
    except MessageError:
        raise
    except RecursionError:
        raise MessageError("too-deep", "message MIME structure is nested too deeply") from None
    except Exception as exc:  # noqa: BLE001 - as above
        raise MessageError("unreadable", f"message cannot be read ({type(exc).__name__})") from None
    is_report = content_type == "multipart/report" and report_type.strip().lower() == "tlsrpt"
    warnings = list(walker.top_warnings)
    if walker.attachments and not is_report:
        shape = content_type + (f"; report-type={report_type}" if report_type else "")
        text = f"message is {shape}, not multipart/report; report-type=tlsrpt"
        warnings.insert(0, ReportWarning("not-multipart-report", text))
    return ReportMessage(
        attachments=tuple(walker.attachments),
        subject=top.subject,
        message_id=top.message_id,
        report_domain=top.report_domain,
        report_submitter=top.report_submitter,
        is_tlsrpt_report=is_report,
        warnings=tuple(warnings),
    )


# Header fields the email package decodes (while parsing, or when we read them).
_DECODED_FIELDS = frozenset({
    b"content-type", b"content-disposition", b"content-transfer-encoding", b"subject", b"message-id",
    b"tls-report-domain", b"tls-report-submitter",
})
# What the email package's feed parser takes for a header line (email.feedparser.headerRE).
_HEADER_LINE_RE = re.compile(rb"From |[\x21-\x39\x3b-\x7e]*:|[\t ]")


def _precheck(raw: bytes, limits: MessageLimits) -> None:
    """Bound what the email package will do before it does it (RPT-I-45).

    Its parser costs time per MIME part and per header field, and decoding some header fields is quadratic
    or worse on hostile text, whatever the message size. A linear scan over the lines follows the MIME
    layout closely enough: header blocks begin the message, follow every line beginning ``--`` (each MIME
    boundary is one) and follow a header block declaring ``message/*``; bodies are skipped with ``find``.
    """
    text = raw.replace(b"\r\n", b"\n").replace(b"\r", b"\n")  # the parser splits lines on all three
    size = len(text)
    position = 0
    in_headers = True
    blocks = 1
    fields = 0
    decoded_total = 0
    field_name: bytes | None = None
    field_size = 0
    declares_message = False
    max_blocks = 3 * limits.max_parts + 10

    def close_field() -> None:
        nonlocal decoded_total
        if field_name in _DECODED_FIELDS:
            if field_size > limits.max_header_bytes:
                name = field_name.decode("ascii", "replace")
                raise MessageError(
                    "header-too-long", f"a {name} header field is longer than {limits.max_header_bytes} bytes"
                )
            decoded_total += field_size
            if decoded_total > limits.max_header_total:
                raise MessageError(
                    "header-too-long", f"MIME and report header fields exceed {limits.max_header_total} bytes in all"
                )

    while position < size:
        if not in_headers:
            if not text.startswith(b"--", position):
                found = text.find(b"\n--", position)
                if found == -1:
                    return
                position = found + 1
            line_end = text.find(b"\n", position)
            position = size if line_end == -1 else line_end + 1
            blocks += 1
            if blocks > max_blocks:
                raise MessageError("too-many-parts", f"message has more than {limits.max_parts} MIME parts")
            in_headers, field_name, field_size, declares_message = True, None, 0, False
            continue
        line_end = text.find(b"\n", position)
        end = size if line_end == -1 else line_end
        line_start = position
        position = end + 1
        if end == line_start:  # the blank line after a header block
            close_field()
            if declares_message:  # a message/rfc822 (or other message/*) body begins with headers
                blocks += 1
                if blocks > max_blocks:
                    raise MessageError("too-many-parts", f"message has more than {limits.max_parts} MIME parts")
            in_headers, field_name, field_size, declares_message = declares_message, None, 0, False
            continue
        if not _HEADER_LINE_RE.match(text, line_start, end):
            close_field()  # the body begins without a blank line; this line belongs to it
            in_headers, field_name, position = False, None, line_start
            continue
        first = text[line_start]
        if first in b" \t":
            field_size += end - line_start
        else:
            close_field()
            fields += 1
            if fields > limits.max_header_fields:
                raise MessageError(
                    "too-many-headers", f"message has more than {limits.max_header_fields} header fields"
                )
            colon = text.find(b":", line_start, end)
            field_name = text[line_start:colon].strip().lower() if colon != -1 else None
            field_size = end - line_start
        if field_name == b"content-type" and b"message/" in text[line_start:end].lower():
            declares_message = True
    close_field()


class _Headers(NamedTuple):
    subject: str | None
    message_id: str | None
    report_domain: str | None
    report_submitter: str | None


class _Walker:
    def __init__(self, limits: MessageLimits) -> None:
        self.limits = limits
        self.parts = 0
        self.attachments: list[ReportAttachment] = []
        self.top_warnings: list[ReportWarning] = []

    def headers(self, message: EmailMessage, outer: _Headers | None) -> _Headers:
        values: list[str | None] = []
        for name in ("Subject", "Message-ID", "TLS-Report-Domain", "TLS-Report-Submitter"):
            value = self.header(message, name)
            if value is None and outer is not None:
                value = outer[len(values)]
            values.append(value)
        return _Headers(*values)

    def header(self, message: EmailMessage, name: str) -> str | None:
        try:
            value = message.get(name)
        except Exception:  # noqa: BLE001 - header parsing of hostile text
            self.top_warnings.append(ReportWarning("header-unreadable", f"header {name} could not be parsed"))
            return None
        if value is None:
            return None
        text = " ".join(str(value).split())
        return text or None

    def walk(self, top: EmailMessage) -> None:
        # Iterative: (part, depth, nesting, headers of the innermost message so far)
        stack: list[tuple[EmailMessage, int, int, _Headers]] = [(top, 0, 0, self.headers(top, None))]
        while stack:
            part, depth, nesting, context = stack.pop()
            self.parts += 1
            if self.parts > self.limits.max_parts:
                raise MessageError("too-many-parts", f"message has more than {self.limits.max_parts} MIME parts")
            if depth > self.limits.max_depth:
                raise MessageError("too-deep", f"message MIME structure is nested deeper than {self.limits.max_depth}")
            content_type = part.get_content_type()
            if part.is_multipart():
                payload = part.get_payload()  # a multipart part's payload is the list of its parts
                children = [child for child in payload if isinstance(child, EmailMessage)] \
                    if isinstance(payload, list) else []
                if content_type == "message/rfc822" or content_type.startswith("message/"):
                    inner_nesting = nesting + 1
                    nested = [(child, self.headers(child, context)) for child in children]
                    stack.extend((child, depth + 1, inner_nesting, ctx) for child, ctx in reversed(nested))
                else:
                    stack.extend((child, depth + 1, nesting, context) for child in reversed(children))
                continue
            self.leaf(part, nesting, context)

    def leaf(self, part: EmailMessage, nesting: int, context: _Headers) -> None:
        content_type = part.get_content_type()
        filename = _safe(part.get_filename, None)
        if filename is not None:
            filename = str(filename).strip() or None
        payload = _safe(lambda: part.get_payload(decode=True), None)
        if not isinstance(payload, bytes) or not payload.strip():
            return
        warnings: list[ReportWarning] = []
        named = bool(filename) and filename.lower().endswith((".json", ".json.gz", ".zip", ".json.zip"))
        if content_type in REPORT_CONTENT_TYPES:
            kind = _sniff(payload)
            if kind is None:
                decoded = _undeclared_base64(payload)
                if decoded is not None:
                    payload = decoded
                    warnings.append(_undeclared_warning(content_type))
        else:
            if content_type.startswith(("multipart/", "message/")):
                return
            kind = _sniff(payload)
            if kind is None and (named or not content_type.startswith("text/")):
                decoded = _undeclared_base64(payload)
                if decoded is not None and _sniff(decoded) is not None:
                    payload, kind = decoded, _sniff(decoded)
                    warnings.append(_undeclared_warning(content_type))
            if content_type.startswith("text/") and not named:
                return  # the human-readable part, a JSON-looking text body is not a report
            if not named and kind is None:
                return
            if filename and filename.lower().endswith((".xml", ".xml.gz", ".xml.zip")):
                return  # a DMARC aggregate report
            how = f"file name {filename!r}" if named else f"{kind} content"
            text = f"report found in a {content_type} part by its {how}"
            warnings.append(ReportWarning("generic-content-type", text))
        if nesting:
            warnings.append(ReportWarning("forwarded", f"report found inside {nesting} forwarded message(s)"))
        defects = _safe(lambda: list(part.defects), [])
        if defects:
            names = ", ".join(sorted({type(d).__name__ for d in defects}))
            warnings.append(ReportWarning("mime-defects", f"MIME defects in the report part: {names}"))
        if context.report_domain is None:
            warnings.append(ReportWarning("missing-report-domain", "no TLS-Report-Domain header"))
        if context.report_submitter is None:
            warnings.append(ReportWarning("missing-report-submitter", "no TLS-Report-Submitter header"))
        if len(self.attachments) >= self.limits.max_attachments:
            raise MessageError(
                "too-many-attachments", f"message has more than {self.limits.max_attachments} report attachments"
            )
        self.attachments.append(
            ReportAttachment(
                data=payload,
                content_type=content_type,
                filename=filename,
                report_domain=context.report_domain,
                report_submitter=context.report_submitter,
                subject=context.subject,
                message_id=context.message_id,
                nesting=nesting,
                warnings=tuple(warnings),
            )
        )


def _undeclared_warning(content_type: str) -> ReportWarning:
    text = f"{content_type} part was base64 without Content-Transfer-Encoding: base64"
    return ReportWarning("undeclared-base64", text)


def _sniff(payload: bytes) -> str | None:
    """``"gzip"``/``"zip"`` when the bytes hold JSON inside, ``"json"`` for a JSON object, else ``None``."""
    if payload[:2] == GZIP_MAGIC:
        try:
            head = zlib.decompressobj(wbits=31).decompress(payload[:4096], 64)
        except zlib.error:
            return None
        return "gzip" if _json_start(head) else None
    if payload[:4] == ZIP_MAGIC:
        try:
            with zipfile.ZipFile(io.BytesIO(payload)) as archive:
                names = [n.lower() for n in archive.namelist()[:100]]
        except Exception:  # noqa: BLE001 - zipfile on hostile input
            return None
        return "zip" if any(n.endswith((".json", ".json.gz")) for n in names) else None
    return "json" if _json_start(payload[:64]) else None


def _json_start(head: bytes) -> bool:
    return head.lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"{")


_BASE64_RE = re.compile(rb"[A-Za-z0-9+/=\s]+")


def _undeclared_base64(payload: bytes) -> bytes | None:
    if len(payload) < 8 or not _BASE64_RE.fullmatch(payload[:4096]):
        return None
    try:
        decoded = base64.b64decode(b"".join(payload.split()), validate=True)
    except (binascii.Error, ValueError):
        return None
    return decoded if _sniff(decoded) is not None else None


def _safe(call: Any, default: Any) -> Any:
    try:
        return call()
    except Exception:  # noqa: BLE001 - the email package on hostile input
        return default


def _try_domain(text: str | None) -> str | None:
    if not text:
        return None
    try:
        return normalize_domain(text.strip())
    except (ParseError, ValueError, UnicodeError):
        return None


# ------------------------------------------------------------------------------------------------ subject

_SUBJECT_RE = re.compile(
    r"Report[ -]?Domain:\s*(?P<domain>\S+)\s+Submitter:\s*(?P<submitter>\S+)\s+Report-?ID:\s*(?P<id><[^>]*>|\S+)",
    re.IGNORECASE,
)


def parse_subject(subject: str) -> SubjectParts | None:
    """Read ``Report Domain: D Submitter: S Report-ID: <ID>`` (RPT-I-21) anywhere in *subject* (so a
    ``Fwd:`` prefix does no harm); ``None`` when it is not there. The Report-ID keeps its angle brackets."""
    if not isinstance(subject, str) or len(subject) > 2000:
        return None
    match = _SUBJECT_RE.search(subject)
    if match is None:
        return None
    return SubjectParts(match["domain"], match["submitter"], match["id"])


# ------------------------------------------------------------------------------------------- cross-check


def cross_check(attachment: ReportAttachment, report: Report) -> tuple[ReportWarning, ...]:
    """Where the message's headers, Subject and file name disagree with the report body (RPT-I-18, RPT-I-19,
    RPT-I-21, RPT-I-26). The body is authoritative (RPT-I-44): these are warnings to store, not errors."""
    out: list[ReportWarning] = []
    domains = {p.policy_domain for p in report.policies if p.policy_domain}
    header_domain = _try_domain(attachment.report_domain)
    if header_domain and domains and header_domain not in domains:
        out.append(ReportWarning(
            "report-domain-mismatch",
            f"TLS-Report-Domain {header_domain!r} is not a policy domain of the report ({', '.join(sorted(domains))})"))
    header_submitter = _try_domain(attachment.report_submitter)
    if header_submitter and report.submitter and header_submitter != report.submitter:
        out.append(ReportWarning(
            "submitter-mismatch",
            f"TLS-Report-Submitter {header_submitter!r} differs from the contact-info domain {report.submitter!r}"))
    parts = filename_parts(attachment.filename) if attachment.filename else None
    if parts is not None:
        problems = []
        if domains and parts.policy_domain not in domains:
            problems.append(f"policy domain {parts.policy_domain!r}")
        if parts.begin != report.start:
            problems.append("begin timestamp")
        # the file name's end may be inclusive (…23:59:59) or exclusive (next 00:00:00), like the body's
        if report.end_exclusive not in (parts.end, parts.end + timedelta(seconds=1)) and parts.end != report.end:
            problems.append("end timestamp")
        if problems:
            text = f"file name {attachment.filename!r} disagrees with the body: {', '.join(problems)}"
            out.append(ReportWarning("filename-mismatch", text))
    subject = parse_subject(attachment.subject) if attachment.subject else None
    if subject is not None:
        problems = []
        if domains and _try_domain(subject.policy_domain) not in domains:
            problems.append(f"Report Domain {subject.policy_domain!r}")
        if header_submitter and _try_domain(subject.submitter) != header_submitter:
            problems.append(f"Submitter {subject.submitter!r}")
        if problems:
            out.append(ReportWarning("subject-mismatch", f"Subject disagrees: {', '.join(problems)}"))
    return tuple(out)


# --------------------------------------------------------------------------------------------------- mbox

_FROM_LINE_RE = re.compile(rb"From \S")
_MBOXRD_ESCAPE_RE = re.compile(rb"^>(>*From )", re.MULTILINE)


def looks_like_mbox(data: bytes) -> bool:
    """Does *data* begin with an mbox ``From `` separator line?"""
    return isinstance(data, (bytes, bytearray, memoryview)) and bool(_FROM_LINE_RE.match(bytes(data[:6])))


def iter_mbox(data: bytes) -> Iterator[bytes]:
    """Split an mbox file into messages (bytes, without the ``From `` line and the blank line before the
    next one). Every line beginning ``From `` starts a message, as in :mod:`mailbox`; ``>From `` lines are
    unescaped once (mboxrd; for mboxo this is right too, except for a body line that really began with
    ``>From``). Raises :class:`MessageError` (``not-mbox``) when *data* does not begin with a ``From `` line.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise MessageError("not-bytes", f"an mbox must be bytes, not {type(data).__name__}")
    raw = bytes(data)
    if not looks_like_mbox(raw):
        raise MessageError("not-mbox", "data does not begin with an mbox 'From ' line")
    return _iter_mbox(raw)


def _iter_mbox(raw: bytes) -> Iterator[bytes]:
    position = 0
    size = len(raw)
    while position < size:
        line_end = raw.find(b"\n", position)
        if line_end == -1:
            return  # a lone "From " line at the end
        next_from = raw.find(b"\nFrom ", line_end)
        end = size if next_from == -1 else next_from + 1
        message = raw[line_end + 1 : end]
        if message.endswith(b"\r\n\r\n"):
            message = message[:-2]
        elif message.endswith(b"\n\n"):
            message = message[:-1]
        yield _MBOXRD_ESCAPE_RE.sub(rb"\1", message)
        position = end
