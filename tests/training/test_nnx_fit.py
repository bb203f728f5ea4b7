"""Flax NNX models through ``fit``, ``fit_population`` and the range test (``adapt_model``).

The reference is independent of the adapter: the equivalent Linen model started from the same
parameters (copied across by path), or, for dropout (whose masks Linen and NNX draw differently), a
hand-written NNX loop with ``nnx.Optimizer`` on the documented data order and dropout keys.
"""

from __future__ import annotations

import functools

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from randlr_jax.cyclical import classification_loss, lr_range_test
from randlr_jax.training import (
    LoopConfig,
    adapt_model,
    create_train_state,
    fit,
    fit_population,
    make_train_step,
    nnx_model,
)
from randlr_jax.training import _engine as engine
from randlr_jax.training import _plotting as plotting
from tests.helpers import RaiseAt, blob_splits

TX = optax.sgd(0.1, momentum=0.9)  # one object: equal models share their compiled steps
CONFIG = LoopConfig(
    epochs=2, batch_size=16, eval_batch_size=40, progress=False, num_devices=1, log_every=2
)
RTOL = 1e-5


@pytest.fixture(autouse=True)
def _no_figures(monkeypatch):
    # The learning-curve PNG costs more than the runs here; the numbers are what is tested.
    monkeypatch.setattr(plotting, "learning_curves", lambda *args, **kwargs: None)


class LinenNet(nn.Module):
    norm: bool = False

    @nn.compact
    def __call__(self, x, *, train: bool = False):
        x = nn.Dense(16)(x)
        if self.norm:
            x = nn.BatchNorm(use_running_average=not train)(x)
        return nn.Dense(3)(nn.relu(x))


class NNXNet(nnx.Module):
    def __init__(self, rngs: nnx.Rngs, *, dropout: float = 0.0):
        self.hidden = nnx.Linear(12, 16, rngs=rngs)
        self.drop = nnx.Dropout(dropout, rngs=rngs)
        self.out = nnx.Linear(16, 3, rngs=rngs)

    def __call__(self, x):
        return self.out(self.drop(jax.nn.relu(self.hidden(x))))


