"""This repository's test settings: its markers' opt-in, its Hypothesis profile, its worker count.

The harness itself (``csv_pipeline_harness.pytest_plugin``) is loaded by
pytest through the package's ``pytest11`` entry point, as in any project
that installs it; it stays inert for tests that use none of its fixtures,
so everything this repository wants beyond that is set here.
"""

from __future__ import annotations

import os

import pytest
from hypothesis import settings

from csv_pipeline_harness import profiles

pytest_plugins = ["pytester"]

# At import, before Hypothesis' own plugin loads a --hypothesis-profile.
profiles.register()
settings.load_profile(profiles.chosen())

#: This repository's markers whose tests run only when ``-m`` names them
#: (``slow`` and ``harness`` also under the thorough profile).
OPT_IN = ("slow", "install", "harness")


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """``-n auto``: two workers per core.

    Most of a worker's time goes to waiting for its emulator's Lambda
    processes, not to its own CPU: on 2 cores, 4 workers ended the default
    run in 66 s where 2 took 79 s (same machine, same commit).
    """
    return 2 * (os.cpu_count() or 1)


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The shipped tests count as ``e2e``; opt-in tests stay out unless ``-m`` names them."""
    for item in items:
        if item.get_closest_marker("csv_pipeline_e2e") and not item.get_closest_marker("e2e"):
            item.add_marker("e2e")
    named = config.getoption("-m") or ""
    profile = config.getoption("--hypothesis-profile", None) or profiles.chosen()
    thorough = profile == f"{profiles.PREFIX}thorough"
    left_out_markers = [
        m for m in OPT_IN if m not in named and not (m in ("slow", "harness") and thorough)
    ]
    left_out = [item for item in items if any(item.get_closest_marker(m) for m in left_out_markers)]
    if left_out:
        items[:] = [item for item in items if item not in left_out]
        config.hook.pytest_deselected(items=left_out)
