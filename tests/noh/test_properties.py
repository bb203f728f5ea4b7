"""Properties of the hypergradient optimizers and NOH's gradient preprocessing (hypothesis).

* SGD-HD and Adam-HD with a hypergradient rate of zero are SGD and Adam, step for step.
* SGD-HD's rate follows its closed form ``alpha_K = alpha_0 + beta sum_{t=2..K} <g_t, g_{t-1}>`` and its
  updates are ``-alpha_t g_t`` (Baydin et al. 2018, Algorithm 2), checked in float64.
* The preprocessing ``(log|g| / c, sign g)`` / ``(-1, e^c g)`` loses nothing: ``second * exp(c * first)``
  gives ``g`` back in both regimes, with ``first >= -1`` and ``|second| <= 1``.

Gradient sequences have a fixed shape and the hyperparameters are traced arguments, so each function is
compiled once for all examples.
"""

from __future__ import annotations

import functools
import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from randlr_jax.noh import adam_hd, preprocess_gradients, sgd_hd

SETTINGS = settings(max_examples=30, deadline=None, database=None)
NUM_STEPS = 4
SHAPES = {"a": (3,), "b": (2, 2)}
SIZE = sum(math.prod(shape) for shape in SHAPES.values())

_gradient_sequence = hnp.arrays(
    np.float32,
    (NUM_STEPS, SIZE),
    elements=st.floats(-10.0, 10.0, width=32, allow_subnormal=False),
)
_learning_rate = st.floats(1e-4, 1.0)


def _tree(flat):
    tree, start = {}, 0
    for name, shape in SHAPES.items():
        size = math.prod(shape)
        tree[name] = flat[..., start : start + size].reshape(flat.shape[:-1] + shape)
        start += size
    return tree


def _run(tx: optax.GradientTransformation, gradients: jax.Array):
    """The updates of ``tx`` for a ``(K, SIZE)`` gradient sequence, and its final state."""
    params = _tree(jnp.zeros(SIZE, jnp.float32))

    def step(state, flat_gradient):
        updates, state = tx.update(_tree(flat_gradient), state, params)
        return state, updates

    state, updates = jax.lax.scan(step, tx.init(params), gradients)
    return updates, state


@jax.jit
@chex.assert_max_traces(n=1)  # compiled once: only the values vary
def _sgd_hd_and_sgd(learning_rate, gradients):
    return _run(sgd_hd(learning_rate, 0.0), gradients)[0], _run(
        optax.sgd(learning_rate), gradients
    )[0]


@jax.jit
@chex.assert_max_traces(n=1)  # compiled once: only the values vary
def _adam_hd_and_adam(learning_rate, gradients):
    hypergradient, _ = _run(adam_hd(learning_rate, 0.0), gradients)
    return hypergradient, _run(optax.adam(learning_rate), gradients)[0]


@jax.jit
@chex.assert_max_traces(n=1)  # compiled once: only the values vary
def _sgd_hd(learning_rate, hypergradient_lr, gradients):
    updates, state = _run(sgd_hd(learning_rate, hypergradient_lr), gradients)
    return updates, state.learning_rate


@SETTINGS
@given(learning_rate=_learning_rate, gradients=_gradient_sequence)
def test_zero_hypergradient_rate_is_plain_sgd_and_adam(learning_rate, gradients):
    hypergradient, plain = _sgd_hd_and_sgd(learning_rate, gradients)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6), hypergradient, plain)
    hypergradient, plain = _adam_hd_and_adam(learning_rate, gradients)
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7), hypergradient, plain
    )


@SETTINGS
@given(
    learning_rate=_learning_rate,
    hypergradient_lr=st.floats(0.0, 1e-2),
    gradients=_gradient_sequence,
)
def test_sgd_hd_rate_follows_its_closed_form(learning_rate, hypergradient_lr, gradients):
    updates, final_rate = _sgd_hd(learning_rate, hypergradient_lr, gradients)
    g = gradients.astype(np.float64)
    inner = np.concatenate([[0.0], np.sum(g[1:] * g[:-1], axis=1)])  # <g_t, g_{t-1}>, 0 at t = 1
    rates = np.float32(learning_rate) + np.float32(hypergradient_lr) * np.cumsum(inner)
    scale = np.float32(learning_rate) + np.float32(hypergradient_lr) * np.cumsum(np.abs(inner))
    np.testing.assert_allclose(final_rate, rates[-1], rtol=0, atol=1e-5 * scale[-1])
    flat_updates = np.concatenate(
        [np.asarray(updates[name]).reshape(NUM_STEPS, -1) for name in SHAPES], axis=1
    )
    error = np.abs(flat_updates + rates[:, None] * g)  # updates are -alpha_t g_t
    assert np.all(error <= 1e-5 * scale[:, None] * np.abs(g).max()), error


@functools.partial(jax.jit, static_argnums=1)
@chex.assert_max_traces(n=3)  # once per value of c
def _preprocess(gradients, c):
    return preprocess_gradients(gradients, c)


@SETTINGS
@given(
    c=st.sampled_from([1.0, 10.0, 40.0]),
    magnitudes=hnp.arrays(np.float64, 16, elements=st.floats(-45.0, 3.0)),
    signs=hnp.arrays(np.bool_, 16),
)
def test_gradient_preprocessing_is_bounded_and_invertible(c, magnitudes, signs):
    # Gradients spread over many orders of magnitude, on both sides of the threshold e^-c.
    gradients = np.where(signs, 1.0, -1.0) * np.exp(magnitudes)
    gradients = gradients.astype(np.float32)
    features = np.asarray(_preprocess(jnp.asarray(gradients), c), np.float64)
    first, second = features[:, 0], features[:, 1]
    assert np.all(first >= -1.0) and np.all(np.abs(second) <= 1.0)
    small = np.abs(gradients) < np.float32(math.exp(-c))
    np.testing.assert_array_equal(first[small], -1.0)
    np.testing.assert_array_equal(second[~small], np.sign(gradients[~small]))
    # Both regimes decode with one formula: sign * e^{log|g|} and (e^c g) * e^{-c}.
    decoded = second * np.exp(c * first)
    np.testing.assert_allclose(decoded, gradients, rtol=2e-5 * c, atol=0)
