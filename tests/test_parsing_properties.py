"""Property: the Lambda's parsing core produces exactly what the oracle says, for any document.

No AWS here, so these run thousands of examples in seconds. Bodies go through
the reader the handler uses (``LineReader`` over the object's byte stream) with
drawn read sizes, so multi-byte characters, CRLF pairs, a BOM and quoted line
breaks fall across read boundaries; and a parse may stop after any record and
resume from that checkpoint the way a timed-out invocation's successor does.

Records longer than the parser's limit are scanned without being held; a
lowered limit sends ordinary documents (written by hand, quirks included)
down that path, which must come to the same outcomes as csv.reader does.
"""

from __future__ import annotations

import csv
import io
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import timedelta

from hypothesis import event, example, given, note, settings
from hypothesis import strategies as st

from csv_pipeline.parsing import (
    FIELD_COUNT,
    ITEM_TOO_LARGE,
    CsvDocument,
    FileRejected,
    LineReader,
    Outcome,
    Record,
    Rejection,
)
from csv_pipeline_harness.contract.oracle import Observed, differences, expected_state, item_size
from csv_pipeline_harness.contract.quirks import (
    HandWritten,
    every_record_quirk,
    hand_written_documents,
)
from csv_pipeline_harness.contract.strategies import (
    ITEM_LIMIT_BYTES,
    AnyDocument,
    Dialect,
    Document,
    InvalidCase,
    SizedRows,
    documents,
    invalid_documents,
    sized_rows,
    tiled_documents,
)

SOURCE = "csv-upload-bucket/properties/document.csv"

#: The active profile's max_examples is the end-to-end budget; the parsing
#: core costs a few milliseconds an example, so it gets many times more.
BUDGET = settings().max_examples


def parsing(max_examples: int) -> settings:
    """Settings of a parsing property: the active profile's, with these two changed.

    Parsing is CPU-bound and small, but under ``pytest -n 2`` it shares two
    cores with the other worker's emulator: a 2 s deadline still catches a
    pathological (e.g. quadratic) slowdown without reporting timing noise.
    """
    return settings(max_examples=max_examples, deadline=timedelta(seconds=2))


def plain(value: Mapping[str, object]) -> object:
    """A low-level attribute value as the oracle writes it; anything unexpected stays as is.

    NULL -> None, S -> str, N -> int (only the ``row`` key is a number): a cell
    written as a number, a boolean or an empty string cannot pass for its text.
    """
    if value == {"NULL": True}:
        return None
    if set(value) == {"S"}:
        return value["S"]
    if set(value) == {"N"} and str(value["N"]).isdigit():
        return int(str(value["N"]))
    return value


def read_sizes() -> st.SearchStrategy[int]:
    return st.sampled_from([64 * 1024, 1, 2, 3, 5, 64, 1000])


