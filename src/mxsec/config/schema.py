"""The configuration model: one frozen dataclass per TOML section, :class:`Config` at the root.

Each field carries its kind (how a TOML value is converted) and a one-line description (written as a comment by
:func:`mxsec.config.toml_out.config_to_toml`). Value checks live in each dataclass's ``__post_init__``, so a
configuration built in code is checked the same way as one read from a file. :func:`config_from_dict` builds a
:class:`Config` from parsed TOML and names the key in every error (``daemon.lookup_timeout: expected a number,
got "x"``); unknown keys are errors, with a suggestion.
"""

from __future__ import annotations

import difflib
import math
from dataclasses import MISSING, dataclass, field, fields
from typing import Any, Mapping

from ..errors import ConfigError
from .paths import default_cache_copy_path, default_cache_url, default_tlsrpt_db_url
from .values import (
    _check_cache_url,
    _check_duration,
    _show,
    _toml_key,
    _type_error,
    _unix_mode,
    parse_listen,
    parse_nameserver,
    parse_network,
)

#: Postfix gives up on a socketmap lookup after ``socketmap_timeout`` (100 s); an answer must come before.
POSTFIX_SOCKETMAP_TIMEOUT = 100.0
#: Map names the daemon always serves (see docs/interface): they need no ``daemon.zones`` entry.
BUILTIN_MAP_NAMES = ("postfix", "QUERY", "tlsrpt", "QUERYwithTLSRPT", "exim")
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
LOG_FORMATS = ("json", "text")


def _opt(default: Any = MISSING, *, kind: str, doc: str = "", factory: Any = MISSING) -> Any:
    meta = {"kind": kind, "doc": doc}
    if factory is not MISSING:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


def _set(obj: Any, name: str, value: Any) -> None:
    object.__setattr__(obj, name, value)


@dataclass(frozen=True)
class DnsConfig:
    nameservers: list[str] = _opt(
        kind="strlist", factory=list,
        doc="resolvers to query instead of /etc/resolv.conf; their AD bit is trusted for DNSSEC",
    )
    timeout: float = _opt(5.0, kind="number", doc="seconds per DNS query")

    def __post_init__(self) -> None:
        _set(self, "nameservers", list(self.nameservers))
        for ns in self.nameservers:
            try:
                parse_nameserver(ns)
            except ConfigError as exc:
                raise ConfigError(f"dns.nameservers: {exc}") from None
        _set(self, "timeout", float(self.timeout))
        _check_duration(self.timeout, "dns.timeout")


@dataclass(frozen=True)
class HttpsConfig:
    timeout: float = _opt(20.0, kind="number", doc="seconds for a whole policy fetch")
    max_body: int = _opt(65536, kind="int", doc="largest policy file accepted, in bytes")

    def __post_init__(self) -> None:
        _set(self, "timeout", float(self.timeout))
        _check_duration(self.timeout, "https.timeout")
        if self.max_body < 1:
            raise ConfigError(f"https.max_body: must be a positive number of bytes, got {self.max_body!r}")


@dataclass(frozen=True)
class TlsConfig:
    ca_file: str | None = _opt(
        None, kind="optstr", doc="PEM trust roots instead of the system store (policy fetch and SMTP)"
    )

    def __post_init__(self) -> None:
        if self.ca_file is not None and not self.ca_file:
            raise ConfigError("tls.ca_file: empty path")


@dataclass(frozen=True)
class NetConfig:
    allow_addresses: list[str] = _opt(
        kind="strlist", factory=list,
        doc="CIDR ranges of loopback/private/reserved addresses that may be contacted anyway (SSRF guard)",
    )

    def __post_init__(self) -> None:
        _set(self, "allow_addresses", list(self.allow_addresses))
        for text in self.allow_addresses:
            try:
                parse_network(text)
            except ConfigError as exc:
                raise ConfigError(f"net.allow_addresses: {exc}") from None


