"""One container lifecycle for every emulator that runs in Docker.

A container backend is configuration (:class:`ContainerSpec`: image, port,
health path, environment, mounts, exit-code hints) plus this lifecycle:

* ``start``: probe the Docker engine, make sure the image is there (pulling
  it when a registry answers), start the container through testcontainers,
  wait on the emulator's HTTP health endpoint (not a sleep, and not a log
  line: an exited container fails at once with its exit code explained),
  then return the endpoint URL of the mapped port;
* on failure: the container's last log lines go into the error, the
  container is removed, and the error names the fix;
* ``stop``: remove the container and anything it started that carries our
  label (LocalStack's Lambda containers). Idempotent.

Ryuk (testcontainers' reaper) needs an image of its own; where that image is
absent (air-gapped CI) it is switched off and cleanup is ours alone: every
started backend is stopped by the caller (pytest session finalizer, the CLI's
``with``) and, as a last resort, at interpreter exit. Every container we
create carries :data:`HARNESS_LABEL`, so ``docker ps -a --filter
label=csv-pipeline.harness`` finds leftovers of a killed run, and the owner
labels (:data:`OWNER_PID_LABEL`, :data:`OWNER_STARTED_LABEL`,
:data:`OWNER_HOST_LABEL`), which tell a leftover (its owner process is gone)
from a container another run is still using. Every ``start`` first removes
the leftovers of this host (:func:`remove_leftovers`), so a killed run's
containers go at the next start.
"""

from __future__ import annotations

import abc
import atexit
import contextlib
import functools
import json
import logging
import os
import socket
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import docker
import docker.errors
from testcontainers.core.config import testcontainers_config
from testcontainers.core.container import DockerContainer
from testcontainers.core.docker_client import get_docker_host
from testcontainers.core.exceptions import ContainerStartException
from testcontainers.core.waiting_utils import WaitStrategy, WaitStrategyTarget

from ..processes import process_started
from .base import DEFAULT_REGION, Backend, BackendUnavailable, Endpoint

log = logging.getLogger(__name__)

#: Label on every container this harness creates; its value identifies the
#: backend instance so ``stop`` removes exactly its own containers.
HARNESS_LABEL = "csv-pipeline.harness"
#: Label holding the process id that started the container: a container whose
#: process is gone was leaked (killed run), one whose process lives is in use.
OWNER_PID_LABEL = "csv-pipeline.harness.pid"
#: The owner's start time (clock ticks since boot, /proc/PID/stat): a pid used
#: again by another process later does not make a leftover look owned.
OWNER_STARTED_LABEL = "csv-pipeline.harness.started"
#: The owner's host: pids mean something only there.
OWNER_HOST_LABEL = "csv-pipeline.harness.host"

#: The engine's socket when neither DOCKER_HOST nor a docker context says otherwise.
DEFAULT_SOCKET = "/var/run/docker.sock"

#: Seconds the engine probe may take; it runs for every ``auto`` selection,
#: so a missing or wedged engine must cost almost nothing.
PROBE_TIMEOUT = 3.0

#: Seconds an image check against a registry may take before it counts as unreachable.
REGISTRY_TIMEOUT = 10.0


class ContainerExited(RuntimeError):
    """The container stopped before its emulator became healthy."""

    def __init__(self, exit_code: int) -> None:
        super().__init__(f"container exited with code {exit_code}")
        self.exit_code = exit_code


@dataclass(frozen=True)
class ContainerSpec:
    """Everything that differs between emulator containers; no behaviour."""

    image: str
    #: The emulator's port inside the container (mapped to a free host port).
    port: int
    #: Path polled until it answers 200 (and ``ready`` accepts the body).
    health_path: str
    env: Mapping[str, str] = field(default_factory=dict)
    #: ``(host path, container path, mode)`` bind mounts.
    volumes: tuple[tuple[str, str, str], ...] = ()
    #: The command to run instead of the image's own (empty: the image's).
    command: tuple[str, ...] = ()
    labels: Mapping[str, str] = field(default_factory=dict)
    #: Exit code -> what the user should do about it.
    exit_hints: Mapping[int, str] = field(default_factory=dict)
    #: Optional check of the health response body (e.g. services loaded).
    ready: Callable[[bytes], bool] | None = None


# -- the Docker engine ---------------------------------------------------------


@dataclass(frozen=True)
class DockerEngine:
    """Result of probing for a Docker engine; ``client`` is set when it answered."""

    host: str
    client: Any = None
    error: str | None = None

    @property
    def available(self) -> bool:
        return self.client is not None


