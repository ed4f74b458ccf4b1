"""The ``aws-realism`` setting: deploy a function inside :mod:`.realism`'s wrapper.

The emulator is kinder than AWS (404 where AWS says 403, no throttling); a
suite that passes on it can still fail on AWS. In realism mode the session's
function runs inside a wrapper that injects, in the Lambda process, what
the emulator does not model. This module is the host's side: whether the
mode is on, and the deployment settings that wrap a handler.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from csv_pipeline_harness.provisioning.stack import StackConfig

from . import options, realism

#: The wrapper's source, shipped in the function's zip as ``realism.py``.
WRAPPER_FILE = Path(realism.__file__)
WRAPPER_ZIP_NAME = "realism.py"

#: The extra files of a stack outside realism mode.
NO_FILES: Mapping[str, str | bytes] = {}


def enabled(config: pytest.Config) -> bool:
    """The ``aws-realism`` setting (``--csv-pipeline-aws-realism``, env, ini)."""
    return bool(options.value(config, "aws-realism"))


def header(config: pytest.Config) -> str | None:
    """The report header's line when realism mode is on."""
    if not enabled(config):
        return None
    return (
        "aws realism: on (S3 403 for missing keys; DynamoDB throttling at "
        f"{realism.DEFAULT_RATE:g} write units/s per partition key; URL-encoded event keys)"
    )


def settings(
    handler: str = realism.DEFAULT_HANDLER,
    environment: Mapping[str, str] | None = None,
    extra_files: Mapping[str, str | bytes | Path] | None = None,
) -> dict[str, Any]:
    """``handler``, ``environment`` and ``extra_files`` of a stack whose ``handler`` runs wrapped.

    Usable as ``stack_fixture(**settings(...), ...)``; further environment
    variables (``CSV_PIPELINE_REALISM_WCU_PER_SECOND``...) may be given in ``environment``.
    """
    files = dict(extra_files or {})
    if WRAPPER_ZIP_NAME in files:
        raise ValueError(f"extra file {WRAPPER_ZIP_NAME!r} is the realism wrapper's")
    files[WRAPPER_ZIP_NAME] = WRAPPER_FILE
    return {
        "handler": realism.ENTRY_POINT,
        "environment": {realism.HANDLER_ENV: handler, **(environment or {})},
        "extra_files": files,
    }


def wrap(
    config: StackConfig, extra_files: Mapping[str, str | bytes] | None = None
) -> tuple[StackConfig, dict[str, str | bytes]]:
    """``config`` and ``extra_files`` with the configured handler running inside the wrapper."""
    wrapped = settings(config.handler, config.environment, extra_files)
    files = {
        name: content.read_bytes() if isinstance(content, Path) else content
        for name, content in wrapped["extra_files"].items()
    }
    new_config = dataclasses.replace(
        config, handler=wrapped["handler"], environment=wrapped["environment"]
    )
    return new_config, files
