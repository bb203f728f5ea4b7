"""Smoke test of ``experiments/noh.py --quick``: every phase runs, writes its files, and resumes."""

from __future__ import annotations

import json
import math
import os

import pytest

from experiments import noh as noh_experiment
from randlr_jax.noh import _meta_training as mt
from randlr_jax.noh import _noh as noh

QUICK = noh_experiment.quick(noh_experiment.CONFIGS["default"])


def test_quick_run_writes_results_and_resumes(tmp_path, capsys):
    workdir = str(tmp_path / "noh")
    summary = noh_experiment.main(["--workdir", workdir, "--quick", "--mesh", "data=1"])
    for name in (
        "summary.json",
        "table.md",
        "learning_curves.png",
        "noh_rates.png",
        "meta_history.json",
        "eval_mnist1d.json",
    ):
        assert os.path.getsize(os.path.join(workdir, name)) > 0, name
    runs = summary["final"]["mnist1d"]
    assert set(runs) == {"adam_best", "adam_hd", "dmopt", "noh", "noh_paper_meta_lr"}
    assert runs["adam_best"]["learning_rate"] in QUICK.adam_grid
    for run in runs.values():
        assert math.isfinite(run["train_loss"]) and 0.0 <= run["test_accuracy"] <= 1.0
    # Trained parameters load back into the module they were trained for.
    params, config = mt.load_lstm_params(os.path.join(workdir, "noh_lstm.msgpack"))
    noh.noh_adam(params, proposer=noh.LSTMRateProposer(**config["module"]))
    with open(os.path.join(workdir, "eval_mnist1d.json")) as f:
        rates = json.load(f)["runs"]["noh"]["traced_rates"]
    assert len(rates) == QUICK.eval_horizon
    assert "| mnist1d | NOH |" in capsys.readouterr().out
    # A second run resumes: nothing is re-trained, the same results come back.
    again = noh_experiment.main(["--workdir", workdir, "--quick", "--mesh", "data=1"])
    assert again["final"] == summary["final"]
    # Another meta learning rate would load the phases trained with the first: refused.
    with pytest.raises(
        ValueError, match=r"config\.meta_learning_rate \(recorded 0\.01, now 0\.5\)"
    ):
        noh_experiment.main(
            ["--workdir", workdir, "--quick", "--mesh", "data=1", "--meta-learning-rate", "0.5"]
        )
