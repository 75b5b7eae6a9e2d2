"""Redis and PostgreSQL policy stores against real servers started by the tests (see ``servers.py``).

The same contract as ``tests/unit/test_store.py`` for both backends, plus what a fleet cache needs: several
store objects on one server see each other's writes, opening never needs the server, an outage is a
StoreError from each operation, and the store works again once the server is back, without reopening.
"""

from __future__ import annotations

import threading
import time

import pytest

from mxsec.errors import ConfigError
from mxsec.storage import PolicyStore, StoreError, open_store, parse_store_url
from mxsec.storage.policy_tables import POLICY_SCHEMA
from mxsec.storage.postgres import PostgresStore
from mxsec.storage.redis import RedisStore

from tests.store_contract import *  # noqa: F401,F403 - the shared PolicyStore contract
from tests.store_contract import entry

from .servers import (  # redis_server, postgres_server: session fixtures used by name below
    PostgresServer,
    RedisServer,
    free_port,
    postgres_server,  # noqa: F401
    redis_server,  # noqa: F401
    running_postgres,
    running_redis,
)

pytestmark = pytest.mark.integration


class Opener:
    """Opens store objects on one backend's shared server (the data is cleared first); closes them after."""

    def __init__(self, kind: str, url: str) -> None:
        self.kind = kind
        self.url = url
        self.opened: list[PolicyStore] = []

    def __call__(self, url: str | None = None) -> PolicyStore:
        store = open_store(url or self.url)
        self.opened.append(store)
        return store

    def close_all(self) -> None:
        for store in self.opened:
            store.close()


@pytest.fixture(params=["redis", "postgres"])
def opener(request) -> Opener:
    if request.param == "redis":
        server: RedisServer = request.getfixturevalue("redis_server")
        server.flush()
        result = Opener("redis", server.url)
    else:
        pg: PostgresServer = request.getfixturevalue("postgres_server")
        with pg.admin(pg.dbname) as conn:
            conn.execute("DROP TABLE IF EXISTS mxsec_policy, mxsec_schema_version")
        result = Opener("postgres", pg.url)
    yield result
    result.close_all()


@pytest.fixture
def store(opener: Opener) -> PolicyStore:
    return opener()


# -- the PolicyStore contract ------------------------------------------------------------------------------


def test_protocol_and_remote(store, opener):
    assert isinstance(store, PolicyStore)
    assert store.remote is True
    assert isinstance(store, RedisStore if opener.kind == "redis" else PostgresStore)


def test_survives_reopen(store, opener):
    store.put_many([entry(f"d{i}.example", i) for i in range(10)])
    store.close()
    again = opener()
    assert len(again.load_all()) == 10
    assert again.get("d3.example") == entry("d3.example", 3)


def test_fleet_two_stores_share_one_server(opener):
    a, b = opener(), opener()
    a.put(entry("shared.example", 1))
    assert b.get("shared.example") == entry("shared.example", 1)
    b.put(entry("shared.example", 2))
    assert a.get("shared.example") == entry("shared.example", 2)
    b.put_many([entry("b1.example"), entry("b2.example")])
    assert {e.domain for e in a.load_all()} == {"shared.example", "b1.example", "b2.example"}
    a.delete("b1.example")
    assert b.get("b1.example") is None
    a.close()
    assert b.get("b2.example") is not None  # closing one store does not disturb the other


# -- Redis specifics ----------------------------------------------------------------------------------------


