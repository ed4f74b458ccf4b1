"""``--csv-pipeline-backend=aws``: real AWS, with the embedded emulator standing in for it.

boto3 honours ``AWS_ENDPOINT_URL``, so a pytest run in a subprocess whose
environment points there (with dummy credentials) goes through exactly the
code a run on AWS does: STS for the account, a fresh suffixed stack, its
removal on every way out. What each test checks is the endpoint itself: an
inventory of its buckets (with their notifications), tables, functions (with
their failure destinations), roles, queues and log groups, taken before and
after the run.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError
from processes import spawned

from csv_pipeline_harness.provisioning.backends import Endpoint, MinistackBackend
from csv_pipeline_harness.provisioning.backends.aws import ALLOW_ENV
from csv_pipeline_harness.provisioning.stack import (
    Stack,
    StackConfig,
    retry_while,
    role_not_assumable_yet,
)

#: A run's stack names end with ``-<8 hex digits of the run id>-main`` (no xdist).
SUFFIX = r"-[0-9a-f]{8}-main"

PASSING = """
import re

def test_ingest(pipeline, unique_key):
    cfg = pipeline.config
    for name in (cfg.bucket, cfg.table, cfg.function, cfg.role, cfg.failed_events_queue):
        assert re.search(r"-[0-9a-f]{8}-main", name), name
    assert pipeline.ingest(unique_key, b"a\\n1\\n").status == "COMPLETE"
"""

FAILING = """
def test_wrong_expectation(pipeline, unique_key):
    assert pipeline.ingest(unique_key, b"a\\n1\\n").rows == []
"""

#: A test that waits for a manifest that never comes, saying so first.
WAITING = """
def test_waits(pipeline):
    print("WAITING", flush=True)
    pipeline.wait_for_manifest("never-uploaded.csv", '"none"', timeout=300)
"""


def inventory(endpoint: Endpoint) -> dict[str, Any]:
    """Everything a stack can leave on the endpoint, by kind."""
    s3, lambda_ = endpoint.client("s3"), endpoint.client("lambda")
    buckets = sorted(b["Name"] for b in s3.list_buckets()["Buckets"])
    functions = sorted(f["FunctionName"] for f in lambda_.list_functions()["Functions"])
    return {
        "buckets": buckets,
        "notifications": {
            b: s3.get_bucket_notification_configuration(Bucket=b).get(
                "LambdaFunctionConfigurations", []
            )
            for b in buckets
        },
        "tables": sorted(endpoint.client("dynamodb").list_tables()["TableNames"]),
        "functions": functions,
        "failure destinations": {f: _event_invoke_config(lambda_, f) for f in functions},
        "event source mappings": lambda_.list_event_source_mappings()["EventSourceMappings"],
        "roles": sorted(r["RoleName"] for r in endpoint.client("iam").list_roles()["Roles"]),
        "queues": sorted(endpoint.client("sqs").list_queues().get("QueueUrls", [])),
        "log groups": sorted(
            g["logGroupName"] for g in endpoint.client("logs").describe_log_groups()["logGroups"]
        ),
    }


def _event_invoke_config(lambda_: Any, function: str) -> Any:
    try:
        config = lambda_.get_function_event_invoke_config(FunctionName=function)
    except ClientError:
        return None
    return config.get("DestinationConfig")


@pytest.fixture(scope="module")
def endpoint() -> Iterator[Endpoint]:
    with MinistackBackend() as started:
        yield started


@pytest.fixture
def stands_in_for_aws(endpoint: Endpoint, monkeypatch: pytest.MonkeyPatch) -> Endpoint:
    """The environment of a run on AWS, with the emulator behind ``AWS_ENDPOINT_URL``."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", str(endpoint.url))
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    monkeypatch.setenv("AWS_DEFAULT_REGION", endpoint.region)
    monkeypatch.setenv("CSV_PIPELINE_BACKEND", "aws")
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_REGION", ALLOW_ENV):
        monkeypatch.delenv(name, raising=False)
    return endpoint


