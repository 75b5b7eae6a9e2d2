"""TLSA records (RFC 6698 §2, RFC 7671, RFC 7672 §3.1): parsing, usability, digest agility. Sans-I/O.

Presentation form (RFC 6698 §2.2)::

    usage selector mtype hexdata        e.g.  3 1 1 0C72AC70B745AC19998811B131D662C9AC69DBDBE7CB23E5B514B566

* ``usage``, ``selector`` and ``mtype`` are decimal 8-bit integers. Values the verifier does not implement still
  parse (an RRset may hold them); :func:`usable` says why such a record cannot be used (DANE-H-20).
* The hex data may be split by whitespace and wrapped in zone-file parentheses, ``;`` starts a comment that runs
  to the end of the line; upper and lower case are both accepted. Empty data does not parse (RFC 6698 §2.2:
  the field "MUST be represented as a string of hexadecimal characters"), but :func:`from_rdata` accepts it
  because the wire form can carry it; such a record is unusable.

Project rules (docs/dane.md): PKIX-TA(0) and PKIX-EE(1) are unusable for SMTP (DANE-H-24, EC-33); digest
agility keeps, per (usage, selector), the Full(0) records plus those of the strongest digest present
(DANE-H-36); the strength order is configurable (DANE-H-37) and also decides which digests are acceptable at
all (a digest left out of the order is "too weak", DANE-H-21).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from mxsec.errors import ParseError
from mxsec.names import normalize_domain

__all__ = [
    "DANE_EE",
    "DANE_TA",
    "DEFAULT_DIGEST_ORDER",
    "FULL",
    "MATCHING_TYPES",
    "PKIX_EE",
    "PKIX_TA",
    "SELECTOR_CERT",
    "SELECTOR_SPKI",
    "SHA2_256",
    "SHA2_512",
    "MatchingType",
    "TlsaError",
    "TlsaRecord",
    "describe",
    "digest",
    "from_rdata",
    "parse_tlsa",
    "partition",
    "select_usable",
    "spki_of_certificate",
    "tlsa_for_certificate",
    "tlsa_owner",
    "usable",
]

# Certificate usages (RFC 6698 §2.1.1, RFC 7218 acronyms).
PKIX_TA = 0
PKIX_EE = 1
DANE_TA = 2
DANE_EE = 3
# Selectors (RFC 6698 §2.1.2; DANE-H-34).
SELECTOR_CERT = 0
SELECTOR_SPKI = 1
# Matching types (RFC 6698 §2.1.3; DANE-H-35).
FULL = 0
SHA2_256 = 1
SHA2_512 = 2

_USAGE_NAMES = {PKIX_TA: "PKIX-TA", PKIX_EE: "PKIX-EE", DANE_TA: "DANE-TA", DANE_EE: "DANE-EE"}
_SELECTOR_NAMES = {SELECTOR_CERT: "Cert", SELECTOR_SPKI: "SPKI"}


@dataclass(frozen=True)
class MatchingType:
    """A digest matching type: its RFC 7218 name, hashlib name and digest length in octets."""

    name: str
    hash_name: str
    length: int


#: Digest matching types the verifier implements (DANE-H-37: extend this table for a new digest; then list it
#: in an order passed to :func:`usable` / :func:`select_usable`).
MATCHING_TYPES: dict[int, MatchingType] = {
    SHA2_256: MatchingType("SHA2-256", "sha256", 32),
    SHA2_512: MatchingType("SHA2-512", "sha512", 64),
}

#: Digest strength order, strongest first (DANE-H-36/H-37). Digests missing from the order are unusable.
DEFAULT_DIGEST_ORDER: tuple[int, ...] = (SHA2_512, SHA2_256)

#: Longer presentation text is refused outright (the RDATA is at most 65535 octets; hex doubles it).
MAX_TLSA_TEXT = 262_144
_MAX_DATA = 65535 - 3

_UINT8_RE = re.compile(r"[0-9]{1,3}")
_HEX_RE = re.compile(r"[0-9A-Fa-f]*")
_COMMENT_RE = re.compile(r";[^\n]*")


class TlsaError(ParseError):
    """A TLSA record (or a certificate given to the generator) is not valid.

    ``result_type`` is ``tlsa-invalid`` (RFC 8460 §4.3.2.1): a record that does not parse cannot be used.
    """

    result_type = "tlsa-invalid"


@dataclass(frozen=True, repr=False)
class TlsaRecord:
    """One TLSA record: certificate usage, selector, matching type and certificate association data."""

    usage: int
    selector: int
    mtype: int
    data: bytes

    def to_text(self) -> str:
        """``usage selector mtype HEXDATA``: the RFC 8460 §4.5 ``policy-string`` form (no spaces in the hex)."""
        return f"{self.usage} {self.selector} {self.mtype} {bytes(self.data).hex().upper()}"

    def __str__(self) -> str:
        return self.to_text()

    def __repr__(self) -> str:
        if isinstance(self.data, bytes):
            return f"TlsaRecord({self.to_text()!r})"
        return f"TlsaRecord({self.usage!r}, {self.selector!r}, {self.mtype!r}, {self.data!r})"


def parse_tlsa(text: str) -> TlsaRecord:
    """Parse a TLSA record in presentation form; raise :class:`TlsaError` if it is not one."""
    if not isinstance(text, str):
        raise TlsaError(f"TLSA record must be text, not {type(text).__name__}")
    if len(text) > MAX_TLSA_TEXT:
        raise TlsaError(f"TLSA record longer than {MAX_TLSA_TEXT} characters")
    cleaned = _COMMENT_RE.sub(" ", text).replace("(", " ").replace(")", " ")
    fields = cleaned.split()
    if len(fields) < 3:
        raise TlsaError("TLSA record needs usage, selector, matching type and data")
    numbers = []
    for label, field in zip(("usage", "selector", "matching type"), fields[:3]):
        if not field.isascii() or not _UINT8_RE.fullmatch(field) or int(field) > 255:
            raise TlsaError(f"invalid {label} {field[:20]!r} (a number from 0 to 255)")
        numbers.append(int(field))
    hexdata = "".join(fields[3:])
    if not hexdata:
        raise TlsaError("TLSA record has no certificate association data")
    if not hexdata.isascii() or not _HEX_RE.fullmatch(hexdata):
        raise TlsaError("certificate association data is not hexadecimal")
    if len(hexdata) % 2:
        raise TlsaError("certificate association data has an odd number of hex digits")
    data = bytes.fromhex(hexdata)
    if len(data) > _MAX_DATA:
        raise TlsaError("certificate association data is longer than a TLSA record can hold")
    return TlsaRecord(numbers[0], numbers[1], numbers[2], data)


def from_rdata(usage: int, selector: int, mtype: int, data: bytes) -> TlsaRecord:
    """A record from already-decoded RDATA fields (e.g. a dnspython TLSA rdata); raise :class:`TlsaError`."""
    for label, value in (("usage", usage), ("selector", selector), ("matching type", mtype)):
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 255:
            raise TlsaError(f"invalid {label} {value!r} (a number from 0 to 255)")
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TlsaError(f"certificate association data must be bytes, not {type(data).__name__}")
    data = bytes(data)
    if len(data) > _MAX_DATA:
        raise TlsaError("certificate association data is longer than a TLSA record can hold")
    return TlsaRecord(usage, selector, mtype, data)


def describe(record: TlsaRecord) -> str:
    """``DANE-EE(3) SPKI(1) SHA2-256(1)``: the RFC 7218 names of the record's parameters."""
    usage = _USAGE_NAMES.get(record.usage, "usage")
    selector = _SELECTOR_NAMES.get(record.selector, "selector")
    mtype = "Full" if record.mtype == FULL else MATCHING_TYPES.get(record.mtype, MatchingType("mtype", "", 0)).name
    return f"{usage}({record.usage}) {selector}({record.selector}) {mtype}({record.mtype})"


