"""Smoke test of the benchmark report (``python -m benchmarks.run_all``): the entry point runs, writes its
JSON and a report with every section, and the numbers in the report's tables are finite.

The benchmarks themselves are never part of the test run (they time things); this runs one of them at the
``quick`` size set, shrunk further, so that the whole path (measure -> JSON -> RESULTS.md) is exercised.
"""

import json
import math
import os

import pytest

from benchmarks import report, run_all, switch_update


def test_run_all_writes_a_report_with_every_section(tmp_path, monkeypatch):
    monkeypatch.setitem(switch_update.SIZES["quick"], "num_copies", (4,))
    monkeypatch.setitem(switch_update.SIZES["quick"], "steps", 3)
    rc = run_all.main(["--quick", "--only", "switch_update", "--out-dir", str(tmp_path)])
    assert rc == 0
    text = (tmp_path / "RESULTS.md").read_text()
    for number, (title, _) in enumerate(report.SECTIONS.values(), start=1):
        assert f"## {number}. {title}" in text
    assert "Run on CPU with reduced sizes" in text
    assert "jax 0." in text and "optax" in text
    # Only the switch section was measured; the others say so instead of inventing numbers.
    assert text.count("Not measured: no current results file") == len(report.SECTIONS) - 1
    numbers = report.finite_numbers_in_tables(text)
    assert numbers and all(math.isfinite(x) for x in numbers)
    [path] = os.listdir(tmp_path / "results")
    with open(tmp_path / "results" / path) as f:
        payload = json.load(f)
    assert payload["benchmark"] == "switch_update" and payload["sizes"] == "quick"
    [row] = payload["rows"]
    assert row["num_copies"] == 4
    assert 0 < row["in_scan_us"] and 0 < row["fraction_in_scan"] < 1


def test_report_only_regenerates_from_the_results_files(tmp_path, monkeypatch):
    monkeypatch.setitem(switch_update.SIZES["quick"], "num_copies", (1,))
    monkeypatch.setitem(switch_update.SIZES["quick"], "steps", 3)
    assert run_all.main(["--quick", "--only", "switch_update", "--out-dir", str(tmp_path)]) == 0
    (tmp_path / "RESULTS.md").unlink()
    assert run_all.main(["--quick", "--report-only", "--out-dir", str(tmp_path)]) == 0
    text = (tmp_path / "RESULTS.md").read_text()
    assert "| 1 |" in text  # the switch row of N = 1, read back from its JSON


def test_only_rejects_unknown_names():
    with pytest.raises(SystemExit, match="--only must be a comma-separated list"):
        run_all.parse_only("alrao_step,nope")
    assert run_all.parse_only("noh,alrao_step") == ["alrao_step", "noh"]


def test_benchmark_modules_import_each_other_without_a_cycle():
    """``common`` is the bottom (it imports no benchmark module), ``report`` imports only ``common``, and
    no chain of imports, at module level or inside functions, comes back to where it started."""
    import ast
    import pathlib

    folder = pathlib.Path(report.__file__).parent
    names = {path.stem for path in folder.glob("*.py")}
    graph = {}
    for path in folder.glob("*.py"):
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
        graph[path.stem] = imported & names
    assert graph["common"] == set()
    assert graph["report"] == {"common"}

    def visit(name, stack):
        assert name not in stack, f"import cycle: {' -> '.join([*stack, name])}"
        for other in sorted(graph[name]):
            visit(other, [*stack, name])

    for name in sorted(graph):
        visit(name, [])
