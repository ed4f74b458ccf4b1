"""Lambda entry point: S3 ``ObjectCreated`` events in, DynamoDB rows out.

Each object is streamed (never downloaded whole, never held as a list of
rows), parsed by :mod:`csv_pipeline.parsing` and written in batches of 25 by
a few concurrent senders with a bounded number of batches in flight, so
memory stays flat whatever the file's size. The manifest item at ``row = 0``
records the outcome so callers can tell a finished file from one in flight.

Delivery, concurrency and faults — how "nothing lost, nothing mixed" holds
(the mechanics are in :mod:`csv_pipeline.ownership`):

* **One writer per source.** Before writing rows an invocation takes a lease
  in the manifest with a conditional write; only the holder writes, and it
  checks the lease before every write request. A duplicate delivery of a
  version that is in flight waits until it sees the holder renew (alive: it
  returns IN_PROGRESS and writes nothing) or the lease expire (dead: it takes
  over). A duplicate of a COMPLETE version writes nothing at all.
* **Last upload wins.** Versions are ordered by the event's ``sequencer``;
  the object is read with ``If-Match`` on the event's ETag, so an event whose
  object has since been overwritten does nothing (the newer upload has its
  own event). A newer version preempts an older one in flight: the holder
  stops at its next checkpoint, waits for its requests in flight, and hands
  over; the newer version then writes every row of the source and deletes
  the rest. Rows of two versions are never left mixed. (A hand-made event
  without a sequencer is ordered only by ``If-Match``.)
* **Crashes and timeouts.** Every ``CHECKPOINT_SECONDS`` the manifest
  records the position up to which every batch is written (byte offset,
  record and line numbers, counters) — without pausing the batches in
  flight. A retry resumes from the last checkpoint with a ranged GET; rows
  are keyed by number, so rewriting some is harmless and none is duplicated.
* **Files longer than one invocation.** Shortly before the function's
  timeout the handler stops reading, drains its writes (giving up on any
  still in backoff just before the deadline), records the checkpoint, hands
  the lease back and invokes itself asynchronously with the same event
  record; the follow-up resumes there.

Failure policy:

* A file that can never be ingested (bad encoding, bad header, broken CSV)
  is recorded FAILED, its rows are removed, and the handler returns: a retry
  would fail the same way.
* Anything unexpected (S3 or DynamoDB errors, throttling past the retries)
  is recorded FAILED with the reason and re-raised, so Lambda's async retry
  runs the file again, from the last checkpoint.
"""

from __future__ import annotations

import json
import logging
import os
import resource
import sys
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote_plus

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

from .manifest import COMPLETE, FAILED, Manifest, utc_now
from .ownership import (
    Checkpoint,
    Decision,
    Lease,
    LeaseLost,
    Progress,
    SourceBusy,
    Superseded,
    Version,
    lease_seconds,
)
from .parsing import CsvDocument, FileRejected, LineReader, Record, key_of
from .table_writer import BatchWriter, OutOfTime
from .wire import PreSerializedBatchWriter

logger = logging.getLogger("csv_pipeline")

_clients: dict[str, Any] = {}

#: S3 error codes meaning "this version is no longer the object".
_GONE = frozenset({"PreconditionFailed", "412", "NoSuchKey", "404", "NotFound"})


def _configure_logging() -> None:
    """Log to stdout at INFO whether or not a Lambda runtime set up logging."""
    logger.setLevel(os.environ.get("LOG_LEVEL", "INFO").upper())
    if not logger.handlers and not logging.getLogger().handlers:
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
        logger.addHandler(handler)


def _client(service: str) -> Any:
    """One client per service per container, created on first use.

    The endpoint comes from boto3's normal resolution, so ``AWS_ENDPOINT_URL``
    points it at an emulator and nothing here names a host.
    """
    if service not in _clients:
        config = Config(retries={"mode": "standard", "max_attempts": 10})
        _clients[service] = boto3.client(service, config=config)
    return _clients[service]


