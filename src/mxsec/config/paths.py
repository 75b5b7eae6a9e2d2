"""Default locations: the system configuration file, the state and data directories, the default database URLs.

The defaults follow who runs mxsec: root (or a systemd ``StateDirectory=``) gets ``/var/lib/mxsec``, other users
get their XDG directories.
"""

from __future__ import annotations

import os

#: Read by :func:`mxsec.config.load.load_config` when no file is named.
SYSTEM_CONFIG_PATH = "/etc/mxsec/mxsec.toml"


def default_state_dir() -> str:
    """Where mxsec keeps its state (caches, counters).

    ``$STATE_DIRECTORY`` when systemd provides one (``StateDirectory=mxsec`` in the unit), else
    ``/var/lib/mxsec`` for root, else ``$XDG_STATE_HOME/mxsec`` or ``~/.local/state/mxsec``.
    """
    systemd = os.environ.get("STATE_DIRECTORY", "")
    first = systemd.split(":")[0]
    if first and os.path.isabs(first):
        return first
    return _root_or_xdg("XDG_STATE_HOME", ".local/state")


def default_data_dir() -> str:
    """Where mxsec keeps data a user asked it to keep (received reports): ``/var/lib/mxsec`` for root, else
    ``$XDG_DATA_HOME/mxsec`` or ``~/.local/share/mxsec``."""
    return _root_or_xdg("XDG_DATA_HOME", ".local/share")


def _root_or_xdg(variable: str, home_default: str) -> str:
    """``/var/lib/mxsec`` for root, else ``$variable/mxsec`` (an absolute path) or ``~/<home_default>/mxsec``."""
    geteuid = getattr(os, "geteuid", None)
    if geteuid is not None and geteuid() == 0:
        return "/var/lib/mxsec"
    base = os.environ.get(variable, "")
    if not base or not os.path.isabs(base):
        base = os.path.join(os.path.expanduser("~"), *home_default.split("/"))
    return os.path.join(base, "mxsec")


def _sqlite_url(path: str) -> str:
    return "sqlite:///" + path


def default_cache_url() -> str:
    """``sqlite:////var/lib/mxsec/cache.sqlite3`` as root, else the file in the user's state directory."""
    return _sqlite_url(os.path.join(default_state_dir(), "cache.sqlite3"))


def default_cache_copy_path() -> str:
    """The local SQLite copy of a shared (Redis, PostgreSQL) policy cache: ``cache-copy.sqlite3`` in the state
    directory."""
    return os.path.join(default_state_dir(), "cache-copy.sqlite3")


def default_tlsrpt_db_url() -> str:
    """The sender-side TLSRPT session counter database, next to the policy cache."""
    return _sqlite_url(os.path.join(default_state_dir(), "tlsrpt.sqlite3"))


def default_reports_db_url() -> str:
    """The database of received TLSRPT reports (``mxsec reports``), in the data directory."""
    return _sqlite_url(os.path.join(default_data_dir(), "reports.sqlite3"))
