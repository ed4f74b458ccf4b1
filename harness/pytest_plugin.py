"""pytest fixtures that put the pipeline on an emulator once per session.

Registered as the ``csv_pipeline_harness`` plugin through the package's
``pytest11`` entry point: installing the package is enough, no conftest line
(with ``PYTEST_DISABLE_PLUGIN_AUTOLOAD`` set, ``-p csv_pipeline_harness``
loads it). Options, all under one heading in ``pytest --help``:

* ``--aws-backend`` (env ``AWS_BACKEND``): ``auto`` (default), or a backend name.
* ``--aws-endpoint-url`` (env ``AWS_ENDPOINT_URL``): for ``--aws-backend=endpoint``.
* ``--localstack-image`` / ``--ministack-image`` (env ``LOCALSTACK_IMAGE`` /
  ``MINISTACK_IMAGE``): images of the container backends.
* ``--canary-timeout`` (env ``CSV_PIPELINE_CANARY_TIMEOUT``, ini
  ``canary_timeout``; default 30): seconds the canary CSV uploaded when the
  ``pipeline`` fixture is first set up may take to reach its final manifest;
  ``0`` skips the check. When it fails, the first test needing the pipeline
  errors with one message naming what to check (notification, invoke
  permission, function state, Lambda log) and the session stops there,
  instead of every test timing out.
* ``--aws-realism`` (env ``CSV_PIPELINE_AWS_REALISM=1``, ini ``aws_realism``):
  the session's function runs inside :mod:`harness.realism`, which injects
  what AWS does and the emulator does not (see :mod:`harness.realism_mode`).

Besides the session's stack, :func:`stack_fixture` makes fixtures that deploy
a stack of their own (other settings, a test-only handler, another endpoint)
under unique names and destroy it afterwards.

Each pytest-xdist worker starts its own emulator, embedded or container
(about 0.3-0.9 s plus 1.5 s of provisioning), so workers never share state
or tear down each other's stack, and each worker removes exactly what it
started. One container shared by all workers was measured as well (same
machine, -n 2, end-to-end suite, alternating runs): about 6 % faster in wall
time, within the noise, yet it needs cross-process start/stop ownership and
puts every worker's Lambdas on one server. A shared emulator remains
available as ``--aws-backend=endpoint``: every worker then deploys its own
suffixed stack and removes only that one.

Containers are removed by the session finalizer, with ``atexit`` as a
fallback for interrupted sessions; they carry the ``csv-pipeline.harness``
label, so ``docker ps -a --filter label=csv-pipeline.harness`` shows leftovers
of a killed run.
"""

from __future__ import annotations

import atexit
import math
import os
import re
import uuid
from collections.abc import Callable, Generator, Iterator, Mapping
from dataclasses import fields
from pathlib import Path
from typing import Any, Literal

import pytest
from _pytest._code.code import ExceptionRepr

from provisioning.backends import (
    BACKEND_NAMES,
    Backend,
    BackendUnavailable,
    Endpoint,
    ExistingEndpointBackend,
    MinistackBackend,
    Selection,
    select_backend,
)
from provisioning.stack import Stack, StackConfig, StackOutputs

from . import realism_mode
from .canary import CanaryFailed, check_wiring
from .client import PipelineClient

try:  # the property suites' profiles, where Hypothesis is installed
    from . import profiles
except ImportError:  # pragma: no cover - a plain install without the test extra
    profiles = None  # type: ignore[assignment]
else:
    # At import, before Hypothesis' own plugin reads --hypothesis-profile.
    profiles.register_and_load()

#: Seconds the session's canary CSV may take to reach its final manifest.
DEFAULT_CANARY_TIMEOUT = 30.0
CANARY_ENV = "CSV_PIPELINE_CANARY_TIMEOUT"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup(
        "csv-pipeline-harness", "csv-pipeline-harness (S3 -> Lambda -> DynamoDB on an AWS emulator)"
    )
    group.addoption(
        "--aws-backend",
        default=os.environ.get("AWS_BACKEND", "auto"),
        choices=BACKEND_NAMES,
        help="where the AWS endpoint comes from (env AWS_BACKEND; default: auto)",
    )
    group.addoption(
        "--aws-endpoint-url",
        default=os.environ.get("AWS_ENDPOINT_URL"),
        help="URL of a running emulator, for --aws-backend=endpoint (env AWS_ENDPOINT_URL)",
    )
    group.addoption(
        "--localstack-image",
        default=None,
        help="LocalStack image for --aws-backend=localstack "
        "(env LOCALSTACK_IMAGE; default localstack/localstack:4.14)",
    )
    group.addoption(
        "--ministack-image",
        default=None,
        help="MiniStack image for --aws-backend=ministack-container "
        "(env MINISTACK_IMAGE; default ministackorg/ministack:<pinned ministack version>)",
    )
    group.addoption(
        "--canary-timeout",
        type=float,
        default=None,
        metavar="SECONDS",
        help="seconds a canary CSV uploaded at session start may take to reach its final "
        f"manifest before the session stops with what to check; 0 skips it (env {CANARY_ENV}, "
        f"ini canary_timeout; default {DEFAULT_CANARY_TIMEOUT:g})",
    )
    group.addoption(
        "--aws-realism",
        action="store_true",
        default=None,
        help="run the session's function inside a wrapper that behaves like AWS where the "
        "emulator is kinder: S3 403 for missing keys, DynamoDB throttling per partition key, "
        f"URL-encoded event keys (env {realism_mode.ENV}=1, ini {realism_mode.INI})",
    )
    parser.addini(realism_mode.INI, "run the session's function in AWS realism mode", "bool")
    parser.addini(
        "canary_timeout",
        f"seconds the pipeline canary may take (default {DEFAULT_CANARY_TIMEOUT:g}; 0 skips it)",
        default="",
    )


