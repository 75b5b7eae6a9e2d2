"""One configuration model for the whole program.

The configuration is a tree of frozen dataclasses (:class:`Config` at the root), filled from, in order of
precedence: command-line flags (:func:`apply_overrides`), the TOML file (:func:`load_config`), the defaults
written here. A postfix-mta-sts-resolver YAML file is accepted in place of the TOML file and translated by
:func:`from_peer_yaml` (see ``docs/migration.md``).

Every problem is a :class:`~mxsec.errors.ConfigError` whose message is one line naming the file and the key,
for example ``mxsec.toml: daemon.lookup_timeout: expected a number, got "x"``.

Value checks live in each dataclass's ``__post_init__``, so a configuration built in code is checked the same
way as one read from a file.
"""

from __future__ import annotations

import difflib
import ipaddress
import json
import logging
import math
import os
import re
import tomllib
from dataclasses import MISSING, dataclass, field, fields, replace
from typing import Any, Iterable, Mapping
from urllib.parse import quote

import tomli_w

from ..errors import ConfigError

log = logging.getLogger("mxsec.config")

SYSTEM_CONFIG_PATH = "/etc/mxsec/mxsec.toml"
#: Postfix gives up on a socketmap lookup after ``socketmap_timeout`` (100 s); an answer must come before.
POSTFIX_SOCKETMAP_TIMEOUT = 100.0
#: Map names the daemon always serves (see docs/interface): they need no ``daemon.zones`` entry.
BUILTIN_MAP_NAMES = ("postfix", "QUERY", "tlsrpt", "QUERYwithTLSRPT", "exim")
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
LOG_FORMATS = ("json", "text")


# ---------------------------------------------------------------------------------------------------------
# Default locations
# ---------------------------------------------------------------------------------------------------------


def default_state_dir() -> str:
    """Where mxsec keeps its state (caches, counters).

    ``$STATE_DIRECTORY`` when systemd provides one (``StateDirectory=mxsec`` in the unit), else
    ``/var/lib/mxsec`` for root, else ``$XDG_STATE_HOME/mxsec`` or ``~/.local/state/mxsec``.
    """
    systemd = os.environ.get("STATE_DIRECTORY", "")
    first = systemd.split(":")[0]
    if first and os.path.isabs(first):
        return first
    geteuid = getattr(os, "geteuid", None)
    if geteuid is not None and geteuid() == 0:
        return "/var/lib/mxsec"
    base = os.environ.get("XDG_STATE_HOME", "")
    if not base or not os.path.isabs(base):
        base = os.path.join(os.path.expanduser("~"), ".local", "state")
    return os.path.join(base, "mxsec")


def default_data_dir() -> str:
    """Where mxsec keeps data a user asked it to keep (received reports): ``/var/lib/mxsec`` for root, else
    ``$XDG_DATA_HOME/mxsec`` or ``~/.local/share/mxsec``."""
    geteuid = getattr(os, "geteuid", None)
    if geteuid is not None and geteuid() == 0:
        return "/var/lib/mxsec"
    base = os.environ.get("XDG_DATA_HOME", "")
    if not base or not os.path.isabs(base):
        base = os.path.join(os.path.expanduser("~"), ".local", "share")
    return os.path.join(base, "mxsec")


def _sqlite_url(path: str) -> str:
    return "sqlite:///" + path


def default_cache_url() -> str:
    """``sqlite:////var/lib/mxsec/cache.sqlite3`` as root, else the file in the user's state directory."""
    return _sqlite_url(os.path.join(default_state_dir(), "cache.sqlite3"))


def default_tlsrpt_db_url() -> str:
    """The sender-side TLSRPT session counter database, next to the policy cache."""
    return _sqlite_url(os.path.join(default_state_dir(), "tlsrpt.sqlite3"))


def default_reports_db_url() -> str:
    """The database of received TLSRPT reports (``mxsec reports``), in the data directory."""
    return _sqlite_url(os.path.join(default_data_dir(), "reports.sqlite3"))


