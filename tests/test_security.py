"""Security: least privilege, a scoped invoke permission, a closed bucket, no secrets.

The policy is checked as a document, read back from the emulator, and —
with the emulator's IAM enforcement switched on (ministack ``AUTH=true``) —
by running the whole pipeline under the function's own role, with a negative
control showing the enforcement is real.
"""

from __future__ import annotations

import io
import json
import os
import re
import uuid
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from processes import run

from csv_pipeline_harness.client import PipelineClient
from csv_pipeline_harness.provisioning.backends import Endpoint, MinistackBackend
from csv_pipeline_harness.provisioning.packaging import build_zip, lambda_source_dir
from csv_pipeline_harness.provisioning.policy import LAMBDA_TRUST_POLICY, function_policy
from csv_pipeline_harness.provisioning.stack import POLICY_NAME, Stack, StackConfig, StackOutputs
from csv_pipeline_harness.stacks import DeployedPipeline, stack_fixture

REPO = Path(__file__).resolve().parents[1]

ARNS = {
    "bucket_arn": "arn:aws:s3:::my-bucket",
    "table_arn": "arn:aws:dynamodb:eu-west-1:123456789012:table/my-table",
    "log_group_arn": "arn:aws:logs:eu-west-1:123456789012:log-group:/aws/lambda/my-fn",
    "function_arn": "arn:aws:lambda:eu-west-1:123456789012:function:my-fn",
    "failed_events_queue_arn": "arn:aws:sqs:eu-west-1:123456789012:my-fn-failed-events",
}

#: Every action the function needs, and why (the handler's calls).
NEEDED_ACTIONS = {
    "s3:GetObject",  # HeadObject and (ranged) GetObject of the uploaded object
    "dynamodb:BatchWriteItem",  # rows, and deletes of rejected / left-over rows
    "dynamodb:PutItem",  # claiming a source, the final manifest
    "dynamodb:UpdateItem",  # checkpoints, lease renewal, hand-over, FAILED
    "dynamodb:GetItem",  # reading the manifest
    "dynamodb:Query",  # finding left-over rows when no bound is recorded
    "lambda:InvokeFunction",  # continuing a file past one invocation's timeout
    "sqs:SendMessage",  # Lambda, as the function, hands over an event that failed every retry
    "logs:CreateLogGroup",
    "logs:CreateLogStream",
    "logs:PutLogEvents",
}

#: What looks like a credential or key material in text.
SECRET_PATTERNS = [
    re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"),  # access key ids
    re.compile(r"(?i)secret_?access_?key\W{1,4}[A-Za-z0-9/+]{40}\b"),  # secret keys
    re.compile(r"(?i)session_?token\W{1,4}[A-Za-z0-9/+=]{100,}"),  # session tokens
    re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
]

#: AWS's own documentation examples, which are not anyone's credentials.
DOCUMENTED_EXAMPLES = {"AKIAIOSFODNN7EXAMPLE"}


def statements(policy: dict[str, Any]) -> list[dict[str, Any]]:
    return list(policy["Statement"])


def as_list(value: str | list[str]) -> list[str]:
    return [value] if isinstance(value, str) else list(value)


# -- the policy as a document ----------------------------------------------------------------


def test_policy_allows_exactly_the_needed_actions_on_the_stacks_own_resources() -> None:
    policy = function_policy(**ARNS)
    actions = [a for s in statements(policy) for a in as_list(s["Action"])]
    assert set(actions) == NEEDED_ACTIONS and len(actions) == len(NEEDED_ACTIONS)
    own = {
        f"{ARNS['bucket_arn']}/*",
        ARNS["table_arn"],
        ARNS["function_arn"],
        ARNS["failed_events_queue_arn"],
        ARNS["log_group_arn"],
        f"{ARNS['log_group_arn']}:*",
    }
    for statement in statements(policy):
        assert statement["Effect"] == "Allow"
        assert "NotAction" not in statement and "NotResource" not in statement
        assert all("*" not in action for action in as_list(statement["Action"])), statement
        resources = as_list(statement["Resource"])
        assert resources and set(resources) <= own, statement
        # No resource is a wildcard beyond the stack's own names.
        assert "*" not in resources and all(r.count("*") <= 1 for r in resources)
        # Each statement's actions concern the service its resources belong to.
        services = {a.split(":")[0] for a in as_list(statement["Action"])}
        assert services == {r.split(":")[2] for r in resources}, statement


