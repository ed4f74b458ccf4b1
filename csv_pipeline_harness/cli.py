"""``csv-pipeline``: run, deploy, destroy and demonstrate the pipeline.

Exit codes: 0 success; 1 the pipeline did not do what was asked (e.g. the
demo file FAILED or timed out); 2 bad usage, or real AWS without the opt-in;
3 the backend is unavailable; 4 an AWS call failed (one line: the call, the
error code, AWS's message); 5 the stack would change a resource it did not
create (nothing was changed).

Without ``--endpoint-url``, ``deploy`` and ``destroy`` act on the account of
your AWS credentials; like pytest's real-AWS backend they then need
``--allow-real-aws`` (or ``CSV_PIPELINE_ALLOW_REAL_AWS=1``) and otherwise stop
before any change, naming the account and region. Whatever the endpoint,
every resource ``deploy`` creates carries the tag ``csv-pipeline:stack``;
``deploy`` changes nothing that lacks it, and ``destroy`` removes only what
carries it, listing what it left alone and why.

``--json`` (``up``, ``deploy``, ``demo``) prints one JSON document on stdout
and the human text on stderr.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError

from csv_pipeline_harness.client import Ingestion, IngestionError, PipelineClient

from .progress import ProgressBar, human_bytes
from .provisioning.aws_errors import one_line
from .provisioning.backends import (
    BACKEND_NAMES,
    Backend,
    BackendUnavailable,
    Endpoint,
    container_module,
    select_backend,
)
from .provisioning.backends.base import DEFAULT_REGION
from .provisioning.samples import sample_csv
from .provisioning.stack import OWNER_TAG, NotOurs, Stack, StackConfig, StackOutputs

EXIT_OK, EXIT_PIPELINE, EXIT_USAGE, EXIT_BACKEND, EXIT_AWS, EXIT_NOT_OURS = 0, 1, 2, 3, 4, 5


class _Output:
    """Where a command writes: human text on stdout, or on stderr when ``--json`` is given."""

    def __init__(self, as_json: bool) -> None:
        self.as_json = as_json
        self.human = sys.stderr if as_json else sys.stdout

    def say(self, text: str = "", **kwargs: Any) -> None:
        print(text, file=self.human, flush=True, **kwargs)

    def document(self, value: Any) -> None:
        """The command's JSON document, on one line of stdout with ``--json``; else nothing."""
        if self.as_json:
            print(json.dumps(value, default=str), flush=True)


def format_table(columns: Sequence[str], rows: Sequence[dict[str, Any]]) -> str:
    """Rows as an aligned text table; NULL shows as ``∅`` so blanks stand out."""
    headers = ["row", *columns]
    cells = [
        [str(r["row"])] + ["∅" if r.get(c) is None else str(r[c]) for c in columns] for r in rows
    ]
    cells = [[c.replace("\r", "\\r").replace("\n", "\\n") for c in line] for line in cells]
    widths = [max(len(h), *(len(line[i]) for line in cells)) for i, h in enumerate(headers)]
    rule = "+".join("-" * (w + 2) for w in widths)

    def line(values: Sequence[str]) -> str:
        return "|".join(f" {v:<{w}} " for v, w in zip(values, widths, strict=True))

    return "\n".join([line(headers), rule, *(line(c) for c in cells)])


def _describe_outputs(out: _Output, outputs: StackOutputs) -> None:
    out.say(f"  bucket    {outputs.bucket}")
    out.say(f"  table     {outputs.table}")
    out.say(f"  function  {outputs.function}")
    out.say(f"  role      {outputs.role_arn}")
    out.say(f"  failed-events queue  {outputs.failed_events_queue_url}")


class _StopRequested(KeyboardInterrupt):
    """SIGINT or SIGTERM arrived; ``up`` tears down and exits 0."""


def _request_stop(signum: int, _frame: object) -> None:
    raise _StopRequested(signal.Signals(signum).name)


