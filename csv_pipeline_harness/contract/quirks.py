"""Hand-written CSV: lines no ``csv.writer`` produces, each with its meaning stated literally.

People type CSV by hand and stitch files together: a quote in the middle of
a field, a space before an opening quote, a trailing comma, a blank line in
the middle, no line break at the end. The rest of the suite writes documents
with ``csv.writer``, which never produces these, and checks the parsing core
against the same module's reader. Here the meaning of each quirk is written
down as data (the cells the contract reads, or the code of the file-level
failure), so the pipeline is held to a statement rather than to ``csv.reader``.

The meanings follow the data contract: a field is quoted only when a quote
opens it; inside an unquoted field a quote is text; after a closing quote only
a delimiter or the end of the line may follow (``CSV_SYNTAX`` otherwise); an
empty line is not a record; a quoted empty field and an empty field are both
empty (NULL).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from functools import cached_property

from hypothesis import strategies as st
from hypothesis.strategies import SearchStrategy

from csv_pipeline_harness.contract.strategies import (
    BLANK_LINE,
    BOM,
    LINE_ENDINGS,
    CorruptDocument,
    Dialect,
    Document,
    FileDefect,
)


@dataclass(frozen=True)
class Quirk:
    """One line as typed (without its line ending) and what it means.

    ``cells`` is the record the contract reads from it (``()``: not a record),
    or the header's names for a header quirk; ``failure`` the ``error_code`` of
    the FAILED object when the line makes the whole file unusable.
    """

    name: str
    text: str
    cells: tuple[str, ...] = ()
    failure: str | None = None


#: Header lines. The data lines below are written for a header of two columns.
HEADER_QUIRKS = (
    Quirk("plain header", "id,text", ("id", "text")),
    Quirk("header after a UTF-8 BOM", BOM + "id,text", ("id", "text")),
    Quirk("quoted column names", '"id","text"', ("id", "text")),
    Quirk("space before a name is part of it", " id,text ", (" id", "text ")),
    Quirk(
        "trailing delimiter: an empty column name", "id,text,", ("id", "text", ""), "EMPTY_COLUMN"
    ),
    Quirk("text after a closing quote in the header", '"id"x,text', failure="CSV_SYNTAX"),
)

#: Data lines under a two-column header.
LINE_QUIRKS = (
    Quirk("quote inside an unquoted field", 'a"b,1', ('a"b', "1")),
    Quirk("two quotes inside an unquoted field", 'a""b,1', ('a""b', "1")),
    Quirk("space before an opening quote", 'x, "y"', ("x", ' "y"')),
    Quirk("space after a delimiter", "x, y", ("x", " y")),
    Quirk("empty quoted field", 'x,""', ("x", "")),
    Quirk("empty field", "x,", ("x", "")),
    Quirk("quoted empty and empty", '"",', ("", "")),
    Quirk("a lone delimiter: two empty fields", ",", ("", "")),
    Quirk("quoted space", '" ",x', (" ", "x")),
    Quirk("escaped quote in a quoted field", '"a""b",c', ('a"b', "c")),
    Quirk("a quoted quote", '"""",x', ('"', "x")),
    Quirk("backslash is text", 'a\\"b,c\\', ('a\\"b', "c\\")),
    Quirk("tab and semicolon are text", "a;b\tc,d", ("a;b\tc", "d")),
    Quirk("BOM at the start of a data line is text", BOM + "x,y", (BOM + "x", "y")),
    Quirk("quoted LF spans two lines", '"two\nlines",x', ("two\nlines", "x")),
    Quirk("quoted CRLF and CR", '"a\r\nb\rc",x', ("a\r\nb\rc", "x")),
    Quirk("quoted delimiter", '"a,b",c', ("a,b", "c")),
    Quirk("trailing delimiter: three fields", "x,y,", ("x", "y", "")),
    Quirk("one field only", "lonely", ("lonely",)),
    Quirk("only spaces: one field", "   ", ("   ",)),
    Quirk("blank line in the middle", ""),
    Quirk("text after a closing quote", '"x"y,1', failure="CSV_SYNTAX"),
    Quirk("space after a closing quote", '"x" ,1', failure="CSV_SYNTAX"),
)

