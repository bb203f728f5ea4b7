"""Failures made visible: a dead run stops loudly (``TrainingDiverged``), bad labels and non-finite inputs
fail before training with the split and the index, for ``fit`` and ``fit_population``."""

from __future__ import annotations

import math
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from randlr_jax import models
from randlr_jax.alrao import _copies as cc
from randlr_jax.alrao import _optimizers as alrao
from randlr_jax.alrao import _step as alrao_step
from randlr_jax.training import (
    Checkpointer,
    LoopConfig,
    TrainingDiverged,
    fit,
    fit_population,
    replicate,
)
from tests.helpers import blob_splits

K = 3
_STEPS_PER_EPOCH = 96 // 16  # blob_splits' 96 training examples, batches of 16
# One model, optimizer and step for every Alrao call: compiled once.
_ALRAO = models.make_model("mlp", widths=(8,), head=cc.AlraoHead(num_outputs=K, num_copies=3))
_ALRAO_TX = alrao.alrao_sgd(jax.random.key(0), 1e-3, 1.0, 3)
_ALRAO_STEP = alrao_step.make_alrao_train_step(_ALRAO, _ALRAO_TX)
_MLP = models.make_model("mlp", num_classes=K, widths=(8,))
_NAN_TX = optax.chain(optax.sgd(0.1), optax.scale(float("nan")))  # every parameter NaN after step 1


def _config(**kw) -> LoopConfig:
    base = dict(
        epochs=3, batch_size=16, eval_batch_size=40, progress=False, log_every=2, num_devices=1
    )
    base.update(kw)
    return LoopConfig(**base)


def _nan_head(state, mesh):
    """Every Alrao copy NaN from the start: all dropped, the prediction uniform, the loss log K."""
    head = jax.tree.map(lambda p: jnp.full_like(p, jnp.nan), state.params["head"])
    return replicate(state.replace(params={**state.params, "head": head}), mesh)


def _fit_dead_alrao(workdir, **config):
    return fit(
        _ALRAO,
        _ALRAO_TX,
        blob_splits(),
        _config(**config),
        workdir,
        train_step=_ALRAO_STEP,
        place_state=_nan_head,
    )


def _diverged(caught) -> list[str]:
    return [str(w.message) for w in caught if issubclass(w.category, TrainingDiverged)]


def _latest_step(workdir) -> int | None:
    with Checkpointer(workdir / "checkpoints") as checkpointer:
        return checkpointer.latest_step()


# ----------------------------------------------------------------------------------------------
# A dead run stops


def test_dead_alrao_fit_warns_once_and_stops_at_the_first_logging_point(tmp_path):
    seen = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = fit(
            _ALRAO,
            _ALRAO_TX,
            blob_splits(),
            _config(),
            tmp_path,
            train_step=_ALRAO_STEP,
            place_state=_nan_head,
            callbacks=[lambda step, metrics: seen.append((step, metrics))],
        )
    (message,) = _diverged(caught)
    assert "training diverged at step 2" in message and "dead" in message
    assert "checkpointed step 2 (epoch 1, 2 of 6 steps done)" in message
    # The loss reported is the uniform prediction's, not -0.0; the step says why it is dead.
    step, metrics = seen[-1]
    assert step == 2 and metrics["all_dropped"] and metrics["dead"]
    np.testing.assert_allclose(metrics["loss"], math.log(K), rtol=1e-6)
    diverged = result.summary["diverged"]
    assert {k: diverged[k] for k in ("step", "epoch", "stopped", "dead")} == {
        "step": 2,
        "epoch": 1,
        "stopped": True,
        "dead": True,
    }
    assert "metrics['dead']" in diverged["reason"]
    assert result.history == [] and _latest_step(tmp_path) == 2


