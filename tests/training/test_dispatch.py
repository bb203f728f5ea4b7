"""The engine's fast path against a hand-written per-step loop, and its checkpoint policy.

``fit`` runs many steps per dispatch (a loop compiled on the device over a chunk of batches), gathers the
batches from a training split held on the devices (or streams chunks of them from the host), evaluates a
whole split in one compiled call and checkpoints by a policy (steps, seconds, the end, an interrupt).
The reference here is the plainest loop there is, written out: one jitted step per batch, the batches of
``default_rng([seed, epoch]).permutation(n)`` in order, the validation sums batch by batch, the best
epoch the first with the lowest validation loss, patience counted by hand.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import numpy as np
import optax
import pytest

from randlr_jax.models import Classifier
from randlr_jax.training import Checkpointer, LoopConfig, fit
from randlr_jax.training import _engine as engine
from randlr_jax.training._state import create_train_state
from randlr_jax.training._steps import make_eval_step, make_train_step
from tests.helpers import RaiseAt, blob_splits


class _Body(nn.Module):
    @nn.compact
    def __call__(self, x, *, train=False):
        x = nn.relu(nn.Dense(16)(x))
        return nn.Dropout(0.25, deterministic=not train)(x)  # the dropout key travels in the state


_MODEL = Classifier(body=_Body(), head=nn.Dense(3))
_TX = optax.sgd(0.3, momentum=0.9)  # one object: every run below compiles its step once
_BATCH, _EVAL_BATCH, _SEED, _EPOCHS, _PATIENCE = 16, 24, 5, 6, 2


def _config(**kw) -> LoopConfig:
    base = dict(
        epochs=_EPOCHS, batch_size=_BATCH, eval_batch_size=_EVAL_BATCH, seed=_SEED,
        patience=_PATIENCE, progress=False, num_devices=1,
    )  # fmt: skip
    base.update(kw)
    return LoopConfig(**base)


def _reference(splits: dict, drop_remainder: bool = True) -> dict:
    """The per-step loop, written out."""
    train, validation = splits["train"], splits["validation"]
    n = len(train["y"])
    state = create_train_state(_MODEL, _TX, jax.random.key(_SEED), train["x"][:1])
    step = jax.jit(make_train_step(_MODEL, _TX))
    evaluate = jax.jit(make_eval_step(_MODEL))
    history, best_loss, best_epoch, best_params, bad = [], np.inf, 0, None, 0
    for epoch in range(_EPOCHS):
        order = np.random.default_rng([_SEED, epoch]).permutation(n)
        count = n // _BATCH if drop_remainder else -(-n // _BATCH)
        losses = []
        for b in range(count):
            rows = order[b * _BATCH : (b + 1) * _BATCH]
            state, metrics = step(state, {"x": train["x"][rows], "y": train["y"][rows]})
            losses.append(float(metrics["loss"]))
        loss_sum = count_sum = 0.0
        for start in range(0, len(validation["y"]), _EVAL_BATCH):
            batch = {k: v[start : start + _EVAL_BATCH] for k, v in validation.items()}
            sums = evaluate(state, batch)
            loss_sum += float(sums["loss_sum"])
            count_sum += float(sums["count"])
        validation_loss = loss_sum / count_sum
        history.append({"train_loss": float(np.mean(losses)), "validation_loss": validation_loss})
        if validation_loss < best_loss:
            best_loss, best_epoch, bad = validation_loss, epoch + 1, 0
            best_params = jax.tree.map(np.asarray, state.params)
        else:
            bad += 1
            if bad >= _PATIENCE:
                break
    return {
        "history": history,
        "best_epoch": best_epoch,
        "params": state.params,
        "best": best_params,
    }


@pytest.fixture(scope="module")
def reference():
    return _reference(blob_splits())


@pytest.mark.parametrize(
    "kw",
    [
        {},  # the defaults: the split on the device, 64 steps a dispatch (cut at log_every=20)
        {"steps_per_dispatch": 1},  # one step a dispatch
        {
            "steps_per_dispatch": 4,
            "log_every": 3,
        },  # chunks cut at logging points: 3, 3, then 4 + 2...
        {"device_data_mb": 0.0},  # streamed from the host, a chunk of batches at a time
    ],
    ids=["defaults", "one-step", "cut", "streamed"],
)
def test_fit_is_the_per_step_loop(reference, tmp_path, kw):
    result = fit(_MODEL, _TX, blob_splits(), _config(**kw), tmp_path)
    assert result.summary["best_epoch"] == reference["best_epoch"]
    assert len(result.history) == len(reference["history"]) < _EPOCHS  # it stopped early
    for got, want in zip(result.history, reference["history"], strict=True):
        for key in ("train_loss", "validation_loss"):
            np.testing.assert_allclose(got[key], want[key], rtol=1e-6, err_msg=key)
        assert got["best_epoch"] <= reference["best_epoch"]
    for got, want in zip(
        jax.tree.leaves(result.state.params), jax.tree.leaves(reference["params"]), strict=True
    ):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
    for got, want in zip(
        jax.tree.leaves(result.best_params), jax.tree.leaves(reference["best"]), strict=True
    ):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)


def test_a_ragged_last_batch_is_the_per_step_loop(tmp_path):
    splits = blob_splits()
    splits["train"] = {
        k: v[:90] for k, v in splits["train"].items()
    }  # 5 batches of 16 and one of 10
    want = _reference(splits, drop_remainder=False)
    for where, kw in (("resident", {}), ("streamed", {"device_data_mb": 0.0})):
        result = fit(_MODEL, _TX, splits, _config(drop_remainder=False, **kw), tmp_path / where)
        got = [r["train_loss"] for r in result.history]
        np.testing.assert_allclose(got, [r["train_loss"] for r in want["history"]], rtol=1e-6)
        assert result.summary["best_epoch"] == want["best_epoch"], where


def test_the_whole_split_evaluation_is_the_batch_by_batch_one(tmp_path):
    """One compiled call over the stacked split (the last batch padded and masked) against the loop
    over the batches from the host, on the same state."""
    splits = blob_splits()
    result = fit(_MODEL, _TX, splits, _config(epochs=1, patience=None), tmp_path)
    state = result.state
    evaluate = jax.jit(make_eval_step(_MODEL))
    loss_sum = correct = count = 0.0
    for start in range(0, len(splits["test"]["y"]), _EVAL_BATCH):
        sums = evaluate(
            state, {k: v[start : start + _EVAL_BATCH] for k, v in splits["test"].items()}
        )
        loss_sum, correct = loss_sum + float(sums["loss_sum"]), correct + float(sums["correct"])
        count += float(sums["count"])
    assert result.summary["test_loss"] == pytest.approx(loss_sum / count, rel=1e-6)
    assert result.summary["test_accuracy"] == pytest.approx(correct / count, rel=1e-6)


def _latest(workdir) -> int | None:
    with Checkpointer(workdir / "checkpoints") as checkpointer:
        return checkpointer.latest_step()


def test_checkpoint_policy_steps_seconds_and_the_end(tmp_path):
    """6 steps an epoch, logged every 2. A crash (no Ctrl-C: nothing saved then) at step 10 leaves
    what the policy wrote: by step count the step-8 checkpoint; by time (every chunk's end is past a
    tiny interval) the step-10 one; by neither, nothing. A finished run always holds its end."""
    splits = blob_splits()
    for name, kw, latest in (
        ("steps", {"checkpoint_every_steps": 4, "checkpoint_every_seconds": None}, 8),
        ("seconds", {"checkpoint_every_seconds": 1e-9}, 10),
        ("neither", {"checkpoint_every_seconds": None}, None),
    ):
        config = _config(log_every=2, patience=None, **kw)
        with pytest.raises(RuntimeError, match="crash"):
            fit(_MODEL, _TX, splits, config, tmp_path / name, callbacks=[RaiseAt(10)])
        assert _latest(tmp_path / name) == latest, name
    # The default (every 60 s): a short run writes one checkpoint, at its end.
    finished = fit(_MODEL, _TX, splits, _config(patience=None), tmp_path / "end")
    assert _latest(tmp_path / "end") == 6 * _EPOCHS
    assert sorted(p.name for p in (tmp_path / "end" / "checkpoints").iterdir()) == [
        str(6 * _EPOCHS)
    ]
    again = fit(_MODEL, _TX, splits, _config(patience=None), tmp_path / "end")  # nothing to train
    assert again.history == finished.history


def test_chunks_end_at_logging_points_checkpoints_and_a_ragged_batch():
    config = _config(log_every=5, checkpoint_every_steps=7)
    # From step 3 to the epoch's end at 20, at most 4 a chunk: stops at 5, 7, 10, 14, 15, 20.
    assert engine._chunk_sizes(3, 20, 4, config, False) == [2, 2, 3, 4, 1, 4, 1]
    assert sum(engine._chunk_sizes(3, 20, 4, config, False)) == 17
    # A ragged last batch (step 20) is a chunk of its own.
    assert engine._chunk_sizes(16, 20, 8, _config(log_every=100), True) == [3, 1]
    assert engine._chunk_sizes(20, 20, 8, config, False) == []


def test_eval_params_evaluates_and_keeps_the_schedule_free_average(tmp_path):
    """``eval_params``: every evaluation, the best copy and the summary's test metrics are of the
    schedule-free average ``x`` (``schedule_free_eval_params``), evaluated here by hand; without it,
    of the training iterate ``y``."""
    splits = blob_splits()
    tx = optax.contrib.schedule_free_sgd(0.3)

    def average(state):
        return optax.contrib.schedule_free_eval_params(state.opt_state, state.params)

    config = _config(epochs=3, patience=None)
    result = fit(_MODEL, tx, splits, config, tmp_path / "x", eval_params=average)
    plain = fit(_MODEL, tx, splits, config, tmp_path / "y")
    evaluate = jax.jit(make_eval_step(_MODEL))

    def loss_of(params, split):
        state = result.state.replace(params=params)
        sums = evaluate(state, splits[split])
        return float(sums["loss_sum"]) / float(sums["count"])

    x = average(result.state)
    assert result.history[-1]["validation_loss"] == pytest.approx(
        loss_of(x, "validation"), rel=1e-5
    )
    assert plain.history[-1]["validation_loss"] == pytest.approx(
        loss_of(result.state.params, "validation"), rel=1e-5
    )
    assert abs(loss_of(x, "validation") - loss_of(result.state.params, "validation")) > 1e-4
    best = result.summary["best_epoch"]
    assert result.history[best - 1]["validation_loss"] == pytest.approx(
        loss_of(result.best_params, "validation"), rel=1e-5
    )
    assert result.summary["test_loss"] == pytest.approx(
        loss_of(result.best_params, "test"), rel=1e-5
    )
    if best == 3:
        for got, want in zip(jax.tree.leaves(result.best_params), jax.tree.leaves(x), strict=True):
            np.testing.assert_allclose(got, want, rtol=1e-6)
