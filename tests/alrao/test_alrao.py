"""Alrao: classifier copies, the one-pass gradients, the jitted step, robustness and the optimizers."""

from __future__ import annotations

import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from randlr_jax import models
from randlr_jax.alrao import _copies as cc
from randlr_jax.alrao import _optimizers as alrao
from randlr_jax.alrao import _step as alrao_step
from randlr_jax.alrao import _switch as switch_lib
from randlr_jax.training import LoopConfig, create_train_state, fit, make_train_step

K, N, D = 3, 4, 6


def _data(n=48, seed=0, dim=5):
    rng = np.random.default_rng(seed)
    centers = np.random.default_rng(99).normal(size=(K, dim)).astype(np.float32) * 2
    y = rng.integers(0, K, n).astype(np.int32)
    return {"x": centers[y] + rng.normal(size=(n, dim)).astype(np.float32), "y": y}


def _model(num_copies=N, **head_kw):
    head = cc.AlraoHead(num_outputs=K, num_copies=num_copies, **head_kw)
    return models.make_model("mlp", widths=(D,), head=head)


def _state(model, tx, seed=0):
    return create_train_state(model, tx, jax.random.key(seed), _data()["x"][:1])


def _set_posterior(state, logits):
    """Give the switch a non-uniform posterior (as after some observations)."""
    sw = cc.get_switch_state(state.model_state)
    log_weights = jnp.stack([jnp.log(0.5) + jax.nn.log_softmax(logits)] * 2)
    return state.replace(
        model_state=cc.set_switch_state(state.model_state, sw._replace(log_weights=log_weights))
    )


def test_copy_learning_rates_are_log_spaced():
    lrs = cc.copy_learning_rates(1e-4, 1.0, 5)
    np.testing.assert_allclose(lrs, [1e-4, 1e-3, 1e-2, 1e-1, 1.0], rtol=1e-5)
    np.testing.assert_allclose(cc.copy_learning_rates(0.3, 7.0, 1), [0.3], rtol=1e-7)
    ratios = np.diff(np.log(cc.copy_learning_rates(2e-5, 3.0, 7)))
    np.testing.assert_allclose(ratios, ratios[0], rtol=1e-4)


def test_head_parameters_are_stacked_and_independent():
    model = _model()
    params = _state(model, optax.sgd(0.1)).params["head"]
    chex.assert_shape(params["copies"]["kernel"], (N, D, K))
    chex.assert_shape(params["copies"]["bias"], (N, K))
    kernels = np.asarray(params["copies"]["kernel"])
    assert not np.allclose(kernels[0], kernels[1])  # copies are initialised independently


def test_output_is_log_of_posterior_weighted_mixture():
    model = _model()
    state = _set_posterior(_state(model, optax.sgd(0.1)), jnp.array([0.3, -1.0, 2.0, 0.0]))
    x = _data(8)["x"]
    variables = {"params": state.params, **state.model_state}
    out = model.apply(variables, x)
    features = model.apply(variables, x, method="features")
    copy_logits = model.head.apply(
        {"params": state.params["head"]}, features, method="copy_outputs"
    )
    a = jax.nn.softmax(jnp.array([0.3, -1.0, 2.0, 0.0]))
    expected = jnp.log(jnp.einsum("j,jbk->bk", a, jax.nn.softmax(copy_logits, -1)))
    chex.assert_trees_all_close(out, expected, rtol=1e-5, atol=1e-6)
    chex.assert_trees_all_close(jnp.exp(out).sum(-1), jnp.ones(8), rtol=1e-5)


