"""SMTP STARTTLS probe (asyncio): connect, EHLO, STARTTLS, handshake, record what the server presented.

A thin adapter: it makes no policy decisions. It reports what happened and leaves DANE (``mxsec.dane.verify``),
MTA-STS or PKIX judgements to the caller. Errors are values: :func:`probe_starttls` never raises for anything
the network or the server does; the result says which ``stage`` failed and why.

Usage::

    from mxsec.net.smtp import probe_starttls

    probe = await probe_starttls("192.0.2.25", 25, server_name="mx.example.com", timeout=10)
    if probe.ok:
        probe.tls_version, probe.cipher      # "TLSv1.3", "TLS_AES_256_GCM_SHA384"
        probe.chain                          # (leaf DER, intermediate DER, ...) in presented order
    else:
        probe.stage, probe.error             # "starttls", "STARTTLS not offered"
        probe.starttls_offered               # False: RFC 8460 "starttls-not-supported"

    # optional PKIX check (MTA-STS, the domain checker): trusted chain, host name, expiry
    probe = await probe_starttls(ip, 25, server_name=host, pkix_names=[host], ca_file="/etc/ssl/my-roots.pem")
    probe.pkix.ok, probe.pkix.result_type    # False, "certificate-host-mismatch"

The steps, each bounded by ``timeout`` seconds (a whole multi-line reply counts as one step):

``connect``    TCP connection to ``(address, port)``; ``address`` must be an IP address — the caller resolves
               names (through our :class:`~mxsec.net.dns.DnsClient`) and applies the SSRF guard
               (:class:`~mxsec.net.guard.AddressGuard`); this module never calls the system resolver.
``banner``     the 220 greeting (possibly multi-line).
``ehlo``       ``EHLO <ehlo_name>``, 250 expected; the keywords are recorded (upper-case, e.g. ``STARTTLS``,
               ``SIZE``, ``PIPELINING``).
``starttls``   STARTTLS must be among the keywords (else ``starttls_offered`` is ``False``), then ``STARTTLS`` and a
               220 reply. A server that sends anything after that 220 before the handshake is refused (the
               CVE-2011-0411 class of command injection).
``handshake``  TLS with SNI ``server_name`` and **no verification** (``CERT_NONE``, no host name check): the
               point is to see what the server presents. TLS 1.2 or later by default (``min_version``).

After the handshake the probe sends ``QUIT`` (its answer is read briefly and otherwise ignored) and closes.

Reply limits: a reply line may be at most :data:`MAX_LINE` octets and a reply at most :data:`MAX_LINES` lines, so
a hostile server cannot make the probe read forever; at most :data:`MAX_CHAIN_CERTS` certificates are kept.

The presented chain
    Python 3.11 has no public API for the peer's certificate chain. The probe uses, in this order:

    1. ``ssl_object.get_unverified_chain()`` — public from Python 3.13 on;
    2. ``ssl_object._sslobj.get_unverified_chain()`` — the private C method behind it, present from 3.10 on;
       its items are ``_ssl.Certificate`` objects, turned into DER with ``public_bytes(_ssl.ENCODING_DER)``;
    3. only the leaf, ``ssl_object.getpeercert(binary_form=True)``, if neither works.

    ``SmtpProbe.chain_source`` says which one was used (``"unverified-chain"`` or ``"leaf-only"``). On the client
    side OpenSSL's peer chain starts with the leaf; if it ever did not, the leaf is put first. The certificates
    are in the order the server sent them — not re-ordered, not completed from any store — which is what DANE
    needs (RFC 7671 §5.2: a DANE-TA anchor must be found among the presented certificates).

PKIX (optional, :func:`check_pkix`)
    Done after the handshake on the recorded chain with ``cryptography.x509.verification`` (a WebPKI policy:
    chain to a root in the store, dNSName SAN match — no CN fallback —, validity at ``now``, serverAuth EKU),
    so no second connection is needed. The store is ``ca_file`` (PEM) or the system store
    (:func:`load_trust_store`). Note that this policy is stricter than OpenSSL's defaults in places
    (e.g. it requires subjectAltName); real WebPKI certificates satisfy it.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as _dt
import ipaddress
import os
import re
import socket
import ssl
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.x509 import verification as _xv

__all__ = [
    "DEFAULT_TIMEOUT",
    "MAX_CHAIN_CERTS",
    "MAX_LINE",
    "MAX_LINES",
    "STAGES",
    "PkixResult",
    "Reply",
    "ReplyError",
    "ReplyParser",
    "SmtpProbe",
    "check_pkix",
    "client_context",
    "default_ehlo_name",
    "ehlo_keywords",
    "load_trust_store",
    "parse_reply",
    "peer_chain",
    "valid_ehlo_name",
    "probe_starttls",
]

#: Longest accepted reply line, CRLF included (RFC 5321 §4.5.3.1.5 says 512; servers exceed it in practice).
MAX_LINE = 2048
#: Most lines accepted in one reply (a multi-line EHLO answer has one per extension).
MAX_LINES = 100
#: Most certificates kept from the presented chain.
MAX_CHAIN_CERTS = 32
#: Default time limit per step, seconds.
DEFAULT_TIMEOUT = 10.0
#: Largest trust store file read by :func:`load_trust_store`, octets; and most files read from a CA directory.
MAX_STORE_FILE = 16 * 1024 * 1024
MAX_STORE_DIR_FILES = 2000

#: The stages of a probe, in order; ``SmtpProbe.stage`` is the one that failed.
STAGES = ("connect", "banner", "ehlo", "starttls", "handshake")

_FALLBACK_EHLO = "mxsec.invalid"
_SYSTEM = "the system store"


# --------------------------------------------------------------------------------------------- replies (pure)


class ReplyError(ValueError):
    """A reply that breaks RFC 5321 §4.2 syntax or the size limits; the message is one line."""


@dataclass(frozen=True)
class Reply:
    """One SMTP reply: the three-digit ``code`` and the text of each line (without code, separator and CRLF)."""

    code: int
    lines: tuple[str, ...]

    @property
    def text(self) -> str:
        return " ".join(line for line in self.lines if line).strip()

    def __str__(self) -> str:
        return f"{self.code} {self.text}".rstrip()


class ReplyParser:
    """Collects the lines of one reply (RFC 5321 §4.2.1): ``250-...`` continues, ``250 ...`` or ``250`` ends.

    ``feed(line)`` takes one line (bytes, with or without CRLF) and returns the :class:`Reply` when the line
    ends it, else ``None``; it raises :class:`ReplyError` for a malformed line, a line over ``max_line`` octets,
    more than ``max_lines`` lines, or a continuation line whose code differs from the first line's.
    """

    def __init__(self, *, max_line: int = MAX_LINE, max_lines: int = MAX_LINES) -> None:
        self.max_line = max_line
        self.max_lines = max_lines
        self._code: int | None = None
        self._lines: list[str] = []

    def feed(self, raw: bytes) -> Reply | None:
        if len(raw) > self.max_line:
            raise ReplyError(f"reply line longer than {self.max_line} octets")
        if len(self._lines) >= self.max_lines:
            raise ReplyError(f"reply longer than {self.max_lines} lines")
        line = raw.rstrip(b"\r\n").decode("utf-8", errors="replace")
        if len(line) < 3 or not line[:3].isascii() or not line[:3].isdigit() or line[0] not in "2345":
            raise ReplyError(f"not an SMTP reply line: {_shorten(line)!r}")
        code = int(line[:3])
        separator = line[3:4]
        if separator not in ("", " ", "-"):
            raise ReplyError(f"not an SMTP reply line: {_shorten(line)!r}")
        if self._code is not None and code != self._code:
            raise ReplyError(f"reply code changed from {self._code} to {code} inside one reply")
        self._code = code
        self._lines.append(line[4:])
        if separator == "-":
            return None
        reply = Reply(code, tuple(self._lines))
        self._code, self._lines = None, []
        return reply


def parse_reply(lines: Iterable[bytes], *, max_line: int = MAX_LINE, max_lines: int = MAX_LINES) -> Reply:
    """The reply made of ``lines`` (all of them, the last one ending it). Raises :class:`ReplyError`."""
    parser = ReplyParser(max_line=max_line, max_lines=max_lines)
    reply = None
    for line in lines:
        if reply is not None:
            raise ReplyError("text after the end of the reply")
        reply = parser.feed(line)
    if reply is None:
        raise ReplyError("reply not terminated")
    return reply


def ehlo_keywords(reply: Reply) -> tuple[str, ...]:
    """The EHLO keywords of a 250 reply: the first word of each line after the greeting line, upper-case.

    ``250-mx.example.com Hello``, ``250-SIZE 10240000``, ``250 STARTTLS`` -> ``("SIZE", "STARTTLS")``.
    """
    words = []
    for line in reply.lines[1:]:
        parts = line.split(None, 1)
        if parts and parts[0].upper() not in words:
            words.append(parts[0].upper())
    return tuple(words)


_EHLO_NAME_RE = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?|\[[0-9A-Fa-f.:]+\]|\[IPv6:[0-9A-Fa-f.:]+\]")


def valid_ehlo_name(name: str) -> bool:
    """A host name or an address literal (``[192.0.2.1]``, ``[IPv6:2001:db8::1]``) that is safe to send after
    ``EHLO``: no spaces or control characters, at most 255 characters."""
    return isinstance(name, str) and len(name) <= 255 and _EHLO_NAME_RE.fullmatch(name) is not None


def default_ehlo_name() -> str:
    """The local host name if it is a fully qualified domain name (no DNS lookup is made), else ``mxsec.invalid``."""
    from mxsec.errors import ParseError
    from mxsec.names import normalize_domain

    try:
        name = socket.gethostname()
    except OSError:
        return _FALLBACK_EHLO
    if "." not in name.strip("."):
        return _FALLBACK_EHLO
    try:
        return normalize_domain(name)
    except ParseError:
        return _FALLBACK_EHLO


def _shorten(text: str, limit: int = 80) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


# --------------------------------------------------------------------------------------------- results


@dataclass(frozen=True)
class PkixResult:
    """A WebPKI check of a presented chain (see :func:`check_pkix`).

    ``trusted``: the chain leads to a root of the store (judged at a moment when the leaf is valid, so an
    expired but otherwise good chain still counts as trusted); ``name_matches``: a dNSName SAN matches one of
    the names (``None`` when that could not be judged); ``expired``: the leaf is outside its validity period at
    ``now``. ``result_type`` is the RFC 8460 name of the first problem (``certificate-not-trusted``, then
    ``certificate-expired``, then ``certificate-host-mismatch``), ``None`` when ``ok``.
    """

    ok: bool
    trusted: bool
    name_matches: bool | None
    expired: bool
    result_type: str | None
    reason: str
    store: str = "the system store"

    def as_dict(self) -> dict:
        return {
            "ok": self.ok,
            "trusted": self.trusted,
            "name_matches": self.name_matches,
            "expired": self.expired,
            "result_type": self.result_type,
            "reason": self.reason,
            "store": self.store,
        }


@dataclass
class SmtpProbe:
    """What one STARTTLS probe saw. ``stage``/``error`` are ``None`` when every step succeeded.

    ``starttls_offered`` is ``None`` until the EHLO reply was read. ``chain`` is DER, leaf first, in presented
    order; ``chain_source`` says how it was obtained (module docstring). ``pkix`` is set only when a PKIX
    check was asked for and the handshake succeeded.
    """

    address: str
    port: int
    server_name: str | None
    ehlo_name: str
    stage: str | None = None
    error: str | None = None
    banner: tuple[str, ...] = ()
    ehlo_keywords: tuple[str, ...] = ()
    starttls_offered: bool | None = None
    tls_version: str | None = None
    cipher: str | None = None
    chain: tuple[bytes, ...] = ()
    chain_source: str | None = None
    pkix: PkixResult | None = None
    elapsed: float = 0.0
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Every step succeeded: a TLS session was established and the chain recorded."""
        return self.error is None

    @property
    def leaf(self) -> bytes | None:
        return self.chain[0] if self.chain else None

    def fail(self, stage: str, error: str) -> SmtpProbe:
        self.stage, self.error = stage, error
        return self

    def as_dict(self) -> dict:
        """JSON-friendly summary (the chain as a count; callers describe certificates as they need)."""
        return {
            "address": self.address,
            "port": self.port,
            "server_name": self.server_name,
            "ehlo_name": self.ehlo_name,
            "ok": self.ok,
            "stage": self.stage,
            "error": self.error,
            "banner": list(self.banner),
            "ehlo_keywords": list(self.ehlo_keywords),
            "starttls_offered": self.starttls_offered,
            "tls_version": self.tls_version,
            "cipher": self.cipher,
            "chain_length": len(self.chain),
            "chain_source": self.chain_source,
            "pkix": self.pkix.as_dict() if self.pkix is not None else None,
            "elapsed": round(self.elapsed, 3),
        }


