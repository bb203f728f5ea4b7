"""Cyclical and 1cycle schedules against PyTorch's documented ``CyclicLR`` / ``OneCycleLR`` formulas.

The references below are the formulas of ``torch.optim.lr_scheduler`` written out by hand in float64
(PyTorch is not a dependency): ``CyclicLR.get_lr`` and ``OneCycleLR.get_lr`` after ``i`` calls of
``scheduler.step()``. Literal values at cycle boundaries and mid-phase are derived on paper.
"""

from __future__ import annotations

import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from randlr_jax.cyclical import _schedules as schedules

# ---------------------------------------------------------------- PyTorch formulas, by hand (float64)


def torch_cyclic(i, base, peak, up, down=None, mode="triangular", gamma=1.0, momentum=False):
    """``CyclicLR.get_lr`` at ``last_epoch = i`` (``momentum``: the cycled momentum, ``base`` and
    ``peak`` then being ``base_momentum`` and ``max_momentum``)."""
    up = float(up)
    down = up if down is None else float(down)
    total = up + down
    ratio = up / total
    cycle = math.floor(1 + i / total)
    x = 1.0 + i / total - cycle
    scale_factor = x / ratio if x <= ratio else (x - 1) / (ratio - 1)
    if mode == "triangular":
        scale = 1.0
    elif mode == "triangular2":
        scale = 1 / (2.0 ** (cycle - 1))
    else:
        scale = gamma**i
    height = (peak - base) * scale_factor * scale
    return peak - height if momentum else base + height


def _anneal(start, end, pct, strategy):
    if strategy == "cos":
        return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1)
    return (end - start) * pct + start


def torch_one_cycle(
    i,
    total,
    max_lr,
    pct_start=0.3,
    strategy="cos",
    div_factor=25.0,
    final_div_factor=1e4,
    three_phase=False,
    base_momentum=0.85,
    max_momentum=0.95,
):
    """``OneCycleLR.get_lr`` at ``last_epoch = i``: ``(lr, momentum)``."""
    initial = max_lr / div_factor
    minimum = initial / final_div_factor
    if three_phase:
        phases = [
            (float(pct_start * total) - 1, initial, max_lr, max_momentum, base_momentum),
            (float(2 * pct_start * total) - 2, max_lr, initial, base_momentum, max_momentum),
            (total - 1, initial, minimum, max_momentum, max_momentum),
        ]
    else:
        phases = [
            (float(pct_start * total) - 1, initial, max_lr, max_momentum, base_momentum),
            (total - 1, max_lr, minimum, base_momentum, max_momentum),
        ]
    start = 0.0
    for k, (end, lr0, lr1, m0, m1) in enumerate(phases):
        if i <= end or k == len(phases) - 1:
            pct = (i - start) / (end - start)
            return _anneal(lr0, lr1, pct, strategy), _anneal(m0, m1, pct, strategy)
        start = end
    raise AssertionError


def values(schedule, steps):
    return np.asarray(jax.vmap(schedule)(jnp.asarray(steps, jnp.int32)), np.float64)


# ---------------------------------------------------------------- cyclic