def test_a_dead_run_seen_at_an_epoch_end_stops_after_its_record_also_when_resumed(tmp_path):
    # log_every larger than an epoch: the epoch's end is the first look.
    with pytest.warns(TrainingDiverged, match=f"step {_STEPS_PER_EPOCH}:") as caught:
        straight = _fit_dead_alrao(tmp_path / "straight", log_every=100)
    assert len(_diverged(caught)) == 1
    assert len(straight.history) == 1 and straight.summary["diverged"]["step"] == _STEPS_PER_EPOCH
    assert _latest_step(tmp_path / "straight") == _STEPS_PER_EPOCH

    # Interrupted after the epoch's last step, before its record: the checkpoint holds the step's
    # dead flag (the loss, log K, is finite), and the resumed run stops where the straight one did.
    def interrupt(step, metrics):
        if step == _STEPS_PER_EPOCH:
            raise KeyboardInterrupt

    workdir = tmp_path / "resumed"
    with pytest.raises(KeyboardInterrupt):
        fit(
            _ALRAO,
            _ALRAO_TX,
            blob_splits(),
            _config(log_every=100),
            workdir,
            train_step=_ALRAO_STEP,
            place_state=_nan_head,
            callbacks=[interrupt],
        )
    assert _latest_step(workdir) == _STEPS_PER_EPOCH
    with pytest.warns(TrainingDiverged):
        resumed = _fit_dead_alrao(workdir, log_every=100)
    assert len(resumed.history) == 1
    assert resumed.summary["diverged"] == straight.summary["diverged"]


def test_on_divergence_warn_trains_on_after_one_warning_and_continue_does_not_look(tmp_path):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        warned = _fit_dead_alrao(tmp_path / "warn", on_divergence="warn")
    (message,) = _diverged(caught)
    assert "training on" in message
    assert len(warned.history) == 3 and warned.summary["diverged"]["stopped"] is False
    assert all(r["train_loss"] == pytest.approx(math.log(K)) for r in warned.history)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        quiet = _fit_dead_alrao(tmp_path / "continue", on_divergence="continue")
    assert _diverged(caught) == []
    assert len(quiet.history) == 3 and "diverged" not in quiet.summary
    with pytest.raises(ValueError, match="on_divergence"):
        LoopConfig(on_divergence="ignore")


def test_a_non_finite_loss_stops_a_plain_fit(tmp_path):
    with pytest.warns(TrainingDiverged, match="step 2: the training loss is nan") as caught:
        result = fit(_MLP, _NAN_TX, blob_splits(), _config(), tmp_path)
    assert len(_diverged(caught)) == 1
    assert result.summary["diverged"]["step"] == 2 and result.summary["epochs_run"] == 0


def _nan_sgd(learning_rate):  # one object for every call: the step compiles once
    return optax.chain(optax.sgd(learning_rate), optax.scale(jnp.nan))


def test_population_freezes_a_dead_member_and_stops_when_every_member_is_dead(tmp_path):
    # Rate 1e4 diverges in its first epoch (NaN by its last step); rate 0.1 trains on.
    pop = fit_population(_MLP, (0.1, 1e4), blob_splits(), _config(), tmp_path / "one")
    assert [r["trained"] for r in pop.history] == [[True, True], [True, False], [True, False]]
    assert [m["diverged_epoch"] for m in pop.members] == [None, 1]
    assert [m["epochs_run"] for m in pop.members] == [3, 1]
    assert "diverged" not in pop.summary and pop.summary["best_member"] == 0

    with pytest.warns(TrainingDiverged, match=r"step 2: every member still training \(\[0, 1\]\)"):
        dead = fit_population(
            _MLP, (0.1, 0.2), blob_splits(), _config(), tmp_path / "all", optimizer=_nan_sgd
        )
    assert dead.summary["diverged"]["step"] == 2 and dead.summary["diverged"]["dead"] == [True] * 2
    assert [m["diverged_epoch"] for m in dead.members] == [1, 1] and dead.history == []

    # "continue": today's behaviour, the dead member trains on.
    config = _config(on_divergence="continue")
    kept = fit_population(_MLP, (0.1, 1e4), blob_splits(), config, tmp_path / "continue")
    assert [r["trained"] for r in kept.history] == [[True, True]] * 3
    assert [m["diverged_epoch"] for m in kept.members] == [None, None]


# ----------------------------------------------------------------------------------------------
# Bad data fails before training


def _splits_with(split="train", **arrays):
    splits = blob_splits()
    splits[split] = {**splits[split], **arrays}
    return splits


