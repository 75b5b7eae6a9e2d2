"""The TLSRPT dashboard in a real browser: Debian's Chromium, headless, driven by Playwright (Python).

The server runs on 127.0.0.1 (uvicorn in a thread) over a SQLite database filled with the report corpus. The
tests look at what a person would: the figures, that the charts are actually drawn (pixels on the canvases,
not just canvas elements), that the date form changes the figures, that links lead to the reporter, domain
and report pages and that the report's raw JSON is shown. Every page must load without a console error,
a failed request or a Content-Security-Policy violation, and hostile report content must not run.

Screenshots of each page go to ``$MXSEC_SCREENSHOTS`` if set, else to a pytest temporary directory.

Chromium is started with a fresh, empty profile and the flags that keep it from calling home (the machine
has no internet; an attempt would hang). The tests fail, not skip, without ``/usr/bin/chromium``:
``scripts/install-system-deps.sh`` installs it.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mxsec.reports.web.server import bind, build_server
from mxsec.storage.reportdb import Filters, Incoming, ReportDB
from mxsec.tlsrpt.parse import parse_report
from tests import tlsrpt_corpus as tc

pytestmark = pytest.mark.lab

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
CASES = tc.corpus()
HOSTILE_ORG = '<img src=x onerror="alert(1)">'
HOSTILE_ID = "</script><script>alert(2)</script>"


def start_server(db: ReportDB, **options: Any) -> tuple[Any, threading.Thread, str]:
    server = build_server(db, **options)
    sock = bind("127.0.0.1", 0)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the dashboard server did not start"
        time.sleep(0.02)
    return server, thread, f"http://127.0.0.1:{sock.getsockname()[1]}"


def stop_server(server: Any, thread: threading.Thread) -> None:
    server.should_exit = True
    thread.join(15)


@pytest.fixture(scope="module")
def corpus_db(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ReportDB]:
    db = ReportDB(f"sqlite:///{tmp_path_factory.mktemp('dash')}/reports.db")
    db.ingest([Incoming(parse_report(c.json(), fallback_domain=c.fallback_domain), "file", c.name) for c in CASES])
    yield db
    db.close()


@pytest.fixture(scope="module")
def base_url(corpus_db: ReportDB) -> Iterator[str]:
    server, thread, url = start_server(corpus_db)
    yield url
    stop_server(server, thread)


@pytest.fixture(scope="module")
def screenshots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = os.environ.get("MXSEC_SCREENSHOTS")
    directory = Path(target) if target else tmp_path_factory.mktemp("screenshots")
    directory.mkdir(parents=True, exist_ok=True)
    return directory


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    assert os.path.exists(CHROMIUM), f"{CHROMIUM} is missing: run scripts/install-system-deps.sh (Debian chromium)"
    from playwright.sync_api import sync_playwright

    profile = tmp_path_factory.mktemp("chromium-profile")
    assert not any(profile.iterdir())
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(profile), executable_path=CHROMIUM, args=CHROMIUM_FLAGS, headless=True,
            viewport={"width": 1280, "height": 900}, timezone_id="UTC", locale="en-US",
        )
        try:
            yield context
        finally:
            context.close()


class Watched:
    """A page with everything that went wrong on it collected: console errors and warnings, uncaught
    exceptions, failed or 4xx/5xx requests, CSP violations and JavaScript dialogs (an XSS would open one)."""

    def __init__(self, context: Any) -> None:
        self.problems: list[str] = []
        self.dialogs: list[str] = []
        page = context.new_page()
        page.set_default_timeout(10_000)
        page.add_init_script(
            "window.__csp = [];"
            "document.addEventListener('securitypolicyviolation',"
            " e => window.__csp.push(e.violatedDirective + ' ' + e.blockedURI));"
        )
        page.on("console", self._console)
        page.on("pageerror", lambda exc: self.problems.append(f"uncaught: {exc}"))
        page.on("requestfailed", lambda req: self.problems.append(f"request failed: {req.url} {req.failure}"))
        page.on("response", self._response)
        page.on("dialog", self._dialog)
        self.page = page

    def _console(self, message: Any) -> None:
        if message.type in ("error", "warning"):
            self.problems.append(f"console {message.type}: {message.text}")

    def _response(self, response: Any) -> None:
        if response.status >= 400:
            self.problems.append(f"HTTP {response.status}: {response.url}")

    def _dialog(self, dialog: Any) -> None:
        self.dialogs.append(dialog.message)
        dialog.dismiss()

    def goto(self, url: str) -> None:
        response = self.page.goto(url, wait_until="load")
        assert response is not None and response.status == 200, url
        self.settle()

    def settle(self) -> None:
        self.page.wait_for_load_state("load")
        self.page.wait_for_function("document.readyState === 'complete'")
        if self.page.locator("#chart-data").count():
            self.page.wait_for_function("window.mxsecCharts !== undefined")

    def check(self) -> None:
        violations = self.page.evaluate("window.__csp || []")
        assert violations == [], f"CSP violations: {violations}"
        assert self.problems == []
        assert self.dialogs == []

    def text(self, selector: str) -> str:
        return " ".join(self.page.locator(selector).first.inner_text().split())

    def shot(self, directory: Path, name: str) -> None:
        path = directory / f"{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        assert path.stat().st_size > 10_000


@pytest.fixture
def watched(browser: Any) -> Iterator[Watched]:
    page = Watched(browser)
    yield page
    page.check()
    page.page.close()


def drawn_pixels(page: Any, canvas_id: str) -> dict[str, Any]:
    """What is on a canvas: its size, how many pixels are not blank, and the Chart.js instance's data."""
    return page.evaluate(
        """id => {
            const canvas = document.getElementById(id);
            if (!canvas) return null;
            const ctx = canvas.getContext('2d');
            const {width, height} = canvas;
            const pixels = ctx.getImageData(0, 0, width, height).data;
            let painted = 0;
            const colours = new Set();
            for (let i = 0; i < pixels.length; i += 4) {
                if (pixels[i + 3] > 0) { painted++; colours.add(pixels[i] + ',' + pixels[i+1] + ',' + pixels[i+2]); }
            }
            const chart = Chart.getChart(canvas);
            return {
                width, height, painted, colours: colours.size,
                type: chart ? chart.config.type : null,
                labels: chart ? chart.data.labels : null,
                datasets: chart ? chart.data.datasets.map(d => ({label: d.label, data: d.data})) : null,
            };
        }""",
        canvas_id,
    )


