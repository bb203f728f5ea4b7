"""The feature guard (``make_alrao_train_step(..., feature_guard=True)``, our extension).

A feature made to diverge is detected, frozen (its rate and parameters zero, unchanged afterwards),
silenced (its output, the head's input at that unit, is 0 in the step and in a plain ``apply``), and the
rest of the network trains exactly as an independent reference: the same network with that unit removed
by hand, trained by the unguarded step. Off, the step is today's; on, with nothing diverging, it is bit
for bit the unguarded one.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from randlr_jax import alrao, models
from randlr_jax.alrao import _guard as guard_lib
from randlr_jax.alrao import _step as alrao_step
from randlr_jax.alrao._features import FeatureLRState
from randlr_jax.models._split import Classifier
from randlr_jax.training import _run_record as run_record
from randlr_jax.training import create_train_state, make_eval_step

K, N, DIM, WIDTHS = 3, 3, 6, (4, 5)
LR_MIN, LR_MAX = 1e-3, 1.0
DEAD = 3  # the unit of dense_1 (the head's input) made to diverge


def _batches(steps=4, n=16, seed=0):
    rng = np.random.default_rng(seed)
    centers = np.random.default_rng(7).normal(size=(K, DIM)).astype(np.float32) * 2
    out = []
    for _ in range(steps):
        y = rng.integers(0, K, n).astype(np.int32)
        x = centers[y] + rng.normal(size=(n, DIM)).astype(np.float32)
        out.append({"x": jnp.asarray(x), "y": jnp.asarray(y)})
    return out


def _model(widths=WIDTHS):
    return models.make_model("mlp", widths=widths, head=alrao.AlraoHead(K, num_copies=N))


def _tx():
    return alrao.alrao_sgd(jax.random.key(1), LR_MIN, LR_MAX, N)


def _state(model, tx):
    return create_train_state(model, tx, jax.random.key(0), jnp.zeros((1, DIM)))


def _steps(model, tx, **kwargs):
    return jax.jit(alrao_step.make_alrao_train_step(model, tx, **kwargs))


def _run(step, state, batches):
    states, metrics = [], []
    for batch in batches:
        state, m = step(state, batch)
        states.append(state)
        metrics.append(m)
    return states, metrics


def _assert_trees_equal(a, b):
    def same(x, y):
        if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            x, y = jax.random.key_data(x), jax.random.key_data(y)
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))

    jax.tree.map(same, a, b)


def _lrs(state):
    (lr_state,) = [
        s
        for s in jax.tree.leaves(state.opt_state, is_leaf=lambda s: isinstance(s, FeatureLRState))
        if isinstance(s, FeatureLRState)
    ]
    return lr_state.lrs


def _with_body(state, layer, kernel=None, bias=None):
    body = dict(state.params["body"])
    entry = dict(body[layer])
    if kernel is not None:
        entry["kernel"] = kernel
    if bias is not None:
        entry["bias"] = bias
    body[layer] = entry
    return state.replace(params={**state.params, "body": body})


def _poisoned(state):
    """Unit ``DEAD`` of dense_1 with finite but huge weights: its output overflows to inf."""
    layer = state.params["body"]["dense_1"]
    return _with_body(
        state,
        "dense_1",
        kernel=layer["kernel"].at[:, DEAD].set(3e38),
        bias=layer["bias"].at[DEAD].set(3e38),
    )


# ----------------------------------------------------------------------------- off and no divergence


def test_off_is_todays_step():
    """The default and ``feature_guard=False`` are the same step, with Alrao's own hooks only (same
    fingerprint, no guard in it), and today's behaviour: an overflowing feature kills every copy."""
    model, tx = _model(), _tx()
    default = alrao_step.make_alrao_train_step(model, tx)
    off = alrao_step.make_alrao_train_step(model, tx, feature_guard=False)
    assert run_record.describe(off) == run_record.describe(default)
    assert "guard" not in str(run_record._walk(off, 0, frozenset()))
    on = alrao_step.make_alrao_train_step(model, tx, feature_guard=True)
    assert run_record.describe(on) != run_record.describe(off)

    state = _poisoned(_state(model, tx))
    states_off, metrics_off = _run(jax.jit(off), state, _batches(2))
    states_default, metrics_default = _run(jax.jit(default), state, _batches(2))
    _assert_trees_equal((states_off, metrics_off), (states_default, metrics_default))
    assert bool(metrics_off[0]["all_dropped"]) and int(metrics_off[0]["num_dropped"]) == N
    assert "dead_features" not in metrics_off[0]


