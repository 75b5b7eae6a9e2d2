"""Migration from postfix-mta-sts-resolver: its ``mta-sts-daemon.yml`` translated into a
:class:`~mxsec.config.schema.Config` (:func:`from_peer_yaml`) or into TOML with notes (:func:`migrate_config`).

Every note is one line saying what mapped how, or what has no equivalent (see ``docs/migration.md``).
"""

from __future__ import annotations

import math
import os
import re
from typing import Any
from urllib.parse import quote

from ..errors import ConfigError
from .paths import _sqlite_url
from .schema import Config, DaemonConfig, config_from_dict
from .toml_out import config_to_toml
from .values import _show, _toml_key, _type_error, _unix_mode

#: Top-level keys of a postfix-mta-sts-resolver ``mta-sts-daemon.yml``.
PEER_KEYS = frozenset(
    {
        "host", "port", "path", "mode", "reuse_port", "shutdown_timeout", "cache_grace",
        "proactive_policy_fetching", "cache", "default_zone", "zones",
    }
)


# The peer's built-in defaults (postfix_mta_sts_resolver/defaults.py), used to explain what changes.
_PEER_TIMEOUT = 4.0
_PEER_CACHE_GRACE = 60.0
_PEER_PF_INTERVAL = 86400.0
_PEER_PF_GRACE_RATIO = 2.0


def _peer_number(value: Any, key: str, *, positive: bool = True) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise _type_error(key, "a number", value)
    if positive and value <= 0:
        raise ConfigError(f"{key}: must be a positive number, got {value!r}")
    return float(value)


def _peer_int(value: Any, key: str) -> int:
    if isinstance(value, str) and value.isascii() and value.isdigit():
        return int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise _type_error(key, "an integer", value)
    return value


def _peer_bool(value: Any, key: str) -> bool:
    if not isinstance(value, bool):
        raise _type_error(key, "true or false", value)
    return value


def _peer_str(value: Any, key: str) -> str:
    if not isinstance(value, str) or not value:
        raise _type_error(key, "a string", value)
    return value


