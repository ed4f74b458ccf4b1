"""The Lambda's parsing core, without AWS: the data contract case by case."""

from __future__ import annotations

import io
import sys

import pytest

from csv_pipeline import parsing
from csv_pipeline.parsing import (
    COLUMN_NAME_TOO_LONG,
    CSV_SYNTAX,
    DUPLICATE_COLUMN,
    EMPTY_COLUMN,
    FIELD_COUNT,
    FILE_ERROR_CODES,
    HEADER_LIMIT,
    HEADER_TOO_LARGE,
    ITEM_TOO_LARGE,
    MAX_ATTRIBUTE_NAME_BYTES,
    MAX_ITEM_BYTES,
    NO_HEADER,
    NOT_UTF8,
    REJECTION_CODES,
    RESERVED_COLUMN,
    CsvDocument,
    FileRejected,
    LineReader,
    Outcome,
    Record,
    Rejection,
    item_size,
    parse_bytes,
    record_limit_for,
    to_item,
)
from csv_pipeline_harness.contract import oracle

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


# -- header limits ---------------------------------------------------------------------------


def test_a_column_name_over_dynamodbs_limit_fails_the_file_naming_it() -> None:
    name = "é" * (MAX_ATTRIBUTE_NAME_BYTES // 2) + "x"  # 65,535 bytes: the most allowed
    columns, _ = parse_bytes(f"a,{name}\n1,2\n".encode(), SOURCE)
    assert columns == ["a", name]
    with pytest.raises(FileRejected, match="column 2's name is 65536 bytes") as failure:
        parse_bytes(f"a,{name}x\n1,2\n".encode(), SOURCE)
    assert failure.value.code == COLUMN_NAME_TOO_LONG


@pytest.mark.parametrize(
    ("header", "message"),
    [
        (b"a,,b,", "header has empty column name(s) at position(s) [2, 4]"),
        (b"," * 200_000, "position(s) [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, ... (200001 in all)]"),
        (b"b,a,b,a,b", "header has duplicate column name(s) ['b', 'a']"),
        (b"x" * 99 + b"," + b"x" * 99, "name(s) ['" + "x" * 60 + "...']"),
        (b",".join(b"%d,%d" % (i, i) for i in range(20_000)), "'9', ... (20000 in all)]"),
    ],
)
def test_header_errors_stay_short_enough_for_the_manifest(header: bytes, message: str) -> None:
    with pytest.raises(FileRejected) as failure:
        parse_bytes(header + b"\n", SOURCE)
    assert message in str(failure.value) and len(str(failure.value)) < 1000


def test_a_headers_size_problems_are_reported_before_its_names_problems() -> None:
    data = f"a,,{'n' * 70_000},a\n".encode()
    with pytest.raises(FileRejected) as failure:
        parse_bytes(data, SOURCE)
    assert failure.value.code == COLUMN_NAME_TOO_LONG
    assert oracle.header_failure(oracle.Document(("a", "", "n" * 70_000, "a"), ())) == (
        oracle.ExpectedFailure(COLUMN_NAME_TOO_LONG, "column 3's name")
    )


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


def test_the_header_limit_lets_the_longest_spelling_of_a_fitting_header_through() -> None:
    """Every name a quote, doubled, in quotes: 5 bytes of CSV for 2 bytes in the manifest."""
    count = (MAX_ITEM_BYTES - 10 * 1024 - 3) // 2  # as many names as the manifest takes
    header = b",".join([b'""""'] * count) + b"\r\n"
    assert 2 * MAX_ITEM_BYTES < len(header) <= HEADER_LIMIT
    with pytest.raises(FileRejected) as failure:
        parse_bytes(header, SOURCE)
    assert failure.value.code == DUPLICATE_COLUMN  # read and checked, not cut short


@pytest.mark.parametrize("limit", [1, 5, 9, 10, 100])
def test_a_header_over_the_header_limit_fails_the_file_unread(limit: int) -> None:
    data = b"\n\nname,city\nA,B\n"  # the header is 10 bytes; blank lines before it don't count
    lines = LineReader(io.BytesIO(data), chunk_size=3)
    if limit >= 10:
        assert CsvDocument(lines, SOURCE, header_limit=limit).columns == ["name", "city"]
        return
    with pytest.raises(FileRejected, match=f"header is over {limit} bytes") as failure:
        CsvDocument(lines, SOURCE, header_limit=limit)
    assert failure.value.code == HEADER_TOO_LARGE
    assert lines.offset <= 2 + limit  # never handed out past the limit


# -- records over the limit --------------------------------------------------------------------


def outcomes_of(
    data: bytes, chunk_size: int = 7, **limits: int
) -> tuple[list[Outcome], str | None, str | None]:
    """(outcomes, error code, error message) of a parse, without the header limit by default."""
    out: list[Outcome] = []
    try:
        limits.setdefault("header_limit", sys.maxsize)
        lines = LineReader(io.BytesIO(data), chunk_size=chunk_size)
        for outcome in CsvDocument(lines, SOURCE, **limits):
            out.append(outcome)
    except FileRejected as exc:
        return out, exc.code, str(exc)
    return out, None, None


@pytest.mark.parametrize("width", [1, 3, 10])
def test_the_record_limit_never_rejects_a_record_that_fits_an_item(width: int) -> None:
    """The longest CSV text of a record whose values fit is within the limit, barely."""
    columns = [f"c{i}" for i in range(width)]
    # Every value character a quote, doubled, in quoted fields, CRLF: 2v + 3n + 1 bytes.
    base, more = divmod(MAX_ITEM_BYTES, width)
    values = ['"' * (base + (i < more)) for i in range(width)]
    record = ",".join('"' + v.replace('"', '""') + '"' for v in values) + "\r\n"
    assert len(record) == 2 * MAX_ITEM_BYTES + 3 * width + 1
    assert record_limit_for(columns) - 16 < len(record) <= record_limit_for(columns)
    header = ",".join(columns) + "\n"
    (outcome,), _, _ = outcomes_of((header + record).encode(), chunk_size=64 * 1024)
    # Measured as an item (the limit let it through), not cut short as a long record.
    assert isinstance(outcome, Rejection) and outcome.reason.startswith("item is")


@pytest.fixture(params=["this Python", "field by field"])
def grammar(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Scan long records as this Python does, and also without the 3.11+ bulk patterns.

    Either way NUL follows this Python's csv module, which the outcomes are compared with.
    """
    if request.param == "field by field":
        nul_is_error = parsing._GRAMMAR.nul_is_error
        monkeypatch.setattr(
            parsing, "_GRAMMAR", parsing._grammar(nul_is_error=nul_is_error, possessive=False)
        )
    return str(request.param)


LONG = "x" * 3000


@pytest.mark.parametrize(
    "record",
    [
        LONG + ",1",  # over the limit, right width
        LONG + ",1,2",  # over the limit, one field too many
        "," * 3000,
        '"a","b",' * 400 + '"",' * 400 + "x",
        f'"{LONG}\n{LONG}\r\n\r{LONG}",2',
        f'a"b,"c""d{LONG}",',
        f'{LONG}"",""',
        f'"{LONG}"\r',
        f'"{LONG}"""',
        f"{LONG}\u00e9\U0001f5fc,\x00",
        f'"{LONG}"x,1',  # text after a closing quote
        f'"{LONG}",1,"{LONG}"x',
        f'"{LONG}\n"\x00',
        f'"{LONG}',  # the end inside quotes
        f'"{LONG}\n\n',
        f"{LONG}\udcff,1",  # not UTF-8 (a surrogate's bytes)
        f'"{LONG}\n\udcff"x,1',
        f'"{LONG}"x\udcff',
        f'"{LONG}"x\n\udcff',
    ],
)
@pytest.mark.parametrize("ending", ["\n", "\r\n", "\r", ""])
@pytest.mark.parametrize("last", ["last,2\n", ""])
def test_a_record_over_the_limit_has_the_outcome_it_would_have_had(
    record: str, ending: str, last: str, grammar: str
) -> None:
    """Same rows, codes, line numbers and errors; the long record itself is rejected."""
    body = f"a,b\nfirst,1\n{record}{ending}{last}".encode("utf-8", "surrogateescape")
    whole = outcomes_of(body, record_limit=sys.maxsize)
    limited = outcomes_of(body, record_limit=100)
    assert limited[1:] == whole[1:]  # the same file failure, word for word
    assert limited[0][0] == whole[0][0]
    for one, other in zip(whole[0][1:], limited[0][1:], strict=True):
        if one.row != 2 or (isinstance(one, Rejection) and one.code == FIELD_COUNT):
            assert other == one
        else:
            assert isinstance(other, Rejection) and other.code == ITEM_TOO_LARGE
            assert other.reason.startswith("record is")


