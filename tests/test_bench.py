"""``python -m provisioning bench``: it runs, prints its table, and ends with the JSON.

Only that the command works and its figures hang together is tested here;
the figures themselves are what the command is for (see README, Performance).
"""

from __future__ import annotations

import json
import sys

import pytest
from processes import run

from provisioning.bench import BenchResult, SizeResult, format_report, sample_csv

REQUIRED = {
    "raw_rows_per_s",
    "pipeline_rows_per_s",
    "ratio",
    "rss_10k_mb",
    "rss_1m_mb",
    "startup_s",
}


def test_sample_file_is_deterministic_and_has_the_asked_rows() -> None:
    body = sample_csv(50)
    assert body == sample_csv(50)
    assert body.count(b"\n") == 51 and body.startswith(b"id,name,email,city,amount,note\n")


def test_report_and_json_say_the_same() -> None:
    result = BenchResult(
        backend="ministack",
        startup_s=0.3,
        sizes=[SizeResult(10, 100.0, 90.0), SizeResult(20, 200.0, 100.0)],
        rss_mb={10: 50.0, 20: 58.5},
        startup_by_backend={"ministack": 0.3},
        unavailable={"localstack": "no Docker"},
    )
    data = result.to_json()
    assert data["ratio"] == 0.5 and data["rows"] == 20  # the largest file is the headline
    assert data["rss_growth_mb"] == 8.5 and data["meets_targets"] is False
    report = format_report(result)
    assert "0.50" in report and "+8.5 MB" in report and "unavailable: no Docker" in report


@pytest.mark.e2e
def test_bench_command_prints_a_table_and_ends_with_json() -> None:
    done = run(
        [
            sys.executable,
            "-m",
            "provisioning",
            "bench",
            "--backend",
            "ministack",
            "--rows",
            "200",
            "--rss-rows",
            "100",
            "300",
            "--only-this-backend",
            "--json",
        ],
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    data = json.loads(lines[-1])
    assert set(data) >= REQUIRED
    assert data["raw_rows_per_s"] > 0 and data["pipeline_rows_per_s"] > 0
    assert data["ratio"] == pytest.approx(
        data["pipeline_rows_per_s"] / data["raw_rows_per_s"], rel=0.01
    )
    assert 20 < data["rss_10k_mb"] < 1024 and 20 < data["rss_1m_mb"] < 1024
    assert data["startup_s"] > 0 and data["backend"] == "ministack"
    assert "raw rows/s" in done.stdout and "Lambda peak RSS" in done.stdout
