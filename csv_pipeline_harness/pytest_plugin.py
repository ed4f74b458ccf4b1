"""pytest fixtures that put the pipeline on an emulator once per session.

Registered as the ``csv_pipeline_harness`` plugin through the package's
``pytest11`` entry point: installing the package is enough, no conftest line
(with ``PYTEST_DISABLE_PLUGIN_AUTOLOAD`` set, ``-p csv_pipeline_harness``
loads it). Options, all under one heading in ``pytest --help``:

* ``--aws-backend`` (env ``AWS_BACKEND``): ``auto`` (default), or a backend name;
  ``aws`` is real AWS and needs ``--aws-allow-real`` (see :mod:`csv_pipeline_harness.real_aws`).
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
* ``--lambda-source DIR`` and ``--lambda-handler module.function`` (env
  ``CSV_PIPELINE_LAMBDA_SOURCE`` / ``CSV_PIPELINE_LAMBDA_HANDLER``, ini
  ``lambda_source`` / ``lambda_handler``): deploy another implementation of
  the data contract instead of this package's Lambda. Only tests marked
  ``contract`` then run: the others check this implementation's internals.
* ``--aws-realism`` (env ``CSV_PIPELINE_AWS_REALISM=1``, ini ``aws_realism``):
  the session's function runs inside :mod:`csv_pipeline_harness.realism`, which injects
  what AWS does and the emulator does not (see :mod:`csv_pipeline_harness.realism_mode`).

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
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, Literal

import pytest
from _pytest._code.code import ExceptionRepr

from csv_pipeline_harness.provisioning.backends import (
    BACKEND_NAMES,
    REAL_AWS,
    Backend,
    BackendUnavailable,
    Endpoint,
    ExistingEndpointBackend,
    MinistackBackend,
    Selection,
    select_backend,
)
from csv_pipeline_harness.provisioning.packaging import (
    HANDLER,
    LambdaSourceError,
    handler_file,
    lambda_source_dir,
)
from csv_pipeline_harness.provisioning.stack import Stack, StackConfig, StackOutputs

from . import real_aws, realism_mode
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
LAMBDA_SOURCE_ENV = "CSV_PIPELINE_LAMBDA_SOURCE"
LAMBDA_HANDLER_ENV = "CSV_PIPELINE_LAMBDA_HANDLER"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup(
        "csv-pipeline-harness", "csv-pipeline-harness (S3 -> Lambda -> DynamoDB on an AWS emulator)"
    )
    group.addoption(
        "--aws-backend",
        default=os.environ.get("AWS_BACKEND", "auto"),
        choices=(*BACKEND_NAMES, REAL_AWS),
        help="where the AWS endpoint comes from (env AWS_BACKEND; default: auto); "
        f"{REAL_AWS}: real AWS, with {real_aws.ALLOW_OPTION}",
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
    real_aws.add_options(group)
    group.addoption(
        "--lambda-source",
        default=None,
        metavar="DIR",
        help="deploy the Lambda in DIR (its files at the zip's root, its requirements.txt "
        "installed) instead of this package's; only tests marked contract run "
        f"(env {LAMBDA_SOURCE_ENV}, ini lambda_source)",
    )
    group.addoption(
        "--lambda-handler",
        default=None,
        metavar="MODULE.FUNCTION",
        help="the handler of the --lambda-source Lambda, e.g. handler.lambda_handler "
        f"(env {LAMBDA_HANDLER_ENV}, ini lambda_handler)",
    )
    parser.addini(
        "lambda_source",
        "directory of the Lambda under test, relative to the ini file (see --lambda-source)",
        default="",
    )
    parser.addini(
        "lambda_handler", "handler of the lambda_source Lambda (see --lambda-handler)", default=""
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
    return real_aws.canary_default(config, DEFAULT_CANARY_TIMEOUT)


@dataclass(frozen=True)
class LambdaUnderTest:
    """Another implementation of the data contract, deployed instead of ``csv_pipeline``."""

    source: Path
    handler: str

    def describe(self) -> str:
        return f"{self.handler} from {self.source}"


_LAMBDA = pytest.StashKey["LambdaUnderTest | None"]()


def lambda_under_test(config: pytest.Config) -> LambdaUnderTest | None:
    """The Lambda the options, env or ini name (in that order), or ``None`` for ours.

    Checked before anything starts: a source without a handler (or the
    reverse), a missing directory or a handler whose module file is not in it
    is a :class:`pytest.UsageError`. A relative ini path is relative to the
    ini file; an option's or env's to the current directory.
    """
    if _LAMBDA in config.stash:
        return config.stash[_LAMBDA]
    ini_dir = config.inipath.parent if config.inipath else config.rootpath
    found: dict[str, tuple[str, str]] = {}
    for key, option, env in (
        ("source", "--lambda-source", LAMBDA_SOURCE_ENV),
        ("handler", "--lambda-handler", LAMBDA_HANDLER_ENV),
    ):
        for where, raw in (
            (option, config.getoption(option)),
            (env, os.environ.get(env)),
            (f"ini lambda_{key}", config.getini(f"lambda_{key}")),
        ):
            if raw is not None and str(raw).strip():
                found[key] = (where, str(raw).strip())
                break
    chosen: LambdaUnderTest | None = None
    if found:
        if len(found) < 2:
            ((key, (where, _)),) = found.items()
            other = "--lambda-handler" if key == "source" else "--lambda-source"
            raise pytest.UsageError(f"{where} needs {other} too (or its env/ini setting)")
        source_where, source_raw = found["source"]
        source = Path(source_raw).expanduser()
        if not source.is_absolute():
            base = ini_dir if source_where.startswith("ini") else Path.cwd()
            source = base / source
        handler = found["handler"][1]
        try:
            handler_file(source, handler)
        except LambdaSourceError as exc:
            raise pytest.UsageError(f"{source_where} / {found['handler'][0]}: {exc}") from None
        chosen = LambdaUnderTest(source.resolve(), handler)
    config.stash[_LAMBDA] = chosen
    return chosen


def _lambda_summary(config: pytest.Config) -> str:
    chosen = lambda_under_test(config)
    if chosen is None:
        return f"lambda under test: {HANDLER} from {lambda_source_dir()} (this package)"
    return (
        f"lambda under test: {chosen.describe()}; tests without the contract marker are deselected"
    )


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
    elif real_aws.chosen(config):
        where = real_aws.header(config)
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
    "harness": "drives the harness or the CLI as a user does, in child processes (pytest "
    "sessions, up, demo); not in the default run (-m harness)",
    "contract": "checks the data contract through S3 -> Lambda -> DynamoDB only; "
    "the tests that run against a --lambda-source Lambda",
}

_STARTED_MS = pytest.StashKey[int]()


def pytest_configure(config: pytest.Config) -> None:
    for name, text in MARKERS.items():
        config.addinivalue_line("markers", f"{name}: {text}")
    # Bad values stop the run before anything starts (real AWS without the opt-in too).
    canary_timeout(config)
    lambda_under_test(config)
    real_aws.configure(config)
    realism_mode.enabled(config)  # so does a bad CSV_PIPELINE_AWS_REALISM


def pytest_report_header(config: pytest.Config) -> list[str]:
    lines = [_selection_summary(config), _lambda_summary(config)]
    if profiles is not None:
        lines.append(profiles.header())
    if realism := realism_mode.header(config):
        lines.append(realism)
    return lines


#: Markers whose tests run only when ``-m`` names them (``slow`` and
#: ``harness`` also under the thorough Hypothesis profile).
OPT_IN = ("slow", "install", "harness")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Leave opt-in tests out unless ``-m`` names their marker (or the profile includes them).

    With another Lambda under test, tests without the ``contract`` marker are
    left out too: they check this package's implementation, not the contract.
    """
    named = config.getoption("-m") or ""
    profile = config.getoption("--hypothesis-profile", None) or os.environ.get("HYPOTHESIS_PROFILE")
    left_out_markers = [
        m
        for m in OPT_IN
        if m not in named and not (m in ("slow", "harness") and profile == "thorough")
    ]
    foreign = lambda_under_test(config) is not None
    left_out = [
        item
        for item in items
        if any(item.get_closest_marker(m) for m in left_out_markers)
        or (foreign and item.get_closest_marker("contract") is None)
    ]
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


