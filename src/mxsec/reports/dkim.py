"""DKIM verification of mailed reports (RFC 8460 §3: a report sent by mail MUST be DKIM-signed).

:func:`make_verifier` returns a function ``message bytes -> (status, signing domains)`` with status

- ``pass``: at least one signature verifies (its ``d=`` domains are returned, passing ones only);
- ``fail``: signatures are present and none verifies (bad body hash, bad signature, key missing...);
- ``temperror``: a key could not be looked up (DNS timeout); the report is still stored, so a later run is
  not needed to keep it, and ``--require-dkim`` rejects it like a failure;
- ``none``: the message carries no ``DKIM-Signature``.

Keys are looked up with dnspython at the given resolvers (or ``/etc/resolv.conf``). A key record's ``s=``
is a colon-separated list of service types (RFC 6376 §3.6.1): keys for ``tlsrpt`` (RFC 8460 §3), ``email``
or ``*`` are used, others are not; a missing ``s=`` means ``*``. An empty ``p=`` is a revoked key.

dkimpy parses messages, canonicalises and checks RSA signatures; the key record is read here, and
``ed25519-sha256`` signatures (RFC 8463) are checked with ``cryptography`` (a dependency anyway), so PyNaCl,
which dkimpy would need for them, is not required.
"""

from __future__ import annotations

import base64
import binascii
import logging
from collections.abc import Callable, Sequence
from typing import Any

import dns.exception
import dns.rdatatype
import dns.resolver

from ..errors import ConfigError
from ..config.values import parse_nameserver
from ..extras import require

#: Signatures checked per message at most (a hostile message can carry thousands).
MAX_SIGNATURES = 5
_log = logging.getLogger("mxsec.reports.dkim")
_log.addHandler(logging.NullHandler())  # dkimpy logs every bad signature at ERROR


class KeyLookupFailed(Exception):
    """Raised by a ``dnsfunc`` when a key could not be looked up for now (timeout, SERVFAIL): ``temperror``."""


_LookupFailed = KeyLookupFailed  # the earlier name


def make_resolver(nameservers: Sequence[str], timeout: float = 5.0) -> dns.resolver.Resolver:
    if nameservers:
        resolver = dns.resolver.Resolver(configure=False)
        addresses: list[str] = []
        ports: set[int] = set()
        for text in nameservers:
            address, port = parse_nameserver(text)
            addresses.append(address)
            ports.add(port)
        if len(ports) > 1:
            raise ConfigError("--nameserver: all resolvers must use the same port")
        resolver.nameservers = addresses
        resolver.port = ports.pop()
    else:
        try:
            resolver = dns.resolver.Resolver()
        except dns.resolver.NoResolverConfiguration:
            raise ConfigError("no resolver configured (/etc/resolv.conf); give --nameserver") from None
    resolver.lifetime = timeout
    resolver.timeout = timeout
    return resolver


def txt_lookup(resolver: dns.resolver.Resolver) -> Callable[..., bytes | None]:
    """The ``dnsfunc`` dkimpy calls for ``selector._domainkey.domain``: the joined strings of the first TXT
    record, ``None`` when there is none; a timeout or server failure raises (``temperror``)."""

    def lookup(name: bytes | str, timeout: float = 5) -> bytes | None:
        text = name.decode("ascii", "replace") if isinstance(name, bytes) else name
        try:
            answer = resolver.resolve(text, dns.rdatatype.TXT, raise_on_no_answer=False, search=False)
        except dns.resolver.NXDOMAIN:
            return None
        except (dns.exception.Timeout, dns.resolver.NoNameservers) as exc:
            raise KeyLookupFailed(str(exc)) from None
        except dns.exception.DNSException:
            return None
        for rrset in answer.response.answer:
            if rrset.rdtype == dns.rdatatype.TXT:
                return b"".join(next(iter(rrset)).strings)
        return None

    return lookup


class _Ed25519Key:
    """Stands in for the PyNaCl key dkimpy would use: ``verify(digest, signature)`` records the outcome
    instead of raising (dkimpy's own handler for a bad signature names PyNaCl's exception class)."""

    def __init__(self, raw: bytes) -> None:
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

        self.key = Ed25519PublicKey.from_public_bytes(raw)
        self.valid = False

    def verify(self, message: bytes, signature: bytes) -> None:
        from cryptography.exceptions import InvalidSignature

        try:
            self.key.verify(signature, message)
            self.valid = True
        except InvalidSignature:
            self.valid = False