@dataclass(frozen=True)
class CacheConfig:
    url: str = _opt(
        kind="str", factory=default_cache_url,
        doc="policy cache: sqlite:///PATH (survives restarts), memory://, redis://..., postgresql://...",
    )
    local_copy: str = _opt(
        kind="str", factory=default_cache_copy_path,
        doc="with a Redis or PostgreSQL cache, an SQLite copy of its policies on this host, read at start when "
            "the shared cache is down; '' = none",
    )
    fleet_lease: float = _opt(
        20.0, kind="number",
        doc="on a Redis or PostgreSQL cache, the daemons resolve each domain once: seconds a lease lives (how "
            "long the others wait for a holder that died); 0 = every daemon resolves on its own",
    )

    def __post_init__(self) -> None:
        _check_cache_url(self.url, "cache.url")
        _set(self, "fleet_lease", float(self.fleet_lease))
        _check_duration(self.fleet_lease, "cache.fleet_lease", allow_zero=True)
        if self.fleet_lease > 600:
            raise ConfigError(f"cache.fleet_lease: at most 600 seconds, got {self.fleet_lease:g}")


@dataclass(frozen=True)
class ZoneConfig:
    """Settings of one socketmap map name (the first word of a request; the peer calls it a zone)."""

    strict_testing: bool = _opt(False, kind="bool", doc="treat mode testing like enforce")
    require_sni: bool = _opt(True, kind="bool", doc="add servername=hostname to secure replies")
    strict_mx_names: bool = _opt(
        True, kind="bool",
        doc="secure replies list the MX host names that match the policy, not its patterns (Postfix <= 3.10.4)",
    )
    tlsrpt: bool = _opt(False, kind="bool", doc="reply in the tlsrpt dialect (Postfix 3.10+ attributes)")


@dataclass(frozen=True)
class DaemonConfig:
    listen: list[str] = _opt(
        kind="strlist", factory=lambda: ["127.0.0.1:8461"],
        doc="HOST:PORT, [IPv6]:PORT or unix:/path",
    )
    lookup_timeout: float = _opt(
        30.0, kind="number",
        doc="answer (TEMP if need be) within this many seconds; must stay below Postfix's socketmap_timeout (100 s)",
    )
    max_connections: int = _opt(
        1024, kind="int", doc="simultaneous client connections; beyond, the least useful one makes room",
    )
    shutdown_timeout: float = _opt(10.0, kind="number", doc="seconds to finish open requests on stop")
    unix_mode: int | None = _opt(None, kind="mode", doc="permissions of unix: sockets, e.g. 0o660")
    max_pending: int = _opt(100, kind="int", doc="unanswered requests per connection; beyond, TEMP at once")
    idle_timeout: float = _opt(300.0, kind="number", doc="close a connection with nothing to answer after this long")
    partial_timeout: float = _opt(10.0, kind="number", doc="close a connection stuck in mid-request after this long")
    client_resolutions: int = _opt(32, kind="int", doc="resolutions one connection may have running at once (of 256)")
    table_limit: int = _opt(100_000, kind="int", doc="destinations kept per in-memory table (no-policy answers...)")
    zones: dict[str, ZoneConfig] = _opt(kind="zones", factory=dict, doc="settings per map name")
    default_zone: ZoneConfig = _opt(kind="zone", factory=ZoneConfig, doc="settings of other map names")

    def __post_init__(self) -> None:
        _set(self, "listen", list(self.listen))
        if not self.listen:
            raise ConfigError("daemon.listen: at least one address is needed")
        seen: set[str] = set()
        for addr in self.listen:
            try:
                parsed = str(parse_listen(addr))
            except ConfigError as exc:
                raise ConfigError(f"daemon.listen: {exc}") from None
            if parsed in seen:
                raise ConfigError(f"daemon.listen: {addr!r} is listed twice")
            seen.add(parsed)
        _set(self, "lookup_timeout", float(self.lookup_timeout))
        _check_duration(self.lookup_timeout, "daemon.lookup_timeout")
        if self.lookup_timeout >= POSTFIX_SOCKETMAP_TIMEOUT:
            raise ConfigError(
                f"daemon.lookup_timeout: must be below Postfix's socketmap timeout of "
                f"{POSTFIX_SOCKETMAP_TIMEOUT:g} s, got {self.lookup_timeout:g}"
            )
        if self.max_connections < 1:
            raise ConfigError(f"daemon.max_connections: must be at least 1, got {self.max_connections!r}")
        _set(self, "shutdown_timeout", float(self.shutdown_timeout))
        _check_duration(self.shutdown_timeout, "daemon.shutdown_timeout", allow_zero=True)
        for name in ("max_pending", "client_resolutions", "table_limit"):
            if getattr(self, name) < 1:
                raise ConfigError(f"daemon.{name}: must be at least 1, got {getattr(self, name)!r}")
        for name in ("idle_timeout", "partial_timeout"):
            _set(self, name, float(getattr(self, name)))
            _check_duration(getattr(self, name), f"daemon.{name}")
        _set(self, "unix_mode", _unix_mode(self.unix_mode, "daemon.unix_mode"))
        _set(self, "zones", dict(self.zones))
        for name in self.zones:
            if not name or not name.isprintable() or any(ch.isspace() for ch in name) or ":" in name:
                raise ConfigError(
                    f"daemon.zones: bad map name {name!r}: one word without spaces or colons"
                )

    def zone(self, name: str) -> ZoneConfig:
        """The settings for map ``name``: its ``zones`` entry, else ``default_zone``."""
        return self.zones.get(name, self.default_zone)


