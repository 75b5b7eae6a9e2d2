"""The configuration model: defaults, TOML loading, errors, overrides, listen parsing, TOML writing."""

from __future__ import annotations

import dataclasses
import os
import tomllib
from pathlib import Path

import pytest

from mxsec.config import paths as config_paths
from mxsec.config import (
    Config,
    DaemonConfig,
    DnsConfig,
    ListenAddress,
    LogConfig,
    MetricsConfig,
    RefreshConfig,
    ZoneConfig,
    all_keys,
    apply_overrides,
    config_from_dict,
    config_to_toml,
    default_cache_url,
    default_state_dir,
    load_config,
    parse_listen,
    parse_nameserver,
)
from mxsec.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, text: str, name: str = "mxsec.toml") -> str:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def one_line_error(excinfo) -> str:
    message = str(excinfo.value)
    assert "\n" not in message and message
    return message


# -- defaults -----------------------------------------------------------------------------------------------


def test_defaults():
    c = Config()
    assert c.dns.nameservers == [] and c.dns.timeout == 5.0
    assert c.https.timeout == 20.0 and c.https.max_body == 65536
    assert c.tls.ca_file is None
    assert c.net.allow_addresses == []
    assert c.cache.url == default_cache_url()
    assert c.daemon.listen == ["127.0.0.1:8461"]
    assert c.daemon.lookup_timeout == 30.0
    assert c.daemon.max_connections == 1024
    assert c.daemon.shutdown_timeout == 10.0
    assert c.daemon.unix_mode is None
    assert c.daemon.zones == {}
    assert c.daemon.default_zone == ZoneConfig(strict_testing=False, require_sni=True, tlsrpt=False)
    assert c.refresh == RefreshConfig(True, 3600.0, 3600.0, 86400.0, 32, 300.0, 300.0)
    assert c.metrics.listen is None
    assert c.log == LogConfig("info", "json")


def test_default_lists_are_not_shared():
    a, b = Config(), Config()
    assert a.daemon.listen is not b.daemon.listen
    assert a.dns.nameservers is not b.dns.nameservers


def test_default_cache_url_root(monkeypatch):
    monkeypatch.delenv("STATE_DIRECTORY", raising=False)
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    assert default_cache_url() == "sqlite:////var/lib/mxsec/cache.sqlite3"