@functools.lru_cache(maxsize=1)
def docker_engine() -> DockerEngine:
    """Find a Docker engine the way testcontainers will, answering within a few seconds.

    With no DOCKER_HOST, no docker context and no socket file this returns at
    once without touching the network, so the default (embedded) run on a
    machine without Docker does not slow down. Cached per process.
    """
    host = get_docker_host()
    if host is None:
        if not os.path.exists(DEFAULT_SOCKET):
            return DockerEngine(
                host=f"unix://{DEFAULT_SOCKET}",
                error=f"no Docker engine ({DEFAULT_SOCKET} is missing and DOCKER_HOST is unset)",
            )
        host = f"unix://{DEFAULT_SOCKET}"
    try:
        client = docker.from_env(
            timeout=int(PROBE_TIMEOUT),
            environment={**os.environ, "DOCKER_HOST": host},
            use_ssh_client=host.startswith("ssh://"),
        )
        client.ping()
    except Exception as exc:  # docker-py raises DockerException, requests errors or OSError
        return DockerEngine(host=host, error=f"no Docker engine answers at {host} ({_short(exc)})")
    client.api.timeout = 60  # the short timeout was for the probe only
    return DockerEngine(host=host, client=client)


def image_status(engine: DockerEngine, image: str) -> tuple[bool, str]:
    """Whether ``image`` can run: present locally, or a registry offers it."""
    try:
        engine.client.images.get(image)
        return True, "present locally"
    except docker.errors.ImageNotFound:
        pass
    except docker.errors.DockerException as exc:
        return False, f"cannot inspect {image}: {_short(exc)}"
    try:
        with _client_timeout(engine.client, REGISTRY_TIMEOUT):
            engine.client.images.get_registry_data(image)
        return True, "pullable from its registry"
    except Exception as exc:
        return False, f"not present locally and not pullable ({_short(exc)})"


@contextlib.contextmanager
def _client_timeout(client: Any, seconds: float) -> Iterator[None]:
    """Temporarily change a docker-py client's socket timeout."""
    saved = client.api.timeout
    client.api.timeout = seconds
    try:
        yield
    finally:
        client.api.timeout = saved


def docker_socket_for_mounts() -> str:
    """The engine's socket as the engine sees it, for containers that drive Docker themselves.

    TESTCONTAINERS_DOCKER_SOCKET_OVERRIDE wins (Docker Desktop, rootless
    engines), then a ``unix://`` DOCKER_HOST, then the default path.
    """
    override = os.environ.get("TESTCONTAINERS_DOCKER_SOCKET_OVERRIDE", "")
    if override:
        return override
    host = os.environ.get("DOCKER_HOST", "")
    if host.startswith("unix://"):
        return host[len("unix://") :]
    return DEFAULT_SOCKET


def _short(exc: BaseException, limit: int = 300) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _use_ryuk_only_if_present(engine: DockerEngine) -> None:
    """Switch Ryuk off when its image is absent: pulling it would fail or hang offline."""
    if testcontainers_config.ryuk_disabled:
        return
    try:
        engine.client.images.get(testcontainers_config.ryuk_image)
    except docker.errors.DockerException:
        log.info(
            "Ryuk image %s absent; the harness removes its containers itself",
            testcontainers_config.ryuk_image,
        )
        testcontainers_config.ryuk_disabled = True


# -- readiness -----------------------------------------------------------------


class EmulatorReady(WaitStrategy):
    """testcontainers wait strategy: HTTP health answers 200, or the container exited.

    testcontainers' own HTTP strategy keeps polling a container that has
    already exited until its timeout; this one raises :class:`ContainerExited`
    at the next poll so an exit code (LocalStack's 55: auth token required)
    reaches the user in well under a second.
    """

    def __init__(self, port: int, path: str, ready: Callable[[bytes], bool] | None = None) -> None:
        super().__init__()
        self.port = port
        self.path = path
        self.ready = ready
        self.with_poll_interval(0.2)

    def url(self, container: WaitStrategyTarget) -> str:
        host = container.get_container_host_ip()
        return f"http://{host}:{container.get_exposed_port(self.port)}{self.path}"

    def wait_until_ready(self, container: WaitStrategyTarget) -> None:
        deadline = time.monotonic() + self._startup_timeout
        url: str | None = None
        last = "no answer yet"
        while True:
            wrapped = container.get_wrapped_container()
            wrapped.reload()
            if wrapped.status in ("exited", "dead"):
                raise ContainerExited(int(wrapped.attrs.get("State", {}).get("ExitCode", -1)))
            if wrapped.status == "running":
                try:
                    url = url or self.url(container)
                    last = self._probe(url)
                    if not last:
                        return
                except (urllib.error.URLError, OSError, ValueError) as exc:
                    last = _short(exc)
            if time.monotonic() > deadline:
                where = url or "the health endpoint"
                raise TimeoutError(f"{where} not ready after {self._startup_timeout:.0f}s ({last})")
            time.sleep(self._poll_interval)

    def _probe(self, url: str) -> str:
        """Empty string when ready, else why not."""
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                body = response.read()
        except urllib.error.HTTPError as exc:
            return f"HTTP {exc.code}"
        if self.ready is not None and not self.ready(body):
            return f"not ready yet: {body[:200]!r}"
        return ""


