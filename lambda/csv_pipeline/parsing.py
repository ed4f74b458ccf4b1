"""The pure parsing core: CSV text in, DynamoDB items and rejections out.

Nothing here touches AWS, so the whole data contract can be unit-tested and
property-tested without an emulator. The handler feeds it S3's streaming body
through :class:`LineReader`; this module only ever holds one record at a time,
and never one longer than its limit (see :func:`record_limit_for`): memory stays
bounded whatever the object holds, even 100 MB without a line break.
"""

from __future__ import annotations

import codecs
import csv
import dataclasses
import io
import re
import sys
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, BinaryIO, NamedTuple, NoReturn

if TYPE_CHECKING:
    from _csv import Reader as CsvReader

#: Attribute names taken by the table's key; a CSV column may not use them.
RESERVED_COLUMNS = frozenset({"source", "row"})

#: DynamoDB's hard limit on one item, in bytes (names + values, UTF-8).
MAX_ITEM_BYTES = 400 * 1024

#: DynamoDB's limit on one attribute name, in bytes of UTF-8.
MAX_ATTRIBUTE_NAME_BYTES = 65_535

#: Room the manifest item keeps for everything but its ``columns`` list
#: (status, counters, the listed rejections, the error, timestamps).
MANIFEST_OTHER_FIELDS_BYTES = 10 * 1024

#: What ``columns`` may take in the manifest item (a list: 3 bytes, plus
#: 1 byte and the UTF-8 of each name).
MAX_COLUMNS_BYTES = MAX_ITEM_BYTES - MANIFEST_OTHER_FIELDS_BYTES

#: A header line longer than this (raw bytes) is refused without being read
#: whole. A valid header has names of 1+ bytes whose list fits
#: :data:`MAX_COLUMNS_BYTES`: ``3 + sum(len + 1) <= B``, so ``n <= B / 2``; its
#: CSV text is at most ``2 * sum(len) + 3 * n + 1`` bytes (every name quoted,
#: every character a doubled quote, commas, CRLF) ``<= 2 * (B - 3) + n + 1
#: < 5 * B / 2 + 16``.
HEADER_LIMIT = 5 * MAX_COLUMNS_BYTES // 2 + 16

#: The csv module's own per-field cap, which would fail the whole file. Set
#: as high as every platform's C long allows: records longer than the
#: limits above never reach the csv module, and those limits bound memory.
FIELD_SIZE_LIMIT = 2**31 - 1

# Why a file is refused (``FileRejected.code``).
NOT_UTF8 = "NOT_UTF8"
NO_HEADER = "NO_HEADER"
EMPTY_COLUMN = "EMPTY_COLUMN"
DUPLICATE_COLUMN = "DUPLICATE_COLUMN"
RESERVED_COLUMN = "RESERVED_COLUMN"
CSV_SYNTAX = "CSV_SYNTAX"
HEADER_TOO_LARGE = "HEADER_TOO_LARGE"
COLUMN_NAME_TOO_LONG = "COLUMN_NAME_TOO_LONG"
FILE_ERROR_CODES = frozenset(
    {
        NOT_UTF8,
        NO_HEADER,
        EMPTY_COLUMN,
        DUPLICATE_COLUMN,
        RESERVED_COLUMN,
        CSV_SYNTAX,
        HEADER_TOO_LARGE,
        COLUMN_NAME_TOO_LONG,
    }
)

# Why a record is skipped (``Rejection.code``).
FIELD_COUNT = "FIELD_COUNT"
ITEM_TOO_LARGE = "ITEM_TOO_LARGE"
REJECTION_CODES = frozenset({FIELD_COUNT, ITEM_TOO_LARGE})

#: Low-level DynamoDB attribute value, e.g. ``{"S": "x"}`` or ``{"NULL": True}``.
AttributeValue = dict[str, str | bool]
Item = dict[str, AttributeValue]


def record_limit_for(columns: list[str]) -> int:
    """Raw bytes past which a data record cannot become an item within the limit.

    A record as wide as the header has at most ``2 * v + 2`` bytes a field for
    ``v`` bytes of value (quoted, every character a doubled quote), plus
    ``n - 1`` commas and a 2-byte line ending: ``<= 2 * sum(v) + 3 * n + 1``.
    Longer than the value returned, its values alone exceed the item limit; a
    record of another width is rejected whatever its length. So a longer
    record is rejected without being held, and no outcome changes.
    """
    return 2 * MAX_ITEM_BYTES + 3 * len(columns) + 16


