"""The dashboard, ``POST /tlsrpt`` and ``/metrics`` of ``mxsec reports serve``, through Starlette's TestClient.

The database is SQLite in a temporary directory, filled with the report corpus (tests/tlsrpt_corpus.py), so
every expected figure is computed from the corpus' own ``Case.successful``/``Case.failed``, never copied from
a page.
"""

from __future__ import annotations

import json
import re
import warnings
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from mxsec.errors import ConfigError
from mxsec.reports.web import format as fmt
from mxsec.reports.web import metrics
from mxsec.reports.web.app import CSP, create_app
from mxsec.reports.web.server import check_tls, parse_listen
from mxsec.storage.base import StoreError
from mxsec.storage.reportdb import Filters, Incoming, ReportDB
from mxsec.tlsrpt.parse import parse_report
from tests import tlsrpt_corpus as tc

with warnings.catch_warnings():
    # Newer Starlette prefers the httpx2 package for its TestClient and warns when it finds only httpx.
    warnings.filterwarnings("ignore", message=".*httpx2.*")
    from starlette.testclient import TestClient

CASES = tc.corpus()
TOTAL_OK = sum(c.successful for c in CASES)
TOTAL_FAILED = sum(c.failed for c in CASES)


# --------------------------------------------------------------------------------------------- helpers


def fill(db: ReportDB, cases: list[tc.Case], *, now: float | None = None) -> None:
    items = [Incoming(parse_report(c.json(), fallback_domain=c.fallback_domain), "file", c.name) for c in cases]
    results = db.ingest(items, now=now)
    assert [r.outcome for r in results] == ["stored"] * len(cases)


class Page(HTMLParser):
    """The parts of a page the tests look at: tables by id, elements' text by id, scripts, attributes."""

    def __init__(self, html: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tables: dict[str, list[list[str]]] = {}
        self.text_by_id: dict[str, str] = {}
        self.scripts: list[dict[str, str | None]] = []
        self.script_text: dict[str, str] = {}
        self.links: list[str] = []
        self.style_attributes = 0
        self.event_attributes: list[str] = []
        self._table: str | None = None
        self._row: list[str] | None = None
        self._cell: list[str] | None = None
        self._capture: list[tuple[str, str, int, list[str]]] = []  # (id, tag, depth, parts)
        self._depth = 0
        self._script: str | None = None
        self._in_head = False
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        if "style" in attributes:
            self.style_attributes += 1
        self.event_attributes += [name for name in attributes if name.startswith("on")]
        if tag == "a" and attributes.get("href"):
            self.links.append(attributes["href"] or "")
        if tag == "script":
            self.scripts.append(attributes)
            self._script = attributes.get("id") or ""
        if tag in ("br", "meta", "link", "input", "img"):
            return
        self._depth += 1
        if attributes.get("id"):
            self._capture.append((attributes["id"] or "", tag, self._depth, []))
        if tag == "table" and attributes.get("id"):
            self._table = attributes["id"]
            self.tables[self._table] = []
        elif tag == "thead":
            self._in_head = True
        elif tag == "tr" and self._table and not self._in_head:
            self._row = []
        elif tag in ("td", "th") and self._row is not None:
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag in ("br", "meta", "link", "input", "img"):
            return
        for item in list(self._capture):
            if item[2] == self._depth and item[1] == tag:
                self.text_by_id[item[0]] = " ".join("".join(item[3]).split())
                self._capture.remove(item)
        self._depth -= 1
        if tag in ("td", "th") and self._cell is not None and self._row is not None:
            self._row.append(" ".join("".join(self._cell).split()))
            self._cell = None
        elif tag == "tr" and self._row is not None and self._table:
            self.tables[self._table].append(self._row)
            self._row = None
        elif tag == "thead":
            self._in_head = False
        elif tag == "table":
            self._table = None
        elif tag == "script":
            self._script = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)
        for item in self._capture:
            item[3].append(data)
        if self._script:
            self.script_text[self._script] = self.script_text.get(self._script, "") + data

    def rows(self, table: str) -> dict[str, list[str]]:
        """Body rows of a table keyed by their first cell."""
        return {row[0]: row[1:] for row in self.tables[table]}

    @property
    def chart_data(self) -> dict[str, Any]:
        return json.loads(self.script_text["chart-data"])


def figure(page: Page, label: str) -> str:
    """The value of a summary card, e.g. 'Failed sessions'."""
    return page.text_by_id[f"card-{label}"]


@pytest.fixture(scope="module")
def corpus_db(tmp_path_factory: pytest.TempPathFactory) -> ReportDB:
    db = ReportDB(f"sqlite:///{tmp_path_factory.mktemp('web')}/reports.db")
    fill(db, CASES)
    yield db
    db.close()


@pytest.fixture(scope="module")
def client(corpus_db: ReportDB) -> TestClient:
    return TestClient(create_app(corpus_db))


def get_page(client: TestClient, path: str, status: int = 200) -> Page:
    response = client.get(path)
    assert response.status_code == status, (path, response.status_code, response.text[:300])
    assert response.headers["content-type"].startswith("text/html")
    return Page(response.text)


def report_pk(db: ReportDB, case_name: str) -> int:
    doc = tc.case(case_name).doc
    rows = db.reports(Filters(organization=doc["organization-name"]), limit=1000)
    (row,) = [r for r in rows if r.report_id == str(doc["report-id"])]
    return row.id


# --------------------------------------------------------------------------------------------- pages


def test_overview_shows_the_corpus_totals(client: TestClient) -> None:
    page = get_page(client, "/")
    assert figure(page, "reports") == "27"
    assert figure(page, "failed") == fmt.count(TOTAL_FAILED) == "634"
    assert figure(page, "successful") == fmt.count(TOTAL_OK)
    assert figure(page, "rate") == fmt.percent(TOTAL_OK / (TOTAL_OK + TOTAL_FAILED))
    reporters = page.rows("reporters")
    google = [c for c in CASES if c.doc["organization-name"] == "Google Inc."]
    assert reporters["Google Inc."][:3] == [
        str(len(google)), f"{sum(c.successful for c in google):,}", str(sum(c.failed for c in google))
    ]
    assert reporters["Company-X"][:4] == ["2", "10,652", "606", "94.6%"]
    domains = page.rows("domains")
    assert set(domains) == {"company-y.example", "example.com", "mx1.example.com", "xn--bcher-kva.example"}
    assert domains["mx1.example.com"][:3] == ["3", "139", "3"]
    assert len(page.tables["reports"]) == 20  # the most recent reports
    assert any(link.startswith("/report/") for link in page.links)


def test_overview_chart_data_matches_the_database(client: TestClient, corpus_db: ReportDB) -> None:
    data = get_page(client, "/").chart_data
    by_day = corpus_db.by_day()
    assert data["days"] == [d.isoformat() for d in sorted(by_day)]  # 2016 and 2024: too far apart to fill
    assert data["rate"][0] == pytest.approx(100 * 10652 / (10652 + 606), abs=1e-4)
    assert data["failed"] == [606, TOTAL_FAILED - 606]
    by_type = {t["name"]: t["count"] for t in data["resultTypes"]}
    assert by_type == corpus_db.by_result_type()
    assert by_type["starttls-not-supported"] == 402  # 200 + 200 (the two RFC examples) + 1 + 1
    stacked = {s["name"]: s["data"] for s in data["failuresByDay"]}
    assert stacked["certificate-expired"] == [200, None]


