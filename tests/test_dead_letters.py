"""An event that fails every retry lands in the failed-events queue instead of vanishing.

Runs against a test-only variant of the function, deployed under its own
names, whose zip adds ``tests/fault_injection.py`` (as in ``test_faults``):
the ``getobject-always`` fault makes every attempt fail, so Lambda's
asynchronous retries run out and the event goes to the on-failure
destination.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any
from urllib.parse import unquote_plus

import pytest
from test_faults import FAULT_WRAPPER

from csv_pipeline_harness.stacks import DeployedPipeline, stack_fixture

#: Fewer retries than Lambda's default of 2 keep the test short.
MAX_RETRY_ATTEMPTS = 1


#: The function with ``fault_injection`` wrapped around it, one retry, own names.
failing_stack = stack_fixture(
    prefix="dead-letters",
    **FAULT_WRAPPER,
    timeout_s=10,
    max_retry_attempts=MAX_RETRY_ATTEMPTS,
)


def is_record_of(record: dict[str, Any], bucket: str, key: str) -> bool:
    s3 = record.get("s3") or {}
    return bool(
        (s3.get("bucket") or {}).get("name") == bucket
        and unquote_plus((s3.get("object") or {}).get("key", "")) == key
    )


def receive_failed_event(sqs: Any, queue_url: str, bucket: str, key: str, timeout: float) -> Any:
    """The queue's message about s3://bucket/key, by long polling; deleted once read."""
    deadline = time.monotonic() + timeout
    seen: list[str] = []
    while (remaining := deadline - time.monotonic()) > 0:
        response = sqs.receive_message(
            QueueUrl=queue_url,
            MaxNumberOfMessages=10,
            WaitTimeSeconds=max(1, min(20, int(remaining))),
        )
        for message in response.get("Messages", []):
            seen.append(message["Body"])
            body = json.loads(message["Body"])
            records = (body.get("requestPayload") or {}).get("Records") or []
            if any(is_record_of(r, bucket, key) for r in records):
                sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
                return body
    raise AssertionError(
        f"no failed event for s3://{bucket}/{key} in {queue_url} within {timeout:.0f}s; "
        f"other messages: {seen}"
    )


@pytest.mark.e2e
def test_an_event_failing_every_retry_lands_in_the_failed_events_queue(
    failing_stack: DeployedPipeline,
) -> None:
    outputs, client = failing_stack.outputs, failing_stack
    key = f"faults/getobject-always/{uuid.uuid4().hex}.csv"
    since = client.log_mark()
    etag = client.upload(key, b"id,name\n1,one\n")

    failed = receive_failed_event(
        failing_stack.stack.sqs, outputs.failed_events_queue_url, outputs.bucket, key, timeout=20
    )
    context = failed["requestContext"]
    assert context["condition"] == "RetriesExhausted", failed
    # AWS names the qualified version; an emulator may not.
    assert context["functionArn"] in (outputs.function_arn, f"{outputs.function_arn}:$LATEST")
    [record] = failed["requestPayload"]["Records"]
    assert record["eventSource"] == "aws:s3"
    assert record["eventName"].startswith("ObjectCreated:")
    assert is_record_of(record, outputs.bucket, key)
    assert record["s3"]["object"]["eTag"].strip('"') == etag
    assert failed["responseContext"]["functionError"], failed

    # The first attempt and every retry ran, and no more: each failed at GetObject
    # (before "Starting") and recorded why. An invocation's lines are written
    # when it ends, which may be after the event reached the queue.
    attempts = 1 + MAX_RETRY_ATTEMPTS
    source = client.source(key)
    lines = client.wait_for_log(since, f"FAILED {source}:", count=attempts)
    assert sum("FAULT getobject-always: GetObject fails" in line for line in lines) == attempts, (
        lines
    )
    failed = [line for line in lines if f"FAILED {source}:" in line]
    assert len(failed) == attempts and all("cannot read object" in line for line in failed), lines

    manifest = client.manifest(key)
    assert manifest is not None and manifest["status"] == "FAILED", manifest
    assert manifest["etag"] == etag
    assert "cannot read object" in manifest["error"] and "InternalError" in manifest["error"]
