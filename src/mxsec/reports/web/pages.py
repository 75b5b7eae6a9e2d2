"""The dashboard's HTML pages. Each handler parses its query string (:mod:`.params`), gathers its figures in
a worker thread (:mod:`.figures`; the database calls are synchronous) and renders a template."""

from __future__ import annotations

from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from mxsec.storage.reportdb import ReportDB

from . import figures
from .params import DateRange, PageError, date_range, optional_text, page_number

#: Largest row id a database can hold (both SQLite and PostgreSQL use signed 64-bit integers).
_MAX_ID = 2**63 - 1


def _db(request: Request) -> ReportDB:
    return request.app.state.db


def render(request: Request, template: str, rng: DateRange, context: dict[str, Any], *,
           title: str, status: int = 200) -> Response:
    templates = request.app.state.templates
    full = {"range": rng, "page_title": title, **context}
    return templates.TemplateResponse(request, template, full, status_code=status)


async def overview(request: Request) -> Response:
    rng = date_range(request.query_params)
    data = await run_in_threadpool(figures.overview, _db(request), rng)
    return render(request, "overview.html", rng, data, title="TLS reports")


async def domain(request: Request) -> Response:
    name = request.path_params["name"]
    rng = date_range(request.query_params)
    data = await run_in_threadpool(figures.domain, _db(request), rng, name)
    if data is None:
        raise PageError(404, f"no stored report names the policy domain {name!r}")
    return render(request, "domain.html", rng, {"name": name, **data}, title=f"Domain {name}")


async def reporter(request: Request) -> Response:
    name = request.path_params["name"]
    rng = date_range(request.query_params)
    data = await run_in_threadpool(figures.reporter, _db(request), rng, name)
    if data is None:
        raise PageError(404, f"no stored report comes from the organization {name!r}")
    return render(request, "reporter.html", rng, {"name": name, **data}, title=f"Reporter {name}")


async def report_list(request: Request) -> Response:
    params = request.query_params
    rng = date_range(params)
    domain = optional_text(params, "domain")
    organization = optional_text(params, "organization")
    db = _db(request)
    requested = page_number(params, last=2**31)

    def gather() -> dict[str, Any]:
        data = figures.report_list(db, rng, domain=domain, organization=organization, page=requested)
        last = max(1, -(-data["total"] // figures.PAGE_SIZE))
        if requested > last:
            data = figures.report_list(db, rng, domain=domain, organization=organization, page=last)
        data.update(page=min(requested, last), last_page=last)
        return data

    data = await run_in_threadpool(gather)
    paging = {"domain": domain, "organization": organization}
    return render(request, "reports.html", rng, {**data, "domain": domain, "organization": organization,
                                                 "paging": paging}, title="Reports")


def _report_id(request: Request) -> int:
    pk = request.path_params["pk"]
    if pk > _MAX_ID:
        raise PageError(404, f"no stored report has the id {pk}")
    return pk


async def report(request: Request) -> Response:
    pk = _report_id(request)
    rng = date_range(request.query_params)
    data = await run_in_threadpool(figures.report, _db(request), pk)
    if data is None:
        raise PageError(404, f"no stored report has the id {pk}")
    row = data["row"]
    return render(request, "report.html", rng, data, title=f"Report {row.report_id}")


async def report_raw(request: Request) -> Response:
    """The stored JSON as received (after decompression), as a download."""
    pk = _report_id(request)
    detail = await run_in_threadpool(_db(request).report, pk)
    if detail is None:
        raise PageError(404, f"no stored report has the id {pk}")
    return Response(
        detail.raw_json,
        media_type="application/json",
        headers={"Content-Disposition": f'attachment; filename="tlsrpt-report-{pk}.json"'},
    )
