"""Reading the configuration file: TOML, or a postfix-mta-sts-resolver YAML file recognised and translated.

Errors are one line naming the file, and the line and column for TOML syntax errors
(``mxsec.toml:7:10: invalid TOML: ...``).
"""

from __future__ import annotations

import logging
import os
import re
import tomllib

from ..errors import ConfigError
from . import paths
from .peer import PEER_KEYS, from_peer_yaml
from .schema import Config, config_from_dict

log = logging.getLogger("mxsec.config")


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
        if not os.path.exists(paths.SYSTEM_CONFIG_PATH):
            return Config()
        path = paths.SYSTEM_CONFIG_PATH
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
