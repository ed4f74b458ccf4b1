"""The import graph is one-way: the Lambda, then provisioning, then the harness, then the CLI.

Read from the installed packages' source (every ``import`` statement, at
module level or inside a function), so a lazy import that closes a cycle or
reaches up a layer fails here as surely as a top-level one.
"""

from __future__ import annotations

import ast
import importlib.util
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path

import pytest

ROOTS = ("csv_pipeline", "csv_pipeline_harness")
#: Modules at the top of the graph: nothing below may import them.
TOP = ("csv_pipeline_harness.cli", "csv_pipeline_harness.__main__", "csv_pipeline_harness.devtools")
PROVISIONING = "csv_pipeline_harness.provisioning"
#: The only modules that may import the Lambda's package: the zip builder, and
#: the benchmark of its internals. The harness judges any function.
READS_THE_LAMBDA = (f"{PROVISIONING}.packaging", "csv_pipeline_harness.devtools")
#: Shipped in a Lambda's zip as a top-level module: it can import nothing of ours.
ZIPPED = ("csv_pipeline_harness.realism",)


def package_modules(root: str) -> dict[str, Path]:
    """``{dotted name: file}`` for every module of an installed package."""
    spec = importlib.util.find_spec(root)
    assert spec is not None and spec.submodule_search_locations, root
    found: dict[str, Path] = {}

    def walk(name: str, directory: Path) -> None:
        for path in sorted(directory.iterdir()):
            if path.suffix == ".py":
                stem = path.stem
                found[name if stem == "__init__" else f"{name}.{stem}"] = path
            elif (path / "__init__.py").is_file():
                sub = f"{name}.{path.name}"
                sub_spec = importlib.util.find_spec(sub)
                assert sub_spec is not None and sub_spec.submodule_search_locations, sub
                walk(sub, Path(next(iter(sub_spec.submodule_search_locations))))

    walk(root, Path(next(iter(spec.submodule_search_locations))))
    # Mapped subpackages (provisioning/) live outside the root's directory.
    if root == "csv_pipeline_harness":
        sub_spec = importlib.util.find_spec(PROVISIONING)
        assert sub_spec is not None and sub_spec.submodule_search_locations
        walk(PROVISIONING, Path(next(iter(sub_spec.submodule_search_locations))))
    return found


MODULES = {name: path for root in ROOTS for name, path in package_modules(root).items()}


def imported(name: str, path: Path) -> Iterator[str]:
    """The modules of ours that ``name`` imports, with relative imports resolved."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                anchor = ".".join(parts[: len(parts) - node.level + 1])
                base = f"{anchor}.{base}" if base else anchor
            # `from pkg import mod` imports pkg.mod when that is a module.
            targets = [
                f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base
                for alias in node.names
            ]
        else:
            continue
        for target in targets:
            # `import a.b.c` names a.b.c; the longest name of ours it starts with.
            while target and target not in MODULES:
                target = target.rpartition(".")[0]
            if target and target != name:
                yield target


GRAPH = {name: sorted(set(imported(name, path))) for name, path in MODULES.items()}


def within(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def test_the_graph_was_read() -> None:
    assert "csv_pipeline.handler" in GRAPH
    assert f"{PROVISIONING}.stack" in GRAPH
    assert "csv_pipeline_harness.pytest_plugin" in GRAPH
    assert f"{PROVISIONING}.stack" in GRAPH["csv_pipeline_harness.pytest_plugin"]


def test_the_lambda_imports_nothing_of_the_harness() -> None:
    offending = {
        module: [t for t in targets if within(t, "csv_pipeline_harness")]
        for module, targets in GRAPH.items()
        if within(module, "csv_pipeline")
    }
    assert {m: t for m, t in offending.items() if t} == {}


def test_only_the_zip_builder_and_the_benchmark_import_our_lambda() -> None:
    offending = {
        module: [t for t in targets if within(t, "csv_pipeline")]
        for module, targets in GRAPH.items()
        if within(module, "csv_pipeline_harness")
        and not any(within(module, allowed) for allowed in READS_THE_LAMBDA)
    }
    assert {m: t for m, t in offending.items() if t} == {}


def test_provisioning_imports_no_harness() -> None:
    offending = {
        module: [
            t for t in targets if within(t, "csv_pipeline_harness") and not within(t, PROVISIONING)
        ]
        for module, targets in GRAPH.items()
        if within(module, PROVISIONING)
    }
    assert {m: t for m, t in offending.items() if t} == {}


def test_only_the_cli_imports_the_cli_and_its_tools() -> None:
    offending = {
        module: [t for t in targets if any(within(t, top) for top in TOP)]
        for module, targets in GRAPH.items()
        if not any(within(module, top) for top in TOP)
    }
    assert {m: t for m, t in offending.items() if t} == {}


@pytest.mark.parametrize("module", ZIPPED)
def test_a_module_shipped_in_a_lambda_zip_imports_nothing_of_ours(module: str) -> None:
    assert GRAPH[module] == []


def cycles(graph: dict[str, list[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph.get(node, []):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_import_cycle() -> None:
    assert cycles(GRAPH) == []


def test_the_cycle_finder_finds_one() -> None:
    assert cycles({"a": ["b"], "b": ["c"], "c": ["a"], "d": ["a"]}) == [["a", "b", "c"]]


def test_the_distribution_installs_two_import_names() -> None:
    """``csv_pipeline`` (the Lambda) and ``csv_pipeline_harness``; no ``harness`` or ``tools``."""
    top_level = metadata.distribution("csv-pipeline-harness").read_text("top_level.txt") or ""
    assert sorted(top_level.split()) == sorted(ROOTS)
