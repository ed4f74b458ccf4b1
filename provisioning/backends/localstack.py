"""The ``localstack`` backend: LocalStack in Docker, through testcontainers' LocalStack module.

Configuration only; the lifecycle is :class:`ContainerBackend`'s.

* Image ``localstack/localstack:4.14`` by default: the last tag that runs
  without an account. Newer tags need ``LOCALSTACK_AUTH_TOKEN``, which is
  passed through when set; without it they exit with code 55, reported as such.
* Only the services the stack uses are enabled.
* Lambda runs in containers LocalStack starts itself, so the engine's socket
  is mounted, and ``LAMBDA_DOCKER_FLAGS`` labels those containers with the
  testcontainers session id (Ryuk reaps them where it runs) and with our
  harness label (``stop`` removes them where it does not).
* Ready when ``/_localstack/health`` reports every enabled service loadable.
"""

from __future__ import annotations

import os
from typing import Any

from testcontainers.community.localstack import LocalStackContainer
from testcontainers.core.container import DockerContainer
from testcontainers.core.labels import LABEL_SESSION_ID, SESSION_ID

from .container import (
    HARNESS_LABEL,
    ContainerBackend,
    ContainerSpec,
    docker_socket_for_mounts,
    health_services_ready,
)
from .ministack import SERVICES

#: The last LocalStack tag that starts without an auth token.
DEFAULT_IMAGE = "localstack/localstack:4.14"
EDGE_PORT = 4566
HEALTH_PATH = "/_localstack/health"
#: LocalStack's exit code when its licence check fails (no or bad auth token).
EXIT_AUTH_REQUIRED = 55
#: Where LocalStack looks for the engine inside its container.
CONTAINER_SOCKET = "/var/run/docker.sock"


def lambda_docker_flags(instance_id: str) -> str:
    """Extra ``docker create`` flags LocalStack applies to each Lambda container it starts."""
    return f"-l {LABEL_SESSION_ID}={SESSION_ID} -l {HARNESS_LABEL}={instance_id}"


class LocalStackBackend(ContainerBackend):
    name = "localstack"
    image_env = "CSV_PIPELINE_LOCALSTACK_IMAGE"
    image_fix = (
        "Pull it where a registry is reachable (docker pull, or docker save / docker load "
        "to carry it over), or choose another tag with --csv-pipeline-localstack-image "
        "(env CSV_PIPELINE_LOCALSTACK_IMAGE); "
        "the ministack-container and ministack backends need no LocalStack image"
    )

    @classmethod
    def default_image(cls) -> str:
        return DEFAULT_IMAGE

    @property
    def auth_token(self) -> str:
        return os.environ.get("LOCALSTACK_AUTH_TOKEN", "").strip()

    def spec(self) -> ContainerSpec:
        env = {
            "SERVICES": SERVICES,
            "AWS_DEFAULT_REGION": self.region,
            "DOCKER_HOST": f"unix://{CONTAINER_SOCKET}",
            "LAMBDA_DOCKER_FLAGS": lambda_docker_flags(self.instance_id),
        }
        if self.auth_token:
            env["LOCALSTACK_AUTH_TOKEN"] = self.auth_token
            auth_hint = (
                "LocalStack rejected LOCALSTACK_AUTH_TOKEN; check the token, or run the last "
                f"token-free image: --csv-pipeline-localstack-image={DEFAULT_IMAGE} "
                "(env CSV_PIPELINE_LOCALSTACK_IMAGE)"
            )
        else:
            auth_hint = (
                "this LocalStack image needs an auth token. Set LOCALSTACK_AUTH_TOKEN, or run the "
                f"last token-free image: --csv-pipeline-localstack-image={DEFAULT_IMAGE} "
                "(env CSV_PIPELINE_LOCALSTACK_IMAGE)"
            )
        return ContainerSpec(
            image=self.image,
            port=EDGE_PORT,
            health_path=HEALTH_PATH,
            env=env,
            volumes=((docker_socket_for_mounts(), CONTAINER_SOCKET, "rw"),),
            exit_hints={EXIT_AUTH_REQUIRED: auth_hint},
            ready=health_services_ready(tuple(SERVICES.split(","))),
        )

    def new_container(
        self, spec: ContainerSpec, docker_client_kw: dict[str, Any] | None, labels: dict[str, str]
    ) -> DockerContainer:
        return LocalStackContainer(
            image=spec.image,
            edge_port=spec.port,
            region_name=self.region,
            docker_client_kw=docker_client_kw,
            labels=labels,
        )
