"""Present a checked domain: the JSON object (docs/check.md), a terminal view (rich) and a standalone HTML page.

``result_json`` is the contract of ``mxsec check --json`` (one object per domain per line): ``domain``,
``findings`` (code, severity, message, result_type, requirement, fix, subject), the raw facts ``mx``,
``mta_sts``, ``dane``, ``tlsrpt``, ``smtp``, and ``summary`` counts; with ``--reports-db``, ``advice`` too (the
body of ``mxsec advise --json``).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import html
from collections import Counter
from typing import TYPE_CHECKING

from mxsec.check.findings import Finding
from mxsec.check.facts import DomainFacts
from mxsec.dane.destination import decide, host_state
from mxsec.display import safe_text

if TYPE_CHECKING:
    from mxsec.check.advice import Advice

__all__ = ["SEVERITY_ORDER", "advice_lines", "metrics_text", "render_html", "render_terminal", "result_json",
           "safe_text", "summarize"]

SEVERITY_ORDER = {"error": 0, "warning": 1, "info": 2}
_AREAS = (("check", "Checker"), ("mx", "MX"), ("dnssec", "DNSSEC"), ("sts", "MTA-STS"),
          ("smtp", "SMTP and certificates"), ("dane", "DANE"), ("tlsrpt", "TLSRPT"))

def area_of(code: str) -> str:
    return code.split("-", 1)[0]


def _tag(f: Finding) -> str:
    """``[code]`` or ``[code, reported as result-type]``."""
    return f"[{f.code}" + (f", reported as {f.result_type}" if f.result_type else "") + "]"


def result_json(facts: DomainFacts, findings: list[Finding], advice: Advice | None = None) -> dict:
    """The JSON object of one checked domain; ``advice`` (``check --reports-db``) adds the ``advice`` key, the
    object ``mxsec advise --json`` prints. Without it there is no such key."""
    counts = Counter(f.severity for f in findings)
    out = {
        "domain": facts.domain,
        "findings": [f.to_json() for f in findings],
        "summary": {"errors": counts["error"], "warnings": counts["warning"], "info": counts["info"]},
        "mx": _mx_json(facts),
        "mta_sts": _sts_json(facts),
        "dane": _dane_json(facts),
        "tlsrpt": _tlsrpt_json(facts),
        "smtp": _smtp_json(facts),
    }
    if advice is not None:
        out["advice"] = advice.to_json()
    return out


def _mx_json(facts: DomainFacts) -> dict | None:
    mx = facts.mx
    if mx is None:
        return None
    hosts = {}
    for host, hf in facts.hosts.items():
        a = hf.addresses
        hosts[host] = None if a is None else {
            "status": a.status, "addresses": list(a.addresses), "secure": a.secure, "canonical": a.canonical,
            "error": a.error}
    return {"status": mx.status, "secure": mx.secure, "error": mx.error,
            "records": [{"preference": p, "host": h} for p, h in mx.records], "hosts": hosts}


def _sts_json(facts: DomainFacts) -> dict | None:
    txt = facts.sts_txt
    if txt is None:
        return None
    sel = facts.sts_record
    out: dict = {"txt": {"status": txt.status, "records": list(txt.records), "error": txt.error},
                 "cname": facts.sts_cname,
                 "id": sel.record.id if sel is not None and sel.record is not None else None,
                 "record_problem": sel.problem if sel is not None else None, "fetch": None, "policy": None}
    f = facts.fetch
    if f is not None:
        out["fetch"] = {"ok": f.ok, "problem": str(f.problem) if f.problem else None, "detail": f.detail,
                        "status": f.status, "content_type": f.content_type, "address": f.address}
    p = facts.policy
    if p is not None:
        out["policy"] = {"mode": p.mode, "max_age": p.max_age, "mx": list(p.mx), "policy_string": list(p.lines),
                         "warnings": list(p.warnings)}
    elif facts.policy_error:
        out["policy_error"] = facts.policy_error
    return out


def _dane_json(facts: DomainFacts) -> dict:
    hosts = {}
    for host, hf in facts.hosts.items():
        state = host_state(hf)
        t = hf.tlsa
        hosts[host] = {
            "state": state.state, "detail": state.detail, "base": hf.base,
            "candidates": list(hf.candidates or ()),
            "tlsa": None if t is None else {
                "status": t.status, "secure": t.secure, "error": t.error,
                "records": [f"{u} {s} {m} {bytes(d).hex().upper()}" for u, s, m, d in t.records]},
        }
    secure_mx = bool(facts.mx is not None and facts.mx.secure)
    out: dict = {"secure_mx": secure_mx, "level": None, "reason": None, "hosts": hosts}
    if facts.mx is not None:
        # the daemon's own decision for this destination (dane-only, dane, temp or none)
        decision = decide(facts.mx, facts.hosts)
        out["level"], out["reason"] = decision.level, decision.reason
    return out


def _tlsrpt_json(facts: DomainFacts) -> dict | None:
    txt = facts.tlsrpt_txt
    if txt is None:
        return None
    sel = facts.tlsrpt
    rec = sel.record if sel is not None else None
    return {"txt": {"status": txt.status, "records": list(txt.records), "error": txt.error},
            "problem": sel.problem if sel is not None else None,
            "rua": list(rec.rua) if rec is not None else [],
            "usable_rua": list(rec.usable_rua) if rec is not None else []}


def _smtp_json(facts: DomainFacts) -> dict:
    probes = []
    for (host, address), probe in facts.probes.items():
        item = {"host": host, **probe.as_dict()}
        if probe.leaf:
            item["leaf_sha256"] = hashlib.sha256(probe.leaf).hexdigest()
        probes.append(item)
    return {"checked": facts.smtp_checked, "probes": probes,
            "refused": [{"host": h, "address": a, "reason": r} for (h, a), r in facts.refused.items()]}


def summarize(results) -> tuple[dict[str, int], list[tuple[str, int]], list[tuple[str, int]]]:
    """``(domains per worst severity, [(error code, domains)], [(warning code, domains)])`` for bulk runs.

    A domain counts once per row: under ``error`` if any finding is an error, else ``warning`` if any is a
    warning, else ``ok``; a code counts the domains that have it at that severity, not its findings.
    """
    per_domain = {"error": 0, "warning": 0, "ok": 0}
    codes: dict[str, Counter] = {"error": Counter(), "warning": Counter()}
    for _facts, findings in results:
        severities = {f.severity for f in findings}
        worst = "error" if "error" in severities else "warning" if "warning" in severities else "ok"
        per_domain[worst] += 1
        for severity in ("error", "warning"):
            codes[severity].update({f.code for f in findings if f.severity == severity})
    def order(item: tuple[str, int]) -> tuple[int, str]:
        return -item[1], item[0]  # most domains first, then by name

    return per_domain, sorted(codes["error"].items(), key=order), sorted(codes["warning"].items(), key=order)


# --- rollout advice (``mxsec advise``, and ``mxsec check --reports-db``) -------------------------------------


def advice_lines(advice: Advice) -> list[str]:
    """The text of ``mxsec advise`` for one :class:`~mxsec.check.advice.Advice`, as lines ("" for a blank line);
    ``mxsec check --reports-db`` shows the same lines as its "Rollout advice" section. Not yet escaped: callers
    pass each line through :func:`~mxsec.display.safe_text`."""
    from mxsec.check.advice import pct

    out: list[str] = []
    live, fig = advice.live, advice.figures
    heading = {"enforce": "enforce is safe now", "wait": "not yet: keep mode testing",
               "already-enforce": "already in mode enforce, nothing blocks it"}[advice.verdict]
    out.append(f"{advice.domain}: {heading}")
    out.append("")
    out.append(f"live policy: mode {live['mode'] or '-'}, id {live['id'] or '-'}, "
               f"max_age {live['max_age'] or '-'}, mx {', '.join(live['mx_patterns']) or '-'}")
    for row in live["mx_hosts"]:
        out.append(f"  MX {row['host']}: covered by {row['covered_by'] or 'no pattern'}, "
                   f"certificate {row['certificate']}")
    out.append(f"reports {fig['since']} to {fig['until']}: {fig['reports']:,} reports, "
               f"{fig['successful_sessions'] + fig['failed_sessions']:,} sessions, {pct(fig['success_rate'])} "
               f"successful; {fig['days_observed']} day(s) observed, {fig['days_testing']} in testing, "
               f"{fig['days_enforce']} in enforce")
    for org, row in fig["by_reporter"].items():
        out.append(f"  reporter {org}: {pct(row['success_rate'])} of "
                   f"{row['successful_sessions'] + row['failed_sessions']:,} sessions")
    for host, row in fig["by_mx"].items():
        out.append(f"  MX {host}: {row['failed_sessions']:,} failed sessions "
                   f"({pct(row['success_rate'])} not failing)")
    if advice.blockers:
        out.append("")
        out.append(f"blocking enforce ({len(advice.blockers)}):")
        for blocker in advice.blockers:
            out.append(f"  - {blocker.message}")
    for note in advice.notes:
        out.append(f"note: {note}")
    if advice.ramp and advice.verdict != "already-enforce":
        first = advice.ramp[0]
        out.append("")
        out.append("next policy file (https://mta-sts." + advice.domain + "/.well-known/mta-sts.txt):"
                   if advice.safe else "when nothing blocks any more, publish this policy file:")
        for line in first.policy.splitlines():
            out.append(f"  {line}")
        out.append(f"then the TXT record: _mta-sts.{advice.domain}. IN TXT \"{advice.txt}\"")
        out.append("max_age ramp (each step: the policy with that max_age and a new id):")
        for step in advice.ramp:
            out.append(f"  {step.on}  max_age {step.max_age:>8}  id {step.id}  ({step.when})")
    return out


# --- terminal ---------------------------------------------------------------------------------------------


_STYLE = {"error": "bold red", "warning": "yellow", "info": "green"}
_MARK = {"error": "✗", "warning": "!", "info": "✓"}


def render_terminal(console, facts: DomainFacts, findings: list[Finding], *, verbose: bool = False,
                    advice: Advice | None = None) -> None:
    """Grouped by area, one line per finding with the fix under errors and warnings; then, given ``advice``
    (``check --reports-db``), a "Rollout advice" section holding the text of ``mxsec advise``."""
    from rich.text import Text

    counts = Counter(f.severity for f in findings)
    verdict = "problems found" if counts["error"] else ("warnings" if counts["warning"] else "ok")
    head = Text(safe_text(facts.domain), style="bold")
    head.append(f"  {counts['error']} error(s), {counts['warning']} warning(s) — {verdict}",
                style=_STYLE["error" if counts["error"] else "warning" if counts["warning"] else "info"])
    console.print(head)
    for area, label in _AREAS:
        items = sorted((f for f in findings if area_of(f.code) == area),
                       key=lambda f: SEVERITY_ORDER.get(f.severity, 3))
        if not items:
            continue
        console.print(Text(f"  {label}", style="bold cyan"))
        for f in items:
            line = Text(f"    {_MARK.get(f.severity, '?')} ", style=_STYLE.get(f.severity, ""))
            line.append(safe_text(f.message))
            line.append(f"  {_tag(f)}", style="dim")
            console.print(line)
            if f.severity != "info" or verbose:
                console.print(Text(f"        fix: {f.fix}", style="dim"))
    if facts.hosts and not facts.smtp_checked:
        console.print(Text("  SMTP: not probed (--no-smtp)", style="dim"))
    if advice is not None:
        console.print(Text("  Rollout advice", style="bold cyan"))
        for text in advice_lines(advice):
            console.print(Text(f"    {safe_text(text)}" if text else ""))
    console.print()


# --- HTML ------------------------------------------------------------------------------------------------------


def render_html(results: list[tuple[DomainFacts, list[Finding]]], generated: _dt.datetime | None = None) -> str:
    """One standalone page (inline CSS, no scripts, no external resources) for all checked domains."""
    generated = generated or _dt.datetime.now(_dt.UTC)
    parts = [_HTML_HEAD.replace("{when}", html.escape(generated.strftime("%Y-%m-%d %H:%M UTC")))]
    for facts, findings in results:
        counts = Counter(f.severity for f in findings)
        klass = "error" if counts["error"] else "warning" if counts["warning"] else "info"
        parts.append(f'<section><h2 class="{klass}">{_h(facts.domain)} '
                     f'<small>{counts["error"]} error(s), {counts["warning"]} warning(s)</small></h2>')
        for area, label in _AREAS:
            items = sorted((f for f in findings if area_of(f.code) == area),
                           key=lambda f: SEVERITY_ORDER.get(f.severity, 3))
            if not items:
                continue
            parts.append(f"<h3>{label}</h3><table><tr><th></th><th>finding</th><th>code</th>"
                         f"<th>reported as</th><th>fix</th></tr>")
            for f in items:
                parts.append(
                    f'<tr class="{f.severity}"><td>{_MARK.get(f.severity, "?")}</td>'
                    f"<td>{_h(f.message)}</td><td><code>{_h(f.code)}</code>"
                    f"{'<br><small>' + _h(f.requirement) + '</small>' if f.requirement else ''}</td>"
                    f"<td>{_h(f.result_type or '')}</td><td>{_h(f.fix)}</td></tr>")
            parts.append("</table>")
        parts.append("</section>")
    parts.append("</body></html>\n")
    return "".join(parts)


def _h(text: object) -> str:
    """Text for the page: control characters escaped, then HTML-escaped (quotes included)."""
    return html.escape(safe_text(text), quote=True)


_HTML_HEAD = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>mxsec check</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body{font-family:system-ui,sans-serif;margin:2em;color:#222}
h2.error{color:#b00020}h2.warning{color:#8a6d00}h2.info{color:#1b6e20}
h2 small{font-weight:normal;font-size:.6em;color:#555}
table{border-collapse:collapse;width:100%;margin-bottom:1em}
td,th{border-bottom:1px solid #ddd;padding:.3em .5em;text-align:left;vertical-align:top;font-size:.9em}
tr.error td:first-child{color:#b00020}tr.warning td:first-child{color:#8a6d00}tr.info td:first-child{color:#1b6e20}
code{font-size:.95em}
</style></head><body><h1>mxsec check</h1><p>Generated {when}.</p>
"""


