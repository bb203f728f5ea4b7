"""The meta-test of a frozen optimizer (``randlr_jax.noh.meta_evaluate``) against a plain Python loop."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from randlr_jax import noh
from randlr_jax.noh import _meta_training as mt
from randlr_jax.noh._noh import NOHAdamState, flatten_tree

NUM_EXAMPLES, DIM, CLASSES = 12, 3, 2


def _problem():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(NUM_EXAMPLES, DIM)).astype(np.float32)
    data = {"x": x, "y": (x[:, 0] > 0).astype(np.int32)}
    params = {"w": jnp.zeros((DIM, CLASSES)), "b": jnp.zeros((CLASSES,))}
    return data, params


def _logits(params, x):
    return x @ params["w"] + params["b"][None, :]


def _loss(params, batch):
    logits = _logits(params, batch["x"])
    return optax.softmax_cross_entropy_with_integer_labels(logits, batch["y"]).mean()


def test_matches_a_step_by_step_loop_on_the_same_minibatches():
    data, params = _problem()
    key = jax.random.key(4)
    evaluate = noh.make_split_evaluator(_logits, {"train": data})
    tx = optax.sgd(0.1, momentum=0.9)  # its momentum buffer is the traced state
    coords = noh.sample_coordinates(params, 3, seed=0)
    curve = noh.meta_evaluate(
        tx, _loss, params, data, key=key, num_steps=6, eval_every=3, batch_size=4,
        evaluate=evaluate, trace=lambda state: flatten_tree(state[0].trace)[coords],
    )  # fmt: skip

    # The reference: one step at a time on the rows of sample_batch_indices, no scan.
    @jax.jit
    def step(params, state, batch):
        updates, state = tx.update(jax.grad(_loss)(params, batch), state, params)
        return optax.apply_updates(params, updates), state

    state, want_params, traced, losses = tx.init(params), params, [], []
    for t, idx in enumerate(mt.sample_batch_indices(key, NUM_EXAMPLES, 6, 4)):
        batch = jax.tree.map(lambda a, idx=idx: a[idx], data)
        want_params, state = step(want_params, state, batch)
        traced.append(np.concatenate([np.ravel(v) for v in jax.tree.leaves(state[0].trace)]))
        if t % 3 == 2:
            losses.append(float(_loss(want_params, data)))
    assert curve["step"] == [3, 6]
    np.testing.assert_allclose(curve["train_loss"], losses, rtol=1e-5)
    np.testing.assert_allclose(curve["traced"], np.asarray(traced)[:, coords], rtol=1e-5)
    assert len(curve["train_accuracy"]) == 2 and all(0 <= a <= 1 for a in curve["train_accuracy"])
    assert coords.tolist() == sorted(set(coords.tolist())) and coords.max() < DIM * CLASSES + 2


def test_bad_arguments_raise_before_compiling():
    data, params = _problem()
    evaluate = noh.make_split_evaluator(_logits, {"train": data})
    good = {"key": jax.random.key(0), "num_steps": 4, "eval_every": 2, "batch_size": 4,
            "evaluate": evaluate}  # fmt: skip
    for override, argument in (
        ({"num_steps": 5}, "num_steps"),
        ({"eval_every": 0}, "eval_every"),
        ({"batch_size": 2.0}, "batch_size"),
        ({"evaluate": 3}, "evaluate"),
        ({"key": 0}, "key"),
        ({"trace": "rates"}, "trace"),
    ):
        with pytest.raises(ValueError, match=argument):
            noh.meta_evaluate(optax.sgd(0.1), _loss, params, data, **{**good, **override})
    with pytest.raises(ValueError, match="batch_size"):
        noh.meta_evaluate(optax.sgd(0.1), _loss, params, data, **{**good, "batch_size": 13})
    with pytest.raises(ValueError, match="num"):
        noh.sample_coordinates(params, DIM * CLASSES + 3, seed=0)
    with pytest.raises(ValueError, match=r"splits\['train'\]"):
        noh.make_split_evaluator(_logits, {"train": {"x": data["x"]}})


def test_trace_learning_rates_reads_noh_rates_at_the_coordinates():
    rates = {"b": jnp.array([1.0, 2.0]), "w": jnp.array([[3.0, 4.0], [5.0, 6.0]])}
    state = NOHAdamState(*[None] * len(NOHAdamState._fields))._replace(learning_rates=rates)
    np.testing.assert_array_equal(noh.trace_learning_rates([0, 3, 5])(state), [1.0, 4.0, 6.0])
    with pytest.raises(ValueError, match="coordinates"):
        noh.trace_learning_rates([0.5])
