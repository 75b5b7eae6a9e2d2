"""Build the adapters a configuration describes: the resolver client, the SSRF guard, the policy fetcher.

Shared by the daemon (``mxsec.daemon.app``) and the command-line tools (``mxsec check``, ``mxsec dane``,
``mxsec tlsrpt``), so that every front-end reads ``[dns]``, ``[net]``, ``[https]`` and ``[tls]`` the same way.
"""

from __future__ import annotations

from ..errors import ConfigError
from ..net.dns import DnsClient, DnsSettings
from .values import parse_nameserver
from ..net.guard import AddressGuard
from ..net.https import HttpsSettings, PolicyFetcher
from .schema import Config


def make_dns_and_guard(config: Config) -> tuple[DnsClient, AddressGuard]:
    """The resolver client and the SSRF guard from the configuration (one-line ConfigError on bad values)."""
    try:
        nameservers = [parse_nameserver(n) for n in config.dns.nameservers]
    except ValueError as exc:
        raise ConfigError(f"dns.nameservers: {exc}") from None
    try:
        guard = AddressGuard(config.net.allow_addresses)
    except ValueError as exc:
        raise ConfigError(f"net.allow_addresses: {exc}") from None
    return DnsClient(DnsSettings(nameservers=nameservers, timeout=config.dns.timeout)), guard


def make_adapters(config: Config, guard: AddressGuard | None = None) -> tuple[DnsClient, PolicyFetcher]:
    """``(dns, fetcher)``; pass ``guard`` to share one guard with other adapters (the checker's SMTP probes)."""
    dns, own_guard = make_dns_and_guard(config)
    if config.tls.ca_file is not None:
        try:
            with open(config.tls.ca_file, "rb"):
                pass
        except OSError as exc:
            raise ConfigError(f"tls.ca_file: cannot read {config.tls.ca_file}: {exc.strerror}") from None
    fetcher = PolicyFetcher(
        HttpsSettings(timeout=config.https.timeout, ca_file=config.tls.ca_file, max_body=config.https.max_body),
        dns,
        guard if guard is not None else own_guard,
    )
    return dns, fetcher