def usable(record: TlsaRecord, *, order: Sequence[int] = DEFAULT_DIGEST_ORDER) -> str | None:
    """``None`` when the verifier can use *record*; otherwise the reason it is unusable (never raises)."""
    if not isinstance(record, TlsaRecord):
        return f"not a TLSA record: {type(record).__name__}"
    usage, selector, mtype, data = record.usage, record.selector, record.mtype, record.data
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in (usage, selector, mtype)) or not isinstance(
        data, bytes
    ):
        return "malformed record fields"  # from_rdata() always stores bytes
    # DANE-H-24, EC-33: PKIX usages are undefined for SMTP; the project treats them as unusable.
    if usage in (PKIX_TA, PKIX_EE):
        return f"{_USAGE_NAMES[usage]}({usage}) is not used for SMTP (RFC 7672 §3.1.3)"
    if usage not in (DANE_TA, DANE_EE):  # DANE-H-20
        return f"unknown certificate usage {usage}"
    if selector not in (SELECTOR_CERT, SELECTOR_SPKI):  # DANE-H-34
        return f"unknown selector {selector}"
    if mtype != FULL and mtype not in MATCHING_TYPES:  # DANE-H-35
        return f"unknown matching type {mtype}"
    if not data:  # DANE-H-20
        return "empty certificate association data"
    if mtype != FULL:
        info = MATCHING_TYPES[mtype]
        if mtype not in order:  # DANE-H-21
            return f"matching type {info.name}({mtype}) is not accepted by the digest policy"
        if len(data) != info.length:  # DANE-H-20
            return f"{info.name} data is {len(data)} octets, not {info.length}"
        return None
    if selector == SELECTOR_CERT:
        if _load_certificate(data) is None:
            return "Full(0) data does not parse as a DER certificate"
    elif not _is_spki(data):
        return "Full(0) data does not parse as a DER SubjectPublicKeyInfo"
    return None


