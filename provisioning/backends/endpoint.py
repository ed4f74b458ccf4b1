"""The ``endpoint`` backend: an emulator somebody else already runs.

Typical use is LocalStack from docker-compose on ``http://localhost:4566``.
Nothing is started or stopped; ``start`` only checks that the URL answers.
"""

from __future__ import annotations

from .base import DEFAULT_REGION, Backend, BackendUnavailable, Endpoint, wait_until_healthy

#: Health paths tried in order: LocalStack's, then MiniStack's.
HEALTH_PATHS = ("/_localstack/health", "/_ministack/health")


class ExistingEndpointBackend(Backend):
    name = "endpoint"

    def __init__(self, url: str | None, region: str = DEFAULT_REGION, timeout: float = 10.0):
        super().__init__(region)
        if not url:
            raise BackendUnavailable(
                "the 'endpoint' backend needs a URL: pytest --csv-pipeline-endpoint-url URL "
                "(env CSV_PIPELINE_ENDPOINT_URL), CLI --endpoint-url URL"
            )
        self.url = url.rstrip("/")
        self.timeout = timeout

    def start(self) -> Endpoint:
        errors = []
        for path in HEALTH_PATHS:
            try:
                wait_until_healthy(self.url + path, timeout=self.timeout / len(HEALTH_PATHS))
                break
            except BackendUnavailable as exc:
                errors.append(str(exc))
        else:
            raise BackendUnavailable(
                f"nothing healthy at {self.url} ({'; '.join(errors)}); start the emulator "
                "(e.g. docker compose up -d) or pass the right --csv-pipeline-endpoint-url"
            )
        self._endpoint = Endpoint(url=self.url, region=self.region)
        return self._endpoint

    def stop(self) -> None:
        self._endpoint = None
