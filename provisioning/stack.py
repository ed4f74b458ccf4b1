"""What is built on an endpoint: bucket, table, role, function, permission, notification,
and the queue where events land that failed every asynchronous retry.

``Stack.deploy`` is idempotent (a second run changes nothing and fails on
nothing; changed code or settings are updated) and works the same against
an emulator or real AWS. ``Stack.destroy`` removes everything it created.

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


class ResourceExists(RuntimeError):
    """A fresh stack found one of its names taken; the resource is left as it was."""


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
        if self.fresh and self._exists(lambda: self.s3.head_bucket(Bucket=bucket)):
            # us-east-1 answers 200 to creating a bucket one already owns: ask first.
            raise ResourceExists(f"bucket {bucket} already exists")
        try:
            self.s3.create_bucket(**args)
            self._record("bucket")
        except ClientError as exc:
            if error_code(exc) not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                raise
            if self.fresh:
                raise ResourceExists(f"bucket {bucket} already exists") from exc
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
            )
            self._record("table")
        except ClientError as exc:
            if error_code(exc) != "ResourceInUseException":
                raise
            if self.fresh:
                raise ResourceExists(f"table {table} already exists") from exc
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
        """Create the queue, or set its attributes if it exists with other ones; its URL."""
        if self.fresh and self._exists(lambda: self.sqs.get_queue_url(QueueName=name)):
            # Creating a queue that exists with the same attributes succeeds: ask first.
            raise ResourceExists(f"queue {name} already exists")
        # A queue deleted less than 60 s ago cannot be created again yet (AWS).
        deadline = time.monotonic() + 90
        while True:
            try:
                url = self.sqs.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]
                self._record("queue")
                return str(url)
            except ClientError as exc:
                code = error_code(exc)
                if code in ("QueueAlreadyExists", "QueueNameExists"):
                    if self.fresh:
                        raise ResourceExists(f"queue {name} already exists") from exc
                    url = str(self.sqs.get_queue_url(QueueName=name)["QueueUrl"])
                    self.sqs.set_queue_attributes(QueueUrl=url, Attributes=attributes)
                    log.info("updated attributes of queue %s", name)
                    return url
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
            arn = self.iam.create_role(RoleName=role, AssumeRolePolicyDocument=trust)["Role"]["Arn"]
            self._record("role")
        except ClientError as exc:
            if error_code(exc) != "EntityAlreadyExists":
                raise
            if self.fresh:
                raise ResourceExists(f"role {role} already exists") from exc
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
            lambda: self.lambda_.create_function(**settings, Code={"ZipFile": zip_bytes}),
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

    def _ensure_notification(self, function_arn: str) -> None:
        configuration: dict[str, Any] = {
            "Id": f"{self.config.function}-on-create",
            "LambdaFunctionArn": function_arn,
            "Events": ["s3:ObjectCreated:*"],
        }
        if self.config.suffix:
            configuration["Filter"] = {
                "Key": {"FilterRules": [{"Name": "suffix", "Value": self.config.suffix}]}
            }
        # S3 checks that it may invoke the function; on AWS a permission just
        # added can take seconds to be seen ("Unable to validate ...").
        retry_while(
            lambda: self.s3.put_bucket_notification_configuration(
                Bucket=self.config.bucket,
                NotificationConfiguration={"LambdaFunctionConfigurations": [configuration]},
            ),
            lambda exc: error_code(exc) == "InvalidArgument" and "Unable to validate" in str(exc),
            within=60,
        )

    # -- destroy --------------------------------------------------------------

    def destroy(self) -> None:
        """Remove every resource ``deploy`` creates; missing ones are fine.

        A fresh stack removes only what it recorded in ``created`` (the
        function's log group, permission and failure destination go with the
        function, the notification with the bucket); each kind leaves the
        record once removed, so a second ``destroy`` does nothing.
        """
        cfg = self.config
        steps: list[tuple[str, Callable[[], Any]]] = [
            (
                "bucket",
                lambda: self.s3.put_bucket_notification_configuration(
                    Bucket=cfg.bucket, NotificationConfiguration={}
                ),
            ),
            (
                "function",
                lambda: self.lambda_.delete_function_event_invoke_config(FunctionName=cfg.function),
            ),
            ("function", lambda: self.lambda_.delete_function(FunctionName=cfg.function)),
            (
                "role",
                lambda: self.iam.delete_role_policy(RoleName=cfg.role, PolicyName=POLICY_NAME),
            ),
            ("role", lambda: self.iam.delete_role(RoleName=cfg.role)),
            ("table", lambda: self.dynamodb.delete_table(TableName=cfg.table)),
            ("function", lambda: self.logs.delete_log_group(logGroupName=cfg.log_group)),
            ("bucket", self._empty_and_delete_bucket),
            ("queue", self._delete_failed_events_queue),
        ]
        wanted = set(self.created) if self.fresh else {kind for kind, _ in steps}
        for kind, step in steps:
            if kind in wanted:
                self._ignore_missing(step)
        self.created = [kind for kind in self.created if kind not in wanted]

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

    def _delete_failed_events_queue(self) -> None:
        url = self.sqs.get_queue_url(QueueName=self.config.failed_events_queue)["QueueUrl"]
        self.sqs.delete_queue(QueueUrl=url)

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
        missing = {
            "NoSuchBucket",
            "NoSuchEntity",
            "ResourceNotFoundException",
            "404",
            *_NO_SUCH_QUEUE,
        }
        try:
            action()
        except ClientError as exc:
            if error_code(exc) not in missing:
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
