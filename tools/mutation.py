"""Mutation testing of the Lambda's pure modules with mutmut (``tox -e mutation``).

A mutant is a copy of the code with one small change (``<`` for ``<=``, a
constant, a dropped argument); a test suite that still passes on it does not
check what that line does. The score is the share of mutants the suite kills.

Only what the suite can check without an emulator is mutated, and only the
tests that need none run against each mutant (``MODULES``, ``TESTS``): the
handler, job and lease talk to AWS and are covered by the end-to-end and
fault tests, which take minutes per run.

mutmut names a mutant after its file's path below the working directory and
strips only a leading ``src/``; this package lives in ``lambda/csv_pipeline``
(``package-dir`` in pyproject.toml), so the tests' ``csv_pipeline.parsing``
would never match ``lambda.csv_pipeline.parsing`` and every mutant would
count as untested. The run therefore happens in a staging directory laid out
as mutmut expects: ``src/csv_pipeline`` (a copy of the package), ``tests/``
and a pyproject.toml holding only mutmut's and pytest's settings. The harness
(Hypothesis profiles, the contract oracle) comes from the installed package.

By default every module but ``parsing`` is mutated: about 5 minutes with
one mutant at a time on 2 busy cores. ``parsing`` alone has about 880 mutants,
and each one reruns the parsing tests and properties that reach it: about
17 minutes on 2 cores, so it is asked for by name (``--module parsing`` or
``--all``).

Hypothesis runs the ``csv-pipeline-mutation`` profile (:mod:`csv_pipeline_harness.profiles`): few,
derandomized examples, so each mutant costs seconds and the score is the
same on every run.

    python -m tools.mutation                       # every module but parsing
    python -m tools.mutation --all                 # parsing too (about 20 minutes)
    python -m tools.mutation --module versions     # one module
    cd build/mutation && mutmut show <mutant>      # the diff of a survivor
"""

from __future__ import annotations

import argparse
import collections
import os
import shutil
import subprocess
import sys
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "lambda" / "csv_pipeline"

#: The modules whose every line the emulator-free tests can reach.
MODULES = (
    "events",
    "expressions",
    "manifest",
    "parsing",
    "progress",
    "settings",
    "table_writer",
    "versions",
    "wire",
)

#: The default run: ``parsing`` is left to ``--module parsing`` / ``--all``.
DEFAULT_MODULES = tuple(m for m in MODULES if m != "parsing")

#: Test files that need no emulator (``-m "not e2e"`` drops the rest of test_faults).
#: Not test_parsing_memory: it measures allocations with tracemalloc, about 8 s
#: a run under mutmut's trampolines, paid again by every parsing survivor; the
#: outcomes it checks (a record over the limit rejected, the rows after it
#: kept) are test_parsing's too.
TESTS = (
    "tests/test_parsing.py",
    "tests/test_parsing_properties.py",
    "tests/test_parsing_edges.py",
    "tests/test_long_records.py",
    "tests/test_table_writer.py",
    "tests/test_table_writer_edges.py",
    "tests/test_deadline.py",
    "tests/test_faults.py",
    "tests/test_versions.py",
    "tests/test_pure_modules.py",
)

#: Statuses that count as killed: a test failed, the mutant hung past
#: mutmut's timeout, or it crashed the interpreter.
KILLED = {"killed", "timeout", "segfault", "caught by type check"}


def toml_list(values: list[str] | tuple[str, ...]) -> str:
    return "[" + ", ".join(f'"{v}"' for v in values) + "]"


def stage(work: Path, modules: list[str]) -> None:
    """Lay out ``work`` as mutmut expects; anything there from an earlier run is removed."""
    if work.exists():
        shutil.rmtree(work)
    shutil.copytree(
        PACKAGE, work / "src" / "csv_pipeline", ignore=shutil.ignore_patterns("__pycache__")
    )
    shutil.copytree(ROOT / "tests", work / "tests", ignore=shutil.ignore_patterns("__pycache__"))
    # This repository's markers, their opt-in and its Hypothesis profile choice.
    shutil.copy2(ROOT / "conftest.py", work / "conftest.py")
    markers = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"][
        "pytest"
    ]["ini_options"]["markers"]
    tests = [t for t in TESTS if (ROOT / t).exists()]
    only = [f"src/csv_pipeline/{m}.py" for m in modules]
    (work / "pyproject.toml").write_text(
        "[tool.mutmut]\n"
        'source_paths = ["src/csv_pipeline"]\n'
        f"only_mutate = {toml_list(only)}\n"
        # No xdist, no cache, no end-to-end test; the opt-in markers (slow,
        # install) stay out as in the default run.
        f'pytest_add_cli_args = ["-p", "no:cacheprovider", "-p", "no:xdist", "-m", "not e2e"]\n'
        f"pytest_add_cli_args_test_selection = {toml_list(tests)}\n"
        # The staging directory is no git work tree of its own.
        "use_git_change_detection = false\n"
        # A mutant that loops is killed after 3x its tests' clean time plus 5 s
        # (mutmut's 15x would let one hang for minutes).
        "timeout_multiplier = 3.0\n"
        "timeout_constant = 5.0\n"
        "\n[tool.pytest.ini_options]\n"
        'addopts = "--strict-markers"\n'
        f"markers = {toml_list(markers)}\n",
        encoding="utf-8",
    )