class FileRejected(Exception):
    """The object as a whole cannot be ingested; the manifest records FAILED.

    Raised for problems no retry can fix (bad encoding, bad header, broken CSV
    syntax), so the handler records them and returns instead of re-raising.
    ``code`` (one of :data:`FILE_ERROR_CODES`) is for machines, ``str()`` for people.
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(code, message)
        self.code = code
        self.message = message

    def __str__(self) -> str:
        return self.message


@dataclass(frozen=True)
class Record:
    """One accepted CSV record, ready to be written."""

    row: int
    item: Item


@dataclass(frozen=True)
class Rejection:
    """One record skipped under the data contract: ``code`` for machines, ``reason`` for people."""

    row: int
    code: str
    reason: str


Outcome = Record | Rejection


class RecordTooLong(Exception):
    """Raised by iterating a :class:`LineReader` instead of handing out more than ``limit`` bytes.

    The reader stays usable: :meth:`LineReader.skip_record` reads past the
    record, and a new iteration continues after it.
    """


class MalformedRecord(Exception):
    """What the csv module or the UTF-8 decoder would have raised on a skipped record.

    ``code`` is :data:`NOT_UTF8` (``detail`` is the byte, e.g. ``0xff``) or
    :data:`CSV_SYNTAX` (``detail`` is the csv module's message). ``line``
    counts from the reader's position when it raised :class:`RecordTooLong`:
    1 is the first line the iteration had not handed out.
    """

    def __init__(self, code: str, line: int, detail: str) -> None:
        super().__init__(code, line, detail)
        self.code, self.line, self.detail = code, line, detail


@dataclass(frozen=True)
class RecordSpan:
    """A record read past by :meth:`LineReader.skip_record`."""

    fields: int  # how many fields csv.reader would have returned
    size: int  # its bytes, line ending included
    new_lines: int  # its physical lines the iteration had not handed out


class LineReader:
    """The lines of a UTF-8 byte stream, plus how many bytes they took.

    Yields what ``io.TextIOWrapper(body, encoding="utf-8-sig", newline="")``
    yields (lines end in ``\\n``, ``\\r`` or ``\\r\\n``, untranslated; a BOM at
    offset 0 is dropped; invalid UTF-8 raises ``UnicodeDecodeError``), and
    keeps :attr:`offset`: the position in the object just past the last line
    handed out. The csv reader pulls lines only as a record needs them, so
    right after a record is yielded ``offset`` is where the next record
    starts — a checkpoint that a later invocation resumes from with a ranged
    GET instead of re-reading the file.

    Each line is decoded on its own: a line break byte never occurs inside a
    multi-byte UTF-8 sequence, so no character is ever split, and a decoding
    error points at the exact line.

    Memory: with :attr:`limit` set, the consumer moves :attr:`record_start`
    to :attr:`offset` after each record, and iteration raises
    :class:`RecordTooLong` rather than let a record grow past ``limit``
    bytes. The bytes read since ``record_start`` are kept (at most about
    ``limit`` plus two reads) so that :meth:`skip_record` can scan the record
    from its start; anything before it is let go.
    """

    def __init__(self, body: BinaryIO, *, offset: int = 0, chunk_size: int = 64 * 1024) -> None:
        self._body = body
        self._chunk_size = chunk_size
        #: Absolute position in the object of the next byte to be consumed.
        self.offset = offset
        #: Where the record being read starts; the consumer moves it forward.
        self.record_start = offset
        #: Longest record handed out, in bytes; None: no limit, nothing kept.
        #: Read when an iteration starts.
        self.limit: int | None = None
        # Bytes read but not yet let go, from _kept_start on.
        self._kept: deque[bytes] = deque()
        self._kept_start = offset

    def __iter__(self) -> Iterator[str]:
        """The lines from :attr:`offset` on (which must be a record's start)."""
        self._skip_bom()
        self.record_start = self.offset
        limit = sys.maxsize if self.limit is None else self.limit
        offset = self.offset
        pending: list[bytes] = []  # pieces of a line whose end has not arrived yet
        waiting = 0  # bytes in pending
        cr = False  # pending ends in \r: a line, unless the next byte is \n
        for data in self._chunks():
            if not cr and b"\n" not in data and b"\r" not in data:
                pending.append(data)
                waiting += len(data)
                if offset + waiting - self.record_start > limit:
                    raise RecordTooLong
                continue
            if pending:
                pending.append(data)
                data = b"".join(pending)
                pending = []
            lines = data.splitlines(keepends=True)
            waiting, cr = 0, False
            # The last piece is complete only if it ends in \n: one ending in
            # \r may be the first half of a \r\n split across two reads.
            if not lines[-1].endswith(b"\n"):
                tail = lines.pop()
                pending.append(tail)
                waiting, cr = len(tail), tail.endswith(b"\r")
            if offset + len(data) - waiting - self.record_start > limit:
                # Some record may cross the limit in this read: check each line.
                yield from self._guarded(lines, limit)
                offset = self.offset
                continue
            for line in lines:
                offset += len(line)
                self.offset = offset
                yield line.decode("utf-8")
        if pending:
            yield from self._guarded(b"".join(pending).splitlines(keepends=True), limit)

    def _guarded(self, lines: list[bytes], limit: int) -> Iterator[str]:
        """Hand out ``lines`` one by one, unless one would take its record past ``limit``."""
        for line in lines:
            end = self.offset + len(line)
            if end - self.record_start > limit:
                raise RecordTooLong
            self.offset = end
            yield line.decode("utf-8")

    def _skip_bom(self) -> None:
        """At offset 0, read the first bytes and drop a UTF-8 BOM."""
        if self.offset != 0 or self._kept:
            return
        head = b""
        while len(head) < len(codecs.BOM_UTF8):
            data = self._body.read(self._chunk_size)
            if not data:
                break
            head += data
        if head.startswith(codecs.BOM_UTF8):
            head = head[len(codecs.BOM_UTF8) :]
            self.offset = self._kept_start = len(codecs.BOM_UTF8)
        if head:
            self._kept.append(head)

    def _chunks(self) -> Iterator[bytes]:
        """The bytes from :attr:`offset` on: those read ahead already, then the body's."""
        self._keep_from(self.offset)
        kept = self._kept
        yield from list(kept)
        keep = self.limit is not None
        if not keep:
            kept.clear()
        read, size = self._body.read, self._chunk_size
        while data := read(size):
            if keep:
                kept.append(data)
                self._let_go(self.record_start)
            yield data

    def _let_go(self, position: int) -> None:
        """Forget the reads that end at or before ``position``."""
        kept, start = self._kept, self._kept_start
        while kept and start + len(kept[0]) <= position:
            start += len(kept.popleft())
        self._kept_start = start

    def _keep_from(self, position: int) -> None:
        """Forget every byte before ``position``: the bytes kept start there."""
        self._let_go(position)
        kept = self._kept
        if kept and self._kept_start < position:
            kept[0] = kept[0][position - self._kept_start :]
            self._kept_start = position

    def skip_record(self) -> RecordSpan:
        """Read past the record that raised :class:`RecordTooLong`, never holding it whole.

        Scans it from :attr:`record_start` in chunks (see :class:`_RecordScan`)
        and leaves :attr:`offset` and :attr:`record_start` at the next record.
        Raises :class:`MalformedRecord` where csv.reader(strict=True) or the
        UTF-8 decoder would have failed on it.
        """
        self._keep_from(self.record_start)
        kept = self._kept
        seen = _LineCounter()  # lines the iteration already handed out
        start = self.record_start
        for piece in kept:
            if start >= self.offset:
                break
            seen.add(piece, 0, min(len(piece), self.offset - start))
            start += len(piece)

        def read() -> bytes:
            return kept.popleft() if kept else self._body.read(self._chunk_size)

        scan = _RecordScan(read)
        try:
            fields, lines = scan.record()
        except MalformedRecord as exc:
            raise MalformedRecord(exc.code, exc.line - seen.breaks, exc.detail) from None
        rest = scan.rest()
        if rest:
            kept.appendleft(rest)
        self.offset = self.record_start = self._kept_start = self.record_start + scan.size
        return RecordSpan(fields, scan.size, lines - seen.breaks)


class _LineCounter:
    """Physical lines in consecutive slices of bytes: ``\\r\\n``, ``\\r`` and ``\\n`` end one."""

    __slots__ = ("_after_cr", "at_line_start", "breaks")

    def __init__(self) -> None:
        self.breaks = 0
        self.at_line_start = True  # the last byte added ended a line (or none was added)
        self._after_cr = False

    def add(self, data: bytes, start: int, end: int) -> None:
        if end <= start:
            return
        breaks = (
            data.count(b"\n", start, end)
            + data.count(b"\r", start, end)
            - data.count(b"\r\n", start, end)
        )
        if self._after_cr and data[start] == _LF:
            breaks -= 1  # the \n of a \r\n split across two slices
        self.breaks += breaks
        last = data[end - 1]
        self._after_cr = last == _CR
        self.at_line_start = last in (_CR, _LF)

    @property
    def lines(self) -> int:
        """Physical lines touched: the breaks, plus a last line that has no break yet."""
        return self.breaks + (0 if self.at_line_start else 1)

    def copy(self) -> _LineCounter:
        other = _LineCounter()
        other.breaks, other.at_line_start, other._after_cr = (
            self.breaks,
            self.at_line_start,
            self._after_cr,
        )
        return other


_QUOTE, _COMMA, _CR, _LF, _NUL = b'"'[0], b","[0], b"\r"[0], b"\n"[0], 0
_EXPECTED_COMMA = "',' expected after '\"'"
_UNEXPECTED_EOF = "unexpected end of data"
_NUL_IN_LINE = "line contains NUL"


class _Bulk(NamedTuple):
    """A run of complete ``field,`` units, and one such unit (to count them)."""

    fields: re.Pattern[bytes]
    field: re.Pattern[bytes]


@dataclass(frozen=True)
class _Grammar:
    """The byte patterns a record is scanned with, for this Python's csv module.

    Python 3.10's csv refuses NUL ("line contains NUL") anywhere; 3.11+ takes
    it as a character. ``bulk`` takes a run of complete ``field,`` units in
    one call; it needs possessive quantifiers (3.11.5+), without which the
    regex engine keeps state for every repetition. Without it the scan goes
    field by field: the same results, slower on a record of many tiny fields.
    """

    nul_is_error: bool
    bulk: _Bulk | None  # None: field by field
    quoted_text: re.Pattern[bytes]  # inside quotes, up to a quote
    unquoted_stops: tuple[bytes, ...]  # in unquoted fields: a line break, a comma and quote


def _grammar(*, nul_is_error: bool, possessive: bool) -> _Grammar:
    nul = b"\x00" if nul_is_error else b""
    plain = _Grammar(
        nul_is_error=nul_is_error,
        bulk=None,
        quoted_text=re.compile(rb'[^"' + nul + rb"]*"),
        unquoted_stops=(b"\r", b"\n", b',"') + ((b"\x00",) if nul_is_error else ()),
    )
    if not possessive:
        return plain
    text = rb'[^"' + nul + rb"]*+"
    quoted_text = text + rb'(?:""' + text + rb")*+"  # "" pairs included
    unquoted = rb'[^,\r\n"' + nul + rb"][^,\r\n" + nul + rb"]*+"
    unit = rb'(?:"' + quoted_text + rb'"|' + unquoted + rb")?+,"
    return dataclasses.replace(
        plain,
        bulk=_Bulk(re.compile(rb"(?:" + unit + rb")*+"), re.compile(unit)),
        quoted_text=re.compile(quoted_text),
    )


def _match_end(pattern: re.Pattern[bytes], data: bytes, start: int) -> int:
    """Where a pattern that matches the empty string too stops matching at ``start``."""
    found = pattern.match(data, start)
    assert found is not None
    return found.end()


#: Possessive quantifiers came in 3.11, but before 3.11.5 they can match
#: wrongly (CPython gh-106052): 3.11.2 read a 400 KB quoted field of doubled
#: quotes as "unexpected end of data". Those releases scan field by field.
_GRAMMAR = _grammar(
    nul_is_error=sys.version_info < (3, 11), possessive=sys.version_info >= (3, 11, 5)
)


class _RecordScan:
    """One record's bytes, read in chunks: where it ends and what csv.reader would say.

    Works on bytes, not text: the characters CSV gives meaning to (quote,
    comma, CR, LF) are ASCII, which never occurs inside a multi-byte UTF-8
    sequence, so the structure is the same and positions are byte offsets.
    Every byte consumed also goes through an incremental UTF-8 decoder, and a
    syntax error is only reported once the rest of its line decodes: the
    handler's reader decodes a whole line before csv.reader sees any of it.
    Follows csv.reader(strict=True) with the default dialect: a quote opens
    quoting only at a field's start; ``""`` is a quote inside quotes; after
    the closing quote only a comma, CR, LF or the end may follow; the end
    inside quotes is an error.
    """

    def __init__(self, read: Callable[[], bytes], grammar: _Grammar | None = None) -> None:
        self._read = read
        self._grammar = grammar or _GRAMMAR
        self._buf = b""
        self._pos = 0
        self.size = 0  # bytes consumed
        self._lines = _LineCounter()
        self._utf8 = codecs.getincrementaldecoder("utf-8")()

    def record(self) -> tuple[int, int]:
        """Consume the record: (fields, physical lines); no fields for a blank line."""
        if self._peek() in (_CR, _LF):
            return 0, self._end()
        fields = 0  # complete fields so far; always at a field's start here
        while True:
            if self._peek() == _QUOTE:  # unquoted fields go faster below
                fields += self._whole_fields()
            if self._peek() == _QUOTE:
                self._take(1)
                after = self._closing_quote()
                if after == _COMMA:
                    self._take(1)
                    fields += 1
                    continue
                if after is None or after in (_CR, _LF):
                    return fields + 1, self._end()
                self._fail(_NUL_IN_LINE if self._is_nul(after) else _EXPECTED_COMMA)
            count, at_field_start = self._unquoted()
            fields += count
            if at_field_start:
                continue
            if self._is_nul(self._peek()):
                self._fail(_NUL_IN_LINE)
            return fields + 1, self._end()

    def rest(self) -> bytes:
        """What was read past the record."""
        return self._buf[self._pos :]

    def _is_nul(self, byte: int | None) -> bool:
        return byte == _NUL and self._grammar.nul_is_error

    def _peek(self) -> int | None:
        """The next byte, reading on when the buffer is used up; None at the end."""
        while self._pos == len(self._buf):
            data = self._read()
            if not data:
                return None
            self._buf, self._pos = data, 0
        return self._buf[self._pos]

    def _take(self, count: int) -> None:
        self._consume_to(self._pos + count)

    def _consume_to(self, end: int) -> None:
        """Check ``buf[pos:end]`` decodes, count its lines, move past it."""
        buf, start = self._buf, self._pos
        self._check_utf8(buf, start, end)
        self._lines.add(buf, start, end)
        self.size += end - start
        self._pos = end

    def _check_utf8(self, buf: bytes, start: int, end: int, *, final: bool = False) -> None:
        held = len(self._utf8.getstate()[0])  # a character's first bytes, from before
        try:
            self._utf8.decode(buf[start:end], final)
        except UnicodeDecodeError as exc:
            at = start + exc.start - held  # < start: in the bytes held
            lines = self._lines.copy()
            lines.add(buf, start, at)
            detail = f"0x{exc.object[exc.start]:02x}"
            raise MalformedRecord(NOT_UTF8, lines.breaks + 1, detail) from None

    def _check_utf8_at_end(self) -> None:
        """A character cut short by the end of the data fails, as the text wrapper's would."""
        self._check_utf8(b"", 0, 0, final=True)

    def _whole_fields(self) -> int:
        """Consume complete ``field,`` units in the buffer in one go (3.11+); how many."""
        bulk = self._grammar.bulk
        if bulk is None or self._peek() is None:
            return 0
        buf, start = self._buf, self._pos
        end = _match_end(bulk.fields, buf, start)
        count = sum(1 for _ in bulk.field.finditer(buf, start, end))
        self._consume_to(end)
        return count

    def _closing_quote(self) -> int | None:
        """Consume a quoted field's text and closing quote; the byte after (None: the end)."""
        while True:
            byte = self._peek()
            if byte is None:
                self._fail_at_end()
            if byte == _QUOTE:
                self._take(1)
                after = self._peek()
                if after != _QUOTE:
                    return after
                self._take(1)  # "" is a quote; still inside
            elif self._is_nul(byte):
                self._fail(_NUL_IN_LINE)
            else:
                self._consume_to(_match_end(self._grammar.quoted_text, self._buf, self._pos))

    def _unquoted(self) -> tuple[int, bool]:
        """Consume unquoted fields: (how many ended in a comma, whether at a field's start).

        Stops after a comma that a quote follows, or at the record's line
        break, the end, or (3.10) a NUL; commas between are counted in bulk.
        """
        count = 0
        while self._peek() is not None:
            buf, start = self._buf, self._pos
            stop = self._first(buf, start, self._grammar.unquoted_stops)
            if stop == len(buf):
                count += buf.count(b",", start)
                self._consume_to(stop)
                if buf[-1] == _COMMA:
                    return count, True
                continue
            count += buf.count(b",", start, stop)
            if buf[stop] == _COMMA:
                self._consume_to(stop + 1)
                return count + 1, True
            self._consume_to(stop)
            return count, False
        return count, False

    @staticmethod
    def _first(data: bytes, start: int, needles: tuple[bytes, ...]) -> int:
        """Where the first of ``needles`` occurs from ``start`` on (``len(data)``: nowhere).

        A few ``bytes.find`` calls, each no further than the best so far:
        faster than one regex, which cannot skip ahead to a literal.
        """
        end = len(data)
        for needle in needles:
            found = data.find(needle, start, end)
            if found >= 0:
                end = found
        return end

    def _end(self) -> int:
        """Consume the line ending (if any) after the last field; the record's lines."""
        byte = self._peek()
        if byte is None:
            self._check_utf8_at_end()
            return self._lines.lines
        self._take(1)
        if byte == _CR and self._peek() == _LF:
            self._take(1)
        return self._lines.breaks

    def _fail(self, message: str) -> NoReturn:
        """csv.reader stops at the next byte; but its whole line is decoded first."""
        line = self._lines.breaks + 1
        while self._peek() is not None:
            end = self._first(self._buf, self._pos, (b"\r", b"\n"))
            self._consume_to(end)
            if end < len(self._buf):
                break
        self._check_utf8_at_end()
        raise MalformedRecord(CSV_SYNTAX, line, message)

    def _fail_at_end(self) -> NoReturn:
        self._check_utf8_at_end()
        raise MalformedRecord(CSV_SYNTAX, self._lines.lines, _UNEXPECTED_EOF)


def validate_header(columns: list[str]) -> None:
    """Raise FileRejected when the header cannot name attributes one-to-one.

    Sizes first (the manifest item, then each name), then the names: the
    order a header's problems are reported in.
    """
    _check_header_sizes(columns)
    _check_header_names(columns)


def _check_header_sizes(columns: list[str]) -> None:
    sizes = [len(name.encode("utf-8")) for name in columns]
    listed = 3 + sum(size + 1 for size in sizes)
    if listed > MAX_COLUMNS_BYTES:
        raise FileRejected(
            HEADER_TOO_LARGE,
            f"header's {len(columns)} column names take {listed} bytes in the manifest, over "
            f"the {MAX_COLUMNS_BYTES} bytes its {MAX_ITEM_BYTES}-byte item has room for",
        )
    for position, size in enumerate(sizes, start=1):
        if size > MAX_ATTRIBUTE_NAME_BYTES:
            raise FileRejected(
                COLUMN_NAME_TOO_LONG,
                f"column {position}'s name is {size} bytes of UTF-8; DynamoDB attribute "
                f"names are at most {MAX_ATTRIBUTE_NAME_BYTES} bytes",
            )


def _check_header_names(columns: list[str]) -> None:
    empty = [i + 1 for i, name in enumerate(columns) if name == ""]
    if empty:
        raise FileRejected(
            EMPTY_COLUMN, f"header has empty column name(s) at position(s) {_few(empty)}"
        )
    reserved = sorted(RESERVED_COLUMNS.intersection(columns))
    if reserved:
        raise FileRejected(
            RESERVED_COLUMN,
            f"header uses reserved column name(s) {reserved}: "
            "'source' and 'row' are the table's key attributes",
        )
    seen: set[str] = set()
    duplicates: dict[str, None] = {}  # in order of first repeat
    for name in columns:
        if name in seen:
            duplicates[name] = None
        seen.add(name)
    if duplicates:
        raise FileRejected(
            DUPLICATE_COLUMN, f"header has duplicate column name(s) {_few(list(duplicates))}"
        )


def _few(values: list[int] | list[str], shown: int = 10, width: int = 60) -> str:
    """A list for an error message, cut short: the manifest item holds the message."""
    text = repr(
        [v if isinstance(v, int) or len(v) <= width else v[:width] + "..." for v in values[:shown]]
    )
    return text if len(values) <= shown else f"{text[:-1]}, ... ({len(values)} in all)]"


def item_size(item: Item) -> int:
    """DynamoDB's size of an item: UTF-8 names plus values, as AWS counts it.

    Numbers are counted generously (one byte per digit plus one) so the
    estimate never undershoots the real limit.
    """
    size = 0
    for name, value in item.items():
        size += len(name.encode("utf-8"))
        if "S" in value:
            size += len(str(value["S"]).encode("utf-8"))
        elif "N" in value:
            size += len(str(value["N"])) + 1
        else:
            size += 1
    return size


def key_of(source: str, row: int) -> Item:
    """The table key of one item of ``source``."""
    return {"source": {"S": source}, "row": {"N": str(row)}}


def to_item(source: str, row: int, columns: list[str], cells: list[str]) -> Item:
    """Build the item: every column an attribute, blanks as NULL, no type guessing.

    ``cells`` must be as many as ``columns`` (a record of another width is a
    rejection, never an item): a mismatch raises ``ValueError``.
    """
    item = key_of(source, row)
    for name, cell in zip(columns, cells, strict=True):
        item[name] = {"NULL": True} if cell == "" else {"S": cell}
    return item


class CsvDocument:
    """A CSV object read record by record, header validated up front.

    Iterating yields a :class:`Record` or :class:`Rejection` for each record
    after the header, numbered from 1. Completely empty lines are not records.
    Any problem that spoils the whole file raises :class:`FileRejected`.

    To continue a document from a checkpoint, pass a reader from that point
    on plus the ``columns`` and the ``records_seen`` / ``lines_seen`` counts
    at the checkpoint: numbering and error messages carry on as if the file
    had been read in one pass.

    Memory is bounded: a header over ``header_limit`` bytes fails the file
    (:data:`HEADER_TOO_LARGE`), and a record over ``record_limit`` bytes
    (default :func:`record_limit_for` the columns) is scanned without being
    held, with the outcome csv.reader would have led to: a
    :data:`FIELD_COUNT` or :data:`ITEM_TOO_LARGE` rejection, or the same
    file failure. Tests lower the limits to exercise that path.
    """

    def __init__(
        self,
        lines: LineReader,
        source: str,
        *,
        columns: list[str] | None = None,
        records_seen: int = 0,
        lines_seen: int = 0,
        record_limit: int | None = None,
        header_limit: int = HEADER_LIMIT,
    ) -> None:
        csv.field_size_limit(FIELD_SIZE_LIMIT)
        self.source = source
        self.records_seen = records_seen
        self._lines = lines
        if columns is None:
            self._reader = self._restart(header_limit, lines_seen)
            columns = self._read_header(header_limit)
            lines_seen = self.lines_seen
        validate_header(columns)
        self.columns: list[str] = columns
        self._record_limit = record_limit_for(columns) if record_limit is None else record_limit
        self._reader = self._restart(self._record_limit, lines_seen)

    @property
    def lines_seen(self) -> int:
        """Physical lines consumed so far (quoted line breaks included)."""
        return self._lines_before + self._reader.line_num

    def _restart(self, limit: int, lines_seen: int) -> CsvReader:
        """A csv reader from the line reader's position on, with a new record limit."""
        self._lines_before = lines_seen
        self._lines.limit = limit
        # strict=True turns malformed quoting into an error instead of
        # silently gluing stray quotes into values.
        return csv.reader(self._lines, strict=True)

    def _read_header(self, limit: int) -> list[str]:
        lines = self._lines
        while True:
            try:
                cells = next(self._reader)
            except StopIteration:
                raise FileRejected(NO_HEADER, "object is empty: no header line") from None
            except RecordTooLong:
                raise FileRejected(
                    HEADER_TOO_LARGE,
                    f"header is over {limit} bytes of CSV: too long for its column names to "
                    f"fit the manifest under DynamoDB's {MAX_ITEM_BYTES}-byte item limit",
                ) from None
            except (UnicodeDecodeError, csv.Error) as exc:
                raise self._rejected(exc) from exc
            lines.record_start = lines.offset
            if cells:
                return cells

    def _rejected(self, exc: UnicodeDecodeError | csv.Error) -> FileRejected:
        """The file failure for an error the line reader or csv reader raised."""
        if isinstance(exc, UnicodeDecodeError):
            return self._not_utf8(f"0x{exc.object[exc.start]:02x}", self.lines_seen + 1)
        return self._bad_syntax(str(exc), self.lines_seen)

    def _not_utf8(self, byte: str, line: int) -> FileRejected:
        return FileRejected(
            NOT_UTF8,
            f"object is not valid UTF-8: byte {byte} cannot be decoded "
            f"(after record {self.records_seen}, line {line})",
        )

    def _bad_syntax(self, detail: str, line: int) -> FileRejected:
        record = self.records_seen + 1
        return FileRejected(
            CSV_SYNTAX, f"CSV syntax error in record {record} (line {line}): {detail}"
        )

    def __iter__(self) -> Iterator[Outcome]:
        columns, source, lines = self.columns, self.source, self._lines
        width = len(columns)
        # Most rows are far below the item limit: an upper bound on their size
        # (UTF-8 takes at most 4 bytes a character) settles them without
        # encoding every cell; only rows near the limit are measured exactly.
        fixed = item_size(key_of(source, 0)) + 20 + sum(len(c.encode("utf-8")) + 1 for c in columns)
        roomy = MAX_ITEM_BYTES - fixed
        while True:
            # One loop per csv reader: a record over the limit ends it, and
            # reading goes on with a new reader after that record.
            try:
                for cells in self._reader:
                    lines.record_start = lines.offset
                    if not cells:
                        continue
                    self.records_seen += 1
                    row = self.records_seen
                    if len(cells) != width:
                        yield _wrong_width(row, len(cells), width)
                        continue
                    item = to_item(source, row, columns, cells)
                    if 4 * sum(map(len, cells)) > roomy:
                        size = item_size(item)
                        if size > MAX_ITEM_BYTES:
                            yield _too_large(row, size)
                            continue
                    yield Record(row, item)
                return
            except RecordTooLong:
                pass
            except (UnicodeDecodeError, csv.Error) as exc:
                raise self._rejected(exc) from exc
            rejection = self._skip_oversized(width)
            if rejection is not None:
                yield rejection

    def _skip_oversized(self, width: int) -> Rejection | None:
        """Read past a record over the limit; reject it as csv.reader's fields would have it.

        None for a blank line (which only a limit under 2 bytes takes for long).
        """
        try:
            span = self._lines.skip_record()
        except MalformedRecord as exc:
            line = self.lines_seen + exc.line
            if exc.code == NOT_UTF8:
                raise self._not_utf8(exc.detail, line) from None
            raise self._bad_syntax(exc.detail, line) from None
        self._reader = self._restart(self._record_limit, self.lines_seen + span.new_lines)
        if span.fields == 0:
            return None
        self.records_seen += 1
        if span.fields != width:
            return _wrong_width(self.records_seen, span.fields, width)
        return _too_long(self.records_seen, span.size)


def _wrong_width(row: int, fields: int, width: int) -> Rejection:
    return Rejection(row, FIELD_COUNT, f"has {fields} fields, header has {width}")


def _too_large(row: int, size: int) -> Rejection:
    return Rejection(
        row, ITEM_TOO_LARGE, f"item is {size} bytes, over DynamoDB's {MAX_ITEM_BYTES}-byte limit"
    )


def _too_long(row: int, size: int) -> Rejection:
    return Rejection(
        row,
        ITEM_TOO_LARGE,
        f"record is {size} bytes of CSV: its item would be over DynamoDB's "
        f"{MAX_ITEM_BYTES}-byte limit",
    )


def parse_bytes(data: bytes, source: str) -> tuple[list[str], list[Outcome]]:
    """Parse a whole in-memory document the way the handler reads an object."""
    document = CsvDocument(LineReader(io.BytesIO(data)), source)
    return document.columns, list(document)
