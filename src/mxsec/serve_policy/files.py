"""The files ``mxsec serve-policy`` serves from: policy files and certificates, checked before use. No sockets.

* :func:`policy_warnings` (weak settings) and :func:`certificate_problems` (names, validity, key usage of the
  leaf certificate) are pure;
* :func:`load_policy` and :func:`load_certificate` read files and raise :class:`~mxsec.errors.ConfigError`
  with a one-line message.
"""

from __future__ import annotations

import datetime as _dt
import os
import ssl
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from mxsec.errors import ConfigError
from mxsec.names import DomainError, normalize_domain
from mxsec.sts.policy import MAX_POLICY_BYTES, PolicyError, StsPolicy, parse_policy

__all__ = [
    "LoadedCertificate",
    "LoadedPolicy",
    "certificate_covers",
    "certificate_problems",
    "load_certificate",
    "load_policy",
    "policy_host",
    "policy_warnings",
    "server_tls_context",
]

#: Below one day a policy (enforce or testing) gets a warning; one week is what the warning suggests.
SHORT_MAX_AGE = 86400
RECOMMENDED_MAX_AGE = 604800
#: A certificate that expires within this many days gets a warning.
EXPIRY_WARNING_DAYS = 14
MAX_CERT_FILE_BYTES = 1 << 20


# --------------------------------------------------------------------------- the policy file
@dataclass(frozen=True)
class LoadedPolicy:
    """A policy file that parsed: the bytes served as they are, and what the parser made of them."""

    path: str
    body: bytes
    policy: StsPolicy
    warnings: tuple[str, ...] = ()


def policy_warnings(policy: StsPolicy) -> list[str]:
    """Advice about a valid policy: weak modes, a short ``max_age``, and what the parser had to skip."""
    warnings = [f"policy: {note}" for note in policy.warnings]
    if policy.mode == "none":
        warnings.append(
            "mode none: senders drop this domain's MTA-STS policy and enforce nothing (this is how MTA-STS is "
            "withdrawn; keep serving it for at least the old max_age)"
        )
    elif policy.mode == "testing":
        warnings.append(
            "mode testing: senders report failures (TLSRPT) but still deliver without a verified TLS connection; "
            "switch to enforce once the reports are clean"
        )
    if policy.mode != "none" and policy.max_age < SHORT_MAX_AGE:
        warnings.append(
            f"max_age {policy.max_age} is under one day: senders forget the policy quickly and a downgrade "
            f"attack can strip it; use at least {RECOMMENDED_MAX_AGE} (one week)"
        )
    return warnings


def load_policy(path: str | os.PathLike[str]) -> LoadedPolicy:
    """Read and validate the policy file; raise :class:`ConfigError` (one line) when it is unusable."""
    shown = os.fspath(path)
    try:
        with open(path, "rb") as handle:
            body = handle.read(MAX_POLICY_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"cannot read policy {shown}: {exc.strerror or exc}") from None
    try:
        policy = parse_policy(body)
    except PolicyError as exc:
        raise ConfigError(f"policy {shown} is not a valid MTA-STS policy: {_one_line(exc)}") from None
    return LoadedPolicy(shown, body, policy, tuple(policy_warnings(policy)))


# --------------------------------------------------------------------------- the certificate
def policy_host(domain: str) -> str:
    """``mta-sts.<domain>`` as an A-label; raise :class:`ConfigError` for a name that is not a policy domain."""
    try:
        name = normalize_domain(domain)
    except DomainError as exc:
        raise ConfigError(f"--domain {domain!r}: {exc}") from None
    if name.startswith("mta-sts."):
        raise ConfigError(
            f"--domain {domain!r}: give the policy domain ({name[len('mta-sts.'):]}), not the policy host ({name})"
        )
    return f"mta-sts.{name}"


def certificate_covers(dns_names: Iterable[str], host: str) -> bool:
    """True when one of the certificate's DNS names matches ``host`` the way TLS clients check it.

    An exact name (case-insensitive), or ``*.`` plus the parent of ``host``: the wildcard is the whole
    left-most label and stands for exactly one label. Partial wildcards (``mta*.example.com``) do not match,
    as in OpenSSL's host check with partial wildcards off (Python's default).
    """
    host = host.lower().rstrip(".")
    labels = host.split(".")
    parent = ".".join(labels[1:]) if len(labels) > 2 else None
    for name in dns_names:
        name = name.lower().rstrip(".")
        if name == host:
            return True
        if parent is not None and name.startswith("*.") and name[2:] == parent:
            return True
    return False


def _dns_names(cert: x509.Certificate) -> list[str]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return [str(name) for name in san.get_values_for_type(x509.DNSName)]


def _subject(cert: x509.Certificate) -> str:
    try:
        return cert.subject.rfc4514_string() or "(empty subject)"
    except ValueError:  # pragma: no cover - undecodable subject
        return "(undecodable subject)"