def test_on_without_divergence_is_bit_identical_to_off():
    model, tx = _model(), _tx()
    state = _state(model, tx)
    states_off, metrics_off = _run(_steps(model, tx), state, _batches(5))
    states_on, metrics_on = _run(_steps(model, tx, feature_guard=True), state, _batches(5))
    for m in metrics_on:
        assert int(m.pop("dead_features")) == 0
    _assert_trees_equal((states_on, metrics_on), (states_off, metrics_off))


# ----------------------------------------------------------------------------- a diverging feature


def test_overflowing_feature_is_detected_frozen_and_silenced():
    model, tx = _model(), _tx()
    state = _poisoned(_state(model, tx))
    batches = _batches(4)
    # The precondition: with finite parameters, the unit's output is not finite on this batch.
    p = jax.tree.map(np.asarray, state.params["body"])
    h0 = np.maximum(np.asarray(batches[0]["x"]) @ p["dense_0"]["kernel"] + p["dense_0"]["bias"], 0)
    assert np.isfinite(p["dense_1"]["kernel"]).all()
    with np.errstate(over="ignore"):
        z1 = h0 @ p["dense_1"]["kernel"] + p["dense_1"]["bias"]
    assert not np.isfinite(z1[:, DEAD]).all()

    states, metrics = _run(_steps(model, tx, feature_guard=True), state, batches)
    expected_dead = np.arange(WIDTHS[1]) == DEAD
    for s, m in zip(states, metrics, strict=True):
        # No copy dropped, finite loss, one dead feature.
        assert int(m["num_dropped"]) == 0 and np.isfinite(float(m["loss"]))
        assert int(m["dead_features"]) == 1
        dead = alrao.feature_guard_dead(s)
        np.testing.assert_array_equal(np.asarray(dead["body/dense_1"]), expected_dead)
        assert not np.asarray(dead["body/dense_0"]).any()
        assert int(alrao.feature_guard_num_dead(s)) == 1
        # Frozen at the hand-computed values: kernel column, bias entry and rate exactly zero.
        layer = s.params["body"]["dense_1"]
        np.testing.assert_array_equal(np.asarray(layer["kernel"])[:, DEAD], 0.0)
        assert float(layer["bias"][DEAD]) == 0.0
        rates = _lrs(s)["body"]["dense_1"]
        assert float(rates["kernel"][0, DEAD]) == 0.0 and float(rates["bias"][DEAD]) == 0.0
        # The other rates are untouched.
        initial = _lrs(state)["body"]["dense_1"]
        keep = ~expected_dead
        np.testing.assert_array_equal(
            np.asarray(rates["kernel"])[:, keep], np.asarray(initial["kernel"])[:, keep]
        )
        # Silenced: the head's input at that unit is 0, in a plain apply (as evaluation runs).
        variables = {"params": s.params, **s.model_state}
        features = model.apply(variables, batches[0]["x"], method="features")
        np.testing.assert_array_equal(np.asarray(features)[:, DEAD], 0.0)
        assert np.isfinite(np.asarray(model.apply(variables, batches[0]["x"]))).all()
    # Evaluation (method-agnostic, no interceptor) sees the guarded model.
    sums = jax.jit(make_eval_step(model))(states[-1], batches[0])
    assert np.isfinite(float(sums["loss_sum"]))


def _reference(state, how):
    """An independent reference, trained by the unguarded step: the same network with unit ``DEAD``
    of dense_1 removed (``"removed"``) or zeroed and given a zero rate (``"zeroed"``) by hand, and
    Alrao-SGD written out with Optax (the body's rates from ``state``, the copies' log-spaced rates)."""
    keep = np.arange(WIDTHS[1]) != DEAD
    params = state.params
    dense_1 = params["body"]["dense_1"]
    copies = params["head"]["copies"]
    lrs = _lrs(state)
    rate_1 = lrs["body"]["dense_1"]
    if how == "removed":
        layer = {"kernel": dense_1["kernel"][:, keep], "bias": dense_1["bias"][keep]}
        rate = {"kernel": rate_1["kernel"][:, keep], "bias": rate_1["bias"][keep]}
        head = {"copies": {"kernel": copies["kernel"][:, keep, :], "bias": copies["bias"]}}
        model = _model((WIDTHS[0], WIDTHS[1] - 1))
    else:
        layer = {
            "kernel": dense_1["kernel"].at[:, DEAD].set(0.0),
            "bias": dense_1["bias"].at[DEAD].set(0.0),
        }
        rate = {
            "kernel": rate_1["kernel"].at[:, DEAD].set(0.0),
            "bias": rate_1["bias"].at[DEAD].set(0.0),
        }
        head = params["head"]
        model = _model()
    reduced = {"body": {"dense_0": params["body"]["dense_0"], "dense_1": layer}, "head": head}
    rates = {"body": {"dense_0": lrs["body"]["dense_0"], "dense_1": rate}, "head": lrs["head"]}
    tx = optax.chain(
        optax.partition(
            {
                "body": alrao.scale_by_lr_tree(rates),
                "head": alrao.scale_by_copy_lrs(alrao.copy_learning_rates(LR_MIN, LR_MAX, N)),
            },
            alrao.head_label_fn(),
        ),
        optax.scale(-1.0),
    )
    return model, tx, state.replace(params=reduced, opt_state=tx.init(reduced))


