"""Redis policy store (``redis://``, ``rediss://``, ``redis+unix://``): one cache shared by a fleet of MTAs.

URLs:

- ``redis://[[USER]:PASSWORD@]HOST[:PORT][/DB]`` (port 6379, database 0 by default);
- ``rediss://...``: the same over TLS (the system trust store, or ``?ssl_ca_certs=/path/ca.pem``);
- ``redis+unix:///path/to/redis.sock?db=N`` (optionally ``&password=...``): a unix socket.

Every URL may end in ``?prefix=NAME:`` to change the key prefix (default ``mxsec:policy:``), so two
deployments can share one Redis database.

Layout: one hash per domain, ``<prefix><domain>``, with the fields ``policy_id``, ``body``, ``fetched_at``,
``expires_at``, ``checked_at``, ``mode`` (times as decimal strings) and ``v`` (the layout version, 1).
``redis-cli HGETALL mxsec:policy:example.com`` shows an entry. Keys have no TTL: what is fresh is decided by the
daemon, and an expired entry is deleted by it. A write keeps a stored entry fetched later than the one written
(a script compares ``fetched_at``), so an older fetch never overwrites a newer policy.

Fleet leases (docs/fleet.md): ``<prefix><domain>\\0lease``, a string with a TTL: the holder's name while a
daemon resolves the domain (``SET NX PX``), then ``=`` and the published outcome. Scripts compare the holder
before replacing or deleting it, so a daemon never touches a lease another daemon took after its own expired.

Availability: opening never contacts the server. A fleet cache must not stop the daemon from starting or
serving: when Redis is down, every operation fails quickly (connect timeout 2 s, one immediate retry) with a
one-line :class:`~mxsec.storage.base.StoreError`, the daemon logs it and answers from memory and from resolution;
the next operation after Redis is back simply works (connections are re-established by the pool).
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING, Any, Callable, Iterable, cast
from urllib.parse import parse_qsl, urlencode, urlsplit

from ..errors import ConfigError, one_line
from ..extras import require
from .announcements import LISTEN_POLL, deliver, listen_in_thread, message
from .base import CacheEntry, Claim, StoreError
from .urls import redact

if TYPE_CHECKING:
    from redis.typing import EncodableT, FieldT

log = logging.getLogger("mxsec.storage.redis")

DEFAULT_PREFIX = "mxsec:policy:"
LAYOUT_VERSION = b"1"
#: Seconds to connect, and to wait for any reply.
CONNECT_TIMEOUT = 2.0
SOCKET_TIMEOUT = 2.0
#: Keys per SCAN step / per pipeline.
BATCH = 500

_FIELDS = ("policy_id", "body", "fetched_at", "expires_at", "checked_at", "mode")
_SCHEMES = ("redis", "rediss", "redis+unix")
#: Query parameters passed on to redis-py (``prefix`` is mxsec's own).
_QUERY_KEYS = frozenset({
    "prefix", "db", "username", "password", "client_name", "socket_timeout", "socket_connect_timeout",
    "ssl_cert_reqs", "ssl_ca_certs", "ssl_ca_path", "ssl_certfile", "ssl_keyfile", "ssl_check_hostname",
})


#: KEYS[1] the entry, ARGV[1] its fetched_at, ARGV[2..] the hash's fields and values: replace the entry unless
#: the stored one was fetched later (returns 1 when written).
_PUT_NEWER = """
if redis.call('TYPE', KEYS[1]).ok == 'hash' then
  local stored = redis.call('HGET', KEYS[1], 'fetched_at')
  if stored and tonumber(stored) and tonumber(stored) > tonumber(ARGV[1]) then return 0 end
end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], unpack(ARGV, 2))
return 1
"""
#: KEYS[1] the lease, ARGV[1] the holder, ARGV[2] the outcome, ARGV[3] its lifetime in ms.
_PUBLISH = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[1], '=' .. ARGV[2], 'PX', ARGV[3])
  return 1
end
return 0
"""
#: KEYS[1] the lease, ARGV[1] the holder.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
_LEASE_SUFFIX = b"\x00lease"
#: the pub/sub channel of announcements is ``<prefix>\0changes``: messages ``"<owner> <domain>"``
_CHANGES_SUFFIX = b"\x00changes"


