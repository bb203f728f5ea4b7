"""Tests of randlr_jax.alrao: per-feature random learning rates (Blier et al. 2019, Section 2: what a
feature is, per layer type), Alrao over other base directions (momentum, Adam) and schedules that divide
every rate (the paper's Section 4)."""

import math
import warnings

import chex
import flax.linen as nn
import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from absl.testing import parameterized
from flax import nnx
from scipy import stats

from randlr_jax.alrao._features import (
    FeatureLRState,
    FeatureRule,
    UnrecognisedParameterWarning,
    alrao_base,
    default_feature_rules,
    sample_feature_lrs,
    scale_by_feature_lrs,
    scale_by_lr_tree,
)
from randlr_jax.alrao._optimizers import alrao_adam, alrao_sgd

LR_MIN, LR_MAX = 1e-5, 10.0
KEYS = [0, 1, 7]


class _ConvNet(nn.Module):
    @nn.compact
    def __call__(self, tokens, images, train=True):
        x = nn.Embed(11, 6)(tokens).mean(axis=1)
        x = nn.LayerNorm()(nn.Dense(5)(x))
        y = nn.Conv(4, (3, 3))(images)
        y = nn.BatchNorm(use_running_average=not train)(y).mean(axis=(1, 2))
        return nn.Dense(3)(jnp.concatenate([x, y], axis=-1))


def _convnet_params():
    variables = jax.eval_shape(
        _ConvNet().init,
        jax.random.key(0),
        jnp.zeros((2, 3), jnp.int32),
        jnp.zeros((2, 5, 5, 2)),
    )
    return jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), {"params": variables["params"]})


def _applied_rates(tx, params):
    """The rate applied to every scalar: updates of ones through the transformation, full shape."""
    state = tx.init(params)
    updates, _ = tx.update(jax.tree.map(jnp.ones_like, params), state, params)
    return updates


def _lstm_params(cell):
    carry = cell.initialize_carry(jax.random.key(0), (1, 4))
    return cell.init(jax.random.key(1), carry, jnp.zeros((1, 4)))


# ------------------------------------------------------------------------------ sampling


@pytest.mark.parametrize("seed", KEYS)
@pytest.mark.parametrize(("lr_min", "lr_max"), [(1e-5, 10.0), (0.01, 0.1)])
def test_rates_in_range_and_log_uniform(seed, lr_min, lr_max):
    width = 3000
    params = {
        "Dense_0": {
            "kernel": jax.ShapeDtypeStruct((2, width), jnp.float32),
            "bias": jax.ShapeDtypeStruct((width,), jnp.float32),
        }
    }
    lrs = sample_feature_lrs(jax.random.key(seed), params, lr_min, lr_max)
    rates = np.asarray(lrs["Dense_0"]["bias"], np.float64)
    assert rates.min() >= np.float32(lr_min) and rates.max() <= np.float32(lr_max)
    log_lo, log_hi = math.log(lr_min), math.log(lr_max)
    result = stats.kstest(np.log(rates), "uniform", args=(log_lo, log_hi - log_lo))
    assert result.pvalue > 1e-3, result
    # A uniform (not log-uniform) sample would fail the same test on a wide range.
    if lr_max / lr_min > 100:
        uniform = np.random.default_rng(seed).uniform(lr_min, lr_max, width)
        bad = stats.kstest(np.log(uniform), "uniform", args=(log_lo, log_hi - log_lo))
        assert bad.pvalue < 1e-3


@pytest.mark.parametrize("seed", KEYS)
def test_same_key_same_rates_other_key_other_rates(seed):
    params = _convnet_params()
    first = sample_feature_lrs(jax.random.key(seed), params, LR_MIN, LR_MAX)
    again = sample_feature_lrs(jax.random.key(seed), params, LR_MIN, LR_MAX)
    other = sample_feature_lrs(jax.random.key(seed + 100), params, LR_MIN, LR_MAX)
    chex.assert_trees_all_equal(first, again)
    for a, b in zip(jax.tree.leaves(first), jax.tree.leaves(other), strict=True):
        assert not np.any(np.asarray(a) == np.asarray(b))


def test_raw_uint32_key_accepted():
    params = {"Dense_0": {"kernel": jnp.zeros((2, 3)), "bias": jnp.zeros(3)}}
    lrs = sample_feature_lrs(jax.random.PRNGKey(0), params, LR_MIN, LR_MAX)
    chex.assert_shape(lrs["Dense_0"]["kernel"], (1, 3))


