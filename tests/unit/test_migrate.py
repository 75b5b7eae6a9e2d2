"""Migration from postfix-mta-sts-resolver's mta-sts-daemon.yml."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from mxsec.config import (
    Config,
    ZoneConfig,
    default_cache_url,
    from_peer_yaml,
    load_config,
    migrate_config,
)
from mxsec.errors import ConfigError

# A production-like configuration: TCP listener, SQLite cache, proactive fetching, several zones.
PEER_SQLITE = """\
# /etc/mta-sts-daemon.yml
host: 127.0.0.1
port: 8461
reuse_port: true
shutdown_timeout: 20
cache_grace: 60
proactive_policy_fetching:
  enabled: true
  interval: 86400
  concurrency_limit: 100
  grace_ratio: 2.0
cache:
  type: sqlite
  options:
    filename: "/var/lib/mta-sts/cache.db"
    threads: 4
    timeout: 5
default_zone:
  strict_testing: false
  timeout: 4
  require_sni: true
zones:
  myzone:
    strict_testing: true
    timeout: 4
  otherzone:
    strict_testing: false
    timeout: 10
    require_sni: false
  tlsrpt:
    tlsrpt: true
"""

PEER_REDIS = """\
host: "::1"
port: 18461
cache:
  type: redis
  options:
    host: redis.internal
    port: 6380
    db: 3
    password: "p@ss word"
    socket_timeout: 3
    socket_connect_timeout: 2
default_zone:
  strict_testing: true
"""

PEER_REDIS_URL = """\
cache:
  type: redis
  options:
    url: "redis://localhost:6379/1"
    socket_timeout: 5
"""

PEER_INTERNAL_UNIX = """\
path: "/var/spool/postfix/mta-sts/mta-sts.sock"
mode: 0666
cache:
  type: internal
  options:
    cache_size: 10000
proactive_policy_fetching:
  enabled: false
zones:
  strict:
    strict_testing: true
"""

PEER_POSTGRES = """\
cache:
  type: postgres
  options:
    dsn: "host=db.internal port=5433 user=mta_sts password='se cret' dbname=mta_sts"
    timeout: 5
