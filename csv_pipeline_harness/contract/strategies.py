"""Hypothesis strategies for CSV objects the pipeline must ingest, or refuse.

Strategies generate *models* (:class:`Document`, :class:`CorruptDocument`)
rather than bytes. A model renders itself to the bytes that get uploaded, and
:mod:`oracle` derives the expected table state from the model, never from
those bytes read back, so a parser that misreads the bytes cannot agree with
itself by accident.

Documents are written by the stdlib ``csv.writer`` under the dialect choices
real producers make (LF or CRLF, minimal or full quoting, a UTF-8 BOM or not,
a final line break or not), or with LF, CRLF and lone CR mixed line by line,
as files stitched together from several sources end. Three properties of the
writer shape the models:

* A row with no fields is written as an empty line, which the data contract
  says is not a record: the model spells it :data:`BLANK_LINE`. A row of one
  empty field is written ``""`` and *is* a record (one NULL attribute).
* Before Python 3.13 the writer leaves a field holding a lone CR unquoted when
  lines end in LF, so the text no longer says what the row said. Documents in
  that dialect get no lone CR on such Pythons (CR still appears inside CRLF);
  see :attr:`Dialect.writes_lone_cr_faithfully`.
* Text that starts with U+FEFF *is* a BOM to any UTF-8 reader. Without a BOM
  of its own a document never starts with that character.

NUL appears in cells only where this Python's ``csv.reader`` accepts it (from
3.11; see :data:`CSV_READS_NUL`): on 3.10 it refuses NUL, so a NUL would only
measure the interpreter. Lone surrogates never appear: no UTF-8 text can hold
them.

Items at DynamoDB's size limit are a model of their own (:class:`SizedRows`):
an item's size includes its source, which only the test knows, so the model
pads its records to the byte once it is given the source.
"""

from __future__ import annotations

import csv
import enum
import io
import itertools
import math
import string
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import cache, cached_property
from typing import Any, Literal

from hypothesis import assume
from hypothesis import strategies as st
from hypothesis.strategies import SearchStrategy

# Ordinary documents stay far below ITEM_LIMIT_BYTES or far above it (see
# MAX_LONG_CELL_BYTES, oversized_cells); SizedRows builds items at any exact
# size around it.
from csv_pipeline_harness.contract.limits import ITEM_LIMIT_BYTES, RESERVED_NAMES

#: A row with no fields: written as an empty line, which is not a record.
BLANK_LINE: tuple[str, ...] = ()

BOM = "\ufeff"
LINE_TERMINATORS = ("\n", "\r\n")
#: What ends a line outside quotes: all three, and one document may mix them.
LINE_ENDINGS = ("\n", "\r\n", "\r")

#: Record counts around BatchWriteItem's 25 items a request, and several requests.
BATCH_BOUNDARY_COUNTS = (0, 1, 24, 25, 26, 49, 50, 51, 75, 100, 130)

#: Upper bound of one long (but not oversized) cell: eight of them stay under
#: a third of the item limit.
MAX_LONG_CELL_BYTES = 16 * 1024

_EXCLUDED = "\x00"
_SPACES = (" ", "\t", "\u00a0", "\u2003", "\u3000")
#: Characters other tools treat as line breaks; CSV and this pipeline do not.
_LINE_LOOKALIKES = ("\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\u2029")
_ASTRAL = (
    "\U0001f600",
    "\U0001d518",
    "\U00010348",
    "\U0010fffd",
    "\U0001f3f3\ufe0f\u200d\U0001f308",
)
#: Invisible characters; U+FEFF at the start of a name is a second "BOM".
_INVISIBLES = ("\ufeff", "\u200b", "\u00ad")
_CSV_SPECIALS = (",", '"', '""', ", ", "\r\n", "\n", "\r")
#: Cells a type-guessing writer would turn into numbers, booleans or NULL.
_TYPE_LOOKALIKES = (
    "0",
    "007",
    "-1",
    "1.50",
    "1e3",
    "0x1F",
    "NaN",
    "Infinity",
    "true",
    "False",
    "null",
    "NULL",
    "None",
    "N/A",
    "[]",
    "{}",
    "2024-02-30",
)
_NEAR_RESERVED = ("Source", "SOURCE", "Row", "ROW", " source", "row ", "rows", "source_", "_row")
_PLAIN_ALPHABET = string.ascii_letters + string.digits + " .-_/:@"
_NAME_ALPHABET = string.ascii_letters + string.digits + "_"
_INVALID_UTF8 = (
    b"\xff",  # never valid in UTF-8
    b"\xfe",
    b"\x80",  # continuation byte without a lead byte
    b"\xc3\x28",  # lead byte followed by a non-continuation
    b"\xc0\xaf",  # overlong encoding of "/"
    b"\xed\xa0\x80",  # an encoded surrogate
    b"\xf4\x90\x80\x80",  # beyond U+10FFFF
    b"\xe2\x82",  # truncated sequence
)


