"""``csv-pipeline`` cannot hurt an account: real AWS opt-in, ownership tags, one-line errors.

Run in-process against an emulator of this module's own (the CLI deploys the
default names, which the session's stack uses too). "Real AWS" is that
emulator standing in through ``AWS_ENDPOINT_URL``, which boto3 follows: the
CLI then acts on "the account of your credentials", as it would on AWS.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import botocore.session
import pytest

import csv_pipeline_harness
from csv_pipeline_harness import cli
from csv_pipeline_harness.provisioning.backends import Endpoint, MinistackBackend
from csv_pipeline_harness.provisioning.stack import OWNER_TAG, Stack, StackConfig

pytestmark = pytest.mark.e2e

CONFIG = StackConfig()


@pytest.fixture(scope="module")
def emulator() -> Iterator[Endpoint]:
    with MinistackBackend() as endpoint:
        yield endpoint


@pytest.fixture
def clean(emulator: Endpoint, monkeypatch: pytest.MonkeyPatch) -> Iterator[Endpoint]:
    """The emulator with nothing of the default stack on it, before and after."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    monkeypatch.setenv("AWS_DEFAULT_REGION", emulator.region)
    for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "CSV_PIPELINE_ALLOW_REAL_AWS"):
        monkeypatch.delenv(name, raising=False)
    Stack(emulator).destroy()
    yield emulator
    Stack(emulator).destroy()
    _remove_untagged(emulator)


def _remove_untagged(endpoint: Endpoint) -> None:
    stack = Stack(endpoint)
    for call in (
        lambda: stack.iam.delete_role(RoleName=CONFIG.role),
        lambda: stack.dynamodb.delete_table(TableName=CONFIG.table),
    ):
        try:
            call()
        except Exception as exc:  # absent: fine
            assert "NoSuchEntity" in str(exc) or "ResourceNotFound" in str(exc), exc


def nothing_deployed(endpoint: Endpoint) -> bool:
    stack = Stack(endpoint)
    return stack.ownership() == {}


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("command", ["deploy", "destroy"])
def test_without_an_endpoint_real_aws_needs_the_opt_in(
    clean: Endpoint,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    command: str,
) -> None:
    Stack(clean).deploy()  # something a refused destroy must leave
    before = Stack(clean).ownership()
    monkeypatch.setenv("AWS_ENDPOINT_URL", clean.url)
    code, out, err = run(capsys, command)
    assert code == cli.EXIT_USAGE, out + err
    assert err.startswith(f"error: {command} without --endpoint-url acts on real AWS: account ")
    assert "000000000000" in err and "Nothing has been changed" in err
    assert "--allow-real-aws" in err and "CSV_PIPELINE_ALLOW_REAL_AWS=1" in err
    assert Stack(clean).ownership() == before


def test_with_the_opt_in_deploy_and_destroy_act_on_the_account(
    clean: Endpoint, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", clean.url)
    code, out, err = run(capsys, "deploy", "--allow-real-aws", "--json")
    assert code == cli.EXIT_OK, err
    assert json.loads(out)["function"] == CONFIG.function
    assert all(why is None for why in Stack(clean).ownership().values())
    monkeypatch.setenv("CSV_PIPELINE_ALLOW_REAL_AWS", "1")
    code, out, err = run(capsys, "destroy")
    assert code == cli.EXIT_OK, err
    assert nothing_deployed(clean)


def test_destroy_removes_only_what_carries_its_tag_and_says_what_it_left(
    clean: Endpoint, capsys: pytest.CaptureFixture[str]
) -> None:
    stack = Stack(clean)
    stack.dynamodb.create_table(
        TableName=CONFIG.table,
        BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[{"AttributeName": "k", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "k", "KeyType": "HASH"}],
    )
    code, out, err = run(capsys, "destroy", "--endpoint-url", clean.url)
    assert code == cli.EXIT_OK, err
    assert f"left alone table {CONFIG.table}: carries no {OWNER_TAG} tag" in out
    assert f"Left alone: 1 resource(s) without this stack's {OWNER_TAG}=" in out
    assert CONFIG.table in stack.dynamodb.list_tables()["TableNames"]


def test_deploy_refuses_to_take_over_what_it_did_not_create(
    clean: Endpoint, capsys: pytest.CaptureFixture[str]
) -> None:
    stack = Stack(clean)
    trust = '{"Version": "2012-10-17", "Statement": []}'
    stack.iam.create_role(RoleName=CONFIG.role, AssumeRolePolicyDocument=trust)
    code, out, err = run(capsys, "deploy", "--endpoint-url", clean.url)
    assert code == cli.EXIT_NOT_OURS, out + err
    assert f"role {CONFIG.role} carries no {OWNER_TAG} tag" in err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert stack.ownership() == {f"role {CONFIG.role}": f"carries no {OWNER_TAG} tag"}


def test_json_goes_to_stdout_and_the_human_text_to_stderr(
    clean: Endpoint, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(capsys, "deploy", "--endpoint-url", clean.url, "--json")
    assert code == cli.EXIT_OK, err
    document = json.loads(out)
    assert document["bucket"] == CONFIG.bucket and document["endpoint_url"] == clean.url
    assert "Deployed stack csv-processor" in err
    code, out, err = run(capsys, "deploy", "--endpoint-url", clean.url)
    assert code == cli.EXIT_OK and out.startswith("Deployed stack csv-processor") and err == ""


def test_an_aws_error_is_one_line_naming_the_call_and_the_code(
    clean: Endpoint, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The emulator answers every call but one; that one answers as AWS does when denied."""
    original = botocore.session.Session.create_client

    def denying_create_bucket(self: Any, *args: Any, **kwargs: Any) -> Any:
        client = original(self, *args, **kwargs)

        def deny(params: Any, **_: Any) -> None:
            from botocore.exceptions import ClientError

            raise ClientError(
                {"Error": {"Code": "AccessDenied", "Message": "Access Denied"}}, "CreateBucket"
            )

        client.meta.events.register("before-call.s3.CreateBucket", deny)
        return client

    monkeypatch.setattr(botocore.session.Session, "create_client", denying_create_bucket)
    code, _, err = run(capsys, "deploy", "--endpoint-url", clean.url)
    assert code == cli.EXIT_AWS
    assert err == "error: AWS call failed: CreateBucket: AccessDenied (Access Denied)\n"


def test_the_program_names_itself_and_its_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out == f"csv-pipeline {csv_pipeline_harness.__version__}\n"
    assert cli.build_parser().format_usage().startswith("usage: csv-pipeline ")
