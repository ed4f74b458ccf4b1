"""An invocation's deadline: when it stops reading, and that no write outlives it."""

from __future__ import annotations

import time

import pytest

from csv_pipeline import aws
from csv_pipeline.settings import Deadline


class Context:
    def __init__(self, remaining_ms: int) -> None:
        self.remaining_ms = remaining_ms

    def get_remaining_time_in_millis(self) -> int:
        return self.remaining_ms


@pytest.mark.parametrize("timeout_s", [3, 10, 30, 300, 900])
def test_the_last_write_request_ends_before_the_invocation_does(timeout_s: int) -> None:
    now = 1000.0
    deadline = Deadline(Context(timeout_s * 1000), clock=lambda: now)
    end = now + timeout_s
    assert now < deadline.stop_at < deadline.give_up_at
    # A request may start until give_up_at and lasts at most request_seconds.
    assert deadline.give_up_at + deadline.request_seconds < end
    # Reading stops early enough to drain, checkpoint and invoke the next one.
    assert end - deadline.stop_at >= min(2.0, timeout_s / 2)
    assert deadline.end is not None and abs(deadline.end - (time.time() + timeout_s)) < 5


def test_the_write_client_ends_each_request_within_the_deadlines_request_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    writer = aws.row_writer(1.5, 6)
    config = writer._client.meta.config
    assert config.connect_timeout + config.read_timeout <= 1.5
    assert config.retries["total_max_attempts"] == 1  # BatchWriter retries, checking the lease


def test_without_a_context_there_is_no_deadline() -> None:
    deadline = Deadline(None)
    assert deadline.end is None and not deadline.passed()
