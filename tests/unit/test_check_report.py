"""mxsec.check.report and the bulk summary of mxsec check: the JSON contract, hostile text on the terminal and in
the HTML page, and the per-domain counting of the summary table."""

from __future__ import annotations

import datetime as dt
import io
import json

from rich.console import Console

from mxsec.check.findings import CATALOGUE, finding
from mxsec.check.report import render_html, render_terminal, result_json, safe_text, summarize
from mxsec.check.rules import judge
from tests.unit.test_check_rules import RUA, facts, mx_answer, policy_body

HOSTILE_TXT = "<script>alert(1)</script>\x1b[2J\x07\u202egnp.exe"
HOSTILE_POLICY = "version: STSv1\r\nmode: enforce\r\nmx: <img src=x>\r\nmax_age: 86400\x1b]0;owned\x07\r\n"


def hostile_facts():
    return facts(sts=("v=STSv1; id=1", HOSTILE_TXT), body=HOSTILE_POLICY,
                 tlsrpt=(RUA, "v=TLSRPTv1; rua=mailto:\x1b[31m@x"))


def terminal_text(f, findings) -> str:
    buffer = io.StringIO()
    # a terminal without colours: any ESC in the output would have come from the checked domain
    console = Console(file=buffer, force_terminal=True, color_system=None, width=300)
    render_terminal(console, f, findings, verbose=True)
    return buffer.getvalue()


def test_safe_text_escapes_controls_and_invisible_formatting() -> None:
    assert safe_text("a\x1b[31mb\x07c\x00d\x7fe\x85f") == "a\\x1b[31mb\\x07c\\x00d\\x7fe\\x85f"
    assert safe_text("abc\u202edef\u200bg") == "abc\\u202edef\\u200bg"
    assert safe_text("münchen.example — ok") == "münchen.example — ok"


def test_terminal_output_never_carries_raw_control_characters() -> None:
    f = hostile_facts()
    findings = judge(f)
    text = terminal_text(f, findings)
    assert "\\x1b[2J" in text  # shown, escaped
    for raw in ("\x1b", "\x07", "\u202e"):
        assert raw not in text
    assert "sts-txt-unrelated" in text and "sts-policy-invalid" in text


def test_terminal_groups_by_area_and_shows_the_reported_result_type() -> None:
    f = facts(mx=mx_answer("mx1.example.net", "backup.example.org"), body=policy_body("mx1.example.net"))
    text = terminal_text(f, judge(f))
    assert "MTA-STS" in text
    assert "[sts-mx-not-covered, reported as validation-failure]" in text
    assert "fix: Add the MX host" in text
    assert text.splitlines()[0].startswith("example.com  1 error(s)")


def test_checker_findings_have_an_area_on_the_terminal() -> None:
    f = facts()
    text = terminal_text(f, [finding("check-failed", "RuntimeError: boom")])
    assert "Checker" in text and "RuntimeError: boom" in text


def test_html_page_is_standalone_and_escapes_hostile_content() -> None:
    f = hostile_facts()
    page = render_html([(f, judge(f))], generated=dt.datetime(2026, 1, 2, 3, 4, tzinfo=dt.UTC))
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    lowered = page.lower()
    for resource in ("<script", "<img", "<link", "<iframe", "src=", "href=", "url(", "@import"):
        assert resource not in lowered, resource
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "\x1b" not in page and "\x07" not in page and "\u202e" not in page
    assert "2026-01-02 03:04 UTC" in page


def test_json_object_follows_the_interface() -> None:
    f = hostile_facts()
    obj = json.loads(json.dumps(result_json(f, judge(f))))
    assert obj["domain"] == "example.com"
    assert {"findings", "mta_sts", "tlsrpt", "dane", "mx", "smtp", "summary"} <= set(obj)
    for item in obj["findings"]:
        assert {"code", "severity", "message", "result_type", "requirement"} <= set(item)
        assert item["code"] in CATALOGUE
    assert HOSTILE_TXT in obj["mta_sts"]["txt"]["records"]  # raw facts are raw (JSON escapes them)
    assert obj["summary"]["errors"] == sum(1 for i in obj["findings"] if i["severity"] == "error")
    assert obj["dane"]["level"] == "none"


