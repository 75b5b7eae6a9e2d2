"""mxsec serve-policy's site sets (mxsec.serve_policy.sites): --policy, --policy-dir and --sites sources, the
host lookup (STS-B-1: the host is mta-sts.<PolicyDomain>; STS-B-15: senders send it as SNI), and reload."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from mxsec.errors import ConfigError
from mxsec.serve_policy.files import LoadedPolicy
from mxsec.serve_policy.sites import MAX_SITES, MAX_SITES_FILE_BYTES, Site, SiteSet, load_sites, reload_sites
from mxsec.sts.policy import MAX_POLICY_BYTES, parse_policy

IDN = "bücher.example"
IDN_A = "xn--bcher-kva.example"


def _policy(mode: str = "enforce", mx: str = "mx.example.net", max_age: int = 604800) -> bytes:
    return f"version: STSv1\r\nmode: {mode}\r\nmx: {mx}\r\nmax_age: {max_age}\r\n".encode()


def _dir(tmp_path: Path, files: dict[str, bytes], name: str = "policies") -> Path:
    directory = tmp_path / name
    directory.mkdir()
    for file_name, body in files.items():
        (directory / file_name).write_bytes(body)
    return directory


def _sites_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "sites.toml"
    path.write_text(text, encoding="utf-8")
    return path


SITES = """\
[policy]
mode = "enforce"
max_age = 604800

[domains."example.com"]
mx = ["mx1.example.com", "*.mx.example.net"]

[domains."example.org"]
mx = ["mail.example.org"]
mode = "testing"
max_age = 86400

[domains."bücher.example"]
mx = ["mail.bücher.example"]