def test_default_cache_url_user(monkeypatch, tmp_path):
    monkeypatch.delenv("STATE_DIRECTORY", raising=False)
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    assert default_cache_url() == "sqlite:///" + str(tmp_path / "state" / "mxsec" / "cache.sqlite3")
    monkeypatch.delenv("XDG_STATE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_state_dir() == str(tmp_path / "home" / ".local" / "state" / "mxsec")
    monkeypatch.setenv("XDG_STATE_HOME", "relative/ignored")
    assert default_state_dir() == str(tmp_path / "home" / ".local" / "state" / "mxsec")


def test_default_cache_url_systemd_state_directory(monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 998)
    monkeypatch.setenv("STATE_DIRECTORY", "/var/lib/mxsec")
    assert default_cache_url() == "sqlite:////var/lib/mxsec/cache.sqlite3"


# -- loading ------------------------------------------------------------------------------------------------

FULL = """
[dns]
nameservers = ["127.0.0.1", "127.0.0.53:5353", "[::1]:53", "2001:db8::53"]
timeout = 3

[https]
timeout = 15.5
max_body = 32768

[tls]
ca_file = "/etc/ssl/lab-ca.pem"

[net]
allow_addresses = ["127.0.0.0/8", "fd00::/8", "10.1.2.3"]

[cache]
url = "memory://"

[daemon]
listen = ["127.0.0.1:8461", "[::1]:8461", "unix:/run/mxsec/mxsec.sock"]
lookup_timeout = 20
max_connections = 64
shutdown_timeout = 0
unix_mode = 0o660

[daemon.default_zone]
require_sni = false

[daemon.zones.strict]
strict_testing = true

[daemon.zones.reports]
tlsrpt = true

[refresh]
enabled = false
interval = 600
recheck_after = 1200
force_fetch_after = 43200
concurrency = 4
fail_retry = 300
negative_ttl = 60

[metrics]
listen = "127.0.0.1:9461"

[log]
level = "DEBUG"
format = "text"

[tlsrpt]
db = "postgresql://mxsec@db/tlsrpt"
organization_name = "Example"
contact_info = "tlsrpt@example.net"
"""


def test_load_full(tmp_path):
    c = load_config(write(tmp_path, FULL))
    assert c.dns.nameservers[2] == "[::1]:53" and c.dns.timeout == 3.0
    assert isinstance(c.dns.timeout, float)
    assert c.https.timeout == 15.5 and c.https.max_body == 32768
    assert c.tls.ca_file == "/etc/ssl/lab-ca.pem"
    assert c.net.allow_addresses == ["127.0.0.0/8", "fd00::/8", "10.1.2.3"]
    assert c.cache.url == "memory://"
    assert c.daemon.listen[2] == "unix:/run/mxsec/mxsec.sock"
    assert c.daemon.lookup_timeout == 20.0 and c.daemon.shutdown_timeout == 0.0
    assert c.daemon.unix_mode == 0o660
    assert c.daemon.default_zone == ZoneConfig(require_sni=False)
    assert c.daemon.zones == {"strict": ZoneConfig(strict_testing=True), "reports": ZoneConfig(tlsrpt=True)}
    assert c.daemon.zone("strict").strict_testing and c.daemon.zone("other") == c.daemon.default_zone
    assert c.refresh == RefreshConfig(False, 600.0, 1200.0, 43200.0, 4, 300.0, 60.0)
    assert c.metrics.listen == "127.0.0.1:9461"
    assert c.log.level == "debug" and c.log.format == "text"
    assert c.tlsrpt.organization_name == "Example"


def test_load_empty_file_gives_defaults(tmp_path):
    assert load_config(write(tmp_path, "")) == Config()
    assert load_config(write(tmp_path, "# only a comment\n[dns]\n")) == Config()


def test_load_none_without_system_file(monkeypatch, tmp_path):
    monkeypatch.setattr(config_paths, "SYSTEM_CONFIG_PATH", str(tmp_path / "missing.toml"))
    assert load_config(None) == Config()


def test_load_none_reads_system_file(monkeypatch, tmp_path):
    path = write(tmp_path, "[daemon]\nlisten = ['127.0.0.1:9999']\n")
    monkeypatch.setattr(config_paths, "SYSTEM_CONFIG_PATH", path)
    assert load_config().daemon.listen == ["127.0.0.1:9999"]


def test_unix_mode_as_string(tmp_path):
    assert load_config(write(tmp_path, '[daemon]\nunix_mode = "0660"\n')).daemon.unix_mode == 0o660
    assert load_config(write(tmp_path, '[daemon]\nunix_mode = "0o600"\n')).daemon.unix_mode == 0o600


def test_contrib_example_loads():
    c = load_config(str(ROOT / "contrib" / "mxsec.toml"))
    assert c.daemon.listen == ["127.0.0.1:8461"]
    assert c.cache.url == "sqlite:////var/lib/mxsec/cache.sqlite3"
    assert c.metrics.listen == "127.0.0.1:9461"
    assert c.daemon.zones["strict"].strict_testing


def test_contrib_service_unit():
    text = (ROOT / "contrib" / "mxsec.service").read_text()
    assert "ExecStart=/usr/local/bin/mxsec daemon --config /etc/mxsec/mxsec.toml" in text
    assert "ExecReload=/bin/kill -HUP $MAINPID" in text
    assert "StateDirectory=mxsec" in text and "User=mxsec" in text
    assert "ProtectSystem=strict" in text


def test_every_key_is_documented():
    doc = (ROOT / "docs" / "configuration.md").read_text()
    for key in all_keys():
        section, _, name = key.rpartition(".")
        assert f"`{name}`" in doc, key
    for section in ("[dns]", "[https]", "[tls]", "[net]", "[cache]", "[daemon]", "[daemon.default_zone]",
                    "[daemon.zones.NAME]", "[refresh]", "[metrics]", "[log]", "[tlsrpt]"):
        assert section in doc, section


def test_documented_example_loads(tmp_path):
    doc = (ROOT / "docs" / "configuration.md").read_text()
    start = doc.index("```toml\n", doc.index("## Complete example")) + len("```toml\n")
    example = doc[start : doc.index("```", start)]
    c = load_config(write(tmp_path, example))
    assert c != Config()


# -- errors -------------------------------------------------------------------------------------------------

ERRORS = [
    ('[daemon]\nlookup_timeout = "x"\n', 'daemon.lookup_timeout: expected a number, got "x"'),
    ("[daemon]\nlookup_timeout = 100\n", "daemon.lookup_timeout: must be below Postfix's socketmap timeout"),
    ("[daemon]\nlookup_timeout = 250.5\n", "daemon.lookup_timeout: must be below"),
    ("[daemon]\nlookup_timeout = 0\n", "daemon.lookup_timeout: must be a number of seconds > 0"),
    ("[daemon]\nlookup_timeout = nan\n", "daemon.lookup_timeout: expected a finite number"),
    ("[daemon]\nlookup_timeout = true\n", "daemon.lookup_timeout: expected a number, got true"),
    ("[daemon]\nlisten = \"127.0.0.1:8461\"\n", "daemon.listen: expected an array of strings"),
    ("[daemon]\nlisten = [8461]\n", "daemon.listen[0]: expected a string, got 8461"),
    ("[daemon]\nlisten = []\n", "daemon.listen: at least one address"),
    ("[daemon]\nlisten = ['localhost']\n", "daemon.listen: bad listen address 'localhost'"),
    ("[daemon]\nlisten = ['a:1', 'a:1']\n", "listed twice"),
    ("[daemon]\nmax_connections = 1.5\n", "daemon.max_connections: expected an integer, got 1.5"),
    ("[daemon]\nmax_connections = 0\n", "daemon.max_connections: must be at least 1"),
    ("[daemon]\nunix_mode = 0o1777\n", "daemon.unix_mode: permission must be between"),
    ("[daemon]\nunix_mode = '0999'\n", "daemon.unix_mode: expected an octal permission"),
    ("[daemon]\nzones = 3\n", "daemon.zones: expected a table of map names, got 3"),
    ("[daemon.zones.x]\nstrict_testing = 'yes'\n", 'daemon.zones.x.strict_testing: expected true or false, got "yes"'),
    ("[daemon.zones.x]\ntimeout = 3\n", "daemon.zones.x.timeout: unknown key"),
    ('[daemon.zones."two words"]\n', "daemon.zones: bad map name 'two words'"),
    ("[daemon.default_zone]\ntlsrpt = 1\n", "daemon.default_zone.tlsrpt: expected true or false, got 1"),
    ("[daemon]\nlookup_timeot = 3\n", "daemon.lookup_timeot: unknown key (did you mean 'lookup_timeout'?)"),
    ("[dnss]\ntimeout = 3\n", "dnss: unknown key (did you mean 'dns'?)"),
    ("frobnicate = 1\n", "frobnicate: unknown key"),
    ("dns = 3\n", "dns: expected a table, got 3"),
    ("[dns]\nnameservers = ['dns.google']\n", "dns.nameservers: bad nameserver 'dns.google'"),
    ("[dns]\nnameservers = ['1.2.3.4:99999']\n", "dns.nameservers: bad nameserver"),
    ("[dns]\ntimeout = -1\n", "dns.timeout: must be a number of seconds > 0"),
    ("[https]\nmax_body = 0\n", "https.max_body: must be a positive"),
    ("[tls]\nca_file = 3\n", "tls.ca_file: expected a string, got 3"),
    ("[tls]\nca_file = ''\n", "tls.ca_file: empty path"),
    ("[net]\nallow_addresses = ['10.0.0.0/33']\n", "net.allow_addresses: bad address range '10.0.0.0/33'"),
    ("[cache]\nurl = 'mysql://x'\n", "cache.url: cache URL 'mysql://x': unknown scheme"),
    ("[cache]\nurl = 'sqlite://relative.db'\n", "cache.url: cache URL"),
    ("[refresh]\nconcurrency = 0\n", "refresh.concurrency: must be at least 1"),
    ("[refresh]\ninterval = 0\n", "refresh.interval: must be a number of seconds > 0"),
    ("[refresh]\nfail_retry = -5\n", "refresh.fail_retry: must be a number of seconds >= 0"),
    ("[refresh]\nenabled = 'no'\n", 'refresh.enabled: expected true or false, got "no"'),
    ("[metrics]\nlisten = 'unix:/run/m.sock'\n", "metrics.listen: 'unix:/run/m.sock': the metrics endpoint needs HOST:PORT"),
    ("[metrics]\nlisten = '9461'\n", "metrics.listen: bad listen address '9461'"),
    ("[log]\nlevel = 'loud'\n", 'log.level: expected one of debug, info, warning, error, critical, got "loud"'),
    ("[log]\nformat = 'xml'\n", 'log.format: expected json or text, got "xml"'),
    ("[tlsrpt]\ndb = 'file.db'\n", "tlsrpt.db: expected a database URL"),
]


@pytest.mark.parametrize("text,expected", ERRORS)
def test_errors_are_one_line_and_name_the_key(tmp_path, text, expected):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    message = one_line_error(err)
    assert message.startswith(f"{path}: "), message
    assert expected in message, message


def test_error_message_format_from_brief(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write(tmp_path, '[daemon]\nlookup_timeout = "x"\n')
    with pytest.raises(ConfigError) as err:
        load_config("mxsec.toml")
    assert str(err.value) == 'mxsec.toml: daemon.lookup_timeout: expected a number, got "x"'


@pytest.mark.parametrize(
    "text,line",
    [("[daemon]\nlisten = [\n", None), ("[dns]\ntimeout = \n", 2), ("[dns]\n\n\ntimeout 5\n", 4), ("[a\n", 1)],
)
def test_toml_syntax_error_has_file_and_line(tmp_path, text, line):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    message = one_line_error(err)
    assert "invalid TOML" in message
    if line is not None:
        assert message.startswith(f"{path}:{line}:"), message
    else:
        assert message.startswith(f"{path}"), message


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError) as err:
        load_config(str(tmp_path / "nope.toml"))
    assert "cannot read" in one_line_error(err)


def test_directory_as_file(tmp_path):
    with pytest.raises(ConfigError) as err:
        load_config(str(tmp_path))
    assert "cannot read" in one_line_error(err)


def test_not_utf8(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_bytes(b"[dns]\ntimeout = 5 # \xff\xfe\n")
    with pytest.raises(ConfigError) as err:
        load_config(str(path))
    assert "UTF-8" in one_line_error(err)


def test_code_built_config_is_validated_too():
    with pytest.raises(ConfigError, match="lookup_timeout"):
        DaemonConfig(lookup_timeout=100.0)
    with pytest.raises(ConfigError, match="lookup_timeout"):
        DaemonConfig(lookup_timeout=99.999).__class__(lookup_timeout=100)
    assert DaemonConfig(lookup_timeout=99.5).lookup_timeout == 99.5
    with pytest.raises(ConfigError):
        DnsConfig(nameservers=["nope"])
    with pytest.raises(dataclasses.FrozenInstanceError):
        Config().dns = DnsConfig()  # type: ignore[misc]


def test_config_from_dict():
    c = config_from_dict({"daemon": {"listen": ["[::1]:25"]}}, source="x")
    assert c.daemon.listen == ["[::1]:25"]
    with pytest.raises(ConfigError, match=r"^x: daemon\.listen"):
        config_from_dict({"daemon": {"listen": ["[::1]"]}}, source="x")


# -- listen addresses ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text,expected",
    [
        ("127.0.0.1:8461", ListenAddress("tcp", host="127.0.0.1", port=8461)),
        ("0.0.0.0:0", ListenAddress("tcp", host="0.0.0.0", port=0)),
        ("localhost:8461", ListenAddress("tcp", host="localhost", port=8461)),
        ("mx-1.example.net:25", ListenAddress("tcp", host="mx-1.example.net", port=25)),
        ("[::1]:8461", ListenAddress("tcp", host="::1", port=8461)),
        ("[::]:8461", ListenAddress("tcp", host="::", port=8461)),
        ("[2001:db8::1]:65535", ListenAddress("tcp", host="2001:db8::1", port=65535)),
        ("[fe80::1%eth0]:8461", ListenAddress("tcp", host="fe80::1%eth0", port=8461)),
        ("unix:/run/mxsec/mxsec.sock", ListenAddress("unix", path="/run/mxsec/mxsec.sock")),
        ("unix:relative.sock", ListenAddress("unix", path="relative.sock")),
    ],
)
def test_parse_listen(text, expected):
    parsed = parse_listen(text)
    assert parsed == expected
    assert str(parsed) == text


@pytest.mark.parametrize(
    "text",
    [
        "", "8461", ":8461", "127.0.0.1", "127.0.0.1:", "127.0.0.1:http", "127.0.0.1:65536", "127.0.0.1:-1",
        "::1:8461", "[::1]", "[::1]8461", "[127.0.0.1]:8461", "[nothex::1]:8461", "unix:", "host name:1",
        "bad_host!:25", "1.2.3:80", "127.0.0.1:８４", "-bad.example:25",
    ],
)
def test_parse_listen_bad(text):
    with pytest.raises(ConfigError) as err:
        parse_listen(text)
    message = one_line_error(err)
    assert message.startswith("bad listen address")


def test_parse_listen_not_a_string():
    with pytest.raises(ConfigError):
        parse_listen(8461)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "text,expected",
    [
        ("127.0.0.1", ("127.0.0.1", 53)),
        ("127.0.0.1:5353", ("127.0.0.1", 5353)),
        ("::1", ("::1", 53)),
        ("[::1]:5353", ("::1", 5353)),
        ("[2001:db8::1]", ("2001:db8::1", 53)),
    ],
)
def test_parse_nameserver(text, expected):
    assert parse_nameserver(text) == expected


