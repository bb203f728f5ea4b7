"""Tests of the model zoo: shapes, parameter counts against the papers, train/eval modes, errors.

The big CIFAR models are only traced (``jax.eval_shape``); real computation runs on the small models
and on shrunk BatchNorm models, each test compiling one jitted function (compiles dominate on CPU).
"""

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from randlr_jax.models import (
    MLP,
    MODELS,
    CharLSTM,
    Classifier,
    LanguageModel,
    WideBasicBlock,
    count_params,
    make_model,
    param_count_by_part,
)

CIFAR_SHAPE = (2, 32, 32, 3)
KEY = jax.random.key(0)


def _shapes(tree):
    return jax.tree_util.tree_map(lambda leaf: leaf.shape, tree)


# ----------------------------------------------------------------- shapes and parameter counts

# name, input shape, feature width, total parameters with a 10-class Dense head (exact for the
# PyTorch references: kuangliu/pytorch-cifar, mnist1d ConvBase, the WRN authors' code).
IMAGE_MODELS = [
    ("vgg19", CIFAR_SHAPE, 512, 20_040_522),
    ("mobilenetv2", CIFAR_SHAPE, 1280, 2_296_922),
    ("googlenet", CIFAR_SHAPE, 1024, 6_166_250),
    ("resnet18", CIFAR_SHAPE, 512, 11_173_962),
    ("wrn28_10", CIFAR_SHAPE, 640, 36_479_194),
    ("cnn1d", (3, 40), 125, 5_210),
    ("noh_mlp", (3, 28, 28, 1), 20, 784 * 20 + 20 + 20 * 20 + 20 + 20 * 10 + 10),
]


@pytest.fixture(scope="module")
def traced_models():
    """``name -> (model, variable shapes, output shape, feature shape)`` for the models above."""
    traced = {}
    for name, shape, _, _ in IMAGE_MODELS:
        model = make_model(name, num_classes=10)
        x = jax.ShapeDtypeStruct(shape, jnp.float32)
        variables = jax.eval_shape(model.init, KEY, x)
        out = jax.eval_shape(model.apply, variables, x)
        features = jax.eval_shape(
            lambda v, x, m=model: m.apply(v, x, method=m.features), variables, x
        )
        traced[name] = (model, variables, out, features)
    return traced


@pytest.mark.parametrize(("name", "shape", "width", "total"), IMAGE_MODELS)
def test_classifier_shapes_and_counts(traced_models, name, shape, width, total):
    model, variables, out, features = traced_models[name]
    assert isinstance(model, Classifier)
    assert out.shape == (shape[0], 10) and out.dtype == jnp.float32
    assert features.shape == (shape[0], width)
    params = variables["params"]
    assert set(params) == {"body", "head"}
    assert param_count_by_part(params) == {
        "body": total - (width * 10 + 10),
        "head": width * 10 + 10,
    }
    assert count_params(params) == total
    assert param_count_by_part(variables) == param_count_by_part(params)


# Alrao paper (Blier et al. 2018), Table 2, "without Alrao"; WRN paper 36.5M; ResNet-18 11.17M.
PAPER_COUNTS = {
    "googlenet": 6.166e6,
    "vgg19": 20.041e6,
    "mobilenetv2": 2.297e6,
    "resnet18": 11.17e6,
    "wrn28_10": 36.5e6,
}


@pytest.mark.parametrize("name", sorted(PAPER_COUNTS))
def test_parameter_counts_match_papers(traced_models, name):
    count = count_params(traced_models[name][1]["params"])
    assert abs(count - PAPER_COUNTS[name]) / PAPER_COUNTS[name] < 0.02, (name, count)


@pytest.mark.parametrize("name", ["vgg19", "mobilenetv2", "googlenet", "resnet18", "wrn28_10"])
def test_batchnorm_models_have_batch_stats(traced_models, name):
    model, variables, _, _ = traced_models[name]
    assert set(variables) == {"params", "batch_stats"}
    assert set(variables["batch_stats"]) == {"body"}
    x = jax.ShapeDtypeStruct(CIFAR_SHAPE, jnp.float32)
    rngs = {"dropout": KEY}
    out, updates = jax.eval_shape(
        lambda v, x: model.apply(v, x, train=True, mutable=["batch_stats"], rngs=rngs), variables, x
    )
    assert out.shape == (2, 10)
    assert _shapes(updates["batch_stats"]) == _shapes(variables["batch_stats"])