def _writer_quotes_lone_cr() -> bool:
    """Whether this Python's csv.writer quotes a lone CR when lines end in LF."""
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerow(["\r"])
    return buffer.getvalue().startswith('"')


WRITER_QUOTES_LONE_CR = _writer_quotes_lone_cr()


def _csv_reads_nul() -> bool:
    """Whether this Python's csv.reader takes NUL as data (3.11+) rather than an error."""
    try:
        return next(csv.reader(["a\x00b"])) == ["a\x00b"]
    except csv.Error:
        return False


CSV_READS_NUL = _csv_reads_nul()
#: NUL inside values, where the csv module reads it (see the module docstring).
_NUL_PIECES = ("\x00", "a\x00b", "\x00\x00") if CSV_READS_NUL else ()


# -- models -----------------------------------------------------------------


@dataclass(frozen=True)
class Dialect:
    """How a document is written; none of it may change what it means."""

    line_terminator: str = "\r\n"
    quote_all: bool = False
    bom: bool = False
    trailing_newline: bool = True
    #: Line endings taken in turn, line by line (blank lines too), instead of
    #: ``line_terminator``: a document that mixes LF, CRLF and lone CR. Empty:
    #: every line ends with ``line_terminator``.
    endings: tuple[str, ...] = ()

    @property
    def quoting(self) -> Literal[0, 1]:
        return csv.QUOTE_ALL if self.quote_all else csv.QUOTE_MINIMAL

    @property
    def writer_terminator(self) -> str:
        """What csv.writer is given: with mixed endings CRLF, so it quotes every CR and LF."""
        return "\r\n" if self.endings else self.line_terminator

    def ending(self, line: int) -> str:
        """How physical line ``line`` (0-based, blank lines before the header included) ends."""
        return self.endings[line % len(self.endings)] if self.endings else self.line_terminator

    @property
    def writes_lone_cr_faithfully(self) -> bool:
        """False where csv.writer would leave a lone CR unquoted (LF lines, minimal quoting)."""
        return self.quote_all or self.writer_terminator == "\r\n" or WRITER_QUOTES_LONE_CR


@dataclass(frozen=True)
class TiledRecords(Sequence[tuple[str, ...]]):
    """``total`` records cycling through ``templates``: large documents, cheaply.

    A non-blank first cell gets the record's position appended, so rows that
    land in the wrong place or twice do not look alike. Blank cells stay blank.
    """

    templates: tuple[tuple[str, ...], ...]
    total: int

    def __len__(self) -> int:
        return self.total

    def __getitem__(self, index: int) -> tuple[str, ...]:  # type: ignore[override]
        if not -self.total <= index < self.total:
            raise IndexError(index)
        index %= self.total
        template = self.templates[index % len(self.templates)]
        if not template or template[0] == "":
            return template
        return (f"{template[0]}#{index}", *template[1:])

    def __iter__(self) -> Iterator[tuple[str, ...]]:
        return (self[i] for i in range(self.total))


