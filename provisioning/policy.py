"""IAM documents for the function: who may assume the role, and what it may do.

Least privilege: read objects of the one bucket, write and query the one
table, write its own log group, invoke itself (a file longer than one
invocation's timeout is continued by a follow-up invocation), and send to
its one failed-events queue (Lambda delivers an event that failed every
asynchronous retry to the on-failure destination with the function's own
role). No ``*`` actions, no ``*`` resources.
"""

from __future__ import annotations

from typing import Any

LAMBDA_TRUST_POLICY: dict[str, Any] = {
    "Version": "2012-10-17",
    "Statement": [
        {
            "Effect": "Allow",
            "Principal": {"Service": "lambda.amazonaws.com"},
            "Action": "sts:AssumeRole",
        }
    ],
}


def function_policy(
    *,
    bucket_arn: str,
    table_arn: str,
    log_group_arn: str,
    function_arn: str,
    failed_events_queue_arn: str,
) -> dict[str, Any]:
    """The inline policy of the function's role."""
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "ReadUploadedObjects",
                "Effect": "Allow",
                "Action": ["s3:GetObject"],
                "Resource": [f"{bucket_arn}/*"],
            },
            {
                "Sid": "WriteRowsAndManifests",
                "Effect": "Allow",
                "Action": [
                    "dynamodb:BatchWriteItem",
                    "dynamodb:PutItem",
                    "dynamodb:UpdateItem",
                    "dynamodb:GetItem",
                    "dynamodb:Query",
                ],
                "Resource": [table_arn],
            },
            {
                "Sid": "ContinueLongFiles",
                "Effect": "Allow",
                "Action": ["lambda:InvokeFunction"],
                "Resource": [function_arn],
            },
            {
                "Sid": "SendFailedEvents",
                "Effect": "Allow",
                "Action": ["sqs:SendMessage"],
                "Resource": [failed_events_queue_arn],
            },
            {
                "Sid": "WriteOwnLogs",
                "Effect": "Allow",
                "Action": ["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents"],
                "Resource": [log_group_arn, f"{log_group_arn}:*"],
            },
        ],
    }
