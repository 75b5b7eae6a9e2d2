"""Writing a :class:`~mxsec.config.schema.Config` as TOML: only the values that differ from the defaults, each
under its description as a comment."""

from __future__ import annotations

from dataclasses import fields
from typing import Any, Iterable

import tomli_w

from .schema import _SECTIONS, Config, ZoneConfig
from .values import _toml_key


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
