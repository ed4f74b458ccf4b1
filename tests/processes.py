"""Commands a test starts, stopped with everything they started, on every path.

:func:`spawned` (a context manager around ``Popen``) and :func:`run` (like
``subprocess.run``) start a command in a session (process group) of its own,
with an environment variable whose value is unique to that start. Every
descendant inherits the variable, including the embedded emulator, which
runs in yet another session, and its Lambda workers. When the test leaves,
whether it passed, failed or timed out:

1. the command's group gets SIGTERM if the command is still running;
2. everything is given ``grace`` seconds to end by itself;
3. every process group seen holding a tagged process, and every tagged
   process, gets SIGKILL; the command is reaped and its pipes are closed.

:meth:`Spawned.stop` returns what was still alive after step 2: a test that
stopped its command itself asserts that this is empty. Tagged processes are
found through ``/proc``; without it only the command's own group is covered.
"""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: Environment variable carrying the tag of one start.
TAG_VARIABLE = "CSV_PIPELINE_TEST_PROCESS"
#: Seconds a command (and what it started) gets to end after SIGTERM.
GRACE = 15.0
PROC = Path("/proc")


@dataclass(frozen=True)
class LiveProcess:
    pid: int
    pgid: int
    command: str

    def __str__(self) -> str:
        return f"pid {self.pid} (group {self.pgid}): {self.command}"


