"""The model-selection study: its ranking metrics against brute force, one tiny resumable run, its flags."""

from __future__ import annotations

import functools
import itertools
import json
import math
import os
import time

import numpy as np
import pytest

from experiments import _common, _tuning_free
from experiments import alrao_model_selection as study

# ----------------------------------------------------------------------------------------------
# The metrics


def _spearman_rank_difference(x, y):
    """``1 - 6 sum d^2 / (n (n^2 - 1))`` on data without ties."""
    n = len(x)
    rank_x = {i: r for r, i in enumerate(np.argsort(x))}
    rank_y = {i: r for r, i in enumerate(np.argsort(y))}
    d2 = sum((rank_x[i] - rank_y[i]) ** 2 for i in range(n))
    return 1.0 - 6.0 * d2 / (n * (n * n - 1))


def _kendall_tau_b_pairs(x, y):
    """Kendall's tau-b by counting every pair: ``(C - D) / sqrt((C + D + T_x) (C + D + T_y))``,
    ``T_x`` the pairs tied in ``x`` only, ``T_y`` in ``y`` only (pairs tied in both count nowhere)."""
    concordant = discordant = tied_x = tied_y = 0
    for i, j in itertools.combinations(range(len(x)), 2):
        dx, dy = np.sign(x[i] - x[j]), np.sign(y[i] - y[j])
        if dx == 0 and dy == 0:
            continue
        if dx == 0:
            tied_x += 1
        elif dy == 0:
            tied_y += 1
        elif dx == dy:
            concordant += 1
        else:
            discordant += 1
    n0 = concordant + discordant
    return (concordant - discordant) / math.sqrt((n0 + tied_x) * (n0 + tied_y))


def test_correlations_on_a_hand_computed_ranking():
    # One swap of the last two: sum d^2 = 2, rho = 1 - 12 / 60; one discordant pair of 6.
    assert study.spearman([1, 2, 3, 4], [0.1, 0.2, 0.4, 0.3]) == pytest.approx(0.8)
    assert study.kendall([1, 2, 3, 4], [0.1, 0.2, 0.4, 0.3]) == pytest.approx(4 / 6)
    assert study.spearman([4, 3, 2, 1], [1, 2, 3, 4]) == pytest.approx(-1.0)
    # A diverged run (None, or inf) ranks last; a constant ranking has no correlation.
    assert study.spearman([None, 1.0, 2.0], [9.0, 1.0, 2.0]) == pytest.approx(1.0)
    assert study.kendall([math.inf, 1.0, 2.0], [9.0, 1.0, 2.0]) == pytest.approx(1.0)
    assert study.spearman([1.0, 1.0, 1.0], [1.0, 2.0, 3.0]) is None
    assert study.kendall([1.0, 2.0], [1.0, 2.0]) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="one value per architecture"):
        study.spearman([1.0, 2.0], [1.0])


@pytest.mark.parametrize("seed", range(6))
def test_correlations_match_brute_force(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(3, 14))
    x, y = rng.normal(size=n), rng.normal(size=n)  # continuous: no ties
    assert study.spearman(x, y) == pytest.approx(_spearman_rank_difference(x, y))
    assert study.kendall(x, y) == pytest.approx(_kendall_tau_b_pairs(x, y))
    # With ties (values on a coarse grid) tau-b's pair count still holds.
    xt, yt = rng.integers(0, 3, size=n).astype(float), rng.integers(0, 3, size=n).astype(float)
    if len(set(xt)) > 1 and len(set(yt)) > 1:
        assert study.kendall(xt, yt) == pytest.approx(_kendall_tau_b_pairs(xt, yt))


def test_top_k_regret_and_compute_ratio_on_hand_computed_cases():
    truth = [0.5, 0.3, 0.9, 0.4]  # best: architecture 1
    scores = [0.2, 0.6, 0.1, 0.3]  # the strategy picks 2, its top 3 is (2, 0, 3)
    assert study.pick(scores) == 2 and study.top_k(scores, 3) == [2, 0, 3]
    assert not study.top1_match(scores, truth)
    assert not study.topk_match(scores, truth, 3)
    assert study.regret(scores, truth) == pytest.approx(0.9 - 0.3)
    closer = [0.2, 0.25, 0.1, 0.9]  # picks 2 again, but 1 is in its top 3
    assert study.topk_match(closer, truth, 3) and not study.top1_match(closer, truth)
    assert study.top1_match(truth, truth) and study.regret(truth, truth) == 0.0
    assert study.pick([None, 2.0, 1.0, 1.0]) == 2  # a diverged run is never picked; ties: first
    assert study.compute_ratio(7 * 3 * 100, 100) == 21.0
    with pytest.raises(ValueError, match="strategy_steps must be > 0"):
        study.compute_ratio(10, 0)
    metrics = [
        study.ranking_metrics(scores, truth, steps=100, tuned_steps=2100),
        study.ranking_metrics(truth, truth, steps=300, tuned_steps=6300),
    ]
    average = study.average_metrics(metrics)
    assert average["top1_match"] == 0.5 and average["top3_match"] == 0.5
    assert average["regret"] == pytest.approx(0.3)
    assert average["spearman"] == pytest.approx((study.spearman(scores, truth) + 1.0) / 2)
    assert average["train_steps"] == 400 and average["compute_ratio"] == pytest.approx(21.0)