@pytest.mark.parametrize("eta", [0.1, 3e-4, 1.0])
def test_equal_bounds_give_the_constant_exactly(eta):
    lrs = sample_feature_lrs(jax.random.key(0), _convnet_params(), eta, eta)
    for leaf in jax.tree.leaves(lrs):
        assert np.all(np.asarray(leaf) == np.float32(eta))


def test_rates_of_a_group_do_not_depend_on_other_parameters():
    small = {"params": {"Dense_0": {"kernel": jnp.zeros((2, 3)), "bias": jnp.zeros(3)}}}
    big = {"params": {**small["params"], "Dense_1": {"kernel": jnp.zeros((3, 4))}}}
    key = jax.random.key(3)
    chex.assert_trees_all_equal(
        sample_feature_lrs(key, small, LR_MIN, LR_MAX)["params"]["Dense_0"],
        sample_feature_lrs(key, big, LR_MIN, LR_MAX)["params"]["Dense_0"],
    )


# ------------------------------------------------------------------------------ what a feature is


def test_stored_leaf_shapes():
    lrs = sample_feature_lrs(jax.random.key(0), _convnet_params(), LR_MIN, LR_MAX)["params"]
    chex.assert_shape(lrs["Dense_0"]["kernel"], (1, 5))
    chex.assert_shape(lrs["Dense_0"]["bias"], (5,))
    chex.assert_shape(lrs["Conv_0"]["kernel"], (1, 1, 1, 4))
    chex.assert_shape(lrs["Conv_0"]["bias"], (4,))
    chex.assert_shape(lrs["Embed_0"]["embedding"], (1, 6))
    chex.assert_shape(lrs["LayerNorm_0"]["scale"], (5,))
    chex.assert_shape(lrs["BatchNorm_0"]["bias"], (4,))
    chex.assert_shape(lrs["Dense_1"]["kernel"], (1, 3))


@pytest.mark.parametrize("seed", KEYS)
def test_kernel_and_bias_of_a_feature_share_one_rate(seed):
    params = _convnet_params()
    applied = _applied_rates(scale_by_feature_lrs(jax.random.key(seed), LR_MIN, LR_MAX), params)
    applied = jax.tree.map(np.asarray, applied["params"])
    for name, width in (("Dense_0", 5), ("Dense_1", 3), ("Conv_0", 4)):
        kernel, bias = applied[name]["kernel"], applied[name]["bias"]
        columns = kernel.reshape(-1, width)
        # Every incoming weight of feature j, and bias j, get the same rate.
        np.testing.assert_array_equal(columns, np.broadcast_to(bias, columns.shape))
        assert len(np.unique(bias)) == width  # distinct features, distinct rates
    embedding = applied["Embed_0"]["embedding"]
    np.testing.assert_array_equal(embedding, np.broadcast_to(embedding[:1], embedding.shape))
    assert len(np.unique(embedding[0])) == 6
    # Different layers are different features.
    assert not np.intersect1d(applied["Dense_0"]["bias"], applied["Dense_1"]["bias"]).size


@pytest.mark.parametrize("norm", ["LayerNorm_0", "BatchNorm_0"])
def test_norm_scale_and_bias_share_per_channel(norm):
    applied = _applied_rates(
        scale_by_feature_lrs(jax.random.key(2), LR_MIN, LR_MAX), _convnet_params()
    )["params"][norm]
    np.testing.assert_array_equal(applied["scale"], applied["bias"])
    assert len(np.unique(np.asarray(applied["scale"]))) == applied["scale"].shape[0]


@pytest.mark.parametrize("cell", [nn.LSTMCell(3), nn.OptimizedLSTMCell(3)])
def test_lstm_gates_shared_by_default_and_separate_on_request(cell):
    params = _lstm_params(cell)
    gates = ["ii", "if", "ig", "io", "hi", "hf", "hg", "ho"]
    assert set(params["params"]) == set(gates)  # the installed Flax's names

    shared = _applied_rates(scale_by_feature_lrs(jax.random.key(0), LR_MIN, LR_MAX), params)
    reference = np.asarray(shared["params"]["hi"]["bias"])
    assert len(np.unique(reference)) == 3
    for gate in gates:
        for leaf in shared["params"][gate].values():
            leaf = np.asarray(leaf)
            np.testing.assert_array_equal(leaf, np.broadcast_to(reference, leaf.shape))

    tx = scale_by_feature_lrs(jax.random.key(0), LR_MIN, LR_MAX, lstm_gates="separate")
    separate = jax.tree.map(np.asarray, _applied_rates(tx, params)["params"])
    for gate in gates:  # within one gate, kernel columns and bias still share
        if "bias" in separate[gate]:
            kernel = separate[gate]["kernel"]
            np.testing.assert_array_equal(
                kernel, np.broadcast_to(separate[gate]["bias"], kernel.shape)
            )
    rows = np.stack([separate[gate]["kernel"][0] for gate in gates])
    assert len(np.unique(rows)) == rows.size  # every gate row (input and recurrent) its own rate


