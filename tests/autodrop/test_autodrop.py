"""AutoDrop (Teng et al. 2021): angles, the Algorithm 1 state machine on scripted parameters, both criteria,
the windowed rule, save/restore mid-phase, bad input, and the noisy quadratic model against I* and C*."""

from __future__ import annotations

import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from randlr_jax.autodrop import _noisy_quadratic as nqm
from randlr_jax.autodrop._autodrop import AutoDropState, angle_degrees, autodrop, get_autodrop_state
from randlr_jax.training import Checkpointer

# ----------------------------------------------------------------------------------------------- angles


def _tree(a, b):
    return {"a": jnp.asarray(a, jnp.float32), "b": {"c": jnp.asarray(b, jnp.float32)}}


@pytest.mark.parametrize(
    "u, v, expected",
    [
        (_tree([1.0, 2.0], [3.0]), _tree([2.0, 4.0], [6.0]), 0.0),
        (_tree([1.0, 0.0], [0.0]), _tree([0.0, 5.0], [0.0]), 90.0),
        (_tree([1.0, 0.0], [0.0]), _tree([0.0, 0.0], [2.0]), 90.0),  # orthogonal across leaves
        (_tree([1.0, 2.0], [3.0]), _tree([-0.5, -1.0], [-1.5]), 180.0),
        (_tree([1.0, 0.0], [0.0]), _tree([1.0, 0.0], [math.sqrt(3.0)]), 60.0),
        (_tree([1.0, 0.0], [0.0]), _tree([1.0, 1.0], [0.0]), 45.0),
        (_tree([1.0, 2.0], [3.0]), _tree([0.0, 0.0], [0.0]), 90.0),  # zero vector
        (_tree([0.0, 0.0], [0.0]), _tree([0.0, 0.0], [0.0]), 90.0),
    ],
)
def test_angle_on_hand_made_trees(u, v, expected):
    angle = angle_degrees(u, v)
    assert angle.dtype == jnp.float32 and angle.shape == ()
    assert float(angle) == pytest.approx(expected, abs=1e-4)


@pytest.mark.parametrize("seed", range(5))
def test_angle_matches_float64_arccos_and_is_symmetric_and_scale_free(seed):
    rng = np.random.default_rng(seed)
    u = _tree(rng.normal(size=7), rng.normal(size=(3, 2)))
    v = _tree(rng.normal(size=7), rng.normal(size=(3, 2)))
    flat_u = np.concatenate([np.ravel(np.asarray(x, np.float64)) for x in jax.tree.leaves(u)])
    flat_v = np.concatenate([np.ravel(np.asarray(x, np.float64)) for x in jax.tree.leaves(v)])
    cosine = flat_u @ flat_v / np.linalg.norm(flat_u) / np.linalg.norm(flat_v)
    expected = np.degrees(np.arccos(cosine))
    assert float(angle_degrees(u, v)) == pytest.approx(expected, abs=1e-3)
    assert float(angle_degrees(v, u)) == pytest.approx(expected, abs=1e-3)
    scaled = jax.tree.map(lambda x: 123.0 * x, v)
    assert float(angle_degrees(u, scaled)) == pytest.approx(expected, abs=1e-3)


def test_angle_is_accurate_near_zero_degrees():
    # arccos of a float32 cosine would give ~0.03 degrees here, more than the 0.01 degree threshold.
    u = _tree(np.linspace(1.0, 2.0, 50), np.ones(3))
    v = jax.tree.map(lambda x: x * (1.0 + 1e-7), u)
    assert float(angle_degrees(u, v)) < 1e-3
    w = _tree(np.linspace(1.0, 2.0, 50), np.ones(3) * (1 + 1e-3))  # a genuine tiny angle
    flat_u = np.concatenate([np.linspace(1.0, 2.0, 50), np.ones(3)])
    flat_w = np.concatenate([np.linspace(1.0, 2.0, 50), np.ones(3) * (1 + 1e-3)])
    a, b = flat_u / np.linalg.norm(flat_u), flat_w / np.linalg.norm(flat_w)
    expected = np.degrees(2 * np.arctan2(np.linalg.norm(a - b), np.linalg.norm(a + b)))  # float64
    assert 1e-3 < expected < 0.1
    assert float(angle_degrees(u, w)) == pytest.approx(expected, rel=1e-2)


