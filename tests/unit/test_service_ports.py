"""The policy service's adapters are typed Protocols (mxsec.daemon.ports); the real adapters and the unit tests'
fakes both provide every method those Protocols list, async where the Protocol is async, and callable with the
arguments the Protocol allows (no more required, no fewer accepted)."""

import inspect

import pytest

from mxsec.daemon.ports import PolicySource, PolicyStore, ServiceDns
from mxsec.net.dns import DnsClient
from mxsec.net.https import PolicyFetcher
from mxsec.storage.base import FleetStore
from mxsec.storage.memory import MemoryStore
from mxsec.storage.postgres import PostgresStore
from mxsec.storage.redis import RedisStore
from mxsec.storage.sqlite import SqliteStore
from mxsec.testing.fleetstore import SharedMemoryStore

from .test_dane_destination import ScriptedDns
from .test_service import BrokenStore, FakeDns, FakeFetcher, SlowDns


def protocol_methods(protocol: type) -> list[str]:
    return sorted(name for name in dir(protocol)
                  if not name.startswith("_") and inspect.isfunction(getattr(protocol, name)))


def positional(fn) -> tuple[int, int, bool]:
    """(required, accepted, takes *args) positional parameters of ``fn``, ``self`` left out."""
    params = list(inspect.signature(fn).parameters.values())[1:]
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    plain = [p for p in params if p.kind in kinds]
    required = sum(1 for p in plain if p.default is inspect.Parameter.empty)
    return required, len(plain), any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in params)


def assert_conforms(implementation: type, protocol: type) -> None:
    for name in protocol_methods(protocol):
        assert hasattr(implementation, name), f"{implementation.__name__} has no {name}()"
        want, got = getattr(protocol, name), getattr(implementation, name)
        assert inspect.iscoroutinefunction(got) == inspect.iscoroutinefunction(want), \
            f"{implementation.__name__}.{name}: async differs from {protocol.__name__}"
        want_required, want_accepted, _ = positional(want)
        got_required, got_accepted, star = positional(got)
        assert got_required <= want_required, f"{implementation.__name__}.{name} requires more arguments"
        assert star or got_accepted >= want_accepted, f"{implementation.__name__}.{name} accepts fewer arguments"


CASES = [
    (DnsClient, ServiceDns), (FakeDns, ServiceDns), (SlowDns, ServiceDns),
    (PolicyFetcher, PolicySource), (FakeFetcher, PolicySource),
    (MemoryStore, PolicyStore), (SqliteStore, PolicyStore), (RedisStore, PolicyStore),
    (PostgresStore, PolicyStore), (BrokenStore, PolicyStore),
]


def test_the_protocols_list_what_the_service_calls():
    assert protocol_methods(ServiceDns) == ["addresses", "lookup", "mx", "tlsa", "txt"]
    assert protocol_methods(PolicySource) == ["aclose", "fetch"]
    assert protocol_methods(PolicyStore) == ["close", "delete", "get", "load_all", "put", "put_many"]


@pytest.mark.parametrize(("implementation", "protocol"), CASES, ids=lambda c: c.__name__)
def test_adapters_and_fakes_conform(implementation, protocol):
    assert_conforms(implementation, protocol)


@pytest.mark.parametrize("implementation", [RedisStore, PostgresStore, SharedMemoryStore], ids=lambda c: c.__name__)
def test_the_shared_stores_and_their_fake_conform_to_the_fleet_protocol(implementation):
    assert_conforms(implementation, FleetStore)
    assert protocol_methods(FleetStore) == ["announce", "claim", "listen", "publish", "release"]


def test_the_dane_fake_conforms_to_the_dane_part():
    from mxsec.dane.gather import Resolver

    assert_conforms(ScriptedDns, Resolver)


def test_a_fake_missing_a_method_is_caught():
    class NoTxt:
        async def mx(self, name): ...
        async def addresses(self, name): ...
        async def lookup(self, name, rdtype): ...
        async def tlsa(self, host, port=25): ...

    with pytest.raises(AssertionError, match="no txt"):
        assert_conforms(NoTxt, ServiceDns)
    assert not isinstance(NoTxt(), ServiceDns)
    assert isinstance(FakeDns(), ServiceDns) and isinstance(FakeFetcher(), PolicySource)


def test_a_sync_method_where_async_is_needed_is_caught():
    class SyncFetcher:
        def fetch(self, domain): ...
        async def aclose(self): ...

    with pytest.raises(AssertionError, match="async differs"):
        assert_conforms(SyncFetcher, PolicySource)


def test_a_method_needing_more_arguments_is_caught():
    class GreedyStore(MemoryStore):
        def get(self, domain, when):
            return None

    with pytest.raises(AssertionError, match="requires more"):
        assert_conforms(GreedyStore, PolicyStore)
