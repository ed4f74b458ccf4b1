"""The Lambda's parsing core, without AWS: the data contract case by case."""

from __future__ import annotations

import oracle
import pytest

from csv_pipeline import parsing
from csv_pipeline.parsing import (
    COLUMN_NAME_TOO_LONG,
    CSV_SYNTAX,
    DUPLICATE_COLUMN,
    EMPTY_COLUMN,
    FIELD_COUNT,
    FILE_ERROR_CODES,
    HEADER_TOO_LARGE,
    ITEM_TOO_LARGE,
    MAX_ATTRIBUTE_NAME_BYTES,
    MAX_ITEM_BYTES,
    NO_HEADER,
    NOT_UTF8,
    REJECTION_CODES,
    RESERVED_COLUMN,
    FileRejected,
    Record,
    Rejection,
    item_size,
    parse_bytes,
    to_item,
)

SOURCE = "bucket/key.csv"


def values(outcomes: list) -> list[dict]:
    """Accepted records as {column: python value} without the key attributes."""
    out = []
    for o in outcomes:
        assert isinstance(o, Record), o
        out.append(
            {
                k: (None if "NULL" in v else v["S"])
                for k, v in o.item.items()
                if k not in ("source", "row")
            }
        )
    return out


def test_blanks_become_null_and_values_keep_their_text() -> None:
    columns, outcomes = parse_bytes(b"name,age,zip\nAnn,,007\n", SOURCE)
    assert columns == ["name", "age", "zip"]
    assert values(outcomes) == [{"name": "Ann", "age": None, "zip": "007"}]


def test_items_carry_the_key_and_one_based_record_numbers() -> None:
    _, outcomes = parse_bytes(b"a\nx\ny\n", SOURCE)
    assert [o.item["row"] for o in outcomes] == [{"N": "1"}, {"N": "2"}]
    assert all(o.item["source"] == {"S": SOURCE} for o in outcomes)


def test_quoting_round_trips_commas_newlines_and_escaped_quotes() -> None:
    data = b'a,b\r\n"x, y","line1\r\nline2"\r\n"say ""hi""",\n'
    _, outcomes = parse_bytes(data, SOURCE)
    assert values(outcomes) == [
        {"a": "x, y", "b": "line1\r\nline2"},
        {"a": 'say "hi"', "b": None},
    ]


def test_records_are_counted_not_physical_lines() -> None:
    _, outcomes = parse_bytes(b'a\n"multi\nline"\nnext\n', SOURCE)
    assert [o.row for o in outcomes] == [1, 2]


def test_completely_empty_lines_are_not_records() -> None:
    _, outcomes = parse_bytes(b"\n\na,b\n\n1,2\n\n\n3,4\n", SOURCE)
    assert [o.row for o in outcomes] == [1, 2]
    assert values(outcomes) == [{"a": "1", "b": "2"}, {"a": "3", "b": "4"}]


def test_utf8_bom_is_stripped_from_the_first_column() -> None:
    columns, _ = parse_bytes("\ufeffname,city\nA,B\n".encode(), SOURCE)
    assert columns == ["name", "city"]


def test_unicode_and_whitespace_survive_unchanged() -> None:
    text = "naïve,𝔘\n  ,日本語 \n"
    columns, outcomes = parse_bytes(text.encode(), SOURCE)
    assert columns == ["naïve", "𝔘"]
    assert values(outcomes) == [{"naïve": "  ", "𝔘": "日本語 "}]


def test_no_trailing_newline_still_yields_the_last_record() -> None:
    _, outcomes = parse_bytes(b"a,b\n1,2", SOURCE)
    assert values(outcomes) == [{"a": "1", "b": "2"}]


def test_header_only_has_no_records() -> None:
    columns, outcomes = parse_bytes(b"a,b\n", SOURCE)
    assert columns == ["a", "b"] and outcomes == []


def test_ragged_records_are_rejected_row_by_row() -> None:
    _, outcomes = parse_bytes(b"a,b\n1\n1,2\n1,2,3\n", SOURCE)
    assert outcomes[0] == Rejection(1, FIELD_COUNT, "has 1 fields, header has 2")
    assert isinstance(outcomes[1], Record) and outcomes[1].row == 2
    assert outcomes[2] == Rejection(3, FIELD_COUNT, "has 3 fields, header has 2")