# ---------------------------------------------------------------------------------------------------------
# Value parsers (messages without a key; callers add the key or the option name)
# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ListenAddress:
    """A parsed listening address: ``kind`` is ``tcp`` (``host``, ``port``) or ``unix`` (``path``)."""

    kind: str
    host: str | None = None
    port: int | None = None
    path: str | None = None

    def __str__(self) -> str:
        if self.kind == "unix":
            return f"unix:{self.path}"
        host = self.host or ""
        if ":" in host:
            return f"[{host}]:{self.port}"
        return f"{host}:{self.port}"


_HOSTNAME = re.compile(
    r"(?=.{1,253}\.?$)"
    r"([A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)"
    r"(\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?"
)


def _port(text: str, what: str, lowest: int = 0) -> int:
    if not text.isascii() or not text.isdigit() or not lowest <= int(text) <= 65535:
        raise ConfigError(f"bad {what} {text!r}: the port must be a number from {lowest} to 65535")
    return int(text)


def parse_listen(addr: str) -> ListenAddress:
    """Parse ``HOST:PORT``, ``[IPv6]:PORT`` or ``unix:/path``; raise ConfigError (one line) when bad.

    Port 0 means "any free port" (useful in tests).
    """
    if not isinstance(addr, str):
        raise ConfigError(f"bad listen address {addr!r}: expected a string")
    if any(ch in addr for ch in "\0\r\n\t ") or not addr:
        raise ConfigError(f"bad listen address {addr!r}: use HOST:PORT, [IPv6]:PORT or unix:/path")
    if addr.startswith("unix:"):
        path = addr[len("unix:"):]
        if not path:
            raise ConfigError(f"bad listen address {addr!r}: no socket path after unix:")
        return ListenAddress("unix", path=path)
    if addr.startswith("["):
        host, sep, port = addr[1:].partition("]:")
        if not sep:
            raise ConfigError(f"bad listen address {addr!r}: write an IPv6 address as [ADDRESS]:PORT")
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ConfigError(f"bad listen address {addr!r}: {host!r} is not an IPv6 address") from None
        return ListenAddress("tcp", host=host, port=_port(port, "listen address"))
    host, sep, port = addr.rpartition(":")
    if not sep:
        raise ConfigError(f"bad listen address {addr!r}: no port; use HOST:PORT, [IPv6]:PORT or unix:/path")
    if ":" in host:
        raise ConfigError(f"bad listen address {addr!r}: write an IPv6 address as [ADDRESS]:PORT")
    if not host:
        raise ConfigError(f"bad listen address {addr!r}: no host; use 0.0.0.0:PORT or [::]:PORT for all addresses")
    try:
        ipaddress.IPv4Address(host)
    except ValueError:
        if not _HOSTNAME.fullmatch(host) or host.replace(".", "").isdigit():
            raise ConfigError(f"bad listen address {addr!r}: {host!r} is not an IPv4 address or host name") from None
    return ListenAddress("tcp", host=host, port=_port(port, "listen address"))


def parse_nameserver(text: str) -> tuple[str, int]:
    """Parse ``IP``, ``IP:PORT``, ``IPv6`` or ``[IPv6]:PORT`` into ``(ip, port)``; the default port is 53.

    The one parser of nameserver addresses: the configuration, the command line (``--nameserver``) and the
    daemon all use it (``mxsec.net.dns.parse_nameserver`` raises ValueError instead of ConfigError)."""
    if not isinstance(text, str) or not text:
        raise ConfigError(f"bad nameserver {text!r}: expected IP[:PORT]")
    if text.startswith("["):
        host, sep, port = text[1:].partition("]")
        if port.startswith(":"):
            port_no = _port(port[1:], "nameserver", lowest=1)
        elif port == "":
            port_no = 53
        else:
            raise ConfigError(f"bad nameserver {text!r}: expected [IPv6]:PORT")
        if not sep:
            raise ConfigError(f"bad nameserver {text!r}: expected [IPv6]:PORT")
        try:
            return str(ipaddress.IPv6Address(host)), port_no
        except ValueError:
            raise ConfigError(f"bad nameserver {text!r}: {host!r} is not an IPv6 address") from None
    try:
        return str(ipaddress.ip_address(text)), 53
    except ValueError:
        pass
    host, sep, port = text.rpartition(":")
    if sep and ":" not in host:
        try:
            return str(ipaddress.IPv4Address(host)), _port(port, "nameserver", lowest=1)
        except ValueError:
            pass
    raise ConfigError(f"bad nameserver {text!r}: expected an IP address, IP:PORT or [IPv6]:PORT (no host names)")