# --------------------------------------------------------------------------------------------- the chain


def peer_chain(ssl_object: object) -> tuple[tuple[bytes, ...], str | None]:
    """``(chain, source)`` of a TLS session object (``ssl.SSLObject`` or ``ssl.SSLSocket``); never raises.

    See the module docstring for the three ways tried; ``source`` is ``"unverified-chain"``, ``"leaf-only"``
    or ``None`` (no certificate at all).
    """
    leaf: bytes | None = None
    with contextlib.suppress(Exception):
        got = ssl_object.getpeercert(binary_form=True)  # type: ignore[attr-defined]  # SSLObject or SSLSocket
        leaf = bytes(got) if got else None
    chain: list[bytes] = []
    for owner in (ssl_object, getattr(ssl_object, "_sslobj", None)):
        getter = getattr(owner, "get_unverified_chain", None)
        if getter is None:
            continue
        try:
            items = getter() or []
            chain = [_der_of(item) for item in list(items)[:MAX_CHAIN_CERTS]]
        except Exception:  # noqa: BLE001 - private API: any surprise means "use the next way"
            chain = []
            continue
        if chain:
            break
    if chain:
        if leaf is not None and chain[0] != leaf:
            chain = [leaf, *[c for c in chain if c != leaf]][:MAX_CHAIN_CERTS]
        return tuple(chain), "unverified-chain"
    if leaf is not None:
        return (leaf,), "leaf-only"
    return (), None