def test_oversized_items_are_rejected_row_by_row() -> None:
    big = "x" * MAX_ITEM_BYTES
    _, outcomes = parse_bytes(f"a\n{big}\nsmall\n".encode(), SOURCE)
    assert isinstance(outcomes[0], Rejection) and outcomes[0].code == ITEM_TOO_LARGE
    assert "over DynamoDB's 409600-byte limit" in outcomes[0].reason
    assert isinstance(outcomes[1], Record)


def test_item_size_counts_utf8_bytes_of_names_and_values() -> None:
    item = to_item("s", 1, ["é", "b"], ["日本", ""])
    # source(6)+s(1) + row(3)+"1"(2) + é(2)+日本(6) + b(1)+NULL(1)
    assert item_size(item) == 7 + 5 + 8 + 2


@pytest.mark.parametrize(
    ("data", "code", "message"),
    [
        (b"", NO_HEADER, "empty"),
        (b"\n\n", NO_HEADER, "empty"),
        (b"\xef\xbb\xbf", NO_HEADER, "empty"),
        (b"a,b\n\xff\xfe\n", NOT_UTF8, "not valid UTF-8: byte 0xff .* line 2"),
        (b"a,,b\n1,2,3\n", EMPTY_COLUMN, "empty column"),
        (b"a,b,a\n1,2,3\n", DUPLICATE_COLUMN, "duplicate column"),
        (b"name,source\nx,y\n", RESERVED_COLUMN, "reserved column"),
        (b"row\n1\n", RESERVED_COLUMN, "reserved column"),
        (b'a,b\n"x"y,2\n', CSV_SYNTAX, "CSV syntax error in record 1"),
        (b'a,b\n1,2\n"unterminated,3\n', CSV_SYNTAX, "CSV syntax error in record 2"),
    ],
)
def test_file_level_failures_have_a_code_and_a_clear_reason(
    data: bytes, code: str, message: str
) -> None:
    with pytest.raises(FileRejected, match=message) as failure:
        parse_bytes(data, SOURCE)
    assert failure.value.code == code


def test_invalid_utf8_late_in_the_file_is_still_a_file_failure() -> None:
    data = b"a\n" + b"ok\n" * 5000 + b"\xc3\x28\n"
    with pytest.raises(FileRejected, match="not valid UTF-8") as failure:
        parse_bytes(data, SOURCE)
    assert failure.value.code == NOT_UTF8


def test_codes_are_the_documented_ones_and_the_oracle_uses_the_same() -> None:
    assert {FIELD_COUNT, ITEM_TOO_LARGE} == REJECTION_CODES == oracle.REJECTION_CODES
    assert FILE_ERROR_CODES == oracle.FILE_ERROR_CODES
    assert all(getattr(parsing, code) == code for code in FILE_ERROR_CODES | REJECTION_CODES)


def test_file_rejected_keeps_the_code_apart_from_the_message() -> None:
    error = FileRejected(CSV_SYNTAX, "CSV syntax error in record 1 (line 2): x")
    assert (error.code, str(error)) == (CSV_SYNTAX, "CSV syntax error in record 1 (line 2): x")
    assert error.args == (CSV_SYNTAX, str(error))


# -- header sizes ---------------------------------------------------------------------------


def test_a_column_name_over_dynamodbs_limit_fails_the_file_naming_it() -> None:
    name = "é" * (MAX_ATTRIBUTE_NAME_BYTES // 2) + "x"  # 65,535 bytes: the most allowed
    columns, _ = parse_bytes(f"a,{name}\n1,2\n".encode(), SOURCE)
    assert columns == ["a", name]
    with pytest.raises(FileRejected, match="column 2's name is 65536 bytes") as failure:
        parse_bytes(f"a,{name}x\n1,2\n".encode(), SOURCE)
    assert failure.value.code == COLUMN_NAME_TOO_LONG


def test_a_header_whose_names_overflow_the_manifest_item_fails_the_file() -> None:
    # 3 bytes for the list, then each name's bytes plus 1: exactly the room left.
    room = MAX_ITEM_BYTES - 10 * 1024 - 3
    names = [f"{i:05d}" + "n" * 994 for i in range(room // 1000)]
    names.append("z" * (room - 1000 * len(names) - 1))
    header = ",".join(names).encode()
    columns, _ = parse_bytes(header + b"\n", SOURCE)
    assert columns == names
    with pytest.raises(FileRejected, match="column names take") as failure:
        parse_bytes(header + b"z\n", SOURCE)
    assert failure.value.code == HEADER_TOO_LARGE
