"""Smith's schedules stay inside their bounds at every step, past the end included (hypothesis).

Cyclical rates lie in ``[base_lr, max_lr]`` and their momenta in ``[base_momentum, max_momentum]`` for
every mode; 1cycle's rate lies in ``[max_lr / div_factor / final_div_factor, max_lr]`` (three phases: the
last phase also below the initial rate), its momentum in ``[base_momentum, max_momentum]``, and from step
``total_steps - 1`` on both hold their final values (the rate's floor, ``max_momentum``).

Every schedule is evaluated on one fixed-shape array of steps (landmarks plus random steps), so the
operations compile once for all examples; the hyperparameters are Python numbers and only change values.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from randlr_jax.cyclical import (
    cyclic_momentum_schedule,
    cyclic_schedule,
    one_cycle_momentum_schedule,
    one_cycle_schedule,
)

SETTINGS = settings(max_examples=30, deadline=None, database=None)


def _floats(low: float, high: float) -> st.SearchStrategy[float]:
    """Hyperparameters representable in float32 (the schedules' arithmetic) and not subnormal."""
    low, high = float(np.float32(low)), float(np.float32(high))
    return st.floats(low, high, width=32, allow_subnormal=False)


NUM_RANDOM_STEPS = 48
RTOL = 1e-5  # float32 arithmetic on the bounds

# Fractions of a period (a cycle, or 1cycle's total_steps) at which to evaluate, besides random steps.
_LANDMARKS = np.array([0.0, 0.25, 0.5, 1.0, 1.5, 2.0, 7.0, 1000.0])
_fractions = st.lists(_floats(0.0, 4.0), min_size=NUM_RANDOM_STEPS, max_size=NUM_RANDOM_STEPS).map(
    np.asarray
)


def _steps(period: float, fractions: np.ndarray) -> np.ndarray:
    steps = np.concatenate([_LANDMARKS, fractions]) * period
    return np.minimum(np.round(steps), 2**30).astype(np.int32)


def _assert_within(values, low, high, what):
    values = np.asarray(values, np.float64)
    assert np.all(np.isfinite(values)), what
    tolerance = RTOL * max(abs(low), abs(high), 1e-30)
    assert values.min() >= low - tolerance, (what, values.min(), low)
    assert values.max() <= high + tolerance, (what, values.max(), high)


_cyclic = st.fixed_dictionaries(
    {
        "step_size_up": st.integers(1, 2000),
        "step_size_down": st.one_of(st.none(), st.integers(0, 2000)),
        "gamma": _floats(0.99, 1.0),
    }
)


@pytest.mark.parametrize("mode", ["triangular", "triangular2", "exp_range"])
@SETTINGS
@given(
    bounds=st.tuples(_floats(0.0, 1.0), _floats(1e-6, 10.0)),
    momenta=st.tuples(_floats(0.0, 0.99), _floats(0.0, 0.99)),
    cyclic=_cyclic,
    fractions=_fractions,
)
def test_cyclic_rate_and_momentum_stay_within_their_bounds(
    mode, bounds, momenta, cyclic, fractions
):
    base_lr, max_lr = bounds[0] * bounds[1], bounds[1]  # 0 <= base_lr <= max_lr
    base_momentum, max_momentum = sorted(momenta)
    period = cyclic["step_size_up"] + (
        cyclic["step_size_up"] if cyclic["step_size_down"] is None else cyclic["step_size_down"]
    )
    steps = _steps(period, fractions)
    rate = cyclic_schedule(base_lr, max_lr, mode=mode, **cyclic)
    momentum = cyclic_momentum_schedule(base_momentum, max_momentum, mode=mode, **cyclic)
    _assert_within(rate(steps), base_lr, max_lr, "rate")
    _assert_within(momentum(steps), base_momentum, max_momentum, "momentum")
    # Every cycle starts at the base rate and the maximal momentum.
    starts = np.arange(4, dtype=np.int32) * period
    np.testing.assert_allclose(rate(starts), base_lr, rtol=RTOL, atol=1e-12)
    np.testing.assert_allclose(momentum(starts), max_momentum, rtol=RTOL)


_one_cycle = st.fixed_dictionaries(
    {
        "total_steps": st.integers(10, 5000),
        "pct_start": _floats(0.15, 0.45),
        "anneal_strategy": st.sampled_from(["cos", "linear"]),
        "three_phase": st.booleans(),
    }
)


@SETTINGS
@given(
    one_cycle=_one_cycle,
    max_lr=_floats(1e-6, 10.0),
    div_factor=_floats(1.0, 100.0),
    final_div_factor=_floats(1.0, 1e4),
    momenta=st.tuples(_floats(0.0, 0.99), _floats(0.0, 0.99)),
    fractions=_fractions,
)
def test_one_cycle_rate_and_momentum_stay_within_their_bounds_and_hold_their_floor(
    one_cycle, max_lr, div_factor, final_div_factor, momenta, fractions
):
    total_steps = one_cycle["total_steps"]
    initial = max_lr / div_factor
    floor = initial / final_div_factor
    base_momentum, max_momentum = sorted(momenta)
    rate = one_cycle_schedule(
        max_lr=max_lr, div_factor=div_factor, final_div_factor=final_div_factor, **one_cycle
    )
    momentum = one_cycle_momentum_schedule(
        base_momentum=base_momentum, max_momentum=max_momentum, **one_cycle
    )
    steps = _steps(total_steps, fractions)
    rates = np.asarray(rate(steps), np.float64)
    _assert_within(rates, floor, max_lr, "rate")
    _assert_within(momentum(steps), base_momentum, max_momentum, "momentum")
    final = steps >= total_steps - 1
    assert final.any()
    np.testing.assert_allclose(rates[final], floor, rtol=RTOL)
    np.testing.assert_allclose(np.asarray(momentum(steps))[final], max_momentum, rtol=RTOL)
    if one_cycle["three_phase"]:
        # The last phase anneals from the initial rate down to the floor: never above the initial rate.
        last_phase = steps >= 2 * one_cycle["pct_start"] * total_steps - 2
        _assert_within(rates[last_phase], floor, initial, "rate in the last phase")
