"""``experiments.alrao_feature_guard --quick``: every run, a well-formed table and results.json."""

from __future__ import annotations

import json
import math

from experiments import alrao_feature_guard


def test_quick_writes_a_row_per_run_and_resumes(tmp_path, capsys):
    # The [1e-5, 10] pair (the others are the same code, other numbers), the guarded run first.
    runs = ["lr1e-5_10_on", "lr1e-5_10_off"]
    assert alrao_feature_guard.RUNS[runs[0]] == (1e-5, 10.0, True)
    argv = ["--workdir", str(tmp_path), "--quick", "--epochs", "1", "--setting", "digits_mlp"]
    argv += ["--runs", *runs]
    out = alrao_feature_guard.main(argv + ["--mesh", "data=1"])
    rows = out["runs"]
    assert list(rows) == runs
    for name in runs:
        lr_min, lr_max, guard = alrao_feature_guard.RUNS[name]
        row = rows[name]
        assert (row["lr_min"], row["lr_max"], row["feature_guard"]) == (lr_min, lr_max, guard)
        assert row["dead_features"] >= 0 and set(row["dead_features_per_layer"]) == {
            "body/dense_0",
            "body/dense_1",
        }
        if row["died_at_step"] is None:
            assert math.isfinite(row["test_loss"])
        if not guard:
            assert row["dead_features"] == 0 and "identical_to_off" not in row
    # Nothing diverges in one epoch at [1e-5, 10]: the guarded run is the unguarded one.
    assert rows["lr1e-5_10_on"]["identical_to_off"] is True
    printed = capsys.readouterr().out
    assert printed.count("| [") == len(rows) and "wall time" in printed
    assert json.loads((tmp_path / "results.json").read_text())["runs"] == json.loads(
        json.dumps(rows)
    )
    assert (tmp_path / "table.md").read_text().strip() == alrao_feature_guard.table(rows)
    # Run again: every run resumes from its checkpoint, the same rows.
    again = alrao_feature_guard.main(argv + ["--mesh", "data=1"])
    for name, row in rows.items():
        assert again["runs"][name]["test_loss"] == row["test_loss"]
        assert again["runs"][name]["identical_to_off"] if "identical_to_off" in row else True
