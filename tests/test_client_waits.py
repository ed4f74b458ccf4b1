"""The harness client's log wait: it returns once enough lines are in, else says what is missing.

Tests read an invocation's lines only after waiting for them: a line arrives
when its invocation has ended, which may be after the manifest it wrote.
"""

from __future__ import annotations

import uuid

import pytest

from csv_pipeline_harness.client import IngestionError, PipelineClient


@pytest.mark.e2e
def test_a_log_wait_returns_once_the_asked_number_of_lines_match(
    pipeline: PipelineClient,
) -> None:
    key = f"waits/{uuid.uuid4().hex}.csv"
    since = pipeline.log_mark()
    pipeline.ingest(key, b"a\n1\n")
    pipeline.ingest(key, b"a\n2\n")
    finished = f"Finished {pipeline.source(key)}"
    lines = pipeline.wait_for_log(since, finished, count=2)
    assert sum(finished in line for line in lines) == 2, lines
    with pytest.raises(IngestionError, match=r"\(3 lines\)") as caught:
        pipeline.wait_for_log(since, finished, timeout=0.5, count=3)
    assert finished in str(caught.value), "the report shows the lines seen so far"
