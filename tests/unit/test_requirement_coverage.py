"""docs/requirements.md and the test names agree: every STS-A..F, DANE-H and RPT-I requirement and every edge case
EC-n of the requirement catalogue (docs/reference/requirements.md) is proven or explained."""

import re
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CATALOGUE = ROOT / "docs" / "reference" / "requirements.md"
#: the catalogue rows whose IDs must be tested or explained: MTA-STS sections A-F, DANE-H, RPT-I and the edge cases
COVERED_ROW = re.compile(r"^\| (STS-[A-F]-\d+|DANE-H-\d+|RPT-I-\d+|EC-\d+) \|", re.M)


def _all_ids() -> set[str]:
    return set(COVERED_ROW.findall(CATALOGUE.read_text(encoding="utf-8")))


def _tested_ids() -> set[str]:
    names = set()
    for path in (ROOT / "tests").rglob("test_*.py"):
        names |= set(re.findall(r"def (test_\w+)", path.read_text()))
    found = set()
    for name in names:
        for sec, num in re.findall(r"sts_([a-f])_(\d+)_", name):
            found.add(f"STS-{sec.upper()}-{num}")
        for num in re.findall(r"ec_(\d+)_", name):
            found.add(f"EC-{num}")
        for num in re.findall(r"dane_h_(\d+)_", name):
            found.add(f"DANE-H-{num}")
        # RPT-I tests may name several IDs: test_rpt_i_26_27_35_file_name
        for numbers in re.findall(r"rpt_i_((?:\d+_)+)", name):
            found.update(f"RPT-I-{num}" for num in numbers.strip("_").split("_"))
    return found


def _documented_gaps() -> set[str]:
    text = (ROOT / "docs" / "requirements.md").read_text()
    return set(re.findall(r"^\| (STS-[A-F]-\d+|DANE-H-\d+|RPT-I-\d+|EC-\d+) \|", text, flags=re.M))


def test_every_requirement_is_tested_or_explained():
    missing = _all_ids() - _tested_ids() - _documented_gaps()
    assert not missing, f"neither tested nor explained in docs/requirements.md: {sorted(missing)}"


def test_explained_gaps_are_really_untested():
    both = _documented_gaps() & _tested_ids()
    assert not both, f"tested now, remove from docs/requirements.md: {sorted(both)}"


def test_catalogue_ids_are_numbered_without_gaps():
    """Each group (STS-A … STS-F, DANE-H, EC) runs from 1 to its count, each ID once: the file was read whole."""
    rows = COVERED_ROW.findall(CATALOGUE.read_text(encoding="utf-8"))
    assert len(rows) == len(set(rows)), "an ID is listed twice in docs/reference/requirements.md"
    groups: dict[str, set[int]] = defaultdict(set)
    for rid in rows:
        prefix, num = rid.rsplit("-", 1)
        groups[prefix].add(int(num))
    assert sorted(groups) == ["DANE-H", "EC", "RPT-I", "STS-A", "STS-B", "STS-C", "STS-D", "STS-E", "STS-F"]
    for prefix, nums in groups.items():
        assert nums == set(range(1, max(nums) + 1)), f"{prefix} IDs have gaps"


def test_explained_ids_exist_in_the_catalogue():
    unknown = _documented_gaps() - _all_ids()
    assert not unknown, f"docs/requirements.md explains IDs the catalogue does not have: {sorted(unknown)}"
