"""What the function's environment tunes, and when an invocation must stop.

Every knob has a default that suits real AWS; tests lower some of them to
make rare paths (continuations, clean-up across invocations) happen on small
files, independent of how fast the machine is.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any


def _number(name: str, default: float, minimum: float) -> float:
    return max(minimum, float(os.environ.get(name, default)))


def table_name() -> str:
    return os.environ["TABLE_NAME"]


def progress_every() -> int:
    """Log a progress line every this many records (env ``PROGRESS_EVERY``, 100)."""
    return int(_number("PROGRESS_EVERY", 100, 1))


def write_concurrency() -> int:
    """Batches in flight at once (env ``WRITE_CONCURRENCY``, 4)."""
    return int(_number("WRITE_CONCURRENCY", 4, 1))


def checkpoint_seconds() -> float:
    """How often progress is recorded (env ``CHECKPOINT_SECONDS``, 5).

    A checkpoint drains the writes in flight first; ``bench`` measured that
    at 5-8% of the throughput every 2 s, and about a third of that every 5 s,
    which is still at most 5 s of work redone after a crash.
    """
    return _number("CHECKPOINT_SECONDS", 5, 0.05)


def rows_per_invocation() -> float:
    """Records read plus rows cleaned up before an invocation hands on (env
    ``ROWS_PER_INVOCATION``; unset or 0: no limit, only the deadline counts)."""
    value = float(os.environ.get("ROWS_PER_INVOCATION", 0))
    return value if value > 0 else float("inf")


def max_continuations() -> int:
    """How many times one file may be handed to a next invocation (env
    ``MAX_CONTINUATIONS``, 100: at the 15-minute maximum timeout that is over
    a day of processing, far past any file this function is meant for)."""
    return int(_number("MAX_CONTINUATIONS", 100, 0))


class Deadline:
    """When this invocation must stop reading, and stop sending requests.

    ``margin`` before the runtime's end it stops reading and drains; the last
    write request starts at least ``request_seconds`` (plus a little) before
    the end, and the write client's timeouts end every request within
    ``request_seconds``, so no write outlives the invocation.
    """

    def __init__(self, context: Any, clock: Callable[[], float] = time.monotonic) -> None:
        now = clock()
        remaining_ms = getattr(context, "get_remaining_time_in_millis", None)
        #: Wall-clock time the runtime ends the invocation (None: no limit).
        self.end: float | None = None
        self.stop_at = self.give_up_at = float("inf")
        self.request_seconds = 4.0
        self._clock = clock
        if remaining_ms is None:
            return
        budget = remaining_ms() / 1000.0
        margin = min(10.0, max(2.0, budget * 0.25))
        self.request_seconds = margin / 2
        self.end = time.time() + budget
        self.stop_at = now + budget - margin
        self.give_up_at = now + budget - self.request_seconds - 0.1

    def passed(self) -> bool:
        return self._clock() >= self.stop_at
