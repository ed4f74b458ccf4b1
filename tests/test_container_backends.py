"""Container backends: configuration, readiness and failure reporting.

The first part needs no Docker: LocalStack cannot run where its image cannot
be pulled, so its container configuration (image, environment, socket mount,
labels, auth token, readiness, exit code 55) is checked as data and against
a local HTTP server standing in for the container's health endpoint. The
``container`` tests at the end start real containers when a Docker engine
and the MiniStack image are there (``csv-pipeline build-image``).
"""

from __future__ import annotations

import http.server
import json
import os
import sys
import threading
import time
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest
from processes import run
from testcontainers.community.localstack import LocalStackContainer
from testcontainers.core.labels import LABEL_SESSION_ID, SESSION_ID

from csv_pipeline_harness import cli
from csv_pipeline_harness.devtools import image_build
from csv_pipeline_harness.provisioning.backends import (
    BackendUnavailable,
    LocalStackBackend,
    MinistackBackend,
    MinistackContainerBackend,
    ministack_server,
    select_backend,
)
from csv_pipeline_harness.provisioning.backends import container as container_module
from csv_pipeline_harness.provisioning.backends.container import (
    HARNESS_LABEL,
    OWNER_PID_LABEL,
    ContainerExited,
    EmulatorReady,
    docker_engine,
    owner_labels,
)
from csv_pipeline_harness.provisioning.backends.ministack import SERVICES

#: Builds testcontainers objects without contacting any engine: a pinned API
#: version skips docker-py's version query, and the host does not exist.
OFFLINE_CLIENT = {"version": "1.41", "environment": {"DOCKER_HOST": "unix:///nonexistent.sock"}}