# ------------------------------------------------------------------------------- scripted state machine


def _displacement(angle_deg: float, length: float = 1.0) -> np.ndarray:
    phi = math.radians(angle_deg)
    return np.array([length * math.cos(phi), length * math.sin(phi)], np.float32)


def _drive(tx, x0, displacements, steps_per_period=1):
    """Feed updates so that each period's parameters move by the given displacement.

    Each period is ``steps_per_period`` equal steps; the raw update is divided by AutoDrop's current scale,
    so the emitted update is the scripted one (except when AutoDrop sets the parameters itself).
    Returns the parameters after every period and the AutoDrop state after every period.
    """
    params = {"w": jnp.asarray(x0, jnp.float32)}
    state = tx.init(params)
    update = jax.jit(tx.update)
    xs, states = [], []
    for s in displacements:
        for _ in range(steps_per_period):
            scale = get_autodrop_state(state).scale
            raw = {"w": jnp.asarray(s, jnp.float32) / steps_per_period / scale}
            updates, state = update(raw, state, params)
            params = optax.apply_updates(params, updates)
        xs.append(np.asarray(params["w"], np.float64))
        states.append(jax.device_get(get_autodrop_state(state)))
    return xs, states


# Directions whose consecutive angles are 10, 20, 30, 30, 30, 30, ... degrees (omega_2 = 10, ...).
_DIRECTIONS = np.cumsum([0.0, 10.0, 20.0] + [30.0] * 9)
_SCRIPT = [_displacement(phi, length=1.0 + 0.1 * i) for i, phi in enumerate(_DIRECTIONS)]


def test_drop_triggers_at_the_right_period_waits_and_sets_the_weighted_average():
    n_d, rho = 2, 0.2
    tx = autodrop(0.1, rho, steps_per_period=1, drop_delay=n_d, threshold=0.01, max_threshold=1.0)
    xs, states = _drive(tx, np.zeros(2), _SCRIPT)
    angles = [float(s.angle) for s in states]
    np.testing.assert_allclose(angles[1:5], [10.0, 20.0, 30.0, 30.0], atol=1e-3)
    assert angles[0] == pytest.approx(90.0)  # s_0 = 0
    # omega_4 = omega_5 = 30: the phase starts at the end of period t = 5 (index 4) ...
    phases = [int(s.drop_phase) for s in states]
    assert phases[:7] == [0, 0, 0, 0, 1, 2, 0]
    # ... is not restarted at t = 6 although omega_6 = omega_5, and drops after n_d more periods.
    rates = [float(s.learning_rate) for s in states]
    np.testing.assert_allclose(rates[:6], 0.1)
    np.testing.assert_allclose(rates[6], 0.1 * rho, rtol=1e-6)
    assert int(states[6].num_drops) == 1 and int(states[5].num_drops) == 0
    np.testing.assert_allclose(float(states[6].threshold), 0.01 / rho, rtol=1e-6)
    np.testing.assert_allclose(float(states[6].scale), rho, rtol=1e-6)
    # Parameters at the end of t = 5, 6, 7 without the jump, weighted 1, 2, 3 and divided by 1 + 2 + 3
    # (Algorithm 1's weights k, normalised by their sum: autodrop's docstring says why).
    x5, x6 = xs[4], xs[5]
    x7 = x6 + _SCRIPT[6]
    expected = (1 * x5 + 2 * x6 + 3 * x7) / 6.0
    np.testing.assert_allclose(xs[6], expected, rtol=1e-5, atol=1e-6)
    # The next period starts from the average: its displacement is the scripted one, not the jump.
    np.testing.assert_allclose(np.asarray(states[7].displacement["w"]), _SCRIPT[7], atol=1e-5)
    # After the drop the updates are scaled by rho: the driver divided by the scale, so the scripted
    # displacement went through; with the raw update the parameters move rho times less.
    assert int(states[7].period) == 8


