"""The data contract as a pure function: document model in, expected table state out.

:func:`expected_state` reads only the model a strategy generated (header,
rows, defect), never the bytes the pipeline was given, and does no I/O. It
restates the contract independently of the Lambda's code:

* data rows are numbered 1.. by CSV record after the header; blank lines are
  not records;
* every header column is an attribute: the cell's text, or NULL (``None``)
  when the cell is ``""``; no type guessing;
* a record whose field count differs from the header's (``FIELD_COUNT``), or
  whose item would exceed 400 KB (``ITEM_TOO_LARGE``; :func:`item_size`, to
  the byte), is rejected: no item, listed in the manifest (first 100);
* an unusable object is FAILED with an error and no rows, and the error's
  code says why: ``NOT_UTF8``, ``NO_HEADER``, ``CSV_SYNTAX``, or the first
  header problem of ``HEADER_TOO_LARGE``, ``COLUMN_NAME_TOO_LONG``,
  ``EMPTY_COLUMN``, ``RESERVED_COLUMN``, ``DUPLICATE_COLUMN``.

:func:`differences` compares that with what was observed (the parsing core's
output or the table after an ingestion) and says what differs, row by row and
attribute by attribute.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from csv_pipeline_harness.contract.limits import (
    ATTRIBUTE_NAME_LIMIT_BYTES,
    HEADER_LINE_LIMIT_BYTES,
    ITEM_LIMIT_BYTES,
    LISTED_REJECTIONS,
    MANIFEST_OTHER_FIELDS_BYTES,
    RESERVED_NAMES,
)
from csv_pipeline_harness.contract.quirks import HandWritten
from csv_pipeline_harness.contract.strategies import (
    AnyDocument,
    CorruptDocument,
    Document,
    FileDefect,
    Promise,
)

Value = str | int | None
Item = dict[str, Value]


#: Codes the contract gives a skipped record and a refused object (restated
#: here, not imported: ``test_parsing`` checks they match the parsing core's).
FIELD_COUNT, ITEM_TOO_LARGE = "FIELD_COUNT", "ITEM_TOO_LARGE"
REJECTION_CODES = frozenset({FIELD_COUNT, ITEM_TOO_LARGE})
FILE_ERROR_CODES = frozenset(
    {
        "NOT_UTF8",
        "NO_HEADER",
        "EMPTY_COLUMN",
        "DUPLICATE_COLUMN",
        "RESERVED_COLUMN",
        "CSV_SYNTAX",
        "HEADER_TOO_LARGE",
        "COLUMN_NAME_TOO_LONG",
    }
)


#: The data contract's manifest fields: nothing else may be left once it is final.
MANIFEST_FIELDS = frozenset(
    {
        "source",
        "row",
        "status",
        "etag",
        "sequencer",
        "rows_written",
        "rows_rejected",
        "rejected",
        "columns",
        "error",
        "error_code",
        "started_at",
        "finished_at",
    }
)


@dataclass(frozen=True)
class ExpectedRejection:
    """A record the contract rejects: its code, and the facts its reason must state."""

    row: int
    code: str  # one of REJECTION_CODES
    facts: tuple[str, ...]

    def explained_by(self, code: object, reason: object) -> bool:
        """The code matches exactly; the reason names the field counts or the size limit."""
        if code != self.code:
            return False
        if not isinstance(reason, str) or not reason.strip():
            return False
        if self.code == FIELD_COUNT:
            numbers = re.findall(r"\d+", reason)
            return all(fact in numbers for fact in self.facts)
        return "byte" in reason.lower()


@dataclass(frozen=True)
class ExpectedFailure:
    """Why the whole object is refused: the error's code, and the cause in words."""

    code: str  # one of FILE_ERROR_CODES
    cause: str

    def explained_by(self, code: object, error: object) -> bool:
        """The code matches exactly, and the error says something."""
        if not isinstance(error, str) or not error.strip():
            return False
        return code == self.code


@dataclass(frozen=True)
class ExpectedState:
    """The table state for one source once its manifest is final."""

    source: str
    status: str  # "COMPLETE" | "FAILED"
    columns: tuple[str, ...] | None
    items: tuple[Item, ...]
    rejections: tuple[ExpectedRejection, ...]
    failure: ExpectedFailure | None

    @property
    def rows_written(self) -> int:
        return len(self.items)

    @property
    def rows_rejected(self) -> int:
        return len(self.rejections)

    def keeps(self, promise: Promise) -> bool:
        """Whether this state is the outcome a strategy promised for its defect."""
        if promise == "FAILED":
            return self.status == "FAILED"
        return self.status == "COMPLETE" and self.rows_rejected > 0