def test_date_filter_changes_the_figures_and_is_kept_in_links(client: TestClient) -> None:
    page = get_page(client, "/?since=2024-01-01&until=2024-12-31")
    assert figure(page, "reports") == "25"  # all but the two RFC examples of 2016
    assert figure(page, "failed") == str(TOTAL_FAILED - 606)
    assert "Company-X" not in page.rows("reporters")
    internal = [link for link in page.links if link.startswith(("/domain/", "/reporter/", "/report/"))]
    assert internal and all(link.endswith("?since=2024-01-01&until=2024-12-31") for link in internal)
    old = get_page(client, "/?until=2016-04-01")
    assert figure(old, "reports") == "2" and figure(old, "failed") == "606"
    empty = get_page(client, "/?since=2030-01-01")
    assert figure(empty, "reports") == "0" and figure(empty, "rate") == "—"
    assert "chart-rate" not in empty.text_by_id  # no canvas when there is nothing to draw
    assert get_page(client, "/?since=&until=").rows("reporters") == get_page(client, "/").rows("reporters")


def test_domain_page(client: TestClient) -> None:
    page = get_page(client, "/domain/company-y.example")
    assert figure(page, "reports") == "2"
    assert figure(page, "failed") == "606"
    assert figure(page, "rate") == "94.6%"
    assert page.text_by_id["page-title"] == "company-y.example"
    html = client.get("/domain/company-y.example").text
    assert "mx2.mail.company-y.example" in html and "2001:db8:abcd:0013::1" in html
    (policy,) = page.tables["policies"]
    assert policy == ["sts", "version: STSv1 mode: testing mx: *.mail.company-y.example max_age: 86400", "2",
                      "10,652", "606", "2016-04-01"]
    example = get_page(client, "/domain/example.com")
    assert "Google Inc." in example.rows("reporters")
    assert figure(get_page(client, "/domain/EXAMPLE.com"), "reports") == figure(example, "reports")
    filtered = get_page(client, "/domain/company-y.example?since=2024-01-01")
    assert figure(filtered, "reports") == "0"  # the domain exists; nothing in this range


def test_reporter_page(client: TestClient) -> None:
    page = get_page(client, "/reporter/Google%20Inc.")
    google = [c for c in CASES if c.doc["organization-name"] == "Google Inc."]
    assert figure(page, "reports") == str(len(google))
    assert figure(page, "successful") == f"{sum(c.successful for c in google):,}"
    assert figure(page, "failed") == str(sum(c.failed for c in google))
    assert set(page.rows("domains")) == {"example.com"}
    assert len(page.tables["reports"]) == len(google)


def test_report_page_shows_fields_warnings_policies_and_raw_json(client: TestClient, corpus_db: ReportDB) -> None:
    pk = report_pk(corpus_db, "rfc-errata-6241")
    page = get_page(client, f"/report/{pk}")
    fields = page.rows("report-fields")
    assert fields["Organization"] == ["Company-X"]
    assert fields["Report-ID"] == ["5065427c-23d3-47ca-b6e0-946ea0e8c4be"]
    assert fields["Contact"] == ["sts-reporting@company-x.example"]
    assert page.rows("report-source")["Source"] == ["file · rfc-errata-6241"]
    assert "not applicable" in page.rows("report-source")["DKIM"][0]
    raw = json.loads(page.text_by_id["raw-json"])
    assert raw == tc.case("rfc-errata-6241").doc
    html = client.get(f"/report/{pk}").text
    for text in ("X509_V_ERR_PROOF_OF_POLICY_NOT_MET", "mx-backup.mail.company-y.example", "198.51.100.62"):
        assert text in html
    quirky = get_page(client, f"/report/{report_pk(corpus_db, 'mx-prefix')}")
    assert set(quirky.rows("warnings")) == set(tc.case("mx-prefix").warnings)
    messages = [cells[0] for cells in quirky.rows("warnings").values()]
    assert any("had an 'mx:' prefix; removed" in m for m in messages)
    download = client.get(f"/report/{pk}/raw.json")
    assert download.status_code == 200 and json.loads(download.content) == tc.case("rfc-errata-6241").doc
    assert download.headers["content-disposition"].startswith("attachment")


def test_reports_list_pages(client: TestClient) -> None:
    page = get_page(client, "/reports")
    assert len(page.tables["reports"]) == 27
    google = get_page(client, "/reports?organization=Google%20Inc.")
    assert len(google.tables["reports"]) == 4
    assert len(get_page(client, "/reports?page=99").tables["reports"]) == 27  # clamped to the last page
    # The filter form and its presets keep the organization.
    assert '<input type="hidden" name="organization" value="Google Inc.">' in client.get(
        "/reports?organization=Google%20Inc.").text
    assert any(link.startswith("?since=") and link.endswith("&organization=Google+Inc.") for link in google.links)


def test_dkim_status_of_mailed_reports(tmp_path: Path) -> None:
    db = ReportDB(f"sqlite:///{tmp_path}/r.db")
    report = parse_report(tc.case("google-heartbeat").json())
    (stored,) = db.ingest([Incoming(report, "message", "<m1@google.example>", dkim="fail",
                                    dkim_domains=("google.example",))])
    page = get_page(TestClient(create_app(db)), f"/report/{stored.id}")
    assert page.rows("report-source")["DKIM"] == ["fail · google.example"]
    db.close()


# --------------------------------------------------------------------------------------------- hostile input


HOSTILE_ORG = '<script>alert("org")</script>'
HOSTILE_ID = '"><img src=x onerror=alert(1)>'
HOSTILE_DOMAIN = "</script><script>alert(2)</script>"


@pytest.fixture
def hostile(tmp_path: Path) -> tuple[TestClient, int]:
    doc = tc.report(
        organization=HOSTILE_ORG, report_id=HOSTILE_ID, contact="<b>x</b>@evil.example",
        policies=[tc.entry({**tc.sts_policy(), "policy-domain": HOSTILE_DOMAIN}, ok=1, failed=2, details=[
            tc.detail("<i>odd</i>", 2, sending_mta_ip="192.0.2.1", failure_reason_code="<u>reason</u>",
                      receiving_mx_hostname="<svg onload=alert(3)>")])],
    )
    db = ReportDB(f"sqlite:///{tmp_path}/r.db")
    (stored,) = db.ingest([Incoming(parse_report(tc.as_json(doc)), "https", "<script>")])
    yield TestClient(create_app(db)), stored.id
    db.close()