def test_nnx_stacked_lstm_and_gru_cells():
    for cell, blocks in (
        (nnx.OptimizedLSTMCell(4, 3, rngs=nnx.Rngs(0)), 4),
        (nnx.GRUCell(4, 3, rngs=nnx.Rngs(0)), 3),
    ):
        state = nnx.state(cell, nnx.Param)
        lrs = sample_feature_lrs(jax.random.key(0), state, LR_MIN, LR_MAX)
        row = np.asarray(lrs["dense_i"]["kernel"][...])[0]
        assert len(np.unique(row)) == 3
        np.testing.assert_array_equal(row, np.tile(row[:3], blocks))  # gate blocks of unit u
        np.testing.assert_array_equal(row, np.asarray(lrs["dense_h"]["kernel"][...])[0])
        separate = sample_feature_lrs(
            jax.random.key(0), state, LR_MIN, LR_MAX, lstm_gates="separate"
        )
        row = np.asarray(separate["dense_i"]["kernel"][...])[0]
        assert len(np.unique(row)) == 3 * blocks


def test_attention_features_are_head_and_dim():
    module = nn.MultiHeadDotProductAttention(num_heads=2, qkv_features=8, out_features=4)
    params = jax.eval_shape(module.init, jax.random.key(0), jnp.zeros((1, 3, 4)))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        lrs = sample_feature_lrs(jax.random.key(0), params, LR_MIN, LR_MAX)["params"]
    chex.assert_shape(lrs["query"]["kernel"], (1, 2, 4))
    np.testing.assert_array_equal(lrs["query"]["kernel"][0], lrs["query"]["bias"])
    assert len(np.unique(np.asarray(lrs["query"]["bias"]))) == 8
    chex.assert_shape(lrs["out"]["kernel"], (1, 1, 4))


def test_per_weight_mode_gives_every_scalar_its_own_rate():
    params = _convnet_params()
    key = jax.random.key(4)
    per_weight = sample_feature_lrs(key, params, LR_MIN, LR_MAX, per="weight")
    per_feature = sample_feature_lrs(key, params, LR_MIN, LR_MAX)
    chex.assert_trees_all_equal_shapes(per_weight, params)
    values = np.concatenate([np.ravel(leaf) for leaf in jax.tree.leaves(per_weight)])
    assert len(np.unique(values)) == values.size
    kernel_w = np.asarray(per_weight["params"]["Dense_0"]["kernel"])
    kernel_f = np.broadcast_to(per_feature["params"]["Dense_0"]["kernel"], kernel_w.shape)
    assert not np.any(kernel_w == kernel_f)


# ------------------------------------------------------------------------------ rules


def test_unknown_leaf_warns_once_naming_the_path_and_falls_back_to_per_weight():
    params = {
        "params": {
            "Mine_0": {"gain_matrix": jnp.zeros((3, 2))},
            "Dense_0": {"kernel": jnp.zeros((2, 3)), "bias": jnp.zeros(3)},
        }
    }
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        lrs = sample_feature_lrs(jax.random.key(0), params, LR_MIN, LR_MAX)
    relevant = [w for w in caught if issubclass(w.category, UnrecognisedParameterWarning)]
    assert len(relevant) == 1, [str(w.message) for w in caught]
    assert "params/Mine_0/gain_matrix" in str(relevant[0].message)
    gain = np.asarray(lrs["params"]["Mine_0"]["gain_matrix"])
    chex.assert_shape(gain, (3, 2))
    assert len(np.unique(gain)) == 6