def test_char_lstm_shapes_count_and_param_paths():
    vocab, batch, length = 50, 3, 7
    model = make_model("char_lstm", vocab_size=vocab)
    assert isinstance(model, LanguageModel)
    tokens = jax.ShapeDtypeStruct((batch, length), jnp.int32)
    carry = model.initial_carry(batch)  # unbound module: needs no parameters
    variables = jax.eval_shape(model.init, KEY, tokens, carry)
    logits, new_carry = jax.eval_shape(model.apply, variables, tokens, carry)
    assert logits.shape == (batch, length, vocab)
    assert jax.tree_util.tree_structure(new_carry) == jax.tree_util.tree_structure(carry)
    assert _shapes(new_carry) == _shapes(carry) == (((batch, 100), (batch, 100)),) * 2
    params = variables["params"]
    # Alrao Table 2: LSTM (C) 0.172M (PyTorch's LSTM has two bias vectors per gate; Flax one).
    assert abs(count_params(params) - 0.172e6) / 0.172e6 < 0.02
    assert param_count_by_part(params) == {"body": 165_800, "head": 100 * vocab + vocab}
    # Per-unit learning-rate rules recognise LSTM cells by path; last axis = hidden unit.
    for layer in ("lstm_0", "lstm_1"):
        cell = params["body"][layer]["cell"]
        assert set(cell) == {"ii", "if", "ig", "io", "hi", "hf", "hg", "ho"}
        assert all(gate["kernel"].shape == (100, 100) for gate in cell.values())
    assert params["body"]["embed"]["embedding"].shape == (vocab, 100)