# ---------------------------------------------------------------------------------------------- metrics


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def metrics_text(results: list[tuple[DomainFacts, list[Finding]]], now: _dt.datetime) -> str:
    """The checked domains as Prometheus text (``mxsec check --metrics-file``, for node_exporter's textfile
    collector): when each certificate an MX address presented expires, the findings by severity, and when each
    domain was checked."""
    from cryptography import x509

    expiry: list[str] = []
    counts: list[str] = []
    checked: list[str] = []
    for facts, findings in results:
        domain = _label(facts.domain)
        for (host, address), probe in sorted(facts.probes.items()):
            leaf = probe.leaf
            if not leaf:
                continue
            try:
                not_after = x509.load_der_x509_certificate(leaf).not_valid_after_utc.timestamp()
            except Exception:  # noqa: BLE001 - a hostile server may present anything
                continue
            expiry.append(f'mxsec_check_certificate_not_after_seconds{{domain="{domain}",mx="{_label(host)}",'
                          f'address="{_label(address)}"}} {not_after:.0f}')
        by_severity = Counter(f.severity for f in findings)
        for severity in SEVERITY_ORDER:
            counts.append(f'mxsec_check_findings{{domain="{domain}",severity="{severity}"}} '
                          f"{by_severity.get(severity, 0)}")
        checked.append(f'mxsec_check_timestamp_seconds{{domain="{domain}"}} {now.timestamp():.0f}')
    return "\n".join([
        "# HELP mxsec_check_certificate_not_after_seconds When the certificate an MX address presented expires",
        "# TYPE mxsec_check_certificate_not_after_seconds gauge", *expiry,
        "# HELP mxsec_check_findings Findings of the last check, by severity",
        "# TYPE mxsec_check_findings gauge", *counts,
        "# HELP mxsec_check_timestamp_seconds When the domain was last checked",
        "# TYPE mxsec_check_timestamp_seconds gauge", *checked,
    ]) + "\n"