@pytest.mark.parametrize("chunk_size", [1, 7, 64 * 1024])
def test_a_long_record_is_measured_in_bytes_to_its_line_ending(chunk_size: int) -> None:
    record = "é" * 60 + "\r\n"  # 122 bytes
    body = f"a\n{record}{record}".encode()
    for limit in (121, 122):
        outcomes, _, _ = outcomes_of(body, chunk_size, record_limit=limit)
        assert [type(o) for o in outcomes] == [Rejection if limit < 122 else Record] * 2
    (first, _), _, _ = outcomes_of(body, chunk_size, record_limit=121)
    assert first == Rejection(
        1,
        ITEM_TOO_LARGE,
        "record is 122 bytes of CSV: its item would be over DynamoDB's 409600-byte limit",
    )


@pytest.mark.parametrize("ending", [b"\n", b"\r\n", b"\r", b""])
def test_the_checkpoint_after_a_long_record_is_the_next_records_start(ending: bytes) -> None:
    long = b"x" * 500 + b',"y\ny"' + ending
    rest = b"3,4\n\n5,6" if ending else b""  # without a line ending it is the last record
    body = b"a,b\n1,2\n" + long + rest
    lines = LineReader(io.BytesIO(body), chunk_size=64)
    document = CsvDocument(lines, SOURCE, record_limit=50)
    seen = [
        (outcome.row, type(outcome), lines.offset, document.lines_seen, document.records_seen)
        for outcome in document
    ]
    after = len(b"a,b\n1,2\n" + long)
    expected = [(1, Record, 8, 2, 1), (2, Rejection, after, 4, 2)]
    if ending:
        expected += [(3, Record, after + 4, 5, 3), (4, Record, len(body), 7, 4)]
    assert seen == expected


