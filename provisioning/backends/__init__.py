"""Where an AWS endpoint comes from.

Every backend has the same small lifecycle (:class:`Backend`): ``start`` returns
an :class:`Endpoint` once it answers, ``stop`` removes what ``start`` made.
:func:`select_backend` turns a name (``auto`` included) into a backend plus
the reason it was chosen, which the pytest header and the CLI print.
"""

from __future__ import annotations

import contextlib
import importlib
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING, Any

from .aws import RealAwsBackend
from .base import DEFAULT_REGION, Backend, BackendUnavailable, Endpoint, install_hint
from .endpoint import ExistingEndpointBackend
from .ministack import MinistackBackend, ministack_available

if TYPE_CHECKING:
    from .container import ContainerBackend
    from .localstack import LocalStackBackend
    from .ministack_container import MinistackContainerBackend

#: Names accepted by the pytest setting ``backend`` and the CLI's ``--backend``.
BACKEND_NAMES = ("auto", "ministack", "localstack", "ministack-container", "endpoint")
#: Real AWS: asks for an opt-in first (pytest and CLI alike).
REAL_AWS = RealAwsBackend.name

#: Top-level packages of the ``containers`` extra.
CONTAINER_PACKAGES = ("docker", "testcontainers")

#: Names served by :func:`__getattr__`, and the modules that define them.
_CONTAINER_NAMES = {
    "ContainerBackend": "container",
    "LocalStackBackend": "localstack",
    "MinistackContainerBackend": "ministack_container",
}


def container_module(name: str, needed_by: str = "a container backend") -> ModuleType:
    """Import ``provisioning.backends.<name>``, which needs Docker's Python packages.

    They come with the ``containers`` extra and are imported only here, when
    a container backend is chosen, so a plain install deploys and destroys
    without them. Raises BackendUnavailable naming the extra when they are missing.
    """
    try:
        return importlib.import_module(f"{__name__}.{name}")
    except ModuleNotFoundError as exc:
        missing = (exc.name or "").partition(".")[0]
        if missing not in CONTAINER_PACKAGES:
            raise
        raise BackendUnavailable(
            f"{needed_by} requires the {missing!r} package (the 'containers' extra): "
            + install_hint("containers")
        ) from exc


def __getattr__(name: str) -> Any:
    """The container backend classes, imported on first use (PEP 562)."""
    module = _CONTAINER_NAMES.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(container_module(module), name)


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

    ``auto`` is the embedded emulator whenever it is installed (the
    ``emulator`` extra: no Docker, fastest to start); without it, a container
    (LocalStack, then MiniStack) when the ``containers`` extra is installed, a
    Docker engine answers and the image is present or pullable. Docker is
    probed only in that second case. Explicit container choices are checked
    when they start.
    """
    if name == "auto":
        return _auto(region, port, localstack_image, ministack_image)
    if name == "ministack":
        return Selection(MinistackBackend(region=region, port=port), "chosen explicitly")
    if name == "localstack":
        localstack = container_module("localstack", "the localstack backend")
        container: ContainerBackend = localstack.LocalStackBackend(
            image=localstack_image, region=region, port=port
        )
        return Selection(container, f"chosen explicitly ({container.image})")
    if name == "ministack-container":
        ministack = container_module("ministack_container", "the ministack-container backend")
        container = ministack.MinistackContainerBackend(
            image=ministack_image, region=region, port=port
        )
        return Selection(container, f"chosen explicitly ({container.image})")
    if name == "endpoint":
        return Selection(
            ExistingEndpointBackend(endpoint_url, region=region),
            f"chosen explicitly ({endpoint_url})",
        )
    if name == REAL_AWS:
        return Selection(RealAwsBackend(), "chosen explicitly (boto3's credentials and region)")
    raise BackendUnavailable(f"unknown backend {name!r}; choose one of {', '.join(BACKEND_NAMES)}")


def _auto(
    region: str, port: int | None, localstack_image: str | None, ministack_image: str | None
) -> Selection:
    if ministack_available():
        return Selection(
            MinistackBackend(region=region, port=port), "auto: the embedded emulator is installed"
        )
    found = _auto_container(region, port, localstack_image, ministack_image)
    if isinstance(found, Selection):
        return found
    raise BackendUnavailable(
        f"no backend available (no embedded emulator; {found}): install it with "
        f"{install_hint('emulator')}, or use an emulator you run with backend endpoint "
        "(pytest: --csv-pipeline-backend=endpoint --csv-pipeline-endpoint-url URL; "
        "CLI: --backend endpoint --endpoint-url URL)"
    )


def _auto_container(
    region: str, port: int | None, localstack_image: str | None, ministack_image: str | None
) -> Selection | str:
    """A container backend that can run here, else why none can."""
    try:
        container = container_module("container")
        localstack = container_module("localstack")
        ministack = container_module("ministack_container")
    except BackendUnavailable:
        return "no container backends: the 'containers' extra is not installed"
    engine = container.docker_engine()
    if not engine.available:
        return str(engine.error)
    candidates: list[ContainerBackend] = [
        localstack.LocalStackBackend(image=localstack_image, region=region, port=port)
    ]
    # No known MiniStack version means no embedded emulator either; _auto says so.
    with contextlib.suppress(BackendUnavailable):
        candidates.append(
            ministack.MinistackContainerBackend(image=ministack_image, region=region, port=port)
        )
    missing = []
    for candidate in candidates:
        ok, why = container.image_status(engine, candidate.image)
        if ok:
            reason = f"auto: no embedded emulator; Docker answers and {candidate.image} is {why}"
            return Selection(candidate, reason)
        missing.append(candidate.image)
    return f"Docker answers but no image is present or pullable: {', '.join(missing)}"


__all__ = [
    "BACKEND_NAMES",
    "REAL_AWS",
    "Backend",
    "BackendUnavailable",
    "ContainerBackend",
    "Endpoint",
    "ExistingEndpointBackend",
    "LocalStackBackend",
    "MinistackBackend",
    "MinistackContainerBackend",
    "RealAwsBackend",
    "Selection",
    "container_module",
    "install_hint",
    "select_backend",
]
