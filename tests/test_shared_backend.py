"""A container backend once per run, and leftovers of killed runs found by their labels.

No Docker here: the container backend is a stand-in that counts its starts,
and the engine a stand-in holding labelled containers. The real containers
are exercised by the container stage (``.ci/container-stage.sh``).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from csv_pipeline_harness import shared_backend
from csv_pipeline_harness.provisioning.backends import Endpoint
from csv_pipeline_harness.provisioning.backends import container as container_module
from csv_pipeline_harness.provisioning.backends.container import (
    HARNESS_LABEL,
    OWNER_HOST_LABEL,
    OWNER_PID_LABEL,
    OWNER_STARTED_LABEL,
    owner_gone,
    owner_labels,
    remove_leftovers,
)
from csv_pipeline_harness.provisioning.processes import process_started, run_directory


def dead_pid() -> int:
    done = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        check=True,
        capture_output=True,
        text=True,
    )
    return int(done.stdout)


def test_a_container_whose_owner_ended_is_a_leftover() -> None:
    assert not owner_gone(owner_labels(os.getpid()))
    assert owner_gone(owner_labels(dead_pid()))


def test_a_pid_used_again_by_another_process_does_not_own_the_container() -> None:
    labels = {**owner_labels(os.getpid()), OWNER_STARTED_LABEL: "1"}
    assert owner_gone(labels)


def test_another_hosts_containers_are_never_leftovers_here() -> None:
    labels = {**owner_labels(dead_pid()), OWNER_HOST_LABEL: f"not-{socket.gethostname()}"}
    assert not owner_gone(labels)


@dataclass
class FakeContainer:
    name: str
    labels: dict[str, str]
    removed: list[str]
    short_id: str = "abc"

    def remove(self, force: bool, v: bool) -> None:
        self.removed.append(self.name)


@dataclass
class FakeClient:
    held: list[FakeContainer]

    @property
    def containers(self) -> FakeClient:
        return self

    def list(self, all: bool, filters: dict[str, str]) -> list[FakeContainer]:
        key, _, value = filters["label"].partition("=")
        return [c for c in self.held if key in c.labels and (not value or c.labels[key] == value)]


def test_the_next_start_removes_only_the_leftovers_of_ended_runs() -> None:
    removed: list[str] = []
    ended = {HARNESS_LABEL: "a", **owner_labels(dead_pid())}
    running = {HARNESS_LABEL: "b", **owner_labels(os.getpid())}
    unlabelled_owner = {HARNESS_LABEL: "c"}
    client = FakeClient(
        [
            FakeContainer("ended", ended, removed),
            FakeContainer("running", running, removed),
            FakeContainer("unknown", unlabelled_owner, removed),
            FakeContainer("not-ours", {OWNER_PID_LABEL: str(dead_pid())}, removed),
        ]
    )
    assert remove_leftovers(client) == ["ended"]
    assert removed == ["ended"]


@dataclass
class CountingBackend:
    """Stands in for a container backend: counts starts, records detaching."""

    name: str = "ministack-container"
    region: str = "us-east-1"
    image: str = "an/image:1"
    owner_pid: int = 0
    starts: list[int] = field(default_factory=list)
    detached: bool = False

    def start(self) -> Endpoint:
        self.starts.append(self.owner_pid)
        return Endpoint(url="http://127.0.0.1:1234", region=self.region)

    def detach(self) -> str:
        self.detached = True
        return "instance-1"


@pytest.fixture
def controller(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> int:
    """This process stands in for the run's controller; its run directory goes afterwards."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    return os.getpid()


def test_the_first_worker_starts_the_container_and_the_others_use_it(controller: int) -> None:
    workers = [CountingBackend() for _ in range(4)]
    shared = [shared_backend.SharedContainerBackend(w, controller) for w in workers]
    endpoints: list[Endpoint] = []
    threads = [threading.Thread(target=lambda s=s: endpoints.append(s.start())) for s in shared]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(len(w.starts) for w in workers) == 1
    (starter,) = [w for w in workers if w.starts]
    assert starter.starts == [controller] and starter.detached
    assert {e.url for e in endpoints} == {"http://127.0.0.1:1234"}
    assert all(s.shared for s in shared)
    for s in shared:
        s.stop()  # leaves the container to the controller
    assert (run_directory(controller) / "backend.json").exists()


def test_the_controller_removes_the_shared_container_at_the_end(
    controller: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    shared_backend.SharedContainerBackend(CountingBackend(), controller).start()
    removed: list[str] = []

    @dataclass
    class Engine:
        available: bool = True
        client: Any = None

    monkeypatch.setattr(container_module, "docker_engine", lambda: Engine())
    monkeypatch.setattr(
        container_module, "remove_instance", lambda client, instance: removed.append(instance)
    )
    shared_backend.finish(controller)
    assert removed == ["instance-1"]
    assert not run_directory(controller).exists()
    shared_backend.finish(controller)  # nothing left to do
    assert removed == ["instance-1"]


def test_a_run_directory_names_one_process_for_as_long_as_the_host_runs() -> None:
    assert str(process_started(os.getpid())) in run_directory(os.getpid()).name
    assert process_started(dead_pid()) is None