def test_user_rule_overrides_and_silences():
    params = {"params": {"Mine_0": {"gain_matrix": jnp.zeros((3, 2)), "offset": jnp.zeros(3)}}}
    rules = [
        FeatureRule(r".*/Mine_\d+/(gain_matrix|offset)", feature_axes=(0,)),
    ]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        lrs = sample_feature_lrs(jax.random.key(0), params, LR_MIN, LR_MAX, rules=rules)
    mine = lrs["params"]["Mine_0"]
    chex.assert_shape(mine["gain_matrix"], (3, 1))
    np.testing.assert_array_equal(mine["gain_matrix"][:, 0], mine["offset"])
    # A user rule is tried before the built-in ones, and feature_axes=None means per weight.
    dense = {"params": {"Dense_0": {"kernel": jnp.zeros((2, 3))}}}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        lrs = sample_feature_lrs(
            jax.random.key(0), dense, LR_MIN, LR_MAX, rules=[FeatureRule(".*kernel", None)]
        )
    chex.assert_shape(lrs["params"]["Dense_0"]["kernel"], (2, 3))
    assert default_feature_rules()[0].group is not None


# ------------------------------------------------------------------------------ NNX and masks


class _TinyNNX(nnx.Module):
    def __init__(self, rngs):
        self.conv = nnx.Conv(2, 3, (3, 3), rngs=rngs)
        self.linear = nnx.Linear(3, 2, rngs=rngs)

    def __call__(self, x):
        return self.linear(self.conv(x).mean(axis=(1, 2)))


def test_nnx_state_and_optimizer():
    model = _TinyNNX(nnx.Rngs(0))
    state = nnx.state(model, nnx.Param)
    lrs = sample_feature_lrs(jax.random.key(0), state, LR_MIN, LR_MAX)
    chex.assert_shape(lrs["linear"]["kernel"][...], (1, 2))
    chex.assert_shape(lrs["conv"]["kernel"][...], (1, 1, 1, 3))
    np.testing.assert_array_equal(lrs["conv"]["kernel"][...][0, 0, 0], lrs["conv"]["bias"][...])

    optimizer = nnx.Optimizer(
        model, alrao_base(optax.identity(), jax.random.key(0), LR_MIN, LR_MAX), wrt=nnx.Param
    )
    before = jax.tree.map(np.asarray, nnx.state(model, nnx.Param))
    x = jnp.ones((2, 4, 4, 2))
    grads = nnx.grad(lambda m: jnp.sum(m(x) ** 2))(model)
    optimizer.update(model, grads)
    after = nnx.state(model, nnx.Param)
    expected = jax.tree.map(lambda p, g, r: p - r * g, before, grads, lrs)
    chex.assert_trees_all_close(after, expected, rtol=1e-6, atol=1e-7)


def test_masked_nodes_inside_optax_masked_and_partition():
    params = _convnet_params()
    key = jax.random.key(5)
    mask = jax.tree_util.tree_map_with_path(lambda path, _: "Dense_1" not in str(path), params)
    tx = optax.masked(scale_by_feature_lrs(key, LR_MIN, LR_MAX), mask)
    state = tx.init(params)
    inner_lrs = state.inner_state.lrs["params"]
    assert isinstance(inner_lrs["Dense_1"]["kernel"], optax.MaskedNode)
    full = sample_feature_lrs(key, params, LR_MIN, LR_MAX)["params"]
    chex.assert_trees_all_equal(inner_lrs["Dense_0"], full["Dense_0"])
    updates, _ = tx.update(jax.tree.map(jnp.ones_like, params), state, params)
    np.testing.assert_array_equal(updates["params"]["Dense_1"]["kernel"], 1.0)
    np.testing.assert_array_equal(updates["params"]["Dense_0"]["bias"], full["Dense_0"]["bias"])

    labels = jax.tree.map(lambda m: "body" if m else "head", mask)
    precomputed = sample_feature_lrs(key, params, LR_MIN, LR_MAX)
    for body in (
        alrao_base(optax.identity(), key, LR_MIN, LR_MAX),
        alrao_base(scale_by_lr_tree(precomputed), key, 1.0, 1.0),
    ):
        tx = optax.partition({"body": body, "head": optax.sgd(0.5)}, labels)
        state = tx.init(params)
        updates, _ = tx.update(jax.tree.map(jnp.ones_like, params), state, params)
        np.testing.assert_allclose(updates["params"]["Dense_1"]["kernel"], -0.5)
        np.testing.assert_allclose(
            updates["params"]["Conv_0"]["bias"], -np.asarray(full["Conv_0"]["bias"]), rtol=1e-6
        )


