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
from test_parsing import outcomes_of

from csv_pipeline.parsing import CSV_SYNTAX, NOT_UTF8, FileRejected, validate_header

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
        # Controls: the same shapes with whole characters are syntax errors.
        (b'a,b\n"' + LONG + b'"y' + "é".encode(), CSV_SYNTAX),
        (b'a,b\n"' + LONG + "é".encode(), CSV_SYNTAX),
    ],
    ids=["syntax-then-cut-at-end", "syntax-then-cut-line", "open-quote-cut", "syntax", "open"],
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