def test_overview_loads_with_figures_and_drawn_charts(watched: Watched, base_url: str, screenshots: Path,
                                                      corpus_db: ReportDB) -> None:
    watched.goto(base_url + "/")
    assert watched.text("#card-reports") == "27"
    assert watched.text("#card-failed") == str(sum(c.failed for c in CASES))
    rate = drawn_pixels(watched.page, "chart-rate")
    assert rate is not None and rate["type"] == "line"
    assert rate["width"] > 300 and rate["height"] > 100
    assert rate["painted"] > 2000 and rate["colours"] > 3, rate  # axes, grid, line and points
    assert rate["labels"] == ["2016-04-01", "2024-02-17"]
    assert rate["datasets"][0]["data"][0] == pytest.approx(100 * 5326 / 5629, abs=1e-3)
    types = drawn_pixels(watched.page, "chart-types")
    assert types["type"] == "bar" and types["painted"] > 2000
    assert dict(zip(types["labels"], types["datasets"][0]["data"])) == corpus_db.by_result_type()
    failures = drawn_pixels(watched.page, "chart-failures")
    assert failures["painted"] > 2000
    assert {d["label"] for d in failures["datasets"]} == set(corpus_db.by_result_type())
    # An empty canvas has no painted pixel: the measure can tell drawn from not drawn.
    blank = watched.page.evaluate(
        "() => { const c = document.createElement('canvas'); c.width = 50; c.height = 50;"
        " return Array.from(c.getContext('2d').getImageData(0, 0, 50, 50).data).some(v => v > 0); }"
    )
    assert blank is False
    watched.shot(screenshots, "overview")


