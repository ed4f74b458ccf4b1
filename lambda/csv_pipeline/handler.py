"""Lambda entry point: S3 ``ObjectCreated`` events in, DynamoDB rows out.

One path, top to bottom (the design and its reasons: ``lambda/DESIGN.md``):

1. :func:`lambda_handler` runs :func:`process_object` for every
   ``ObjectCreated`` record of the event.
2. :func:`process_object` checks that the announced version is still the
   object, takes the source's lease (:mod:`csv_pipeline.lease`), and runs
   the :class:`~csv_pipeline.job.Job` from where the manifest says it stands.
3. Every way that can end is an :class:`Outcome`, decided in
   :func:`process_object` alone. Unexpected errors are recorded FAILED and
   re-raised, so Lambda's asynchronous retry runs the event again (and, after
   the last retry, sends it to the function's on-failure destination).
"""

from __future__ import annotations

import enum
import json
import logging
import os
import resource
import sys
import time
from dataclasses import dataclass
from typing import Any

from . import aws, settings
from .events import ObjectRef, continuation_event, hop_of, is_object_created
from .expressions import Update
from .job import Job, ObjectGone, s3_error
from .lease import Lease, LeaseLost, SourceBusy, Superseded
from .manifest import FAILED, NO_PROGRESS, TOO_MANY_CONTINUATIONS, UNEXPECTED, Manifest, utc_now
from .versions import Decision, Version

logger = logging.getLogger("csv_pipeline")


class Outcome(enum.Enum):
    """How the handling of one object version ended."""

    COMPLETE = "COMPLETE"  # final manifest COMPLETE
    FAILED = "FAILED"  # final manifest FAILED: the file can never be ingested
    ALREADY_DONE = "ALREADY_DONE"  # this version was COMPLETE already
    IN_PROGRESS = "IN_PROGRESS"  # another live invocation is writing this version
    SUPERSEDED = "SUPERSEDED"  # a newer version owns the source, or overwrote the object
    GONE = "GONE"  # the object was deleted since the event (or cannot be read: 403)
    CONTINUED = "CONTINUED"  # handed on to the function's next invocation


@dataclass(frozen=True)
class Result:
    source: str
    outcome: Outcome
    manifest: Manifest | None = None

    def as_dict(self) -> dict[str, Any]:
        manifest = self.manifest
        return {
            "source": self.source,
            "status": self.outcome.value,
            "rows_written": manifest.rows_written if manifest else 0,
            "rows_rejected": manifest.rows_rejected if manifest else 0,
            "error": manifest.error if manifest else None,
            "error_code": manifest.error_code if manifest else None,
        }