def test_one_backward_pass_gives_mixture_and_standalone_gradients():
    model = _model()
    tx = alrao.alrao_sgd(jax.random.key(1), 1e-3, 1.0, N)
    posterior_logits = jnp.array([1.0, 0.0, -0.5, 0.2])
    state = _set_posterior(_state(model, tx), posterior_logits)
    batch = _data(16, seed=3)
    captured = {}

    def capture_tx():
        def update(updates, opt_state, params=None, **_):
            captured["grads"] = updates
            return updates, opt_state

        return optax.GradientTransformationExtraArgs(lambda p: optax.EmptyState(), update)

    step = alrao_step.make_alrao_train_step(model, capture_tx())
    step(state.replace(opt_state=optax.EmptyState()), batch)
    grads = captured["grads"]

    log_a = jax.nn.log_softmax(posterior_logits)
    head_apply = lambda hp, f: model.head.apply({"params": hp}, f, method="copy_outputs")

    def features(body_params):
        return model.apply(
            {"params": {"body": body_params, "head": state.params["head"]}},
            batch["x"],
            method="features",
        )

    def mixture_loss(body_params):
        logp = jax.nn.log_softmax(head_apply(state.params["head"], features(body_params)), -1)
        picked = jnp.take_along_axis(
            logp, jnp.broadcast_to(batch["y"][None, :, None], (N, 16, 1)), -1
        )[..., 0]
        return -jnp.mean(jax.nn.logsumexp(log_a[:, None] + picked, axis=0))

    expected_body = jax.grad(mixture_loss)(state.params["body"])
    chex.assert_trees_all_close(grads["body"], expected_body, rtol=1e-4, atol=1e-6)

    f = features(state.params["body"])
    for j in range(N):

        def own_loss(copy_params, j=j):
            hp = jax.tree.map(
                lambda full, c, j=j: full.at[j].set(c), state.params["head"], copy_params
            )
            logits = head_apply(hp, f)[j]
            return optax.softmax_cross_entropy_with_integer_labels(logits, batch["y"]).mean()

        copy_params = jax.tree.map(lambda p, j=j: p[j], state.params["head"])
        expected = jax.grad(own_loss)(copy_params)
        got = jax.tree.map(lambda g, j=j: g[j], grads["head"])
        chex.assert_trees_all_close(got, expected, rtol=1e-4, atol=1e-6)


def test_single_copy_equal_rates_is_plain_sgd():
    eta = 0.05
    batch_stream = [_data(16, seed=s) for s in range(6)]
    alrao_model = _model(num_copies=1)
    plain_model = models.make_model("mlp", widths=(D,), num_classes=K)
    tx_alrao = alrao.alrao_sgd(jax.random.key(0), eta, eta, num_copies=1)
    tx_plain = optax.sgd(eta)
    s_alrao = _state(alrao_model, tx_alrao)
    s_plain = _state(plain_model, tx_plain)
    # Same initial weights: the Alrao head's single copy takes the plain head's kernel and bias.
    head = jax.tree.map(lambda p: p[None], s_plain.params["head"])
    s_alrao = s_alrao.replace(params={"body": s_plain.params["body"], "head": {"copies": head}})
    step_alrao = jax.jit(alrao_step.make_alrao_train_step(alrao_model, tx_alrao))
    step_plain = jax.jit(make_train_step(plain_model, tx_plain))
    for batch in batch_stream:
        s_alrao, m_alrao = step_alrao(s_alrao, batch)
        s_plain, m_plain = step_plain(s_plain, batch)
        np.testing.assert_allclose(m_alrao["loss"], m_plain["loss"], rtol=1e-5)
    chex.assert_trees_all_close(
        s_alrao.params["body"], s_plain.params["body"], rtol=1e-5, atol=1e-7
    )
    chex.assert_trees_all_close(
        s_alrao.params["head"]["copies"],
        jax.tree.map(lambda p: p[None], s_plain.params["head"]),
        rtol=1e-5,
        atol=1e-7,
    )


