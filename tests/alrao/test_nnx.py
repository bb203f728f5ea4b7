"""Alrao in Flax NNX against the Linen path, and the misuse the heads refuse.

From the same initial parameters and batches, the NNX step (:func:`make_nnx_alrao_train_step`, an
:class:`NNXAlraoHead` under ``nnx.Optimizer(model, alrao_sgd(...), wrt=nnx.Param)``) and the Linen step
(:func:`make_alrao_train_step`, an :class:`AlraoHead`) give the same parameters, switch posterior,
losses and metrics over several steps, also with a copy whose rate makes it diverge (dropped and
frozen in both). Differentiating either head's output (a plain loss, i.e. training outside the Alrao
step) raises :class:`AlraoTrainingError`, also for the Linen head wrapped with ``nnx.bridge.ToNNX``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from randlr_jax import models
from randlr_jax.alrao import (
    AlraoHead,
    AlraoTrainingError,
    NNXAlraoHead,
    alrao_sgd,
    export_nnx_single_classifier,
    make_alrao_train_step,
    make_nnx_alrao_train_step,
    mixture_gradient_allowed,
    posterior_of,
)
from randlr_jax.training import create_train_state

D_IN, WIDTH, K, N = 5, 8, 3, 4
STEPS = 6
PLANT = 3  # the step before which the last copy diverges
LR_MIN, LR_MAX = 1e-3, 1.0


class _NNXMLP(nnx.Module):
    """The Linen ``make_model("mlp", widths=(WIDTH,), head=AlraoHead(...))`` in NNX (same paths)."""

    def __init__(self, rngs: nnx.Rngs):
        self.body = nnx.Dict(dense_0=nnx.Linear(D_IN, WIDTH, rngs=rngs))
        self.head = NNXAlraoHead(WIDTH, K, N, rngs=rngs)

    def features(self, x):
        return jax.nn.relu(self.body["dense_0"](x))

    def __call__(self, x):
        return self.head(self.features(x))


def _batches():
    rng = np.random.default_rng(0)
    return [
        {
            "x": rng.normal(size=(16, D_IN)).astype(np.float32),
            "y": rng.integers(0, K, size=16).astype(np.int32),
        }
        for _ in range(STEPS)
    ]


def _tx():
    # Momentum: a copy dropped mid-run still has a velocity, which the step must not apply.
    return alrao_sgd(jax.random.key(1), LR_MIN, LR_MAX, N, momentum=0.9)


def _with_nan(copies):
    """The last copy's parameters with a NaN planted (it diverged): dropped from then on."""
    return {**copies, "bias": jnp.asarray(copies["bias"]).at[-1, 0].set(jnp.nan)}


def _linen_run():
    model = models.make_model("mlp", widths=(WIDTH,), head=AlraoHead(num_outputs=K, num_copies=N))
    state = create_train_state(model, _tx(), jax.random.key(0), sample_input=jnp.zeros((1, D_IN)))
    initial = state.params
    step = jax.jit(make_alrao_train_step(model, _tx()))
    metrics = []
    for i, batch in enumerate(_batches()):
        if i == PLANT:
            head = {"copies": _with_nan(state.params["head"]["copies"])}
            state = state.replace(params={**state.params, "head": head})
        state, m = step(state, batch)
        metrics.append(m)
    return initial, state, posterior_of(state, model), metrics


def _linen_run_initial():
    model = models.make_model("mlp", widths=(WIDTH,), head=AlraoHead(num_outputs=K, num_copies=N))
    state = create_train_state(model, _tx(), jax.random.key(0), sample_input=jnp.zeros((1, D_IN)))
    return state.params


def _nnx_model(linen_params):
    model = _NNXMLP(nnx.Rngs(3))
    body = linen_params["body"]["dense_0"]
    model.body["dense_0"].kernel.set_value(body["kernel"])
    model.body["dense_0"].bias.set_value(body["bias"])
    model.head.set_head_params(linen_params["head"])
    return model


@pytest.fixture(scope="module")
def runs():
    initial, state, linen_posterior, linen_metrics = _linen_run()
    model = _nnx_model(initial)
    optimizer = nnx.Optimizer(model, _tx(), wrt=nnx.Param)
    step = nnx.jit(make_nnx_alrao_train_step())
    nnx_metrics, planted = [], None
    for i, batch in enumerate(_batches()):
        if i == PLANT:
            model.head.set_head_params({"copies": _with_nan(model.head.head_params()["copies"])})
            planted = jax.tree.map(np.asarray, model.head.head_params())
        nnx_metrics.append(step(model, optimizer, batch))
    return state, linen_posterior, linen_metrics, model, nnx_metrics, planted


