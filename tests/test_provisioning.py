"""Provisioning in Python: idempotent deploy, updates, complete tear-down, clean lifecycle."""

from __future__ import annotations

import contextlib
import http.server
import io
import os
import re
import signal
import socket
import subprocess
import threading
import uuid
import zipfile
from typing import Any

import pytest
from botocore.exceptions import ClientError

from csv_pipeline_harness.provisioning import stack as stack_module
from csv_pipeline_harness.provisioning.backends import (
    BackendUnavailable,
    Endpoint,
    MinistackBackend,
    select_backend,
)
from csv_pipeline_harness.provisioning.backends import ministack as ministack_module
from csv_pipeline_harness.provisioning.backends.endpoint import ExistingEndpointBackend
from csv_pipeline_harness.provisioning.packaging import HANDLER, build_zip, code_sha256
from csv_pipeline_harness.provisioning.stack import Stack, StackConfig
from csv_pipeline_harness.stacks import DeployedPipeline, stack_fixture


def scratch_config() -> StackConfig:
    """A second stack beside the session's, so these tests can change and destroy it."""
    tag = uuid.uuid4().hex[:8]
    return StackConfig(
        bucket=f"scratch-{tag}",
        table=f"scratch-{tag}",
        function=f"scratch-{tag}",
        role=f"scratch-{tag}",
    )


def queue_attributes(stack: Stack) -> dict[str, str]:
    """The failed-events queue's settings (message counts left out)."""
    url = stack.sqs.get_queue_url(QueueName=stack.config.failed_events_queue)["QueueUrl"]
    attributes = stack.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    return {k: v for k, v in attributes.items() if not k.startswith("ApproximateNumber")}


def invoke_config(stack: Stack) -> dict:
    config = stack.lambda_.get_function_event_invoke_config(FunctionName=stack.config.function)
    config.pop("ResponseMetadata", None)
    return config


def snapshot(stack: Stack) -> dict:
    cfg = stack.config
    function = stack.lambda_.get_function_configuration(FunctionName=cfg.function)
    notification = stack.s3.get_bucket_notification_configuration(Bucket=cfg.bucket)
    notification.pop("ResponseMetadata", None)
    return {
        "code": function["CodeSha256"],
        "modified": function["LastModified"],
        "env": function["Environment"]["Variables"],
        "notification": notification,
        "policy": stack.iam.get_role_policy(RoleName=cfg.role, PolicyName=stack_module.POLICY_NAME)[
            "PolicyDocument"
        ],
        "queue": queue_attributes(stack),
        "invoke_config": invoke_config(stack),
    }


def record_calls(stack: Stack, operations: list[str]) -> list[str]:
    """Names of the given SQS and Lambda operations as ``stack`` calls them from now on."""
    calls: list[str] = []
    for client in (stack.sqs, stack.lambda_):
        service = client.meta.service_model.service_name
        for operation in operations:

            def seen(operation: str = operation, **_: object) -> None:
                calls.append(operation)

            client.meta.events.register(f"before-call.{service}.{operation}", seen)
    return calls


#: A stack beside the session's, deployed for one test, which may change it.
scratch = stack_fixture(scope="function", prefix="scratch", canary=False)


@pytest.mark.e2e
def test_deploy_twice_changes_nothing(scratch: DeployedPipeline) -> None:
    stack, first = scratch.stack, scratch.outputs
    before = snapshot(stack)
    writes = record_calls(
        stack,
        ["SetQueueAttributes", "PutFunctionEventInvokeConfig", "UpdateFunctionEventInvokeConfig"],
    )
    second = stack.deploy()
    assert second == first
    assert snapshot(stack) == before
    assert writes == []  # the queue and the invoke config were left as they were
    assert before["code"] == code_sha256(build_zip())
    assert before["queue"]["QueueArn"] == first.failed_events_queue_arn
    assert before["invoke_config"]["DestinationConfig"]["OnFailure"] == {
        "Destination": first.failed_events_queue_arn
    }


