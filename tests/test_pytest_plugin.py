"""The harness as a user meets it: installed plugin, header, options, failure reports."""

from __future__ import annotations

import re
import time

import pytest

from csv_pipeline_harness import options
from csv_pipeline_harness.stacks import DEFAULT_CANARY_TIMEOUT, canary_timeout, stack_fixture

#: The heading ``pytest --help`` shows above every option of the harness.
HEADING = "csv-pipeline-harness (S3 -> Lambda -> DynamoDB; see `csv-pipeline --help`):"
OPTIONS = tuple(option.flag for option in options.OPTIONS) + tuple(
    f"--no-{option.flag[2:]}" for option in options.OPTIONS if option.switch
)


def option_block(lines: list[str], heading: str) -> list[str]:
    """The lines of ``pytest --help`` under ``heading``, up to the next blank line."""
    start = lines.index(heading) + 1
    end = next((i for i in range(start, len(lines)) if not lines[i].strip()), len(lines))
    return lines[start:end]


@pytest.mark.harness
def test_an_installed_package_brings_its_options_under_one_heading(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A fresh project, no conftest: the ``pytest11`` entry point loads the harness."""
    monkeypatch.delenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", raising=False)
    assert not list(pytester.path.glob("conftest.py"))
    result = pytester.runpytest_subprocess("--help", timeout=60)
    assert result.ret == 0, result.stderr.str()
    lines = result.stdout.lines
    assert HEADING in lines, result.stdout.str()
    block = "\n".join(option_block(lines, HEADING))
    text = result.stdout.str()
    for option in OPTIONS:
        listed = re.compile(rf"^  {re.escape(option)}(?:[= ]|$)", re.MULTILINE)  # value or flag
        assert listed.search(block), block
        assert len(listed.findall(text)) == 1, f"{option} listed outside the heading"


@pytest.mark.harness
@pytest.mark.e2e
def test_an_installed_package_gives_a_fresh_project_the_pipeline(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", raising=False)
    pytester.makepyfile(
        """
        def test_ingest(pipeline, unique_key):
            result = pipeline.ingest(unique_key, b"a,b\\n1,\\n")
            assert result.status == "COMPLETE"
            assert [{k: v for k, v in r.items() if k != "source"} for r in result.rows] == [
                {"row": 1, "a": "1", "b": None}
            ]
        """
    )
    result = pytester.runpytest("--csv-pipeline-backend=ministack")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["plugins:*csv-pipeline-harness-*"])


@pytest.mark.harness
@pytest.mark.e2e
def test_header_names_the_backend_and_why(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_nothing():\n    pass\n")
    result = pytester.runpytest("--csv-pipeline-backend=ministack")
    result.stdout.fnmatch_lines(["csv-pipeline backend: ministack (chosen explicitly)*"])
    assert result.ret == 0


@pytest.mark.harness
@pytest.mark.e2e
def test_failing_pipeline_test_reports_the_lambda_log(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        def test_wrong_expectation(pipeline, unique_key):
            result = pipeline.ingest(unique_key, b"a\\n1\\n")
            assert result.rows == []
        """
    )
    result = pytester.runpytest("--csv-pipeline-backend=ministack")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        ["*Lambda log (/aws/lambda/csv-processor)*", "*INFO Starting csv-upload-bucket/tests/*"]
    )


