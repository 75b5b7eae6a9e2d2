"""mxsec.sts.record: the _mta-sts TXT record (RFC 8461 §3.1; STS-A-*, EC-11..EC-14)."""

from __future__ import annotations

import pytest

from mxsec.errors import ParseError
from mxsec.sts.record import (
    MAX_RECORD_CHARS,
    RecordError,
    RecordSelection,
    StsRecord,
    format_record,
    is_valid_id,
    parse_record,
    select_record,
)


def test_sts_a_2_a_6_minimal_record() -> None:
    assert parse_record("v=STSv1; id=20160831085700Z") == StsRecord(id="20160831085700Z", extensions=(), warnings=())


def test_sts_a_2_non_ascii_rejected() -> None:
    with pytest.raises(RecordError, match="U-00E9|U\\+00E9"):
        parse_record("v=STSv1; id=abc; note=caf\u00e9")


def test_sts_a_2_control_characters_rejected() -> None:
    with pytest.raises(RecordError, match="U\\+000A"):
        parse_record("v=STSv1; id=abc\n")
    with pytest.raises(RecordError, match="U\\+0000"):
        parse_record("v=STSv1; id=a\x00b")


def test_sts_a_3_version_must_come_first() -> None:
    with pytest.raises(RecordError, match="begin"):
        parse_record("id=abc; v=STSv1")
    with pytest.raises(RecordError, match="begin"):
        parse_record(" v=STSv1; id=abc")


def test_sts_a_3_version_is_case_sensitive() -> None:
    for text in ("v=stsv1; id=abc", "V=STSv1; id=abc", "v=STSV1; id=abc"):
        with pytest.raises(RecordError, match="begin"):
            parse_record(text)


def test_sts_a_3_version_must_be_followed_by_delimiter() -> None:
    with pytest.raises(RecordError, match="followed by"):
        parse_record("v=STSv10; id=abc")
    with pytest.raises(RecordError, match="followed by"):
        parse_record("v=STSv1 id=abc")


def test_sts_a_3_field_order_after_version_is_free() -> None:
    record = parse_record("v=STSv1; ext=1; id=abc")
    assert record.id == "abc"
    assert record.extensions == (("ext", "1"),)


def test_sts_a_4_id_required() -> None:
    with pytest.raises(RecordError, match="no id"):
        parse_record("v=STSv1; ext=1")
    with pytest.raises(RecordError, match="no id"):
        parse_record("v=STSv1;")
    with pytest.raises(RecordError, match="no id"):
        parse_record("v=STSv1")


def test_sts_a_4_id_kept_exactly_for_inequality_comparison() -> None:
    assert parse_record("v=STSv1; id=AbC123").id == "AbC123"
    assert parse_record("v=STSv1; id=AbC123") != parse_record("v=STSv1; id=abc123")


def test_sts_a_4_ec_17_field_names_case_sensitive() -> None:
    with pytest.raises(RecordError, match="case-sensitive"):
        parse_record("v=STSv1; ID=abc")


@pytest.mark.parametrize("bad_id", ["a+b", "abc=", "a/b", "a-b", "a.b", "a_b", "x" * 33, ""])
def test_sts_a_5_ec_14_invalid_id_makes_record_invalid(bad_id: str) -> None:
    with pytest.raises(RecordError, match="invalid id"):
        parse_record(f"v=STSv1; id={bad_id}")
    assert is_valid_id(bad_id) is False


def test_sts_a_5_id_boundaries() -> None:
    assert parse_record("v=STSv1; id=" + "Z9" * 16).id == "Z9" * 16
    assert parse_record("v=STSv1; id=0").id == "0"
    assert is_valid_id("x" * 32) is True
    assert is_valid_id("x" * 32 + "\n") is False
    assert is_valid_id("\u0661") is False  # Arabic-Indic digit one is not ASCII DIGIT


def test_sts_a_6_delimiter_whitespace_and_trailing_delimiter() -> None:
    assert parse_record("v=STSv1;id=abc").id == "abc"
    assert parse_record("v=STSv1 \t;\t id=abc \t; \t").id == "abc"
    assert parse_record("v=STSv1; id=abc;").id == "abc"
    assert parse_record("v=STSv1; id=abc ; x=1").extensions == (("x", "1"),)


