"""Whole pytest sessions run with the harness: what a user of the plugin relies on.

Each test here starts a pytest session of its own on a project of a few
lines (``pytester``) and checks what that session did: the backend ``auto``
chose and why, xdist workers that never share an emulator or a stack, a
shared endpoint left as it was found, the Lambda log inside the JUnit report,
and ``slow`` tests left out unless asked for. Sessions that start emulators
run through :func:`processes.run`, which fails the test if any process of
the session (an emulator, a Lambda worker) outlives it.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import urllib.error
import urllib.request
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest
from processes import run

from csv_pipeline_harness.provisioning.backends import Endpoint, MinistackBackend
from csv_pipeline_harness.provisioning.stack import Stack, StackConfig

pytestmark = pytest.mark.harness

#: Variables of the outer run that would change the inner session's choices.
OUTER_VARIABLES = (
    "CSV_PIPELINE_BACKEND",
    "AWS_ENDPOINT_URL",
    "PYTEST_ADDOPTS",
    "PYTEST_XDIST_WORKER",
    "PYTEST_XDIST_WORKER_COUNT",
    "PYTEST_XDIST_TESTRUNUID",
    "HYPOTHESIS_PROFILE",
    "CSV_PIPELINE_CANARY_TIMEOUT",
)


@pytest.fixture
def inner_env(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The environment of an inner session: the outer run's harness settings removed."""
    for name in OUTER_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    return dict(os.environ)


def pytest_session(
    pytester: pytest.Pytester, env: dict[str, str], *args: str, timeout: float = 90
) -> str:
    """Run ``pytest args`` in the pytester project as a command of its own; its output.

    Through :func:`processes.run`: a session that leaves a process behind
    fails the calling test.
    """
    done = run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args],
        timeout=timeout,
        env=env,
        cwd=pytester.path,
    )
    return done.stdout + done.stderr


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def answers(url: str) -> bool:
    """Whether anything still serves ``url``'s health check."""
    try:
        with urllib.request.urlopen(f"{url}/_ministack/health", timeout=3):
            return True
    except (urllib.error.URLError, OSError):
        return False


# -- auto: the choice and its reason in the header ---------------------------------------------


@pytest.mark.e2e
def test_auto_runs_the_installed_embedded_emulator_and_says_why(
    pytester: pytest.Pytester, inner_env: dict[str, str]
) -> None:
    """Whatever DOCKER_HOST says, auto is the embedded emulator when it is installed."""
    host = f"tcp://127.0.0.1:{closed_port()}"
    pytester.makepyfile(
        """
        def test_the_backend_that_runs(aws_backend, aws_endpoint):
            assert aws_backend.name == "ministack"
            assert aws_endpoint.url.startswith("http://127.0.0.1:")
        """
    )
    output = pytest_session(
        pytester,
        {**inner_env, "DOCKER_HOST": host},
        "--csv-pipeline-backend=auto",
        "-p",
        "no:xdist",
    )
    header = [line for line in output.splitlines() if line.startswith("csv-pipeline backend:")]
    assert header == [
        "csv-pipeline backend: ministack (auto: the embedded emulator is installed); "
        "endpoint: one per worker"
    ], output
    assert "1 passed" in output, output


# -- xdist: every worker its own emulator and stack --------------------------------------------