def certificate_problems(
    cert: x509.Certificate, domains: Sequence[str] = (), *, now: _dt.datetime | None = None
) -> tuple[list[str], list[str]]:
    """``(errors, warnings)`` for the leaf certificate of the policy host. Sans-I/O.

    Errors: not yet valid, expired, an extended key usage without TLS server authentication, and with
    ``domains`` any ``mta-sts.<domain>`` that no DNS name (subjectAltName) of the certificate covers.
    Warnings: expires within :data:`EXPIRY_WARNING_DAYS` days, self-signed, and without ``domains`` a
    certificate that names no ``mta-sts.`` host at all. The chain is not checked against any trust store.
    """
    now = now if now is not None else _dt.datetime.now(_dt.UTC)
    errors: list[str] = []
    warnings: list[str] = []
    not_before = cert.not_valid_before_utc
    not_after = cert.not_valid_after_utc
    if now < not_before:
        errors.append(f"certificate is not valid before {_when(not_before)}")
    if now > not_after:
        errors.append(f"certificate expired on {_when(not_after)}")
    elif not_after - now < _dt.timedelta(days=EXPIRY_WARNING_DAYS):
        days = (not_after - now).days
        warnings.append(f"certificate expires in {days} day{'s' if days != 1 else ''}, on {_when(not_after)}")
    try:
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        eku = None
    server_usages = (ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE)
    if eku is not None and not any(usage in eku for usage in server_usages):
        errors.append("certificate's extended key usage does not include TLS server authentication (serverAuth)")
    names = _dns_names(cert)
    if domains:
        for domain in domains:
            host = policy_host(domain)
            if certificate_covers(names, host):
                continue
            if names:
                listed = ", ".join(names[:8]) + (", ..." if len(names) > 8 else "")
                errors.append(f"certificate does not cover {host} (its DNS names: {listed})")
            else:
                errors.append(
                    f"certificate does not cover {host}: it has no DNS names (subjectAltName), and senders do "
                    "not use the subject CN"
                )
    elif not any(n.lower().startswith(("mta-sts.", "*.")) for n in names):
        shown = ", ".join(names[:8]) if names else "none"
        warnings.append(
            f"certificate names no mta-sts.* host (DNS names: {shown}); senders check it against "
            "mta-sts.<your domain> (give --domain to have this checked)"
        )
    if cert.issuer == cert.subject and not errors:
        warnings.append("certificate is self-signed: senders will not trust it")
    return errors, warnings


def _when(moment: _dt.datetime) -> str:
    return moment.astimezone(_dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def server_tls_context() -> ssl.SSLContext:
    """A server context: TLS 1.2 and 1.3 only, no compression, no session tickets needed."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE
    return ctx


@dataclass(frozen=True)
class LoadedCertificate:
    cert_path: str
    key_path: str
    context: ssl.SSLContext
    subject: str
    dns_names: tuple[str, ...]
    not_after: _dt.datetime
    serial: int
    warnings: tuple[str, ...] = ()
    not_before: _dt.datetime | None = None


def _no_password() -> str:
    raise ConfigError("the private key is encrypted; give an unencrypted key file (readable only by this service)")


def read_limited(path: str, what: str, limit: int = MAX_CERT_FILE_BYTES) -> bytes:
    """The bytes of ``path``, at most ``limit``; :class:`ConfigError` naming ``what`` when unreadable or bigger."""
    try:
        with open(path, "rb") as handle:
            data = handle.read(limit + 1)
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    if len(data) > limit:
        raise ConfigError(f"{what} {path} is larger than {limit} bytes")
    return data


def load_certificate(
    cert_path: str | os.PathLike[str],
    key_path: str | os.PathLike[str],
    domains: Sequence[str] = (),
    *,
    now: _dt.datetime | None = None,
) -> LoadedCertificate:
    """Load the certificate chain (leaf first) and its key into a TLS context and check the leaf.

    Raises :class:`ConfigError` (one line) for an unreadable file, no PEM certificate, a key that does not
    match or is encrypted, and every error of :func:`certificate_problems`.
    """
    cert_file, key_file = os.fspath(cert_path), os.fspath(key_path)
    data = read_limited(cert_file, "certificate")
    try:
        chain = x509.load_pem_x509_certificates(data)
    except ValueError:
        raise ConfigError(f"certificate {cert_file} holds no PEM certificate") from None
    leaf = chain[0]
    errors, warnings = certificate_problems(leaf, domains, now=now)
    if errors:
        raise ConfigError(f"certificate {cert_file}: {errors[0]}")
    read_limited(key_file, "key")  # a readable key file, for a clear message before OpenSSL's
    ctx = server_tls_context()
    try:
        ctx.load_cert_chain(cert_file, key_file, password=_no_password)
    except ConfigError as exc:
        raise ConfigError(f"key {key_file}: {exc}") from None
    except ssl.SSLError as exc:
        reason = str(getattr(exc, "reason", "") or "")
        if reason == "KEY_VALUES_MISMATCH":
            raise ConfigError(f"the key in {key_file} does not belong to the certificate in {cert_file}") from None
        detail = reason.lower().replace("_", " ") if reason else _one_line(exc)
        raise ConfigError(f"cannot load certificate {cert_file} with key {key_file}: {detail}") from None
    except OSError as exc:
        raise ConfigError(f"cannot load certificate {cert_file} with key {key_file}: {exc.strerror or exc}") from None
    if read_limited(cert_file, "certificate") != data:
        raise ConfigError(f"certificate {cert_file} changed while it was being loaded; try again")
    try:
        mode = os.stat(key_file).st_mode
    except OSError:  # pragma: no cover - read a moment ago
        mode = 0
    if mode & 0o004:
        warnings.append(f"key {key_file} is readable by every user of this machine (chmod 600 or 640)")
    return LoadedCertificate(
        cert_path=cert_file,
        key_path=key_file,
        context=ctx,
        subject=_subject(leaf),
        dns_names=tuple(_dns_names(leaf)),
        not_after=leaf.not_valid_after_utc,
        serial=leaf.serial_number,
        warnings=tuple(warnings),
        not_before=leaf.not_valid_before_utc,
    )


def _one_line(text: object) -> str:
    return " ".join(str(text).split())
