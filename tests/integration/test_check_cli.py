"""The real `mxsec check` command line against a fake world on 127.0.89.x and tiny STARTTLS servers on 127.0.87.x.

The world (DNS + the HTTPS policy host on port 443, with its throw-away CA given as --ca-file) holds one domain
per situation; the MX hosts of the SMTP tests are :class:`~tests.integration.test_dane_tools.FakeMx` servers
presenting certificates from that CA (or from a stranger's). `mxsec check` runs as a subprocess with
--nameserver, --ca-file and --allow-address 127.0.0.0/8. Nothing leaves 127.0.0.0/8.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from mxsec.check.findings import CATALOGUE
from mxsec.dane.tlsa import tlsa_for_certificate
from mxsec.testing.fakeworld import FakeWorld, PolicySpec, policy_text
from mxsec.testing.pki import TestCA
from mxsec.results import ResultType
from tests.integration.conftest import running_world
from tests.integration.test_dane_tools import FakeMx

from .daemonproc import MXSEC

pytestmark = pytest.mark.integration

DNS_IP, HTTPS_IP = "127.0.89.1", "127.0.89.2"
RESULT_TYPES = {r.value for r in ResultType}
REQUIREMENT = re.compile(r"(STS-[A-G]|DANE-H|RPT-I|EC)-?\d+$")
HOSTILE_TXT = "<script>alert(1)</script>\x1b[2J\x07"
LONG_AGO = 1209600  # a max_age that raises no remark


def rpt(domain: str) -> str:
    return f"v=TLSRPTv1; rua=mailto:tlsrpt@{domain}"


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Iterator[FakeWorld]:
    with running_world(dns_ip=DNS_IP, https_ip=HTTPS_IP, https_port=443,
                       state_dir=tmp_path_factory.mktemp("check-world")) as w:
        for name in ("clean.test", "xn--bcher-kva.test"):
            w.add_domain(name, txt=["v=STSv1; id=1"], mx=[f"mx.{name}"],
                         policy=PolicySpec(body=policy_text([f"mx.{name}"], max_age=LONG_AGO)))
            w.set_record(f"mx.{name}", "A", ["127.0.89.25"])
            w.set_record(f"_smtp._tls.{name}", "TXT", [rpt(name)])
        w.add_domain("broken.test", txt=["v=STSv1; id=1"], mx=["mx.broken.test"], policy=PolicySpec(status=404))
        w.set_record("mx.broken.test", "A", ["127.0.89.25"])
        w.add_domain("hostile.test", txt=["v=STSv1; id=1", HOSTILE_TXT], mx=["mx.hostile.test"],
                     policy=PolicySpec(body="version: STSv1\r\nmode: enforce\r\nmx: <b>mx</b>\r\n"
                                            "max_age: 86400\x1b]0;owned\x07\r\n"))
        w.set_record("mx.hostile.test", "A", ["127.0.89.25"])
        w.set_record("_smtp._tls.hostile.test", "TXT", ["v=TLSRPTv1; rua=mailto:<script>@hostile.test"])
        yield w


def check(world: FakeWorld, *args: str, smtp_port: int | None = None, input: str | None = None,
          ca: bool = True) -> subprocess.CompletedProcess:
    ip, port = world.dns_address
    cmd = [MXSEC, "check", *args, "--nameserver", f"{ip}:{port}", "--allow-address", "127.0.0.0/8",
           "--timeout", "3", "--smtp-timeout", "5"]
    if ca:
        cmd += ["--ca-file", str(world.ca_file)]
    if smtp_port is not None:
        cmd += ["--smtp-port", str(smtp_port)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=90, input=input, check=False)


def lines(result: subprocess.CompletedProcess) -> dict[str, dict]:
    objects = [json.loads(line) for line in result.stdout.splitlines()]
    return {obj["domain"]: obj for obj in objects}


def codes(obj: dict) -> dict[str, dict]:
    return {f["code"]: f for f in obj["findings"]}


def assert_no_traceback(result: subprocess.CompletedProcess) -> None:
    assert "Traceback" not in result.stderr and "Traceback" not in result.stdout, result.stderr


def assert_one_line_error(result: subprocess.CompletedProcess, *words: str) -> None:
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    assert_no_traceback(result)
    err = result.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("mxsec: "), result.stderr
    for word in words:
        assert word in err[0], err[0]
    assert result.stdout == ""


def assert_contract(obj: dict) -> None:
    """The stable keys of `mxsec check --json` (docs/check.md, "JSON Lines")."""
    assert isinstance(obj["domain"], str) and obj["domain"].isascii() and obj["domain"] == obj["domain"].lower()
    assert {"findings", "mta_sts", "tlsrpt", "dane", "mx"} <= set(obj)
    for f in obj["findings"]:
        assert {"code", "severity", "message", "result_type", "requirement"} <= set(f)
        assert f["code"] in CATALOGUE
        assert f["severity"] in ("error", "warning", "info")
        assert isinstance(f["message"], str) and f["message"]
        assert f["result_type"] is None or f["result_type"] in RESULT_TYPES
        assert f["requirement"] is None or REQUIREMENT.fullmatch(f["requirement"])


# ------------------------------------------------------------------------------------------- DNS and HTTPS only


def test_clean_domain_json_exit_0(world: FakeWorld) -> None:
    result = check(world, "clean.test", "--json", "--no-smtp")
    assert_no_traceback(result)
    assert result.returncode == 0, result.stdout + result.stderr
    (obj,) = lines(result).values()
    assert_contract(obj)
    found = codes(obj)
    assert {"sts-mode-enforce", "tlsrpt-ok", "dnssec-unsigned"} <= set(found)
    assert all(f["severity"] == "info" for f in obj["findings"]), found
    assert obj["mta_sts"]["policy"]["mode"] == "enforce" and obj["mta_sts"]["id"] == "1"
    assert obj["mta_sts"]["fetch"]["status"] == 200
    assert obj["mx"]["records"] == [{"preference": 10, "host": "mx.clean.test"}]
    assert obj["tlsrpt"]["rua"] == ["mailto:tlsrpt@clean.test"]
    assert obj["dane"]["level"] == "none" and obj["smtp"]["checked"] is False


def test_domain_is_reported_as_an_a_label(world: FakeWorld) -> None:
    result = check(world, "Bücher.TEST.", "--json", "--no-smtp")
    assert result.returncode == 0, result.stderr
    assert list(lines(result)) == ["xn--bcher-kva.test"]


def test_sts_a_12_delegated_record_is_followed_and_noted(world: FakeWorld) -> None:
    world.add_domain("delegated.test", mx=["mx.delegated.test"],
                     policy=PolicySpec(body=policy_text(["mx.delegated.test"], max_age=LONG_AGO)))
    world.set_record("mx.delegated.test", "A", ["127.0.89.25"])
    world.set_record("_mta-sts.delegated.test", "CNAME", ["_mta-sts.provider.test."])
    world.set_record("_mta-sts.provider.test", "TXT", ["v=STSv1; id=5"])
    result = check(world, "delegated.test", "--json", "--no-smtp")
    assert_no_traceback(result)
    obj = lines(result)["delegated.test"]
    found = codes(obj)
    assert found["sts-txt-cname"]["severity"] == "info"
    assert "_mta-sts.provider.test" in found["sts-txt-cname"]["message"]
    assert obj["mta_sts"]["cname"] == "_mta-sts.provider.test" and obj["mta_sts"]["id"] == "5"
    assert "sts-mode-enforce" in found  # the policy came from mta-sts.delegated.test
    plain = lines(check(world, "clean.test", "--json", "--no-smtp"))["clean.test"]
    assert plain["mta_sts"]["cname"] is None and "sts-txt-cname" not in codes(plain)


def test_errors_exit_1_with_the_senders_result_type(world: FakeWorld) -> None:
    result = check(world, "broken.test", "--json", "--no-smtp")
    assert_no_traceback(result)
    assert result.returncode == 1
    obj = lines(result)["broken.test"]
    assert_contract(obj)
    status = codes(obj)["sts-policy-status"]
    assert status["severity"] == "error" and status["result_type"] == "sts-policy-fetch-error"
    assert status["requirement"] == "STS-B-8"
    assert "404" in status["message"]
    assert obj["summary"]["errors"] >= 1


def test_terminal_output_escapes_hostile_dns_and_policy_content(world: FakeWorld) -> None:
    result = check(world, "hostile.test", "--no-smtp")
    assert_no_traceback(result)
    assert result.returncode == 1
    for raw in ("\x1b", "\x07"):
        assert raw not in result.stdout and raw not in result.stderr
    assert "\\x1b[2J" in result.stdout  # the record is shown, escaped
    assert "sts-policy-invalid" in result.stdout and "sts-txt-unrelated" in result.stdout


def test_html_report_is_standalone_and_escapes_hostile_strings(world: FakeWorld, tmp_path: Path) -> None:
    page_file = tmp_path / "report.html"
    result = check(world, "hostile.test", "clean.test", "--no-smtp", "--json", "--html", str(page_file))
    assert_no_traceback(result)
    assert result.returncode == 1
    assert set(lines(result)) == {"hostile.test", "clean.test"}
    page = page_file.read_text(encoding="utf-8")
    lowered = page.lower()
    assert lowered.startswith("<!doctype html>")
    assert "<script" not in lowered
    for reference in ("src=", "href=", "url(", "@import", "<link"):
        assert reference not in lowered, reference
    assert not re.search(r"""=["']?https?://""", lowered)  # no attribute points anywhere
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "\x1b" not in page and "\x07" not in page
    assert "hostile.test" in page and "clean.test" in page


