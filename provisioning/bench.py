"""``python -m provisioning bench``: throughput, Lambda memory and start-up, from one run.

Everything is measured on one emulator, one figure after another, because
absolute timings on a shared machine are noise; what carries meaning is the
ratio of two figures taken minutes apart on the same endpoint:

* **raw** — rows/s of a plain boto3 ``Table.batch_writer()`` loop writing,
  from this process, exactly the items the pipeline writes for the file;
* **pipeline** — rows/s from the start of the upload until the manifest says
  COMPLETE for that ETag (S3 event, Lambda, parsing, writes, clean-up);
* **ratio** — pipeline ÷ raw, per file size; the headline is the largest;
* **peak RSS** — the Lambda process's own peak resident set size
  (``getrusage``, reported in its "Finished" log line) for a small and a
  large file, each in a fresh execution environment: the growth is what the
  file's size costs in memory;
* **start-up** — seconds from ``start()`` to a healthy endpoint for every
  backend that can run here.

The stack is deployed under its own names, so a bench never touches the
default stack's bucket or table.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import boto3
from boto3.dynamodb.types import TypeDeserializer

from csv_pipeline.parsing import parse_bytes

from .backends import BACKEND_NAMES, Backend, BackendUnavailable, Endpoint, select_backend
from .backends.base import EMULATOR_CREDENTIALS
from .ingestion import FINAL_STATUSES, PipelineClient
from .stack import Stack, StackConfig

#: Targets the figures are judged against (``--check`` turns them into the exit code).
TARGET_RATIO = 0.9
TARGET_RSS_GROWTH_MB = 10.0

DEFAULT_ROWS = (10_000, 100_000)
DEFAULT_RSS_ROWS = (10_000, 1_000_000)

BENCH_STACK = StackConfig(
    bucket="csv-bench-bucket",
    table="csv-bench-data",
    function="csv-bench-processor",
    role="csv-bench-role",
    # One invocation for the largest file, so its peak RSS is one process's.
    timeout_s=900,
)

_CITIES = ("Seattle", "Denver", "Austin", "", "Zürich", "Boston", "Lyon", "Kyoto")
_FINISHED = re.compile(r"Finished (?P<source>.+): \d+ rows written.*peak RSS (?P<mb>[\d.]+) MB")


def sample_csv(rows: int) -> bytes:
    """A deterministic file of ``rows`` records: 6 columns, blanks, quoting, non-ASCII."""
    lines = ["id,name,email,city,amount,note\n"]
    for i in range(1, rows + 1):
        note = f'"checked, {i}"' if i % 7 == 0 else ("" if i % 5 == 0 else "plain")
        lines.append(
            f"{i},name-{i},user{i}@example.com,{_CITIES[i % len(_CITIES)]},"
            f"{(i * 37) % 100000 / 100:.2f},{note}\n"
        )
    return "".join(lines).encode("utf-8")


def python_items(source: str, body: bytes) -> list[dict[str, Any]]:
    """The items the pipeline writes for ``body``, as the resource API takes them."""
    deserializer = TypeDeserializer()
    _, outcomes = parse_bytes(body, source)
    items = []
    for outcome in outcomes:
        item = {k: deserializer.deserialize(v) for k, v in outcome.item.items()}  # type: ignore[union-attr]
        items.append(item)
    return items


@dataclass
class SizeResult:
    rows: int
    raw_rows_per_s: float
    pipeline_rows_per_s: float

    @property
    def ratio(self) -> float:
        return self.pipeline_rows_per_s / self.raw_rows_per_s


@dataclass
class BenchResult:
    backend: str
    startup_s: float
    sizes: list[SizeResult] = field(default_factory=list)
    rss_mb: dict[int, float] = field(default_factory=dict)
    startup_by_backend: dict[str, float] = field(default_factory=dict)
    unavailable: dict[str, str] = field(default_factory=dict)

    @property
    def headline(self) -> SizeResult:
        return max(self.sizes, key=lambda s: s.rows)

    @property
    def rss_growth_mb(self) -> float:
        small, large = min(self.rss_mb), max(self.rss_mb)
        return self.rss_mb[large] - self.rss_mb[small]

    def meets_targets(self) -> bool:
        return self.headline.ratio >= TARGET_RATIO and self.rss_growth_mb <= TARGET_RSS_GROWTH_MB

    def to_json(self) -> dict[str, Any]:
        small, large = min(self.rss_mb), max(self.rss_mb)
        return {
            "backend": self.backend,
            "raw_rows_per_s": round(self.headline.raw_rows_per_s, 1),
            "pipeline_rows_per_s": round(self.headline.pipeline_rows_per_s, 1),
            "ratio": round(self.headline.ratio, 3),
            "rows": self.headline.rows,
            "by_rows": {
                str(s.rows): {
                    "raw_rows_per_s": round(s.raw_rows_per_s, 1),
                    "pipeline_rows_per_s": round(s.pipeline_rows_per_s, 1),
                    "ratio": round(s.ratio, 3),
                }
                for s in self.sizes
            },
            "rss_10k_mb": round(self.rss_mb[small], 1),
            "rss_1m_mb": round(self.rss_mb[large], 1),
            "rss_rows": [small, large],
            "rss_growth_mb": round(self.rss_growth_mb, 1),
            "startup_s": round(self.startup_s, 2),
            "startup_by_backend": {k: round(v, 2) for k, v in self.startup_by_backend.items()},
            "unavailable": self.unavailable,
            "targets": {"ratio": TARGET_RATIO, "rss_growth_mb": TARGET_RSS_GROWTH_MB},
            "meets_targets": self.meets_targets(),
        }


def format_report(result: BenchResult) -> str:
    """The figures as a text table."""
    out = [f"backend: {result.backend}", ""]
    out.append(f"{'rows':>9} | {'raw rows/s':>10} | {'pipeline rows/s':>15} | {'ratio':>5}")
    out.append("-" * 49)
    for s in result.sizes:
        out.append(
            f"{s.rows:>9,} | {s.raw_rows_per_s:>10,.0f} | {s.pipeline_rows_per_s:>15,.0f} | "
            f"{s.ratio:>5.2f}"
        )
    out.append(f"target: ratio >= {TARGET_RATIO} (largest file)")
    out.append("")
    out.append(f"{'rows':>9} | Lambda peak RSS")
    out.append("-" * 27)
    for rows, mb in sorted(result.rss_mb.items()):
        out.append(f"{rows:>9,} | {mb:>8.1f} MB")
    out.append(f"growth: {result.rss_growth_mb:+.1f} MB (target <= {TARGET_RSS_GROWTH_MB:.0f} MB)")
    out.append("")
    out.append("backend start-up (start to healthy):")
    for name, seconds in result.startup_by_backend.items():
        out.append(f"  {name:<20} {seconds:6.2f} s")
    for name, reason in result.unavailable.items():
        out.append(f"  {name:<20} unavailable: {reason.split('. ')[0]}")
    out.append("")
    out.append("meets targets: " + ("yes" if result.meets_targets() else "NO"))
    return "\n".join(out)


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else text


class Bench:
    """The measurements, against a started endpoint with the bench stack deployed."""

    def __init__(self, endpoint: Endpoint, config: StackConfig, timeout: float) -> None:
        self.endpoint = endpoint
        self.config = config
        self.timeout = timeout
        self.client = PipelineClient(endpoint, config)
        self.lambda_ = endpoint.client("lambda")
        self.logs = endpoint.client("logs")
        kwargs: dict[str, Any] = {"region_name": endpoint.region}
        if endpoint.url is not None:
            kwargs.update(endpoint_url=endpoint.url, **EMULATOR_CREDENTIALS)
        self.table = boto3.resource("dynamodb", **kwargs).Table(config.table)

    def raw(self, rows: int, body: bytes) -> float:
        """Rows/s of a plain ``batch_writer`` loop over the pipeline's items."""
        items = python_items(self.client.source(f"raw-{rows}.csv"), body)
        started = time.monotonic()
        with self.table.batch_writer() as writer:
            for item in items:
                writer.put_item(Item=item)
        return rows / (time.monotonic() - started)

    def pipeline(self, key: str, rows: int, body: bytes) -> float:
        """Rows/s from the start of the upload to a COMPLETE manifest."""
        started = time.monotonic()
        etag = self.client.upload(key, body)
        manifest = self.wait_final(key, etag, started)
        elapsed = time.monotonic() - started
        if manifest.get("status") != "COMPLETE" or manifest.get("rows_written") != rows:
            raise RuntimeError(f"{key}: expected {rows} rows COMPLETE, got {manifest}")
        return rows / elapsed

    def wait_final(self, key: str, etag: str, started: float) -> dict[str, Any]:
        """Poll the manifest, often at first and more gently as time passes.

        The poll interval stays near 1% of the elapsed time, so polling
        neither loads the emulator nor adds more than about 1% to a figure.
        """
        deadline = started + self.timeout
        while True:
            manifest = self.client.manifest(key)
            final = manifest and manifest.get("status") in FINAL_STATUSES
            if final and manifest.get("etag") == etag:  # type: ignore[union-attr]
                return manifest  # type: ignore[return-value]
            now = time.monotonic()
            if now > deadline:
                raise RuntimeError(
                    f"{key} not processed within {self.timeout:.0f}s; last manifest {manifest}\n"
                    + self.client.format_logs()
                )
            time.sleep(min(0.1, max(0.005, (now - started) / 100)))

    def fresh_environment(self, tag: str) -> None:
        """Make the next invocation start a new execution environment (new process)."""
        current = self.lambda_.get_function_configuration(FunctionName=self.config.function)
        variables = dict((current.get("Environment") or {}).get("Variables") or {})
        variables["BENCH_ENVIRONMENT"] = tag
        self.lambda_.update_function_configuration(
            FunctionName=self.config.function, Environment={"Variables": variables}
        )
        self.lambda_.get_waiter("function_updated_v2").wait(
            FunctionName=self.config.function, WaiterConfig={"Delay": 1, "MaxAttempts": 120}
        )

    def peak_rss(self, rows: int, body: bytes) -> float:
        """The Lambda's peak RSS (MB) for one file, in a fresh environment."""
        key = f"rss-{rows}-{time.time_ns()}.csv"
        self.fresh_environment(key)
        since_ms = int(time.time() * 1000) - 1000
        self.pipeline(key, rows, body)
        source = self.client.source(key)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            for line in self.finished_lines(since_ms):
                match = _FINISHED.search(line)
                if match and match.group("source") == source:
                    return float(match.group("mb"))
            time.sleep(0.5)
        raise RuntimeError(f"no 'Finished {source}' log line with the peak RSS")

    def finished_lines(self, since_ms: int) -> list[str]:
        """The function's "Finished" log lines (filtered server-side: a large
        file logs tens of thousands of progress lines, more than one page)."""
        args: dict[str, Any] = {
            "logGroupName": self.config.log_group,
            "startTime": since_ms,
            "filterPattern": '"peak RSS"',
        }
        lines: list[str] = []
        while True:
            page = self.logs.filter_log_events(**args)
            lines.extend(event["message"] for event in page.get("events", []))
            if not page.get("nextToken"):
                return lines
            args["nextToken"] = page["nextToken"]