@dataclass(frozen=True)
class RefreshConfig:
    enabled: bool = _opt(True, kind="bool", doc="refresh cached policies in the background (RFC 8461 3.3)")
    interval: float = _opt(3600.0, kind="number", doc="seconds between refresher runs")
    recheck_after: float = _opt(3600.0, kind="number", doc="re-check the TXT id of entries confirmed longer ago")
    force_fetch_after: float = _opt(
        86400.0, kind="number", doc="refetch the policy body this often even when the id did not change"
    )
    concurrency: int = _opt(32, kind="int", doc="domains refreshed at the same time")
    fail_retry: float = _opt(
        300.0, kind="number", doc="after a failed fetch, wait this long before fetching that domain+id again"
    )
    negative_ttl: float = _opt(300.0, kind="number", doc="seconds to remember that a domain has no policy")

    def __post_init__(self) -> None:
        for name in ("interval", "recheck_after", "force_fetch_after", "fail_retry", "negative_ttl"):
            _set(self, name, float(getattr(self, name)))
        _check_duration(self.interval, "refresh.interval")
        _check_duration(self.recheck_after, "refresh.recheck_after", allow_zero=True)
        _check_duration(self.force_fetch_after, "refresh.force_fetch_after")
        _check_duration(self.fail_retry, "refresh.fail_retry", allow_zero=True)
        _check_duration(self.negative_ttl, "refresh.negative_ttl", allow_zero=True)
        if self.concurrency < 1:
            raise ConfigError(f"refresh.concurrency: must be at least 1, got {self.concurrency!r}")


@dataclass(frozen=True)
class MetricsConfig:
    listen: str | None = _opt(None, kind="optstr", doc="HOST:PORT of the Prometheus endpoint (off when unset)")

    def __post_init__(self) -> None:
        if self.listen is not None:
            try:
                parsed = parse_listen(self.listen)
            except ConfigError as exc:
                raise ConfigError(f"metrics.listen: {exc}") from None
            if parsed.kind != "tcp":
                raise ConfigError(f"metrics.listen: {self.listen!r}: the metrics endpoint needs HOST:PORT")


@dataclass(frozen=True)
class LogConfig:
    level: str = _opt("info", kind="str", doc="debug, info, warning, error or critical")
    format: str = _opt("json", kind="str", doc="json (one object per line) or text")

    def __post_init__(self) -> None:
        level = self.level.lower()
        level = {"warn": "warning", "fatal": "critical"}.get(level, level)
        if level not in LOG_LEVELS:
            raise ConfigError(f"log.level: expected one of {', '.join(LOG_LEVELS)}, got {_show(self.level)}")
        _set(self, "level", level)
        fmt = self.format.lower()
        if fmt not in LOG_FORMATS:
            raise ConfigError(f"log.format: expected json or text, got {_show(self.format)}")
        _set(self, "format", fmt)


