"""Test-only wrapper of the CSV Lambda that injects one kind of fault per object.

Never part of the function users deploy: ``tests/test_faults.py`` deploys a
separate function (its own bucket, table and names) whose zip adds this
module beside ``csv_pipeline`` and whose handler is
``fault_injection.lambda_handler``. The object key chooses the fault,
``faults/<fault>/<anything>``:

* ``crash-after-<n>`` — the process dies just before its n-th row write request
  (or the first one after it once the manifest holds a checkpoint);
* ``hang-after-<n>`` — that request never returns, so the function times out;
* ``getobject`` — GetObject fails with a 500 InternalError;
* ``getobject-always`` — GetObject fails with a 500 InternalError on every
  attempt, so the event ends in the failed-events queue;
* ``no-listbucket`` — S3 answers a read of a missing key with 403
  AccessDenied instead of 404, as AWS does for a reader without
  ``s3:ListBucket`` (the emulator always says 404);
* ``writes-never-start`` — no row write request can be sent (every one is
  "out of time"), so an invocation makes no progress at all;
* ``wait-for-newer-after-<n>`` — before its n-th row write request, the
  invocation waits (up to its lease) until a newer version of the object has
  asked it to hand over (``superseded_by`` in the manifest), so a second
  upload always meets the first one mid-file, however fast the machine is;
* ``replace-before-get`` — between the function's HeadObject and its
  GetObject, the object is replaced under the same key (body ``a\nreplaced\n``),
  once per version: the read must not take the new bytes for the old version;
* ``stall-after-<n>`` — the writer stalls (as in a long pause of the
  process) before it hands on its n-th batch of rows, until a newer
  version of the object has claimed the source and completed; then it goes
  on, and its fence must stop it. Once per key: the newer version passes;
* ``throttle`` — a burst of throttling: for the first 30 row write calls of
  an invocation, DynamoDB hands back half of the requests of every other call
  as UnprocessedItems and rejects every fourth call as throttled.

Crashes, hangs and GetObject failures happen once per object version: a
marker object created with ``If-None-Match: *`` under ``fault-markers/``
remembers them across processes, so Lambda's retry meets a healthy function
(and the test can see that the fault really happened). Throttling and
``getobject-always`` happen on every attempt.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote_plus

import boto3
from botocore.exceptions import ClientError

from csv_pipeline import aws, handler, table_writer, wire

MARKERS = "fault-markers"

_real_batch_write = wire.PreSerializedBatchWriter.batch_write_item


def marker_key(fault: str, etag: str, key: str) -> str:
    return f"{MARKERS}/{fault}/{etag}/{key}.marker"


def _first_time(bucket: str, fault: str, etag: str, key: str) -> bool:
    """True exactly once per (fault, object version), whatever process asks."""
    try:
        aws.client("s3").put_object(
            Bucket=bucket, Key=marker_key(fault, etag, key), Body=b"", IfNoneMatch="*"
        )
    except ClientError as exc:
        if aws.error_code(exc) in ("PreconditionFailed", "412"):
            return False
        raise
    return True


def _manifest(bucket: str, key: str) -> dict[str, Any]:
    return (
        boto3.client("dynamodb")
        .get_item(
            TableName=os.environ["TABLE_NAME"],
            Key={"source": {"S": f"{bucket}/{key}"}, "row": {"N": "0"}},
            ConsistentRead=True,
        )
        .get("Item", {})
    )


def _checkpoint_recorded(bucket: str, key: str) -> bool:
    """Whether the manifest of this source already records a checkpoint."""
    return "checkpoint" in _manifest(bucket, key)


def _wait_for_manifest(
    bucket: str, key: str, done: Callable[[dict[str, Any]], bool], within: float, failure: str
) -> None:
    """Return once the manifest satisfies ``done``; raise ``failure`` after ``within`` seconds."""
    deadline = time.monotonic() + within
    while not done(_manifest(bucket, key)):
        if time.monotonic() > deadline:
            raise RuntimeError(failure)
        time.sleep(0.05)


def _wait_for_newer(bucket: str, key: str) -> None:
    """Return once a newer version asked to take the source over; fail after the lease."""
    _wait_for_manifest(
        bucket,
        key,
        lambda manifest: "superseded_by" in manifest,
        float(os.environ.get("LEASE_SECONDS", "30")),
        "injected wait: no newer version asked for the source in time",
    )


def _wait_for_newer_complete(bucket: str, key: str, etag: str) -> None:
    """Return once another version of the object has completed the source; fail after 90 s."""
    _wait_for_manifest(
        bucket,
        key,
        lambda manifest: (
            manifest.get("status", {}).get("S") == "COMPLETE"
            and manifest.get("etag", {}).get("S") != etag
        ),
        90,
        "injected stall: no newer version completed in time",
    )


def _error(code: str, status: int, operation: str) -> ClientError:
    return ClientError(
        {
            "Error": {"Code": code, "Message": f"injected {code}"},
            "ResponseMetadata": {"HTTPStatusCode": status},
        },
        operation,
    )


def _patch_writes(wrapper: Callable[..., dict[str, Any]]) -> Callable[[], None]:
    wire.PreSerializedBatchWriter.batch_write_item = wrapper  # type: ignore[method-assign]

    def undo() -> None:
        wire.PreSerializedBatchWriter.batch_write_item = _real_batch_write  # type: ignore[method-assign]

    return undo


def _install(fault: str, bucket: str, key: str, etag: str) -> Callable[[], None]:
    """Arm ``fault`` for this invocation; return what disarms it."""
    calls = 0
    lock = threading.Lock()

    def count() -> int:
        nonlocal calls
        with lock:
            calls += 1
            return calls

    if fault.startswith(("crash-after-", "hang-after-")):
        kind, n = fault.split("-after-")[0], int(fault.split("-after-")[1])

        fired = threading.Event()

        def dying(self: Any, RequestItems: dict[str, Any]) -> dict[str, Any]:
            # From the n-th request on, strike once the manifest holds a
            # checkpoint, so the retry has something to resume from however
            # slowly this machine runs.
            if (
                count() >= n
                and not fired.is_set()
                and _checkpoint_recorded(bucket, key)
                and _first_time(bucket, fault, etag, key)
            ):
                fired.set()
                print(f"FAULT {fault}: {kind} before write request {n}", flush=True)
                if kind == "crash":
                    os._exit(1)
                time.sleep(3600)
            return _real_batch_write(self, RequestItems=RequestItems)

        return _patch_writes(dying)

    if fault.startswith("wait-for-newer-after-"):
        n = int(fault.rsplit("-", 1)[1])
        waited = threading.Event()

        def waiting(self: Any, RequestItems: dict[str, Any]) -> dict[str, Any]:
            # Once per key: the newer version passes this point without waiting.
            if count() == n and not waited.is_set() and _first_time(bucket, fault, "", key):
                waited.set()
                print(f"FAULT {fault}: waiting for a newer version", flush=True)
                _wait_for_newer(bucket, key)
                print(f"FAULT {fault}: a newer version asked for the source", flush=True)
            return _real_batch_write(self, RequestItems=RequestItems)

        return _patch_writes(waiting)

    if fault.startswith("stall-after-"):
        n = int(fault.rsplit("-", 1)[1])
        real_dispatch = table_writer.BatchWriter._dispatch
        stalled = threading.Event()

        def stalling(self: Any) -> None:
            # The reading thread hands every batch over here, before the
            # request's lease check: a pause of the whole writer.
            if count() == n and _first_time(bucket, fault, "", key):
                stalled.set()
                print(f"FAULT {fault}: the writer stalls before batch {n}", flush=True)
                _wait_for_newer_complete(bucket, key, etag)
                print(f"FAULT {fault}: the writer resumes", flush=True)
            real_dispatch(self)

        table_writer.BatchWriter._dispatch = stalling  # type: ignore[method-assign]

        def undo_stall() -> None:
            table_writer.BatchWriter._dispatch = real_dispatch  # type: ignore[method-assign]
            if stalled.is_set():
                print(f"FAULT {fault}: the stalled invocation ended", flush=True)

        return undo_stall

    if fault == "throttle":

        def throttling(self: Any, RequestItems: dict[str, Any]) -> dict[str, Any]:
            call = count()
            if call > 30:
                return _real_batch_write(self, RequestItems=RequestItems)
            if call % 4 == 0:
                raise _error("ProvisionedThroughputExceededException", 400, "BatchWriteItem")
            [(table, requests)] = RequestItems.items()
            if call % 2 == 0 or len(requests) < 2:
                return _real_batch_write(self, RequestItems=RequestItems)
            half = len(requests) // 2
            response = _real_batch_write(self, RequestItems={table: requests[:half]})
            unprocessed = response.get("UnprocessedItems") or {}
            handed_back = list(unprocessed.get(table, [])) + requests[half:]
            return {**response, "UnprocessedItems": {table: handed_back}}

        return _patch_writes(throttling)

    if fault == "getobject":
        events = aws.client("s3").meta.events

        def failing_get(**_: Any) -> None:
            if _first_time(bucket, fault, etag, key):
                print(f"FAULT {fault}: GetObject fails", flush=True)
                raise _error("InternalError", 500, "GetObject")

        events.register("before-call.s3.GetObject", failing_get, unique_id="fault-getobject")
        return lambda: events.unregister("before-call.s3.GetObject", unique_id="fault-getobject")

    if fault == "replace-before-get":
        events = aws.client("s3").meta.events

        def replacing_get(**_: Any) -> None:
            if _first_time(bucket, fault, etag, key):
                print(f"FAULT {fault}: the object is replaced before GetObject", flush=True)
                aws.client("s3").put_object(Bucket=bucket, Key=key, Body=b"a\nreplaced\n")

        events.register("before-call.s3.GetObject", replacing_get, unique_id=fault)
        return lambda: events.unregister("before-call.s3.GetObject", unique_id=fault)

    if fault == "getobject-always":
        events = aws.client("s3").meta.events

        def always_failing_get(**_: Any) -> None:
            print(f"FAULT {fault}: GetObject fails", flush=True)
            raise _error("InternalError", 500, "GetObject")

        always = "fault-getobject-always"
        events.register("before-call.s3.GetObject", always_failing_get, unique_id=always)
        return lambda: events.unregister("before-call.s3.GetObject", unique_id=always)

    if fault == "no-listbucket":
        events = aws.client("s3").meta.events

        def forbidden_when_missing(parsed: dict[str, Any], **_: Any) -> None:
            if parsed.get("Error", {}).get("Code") in ("NoSuchKey", "404", "NotFound"):
                print(f"FAULT {fault}: a missing key answers 403", flush=True)
                parsed["Error"] = {"Code": "AccessDenied", "Message": "Access Denied"}
                parsed.setdefault("ResponseMetadata", {})["HTTPStatusCode"] = 403

        operations = ("HeadObject", "GetObject")
        for operation in operations:
            events.register(f"after-call.s3.{operation}", forbidden_when_missing, unique_id=fault)

        def undo_forbidden() -> None:
            for operation in operations:
                events.unregister(f"after-call.s3.{operation}", unique_id=fault)

        return undo_forbidden

    if fault == "writes-never-start":
        real_check = table_writer.BatchWriter._check_time

        def never(self: Any, delay: float) -> None:
            print(f"FAULT {fault}: no write request may start", flush=True)
            raise table_writer.OutOfTime("injected: no time left for writing")

        table_writer.BatchWriter._check_time = never  # type: ignore[method-assign]

        def undo_never() -> None:
            table_writer.BatchWriter._check_time = real_check  # type: ignore[method-assign]

        return undo_never

    return lambda: None


def lambda_handler(event: dict[str, Any], context: Any = None) -> dict[str, Any]:
    """The product handler, with the fault its object key asks for."""
    record = (event.get("Records") or [{}])[0]
    s3 = record.get("s3") or {}
    bucket = (s3.get("bucket") or {}).get("name", "")
    obj = s3.get("object") or {}
    key = unquote_plus(obj.get("key", ""))
    etag = (obj.get("eTag") or "").strip('"')
    parts = key.split("/")
    fault = parts[1] if len(parts) > 2 and parts[0] == "faults" else ""
    undo = _install(fault, bucket, key, etag)
    try:
        return handler.lambda_handler(event, context)
    finally:
        undo()
