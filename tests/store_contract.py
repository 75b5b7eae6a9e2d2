"""The PolicyStore contract, one definition for every backend.

Test modules import these tests (``from tests.store_contract import *``) next to their own ``store`` fixture:
``tests/unit/test_store.py`` runs them on SQLite and memory, ``tests/integration/test_store_servers.py`` on
Redis and PostgreSQL servers the tests start.
"""

from __future__ import annotations

import threading

import pytest

from mxsec.storage import CacheEntry, StoreError

__all__ = ["entry", "test_put_get_load_all_delete", "test_entries_are_copies", "test_unicode_and_large_body", "test_floats_round_trip_exactly", "test_closed_store_raises", "test_threads", "test_many_entries_in_batches", "test_put_many_last_one_wins"]  # pytest collects the tests from every module that imports them


def entry(domain: str = "example.com", n: int = 0, mode: str = "enforce") -> CacheEntry:
    return CacheEntry(
        domain=domain,
        policy_id=f"id{n}",
        body=f"version: STSv1\nmode: {mode}\nmx: mx{n}.{domain}\nmax_age: 86400\n",
        fetched_at=1_700_000_000.0 + n,
        expires_at=1_700_086_400.0 + n,
        checked_at=1_700_000_100.5 + n,
        mode=mode,
    )


def test_put_get_load_all_delete(store):
    assert store.get("example.com") is None
    assert store.load_all() == []
    store.put(entry())
    assert store.get("example.com") == entry()
    store.put(entry(n=1))  # replaces
    assert store.get("example.com") == entry(n=1)
    store.put_many([entry("a.example", 2), entry("b.example", 3, "testing")])
    assert sorted(e.domain for e in store.load_all()) == ["a.example", "b.example", "example.com"]
    assert store.get("b.example").mode == "testing"
    store.delete("a.example")
    store.delete("never.example")  # no error
    assert store.get("a.example") is None
    assert len(store.load_all()) == 2
    store.put_many([])  # nothing to do, no error


def test_entries_are_copies(store):
    e = entry()
    store.put(e)
    e.policy_id = "changed"
    got = store.get("example.com")
    assert got.policy_id == "id0"
    got.mode = "none"
    assert store.get("example.com").mode == "enforce"


def test_unicode_and_large_body(store):
    body = "version: STSv1\n" + "# ü\n" * 20000
    e = CacheEntry("xn--bcher-kva.example", "x", body, 1.0, 2.0, 3.0, "none")
    store.put(e)
    assert store.get("xn--bcher-kva.example").body == body
    assert store.load_all() == [e]


def test_floats_round_trip_exactly(store):
    e = CacheEntry("t.example", "x", "b", 1_700_000_000.123456, 0.1 + 0.2, 1e-7, "testing")
    store.put(e)
    assert store.get("t.example") == e


def test_closed_store_raises(store):
    store.put(entry())
    store.close()
    store.close()  # twice is harmless
    for call in (lambda: store.get("example.com"), store.load_all, lambda: store.put(entry()),
                 lambda: store.delete("example.com"), lambda: store.put_many([entry()])):
        with pytest.raises(StoreError):
            call()


def test_threads(store):
    errors: list[BaseException] = []

    def worker(k: int) -> None:
        try:
            for i in range(25):
                store.put(entry(f"d{k}-{i}.example", i))
                assert store.get(f"d{k}-{i}.example") == entry(f"d{k}-{i}.example", i)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors
    assert len(store.load_all()) == 100


def test_many_entries_in_batches(store):
    # More than one SCAN batch / pipeline chunk (500): load_all must return each entry exactly once.
    entries = [entry(f"d{i}.example", i) for i in range(1234)]
    store.put_many(entries)
    loaded = store.load_all()
    assert len(loaded) == 1234
    assert sorted(loaded, key=lambda e: e.domain) == sorted(entries, key=lambda e: e.domain)


def test_put_many_last_one_wins(store):
    store.put_many([entry(n=1), entry(n=2)])
    assert store.get("example.com") == entry(n=2)
