"""DKIM signing of outgoing TLSRPT report messages (RFC 8460 §3: a report sent by mail MUST be DKIM-signed).

Pure computation: keys come in as PEM bytes, messages as bytes; nothing here reads files, the network or DNS.

* :func:`load_signing_key` reads an RSA private key (PKCS#1 or PKCS#8 PEM, at least 1024 bits, with a warning
  under 2048 as RFC 8301 §3.2 recommends) or an Ed25519 private key (PKCS#8 PEM, RFC 8463).
* :func:`sign_message` prepends a ``DKIM-Signature`` (RPT-I-14): ``c=relaxed/relaxed``, no ``l=`` tag
  (RFC 8460 §3, RPT-I-15), and ``h=`` covering From, To, Subject, Date, Message-ID, MIME-Version,
  Content-Type, TLS-Report-Domain, TLS-Report-Submitter and TLS-Required (RFC 8460 §5.3 says the two
  TLS-Report headers SHOULD be signed, RPT-I-20). Each of those names is listed twice ("over-signing"), so a
  second ``TLS-Report-Domain`` or ``From`` added on the way breaks the signature instead of passing.
* :func:`key_record` is the TXT value for ``SELECTOR._domainkey.DOMAIN``: ``v=DKIM1; k=…; s=tlsrpt; p=…``
  (RPT-I-16). ``s=tlsrpt`` alone means the key cannot sign ordinary mail (RFC 6376 §3.6.1); ``service="*"``
  or ``"email:tlsrpt"`` widens it, ``None`` leaves ``s=`` out.
* :func:`generate_key` makes a new key (PKCS#8 PEM, unencrypted) for ``mxsec generate dkim``.

How the signature is made: dkimpy builds the header and canonicalises (:meth:`dkim.DKIM.gen_header`, the
method its own ``sign`` calls), and we hand it the key object it signs with. For RSA that is dkimpy's own
parsed key, so dkimpy computes the RSASSA-PKCS1-v1_5 signature. For Ed25519 (RFC 8463) dkimpy would want a
PyNaCl ``SigningKey``, which mxsec does not depend on; the stand-in here signs with ``cryptography`` what
dkimpy passes, the SHA-256 hash of the canonicalised header data with ``b=`` empty, exactly as RFC 8463 §3
asks (``bh=`` stays dkimpy's: the base64 SHA-256 of the canonical body). We build the tag list ourselves
rather than calling ``DKIM.sign`` so that ``t=`` comes from *now* and ``l=`` can never appear. The
verifying side is :mod:`mxsec.reports.dkim`, which checks Ed25519 through ``cryptography`` as well.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import re
import time
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from mxsec.errors import ParseError
from mxsec.names import DomainError, normalize_domain

__all__ = [
    "ALGORITHMS",
    "DEFAULT_RSA_BITS",
    "MIN_RSA_BITS",
    "SIGNED_HEADERS",
    "DkimError",
    "SigningKey",
    "generate_key",
    "key_owner",
    "key_record",
    "load_signing_key",
    "normalize_service",
    "sign_message",
]

#: Key types and their ``a=`` algorithm.
ALGORITHMS = {"rsa": "rsa-sha256", "ed25519": "ed25519-sha256"}
#: RFC 8301 §3.2: signers MUST use at least 1024 bits and SHOULD use at least 2048.
MIN_RSA_BITS = 1024
DEFAULT_RSA_BITS = 2048
#: RFC 8301 §3.2: verifiers must handle keys from 1024 to 4096 bits; larger ones may not verify.
MAX_RSA_BITS = 4096
#: Header fields always signed, each one extra time (over-signing), whether or not the message has them.
SIGNED_HEADERS = (
    "from", "to", "subject", "date", "message-id", "mime-version", "content-type",
    "tls-report-domain", "tls-report-submitter", "tls-required",
)
#: Signed too when the message has them.
OPTIONAL_SIGNED_HEADERS = ("cc", "reply-to", "sender", "content-transfer-encoding", "in-reply-to", "references")
MAX_KEY_FILE_BYTES = 64 * 1024

_log = logging.getLogger("mxsec.tlsrpt.dkim_sign")
_log.addHandler(logging.NullHandler())

_PEM_BLOCK_RE = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----(.*?)-----END \1-----", re.DOTALL)
_SELECTOR_LABEL_RE = re.compile(r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?")
_SERVICE_RE = re.compile(r"\*|[a-z](?:[a-z0-9-]*[a-z0-9])?")


class DkimError(ParseError):
    """A key, selector, domain, service list or message that cannot be used for signing. A :class:`ValueError`;
    ``code`` is a stable name: ``bad-key``, ``encrypted-key``, ``key-type``, ``weak-key``, ``bad-selector``,
    ``bad-domain``, ``bad-service``, ``bad-message``, ``bad-parameter`` (``internal``: a bug)."""

    def __init__(self, message: str, *, code: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class SigningKey:
    """A private key ready to sign: ``key_type`` (``rsa`` / ``ed25519``, the record's ``k=``), ``algorithm``
    (``rsa-sha256`` / ``ed25519-sha256``, the signature's ``a=``), ``bits``, ``public_key`` (the record's
    ``p=`` value) and advice in ``warnings`` (e.g. an RSA key under 2048 bits). The private key itself is
    neither shown by ``repr`` nor compared."""

    key_type: str
    algorithm: str
    bits: int
    public_key: str
    warnings: tuple[str, ...] = ()
    private: Any = field(default=None, repr=False, compare=False)

    def record(self, *, service: str | None = "tlsrpt") -> str:
        """:func:`key_record` of this key."""
        return key_record(self, service=service)


# ------------------------------------------------------------------------------------------------ keys


def load_signing_key(pem_bytes: bytes, *, source: str = "key") -> SigningKey:
    """The RSA or Ed25519 private key in *pem_bytes* (PEM: ``PRIVATE KEY`` (PKCS#8) or ``RSA PRIVATE KEY``
    (PKCS#1)). Raises :class:`DkimError` for anything else: no PEM private key, an encrypted one, another
    key type, an RSA key under 1024 bits. *source* names the input in messages (e.g. the file name)."""
    if isinstance(pem_bytes, str):
        pem_bytes = pem_bytes.encode("utf-8", "replace")
    if not isinstance(pem_bytes, (bytes, bytearray, memoryview)):
        raise DkimError(f"{source}: expected PEM bytes, not {type(pem_bytes).__name__}", code="bad-key")
    data = bytes(pem_bytes)
    if not data.strip():
        raise DkimError(f"{source} is empty", code="bad-key")
    if len(data) > MAX_KEY_FILE_BYTES:
        raise DkimError(f"{source} is larger than {MAX_KEY_FILE_BYTES} bytes; not a key file", code="bad-key")
    blocks = [(m.group(1), m.group(0)) for m in _PEM_BLOCK_RE.finditer(data)]
    labels = [label.decode("ascii") for label, _ in blocks]
    keys = [(label, block) for label, block in blocks if label.endswith(b"PRIVATE KEY")]
    if not keys:
        found = f" (found: {', '.join(dict.fromkeys(labels))})" if labels else ""
        raise DkimError(f"{source} holds no PEM private key{found}", code="bad-key")
    if len(keys) > 1:
        raise DkimError(f"{source} holds {len(keys)} private keys; give a file with one", code="bad-key")
    label, block = keys[0]
    if label == b"ENCRYPTED PRIVATE KEY" or b"Proc-Type: 4,ENCRYPTED" in block:
        raise DkimError(
            f"{source} is encrypted; give an unencrypted key (openssl pkey -in KEY -out PLAIN.pem)",
            code="encrypted-key",
        )
    if label not in (b"PRIVATE KEY", b"RSA PRIVATE KEY"):
        kind = label.decode("ascii").removesuffix(" PRIVATE KEY")
        raise DkimError(f"{source} holds a key of type {kind}; DKIM signs with RSA or Ed25519", code="key-type")
    try:
        key = serialization.load_pem_private_key(block, password=None)
    except TypeError:
        raise DkimError(f"{source} is encrypted; give an unencrypted key", code="encrypted-key") from None
    except (ValueError, UnsupportedAlgorithm):
        raise DkimError(f"{source}: the PEM private key cannot be read", code="bad-key") from None
    return _signing_key(key, source)


def _signing_key(key: Any, source: str) -> SigningKey:
    if isinstance(key, ed25519.Ed25519PrivateKey):
        raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return SigningKey("ed25519", ALGORITHMS["ed25519"], 256, base64.b64encode(raw).decode("ascii"), (), key)
    if isinstance(key, rsa.RSAPrivateKey):
        bits = key.key_size
        if bits < MIN_RSA_BITS:
            raise DkimError(
                f"{source} is a {bits}-bit RSA key; DKIM needs at least {MIN_RSA_BITS} bits (RFC 8301), "
                f"use {DEFAULT_RSA_BITS}",
                code="weak-key",
            )
        warnings = []
        if bits < DEFAULT_RSA_BITS:
            warnings.append(
                f"{source} is a {bits}-bit RSA key; RFC 8301 recommends at least {DEFAULT_RSA_BITS} bits"
            )
        if bits > MAX_RSA_BITS:
            warnings.append(
                f"{source} is a {bits}-bit RSA key; verifiers need only handle up to {MAX_RSA_BITS} bits (RFC 8301)"
            )
        spki = key.public_key().public_bytes(serialization.Encoding.DER,
                                             serialization.PublicFormat.SubjectPublicKeyInfo)
        return SigningKey("rsa", ALGORITHMS["rsa"], bits, base64.b64encode(spki).decode("ascii"), tuple(warnings), key)
    kind = type(key).__name__.removeprefix("_").replace("PrivateKey", "") or "unknown"
    raise DkimError(f"{source} holds a key of type {kind}; DKIM signs with RSA or Ed25519", code="key-type")


def generate_key(algorithm: str = "rsa", bits: int = DEFAULT_RSA_BITS) -> bytes:
    """A new private key as unencrypted PKCS#8 PEM: RSA of *bits* (1024 to 4096; 2048 recommended) or
    Ed25519 (*bits* is ignored)."""
    kind = algorithm.lower().strip() if isinstance(algorithm, str) else algorithm
    if kind in ("ed25519", "ed25519-sha256"):
        key: ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey = ed25519.Ed25519PrivateKey.generate()
    elif kind in ("rsa", "rsa-sha256"):
        if isinstance(bits, bool) or not isinstance(bits, int) or not MIN_RSA_BITS <= bits <= MAX_RSA_BITS:
            raise DkimError(
                f"RSA key size must be {MIN_RSA_BITS} to {MAX_RSA_BITS} bits ({DEFAULT_RSA_BITS} recommended), "
                f"not {bits!r}",
                code="bad-parameter",
            )
        key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    else:
        raise DkimError(f"algorithm must be rsa or ed25519, not {algorithm!r}", code="bad-parameter")
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def key_record(key: SigningKey, *, service: str | None = "tlsrpt") -> str:
    """``v=DKIM1; k=rsa|ed25519; s=SERVICE; p=BASE64``, the TXT value of ``SELECTOR._domainkey.DOMAIN``.

    *service* is a colon-separated list of service types (RFC 6376 §3.6.1): ``tlsrpt`` (the default,
    RFC 8460 §3: the key signs reports only), ``*`` (any use), ``email:tlsrpt`` …; ``None`` or ``""`` leaves
    ``s=`` out (which means ``*``). A list naming none of ``tlsrpt``, ``email`` or ``*`` is refused: such a
    key could not sign reports.

    Note: dkimpy (1.1.8) does not read service *lists*: it ignores a key with ``s=email:tlsrpt``; mxsec's
    verifier reads them. A single value (``tlsrpt`` or ``*``) works with both.
    """
    if not isinstance(key, SigningKey):
        raise DkimError(f"expected a SigningKey, not {type(key).__name__}", code="bad-parameter")
    parts = ["v=DKIM1", f"k={key.key_type}"]
    services = normalize_service(service)
    if services:
        parts.append(f"s={services}")
    parts.append(f"p={key.public_key}")
    record = "; ".join(parts)
    _check_record(record, key, services)
    return record


def _check_record(record: str, key: SigningKey, services: str | None) -> None:
    """Parse the record back as a verifier does (dkimpy's tag=value reader) and compare."""
    from dkim.util import InvalidTagValueList, parse_tag_value

    try:
        tags = parse_tag_value(record.encode("ascii"))
    except (InvalidTagValueList, ValueError, UnicodeError):  # pragma: no cover - a bug
        raise DkimError("internal error: the generated key record does not parse", code="internal") from None
    expected = {b"v": b"DKIM1", b"k": key.key_type.encode(), b"p": key.public_key.encode()}
    if services:
        expected[b"s"] = services.encode()
    if tags != expected:  # pragma: no cover - a bug
        raise DkimError("internal error: the generated key record parses differently", code="internal")


def normalize_service(service: str | None) -> str | None:
    """The ``s=`` value for *service* (lower case, duplicates dropped), ``None`` to leave ``s=`` out; raises
    :class:`DkimError` (see :func:`key_record`)."""
    if service is None:
        return None
    if not isinstance(service, str):
        raise DkimError(f"service must be text, not {type(service).__name__}", code="bad-service")
    if not service.strip():
        return None
    names: list[str] = []
    for piece in service.split(":"):
        name = piece.strip().lower()
        if not _SERVICE_RE.fullmatch(name):
            raise DkimError(
                f"service {service!r}: each service type is '*' or a word such as tlsrpt or email, "
                "separated by ':'",
                code="bad-service",
            )
        if name not in names:
            names.append(name)
    if not {"*", "email", "tlsrpt"} & set(names):
        raise DkimError(
            f"service {service!r} names neither tlsrpt, email nor *: the key could not sign reports",
            code="bad-service",
        )
    return ":".join(names)


def key_owner(selector: str, domain: str) -> str:
    """``SELECTOR._domainkey.DOMAIN`` (lower case, A-labels, no trailing dot); raises :class:`DkimError`."""
    return f"{_selector(selector)}._domainkey.{_domain(domain)}"


def _selector(value: object) -> str:
    if not isinstance(value, str):
        raise DkimError(f"selector must be text, not {type(value).__name__}", code="bad-selector")
    text = value.strip().lower()
    labels = text.split(".")
    if not text or len(text) > 200 or not all(_SELECTOR_LABEL_RE.fullmatch(label) for label in labels):
        raise DkimError(
            f"selector {_show(value)}: one or more DNS labels of letters, digits, '-' and '_' (e.g. tlsrpt2026)",
            code="bad-selector",
        )
    return text


def _domain(value: object) -> str:
    if not isinstance(value, str):
        raise DkimError(f"domain must be text, not {type(value).__name__}", code="bad-domain")
    try:
        name = normalize_domain(value.strip().removesuffix("."))
    except DomainError as exc:
        raise DkimError(f"domain {_show(value)}: {exc}", code="bad-domain") from None
    return name


# ------------------------------------------------------------------------------------------------ signing


def sign_message(message: bytes, *, key: SigningKey, selector: str, domain: str, now: int | None = None) -> bytes:
    """*message* with a ``DKIM-Signature`` header field prepended (see the module documentation).

    ``d=`` is *domain* (the submitter's domain: its ``SELECTOR._domainkey`` record must hold the key),
    ``s=`` *selector*, ``t=`` *now* (Unix seconds; the current time when ``None``). The new field ends lines
    the way *message* does (CRLF, or LF for an LF-only message). Raises :class:`DkimError`.
    """
    if not isinstance(key, SigningKey) or key.private is None:
        raise DkimError("key must be a SigningKey from load_signing_key", code="bad-parameter")
    if not isinstance(message, (bytes, bytearray, memoryview)):
        raise DkimError(f"message must be bytes, not {type(message).__name__}", code="bad-message")
    data = bytes(message)
    selector_text = _selector(selector)
    owner = key_owner(selector_text, domain)
    domain_text = owner.split("._domainkey.", 1)[1]
    if now is None:
        now = int(time.time())
    if isinstance(now, bool) or not isinstance(now, int) or now < 0:
        raise DkimError(f"now must be Unix seconds (a non-negative int), not {now!r}", code="bad-parameter")
    names = _header_names(data)
    if "from" not in names:
        raise DkimError("message has no From header field (RFC 6376: From MUST be signed)", code="bad-message")
    include = [*SIGNED_HEADERS, *(n for n in OPTIONAL_SIGNED_HEADERS if n in names)]
    include += include  # over-sign: every name once more than the message has it
    header = _signature_field(data, key, selector_text.encode("ascii"), domain_text.encode("ascii"), now,
                              [n.encode("ascii") for n in include])
    return header + data


def _header_names(data: bytes) -> set[str]:
    names: set[str] = set()
    for line in re.split(rb"\r?\n", data):
        if not line:
            break
        if line[:1] in (b" ", b"\t"):
            continue
        name, colon, _ = line.partition(b":")
        if colon:
            names.add(name.strip().lower().decode("ascii", "replace"))
    return names


class _Ed25519Signer:
    """What dkimpy's ``gen_header`` calls for ``ed25519-sha256`` (PyNaCl's ``SigningKey.sign`` returns an
    object with ``.signature``): an Ed25519 signature, by ``cryptography``, of the bytes it is given, which
    are the SHA-256 digest of the canonicalised header data (RFC 8463 §3)."""

    def __init__(self, key: ed25519.Ed25519PrivateKey) -> None:
        self._key = key

    def sign(self, data: bytes) -> SimpleNamespace:
        return SimpleNamespace(signature=self._key.sign(data))


def _dkimpy_key(key: SigningKey) -> Any:
    import dkim.crypto

    if key.key_type == "ed25519":
        return _Ed25519Signer(key.private)
    der = key.private.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.TraditionalOpenSSL,
                                    serialization.NoEncryption())
    return dkim.crypto.parse_private_key(der)  # dkimpy's RSA key; dkimpy computes the signature


def _signature_field(data: bytes, key: SigningKey, selector: bytes, domain: bytes, now: int, include: list[bytes],
                     *, identity: bytes | None = None) -> bytes:
    """``DKIM-Signature: …`` with its line end, for *data*, signing the header fields named in *include*."""
    import dkim
    from dkim.canonicalization import CanonicalizationPolicy

    algorithm = key.algorithm.encode("ascii")
    linesep = b"\r\n" if b"\r\n" in data else b"\n"
    try:
        signer = dkim.DKIM(data, logger=_log, signature_algorithm=algorithm, linesep=linesep, tlsrpt=True)
    except dkim.DKIMException as exc:
        raise DkimError(f"message cannot be signed: {exc}", code="bad-message") from None
    policy = CanonicalizationPolicy.from_c_value(b"relaxed/relaxed")
    signer.hasher = hashlib.sha256  # what dkim.DKIM.sign sets before gen_header (both algorithms use SHA-256)
    body_hash = base64.b64encode(hashlib.sha256(policy.canonicalize_body(signer.body)).digest())
    fields = [
        (b"v", b"1"),
        (b"a", algorithm),
        (b"c", policy.to_c_value()),
        (b"d", domain),
        *([(b"i", identity)] if identity else []),
        (b"q", b"dns/txt"),
        (b"s", selector),
        (b"t", str(now).encode("ascii")),
        (b"h", b" : ".join(include)),
        (b"bh", body_hash),
        (b"b", b"0" * 60),  # a placeholder as in dkim.DKIM.sign: puts b= on its own folded line
    ]
    try:
        value: bytes = signer.gen_header(fields, include, policy, b"DKIM-Signature", _dkimpy_key(key))
    except dkim.DKIMException as exc:  # pragma: no cover - a key dkimpy cannot use after cryptography read it
        raise DkimError(f"signing failed: {exc}", code="bad-key") from None
    return b"DKIM-Signature: " + value


def _show(value: object) -> str:
    shown = repr(value)
    return shown if len(shown) <= 80 else shown[:77] + "..."
