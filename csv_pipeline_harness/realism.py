"""A Lambda handler wrapper that makes the emulator behave like AWS where it is kinder.

``pytest --csv-pipeline-aws-realism`` deploys the session's function with this module in
its zip and ``realism.lambda_handler`` as its entry point; the function's
own handler (``CSV_PIPELINE_REALISM_HANDLER``, ``module.function``, default
``csv_pipeline.handler.lambda_handler``) runs inside it, so any handler
composes with it. Everything happens inside the Lambda process, through
botocore's events on every client the process creates: the function's code
is not changed and does not know. Only the standard library, boto3 and
botocore are used.

What is injected, and why:

* **S3 403 for a missing key.** AWS answers GetObject and HeadObject of a
  key that does not exist with 403 (``AccessDenied``; a HEAD has no body,
  so botocore reports ``403``) when the reader lacks ``s3:ListBucket``, as
  the function's role does. The emulator says 404 ``NoSuchKey``.
* **DynamoDB throttling per partition key.** AWS serves at most about 1,000
  write units a second to one partition key, and every row of a file shares
  one. The emulator never throttles. Here each (table, partition key value)
  has a token bucket of ``CSV_PIPELINE_REALISM_WCU_PER_SECOND`` units a second (default
  1000) holding at most ``CSV_PIPELINE_REALISM_WCU_BURST`` units (default: one second's
  worth). A put costs its item's size rounded up to 1 KB (DynamoDB's sizing
  rules, approximated), a delete or an update one unit (the client cannot
  know the stored item's size). A BatchWriteItem sends only the requests
  whose units are available and hands the others back as
  ``UnprocessedItems``, as DynamoDB does; when none is available, the
  request fails with ``ProvisionedThroughputExceededException``. PutItem,
  UpdateItem and DeleteItem fail that way when their units are not
  available. The failure is an HTTP 400 answer at ``before-send``, so the
  client's own retry policy sees it exactly as it would see DynamoDB's.
  ``CSV_PIPELINE_REALISM_PARTITION_KEY`` names the partition key attribute (default
  ``source``); items without it share one bucket per table. Each process
  has its own buckets, so several concurrent execution environments may
  together exceed the rate: this is a lower bound of what AWS refuses.
* **URL-encoded event keys.** S3 notifications carry object keys encoded
  like a form (space as ``+``, non-ASCII and reserved characters as
  ``%XX``, ``/`` kept). A key already in that form is passed unchanged;
  any other is encoded before the handler sees the event. (A raw key that
  happens to read as an encoded one, such as ``a+b.csv``, cannot be told
  apart; the emulators this project runs on send encoded keys.)

Every injection is written to the function's log with a ``REALISM`` prefix,
and each invocation ends with a ``REALISM summary`` line of the counts.
"""

from __future__ import annotations

import importlib
import json
import math
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any
from urllib.parse import quote_plus, unquote_plus

import botocore.client
from botocore.awsrequest import AWSResponse

#: The function's environment variables this wrapper reads.
HANDLER_ENV = "CSV_PIPELINE_REALISM_HANDLER"
RATE_ENV = "CSV_PIPELINE_REALISM_WCU_PER_SECOND"
BURST_ENV = "CSV_PIPELINE_REALISM_WCU_BURST"
PARTITION_KEY_ENV = "CSV_PIPELINE_REALISM_PARTITION_KEY"

DEFAULT_HANDLER = "csv_pipeline.handler.lambda_handler"
DEFAULT_RATE = 1000.0
DEFAULT_PARTITION_KEY = "source"

#: The entry point to deploy, with this file shipped as ``realism.py``.
ENTRY_POINT = "realism.lambda_handler"

_UNIT_BYTES = 1024
_SINGLE_WRITES = ("PutItem", "UpdateItem", "DeleteItem")
_MISSING_KEY_CODES = frozenset({"NoSuchKey", "404", "NotFound"})
_PTEE = "ProvisionedThroughputExceededException"
_CONTEXT = "realism"


# -- event keys -------------------------------------------------------------------------------


def aws_encoded_key(key: str) -> str:
    """``key`` as an S3 notification carries it; a key already in that form is unchanged."""
    if quote_plus(unquote_plus(key), safe="/") == key:
        return key
    return quote_plus(key, safe="/")


def _encode_event_keys(event: Any) -> int:
    """Encode the object keys of ``event``'s S3 records in place; how many changed."""
    changed = 0
    records = event.get("Records") if isinstance(event, dict) else None
    for record in records if isinstance(records, list) else []:
        obj = (record.get("s3") or {}).get("object") if isinstance(record, dict) else None
        if not isinstance(obj, dict) or not isinstance(obj.get("key"), str):
            continue
        encoded = aws_encoded_key(obj["key"])
        if encoded != obj["key"]:
            _log(f"event key {obj['key']!r} arrives URL-encoded as {encoded!r}")
            obj["key"] = encoded
            changed += 1
    return changed