def test_tuned_sgd_chooses_one_rate_by_the_mean_over_seeds():
    def grid(losses):
        return {
            "members": [
                {"validation_loss": v, "loss": None if v is None else v + 0.1, "accuracy": 0.5}
                for v in losses
            ],
            "train_steps": 70,
        }

    seeds = [  # rate 3 wins on seed 0 but rate 2 on the mean; rate 4 diverged on seed 1
        grid([2.0, 1.5, 1.0, 0.7, 0.1, 3.0, 3.0]),
        grid([2.0, 1.5, 1.0, 1.5, None, 3.0, 3.0]),
    ]
    tuned = study.tuned_sgd(seeds)
    assert tuned["learning_rate"] == _common.SGD_GRID[2]
    assert tuned["validation_loss"] == pytest.approx(1.0)
    assert tuned["loss"] == pytest.approx(1.1)
    assert tuned["train_steps"] == 140 and tuned["runs"] == 14
    assert tuned["per_rate_validation_loss"][4] is None


# ----------------------------------------------------------------------------------------------
# One tiny run, resumed

ARGV = ["--quick", "--epochs", "1", "--datasets", "digits", "--architectures", "linear", "mlp_1x64"]
STEPS = 39  # digits: 1,257 training examples in batches of 32 (the last, partial, dropped)


def test_parameter_counts_in_closed_form():
    # A linear map; the CNN at half width (12 channels) on signals of 40 (-> 5) and 64 (-> 8).
    cnn = (5 * 12 + 12) + 2 * (3 * 12 * 12 + 12)
    for dataset, inputs, length in (("mnist1d", 40, 5), ("digits", 64, 8)):
        linear = study.parameter_count(study.setting_of(dataset, "linear", 1))
        assert linear == inputs * 10 + 10
        conv = study.parameter_count(study.setting_of(dataset, "cnn1d_x0.5", 1))
        assert conv == cnn + length * 12 * 10 + 10
    assert study.setting_of("digits", "cnn1d_x1", 1).model == study.FLAT_CNN1D
    assert study.setting_of("mnist1d", "cnn1d_x1", 1).model == "cnn1d"


def test_alrao_trains_the_flattened_cnn_on_digits(tmp_path):
    # Alrao's classifier copies replace the head of the registered model; one epoch learns something.
    setting = study.setting_of("digits", "cnn1d_x0.5", 1)
    row = _tuning_free.tuning_free_run("alrao_sgd", setting, 0, str(tmp_path), epochs=1)
    assert not row["diverged"] and row["validation_loss"] < math.log(10)
    assert row["train_steps"] == STEPS and 1e-5 <= row["info"]["suggest_lr"] <= 10.0
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["model"] == study.FLAT_CNN1D


