"""The AutoDrop experiments' ``--quick`` runs: same code paths as the defaults, at test-suite size."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from experiments import autodrop_nqm, autodrop_train


def test_nqm_quick(tmp_path):
    results = autodrop_nqm.main(["--workdir", str(tmp_path), "--quick"])
    assert [row["alpha"] for row in results["closed_forms"]] == list(
        autodrop_nqm.CONFIGS["default"].rates
    )
    for row in results["closed_forms"][:3]:  # the short chains are enough for the larger rates
        assert abs(row["cosine_relative_error"]) < 0.05
    runs = {r["run"]: r for r in results["runs"]}
    auto = runs["autodrop"]
    assert auto["final_learning_rate"] == pytest.approx(0.001) and auto["drop_iterations"]
    assert auto["final_loss_mean"] < runs["constant 0.06"]["final_loss_mean"]
    for name in ("results.json", "fig1_constant_rates.png", "fig3_autodrop.png"):
        assert os.path.getsize(tmp_path / name) > 0


def test_train_quick(tmp_path):
    results = autodrop_train.main(["--workdir", str(tmp_path), "--quick", "--mesh", "data=1"])
    runs = {r["method"]: r for r in results["runs"]}
    assert set(runs) == {"baseline", "autodrop_0.2"}
    auto, baseline = runs["autodrop_0.2"], runs["baseline"]
    # The quick setting forces a drop at the first testable period (t = 3, no delay).
    assert auto["drop_epochs"] == [3]
    np.testing.assert_allclose(auto["curves"]["learning_rate"], [0.05, 0.05, 0.01], rtol=1e-6)
    # Baseline: x0.2 after epoch 2 (50% and 75% of 3 epochs both round to 2); the logged rate is the one
    # in force after the epoch, as AutoDrop's.
    np.testing.assert_allclose(baseline["curves"]["learning_rate"], [0.05, 0.01, 0.01], rtol=1e-6)
    assert len(auto["curves"]["angle"]) == 3 and auto["curves"]["angle"][0] == pytest.approx(90.0)
    for r in runs.values():
        assert 0.0 <= r["final_test_error"] <= 1.0 and len(r["curves"]["test_error"]) == 3
    with open(tmp_path / "results.json") as f:
        assert json.load(f)["tables"]["table1"].count("\n") == 3
    for name in ("table1.md", "table2.md", "fig7.md", "fig6_curves.png", "fig7_epochs_to_best.png"):
        assert os.path.getsize(tmp_path / name) > 0
    # Another threshold in the same directory: the baseline (which has none) resumes, AutoDrop's run
    # is refused rather than returned under the new threshold.
    with pytest.raises(ValueError, match=r"run_info\.threshold \(recorded 90\.0, now 45\.0\)"):
        autodrop_train.main(
            ["--workdir", str(tmp_path), "--quick", "--mesh", "data=1", "--threshold", "45"]
        )
