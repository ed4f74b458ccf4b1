"""Hypothesis profiles for the property suites (ours and the shipped contract suite).

The plugin registers them only when ``--hypothesis-profile`` names one, and
never loads one itself: a project that installs the harness keeps its own
Hypothesis settings. ``max_examples`` is the end-to-end budget; every other
property runs a fixed multiple of it, so all of them follow the profile.

* ``csv-pipeline-dev``: 25 examples per end-to-end property (12 re-upload
  pairs, 3 per defect, 2 uploads of 10,000 rows), about 700 for the parsing
  core: the default run's feedback in under a minute.
* ``csv-pipeline-ci``: eight times that (200 per end-to-end property).
* ``csv-pipeline-thorough``: forty times ``csv-pipeline-dev``.
* ``csv-pipeline-mutation``: 30 (150 examples of the parsing oracle),
  derandomized, without the example database (``tox -e mutation``). Each mutant
  reruns the properties that reach it, so they must be cheap; and a fixed set
  of examples makes a mutant's verdict, and so the score, the same on every run.

This repository's conftest loads ``csv-pipeline-ci`` when ``CI`` is set, else
``csv-pipeline-dev`` (``HYPOTHESIS_PROFILE`` or ``--hypothesis-profile``
choose another). The names are namespaced so Hypothesis' own ``ci`` profile,
and a project's own ``dev``, stay as they are. Each profile names its parent
and every setting that differs between Hypothesis' own profiles, so nothing
is inherited by accident. Every
profile is randomized (a fresh seed for every test in every run), keeps
failing examples in ``.hypothesis/`` (replayed first on the next run; CI
caches the directory) and prints the blob of a failure for
``@reproduce_failure``. A fixed ``--hypothesis-seed`` would turn the example
database off, so the blob, not a seed, is what replays a failure.

Deadlines are set per test (see the test modules): none for anything that
waits on the emulator, whose latency is not the code under test; 2 s for the
CPU-bound parsing properties. No health check is suppressed: generating a
document stays cheap even where running the example is slow.
"""

from __future__ import annotations

import os

PREFIX = "csv-pipeline-"
PROFILES = {f"{PREFIX}dev": 25, f"{PREFIX}ci": 200, f"{PREFIX}thorough": 1000}
MUTATION = f"{PREFIX}mutation"

#: The mutation run's budget: the parsing properties run multiples of it (150 for the oracle).
MUTATION_EXAMPLES = 30


def register() -> None:
    """Register the profiles (again: the same settings); load none of them."""
    from hypothesis import settings
    from hypothesis.database import DirectoryBasedExampleDatabase

    common = {
        "derandomize": False,
        "database": DirectoryBasedExampleDatabase(".hypothesis/examples"),
        "print_blob": True,
        "suppress_health_check": (),
    }
    default = settings.get_profile("default")
    for name, examples in PROFILES.items():
        settings.register_profile(name, parent=default, max_examples=examples, **common)
    settings.register_profile(
        MUTATION,
        parent=default,
        max_examples=MUTATION_EXAMPLES,
        **{**common, "derandomize": True, "database": None},
    )


def chosen() -> str:
    """This repository's choice: ``HYPOTHESIS_PROFILE``, else ci under ``CI``, else dev."""
    return os.environ.get("HYPOTHESIS_PROFILE") or (
        f"{PREFIX}ci" if os.environ.get("CI") else f"{PREFIX}dev"
    )


def header() -> str:
    from hypothesis import settings

    current = settings()
    return (
        f"hypothesis: profile {settings.get_current_profile_name()}, "
        f"{current.max_examples} end-to-end examples, derandomize={current.derandomize}"
    )