@pytest.mark.parametrize("text", ["", "dns.google", "1.2.3.4:", "1.2.3.4:x", "[::1]x", "[dns]:53", "1.2.3.4:70000",
                                  "127.0.0.1:0", "[::1]:0", "[127.0.0.1]:53"])
def test_parse_nameserver_bad(text):
    with pytest.raises(ConfigError) as err:
        parse_nameserver(text)
    one_line_error(err)


# -- overrides ----------------------------------------------------------------------------------------------


def test_overrides(tmp_path):
    base = load_config(write(tmp_path, FULL))
    c = apply_overrides(
        base,
        listen=["unix:/tmp/x.sock"],
        cache="sqlite:////tmp/c.db",
        nameservers=["10.0.0.53"],
        ca_file="/tmp/ca.pem",
        timeout=7,
        allow_addresses=["192.168.0.0/16"],
    )
    assert c.daemon.listen == ["unix:/tmp/x.sock"]
    assert c.cache.url == "sqlite:////tmp/c.db"
    assert c.dns.nameservers == ["10.0.0.53"]
    assert c.tls.ca_file == "/tmp/ca.pem"
    assert c.dns.timeout == 7.0 and c.https.timeout == 7.0
    assert c.net.allow_addresses == ["192.168.0.0/16"]
    # untouched parts stay
    assert c.daemon.zones == base.daemon.zones and c.refresh == base.refresh and c.daemon.unix_mode == 0o660
    assert c.https.max_body == base.https.max_body
    # the input is not modified
    assert base.daemon.listen[0] == "127.0.0.1:8461"


