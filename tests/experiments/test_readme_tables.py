"""README.md's result tables are the ones ``python -m experiments.readme_tables`` renders.

Rendering only: the committed ``experiments/results/*.json`` and ``benchmarks/results/*.json``
through the experiments' own table functions; no experiment runs.
"""

from __future__ import annotations

import json
import pathlib
import re

import pytest

from experiments import readme_tables


@pytest.fixture(scope="module")
def readme() -> str:
    with open(readme_tables.README) as f:
        return f.read()


def test_committed_readme_is_what_the_command_writes():
    ok, why = readme_tables.check()
    assert ok, (
        "README.md's result tables are not what `python -m experiments.readme_tables` writes "
        f"(or a table is outside the markers):\n{why}"
    )


def test_every_marker_names_a_known_table(readme):
    markers = [m.groups() for m in re.finditer(r"<!-- results: ([\w.-]+)/([\w.-]+) -->", readme)]
    assert markers, "README.md has no result markers"
    for stem, table in markers:
        if (stem, table) not in readme_tables.TABLES:
            readme_tables.benchmark_renderer(stem)  # raises if it is no benchmark either


def test_hand_edited_number_is_detected(readme, tmp_path):
    start = readme.index("<!-- results: demo/table -->")
    end = readme.index(readme_tables.CLOSE, start)
    block = readme[start:end]
    row = re.search(r"^\| Adam 1e-3 \|.*$", block, re.M)
    assert row is not None
    edited_row = re.sub(r"\d\.\d{4}", "9.9999", row.group(0), count=1)
    assert edited_row != row.group(0)
    path = tmp_path / "README.md"
    path.write_text(readme[:start] + block.replace(row.group(0), edited_row) + readme[end:])
    ok, why = readme_tables.check(str(path))
    assert not ok
    assert "9.9999" in why and row.group(0) in why  # the diff shows both the edit and the fix
    assert readme_tables.main(["--check", "--readme", str(path)]) == 1


def test_every_results_table_is_inside_a_marker(readme):
    assert readme_tables.unmarked_tables(readme) == []


def test_a_table_outside_the_markers_is_reported_with_its_line():
    text = "\n".join(
        [
            "# t",
            "## Results",
            "<!-- results: demo/table -->",
            "| a |",
            "|---|",
            "<!-- /results -->",
            "",
            "<!-- not a result: the list of scripts -->",
            "| script |",
            "|---|",
            "",
            "| typed by hand |",  # line 12
            "|---|",
            "```",
            "| in code |",
            "```",
            "## Next",
            "| after the section |",
        ]
    )
    assert readme_tables.unmarked_tables(text) == [12]


def test_record_wraps_a_run_and_drops_traces(tmp_path):
    run = tmp_path / "results.json"
    run.write_text(json.dumps({"runs": [{"final": 1.0, "curves": [1, 2]}, {"final": 2.0}]}))
    path = readme_tables.record(
        "autodrop_train",
        str(run),
        command="python -m experiments.autodrop_train",
        wall_time_s=12.34,
        date="2026-01-01 00:00 UTC",
        drop=["runs[].curves"],
        results_dir=str(tmp_path / "out"),
    )
    doc = json.loads(pathlib.Path(path).read_text())
    assert set(doc) == {
        "command", "hardware", "versions", "date", "wall_time_s", "results", "dropped"
    }  # fmt: skip
    assert doc["results"] == {"runs": [{"final": 1.0}, {"final": 2.0}]}
    assert doc["wall_time_s"] == 12.3 and set(doc["versions"]) >= {"python", "jax", "numpy"}
    with pytest.raises(ValueError, match="nothing at 'runs\\[\\].missing'"):
        readme_tables.record(
            "x", str(run), command="c", wall_time_s=1.0, drop=["runs[].missing"],
            results_dir=str(tmp_path / "out"),
        )  # fmt: skip
