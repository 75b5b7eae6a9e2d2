"""One configuration model for the whole program.

The configuration is a tree of frozen dataclasses (:class:`Config` at the root), filled from, in order of
precedence: command-line flags (:func:`apply_overrides`), the TOML file (:func:`load_config`), the defaults.
A postfix-mta-sts-resolver YAML file is accepted in place of the TOML file and translated by
:func:`from_peer_yaml` (see ``docs/migration.md``).

Every problem is a :class:`~mxsec.errors.ConfigError` whose message is one line naming the file and the key,
for example ``mxsec.toml: daemon.lookup_timeout: expected a number, got "x"``.

Where things are (this package re-exports the public names, so ``from mxsec.config import X`` works):

- ``paths``: default locations (``SYSTEM_CONFIG_PATH``, ``default_state_dir``, ``default_data_dir``,
  ``default_cache_url``, ``default_tlsrpt_db_url``, ``default_reports_db_url``).
- ``values``: value parsers and checks (``parse_listen``/``ListenAddress``, ``parse_nameserver``,
  ``parse_network``, durations, permissions, the cache URL check) and how values and keys are shown in messages.
- ``schema``: the model (``DnsConfig`` ... ``ReportsConfig``, ``Config``, ``all_keys``) and its building from
  parsed TOML (``config_from_dict``).
- ``load``: reading a file (``load_config``): TOML, or a postfix-mta-sts-resolver YAML file recognised.
- ``overrides``: command-line flags over the file (``apply_overrides``).
- ``toml_out``: writing TOML (``config_to_toml``).
- ``peer``: the postfix-mta-sts-resolver migration (``from_peer_yaml``, ``migrate_config``, ``PEER_KEYS``).
- ``wiring``: the adapters a configuration describes (``make_dns_and_guard``, ``make_adapters``), shared by the
  daemon and the command-line tools. Not re-exported here: it imports the network adapters, which the rest of
  this package does not; import it as ``mxsec.config.wiring``.
"""

from __future__ import annotations

from .load import load_config
from .overrides import apply_overrides
from .paths import (
    SYSTEM_CONFIG_PATH,
    default_cache_url,
    default_data_dir,
    default_reports_db_url,
    default_state_dir,
    default_tlsrpt_db_url,
)
from .peer import PEER_KEYS, from_peer_yaml, migrate_config
from .schema import (
    BUILTIN_MAP_NAMES,
    LOG_FORMATS,
    LOG_LEVELS,
    POSTFIX_SOCKETMAP_TIMEOUT,
    CacheConfig,
    Config,
    DaemonConfig,
    DaneConfig,
    DnsConfig,
    HttpsConfig,
    LogConfig,
    MetricsConfig,
    NetConfig,
    RefreshConfig,
    ReportsConfig,
    TlsConfig,
    TlsrptConfig,
    ZoneConfig,
    all_keys,
    config_from_dict,
)
from .toml_out import config_to_toml
from .values import ListenAddress, parse_listen, parse_nameserver, parse_network

__all__ = [
    "BUILTIN_MAP_NAMES",
    "LOG_FORMATS",
    "LOG_LEVELS",
    "PEER_KEYS",
    "POSTFIX_SOCKETMAP_TIMEOUT",
    "SYSTEM_CONFIG_PATH",
    "CacheConfig",
    "Config",
    "DaemonConfig",
    "DaneConfig",
    "DnsConfig",
    "HttpsConfig",
    "ListenAddress",
    "LogConfig",
    "MetricsConfig",
    "NetConfig",
    "RefreshConfig",
    "ReportsConfig",
    "TlsConfig",
    "TlsrptConfig",
    "ZoneConfig",
    "all_keys",
    "apply_overrides",
    "config_from_dict",
    "config_to_toml",
    "default_cache_url",
    "default_data_dir",
    "default_reports_db_url",
    "default_state_dir",
    "default_tlsrpt_db_url",
    "from_peer_yaml",
    "load_config",
    "migrate_config",
    "parse_listen",
    "parse_nameserver",
    "parse_network",
]
