"""Check a presented certificate chain against a secure TLSA RRset (RFC 7671, RFC 7672 §3). Sans-I/O.

The caller did the DNS part (a secure, non-empty TLSA RRset; DANE-H-1..H-16) and the TLS handshake; this
module only decides. It never raises for hostile input: unparsable records are unusable (DANE-H-20), and
an unparsable presented certificate makes the chain fail with ``validation-failure``.

Outcomes (the full table with reasons is in docs/dane.md):

=============================================  =====  =============  ============  =============================
case                                           ok     authenticated  tls_required  result_type (RFC 8460)
=============================================  =====  =============  ============  =============================
no records at all (DANE does not apply)        True   False          False         None
records, none usable (DANE-H-18, EC-33)        True   False          True          tlsa-invalid
a usable record matches (DANE-H-23, EC-32)     True   True           True          None
nothing matches / chain broken / bad DER       False  False          True          validation-failure
DANE-TA: leaf or intermediate expired          False  False          True          certificate-expired
DANE-TA: no name matches (DANE-H-33)           False  False          True          certificate-host-mismatch
=============================================  =====  =============  ============  =============================

``ok`` means "the session may carry mail"; ``result_type`` set together with ``ok=True`` (only the
all-unusable case) means "deliver over unauthenticated TLS, but report the broken TLSA RRset".
"""

from __future__ import annotations

import datetime as _dt
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import (
    dsa,
    ec,
    ed448,
    ed25519,
    padding,
    rsa,
)
from cryptography.x509.oid import NameOID

from mxsec.dane.tlsa import (
    DANE_EE,
    DANE_TA,
    DEFAULT_DIGEST_ORDER,
    FULL,
    SELECTOR_CERT,
    SELECTOR_SPKI,
    TlsaRecord,
    describe,
    digest,
    partition,
    spki_of_certificate,
)
from mxsec.names import normalize_domain

__all__ = ["MAX_CERT_OCTETS", "MAX_CHAIN", "DaneResult", "verify_chain"]

#: Longest chain (leaf included) looked at; a longer one fails with ``validation-failure``.
MAX_CHAIN = 10
#: Largest single presented certificate accepted, in octets.
MAX_CERT_OCTETS = 65536

VALIDATION_FAILURE = "validation-failure"
CERTIFICATE_EXPIRED = "certificate-expired"
HOST_MISMATCH = "certificate-host-mismatch"
TLSA_INVALID = "tlsa-invalid"

#: ``DaneResult.depth`` when the DANE-TA trust anchor came from DNS (``2 0 0`` or ``2 1 0``), not the chain.
ANCHOR_FROM_DNS = -1


@dataclass(frozen=True)
class DaneResult:
    """The decision for one TLS session. See the module docstring for the outcome table.

    ``matched`` is the record that authenticated the session; ``depth`` the chain index of the certificate it
    matched (0 = leaf, :data:`ANCHOR_FROM_DNS` for a trust anchor taken from the record). ``unusable`` lists
    every record that was not used, with the reason (unusable, or dropped by digest agility).
    """

    ok: bool
    matched: TlsaRecord | None
    result_type: str | None
    reason: str
    unusable: tuple[tuple[TlsaRecord, str], ...] = ()
    authenticated: bool = False
    tls_required: bool = True
    depth: int | None = None


@dataclass
class _Cert:
    """A presented certificate with everything the checks need, extracted once up front."""

    cert: x509.Certificate
    der: bytes
    spki: bytes
    subject: x509.Name
    issuer: x509.Name
    not_before: _dt.datetime
    not_after: _dt.datetime
    is_ca: bool
    dns_names: list[str] = field(default_factory=list)
    common_names: list[str] = field(default_factory=list)
    _key: object = None

    def selected(self, selector: int) -> bytes:
        return self.der if selector == SELECTOR_CERT else self.spki

    def self_issued(self) -> bool:
        return self.subject == self.issuer


@dataclass
class _Failure:
    rank: int  # higher = got further; the furthest failure is the one reported
    result_type: str
    reason: str