def lines_of(body: bytes, read_size: int, offset: int = 0) -> LineReader:
    """The handler's reader over ``body[offset:]`` (a ranged GET when resuming)."""
    # At most ~64 reads a document: one-byte reads of a long body only cost
    # time, and the split points still move with the drawn size.
    size = max(read_size, (len(body) - offset) // 64)
    return LineReader(io.BytesIO(body[offset:]), offset=offset, chunk_size=size)


def parse(body: bytes, read_size: int, stop_after: int | None = None) -> Observed:
    """Run the parsing core as the handler does and report it in the oracle's terms.

    With ``stop_after`` the first pass ends after that many records and a
    second ``CsvDocument`` resumes from the checkpoint (byte offset, records
    and lines seen), as the handler does after running out of time.
    """
    outcomes: list[Outcome] = []
    try:
        lines = lines_of(body, read_size)
        document = CsvDocument(lines, SOURCE)
        columns = document.columns
        for outcome in document:
            outcomes.append(outcome)
            if len(outcomes) == stop_after:
                resumed = CsvDocument(
                    lines_of(body, read_size, offset=lines.offset),
                    SOURCE,
                    columns=columns,
                    records_seen=document.records_seen,
                    lines_seen=document.lines_seen,
                )
                outcomes.extend(resumed)
                break
    except FileRejected as exc:
        return Observed("FAILED", None, [], 0, 0, [], str(exc), error_code=exc.code)
    records = [o for o in outcomes if isinstance(o, Record)]
    rejections = [o for o in outcomes if isinstance(o, Rejection)]
    assert len(records) + len(rejections) == len(outcomes), outcomes
    items = [{name: plain(value) for name, value in r.item.items()} for r in records]
    assert [r.row for r in records] == [i["row"] for i in items], "Record.row != item row"
    return Observed(
        status="COMPLETE",
        columns=columns,
        items=items,
        rows_written=len(records),
        rows_rejected=len(rejections),
        rejected=[(r.row, r.reason) for r in rejections],
        error=None,
        rejection_codes=[r.code for r in rejections],
    )


def check(
    document: AnyDocument | HandWritten, read_size: int, stop_after: int | None = None
) -> None:
    note(document.describe())
    expected = expected_state(document, SOURCE)
    problems = differences(expected, parse(document.body, read_size, stop_after), listed=None)
    assert not problems, "parsing core disagrees with the oracle:\n" + "\n".join(problems)


def classify(document: Document) -> None:
    """Statistics (``--hypothesis-show-statistics``): the generator covers what it claims."""
    d = document.dialect
    event(f"dialect: {d.line_terminator!r}, {'QUOTE_ALL' if d.quote_all else 'QUOTE_MINIMAL'}")
    cells = [c for row in document.records for c in row]
    if cells:
        share = sum(c == "" for c in cells) / len(cells)
        event(f"blank cells: {'none' if share == 0 else '<25%' if share < 0.25 else '>=25%'}")
    count = len(document.records)
    event(f"records: {'0' if count == 0 else '1-9' if count < 10 else '10+'}")


@parsing(BUDGET * 5)
@example(
    document=Document(("a",), (("",), (), (" ",), ("\r\n",)), Dialect("\n", False, True, False)),
    read_size=1,
).via("single column: a lone empty field is a record, an empty line is not")
@example(
    document=Document(("x", "y"), (("", '"'), ("1,2", "\u2028"), ("", "")), Dialect("\r\n", True)),
    read_size=2,
).via("quoted blanks are NULL too")
@example(
    document=Document(("\ufeffid", "b"), (("\ufeffx", ""),), Dialect("\n", False, True, True)),
    read_size=1,
).via("a BOM is stripped once, at the start of the object only")
@given(document=documents(), read_size=read_sizes())
def test_parsing_core_matches_the_oracle(document: Document, read_size: int) -> None:
    classify(document)
    check(document, read_size)


@parsing(BUDGET * 3)
@given(document=st.one_of(documents(), documents(ragged=2)), read_size=read_sizes(), data=st.data())
def test_resuming_from_any_checkpoint_matches_the_oracle(
    document: Document, read_size: int, data: st.DataObject
) -> None:
    records = sum(1 for row in document.records if row)
    stop_after = data.draw(st.integers(1, max(1, records)), label="checkpoint after record")
    check(document, read_size, stop_after)


@parsing(BUDGET * 5)
@given(case=invalid_documents(), read_size=read_sizes())
def test_parsing_core_keeps_the_promise_for_defective_documents(
    case: InvalidCase, read_size: int
) -> None:
    event(case.defect)
    assert expected_state(case.document, SOURCE).keeps(case.promise), (
        f"strategy bug: {case.defect} should be {case.promise} under the contract"
    )
    check(case.document, read_size)


_LIMIT = ITEM_LIMIT_BYTES


@settings(max_examples=max(5, BUDGET // 5), deadline=timedelta(seconds=10))
@example(
    rows=SizedRows(("big", "n"), (_LIMIT - 1, _LIMIT, _LIMIT + 1), ("x", "\u20ac", '"'), ("7",)),
    read_size=1000,
).via("one byte either side of the limit")
@given(rows=sized_rows(), read_size=read_sizes())
def test_parsing_core_judges_items_at_any_size(rows: SizedRows, read_size: int) -> None:
    """Items are judged to the byte: at the limit written, one byte over rejected.

    Each example is up to 2.4 MB of CSV: a few dozen are enough, the exact
    sizes are what matter, and the deadline allows for a loaded machine.
    """
    document = rows.document(SOURCE, item_size)
    row_sizes = [
        item_size(
            {"source": SOURCE, "row": n}
            | {name: cell or None for name, cell in zip(document.header, cells, strict=True)}
        )
        for n, cells in enumerate(document.records, start=1)
    ]
    assert row_sizes == list(rows.sizes), "the model missed its sizes"
    check(document, read_size)


@parsing(BUDGET * 4)
@example(document=every_record_quirk(), read_size=1).via("every quirk that leaves a record")
@given(document=hand_written_documents(), read_size=read_sizes())
def test_hand_written_quirks_mean_what_the_model_says(
    document: HandWritten, read_size: int
) -> None:
    check(document, read_size)


@parsing(max(2, BUDGET // 20))
@given(document=tiled_documents(min_records=10_000, max_records=20_000))
def test_parsing_core_handles_large_documents(document: Document) -> None:
    check(document, 64 * 1024)


# -- records over the limit ----------------------------------------------------------------

#: Characters of hand-written cells: CSV's own, NUL (an error on 3.10 only),
#: multi-byte UTF-8 (split across reads).
_CHARS = st.sampled_from(list('ab,"\r\n é日🗼\x00'))
_ENDINGS = ("\n", "\r\n", "\r")


def _quoted(text: str) -> str:
    return '"' + text.replace('"', '""') + '"'


@st.composite
def quirky_fields(draw: st.DrawFn) -> str:
    """A field as people write them: ``a"b``, quoted line breaks, long ones, empty ones."""
    text = draw(st.text(_CHARS, max_size=6))
    kind = draw(st.sampled_from(["plain", "quoted", "long", "long quoted", "empty"]))
    if kind == "plain":  # a quote is a character unless it opens the field
        return text.lstrip('"').replace(",", "").replace("\r", "").replace("\n", "")
    if kind == "quoted":
        return _quoted(text)
    if kind == "long":
        return "x" * draw(st.integers(20, 300))
    if kind == "long quoted":
        return _quoted((text + "y" * draw(st.integers(5, 60))) * draw(st.integers(1, 5)))
    return ""


@st.composite
def quirky_bodies(draw: st.DrawFn) -> bytes:
    """Hand-written CSV: mixed line endings, blank lines, ragged rows, maybe one defect.

    Defects: text after a closing quote, a quote open at the end, bytes that
    are not UTF-8. Whatever csv.reader makes of the result is what counts.
    """
    width = draw(st.integers(1, 3))
    text = ",".join("abc"[:width]) + draw(st.sampled_from(_ENDINGS))
    for _ in range(draw(st.integers(0, 8))):
        if draw(st.integers(0, 5)) == 0:
            text += draw(st.sampled_from(_ENDINGS))  # a blank line
            continue
        count = draw(st.sampled_from([width, width, width, 1, width + 1]))
        fields = [draw(quirky_fields()) for _ in range(count)]
        text += ",".join(fields) + draw(st.sampled_from(_ENDINGS))
    defect = draw(st.sampled_from(["none", "none", "after quote", "open quote", "not UTF-8"]))
    if defect == "after quote":
        at = draw(st.integers(0, len(text)))
        text = text[:at] + _quoted("q" * draw(st.integers(0, 80))) + "x" + text[at:]
    elif defect == "open quote":
        text += '"' + "z" * draw(st.integers(0, 80))
    elif not draw(st.booleans()):
        text = text.rstrip("\r\n")  # no line ending at the end
    body = ("\ufeff" if draw(st.booleans()) else "").encode() + text.encode()
    if defect == "not UTF-8":
        at = draw(st.integers(0, len(body)))
        body = body[:at] + draw(st.sampled_from([b"\xff", b"\xe2\x82", b"\xc3("])) + body[at:]
    return body


def record_sizes(body: bytes) -> list[int]:
    """Bytes of each non-blank record (header first), line ending included, while they read.

    Worked out apart from the parser: csv.reader over the body's lines, with
    the byte count of the lines each record took.
    """
    body = body.removeprefix(b"\xef\xbb\xbf")
    taken = 0

    def lines() -> Iterator[str]:
        nonlocal taken
        for line in body.splitlines(keepends=True):
            text = line.decode("utf-8")  # stops the count where the parser stops
            taken += len(line)
            yield text

    sizes: list[int] = []
    start = 0
    try:
        for row in csv.reader(lines(), strict=True):
            if row:
                sizes.append(taken - start)
            start = taken
    except (UnicodeDecodeError, csv.Error):
        pass
    return sizes


@dataclass(frozen=True)
class Run:
    """A parse: each outcome with the checkpoint after it, then the file error if any."""

    steps: list[tuple[Outcome, int, int, int]]  # (outcome, offset, records, lines)
    error: tuple[str, str] | None  # (code, message)


def run(body: bytes, limit: int, read_size: int, stop_after: int | None = None) -> Run:
    """Parse with ``limit`` (and resume after ``stop_after`` outcomes, from the checkpoint)."""
    steps: list[tuple[Outcome, int, int, int]] = []
    try:
        lines = lines_of(body, read_size)
        document = CsvDocument(lines, SOURCE, record_limit=limit)
        for outcome in document:
            steps.append((outcome, lines.offset, document.records_seen, document.lines_seen))
            if len(steps) == stop_after:
                lines = lines_of(body, read_size, offset=lines.offset)
                document = CsvDocument(
                    lines,
                    SOURCE,
                    columns=document.columns,
                    records_seen=document.records_seen,
                    lines_seen=document.lines_seen,
                    record_limit=limit,
                )
                for outcome in document:
                    steps.append(
                        (outcome, lines.offset, document.records_seen, document.lines_seen)
                    )
                break
    except FileRejected as exc:
        return Run(steps, (exc.code, str(exc)))
    return Run(steps, None)


def with_limit(outcome: Outcome, size: int, limit: int) -> Outcome:
    """What a record becomes when it is ``size`` bytes and the limit is ``limit``."""
    if size <= limit or (isinstance(outcome, Rejection) and outcome.code == FIELD_COUNT):
        return outcome
    reason = f"record is {size} bytes of CSV: its item would be over DynamoDB's 409600-byte limit"
    return Rejection(outcome.row, ITEM_TOO_LARGE, reason)


@parsing(BUDGET * 5)
@example(body=b'a,b\nx,"1\r\n2""\r3"\r\n"p"q,1\n', limit=5, read_size=1).via("error in it")
@example(body=b'a\n\r\n"' + b"x" * 40 + b"\n", limit=10, read_size=3).via("open at the end")
@example(body=b'a,b\nx"y,' + b"\xc3(" + b"z" * 30, limit=8, read_size=2).via("not UTF-8")
@example(body=b'a\n\n\r\n""', limit=1, read_size=64 * 1024).via("blank lines over the limit")
@given(body=quirky_bodies(), limit=st.integers(1, 120), read_size=read_sizes())
def test_a_low_record_limit_changes_only_the_records_over_it(
    body: bytes, limit: int, read_size: int
) -> None:
    """Same checkpoints, rows, codes and file error; records over the limit are rejected."""
    note(f"body: {body!r}")
    whole = run(body, sys.maxsize, read_size)
    sizes = record_sizes(body)
    note(f"record sizes (header first): {sizes}")
    event("over the limit: " + ("yes" if any(s > limit for s in sizes[1:]) else "no"))
    event(f"file error: {whole.error[0] if whole.error else None}")
    expected = [
        (with_limit(outcome, sizes[outcome.row], limit), *checkpoint)
        for outcome, *checkpoint in whole.steps
    ]
    limited = run(body, limit, read_size)
    assert limited.steps == expected
    assert limited.error == whole.error


@parsing(BUDGET * 5)
@given(body=quirky_bodies(), limit=st.integers(1, 120), read_size=read_sizes(), data=st.data())
def test_resuming_after_a_record_over_the_limit_matches_one_pass(
    body: bytes, limit: int, read_size: int, data: st.DataObject
) -> None:
    one_pass = run(body, limit, read_size)
    stop_after = data.draw(st.integers(1, max(1, len(one_pass.steps))), label="stop after")
    assert run(body, limit, read_size, stop_after) == one_pass