@pytest.mark.e2e
def test_deploy_wires_the_notification_to_the_function(
    scratch: DeployedPipeline, aws_endpoint: Endpoint
) -> None:
    stack, outputs = scratch.stack, scratch.outputs
    config = stack.s3.get_bucket_notification_configuration(Bucket=outputs.bucket)
    [rule] = config["LambdaFunctionConfigurations"]
    assert rule["LambdaFunctionArn"] == outputs.function_arn
    assert rule["Events"] == ["s3:ObjectCreated:*"]
    assert rule["Filter"]["Key"]["FilterRules"] == [{"Name": "suffix", "Value": ".csv"}]
    function = stack.lambda_.get_function_configuration(FunctionName=outputs.function)
    assert function["State"] == "Active" and function["Handler"] == HANDLER
    assert function["Environment"]["Variables"]["TABLE_NAME"] == outputs.table
    # Long files continue in the function's own next invocation.
    recursion = stack.lambda_.get_function_recursion_config(FunctionName=outputs.function)
    assert recursion["RecursiveLoop"] == "Allow"
    # Events that fail every retry go to the stack's own queue, kept 14 days.
    queue = queue_attributes(stack)
    assert outputs.failed_events_queue_url.endswith(f"/{outputs.function}-failed-events")
    assert queue["QueueArn"] == outputs.failed_events_queue_arn
    assert outputs.failed_events_queue_arn.split(":")[3] == aws_endpoint.region
    assert queue["MessageRetentionPeriod"] == str(14 * 24 * 3600)
    config = invoke_config(stack)
    assert config["MaximumRetryAttempts"] == 2
    assert config["DestinationConfig"]["OnFailure"] == {
        "Destination": outputs.failed_events_queue_arn
    }
    assert not config["DestinationConfig"].get("OnSuccess", {}).get("Destination")


@pytest.mark.e2e
def test_changed_code_and_settings_are_updated(
    scratch: DeployedPipeline, aws_endpoint: Endpoint, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = scratch.config

    original = build_zip()
    buffer = io.BytesIO(original)
    with zipfile.ZipFile(buffer, "a") as archive:
        archive.writestr("csv_pipeline/_changed.py", "CHANGED = True\n")
    changed = buffer.getvalue()
    monkeypatch.setattr(stack_module, "build_zip", lambda **_: changed)
    updated = StackConfig(**{**config.__dict__, "progress_every": 7, "max_retry_attempts": 0})
    stack = Stack(aws_endpoint, updated)
    # Someone shortened the queue's retention by hand.
    url = stack.sqs.get_queue_url(QueueName=config.failed_events_queue)["QueueUrl"]
    stack.sqs.set_queue_attributes(QueueUrl=url, Attributes={"MessageRetentionPeriod": "60"})
    outputs = stack.deploy()
    state = snapshot(stack)
    assert state["code"] == code_sha256(changed) != code_sha256(original)
    assert state["env"]["PROGRESS_EVERY"] == "7"
    assert state["invoke_config"]["MaximumRetryAttempts"] == 0
    assert state["invoke_config"]["DestinationConfig"]["OnFailure"] == {
        "Destination": outputs.failed_events_queue_arn
    }
    assert state["queue"]["MessageRetentionPeriod"] == str(14 * 24 * 3600)


def test_retry_attempts_outside_lambdas_range_are_refused() -> None:
    with pytest.raises(ValueError, match="max_retry_attempts"):
        StackConfig(max_retry_attempts=3)
    with pytest.raises(ValueError, match="max_retry_attempts"):
        StackConfig(max_retry_attempts=-1)


@pytest.mark.e2e
def test_destroy_removes_everything_and_can_run_twice(aws_endpoint: Endpoint) -> None:
    stack = Stack(aws_endpoint, scratch_config())
    stack.deploy()
    assert [name.split()[0] for name in stack.remaining()] == [
        "bucket",
        "table",
        "function",
        "role",
        "queue",
    ]
    stack.s3.put_object(Bucket=stack.config.bucket, Key="x.txt", Body=b"left behind")
    stack.destroy()
    stack.destroy()
    cfg = stack.config
    assert stack.remaining() == []
    for check in (
        lambda: stack.lambda_.get_function_event_invoke_config(FunctionName=cfg.function),
        lambda: stack.lambda_.list_function_event_invoke_configs(FunctionName=cfg.function),
    ):
        with pytest.raises(ClientError):
            check()
    assert stack.sqs.list_queues(QueueNamePrefix=cfg.function).get("QueueUrls", []) == []


@pytest.mark.e2e
def test_destroy_removes_the_queue_when_the_function_is_already_gone(
    aws_endpoint: Endpoint,
) -> None:
    stack = Stack(aws_endpoint, scratch_config())
    stack.deploy()
    stack.lambda_.delete_function(FunctionName=stack.config.function)
    stack.destroy()
    with pytest.raises(ClientError):
        stack.sqs.get_queue_url(QueueName=stack.config.failed_events_queue)


def test_lambda_zip_is_reproducible_and_holds_only_the_package() -> None:
    first, second = build_zip(), build_zip()
    assert first == second
    names = zipfile.ZipFile(io.BytesIO(first)).namelist()
    assert names == sorted(names)
    assert "csv_pipeline/handler.py" in names
    assert all(n.startswith("csv_pipeline/") and n.endswith(".py") for n in names)


def test_embedded_backend_stops_its_whole_process_group() -> None:
    backend = MinistackBackend()
    try:
        endpoint = backend.start()
        process = backend._process
        assert process is not None
        assert endpoint.client("s3").list_buckets()["Buckets"] == []
    finally:
        backend.stop()
    backend.stop()  # idempotent
    assert process.poll() is not None
    with pytest.raises(ProcessLookupError):
        os.killpg(process.pid, 0)


def test_the_embedded_emulator_holds_its_port_from_the_start_and_answers_its_token() -> None:
    backend = MinistackBackend()
    try:
        endpoint = backend.start()
        port = int(endpoint.url.rsplit(":", 1)[1])
        with socket.socket() as other, pytest.raises(OSError, match="in use"):
            other.bind(("127.0.0.1", port))
        assert re.fullmatch(r"[0-9a-f]{32}", ministack_module._identity(endpoint.url) or "")
    finally:
        backend.stop()


class _Impostor(http.server.BaseHTTPRequestHandler):
    """Answers every GET with 200, as a healthy emulator would."""

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args: Any) -> None:
        pass


