"""Nothing of ours outlives the pytest process that started it, however that process ends.

A session on the embedded emulator is started as a command of its own,
waits inside a test once its emulator runs, and is then ended from outside:
SIGTERM (what ``timeout``, CI runners and job cancellation send) or SIGKILL
(nothing of the process runs), to the session alone, with and without
pytest-xdist. Every process the session started carries the tag of
:mod:`processes`; within a few seconds none may be left, nor the emulator's
directory.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from processes import live_processes, spawned

pytestmark = pytest.mark.harness

WAITING_SESSION = """
import os, time
from pathlib import Path

def test_waits_inside_the_session(aws_backend, request):
    worker = getattr(request.config, "workerinput", {}).get("workerid", "main")
    out = Path(os.environ["READY_DIR"]) / worker
    out.write_text(f"{os.getpid()} {aws_backend._process.pid} {aws_backend._workdir}")
    time.sleep(300)
"""

#: Seconds everything may take to go once the session is ended.
GONE_WITHIN_S = 20.0


def inner_env() -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("CSV_PIPELINE_", "PYTEST_", "HYPOTHESIS_"))
    }
    env.pop("AWS_ENDPOINT_URL", None)
    return env


@pytest.mark.parametrize("workers", [0, 2], ids=["no-xdist", "xdist"])
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGKILL], ids=lambda s: s.name)
def test_an_ended_session_leaves_no_process_and_no_directory(
    pytester: pytest.Pytester, signum: signal.Signals, workers: int
) -> None:
    pytester.makepyfile(test_waiting=WAITING_SESSION.replace("def test_", "def test_a_", 1))
    if workers:
        pytester.makepyfile(test_waiting_too=WAITING_SESSION)
    ready = pytester.mkdir("ready")
    command = [
        sys.executable,
        "-m",
        "pytest",
        "-p",
        "no:cacheprovider",
        "-n",
        str(workers),
        "--csv-pipeline-backend=ministack",
    ]
    with spawned(
        command,
        env={**inner_env(), "READY_DIR": str(ready)},
        cwd=pytester.path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    ) as session:
        expected = max(workers, 1)
        deadline = time.monotonic() + 90
        while len(list(ready.iterdir())) < expected:
            assert session.process.poll() is None, session.read_until(None, timeout=10)
            assert time.monotonic() < deadline, "the emulators did not start"
            time.sleep(0.2)
        workdirs = [Path(p.read_text().split()[2]) for p in ready.iterdir()]
        assert all(w.is_dir() for w in workdirs)
        assert any("ministack_server" in p.command for p in live_processes(tag=session.tag))

        session.process.send_signal(signum)  # to pytest alone, not its group
        deadline = time.monotonic() + GONE_WITHIN_S
        while (left := live_processes(tag=session.tag)) or any(w.exists() for w in workdirs):
            if time.monotonic() > deadline:
                pytest.fail(
                    f"{GONE_WITHIN_S:.0f} s after {signum.name}: "
                    + "; ".join(map(str, left))
                    + f"; directories: {[str(w) for w in workdirs if w.exists()]}"
                )
            time.sleep(0.2)
        output = session.read_until(None, timeout=10)
        if signum == signal.SIGTERM and not workers:
            # As Ctrl-C: the session reports the interruption after its finalizers ran.
            assert "KeyboardInterrupt" in output or "SIGTERM received" in output, output
        assert session.stop() == []


def test_a_crashed_xdist_worker_takes_its_emulator_with_it(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_waiting=WAITING_SESSION.replace("def test_", "def test_a_", 1))
    pytester.makepyfile(test_waiting_too=WAITING_SESSION)
    ready = pytester.mkdir("ready")
    command = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-n", "2"]
    env = {**inner_env(), "READY_DIR": str(ready), "CSV_PIPELINE_BACKEND": "ministack"}
    with spawned(command, env=env, cwd=pytester.path, stdout=subprocess.PIPE) as session:
        deadline = time.monotonic() + 90
        while len(list(ready.iterdir())) < 2:
            assert time.monotonic() < deadline, "the emulators did not start"
            time.sleep(0.2)
        worker_pid, server_pid, workdir = (ready / "gw0").read_text().split()
        other_server = int((ready / "gw1").read_text().split()[1])
        os.kill(int(worker_pid), signal.SIGKILL)
        deadline = time.monotonic() + GONE_WITHIN_S
        while any(p.pid == int(server_pid) for p in live_processes(tag=session.tag)):
            assert time.monotonic() < deadline, f"gw0's emulator outlived gw0: {server_pid}"
            time.sleep(0.2)
        while Path(workdir).exists():
            assert time.monotonic() < deadline, f"gw0's emulator left {workdir}"
            time.sleep(0.2)
        # The other worker's emulator is its own, and still runs.
        assert any(p.pid == other_server for p in live_processes(tag=session.tag))
        session.process.send_signal(signal.SIGTERM)
        session.process.wait(timeout=GONE_WITHIN_S)
