"""The parsing core's memory stays bounded whatever an object holds.

Before records were limited, a 40 MB line peaked at 176 MB RSS and an object
with no line break at all was read whole, so a large enough one ran the
Lambda out of memory. Here objects of tens of megabytes are streamed from
generators (never built as one bytes object in the test process) through the
reader the handler uses, and the peak of Python's traced allocations while
parsing must stay a few megabytes: about the record limit (800 KB) of raw
bytes, plus the csv module's buffer for a field under that limit, which it
keeps at 4 bytes a character.

For a benchmark, ``measure_all()`` returns the figures and
``python tests/test_parsing_memory.py`` prints them::

    python -c "import sys; sys.path.insert(0, 'tests'); import test_parsing_memory as m; m.main()"
"""

from __future__ import annotations

import io
import itertools
import sys
import time
import tracemalloc
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import BinaryIO, cast

import pytest

from csv_pipeline.parsing import (
    FIELD_COUNT,
    HEADER_TOO_LARGE,
    ITEM_TOO_LARGE,
    CsvDocument,
    FileRejected,
    LineReader,
    Record,
    Rejection,
)

MB = 1024 * 1024

#: The most a parse may allocate at once, whatever the object's size.
PEAK_LIMIT = 8 * MB

#: Without the bulk patterns of Python 3.11+ a record of many tiny fields is
#: scanned field by field: correct, but slow enough to keep small here.
FAST_SCAN = sys.version_info >= (3, 11)


class GeneratedBody(io.RawIOBase):
    """A read-only stream over pieces from a generator, as S3's streaming body is read.

    Each read returns new bytes, as a socket's would (so what the parser keeps
    is traced), filled up to the size asked for; the test itself holds one
    piece at a time.
    """

    def __init__(self, pieces: Iterable[bytes]) -> None:
        super().__init__()
        self._pieces = iter(pieces)
        self._piece = memoryview(b"")
        self.bytes_read = 0

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        wanted = sys.maxsize if size is None or size < 0 else size
        parts = []
        while wanted > 0:
            if not self._piece:
                self._piece = memoryview(next(self._pieces, b""))
                if not self._piece:
                    break
            part, self._piece = self._piece[:wanted], self._piece[wanted:]
            parts.append(part)
            wanted -= len(part)
        data = b"".join(parts)
        self.bytes_read += len(data)
        return data


def repeated(piece: bytes, total: int) -> Iterator[bytes]:
    """``total`` bytes of ``piece`` over and over (the same object each time: no copies)."""
    whole, rest = divmod(total, len(piece))
    yield from itertools.repeat(piece, whole)
    if rest:
        yield piece[:rest]


def good_rows(first: int, count: int) -> Iterator[bytes]:
    for i in range(first, first + count):
        yield f"{i},row {i}\r\n".encode()


_LINES = (b"x" * 63 + b"\n") * 1024  # 64-byte lines inside one quoted field
_TEXT = b"y" * (64 * 1024)


def object_without_a_line_break(size: int) -> Iterator[bytes]:
    """The whole object one line: its header line is too long to be one."""
    yield from repeated(_TEXT, size)


def record_without_a_line_break(size: int) -> Iterator[bytes]:
    yield b"id,text\n1,"
    yield from repeated(_TEXT, size)


def quoted_field_with_line_breaks(size: int) -> Iterator[bytes]:
    yield b'id,text\n1,"'
    yield from repeated(_LINES, size)
    yield b'"\r\n'
    yield from good_rows(2, 1000)


def long_row_between_good_rows(size: int) -> Iterator[bytes]:
    yield b"id,text\r\n"
    yield from good_rows(1, 1000)
    yield b'1001,"'
    yield from repeated(_TEXT + b'""', size)  # "" is a quote inside quotes
    yield b'"\r\n'
    yield from good_rows(1002, 1000)


