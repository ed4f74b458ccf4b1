"""The ``aws`` backend: real AWS, reached with boto3's usual credentials and region.

Nothing is started. :meth:`RealAwsBackend.start` asks STS who the
credentials belong to and returns ``Endpoint(url=None, region)``, so every
client resolves credentials, region and endpoint the way boto3 always does
(``AWS_PROFILE``, ``AWS_ACCESS_KEY_ID``…, ``AWS_REGION``; boto3 also honours
``AWS_ENDPOINT_URL``, which is how the harness's own tests stand an emulator
in for AWS).

Deploying to an account costs money and leaves resources behind if a run is
cut short, so:

* a run must opt in (:data:`ALLOW_ENV`, the pytest option
  ``--csv-pipeline-allow-real-aws`` or the CLI's ``--allow-real-aws``); :func:`refusal` is what
  it is told otherwise: the account, the region and what a run costs;
* the stacks a session deploys are handed to :meth:`RealAwsBackend.track`
  and destroyed by :meth:`RealAwsBackend.stop` (the session finalizer, and
  ``atexit`` for an interrupted session); the stacks are *fresh*
  (:class:`~provisioning.stack.Stack`), so only what they created is removed;
* between ``start`` and ``stop`` SIGTERM (and SIGINT, where the process was
  started with it ignored) raises ``KeyboardInterrupt``, so the finalizers
  run instead of the process dying with the resources in place; while
  ``stop`` destroys, both signals wait until it is done.

Only SIGKILL (or a power cut) leaves resources: every name carries the run's
suffix, which the pytest header prints.
"""

from __future__ import annotations

import os
import signal
import threading
from dataclasses import dataclass
from types import FrameType
from typing import TYPE_CHECKING, Any

import boto3
from botocore.exceptions import BotoCoreError, ClientError

from .base import Backend, BackendUnavailable, Endpoint, signals_held

if TYPE_CHECKING:
    from ..stack import Stack

#: Set to ``1`` to let a run deploy to the account the credentials belong to.
ALLOW_ENV = "CSV_PIPELINE_ALLOW_REAL_AWS"
_YES = ("1", "true", "yes")
_NO = ("", "0", "false", "no")

CREDENTIALS_HINT = (
    "set AWS_PROFILE (a profile from ~/.aws/config, e.g. after `aws configure` or "
    "`aws sso login --profile NAME`) or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
    "(plus AWS_SESSION_TOKEN for temporary credentials)"
)
REGION_HINT = "set AWS_REGION (or AWS_DEFAULT_REGION, or region= in the profile)"


@dataclass(frozen=True)
class Identity:
    """Who the credentials are and where calls go: the facts a person must confirm."""

    account: str
    arn: str
    region: str

    def __str__(self) -> str:
        return f"account {self.account} ({self.arn}), region {self.region}"


def identify(region: str | None = None) -> Identity:
    """``sts get-caller-identity`` with boto3's usual chain; creates nothing.

    Raises BackendUnavailable naming what to set when there are no usable
    credentials or no region.
    """
    try:
        session = boto3.session.Session(region_name=region)
        if session.get_credentials() is None:
            raise BackendUnavailable(
                f"the aws backend found no AWS credentials: {CREDENTIALS_HINT}"
            )
        where = session.region_name
        if not where:
            raise BackendUnavailable(f"the aws backend found no AWS region: {REGION_HINT}")
        answer = session.client("sts", region_name=where).get_caller_identity()
    except (BotoCoreError, ClientError) as exc:
        raise BackendUnavailable(
            f"the aws backend could not confirm the credentials with STS ({exc}): "
            f"{CREDENTIALS_HINT}"
        ) from exc
    return Identity(account=str(answer["Account"]), arn=str(answer["Arn"]), region=where)


def allowed(flag: bool) -> bool:
    """Whether the run opted in: the flag, or :data:`ALLOW_ENV` set to 1/true/yes."""
    raw = os.environ.get(ALLOW_ENV, "").strip().lower()
    if raw not in _YES + _NO:
        raise BackendUnavailable(
            f"{ALLOW_ENV}={os.environ[ALLOW_ENV]!r}: set it to 1 to allow real AWS, or unset it"
        )
    return flag or raw in _YES


def refusal(identity: Identity, option: str = "--allow-real-aws", cost: str = "") -> str:
    """Why a run without the opt-in stops, and what going ahead would mean (and cost)."""
    expected = f" Expected cost: {cost}." if cost else ""
    return (
        f"the aws backend deploys to real AWS: {identity}. It creates its own suffixed S3 "
        "bucket, DynamoDB table, IAM role, Lambda function and SQS queue there and removes "
        f"them at the end.{expected} Nothing has been created. To go "
        f"ahead pass {option} or set {ALLOW_ENV}=1."
    )


class RealAwsBackend(Backend):
    """Real AWS; ``stop`` destroys every stack handed to :meth:`track`."""

    name = "aws"

    def __init__(self, region: str | None = None) -> None:
        super().__init__(region or "")
        self._asked_region = region
        self.identity: Identity | None = None
        self._stacks: list[Stack] = []
        self._handlers: dict[int, Any] = {}

    def start(self) -> Endpoint:
        if self._endpoint is not None:
            return self._endpoint
        self.identity = identify(self._asked_region)
        self.region = self.identity.region
        self._interrupt_on_signals()
        self._endpoint = Endpoint(url=None, region=self.region)
        return self._endpoint

    def track(self, stack: Stack) -> None:
        """Destroy ``stack`` in :meth:`stop` (if it has not destroyed itself before)."""
        self._stacks.append(stack)

    def stop(self) -> None:
        """Destroy the tracked stacks, newest first; SIGINT/SIGTERM wait until it is done.

        Every stack is tried; the errors, if any, are raised together after.
        """
        self._restore_signals()
        errors: list[str] = []
        with signals_held(signal.SIGINT, signal.SIGTERM):
            while self._stacks:
                stack = self._stacks.pop()
                try:
                    stack.destroy()
                except Exception as exc:  # every stack is tried; all errors are raised below
                    errors.append(f"{stack.config.bucket}: {type(exc).__name__}: {exc}")
        self._endpoint = None
        if errors:
            raise RuntimeError("could not remove everything from AWS:\n" + "\n".join(errors))

    def _interrupt_on_signals(self) -> None:
        """SIGTERM (and an ignored SIGINT) raise KeyboardInterrupt until :meth:`stop`."""
        if threading.current_thread() is not threading.main_thread():
            return
        wanted: list[signal.Signals] = [signal.SIGTERM]
        if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
            wanted.append(signal.SIGINT)
        for sig in wanted:
            self._handlers[sig] = signal.signal(sig, _interrupt)

    def _restore_signals(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        while self._handlers:
            sig, handler = self._handlers.popitem()
            signal.signal(sig, signal.SIG_DFL if handler is None else handler)


def _interrupt(signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signal.Signals(signum).name}")


__all__: list[str] = [
    "ALLOW_ENV",
    "Identity",
    "RealAwsBackend",
    "allowed",
    "identify",
    "refusal",
]
