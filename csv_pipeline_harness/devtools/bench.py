"""``csv-pipeline bench``: throughput, Lambda memory and start-up, from one run.

Everything is measured on one emulator, one figure after another, because
absolute timings on a shared machine are noise; what carries meaning is the
ratio of figures taken minutes apart on the same endpoint. For each file size:

* **raw** — rows/s of a plain boto3 ``Table.batch_writer()`` loop writing,
  from this process, exactly the items the pipeline writes for the file;
* **ceiling** — rows/s of the same items written from this process the way
  the Lambda writes them (:class:`~csv_pipeline.table_writer.BatchWriter`
  over :class:`~csv_pipeline.wire.PreSerializedBatchWriter`, as many batches
  in flight as the function keeps): no S3, no parsing, no Lambda runtime;
* **pipeline** — rows/s from the start of the upload until the Lambda
  records COMPLETE for that ETag (S3 event, Lambda, parsing, writes,
  clean-up). The end is the manifest's own ``finished_at``, so the bench
  polls gently and its polling adds neither time nor load to the figure;
* **ceiling ratio** — pipeline ÷ ceiling, the figure the target is set on
  (the largest size is the headline); pipeline ÷ raw is reported too.

Ceiling and pipeline runs alternate, starting and ending with a ceiling
(C P C P ... P C), and each pipeline run is set against the mean of the two
ceiling runs that bracket it; the ratio is the median of those ratios. This
machine's speed drifts by a third within a minute (the same CPU loop takes
0.39-0.76 s): a pipeline run and the ceiling runs on either side of it see
nearly the same machine, and a steady drift over the three cancels out,
while the fastest ceiling and the fastest pipeline of a run may come from
different minutes.

Each measurement writes its own source, so none of them pays for another's
partition. Then, for a list of cases (``--rss``):

* **peak RSS** — the Lambda process's own peak resident set size (reported in
  its "Finished" log line), each case in a fresh execution environment: a
  sample file of N rows, or a pathological shape of a given size (one line
  with no line break, one huge quoted field of many short lines, one huge
  row among good ones). The growth over the first ``rows:`` case is what the
  case costs in memory;
* **start-up** — seconds from ``start()`` to a healthy endpoint for every
  backend that can run here.

The stack is deployed under its own names, so a bench never touches the
default stack's bucket or table.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import boto3
from boto3.dynamodb.types import TypeDeserializer

from csv_pipeline.aws import row_writer_settings
from csv_pipeline.parsing import MAX_ITEM_BYTES, Item, Record, parse_bytes
from csv_pipeline.table_writer import BatchWriter
from csv_pipeline.wire import PreSerializedBatchWriter
from csv_pipeline_harness.client import FINAL_STATUSES, PipelineClient
from csv_pipeline_harness.provisioning.backends import (
    BACKEND_NAMES,
    Backend,
    BackendUnavailable,
    Endpoint,
    select_backend,
)
from csv_pipeline_harness.provisioning.backends.base import EMULATOR_CREDENTIALS
from csv_pipeline_harness.provisioning.stack import Stack, StackConfig

#: Targets the figures are judged against (``--check`` turns them into the exit code).
TARGET_CEILING_RATIO = 0.9
TARGET_ROWS_RSS_GROWTH_MB = 10.0
TARGET_SHAPE_RSS_GROWTH_MB = 64.0

#: Batches the function keeps in flight when ``WRITE_CONCURRENCY`` is unset
#: (the default of ``csv_pipeline.settings.write_concurrency``).
LAMBDA_WRITE_CONCURRENCY = 4

#: Each write request's time bound in the function under the bench stack's
#: 900 s timeout (``csv_pipeline.settings.Deadline``: half its 10 s margin).
ROW_REQUEST_SECONDS = 5.0

DEFAULT_ROWS = (10_000, 100_000)
DEFAULT_RSS = (
    "rows:10000",
    "rows:1000000",
    "no-newline:200MB",
    "quoted-field:100MB",
    "big-row:50MB",
)

BENCH_STACK = StackConfig(
    bucket="csv-bench-bucket",
    table="csv-bench-data",
    function="csv-bench-processor",
    role="csv-bench-role",
    # One invocation for the largest file, so its peak RSS is one process's.
    timeout_s=900,
)

_CITIES = ("Seattle", "Denver", "Austin", "", "Zürich", "Boston", "Lyon", "Kyoto")
_SAMPLE_HEADER = b"id,name,email,city,amount,note\n"
_FINISHED = re.compile(r"Finished (?P<source>.+): \d+ rows written.*peak RSS (?P<mb>[\d.]+) MB")


# -- the files -----------------------------------------------------------------------


def _sample_records(first: int, last: int) -> bytes:
    """Records ``first`` to ``last`` (inclusive) of the sample file."""
    lines = []
    for i in range(first, last + 1):
        note = f'"checked, {i}"' if i % 7 == 0 else ("" if i % 5 == 0 else "plain")
        lines.append(
            f"{i},name-{i},user{i}@example.com,{_CITIES[i % len(_CITIES)]},"
            f"{(i * 37) % 100000 / 100:.2f},{note}\n"
        )
    return "".join(lines).encode("utf-8")


def sample_csv(rows: int) -> bytes:
    """A deterministic file of ``rows`` records: 6 columns, blanks, quoting, non-ASCII."""
    return _SAMPLE_HEADER + _sample_records(1, rows)


def no_newline_csv(size: int) -> bytes:
    """Header ``a``, then ``size`` bytes without a line break: one record of one field."""
    return b"".join((b"a\n", b"x" * size))


_SHORT_LINE = b"y" * 63 + b"\n"


def quoted_field_csv(size: int) -> bytes:
    """Header ``a,b``; record 1's ``b`` is one quoted field of exactly ``size``
    bytes made of 64-byte lines; record 2 is ``2,ok``."""
    lines, rest = divmod(size, len(_SHORT_LINE))
    return b"".join((b'a,b\n1,"', _SHORT_LINE * lines, b"y" * rest, b'"\n2,ok\n'))


#: The record of a ``big-row`` file that is one huge line, between 1,000 good ones each side.
BIG_ROW = 1_001


def big_row_csv(size: int) -> bytes:
    """Sample records 1-1,000, record 1,001 one line of exactly ``size`` bytes
    (its line break included), then sample records 1,002-2,001."""
    prefix = f"{BIG_ROW},big,big@example.com,Lyon,1.00,".encode("ascii")
    filler = size - len(prefix) - 1
    if filler < 0:
        raise ValueError(f"a big row takes at least {len(prefix) + 1} bytes, not {size}")
    return b"".join(
        (
            _SAMPLE_HEADER,
            _sample_records(1, BIG_ROW - 1),
            prefix,
            b"z" * filler,
            b"\n",
            _sample_records(BIG_ROW + 1, 2 * BIG_ROW - 1),
        )
    )


def finished_at(manifest: dict[str, Any]) -> float:
    """The manifest's ``finished_at`` (ISO 8601, written by the Lambda) as a Unix time."""
    return datetime.fromisoformat(str(manifest["finished_at"])).timestamp()


