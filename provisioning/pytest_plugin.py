"""pytest fixtures that put the pipeline on an emulator once per session.

Loaded by the project's ``conftest.py``. Options:

* ``--aws-backend`` (env ``AWS_BACKEND``): ``auto`` (default), or a backend name.
* ``--aws-endpoint-url`` (env ``AWS_ENDPOINT_URL``): for ``--aws-backend=endpoint``.

Each pytest-xdist worker starts its own embedded emulator (about 0.3 s plus
1.5 s of provisioning), so workers never share state or tear down each
other's stack. On a shared ``endpoint`` every worker deploys its own
suffixed stack and removes only that one.
"""

from __future__ import annotations

import atexit
import os
import re
import time
import uuid
from collections.abc import Iterator

import pytest

from .backends import BACKEND_NAMES, Backend, BackendUnavailable, Endpoint, select_backend
from .ingestion import PipelineClient
from .stack import Stack, StackConfig, StackOutputs


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("aws", "CSV pipeline AWS backend")
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


def _selection_summary(config: pytest.Config) -> str:
    name = config.getoption("--aws-backend")
    try:
        selection = select_backend(name, endpoint_url=config.getoption("--aws-endpoint-url"))
    except BackendUnavailable as exc:
        return f"aws backend: {name} (unavailable: {exc})"
    where = (
        selection.backend.url  # type: ignore[attr-defined]
        if selection.backend.name == "endpoint"
        else "own loopback port per worker"
    )
    return f"aws backend: {selection.backend.name} ({selection.reason}); endpoint: {where}"


MARKERS = {
    "e2e": "runs through S3 -> Lambda -> DynamoDB on the selected AWS backend",
    "slow": "long-running; not in the default run (select with -m slow)",
    "container": "needs a Docker engine (container backends)",
}

_STARTED_MS = pytest.StashKey[int]()


def pytest_configure(config: pytest.Config) -> None:
    for name, text in MARKERS.items():
        config.addinivalue_line("markers", f"{name}: {text}")


def pytest_report_header(config: pytest.Config) -> str:
    return _selection_summary(config)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    item.stash[_STARTED_MS] = int(time.time() * 1000) - 1000


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """Attach the Lambda's log lines to a failing test that used the pipeline."""
    outcome = yield
    report = outcome.get_result()
    if report.when != "call" or not report.failed:
        return
    client = getattr(item, "funcargs", {}).get("pipeline")
    if isinstance(client, PipelineClient):
        since = item.stash.get(_STARTED_MS, None)
        lines = client.lambda_log_lines(since_ms=since)
        title = f"Lambda log ({client.config.log_group})"
        text = "\n".join(lines) or "(no log lines)"
        if hasattr(report.longrepr, "addsection"):
            # Part of the failure itself, so JUnit XML carries it too.
            report.longrepr.addsection(title, text)
        else:
            report.sections.append((title, text))


def worker_id(config: pytest.Config) -> str:
    """``gw0``, ``gw1``… under pytest-xdist, ``main`` otherwise."""
    return os.environ.get("PYTEST_XDIST_WORKER", "main")


@pytest.fixture(scope="session")
def aws_backend(pytestconfig: pytest.Config) -> Iterator[Backend]:
    """The started backend of this session (or xdist worker); stopped at the end."""
    try:
        selection = select_backend(
            pytestconfig.getoption("--aws-backend"),
            endpoint_url=pytestconfig.getoption("--aws-endpoint-url"),
        )
        backend = selection.backend
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
def stack_config(aws_backend: Backend, pytestconfig: pytest.Config) -> StackConfig:
    """Default names on an emulator of our own; suffixed names on a shared endpoint."""
    if aws_backend.name != "endpoint":
        return StackConfig()
    suffix = re.sub(r"[^a-z0-9-]", "-", f"{worker_id(pytestconfig)}-{uuid.uuid4().hex[:6]}")
    base = StackConfig()
    return StackConfig(
        bucket=f"{base.bucket}-{suffix}",
        table=f"{base.table}-{suffix}",
        function=f"{base.function}-{suffix}",
        role=f"{base.role}-{suffix}",
    )


@pytest.fixture(scope="session")
def deployed_stack(
    aws_backend: Backend, aws_endpoint: Endpoint, stack_config: StackConfig
) -> Iterator[StackOutputs]:
    """The pipeline, deployed once per session (per worker under xdist)."""
    stack = Stack(aws_endpoint, stack_config)
    outputs = stack.deploy()
    yield outputs
    if aws_backend.name == "endpoint":
        # Someone else's emulator: leave it as we found it.
        stack.destroy()


@pytest.fixture(scope="session")
def pipeline(deployed_stack: StackOutputs, aws_endpoint: Endpoint, stack_config: StackConfig) -> PipelineClient:
    """Upload / wait / read back against the deployed stack."""
    return PipelineClient(aws_endpoint, stack_config)


@pytest.fixture
def unique_key(request: pytest.FixtureRequest) -> str:
    """An object key no other test (or worker) uses: ``tests/<test>-<random>.csv``."""
    name = re.sub(r"[^A-Za-z0-9_-]", "-", request.node.name)[:60]
    return f"tests/{name}-{uuid.uuid4().hex[:10]}.csv"
