"""Hypothesis profiles for the property suite, and the opt-in markers.

Profiles (``--hypothesis-profile NAME`` or ``HYPOTHESIS_PROFILE=NAME``; ``ci``
when ``CI`` is set, else ``dev``). ``max_examples`` is the end-to-end budget;
every other property runs a fixed multiple of it, so all of them follow the
profile.

* ``dev``: 50 examples per end-to-end property (25 re-upload pairs, 6 per
  defect, 3 uploads of 10,000 rows), about 2,250 for the parsing core.
* ``ci``: four times that.
* ``thorough``: twenty times ``dev``, plus the ``slow`` tests (1,000,000 rows).

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

import pytest
from hypothesis import settings
from hypothesis.database import DirectoryBasedExampleDatabase

_COMMON = {
    "derandomize": False,
    "database": DirectoryBasedExampleDatabase(".hypothesis/examples"),
    "print_blob": True,
    "suppress_health_check": (),
}
_DEFAULT = settings.get_profile("default")
settings.register_profile("dev", parent=_DEFAULT, max_examples=50, **_COMMON)
settings.register_profile("ci", parent=_DEFAULT, max_examples=200, **_COMMON)
settings.register_profile("thorough", parent=_DEFAULT, max_examples=1000, **_COMMON)
settings.load_profile(
    os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if os.environ.get("CI") else "dev")
)


def pytest_report_header(config: pytest.Config) -> str:
    current = settings()
    return (
        f"hypothesis: {current.max_examples} end-to-end examples, derandomize="
        f"{current.derandomize}, database={current.database}"
    )


THOROUGH = "thorough"


def _profile(config: pytest.Config) -> str | None:
    return config.getoption("--hypothesis-profile", None) or os.environ.get("HYPOTHESIS_PROFILE")


#: Markers whose tests run only when ``-m`` names them (``slow`` also under
#: the thorough profile): ``install`` builds and installs the package into a
#: fresh venv (~25 s), which ``.ci/run`` runs as a step of its own.
OPT_IN = ("slow", "install")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Leave opt-in tests out unless ``-m`` names their marker (or the profile includes them)."""
    named = config.getoption("-m") or ""
    left_out_markers = [m for m in OPT_IN if m not in named]
    if _profile(config) == THOROUGH and "slow" in left_out_markers:
        left_out_markers.remove("slow")
    left_out = [item for item in items if any(item.get_closest_marker(m) for m in left_out_markers)]
    if left_out:
        items[:] = [item for item in items if item not in left_out]
        config.hook.pytest_deselected(items=left_out)
