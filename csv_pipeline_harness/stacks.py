"""Stacks for tests that need one of their own: :func:`stack_fixture` and :class:`DeployedPipeline`.

Importing this module imports boto3 and the provisioning code; the pytest
plugin imports it only when a test asks for a pipeline.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import fields
from pathlib import Path
from typing import Any, Literal

import pytest

from . import options, real_aws
from .canary import CanaryFailed, check_wiring
from .client import PipelineClient
from .provisioning.backends import Endpoint
from .provisioning.stack import Stack, StackConfig, StackOutputs

#: Seconds the session's canary CSV may take to reach its final manifest.
DEFAULT_CANARY_TIMEOUT = 30.0


def canary_timeout(config: pytest.Config) -> float:
    """The ``canary-timeout`` setting; its default is longer on real AWS."""
    setting = options.resolve(config, "canary-timeout")
    if setting.given:
        return float(setting.value)
    return real_aws.canary_default(config, DEFAULT_CANARY_TIMEOUT)


def run_canary(
    request: pytest.FixtureRequest, client: PipelineClient, name: str
) -> CanaryFailed | None:
    """Run the canary unless ``canary-timeout`` is 0; what went wrong, if anything."""
    timeout = canary_timeout(request.config)
    if timeout <= 0:
        return None
    try:
        check_wiring(client, timeout, name=name)
    except CanaryFailed as exc:
        return exc
    return None


class DeployedPipeline(PipelineClient):
    """A :class:`PipelineClient` for a stack a :func:`stack_fixture` deployed.

    ``stack`` is the :class:`Stack` (its boto3 clients, ``deploy``,
    ``destroy``), ``outputs`` what ``deploy`` returned.
    """

    def __init__(self, stack: Stack, outputs: StackOutputs) -> None:
        super().__init__(stack.endpoint, stack.config)
        self.stack = stack
        self.outputs = outputs


ScopeName = Literal["session", "package", "module", "class", "function"]

#: StackConfig fields that name resources; a factory makes them unique.
_NAME_FIELDS = ("bucket", "table", "function", "role")


def stack_fixture(
    *,
    scope: ScopeName = "module",
    endpoint: str = "aws_endpoint",
    prefix: str | None = None,
    extra_files: Mapping[str, str | bytes | Path] | None = None,
    canary: bool = True,
    **config: Any,
) -> Callable[..., Any]:
    """A fixture that deploys a stack of its own, yields it, and destroys it afterwards.

    Assign the result to a module attribute; that name is the fixture's::

        faulty = stack_fixture(
            handler="fault_injection.lambda_handler",
            extra_files={"fault_injection.py": Path(__file__).with_name("fault_injection.py")},
            timeout_s=8,
        )

    * ``scope``: the fixture's scope (``module`` by default).
    * ``endpoint``: the name of the fixture giving the :class:`Endpoint` to
      deploy on; ``aws_endpoint`` (the session's) by default, or one of the
      test's own, such as an emulator started with other settings.
    * ``prefix``: the start of the resource names (default: the fixture's
      name); bucket, table, function and role are ``<prefix>-<random>`` unless
      given in ``config``.
    * ``extra_files``: zip path -> content (text, bytes, or a file to read),
      shipped beside the ``csv_pipeline`` package, e.g. a test-only wrapper
      named by ``handler``.
    * ``canary``: prove the wiring with the canary CSV before yielding
      (obeys ``canary-timeout``); on failure the fixture errors with the
      facts to check.
    * ``config``: any other :class:`StackConfig` field (``handler``,
      ``timeout_s``, ``environment``, ``max_retry_attempts``, ...).

    The fixture yields a :class:`DeployedPipeline`: a :class:`PipelineClient`
    with ``.stack`` and ``.outputs``.
    """
    known = {f.name for f in fields(StackConfig)}
    unknown = sorted(set(config) - known)
    if unknown:
        raise TypeError(f"stack_fixture: StackConfig has no field {', '.join(unknown)}")
    StackConfig(**config)  # refuse bad settings when the test module is imported
    files = {
        name: content.read_bytes() if isinstance(content, Path) else content
        for name, content in (extra_files or {}).items()
    }

    def deployed_stack_fixture(request: pytest.FixtureRequest) -> Iterator[DeployedPipeline]:
        where = request.getfixturevalue(endpoint)
        if not isinstance(where, Endpoint):
            raise TypeError(f"fixture {endpoint!r} gave {where!r}, not an Endpoint")
        fixture_name = request.fixturename or "stack"
        names = _unique_names(prefix or fixture_name)
        backend = request.getfixturevalue("aws_backend") if endpoint == "aws_endpoint" else None
        stack = real_aws.new_stack(backend, where, StackConfig(**{**names, **config}), files)
        try:
            deployed = DeployedPipeline(stack, stack.deploy())
            failure = run_canary(request, deployed, fixture_name) if canary else None
            if failure is not None:
                pytest.fail(str(failure), pytrace=False)
            yield deployed
        finally:
            stack.destroy()

    return pytest.fixture(scope=scope)(deployed_stack_fixture)


def _unique_names(prefix: str) -> dict[str, str]:
    """Bucket, table, function and role names no other stack uses."""
    base = re.sub(r"[^a-z0-9-]+", "-", prefix.lower()).strip("-")[:40] or "stack"
    name = f"{base}-{uuid.uuid4().hex[:8]}"
    return dict.fromkeys(_NAME_FIELDS, name)
