"""The training loop: steps, data parallelism, resumption, early stopping, outputs and bad input."""

from __future__ import annotations

import json

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from randlr_jax import models
from randlr_jax.models import Classifier
from randlr_jax.training import (
    EarlyStopping,
    LoopConfig,
    create_train_state,
    fit,
    make_eval_step,
    make_train_step,
)
from randlr_jax.training._early_stopping import MemberEarlyStopping
from randlr_jax.training._sharding import make_mesh, pad_batch, shard_batch
from tests.helpers import RaiseAt, blob_splits, blobs


def _model():
    return models.make_model("mlp", num_classes=3, widths=(16,))


def _config(**kw):
    base = dict(epochs=3, batch_size=16, eval_batch_size=24, progress=False, log_every=2)
    base.update(kw)
    return LoopConfig(**base)


def test_train_step_reduces_loss_and_reports_metrics():
    model = _model()
    tx = optax.sgd(0.1)
    batch = blobs(64, 3)
    state = create_train_state(model, tx, jax.random.key(0), batch["x"][:1])
    step = jax.jit(make_train_step(model, tx))
    losses = []
    for _ in range(20):
        state, metrics = step(state, batch)
        losses.append(float(metrics["loss"]))
    assert set(metrics) == {"loss", "accuracy"}
    assert losses[-1] < 0.5 * losses[0]
    assert int(state.step) == 20


def test_train_step_passes_value_to_extra_args_transformations():
    # reduce_on_plateau needs `value=`; a plain step that forgot it would raise a TypeError.
    model = _model()
    tx = optax.chain(optax.sgd(0.1), optax.contrib.reduce_on_plateau(patience=1, factor=0.5))
    batch = blobs(32, 4)
    state = create_train_state(model, tx, jax.random.key(0), batch["x"][:1])
    step = jax.jit(make_train_step(model, tx))
    for _ in range(3):
        state, _ = step(state, batch)
    plateau_state = state.opt_state[1]
    assert np.isfinite(float(plateau_state.best_value))  # initialised to inf: it saw the losses


def test_eval_step_masks_padding():
    model = _model()
    data = blobs(10, 5)
    state = create_train_state(model, optax.sgd(0.1), jax.random.key(0), data["x"][:1])
    eval_step = jax.jit(make_eval_step(model))
    plain = eval_step(state, data)
    padded = eval_step(state, pad_batch(data, 8))
    assert float(padded["count"]) == 10.0
    np.testing.assert_allclose(float(padded["loss_sum"]), float(plain["loss_sum"]), rtol=1e-5)
    np.testing.assert_allclose(float(padded["correct"]), float(plain["correct"]))


def test_fit_writes_outputs_and_learns(tmp_path):
    config = _config(test_every_epoch=True)
    result = fit(_model(), optax.sgd(0.2), blob_splits(), config, tmp_path)
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 3
    records = [json.loads(line) for line in lines]
    assert [r["epoch"] for r in records] == [1, 2, 3]
    for key in (
        "train_loss",
        "validation_loss",
        "validation_accuracy",
        "test_loss",
        "test_accuracy",
    ):
        assert all(np.isfinite(r[key]) for r in records), key
    # The test split at the best epoch's parameters is the best epoch's record's.
    best = records[result.summary["best_epoch"] - 1]
    assert result.summary["test_loss"] == pytest.approx(best["test_loss"], rel=1e-6)
    # By default the test split is evaluated once, at the end: no per-epoch test keys.
    once = fit(_model(), optax.sgd(0.2), blob_splits(), _config(), tmp_path / "once")
    assert not any(k.startswith("test_") for r in once.history for k in r)
    assert once.summary["test_loss"] == pytest.approx(result.summary["test_loss"], rel=1e-6)
    assert records[-1]["train_loss"] < records[0]["train_loss"]
    summary = json.loads((tmp_path / "results.json").read_text())
    assert summary["epochs_run"] == 3 and summary["test_accuracy"] > 0.6
    assert (tmp_path / "learning_curves.png").stat().st_size > 1000
    assert result.summary["best_epoch"] == summary["best_epoch"]


