"""A one-line terminal progress bar, drawn only where a person is watching.

On a terminal the bar redraws in place; when output goes to a file or a CI
log nothing is drawn, so logs stay free of carriage-return noise.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import TextIO


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"


class ProgressBar:
    """``label [#######.......]  47%  detail`` on one line of ``stream``."""

    def __init__(self, label: str, total: int, stream: TextIO | None = None, width: int = 30):
        self.label = label
        self.total = max(total, 1)
        self.stream = stream or sys.stderr
        self.width = width
        self.enabled = self.stream.isatty()
        self.done = 0
        self._lock = threading.Lock()  # boto3 calls upload callbacks from threads
        self._drawn = 0.0

    def advance(self, amount: int, detail: str = "") -> None:
        with self._lock:
            self.update(self.done + amount, detail)

    def update(self, done: int, detail: str = "") -> None:
        self.done = min(done, self.total)
        now = time.monotonic()
        if not self.enabled or (now - self._drawn < 0.1 and self.done < self.total):
            return
        self._drawn = now
        fraction = self.done / self.total
        filled = int(self.width * fraction)
        bar = "#" * filled + "." * (self.width - filled)
        self.stream.write(f"\r{self.label} [{bar}] {fraction:4.0%}  {detail}\033[K")
        self.stream.flush()

    def close(self) -> None:
        if self.enabled:
            self.stream.write("\n")
            self.stream.flush()
