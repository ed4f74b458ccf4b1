"""The function's AWS clients, and reading an error's code.

Clients are created once per execution environment and reused by every
invocation it serves. Endpoints come from boto3's normal resolution, so
``AWS_ENDPOINT_URL`` points them at an emulator and nothing here names a host.
"""

from __future__ import annotations

import functools
import platform
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

from .wire import PreSerializedBatchWriter

__all__ = [
    "ClientError",
    "client",
    "error_code",
    "http_status",
    "row_writer",
    "row_writer_settings",
]

#: The row client's User-Agent, built once. Left to itself, botocore builds
#: its standard User-Agent string twice for every request, which was about a
#: tenth of the client's CPU per BatchWriteItem; an invocation's CPU goes
#: mostly to those requests.
#: (boto3 adds ``Botocore/<version>`` after it.)
ROW_USER_AGENT = f"csv-pipeline Python/{platform.python_version()}"


def error_code(exc: ClientError) -> str:
    """The ``Error.Code`` of an AWS error response ("" when it has none)."""
    return str(exc.response.get("Error", {}).get("Code", ""))


def http_status(exc: ClientError) -> int:
    return int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)


@functools.cache
def client(service: str) -> Any:
    """The control-plane client of ``service``: reads, manifest writes, invoking.

    Timeouts are short: a request that hangs must not keep an invocation past
    its deadline, and botocore's standard retries cover a slow moment.
    """
    config = Config(
        retries={"mode": "standard", "total_max_attempts": 5},
        connect_timeout=2,
        read_timeout=10,
    )
    return boto3.client(service, config=config)


def row_writer_settings(request_seconds: float, pool: int) -> dict[str, Any]:
    """The row client's botocore ``Config`` settings (the bench's ceiling uses them too).

    botocore does not retry here (:class:`~csv_pipeline.table_writer.BatchWriter`
    does, checking the lease before every attempt). Connecting and reading
    each get half of ``request_seconds``, so a request started before the
    writer's give-up time has ended before the invocation does.
    """
    return {
        "retries": {"mode": "standard", "total_max_attempts": 1},
        "parameter_validation": False,
        "connect_timeout": request_seconds / 2,
        "read_timeout": request_seconds / 2,
        "max_pool_connections": pool,
        "user_agent": ROW_USER_AGENT,
    }


@functools.cache
def row_writer(request_seconds: float, pool: int) -> PreSerializedBatchWriter:
    """The client rows are written with: pre-serialized, each request bounded in time."""
    config = Config(**row_writer_settings(request_seconds, pool))
    return PreSerializedBatchWriter(boto3.client("dynamodb", config=config))