def test_lr_tree_mismatch_raises_naming_what_differs():
    params = {"a": {"kernel": jnp.zeros((2, 3)), "bias": jnp.zeros(3)}}
    with pytest.raises(ValueError, match="a/bias"):
        scale_by_lr_tree({"a": {"kernel": jnp.ones((1, 3))}}).init(params)
    with pytest.raises(ValueError, match=r"a/kernel.*\(1, 4\)"):
        scale_by_lr_tree({"a": {"kernel": jnp.ones((1, 4)), "bias": jnp.ones(3)}}).init(params)
    with pytest.raises(ValueError, match="a/kernel"):
        scale_by_lr_tree({"a": {"kernel": jnp.ones((3,)), "bias": jnp.ones(3)}}).init(params)
    lrs = {"a": {"kernel": jnp.full((1, 3), 0.5), "bias": jnp.asarray(0.25)}}
    applied = _applied_rates(scale_by_lr_tree(lrs), params)
    np.testing.assert_array_equal(applied["a"]["kernel"], 0.5)
    np.testing.assert_array_equal(applied["a"]["bias"], 0.25)


# ------------------------------------------------------------------------------ transformation


class TransformationTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.parameters(0, 1)
    def test_update_is_rate_times_update_and_keeps_dtype(self, seed):
        params = {
            "Dense_0": {
                "kernel": jnp.zeros((4, 3), jnp.bfloat16),
                "bias": jnp.zeros(3, jnp.bfloat16),
            }
        }
        tx = scale_by_feature_lrs(jax.random.key(seed), 0.01, 1.0)
        state = tx.init(params)
        grads = jax.tree.map(
            lambda p: jax.random.normal(jax.random.key(seed + 10), p.shape, p.dtype), params
        )
        updates, new_state = self.variant(tx.update)(grads, state, params)
        chex.assert_trees_all_equal_dtypes(updates, grads)
        expected = jax.tree.map(
            lambda g, r: (g.astype(jnp.float32) * r).astype(jnp.bfloat16), grads, state.lrs
        )
        chex.assert_trees_all_equal(updates, expected)
        chex.assert_trees_all_equal(new_state, state)

    def test_no_retrace_and_identical_rates_after_rebuild(self):
        params = _convnet_params()
        tx = alrao_base(optax.trace(0.9), jax.random.key(0), LR_MIN, LR_MAX)
        state = tx.init(params)
        chex.clear_trace_counter()

        @jax.jit
        @chex.assert_max_traces(n=1)
        def step(grads, state):
            return tx.update(grads, state, params)

        grads = jax.tree.map(jnp.ones_like, params)
        updates, state = step(grads, state)
        updates, state = step(grads, state)

        saved = flax.serialization.to_bytes(state)
        rebuilt_tx = alrao_base(optax.trace(0.9), jax.random.key(99), LR_MIN, LR_MAX)
        fresh = rebuilt_tx.init(params)
        assert not np.array_equal(
            fresh[1].lrs["params"]["Dense_0"]["bias"], state[1].lrs["params"]["Dense_0"]["bias"]
        )
        restored = flax.serialization.from_bytes(fresh, saved)
        chex.assert_trees_all_equal(restored[1].lrs, state[1].lrs)
        assert isinstance(restored[1], FeatureLRState)
        chex.assert_trees_all_equal(
            rebuilt_tx.update(grads, restored, params)[0], tx.update(grads, state, params)[0]
        )


def _mlp():
    model = nn.Sequential([nn.Dense(8), nn.relu, nn.Dense(3)])
    params = model.init(jax.random.key(0), jnp.zeros((1, 5)))
    x = jax.random.normal(jax.random.key(1), (16, 5))
    y = jax.random.randint(jax.random.key(2), (16,), 0, 3)

    def loss(p):
        logits = model.apply(p, x)
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    return params, jax.jit(jax.grad(loss))


def _train(tx, params, grad_fn, steps=4):
    state = tx.init(params)
    for _ in range(steps):
        updates, state = tx.update(grad_fn(params), state, params)
        params = optax.apply_updates(params, updates)
    return params