def partition(
    records: Iterable[TlsaRecord], *, order: Sequence[int] = DEFAULT_DIGEST_ORDER
) -> tuple[list[TlsaRecord], list[tuple[TlsaRecord, str]]]:
    """Split *records* into the usable ones after digest agility and ``(record, reason)`` for the rest.

    DANE-H-36: first drop unusable records; then, per (usage, selector), keep the Full(0) records and the
    records of the strongest digest present (by *order*, strongest first); the weaker digests are dropped with
    a reason. Exact duplicates are kept once. Input order is preserved.
    """
    rank = {mtype: index for index, mtype in enumerate(order)}
    candidates: list[TlsaRecord] = []
    rejected: list[tuple[TlsaRecord, str]] = []
    seen: set[TlsaRecord] = set()
    for record in records:
        reason = usable(record, order=order)
        if reason is not None:
            rejected.append((record, reason))
            continue
        if record in seen:
            continue
        seen.add(record)
        candidates.append(record)
    strongest: dict[tuple[int, int], int] = {}
    for record in candidates:
        if record.mtype == FULL:
            continue
        key = (record.usage, record.selector)
        best = strongest.get(key)
        if best is None or rank[record.mtype] < rank[best]:
            strongest[key] = record.mtype
    kept: list[TlsaRecord] = []
    for record in candidates:
        best = strongest.get((record.usage, record.selector))
        if record.mtype == FULL or record.mtype == best:
            kept.append(record)
        else:
            assert best is not None
            rejected.append((record, f"superseded by a stronger digest, {MATCHING_TYPES[best].name}({best}) "
                                     "(digest agility)"))
    return kept, rejected


def select_usable(records: Iterable[TlsaRecord], *, order: Sequence[int] = DEFAULT_DIGEST_ORDER) -> list[TlsaRecord]:
    """The records the verifier uses: usable ones after digest agility (see :func:`partition`)."""
    return partition(records, order=order)[0]


def digest(mtype: int, data: bytes) -> bytes:
    """The certificate association data of *data* for matching type *mtype* (Full(0) is *data* itself)."""
    if mtype == FULL:
        return bytes(data)
    return hashlib.new(MATCHING_TYPES[mtype].hash_name, data).digest()


def tlsa_for_certificate(
    cert: bytes | str | x509.Certificate, usage: int = DANE_EE, selector: int = SELECTOR_SPKI, mtype: int = SHA2_256
) -> TlsaRecord:
    """The TLSA record for *cert* (DER or PEM, bytes or text); ``mxsec generate tlsa``. Raises :class:`TlsaError`."""
    if isinstance(cert, x509.Certificate):
        der = cert.public_bytes(serialization.Encoding.DER)
    else:
        der = _certificate_der(cert)
    if selector not in (SELECTOR_CERT, SELECTOR_SPKI):
        raise TlsaError(f"cannot generate selector {selector!r} (0 = certificate, 1 = public key)")
    if mtype != FULL and mtype not in MATCHING_TYPES:
        raise TlsaError(f"cannot generate matching type {mtype!r} (0 = full, 1 = SHA2-256, 2 = SHA2-512)")
    if selector == SELECTOR_CERT:
        selected = der
    else:
        spki = spki_of_certificate(der)
        if spki is None:
            raise TlsaError("cannot find the SubjectPublicKeyInfo in the certificate")
        selected = spki
    return from_rdata(usage, selector, mtype, digest(mtype, selected))


