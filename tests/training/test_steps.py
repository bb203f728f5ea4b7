"""The step skeleton's hooks, each against a hand-computed reference (SGD with a known gradient)."""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from randlr_jax.training import TrainState, apply_step, make_eval_step, make_train_step

D, K, B = 3, 4, 5
LR = 0.1
W0 = np.arange(D, dtype=np.float32) - 1.0  # [-1, 0, 1]
TARGET = np.array([2.0, -1.0, 0.5], np.float32)


class Linear(nn.Module):
    """``x @ w``: logits of a softmax classifier without bias."""

    @nn.compact
    def __call__(self, x, train=False):
        del train
        return x @ self.param("w", nn.initializers.normal(1.0), (D, K))


class ToyLM(nn.Module):
    """Logits ``w[tokens] + carry``; the carry counts the windows seen."""

    @nn.compact
    def __call__(self, tokens, carry, train=False):
        del train
        w = self.param("w", nn.initializers.normal(1.0), (K, K))
        return w[tokens] + carry[:, None, None], carry + 1.0


def _state(params, tx, *, model_state=None, carry=None) -> TrainState:
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        model_state={} if model_state is None else model_state,
        opt_state=tx.init(params),
        rng=jax.random.key(0),
        carry=carry,
    )


def _quadratic_loss(params, state, batch, dropout_key):
    """``0.5 |w - target|^2``: gradient ``w - target``, whatever the batch."""
    del state, batch, dropout_key
    return 0.5 * jnp.sum((params["w"] - TARGET) ** 2), {}


BATCH = {"x": np.zeros((B, D), np.float32), "y": np.zeros((B,), np.int32)}
GRAD = W0 - TARGET  # the quadratic's gradient at W0


def _recording_tx():
    """SGD at ``LR`` that keeps the ``value`` and ``scale`` it was given (and scales by ``scale``)."""

    def init(params):
        return {"value": jnp.zeros(()), "scale": jnp.zeros(())}

    def update(grads, state, params=None, *, value, scale=1.0):
        del params
        updates = jax.tree.map(lambda g: -LR * scale * g, grads)
        return updates, {"value": value, "scale": jnp.asarray(scale, jnp.float32)}

    return optax.GradientTransformationExtraArgs(init, update)


def _softmax(z):
    z = z - z.max(-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(-1, keepdims=True)


def test_default_step_is_sgd_on_the_softmax_cross_entropy():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(B, D)).astype(np.float32)
    y = rng.integers(0, K, B).astype(np.int32)
    w = rng.normal(size=(D, K)).astype(np.float32)
    state = _state({"w": jnp.asarray(w)}, optax.sgd(LR))
    new_state, metrics = jax.jit(make_train_step(Linear(), optax.sgd(LR)))(state, {"x": x, "y": y})
    x64, w64 = x.astype(np.float64), w.astype(np.float64)
    p = _softmax(x64 @ w64)
    onehot = np.eye(K)[y]
    expected_loss = -np.mean(np.log(p[np.arange(B), y]))
    expected_w = w64 - LR * x64.T @ (p - onehot) / B
    np.testing.assert_allclose(metrics["loss"], expected_loss, rtol=1e-5)
    np.testing.assert_allclose(metrics["accuracy"], np.mean(p.argmax(-1) == y), rtol=1e-6)
    np.testing.assert_allclose(new_state.params["w"], expected_w, rtol=1e-5, atol=1e-6)
    assert int(new_state.step) == 1 and set(metrics) == {"loss", "accuracy"}


def test_loss_fn_replaces_the_forward_pass_and_loss():
    state = _state({"w": jnp.asarray(W0)}, optax.sgd(LR))
    step = make_train_step(Linear(), optax.sgd(LR), loss_fn=_quadratic_loss)
    new_state, metrics = jax.jit(step)(state, BATCH)
    np.testing.assert_allclose(new_state.params["w"], W0 - LR * GRAD, rtol=1e-6)
    np.testing.assert_allclose(metrics["loss"], 0.5 * np.sum(GRAD**2), rtol=1e-6)
    assert set(metrics) == {"loss"}