def test_width_multiplier_scales_widths():
    x = jnp.zeros((2, 40))
    for name, width in (("cnn1d", 125), ("mlp", 100)):
        model = make_model(name, num_classes=10, width_multiplier=3.0)
        variables = jax.eval_shape(model.init, KEY, x)
        features = jax.eval_shape(lambda v, m=model: m.apply(v, x, method=m.features), variables)
        assert features.shape == (2, 3 * width)
    model = make_model("mlp", num_classes=4, widths=(8, 6), width_multiplier=0.5)
    params = jax.eval_shape(model.init, KEY, x)["params"]
    assert _shapes(params["body"]) == {
        "dense_0": {"kernel": (40, 4), "bias": (4,)},
        "dense_1": {"kernel": (4, 3), "bias": (3,)},
    }
    for name, width in (("googlenet", 1024), ("mobilenetv2", 1280)):
        model = make_model(name, num_classes=10, width_multiplier=0.25)
        variables = jax.eval_shape(model.init, KEY, jnp.zeros(CIFAR_SHAPE))
        assert variables["params"]["head"]["kernel"].shape == (width // 4, 10)


# ----------------------------------------------------------------- real computation, small models


def _classification_loss(model, params, x, y):
    logits = model.apply({"params": params}, x, train=True)
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()


@pytest.mark.parametrize(
    ("name", "kwargs", "shape"),
    [
        ("mlp", {"widths": (16, 8), "activation": "tanh"}, (4, 5, 8)),
        ("noh_mlp", {}, (4, 784)),
        ("cnn1d", {}, (4, 40)),
    ],
)
def test_small_models_forward_backward_finite(name, kwargs, shape):
    model = make_model(name, num_classes=10, **kwargs)
    x = jax.random.normal(jax.random.key(1), shape)
    y = jax.random.randint(jax.random.key(2), (shape[0],), 0, 10)

    @jax.jit  # one compilation: init, forward and backward
    def init_loss_and_grad(key, x, y):
        params = model.init(key, x)["params"]
        loss, grads = jax.value_and_grad(lambda p: _classification_loss(model, p, x, y))(params)
        return params, loss, grads

    params, loss, grads = init_loss_and_grad(KEY, x, y)
    chex.assert_tree_all_finite((loss, grads))
    chex.assert_trees_all_equal_shapes(grads, params)
    assert float(loss) > 0
    # every layer receives gradient
    assert all(float(jnp.abs(g).sum()) > 0 for g in jax.tree_util.tree_leaves(grads))


def test_mlp_activation_names_and_callables():
    x = jax.random.normal(jax.random.key(3), (3, 4))
    by_name = MLP(widths=(5,), activation="sigmoid")
    by_callable = MLP(widths=(5,), activation=jax.nn.sigmoid)

    @jax.jit
    def run(x):
        variables = by_name.init(KEY, x)
        return variables, by_name.apply(variables, x), by_callable.apply(variables, x)

    variables, out_name, out_callable = run(x)
    dense = variables["params"]["dense_0"]
    expected = jax.nn.sigmoid(x @ dense["kernel"] + dense["bias"][None])
    chex.assert_trees_all_close(out_name, expected, rtol=1e-5)
    chex.assert_trees_all_close(out_callable, expected, rtol=1e-5)


def test_cnn1d_is_the_reference_convbase():
    model = make_model("cnn1d", num_classes=10)
    x = jax.random.normal(jax.random.key(4), (2, 40))

    @jax.jit
    def run(x):
        params = model.init(KEY, x)["params"]
        features = model.apply({"params": params}, x, method=model.features)
        # Reference computation (PyTorch Conv1d: stride 2, padding 1, cross-correlation).
        h = x[..., None]
        for i in range(3):
            conv = params["body"][f"conv_{i}"]
            h = jax.lax.conv_general_dilated(
                h, conv["kernel"], (2,), ((1, 1),), dimension_numbers=("NWC", "WIO", "NWC")
            )
            h = jax.nn.relu(h + conv["bias"][None, None])
        return params, features, h

    params, features, reference = run(x)
    assert _shapes(params["body"]) == {
        "conv_0": {"kernel": (5, 1, 25), "bias": (25,)},
        "conv_1": {"kernel": (3, 25, 25), "bias": (25,)},
        "conv_2": {"kernel": (3, 25, 25), "bias": (25,)},
    }
    assert reference.shape == (2, 5, 25)
    chex.assert_trees_all_close(features, reference.reshape((2, -1)), rtol=1e-5, atol=1e-6)


@pytest.fixture(scope="module")
def small_lstm():
    """A small char LSTM (dropout 0.5), its variables and a token batch, initialised once."""
    vocab = 9
    model = make_model("char_lstm", vocab_size=vocab, embed_dim=6, hidden_size=5, dropout_rate=0.5)
    tokens = jax.random.randint(jax.random.key(5), (2, 6), 0, vocab)
    carry = model.initial_carry(2)
    variables = jax.jit(model.init)(KEY, tokens, carry)
    return model, variables, tokens, carry


def test_char_lstm_forward_backward_and_carry(small_lstm):
    model, variables, tokens, carry = small_lstm

    @jax.jit  # one compilation for everything below
    def run(variables, tokens, carry, key):
        def loss(p):
            logits, new_carry = model.apply(
                {"params": p}, tokens[:, :-1], carry, train=True, rngs={"dropout": key}
            )
            ce = optax.softmax_cross_entropy_with_integer_labels(logits, tokens[:, 1:])
            return ce.mean(), new_carry

        loss_carry_grads = jax.value_and_grad(loss, has_aux=True)(variables["params"])
        full = model.apply(variables, tokens, carry)
        first = model.apply(variables, tokens[:, :3], carry)
        second = model.apply(variables, tokens[:, 3:], first[1])
        return loss_carry_grads, full, first, second

    ((loss, new_carry), grads), full, first, second = run(
        variables, tokens, carry, jax.random.key(6)
    )
    chex.assert_tree_all_finite((loss, grads, new_carry))
    assert all(float(jnp.abs(g).sum()) > 0 for g in jax.tree_util.tree_leaves(grads))
    # The carry makes truncated BPTT exact: two halves with the carry passed on = one full pass.
    chex.assert_trees_all_close(
        full[0], jnp.concatenate([first[0], second[0]], axis=1), rtol=1e-5, atol=1e-6
    )
    chex.assert_trees_all_close(full[1], second[1], rtol=1e-5, atol=1e-6)
    assert not np.allclose(first[1][0][1], 0.0)


def test_char_lstm_dropout_train_vs_eval(small_lstm):
    model, variables, tokens, carry = small_lstm
    no_drop = make_model("char_lstm", vocab_size=9, embed_dim=6, hidden_size=5, dropout_rate=0.0)

    @jax.jit
    def run(variables, tokens, carry):
        def train(key, m=model):
            return m.apply(variables, tokens, carry, train=True, rngs={"dropout": key})[0]

        return {
            "train_a": train(jax.random.key(1)),
            "train_b": train(jax.random.key(2)),
            "train_a2": train(jax.random.key(1)),
            # eval mode needs no rng; an rng, if given, changes nothing
            "eval_a": model.apply(variables, tokens, carry, train=False)[0],
            "eval_b": model.apply(
                variables, tokens, carry, train=False, rngs={"dropout": jax.random.key(2)}
            )[0],
            "no_drop": train(KEY, no_drop),
        }

    out = run(variables, tokens, carry)
    assert not np.allclose(out["train_a"], out["train_b"])
    chex.assert_trees_all_close(out["train_a"], out["train_a2"])
    chex.assert_trees_all_close(out["eval_a"], out["eval_b"])
    assert not np.allclose(out["eval_a"], out["train_a"])
    # With rate 0, training computes exactly what evaluation does.
    chex.assert_trees_all_close(out["no_drop"], out["eval_a"], rtol=1e-6)


def test_wide_block_dropout_only_in_train_mode():
    block = WideBasicBlock(features=4, dropout_rate=0.5)
    x = jax.random.normal(jax.random.key(8), (2, 4, 4, 4))

    @jax.jit
    def run(x):
        variables = block.init(KEY, x)

        def train(key):
            return block.apply(
                variables, x, train=True, mutable=["batch_stats"], rngs={"dropout": key}
            )[0]

        no_rng = block.apply(variables, x, train=False)  # eval mode needs no rng
        with_rng = block.apply(variables, x, train=False, rngs={"dropout": jax.random.key(1)})
        return train(jax.random.key(1)), train(jax.random.key(2)), no_rng, with_rng

    train_a, train_b, eval_a, eval_b = run(x)
    assert not np.allclose(train_a, train_b)
    chex.assert_trees_all_close(eval_a, eval_b)


def test_batchnorm_updates_batch_stats_in_train_mode_only():
    # The smallest BatchNorm model: VGG with a two-conv configuration, on a tiny input.
    model = make_model("vgg19", num_classes=3, cfg=(4, "M", 6, "M"))
    x = 2.0 + jax.random.normal(jax.random.key(9), (4, 8, 8, 3))
    x_other = x.at[1:].set(-x[1:])  # same example 0, different rest of the batch

    @jax.jit  # one compilation for everything below
    def run(x, x_other):
        variables = model.init(KEY, x)

        def step(inputs, train):
            return model.apply(variables, inputs, train=train, mutable=["batch_stats"])

        conv = variables["params"]["body"]["conv_0"]
        pre_bn = jax.lax.conv_general_dilated(
            x, conv["kernel"], (1, 1), ((1, 1), (1, 1)), dimension_numbers=("NHWC", "HWIO", "NHWC")
        )
        pre_bn = pre_bn + conv["bias"][None, None, None]
        train_out = (step(x, True), step(x_other, True))
        eval_out = (step(x, False), step(x_other, False))
        return variables, pre_bn, train_out, eval_out

    variables, pre_bn, train_out, eval_out = run(x, x_other)
    stats = variables["batch_stats"]["body"]
    assert _shapes(stats) == {
        "bn_0": {"mean": (4,), "var": (4,)},
        "bn_1": {"mean": (6,), "var": (6,)},
    }
    chex.assert_trees_all_equal(stats["bn_0"]["mean"], jnp.zeros(4))
    chex.assert_trees_all_equal(stats["bn_0"]["var"], jnp.ones(4))
    # PyTorch momentum 0.1: running = 0.9 * running + 0.1 * batch statistic.
    (out, updates), (out_other, _) = train_out
    new_stats = updates["batch_stats"]["body"]
    chex.assert_trees_all_close(
        new_stats["bn_0"]["mean"], 0.1 * pre_bn.mean(axis=(0, 1, 2)), rtol=1e-4, atol=1e-6
    )
    chex.assert_trees_all_close(
        new_stats["bn_0"]["var"], 0.9 + 0.1 * pre_bn.var(axis=(0, 1, 2)), rtol=1e-4
    )
    # Train mode normalises with the batch: changing the other examples changes example 0's output.
    assert not np.allclose(out[:1], out_other[:1])
    # Eval mode uses the running averages: example 0's output ignores the rest of the batch, and the
    # statistics do not move.
    (eval_x, eval_updates), (eval_x_other, _) = eval_out
    chex.assert_trees_all_close(eval_x[:1], eval_x_other[:1], rtol=1e-5, atol=1e-6)
    chex.assert_trees_all_equal(eval_updates["batch_stats"], variables["batch_stats"])


def test_custom_head_replaces_dense():
    class TwoHeads(nn.Module):
        @nn.compact
        def __call__(self, features):
            return jnp.stack([nn.Dense(3, name=f"copy_{i}")(features) for i in range(2)], axis=1)

    model = make_model("mlp", head=TwoHeads(), widths=(4,))
    x = jnp.zeros((5, 2))
    variables = model.init(KEY, x)
    assert model.apply(variables, x).shape == (5, 2, 3)
    assert set(variables["params"]["head"]) == {"copy_0", "copy_1"}


# ----------------------------------------------------------------- errors


def test_unknown_name_lists_known_names():
    with pytest.raises(ValueError, match="resnet18") as info:
        make_model("resnet19", num_classes=10)
    assert "'resnet19'" in str(info.value)
    for name in MODELS:
        assert name in str(info.value)


@pytest.mark.parametrize(
    ("name", "kwargs", "pattern"),
    [
        ("mlp", {"num_classes": 0}, r"num_classes.*0"),
        ("resnet18", {"num_classes": -3}, r"num_classes.*-3"),
        ("cnn1d", {"num_classes": 2.5}, r"num_classes.*2\.5"),
        ("mlp", {}, r"num_classes is required"),
        ("mlp", {"num_classes": 10, "widths": (20, 0)}, r"widths.*\(20, 0\)"),
        ("mlp", {"num_classes": 10, "widths": [-1]}, r"widths.*-1"),
        ("mlp", {"num_classes": 10, "activation": "sigmoidal"}, r"activation.*sigmoidal"),
        ("cnn1d", {"num_classes": 10, "width_multiplier": 0.0}, r"width_multiplier.*0\.0"),
        ("cnn1d", {"num_classes": 10, "channels": 0}, r"channels.*0"),
        ("googlenet", {"num_classes": 10, "width_multiplier": -1}, r"width_multiplier.*-1"),
        ("vgg19", {"num_classes": 10, "cfg": (64, "X")}, r"cfg.*'X'"),
        ("resnet18", {"num_classes": 10, "stage_sizes": (2, 2, 2)}, r"stage_sizes.*\(2, 2, 2\)"),
        ("wrn28_10", {"num_classes": 10, "depth": 27}, r"depth.*27"),
        ("wrn28_10", {"num_classes": 10, "widen_factor": 0}, r"widen_factor.*0"),
        ("wrn28_10", {"num_classes": 10, "dropout_rate": 1.0}, r"dropout_rate.*1\.0"),
        ("char_lstm", {"vocab_size": 0}, r"vocab_size.*0"),
        ("char_lstm", {"vocab_size": 50, "num_classes": 10}, r"num_classes.*10"),
        ("char_lstm", {"vocab_size": 50, "hidden_size": -2}, r"hidden_size.*-2"),
        ("char_lstm", {"vocab_size": 50, "dropout_rate": -0.1}, r"dropout_rate.*-0\.1"),
    ],
)
def test_bad_sizes_raise_informative_errors(name, kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        make_model(name, **kwargs)


def test_direct_construction_validates_and_initial_carry_checks_batch():
    with pytest.raises(ValueError, match=r"widths.*0"):
        MLP(widths=(0,))
    with pytest.raises(ValueError, match=r"vocab_size.*-1"):
        CharLSTM(vocab_size=-1)
    with pytest.raises(ValueError, match=r"batch_size.*0"):
        CharLSTM(vocab_size=5).initial_carry(0)
    with pytest.raises(ValueError, match="'body' and 'head'"):
        param_count_by_part({"dense": {}})