def test_overrides_not_given_keep_file_values(tmp_path):
    base = load_config(write(tmp_path, FULL))
    assert apply_overrides(base) == base
    assert apply_overrides(base, listen=[], nameservers=[], allow_addresses=[]) == base


def test_overrides_more():
    c = apply_overrides(
        Config(), lookup_timeout="45", metrics_listen="[::1]:9461", log_level="warn", log_format="text",
        tlsrpt_db="sqlite:////tmp/t.db", organization_name="Org", contact_info="a@b.example",
    )
    assert c.daemon.lookup_timeout == 45.0
    assert c.metrics.listen == "[::1]:9461"
    assert c.log == LogConfig("warning", "text")
    assert (c.tlsrpt.db, c.tlsrpt.organization_name, c.tlsrpt.contact_info) == ("sqlite:////tmp/t.db", "Org", "a@b.example")


@pytest.mark.parametrize(
    "kwargs,option",
    [
        ({"listen": ["nope"]}, "--listen: bad listen address 'nope'"),
        ({"cache": "ftp://x"}, "--cache: cache URL 'ftp://x'"),
        ({"nameservers": ["x"]}, "--nameserver: bad nameserver 'x'"),
        ({"timeout": 0}, "--timeout: expected a positive number"),
        ({"timeout": "soon"}, "--timeout: expected a number"),
        ({"allow_addresses": ["x/1"]}, "--allow-address: bad address range"),
        ({"ca_file": ""}, "--ca-file: empty path"),
        ({"lookup_timeout": 100}, "--lookup-timeout: must be below"),
        ({"metrics_listen": "x"}, "--metrics-listen: bad listen address"),
        ({"log_level": "x"}, "--log-level: expected one of"),
    ],
)
def test_override_errors_name_the_option(kwargs, option):
    with pytest.raises(ConfigError) as err:
        apply_overrides(Config(), **kwargs)
    message = one_line_error(err)
    assert message.startswith(option), message