def _key_usable(record: bytes | None) -> tuple[dict[bytes, bytes], bool] | None:
    """The tags of a key record and whether it names ``tlsrpt``; ``None`` when it cannot be used for mail."""
    from dkim.util import InvalidTagValueList, parse_tag_value

    if not record:
        return None
    try:
        tags = parse_tag_value(record)
    except (InvalidTagValueList, ValueError):
        return None
    if tags.get(b"v", b"DKIM1") != b"DKIM1" or not tags.get(b"p"):
        return None  # another version, or revoked (empty p=)
    services = {value.strip().lower() for value in tags.get(b"s", b"*").split(b":")}
    if not services & {b"*", b"email", b"tlsrpt"}:
        return None
    return tags, b"tlsrpt" in services


def _checker_class() -> type:
    require("dkim", "reports", "DKIM verification of mailed reports (--no-dkim goes without)")
    import dkim

    class Checker(dkim.DKIM):
        """dkimpy's verifier with the key record read here (service lists, ed25519 without PyNaCl)."""

        def verify_sig(self, sig: dict, include_headers: list, sig_header: Any, dnsfunc: Callable) -> bool:
            name = sig[b"s"] + b"._domainkey." + sig[b"d"] + b"."
            usable = _key_usable(dnsfunc(name, timeout=self.timeout))  # KeyLookupFailed goes up: temperror
            if usable is None:
                return False
            tags, self.seqtlsrpt = usable
            kind = tags.get(b"k", b"rsa").lower()
            if kind == b"ed25519":
                try:
                    raw = base64.b64decode(tags[b"p"])
                    self.pk, self.keysize, self.ktag = _Ed25519Key(raw), 256, b"ed25519"
                except (binascii.Error, ValueError):
                    return False
                return bool(self.verify_sig_process(sig, include_headers, sig_header, dnsfunc)) and self.pk.valid
            if kind != b"rsa":
                return False
            record = b"; ".join(k + b"=" + v for k, v in tags.items() if k != b"s")
            try:
                self.pk, self.keysize, self.ktag, _service = dkim.evaluate_pk(name, record)
            except (dkim.KeyFormatError, binascii.Error, ValueError):
                return False
            return bool(self.verify_sig_process(sig, include_headers, sig_header, dnsfunc))

    return Checker


_CHECKER: type | None = None


def verify(data: bytes, dnsfunc: Callable[..., bytes | None]) -> tuple[str, tuple[str, ...]]:
    """``(status, passing signing domains)`` of one message; *dnsfunc* ``(name, timeout=) -> TXT bytes or
    None`` finds the keys and raises to signal a temporary failure (``temperror``)."""
    global _CHECKER
    if _CHECKER is None:
        _CHECKER = _checker_class()
    try:
        checker = _CHECKER(data, logger=_log, tlsrpt=True)
        signatures = [i for i, (name, _value) in enumerate(checker.headers) if name.lower() == b"dkim-signature"]
    except Exception:  # noqa: BLE001 - dkimpy raises many types on malformed messages
        return "fail", ()
    if not signatures:
        return "none", ()
    passed: list[str] = []
    temporary = False
    for index in range(min(len(signatures), MAX_SIGNATURES)):
        try:
            if checker.verify(idx=index, dnsfunc=dnsfunc):
                domain = checker.domain.decode("ascii", "replace").lower() if checker.domain else ""
                if domain and domain not in passed:
                    passed.append(domain)
        except KeyLookupFailed:
            temporary = True
        except Exception:  # noqa: BLE001, S112 - a bad signature is a failed verification, whatever raised
            continue
    if passed:
        return "pass", tuple(passed)
    return ("temperror" if temporary else "fail"), ()


def make_verifier(nameservers: Sequence[str] = (),
                  timeout: float = 5.0) -> Callable[[bytes], tuple[str, tuple[str, ...]]]:
    """A verifier for :class:`mxsec.reports.inputs.Options` (the resolver is made once)."""
    lookup = txt_lookup(make_resolver(nameservers, timeout))
    return lambda data: verify(data, lookup)