def parse_network(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    """Parse an address range ``CIDR`` (a bare address is a /32 or /128); host bits may be set."""
    try:
        return ipaddress.ip_network(text, strict=False)
    except (ValueError, TypeError):
        raise ConfigError(f"bad address range {text!r}: expected CIDR such as 10.0.0.0/8 or fd00::/8") from None


def _check_duration(value: float, key: str, *, minimum: float = 0.0, allow_zero: bool = False) -> None:
    if not math.isfinite(value) or value < minimum or (value == minimum and not allow_zero):
        if allow_zero:
            raise ConfigError(f"{key}: must be a number of seconds >= {minimum:g}, got {value!r}")
        raise ConfigError(f"{key}: must be a number of seconds > {minimum:g}, got {value!r}")


def _check_cache_url(url: str, key: str) -> None:
    from ..storage import parse_store_url  # local import: the store package is an adapter

    try:
        parse_store_url(url)
    except ConfigError as exc:
        raise ConfigError(f"{key}: {exc}") from None


def _unix_mode(value: Any, key: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, str):
        text = value.strip().lower()
        text = text[2:] if text.startswith("0o") else text
        if not text or any(ch not in "01234567" for ch in text):
            raise ConfigError(f"{key}: expected an octal permission such as 0o660, got {_show(value)}")
        value = int(text, 8)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{key}: expected an octal permission such as 0o660, got {_show(value)}")
    if not 0 <= value <= 0o777:
        raise ConfigError(f"{key}: permission must be between 0o000 and 0o777, got {oct(value)}")
    return value


# ---------------------------------------------------------------------------------------------------------
# The model
# ---------------------------------------------------------------------------------------------------------


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

    def __post_init__(self) -> None:
        _check_cache_url(self.url, "cache.url")


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


def _show(value: Any) -> str:
    """A value as a short one-line TOML-ish text for error messages."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        text = json.dumps(value, ensure_ascii=False)
        return text if len(text) <= 60 else text[:57] + '..."'
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "an array"
    if value is None:
        return "nothing"
    return type(value).__name__


def _type_error(key: str, expected: str, value: Any) -> ConfigError:
    return ConfigError(f"{key}: expected {expected}, got {_show(value)}")


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


# ---------------------------------------------------------------------------------------------------------
# Loading files
# ---------------------------------------------------------------------------------------------------------

#: Top-level keys of a postfix-mta-sts-resolver ``mta-sts-daemon.yml``.
PEER_KEYS = frozenset(
    {
        "host", "port", "path", "mode", "reuse_port", "shutdown_timeout", "cache_grace",
        "proactive_policy_fetching", "cache", "default_zone", "zones",
    }
)


def _read_text(path: str) -> str:
    try:
        with open(path, "rb") as fh:
            raw = fh.read()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start})") from None


def _toml_error(source: str, exc: tomllib.TOMLDecodeError) -> ConfigError:
    message = " ".join(str(exc).split())
    m = re.search(r"\s*\(at line (\d+), column (\d+)\)$", message)
    if m:
        return ConfigError(f"{source}:{m.group(1)}:{m.group(2)}: invalid TOML: {message[: m.start()]}")
    m = re.search(r"\s*\(at end of document\)$", message)
    if m:
        return ConfigError(f"{source}: invalid TOML at end of file: {message[: m.start()]}")
    return ConfigError(f"{source}: invalid TOML: {message}")


def _looks_like_peer_yaml(text: str) -> bool:
    try:
        import yaml

        data = yaml.safe_load(text)
    except Exception:  # any YAML problem means "not the peer's file"
        return False
    return isinstance(data, dict) and bool(data) and any(k in PEER_KEYS for k in data)


def load_config(path: str | None = None, *, notes: list[str] | None = None) -> Config:
    """Read the configuration file.

    ``path=None`` reads ``/etc/mxsec/mxsec.toml`` when it exists, else returns the defaults. A file named
    ``*.yml``/``*.yaml``, or one that is not TOML but is a postfix-mta-sts-resolver YAML mapping, is translated
    with :func:`from_peer_yaml`; its migration notes are logged (level info) and appended to ``notes`` when a
    list is given.
    """
    if path is None:
        if not os.path.exists(SYSTEM_CONFIG_PATH):
            return Config()
        path = SYSTEM_CONFIG_PATH
    text = _read_text(path)
    if path.lower().endswith((".yml", ".yaml")):
        return _load_peer(text, path, notes)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        if _looks_like_peer_yaml(text):
            return _load_peer(text, path, notes)
        raise _toml_error(path, exc) from None
    return config_from_dict(data, source=path)


def _load_peer(text: str, source: str, notes: list[str] | None) -> Config:
    config, found = from_peer_yaml(text, source=source)
    for note in found:
        log.info("%s: %s", source, note)
    if notes is not None:
        notes.extend(found)
    return config


# ---------------------------------------------------------------------------------------------------------
# Command-line overrides
# ---------------------------------------------------------------------------------------------------------


def _flag(option: str, check: Any, *args: Any) -> Any:
    try:
        return check(*args)
    except ConfigError as exc:
        raise ConfigError(f"{option}: {exc}") from None


def _given(value: Any) -> bool:
    return value is not None and not (isinstance(value, (list, tuple)) and len(value) == 0)


def apply_overrides(
    config: Config,
    *,
    listen: Iterable[str] | None = None,
    cache: str | None = None,
    nameservers: Iterable[str] | None = None,
    ca_file: str | None = None,
    timeout: float | None = None,
    allow_addresses: Iterable[str] | None = None,
    lookup_timeout: float | None = None,
    metrics_listen: str | None = None,
    log_level: str | None = None,
    log_format: str | None = None,
    tlsrpt_db: str | None = None,
    organization_name: str | None = None,
    contact_info: str | None = None,
) -> Config:
    """Return ``config`` with command-line values in place of the file's.

    ``None`` (or an empty list) means "flag not given". Repeatable flags replace the file's list, they do not
    add to it. ``timeout`` sets both ``dns.timeout`` and ``https.timeout`` (``--timeout``). Errors name the
    option: ``--listen: bad listen address 'x': ...``.
    """
    dns, https, tls, net, store = config.dns, config.https, config.tls, config.net, config.cache
    daemon, metrics, logc, tlsrpt = config.daemon, config.metrics, config.log, config.tlsrpt

    def checked(option: str, build: Any) -> Any:
        try:
            return build()
        except ConfigError as exc:
            message = str(exc)
            # "section.key: problem" -> "--option: problem"
            message = re.sub(r"^[a-z_]+\.[a-z_]+(\[\d+\])?: ", "", message)
            raise ConfigError(f"{option}: {message}") from None

    if _given(nameservers):
        dns = checked("--nameserver", lambda: replace(dns, nameservers=list(nameservers)))  # type: ignore[arg-type]
    if timeout is not None:
        t = checked("--timeout", lambda: _number_flag(timeout))
        dns = checked("--timeout", lambda: replace(dns, timeout=t))
        https = checked("--timeout", lambda: replace(https, timeout=t))
    if ca_file is not None:
        tls = checked("--ca-file", lambda: replace(tls, ca_file=ca_file))
    if _given(allow_addresses):
        net = checked("--allow-address", lambda: replace(net, allow_addresses=list(allow_addresses)))  # type: ignore[arg-type]
    if cache is not None:
        store = checked("--cache", lambda: replace(config.cache, url=cache))
    if _given(listen):
        daemon = checked("--listen", lambda: replace(daemon, listen=list(listen)))  # type: ignore[arg-type]
    if lookup_timeout is not None:
        lt = checked("--lookup-timeout", lambda: _number_flag(lookup_timeout))
        daemon = checked("--lookup-timeout", lambda: replace(daemon, lookup_timeout=lt))
    if metrics_listen is not None:
        metrics = checked("--metrics-listen", lambda: replace(metrics, listen=metrics_listen))
    if log_level is not None:
        logc = checked("--log-level", lambda: replace(logc, level=log_level))
    if log_format is not None:
        logc = checked("--log-format", lambda: replace(logc, format=log_format))
    if tlsrpt_db is not None:
        tlsrpt = checked("--db", lambda: replace(tlsrpt, db=tlsrpt_db))
    if organization_name is not None:
        tlsrpt = replace(tlsrpt, organization_name=organization_name)
    if contact_info is not None:
        tlsrpt = replace(tlsrpt, contact_info=contact_info)
    return replace(
        config, dns=dns, https=https, tls=tls, net=net, cache=store, daemon=daemon,
        metrics=metrics, log=logc, tlsrpt=tlsrpt,
    )


def _number_flag(value: Any) -> float:
    if isinstance(value, bool):
        raise ConfigError(f"expected a number of seconds, got {value!r}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"expected a number of seconds, got {value!r}") from None
    if not math.isfinite(number) or number <= 0:
        raise ConfigError(f"expected a positive number of seconds, got {value!r}")
    return number


# ---------------------------------------------------------------------------------------------------------
# Writing TOML
# ---------------------------------------------------------------------------------------------------------

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def _toml_key(key: str) -> str:
    return key if _BARE_KEY.fullmatch(key) else json.dumps(key)


def _toml_value(value: Any) -> str:
    return tomli_w.dumps({"v": value})[len("v = "):].rstrip("\n")


def _section_lines(obj: Any, defaults: Any, *, comments: bool) -> list[str]:
    lines: list[str] = []
    for f in fields(obj):
        kind = f.metadata["kind"]
        if kind in ("zone", "zones", "section"):
            continue
        value = getattr(obj, f.name)
        if value == getattr(defaults, f.name):
            continue
        if value is None:  # cannot be written in TOML; None is always the default here
            continue
        if comments and f.metadata.get("doc"):
            lines.append(f"# {f.metadata['doc']}")
        if kind == "mode":
            lines.append(f"{f.name} = {oct(value)}")
        else:
            lines.append(f"{_toml_key(f.name)} = {_toml_value(value)}")
    return lines


def config_to_toml(config: Config, *, header: Iterable[str] = (), comments: bool = True) -> str:
    """TOML text for ``config`` holding only the values that differ from the defaults.

    ``header`` lines are written first as comments. ``load_config`` of the result gives back ``config``
    (defaults that depend on the environment, like the cache path, are taken where the file is read).
    """
    out: list[str] = [f"# {line}".rstrip() for line in header]
    if not out:
        out.append("# mxsec configuration; only values that differ from the defaults are listed.")
        out.append("# Reference: docs/configuration.md")
    defaults = Config()

    def block(title: str, lines: list[str], always: bool = False) -> None:
        if lines or always:
            out.append("")
            out.append(f"[{title}]")
            out.extend(lines)

    for name in _SECTIONS:
        section = getattr(config, name)
        block(name, _section_lines(section, getattr(defaults, name), comments=comments))
        if name == "daemon":
            block(
                "daemon.default_zone",
                _section_lines(section.default_zone, ZoneConfig(), comments=comments),
            )
            for zone_name, zone in section.zones.items():
                block(
                    f"daemon.zones.{_toml_key(zone_name)}",
                    _section_lines(zone, ZoneConfig(), comments=comments),
                    always=True,
                )
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------------------------------------------------
# Migration from postfix-mta-sts-resolver
# ---------------------------------------------------------------------------------------------------------

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
        url = _peer_redis_url(options, notes)
        if url is not None:
            data["cache"] = {"url": url}
            notes.append(f"cache.type redis: cache.url = \"{_redact(url)}\"")
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
    return re.sub(r"(://[^/@:]*:)[^/@]*@", r"\1***@", url)


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