def test_redis_layout_and_foreign_keys(redis_server):  # noqa: F811
    import redis

    redis_server.flush()
    store = open_store(redis_server.url)
    raw = redis.Redis.from_url(redis_server.url, socket_timeout=2)
    try:
        store.put(entry())
        assert raw.hget("mxsec:policy:example.com", "mode") == b"enforce"
        assert raw.ttl("mxsec:policy:example.com") == -1  # no expiry: the daemon decides what is fresh
        raw.set("mxsec:policy:string.example", "not a hash")
        raw.hset("mxsec:policy:partial.example", mapping={"policy_id": "x"})
        raw.set("other:key", "x")
        assert store.load_all() == [entry()]
        assert store.get("string.example") is None
        assert store.get("partial.example") is None
        store.put(entry("string.example"))  # replaces the foreign value
        assert store.get("string.example") == entry("string.example")
    finally:
        raw.close()
        store.close()


def test_redis_prefix_and_db_isolate(redis_server):  # noqa: F811
    redis_server.flush()
    base = f"redis://127.0.0.1:{redis_server.port}"
    a = open_store(base + "/0")
    b = open_store(base + "/0?prefix=other:")
    c = open_store(base + "/5")
    try:
        a.put(entry("a.example"))
        b.put(entry("b.example"))
        c.put(entry("c.example"))
        assert [e.domain for e in a.load_all()] == ["a.example"]
        assert [e.domain for e in b.load_all()] == ["b.example"]
        assert [e.domain for e in c.load_all()] == ["c.example"]
    finally:
        for s in (a, b, c):
            s.close()


def test_redis_prefix_with_glob_characters(redis_server):  # noqa: F811
    redis_server.flush()
    a = open_store(redis_server.url + "?prefix=x*:")
    b = open_store(redis_server.url + "?prefix=xy:")
    try:
        a.put(entry("a.example"))
        b.put(entry("b.example"))
        assert [e.domain for e in a.load_all()] == ["a.example"]
    finally:
        a.close()
        b.close()


def test_redis_unix_socket(redis_server):  # noqa: F811
    redis_server.flush()
    store = open_store(redis_server.unix_url)
    tcp = open_store(redis_server.url)
    try:
        store.put(entry())
        assert tcp.get("example.com") == entry()
    finally:
        store.close()
        tcp.close()


# -- PostgreSQL specifics -------------------------------------------------------------------------------------


def test_postgres_schema_and_url_forms(postgres_server):  # noqa: F811
    url = postgres_server.create_database("mxsec_schema")
    store = open_store(url.replace("postgresql://", "postgres://"))
    try:
        store.put(entry())
        assert store.schema_version() == POLICY_SCHEMA.version
        with postgres_server.admin("mxsec_schema") as conn:
            assert conn.execute("SELECT version FROM mxsec_schema_version").fetchall() == [(POLICY_SCHEMA.version,)]
            assert conn.execute("SELECT domain, mode FROM mxsec_policy").fetchall() == [("example.com", "enforce")]
        # Over the unix socket directory, the libpq way.
        sock = open_store(f"postgresql://postgres@/mxsec_schema?host={postgres_server.dir}&port={postgres_server.port}")
        try:
            assert sock.get("example.com") == entry()
        finally:
            sock.close()
    finally:
        store.close()


def test_postgres_first_use_by_many_daemons_at_once(postgres_server):  # noqa: F811
    url = postgres_server.create_database("mxsec_race")
    stores = [open_store(url) for _ in range(6)]
    errors: list[BaseException] = []
    barrier = threading.Barrier(len(stores))

    def first_use(s: PolicyStore, i: int) -> None:
        try:
            barrier.wait(10)
            s.put(entry(f"r{i}.example", i))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=first_use, args=(s, i)) for i, s in enumerate(stores)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    try:
        assert not errors, errors
        assert len(stores[0].load_all()) == 6
    finally:
        for s in stores:
            s.close()


def test_postgres_newer_schema_is_store_error(postgres_server):  # noqa: F811
    url = postgres_server.create_database("mxsec_newer")
    open_store(url).load_all()  # creates the tables
    with postgres_server.admin("mxsec_newer") as conn:
        conn.execute("UPDATE mxsec_schema_version SET version = 99")
    store = open_store(url)  # opening does not connect
    try:
        with pytest.raises(StoreError, match="newer mxsec") as err:
            store.load_all()
        assert "\n" not in str(err.value)
    finally:
        store.close()


