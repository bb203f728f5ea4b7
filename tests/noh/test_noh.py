"""The NOH rate proposer, Adam with NOH rates, and the Andrychowicz LSTM optimizer."""

from __future__ import annotations

import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from randlr_jax.noh import _lstm_optimizer as lo
from randlr_jax.noh import _noh as noh
from randlr_jax.noh import _pretrained as pretrained

PROPOSER = noh.LSTMRateProposer(num_layers=2, hidden_size=6)


def _params():
    return {"w": jnp.ones((3, 2)), "b": jnp.zeros((2,))}


def test_preprocessing_by_hand():
    c = 10.0
    g = jnp.array([1.0, -(math.e**-2), 1e-6, -2e-5, 0.0])
    out = noh.preprocess_gradients(g, c)
    expected = [
        [0.0, 1.0],
        [-0.2, -1.0],
        [-1.0, math.exp(c) * 1e-6],
        [-1.0, -math.exp(c) * 2e-5],
        [-1.0, 0.0],
    ]
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-7)
    grad = jax.grad(lambda x: noh.preprocess_gradients(x).sum())(g)
    chex.assert_tree_all_finite(grad)


@pytest.mark.parametrize("update_every", [1, 3, 5])
def test_rates_change_only_every_s_steps(update_every):
    lstm_params = noh.init_proposer_params(PROPOSER, jax.random.key(0))
    tx = noh.noh_adam(lstm_params, proposer=PROPOSER, update_every=update_every)
    params = _params()
    state = tx.init(params)
    update = jax.jit(tx.update)
    rates = []
    for t in range(3 * update_every + 1):
        grads = jax.tree.map(
            lambda p, t=t: jax.random.normal(jax.random.key(t), p.shape) * 10.0 ** (t % 3), params
        )
        _, state = update(grads, state, params)
        rates.append(noh.flatten_tree(state.learning_rates))
    for t in range(1, len(rates)):
        changed = not np.allclose(rates[t], rates[t - 1])
        assert changed == (t % update_every == 0), t


def test_lstm_input_is_the_mean_gradient_over_s_steps():
    s = 4
    lstm_params = noh.init_proposer_params(PROPOSER, jax.random.key(1))
    tx = noh.noh_adam(lstm_params, proposer=PROPOSER, update_every=s)
    params = _params()
    state = tx.init(params)
    grads = [
        jax.tree.map(lambda p, k=k: jax.random.normal(jax.random.key(k), p.shape), params)
        for k in range(s + 1)
    ]
    for g in grads:
        _, state = tx.update(g, state, params)
    # Replay the proposer by hand: step 0 on g_0, step S on mean(g_1..g_S).
    carry = PROPOSER.initial_carry(noh.num_coordinates(params))
    _, carry = PROPOSER.apply({"params": lstm_params}, noh.flatten_tree(grads[0]), carry)
    mean = sum(noh.flatten_tree(g) for g in grads[1:]) / s
    expected, carry = PROPOSER.apply({"params": lstm_params}, mean, carry)
    np.testing.assert_allclose(noh.flatten_tree(state.learning_rates), expected, rtol=1e-5)
    chex.assert_trees_all_close(state.lstm_carry, carry, rtol=1e-5)


def test_updates_are_adam_direction_times_proposed_rates():
    lstm_params = noh.init_proposer_params(PROPOSER, jax.random.key(2))
    tx = noh.noh_adam(lstm_params, proposer=PROPOSER, update_every=2)
    adam = optax.scale_by_adam()
    params = _params()
    state, adam_state = tx.init(params), adam.init(params)
    for k in range(3):
        grads = jax.tree.map(lambda p, k=k: jax.random.normal(jax.random.key(k), p.shape), params)
        updates, state = tx.update(grads, state, params)
        direction, adam_state = adam.update(grads, adam_state, params)
        expected = jax.tree.map(lambda r, d: -r * d, state.learning_rates, direction)
        chex.assert_trees_all_close(updates, expected, rtol=1e-6)


