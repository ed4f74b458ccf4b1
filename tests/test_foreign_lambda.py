"""Another Lambda under the contract's tests: options, packaging, and a Lambda they catch out."""

from __future__ import annotations

import hashlib
import io
import json
import time
import uuid
import xml.etree.ElementTree as ET
import zipfile
from base64 import urlsafe_b64encode
from pathlib import Path

import pytest

from csv_pipeline_harness.provisioning.backends import Endpoint
from csv_pipeline_harness.provisioning.packaging import (
    LAMBDA_PLATFORM,
    LambdaSourceError,
    build_source_zip,
    handler_file,
)
from csv_pipeline_harness.provisioning.stack import Stack, StackConfig
from csv_pipeline_harness.pytest_plugin import lambda_under_test

NAIVE = Path(__file__).resolve().parents[1] / "examples" / "naive_lambda"
ENVS = ("CSV_PIPELINE_LAMBDA_SOURCE", "CSV_PIPELINE_LAMBDA_HANDLER")


@pytest.fixture(autouse=True)
def _no_lambda_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ENVS:
        monkeypatch.delenv(name, raising=False)


# -- choosing the Lambda -----------------------------------------------------------------------


def test_the_lambda_comes_from_the_option_then_env_then_ini(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("ini_fn", "env_fn", "opt_fn"):
        pytester.mkdir(name).joinpath("handler.py").write_text("def f(e, c):\n    pass\n")
    assert lambda_under_test(pytester.parseconfig()) is None
    pytester.makeini(
        "[pytest]\ncsv_pipeline_lambda_source = ini_fn\ncsv_pipeline_lambda_handler = handler.f\n"
    )
    chosen = lambda_under_test(pytester.parseconfig())
    assert chosen is not None and chosen.source == pytester.path / "ini_fn"
    monkeypatch.setenv("CSV_PIPELINE_LAMBDA_SOURCE", str(pytester.path / "env_fn"))
    chosen = lambda_under_test(pytester.parseconfig())
    assert chosen is not None and chosen.source == pytester.path / "env_fn"
    chosen = lambda_under_test(
        pytester.parseconfig(f"--csv-pipeline-lambda-source={pytester.path / 'opt_fn'}")
    )
    assert chosen is not None
    assert (chosen.source, chosen.handler) == (pytester.path / "opt_fn", "handler.f")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--csv-pipeline-lambda-source=missing", "--csv-pipeline-lambda-handler=handler.f"],
            "*missing does not exist",
        ),
        (
            ["--csv-pipeline-lambda-source=fn", "--csv-pipeline-lambda-handler=other.f"],
            "*other.py nor *other/__init__.py exists",
        ),
        (
            ["--csv-pipeline-lambda-source=fn", "--csv-pipeline-lambda-handler=handler"],
            "*'handler' is not module.function*",
        ),
        (
            ["--csv-pipeline-lambda-source=fn"],
            "ERROR: --csv-pipeline-lambda-source needs --csv-pipeline-lambda-handler too*",
        ),
        (
            ["--csv-pipeline-lambda-handler=handler.f"],
            "ERROR: --csv-pipeline-lambda-handler needs --csv-pipeline-lambda-source too*",
        ),
    ],
    ids=["missing-dir", "missing-module", "no-function", "no-handler", "no-source"],
)
@pytest.mark.harness
def test_a_lambda_that_cannot_be_deployed_stops_the_run_before_it_starts(
    pytester: pytest.Pytester, args: list[str], message: str
) -> None:
    pytester.mkdir("fn").joinpath("handler.py").write_text("def f(e, c):\n    pass\n")
    pytester.makepyfile("def test_nothing():\n    pass\n")
    started = time.monotonic()
    result = pytester.runpytest(*args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([message])
    assert time.monotonic() - started < 5, "no emulator may start for a usage error"


@pytest.mark.harness
def test_only_contract_tests_of_the_harness_run_against_another_lambda(
    pytester: pytest.Pytester,
) -> None:
    """Of the tests using the harness's fixtures, only contract ones; the project's own all run."""
    pytester.mkdir("fn").joinpath("handler.py").write_text("def f(e, c):\n    pass\n")
    pytester.makepyfile(
        """
        import pytest

        @pytest.fixture
        def pipeline():  # stands in for the harness's, so no emulator starts
            return "a pipeline"

        @pytest.mark.csv_pipeline_contract
        def test_contract(pipeline):
            pass

        def test_our_lambdas_internals(pipeline):
            pass

        def test_the_projects_own_unit_test():
            pass
        """
    )
    result = pytester.runpytest(
        "-v", "--csv-pipeline-lambda-source=fn", "--csv-pipeline-lambda-handler=handler.f"
    )
    result.assert_outcomes(passed=2, deselected=1)
    result.stdout.fnmatch_lines(
        [
            f"csv-pipeline lambda: handler.f from {pytester.path / 'fn'}; "
            "tests using the harness's fixtures run only when marked csv_pipeline_contract",
            "*::test_contract PASSED*",
            "*::test_the_projects_own_unit_test PASSED*",
        ]
    )
    assert "test_our_lambdas_internals" not in result.stdout.str()


# -- packaging ---------------------------------------------------------------------------------


def _wheel(directory: Path, name: str, module: str) -> Path:
    """A pure-Python wheel of one module, built by hand (no build backend, no index)."""
    dist = f"{name}-1.0.dist-info"
    files = {
        f"{name}.py": module.encode(),
        f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n".encode(),
        f"{dist}/WHEEL": b"Wheel-Version: 1.0\nGenerator: hand\nRoot-Is-Purelib: true\n"
        b"Tag: py3-none-any\n",
    }
    record = "".join(
        f"{path},sha256={urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b'=').decode()},"
        f"{len(data)}\n"
        for path, data in files.items()
    )
    files[f"{dist}/RECORD"] = (record + f"{dist}/RECORD,,\n").encode()
    path = directory / f"{name}-1.0-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as archive:
        for member, data in files.items():
            archive.writestr(member, data)
    return path


def test_the_source_goes_to_the_zip_root_with_its_requirements(tmp_path: Path) -> None:
    wheel = _wheel(tmp_path, "tinydep", "VALUE = 42\n")
    source = tmp_path / "fn"
    (source / "__pycache__").mkdir(parents=True)
    (source / "__pycache__" / "handler.cpython-312.pyc").write_bytes(b"cache")
    (source / "handler.py").write_text("import tinydep\n")
    (source / "requirements.txt").write_text(f"{wheel}\n")
    first = build_source_zip(source, runtime="python3.12")
    assert first == build_source_zip(source, runtime="python3.12"), "not reproducible"
    names = zipfile.ZipFile(io.BytesIO(first)).namelist()
    assert "handler.py" in names and "tinydep.py" in names
    assert "requirements.txt" in names
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]
    assert handler_file(source, "handler.lambda_handler") == source / "handler.py"


