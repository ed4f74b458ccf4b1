"""Reading a record over the limit: the line reader's bounds, and the scan that skips it.

The line reader hands csv.reader one line at a time and stops with
``RecordTooLong`` before a record outgrows the limit, having read at most
the limit plus a read or two, however long the line; where the reads split
the bytes never changes a line. Past the limit the record is scanned in
chunks (``_RecordScan``). On Python 3.11+ a run of complete ``field,``
units is taken by one regex match (possessive quantifiers keep the engine
from saving state for every repetition); the field-by-field path gives the
same answers, only slower on a record of many tiny fields. The outcome tests
compare both paths with csv.reader, so here the bulk path is checked to be
taken: it takes whole units, the quoted text's doubled quotes within one
match, and NUL only where this Python's csv module reads NUL as a character.

A scan that fails raises :class:`MalformedRecord` with the code, the line
(counted from the scan's start) and the detail the document turns into its
``FileRejected`` message.
"""

from __future__ import annotations

import io
import sys
from collections.abc import Callable, Iterator

import pytest
from test_parsing import outcomes_of

from csv_pipeline import parsing
from csv_pipeline.parsing import CSV_SYNTAX, NOT_UTF8, MalformedRecord, _RecordScan

possessive = pytest.mark.skipif(
    sys.version_info < (3, 11, 5),
    reason="the bulk path needs possessive quantifiers that match correctly (Python 3.11.5+)",
)


def reads(data: bytes, size: int = 64 * 1024) -> Callable[[], bytes]:
    """A ``read()`` handing out ``data`` in chunks of ``size``, then ``b""``."""
    chunks: Iterator[bytes] = (data[i : i + size] for i in range(0, len(data), size))
    return lambda: next(chunks, b"")


@possessive
@pytest.mark.parametrize(
    ("units", "count"),
    [
        (b'"a",' * 500, 500),
        (b"ab," * 500, 500),
        (b"," * 100, 100),
        (b'"x""y",' * 100, 100),  # doubled quotes inside quotes
        (b'"X,\r\n",X\tX,' * 100, 200),  # commas and line breaks inside quotes; any letter
        ("é,".encode() * 100, 100),
    ],
    ids=["quoted", "unquoted", "empty", "doubled-quotes", "mixed", "non-ascii"],
)
def test_a_run_of_whole_fields_is_taken_in_one_go(units: bytes, count: int) -> None:
    for nul_is_error in (False, True):
        grammar = parsing._grammar(nul_is_error=nul_is_error, possessive=True)
        # The last field (no comma after it) is not a whole unit: it stays.
        scan = _RecordScan(reads(units + b'"last"\n'), grammar)
        assert scan._whole_fields() == count
        assert scan.size == len(units)
        # Then the rest: one more field; the record's lines include those inside quotes.
        assert scan.record() == (1, 1 + units.count(b"\r\n"))


@possessive
def test_nul_is_taken_in_bulk_only_where_csv_reads_it_as_a_character() -> None:
    units = b'"a\x00",b\x00,' * 50
    taken = parsing._grammar(nul_is_error=False, possessive=True)
    assert _RecordScan(reads(units + b"z\n"), taken)._whole_fields() == 100
    # Python 3.10's csv stops at a NUL: the bulk path leaves it to the field-by-field path.
    refused = parsing._grammar(nul_is_error=True, possessive=True)
    assert _RecordScan(reads(units + b"z\n"), refused)._whole_fields() == 0


@possessive
def test_quoted_text_with_doubled_quotes_is_one_match() -> None:
    text = b'ab""cd""""ef"g'
    bulk = parsing._grammar(nul_is_error=False, possessive=True)
    assert bulk.quoted_text.match(text) is not None
    assert bulk.quoted_text.match(text).end() == len(b'ab""cd""""ef')  # type: ignore[union-attr]


@pytest.mark.parametrize("nul_is_error", [False, True])
def test_without_possessive_quantifiers_the_scan_goes_field_by_field(nul_is_error: bool) -> None:
    plain = parsing._grammar(nul_is_error=nul_is_error, possessive=False)
    assert plain.bulk is None
    scan = _RecordScan(reads(b'"a",' * 50 + b"z\n"), plain)
    assert scan._whole_fields() == 0 and scan.size == 0
    assert scan.record() == (51, 1)
    assert plain.quoted_text.match(b'ab""c').end() == 2  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("record", "code", "line", "detail"),
    [
        (b'"ab"x,1\n', CSV_SYNTAX, 1, "',' expected after '\"'"),
        (b'1,"a\nb"c\n', CSV_SYNTAX, 2, "',' expected after '\"'"),
        (b'1,"ab\ncd', CSV_SYNTAX, 2, "unexpected end of data"),
        (b"1,a\xffb\n", NOT_UTF8, 1, "0xff"),
    ],
    ids=["text-after-quote", "on-line-2", "open-quote", "not-utf8"],
)
def test_a_failing_scan_says_why_and_on_which_line(
    record: bytes, code: str, line: int, detail: str
) -> None:
    for size in (1, 3, 64 * 1024):
        with pytest.raises(MalformedRecord) as failure:
            _RecordScan(reads(record, size)).record()
        assert (failure.value.code, failure.value.line, failure.value.detail) == (
            code,
            line,
            detail,
        )
        # The same three in its args, so a traceback that shows it says all of it.
        assert failure.value.args == (code, line, detail)