def canary_timeout(config: pytest.Config) -> float:
    """``--canary-timeout``, else ``CSV_PIPELINE_CANARY_TIMEOUT``, else ini ``canary_timeout``."""
    sources = (
        ("--canary-timeout", config.getoption("--canary-timeout")),
        (CANARY_ENV, os.environ.get(CANARY_ENV)),
        ("ini canary_timeout", config.getini("canary_timeout")),
    )
    for where, raw in sources:
        if raw is None or str(raw).strip() == "":
            continue
        try:
            value = float(raw)
        except ValueError:
            raise pytest.UsageError(f"{where}: {raw} is not a number of seconds") from None
        if not math.isfinite(value) or value < 0:
            raise pytest.UsageError(f"{where}: {raw} must be 0 (off) or a number of seconds")
        return value
    return DEFAULT_CANARY_TIMEOUT


def _select(config: pytest.Config) -> Selection:
    return select_backend(
        config.getoption("--aws-backend"),
        endpoint_url=config.getoption("--aws-endpoint-url"),
        localstack_image=config.getoption("--localstack-image"),
        ministack_image=config.getoption("--ministack-image"),
    )


def _selection_summary(config: pytest.Config) -> str:
    name = config.getoption("--aws-backend")
    try:
        selection = _select(config)
    except BackendUnavailable as exc:
        return f"aws backend: {name} (unavailable: {exc})"
    if isinstance(selection.backend, ExistingEndpointBackend):
        where = selection.backend.url
    elif isinstance(selection.backend, MinistackBackend):
        where = "own loopback port per worker"
    else:
        where = "own container per worker"
    return f"aws backend: {selection.backend.name} ({selection.reason}); endpoint: {where}"


MARKERS = {
    "e2e": "runs through S3 -> Lambda -> DynamoDB on the selected AWS backend",
    "slow": "long-running; not in the default run (select with -m slow)",
    "container": "needs a Docker engine (container backends)",
    "install": "installs the package into a fresh venv; not in the default run (-m install)",
}

_STARTED_MS = pytest.StashKey[int]()


def pytest_configure(config: pytest.Config) -> None:
    for name, text in MARKERS.items():
        config.addinivalue_line("markers", f"{name}: {text}")
    canary_timeout(config)  # a bad value stops the run before anything starts
    realism_mode.enabled(config)  # so does a bad CSV_PIPELINE_AWS_REALISM


def pytest_report_header(config: pytest.Config) -> list[str]:
    lines = [_selection_summary(config)]
    if profiles is not None:
        lines.append(profiles.header())
    if realism := realism_mode.header(config):
        lines.append(realism)
    return lines


#: Markers whose tests run only when ``-m`` names them (``slow`` also under
#: the thorough Hypothesis profile).
OPT_IN = ("slow", "install")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Leave opt-in tests out unless ``-m`` names their marker (or the profile includes them)."""
    named = config.getoption("-m") or ""
    profile = config.getoption("--hypothesis-profile", None) or os.environ.get("HYPOTHESIS_PROFILE")
    left_out_markers = [
        m for m in OPT_IN if m not in named and not (m == "slow" and profile == "thorough")
    ]
    left_out = [item for item in items if any(item.get_closest_marker(m) for m in left_out_markers)]
    if left_out:
        items[:] = [item for item in items if item not in left_out]
        config.hook.pytest_deselected(items=left_out)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    item.stash[_STARTED_MS] = PipelineClient.log_mark()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Attach the Lambda's log lines to a failing test that used a pipeline.

    ``pipeline`` or any fixture giving a :class:`PipelineClient` (such as
    the stacks of :func:`stack_fixture`): one section per function.
    """
    report = yield
    if report.when != "call" or not report.failed:
        return report
    clients: dict[tuple[str | None, str], PipelineClient] = {}
    for value in getattr(item, "funcargs", {}).values():
        if isinstance(value, PipelineClient):
            clients.setdefault((value.endpoint.url, value.config.log_group), value)
    since = item.stash.get(_STARTED_MS, None)
    for client in clients.values():
        lines = client.lambda_log_lines(since_ms=since)
        title = f"Lambda log ({client.config.log_group})"
        text = "\n".join(lines) or "(no log lines)"
        if isinstance(report.longrepr, ExceptionRepr):
            # Part of the failure itself, so JUnit XML carries it too.
            report.longrepr.addsection(title, text)
        else:
            report.sections.append((title, text))
    return report