@pytest.mark.parametrize(("momentum", "nesterov"), [(None, False), (0.9, False), (0.9, True)])
def test_equal_bounds_sgd_equals_optax_sgd(momentum, nesterov):
    params, grad_fn = _mlp()
    eta = 0.3
    base = optax.identity() if momentum is None else optax.trace(momentum, nesterov=nesterov)
    ours = _train(alrao_base(base, jax.random.key(0), eta, eta), params, grad_fn)
    theirs = _train(optax.sgd(eta, momentum=momentum, nesterov=nesterov), params, grad_fn)
    chex.assert_trees_all_close(ours, theirs, rtol=1e-6, atol=1e-7)
    assert not np.allclose(
        ours["params"]["layers_0"]["kernel"], params["params"]["layers_0"]["kernel"]
    )


def test_equal_bounds_adam_equals_optax_adam():
    params, grad_fn = _mlp()
    base = optax.scale_by_adam(b1=0.8, b2=0.99, eps=1e-6)
    ours = _train(alrao_base(base, jax.random.key(0), 1e-2, 1e-2), params, grad_fn)
    theirs = _train(optax.adam(1e-2, b1=0.8, b2=0.99, eps=1e-6), params, grad_fn)
    chex.assert_trees_all_close(ours, theirs, rtol=1e-6, atol=1e-7)


def test_adam_direction_is_rate_times_adam_direction():
    params = {"Dense_0": {"kernel": jnp.zeros((2, 3)), "bias": jnp.zeros(3)}}
    key = jax.random.key(3)
    grads = {"Dense_0": {"kernel": jnp.arange(6.0).reshape(2, 3) - 2, "bias": jnp.ones(3)}}
    tx = alrao_base(optax.scale_by_adam(0.8, 0.99, 1e-6), key, LR_MIN, LR_MAX)
    updates, _ = tx.update(grads, tx.init(params))
    direction, _ = optax.scale_by_adam(0.8, 0.99, 1e-6).update(
        grads, optax.scale_by_adam(0.8, 0.99, 1e-6).init(params)
    )
    lrs = sample_feature_lrs(key, params, LR_MIN, LR_MAX)
    chex.assert_trees_all_close(updates, jax.tree.map(lambda d, r: -r * d, direction, lrs))


def test_schedule_divides_every_rate_by_the_time_factor():
    params = _convnet_params()
    key = jax.random.key(6)
    factor = lambda count: 1.0 + count  # noqa: E731
    tx = optax.chain(
        scale_by_feature_lrs(key, LR_MIN, LR_MAX),
        optax.scale_by_schedule(lambda count: 1.0 / factor(count)),
    )
    lrs = sample_feature_lrs(key, params, LR_MIN, LR_MAX)
    state = tx.init(params)
    ones = jax.tree.map(jnp.ones_like, params)
    for step in range(3):
        updates, state = tx.update(ones, state, params)
        scale = 1.0 / factor(step)
        expected = jax.tree.map(lambda p, r, s=scale: jnp.broadcast_to(r * s, p.shape), ones, lrs)
        chex.assert_trees_all_close(updates, expected, rtol=1e-6)


# ------------------------------------------------------------------------------ arguments


@pytest.mark.parametrize(
    ("build", "argument"),
    [
        (lambda: scale_by_feature_lrs(jax.random.key(0), 0.0, 1.0), "lr_min"),
        (lambda: scale_by_feature_lrs(jax.random.key(0), -1e-3, 1.0), "lr_min"),
        (lambda: scale_by_feature_lrs(jax.random.key(0), 1.0, 0.1), "lr_min"),
        (lambda: scale_by_feature_lrs(jax.random.key(0), 1e-3, float("inf")), "lr_max"),
        (lambda: scale_by_feature_lrs(jax.random.key(0), float("nan"), 1.0), "lr_min"),
        (lambda: scale_by_feature_lrs(jax.random.key(0), 1e-3, 1.0, per="layer"), "per"),
        (lambda: scale_by_feature_lrs(jax.random.key(0), 1e-3, 1.0, lstm_gates="x"), "lstm_gates"),
        (lambda: scale_by_feature_lrs(jax.random.key(0), 1e-3, 1.0, rules=[("k", 0)]), "rules"),
        (
            lambda: scale_by_feature_lrs(
                jax.random.key(0), 1e-3, 1.0, rules=[FeatureRule("(", (-1,))]
            ),
            "rules",
        ),
        (
            lambda: scale_by_feature_lrs(
                jax.random.key(0), 1e-3, 1.0, rules=[FeatureRule("a", (-1,), group=r"\3")]
            ),
            "group",
        ),
        (lambda: sample_feature_lrs(jax.random.key(0), {}, 1e-3, 1e-4), "lr_min"),
        (lambda: sample_feature_lrs(jax.random.key(0), {}, 1e-3, 1.0, per="x"), "per"),
        (lambda: alrao_sgd(jax.random.key(0), 1e-3, 1.0, 2, momentum=1.5), "momentum"),
        (lambda: alrao_sgd(jax.random.key(0), 1e-3, 1.0, 2, momentum=np.float32(1.0)), "momentum"),
        (lambda: alrao_sgd(jax.random.key(0), 1e-3, 1.0, 2, nesterov=True), "nesterov"),
        (lambda: alrao_adam(jax.random.key(0), 1e-3, 1.0, 2, b1=-0.1), "b1"),
        (lambda: alrao_adam(jax.random.key(0), 1e-3, 1.0, 2, b2=1.0), "b2"),
        (lambda: alrao_adam(jax.random.key(0), 1e-3, 1.0, 2, eps=-1.0), "eps"),
        (lambda: default_feature_rules("per-gate"), "lstm_gates"),
    ],
)
def test_bad_arguments_raise_naming_the_argument(build, argument):
    with pytest.raises(ValueError, match=argument):
        build()