def ordinary_rows(size: int) -> Iterator[bytes]:
    """Nothing long: 1 KB rows, to the object's size."""
    yield b"id,text\n"
    text = b"z" * 1000
    for i in range(size // 1010):
        yield b"%d,%s\r\n" % (i, text)


def wide_row(size: int) -> Iterator[bytes]:
    """A record of a few million tiny quoted fields (e.g. a QUOTE_ALL writer's)."""
    yield b"id,text\n"
    yield from repeated(b'"a",' * 16 * 1024, size)
    yield b"x\n1,2\n"


@dataclass(frozen=True)
class Measurement:
    """One parse of a generated object: what came out, the allocation peak, the time."""

    name: str
    size: int  # bytes generated
    read: int  # bytes the parser read
    records: int
    rejections: tuple[tuple[int, str], ...]  # (row, code)
    error: str | None  # FileRejected.code
    peak: int  # bytes (tracemalloc)
    seconds: float


def measure(name: str, make: Callable[[int], Iterator[bytes]], size: int) -> Measurement:
    """Parse ``make(size)`` as the handler does, tracing allocations."""
    body = GeneratedBody(make(size))
    records, rejections, error = 0, [], None
    tracemalloc.start()
    started = time.perf_counter()
    try:
        for outcome in CsvDocument(LineReader(cast(BinaryIO, body)), "bucket/big.csv"):
            if isinstance(outcome, Record):
                records += 1
            else:
                rejections.append((outcome.row, outcome.code))
    except FileRejected as exc:
        error = exc.code
    seconds = time.perf_counter() - started
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return Measurement(
        name, size, body.bytes_read, records, tuple(rejections), error, peak, seconds
    )


#: name -> (object, size generated in the test): the scenarios of ``measure_all``.
SCENARIOS: dict[str, tuple[Callable[[int], Iterator[bytes]], int]] = {
    "object without a line break": (object_without_a_line_break, 50 * MB),
    "record without a line break": (record_without_a_line_break, 50 * MB),
    "quoted field with line breaks": (quoted_field_with_line_breaks, 50 * MB),
    "20 MB row between good rows": (long_row_between_good_rows, 20 * MB),
    "row of tiny quoted fields": (wide_row, (5 if FAST_SCAN else 1) * MB),
    "ordinary rows": (ordinary_rows, 20 * MB),
}


def measure_all(scale: float = 1.0) -> list[Measurement]:
    """Every scenario, sizes times ``scale``: the figures for a benchmark."""
    return [measure(name, make, int(size * scale)) for name, (make, size) in SCENARIOS.items()]


def main() -> None:
    scale = float(sys.argv[1]) if len(sys.argv) > 1 else 1.0
    for m in measure_all(scale):
        outcome = m.error or f"{m.records} records, rejected {list(m.rejections)}"
        print(
            f"{m.name:32} {m.size / MB:6.1f} MB generated, {m.read / MB:6.1f} MB read: "
            f"peak {m.peak / MB:5.2f} MB, {m.seconds:5.2f} s; {outcome}"
        )


def run(name: str) -> Measurement:
    make, size = SCENARIOS[name]
    result = measure(name, make, size)
    assert result.peak < PEAK_LIMIT, f"{name}: peak {result.peak / MB:.1f} MB"
    return result


def test_an_object_without_a_line_break_fails_before_it_is_read_far() -> None:
    result = run("object without a line break")
    assert result.error == HEADER_TOO_LARGE
    assert result.read < 2 * MB  # the header limit (~1 MB) and a read or two


def test_a_record_without_a_line_break_is_rejected_unheld() -> None:
    result = run("record without a line break")
    assert (result.error, result.records, result.rejections) == (None, 0, ((1, ITEM_TOO_LARGE),))
    assert result.read == result.size + len(b"id,text\n1,")


def test_a_quoted_field_of_many_lines_is_rejected_and_the_rows_after_it_kept() -> None:
    result = run("quoted field with line breaks")
    assert (result.error, result.records, result.rejections) == (
        None,
        1000,
        ((1, ITEM_TOO_LARGE),),
    )


def test_a_long_row_between_good_rows_is_rejected_alone() -> None:
    result = run("20 MB row between good rows")
    assert (result.error, result.records, result.rejections) == (
        None,
        2000,
        ((1001, ITEM_TOO_LARGE),),
    )


def test_a_row_of_millions_of_tiny_fields_is_counted_unheld() -> None:
    result = run("row of tiny quoted fields")
    assert (result.error, result.records, result.rejections) == (None, 1, ((1, FIELD_COUNT),))


def test_ordinary_rows_keep_no_more_than_a_few_reads() -> None:
    result = run("ordinary rows")
    assert (result.error, result.records, result.rejections) == (None, 20 * MB // 1010, ())
    assert result.peak < MB, f"peak {result.peak / MB:.1f} MB"


@pytest.mark.parametrize("limit", [2 * MB, 16 * MB])
def test_the_measure_sees_a_record_held_whole(limit: int) -> None:
    """Raise the limit over an 8 MB record and the peak shows it held: the peaks above are real."""
    body = GeneratedBody(record_without_a_line_break(8 * MB))
    tracemalloc.start()
    (outcome,) = CsvDocument(LineReader(cast(BinaryIO, body)), "s", record_limit=limit)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    held = limit > 8 * MB
    assert isinstance(outcome, Rejection) and outcome.code == ITEM_TOO_LARGE
    assert outcome.reason.startswith("item is" if held else "record is")
    assert (peak > 8 * MB) == held, f"peak {peak / MB:.1f} MB"


if __name__ == "__main__":
    main()