def wire_items(source: str, body: bytes) -> list[Item]:
    """The items the pipeline writes for ``body``, in DynamoDB's wire format."""
    _, outcomes = parse_bytes(body, source)
    return [outcome.item for outcome in outcomes if isinstance(outcome, Record)]


def python_items(source: str, body: bytes) -> list[dict[str, Any]]:
    """The items the pipeline writes for ``body``, as the resource API takes them."""
    deserializer = TypeDeserializer()
    return [
        {name: deserializer.deserialize(value) for name, value in item.items()}
        for item in wire_items(source, body)
    ]


# -- what a file must end as ---------------------------------------------------------


@dataclass(frozen=True)
class Expected:
    """The final manifest a file must get: COMPLETE, these counts, these rejections."""

    rows_written: int
    rejected_rows: tuple[int, ...] = ()
    code: str = "ITEM_TOO_LARGE"

    def mismatch(self, manifest: dict[str, Any]) -> str | None:
        """How ``manifest`` differs from what is expected (None: it does not)."""
        got_rows = [r.get("row") for r in manifest.get("rejected", [])]
        got_codes = {r.get("code") for r in manifest.get("rejected", [])}
        if (
            manifest.get("status") == "COMPLETE"
            and manifest.get("rows_written") == self.rows_written
            and manifest.get("rows_rejected") == len(self.rejected_rows)
            and got_rows == list(self.rejected_rows)
            and got_codes <= {self.code}
        ):
            return None
        want = f"COMPLETE, {self.rows_written} written, {len(self.rejected_rows)} rejected"
        if self.rejected_rows:
            want += f" (rows {list(self.rejected_rows)}, {self.code})"
        got = (
            f"{manifest.get('status')}, {manifest.get('rows_written')} written, "
            f"{manifest.get('rows_rejected')} rejected"
        )
        if got_rows:
            got += f" (rows {got_rows[:5]}, {', '.join(sorted(map(str, got_codes)))})"
        if manifest.get("error_code"):
            got += f"; {manifest.get('error_code')}: {str(manifest.get('error'))[:200]}"
        return f"expected {want}; got {got}"


