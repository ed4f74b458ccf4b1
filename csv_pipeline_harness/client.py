"""Drive a deployed stack from outside: upload a CSV, wait, read the table back.

Shared by the tests and the CLI's ``demo``. Waiting is keyed on the object's
ETag, so a test never mistakes an earlier upload's manifest for its own, and
a timeout explains itself with the Lambda's log lines.
"""

from __future__ import annotations

import functools
import json
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus

from boto3.dynamodb.types import TypeDeserializer

from csv_pipeline_harness.provisioning.backends.base import Endpoint
from csv_pipeline_harness.provisioning.stack import StackConfig

FINAL_STATUSES = ("COMPLETE", "FAILED")

#: A log line that reports a failure: a warning or error level in the usual
#: formats (``WARNING msg``, ``[ERROR]\t…``, JSON ``"level": "ERROR"``, a
#: ``print(f"Error processing {key}")``), an exception, a traceback, or
#: Lambda's own timeout line.
_FAILURE_LINE = re.compile(
    r"\b(warn|warning|error|critical|fatal|exception)\b|Traceback \(most recent call last\)"
    r"|Task timed out",
    re.IGNORECASE,
)

#: How often a wait for a manifest reads the function's log for a failure.
LOG_CHECK_SECONDS = 1.0

_deserializer = TypeDeserializer()


class IngestionError(AssertionError):
    """The pipeline did not reach the expected state; the message holds the evidence.

    An AssertionError so pytest reports it as a test failure with the text.
    """


@dataclass(frozen=True)
class Ingestion:
    """The table state of one source after its manifest became final."""

    key: str
    etag: str
    manifest: dict[str, Any]
    rows: list[dict[str, Any]]

    @property
    def status(self) -> str:
        return str(self.manifest["status"])


def plain(value: Any) -> Any:
    """DynamoDB's Decimals as ints (the table only stores whole numbers)."""
    if isinstance(value, Decimal):
        return int(value)
    if isinstance(value, list):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    return value