def _der_of(item: object) -> bytes:
    if isinstance(item, (bytes, bytearray, memoryview)):
        return bytes(item)
    import _ssl  # the constant lives only in the C module

    return bytes(item.public_bytes(_ssl.ENCODING_DER))  # type: ignore[attr-defined]  # _ssl.Certificate, untyped


# --------------------------------------------------------------------------------------------- PKIX (no I/O)


def check_pkix(
    chain: Sequence[bytes],
    names: Sequence[str],
    roots: Sequence[x509.Certificate],
    *,
    now: _dt.datetime | None = None,
    store_label: str = "the system store",
) -> PkixResult:
    """Judge ``chain`` (DER, leaf first) with the WebPKI rules against ``roots`` for any of ``names``. No I/O.

    Never raises for hostile input. See :class:`PkixResult` for the fields.
    """
    if now is None:
        now = _dt.datetime.now(_dt.UTC)
    elif now.tzinfo is None:
        now = now.replace(tzinfo=_dt.UTC)

    def result(ok, trusted, name_matches, expired, result_type, reason):
        return PkixResult(ok, trusted, name_matches, expired, result_type, reason, store_label)

    certs: list[x509.Certificate] = []
    for der in list(chain)[:MAX_CHAIN_CERTS]:
        try:
            certs.append(x509.load_der_x509_certificate(bytes(der)))
        except Exception:  # noqa: BLE001 - cryptography raises ValueError and friends
            if not certs:
                return result(False, False, None, False, "certificate-not-trusted",
                              "the server certificate does not parse")
    if not certs:
        return result(False, False, None, False, "certificate-not-trusted", "no certificate presented")
    if not roots:
        return result(False, False, None, False, "certificate-not-trusted", "the trust store is empty")
    leaf, intermediates = certs[0], certs[1:]
    try:
        store = _xv.Store(list(roots))
    except Exception as exc:  # noqa: BLE001
        return result(False, False, None, False, "certificate-not-trusted", f"unusable trust store: {exc}")

    def attempt(name: str, when: _dt.datetime) -> str | None:
        try:
            verifier = _xv.PolicyBuilder().store(store).time(when).build_server_verifier(_xv.DNSName(name))
            verifier.verify(leaf, intermediates)
        except Exception as exc:  # noqa: BLE001 - VerificationError, or ValueError for a bad name
            return _verification_reason(exc)
        return None

    start, end = leaf.not_valid_before_utc, leaf.not_valid_after_utc
    expired = not start <= now <= end
    reference = [n for n in (_plain_name(n) for n in names) if n]
    last_error = "no host name to check"
    for name in reference:
        problem = attempt(name, now)
        if problem is None:
            return result(True, True, True, False, None, f"trusted chain for {name}")
        last_error = problem

    # Why did it fail? Trust first (judged at the moment closest to now when the chain is valid), then
    # expiry, then the name.
    when = _valid_moment(certs, roots, now)
    own_names = _own_names(leaf)
    trust_problem: str | None = "the server certificate has no dNSName subjectAltName"
    for name in own_names[:8]:
        trust_problem = attempt(name, when)
        if trust_problem is None:
            break
    if trust_problem is not None:
        return result(False, False, None, expired, "certificate-not-trusted",
                      f"chain not trusted by {store_label}: {trust_problem}")
    name_matches = any(attempt(name, when) is None for name in reference)
    if expired:
        which = "expired" if now > end else "is not valid yet"
        return result(False, True, name_matches, True, "certificate-expired",
                      f"the server certificate {which} (valid {start:%Y-%m-%d} to {end:%Y-%m-%d})")
    if not name_matches:
        wanted = ", ".join(reference) or "(none)"
        return result(False, True, False, False, "certificate-host-mismatch",
                      f"the certificate names ({', '.join(own_names) or 'none'}) do not match {wanted}")
    return result(False, True, name_matches, False, "certificate-not-trusted", last_error)  # pragma: no cover