# -- the peak-RSS cases --------------------------------------------------------------

#: File shapes whose one oversized record must be rejected, not held in memory.
SHAPES = ("no-newline", "quoted-field", "big-row")

_SIZE = re.compile(r"(\d+)\s*([A-Za-z]*)")
_UNITS = {
    "": 1,
    "b": 1,
    "kb": 10**3,
    "mb": 10**6,
    "gb": 10**9,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
}
_CASE_FORMS = "rows:N, no-newline:SIZE, quoted-field:SIZE or big-row:SIZE"


def parse_size(text: str) -> int:
    """Bytes of ``200MB``, ``100MiB``, ``512KB`` or a plain number of bytes."""
    match = _SIZE.fullmatch(text.strip())
    unit = _UNITS.get(match.group(2).lower()) if match else None
    if match is None or unit is None:
        raise ValueError(
            f"{text!r} is not a size: give bytes, or a whole number with KB, MB, GB, "
            "KiB, MiB or GiB (e.g. 200MB, 100MiB, 512KB)"
        )
    return int(match.group(1)) * unit


@dataclass(frozen=True)
class RssCase:
    """One ``--rss`` case: ``rows:N`` (the sample file) or a shape of a size in bytes."""

    name: str
    kind: str
    size: int

    @property
    def is_rows(self) -> bool:
        return self.kind == "rows"

    @property
    def target_growth_mb(self) -> float:
        return TARGET_ROWS_RSS_GROWTH_MB if self.is_rows else TARGET_SHAPE_RSS_GROWTH_MB

    def body(self) -> bytes:
        build = {
            "rows": sample_csv,
            "no-newline": no_newline_csv,
            "quoted-field": quoted_field_csv,
            "big-row": big_row_csv,
        }[self.kind]
        return build(self.size)

    def expected(self) -> Expected:
        if self.kind == "rows":
            return Expected(self.size)
        if self.kind == "quoted-field":
            return Expected(1, (1,))
        if self.kind == "big-row":
            return Expected(2 * (BIG_ROW - 1), (BIG_ROW,))
        return Expected(0, (1,))


