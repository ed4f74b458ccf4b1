"""csv-pipeline-harness: test a CSV-to-DynamoDB Lambda end to end, on an emulator or on AWS.

* :mod:`.pytest_plugin` — options, fixtures and the session's stack (loaded
  through the ``pytest11`` entry point; inert until a test asks for it).
* :mod:`.client` — upload a CSV, wait for its manifest, read rows back.
* :mod:`.canary` — one upload at session start that proves the wiring.
* :mod:`.contract` — the data contract's tests, shipped with the package.
* :mod:`.provisioning` — backends (where the endpoint comes from) and the stack.
* :mod:`.cli` — the ``csv-pipeline`` command (``python -m csv_pipeline_harness``).

Importing this package imports nothing: the plugin's start-up cost in a
project that never uses it stays small.
"""

from __future__ import annotations

from importlib import metadata

try:
    __version__ = metadata.version("csv-pipeline-harness")
except metadata.PackageNotFoundError:  # pragma: no cover - imported from an uninstalled tree
    __version__ = "0+unknown"
