"""The embedded backend: a ``ministack`` server as a child process, no Docker."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from . import ministack_server
from .base import (
    DEFAULT_REGION,
    Backend,
    BackendUnavailable,
    Endpoint,
    install_hint,
    signals_held,
    wait_until_healthy,
)

#: Services the stack needs; the rest of ministack stays switched off.
SERVICES = "s3,dynamodb,lambda,iam,sts,logs,sqs"


def free_port() -> int:
    """A port nobody listens on right now (the kernel picks it; someone else may take it next)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def bound_socket(port: int | None) -> socket.socket:
    """A loopback TCP socket bound to ``port`` (``None``: one the kernel picks), not listening.

    Handed to the server, which listens on it: the port is held from the
    bind on, so no other process (another xdist worker's emulator included)
    can be given it in between.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.bind(("127.0.0.1", port or 0))
    except OSError as exc:
        sock.close()
        raise BackendUnavailable(f"cannot bind 127.0.0.1:{port}: {exc.strerror}") from exc
    return sock


def ministack_available() -> bool:
    return importlib.util.find_spec("ministack") is not None


class MinistackBackend(Backend):
    """Runs ministack on a free loopback port, logging every Lambda line whole.

    The server is :mod:`.ministack_server`: ``python -m ministack`` with each
    invocation's log lines kept with that invocation, as on AWS.

    The server gets its own session (process group) so ``stop`` also ends
    the Lambda worker processes it spawns, and its own temporary directory
    so parallel sessions never share S3 data or PID files. It serves a
    socket this process bound (so its port can be no one else's), answers a
    token of this start only (so the health check knows it reached its own
    server), and ends with its workers and directory when this process dies,
    however it dies (a pipe only this process holds; see
    :mod:`.ministack_server`).
    """

    name = "ministack"

    def __init__(
        self,
        region: str = DEFAULT_REGION,
        port: int | None = None,
        startup_timeout: float = 60.0,
        extra_env: dict[str, str] | None = None,
    ) -> None:
        super().__init__(region)
        self.port = port
        self.startup_timeout = startup_timeout
        self.extra_env = extra_env or {}
        self._process: subprocess.Popen[bytes] | None = None
        self._workdir: Path | None = None
        self._lifeline: int | None = None

    @property
    def log_path(self) -> Path | None:
        return self._workdir / "ministack.log" if self._workdir else None

    def start(self) -> Endpoint:
        if self._endpoint is not None:
            return self._endpoint
        if not ministack_available():
            raise BackendUnavailable(
                "the embedded backend requires the 'ministack' package (the 'emulator' extra): "
                + install_hint("emulator")
            )
        sock = bound_socket(self.port)
        port = int(sock.getsockname()[1])
        token = secrets.token_hex(16)
        lifeline_read: int | None
        lifeline_read, self._lifeline = os.pipe()
        self._workdir = Path(tempfile.mkdtemp(prefix="csv-pipeline-ministack-"))
        env = {
            **os.environ,
            ministack_server.LISTEN_FD_ENV: str(sock.fileno()),
            ministack_server.PARENT_FD_ENV: str(lifeline_read),
            ministack_server.WORKDIR_ENV: str(self._workdir),
            ministack_server.TOKEN_ENV: token,
            "GATEWAY_PORT": str(port),
            "BIND_HOST": "127.0.0.1",
            "MINISTACK_REGION": self.region,
            "SERVICES": SERVICES,
            "TMPDIR": str(self._workdir),
            "S3_DATA_DIR": str(self._workdir / "s3"),
            "LOG_LEVEL": os.environ.get("MINISTACK_LOG_LEVEL", "INFO"),
            **self.extra_env,
        }
        # The server's own AWS settings must not leak into it (it resolves
        # Lambda's endpoint itself), nor the host's credentials: the server
        # hands its AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN to every Lambda
        # it runs. Without them it uses its own dummy ones.
        for name in (
            "AWS_ENDPOINT_URL",
            "AWS_PROFILE",
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
            "AWS_SESSION_TOKEN",
            "AWS_SECURITY_TOKEN",
        ):
            if name not in self.extra_env:
                env.pop(name, None)
        url = f"http://127.0.0.1:{port}"
        try:
            with (
                open(self._workdir / "ministack.log", "wb") as log,
                signals_held(signal.SIGINT, signal.SIGTERM),
            ):
                self._process = subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "csv_pipeline_harness.provisioning.backends.ministack_server",
                    ],
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    start_new_session=True,
                    pass_fds=(sock.fileno(), lifeline_read),
                    # Its own directory: nothing in the caller's (a checkout,
                    # say) may shadow the installed packages it imports.
                    cwd=self._workdir,
                )
            # The server holds both now.
            sock.close()
            os.close(lifeline_read)
            lifeline_read = None
            wait_until_healthy(
                f"{url}/_ministack/health",
                timeout=self.startup_timeout,
                is_alive=lambda: self._process is not None and self._process.poll() is None,
            )
            answered = _identity(url)
            if answered != token:
                raise BackendUnavailable(
                    f"{url} answers, but not as the emulator this process started "
                    f"(identity {answered!r})"
                )
        except BackendUnavailable as exc:
            output = self.logs(40)
            self.stop()
            raise BackendUnavailable(f"ministack did not start: {exc}\n{output}") from exc
        except BaseException:  # e.g. Ctrl-C: nothing may outlive a failed start
            self.stop()
            raise
        finally:
            sock.close()
            if lifeline_read is not None:
                os.close(lifeline_read)
        self._endpoint = Endpoint(url=url, region=self.region)
        return self._endpoint

    def stop(self) -> None:
        # The handle is dropped only once the group is gone, so a stop cut
        # short (a second Ctrl-C) can be repeated.
        process = self._process
        if process is not None and process.poll() is None:
            # The whole group: the server and any Lambda workers it forked.
            _signal_group(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                _signal_group(process.pid, signal.SIGKILL)
                process.wait(timeout=10)
        if process is not None:
            _signal_group(process.pid, signal.SIGKILL)  # stragglers in the group
        if self._lifeline is not None:
            with contextlib.suppress(OSError):
                os.close(self._lifeline)
            self._lifeline = None
        self._process = None
        self._endpoint = None
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None

    def logs(self, tail: int = 200) -> str:
        path = self.log_path
        if path is None or not path.exists():
            return ""
        lines = path.read_text(errors="replace").splitlines()
        return "\n".join(lines[-tail:])


def _identity(url: str) -> str | None:
    """What the server at ``url`` answers at its identity path (``None``: nothing)."""
    try:
        with urllib.request.urlopen(url + ministack_server.IDENTITY_PATH, timeout=5) as answer:
            return str(answer.read().decode())
    except (urllib.error.URLError, OSError):
        return None


def _signal_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)