def test_a_bad_byte_after_a_character_split_across_reads_is_on_its_own_line() -> None:
    """The decoder holds a character's first bytes over a read; positions allow for them."""
    for pad in range(8):
        body = b'a,b\n"' + b"x" * (60 + pad) + "€".encode() + b'\xff\n\n"\n'
        whole = outcomes_of(body, record_limit=sys.maxsize)
        assert whole[1:] == (
            NOT_UTF8,
            "object is not valid UTF-8: byte 0xff cannot be decoded (after record 0, line 2)",
        )
        for chunk_size in range(1, 12):
            assert outcomes_of(body, chunk_size, record_limit=50) == whole, (pad, chunk_size)


def test_nul_in_a_long_record_is_what_this_pythons_csv_module_makes_of_it() -> None:
    body = b'a,b\n"' + b"x" * 200 + b'\x00",2\n'
    whole, limited = (outcomes_of(body, record_limit=n) for n in (sys.maxsize, 50))
    assert limited[1:] == whole[1:]
    assert (whole[1] == CSV_SYNTAX) == (sys.version_info < (3, 11))


def test_python_310s_nul_rule_is_applied_to_long_records(monkeypatch: pytest.MonkeyPatch) -> None:
    """Python 3.10's csv stops at a NUL anywhere: "line contains NUL" (not testable on 3.11+)."""
    grammar = parsing._grammar(nul_is_error=True, possessive=sys.version_info >= (3, 11))
    monkeypatch.setattr(parsing, "_GRAMMAR", grammar)
    for record in (b'"' + b"x" * 200 + b'\x00",2', b"x" * 200 + b"\x00,2", b'"x"\x00' + b"x" * 200):
        _, code, message = outcomes_of(b"a,b\n1,2\n" + record + b"\n", record_limit=50)
        assert code == CSV_SYNTAX
        assert message == "CSV syntax error in record 2 (line 3): line contains NUL"
