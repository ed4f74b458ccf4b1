"""How a broken pipeline is reported: at once, with the cause, on a small example.

A planted bug (event keys used without URL-decoding, a classic first-version
mistake) is deployed as a foreign Lambda and the contract's main property is
run against it in a child session. The report must come from the Lambda's own
log line (no manifest timeout waited out) and name a shrunk, readable example.
The time it takes is a figure for the README, measured, not asserted.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

import csv_pipeline


def plant_undecoded_keys(into: Path) -> Path:
    """A copy of this package's Lambda that uses the event's key as it arrives."""
    shutil.copytree(Path(csv_pipeline.__file__).parent, into / "csv_pipeline")
    events = into / "csv_pipeline" / "events.py"
    text = events.read_text()
    assert text.count('key=unquote_plus(obj["key"])') == 1
    events.write_text(text.replace('key=unquote_plus(obj["key"])', 'key=obj["key"]'))
    return into


@pytest.mark.harness
@pytest.mark.e2e
def test_a_planted_bug_is_reported_from_the_log_with_a_shrunk_example(
    pytester: pytest.Pytester, tmp_path: Path
) -> None:
    source = plant_undecoded_keys(tmp_path / "planted")
    result = pytester.runpytest_subprocess(
        "-p",
        "no:cacheprovider",
        "-n",
        "0",
        "--pyargs",
        "csv_pipeline_harness.contract.test_properties",
        "-k",
        "test_table_equals_the_oracle",
        f"--csv-pipeline-lambda-source={source}",
        "--csv-pipeline-lambda-handler=csv_pipeline.handler.lambda_handler",
        timeout=600,
    )
    text = result.stdout.str()
    result.assert_outcomes(failed=1)
    assert "will not be processed: the function's log names it in a failure" in text, text[-3000:]
    assert "WARNING Skipping" in text and "cannot be read (404)" in text
    assert "not processed within" not in text, "a manifest timeout was waited out"
    # Hypothesis shows the example it shrank to, with the generated key.
    assert "Falsifying example" in text or "Failing test case" in text, text[-3000:]
    # repr() quotes the key with " when the generated name holds a '.
    assert re.search(r"""s3 key (['"])properties/[0-9a-f]{32}/.*\.csv\1""", text), text[-3000:]