def test_sts_a_6_empty_field_rejected() -> None:
    with pytest.raises(RecordError, match="empty field"):
        parse_record("v=STSv1;; id=abc")
    with pytest.raises(RecordError, match="empty field"):
        parse_record("v=STSv1; id=abc;;")


def test_sts_a_6_whitespace_after_last_field_without_delimiter_rejected() -> None:
    with pytest.raises(RecordError, match="whitespace after the last field"):
        parse_record("v=STSv1; id=abc ")


def test_sts_a_6_whitespace_inside_field_rejected() -> None:
    with pytest.raises(RecordError):
        parse_record("v=STSv1; id = abc")
    with pytest.raises(RecordError):
        parse_record("v=STSv1; id=abc def")


def test_sts_a_7_extension_syntax() -> None:
    record = parse_record("v=STSv1; id=1; a.b_c-d=x!y~z:\"; Z9=[]")
    assert record.extensions == (("a.b_c-d", 'x!y~z:"'), ("Z9", "[]"))
    name32 = "n" + "x" * 31
    assert parse_record(f"v=STSv1; id=1; {name32}=v").extensions == ((name32, "v"),)


@pytest.mark.parametrize(
    "field",
    ["_x=1", "-x=1", ".x=1", "n" + "x" * 32 + "=1", "x=", "x=a=b", "x", "=1", "x=a b"],
)
def test_sts_a_7_invalid_extension_rejected(field: str) -> None:
    with pytest.raises(RecordError):
        parse_record(f"v=STSv1; id=1; {field}")


def test_sts_a_11_ec_11_record_joined_from_pieces_parses() -> None:
    pieces = ["v=STSv1; ", "id=2024", "0101"]
    record = parse_record("".join(pieces))
    assert record.id == "20240101"
    selection = select_record(["".join(pieces)])
    assert selection.record is not None and selection.record.id == "20240101"


def test_sts_a_11_ec_11_pieces_joined_with_spaces_would_differ() -> None:
    # If a DNS layer wrongly joined with a space, the id would be cut: that must not parse as the same id.
    with pytest.raises(RecordError):
        parse_record("v=STSv1; id=2024 0101")


def test_sts_a_13_unknown_fields_accepted() -> None:
    record = parse_record("v=STSv1; id=abc; future=thing; other=1")
    assert record.id == "abc"
    assert record.extensions == (("future", "thing"), ("other", "1"))
    assert record.warnings == ()


def test_sts_a_17_duplicate_fields_first_wins_with_warning() -> None:
    record = parse_record("v=STSv1; id=first; x=1; id=second; x=2")
    assert record.id == "first"
    assert record.extensions == (("x", "1"),)
    assert len(record.warnings) == 2
    assert "'id'" in record.warnings[0] and "'x'" in record.warnings[1]


def test_sts_a_17_duplicate_version_field_ignored_with_warning() -> None:
    record = parse_record("v=STSv1; id=1; v=STSv2")
    assert record.id == "1"
    assert record.extensions == ()
    assert record.warnings == ("duplicate field 'v' ignored (the first one is used)",)


def test_sts_a_17_duplicate_id_must_still_be_valid() -> None:
    with pytest.raises(RecordError, match="invalid id"):
        parse_record("v=STSv1; id=ok; id=not+ok")


def test_sts_a_2_input_length_capped() -> None:
    text = "v=STSv1; id=1; x=" + "a" * MAX_RECORD_CHARS
    with pytest.raises(RecordError, match="longer than 4096"):
        parse_record(text)


def test_sts_a_9_record_error_has_no_result_type() -> None:
    assert issubclass(RecordError, ParseError)
    with pytest.raises(RecordError) as info:
        parse_record("nonsense")
    assert info.value.result_type is None


def test_sts_a_9_non_string_is_record_error() -> None:
    with pytest.raises(RecordError):
        parse_record(b"v=STSv1; id=1")  # type: ignore[arg-type]


# --- select_record ---------------------------------------------------------------------------------