def verify_chain(
    records: Iterable[TlsaRecord],
    chain: Sequence[bytes],
    *,
    names: Sequence[str],
    now: _dt.datetime,
    order: Sequence[int] = DEFAULT_DIGEST_ORDER,
) -> DaneResult:
    """Decide whether *chain* (``chain[0]`` the leaf, then as presented; DER) satisfies the TLSA *records*.

    *names* are the acceptable reference identifiers for DANE-TA(2) name checks (DANE-H-33: the TLSA base
    domain, the MX host name, the next-hop domain); *now* is the clock value for validity checks (a naive
    value is taken as UTC); *order* is the digest strength order (DANE-H-37).
    """
    if not isinstance(now, _dt.datetime):
        raise TypeError("now must be a datetime")
    if now.tzinfo is None:
        now = now.replace(tzinfo=_dt.UTC)
    try:
        record_list = list(records)
    except TypeError:
        record_list = []
    usable_records, unusable = partition(record_list, order=order)
    dropped = tuple(unusable)

    if not record_list:
        return DaneResult(True, None, None, "no TLSA records: DANE does not apply", dropped, False, False)
    if not usable_records:
        # DANE-H-18, EC-33: TLS stays mandatory, any certificate is accepted; RFC 8460 §4.3.2.1 reports it.
        return DaneResult(
            True, None, TLSA_INVALID, "no usable TLSA records: encryption required, authentication not possible",
            dropped, False, True,
        )

    certs, problem = _load_chain(chain)
    if certs is None:
        return DaneResult(False, None, VALIDATION_FAILURE, problem, dropped)

    failures: list[_Failure] = []
    # DANE-EE(3) (DANE-H-26, H-27): the leaf alone, by certificate or SPKI; no name, expiry or chain checks.
    ee_records = [r for r in usable_records if r.usage == DANE_EE]
    for record in ee_records:
        if _matches(record, certs[0]):
            return DaneResult(True, record, None, f"server certificate matches {describe(record)}", dropped,
                              True, True, 0)
    if ee_records:
        failures.append(_Failure(0, VALIDATION_FAILURE, "the server certificate matches no DANE-EE(3) record"))

    ta_records = [r for r in usable_records if r.usage == DANE_TA]
    if ta_records:
        outcome = _verify_ta(ta_records, certs, names, now)
        if isinstance(outcome, DaneResult):
            return DaneResult(outcome.ok, outcome.matched, None, outcome.reason, dropped, True, True, outcome.depth)
        failures.append(outcome)

    top = max(f.rank for f in failures)
    furthest = [f for f in failures if f.rank == top]
    reason = "; ".join(f.reason for f in furthest)
    return DaneResult(False, None, furthest[0].result_type, reason, dropped)


# --- the chain ----------------------------------------------------------------------------------------------


def _load_chain(chain: Sequence[bytes]) -> tuple[list[_Cert] | None, str]:
    try:
        items = list(chain)
    except TypeError:
        return None, "the certificate chain is not a sequence"
    if not items:
        return None, "the server presented no certificate"
    if len(items) > MAX_CHAIN:
        return None, f"the server presented {len(items)} certificates (at most {MAX_CHAIN} are accepted)"
    certs = []
    for index, item in enumerate(items):
        loaded = _load_one(item)
        if loaded is None:
            return None, f"presented certificate {index} does not parse as a DER X.509 certificate"
        certs.append(loaded)
    return certs, ""


def _load_one(item: object) -> _Cert | None:
    if isinstance(item, x509.Certificate):
        try:
            item = item.public_bytes(serialization.Encoding.DER)
        except Exception:  # noqa: BLE001 - hostile input
            return None
    if not isinstance(item, (bytes, bytearray, memoryview)):
        return None
    der = bytes(item)
    if not der or len(der) > MAX_CERT_OCTETS:
        return None
    try:
        cert = x509.load_der_x509_certificate(der)
        spki = spki_of_certificate(cert)
        if spki is None:
            return None
        extensions = cert.extensions  # parses them all: a malformed extension fails here, not later
        is_ca = _is_ca(extensions)
        loaded = _Cert(
            cert=cert,
            der=der,
            spki=spki,
            subject=cert.subject,
            issuer=cert.issuer,
            not_before=cert.not_valid_before_utc,
            not_after=cert.not_valid_after_utc,
            is_ca=is_ca,
        )
        try:
            san = extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            loaded.dns_names = [n for n in san.get_values_for_type(x509.DNSName) if isinstance(n, str)]
        except x509.ExtensionNotFound:
            pass
        loaded.common_names = [
            a.value for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME) if isinstance(a.value, str)
        ]
        hash(loaded.subject), hash(loaded.issuer)  # force the lazy name parsing inside this try
    except Exception:  # noqa: BLE001 - hostile input: cryptography raises several error types for malformed DER
        return None
    return loaded