def test_loss_fn_aux_sets_reported_loss_model_state_carry_and_metrics():
    tx = _recording_tx()
    carry = jnp.array([1.0, 2.0])
    state = _state({"w": jnp.asarray(W0)}, tx, model_state={"count": jnp.zeros(())}, carry=carry)

    def loss_fn(params, state, batch, dropout_key):
        objective, _ = _quadratic_loss(params, state, batch, dropout_key)
        aux = {
            "loss": 7.0 + 0.0 * objective,  # reported and passed as ``value=``, not differentiated
            "model_state": {"count": state.model_state["count"] + 1.0},
            "carry": state.carry * 3.0,
            "metrics": {"distance": jnp.sqrt(2.0 * objective)},
        }
        return objective, aux

    new_state, metrics = jax.jit(make_train_step(None, tx, loss_fn=loss_fn))(state, BATCH)
    np.testing.assert_allclose(new_state.params["w"], W0 - LR * GRAD, rtol=1e-6)
    np.testing.assert_allclose(metrics["loss"], 7.0)
    np.testing.assert_allclose(new_state.opt_state["value"], 7.0)
    np.testing.assert_allclose(metrics["distance"], np.linalg.norm(GRAD), rtol=1e-6)
    np.testing.assert_allclose(new_state.model_state["count"], 1.0)
    np.testing.assert_allclose(new_state.carry, [3.0, 6.0])


def test_loss_fn_language_model_reports_bits_per_char():
    step = make_train_step(None, optax.sgd(LR), task="language_model", loss_fn=_quadratic_loss)
    _, metrics = jax.jit(step)(_state({"w": jnp.asarray(W0)}, optax.sgd(LR)), BATCH)
    np.testing.assert_allclose(
        metrics["bits_per_char"], 0.5 * np.sum(GRAD**2) / math.log(2.0), rtol=1e-6
    )


def test_extra_args_fn_reaches_the_optimizer():
    tx = _recording_tx()
    step = make_train_step(
        None, tx, loss_fn=_quadratic_loss, extra_args_fn=lambda state, batch, loss: {"scale": 2.0}
    )
    new_state, metrics = jax.jit(step)(_state({"w": jnp.asarray(W0)}, tx), BATCH)
    np.testing.assert_allclose(new_state.params["w"], W0 - 2.0 * LR * GRAD, rtol=1e-6)
    np.testing.assert_allclose(new_state.opt_state["value"], metrics["loss"])
    np.testing.assert_allclose(new_state.opt_state["scale"], 2.0)


def test_transform_grads_changes_what_the_optimizer_sees():
    # Momentum SGD: the trace holds the transformed gradient, the step follows it.
    tx = optax.sgd(LR, momentum=0.9)
    mask = np.array([1.0, 0.0, 2.0], np.float32)

    def transform_grads(grads, state, aux):
        return {"w": grads["w"] * aux["mask"]}

    def loss_fn(params, state, batch, dropout_key):
        objective, _ = _quadratic_loss(params, state, batch, dropout_key)
        return objective, {"mask": jnp.asarray(mask)}

    step = make_train_step(None, tx, loss_fn=loss_fn, transform_grads=transform_grads)
    state = _state({"w": jnp.asarray(W0)}, tx)
    for _ in range(2):
        state, _ = jax.jit(step)(state, BATCH)
    # Hand-computed: g_t = mask * (w_t - target), m_t = 0.9 m_{t-1} + g_t, w_{t+1} = w_t - LR m_t.
    w, m = W0.astype(np.float64), np.zeros(D)
    for _ in range(2):
        m = 0.9 * m + mask * (w - TARGET)
        w = w - LR * m
    np.testing.assert_allclose(state.params["w"], w, rtol=1e-6)
    np.testing.assert_allclose(state.opt_state[0].trace["w"], m, rtol=1e-6)


def test_transform_updates_freezes_parameters_but_not_the_optimizer_state():
    tx = optax.sgd(LR, momentum=0.9)
    frozen = np.array([True, False, False])

    def transform_updates(updates, state, aux):
        return {"w": jnp.where(frozen, 0.0, updates["w"])}

    step = make_train_step(None, tx, loss_fn=_quadratic_loss, transform_updates=transform_updates)
    state = _state({"w": jnp.asarray(W0)}, tx)
    for _ in range(2):
        state, _ = jax.jit(step)(state, BATCH)
    w, m = W0.astype(np.float64), np.zeros(D)
    for _ in range(2):
        m = 0.9 * m + (w - TARGET)  # the optimizer sees every gradient
        w = w - LR * np.where(frozen, 0.0, m)
    np.testing.assert_allclose(state.params["w"], w, rtol=1e-6)
    assert state.params["w"][0] == W0[0]
    np.testing.assert_allclose(state.opt_state[0].trace["w"], m, rtol=1e-6)