def _row_writer() -> PreSerializedBatchWriter:
    """The client rows are written with: pre-serialized, fenced, bounded in time.

    botocore does not retry here (BatchWriter does, checking the lease before
    every attempt). A request starts only while more than half the lease is
    left and may take at most half of it (connect and read timeouts of a
    quarter each, for leases of 4 s and more), so no write lands after the
    lease it was sent under has run out.
    """
    if "rows" not in _clients:
        lease = lease_seconds()
        config = Config(
            retries={"mode": "standard", "max_attempts": 1},
            parameter_validation=False,
            connect_timeout=max(1.0, min(10.0, lease / 4)),
            read_timeout=max(1.0, min(60.0, lease / 4)),
            max_pool_connections=write_concurrency() + 2,
        )
        _clients["rows"] = PreSerializedBatchWriter(boto3.client("dynamodb", config=config))
    return _clients["rows"]  # type: ignore[no-any-return]


def progress_every() -> int:
    return max(1, int(os.environ.get("PROGRESS_EVERY", "100")))


def write_concurrency() -> int:
    """Batches in flight at once (env ``WRITE_CONCURRENCY``, default 4)."""
    return max(1, int(os.environ.get("WRITE_CONCURRENCY", "4")))


def checkpoint_seconds() -> float:
    """How often progress is recorded (env ``CHECKPOINT_SECONDS``, default 2)."""
    return max(0.1, float(os.environ.get("CHECKPOINT_SECONDS", "2")))


def peak_rss_mb() -> float:
    """This process's peak resident set size since it started, in MiB.

    Linux's ``VmHWM`` belongs to the process's own address space. ``ru_maxrss``
    is only the fallback: it survives ``execve``, so a worker spawned by a
    large parent (an emulator's server) would report the parent's peak.
    """
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


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


class Deadline:
    """When this invocation must stop reading to hand over cleanly."""

    def __init__(self, context: Any) -> None:
        now = time.monotonic()
        remaining_ms = getattr(context, "get_remaining_time_in_millis", None)
        #: Wall-clock time the runtime ends the invocation (None: no limit).
        self.end: float | None = None
        #: Monotonic times: stop reading and drain; stop sending altogether.
        self.stop_at = self.give_up_at = float("inf")
        if remaining_ms is None:
            return
        budget = remaining_ms() / 1000.0
        self.end = time.time() + budget
        # Enough to drain the batches in flight, checkpoint and invoke again.
        margin = min(10.0, max(1.0, budget * 0.2))
        self.stop_at = now + budget - margin
        self.give_up_at = now + budget - margin / 2

    def passed(self, now: float | None = None) -> bool:
        return (time.monotonic() if now is None else now) >= self.stop_at


def lambda_handler(event: dict[str, Any], context: Any = None) -> dict[str, Any]:
    """Process every ObjectCreated record; re-raise the first unexpected error."""
    _configure_logging()
    results: list[dict[str, Any]] = []
    errors: list[BaseException] = []
    for record in event.get("Records", []):
        name = record.get("eventName", "")
        if not name.startswith("ObjectCreated:"):
            logger.info("Ignoring event %s", name or "<unnamed>")
            continue
        ref = ObjectRef.from_record(record)
        try:
            results.append(process_object(ref, context))
        except Exception as exc:  # recorded FAILED already; re-raised below
            logger.exception("Unexpected error processing %s", ref.source)
            errors.append(exc)
    if errors:
        raise errors[0]
    return {"results": results}