class TestCyclic:
    def test_triangular_boundaries_and_mid_phase(self):
        # base 0.1, max 1.0, 4 steps up, 4 down: linear 0.1 -> 1.0 -> 0.1, period 8.
        schedule = schedules.cyclic_schedule(0.1, 1.0, 4)
        expected = {0: 0.1, 1: 0.325, 2: 0.55, 4: 1.0, 6: 0.55, 8: 0.1, 12: 1.0, 15: 0.325}
        got = values(schedule, list(expected))
        np.testing.assert_allclose(got, list(expected.values()), rtol=1e-6)

    def test_triangular2_halves_the_amplitude_every_cycle(self):
        schedule = schedules.cyclic_schedule(0.1, 1.0, 4, mode="triangular2")
        peaks = values(schedule, [4, 12, 20, 28])  # cycles 1..4
        np.testing.assert_allclose(peaks, [1.0, 0.55, 0.325, 0.2125], rtol=1e-6)
        np.testing.assert_allclose(values(schedule, [8, 16, 24]), [0.1] * 3, rtol=1e-6)

    def test_exp_range_scales_by_gamma_to_the_step(self):
        schedule = schedules.cyclic_schedule(0.1, 1.0, 4, mode="exp_range", gamma=0.9)
        np.testing.assert_allclose(
            values(schedule, [2, 4, 12]),
            [0.1 + 0.45 * 0.9**2, 0.1 + 0.9 * 0.9**4, 0.1 + 0.9 * 0.9**12],
            rtol=1e-6,
        )

    def test_asymmetric_cycle(self):
        # 2 steps up, 6 down: peak at 2, back to base at 8; at 5, halfway down.
        schedule = schedules.cyclic_schedule(0.0, 1.0, 2, step_size_down=6)
        np.testing.assert_allclose(values(schedule, [0, 1, 2, 5, 8, 10]), [0, 0.5, 1, 0.5, 0, 1])

    @pytest.mark.parametrize("mode", schedules.CYCLIC_MODES)
    @pytest.mark.parametrize("seed", [0, 1, 2])
    def test_matches_pytorch_formula(self, mode, seed):
        rng = np.random.default_rng(seed)
        base = float(10 ** rng.uniform(-5, -2))
        peak = base * float(10 ** rng.uniform(0.3, 2))
        up = int(rng.integers(1, 50))
        down = None if seed == 0 else int(rng.integers(1, 50))
        gamma = float(rng.uniform(0.99, 0.99999))
        steps = np.arange(0, 2000, 7)
        expected = [torch_cyclic(i, base, peak, up, down, mode, gamma) for i in steps]
        schedule = schedules.cyclic_schedule(
            base, peak, up, step_size_down=down, mode=mode, gamma=gamma
        )
        np.testing.assert_allclose(values(schedule, steps), expected, rtol=2e-6)
        momentum = schedules.cyclic_momentum_schedule(
            0.8, 0.9, up, step_size_down=down, mode=mode, gamma=gamma
        )
        expected_m = [torch_cyclic(i, 0.8, 0.9, up, down, mode, gamma, True) for i in steps]
        np.testing.assert_allclose(values(momentum, steps), expected_m, rtol=1e-6)

    def test_non_integer_step_sizes(self):
        # PyTorch converts step sizes to floats; 2.5 up, 1.5 down.
        schedule = schedules.cyclic_schedule(0.2, 0.7, 2.5, step_size_down=1.5)
        steps = np.arange(20)
        expected = [torch_cyclic(i, 0.2, 0.7, 2.5, 1.5) for i in steps]
        np.testing.assert_allclose(values(schedule, steps), expected, rtol=1e-6)

    @pytest.mark.parametrize("mode", schedules.CYCLIC_MODES)
    def test_momentum_moves_inversely_to_the_rate(self, mode):
        kwargs = dict(step_size_down=7, mode=mode, gamma=0.995)
        rate = values(schedules.cyclic_schedule(0.01, 0.1, 5, **kwargs), range(60))
        momentum = values(schedules.cyclic_momentum_schedule(0.8, 0.95, 5, **kwargs), range(60))
        # The same fraction of each amplitude, with opposite signs.
        np.testing.assert_allclose((rate - 0.01) / 0.09, (0.95 - momentum) / 0.15, atol=1e-6)
        assert np.all(np.sign(np.diff(rate)) == -np.sign(np.diff(momentum)))

    @pytest.mark.parametrize("mode", schedules.CYCLIC_MODES)
    def test_no_end_the_values_stay_in_their_bounds_for_ever(self, mode):
        # A cyclic schedule has no end to hold: it keeps cycling between its bounds. T = 8 (4 up,
        # 4 down), base 0.1, max 1: by hand, step 79 = 10T - 1 is 1/8 of a cycle before a
        # boundary, 0.1 + 0.9 * (1/8) / (1/2) = 0.325 (triangular), 80 = 10T is the base 0.1.
        gamma = 0.999
        rate = schedules.cyclic_schedule(0.1, 1.0, 4, mode=mode, gamma=gamma)
        momentum = schedules.cyclic_momentum_schedule(0.8, 0.9, 4, mode=mode, gamma=gamma)
        steps = [7, 8, 9, 79, 80, 81, 10**6 + 3, 10**7]
        got_rate, got_momentum = values(rate, steps), values(momentum, steps)
        assert np.all((0.1 - 1e-7 <= got_rate) & (got_rate <= 1.0 + 1e-7))
        assert np.all((0.8 - 1e-7 <= got_momentum) & (got_momentum <= 0.9 + 1e-7))
        np.testing.assert_allclose(got_rate[[1, 4, 7]], [0.1] * 3, rtol=1e-6)  # boundaries
        if mode == "triangular":
            np.testing.assert_allclose(got_rate[[3, 5]], [0.325, 0.325], rtol=1e-6)
        expected = [torch_cyclic(i, 0.1, 1.0, 4, mode=mode, gamma=gamma) for i in steps[:6]]
        np.testing.assert_allclose(got_rate[:6], expected, rtol=1e-6)

    def test_bad_arguments(self):
        with pytest.raises(ValueError, match="mode"):
            schedules.cyclic_schedule(0.1, 1.0, 4, mode="triangle")
        with pytest.raises(ValueError, match="step_size_up"):
            schedules.cyclic_schedule(0.1, 1.0, 0)
        with pytest.raises(ValueError, match="step_size_down"):
            schedules.cyclic_momentum_schedule(0.8, 0.9, 4, step_size_down=-1)
        with pytest.raises(ValueError, match="gamma"):
            schedules.cyclic_schedule(0.1, 1.0, 4, mode="exp_range", gamma=0.0)
        with pytest.raises(ValueError, match="base_lr"):
            schedules.cyclic_schedule(float("nan"), 1.0, 4)