def _stat(pid_dir: Path) -> tuple[str, int] | None:
    """(state, process group) from /proc/PID/stat, None when the process is gone."""
    try:
        stat = (pid_dir / "stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    return fields[0], int(fields[2])


def _command(pid_dir: Path) -> str:
    try:
        raw = (pid_dir / "cmdline").read_bytes()
    except OSError:
        return "?"
    return raw.replace(b"\0", b" ").decode(errors="replace").strip() or "?"


def live_processes(*, tag: str | None = None, groups: set[int] | None = None) -> list[LiveProcess]:
    """Processes (zombies excluded) that carry ``tag`` or belong to one of ``groups``."""
    if not PROC.is_dir():
        return []
    marker = f"{TAG_VARIABLE}={tag}".encode()
    found = []
    for pid_dir in PROC.iterdir():
        if not pid_dir.name.isdigit() or int(pid_dir.name) == os.getpid():
            continue
        stat = _stat(pid_dir)
        if stat is None or stat[0] in ("Z", "X"):  # gone, or a zombie awaiting its reaper
            continue
        pgid = stat[1]
        member = groups is not None and pgid in groups
        if not member and tag is not None:
            try:
                member = marker in (pid_dir / "environ").read_bytes().split(b"\0")
            except OSError:  # gone meanwhile, or someone else's process
                member = False
        if member:
            found.append(LiveProcess(int(pid_dir.name), pgid, _command(pid_dir)))
    return found


@dataclass
class Spawned:
    """A started command; :meth:`stop` ends it and everything it started."""

    process: subprocess.Popen[str]
    tag: str
    #: Process groups seen holding the command or one of its descendants.
    groups: set[int] = field(default_factory=set)
    stopped: bool = False
    #: Output lines read so far by :meth:`read_until`.
    lines: list[str] = field(default_factory=list)
    _queue: queue.Queue[str | None] = field(default_factory=queue.Queue)
    _reader: threading.Thread | None = None

    def read_until(self, text: str | None, timeout: float) -> str:
        """The output so far, once a line contains ``text`` (``None``: once it ends).

        Needs ``stdout=subprocess.PIPE``. Fails the test, showing the output so
        far, when the output ends first or ``timeout`` seconds pass.
        """
        if self._reader is None:
            stream = self.process.stdout
            assert stream is not None, "read_until needs stdout=subprocess.PIPE"
            self._reader = threading.Thread(target=self._read, args=(stream,), daemon=True)
            self._reader.start()
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(
                    f"{'end of output' if text is None else repr(text)} not seen within "
                    f"{timeout:.0f} s; output so far:\n{''.join(self.lines)}"
                ) from None
            if line is None:
                self._queue.put(None)  # the end stays the end for later calls
                if text is None:
                    return "".join(self.lines)
                raise AssertionError(
                    f"output ended (exit status {self.process.poll()}) before {text!r}:\n"
                    + "".join(self.lines)
                )
            self.lines.append(line)
            if text is not None and text in line:
                return "".join(self.lines)

    def _read(self, stream: Any) -> None:
        with contextlib.suppress(ValueError, OSError):  # closed by stop()
            for line in stream:
                self._queue.put(line)
        self._queue.put(None)

    def descendants(self) -> list[LiveProcess]:
        """The live processes of this start (the command included); records their groups."""
        found = live_processes(tag=self.tag, groups=self.groups)
        own = {os.getpgrp()}
        self.groups.update(p.pgid for p in found if p.pgid not in own)
        return found

    def stop(self, grace: float = GRACE) -> list[LiveProcess]:
        """End everything; return what was still alive ``grace`` seconds after asking."""
        if self.stopped:
            return []
        self.stopped = True
        self.descendants()
        if self.process.poll() is None:
            _signal_group(self.process.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        # The command itself counts until it exits (it is a zombie, not live, until reaped).
        while (survivors := self.descendants()) and time.monotonic() < deadline:
            time.sleep(0.1)
        if survivors:
            for pgid in self.groups:
                _signal_group(pgid, signal.SIGKILL)
            for leftover in live_processes(tag=self.tag):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(leftover.pid, signal.SIGKILL)
        self.process.wait()
        if self._reader is not None:
            self._reader.join(timeout=5)
        for stream in (self.process.stdin, self.process.stdout, self.process.stderr):
            if stream is not None:
                stream.close()
        # Killed processes vanish once reaped (by their parent or by init).
        deadline = time.monotonic() + 5
        while live_processes(tag=self.tag, groups=self.groups) and time.monotonic() < deadline:
            time.sleep(0.05)
        return survivors


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    if pgid == os.getpgrp():
        return  # never the test run's own group
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


@contextlib.contextmanager
def spawned(
    command: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    grace: float = GRACE,
    **popen: Any,
) -> Iterator[Spawned]:
    """``Popen(command)`` in a session of its own; everything it started is ended on exit."""
    tag = uuid.uuid4().hex
    environment = {**(os.environ if env is None else env), TAG_VARIABLE: tag}
    process: subprocess.Popen[str] = subprocess.Popen(
        list(command), env=environment, start_new_session=True, text=True, **popen
    )
    child = Spawned(process, tag, {process.pid})
    try:
        yield child
    finally:
        child.stop(grace)


def run(
    command: Sequence[str],
    *,
    timeout: float,
    env: Mapping[str, str] | None = None,
    input: str | None = None,
    check: bool = False,
    cwd: str | Path | None = None,
) -> subprocess.CompletedProcess[str]:
    """Like ``subprocess.run(..., capture_output=True, text=True)``, but nothing outlives it.

    Output goes through files, not pipes, so a process left behind holding
    them cannot hide the command's exit: a command that leaves processes
    behind fails the test, one that outlives ``timeout`` raises
    ``subprocess.TimeoutExpired``; either way everything it started is ended.
    """
    with contextlib.ExitStack() as files:
        stdin, stdout, stderr = (
            files.enter_context(tempfile.TemporaryFile("w+", encoding="utf-8")) for _ in range(3)
        )
        if input is not None:
            stdin.write(input)
            stdin.seek(0)
        with spawned(command, env=env, cwd=cwd, stdin=stdin, stdout=stdout, stderr=stderr) as child:
            child.process.wait(timeout=timeout)  # TimeoutExpired: stopped on leaving
            left = child.stop()
            assert not left, f"{command} left processes behind:\n" + "\n".join(map(str, left))
        stdout.seek(0)
        stderr.seek(0)
        done = subprocess.CompletedProcess(
            list(command), child.process.returncode, stdout.read(), stderr.read()
        )
    if check:
        done.check_returncode()
    return done
