"""``csv-pipeline``: the commands a person runs, run as a person would."""

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
from processes import run, spawned

from csv_pipeline_harness.cli import format_table
from csv_pipeline_harness.progress import ProgressBar, human_bytes
from csv_pipeline_harness.provisioning.backends import MinistackBackend
from csv_pipeline_harness.provisioning.backends.ministack import free_port

CLI = [sys.executable, "-m", "csv_pipeline_harness"]
#: The CLI started the way pytest-xdist workers, nohup and some CI runners start
#: their children: with SIGINT ignored (Python then installs no Ctrl-C handler).
CLI_IGNORING_SIGINT = [
    sys.executable,
    "-c",
    "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_IGN); "
    "os.execv(sys.executable, [sys.executable, *sys.argv[1:]])",
    "-m",
    "csv_pipeline_harness",
]
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


@pytest.mark.harness
@pytest.mark.e2e
def test_demo_prints_the_sample_rows() -> None:
    done = run([*CLI, "demo"], timeout=120, env=AWS_ENV)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "COMPLETE: 5 rows written, 0 rejected" in out
    assert " Bob Jones   | ∅   | bob@example.com   | ∅ " in out
    assert out.count("\n ") >= 6  # header + five rows


@pytest.mark.harness
@pytest.mark.e2e
def test_demo_json_is_one_document_on_stdout() -> None:
    done = run([*CLI, "demo", "--json"], timeout=120, env=AWS_ENV)
    assert done.returncode == 0, done.stderr
    document = json.loads(done.stdout)
    assert (document["status"], document["rows_written"]) == ("COMPLETE", 5)
    assert [row["name"] for row in document["rows"]][:2] == ["Alice Smith", "Bob Jones"]
    assert "COMPLETE: 5 rows written, 0 rejected" in done.stderr


@pytest.mark.harness
@pytest.mark.e2e
def test_up_json_prints_the_stack_once_it_is_ready() -> None:
    with spawned([*CLI, "up", "--json"], stdout=subprocess.PIPE) as up:
        line = up.read_until("}", timeout=120).strip().splitlines()[-1]
        document = json.loads(line)
        assert document["bucket"] == "csv-upload-bucket"
        assert document["endpoint_url"].startswith("http://127.0.0.1:")
        up.process.send_signal(signal.SIGTERM)
        assert up.process.wait(timeout=30) == 0
        assert up.stop() == []


