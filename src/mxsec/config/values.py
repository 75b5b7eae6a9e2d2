"""Value parsers and checks shared by the schema, the overrides and the migration.

The parsers (:func:`parse_listen`, :func:`parse_nameserver`, :func:`parse_network`) raise a
:class:`~mxsec.errors.ConfigError` whose message names no key; callers add the key or the option name. The
private helpers say how a value or a key is written in a one-line message (``_show``, ``_toml_key``).
"""

from __future__ import annotations

import ipaddress
import json
import math
import re
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError


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

    The one parser of nameserver addresses: the configuration, the command line (``--nameserver``), the daemon
    and the DKIM resolver of ``mxsec reports`` all use it."""
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
    from ..storage import parse_store_url  # local import: the storage package is an adapter

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
# How values and keys are written in messages
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


_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def _toml_key(key: str) -> str:
    return key if _BARE_KEY.fullmatch(key) else json.dumps(key)