def _glob_escape(text: str) -> str:
    return "".join("\\" + ch if ch in "*?[]\\" else ch for ch in text)


def parse_url(url: str) -> tuple[str, str]:
    """Check ``url``; return the URL redis-py understands and the key prefix. ConfigError (one line) when bad."""
    shown = redact(url)
    try:
        parts = urlsplit(url)
        port = parts.port  # raises ValueError when not a number / out of range
    except ValueError as exc:
        raise ConfigError(f"cache URL {shown!r}: {one_line(exc)}") from None
    scheme = parts.scheme.lower()
    if scheme not in _SCHEMES:
        raise ConfigError(f"cache URL {shown!r}: not a Redis URL (redis://, rediss://, redis+unix://)")
    if parts.fragment:
        raise ConfigError(f"cache URL {shown!r}: fragments are not supported")
    query = parse_qsl(parts.query, keep_blank_values=True)
    prefix = DEFAULT_PREFIX
    rest: list[tuple[str, str]] = []
    for key, value in query:
        if key == "prefix":
            if not value:
                raise ConfigError(f"cache URL {shown!r}: prefix is empty")
            prefix = value
        else:
            rest.append((key, value))
    if scheme == "redis+unix":
        if parts.netloc or not parts.path.startswith("/") or parts.path == "/":
            raise ConfigError(f"cache URL {shown!r}: write redis+unix:///path/to/redis.sock?db=N")
        scheme = "unix"
    else:
        if not parts.hostname:
            raise ConfigError(f"cache URL {shown!r}: no host; write {scheme}://HOST:PORT/DB")
        if port == 0:
            raise ConfigError(f"cache URL {shown!r}: port 0")
        db = parts.path.strip("/")
        if db and (not db.isascii() or not db.isdigit()):
            raise ConfigError(f"cache URL {shown!r}: the path must be a database number such as /0, got /{db}")
    for key, value in rest:
        if key not in _QUERY_KEYS:
            raise ConfigError(
                f"cache URL {shown!r}: unknown parameter {key!r} (known: {', '.join(sorted(_QUERY_KEYS))})"
            )
        if key == "db" and (not value.isascii() or not value.isdigit()):
            raise ConfigError(f"cache URL {shown!r}: db must be a number, got {value!r}")
    query_text = urlencode(rest, safe="/:")
    return f"{scheme}://{parts.netloc}{parts.path}" + (f"?{query_text}" if query_text else ""), prefix


