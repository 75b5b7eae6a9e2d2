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
    import mxsec.cli.reports_imap  # noqa: F401 - importing it must not register anything by itself
    from mxsec.cli import main

    reports = main.commands["reports"]
    assert list(reports.commands).count("fetch-imap") == 1


def test_command_groups_are_imported_only_when_used():
    """Running one command imports its own module, not every group's (mxsec reports ingest starts faster);
    each lazily registered name is the command's own name."""
    script = (
        "import sys\n"
        "from mxsec.cli import main\n"
        "try:\n"
        "    main(['reports', 'ingest', '--help'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "print(sorted(m for m in ('mxsec.cli.lab', 'mxsec.cli.dane', 'mxsec.cli.check', 'mxsec.cli.tlsrpt',\n"
        "                         'mxsec.cli.reports_imap', 'asyncio') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[]"
    from mxsec.cli.main import COMMANDS, main

    for name, _module, _attribute in COMMANDS:
        assert main.commands[name].name == name
    assert main.commands["reports"].commands["fetch-imap"].name == "fetch-imap"