def test_hostile_strings_are_escaped_everywhere(hostile: tuple[TestClient, int]) -> None:
    client, pk = hostile
    paths = ["/", "/reports", f"/report/{pk}", "/reporter/%3Cscript%3Ealert(%22org%22)%3C%2Fscript%3E",
             "/domain/%3C%2Fscript%3E%3Cscript%3Ealert(2)%3C%2Fscript%3E"]
    for path in paths:
        response = client.get(path)
        assert response.status_code == 200, path
        html = response.text
        for raw in ("<script>alert", "<img src=x", "<svg", "<i>odd", "<u>reason", "<b>x"):
            assert raw not in html, (path, raw)
        assert "&lt;script&gt;" in html
        page = Page(html)
        assert page.event_attributes == []
        # The chart data is JSON inside a script element: '<' is escaped, so it cannot close the element.
        assert "</script" not in page.script_text.get("chart-data", "")
    report_page = Page(client.get(f"/report/{pk}").text)
    assert report_page.rows("report-fields")["Organization"] == [HOSTILE_ORG]
    assert report_page.rows("report-fields")["Report-ID"] == [HOSTILE_ID]
    reporter_links = [link for link in report_page.links if link.startswith("/reporter/")]
    assert reporter_links == ["/reporter/%3Cscript%3Ealert%28%22org%22%29%3C%2Fscript%3E"] * 2
    assert client.get(reporter_links[0]).status_code == 200


def test_hostile_values_in_metrics_are_escaped(hostile: tuple[TestClient, int]) -> None:
    client, _ = hostile
    text = client.get("/metrics").text
    (family,) = [f for f in text_string_to_metric_families(text) if f.name == "mxsec_tlsrpt_reports"]
    assert family.samples[0].labels == {"organization": HOSTILE_ORG, "policy_domain": HOSTILE_DOMAIN}


def test_pages_carry_a_strict_csp_and_no_inline_script_or_style(client: TestClient, corpus_db: ReportDB) -> None:
    pk = report_pk(corpus_db, "two-policies")
    for path in ["/", "/domain/example.com", "/reporter/Google%20Inc.", f"/report/{pk}", "/reports",
                 "/report/0", "/?since=bad"]:
        response = client.get(path)
        assert response.headers["content-security-policy"] == CSP
        assert response.headers["x-content-type-options"] == "nosniff"
        page = Page(response.text)
        assert page.style_attributes == 0 and page.event_attributes == []
        for script in page.scripts:
            assert script.get("src", "").startswith("/static/") or script.get("type") == "application/json"
    assert "'unsafe-inline'" not in CSP and "script-src 'self'" in CSP and "default-src 'none'" in CSP
    static = client.get("/static/vendor/chart.umd.min.js")
    assert static.status_code == 200 and "Chart.js v4" in static.text[:200]
    assert static.headers["content-security-policy"] == CSP


# --------------------------------------------------------------------------------------------- errors


