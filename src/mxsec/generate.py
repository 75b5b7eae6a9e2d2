"""Generators behind ``mxsec generate``: records, policies and policy-host configuration. Sans-I/O.

Every generator validates its input, raises a :class:`~mxsec.errors.ParseError` subclass with a one-line
message for bad input, and re-parses its own output with mxsec's parsers before returning it, so what it
prints always parses (a failed re-parse is a bug and raises :class:`GenerateError` with code ``internal``).
Advice that does not make the output invalid (a short ``max_age`` for ``enforce``, an unusual TLSA
combination) comes back in ``warnings``; the CLI prints it on stderr, so stdout holds only the output.

See docs/generate.md for the commands, examples and the choices made here (line endings, certificate
selection in a chain, id format).
"""

from __future__ import annotations

import datetime as _dt
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from cryptography import x509

from mxsec.dane.tlsa import (
    DANE_EE,
    DANE_TA,
    FULL,
    PKIX_EE,
    PKIX_TA,
    SELECTOR_CERT,
    SELECTOR_SPKI,
    SHA2_256,
    TlsaError,
    TlsaRecord,
    parse_tlsa,
    tlsa_for_certificate,
    tlsa_owner,
)
from mxsec.errors import ParseError
from mxsec.names import DomainError, is_ip_literal, normalize_domain
from mxsec.sts.policy import MAX_AGE_LIMIT, MODES, format_policy, parse_policy
from mxsec.sts.record import format_record as format_sts_record
from mxsec.sts.record import is_valid_id
from mxsec.sts.record import parse_record as parse_sts_record
from mxsec.tlsrpt.record import TlsrptRecordError, check_uri, tlsrpt_owner
from mxsec.tlsrpt.record import format_record as format_tlsrpt_record
from mxsec.tlsrpt.record import parse_record as parse_tlsrpt_record

__all__ = [
    "ENFORCE_MIN_MAX_AGE",
    "MAX_CERT_FILE_BYTES",
    "RECOMMENDED_MAX_AGE",
    "GenerateError",
    "Generated",
    "GeneratedTlsa",
    "apache_config",
    "default_policy_id",
    "load_certificates",
    "nginx_config",
    "sts_policy",
    "sts_txt",
    "tlsa",
    "tlsrpt",
    "txt_rdata",
]

#: Below this (one day) an ``enforce`` policy gets a warning (some domain checkers call it an error; docs/generate.md).
ENFORCE_MIN_MAX_AGE = 86400
#: What the warning suggests (one week).
RECOMMENDED_MAX_AGE = 604800
#: One DNS TXT character-string holds at most 255 octets (RFC 1035 §3.3).
TXT_STRING_MAX = 255
#: Certificate files larger than this, or with more PEM blocks, are refused (a chain is a few kilobytes).
MAX_CERT_FILE_BYTES = 1024 * 1024
MAX_PEM_BLOCKS = 200

_DIGITS_RE = re.compile(r"[0-9]+")
_PEM_BLOCK_RE = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----(.*?)-----END \1-----", re.DOTALL)
_PEM_CERT_LABELS = (b"CERTIFICATE", b"X509 CERTIFICATE", b"TRUSTED CERTIFICATE")
_UNSAFE_PATH_CHARS = frozenset(" \t\"';{}$#\\`")


