"""Property: the Lambda's parsing core produces exactly what the oracle says, for any document.

No AWS here, so these run thousands of examples in seconds. Bodies go through
the reader the handler uses (``LineReader`` over the object's byte stream) with
drawn read sizes, so multi-byte characters, CRLF pairs, a BOM and quoted line
breaks fall across read boundaries; and a parse may stop after any record and
resume from that checkpoint the way a timed-out invocation's successor does.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from datetime import timedelta

from hypothesis import event, example, given, note, settings
from hypothesis import strategies as st
from oracle import Observed, differences, expected_state
from strategies import (
    AnyDocument,
    Dialect,
    Document,
    InvalidCase,
    documents,
    invalid_documents,
    tiled_documents,
)

from csv_pipeline.parsing import CsvDocument, FileRejected, LineReader, Outcome, Record, Rejection

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


def check(document: AnyDocument, read_size: int, stop_after: int | None = None) -> None:
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


@parsing(BUDGET * 30)
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


@parsing(BUDGET * 5)
@given(document=st.one_of(documents(), documents(ragged=2)), read_size=read_sizes(), data=st.data())
def test_resuming_from_any_checkpoint_matches_the_oracle(
    document: Document, read_size: int, data: st.DataObject
) -> None:
    records = sum(1 for row in document.records if row)
    stop_after = data.draw(st.integers(1, max(1, records)), label="checkpoint after record")
    check(document, read_size, stop_after)


@parsing(BUDGET * 10)
@given(case=invalid_documents(), read_size=read_sizes())
def test_parsing_core_keeps_the_promise_for_defective_documents(
    case: InvalidCase, read_size: int
) -> None:
    event(case.defect)
    assert expected_state(case.document, SOURCE).keeps(case.promise), (
        f"strategy bug: {case.defect} should be {case.promise} under the contract"
    )
    check(case.document, read_size)


@parsing(max(2, BUDGET // 20))
@given(document=tiled_documents(min_records=10_000, max_records=20_000))
def test_parsing_core_handles_large_documents(document: Document) -> None:
    check(document, 64 * 1024)