def _is_ca(extensions: x509.Extensions) -> bool:
    """basicConstraints cA=TRUE, and keyCertSign if keyUsage is present (RFC 5280 §4.2.1.3, §4.2.1.9)."""
    try:
        if not extensions.get_extension_for_class(x509.BasicConstraints).value.ca:
            return False
    except x509.ExtensionNotFound:
        return False
    try:
        return bool(extensions.get_extension_for_class(x509.KeyUsage).value.key_cert_sign)
    except x509.ExtensionNotFound:
        return True


def _matches(record: TlsaRecord, cert: _Cert) -> bool:
    selected = cert.selected(record.selector)
    return digest(record.mtype, selected) == record.data


# --- DANE-TA(2) ---------------------------------------------------------------------------------------------


@dataclass
class _DnsAnchor:
    """A trust anchor taken from a ``2 0 0`` (certificate) or ``2 1 0`` (public key) record (DANE-H-30/H-31)."""

    record: TlsaRecord
    key: object
    subject: x509.Name | None  # None for a bare key: no issuer-name check is possible
    cert: x509.Certificate | None = None  # the certificate of a ``2 0 0`` record


def _verify_ta(
    records: list[TlsaRecord], certs: list[_Cert], names: Sequence[str], now: _dt.datetime
) -> DaneResult | _Failure:
    # DANE-H-29: the trust anchor is a presented certificate matching a record; no system trust store. The leaf
    # counts as a trust anchor only if it is self-issued (then it is its own issuer; docs/dane.md).
    anchors: dict[int, TlsaRecord] = {}
    for index, cert in enumerate(certs):
        if index == 0 and not cert.self_issued():
            continue
        for record in records:
            if _matches(record, cert):
                anchors[index] = record
                break
    # DANE-H-30/H-31: only a full certificate or full public key can serve as an anchor absent from the chain.
    dns_anchors = []
    for record in records:
        if record.mtype != FULL:
            continue
        anchor = _dns_anchor(record)
        if anchor is not None:
            dns_anchors.append(anchor)
    if not anchors and not dns_anchors:
        return _Failure(
            0, VALIDATION_FAILURE,
            "no presented certificate matches a DANE-TA(2) record (a digest record needs the trust anchor in the "
            "chain, RFC 7671 §5.2.2)",
        )

    edges = _Edges(certs)
    found = _find_path(certs, anchors, dns_anchors, edges, lambda c: c.is_ca and _valid_at(c, now))
    if found is None:
        found = _find_path(certs, anchors, dns_anchors, edges, lambda c: True)
    if found is None:
        return _Failure(
            1, VALIDATION_FAILURE, "the chain does not lead from the server certificate to a DANE-TA(2) trust anchor"
        )
    path, record, depth = found

    # Validity of the leaf and every certificate below the trust anchor; the anchor's own dates are not checked.
    for position, index in enumerate(path):
        cert = certs[index]
        what = "server certificate" if index == 0 else f"intermediate certificate {index}"
        if now > cert.not_after:
            return _Failure(2, CERTIFICATE_EXPIRED, f"{what} expired on {cert.not_after.isoformat()}")
        if now < cert.not_before:
            return _Failure(2, VALIDATION_FAILURE, f"{what} is not valid before {cert.not_before.isoformat()}")
        if position > 0 and not cert.is_ca:
            return _Failure(1, VALIDATION_FAILURE, f"{what} is not a CA certificate")
    # DANE-H-32: name constraints of the trust anchor and of the intermediates below it.
    constraining = [certs[i].cert for i in path[1:]]
    if depth >= 0 and depth not in path:
        constraining.append(certs[depth].cert)
    elif depth == ANCHOR_FROM_DNS:
        anchor_cert = next((a.cert for a in dns_anchors if a.record == record and a.cert is not None), None)
        if anchor_cert is not None:
            constraining.append(anchor_cert)
    refused = _name_constraint_violation(certs[0], constraining)
    if refused:
        return _Failure(3, VALIDATION_FAILURE, refused)
    # DANE-H-33: names of the server certificate.
    if not _name_matches(certs[0], names):
        shown = ", ".join(names) if names else "(none given)"
        return _Failure(3, HOST_MISMATCH, f"server certificate matches none of the names {shown}")
    where = "a trust anchor from DNS" if depth == ANCHOR_FROM_DNS else f"chain certificate {depth}"
    return DaneResult(True, record, None, f"chain verified to {where} matching {describe(record)}", depth=depth)


