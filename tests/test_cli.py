"""``python -m provisioning``: the commands a person runs, run as a person would."""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from provisioning.backends import MinistackBackend
from provisioning.backends.ministack import free_port
from provisioning.cli import format_table
from provisioning.progress import ProgressBar, human_bytes

CLI = [sys.executable, "-m", "provisioning"]
AWS_ENV = {
    **os.environ,
    "AWS_ACCESS_KEY_ID": "test",
    "AWS_SECRET_ACCESS_KEY": "test",
    "AWS_DEFAULT_REGION": "us-east-1",
}
AWS_ENV.pop("AWS_ENDPOINT_URL", None)


def aws_cli() -> str:
    """The AWS CLI installed beside this interpreter (the `test` extra), else on PATH."""
    beside = Path(sys.executable).with_name("aws")
    found = str(beside) if beside.exists() else shutil.which("aws")
    if found is None:
        pytest.skip("AWS CLI not installed: pip install -e '.[test]' provides it")
    return found


@pytest.mark.e2e
def test_demo_prints_the_sample_rows() -> None:
    done = subprocess.run([*CLI, "demo"], capture_output=True, text=True, timeout=120, env=AWS_ENV)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "COMPLETE: 5 rows written, 0 rejected" in out
    assert " Bob Jones   | ∅   | bob@example.com   | ∅ " in out
    assert out.count("\n ") >= 6  # header + five rows


@pytest.mark.e2e
def test_demo_exits_nonzero_when_the_file_fails(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_bytes(b"a,a\n1,2\n")
    done = subprocess.run([*CLI, "demo", str(bad)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert "FAILED" in done.stdout and "duplicate column" in done.stderr


@pytest.mark.e2e
def test_seed_aws_cli_commands_work_against_up(tmp_path: Path) -> None:
    aws = aws_cli()
    port = free_port()
    up = subprocess.Popen(
        [*CLI, "up", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        assert up.stdout is not None
        seen = []
        for line in up.stdout:
            seen.append(line)
            if "Press Ctrl-C" in line:
                break
        else:
            pytest.fail("up exited early:\n" + "".join(seen))
        endpoint = f"http://localhost:{port}"
        csv_file = tmp_path / "your_file.csv"
        csv_file.write_text("name,age\nAnn,\nBen,40\n")
        subprocess.run(
            [
                aws,
                f"--endpoint-url={endpoint}",
                "s3",
                "cp",
                str(csv_file),
                "s3://csv-upload-bucket/",
            ],
            check=True,
            env=AWS_ENV,
            capture_output=True,
            timeout=60,
        )
        deadline = time.monotonic() + 30
        items: list = []
        while time.monotonic() < deadline:
            scan = subprocess.run(
                [aws, f"--endpoint-url={endpoint}", "dynamodb", "scan", "--table-name", "csv-data"],
                check=True,
                env=AWS_ENV,
                capture_output=True,
                text=True,
                timeout=60,
            )
            items = json.loads(scan.stdout)["Items"]
            if any(i.get("status", {}).get("S") == "COMPLETE" for i in items):
                break
            time.sleep(0.3)
        rows = sorted((i for i in items if i["row"]["N"] != "0"), key=lambda i: i["row"]["N"])
        assert [(r["name"], r["age"]) for r in rows] == [
            ({"S": "Ann"}, {"NULL": True}),
            ({"S": "Ben"}, {"S": "40"}),
        ], items
    finally:
        up.send_signal(signal.SIGINT)
        assert up.wait(timeout=30) == 0
        if up.stdout:
            up.stdout.close()
    with pytest.raises(ProcessLookupError):
        os.killpg(up.pid, 0)


@pytest.mark.e2e
def test_deploy_then_destroy_on_an_endpoint() -> None:
    with MinistackBackend() as endpoint:
        args = ["--endpoint-url", str(endpoint.url)]
        deployed = subprocess.run(
            [*CLI, "deploy", *args], capture_output=True, text=True, timeout=120, env=AWS_ENV
        )
        assert deployed.returncode == 0, deployed.stderr
        outputs = json.loads(deployed.stdout)
        assert outputs["bucket"] == "csv-upload-bucket" and outputs["table"] == "csv-data"
        assert outputs["function_arn"].endswith(":function:csv-processor")
        again = subprocess.run(
            [*CLI, "deploy", *args], capture_output=True, text=True, timeout=120, env=AWS_ENV
        )
        assert json.loads(again.stdout) == outputs
        destroyed = subprocess.run(
            [*CLI, "destroy", *args], capture_output=True, text=True, timeout=120, env=AWS_ENV
        )
        assert destroyed.returncode == 0, destroyed.stderr
        assert endpoint.client("dynamodb").list_tables()["TableNames"] == []


def test_bad_usage_exits_2() -> None:
    done = subprocess.run([*CLI, "up", "--backend", "nope"], capture_output=True, text=True)
    assert done.returncode == 2 and "invalid choice" in done.stderr


def test_format_table_marks_nulls_and_escapes_newlines() -> None:
    table = format_table(["a", "b"], [{"row": 1, "a": "x\ny", "b": None}])
    assert table.splitlines() == [
        " row | a    | b ",
        "-----+------+---",
        " 1   | x\\ny | ∅ ",
    ]


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bar_draws_on_a_terminal_only() -> None:
    terminal, log = _Terminal(), io.StringIO()
    for stream in (terminal, log):
        bar = ProgressBar("upload ", 200, stream=stream, width=10)
        bar.update(100, "half")
        bar.update(200, "done")
        bar.close()
    assert log.getvalue() == ""
    assert "\rupload  [#####.....]  50%  half" in terminal.getvalue()
    assert "\rupload  [##########] 100%  done" in terminal.getvalue()
    assert human_bytes(5 * 1024 * 1024) == "5.0 MB"
