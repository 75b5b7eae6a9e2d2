"""Throw-away certificate authorities for tests, the demo and benchmarks.

Nothing here is meant for production use: keys are ECDSA P-256 (quick to make and to sign with) and live in
memory; :meth:`TestCA.issue` reuses one leaf key for every certificate it signs, so issuing a thousand leaf
certificates takes well under two seconds.

    ca = TestCA("mxsec fake root")
    cert_pem, key_pem = ca.issue(["mta-sts.example.test"])                     # valid
    ca.issue(["mta-sts.example.test"], not_after=past)                         # expired
    ca.issue(["mta-sts.example.test"], not_before=future)                      # not yet valid
    ca.issue(["mta-sts.other.test"])                                           # wrong name
    TestCA("untrusted").issue(["mta-sts.example.test"])                        # chains to an untrusted root
    self_signed(["mta-sts.example.test"])                                      # self-signed leaf
    ca.issue([], common_name="mta-sts.example.test")                           # CN only, no SAN
    sub = ca.intermediate("issuing CA"); sub.issue(["mx.example.test"])       # leaf under an intermediate
    ca.issue(["mx.example.test"], fresh_key=True)                              # leaf with its own new key

Names that parse as IP addresses become iPAddress SANs, the rest dNSName SANs.
"""

from __future__ import annotations

import datetime as _dt
import ipaddress
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from mxsec.fsutil import make_dirs

__all__ = [
    "TestCA",
    "new_key",
    "key_to_pem",
    "pem_to_der",
    "self_signed",
    "write_pem",
]

_ONE_DAY = _dt.timedelta(days=1)


def _now() -> _dt.datetime:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0)


def new_key() -> ec.EllipticCurvePrivateKey:
    """A fresh ECDSA P-256 private key."""
    return ec.generate_private_key(ec.SECP256R1())


def key_to_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    """PKCS#8 PEM, unencrypted."""
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def write_pem(path: str | os.PathLike[str], *pems: bytes) -> Path:
    """Write one or more PEM blobs (concatenated) to ``path`` atomically; returns the path."""
    target = Path(path)
    make_dirs(target.parent, 0o755)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as handle:
        for pem in pems:
            handle.write(pem if pem.endswith(b"\n") else pem + b"\n")
    os.replace(tmp, target)
    return target


def _general_names(names: Iterable[str]) -> list[x509.GeneralName]:
    result: list[x509.GeneralName] = []
    for name in names:
        try:
            result.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            result.append(x509.DNSName(name))
    return result


def _subject(common_name: str | None) -> x509.Name:
    if not common_name:
        return x509.Name([])
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name[:64])])


def _leaf_builder(
    names: Sequence[str],
    public_key: ec.EllipticCurvePublicKey,
    issuer: x509.Name,
    *,
    not_before: _dt.datetime | None,
    not_after: _dt.datetime | None,
    common_name: str | None,
    server: bool,
    client: bool,
) -> x509.CertificateBuilder:
    start = not_before if not_before is not None else _now() - _ONE_DAY
    end = not_after if not_after is not None else max(start, _now()) + _dt.timedelta(days=30)
    if common_name is None and names:
        common_name = names[0]
    usages = []
    if server:
        usages.append(ExtendedKeyUsageOID.SERVER_AUTH)
    if client:
        usages.append(ExtendedKeyUsageOID.CLIENT_AUTH)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_subject(common_name))
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(ca=False), critical=True)
    )
    if usages:
        builder = builder.add_extension(x509.ExtendedKeyUsage(usages), critical=False)
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(_general_names(names)), critical=False)
    return builder



def _key_usage(*, ca: bool) -> x509.KeyUsage:
    """digitalSignature for every certificate; keyCertSign and cRLSign for a CA."""
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )

class TestCA:
    """A throw-away root CA (ECDSA P-256) that issues leaf certificates quickly.

    ``cert_pem`` / ``key_pem`` are the root's PEM. ``leaf_key`` is the one key pair shared by every leaf this
    CA issues unless ``key=`` is given; ``leaf_key_pem`` is its PEM.
    """

    __test__ = False  # not a pytest test class

    def __init__(self, common_name: str = "mxsec throw-away root CA", *, valid_days: int = 3650) -> None:
        self.common_name = common_name
        self.key = new_key()
        name = _subject(common_name)
        start = _now() - _ONE_DAY
        public = self.key.public_key()
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(public)
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(start + _dt.timedelta(days=valid_days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(_key_usage(ca=True), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
            .sign(self.key, hashes.SHA256())
        )
        self.parent: TestCA | None = None
        self._finish()

    def _finish(self) -> None:
        public = self.key.public_key()
        self.cert_pem: bytes = self.cert.public_bytes(serialization.Encoding.PEM)
        self.key_pem: bytes = key_to_pem(self.key)
        self._aki = x509.AuthorityKeyIdentifier.from_issuer_public_key(public)
        self.leaf_key = new_key()
        self.leaf_key_pem: bytes = key_to_pem(self.leaf_key)

    def issue(
        self,
        names: Sequence[str],
        *,
        not_before: _dt.datetime | None = None,
        not_after: _dt.datetime | None = None,
        key: ec.EllipticCurvePrivateKey | None = None,
        common_name: str | None = None,
        server: bool = True,
        client: bool = False,
        fresh_key: bool = False,
    ) -> tuple[bytes, bytes]:
        """Issue a leaf certificate for ``names``; returns ``(cert_pem, key_pem)``.

        Defaults: valid from yesterday for 30 days, CN = first name, SANs = all names, EKU serverAuth.
        ``key`` defaults to the CA's shared ``leaf_key``; ``fresh_key=True`` makes a new key for this leaf.
        """
        if key is None and fresh_key:
            key = new_key()
        leaf_key = key if key is not None else self.leaf_key
        builder = _leaf_builder(
            names,
            leaf_key.public_key(),
            self.cert.subject,
            not_before=not_before,
            not_after=not_after,
            common_name=common_name,
            server=server,
            client=client,
        ).add_extension(self._aki, critical=False)
        cert = builder.sign(self.key, hashes.SHA256())
        key_pem = self.leaf_key_pem if key is None else key_to_pem(leaf_key)
        return cert.public_bytes(serialization.Encoding.PEM), key_pem

    def intermediate(
        self,
        common_name: str = "mxsec throw-away intermediate CA",
        *,
        not_before: _dt.datetime | None = None,
        not_after: _dt.datetime | None = None,
        ca: bool = True,
        permitted: list[str] | None = None,
        excluded: list[str] | None = None,
    ) -> TestCA:
        """A new CA (own fresh key) whose certificate this CA signs; it issues leaves like a root does.

        Defaults: valid from yesterday for 5 years. ``ca=False`` leaves out the CA flag and keyCertSign (a
        broken "intermediate", for negative tests). ``permitted``/``excluded`` add a critical name-constraints
        extension with those dNSName subtrees. :meth:`chain_der` gives the CA certificates up to the root.
        """
        child = TestCA.__new__(TestCA)
        child.common_name = common_name
        child.key = new_key()
        public = child.key.public_key()
        start = not_before if not_before is not None else _now() - _ONE_DAY
        end = not_after if not_after is not None else max(start, _now()) + _dt.timedelta(days=5 * 365)
        builder = (
            x509.CertificateBuilder()
            .subject_name(_subject(common_name))
            .issuer_name(self.cert.subject)
            .public_key(public)
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
            .add_extension(_key_usage(ca=ca), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
            .add_extension(self._aki, critical=False)
        )
        if permitted is not None or excluded is not None:
            builder = builder.add_extension(x509.NameConstraints(
                [x509.DNSName(n) for n in permitted] if permitted is not None else None,
                [x509.DNSName(n) for n in excluded] if excluded is not None else None), critical=True)
        child.cert = builder.sign(self.key, hashes.SHA256())
        child.parent = self
        child._finish()
        return child

    @property
    def cert_der(self) -> bytes:
        """This CA's certificate, DER."""
        return self.cert.public_bytes(serialization.Encoding.DER)

    def chain_der(self, *, include_root: bool = True) -> list[bytes]:
        """DER certificates from this CA up to its root (the root last, left out if ``include_root=False``)."""
        result = []
        ca: TestCA | None = self
        while ca is not None:
            if ca.parent is not None or include_root:
                result.append(ca.cert_der)
            ca = ca.parent
        return result

    def expired(self, names: Sequence[str]) -> tuple[bytes, bytes]:
        """A certificate whose validity ended yesterday."""
        now = _now()
        return self.issue(names, not_before=now - _dt.timedelta(days=30), not_after=now - _ONE_DAY)

    def not_yet_valid(self, names: Sequence[str]) -> tuple[bytes, bytes]:
        """A certificate valid only from tomorrow on."""
        now = _now()
        return self.issue(names, not_before=now + _ONE_DAY, not_after=now + _dt.timedelta(days=30))

    def write(self, path: str | os.PathLike[str]) -> Path:
        """Write the root certificate PEM (the trust anchor) to ``path``."""
        return write_pem(path, self.cert_pem)


def pem_to_der(pem: bytes) -> bytes:
    """The DER form of one PEM certificate (``issue()`` and ``self_signed()`` return PEM)."""
    return x509.load_pem_x509_certificate(pem).public_bytes(serialization.Encoding.DER)


_SELF_SIGNED_KEY: ec.EllipticCurvePrivateKey | None = None


def self_signed(
    names: Sequence[str],
    *,
    key: ec.EllipticCurvePrivateKey | None = None,
    not_before: _dt.datetime | None = None,
    not_after: _dt.datetime | None = None,
) -> tuple[bytes, bytes]:
    """A self-signed leaf certificate (not a CA) for ``names``; returns ``(cert_pem, key_pem)``."""
    global _SELF_SIGNED_KEY
    if key is None:
        if _SELF_SIGNED_KEY is None:
            _SELF_SIGNED_KEY = new_key()
        key = _SELF_SIGNED_KEY
    subject = _subject(names[0] if names else "self-signed")
    cert = _leaf_builder(
        names,
        key.public_key(),
        subject,
        not_before=not_before,
        not_after=not_after,
        common_name=None,
        server=True,
        client=False,
    ).sign(key, hashes.SHA256())
    return cert.public_bytes(serialization.Encoding.PEM), key_to_pem(key)