def test_step_updates_switch_with_copy_log_likelihoods():
    model = _model()
    tx = alrao.alrao_sgd(jax.random.key(0), 1e-3, 1.0, N)
    state = _state(model, tx)
    batch = _data(16, seed=5)
    new_state, metrics = jax.jit(alrao_step.make_alrao_train_step(model, tx))(state, batch)
    variables = {"params": state.params, **state.model_state}
    f = model.apply(variables, batch["x"], method="features")
    logits = model.head.apply({"params": state.params["head"]}, f, method="copy_outputs")
    ell = -jax.vmap(
        lambda z: optax.softmax_cross_entropy_with_integer_labels(z, batch["y"]).mean()
    )(logits)
    expected = switch_lib.switch_update(switch_lib.switch_init(N), ell)
    got = cc.get_switch_state(new_state.model_state)
    chex.assert_trees_all_close(got.log_weights, expected.log_weights, rtol=1e-5, atol=1e-6)
    assert int(got.step) == 2
    chex.assert_trees_all_close(
        metrics["posterior"], switch_lib.switch_posterior(expected), rtol=1e-5
    )
    chex.assert_trees_all_close(metrics["copy_losses"], -ell, rtol=1e-5)


def test_step_compiles_once():
    model = _model()
    tx = alrao.alrao_sgd(jax.random.key(0), 1e-3, 1.0, N, momentum=0.9)
    state = _state(model, tx)

    @jax.jit
    @chex.assert_max_traces(n=1)
    def step(state, batch):
        return alrao_step.make_alrao_train_step(model, tx)(state, batch)

    for s in range(3):
        state, _ = step(state, _data(16, seed=s))


def test_large_lr_max_stays_finite_where_sgd_diverges():
    batches = [_data(32, seed=s) for s in range(30)]
    plain = models.make_model("mlp", widths=(D,), num_classes=K)
    s_plain = _state(plain, optax.sgd(100.0))
    step_plain = jax.jit(make_train_step(plain, optax.sgd(100.0)))
    for b in batches:
        s_plain, m_plain = step_plain(s_plain, b)
    plain_loss = float(m_plain["loss"])
    assert not math.isfinite(plain_loss) or plain_loss > 1.0  # plain SGD at rate 100 does not train

    model = _model(num_copies=6)
    tx = alrao.alrao_sgd(jax.random.key(0), 1e-3, 100.0, 6)
    state = _state(model, tx)
    step = jax.jit(alrao_step.make_alrao_train_step(model, tx))
    for b in batches:
        state, metrics = step(state, b)
        assert np.isfinite(float(metrics["loss"]))
    chex.assert_tree_all_finite(state.params["body"])
    post = np.asarray(metrics["posterior"])
    assert np.isfinite(post).all() and abs(post.sum() - 1) < 1e-5
    out = model.apply({"params": state.params, **state.model_state}, batches[0]["x"])
    assert np.isfinite(np.asarray(out)).all()


def _head_momentum(opt_state):
    """The momentum (``trace``) of the head's copies, ``{"kernel", "bias"}`` with the copy axis first."""
    found = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(opt_state)[0]:
        where = jax.tree_util.keystr(path)
        if "['head']" in where and ".trace" in where:
            found[where.rsplit("['", 1)[1].rstrip("']")] = np.asarray(leaf)
    assert set(found) == {"kernel", "bias"}, found
    return found