@dataclass(frozen=True)
class Observed:
    """What was actually produced, in the oracle's terms (see the test modules)."""

    status: object
    columns: Sequence[str] | None
    items: Sequence[Mapping[str, object]]
    rows_written: object
    rows_rejected: object
    rejected: Sequence[tuple[object, object]]  # (row, reason) as listed
    error: object
    #: The FAILED object's code, and each listed rejection's code.
    error_code: object = None
    rejection_codes: Sequence[object] | None = None


_FILE_DEFECTS = {
    FileDefect.NO_HEADER: ExpectedFailure("NO_HEADER", "no header"),
    FileDefect.NOT_UTF8: ExpectedFailure("NOT_UTF8", "not UTF-8"),
    FileDefect.CSV_SYNTAX: ExpectedFailure("CSV_SYNTAX", "CSV syntax error"),
}


def _header_line_bytes(document: Document) -> int:
    """The header's length as written (blank lines before it are not part of it)."""
    lines = document.lines()
    for _ in range(document.blank_lines_before_header):
        next(lines)
    line = next(lines)
    if not document.records and not document.dialect.trailing_newline:
        line = line.removesuffix(document.last_ending)
    return len(line.encode("utf-8"))


def header_failure(document: Document) -> ExpectedFailure | None:
    """The first problem that makes a header unusable, if any, in the contract's order."""
    header = document.header
    listed = 3 + sum(len(name.encode("utf-8")) + 1 for name in header)
    if (
        _header_line_bytes(document) > HEADER_LINE_LIMIT_BYTES
        or listed > ITEM_LIMIT_BYTES - MANIFEST_OTHER_FIELDS_BYTES
    ):
        return ExpectedFailure("HEADER_TOO_LARGE", f"column names take {listed} bytes")
    for position, name in enumerate(header, start=1):
        if len(name.encode("utf-8")) > ATTRIBUTE_NAME_LIMIT_BYTES:
            return ExpectedFailure("COLUMN_NAME_TOO_LONG", f"column {position}'s name")
    if "" in header:
        return ExpectedFailure("EMPTY_COLUMN", "empty column name")
    reserved = [name for name in RESERVED_NAMES if name in header]
    if reserved:
        return ExpectedFailure("RESERVED_COLUMN", f"reserved column name(s) {reserved}")
    if len(set(header)) != len(header):
        return ExpectedFailure("DUPLICATE_COLUMN", "duplicate column names")
    return None


def item_size(item: Mapping[str, Value]) -> int:
    """The contract's item size: UTF-8 names and strings, 1 byte per NULL.

    A number (only ``row`` is one) counts as its digits plus one: an upper
    bound of DynamoDB's "about one byte per two digits, plus one", which the
    contract takes as the exact rule, so an item is judged to the byte.
    """
    size = 0
    for name, value in item.items():
        size += len(name.encode("utf-8"))
        if value is None:
            size += 1
        elif isinstance(value, int):
            size += len(str(value)) + 1
        else:
            size += len(value.encode("utf-8"))
    return size


def _failed(source: str, failure: ExpectedFailure) -> ExpectedState:
    return ExpectedState(source, "FAILED", None, (), (), failure)


def expected_state(document: AnyDocument | HandWritten, source: str) -> ExpectedState:
    """The table state the contract promises for ``document`` ingested as ``source``."""
    if isinstance(document, HandWritten):
        return expected_state(document.meaning, source)
    if isinstance(document, CorruptDocument):
        return _failed(source, _FILE_DEFECTS[document.defect])
    assert isinstance(document, Document)
    failure = header_failure(document)
    if failure is not None:
        return _failed(source, failure)
    header = document.header
    width = len(header)
    items: list[Item] = []
    rejections: list[ExpectedRejection] = []
    row = 0
    for cells in document.records:
        if not cells:  # a blank line: not a record
            continue
        row += 1
        if len(cells) != width:
            rejections.append(ExpectedRejection(row, FIELD_COUNT, (str(len(cells)), str(width))))
            continue
        item: Item = {"source": source, "row": row}
        item.update(
            (name, str(cell) if cell != "" else None)
            for name, cell in zip(header, cells, strict=True)
        )
        size = item_size(item)
        if size > ITEM_LIMIT_BYTES:
            rejections.append(ExpectedRejection(row, ITEM_TOO_LARGE, (str(size),)))
            continue
        items.append(item)
    return ExpectedState(source, "COMPLETE", header, tuple(items), tuple(rejections), None)


# -- comparison ---------------------------------------------------------------

#: How many differences of each kind a report shows.
_SHOWN = 5