"""


def roundtrip(text: str, tmp_path: Path, name: str) -> tuple[Config, list[str], str]:
    config, notes = from_peer_yaml(text, source=f"{name}.yml")
    toml_text = migrate_config(text, source=f"{name}.yml")
    path = tmp_path / f"{name}.toml"
    path.write_text(toml_text, encoding="utf-8")
    assert load_config(str(path)) == config
    return config, notes, toml_text


def notes_about(notes: list[str], key: str) -> list[str]:
    return [n for n in notes if n.startswith(key)]


def test_sqlite_zones(tmp_path):
    c, notes, text = roundtrip(PEER_SQLITE, tmp_path, "sqlite")
    assert c.daemon.listen == ["127.0.0.1:8461"]
    assert c.daemon.shutdown_timeout == 20.0
    assert c.cache.url == "sqlite:////var/lib/mta-sts/cache.db"
    assert c.dns.timeout == 4.0 and c.https.timeout == 4.0
    assert c.refresh.enabled is True
    assert c.refresh.interval == 86400.0
    assert c.refresh.concurrency == 100
    assert c.refresh.recheck_after == 60.0  # cache_grace wins over interval/grace_ratio
    assert c.daemon.default_zone == ZoneConfig(strict_testing=False, require_sni=True, tlsrpt=False)
    assert c.daemon.zones == {
        "myzone": ZoneConfig(strict_testing=True),
        "otherzone": ZoneConfig(require_sni=False),
        "tlsrpt": ZoneConfig(tlsrpt=True),
    }
    # every key without an equivalent is explained
    assert notes_about(notes, "reuse_port")
    assert any("threads" in n for n in notes_about(notes, "cache.options.threads"))
    assert notes_about(notes, "cache.options.timeout")
    assert notes_about(notes, "proactive_policy_fetching.grace_ratio")
    assert any("10 ignored" in n for n in notes_about(notes, "zones.otherzone.timeout"))
    assert notes_about(notes, "cache_grace")[0].startswith("cache_grace: refresh.recheck_after = 60")
    assert any("tlsrpt dialect" in n for n in notes_about(notes, "zones.tlsrpt.tlsrpt"))
    # notes are single lines and are the comment header of the TOML
    for note in notes:
        assert "\n" not in note
        assert f"# - {note}" in text
    assert tomllib.loads(text)["cache"]["url"] == "sqlite:////var/lib/mta-sts/cache.db"


def test_redis_options(tmp_path):
    c, notes, text = roundtrip(PEER_REDIS, tmp_path, "redis")
    assert c.daemon.listen == ["[::1]:18461"]
    assert c.cache.url == "redis://:p%40ss%20word@redis.internal:6380/3"
    assert c.daemon.default_zone.strict_testing is True
    joined = " ".join(notes)
    assert "socket_connect_timeout" in joined and "socket_timeout" in joined
    assert any("password" in n for n in notes)
    assert "p@ss word" not in " ".join(notes)  # the password is not repeated in the notes
    assert "proactive_policy_fetching.enabled" in joined  # peer default was off; mxsec refreshes


def test_redis_url(tmp_path):
    c, notes, _ = roundtrip(PEER_REDIS_URL, tmp_path, "redisurl")
    assert c.cache.url == "redis://localhost:6379/1"
    assert any("socket_timeout" in n for n in notes)


def test_internal_cache_and_unix_socket(tmp_path):
    c, notes, text = roundtrip(PEER_INTERNAL_UNIX, tmp_path, "unix")
    assert c.daemon.listen == ["unix:/var/spool/postfix/mta-sts/mta-sts.sock"]
    assert c.daemon.unix_mode == 0o666
    assert "unix_mode = 0o666" in text
    assert c.cache.url == "memory://"
    assert c.daemon.zones == {"strict": ZoneConfig(strict_testing=True)}
    internal = notes_about(notes, "cache.type internal")
    assert internal and "SQLite" in internal[0] and "survives restarts" in internal[0]
    assert notes_about(notes, "cache.options.cache_size")
    pf = notes_about(notes, "proactive_policy_fetching.enabled")
    assert pf and "refresh.enabled = false" in pf[0] and "RFC 8461" in pf[0]
    assert c.refresh.enabled is True


def test_postgres_dsn(tmp_path):
    c, notes, _ = roundtrip(PEER_POSTGRES, tmp_path, "pg")
    assert c.cache.url == "postgresql://mta_sts:se%20cret@db.internal:5433/mta_sts"
    assert notes_about(notes, "cache.options.timeout")
    assert not any("se cret" in n for n in notes)


def test_postgres_url_dsn():
    c, _ = from_peer_yaml("cache:\n  type: postgres\n  options:\n    dsn: postgres://u@db/x\n")
    assert c.cache.url == "postgresql://u@db/x"


def test_notes_hide_a_password_however_the_url_carries_it():
    """The note naming the new cache.url shows the user but never the password (userinfo or ?password=)."""
    c, notes = from_peer_yaml(
        "cache:\n  type: postgres\n  options:\n    dsn: postgres://u:s3cret@db/x?sslmode=require&password=s3cret\n"
    )
    assert c.cache.url == "postgresql://u:s3cret@db/x?sslmode=require&password=s3cret"  # the file needs it
    (note,) = notes_about(notes, "cache.type postgres")
    assert note == 'cache.type postgres: cache.url = "postgresql://u:***@db/x?sslmode=require&password=***"'
    assert not any("s3cret" in n for n in notes)


def test_empty_file_gives_peer_equivalent_defaults():
    c, notes = from_peer_yaml("")
    assert c == Config()  # same listener; mxsec's default SQLite cache instead of the peer's memory cache
    assert c.cache.url == default_cache_url()
    assert any(n.startswith("cache:") and "SQLite" in n for n in notes)


def test_grace_ratio_without_cache_grace():
    c, notes = from_peer_yaml("proactive_policy_fetching:\n  enabled: true\n  interval: 7200\n  grace_ratio: 4\n")
    assert c.refresh.interval == 7200.0 and c.refresh.recheck_after == 1800.0
    assert "interval/ratio = 1800" in notes_about(notes, "proactive_policy_fetching.grace_ratio")[0]


def test_mode_given_as_decimal_digits():
    c, notes = from_peer_yaml("path: /run/x.sock\nmode: 660\n")
    assert c.daemon.unix_mode == 0o660
    assert any("read as octal" in n for n in notes)
    c, _ = from_peer_yaml("path: /run/x.sock\nmode: '0600'\n")
    assert c.daemon.unix_mode == 0o600


def test_path_wins_over_host():
    c, notes = from_peer_yaml("host: 0.0.0.0\nport: 1\npath: /run/x.sock\n")
    assert c.daemon.listen == ["unix:/run/x.sock"]
    assert any("ignored because path is set" in n for n in notes)


def test_unknown_keys_are_noted_not_fatal():
    c, notes = from_peer_yaml("colour: blue\ndefault_zone:\n  flavour: x\n")
    assert c == Config()
    assert notes_about(notes, "colour")
    assert notes_about(notes, "default_zone.flavour")


def test_zone_tlsrpt_under_postfix_name_is_warned():
    _, notes = from_peer_yaml("zones:\n  postfix:\n    tlsrpt: true\n")
    assert any("never sends tlsrpt attributes under map 'postfix'" in n for n in notes)


@pytest.mark.parametrize(
    "text,expected",
    [
        ("port: eighty\n", "port: expected an integer"),
        ("host: 127.0.0.1\nport: [1]\n", "port: expected an integer"),
        ("cache:\n  type: mongodb\n", "cache.type: expected internal, sqlite, redis or postgres"),
        ("cache_grace: soon\n", 'cache_grace: expected a number, got "soon"'),
        ("default_zone:\n  strict_testing: maybe\n", "default_zone.strict_testing: expected true or false"),
        ("zones: [a, b]\n", "zones: expected a mapping"),
        ("proactive_policy_fetching:\n  enabled: 1\n", "proactive_policy_fetching.enabled: expected true or false"),
        ("path: /x.sock\nmode: 0o7777\n", "mode: permission must be between"),
        ("path: /x.sock\nmode: rw\n", "mode: expected an octal permission"),
        ("host: 'bad host'\n", "daemon.listen: bad listen address"),
        ("- just\n- a list\n", "configuration: expected a mapping"),
        ("host: [unclosed\n", "invalid YAML"),
    ],
)
def test_errors(text, expected):
    with pytest.raises(ConfigError) as err:
        from_peer_yaml(text, source="/etc/mta-sts-daemon.yml")
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith("/etc/mta-sts-daemon.yml"), message
    assert expected in message, message


def test_yaml_syntax_error_has_line():
    with pytest.raises(ConfigError) as err:
        from_peer_yaml("host: 127.0.0.1\nport: 8461\ncache:\n  type: [sqlite\n", source="p.yml")
    assert str(err.value).startswith("p.yml:"), str(err.value)
    assert str(err.value).split(":")[1].isdigit()


def test_load_config_reads_peer_yaml_by_extension(tmp_path):
    path = tmp_path / "mta-sts-daemon.yml"
    path.write_text(PEER_SQLITE)
    notes: list[str] = []
    c = load_config(str(path), notes=notes)
    assert c == from_peer_yaml(PEER_SQLITE)[0]
    assert notes and any(n.startswith("reuse_port") for n in notes)


def test_load_config_detects_peer_yaml_without_extension(tmp_path):
    path = tmp_path / "mta-sts-daemon.conf"
    path.write_text(PEER_INTERNAL_UNIX)
    assert load_config(str(path)).cache.url == "memory://"


def test_load_config_bad_toml_that_is_not_peer_yaml(tmp_path):
    path = tmp_path / "mxsec.toml"
    path.write_text("[daemon]\nlisten: 1\n")
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_config(str(path))


def test_migrate_output_header():
    text = migrate_config(PEER_INTERNAL_UNIX, source="/etc/mta-sts-daemon.yml")
    first = text.splitlines()[0]
    assert first.startswith("# mxsec configuration migrated from /etc/mta-sts-daemon.yml")
    assert "Migration notes:" in text
    data = tomllib.loads(text)
    assert data["daemon"]["listen"] == ["unix:/var/spool/postfix/mta-sts/mta-sts.sock"]