def process_object(ref: ObjectRef, context: Any = None) -> dict[str, Any]:
    """Ingest one object version and return its summary."""
    s3, dynamodb = _client("s3"), _client("dynamodb")
    table = os.environ["TABLE_NAME"]
    source = ref.source
    deadline = Deadline(context)
    owner = f"{getattr(context, 'aws_request_id', None) or 'local'}/{uuid.uuid4().hex[:12]}"

    head_args: dict[str, Any] = {"Bucket": ref.bucket, "Key": ref.key}
    if ref.etag:
        # Only the version this event announced: a newer upload has its own event.
        head_args["IfMatch"] = ref.etag
    try:
        head = s3.head_object(**head_args)
    except ClientError as exc:
        if _code(exc) in _GONE:
            logger.info(
                "Skipping %s: object changed or removed since the event (%s)", source, _code(exc)
            )
            return {"source": source, "status": "SUPERSEDED"}
        if ref.etag:
            version = Version(ref.etag, ref.sequencer)
            _record_failure(
                Lease(dynamodb, table, source, version, owner=owner, deadline=deadline.end),
                f"cannot read object: {exc}",
            )
        raise
    version = Version(str(head["ETag"]).strip('"'), ref.sequencer)
    size = int(head.get("ContentLength", 0))

    lease = Lease(dynamodb, table, source, version, owner=owner, deadline=deadline.end)
    claim = lease.acquire(wait_until=deadline.stop_at)
    if claim.decision is Decision.DONE:
        logger.info("Already processed %s (etag %s): nothing to do", source, version.etag)
        return _summary(source, claim.manifest or {})
    if claim.decision is Decision.STALE:
        logger.info("Skipping %s (etag %s): a newer version is recorded", source, version.etag)
        return {"source": source, "status": "SUPERSEDED"}
    if claim.state is None:
        logger.info("%s (etag %s) is being processed by another invocation", source, version.etag)
        return {"source": source, "status": "IN_PROGRESS"}
    return _process_held(ref, context, lease, claim.state, claim.resume_from, size, deadline)


def _process_held(
    ref: ObjectRef,
    context: Any,
    lease: Lease,
    state: Manifest,
    resume: Checkpoint | None,
    size: int,
    deadline: Deadline,
) -> dict[str, Any]:
    """Everything done while holding the source's lease."""
    s3, dynamodb, table, source = _client("s3"), _client("dynamodb"), lease.table, ref.source
    get_args: dict[str, Any] = {"Bucket": ref.bucket, "Key": ref.key, "IfMatch": state.etag}
    point = resume or Checkpoint()
    if point.offset:
        get_args["Range"] = f"bytes={point.offset}-"
    try:
        body: Any = (
            s3.get_object(**get_args)["Body"] if point.offset < size or not point.offset else None
        )
    except ClientError as exc:
        if _code(exc) in _GONE:
            logger.info("Skipping %s: overwritten while starting (%s)", source, _code(exc))
            lease.release(reached=0)
            return {"source": source, "status": "SUPERSEDED"}
        _record_failure(lease, f"cannot read object: {exc}")
        raise
    if resume is not None:
        logger.info(
            "Resuming %s (etag %s) after record %d, byte %d of %d",
            source,
            state.etag,
            point.records,
            point.offset,
            size,
        )
    else:
        logger.info("Starting %s (etag %s, %s bytes)", source, state.etag, size)
    started = time.monotonic()
    reach = Reach(point.records)
    try:
        try:
            finished = _ingest(table, source, body, state, lease, point, deadline, reach)
            if finished:
                _delete_rows_after(dynamodb, table, source, point.records, lease, deadline)
        except FileRejected as exc:
            logger.error("FAILED %s: %s", source, exc)
            _delete_rows_after(dynamodb, table, source, 0, lease, deadline, reach.records)
            state.status, state.error = FAILED, str(exc)
            state.rows_written = state.rows_rejected = 0
            state.rejected = []
            state.finished_at = utc_now()
            lease.finish(state)
            return _summary(source, state.__dict__)
    except OutOfTime:
        # Writes were cut short by the deadline: record what is surely written.
        lease.release(reach.records, reach.durable)
        return _continue(ref, context, reach.durable, size)
    except Superseded as exc:
        logger.info("Handing %s over: %s", source, exc)
        lease.release(reach.records)
        return {"source": source, "status": "SUPERSEDED"}
    except LeaseLost as exc:
        logger.warning("Stopped %s: %s", source, exc)
        return {"source": source, "status": "SUPERSEDED"}
    except Exception as exc:
        _record_failure(lease, f"{type(exc).__name__}: {exc}", reach.records, reach.durable)
        raise
    if not finished:
        lease.release(reach.records, reach.durable)
        return _continue(ref, context, reach.durable, size)
    state.status = COMPLETE
    state.finished_at = utc_now()
    if not lease.finish(state):
        logger.warning("Stopped %s: another invocation took it over at the end", source)
        return {"source": source, "status": "SUPERSEDED"}
    logger.info(
        "Finished %s: %d rows written, %d rejected (%.1fs, %d requests resent, peak RSS %.1f MB)",
        source,
        state.rows_written,
        state.rows_rejected,
        time.monotonic() - started,
        reach.resent,
        peak_rss_mb(),
    )
    return _summary(source, state.__dict__)


