"""Smoke test of the benchmark report (``python -m benchmarks.run_all``) and the benchmarks' layout.

The benchmarks themselves are never part of the test run (they time things); this runs one of them at the
``quick`` size set, shrunk further, so that the whole path (measure -> JSON -> RESULTS.md) is exercised,
then re-renders the report from the files alone. The layout: the benchmark modules import ``common``, the
report imports them, and no chain of imports comes back (``common`` knows no benchmark and no report).
"""

import ast
import functools
import json
import math
import pathlib

import pytest

from benchmarks import report, run_all, switch_update

FOLDER = pathlib.Path(report.__file__).resolve().parent


def test_run_all_writes_a_report_with_every_section_and_report_only_renders_it_again(
    tmp_path, monkeypatch
):
    monkeypatch.setitem(switch_update.SIZES["quick"], "num_copies", (4,))
    monkeypatch.setitem(switch_update.SIZES["quick"], "steps", 3)
    for key, value in (("scan_length", 10), ("calls", 5), ("repeats", 2)):
        monkeypatch.setitem(switch_update.SIZES["quick"], key, value)
    rc = run_all.main(["--quick", "--only", "switch_update", "--out-dir", str(tmp_path)])
    assert rc == 0
    text = (tmp_path / "RESULTS.md").read_text()
    for number, module in enumerate(report.BENCHMARKS.values(), start=1):
        assert f"## {number}. {module.TITLE}" in text
    assert "Run on CPU with reduced sizes" in text
    assert "jax 0." in text and "optax" in text
    # Only the switch section was measured; the others say so instead of inventing numbers.
    assert text.count("Not measured: no current results file") == len(report.BENCHMARKS) - 1
    numbers = report.finite_numbers_in_tables(text)
    assert numbers and all(math.isfinite(x) for x in numbers)
    assert sorted(p.name for p in (tmp_path / "results").iterdir()) == [
        "run_all_cpu.json",
        "switch_update_cpu.json",
    ]
    with open(tmp_path / "results" / "switch_update_cpu.json") as f:
        payload = json.load(f)
    assert payload["benchmark"] == "switch_update" and payload["sizes"] == "quick"
    [row] = payload["rows"]
    assert row["num_copies"] == 4
    assert 0 < row["in_scan_us"] and 0 < row["fraction_in_scan"] < 1
    assert switch_update.section(payload) in text

    # --report-only: the same report from the files alone (header of the measuring run included).
    (tmp_path / "RESULTS.md").unlink()
    assert run_all.main(["--quick", "--report-only", "--out-dir", str(tmp_path)]) == 0
    assert (tmp_path / "RESULTS.md").read_text() == text


def test_only_rejects_unknown_names():
    with pytest.raises(SystemExit, match="--only must be a comma-separated list"):
        run_all.parse_only("alrao_step,nope")
    assert run_all.parse_only("noh,alrao_step") == ["alrao_step", "noh"]
    assert list(run_all.BENCHMARKS) == list(report.BENCHMARKS)


@functools.cache
def import_graph() -> dict[str, set[str]]:
    """``benchmarks`` module -> the ``benchmarks`` modules it imports (anywhere in its source)."""
    names = {path.stem for path in FOLDER.glob("*.py")}
    graph = {}
    for path in FOLDER.glob("*.py"):
        imported = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module == "benchmarks":
                imported |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("benchmarks."):
                imported.add(node.module.split(".")[1])
            elif isinstance(node, ast.Import):
                imported |= {
                    a.name.split(".")[1] for a in node.names if a.name.startswith("benchmarks.")
                }
            elif isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "import_module":
                raise AssertionError(f"{path.name}: dynamic import, invisible to this graph")
        graph[path.stem] = imported & names
    return graph


def reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for other in graph[todo.pop()] - seen:
            seen.add(other)
            todo.append(other)
    return seen


def test_common_does_not_import_the_report():
    graph = import_graph()
    assert graph["common"] == set()
    assert "report" not in reachable(graph, "common")


def test_benchmark_modules_import_each_other_without_a_cycle():
    """``common`` is the bottom, each benchmark sits on it (``switch_update`` also reuses
    ``alrao_step``'s models), ``report`` assembles the benchmarks, ``run_all`` drives the report; no
    benchmark imports the report, and no chain of imports comes back to where it started."""
    graph = import_graph()
    benchmarks = set(report.BENCHMARKS)
    assert graph["report"] == benchmarks | {"common"}
    assert graph["run_all"] == {"common", "report"}
    for name in benchmarks:
        assert not reachable(graph, name) & {"report", "run_all"}, name
    for name in graph:
        assert name not in reachable(graph, name), f"import cycle through {name}"


@pytest.mark.parametrize("name", list(report.BENCHMARKS))
def test_every_benchmark_module_owns_its_section(name):
    module = report.BENCHMARKS[name]
    assert module.__name__ == f"benchmarks.{name}"
    for attribute in ("run", "main", "section", "headline"):
        assert callable(getattr(module, attribute)), attribute
    assert module.TITLE and module.SUMMARY
