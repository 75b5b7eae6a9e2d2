"""``POST /tlsrpt``: the HTTPS reporting endpoint of RFC 8460 §5.4 (an ``https:`` URI in a ``rua``).

The body is one report, ``application/tlsrpt+gzip`` or ``application/tlsrpt+json`` (RFC 8460 §6.4, §6.5;
``application/gzip``, ``application/x-gzip`` and ``application/json`` are accepted too). The body is read as a
stream and refused (413) as soon as it passes the size cap, whatever ``Content-Length`` claimed; it is then
parsed by :func:`~mxsec.tlsrpt.report.parse_report` (which finds gzip, zip or JSON by the bytes themselves)
and stored with source ``https`` and the client address.

Answers (JSON bodies):

* 201 ``{"outcome": "stored", "id": N}``; 200 ``{"outcome": "duplicate"|"conflict", "id": N}``;
* 400 ``{"error": CODE, "message": LINE}`` for a report that does not parse (CODE from ``ERROR_CODES``);
* 413 ``too-large``, 415 ``unsupported-media-type``, 503 ``unavailable`` (the database failed).
"""

from __future__ import annotations

import dataclasses
import logging

from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response

from mxsec.store.base import StoreError
from mxsec.store.reportdb import Incoming, ReportDB
from mxsec.tlsrpt.report import DEFAULT_LIMITS, ReportError, parse_report

log = logging.getLogger("mxsec.reports.web")

#: Media types taken as a report (parameters such as ``charset`` are ignored).
ACCEPTED_TYPES = frozenset({
    "application/tlsrpt+gzip", "application/tlsrpt+json", "application/gzip", "application/x-gzip",
    "application/json",
})


class _TooLarge(Exception):
    pass


def _error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": code, "message": message}, status_code=status)


def media_type(header: str | None) -> str:
    return (header or "").split(";", 1)[0].strip().lower()


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, read chunk by chunk; :class:`_TooLarge` once more than *limit* bytes arrived."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.strip().isdigit() and int(declared) > limit:
        raise _TooLarge
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _TooLarge
        chunks.append(chunk)
    return b"".join(chunks)


async def receive(request: Request) -> Response:
    db: ReportDB = request.app.state.db
    max_body: int = request.app.state.max_body
    kind = media_type(request.headers.get("content-type"))
    if kind not in ACCEPTED_TYPES:
        shown = kind or "none"
        return _error(415, "unsupported-media-type",
                      f"Content-Type {shown[:80]!r} is not a report; send application/tlsrpt+gzip or "
                      "application/tlsrpt+json")
    try:
        body = await read_body(request, max_body)
    except _TooLarge:
        return _error(413, "too-large", f"the report is larger than {max_body} bytes")
    except ClientDisconnect:
        return _error(400, "incomplete", "the client went away before the body was complete")
    limits = dataclasses.replace(DEFAULT_LIMITS, max_input_bytes=max_body,
                                 max_json_bytes=max(DEFAULT_LIMITS.max_json_bytes, max_body))
    try:
        report = await run_in_threadpool(parse_report, body, limits=limits)
    except ReportError as exc:
        return _error(400, exc.code, str(exc))
    client = request.client.host if request.client else None
    try:
        (result,) = await run_in_threadpool(db.ingest, [Incoming(report, "https", source_name=client)])
    except StoreError as exc:
        log.error("storing a POSTed report failed: %s", exc)
        return _error(503, "unavailable", "the report database is unavailable; try again later")
    log.info("report %s from %s via https (%s): %s", report.report_id, report.organization_name, client,
             result.outcome)
    status = 201 if result.outcome == "stored" else 200
    return JSONResponse({"outcome": result.outcome, "id": result.id}, status_code=status)
