"""A one-row CSV that proves a deployed stack is wired before anything relies on it.

Every end-to-end test waits for a manifest. When the wiring is broken (no
bucket notification, no invoke permission, a function that never became
Active, a handler that does not import) each of them would wait its full
timeout and fail with the same silence. :func:`check_wiring` uploads one tiny
CSV instead and requires its final manifest within a bounded time; when it
does not come, :class:`CanaryFailed` carries one message with the facts to
check: the bucket's notification configuration, the function's resource
policy, its state, and the Lambda's last log lines.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

from botocore.exceptions import ClientError

from csv_pipeline_harness.provisioning.aws_errors import error_code

from .client import IngestionError, PipelineClient

#: Where canary objects go in the bucket (and their sources in the table).
CANARY_PREFIX = "_canary"
#: The canary's CSV: a header and one record.
CANARY_BODY = b"canary\nok\n"
#: Lambda log lines shown in a failure message.
LOG_LINES = 20


class CanaryFailed(AssertionError):
    """The canary got no final manifest in time; the message lists what to check."""

    def __init__(self, message: str, summary: str) -> None:
        super().__init__(message)
        #: One line for a session's stop reason.
        self.summary = summary


def check_wiring(client: PipelineClient, timeout: float, name: str = "canary") -> float:
    """Upload the canary CSV and wait for its COMPLETE manifest; the seconds it took.

    Raises :class:`CanaryFailed` when the manifest is not final within
    ``timeout`` seconds, or final but not COMPLETE with the one row. The
    canary's object and items are removed either way.
    """
    key = f"{CANARY_PREFIX}/{name}-{uuid.uuid4().hex[:10]}{client.config.suffix}"
    where = f"s3://{client.config.bucket}/{key}"
    started = time.monotonic()
    try:
        etag = client.upload(key, CANARY_BODY)
        try:
            manifest = client.wait_for_manifest(key, etag, timeout)
        except IngestionError:
            problem = (
                f"the canary {where} (etag {etag}) got no final manifest in table "
                f"{client.config.table} within {timeout:g} s"
            )
            raise CanaryFailed(_message(client, problem, key), problem) from None
        if manifest.get("status") != "COMPLETE" or manifest.get("rows_written") != 1:
            problem = (
                f"the canary {where} ended {manifest.get('status')} with "
                f"{manifest.get('rows_written')} rows written, not COMPLETE with 1: "
                f"{manifest.get('error_code') or ''} {manifest.get('error') or ''}".rstrip()
            )
            raise CanaryFailed(_message(client, problem, key), problem)
        return time.monotonic() - started
    finally:
        _remove(client, key)


def _remove(client: PipelineClient, key: str) -> None:
    """Delete the canary's object and table items (best effort)."""
    try:
        client.s3.delete_object(Bucket=client.config.bucket, Key=key)
        for item in client.items(key):
            client.dynamodb.delete_item(
                TableName=client.config.table,
                Key={"source": {"S": item["source"]}, "row": {"N": str(item["row"])}},
            )
    except ClientError:
        pass  # a missing bucket or table is one of the facts the message reports


def _message(client: PipelineClient, problem: str, key: str) -> str:
    cfg = client.config
    lambda_ = client.endpoint.client("lambda")
    function_arn = _function_arn(lambda_, cfg.function)
    facts = [
        (
            f"bucket notification: s3 get_bucket_notification_configuration(Bucket={cfg.bucket})",
            _notification(client.s3, cfg.bucket, cfg.function, function_arn),
        ),
        (
            f"invoke permission: lambda get_policy(FunctionName={cfg.function})",
            _permission(lambda_, cfg.function, cfg.bucket),
        ),
        (
            f"function state: lambda get_function_configuration(FunctionName={cfg.function})",
            _state(lambda_, cfg.function),
        ),
        ("canary manifest", _manifest(client, key)),
        (f"Lambda log ({cfg.log_group}), last {LOG_LINES} lines", _log_tail(client)),
    ]
    body = "\n".join(
        f"  {i}. {title}\n" + _indent(text, "     ") for i, (title, text) in enumerate(facts, 1)
    )
    return (
        f"The pipeline's wiring is broken: {problem}, so every test using the "
        f"pipeline would time out. Check:\n{body}\n"
        "(--csv-pipeline-canary-timeout=SECONDS gives a slow backend more time; "
        "0 skips this check.)"
    )


