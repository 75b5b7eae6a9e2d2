"""Test glue around the servers of :mod:`mxsec.testing.servers`: session fixtures and the report server.

* ``redis_server`` / ``postgres_server`` (session fixtures): one shared server each; tests must use their own
  keys / domains or clear the data first (see ``tests/integration/test_store_servers.py``). Do not stop them.
  Import the fixtures into the test module (``from .servers import redis_server, postgres_server``).
* ``report_server_thread`` / ``running_report_server``: ``mxsec reports serve``'s app in a thread.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

import pytest

from mxsec.testing.servers import (  # noqa: F401 - the starters, for the tests that import them from here
    HOST,
    PostgresServer,
    RedisServer,
    free_port,
    postgres_bindir,
    redis_binary,
    running_postgres,
    running_redis,
)


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    if redis_binary() is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server)")
    with running_redis() as server:
        yield server


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    if postgres_bindir() is None:
        pytest.skip("PostgreSQL is not installed (apt-get install postgresql)")
    with running_postgres() as server:
        yield server


@contextlib.contextmanager
def report_server_thread(db, *, host: str = HOST, **kwargs) -> Iterator[tuple[int, object]]:
    """``mxsec reports serve``'s app on a uvicorn server in a thread on a kernel-chosen port of *host*
    (``build_server``'s keyword arguments: TLS, limits, login...); yields (port, server)."""
    import threading

    from mxsec.reports.web.server import bind, build_server

    server = build_server(db, **kwargs)
    sock = bind(host, 0)
    port = sock.getsockname()[1]
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.02)
    try:
        yield port, server
    finally:
        server.should_exit = True
        thread.join(15)
        sock.close()
        assert not thread.is_alive()


@contextlib.contextmanager
def running_report_server(db, *, cert: str, key: str, host: str = HOST, **kwargs) -> Iterator[int]:
    """:func:`report_server_thread` with TLS; yields the port."""
    with report_server_thread(db, host=host, tls_cert=cert, tls_key=key, **kwargs) as (port, _server):
        yield port