class Stuck(RuntimeError):
    """A file that cannot be handed on again; recorded FAILED with ``code``."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def lambda_handler(event: dict[str, Any], context: Any = None) -> dict[str, Any]:
    """Process every ObjectCreated record; re-raise the first unexpected error."""
    _configure_logging()
    results: list[dict[str, Any]] = []
    errors: list[Exception] = []
    for record in event.get("Records", []):
        if not is_object_created(record):
            logger.info("Ignoring event %s", record.get("eventName") or "<unnamed>")
            continue
        ref = ObjectRef.from_record(record)
        try:
            results.append(process_object(ref, context, hop_of(event)).as_dict())
        except Exception as exc:  # recorded FAILED already; re-raised below
            logger.exception("Unexpected error processing %s", ref.source)
            errors.append(exc)
    if errors:
        raise errors[0]
    return {"results": results}


def process_object(ref: ObjectRef, context: Any = None, hop: int = 0) -> Result:
    """Handle one object version; the one place an :class:`Outcome` is decided."""
    deadline = settings.Deadline(context)
    # Until HEAD names the version, only the event's ETag can record a failure.
    lease = _lease(ref, Version(ref.etag or "", ref.sequencer), deadline)
    try:
        head = _head(ref)
        lease = _lease(ref, Version(str(head["ETag"]).strip('"'), ref.sequencer), deadline)
        claim = lease.acquire(wait_until=deadline.stop_at)
        if claim.held is None:
            return _stood_aside(ref, claim.decision)
        job = Job(ref, lease, claim.held, deadline, size=int(head.get("ContentLength", 0)))
        if job.run():
            _log_end(ref, job)
            return Result(ref.source, Outcome(job.manifest.status), job.manifest)
        _hand_on(ref, job, context, hop)
        return Result(ref.source, Outcome.CONTINUED)
    except ObjectGone as exc:
        # An overwritten object is routine; one that cannot be read at all is
        # worth a warning (deleted, or a permission missing).
        logger.log(
            logging.INFO if exc.changed else logging.WARNING, "Skipping %s: %s", ref.source, exc
        )
        _let_go(lease)
        return Result(ref.source, Outcome.SUPERSEDED if exc.changed else Outcome.GONE)
    except Superseded as exc:
        logger.info("Handing %s over: %s", ref.source, exc)
        _let_go(lease)
        return Result(ref.source, Outcome.SUPERSEDED)
    except LeaseLost as exc:
        logger.warning("Stopped %s: %s", ref.source, exc)
        return Result(ref.source, Outcome.SUPERSEDED)
    except Exception as exc:
        _record_failure(lease, exc)
        raise


def _lease(ref: ObjectRef, version: Version, deadline: settings.Deadline) -> Lease:
    table = settings.table_name()
    return Lease(aws.client("dynamodb"), table, ref.source, version, deadline=deadline.end)


def _head(ref: ObjectRef) -> dict[str, Any]:
    """The object's metadata, for the event's version only (``If-Match``)."""
    request: dict[str, Any] = {"Bucket": ref.bucket, "Key": ref.key}
    if ref.etag:
        request["IfMatch"] = ref.etag  # a newer upload has its own event
    try:
        return dict(aws.client("s3").head_object(**request))
    except aws.ClientError as exc:
        raise s3_error(exc, ref.source) from exc


def _stood_aside(ref: ObjectRef, decision: Decision) -> Result:
    if decision is Decision.DONE:
        logger.info("Already processed %s: nothing to do", ref.source)
        return Result(ref.source, Outcome.ALREADY_DONE)
    if decision is Decision.STALE:
        logger.info("Skipping %s: a newer version is recorded", ref.source)
        return Result(ref.source, Outcome.SUPERSEDED)
    logger.info("%s (etag %s) is being processed by another invocation", ref.source, ref.etag)
    return Result(ref.source, Outcome.IN_PROGRESS)


def _hand_on(ref: ObjectRef, job: Job, context: Any, hop: int) -> None:
    """Invoke this function again for the rest of the file, if that is progress."""
    if job.position == job.started:
        raise Stuck(NO_PROGRESS, f"an invocation made no progress on {ref.source}: {job.position}")
    if hop >= settings.max_continuations():
        raise Stuck(
            TOO_MANY_CONTINUATIONS,
            f"{ref.source} was handed on {hop} times, the most MAX_CONTINUATIONS allows",
        )
    job.lease.let_go()
    where = f"record {job.checkpoint.records} (byte {job.checkpoint.offset} of {job.size})"
    if job.cleanup is not None:
        where = f"clean-up row {job.cleanup.cursor}"
    logger.info("Continuing %s in a new invocation after %s", ref.source, where)
    function = getattr(context, "invoked_function_arn", None) or os.environ.get(
        "AWS_LAMBDA_FUNCTION_NAME"
    )
    if not function:
        raise RuntimeError("cannot continue: the function's own name is unknown")
    aws.client("lambda").invoke(
        FunctionName=function,
        InvocationType="Event",
        Payload=json.dumps(continuation_event(ref, hop + 1)).encode("utf-8"),
    )


def _let_go(lease: Lease) -> None:
    if lease.held:
        lease.let_go()


def _record_failure(lease: Lease, exc: Exception) -> None:
    """Best-effort FAILED manifest before ``exc`` propagates; the checkpoint stays.

    Taken only if this invocation holds the source or could take it without
    waiting: a FAILED record must never overwrite a newer version's manifest.
    """
    code = exc.code if isinstance(exc, Stuck) else UNEXPECTED
    error = f"{type(exc).__name__}: {exc}"
    try:
        if not lease.version.etag:
            return
        if not lease.held and lease.acquire(wait_until=time.monotonic()).held is None:
            return
        failed = {"status": FAILED, "error": error, "error_code": code, "finished_at": utc_now()}
        lease.let_go(Update(failed))
        logger.error("FAILED %s: %s", lease.source, error)
    except (SourceBusy, LeaseLost):
        logger.info("Not recording FAILED for %s: another invocation holds it", lease.source)
    except Exception:  # the original error is what gets re-raised
        logger.exception("Could not record FAILED manifest for %s", lease.source)


def _log_end(ref: ObjectRef, job: Job) -> None:
    manifest = job.manifest
    if manifest.status == FAILED:
        logger.info("Ended %s: FAILED with %s", ref.source, manifest.error_code)
        return
    logger.info(
        "Finished %s: %d rows written, %d rejected (%.1fs, %d requests resent, peak RSS %.1f MB)",
        *(ref.source, manifest.rows_written, manifest.rows_rejected),
        *(time.monotonic() - job.began, job.resent, peak_rss_mb()),
    )


def _configure_logging() -> None:
    """Log to stdout at INFO whether or not a Lambda runtime set up logging."""
    logger.setLevel(os.environ.get("LOG_LEVEL", "INFO").upper())
    if not logger.handlers and not logging.getLogger().handlers:
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
        logger.addHandler(handler)


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