def test_nonfinite_copy_is_dropped_and_frozen():
    model = _model()
    tx = alrao.alrao_sgd(jax.random.key(0), 1e-3, 1.0, N, momentum=0.9)
    state = _state(model, tx)
    step = jax.jit(alrao_step.make_alrao_train_step(model, tx))
    for s in range(2):  # every copy trains: its momentum is now non-zero
        state, _ = step(state, _data(16, seed=s))
    # Copy 2's bias goes NaN: the copy is dropped; its kernel stays finite, so freezing is visible.
    bias = state.params["head"]["copies"]["bias"].at[2].set(jnp.nan)
    head = {"copies": {**state.params["head"]["copies"], "bias": bias}}
    state = state.replace(params={**state.params, "head": head})
    kernel_at_drop = np.asarray(state.params["head"]["copies"]["kernel"]).copy()
    momentum_at_drop = _head_momentum(state.opt_state)
    assert np.abs(momentum_at_drop["kernel"][2]).min() > 0
    batch = _data(16)
    for k in range(1, 4):
        state, metrics = step(state, batch)
        assert float(metrics["posterior"][2]) == 0.0 and int(metrics["num_dropped"]) == 1
        assert np.isfinite(float(metrics["loss"]))
        kernel = np.asarray(state.params["head"]["copies"]["kernel"])
        # Frozen: the dropped copy's kernel bit for bit as it was, though its momentum is not zero...
        np.testing.assert_array_equal(kernel[2], kernel_at_drop[2])
        # ... and no gradient reaches its momentum, which only decays: m_k = 0.9^k m_0 (closed form).
        momentum = _head_momentum(state.opt_state)
        np.testing.assert_allclose(
            momentum["kernel"][2], 0.9**k * momentum_at_drop["kernel"][2], rtol=1e-5
        )
        np.testing.assert_allclose(
            momentum["bias"][2], 0.9**k * momentum_at_drop["bias"][2], rtol=1e-5
        )
        # The other copies train on: their kernels move.
        for j in (0, 1, 3):
            assert not np.array_equal(kernel[j], kernel_at_drop[j]), j
    chex.assert_tree_all_finite(state.params["body"])
    kept = jax.tree.map(lambda p: p[jnp.array([0, 1, 3])], state.params["head"])
    chex.assert_tree_all_finite(kept)
    out = model.apply({"params": state.params, **state.model_state}, batch["x"])
    chex.assert_tree_all_finite(out)


def test_regression_head_predicts_posterior_weighted_mean():
    head = cc.AlraoHead(num_outputs=2, num_copies=3, task="regression", sigma=0.5)
    model = models.make_model("mlp", widths=(4,), head=head)
    x = jnp.asarray(np.random.default_rng(0).normal(size=(5, 3)), jnp.float32)
    variables = model.init(jax.random.key(0), x)
    logits = jnp.array([0.0, 1.0, -2.0])
    sw = cc.get_switch_state(variables)
    sw = sw._replace(log_weights=jnp.stack([jnp.log(0.5) + jax.nn.log_softmax(logits)] * 2))
    variables = cc.set_switch_state(variables, sw)
    pred = model.apply(variables, x)
    f = model.apply(variables, x, method="features")
    means = model.head.apply({"params": variables["params"]["head"]}, f, method="copy_outputs")
    expected = jnp.einsum("j,jbk->bk", jax.nn.softmax(logits), means)
    chex.assert_trees_all_close(pred, expected, rtol=1e-5, atol=1e-6)
    # The loss: -mean log sum_j a_j N(y; mu_j, sigma^2).
    y = jnp.ones((5, 2))
    loss, aux = alrao.alrao_loss(
        means, means, y, jax.nn.log_softmax(logits), jnp.ones(3, bool), task="regression", sigma=0.5
    )
    dens = jnp.exp(-0.5 * ((y[None] - means) / 0.5) ** 2) / (0.5 * math.sqrt(2 * math.pi))
    mix = -jnp.mean(jnp.log(jnp.einsum("j,jb->b", jax.nn.softmax(logits), dens.prod(-1))))
    np.testing.assert_allclose(float(aux["mixture_loss"]), float(mix), rtol=1e-5)


def test_regression_training_step_learns():
    head = cc.AlraoHead(num_outputs=1, num_copies=4, task="regression")
    model = models.make_model("mlp", widths=(8,), head=head)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 3)).astype(np.float32)
    batch = {"x": x, "y": (x @ np.array([[1.0], [-2.0], [0.5]], np.float32))}
    tx = alrao.alrao_sgd(jax.random.key(0), 1e-3, 0.3, 4)
    state = create_train_state(model, tx, jax.random.key(0), x[:1])
    step = jax.jit(alrao_step.make_alrao_train_step(model, tx, task="regression"))
    first = None
    for _ in range(150):
        state, metrics = step(state, batch)
        first = float(metrics["loss"]) if first is None else first
    assert float(metrics["loss"]) < first - 0.5


