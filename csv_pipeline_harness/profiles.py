"""Hypothesis profiles for the property suites (ours and the shipped contract suite).

Profiles (``--hypothesis-profile NAME`` or ``HYPOTHESIS_PROFILE=NAME``; ``ci``
when ``CI`` is set, else ``dev``). ``max_examples`` is the end-to-end budget;
every other property runs a fixed multiple of it, so all of them follow the
profile.

* ``dev``: 25 examples per end-to-end property (12 re-upload pairs, 3 per
  defect, 2 uploads of 10,000 rows), about 700 for the parsing core: the
  default run's feedback in under a minute.
* ``ci``: eight times that (200 per end-to-end property).
* ``thorough``: forty times ``dev``, plus the ``slow`` and ``harness`` tests.
* ``mutation``: 30 (150 examples of the parsing oracle), derandomized, without the example
  database (``tox -e mutation``). Each mutant reruns the properties that reach
  it, so they must be cheap; and a fixed set of examples makes a mutant's
  verdict, and so the score, the same on every run.

Each profile names its parent and every setting that differs between
Hypothesis' own profiles, so nothing is inherited by accident (Hypothesis'
built-in ``ci`` profile, which it loads when ``CI`` is set, derandomizes and
drops the example database — the opposite of what this suite wants). Every
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

from hypothesis import settings
from hypothesis.database import DirectoryBasedExampleDatabase

PROFILES = {"dev": 25, "ci": 200, "thorough": 1000}

#: The mutation run's budget: the parsing properties run multiples of it (150 for the oracle).
MUTATION_EXAMPLES = 30


def register_and_load() -> str:
    """Register ``dev``, ``ci`` and ``thorough``; load the chosen one and return its name."""
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
        "mutation",
        parent=default,
        max_examples=MUTATION_EXAMPLES,
        **{**common, "derandomize": True, "database": None},
    )
    name = chosen()
    settings.load_profile(name)
    return name


def chosen() -> str:
    return os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if os.environ.get("CI") else "dev")


def header() -> str:
    current = settings()
    return (
        f"hypothesis: {current.max_examples} end-to-end examples, derandomize="
        f"{current.derandomize}, database={current.database}"
    )
