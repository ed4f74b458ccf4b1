"""What every backend provides: an AWS endpoint that exists between start and stop."""

from __future__ import annotations

import abc
import contextlib
import signal
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from types import FrameType
from typing import Any

import boto3
from botocore.config import Config

DEFAULT_REGION = "us-east-1"

#: Emulators accept any credentials; fixed ones keep a developer's real
#: AWS profile out of every emulator request.
EMULATOR_CREDENTIALS = {"aws_access_key_id": "test", "aws_secret_access_key": "test"}


#: The distribution whose extras bring the optional backends.
DISTRIBUTION = "csv-pipeline-harness"


class BackendUnavailable(RuntimeError):
    """The chosen backend cannot run here; the message names the fix."""


def install_hint(extra: str) -> str:
    """The command that installs one of the project's extras."""
    return f"pip install '{DISTRIBUTION}[{extra}]'"


@dataclass(frozen=True)
class Endpoint:
    """Where AWS calls go. ``url=None`` means real AWS with the usual credentials."""

    url: str | None
    region: str = DEFAULT_REGION

    def client(self, service: str, **config: Any) -> Any:
        """A boto3 client for this endpoint, with patient retries for emulators."""
        kwargs: dict[str, Any] = {"region_name": self.region}
        if self.url is not None:
            kwargs.update(endpoint_url=self.url, **EMULATOR_CREDENTIALS)
        settings = {"retries": {"mode": "standard", "max_attempts": 5}, **config}
        return boto3.client(service, config=Config(**settings), **kwargs)


class Backend(abc.ABC):
    """A source of an AWS endpoint with a start/stop lifecycle.

    ``start`` blocks until the endpoint answers; ``stop`` is idempotent and
    leaves no process or container behind. Use as a context manager.
    """

    #: Name used by ``--csv-pipeline-backend`` and the CLI's ``--backend``.
    name: str = ""

    def __init__(self, region: str = DEFAULT_REGION) -> None:
        self.region = region
        self._endpoint: Endpoint | None = None

    @property
    def endpoint(self) -> Endpoint:
        if self._endpoint is None:
            raise RuntimeError(f"backend {self.name!r} is not started")
        return self._endpoint

    @abc.abstractmethod
    def start(self) -> Endpoint:
        """Bring the endpoint up and return it once it is ready."""

    @abc.abstractmethod
    def stop(self) -> None:
        """Release everything ``start`` acquired. Safe to call twice."""

    def logs(self, tail: int = 200) -> str:
        """Recent emulator output, for failure reports. Empty when unknown."""
        return ""

    def __enter__(self) -> Endpoint:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()


def wait_until_healthy(
    url: str,
    *,
    timeout: float,
    is_alive: Any = None,
    interval: float = 0.1,
) -> None:
    """Poll an HTTP health URL until it answers 200.

    ``is_alive`` (optional) is checked between polls so a process that died
    fails fast instead of waiting out the timeout.
    """
    deadline = time.monotonic() + timeout
    last_error = "no answer"
    while time.monotonic() < deadline:
        if is_alive is not None and not is_alive():
            raise BackendUnavailable(f"emulator exited before {url} became healthy")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
                last_error = f"HTTP {response.status}"
        except (urllib.error.URLError, ConnectionError, OSError) as exc:
            last_error = str(exc)
        time.sleep(interval)
    raise BackendUnavailable(f"{url} not healthy after {timeout:.0f}s ({last_error})")


@contextlib.contextmanager
def signals_held(*signals: signal.Signals) -> Iterator[None]:
    """Hold ``signals`` back while a child is started, then deliver them as before.

    A KeyboardInterrupt raised inside ``Popen`` after the fork loses the
    child's handle, and with it the only way to stop the server (it runs in
    a session of its own). Blocking the signals instead would be inherited
    by the child. Only the main thread can change handlers (and runs them).
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    arrived: list[int] = []

    def hold(signum: int, _frame: FrameType | None) -> None:
        arrived.append(signum)

    previous = {sig: signal.signal(sig, hold) for sig in signals}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, signal.SIG_DFL if handler is None else handler)
        for signum in dict.fromkeys(arrived):
            signal.raise_signal(signum)