@dataclass(frozen=True)
class DaneConfig:
    enabled: bool = _opt(True, kind="bool", doc="look DANE up and let it take precedence over MTA-STS")
    mandatory: list[str] = _opt(
        kind="strlist", factory=list,
        doc="destinations that must use DANE: answered dane-only (.example.net = every subdomain)",
    )
    disabled: list[str] = _opt(
        kind="strlist", factory=list,
        doc="destinations whose DANE is ignored: MTA-STS decides, else TLS is still required (OK encrypt)",
    )

    def __post_init__(self) -> None:
        for name in ("mandatory", "disabled"):
            values = [v.strip().lower().rstrip(".") for v in getattr(self, name)]
            for value in values:
                bare = value.removeprefix(".")
                if not bare or " " in bare or ".." in bare or bare.startswith("."):
                    raise ConfigError(f"dane.{name}: not a domain name: {_show(value)}")
            _set(self, name, values)
        both = set(self.mandatory) & set(self.disabled)
        if both:
            raise ConfigError(f"dane: {sorted(both)[0]} is both mandatory and disabled")


@dataclass(frozen=True)
class TlsrptConfig:
    """Sender-side TLSRPT (``mxsec tlsrpt ...``)."""

    db: str = _opt(kind="str", factory=default_tlsrpt_db_url, doc="database of counted sessions")
    organization_name: str | None = _opt(None, kind="optstr", doc="organization-name of sent reports")
    contact_info: str | None = _opt(None, kind="optstr",
                                    doc="contact-info of sent reports (its domain names the files)")
    socket: str = _opt("/run/mxsec/tlsrpt.sock", kind="str", doc="datagram socket of `mxsec tlsrpt collect`")
    socket_mode: int | None = _opt(0o660, kind="mode", doc="permissions of the collector's socket")
    socket_group: str | None = _opt(None, kind="optstr", doc="group of the collector's socket (e.g. postfix)")
    flush_interval: float = _opt(1.0, kind="number", doc="seconds between two writes of counted sessions")
    smtp: str = _opt("127.0.0.1:25", kind="str", doc="relay for mailed reports, HOST[:PORT]")
    from_address: str | None = _opt(None, kind="optstr", doc="envelope and From: address (default contact_info)")
    dkim_key: str | None = _opt(None, kind="optstr", doc="PEM private key signing mailed reports")
    dkim_selector: str | None = _opt(None, kind="optstr", doc="DKIM selector of that key")
    dkim_domain: str | None = _opt(None, kind="optstr", doc="DKIM d= domain (default the submitter domain)")
    max_delay: float = _opt(3600.0, kind="number", doc="seconds after 00:00 UTC over which sending is spread")
    record_policies: bool = _opt(False, kind="bool", doc="the daemon records what it answered, for follow-log")

    def __post_init__(self) -> None:
        if "://" not in self.db:
            raise ConfigError(f"tlsrpt.db: expected a database URL such as sqlite:///PATH, got {_show(self.db)}")
        _set(self, "socket_mode", _unix_mode(self.socket_mode, "tlsrpt.socket_mode"))
        _set(self, "flush_interval", float(self.flush_interval))
        _check_duration(self.flush_interval, "tlsrpt.flush_interval")
        _set(self, "max_delay", float(self.max_delay))
        _check_duration(self.max_delay, "tlsrpt.max_delay", allow_zero=True)
        if not self.smtp or any(ch.isspace() for ch in self.smtp):
            raise ConfigError(f"tlsrpt.smtp: expected HOST[:PORT], got {_show(self.smtp)}")