def measure_startup(
    names: list[str], endpoint_url: str | None
) -> tuple[dict[str, float], dict[str, str]]:
    """Start and stop each backend once; seconds to healthy, or why it cannot run."""
    seconds: dict[str, float] = {}
    unavailable: dict[str, str] = {}
    for name in names:
        try:
            backend = select_backend(name, endpoint_url=endpoint_url).backend
        except BackendUnavailable as exc:
            unavailable[name] = _first_line(str(exc))
            continue
        _say(f"start-up: {name} ...")
        started = time.monotonic()
        try:
            backend.start()
            seconds[name] = time.monotonic() - started
        except BackendUnavailable as exc:
            unavailable[name] = _first_line(str(exc))
        finally:
            backend.stop()
    return seconds, unavailable


def run(
    backend_name: str,
    endpoint_url: str | None,
    rows: list[int],
    rss_rows: list[int],
    timeout: float,
    all_backends: bool = True,
) -> BenchResult:
    """Every measurement, in one run."""
    selection = select_backend(backend_name, endpoint_url=endpoint_url)
    backend: Backend = selection.backend
    others = [n for n in BACKEND_NAMES if n not in ("auto", "endpoint", backend.name)]
    startup, unavailable = measure_startup(others, endpoint_url) if all_backends else ({}, {})
    _say(f"backend: {backend.name} ({selection.reason})")
    started = time.monotonic()
    with backend as endpoint:
        startup_s = time.monotonic() - started
        if backend.name != "endpoint":
            startup[backend.name] = startup_s
        result = BenchResult(
            backend=backend.name,
            startup_s=startup_s,
            startup_by_backend=dict(sorted(startup.items())),
            unavailable=unavailable,
        )
        stack = Stack(endpoint, BENCH_STACK)
        stack.deploy()
        try:
            bench = Bench(endpoint, BENCH_STACK, timeout)
            bench.pipeline("warm-up.csv", 2, sample_csv(2))  # a warm execution environment
            for n in rows:
                body = sample_csv(n)
                _say(f"{n:,} rows: raw batch_writer ...")
                raw = bench.raw(n, body)
                _say(f"{n:,} rows: pipeline ...")
                pipeline = bench.pipeline(f"pipeline-{n}.csv", n, body)
                result.sizes.append(SizeResult(n, raw, pipeline))
            for n in rss_rows:
                _say(f"{n:,} rows: Lambda peak RSS ...")
                result.rss_mb[n] = bench.peak_rss(n, sample_csv(n))
        finally:
            if backend.name == "endpoint":
                stack.destroy()
    return result


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--rows",
        type=int,
        nargs="+",
        default=list(DEFAULT_ROWS),
        metavar="N",
        help="file sizes for raw vs pipeline throughput (default: 10000 100000)",
    )
    parser.add_argument(
        "--rss-rows",
        type=int,
        nargs=2,
        default=list(DEFAULT_RSS_ROWS),
        metavar=("SMALL", "LARGE"),
        help="file sizes for the Lambda's peak RSS (default: 10000 1000000)",
    )
    parser.add_argument("--json", action="store_true", help="end with one line of JSON")
    parser.add_argument(
        "--timeout", type=float, default=900.0, help="seconds to wait for one file (default 900)"
    )
    parser.add_argument(
        "--only-this-backend",
        action="store_true",
        help="measure start-up of the chosen backend only, not of every available one",
    )
    parser.add_argument("--check", action="store_true", help="exit 1 when a target is missed")


def command(args: argparse.Namespace) -> int:
    """Run the bench; print the table (and the JSON line)."""
    if any(n < 1 for n in [*args.rows, *args.rss_rows]) or args.rss_rows[0] >= args.rss_rows[1]:
        print("error: sizes must be positive and --rss-rows SMALL < LARGE", file=sys.stderr)
        return 2
    result = run(
        args.backend,
        args.endpoint_url,
        sorted(set(args.rows)),
        list(args.rss_rows),
        args.timeout,
        all_backends=not args.only_this_backend,
    )
    print(format_report(result), flush=True)
    if args.json:
        print(json.dumps(result.to_json(), default=_json_default), flush=True)
    return 1 if args.check and not result.meets_targets() else 0


def _json_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return float(value)
    raise TypeError(f"not JSON serializable: {value!r}")
