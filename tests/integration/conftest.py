"""Shared fixtures for integration tests: a FakeWorld (DNS + HTTPS on 127.0.80.x) and clients pointed at it.

Reuse:

* ``fake_world`` (session): one running world in a background thread; tests add their OWN domains to it
  (use ``unique_domain("prefix")``) so they never disturb each other; compare stats per name, never totals.
* ``running_world(domains={...}, **world_kwargs)``: a context manager for a private world (e.g. when a test
  needs its own HTTPS port or wants to stop the world); ``domains`` uses the spec format of
  :mod:`mxsec.testing.fakeworld` (``{"example.test": {"txt": [...], "policy": {...}}}``).
* ``dns_settings_for(world)``, ``https_settings_for(world)``, ``loopback_guard()``: the settings that point
  mxsec at a world (custom nameserver, world port, the world's CA as ``ca_file``, 127/8 allowed).
* ``make_fetcher`` (async, function scope): ``make_fetcher(**https_overrides)`` -> a ``PolicyFetcher`` on
  ``fake_world``, closed after the test.

Addresses: 127.0.80.1 (DNS, port 0) and 127.0.80.2 (HTTPS, port 0) for the session world; private worlds
take 127.0.80.10 and up. Ports are picked by the kernel, so concurrent test runs do not collide.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import AsyncIterator, Iterator, Mapping
from typing import Any

import pytest

from mxsec.testing.fakeworld import FakeWorld, WorldThread
from mxsec.net.dns import DnsClient, DnsSettings
from mxsec.net.guard import AddressGuard

SESSION_DNS_IP = "127.0.80.1"
SESSION_HTTPS_IP = "127.0.80.2"
UNUSED_IP = "127.0.80.3"  # nothing listens here: connections are refused
PRIVATE_IPS = itertools.count(10)

_names = itertools.count(1)


def unique_domain(prefix: str = "d") -> str:
    """A domain no other test in this session uses (``prefix-N.test``)."""
    return f"{prefix}-{next(_names)}.test"


def dns_settings_for(world: FakeWorld, timeout: float = 2.0) -> DnsSettings:
    return DnsSettings(nameservers=[world.dns_address], timeout=timeout)


def https_settings_for(world: FakeWorld, **overrides: Any) -> Any:
    from mxsec.net.https import HttpsSettings

    values: dict[str, Any] = {"timeout": 5.0, "ca_file": str(world.ca_file), "port": world.https_address[1]}
    values.update(overrides)
    return HttpsSettings(**values)


def loopback_guard() -> AddressGuard:
    return AddressGuard(allow=["127.0.0.0/8"])


@contextlib.contextmanager
def running_world(
    domains: Mapping[str, Mapping[str, Any]] | None = None,
    *,
    dns_ip: str | None = None,
    https_ip: str | None = None,
    https_port: int = 0,
    **world_kwargs: Any,
) -> Iterator[FakeWorld]:
    """Start a private FakeWorld in a background thread; stop it (and remove its files) afterwards."""
    if dns_ip is None:
        dns_ip = f"127.0.80.{next(PRIVATE_IPS)}"
    if https_ip is None:
        https_ip = f"127.0.80.{next(PRIVATE_IPS)}"
    world = FakeWorld(dns=(dns_ip, 0), https=(https_ip, https_port), **world_kwargs)
    if domains:
        world.load_spec({"domains": dict(domains)})
    with WorldThread(world) as started:
        yield started


@pytest.fixture(scope="session")
def fake_world() -> Iterator[FakeWorld]:
    with running_world(dns_ip=SESSION_DNS_IP, https_ip=SESSION_HTTPS_IP) as world:
        yield world


@pytest.fixture
def dns_client(fake_world: FakeWorld) -> DnsClient:
    return DnsClient(dns_settings_for(fake_world))


@pytest.fixture
async def make_fetcher(fake_world: FakeWorld) -> AsyncIterator[Any]:
    from mxsec.net.https import PolicyFetcher

    created: list[PolicyFetcher] = []

    def factory(*, guard: AddressGuard | None = None, dns: DnsClient | None = None, **overrides: Any) -> Any:
        fetcher = PolicyFetcher(
            https_settings_for(fake_world, **overrides),
            dns if dns is not None else DnsClient(dns_settings_for(fake_world)),
            guard if guard is not None else loopback_guard(),
        )
        created.append(fetcher)
        return fetcher

    yield factory
    for fetcher in created:
        await fetcher.aclose()