def test_suggest_lr_is_posterior_weighted_geometric_mean():
    lrs = cc.copy_learning_rates(1e-4, 1e-2, 3)
    np.testing.assert_allclose(cc.suggest_lr(lrs, jnp.array([0.0, 1.0, 0.0])), 1e-3, rtol=1e-5)
    np.testing.assert_allclose(cc.suggest_lr(lrs, jnp.array([0.5, 0.0, 0.5])), 1e-3, rtol=1e-5)
    np.testing.assert_allclose(cc.suggest_lr(lrs, jnp.array([0.25, 0.5, 0.25])), 1e-3, rtol=1e-5)
    np.testing.assert_allclose(cc.suggest_lr(lrs, jnp.array([1.0, 0.0, 0.0])), 1e-4, rtol=1e-5)


def test_fit_with_alrao_resumes_exactly(tmp_path):
    splits = {"train": _data(64, 0), "validation": _data(32, 1), "test": _data(32, 2)}
    model = _model()
    tx = alrao.alrao_sgd(jax.random.key(7), 1e-3, 1.0, N, momentum=0.5)
    step = alrao_step.make_alrao_train_step(model, tx)
    config = LoopConfig(epochs=3, batch_size=16, progress=False, log_every=1)
    straight = fit(model, tx, splits, config, tmp_path / "a", train_step=step)

    def interrupt(s, m):
        if s >= 6:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fit(model, tx, splits, config, tmp_path / "b", train_step=step, callbacks=[interrupt])
    resumed = fit(model, tx, splits, config, tmp_path / "b", train_step=step)
    chex.assert_trees_all_equal(resumed.state.params, straight.state.params)
    chex.assert_trees_all_equal(resumed.state.model_state, straight.state.model_state)
    assert straight.summary["test_accuracy"] > 0.5


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(lr_min=0.0, lr_max=1.0), "lr_min"),
        (dict(lr_min=-1e-3, lr_max=1.0), "lr_min"),
        (dict(lr_min=1.0, lr_max=0.1), "lr_min"),
        (dict(lr_min=1e-3, lr_max=float("inf")), "lr_max"),
        (dict(lr_min=float("nan"), lr_max=1.0), "lr_min"),
        (dict(lr_min=1e-3, lr_max=1.0, num_copies=0), "num_copies"),
        (dict(lr_min=1e-3, lr_max=1.0, momentum=1.5), "momentum"),
    ],
)
def test_bad_arguments_raise_at_construction(kwargs, match):
    kwargs = {"num_copies": 3, **kwargs}
    with pytest.raises(ValueError, match=match):
        alrao.alrao_sgd(jax.random.key(0), **kwargs)


def test_bad_head_arguments():
    x = jnp.zeros((2, 3))
    for kw, match in (
        (dict(num_copies=0), "num_copies"),
        (dict(theta=1.5), "theta"),
        (dict(task="ranking"), "task"),
        (dict(averaging="median"), "averaging"),
    ):
        model = models.make_model("mlp", widths=(4,), head=cc.AlraoHead(num_outputs=2, **kw))
        with pytest.raises(ValueError, match=match):
            model.init(jax.random.key(0), x)
    with pytest.raises(ValueError, match="AlraoHead"):
        alrao_step.make_alrao_train_step(
            models.make_model("mlp", widths=(4,), num_classes=2), optax.sgd(0.1)
        )


def test_learning_rate_scale_schedule_divides_all_rates():
    params = {
        "body": {"Dense_0": {"kernel": jnp.ones((3, 4)), "bias": jnp.ones(4)}},
        "head": {"copies": {"kernel": jnp.ones((2, 4, 3)), "bias": jnp.ones((2, 3))}},
    }
    grads = jax.tree.map(jnp.ones_like, params)
    plain = alrao.alrao_sgd(jax.random.key(0), 1e-3, 1.0, 2)
    scheduled = alrao.alrao_sgd(
        jax.random.key(0), 1e-3, 1.0, 2, learning_rate_scale=lambda step: 1.0 / (1.0 + step)
    )
    s_plain, s_sched = plain.init(params), scheduled.init(params)
    for t in range(3):
        u_plain, s_plain = plain.update(grads, s_plain, params)
        u_sched, s_sched = scheduled.update(grads, s_sched, params)
        chex.assert_trees_all_close(
            u_sched, jax.tree.map(lambda u, t=t: u / (1.0 + t), u_plain), rtol=1e-6
        )