@dataclass
class Reach:
    """How far this invocation got: the last record sent, the last one surely written."""

    records: int
    resent: int = 0
    #: The latest checkpoint up to which every write is done (None: none yet).
    durable: Progress | None = None


#: A position and the counters there, captured as each batch is sent:
#: (offset, records, lines, rows written, rows rejected, rejections listed).
Snapshot = tuple[int, int, int, int, int, int]


def _ingest(
    table: str,
    source: str,
    body: Any,
    state: Manifest,
    lease: Lease,
    point: Checkpoint,
    deadline: Deadline,
    reach: Reach,
) -> bool:
    """Stream ``body`` into the table from ``point``; ``point`` ends at the end read.

    Returns True at the end of the object, False when the deadline came
    first. Every ``CHECKPOINT_SECONDS`` the position up to which all batches
    are written is recorded in the manifest (no pause to drain the batches
    in flight); however it ends, ``reach`` says how far writes went.
    """
    if body is None:  # resumed exactly at the end: nothing left to read
        return True
    every = progress_every()
    interval = checkpoint_seconds()
    lines = LineReader(body, offset=point.offset)
    if point.records or point.offset:
        document = CsvDocument(
            lines, source, columns=state.columns, records_seen=point.records, lines_seen=point.lines
        )
    else:
        document = CsvDocument(lines, source)
        state.columns = document.columns

    def snapshot() -> Snapshot:
        return (
            lines.offset,
            document.records_seen,
            document.lines_seen,
            state.rows_written,
            state.rows_rejected,
            len(state.rejected),
        )

    def progress(taken: Snapshot) -> Progress:
        offset, records, line_count, written, rejected, listed = taken
        return Progress(
            Checkpoint(offset, records, line_count),
            written,
            rejected,
            state.rejected[:listed],
            list(state.columns),
        )

    writer = _writer(table, lease, deadline, snapshot)
    recorded: Snapshot | None = None
    next_checkpoint = min(time.monotonic() + interval, deadline.stop_at)
    try:
        with writer:
            for outcome in document:
                row = outcome.row
                # Counters first: a batch sent by put/delete snapshots them.
                if isinstance(outcome, Record):
                    state.rows_written += 1
                    writer.put(outcome.item)
                else:
                    # The row may hold an older version's values: remove them.
                    state.reject(row, outcome.reason)
                    writer.delete(key_of(source, row))
                if row % every == 0:
                    logger.info("Processed %d records so far...", row)
                now = time.monotonic()
                if now >= next_checkpoint:
                    if deadline.passed(now):
                        writer.flush()
                        return False
                    durable = writer.durable()
                    if durable is not None and durable != recorded:
                        lease.checkpoint(progress(durable))
                        recorded = durable
                    else:
                        lease.renew()
                    next_checkpoint = min(now + interval, deadline.stop_at)
    finally:
        reach.records = document.records_seen
        reach.resent += writer.retries
        durable = writer.durable()
        reach.durable = progress(durable) if durable is not None else None
        body.close()
    point.offset, point.records = lines.offset, document.records_seen
    point.lines = document.lines_seen
    return True


