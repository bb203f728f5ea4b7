"""``train_and_evaluate``: a whole run from a plain config, on the embedded MNIST-1D data."""

from __future__ import annotations

import json

import numpy as np
import pytest

from randlr_jax.alrao import _copies as cc
from randlr_jax.runner import TrainConfig, make_optimizer, train_and_evaluate
from randlr_jax.training import LoopConfig


def _config(data_dir, **kw):
    loop = LoopConfig(epochs=2, batch_size=120, progress=False)
    base = dict(
        dataset="mnist1d",
        model="mlp",
        model_kwargs={"widths": (32,)},
        data_dir=data_dir,
        validation_size=400,
        loop=loop,
    )
    base.update(kw)
    return TrainConfig(**base)


def test_plain_run_writes_config_and_results(tfds_data_dir, tmp_path):
    result = train_and_evaluate(_config(tfds_data_dir, learning_rate=0.5), tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["dataset"] == "mnist1d" and saved["loop"]["epochs"] == 2
    assert result.summary["epochs_run"] == 2
    assert 0.1 < result.summary["test_accuracy"] <= 1.0
    # 4,000 training examples minus 400 for validation, batch 120: 30 steps an epoch.
    assert int(result.state.step) == 60


def test_alrao_run_uses_alrao_head_and_switch(tfds_data_dir, tmp_path):
    config = _config(
        tfds_data_dir,
        optimizer="alrao_sgd",
        # Chunks of 2 of the 5 copies (the memory-saving path, N not a multiple of the chunk).
        optimizer_kwargs={"lr_min": 1e-3, "lr_max": 10.0, "num_copies": 5, "copy_chunk_size": 2},
    )
    from randlr_jax import data
    from randlr_jax.runner._runner import build_alrao

    model, _, _ = build_alrao(config, data.get_spec("mnist1d"), "classification")
    assert model.head.copy_chunk_size == 2
    result = train_and_evaluate(config, tmp_path)
    assert result.state.params["head"]["copies"]["kernel"].shape == (5, 32, 10)
    switch = cc.get_switch_state(result.state.model_state)
    assert int(switch.step) == 61  # 60 observations, starting at 1
    posterior = np.asarray(result.history[-1]["last_posterior"])
    assert posterior.shape == (5,) and abs(posterior.sum() - 1) < 1e-5
    assert np.isfinite(result.summary["test_loss"])


@pytest.mark.parametrize(
    "changes, match",
    [
        (dict(dataset="imagenet21k"), "mnist1d"),  # the message lists the known datasets
        (dict(model="transformer9000"), "mlp"),  # ... and the known models
        (dict(optimizer="lion"), "sgd"),
        (dict(optimizer="alrao_sgd", optimizer_kwargs={"lr_max": 1.0}), "lr_min"),
    ],
)
def test_bad_names_list_the_known_ones(tfds_data_dir, tmp_path, changes, match):
    with pytest.raises(ValueError, match=match):
        train_and_evaluate(_config(tfds_data_dir, **changes), tmp_path)


def test_batch_larger_than_split(tfds_data_dir, tmp_path):
    config = _config(tfds_data_dir, loop=LoopConfig(epochs=1, batch_size=5000, progress=False))
    with pytest.raises(ValueError, match="batch_size"):
        train_and_evaluate(config, tmp_path)


def test_make_optimizer_rejects_bad_rate():
    with pytest.raises(ValueError, match="learning_rate"):
        make_optimizer("sgd", -0.1)