def test_untrained_rates_near_initial_and_within_clip():
    proposer = noh.LSTMRateProposer(initial_learning_rate=1e-3)
    lstm_params = noh.init_proposer_params(proposer, jax.random.key(0))
    g = jax.random.normal(jax.random.key(1), (500,)) * jnp.logspace(-8, 2, 500)
    rates, _ = proposer.apply({"params": lstm_params}, g, proposer.initial_carry(500))
    assert rates.shape == (500,)
    assert float(jnp.min(rates)) > 1e-3 / 20 and float(jnp.max(rates)) < 1e-3 * 20
    # A huge read-out hits the clip.
    big = jax.tree.map(lambda x: x * 1e3, lstm_params)
    rates, _ = proposer.apply({"params": big}, g, proposer.initial_carry(500))
    assert float(jnp.min(rates)) >= 1e-8 * (1 - 1e-5) and float(jnp.max(rates)) <= 1.0 + 1e-5


def test_lstm_optimizer_outputs_the_lstm_updates():
    proposer = lo.LSTMUpdateProposer(num_layers=2, hidden_size=5)
    lstm_params = noh.init_proposer_params(proposer, jax.random.key(0))
    tx = lo.lstm_optimizer(lstm_params, proposer=proposer)
    params = _params()
    state = tx.init(params)
    carry = proposer.initial_carry(noh.num_coordinates(params))
    for k in range(2):
        grads = jax.tree.map(lambda p, k=k: jax.random.normal(jax.random.key(k), p.shape), params)
        updates, state = tx.update(grads, state, params)
        expected, carry = proposer.apply({"params": lstm_params}, noh.flatten_tree(grads), carry)
        np.testing.assert_allclose(noh.flatten_tree(updates), expected, rtol=1e-6)


@pytest.mark.parametrize("update_every", [0, -2, 2.5, True, None])
def test_non_positive_s_raises(update_every):
    lstm_params = noh.init_proposer_params(PROPOSER, jax.random.key(0))
    with pytest.raises(ValueError, match="update_every"):
        noh.noh_adam(lstm_params, proposer=PROPOSER, update_every=update_every)


def test_mismatched_lstm_params_raise():
    other = noh.init_proposer_params(noh.LSTMRateProposer(hidden_size=7), jax.random.key(0))
    with pytest.raises(ValueError, match="lstm_params do not match"):
        noh.noh_adam(other, proposer=PROPOSER)
    dmopt = noh.init_proposer_params(lo.LSTMUpdateProposer(), jax.random.key(0))
    with pytest.raises(ValueError, match="lstm_params do not match"):
        noh.noh_adam(dmopt)  # default 3-layer proposer, 2-layer parameters
    with pytest.raises(ValueError, match="lstm_params do not match"):
        lo.lstm_optimizer(noh.init_proposer_params(PROPOSER, jax.random.key(0)))


def test_bad_proposer_fields_raise():
    with pytest.raises(ValueError, match="num_layers"):
        noh.LSTMRateProposer(num_layers=0)
    with pytest.raises(ValueError, match="initial_learning_rate"):
        noh.LSTMRateProposer(initial_learning_rate=10.0)


def test_shipped_optimizers_load_and_train():
    names = pretrained.available_pretrained()
    assert {"noh_mnist1d", "dmopt_mnist1d"} <= set(names)
    for name in names:
        loaded = pretrained.load_pretrained(name)
        tx = pretrained.pretrained_optimizer(name)
        params = _params()
        state = tx.init(params)
        updates, _ = jax.jit(tx.update)(jax.tree.map(jnp.ones_like, params), state, params)
        chex.assert_tree_all_finite(updates)
        assert loaded.config["kind"] in ("noh", "dmopt")
    with pytest.raises(ValueError, match="name must be one of"):
        pretrained.load_pretrained("nope")
