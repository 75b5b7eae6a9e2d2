"""DKIM keys and signing for tests (unit and integration): RSA and Ed25519 keys made with ``cryptography``,
their DNS key records, and report messages signed by dkimpy.

dkimpy signs Ed25519 through PyNaCl, which mxsec does not depend on; when it is missing, :func:`sign` lends
dkimpy a stand-in built on ``cryptography`` for the time of the ``sign`` call only, so that verification
(mxsec.reports.dkim) always runs without it.
"""

from __future__ import annotations

import base64
from types import SimpleNamespace

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

DOMAIN = "reporter.example"
SIGNED_HEADERS = [b"from", b"to", b"subject", b"date", b"message-id", b"mime-version", b"content-type",
                  b"tls-report-domain", b"tls-report-submitter"]


class RsaKey:
    def __init__(self, bits: int = 2048) -> None:
        key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
        self.private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                         serialization.NoEncryption())
        spki = key.public_key().public_bytes(serialization.Encoding.DER,
                                             serialization.PublicFormat.SubjectPublicKeyInfo)
        self.p = base64.b64encode(spki).decode()
        self.algorithm = b"rsa-sha256"

    def record(self, extra: str = "") -> str:
        return f"v=DKIM1; k=rsa; {extra}p={self.p}"


class EdKey:
    def __init__(self) -> None:
        key = ed25519.Ed25519PrivateKey.generate()
        seed = key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                                 serialization.NoEncryption())
        raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        self.private = base64.b64encode(seed)  # what dkimpy takes for ed25519-sha256
        self.p = base64.b64encode(raw).decode()
        self.algorithm = b"ed25519-sha256"

    def record(self, extra: str = "") -> str:
        return f"v=DKIM1; k=ed25519; {extra}p={self.p}"


def _nacl_stand_in() -> SimpleNamespace:
    class SigningKey:
        def __init__(self, seed: bytes, encoder) -> None:
            self._key = ed25519.Ed25519PrivateKey.from_private_bytes(encoder.decode(seed))

        def sign(self, data: bytes) -> SimpleNamespace:
            return SimpleNamespace(signature=self._key.sign(data))

    class Base64Encoder:
        @staticmethod
        def decode(data: bytes) -> bytes:
            return base64.b64decode(data)

    return SimpleNamespace(signing=SimpleNamespace(SigningKey=SigningKey),
                           encoding=SimpleNamespace(Base64Encoder=Base64Encoder),
                           exceptions=SimpleNamespace(ValueError=ValueError))


def sign(message: bytes, key, *, selector: str = "s1", domain: str = DOMAIN) -> bytes:
    """*message* with one more DKIM-Signature on top (relaxed/relaxed, the usual senders' choice)."""
    with pytest.MonkeyPatch.context() as patch:
        if key.algorithm == b"ed25519-sha256":
            try:
                import nacl.signing  # noqa: F401
            except ImportError:
                patch.setattr(dkim, "nacl", _nacl_stand_in(), raising=False)
        header = dkim.sign(message, selector.encode(), domain.encode(), key.private,
                           signature_algorithm=key.algorithm, canonicalize=(b"relaxed", b"relaxed"),
                           include_headers=SIGNED_HEADERS)
    return header + message