def _dns_anchor(record: TlsaRecord) -> _DnsAnchor | None:
    try:
        if record.selector == SELECTOR_CERT:
            cert = x509.load_der_x509_certificate(record.data)
            return _DnsAnchor(record, cert.public_key(), cert.subject, cert)
        if record.selector == SELECTOR_SPKI:
            return _DnsAnchor(record, serialization.load_der_public_key(record.data), None)
    except Exception:  # noqa: BLE001 - unsupported key types and malformed data: not an anchor
        return None
    return None


class _Edges:
    """Which presented certificate issued which, computed lazily (at most MAX_CHAIN² signature checks)."""

    def __init__(self, certs: list[_Cert]) -> None:
        self.certs = certs
        self.cache: dict[tuple[int, int], bool] = {}
        self.keys: dict[int, object | None] = {}

    def key(self, index: int) -> object | None:
        if index not in self.keys:
            try:
                self.keys[index] = self.certs[index].cert.public_key()
            except Exception:  # noqa: BLE001 - unsupported key algorithm
                self.keys[index] = None
        return self.keys[index]

    def issued(self, child: int, parent: int) -> bool:
        if (child, parent) not in self.cache:
            ok = False
            if self.certs[child].issuer == self.certs[parent].subject:
                key = self.key(parent)
                ok = key is not None and _signed_by(self.certs[child].cert, key)
            self.cache[(child, parent)] = ok
        return self.cache[(child, parent)]


def _find_path(
    certs: list[_Cert],
    anchors: dict[int, TlsaRecord],
    dns_anchors: list[_DnsAnchor],
    edges: _Edges,
    may_pass: Callable[[_Cert], bool],
) -> tuple[list[int], TlsaRecord, int] | None:
    """Shortest path from the leaf to an anchor, through presented certificates accepted by *may_pass*.

    Returns ``(path, record, depth)``: *path* lists the chain indexes from the leaf up to, not including, the
    trust anchor (it is ``[0]`` when the self-issued leaf is the anchor itself).
    """
    if 0 in anchors:
        return [0], anchors[0], 0
    parents: dict[int, int | None] = {0: None}
    queue = deque([0])
    while queue:
        node = queue.popleft()
        path = _unwind(parents, node)
        for index, record in anchors.items():
            if index != 0 and index not in parents and edges.issued(node, index):
                return path, record, index
        for anchor in dns_anchors:
            if anchor.subject is not None and certs[node].issuer != anchor.subject:
                continue
            if _signed_by(certs[node].cert, anchor.key):
                return path, anchor.record, ANCHOR_FROM_DNS
        for index in range(1, len(certs)):
            if index in parents or index in anchors:
                continue
            if may_pass(certs[index]) and edges.issued(node, index):
                parents[index] = node
                queue.append(index)
    return None


def _unwind(parents: dict[int, int | None], node: int) -> list[int]:
    path = [node]
    while (parent := parents[path[-1]]) is not None:
        path.append(parent)
    return path[::-1]


