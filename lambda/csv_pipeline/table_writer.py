"""Batched writes to DynamoDB that never drop a request.

BatchWriteItem takes at most 25 requests and may hand some back as
``UnprocessedItems`` when the table is throttled; those are resent with
exponential backoff until they go through or the attempts run out, at which
point an exception is raised (never a silent partial write).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import Any

from .parsing import Item

BATCH_LIMIT = 25


class UnprocessedItemsError(RuntimeError):
    """DynamoDB kept returning UnprocessedItems after every retry."""


class BatchWriter:
    """Collects put and delete requests and sends them 25 at a time.

    Use as a context manager so the last partial batch is flushed; an
    exception inside the block skips the flush (the caller records FAILED).
    """

    def __init__(
        self,
        client: Any,
        table: str,
        *,
        max_attempts: int = 10,
        base_delay: float = 0.05,
        max_delay: float = 5.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._client = client
        self._table = table
        self._max_attempts = max_attempts
        self._base_delay = base_delay
        self._max_delay = max_delay
        self._sleep = sleep
        self._pending: list[dict[str, Any]] = []
        self.requests_sent = 0
        self.retries = 0

    def put(self, item: Item) -> None:
        self._add({"PutRequest": {"Item": item}})

    def delete(self, key: Item) -> None:
        self._add({"DeleteRequest": {"Key": key}})

    def _add(self, request: dict[str, Any]) -> None:
        self._pending.append(request)
        if len(self._pending) >= BATCH_LIMIT:
            self.flush()

    def flush(self) -> None:
        """Send every pending request, resending whatever DynamoDB hands back."""
        while self._pending:
            batch, self._pending = self._pending[:BATCH_LIMIT], self._pending[BATCH_LIMIT:]
            self._send(batch)

    def _send(self, batch: list[dict[str, Any]]) -> None:
        requests = {self._table: batch}
        for attempt in range(self._max_attempts):
            response = self._client.batch_write_item(RequestItems=requests)
            self.requests_sent += 1
            requests = response.get("UnprocessedItems") or {}
            if not requests:
                return
            self.retries += 1
            delay = min(self._max_delay, self._base_delay * (2**attempt))
            self._sleep(random.uniform(delay / 2, delay))
        left = sum(len(v) for v in requests.values())
        raise UnprocessedItemsError(
            f"{left} write request(s) still unprocessed after {self._max_attempts} attempts"
        )

    def __enter__(self) -> BatchWriter:
        return self

    def __exit__(self, exc_type: object, *_: object) -> None:
        if exc_type is None:
            self.flush()
