"""The Starlette application of ``mxsec reports serve``: routes, templates, security headers, error pages.

Everything the browser loads comes from this package (``/static``): the stylesheet, ``dashboard.js`` and the
vendored Chart.js. The Content-Security-Policy allows nothing else — no inline script or style, no other
origin — so a report that smuggles markup into a field could not run anything even if escaping failed.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import jinja2
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from mxsec.storage.base import StoreError
from mxsec.storage.reportdb import ReportDB

from . import format as fmt
from . import ingest_endpoint, metrics, pages
from .params import DateRange, PageError, presets, segment
from .post_auth import PostAuth

if TYPE_CHECKING:
    from .auth import AuthSettings

HERE = Path(__file__).resolve().parent
TEMPLATES = HERE / "templates"
STATIC = HERE / "static"
#: The Chart.js release in static/vendor (see static/vendor/README.txt).
CHARTJS_VERSION = "4.6.1"
#: Default cap on a POSTed report body (RFC 8460 §5.2 names about 10 MB as a common limit).
DEFAULT_MAX_BODY = 10 * 1024 * 1024

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
SECURITY_HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"cross-origin-opener-policy", b"same-origin"),
]


class SecurityHeaders:
    """ASGI middleware adding :data:`SECURITY_HEADERS` to every HTTP response (pages, static files, errors)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                names = {name.lower() for name, _ in message.get("headers", [])}
                extra = [(name, value) for name, value in SECURITY_HEADERS if name not in names]
                message = {**message, "headers": list(message.get("headers", [])) + extra}
            await send(message)

        await self.app(scope, receive, send_with_headers)


def make_templates() -> Jinja2Templates:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES)),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    fmt.register(env)
    env.filters["seg"] = segment
    env.globals["chartjs_version"] = CHARTJS_VERSION
    env.globals["presets"] = presets
    return Jinja2Templates(env=env)


def _wants_json(request: Request) -> bool:
    return request.url.path in ("/tlsrpt", "/metrics", "/healthz")


def error_response(request: Request, status: int, message: str) -> Response:
    """The error page (HTML), or a JSON body for the machine endpoints."""
    if _wants_json(request):
        return JSONResponse({"error": _code(status), "message": message}, status_code=status)
    templates: Jinja2Templates = request.app.state.templates
    context = {"status": status, "message": message, "range": DateRange(), "page_title": _title(status)}
    return templates.TemplateResponse(request, "error.html", context, status_code=status)


def _code(status: int) -> str:
    return {400: "bad-request", 401: "unauthorized", 404: "not-found", 405: "method-not-allowed", 413: "too-large",
            415: "unsupported-media-type", 503: "unavailable"}.get(status, "error")


def _title(status: int) -> str:
    return {400: "Bad request", 404: "Not found", 405: "Method not allowed", 503: "Database unavailable"}.get(
        status, "Error")


async def _page_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, PageError)
    return error_response(request, exc.status, exc.message)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    messages = {404: f"nothing here: {request.url.path}", 405: f"{request.method} is not allowed here"}
    response = error_response(request, exc.status_code, messages.get(exc.status_code, str(exc.detail)))
    if exc.headers:
        response.headers.update(exc.headers)
    return response


async def _store_error(request: Request, exc: Exception) -> Response:
    return error_response(request, 503, str(exc).splitlines()[0] if str(exc) else "report database error")


async def _internal_error(request: Request, exc: Exception) -> Response:
    import logging

    logging.getLogger("mxsec.reports.web").error("internal error on %s", request.url.path, exc_info=exc)
    if _wants_json(request):
        return JSONResponse({"error": "internal", "message": "internal error"}, status_code=500)
    return PlainTextResponse("internal error", status_code=500)


async def healthz(request: Request) -> Response:
    from starlette.concurrency import run_in_threadpool

    db: ReportDB = request.app.state.db
    await run_in_threadpool(lambda: db.schema_version)
    return PlainTextResponse("ok")


def create_app(db: ReportDB, *, max_body: int = DEFAULT_MAX_BODY, post_auth: PostAuth | None = None,
               auth: "AuthSettings | None" = None) -> Starlette:
    """The dashboard, ``POST /tlsrpt``, ``/metrics`` and ``/healthz`` over *db* (which the caller closes);
    *post_auth* says who may POST (default: anyone, recorded as unauthenticated); *auth* adds the dashboard's
    ``Host:`` check and login (:mod:`.auth`; without it, neither)."""
    if max_body < 1:
        raise ValueError("max_body must be positive")
    routes = [
        Route("/", pages.overview, name="overview"),
        Route("/reports", pages.report_list, name="reports"),
        Route("/domain/{name:path}", pages.domain, name="domain"),
        Route("/reporter/{name:path}", pages.reporter, name="reporter"),
        Route("/report/{pk:int}", pages.report, name="report"),
        Route("/report/{pk:int}/raw.json", pages.report_raw, name="report_raw"),
        Route("/tlsrpt", ingest_endpoint.receive, methods=["POST"], name="tlsrpt"),
        Route("/metrics", metrics.endpoint, name="metrics"),
        Route("/healthz", healthz, name="healthz"),
        Mount("/static", StaticFiles(directory=str(STATIC)), name="static"),
    ]
    app = Starlette(
        routes=routes,
        exception_handlers={
            PageError: _page_error,
            HTTPException: _http_error,
            StoreError: _store_error,
            Exception: _internal_error,
        },
    )
    app.state.db = db
    app.state.max_body = max_body
    app.state.post_auth = post_auth or PostAuth()
    app.state.templates = make_templates()
    app.state.registry = metrics.registry_for(db)
    if auth is not None:
        from .auth import install

        install(app, auth, app.state.templates)  # inside SecurityHeaders: its answers get the headers too
    app.add_middleware(SecurityHeaders)
    return app