@dataclass(frozen=True)
class Document:
    """A CSV object as written by ``csv.writer``: header, rows, dialect.

    ``records`` may hold :data:`BLANK_LINE` and rows of any width; the header
    may be invalid. What the contract makes of all that is the oracle's job.
    """

    header: tuple[str, ...]
    records: Sequence[tuple[str, ...]]
    dialect: Dialect = Dialect()
    blank_lines_before_header: int = 0

    def _writer(self, buffer: io.StringIO) -> Any:
        return csv.writer(
            buffer, lineterminator=self.dialect.writer_terminator, quoting=self.dialect.quoting
        )

    def lines(self) -> Iterator[str]:
        """Each row as written (all physical lines of a record together), terminator included."""
        dialect, skipped = self.dialect, self.blank_lines_before_header
        yield from (dialect.ending(line) for line in range(skipped))
        buffer = io.StringIO()
        writer = self._writer(buffer)
        for line, row in enumerate(itertools.chain([self.header], self.records), start=skipped):
            writer.writerow(row)
            written = buffer.getvalue()
            if dialect.endings:
                written = written.removesuffix(dialect.writer_terminator) + dialect.ending(line)
            yield written
            buffer.seek(0)
            buffer.truncate()

    @property
    def last_ending(self) -> str:
        """The ending of the last line (the header's, when there are no records)."""
        return self.dialect.ending(self.blank_lines_before_header + len(self.records))

    @cached_property
    def text(self) -> str:
        """The document as text (without the BOM)."""
        if self.dialect.endings:
            text = "".join(self.lines())
        else:
            buffer = io.StringIO()
            buffer.write(self.dialect.line_terminator * self.blank_lines_before_header)
            writer = self._writer(buffer)
            writer.writerow(self.header)
            writer.writerows(self.records)
            text = buffer.getvalue()
        if not self.dialect.trailing_newline:
            text = text.removesuffix(self.last_ending)
        return text

    @cached_property
    def body(self) -> bytes:
        """The bytes uploaded: UTF-8, with the BOM when the dialect has one."""
        return ((BOM if self.dialect.bom else "") + self.text).encode("utf-8")

    def describe(self, limit: int = 4000) -> str:
        """The CSV text for a failure report (cut after ``limit`` characters)."""
        text = self.text
        shown = repr(text[:limit]) + (
            f" ... ({len(text) - limit} more characters)" if len(text) > limit else ""
        )
        bom = "UTF-8 BOM + " if self.dialect.bom else ""
        return f"CSV text ({len(self.body)} bytes, {bom}{len(self.records)} rows): {shown}"


class FileDefect(enum.Enum):
    """Defects of the bytes themselves, which the contract refuses as a whole."""

    NO_HEADER = "no header: empty object or only blank lines"
    NOT_UTF8 = "not UTF-8"
    CSV_SYNTAX = "CSV syntax error"


@dataclass(frozen=True)
class CorruptDocument:
    """Bytes that are not a CSV document under the contract, and why."""

    body: bytes
    defect: FileDefect
    base: Document | None = None

    def describe(self, limit: int = 4000) -> str:
        shown = repr(self.body[:limit]) + ("..." if len(self.body) > limit else "")
        return f"object bytes ({len(self.body)}, {self.defect.value}): {shown}"


AnyDocument = Document | CorruptDocument
Promise = Literal["FAILED", "ROWS_REJECTED"]


@dataclass(frozen=True)
class InvalidCase:
    """A defective document and the outcome the data contract promises for it."""

    document: AnyDocument
    promise: Promise
    defect: str


def reads_as_written(document: Document) -> bool:
    """False when the text would start with U+FEFF that a reader takes for a BOM."""
    return document.dialect.bom or not document.text.startswith(BOM)


# -- text -------------------------------------------------------------------


@cache
def _characters(*, lone_cr: bool) -> SearchStrategy[str]:
    excluded = _EXCLUDED + ("" if lone_cr else "\r")
    return st.characters(codec="utf-8", exclude_characters=excluded)


@cache
def _pieces(*, lone_cr: bool = True) -> SearchStrategy[str]:
    """Short fragments that stress quoting and Unicode handling."""
    specials = tuple(p for p in _CSV_SPECIALS if lone_cr or p != "\r")
    return st.one_of(
        st.text(_NAME_ALPHABET, min_size=1, max_size=4),
        st.sampled_from(specials),
        st.sampled_from(_SPACES + _LINE_LOOKALIKES + _ASTRAL + _INVISIBLES + _NUL_PIECES),
        st.text(_characters(lone_cr=lone_cr), min_size=1, max_size=4),
    )


@cache
def plain_cells() -> SearchStrategy[str]:
    """Everyday values, including ones a type-guessing writer would convert."""
    return st.one_of(
        st.text(_PLAIN_ALPHABET, min_size=1, max_size=12),
        st.sampled_from(_TYPE_LOOKALIKES),
    )


@cache
def whitespace_cells(*, lone_cr: bool = True) -> SearchStrategy[str]:
    """Non-empty cells of only whitespace: not blank, so never NULL."""
    breaks = ("\n", "\r\n", "\r") if lone_cr else ("\n", "\r\n")
    return st.lists(
        st.sampled_from(_SPACES + _LINE_LOOKALIKES + breaks), min_size=1, max_size=6
    ).map("".join)


@cache
def tricky_cells(*, lone_cr: bool = True) -> SearchStrategy[str]:
    """Commas, quotes, CR, LF, CRLF and Unicode, mixed."""
    return st.lists(_pieces(lone_cr=lone_cr), min_size=1, max_size=6).map("".join)


