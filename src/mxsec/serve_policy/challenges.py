"""ACME challenge answers as values (RFC 8555 §8.3 HTTP-01, RFC 8737 TLS-ALPN-01). No sockets, no files.

:class:`PendingChallenges` is the board the ACME client writes on and the server reads from: HTTP-01 answers by
token, TLS-ALPN-01 certificates by host name. :func:`tls_alpn_certificate` makes the self-signed certificate a
TLS-ALPN-01 validator must see: the host as its only DNS name and, in the critical ``acmeIdentifier``
extension, the SHA-256 digest of the key authorization.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import ssl
import threading
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID, ObjectIdentifier

__all__ = [
    "ACME_TLS_ALPN",
    "ID_PE_ACME_IDENTIFIER",
    "HTTP01_PREFIX",
    "PendingChallenges",
    "tls_alpn_certificate",
]

#: The ALPN protocol a TLS-ALPN-01 validator offers, and the only one it accepts back (RFC 8737 §6.2).
ACME_TLS_ALPN = "acme-tls/1"
#: id-pe-acmeIdentifier (RFC 8737 §6.1)
ID_PE_ACME_IDENTIFIER = ObjectIdentifier("1.3.6.1.5.5.7.1.31")
#: HTTP-01 answers live under this path (RFC 8555 §8.3)
HTTP01_PREFIX = "/.well-known/acme-challenge/"
#: bounds what a misbehaving ACME server can make us hold
MAX_PENDING = 1000


def tls_alpn_certificate(host: str, key_authorization: str) -> tuple[bytes, bytes]:
    """``(certificate PEM, key PEM)`` answering a TLS-ALPN-01 challenge for ``host``."""
    digest = hashlib.sha256(key_authorization.encode("ascii")).digest()
    key = ec.generate_private_key(ec.SECP256R1())
    now = _dt.datetime.now(_dt.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ACME challenge")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _dt.timedelta(minutes=5))
        .not_valid_after(now + _dt.timedelta(days=7))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(host)]), critical=False)
        # extnValue holds the DER of an OCTET STRING of the 32-byte digest
        .add_extension(x509.UnrecognizedExtension(ID_PE_ACME_IDENTIFIER, b"\x04\x20" + digest), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


@dataclass
class PendingChallenges:
    """Challenges being validated now. Written by the ACME client's thread, read by the server's event loop."""

    http01: dict[str, str] = field(default_factory=dict)  # token -> key authorization
    tls_alpn01: dict[str, ssl.SSLContext] = field(default_factory=dict)  # host -> the server's TLS context for it
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add_http01(self, token: str, key_authorization: str) -> None:
        with self._lock:
            if len(self.http01) >= MAX_PENDING:
                raise RuntimeError("too many pending ACME challenges")
            self.http01[token] = key_authorization

    def remove_http01(self, token: str) -> None:
        with self._lock:
            self.http01.pop(token, None)

    def http01_answer(self, path: str) -> str | None:
        """The body for an HTTP-01 request path, or None."""
        if not path.startswith(HTTP01_PREFIX):
            return None
        return self.http01.get(path[len(HTTP01_PREFIX) :])

    def add_tls_alpn01(self, host: str, context: ssl.SSLContext) -> None:
        with self._lock:
            if len(self.tls_alpn01) >= MAX_PENDING:
                raise RuntimeError("too many pending ACME challenges")
            self.tls_alpn01[host.lower()] = context

    def remove_tls_alpn01(self, host: str) -> None:
        with self._lock:
            self.tls_alpn01.pop(host.lower(), None)

    def tls_alpn01_context(self, host: str | None) -> ssl.SSLContext | None:
        return self.tls_alpn01.get(host.lower()) if host else None
