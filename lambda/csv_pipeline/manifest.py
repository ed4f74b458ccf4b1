"""The manifest item (``row = 0``): what happened to a source, readable by anyone.

Tests, the CLI and operators all decide "is this file done, and how did it
go?" from this one item, so it carries the object version (ETag), the status
and the counts, plus the first rejections and the error when FAILED.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer

from .parsing import key_of

PROCESSING = "PROCESSING"
COMPLETE = "COMPLETE"
FAILED = "FAILED"
FINAL_STATUSES = frozenset({COMPLETE, FAILED})

#: How many rejections the manifest lists in full; the count is always exact.
MAX_LISTED_REJECTIONS = 100

_serializer = TypeSerializer()
_deserializer = TypeDeserializer()


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


@dataclass
class Manifest:
    """State of one source's ingestion."""

    status: str
    etag: str
    sequencer: str | None = None
    rows_written: int = 0
    rows_rejected: int = 0
    rejected: list[dict[str, Any]] = field(default_factory=list)
    columns: list[str] = field(default_factory=list)
    error: str | None = None
    started_at: str = field(default_factory=utc_now)
    finished_at: str | None = None

    def reject(self, row: int, reason: str) -> None:
        self.rows_rejected += 1
        if len(self.rejected) < MAX_LISTED_REJECTIONS:
            self.rejected.append({"row": row, "reason": reason})

    def to_item(self, source: str) -> dict[str, Any]:
        attributes: dict[str, Any] = {
            "status": self.status,
            "etag": self.etag,
            "rows_written": self.rows_written,
            "rows_rejected": self.rows_rejected,
            "rejected": self.rejected,
            "columns": self.columns,
            "started_at": self.started_at,
        }
        for name in ("sequencer", "error", "finished_at"):
            value = getattr(self, name)
            if value is not None:
                attributes[name] = value
        item = key_of(source, 0)
        item.update({k: _serializer.serialize(v) for k, v in attributes.items()})
        return item


def serialize(value: Any) -> dict[str, Any]:
    """One Python value as a low-level attribute value."""
    return dict(_serializer.serialize(value))


def read(client: Any, table: str, source: str) -> dict[str, Any] | None:
    """The manifest of ``source`` as plain Python values, or None."""
    response = client.get_item(TableName=table, Key=key_of(source, 0), ConsistentRead=True)
    item = response.get("Item")
    if item is None:
        return None
    return {k: _deserializer.deserialize(v) for k, v in item.items()}


def write(client: Any, table: str, source: str, manifest: Manifest) -> None:
    client.put_item(TableName=table, Item=manifest.to_item(source))