def run_pytest(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest_subprocess("-n", "0", "-p", "no:cacheprovider", *args, timeout=240)


@pytest.mark.harness
@pytest.mark.e2e
def test_without_the_opt_in_it_refuses_naming_account_region_and_cost(
    pytester: pytest.Pytester, stands_in_for_aws: Endpoint
) -> None:
    before = inventory(stands_in_for_aws)
    pytester.makepyfile(PASSING)
    result = run_pytest(pytester)
    assert result.ret == pytest.ExitCode.USAGE_ERROR, result.stdout.str()
    result.stderr.fnmatch_lines(
        [
            "ERROR: the aws backend deploys to real AWS: account 000000000000 (*), "
            "region us-east-1.*Expected cost: about $0.04*DynamoDB on-demand writes*"
            "Lambda*S3*CloudWatch Logs*SQS*Nothing has been created. "
            f"To go ahead pass --csv-pipeline-allow-real-aws or set {ALLOW_ENV}=1."
        ]
    )
    assert inventory(stands_in_for_aws) == before


@pytest.mark.harness
@pytest.mark.e2e
def test_with_the_opt_in_a_suffixed_stack_runs_and_is_removed(
    pytester: pytest.Pytester, stands_in_for_aws: Endpoint, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = inventory(stands_in_for_aws)
    monkeypatch.setenv(ALLOW_ENV, "1")
    pytester.makepyfile(PASSING)
    result = run_pytest(pytester)
    result.assert_outcomes(passed=1)
    result.stdout.re_match_lines(
        [
            rf"csv-pipeline backend: aws .*real AWS, account 000000000000, region us-east-1, "
            rf"stack suffix {SUFFIX[1:]}$"
        ]
    )
    assert inventory(stands_in_for_aws) == before


@pytest.mark.harness
@pytest.mark.e2e
def test_a_failing_test_leaves_nothing_behind(
    pytester: pytest.Pytester, stands_in_for_aws: Endpoint
) -> None:
    before = inventory(stands_in_for_aws)
    pytester.makepyfile(FAILING)
    result = run_pytest(pytester, "--csv-pipeline-allow-real-aws")
    result.assert_outcomes(failed=1)
    result.stdout.re_match_lines([rf".*Lambda log \(/aws/lambda/csv-processor{SUFFIX}\).*"])
    assert inventory(stands_in_for_aws) == before


@pytest.mark.harness
@pytest.mark.e2e
def test_what_the_run_did_not_create_is_left_untouched(
    pytester: pytest.Pytester, stands_in_for_aws: Endpoint
) -> None:
    """Another run's stack stays, even when this run's deploy collides with one of its names.

    The conftest makes the session's table name that of the other stack: the
    deploy creates its bucket, stops at the taken table name with an error,
    and the end of the session removes the bucket it made, nothing else.
    """
    other = StackConfig(
        bucket="csv-upload-bucket-0th3r000-gw0",
        table="csv-data-0th3r000-gw0",
        function="csv-processor-0th3r000-gw0",
        role="csv-processor-role-0th3r000-gw0",
    )
    other_stack = Stack(stands_in_for_aws, other)
    other_stack.deploy()
    try:
        before = inventory(stands_in_for_aws)
        pytester.makeconftest(
            f"""
            import dataclasses
            import pytest

            @pytest.fixture(scope="session")
            def stack_config(stack_config):
                return dataclasses.replace(stack_config, table={other.table!r})
            """
        )
        pytester.makepyfile(
            PASSING
            + "\n\ndef test_alone(aws_endpoint):\n    pass\n"  # the backend starts either way
        )
        result = run_pytest(pytester, "--csv-pipeline-allow-real-aws")
        result.assert_outcomes(passed=1, errors=1)
        result.stdout.fnmatch_lines([f"*ResourceExists: table {other.table} already exists*"])
        assert inventory(stands_in_for_aws) == before
        assert len(other_stack.remaining()) == 5, other_stack.remaining()
    finally:
        other_stack.destroy()


@pytest.mark.harness
@pytest.mark.e2e
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=lambda s: s.name)
def test_a_signal_while_a_test_waits_leaves_nothing_behind(
    pytester: pytest.Pytester, stands_in_for_aws: Endpoint, signum: signal.Signals
) -> None:
    before = inventory(stands_in_for_aws)
    test_file = pytester.makepyfile(WAITING)
    command = [sys.executable, "-m", "pytest", "-n", "0", "-p", "no:cacheprovider", "-s"]
    with spawned(
        [*command, "--csv-pipeline-allow-real-aws", str(test_file)],
        cwd=str(pytester.path),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    ) as run:
        run.read_until("WAITING", timeout=120)
        during = inventory(stands_in_for_aws)
        created = sorted(set(during["buckets"]) - set(before["buckets"]))
        assert len(created) == 1 and created[0].startswith("csv-upload-bucket-"), during
        run.process.send_signal(signum)
        try:
            status = run.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            pytest.fail(f"pytest still runs 60 s after {signum.name}:\n{''.join(run.lines)}")
        output = run.read_until(None, timeout=10)
        assert status == pytest.ExitCode.INTERRUPTED, output
        assert "KeyboardInterrupt" in output
        assert run.stop() == []
    assert inventory(stands_in_for_aws) == before


# -- without an emulator ---------------------------------------------------------------------


@pytest.mark.harness
def test_missing_credentials_name_what_to_set(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for name in list(os.environ):
        if name.startswith("AWS_") and name != "AWS_DEFAULT_REGION":
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    pytester.makepyfile("def test_nothing():\n    pass\n")
    result = run_pytest(pytester, "--csv-pipeline-backend=aws", "--csv-pipeline-allow-real-aws")
    assert result.ret == pytest.ExitCode.USAGE_ERROR, result.stdout.str()
    result.stderr.fnmatch_lines(
        ["ERROR: the aws backend found no AWS credentials: set AWS_PROFILE*AWS_ACCESS_KEY_ID*"]
    )


@pytest.mark.harness
@pytest.mark.e2e
def test_an_opt_in_value_that_is_neither_yes_nor_no_is_refused(
    pytester: pytest.Pytester, stands_in_for_aws: Endpoint, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ALLOW_ENV, "maybe")
    pytester.makepyfile("def test_nothing():\n    pass\n")
    result = run_pytest(pytester)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        [f"ERROR: env {ALLOW_ENV}: 'maybe' is not a switch; use on or off*"]
    )


def _lambda_error(message: str) -> ClientError:
    return ClientError(
        {"Error": {"Code": "InvalidParameterValueException", "Message": message}},
        "CreateFunction",
    )


#: What Lambda answers while a new role has not reached it yet.
NOT_ASSUMABLE = "The role defined for the function cannot be assumed by Lambda."


def test_a_role_lambda_cannot_assume_yet_is_retried_with_growing_bounded_delays() -> None:
    clock = [0.0]
    delays: list[float] = []

    def sleep(seconds: float) -> None:
        delays.append(seconds)
        clock[0] += seconds

    answers: list[Any] = [_lambda_error(NOT_ASSUMABLE)] * 3 + [{"FunctionArn": "arn"}]

    def create() -> Any:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    assert retry_while(
        create, role_not_assumable_yet, within=90, sleep=sleep, clock=lambda: clock[0]
    ) == {"FunctionArn": "arn"}
    assert delays == [1, 2, 4]

    delays.clear()
    never = _lambda_error(NOT_ASSUMABLE)
    with pytest.raises(ClientError, match="cannot be assumed"):
        retry_while(
            lambda: (_ for _ in ()).throw(never),
            role_not_assumable_yet,
            within=30,
            sleep=sleep,
            clock=lambda: clock[0],
        )
    assert delays == [1, 2, 4, 8, 8] and sum(delays) <= 30

    delays.clear()
    other = _lambda_error("Unzipped size must be smaller than 262144000 bytes")
    with pytest.raises(ClientError, match="Unzipped size"):
        retry_while(
            lambda: (_ for _ in ()).throw(other),
            role_not_assumable_yet,
            within=90,
            sleep=sleep,
            clock=lambda: clock[0],
        )
    assert delays == []


def test_the_cost_of_each_profile_is_derived_from_its_budget(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from csv_pipeline_harness import profiles, real_aws

    monkeypatch.setitem(profiles.PROFILES, "csv-pipeline-ci", 100)  # 4x the dev profile's 25
    text = real_aws.cost_estimate()
    assert "csv-pipeline-ci 4x (about $0.16)" in text
    assert "csv-pipeline-thorough 40x (about $1.60)" in text