def results(work: Path) -> dict[str, list[tuple[str, str]]]:
    """``{module: [(mutant, status), ...]}`` as ``mutmut results --all`` reports them."""
    out = subprocess.run(
        [sys.executable, "-m", "mutmut", "results", "--all", "true"],
        cwd=work,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    by_module: dict[str, list[tuple[str, str]]] = collections.defaultdict(list)
    for line in out.splitlines():
        name, sep, status = line.strip().partition(": ")
        if not sep or not name.startswith("csv_pipeline."):
            continue
        module = name.split(".")[1]
        by_module[module].append((name, status.strip()))
    return by_module


def report(by_module: dict[str, list[tuple[str, str]]]) -> tuple[int, int, str]:
    """Killed, total and a table: per module, then the survivors by name."""
    lines = ["module        killed / total   score   not killed"]
    killed_all = total_all = 0
    survivors: list[str] = []
    for module in sorted(by_module):
        statuses = by_module[module]
        killed = sum(1 for _, status in statuses if status in KILLED)
        total = len(statuses)
        killed_all += killed
        total_all += total
        others = collections.Counter(s for _, s in statuses if s not in KILLED)
        lines.append(
            f"{module:<13} {killed:>6} / {total:<6} {100 * killed / max(total, 1):6.1f}%   "
            + (", ".join(f"{n} {s}" for s, n in sorted(others.items())) or "-")
        )
        survivors += [f"  {name}: {status}" for name, status in statuses if status not in KILLED]
    lines.append(
        f"{'all':<13} {killed_all:>6} / {total_all:<6} {100 * killed_all / max(total_all, 1):6.1f}%"
    )
    if survivors:
        lines += ["", "not killed (mutmut show <name> in the work directory gives the diff):"]
        lines += survivors
    return killed_all, total_all, "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tools.mutation", description=__doc__.split("\n")[0]
    )
    parser.add_argument(
        "--work",
        type=Path,
        default=ROOT / "build" / "mutation",
        help="staging directory (recreated)",
    )
    parser.add_argument(
        "--module", action="append", choices=MODULES, help="mutate only these (repeatable)"
    )
    parser.add_argument("--all", action="store_true", help="every module, parsing included")
    parser.add_argument(
        "--max-children", type=int, default=None, help="mutants tested at once (default: cores)"
    )
    parser.add_argument(
        "--fail-under",
        type=float,
        default=0.0,
        metavar="PERCENT",
        help="exit 1 when the score is lower",
    )
    args = parser.parse_args(argv)
    work: Path = args.work.resolve()
    stage(work, sorted(MODULES if args.all else args.module or DEFAULT_MODULES))
    env = {
        **os.environ,
        "HYPOTHESIS_PROFILE": "csv-pipeline-mutation",
        "CSV_PIPELINE_BACKEND": "ministack",
    }
    run = [sys.executable, "-m", "mutmut", "run"]
    if args.max_children:
        run += ["--max-children", str(args.max_children)]
    log = work / "mutmut.log"
    print(f"mutmut run in {work} (progress: {log})", flush=True)
    with log.open("w", encoding="utf-8") as out:
        done = subprocess.run(run, cwd=work, env=env, stdout=out, stderr=subprocess.STDOUT)
    if done.returncode != 0:
        print(log.read_text(encoding="utf-8", errors="replace")[-4000:], file=sys.stderr)
        return done.returncode
    killed, total, table = report(results(work))
    print(table)
    (work / "score.txt").write_text(table + "\n", encoding="utf-8")
    score = 100 * killed / max(total, 1)
    if score < args.fail_under:
        print(f"mutation score {score:.1f}% is under {args.fail_under:g}%", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