@pytest.mark.parametrize("how", ["zeroed", "removed"])
def test_the_rest_trains_exactly_as_the_network_without_that_unit(how):
    """Zeroed by hand: the same shapes, bit for bit. Removed: smaller matmuls, whose sums XLA orders
    differently -- equal to float32 rounding (a few ulp)."""
    model, tx = _model(), _tx()
    state = _poisoned(_state(model, tx))
    batches = _batches(4)
    states, metrics = _run(_steps(model, tx, feature_guard=True), state, batches)

    ref_model, ref_tx, ref_state = _reference(state, how)
    ref_states, ref_metrics = _run(_steps(ref_model, ref_tx), ref_state, batches)
    keep = np.arange(WIDTHS[1]) != DEAD if how == "removed" else slice(None)
    if how == "removed":
        same = lambda a, b: jax.tree.map(  # noqa: E731
            lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-5, atol=5e-7), a, b
        )
    else:
        same = _assert_trees_equal
    initial_rows = np.asarray(state.params["head"]["copies"]["kernel"])[:, DEAD, :]
    for s, m, r, rm in zip(states, metrics, ref_states, ref_metrics, strict=True):
        body, ref_body = s.params["body"], r.params["body"]
        same(body["dense_0"], ref_body["dense_0"])
        same(body["dense_1"]["kernel"][:, keep], ref_body["dense_1"]["kernel"])
        same(body["dense_1"]["bias"][keep], ref_body["dense_1"]["bias"])
        copies, ref_copies = s.params["head"]["copies"], r.params["head"]["copies"]
        same(copies["kernel"][:, keep, :], ref_copies["kernel"])
        same(copies["bias"], ref_copies["bias"])
        # The copies' weights from the dead unit see a zero input: SGD leaves them where they were.
        np.testing.assert_array_equal(np.asarray(copies["kernel"])[:, DEAD, :], initial_rows)
        same(s.model_state, r.model_state)
        names = ("loss", "copy_losses", "posterior")
        same({k: m[k] for k in names}, {k: rm[k] for k in names})
        for name in ("accuracy", "num_dropped"):
            np.testing.assert_array_equal(np.asarray(m[name]), np.asarray(rm[name]))


def test_feature_whose_update_overflows_is_caught_after_the_update():
    """A finite forward pass, then an update that makes a feature's parameters non-finite: the check
    after the update zeroes and freezes it before anything (an evaluation) reads them."""
    model, tx = _model(), _tx()
    state = _state(model, tx)

    def huge_rate(node):
        if not isinstance(node, FeatureLRState):
            return node
        lrs = node.lrs
        layer = lrs["body"]["dense_0"]
        new = {
            "kernel": layer["kernel"].at[0, 1].set(jnp.inf),
            "bias": layer["bias"].at[1].set(jnp.inf),
        }
        return node._replace(lrs={**lrs, "body": {**lrs["body"], "dense_0": new}})

    is_lr = lambda s: isinstance(s, FeatureLRState)  # noqa: E731
    state = state.replace(opt_state=jax.tree.map(huge_rate, state.opt_state, is_leaf=is_lr))
    batches = _batches(3)
    off_state, _ = _steps(model, tx)(state, batches[0])
    assert not np.isfinite(np.asarray(off_state.params["body"]["dense_0"]["kernel"])[:, 1]).all()

    states, metrics = _run(_steps(model, tx, feature_guard=True), state, batches)
    for s, m in zip(states, metrics, strict=True):
        np.testing.assert_array_equal(
            np.asarray(alrao.feature_guard_dead(s)["body/dense_0"]), np.arange(WIDTHS[0]) == 1
        )
        layer = s.params["body"]["dense_0"]
        np.testing.assert_array_equal(np.asarray(layer["kernel"])[:, 1], 0.0)
        assert float(layer["bias"][1]) == 0.0
        assert int(m["num_dropped"]) == 0 and int(m["dead_features"]) == 1
        assert jax.tree.all(jax.tree.map(lambda p: bool(jnp.isfinite(p).all()), s.params))