class PipelineClient:
    """Upload, wait and read back against one deployed stack.

    Besides the upload-and-wait calls it holds what tests ask of a stack:
    rows by number, an S3 event to invoke the function with by hand, and the
    function's log lines from a moment on (:meth:`log_mark`).
    """

    def __init__(self, endpoint: Endpoint, config: StackConfig | None = None) -> None:
        self.endpoint = endpoint
        self.config = config or StackConfig()
        self.s3 = endpoint.client("s3")
        self.dynamodb = endpoint.client("dynamodb")
        self.logs = endpoint.client("logs")

    @functools.cached_property
    def lambda_(self) -> Any:
        return self.endpoint.client("lambda")

    def source(self, key: str) -> str:
        return f"{self.config.bucket}/{key}"

    def upload(self, key: str, body: bytes) -> str:
        """Put the object; return its ETag (unquoted)."""
        response = self.s3.put_object(Bucket=self.config.bucket, Key=key, Body=body)
        return str(response["ETag"]).strip('"')

    def manifest(self, key: str) -> dict[str, Any] | None:
        response = self.dynamodb.get_item(
            TableName=self.config.table,
            Key={"source": {"S": self.source(key)}, "row": {"N": "0"}},
            ConsistentRead=True,
        )
        item = response.get("Item")
        return plain(self._deserialize(item)) if item else None

    def items(self, key: str) -> list[dict[str, Any]]:
        """Every item of the source (manifest included), in row order."""
        paginator = self.dynamodb.get_paginator("query")
        pages = paginator.paginate(
            TableName=self.config.table,
            KeyConditionExpression="#s = :s",
            ExpressionAttributeNames={"#s": "source"},
            ExpressionAttributeValues={":s": {"S": self.source(key)}},
            ConsistentRead=True,
        )
        return [plain(self._deserialize(i)) for page in pages for i in page.get("Items", [])]

    def rows(self, key: str) -> list[dict[str, Any]]:
        """The data rows of the source (``row >= 1``), in row order."""
        return [item for item in self.items(key) if item["row"] != 0]

    def rows_by_number(self, key: str, numbers: Iterable[int]) -> list[dict[str, Any]]:
        """The items of the source with these ``row`` numbers that exist, in the order asked.

        Looked up by key (BatchGetItem, 100 at a time): each costs the same
        however large the source, where a Query pages through all of it.
        """
        wanted = list(numbers)
        table = self.config.table
        found: dict[int, dict[str, Any]] = {}
        for start in range(0, len(wanted), 100):
            keys = [
                {"source": {"S": self.source(key)}, "row": {"N": str(n)}}
                for n in wanted[start : start + 100]
            ]
            request: dict[str, Any] = {table: {"Keys": keys, "ConsistentRead": True}}
            while request:
                response = self.dynamodb.batch_get_item(RequestItems=request)
                for item in response["Responses"].get(table, []):
                    row = plain(self._deserialize(item))
                    found[row["row"]] = row
                request = response.get("UnprocessedKeys") or {}
        return [found[n] for n in wanted if n in found]

    def count_rows(self, key: str, after: int = 0) -> int:
        """How many items of the source have a ``row`` number above ``after``."""
        pages = self.dynamodb.get_paginator("query").paginate(
            TableName=self.config.table,
            KeyConditionExpression="#s = :s AND #r > :n",
            ExpressionAttributeNames={"#s": "source", "#r": "row"},
            ExpressionAttributeValues={":s": {"S": self.source(key)}, ":n": {"N": str(after)}},
            Select="COUNT",
            ConsistentRead=True,
        )
        return sum(int(page["Count"]) for page in pages)

    def upload_file(
        self, key: str, path: Path, progress: Callable[[int], None] | None = None
    ) -> str:
        """Stream a local file to the bucket (multipart when large); return its ETag.

        ``progress`` is called with the number of bytes sent since the last call.
        """
        self.s3.upload_file(str(path), self.config.bucket, key, Callback=progress)
        head = self.s3.head_object(Bucket=self.config.bucket, Key=key)
        return str(head["ETag"]).strip('"')

    def wait(
        self,
        key: str,
        etag: str,
        timeout: float = 60.0,
        since_ms: int | None = None,
        progress: Callable[[dict[str, Any] | None], None] | None = None,
    ) -> Ingestion:
        """Block until the manifest is final for exactly this ETag, then read the rows."""
        manifest = self.wait_for_manifest(key, etag, timeout, since_ms, progress)
        return Ingestion(key=key, etag=etag, manifest=manifest, rows=self.rows(key))

    def wait_for_manifest(
        self,
        key: str,
        etag: str,
        timeout: float = 60.0,
        since_ms: int | None = None,
        progress: Callable[[dict[str, Any] | None], None] | None = None,
    ) -> dict[str, Any]:
        """The manifest once final for exactly this ETag, without reading rows back.

        ``progress`` sees every manifest polled (its ``checkpoint`` tells how
        far an in-flight file has got).
        """
        deadline = time.monotonic() + timeout
        delay = 0.05
        manifest = None
        next_log_check = time.monotonic() + LOG_CHECK_SECONDS
        while time.monotonic() < deadline:
            manifest = self.manifest(key)
            if progress is not None:
                progress(manifest)
            if manifest and manifest.get("etag") == etag:
                if manifest.get("status") in FINAL_STATUSES:
                    return manifest
            elif since_ms is not None and time.monotonic() >= next_log_check:
                next_log_check = time.monotonic() + LOG_CHECK_SECONDS
                self._fail_if_the_log_shows_why(key, etag, since_ms, manifest)
            time.sleep(delay)
            delay = min(delay * 1.5, 0.5)
        raise IngestionError(
            f"s3://{self.config.bucket}/{key} (etag {etag}) not processed within {timeout:.0f}s; "
            f"last manifest: {manifest}\n" + self.format_logs(since_ms)
        )

    def _fail_if_the_log_shows_why(
        self, key: str, etag: str, since_ms: int, manifest: dict[str, Any] | None
    ) -> None:
        """Raise at once when the log already explains why no manifest will come.

        While no manifest of this version exists, a log line since the upload
        that names this object (as uploaded or URL-encoded, as an event carries
        it) at warning or error level, or a traceback or timeout naming it,
        means the function gave up on it: waiting out the timeout would only
        delay the report (and multiply it across a property test's shrinking).
        Keys are unique per test, so another test's failure never matches.
        """
        lines = self.log_lines_since(since_ms)
        names = {key, quote_plus(key, safe="/"), quote(key, safe="/")}
        cause = [
            line
            for line in lines
            if _FAILURE_LINE.search(line) and any(name in line for name in names)
        ]
        if cause:
            raise IngestionError(
                f"s3://{self.config.bucket}/{key} (etag {etag}) will not be processed: "
                f"the function's log names it in a failure and no manifest of this version "
                f"exists (last manifest: {manifest})\n"
                + "\n".join(cause[:20])
                + "\n"
                + self.format_logs(since_ms)
            )

    def ingest(self, key: str, body: bytes, timeout: float = 60.0) -> Ingestion:
        """Upload and wait: the one call most tests need."""
        since_ms = self.log_mark()
        etag = self.upload(key, body)
        return self.wait(key, etag, timeout=timeout, since_ms=since_ms)

    # -- invoking by hand ---------------------------------------------------------------

    def s3_event(
        self, key: str, etag: str, sequencer: str | None = None, bucket: str | None = None
    ) -> dict[str, Any]:
        """The S3 notification a put of ``key`` would send (the key URL-encoded, as S3 does)."""
        bucket = bucket or self.config.bucket
        obj: dict[str, Any] = {"key": quote_plus(key, safe="/"), "eTag": etag}
        if sequencer:
            obj["sequencer"] = sequencer
        return {
            "Records": [
                {
                    "eventSource": "aws:s3",
                    "eventName": "ObjectCreated:Put",
                    "s3": {
                        "bucket": {"name": bucket, "arn": f"arn:aws:s3:::{bucket}"},
                        "object": obj,
                    },
                }
            ]
        }

    def invoke(self, event: dict[str, Any], *, asynchronous: bool = False) -> dict[str, Any]:
        """Run the function with ``event``.

        Synchronously: Lambda's response with ``Payload`` decoded from JSON
        (``FunctionError`` is set when the function raised). Asynchronously
        (``InvocationType=Event``, as S3 invokes it): the response, no payload.
        """
        payload = json.dumps(event).encode()
        if asynchronous:
            return dict(
                self.lambda_.invoke(
                    FunctionName=self.config.function, InvocationType="Event", Payload=payload
                )
            )
        response = self.lambda_.invoke(FunctionName=self.config.function, Payload=payload)
        return {**response, "Payload": json.loads(response["Payload"].read())}

    # -- the function's log ---------------------------------------------------------------

    @staticmethod
    def log_mark() -> int:
        """Now, as a ``since_ms`` for the log calls: a second early for clock skew."""
        return int(time.time() * 1000) - 1000

    def log_lines_since(self, since_ms: int) -> list[str]:
        """Every log line of the function from ``since_ms`` (a :meth:`log_mark`) on."""
        return self.lambda_log_lines(since_ms=since_ms, limit=None)

    def wait_for_log(
        self,
        since_ms: int,
        match: str | Callable[[str], bool],
        what: str | None = None,
        timeout: float = 60.0,
        count: int = 1,
    ) -> list[str]:
        """Every log line from ``since_ms`` on, once ``count`` of them match.

        ``match`` is a text the line contains, or a predicate. A log line
        arrives when its invocation has ended, a little after the table
        shows the outcome. Raises :class:`IngestionError` with the last lines
        after ``timeout`` seconds.
        """
        found = (lambda line: match in line) if isinstance(match, str) else match
        times = f" ({count} lines)" if count > 1 else ""
        return self.wait_for_lines(
            since_ms,
            lambda lines: sum(map(found, lines)) >= count,
            f"{what or repr(match)}{times}",
            timeout,
        )

    def wait_for_lines(
        self,
        since_ms: int,
        complete: Callable[[list[str]], bool],
        what: str,
        timeout: float = 60.0,
    ) -> list[str]:
        """Every log line from ``since_ms`` on, once ``complete`` holds for them.

        For a condition on the log as a whole, where no one line says it: the
        lines of each invocation arrive when it ends, and invocations that
        overlap may end in any order.
        """
        deadline = time.monotonic() + timeout
        while True:
            lines = self.log_lines_since(since_ms)
            if complete(lines):
                return lines
            if time.monotonic() >= deadline:
                raise IngestionError(
                    f"timed out after {timeout:.0f}s waiting for {what} "
                    f"in {self.config.log_group}\n" + "\n".join(lines[-80:])
                )
            time.sleep(0.1)

    def lambda_log_lines(self, since_ms: int | None = None, limit: int | None = 400) -> list[str]:
        """The function's CloudWatch log lines (newest ``limit``; all if None), for reports."""
        args: dict[str, Any] = {"logGroupName": self.config.log_group}
        if since_ms is not None:
            args["startTime"] = since_ms
        lines: list[str] = []
        try:
            for page in self.logs.get_paginator("filter_log_events").paginate(**args):
                lines.extend(e["message"].rstrip("\n") for e in page.get("events", []))
        except Exception as exc:  # evidence gathering must not hide the real failure
            return [f"(could not read {self.config.log_group}: {exc})"]
        return lines if limit is None else lines[-limit:]

    def format_logs(self, since_ms: int | None = None) -> str:
        lines = self.lambda_log_lines(since_ms)
        body = "\n".join(lines) if lines else "(no log lines)"
        return f"--- Lambda log ({self.config.log_group}) ---\n{body}"

    @staticmethod
    def _deserialize(item: dict[str, Any]) -> dict[str, Any]:
        return {k: _deserializer.deserialize(v) for k, v in item.items()}
