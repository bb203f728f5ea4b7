"""Properties of Alrao's switch and learning rates over random inputs (hypothesis).

The switch posterior is a probability vector, whatever the observations (non-finite ones included), and
depends on the copies' log-likelihoods only through their differences: adding one constant to every
copy's loss at every step changes nothing. The per-feature rates lie in ``[lr_min, lr_max]`` and are
log-uniform (a Kolmogorov-Smirnov distance of ``log(rate)`` against the uniform law on
``[log lr_min, log lr_max]``, computed by hand, below the Dvoretzky-Kiefer-Wolfowitz bound for the
sample size); the copies' rates are log-spaced over the same interval.

Shapes are fixed and only values vary, so the compiled functions are compiled once for all examples.
"""

from __future__ import annotations

import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from randlr_jax.alrao import (
    copy_learning_rates,
    sample_feature_lrs,
    switch_init,
    switch_log_posterior,
    switch_update_sequence,
)

NUM_COPIES = 5
NUM_STEPS = 6
NUM_RATES = 4000  # one large draw per example for the KS statistic

SETTINGS = settings(max_examples=40, deadline=None, database=None)


# One compiled function for every example: the observations and the state's values vary, not shapes
# (a second trace would fail the test).
@jax.jit
@chex.assert_max_traces(n=1)
def _switch_sequence(state, log_likelihoods):
    return switch_update_sequence(state, log_likelihoods)


@jax.jit
@chex.assert_max_traces(n=1)
def _switch_log_posterior(state):
    return switch_log_posterior(state)


# A copy's log-likelihood: a finite value, or one of the non-finite values the switch reads as -inf.
_log_likelihood = st.one_of(
    st.floats(-200.0, 0.0, width=32),
    st.sampled_from([-math.inf, math.nan, math.inf]),
)
_observations = st.lists(
    st.lists(_log_likelihood, min_size=NUM_COPIES, max_size=NUM_COPIES),
    min_size=NUM_STEPS,
    max_size=NUM_STEPS,
).map(lambda rows: np.asarray(rows, np.float32))
_theta = st.floats(0.5, 0.99999)


def _run_switch(theta: float, log_likelihoods: np.ndarray):
    return _switch_sequence(switch_init(NUM_COPIES, theta), jnp.asarray(log_likelihoods))


@SETTINGS
@given(theta=_theta, log_likelihoods=_observations)
def test_switch_posterior_is_a_probability_vector_after_every_observation(theta, log_likelihoods):
    state, posteriors = _run_switch(theta, log_likelihoods)
    posteriors = np.asarray(posteriors, np.float64)
    assert np.all(np.isfinite(posteriors))
    assert np.all((posteriors >= 0.0) & (posteriors <= 1.0))
    np.testing.assert_allclose(posteriors.sum(axis=1), 1.0, rtol=0, atol=1e-5)
    # The state itself stays normalised: its 2N weights (both rows) sum to one.
    weights = np.exp(np.asarray(state.log_weights, np.float64))
    np.testing.assert_allclose(weights.sum(), 1.0, rtol=0, atol=1e-5)
    np.testing.assert_allclose(
        np.exp(np.asarray(_switch_log_posterior(state), np.float64)), posteriors[-1], atol=1e-6
    )


# Log-likelihoods on a grid of 2^-8 in [-64, 0] and integer shifts below 2^15: every shifted value
# needs at most 24 significant bits, so ``ell - shift`` is exact in float32 and the two runs see the
# same differences. The posteriors must then agree to float32 resolution, however large the shift:
# which holds only if the switch removes the common offset (its shift by the best copy) before adding
# the observation to its O(1) log-weights.
_grid_log_likelihood = st.one_of(
    st.integers(-64 * 256, 0).map(lambda k: k / 256.0),
    st.sampled_from([-math.inf, math.nan]),
)
_grid_observations = st.lists(
    st.lists(_grid_log_likelihood, min_size=NUM_COPIES, max_size=NUM_COPIES),
    min_size=NUM_STEPS,
    max_size=NUM_STEPS,
).map(lambda rows: np.asarray(rows, np.float32))


