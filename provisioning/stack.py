"""What is built on an endpoint: bucket, table, role, function, permission, notification,
and the queue where events land that failed every asynchronous retry.

``Stack.deploy`` is idempotent (a second run changes nothing and fails on
nothing; changed code or settings are updated) and works the same against
an emulator or real AWS.

Ownership is a tag: every resource ``deploy`` creates carries
``csv-pipeline:stack = <stack name>`` (:data:`OWNER_TAG`). ``deploy``
updates only resources carrying its tag; a name taken by anything else stops
it with :class:`NotOurs`, before it changes anything of that resource. Its
notification is merged into the bucket's configuration (other notifications
stay). ``Stack.destroy`` removes only resources carrying its tag and returns
a :class:`DestroyReport` saying what it removed and what it left alone, and why.

A *fresh* stack (``Stack(..., fresh=True)``, what a test session on real AWS
deploys) adopts nothing: a name already taken stops ``deploy`` with
:class:`ResourceExists`, every resource it does create is recorded in
``Stack.created``, and ``destroy`` removes exactly those, so a run never
alters or deletes what it did not make, even under a name it expected.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError

from .aws_errors import error_code
from .backends.base import Endpoint
from .packaging import HANDLER, build_source_zip, build_zip, code_sha256
from .policy import LAMBDA_TRUST_POLICY, function_policy

log = logging.getLogger(__name__)

RUNTIME = "python3.12"
POLICY_NAME = "csv-processor-access"


@dataclass(frozen=True)
class _Resource:
    """One named resource of a stack: how to read its tags (None: absent), how to remove it."""

    kind: str
    what: str
    tags: Callable[[], dict[str, str] | None]
    remove: Callable[[], Any]


#: SQS's longest retention: a failed event stays readable for 14 days.
FAILED_EVENTS_RETENTION_S = 14 * 24 * 3600

#: Lambda's range for ``MaximumRetryAttempts`` of asynchronous invocations.
MAX_RETRY_ATTEMPTS_RANGE = range(0, 3)


@dataclass(frozen=True)
class StackConfig:
    """Names and settings of one deployment (the data contract's defaults)."""

    bucket: str = "csv-upload-bucket"
    table: str = "csv-data"
    function: str = "csv-processor"
    role: str = "csv-processor-role"
    suffix: str = ".csv"
    timeout_s: int = 300
    memory_mb: int = 512
    progress_every: int = 100
    environment: dict[str, str] = field(default_factory=dict)
    #: Retries of an asynchronous invocation before the event goes to the
    #: failed-events queue (Lambda's own default is 2, its maximum).
    max_retry_attempts: int = 2
    #: The function's entry point; a test variant may name a wrapper shipped
    #: as one of ``Stack``'s ``extra_files``, another implementation a module
    #: of its ``lambda_source``.
    handler: str = HANDLER
    #: Another implementation of the data contract to deploy instead of the
    #: ``csv_pipeline`` package: a directory whose files go to the zip's root
    #: (its ``requirements.txt`` installed beside them). ``None``: this package.
    lambda_source: Path | None = None

    def __post_init__(self) -> None:
        if self.max_retry_attempts not in MAX_RETRY_ATTEMPTS_RANGE:
            raise ValueError(
                f"max_retry_attempts must be 0, 1 or 2 (Lambda's range), "
                f"not {self.max_retry_attempts}"
            )

    @property
    def name(self) -> str:
        """The stack's name, the value of its :data:`OWNER_TAG` (its function's name)."""
        return self.function

    @property
    def statement_id(self) -> str:
        return f"s3-invoke-{self.bucket}"

    @property
    def failed_events_queue(self) -> str:
        """The SQS queue that receives events which failed every retry."""
        return f"{self.function}-failed-events"

    @property
    def log_group(self) -> str:
        return f"/aws/lambda/{self.function}"


@dataclass(frozen=True)
class StackOutputs:
    """What ``deploy`` built, as printed by ``csv-pipeline deploy``."""

    endpoint_url: str | None
    region: str
    account: str
    bucket: str
    bucket_arn: str
    table: str
    table_arn: str
    function: str
    function_arn: str
    role_arn: str
    log_group: str
    failed_events_queue_url: str
    failed_events_queue_arn: str

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)