# -- writing TOML -------------------------------------------------------------------------------------------


def test_config_to_toml_defaults_is_only_comments():
    text = config_to_toml(Config())
    assert tomllib.loads(text) == {}
    assert text.startswith("#")


def test_config_to_toml_round_trip(tmp_path):
    original = load_config(write(tmp_path, FULL))
    text = config_to_toml(original)
    assert "unix_mode = 0o660" in text
    again = load_config(write(tmp_path, text, "again.toml"))
    assert again == original


def test_config_to_toml_only_non_defaults():
    c = apply_overrides(Config(), timeout=9)
    data = tomllib.loads(config_to_toml(c))
    assert data == {"dns": {"timeout": 9.0}, "https": {"timeout": 9.0}}


def test_config_to_toml_quotes_odd_zone_names_and_keeps_empty_zones(tmp_path):
    c = Config(daemon=DaemonConfig(zones={"a.b": ZoneConfig(), "QUERY": ZoneConfig(strict_testing=True)}))
    text = config_to_toml(c, header=["custom header"], comments=False)
    assert text.startswith("# custom header\n")
    assert '[daemon.zones."a.b"]' in text
    assert "#" not in text.split("\n", 1)[1]
    assert load_config(write(tmp_path, text)) == c


def test_config_to_toml_contrib_round_trip(tmp_path):
    c = load_config(str(ROOT / "contrib" / "mxsec.toml"))
    assert load_config(write(tmp_path, config_to_toml(c))) == c