def test_after_update_sees_the_updated_state_and_replaces_it():
    tx = optax.sgd(LR)
    seen = {}

    def after_update(state, new_state, aux):
        seen["before"], seen["after"] = state.params["w"], new_state.params["w"]
        # A posterior-like statistic of the step in the model state, and a reset of the parameters.
        posterior = {"last_loss": aux["objective"]}
        return new_state.replace(params={"w": new_state.params["w"] * 0.5}, model_state=posterior)

    def loss_fn(params, state, batch, dropout_key):
        objective, _ = _quadratic_loss(params, state, batch, dropout_key)
        return objective, {"objective": objective}

    step = make_train_step(None, tx, loss_fn=loss_fn, after_update=after_update)
    new_state, metrics = step(
        _state({"w": jnp.asarray(W0)}, tx), BATCH
    )  # eager: ``seen`` holds values
    np.testing.assert_allclose(seen["before"], W0)
    np.testing.assert_allclose(seen["after"], W0 - LR * GRAD, rtol=1e-6)
    np.testing.assert_allclose(new_state.params["w"], 0.5 * (W0 - LR * GRAD), rtol=1e-6)
    np.testing.assert_allclose(new_state.model_state["last_loss"], metrics["loss"])
    assert int(new_state.step) == 1


def test_extra_metrics_are_merged_and_read_the_new_state():
    tx = optax.sgd(LR)

    def extra_metrics(state, new_state, batch, aux):
        return {
            "w_sum": jnp.sum(new_state.params["w"]),
            "moved": jnp.sum(jnp.abs(new_state.params["w"] - state.params["w"])),
            "batch_size": jnp.asarray(batch["x"].shape[0]),
            "step": new_state.step,
        }

    step = make_train_step(None, tx, loss_fn=_quadratic_loss, extra_metrics=extra_metrics)
    _, metrics = jax.jit(step)(_state({"w": jnp.asarray(W0)}, tx), BATCH)
    np.testing.assert_allclose(metrics["w_sum"], np.sum(W0 - LR * GRAD), rtol=1e-6)
    np.testing.assert_allclose(metrics["moved"], LR * np.sum(np.abs(GRAD)), rtol=1e-6)
    assert int(metrics["batch_size"]) == B and int(metrics["step"]) == 1
    np.testing.assert_allclose(metrics["loss"], 0.5 * np.sum(GRAD**2), rtol=1e-6)


def test_apply_step_is_sgd_and_differentiable_through():
    params = {"w": jnp.asarray(W0)}
    grads = {"w": jnp.asarray(GRAD)}
    tx = optax.sgd(LR, momentum=0.9)
    new, opt_state = apply_step(tx, params, tx.init(params), grads)
    np.testing.assert_allclose(new["w"], W0 - LR * GRAD, rtol=1e-6)
    np.testing.assert_allclose(opt_state[0].trace["w"], GRAD, rtol=1e-6)
    # Extra arguments and an update transform.
    rec = _recording_tx()
    new, opt_state = apply_step(
        rec, params, rec.init(params), grads, {"value": 3.0, "scale": 2.0},
        transform_updates=lambda u: {"w": u["w"] * 0.5},
    )  # fmt: skip
    np.testing.assert_allclose(new["w"], W0 - LR * GRAD, rtol=1e-6)
    np.testing.assert_allclose(opt_state["value"], 3.0)

    # d/dlr of two SGD steps on the quadratic: w2 = t + (1 - lr)^2 (w0 - t), so dw2/dlr = -2 (1 - lr) g0.
    def two_steps(lr):
        tx = optax.sgd(lr)
        p, s = params, tx.init(params)
        for _ in range(2):
            p, s = apply_step(tx, p, s, {"w": p["w"] - TARGET})
        return jnp.sum(p["w"])

    np.testing.assert_allclose(jax.grad(two_steps)(LR), np.sum(-2.0 * (1.0 - LR) * GRAD), rtol=1e-5)


