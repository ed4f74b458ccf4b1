"""Installed into a project that never uses it, the plugin changes nothing of that project's run.

The project here is unrelated to ours: its own ``slow`` marker, its own
Hypothesis tests (one asserting Hypothesis' default of 100 examples), a unit
test, and an ini file that even names a Lambda for the harness. Its session
is run twice, with the plugin and with ``-p no:csv_pipeline_harness``; what
the project can see (selection, outcomes, Hypothesis' settings and profiles,
the header, the modules imported) must be the same.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

#: Modules an unused plugin must not import: what a user's session would pay
#: for (boto3 alone is ~150 ms) or what would probe a Docker engine.
HEAVY = ("boto3", "botocore", "hypothesis", "docker", "testcontainers", "csv_pipeline")

USER_TESTS = """
import json, os, sys

import pytest
from hypothesis import given, settings, strategies as st


@pytest.mark.slow
def test_users_own_slow_test():
    pass


def test_hypothesis_defaults_are_the_users():
    assert settings().max_examples == 100
    assert settings.get_current_profile_name() in ("default", "ci")


@given(st.integers())
def test_users_property(n):
    assert isinstance(n, int)


def test_what_the_project_sees():
    from hypothesis import settings

    seen = {
        "profile": settings.get_current_profile_name(),
        "max_examples": settings().max_examples,
        "ci_profile": repr(settings.get_profile("ci")),
        "profiles": sorted(p for p in settings._profiles if p.startswith("csv")),
        "heavy": sorted(
            m for m in sys.modules
            if m.split(".")[0] in {"boto3", "botocore", "docker", "testcontainers"}
        ),
    }
    with open(os.environ["SEEN_FILE"], "w") as f:
        json.dump(seen, f)
"""

INI = """[pytest]
markers =
    slow: this project's own slow tests
addopts = --strict-markers
"""
#: Naming a Lambda for the harness leaves the project's own tests selected.
LAMBDA_INI = """csv_pipeline_lambda_source = fn
csv_pipeline_lambda_handler = handler.lambda_handler
"""


def run_user_session(project: Path, *args: str) -> tuple[list[str], dict[str, object]]:
    """Output lines and what the project's last test saw."""
    seen = project / f"seen{len(args)}.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CSV_PIPELINE_", "PYTEST_"))}
    env.pop("HYPOTHESIS_PROFILE", None)
    env["SEEN_FILE"] = str(seen)
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-rA", *args],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout.splitlines(), json.loads(seen.read_text())


def comparable(lines: list[str]) -> list[str]:
    """The lines a run prints, less those naming plugins, paths or times."""
    return [
        line
        for line in lines
        if not line.startswith(("plugins:", "rootdir:", "configfile:", "platform"))
        and " in " not in line
    ]


@pytest.mark.harness
def test_an_unrelated_project_runs_as_without_the_plugin(pytester: pytest.Pytester) -> None:
    ini = pytester.makefile(".ini", pytest=INI)
    pytester.makepyfile(test_users=USER_TESTS)
    fn = pytester.mkdir("fn")
    (fn / "handler.py").write_text("def lambda_handler(event, context):\n    return None\n")

    with_plugin, seen_with = run_user_session(pytester.path)
    without, seen_without = run_user_session(pytester.path, "-p", "no:csv_pipeline_harness")

    assert "4 passed" in with_plugin[-1] and "deselected" not in with_plugin[-1], with_plugin
    assert seen_with == seen_without
    assert seen_with["profiles"] == [] and seen_with["heavy"] == []
    assert comparable(with_plugin) == comparable(without)
    assert not any("csv-pipeline" in line for line in comparable(with_plugin)), with_plugin

    ini.write_text(INI + LAMBDA_INI)
    naming_a_lambda, seen = run_user_session(pytester.path, "-v")
    assert "4 passed" in naming_a_lambda[-1], naming_a_lambda
    assert "deselected" not in naming_a_lambda[-1], naming_a_lambda
    assert seen["profiles"] == []


def test_importing_the_plugin_imports_nothing_heavy() -> None:
    code = (
        "import sys, csv_pipeline_harness.pytest_plugin\n"
        f"print(sorted(m for m in sys.modules if m.split('.')[0] in {set(HEAVY)!r}))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.strip() == "[]"


def test_the_plugins_markers_are_namespaced(pytester: pytest.Pytester) -> None:
    config = pytester.parseconfigure()
    ours = [
        line.split(":")[0]
        for line in config.getini("markers")
        if line.split(":")[0].startswith("csv_pipeline")
    ]
    assert sorted(ours) == ["csv_pipeline_contract", "csv_pipeline_e2e", "csv_pipeline_slow"]
    others = {line.split(":")[0] for line in config.getini("markers")}
    assert not {"slow", "e2e", "contract", "harness", "install"} & others


@pytest.mark.harness
def test_a_project_may_choose_one_of_the_harness_profiles(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        from hypothesis import settings

        def test_the_chosen_profile_is_loaded():
            assert settings.get_current_profile_name() == "csv-pipeline-dev"
            assert settings().max_examples == 25
        """
    )
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "--hypothesis-profile=csv-pipeline-dev", timeout=120
    )
    result.assert_outcomes(passed=1)