def worker_id(config: pytest.Config) -> str:
    """``gw0``, ``gw1``… under pytest-xdist, ``main`` otherwise.

    Read from the session, not from ``PYTEST_XDIST_WORKER``: a pytest run
    started from inside an xdist worker inherits that variable.
    """
    workerinput: dict[str, Any] = getattr(config, "workerinput", {})
    return str(workerinput.get("workerid", "main"))


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


#: Backends whose endpoint others may use too: the session deploys suffixed
#: names there and removes its stack at the end.
SHARED_BACKENDS = ("endpoint", REAL_AWS)


@pytest.fixture(scope="session")
def stack_config(pytestconfig: pytest.Config, aws_backend: Backend) -> StackConfig:
    """Default names on an emulator of our own; suffixed names on a shared endpoint.

    The function's code is this package's, or the ``--lambda-source`` one.
    """
    chosen = lambda_under_test(pytestconfig)
    base = StackConfig()
    if chosen is not None:
        base = replace(base, handler=chosen.handler, lambda_source=chosen.source)
    if aws_backend.name not in SHARED_BACKENDS:
        return base
    if aws_backend.name == REAL_AWS:
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
    config, files = stack_config, realism_mode.NO_FILES
    if realism_mode.enabled(pytestconfig):
        config, files = realism_mode.wrap(stack_config)
    stack = real_aws.new_stack(aws_backend, aws_endpoint, config, extra_files=files)
    outputs = stack.deploy()
    yield outputs
    if aws_backend.name == "endpoint":
        # Someone else's emulator: leave it as we found it. (On real AWS the
        # backend's stop removes the stack, with signals held off meanwhile.)
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
    failure = _canary(request, client, worker_id(request.config))
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
        backend = request.getfixturevalue("aws_backend") if endpoint == "aws_endpoint" else None
        stack = real_aws.new_stack(backend, where, StackConfig(**{**names, **config}), files)
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
