"""The `mxsec` command line around the daemon: query, bad input, migration from postfix-mta-sts-resolver."""

from __future__ import annotations

import json
import socket
import subprocess
import tomllib

import pytest

from mxsec.testing.fakeworld import FakeWorld, PolicySpec, WorldThread, policy_text

from .daemonproc import MXSEC, Client, Daemon, free_port

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    fw = FakeWorld(dns=("127.0.86.1", 0), https=("127.0.86.2", 443), state_dir=tmp_path_factory.mktemp("world"))
    fw.add_domain("enforce.test", txt=["v=STSv1; id=7"],
                  policy=PolicySpec(body=policy_text(["mx.enforce.test", "*.mx.enforce.test"])),
                  mx=["mx.enforce.test", "a.mx.enforce.test"])
    fw.add_domain("testing.test", txt=["v=STSv1; id=1"],
                  policy=PolicySpec(body=policy_text(["mx.testing.test"], mode="testing")), mx=["mx.testing.test"])
    fw.add_domain("gone.test", txt=["v=STSv1; id=1"], policy=PolicySpec(status=404))
    thread = WorldThread(fw)
    thread.start()
    yield fw
    thread.stop()


def mxsec(*args, world=None, check=False):
    cmd = [MXSEC, *args]
    if world is not None:
        host, port = world.dns_address
        cmd += ["--nameserver", f"{host}:{port}", "--ca-file", str(world.ca_file), "--allow-address", "127.0.0.0/8",
                "--timeout", "3"]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=check)


def assert_one_line_error(result):
    """Exit 2, no traceback, and exactly one line that is not a structured log record: the error, last."""
    assert result.returncode == 2, result
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.strip().splitlines() if not line.startswith('{"ts": ')]
    if lines and lines[0].startswith("Usage: "):  # click usage errors: usage line, hint, then "Error: ..."
        assert lines[-1].startswith("Error: ")
        return
    assert len(lines) == 1 and lines[0].startswith("mxsec: "), result.stderr
    assert result.stderr.strip().splitlines()[-1] == lines[0]


def test_query_json_fetched_then_cached(world, tmp_path):
    cache = f"sqlite:///{tmp_path / 'c.sqlite3'}"
    first = json.loads(mxsec("query", "Enforce.Test.", "--json", "--cache", cache, world=world, check=True).stdout)
    assert first["domain"] == "enforce.test"
    assert first["reply"] == "OK secure match=mx.enforce.test:a.mx.enforce.test servername=hostname"
    assert first["source"] == "fetched" and first["dane"]["level"] == "none"  # MX not DNSSEC-signed
    assert first["mta_sts"]["policy_id"] == "7" and first["mta_sts"]["mode"] == "enforce"
    assert first["mta_sts"]["mx"] == ["mx.enforce.test", "*.mx.enforce.test"]
    second = json.loads(mxsec("query", "enforce.test", "--json", "--cache", cache, world=world, check=True).stdout)
    assert second["source"] == "cache" and second["reply"] == first["reply"]


def test_query_text_explains_why(world):
    out = mxsec("query", "gone.test", "--no-cache", world=world, check=True).stdout
    lines = out.splitlines()
    assert lines[0] == "NOTFOUND "
    assert any("404" in line for line in lines[1:])
    assert any("sts-policy-fetch-error" in line for line in lines[1:])


def test_query_tlsrpt_map(world):
    out = mxsec("query", "enforce.test", "--map", "tlsrpt", "--no-cache", world=world, check=True).stdout
    assert "policy_type=sts policy_domain=enforce.test" in out.splitlines()[0]


def test_query_bad_domain_is_one_line_error(world):
    assert_one_line_error(mxsec("query", "not a domain!", world=world))
    assert_one_line_error(mxsec("query", "exa_mple..com", world=world))


def test_query_unknown_map_is_one_line_error(world):
    assert_one_line_error(mxsec("query", "enforce.test", "--map", "nope", world=world))


@pytest.mark.parametrize("args", [
    ["--listen", "nonsense"],
    ["--listen", "127.0.0.1:99999"],
    ["--cache", "ftp://x"],
    ["--nameserver", "not-an-ip"],
    ["--ca-file", "/nonexistent/ca.pem"],
    ["--allow-address", "10.0.0.0/33"],
    ["--config", "/nonexistent/mxsec.toml"],
])
def test_daemon_bad_options_one_line_error(args, tmp_path):
    result = subprocess.run([MXSEC, "daemon", "--cache", "memory://", *args], capture_output=True, text=True,
                            timeout=30)
    assert_one_line_error(result)


def test_daemon_bad_config_file_one_line_error(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[daemon]\nlisten = 5\n")
    assert_one_line_error(subprocess.run([MXSEC, "daemon", "--config", str(bad)], capture_output=True, text=True,
                                         timeout=30))
    bad.write_text("[daemon\n")
    assert_one_line_error(subprocess.run([MXSEC, "daemon", "--config", str(bad)], capture_output=True, text=True,
                                         timeout=30))


def test_daemon_port_in_use_one_line_error(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = subprocess.run([MXSEC, "daemon", "--cache", "memory://", "--listen", f"127.0.0.1:{port}"],
                                capture_output=True, text=True, timeout=30)
    assert_one_line_error(result)
    assert str(port) in result.stderr


PEER_YAML = """\
host: 127.0.0.1
port: {port}
reuse_port: true
shutdown_timeout: 20
cache:
  type: sqlite
  options:
    filename: "{db}"
default_zone:
  strict_testing: false
  timeout: 4
zones:
  myzone:
    strict_testing: true
    timeout: 4
"""


def test_daemon_runs_from_peer_yaml_config(world, tmp_path):
    port = free_port()
    yml = tmp_path / "mta-sts-daemon.yml"
    yml.write_text(PEER_YAML.format(port=port, db=tmp_path / "peer-cache.db"))
    d = Daemon(tmp_path, world=world, config=yml, listen=[f"127.0.0.1:{port}"])
    # the YAML decides where to listen and which cache to use: drop our own --listen/--cache flags
    d.drop_option("--cache")
    d.drop_option("--listen")
    d.port = port
    d.start()
    try:
        c = Client("127.0.0.1", port)
        assert c.ask("enforce.test") == "OK secure match=mx.enforce.test:a.mx.enforce.test servername=hostname"
        assert c.ask("testing.test") == "NOTFOUND "
        assert c.ask("testing.test", "myzone") == "OK secure match=mx.testing.test servername=hostname"
    finally:
        d.stop()
    assert (tmp_path / "peer-cache.db").exists()


def test_migrate_config_writes_equivalent_toml(tmp_path):
    yml = tmp_path / "mta-sts-daemon.yml"
    yml.write_text(PEER_YAML.format(port=8461, db="/var/lib/mta-sts/cache.db"))
    out = mxsec("migrate-config", str(yml), check=True).stdout
    data = tomllib.loads(out)
    assert data["cache"]["url"] == "sqlite:////var/lib/mta-sts/cache.db"
    assert data["daemon"]["zones"]["myzone"]["strict_testing"] is True
    target = tmp_path / "mxsec.toml"
    mxsec("migrate-config", str(yml), "-o", str(target), check=True)
    assert tomllib.loads(target.read_text()) == data


def test_migrate_config_bad_yaml_one_line_error(tmp_path):
    yml = tmp_path / "bad.yml"
    yml.write_text("port: [unclosed\n")
    assert_one_line_error(mxsec("migrate-config", str(yml)))