def parse_rss_case(text: str) -> RssCase:
    """An ``--rss`` argument; :class:`argparse.ArgumentTypeError` says what is wrong."""
    name = text.strip()
    kind, colon, value = name.partition(":")
    if not colon or kind not in ("rows", *SHAPES):
        raise argparse.ArgumentTypeError(f"{text!r}: a case is {_CASE_FORMS}")
    if kind == "rows":
        try:
            return RssCase(name, kind, _positive_int(value))
        except argparse.ArgumentTypeError:
            raise argparse.ArgumentTypeError(
                f"{text!r}: rows:N needs a positive whole number of rows"
            ) from None
    try:
        size = parse_size(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r}: {exc}") from None
    if size <= MAX_ITEM_BYTES:
        raise argparse.ArgumentTypeError(
            f"{text!r}: a {kind} case needs a size over {MAX_ITEM_BYTES} bytes "
            "(DynamoDB's 400 KiB item limit), so that its record is rejected as too large"
        )
    return RssCase(name, kind, size)


class _RssCases(argparse.Action):
    """``--rss``: distinct cases, at least one of them ``rows:N`` (the baseline)."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: str | Sequence[Any] | None,
        option_string: str | None = None,
    ) -> None:
        cases = [case for case in values or () if isinstance(case, RssCase)]
        names = [case.name for case in cases]
        twice = sorted({name for name in names if names.count(name) > 1})
        if twice:
            parser.error(f"argument --rss: {', '.join(twice)} given more than once")
        if not any(case.is_rows for case in cases):
            parser.error(
                "argument --rss: needs a rows:N case; the first one is the baseline "
                "the other cases' growth is measured from"
            )
        setattr(namespace, self.dest, cases)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive whole number")
    return value


# -- the results ---------------------------------------------------------------------


@dataclass
class SizeResult:
    """One file size's figures; ceiling and pipeline rows/s are medians over their runs."""

    rows: int
    raw_rows_per_s: float
    ceiling_rows_per_s: float
    pipeline_rows_per_s: float
    #: Each pipeline run's (ceiling seconds, pipeline seconds), in the order they ran;
    #: the ceiling is the mean of the two ceiling runs on either side of it.
    pairs: tuple[tuple[float, float], ...] = ()

    @property
    def raw_ratio(self) -> float:
        return self.pipeline_rows_per_s / self.raw_rows_per_s

    @property
    def pair_ratios(self) -> list[float]:
        return [ceiling / pipeline for ceiling, pipeline in self.pairs]

    @property
    def ceiling_ratio(self) -> float:
        """The median of the runs' pipeline ÷ bracketing ceiling (without pairs: of the medians)."""
        if self.pairs:
            return statistics.median(self.pair_ratios)
        return self.pipeline_rows_per_s / self.ceiling_rows_per_s


@dataclass
class RssResult:
    """One case's peak RSS in MB, or why it could not be measured."""

    case: RssCase
    mb: float | None = None
    error: str | None = None


@dataclass
class BenchResult:
    backend: str
    startup_s: float
    sizes: list[SizeResult] = field(default_factory=list)
    rss: list[RssResult] = field(default_factory=list)
    startup_by_backend: dict[str, float] = field(default_factory=dict)
    unavailable: dict[str, str] = field(default_factory=dict)

    @property
    def headline(self) -> SizeResult:
        return max(self.sizes, key=lambda s: s.rows)

    @property
    def baseline(self) -> RssResult | None:
        """The first ``rows:`` case: what every case's growth is measured from."""
        return next((r for r in self.rss if r.case.is_rows), None)

    def growth_mb(self, result: RssResult) -> float | None:
        baseline = self.baseline
        if baseline is None or baseline.mb is None or result.mb is None:
            return None
        return result.mb - baseline.mb

    def rss_ok(self, result: RssResult) -> bool:
        growth = self.growth_mb(result)
        return growth is not None and growth <= result.case.target_growth_mb

    def meets_targets(self) -> bool:
        return self.headline.ceiling_ratio >= TARGET_CEILING_RATIO and all(
            self.rss_ok(r) for r in self.rss
        )

    def to_json(self) -> dict[str, Any]:
        baseline = self.baseline
        headline = self.headline
        growth = {r.case.name: self.growth_mb(r) for r in self.rss}
        return {
            "backend": self.backend,
            "rows": headline.rows,
            **_size_json(headline),
            "by_rows": {str(s.rows): _size_json(s) for s in self.sizes},
            "rss_mb": {r.case.name: round(r.mb, 1) for r in self.rss if r.mb is not None},
            "rss_growth_mb": {k: round(v, 1) for k, v in growth.items() if v is not None},
            "rss_baseline": baseline.case.name if baseline else None,
            "rss_errors": {r.case.name: r.error for r in self.rss if r.error is not None},
            "startup_s": round(self.startup_s, 2),
            "startup_by_backend": {k: round(v, 2) for k, v in self.startup_by_backend.items()},
            "unavailable": self.unavailable,
            "targets": {
                "ceiling_ratio": TARGET_CEILING_RATIO,
                "rss_growth_mb": {
                    "rows": TARGET_ROWS_RSS_GROWTH_MB,
                    "shape": TARGET_SHAPE_RSS_GROWTH_MB,
                },
            },
            "meets_targets": self.meets_targets(),
        }