@pytest.mark.parametrize("path", [
    "/report/999999", "/report/99999999999999999999999999", "/report/abc", "/domain/nowhere.example",
    "/reporter/Nobody%20Ltd", "/no/such/page",
])
def test_unknown_things_are_404_pages(client: TestClient, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 404
    page = Page(response.text)
    message = page.text_by_id["error-message"]
    assert message and "\n" not in message
    assert "Traceback" not in response.text


@pytest.mark.parametrize("query, words", [
    ("since=2024-13-01", "not a valid date"),
    ("since=yesterday", "YYYY-MM-DD"),
    ("until=2024-02-30", "not a valid date"),
    ("since=2024-03-01&until=2024-02-01", "after"),
    ("since=2024-01-01&since=2024-02-01", "once"),
    ("since=" + "9" * 5000, "YYYY-MM-DD"),
])
def test_bad_dates_are_400_pages(client: TestClient, query: str, words: str) -> None:
    for path in ("/", "/domain/example.com", "/reports"):
        response = client.get(f"{path}?{query}")
        assert response.status_code == 400
        message = Page(response.text).text_by_id["error-message"]
        assert words in message and len(message) < 200


def test_bad_page_number_is_400(client: TestClient) -> None:
    assert client.get("/reports?page=0").status_code == 400
    assert client.get("/reports?page=x").status_code == 400


def test_database_failure_is_a_503_page_and_database_up_0(tmp_path: Path, monkeypatch) -> None:
    db = ReportDB(f"sqlite:///{tmp_path}/r.db")
    client = TestClient(create_app(db))

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise StoreError("report database sqlite:///x: disk I/O error")

    monkeypatch.setattr(db, "totals", broken)
    response = client.get("/")
    assert response.status_code == 503
    assert Page(response.text).text_by_id["error-message"] == "report database sqlite:///x: disk I/O error"
    assert "mxsec_tlsrpt_database_up 0.0" in client.get("/metrics").text
    monkeypatch.setattr(db, "ingest", broken)
    posted = client.post("/tlsrpt", content=tc.case("google-heartbeat").json(),
                         headers={"content-type": "application/tlsrpt+json"})
    assert posted.status_code == 503 and posted.json()["error"] == "unavailable"
    db.close()


def test_healthz(client: TestClient) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200 and response.text == "ok"


# --------------------------------------------------------------------------------------------- POST /tlsrpt


@pytest.fixture
def post_app(tmp_path: Path) -> tuple[TestClient, ReportDB]:
    db = ReportDB(f"sqlite:///{tmp_path}/post.db")
    yield TestClient(create_app(db, max_body=64 * 1024)), db
    db.close()


def post(client: TestClient, body: Any, content_type: str | None) -> Any:
    headers = {"content-type": content_type} if content_type is not None else {}
    return client.post("/tlsrpt", content=body, headers=headers)


def test_post_stores_then_reports_duplicates_and_conflicts(post_app: tuple[TestClient, ReportDB]) -> None:
    client, db = post_app
    case = tc.case("rfc-errata-6241")
    first = post(client, case.gzip(), "application/tlsrpt+gzip")
    assert first.status_code == 201
    assert first.json() == {"outcome": "stored", "id": first.json()["id"], "auth": "none", "counted": True}
    again = post(client, case.json(), "application/tlsrpt+json")  # same JSON, other packing
    assert again.status_code == 200
    assert again.json() == {"outcome": "duplicate", "id": first.json()["id"], "auth": "none", "counted": True}
    changed = dict(case.doc, **{"contact-info": "other@company-x.example"})
    conflict = post(client, tc.as_json(changed), "application/json; charset=utf-8")
    assert conflict.status_code == 200
    assert conflict.json() == {"outcome": "conflict", "id": conflict.json()["id"], "auth": "none", "counted": False,
                               "other_copies": [first.json()["id"]]}
    detail = db.report(first.json()["id"])
    assert detail.row.source == "https" and detail.row.source_name == "testclient"
    assert db.totals().as_dict() == {"reports": 1, "successful_sessions": 5326, "failed_sessions": 303}


def test_post_accepts_lenient_media_types(post_app: tuple[TestClient, ReportDB]) -> None:
    client, db = post_app
    assert post(client, tc.case("google-heartbeat").gzip(), "application/gzip").status_code == 201
    assert post(client, tc.case("postfix-dane").gzip(), "application/x-gzip").status_code == 201
    assert post(client, tc.case("two-policies").json(), "Application/TLSRPT+JSON").status_code == 201
    assert db.totals().reports == 3


@pytest.mark.parametrize("content_type", ["text/plain", "application/xml", "multipart/form-data", None, ""])
def test_post_other_media_types_are_415(post_app: tuple[TestClient, ReportDB], content_type: str | None) -> None:
    client, db = post_app
    response = post(client, tc.case("google-heartbeat").json(), content_type)
    assert response.status_code == 415
    assert response.json()["error"] == "unsupported-media-type"
    assert db.totals().reports == 0


def test_post_too_large_is_413_even_without_content_length(post_app: tuple[TestClient, ReportDB]) -> None:
    client, db = post_app
    big = b"{" + b" " * (64 * 1024) + b"}"
    response = post(client, big, "application/tlsrpt+json")
    assert response.status_code == 413 and response.json()["error"] == "too-large"

    def chunks():  # a streamed (chunked) body: no Content-Length to check
        for _ in range(1000):
            yield b" " * 4096

    streamed = client.post("/tlsrpt", content=chunks(), headers={"content-type": "application/tlsrpt+gzip"})
    assert streamed.status_code == 413
    assert db.totals().reports == 0
    assert post(client, tc.case("google-heartbeat").json(), "application/tlsrpt+json").status_code == 201


@pytest.mark.parametrize("body, code", [
    (b"not json at all", "not-json"),
    (b"", "empty"),
    (b"[1, 2]", "not-an-object"),
    (b'{"organization-name": "x"}', "missing-field"),
    (b"\x1f\x8b\x08\x00garbage", "bad-gzip"),
    (tc.deep_json(100), "too-deep"),
])
def test_post_bad_reports_are_400_with_a_code(post_app: tuple[TestClient, ReportDB], body: bytes, code: str) -> None:
    client, db = post_app
    response = post(client, body, "application/tlsrpt+json")
    assert response.status_code == 400
    payload = response.json()
    assert payload["error"] == code and payload["message"] and "\n" not in payload["message"]
    assert db.totals().reports == 0


def test_post_gzip_bomb_is_refused_and_the_server_keeps_serving(post_app: tuple[TestClient, ReportDB]) -> None:
    client, db = post_app
    bomb = tc.gzip_bomb(32 * 1024 * 1024)  # inflates to 32 MiB (twice the JSON limit) from about 32 KiB
    assert len(bomb) < 64 * 1024  # under the app's body cap: it is the decompression that must stop it
    response = post(client, bomb, "application/tlsrpt+gzip")
    assert response.status_code == 400 and response.json()["error"] == "decompressed-too-large"
    assert post(client, tc.case("google-heartbeat").gzip(), "application/tlsrpt+gzip").status_code == 201
    assert db.totals().reports == 1


def test_post_of_10_mib_of_gzip_members_is_refused_at_once(tmp_path: Path) -> None:
    import gzip
    import time

    db = ReportDB(f"sqlite:///{tmp_path}/members.db")
    client = TestClient(create_app(db))  # default body cap, 10 MiB
    bomb = gzip.compress(b"x", mtime=0) * 499_000
    start = time.perf_counter()
    response = post(client, bomb, "application/tlsrpt+gzip")
    assert time.perf_counter() - start < 2.0  # 181 s of CPU before; most of this is moving 10 MiB around
    assert response.status_code == 400 and response.json()["error"] == "too-many-members"
    assert client.get("/healthz").text == "ok"
    db.close()


def test_get_on_the_post_endpoint_is_405_json(client: TestClient) -> None:
    response = client.get("/tlsrpt")
    assert response.status_code == 405 and response.json()["error"] == "method-not-allowed"


# --------------------------------------------------------------------------------------------- metrics


def test_metrics_are_exact_for_a_known_database(tmp_path: Path) -> None:
    db = ReportDB(f"sqlite:///{tmp_path}/m.db")
    fill(db, [tc.case(n) for n in ("rfc-errata-6241", "google-heartbeat", "two-policies", "postfix-dane",
                                   "microsoft-no-sending-ip")], now=1_700_000_000)
    text = TestClient(create_app(db)).get("/metrics")
    assert text.status_code == 200 and text.headers["content-type"].startswith("text/plain")
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text.text) for s in family.samples
    }
    day_end = float(tc.DAY_END_TS)
    assert samples == {
        ("mxsec_tlsrpt_database_up", ()): 1.0,
        ("mxsec_tlsrpt_stored_reports", ()): 5.0,
        ("mxsec_tlsrpt_conflicting_reports", ()): 0.0,
        ("mxsec_tlsrpt_reports", (("organization", "Company-X"), ("policy_domain", "company-y.example"))): 1.0,
        ("mxsec_tlsrpt_reports", (("organization", "Example Reporter Inc."), ("policy_domain", "example.com"))): 1.0,
        ("mxsec_tlsrpt_reports", (("organization", "Example Reporter Inc."),
                                  ("policy_domain", "mx1.example.com"))): 1.0,
        ("mxsec_tlsrpt_reports", (("organization", "Google Inc."), ("policy_domain", "example.com"))): 1.0,
        ("mxsec_tlsrpt_reports", (("organization", "Microsoft Corporation"), ("policy_domain", "example.com"))): 1.0,
        ("mxsec_tlsrpt_reports", (("organization", "mail.sender.example"), ("policy_domain", "mx1.example.com"))): 1.0,
        ("mxsec_tlsrpt_sessions", (("policy_domain", "company-y.example"), ("result", "successful"))): 5326.0,
        ("mxsec_tlsrpt_sessions", (("policy_domain", "company-y.example"), ("result", "failed"))): 303.0,
        ("mxsec_tlsrpt_sessions", (("policy_domain", "example.com"), ("result", "successful"))): 1452.0 + 10,
        ("mxsec_tlsrpt_sessions", (("policy_domain", "example.com"), ("result", "failed"))): 12.0,
        ("mxsec_tlsrpt_sessions", (("policy_domain", "mx1.example.com"), ("result", "successful"))): 11.0 + 88,
        ("mxsec_tlsrpt_sessions", (("policy_domain", "mx1.example.com"), ("result", "failed"))): 1.0 + 2,
        ("mxsec_tlsrpt_failed_sessions", (("policy_domain", "company-y.example"),
                                          ("result_type", "starttls-not-supported"))): 200.0,
        ("mxsec_tlsrpt_failed_sessions", (("policy_domain", "company-y.example"),
                                          ("result_type", "certificate-expired"))): 100.0,
        ("mxsec_tlsrpt_failed_sessions", (("policy_domain", "company-y.example"),
                                          ("result_type", "validation-failure"))): 3.0,
        ("mxsec_tlsrpt_failed_sessions", (("policy_domain", "example.com"),
                                          ("result_type", "sts-policy-fetch-error"))): 12.0,
        ("mxsec_tlsrpt_failed_sessions", (("policy_domain", "mx1.example.com"),
                                          ("result_type", "certificate-host-mismatch"))): 1.0,
        ("mxsec_tlsrpt_failed_sessions", (("policy_domain", "mx1.example.com"),
                                          ("result_type", "dane-required"))): 1.0,
        ("mxsec_tlsrpt_failed_sessions", (("policy_domain", "mx1.example.com"),
                                          ("result_type", "tlsa-invalid"))): 1.0,
        # 2016-04-01T23:59:59Z, the end of the RFC example's range
        ("mxsec_tlsrpt_last_report_timestamp_seconds", (("policy_domain", "company-y.example"),)): 1459555199.0,
        # postfix-dane ends at the next day's 00:00:00Z, one second after the others' 23:59:59Z
        ("mxsec_tlsrpt_last_report_timestamp_seconds", (("policy_domain", "example.com"),)): day_end,
        ("mxsec_tlsrpt_last_report_timestamp_seconds", (("policy_domain", "mx1.example.com"),)): day_end + 1,
        ("mxsec_tlsrpt_last_received_timestamp_seconds", (("policy_domain", "company-y.example"),)): 1.7e9,
        ("mxsec_tlsrpt_last_received_timestamp_seconds", (("policy_domain", "example.com"),)): 1.7e9,
        ("mxsec_tlsrpt_last_received_timestamp_seconds", (("policy_domain", "mx1.example.com"),)): 1.7e9,
    }
    db.close()


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text) for s in family.samples
    }