@dataclass(frozen=True)
class ReportsConfig:
    """The report receiver (``mxsec reports serve``): who may POST /tlsrpt (docs/reports.md)."""

    post_tokens: list[str] = _opt(kind="strlist", factory=list,
                                  doc="bearer tokens accepted on POST /tlsrpt (at least 16 characters)")
    post_token_hashes: list[str] = _opt(kind="strlist", factory=list,
                                        doc="SHA-256 (hex) of bearer tokens accepted on POST /tlsrpt")
    post_client_ca: str | None = _opt(None, kind="optstr",
                                      doc="PEM CA file: its client certificates authenticate POST /tlsrpt (TLS)")
    post_require_auth: bool = _opt(False, kind="bool",
                                   doc="refuse (401) POST /tlsrpt without token or certificate")
    # the dashboard: login, allowed Host: names, connection limits (docs/reports.md, "Dashboard login")
    password_hash: str | None = _opt(None, kind="optstr",
                                     doc="dashboard login: output of `mxsec reports hash-password`")
    session_secret: str | None = _opt(None, kind="optstr", doc="key signing login cookies (default: random per start)")
    session_lifetime: float = _opt(43200.0, kind="number", doc="seconds a dashboard login lasts")
    auth_proxy_header: str | None = _opt(None, kind="optstr", doc="header set by an authenticating reverse proxy")
    auth_proxy_from: list[str] = _opt(kind="strlist", factory=lambda: ["127.0.0.1/32", "::1/128"],
                                      doc="addresses the auth_proxy_header is believed from")
    metrics_token: str | None = _opt(None, kind="optstr", doc="bearer token for /metrics when a login is set")
    allowed_hosts: list[str] = _opt(kind="strlist", factory=list, doc="more Host: names the dashboard answers")
    max_connections: int = _opt(200, kind="int", doc="open connections at most (oldest idle one closed)")
    header_timeout: float = _opt(10.0, kind="number", doc="seconds to send a request's headers")
    body_timeout: float = _opt(120.0, kind="number", doc="seconds to send a request's body")

    def __post_init__(self) -> None:
        self._check_dashboard()
        _set(self, "post_tokens", list(self.post_tokens))
        _set(self, "post_token_hashes", list(self.post_token_hashes))
        if self.post_client_ca is not None and not self.post_client_ca:
            raise ConfigError("reports.post_client_ca: empty path")
        if self.post_require_auth and not (self.post_tokens or self.post_token_hashes or self.post_client_ca):
            raise ConfigError("reports.post_require_auth needs post_tokens, post_token_hashes or post_client_ca")
        from ..reports.web.post_auth import PostAuth  # local import: stdlib only, but a web-side module

        PostAuth.build(tokens=self.post_tokens, token_hashes=self.post_token_hashes)  # ConfigError naming the key

    def _check_dashboard(self) -> None:
        _set(self, "auth_proxy_from", list(self.auth_proxy_from))
        _set(self, "allowed_hosts", list(self.allowed_hosts))
        for key in ("session_lifetime", "header_timeout", "body_timeout"):
            _set(self, key, float(getattr(self, key)))
            _check_duration(getattr(self, key), f"reports.{key}")
        if self.max_connections < 1:
            raise ConfigError(f"reports.max_connections: must be at least 1, got {self.max_connections!r}")
        self.dashboard_auth().check()

    def dashboard_auth(self) -> Any:
        """The :class:`~mxsec.reports.web.auth.AuthSettings` of the dashboard (login and Host: names)."""
        from ..reports.web.auth import AuthSettings  # local import, as for post_auth

        return AuthSettings(password_hash=self.password_hash, session_secret=self.session_secret,
                            session_lifetime=self.session_lifetime, proxy_header=self.auth_proxy_header,
                            proxy_from=list(self.auth_proxy_from), metrics_token=self.metrics_token,
                            allowed_hosts=list(self.allowed_hosts))

    def post_auth(self) -> Any:
        """The :class:`~mxsec.reports.web.post_auth.PostAuth` these settings describe (the CA file is read
        here, when the server starts, not when the configuration is loaded)."""
        from ..reports.web.post_auth import PostAuth

        return PostAuth.build(tokens=self.post_tokens, token_hashes=self.post_token_hashes,
                              client_ca=self.post_client_ca, require=self.post_require_auth)


@dataclass(frozen=True)
class Config:
    dns: DnsConfig = _opt(kind="section", factory=DnsConfig)
    https: HttpsConfig = _opt(kind="section", factory=HttpsConfig)
    tls: TlsConfig = _opt(kind="section", factory=TlsConfig)
    net: NetConfig = _opt(kind="section", factory=NetConfig)
    cache: CacheConfig = _opt(kind="section", factory=CacheConfig)
    daemon: DaemonConfig = _opt(kind="section", factory=DaemonConfig)
    refresh: RefreshConfig = _opt(kind="section", factory=RefreshConfig)
    metrics: MetricsConfig = _opt(kind="section", factory=MetricsConfig)
    log: LogConfig = _opt(kind="section", factory=LogConfig)
    dane: DaneConfig = _opt(kind="section", factory=DaneConfig)
    tlsrpt: TlsrptConfig = _opt(kind="section", factory=TlsrptConfig)
    reports: ReportsConfig = _opt(kind="section", factory=ReportsConfig)


