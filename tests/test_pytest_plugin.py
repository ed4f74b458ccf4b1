"""The harness as a user meets it: installed plugin, header, options, failure reports."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.e2e

#: The heading ``pytest --help`` shows above every option of the harness.
HEADING = "csv-pipeline-harness (S3 -> Lambda -> DynamoDB on an AWS emulator):"
OPTIONS = ("--aws-backend", "--aws-endpoint-url", "--localstack-image", "--ministack-image")


def option_block(lines: list[str], heading: str) -> list[str]:
    """The lines of ``pytest --help`` under ``heading``, up to the next blank line."""
    start = lines.index(heading) + 1
    end = next((i for i in range(start, len(lines)) if not lines[i].strip()), len(lines))
    return lines[start:end]


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
        assert f"  {option}=" in block, block
        assert text.count(f"  {option}=") == 1, f"{option} listed outside the heading"


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
    result = pytester.runpytest("--aws-backend=ministack")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["plugins:*csv-pipeline-harness-*"])


def test_header_names_the_backend_and_why(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_nothing():\n    pass\n")
    result = pytester.runpytest("--aws-backend=ministack")
    result.stdout.fnmatch_lines(["aws backend: ministack (chosen explicitly)*"])
    assert result.ret == 0


def test_failing_pipeline_test_reports_the_lambda_log(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        def test_wrong_expectation(pipeline, unique_key):
            result = pipeline.ingest(unique_key, b"a\\n1\\n")
            assert result.rows == []
        """
    )
    result = pytester.runpytest("--aws-backend=ministack")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        ["*Lambda log (/aws/lambda/csv-processor)*", "*INFO Starting csv-upload-bucket/tests/*"]
    )


def test_unavailable_backend_fails_with_the_fix(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_uses_aws(aws_endpoint):\n    pass\n")
    result = pytester.runpytest("--aws-backend=endpoint")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*AWS backend unavailable*--aws-endpoint-url*"])
