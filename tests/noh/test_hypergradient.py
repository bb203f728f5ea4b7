"""SGD-HD and Adam-HD (randlr_jax.noh)."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from randlr_jax.noh import _hypergradient as hd


def _loss(w):
    """A non-quadratic loss over a small tree (so the hypergradient is not trivially linear)."""
    return jnp.sum(jnp.log1p(jnp.exp(w["a"] @ w["b"]))) + 0.5 * jnp.sum(w["b"] ** 2)


def _params(key):
    k1, k2 = jax.random.split(key)
    return {"a": jax.random.normal(k1, (3, 4)), "b": jax.random.normal(k2, (4, 2))}


@pytest.mark.parametrize("seed", range(4))
def test_sgd_hypergradient_matches_jax_grad_through_the_step(seed):
    params = _params(jax.random.key(seed))
    alpha, beta = 0.05, 0.01
    g_prev = jax.grad(_loss)(params)

    # d/d alpha of l(w - alpha g_prev) by jax.grad through the SGD step ...
    def after_step(a):
        return _loss(jax.tree.map(lambda w, g: w - a * g, params, g_prev))

    hypergradient = jax.grad(after_step)(alpha)
    # ... equals the analytic -<g_t, g_{t-1}> ...
    params_1 = jax.tree.map(lambda w, g: w - alpha * g, params, g_prev)
    g_t = jax.grad(_loss)(params_1)
    analytic = -sum(
        jnp.vdot(a, b) for a, b in zip(jax.tree.leaves(g_t), jax.tree.leaves(g_prev), strict=True)
    )
    np.testing.assert_allclose(hypergradient, analytic, rtol=1e-5)
    # ... and SGD-HD descends on it: alpha_2 = alpha_1 - beta * hypergradient.
    tx = hd.sgd_hd(alpha, beta)
    state = tx.init(params)
    updates, state = tx.update(g_prev, state, params)
    assert float(state.learning_rate) == pytest.approx(alpha)  # no previous direction at step 1
    chex.assert_trees_all_close(optax.apply_updates(params, updates), params_1, rtol=1e-6)
    _, state = tx.update(g_t, state, params_1)
    np.testing.assert_allclose(state.learning_rate, alpha - beta * hypergradient, rtol=1e-5)


def test_adam_hd_two_steps_by_hand():
    alpha, beta, b1, b2, eps = 0.1, 0.5, 0.9, 0.999, 1e-8
    g1, g2 = np.array([2.0, -1.0]), np.array([0.5, -3.0])
    # Step 1: m = 0.1 g1, v = 0.001 g1^2; bias-corrected m_hat = g1, v_hat = g1^2, u1 = g1/(|g1|+eps).
    u1 = g1 / (np.abs(g1) + eps)
    # Step 2: alpha_2 = alpha + beta <g2, u1>.
    m = 0.9 * 0.1 * g1 + 0.1 * g2
    v = 0.999 * 0.001 * g1**2 + 0.001 * g2**2
    u2 = (m / (1 - 0.9**2)) / (np.sqrt(v / (1 - 0.999**2)) + eps)
    alpha_2 = alpha + beta * np.dot(g2, u1)  # 0.1 + 0.5 * (0.5 + 3) = 1.85
    assert alpha_2 == pytest.approx(1.85)
    tx = hd.adam_hd(alpha, beta, b1=b1, b2=b2, eps=eps)
    params = jnp.zeros(2)
    state = tx.init(params)
    first, state = tx.update(jnp.asarray(g1), state, params)
    np.testing.assert_allclose(first, -alpha * u1, rtol=1e-4)  # float32 bias correction
    second, state = tx.update(jnp.asarray(g2), state, params)
    np.testing.assert_allclose(state.learning_rate, alpha_2, rtol=1e-4)
    np.testing.assert_allclose(second, -alpha_2 * u2, rtol=1e-4)
    assert int(state.count) == 2


@pytest.mark.parametrize("seed", range(3))
def test_zero_hypergradient_rate_is_adam(seed):
    params = _params(jax.random.key(seed))
    tx, ref = hd.adam_hd(3e-3, 0.0), optax.adam(3e-3)
    state, ref_state = tx.init(params), ref.init(params)
    for _ in range(3):
        grads = jax.grad(_loss)(params)
        updates, state = tx.update(grads, state, params)
        expected, ref_state = ref.update(grads, ref_state, params)
        chex.assert_trees_all_close(updates, expected, rtol=1e-5, atol=1e-8)
        params = optax.apply_updates(params, updates)


def test_rate_readable_from_a_chain_and_grows_when_steps_agree():
    tx = optax.chain(optax.clip_by_global_norm(10.0), hd.sgd_hd(0.01, 0.1))
    params = jnp.ones(3)
    state = tx.init(params)
    for _ in range(3):  # constant gradient: successive steps agree, the rate must grow
        _, state = tx.update(jnp.ones(3), state, params)
    rate = optax.tree_utils.tree_get(state, "learning_rate")
    assert float(rate) == pytest.approx(0.01 + 2 * 0.1 * 3.0)


@pytest.mark.parametrize(
    "kwargs, name",
    [
        (dict(learning_rate=0.0), "learning_rate"),
        (dict(learning_rate=-1e-3), "learning_rate"),
        (dict(learning_rate=float("nan")), "learning_rate"),
        (dict(hypergradient_lr=-1e-7), "hypergradient_lr"),
        (dict(hypergradient_lr=True), "hypergradient_lr"),
    ],
)
@pytest.mark.parametrize("factory", [hd.sgd_hd, hd.adam_hd])
def test_bad_arguments_raise(factory, kwargs, name):
    with pytest.raises(ValueError, match=name):
        factory(**kwargs)