def cmd_up(args: argparse.Namespace) -> int:
    # Both handlers explicitly: Python installs its Ctrl-C handler only when
    # SIGINT was not ignored at start-up, and a parent may have ignored it
    # (pytest-xdist workers, nohup, some CI runners).
    previous = {sig: signal.signal(sig, _request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        return _run_up(args)
    finally:
        for sig, handler in previous.items():
            if handler is not None:  # None: installed outside Python, cannot be put back
                signal.signal(sig, handler)


def _run_up(args: argparse.Namespace) -> int:
    backend: Backend | None = None
    try:
        selection = select_backend(args.backend, endpoint_url=args.endpoint_url, port=args.port)
        backend = selection.backend
        out = _Output(args.json)
        out.say(f"Starting {backend.name} ({selection.reason})...")
        started = time.monotonic()
        endpoint = backend.start()
        outputs = Stack(endpoint).deploy()
        out.say(f"Ready in {time.monotonic() - started:.1f}s. Endpoint: {endpoint.url}")
        _describe_outputs(out, outputs)
        out.document(asdict(outputs))
        out.say(
            "\nTry:\n"
            f"  aws --endpoint-url={endpoint.url} s3 cp file.csv s3://{outputs.bucket}/\n"
            f"  aws --endpoint-url={endpoint.url} dynamodb scan --table-name {outputs.table}\n"
            "(any AWS credentials work; e.g. AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test)\n"
            "Press Ctrl-C to stop."
        )
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        print("\nStopping.", flush=True)
    finally:
        # Teardown is bounded (the backends wait a few seconds at most); a
        # second Ctrl-C must not cut it short and leave the emulator behind.
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_IGN)
        if backend is not None:
            backend.stop()
    return EXIT_OK


class _Refused(Exception):
    """Real AWS without the opt-in; nothing was changed."""


def _endpoint(args: argparse.Namespace, action: str) -> Endpoint:
    """The endpoint to act on; real AWS (no ``--endpoint-url``) only with the opt-in."""
    if args.endpoint_url:
        return Endpoint(url=args.endpoint_url, region=args.region)
    from .provisioning.backends.aws import ALLOW_ENV, allowed, identify

    identity = identify()  # whose credentials: named in the refusal, checked even with it
    if not allowed(bool(args.allow_real_aws)):
        raise _Refused(
            f"{action} without --endpoint-url acts on real AWS: {identity}. Nothing has been "
            f"changed. To go ahead pass --allow-real-aws or set {ALLOW_ENV}=1; for an "
            "emulator pass --endpoint-url URL."
        )
    return Endpoint(url=None, region=args.region)


def cmd_deploy(args: argparse.Namespace) -> int:
    out = _Output(args.json)
    endpoint = _endpoint(args, "deploy")
    outputs = Stack(endpoint).deploy()
    out.say(f"Deployed stack {outputs.function} on {endpoint.url or 'AWS'} ({outputs.region}):")
    _describe_outputs(out, outputs)
    out.document(asdict(outputs))
    return EXIT_OK


def cmd_destroy(args: argparse.Namespace) -> int:
    endpoint = _endpoint(args, "destroy")
    stack = Stack(endpoint)
    report = stack.destroy()
    for line in report.lines():
        print(line)
    if report.left_alone:
        print(
            f"Left alone: {len(report.left_alone)} resource(s) without this stack's "
            f"{OWNER_TAG}={stack.config.name} tag."
        )
    print("Stack removed." if report.removed else "Nothing of this stack was found.")
    return EXIT_OK


def _ingest_with_progress(
    client: PipelineClient, key: str, path: Path | None, timeout: float
) -> Ingestion:
    """Upload (from a file, streamed) and wait, with progress bars on a terminal."""
    since_ms = int(time.time() * 1000) - 1000
    if path is None:
        size = len(sample_csv())
        etag = client.upload(key, sample_csv())
    else:
        size = path.stat().st_size
        sending = ProgressBar("upload ", size)
        etag = client.upload_file(
            key, path, progress=lambda n: sending.advance(n, human_bytes(sending.done + n))
        )
        sending.close()
    ingesting = ProgressBar("ingest ", size)

    def show(manifest: dict[str, Any] | None) -> None:
        if manifest is None or manifest.get("etag") != etag:
            ingesting.update(0, "waiting for the Lambda")
            return
        point = manifest.get("checkpoint") or {}
        if manifest.get("status") in ("COMPLETE", "FAILED"):
            ingesting.update(size, str(manifest["status"]))
        else:
            ingesting.update(
                int(point.get("offset", 0)), f"{int(point.get('records', 0)):,} records"
            )

    try:
        return client.wait(key, etag, timeout=timeout, since_ms=since_ms, progress=show)
    finally:
        ingesting.close()


def cmd_demo(args: argparse.Namespace) -> int:
    out = _Output(args.json)
    path: Path | None = args.csv
    if path is not None and not path.is_file():
        print(f"error: {path} is not a file", file=sys.stderr)
        return EXIT_USAGE
    key = path.name if path else "people.csv"
    size = path.stat().st_size if path else len(sample_csv())
    selection = select_backend(args.backend, endpoint_url=args.endpoint_url)
    out.say(f"Backend: {selection.backend.name} ({selection.reason})")
    with selection.backend as endpoint:
        config = StackConfig()
        outputs = Stack(endpoint, config).deploy()
        out.say(f"Deployed {outputs.function} on {endpoint.url}")
        out.say(f"Uploading {human_bytes(size)} to s3://{outputs.bucket}/{key} ...")
        client = PipelineClient(endpoint, config)
        try:
            result = _ingest_with_progress(client, key, path, args.timeout)
        except IngestionError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_PIPELINE
        manifest = result.manifest
        out.document(
            {
                "status": result.status,
                "source": manifest["source"],
                "rows_written": manifest["rows_written"],
                "rows_rejected": manifest["rows_rejected"],
                "error_code": manifest.get("error_code"),
                "error": manifest.get("error"),
                "columns": manifest.get("columns", []),
                "rows": result.rows,
                "rejected": manifest.get("rejected", []),
            }
        )
        out.say(
            f"\n{result.status}: {manifest['rows_written']} rows written, "
            f"{manifest['rows_rejected']} rejected  (source {manifest['source']})\n"
        )
        if result.status != "COMPLETE":
            print(f"error: {manifest.get('error')}", file=sys.stderr)
            return EXIT_PIPELINE
        out.say(format_table(manifest["columns"], result.rows[: args.limit]))
        if len(result.rows) > args.limit:
            out.say(f"... {len(result.rows) - args.limit} more rows")
        for rejection in manifest.get("rejected", []):
            out.say(f"rejected row {rejection['row']}: {rejection['reason']}")
    return EXIT_OK


def cmd_build_image(args: argparse.Namespace) -> int:
    container_module("ministack_container", "build-image")  # names the extra when missing
    from csv_pipeline_harness.devtools.image_build import ImageBuildError, build_image

    try:
        build_image(args.tag, suite=args.suite, mirror=args.mirror, force=args.force)
    except ImageBuildError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BACKEND
    return EXIT_OK


def cmd_bench(args: argparse.Namespace) -> int:
    from csv_pipeline_harness.devtools import bench

    return bench.command(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="csv-pipeline",
        description="Run and provision the S3 -> Lambda -> DynamoDB CSV pipeline.",
        epilog="Exit codes: 0 ok, 1 the pipeline failed, 2 usage (or real AWS without "
        "--allow-real-aws), 3 backend unavailable, 4 an AWS call failed, 5 a resource under "
        "the stack's name was not created by it (nothing changed).",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def backend_options(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--backend",
            choices=BACKEND_NAMES,
            default="auto",
            help="where the emulator comes from (default: auto)",
        )
        p.add_argument("--endpoint-url", help="emulator URL, for --backend=endpoint")

    up = sub.add_parser("up", help="start an emulator with the stack deployed; Ctrl-C stops it")
    backend_options(up)
    up.add_argument("--port", type=int, help="host port for the emulator (default: a free one)")
    json_option(up)
    up.set_defaults(func=cmd_up)

    for name, func, text in (
        ("deploy", cmd_deploy, "create or update the stack on an endpoint (idempotent)"),
        (
            "destroy",
            cmd_destroy,
            "remove the stack's resources (only those carrying its tag) from an endpoint",
        ),
    ):
        p = sub.add_parser(name, help=text)
        p.add_argument(
            "--endpoint-url", help="AWS endpoint; omit for real AWS (needs --allow-real-aws)"
        )
        p.add_argument("--region", default=DEFAULT_REGION, help=f"default: {DEFAULT_REGION}")
        p.add_argument(
            "--allow-real-aws",
            action="store_true",
            help="act on the account of your AWS credentials when --endpoint-url is omitted "
            "(or set CSV_PIPELINE_ALLOW_REAL_AWS=1)",
        )
        if name == "deploy":
            json_option(p)
        p.set_defaults(func=func)

    demo = sub.add_parser("demo", help="emulator + deploy + upload a CSV + print the rows")
    demo.add_argument("csv", nargs="?", type=Path, help="CSV file (default: bundled sample)")
    backend_options(demo)
    demo.add_argument("--timeout", type=float, default=120.0, help="seconds to wait (default 120)")
    demo.add_argument("--limit", type=int, default=50, help="rows to print (default 50)")
    json_option(demo)
    demo.set_defaults(func=cmd_demo)

    build = sub.add_parser(
        "build-image",
        help="build the MiniStack image offline (debootstrap + pip wheels + docker import)",
    )
    build.add_argument("--tag", help="image tag (default: the ministack-container backend's image)")
    build.add_argument("--suite", default="bookworm", help="Debian suite (default: bookworm)")
    build.add_argument("--mirror", help="Debian mirror (default: $DEBIAN_MIRROR or deb.debian.org)")
    build.add_argument("--force", action="store_true", help="rebuild even if the tag exists")
    build.set_defaults(func=cmd_build_image)

    from csv_pipeline_harness.devtools.bench import add_arguments as bench_arguments

    bench = sub.add_parser(
        "bench",
        help="measure pipeline throughput against the ceiling, Lambda peak RSS and start-up",
    )
    backend_options(bench)
    bench_arguments(bench)
    bench.set_defaults(func=cmd_bench)
    return parser


def json_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--json",
        action="store_true",
        help="print one JSON document on stdout; the human text goes to stderr",
    )


def _version() -> str:
    import csv_pipeline_harness

    return str(csv_pipeline_harness.__version__)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except (BackendUnavailable, _Refused, NotOurs, ClientError) as exc:
        message, code = _failure(exc)
        print(f"error: {message}", file=sys.stderr)
        return code


def _failure(exc: Exception) -> tuple[str, int]:
    """One line for the person, and the exit code that says what kind of failure it was."""
    if isinstance(exc, ClientError):
        return f"AWS call failed: {one_line(exc)}", EXIT_AWS
    if isinstance(exc, NotOurs):
        return str(exc), EXIT_NOT_OURS
    if isinstance(exc, _Refused):
        return str(exc), EXIT_USAGE
    return str(exc), EXIT_BACKEND