[domains."gone.example"]
mode = "none"
"""


def _one_line(exc: pytest.ExceptionInfo[ConfigError]) -> str:
    message = str(exc.value)
    assert "\n" not in message
    return message


# --------------------------------------------------------------------------- choosing the source
@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"policy_path": "a", "policy_dir": "b"},
        {"policy_path": "a", "sites_path": "c"},
        {"policy_dir": "b", "sites_path": "c"},
        {"policy_path": "a", "policy_dir": "b", "sites_path": "c"},
    ],
)
def test_exactly_one_source(kwargs: dict[str, str]) -> None:
    with pytest.raises(ConfigError) as exc:
        load_sites(**kwargs)
    message = _one_line(exc)
    assert "--policy, --policy-dir or --sites" in message


def test_bad_domain_option_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "p.txt"
    path.write_bytes(_policy())
    with pytest.raises(ConfigError, match="not the policy host"):
        load_sites(policy_path=str(path), domains=["mta-sts.example.com"])
    with pytest.raises(ConfigError, match="--domain"):
        load_sites(policy_path=str(path), domains=["bad_name.example"])


# --------------------------------------------------------------------------- --policy
def test_single_policy_without_domains_serves_every_host(tmp_path: Path) -> None:
    path = tmp_path / "mta-sts.txt"
    path.write_bytes(_policy())
    sites = load_sites(policy_path=str(path))
    assert sites.any_host is not None
    assert sites.sites == {}
    assert sites.domains == ()
    assert sites.source == f"policy {path}"
    assert sites.any_host.policy.body == _policy()
    for host in ("mta-sts.example.com", "anything", None, "[::1]:443"):
        assert sites.for_host(host) is sites.any_host


def test_single_policy_with_domains(tmp_path: Path) -> None:
    path = tmp_path / "mta-sts.txt"
    path.write_bytes(_policy())
    sites = load_sites(policy_path=str(path), domains=["Example.COM", IDN, "example.com."])
    assert sites.any_host is None
    assert sites.domains == ("example.com", IDN_A)
    assert set(sites.sites) == {"mta-sts.example.com", f"mta-sts.{IDN_A}"}
    site = sites.for_host("mta-sts.example.com")
    assert site is not None and site.domain == "example.com" and site.host == "mta-sts.example.com"
    assert site.policy.body == _policy()
    assert sites.for_host("mta-sts.example.org") is None
    assert sites.for_host(None) is None


def test_single_policy_errors_are_one_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as exc:
        load_sites(policy_path=str(tmp_path / "missing.txt"))
    assert "cannot read policy" in _one_line(exc) and "missing.txt" in str(exc.value)
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"version: STSv1\r\nmode: enforcing\r\nmx: a.example\r\nmax_age: 1\r\n")
    with pytest.raises(ConfigError) as exc:
        load_sites(policy_path=str(bad), domains=["example.com"])
    assert "not a valid MTA-STS policy" in _one_line(exc)


# --------------------------------------------------------------------------- for_host
@pytest.fixture
def two_sites(tmp_path: Path) -> SiteSet:
    directory = _dir(tmp_path, {"example.com.txt": _policy(mx="a.example"), f"{IDN}.txt": _policy(mx="b.example")})
    return load_sites(policy_dir=str(directory))


@pytest.mark.parametrize(
    "host",
    [
        "mta-sts.example.com",
        "MTA-STS.Example.COM",
        "mta-sts.example.com:443",
        "mta-sts.example.com:8443",
        "mta-sts.example.com.",
        "mta-sts.example.com.:443",
        "mta-sts.example.com:",
        " mta-sts.example.com ",
    ],
)
def test_sts_b_1_for_host_normalises(two_sites: SiteSet, host: str) -> None:
    site = two_sites.for_host(host)
    assert site is not None and site.domain == "example.com"


@pytest.mark.parametrize(
    "host",
    [f"mta-sts.{IDN}", f"mta-sts.{IDN_A}", f"MTA-STS.{IDN_A.upper()}", "mta-sts.BÜCHER.example:443",
     f"mta-sts.{IDN}."],
)
def test_sts_b_15_for_host_idn_sni_name(two_sites: SiteSet, host: str) -> None:
    site = two_sites.for_host(host)
    assert site is not None
    assert site.domain == IDN_A and site.host == f"mta-sts.{IDN_A}"


@pytest.mark.parametrize(
    "host",
    [None, "", "example.com", "www.example.com", "mta-sts.example.org", "mta-sts.example.com:https",
     "mta-sts.example.com:443:443", "[::1]:443", "::1", "127.0.0.1", "mta-sts.example.com..", "x" * 5000,
     "mta-sts.bad_name.example", "mta-sts.\udcff.example"],
)
def test_sts_b_1_for_host_not_served(two_sites: SiteSet, host: str | None) -> None:
    assert two_sites.for_host(host) is None


# --------------------------------------------------------------------------- --policy-dir
def test_policy_dir_loads_each_file(tmp_path: Path) -> None:
    directory = _dir(tmp_path, {
        "example.com.txt": _policy(mx="mx.example.com"),
        "Example.ORG.txt": _policy(mode="testing", mx="mx.example.org"),
        f"{IDN}.txt": _policy(mx="mx.bucher.example"),
        ".hidden.example.txt": b"garbage",
        "example.net.txt.bak": b"garbage",
        "example.net.conf": b"garbage",
        "README": b"garbage",
    })
    (directory / "sub.example.txt").mkdir()  # a directory with a policy-like name is ignored
    (directory / "nested").mkdir()
    (directory / "nested" / "example.info.txt").write_bytes(_policy())
    sites = load_sites(policy_dir=str(directory))
    assert sites.source == f"policy-dir {directory}"
    assert sites.any_host is None
    assert sites.domains == ("example.com", "example.org", IDN_A)
    org = sites.for_host("mta-sts.example.org")
    assert org is not None and org.policy.policy.mode == "testing"
    assert org.policy.body == _policy(mode="testing", mx="mx.example.org")
    assert any("mode testing" in w for w in org.policy.warnings)
    idn = sites.for_host(f"mta-sts.{IDN}")
    assert idn is not None and idn.policy.policy.mx == ("mx.bucher.example",)


def test_policy_dir_body_served_byte_for_byte(tmp_path: Path) -> None:
    body = b"\xef\xbb\xbfversion: STSv1\nmode: enforce\n\nmx: mx.example.com\nmax_age: 604800"  # BOM, LF, no final EOL
    sites = load_sites(policy_dir=str(_dir(tmp_path, {"example.com.txt": body})))
    site = sites.for_host("mta-sts.example.com")
    assert site is not None and site.policy.body == body
    assert any("byte order mark" in w for w in site.policy.warnings)


def test_policy_dir_duplicate_domain_is_an_error(tmp_path: Path) -> None:
    directory = _dir(tmp_path, {f"{IDN}.txt": _policy(), f"{IDN_A}.txt": _policy()})
    with pytest.raises(ConfigError) as exc:
        load_sites(policy_dir=str(directory))
    message = _one_line(exc)
    assert IDN_A in message and "2 files" in message and f"{IDN_A}.txt" in message


def test_policy_dir_with_domains_serves_only_those(tmp_path: Path) -> None:
    directory = _dir(tmp_path, {"example.com.txt": _policy(), "example.org.txt": _policy(), "bad_name.txt": b"x"})
    sites = load_sites(policy_dir=str(directory), domains=["example.org"])
    assert sites.domains == ("example.org",)
    assert sites.for_host("mta-sts.example.com") is None


def test_policy_dir_with_domains_missing_file(tmp_path: Path) -> None:
    directory = _dir(tmp_path, {"example.com.txt": _policy()})
    with pytest.raises(ConfigError) as exc:
        load_sites(policy_dir=str(directory), domains=["example.com", "example.net"])
    message = _one_line(exc)
    assert "example.net" in message and str(directory / "example.net.txt") in message


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        ({}, "no policy files"),
        ({".hidden.txt": _policy(), "notes.md": b"x"}, "no policy files"),
        ({"bad_name.example.txt": _policy()}, "not a domain name"),
        ({"mta-sts.example.com.txt": _policy()}, "not the policy host"),
        ({"example.com.txt": b"version: STSv1\r\n"}, "not a valid MTA-STS policy"),
        ({"example.com.txt": b"x" * (MAX_POLICY_BYTES + 10)}, "larger than"),
    ],
)
def test_policy_dir_errors(tmp_path: Path, files: dict[str, bytes], expected: str) -> None:
    directory = _dir(tmp_path, files)
    with pytest.raises(ConfigError) as exc:
        load_sites(policy_dir=str(directory))
    message = _one_line(exc)
    assert expected in message and str(directory) in message


def test_policy_dir_error_names_domain_and_file(tmp_path: Path) -> None:
    directory = _dir(tmp_path, {"example.com.txt": _policy(), "example.org.txt": b"mode: enforce\r\n"})
    with pytest.raises(ConfigError) as exc:
        load_sites(policy_dir=str(directory))
    message = _one_line(exc)
    assert "example.org:" in message and str(directory / "example.org.txt") in message


def test_policy_dir_unreadable(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as exc:
        load_sites(policy_dir=str(tmp_path / "nowhere"))
    assert "cannot read policy-dir" in _one_line(exc)
    afile = tmp_path / "afile"
    afile.write_bytes(b"")
    with pytest.raises(ConfigError, match="cannot read policy-dir"):
        load_sites(policy_dir=str(afile))


def test_policy_dir_too_many(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import mxsec.serve_policy.sites as sites_module

    monkeypatch.setattr(sites_module, "MAX_SITES", 3)
    directory = _dir(tmp_path, {f"d{i}.example.txt": _policy() for i in range(4)})
    with pytest.raises(ConfigError) as exc:
        load_sites(policy_dir=str(directory))
    assert "more than 3" in _one_line(exc)
    (directory / "d3.example.txt").unlink()
    assert len(load_sites(policy_dir=str(directory)).sites) == 3


def test_max_sites_value() -> None:
    assert MAX_SITES == 10000


def test_policy_dir_2000_domains_is_fast(tmp_path: Path) -> None:
    directory = tmp_path / "many"
    directory.mkdir()
    for i in range(2000):
        (directory / f"customer{i}.example.txt").write_bytes(_policy(mx=f"mx.customer{i}.example"))
    started = time.perf_counter()
    sites = load_sites(policy_dir=str(directory))
    elapsed = time.perf_counter() - started
    assert len(sites.sites) == 2000
    site = sites.for_host("MTA-STS.customer1999.example:443")
    assert site is not None and site.policy.policy.mx == ("mx.customer1999.example",)
    assert elapsed < 1.5, f"loading 2000 policies took {elapsed:.2f} s"


# --------------------------------------------------------------------------- --sites
def test_sites_template_bodies(tmp_path: Path) -> None:
    path = _sites_file(tmp_path, SITES)
    sites = load_sites(sites_path=str(path))
    assert sites.source == f"sites {path}"
    assert sites.domains == ("example.com", "example.org", "gone.example", IDN_A)

    com = sites.for_host("mta-sts.example.com")
    assert com is not None
    parsed = parse_policy(com.policy.body)
    assert (parsed.mode, parsed.max_age, parsed.mx) == ("enforce", 604800, ("mx1.example.com", "*.mx.example.net"))
    assert com.policy.policy == parsed
    assert com.policy.path == f"{path}#example.com"
    assert com.policy.warnings == ()

    org = sites.for_host("mta-sts.example.org")
    assert org is not None
    parsed = parse_policy(org.policy.body)
    assert (parsed.mode, parsed.max_age, parsed.mx) == ("testing", 86400, ("mail.example.org",))
    assert any("mode testing" in w for w in org.policy.warnings)

    idn = sites.for_host(f"mta-sts.{IDN}")
    assert idn is not None
    assert parse_policy(idn.policy.body).mx == (f"mail.{IDN_A}",)
    assert any("A-label" in w or "xn--" in w for w in idn.policy.warnings)

    gone = sites.for_host("mta-sts.gone.example")
    assert gone is not None
    parsed = parse_policy(gone.policy.body)
    assert (parsed.mode, parsed.mx) == ("none", ())


def test_sites_domain_override_of_max_age_only(tmp_path: Path) -> None:
    path = _sites_file(tmp_path, '[policy]\nmode = "testing"\nmax_age = 86400\n'
                                 '[domains."example.com"]\nmx = ["mx.example.com"]\nmax_age = 1209600\n')
    site = load_sites(sites_path=str(path)).for_host("mta-sts.example.com")
    assert site is not None
    parsed = parse_policy(site.policy.body)
    assert (parsed.mode, parsed.max_age) == ("testing", 1209600)


def test_sites_with_domains(tmp_path: Path) -> None:
    path = _sites_file(tmp_path, SITES)
    sites = load_sites(sites_path=str(path), domains=["example.org", IDN])
    assert sites.domains == ("example.org", IDN_A)
    # a problem in an entry not asked for does not matter
    other = tmp_path / "other.toml"
    other.write_text(SITES + '[domains."EXAMPLE.COM"]\nmx = ["x.example"]\n[domains."bad_name"]\nbogus = 1\n',
                     encoding="utf-8")
    assert load_sites(sites_path=str(other), domains=["example.org"]).domains == ("example.org",)
    with pytest.raises(ConfigError, match="listed twice"):
        load_sites(sites_path=str(other), domains=["example.com"])
    with pytest.raises(ConfigError) as exc:
        load_sites(sites_path=str(path), domains=["example.org", "example.net"])
    message = _one_line(exc)
    assert "example.net" in message and "not listed" in message and str(path) in message


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('[policy]\nmode = "enforce"\nmax_age = 604800\n[domains."example.com"]\nmx = ["a.example"]\nmaxage = 1\n',
         ["unknown key 'maxage'", "example.com"]),
        ('[policy]\nmode = "enforce"\nmax_age = 604800\nmx = ["a.example"]\n[domains."example.com"]\nmx = ["a"]\n',
         ["[policy]", "unknown key 'mx'"]),
        ('[policy]\nmode = "enforce"\nmax_age = 604800\n[other]\n[domains."example.com"]\nmx = ["a.example"]\n',
         ["unknown key 'other'"]),
        ('[policy]\nmode = "enforce"\nmax_age = 604800\n[domains.example.com]\nmx = ["a.example"]\n',
         ["unknown key 'com'", "quoted"]),
        ('[policy]\nmode = "enforce"\nmax_age = 604800\n[domains."example.com"]\n',
         ["example.com", "mx is required"]),
        ('[policy]\nmode = "enforce"\nmax_age = 604800\n[domains."example.com"]\nmx = []\n',
         ["example.com", "mx is empty"]),
        ('[policy]\nmode = "enforce"\nmax_age = 604800\n[domains."example.com"]\nmx = "a.example"\n',
         ["example.com", "list of strings"]),
        ('[policy]\nmode = "enforce"\nmax_age = 604800\n[domains."example.com"]\nmx = ["a.example", 3]\n',
         ["example.com", "list of strings"]),
        ('[policy]\nmode = "enforcing"\nmax_age = 604800\n[domains."example.com"]\nmx = ["a.example"]\n',
         ["example.com", "mode must be enforce, testing or none"]),
        ('[policy]\nmode = "enforce"\nmax_age = 99999999999\n[domains."example.com"]\nmx = ["a.example"]\n',
         ["example.com", "max_age"]),
        ('[policy]\nmode = "enforce"\nmax_age = 1.5\n[domains."example.com"]\nmx = ["a.example"]\n',
         ["example.com", "max_age"]),
        ('[policy]\nmode = "enforce"\nmax_age = 604800\n[domains."example.com"]\nmx = ["bad_host!.example"]\n',
         ["example.com", "bad_host"]),
        ('[policy]\nmax_age = 604800\n[domains."example.com"]\nmx = ["a.example"]\n', ["example.com", "no mode"]),
        ('[policy]\nmode = "enforce"\n[domains."example.com"]\nmx = ["a.example"]\n', ["example.com", "no max_age"]),
        ('[policy]\nmode = "enforce"\nmax_age = 604800\n', ["no [domains"]),
        ('[policy]\nmode = "enforce"\nmax_age = 604800\n[domains."bad_name.example"]\nmx = ["a.example"]\n',
         ["bad_name.example", "not a domain name"]),
        ('[policy]\nmode = "enforce"\nmax_age = 604800\n[domains."mta-sts.example.com"]\nmx = ["a.example"]\n',
         ["not the policy host"]),
        ('[policy]\nmode = "enforce"\nmax_age = 604800\n[domains."example.com"]\nmx = ["a.example"]\n'
         '[domains."EXAMPLE.com."]\nmx = ["b.example"]\n', ["example.com", "listed twice"]),
        ('policy = 3\n[domains."example.com"]\nmx = ["a.example"]\n', ["policy must be a table"]),
        ('domains = 3\n', ["domains must be a table"]),
        ('domains = {"example.com" = 3}\n[policy]\nmode = "enforce"\nmax_age = 604800\n',
         ["example.com", "must be a table"]),
        ('[policy\nmode = "enforce"\n', ["TOML syntax error"]),
    ],
)
def test_sites_errors(tmp_path: Path, text: str, expected: list[str]) -> None:
    path = _sites_file(tmp_path, text)
    with pytest.raises(ConfigError) as exc:
        load_sites(sites_path=str(path))
    message = _one_line(exc)
    assert str(path) in message
    for part in expected:
        assert part in message


def test_sites_file_limits(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as exc:
        load_sites(sites_path=str(tmp_path / "missing.toml"))
    assert "cannot read sites" in _one_line(exc)
    big = tmp_path / "big.toml"
    big.write_bytes(b"# " + b"x" * MAX_SITES_FILE_BYTES + b"\n")
    with pytest.raises(ConfigError) as exc:
        load_sites(sites_path=str(big))
    assert "larger than" in _one_line(exc)
    latin = tmp_path / "latin.toml"
    latin.write_bytes(b"# caf\xe9\n")
    with pytest.raises(ConfigError) as exc:
        load_sites(sites_path=str(latin))
    assert "not UTF-8" in _one_line(exc)


def test_sites_too_many(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import mxsec.serve_policy.sites as sites_module

    monkeypatch.setattr(sites_module, "MAX_SITES", 2)
    text = '[policy]\nmode = "enforce"\nmax_age = 604800\n' + "".join(
        f'[domains."d{i}.example"]\nmx = ["mx.example"]\n' for i in range(3))
    with pytest.raises(ConfigError) as exc:
        load_sites(sites_path=str(_sites_file(tmp_path, text)))
    assert "more than 2" in _one_line(exc)


# --------------------------------------------------------------------------- reload
def test_reload_policy_dir_per_domain(tmp_path: Path) -> None:
    directory = _dir(tmp_path, {"a.example.txt": _policy(mx="old.a"), "b.example.txt": _policy(mx="old.b"),
                                "c.example.txt": _policy(mx="old.c")})
    first = load_sites(policy_dir=str(directory))
    (directory / "a.example.txt").write_bytes(b"version: STSv1\r\nmode: broken\r\n")  # bad: keeps previous
    (directory / "b.example.txt").write_bytes(_policy(mx="new.b"))  # updated
    (directory / "c.example.txt").unlink()  # removed
    (directory / "d.example.txt").write_bytes(_policy(mx="new.d"))  # added
    (directory / "e.example.txt").write_bytes(b"nonsense")  # new and bad: left out
    second, errors = reload_sites(first, policy_dir=str(directory))
    assert second.domains == ("a.example", "b.example", "d.example")
    a = second.for_host("mta-sts.a.example")
    assert a is not None and a is first.for_host("mta-sts.a.example")
    assert a.policy.policy.mx == ("old.a",)
    b = second.for_host("mta-sts.b.example")
    assert b is not None and b.policy.policy.mx == ("new.b",)
    assert second.for_host("mta-sts.c.example") is None
    assert len(errors) == 2
    assert "a.example" in errors[0] and "still serving the previous policy" in errors[0]
    assert "e.example" in errors[1] and "not served" in errors[1]
    assert all("\n" not in e for e in errors)


def test_reload_source_failure_keeps_previous(tmp_path: Path) -> None:
    directory = _dir(tmp_path, {"a.example.txt": _policy()})
    first = load_sites(policy_dir=str(directory))
    (directory / "a.example.txt").unlink()
    same, errors = reload_sites(first, policy_dir=str(directory))  # now empty
    assert same is first and len(errors) == 1 and "no policy files" in errors[0]
    directory.rmdir()
    same, errors = reload_sites(first, policy_dir=str(directory))  # now gone
    assert same is first and len(errors) == 1 and "cannot read policy-dir" in errors[0]
    same, errors = reload_sites(first)  # no source at all: still no exception
    assert same is first and len(errors) == 1


def test_reload_sites_toml(tmp_path: Path) -> None:
    path = _sites_file(tmp_path, SITES)
    first = load_sites(sites_path=str(path))
    path.write_text(SITES.replace('mx = ["mail.example.org"]', 'mx = ["bad_host!"]')
                    .replace('mx = ["mx1.example.com", "*.mx.example.net"]', 'mx = ["mx9.example.com"]')
                    + '[domains."new.example"]\nmx = ["mx.new.example"]\nbogus = 1\n', encoding="utf-8")
    second, errors = reload_sites(first, sites_path=str(path))
    org = second.for_host("mta-sts.example.org")
    assert org is not None and org is first.for_host("mta-sts.example.org")
    com = second.for_host("mta-sts.example.com")
    assert com is not None and com.policy.policy.mx == ("mx9.example.com",)
    assert second.for_host("mta-sts.new.example") is None
    assert len(errors) == 2
    assert any("example.org" in e and "still serving the previous policy" in e for e in errors)
    assert any("new.example" in e and "bogus" in e and "not served" in e for e in errors)

    path.write_text("[policy\n", encoding="utf-8")
    same, errors = reload_sites(second, sites_path=str(path))
    assert same is second and len(errors) == 1 and "TOML syntax error" in errors[0]


def test_reload_single_policy(tmp_path: Path) -> None:
    path = tmp_path / "mta-sts.txt"
    path.write_bytes(_policy(mx="old.example"))
    first = load_sites(policy_path=str(path))
    path.write_bytes(b"broken")
    same, errors = reload_sites(first, policy_path=str(path))
    assert same is first and len(errors) == 1 and str(path) in errors[0]
    path.write_bytes(_policy(mx="new.example"))
    second, errors = reload_sites(first, policy_path=str(path))
    assert errors == []
    assert second.any_host is not None and second.any_host.policy.policy.mx == ("new.example",)


def test_reload_all_domains_failing_without_previous_keeps_previous(tmp_path: Path) -> None:
    directory = _dir(tmp_path, {"a.example.txt": _policy()})
    first = load_sites(policy_dir=str(directory))
    os.rename(directory / "a.example.txt", directory / "b.example.txt")
    (directory / "b.example.txt").write_bytes(b"broken")
    same, errors = reload_sites(first, policy_dir=str(directory))
    assert same is first
    assert any("b.example" in e for e in errors) and any("no domain left" in e for e in errors)


def test_site_types(tmp_path: Path) -> None:
    sites = load_sites(policy_dir=str(_dir(tmp_path, {"example.com.txt": _policy()})))
    site = sites.sites["mta-sts.example.com"]
    assert isinstance(site, Site) and isinstance(site.policy, LoadedPolicy)
    with pytest.raises(TypeError):
        sites.sites["mta-sts.x.example"] = site  # type: ignore[index]  # read-only mapping


def test_docs_sites_example_loads(tmp_path: Path) -> None:
    """The TOML example in docs/generate.md ("Many domains from one process") loads and gives what it says."""
    doc = (Path(__file__).resolve().parents[2] / "docs" / "generate.md").read_text(encoding="utf-8")
    section = doc.split("### Many domains from one process", 1)[1].split("\n### ", 1)[0]
    example = section.split("```toml\n", 1)[1].split("```", 1)[0]
    path = _sites_file(tmp_path, example)
    sites = load_sites(sites_path=str(path))
    assert sites.domains == ("example.com", "example.org", "old.example", IDN_A)
    com = sites.for_host("mta-sts.example.com")
    assert com is not None
    assert com.policy.body == (b"version: STSv1\r\nmode: enforce\r\nmx: mx1.example.com\r\nmx: *.mx.example.net\r\n"
                               b"max_age: 604800\r\n")
    path.write_text(example.replace("max_age = 86400", "maxage = 86400"), encoding="utf-8")
    with pytest.raises(ConfigError) as exc:
        load_sites(sites_path=str(path))
    assert _one_line(exc) == f"sites {path}: example.org: unknown key 'maxage' (known: mx, mode, max_age)"