def _size_json(s: SizeResult) -> dict[str, Any]:
    return {
        "raw_rows_per_s": round(s.raw_rows_per_s, 1),
        "ceiling_rows_per_s": round(s.ceiling_rows_per_s, 1),
        "pipeline_rows_per_s": round(s.pipeline_rows_per_s, 1),
        "raw_ratio": round(s.raw_ratio, 3),
        "ceiling_ratio": round(s.ceiling_ratio, 3),
        "ceiling_ratio_pairs": [round(r, 3) for r in s.pair_ratios],
    }


def format_report(result: BenchResult) -> str:
    """The figures as text tables."""
    out = [f"backend: {result.backend}", ""]
    out.append(
        f"{'rows':>9} | {'raw rows/s':>10} | {'ceiling rows/s':>14} | {'pipeline rows/s':>15} | "
        f"{'vs raw':>6} | {'vs ceiling':>10}"
    )
    out.append("-" * 80)
    for s in result.sizes:
        out.append(
            f"{s.rows:>9,} | {s.raw_rows_per_s:>10,.0f} | {s.ceiling_rows_per_s:>14,.0f} | "
            f"{s.pipeline_rows_per_s:>15,.0f} | {s.raw_ratio:>6.2f} | {s.ceiling_ratio:>10.2f}"
        )
    for s in result.sizes:
        if len(s.pairs) > 1:
            ratios = " ".join(f"{r:.2f}" for r in s.pair_ratios)
            out.append(
                f"{s.rows:>9,} rows, each pipeline run / the ceiling runs around it: {ratios} "
                "(median counts)"
            )
    out.append(f"target: pipeline / ceiling >= {TARGET_CEILING_RATIO} (largest file)")
    if result.rss:
        width = max(len("case"), *(len(r.case.name) for r in result.rss))
        out.append("")
        out.append(f"{'case':<{width}} | Lambda peak RSS | {'growth':>10} | target")
        out.append("-" * (width + 45))
        baseline = result.baseline
        for r in result.rss:
            if r.mb is None:
                out.append(f"{r.case.name:<{width}} | not measured: {r.error}")
                continue
            growth = result.growth_mb(r)
            if r is baseline:
                verdict, shown = "baseline", "-"
            else:
                verdict = f"<= {r.case.target_growth_mb:.0f} MB " + (
                    "ok" if result.rss_ok(r) else "MISSED"
                )
                shown = "?" if growth is None else f"{growth:+.1f} MB"
            out.append(f"{r.case.name:<{width}} | {r.mb:>12.1f} MB | {shown:>10} | {verdict}")
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


def lambda_write_concurrency(config: StackConfig) -> int:
    """The batches the deployed function keeps in flight (its ``WRITE_CONCURRENCY``)."""
    value = config.environment.get("WRITE_CONCURRENCY")
    return max(1, int(float(value))) if value else LAMBDA_WRITE_CONCURRENCY


