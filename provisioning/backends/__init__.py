"""Where an AWS endpoint comes from.

Every backend has the same small lifecycle (:class:`Backend`): ``start`` returns
an :class:`Endpoint` once it answers, ``stop`` removes what ``start`` made.
:func:`select_backend` turns a name (``auto`` included) into a backend plus
the reason it was chosen, which the pytest header and the CLI print.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

from .base import DEFAULT_REGION, Backend, BackendUnavailable, Endpoint
from .container import ContainerBackend, docker_engine, image_status
from .endpoint import ExistingEndpointBackend
from .localstack import LocalStackBackend
from .ministack import MinistackBackend, ministack_available
from .ministack_container import MinistackContainerBackend

#: Names accepted by ``--aws-backend`` / ``AWS_BACKEND`` and ``--backend``.
BACKEND_NAMES = ("auto", "ministack", "localstack", "ministack-container", "endpoint")


@dataclass(frozen=True)
class Selection:
    backend: Backend
    reason: str


def select_backend(
    name: str = "auto",
    *,
    endpoint_url: str | None = None,
    region: str = DEFAULT_REGION,
    port: int | None = None,
    localstack_image: str | None = None,
    ministack_image: str | None = None,
) -> Selection:
    """Resolve a backend name; raise BackendUnavailable with the fix when it can't run.

    ``auto`` prefers a container (LocalStack, then MiniStack) when a Docker
    engine answers and the image is present or pullable, else the embedded
    emulator. Explicit container choices are checked when they start.
    """
    if name == "auto":
        return _auto(region, port, localstack_image, ministack_image)
    if name == "ministack":
        return Selection(MinistackBackend(region=region, port=port), "chosen explicitly")
    if name in ("localstack", "ministack-container"):
        container = (
            LocalStackBackend(image=localstack_image, region=region, port=port)
            if name == "localstack"
            else MinistackContainerBackend(image=ministack_image, region=region, port=port)
        )
        return Selection(container, f"chosen explicitly ({container.image})")
    if name == "endpoint":
        return Selection(
            ExistingEndpointBackend(endpoint_url, region=region),
            f"chosen explicitly ({endpoint_url})",
        )
    raise BackendUnavailable(f"unknown backend {name!r}; choose one of {', '.join(BACKEND_NAMES)}")


def _auto(
    region: str, port: int | None, localstack_image: str | None, ministack_image: str | None
) -> Selection:
    engine = docker_engine()
    if engine.available:
        candidates: list[ContainerBackend] = [
            LocalStackBackend(image=localstack_image, region=region, port=port)
        ]
        # No known MiniStack version means no embedded emulator either; the error below says so.
        with contextlib.suppress(BackendUnavailable):
            candidates.append(
                MinistackContainerBackend(image=ministack_image, region=region, port=port)
            )
        missing = []
        for candidate in candidates:
            ok, why = image_status(engine, candidate.image)
            if ok:
                return Selection(candidate, f"auto: Docker answers and {candidate.image} is {why}")
            missing.append(candidate.image)
        why_not_container = (
            f"Docker answers but no image is present or pullable: {', '.join(missing)}"
        )
    else:
        why_not_container = str(engine.error)
    if not ministack_available():
        raise BackendUnavailable(
            f"no backend available ({why_not_container}): install the embedded emulator with "
            "pip install -e '.[test]', or pass --aws-backend=endpoint --aws-endpoint-url URL"
        )
    return Selection(
        MinistackBackend(region=region, port=port),
        f"auto: embedded ministack ({why_not_container})",
    )


__all__ = [
    "BACKEND_NAMES",
    "Backend",
    "BackendUnavailable",
    "ContainerBackend",
    "Endpoint",
    "ExistingEndpointBackend",
    "LocalStackBackend",
    "MinistackBackend",
    "MinistackContainerBackend",
    "Selection",
    "select_backend",
]
