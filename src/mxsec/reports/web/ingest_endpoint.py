"""``POST /tlsrpt``: the HTTPS reporting endpoint of RFC 8460 §5.4 (an ``https:`` URI in a ``rua``).

The body is one report, ``application/tlsrpt+gzip`` or ``application/tlsrpt+json`` (RFC 8460 §6.4, §6.5;
``application/gzip``, ``application/x-gzip`` and ``application/json`` are accepted too). The body is read as a
stream and refused (413) as soon as it passes the size cap, whatever ``Content-Length`` claimed; it is then
parsed by :func:`~mxsec.tlsrpt.parse.parse_report` (which finds gzip, zip or JSON by the bytes themselves)
and stored with source ``https``, the client address, and how the client authenticated (:mod:`.post_auth`:
a bearer token, a verified client certificate, or ``none``).

Answers (JSON bodies):

* 201 ``{"outcome": "stored", "id": N, "auth": A, "counted": true}``; 200 with ``"outcome": "duplicate"``
  (``id`` of the identical stored copy) or ``"conflict"`` (stored as another copy of a report already
  stored with different content; ``other_copies`` lists their ids and ``counted`` says whether the figures
  count this copy);
* 400 ``{"error": CODE, "message": LINE}`` for a report that does not parse (CODE from ``ERROR_CODES``);
* 401 ``unauthorized`` (a wrong bearer token, or none when authentication is required; with
  ``WWW-Authenticate: Bearer``), checked before the body is read;
* 413 ``too-large``, 415 ``unsupported-media-type``, 503 ``unavailable`` (the database failed).
"""

from __future__ import annotations

import dataclasses
import logging

from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response

from mxsec.storage.base import StoreError
from mxsec.storage.reportdb import Incoming, ReportDB
from mxsec.tlsrpt.parse import parse_report
from mxsec.tlsrpt.report import DEFAULT_LIMITS, ReportError

from .post_auth import PostAuth, Unauthorized

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


def _unauthorized(exc: Unauthorized) -> JSONResponse:
    response = _error(401, "unauthorized", str(exc))
    challenge = 'Bearer realm="tlsrpt"' + (f', error="{exc.error}"' if exc.error else "")
    response.headers["WWW-Authenticate"] = challenge
    return response


async def receive(request: Request) -> Response:
    db: ReportDB = request.app.state.db
    max_body: int = request.app.state.max_body
    post_auth: PostAuth = getattr(request.app.state, "post_auth", None) or PostAuth()
    client = request.client.host if request.client else None
    try:
        auth, auth_name = post_auth.authenticate(request.scope, request.headers.get("authorization"))
    except Unauthorized as exc:
        log.warning("POST /tlsrpt from %s refused: %s", client, exc)
        return _unauthorized(exc)
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
    incoming = Incoming(report, "https", source_name=client, auth=auth, auth_name=auth_name)
    try:
        (result,) = await run_in_threadpool(db.ingest, [incoming])
    except StoreError as exc:
        log.error("storing a POSTed report failed: %s", exc)
        return _error(503, "unavailable", "the report database is unavailable; try again later")
    log.info("report %s from %s via https (%s, auth %s): %s", report.report_id, report.organization_name, client,
             auth, result.outcome)
    if result.outcome == "conflict":
        log.warning("report %s from %s via https (%s, auth %s) conflicts with stored copies %s; counted: id %s",
                    report.report_id, report.organization_name, client, auth,
                    ", ".join(map(str, result.others)), result.counted_id)
    status = 201 if result.outcome == "stored" else 200
    answer: dict[str, object] = {"outcome": result.outcome, "id": result.id, "auth": result.auth,
                                 "counted": result.counted}
    if result.others:
        answer["other_copies"] = list(result.others)
    return JSONResponse(answer, status_code=status)