def test_metrics_labels_are_bounded_for_3000_reporters(tmp_path: Path) -> None:
    # the finding: 3,000 organizations (each its own policy domain) gave a 2.3 MB scrape
    db = ReportDB(f"sqlite:///{tmp_path}/many.db")
    docs = [tc.report(organization=f"Reporter {n:04d}", report_id=f"r{n}",
                      policies=[tc.entry(tc.sts_policy(f"d{n:04d}.example"), ok=n + 1, failed=1,
                                         details=[tc.detail(f"made-up-type-{n}", 1)])])
            for n in range(3000)]
    assert all(r.outcome == "stored" for r in db.ingest(
        [Incoming(parse_report(tc.as_json(doc)), "file", "x") for doc in docs]))
    text = TestClient(create_app(db)).get("/metrics").text
    assert len(text) < 60_000, len(text)
    samples = _samples(text)
    organizations = {dict(k[1])["organization"] for k in samples if k[0] == "mxsec_tlsrpt_reports"}
    domains = {dict(k[1])["policy_domain"] for k in samples if k[0] == "mxsec_tlsrpt_sessions"}
    assert len(organizations) == metrics.MAX_ORGANIZATIONS + 1 and "(other)" in organizations
    assert len(domains) == metrics.MAX_DOMAINS + 1 and "(other)" in domains
    # the largest by volume keep their names: domains by sessions, then organizations by reports (ties by name)
    assert "d2999.example" in domains and "d2900.example" in domains and "d2899.example" not in domains
    assert "Reporter 0000" in organizations and "Reporter 0049" in organizations
    assert "Reporter 0050" not in organizations
    # nothing is lost: the buckets add up to the totals
    assert sum(v for k, v in samples.items() if k[0] == "mxsec_tlsrpt_reports") == 3000
    ok = sum(v for k, v in samples.items() if k[0] == "mxsec_tlsrpt_sessions" and ("result", "successful") in k[1])
    assert ok == sum(range(1, 3001))
    failed_types = {dict(k[1])["result_type"] for k in samples if k[0] == "mxsec_tlsrpt_failed_sessions"}
    assert failed_types == {"(other)"}  # made-up result types are not labels
    assert samples[("mxsec_tlsrpt_failed_sessions", (("policy_domain", "(other)"), ("result_type", "(other)")))] \
        == 3000 - metrics.MAX_DOMAINS
    db.close()


def test_metrics_other_bucket_is_exact(tmp_path: Path) -> None:
    from prometheus_client import generate_latest

    db = ReportDB(f"sqlite:///{tmp_path}/m.db")
    fill(db, [tc.case(n) for n in ("rfc-errata-6241", "google-heartbeat", "two-policies", "postfix-dane",
                                   "microsoft-no-sending-ip")], now=1_700_000_000)
    text = generate_latest(metrics.registry_for(db, max_organizations=1, max_domains=1)).decode()
    samples = _samples(text)
    # sessions: company-y.example 5629 > example.com 1474 > mx1.example.com 102
    assert samples[("mxsec_tlsrpt_sessions", (("policy_domain", "company-y.example"), ("result", "failed")))] == 303
    assert samples[("mxsec_tlsrpt_sessions", (("policy_domain", "(other)"), ("result", "successful")))] \
        == 1452 + 10 + 11 + 88
    assert samples[("mxsec_tlsrpt_last_report_timestamp_seconds", (("policy_domain", "(other)"),))] \
        == float(tc.DAY_END_TS) + 1
    # Example Reporter Inc. has two reports (two domains); everyone else one
    reports = {k[1]: v for k, v in samples.items() if k[0] == "mxsec_tlsrpt_reports"}
    assert reports == {
        (("organization", "(other)"), ("policy_domain", "(other)")): 3.0,
        (("organization", "(other)"), ("policy_domain", "company-y.example")): 1.0,
        (("organization", "Example Reporter Inc."), ("policy_domain", "(other)")): 2.0,
    }
    db.close()


def test_each_app_has_its_own_registry(tmp_path: Path) -> None:
    one = ReportDB(f"sqlite:///{tmp_path}/one.db")
    two = ReportDB(f"sqlite:///{tmp_path}/two.db")
    fill(one, [tc.case("google-heartbeat")])
    a, b = TestClient(create_app(one)), TestClient(create_app(two))
    assert "mxsec_tlsrpt_stored_reports 1.0" in a.get("/metrics").text
    assert "mxsec_tlsrpt_stored_reports 0.0" in b.get("/metrics").text
    one.close()
    two.close()


# --------------------------------------------------------------------------------------------- small parts


@pytest.mark.parametrize("rate, text", [
    (None, "—"), (1.0, "100%"), (0.99999, "99.99%"), (0.999999999, "99.99%"), (0.9463, "94.6%"),
    (0.0, "0.0%"), (0.98999, "98.9%"),
])
def test_percent_never_rounds_up_to_100(rate: float | None, text: str) -> None:
    assert fmt.percent(rate) == text


@pytest.mark.parametrize("value, text", [
    (0, "0"), (999_999, "999,999"), (1_000_000, "1.0M"), (12_345_678, "12.3M"), (2**53 - 1, "9.0Q"),
    (123_456_789_012, "123B"),
])
def test_count(value: int, text: str) -> None:
    assert fmt.count(value) == text


@pytest.mark.parametrize("listen, expected", [
    ("127.0.0.1:8025", ("127.0.0.1", 8025)), ("[::1]:443", ("::1", 443)), ("localhost:0", ("localhost", 0)),
    ("0.0.0.0:65535", ("0.0.0.0", 65535)),
])
def test_parse_listen(listen: str, expected: tuple[str, int]) -> None:
    assert parse_listen(listen) == expected


