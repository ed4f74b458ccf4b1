"""pytest fixtures that put a CSV pipeline on an emulator (or AWS) once per session.

Registered as the ``csv_pipeline_harness`` plugin through the package's
``pytest11`` entry point: installing the package is enough, no conftest line
(with ``PYTEST_DISABLE_PLUGIN_AUTOLOAD`` set, ``-p csv_pipeline_harness``
loads it).

**Inert until asked.** In a session that requests none of its fixtures and
sets none of its options, the plugin changes nothing: the same tests are
selected, Hypothesis keeps its settings and profiles, the report header has
no line of ours and no backend (Docker included) is probed. Importing it
imports only pytest and :mod:`.options`; boto3, the backends and the client
are imported when a fixture first needs them. What it does when asked:

* options: see :mod:`.options` (``--csv-pipeline-*``, ``CSV_PIPELINE_*``,
  ``csv_pipeline_*`` ini keys; command line > environment > ini > default);
* markers, all namespaced: ``csv_pipeline_e2e`` and ``csv_pipeline_contract``
  on the tests this package ships, ``csv_pipeline_slow`` on the long ones,
  which run only when ``-m`` names ``csv_pipeline_slow``;
* with ``lambda-source`` set, a test that uses the harness's fixtures runs
  only if marked ``csv_pipeline_contract`` (the others check this package's
  own Lambda); a test that uses none of them is left alone;
* Hypothesis profiles ``csv-pipeline-dev``, ``csv-pipeline-ci``,
  ``csv-pipeline-thorough`` are registered when ``--hypothesis-profile``
  names one of them, never loaded unless so named (:mod:`.profiles`);
* the report header names the backend, the Lambda under test and realism
  mode in a session that sets one of the options.

Fixtures: ``aws_backend`` (started once per session; under xdist the
embedded emulator once per worker, a container once per run, shared by the
workers, each deploying its own suffixed stack),
``aws_endpoint``, ``stack_config``, ``deployed_stack``, ``pipeline`` (a
:class:`~.client.PipelineClient` once the canary proved the wiring) and
``unique_key``. :func:`.stacks.stack_fixture` makes fixtures that deploy a
stack of their own.

While a backend of ours runs, SIGTERM (what ``timeout``, CI runners and job
cancellation send) ends the session as Ctrl-C does, so every finalizer runs;
the previous handler is put back when the backend stops. An embedded
emulator also ends when the process that started it dies, SIGKILL included.
"""

from __future__ import annotations

import os
import re
import signal
import sys
import threading
import time
import uuid
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from . import options

if TYPE_CHECKING:
    from _pytest.fixtures import FixtureRequest

    from .client import PipelineClient
    from .provisioning.backends import Backend, Endpoint, Selection
    from .provisioning.stack import StackConfig, StackOutputs

#: The markers this package's own tests carry; registered so ``--strict-markers`` accepts them.
MARKERS = {
    "csv_pipeline_e2e": "runs through S3 -> Lambda -> DynamoDB on the harness's backend",
    "csv_pipeline_contract": "checks the data contract only, so it also judges a "
    "--csv-pipeline-lambda-source Lambda",
    "csv_pipeline_slow": "long-running harness test; runs only when -m names csv_pipeline_slow",
}
SLOW = "csv_pipeline_slow"
CONTRACT = "csv_pipeline_contract"

#: The fixtures that make a test one of the harness's.
FIXTURES = frozenset({"aws_backend", "aws_endpoint", "stack_config", "deployed_stack", "pipeline"})


def pytest_addoption(parser: pytest.Parser) -> None:
    options.register(parser)


@dataclass(frozen=True)
class LambdaUnderTest:
    """Another implementation of the data contract, deployed instead of ``csv_pipeline``."""

    source: Path
    handler: str

    def describe(self) -> str:
        return f"{self.handler} from {self.source}"


_LAMBDA = pytest.StashKey["LambdaUnderTest | None"]()


def lambda_under_test(config: pytest.Config) -> LambdaUnderTest | None:
    """The Lambda the ``lambda-source`` / ``lambda-handler`` settings name, or ``None`` for ours.

    Checked before anything starts: a source without a handler (or the
    reverse), a missing directory or a handler whose module file is not in it
    is a :class:`pytest.UsageError`. A relative ini path is relative to the
    ini file; an option's or env's to the current directory.
    """
    if _LAMBDA in config.stash:
        return config.stash[_LAMBDA]
    source = options.resolve(config, "lambda-source")
    handler = options.resolve(config, "lambda-handler")
    chosen: LambdaUnderTest | None = None
    if source.given or handler.given:
        if not (source.given and handler.given):
            where, other = (
                (source.source, "lambda-handler")
                if source.given
                else (handler.source, "lambda-source")
            )
            raise pytest.UsageError(
                f"{where} needs {options.FLAG_PREFIX}{other} too (or its env/ini setting)"
            )
        from .provisioning.packaging import LambdaSourceError, handler_file

        path = Path(source.value)
        try:
            handler_file(path, str(handler.value))
        except LambdaSourceError as exc:
            raise pytest.UsageError(f"{source.source} / {handler.source}: {exc}") from None
        chosen = LambdaUnderTest(path.resolve(), str(handler.value))
    config.stash[_LAMBDA] = chosen
    return chosen


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    for name, text in MARKERS.items():
        config.addinivalue_line("markers", f"{name}: {text}")
    # Bad values stop the run before anything starts (real AWS without the opt-in too).
    for option in options.OPTIONS:
        options.resolve(config, option.name)
    options.remember(config, "shrink-seconds")
    lambda_under_test(config)
    if options.value(config, "backend") == "aws":
        from . import real_aws

        real_aws.configure(config)
    profile = config.getoption("hypothesis_profile", None)
    if isinstance(profile, str) and profile.startswith("csv-pipeline-"):
        # Before Hypothesis' own pytest_configure loads it.
        from . import profiles

        profiles.register()