def _clip(value: object, limit: int = 120) -> str:
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} chars)"


def _rows_by_number(
    items: Sequence[Mapping[str, object]], what: str, out: list[str]
) -> dict[object, Mapping[str, object]]:
    rows: dict[object, Mapping[str, object]] = {}
    for item in items:
        number = item.get("row")
        if number in rows:
            out.append(f"{what} has row {number!r} twice")
        rows[number] = item
    return rows


def item_differences(
    expected: Sequence[Mapping[str, object]], actual: Sequence[Mapping[str, object]]
) -> list[str]:
    """Missing, extra and altered rows and attributes (a few of each, with counts)."""
    out: list[str] = []
    want = _rows_by_number(expected, "expectation", out)
    got = _rows_by_number(actual, "table", out)
    missing = [row for row in want if row not in got]
    extra = [row for row in got if row not in want]
    if missing:
        out.append(
            f"{len(missing)} row(s) missing, e.g. {missing[:_SHOWN]}: "
            + "; ".join(_clip(want[r]) for r in missing[:2])
        )
    if extra:
        out.append(
            f"{len(extra)} unexpected row(s), e.g. {extra[:_SHOWN]}: "
            + "; ".join(_clip(got[r]) for r in extra[:2])
        )
    altered = 0
    for row, item in want.items():
        other = got.get(row)
        if other is None or other == item:
            continue
        altered += 1
        if altered > _SHOWN:
            continue
        for name in item.keys() - other.keys():
            out.append(f"row {row}: attribute {name!r} missing (expected {_clip(item[name])})")
        for name in other.keys() - item.keys():
            out.append(f"row {row}: unexpected attribute {name!r} = {_clip(other[name])}")
        for name in item.keys() & other.keys():
            if item[name] != other[name] or type(item[name]) is not type(other[name]):
                out.append(
                    f"row {row}: {name!r} is {_clip(other[name])}, expected {_clip(item[name])}"
                )
    if altered > _SHOWN:
        out.append(f"... {altered} altered rows in all")
    return out


def differences(
    expected: ExpectedState, observed: Observed, *, listed: int | None = LISTED_REJECTIONS
) -> list[str]:
    """Everything in ``observed`` that is not what ``expected`` says; empty when equal.

    ``listed`` is how many rejections ``observed.rejected`` lists (the manifest
    lists the first 100; the parsing core yields all of them: ``None``).
    """
    out: list[str] = []
    if observed.status != expected.status:
        out.append(
            f"status is {observed.status!r}, expected {expected.status!r} "
            f"(error: {_clip(observed.error, 400)})"
        )
    if expected.failure is not None:
        if not expected.failure.explained_by(observed.error_code, observed.error):
            out.append(
                f"error {_clip(observed.error, 400)} (code {observed.error_code!r}) is not "
                f"{expected.failure.code} ({expected.failure.cause})"
            )
        leftover = (observed.rows_written, observed.rows_rejected, list(observed.rejected))
        if leftover != (0, 0, []):
            out.append(f"(rows_written, rows_rejected, rejected) is {leftover} on a FAILED object")
    else:
        if observed.error is not None:
            out.append(f"unexpected error recorded: {_clip(observed.error, 400)}")
        if observed.columns is None or tuple(observed.columns) != expected.columns:
            out.append(
                f"columns are {_clip(observed.columns, 400)}, "
                f"expected {_clip(expected.columns, 400)}"
            )
        counts = (observed.rows_written, observed.rows_rejected)
        if counts != (expected.rows_written, expected.rows_rejected):
            out.append(
                f"(rows_written, rows_rejected) is {counts}, expected "
                f"{(expected.rows_written, expected.rows_rejected)}"
            )
        shown = expected.rejections if listed is None else expected.rejections[:listed]
        rows = [row for row, _ in observed.rejected]
        if rows != [r.row for r in shown]:
            out.append(
                f"rejected rows listed are {_clip(rows, 300)}, "
                f"expected {_clip([r.row for r in shown], 300)}"
            )
        else:
            codes = observed.rejection_codes or []
            if len(codes) != len(observed.rejected):
                out.append(f"{len(codes)} rejection codes for {len(observed.rejected)} rejections")
            for rejection, (_, reason), code in zip(shown, observed.rejected, codes, strict=False):
                if not rejection.explained_by(code, reason):
                    out.append(
                        f"row {rejection.row}: rejected with code {code!r}, reason {reason!r}; "
                        f"expected {rejection.code} ({', '.join(rejection.facts)})"
                    )
                    break
    out.extend(item_differences(expected.items, observed.items))
    return out