def test_zero_rate_feature_keeps_its_parameters_even_with_a_nonfinite_direction():
    """A feature with rate 0 (here set by hand, with non-zero weights) is dead: its parameters are put
    back after every step, exactly, even when its momentum is ``inf`` (``0 * inf`` is NaN)."""
    model = _model()
    tx = alrao.alrao_sgd(jax.random.key(1), LR_MIN, LR_MAX, N, momentum=0.9)
    state = _state(model, tx)

    def plant(node):
        if isinstance(node, FeatureLRState):
            layer = node.lrs["body"]["dense_0"]
            new = {
                "kernel": layer["kernel"].at[:, 2].set(0.0),
                "bias": layer["bias"].at[2].set(0.0),
            }
            return node._replace(lrs={**node.lrs, "body": {**node.lrs["body"], "dense_0": new}})
        if isinstance(node, optax.TraceState):
            layer = node.trace["body"]
            dense_0 = layer["dense_0"]
            if isinstance(dense_0["kernel"], jax.Array):  # the body's trace, not the head's
                new = {
                    "kernel": dense_0["kernel"].at[:, 2].set(jnp.inf),
                    "bias": dense_0["bias"].at[2].set(jnp.inf),
                }
                return node._replace(trace={**node.trace, "body": {**layer, "dense_0": new}})
        return node

    is_node = lambda s: isinstance(s, (FeatureLRState, optax.TraceState))  # noqa: E731
    state = state.replace(opt_state=jax.tree.map(plant, state.opt_state, is_leaf=is_node))
    before = np.asarray(state.params["body"]["dense_0"]["kernel"])[:, 2]
    assert np.all(before != 0)
    states, metrics = _run(_steps(model, tx, feature_guard=True), state, _batches(3))
    for s, m in zip(states, metrics, strict=True):
        np.testing.assert_array_equal(
            np.asarray(s.params["body"]["dense_0"]["kernel"])[:, 2], before
        )
        assert int(m["dead_features"]) == 1 and int(m["num_dropped"]) == 0
        assert jax.tree.all(jax.tree.map(lambda p: bool(jnp.isfinite(p).all()), s.params))


def test_conv_channel_is_a_feature():
    model = models.make_model("cnn1d", channels=3, head=alrao.AlraoHead(K, num_copies=N))
    tx = _tx()
    state = create_train_state(model, tx, jax.random.key(0), jnp.zeros((1, 20)))
    conv = state.params["body"]["conv_1"]
    state = _with_body(
        state,
        "conv_1",
        kernel=conv["kernel"].at[..., 2].set(3e38),
        bias=conv["bias"].at[2].set(3e38),
    )
    rng = np.random.default_rng(0)
    batch = {
        "x": jnp.asarray(rng.normal(size=(8, 20)), jnp.float32),
        "y": jnp.asarray(rng.integers(0, K, 8), jnp.int32),
    }
    off, _ = _steps(model, tx)(state, batch)
    new, metrics = _steps(model, tx, feature_guard=True)(state, batch)
    assert int(metrics["num_dropped"]) == 0 and int(metrics["dead_features"]) == 1
    np.testing.assert_array_equal(
        np.asarray(alrao.feature_guard_dead(new)["body/conv_1"]), [False, False, True]
    )
    np.testing.assert_array_equal(np.asarray(new.params["body"]["conv_1"]["kernel"])[..., 2], 0.0)
    out = model.apply({"params": new.params, **new.model_state}, batch["x"])
    assert np.isfinite(np.asarray(out)).all()


# ----------------------------------------------------------------------------- scope and arguments


class _RematBody(nn.Module):
    @nn.compact
    def __call__(self, x, *, train=False):
        del train
        x = nn.relu(nn.remat(nn.Dense)(4, name="dense_0")(x))
        return nn.relu(nn.Dense(3, name="dense_1")(x))


def test_layer_inside_a_lifted_transform_is_named_and_still_parameter_checked():
    model = Classifier(_RematBody(), alrao.AlraoHead(K, num_copies=N))
    tx = _tx()
    state = create_train_state(model, tx, jax.random.key(0), jnp.zeros((1, DIM)))
    with pytest.warns(guard_lib.FeatureGuardWarning, match=r"\['body/dense_0'\]"):
        new, metrics = _steps(model, tx, feature_guard=True)(state, _batches(1)[0])
    assert np.isfinite(float(metrics["loss"])) and int(metrics["dead_features"]) == 0


def test_bad_arguments():
    model = _model()
    with pytest.raises(ValueError, match="feature_guard must be a bool"):
        alrao_step.make_alrao_train_step(model, _tx(), feature_guard="yes")
    # Without per-feature rates there is nothing to guard: said when the step is traced.
    tx = optax.sgd(0.1)
    step = alrao_step.make_alrao_train_step(model, tx, feature_guard=True)
    with pytest.raises(ValueError, match="feature_guard=True needs per-feature rates"):
        step(_state(model, tx), _batches(1)[0])