# ---------------------------------------------------------------- 1cycle


class TestOneCycle:
    def test_two_phase_boundaries_and_mid_phase(self):
        # T = 100, max 1: initial 0.04, min 4e-6; phase ends 29 and 99; cos halfway at 64.
        schedule = schedules.one_cycle_schedule(100, 1.0)
        got = values(schedule, [0, 29, 64, 99])
        np.testing.assert_allclose(got, [0.04, 1.0, (1.0 + 4e-6) / 2, 4e-6], rtol=1e-6)
        momentum = values(schedules.one_cycle_momentum_schedule(100), [0, 29, 64, 99])
        np.testing.assert_allclose(momentum, [0.95, 0.85, 0.9, 0.95], rtol=1e-6)

    def test_three_phase_linear_boundaries_and_mid_phase(self):
        # T = 100, pct 0.3: ends 29, 58, 99; linear. Step 43: 14/29 of the way down from max.
        schedule = schedules.one_cycle_schedule(
            100, 1.0, anneal_strategy="linear", three_phase=True
        )
        down = 1.0 + (0.04 - 1.0) * 14 / 29
        tail = 0.04 + (4e-6 - 0.04) * 21 / 41  # step 79: (79 - 58) / (99 - 58) of phase 3
        got = values(schedule, [0, 29, 43, 58, 79, 99])
        np.testing.assert_allclose(got, [0.04, 1.0, down, 0.04, tail, 4e-6], rtol=1e-6)
        momentum = schedules.one_cycle_momentum_schedule(
            100, anneal_strategy="linear", three_phase=True
        )
        np.testing.assert_allclose(
            values(momentum, [0, 29, 43, 58, 79, 99]),
            [0.95, 0.85, 0.85 + 0.1 * 14 / 29, 0.95, 0.95, 0.95],
            rtol=1e-6,
        )

    @pytest.mark.parametrize("strategy", schedules.ANNEAL_STRATEGIES)
    @pytest.mark.parametrize("three_phase", [False, True])
    @pytest.mark.parametrize("seed", [0, 1])
    def test_matches_pytorch_formula(self, strategy, three_phase, seed):
        rng = np.random.default_rng(seed)
        total = int(rng.integers(50, 3000))
        pct = float(rng.uniform(0.1, 0.45))
        max_lr = float(10 ** rng.uniform(-4, 0))
        div, final_div = float(rng.uniform(5, 50)), float(10 ** rng.uniform(1, 5))
        kwargs = dict(pct_start=pct, anneal_strategy=strategy, three_phase=three_phase)
        rate = schedules.one_cycle_schedule(
            total, max_lr, div_factor=div, final_div_factor=final_div, **kwargs
        )
        momentum = schedules.one_cycle_momentum_schedule(
            total, base_momentum=0.8, max_momentum=0.97, **kwargs
        )
        # PyTorch's range: steps 0 .. total - 1 (at ``total`` it evaluates the last phase at pct > 1;
        # the schedule holds its final value there instead, see ``test_holds_the_final_value...``).
        steps = np.unique(np.concatenate([np.arange(0, total, 3), [total - 2, total - 1]]))
        expected = np.array(
            [
                torch_one_cycle(
                    i, total, max_lr, pct, strategy, div, final_div, three_phase, 0.8, 0.97
                )
                for i in steps
            ]
        )
        # Float precision relative to each value, including the annihilation tail near max/div/final.
        np.testing.assert_allclose(values(rate, steps), expected[:, 0], rtol=2e-5)
        np.testing.assert_allclose(values(momentum, steps), expected[:, 1], rtol=1e-6)

    def test_momentum_moves_inversely_to_the_rate(self):
        rate = values(schedules.one_cycle_schedule(200, 0.5), range(200))
        momentum = values(schedules.one_cycle_momentum_schedule(200), range(200))
        assert np.argmax(rate) == np.argmin(momentum) == 59
        assert np.all(np.sign(np.diff(rate)) == -np.sign(np.diff(momentum)))

    def test_holds_the_value_past_total_steps(self):
        schedule = schedules.one_cycle_schedule(50, 0.1)
        last = values(schedule, [50])[0]
        np.testing.assert_allclose(values(schedule, [51, 1000]), [last, last])
        assert np.isfinite(last)

    @pytest.mark.parametrize("strategy", schedules.ANNEAL_STRATEGIES)
    @pytest.mark.parametrize("three_phase", [False, True])
    def test_holds_the_final_value_exactly_past_total_steps(self, strategy, three_phase):
        # T = 10, max 0.1: initial 0.1 / 25 = 0.004, min 0.004 / 1e4 = 4e-7 (by hand); the momentum
        # ends at max_momentum 0.95. PyTorch's formula at its last step T - 1 gives exactly these
        # (pct = 1: cos(pi) = -1, or the linear end point); from there on the values are held
        # exactly, for the rate and the momentum alike, whatever the strategy. Before the fix, step
        # T gave pct = 8/7: cos rose back to 4e-7 + 0.1 sin^2(pi/14) = 0.00495, linear gave
        # 4e-7 - 0.1/7 = -0.01428 (a negative rate), the momentum 0.85 + 0.1 * 8/7 = 0.964 > 0.95.
        total = 10
        kwargs = dict(anneal_strategy=strategy, three_phase=three_phase)
        rate = schedules.one_cycle_schedule(total, 0.1, **kwargs)
        momentum = schedules.one_cycle_momentum_schedule(total, **kwargs)
        steps = [total - 1, total, total + 1, 10 * total]
        lr_end, m_end = torch_one_cycle(
            total - 1, total, 0.1, strategy=strategy, three_phase=three_phase
        )
        assert lr_end == pytest.approx(4e-7, rel=1e-12) and m_end == pytest.approx(0.95)
        got_rate = np.asarray(jax.vmap(rate)(jnp.asarray(steps)))
        got_momentum = np.asarray(jax.vmap(momentum)(jnp.asarray(steps)))
        np.testing.assert_array_equal(got_rate, np.full(4, 4e-7, got_rate.dtype))
        np.testing.assert_array_equal(got_momentum, np.full(4, 0.95, got_momentum.dtype))
        # The step before the end still anneals (the held value is the end, not a clamp earlier).
        assert float(rate(total - 2)) > float(rate(total - 1))

    @pytest.mark.parametrize("strategy", schedules.ANNEAL_STRATEGIES)
    def test_one_cycle_sgd_past_total_steps_keeps_descending_at_the_final_rate(self, strategy):
        # The user's report: one_cycle_sgd(10, 0.05, anneal_strategy="linear"), gradient +1, made
        # updates of +0.00714 (rate 2e-7 - 0.05 / 7 < 0) forever after step 10. Now every update
        # past the end uses min = 0.05 / 25 / 1e4 = 2e-7 and momentum 0.95: a descent step.
        total = 10
        tx = schedules.one_cycle_sgd(total, 0.05, anneal_strategy=strategy)
        params = {"w": jnp.zeros(3)}
        state = tx.init(params)
        grads = {"w": jnp.ones(3)}
        for n in range(1, 3 * total + 1):
            updates, state = tx.update(grads, state, params)
            if n > total:  # update n uses the values at step n - 1 >= total
                assert float(state.hyperparams["learning_rate"]) == np.float32(2e-7)
                assert float(state.hyperparams["momentum"]) == np.float32(0.95)
                assert np.all(np.asarray(updates["w"]) < 0)

    def test_bad_arguments(self):
        with pytest.raises(ValueError, match="total_steps"):
            schedules.one_cycle_schedule(0, 0.1)
        with pytest.raises(ValueError, match="pct_start"):
            schedules.one_cycle_schedule(100, 0.1, pct_start=1.5)
        with pytest.raises(ValueError, match="anneal_strategy"):
            schedules.one_cycle_momentum_schedule(100, anneal_strategy="cosine")
        with pytest.raises(ValueError, match="zero length"):  # pct_start * total_steps == 1
            schedules.one_cycle_schedule(10, 0.1, pct_start=0.1)
        with pytest.raises(ValueError, match="div_factor"):
            schedules.one_cycle_schedule(100, 0.1, div_factor=0.0)