def sqs_statements(policy: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        s
        for s in statements(policy)
        if any(a.startswith("sqs:") for a in as_list(s["Action"]))
        or any(r.startswith("arn:aws:sqs:") for r in as_list(s["Resource"]))
    ]


def test_the_only_sqs_permission_is_sending_to_the_failed_events_queue() -> None:
    assert sqs_statements(function_policy(**ARNS)) == [
        {
            "Sid": "SendFailedEvents",
            "Effect": "Allow",
            "Action": ["sqs:SendMessage"],
            "Resource": [ARNS["failed_events_queue_arn"]],
        }
    ]


def test_only_lambda_may_assume_the_role() -> None:
    [statement] = LAMBDA_TRUST_POLICY["Statement"]
    assert statement == {
        "Effect": "Allow",
        "Principal": {"Service": "lambda.amazonaws.com"},
        "Action": "sts:AssumeRole",
    }


# -- read back from the emulator -------------------------------------------------------------


@pytest.mark.e2e
def test_deployed_role_holds_only_that_policy(
    deployed_stack: StackOutputs, aws_endpoint: Endpoint, stack_config: StackConfig
) -> None:
    iam = aws_endpoint.client("iam")
    role = stack_config.role
    document = iam.get_role_policy(RoleName=role, PolicyName=POLICY_NAME)["PolicyDocument"]
    document = json.loads(document) if isinstance(document, str) else document
    account = deployed_stack.table_arn.split(":")[4]
    region = deployed_stack.region
    assert document == function_policy(
        bucket_arn=deployed_stack.bucket_arn,
        table_arn=deployed_stack.table_arn,
        log_group_arn=f"arn:aws:logs:{region}:{account}:log-group:{deployed_stack.log_group}",
        function_arn=deployed_stack.function_arn,
        failed_events_queue_arn=deployed_stack.failed_events_queue_arn,
    )
    # The one queue it may send to is the stack's own, by the ARN SQS gives it.
    sqs = aws_endpoint.client("sqs")
    url = sqs.get_queue_url(QueueName=stack_config.failed_events_queue)["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    [statement] = sqs_statements(document)
    assert statement["Action"] == ["sqs:SendMessage"] and statement["Resource"] == [queue_arn]
    assert iam.list_role_policies(RoleName=role)["PolicyNames"] == [POLICY_NAME]
    assert iam.list_attached_role_policies(RoleName=role)["AttachedPolicies"] == []
    trust = iam.get_role(RoleName=role)["Role"]["AssumeRolePolicyDocument"]
    assert (json.loads(trust) if isinstance(trust, str) else trust) == LAMBDA_TRUST_POLICY


@pytest.mark.e2e
def test_only_the_stacks_bucket_in_its_account_may_invoke_the_function(
    deployed_stack: StackOutputs, aws_endpoint: Endpoint, stack_config: StackConfig
) -> None:
    policy = json.loads(
        aws_endpoint.client("lambda").get_policy(FunctionName=stack_config.function)["Policy"]
    )
    [statement] = policy["Statement"]
    account = deployed_stack.function_arn.split(":")[4]
    assert statement["Effect"] == "Allow"
    assert statement["Principal"] == {"Service": "s3.amazonaws.com"}
    assert statement["Action"] == "lambda:InvokeFunction"
    assert statement["Resource"] == deployed_stack.function_arn
    assert statement["Condition"] == {
        "ArnLike": {"AWS:SourceArn": deployed_stack.bucket_arn},
        "StringEquals": {"AWS:SourceAccount": account},
    }


@pytest.mark.e2e
def test_bucket_blocks_public_access_and_encrypts_by_default(
    deployed_stack: StackOutputs, aws_endpoint: Endpoint
) -> None:
    s3 = aws_endpoint.client("s3")
    block = s3.get_public_access_block(Bucket=deployed_stack.bucket)
    assert block["PublicAccessBlockConfiguration"] == {
        "BlockPublicAcls": True,
        "IgnorePublicAcls": True,
        "BlockPublicPolicy": True,
        "RestrictPublicBuckets": True,
    }
    rules = s3.get_bucket_encryption(Bucket=deployed_stack.bucket)[
        "ServerSideEncryptionConfiguration"
    ]["Rules"]
    algorithms = {r["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] for r in rules}
    assert algorithms and algorithms <= {"AES256", "aws:kms", "aws:kms:dsse"}


# -- enforced: the pipeline under its own role ------------------------------------------------


@pytest.fixture(scope="module")
def enforcing_endpoint() -> Iterator[Endpoint]:
    """An emulator of its own with IAM enforcement on."""
    with MinistackBackend(extra_env={"AUTH": "true"}) as endpoint:
        yield endpoint


#: A stack on that emulator. A small per-invocation budget and frequent
#: checkpoints make a modest file use every permission: checkpoints
#: (UpdateItem), follow-up invocations (InvokeFunction) and the clean-up's
#: Query included.
enforcing = stack_fixture(
    endpoint="enforcing_endpoint",
    timeout_s=30,
    environment={"CHECKPOINT_SECONDS": "0.2", "ROWS_PER_INVOCATION": "500"},
)


def big_csv(rows: int) -> bytes:
    return b"id,name\n" + b"".join(b"%d,name-%d\n" % (i, i) for i in range(1, rows + 1))


@pytest.mark.e2e
def test_the_pipeline_works_under_its_least_privilege_role(
    enforcing: DeployedPipeline,
) -> None:
    client = enforcing
    since = client.log_mark()
    etag = client.upload("long.csv", big_csv(2_000))
    manifest = client.wait_for_manifest("long.csv", etag, 180)
    assert manifest["status"] == "COMPLETE" and manifest["rows_written"] == 2_000, manifest
    shorter = client.ingest("long.csv", big_csv(10), timeout=120)  # removes 1,990 rows
    assert shorter.status == "COMPLETE" and [r["row"] for r in shorter.rows] == list(range(1, 11))
    bad = client.ingest("bad.csv", b"a,a\n1,2\n", timeout=60)
    assert bad.status == "FAILED" and bad.manifest["error_code"] == "DUPLICATE_COLUMN"
    # The lines of the shorter version's last invocation may arrive after its
    # manifest: wait until both versions' "Finished" lines are in.
    lines = client.wait_for_log(since, f"Finished {client.source('long.csv')}", count=2)
    assert any(f"Continuing {client.source('long.csv')}" in line for line in lines)
    assert any(f"Resuming clean-up of {client.source('long.csv')}" in line for line in lines)
    assert not [line for line in lines if "AccessDenied" in line or "Forbidden" in line]


@pytest.mark.e2e
def test_the_role_cannot_read_another_bucket(enforcing: DeployedPipeline) -> None:
    stack, client = enforcing.stack, enforcing
    other = f"other-{uuid.uuid4().hex[:8]}"
    stack.s3.create_bucket(Bucket=other)
    function_arn = stack.lambda_.get_function(FunctionName=stack.config.function)["Configuration"][
        "FunctionArn"
    ]
    stack.s3.put_bucket_notification_configuration(
        Bucket=other,
        NotificationConfiguration={
            "LambdaFunctionConfigurations": [
                {"LambdaFunctionArn": function_arn, "Events": ["s3:ObjectCreated:*"]}
            ]
        },
    )
    since = client.log_mark()
    stack.s3.put_object(Bucket=other, Key="x.csv", Body=b"a\n1\n")
    denied = f"Skipping {other}/x.csv: {other}/x.csv cannot be read (403)"
    client.wait_for_log(since, denied, timeout=60)
    foreign = PipelineClient(client.endpoint, StackConfig(bucket=other, table=stack.config.table))
    assert foreign.manifest("x.csv") is None and foreign.rows("x.csv") == []


@pytest.mark.e2e
def test_enforcement_is_real_a_missing_permission_stops_the_pipeline(
    enforcing: DeployedPipeline,
) -> None:
    """Negative control: the tests above would mean nothing if nothing were enforced."""
    stack, client = enforcing.stack, enforcing
    iam, role = stack.iam, stack.config.role
    document = iam.get_role_policy(RoleName=role, PolicyName=POLICY_NAME)["PolicyDocument"]
    original = json.loads(document) if isinstance(document, str) else document
    reduced = json.loads(json.dumps(original))
    for statement in reduced["Statement"]:
        statement["Action"] = [a for a in statement["Action"] if a != "dynamodb:PutItem"]
    iam.put_role_policy(RoleName=role, PolicyName=POLICY_NAME, PolicyDocument=json.dumps(reduced))
    try:
        since = client.log_mark()
        client.upload("denied.csv", b"a\n1\n")
        client.wait_for_log(
            since,
            lambda line: "AccessDenied" in line and "PutItem" in line,
            "AccessDenied on PutItem",
            timeout=30,
        )
        assert client.rows("denied.csv") == []
    finally:
        iam.put_role_policy(
            RoleName=role, PolicyName=POLICY_NAME, PolicyDocument=json.dumps(original)
        )


# -- secrets -----------------------------------------------------------------------------------


def secrets_in(text: str) -> list[str]:
    found = [m.group(0) for pattern in SECRET_PATTERNS for m in pattern.finditer(text)]
    return [f for f in found if f not in DOCUMENTED_EXAMPLES and "EXAMPLEKEY" not in f]


def test_the_lambda_zip_holds_only_the_package_and_no_secret_or_host() -> None:
    archive = zipfile.ZipFile(io.BytesIO(build_zip()))
    names = archive.namelist()
    package = lambda_source_dir().name
    assert names and all(n.startswith(f"{package}/") and n.endswith(".py") for n in names)
    for name in names:
        text = archive.read(name).decode("utf-8")
        assert secrets_in(text) == [], name
        # The endpoint comes from the environment; nothing names a host or port.
        assert not re.search(r"localhost|127\.0\.0\.1|:4566|amazonaws\.com", text), name


def test_no_secret_is_written_in_the_projects_code() -> None:
    suffixes = {".py", ".toml", ".cfg", ".ini", ".json", ".yml", ".yaml", ".csv", ".md", ".sh"}
    files = [
        p
        for top in (
            "lambda",
            "provisioning",
            "csv_pipeline_harness",
            "tools",
            "tests",
            ".github",
            ".ci",
        )
        for p in (REPO / top).rglob("*")
        if p.is_file() and p.suffix in suffixes and "__pycache__" not in p.parts
    ]
    files += [p for p in REPO.glob("*") if p.is_file() and p.suffix in suffixes]
    assert files
    found = {str(p.relative_to(REPO)): secrets_in(p.read_text(errors="replace")) for p in files}
    assert {k: v for k, v in found.items() if v} == {}


def process_environ(pid: int) -> bytes:
    return Path(f"/proc/{pid}/environ").read_bytes()


@pytest.mark.e2e
@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="needs Linux /proc")
def test_host_credentials_never_reach_the_emulator_or_the_lambda(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    secret, token = f"hostsecret{uuid.uuid4().hex}", f"hosttoken{uuid.uuid4().hex}"
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    monkeypatch.setenv("AWS_SESSION_TOKEN", token)
    key_id = f"hostkeyid{uuid.uuid4().hex}"
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", key_id)
    backend = MinistackBackend()
    with backend as endpoint:
        assert backend._process is not None
        server = backend._process.pid
        config = StackConfig()
        Stack(endpoint, config).deploy()
        client = PipelineClient(endpoint, config)
        assert client.ingest("x.csv", b"a\n1\n").status == "COMPLETE"
        group = run(
            ["ps", "-o", "pid=", "-g", str(os.getpgid(server))], timeout=30, check=True
        ).stdout.split()
        pids = [int(p) for p in group]
        assert server in pids and len(pids) >= 2, "the Lambda worker runs in the server's group"
        for pid in pids:
            environ = process_environ(pid)
            for value in (secret, token, key_id):
                assert value.encode() not in environ, f"pid {pid} holds the host's {value[:8]}…"


@pytest.mark.e2e
def test_credentials_the_lambda_holds_appear_in_no_log_or_item() -> None:
    """The function's own credentials, whatever happens, stay out of logs and the table."""
    secret, token = f"lambdasecret{uuid.uuid4().hex}", f"lambdatoken{uuid.uuid4().hex}"
    backend = MinistackBackend(
        extra_env={"AWS_SECRET_ACCESS_KEY": secret, "AWS_SESSION_TOKEN": token}
    )
    with backend as endpoint:
        config = StackConfig(environment={"LOG_LEVEL": "DEBUG"})
        Stack(endpoint, config).deploy()
        client = PipelineClient(endpoint, config)
        since = client.log_mark()
        assert client.ingest("good.csv", b"a,b\n1,\n2,3,4\n").status == "COMPLETE"
        assert client.ingest("bad.csv", b"a\n\xff\n").status == "FAILED"
        # An unexpected error, with its traceback in the log.
        invoke = client.invoke({"Records": [{"eventName": "ObjectCreated:Put"}]})
        assert "FunctionError" in invoke
        lines = client.wait_for_log(since, "Traceback", "the unexpected error's traceback")
        text = "\n".join(lines)
        items = client.dynamodb.scan(TableName=config.table)["Items"]
        for value in (secret, token):
            assert value not in text
            assert value not in json.dumps(items)
        assert secrets_in(text) == []