def _select(config: pytest.Config) -> Selection:
    from .provisioning.backends import select_backend

    return select_backend(
        options.value(config, "backend"),
        endpoint_url=options.value(config, "endpoint-url"),
        localstack_image=options.value(config, "localstack-image"),
        ministack_image=options.value(config, "ministack-image"),
    )


def _selection_summary(config: pytest.Config) -> str:
    from .provisioning.backends import BackendUnavailable, ExistingEndpointBackend

    name = options.value(config, "backend")
    try:
        selection = _select(config)
    except BackendUnavailable as exc:
        return f"csv-pipeline backend: {name} (unavailable: {exc})"
    if isinstance(selection.backend, ExistingEndpointBackend):
        where = selection.backend.url
    elif name == "aws":
        from . import real_aws

        where = real_aws.header(config)
    else:
        where = "one per worker" if selection.backend.name == "ministack" else "one per run"
    return f"csv-pipeline backend: {selection.backend.name} ({selection.reason}); endpoint: {where}"


def _lambda_summary(config: pytest.Config) -> str:
    chosen = lambda_under_test(config)
    if chosen is None:
        from .provisioning.packaging import HANDLER, lambda_source_dir

        return f"csv-pipeline lambda: {HANDLER} from {lambda_source_dir()} (this package)"
    return (
        f"csv-pipeline lambda: {chosen.describe()}; tests using the harness's fixtures run "
        f"only when marked {CONTRACT}"
    )


def pytest_report_header(config: pytest.Config) -> list[str]:
    """Our lines only in a session that sets one of our options."""
    if not options.given(config):
        return []
    lines = [_selection_summary(config), _lambda_summary(config)]
    from . import realism_mode

    if realism := realism_mode.header(config):
        lines.append(realism)
    return lines


def uses_harness(item: pytest.Item) -> bool:
    """Whether ``item`` asks for one of the harness's fixtures (directly or through another)."""
    return not FIXTURES.isdisjoint(getattr(item, "fixturenames", ()))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Leave out our slow tests unless ``-m`` names them, and our Lambda's tests for another one.

    Only tests that carry our markers or use our fixtures are ever left out.
    """
    named = config.getoption("markexpr", "") or ""
    run_slow = SLOW in named
    foreign = lambda_under_test(config) is not None
    left_out = [
        item
        for item in items
        if (not run_slow and item.get_closest_marker(SLOW) is not None)
        or (foreign and uses_harness(item) and item.get_closest_marker(CONTRACT) is None)
    ]
    if left_out:
        kept = set(map(id, left_out))
        items[:] = [item for item in items if id(item) not in kept]
        config.hook.pytest_deselected(items=left_out)


_STARTED_MS = pytest.StashKey[int]()


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    if uses_harness(item) or "csv_pipeline_harness.client" in sys.modules:
        # A second early for clock skew (PipelineClient.log_mark).
        item.stash[_STARTED_MS] = int(time.time() * 1000) - 1000


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Attach the Lambda's log lines to a failing test that used a pipeline.

    ``pipeline`` or any fixture giving a :class:`PipelineClient` (such as
    the stacks of :func:`.stacks.stack_fixture`): one section per function.
    """
    report = yield
    client_module = sys.modules.get("csv_pipeline_harness.client")
    if report.when != "call" or not report.failed or client_module is None:
        return report
    from _pytest._code.code import ExceptionRepr

    clients: dict[tuple[str | None, str], PipelineClient] = {}
    for value in getattr(item, "funcargs", {}).values():
        if isinstance(value, client_module.PipelineClient):
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


def worker_id(config: pytest.Config) -> str:
    """``gw0``, ``gw1``… under pytest-xdist, ``main`` otherwise.

    Read from the session, not from ``PYTEST_XDIST_WORKER``: a pytest run
    started from inside an xdist worker inherits that variable.
    """
    workerinput: dict[str, Any] = getattr(config, "workerinput", {})
    return str(workerinput.get("workerid", "main"))