def test_a_requirement_without_a_wheel_for_the_runtime_says_so(tmp_path: Path) -> None:
    source = tmp_path / "fn"
    source.mkdir()
    (source / "handler.py").write_text("")
    (source / "requirements.txt").write_text(f"{tmp_path / 'absent-1.0-py3-none-any.whl'}\n")
    with pytest.raises(LambdaSourceError, match=f"for Python 3.12 on {LAMBDA_PLATFORM}"):
        build_source_zip(source, runtime="python3.12")


# -- a Lambda the contract catches out --------------------------------------------------------

#: The contract tests chosen for the naive Lambda, and why each must fail (a
#: text its failure holds); ``None``: it must pass.
EXPECTED = {
    "test_values_are_strings_without_type_guessing": None,
    "test_header_only_file_completes_with_no_rows": None,
    # Blank cells stored as "" instead of NULL.
    "test_seed_sample_with_blanks": "'age': ''",
    # The BOM kept as part of the first column's name.
    "test_utf8_bom_and_unicode": "\\ufeffnom",
    # Only the first record of the event read.
    "test_every_record_of_an_event_is_processed": "assert [] == ['1']",
    # The same event processed again: the manifest's timestamps change.
    "test_same_event_delivered_twice_yields_the_same_table": "_at",
    # The key used as the event spells it: the manifest lands under another source,
    # and the log's error line names the object, so the wait ends at once.
    "test_object_keys_are_decoded_exactly[with space/my file.csv]": "will not be processed",
}


@pytest.mark.harness
@pytest.mark.e2e
def test_the_contract_suite_fails_a_naive_lambda_for_the_right_reasons(
    pytester: pytest.Pytester,
) -> None:
    """Run as a user would, from a directory of their own, on the installed package."""
    selection = " or ".join(
        [
            "type_guessing",
            "header_only",
            "blanks",
            "bom",
            "every_record",
            "delivered_twice",
            "(decoded_exactly and space)",
        ]
    )
    report = pytester.path / "report.xml"
    result = pytester.runpytest_subprocess(
        "--pyargs",
        "csv_pipeline_harness.contract",
        f"--csv-pipeline-lambda-source={NAIVE}",
        "--csv-pipeline-lambda-handler=handler.lambda_handler",
        "-p",
        "no:cacheprovider",
        "-n",
        "0",
        "--csv-pipeline-canary-timeout=15",
        "-k",
        selection,
        f"--junitxml={report}",
        timeout=120,
    )
    outcomes: dict[str, str | None] = {}
    for case in ET.parse(report).iter("testcase"):
        failure = case.find("failure")
        outcomes[case.get("name", "")] = (
            None if failure is None else f"{failure.get('message')}\n{failure.text}"
        )
    assert set(outcomes) == set(EXPECTED), result.stdout.str()
    for name, reason in EXPECTED.items():
        if reason is None:
            assert outcomes[name] is None, f"{name} should pass:\n{outcomes[name]}"
        else:
            assert outcomes[name] is not None, f"{name} should fail ({reason})"
            assert reason in outcomes[name], f"{name} failed otherwise:\n{outcomes[name]}"
    result.stdout.fnmatch_lines(
        [f"csv-pipeline lambda: handler.lambda_handler from {NAIVE}; tests using the harness*"]
    )


@pytest.mark.e2e
def test_a_deployed_lambda_imports_what_its_requirements_name(
    aws_endpoint: Endpoint, tmp_path: Path
) -> None:
    """The requirement goes into the zip and the function imports it when it runs."""
    wheel = _wheel(tmp_path, "tinydep", "VALUE = 42\n")
    source = tmp_path / "fn"
    source.mkdir()
    (source / "handler.py").write_text(
        "import tinydep\n\n\ndef lambda_handler(event, context):\n    return tinydep.VALUE\n"
    )
    (source / "requirements.txt").write_text(f"{wheel}\n")
    suffix = uuid.uuid4().hex[:8]
    config = StackConfig(
        bucket=f"reqs-{suffix}",
        table=f"reqs-{suffix}",
        function=f"reqs-{suffix}",
        role=f"reqs-{suffix}",
        handler="handler.lambda_handler",
        lambda_source=source,
    )
    stack = Stack(aws_endpoint, config)
    try:
        stack.deploy()
        response = aws_endpoint.client("lambda").invoke(FunctionName=config.function, Payload=b"{}")
        assert "FunctionError" not in response, response["Payload"].read()
        assert json.loads(response["Payload"].read()) == 42
    finally:
        stack.destroy()
    assert stack.remaining() == []
