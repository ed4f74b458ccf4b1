"""Batched writes to DynamoDB that never drop a request.

BatchWriteItem takes at most 25 requests and may hand some back as
``UnprocessedItems`` when the table is throttled; those are resent with
exponential backoff until they go through or ``max_attempts`` attempts in a
row write nothing, at which point an exception is raised (never a silent
partial write). A whole request
that fails the same way — throttled, a 5xx, a dropped connection or a
timeout — is resent under the same backoff: puts and deletes of whole items
are idempotent, so sending one twice is harmless.

With ``max_in_flight > 1`` batches are sent from a small thread pool while
the caller keeps parsing, so reading the file and the table's latency
overlap. The number of batches in flight is bounded (the caller blocks when
all slots are busy), which keeps memory flat however long the file is.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from typing import Any

from botocore.exceptions import ClientError, ConnectionError, HTTPClientError

from .aws import error_code, http_status
from .parsing import Item

BATCH_LIMIT = 25

#: Error codes DynamoDB uses for "slow down", retried like UnprocessedItems.
THROTTLING_CODES = frozenset(
    {
        "ProvisionedThroughputExceededException",
        "ThrottlingException",
        "RequestLimitExceeded",
        "Throttling",
        "TooManyRequestsException",
    }
)


def is_retryable(error: BaseException) -> bool:
    """Whether a failed BatchWriteItem may simply be sent again."""
    if isinstance(error, (ConnectionError, HTTPClientError)):
        return True
    if isinstance(error, ClientError):
        return error_code(error) in THROTTLING_CODES or http_status(error) >= 500
    return False


def _count(requests: dict[str, list[dict[str, Any]]]) -> int:
    return sum(len(v) for v in requests.values())


class UnprocessedItemsError(RuntimeError):
    """DynamoDB kept returning UnprocessedItems after every retry."""


class OutOfTime(RuntimeError):
    """A request could not be sent, or resent after backoff, before ``give_up_at``."""


class BatchWriter:
    """Collects put and delete requests and sends them 25 at a time.

    Use as a context manager so the last partial batch is flushed. An
    exception inside the block skips that flush but still waits for the
    batches already in flight, so nothing this writer sent is still on its
    way once the block has been left (callers rely on that to hand a source
    over to another invocation).

    ``before_send`` runs before every request (first attempt and resends);
    raising from it stops the writer. The handler uses it to make sure it
    still owns the source before it writes. Past ``give_up_at`` (monotonic
    time) no request is sent and no backoff is slept: :class:`OutOfTime` is
    raised instead, so a caller with a deadline can stop cleanly.

    With ``max_in_flight > 1`` batches may be applied in any order: never
    write the same key twice through one writer.

    An error in a background send is raised by the next ``put``/``delete``/
    ``flush`` of the caller's thread.
    """

    def __init__(
        self,
        client: Any,
        table: str,
        *,
        max_in_flight: int = 1,
        max_attempts: int = 10,
        base_delay: float = 0.05,
        max_delay: float = 5.0,
        sleep: Callable[[float], None] = time.sleep,
        before_send: Callable[[], None] | None = None,
        give_up_at: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_in_flight < 1:
            raise ValueError("max_in_flight must be at least 1")
        self._client = client
        self._table = table
        self._max_attempts = max_attempts
        self._base_delay = base_delay
        self._max_delay = max_delay
        self._sleep = sleep
        self._before_send = before_send
        self._give_up_at = give_up_at
        self._clock = clock
        self._pending: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._error: BaseException | None = None
        self._in_flight: set[Future[None]] = set()
        self._slots = threading.BoundedSemaphore(max_in_flight)
        self._pool = (
            ThreadPoolExecutor(max_in_flight, thread_name_prefix="batch-writer")
            if max_in_flight > 1
            else None
        )
        self.requests_sent = 0
        self.retries = 0

    def put(self, item: Item) -> None:
        self._pending.append({"PutRequest": {"Item": item}})
        if len(self._pending) >= BATCH_LIMIT:
            self._dispatch()

    def delete(self, key: Item) -> None:
        self._pending.append({"DeleteRequest": {"Key": key}})
        if len(self._pending) >= BATCH_LIMIT:
            self._dispatch()

    def flush(self) -> None:
        """Send every pending request and wait until all of them are written."""
        while self._pending:
            self._dispatch()
        self._wait_in_flight()
        self._raise_error()

    def _dispatch(self) -> None:
        self._raise_error()
        batch, self._pending = self._pending[:BATCH_LIMIT], self._pending[BATCH_LIMIT:]
        if self._pool is None:
            self._send(batch)
            return
        self._slots.acquire()
        try:
            future = self._pool.submit(self._send, batch)
        except BaseException:
            self._slots.release()
            raise
        with self._lock:
            self._in_flight.add(future)
        future.add_done_callback(self._done)

    def _done(self, future: Future[None]) -> None:
        error = future.exception()
        with self._lock:
            self._in_flight.discard(future)
            if error is not None and self._error is None:
                self._error = error
        self._slots.release()

    def _raise_error(self) -> None:
        if self._error is not None:
            raise self._error

    def _wait_in_flight(self) -> None:
        while True:
            with self._lock:
                futures = list(self._in_flight)
            if not futures:
                return
            # Errors are recorded by _done and raised in the caller's thread.
            wait(futures)

    def _send(self, batch: list[dict[str, Any]]) -> None:
        """Send ``batch`` until every request is written.

        Only attempts that write nothing count towards ``max_attempts``, and
        only they double the backoff: a partition at its write limit takes a
        few requests on every attempt (two 400 KB items a second), and a
        batch of them goes through at that pace instead of failing.
        """
        requests = {self._table: batch}
        stalled, delay = 0, 0.0
        while True:
            left = _count(requests)
            requests, error = self._attempt(requests)
            if not requests:
                return
            # A failed call leaves every request: it counts as writing nothing.
            stalled = 0 if _count(requests) < left else stalled + 1
            if stalled >= self._max_attempts:
                raise error or UnprocessedItemsError(
                    f"{_count(requests)} write request(s) still unprocessed after "
                    f"{self._max_attempts} attempts"
                )
            if error:
                with self._lock:
                    self.retries += 1
            if not delay:
                delay = self._base_delay
            elif stalled:
                delay = min(self._max_delay, delay * 2)
            pause = random.uniform(delay / 2, delay)
            self._check_time(pause)
            self._sleep(pause)

    def _attempt(
        self, requests: dict[str, list[dict[str, Any]]]
    ) -> tuple[dict[str, list[dict[str, Any]]], Exception | None]:
        """One BatchWriteItem: the requests left, and the error when the call failed.

        Only an error worth sending the same requests again is returned; any
        other is raised.
        """
        self._check_time(0.0)
        if self._before_send is not None:
            self._before_send()
        try:
            response = self._client.batch_write_item(RequestItems=requests)
        except Exception as exc:
            if not is_retryable(exc):
                raise
            return requests, exc
        unprocessed = response.get("UnprocessedItems") or {}
        with self._lock:
            self.requests_sent += 1
            if unprocessed:
                self.retries += 1
        return unprocessed, None

    def _check_time(self, delay: float) -> None:
        if self._give_up_at is not None and self._clock() + delay >= self._give_up_at:
            raise OutOfTime("out of time for writing: the invocation's deadline is near")

    def close(self) -> None:
        """Wait for the batches in flight and stop the threads (pending ones are dropped)."""
        self._wait_in_flight()
        if self._pool is not None:
            self._pool.shutdown(wait=True)

    def __enter__(self) -> BatchWriter:
        return self

    def __exit__(self, exc_type: object, *_: object) -> None:
        try:
            if exc_type is None:
                self.flush()
        finally:
            self.close()
