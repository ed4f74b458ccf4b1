"""csv-pipeline-harness: test a CSV-to-DynamoDB Lambda end to end, on an emulator or on AWS.

* :mod:`.pytest_plugin` — options, fixtures and the session's stack (loaded
  through the ``pytest11`` entry point; inert until a test asks for it).
* :mod:`.options` — every option, its environment variable and ini key.
* :mod:`.stacks` — :func:`~.stacks.stack_fixture`, for tests that need a
  stack of their own.
* :mod:`.client` — upload a CSV, wait for its manifest, read rows back.
* :mod:`.canary` — one upload at session start that proves the wiring.
* :mod:`.contract` — the data contract's tests, shipped with the package.
* :mod:`.provisioning` — backends (where the endpoint comes from) and the stack.
* :mod:`.cli` — the ``csv-pipeline`` command (``python -m csv_pipeline_harness``).

Importing this package imports nothing: the plugin's start-up cost in a
project that never uses it stays small.
"""

from __future__ import annotations

DISTRIBUTION = "csv-pipeline-harness"


def __getattr__(name: str) -> str:
    """``__version__``, read from the installed distribution on first use."""
    if name != "__version__":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from importlib import metadata

    try:
        return metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:  # pragma: no cover - an uninstalled tree
        return "0+unknown"
