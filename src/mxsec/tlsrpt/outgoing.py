"""The TLSRPT report message a sender mails (RFC 8460 §5.3): report bytes in, message bytes out. Sans-I/O.

:func:`compose_message` builds the whole message, ready to DKIM-sign (:mod:`mxsec.tlsrpt.dkim_sign`) and submit:

* top level ``multipart/report; report-type="tlsrpt"`` (RFC 6522, RPT-I-17) with ``From``, ``To`` (every
  ``mailto:`` recipient of the domain's ``rua``), ``Date``, ``Message-ID``, the ``Subject`` of RPT-I-21,
  ``TLS-Report-Domain`` and ``TLS-Report-Submitter`` (RPT-I-18) and ``TLS-Required: No`` (RFC 8689: the
  report is delivered even when TLS to the reporting domain fails, RFC 8460 §3);
* part 1, ``text/plain; charset=utf-8``: what the message is, for a person;
* part 2, ``application/tlsrpt+gzip``, base64 in lines of 76, ``Content-Disposition: attachment;
  filename="…"`` with a plain ``filename=`` parameter (RPT-I-22). The email package would write a long name
  as an RFC 2231 continuation (``filename*0*=``), which some receivers do not read, so the message is
  written here by hand rather than by :mod:`email.generator`.

The output is deterministic: the same arguments give the same bytes (the MIME boundary and a missing
``Message-ID`` are derived from a hash of the inputs, never random), lines end in CRLF and no line is longer
than 998 octets (RFC 5322 §2.1.1; header lines are folded at 78 where there is a space to fold at).

Header inputs are checked, not cleaned: CR, LF, NUL or any other control character is refused with
:class:`ComposeError` (a :class:`ValueError`), so no input can add a header field (header injection).
Domains are written as lower-case A-labels. A non-ASCII organisation name becomes RFC 2047 encoded words in
the ``From`` display name; an address whose local part is not ASCII is refused (it would need SMTPUTF8).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Sequence
from datetime import UTC, datetime
from email.utils import format_datetime

from mxsec.errors import ParseError
from mxsec.names import DomainError, normalize_domain

__all__ = [
    "MAX_LINE",
    "REPORT_CONTENT_TYPE",
    "ComposeError",
    "compose_message",
    "report_subject",
]

#: The content type of a gzip-compressed report (RFC 8460 §6.4).
REPORT_CONTENT_TYPE = "application/tlsrpt+gzip"
#: RFC 5322 §2.1.1: a line MUST be no longer than 998 octets (excluding CRLF), SHOULD be no longer than 78.
MAX_LINE = 998
FOLD_AT = 78
CRLF = b"\r\n"

MAX_REPORT_ID = 512
MAX_FILENAME = 900
MAX_ORGANIZATION = 256
MAX_RECIPIENTS = 100
MAX_LOCAL_PART = 64

# RFC 5322 §3.2.3 atext, for a dot-atom local part.
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]"
_DOT_ATOM_RE = re.compile(rf"{_ATEXT}+(?:\.{_ATEXT}+)*")
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")
_NOT_ATEXT_RE = re.compile(r"[^A-Za-z0-9!#$%&'*+/=^_`{|}~.-]")  # atext and '.', without '?'
_DOTS_RE = re.compile(r"\.{2,}")
# Printable ASCII without space, '<' and '>' (a msg-id between its angle brackets).
_ID_TEXT_RE = re.compile(r"[\x21-\x3b\x3d\x3f-\x7e]+")
# What a quoted filename may hold: printable ASCII but '"' and '\'.
_FILENAME_RE = re.compile(r"[\x20\x21\x23-\x5b\x5d-\x7e]+")


class ComposeError(ParseError):
    """An argument of :func:`compose_message` or :func:`report_subject` cannot be written into the message
    (header injection, a bad domain or address, an empty report...). A :class:`ValueError`."""


# ------------------------------------------------------------------------------------------------ public


def report_subject(report_domain: str, submitter: str, report_id: str) -> str:
    """``Report Domain: <report_domain> Submitter: <submitter> Report-ID: <<report_id>>`` (RFC 8460 §5.3,
    RPT-I-21). Domains become lower-case A-labels. The Report-ID is written as an RFC 5322 msg-id, as the
    RFC's ABNF asks: ``@submitter`` is appended when *report_id* has no ``@``, angle brackets already around
    it are kept once, and characters a msg-id cannot hold become ``.`` (``2024-02-17T00:00:00Z_example.com``
    gives ``<2024-02-17T00.00.00Z_example.com@submitter>``; large reporters do the same)."""
    domain = _domain(report_domain, "report_domain")
    reporter = _domain(submitter, "submitter")
    return f"Report Domain: {domain} Submitter: {reporter} Report-ID: {_report_msg_id(report_id, reporter)}"


def compose_message(
    *,
    report_gz: bytes,
    filename: str,
    report_domain: str,
    submitter: str,
    report_id: str,
    from_addr: str,
    to_addrs: Sequence[str],
    date: datetime,
    message_id: str | None = None,
    organization_name: str | None = None,
    begin: datetime,
    end: datetime,
) -> bytes:
    """The RFC 8460 §5.3 report message for one report (see the module documentation), as CRLF bytes.

    *report_gz* is the gzip-compressed report, attached as it is. *filename* is the attachment's name (RFC 8460
    §5.1: ``submitter!policy-domain!begin!end[!unique-id].json.gz``), printable ASCII without ``"`` or ``\\``.
    *report_domain* is the policy domain, *submitter* the domain of the report's ``contact-info``
    (RPT-I-19); both become A-labels. *from_addr* and each of *to_addrs* are bare addresses
    (``local@domain``, duplicates written once); *organization_name*, when given, is the display name of
    ``From`` and named in the text part. *date* is the ``Date`` header; *begin* and *end* the report's date
    range, shown in UTC in the text part. A naive datetime is taken as UTC. Without *message_id*, one is
    made as ``<hex@submitter>`` from a hash of the other arguments.

    Raises :class:`ComposeError` (a :class:`ValueError`) for anything that cannot be written safely.
    """
    payload = _report_bytes(report_gz)
    name = _filename(filename)
    domain = _domain(report_domain, "report_domain")
    reporter = _domain(submitter, "submitter")
    report_msg_id = _report_msg_id(report_id, reporter)
    sender = _address(from_addr, "from_addr")
    recipients = _recipients(to_addrs)
    organization = _organization(organization_name)
    sent = _utc(date, "date")
    start = _utc(begin, "begin")
    stop = _utc(end, "end")
    if stop <= start:
        raise ComposeError(f"end ({_iso(stop)}) must be after begin ({_iso(start)})")

    digest = hashlib.sha256()
    for item in (domain, reporter, report_msg_id, name, sender, *recipients, organization or "", _iso(sent),
                 _iso(start), _iso(stop)):
        digest.update(item.encode("utf-8") + b"\x00")
    digest.update(hashlib.sha256(payload).digest())
    seed = digest.hexdigest()
    msg_id = _msg_id(message_id) if message_id is not None else f"<{seed[:32]}@{reporter}>"

    text_headers, text_body = _text_part(
        organization=organization, submitter=reporter, domain=domain, report_msg_id=report_msg_id,
        begin=start, end=stop, filename=name,
    )
    attachment = base64.encodebytes(payload).replace(b"\n", CRLF)
    boundary = _boundary(seed, text_body)

    lines: list[str] = [
        _from_header(sender, organization),
        _fold_list("To", recipients),
        f"Date: {format_datetime(sent)}",
        _fold_words("Subject", f"Report Domain: {domain} Submitter: {reporter} Report-ID: {report_msg_id}"),
        f"Message-ID: {msg_id}",
        "MIME-Version: 1.0",
        f'Content-Type: multipart/report; report-type="tlsrpt";\r\n boundary="{boundary}"',
        f"TLS-Report-Domain: {domain}",
        f"TLS-Report-Submitter: {reporter}",
        "TLS-Required: No",
    ]
    out = bytearray()
    for line in lines:
        out += line.encode("ascii") + CRLF
    out += CRLF
    out += b"This is an SMTP TLS report (RFC 8460) in MIME format." + CRLF
    out += b"--" + boundary.encode("ascii") + CRLF
    out += text_headers + CRLF + text_body
    out += b"--" + boundary.encode("ascii") + CRLF
    out += (
        f"Content-Type: {REPORT_CONTENT_TYPE}\r\n"
        "Content-Transfer-Encoding: base64\r\n"
        f'Content-Disposition: attachment;\r\n filename="{name}"\r\n'
    ).encode("ascii")
    out += CRLF + attachment
    out += b"--" + boundary.encode("ascii") + b"--" + CRLF
    message = bytes(out)
    if max(len(line) for line in message.split(CRLF)) > MAX_LINE:  # pragma: no cover - a bug
        raise ComposeError("internal error: a line of the composed message is longer than 998 octets")
    return message


# ------------------------------------------------------------------------------------------------ checks


def _no_injection(value: object, what: str) -> str:
    if not isinstance(value, str):
        raise ComposeError(f"{what} must be text, not {type(value).__name__}")
    if any(ch in value for ch in "\r\n\x00"):
        raise ComposeError(f"{what} contains CR, LF or NUL: refused (header injection)")
    return value


def _domain(value: object, what: str) -> str:
    text = _no_injection(value, what)
    if _CONTROL_RE.search(text):
        raise ComposeError(f"{what} contains a control character")
    try:
        return normalize_domain(text.strip().removesuffix("."))
    except DomainError as exc:
        raise ComposeError(f"{what} {_show(text)}: {exc}") from None


def _address(value: object, what: str) -> str:
    """``local@domain`` with the domain as an A-label; a local part that is not a dot-atom is quoted."""
    text = _no_injection(value, what).strip()
    if _CONTROL_RE.search(text):
        raise ComposeError(f"{what} contains a control character")
    local, at, domain = text.rpartition("@")
    if not at or not local or not domain:
        raise ComposeError(f"{what} {_show(text)} is not an address (local@domain)")
    if local.startswith('"') and local.endswith('"') and len(local) >= 2:
        local = re.sub(r"\\(.)", r"\1", local[1:-1])
    if not local.isascii():
        raise ComposeError(f"{what} {_show(text)}: a non-ASCII local part needs SMTPUTF8; not supported")
    if len(local) > MAX_LOCAL_PART:
        raise ComposeError(f"{what} {_show(text)}: the local part is longer than {MAX_LOCAL_PART} characters")
    if not _DOT_ATOM_RE.fullmatch(local):
        local = '"' + local.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return f"{local}@{_domain(domain, what + ' domain')}"


def _recipients(values: Sequence[str]) -> list[str]:
    if isinstance(values, str):
        values = (values,)
    try:
        items = list(values)
    except TypeError:
        raise ComposeError("to_addrs must be a sequence of addresses") from None
    out: list[str] = []
    for value in items:
        address = _address(value, "to_addrs")
        if address.lower() not in (seen.lower() for seen in out):
            out.append(address)
    if not out:
        raise ComposeError("to_addrs is empty: a report needs at least one recipient")
    if len(out) > MAX_RECIPIENTS:
        raise ComposeError(f"more than {MAX_RECIPIENTS} recipients")
    return out


def _organization(value: object) -> str | None:
    if value is None:
        return None
    text = _no_injection(value, "organization_name")
    if _CONTROL_RE.search(text):
        raise ComposeError("organization_name contains a control character")
    text = " ".join(text.split())
    if len(text) > MAX_ORGANIZATION:
        raise ComposeError(f"organization_name is longer than {MAX_ORGANIZATION} characters")
    return text or None


def _report_msg_id(value: object, submitter: str) -> str:
    """``<id-left@id-right>`` (RFC 5322 msg-id with dot-atom-text on both sides) from a report id.

    A character a dot-atom cannot hold (``:`` of an ISO timestamp, a space, non-ASCII...) becomes ``.``, and
    so does ``?`` (``=?`` would start an RFC 2047 encoded word); runs of dots become one and none is left at
    either end. Without ``@``, the id-right is *submitter*."""
    text = _no_injection(value, "report_id").strip()
    if text.startswith("<") and text.endswith(">"):
        text = text[1:-1]
    if len(text) > MAX_REPORT_ID:
        raise ComposeError(f"report_id is longer than {MAX_REPORT_ID} characters")
    left, at, right = text.rpartition("@")
    if not at:
        left, right = text, submitter
    left, right = _dot_atom(left), _dot_atom(right)
    if not left or not right:
        raise ComposeError(f"report_id {_show(value)} holds nothing that can go into a Report-ID")
    return f"<{left}@{right}>"


def _dot_atom(text: str) -> str:
    return _DOTS_RE.sub(".", _NOT_ATEXT_RE.sub(".", text)).strip(".")


def _msg_id(value: object) -> str:
    text = _no_injection(value, "message_id").strip()
    if text.startswith("<") and text.endswith(">"):
        text = text[1:-1]
    left, at, right = text.rpartition("@")
    if not at or not left or not right or len(text) > MAX_REPORT_ID or not _ID_TEXT_RE.fullmatch(text):
        raise ComposeError(f"message_id {_show(value)} is not a message id (<left@right>, printable ASCII)")
    return f"<{text}>"


def _filename(value: object) -> str:
    text = _no_injection(value, "filename")
    if not text or not _FILENAME_RE.fullmatch(text):
        raise ComposeError(
            f"filename {_show(text)}: must be printable ASCII without '\"' or '\\' "
            "(submitter!domain!begin!end!id.json.gz)"
        )
    if len(text) > MAX_FILENAME:
        raise ComposeError(f"filename is longer than {MAX_FILENAME} characters")
    return text


def _report_bytes(value: object) -> bytes:
    if not isinstance(value, (bytes, bytearray, memoryview)):
        raise ComposeError(f"report_gz must be bytes, not {type(value).__name__}")
    data = bytes(value)
    if not data.strip():
        raise ComposeError("report_gz is empty")
    return data


def _utc(value: object, what: str) -> datetime:
    if not isinstance(value, datetime):
        raise ComposeError(f"{what} must be a datetime, not {type(value).__name__}")
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


# ------------------------------------------------------------------------------------------------ writing


def _from_header(address: str, organization: str | None) -> str:
    if not organization:
        return f"From: {address}"
    if organization.isascii():
        quoted = '"' + organization.replace("\\", "\\\\").replace('"', '\\"') + '"'
        return _fold_words("From", f"{quoted} <{address}>")
    words = _encoded_words(organization)
    return "From: " + "\r\n ".join(words) + f"\r\n <{address}>"


def _encoded_words(text: str) -> list[str]:
    """RFC 2047 ``=?utf-8?b?…?=`` words of at most 72 characters, split between characters (never inside
    one); a decoder joins adjacent encoded words and drops the folding between them (RFC 2047 §6.2; this is
    what :mod:`email`'s own generator writes too, although its address parser reads a space there)."""
    words: list[bytes] = []
    chunk = b""
    for ch in text:
        encoded = ch.encode("utf-8")
        if len(chunk) + len(encoded) > 45:  # 45 octets -> 60 base64 characters -> a 72-character word
            words.append(chunk)
            chunk = b""
        chunk += encoded
    if chunk:
        words.append(chunk)
    return [f"=?utf-8?b?{base64.b64encode(word).decode('ascii')}?=" for word in words]


def _fold_words(name: str, value: str) -> str:
    """``Name: value`` folded before spaces so lines stay within 78 characters where a space allows it."""
    lines: list[str] = []
    current = f"{name}:"
    for word in value.split(" "):
        if len(current) + 1 + len(word) > FOLD_AT and current != f"{name}:":
            lines.append(current)
            current = ""
        current += " " + word
    lines.append(current)
    return "\r\n".join(lines)


def _fold_list(name: str, items: Sequence[str]) -> str:
    lines: list[str] = []
    current = f"{name}:"
    for index, item in enumerate(items):
        piece = item + ("," if index < len(items) - 1 else "")
        if len(current) + 1 + len(piece) > FOLD_AT and current != f"{name}:":
            lines.append(current)
            current = ""
        current += " " + piece
    lines.append(current)
    return "\r\n".join(lines)


def _text_part(*, organization: str | None, submitter: str, domain: str, report_msg_id: str, begin: datetime,
               end: datetime, filename: str) -> tuple[bytes, bytes]:
    """The human-readable part: its MIME headers and its encoded body (7bit when it can be, else
    quoted-printable, so the message stays 7-bit clean)."""
    who = f"{organization} ({submitter})" if organization else submitter
    text = (
        "This is an aggregate TLS report (SMTP TLS Reporting, RFC 8460).\n"
        "\n"
        f"Sent by:        {who}\n"
        f"Report domain:  {_with_ulabel(domain)}\n"
        f"Period (UTC):   {_iso(begin)} to {_iso(end)}\n"
        f"Report-ID:      {report_msg_id}\n"
        "\n"
        "The attachment is the report itself, for software that reads TLS reports:\n"
        f"JSON compressed with gzip ({REPORT_CONTENT_TYPE}), named\n"
        f"{filename}\n"
    )
    data = text.encode("utf-8")
    if data.isascii():  # 7bit: lines of at most 998 octets, which every input here keeps to
        encoding, body = "7bit", data
    else:
        encoding, body = "quoted-printable", binascii.b2a_qp(data, quotetabs=False, istext=True, header=False)
    body = body.replace(b"\r\n", b"\n").replace(b"\n", CRLF)
    if not body.endswith(CRLF):
        body += CRLF
    headers = f"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: {encoding}\r\n"
    return headers.encode("ascii"), body


def _with_ulabel(domain: str) -> str:
    if "xn--" not in domain:
        return domain
    try:
        import idna

        unicode = idna.decode(domain)
    except Exception:  # noqa: BLE001 - an A-label idna will not decode: show the A-label only
        return domain
    return f"{domain} ({unicode})" if unicode != domain else domain


def _boundary(seed: str, text_body: bytes) -> str:
    """A boundary from the inputs' hash. Base64 never holds ``_``, quoted-printable never ``=_``, and a 7bit
    text holding the boundary makes the next candidate be taken."""
    for counter in range(100):
        candidate = "----=_mxsec_tlsrpt_" + hashlib.sha256(f"{seed}/{counter}".encode()).hexdigest()[:32]
        if candidate.encode("ascii") not in text_body:
            return candidate
    raise ComposeError("internal error: no MIME boundary found")  # pragma: no cover


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _show(value: object) -> str:
    shown = repr(value)
    return shown if len(shown) <= 80 else shown[:77] + "..."
