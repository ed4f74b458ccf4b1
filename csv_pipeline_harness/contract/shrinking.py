"""A time budget for shrinking an end-to-end property's failure.

Every example of an end-to-end property uploads a file and waits for the
pipeline, so Hypothesis' shrinker (which may try hundreds of smaller
examples, for up to five minutes) can hold back the report of a broken
pipeline for a long time. :func:`bounded_shrinking` gives the shrinker a
budget counted from the first failure: once it is spent, every new example is
rejected (``hypothesis.reject``) in no time, so the shrinker finishes at once
and reports the smallest failing example found so far. Examples that failed
before (the replay of the reported one among them) still run, so the reported
failure is always a real one.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from typing import Any, TypeVar

from hypothesis import reject

from csv_pipeline_harness import options

F = TypeVar("F", bound=Callable[..., Any])


def bounded_shrinking(seconds: float | None = None) -> Callable[[F], F]:
    """Decorate a test under ``@given``: after ``seconds`` of shrinking, try no new example.

    ``seconds`` defaults to the session's ``shrink-seconds`` setting
    (``--csv-pipeline-shrink-seconds``, env, ini; 30), read when the test runs.
    """

    def decorate(test: F) -> F:
        first_failure: float | None = None
        failed: set[str] = set()

        @functools.wraps(test)
        def run(*args: Any, **kwargs: Any) -> Any:
            nonlocal first_failure
            example = repr((args, sorted(kwargs.items())))
            budget = seconds if seconds is not None else options.session_value("shrink-seconds")
            spent = first_failure is not None and time.monotonic() - first_failure > budget
            if spent and example not in failed:
                reject()
            try:
                return test(*args, **kwargs)
            except Exception:
                failed.add(example)
                if first_failure is None:
                    first_failure = time.monotonic()
                raise

        return run  # type: ignore[return-value]

    return decorate
