"""``python -m ministack``, with a Lambda log capture that keeps every line.

ministack's warm Python worker writes the handler's log lines to stderr and
its result to stdout. The server reads stderr on a thread of its own and,
once the result is in, takes the lines that thread has queued until the
queue has been empty for 5 ms. When that thread is slow to run (a busy
server, a busy machine), the last lines of an invocation are still on their
way: they are logged with the worker's next invocation, or never. On AWS every
line an invocation writes reaches its own log, so a test that waits for a
function's last line would fail only because the machine was slow.

This module closes that gap without changing ministack's files: the worker
also writes an end-of-invocation mark, carrying the request id, to stderr once
the handler has returned, and the server takes lines until that mark. It
imports only the standard library and ministack, so a container image can run
it as a single file.
"""

from __future__ import annotations

import queue
import runpy
import sys
import time
from collections.abc import Callable
from typing import Any

#: Starts the line that ends one invocation's log; the request id follows.
END_MARK = "\x1eministack-invocation-end "

#: How long the server waits for the mark before it keeps what it has.
MARK_WAIT_S = 10.0

#: In the worker script: the end of one pass of the invocation loop.
_LOOP_END = "        _real_stdout.flush()\n\nrun()\n"
_MARKED_LOOP_END = (
    f'        sys.stderr.write({END_MARK!r} + _ms_ctx.get("request_id", "") + "\\n")\n'
    "        sys.stderr.flush()\n" + _LOOP_END
)


class UnsupportedMinistack(RuntimeError):
    """This ministack's worker script or Worker class is not the one this module knows."""


def patch(runtime: Any) -> None:
    """Make ``runtime`` (``ministack.core.lambda_runtime``) log invocations whole."""
    script = runtime._PYTHON_WORKER_SCRIPT
    if END_MARK in script:
        return
    if script.count(_LOOP_END) != 1:
        raise UnsupportedMinistack("the Python worker script's invocation loop has changed")
    runtime._PYTHON_WORKER_SCRIPT = script.replace(_LOOP_END, _MARKED_LOOP_END)
    worker = runtime.Worker
    invoke, drain = worker.invoke, worker._drain_stderr_bounded

    def invoke_noting_request(self: Any, event: Any, request_id: str, **kwargs: Any) -> Any:
        self._ms_request_id = request_id
        return invoke(self, event, request_id, **kwargs)

    def drain_to_mark(self: Any, *args: Any, **kwargs: Any) -> str:
        request_id = getattr(self, "_ms_request_id", None)
        if request_id is None or not str(self.config.get("Runtime", "")).startswith("python"):
            return str(drain(self, *args, **kwargs))
        reader = self._stderr_thread
        return lines_until_mark(
            self._stderr_queue,
            request_id,
            reader_done=lambda: reader is None or not reader.is_alive(),
        )

    worker.invoke = invoke_noting_request
    worker._drain_stderr_bounded = drain_to_mark


def lines_until_mark(
    lines: queue.Queue[str],
    request_id: str,
    wait_s: float = MARK_WAIT_S,
    reader_done: Callable[[], bool] = lambda: False,
) -> str:
    """The queued lines up to ``request_id``'s end mark, joined; marks are dropped.

    A mark for another request (left over from an invocation whose mark came
    after ``wait_s``) is skipped. A worker that died writes no mark: once
    ``reader_done`` (its stderr is at its end) and nothing is queued, or after
    ``wait_s``, what arrived is returned, as ministack would.
    """
    kept: list[str] = []
    deadline = time.monotonic() + wait_s
    while True:
        try:
            line = lines.get(timeout=0.02)
        except queue.Empty:
            if (reader_done() and lines.empty()) or time.monotonic() >= deadline:
                return "\n".join(kept)
            continue
        if not line.startswith(END_MARK):
            kept.append(line)
        elif line[len(END_MARK) :] == request_id:
            return "\n".join(kept)


def main() -> None:
    from ministack.core import lambda_runtime

    try:
        patch(lambda_runtime)
    except UnsupportedMinistack as exc:  # another version, e.g. a user's image
        print(f"ministack runs as shipped (its log lines may stray): {exc}", file=sys.stderr)
    runpy.run_module("ministack", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