def test_smoke_run_writes_every_number_and_resumes_without_training(tmp_path, monkeypatch):
    import optax

    rates = []  # every rate SGD is built with (the grid's, the fine-tune's)
    sgd = optax.sgd

    @functools.wraps(sgd)  # the population's inject_hyperparams reads sgd's signature
    def recording_sgd(learning_rate, *args, **kwargs):
        if isinstance(learning_rate, float):  # not the population's traced rates
            rates.append(learning_rate)
        return sgd(learning_rate, *args, **kwargs)

    monkeypatch.setattr(optax, "sgd", recording_sgd)
    workdir = str(tmp_path / "run")
    out = study.main([*ARGV, "--workdir", workdir])
    monkeypatch.setattr(optax, "sgd", sgd)
    saved = json.loads((tmp_path / "run" / "results.json").read_text())
    for key in ("architectures", "spearman", "kendall", "top1_match", "top3_match", "regret",
                "compute_ratio", "peers", "per_dataset", "finetune", "config"):  # fmt: skip
        assert key in saved, key
    assert list(saved["peers"]) == ["cocob"]  # quick keeps the first peer
    assert set(saved["peers"]["cocob"]) >= {"spearman", "kendall", "top1_match", "top3_match",
                                            "regret", "compute_ratio"}  # fmt: skip
    rows = {r["name"]: r for r in saved["architectures"]}
    assert list(rows) == ["linear", "mlp_1x64"]
    assert rows["linear"]["parameters"] == 650
    assert rows["mlp_1x64"]["parameters"] == 64 * 64 + 64 + 64 * 10 + 10
    for row in rows.values():
        for method in (study.GROUND_TRUTH, study.ALRAO, "cocob"):
            score = row["scores"][method]
            assert score["validation_loss"] is not None and score["loss"] is not None
            assert score["rank"] in (1, 2)
    # One seed: tuned SGD spends the 7 rates' steps; one run of 1 epoch per strategy.
    assert out["compute_ratio"] == pytest.approx(len(_common.SGD_GRID))
    assert out["train_steps"] == 2 * STEPS
    truth = out["per_dataset"]["digits"][study.GROUND_TRUTH]
    assert truth["spearman"] == pytest.approx(1.0) and truth["train_steps"] == 2 * 7 * STEPS
    finetune = saved["finetune"]["digits"]
    arch = finetune["architecture"]
    assert finetune["suggest_lr"] == rows[arch]["suggest_lr"]
    assert finetune["sgd_at_suggest_lr"]["train_steps"] == STEPS
    assert finetune["pipeline_train_steps"] == 3 * STEPS
    config = json.loads(
        (tmp_path / "run" / "digits" / arch / "seed0" / "sgd_suggest" / "config.json").read_text()
    )
    assert config["learning_rate"] == pytest.approx(finetune["suggest_lr"])
    assert finetune["suggest_lr"] in rates, rates
    table = (tmp_path / "run" / "table.md").read_text()
    assert table.count("\n") == 2 + 3  # header, rule, tuned SGD, Alrao, COCOB
    assert (tmp_path / "run" / "architectures.md").read_text().count("\n") == 2 + 2
    with open(out["figure"], "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"

    # The second call reads every row back: nothing trains, no row is rewritten.
    stamps = {}
    for root, _, files in os.walk(workdir):
        if "row.json" in files:
            stamps[root] = os.stat(os.path.join(root, "row.json")).st_mtime_ns
    assert len(stamps) == 2 * 3 + 1  # architecture x (grid, Alrao, COCOB) + the fine-tune

    def no_training(*args, **kwargs):
        raise AssertionError("a finished run trained again")

    from randlr_jax import runner

    monkeypatch.setattr(runner, "train_and_evaluate", no_training)
    monkeypatch.setattr(runner, "train_and_evaluate_population", no_training)
    started = time.perf_counter()
    again = study.main([*ARGV, "--workdir", workdir])
    assert time.perf_counter() - started < 10
    assert {r: os.stat(os.path.join(r, "row.json")).st_mtime_ns for r in stamps} == stamps
    resumed = json.loads((tmp_path / "run" / "results.json").read_text())
    assert resumed["architectures"] == saved["architectures"]
    assert again["finetune"] == saved["finetune"]


# ----------------------------------------------------------------------------------------------
# Bad input


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--epochs", "0"], "argument --epochs: must be an integer >= 1, got '0'"),
        (["--seeds", "1", "1"], "argument --seeds: values must be distinct"),
        (["--seeds", "-1"], "argument --seeds: must be an integer >= 0, got '-1'"),
        (["--assessment-seed", "-1"], "argument --assessment-seed: must be an integer >= 0"),
        (["--architectures", "linear"], "argument --architectures: a ranking needs at least 2"),
        (["--architectures", "resnet"], "argument --architectures: invalid choice: 'resnet'"),
        (["--datasets", "digits", "digits"], "argument --datasets: values must be distinct"),
        (["--peers", "sgd_grid"], "argument --peers: invalid choice: 'sgd_grid'"),
        (["--peers", "dog", "dog"], "argument --peers: values must be distinct"),
    ],
)
def test_bad_flags_are_usage_errors(argv, message, tmp_path, capsys):
    workdir = tmp_path / "run"
    with pytest.raises(SystemExit) as exit_info:
        study.main([*argv, "--workdir", str(workdir)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "usage:" in err, err
    assert not workdir.exists()


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"architectures": ("linear",)}, "architectures must be at least 2 distinct names"),
        ({"architectures": ("linear", "linear")}, "architectures must be at least 2 distinct"),
        ({"datasets": ("cifar10",)}, "datasets must be at least 1 distinct names"),
        ({"peers": ("alrao_sgd",)}, "peers must be distinct names of"),
        ({"seeds": ()}, "seeds must be distinct integers >= 0"),
        ({"assessment_seed": -1}, "assessment_seed must be an integer >= 0"),
        ({"epochs": {"mnist1d": 0, "digits": 3}}, "epochs must give an integer >= 1"),
        ({"epochs": {"mnist1d": 3}}, "epochs must give an integer >= 1 for every dataset"),
    ],
)
def test_bad_configs_are_refused(fields, message):
    with pytest.raises(ValueError, match=message):
        study.Config(**fields)


def test_quick_is_four_architectures_one_seed_one_peer():
    small = study.quick(study.DEFAULT)
    assert small.architectures == study.QUICK_ARCHITECTURES and small.seeds == (0,)
    assert small.peers == ("cocob",) and set(small.epochs.values()) == {2}
    assert len(study.DEFAULT.architectures) >= 12 and len(study.DEFAULT.datasets) >= 2
    assert len(study.DEFAULT.seeds) >= 3