def test_date_filter_form_changes_the_figures(watched: Watched, base_url: str, screenshots: Path) -> None:
    watched.goto(base_url + "/")
    page = watched.page
    page.fill("form.range input[name=since]", "2024-01-01")
    page.fill("form.range input[name=until]", "2024-12-31")
    with page.expect_navigation():
        page.click("form.range button[type=submit]")
    watched.settle()
    assert "since=2024-01-01" in page.url and "until=2024-12-31" in page.url
    assert watched.text("#card-reports") == "25"
    assert watched.text("#card-failed") == str(sum(c.failed for c in CASES) - 606)
    assert page.input_value("form.range input[name=since]") == "2024-01-01"
    assert drawn_pixels(page, "chart-rate")["labels"] == ["2024-02-17"]
    assert page.locator("#reporters").get_by_text("Company-X").count() == 0
    watched.shot(screenshots, "overview-2024")
    # The range is kept when following a link.
    with page.expect_navigation():
        page.locator("#reporters a", has_text="Google Inc.").click()
    watched.settle()
    assert page.url.endswith("?since=2024-01-01&until=2024-12-31")
    with page.expect_navigation():
        page.click("header .presets a:text('all')")
    watched.settle()
    assert "since" not in page.url and watched.text("#card-reports") == "4"


def test_links_lead_to_reporter_domain_and_report_pages(watched: Watched, base_url: str, screenshots: Path) -> None:
    page = watched.page
    watched.goto(base_url + "/")
    with page.expect_navigation():
        page.locator("#reporters a", has_text="Google Inc.").click()
    watched.settle()
    assert page.url == base_url + "/reporter/Google%20Inc."
    assert watched.text("h1") == "Google Inc."
    assert watched.text("#card-reports") == "4"
    assert drawn_pixels(page, "chart-rate")["painted"] > 1000
    watched.shot(screenshots, "reporter")

    with page.expect_navigation():
        page.locator("#domains a", has_text="example.com").first.click()
    watched.settle()
    assert page.url == base_url + "/domain/example.com"
    assert watched.text("h1") == "example.com"
    assert drawn_pixels(page, "chart-types")["painted"] > 1000
    watched.shot(screenshots, "domain")

    with page.expect_navigation():
        page.locator("#reports a.report-link", has_text="two-policies").click()
    watched.settle()
    assert "/report/" in page.url
    raw = page.locator("#raw-json")
    assert raw.is_visible()
    assert json.loads(raw.inner_text()) == tc.case("two-policies").doc
    assert page.locator("section.policy").count() == 2
    assert "certificate-host-mismatch" in page.locator("section.policy").nth(1).inner_text()
    watched.shot(screenshots, "report")


def test_report_with_warnings_shows_them(watched: Watched, base_url: str, corpus_db: ReportDB) -> None:
    doc = tc.case("mx-prefix").doc
    (row,) = [r for r in corpus_db.reports(Filters(organization=doc["organization-name"]), limit=100)
              if r.report_id == doc["report-id"]]
    watched.goto(f"{base_url}/report/{row.id}")
    codes = watched.page.locator("#warnings tbody td:first-child").all_inner_texts()
    assert set(codes) == set(tc.case("mx-prefix").warnings)
    assert len(codes) == 3  # one per prefixed mx-host entry, and the null contact-info


