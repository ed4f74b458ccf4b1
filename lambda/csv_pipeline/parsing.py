"""The pure parsing core: CSV text in, DynamoDB items and rejections out.

Nothing here touches AWS, so the whole data contract can be unit-tested and
property-tested without an emulator. The handler feeds it S3's streaming body
through :class:`LineReader`; this module only ever holds one record at a time.
"""

from __future__ import annotations

import codecs
import csv
import io
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import BinaryIO

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

#: The csv module refuses fields longer than this. Anything past the item
#: limit is rejected row by row anyway; the cap only bounds memory for a
#: pathological field (e.g. an unterminated quote swallowing the file).
FIELD_SIZE_LIMIT = 4 * 1024 * 1024

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


class LineReader:
    """The lines of a UTF-8 byte stream, plus how many bytes they took.

    Yields exactly what ``io.TextIOWrapper(body, encoding="utf-8-sig",
    newline="")`` yields (lines end in ``\n``, ``\r`` or ``\r\n``,
    untranslated; a BOM at offset 0 is dropped; invalid UTF-8 raises
    ``UnicodeDecodeError``), and keeps :attr:`offset`: the position in
    the object just past the last line handed out. The csv reader pulls lines
    only as a record needs them, so right after a record is yielded ``offset``
    is where the next record starts — a checkpoint that a later invocation
    resumes from with a ranged GET instead of re-reading the file.

    Each line is decoded on its own: a line break byte never occurs inside a
    multi-byte UTF-8 sequence, so no character is ever split, and a decoding
    error points at the exact line.
    """

    def __init__(self, body: BinaryIO, *, offset: int = 0, chunk_size: int = 64 * 1024) -> None:
        self._body = body
        self._chunk_size = chunk_size
        #: Absolute position in the object of the next byte to be consumed.
        self.offset = offset

    def __iter__(self) -> Iterator[str]:
        read, size = self._body.read, self._chunk_size
        pending: list[bytes] = []  # pieces of a line whose end has not arrived yet
        if self.offset == 0:
            head = b""
            while len(head) < len(codecs.BOM_UTF8):
                data = read(size)
                if not data:
                    break
                head += data
            if head.startswith(codecs.BOM_UTF8):
                head = head[len(codecs.BOM_UTF8) :]
                self.offset = len(codecs.BOM_UTF8)
            if head:
                pending.append(head)
        offset = self.offset
        while True:
            data = read(size)
            if not data:
                break
            if b"\n" not in data and b"\r" not in data:
                pending.append(data)
                continue
            if pending:
                pending.append(data)
                data = b"".join(pending)
                pending = []
            lines = data.splitlines(keepends=True)
            # The last piece is complete only if it ends in \n: one ending in
            # \r may be the first half of a \r\n split across two reads.
            if not lines[-1].endswith(b"\n"):
                pending.append(lines.pop())
            for line in lines:
                offset += len(line)
                self.offset = offset
                yield line.decode("utf-8")
        if pending:
            rest = b"".join(pending)
            for line in rest.splitlines(keepends=True):
                offset += len(line)
                self.offset = offset
                yield line.decode("utf-8")


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
        raise FileRejected(EMPTY_COLUMN, f"header has empty column name(s) at position(s) {empty}")
    reserved = sorted(RESERVED_COLUMNS.intersection(columns))
    if reserved:
        raise FileRejected(
            RESERVED_COLUMN,
            f"header uses reserved column name(s) {reserved}: "
            "'source' and 'row' are the table's key attributes",
        )
    seen: set[str] = set()
    duplicates: list[str] = []
    for name in columns:
        if name in seen and name not in duplicates:
            duplicates.append(name)
        seen.add(name)
    if duplicates:
        raise FileRejected(DUPLICATE_COLUMN, f"header has duplicate column name(s) {duplicates}")


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
    """Build the item: every column an attribute, blanks as NULL, no type guessing."""
    item = key_of(source, row)
    for name, cell in zip(columns, cells, strict=False):
        item[name] = {"NULL": True} if cell == "" else {"S": cell}
    return item


class CsvDocument:
    """A CSV object read record by record, header validated up front.

    Iterating yields a :class:`Record` or :class:`Rejection` for each record
    after the header, numbered from 1. Completely empty lines are not records.
    Any problem that spoils the whole file raises :class:`FileRejected`.

    To continue a document from a checkpoint, pass the text from that point
    on plus the ``columns`` and the ``records_seen`` / ``lines_seen`` counts
    at the checkpoint: numbering and error messages carry on as if the file
    had been read in one pass.
    """

    def __init__(
        self,
        text: Iterable[str],
        source: str,
        *,
        columns: list[str] | None = None,
        records_seen: int = 0,
        lines_seen: int = 0,
    ) -> None:
        csv.field_size_limit(FIELD_SIZE_LIMIT)
        self.source = source
        # strict=True turns malformed quoting into an error instead of
        # silently gluing stray quotes into values.
        self._reader = csv.reader(text, strict=True)
        self.records_seen = records_seen
        self._lines_before = lines_seen
        if columns is None:
            header = self._next_nonblank()
            if header is None:
                raise FileRejected(NO_HEADER, "object is empty: no header line")
            columns = header
        validate_header(columns)
        self.columns: list[str] = columns

    @property
    def lines_seen(self) -> int:
        """Physical lines consumed so far (quoted line breaks included)."""
        return self._lines_before + self._reader.line_num

    def _next_nonblank(self) -> list[str] | None:
        while True:
            try:
                cells = next(self._reader)
            except StopIteration:
                return None
            except (UnicodeDecodeError, csv.Error) as exc:
                raise self._rejected(exc) from exc
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
        columns, source = self.columns, self.source
        width = len(columns)
        # Most rows are far below the item limit: an upper bound on their size
        # (UTF-8 takes at most 4 bytes a character) settles them without
        # encoding every cell; only rows near the limit are measured exactly.
        fixed = item_size(key_of(source, 0)) + 20 + sum(len(c.encode("utf-8")) + 1 for c in columns)
        roomy = MAX_ITEM_BYTES - fixed
        next_nonblank = self._next_nonblank
        while True:
            cells = next_nonblank()
            if cells is None:
                return
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


def _wrong_width(row: int, fields: int, width: int) -> Rejection:
    return Rejection(row, FIELD_COUNT, f"has {fields} fields, header has {width}")


def _too_large(row: int, size: int) -> Rejection:
    return Rejection(
        row, ITEM_TOO_LARGE, f"item is {size} bytes, over DynamoDB's {MAX_ITEM_BYTES}-byte limit"
    )


def parse_bytes(data: bytes, source: str) -> tuple[list[str], list[Outcome]]:
    """Parse a whole in-memory document the way the handler reads an object."""
    document = CsvDocument(LineReader(io.BytesIO(data)), source)
    return document.columns, list(document)