_SECTIONS: dict[str, type] = {
    "dns": DnsConfig,
    "https": HttpsConfig,
    "tls": TlsConfig,
    "net": NetConfig,
    "cache": CacheConfig,
    "daemon": DaemonConfig,
    "refresh": RefreshConfig,
    "metrics": MetricsConfig,
    "log": LogConfig,
    "dane": DaneConfig,
    "tlsrpt": TlsrptConfig,
    "reports": ReportsConfig,
}


def all_keys() -> list[str]:
    """Every configuration key as ``section.key`` (zones as ``daemon.zones.NAME.key``), in file order."""
    keys: list[str] = []
    for section, cls in _SECTIONS.items():
        for f in fields(cls):
            if f.metadata["kind"] == "zone":
                keys.extend(f"daemon.{f.name}.{z.name}" for z in fields(ZoneConfig))
            elif f.metadata["kind"] == "zones":
                keys.extend(f"daemon.zones.NAME.{z.name}" for z in fields(ZoneConfig))
            else:
                keys.append(f"{section}.{f.name}")
    return keys


# ---------------------------------------------------------------------------------------------------------
# Building from parsed TOML
# ---------------------------------------------------------------------------------------------------------


def _convert(kind: str, value: Any, key: str, cls: type | None = None) -> Any:
    if kind == "number":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _type_error(key, "a number", value)
        if not math.isfinite(value):
            raise _type_error(key, "a finite number", value)
        return float(value)
    if kind == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise _type_error(key, "an integer", value)
        return value
    if kind == "bool":
        if not isinstance(value, bool):
            raise _type_error(key, "true or false", value)
        return value
    if kind in ("str", "optstr"):
        if not isinstance(value, str):
            raise _type_error(key, "a string", value)
        return value
    if kind == "strlist":
        if isinstance(value, str):
            raise _type_error(key, "an array of strings", value)
        if not isinstance(value, list):
            raise _type_error(key, "an array of strings", value)
        for i, item in enumerate(value):
            if not isinstance(item, str):
                raise _type_error(f"{key}[{i}]", "a string", item)
        return list(value)
    if kind == "mode":
        return _unix_mode(value, key)
    if kind == "zone":
        return _build(ZoneConfig, value, key)
    if kind == "zones":
        if not isinstance(value, dict):
            raise _type_error(key, "a table of map names", value)
        return {name: _build(ZoneConfig, zone, f"{key}.{_toml_key(name)}") for name, zone in value.items()}
    if kind == "section":
        assert cls is not None
        return _build(cls, value, key)
    raise AssertionError(kind)  # pragma: no cover


def _build(cls: type, data: Any, prefix: str) -> Any:
    if not isinstance(data, dict):
        raise _type_error(prefix or "configuration", "a table", data)
    known = {f.name: f for f in fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        path = f"{prefix}.{_toml_key(key)}" if prefix else _toml_key(key)
        if key not in known:
            hint = difflib.get_close_matches(key, list(known), n=1)
            where = f"[{prefix}]" if prefix else "the top level"
            suggestion = f" (did you mean {hint[0]!r}?)" if hint else f" (known in {where}: {', '.join(known)})"
            raise ConfigError(f"{path}: unknown key{suggestion}")
        f = known[key]
        kwargs[key] = _convert(f.metadata["kind"], value, path, _SECTIONS.get(key) if cls is Config else None)
    return cls(**kwargs)


def config_from_dict(data: Mapping[str, Any], source: str = "<config>") -> Config:
    """Build a :class:`Config` from parsed TOML; ConfigError ``source: key: problem`` when unusable."""
    try:
        return _build(Config, dict(data), "")
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None