def worker_id() -> str:
    """``gw0``, ``gw1``… under pytest-xdist, ``main`` otherwise."""
    return os.environ.get("PYTEST_XDIST_WORKER", "main")


@pytest.fixture(scope="session")
def aws_backend(pytestconfig: pytest.Config) -> Iterator[Backend]:
    """The started backend of this session (or xdist worker); stopped at the end."""
    try:
        backend = _select(pytestconfig).backend
        atexit.register(backend.stop)  # also on an interrupted session
        backend.start()
    except BackendUnavailable as exc:
        pytest.fail(f"AWS backend unavailable: {exc}", pytrace=False)
    try:
        yield backend
    finally:
        backend.stop()


@pytest.fixture(scope="session")
def aws_endpoint(aws_backend: Backend) -> Endpoint:
    return aws_backend.endpoint


@pytest.fixture(scope="session")
def stack_config(aws_backend: Backend) -> StackConfig:
    """Default names on an emulator of our own; suffixed names on a shared endpoint."""
    if aws_backend.name != "endpoint":
        return StackConfig()
    suffix = re.sub(r"[^a-z0-9-]", "-", f"{worker_id()}-{uuid.uuid4().hex[:6]}")
    base = StackConfig()
    return StackConfig(
        bucket=f"{base.bucket}-{suffix}",
        table=f"{base.table}-{suffix}",
        function=f"{base.function}-{suffix}",
        role=f"{base.role}-{suffix}",
    )


@pytest.fixture(scope="session")
def deployed_stack(
    pytestconfig: pytest.Config,
    aws_backend: Backend,
    aws_endpoint: Endpoint,
    stack_config: StackConfig,
) -> Iterator[StackOutputs]:
    """The pipeline, deployed once per session (per worker under xdist); wrapped in realism mode."""
    config, files = stack_config, realism_mode.NO_FILES
    if realism_mode.enabled(pytestconfig):
        config, files = realism_mode.wrap(stack_config)
    stack = Stack(aws_endpoint, config, extra_files=files)
    outputs = stack.deploy()
    yield outputs
    if aws_backend.name == "endpoint":
        # Someone else's emulator: leave it as we found it.
        stack.destroy()


@pytest.fixture(scope="session")
def pipeline(
    request: pytest.FixtureRequest,
    deployed_stack: StackOutputs,
    aws_endpoint: Endpoint,
    stack_config: StackConfig,
) -> PipelineClient:
    """Upload / wait / read back against the deployed stack, once its wiring is proven.

    The canary runs once per session (per xdist worker). When it fails, this
    fixture errors with the facts to check and the session stops after the
    test that asked for it: every other test would only have timed out.
    """
    client = PipelineClient(aws_endpoint, stack_config)
    failure = _canary(request, client, worker_id())
    if failure is not None:
        request.session.shouldfail = f"pipeline canary failed: {failure.summary}"
        pytest.fail(str(failure), pytrace=False)
    return client


def _canary(
    request: pytest.FixtureRequest, client: PipelineClient, name: str
) -> CanaryFailed | None:
    """Run the canary unless ``--canary-timeout`` is 0; what went wrong, if anything."""
    timeout = canary_timeout(request.config)
    if timeout <= 0:
        return None
    try:
        check_wiring(client, timeout, name=name)
    except CanaryFailed as exc:
        return exc
    return None


@pytest.fixture
def unique_key(request: pytest.FixtureRequest) -> str:
    """An object key no other test (or worker) uses: ``tests/<test>-<random>.csv``."""
    name = re.sub(r"[^A-Za-z0-9_-]", "-", request.node.name)[:60]
    return f"tests/{name}-{uuid.uuid4().hex[:10]}.csv"


# -- fixture factories -------------------------------------------------------------------------


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
      (obeys ``--canary-timeout``); on failure the fixture errors with the
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
        stack = Stack(where, StackConfig(**{**names, **config}), extra_files=files)
        try:
            deployed = DeployedPipeline(stack, stack.deploy())
            failure = _canary(request, deployed, fixture_name) if canary else None
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
