"""``train_and_evaluate``: a whole run from a plain config, on the embedded MNIST-1D data."""

from __future__ import annotations

import dataclasses
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


def _one_epoch(data_dir, **kw):
    return _config(data_dir, loop=LoopConfig(epochs=1, batch_size=120, progress=False), **kw)


def test_a_finished_run_rerun_with_other_settings_refuses_and_resumes_with_the_same(
    tfds_data_dir, tmp_path
):
    first = train_and_evaluate(_one_epoch(tfds_data_dir, learning_rate=0.5), tmp_path)
    record = json.loads((tmp_path / "run.json").read_text())["sections"]["runner"]
    assert record["run_info"]["optimizer"] == "sgd" and record["run_info"]["learning_rate"] == 0.5
    with pytest.raises(ValueError) as error:
        train_and_evaluate(_one_epoch(tfds_data_dir, learning_rate=0.1), tmp_path)
    message = str(error.value)
    assert "run_info.learning_rate (recorded 0.5, now 0.1)" in message
    assert "optimizer.digest" in message  # the transformation itself differs too
    assert "another --workdir" in message and str(tmp_path) in message
    # config.json still describes the run the directory holds.
    assert json.loads((tmp_path / "config.json").read_text())["learning_rate"] == 0.5
    # The same settings (the progress bar's label aside) resume: the finished run comes back.
    same = _one_epoch(tfds_data_dir, learning_rate=0.5)
    same = same.replace(loop=dataclasses.replace(same.loop, description="again", log_every=7))
    again = train_and_evaluate(same, tmp_path)
    assert again.summary["test_loss"] == first.summary["test_loss"]
    assert int(again.state.step) == int(first.state.step) == 30
    # A larger budget continues the run; a smaller one would return its 2 epochs as 1: refused.
    longer = train_and_evaluate(_config(tfds_data_dir, learning_rate=0.5), tmp_path)
    assert longer.summary["epochs_run"] == 2 and int(longer.state.step) == 60
    with pytest.raises(ValueError, match=r"loop\.epochs \(recorded 2, now 1; it may grow"):
        train_and_evaluate(_one_epoch(tfds_data_dir, learning_rate=0.5), tmp_path)


def test_config_json_records_the_optimizer_that_ran(tfds_data_dir, tmp_path):
    import optax

    config = _one_epoch(tfds_data_dir)  # says SGD at 0.1
    adam = {"optimizer": "adam", "learning_rate": 1e-3, "b1": 0.9}
    train_and_evaluate(config, tmp_path / "adam", tx=optax.adam(1e-3, b1=0.9), run_info=adam)
    saved = json.loads((tmp_path / "adam" / "config.json").read_text())
    assert (saved["optimizer"], saved["learning_rate"]) == ("adam", 1e-3)
    assert saved["optimizer_kwargs"] == {"b1": 0.9} and saved["loop"]["epochs"] == 1
    # A tx= override described by nothing: recorded as custom, never as the config's SGD.
    train_and_evaluate(config, tmp_path / "custom", tx=optax.adam(1e-3))
    saved = json.loads((tmp_path / "custom" / "config.json").read_text())
    assert saved["optimizer"].startswith("custom (tx=") and saved["learning_rate"] is None
    assert len(saved["optimizer_digest"]) == 16
    with pytest.raises(ValueError, match="run_info describes a tx= override"):
        train_and_evaluate(config, tmp_path / "x", run_info=adam)
    with pytest.raises(ValueError, match=r"run_info must name the optimizer"):
        train_and_evaluate(config, tmp_path / "y", tx=optax.adam(1e-3), run_info={"lr": 1.0})


def test_a_run_that_failed_its_checks_leaves_the_directory_reusable(tfds_data_dir, tmp_path):
    config = _config(tfds_data_dir, loop=LoopConfig(epochs=1, batch_size=5000, progress=False))
    with pytest.raises(ValueError, match="batch_size"):
        train_and_evaluate(config, tmp_path)
    train_and_evaluate(_one_epoch(tfds_data_dir), tmp_path)  # nothing ran: not refused
