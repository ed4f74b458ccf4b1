"""Edges of the parsing core: a long record's failure, and how long a header error gets.

A record over the record limit is scanned in chunks instead of being parsed
(``_RecordScan``). Where it breaks CSV quoting, the text wrapper would have
decoded the rest of the line — or, at the end of the object, everything —
before csv.reader saw the error, so bytes that are not UTF-8 there make the
file ``NOT_UTF8``, not ``CSV_SYNTAX``. Each case is compared with the same
document parsed whole (no record limit), which is what the scan must equal.

A header error lists the offending names or positions, cut short because the
message is stored in the manifest item: the first ten, each up to 60
characters, then how many there were.
"""

from __future__ import annotations

import sys

import pytest
from test_parsing import SOURCE, outcomes_of

from csv_pipeline.parsing import (
    CSV_SYNTAX,
    ITEM_TOO_LARGE,
    MAX_ITEM_BYTES,
    NO_HEADER,
    NOT_UTF8,
    FileRejected,
    Record,
    Rejection,
    item_size,
    record_limit_for,
    to_item,
    validate_header,
)

LONG = b"x" * 200
#: The first byte of a two-byte character, with nothing after it.
CUT = "é".encode()[:1]


@pytest.mark.parametrize(
    ("body", "code"),
    [
        # A character after a closing quote, then a cut character ending the object.
        (b'a,b\n"' + LONG + b'"y' + CUT, NOT_UTF8),
        # The same line break-terminated: the line is decoded, then the cut byte fails.
        (b'a,b\n"' + LONG + b'"y' + CUT + b"\n", NOT_UTF8),
        # A quote left open up to the end of the object, the last character cut.
        (b'a,b\n"' + LONG + CUT, NOT_UTF8),
        # A record with no quotes and no line break, the object's last character cut.
        (b"a,b\n" + LONG + b"," + CUT, NOT_UTF8),
        # A syntax error on a record's second line, a bad byte later on that line: the
        # line is decoded to its end (not to the record's first line break).
        (b'a,b\n"' + LONG + b'\nx"y,\xff\n', NOT_UTF8),
        # A syntax error on a line ending in a lone CR: the next line is never decoded.
        (b'a,b\n"' + LONG + b'"y\r\xff\n', CSV_SYNTAX),
        # Lines of a quoted field handed to csv before the record grew too long, then a
        # syntax error: its line counts from the record's first line, not from the limit.
        (b'a,b\n"' + b"ab\n" * 40 + b'"y\n', CSV_SYNTAX),
        # Controls: the same shapes with whole characters are syntax errors.
        (b'a,b\n"' + LONG + b'"y' + "é".encode(), CSV_SYNTAX),
        (b'a,b\n"' + LONG + "é".encode(), CSV_SYNTAX),
    ],
    ids=[
        "syntax-then-cut-at-end",
        "syntax-then-cut-line",
        "open-quote-cut",
        "unquoted-cut-at-end",
        "syntax-on-second-line-then-bad-byte",
        "syntax-then-lone-cr",
        "syntax-after-lines-handed-out",
        "syntax",
        "open",
    ],
)
def test_a_long_records_failure_is_the_one_a_whole_parse_reports(body: bytes, code: str) -> None:
    whole = outcomes_of(body, record_limit=sys.maxsize)
    assert whole[1] == code, whole
    for chunk_size in (1, 7, 64 * 1024):
        assert outcomes_of(body, chunk_size, record_limit=50) == whole, chunk_size


@pytest.mark.parametrize(("empty", "listed"), [(10, "[1, 2, 3, 4, 5, 6, 7, 8, 9, 10]"), (11, None)])
def test_a_header_error_lists_ten_positions_whole(empty: int, listed: str | None) -> None:
    with pytest.raises(FileRejected) as failure:
        validate_header([""] * empty)
    message = str(failure.value)
    if listed is not None:
        assert message.endswith(f"position(s) {listed}"), message
    else:
        assert message.endswith("position(s) [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, ... (11 in all)]")


@pytest.mark.parametrize("width", [60, 61])
def test_a_header_error_shows_names_of_up_to_60_characters_whole(width: int) -> None:
    name = "n" * width
    with pytest.raises(FileRejected) as failure:
        validate_header([name, name])
    shown = name if width <= 60 else name[:60] + "..."
    assert str(failure.value).endswith(repr([shown])), str(failure.value)


def test_an_item_needs_a_cell_for_every_column() -> None:
    with pytest.raises(ValueError, match="zip"):
        to_item("b/k", 1, ["a", "b"], ["1"])


#: A character of four UTF-8 bytes: the most bytes one character takes.
FOUR = "😀"


@pytest.mark.parametrize("blanks", [0, 99])
def test_items_at_the_limit_are_judged_to_the_byte_with_blanks_and_wide_characters(
    blanks: int,
) -> None:
    """Rows measured against the limit cell by cell, blanks (NULL, 1 byte) and 4-byte
    characters included: the quick upper bound on a row's size must never let one
    over the limit through."""
    columns = [f"c{i}" for i in range(blanks + 1)]
    header = ",".join(columns).encode()
    # The item's size with k characters in the last cell is rest + 4 * k.
    rest = item_size(to_item(SOURCE, 1, columns, [""] * blanks + [FOUR])) - 4
    chars = (MAX_ITEM_BYTES - rest) // 4
    sizes = []
    for k in range(chars - 3, chars + 4):
        cells = [""] * blanks + [FOUR * k]
        size = item_size(to_item(SOURCE, 1, columns, cells))
        sizes.append(size - MAX_ITEM_BYTES)
        (outcome,), code, _ = outcomes_of(header + b"\n" + ",".join(cells).encode() + b"\n")
        assert code is None
        if size > MAX_ITEM_BYTES:
            assert isinstance(outcome, Rejection) and outcome.code == ITEM_TOO_LARGE, size
            assert outcome.reason == (
                f"item is {size} bytes, over DynamoDB's {MAX_ITEM_BYTES}-byte limit"
            )
        else:
            assert isinstance(outcome, Record) and outcome.item["c0"], size
    assert min(sizes) < 0 < max(sizes), sizes  # both sides of the limit


def test_a_record_longer_than_any_item_is_rejected_without_being_read_whole() -> None:
    """Past the record limit the record is skipped by scanning, and its reason says so."""
    limit = record_limit_for(["a"])
    body = b"a\n" + b"x" * (limit + 1) + b"\n" + b"ok\n"
    outcomes, code, _ = outcomes_of(body, chunk_size=64 * 1024)
    assert code is None
    assert [type(o).__name__ for o in outcomes] == ["Rejection", "Record"]
    assert outcomes[0].reason == (  # type: ignore[union-attr]
        f"record is {limit + 2} bytes of CSV: its item would be over DynamoDB's "
        f"{MAX_ITEM_BYTES}-byte limit"
    )


@pytest.mark.parametrize(
    ("columns", "code", "message"),
    [
        (
            ["row", "x", "source"],
            "RESERVED_COLUMN",
            "header uses reserved column name(s) ['row', 'source']: "
            "'source' and 'row' are the table's key attributes",
        ),
    ],
)
def test_header_messages_say_what_is_wrong(columns: list[str], code: str, message: str) -> None:
    with pytest.raises(FileRejected) as failure:
        validate_header(columns)
    assert (failure.value.code, str(failure.value)) == (code, message)


def test_an_empty_object_has_no_header() -> None:
    assert outcomes_of(b"") == ([], NO_HEADER, "object is empty: no header line")
    assert outcomes_of(b"\n\r\n") == ([], NO_HEADER, "object is empty: no header line")