def test_nnx_step_matches_linen_step(runs):
    state, linen_posterior, linen_metrics, model, nnx_metrics, _ = runs
    for linen, nnx_m in zip(linen_metrics, nnx_metrics, strict=True):
        assert set(linen) == set(nnx_m)
        for name in linen:
            np.testing.assert_allclose(
                np.asarray(nnx_m[name], np.float64),
                np.asarray(linen[name], np.float64),
                rtol=1e-5,
                atol=1e-6,
                err_msg=name,
            )
    posterior = jnp.exp(model.head.log_posterior())
    np.testing.assert_allclose(posterior, linen_posterior, rtol=1e-5, atol=1e-7)
    # A small head: the Linen step differentiates the copies' outputs, the NNX step takes the fused
    # objective's own gradient: the same math in another float order (values of order 1e-2 here).
    head = state.params["head"]["copies"]
    close = dict(rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(model.head.copies.kernel.get_value(), head["kernel"], **close)
    np.testing.assert_allclose(model.head.copies.bias.get_value(), head["bias"], **close)
    body = state.params["body"]["dense_0"]
    np.testing.assert_allclose(model.body["dense_0"].kernel.get_value(), body["kernel"], **close)
    # The trained heads predict alike (the mixture over the finite copies, the same posterior).
    linen_model = models.make_model(
        "mlp", widths=(WIDTH,), head=AlraoHead(num_outputs=K, num_copies=N)
    )
    x = _batches()[0]["x"]
    linen_out = linen_model.apply({"params": state.params, **state.model_state}, x)
    np.testing.assert_allclose(model(x), linen_out, rtol=1e-5, atol=1e-6)


def test_nnx_chunked_copies_match_unchunked(runs):
    # The first steps again with the copies evaluated in chunks of 3 (a partial last chunk of N = 4).
    *_, unchunked_metrics, _ = runs
    model = _nnx_model(_linen_run_initial())
    model.head.copy_chunk_size = 3
    optimizer = nnx.Optimizer(model, _tx(), wrt=nnx.Param)
    step = nnx.jit(make_nnx_alrao_train_step())
    for batch, expected in zip(_batches()[:2], unchunked_metrics, strict=False):
        metrics = step(model, optimizer, batch)
        jax.tree.map(
            lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), metrics, expected
        )


def test_nnx_dropped_copy_is_frozen(runs):
    _, _, _, model, nnx_metrics, planted = runs
    assert [int(m["num_dropped"]) for m in nnx_metrics] == [0] * PLANT + [1] * (STEPS - PLANT)
    assert all(float(m["posterior"][-1]) == 0.0 for m in nnx_metrics[PLANT:])
    assert all(float(m["posterior"][-1]) > 0.0 for m in nnx_metrics[:PLANT])
    copies = model.head.copies
    # The dropped copy never moved after the drop, though its momentum was not zero; the others
    # trained on and stayed finite.
    np.testing.assert_array_equal(copies.kernel.get_value()[-1], planted["copies"]["kernel"][-1])
    np.testing.assert_array_equal(copies.bias.get_value()[-1], planted["copies"]["bias"][-1])
    assert np.all(np.isfinite(copies.kernel.get_value()[:-1]))
    assert not np.allclose(copies.kernel.get_value()[0], planted["copies"]["kernel"][0])


def test_plain_loss_on_nnx_head_raises():
    model = _NNXMLP(nnx.Rngs(0))
    optimizer = nnx.Optimizer(model, optax.sgd(0.1), wrt=nnx.Param)
    batch = _batches()[0]

    def loss_fn(model):
        logits = model(batch["x"])
        return optax.softmax_cross_entropy_with_integer_labels(logits, batch["y"]).mean()

    @nnx.jit
    def plain_step(model, optimizer):
        _, grads = nnx.value_and_grad(loss_fn)(model)
        optimizer.update(model, grads)

    # Raised while tracing (nothing compiles).
    with pytest.raises(AlraoTrainingError, match="make_nnx_alrao_train_step"):
        plain_step(model, optimizer)
    # Inference (no gradient) is fine, and a gradient on purpose is allowed.
    assert nnx.eval_shape(lambda m: m(batch["x"]), model).shape == (16, K)
    nnx.eval_shape(
        nnx.grad(lambda m: m.head(m.features(batch["x"]), allow_gradient=True).sum()), model
    )
    with mixture_gradient_allowed():
        nnx.eval_shape(nnx.grad(lambda m: m(batch["x"]).sum()), model)


def test_plain_loss_on_bridged_linen_head_raises():
    head = nnx.bridge.ToNNX(AlraoHead(num_outputs=K, num_copies=N), rngs=nnx.Rngs(0))
    nnx.bridge.lazy_init(head, jnp.zeros((1, WIDTH)))
    features = jnp.ones((2, WIDTH))

    with pytest.raises(AlraoTrainingError, match="make_alrao_train_step"):
        nnx.jit(nnx.grad(lambda h: h(features).sum()))(head)
    assert nnx.eval_shape(lambda h: h(features), head).shape == (2, K)


def test_plain_linen_train_step_on_alrao_model_raises():
    from randlr_jax.training import make_train_step

    model = models.make_model("mlp", widths=(WIDTH,), head=AlraoHead(num_outputs=K, num_copies=N))
    tx = optax.sgd(0.1)
    state = create_train_state(model, tx, jax.random.key(0), sample_input=jnp.zeros((1, D_IN)))
    with pytest.raises(AlraoTrainingError, match="make_alrao_train_step"):
        jax.jit(make_train_step(model, tx))(state, _batches()[0])


def test_export_predicts_with_the_best_copy(runs):
    _, _, _, model, _, _ = runs
    exported = export_nnx_single_classifier(model)
    assert isinstance(exported.head, nnx.Linear)
    assert isinstance(model.head, NNXAlraoHead)  # the model itself is unchanged
    best = int(jnp.argmax(model.head.posterior()))
    x = _batches()[0]["x"]
    features = model.features(x)
    expected = model.head.copy_outputs(features)[best]
    np.testing.assert_allclose(exported.head(exported.features(x)), expected, rtol=1e-6)


def test_bad_head_path_is_named():
    model = _NNXMLP(nnx.Rngs(0))
    optimizer = nnx.Optimizer(model, optax.sgd(0.1), wrt=nnx.Param)
    for head_path in ("classifier", ("body",), lambda path: False):
        with pytest.raises(ValueError, match=r"exactly one NNXAlraoHead.*\[\('head',\)\]"):
            make_nnx_alrao_train_step(head_path=head_path)(model, optimizer, _batches()[0])
    with pytest.raises(ValueError, match="head_path"):
        make_nnx_alrao_train_step(head_path=())
    with pytest.raises(ValueError, match="task='regression' differs"):
        make_nnx_alrao_train_step(task="regression")(model, optimizer, _batches()[0])
