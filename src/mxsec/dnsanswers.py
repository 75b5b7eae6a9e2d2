"""DNS answers as facts: what a lookup said, with its DNSSEC state. Pure data, no I/O.

The DNS adapter (:mod:`mxsec.net.dns`) returns these; the core's rules (:mod:`mxsec.dane`, the checker's rules)
read them, and tests build them by hand. ``status`` is one of :data:`OK`, :data:`NXDOMAIN`, :data:`NODATA` and
:data:`ERROR`; "error" (SERVFAIL — which includes DNSSEC-bogus answers —, timeout, REFUSED, a malformed
response, a bad name) is deliberately distinct from "no records", because a sender must not take a broken
resolver for proof that a domain has no policy. ``secure`` is the validating resolver's verdict (the AD bit)
for the answer or for the denial of existence.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final, Literal

__all__ = ["ERROR", "NODATA", "NXDOMAIN", "OK", "AddressAnswer", "DnsStatus", "FamilyAnswer", "RRAnswer",
           "TxtAnswer"]

#: what a lookup found: records, no such name, the name but no records of the type, or no usable answer
DnsStatus = Literal["ok", "nxdomain", "nodata", "error"]
OK: Final = "ok"
NXDOMAIN: Final = "nxdomain"
NODATA: Final = "nodata"
ERROR: Final = "error"


@dataclass(frozen=True)
class TxtAnswer:
    status: str
    records: tuple[str, ...] = ()
    error: str | None = None
    secure: bool = False
    ttl: int | None = None

    @property
    def ok(self) -> bool:
        return self.status == OK


@dataclass(frozen=True)
class FamilyAnswer:
    """One address family's part of an :class:`AddressAnswer` (``rdtype`` is ``"A"`` or ``"AAAA"``)."""

    rdtype: str
    status: str
    secure: bool = False
    error: str | None = None


@dataclass(frozen=True)
class AddressAnswer:
    """A and AAAA together. ``secure``: every family that answered (records or denial) was DNSSEC-secure —
    a family whose lookup failed does not count (EC-30: DANE goes ahead over the family that validated);
    ``families`` keeps each family's own verdict; ``canonical`` is the name after CNAME expansion."""

    status: str
    addresses: tuple[str, ...] = ()
    error: str | None = None
    secure: bool = False
    canonical: str | None = None
    families: tuple[FamilyAnswer, ...] = ()
    ttl: int | None = None

    @property
    def ok(self) -> bool:
        return self.status == OK


@dataclass(frozen=True)
class RRAnswer:
    """One RRset with its DNSSEC state.

    ``secure`` is the validating resolver's verdict (AD bit) for the answer or for the denial of existence;
    ``canonical`` is the owner name after CNAME expansion (equal to the query name without CNAMEs); ``ttl``
    is the RRset's TTL (``None`` for denials and errors). ``status`` as elsewhere: ``ok``, ``nxdomain``,
    ``nodata`` or ``error`` (SERVFAIL — which includes DNSSEC-bogus answers —, timeout, REFUSED...).
    """

    status: str
    records: tuple[Any, ...] = ()
    secure: bool = False
    ttl: int | None = None
    error: str | None = None
    canonical: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == OK
