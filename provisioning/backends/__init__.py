"""Where an AWS endpoint comes from.

Every backend has the same small lifecycle (:class:`Backend`): ``start`` returns
an :class:`Endpoint` once it answers, ``stop`` removes what ``start`` made.
:func:`select_backend` turns a name (``auto`` included) into a backend plus
the reason it was chosen, which the pytest header and the CLI print.
"""

from __future__ import annotations

from dataclasses import dataclass

from .base import DEFAULT_REGION, Backend, BackendUnavailable, Endpoint
from .endpoint import ExistingEndpointBackend
from .ministack import MinistackBackend, ministack_available

#: Names accepted by ``--aws-backend`` / ``AWS_BACKEND`` and ``--backend``.
BACKEND_NAMES = ("auto", "ministack", "endpoint")


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
) -> Selection:
    """Resolve a backend name; raise BackendUnavailable with the fix when it can't run."""
    if name == "auto":
        if not ministack_available():
            raise BackendUnavailable(
                "no backend available: install the embedded emulator with "
                "pip install -e '.[test]', or pass --aws-backend=endpoint --aws-endpoint-url URL"
            )
        return Selection(
            MinistackBackend(region=region, port=port),
            "auto: embedded ministack (no container backend is configured)",
        )
    if name == "ministack":
        return Selection(MinistackBackend(region=region, port=port), "chosen explicitly")
    if name == "endpoint":
        return Selection(
            ExistingEndpointBackend(endpoint_url, region=region),
            f"chosen explicitly ({endpoint_url})",
        )
    raise BackendUnavailable(f"unknown backend {name!r}; choose one of {', '.join(BACKEND_NAMES)}")


__all__ = [
    "BACKEND_NAMES",
    "Backend",
    "BackendUnavailable",
    "Endpoint",
    "ExistingEndpointBackend",
    "MinistackBackend",
    "Selection",
    "select_backend",
]
