"""BatchWriter's edges: the 25th request, the last attempt, the deadline's instant, its threads.

test_table_writer.py proves that nothing is lost under throttling and
failure; these pin where the limits fall exactly, since an off-by-one there
loses no row in those tests but sends a 26-request batch DynamoDB refuses,
retries one time too few, or writes past the invocation's deadline.
"""

from __future__ import annotations

import json
import threading
from typing import Any

import pytest
from botocore.exceptions import ClientError
from test_table_writer import (
    TABLE,
    StubTable,
    captured_bodies,
    dynamodb_client,
    item,
    no_sleep,
    throttled,
)

from csv_pipeline import table_writer
from csv_pipeline.parsing import key_of
from csv_pipeline.table_writer import (
    BATCH_LIMIT,
    BatchWriter,
    OutOfTime,
    UnprocessedItemsError,
    is_retryable,
)
from csv_pipeline.wire import PreSerializedBatchWriter


@pytest.mark.parametrize("kind", ["put", "delete"])
def test_the_25th_request_sends_a_batch_at_once(kind: str) -> None:
    stub = StubTable()
    writer = BatchWriter(stub, TABLE, sleep=no_sleep)
    add = writer.put if kind == "put" else writer.delete
    for row in range(1, BATCH_LIMIT):
        add(item(row) if kind == "put" else key_of("b/k.csv", row))
    assert stub.calls == 0
    add(item(BATCH_LIMIT) if kind == "put" else key_of("b/k.csv", BATCH_LIMIT))
    assert stub.batch_sizes == [BATCH_LIMIT]
    writer.close()


@pytest.mark.parametrize("attempts", [1, 3])
def test_a_batch_is_sent_exactly_max_attempts_times(attempts: int) -> None:
    delays: list[float] = []
    stub = StubTable(lambda call, requests: 0)  # never takes anything
    writer = BatchWriter(stub, TABLE, max_attempts=attempts, sleep=delays.append)
    with pytest.raises(UnprocessedItemsError, match=f"1 write request.*after {attempts} attempts"):
        writer.put(item(1))
        writer.flush()
    assert stub.calls == attempts
    assert len(delays) == attempts - 1  # no backoff after the last attempt
    writer.close()


def test_a_failing_request_is_retried_until_the_last_attempt_then_raised() -> None:
    def always_throttled(call: int, requests: list[dict[str, Any]]) -> int:
        raise throttled()

    stub = StubTable(always_throttled)
    writer = BatchWriter(stub, TABLE, max_attempts=4, sleep=no_sleep)
    with pytest.raises(ClientError):
        writer.put(item(1))
        writer.flush()
    assert stub.calls == 4
    writer.close()


@pytest.mark.parametrize(
    "error",
    [
        throttled("ValidationException"),
        ValueError("a bug, not the table"),
    ],
    ids=["validation", "not-an-aws-error"],
)
def test_an_error_that_is_not_transient_is_raised_at_once(error: Exception) -> None:
    assert not is_retryable(error)

    def fails(call: int, requests: list[dict[str, Any]]) -> int:
        raise error

    stub = StubTable(fails)
    writer = BatchWriter(stub, TABLE, sleep=no_sleep)
    with pytest.raises(type(error)):
        writer.put(item(1))
        writer.flush()
    assert stub.calls == 1
    writer.close()


def test_at_give_up_at_itself_nothing_is_sent() -> None:
    stub = StubTable()
    writer = BatchWriter(stub, TABLE, give_up_at=100.0, clock=lambda: 100.0, sleep=no_sleep)
    writer.put(item(1))
    with pytest.raises(OutOfTime, match=r"^out of time for writing: the invocation's deadline"):
        writer.flush()
    assert stub.calls == 0
    writer.close()
    just_before = BatchWriter(stub, TABLE, give_up_at=100.0, clock=lambda: 99.99, sleep=no_sleep)
    with just_before:
        just_before.put(item(1))
    assert stub.calls == 1


def test_a_writer_needs_at_least_one_slot() -> None:
    with pytest.raises(ValueError, match=r"^max_in_flight must be at least 1$"):
        BatchWriter(StubTable(), TABLE, max_in_flight=0)