def test_no_averaging_with_zero_delay_and_immediate_drop():
    tx = autodrop(0.1, 0.5, steps_per_period=1, drop_delay=0)
    xs, states = _drive(tx, np.zeros(2), _SCRIPT[:6])
    # Without a phase the test runs again at the next period: omega_6 = omega_5 drops again.
    assert [int(s.num_drops) for s in states] == [0, 0, 0, 0, 1, 2]
    assert states[0].average is None
    np.testing.assert_allclose(xs[4], np.sum(_SCRIPT[:5], axis=0), atol=1e-5)  # no jump


def test_periods_of_several_steps_and_explicit_end_of_period_agree():
    by_count = autodrop(0.1, 0.2, steps_per_period=3, drop_delay=1)
    xs_count, states_count = _drive(by_count, np.zeros(2), _SCRIPT[:8], steps_per_period=3)
    assert [int(s.drop_phase) for s in states_count][:6] == [0, 0, 0, 0, 1, 0]
    assert int(states_count[-1].count) == 24 and int(states_count[-1].period) == 8

    for flag in ("python", "traced"):
        tx = autodrop(
            0.1, 0.2, drop_delay=1
        )  # no steps_per_period: the caller says where periods end
        params = {"w": jnp.zeros(2, jnp.float32)}
        state = tx.init(params)
        update = _update_with_end(tx, jit=flag == "traced")
        for period, s in enumerate(_SCRIPT[:8]):
            for step in range(3):
                raw = {"w": jnp.asarray(s) / 3 / get_autodrop_state(state).scale}
                end = step == 2 if flag == "python" else jnp.asarray(step == 2)
                updates, state = update(raw, state, params, end)
                params = optax.apply_updates(params, updates)
            chex.assert_trees_all_close(
                get_autodrop_state(state), states_count[period]._replace(count=state.count)
            )
            np.testing.assert_allclose(params["w"], xs_count[period], atol=1e-5)


def _update_with_end(tx, jit: bool):
    def update(updates, state, params, end):
        return tx.update(updates, state, params, end_of_period=end)

    return jax.jit(update) if jit else update


def test_learning_rate_stops_at_min_and_threshold_at_max():
    # A huge threshold: every test saturates, so the machine drops every n_d + 1 periods.
    tx = autodrop(
        0.1,
        0.5,
        steps_per_period=1,
        min_learning_rate=0.03,
        threshold=100.0,
        max_threshold=300.0,
        drop_delay=0,
    )
    _, states = _drive(tx, np.zeros(2), _SCRIPT)
    drops = [int(s.num_drops) for s in states]
    assert drops[-1] >= 4
    rates = sorted({round(float(s.learning_rate), 7) for s in states}, reverse=True)
    assert rates == [0.1, 0.05, 0.03]
    thresholds = sorted({round(float(s.threshold), 4) for s in states})
    assert thresholds == [100.0, 200.0, 300.0]


def test_derivative_criterion_triggers_on_a_falling_angular_velocity_only():
    # Angles omega_2.. = 10, 40, 20, 50, 30: the change criterion never fires (|changes| >= 20), the
    # derivative one (tau = 0) fires at each fall: t = 4 (40 -> 20) and t = 6 (50 -> 30).
    directions = np.cumsum([0.0, 10.0, 40.0, 20.0, 50.0, 30.0])
    script = [_displacement(phi) for phi in directions]
    change = autodrop(0.1, 0.5, steps_per_period=1, threshold=1.0, drop_delay=0)
    derivative = autodrop(
        0.1, 0.5, steps_per_period=1, threshold=0.0, drop_delay=0, criterion="derivative"
    )
    _, by_change = _drive(change, np.zeros(2), script)
    _, by_derivative = _drive(derivative, np.zeros(2), script)
    assert [int(s.num_drops) for s in by_change] == [0] * 6
    assert [int(s.num_drops) for s in by_derivative] == [0, 0, 0, 1, 1, 2]