def test_head_routing_by_path():
    params = {
        "body": {"Dense_0": {"kernel": jnp.ones((3, 4))}},
        "head": {"copies": {"kernel": jnp.ones((2, 4, 3))}},
    }
    labels = alrao.head_label_fn()(params)
    assert labels == {
        "body": {"Dense_0": {"kernel": "body"}},
        "head": {"copies": {"kernel": "head"}},
    }
    tx = alrao.alrao_sgd(jax.random.key(0), 1e-2, 1.0, 2)
    updates, _ = tx.update(jax.tree.map(jnp.ones_like, params), tx.init(params), params)
    np.testing.assert_allclose(
        np.asarray(updates["head"]["copies"]["kernel"][:, 0, 0]), [-1e-2, -1.0], rtol=1e-6
    )
    body_rates = -np.asarray(updates["body"]["Dense_0"]["kernel"])
    assert (body_rates >= 1e-2 - 1e-9).all() and (body_rates <= 1.0 + 1e-6).all()
    assert len(np.unique(body_rates[0])) == 4  # one rate per feature (output unit)
    np.testing.assert_allclose(body_rates, np.broadcast_to(body_rates[:1], body_rates.shape))


def test_output_stays_finite_when_every_copy_is_dropped():
    model = _model()
    state = _state(model, optax.sgd(0.1))
    head = jax.tree.map(lambda p: jnp.full_like(p, jnp.nan), state.params["head"])
    variables = {"params": {**state.params, "head": head}, **state.model_state}
    out = model.apply(variables, _data(8)["x"])
    chex.assert_trees_all_close(out, jnp.full((8, K), -math.log(K)), rtol=1e-6)


def test_step_passes_the_mixture_loss_and_extra_args_to_the_optimizer():
    # The optimizer's ``value`` is the mixture's loss (what is reported), not the objective
    # differentiated (mixture plus the copies' own losses).
    def recording_tx():
        def init(params):
            return {"value": jnp.zeros(()), "scale": jnp.zeros(())}

        def update(updates, state, params=None, *, value, scale):
            return jax.tree.map(jnp.zeros_like, updates), {"value": value, "scale": scale}

        return optax.GradientTransformationExtraArgs(init, update)

    model = _model()
    tx = recording_tx()
    state = _state(model, tx)
    batch = _data(16, seed=4)
    step = alrao_step.make_alrao_train_step(
        model, tx, extra_args_fn=lambda s, b, loss: {"scale": 2.0 * loss}
    )
    new_state, metrics = jax.jit(step)(state, batch)
    # Independent reference: the model's output is the log of the posterior-weighted mixture.
    log_mixture = model.apply({"params": state.params, **state.model_state}, batch["x"])
    expected = -jnp.mean(jnp.take_along_axis(log_mixture, batch["y"][:, None], -1))
    np.testing.assert_allclose(metrics["loss"], expected, rtol=1e-5)
    np.testing.assert_allclose(new_state.opt_state["value"], expected, rtol=1e-5)
    np.testing.assert_allclose(new_state.opt_state["scale"], 2.0 * expected, rtol=1e-5)


