"""A stack owns what carries its tag: it changes nothing else, and removes nothing else.

On the session's emulator, each test with names of its own.
"""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import Iterator

import pytest
from botocore.exceptions import ClientError

from csv_pipeline_harness.provisioning.backends import Endpoint
from csv_pipeline_harness.provisioning.stack import OWNER_TAG, NotOurs, Stack, StackConfig

pytestmark = pytest.mark.e2e

OTHER_TRUST = {
    "Version": "2012-10-17",
    "Statement": [
        {
            "Effect": "Allow",
            "Principal": {"Service": "ec2.amazonaws.com"},
            "Action": "sts:AssumeRole",
        }
    ],
}


@pytest.fixture
def stack(aws_endpoint: Endpoint) -> Iterator[Stack]:
    name = f"owned-{uuid.uuid4().hex[:8]}"
    stack = Stack(aws_endpoint, StackConfig(bucket=name, table=name, function=name, role=name))
    yield stack
    stack.destroy()
    # What a test made by hand, without the tag.
    for cleanup in (
        lambda: stack.iam.delete_role(RoleName=name),
        lambda: stack.dynamodb.delete_table(TableName=name),
        lambda: stack.s3.delete_bucket(Bucket=name),
    ):
        with contextlib.suppress(ClientError):
            cleanup()


def test_every_resource_deploy_creates_carries_the_stacks_tag(stack: Stack) -> None:
    stack.deploy()
    assert stack.ownership() == {
        f"bucket {stack.config.bucket}": None,
        f"table {stack.config.table}": None,
        f"role {stack.config.role}": None,
        f"function {stack.config.function}": None,
        f"queue {stack.config.failed_events_queue}": None,
    }
    tag = {OWNER_TAG: stack.config.name}
    assert stack._bucket_tags() == tag
    assert stack._role_tags() == tag


def test_deploy_changes_nothing_when_a_name_is_taken_by_something_else(stack: Stack) -> None:
    cfg = stack.config
    stack.iam.create_role(RoleName=cfg.role, AssumeRolePolicyDocument=json.dumps(OTHER_TRUST))
    with pytest.raises(NotOurs, match=rf"role {cfg.role} carries no {OWNER_TAG} tag.*Nothing"):
        stack.deploy()
    role = stack.iam.get_role(RoleName=cfg.role)["Role"]
    assert role["AssumeRolePolicyDocument"] in (OTHER_TRUST, json.dumps(OTHER_TRUST))
    assert stack.iam.list_role_policies(RoleName=cfg.role)["PolicyNames"] == []
    # Refused before anything was created.
    assert stack.ownership() == {f"role {cfg.role}": f"carries no {OWNER_TAG} tag"}


def test_a_resource_of_another_stack_is_named_as_such(stack: Stack) -> None:
    cfg = stack.config
    stack.dynamodb.create_table(
        TableName=cfg.table,
        BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[{"AttributeName": "k", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "k", "KeyType": "HASH"}],
        Tags=[{"Key": OWNER_TAG, "Value": "someone-else"}],
    )
    with pytest.raises(NotOurs, match=f"table {cfg.table} belongs to stack 'someone-else'"):
        stack.deploy()


def test_destroy_leaves_what_it_did_not_create_and_says_why(stack: Stack) -> None:
    cfg = stack.config
    stack.s3.create_bucket(Bucket=cfg.bucket)
    stack.s3.put_object(Bucket=cfg.bucket, Key="keep.csv", Body=b"a\n1\n")
    report = stack.destroy()
    assert report.removed == []
    assert report.left_alone == [(f"bucket {cfg.bucket}", f"carries no {OWNER_TAG} tag")]
    assert f"function {cfg.function}" in report.missing
    assert stack.s3.get_object(Bucket=cfg.bucket, Key="keep.csv")["Body"].read() == b"a\n1\n"
    stack.s3.delete_object(Bucket=cfg.bucket, Key="keep.csv")


def test_deploy_merges_its_notification_with_the_buckets_others(stack: Stack) -> None:
    outputs = stack.deploy()
    s3 = stack.s3
    current = s3.get_bucket_notification_configuration(Bucket=outputs.bucket)
    theirs = {
        "Id": "someone-elses-notification",
        "LambdaFunctionArn": outputs.function_arn,
        "Events": ["s3:ObjectRemoved:*"],
    }
    s3.put_bucket_notification_configuration(
        Bucket=outputs.bucket,
        NotificationConfiguration={
            "LambdaFunctionConfigurations": [*current["LambdaFunctionConfigurations"], theirs]
        },
    )
    stack.deploy()
    ids = sorted(
        c["Id"]
        for c in s3.get_bucket_notification_configuration(Bucket=outputs.bucket)[
            "LambdaFunctionConfigurations"
        ]
    )
    assert ids == sorted([f"{stack.config.function}-on-create", "someone-elses-notification"])
    stack._remove_our_notification()
    left = s3.get_bucket_notification_configuration(Bucket=outputs.bucket)
    assert [c["Id"] for c in left["LambdaFunctionConfigurations"]] == ["someone-elses-notification"]