# -- owners and leftovers -----------------------------------------------------


def owner_labels(pid: int) -> dict[str, str]:
    """The labels naming ``pid`` (this host's process) as a container's owner."""
    return {
        OWNER_PID_LABEL: str(pid),
        OWNER_STARTED_LABEL: process_started(pid) or "",
        OWNER_HOST_LABEL: socket.gethostname(),
    }


def owner_gone(labels: Mapping[str, str]) -> bool:
    """Whether a container's owner process has ended (on this host; elsewhere: unknown)."""
    if labels.get(OWNER_HOST_LABEL) != socket.gethostname():
        return False
    try:
        pid = int(labels.get(OWNER_PID_LABEL, ""))
    except ValueError:
        return False
    started = process_started(pid)
    if started is None:
        return True
    return bool(labels.get(OWNER_STARTED_LABEL)) and labels[OWNER_STARTED_LABEL] != started


def _labelled(client: Any, selector: str) -> list[Any]:
    """Containers, running or not, labelled ``selector`` (``key`` or ``key=value``)."""
    try:
        return list(client.containers.list(all=True, filters={"label": selector}))
    except docker.errors.DockerException as exc:
        log.warning("could not list containers labelled %s: %s", selector, exc)
        return []


def _remove(container: Any) -> bool:
    """Remove ``container`` with its volumes; whether it is gone now."""
    try:
        container.remove(force=True, v=True)
    except docker.errors.NotFound:
        return True  # its creator removed it meanwhile
    except docker.errors.DockerException as exc:
        log.warning("could not remove container %s: %s", container.short_id, exc)
        return False
    return True


def remove_leftovers(client: Any) -> list[str]:
    """Remove this host's harness containers whose owner is gone; their names."""
    removed = []
    for container in _labelled(client, HARNESS_LABEL):
        if owner_gone(container.labels or {}) and _remove(container):
            log.warning("removed container %s left by a run that ended", container.name)
            removed.append(str(container.name))
    return removed


def remove_instance(client: Any, instance_id: str) -> None:
    """Remove every container labelled with ``instance_id`` (an emulator and what it started)."""
    for container in _labelled(client, f"{HARNESS_LABEL}={instance_id}"):
        _remove(container)


# -- the lifecycle -------------------------------------------------------------

#: Started backends, stopped at interpreter exit if nobody stopped them before.
_LIVE: set[ContainerBackend] = set()


@atexit.register
def _stop_leftovers() -> None:
    for backend in list(_LIVE):
        backend.stop()


