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

Started by :class:`~.ministack.MinistackBackend`, it also takes, through
environment variables naming inherited file descriptors:

* ``CSV_PIPELINE_LISTEN_FD``: a socket the backend bound (port chosen by the
  kernel, held from that moment on), served instead of binding a port of its
  own, so no other process can ever be given the same port;
* ``CSV_PIPELINE_PARENT_FD``: the read end of a pipe whose write end only the
  starting process holds. It reads end-of-file when that process is gone, by
  whatever means (SIGKILL included); the server then removes its working
  directory (``CSV_PIPELINE_WORKDIR``) and kills its process group, itself
  and its Lambda workers;
* ``CSV_PIPELINE_SERVER_TOKEN``: answered at :data:`IDENTITY_PATH`, so the
  backend's health check proves it reached its own emulator.
"""

from __future__ import annotations

import os
import queue
import runpy
import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

LISTEN_FD_ENV = "CSV_PIPELINE_LISTEN_FD"
PARENT_FD_ENV = "CSV_PIPELINE_PARENT_FD"
WORKDIR_ENV = "CSV_PIPELINE_WORKDIR"
TOKEN_ENV = "CSV_PIPELINE_SERVER_TOKEN"
#: Answers the server's token: the backend's proof that the port is its own emulator's.
IDENTITY_PATH = "/_csv_pipeline/identity"

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


def watch_parent(fd: int, workdir: str | None) -> threading.Thread:
    """End this server's process group once the pipe ``fd`` reads end-of-file."""

    def watch() -> None:
        try:
            while os.read(fd, 1024):
                pass
        except OSError:
            pass
        if workdir:
            shutil.rmtree(workdir, ignore_errors=True)
        os.killpg(os.getpgid(0), signal.SIGKILL)

    thread = threading.Thread(target=watch, name="parent-watchdog", daemon=True)
    thread.start()
    return thread


def serve_inherited_socket(fd: int) -> None:
    """Make hypercorn serve the socket ``fd`` whatever address ministack asks it to bind."""
    from hypercorn import config

    class InheritedSocketConfig(config.Config):
        @property
        def bind(self) -> list[str]:
            return [f"fd://{fd}"]

        @bind.setter
        def bind(self, value: list[str] | str) -> None:
            pass

    config.Config = InheritedSocketConfig  # type: ignore[misc]


def answer_identity(app_module: Any, token: str) -> None:
    """Serve ``token`` at :data:`IDENTITY_PATH` in front of ministack's ASGI app."""
    inner = app_module.app
    body = token.encode()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope.get("type") == "http" and scope.get("path") == IDENTITY_PATH:
            headers = [(b"content-type", b"text/plain"), (b"content-length", b"%d" % len(body))]
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await send({"type": "http.response.body", "body": body})
            return
        await inner(scope, receive, send)

    app_module.app = app


def main() -> None:
    # Read and dropped: the Lambda workers inherit the server's environment.
    parent_fd, workdir, listen_fd, token = (
        os.environ.pop(name, None)
        for name in (PARENT_FD_ENV, WORKDIR_ENV, LISTEN_FD_ENV, TOKEN_ENV)
    )
    if parent_fd:
        watch_parent(int(parent_fd), workdir)
    if listen_fd:
        serve_inherited_socket(int(listen_fd))
    from ministack.core import lambda_runtime

    try:
        patch(lambda_runtime)
    except UnsupportedMinistack as exc:  # another version, e.g. a user's image
        print(f"ministack runs as shipped (its log lines may stray): {exc}", file=sys.stderr)
    if token:
        import ministack.app

        answer_identity(ministack.app, token)
    runpy.run_module("ministack", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
