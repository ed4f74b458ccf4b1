"""BatchWriteItem with a body serialized by one ``json.dumps``.

Items are built in DynamoDB's own JSON wire format (``{"S": ...}``), so
botocore's per-call parameter validation and model-driven serialization —
walking every attribute of all 25 items in Python — only reproduce a
structure that is already right. Profiling the handler showed that walk as
the largest client-side cost (about a third of the CPU of a 10k-row file),
and in the Lambda that CPU is time the writes wait for.

:class:`PreSerializedBatchWriter` keeps everything else botocore does —
endpoint resolution, signing, retries of throttling and 5xx responses,
error parsing — and swaps only the request body, through botocore's public
``before-call`` event. Should botocore ever speak something other than JSON
to DynamoDB, it falls back to the ordinary call.
"""

from __future__ import annotations

import json
import threading
from typing import Any

_EVENT = "before-call.dynamodb.BatchWriteItem"


class PreSerializedBatchWriter:
    """``batch_write_item(RequestItems=...)`` for a low-level DynamoDB client.

    Give it a client of its own, created with ``parameter_validation=False``:
    the placeholder parameters it passes to botocore are not the request.
    """

    def __init__(self, client: Any) -> None:
        self._client = client
        self._pending = threading.local()
        self.enabled = client.meta.service_model.protocol == "json"
        if self.enabled:
            client.meta.events.register(_EVENT, self._swap_body)

    def _swap_body(self, params: dict[str, Any], **_: Any) -> None:
        body = getattr(self._pending, "body", None)
        if body is not None:
            params["body"] = body

    def batch_write_item(self, RequestItems: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
        if not self.enabled:
            return dict(self._client.batch_write_item(RequestItems=RequestItems))
        self._pending.body = json.dumps(
            {"RequestItems": RequestItems}, ensure_ascii=False, separators=(",", ":")
        ).encode("utf-8")
        try:
            return dict(self._client.batch_write_item(RequestItems={}))
        finally:
            self._pending.body = None
