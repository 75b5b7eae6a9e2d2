"""The findings catalogue of `mxsec check`, docs/check.md and the requirement list agree.

* every code of ``mxsec.check.findings.CATALOGUE`` has a row in the table of docs/check.md and every row a code;
* the row's severity, RFC 8460 result type and requirement equal the catalogue's;
* every result type is an RFC 8460 name (``mxsec.results.ResultType``);
* every requirement ID exists in the requirement catalogue, ``docs/reference/requirements.md``.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from mxsec.check.findings import CATALOGUE, ERROR, INFO, WARNING, finding
from mxsec.results import ResultType

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "check.md"
REQUIREMENTS = ROOT / "docs" / "reference" / "requirements.md"
NONE = "—"


def doc_rows() -> dict[str, dict[str, str | None]]:
    """``code -> {severity, result_type, requirement, meaning, fix}`` from the table under "Every finding"."""
    text = DOC.read_text(encoding="utf-8")
    section = text.split("\n## Every finding", 1)
    assert len(section) == 2, "docs/check.md has no '## Every finding' section"
    rows: dict[str, dict[str, str | None]] = {}
    for line in section[1].splitlines():
        if not line.startswith("| `"):
            continue
        cells = [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]
        assert len(cells) == 6, f"a catalogue row needs 6 cells: {line}"
        code, severity, result_type, requirement, meaning, fix = cells
        code = code.strip("`")
        assert code not in rows, f"{code} listed twice in docs/check.md"
        rows[code] = {"severity": severity, "result_type": None if result_type == NONE else result_type.strip("`"),
                      "requirement": None if requirement == NONE else requirement, "meaning": meaning, "fix": fix}
    return rows


def requirement_ids() -> set[str]:
    text = REQUIREMENTS.read_text(encoding="utf-8")
    return set(re.findall(r"^\| ((?:STS-[A-G]|DANE-H|RPT-I)-\d+|EC-\d+) \|", text, flags=re.MULTILINE))


def test_every_catalogue_code_is_documented_and_every_documented_code_exists() -> None:
    rows = doc_rows()
    assert sorted(set(CATALOGUE) - set(rows)) == [], "codes missing from docs/check.md"
    assert sorted(set(rows) - set(CATALOGUE)) == [], "docs/check.md lists codes the catalogue does not have"


@pytest.mark.parametrize("code", sorted(CATALOGUE))
def test_documented_row_matches_the_catalogue(code: str) -> None:
    row = doc_rows().get(code)
    assert row is not None, f"{code} missing from docs/check.md"
    spec = CATALOGUE[code]
    assert row["severity"] == spec.severity
    assert row["result_type"] == spec.result_type
    assert row["requirement"] == spec.requirement
    assert row["meaning"] and row["fix"]


@pytest.mark.parametrize("code", sorted(CATALOGUE))
def test_catalogue_entry_is_well_formed(code: str) -> None:
    spec = CATALOGUE[code]
    assert re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)+", code)
    assert code.split("-", 1)[0] in {"mx", "dnssec", "check", "sts", "smtp", "dane", "tlsrpt"}
    assert spec.severity in (ERROR, WARNING, INFO)
    assert spec.result_type is None or spec.result_type in {r.value for r in ResultType}
    assert spec.title and spec.fix.endswith(".")
    made = finding(code, "message", "subject")
    assert (made.severity, made.result_type, made.requirement, made.fix) == (
        spec.severity, spec.result_type, spec.requirement, spec.fix)
    assert finding(code, "m", severity="warning").severity == "warning"


def test_every_requirement_id_exists() -> None:
    known = requirement_ids()
    assert len(known) > 100  # the file was really read
    used = {spec.requirement for spec in CATALOGUE.values() if spec.requirement}
    assert sorted(used - known) == [], "requirement IDs not in docs/reference/requirements.md"


def test_every_result_type_is_an_rfc_8460_name() -> None:
    names = {r.value for r in ResultType}
    used = {spec.result_type for spec in CATALOGUE.values() if spec.result_type}
    assert used <= names, sorted(used - names)
    # the failures a sender can hit on its own are all represented
    assert {"starttls-not-supported", "certificate-expired", "certificate-host-mismatch", "certificate-not-trusted",
            "validation-failure", "tlsa-invalid", "dnssec-invalid", "sts-policy-fetch-error", "sts-policy-invalid",
            "sts-webpki-invalid"} <= used


def test_the_doc_table_has_a_header() -> None:
    text = DOC.read_text(encoding="utf-8")
    assert "| code | severity | RFC 8460 result type | requirement | meaning | fix |" in text
