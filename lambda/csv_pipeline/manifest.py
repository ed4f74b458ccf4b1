"""The manifest item (``row = 0``): what happened to a source, readable by anyone.

Tests, the CLI and operators all decide "is this file done, and how did it
go?" from this one item, so it carries the object version (ETag), the status
and the counts, plus the first rejections and the error when FAILED.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from boto3.dynamodb.types import TypeDeserializer

from .expressions import attribute_value
from .parsing import key_of

PROCESSING = "PROCESSING"
COMPLETE = "COMPLETE"
FAILED = "FAILED"

#: How many rejections the manifest lists in full; the count is always exact.
MAX_LISTED_REJECTIONS = 100

#: Codes of FAILED manifests the handler records itself (the parsing core has the others).
UNEXPECTED = "UNEXPECTED"
NO_PROGRESS = "NO_PROGRESS"
TOO_MANY_CONTINUATIONS = "TOO_MANY_CONTINUATIONS"

_deserializer = TypeDeserializer()


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


@dataclass
class Manifest:
    """The data contract's fields of one source's manifest."""

    status: str
    etag: str
    sequencer: str | None = None
    rows_written: int = 0
    rows_rejected: int = 0
    rejected: list[dict[str, Any]] = field(default_factory=list)
    columns: list[str] = field(default_factory=list)
    error: str | None = None
    error_code: str | None = None
    started_at: str = field(default_factory=utc_now)
    finished_at: str | None = None

    def reject(self, row: int, reason: str, code: str) -> None:
        self.rows_rejected += 1
        if len(self.rejected) < MAX_LISTED_REJECTIONS:
            self.rejected.append({"row": row, "reason": reason, "code": code})

    def counters(self) -> dict[str, Any]:
        """The fields that grow while a file is read (recorded with each checkpoint)."""
        return {
            "rows_written": self.rows_written,
            "rows_rejected": self.rows_rejected,
            "rejected": self.rejected,
            "columns": self.columns,
        }

    def to_item(self, source: str) -> dict[str, Any]:
        attributes: dict[str, Any] = {
            "status": self.status,
            "etag": self.etag,
            "started_at": self.started_at,
            **self.counters(),
        }
        for name in ("sequencer", "error", "error_code", "finished_at"):
            value = getattr(self, name)
            if value is not None:
                attributes[name] = value
        item = key_of(source, 0)
        item.update({k: attribute_value(v) for k, v in attributes.items()})
        return item

    @classmethod
    def from_item(cls, item: dict[str, Any]) -> Manifest:
        """The contract fields of a manifest read with :func:`read` (extra attributes dropped)."""
        return cls(
            status=str(item["status"]),
            etag=str(item["etag"]),
            sequencer=item.get("sequencer"),
            rows_written=int(item.get("rows_written", 0)),
            rows_rejected=int(item.get("rows_rejected", 0)),
            rejected=[
                {"row": int(r["row"]), "reason": str(r["reason"]), "code": str(r["code"])}
                for r in item.get("rejected", [])
            ],
            columns=[str(c) for c in item.get("columns", [])],
            error=item.get("error"),
            error_code=item.get("error_code"),
            started_at=str(item.get("started_at") or utc_now()),
        )


def read(client: Any, table: str, source: str) -> dict[str, Any] | None:
    """The manifest of ``source`` as plain Python values, or None."""
    response = client.get_item(TableName=table, Key=key_of(source, 0), ConsistentRead=True)
    item = response.get("Item")
    if item is None:
        return None
    return {k: _deserializer.deserialize(v) for k, v in item.items()}
