"""How far one version's work on a source has got, as recorded in its manifest.

Work on a source has two stages. While the object is **read**, a
``checkpoint`` says where the next record starts (byte offset, record and
line numbers). Once reading has ended, the **clean-up** removes rows of
earlier versions past this version's last row (or every row, when the file
FAILED), and ``cleanup`` says how far that has got. A retry or a follow-up
invocation resumes at whichever stage is recorded; each position only ever
grows, which is how an invocation tells whether it made progress.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Checkpoint:
    """Where the next record starts, and how far numbering had got."""

    offset: int = 0
    records: int = 0
    lines: int = 0

    def as_value(self) -> dict[str, int]:
        return {"offset": self.offset, "records": self.records, "lines": self.lines}

    @classmethod
    def from_value(cls, value: dict[str, Any] | None) -> Checkpoint | None:
        if not value:
            return None
        return cls(int(value["offset"]), int(value["records"]), int(value["lines"]))


@dataclass(frozen=True)
class Cleanup:
    """Reading has ended: rows past ``keep`` go, then the manifest becomes ``status``."""

    keep: int
    status: str
    #: Every row of the source up to this one is settled (``keep`` at first).
    cursor: int
    #: Why, and its code, when ``status`` is FAILED.
    error: str | None = None
    error_code: str | None = None

    def as_value(self) -> dict[str, Any]:
        value: dict[str, Any] = {"keep": self.keep, "status": self.status, "cursor": self.cursor}
        if self.error is not None:
            value.update(error=self.error, error_code=self.error_code)
        return value

    @classmethod
    def from_value(cls, value: dict[str, Any] | None) -> Cleanup | None:
        if not value:
            return None
        return cls(
            int(value["keep"]),
            str(value["status"]),
            int(value["cursor"]),
            value.get("error"),
            value.get("error_code"),
        )


@dataclass(frozen=True)
class Position:
    """Both stages' positions together: what "made progress" compares."""

    offset: int
    cleaning: bool
    cursor: int

    @classmethod
    def of(cls, checkpoint: Checkpoint | None, cleanup: Cleanup | None) -> Position:
        return cls(
            offset=checkpoint.offset if checkpoint else 0,
            cleaning=cleanup is not None,
            cursor=cleanup.cursor if cleanup else -1,
        )