class _SigtermAsInterrupt:
    """While installed, SIGTERM raises KeyboardInterrupt in the main thread, as Ctrl-C does.

    Installed only where SIGTERM still has its default action (a host that
    set its own handler keeps it) and put back by :meth:`restore`.
    """

    def __init__(self) -> None:
        self._previous: Any = None
        self._installed = False

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
            return
        self._previous = signal.signal(signal.SIGTERM, self._interrupt)
        self._installed = True

    @staticmethod
    def _interrupt(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(f"{signal.Signals(signum).name} received")

    def restore(self) -> None:
        if self._installed and signal.getsignal(signal.SIGTERM) == self._interrupt:
            signal.signal(signal.SIGTERM, self._previous)
        self._installed = False


@pytest.fixture(scope="session")
def aws_backend(pytestconfig: pytest.Config) -> Iterator[Backend]:
    """The started backend of this session (or xdist worker); stopped at the end."""
    import atexit

    from .provisioning.backends import BackendUnavailable

    sigterm = _SigtermAsInterrupt()
    try:
        backend = _select(pytestconfig).backend
        backend = _shared_under_xdist(pytestconfig, backend)
        atexit.register(backend.stop)  # also on an interrupted session
        sigterm.install()
        backend.start()
    except BackendUnavailable as exc:
        sigterm.restore()
        pytest.fail(f"AWS backend unavailable: {exc}", pytrace=False)
    try:
        yield backend
    finally:
        try:
            backend.stop()
        finally:
            sigterm.restore()


def _shared_under_xdist(config: pytest.Config, backend: Backend) -> Backend:
    """A container backend once per run under pytest-xdist; any other backend as it is."""
    from . import shared_backend

    controller = shared_backend.controller_pid(config)
    if controller is None or not hasattr(backend, "detach"):
        return backend
    return shared_backend.SharedContainerBackend(backend, controller)


def pytest_sessionfinish(session: pytest.Session) -> None:
    """In an xdist run's controller: remove the container its workers shared, if any."""
    if getattr(session.config, "workerinput", None) is not None:
        return
    from .provisioning.processes import run_directory

    if run_directory(os.getpid()).exists():
        from . import shared_backend

        shared_backend.finish(os.getpid())


@pytest.fixture(scope="session")
def aws_endpoint(aws_backend: Backend) -> Endpoint:
    return aws_backend.endpoint


#: Backends whose endpoint others may use too: the session deploys suffixed
#: names there and removes its stack at the end.
SHARED_BACKENDS = ("endpoint", "aws")


@pytest.fixture(scope="session")
def stack_config(pytestconfig: pytest.Config, aws_backend: Backend) -> StackConfig:
    """Default names on an emulator of our own; suffixed names on a shared endpoint.

    The function's code is this package's, or the ``lambda-source`` one.
    """
    from dataclasses import replace

    from .provisioning.stack import StackConfig

    chosen = lambda_under_test(pytestconfig)
    base = StackConfig()
    if chosen is not None:
        base = replace(base, handler=chosen.handler, lambda_source=chosen.source)
    if aws_backend.name not in SHARED_BACKENDS and not getattr(aws_backend, "shared", False):
        return base
    if aws_backend.name == "aws":
        from . import real_aws

        suffix = real_aws.stack_suffix(pytestconfig)
    else:
        suffix = re.sub(r"[^a-z0-9-]", "-", f"{worker_id(pytestconfig)}-{uuid.uuid4().hex[:6]}")
    return replace(
        base,
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
    from . import real_aws, realism_mode

    config, files = stack_config, realism_mode.NO_FILES
    if realism_mode.enabled(pytestconfig):
        config, files = realism_mode.wrap(stack_config)
    stack = real_aws.new_stack(aws_backend, aws_endpoint, config, extra_files=files)
    outputs = stack.deploy()
    yield outputs
    if aws_backend.name == "endpoint" or getattr(aws_backend, "shared", False):
        # An emulator others use too: leave it as we found it. (On real AWS
        # the backend's stop removes the stack, with signals held off meanwhile.)
        stack.destroy()


@pytest.fixture(scope="session")
def pipeline(
    request: FixtureRequest,
    deployed_stack: StackOutputs,
    aws_endpoint: Endpoint,
    stack_config: StackConfig,
) -> PipelineClient:
    """Upload / wait / read back against the deployed stack, once its wiring is proven.

    The canary runs once per session (per xdist worker). When it fails, this
    fixture errors with the facts to check and the session stops after the
    test that asked for it: every other test would only have timed out.
    """
    from .client import PipelineClient
    from .stacks import run_canary

    client = PipelineClient(aws_endpoint, stack_config)
    failure = run_canary(request, client, worker_id(request.config))
    if failure is not None:
        request.session.shouldfail = f"pipeline canary failed: {failure.summary}"
        pytest.fail(str(failure), pytrace=False)
    return client


@pytest.fixture
def unique_key(request: FixtureRequest) -> str:
    """An object key no other test (or worker) uses: ``tests/<test>-<random>.csv``."""
    name = re.sub(r"[^A-Za-z0-9_-]", "-", request.node.name)[:60]
    return f"tests/{name}-{uuid.uuid4().hex[:10]}.csv"