def test_bulk_summary_counts_domains_not_findings() -> None:
    two_misses = facts(mx=mx_answer("a.example.org", "b.example.org"), body=policy_body("mx1.example.net"))
    one_miss = facts(mx=mx_answer("mx1.example.net", "c.example.org"), body=policy_body("mx1.example.net"))
    only_warning = facts(body=policy_body("mx1.example.net", max_age=60))
    clean = facts()
    results = [(f, judge(f)) for f in (two_misses, one_miss, only_warning, clean)]
    per_domain, errors, warnings = summarize(results)
    assert per_domain == {"error": 2, "warning": 1, "ok": 1}
    assert dict(errors)["sts-mx-not-covered"] == 2  # three findings, two domains
    assert dict(warnings)["sts-max-age-short"] == 1
    assert dict(warnings)["sts-pattern-unused"] == 1  # counted although that domain's worst is an error
    assert errors == sorted(errors, key=lambda item: (-item[1], item[0]))


def test_terminal_says_when_smtp_was_not_probed() -> None:
    f = facts()
    assert "SMTP: not probed" in terminal_text(f, judge(f))
    f.smtp_checked = True
    assert "SMTP: not probed" not in terminal_text(f, judge(f))


def test_a_domain_the_checker_fails_on_is_a_finding_not_the_end_of_the_run(monkeypatch, capsys) -> None:
    import asyncio

    import mxsec.check.gather as gather_module
    from mxsec.cli.check import _run
    from mxsec.config import Config, apply_overrides

    async def flaky(domain, *args, **kwargs):
        if domain == "bad.example":
            raise RuntimeError("boom\x1b[2J")
        return gather_module.DomainFacts(domain)

    monkeypatch.setattr(gather_module, "gather", flaky)
    config = apply_overrides(Config(), nameservers=["127.0.0.1"])  # never asked: gather is replaced
    errors = asyncio.run(_run(["good.example", "bad.example"], config, as_json=True, smtp=False,
                              html_file=None, concurrency=2, smtp_port=25, smtp_timeout=1.0, verbose=False))
    captured = capsys.readouterr()
    out = [json.loads(line) for line in captured.out.splitlines()]
    by_domain = {o["domain"]: o for o in out}
    assert set(by_domain) == {"good.example", "bad.example"}
    (failed,) = by_domain["bad.example"]["findings"]
    assert failed["code"] == "check-failed" and failed["severity"] == "error"
    assert "RuntimeError: boom" in failed["message"]
    assert by_domain["good.example"]["findings"] == []
    assert errors == 1
    assert "check-failed" in captured.err and "2 domains in" in captured.err  # the --json summary: stderr


def test_metrics_file_gives_certificate_expiry_findings_and_time_per_domain() -> None:
    from prometheus_client.parser import text_string_to_metric_families

    from mxsec.check.report import metrics_text
    from mxsec.dnsanswers import RRAnswer
    from tests.unit.test_check_rules import IP1, MX1, NOW, ok_probe, pki

    certs = pki()
    checked = facts(probes=[ok_probe(certs.expiring)])
    hostile = facts(mx=RRAnswer("nodata"))
    hostile.domain = 'evil"\\\nname.example'  # label values are escaped, whatever a domain holds
    found = judge(checked)
    text = metrics_text([(checked, found), (hostile, [])], NOW)
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in text_string_to_metric_families(text) for s in family.samples}
    expiry = samples[("mxsec_check_certificate_not_after_seconds",
                      (("address", IP1), ("domain", checked.domain), ("mx", MX1)))]
    assert 2 * 86400 < expiry - NOW.timestamp() <= 3 * 86400
    errors = sum(1 for f in found if f.severity == "error")
    assert samples[("mxsec_check_findings", (("domain", checked.domain), ("severity", "error")))] == errors
    assert samples[("mxsec_check_timestamp_seconds", (("domain", checked.domain),))] == round(NOW.timestamp())
    assert samples[("mxsec_check_findings", (("domain", hostile.domain), ("severity", "warning")))] == 0