#: Run on every worker (``--dist each``): the same key, the worker's own content.
#: Each waits until every worker has uploaded before it looks, so a shared
#: bucket or table would show the other worker's object or row.
ISOLATION_TEST = """
import json, os, time
from pathlib import Path

OUT = Path({out!r})

def test_only_our_own_upload_is_seen(pipeline):
    worker = os.environ["PYTEST_XDIST_WORKER"]
    workers = int(os.environ["PYTEST_XDIST_WORKER_COUNT"])
    result = pipeline.ingest("same-key.csv", f"worker\\n{{worker}}\\n".encode())
    assert result.status == "COMPLETE"
    cfg = pipeline.config
    (OUT / f"{{worker}}.json").write_text(json.dumps(
        {{"url": pipeline.endpoint.url, "bucket": cfg.bucket, "table": cfg.table,
          "function": cfg.function, "role": cfg.role}}
    ))
    deadline = time.monotonic() + 30
    while len(list(OUT.glob("*.json"))) < workers:
        assert time.monotonic() < deadline, "the other worker never uploaded"
        time.sleep(0.1)
    keys = [o["Key"] for o in pipeline.s3.list_objects_v2(Bucket=cfg.bucket).get("Contents", [])]
    assert keys == ["same-key.csv"]
    items = pipeline.dynamodb.scan(TableName=cfg.table)["Items"]
    assert sorted(int(i["row"]["N"]) for i in items) == [0, 1]
    assert [r["worker"] for r in pipeline.rows("same-key.csv")] == [worker]
"""


@pytest.mark.e2e
def test_two_workers_each_get_an_emulator_and_a_stack_and_leave_nothing(
    pytester: pytest.Pytester, inner_env: dict[str, str], tmp_path: Path
) -> None:
    out = tmp_path / "workers"
    out.mkdir()
    pytester.makepyfile(ISOLATION_TEST.format(out=str(out)))
    output = pytest_session(
        pytester, inner_env, "--csv-pipeline-backend=ministack", "-n", "2", "--dist=each"
    )
    assert "2 passed" in output, output
    seen = {path.stem: json.loads(path.read_text()) for path in out.glob("*.json")}
    assert set(seen) == {"gw0", "gw1"}, output
    assert seen["gw0"]["url"] != seen["gw1"]["url"]
    # Own emulators, so the default names on each (no suffix is needed).
    assert seen["gw0"]["bucket"] == seen["gw1"]["bucket"] == StackConfig().bucket
    # Every emulator is stopped (run() already checked that no process is left).
    assert not [w for w, s in seen.items() if answers(s["url"])]


# -- a shared endpoint: suffixed stacks, removed; what was there stays --------------------------

#: What a suffixed stack records; the worker's id is part of the suffix.
SHARED_TEST = """
import json, os
from pathlib import Path

OUT = Path({out!r})

def test_a_suffixed_stack_of_this_worker(pipeline):
    worker = os.environ["PYTEST_XDIST_WORKER"]
    cfg = pipeline.config
    (OUT / f"{{worker}}.json").write_text(json.dumps(
        {{"bucket": cfg.bucket, "table": cfg.table, "function": cfg.function, "role": cfg.role}}
    ))
    for name in (cfg.bucket, cfg.table, cfg.function, cfg.role):
        assert name.split("-")[-2] == worker, name
    assert pipeline.ingest("x.csv", b"a\\n1\\n").status == "COMPLETE"
"""


@pytest.fixture
def shared_endpoint() -> Iterator[Endpoint]:
    """An emulator that is not the session's: started here, stopped here."""
    backend = MinistackBackend()
    try:
        yield backend.start()
    finally:
        backend.stop()