class NNXNormNet(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
        self.hidden = nnx.Linear(12, 16, rngs=rngs)
        self.norm = nnx.BatchNorm(16, rngs=rngs)  # Linen's defaults: momentum 0.99, epsilon 1e-5
        self.out = nnx.Linear(16, 3, rngs=rngs)

    def __call__(self, x):
        return self.out(jax.nn.relu(self.norm(self.hidden(x))))


def _to_nnx(linen_params, linen_stats=None):
    """Linen paths -> the NNX nets' paths."""
    names = {"Dense_0": "hidden", "Dense_1": "out", "BatchNorm_0": "norm"}
    params = {names[k]: v for k, v in linen_params.items()}
    if not linen_stats:
        return params, None
    return params, {"batch_stats": {names[k]: v for k, v in linen_stats["batch_stats"].items()}}


@functools.cache
def _linen_start(model):
    """The Linen model's initial variables in ``fit`` (``create_train_state`` from the seed)."""
    sample = blob_splits()["train"]["x"][:1]
    state = create_train_state(model, TX, jax.random.key(CONFIG.seed), sample)
    return state.params, state.model_state


def _nnx_copy(nnx_net, linen_model, splits):
    del splits  # the training split's shape: blob_splits()
    params, stats = _to_nnx(*_linen_start(linen_model))
    return nnx_model(nnx_net, params, stats or None)


def _assert_same_run(linen, nnx_result):
    params, stats = _to_nnx(linen.state.params, linen.state.model_state or None)
    chex.assert_trees_all_close(nnx_result.state.params, params, rtol=RTOL, atol=1e-6)
    best, _ = _to_nnx(linen.best_params)
    chex.assert_trees_all_close(nnx_result.best_params, best, rtol=RTOL, atol=1e-6)
    if stats is not None:
        chex.assert_trees_all_close(nnx_result.state.model_state, stats, rtol=RTOL, atol=1e-6)
    assert nnx_result.summary["best_epoch"] == linen.summary["best_epoch"]
    for a, b in zip(nnx_result.history, linen.history, strict=True):
        for key in ("train_loss", "validation_loss", "validation_accuracy"):
            assert a[key] == pytest.approx(b[key], rel=RTOL), key
    assert nnx_result.summary["test_loss"] == pytest.approx(linen.summary["test_loss"], rel=RTOL)


def test_fit_trains_an_nnx_model_as_the_equivalent_linen_model(tmp_path):
    # BatchNorm: parameters and statistics (the mutable collection) both checked. A plain MLP is
    # checked against Linen by the population and range tests, and with dropout against NNX below.
    splits = blob_splits()
    linen_model = LinenNet(norm=True)
    net = NNXNormNet(nnx.Rngs(0))
    _nnx_copy(net, linen_model, splits)
    before = jax.tree.map(np.asarray, nnx.to_pure_dict(nnx.state(net, nnx.Not(nnx.RngState))))
    linen = fit(linen_model, TX, splits, CONFIG, tmp_path / "linen")
    result = fit(net, TX, splits, CONFIG, tmp_path / "nnx")
    _assert_same_run(linen, result)
    # fit never changes the caller's module; nnx_model writes the best variables into it.
    after = nnx.to_pure_dict(nnx.state(net, nnx.Not(nnx.RngState)))
    chex.assert_trees_all_equal(jax.tree.map(np.asarray, after), before)
    trained = nnx_model(net, result.best_params, result.best_model_state)
    assert trained is net
    trained.eval()
    x = splits["test"]["x"]
    expected = linen_model.apply({"params": linen.best_params, **linen.best_model_state}, x)
    chex.assert_trees_all_close(trained(x), expected, rtol=RTOL, atol=1e-5)


def _fit_order_batches(splits, epoch, config=CONFIG):
    """The batches ``fit`` feeds in ``epoch``: ``default_rng([seed, epoch]).permutation(n)``."""
    order = np.random.default_rng([config.seed, epoch]).permutation(len(splits["train"]["y"]))
    for b in range(len(order) // config.batch_size):
        idx = order[b * config.batch_size : (b + 1) * config.batch_size]
        yield {k: v[idx] for k, v in splits["train"].items()}


def test_nnx_dropout_fit_is_a_hand_written_nnx_loop_and_resumes_exactly(tmp_path):
    splits = blob_splits()
    straight = fit(NNXNet(nnx.Rngs(0), dropout=0.5), TX, splits, CONFIG, tmp_path / "straight")
    # Reference: nnx.Optimizer and nnx.value_and_grad on fit's documented data order, the dropout
    # stream reseeded each step from the key fit's state holds (the third of split(key(seed), 3),
    # then split(rng) -> (dropout key, next rng) every step).
    model = NNXNet(nnx.Rngs(0), dropout=0.5)
    model.train()
    optimizer = nnx.Optimizer(model, TX, wrt=nnx.Param)
    rng = jax.random.split(jax.random.key(CONFIG.seed), 3)[2]

    @nnx.jit
    def step(model, optimizer, batch, key):
        nnx.reseed(model, default=key)

        def loss_fn(model):
            logits = model(batch["x"])
            return optax.softmax_cross_entropy_with_integer_labels(logits, batch["y"]).mean()

        loss, grads = nnx.value_and_grad(loss_fn)(model)
        optimizer.update(model, grads)
        return loss

    losses = []
    for epoch in range(CONFIG.epochs):
        for batch in _fit_order_batches(splits, epoch):
            key, rng = jax.random.split(rng)
            losses.append(float(step(model, optimizer, batch, key)))
    chex.assert_trees_all_close(
        straight.state.params, nnx.to_pure_dict(nnx.state(model, nnx.Param)), rtol=RTOL, atol=1e-6
    )
    assert straight.history[-1]["train_loss"] == pytest.approx(np.mean(losses[-6:]), rel=RTOL)

    # Interrupted inside epoch 2 (6 steps an epoch), then resumed: the uninterrupted run exactly.
    with pytest.raises(KeyboardInterrupt):
        fit(
            NNXNet(nnx.Rngs(0), dropout=0.5), TX, splits, CONFIG, tmp_path / "resumed",
            callbacks=[RaiseAt(8, KeyboardInterrupt)],
        )  # fmt: skip
    assert len((tmp_path / "resumed" / "metrics.jsonl").read_text().splitlines()) == 1
    resumed = fit(NNXNet(nnx.Rngs(0), dropout=0.5), TX, splits, CONFIG, tmp_path / "resumed")
    assert int(resumed.state.step) == int(straight.state.step) == 12
    chex.assert_trees_all_equal(resumed.state.params, straight.state.params)
    chex.assert_trees_all_equal(resumed.state.opt_state, straight.state.opt_state)
    chex.assert_trees_all_equal(resumed.best_params, straight.best_params)
    # The run directory records the module's values: another start point is another run.
    with pytest.raises(ValueError, match="model"):
        fit(NNXNet(nnx.Rngs(1), dropout=0.5), TX, splits, CONFIG, tmp_path / "resumed")


def test_fit_population_with_an_nnx_model_equals_the_linen_population(tmp_path):
    splits = blob_splits()
    config = LoopConfig(epochs=1, batch_size=16, eval_batch_size=40, progress=False, num_devices=1)
    rates = [0.05, 0.2]
    net = _nnx_copy(NNXNet(nnx.Rngs(0)), LinenNet(), splits)
    linen = fit_population(LinenNet(), rates, splits, config, tmp_path / "linen")
    result = fit_population(net, rates, splits, config, tmp_path / "nnx")
    chex.assert_trees_all_close(
        result.best_params, _to_nnx(linen.best_params)[0], rtol=RTOL, atol=1e-6
    )
    assert result.summary["best_learning_rate"] == linen.summary["best_learning_rate"]
    # One member's variables go back into the module; the population's whole stack is refused.
    member = jax.tree.map(lambda a: a[1], result.best_params)
    chex.assert_trees_all_close(
        nnx.to_pure_dict(nnx.state(nnx_model(net, member), nnx.Param)), member
    )
    with pytest.raises(ValueError, match="population"):
        nnx_model(net, result.best_params)


def test_range_test_with_an_nnx_model_equals_the_linen_one():
    splits = blob_splits()
    linen_params, _ = _linen_start(LinenNet())
    net = _nnx_copy(NNXNet(nnx.Rngs(0)), LinenNet(), splits)
    batches = [{k: v[i * 16 : (i + 1) * 16] for k, v in splits["train"].items()} for i in range(6)]
    kwargs = dict(start=1e-3, end=10.0, num_iter=6)
    linen = lr_range_test(
        classification_loss(LinenNet()), linen_params, batches, optax.sgd, **kwargs
    )
    params = adapt_model(net).init(None)["params"]
    result = lr_range_test(classification_loss(net), params, batches, optax.sgd, **kwargs)
    np.testing.assert_allclose(result.losses, linen.losses, rtol=RTOL)
    assert result.stop_reason == linen.stop_reason
    # The nnx.State of the parameters is accepted as they are.
    loss_fn = classification_loss(net)
    assert float(loss_fn(nnx.state(net, nnx.Param), batches[0])) == float(
        loss_fn(params, batches[0])
    )
    # Training mode with dropout and no key would draw one mask for ever: refused.
    dropout_net = NNXNet(nnx.Rngs(0), dropout=0.5)
    with pytest.raises(ValueError, match="rngs=\\{'dropout': key\\}"):
        classification_loss(dropout_net)(nnx.state(dropout_net, nnx.Param), batches[0])


def test_equal_structures_share_compiled_steps_and_modes_follow_train():
    a, b = adapt_model(NNXNet(nnx.Rngs(0))), adapt_model(NNXNet(nnx.Rngs(5)))
    assert a == b and hash(a) == hash(b)
    assert a != adapt_model(NNXNet(nnx.Rngs(0), dropout=0.5))  # another static attribute
    assert adapt_model(a) is a
    assert engine.compiled(make_train_step, a, TX) is engine.compiled(make_train_step, b, TX)
    net = NNXNet(nnx.Rngs(0), dropout=0.5)
    model = adapt_model(net)
    variables = model.init(None)
    x = jnp.ones((4, 12))
    eval_out = model.apply(variables, x, train=False, rngs={"dropout": jax.random.key(3)})
    chex.assert_trees_all_close(eval_out, net.out(jax.nn.relu(net.hidden(x))))
    first = model.apply(variables, x, train=True, rngs={"dropout": jax.random.key(3)})
    again = model.apply(variables, x, train=True, rngs={"dropout": jax.random.key(3)})
    other = model.apply(variables, x, train=True, rngs={"dropout": jax.random.key(4)})
    chex.assert_trees_all_equal(first, again)
    assert not np.allclose(first, eval_out) and not np.allclose(first, other)


class NNXCharRNN(nnx.Module):
    """``__call__(tokens, carry) -> (logits, carry)`` and ``initial_carry``: a language model."""

    def __init__(self, rngs: nnx.Rngs, vocab: int = 5, hidden: int = 8):
        self.embed = nnx.Embed(vocab, hidden, rngs=rngs)
        self.rnn = nnx.RNN(nnx.SimpleCell(hidden, hidden, rngs=rngs), return_carry=True)
        self.out = nnx.Linear(hidden, vocab, rngs=rngs)
        self.hidden = hidden

    def initial_carry(self, batch_size):
        return jnp.zeros((batch_size, self.hidden))

    def __call__(self, tokens, carry):
        carry, ys = self.rnn(self.embed(tokens), initial_carry=carry)
        return self.out(ys), carry


def test_an_nnx_language_model_steps_with_its_carry_as_nnx_value_and_grad():
    net = NNXCharRNN(nnx.Rngs(0))
    tokens = jnp.asarray(np.random.default_rng(0).integers(0, 5, (4, 6)), jnp.int32)
    batch = {"x": tokens, "y": jnp.roll(tokens, -1, axis=1)}
    carry = adapt_model(net).initial_carry(4) + 0.5
    tx = optax.sgd(0.3)
    state = create_train_state(net, tx, jax.random.key(0), tokens[:1], carry=carry)
    state, metrics = jax.jit(make_train_step(net, tx, task="language_model"))(state, batch)

    def loss_fn(model):
        logits, new_carry = model(batch["x"], carry)
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, batch["y"]).mean()
        return loss, new_carry

    (loss, new_carry), grads = nnx.jit(nnx.value_and_grad(loss_fn, has_aux=True))(net)
    params = nnx.to_pure_dict(nnx.state(net, nnx.Param))
    expected = jax.tree.map(lambda p, g: p - 0.3 * g, params, nnx.to_pure_dict(grads))
    assert float(metrics["loss"]) == pytest.approx(float(loss), rel=RTOL)
    chex.assert_trees_all_close(state.params, expected, rtol=RTOL, atol=1e-6)
    chex.assert_trees_all_close(state.carry, new_carry, rtol=RTOL, atol=1e-6)


def test_bad_nnx_inputs_are_refused_with_what_to_do():
    class NoParams(nnx.Module):
        def __call__(self, x):
            return x

    with pytest.raises(ValueError, match="nnx.Param"):
        make_train_step(NoParams(), TX)
    net = NNXNet(nnx.Rngs(0))
    with pytest.raises(TypeError, match="nnx.Module"):
        nnx_model(LinenNet(), {})
    with pytest.raises(ValueError, match="missing"):
        nnx_model(net, {"hidden": {"kernel": jnp.zeros((12, 16))}})
    with pytest.raises(ValueError, match="initial_carry"):
        adapt_model(net).initial_carry(4)
    norm = adapt_model(NNXNormNet(nnx.Rngs(0)))
    with pytest.raises(ValueError, match="batch_stats"):
        norm.apply({"params": norm.init(None)["params"]}, jnp.ones((2, 12)))


class AlraoNet(nnx.Module):
    def __init__(self, rngs):
        from randlr_jax.alrao import NNXAlraoHead

        self.body = nnx.Linear(12, 8, rngs=rngs)
        self.head = NNXAlraoHead(8, 3, num_copies=3, rngs=rngs)

    def features(self, x):
        return jax.nn.relu(self.body(x))

    def __call__(self, x):
        return self.head(self.features(x))


def test_fit_trains_an_nnx_alrao_model_with_the_nnx_alrao_step(tmp_path):
    from randlr_jax.alrao import (
        AlraoTrainingError,
        alrao_sgd,
        make_nnx_alrao_fit_step,
        make_nnx_alrao_train_step,
    )

    splits = blob_splits()
    config = LoopConfig(epochs=1, batch_size=16, eval_batch_size=40, progress=False, num_devices=1)
    tx = alrao_sgd(jax.random.key(1), 1e-3, 1.0, num_copies=3, momentum=0.9)
    # The plain step would train every copy on the mixture: refused, pointing at the Alrao step.
    with pytest.raises(AlraoTrainingError, match="make_nnx_alrao_train_step"):
        fit(AlraoNet(nnx.Rngs(0)), tx, splits, config, tmp_path / "plain")
    net = AlraoNet(nnx.Rngs(0))
    result = fit(
        net, tx, splits, config, tmp_path / "alrao", train_step=make_nnx_alrao_fit_step(net, tx)
    )
    # Reference: the NNX step with nnx.Optimizer, on fit's batches.
    model = AlraoNet(nnx.Rngs(0))
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
    step = nnx.jit(make_nnx_alrao_train_step())
    for batch in _fit_order_batches(splits, 0):
        metrics = step(model, optimizer, batch)
    chex.assert_trees_all_close(
        result.state.params, nnx.to_pure_dict(nnx.state(model, nnx.Param)), rtol=RTOL, atol=1e-6
    )
    chex.assert_trees_all_close(
        result.state.model_state["alrao_switch"]["head"]["switch"],
        model.head.switch.get_value(),
        rtol=RTOL,
        atol=1e-6,
    )
    np.testing.assert_allclose(
        result.history[-1]["last_posterior"], metrics["posterior"], rtol=RTOL
    )
    with pytest.raises(ValueError, match="features"):
        make_nnx_alrao_fit_step(NNXNet(nnx.Rngs(0)), tx)
