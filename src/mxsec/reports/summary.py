"""``mxsec reports summary``: what the stored reports say, as JSON or as terminal tables, and the alert rule.

The JSON object keeps the stable keys of docs/reports.md (``reports``, ``successful_sessions``, ``failed_sessions``,
``by_result_type``, ``by_organization``, ``by_policy_domain``) and adds ``success_rate``, ``by_policy_type``,
``by_day``, ``by_mx``, ``failing_sending_ips``, ``conflicts`` and ``filters``.

The figures count one copy per (organization, report-id) (see :mod:`mxsec.storage.reportdb`); ``conflicts`` lists
the reports stored in several different copies: ``{"count": N, "reports": [{"organization", "report_id",
"copies": [...]}]}``, the counted copy first in each list.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from rich.console import Console, Group
from rich.markup import escape
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from ..display import safe_text
from ..errors import ConfigError
from ..storage.reportdb import Filters, ReportDB, ReportRow, Totals

#: Conflicting reports listed in the summary (the count covers them all).
CONFLICTS_SHOWN = 100


def summary_data(db: ReportDB, filters: Filters, *, top: int = 10) -> dict[str, Any]:
    out = db.summary(filters)
    out["by_mx"] = db.by_mx(filters, limit=top)
    out["failing_sending_ips"] = [
        {"ip": ip, "result_type": result_type, "failed_sessions": count}
        for ip, result_type, count in db.failing_sending_ips(filters, limit=top)
    ]
    count, groups = db.conflicts(filters, limit=CONFLICTS_SHOWN)
    out["conflicts"] = {
        "count": count,
        "reports": [
            {"organization": group[0].organization_name, "report_id": group[0].report_id,
             "copies": [copy_data(row) for row in group]}
            for group in groups
        ],
    }
    out["filters"] = {
        "since": filters.since.isoformat() if filters.since else None,
        "until": filters.until.isoformat() if filters.until else None,
        "domain": filters.domain,
        "organization": filters.organization,
    }
    return out


def copy_data(row: ReportRow) -> dict[str, Any]:
    """One stored copy of a report, for JSON: where it came from, how it was authenticated, what it says."""
    return {
        "id": row.id, "counted": row.counted, "auth": row.auth, "auth_name": row.auth_name, "source": row.source,
        "source_name": row.source_name, "dkim": row.dkim, "received": row.received.isoformat(),
        "start": row.start.isoformat(), "end": row.end.isoformat(),
        "successful_sessions": row.successful, "failed_sessions": row.failed,
    }


# ------------------------------------------------------------------------------------------- alerting


@dataclass(frozen=True)
class Threshold:
    """Failures allowed before ``--fail-on-failures`` exits 1: a count (``5``) or a share (``0.5%``)."""

    count: int | None = None
    rate: float | None = None

    @classmethod
    def parse(cls, text: str) -> "Threshold":
        value = text.strip()
        match = re.fullmatch(r"(\d+(?:\.\d+)?)%", value)
        if match:
            rate = float(match.group(1))
            if rate > 100:
                raise ConfigError(f"--threshold {text!r}: a percentage is at most 100%")
            return cls(rate=rate / 100)
        if re.fullmatch(r"\d{1,18}", value):
            return cls(count=int(value))
        raise ConfigError(f"--threshold {text!r}: give a number of failed sessions (5) or a share (0.5%)")

    def exceeded(self, totals: dict[str, Any]) -> bool:
        failed = int(totals["failed_sessions"])
        if self.rate is not None:
            total = failed + int(totals["successful_sessions"])
            return total > 0 and failed / total > self.rate
        return failed > (self.count or 0)

    def describe(self) -> str:
        if self.rate is not None:
            return f"{self.rate * 100:g}% of sessions"
        return f"{self.count or 0} failed session(s)"


# ------------------------------------------------------------------------------------------- terminal


def _clean(value: Any) -> str:
    """Text from reports, safe for a terminal: control characters escaped, then rich markup escaped."""
    return escape(safe_text(value))


def _rate(ok: int, bad: int) -> Text:
    total = ok + bad
    if not total:
        return Text("-", style="dim")
    rate = ok / total
    style = "green" if rate >= 0.999 else "yellow" if rate >= 0.95 else "red"
    return Text(f"{rate * 100:.2f}%", style=style)


def _n(value: int) -> str:
    return f"{value:,}"


def _totals_table(title: str, first: str, rows: dict[Any, Totals | dict[str, int]]) -> Table:
    table = Table(title=title, title_justify="left", expand=False)
    table.add_column(first, overflow="fold")
    table.add_column("reports", justify="right")
    table.add_column("successful", justify="right")
    table.add_column("failed", justify="right")
    table.add_column("success", justify="right")
    for key, value in rows.items():
        data = value.as_dict() if isinstance(value, Totals) else value
        ok, bad = data["successful_sessions"], data["failed_sessions"]
        table.add_row(
            _clean(key), _n(data["reports"]), _n(ok), Text(_n(bad), style="red" if bad else ""), _rate(ok, bad)
        )
    return table


def _conflicts_table(conflicts: dict[str, Any]) -> Table:
    count = conflicts["count"]
    shown = len(conflicts["reports"])
    more = f"; {count - shown:,} more not listed" if count > shown else ""
    table = Table(
        title=f"CONFLICTS: {count:,} report(s) stored in several different copies (same organization and "
              f"report-id){more}. The figures count one copy each (marked *): an authenticated one (DKIM, "
              "token, client certificate) before an unauthenticated one, else the first received.",
        title_justify="left", title_style="bold red",
    )
    table.add_column("organization", overflow="fold")
    table.add_column("report-id", overflow="fold")
    table.add_column("id", justify="right")
    table.add_column("auth")
    table.add_column("source", overflow="fold")
    table.add_column("received")
    table.add_column("successful", justify="right")
    table.add_column("failed", justify="right")
    for group in conflicts["reports"]:
        for number, copy in enumerate(group["copies"]):
            source = copy["source"] + (f" {copy['source_name']}" if copy["source_name"] else "")
            auth = copy["auth"] + (f" ({copy['auth_name']})" if copy["auth_name"] else "")
            table.add_row(
                _clean(group["organization"]) if number == 0 else "",
                _clean(group["report_id"]) if number == 0 else "",
                ("* " if copy["counted"] else "") + str(copy["id"]),
                Text(safe_text(auth), style="green" if copy["auth"] != "none" else "yellow"),
                _clean(source), copy["received"][:19].replace("T", " "),
                _n(copy["successful_sessions"]), _n(copy["failed_sessions"]),
            )
    return table


def render(data: dict[str, Any], console: Console) -> None:
    """Print the summary as rich tables (hostile names are escaped: they come from reports)."""
    ok, bad = data["successful_sessions"], data["failed_sessions"]
    head = Text.assemble(
        ("reports ", "bold"), _n(data["reports"]), ("   successful sessions ", "bold"), _n(ok),
        ("   failed sessions ", "bold"), (_n(bad), "red" if bad else "green"), ("   success ", "bold"),
        _rate(ok, bad),
    )
    filters = data.get("filters") or {}
    scope = ", ".join(f"{k} {v}" for k, v in filters.items() if v)
    console.print(Panel(head, title="TLSRPT reports" + (f" ({_clean(scope)})" if scope else ""), expand=False))
    conflicts = data.get("conflicts") or {}
    if conflicts.get("count"):
        console.print(_conflicts_table(conflicts))
    if not data["reports"]:
        console.print("No reports stored" + (" for these filters." if scope else " yet: mxsec reports ingest FILE..."))
        return
    parts: list[Any] = []
    if data["by_day"]:
        parts.append(_totals_table("Per day", "day", data["by_day"]))
    parts.append(_totals_table("Per reporter", "organization", data["by_organization"]))
    parts.append(_totals_table("Per policy domain", "policy domain", data["by_policy_domain"]))
    if data["by_result_type"]:
        table = Table(title="Top result types", title_justify="left")
        table.add_column("result type")
        table.add_column("failed sessions", justify="right")
        for name, count in list(data["by_result_type"].items())[:10]:
            table.add_row(_clean(name), _n(count))
        parts.append(table)
    if data.get("by_mx"):
        table = Table(title="Failures per MX host", title_justify="left")
        table.add_column("receiving MX", overflow="fold")
        table.add_column("failed sessions", justify="right")
        table.add_column("result types", overflow="fold")
        for host, types in data["by_mx"].items():
            detail = ", ".join(f"{_clean(k)} {_n(v)}" for k, v in types.items())
            table.add_row(_clean(host) or Text("(not reported)", style="dim"), _n(sum(types.values())), detail)
        parts.append(table)
    if data.get("failing_sending_ips"):
        table = Table(title="Failing sending IPs", title_justify="left")
        table.add_column("sending MTA IP")
        table.add_column("result type")
        table.add_column("failed sessions", justify="right")
        for row in data["failing_sending_ips"]:
            table.add_row(_clean(row["ip"]), _clean(row["result_type"]), _n(row["failed_sessions"]))
        parts.append(table)
    console.print(Group(*parts))