# -- outages: open without the server, StoreError while down, back without reopening ------------------------


def _assert_store_error_quickly(call, limit: float = 6.0) -> str:
    began = time.monotonic()
    with pytest.raises(StoreError) as err:
        call()
    assert time.monotonic() - began < limit
    message = str(err.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize("kind", ["redis", "postgres"])
def test_outage_and_recovery(kind):
    with (running_redis() if kind == "redis" else running_postgres()) as server:
        server.stop()
        store = open_store(server.url)  # the server is down: opening must still work
        try:
            for call in (store.load_all, lambda: store.get("example.com"), lambda: store.put(entry()),
                         lambda: store.put_many([entry()]), lambda: store.delete("example.com")):
                _assert_store_error_quickly(call)

            server.start()  # same port: the same store object works, without reopening
            store.put(entry())
            assert store.get("example.com") == entry()

            server.stop()  # the pooled connection dies with the server
            _assert_store_error_quickly(lambda: store.get("example.com"))
            _assert_store_error_quickly(lambda: store.put(entry(n=1)))

            server.start()
            store.put(entry("again.example"))
            assert store.get("again.example") == entry("again.example")
            if kind == "postgres":  # PostgreSQL keeps its data over a restart (Redis here runs without any)
                assert store.get("example.com") == entry()
        finally:
            store.close()
        store.close()


def test_nothing_listening_fails_fast():
    port = free_port()  # nothing listens there
    for url in (f"redis://127.0.0.1:{port}/0", f"postgresql://postgres@127.0.0.1:{port}/mxsec"):
        store = open_store(url)
        try:
            message = _assert_store_error_quickly(store.load_all, limit=5.0)
            assert str(port) in message
        finally:
            store.close()


def test_password_not_in_messages():
    port = free_port()
    for url in (f"redis://u:s3cret@127.0.0.1:{port}/0", f"postgresql://u:s3cret@127.0.0.1:{port}/mxsec"):
        store = open_store(url)
        try:
            message = _assert_store_error_quickly(store.load_all)
            assert "s3cret" not in message and "s3cret" not in repr(store)
        finally:
            store.close()


# -- URLs ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url, scheme",
    [
        ("redis://localhost:6379/0", "redis"),
        ("rediss://h:6380/1", "rediss"),
        ("redis://h", "redis"),
        ("redis+unix:///run/redis/redis.sock?db=2", "redis+unix"),
        ("postgresql://mxsec@db/mxsec", "postgresql"),
        ("postgres://u:p@h:5433/d", "postgresql"),
        ("postgresql://u@/d?host=/var/run/postgresql", "postgresql"),
    ],
)
def test_good_urls_open_without_a_server(url, scheme):
    assert parse_store_url(url).scheme == scheme
    store = open_store(url)
    assert store.remote is True
    store.close()


@pytest.mark.parametrize(
    "url",
    [
        "redis://",
        "redis://h:99999/0",
        "redis://h:0/0",
        "redis://h/x",
        "redis://h/0?db=x",
        "redis://h/0?nonsense=1",
        "redis://h/0?socket_timeout=abc",
        "redis://h/0?prefix=",
        "redis://:pw@/0",
        "redis+unix://host/path",
        "redis+unix:///",
        "rediss://h/0#frag",
        "postgresql://",
        "postgresql://u@h",
        "postgresql://u@h:abc/d",
        "postgres://u:pw@h:0/d",
        "postgresql://u@h/d?nonsense=1",
        "postgresql://u@h/d?a\nb",
    ],
)
def test_bad_urls_are_config_errors(url):
    with pytest.raises(ConfigError) as err:
        open_store(url)
    assert "\n" not in str(err.value)
    if "pw" in url:
        assert ":pw@" not in str(err.value)
