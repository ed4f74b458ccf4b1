"""The ``ministack-container`` backend: the MiniStack image in Docker.

Same emulator as the embedded backend, isolated in a container (a fresh
filesystem per session, nothing installed on the host but Docker). The image
tag follows the pinned ``ministack`` package so the container and the
embedded emulator behave alike; ``csv-pipeline build-image`` builds
that tag without a registry. Lambdas run in the container's own Python
(MiniStack's local executor), so no Docker socket is mounted. The server
runs as :mod:`.ministack_server` does on the host (its source is the
container's command: no mount, so a remote engine works too), so each
invocation's log lines stay with it.
"""

from __future__ import annotations

import re
from importlib import metadata
from pathlib import Path

from . import ministack_server
from .base import DISTRIBUTION, BackendUnavailable, install_hint
from .container import ContainerBackend, ContainerSpec
from .ministack import SERVICES

IMAGE_REPOSITORY = "ministackorg/ministack"
GATEWAY_PORT = 4566
HEALTH_PATH = "/_ministack/health"
#: This project's distribution, whose ``emulator`` extra pins ministack.
PROJECT_DISTRIBUTION = DISTRIBUTION


def ministack_version() -> str:
    """The pinned ministack version: the installed package's, else the project's pin."""
    try:
        return metadata.version("ministack")
    except metadata.PackageNotFoundError:
        pass
    try:
        requirements = metadata.requires(PROJECT_DISTRIBUTION) or []
    except metadata.PackageNotFoundError:
        requirements = []
    for requirement in requirements:
        match = re.match(r"ministack\s*==\s*([\w.]+)", requirement)
        if match:
            return match.group(1)
    raise BackendUnavailable(
        "cannot tell which MiniStack image to run: install the project "
        f"({install_hint('emulator')}) "
        "or name the image with --csv-pipeline-ministack-image / CSV_PIPELINE_MINISTACK_IMAGE"
    )


def default_image() -> str:
    return f"{IMAGE_REPOSITORY}:{ministack_version()}"


class MinistackContainerBackend(ContainerBackend):
    name = "ministack-container"
    image_env = "CSV_PIPELINE_MINISTACK_IMAGE"
    image_fix = (
        "Build it without a registry: csv-pipeline build-image; or pull it where a "
        "registry is reachable; or name another tag with --csv-pipeline-ministack-image "
        "(env CSV_PIPELINE_MINISTACK_IMAGE)"
    )

    @classmethod
    def default_image(cls) -> str:
        return default_image()

    def spec(self) -> ContainerSpec:
        return ContainerSpec(
            image=self.image,
            port=GATEWAY_PORT,
            health_path=HEALTH_PATH,
            env={
                "GATEWAY_PORT": str(GATEWAY_PORT),
                "MINISTACK_REGION": self.region,
                "SERVICES": SERVICES,
                "LAMBDA_EXECUTOR": "local",
            },
            command=("python", "-c", Path(ministack_server.__file__).read_text("utf-8")),
        )