def test_bulk_from_file_with_comments_and_a_summary(world: FakeWorld, tmp_path: Path) -> None:
    listing = tmp_path / "domains.txt"
    listing.write_text("# domains to check\n\nclean.test   # ours\n  broken.test\nCLEAN.test\n")
    result = check(world, "--from-file", str(listing), "--json", "--no-smtp")
    assert_no_traceback(result)
    assert result.returncode == 1  # broken.test has errors
    assert sorted(lines(result)) == ["broken.test", "clean.test"]  # the duplicate is checked once
    assert len(result.stdout.splitlines()) == 2
    # the summary goes to stderr with --json: one error domain, one clean one
    assert re.search(r"error\s*\S\s*1\b", result.stderr) and re.search(r"ok\s*\S\s*1\b", result.stderr)
    assert "2 domains in" in result.stderr
    text = check(world, "--from-file", "-", "--no-smtp", input="clean.test\n")
    assert text.returncode == 0, text.stdout + text.stderr
    assert text.stdout.startswith("clean.test  0 error(s)")


def test_bad_line_in_from_file_is_a_one_line_error(world: FakeWorld, tmp_path: Path) -> None:
    listing = tmp_path / "domains.txt"
    listing.write_text("clean.test\n# fine\nnot a domain\n")
    assert_one_line_error(check(world, "--from-file", str(listing)), "line 3")
    listing.write_text("clean.test\nbad_name!.test\n")
    assert_one_line_error(check(world, "--from-file", str(listing)), "line 2", "not a domain name")