def _valid_moment(certs: Sequence[x509.Certificate], roots: Sequence[x509.Certificate],
                  now: _dt.datetime) -> _dt.datetime:
    """The moment closest to ``now`` at which the presented certificates and their issuing roots are all valid
    (the leaf's own validity period when there is no such moment)."""
    issuers = {c.issuer for c in certs}
    involved = list(certs) + [r for r in roots if r.subject in issuers]
    start = max(c.not_valid_before_utc for c in involved)
    end = min(c.not_valid_after_utc for c in involved)
    if start > end:
        start, end = certs[0].not_valid_before_utc, certs[0].not_valid_after_utc
    return min(max(now, start), end)


def _verification_reason(exc: Exception) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    cut = text.find(" (encountered processing")
    if cut > 0:
        text = text[:cut]
    return text.removeprefix("validation failed: ")


def _plain_name(name: str) -> str | None:
    from mxsec.errors import ParseError
    from mxsec.names import normalize_domain

    try:
        return normalize_domain(name)
    except (ParseError, TypeError):
        return None


def _own_names(cert: x509.Certificate) -> list[str]:
    """The certificate's dNSName SANs as concrete names (``*.example.com`` -> ``mxsec-probe.example.com``)."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names = san.get_values_for_type(x509.DNSName)
    except Exception:  # noqa: BLE001 - missing or malformed extension
        return []
    result = []
    for name in names:
        concrete = "mxsec-probe." + name[2:] if name.startswith("*.") else name
        if concrete not in result:
            result.append(concrete)
    return result


def load_trust_store(ca_file: str | None = None) -> tuple[list[x509.Certificate], str]:
    """``(roots, label)``: the PEM certificates of ``ca_file``, or of the system store when ``None``.

    The system store is the file and directory OpenSSL would use (``ssl.get_default_verify_paths()``,
    ``SSL_CERT_FILE``/``SSL_CERT_DIR`` honoured); a directory is read file by file, at most
    :data:`MAX_STORE_DIR_FILES` files. ``label`` is ``"CA file PATH"`` or ``"the system store"``. Raises
    ``OSError`` for an unreadable ``ca_file`` and ``ValueError`` when it holds no certificate.
    """
    if ca_file:
        roots = _pem_certificates(_read_limited(ca_file))
        if not roots:
            raise ValueError(f"{ca_file}: no PEM certificate found")
        return roots, f"CA file {ca_file}"
    paths = ssl.get_default_verify_paths()
    roots = []
    for candidate in (paths.cafile, paths.openssl_cafile):
        if candidate and os.path.isfile(candidate):
            with contextlib.suppress(OSError, ValueError):
                roots = _pem_certificates(_read_limited(candidate))
            if roots:
                return roots, _SYSTEM
    for directory in (paths.capath, paths.openssl_capath):
        if not directory or not os.path.isdir(directory):
            continue
        with contextlib.suppress(OSError):
            for entry in sorted(os.listdir(directory))[:MAX_STORE_DIR_FILES]:
                full = os.path.join(directory, entry)
                if os.path.isfile(full):
                    with contextlib.suppress(OSError, ValueError):
                        roots.extend(_pem_certificates(_read_limited(full)))
        if roots:
            break
    return roots, _SYSTEM


def _read_limited(path: str) -> bytes:
    with open(path, "rb") as handle:
        data = handle.read(MAX_STORE_FILE + 1)
    if len(data) > MAX_STORE_FILE:
        raise ValueError(f"{path}: larger than {MAX_STORE_FILE} octets")
    return data


def _pem_certificates(data: bytes) -> list[x509.Certificate]:
    if b"-----BEGIN CERTIFICATE-----" not in data:
        return []
    return list(x509.load_pem_x509_certificates(data))


# --------------------------------------------------------------------------------------------- the probe (I/O)


class _StepError(Exception):
    def __init__(self, stage: str, message: str) -> None:
        super().__init__(message)
        self.stage = stage
        self.message = message


def client_context(min_version: ssl.TLSVersion = ssl.TLSVersion.TLSv1_2) -> ssl.SSLContext:
    """The probe's TLS context: no certificate verification, no host name check, at least ``min_version``."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.minimum_version = min_version
    return ctx