def _classification_sums(w, x, y, mask):
    p = _softmax(x.astype(np.float64) @ np.asarray(w, np.float64))
    losses = -np.log(p[np.arange(len(y)), y])
    return {
        "loss_sum": np.sum(losses * mask),
        "correct": np.sum((p.argmax(-1) == y) * mask),
        "count": np.sum(mask),
    }


def test_eval_params_evaluates_the_schedule_free_average():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(B, D)).astype(np.float32)
    y = rng.integers(0, K, B).astype(np.int32)
    tx = optax.contrib.schedule_free_sgd(1.0)
    params = {"w": jnp.asarray(rng.normal(size=(D, K)), jnp.float32)}
    state = _state(params, tx)
    step = jax.jit(make_train_step(Linear(), tx))
    for _ in range(3):
        state, _ = step(state, {"x": x, "y": y})
    average = optax.contrib.schedule_free_eval_params(state.opt_state, state.params)
    assert not np.allclose(average["w"], state.params["w"])  # the check below can tell them apart
    mask = np.array([1, 1, 1, 0, 1], np.float32)
    batch = {"x": x, "y": y, "mask": mask}
    eval_step = make_eval_step(
        Linear(),
        eval_params=lambda s: optax.contrib.schedule_free_eval_params(s.opt_state, s.params),
    )
    got = jax.jit(eval_step)(state, batch)
    expected = _classification_sums(average["w"], x, y, mask)
    for key, value in expected.items():
        np.testing.assert_allclose(got[key], value, rtol=1e-5)
    plain = jax.jit(make_eval_step(Linear()))(state, batch)
    expected = _classification_sums(state.params["w"], x, y, mask)
    np.testing.assert_allclose(plain["loss_sum"], expected["loss_sum"], rtol=1e-5)


def test_eval_params_language_model_keeps_the_carry_convention():
    rng = np.random.default_rng(2)
    w = rng.normal(size=(K, K)).astype(np.float32)
    state = _state({"w": jnp.asarray(w)}, optax.sgd(LR), carry=jnp.zeros(2))
    # A hand-written averaged iterate: the mean of the current and a stored copy of the parameters.
    stored = rng.normal(size=(K, K)).astype(np.float32)
    state = state.replace(model_state={"stored": {"w": jnp.asarray(stored)}})
    average = lambda s: {"w": 0.5 * (s.params["w"] + s.model_state["stored"]["w"])}  # noqa: E731
    tokens = rng.integers(0, K, (2, 3)).astype(np.int32)
    batch = {"x": tokens, "y": np.roll(tokens, -1, axis=1)}
    eval_step = jax.jit(make_eval_step(ToyLM(), task="language_model", eval_params=average))
    carry = jnp.array([0.5, -1.0])
    sums, new_carry = eval_step(state, batch, carry)
    np.testing.assert_allclose(new_carry, [1.5, 0.0])
    logits = 0.5 * (w + stored)[tokens].astype(np.float64) + np.asarray(carry)[:, None, None]
    p = _softmax(logits)
    losses = -np.log(np.take_along_axis(p, batch["y"][..., None], -1)[..., 0])
    np.testing.assert_allclose(sums["loss_sum"], losses.sum(), rtol=1e-5)
    np.testing.assert_allclose(sums["count"], tokens.size)


def test_tasks():
    with pytest.raises(ValueError, match="task"):
        make_train_step(Linear(), optax.sgd(LR), task="regression")
    # With its own loss a step may be a regression step (no bits_per_char).
    step = make_train_step(None, optax.sgd(LR), task="regression", loss_fn=_quadratic_loss)
    _, metrics = step(_state({"w": jnp.asarray(W0)}, optax.sgd(LR)), BATCH)
    assert set(metrics) == {"loss"}
    with pytest.raises(ValueError, match="task"):
        make_train_step(None, optax.sgd(LR), task="ranking", loss_fn=_quadratic_loss)
    with pytest.raises(ValueError, match="task"):
        make_eval_step(Linear(), task="regression")