def tlsa_owner(host: str, port: int = 25) -> str:
    """``_25._tcp.host.``: the TLSA owner name for *host* (DANE-H-12). Raises a ``ParseError`` for a bad host."""
    if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
        raise TlsaError(f"invalid port {port!r}")
    return f"_{port}._tcp.{normalize_domain(host)}."


# --- certificates -------------------------------------------------------------------------------------------


def _certificate_der(cert: bytes | str) -> bytes:
    if isinstance(cert, str):
        cert = cert.encode("ascii", "replace")
    if not isinstance(cert, (bytes, bytearray, memoryview)):
        raise TlsaError(f"certificate must be DER or PEM, not {type(cert).__name__}")
    cert = bytes(cert)
    if b"-----BEGIN" in cert:
        try:
            return x509.load_pem_x509_certificate(cert).public_bytes(serialization.Encoding.DER)
        except ValueError as exc:
            raise TlsaError(f"not a PEM certificate: {exc}") from None
    if _load_certificate(cert) is None:
        raise TlsaError("not a DER certificate")
    return cert


def _load_certificate(der: bytes) -> x509.Certificate | None:
    """The parsed certificate, or ``None`` if *der* is not exactly one DER certificate."""
    try:
        cert = x509.load_der_x509_certificate(der)
    except Exception:  # noqa: BLE001 - hostile input: the parser's error types are not all ValueError
        return None
    return cert


def _read_tlv(data: bytes, pos: int) -> tuple[int, int, int] | None:
    """Read one DER TLV at *pos*: ``(tag, content_start, end)``, or ``None`` if it does not fit."""
    if pos + 2 > len(data):
        return None
    tag = data[pos]
    if tag & 0x1F == 0x1F:  # multi-octet tags do not occur where we look
        return None
    first = data[pos + 1]
    pos += 2
    if first < 0x80:
        length = first
    else:
        count = first & 0x7F
        if count == 0 or count > 4 or pos + count > len(data):
            return None
        length = int.from_bytes(data[pos : pos + count], "big")
        pos += count
    end = pos + length
    if end > len(data):
        return None
    return tag, pos, end


def _is_spki(data: bytes) -> bool:
    """Is *data* one DER SubjectPublicKeyInfo: SEQUENCE { AlgorithmIdentifier SEQUENCE, BIT STRING }?"""
    outer = _read_tlv(data, 0)
    if outer is None or outer[0] != 0x30 or outer[2] != len(data):
        return False
    alg = _read_tlv(data, outer[1])
    if alg is None or alg[0] != 0x30:
        return False
    bits = _read_tlv(data, alg[2])
    if bits is None or bits[0] != 0x03 or bits[2] != len(data):
        return False
    try:
        serialization.load_der_public_key(data)
    except Exception:  # noqa: BLE001 - hostile input
        return False
    return True


def spki_of_certificate(der: bytes | x509.Certificate) -> bytes | None:
    """The DER SubjectPublicKeyInfo exactly as encoded inside certificate *der* (``None`` if not found).

    Taken from the TBSCertificate bytes rather than re-encoded from the parsed key, so the digest is over the
    octets the server's administrator published (re-encoding could change, e.g., a compressed EC point).
    """
    cert = _load_certificate(der) if not isinstance(der, x509.Certificate) else der
    if cert is None:
        return None
    try:
        tbs = cert.tbs_certificate_bytes
    except Exception:  # noqa: BLE001 - hostile input
        return None
    outer = _read_tlv(tbs, 0)
    if outer is None or outer[0] != 0x30:
        return None
    pos = outer[1]
    first = _read_tlv(tbs, pos)
    if first is not None and first[0] == 0xA0:  # [0] EXPLICIT version
        pos = first[2]
    # serialNumber, signature, issuer, validity, subject, then subjectPublicKeyInfo
    for _ in range(5):
        element = _read_tlv(tbs, pos)
        if element is None:
            return None
        pos = element[2]
    spki = _read_tlv(tbs, pos)
    if spki is None or spki[0] != 0x30:
        return None
    return bytes(tbs[pos : spki[2]])