async def _read_reply(reader: asyncio.StreamReader, stage: str, timeout: float) -> Reply:
    parser = ReplyParser()
    try:
        async with asyncio.timeout(timeout):
            for _ in range(MAX_LINES + 1):
                try:
                    line = await reader.readuntil(b"\n")
                except asyncio.LimitOverrunError:
                    raise _StepError(stage, f"reply line longer than {MAX_LINE} octets") from None
                except asyncio.IncompleteReadError as exc:
                    if exc.partial:
                        raise _StepError(stage, "connection closed in the middle of a reply line") from None
                    raise _StepError(stage, "connection closed by the server") from None
                reply = parser.feed(line)
                if reply is not None:
                    return reply
    except TimeoutError:
        raise _StepError(stage, f"no complete reply within {timeout:g}s") from None
    except ReplyError as exc:
        raise _StepError(stage, str(exc)) from None
    except (ConnectionError, OSError) as exc:
        raise _StepError(stage, _os_reason(exc)) from None
    raise _StepError(stage, f"reply longer than {MAX_LINES} lines")  # pragma: no cover - feed() raises first


async def _send(writer: asyncio.StreamWriter, command: str, stage: str, timeout: float) -> None:
    try:
        writer.write(command.encode("ascii") + b"\r\n")
        async with asyncio.timeout(timeout):
            await writer.drain()
    except TimeoutError:
        raise _StepError(stage, f"could not send {command.split()[0]} within {timeout:g}s") from None
    except (ConnectionError, OSError) as exc:
        raise _StepError(stage, _os_reason(exc)) from None