@pytest.mark.parametrize("listen", [
    "", "8025", ":8025", "127.0.0.1", "127.0.0.1:", "127.0.0.1:http", "127.0.0.1:65536", "::1:8025", "[::1]8025",
    "[nope]:80", "host :80", "a\nb:80",
])
def test_parse_listen_refuses_with_one_line(listen: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_listen(listen)
    assert "\n" not in str(info.value)


def test_check_tls_refuses_unusable_files(tmp_path: Path) -> None:
    import trustme

    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    cert_file, key_file, other_key = tmp_path / "c.pem", tmp_path / "k.pem", tmp_path / "o.pem"
    cert.cert_chain_pems[0].write_to_path(str(cert_file))
    cert.private_key_pem.write_to_path(str(key_file))
    ca.issue_cert("other.example").private_key_pem.write_to_path(str(other_key))
    check_tls(str(cert_file), str(key_file))
    check_tls(None, None)
    for args in ((str(cert_file), None), (str(tmp_path / "missing.pem"), str(key_file)),
                 (str(cert_file), str(other_key)), (str(key_file), str(key_file))):
        with pytest.raises(ConfigError) as info:
            check_tls(*args)
        assert "\n" not in str(info.value)


def test_report_json_is_escaped_inside_the_pre(client: TestClient, corpus_db: ReportDB) -> None:
    html = client.get(f"/report/{report_pk(corpus_db, 'unknown-fields')}").text
    pre = re.search(r'<pre class="raw" id="raw-json">(.*?)</pre>', html, re.DOTALL)
    assert pre and '"x-top"' not in pre.group(1) and "&#34;x-top&#34;" in pre.group(1)


# ------------------------------------------------------------------------------------------- POST auth and conflicts


TOKEN = "s3cret-token-0123456789abcdef"


def auth_app(tmp_path: Path, **settings: Any) -> tuple[TestClient, ReportDB]:
    from mxsec.reports.web.post_auth import PostAuth

    db = ReportDB(f"sqlite:///{tmp_path}/auth.db")
    return TestClient(create_app(db, post_auth=PostAuth.build(**settings))), db


def test_integrity_post_with_token_is_recorded_and_counted_over_an_open_post(tmp_path: Path) -> None:
    """Report integrity: a forged open POST first, the same report-id POSTed later with a configured token:
    the token's copy is counted, both are kept, the wrong token is 401."""
    import hashlib

    from tests.unit.test_reports_store import forged_and_genuine

    digest = hashlib.sha256(TOKEN.encode()).hexdigest()
    client, db = auth_app(tmp_path, token_hashes=[f"sha256:{digest}"])
    forged, genuine = forged_and_genuine()
    fake = post(client, forged, "application/tlsrpt+json")
    assert fake.status_code == 201 and fake.json()["auth"] == "none"
    wrong = client.post("/tlsrpt", content=genuine, headers={"content-type": "application/tlsrpt+json",
                                                             "authorization": "Bearer " + TOKEN[:-1] + "X"})
    assert wrong.status_code == 401 and wrong.json()["error"] == "unauthorized"
    assert 'error="invalid_token"' in wrong.headers["www-authenticate"]
    real = client.post("/tlsrpt", content=genuine, headers={"content-type": "application/tlsrpt+json",
                                                            "authorization": "Bearer " + TOKEN})
    assert real.status_code == 200
    assert real.json() == {"outcome": "conflict", "id": real.json()["id"], "auth": "token", "counted": True,
                           "other_copies": [fake.json()["id"]]}
    assert db.totals().failed_sessions == 4000
    assert db.report(real.json()["id"]).row.auth_name == "sha256:" + digest[:12]
    db.close()


def test_post_require_auth_refuses_without_token(tmp_path: Path) -> None:
    client, db = auth_app(tmp_path, tokens=[TOKEN], require=True)
    case = tc.case("google-heartbeat")
    refused = post(client, case.json(), "application/tlsrpt+json")
    assert refused.status_code == 401 and "needs authentication" in refused.json()["message"]
    assert refused.headers["www-authenticate"] == 'Bearer realm="tlsrpt"'
    other_scheme = client.post("/tlsrpt", content=case.json(), headers={
        "content-type": "application/tlsrpt+json", "authorization": "Basic " + TOKEN})
    assert other_scheme.status_code == 401
    assert db.totals().reports == 0
    ok = client.post("/tlsrpt", content=case.json(), headers={"content-type": "application/tlsrpt+json",
                                                               "authorization": "bearer " + TOKEN})
    assert ok.status_code == 201 and ok.json()["auth"] == "token"
    # The dashboard itself needs no token.
    assert client.get("/").status_code == 200
    db.close()


@pytest.mark.parametrize("settings, words", [
    ({"tokens": ["short"]}, "post_tokens[0]: shorter than 16"),
    ({"tokens": ["with space in the token"]}, "post_tokens[0]: a token is visible ASCII"),
    ({"token_hashes": ["abc"]}, "post_token_hashes[0]: expected the SHA-256"),
    ({"require": True}, "post_require_auth needs"),
    ({"client_ca": "/nonexistent/ca.pem"}, "post_client_ca /nonexistent/ca.pem"),
])
def test_post_auth_settings_are_checked(settings: dict[str, Any], words: str) -> None:
    from mxsec.errors import ConfigError
    from mxsec.reports.web.post_auth import PostAuth

    with pytest.raises(ConfigError, match=re.escape(words)) as info:
        PostAuth.build(**settings)
    assert "\n" not in str(info.value) and "with space" not in str(info.value)


def test_reports_config_section_builds_post_auth(tmp_path: Path) -> None:
    from mxsec.config import load_config

    path = tmp_path / "mxsec.toml"
    path.write_text(f'[reports]\npost_tokens = ["{TOKEN}"]\npost_require_auth = true\n')
    auth = load_config(str(path)).reports.post_auth()
    assert auth.require and len(auth.token_digests) == 1 and auth.client_ca is None
    path.write_text('[reports]\npost_require_auth = true\n')
    from mxsec.errors import ConfigError

    with pytest.raises(ConfigError, match="reports.post_require_auth needs"):
        load_config(str(path))


@pytest.fixture
def conflicted(tmp_path: Path) -> tuple[TestClient, ReportDB, int, int]:
    """A forged unauthenticated POST first, then the genuine DKIM-signed report (4,000 failures)."""
    from tests.unit.test_reports_store import forged_and_genuine

    db = ReportDB(f"sqlite:///{tmp_path}/c.db")
    forged, genuine = forged_and_genuine()
    (fake,) = db.ingest([Incoming(parse_report(forged), "https", "<b>198.51.100.7</b>")], now=1_700_000_000)
    (real,) = db.ingest([Incoming(parse_report(genuine), "message", "<m1@google.example>", dkim="pass",
                                  dkim_domains=("google.com",))], now=1_700_000_100)
    yield TestClient(create_app(db)), db, fake.id, real.id
    db.close()


def test_integrity_overview_shows_genuine_figures_and_a_conflict_notice(conflicted) -> None:
    client, db, fake, real = conflicted
    page = get_page(client, "/")
    assert figure(page, "reports") == "1" and figure(page, "failed") == "4,000"
    assert page.text_by_id["conflicts"].startswith("1 report received in conflicting copies")
    rows = page.tables["conflict-1"]
    assert [row[:4] for row in rows] == [
        [f"id {real}", "counted", "dkim", "message · <m1@google.example> · DKIM pass"],
        [f"id {fake}", "not counted", "none", "https · <b>198.51.100.7</b>"],
    ]
    assert [row[-1] for row in rows] == ["4,000", "0"]
    assert "<b>198" not in client.get("/").text  # escaped
    assert f"/report/{fake}" in page.links and f"/report/{real}" in page.links
    # The recent-reports table shows the counted copy, marked as having copies.
    (recent,) = page.tables["reports"]
    assert recent[-2].endswith("dkim 2 copies")


def test_integrity_report_page_lists_the_other_copies(conflicted) -> None:
    client, db, fake, real = conflicted
    page = get_page(client, f"/report/{fake}")
    assert "This copy is not counted: the figures count id" in page.text_by_id["copies"]
    assert f"/report/{real}" in page.links
    rows = page.tables["copies-table"]
    assert [row[:3] for row in rows] == [[f"id {real}", "counted", "dkim"],
                                         [f"id {fake} (this page)", "not counted", "none"]]
    assert page.rows("report-source")["Authentication"] == ["none · not counted"]
    genuine = get_page(client, f"/report/{real}")
    assert "This copy is the one the figures count." in genuine.text_by_id["copies"]
    assert genuine.rows("report-source")["Authentication"] == ["dkim"]


def test_integrity_metrics_count_the_counted_copy_and_conflicts(conflicted) -> None:
    client, db, fake, real = conflicted
    text = client.get("/metrics").text
    assert "mxsec_tlsrpt_conflicting_reports 1.0" in text
    assert "mxsec_tlsrpt_stored_reports 1.0" in text
    assert 'mxsec_tlsrpt_sessions{policy_domain="example.com",result="failed"} 4000.0' in text


def test_integrity_no_conflict_notice_without_conflicts(client: TestClient, corpus_db: ReportDB) -> None:
    assert "conflicts" not in get_page(client, "/").text_by_id
    assert "mxsec_tlsrpt_conflicting_reports 0.0" in client.get("/metrics").text
    assert "copies" not in get_page(client, f"/report/{report_pk(corpus_db, 'google-heartbeat')}").text_by_id


# --------------------------------------------------------------------------------------------- login, hosts

from mxsec.reports.web import auth as web_auth  # noqa: E402
from mxsec.reports.web.auth import AuthSettings, hash_password, verify_password  # noqa: E402

PASSWORD = "correct horse battery"
PASSWORD_HASH = hash_password(PASSWORD)


def auth_client(db: ReportDB, **settings: Any) -> TestClient:
    options = {"password_hash": PASSWORD_HASH, "allowed_hosts": ["testserver"], **settings}
    return TestClient(create_app(db, auth=AuthSettings(**options)), follow_redirects=False)


def test_password_hash_round_trip_and_bad_hashes() -> None:
    assert PASSWORD_HASH.startswith("scrypt$16384$8$1$")
    assert verify_password(PASSWORD, PASSWORD_HASH) and not verify_password(PASSWORD + "!", PASSWORD_HASH)
    assert hash_password(PASSWORD) != PASSWORD_HASH  # salted
    for bad in ("", "plain", "scrypt$3$8$1$AAAAAAAAAAA$AAAAAAAAAAAAAAAAAAAAAA", "bcrypt$1$2$3$4$5",
                PASSWORD_HASH.replace("$8$", "$x$")):
        with pytest.raises(ConfigError, match="reports.password_hash"):
            web_auth.check_password_hash(bad)


def test_login_required_for_pages_and_metrics_but_not_healthz_or_post(corpus_db: ReportDB) -> None:
    client = auth_client(corpus_db)
    for path in ("/", "/reports?page=2", "/domain/example.com", "/report/1"):
        response = client.get(path)
        assert response.status_code == 303, path
        assert response.headers["location"].startswith("/login?next=")
    assert client.get("/report/1/raw.json").status_code == 401
    metrics_answer = client.get("/metrics")
    assert metrics_answer.status_code == 401 and metrics_answer.json()["error"] == "unauthorized"
    assert client.get("/healthz").text == "ok"
    assert client.get("/static/style.css").status_code == 200
    # POST /tlsrpt passes the login (its own authentication applies): a bad body gets the endpoint's 400
    assert client.post("/tlsrpt", content=b"{", headers={"content-type": "application/json"}).status_code == 400


def test_login_sets_a_signed_strict_cookie_and_logout_clears_it(corpus_db: ReportDB) -> None:
    client = auth_client(corpus_db)
    page = client.get("/login?next=/reports")
    assert page.status_code == 200 and 'name="password"' in page.text and 'value="/reports"' in page.text
    assert page.headers["cache-control"] == "no-store" and "content-security-policy" in page.headers
    wrong = client.post("/login", data={"password": "nope", "next": "/reports"})
    assert wrong.status_code == 401 and "set-cookie" not in wrong.headers
    good = client.post("/login", data={"password": PASSWORD, "next": "/reports"})
    assert good.status_code == 303 and good.headers["location"] == "/reports"
    cookie = good.headers["set-cookie"]
    assert cookie.startswith("mxsec_session=") and "HttpOnly" in cookie and "SameSite=Strict" in cookie
    assert "Path=/" in cookie and "Max-Age=43200" in cookie and "Secure" not in cookie
    overview = client.get("/")
    assert overview.status_code == 200 and 'action="/logout"' in overview.text
    assert client.get("/metrics").status_code == 200
    out = client.post("/logout")
    assert out.status_code == 303 and "mxsec_session=;" in out.headers["set-cookie"]


def test_session_cookie_is_secure_over_https(corpus_db: ReportDB) -> None:
    client = TestClient(create_app(corpus_db, auth=AuthSettings(password_hash=PASSWORD_HASH,
                                                               allowed_hosts=["testserver"])),
                        base_url="https://testserver", follow_redirects=False)
    good = client.post("/login", data={"password": PASSWORD})
    assert good.status_code == 303 and "; Secure" in good.headers["set-cookie"]


def test_forged_expired_and_foreign_cookies_are_refused(corpus_db: ReportDB) -> None:
    settings = AuthSettings(password_hash=PASSWORD_HASH, session_secret="s" * 32, allowed_hosts=["testserver"])
    gate = web_auth.LoginGate(None, settings, None)
    now = 1_800_000_000.0
    cookie = gate.make_cookie(now)
    assert gate.session_ok(cookie, now + 10)
    assert not gate.session_ok(cookie, now + settings.session_lifetime + 1)  # expired
    expires, nonce, signature = cookie.split(".")
    assert not gate.session_ok(f"{int(expires) + 9999}.{nonce}.{signature}", now)  # tampered expiry
    assert not gate.session_ok("", now) and not gate.session_ok("a.b", now) and not gate.session_ok("a.b.c", now)
    # another secret, or a changed password, signs differently: old sessions end
    other = web_auth.LoginGate(None, AuthSettings(password_hash=hash_password("another password"),
                                                  session_secret="s" * 32), None)
    assert not other.session_ok(cookie, now)
    client = auth_client(corpus_db)
    client.cookies.set("mxsec_session", cookie)
    assert client.get("/").status_code == 303


def test_login_redirects_only_to_local_paths(corpus_db: ReportDB) -> None:
    client = auth_client(corpus_db)
    for target in ("https://evil.example/", "//evil.example/x", "/\\evil.example", "javascript:alert(1)"):
        response = client.post("/login", data={"password": PASSWORD, "next": target})
        assert response.headers["location"] == "/", target


def test_login_from_another_site_and_brute_force_are_refused(corpus_db: ReportDB) -> None:
    client = auth_client(corpus_db)
    cross = client.post("/login", data={"password": PASSWORD}, headers={"origin": "https://evil.example"})
    assert cross.status_code == 403
    for _ in range(web_auth.THROTTLE_FAILURES):
        assert client.post("/login", data={"password": "guess"}).status_code == 401
    assert client.post("/login", data={"password": PASSWORD}).status_code == 429  # even the right one, for now


def test_proxy_header_mode(corpus_db: ReportDB) -> None:
    client = TestClient(create_app(corpus_db, auth=AuthSettings(proxy_header="X-Remote-User",
                                                               proxy_from=["127.0.0.1/32"],
                                                               allowed_hosts=["testserver"])),
                        follow_redirects=False)
    # TestClient's client address is "testclient", not an IP: never a trusted proxy
    assert client.get("/", headers={"x-remote-user": "alice"}).status_code == 401
    app = create_app(corpus_db, auth=AuthSettings(proxy_header="X-Remote-User", proxy_from=["127.0.0.1/32"],
                                                  allowed_hosts=["testserver"]))

    def call(headers: dict[str, str], client_address: str) -> int:
        import asyncio

        scope = {"type": "http", "method": "GET", "path": "/", "raw_path": b"/", "query_string": b"",
                 "headers": [(k.encode(), v.encode()) for k, v in {"host": "testserver", **headers}.items()],
                 "client": (client_address, 50000), "server": ("testserver", 80), "scheme": "http",
                 "root_path": "", "http_version": "1.1", "asgi": {"version": "3.0"}}
        status: list[int] = []

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status.append(message["status"])

        asyncio.run(app(scope, receive, send))
        return status[0]

    assert call({"x-remote-user": "alice"}, "127.0.0.1") == 200
    assert call({}, "127.0.0.1") == 401  # no header: the proxy did not authenticate
    assert call({"x-remote-user": "alice"}, "192.0.2.7") == 401  # around the proxy: the header is not believed
    assert call({"x-remote-user": " "}, "127.0.0.1") == 401


def test_metrics_bearer_token(corpus_db: ReportDB) -> None:
    client = auth_client(corpus_db, metrics_token="m" * 24)
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", headers={"authorization": "Bearer wrong"}).status_code == 401
    assert client.get("/metrics", headers={"authorization": "Bearer " + "m" * 24}).status_code == 200
    assert client.get("/", headers={"authorization": "Bearer " + "m" * 24}).status_code == 303  # metrics only


@pytest.mark.parametrize("host,allowed", [
    ("testserver", True), ("localhost:8025", True), ("127.0.0.1:8025", True), ("[::1]:8025", True),
    ("192.0.2.1", True), ("dash.example", True), ("DASH.EXAMPLE.:443", True), ("a.b.corp.example", True),
    ("attacker.example", False), ("corp.example", False), ("dash.example.attacker.example", False), ("", False),
])
def test_host_check_refuses_foreign_names_dns_rebinding(corpus_db: ReportDB, host: str, allowed: bool) -> None:
    app = create_app(corpus_db, auth=AuthSettings(listen_host="dash.example", allowed_hosts=["*.corp.example",
                                                                                          "testserver"]))
    client = TestClient(app)
    response = client.get("/", headers={"host": host})
    assert (response.status_code == 200) is allowed, response.text
    if not allowed:
        assert response.status_code == 400 and "content-security-policy" in response.headers
    # /healthz and POST /tlsrpt answer whatever the name: probes and reporters use their own
    assert client.get("/healthz", headers={"host": "attacker.example"}).status_code == 200


def test_exposure_warning_only_for_non_loopback_without_login() -> None:
    from mxsec.reports.web.server import exposure_warning, is_loopback

    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost") and is_loopback("127.8.0.1")
    assert not is_loopback("0.0.0.0") and not is_loopback("::") and not is_loopback("192.0.2.1")
    assert exposure_warning("127.0.0.1", 8025, None) is None
    warning = exposure_warning("0.0.0.0", 8025, AuthSettings())
    assert warning and warning.startswith("mxsec: warning: ") and "0.0.0.0:8025" in warning and "\n" not in warning
    assert "[::]:8025" in (exposure_warning("::", 8025, None) or "")
    assert exposure_warning("0.0.0.0", 8025, AuthSettings(password_hash=PASSWORD_HASH)) is None
    assert exposure_warning("0.0.0.0", 8025, AuthSettings(proxy_header="X-Remote-User")) is None


def test_reports_config_keys_for_the_dashboard() -> None:
    from mxsec.config import config_from_dict

    config = config_from_dict({"reports": {"password_hash": PASSWORD_HASH, "allowed_hosts": ["dash.example"],
                                           "max_connections": 50, "header_timeout": 5, "body_timeout": 30}})
    settings = config.reports.dashboard_auth()
    assert settings.mode == "password" and settings.allowed_hosts == ["dash.example"]
    assert config.reports.header_timeout == 5.0 and config.reports.max_connections == 50
    for bad, message in [({"password_hash": "x"}, "reports.password_hash"),
                         ({"max_connections": 0}, "reports.max_connections"),
                         ({"header_timeout": 0}, "reports.header_timeout"),
                         ({"allowed_hosts": ["a b"]}, "reports.allowed_hosts"),
                         ({"auth_proxy_header": "X User"}, "reports.auth_proxy_header"),
                         ({"auth_proxy_from": ["nowhere"]}, "reports.auth_proxy_from"),
                         ({"session_secret": "short"}, "reports.session_secret"),
                         ({"password_hash": PASSWORD_HASH, "auth_proxy_header": "X-User"}, "not both")]:
        with pytest.raises(ConfigError, match=message):
            config_from_dict({"reports": bad})


def test_hash_password_command() -> None:
    from click.testing import CliRunner

    from mxsec.cli import main as cli

    result = CliRunner().invoke(cli, ["reports", "hash-password"], input=PASSWORD + "\n")
    assert result.exit_code == 0, result.output
    line = result.output.strip()
    assert verify_password(PASSWORD, line) and not verify_password("other", line)
    short = CliRunner().invoke(cli, ["reports", "hash-password"], input="short\n")
    assert short.exit_code == 2 and "at least 8 characters" in short.output