# -- the measurements ----------------------------------------------------------------


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
        # The Lambda's own write path (csv_pipeline.aws.row_writer), aimed at this endpoint.
        self.concurrency = lambda_write_concurrency(config)
        self.row_writer = PreSerializedBatchWriter(
            endpoint.client(
                "dynamodb",
                **row_writer_settings(ROW_REQUEST_SECONDS, self.concurrency + 2),
            )
        )

    def raw(self, key: str, body: bytes) -> float:
        """Seconds a plain ``batch_writer`` loop takes to write the pipeline's items."""
        items = python_items(self.client.source(key), body)
        started = time.monotonic()
        with self.table.batch_writer() as writer:
            for item in items:
                writer.put_item(Item=item)
        return time.monotonic() - started

    def ceiling(self, key: str, body: bytes) -> float:
        """Seconds the Lambda's writer takes for the items, from here: no S3, no parsing."""
        items = wire_items(self.client.source(key), body)
        started = time.monotonic()
        with BatchWriter(
            self.row_writer, self.config.table, max_in_flight=self.concurrency
        ) as writer:
            for item in items:
                writer.put(item)
        return time.monotonic() - started

    def pipeline(self, key: str, body: bytes, expected: Expected) -> float:
        """Seconds from the start of the upload to the final manifest's ``finished_at``."""
        started_wall, started = time.time(), time.monotonic()
        etag = self.client.upload(key, body)
        manifest = self.wait_final(key, etag, started)
        mismatch = expected.mismatch(manifest)
        if mismatch is not None:
            raise RuntimeError(f"{key}: {mismatch}")
        return finished_at(manifest) - started_wall

    def wait_final(self, key: str, etag: str, started: float) -> dict[str, Any]:
        """Poll the manifest until it is final for ``etag``.

        Every half second at most: the figure ends at the manifest's own
        ``finished_at``, not when a poll sees it, so polling more often
        would only take CPU from the function and the emulator (two cores
        here) while they are being measured.
        """
        deadline = started + self.timeout
        while True:
            manifest = self.client.manifest(key)
            if (
                manifest is not None
                and manifest.get("status") in FINAL_STATUSES
                and manifest.get("etag") == etag
            ):
                return manifest
            now = time.monotonic()
            if now > deadline:
                raise RuntimeError(
                    f"{key} not processed within {self.timeout:.0f}s; last manifest {manifest}\n"
                    + self.client.format_logs()
                )
            time.sleep(min(0.5, max(0.01, (now - started) / 20)))

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

    def peak_rss(self, case: RssCase) -> float:
        """The Lambda's peak RSS (MB) for one case, in a fresh environment."""
        key = f"rss-{case.kind}-{time.time_ns()}.csv"
        body = case.body()
        self.fresh_environment(key)
        since_ms = int(time.time() * 1000) - 1000
        self.pipeline(key, body, case.expected())
        del body
        source = self.client.source(key)
        deadline = time.monotonic() + 60
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


def measure_size(bench: Bench, rows: int, repeat: int = 1) -> SizeResult:
    """Raw, ceiling and pipeline for one file size, each into a source of its own.

    ``repeat`` pipeline runs, each bracketed by ceiling runs (C P C ... P C:
    ``repeat + 1`` of them) and set against their mean, so a steady drift of
    the machine's speed over the three cancels. Rows/s are medians; the ratio
    is the median of the bracketed ratios (see the module docstring for why).
    """
    body = sample_csv(rows)
    _say(f"{rows:,} rows: raw batch_writer ...")
    raw = bench.raw(f"raw-{rows}.csv", body)
    _say(f"{rows:,} rows: ceiling 1 of {repeat + 1} ...")
    ceilings = [bench.ceiling(f"ceiling-{rows}-1.csv", body)]
    pipelines: list[float] = []
    for run in range(1, repeat + 1):
        _say(f"{rows:,} rows: pipeline {run} of {repeat}, ceiling {run + 1} of {repeat + 1} ...")
        pipelines.append(bench.pipeline(f"pipeline-{rows}-{run}.csv", body, Expected(rows)))
        ceilings.append(bench.ceiling(f"ceiling-{rows}-{run + 1}.csv", body))
    return SizeResult(
        rows,
        rows / raw,
        rows / statistics.median(ceilings),
        rows / statistics.median(pipelines),
        bracket(ceilings, pipelines),
    )