# ---------------------------------------------------------------- inside jit and optimizers

ALL_SCHEDULES = {
    "triangular": schedules.cyclic_schedule(0.01, 0.1, 6),
    "triangular2_momentum": schedules.cyclic_momentum_schedule(0.8, 0.9, 6, mode="triangular2"),
    "exp_range": schedules.cyclic_schedule(0.01, 0.1, 6, mode="exp_range", gamma=0.99),
    "one_cycle": schedules.one_cycle_schedule(40, 0.1),
    "one_cycle_three_phase_momentum": schedules.one_cycle_momentum_schedule(40, three_phase=True),
}


@pytest.mark.parametrize("name", list(ALL_SCHEDULES))
def test_schedules_work_on_traced_steps(name):
    schedule = ALL_SCHEDULES[name]
    chex.clear_trace_counter()
    jitted = jax.jit(chex.assert_max_traces(schedule, n=1))
    eager = [float(schedule(i)) for i in range(45)]
    traced = [float(jitted(jnp.asarray(i, jnp.int32))) for i in range(45)]
    np.testing.assert_allclose(traced, eager, rtol=1e-6)


def test_scan_over_steps_matches_eager():
    schedule = schedules.one_cycle_schedule(30, 0.2, three_phase=True)
    _, scanned = jax.lax.scan(lambda c, i: (c, schedule(i)), None, jnp.arange(30))
    np.testing.assert_allclose(scanned, [float(schedule(i)) for i in range(30)], rtol=1e-6)


