"""The sans-I/O core imports nothing that does I/O, and nothing of the layers above it (docs/architecture.md).

Each core module is imported alone in a fresh interpreter, and the modules it pulled in are compared with a list
of adapters (HTTP, DNS resolvers, databases, SMTP, web servers, the CLI) and of mxsec's own upper layers.
``mxsec.dane.gather`` is the one async bridge of the core (it awaits a resolver object handed to it, opens no
socket itself), so it may load asyncio and what asyncio loads (ssl, subprocess), and nothing else on the list.
"""

import ast
import json
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import mxsec.dane
import mxsec.sts
import mxsec.tlsrpt

CORE = sorted(
    [f"{pkg.__name__}.{m.name}" for pkg in (mxsec.sts, mxsec.dane, mxsec.tlsrpt) for m in pkgutil.iter_modules(pkg.__path__)]
    + ["mxsec.names", "mxsec.verdict", "mxsec.errors", "mxsec.dnsanswers", "mxsec.results"]
)
ADAPTERS = ("aiohttp", "httpx", "dns.resolver", "dns.asyncresolver", "dns.query", "dns.asyncquery", "sqlite3",
            "psycopg", "redis", "smtplib", "urllib.request", "starlette", "uvicorn", "click")
UPPER = ("mxsec.net", "mxsec.storage", "mxsec.daemon", "mxsec.reports", "mxsec.cli", "mxsec.config", "mxsec.check",
         "mxsec.sender", "mxsec.lab", "mxsec.testing", "mxsec.serve_policy", "mxsec.generate")
ASYNC = ("asyncio", "ssl", "subprocess")
ASYNC_BRIDGES = {"mxsec.dane.gather"}


def loaded_after_import(module: str) -> set[str]:
    code = f"import sys, json; import {module}; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    return set(json.loads(out.stdout))


def test_the_core_list_is_not_empty():
    assert "mxsec.sts.policy" in CORE and "mxsec.dane.destination" in CORE and "mxsec.tlsrpt.report" in CORE


@pytest.mark.parametrize("module", CORE)
def test_core_module_imports_no_adapter_and_no_upper_layer(module):
    loaded = loaded_after_import(module)
    forbidden = ADAPTERS + UPPER + (() if module in ASYNC_BRIDGES else ASYNC)
    found = sorted(name for name in loaded for bad in forbidden if name == bad or name.startswith(bad + "."))
    assert not found, f"{module} pulls in {found}"


def test_the_dns_wire_format_module_is_sans_io_too():
    """``mxsec.net.dnswire`` sits beside the DNS adapter but is pure: bytes in, values out (docs/architecture.md)."""
    loaded = loaded_after_import("mxsec.net.dnswire")
    forbidden = ADAPTERS + ASYNC + tuple(u for u in UPPER if u != "mxsec.net")
    found = sorted(name for name in loaded for bad in forbidden if name == bad or name.startswith(bad + "."))
    assert not found, f"mxsec.net.dnswire pulls in {found}"
    assert {m for m in loaded if m.startswith("mxsec.")} == {"mxsec.net", "mxsec.net.dnswire"}


def test_the_checker_rules_judge_facts_without_any_adapter():
    """``mxsec.check.rules`` and the report take facts (``mxsec.check.facts``), never the adapters that gather them."""
    for module in ("mxsec.check.rules", "mxsec.check.report", "mxsec.check.facts"):
        loaded = loaded_after_import(module)
        forbidden = ADAPTERS + ASYNC + ("mxsec.net", "mxsec.check.gather", "mxsec.daemon", "mxsec.storage")
        found = sorted(name for name in loaded for bad in forbidden if name == bad or name.startswith(bad + "."))
        assert not found, f"{module} pulls in {found}"


# -- the layers above the core (docs/architecture.md, "Layers"): a static reading of every import -----------------

SRC = Path(mxsec.sts.__file__).resolve().parents[1]
LAYERS = {
    "core": {"sts", "dane", "tlsrpt", "names", "verdict", "errors", "dnsanswers", "results"},
    "utility": {"display", "fsutil", "logs", "extras", "generate"},
    "adapter": {"net", "storage"},
    "shared": {"config"},
    "front-end": {"daemon", "check", "reports", "sender", "serve_policy"},
    "composition": {"cli", "lab", "testing", "__main__"},
}
#: what each layer may import besides itself
MAY_IMPORT = {
    "core": {"core"},
    "utility": {"core", "utility"},
    "adapter": {"core", "utility"},
    "shared": {"core", "utility", "adapter"},
    "front-end": {"core", "utility", "adapter", "shared"},
    "composition": set(LAYERS),
}
#: the known exceptions, each with its reason
EXCEPTIONS = {
    # the config checks the dashboard's and the POST endpoint's settings when it loads (stdlib-only validators
    # that live beside the code using them)
    ("mxsec.config.schema", "reports"),
}


def layer_of(package: str) -> str:
    return next(name for name, members in LAYERS.items() if package in members)


def imports_of(path: Path) -> list[str]:
    """Every mxsec module ``path`` imports (absolute or relative, at any depth of the file)."""
    module_parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    package = module_parts if path.name == "__init__.py" else module_parts[:-1]
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                found.append(".".join(base + ([node.module] if node.module else [])))
            else:
                found.append(node.module or "")
    return [name for name in found if name.startswith("mxsec.")]


def violations() -> list[str]:
    wrong = []
    for path in sorted(SRC.rglob("*.py")):
        parts = path.relative_to(SRC).with_suffix("").parts
        if parts == ("__init__",):
            continue
        source = parts[0]
        module = "mxsec." + ".".join(p for p in parts if p != "__init__")
        for name in imports_of(path):
            target = name.split(".")[1]
            if target == source or (module, target) in EXCEPTIONS:
                continue
            if layer_of(target) not in MAY_IMPORT[layer_of(source)] or (
                    layer_of(source) == "front-end" and layer_of(target) == "front-end"):
                wrong.append(f"{module} ({layer_of(source)}) imports {name} ({layer_of(target)})")
    return wrong


def test_every_package_has_a_layer():
    packages = {p.stem if p.is_file() else p.name for p in SRC.iterdir()
                if (p.suffix == ".py" and p.stem != "__init__") or (p / "__init__.py").exists()}
    assert packages == set().union(*LAYERS.values())


def test_layers_import_only_downwards_and_front_ends_never_import_each_other():
    assert violations() == []


def test_the_layer_check_sees_a_front_end_importing_another(tmp_path, monkeypatch):
    """The check can fail: a check module importing the daemon is reported."""
    fake = tmp_path / "mxsec"
    (fake / "check").mkdir(parents=True)
    (fake / "daemon").mkdir()
    for package in ("", "check", "daemon"):
        (fake / package / "__init__.py").write_text("")
    (fake / "check" / "x.py").write_text("from ..daemon import app\nfrom mxsec.sts import policy\n")
    monkeypatch.setitem(globals(), "SRC", fake)
    assert violations() == ["mxsec.check.x (front-end) imports mxsec.daemon (front-end)"]