def test_same_result_on_one_and_eight_devices(tmp_path):
    assert jax.local_device_count() == 8, "tests expect 8 simulated CPU devices (see conftest.py)"
    splits = blob_splits()
    one = fit(_model(), optax.sgd(0.2), splits, _config(num_devices=1), tmp_path / "one")
    eight = fit(_model(), optax.sgd(0.2), splits, _config(num_devices=8), tmp_path / "eight")
    chex.assert_trees_all_close(one.state.params, eight.state.params, rtol=1e-5, atol=1e-6)
    assert len(eight.state.params["body"]) > 0
    sharding = jax.tree.leaves(eight.state.params)[0].sharding
    assert len(sharding.device_set) == 8  # the parameters really live on all devices


class _DropoutMLP(nn.Module):
    @nn.compact
    def __call__(self, x, *, train=False):
        x = nn.relu(nn.Dense(16)(x))
        return nn.Dropout(0.2, deterministic=not train)(x)


@pytest.mark.parametrize("checkpoint_every_steps", [None, 4])
def test_interrupted_run_resumes_to_identical_parameters(tmp_path, checkpoint_every_steps):
    splits = blob_splits()
    config = _config(checkpoint_every_steps=checkpoint_every_steps)
    # Dropout makes the dropout key part of what must be restored.
    model = Classifier(body=_DropoutMLP(), head=nn.Dense(3))
    tx = optax.sgd(0.1, momentum=0.9)  # momentum makes the optimizer state matter
    straight = fit(model, tx, splits, config, tmp_path / "straight")
    with pytest.raises(KeyboardInterrupt):
        fit(
            model,
            tx,
            splits,
            config,
            tmp_path / "resumed",
            callbacks=[RaiseAt(8, KeyboardInterrupt)],
        )
    # 96 examples / 16 = 6 steps per epoch: the interruption fell inside epoch 2.
    records = (tmp_path / "resumed" / "metrics.jsonl").read_text().splitlines()
    assert len(records) == 1
    resumed = fit(model, tx, splits, config, tmp_path / "resumed")
    assert int(resumed.state.step) == int(straight.state.step) == 18
    chex.assert_trees_all_equal(resumed.state.params, straight.state.params)
    chex.assert_trees_all_equal(resumed.state.opt_state, straight.state.opt_state)
    assert [r["epoch"] for r in resumed.history] == [1, 2, 3]
    for a, b in zip(resumed.history, straight.history, strict=False):
        assert a["validation_loss"] == pytest.approx(b["validation_loss"], rel=1e-6)


_SGD = optax.sgd(0.1)  # one object for the tests below: their steps compile once