@SETTINGS
@given(
    theta=_theta,
    log_likelihoods=_grid_observations,
    shift=st.integers(-(2**15), 2**15),
)
def test_switch_posterior_is_invariant_to_a_common_shift_of_the_losses(
    theta, log_likelihoods, shift
):
    # ``shift`` added to every copy's loss at every step: ``ell - shift`` (non-finite entries stay so).
    shifted_log_likelihoods = log_likelihoods - np.float32(shift)
    finite = np.isfinite(log_likelihoods)
    np.testing.assert_array_equal(shifted_log_likelihoods[finite] + shift, log_likelihoods[finite])
    _, posteriors = _run_switch(theta, log_likelihoods)
    _, shifted = _run_switch(theta, shifted_log_likelihoods)
    np.testing.assert_allclose(shifted, posteriors, rtol=0, atol=1e-6)


_bounds = st.tuples(st.floats(-8.0, 1.0), st.floats(0.5, 8.0)).map(
    lambda lo_span: (10.0 ** lo_span[0], 10.0 ** (lo_span[0] + lo_span[1]))
)
_PARAMS = {
    "Dense_0": {
        "kernel": jax.ShapeDtypeStruct((2, NUM_RATES), jnp.float32),
        "bias": jax.ShapeDtypeStruct((NUM_RATES,), jnp.float32),
    }
}


def _ks_distance_to_uniform(sample: np.ndarray, low: float, high: float) -> float:
    """``sup_x |F_n(x) - (x - low) / (high - low)|`` of a sample, by hand."""
    u = np.sort((np.asarray(sample, np.float64) - low) / (high - low))
    n = u.size
    above = np.arange(1, n + 1) / n - u  # F_n just after each point minus the CDF
    below = u - np.arange(n) / n  # the CDF minus F_n just before each point
    return float(max(above.max(), below.max()))


def _dkw_threshold(n: int, false_alarm: float = 1e-6) -> float:
    """``P(D_n > eps) <= 2 exp(-2 n eps^2)`` (Dvoretzky-Kiefer-Wolfowitz, Massart's constant)."""
    return math.sqrt(math.log(2.0 / false_alarm) / (2.0 * n))


@SETTINGS
@given(bounds=_bounds, seed=st.integers(0, 2**31 - 1))
def test_feature_rates_lie_in_the_interval_and_are_log_uniform(bounds, seed):
    lr_min, lr_max = bounds
    lrs = sample_feature_lrs(jax.random.key(seed), _PARAMS, lr_min, lr_max)
    rates = np.asarray(lrs["Dense_0"]["bias"], np.float64)
    assert rates.shape == (NUM_RATES,)
    # The kernel's columns share the bias's rates (one rate per feature).
    np.testing.assert_array_equal(np.asarray(lrs["Dense_0"]["kernel"])[0], rates)
    assert rates.min() >= np.float32(lr_min) and rates.max() <= np.float32(lr_max)
    distance = _ks_distance_to_uniform(np.log(rates), math.log(lr_min), math.log(lr_max))
    assert distance < _dkw_threshold(NUM_RATES), (distance, lr_min, lr_max)


@SETTINGS
@given(lr=st.floats(1e-8, 1e2), seed=st.integers(0, 2**31 - 1))
def test_equal_bounds_give_that_rate_for_every_feature(lr, seed):
    lrs = sample_feature_lrs(jax.random.key(seed), _PARAMS, lr, lr)
    np.testing.assert_array_equal(np.asarray(lrs["Dense_0"]["bias"]), np.float32(lr))


@SETTINGS
@given(bounds=_bounds, num_copies=st.integers(1, 12))
def test_copy_rates_are_log_spaced_over_the_interval(bounds, num_copies):
    lr_min, lr_max = bounds
    rates = np.asarray(copy_learning_rates(lr_min, lr_max, num_copies), np.float64)
    assert rates.shape == (num_copies,)
    np.testing.assert_allclose(rates[0], lr_min, rtol=1e-6)
    if num_copies > 1:
        np.testing.assert_allclose(rates[-1], lr_max, rtol=1e-6)
        ratios = rates[1:] / rates[:-1]
        expected = (lr_max / lr_min) ** (1.0 / (num_copies - 1))
        np.testing.assert_allclose(ratios, expected, rtol=1e-5)