def test_window_averages_the_angles_and_waits_for_window_plus_one_angles():
    # Angles omega_2.. = 10, 20, 30, 20, 30, 20: per period the change is +-10 (never below 1), averaged
    # over W = 2 windows it is 25 - 15 at t = 4 (the first period with W + 1 = 3 angles), then 0.
    directions = np.cumsum([0.0, 10.0, 20.0, 30.0, 20.0, 30.0, 20.0])
    script = [_displacement(phi) for phi in directions]
    plain = autodrop(0.1, 0.5, steps_per_period=1, threshold=1.0, drop_delay=0)
    windowed = autodrop(0.1, 0.5, steps_per_period=1, threshold=1.0, drop_delay=0, window=2)
    _, by_plain = _drive(plain, np.zeros(2), script)
    _, by_window = _drive(windowed, np.zeros(2), script)
    assert [int(s.num_drops) for s in by_plain] == [0] * 7
    assert [int(s.num_drops) for s in by_window] == [0, 0, 0, 0, 1, 2, 3]
    np.testing.assert_allclose(float(by_window[4].angular_velocity), 25.0, atol=1e-3)


def test_drop_factor_can_be_injected():
    make = optax.inject_hyperparams(
        autodrop, static_args=("steps_per_period", "drop_delay", "window")
    )
    tx = make(learning_rate=0.1, drop_factor=0.5, steps_per_period=1, drop_delay=0)
    params = {"w": jnp.zeros(2, jnp.float32)}
    state = tx.init(params)
    update = jax.jit(tx.update)
    for i, s in enumerate(_SCRIPT[:5]):  # one drop, at t = 5, after rho was changed
        if i == 3:
            state.hyperparams["drop_factor"] = jnp.asarray(0.25, jnp.float32)
        updates, state = update({"w": jnp.asarray(s)}, state, params)
        params = optax.apply_updates(params, updates)
    assert float(get_autodrop_state(state).learning_rate) == pytest.approx(0.025)


def _noisy_stepper(tx):
    """``run(params, state, steps, key)``: ``tx`` (with AutoDrop inside) on a noisy quadratic."""

    def loss(p, noise):
        return 0.5 * sum(
            jnp.sum((x - n) ** 2) for x, n in zip(jax.tree.leaves(p), noise, strict=True)
        )

    @jax.jit
    def step(params, state, key):
        leaves = jax.tree.leaves(params)
        keys = jax.random.split(key, len(leaves))
        noise = [0.3 * jax.random.normal(k, x.shape) for k, x in zip(keys, leaves, strict=True)]
        value, grads = jax.value_and_grad(loss)(params, noise)
        updates, state = tx.update(grads, state, params, value=value)
        return optax.apply_updates(params, updates), state

    def run(params, state, steps, key):
        for k in jax.random.split(key, steps):
            params, state = step(params, state, k)
        return params, state

    return run


def test_save_and_restore_in_the_middle_of_a_drop_phase_continues_identically(tmp_path):
    tx = optax.chain(
        optax.sgd(0.05, momentum=0.9),
        autodrop(0.05, 0.2, steps_per_period=4, threshold=5.0, max_threshold=20.0, drop_delay=3),
    )
    params = {"w": jnp.ones((3, 2)), "b": jnp.full((4,), 2.0, jnp.float32)}
    key_a, key_b = jax.random.split(jax.random.key(0))
    run = _noisy_stepper(tx)
    mid_params, mid_state = run(params, tx.init(params), 30, key_a)
    assert int(get_autodrop_state(mid_state).drop_phase) > 0, (
        "the checkpoint must fall inside a phase"
    )
    with Checkpointer(tmp_path / "ckpt") as ckpt:
        ckpt.save(30, (mid_params, mid_state), {"step": 30})
        (restored_params, restored_state), _ = ckpt.restore((params, tx.init(params)))
    straight = run(mid_params, mid_state, 40, key_b)
    resumed = run(restored_params, restored_state, 40, key_b)
    chex.assert_trees_all_equal(straight, resumed)
    assert int(get_autodrop_state(straight[1]).num_drops) > int(
        get_autodrop_state(mid_state).num_drops
    ), "the run must finish the phase it was saved in"