def _peer_map(value: Any, key: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _type_error(key, "a mapping", value)
    return value


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def _peer_redis_url(options: dict, notes: list[str]) -> str | None:
    if "url" in options:
        url = _peer_str(options["url"], "cache.options.url")
        used = {"url"}
    else:
        used = {"host", "port", "db", "password", "username", "address", "ssl"}
        host, port = "localhost", 6379
        address = options.get("address")
        if isinstance(address, str) and "://" in address:
            if address.startswith("unix://"):
                notes.append("cache.options.address: Redis over a unix socket cannot be written as a cache URL "
                             "yet; kept mxsec's default SQLite cache")
                return None
            url = address
            ignored = sorted(set(options) - {"address"})
            if ignored:
                notes.append(f"cache.options: {', '.join(ignored)}: not merged into the address URL; ignored")
            return url
        if isinstance(address, (list, tuple)) and len(address) == 2:
            host, port = str(address[0]), _peer_int(address[1], "cache.options.address[1]")
        elif isinstance(address, str):
            h, sep, p = address.rpartition(":")
            host, port = (h, _peer_int(p, "cache.options.address")) if sep else (address, 6379)
        elif address is not None:
            raise _type_error("cache.options.address", "a string", address)
        host = _peer_str(options.get("host", host), "cache.options.host")
        port = _peer_int(options.get("port", port), "cache.options.port")
        base = f"{'rediss' if options.get('ssl') is True else 'redis'}://{_url_host(host)}:{port}"
        if "unix_socket_path" in options:
            notes.append("cache.options.unix_socket_path: Redis over a unix socket cannot be written as a cache URL "
                         "yet; kept mxsec's default SQLite cache")
            return None
        db = _peer_int(options.get("db", 0), "cache.options.db")
        user = options.get("username")
        password = options.get("password")
        auth = ""
        if password is not None:
            auth = f"{quote(str(user or ''), safe='')}:{quote(str(password), safe='')}@"
            notes.append("cache.options.password: written into cache.url; keep the TOML file readable only by mxsec")
        elif user is not None:
            auth = f"{quote(str(user), safe='')}@"
        scheme, _, rest = base.partition("://")
        url = f"{scheme}://{auth}{rest}/{db}"
    ignored = sorted(set(options) - used)
    if ignored:
        notes.append(f"cache.options: {', '.join(ignored)}: no equivalent in mxsec's cache URL; ignored")
    return url


def _peer_postgres_url(options: dict, notes: list[str]) -> str:
    used = {"dsn", "timeout", "host", "port", "user", "password", "database"}
    parts: dict[str, str] = {}
    url: str | None = None
    if "dsn" in options:
        dsn = _peer_str(options["dsn"], "cache.options.dsn").strip()
        if dsn.startswith(("postgres://", "postgresql://")):
            url = "postgresql://" + dsn.partition("://")[2]
        else:
            # libpq key=value form: host=... port=... user=... password=... dbname=...
            for m in re.finditer(r"(\w+)\s*=\s*('(?:[^'\\]|\\.)*'|\S+)", dsn):
                value = m.group(2)
                if value.startswith("'"):
                    value = re.sub(r"\\(.)", r"\1", value[1:-1])
                parts[m.group(1)] = value
            if not parts:
                raise ConfigError(f"cache.options.dsn: not a PostgreSQL URL or key=value string: {_show(dsn)}")
    for key in ("host", "port", "user", "password", "database"):
        if key in options and options[key] is not None:
            parts.setdefault("dbname" if key == "database" else key, str(options[key]))
    if url is None:
        host = parts.get("host", "localhost")
        user, password = parts.get("user"), parts.get("password")
        auth = ""
        if user:
            auth = quote(user, safe="")
            if password:
                auth += ":" + quote(password, safe="")
            auth += "@"
        port = f":{parts['port']}" if "port" in parts else ""
        dbname = quote(parts.get("dbname", ""), safe="")
        if host.startswith("/"):
            url = (f"postgresql://{auth}/{dbname}?host={quote(host, safe='')}"
                   f"{('&port=' + parts['port']) if 'port' in parts else ''}")
        else:
            url = f"postgresql://{auth}{_url_host(host)}{port}/{dbname}"
        extra = sorted(set(parts) - {"host", "port", "user", "password", "dbname"})
        if extra:
            notes.append(f"cache.options.dsn: {', '.join(extra)}: not carried over into cache.url")
    if "password" in parts or re.search(r"://[^/@]*:[^/@]*@", url):
        notes.append("cache.options: the database password is now in cache.url; "
                     "keep the TOML file readable only by mxsec")
    if "timeout" in options:
        notes.append("cache.options.timeout: no equivalent in mxsec; ignored")
    ignored = sorted(set(options) - used)
    if ignored:
        notes.append(f"cache.options: {', '.join(ignored)}: no equivalent in mxsec's cache URL; ignored")
    return url


def _peer_zone(zone: Any, key: str, notes: list[str]) -> tuple[dict, float | None]:
    zone = _peer_map(zone, key)
    out: dict[str, bool] = {}
    timeout = None
    for name, value in zone.items():
        if name in ("strict_testing", "require_sni", "tlsrpt"):
            out[name] = _peer_bool(value, f"{key}.{name}")
        elif name == "timeout":
            timeout = _peer_number(value, f"{key}.timeout")
        else:
            notes.append(f"{key}.{name}: unknown to postfix-mta-sts-resolver and mxsec; ignored")
    return out, timeout


def from_peer_yaml(text: str, source: str = "mta-sts-daemon.yml") -> tuple[Config, list[str]]:
    """Translate a postfix-mta-sts-resolver ``mta-sts-daemon.yml`` into a :class:`Config`.

    Returns the configuration and notes (one line each) saying what mapped how and what has no equivalent.
    Unknown keys are ignored with a note, as the peer itself ignores them; wrong types are ConfigError.
    """
    import yaml

    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = " ".join(str(getattr(exc, "problem", None) or exc).split())
        where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark is not None else source
        raise ConfigError(f"{where}: invalid YAML: {problem}") from None
    try:
        data, notes = _translate_peer(_peer_map(raw, "configuration"))
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    return config_from_dict(data, source=source), notes


def _translate_peer(cfg: dict) -> tuple[dict, list[str]]:
    notes: list[str] = []
    daemon: dict[str, Any] = {}
    refresh: dict[str, Any] = {}
    data: dict[str, Any] = {}

    # -- where to listen -------------------------------------------------------------------------------
    if cfg.get("path") is not None:
        path = _peer_str(cfg["path"], "path")
        daemon["listen"] = [f"unix:{path}"]
        notes.append(f"path: listens on daemon.listen = [\"unix:{path}\"]")
        if "host" in cfg or "port" in cfg:
            notes.append("host/port: ignored because path is set (as postfix-mta-sts-resolver does)")
        if cfg.get("mode") is not None:
            mode = cfg["mode"]
            if (isinstance(mode, int) and not isinstance(mode, bool) and mode > 0o777
                    and set(str(mode)) <= set("01234567")):
                notes.append(f"mode: {mode} read as octal 0o{mode} (YAML gave a decimal number)")
                mode = int(str(mode), 8)
            mode = _unix_mode(mode, "mode")
            assert mode is not None  # None only for a missing mode, and this one is set
            daemon["unix_mode"] = mode
            notes.append(f"mode: socket permissions -> daemon.unix_mode = {oct(mode)}")
    else:
        host = _peer_str(cfg.get("host", "127.0.0.1"), "host")
        port = _peer_int(cfg.get("port", 8461), "port")
        addr = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        if addr != "127.0.0.1:8461":
            daemon["listen"] = [addr]
        if "host" in cfg or "port" in cfg:
            notes.append(f"host/port: daemon.listen = [\"{addr}\"]")
        if cfg.get("mode") is not None:
            notes.append("mode: only applies to a unix socket (path); ignored")
    if "reuse_port" in cfg:
        _peer_bool(cfg["reuse_port"], "reuse_port")
        notes.append("reuse_port: no equivalent; mxsec runs one process per address and needs no SO_REUSEPORT")
    if "shutdown_timeout" in cfg:
        daemon["shutdown_timeout"] = _peer_number(cfg["shutdown_timeout"], "shutdown_timeout", positive=False)
        notes.append(f"shutdown_timeout: daemon.shutdown_timeout = {daemon['shutdown_timeout']:g}")

    # -- map names (zones) -----------------------------------------------------------------------------
    timeouts: dict[str, float] = {}
    if "default_zone" in cfg:
        zone, t = _peer_zone(cfg["default_zone"], "default_zone", notes)
        if t is not None:
            timeouts["default_zone"] = t
        if zone:
            daemon["default_zone"] = zone
            notes.append("default_zone: daemon.default_zone (strict_testing, require_sni, tlsrpt keep their meaning)")
        if zone.get("tlsrpt"):
            notes.append("default_zone.tlsrpt: map names without their own zone reply in the tlsrpt dialect, "
                         "which Postfix before 3.10 rejects; mxsec also always serves that dialect as map 'tlsrpt'")
    zones = _peer_map(cfg.get("zones"), "zones")
    if zones:
        daemon["zones"] = {}
    for name, zone_cfg in zones.items():
        name = str(name)
        zone, t = _peer_zone(zone_cfg, f"zones.{name}", notes)
        if t is not None:
            timeouts[f"zones.{name}"] = t
        daemon["zones"][name] = zone
        notes.append(f"zones.{name}: daemon.zones.{_toml_key(name)}")
        if zone.get("tlsrpt"):
            notes.append(f"zones.{name}.tlsrpt: map '{name}' replies in the tlsrpt dialect (Postfix 3.10+ attributes)")
            if name in ("postfix", "QUERY"):
                notes.append(f"zones.{name}.tlsrpt: mxsec never sends tlsrpt attributes under map '{name}' "
                             "(older Postfix rejects them); point Postfix 3.10+ at map 'tlsrpt' instead")
    if timeouts:
        chosen_key = "default_zone" if "default_zone" in timeouts else next(iter(timeouts))
        chosen = timeouts[chosen_key]
        data["dns"] = {"timeout": chosen}
        data["https"] = {"timeout": chosen}
        notes.append(
            f"{chosen_key}.timeout: dns.timeout = https.timeout = {chosen:g} (the peer's limit covered a whole "
            f"lookup; mxsec applies it per DNS query and per policy fetch, and daemon.lookup_timeout "
            f"({DaemonConfig().lookup_timeout:g} s) bounds a whole lookup)"
        )
        for key, value in timeouts.items():
            if key != chosen_key and value != chosen:
                notes.append(f"{key}.timeout: mxsec has no per-map timeout; {value:g} ignored, {chosen:g} used")

    # -- refresh timing --------------------------------------------------------------------------------
    if "cache_grace" in cfg:
        grace = _peer_number(cfg["cache_grace"], "cache_grace", positive=False)
        refresh["recheck_after"] = grace
        notes.append(
            f"cache_grace: refresh.recheck_after = {grace:g} (the peer re-checked the TXT id during a lookup once "
            "an entry was older than this; mxsec re-checks entries confirmed longer ago than this)"
        )
    pf = _peer_map(cfg.get("proactive_policy_fetching"), "proactive_policy_fetching")
    pf_enabled = _peer_bool(pf.get("enabled", False), "proactive_policy_fetching.enabled")
    for key in pf:
        if key not in ("enabled", "interval", "concurrency_limit", "grace_ratio"):
            notes.append(f"proactive_policy_fetching.{key}: unknown; ignored")
    if not pf_enabled:
        notes.append(
            "proactive_policy_fetching.enabled: false in the peer (its default); mxsec always refreshes cached "
            "policies before they expire (RFC 8461 section 3.3 SHOULD) unless refresh.enabled = false"
        )
    interval = _PEER_PF_INTERVAL
    if "interval" in pf:
        interval = _peer_number(pf["interval"], "proactive_policy_fetching.interval")
        refresh["interval"] = interval
        notes.append(f"proactive_policy_fetching.interval: refresh.interval = {interval:g}")
    if "concurrency_limit" in pf:
        refresh["concurrency"] = _peer_int(pf["concurrency_limit"], "proactive_policy_fetching.concurrency_limit")
        notes.append(f"proactive_policy_fetching.concurrency_limit: refresh.concurrency = {refresh['concurrency']}")
    if "grace_ratio" in pf:
        ratio = _peer_number(pf["grace_ratio"], "proactive_policy_fetching.grace_ratio")
        skip = interval / ratio
        if "recheck_after" in refresh:
            notes.append(
                f"proactive_policy_fetching.grace_ratio: the peer skipped entries fetched less than interval/ratio "
                f"= {skip:g} s ago; mxsec skips entries confirmed less than refresh.recheck_after ago, "
                "which cache_grace already sets"
            )
        else:
            refresh["recheck_after"] = skip
            notes.append(
                f"proactive_policy_fetching.grace_ratio: refresh.recheck_after = interval/ratio = {skip:g} (the "
                "refresher re-checks entries confirmed longer ago than this, as the peer did)"
            )

    # -- cache backend ---------------------------------------------------------------------------------
    cache = _peer_map(cfg.get("cache"), "cache")
    ctype = cache.get("type", "internal") if "cache" in cfg else None
    options = _peer_map(cache.get("options"), "cache.options")
    for key in cache:
        if key not in ("type", "options"):
            notes.append(f"cache.{key}: unknown; ignored")
    if ctype is None:
        notes.append(
            "cache: not set (the peer then kept policies in memory only); mxsec uses its default SQLite cache, "
            "which survives restarts"
        )
    elif ctype == "internal":
        data["cache"] = {"url": "memory://"}
        notes.append(
            "cache.type internal: cache.url = \"memory://\"; mxsec's default SQLite cache survives restarts and "
            "is recommended: remove cache.url to use it"
        )
        if "cache_size" in options:
            notes.append("cache.options.cache_size: no equivalent (the memory:// cache has no size limit); ignored")
        for key in sorted(set(options) - {"cache_size"}):
            notes.append(f"cache.options.{key}: unknown for the internal cache; ignored")
    elif ctype == "sqlite":
        if "filename" in options:
            filename = _peer_str(options["filename"], "cache.options.filename")
            url = _sqlite_url(filename)
            data["cache"] = {"url": url}
            notes.append(
                f"cache.options.filename: cache.url = \"{url}\" (mxsec keeps its own tables in the file; "
                "the peer's cached policies are fetched again on first use)"
            )
            if not os.path.isabs(filename):
                notes.append("cache.options.filename: relative path, resolved from the daemon's working directory")
        else:
            notes.append("cache.options.filename: missing; mxsec uses its default SQLite cache file")
        for key in ("threads", "timeout"):
            if key in options:
                notes.append(f"cache.options.{key}: no equivalent (mxsec uses one SQLite connection); ignored")
        for key in sorted(set(options) - {"filename", "threads", "timeout"}):
            notes.append(f"cache.options.{key}: unknown for the sqlite cache; ignored")
    elif ctype == "redis":
        redis_url = _peer_redis_url(options, notes)
        if redis_url is not None:
            data["cache"] = {"url": redis_url}
            notes.append(f"cache.type redis: cache.url = \"{_redact(redis_url)}\"")
    elif ctype == "postgres":
        url = _peer_postgres_url(options, notes)
        data["cache"] = {"url": url}
        notes.append(f"cache.type postgres: cache.url = \"{_redact(url)}\"")
    else:
        raise ConfigError(f"cache.type: expected internal, sqlite, redis or postgres, got {_show(ctype)}")

    for key in cfg:
        if key not in PEER_KEYS:
            notes.append(f"{key}: unknown to postfix-mta-sts-resolver and mxsec; ignored")

    if daemon:
        data["daemon"] = daemon
    if refresh:
        data["refresh"] = refresh
    return data, notes



def _redact(url: str) -> str:
    from ..storage.urls import redact  # local import: the storage package is an adapter

    return redact(url)


def migrate_config(yaml_text: str, source: str = "mta-sts-daemon.yml") -> str:
    """The TOML equivalent of a postfix-mta-sts-resolver YAML file, with the migration notes as comments."""
    config, notes = from_peer_yaml(yaml_text, source=source)
    header = [
        f"mxsec configuration migrated from {source} (postfix-mta-sts-resolver).",
        "Only values that differ from mxsec's defaults are written; see docs/configuration.md.",
        "Postfix's main.cf stays as it is: same address, same map names.",
    ]
    if notes:
        header.append("")
        header.append("Migration notes:")
        header.extend(f"- {note}" for note in notes)
    return config_to_toml(config, header=header)