@pytest.mark.e2e
def test_a_shared_endpoint_gets_suffixed_stacks_and_keeps_what_it_had(
    pytester: pytest.Pytester,
    inner_env: dict[str, str],
    tmp_path: Path,
    shared_endpoint: Endpoint,
) -> None:
    # Someone's resources under the default names, which a shared run must not use.
    default = StackConfig()
    s3 = shared_endpoint.client("s3")
    dynamodb = shared_endpoint.client("dynamodb")
    s3.create_bucket(Bucket=default.bucket)
    s3.put_object(Bucket=default.bucket, Key="theirs.csv", Body=b"a\n1\n")
    dynamodb.create_table(
        TableName=default.table,
        KeySchema=[{"AttributeName": "source", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "source", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    dynamodb.put_item(TableName=default.table, Item={"source": {"S": "theirs"}})

    out = tmp_path / "stacks"
    out.mkdir()
    pytester.makepyfile(SHARED_TEST.format(out=str(out)))
    output = pytest_session(
        pytester,
        inner_env,
        "--csv-pipeline-backend=endpoint",
        f"--csv-pipeline-endpoint-url={shared_endpoint.url}",
        "-n",
        "2",
        "--dist=each",
    )
    assert "2 passed" in output, output
    stacks = [json.loads(path.read_text()) for path in sorted(out.glob("*.json"))]
    assert len(stacks) == 2, output
    assert stacks[0]["bucket"] != stacks[1]["bucket"]
    for names in stacks:
        assert Stack(shared_endpoint, StackConfig(**names)).remaining() == [], names
    # The endpoint holds what it held before the run, unchanged.
    assert [b["Name"] for b in s3.list_buckets()["Buckets"]] == [default.bucket]
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=default.bucket)["Contents"]]
    assert keys == ["theirs.csv"]
    assert dynamodb.list_tables()["TableNames"] == [default.table]
    assert dynamodb.scan(TableName=default.table)["Items"] == [{"source": {"S": "theirs"}}]
    functions = shared_endpoint.client("lambda").list_functions()["Functions"]
    assert functions == []


# -- the JUnit report carries the Lambda log ---------------------------------------------------


@pytest.mark.e2e
def test_a_failing_pipeline_tests_junit_report_holds_the_lambda_log(
    pytester: pytest.Pytester, inner_env: dict[str, str]
) -> None:
    pytester.makepyfile(
        """
        def test_wrong_expectation(pipeline, unique_key):
            result = pipeline.ingest(unique_key, b"a\\n1\\n")
            assert result.rows == []
        """
    )
    report = pytester.path / "junit.xml"
    output = pytest_session(
        pytester,
        inner_env,
        "--csv-pipeline-backend=ministack",
        "-p",
        "no:xdist",
        f"--junitxml={report}",
    )
    assert "1 failed" in output, output
    cases = ET.parse(report).getroot().iter("testcase")
    failures = [(case.get("name"), case.find("failure")) for case in cases]
    assert [name for name, failure in failures if failure is not None] == ["test_wrong_expectation"]
    failure = failures[0][1]
    assert failure is not None
    text = failure.text or ""
    assert "Lambda log (/aws/lambda/csv-processor)" in text, text
    assert "INFO Starting csv-upload-bucket/tests/test_wrong_expectation-" in text, text
    assert "assert [{" in text  # the assertion itself is still there


# -- the harness's slow tests are opt-in; the project's own are left alone --------------------

SLOW_AND_QUICK = """
import pytest

@pytest.mark.csv_pipeline_slow
def test_long():
    pass

@pytest.mark.slow
def test_the_projects_own_slow_test():
    pass

def test_quick():
    pass
"""


@pytest.mark.parametrize(
    ("args", "env", "ran"),
    [
        ((), {}, ["test_quick", "test_the_projects_own_slow_test"]),
        (("-m", "csv_pipeline_slow"), {}, ["test_long"]),
        (
            ("-m", "csv_pipeline_slow or not csv_pipeline_slow"),
            {},
            ["test_long", "test_quick", "test_the_projects_own_slow_test"],
        ),
    ],
    ids=["default", "m-slow", "m-both"],
)
def test_slow_tests_run_only_when_asked_for(
    pytester: pytest.Pytester,
    inner_env: dict[str, str],
    args: tuple[str, ...],
    env: dict[str, str],
    ran: list[str],
) -> None:
    pytester.makepyfile(SLOW_AND_QUICK)
    output = pytest_session(
        pytester,
        {**inner_env, **env},
        "-p",
        "no:xdist",
        "-v",
        "--csv-pipeline-backend=ministack",
        *args,
    )
    passed = sorted(
        line.split("::")[1].split()[0] for line in output.splitlines() if " PASSED" in line
    )
    assert passed == ran, output
    left_out = 3 - len(ran)
    assert (f"{left_out} deselected" in output) is (left_out > 0), output