def _signed_by(cert: x509.Certificate, key: object) -> bool:
    """Does *key* verify the signature on *cert*? Any error (wrong key type, unsupported algorithm) is ``False``."""
    try:
        signature = cert.signature
        tbs = cert.tbs_certificate_bytes
        if isinstance(key, rsa.RSAPublicKey):
            params = cert.signature_algorithm_parameters
            if not isinstance(params, (padding.PKCS1v15, padding.PSS)):
                return False
            algorithm = cert.signature_hash_algorithm
            if algorithm is None:
                return False
            key.verify(signature, tbs, params, algorithm)
        elif isinstance(key, ec.EllipticCurvePublicKey):
            params = cert.signature_algorithm_parameters
            if not isinstance(params, ec.ECDSA):
                return False
            key.verify(signature, tbs, params)
        elif isinstance(key, (ed25519.Ed25519PublicKey, ed448.Ed448PublicKey)):
            if cert.signature_algorithm_oid not in (
                x509.SignatureAlgorithmOID.ED25519, x509.SignatureAlgorithmOID.ED448
            ):
                return False
            key.verify(signature, tbs)
        elif isinstance(key, dsa.DSAPublicKey):
            algorithm = cert.signature_hash_algorithm
            if not isinstance(algorithm, hashes.HashAlgorithm):
                return False
            key.verify(signature, tbs, algorithm)
        else:
            return False
    except InvalidSignature:
        return False
    except Exception:  # noqa: BLE001 - hostile input: any failure means "not signed by this key"
        return False
    return True


def _valid_at(cert: _Cert, now: _dt.datetime) -> bool:
    return cert.not_before <= now <= cert.not_after


# --- name constraints (RFC 5280 §4.2.1.10 for dNSName, DANE-H-32) -------------------------------------------


def _within(name: str, base: str) -> bool:
    """RFC 5280 dNSName subtree: ``base`` itself and every name with labels added on the left; a leading dot
    (a common reading of the RFC) means the subdomains only; an empty base matches every name."""
    base = base.lower().rstrip(".")
    if not base:
        return True
    if base.startswith("."):
        return name.endswith(base)
    return name == base or name.endswith("." + base)


def _name_constraint_violation(leaf: _Cert, constraining: Sequence[x509.Certificate]) -> str | None:
    """The first DNS name of the server certificate that a CA's name constraints exclude or do not permit."""
    names = [_presented(n) for n in (leaf.dns_names or leaf.common_names) if n.isascii()]
    for ca in constraining:
        try:
            constraints = ca.extensions.get_extension_for_class(x509.NameConstraints).value
        except x509.ExtensionNotFound:
            continue
        except Exception:  # noqa: BLE001 - a malformed extension constrains everything
            return "a CA certificate has malformed name constraints"
        permitted = [s.value for s in constraints.permitted_subtrees or () if isinstance(s, x509.DNSName)]
        excluded = [s.value for s in constraints.excluded_subtrees or () if isinstance(s, x509.DNSName)]
        for name in names:
            bare = name.removeprefix("*.")  # a wildcard is judged by the names it can stand for
            if any(_within(bare, base) for base in excluded):
                return f"name {name} is excluded by the name constraints of {ca.subject.rfc4514_string()}"
            if permitted and not any(_within(bare, base) for base in permitted):
                return f"name {name} is not permitted by the name constraints of {ca.subject.rfc4514_string()}"
    return None


# --- names (RFC 6125 via RFC 7671 §10.2, DANE-H-33) -----------------------------------------------------------


def _reference(name: str) -> str | None:
    if not isinstance(name, str):
        return None
    try:
        return normalize_domain(name)
    except Exception:  # noqa: BLE001 - not a host name: it cannot match
        return None


def _presented(name: str) -> str:
    name = name.lower()
    return name.removesuffix(".")


def _name_matches(cert: _Cert, names: Sequence[str]) -> bool:
    """A dNSName SAN (or, only without any dNSName, a subject CN) matches one of *names*."""
    try:
        references = [ref for ref in (_reference(n) for n in names) if ref]
    except TypeError:
        return False
    presented = cert.dns_names or cert.common_names
    for pattern in presented:
        if not pattern.isascii():
            continue
        pattern = _presented(pattern)
        for reference in references:
            if _dns_match(pattern, reference):
                return True
    return False


def _dns_match(pattern: str, reference: str) -> bool:
    """Exact match, or ``*.rest`` matching exactly one left-most label; ``rest`` needs two labels or more."""
    if "*" not in pattern:
        return pattern == reference
    first, dot, rest = pattern.partition(".")
    if first != "*" or not dot or "*" in rest or rest.count(".") < 1:
        return False
    label, dot, ref_rest = reference.partition(".")
    return bool(label) and bool(dot) and ref_rest == rest