@possessive
def test_a_record_of_many_quoted_fields_is_scanned_in_a_few_steps(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """100,000 tiny quoted fields: a few regex matches per chunk read, not a step per field."""
    steps = 0
    consume = _RecordScan._consume_to

    def counted(self: _RecordScan, end: int) -> None:
        nonlocal steps
        steps += 1
        consume(self, end)

    monkeypatch.setattr(_RecordScan, "_consume_to", counted)
    scan = _RecordScan(reads(b'"a",' * 100_000 + b'"z"\n'))
    assert scan.record() == (100_001, 1)
    assert steps < 1_000, steps  # field by field it takes over 200,000


def test_line_counter_counts_cr_lf_and_crlf_once_each() -> None:
    counter = parsing._LineCounter()
    assert (counter.breaks, counter.lines) == (0, 0)  # nothing added: no line
    counter.add(b"\nab", 0, 3)  # a fresh counter is not just after a CR
    assert (counter.breaks, counter.lines) == (1, 2)
    counter.add(b"c\r", 0, 2)
    assert (counter.breaks, counter.lines) == (2, 2)
    counter.add(b"\nd", 0, 0)  # an empty slice adds nothing, even after a CR
    assert (counter.breaks, counter.lines) == (2, 2)
    counter.add(b"\nd", 0, 2)  # the \n of a \r\n split across two slices
    assert (counter.breaks, counter.lines) == (2, 3)


class CountingBody(io.BytesIO):
    """A body that remembers the sizes asked for and how many bytes it handed out."""

    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.sizes: list[int | None] = []
        self.taken = 0

    def read(self, size: int | None = -1) -> bytes:
        self.sizes.append(size)
        data = super().read(size)
        self.taken += len(data)
        return data


def test_a_long_record_is_read_a_chunk_at_a_time() -> None:
    """Skipping a record never asks the body for more than a chunk (``read(None)`` is all)."""
    body = CountingBody(b"a,b\n" + b"x" * 5_000 + b",1\n1,2\n")
    lines = parsing.LineReader(body, chunk_size=64)
    outcomes = list(parsing.CsvDocument(lines, "b/k", record_limit=100))
    assert [type(o).__name__ for o in outcomes] == ["Rejection", "Record"]
    assert len(body.sizes) > 5_000 // 64 and set(body.sizes) == {64}


@pytest.mark.parametrize("lines_before", [0, 3])
def test_a_line_without_an_end_stops_the_reader_within_its_limit(lines_before: int) -> None:
    body = CountingBody(b"ok\n" * lines_before + b"x" * 1_000_000)
    lines = parsing.LineReader(body, chunk_size=64)
    lines.limit = 1_000
    handed = []
    with pytest.raises(parsing.RecordTooLong):
        for line in lines:
            handed.append(line)
            lines.record_start = lines.offset  # as the document does after each record
    assert handed == ["ok\n"] * lines_before
    assert body.taken <= lines.record_start + 1_000 + 2 * 64, body.taken


def test_where_reads_split_the_bytes_never_changes_an_outcome() -> None:
    """Lone CRs end lines too; one may end a read, and the next read may have no line break."""
    body = b"a\r1\r" + b"x" * 300 + b"\r2\r\n3\r"
    expected = outcomes_of(body, chunk_size=64 * 1024, record_limit=50)
    kinds = [type(o).__name__ for o in expected[0]]
    assert kinds == ["Record", "Rejection", "Record", "Record"] and expected[1] is None
    for chunk_size in range(1, 40):
        assert outcomes_of(body, chunk_size, record_limit=50) == expected, chunk_size


def test_a_byte_order_mark_is_data_anywhere_but_at_the_objects_start() -> None:
    """Resumed from a checkpoint, a record that starts with U+FEFF keeps it."""
    record = "\ufeffx,1\n".encode()
    lines = parsing.LineReader(io.BytesIO(record), offset=10)
    assert list(lines) == ["\ufeffx,1\n"]
    assert lines.offset == 10 + len(record)
    start = parsing.LineReader(io.BytesIO(record))
    assert list(start) == ["x,1\n"] and start.offset == len(record)