def _writer(
    table: str, lease: Lease, deadline: Deadline, snapshot: Callable[[], Any] | None = None
) -> BatchWriter:
    """Row writes: concurrent, fenced by the lease, stopped before the deadline."""
    return BatchWriter(
        _row_writer(),
        table,
        max_in_flight=write_concurrency(),
        before_send=lease.ensure,
        give_up_at=deadline.give_up_at,
        snapshot=snapshot,
    )


def _delete_rows_after(
    dynamodb: Any,
    table: str,
    source: str,
    last_row: int,
    lease: Lease,
    deadline: Deadline,
    reached: int = 0,
) -> None:
    """Remove the source's rows past ``last_row`` (left by an earlier, longer version).

    When the manifest bounds what may exist (``rows_high``), those keys are
    deleted directly; deleting an absent item is a no-op. Only when the bound
    is unknown are the rows looked up, with a query over the source.
    """
    high = lease.cleanup_bound(reached)
    keys: Iterable[dict[str, Any]]
    if high >= 0:
        keys = (key_of(source, row) for row in range(last_row + 1, high + 1))
    else:
        pages = dynamodb.get_paginator("query").paginate(
            TableName=table,
            KeyConditionExpression="#s = :s AND #r > :n",
            ExpressionAttributeNames={"#s": "source", "#r": "row"},
            ExpressionAttributeValues={":s": {"S": source}, ":n": {"N": str(last_row)}},
            ProjectionExpression="#s, #r",
            ConsistentRead=True,
        )
        keys = (key for page in pages for key in page.get("Items", []))
    with _writer(table, lease, deadline) as writer:
        for key in keys:
            writer.delete(key)


def _record_failure(
    lease: Lease, error: str, reached: int = 0, progress: Progress | None = None
) -> None:
    """Best-effort FAILED manifest before an exception propagates.

    Taken only if this invocation holds the source or could take it without
    waiting: a FAILED record must never overwrite a newer version's manifest.
    """
    try:
        if not lease.held:
            claim = lease.acquire(wait_until=time.monotonic())
            if claim.state is None:
                return
        lease.fail(error, reached, progress)
        logger.error("FAILED %s: %s", lease.source, error)
    except (SourceBusy, LeaseLost):
        logger.info("Not recording FAILED for %s: another invocation holds it", lease.source)
    except Exception:  # the original error is what gets re-raised
        logger.exception("Could not record FAILED manifest for %s", lease.source)


def _continue(ref: ObjectRef, context: Any, durable: Progress | None, size: int) -> dict[str, Any]:
    """Hand the rest of the file to a new invocation (the lease is released)."""
    where = "its last checkpoint"
    if durable is not None:
        where = f"record {durable.point.records} (byte {durable.point.offset} of {size})"
    logger.info("Continuing %s in a new invocation after %s", ref.source, where)
    _invoke_again(ref, context)
    return {"source": ref.source, "status": "CONTINUED"}


def _invoke_again(ref: ObjectRef, context: Any) -> None:
    """Invoke this function asynchronously with the same event record."""
    function = getattr(context, "invoked_function_arn", None) or os.environ.get(
        "AWS_LAMBDA_FUNCTION_NAME"
    )
    if not function:
        raise RuntimeError("cannot continue: the function's own name is unknown")
    _client("lambda").invoke(
        FunctionName=function,
        InvocationType="Event",
        Payload=json.dumps({"Records": [ref.record]}).encode("utf-8"),
    )


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _summary(source: str, state: dict[str, Any]) -> dict[str, Any]:
    return {
        "source": source,
        "status": state.get("status"),
        "rows_written": int(state.get("rows_written", 0)),
        "rows_rejected": int(state.get("rows_rejected", 0)),
        "error": state.get("error"),
    }