def test_unreadable_from_file_is_a_one_line_error(world: FakeWorld, tmp_path: Path) -> None:
    assert_one_line_error(check(world, "--from-file", str(tmp_path / "missing.txt")), "missing.txt")
    assert_one_line_error(check(world, "--from-file", str(tmp_path)), "directory")
    binary = tmp_path / "binary.txt"
    binary.write_bytes(b"clean.test\n\xff\xfe\x00\n")
    assert_one_line_error(check(world, "--from-file", str(binary)), "UTF-8")


def test_bad_domain_and_no_domain_are_one_line_errors(world: FakeWorld, tmp_path: Path) -> None:
    assert_one_line_error(check(world, "clean.test", "exa mple..com"), "not a domain name")
    assert_one_line_error(check(world, "192.0.2.1"), "not a domain name")
    assert_one_line_error(check(world), "no domain")
    assert_one_line_error(check(world, "clean.test", "--html", str(tmp_path / "no" / "such" / "r.html")), "--html")


# ------------------------------------------------------------------------------------------- with STARTTLS


def serve(world: FakeWorld, tmp_path: Path, domain: str, *, cert=None, starttls: bool = True,
          script: bytes | None = None, sts: bool = True) -> FakeMx:
    """A FakeMx for ``mx.<domain>`` (cert from the world's CA unless given), and the domain's DNS."""
    host = f"mx.{domain}"
    cert_pem, key_pem = cert if cert is not None else world.ca.issue([host])
    mx = FakeMx(tmp_path, chain_pems=[cert_pem], key_pem=key_pem, starttls=starttls, script=script)
    world.add_domain(domain, txt=["v=STSv1; id=7"] if sts else None, mx=[host],
                     policy=PolicySpec(body=policy_text([host], max_age=LONG_AGO)) if sts else None)
    world.set_record(host, "A", [mx.ip])
    world.set_record(f"_smtp._tls.{domain}", "TXT", [rpt(domain)])
    return mx