def _indent(text: str, prefix: str) -> str:
    return "\n".join(prefix + line for line in text.splitlines() or [""])


def _function_arn(lambda_: Any, function: str) -> str | None:
    try:
        return str(lambda_.get_function_configuration(FunctionName=function)["FunctionArn"])
    except ClientError:
        return None


def _notification(s3: Any, bucket: str, function: str, function_arn: str | None) -> str:
    try:
        response = s3.get_bucket_notification_configuration(Bucket=bucket)
    except ClientError as exc:
        return f"FAILED: {exc}"
    configurations = response.get("LambdaFunctionConfigurations") or []
    ours = [
        c
        for c in configurations
        if c.get("LambdaFunctionArn") == function_arn
        or str(c.get("LambdaFunctionArn", "")).endswith(f":function:{function}")
    ]
    created = [c for c in ours if any("ObjectCreated" in e for e in c.get("Events", []))]
    if created:
        verdict = f"OK: uploads to {bucket} invoke {function}"
    elif configurations:
        verdict = f"MISSING: no configuration sends s3:ObjectCreated:* events to {function}"
    else:
        verdict = f"MISSING: {bucket} has no Lambda notification, so no upload starts {function}"
    return f"{verdict}\nLambdaFunctionConfigurations: {json.dumps(configurations, default=str)}"


def _permission(lambda_: Any, function: str, bucket: str) -> str:
    try:
        policy = json.loads(lambda_.get_policy(FunctionName=function)["Policy"])
    except ClientError as exc:
        if error_code(exc) == "ResourceNotFoundException":
            return f"MISSING: {function} has no resource policy, so S3 may not invoke it ({exc})"
        return f"FAILED: {exc}"
    statements = policy.get("Statement") or []
    bucket_arn = f"arn:aws:s3:::{bucket}"
    allowed = [
        s
        for s in statements
        if s.get("Effect") == "Allow"
        and "s3.amazonaws.com" in json.dumps(s.get("Principal"))
        and "lambda:InvokeFunction" in json.dumps(s.get("Action"))
    ]
    if not allowed:
        verdict = f"MISSING: no statement lets s3.amazonaws.com invoke {function}"
    elif not any(bucket_arn in json.dumps(s.get("Condition", {})) for s in allowed):
        verdict = f"CHECK: S3 may invoke {function}, but no statement names {bucket_arn}"
    else:
        verdict = f"OK: s3.amazonaws.com may invoke {function} for {bucket_arn}"
    return f"{verdict}\nStatement: {json.dumps(statements, default=str)}"


def _state(lambda_: Any, function: str) -> str:
    try:
        config = lambda_.get_function_configuration(FunctionName=function)
    except ClientError as exc:
        return f"FAILED: {exc}"
    fields = (
        "State",
        "StateReason",
        "LastUpdateStatus",
        "LastUpdateStatusReason",
        "Handler",
        "Runtime",
    )
    shown = " ".join(f"{f}={config[f]}" for f in fields if config.get(f))
    ready = config.get("State") == "Active" and config.get("LastUpdateStatus") in (
        None,
        "Successful",
    )
    return f"{'OK' if ready else 'NOT READY'}: {shown}"


def _log_tail(client: PipelineClient) -> str:
    try:
        client.logs.describe_log_streams(logGroupName=client.config.log_group, limit=1)
    except ClientError as exc:
        if error_code(exc) == "ResourceNotFoundException":
            return "(no log group: the function has never run)"
    lines = client.lambda_log_lines(limit=LOG_LINES)
    return "\n".join(lines) or "(no log lines: the function has not run)"


def _manifest(client: PipelineClient, key: str) -> str:
    try:
        manifest = client.manifest(key)
    except ClientError as exc:
        return f"FAILED: {exc}"
    if manifest is None:
        return "none: the function never wrote this source to the table"
    return json.dumps(manifest, default=str)