def _os_reason(exc: BaseException) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, ConnectionResetError):
        return "connection reset by the server"
    if isinstance(exc, ssl.SSLError):
        reason = getattr(exc, "reason", None)
        return str(reason).lower().replace("_", " ") if reason else " ".join(str(exc).split())
    if isinstance(exc, OSError) and exc.strerror:
        return " ".join(exc.strerror.split()).lower()
    return " ".join(str(exc).split()) or type(exc).__name__


def _address_text(address: str, port: int) -> str:
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


async def probe_starttls(
    address: str,
    port: int = 25,
    *,
    server_name: str | None = None,
    ehlo_name: str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    min_version: ssl.TLSVersion = ssl.TLSVersion.TLSv1_2,
    pkix_names: Sequence[str] | None = None,
    ca_file: str | None = None,
    roots: Sequence[x509.Certificate] | None = None,
    store_label: str | None = None,
    now: _dt.datetime | None = None,
) -> SmtpProbe:
    """Probe ``address:port``: banner, EHLO, STARTTLS, handshake (SNI ``server_name``, no verification), QUIT.

    Never raises for network or server behaviour (only for programming errors such as a non-positive
    ``timeout``). ``pkix_names`` switches the optional PKIX check on: the chain is judged for those names
    against ``roots`` (already loaded; ``store_label`` names them in messages), else ``ca_file`` (PEM), else the
    system store; a store that cannot be read gives a ``pkix`` result saying so, not an exception.
    """
    if not timeout > 0:
        raise ValueError("timeout must be positive")
    if ehlo_name is not None and not valid_ehlo_name(ehlo_name):
        raise ValueError(f"invalid EHLO name {ehlo_name!r}")
    started = time.monotonic()
    probe = SmtpProbe(str(address), int(port), server_name, ehlo_name or default_ehlo_name())
    try:
        ipaddress.ip_address(str(address))
    except ValueError:
        probe.elapsed = time.monotonic() - started
        return probe.fail("connect", f"{address!r} is not an IP address (resolve names first)")
    writer: asyncio.StreamWriter | None = None
    try:
        try:
            async with asyncio.timeout(timeout):
                reader, writer = await asyncio.open_connection(probe.address, probe.port, limit=MAX_LINE)
        except TimeoutError:
            raise _StepError("connect", f"no connection to {_address_text(probe.address, probe.port)} "
                                        f"within {timeout:g}s") from None
        except (ConnectionError, OSError) as exc:
            raise _StepError("connect", f"{_address_text(probe.address, probe.port)}: {_os_reason(exc)}") from None

        banner = await _read_reply(reader, "banner", timeout)
        probe.banner = banner.lines
        if banner.code != 220:
            raise _StepError("banner", f"server greeting is not 220: {_shorten(str(banner), 200)}")

        await _send(writer, f"EHLO {probe.ehlo_name}", "ehlo", timeout)
        ehlo = await _read_reply(reader, "ehlo", timeout)
        if ehlo.code != 250:
            raise _StepError("ehlo", f"EHLO refused: {_shorten(str(ehlo), 200)}")
        probe.ehlo_keywords = ehlo_keywords(ehlo)
        probe.starttls_offered = "STARTTLS" in probe.ehlo_keywords
        if not probe.starttls_offered:
            await _quit(reader, writer, timeout)
            raise _StepError("starttls", "STARTTLS not offered in the EHLO reply")

        await _send(writer, "STARTTLS", "starttls", timeout)
        answer = await _read_reply(reader, "starttls", timeout)
        if answer.code != 220:
            await _quit(reader, writer, timeout)
            raise _StepError("starttls", f"STARTTLS refused: {_shorten(str(answer), 200)}")
        if len(getattr(reader, "_buffer", b"")):  # private, but the only way to see pipelined injection
            raise _StepError("starttls", "server sent data after its STARTTLS reply, before the TLS handshake")

        try:
            async with asyncio.timeout(timeout):
                await writer.start_tls(client_context(min_version), server_hostname=server_name or None,
                                       ssl_handshake_timeout=timeout)
        except TimeoutError:
            raise _StepError("handshake", f"no TLS handshake within {timeout:g}s") from None
        except (ssl.SSLError, ConnectionError, OSError) as exc:
            raise _StepError("handshake", f"TLS handshake failed: {_os_reason(exc)}") from None
        except ValueError as exc:  # e.g. a server_name that is not a valid host name for SNI
            raise _StepError("handshake", f"TLS handshake not started: {exc}") from None

        ssl_object = writer.get_extra_info("ssl_object")
        if ssl_object is None:  # pragma: no cover - start_tls always sets it
            raise _StepError("handshake", "no TLS session after the handshake")
        with contextlib.suppress(Exception):
            probe.tls_version = ssl_object.version()
            cipher = ssl_object.cipher()
            probe.cipher = cipher[0] if cipher else None
        probe.chain, probe.chain_source = peer_chain(ssl_object)
        if not probe.chain:
            raise _StepError("handshake", "the server presented no certificate")
        await _quit(reader, writer, min(timeout, 5.0))
    except _StepError as exc:
        probe.fail(exc.stage, exc.message)
    finally:
        if writer is not None:
            await _close(writer, min(timeout, 5.0))
        probe.elapsed = time.monotonic() - started

    if probe.ok and pkix_names is not None:
        probe.pkix = _pkix(probe.chain, pkix_names, roots, ca_file, store_label, now)
    return probe