def test_copy_with_overflowing_outputs_is_frozen_and_its_momentum_stays_finite():
    model = _model()
    tx = alrao.alrao_sgd(jax.random.key(0), 1e-2, 1.0, N, momentum=0.9)
    state = _state(model, tx)
    step = jax.jit(alrao_step.make_alrao_train_step(model, tx))
    for s in range(2):  # the momentum of every copy is now non-zero
        state, _ = step(state, _data(16, seed=s))
    # Copy 2's parameters stay finite but its outputs overflow: the step drops it.
    kernel = state.params["head"]["copies"]["kernel"].at[2].set(3e38)
    head = {"copies": {**state.params["head"]["copies"], "kernel": kernel}}
    state = state.replace(params={**state.params, "head": head})
    frozen = jax.tree.map(lambda p: np.asarray(p[2]).copy(), state.params["head"])
    state, metrics = step(state, _data(16, seed=5))
    assert int(metrics["num_dropped"]) == 1 and float(metrics["posterior"][2]) == 0.0
    # No update reaches it although its momentum is not zero; the optimizer's state stays finite.
    after = jax.tree.map(lambda p: np.asarray(p[2]), state.params["head"])
    jax.tree.map(np.testing.assert_array_equal, after, frozen)
    for leaf in jax.tree.leaves(state.opt_state):
        if jnp.issubdtype(leaf.dtype, jnp.floating):
            assert np.isfinite(np.asarray(leaf)).all()
    chex.assert_tree_all_finite(state.params["body"])


@pytest.mark.parametrize("chunk_size", [None, 2])
def test_a_copy_with_finite_params_whose_outputs_overflow_is_dropped_though_its_losses_are_finite(
    chunk_size,
):
    """``alrao_loss`` drops a copy whose parameters *or outputs* are non-finite. Copy 2's class-0 logit
    overflows to ``-inf`` (its kernel column at ``-3e38``, every parameter finite) on a batch with no
    label 0: its log-likelihoods stay finite, so only the outputs' check can drop it. Unchunked and in
    chunks of copies alike."""
    model = _model(**({} if chunk_size is None else {"copy_chunk_size": chunk_size}))
    tx = alrao.alrao_sgd(jax.random.key(0), 1e-2, 1.0, N)
    state = _state(model, tx)
    data = _data(64, seed=7)
    batch = {k: v[data["y"] != 0][:16] for k, v in data.items()}
    kernel = state.params["head"]["copies"]["kernel"].at[2, :, 0].set(-3e38)
    head = {"copies": {**state.params["head"]["copies"], "kernel": kernel}}
    state = state.replace(params={**state.params, "head": head})
    chex.assert_tree_all_finite(state.params)
    # The premise, by hand: copy 2's outputs are not all finite, its targets' log-probabilities are.
    features = model.apply({"params": state.params}, batch["x"], method="features")
    outputs = cc.apply_copies(state.params["head"], features)[2]
    assert not np.isfinite(np.asarray(outputs)).all()
    target_logp = jnp.take_along_axis(jax.nn.log_softmax(outputs), batch["y"][:, None], -1)
    assert np.isfinite(np.asarray(target_logp)).all()
    frozen = np.asarray(kernel[2]).copy()
    state, metrics = jax.jit(alrao_step.make_alrao_train_step(model, tx))(state, batch)
    assert int(metrics["num_dropped"]) == 1 and float(metrics["posterior"][2]) == 0.0
    assert np.isfinite(float(metrics["loss"]))
    np.testing.assert_array_equal(state.params["head"]["copies"]["kernel"][2], frozen)
    chex.assert_tree_all_finite(state.params["body"])


def test_catch_up_resets_copies_below_the_threshold_after_the_posterior_update():
    model = _model()
    tx = alrao.alrao_sgd(jax.random.key(0), 1e-3, 1.0, N)
    state = _set_posterior(_state(model, tx), jnp.array([2.0, 0.0, 1.0, -3.0]))
    batch = _data(16, seed=6)
    plain, m_plain = jax.jit(alrao_step.make_alrao_train_step(model, tx))(state, batch)
    log_post = np.log(np.asarray(m_plain["posterior"], np.float64))
    order = np.sort(log_post)
    threshold = float(0.5 * (order[1] + order[2]))  # the two least likely copies are reset
    step = alrao_step.make_alrao_train_step(model, tx, catch_up=True, catch_up_threshold=threshold)
    caught, m_caught = jax.jit(step)(state, batch)
    np.testing.assert_allclose(m_caught["posterior"], m_plain["posterior"], rtol=1e-6)
    a = np.exp(log_post)
    reset = log_post < threshold
    assert reset.sum() == 2
    for got, updated in zip(
        jax.tree.leaves(caught.params["head"]), jax.tree.leaves(plain.params["head"]), strict=True
    ):
        updated = np.asarray(updated, np.float64)
        average = np.tensordot(a, updated, axes=1) / a.sum()
        expected = np.where(reset.reshape((-1,) + (1,) * (updated.ndim - 1)), average, updated)
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-7)
    chex.assert_trees_all_equal(caught.params["body"], plain.params["body"])