def _run_and_record(tx, steps, names):
    params = {"w": jnp.array([1.0, -2.0, 0.5])}
    state = tx.init(params)
    recorded = {name: [] for name in names}

    @jax.jit
    def step(params, state):
        grads = jax.grad(lambda p: jnp.sum(p["w"] ** 2))(params)
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    for _ in range(steps):
        params, state = step(params, state)
        for name in names:
            recorded[name].append(float(state.hyperparams[name]))
    return recorded


def test_one_cycle_sgd_update_n_uses_the_value_after_n_minus_1_scheduler_steps():
    total = 25
    recorded = _run_and_record(
        schedules.one_cycle_sgd(total, 0.3), total, ["learning_rate", "momentum"]
    )
    expected = np.array([torch_one_cycle(i, total, 0.3) for i in range(total)])
    np.testing.assert_allclose(recorded["learning_rate"], expected[:, 0], rtol=2e-5)
    np.testing.assert_allclose(recorded["momentum"], expected[:, 1], rtol=1e-6)


def test_cyclic_adam_cycles_b1():
    recorded = _run_and_record(
        schedules.cyclic_adam(1e-3, 1e-2, 3, mode="triangular2"), 20, ["learning_rate", "b1"]
    )
    np.testing.assert_allclose(
        recorded["learning_rate"],
        [torch_cyclic(i, 1e-3, 1e-2, 3, mode="triangular2") for i in range(20)],
        rtol=1e-6,
    )
    np.testing.assert_allclose(
        recorded["b1"],
        [torch_cyclic(i, 0.8, 0.9, 3, mode="triangular2", momentum=True) for i in range(20)],
        rtol=1e-6,
    )