# -- item sizes -------------------------------------------------------------------------------


def _value_size(value: Mapping[str, Any]) -> int:
    """Bytes DynamoDB counts for one attribute value in wire format."""
    [(kind, content)] = value.items()
    if kind == "S":
        return len(str(content).encode("utf-8"))
    if kind == "N":
        digits = str(content).lstrip("-").replace(".", "").lstrip("0") or "0"
        return (len(digits) + 1) // 2 + 1
    if kind == "B":
        return len(content) * 3 // 4
    if kind in ("BOOL", "NULL"):
        return 1
    if kind in ("SS", "NS", "BS"):
        return sum(_value_size({kind[0]: member}) for member in content)
    if kind == "L":
        return 3 + sum(_value_size(member) + 1 for member in content)
    if kind == "M":
        return 3 + _item_size(content) + len(content)
    raise ValueError(f"unknown DynamoDB attribute type {kind!r}")


def _item_size(item: Mapping[str, Mapping[str, Any]]) -> int:
    return sum(len(name.encode("utf-8")) + _value_size(value) for name, value in item.items())


def write_units(request: Mapping[str, Any]) -> int:
    """Write units of one BatchWriteItem request (``PutRequest`` or ``DeleteRequest``)."""
    if "PutRequest" in request:
        return max(1, math.ceil(_item_size(request["PutRequest"]["Item"]) / _UNIT_BYTES))
    return 1


# -- the token buckets ------------------------------------------------------------------------