def _gaussian_nll_of_zero(y, sigma):
    """Hand-computed: mean over examples of -log N(y; 0, sigma^2 I)."""
    y = np.asarray(y, np.float64)
    per_output = 0.5 * (y / sigma) ** 2 + math.log(sigma) + 0.5 * math.log(2 * math.pi)
    return float(per_output.sum(-1).mean())


@pytest.mark.parametrize("chunk_size", [None, 3])
def test_every_copy_dropped_reports_the_loss_of_the_prediction_made(chunk_size):
    # The prediction is then uniform (regression: zero), so the reported loss is its loss: log K an
    # example, never the -0.0 of a perfect fit; the objective's gradient stays finite (and zero).
    rng = np.random.default_rng(0)
    head = {
        "copies": {
            "kernel": jnp.asarray(rng.normal(size=(N, D, K)), jnp.float32),
            "bias": jnp.asarray(rng.normal(size=(N, K)), jnp.float32),
        }
    }
    features = jnp.asarray(rng.normal(size=(5, D)), jnp.float32)
    log_post = jax.nn.log_softmax(jnp.arange(N, dtype=jnp.float32))
    dropped = jnp.zeros(N, bool)
    labels = jnp.asarray([0, 1, 2, 0, 1], jnp.int32)
    targets = jnp.asarray(rng.normal(size=(5, K)), jnp.float32)

    def loss(head, task, y):
        if chunk_size is None:
            out = cc.apply_copies(head, features)
            return alrao.alrao_loss(out, out, y, log_post, dropped, task=task, sigma=0.5)
        return alrao.alrao_loss_chunked(
            cc.apply_copies, head, features, y, log_post, dropped,
            chunk_size=chunk_size, task=task, sigma=0.5,
        )  # fmt: skip

    for task, y, expected in (
        ("classification", labels, math.log(K)),
        ("regression", targets, _gaussian_nll_of_zero(targets, 0.5)),
    ):
        (_, aux), grads = jax.value_and_grad(loss, has_aux=True)(head, task, y)
        np.testing.assert_allclose(float(aux["mixture_loss"]), expected, rtol=1e-6, err_msg=task)
        assert not np.asarray(aux["finite"]).any()
        for g in jax.tree.leaves(grads):
            np.testing.assert_array_equal(g, 0.0)
    # Non-finite outputs drop every copy too (finite parameters): the same loss.
    nan_features = features.at[0, 0].set(jnp.nan)
    out = cc.apply_copies(head, nan_features)
    _, aux = alrao.alrao_loss(out, out, labels, log_post, jnp.ones(N, bool))
    np.testing.assert_allclose(float(aux["mixture_loss"]), math.log(K), rtol=1e-6)


def test_step_reports_all_dropped_and_the_uniform_loss():
    model = _model()
    tx = alrao.alrao_sgd(jax.random.key(0), 1e-3, 1.0, N)
    state = _state(model, tx)
    step = jax.jit(alrao_step.make_alrao_train_step(model, tx))
    batch = _data(16, seed=7)
    _, healthy = step(state, batch)
    assert not bool(healthy["all_dropped"]) and not bool(healthy["dead"])
    head = jax.tree.map(lambda p: jnp.full_like(p, jnp.nan), state.params["head"])
    _, metrics = step(state.replace(params={**state.params, "head": head}), batch)
    assert bool(metrics["all_dropped"]) and bool(metrics["dead"])
    assert int(metrics["num_dropped"]) == N
    np.testing.assert_allclose(float(metrics["loss"]), math.log(K), rtol=1e-6)