def test_a_port_another_server_answers_on_is_never_taken_for_our_emulator() -> None:
    """Something healthy already on the port: the start fails instead of using it."""
    impostor = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Impostor)
    thread = threading.Thread(target=impostor.serve_forever, daemon=True)
    thread.start()
    backend = MinistackBackend(port=impostor.server_address[1], startup_timeout=10)
    try:
        with pytest.raises(BackendUnavailable, match=r"cannot bind 127\.0\.0\.1"):
            backend.start()
        assert backend._process is None
    finally:
        backend.stop()
        impostor.shutdown()
        impostor.server_close()


def test_a_server_that_does_not_answer_our_token_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(ministack_module, "_identity", lambda url: "someone-elses-token")
    backend = MinistackBackend(startup_timeout=30)
    with pytest.raises(BackendUnavailable, match="not as the emulator this process started"):
        backend.start()
    assert backend._process is None and backend._workdir is None


class _Interrupted(Exception):
    pass


def _interrupt(_signum: int, _frame: object) -> None:
    raise _Interrupted


@pytest.mark.harness
def test_a_signal_while_the_emulator_is_spawned_leaves_nothing_behind(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Ctrl-C arriving inside Popen, after the fork, must not lose the server's handle."""
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signal handlers run in the main thread only")
    spawned: list[subprocess.Popen[bytes]] = []
    real_popen = subprocess.Popen

    def popen_then_signal(*args: Any, **kwargs: Any) -> subprocess.Popen[bytes]:
        process: subprocess.Popen[bytes] = real_popen(*args, **kwargs)
        spawned.append(process)
        os.kill(os.getpid(), signal.SIGINT)  # handled before Popen would have returned
        return process

    monkeypatch.setattr(ministack_module.subprocess, "Popen", popen_then_signal)
    previous = signal.signal(signal.SIGINT, _interrupt)
    backend = MinistackBackend()
    try:
        with pytest.raises(_Interrupted):
            backend.start()
        assert backend._process is None
        assert len(spawned) == 1 and spawned[0].poll() is not None
        with pytest.raises(ProcessLookupError):
            os.killpg(spawned[0].pid, 0)
    finally:
        signal.signal(signal.SIGINT, previous)
        backend.stop()
        for process in spawned:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def test_endpoint_backend_without_an_emulator_fails_fast_with_the_fix() -> None:
    backend = ExistingEndpointBackend("http://127.0.0.1:9", timeout=1)
    with pytest.raises(BackendUnavailable, match="--csv-pipeline-endpoint-url"):
        backend.start()


def test_endpoint_backend_needs_a_url() -> None:
    with pytest.raises(BackendUnavailable, match="needs a URL"):
        select_backend("endpoint", endpoint_url=None)