class RedisStore:
    """A :class:`~mxsec.storage.base.PolicyStore` in a Redis database (see the module docstring)."""

    #: Operations go over the network: the daemon calls them off the event loop (``asyncio.to_thread``).
    remote = True

    def __init__(self, url: str, *, connect_timeout: float = CONNECT_TIMEOUT,
                 socket_timeout: float = SOCKET_TIMEOUT) -> None:
        redis = require("redis", "redis", "a redis:// cache")
        from redis.backoff import NoBackoff
        from redis.retry import Retry
        self.url = redact(url)
        client_url, self.prefix = parse_url(url)
        self._redis = redis
        self._lock = threading.Lock()
        self._closed = False
        options: dict[str, Any] = {
            "socket_connect_timeout": connect_timeout,
            "socket_timeout": socket_timeout,
            # One immediate retry, so that the first call after a Redis restart does not fail on a stale
            # pooled connection; a server that is down fails in at most two connect timeouts.
            "retry": Retry(NoBackoff(), 1),
            "retry_on_timeout": False,
            "health_check_interval": 30,
            "decode_responses": False,
        }
        try:
            pool = redis.ConnectionPool.from_url(client_url, **options)
            self._client = redis.Redis(connection_pool=pool)
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"cache URL {self.url!r}: {one_line(exc)}") from None
        # Scripts are registered locally; redis-py loads them on the server at their first use.
        self._put_newer = self._client.register_script(_PUT_NEWER)
        self._publish = self._client.register_script(_PUBLISH)
        self._release = self._client.register_script(_RELEASE)

    # -- helpers -----------------------------------------------------------------------------------------

    def _key(self, domain: str) -> bytes:
        return (self.prefix + domain).encode("utf-8")

    def _check_open(self) -> None:
        if self._closed:
            raise StoreError(f"{self.url}: store is closed")

    def _fail(self, what: str, exc: BaseException) -> StoreError:
        return StoreError(f"{self.url}: {what} failed: {one_line(exc)}")

    def _errors(self) -> tuple[type[BaseException], ...]:
        return (self._redis.RedisError, OSError)

    @staticmethod
    def _mapping(entry: CacheEntry) -> dict[FieldT, EncodableT]:
        return {
            "v": LAYOUT_VERSION,
            "policy_id": entry.policy_id.encode("utf-8"),
            "body": entry.body.encode("utf-8"),
            "fetched_at": repr(float(entry.fetched_at)).encode(),
            "expires_at": repr(float(entry.expires_at)).encode(),
            "checked_at": repr(float(entry.checked_at)).encode(),
            "mode": entry.mode.encode("utf-8"),
        }

    def _entry(self, key: bytes, data: dict[bytes, bytes]) -> CacheEntry | None:
        """The entry stored under ``key``; None (and a warning) for a hash this version cannot read."""
        if not data:
            return None
        try:
            fields = {name: data[name.encode()].decode("utf-8") for name in _FIELDS}
            return CacheEntry(
                domain=key.decode("utf-8")[len(self.prefix):],
                policy_id=fields["policy_id"],
                body=fields["body"],
                fetched_at=float(fields["fetched_at"]),
                expires_at=float(fields["expires_at"]),
                checked_at=float(fields["checked_at"]),
                mode=fields["mode"],
            )
        except (KeyError, ValueError, UnicodeDecodeError):
            log.warning("cache entry %r in Redis is not an mxsec policy entry; ignored", key)
            return None

    def _write(self, what: str, ops: list[tuple[str, CacheEntry | str]]) -> None:
        """Puts and deletes; one alone is one round trip, several go in pipelined batches of :data:`BATCH`."""
        self._check_open()
        try:
            if len(ops) == 1:
                self._apply(self._client, *ops[0])
                return
            for start in range(0, len(ops), BATCH):
                pipe = self._client.pipeline(transaction=True)
                for op, arg in ops[start : start + BATCH]:
                    self._apply(pipe, op, arg)
                pipe.execute()
        except self._errors() as exc:
            raise self._fail(what, exc) from exc

    def _apply(self, client: Any, op: str, arg: CacheEntry | str) -> None:
        if op == "put":
            assert isinstance(arg, CacheEntry)
            fields = [item for pair in self._mapping(arg).items() for item in pair]
            # replace, not merge (no stale field survives), unless the stored entry is newer
            self._put_newer(keys=[self._key(arg.domain)], args=[repr(float(arg.fetched_at)), *fields],
                            client=client)
        else:
            assert isinstance(arg, str)
            client.delete(self._key(arg))

    # -- PolicyStore ---------------------------------------------------------------------------------------

    def load_all(self) -> list[CacheEntry]:
        self._check_open()
        out: list[CacheEntry] = []
        seen: set[bytes] = set()
        match = _glob_escape(self.prefix) + "*"
        try:
            cursor = 0
            # SCAN ends when the cursor returns to 0; the bound only guards against a misbehaving server.
            for _ in range(10_000_000):
                cursor, found = self._client.scan(cursor=cursor, match=match, count=BATCH)
                # keys come back as bytes (decode_responses=False); SCAN may return a key twice
                keys = [k for k in cast("list[bytes]", found) if k not in seen and not k.endswith(_LEASE_SUFFIX)]
                if keys:
                    seen.update(keys)
                    pipe = self._client.pipeline(transaction=False)
                    for key in keys:
                        pipe.hgetall(key)
                    for key, data in zip(keys, pipe.execute(raise_on_error=False)):
                        if isinstance(data, self._redis.ResponseError):
                            log.warning("cache key %r in Redis is not a hash; ignored", key)
                            continue
                        if isinstance(data, BaseException):
                            raise data
                        entry = self._entry(key, data)
                        if entry is not None:
                            out.append(entry)
                if cursor == 0:
                    break
        except self._errors() as exc:
            raise self._fail("read", exc) from exc
        return out

    def get(self, domain: str) -> CacheEntry | None:
        self._check_open()
        key = self._key(domain)
        try:
            data = cast("dict[bytes, bytes]", self._client.hgetall(key))  # decode_responses=False: bytes
        except self._redis.ResponseError as exc:
            if "WRONGTYPE" in str(exc):
                return None
            raise self._fail("read", exc) from exc
        except self._errors() as exc:
            raise self._fail("read", exc) from exc
        return self._entry(key, data)

    def put(self, entry: CacheEntry) -> None:
        self._write("write", [("put", entry)])

    def put_many(self, entries: Iterable[CacheEntry]) -> None:
        ops: list[tuple[str, CacheEntry | str]] = [("put", entry) for entry in entries]
        if ops:
            self._write("write", ops)

    def delete(self, domain: str) -> None:
        self._write("delete", [("delete", domain)])

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
        try:
            self._client.close()
            self._client.connection_pool.disconnect()
        except self._errors():
            pass

    # -- FleetStore ---------------------------------------------------------------------------------------

    def claim(self, domain: str, owner: str, ttl: float) -> Claim:
        self._check_open()
        key = self._key(domain) + _LEASE_SUFFIX
        try:
            if self._client.set(key, owner.encode("utf-8"), nx=True, px=max(1, int(ttl * 1000))):
                return Claim(True)
            value = cast("bytes | None", self._client.get(key))
        except self._errors() as exc:
            raise self._fail("lease", exc) from exc
        if value is not None and value.startswith(b"="):
            return Claim(False, value[1:].decode("utf-8", "replace"))
        return Claim(False)

    def publish(self, domain: str, owner: str, outcome: str, ttl: float) -> None:
        self._check_open()
        try:
            self._publish(keys=[self._key(domain) + _LEASE_SUFFIX],
                          args=[owner.encode("utf-8"), outcome.encode("utf-8"), max(1, int(ttl * 1000))])
        except self._errors() as exc:
            raise self._fail("lease", exc) from exc

    def release(self, domain: str, owner: str) -> None:
        self._check_open()
        try:
            self._release(keys=[self._key(domain) + _LEASE_SUFFIX], args=[owner.encode("utf-8")])
        except self._errors() as exc:
            raise self._fail("lease", exc) from exc

    def _channel(self) -> bytes:
        return self.prefix.encode("utf-8") + _CHANGES_SUFFIX

    def announce(self, domain: str, owner: str) -> None:
        self._check_open()
        try:
            self._client.publish(self._channel(), message(owner, domain).encode("utf-8"))
        except self._errors() as exc:
            raise self._fail("announce", exc) from exc

    def listen(self, on_change: Callable[[str, str], None]) -> Callable[[], None]:
        def session(stop: threading.Event) -> None:
            pubsub = self._client.pubsub(ignore_subscribe_messages=True)
            try:
                pubsub.subscribe(self._channel())
                while not stop.is_set():
                    received = pubsub.get_message(timeout=LISTEN_POLL)
                    if received is not None and isinstance(received.get("data"), bytes):
                        deliver(received["data"].decode("utf-8", "replace"), on_change)
            finally:
                try:
                    pubsub.close()
                except self._errors():
                    pass

        return listen_in_thread("mxsec-redis-listen", session, self._errors())

    # -- extras ------------------------------------------------------------------------------------------

    def ping(self) -> bool:
        """True when the server answers (for health checks); never raises."""
        if self._closed:
            return False
        try:
            return bool(self._client.ping())
        except self._errors():
            return False

    def __enter__(self) -> "RedisStore":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"RedisStore({self.url!r})"