def test_sts_a_8_unrelated_records_discarded() -> None:
    selection = select_record(["v=spf1 -all", "google-site-verification=xyz", "v=STSv1; id=abc"])
    assert selection == RecordSelection(StsRecord(id="abc"), None)


def test_sts_a_8_similar_prefix_is_not_sts() -> None:
    selection = select_record(["v=STSv10; id=abc", "v=STSv1; id=real"])
    assert selection.record == StsRecord(id="real")
    assert select_record(["v=STSv10; id=abc"]) == RecordSelection(None, "no-record")


def test_sts_a_9_no_record() -> None:
    assert select_record([]) == RecordSelection(None, "no-record")
    assert select_record(["v=spf1 -all"]) == RecordSelection(None, "no-record")


def test_sts_a_9_ec_12_several_sts_records_mean_no_policy() -> None:
    selection = select_record(["v=STSv1; id=a", "v=STSv1; id=b", "unrelated"])
    assert selection == RecordSelection(None, "several-records")


def test_sts_a_9_ec_12_several_records_even_if_one_invalid() -> None:
    assert select_record(["v=STSv1; id=a", "v=STSv1; id=bad+id"]).problem == "several-records"


def test_sts_a_9_ec_14_single_invalid_record() -> None:
    selection = select_record(["v=STSv1; id=abc+="])
    assert selection.record is None
    assert selection.problem is not None
    assert selection.problem.startswith("invalid: ")
    assert "invalid id" in selection.problem


def test_sts_a_9_version_without_fields_is_an_invalid_sts_record() -> None:
    assert select_record(["v=STSv1"]).problem == "invalid: record has no id field"
    assert select_record(["v=STSv1 id=1"]).problem == 'invalid: "v=STSv1" must be followed by ";"'


def test_ec_13_space_before_first_semicolon_accepted_alone() -> None:
    selection = select_record(["v=STSv1 ;id=1234"])
    assert selection == RecordSelection(StsRecord(id="1234"), None)


def test_ec_13_space_before_semicolon_counts_when_filtering() -> None:
    # Erratum 6285, mox approach: it is an STS record, so two of them means no policy.
    assert select_record(["v=STSv1 ; id=1", "v=STSv1; id=2"]).problem == "several-records"
    assert select_record(["v=STSv1 ; id=1", "v=spf1 -all"]).record == StsRecord(id="1")


def test_sts_a_9_non_string_entries_ignored() -> None:
    assert select_record([None, b"v=STSv1; id=1", "v=STSv1; id=2"]).record == StsRecord(id="2")  # type: ignore[list-item]


def test_sts_a_17_selection_keeps_record_warnings() -> None:
    selection = select_record(["v=STSv1; id=1; id=2"])
    assert selection.record is not None
    assert selection.record.warnings == ("duplicate field 'id' ignored (the first one is used)",)


# --- generator -------------------------------------------------------------------------------------


def test_sts_a_5_format_record_canonical() -> None:
    assert format_record("20240101") == "v=STSv1; id=20240101"
    assert format_record("abc", [("ext", "v1"), ("x.y", "2")]) == "v=STSv1; id=abc; ext=v1; x.y=2"


def test_sts_a_5_format_record_round_trips() -> None:
    text = format_record("Abc123", [("ext", "v1")])
    assert parse_record(text) == StsRecord(id="Abc123", extensions=(("ext", "v1"),))


@pytest.mark.parametrize("bad_id", ["", "a+b", "x" * 33, "ab cd"])
def test_sts_a_5_ec_14_format_record_rejects_bad_id(bad_id: str) -> None:
    with pytest.raises(RecordError, match="invalid id"):
        format_record(bad_id)


def test_sts_a_7_format_record_rejects_bad_extensions() -> None:
    with pytest.raises(RecordError, match="field name"):
        format_record("a", [("_x", "1")])
    with pytest.raises(RecordError, match="value"):
        format_record("a", [("x", "a;b")])
    with pytest.raises(RecordError, match="duplicate"):
        format_record("a", [("id", "b")])
    with pytest.raises(RecordError, match="duplicate"):
        format_record("a", [("x", "1"), ("x", "2")])