class PartitionBuckets:
    """One token bucket of write units per (table, partition key value)."""

    def __init__(
        self,
        rate: float,
        burst: float,
        partition_key: str,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if rate <= 0 or burst <= 0:
            raise ValueError(f"{RATE_ENV} and {BURST_ENV} must be positive, not {rate}, {burst}")
        self.rate = rate
        self.burst = burst
        self.partition_key = partition_key
        self._clock = clock
        self._lock = threading.Lock()
        self._tokens: dict[tuple[str, str], tuple[float, float]] = {}

    def key_of(self, table: str, item_or_key: Mapping[str, Any]) -> tuple[str, str]:
        value = item_or_key.get(self.partition_key)
        return table, json.dumps(value, sort_keys=True)

    def _level(self, bucket: tuple[str, str], now: float) -> float:
        tokens, then = self._tokens.get(bucket, (self.burst, now))
        return min(self.burst, tokens + (now - then) * self.rate)

    def admit(self, demands: list[tuple[tuple[str, str], int]]) -> list[bool]:
        """Take units for each demand in order while its bucket has them; which were taken."""
        with self._lock:
            now = self._clock()
            levels: dict[tuple[str, str], float] = {}
            taken = []
            for bucket, units in demands:
                level = levels.get(bucket, self._level(bucket, now))
                ok = level >= units
                levels[bucket] = level - units if ok else level
                taken.append(ok)
            for bucket, level in levels.items():
                self._tokens[bucket] = (level, now)
            return taken

    def admit_all(self, demands: list[tuple[tuple[str, str], int]]) -> bool:
        """Take the units of every demand, or none of them."""
        with self._lock:
            now = self._clock()
            needed: dict[tuple[str, str], int] = {}
            for bucket, units in demands:
                needed[bucket] = needed.get(bucket, 0) + units
            levels = {bucket: self._level(bucket, now) for bucket in needed}
            if any(levels[bucket] < units for bucket, units in needed.items()):
                return False
            for bucket, units in needed.items():
                self._tokens[bucket] = (levels[bucket] - units, now)
            return True


# -- counters and log -------------------------------------------------------------------------


#: What :class:`Counters` counts.
COUNTERS = ("throttled_requests", "unprocessed_items", "batch_items", "s3_403", "keys_encoded")


class Counters:
    """What was injected during the current invocation."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.values: dict[str, int] = {}
        self.reset()

    def reset(self) -> None:
        with self._lock:
            self.values = dict.fromkeys(COUNTERS, 0)

    def add(self, name: str, n: int = 1) -> None:
        with self._lock:
            self.values[name] += n

    def summary(self) -> str:
        with self._lock:
            v = dict(self.values)
        return (
            f"REALISM summary: {v['throttled_requests']} write request(s) throttled "
            f"({_PTEE}), {v['unprocessed_items']} of {v['batch_items']} batch item(s) handed "
            f"back as UnprocessedItems, {v['s3_403']} missing key(s) answered 403, "
            f"{v['keys_encoded']} event key(s) URL-encoded"
        )


def _log(message: str) -> None:
    print(f"REALISM {message}", flush=True)


# -- the botocore hooks -----------------------------------------------------------------------


def _json_body(body: Any) -> dict[str, Any]:
    if isinstance(body, bytes | bytearray):
        body = body.decode("utf-8")
    parsed = json.loads(body) if body else {}
    return parsed if isinstance(parsed, dict) else {}


def _batch_demands(
    buckets: PartitionBuckets, request_items: Mapping[str, list[dict[str, Any]]]
) -> list[tuple[str, dict[str, Any], tuple[tuple[str, str], int]]]:
    demands = []
    for table, requests in request_items.items():
        for request in requests:
            target = request.get("PutRequest", {}).get("Item") or request.get(
                "DeleteRequest", {}
            ).get("Key", {})
            demands.append((table, request, (buckets.key_of(table, target), write_units(request))))
    return demands


def _throttled(request: Any, operation: str) -> AWSResponse:
    """DynamoDB's 400 answer to a write beyond the partition's throughput."""
    body = json.dumps(
        {
            "__type": f"com.amazonaws.dynamodb.v20120810#{_PTEE}",
            "message": "The level of configured provisioned throughput for the table was "
            "exceeded. Consider increasing your provisioning level with the UpdateTable API.",
        }
    ).encode("utf-8")
    headers = {
        "Content-Type": "application/x-amz-json-1.0",
        "Content-Length": str(len(body)),
        "x-amzn-RequestId": f"realism-{operation}-{time.monotonic_ns()}",
    }
    return AWSResponse(request.url, 400, headers, _Raw(body))


class _Raw:
    """The raw stream an :class:`AWSResponse` reads its content from."""

    def __init__(self, body: bytes) -> None:
        self._body = body

    def stream(self, **_: Any) -> Iterator[bytes]:
        yield self._body


class Realism:
    """The hooks, registered on every botocore client created after :meth:`install`."""

    def __init__(self, buckets: PartitionBuckets) -> None:
        self.buckets = buckets
        self.counters = Counters()

    # DynamoDB BatchWriteItem: split the request before it is signed ---------------------

    def before_batch_call(self, params: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
        """Send only the requests whose units are available; keep the rest to hand back."""
        body = _json_body(params.get("body"))
        request_items = body.get("RequestItems") or {}
        demands = _batch_demands(self.buckets, request_items)
        if not demands:
            return
        taken = self.buckets.admit([demand for _, _, demand in demands])
        self.counters.add("batch_items", len(demands))
        if not any(taken):
            # Nothing fits: the send below answers ProvisionedThroughputExceeded.
            context[_CONTEXT] = {"paid": False, "unprocessed": {}}
            return
        admitted: dict[str, list[dict[str, Any]]] = {}
        unprocessed: dict[str, list[dict[str, Any]]] = {}
        for (table, request, _demand), ok in zip(demands, taken, strict=True):
            (admitted if ok else unprocessed).setdefault(table, []).append(request)
        context[_CONTEXT] = {"paid": True, "unprocessed": unprocessed}
        if unprocessed:
            body["RequestItems"] = admitted
            params["body"] = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode(
                "utf-8"
            )

    def after_batch_call(
        self, http_response: Any, parsed: dict[str, Any], context: dict[str, Any], **_: Any
    ) -> None:
        """Hand the requests that were not sent back as ``UnprocessedItems``."""
        state = context.pop(_CONTEXT, None)
        if state is None or http_response.status_code >= 300 or not state["unprocessed"]:
            return
        merged = parsed.setdefault("UnprocessedItems", {})
        count = 0
        for table, requests in state["unprocessed"].items():
            merged.setdefault(table, []).extend(requests)
            count += len(requests)
        self.counters.add("unprocessed_items", count)

    # DynamoDB writes: throttle at the HTTP level, inside the client's retries -----------

    def before_write_send(self, request: Any, event_name: str, **_: Any) -> AWSResponse | None:
        """Answer 400 ProvisionedThroughputExceeded when the write's units are not available."""
        operation = event_name.rpartition(".")[2]
        state = (request.context or {}).get(_CONTEXT)
        if state is not None and state["paid"]:
            state["paid"] = False  # a resend of this request pays again
            return None
        body = _json_body(request.body)
        if operation == "BatchWriteItem":
            demands = [d for _, _, d in _batch_demands(self.buckets, body.get("RequestItems", {}))]
        elif operation in _SINGLE_WRITES:
            table = str(body.get("TableName", ""))
            if operation == "PutItem":
                item = body.get("Item", {})
                units = write_units({"PutRequest": {"Item": item}})
            else:
                item, units = body.get("Key", {}), 1
            demands = [(self.buckets.key_of(table, item), units)]
        else:
            return None
        if not demands or self.buckets.admit_all(demands):
            return None
        self.counters.add("throttled_requests")
        return _throttled(request, operation)

    # S3: a missing key is AccessDenied ----------------------------------------------------

    def after_s3_read(self, parsed: dict[str, Any], model: Any, **_: Any) -> None:
        """Turn a 404 for a missing key into the 403 a reader without ListBucket gets."""
        if parsed.get("Error", {}).get("Code") not in _MISSING_KEY_CODES:
            return
        if model.name == "HeadObject":
            parsed["Error"] = {"Code": "403", "Message": "Forbidden"}
        else:
            parsed["Error"] = {"Code": "AccessDenied", "Message": "Access Denied"}
        parsed.setdefault("ResponseMetadata", {})["HTTPStatusCode"] = 403
        self.counters.add("s3_403")
        _log(f"S3 {model.name} of a missing key answers 403 {parsed['Error']['Code']}")

    # registration -------------------------------------------------------------------------

    def register(self, client: Any) -> None:
        """Hook one client, seeing requests as its own handlers (a body swap) left them."""
        events = client.meta.events
        service = client.meta.service_model.service_name
        if service == "dynamodb":
            events.register_last(
                "before-call.dynamodb.BatchWriteItem",
                self.before_batch_call,
                unique_id="realism-batch-call",
            )
            # The requests handed back are in wire format: this runs before the handlers
            # of the less specific ``after-call.dynamodb`` (a resource client's deserializer).
            events.register_first(
                "after-call.dynamodb.BatchWriteItem",
                self.after_batch_call,
                unique_id="realism-batch-after",
            )
            for operation in ("BatchWriteItem", *_SINGLE_WRITES):
                events.register_last(
                    f"before-send.dynamodb.{operation}",
                    self.before_write_send,
                    unique_id=f"realism-send-{operation}",
                )
        elif service == "s3":
            for operation in ("GetObject", "HeadObject"):
                events.register_last(
                    f"after-call.s3.{operation}",
                    self.after_s3_read,
                    unique_id=f"realism-s3-{operation}",
                )

    def install(self) -> None:
        """Hook every botocore client created from now on, in this process."""
        original = botocore.client.BaseClient.__init__
        realism = self

        def init(client: Any, *args: Any, **kwargs: Any) -> None:
            original(client, *args, **kwargs)
            realism.register(client)

        botocore.client.BaseClient.__init__ = init


# -- the handler ------------------------------------------------------------------------------


def _number(name: str, default: float) -> float:
    raw = os.environ.get(name, "").strip()
    return float(raw) if raw else default


def _load(path: str) -> Callable[..., Any]:
    module, _, function = path.rpartition(".")
    if not module:
        raise ValueError(f"{HANDLER_ENV} must be module.function, not {path!r}")
    handler = getattr(importlib.import_module(module), function)
    if not callable(handler):
        raise TypeError(f"{path} is not callable")
    return handler  # type: ignore[no-any-return]


_state_lock = threading.Lock()
_state: tuple[Realism, Callable[..., Any]] | None = None


def _setup() -> tuple[Realism, Callable[..., Any]]:
    """Install the hooks, then import the wrapped handler (so its clients are hooked too)."""
    global _state
    with _state_lock:
        if _state is None:
            rate = _number(RATE_ENV, DEFAULT_RATE)
            buckets = PartitionBuckets(
                rate,
                _number(BURST_ENV, rate),
                os.environ.get(PARTITION_KEY_ENV) or DEFAULT_PARTITION_KEY,
            )
            realism = Realism(buckets)
            realism.install()
            path = os.environ.get(HANDLER_ENV) or DEFAULT_HANDLER
            _log(
                f"on: wrapping {path}; S3 403 for missing keys; {rate:g} write units/s "
                f"(burst {buckets.burst:g}) per partition key {buckets.partition_key!r}; "
                "URL-encoded event keys"
            )
            _state = (realism, _load(path))
        return _state


def lambda_handler(event: Any, context: Any = None) -> Any:
    """The wrapped handler, run with AWS's behaviour where the emulator's differs."""
    realism, handler = _setup()
    realism.counters.reset()
    realism.counters.add("keys_encoded", _encode_event_keys(event))
    try:
        return handler(event, context)
    finally:
        print(realism.counters.summary(), flush=True)
