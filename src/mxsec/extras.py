"""Optional parts of mxsec and the packages they need (``pip install 'mxsec[EXTRA]'``, README "Install").

The core install runs the daemon with an SQLite cache, ``query``, ``check``, ``generate``, ``dane``,
``serve-policy`` and the TLSRPT collector; a command that needs more says in one line which extra to install.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from mxsec.errors import ConfigError

__all__ = ["EXTRAS", "require"]

#: extra -> the top-level modules it provides
EXTRAS = {
    "redis": ("redis",),
    "postgres": ("psycopg",),
    "reports": ("dkim", "starlette", "jinja2", "uvicorn"),
    "tlsrpt": ("dkim",),
    "lab": ("aiosmtpd",),
}


def require(module: str, extra: str, what: str) -> ModuleType:
    """Import ``module``; when it is missing, a one-line :class:`ConfigError` saying that ``what`` needs the
    extra ``extra``."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ConfigError(f"{what} needs the '{extra}' extra: pip install 'mxsec[{extra}]'") from None