# ------------------------------------------------------------------------------------- memory and API


# AutoDropState's fields and their documented shapes and dtypes: "scalar" is one value, "window" the
# ``(window + 1,)`` latest angles, "params" a float32 (at least) buffer shaped like the parameters,
# "params_or_none" the same, or None without a drop phase (``drop_delay == 0``).
_STATE_LAYOUT = {
    "count": ("scalar", jnp.int32),
    "period": ("scalar", jnp.int32),
    "learning_rate": ("scalar", jnp.float32),
    "scale": ("scalar", jnp.float32),
    "threshold": ("scalar", jnp.float32),
    "angles": ("window", jnp.float32),
    "drop_phase": ("scalar", jnp.int32),
    "num_drops": ("scalar", jnp.int32),
    "period_start": ("params", None),
    "displacement": ("params", None),
    "average": ("params_or_none", None),
}


@pytest.mark.parametrize("drop_delay, window", [(20, 1), (0, 1), (5, 3)])
def test_parameter_sized_buffers(drop_delay, window):
    params = {"w": jnp.ones((5, 7)), "b": jnp.ones((7,), jnp.bfloat16)}
    state = autodrop(0.1, drop_delay=drop_delay, steps_per_period=10, window=window).init(params)
    assert AutoDropState._fields == tuple(_STATE_LAYOUT)  # a field added or removed fails here
    expected_size = 0
    for name, (kind, dtype) in _STATE_LAYOUT.items():
        value = getattr(state, name)
        if kind == "scalar":
            assert value.shape == () and value.dtype == dtype, name
            expected_size += 1
        elif kind == "window":
            assert value.shape == (window + 1,) and value.dtype == dtype, name
            expected_size += window + 1
        elif kind == "params_or_none" and drop_delay == 0:
            assert value is None, name
        else:  # a parameter-sized buffer, float32 at least (the bfloat16 leaf is held in float32)
            assert jax.tree.structure(value) == jax.tree.structure(params), name
            for buffer, param in zip(jax.tree.leaves(value), jax.tree.leaves(params), strict=True):
                assert buffer.shape == param.shape and buffer.dtype == jnp.float32, name
                expected_size += param.size
    assert sum(x.size for x in jax.tree.leaves(state)) == expected_size
    # By hand: 42 parameters; 7 scalars and window + 1 angles; 3 buffers (2 without a drop phase).
    assert expected_size == 42 * (3 if drop_delay else 2) + 7 + window + 1


def test_state_is_found_inside_chains_and_readable():
    tx = optax.chain(optax.adam(1e-3), autodrop(1e-3, steps_per_period=2))
    state = tx.init({"w": jnp.ones(3)})
    found = get_autodrop_state(state)
    assert isinstance(found, AutoDropState)
    assert float(found.learning_rate) == pytest.approx(1e-3)
    assert found.angle.shape == () and found.angular_velocity.shape == ()
    with pytest.raises(ValueError, match="exactly one AutoDropState"):
        get_autodrop_state(optax.sgd(0.1).init({"w": jnp.ones(3)}))