@pytest.fixture
def no_docker(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A machine whose Docker engine is absent, whatever this one has."""
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    docker_engine.cache_clear()
    yield
    docker_engine.cache_clear()


@pytest.fixture(autouse=True)
def _clean_image_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "CSV_PIPELINE_LOCALSTACK_IMAGE",
        "CSV_PIPELINE_MINISTACK_IMAGE",
        "LOCALSTACK_AUTH_TOKEN",
    ):
        monkeypatch.delenv(name, raising=False)


# -- LocalStack configuration ---------------------------------------------------


def test_localstack_defaults_to_the_last_token_free_tag() -> None:
    assert LocalStackBackend().image == "localstack/localstack:4.14"


def test_localstack_image_option_beats_env_beats_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CSV_PIPELINE_LOCALSTACK_IMAGE", "registry.local/localstack:4.13")
    assert LocalStackBackend().image == "registry.local/localstack:4.13"
    assert LocalStackBackend(image="localstack/localstack:2026.3").image == (
        "localstack/localstack:2026.3"
    )
    assert LocalStackBackend().spec().image == "registry.local/localstack:4.13"


def test_localstack_enables_only_the_stacks_services() -> None:
    spec = LocalStackBackend().spec()
    assert spec.env["SERVICES"] == "s3,dynamodb,lambda,iam,sts,logs,sqs" == SERVICES
    assert spec.port == 4566


def test_localstack_mounts_the_docker_socket_for_lambda(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DOCKER_HOST", raising=False)
    monkeypatch.delenv("TESTCONTAINERS_DOCKER_SOCKET_OVERRIDE", raising=False)
    spec = LocalStackBackend().spec()
    assert spec.volumes == (("/var/run/docker.sock", "/var/run/docker.sock", "rw"),)
    assert spec.env["DOCKER_HOST"] == "unix:///var/run/docker.sock"


def test_socket_mount_follows_docker_host_and_the_testcontainers_override(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("TESTCONTAINERS_DOCKER_SOCKET_OVERRIDE", raising=False)
    monkeypatch.setenv("DOCKER_HOST", "unix:///run/user/1000/docker.sock")
    assert LocalStackBackend().spec().volumes[0][0] == "/run/user/1000/docker.sock"
    monkeypatch.setenv("TESTCONTAINERS_DOCKER_SOCKET_OVERRIDE", "/var/run/docker.sock.raw")
    assert LocalStackBackend().spec().volumes[0][0] == "/var/run/docker.sock.raw"


def test_lambda_containers_carry_the_session_and_harness_labels() -> None:
    backend = LocalStackBackend()
    flags = backend.spec().env["LAMBDA_DOCKER_FLAGS"].split()
    assert flags == [
        "-l", f"{LABEL_SESSION_ID}={SESSION_ID}",
        "-l", f"{HARNESS_LABEL}={backend.instance_id}",
    ]  # fmt: skip
    assert LocalStackBackend().instance_id != backend.instance_id


def test_auth_token_is_passed_through_only_when_set(monkeypatch: pytest.MonkeyPatch) -> None:
    assert "LOCALSTACK_AUTH_TOKEN" not in LocalStackBackend().spec().env
    monkeypatch.setenv("LOCALSTACK_AUTH_TOKEN", "   ")
    assert "LOCALSTACK_AUTH_TOKEN" not in LocalStackBackend().spec().env
    monkeypatch.setenv("LOCALSTACK_AUTH_TOKEN", "ls-abc123")
    assert LocalStackBackend().spec().env["LOCALSTACK_AUTH_TOKEN"] == "ls-abc123"


def test_localstack_container_object_is_configured_from_the_spec(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("DOCKER_HOST", raising=False)
    monkeypatch.delenv("TESTCONTAINERS_DOCKER_SOCKET_OVERRIDE", raising=False)
    backend = LocalStackBackend(region="eu-west-1")
    container = backend.build_container(docker_client_kw=OFFLINE_CLIENT)
    assert isinstance(container, LocalStackContainer)
    assert container.image == "localstack/localstack:4.14"
    assert container.ports == {"4566": None}
    assert container.env["AWS_DEFAULT_REGION"] == "eu-west-1"
    assert container.env["SERVICES"] == SERVICES
    assert container.env["LAMBDA_DOCKER_FLAGS"].endswith(f"{HARNESS_LABEL}={backend.instance_id}")
    assert container.volumes == {
        "/var/run/docker.sock": {"bind": "/var/run/docker.sock", "mode": "rw"}
    }
    assert container._kwargs["labels"] == {
        HARNESS_LABEL: backend.instance_id,
        **owner_labels(os.getpid()),
    }
    assert container._kwargs["labels"][OWNER_PID_LABEL] == str(os.getpid())
    strategy = container._wait_strategy
    assert isinstance(strategy, EmulatorReady)
    assert (strategy.port, strategy.path) == (4566, "/_localstack/health")


def test_a_fixed_host_port_is_published_as_such() -> None:
    container = LocalStackBackend(port=4566).build_container(docker_client_kw=OFFLINE_CLIENT)
    assert container.ports == {"4566": 4566}


def test_exit_code_55_names_the_token_and_the_pinned_tag(monkeypatch: pytest.MonkeyPatch) -> None:
    backend = LocalStackBackend(image="localstack/localstack:latest")
    message = backend.explain(ContainerExited(55), backend.spec())
    assert "exited with code 55" in message
    assert "Set LOCALSTACK_AUTH_TOKEN" in message
    assert "--csv-pipeline-localstack-image=localstack/localstack:4.14" in message
    monkeypatch.setenv("LOCALSTACK_AUTH_TOKEN", "ls-expired")
    message = backend.explain(ContainerExited(55), backend.spec())
    assert "rejected LOCALSTACK_AUTH_TOKEN" in message
    other = backend.explain(ContainerExited(1), backend.spec())
    assert "exited with code 1" in other and "container output" in other


# -- readiness, against a local stand-in for the health endpoint ----------------


class HealthServer:
    """Serves a scripted sequence of health bodies (the last one repeats)."""

    def __init__(self, bodies: list[dict[str, Any]]) -> None:
        self.bodies = bodies
        self.requests: list[str] = []
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                owner.requests.append(self.path)
                index = min(len(owner.requests), len(owner.bodies)) - 1
                payload = json.dumps(owner.bodies[index]).encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *_: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class FakeDockerContainer:
    """The docker-py side of a container: status and exit code."""

    def __init__(self, status: str = "running", exit_code: int = 0) -> None:
        self.status = status
        self.attrs = {"State": {"ExitCode": exit_code}}

    def reload(self) -> None:
        pass


class FakeTarget:
    """What a wait strategy sees of a started testcontainers container."""

    def __init__(self, port: int, wrapped: FakeDockerContainer) -> None:
        self.port = port
        self.wrapped = wrapped

    def get_container_host_ip(self) -> str:
        return "127.0.0.1"

    def get_exposed_port(self, port: int) -> int:
        assert port == 4566
        return self.port

    def get_wrapped_container(self) -> FakeDockerContainer:
        return self.wrapped


@pytest.fixture
def health() -> Iterator[HealthServer]:
    server = HealthServer([{"services": {}}])
    yield server
    server.close()


def localstack_ready_strategy() -> EmulatorReady:
    spec = LocalStackBackend().spec()
    return EmulatorReady(spec.port, spec.health_path, spec.ready).with_startup_timeout(10)


def test_ready_once_every_service_is_loadable(health: HealthServer) -> None:
    services = SERVICES.split(",")
    health.bodies = [
        {"services": {}},
        {"services": {**dict.fromkeys(services, "available"), "lambda": "initializing"}},
        {"services": {**dict.fromkeys(services, "available"), "s3": "running"}},
    ]
    localstack_ready_strategy().wait_until_ready(FakeTarget(health.port, FakeDockerContainer()))
    assert health.requests == ["/_localstack/health"] * 3


def test_an_exited_container_fails_at_once_with_its_exit_code(health: HealthServer) -> None:
    target = FakeTarget(health.port, FakeDockerContainer(status="exited", exit_code=55))
    started = time.monotonic()
    with pytest.raises(ContainerExited) as raised:
        localstack_ready_strategy().wait_until_ready(target)
    assert raised.value.exit_code == 55
    assert time.monotonic() - started < 5  # not the 10 s startup timeout
    assert health.requests == []


def test_readiness_times_out_naming_the_url(health: HealthServer) -> None:
    health.bodies = [{"services": {"s3": "error"}}]
    spec = LocalStackBackend().spec()
    strategy = EmulatorReady(spec.port, spec.health_path, spec.ready).with_startup_timeout(1)
    with pytest.raises(TimeoutError, match=rf"127.0.0.1:{health.port}/_localstack/health"):
        strategy.wait_until_ready(FakeTarget(health.port, FakeDockerContainer()))


# -- MiniStack image, selection and missing Docker ------------------------------


def test_ministack_image_follows_the_installed_package(monkeypatch: pytest.MonkeyPatch) -> None:
    version = metadata.version("ministack")
    assert MinistackContainerBackend().image == f"ministackorg/ministack:{version}"
    monkeypatch.setenv("CSV_PIPELINE_MINISTACK_IMAGE", "mirror.local/ministack:dev")
    assert MinistackContainerBackend().image == "mirror.local/ministack:dev"
    spec = MinistackContainerBackend().spec()
    assert (spec.port, spec.health_path, spec.volumes) == (4566, "/_ministack/health", ())
    assert spec.env["LAMBDA_EXECUTOR"] == "local"


def test_the_ministack_container_keeps_each_invocations_log_lines_with_it() -> None:
    """Its command is the host's log-keeping server, passed whole: no mount needed."""
    container = MinistackContainerBackend().build_container(docker_client_kw=OFFLINE_CLIENT)
    python, flag, source = container._command
    assert (python, flag) == ("python", "-c")
    assert source == Path(ministack_server.__file__).read_text("utf-8")
    compile(source, "<command>", "exec")


def test_offline_build_pins_ministack_and_a_matching_boto3() -> None:
    botocore_pin = next(r for r in metadata.requires("ministack") or [] if "botocore==" in r)
    assert image_build.pinned_requirements() == [
        f"ministack=={metadata.version('ministack')}",
        botocore_pin.split(";")[0].strip(),
        f"boto3=={metadata.version('boto3')}",
    ]


def test_auto_picks_the_installed_embedded_emulator_without_asking_docker(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def no_probe(*args: object, **kwargs: object) -> None:
        raise AssertionError("auto probed Docker although the embedded emulator is installed")

    monkeypatch.setattr(container_module, "docker_engine", no_probe)
    selection = select_backend("auto")
    assert isinstance(selection.backend, MinistackBackend)
    assert selection.reason == "auto: the embedded emulator is installed"


@pytest.mark.parametrize("name", ["localstack", "ministack-container"])
def test_explicit_container_backend_without_docker_says_so(no_docker: None, name: str) -> None:
    backend = select_backend(name).backend
    with pytest.raises(BackendUnavailable, match=r"needs Docker.*--csv-pipeline-backend=ministack"):
        backend.start()
    backend.stop()  # nothing started: still safe


def test_cli_up_without_docker_exits_3_with_the_fix(
    no_docker: None, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["up", "--backend", "localstack"]) == cli.EXIT_BACKEND
    assert "needs Docker" in capsys.readouterr().err


def test_build_image_names_missing_tools(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no debootstrap, no docker, no tar
    assert cli.main(["build-image"]) == cli.EXIT_BACKEND
    err = capsys.readouterr().err
    assert "apt-get install debootstrap" in err and "apt-get install docker.io" in err


# -- real containers ------------------------------------------------------------


def _engine_and_ministack_image() -> None:
    """Skip (saying what to do) unless Docker answers and the MiniStack image is here."""
    engine = docker_engine()
    if not engine.available:
        pytest.skip(f"needs Docker: {engine.error}")
    image = MinistackContainerBackend().image
    if not container_module.image_status(engine, image)[0]:
        pytest.skip(f"needs {image}: csv-pipeline build-image")


def _containers_labelled(value: str) -> list[str]:
    out = run(
        ["docker", "ps", "-aq", "--filter", f"label={HARNESS_LABEL}={value}"],
        timeout=60, check=True,
    )  # fmt: skip
    return out.stdout.split()


@pytest.mark.container
def test_ministack_container_starts_labelled_and_leaves_nothing() -> None:
    _engine_and_ministack_image()
    backend = MinistackContainerBackend()
    with backend as endpoint:
        assert endpoint.url is not None and endpoint.url.startswith("http://")
        assert endpoint.client("s3").list_buckets()["Buckets"] == []
        assert len(_containers_labelled(backend.instance_id)) == 1
        assert backend.startup_seconds is not None
    assert _containers_labelled(backend.instance_id) == []
    backend.stop()  # a second stop is harmless


@pytest.mark.container
def test_missing_image_names_the_offline_build() -> None:
    _engine_and_ministack_image()
    backend = MinistackContainerBackend(image="ministackorg/ministack:0.0.0-absent")
    with pytest.raises(BackendUnavailable, match="csv-pipeline build-image"):
        backend.start()


@pytest.mark.container
def test_localstack_exit_55_is_reported_with_the_fix_and_cleaned_up(tmp_path: Path) -> None:
    """An image that exits like LocalStack without a token (built from the local MiniStack one)."""
    _engine_and_ministack_image()
    tag = "csv-pipeline-test/exits-55:latest"
    (tmp_path / "Dockerfile").write_text(
        f"FROM {MinistackContainerBackend().image}\n"
        'CMD ["python", "-c", "print(\'License activation failed\'); raise SystemExit(55)"]\n'
    )
    run(["docker", "build", "-q", "-t", tag, str(tmp_path)], timeout=300, check=True)
    try:
        backend = LocalStackBackend(image=tag)
        with pytest.raises(BackendUnavailable) as raised:
            backend.start()
        message = str(raised.value)
        assert "exited with code 55" in message and "LOCALSTACK_AUTH_TOKEN" in message
        assert "License activation failed" in message  # the container's own output
        assert _containers_labelled(backend.instance_id) == []
    finally:
        run(["docker", "rmi", "-f", tag], timeout=60)


SHARED_RUN_TEST = """
import json, os, time
from pathlib import Path

OUT = Path({out!r})

def test_where_this_worker_deploys(pipeline):
    worker = os.environ["PYTEST_XDIST_WORKER"]
    assert pipeline.ingest("k.csv", b"a\\n1\\n").status == "COMPLETE"
    (OUT / f"{{worker}}.json").write_text(json.dumps(
        {{"url": pipeline.endpoint.url, "bucket": pipeline.config.bucket,
          "controller": os.getppid()}}
    ))
    deadline = time.monotonic() + 60
    while len(list(OUT.glob("*.json"))) < 2:
        assert time.monotonic() < deadline, "the other worker never deployed"
        time.sleep(0.2)
"""


@pytest.mark.container
def test_xdist_workers_share_one_container_and_deploy_stacks_of_their_own(
    pytester: pytest.Pytester,
) -> None:
    _engine_and_ministack_image()
    out = pytester.mkdir("out")
    pytester.makepyfile(SHARED_RUN_TEST.format(out=str(out)))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CSV_PIPELINE_", "PYTEST_"))}
    done = run(
        [
            sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-n", "2", "--dist", "each",
            "--csv-pipeline-backend=ministack-container",
        ],
        env=env, cwd=pytester.path, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    seen = [json.loads(p.read_text()) for p in sorted(out.glob("*.json"))]
    assert len(seen) == 2
    assert seen[0]["url"] == seen[1]["url"], seen  # one emulator
    assert seen[0]["bucket"] != seen[1]["bucket"], seen  # a stack each
    owned = f"label={OWNER_PID_LABEL}={seen[0]['controller']}"
    left = run(["docker", "ps", "-aq", "--filter", owned], timeout=60, check=True)
    assert left.stdout.split() == [], "the run's shared container was left behind"


@pytest.mark.container
def test_the_next_start_removes_a_killed_runs_container() -> None:
    _engine_and_ministack_image()
    killed = MinistackContainerBackend()
    done = run([sys.executable, "-c", "import os; print(os.getpid())"], timeout=60, check=True)
    killed.owner_pid = int(done.stdout)  # a run that has ended without cleaning up
    killed.start()
    left_by_killed_run = killed.detach()
    assert len(_containers_labelled(left_by_killed_run)) == 1
    with MinistackContainerBackend() as endpoint:
        assert endpoint.url is not None
        assert _containers_labelled(left_by_killed_run) == []
