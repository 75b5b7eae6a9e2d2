"""The sans-I/O core imports nothing that does I/O, and nothing of the layers above it (docs/architecture.md).

Each core module is imported alone in a fresh interpreter, and the modules it pulled in are compared with a list
of adapters (HTTP, DNS resolvers, databases, SMTP, web servers, the CLI) and of mxsec's own upper layers.
``mxsec.dane.gather`` is the one async bridge of the core (it awaits a resolver object handed to it, opens no
socket itself), so it may load asyncio and what asyncio loads (ssl, subprocess), and nothing else on the list.
"""

import json
import pkgutil
import subprocess
import sys

import pytest

import mxsec.dane
import mxsec.sts
import mxsec.tlsrpt

CORE = sorted(
    [f"{pkg.__name__}.{m.name}" for pkg in (mxsec.sts, mxsec.dane, mxsec.tlsrpt) for m in pkgutil.iter_modules(pkg.__path__)]
    + ["mxsec.names", "mxsec.verdict", "mxsec.errors", "mxsec.dnsanswers"]
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