class ThreadRecordingTable(StubTable):
    def __init__(self) -> None:
        super().__init__()
        self.threads: set[str] = set()

    def batch_write_item(self, RequestItems: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
        self.threads.add(threading.current_thread().name)
        return super().batch_write_item(RequestItems)


def test_one_slot_sends_from_the_callers_thread_more_from_batch_writer_threads() -> None:
    alone = ThreadRecordingTable()
    with BatchWriter(alone, TABLE, max_in_flight=1, sleep=no_sleep) as writer:
        for row in range(1, 60):
            writer.put(item(row))
    assert alone.threads == {threading.current_thread().name}

    pooled = ThreadRecordingTable()
    with BatchWriter(pooled, TABLE, max_in_flight=2, sleep=no_sleep) as writer:
        for row in range(1, 60):
            writer.put(item(row))
    assert pooled.threads and all(name.startswith("batch-writer_") for name in pooled.threads)
    assert len(pooled.rows) == 59


class QueryProtocolClient:
    """A client whose service does not speak JSON: the writer must not touch its body."""

    class meta:
        class service_model:
            protocol = "query"

        class events:
            @staticmethod
            def register(*_: Any) -> None:
                raise AssertionError("no body swap for a non-JSON protocol")

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def batch_write_item(self, **kwargs: Any) -> dict[str, Any]:
        self.calls.append(kwargs)
        return {"UnprocessedItems": {}}


def test_a_client_that_does_not_speak_json_gets_the_plain_call() -> None:
    client = QueryProtocolClient()
    writer = PreSerializedBatchWriter(client)
    assert writer.enabled is False
    requests = {TABLE: [{"PutRequest": {"Item": item(1)}}]}
    assert writer.batch_write_item(RequestItems=requests) == {"UnprocessedItems": {}}
    assert client.calls == [{"RequestItems": requests}]


@pytest.mark.parametrize("jitter", ["low", "high"])
def test_the_default_backoff_doubles_from_50_ms_to_5_s_jittered_down_to_half(
    monkeypatch: pytest.MonkeyPatch, jitter: str
) -> None:
    """The job's writer uses the defaults: 10 attempts, 0.05 s doubling, capped at 5 s."""
    pick = (lambda low, high: low) if jitter == "low" else (lambda low, high: high)
    monkeypatch.setattr(table_writer.random, "uniform", pick)
    delays: list[float] = []
    stub = StubTable(lambda call, requests: 0)
    writer = BatchWriter(stub, TABLE, sleep=delays.append)
    with pytest.raises(UnprocessedItemsError, match="after 10 attempts"):
        writer.put(item(1))
        writer.flush()
    writer.close()
    nominal = [min(5.0, 0.05 * 2**attempt) for attempt in range(9)]
    assert nominal[6] == 3.2 and nominal[7:] == [5.0, 5.0]
    expected = [d / 2 for d in nominal] if jitter == "low" else nominal
    assert delays == pytest.approx(expected)
    assert stub.calls == 10


def test_by_default_one_batch_at_a_time_from_the_callers_thread() -> None:
    stub = ThreadRecordingTable()
    with BatchWriter(stub, TABLE, sleep=no_sleep) as writer:
        for row in range(1, 80):
            writer.put(item(row))
    assert stub.threads == {threading.current_thread().name}
    assert stub.max_in_flight == 1


def test_flush_returns_only_once_every_batch_in_flight_is_written() -> None:
    """The job records a checkpoint right after flush: rows before it must all be in the table."""
    stub = StubTable()
    stub.delay = 0.05
    writer = BatchWriter(stub, TABLE, max_in_flight=3, sleep=no_sleep)
    for row in range(1, 101):
        writer.put(item(row))
    writer.flush()
    assert len(stub.rows) == 100 and stub.in_flight == 0
    writer.close()


def test_a_plain_call_after_a_pre_serialized_one_sends_its_own_body() -> None:
    client = dynamodb_client(parameter_validation=False)
    writer = PreSerializedBatchWriter(client)
    assert writer.enabled  # DynamoDB speaks JSON: the fast path is on
    sent = captured_bodies(client)
    writer.batch_write_item(RequestItems={TABLE: [{"PutRequest": {"Item": item(1)}}]})
    plain = {TABLE: [{"DeleteRequest": {"Key": key_of("b/k.csv", 2)}}]}
    client.batch_write_item(RequestItems=plain)
    assert json.loads(sent[1]) == {"RequestItems": plain}
