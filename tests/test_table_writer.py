"""BatchWriter and the pre-serialized client, without an emulator.

A stub stands in for DynamoDB: it applies what it accepts to a dict and hands
requests back as UnprocessedItems or raises throttling errors on a script, so
every retry path is exercised deterministically and "no row lost" is checked
against the stub's final table.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import Any

import boto3
import pytest
from botocore.awsrequest import AWSResponse
from botocore.config import Config
from botocore.exceptions import ClientError, ReadTimeoutError
from hypothesis import given, settings
from hypothesis import strategies as st

from csv_pipeline import aws
from csv_pipeline.parsing import key_of, to_item
from csv_pipeline.table_writer import BATCH_LIMIT, BatchWriter, OutOfTime, UnprocessedItemsError
from csv_pipeline.wire import PreSerializedBatchWriter

TABLE = "t"


def item(row: int) -> dict[str, Any]:
    return to_item("b/k.csv", row, ["a", "b"], [f"v{row}", ""])


def throttled(code: str = "ProvisionedThroughputExceededException") -> ClientError:
    return ClientError(
        {
            "Error": {"Code": code, "Message": "slow down"},
            "ResponseMetadata": {"HTTPStatusCode": 400},
        },
        "BatchWriteItem",
    )


class StubTable:
    """A DynamoDB table behind batch_write_item, with scripted trouble.

    ``script(call_number, requests)`` returns how many requests to accept
    (the rest come back as UnprocessedItems) or raises to fail the call.
    """

    def __init__(self, script: Callable[[int, list[dict[str, Any]]], int] | None = None) -> None:
        self.rows: dict[tuple[str, str], dict[str, Any]] = {}
        self.calls = 0
        self.batch_sizes: list[int] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.delay = 0.0
        self._script = script
        self._lock = threading.Lock()

    def batch_write_item(self, RequestItems: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
        [(table, requests)] = RequestItems.items()
        assert table == TABLE and 0 < len(requests) <= BATCH_LIMIT
        with self._lock:
            self.calls += 1
            call = self.calls
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if self.delay:
                time.sleep(self.delay)
            accepted = len(requests) if self._script is None else self._script(call, requests)
            with self._lock:
                self.batch_sizes.append(len(requests))
                for request in requests[:accepted]:
                    if "PutRequest" in request:
                        item = request["PutRequest"]["Item"]
                        self.rows[(item["source"]["S"], item["row"]["N"])] = item
                    else:
                        key = request["DeleteRequest"]["Key"]
                        self.rows.pop((key["source"]["S"], key["row"]["N"]), None)
            rest = requests[accepted:]
            return {"UnprocessedItems": {table: rest} if rest else {}}
        finally:
            with self._lock:
                self.in_flight -= 1


def no_sleep(_: float) -> None:
    pass


def test_requests_go_25_at_a_time_and_the_rest_on_exit() -> None:
    stub = StubTable()
    with BatchWriter(stub, TABLE, sleep=no_sleep) as writer:
        for row in range(1, 61):
            writer.put(item(row))
    assert stub.batch_sizes == [25, 25, 10]
    assert len(stub.rows) == 60


def test_unprocessed_items_are_resent_with_backoff_growing_only_while_nothing_moves() -> None:
    delays: list[float] = []
    # Calls 1-3 take nothing, calls 4-5 take 5 requests each, then everything goes through.
    script = {1: 0, 2: 0, 3: 0, 4: 5, 5: 5}
    stub = StubTable(lambda call, requests: script.get(call, len(requests)))
    writer = BatchWriter(stub, TABLE, base_delay=0.1, max_delay=1.0, sleep=delays.append)
    with writer:
        for row in range(1, 26):
            writer.put(item(row))
    assert sorted(r for _, r in stub.rows) == sorted(str(r) for r in range(1, 26))
    assert stub.batch_sizes == [25, 25, 25, 25, 20, 15]
    assert writer.retries == 5 and writer.requests_sent == 6
    # Full jitter within a cap that doubles after each attempt that wrote
    # nothing (0.1, 0.2, 0.4) and holds while requests go through (0.4, 0.4).
    caps = [0.1, 0.2, 0.4, 0.4, 0.4]
    assert len(delays) == len(caps)
    for cap, delay in zip(caps, delays, strict=True):
        assert cap / 2 <= delay <= cap


def test_backoff_is_capped() -> None:
    delays: list[float] = []
    stub = StubTable(lambda call, requests: 0 if call <= 8 else len(requests))
    with BatchWriter(stub, TABLE, base_delay=0.1, max_delay=0.5, sleep=delays.append) as writer:
        writer.put(item(1))
    assert len(delays) == 8 and max(delays) <= 0.5
    assert len(stub.rows) == 1


@pytest.mark.parametrize(
    "error",
    [
        throttled(),
        throttled("ThrottlingException"),
        ClientError(
            {"Error": {"Code": "InternalServerError"}, "ResponseMetadata": {"HTTPStatusCode": 500}},
            "BatchWriteItem",
        ),
        ReadTimeoutError(endpoint_url="http://dynamodb"),
    ],
    ids=["throughput", "throttling", "5xx", "read-timeout"],
)
def test_throttled_or_failed_requests_are_resent(error: Exception) -> None:
    def script(call: int, requests: list[dict[str, Any]]) -> int:
        if call <= 2:
            raise error
        return len(requests)

    stub = StubTable(script)
    delays: list[float] = []
    writer = BatchWriter(stub, TABLE, sleep=delays.append)
    with writer:
        for row in range(1, 4):
            writer.put(item(row))
    assert len(stub.rows) == 3 and writer.retries == 2 and len(delays) == 2


def test_a_request_that_cannot_succeed_fails_at_once() -> None:
    def script(call: int, requests: list[dict[str, Any]]) -> int:
        raise throttled("ValidationException")

    stub = StubTable(script)
    with (
        pytest.raises(ClientError, match="ValidationException"),
        BatchWriter(stub, TABLE, sleep=no_sleep) as writer,
    ):
        writer.put(item(1))
    assert stub.calls == 1


def test_running_out_of_attempts_raises_instead_of_dropping_rows() -> None:
    stub = StubTable(lambda call, requests: len(requests) - 1)  # always one short
    with (
        pytest.raises(UnprocessedItemsError, match="1 write request"),
        BatchWriter(stub, TABLE, max_attempts=3, sleep=no_sleep) as writer,
    ):
        for row in range(1, 4):
            writer.put(item(row))


@settings(max_examples=settings().max_examples * 2, deadline=None)
@given(
    rows=st.integers(min_value=0, max_value=140),
    accepted=st.lists(st.integers(min_value=0, max_value=25), min_size=1, max_size=30),
    concurrency=st.sampled_from([1, 3]),
)
def test_no_row_is_lost_whatever_is_handed_back(
    rows: int, accepted: list[int], concurrency: int
) -> None:
    """Any pattern of partial acceptance ends with every row written exactly once."""
    lock = threading.Lock()
    pattern = iter(accepted)

    def script(call: int, requests: list[dict[str, Any]]) -> int:
        with lock:
            take = next(pattern, len(requests))
        if call % 5 == 0:
            raise throttled()
        return max(1, min(take, len(requests))) if call % 7 == 0 else min(take, len(requests))

    stub = StubTable(script)
    with BatchWriter(stub, TABLE, max_in_flight=concurrency, max_attempts=100, sleep=no_sleep) as w:
        for row in range(1, rows + 1):
            w.put(item(row))
    assert sorted(int(r) for _, r in stub.rows) == list(range(1, rows + 1))
    assert all(stub.rows[("b/k.csv", str(r))] == item(r) for r in range(1, rows + 1))


def test_deletes_remove_rows() -> None:
    stub = StubTable()
    with BatchWriter(stub, TABLE, sleep=no_sleep) as writer:
        for row in range(1, 4):
            writer.put(item(row))
    with BatchWriter(stub, TABLE, sleep=no_sleep) as writer:
        writer.delete(key_of("b/k.csv", 2))
    assert sorted(stub.rows) == [("b/k.csv", "1"), ("b/k.csv", "3")]


def test_batches_in_flight_are_bounded() -> None:
    stub = StubTable()
    stub.delay = 0.01
    with BatchWriter(stub, TABLE, max_in_flight=3, sleep=no_sleep) as writer:
        for row in range(1, 25 * 20 + 1):
            writer.put(item(row))
    assert stub.max_in_flight == 3
    assert len(stub.rows) == 500


def test_a_background_failure_surfaces_in_the_callers_thread() -> None:
    def script(call: int, requests: list[dict[str, Any]]) -> int:
        if call == 2:
            raise throttled("ValidationException")
        return len(requests)

    stub = StubTable(script)
    with pytest.raises(ClientError, match="ValidationException"):  # noqa: SIM117
        with BatchWriter(stub, TABLE, max_in_flight=2, sleep=no_sleep) as writer:
            for row in range(1, 25 * 40 + 1):
                writer.put(item(row))
    # It stopped early instead of sending the whole file after the error.
    assert stub.calls < 40


def test_leaving_on_an_error_waits_for_batches_in_flight_and_drops_the_rest() -> None:
    stub = StubTable()
    stub.delay = 0.05
    with pytest.raises(RuntimeError, match="stop"):  # noqa: SIM117
        with BatchWriter(stub, TABLE, max_in_flight=4, sleep=no_sleep) as writer:
            for row in range(1, 25 * 4 + 11):
                writer.put(item(row))
            raise RuntimeError("stop")
    # Nothing is still being sent once the writer is left, so nothing can land later.
    assert stub.in_flight == 0
    assert len(stub.rows) == 100  # the 10 pending were never sent


def test_before_send_runs_before_every_attempt_and_can_stop_the_writer() -> None:
    stub = StubTable(lambda call, requests: 10 if call == 1 else len(requests))
    checks: list[int] = []

    def before_send() -> None:
        checks.append(stub.calls)
        if len(checks) > 2:
            raise PermissionError("lease lost")

    with BatchWriter(stub, TABLE, sleep=no_sleep, before_send=before_send) as writer:
        for row in range(1, 26):
            writer.put(item(row))
    assert checks == [0, 1]  # first attempt, then the resend of 15 unprocessed
    with (
        pytest.raises(PermissionError),
        BatchWriter(stub, TABLE, sleep=no_sleep, before_send=before_send) as writer,
    ):
        writer.put(item(99))
    assert ("b/k.csv", "99") not in stub.rows


def test_nothing_is_sent_or_slept_past_the_deadline() -> None:
    now = [100.0]
    delays: list[float] = []

    def sleep(seconds: float) -> None:
        delays.append(seconds)
        now[0] += seconds

    stub = StubTable(lambda call, requests: 0)  # never accepts anything
    writer = BatchWriter(
        stub,
        TABLE,
        base_delay=1.0,
        max_delay=8.0,
        sleep=sleep,
        give_up_at=105.0,
        clock=lambda: now[0],
    )
    with pytest.raises(OutOfTime), writer:
        writer.put(item(1))
    assert now[0] + 0 < 105.0  # it stopped instead of sleeping past the deadline
    assert stub.calls == len(delays) + 1
    now[0] = 106.0
    with (
        pytest.raises(OutOfTime),
        BatchWriter(stub, TABLE, give_up_at=105.0, clock=lambda: now[0]) as late,
    ):
        late.put(item(2))
    assert stub.calls == len(delays) + 1  # not one more request


# -- the pre-serialized client --------------------------------------------------------


def answer_locally(client: Any, seen: Callable[[Any], None]) -> None:
    """Answer every BatchWriteItem locally, showing ``seen`` each request as it would be sent."""

    def answer(request: Any, **_: Any) -> AWSResponse:
        seen(request)
        raw = type("Raw", (), {"stream": lambda self, **_: iter([b"{}"])})()
        return AWSResponse(request.url, 200, {"Content-Type": "application/x-amz-json-1.0"}, raw)

    client.meta.events.register("before-send.dynamodb.BatchWriteItem", answer)


def captured_bodies(client: Any) -> list[bytes]:
    """Answer every request locally, keeping the bodies botocore would have sent."""
    bodies: list[bytes] = []
    answer_locally(
        client,
        lambda request: bodies.append(
            request.body if isinstance(request.body, bytes) else request.body.read()
        ),
    )
    return bodies


def dynamodb_client(**config: Any) -> Any:
    return boto3.client(
        "dynamodb",
        region_name="us-east-1",
        endpoint_url="http://127.0.0.1:9",
        aws_access_key_id="test",
        aws_secret_access_key="test",
        config=Config(**config),
    )


def test_pre_serialized_body_says_what_botocore_would_send() -> None:
    requests = [
        {"PutRequest": {"Item": to_item("b/ü.csv", r, ["x", "y"], ['é\n"q"', ""])}}
        for r in range(1, 26)
    ]
    requests.append({"DeleteRequest": {"Key": key_of("b/ü.csv", 99)}})
    plain = dynamodb_client()
    expected = captured_bodies(plain)
    plain.batch_write_item(RequestItems={TABLE: requests})

    fast_client = dynamodb_client(parameter_validation=False)
    sent = captured_bodies(fast_client)
    response = PreSerializedBatchWriter(fast_client).batch_write_item(
        RequestItems={TABLE: requests}
    )

    assert response.get("UnprocessedItems", {}) == {}
    assert json.loads(sent[0]) == json.loads(expected[0]) == {"RequestItems": {TABLE: requests}}


def test_pre_serialized_client_sends_plain_calls_unchanged() -> None:
    fast_client = dynamodb_client(parameter_validation=False)
    PreSerializedBatchWriter(fast_client)
    sent = captured_bodies(fast_client)
    # A call made directly on the client (not through the writer) keeps its own body.
    fast_client.batch_write_item(RequestItems={TABLE: [{"DeleteRequest": {"Key": key_of("s", 1)}}]})
    assert json.loads(sent[0]) == {
        "RequestItems": {TABLE: [{"DeleteRequest": {"Key": key_of("s", 1)}}]}
    }


def test_the_row_client_sends_a_user_agent_built_once() -> None:
    """Not botocore's standard one, which it rebuilds twice for every request."""
    fast_client = dynamodb_client(**aws.row_writer_settings(2.0, 3))
    agents: list[str] = []
    answer_locally(
        fast_client, lambda request: agents.append(str(request.headers["User-Agent"], "utf-8"))
    )
    writer = PreSerializedBatchWriter(fast_client)
    for row in (1, 2):
        writer.batch_write_item(RequestItems={TABLE: [{"PutRequest": {"Item": item(row)}}]})
    first, second = agents
    assert first == second and first.startswith(f"{aws.ROW_USER_AGENT} "), agents


def test_a_throttled_partition_that_takes_a_little_each_time_gets_everything_written() -> None:
    """One partition at its write limit: every attempt takes a few requests, none takes all.

    25 items of 400 KB cost 10,000 write units; a partition allows about
    1,000 a second with a burst of about as much, so each resend gets two
    items through. Progress resets the count of attempts: only attempts that
    move nothing count towards giving up, and the backoff stops growing
    while requests go through.
    """
    delays: list[float] = []
    stub = StubTable(lambda call, requests: min(2, len(requests)))
    writer = BatchWriter(stub, TABLE, max_attempts=3, base_delay=0.1, sleep=delays.append)
    with writer:
        for row in range(1, 26):
            writer.put(item(row))
    assert len(stub.rows) == 25
    assert stub.batch_sizes == list(range(25, 0, -2))
    assert all(0.05 <= delay <= 0.1 for delay in delays), delays