def test_metrics_and_log_direct():
    assert MetricsConfig("127.0.0.1:9461").listen == "127.0.0.1:9461"
    with pytest.raises(ConfigError):
        LogConfig(level="verbose")


# -- robustness ---------------------------------------------------------------------------------------------

from hypothesis import given, strategies as st  # noqa: E402


@given(st.text(max_size=60))
def test_parsers_raise_only_config_error(text):
    for parser in (parse_listen, parse_nameserver):
        try:
            parser(text)
        except ConfigError as exc:
            assert "\n" not in str(exc)


@given(st.text(max_size=60))
def test_parse_listen_round_trips(text):
    try:
        parsed = parse_listen(text)
    except ConfigError:
        return
    assert parse_listen(str(parsed)) == parsed


def test_reports_db_defaults_to_the_data_directory(monkeypatch, tmp_path):
    monkeypatch.setattr(config_paths.os, "geteuid", lambda: 1000)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    assert config_paths.default_reports_db_url() == f"sqlite:///{tmp_path}/mxsec/reports.sqlite3"
    monkeypatch.setenv("XDG_DATA_HOME", "relative")  # not absolute: ignored
    monkeypatch.setenv("HOME", str(tmp_path))
    assert config_paths.default_reports_db_url() == f"sqlite:///{tmp_path}/.local/share/mxsec/reports.sqlite3"
    monkeypatch.setattr(config_paths.os, "geteuid", lambda: 0)
    assert config_paths.default_reports_db_url() == "sqlite:////var/lib/mxsec/reports.sqlite3"
