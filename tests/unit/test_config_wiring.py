"""mxsec.config.wiring: the adapters a configuration describes, shared by the daemon and the command-line tools.

Also checks the layout rule behind it (issue 18): the command-line tools that are not the daemon's own commands
build their adapters from the configuration package, never from ``mxsec.daemon``.
"""

from __future__ import annotations

import ast
import asyncio
from pathlib import Path

import pytest

from mxsec.config import Config, config_from_dict
from mxsec.config.wiring import make_adapters, make_dns_and_guard
from mxsec.errors import ConfigError
from mxsec.net.guard import AddressGuard

SRC = Path(__file__).resolve().parents[2] / "src" / "mxsec"


def test_dns_and_guard_follow_the_configuration():
    config = config_from_dict({
        "dns": {"nameservers": ["127.0.0.53", "[::1]:5353"], "timeout": 2.5},
        "net": {"allow_addresses": ["127.0.0.0/8"]},
    })
    dns, guard = make_dns_and_guard(config)
    assert dns.nameserver_addresses == ["127.0.0.53", "::1"]
    assert dns.settings.nameservers == [("127.0.0.53", 53), ("::1", 5353)]
    assert dns.settings.timeout == 2.5
    assert guard.allowed("127.0.0.1")  # allowed by net.allow_addresses
    assert not guard.allowed("10.0.0.1")  # still refused: not in the list
    _, default_guard = make_dns_and_guard(Config())
    assert not default_guard.allowed("127.0.0.1")


def test_adapters_share_a_given_guard_else_use_their_own(tmp_path):
    ca = tmp_path / "roots.pem"
    ca.write_text("")  # readable is all make_adapters checks; the fetcher would refuse an empty file later
    config = config_from_dict({"https": {"timeout": 7, "max_body": 1000}})
    shared = AddressGuard(["192.0.2.0/24"])
    dns, fetcher = make_adapters(config, shared)
    try:
        assert fetcher.guard is shared
        assert fetcher.dns is dns
        assert fetcher.settings.timeout == 7.0 and fetcher.settings.max_body == 1000
    finally:
        asyncio.run(fetcher.aclose())
    dns, fetcher = make_adapters(config)
    try:
        assert isinstance(fetcher.guard, AddressGuard) and fetcher.guard is not shared
        assert not fetcher.guard.allowed("192.0.2.1")
    finally:
        asyncio.run(fetcher.aclose())


def test_an_unreadable_ca_file_is_one_line_naming_the_key(tmp_path):
    missing = tmp_path / "nope.pem"
    config = config_from_dict({"tls": {"ca_file": str(missing)}})
    with pytest.raises(ConfigError) as err:
        make_adapters(config)
    message = str(err.value)
    assert message.startswith(f"tls.ca_file: cannot read {missing}: ")
    assert "\n" not in message


def _imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


@pytest.mark.parametrize("front_end", ["check.py", "dane.py", "tlsrpt.py"])
def test_other_front_ends_do_not_import_the_daemon(front_end):
    imported = _imported_modules(SRC / "cli" / front_end)
    assert "mxsec.config.wiring" in imported
    assert not {m for m in imported if m == "mxsec.daemon" or m.startswith("mxsec.daemon.")}


def test_the_daemon_does_not_re_export_the_wiring():
    import mxsec.daemon.app as app

    tree = ast.parse((SRC / "daemon" / "app.py").read_text(encoding="utf-8"))
    defined = {n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}
    assert not defined & {"make_dns_and_guard", "make_adapters"}
    assert app.make_adapters is make_adapters  # it uses the shared one (imported, not a copy)
