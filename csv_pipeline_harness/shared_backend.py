"""One container backend per pytest run, shared by its xdist workers.

A container takes seconds and hundreds of megabytes to start; one per worker
would put four emulators on a 2-core machine under ``-n auto``. The first
worker that needs the backend starts it, under a file lock in the run's own
directory, and records its URL there; the others read the record and use
the same emulator. Each worker deploys its own suffixed stack on it and
removes that stack at its end (see ``stack_config`` and ``deployed_stack``).

The container belongs to the run's controller (the workers' parent): it
carries the controller's pid as its owner, so a killed run's container is a
leftover the next start removes (:func:`~.provisioning.backends.container.remove_leftovers`),
and the controller removes it at the end of the session (:func:`finish`).
The embedded emulator is not shared: it starts in under a second, and each
worker keeps its own.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .provisioning.backends import Backend, Endpoint
from .provisioning.processes import run_directory

_STATE = "backend.json"


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / "backend.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


class SharedContainerBackend(Backend):
    """A container backend started once per run; ``stop`` leaves it to the controller."""

    #: Stacks deployed here are suffixed and removed by each worker (see the plugin).
    shared = True

    def __init__(self, inner: Any, controller_pid: int) -> None:
        super().__init__(inner.region)
        self.inner = inner
        self.name = inner.name
        self.directory = run_directory(controller_pid)
        self.controller_pid = controller_pid

    def start(self) -> Endpoint:
        if self._endpoint is not None:
            return self._endpoint
        with _locked(self.directory):
            state_file = self.directory / _STATE
            if state_file.exists():
                state = json.loads(state_file.read_text())
                self._endpoint = Endpoint(url=state["url"], region=state["region"])
                return self._endpoint
            self.inner.owner_pid = self.controller_pid
            endpoint: Endpoint = self.inner.start()
            instance = self.inner.detach()
            state_file.write_text(
                json.dumps({"url": endpoint.url, "region": endpoint.region, "instance": instance})
            )
        self._endpoint = endpoint
        return endpoint

    def stop(self) -> None:
        """Nothing: the other workers may still use it; the controller removes it."""
        self._endpoint = None


def finish(controller_pid: int) -> None:
    """In the controller at the end of the run: remove the run's shared container, if any."""
    directory = run_directory(controller_pid)
    state_file = directory / _STATE
    if not state_file.exists():
        return
    state = json.loads(state_file.read_text())
    from .provisioning.backends.container import docker_engine, remove_instance

    engine = docker_engine()
    if engine.available:
        remove_instance(engine.client, str(state["instance"]))
    shutil.rmtree(directory, ignore_errors=True)


def controller_pid(config: Any) -> int | None:
    """The run's controller under pytest-xdist (this worker's parent), else None."""
    if getattr(config, "workerinput", None) is None:
        return None
    return os.getppid()
