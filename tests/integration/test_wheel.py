"""mxsec as users install it: the wheel, in a fresh virtual environment outside the repository (issue 16).

The wheel is built here, offline (``pip wheel --no-build-isolation``), and installed into a new venv whose
dependencies come from this venv's site-packages (a ``.pth`` line: nothing is downloaded), so the code that
runs is the wheel's, not the source tree. Every command's ``--help`` works from there, everything a command
reads at run time ships in the wheel (Exim snippets, lab scenarios, dashboard templates and static files), and
a real ``query`` and ``check`` run against a fake world. Then the optional packages are hidden, as in a lean
install (``pip install mxsec`` without extras): the core commands still work, and each command that needs an
extra says in one line which one.
"""

from __future__ import annotations

import json
import subprocess
import sys
import sysconfig
import textwrap
from pathlib import Path

import pytest

from mxsec.cli.main import COMMANDS
from mxsec.testing.fakeworld import PolicySpec, policy_text

from .conftest import running_world

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
#: the modules of the extras (pyproject.toml [project.optional-dependencies])
EXTRA_MODULES = ("redis", "psycopg", "dkim", "starlette", "jinja2", "uvicorn", "aiosmtpd", "acme", "josepy")


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """A fresh venv with the wheel installed; returns its directory."""
    work = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                    "-q", "-w", str(work / "dist"), str(REPO)], check=True, timeout=300, cwd=work,
                   capture_output=True)
    (wheel,) = (work / "dist").glob("mxsec-*.whl")
    venv = work / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    purelib = Path(subprocess.run([str(venv / "bin" / "python"), "-c",
                                   "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                  capture_output=True, text=True, check=True).stdout.strip())
    # the dependencies, from this venv (a plain path line: this venv's own .pth files, among them the
    # editable install of the source tree, are not read)
    (purelib / "zz-deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "--no-deps",
                    "--no-index", "-q", str(wheel)], check=True, timeout=300, capture_output=True)
    return venv


def run(venv: Path, *args: str, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([str(venv / "bin" / "mxsec"), *args], capture_output=True, text=True, timeout=timeout,
                          cwd=venv, env=env, check=False)


def lean_env(tmp: Path) -> dict:
    """An environment in which the extras' modules cannot be imported (a lean install)."""
    hide = tmp / "hide-extras"
    hide.mkdir(exist_ok=True)
    (hide / "sitecustomize.py").write_text(textwrap.dedent(f"""
        import importlib.abc, sys
        class HideExtras(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in {EXTRA_MODULES!r}:
                    raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
                return None
        sys.meta_path.insert(0, HideExtras())
    """))
    return {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(hide), "HOME": str(tmp), "LC_ALL": "C.UTF-8"}


def test_the_installed_code_is_the_wheels_and_ships_its_data(installed):
    code = textwrap.dedent("""
        import json, mxsec
        from importlib import resources
        from mxsec.lab.exim import contrib_dir
        files = resources.files("mxsec")
        print(json.dumps({
            "file": mxsec.__file__,
            "exim": str(contrib_dir()),
            "scenarios": (files / "lab" / "scenarios.toml").is_file(),
            "templates": sorted(p.name for p in (files / "reports" / "web" / "templates").iterdir()),
            "static": sorted(p.name for p in (files / "reports" / "web" / "static").iterdir()),
        }))
    """)
    out = subprocess.run([str(installed / "bin" / "python"), "-c", code], capture_output=True, text=True,
                         check=True, cwd=installed)
    found = json.loads(out.stdout)
    assert found["file"].startswith(str(installed)) and not found["file"].startswith(str(REPO))
    assert found["exim"].startswith(str(installed))
    assert found["scenarios"] and found["templates"] and "vendor" in found["static"]


def test_every_command_answers_help_from_the_wheel(installed):
    names = ["daemon", "query", "migrate-config", *(name for name, _module, _attr in COMMANDS)]
    assert run(installed, "--help").returncode == 0
    for name in names:
        result = run(installed, name, "--help")
        assert result.returncode == 0 and "Usage: mxsec" in result.stdout, (name, result.stderr)


@pytest.fixture(scope="module")
def world():
    with running_world(https_port=443) as started:
        started.add_domain("wheel.test", txt=["v=STSv1; id=1"], mx=["mx.wheel.test"],
                           policy=PolicySpec(body=policy_text(["mx.wheel.test"])))
        yield started


def network(world) -> list[str]:
    host, port = world.dns_address
    return ["--nameserver", f"{host}:{port}", "--ca-file", str(world.ca_file), "--allow-address", "127.0.0.0/8",
            "--timeout", "3"]


@pytest.mark.parametrize("lean", [False, True], ids=["all-extras", "lean"])
def test_a_real_query_and_check_from_the_wheel(installed, world, tmp_path, lean):
    env = lean_env(tmp_path) if lean else None
    query = run(installed, "query", "wheel.test", "--no-cache", "--json", *network(world), env=env)
    assert query.returncode == 0, query.stderr
    assert json.loads(query.stdout)["reply"] == "OK secure match=mx.wheel.test servername=hostname"
    check = run(installed, "check", "wheel.test", "--no-smtp", "--json", *network(world), env=env)
    assert check.returncode in (0, 1), check.stderr
    (result,) = [json.loads(line) for line in check.stdout.splitlines()]
    assert result["domain"] == "wheel.test" and "sts-mode-enforce" in {f["code"] for f in result["findings"]}


def test_a_lean_install_names_the_extra_a_command_needs(installed, tmp_path):
    env = lean_env(tmp_path)
    cases = [
        (["query", "x.test", "--cache", "redis://127.0.0.1:1/0"], "'redis' extra: pip install 'mxsec[redis]'"),
        (["query", "x.test", "--cache", "postgresql://u@127.0.0.1:1/db"],
         "'postgres' extra: pip install 'mxsec[postgres]'"),
        (["reports", "serve", "--db", f"sqlite:///{tmp_path}/r.sqlite3"],
         "'reports' extra: pip install 'mxsec[reports]'"),
    ]
    sites = tmp_path / "sites.toml"
    sites.write_text('[policy]\nmode = "enforce"\nmax_age = 604800\n\n[domains."lean.test"]\nmx = ["mx.lean.test"]\n')
    cases.append((["serve-policy", "--sites", str(sites), "--acme-directory", "https://127.0.0.1:1/dir",
                   "--acme-state", str(tmp_path / "acme"), "--listen", "127.0.0.1:0"],
                  "serve-policy --acme-directory needs the 'acme' extra: pip install 'mxsec[acme]'"))
    for args, expected in cases:
        result = run(installed, *args, env=env, timeout=60)
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2 and len(lines) == 1 and expected in lines[0], (args, result.stderr)
        assert "Traceback" not in result.stderr
    # the core without any extra: migrate-config, generate
    assert run(installed, "generate", "sts-txt", "--id", "20260101", env=env).returncode == 0