class ContainerBackend(Backend):
    """An emulator in a Docker container, started through testcontainers.

    Subclasses supply configuration only: :meth:`spec` and, when a
    testcontainers module exists for the emulator, :meth:`new_container`.
    """

    #: Environment variable that overrides the default image.
    image_env: str = ""
    #: What to do when the image is neither present nor pullable.
    image_fix: str = ""

    def __init__(
        self,
        image: str | None = None,
        region: str = DEFAULT_REGION,
        port: int | None = None,
        startup_timeout: float = 120.0,
    ) -> None:
        super().__init__(region)
        #: Host port to publish on (``up --port``); None lets Docker pick a free one.
        self.port = port
        self.image = image or os.environ.get(self.image_env, "") or self.default_image()
        self.startup_timeout = startup_timeout
        #: Value of :data:`HARNESS_LABEL` on this backend's containers.
        self.instance_id = uuid.uuid4().hex[:12]
        #: The process whose end makes this backend's containers leftovers
        #: (this one; under pytest-xdist, the run's controller for a shared one).
        self.owner_pid = os.getpid()
        self.startup_seconds: float | None = None
        self._container: DockerContainer | None = None

    @classmethod
    @abc.abstractmethod
    def default_image(cls) -> str:
        """The image used when neither the option nor :attr:`image_env` names one."""

    @abc.abstractmethod
    def spec(self) -> ContainerSpec:
        """The container's configuration for this backend instance."""

    def new_container(
        self, spec: ContainerSpec, docker_client_kw: dict[str, Any] | None, labels: dict[str, str]
    ) -> DockerContainer:
        """The container object before configuration; overridden where testcontainers has a module.

        ``labels`` go to Docker's create call (testcontainers adds its own).
        """
        return DockerContainer(spec.image, docker_client_kw=docker_client_kw, labels=labels)

    def build_container(self, docker_client_kw: dict[str, Any] | None = None) -> DockerContainer:
        """The fully configured, not yet started container.

        ``docker_client_kw`` is passed to testcontainers' Docker client
        (tests pin an API version there so no engine is contacted).
        """
        spec = self.spec()
        labels = {
            HARNESS_LABEL: self.instance_id,
            **owner_labels(self.owner_pid),
            **spec.labels,
        }
        container = self.new_container(spec, docker_client_kw, labels)
        if self.port is None:
            container.with_exposed_ports(spec.port)
        else:
            container.with_bind_ports(spec.port, self.port)
        container.with_envs(**spec.env)
        for host_path, container_path, mode in spec.volumes:
            container.with_volume_mapping(host_path, container_path, mode)
        if spec.command:
            container.with_command(list(spec.command))
        return container.waiting_for(
            EmulatorReady(spec.port, spec.health_path, spec.ready).with_startup_timeout(
                int(self.startup_timeout)
            )
        )

    def check(self) -> DockerEngine:
        """Raise BackendUnavailable (naming the fix) unless Docker answers and the image can run."""
        engine = docker_engine()
        if not engine.available:
            raise BackendUnavailable(
                f"the {self.name} backend needs Docker: {engine.error}. Start Docker "
                "(or set DOCKER_HOST), or use the embedded emulator, which needs no Docker: "
                "--csv-pipeline-backend=ministack (CLI: --backend ministack)"
            )
        ok, why = image_status(engine, self.image)
        if not ok:
            raise BackendUnavailable(
                f"the {self.name} image {self.image} is {why}. {self.image_fix}"
            )
        return engine

    def start(self) -> Endpoint:
        if self._endpoint is not None:
            return self._endpoint
        engine = self.check()
        remove_leftovers(engine.client)
        _use_ryuk_only_if_present(engine)
        spec = self.spec()
        container = self.build_container()
        self._container = container
        _LIVE.add(self)
        started = time.monotonic()
        try:
            # The generic start: LocalStackContainer.start would add a wait
            # for the "Ready." log line, which cannot notice an exited container.
            DockerContainer.start(container)
            port = container.get_exposed_port(spec.port)
            url = f"http://{container.get_container_host_ip()}:{port}"
        except Exception as exc:  # docker-py / testcontainers / readiness errors
            raise self._failed(self.explain(exc, spec)) from exc
        self.startup_seconds = time.monotonic() - started
        self._endpoint = Endpoint(url=url, region=self.region)
        log.info("%s ready at %s in %.1fs", self.name, url, self.startup_seconds)
        return self._endpoint

    def explain(self, exc: BaseException, spec: ContainerSpec) -> str:
        """What went wrong while starting, with the fix where one is known."""
        if isinstance(exc, ContainerExited):
            hint = spec.exit_hints.get(exc.exit_code, "see the container output below")
            return f"{self.image} exited with code {exc.exit_code}: {hint}"
        if isinstance(exc, TimeoutError):
            return f"{self.image} did not become ready: {exc}"
        return f"{self.image} could not be started: {_short(exc, 500)}"

    def _failed(self, message: str) -> BackendUnavailable:
        output = self.logs(40)
        self.stop()
        if output:
            message += f"\n--- last container output ---\n{output}"
        return BackendUnavailable(message)

    def stop(self) -> None:
        container, self._container = self._container, None
        self._endpoint = None
        _LIVE.discard(self)
        if container is None:
            return
        try:
            container.stop(force=True, delete_volume=True)
        except docker.errors.NotFound:
            pass
        except docker.errors.DockerException as exc:
            log.warning("could not remove %s container: %s", self.name, exc)
        self._remove_labelled()

    def _remove_labelled(self) -> None:
        """Remove containers the emulator started for us (e.g. Lambda runtimes)."""
        engine = docker_engine()
        if engine.available:
            remove_instance(engine.client, self.instance_id)

    def detach(self) -> str:
        """Hand the running container over: ``stop`` and interpreter exit leave it running.

        Returns its :data:`HARNESS_LABEL` value, for :func:`remove_instance`
        by whoever removes it (under pytest-xdist, the run's controller).
        """
        self._container = None
        _LIVE.discard(self)
        return self.instance_id

    def logs(self, tail: int = 200) -> str:
        if self._container is None:
            return ""
        try:
            raw: bytes = self._container.get_wrapped_container().logs(tail=tail)
        except (docker.errors.DockerException, ContainerStartException):
            return ""
        return raw.decode(errors="replace").rstrip()


def health_services_ready(services: tuple[str, ...]) -> Callable[[bytes], bool]:
    """A ``ready`` check for LocalStack-style health bodies: every service loaded or loadable."""

    def ready(body: bytes) -> bool:
        try:
            states = json.loads(body).get("services", {})
        except (ValueError, AttributeError):
            return False
        return all(states.get(s) in ("available", "running") for s in services)

    return ready