#: A quote opened and never closed swallows the rest of the object: last line only.
UNCLOSED_QUOTE = Quirk("a quote never closed", '"x,1', failure="CSV_SYNTAX")

_FAILS = FileDefect.CSV_SYNTAX


@dataclass(frozen=True)
class HandWritten:
    """A hand-typed object: a header quirk, data-line quirks, each line's ending."""

    header: Quirk
    lines: tuple[Quirk, ...]
    endings: tuple[str, ...] = ("\n",)
    trailing_newline: bool = True

    @cached_property
    def text(self) -> str:
        every = (self.header, *self.lines)
        text = "".join(
            quirk.text + self.endings[n % len(self.endings)] for n, quirk in enumerate(every)
        )
        if not self.trailing_newline:
            text = text.removesuffix(self.endings[(len(every) - 1) % len(self.endings)])
        return text

    @cached_property
    def body(self) -> bytes:
        return self.text.encode("utf-8")

    @property
    def meaning(self) -> Document | CorruptDocument:
        """What the contract reads: the literal cells as a model the oracle judges.

        The first stated failure in the order the object is read decides a
        FAILED object (header problems come before any record's).
        """
        failure = next((q.failure for q in (self.header, *self.lines) if q.failure), None)
        if failure == "CSV_SYNTAX":
            return CorruptDocument(self.body, _FAILS)
        records = tuple(quirk.cells or BLANK_LINE for quirk in self.lines)
        return Document(self.header.cells, records, Dialect("\n"))

    def describe(self, limit: int = 4000) -> str:
        names = ", ".join(quirk.name for quirk in (self.header, *self.lines))
        return f"hand-written CSV ({names}): {self.text[:limit]!r}"


def named(name: str) -> Quirk:
    """The header or line quirk called ``name``."""
    return next(q for q in (*HEADER_QUIRKS, *LINE_QUIRKS, UNCLOSED_QUOTE) if q.name == name)


def every_record_quirk() -> HandWritten:
    """One document with every quirk that leaves a record, mixed line endings, no final break."""
    kept = [quirk for quirk in LINE_QUIRKS if quirk.failure is None and quirk.cells]
    kept.insert(len(kept) // 2, next(quirk for quirk in LINE_QUIRKS if not quirk.cells))
    return HandWritten(HEADER_QUIRKS[1], tuple(kept), ("\n", "\r\n", "\r"), trailing_newline=False)


def _sampled(quirks: Iterable[Quirk]) -> SearchStrategy[Quirk]:
    return st.sampled_from(tuple(quirks))


@st.composite
def hand_written_documents(draw: st.DrawFn, max_lines: int = 8) -> HandWritten:
    """A header quirk and up to ``max_lines`` line quirks; one in four also breaks the file.

    Quirks that fail the file are kept rare, so most documents show what the
    others mean; a never-closed quote can only be the last line.
    """
    header = draw(
        st.integers(0, 3).flatmap(lambda n: _sampled(HEADER_QUIRKS[:4] if n else HEADER_QUIRKS))
    )
    lines = draw(
        st.lists(_sampled(q for q in LINE_QUIRKS if q.failure is None), max_size=max_lines)
    )
    if draw(st.integers(0, 3)) == 0:
        failing = draw(_sampled((*(q for q in LINE_QUIRKS if q.failure), UNCLOSED_QUOTE)))
        at = len(lines) if failing is UNCLOSED_QUOTE else draw(st.integers(0, len(lines)))
        lines.insert(at, failing)
    endings = draw(st.lists(st.sampled_from(LINE_ENDINGS), min_size=1, max_size=4))
    return HandWritten(header, tuple(lines), tuple(endings), draw(st.booleans()))
