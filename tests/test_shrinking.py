"""The shrinking budget of the end-to-end properties (no emulator needed)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from csv_pipeline_harness.contract.shrinking import bounded_shrinking


def run_failing_property(seconds: float) -> list[int]:
    """Run a property that fails for x >= 500; return every x its body ran with."""
    runs: list[int] = []

    @settings(max_examples=200, database=None, derandomize=True, deadline=None)
    @given(st.integers(min_value=0, max_value=100_000))
    @bounded_shrinking(seconds)
    def prop(x: int) -> None:
        runs.append(x)
        assert x < 500

    with pytest.raises(AssertionError):
        prop()
    return runs


def test_without_a_spent_budget_the_failure_shrinks_to_the_smallest_example() -> None:
    runs = run_failing_property(seconds=3600)
    assert runs[-1] == 500  # the reported (replayed) example is the minimal one


def test_a_spent_budget_runs_no_new_example_and_reports_a_real_failure() -> None:
    runs = run_failing_property(seconds=0)
    first = next(i for i, x in enumerate(runs) if x >= 500)
    after = runs[first + 1 :]
    # Only replays of examples that already failed ran: nothing new was tried.
    assert set(after) <= {runs[first]}, after
    assert len(after) <= 2, after