@cache
def unicode_cells(*, lone_cr: bool = True) -> SearchStrategy[str]:
    """Any Unicode text (astral planes too), bar NUL and lone surrogates."""
    return st.one_of(
        st.text(_characters(lone_cr=lone_cr), min_size=1, max_size=10),
        st.sampled_from(_ASTRAL),
    )


class Repeated(str):
    """``fragment * times + tail`` as a string whose repr is that expression.

    Long and oversized cells are repeats, so a failure report shows
    ``('ab' * 4096)`` rather than 400 KB of text, and still evaluates to the value.
    """

    fragment: str
    times: int
    tail: str

    def __new__(cls, fragment: str, times: int, tail: str = "") -> Repeated:
        value = super().__new__(cls, fragment * times + tail)
        value.fragment, value.times, value.tail = fragment, times, tail
        return value

    def __repr__(self) -> str:
        tail = f" + {self.tail!r}" if self.tail else ""
        return f"({self.fragment!r} * {self.times}{tail})"


def _fragments(*, lone_cr: bool) -> SearchStrategy[str]:
    return st.lists(_pieces(lone_cr=lone_cr), min_size=1, max_size=3).map("".join)


@cache
def long_cells(*, lone_cr: bool = True) -> SearchStrategy[str]:
    """Values of a few hundred bytes up to :data:`MAX_LONG_CELL_BYTES`."""

    def build(fragment: str, times: int) -> str:
        size = len(fragment.encode("utf-8"))
        return Repeated(fragment, max(1, min(times, MAX_LONG_CELL_BYTES // size)))

    return st.builds(build, _fragments(lone_cr=lone_cr), st.integers(64, 4096))


@cache
def oversized_cells(*, lone_cr: bool = True) -> SearchStrategy[str]:
    """One cell that alone puts an item over DynamoDB's limit (by at least 4 KB)."""

    def build(fragment: str, extra: int) -> str:
        size = len(fragment.encode("utf-8"))
        return Repeated(fragment, math.ceil((ITEM_LIMIT_BYTES + 4096) / size) + extra)

    # Line breaks inside values are covered by every other cell strategy; here
    # they would only make 400 KB of one-character lines.
    fragments = st.one_of(plain_cells(), unicode_cells(lone_cr=False))
    return st.builds(build, fragments.filter(lambda f: "\n" not in f), st.integers(0, 64))


@cache
def non_blank_cells(*, lone_cr: bool = True, long: bool = True) -> SearchStrategy[str]:
    kinds = [
        plain_cells(),
        whitespace_cells(lone_cr=lone_cr),
        tricky_cells(lone_cr=lone_cr),
        unicode_cells(lone_cr=lone_cr),
    ]
    if long:
        kinds.append(long_cells(lone_cr=lone_cr))
    return st.one_of(kinds)


@cache
def cells(*, lone_cr: bool = True, long: bool = True) -> SearchStrategy[str]:
    """A cell; half of them blank, because blank -> NULL is the contract's sharpest edge.

    ``long=False`` leaves out :func:`long_cells` (for rows repeated thousands of times).
    """
    filled = non_blank_cells(lone_cr=lone_cr, long=long)
    # A coin flip, not st.one_of(st.just(""), filled): one_of flattens nested
    # one_ofs, which would make the blank one branch of eight. Shrinks to blank.
    return st.booleans().flatmap(lambda nonblank: filled if nonblank else st.just(""))


# -- headers ------------------------------------------------------------------


@cache
def column_names(*, lone_cr: bool = True) -> SearchStrategy[str]:
    """Valid column names: non-empty, never exactly ``source`` or ``row``.

    Unicode (astral too), spaces, commas, quotes, line breaks, names that only
    look reserved, and leading/trailing whitespace (which is part of the name).
    """
    core = st.one_of(
        st.text(_NAME_ALPHABET, min_size=1, max_size=12),
        st.sampled_from(_NEAR_RESERVED + _TYPE_LOOKALIKES),
        tricky_cells(lone_cr=lone_cr),
        unicode_cells(lone_cr=lone_cr),
    )
    padding = st.sampled_from(("", "", " ", "  ", "\t", "\u3000"))
    return st.builds(lambda left, name, right: left + name + right, padding, core, padding).filter(
        lambda name: name not in RESERVED_NAMES
    )


@cache
def headers(*, max_columns: int = 8, lone_cr: bool = True) -> SearchStrategy[tuple[str, ...]]:
    """Valid headers: 1..max_columns unique column names."""
    return st.lists(
        column_names(lone_cr=lone_cr), min_size=1, max_size=max_columns, unique=True
    ).map(tuple)


# -- rows ---------------------------------------------------------------------


@cache
def records(
    width: int, *, lone_cr: bool = True, long: bool = True
) -> SearchStrategy[tuple[str, ...]]:
    """Records as wide as the header."""
    return st.lists(cells(lone_cr=lone_cr, long=long), min_size=width, max_size=width).map(tuple)


@cache
def ragged_records(
    width: int, *, lone_cr: bool = True, long: bool = True
) -> SearchStrategy[tuple[str, ...]]:
    """Records with one or more fields, but not ``width`` of them (up to ``width + 3``)."""
    return (
        st.integers(1, width + 2)
        .map(lambda n: n if n < width else n + 1)
        .flatmap(
            lambda n: st.lists(cells(lone_cr=lone_cr, long=long), min_size=n, max_size=n).map(tuple)
        )
    )


@cache
def oversized_records(width: int, *, lone_cr: bool = True) -> SearchStrategy[tuple[str, ...]]:
    """Full-width records whose item is over DynamoDB's 400 KB limit."""

    def build(row: tuple[str, ...], position: int, big: str) -> tuple[str, ...]:
        return (*row[:position], big, *row[position + 1 :])

    return st.builds(
        build,
        records(width, lone_cr=lone_cr),
        st.integers(0, width - 1),
        oversized_cells(lone_cr=lone_cr),
    )


@cache
def mixed_endings() -> SearchStrategy[tuple[str, ...]]:
    """LF, CRLF and lone CR taken in turn: each line of a document may end differently."""
    return st.lists(st.sampled_from(LINE_ENDINGS), min_size=2, max_size=5).map(tuple)


@cache
def dialects() -> SearchStrategy[Dialect]:
    """One line ending or (one time in four) mixed ones, either quoting, BOM or not."""
    return st.builds(
        Dialect,
        line_terminator=st.sampled_from(LINE_TERMINATORS),
        quote_all=st.booleans(),
        bom=st.booleans(),
        trailing_newline=st.booleans(),
        endings=st.integers(0, 3).flatmap(lambda n: mixed_endings() if n == 0 else st.just(())),
    )


@cache
def record_counts(max_few: int = 8) -> SearchStrategy[int]:
    """Mostly ``0..max_few``; one draw in four a count from :data:`BATCH_BOUNDARY_COUNTS`.

    0, 1, 24, 25 and 26 records, and several write batches, are where row
    numbering and batching can go wrong; keeping them one draw in four keeps
    the average document small.
    """
    few = st.integers(0, max_few)
    boundary = st.sampled_from(BATCH_BOUNDARY_COUNTS)
    return st.integers(0, 3).flatmap(lambda n: boundary if n == 0 else few)


def _insert_at(
    draw: st.DrawFn,
    rows: list[tuple[str, ...]],
    extra: SearchStrategy[tuple[str, ...]],
    min_count: int,
    max_count: int,
) -> None:
    """Insert ``min_count..max_count`` rows drawn from ``extra`` at drawn positions."""
    for _ in range(draw(st.integers(min_count, max_count))):
        rows.insert(draw(st.integers(0, len(rows))), draw(extra))


# -- documents ----------------------------------------------------------------


@st.composite
def documents(
    draw: st.DrawFn,
    *,
    max_records: int = 20,
    max_columns: int = 6,
    ragged: int = 0,
    oversized: int = 0,
    counts: SearchStrategy[int] | None = None,
) -> Document:
    """Well-formed documents: a valid header, records as wide as it, a few blank lines.

    ``ragged`` / ``oversized`` add that many (1..n) rows the contract rejects.
    ``counts`` draws the number of records instead of ``max_records``; over
    eight, the records are tiled from up to three drawn ones without long
    cells, so a count of 130 costs what a count of 3 does.
    """
    dialect = draw(dialects())
    lone_cr = dialect.writes_lone_cr_faithfully
    header = draw(headers(max_columns=max_columns, lone_cr=lone_cr))
    width = len(header)
    if counts is None:
        rows = draw(st.lists(records(width, lone_cr=lone_cr), max_size=max_records))
    else:
        count = draw(counts)
        if count <= 8:
            rows = draw(st.lists(records(width, lone_cr=lone_cr), min_size=count, max_size=count))
        else:
            few = st.lists(records(width, lone_cr=lone_cr, long=False), min_size=1, max_size=3)
            rows = list(TiledRecords(tuple(draw(few)), count))
    _insert_at(draw, rows, st.just(BLANK_LINE), 0, 2)
    if ragged:
        _insert_at(draw, rows, ragged_records(width, lone_cr=lone_cr), 1, ragged)
    if oversized:
        _insert_at(draw, rows, oversized_records(width, lone_cr=lone_cr), 1, oversized)
    document = Document(
        header=header,
        records=tuple(rows),
        dialect=dialect,
        blank_lines_before_header=draw(st.integers(0, 2)),
    )
    assume(reads_as_written(document))
    return document


@st.composite
def tiled_documents(
    draw: st.DrawFn, *, min_records: int, max_records: int, ragged: bool = False
) -> Document:
    """Documents of ``min_records..max_records`` records tiled from a few drawn ones.

    With ``ragged`` at least half the templates have the wrong width, so at
    least about half the records are rejected.
    """
    dialect = draw(dialects())
    lone_cr = dialect.writes_lone_cr_faithfully
    header = draw(headers(max_columns=5, lone_cr=lone_cr))
    width = len(header)
    # No long cells: a template is repeated up to a million times.
    templates = draw(
        st.lists(
            records(width, lone_cr=lone_cr, long=False), min_size=1, max_size=3 if ragged else 12
        )
    )
    if ragged:
        ragged_templates = ragged_records(width, lone_cr=lone_cr, long=False)
        _insert_at(draw, templates, ragged_templates, len(templates), 8)
    count = draw(st.integers(min_records, max_records))
    document = Document(header, TiledRecords(tuple(templates), count), dialect)
    assume(reads_as_written(document))
    return document


# -- defects ------------------------------------------------------------------


@st.composite
def documents_with_bad_header(
    draw: st.DrawFn, defect: Literal["empty", "duplicate", "reserved"]
) -> Document:
    """A document whose header has an empty, duplicate or reserved column name."""
    base = draw(documents(max_records=5))
    header = list(base.header)
    position = draw(st.integers(0, len(header)))
    if defect == "empty":
        name = ""
    elif defect == "duplicate":
        name = draw(st.sampled_from(base.header))
    else:
        name = draw(st.sampled_from(RESERVED_NAMES))
    header.insert(position, name)
    # Records widen with the header so the header is the only thing wrong.
    rows = tuple(
        row if row == BLANK_LINE else (*row[:position], "x", *row[position:])
        for row in base.records
    )
    document = Document(tuple(header), rows, base.dialect, base.blank_lines_before_header)
    assume(reads_as_written(document))
    return document


def headerless_objects() -> SearchStrategy[CorruptDocument]:
    """The empty object, or nothing but a BOM and/or blank lines."""
    return st.builds(
        lambda bom, terminator, lines: CorruptDocument(
            ((BOM if bom else "") + terminator * lines).encode("utf-8"), FileDefect.NO_HEADER
        ),
        st.booleans(),
        st.sampled_from(LINE_TERMINATORS),
        st.integers(0, 3),
    )


def _corruptible() -> SearchStrategy[Document]:
    """Small documents, or ones long enough that rows were written before the defect."""
    return st.one_of(documents(max_records=5), tiled_documents(min_records=30, max_records=80))


@st.composite
def not_utf8_objects(draw: st.DrawFn) -> CorruptDocument:
    """A document with invalid UTF-8 spliced in at a character boundary, or UTF-16."""
    base = draw(_corruptible())
    if draw(st.booleans()):
        return CorruptDocument(base.text.encode("utf-16"), FileDefect.NOT_UTF8, base)
    text = base.text
    at = draw(st.integers(0, len(text)))
    bom = BOM.encode("utf-8") if base.dialect.bom else b""
    body = (
        bom
        + text[:at].encode("utf-8")
        + draw(st.sampled_from(_INVALID_UTF8))
        + text[at:].encode("utf-8")
    )
    return CorruptDocument(body, FileDefect.NOT_UTF8, base)


@st.composite
def csv_syntax_error_objects(draw: st.DrawFn) -> CorruptDocument:
    """A document broken where ``csv.reader(strict=True)`` must refuse it.

    Either a line with text after a closing quote, anywhere, or a quote that is
    still open at the end of the object.
    """
    base = draw(_corruptible())
    lines = list(base.lines())
    unquoted = st.text(_characters(lone_cr=True).filter(lambda c: c != '"'), max_size=8)
    if draw(st.booleans()):
        stray = draw(st.characters(codec="utf-8", exclude_characters=_EXCLUDED + ',"\r\n'))
        bad = f'"{draw(unquoted)}"{stray}{draw(unquoted)}{base.dialect.line_terminator}'
        lines.insert(draw(st.integers(0, len(lines))), bad)
    else:
        lines.append('"' + draw(unquoted))
    bom = BOM if base.dialect.bom else ""
    return CorruptDocument((bom + "".join(lines)).encode("utf-8"), FileDefect.CSV_SYNTAX, base)


def _case(
    documents: SearchStrategy[AnyDocument], promise: Promise, defect: str
) -> SearchStrategy[InvalidCase]:
    return st.builds(InvalidCase, documents, st.just(promise), st.just(defect))


#: Every defect the data contract names, each tagged with the outcome it promises.
DEFECTS: dict[str, SearchStrategy[InvalidCase]] = {
    "ragged records": _case(documents(max_records=10, ragged=3), "ROWS_REJECTED", "ragged"),
    "item over 400 KB": _case(
        documents(max_records=4, oversized=2), "ROWS_REJECTED", "item over 400 KB"
    ),
    # >= 240 records, half of them or more ragged: over the 100 the manifest lists.
    "many rejections": _case(
        tiled_documents(min_records=240, max_records=300, ragged=True),
        "ROWS_REJECTED",
        "more rejections than the manifest lists",
    ),
    "empty column name": _case(documents_with_bad_header("empty"), "FAILED", "empty column name"),
    "duplicate column name": _case(
        documents_with_bad_header("duplicate"), "FAILED", "duplicate column name"
    ),
    "reserved column name": _case(
        documents_with_bad_header("reserved"), "FAILED", "column named source or row"
    ),
    "no header": _case(headerless_objects(), "FAILED", "empty object / only blank lines"),
    "not UTF-8": _case(not_utf8_objects(), "FAILED", "not UTF-8"),
    "CSV syntax error": _case(csv_syntax_error_objects(), "FAILED", "CSV syntax error"),
}


def invalid_documents() -> SearchStrategy[InvalidCase]:
    """Any of :data:`DEFECTS`."""
    return st.one_of(list(DEFECTS.values()))


@st.composite
def revised(draw: st.DrawFn, document: Document) -> Document:
    """An edit of ``document``: cut short, rows made ragged, cells blanked, rows appended.

    Same header and dialect, so a re-upload overwrites row numbers the first
    version used: the case where stale rows and values could survive.
    """
    width = len(document.header)
    lone_cr = document.dialect.writes_lone_cr_faithfully
    rows = list(document.records)[: draw(st.integers(0, len(document.records)))]
    for _ in range(draw(st.integers(0, 3)) if rows else 0):
        at = draw(st.integers(0, len(rows) - 1))
        if rows[at] == BLANK_LINE or draw(st.booleans()):
            rows[at] = draw(ragged_records(width, lone_cr=lone_cr))
        else:
            cells = list(rows[at])
            cells[draw(st.integers(0, len(cells) - 1))] = ""
            rows[at] = tuple(cells)
    rows += draw(st.lists(records(width, lone_cr=lone_cr), max_size=3))
    return Document(
        document.header, tuple(rows), document.dialect, document.blank_lines_before_header
    )


@st.composite
def revisions(draw: st.DrawFn) -> tuple[AnyDocument, AnyDocument]:
    """Two versions of one object: often an edit of the first, else anything.

    Never byte-identical: the same bytes are the same ETag, whose manifest is
    final already, so the second ingestion would compare the first one's rows
    again and test nothing.
    """
    first = draw(any_documents())
    if isinstance(first, Document) and draw(st.booleans()):
        second: AnyDocument = draw(revised(first))
    else:
        second = draw(any_documents())
    assume(second.body != first.body)
    return first, second


def any_documents() -> SearchStrategy[AnyDocument]:
    """Valid documents mostly, defective ones too: for replacement properties."""
    return st.one_of(
        documents(max_records=30),
        invalid_documents().map(lambda case: case.document),
    )


def object_names() -> SearchStrategy[str]:
    """Object-name endings with characters S3 URL-encodes in its events."""
    return st.text(
        st.sampled_from(
            string.ascii_letters + string.digits + " +%=&@!(),'~-_é\u00fc\u6771\U0001f5fc"
        ),
        min_size=1,
        max_size=12,
    )


# -- items at the size limit -------------------------------------------------------

#: What padding is made of: one to four bytes of UTF-8 a character, and
#: characters CSV must quote (a quote is doubled in the text, not in the item).
_FILLERS = ("x", "é", "€", "\U0001f600", '"', ",", " ")

#: An item's value, as the oracle writes it: a cell's text, None for NULL, or the row number.
ItemValue = str | int | None
SizeOf = Callable[[Mapping[str, ItemValue]], int]


@dataclass(frozen=True)
class SizedRows:
    """Records whose items are exactly ``sizes`` bytes as the contract counts them.

    An item's size includes its ``source`` (``<bucket>/<key>``), which only the
    test knows, so :meth:`document` builds the records for a given source: the
    first column of record ``i`` is ``fillers[i]`` repeated (plus a few ``x``)
    to the byte; the other columns hold ``rest``. ``size_of`` is the contract's
    item size (:func:`oracle.item_size`): the same rule then judges the result.
    """

    header: tuple[str, ...]
    sizes: tuple[int, ...]
    fillers: tuple[str, ...] = ("x",)
    rest: tuple[str, ...] = ()  # cells of the other columns ("" is NULL)
    dialect: Dialect = Dialect("\n")

    def document(self, source: str, size_of: SizeOf) -> Document:
        rows = []
        rest = (self.rest + ("",) * len(self.header))[: len(self.header) - 1]
        for row, size in enumerate(self.sizes, start=1):
            bare: dict[str, ItemValue] = {"source": source, "row": row}
            bare.update(
                (name, cell or None) for name, cell in zip(self.header, ("x", *rest), strict=True)
            )
            room = size - size_of(bare) + 1  # bytes for the first cell, "x" counted 1
            if room < 1:
                raise ValueError(f"an item of {size} bytes cannot hold {bare}")
            filler = self.fillers[(row - 1) % len(self.fillers)]
            width = len(filler.encode("utf-8"))
            cell = Repeated(filler, room // width, "x" * (room % width))
            rows.append((cell, *rest))
        return Document(self.header, tuple(rows), self.dialect)


@cache
def item_sizes() -> SearchStrategy[int]:
    """Exactly at the limit and one byte either side, accepted 200-400 KB items, a little over."""
    limit = ITEM_LIMIT_BYTES
    return st.one_of(
        st.sampled_from((limit - 1, limit, limit + 1)),
        st.integers(200 * 1024, limit - 1),
        st.integers(limit + 1, limit + 4096),
    )


@st.composite
def sized_rows(draw: st.DrawFn, max_records: int = 3) -> SizedRows:
    """One to ``max_records`` records of drawn exact item sizes, under a small valid header."""
    dialect = draw(dialects())
    lone_cr = dialect.writes_lone_cr_faithfully
    header = draw(headers(max_columns=3, lone_cr=lone_cr))
    sizes = draw(st.lists(item_sizes(), min_size=1, max_size=max_records))
    fillers = draw(st.lists(st.sampled_from(_FILLERS), min_size=1, max_size=len(sizes)))
    rest = draw(records(len(header) - 1, lone_cr=lone_cr, long=False))
    assume(reads_as_written(Document(header, (), dialect)))
    return SizedRows(header, tuple(sizes), tuple(fillers), rest, dialect)


# -- S3 events -------------------------------------------------------------------

#: What S3 names an upload: the function processes these records.
CREATED_EVENTS = (
    "ObjectCreated:Put",
    "ObjectCreated:Post",
    "ObjectCreated:Copy",
    "ObjectCreated:CompleteMultipartUpload",
)
#: Other S3 event names: the function must leave these records alone.
OTHER_EVENTS = (
    "ObjectRemoved:Delete",
    "ObjectRemoved:DeleteMarkerCreated",
    "ObjectRestore:Completed",
    "ObjectTagging:Put",
    "LifecycleExpiration:Delete",
)


@dataclass(frozen=True)
class EventRecord:
    """One record of a hand-built S3 event: what happened, in which bucket, to which key."""

    event_name: str
    ours: bool  # the pipeline's bucket, or one that is not
    name: str  # the key's last part, with characters S3 URL-encodes

    @property
    def is_upload(self) -> bool:
        return self.event_name.startswith("ObjectCreated:")


def event_records() -> SearchStrategy[EventRecord]:
    """Uploads to our bucket mostly; other events and another bucket a third of the time each."""
    names = st.integers(0, 2).flatmap(
        lambda n: st.sampled_from(OTHER_EVENTS if n == 0 else CREATED_EVENTS)
    )
    return st.builds(EventRecord, names, st.integers(0, 2).map(bool), object_names())
