"""Lambda entry point: S3 ``ObjectCreated`` events in, DynamoDB rows out.

Each object is streamed (never downloaded whole, never held as a list of
rows), parsed by :mod:`csv_pipeline.parsing` and written in batches of 25.
The manifest item at ``row = 0`` records the outcome so callers can tell a
finished file from one still in flight.

Failure policy:

* A file that can never be ingested (bad encoding, bad header, broken CSV)
  is recorded FAILED and the handler returns: a retry would fail the same way.
* Anything unexpected (AWS errors, throttling past the retries) is recorded
  FAILED and re-raised, so Lambda's async retry runs the file again.
"""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote_plus

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

from . import manifest as manifests
from .manifest import COMPLETE, FAILED, PROCESSING, Manifest
from .parsing import CsvDocument, FileRejected, Record, key_of, open_text
from .table_writer import BatchWriter

logger = logging.getLogger("csv_pipeline")

_clients: dict[str, Any] = {}


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


def progress_every() -> int:
    return max(1, int(os.environ.get("PROGRESS_EVERY", "100")))


@dataclass(frozen=True)
class ObjectRef:
    """One object named by an S3 event record."""

    bucket: str
    key: str
    etag: str | None
    sequencer: str | None

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
        )


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
            results.append(process_object(ref))
        except Exception as exc:  # recorded FAILED already; re-raised below
            logger.exception("Unexpected error processing %s", ref.source)
            errors.append(exc)
    if errors:
        raise errors[0]
    return {"results": results}


def process_object(ref: ObjectRef) -> dict[str, Any]:
    """Ingest one object version and return its final manifest summary."""
    s3, dynamodb = _client("s3"), _client("dynamodb")
    table = os.environ["TABLE_NAME"]
    source = ref.source

    get_args: dict[str, Any] = {"Bucket": ref.bucket, "Key": ref.key}
    if ref.etag:
        # Only the version this event announced: a newer upload has its own event.
        get_args["IfMatch"] = ref.etag
    try:
        response = s3.get_object(**get_args)
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        if code in ("PreconditionFailed", "412", "NoSuchKey", "404"):
            logger.warning("Skipping %s: object changed or removed since the event (%s)",
                           source, code)
            return {"source": source, "status": "SUPERSEDED"}
        _record_failure(dynamodb, table, source, ref, f"cannot read object: {exc}")
        raise
    etag = response["ETag"].strip('"')

    previous = manifests.read(dynamodb, table, source)
    if previous and previous.get("etag") == etag and previous.get("status") == COMPLETE:
        logger.info("Already processed %s (etag %s): nothing to do", source, etag)
        return _summary(source, previous)

    state = Manifest(status=PROCESSING, etag=etag, sequencer=ref.sequencer)
    manifests.write(dynamodb, table, source, state)
    logger.info("Starting %s (etag %s, %s bytes)", source, etag,
                response.get("ContentLength", "?"))
    try:
        last_row = _ingest(dynamodb, table, source, response["Body"], state)
        _delete_rows_after(dynamodb, table, source, last_row)
    except FileRejected as exc:
        logger.error("FAILED %s: %s", source, exc)
        _delete_rows_after(dynamodb, table, source, 0)
        state.status, state.error = FAILED, str(exc)
        state.rows_written = state.rows_rejected = 0
        state.rejected = []
        state.finished_at = manifests.utc_now()
        manifests.write(dynamodb, table, source, state)
        return _summary(source, state.__dict__)
    except Exception as exc:
        _record_failure(dynamodb, table, source, ref, f"{type(exc).__name__}: {exc}", state)
        raise
    state.status = COMPLETE
    state.finished_at = manifests.utc_now()
    manifests.write(dynamodb, table, source, state)
    logger.info("Finished %s: %d rows written, %d rejected", source,
                state.rows_written, state.rows_rejected)
    return _summary(source, state.__dict__)


def _ingest(dynamodb: Any, table: str, source: str, body: Any, state: Manifest) -> int:
    """Stream ``body`` into the table; return the number of the last record."""
    every = progress_every()
    document = CsvDocument(open_text(body), source)
    state.columns = document.columns
    with BatchWriter(dynamodb, table) as writer:
        for outcome in document:
            if isinstance(outcome, Record):
                writer.put(outcome.item)
                state.rows_written += 1
            else:
                # The row may hold an older version's values: remove them.
                writer.delete(key_of(source, outcome.row))
                state.reject(outcome.row, outcome.reason)
            if outcome.row % every == 0:
                logger.info("Processed %d records so far...", outcome.row)
    return document.records_seen


def _delete_rows_after(dynamodb: Any, table: str, source: str, last_row: int) -> None:
    """Remove rows left by an earlier, longer version of the same key."""
    paginator = dynamodb.get_paginator("query")
    pages = paginator.paginate(
        TableName=table,
        KeyConditionExpression="#s = :s AND #r > :n",
        ExpressionAttributeNames={"#s": "source", "#r": "row"},
        ExpressionAttributeValues={":s": {"S": source}, ":n": {"N": str(last_row)}},
        ProjectionExpression="#s, #r",
        ConsistentRead=True,
    )
    with BatchWriter(dynamodb, table) as writer:
        for page in pages:
            for key in page.get("Items", []):
                writer.delete(key)


def _record_failure(
    dynamodb: Any,
    table: str,
    source: str,
    ref: ObjectRef,
    error: str,
    state: Manifest | None = None,
) -> None:
    """Best-effort FAILED manifest before an exception propagates."""
    state = state or Manifest(status=FAILED, etag=ref.etag or "", sequencer=ref.sequencer)
    state.status, state.error = FAILED, error
    state.finished_at = manifests.utc_now()
    try:
        manifests.write(dynamodb, table, source, state)
    except Exception:  # the original error is what gets re-raised
        logger.exception("Could not record FAILED manifest for %s", source)


def _summary(source: str, state: dict[str, Any]) -> dict[str, Any]:
    return {
        "source": source,
        "status": state.get("status"),
        "rows_written": int(state.get("rows_written", 0)),
        "rows_rejected": int(state.get("rows_rejected", 0)),
        "error": state.get("error"),
    }