def test_fit_reads_each_epoch_in_the_documented_order(tmp_path, monkeypatch):
    """Epoch ``e`` visits the training examples in ``default_rng([seed, e]).permutation(n)``, batch ``b``
    the positions ``b*B .. (b+1)*B - 1`` of it: the exact indices fed to the steps, epochs 0 and 1."""

    splits = blob_splits()
    n, batch_size, seed = len(splits["train"]["y"]), 16, 3
    splits["train"]["x"][:, 0] = np.arange(n)  # each example says its index
    model = _model()
    base = make_train_step(model, _SGD)
    expected = [
        np.random.default_rng([seed, epoch]).permutation(n)[b * batch_size : (b + 1) * batch_size]
        for epoch in range(2)
        for b in range(n // batch_size)
    ]
    # The batches on the devices (held there, or streamed from the host), as the step sees them,
    # several steps per dispatch.
    for where, config in (
        ("resident", _config(epochs=2, seed=seed, steps_per_dispatch=4, num_devices=1)),
        ("streamed", _config(epochs=2, seed=seed, device_data_mb=0.0, log_every=3, num_devices=1)),
    ):
        fed = []

        def step(state, batch, fed=fed):
            record = lambda x: fed.append(np.asarray(x).astype(int))  # noqa: E731
            jax.debug.callback(record, batch["x"][:, 0], ordered=True)
            return base(state, batch)

        fit(model, _SGD, splits, config, tmp_path / where, train_step=step)
        assert len(fed) == len(expected) == 12, where
        for got, want in zip(fed, expected, strict=True):
            np.testing.assert_array_equal(got, want, err_msg=where)
    assert not np.array_equal(np.concatenate(fed[:6]), np.concatenate(fed[6:]))  # reshuffled


def test_early_stopping_keeps_best_epoch(tmp_path):
    splits = blob_splits()
    steps_per_epoch = 96 // 16
    # Descend for one epoch, then ascend: validation loss gets worse from epoch 2 on.
    flip = optax.scale_by_schedule(lambda step: jnp.where(step < steps_per_epoch, 1.0, -1.0))
    tx = optax.chain(optax.sgd(0.2), flip)
    result = fit(_model(), tx, splits, _config(epochs=6, patience=2), tmp_path / "stop")
    assert len(result.history) == 3  # epochs 2 and 3 are worse: stop after patience=2
    assert result.summary["best_epoch"] == 1
    one_epoch = fit(_model(), optax.sgd(0.2), splits, _config(epochs=1), tmp_path / "one")
    chex.assert_trees_all_close(result.best_params, one_epoch.state.params, rtol=1e-6)


def test_early_stopping_unit():
    stopper = EarlyStopping(patience=2)
    assert [stopper.update(v, e) for e, v in enumerate([3.0, float("nan"), 2.0, 2.5, 2.1], 1)] == [
        True,
        False,
        True,
        False,
        False,
    ]
    assert stopper.best_epoch == 3 and stopper.should_stop
    assert EarlyStopping.from_dict(stopper.to_dict()) == stopper
    with pytest.raises(ValueError, match="patience"):
        EarlyStopping(patience=0)


# Patience 2 on a hand-made validation curve: epochs 1, 2 and 4 improve (best 3.0 at epoch 4); epoch 3 is
# one bad epoch, reset by epoch 4; epochs 5 and 6 are two bad epochs in a row: the run stops after epoch 6
# (without the reset at epoch 4 it would stop after epoch 5, counting epoch 3 too).
_HAND_CURVE = [5.0, 4.0, 4.5, 3.0, 3.5, 3.6, 2.0, 1.0]
_HAND_STOP_EPOCH, _HAND_BEST_EPOCH = 6, 4


def test_early_stopping_stops_at_the_hand_computed_epoch():
    stopper = EarlyStopping(patience=2)
    improved, stop_epoch = [], None
    for epoch, value in enumerate(_HAND_CURVE, start=1):
        improved.append(stopper.update(value, epoch))
        if stopper.should_stop:
            stop_epoch = epoch
            break
    assert stop_epoch == _HAND_STOP_EPOCH
    assert improved == [True, True, False, True, False, False]
    assert (stopper.best_epoch, stopper.best_value, stopper.bad_epochs) == (4, 3.0, 2)
    # Per member: the same curve, and one that never stops (it improves every epoch).
    members = MemberEarlyStopping.create(2, patience=2)
    for epoch, value in enumerate(_HAND_CURVE, start=1):
        members.update([value, 10.0 - epoch], epoch)
        if epoch == _HAND_STOP_EPOCH - 1:
            assert members.active.tolist() == [True, True]
    assert members.active.tolist() == [False, True]
    assert members.best_epoch == [_HAND_BEST_EPOCH, len(_HAND_CURVE)]


def test_fit_stops_at_the_hand_computed_epoch_and_keeps_that_epochs_params(tmp_path, monkeypatch):
    """The loop reads the patience counter: validation losses replaced by the hand-made curve."""
    from randlr_jax.training import _loop

    real = _loop._Single.evaluate
    curve = iter(_HAND_CURVE)

    def hand_made(self, split, state):
        values = real(self, split, state)
        return {**values, "loss": next(curve)} if split == "validation" else values

    splits, model, tx = blob_splits(), _model(), _SGD
    with monkeypatch.context() as patch:
        patch.setattr(_loop._Single, "evaluate", hand_made)
        result = fit(model, tx, splits, _config(epochs=8, patience=2), tmp_path / "stop")
    assert len(result.history) == _HAND_STOP_EPOCH
    assert [r["validation_loss"] for r in result.history] == _HAND_CURVE[:_HAND_STOP_EPOCH]
    assert result.summary["best_epoch"] == _HAND_BEST_EPOCH
    assert int(result.state.step) == _HAND_STOP_EPOCH * 96 // 16
    # The best parameters are those after epoch 4, exactly (the same steps run by a 4-epoch fit).
    four = fit(model, tx, splits, _config(epochs=4), tmp_path / "four")
    chex.assert_trees_all_equal(result.best_params, four.state.params)


def test_language_model_fit_and_resume(tmp_path):
    rng = np.random.default_rng(0)
    vocab = 7
    text = np.tile(np.arange(vocab, dtype=np.int32), 100)  # a periodic "text": learnable
    noise = rng.integers(0, vocab, size=text.shape).astype(np.int32)
    text = np.where(rng.random(text.shape) < 0.05, noise, text)
    splits = {"train": text[:500], "validation": text[500:600], "test": text[600:]}
    model = models.make_model("char_lstm", vocab_size=vocab, embed_dim=8, hidden_size=16)
    config = LoopConfig(
        epochs=2, batch_size=8, seq_len=5, eval_streams=8, progress=False, log_every=1
    )
    tx = optax.adam(1e-2)
    straight = fit(model, tx, splits, config, tmp_path / "a", task="language_model")
    assert "validation_bits_per_char" in straight.history[-1]
    assert straight.history[-1]["train_loss"] < straight.history[0]["train_loss"]
    with pytest.raises(KeyboardInterrupt):
        fit(
            model,
            tx,
            splits,
            config,
            tmp_path / "b",
            task="language_model",
            callbacks=[RaiseAt(11, KeyboardInterrupt)],
        )
    resumed = fit(model, tx, splits, config, tmp_path / "b", task="language_model")
    chex.assert_trees_all_equal(resumed.state.params, straight.state.params)


def test_bad_input_errors(tmp_path):
    splits = blob_splits()
    with pytest.raises(ValueError, match="larger than the training split"):
        fit(_model(), optax.sgd(0.1), splits, _config(batch_size=1000), tmp_path / "a")
    with pytest.raises(ValueError, match="multiple of the number of data-parallel devices"):
        fit(_model(), optax.sgd(0.1), splits, _config(batch_size=12, num_devices=8), tmp_path / "b")
    for name, value in (("epochs", 0), ("batch_size", -3), ("seq_len", 0)):
        with pytest.raises(ValueError, match=name):
            LoopConfig(**{name: value})
    with pytest.raises(ValueError, match="task"):
        make_train_step(_model(), optax.sgd(0.1), task="regression")
    with pytest.raises(ValueError, match="num_devices"):
        make_mesh(99)
    with pytest.raises(ValueError, match="copies=3"):
        make_mesh(8, copies=3)
    with pytest.raises(ValueError, match="copy_shards"):
        LoopConfig(copy_shards=0)


def test_shard_batch_rejects_indivisible_batch():
    mesh = make_mesh(8)
    with pytest.raises(ValueError, match="multiple"):
        shard_batch({"x": np.zeros((6, 2))}, mesh)
    sharded = shard_batch({"x": np.zeros((16, 2))}, mesh)
    assert len(sharded["x"].sharding.device_set) == 8


def test_checkpointer_roundtrip_keeps_structure(tmp_path):
    from randlr_jax.training import Checkpointer

    tree = {
        "w": jnp.arange(6.0).reshape(2, 3),
        "opt": optax.adam(1e-3).init(jnp.ones(3)),
        "key": jax.random.key(3),
    }
    with Checkpointer(tmp_path) as ckpt:
        ckpt.save(7, tree, {"epoch": 2, "loss": float("nan")})
        restored, meta = ckpt.restore(tree)
    assert type(restored["opt"][0]) is type(tree["opt"][0])
    chex.assert_trees_all_equal(restored["w"], tree["w"])
    assert (
        jax.random.key_data(restored["key"]).tolist() == jax.random.key_data(tree["key"]).tolist()
    )
    assert meta["epoch"] == 2


def test_checkpointer_restores_the_newest_step_with_that_steps_values_exactly(tmp_path):
    from randlr_jax.training import Checkpointer

    def tree(step):  # values that say which step wrote them
        return {
            "w": jnp.arange(6.0).reshape(2, 3) / 7.0 + step,
            "count": jnp.asarray(step, jnp.int32),
            "key": jax.random.key(step),
        }

    with Checkpointer(tmp_path, max_to_keep=2) as ckpt:
        for step in (3, 5, 8):
            ckpt.save(step, tree(step), {"step": step})
        assert ckpt.latest_step() == 8
        for asked, expected in ((None, 8), (5, 5)):
            restored, meta = ckpt.restore(tree(0), step=asked)
            assert meta["step"] == expected
            np.testing.assert_array_equal(restored["w"], tree(expected)["w"])
            assert int(restored["count"]) == expected
            assert jax.random.key_data(restored["key"]).tolist() == (
                jax.random.key_data(jax.random.key(expected)).tolist()
            )
        with pytest.raises(RuntimeError, match="could be restored"):
            ckpt.restore(tree(0), step=3)  # the oldest, deleted: two are kept


def test_create_train_state_unaliases_shared_buffers():
    shared = jnp.ones(4)

    def init(params):
        return (shared, shared)  # one array in two places of the state

    tx = optax.GradientTransformation(init, lambda u, s, p=None: (u, s))
    state = create_train_state(_model(), tx, jax.random.key(0), np.zeros((1, 12), np.float32))
    a, b = state.opt_state
    assert a is not b

    jax.jit(lambda s: s, donate_argnums=0)(state)  # would fail: "donate the same buffer twice"


def test_language_model_fit_on_one_device(tmp_path):
    # One device: device_put does not copy, so a donated carry reused at the next epoch would be gone.
    text = np.tile(np.arange(5, dtype=np.int32), 80)
    splits = {"train": text[:300], "validation": text[300:]}
    model = models.make_model("char_lstm", vocab_size=5, embed_dim=4, hidden_size=8)
    config = LoopConfig(
        epochs=2, batch_size=4, seq_len=6, eval_streams=4, progress=False, num_devices=1
    )
    result = fit(model, optax.adam(1e-2), splits, config, tmp_path, task="language_model")
    assert len(result.history) == 2 and np.isfinite(result.history[-1]["validation_loss"])


def test_prefetch_keeps_order_raises_and_stops():
    import threading

    from randlr_jax.training._feed import prefetch

    assert list(prefetch(iter(range(20)), size=3, transform=lambda x: 2 * x)) == list(
        range(0, 40, 2)
    )

    def failing():
        yield 1
        raise RuntimeError("loader broke")

    with pytest.raises(RuntimeError, match="loader broke"):
        list(prefetch(failing()))
    produced = []

    def endless():
        i = 0
        while True:
            produced.append(i)
            yield i
            i += 1

    stream = prefetch(endless(), size=2)
    assert [next(stream) for _ in range(5)] == [0, 1, 2, 3, 4]
    stream.close()  # a consumer that stops early (break, KeyboardInterrupt) ends the thread
    assert not any(t.name == "randlr_jax-prefetch" for t in threading.enumerate())
    assert len(produced) <= 5 + 2 + 2  # read ahead by at most the queue and one in hand
    with pytest.raises(ValueError, match="size"):
        next(prefetch([1], size=0))


def test_prefetching_fit_is_the_same_run_and_resumes(tmp_path):
    """``LoopConfig(prefetch=2)`` (the GPU/TPU default) trains on the same batches as loading in line."""
    splits = blob_splits()
    inline = fit(_model(), optax.sgd(0.2), splits, _config(prefetch=0), tmp_path / "inline")

    class StopAt:
        def __call__(self, step, metrics):
            if step == 5:
                raise KeyboardInterrupt

    config = _config(prefetch=2, checkpoint_every_steps=1, log_every=1)
    with pytest.raises(KeyboardInterrupt):
        fit(_model(), optax.sgd(0.2), splits, config, tmp_path / "ahead", callbacks=[StopAt()])
    ahead = fit(_model(), optax.sgd(0.2), splits, config, tmp_path / "ahead")
    chex.assert_trees_all_equal(
        jax.device_get(ahead.state.params), jax.device_get(inline.state.params)
    )
    with pytest.raises(ValueError, match="prefetch"):
        LoopConfig(prefetch=-1)