@pytest.mark.harness
@pytest.mark.e2e
def test_unavailable_backend_fails_with_the_fix(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_uses_aws(aws_endpoint):\n    pass\n")
    result = pytester.runpytest("--csv-pipeline-backend=endpoint")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*AWS backend unavailable*--csv-pipeline-endpoint-url*"])


# -- the canary: a broken wiring stops the session with one message ----------------------------

#: A project whose stack is deployed, then loses its bucket notification.
MISWIRED_CONFTEST = """
import pytest

@pytest.fixture(scope="session")
def deployed_stack(deployed_stack, aws_endpoint):
    aws_endpoint.client("s3").put_bucket_notification_configuration(
        Bucket=deployed_stack.bucket, NotificationConfiguration={}
    )
    return deployed_stack
"""

#: Tests that would each wait 60 s for a manifest that never comes.
PIPELINE_TESTS = """
def test_no_aws():
    pass

def test_first(pipeline, unique_key):
    assert pipeline.ingest(unique_key, b"a\\n1\\n").status == "COMPLETE"

def test_second(pipeline, unique_key):
    assert pipeline.ingest(unique_key, b"a\\n1\\n").status == "COMPLETE"

def test_third(pipeline, unique_key):
    assert pipeline.ingest(unique_key, b"a\\n1\\n").status == "COMPLETE"
"""


@pytest.mark.harness
@pytest.mark.e2e
def test_a_miswired_stack_stops_the_session_with_one_message(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Under CI pytest prints summary lines untruncated, repeating the message once more.
    for variable in ("CI", "BUILD_NUMBER"):
        monkeypatch.delenv(variable, raising=False)
    pytester.makeconftest(MISWIRED_CONFTEST)
    pytester.makepyfile(PIPELINE_TESTS)
    started = time.monotonic()
    result = pytester.runpytest(
        "--csv-pipeline-backend=ministack", "--csv-pipeline-canary-timeout=3"
    )
    elapsed = time.monotonic() - started
    # One error, for the first test that needed the pipeline; the rest never ran.
    result.assert_outcomes(passed=1, errors=1)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    assert elapsed < 30, f"took {elapsed:.0f} s"
    text = result.stdout.str()
    assert text.count("The pipeline's wiring is broken") == 1, text
    result.stdout.fnmatch_lines(
        [
            "*ERROR at setup of test_first*",
            "The pipeline's wiring is broken: the canary s3://csv-upload-bucket/_canary/*"
            "got no final manifest in table csv-data within 3 s*",
            "*bucket notification: s3 get_bucket_notification_configuration(*",
            "*MISSING: csv-upload-bucket has no Lambda notification*",
            "*invoke permission: lambda get_policy(FunctionName=csv-processor)*",
            "*OK: s3.amazonaws.com may invoke csv-processor*",
            "*function state: lambda get_function_configuration(FunctionName=csv-processor)*",
            "*OK: State=Active LastUpdateStatus=Successful*",
            "*canary manifest*",
            "*none: the function never wrote this source*",
            "*Lambda log (/aws/lambda/csv-processor), last 20 lines*",
            "*(no log group: the function has never run)*",
            "*! pipeline canary failed: the canary s3://*within 3 s !*",
        ]
    )


@pytest.mark.harness
@pytest.mark.e2e
def test_a_canary_timeout_of_0_skips_the_check(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(MISWIRED_CONFTEST)
    pytester.makepyfile(
        """
        def test_nothing_was_uploaded(pipeline):
            listing = pipeline.s3.list_objects_v2(Bucket=pipeline.config.bucket)
            assert listing.get("KeyCount", 0) == 0
        """
    )
    result = pytester.runpytest(
        "--csv-pipeline-backend=ministack", "--csv-pipeline-canary-timeout=0"
    )
    result.assert_outcomes(passed=1)


@pytest.mark.harness
@pytest.mark.e2e
def test_the_canary_runs_and_leaves_nothing_behind(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import time

        def test_canary_ran_and_was_removed(pipeline):
            cfg = pipeline.config
            deadline = time.monotonic() + 30
            lines = []
            while not any(f"Finished {cfg.bucket}/_canary/" in line for line in lines):
                assert time.monotonic() < deadline, lines
                time.sleep(0.2)
                lines = pipeline.lambda_log_lines()
            assert pipeline.s3.list_objects_v2(Bucket=cfg.bucket).get("KeyCount", 0) == 0
            assert pipeline.dynamodb.scan(TableName=cfg.table)["Items"] == []
        """
    )
    result = pytester.runpytest("--csv-pipeline-backend=ministack")
    result.assert_outcomes(passed=1)


def test_canary_timeout_comes_from_the_option_then_env_then_ini(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CSV_PIPELINE_CANARY_TIMEOUT", raising=False)
    assert canary_timeout(pytester.parseconfig()) == DEFAULT_CANARY_TIMEOUT
    pytester.makeini("[pytest]\ncsv_pipeline_canary_timeout = 7\n")
    assert canary_timeout(pytester.parseconfig()) == 7
    monkeypatch.setenv("CSV_PIPELINE_CANARY_TIMEOUT", "5.5")
    assert canary_timeout(pytester.parseconfig()) == 5.5
    assert canary_timeout(pytester.parseconfig("--csv-pipeline-canary-timeout=0")) == 0


@pytest.mark.parametrize(
    ("where", "value", "named"),
    [
        ("option", "-1", "--csv-pipeline-canary-timeout: '-1' must be"),
        ("env", "soon", "env CSV_PIPELINE_CANARY_TIMEOUT: 'soon' is not a number"),
        ("env", "-3", "env CSV_PIPELINE_CANARY_TIMEOUT: '-3' must be"),
        ("ini", "inf", "ini csv_pipeline_canary_timeout: 'inf' must be"),
    ],
)
@pytest.mark.harness
def test_a_bad_canary_timeout_stops_the_run_before_it_starts(
    pytester: pytest.Pytester,
    monkeypatch: pytest.MonkeyPatch,
    where: str,
    value: str,
    named: str,
) -> None:
    monkeypatch.delenv("CSV_PIPELINE_CANARY_TIMEOUT", raising=False)
    pytester.makepyfile("def test_nothing():\n    pass\n")
    args = []
    if where == "option":
        args.append(f"--csv-pipeline-canary-timeout={value}")
    elif where == "env":
        monkeypatch.setenv("CSV_PIPELINE_CANARY_TIMEOUT", value)
    else:
        pytester.makeini(f"[pytest]\ncsv_pipeline_canary_timeout = {value}\n")
    result = pytester.runpytest(*args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"ERROR: {named}*"])


# -- stack_fixture: a stack of its own per module (or test) ------------------------------------

#: A handler wrapping the product's, shipped as an extra file: its mark in the
#: response proves both the extra file and the handler setting.
WRAPPER = """
from csv_pipeline import handler

def lambda_handler(event, context=None):
    return {**handler.lambda_handler(event, context), "wrapped": True}
"""


@pytest.mark.harness
@pytest.mark.e2e
def test_a_stack_fixture_deploys_its_own_stack_and_destroys_it(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_a_factory=f"""
        from csv_pipeline_harness.stacks import DeployedPipeline, stack_fixture

        wrapped = stack_fixture(
            prefix="wrapped",
            handler="wrapper.lambda_handler",
            extra_files={{"wrapper.py": {WRAPPER!r}}},
            timeout_s=12,
            environment={{"EXTRA_SETTING": "yes"}},
        )
        SEEN = []

        def test_unique_names_and_the_settings_asked_for(wrapped, pipeline):
            SEEN.append(wrapped)
            assert isinstance(wrapped, DeployedPipeline)
            cfg = wrapped.config
            assert cfg.bucket.startswith("wrapped-") and cfg.bucket != pipeline.config.bucket
            assert cfg.bucket == cfg.table == cfg.function == cfg.role == wrapped.outputs.function
            function = wrapped.stack.lambda_.get_function_configuration(FunctionName=cfg.function)
            assert function["Handler"] == "wrapper.lambda_handler"
            assert function["Timeout"] == 12
            assert function["Environment"]["Variables"]["EXTRA_SETTING"] == "yes"

        def test_the_extra_file_handles_the_events(wrapped):
            SEEN.append(wrapped)
            result = wrapped.ingest("x.csv", b"a\\n1\\n")
            assert result.status == "COMPLETE"
            response = wrapped.invoke(wrapped.s3_event("x.csv", result.etag))
            assert response["Payload"]["wrapped"] is True
            assert response["Payload"]["results"][0]["status"] == "ALREADY_DONE"

        def test_one_stack_per_module():
            assert len(SEEN) == 2 and SEEN[0] is SEEN[1]
        """,
        test_b_after=r"""
        def test_the_modules_stack_is_gone(aws_endpoint):
            functions = aws_endpoint.client("lambda").list_functions()["Functions"]
            buckets = aws_endpoint.client("s3").list_buckets()["Buckets"]
            tables = aws_endpoint.client("dynamodb").list_tables()["TableNames"]
            names = [f["FunctionName"] for f in functions] + [b["Name"] for b in buckets] + tables
            assert "csv-processor" in names  # the session's stack stays
            assert not [n for n in names if n.startswith("wrapped-")], names
        """,
    )
    result = pytester.runpytest("--csv-pipeline-backend=ministack")
    result.assert_outcomes(passed=4)


@pytest.mark.harness
@pytest.mark.e2e
def test_a_stack_fixture_reports_its_log_and_its_broken_wiring(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_c_report="""
        from csv_pipeline_harness.stacks import stack_fixture

        reported = stack_fixture(prefix="reported")
        broken = stack_fixture(prefix="broken", handler="no_such_module.lambda_handler")

        def test_a_failure_carries_the_stacks_log(reported):
            assert reported.ingest("tests/x.csv", b"a\\n1\\n").rows == []

        def test_a_broken_stack_errors_with_the_facts(broken):
            pass

        def test_the_session_goes_on():
            pass
        """
    )
    result = pytester.runpytest(
        "--csv-pipeline-backend=ministack", "--csv-pipeline-canary-timeout=3"
    )
    result.assert_outcomes(passed=1, failed=1, errors=1)
    result.stdout.fnmatch_lines(
        [
            "*ERROR at setup of test_a_broken_stack_errors_with_the_facts*",
            "The pipeline's wiring is broken: the canary s3://broken-*/_canary/broken-*",
            "*OK: uploads to broken-* invoke broken-*",
            "*Handler=no_such_module.lambda_handler*",
            "*FAILURES*",
            "*Lambda log (/aws/lambda/reported-*)*",
            "*INFO Starting reported-*/tests/x.csv*",
        ]
    )


def test_a_stack_fixture_refuses_what_stackconfig_refuses() -> None:
    with pytest.raises(TypeError, match="StackConfig has no field bukket"):
        stack_fixture(bukket="x")
    with pytest.raises(ValueError, match="max_retry_attempts"):
        stack_fixture(max_retry_attempts=3)
