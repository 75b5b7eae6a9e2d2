"""What the policy service needs of its adapters, as Protocols: the daemon composes real ones, tests fakes.

- :class:`ServiceDns`: TXT look-ups for MTA-STS plus the DANE look-ups of :class:`mxsec.dane.gather.Resolver`
  (:class:`mxsec.net.dns.DnsClient` in the daemon);
- :class:`PolicySource`: fetching a domain's policy file over HTTPS (:class:`mxsec.net.https.PolicyFetcher`);
- :class:`~mxsec.storage.base.PolicyStore`: the policy cache (:mod:`mxsec.storage`).

Answers are the core's facts (:mod:`mxsec.dnsanswers`, :class:`mxsec.sts.fetch.FetchOutcome`), so a fake
builds the same values the real adapter returns. ``tests/unit/test_service_ports.py`` checks that the real
adapters and the unit tests' fakes both have every method these Protocols list, with compatible signatures.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from mxsec.dane.gather import Resolver
from mxsec.dnsanswers import TxtAnswer
from mxsec.storage.base import PolicyStore
from mxsec.sts.fetch import FetchOutcome

__all__ = ["PolicySource", "PolicyStore", "ServiceDns"]


@runtime_checkable
class ServiceDns(Resolver, Protocol):
    """The look-ups of the service: the ``_mta-sts`` TXT record and everything DANE asks."""

    async def txt(self, name: str, /) -> TxtAnswer: ...


@runtime_checkable
class PolicySource(Protocol):
    """Where policy files come from (RFC 8461 §3.3)."""

    async def fetch(self, domain: str, /) -> FetchOutcome: ...

    async def aclose(self) -> None: ...