def test_starttls_and_certificate_ok_exit_0(world: FakeWorld, tmp_path: Path) -> None:
    with serve(world, tmp_path, "smtp-ok.test") as mx:
        result = check(world, "smtp-ok.test", "--json", smtp_port=mx.port)
    assert_no_traceback(result)
    assert result.returncode == 0, result.stdout + result.stderr
    obj = lines(result)["smtp-ok.test"]
    assert_contract(obj)
    found = codes(obj)
    assert found["smtp-tls-ok"]["subject"] == f"mx.smtp-ok.test [{mx.ip}]"
    assert not [f for f in obj["findings"] if f["severity"] != "info"], obj["findings"]
    (probe,) = obj["smtp"]["probes"]
    assert probe["ok"] and probe["pkix"]["ok"] and probe["address"] == mx.ip
    assert mx.sni == ["mx.smtp-ok.test"]  # SNI is the MX host name


def test_untrusted_certificate_under_enforce_names_the_ca_file(world: FakeWorld, tmp_path: Path) -> None:
    stranger = TestCA("not in the CA file").issue(["mx.untrusted.test"])
    with serve(world, tmp_path, "untrusted.test", cert=stranger) as mx:
        result = check(world, "untrusted.test", "--json", smtp_port=mx.port)
    assert_no_traceback(result)
    assert result.returncode == 1
    f = codes(lines(result)["untrusted.test"])["smtp-certificate-untrusted"]
    assert f["severity"] == "error" and f["result_type"] == "certificate-not-trusted"
    assert f"does not chain to a root in the CA file {world.ca_file}" in f["message"]
    assert "issued by CN=not in the CA file" in f["message"] and "the the" not in f["message"]


def test_host_mismatch_in_the_terminal_view(world: FakeWorld, tmp_path: Path) -> None:
    wrong = world.ca.issue(["mail.elsewhere.test"])
    with serve(world, tmp_path, "mismatch.test", cert=wrong) as mx:
        result = check(world, "mismatch.test", smtp_port=mx.port)
    assert_no_traceback(result)
    assert result.returncode == 1
    assert "[smtp-certificate-host-mismatch, reported as certificate-host-mismatch]" in result.stdout
    assert "mail.elsewhere.test" in result.stdout


def test_no_starttls_is_starttls_not_supported(world: FakeWorld, tmp_path: Path) -> None:
    with serve(world, tmp_path, "plain.test", starttls=False) as mx:
        result = check(world, "plain.test", "--json", smtp_port=mx.port)
    assert result.returncode == 1
    found = codes(lines(result)["plain.test"])
    assert found["smtp-starttls-missing"]["result_type"] == "starttls-not-supported"
    assert "smtp-tls-ok" not in found


def test_hostile_smtp_greeting_is_escaped_on_the_terminal(world: FakeWorld, tmp_path: Path) -> None:
    script = b"554 \x1b]0;owned\x07 go away\r\n"
    with serve(world, tmp_path, "rude.test", script=script) as mx:
        result = check(world, "rude.test", smtp_port=mx.port)
    assert_no_traceback(result)
    assert result.returncode == 1
    assert "smtp-unreachable" in result.stdout
    assert "\x1b" not in result.stdout and "\x07" not in result.stdout
    assert "\\x1b]0;owned" in result.stdout


def test_dane_ok_with_signed_zone(world: FakeWorld, tmp_path: Path) -> None:
    domain, host = "dane-ok.test", "mx.dane-ok.test"
    cert = world.ca.issue([host], fresh_key=True)
    with serve(world, tmp_path, domain, cert=cert, sts=False) as mx:
        world.set_secure(domain)
        world.set_secure(host)
        world.set_record(f"_25._tcp.{host}", "TLSA", [tlsa_for_certificate(cert[0]).to_text()])
        world.set_secure(f"_25._tcp.{host}")
        result = check(world, domain, "--json", smtp_port=mx.port)
    assert_no_traceback(result)
    obj = lines(result)[domain]
    assert_contract(obj)
    found = codes(obj)
    assert found["dane-ok"]["subject"] == f"{host} [{mx.ip}]"
    assert obj["dane"]["level"] == "dane-only" and obj["dane"]["secure_mx"] is True
    assert "dnssec-unsigned" not in found and "dane-mismatch" not in found
    assert found["sts-txt-missing"]["severity"] == "warning"
    assert result.returncode == 0, obj["findings"]  # warnings only
