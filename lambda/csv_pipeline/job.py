"""The work one invocation does on a source it holds the lease of.

Two stages, each resumable from what the manifest records
(:mod:`csv_pipeline.progress`):

1. **Read**: stream the object from the checkpoint on, put each accepted
   record as a row and delete the row of each rejected one, and record a
   checkpoint every ``CHECKPOINT_SECONDS`` once every batch before it is
   written. A file the parsing core rejects as a whole ends this stage with
   the FAILED outcome instead.
2. **Clean up**: delete the source's rows past this version's last one (all
   rows, for a FAILED file), left by earlier or longer versions. A Query for
   ``row > cursor`` reads only rows that exist, so each page is progress.

Then the final manifest replaces the in-flight one. When the deadline or the
rows-per-invocation budget comes first, :meth:`Job.run` says so and the
caller hands the file on.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

from . import aws, settings
from .events import ObjectRef
from .expressions import Update
from .lease import Held, Lease, LeaseLost
from .manifest import COMPLETE, FAILED, Manifest, utc_now
from .parsing import CsvDocument, FileRejected, LineReader, Record, key_of
from .progress import Checkpoint, Cleanup, Position
from .table_writer import BatchWriter, OutOfTime

logger = logging.getLogger("csv_pipeline")

#: Keys fetched per clean-up Query page (about 60 bytes each).
CLEANUP_PAGE = 500

_GONE_CODES = frozenset({"NoSuchKey", "404", "NotFound", "AccessDenied", "403", "Forbidden"})


class ObjectGone(Exception):
    """The object this event announced can no longer be read as that version.

    ``changed``: overwritten (412); else deleted, or not readable (S3 answers
    403 for a missing key to a reader without ``s3:ListBucket``).
    """

    def __init__(self, message: str, *, changed: bool) -> None:
        super().__init__(message)
        self.changed = changed


class ObjectUnreadable(RuntimeError):
    """S3 failed to serve the object (throttling, 5xx): worth a retry."""


def s3_error(exc: Exception, source: str) -> Exception:
    """The exception an S3 read error stands for."""
    if not isinstance(exc, aws.ClientError):
        return exc
    code = aws.error_code(exc)
    if code in ("PreconditionFailed", "412"):
        return ObjectGone(f"{source} was overwritten since the event ({code})", changed=True)
    if code in _GONE_CODES:
        return ObjectGone(
            f"{source} cannot be read ({code}): it was deleted since the event, "
            "or the function may not read it",
            changed=False,
        )
    return ObjectUnreadable(f"cannot read object: {exc}")


@dataclass
class Job:
    """One version of one source, from where the manifest says it stands."""

    ref: ObjectRef
    lease: Lease
    held: Held
    deadline: settings.Deadline
    size: int

    def __post_init__(self) -> None:
        self.manifest: Manifest = self.held.manifest
        self.checkpoint: Checkpoint = self.held.checkpoint or Checkpoint()
        self.cleanup: Cleanup | None = self.held.cleanup
        self.started = Position.of(self.held.checkpoint, self.cleanup)
        #: Records read plus rows deleted that one invocation may do.
        self.limit = settings.rows_per_invocation()
        #: Rows this invocation's clean-up has deleted.
        self.deleted = 0
        self.began = time.monotonic()
        #: Write requests sent again (throttled, unprocessed items, 5xx).
        self.resent = 0

    @property
    def position(self) -> Position:
        return Position.of(self.checkpoint, self.cleanup)

    @property
    def budget(self) -> float:
        """Records and rows this invocation may still read or delete."""
        read = self.checkpoint.records - (self.held.checkpoint or Checkpoint()).records
        return self.limit - read - self.deleted

    def run(self) -> bool:
        """Do what is left; True when the final manifest is written, False to hand on.

        Handing on resumes from the last recorded position: a write request
        that could not be sent before the deadline (:class:`OutOfTime`) only
        means less progress, never a lost row.
        """
        try:
            if self.cleanup is None:
                self.cleanup = self._read()
            if self.cleanup is None or not self._clean():
                return False
        except OutOfTime:
            logger.info(
                "Out of time for %s: stopping at the last recorded position", self.ref.source
            )
            return False
        self._finish()
        return True

    # -- stage 1: read ---------------------------------------------------------------

    def _read(self) -> Cleanup | None:
        """Stream the rest of the object; the clean-up to start, or None to hand on."""
        try:
            if not self._stream():
                return None
        except FileRejected as exc:
            logger.error("FAILED %s: %s", self.ref.source, exc)
            self.manifest = replace(self.manifest, rows_written=0, rows_rejected=0, rejected=[])
            return self._begin_cleanup(Cleanup(0, FAILED, 0, str(exc), exc.code))
        last = self.checkpoint.records
        return self._begin_cleanup(Cleanup(keep=last, status=COMPLETE, cursor=last))

    def _stream(self) -> bool:
        """Write records from the checkpoint on; True at the end of the object."""
        body = self._open()
        self._log_start()  # also when the last invocation read to the end: say where this one is
        if body is None:
            return True
        lines = LineReader(body, offset=self.checkpoint.offset)
        try:
            document = self._document(lines)
            with self._writing() as writer:
                return self._write_records(document, lines, writer)
        finally:
            body.close()

    def _write_records(self, document: CsvDocument, lines: LineReader, writer: BatchWriter) -> bool:
        """Put each accepted record, delete each rejected one's row; False to stop early."""
        state, source, every = self.manifest, self.ref.source, settings.progress_every()
        stop_row = self.checkpoint.records + self.budget
        next_check = time.monotonic() + settings.checkpoint_seconds()
        for outcome in document:
            row = outcome.row
            if isinstance(outcome, Record):
                state.rows_written += 1
                writer.put(outcome.item)
            else:
                state.reject(row, outcome.reason, outcome.code)
                writer.delete(key_of(source, row))  # it may hold an older version's row
            if row % every == 0:
                logger.info("Processed %d records so far (%s)", row, source)
            if row >= stop_row or time.monotonic() >= next_check:
                writer.flush()
                self._record_checkpoint(lines, document)
                if row >= stop_row or self.deadline.passed():
                    return False
                next_check = time.monotonic() + settings.checkpoint_seconds()
        writer.flush()
        self.checkpoint = _position(lines, document)
        return True

    def _open(self) -> Any:
        """The object's body from the checkpoint on (None: nothing is left to read)."""
        offset = self.checkpoint.offset
        if offset and offset >= self.size:
            return None
        request: dict[str, Any] = {
            "Bucket": self.ref.bucket,
            "Key": self.ref.key,
            "IfMatch": self.manifest.etag,
        }
        if offset:
            request["Range"] = f"bytes={offset}-"
        try:
            return aws.client("s3").get_object(**request)["Body"]
        except aws.ClientError as exc:
            raise s3_error(exc, self.ref.source) from exc

    def _document(self, lines: LineReader) -> CsvDocument:
        point = self.checkpoint
        if point.offset:
            return CsvDocument(
                lines,
                self.ref.source,
                columns=self.manifest.columns,
                records_seen=point.records,
                lines_seen=point.lines,
            )
        document = CsvDocument(lines, self.ref.source)
        self.manifest.columns = document.columns
        return document

    def _record_checkpoint(self, lines: LineReader, document: CsvDocument) -> None:
        self.checkpoint = _position(lines, document)
        self.lease.record(
            Update({"checkpoint": self.checkpoint.as_value(), **self.manifest.counters()})
        )

    def _log_start(self) -> None:
        point, source, etag = self.checkpoint, self.ref.source, self.manifest.etag
        if point.offset:
            logger.info(
                "Resuming %s (etag %s) after record %d, byte %d of %d",
                *(source, etag, point.records, point.offset, self.size),
            )
        else:
            logger.info("Starting %s (etag %s, %d bytes)", source, etag, self.size)

    # -- stage 2: clean up -----------------------------------------------------------

    def _begin_cleanup(self, cleanup: Cleanup) -> Cleanup:
        """Record that reading has ended, and how: the counters and the outcome to come."""
        update = {"cleanup": cleanup.as_value(), **self.manifest.counters()}
        self.lease.record(Update(update, remove=("checkpoint",)))
        return cleanup

    def _clean(self) -> bool:
        """Delete rows past the cursor a page at a time; True once none is left.

        A COMPLETE version of a source that never held another version's rows
        has nothing past its last row: no Query is needed.
        """
        assert self.cleanup is not None
        if self.cleanup.status == COMPLETE and not self.held.replacing:
            return True
        if self.cleanup.cursor > self.cleanup.keep:
            logger.info(
                "Resuming clean-up of %s after row %d", self.ref.source, self.cleanup.cursor
            )
        while self.budget > 0 and not self.deadline.passed():
            keys = self._rows_after(self.cleanup.cursor, int(min(CLEANUP_PAGE, self.budget)))
            if not keys:
                return True
            with self._writing() as writer:
                for key in keys:
                    writer.delete(key)
            self.cleanup = replace(self.cleanup, cursor=int(keys[-1]["row"]["N"]))
            self.lease.record(Update({"cleanup": self.cleanup.as_value()}))
            self.deleted += len(keys)
        return False

    def _rows_after(self, row: int, limit: int) -> list[dict[str, Any]]:
        response = aws.client("dynamodb").query(
            TableName=self.lease.table,
            KeyConditionExpression="#s = :s AND #r > :n",
            ExpressionAttributeNames={"#s": "source", "#r": "row"},
            ExpressionAttributeValues={":s": {"S": self.ref.source}, ":n": {"N": str(row)}},
            ProjectionExpression="#s, #r",
            ConsistentRead=True,
            Limit=limit,
        )
        return list(response.get("Items", []))

    # -- the end ---------------------------------------------------------------------

    def _finish(self) -> None:
        """Replace the in-flight manifest by the final one."""
        assert self.cleanup is not None
        cleanup = self.cleanup
        final = replace(
            self.manifest,
            status=cleanup.status,
            error=cleanup.error,
            error_code=cleanup.error_code,
            finished_at=utc_now(),
        )
        if not self.lease.finish(final):
            raise LeaseLost(f"{self.ref.source} was taken over just before its final manifest")
        self.manifest = final

    @contextlib.contextmanager
    def _writing(self) -> Iterator[BatchWriter]:
        """Row writes: concurrent, fenced by the lease, stopped before the deadline.

        Leaving the block (even by an exception) waits for every request in flight.
        """
        concurrency = settings.write_concurrency()
        writer = BatchWriter(
            aws.row_writer(self.deadline.request_seconds, concurrency + 2),
            self.lease.table,
            max_in_flight=concurrency,
            before_send=self.lease.ensure,
            give_up_at=self.deadline.give_up_at,
        )
        try:
            with writer:
                yield writer
        finally:
            self.resent += writer.retries


def _position(lines: LineReader, document: CsvDocument) -> Checkpoint:
    """Where the next record starts, right after the one ``document`` yielded last."""
    return Checkpoint(lines.offset, document.records_seen, document.lines_seen)
