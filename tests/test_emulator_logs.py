"""The embedded emulator logs every line of an invocation with that invocation.

ministack collects a worker's log lines until its stderr has been quiet for
5 ms; a line the server's reader thread had not queued by then went to the
worker's next invocation, or nowhere. The embedded backend runs ministack
through :mod:`csv_pipeline_harness.provisioning.backends.ministack_server`, which takes lines up
to an end-of-invocation mark instead. Here the reader thread is made slow
on purpose, so the verdict does not depend on the machine's speed.
"""

from __future__ import annotations

import io
import queue
import threading
import time
import uuid
import zipfile
from collections.abc import Iterator
from typing import Any

import pytest

from csv_pipeline_harness.provisioning.backends import ministack_server
from csv_pipeline_harness.provisioning.backends.ministack_server import END_MARK, lines_until_mark

lambda_runtime = pytest.importorskip(
    "ministack.core.lambda_runtime", reason="needs ministack: pip install '.[emulator]'"
)

HANDLER = b"""
import logging, time
logging.basicConfig(level=logging.INFO, format="%(message)s", force=True)

def handler(event, context):
    logging.info("first of %s", event["n"])
    time.sleep(0.05)
    logging.info("last of %s", event["n"])
    return event["n"]
"""


def later(delay: float, lines: queue.Queue[str], *items: str) -> threading.Timer:
    timer = threading.Timer(delay, lambda: [lines.put(item) for item in items])
    timer.start()
    return timer


def test_lines_are_taken_up_to_the_invocations_mark() -> None:
    lines: queue.Queue[str] = queue.Queue()
    lines.put("first")
    later(0.3, lines, "last", END_MARK + "req-1", "next invocation's")
    assert lines_until_mark(lines, "req-1") == "first\nlast"
    assert lines.get_nowait() == "next invocation's"


def test_a_mark_left_by_an_earlier_invocation_is_skipped() -> None:
    lines: queue.Queue[str] = queue.Queue()
    for line in ("late line of req-0", END_MARK + "req-0", "first", END_MARK + "req-1"):
        lines.put(line)
    assert lines_until_mark(lines, "req-1") == "late line of req-0\nfirst"


def test_without_its_mark_the_lines_that_came_are_kept() -> None:
    lines: queue.Queue[str] = queue.Queue()
    lines.put("first")
    started = time.monotonic()
    assert lines_until_mark(lines, "req-1", wait_s=0.2) == "first"
    assert time.monotonic() - started >= 0.2


@pytest.fixture
def slow_reader_worker(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A real ministack worker whose stderr reader queues each line 0.3 s late."""

    def read_slowly(self: Any) -> None:
        for line in self._proc.stderr:
            time.sleep(0.3)
            self._stderr_queue.put(line.rstrip("\n"))

    monkeypatch.setattr(lambda_runtime.Worker, "_read_stderr", read_slowly)
    code = io.BytesIO()
    with zipfile.ZipFile(code, "w") as archive:
        archive.writestr("slow_log.py", HANDLER)
    config = {
        "FunctionName": "slow-log",
        "FunctionArn": "arn:aws:lambda:us-east-1:000000000000:function:slow-log",
        "Runtime": "python3.11",
        "Handler": "slow_log.handler",
    }
    worker = lambda_runtime.Worker("slow-log", {**config, "Timeout": 30}, code.getvalue())
    yield worker
    worker.kill()


def test_ministacks_own_collection_loses_lines_a_slow_reader_queues_late(
    slow_reader_worker: Any,
) -> None:
    """The emulator as shipped: why the embedded backend patches it."""
    response = slow_reader_worker.invoke({"n": 1}, str(uuid.uuid4()))
    assert response["status"] == "ok"
    assert "last of 1" not in response["log"]


def test_the_patched_emulator_keeps_each_invocations_lines_with_it(
    slow_reader_worker: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # patch() changes the module for good; monkeypatch puts the originals back.
    script = lambda_runtime._PYTHON_WORKER_SCRIPT
    monkeypatch.setattr(lambda_runtime, "_PYTHON_WORKER_SCRIPT", script)
    for name in ("invoke", "_drain_stderr_bounded"):
        monkeypatch.setattr(lambda_runtime.Worker, name, getattr(lambda_runtime.Worker, name))
    ministack_server.patch(lambda_runtime)
    for n in (1, 2):
        response = slow_reader_worker.invoke({"n": n}, str(uuid.uuid4()))
        assert response["status"] == "ok" and response["result"] == n
        assert response["log"].splitlines() == [f"first of {n}", f"last of {n}"]


def test_a_worker_that_died_is_not_waited_for() -> None:
    """No mark comes from a crashed worker: its lines are all in once its stderr ends."""
    lines: queue.Queue[str] = queue.Queue()
    lines.put("last words")
    started = time.monotonic()
    done = lambda: True  # noqa: E731
    assert lines_until_mark(lines, "req-1", wait_s=30, reader_done=done) == "last words"
    assert time.monotonic() - started < 15  # not the 30 s wait for a mark
