"""DKIM verification of mailed reports (RFC 8460 §3: a report sent by mail MUST be DKIM-signed).

:func:`make_verifier` returns a function ``message bytes -> (status, signing domains)`` with status

- ``pass``: at least one signature verifies (its ``d=`` domains are returned, passing ones only);
- ``fail``: signatures are present and none verifies (bad body hash, bad signature, key missing...);
- ``temperror``: a key could not be looked up (DNS timeout); the report is still stored, so a later run is
  not needed to keep it, and ``--require-dkim`` rejects it like a failure;
- ``none``: the message carries no ``DKIM-Signature``.

Keys are looked up with dnspython at the given resolvers (or ``/etc/resolv.conf``). Signatures whose key
record says ``s=tlsrpt``, ``s=email`` or ``s=*`` are accepted (dkimpy's ``tlsrpt=True`` mode).
"""

from __future__ import annotations

import logging
from typing import Callable, Sequence

import dns.exception
import dns.rdatatype
import dns.resolver

from ..errors import ConfigError
from ..net.dns import parse_nameserver

#: Signatures checked per message at most (a hostile message can carry thousands).
MAX_SIGNATURES = 5
_log = logging.getLogger("mxsec.reports.dkim")
_log.addHandler(logging.NullHandler())  # dkimpy logs every bad signature at ERROR


class _LookupFailed(Exception):
    pass


def make_resolver(nameservers: Sequence[str], timeout: float = 5.0) -> dns.resolver.Resolver:
    if nameservers:
        resolver = dns.resolver.Resolver(configure=False)
        addresses: list[str] = []
        ports: set[int] = set()
        for text in nameservers:
            try:
                address, port = parse_nameserver(text)
            except ValueError as exc:
                raise ConfigError(str(exc)) from None
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
            raise _LookupFailed(str(exc)) from None
        except dns.exception.DNSException:
            return None
        for rrset in answer.response.answer:
            if rrset.rdtype == dns.rdatatype.TXT:
                return b"".join(next(iter(rrset)).strings)
        return None

    return lookup


def verify(data: bytes, dnsfunc: Callable[..., bytes | None]) -> tuple[str, tuple[str, ...]]:
    import dkim

    try:
        checker = dkim.DKIM(data, logger=_log, tlsrpt=True)
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
        except _LookupFailed:
            temporary = True
        except Exception:  # noqa: BLE001 - a bad signature is a failed verification, whatever raised
            continue
    if passed:
        return "pass", tuple(passed)
    return ("temperror" if temporary else "fail"), ()


def make_verifier(nameservers: Sequence[str] = (), timeout: float = 5.0) -> Callable[[bytes], tuple[str, tuple[str, ...]]]:
    """A verifier for :class:`mxsec.reports.inputs.Options` (the resolver is made once)."""
    lookup = txt_lookup(make_resolver(nameservers, timeout))
    return lambda data: verify(data, lookup)
