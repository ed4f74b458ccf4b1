"""What an AWS error says, read the same way by provisioning, the harness and the CLI.

Kept here rather than borrowed from the Lambda's package: the harness judges
functions that are not ours, and provisioning deploys them.
"""

from __future__ import annotations

from botocore.exceptions import ClientError


def error_code(exc: ClientError) -> str:
    """The ``Error.Code`` of an AWS error response ("" when it has none)."""
    return str(exc.response.get("Error", {}).get("Code", ""))


def one_line(exc: ClientError) -> str:
    """``CreateBucket: AccessDenied (Access Denied)``: the call, the code and AWS's message."""
    operation = getattr(exc, "operation_name", "") or "AWS call"
    message = str(exc.response.get("Error", {}).get("Message", "")).strip()
    text = f"{operation}: {error_code(exc) or 'error'}"
    return f"{text} ({message})" if message else text
