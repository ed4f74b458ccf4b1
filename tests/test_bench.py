"""``csv-pipeline bench``: its cases, its files, its report, and one quick run.

Only that the command works and its figures hang together is tested here;
the figures themselves are what the command is for (see README, Performance).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys

import pytest
from processes import run

from csv_pipeline import settings
from csv_pipeline.parsing import MAX_ITEM_BYTES, Record, Rejection, parse_bytes
from csv_pipeline_harness.cli import build_parser
from csv_pipeline_harness.devtools.bench import (
    BIG_ROW,
    DEFAULT_RSS,
    LAMBDA_WRITE_CONCURRENCY,
    BenchResult,
    Expected,
    RssCase,
    RssResult,
    SizeResult,
    big_row_csv,
    bracket,
    finished_at,
    format_report,
    measure_size,
    no_newline_csv,
    parse_rss_case,
    parse_size,
    quoted_field_csv,
    sample_csv,
)

REQUIRED = {
    "raw_rows_per_s",
    "ceiling_rows_per_s",
    "pipeline_rows_per_s",
    "raw_ratio",
    "ceiling_ratio",
    "by_rows",
    "rss_mb",
    "rss_growth_mb",
    "rss_baseline",
    "startup_s",
    "meets_targets",
}

#: Just over DynamoDB's item limit: the smallest size a shape case accepts.
JUST_OVER = MAX_ITEM_BYTES + 1


def bench_args(*argv: str) -> list[RssCase]:
    return list(build_parser().parse_args(["bench", *argv]).rss)


def outcomes_match(case: RssCase) -> tuple[list[Record], list[Rejection]]:
    """Parse the case's file as the Lambda does; check it against the case's expectation."""
    _, outcomes = parse_bytes(case.body(), "bucket/case.csv")
    records = [o for o in outcomes if isinstance(o, Record)]
    rejections = [o for o in outcomes if isinstance(o, Rejection)]
    expected = case.expected()
    assert len(records) == expected.rows_written
    assert tuple(r.row for r in rejections) == expected.rejected_rows
    assert {r.code for r in rejections} == {expected.code}
    return records, rejections


def test_sample_file_is_deterministic_and_has_the_asked_rows() -> None:
    body = sample_csv(50)
    assert body == sample_csv(50)
    assert body.count(b"\n") == 51 and body.startswith(b"id,name,email,city,amount,note\n")


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("200MB", 200_000_000),
        ("100MiB", 100 * 2**20),
        ("512KB", 512_000),
        ("409601", 409_601),
        ("2GiB", 2 * 2**30),
        ("1 gb", 10**9),
        ("7B", 7),
    ],
)
def test_sizes_in_bytes_or_with_a_unit(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "MB", "1.5MB", "-5", "12XB", "5 M B", "0x10"])
def test_a_size_that_is_not_one_says_so(text: str) -> None:
    with pytest.raises(ValueError, match="is not a size"):
        parse_size(text)


def test_the_default_cases() -> None:
    cases = bench_args()
    assert [c.name for c in cases] == list(DEFAULT_RSS)
    assert [(c.kind, c.size) for c in cases] == [
        ("rows", 10_000),
        ("rows", 1_000_000),
        ("no-newline", 200_000_000),
        ("quoted-field", 100_000_000),
        ("big-row", 50_000_000),
    ]


def test_cases_on_the_command_line() -> None:
    cases = bench_args("--rss", "rows:10", f"big-row:{JUST_OVER}", "quoted-field:1MiB")
    assert cases == [
        RssCase("rows:10", "rows", 10),
        RssCase(f"big-row:{JUST_OVER}", "big-row", JUST_OVER),
        RssCase("quoted-field:1MiB", "quoted-field", 2**20),
    ]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--rss", "rows:0"], "positive whole number"),
        (["--rss", "rows:many"], "positive whole number"),
        (["--rss", "rows"], "a case is rows:N"),
        (["--rss", "huge:1MB"], "a case is rows:N"),
        (["--rss", "rows:10", "no-newline:400KiB"], "over 409600 bytes"),
        (["--rss", "rows:10", "big-row:1.5MB"], "is not a size"),
        (["--rss", "big-row:1MB"], "needs a rows:N case"),
        (["--rss", "rows:10", "rows:10"], "rows:10 given more than once"),
        (["--rss"], "expected at least one argument"),
        (["--rows", "0"], "not a positive whole number"),
    ],
)
def test_a_bad_case_is_a_usage_error(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args(["bench", *argv])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: ") and message in err


def test_a_case_needs_its_record_over_the_item_limit() -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="over 409600 bytes"):
        parse_rss_case(f"no-newline:{MAX_ITEM_BYTES}")
    assert parse_rss_case(f"no-newline:{JUST_OVER}").size == JUST_OVER


@pytest.mark.parametrize("size", [JUST_OVER, 600_000])
def test_no_newline_is_one_record_rejected_as_too_large(size: int) -> None:
    body = no_newline_csv(size)
    assert len(body) == size + 2 and body.count(b"\n") == 1 and body.startswith(b"a\n")
    outcomes_match(RssCase("no-newline", "no-newline", size))


@pytest.mark.parametrize("size", [JUST_OVER, 600_000])
def test_quoted_field_is_one_field_of_many_lines_then_a_good_record(size: int) -> None:
    body = quoted_field_csv(size)
    head, tail = b'a,b\n1,"', b'"\n2,ok\n'
    assert body.startswith(head) and body.endswith(tail)
    field = body[len(head) : -len(tail)]
    assert len(field) == size and b'"' not in field
    assert max(map(len, field.splitlines(keepends=True))) == 64
    records, _ = outcomes_match(RssCase("quoted-field", "quoted-field", size))
    assert records[0].row == 2 and records[0].item["b"] == {"S": "ok"}


@pytest.mark.parametrize("size", [JUST_OVER, 600_000])
def test_big_row_is_one_huge_line_among_good_ones(size: int) -> None:
    body = big_row_csv(size)
    lines = body.splitlines(keepends=True)
    assert len(lines) == 1 + 2 * BIG_ROW - 1
    assert len(lines[BIG_ROW]) == size and lines[BIG_ROW].startswith(b"1001,")
    records, _ = outcomes_match(RssCase("big-row", "big-row", size))
    assert [r.row for r in records] == [*range(1, BIG_ROW), *range(BIG_ROW + 1, 2 * BIG_ROW)]
    assert records[-1].item["id"] == {"S": str(2 * BIG_ROW - 1)}


def test_rows_case_is_the_sample_file() -> None:
    case = parse_rss_case("rows:30")
    assert case.body() == sample_csv(30) and case.expected() == Expected(30)


def test_expected_manifest() -> None:
    expected = Expected(2000, (1001,))
    good = {
        "status": "COMPLETE",
        "rows_written": 2000,
        "rows_rejected": 1,
        "rejected": [{"row": 1001, "reason": "too big", "code": "ITEM_TOO_LARGE"}],
    }
    assert expected.mismatch(good) is None
    assert Expected(5).mismatch({"status": "COMPLETE", "rows_written": 4, "rows_rejected": 0})
    assert expected.mismatch({**good, "rows_rejected": 2})
    assert (
        Expected(5).mismatch(
            {"status": "COMPLETE", "rows_written": 5, "rows_rejected": 0, "rejected": []}
        )
        is None
    )
    wrong_code = {**good, "rejected": [{"row": 1001, "reason": "x", "code": "FIELD_COUNT"}]}
    assert "FIELD_COUNT" in (expected.mismatch(wrong_code) or "")
    failed = {
        "status": "FAILED",
        "rows_written": 0,
        "rows_rejected": 0,
        "error_code": "CSV_SYNTAX",
        "error": "field larger than field limit",
    }
    message = expected.mismatch(failed) or ""
    assert "got FAILED" in message and "CSV_SYNTAX: field larger" in message


def test_ceiling_writes_with_the_lambdas_concurrency(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WRITE_CONCURRENCY", raising=False)
    assert settings.write_concurrency() == LAMBDA_WRITE_CONCURRENCY


def test_the_finished_line_is_found() -> None:
    from csv_pipeline_harness.devtools.bench import _FINISHED

    line = (
        "INFO Finished csv-bench-bucket/rss-big-row-1.csv: 2000 rows written, 1 rejected "
        "(3.2s, 0 requests resent, peak RSS 61.5 MB)"
    )
    match = _FINISHED.search(line)
    assert match and match.group("source") == "csv-bench-bucket/rss-big-row-1.csv"
    assert match.group("mb") == "61.5"


def _result(rss: list[RssResult], pipeline: float = 95.0) -> BenchResult:
    return BenchResult(
        backend="ministack",
        startup_s=0.3,
        sizes=[SizeResult(10, 100.0, 80.0, 90.0), SizeResult(20, 50.0, 100.0, pipeline)],
        rss=rss,
        startup_by_backend={"ministack": 0.3},
        unavailable={"localstack": "no Docker"},
    )


def test_report_and_json_say_the_same() -> None:
    result = _result(
        [
            RssResult(parse_rss_case("rows:10"), mb=50.0),
            RssResult(parse_rss_case("rows:20"), mb=58.5),
            RssResult(parse_rss_case("big-row:1MB"), mb=110.0),
            RssResult(parse_rss_case("no-newline:1MB"), error="expected COMPLETE; got FAILED"),
        ]
    )
    data = result.to_json()
    assert data["rows"] == 20  # the largest file is the headline
    assert data["ceiling_ratio"] == 0.95 and data["raw_ratio"] == 1.9
    assert data["by_rows"]["10"]["ceiling_ratio"] == pytest.approx(1.125)
    assert data["rss_baseline"] == "rows:10"
    assert data["rss_mb"] == {"rows:10": 50.0, "rows:20": 58.5, "big-row:1MB": 110.0}
    assert data["rss_growth_mb"] == {"rows:10": 0.0, "rows:20": 8.5, "big-row:1MB": 60.0}
    assert data["rss_errors"] == {"no-newline:1MB": "expected COMPLETE; got FAILED"}
    assert data["meets_targets"] is False  # a case was not measured
    json.dumps(data)
    report = format_report(result)
    assert "0.95" in report and "1.90" in report and "+8.5 MB" in report and "+60.0 MB" in report
    assert "not measured: expected COMPLETE" in report and "unavailable: no Docker" in report
    assert "meets targets: NO" in report


def test_the_ratio_is_the_median_of_the_pairs_ratios() -> None:
    # Pairs (ceiling s, pipeline s): a fast minute for one pair's ceiling
    # and another for a different pair's pipeline must not make the ratio.
    size = SizeResult(100, 10.0, 10.0, 8.0, pairs=((10.0, 12.5), (7.0, 10.0), (12.0, 13.0)))
    assert size.pair_ratios == pytest.approx([0.8, 0.7, 12 / 13])
    assert size.ceiling_ratio == pytest.approx(0.8)
    result = BenchResult(backend="ministack", startup_s=0.1, sizes=[size])
    data = result.to_json()
    assert data["ceiling_ratio"] == 0.8
    assert data["ceiling_ratio_pairs"] == [0.8, 0.7, 0.923]
    report = format_report(result)
    assert "each pipeline run / the ceiling runs around it: 0.80 0.70 0.92 (median" in report


def test_each_pipeline_run_is_set_against_the_ceilings_around_it() -> None:
    # The machine slows steadily: 10, 12, 14 s for the same ceiling. Pipeline
    # runs that take 1/0.9 of the ceiling at their moment give exactly 0.9,
    # whichever ceiling run a pair would have had.
    pairs = bracket([10.0, 12.0, 14.0], [11.0 / 0.9, 13.0 / 0.9])
    assert [ceiling for ceiling, _ in pairs] == [11.0, 13.0]
    assert [ceiling / pipeline for ceiling, pipeline in pairs] == pytest.approx([0.9, 0.9])
    with pytest.raises(ValueError, match="either side"):
        bracket([10.0, 12.0], [11.0, 13.0])


def test_ceiling_and_pipeline_runs_alternate_starting_and_ending_with_a_ceiling() -> None:
    class Recording:
        def __init__(self) -> None:
            self.calls: list[str] = []
            self.seconds = iter([100.0, 10.0, 12.0, 20.0, 14.0, 30.0, 16.0, 40.0])

        def raw(self, key: str, body: bytes) -> float:
            self.calls.append(f"raw {key}")
            return next(self.seconds)

        def ceiling(self, key: str, body: bytes) -> float:
            self.calls.append(f"ceiling {key}")
            return next(self.seconds)

        def pipeline(self, key: str, body: bytes, expected: Expected) -> float:
            assert expected == Expected(10)
            self.calls.append(f"pipeline {key}")
            return next(self.seconds)

    bench = Recording()
    size = measure_size(bench, 10, repeat=3)  # type: ignore[arg-type]
    assert bench.calls == [
        "raw raw-10.csv",
        "ceiling ceiling-10-1.csv",
        "pipeline pipeline-10-1.csv",
        "ceiling ceiling-10-2.csv",
        "pipeline pipeline-10-2.csv",
        "ceiling ceiling-10-3.csv",
        "pipeline pipeline-10-3.csv",
        "ceiling ceiling-10-4.csv",
    ]
    assert size.pairs == ((15.0, 12.0), (25.0, 14.0), (35.0, 16.0))
    assert size.raw_rows_per_s == pytest.approx(0.1)
    assert size.ceiling_rows_per_s == pytest.approx(10 / 25.0)  # median of 10, 20, 30, 40 s
    assert size.pipeline_rows_per_s == pytest.approx(10 / 14.0)
    assert size.ceiling_ratio == pytest.approx(25.0 / 14.0)


def test_finished_at_is_read_as_unix_time() -> None:
    assert finished_at({"finished_at": "2026-01-02T03:04:05.250+00:00"}) == pytest.approx(
        1767323045.25
    )


@pytest.mark.parametrize(
    ("big_row_mb", "rows_mb", "pipeline", "meets"),
    [
        (114.0, 60.0, 90.0, True),  # growth 64 and 10 exactly, ratio 0.9 exactly
        (114.1, 60.0, 90.0, False),  # a shape over 64 MB
        (60.0, 60.1, 90.0, False),  # rows over 10 MB
        (60.0, 60.0, 89.0, False),  # pipeline under 0.9 of the ceiling
    ],
)
def test_targets(big_row_mb: float, rows_mb: float, pipeline: float, meets: bool) -> None:
    result = _result(
        [
            RssResult(parse_rss_case("rows:10"), mb=50.0),
            RssResult(parse_rss_case("rows:20"), mb=rows_mb),
            RssResult(parse_rss_case("big-row:1MB"), mb=big_row_mb),
        ],
        pipeline=pipeline,
    )
    assert result.meets_targets() is meets
    assert ("meets targets: yes" in format_report(result)) is meets


@pytest.mark.harness
@pytest.mark.e2e
def test_bench_command_prints_a_table_and_ends_with_json() -> None:
    done = run(
        [
            sys.executable,
            "-m",
            "csv_pipeline_harness",
            "bench",
            "--backend",
            "ministack",
            "--rows",
            "200",
            "--rss",
            "rows:100",
            "big-row:500KB",
            "--only-this-backend",
            "--repeat",
            "2",
            "--json",
        ],
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    data = json.loads(lines[-1])
    assert set(data) >= REQUIRED
    assert data["raw_rows_per_s"] > 0 and data["ceiling_rows_per_s"] > 0
    assert data["pipeline_rows_per_s"] > 0
    pairs = data["ceiling_ratio_pairs"]
    assert len(pairs) == 2 and all(r > 0 for r in pairs)
    assert data["ceiling_ratio"] == pytest.approx(statistics.median(pairs), abs=0.002)
    assert data["raw_ratio"] == pytest.approx(
        data["pipeline_rows_per_s"] / data["raw_rows_per_s"], rel=0.01
    )
    assert data["rss_baseline"] == "rows:100" and data["rss_errors"] == {}
    assert set(data["rss_mb"]) == {"rows:100", "big-row:500KB"}
    assert all(20 < mb < 1024 for mb in data["rss_mb"].values())
    assert data["rss_growth_mb"]["big-row:500KB"] == pytest.approx(
        data["rss_mb"]["big-row:500KB"] - data["rss_mb"]["rows:100"], abs=0.11
    )
    assert data["startup_s"] > 0 and data["backend"] == "ministack"
    assert "ceiling rows/s" in done.stdout and "Lambda peak RSS" in done.stdout
