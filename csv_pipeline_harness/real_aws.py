"""What the pytest plugin does differently on ``--csv-pipeline-backend=aws`` (real AWS).

* the opt-in is the ``allow-real-aws`` setting (``--csv-pipeline-allow-real-aws``,
  env ``CSV_PIPELINE_ALLOW_REAL_AWS=1`` or ini ``csv_pipeline_allow_real_aws``);
* :func:`configure`: before anything is created, asks STS whose credentials
  these are; without the opt-in the run stops with a usage error naming the
  account, the region and the cost of a run. Missing credentials stop it too,
  naming what to set.
* :func:`stack_suffix`: the suffix of every name the session deploys, unique
  per run and per xdist worker (``<run id>-<worker>``), so two runs in one
  account never meet; the header prints it.
* :func:`new_stack`: a *fresh* stack (it adopts nothing and removes only what
  it created), tracked by the backend so ``stop`` removes it even when the
  session is interrupted.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from typing import Any

import pytest

from csv_pipeline_harness import options, profiles
from csv_pipeline_harness.provisioning.backends import (
    Backend,
    BackendUnavailable,
    Endpoint,
    RealAwsBackend,
)
from csv_pipeline_harness.provisioning.backends.aws import Identity, identify, refusal
from csv_pipeline_harness.provisioning.stack import Stack, StackConfig

ALLOW_OPTION = "--csv-pipeline-allow-real-aws"
#: The canary's default on AWS: a first invocation there waits for a cold
#: start and the S3 notification, seconds each, sometimes tens of seconds.
CANARY_TIMEOUT_S = 120.0

#: What one run of the contract suite (``csv_pipeline_harness.contract``,
#: ``csv-pipeline-dev`` profile, one stack) costs, in US dollars at us-east-1
#: on-demand prices (2025), free tier not counted. The suite uploads about 170
#: files (50 documents, 25 re-upload pairs, 50 defective documents, about 20
#: example tests, three 10,000-row files) plus one canary per stack; the
#: figures are rounded up generously:
#:
#: * Lambda: 500 invocations (retries and hand-ons included) x $0.20 / 1M =
#:   $0.0001; 500 x 1 s average x 0.5 GB = 250 GB-s x $0.0000166667 = $0.0042
#: * DynamoDB on demand: 40,000 write units (34,000 rows, 30,000 of them from
#:   the 10,000-row files, plus manifests, deletes and checkpoints; each item
#:   under 1 KB) x $0.625 / 1M = $0.025; 20,000 read units x $0.125 / 1M =
#:   $0.0025
#: * S3: 1,000 PUT/LIST requests x $0.005 / 1,000 = $0.005; 2,000 GET/HEAD x
#:   $0.0004 / 1,000 = $0.0008; storage for minutes: nothing measurable
#: * SQS: under 100 requests x $0.40 / 1M: nothing measurable
#: * CloudWatch Logs: 5 MB ingested x $0.50 / GB = $0.0025
#:
#: Total about $0.04. Each extra xdist worker deploys one more stack (the
#: create and delete calls are free) and splits, not repeats, the tests.
#: Another profile scales the examples, and so the cost, by its budget over
#: the dev profile's (:func:`cost_estimate`).
DEV_RUN_COST_USD = 0.04


def cost_estimate() -> str:
    """The cost of one contract run per profile, scaled from :data:`DEV_RUN_COST_USD`."""
    budgets = profiles.PROFILES
    dev = budgets[f"{profiles.PREFIX}dev"]
    others = ", ".join(
        f"{name} {examples / dev:g}x (about ${DEV_RUN_COST_USD * examples / dev:.2f})"
        for name, examples in budgets.items()
        if examples != dev
    )
    return (
        f"about ${DEV_RUN_COST_USD:.2f} for the contract suite with the {profiles.PREFIX}dev "
        "profile: DynamoDB on-demand writes ~40,000 units = $0.025, Lambda 500 requests and "
        "~250 GB-s = $0.004, S3 ~3,000 requests = $0.006, CloudWatch Logs ~5 MB = $0.003, "
        f"SQS < $0.001 (us-east-1 list prices, free tier not counted); {others}"
    )


_IDENTITY = pytest.StashKey[Identity]()
_RUN_ID = pytest.StashKey[str]()


def chosen(config: pytest.Config) -> bool:
    return bool(options.value(config, "backend") == RealAwsBackend.name)


def configure(config: pytest.Config) -> None:
    """Refuse an unconfirmed real-AWS run before anything is created; fix the run id."""
    if not chosen(config) or config.getoption("help") or config.getoption("version"):
        return
    try:
        identity = identify()
        opted_in = bool(options.value(config, "allow-real-aws"))
    except BackendUnavailable as exc:
        raise pytest.UsageError(str(exc)) from None
    if not opted_in:
        raise pytest.UsageError(refusal(identity, ALLOW_OPTION, cost_estimate()))
    config.stash[_IDENTITY] = identity
    config.stash[_RUN_ID] = _run_id(config)


def _run_id(config: pytest.Config) -> str:
    """One id per run, shared by its xdist workers (xdist's ``testrunuid``)."""
    workerinput = getattr(config, "workerinput", None)
    if workerinput is not None:
        return str(workerinput["testrunuid"])[:8]
    run_id = getattr(config.option, "testrunuid", None)
    if run_id is None:
        run_id = uuid.uuid4().hex
        if hasattr(config.option, "testrunuid"):
            config.option.testrunuid = run_id  # xdist hands this one to its workers
    return str(run_id)[:8]


def stack_suffix(config: pytest.Config) -> str:
    workerinput: dict[str, Any] = getattr(config, "workerinput", {})
    worker = str(workerinput.get("workerid", "main"))
    return re.sub(r"[^a-z0-9-]", "-", f"{config.stash[_RUN_ID]}-{worker}")


def header(config: pytest.Config) -> str:
    """Where the run goes: account, region and the suffix of the stack's names."""
    identity = config.stash.get(_IDENTITY, None)
    if identity is None:
        return "real AWS (not confirmed)"
    suffix = stack_suffix(config)
    if int(config.getoption("numprocesses", 0) or 0) > 0:
        suffix = f"{config.stash[_RUN_ID]}-gw<N>"
    return f"real AWS, account {identity.account}, region {identity.region}, stack suffix {suffix}"


def canary_default(config: pytest.Config, default: float) -> float:
    return CANARY_TIMEOUT_S if chosen(config) else default


def new_stack(
    backend: Backend | None,
    endpoint: Endpoint,
    config: StackConfig,
    extra_files: Mapping[str, str | bytes] | None = None,
) -> Stack:
    """A stack for ``endpoint``: fresh and tracked by ``backend`` when that is real AWS."""
    if isinstance(backend, RealAwsBackend):
        stack = Stack(endpoint, config, extra_files=extra_files, fresh=True)
        backend.track(stack)
        return stack
    return Stack(endpoint, config, extra_files=extra_files)