class GenerateError(ParseError):
    """Input a generator cannot turn into a valid record, policy or configuration.

    ``code`` is a stable machine name for the problem (e.g. ``bad-mode``, ``bad-max-age``, ``bad-id``,
    ``no-certificate``, ``bad-index``, ``bad-path``; ``internal`` means the output did not parse back).
    """

    def __init__(self, message: str, *, code: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Generated:
    """A generator's output text and advice for the user (never part of the text)."""

    text: str
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class GeneratedTlsa:
    """``mxsec generate tlsa``: the zone-file line, the record, and which certificate of the file it is for."""

    line: str
    owner: str
    record: TlsaRecord
    index: int
    count: int
    subject: str
    warnings: tuple[str, ...] = ()

    @property
    def text(self) -> str:
        return self.line


# --- MTA-STS policy ------------------------------------------------------------------------------------------


def sts_policy(mode: str, mx: Iterable[str], max_age: int | str, *, newline: str = "\r\n") -> Generated:
    """The policy file body (RFC 8461 §3.2): ``version``, ``mode``, one ``mx`` line per pattern, ``max_age``.

    *mx* patterns are host names, or ``*.`` + a host name (wildcard only as the whole left-most label);
    U-labels are converted to A-labels and duplicates dropped, each with a warning. *max_age* is 0 to
    31557600 seconds (an ``int`` or a string of digits). Lines end in CRLF unless *newline* is ``"\\n"``.
    """
    if not isinstance(mode, str) or mode not in MODES:
        hint = " (modes are lower-case)" if isinstance(mode, str) and mode.lower() in MODES else ""
        raise GenerateError(f"mode must be enforce, testing or none, not {_show(mode)}{hint}", code="bad-mode")
    seconds = _max_age(max_age)
    if newline not in ("\r\n", "\n"):
        raise GenerateError("newline must be CRLF or LF", code="bad-newline")
    if isinstance(mx, str):
        mx = (mx,)
    warnings: list[str] = []
    patterns: list[str] = []
    for value in mx:
        pattern = _mx_pattern(value, warnings)
        if pattern in patterns:
            warnings.append(f"mx pattern {pattern!r} given twice; written once")
            continue
        patterns.append(pattern)
    if mode != "none" and not patterns:
        raise GenerateError(f"mode {mode} needs at least one mx pattern (--mx)", code="no-mx")
    if mode == "enforce" and seconds < ENFORCE_MIN_MAX_AGE:
        warnings.append(
            f"max_age {seconds} is under one day: with mode enforce, senders forget the policy quickly and a "
            f"downgrade attack can strip it; use at least {RECOMMENDED_MAX_AGE} (one week)"
        )
    text = format_policy(mode, patterns, seconds)
    if newline == "\n":
        text = text.replace("\r\n", "\n")
    try:
        parsed = parse_policy(text)
    except ParseError as exc:  # pragma: no cover - a bug
        raise GenerateError(f"internal error: the generated policy does not parse: {exc}", code="internal") from None
    if (parsed.mode, parsed.mx, parsed.max_age, parsed.warnings) != (mode, tuple(patterns), seconds, ()):
        raise GenerateError("internal error: the generated policy parses differently", code="internal")
    return Generated(text, tuple(warnings))


def _max_age(value: int | str) -> int:
    if isinstance(value, bool):
        value = str(value)
    if isinstance(value, int):
        seconds = value
    elif isinstance(value, str) and _DIGITS_RE.fullmatch(value.strip()) and len(value.strip()) <= 10:
        seconds = int(value.strip())
    else:
        raise GenerateError(
            f"max_age must be a whole number of seconds from 0 to {MAX_AGE_LIMIT}, not {_show(value)}",
            code="bad-max-age",
        )
    if not 0 <= seconds <= MAX_AGE_LIMIT:
        raise GenerateError(
            f"max_age must be from 0 to {MAX_AGE_LIMIT} seconds (one year), not {seconds}", code="bad-max-age"
        )
    return seconds


def _mx_pattern(value: str, warnings: list[str]) -> str:
    """One ``mx`` pattern, validated and normalised (lower-case A-labels, no trailing dot)."""
    if not isinstance(value, str) or not value.strip():
        raise GenerateError("empty mx pattern", code="bad-mx")
    text = value.strip()
    if any(ch in text for ch in " \t,;"):
        raise GenerateError(f"mx {_show(value)}: give each pattern with its own --mx", code="bad-mx")
    wildcard = text.startswith("*.")
    base = text[2:] if wildcard else text
    if "*" in base:
        raise GenerateError(
            f"mx {_show(value)}: '*' is allowed only as the whole left-most label ('*.example.net')", code="bad-mx"
        )
    if is_ip_literal(base) or is_ip_literal(base.rstrip(".")):
        raise GenerateError(f"mx {_show(value)} is an IP address; MX patterns are host names", code="bad-mx")
    base = base.removesuffix(".")
    try:
        name = normalize_domain(base)
    except DomainError as exc:
        raise GenerateError(f"mx {_show(value)}: {exc}", code="bad-mx") from None
    if "." not in name:
        raise GenerateError(f"mx {_show(value)}: not a fully qualified host name", code="bad-mx")
    if not base.isascii():
        warnings.append(f"mx {value!r} written as the A-label {name!r} (policies hold A-labels only)")
    return ("*." if wildcard else "") + name


# --- MTA-STS TXT record --------------------------------------------------------------------------------------


def default_policy_id(now: float | _dt.datetime) -> str:
    """A policy id from a UTC time: ``20261124T101500Z`` (ISO 8601 basic format; 16 letters and digits)."""
    if isinstance(now, _dt.datetime):
        moment = now.astimezone(_dt.UTC) if now.tzinfo else now.replace(tzinfo=_dt.UTC)
    else:
        moment = _dt.datetime.fromtimestamp(now, _dt.UTC)
    return moment.strftime("%Y%m%dT%H%M%SZ")


def sts_txt(id: str | None = None, *, now: float | _dt.datetime | None = None, name: str | None = None) -> str:
    """``v=STSv1; id=ID`` (RFC 8461 §3.1), or with *name* the zone-file line at ``_mta-sts.NAME.``.

    Without *id*, the id is :func:`default_policy_id` of *now* (which is then required: this module reads no
    clock). An *id* must be 1 to 32 ASCII letters and digits (STS-A-5, EC-14).
    """
    if id is None:
        if now is None:
            raise GenerateError("give an id or the current time", code="bad-id")
        id = default_policy_id(now)
    if not is_valid_id(id):
        raise GenerateError(_bad_id_message(id), code="bad-id")
    record = format_sts_record(id)
    if parse_sts_record(record).id != id:  # pragma: no cover - a bug
        raise GenerateError("internal error: the generated record parses differently", code="internal")
    if name is None:
        return record
    return zone_txt_line(f"_mta-sts.{_domain(name, '--name')}", record)


def _bad_id_message(value: object) -> str:
    if not isinstance(value, str) or not value:
        return "id must be 1 to 32 letters and digits (A-Z, a-z, 0-9)"
    if len(value) > 32:
        return f"id {_show(value)} is {len(value)} characters long; at most 32 letters and digits"
    bad = sorted({ch for ch in value if not (ch.isascii() and ch.isalnum())})
    return f"id {_show(value)} may hold only letters and digits (A-Z, a-z, 0-9), not {' '.join(map(repr, bad))}"


# --- TLSA -----------------------------------------------------------------------------------------------------


def load_certificates(data: bytes, *, source: str = "certificate file") -> list[x509.Certificate]:
    """Every certificate in *data*, in file order: PEM blocks (other blocks such as keys are skipped), or one
    DER certificate. Raises :class:`GenerateError` (``no-certificate``, ``bad-certificate``)."""
    if isinstance(data, str):
        data = data.encode("utf-8", "replace")
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise GenerateError(f"{source}: expected bytes, not {type(data).__name__}", code="no-certificate")
    data = bytes(data)
    if not data.strip():
        raise GenerateError(f"{source} is empty", code="no-certificate")
    if len(data) > MAX_CERT_FILE_BYTES:
        raise GenerateError(f"{source} is larger than {MAX_CERT_FILE_BYTES} bytes; not a certificate file",
                            code="too-large")
    if data.count(b"-----BEGIN") > MAX_PEM_BLOCKS:
        raise GenerateError(f"{source} holds more than {MAX_PEM_BLOCKS} PEM blocks", code="too-large")
    if b"-----BEGIN" not in data:
        try:
            return [x509.load_der_x509_certificate(data)]
        except Exception:  # noqa: BLE001 - hostile input: several error types
            raise GenerateError(f"{source} holds no PEM certificate and is not a DER certificate",
                                code="no-certificate") from None
    certs: list[x509.Certificate] = []
    others: list[str] = []
    for number, match in enumerate(_PEM_BLOCK_RE.finditer(data), start=1):
        label = match.group(1)
        if label not in _PEM_CERT_LABELS:
            others.append(label.decode("ascii"))
            continue
        block = match.group(0)
        if label != b"CERTIFICATE":
            block = block.replace(b"-----BEGIN " + label, b"-----BEGIN CERTIFICATE").replace(
                b"-----END " + label, b"-----END CERTIFICATE"
            )
        try:
            certs.append(x509.load_pem_x509_certificate(block))
        except Exception:  # noqa: BLE001
            raise GenerateError(f"{source}: PEM block {number} ({label.decode('ascii')}) is not a valid certificate",
                                code="bad-certificate") from None
    if not certs:
        found = f" (found: {', '.join(dict.fromkeys(others))})" if others else ""
        raise GenerateError(f"{source} holds no PEM certificate{found}", code="no-certificate")
    return certs


def tlsa(
    cert_data: bytes,
    host: str,
    *,
    usage: int = DANE_EE,
    selector: int = SELECTOR_SPKI,
    mtype: int = SHA2_256,
    port: int = 25,
    index: int | None = None,
    source: str = "certificate file",
) -> GeneratedTlsa:
    """The TLSA record ``_PORT._tcp.HOST. IN TLSA U S M HEX`` for a certificate in *cert_data*.

    Which certificate (when the file holds a chain, leaf first as servers send it): *index* (0-based) when
    given; otherwise the first one for usage 3 (DANE-EE) and 1, and the **last** one for usage 2 (DANE-TA) and
    0, i.e. the issuing CA at the end of a ``fullchain.pem``. Usage 0-3, selector 0-1, matching type 0-2.
    """
    for label, value, top in (("usage", usage, 3), ("selector", selector, 1), ("matching type", mtype, 2)):
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= top:
            raise GenerateError(f"{label} must be a number from 0 to {top}, not {_show(value)}", code="bad-parameter")
    try:
        owner = tlsa_owner(host, port)
    except DomainError as exc:
        raise GenerateError(f"--host {_show(host)}: {exc}", code="bad-host") from None
    except TlsaError as exc:
        raise GenerateError(str(exc), code="bad-port") from None
    certs = load_certificates(cert_data, source=source)
    if index is None:
        chosen = 0 if usage in (DANE_EE, PKIX_EE) else len(certs) - 1
    elif isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < len(certs):
        raise GenerateError(
            f"--index {_show(index)}: {source} holds {len(certs)} certificate{'s' if len(certs) != 1 else ''} "
            f"(index 0 to {len(certs) - 1})",
            code="bad-index",
        )
    else:
        chosen = index
    cert = certs[chosen]
    record = tlsa_for_certificate(cert, usage=usage, selector=selector, mtype=mtype)
    if parse_tlsa(record.to_text()) != record:  # pragma: no cover - a bug
        raise GenerateError("internal error: the generated TLSA record parses differently", code="internal")

    warnings: list[str] = []
    subject = _subject(cert)
    is_ca = _is_ca(cert)
    where = f"certificate {chosen} of {len(certs)} ({subject})"
    if usage in (DANE_TA, PKIX_TA) and not is_ca:
        warnings.append(
            f"{where} is not a CA certificate, but usage {usage} names a trust anchor: give the chain "
            f"(leaf first, issuer last), the issuer's certificate, or --index"
        )
    if usage in (DANE_EE, PKIX_EE) and is_ca:
        warnings.append(f"{where} is a CA certificate, but usage {usage} is for the server's own certificate")
    if usage in (PKIX_TA, PKIX_EE) and port == 25:
        warnings.append(
            f"usage {usage} (PKIX-{'TA' if usage == PKIX_TA else 'EE'}) is not used for SMTP (RFC 7672 §3.1.3); "
            "SMTP clients ignore it: use 3 (DANE-EE) or 2 (DANE-TA)"
        )
    if usage == DANE_EE and selector == SELECTOR_CERT:
        warnings.append(
            "a 3 0 x record changes at every certificate renewal, even when the key is kept; 3 1 1 does not"
        )
    if mtype == FULL:
        warnings.append("matching type 0 publishes the whole certificate or key; 1 (SHA2-256) is the usual choice")
    line = f"{owner} IN TLSA {record.to_text()}"
    return GeneratedTlsa(line, owner, record, chosen, len(certs), subject, tuple(warnings))


def _subject(cert: x509.Certificate) -> str:
    try:
        names = cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
        if names:
            return f"CN={str(names[0].value)}"  # str() as format() would: the value may be bytes
        return cert.subject.rfc4514_string() or "empty subject"
    except Exception:  # noqa: BLE001 - odd encodings
        return "unreadable subject"


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except Exception:  # noqa: BLE001 - no extension, or a malformed one
        return False


# --- TLSRPT record --------------------------------------------------------------------------------------------


def tlsrpt(rua: Sequence[str], *, name: str | None = None) -> Generated:
    """``v=TLSRPTv1; rua=URI[,URI...]`` (RFC 8460 §3), or with *name* the zone-file line at ``_smtp._tls.NAME.``.

    Each item of *rua* is one URI or several separated by commas. Only ``mailto:`` (one address) and
    ``https:`` (with a host) are accepted; a bare ``user@example.com`` is refused with a hint to write
    ``mailto:user@example.com``. Schemes are written lower-case; a U-label domain is written as its A-label;
    duplicates are dropped with a warning.
    """
    if isinstance(rua, str):
        rua = (rua,)
    warnings: list[str] = []
    uris: list[str] = []
    for item in rua:
        if not isinstance(item, str):
            raise TlsrptRecordError(f"rua URI must be text, not {type(item).__name__}", code="rua-invalid-uri")
        for piece in item.split(","):
            uri = _prepare_uri(piece.strip(" \t"), warnings)
            if uri in uris:
                warnings.append(f"rua URI {uri!r} given twice; written once")
                continue
            uris.append(uri)
    if not uris:
        raise TlsrptRecordError("at least one rua URI is needed (--rua mailto:... or https://...)", code="rua-missing")
    record = format_tlsrpt_record(uris)
    parsed = parse_tlsrpt_record(record)
    if parsed.rua != tuple(uris) or parsed.usable_rua != tuple(uris) or parsed.warnings:  # pragma: no cover
        raise GenerateError("internal error: the generated TLSRPT record parses differently", code="internal")
    if name is not None:
        try:
            owner = tlsrpt_owner(name)
        except DomainError as exc:
            raise GenerateError(f"--name {_show(name)}: {exc}", code="bad-name") from None
        record = zone_txt_line(owner, record)
    return Generated(record, tuple(warnings))


def _prepare_uri(uri: str, warnings: list[str]) -> str:
    if not uri:
        raise TlsrptRecordError("empty rua URI (two commas in a row, or a trailing comma?)", code="rua-empty-uri")
    scheme, colon, rest = uri.partition(":")
    if colon and scheme.lower() in ("mailto", "https", "http") and scheme != scheme.lower():
        uri = scheme.lower() + ":" + rest
        scheme = scheme.lower()
    if scheme == "mailto" and not rest.isascii():
        address, at, domain = rest.rpartition("@")
        if at and address.isascii() and "?" not in domain:
            try:
                alabel = normalize_domain(domain)
            except DomainError as exc:
                raise TlsrptRecordError(f"{_show(uri)}: domain: {exc}", code="rua-bad-mailto") from None
            warnings.append(f"{uri!r} written with the A-label domain {alabel!r}")
            uri = f"mailto:{address}@{alabel}"
    code, message, _fatal = check_uri(uri)
    if code == "rua-missing-mailto":
        raise TlsrptRecordError(f"{_show(uri)} is not a URI: did you mean 'mailto:{uri}'?", code=code)
    if code is not None:
        raise TlsrptRecordError(message, code=code)
    return uri


# --- zone-file lines ---------------------------------------------------------------------------------------


def txt_rdata(text: str) -> str:
    """TXT RDATA in zone-file form: quoted character-strings of at most 255 octets, separated by spaces.

    Resolvers hand back the strings, and RFC 8461 §3.1 / RFC 8460 §3 join them without spaces, so a long
    record survives the split. ``"`` and ``\\`` are escaped.
    """
    data = text.encode("utf-8")
    chunks = [data[i : i + TXT_STRING_MAX] for i in range(0, len(data), TXT_STRING_MAX)] or [b""]
    quoted = []
    for chunk in chunks:
        body = chunk.decode("utf-8", "surrogateescape").replace("\\", "\\\\").replace('"', '\\"')
        quoted.append(f'"{body}"')
    return " ".join(quoted)


def zone_txt_line(owner: str, record: str) -> str:
    """``OWNER. IN TXT "record"`` (the owner gets its root dot)."""
    return f"{owner.rstrip('.')}. IN TXT {txt_rdata(record)}"


def _domain(value: str, option: str) -> str:
    try:
        return normalize_domain(value)
    except DomainError as exc:
        raise GenerateError(f"{option} {_show(value)}: {exc}", code="bad-name") from None


# --- policy host: nginx and Apache -----------------------------------------------------------------------------


def _config_path(value: str, option: str) -> str:
    if not isinstance(value, str) or not value:
        raise GenerateError(f"{option}: empty path", code="bad-path")
    if not value.startswith("/"):
        raise GenerateError(f"{option} {_show(value)}: give an absolute path (the server's)", code="bad-path")
    bad = sorted({ch for ch in value if ch in _UNSAFE_PATH_CHARS or ord(ch) < 0x20 or ord(ch) == 0x7F})
    if bad:
        raise GenerateError(
            f"{option} {_show(value)}: paths with {' '.join(map(repr, bad))} cannot be written safely into the "
            "configuration; use a path without them",
            code="bad-path",
        )
    if value.endswith("/"):
        raise GenerateError(f"{option} {_show(value)}: the path of the policy file, not a directory",
                            code="bad-path")
    return value


def _host_parts(domain: str, policy_file: str, cert_file: str | None, key_file: str | None) -> tuple[str, ...]:
    name = _domain(domain, "--domain")
    host = f"mta-sts.{name}"
    policy = _config_path(policy_file, "--policy-file")
    cert = _config_path(cert_file, "--cert") if cert_file is not None else f"/etc/letsencrypt/live/{host}/fullchain.pem"
    key = _config_path(key_file, "--key") if key_file is not None else f"/etc/letsencrypt/live/{host}/privkey.pem"
    return name, host, policy, cert, key


def nginx_config(domain: str, policy_file: str, *, cert_file: str | None = None, key_file: str | None = None) -> str:
    """An nginx ``server`` block for ``mta-sts.DOMAIN`` that serves only ``/.well-known/mta-sts.txt``.

    The policy comes from *policy_file* (a path on the web server) as ``text/plain`` with status 200; every
    other path answers 404; nothing redirects. Certificate paths default to Let's Encrypt's layout.
    """
    name, host, policy, cert, key = _host_parts(domain, policy_file, cert_file, key_file)
    return f"""\
# MTA-STS policy host for {name} (RFC 8461 §3.3), generated by mxsec.
# Senders fetch https://{host}/.well-known/mta-sts.txt over HTTPS only; they need status 200,
# Content-Type text/plain, a certificate valid for {host}, and no redirect.
# Put this in the http {{}} context (e.g. /etc/nginx/conf.d/{host}.conf), give {host}
# an A/AAAA record pointing here, then: nginx -t && nginx -s reload
server {{
    listen 443 ssl;
    listen [::]:443 ssl;
    server_name {host};

    ssl_certificate     {cert};
    ssl_certificate_key {key};
    ssl_protocols       TLSv1.2 TLSv1.3;

    # The policy, and nothing else. An exact-match location on a file: no index, no redirect.
    location = /.well-known/mta-sts.txt {{
        alias {policy};
        types {{ }}
        default_type text/plain;
    }}

    location / {{
        return 404;
    }}
}}
"""


def apache_config(domain: str, policy_file: str, *, cert_file: str | None = None, key_file: str | None = None) -> str:
    """An Apache ``<VirtualHost *:443>`` for ``mta-sts.DOMAIN`` that serves only ``/.well-known/mta-sts.txt``.

    The policy comes from *policy_file* as ``text/plain`` (``ForceType``); every other path answers 403; no
    rewrite or redirect applies (``.htaccess`` is off for the policy's directory). Needs mod_ssl, mod_alias,
    mod_mime and mod_authz_core.
    """
    name, host, policy, cert, key = _host_parts(domain, policy_file, cert_file, key_file)
    directory = policy.rsplit("/", 1)[0] or "/"
    return f"""\
# MTA-STS policy host for {name} (RFC 8461 §3.3), generated by mxsec.
# Senders fetch https://{host}/.well-known/mta-sts.txt over HTTPS only; they need status 200,
# Content-Type text/plain, a certificate valid for {host}, and no redirect.
# Needs mod_ssl, mod_alias, mod_mime (Debian: a2enmod ssl). Save as
# /etc/apache2/sites-available/{host}.conf, give {host} an A/AAAA record pointing here,
# then: a2ensite {host} && apachectl configtest && systemctl reload apache2
<VirtualHost *:443>
    ServerName {host}

    SSLEngine on
    SSLCertificateFile    "{cert}"
    SSLCertificateKeyFile "{key}"
    SSLProtocol           -all +TLSv1.2 +TLSv1.3

    # The policy, and nothing else: every other path is refused (403).
    Alias "/.well-known/mta-sts.txt" "{policy}"
    <Location "/">
        Require all denied
    </Location>
    <Location "/.well-known/mta-sts.txt">
        Require all granted
        ForceType text/plain
    </Location>
    <Directory "{directory}">
        AllowOverride None
        Options None
    </Directory>
</VirtualHost>
"""


def _show(value: object) -> str:
    shown = repr(value)
    return shown if len(shown) <= 80 else shown[:77] + "..."