#: The tag on every resource a stack creates; its value is the stack's name.
OWNER_TAG = "csv-pipeline:stack"


class ResourceExists(RuntimeError):
    """A fresh stack found one of its names taken; the resource is left as it was."""


class NotOurs(ResourceExists):
    """A name of the stack is taken by a resource without the stack's tag; it is left as it was."""


@dataclass
class DestroyReport:
    """What ``destroy`` did: resources removed, left alone (with the reason), not found."""

    removed: list[str] = field(default_factory=list)
    left_alone: list[tuple[str, str]] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        out = [f"removed {name}" for name in self.removed]
        out += [f"left alone {name}: {why}" for name, why in self.left_alone]
        out += [f"not found {name}" for name in self.missing]
        return out


#: Seconds ``create_function`` keeps retrying while a new role is not yet assumable.
ROLE_PROPAGATION_S = 90.0


def retry_while(
    action: Callable[[], Any],
    retryable: Callable[[ClientError], bool],
    *,
    within: float,
    first_delay: float = 1.0,
    max_delay: float = 8.0,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> Any:
    """``action()``, retried with doubling delays while it fails with a ``retryable`` error.

    IAM changes take seconds to reach other AWS services, so a call that
    depends on a role or policy just written can fail at first. After
    ``within`` seconds the last error is raised; any other error at once.
    """
    deadline = clock() + within
    delay = first_delay
    while True:
        try:
            return action()
        except ClientError as exc:
            if not retryable(exc) or clock() + delay > deadline:
                raise
            log.info("retrying in %.0f s: %s", delay, exc)
        sleep(delay)
        delay = min(delay * 2, max_delay)


def role_not_assumable_yet(exc: ClientError) -> bool:
    """Lambda's answer when a role is too new: "The role defined for the function cannot be
    assumed by Lambda." (an ``InvalidParameterValueException`` like many others)."""
    return error_code(exc) == "InvalidParameterValueException" and ("cannot be assumed" in str(exc))


#: "No such queue", as the query (older) and JSON (newer) SQS protocols name it.
_NO_SUCH_QUEUE = ("AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist")
#: Every "not found" answer of the calls ``destroy`` makes.
_MISSING = frozenset(
    {"NoSuchBucket", "NoSuchEntity", "ResourceNotFoundException", "404", *_NO_SUCH_QUEUE}
)


class Stack:
    """The pipeline's resources on one endpoint."""

    def __init__(
        self,
        endpoint: Endpoint,
        config: StackConfig | None = None,
        *,
        extra_files: Mapping[str, str | bytes] | None = None,
        fresh: bool = False,
    ) -> None:
        """``extra_files`` (zip path -> content) go into the function's zip beside the package.

        ``fresh``: adopt nothing (see the module's docstring); ``created``
        lists, in order, the kinds this object created and has not destroyed.
        """
        self.endpoint = endpoint
        self.config = config or StackConfig()
        self.extra_files = dict(extra_files or {})
        self.fresh = fresh
        self.created: list[str] = []
        self.s3 = endpoint.client("s3")
        self.dynamodb = endpoint.client("dynamodb")
        self.iam = endpoint.client("iam")
        self.lambda_ = endpoint.client("lambda")
        self.logs = endpoint.client("logs")
        self.sqs = endpoint.client("sqs")
        self.sts = endpoint.client("sts")

    # -- deploy ---------------------------------------------------------------

    def deploy(self) -> StackOutputs:
        cfg = self.config
        account = self.sts.get_caller_identity()["Account"]
        partition = "aws"
        region = self.endpoint.region
        bucket_arn = f"arn:{partition}:s3:::{cfg.bucket}"
        log_group_arn = f"arn:{partition}:logs:{region}:{account}:log-group:{cfg.log_group}"
        function_arn = f"arn:{partition}:lambda:{region}:{account}:function:{cfg.function}"

        if not self.fresh:
            self._refuse_what_is_not_ours()
        self._ensure_bucket()
        table_arn = self._ensure_table()
        queue_url, queue_arn = self._ensure_failed_events_queue()
        role_arn = self._ensure_role(
            function_policy(
                bucket_arn=bucket_arn,
                table_arn=table_arn,
                log_group_arn=log_group_arn,
                function_arn=function_arn,
                failed_events_queue_arn=queue_arn,
            )
        )
        function_arn = self._ensure_function(role_arn)
        self._allow_self_continuation()
        self._ensure_failure_destination(queue_arn)
        self._ensure_permission(bucket_arn, account)
        self._ensure_notification(function_arn)
        return StackOutputs(
            endpoint_url=self.endpoint.url,
            region=region,
            account=account,
            bucket=cfg.bucket,
            bucket_arn=bucket_arn,
            table=cfg.table,
            table_arn=table_arn,
            function=cfg.function,
            function_arn=function_arn,
            role_arn=role_arn,
            log_group=cfg.log_group,
            failed_events_queue_url=queue_url,
            failed_events_queue_arn=queue_arn,
        )

    def _ensure_bucket(self) -> None:
        bucket = self.config.bucket
        args: dict[str, Any] = {"Bucket": bucket}
        if self.endpoint.region != "us-east-1":
            args["CreateBucketConfiguration"] = {"LocationConstraint": self.endpoint.region}
        # us-east-1 answers 200 to creating a bucket one already owns: ask first.
        if self._exists(lambda: self.s3.head_bucket(Bucket=bucket)):
            if self.fresh:
                raise ResourceExists(f"bucket {bucket} already exists")
            self._check_ours(f"bucket {bucket}", self._bucket_tags())
        else:
            try:
                self.s3.create_bucket(**args)
            except ClientError as exc:
                if error_code(exc) not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                    raise
                raise ResourceExists(f"bucket {bucket} already exists") from exc
            self._record("bucket")
            self.s3.get_waiter("bucket_exists").wait(Bucket=bucket)
            self.s3.put_bucket_tagging(
                Bucket=bucket,
                Tagging={"TagSet": [{"Key": k, "Value": v} for k, v in self._tags().items()]},
            )
        self.s3.get_waiter("bucket_exists").wait(Bucket=bucket)
        self.s3.put_public_access_block(
            Bucket=bucket,
            PublicAccessBlockConfiguration={
                "BlockPublicAcls": True,
                "IgnorePublicAcls": True,
                "BlockPublicPolicy": True,
                "RestrictPublicBuckets": True,
            },
        )
        self.s3.put_bucket_encryption(
            Bucket=bucket,
            ServerSideEncryptionConfiguration={
                "Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]
            },
        )

    def _ensure_table(self) -> str:
        table = self.config.table
        try:
            self.dynamodb.create_table(
                TableName=table,
                BillingMode="PAY_PER_REQUEST",
                AttributeDefinitions=[
                    {"AttributeName": "source", "AttributeType": "S"},
                    {"AttributeName": "row", "AttributeType": "N"},
                ],
                KeySchema=[
                    {"AttributeName": "source", "KeyType": "HASH"},
                    {"AttributeName": "row", "KeyType": "RANGE"},
                ],
                Tags=[{"Key": k, "Value": v} for k, v in self._tags().items()],
            )
            self._record("table")
        except ClientError as exc:
            if error_code(exc) != "ResourceInUseException":
                raise
            if self.fresh:
                raise ResourceExists(f"table {table} already exists") from exc
            self._check_ours(f"table {table}", self._table_tags())
        self.dynamodb.get_waiter("table_exists").wait(
            TableName=table, WaiterConfig={"Delay": 1, "MaxAttempts": 120}
        )
        return str(self.dynamodb.describe_table(TableName=table)["Table"]["TableArn"])

    def _ensure_failed_events_queue(self) -> tuple[str, str]:
        """The failed-events queue, created or brought to its settings: (URL, ARN).

        The ARN is read back rather than built, so it carries whatever region
        and account the endpoint really uses.
        """
        name = self.config.failed_events_queue
        attributes = {
            "MessageRetentionPeriod": str(FAILED_EVENTS_RETENTION_S),
            "SqsManagedSseEnabled": "true",
        }
        url = self._create_queue(name, attributes)
        arn = self.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])[
            "Attributes"
        ]["QueueArn"]
        return url, str(arn)

    def _create_queue(self, name: str, attributes: dict[str, str]) -> str:
        """Create the queue, or set its attributes if it is ours with other ones; its URL."""
        # Creating a queue that exists with the same attributes succeeds: ask first.
        if self._exists(lambda: self.sqs.get_queue_url(QueueName=name)):
            if self.fresh:
                raise ResourceExists(f"queue {name} already exists")
            url = str(self.sqs.get_queue_url(QueueName=name)["QueueUrl"])
            self._check_ours(f"queue {name}", self._queue_tags(url))
            current = self.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])
            have = current.get("Attributes", {})
            if any(have.get(k) != v for k, v in attributes.items()):
                self.sqs.set_queue_attributes(QueueUrl=url, Attributes=attributes)
                log.info("updated attributes of queue %s", name)
            return url
        # A queue deleted less than 60 s ago cannot be created again yet (AWS).
        deadline = time.monotonic() + 90
        while True:
            try:
                url = self.sqs.create_queue(
                    QueueName=name, Attributes=attributes, tags=self._tags()
                )["QueueUrl"]
                self._record("queue")
                return str(url)
            except ClientError as exc:
                code = error_code(exc)
                if code in ("QueueAlreadyExists", "QueueNameExists"):
                    raise ResourceExists(f"queue {name} already exists") from exc
                recently_deleted = code in (
                    "AWS.SimpleQueueService.QueueDeletedRecently",
                    "QueueDeletedRecently",
                )
                if not recently_deleted or time.monotonic() > deadline:
                    raise
                time.sleep(5)

    def _ensure_role(self, policy: dict[str, Any]) -> str:
        role = self.config.role
        trust = json.dumps(LAMBDA_TRUST_POLICY)
        try:
            arn = self.iam.create_role(
                RoleName=role,
                AssumeRolePolicyDocument=trust,
                Tags=[{"Key": k, "Value": v} for k, v in self._tags().items()],
            )["Role"]["Arn"]
            self._record("role")
        except ClientError as exc:
            if error_code(exc) != "EntityAlreadyExists":
                raise
            if self.fresh:
                raise ResourceExists(f"role {role} already exists") from exc
            self._check_ours(f"role {role}", self._role_tags())
            self.iam.update_assume_role_policy(RoleName=role, PolicyDocument=trust)
            arn = self.iam.get_role(RoleName=role)["Role"]["Arn"]
        self.iam.put_role_policy(
            RoleName=role, PolicyName=POLICY_NAME, PolicyDocument=json.dumps(policy)
        )
        return str(arn)

    def _function_settings(self, role_arn: str) -> dict[str, Any]:
        cfg = self.config
        return {
            "FunctionName": cfg.function,
            "Runtime": RUNTIME,
            "Handler": cfg.handler,
            "Role": role_arn,
            "Timeout": cfg.timeout_s,
            "MemorySize": cfg.memory_mb,
            "Environment": {
                "Variables": {
                    "TABLE_NAME": cfg.table,
                    "PROGRESS_EVERY": str(cfg.progress_every),
                    **cfg.environment,
                }
            },
        }

    def _ensure_function(self, role_arn: str) -> str:
        source = self.config.lambda_source
        if source is None:
            zip_bytes = build_zip(extra_files=self.extra_files)
        else:
            zip_bytes = build_source_zip(source, runtime=RUNTIME, extra_files=self.extra_files)
        settings = self._function_settings(role_arn)
        name = self.config.function
        current = _unless_missing(
            lambda: self.lambda_.get_function_configuration(FunctionName=name)
        )
        if current is None:
            arn = self._create_function(settings, zip_bytes)
            self._record("function")
            self._wait_function(name)
            return arn
        if self.fresh:
            raise ResourceExists(f"function {name} already exists")
        self._check_ours(f"function {name}", self._function_tags())
        if current.get("CodeSha256") != code_sha256(zip_bytes):
            self._wait_function(name)
            self.lambda_.update_function_code(FunctionName=name, ZipFile=zip_bytes)
            log.info("updated code of %s", name)
        self._wait_function(name)
        if _settings_differ(current, settings):
            self.lambda_.update_function_configuration(**settings)
            log.info("updated configuration of %s", name)
            self._wait_function(name)
        return str(current["FunctionArn"])

    def _allow_self_continuation(self) -> None:
        """Let the function hand a long file on to its own next invocation.

        A file longer than one invocation's timeout is finished by the
        function invoking itself with a checkpoint; each hop makes progress, so
        the chain ends with the file. Recursive-loop detection would cut such a
        chain after 16 hops, so it is switched off for this function only.
        Endpoints without the API (older emulators) keep their default.
        """
        try:
            self.lambda_.put_function_recursion_config(
                FunctionName=self.config.function, RecursiveLoop="Allow"
            )
        except ClientError as exc:
            if error_code(exc) not in (
                "InvalidAction",
                "NotImplemented",
                "UnknownOperationException",
                "InternalFailure",
                "501",
            ):
                raise
            log.warning("recursion config not supported here: %s", exc)

    def _ensure_failure_destination(self, queue_arn: str) -> None:
        """Retry a failing asynchronous event, then send it to the failed-events queue.

        Only written when it differs from what is there, so a second deploy
        changes nothing.
        """
        name = self.config.function
        retries = self.config.max_retry_attempts
        current = _unless_missing(
            lambda: self.lambda_.get_function_event_invoke_config(FunctionName=name)
        )
        if current is not None:
            destinations = current.get("DestinationConfig") or {}
            on_failure = (destinations.get("OnFailure") or {}).get("Destination")
            on_success = (destinations.get("OnSuccess") or {}).get("Destination")
            if (
                current.get("MaximumRetryAttempts") == retries
                and on_failure == queue_arn
                and not on_success
            ):
                return
        # Lambda checks that the role may send to the queue; on AWS a policy
        # just written takes a few seconds to be seen.
        deadline = time.monotonic() + 60
        while True:
            try:
                self.lambda_.put_function_event_invoke_config(
                    FunctionName=name,
                    MaximumRetryAttempts=retries,
                    DestinationConfig={"OnFailure": {"Destination": queue_arn}},
                )
                break
            except ClientError as exc:
                retryable = error_code(exc) == "InvalidParameterValueException" and (
                    "permission" in str(exc).lower()
                )
                if not retryable or time.monotonic() > deadline:
                    raise
                time.sleep(2)
        log.info("set failure destination of %s (%d retries)", name, retries)

    def _create_function(self, settings: dict[str, Any], zip_bytes: bytes) -> str:
        """Create the function; a new IAM role takes seconds to become assumable on AWS."""
        response = retry_while(
            lambda: self.lambda_.create_function(
                **settings, Code={"ZipFile": zip_bytes}, Tags=self._tags()
            ),
            role_not_assumable_yet,
            within=ROLE_PROPAGATION_S,
        )
        return str(response["FunctionArn"])

    def _wait_function(self, name: str) -> None:
        """Block until the function is Active and its last update Successful."""
        waiter_config = {"Delay": 1, "MaxAttempts": 300}
        self.lambda_.get_waiter("function_active_v2").wait(
            FunctionName=name, WaiterConfig=waiter_config
        )
        self.lambda_.get_waiter("function_updated_v2").wait(
            FunctionName=name, WaiterConfig=waiter_config
        )

    def _ensure_permission(self, bucket_arn: str, account: str) -> None:
        try:
            self.lambda_.add_permission(
                FunctionName=self.config.function,
                StatementId=self.config.statement_id,
                Action="lambda:InvokeFunction",
                Principal="s3.amazonaws.com",
                SourceArn=bucket_arn,
                SourceAccount=account,
            )
        except ClientError as exc:
            if error_code(exc) != "ResourceConflictException":
                raise

    @property
    def _notification_id(self) -> str:
        return f"{self.config.function}-on-create"

    def _notifications_without_ours(self) -> dict[str, Any]:
        """The bucket's notification configuration less this stack's entry."""
        current = self.s3.get_bucket_notification_configuration(Bucket=self.config.bucket)
        current.pop("ResponseMetadata", None)
        kept = [
            c
            for c in current.get("LambdaFunctionConfigurations", [])
            if c.get("Id") != self._notification_id
        ]
        current["LambdaFunctionConfigurations"] = kept
        return {k: v for k, v in current.items() if v}

    def _ensure_notification(self, function_arn: str) -> None:
        configuration: dict[str, Any] = {
            "Id": self._notification_id,
            "LambdaFunctionArn": function_arn,
            "Events": ["s3:ObjectCreated:*"],
        }
        if self.config.suffix:
            configuration["Filter"] = {
                "Key": {"FilterRules": [{"Name": "suffix", "Value": self.config.suffix}]}
            }
        # S3 checks that it may invoke the function; on AWS a permission just
        # added can take seconds to be seen ("Unable to validate ...").
        # Merged: the bucket's other notifications stay as they are.
        merged = self._notifications_without_ours()
        merged["LambdaFunctionConfigurations"] = [
            *merged.get("LambdaFunctionConfigurations", []),
            configuration,
        ]
        retry_while(
            lambda: self.s3.put_bucket_notification_configuration(
                Bucket=self.config.bucket, NotificationConfiguration=merged
            ),
            lambda exc: error_code(exc) == "InvalidArgument" and "Unable to validate" in str(exc),
            within=60,
        )

    # -- ownership ------------------------------------------------------------

    def ownership(self) -> dict[str, str | None]:
        """``{resource: why it is not ours}`` for every name of the stack that is taken.

        ``None``: it carries this stack's tag. Names nobody uses are absent.
        """
        found: dict[str, str | None] = {}
        for resource in self._resources():
            tags = resource.tags()
            if tags is not None:
                found[resource.what] = self._not_ours_because(tags)
        return found

    def _resources(self) -> list[_Resource]:
        """The stack's named resources, in the order ``destroy`` removes them."""
        cfg = self.config
        queue_url = self._queue_url()
        return [
            _Resource(
                "function",
                f"function {cfg.function}",
                self._tags_unless_missing(self._function_tags),
                self._delete_function,
            ),
            _Resource(
                "role",
                f"role {cfg.role}",
                self._tags_unless_missing(self._role_tags),
                self._delete_role,
            ),
            _Resource(
                "table",
                f"table {cfg.table}",
                self._tags_unless_missing(self._table_tags),
                lambda: self.dynamodb.delete_table(TableName=cfg.table),
            ),
            _Resource(
                "bucket",
                f"bucket {cfg.bucket}",
                self._tags_unless_missing(self._bucket_tags),
                self._empty_and_delete_bucket,
            ),
            _Resource(
                "queue",
                f"queue {cfg.failed_events_queue}",
                (lambda: self._queue_tags(queue_url)) if queue_url else (lambda: None),
                lambda: self.sqs.delete_queue(QueueUrl=queue_url),
            ),
        ]

    def _refuse_what_is_not_ours(self) -> None:
        """Raise :class:`NotOurs` naming every taken name without this stack's tag, before
        anything is created or changed."""
        foreign = {what: why for what, why in self.ownership().items() if why is not None}
        if foreign:
            listed = "; ".join(f"{what} {why}" for what, why in foreign.items())
            raise NotOurs(
                f"not deploying: {listed}. This stack changes only what it created (tag "
                f"{OWNER_TAG}={self.config.name}); remove those, or deploy under other names. "
                "Nothing has been changed."
            )

    def _tags(self) -> dict[str, str]:
        return {OWNER_TAG: self.config.name}

    def _check_ours(self, what: str, tags: dict[str, str]) -> None:
        """Raise :class:`NotOurs` unless ``tags`` carry this stack's :data:`OWNER_TAG`."""
        reason = self._not_ours_because(tags)
        if reason is not None:
            raise NotOurs(
                f"{what} exists and {reason}; this stack changes only what it created "
                f"(remove it, or deploy under other names)"
            )

    def _not_ours_because(self, tags: dict[str, str]) -> str | None:
        owner = tags.get(OWNER_TAG)
        if owner == self.config.name:
            return None
        if owner is None:
            return f"carries no {OWNER_TAG} tag"
        return f"belongs to stack {owner!r} ({OWNER_TAG}={owner})"

    def _bucket_tags(self) -> dict[str, str]:
        try:
            tag_set = self.s3.get_bucket_tagging(Bucket=self.config.bucket)["TagSet"]
        except ClientError as exc:
            if error_code(exc) != "NoSuchTagSet":
                raise
            return {}
        return {t["Key"]: t["Value"] for t in tag_set}

    def _table_tags(self) -> dict[str, str]:
        arn = self.dynamodb.describe_table(TableName=self.config.table)["Table"]["TableArn"]
        tags = self.dynamodb.list_tags_of_resource(ResourceArn=arn).get("Tags", [])
        return {t["Key"]: t["Value"] for t in tags}

    def _queue_tags(self, url: str) -> dict[str, str]:
        return dict(self.sqs.list_queue_tags(QueueUrl=url).get("Tags") or {})

    def _role_tags(self) -> dict[str, str]:
        tags = self.iam.list_role_tags(RoleName=self.config.role).get("Tags", [])
        return {t["Key"]: t["Value"] for t in tags}

    def _function_tags(self) -> dict[str, str]:
        return dict(self.lambda_.get_function(FunctionName=self.config.function).get("Tags") or {})

    # -- destroy --------------------------------------------------------------

    def destroy(self) -> DestroyReport:
        """Remove every resource of this stack that carries its tag; what it did.

        Missing resources are fine (a second ``destroy`` removes nothing);
        one under the stack's name without its tag is left alone and named
        in the report with the reason. A fresh stack removes only what it
        recorded in ``created``. The function's log group, permission and
        failure destination go with the function; the notification entry of
        this stack leaves the bucket's configuration, other entries stay.
        """
        report = DestroyReport()
        self._ignore_missing(self._remove_our_notification)
        for resource in self._resources():
            if self.fresh and resource.kind not in self.created:
                continue
            tags = resource.tags()
            if tags is None:
                report.missing.append(resource.what)
                continue
            reason = self._not_ours_because(tags)
            if reason is not None:
                report.left_alone.append((resource.what, reason))
                continue
            self._ignore_missing(resource.remove)
            report.removed.append(resource.what)
        self.created = []
        return report

    def _tags_unless_missing(
        self, tags: Callable[[], dict[str, str]]
    ) -> Callable[[], dict[str, str] | None]:
        def lookup() -> dict[str, str] | None:
            try:
                return tags()
            except ClientError as exc:
                if error_code(exc) in _MISSING:
                    return None
                raise

        return lookup

    def _queue_url(self) -> str | None:
        try:
            url = self.sqs.get_queue_url(QueueName=self.config.failed_events_queue)["QueueUrl"]
        except ClientError as exc:
            if error_code(exc) in _MISSING:
                return None
            raise
        return str(url)

    def _remove_our_notification(self) -> None:
        current = self.s3.get_bucket_notification_configuration(Bucket=self.config.bucket)
        ours = [
            c
            for c in current.get("LambdaFunctionConfigurations", [])
            if c.get("Id") == self._notification_id
        ]
        if ours:
            self.s3.put_bucket_notification_configuration(
                Bucket=self.config.bucket,
                NotificationConfiguration=self._notifications_without_ours(),
            )

    def _delete_function(self) -> None:
        cfg = self.config
        self._ignore_missing(
            lambda: self.lambda_.delete_function_event_invoke_config(FunctionName=cfg.function)
        )
        self._ignore_missing(lambda: self.lambda_.delete_function(FunctionName=cfg.function))
        self._ignore_missing(lambda: self.logs.delete_log_group(logGroupName=cfg.log_group))

    def _delete_role(self) -> None:
        cfg = self.config
        self._ignore_missing(
            lambda: self.iam.delete_role_policy(RoleName=cfg.role, PolicyName=POLICY_NAME)
        )
        self.iam.delete_role(RoleName=cfg.role)

    def _record(self, kind: str) -> None:
        if kind not in self.created:
            self.created.append(kind)

    @staticmethod
    def _exists(lookup: Callable[[], Any]) -> bool:
        """Whether ``lookup`` answers; only a not-found answer means no.

        403 means yes: S3 answers it for a bucket another account owns.
        """
        try:
            lookup()
        except ClientError as exc:
            code = error_code(exc)
            if code == "403":
                return True
            if code in ("404", "NoSuchBucket", *_NO_SUCH_QUEUE):
                return False
            raise
        return True

    def _empty_and_delete_bucket(self) -> None:
        bucket = self.config.bucket
        paginator = self.s3.get_paginator("list_object_versions")
        for page in paginator.paginate(Bucket=bucket):
            objects = [
                {"Key": v["Key"], "VersionId": v["VersionId"]}
                for v in page.get("Versions", []) + page.get("DeleteMarkers", [])
            ]
            if objects:
                self.s3.delete_objects(Bucket=bucket, Delete={"Objects": objects, "Quiet": True})
        for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            objects = [{"Key": o["Key"]} for o in page.get("Contents", [])]
            if objects:
                self.s3.delete_objects(Bucket=bucket, Delete={"Objects": objects, "Quiet": True})
        self.s3.delete_bucket(Bucket=bucket)

    def remaining(self) -> list[str]:
        """The resources ``deploy`` creates that still exist: empty once ``destroy`` is done.

        Each is looked up by name; an error answer (not found, or not visible
        to these credentials) counts as gone.
        """
        cfg = self.config
        lookups: dict[str, Callable[[], Any]] = {
            f"bucket {cfg.bucket}": lambda: self.s3.head_bucket(Bucket=cfg.bucket),
            f"table {cfg.table}": lambda: self.dynamodb.describe_table(TableName=cfg.table),
            f"function {cfg.function}": lambda: self.lambda_.get_function(
                FunctionName=cfg.function
            ),
            f"role {cfg.role}": lambda: self.iam.get_role(RoleName=cfg.role),
            f"queue {cfg.failed_events_queue}": lambda: self.sqs.get_queue_url(
                QueueName=cfg.failed_events_queue
            ),
        }
        left = []
        for name, lookup in lookups.items():
            try:
                lookup()
            except ClientError:
                continue
            left.append(name)
        return left

    @staticmethod
    def _ignore_missing(action: Any) -> None:
        try:
            action()
        except ClientError as exc:
            if error_code(exc) not in _MISSING:
                raise


def _unless_missing(describe: Callable[[], Any]) -> Any:
    """What ``describe`` answers, or None when the resource does not exist."""
    try:
        return describe()
    except ClientError as exc:
        if error_code(exc) != "ResourceNotFoundException":
            raise
        return None


def _settings_differ(current: dict[str, Any], wanted: dict[str, Any]) -> bool:
    current_env = (current.get("Environment") or {}).get("Variables") or {}
    return bool(
        current.get("Runtime") != wanted["Runtime"]
        or current.get("Handler") != wanted["Handler"]
        or current.get("Role") != wanted["Role"]
        or current.get("Timeout") != wanted["Timeout"]
        or current.get("MemorySize") != wanted["MemorySize"]
        or current_env != wanted["Environment"]["Variables"]
    )
