"""The harness as a user meets it: header, options, failure reports."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.e2e


def test_header_names_the_backend_and_why(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_nothing():\n    pass\n")
    result = pytester.runpytest("-p", "provisioning.pytest_plugin", "--aws-backend=ministack")
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
    result = pytester.runpytest("-p", "provisioning.pytest_plugin", "--aws-backend=ministack")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        ["*Lambda log (/aws/lambda/csv-processor)*", "*INFO Starting csv-upload-bucket/tests/*"]
    )


def test_unavailable_backend_fails_with_the_fix(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_uses_aws(aws_endpoint):\n    pass\n")
    result = pytester.runpytest("-p", "provisioning.pytest_plugin", "--aws-backend=endpoint")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*AWS backend unavailable*--aws-endpoint-url*"])
