"""Policy cache storage: SQLite and memory backends, URL parsing, durability across kill -9."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from mxsec.errors import ConfigError
from mxsec.storage import (
    MemoryStore,
    PolicyStore,
    SqliteStore,
    open_store,
    parse_store_url,
)
from mxsec.storage.policy_tables import POLICY_SCHEMA

from tests.store_contract import *  # noqa: F401,F403 - the shared PolicyStore contract
from tests.store_contract import entry

SRC = Path(__file__).resolve().parents[2] / "src"


@pytest.fixture(params=["sqlite", "memory"])
def store(request, tmp_path):
    s = SqliteStore(str(tmp_path / "cache.sqlite3")) if request.param == "sqlite" else MemoryStore()
    yield s
    s.close()


def test_protocol(store):
    assert isinstance(store, PolicyStore)


def test_sqlite_survives_reopen_and_wal(tmp_path):
    path = tmp_path / "deep" / "dir" / "cache.sqlite3"  # parent dirs are created
    s = SqliteStore(str(path))
    assert s.journal_mode() == "wal"
    assert s.schema_version() == POLICY_SCHEMA.version
    s.put_many([entry(f"d{i}.example", i) for i in range(10)])
    s.close()
    s = SqliteStore(str(path))
    assert len(s.load_all()) == 10
    assert s.get("d3.example") == entry("d3.example", 3)
    s.close()
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("SELECT version FROM mxsec_schema_version").fetchall() == [(POLICY_SCHEMA.version,)]
    conn.close()


def test_sqlite_shares_a_file_with_other_tables(tmp_path):
    path = tmp_path / "peer.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE sts_policy_cache (domain TEXT, ts INTEGER, pol_id TEXT, pol_body TEXT)")
    conn.execute("INSERT INTO sts_policy_cache VALUES ('x', 1, 'y', '{}')")
    conn.commit()
    conn.close()
    with SqliteStore(str(path)) as s:
        s.put(entry())
        assert s.load_all() == [entry()]


def test_sqlite_corrupted_file_is_config_error(tmp_path):
    path = tmp_path / "cache.sqlite3"
    path.write_bytes(b"this is not a database at all\n" * 200)
    with pytest.raises(ConfigError) as err:
        SqliteStore(str(path))
    message = str(err.value)
    assert "\n" not in message and str(path) in message


def test_sqlite_damaged_pages_is_config_error(tmp_path):
    path = tmp_path / "cache.sqlite3"
    with SqliteStore(str(path)) as s:
        s.put_many([entry(f"d{i}.example", i) for i in range(300)])
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    data = bytearray(path.read_bytes())
    page = 4096
    assert len(data) > 3 * page
    data[page + 100 : len(data) - 100] = b"\xff" * (len(data) - page - 200)  # keep the header, smash the pages
    path.write_bytes(bytes(data))
    with pytest.raises(ConfigError) as err:
        SqliteStore(str(path))
    assert "\n" not in str(err.value)


def test_sqlite_newer_schema_is_config_error(tmp_path):
    path = tmp_path / "cache.sqlite3"
    SqliteStore(str(path)).close()
    conn = sqlite3.connect(path)
    conn.execute("UPDATE mxsec_schema_version SET version = 99")
    conn.commit()
    conn.close()
    with pytest.raises(ConfigError, match="newer mxsec"):
        SqliteStore(str(path))


def test_sqlite_uncreatable_directory_is_config_error(tmp_path):
    # A parent that is a regular file cannot hold a directory, even for root (who ignores permissions).
    blocker = tmp_path / "blocker"
    blocker.write_text("not a directory")
    with pytest.raises(ConfigError):
        SqliteStore(str(blocker / "sub" / "cache.sqlite3"))


def test_sqlite_directory_in_the_way_is_config_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ConfigError):
        SqliteStore(str(blocker / "cache.sqlite3"))


def test_sqlite_kill_9_right_after_put_loses_nothing(tmp_path):
    path = tmp_path / "cache.sqlite3"
    script = textwrap.dedent(
        f"""
        import os, sys
        sys.path.insert(0, {str(SRC)!r})
        from mxsec.storage import CacheEntry, open_store
        store = open_store({"sqlite:///" + str(path)!r})
        for i in range(500):
            store.put(CacheEntry(f"d{{i}}.example", f"id{{i}}", "version: STSv1\\n", 1.0, 2.0, 3.0, "enforce"))
        os.kill(os.getpid(), 9)
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()
    with SqliteStore(str(path)) as s:
        entries = s.load_all()
    assert len(entries) == 500
    assert {e.domain for e in entries} == {f"d{i}.example" for i in range(500)}


# -- URLs ---------------------------------------------------------------------------------------------------


def test_open_store_sqlite_absolute(tmp_path):
    url = "sqlite:///" + str(tmp_path / "c.db")  # four slashes: absolute path
    assert url.startswith("sqlite:////")
    s = open_store(url)
    assert isinstance(s, SqliteStore) and s.path == str(tmp_path / "c.db")
    s.close()


def test_open_store_sqlite_relative(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    s = open_store("sqlite:///rel/c.db")
    s.put(entry())
    s.close()
    assert (tmp_path / "rel" / "c.db").exists()


def test_open_store_memory():
    s = open_store("memory://")
    assert isinstance(s, MemoryStore)
    s.close()


@pytest.mark.parametrize(
    "url",
    ["redis://localhost:6379/0", "rediss://h:6380/1", "postgresql://mxsec@db/mxsec", "postgres://u@h/d"],
)
def test_open_remote_store_does_not_connect(url):
    # Opening a fleet cache never contacts the server (it may be down; the daemon must still start).
    assert parse_store_url(url).scheme in ("redis", "rediss", "postgresql")
    store = open_store(url)
    assert store.remote is True
    store.close()


@pytest.mark.parametrize(
    "url",
    [
        "",
        "cache.db",
        "/var/lib/mxsec/cache.sqlite3",
        "sqlite://host/c.db",
        "sqlite:///",
        "sqlite:////var/lib/mxsec/",
        "sqlite:///c.db?mode=ro",
        "memory://x",
        "mysql://u@h/d",
        "redis://",
        "sqlite:///a\nb",
    ],
)
def test_bad_urls(url):
    with pytest.raises(ConfigError) as err:
        open_store(url)
    assert "\n" not in str(err.value)