def test_non_finite_inputs_raise_before_training(tmp_path):
    x = blob_splits()["train"]["x"].copy()
    x[5, 3], x[40, 0] = np.nan, np.inf
    with pytest.raises(ValueError, match=r"split 'train'.* 2 non-finite .*x\[5, 3\] = nan"):
        fit(_MLP, optax.sgd(0.1), _splits_with(x=x), _config(), tmp_path / "train")
    assert not (tmp_path / "train" / "checkpoints").exists()  # nothing trained
    x = blob_splits()["test"]["x"].copy()
    x[7, 1] = np.nan
    with pytest.raises(ValueError, match=r"split 'test'.* 1 non-finite .*example 7"):
        fit(_MLP, optax.sgd(0.1), _splits_with("test", x=x), _config(), tmp_path / "test")


@pytest.mark.parametrize(
    "split, labels, match",
    [
        ("train", lambda y: np.where(np.arange(len(y)) == 4, K, y), r"\[0, 3\).* got 3 at index 4"),
        ("validation", lambda y: np.where(np.arange(len(y)) == 2, -1, y), r"got -1 at index 2"),
        ("train", lambda y: y.astype(np.float32), r"integer class ids, got dtype float32"),
        ("test", lambda y: y[:, None], r"shape \(N,\), got \(40, 1\): squeeze"),
    ],
    ids=["K", "minus_one", "float", "column"],
)
def test_bad_labels_raise_naming_the_split_and_the_value(tmp_path, split, labels, match):
    y = labels(blob_splits()[split]["y"])
    with pytest.raises(ValueError, match=rf"split '{split}': labels 'y'.*{match}"):
        fit(_MLP, optax.sgd(0.1), _splits_with(split, y=y), _config(), tmp_path)
    with pytest.raises(ValueError, match=rf"split '{split}': labels 'y'.*{match}"):
        fit_population(_MLP, (0.1,), _splits_with(split, y=y), _config(), tmp_path / "pop")


def test_labels_under_another_name_and_out_of_vocabulary_tokens_raise(tmp_path):
    splits = blob_splits()
    splits["train"] = {"x": splits["train"]["x"], "label": splits["train"]["y"]}
    with pytest.raises(ValueError, match="Rename 'label' to 'y'"):
        fit(_MLP, optax.sgd(0.1), splits, _config(), tmp_path / "label")

    tokens = np.tile(np.arange(5, dtype=np.int32), 40)
    model = models.make_model("char_lstm", vocab_size=5, embed_dim=4, hidden_size=4)
    config = _config(batch_size=4, seq_len=5, eval_streams=2)
    bad = {"train": tokens, "validation": np.where(tokens == 4, 5, tokens).astype(np.int32)}
    with pytest.raises(ValueError, match=r"split 'validation': tokens must lie in \[0, 5\).* 5 at"):
        fit(model, optax.sgd(0.1), bad, config, tmp_path / "lm", task="language_model")


def test_a_rerun_of_a_stopped_dead_run_stops_where_it_did_without_training(tmp_path):
    # The checkpoint records the divergence: the same command again warns again, trains no step
    # and reports the same step (not the next logging point, which resuming the dead state would see).
    with pytest.warns(TrainingDiverged, match="training diverged at step 2:"):
        first = _fit_dead_alrao(tmp_path)
    assert first.summary["diverged"]["step"] == 2 and _latest_step(tmp_path) == 2
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        again = _fit_dead_alrao(tmp_path)
    (message,) = _diverged(caught)
    assert "training diverged at step 2:" in message and "nothing to resume" in message
    assert again.summary["diverged"] == first.summary["diverged"]
    assert again.history == first.history == [] and _latest_step(tmp_path) == 2
    # Seen at an epoch's end (log_every past the epoch): the record is kept and nothing more runs.
    with pytest.warns(TrainingDiverged):
        straight = _fit_dead_alrao(tmp_path / "epoch_end", log_every=100)
    with pytest.warns(TrainingDiverged, match="nothing to resume"):
        rerun = _fit_dead_alrao(tmp_path / "epoch_end", log_every=100)
    assert rerun.summary["diverged"] == straight.summary["diverged"]
    assert [r["epoch"] for r in rerun.history] == [1] == [r["epoch"] for r in straight.history]