@pytest.mark.harness
@pytest.mark.e2e
def test_demo_exits_nonzero_when_the_file_fails(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_bytes(b"a,a\n1,2\n")
    done = run([*CLI, "demo", str(bad)], timeout=120)
    assert done.returncode == 1
    assert "FAILED" in done.stdout and "duplicate column" in done.stderr


@pytest.mark.harness
@pytest.mark.e2e
def test_seed_aws_cli_commands_work_against_up(tmp_path: Path) -> None:
    aws = aws_cli()
    port = free_port()
    with spawned(
        [*CLI, "up", "--port", str(port)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    ) as up:
        up.read_until("Press Ctrl-C", timeout=120)
        endpoint = f"http://localhost:{port}"
        csv_file = tmp_path / "your_file.csv"
        csv_file.write_text("name,age\nAnn,\nBen,40\n")
        copied = run(
            [
                aws,
                f"--endpoint-url={endpoint}",
                "s3",
                "cp",
                str(csv_file),
                "s3://csv-upload-bucket/",
            ],
            env=AWS_ENV,
            timeout=60,
        )
        assert copied.returncode == 0, copied.stderr
        deadline = time.monotonic() + 30
        items: list = []
        while time.monotonic() < deadline:
            scan = run(
                [aws, f"--endpoint-url={endpoint}", "dynamodb", "scan", "--table-name", "csv-data"],
                env=AWS_ENV,
                timeout=60,
                check=True,
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
        up.process.send_signal(signal.SIGINT)
        assert up.process.wait(timeout=30) == 0, up.read_until(None, timeout=5)
        assert up.stop() == []


@pytest.mark.e2e
@pytest.mark.parametrize(
    ("signum", "when"),
    [
        (signal.SIGINT, "Press Ctrl-C"),
        (signal.SIGTERM, "Press Ctrl-C"),
        # While the emulator starts or the stack deploys.
        (signal.SIGINT, "Starting ministack"),
    ],
    ids=["SIGINT-when-ready", "SIGTERM-when-ready", "SIGINT-while-starting"],
)
@pytest.mark.harness
def test_up_stops_cleanly_on_a_signal_even_if_started_with_sigint_ignored(
    signum: signal.Signals, when: str
) -> None:
    with spawned(
        [*CLI_IGNORING_SIGINT, "up", "--backend", "ministack"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    ) as up:
        up.read_until(when, timeout=120)
        if when == "Press Ctrl-C":
            running = up.descendants()
            assert len(up.groups) >= 2, f"up and its emulator's own session: {running}"
        up.process.send_signal(signum)
        try:
            status = up.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pytest.fail(f"up still runs 30 s after {signum.name}:\n{''.join(up.lines)}")
        output = up.read_until(None, timeout=10)
        assert status == 0, output
        assert "Stopping." in output
        up.descendants()  # records any group still holding one of its processes
        left = up.stop(grace=5)
        assert left == [], "left behind by up:\n" + "\n".join(map(str, left))
        for pgid in up.groups:
            with pytest.raises(ProcessLookupError):
                os.killpg(pgid, 0)


@pytest.mark.harness
@pytest.mark.e2e
def test_deploy_then_destroy_on_an_endpoint() -> None:
    with MinistackBackend() as endpoint:
        args = ["--endpoint-url", str(endpoint.url)]
        deployed = run([*CLI, "deploy", *args, "--json"], timeout=120, env=AWS_ENV)
        assert deployed.returncode == 0, deployed.stderr
        outputs = json.loads(deployed.stdout)
        assert outputs["bucket"] == "csv-upload-bucket" and outputs["table"] == "csv-data"
        assert outputs["function_arn"].endswith(":function:csv-processor")
        again = run([*CLI, "deploy", *args, "--json"], timeout=120, env=AWS_ENV)
        assert json.loads(again.stdout) == outputs
        destroyed = run([*CLI, "destroy", *args], timeout=120, env=AWS_ENV)
        assert destroyed.returncode == 0, destroyed.stderr
        assert endpoint.client("dynamodb").list_tables()["TableNames"] == []


#: Run before the code under test: the extras' packages cannot be imported.
WITHOUT_EXTRAS = """
import sys
from importlib.machinery import PathFinder

path_find_spec = PathFinder.find_spec

def find_spec(cls, name, path=None, target=None):
    if name.partition(".")[0] in ("docker", "testcontainers", "ministack"):
        return None
    return path_find_spec(name, path, target)

PathFinder.find_spec = classmethod(find_spec)
"""


def test_the_cli_imports_no_optional_package_until_a_backend_needs_it() -> None:
    code = (
        "import sys\n"
        "from csv_pipeline_harness import cli\n"
        "cli.build_parser().parse_args(['deploy', '--endpoint-url', 'http://x'])\n"
        "print(sorted(m for m in ('docker', 'testcontainers', 'ministack') if m in sys.modules))"
    )
    done = run([sys.executable, "-c", code], timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


@pytest.mark.parametrize(
    ("backend", "extra"),
    [
        ("localstack", "containers"),
        ("ministack-container", "containers"),
        ("ministack", "emulator"),
    ],
)
def test_a_backend_whose_extra_is_missing_names_it(backend: str, extra: str) -> None:
    code = WITHOUT_EXTRAS + (
        "from csv_pipeline_harness.cli import main\n"
        f"sys.exit(main(['up', '--backend', '{backend}']))"
    )
    done = run([sys.executable, "-c", code], timeout=60)
    assert done.returncode == 3, done.stdout + done.stderr
    assert f"(the '{extra}' extra): pip install 'csv-pipeline-harness[{extra}]'" in done.stderr


def test_auto_without_the_extras_says_what_to_install() -> None:
    code = WITHOUT_EXTRAS + (
        "from csv_pipeline_harness.provisioning.backends import (\n"
        "    BackendUnavailable, select_backend)\n"
        "try:\n"
        "    select_backend('auto')\n"
        "except BackendUnavailable as exc:\n"
        "    print(exc)\n"
    )
    done = run([sys.executable, "-c", code], timeout=60)
    assert done.returncode == 0, done.stderr
    assert "the 'containers' extra is not installed" in done.stdout
    assert "pip install 'csv-pipeline-harness[emulator]'" in done.stdout


def test_bad_usage_exits_2() -> None:
    done = run([*CLI, "up", "--backend", "nope"], timeout=60)
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