@pytest.mark.parametrize(
    ("lr_min", "lr_max"),
    [(0.0, 1.0), (-1e-3, 1.0), (1.0, 0.1), (1e-3, float("inf")), (float("nan"), 1.0), ("a", 1.0)],
)
def test_every_entry_point_checks_the_interval_with_one_check(lr_min, lr_max):
    key = jax.random.key(0)
    builds = [
        lambda: alrao_base(optax.identity(), key, lr_min, lr_max),
        lambda: scale_by_feature_lrs(key, lr_min, lr_max),
        lambda: sample_feature_lrs(key, {}, lr_min, lr_max),
        lambda: alrao_sgd(key, lr_min, lr_max, 2, momentum=0.9),
        lambda: alrao_adam(key, lr_min, lr_max, 2),
    ]
    messages = set()
    for build in builds:
        with pytest.raises(ValueError) as error:
            build()
        messages.add(str(error.value))
    assert len(messages) == 1, messages


def test_traced_interval_is_refused_naming_static_args():
    factory = optax.inject_hyperparams(
        lambda lr_min: alrao_base(optax.identity(), jax.random.key(0), lr_min, 1.0)
    )(lr_min=1e-3)
    params = {"Dense_0": {"kernel": jnp.ones((3, 4)), "bias": jnp.zeros(4)}}
    state = factory.init(params)
    with pytest.raises(ValueError, match="lr_min must be a concrete number.*static_args"):
        jax.jit(factory.update)(params, state, params)


# Without copies ``init`` warns (NoClassifierCopiesWarning, tested in tests/test_bad_inputs.py).
@pytest.mark.filterwarnings("ignore::randlr_jax.alrao.NoClassifierCopiesWarning")
def test_without_copies_alrao_sgd_is_alrao_base_also_with_an_injected_momentum():
    """``alrao_sgd`` on parameters without a head and ``alrao_base(optax.trace(mu))`` are one
    optimizer: the same updates, and both take a traced (injected) momentum."""
    params = {"Dense_0": {"kernel": jnp.ones((3, 4)), "bias": jnp.zeros(4)}}
    grads = jax.tree.map(lambda p: jnp.arange(p.size, dtype=p.dtype).reshape(p.shape), params)
    key = jax.random.key(3)

    def updates(tx, steps=3):
        state = tx.init(params)
        for _ in range(steps):
            out, state = jax.jit(tx.update)(grads, state, params)
        return out

    chex.assert_trees_all_equal(
        updates(alrao_sgd(key, 1e-3, 1.0, 1, momentum=0.9, nesterov=True)),
        updates(alrao_base(optax.trace(0.9, nesterov=True), key, 1e-3, 1.0)),
    )
    static = ("key", "lr_min", "lr_max", "num_copies")
    injected_sgd = optax.inject_hyperparams(alrao_sgd, static_args=static)(
        key=key, lr_min=1e-3, lr_max=1.0, num_copies=1, momentum=0.9
    )
    injected_base = optax.inject_hyperparams(
        lambda momentum: alrao_base(optax.trace(momentum), key, 1e-3, 1.0)
    )(momentum=0.9)
    chex.assert_trees_all_close(updates(injected_sgd), updates(injected_base), rtol=1e-6)