def test_update_needs_params_and_a_period_boundary():
    params = {"w": jnp.ones(3)}
    tx = autodrop(0.1, steps_per_period=2)
    with pytest.raises(ValueError, match="needs params"):
        tx.update(params, tx.init(params))
    tx = autodrop(0.1)
    with pytest.raises(ValueError, match="end_of_period"):
        tx.update(params, tx.init(params), params)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(drop_factor=0.0), "drop_factor"),
        (dict(drop_factor=1.0), "drop_factor"),
        (dict(drop_factor=-0.5), "drop_factor"),
        (dict(threshold=-0.01), "threshold"),
        (dict(max_threshold=-1.0), "max_threshold"),
        (dict(threshold=2.0, max_threshold=1.0), "max_threshold"),
        (dict(min_learning_rate=0.5), "min_learning_rate"),
        (dict(min_learning_rate=-1e-4), "min_learning_rate"),
        (dict(steps_per_period=0), "steps_per_period"),
        (dict(steps_per_period=-3), "steps_per_period"),
        (dict(steps_per_period=2.5), "steps_per_period"),
        (dict(drop_delay=-1), "drop_delay"),
        (dict(window=0), "window"),
        (dict(criterion="slope"), "criterion"),
        (dict(learning_rate=0.0), "learning_rate"),
    ],
)
def test_bad_arguments_raise_at_construction(kwargs, match):
    args = dict(learning_rate=0.1, drop_factor=0.2, steps_per_period=10)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        autodrop(**args)


# ----------------------------------------------------------------------------- noisy quadratic model


@pytest.mark.parametrize("alpha", [0.03, 0.01])
def test_noisy_quadratic_simulation_agrees_with_closed_forms(alpha):
    problem = nqm.seed_problem()

    def chain(key):
        start, noise = jax.random.split(key)
        x0 = nqm.stationary_sample(problem, alpha, start)
        return nqm.simulate(problem, optax.sgd(alpha), x0, noise, 1500)

    records = jax.jit(jax.vmap(chain))(jax.random.split(jax.random.key(7), 16))
    inner = float(jnp.mean(records["inner"][:, 1:]))
    cosine = float(jnp.mean(jnp.cos(jnp.radians(records["angle"][:, 1:]))))
    assert inner == pytest.approx(float(nqm.stationary_inner_product(problem, alpha)), rel=0.03)
    assert cosine == pytest.approx(float(nqm.stationary_cosine(problem, alpha)), rel=0.03)


def test_closed_forms_on_one_coordinate():
    # d = 1: C* = -alpha a / 2 exactly, and I* from the scalar recursion.
    problem = nqm.NoisyQuadratic(jnp.array([2.0]), jnp.array([3.0]))
    alpha = 0.1
    assert float(nqm.stationary_cosine(problem, alpha)) == pytest.approx(-0.1)
    assert float(nqm.stationary_inner_product(problem, alpha)) == pytest.approx(
        -(0.1**3) * 8.0 * 3.0 / 1.8
    )
    with pytest.raises(ValueError, match="alpha"):
        nqm.stationary_cosine(problem, 1.5)


def test_windowed_rule_drives_gd_on_the_nqm_to_the_floor_of_the_smallest_rate():
    problem = nqm.seed_problem()
    rule = autodrop(
        0.06,
        0.5,
        steps_per_period=1,
        window=20,
        drop_delay=0,
        threshold=0.01,
        max_threshold=0.01,
        min_learning_rate=0.001,
    )
    x0 = jnp.full((200,), 100.0)
    auto = jax.jit(
        lambda k: nqm.simulate(problem, optax.chain(optax.sgd(0.06), rule), x0, k, 3000)
    )(jax.random.key(0))
    fixed = jax.jit(lambda k: nqm.simulate(problem, optax.sgd(0.06), x0, k, 3000))(
        jax.random.key(0)
    )
    smallest = jax.jit(lambda k: nqm.simulate(problem, optax.sgd(0.001), x0, k, 3000))(
        jax.random.key(0)
    )
    rates = np.asarray(auto["learning_rate"])
    assert np.all(np.diff(rates) <= 0) and rates[-1] == pytest.approx(0.001)
    # Below both constant rates: the largest one's noise floor and the smallest one's slow descent.
    assert float(np.mean(auto["loss"][-500:])) < 0.1 * float(np.mean(fixed["loss"][-500:]))
    assert float(np.mean(auto["loss"][-500:])) < 0.5 * float(np.mean(smallest["loss"][-500:]))