def bracket(
    ceilings: Sequence[float], pipelines: Sequence[float]
) -> tuple[tuple[float, float], ...]:
    """Each pipeline run with the mean of the ceiling runs just before and after it."""
    if len(ceilings) != len(pipelines) + 1:
        raise ValueError("every pipeline run needs a ceiling run on either side")
    return tuple(
        ((before + after) / 2, pipeline)
        for before, pipeline, after in zip(ceilings[:-1], pipelines, ceilings[1:], strict=True)
    )


def measure_rss(bench: Bench, case: RssCase) -> RssResult:
    """One case's peak RSS; a case that does not end as expected is reported, not fatal."""
    _say(f"{case.name}: Lambda peak RSS ...")
    try:
        return RssResult(case, mb=bench.peak_rss(case))
    except Exception as exc:
        _say(f"{case.name}: not measured: {type(exc).__name__}: {exc}")
        return RssResult(case, error=_first_line(str(exc)) or type(exc).__name__)


def run(
    backend_name: str,
    endpoint_url: str | None,
    rows: list[int],
    rss_cases: list[RssCase],
    timeout: float,
    all_backends: bool = True,
    repeat: int = 1,
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
            # Warm every path: a Lambda execution environment, open connections.
            warm = sample_csv(2)
            bench.raw("warm-up-raw.csv", warm)
            bench.ceiling("warm-up-ceiling.csv", warm)
            bench.pipeline("warm-up.csv", warm, Expected(2))
            for n in rows:
                result.sizes.append(measure_size(bench, n, repeat))
            for case in rss_cases:
                result.rss.append(measure_rss(bench, case))
        finally:
            if backend.name == "endpoint":
                stack.destroy()
    return result


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--rows",
        type=_positive_int,
        nargs="+",
        default=list(DEFAULT_ROWS),
        metavar="N",
        help="file sizes for raw, ceiling and pipeline throughput (default: 10000 100000)",
    )
    parser.add_argument(
        "--rss",
        type=parse_rss_case,
        nargs="+",
        action=_RssCases,
        default=[parse_rss_case(case) for case in DEFAULT_RSS],
        metavar="CASE",
        help=(
            "files to measure the Lambda's peak RSS with, each in a fresh environment: "
            "rows:N (the sample file of N rows), no-newline:SIZE (one line without a line "
            "break), quoted-field:SIZE (one quoted field of many short lines), big-row:SIZE "
            "(one huge row among 2,000 good ones); SIZE as 200MB, 100MiB, 512KB or bytes; "
            "the first rows:N case is the baseline (default: " + " ".join(DEFAULT_RSS) + ")"
        ),
    )
    parser.add_argument(
        "--repeat",
        type=_positive_int,
        default=5,
        metavar="N",
        help=(
            "pipeline runs per size, each between two ceiling runs (N+1 of them); the ratio "
            "is the median of each pipeline run's ratio to the mean of its two ceilings "
            "(default 5)"
        ),
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
    """Run the bench; print the tables (and the JSON line)."""
    result = run(
        args.backend,
        args.endpoint_url,
        sorted(set(args.rows)),
        list(args.rss),
        args.timeout,
        all_backends=not args.only_this_backend,
        repeat=args.repeat,
    )
    print(format_report(result), flush=True)
    if args.json:
        print(json.dumps(result.to_json()), flush=True)
    return 1 if args.check and not result.meets_targets() else 0
