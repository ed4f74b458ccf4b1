"""S3 event records in, and the event a file's next invocation gets.

S3 URL-encodes the object key in event records (a space arrives as ``+``,
non-ASCII as ``%XX``); :class:`ObjectRef` holds the decoded key. A file
handed on to a next invocation travels as the same record plus a
``continuation`` section whose ``hop`` counts the hand-overs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote_plus


@dataclass(frozen=True)
class ObjectRef:
    """One object named by an S3 event record."""

    bucket: str
    key: str
    etag: str | None
    sequencer: str | None
    record: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def source(self) -> str:
        return f"{self.bucket}/{self.key}"

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> ObjectRef:
        s3 = record["s3"]
        obj = s3["object"]
        return cls(
            bucket=s3["bucket"]["name"],
            key=unquote_plus(obj["key"]),
            etag=(obj.get("eTag") or "").strip('"') or None,
            sequencer=obj.get("sequencer"),
            record=record,
        )


def is_object_created(record: dict[str, Any]) -> bool:
    return str(record.get("eventName", "")).startswith("ObjectCreated:")


def hop_of(event: dict[str, Any]) -> int:
    """How many times this event's file has been handed on (0: S3's own event)."""
    return int((event.get("continuation") or {}).get("hop", 0))


def continuation_event(ref: ObjectRef, hop: int) -> dict[str, Any]:
    return {"Records": [ref.record], "continuation": {"hop": hop}}