def test_hostile_report_content_does_not_run(browser: Any, tmp_path: Path, screenshots: Path) -> None:
    doc = tc.report(organization=HOSTILE_ORG, report_id=HOSTILE_ID, policies=[
        tc.entry({**tc.sts_policy(), "policy-domain": "<svg onload=alert(3)>"}, ok=5, failed=1, details=[
            tc.detail("starttls-not-supported", 1, failure_reason_code="<script>alert(4)</script>")])])
    db = ReportDB(f"sqlite:///{tmp_path}/hostile.db")
    (stored,) = db.ingest([Incoming(parse_report(tc.as_json(doc)), "https", "<b>client</b>")])
    server, thread, url = start_server(db)
    watched = Watched(browser)
    try:
        for path in ("/", "/reports", f"/report/{stored.id}"):
            watched.goto(url + path)
        assert watched.text("#report-fields tr:first-child td") == HOSTILE_ORG
        assert watched.text("h1") == HOSTILE_ID
        assert watched.page.locator("img[src=x], svg[onload]").count() == 0
        watched.shot(screenshots, "hostile-report")
        watched.check()
    finally:
        watched.page.close()
        stop_server(server, thread)
        db.close()


def test_login_page_guards_the_dashboard(browser: Any, corpus_db: ReportDB, screenshots: Path) -> None:
    """With [reports] password_hash set, the browser is sent to /login, logs in with a strict HttpOnly cookie,
    sees the page it asked for, and logs out again. The login page itself obeys the same CSP."""
    from mxsec.reports.web.auth import AuthSettings, hash_password

    password = "lab dashboard password"
    auth = AuthSettings(password_hash=hash_password(password), listen_host="127.0.0.1")
    server, thread, url = start_server(corpus_db, auth=auth)
    watched = Watched(browser)
    try:
        watched.goto(url + "/reports")  # 303 to the login page, which answers 200
        assert watched.page.url == url + "/login?next=%2Freports"
        assert watched.page.locator("input#password[type=password]").count() == 1
        watched.shot(screenshots, "login")
        watched.page.fill("#password", password)
        with watched.page.expect_navigation():
            watched.page.click("#login-submit")
        watched.settle()
        assert watched.page.url == url + "/reports"
        assert watched.page.locator("#reports-table, table").count() >= 1
        (cookie,) = [c for c in browser.cookies(url) if c["name"] == "mxsec_session"]
        assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and not cookie["secure"]
        assert watched.page.evaluate("document.cookie") == ""  # HttpOnly: not readable by script
        with watched.page.expect_navigation():
            watched.page.click("form.logout button")
        watched.settle()
        assert watched.page.url.startswith(url + "/login")
        assert [c for c in browser.cookies(url) if c["name"] == "mxsec_session"] == []
        watched.check()
    finally:
        watched.page.close()
        browser.clear_cookies()
        stop_server(server, thread)


def test_integrity_conflicting_copies_are_shown(browser: Any, tmp_path: Path, screenshots: Path) -> None:
    """Report integrity: a forged open POST then the genuine DKIM-signed report: the overview counts the
    genuine one (4,000 failures) and says there are conflicting copies; the forged copy's page says it is not
    counted and links to the counted one."""
    from tests.unit.test_reports_store import forged_and_genuine

    forged, genuine = forged_and_genuine()
    db = ReportDB(f"sqlite:///{tmp_path}/conflict.db")
    (fake,) = db.ingest([Incoming(parse_report(forged), "https", "198.51.100.7")])
    (real,) = db.ingest([Incoming(parse_report(genuine), "message", "<m@google.example>", dkim="pass")])
    server, thread, url = start_server(db)
    watched = Watched(browser)
    try:
        watched.goto(url + "/")
        assert watched.text("#card-failed") == "4,000"
        assert watched.page.locator("#conflicts").is_visible()
        assert watched.text("#conflicts h2") == "1 report received in conflicting copies"
        assert watched.page.locator("#conflict-1 tbody tr").count() == 2
        watched.shot(screenshots, "conflict-overview")
        watched.page.locator(f'#conflict-1 a[href="/report/{fake.id}"]').click()
        watched.settle()
        assert watched.page.url.endswith(f"/report/{fake.id}")
        assert "This copy is not counted" in watched.text("#copies")
        assert watched.page.locator(f'#copies a[href="/report/{real.id}"]').count() >= 1
        watched.shot(screenshots, "conflict-report")
        watched.check()
    finally:
        watched.page.close()
        stop_server(server, thread)
        db.close()
