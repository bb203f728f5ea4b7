"""The study helpers of ``randlr_jax.runner``: cached splits, the rate grid as one run, seed aggregates."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from randlr_jax import data as rdata
from randlr_jax import runner
from randlr_jax.runner import TrainConfig, best_over_seeds, load_splits, mean_std
from randlr_jax.training import LoopConfig


def _config(data_dir, **kw):
    base = dict(
        dataset="digits",
        model="mlp",
        model_kwargs={"widths": (8,)},
        data_dir=data_dir,
        validation_size=180,
        loop=LoopConfig(epochs=1, batch_size=200, progress=False),
    )
    base.update(kw)
    return TrainConfig(**base)


def test_splits_are_cached_by_what_determines_them(tfds_data_dir, tmp_path):
    runner.clear_split_cache()
    config = _config(tfds_data_dir)
    splits, spec, task = load_splits(config)
    assert task == "classification" and spec.num_classes == 10
    again, _, _ = load_splits(config.replace(model="cnn1d", learning_rate=1.0))  # not data settings
    assert again is splits
    with pytest.raises(ValueError, match="read-only"):
        splits["train"]["x"][0, 0] = 1.0  # a cached split cannot be changed behind the next run
    # Another carve (size, seed) or another data directory: other splits, not the cached ones.
    for other in (
        config.replace(validation_size=100),
        config.replace(loop=LoopConfig(epochs=1, batch_size=200, seed=1)),
        config.replace(data_dir=str(tmp_path / "other")),
    ):
        assert load_splits(other)[0] is not splits
    fresh, _, _ = load_splits(config, cache=False)
    assert fresh is not splits and fresh["train"]["x"].flags.writeable
    np.testing.assert_array_equal(fresh["validation"]["y"], splits["validation"]["y"])
    assert len(splits["validation"]["y"]) == 180


def test_a_language_model_text_is_cut(monkeypatch):
    runner.clear_split_cache()
    lengths = {"train": 50_000, "validation": 9_000, "test": 1_000}
    monkeypatch.setattr(
        rdata,
        "load_tokens",
        lambda name, split, data_dir=None: np.arange(lengths[split], dtype=np.int32),
    )
    config = TrainConfig(dataset="shakespeare_char", model="char_lstm", validation_size=None)
    splits, _, task = load_splits(config, max_train_tokens=30_000, cache=False)
    assert task == "language_model"
    # Training: the first 30,000 tokens; validation and test: max(30,000 // 10, 2,000) (or all there is).
    assert {k: len(v) for k, v in splits.items()} == {
        "train": 30_000,
        "validation": 3_000,
        "test": 1_000,
    }
    whole, _, _ = load_splits(config, cache=False)
    assert {k: len(v) for k, v in whole.items()} == lengths
    with pytest.raises(ValueError, match="max_train_tokens must be"):
        load_splits(config, max_train_tokens=0)
    with pytest.raises(ValueError, match="classification dataset"):
        load_splits(_config(None), max_train_tokens=100)


def test_the_grid_trains_as_one_population_and_records_its_rates(tfds_data_dir, tmp_path):
    config = _config(tfds_data_dir)
    result = runner.train_and_evaluate_population(config, tmp_path, [0.01, 1.0])
    assert [m["learning_rate"] for m in result.members] == [0.01, 1.0]
    assert result.summary["best_learning_rate"] in (0.01, 1.0)
    assert all(math.isfinite(m["test_accuracy"]) for m in result.members)
    recorded = json.loads((tmp_path / "config.json").read_text())
    assert recorded["optimizer"] == "sgd" and recorded["learning_rates"] == [0.01, 1.0]
    with pytest.raises(ValueError, match="learning_rates"):  # refused, not resumed as the old grid
        runner.train_and_evaluate_population(config, tmp_path, [0.01, 0.1])


@pytest.mark.parametrize(
    ("rates", "match"),
    [([], "learning_rates must be"), ("0.1", "learning_rates must be"),
     ([0.1, -1.0], r"learning_rates\[1\] must be"), ([float("inf")], r"learning_rates\[0\]")],
)  # fmt: skip
def test_bad_rates_are_refused_before_anything_is_written(rates, match, tmp_path):
    with pytest.raises(ValueError, match=match):
        runner.train_and_evaluate_population(_config(None), tmp_path / "run", rates)
    assert not (tmp_path / "run").exists()


def test_mean_std_over_seeds():
    mean, std = mean_std([1.0, 2.0, 4.0])
    assert mean == pytest.approx(7 / 3) and std == pytest.approx(np.std([1.0, 2.0, 4.0]))
    assert all(math.isnan(v) for v in mean_std([]))
    assert math.isnan(mean_std([1.0, None])[0])  # a missing metric is not silently dropped
    mean, std = mean_std([1.0, math.inf])
    assert mean == math.inf and math.isnan(std)


def test_best_over_seeds_chooses_the_lowest_mean_and_never_a_diverged_member():
    # Member 2 is best on average but diverged in one seed; member 1 has the lowest mean otherwise.
    losses = [[2.0, 1.1, 0.2, None], [2.0, 1.3, math.nan, 0.1]]
    assert best_over_seeds(losses) == 1
    assert best_over_seeds([[3.0, 2.0], [1.0, 2.5]]) == 0  # the mean, not one seed's minimum
    assert best_over_seeds([[math.inf, math.nan]]) == 0  # all diverged: the first
    with pytest.raises(ValueError, match="one loss per member"):
        best_over_seeds([[1.0, 2.0], [1.0]])
    with pytest.raises(ValueError, match="validation_losses must be"):
        best_over_seeds([])
