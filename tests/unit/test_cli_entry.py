"""The command line is reachable as the ``mxsec`` script, ``python -m mxsec`` and ``python -m mxsec.cli``, with
every command group registered in one place (no import side effects)."""

import subprocess
import sys

import pytest

GROUPS = ("check", "daemon", "dane", "generate", "lab", "query", "reports", "serve-policy", "tlsrpt")


@pytest.mark.parametrize("module", ["mxsec", "mxsec.cli"])
def test_python_dash_m_lists_every_command_group(module):
    out = subprocess.run([sys.executable, "-m", module, "--help"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    for group in GROUPS:
        assert f"\n  {group} " in out.stdout, group


@pytest.mark.parametrize("module", ["mxsec", "mxsec.cli"])
def test_python_dash_m_reaches_subcommands(module):
    for args, expect in ((["reports", "--help"], "fetch-imap"), (["tlsrpt", "--help"], "collect")):
        out = subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True, timeout=60)
        assert out.returncode == 0 and expect in out.stdout, (args, out.stdout, out.stderr)


def test_fetch_imap_registered_once_whatever_the_import_order():
    import mxsec.cli_reports_imap  # noqa: F401 - importing it must not register anything by itself
    from mxsec.cli import main

    reports = main.commands["reports"]
    assert list(reports.commands).count("fetch-imap") == 1