def test_sgd_helpers_follow_pytorch_sgd_with_scheduled_momentum():
    # PyTorch SGD: d = g + wd * p; buf = d (first step) then m * buf + d; p -= lr * buf.
    total, wd = 12, 0.01
    tx = schedules.one_cycle_sgd(total, 0.2, weight_decay=wd, three_phase=True)
    p = np.array([1.0, -2.0, 0.5])
    params = {"w": jnp.asarray(p, jnp.float32)}
    state = tx.init(params)
    buf = np.zeros(3)
    for i in range(total):
        lr, m = torch_one_cycle(i, total, 0.2, three_phase=True)
        grad = 2 * p
        d = grad + wd * p
        buf = d if i == 0 else m * buf + d
        p = p - lr * buf
        updates, state = tx.update({"w": jnp.asarray(2 * params["w"])}, state, params)
        params = optax.apply_updates(params, updates)
    np.testing.assert_allclose(np.asarray(params["w"]), p, rtol=1e-5)


def test_adam_helpers_follow_pytorch_adam_with_scheduled_beta1():
    # PyTorch Adam with the current beta1 in the first moment and in its bias correction.
    total, b2, eps = 10, 0.999, 1e-8
    tx = schedules.one_cycle_adam(total, 0.05)
    p = np.array([1.0, -2.0, 0.5])
    params = {"w": jnp.asarray(p, jnp.float32)}
    state = tx.init(params)
    m1, m2 = np.zeros(3), np.zeros(3)
    for i in range(total):
        lr, b1 = torch_one_cycle(i, total, 0.05)
        grad = 2 * p
        m1 = b1 * m1 + (1 - b1) * grad
        m2 = b2 * m2 + (1 - b2) * grad**2
        t = i + 1
        p = p - lr * (m1 / (1 - b1**t)) / (np.sqrt(m2 / (1 - b2**t)) + eps)
        updates, state = tx.update({"w": jnp.asarray(2 * params["w"])}, state, params)
        params = optax.apply_updates(params, updates)
    np.testing.assert_allclose(np.asarray(params["w"]), p, rtol=1e-5)


def test_constant_momentum_without_cycling():
    tx = schedules.cyclic_sgd(0.01, 0.1, 4, cycle_momentum=False, max_momentum=0.7)
    recorded = _run_and_record(tx, 6, ["learning_rate", "momentum"])
    np.testing.assert_allclose(recorded["momentum"], [0.7] * 6, rtol=1e-6)
    assert len(set(recorded["learning_rate"])) > 1