def _pkix(chain, names, roots, ca_file, store_label, now) -> PkixResult:
    if store_label:
        label = store_label
    elif ca_file:
        label = f"CA file {ca_file}"
    else:
        label = "the given roots" if roots is not None else _SYSTEM
    if roots is None:
        try:
            loaded, label = load_trust_store(ca_file)
        except (OSError, ValueError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            return PkixResult(False, False, None, False, "certificate-not-trusted",
                              f"cannot read the trust store {label}: {reason}", label)
        roots = loaded
    return check_pkix(chain, names, roots, now=now, store_label=label)


async def _quit(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, timeout: float) -> None:
    """Say goodbye; any problem here is ignored (the interesting part is over)."""
    with contextlib.suppress(_StepError, Exception):
        await _send(writer, "QUIT", "quit", timeout)
        await _read_reply(reader, "quit", timeout)


async def _close(writer: asyncio.StreamWriter, timeout: float) -> None:
    """Close the connection; if the (TLS) shutdown does not finish within ``timeout``, abort it."""
    try:
        writer.close()
        async with asyncio.timeout(timeout):
            await writer.wait_closed()
    except Exception:  # noqa: BLE001 - timeout, reset, TLS shutdown errors: just drop the connection
        with contextlib.suppress(Exception):
            writer.transport.abort()
