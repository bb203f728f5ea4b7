"""Smoke test of ``experiments/smith.py --quick``: range tests, the three schedules and Alrao, end to end."""

from __future__ import annotations

import json

import pytest

from experiments import smith


def test_quick_run_writes_results_table_and_figures(tmp_path):
    summary = smith.main(["--quick", "--workdir", str(tmp_path), "--mesh", "data=1"])
    mlp = summary["mlp"]
    runs = mlp["runs"]
    assert {row["kind"] for row in runs.values()} == {"constant", "clr", "one_cycle", "alrao"}
    low, high = mlp["range_test_momentum"]["cyclic_range"]
    assert runs["triangular CLR"]["rates"] == f"{low:.3g} - {high:.3g}" == runs["1cycle"]["rates"]
    a_low, a_high = mlp["range_test_sgd"]["alrao_range"]
    assert runs["Alrao (range test)"]["rates"] == f"{a_low:.3g} - {a_high:.3g}"
    assert sum(bool(row.get("best_constant")) for row in runs.values()) == 1
    for row in runs.values():
        assert 0.0 <= row["final_test_accuracy"] <= 1.0
        assert len(row["test_accuracy_curve"]) == 1  # one epoch
    with open(tmp_path / "summary.json") as f:
        assert json.load(f)["mlp"]["runs"].keys() == runs.keys()
    table = (tmp_path / "results.md").read_text()
    assert all(f"| {name}" in table for name in ("triangular CLR", "1cycle", "Alrao (range test)"))
    for name in ("range_tests.png", "schedules.png", "test_accuracy.png"):
        assert (tmp_path / name).stat().st_size > 1000
    for tag in ("momentum", "sgd"):
        with open(tmp_path / "mlp" / f"range_test_{tag}.json") as f:
            saved = json.load(f)
        assert len(saved["learning_rates"]) <= 10 and saved["valid"] is True
    # Other settings in the same directory (its range tests are read back): refused.
    with pytest.raises(ValueError, match=r"settings\.epochs \(recorded 1, now 2\)"):
        smith.main(["--quick", "--workdir", str(tmp_path), "--mesh", "data=1", "--epochs", "2"])
