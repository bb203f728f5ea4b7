"""Meta-training through unrolled optimizee training (randlr_jax.noh)."""

from __future__ import annotations

import functools

import chex
import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from randlr_jax.noh import _lstm_optimizer as lo
from randlr_jax.noh import _meta_training as mt
from randlr_jax.noh import _noh as noh

NOH = noh.LSTMRateProposer(num_layers=2, hidden_size=4)
DMOPT = lo.LSTMUpdateProposer(num_layers=2, hidden_size=4)
SMALL = noh.LSTMRateProposer(num_layers=1, hidden_size=4)  # where one layer shows the property
DIM, NUM_PROBLEMS = 4, 6


def _quadratics(key):
    """A family of random quadratics ``0.5 |A_i w - b_i|^2``; a batch picks some of them."""
    k1, k2 = jax.random.split(key)
    a = jax.random.normal(k1, (NUM_PROBLEMS, DIM, DIM)) / np.sqrt(DIM) + jnp.eye(DIM)[None]
    return {"A": a, "b": jax.random.normal(k2, (NUM_PROBLEMS, DIM))}


def _quadratic_loss(params, batch):
    residual = jnp.einsum("nij,j->ni", batch["A"], params["w"]) - batch["b"]
    return 0.5 * jnp.mean(jnp.sum(residual**2, axis=-1))


def _noh_maker(update_every=2, proposer=NOH):
    return lambda p: noh.noh_adam(p, proposer=proposer, update_every=update_every)


def _dmopt_maker(p):
    return lo.lstm_optimizer(p, proposer=DMOPT)


INIT = {"w": jnp.zeros((DIM,))}


@functools.partial(
    jax.jit, static_argnums=(0, 1), static_argnames=("unroll", "second_order", "remat", "seed")
)
def _meta_grad(maker, proposer, *, unroll=4, second_order=False, remat=False, seed=0):
    lstm_params = noh.init_proposer_params(proposer, jax.random.key(seed))
    loss = mt.make_truncation_loss(maker, _quadratic_loss, second_order=second_order, remat=remat)
    optimizee = mt.OptimizeeState(INIT, maker(lstm_params).init(INIT))
    indices = jnp.tile(jnp.arange(NUM_PROBLEMS)[None], (unroll, 1))
    return jax.grad(lambda p: loss(p, optimizee, _quadratics(jax.random.key(1)), indices)[0])(
        lstm_params
    )


@pytest.mark.parametrize("which", ["noh", "dmopt"])
def test_meta_gradient_reaches_every_lstm_parameter(which):
    maker, proposer = (_noh_maker(), NOH) if which == "noh" else (_dmopt_maker, DMOPT)
    grads = _meta_grad(maker, proposer)
    chex.assert_tree_all_finite(grads)
    norms = jax.tree.map(lambda g: float(jnp.linalg.norm(g)), grads)
    flat = jax.tree_util.tree_flatten_with_path(norms)[0]
    zero = [jax.tree_util.keystr(path) for path, n in flat if n == 0.0]
    # The first LSTM layer's input kernels must be trained too (a classic failure: they never are).
    assert not zero, f"no meta-gradient reaches {zero}"


def test_first_and_second_order_agree_on_one_step_and_differ_on_several():
    for unroll, equal in ((1, True), (3, False)):
        first = _meta_grad(_noh_maker(1, SMALL), SMALL, unroll=unroll)
        second = _meta_grad(_noh_maker(1, SMALL), SMALL, unroll=unroll, second_order=True)
        same = all(
            np.allclose(a, b, rtol=1e-4, atol=1e-9)
            for a, b in zip(jax.tree.leaves(first), jax.tree.leaves(second), strict=True)
        )
        assert same == equal, unroll


@pytest.mark.parametrize("second_order", [False, True])
def test_truncation_loss_and_meta_gradient_of_unrolled_sgd_by_hand(second_order):
    # The optimizee l(w; B) = 0.5 mean_{b in B} (w - b)^2 (gradient w - c, c = mean B), trained by SGD
    # at the meta-parameter lr: w_{t+1} = w_t - lr (w_t - c_t), L = sum_t l(w_{t+1}; B_t).
    def loss_fn(params, batch):
        return 0.5 * jnp.mean((params["w"] - batch["b"]) ** 2)

    data = {"b": jnp.array([1.0, -2.0, 0.5, 3.0])}
    indices = jnp.array([[0, 1], [2, 3], [1, 2]], jnp.int32)
    lr, w0 = 0.3, 2.0
    loss = mt.make_truncation_loss(
        lambda phi: optax.sgd(phi["lr"]), loss_fn, second_order=second_order
    )
    optimizee = mt.OptimizeeState({"w": jnp.array(w0)}, optax.sgd(lr).init({"w": jnp.array(w0)}))
    (meta_loss, (after, losses)), grads = jax.value_and_grad(loss, has_aux=True)(
        {"lr": jnp.array(lr)}, optimizee, data, indices
    )
    b = np.asarray(data["b"], np.float64)
    w, dw, total, dtotal = w0, 0.0, 0.0, 0.0
    for idx in np.asarray(indices):
        batch, c = b[idx], b[idx].mean()
        g = w - c
        # d w_{t+1} / d lr: the gradient's dependence on w_t is kept (second order) or dropped.
        dw = (1.0 - lr) * dw - g if second_order else dw - g
        w = w - lr * g
        total += 0.5 * np.mean((w - batch) ** 2)
        dtotal += (w - c) * dw
    np.testing.assert_allclose(meta_loss, total, rtol=1e-6)
    np.testing.assert_allclose(jnp.sum(losses), total, rtol=1e-6)
    np.testing.assert_allclose(after.params["w"], w, rtol=1e-6)
    np.testing.assert_allclose(grads["lr"], dtotal, rtol=1e-5)


def _hand_sgd_problem():
    """``l(w; B) = 0.5 mean_{b in B} (w - b)^2`` (gradient ``w - mean B``), three steps from ``w = 2``."""

    def loss_fn(params, batch):
        return 0.5 * jnp.mean((params["w"] - batch["b"]) ** 2)

    data = {"b": jnp.array([1.0, -2.0, 0.5, 3.0])}
    indices = jnp.array([[0, 1], [2, 3], [1, 2]], jnp.int32)
    return loss_fn, data, indices, 2.0


def _hand_sgd_terms(rate, w0, data, indices):
    """By hand: ``w_{t+1} = w_t - rate (w_t - c_t)`` and the terms ``l(w_{t+1}; B_t)``."""
    b = np.asarray(data["b"], np.float64)
    w, terms = w0, []
    for idx in np.asarray(indices):
        w = w - rate * (w - b[idx].mean())
        terms.append(0.5 * np.mean((w - b[idx]) ** 2))
    return w, terms


def test_meta_step_scores_each_updated_iterate_and_reports_the_last_one():
    # The meta-loss is the sum of l(w_{t+1}; B_t), the updated iterate on the batch that moved it:
    # not l(w_t; B_t) (the iterate before the update), and final_loss is its last term.
    loss_fn, data, indices, w0 = _hand_sgd_problem()
    meta_optimizer = optax.sgd(0.0)
    step = jax.jit(mt.make_meta_step(lambda phi: optax.sgd(phi["lr"]), loss_fn, meta_optimizer))
    phi = {"lr": jnp.array(0.3)}
    meta = mt.MetaState(
        phi, meta_optimizer.init(phi), jnp.zeros([], jnp.int32), jnp.zeros([], jnp.int32)
    )
    optimizee = mt.OptimizeeState({"w": jnp.array(w0)}, optax.sgd(0.3).init({"w": jnp.array(w0)}))
    _, after, metrics = step(meta, optimizee, data, indices)
    w, terms = _hand_sgd_terms(0.3, w0, data, indices)
    np.testing.assert_allclose(metrics["meta_loss"], sum(terms), rtol=1e-6)
    np.testing.assert_allclose(metrics["final_loss"], terms[-1], rtol=1e-6)
    np.testing.assert_allclose(after.params["w"], w, rtol=1e-6)
    # The iterate before each update would score otherwise: the two differ on this problem.
    b = np.asarray(data["b"], np.float64)
    before = 0.5 * np.mean((w0 - b[np.asarray(indices)[0]]) ** 2)  # l(w_0; B_0)
    assert abs(terms[0] - before) > 0.1


def test_a_finite_meta_loss_with_a_non_finite_meta_gradient_is_skipped():
    # The optimizee's rate 0.1 + sqrt(phi): at phi = 0 the loss is finite but d sqrt(phi) / d phi is
    # infinite, so the meta-gradient is not finite. The truncation is skipped: phi and the
    # meta-optimizer's state (Adam's count and moments) exactly as before, the skip counted; the
    # optimizee still advances (at rate 0.1).
    loss_fn, data, indices, w0 = _hand_sgd_problem()
    meta_optimizer = mt.make_meta_optimizer(0.1)
    step = jax.jit(
        mt.make_meta_step(lambda phi: optax.sgd(0.1 + jnp.sqrt(phi["lr"])), loss_fn, meta_optimizer)
    )

    def start(lr):
        phi = {"lr": jnp.array(lr)}
        zero = jnp.zeros([], jnp.int32)
        return mt.MetaState(phi, meta_optimizer.init(phi), zero, zero)

    optimizee = mt.OptimizeeState({"w": jnp.array(w0)}, optax.sgd(0.1).init({"w": jnp.array(w0)}))
    before = start(0.0)
    meta, after, metrics = step(before, optimizee, data, indices)
    w, terms = _hand_sgd_terms(0.1, w0, data, indices)
    np.testing.assert_allclose(metrics["meta_loss"], sum(terms), rtol=1e-6)
    assert not np.isfinite(float(metrics["meta_grad_norm"])) and not bool(metrics["finite"])
    chex.assert_trees_all_equal(meta.lstm_params, before.lstm_params)
    chex.assert_trees_all_equal(meta.opt_state, before.opt_state)
    assert (int(meta.step), int(meta.skipped)) == (1, 1)
    np.testing.assert_allclose(after.params["w"], w, rtol=1e-6)
    # Where the meta-gradient is finite (phi = 0.04: rate 0.3) the step is applied and not counted.
    applied, _, metrics = step(start(0.04), optimizee, data, indices)
    assert bool(metrics["finite"]) and (int(applied.step), int(applied.skipped)) == (1, 0)
    assert float(applied.lstm_params["lr"]) != 0.04
    assert int(optax.tree_utils.tree_get(applied.opt_state, "count")) == 1


def test_remat_gives_the_same_meta_gradient():
    plain = _meta_grad(_noh_maker(2, SMALL), SMALL, unroll=3)
    remat = _meta_grad(_noh_maker(2, SMALL), SMALL, unroll=3, remat=True)
    chex.assert_trees_all_close(plain, remat, rtol=1e-5, atol=1e-8)


def test_meta_training_lowers_the_meta_loss_on_random_quadratics():
    proposer = noh.LSTMRateProposer(num_layers=1, hidden_size=8)
    result = mt.meta_train(
        noh.init_proposer_params(proposer, jax.random.key(0)),
        lambda p: noh.noh_adam(p, proposer=proposer, update_every=2),
        _quadratic_loss,
        INIT,
        _quadratics(jax.random.key(1)),
        key=jax.random.key(2),
        batch_size=NUM_PROBLEMS,  # every problem each step: the meta-loss is deterministic
        horizon=40,
        unroll_length=10,
        num_meta_iterations=6,
        meta_learning_rate=3e-2,
    )
    per_iteration = [
        sum(r["meta_loss"] for r in result.history if r["meta_iteration"] == i) for i in range(6)
    ]
    assert result.skipped == 0
    # Measured: 91.9, 90.7, 88.6, 87.2, 86.8, 86.7.
    assert per_iteration[-1] < 0.97 * per_iteration[0], per_iteration
    assert all(b < a for a, b in zip(per_iteration, per_iteration[1:], strict=False)), per_iteration
    assert len(result.history) == 6 * 4


def test_non_finite_meta_loss_is_skipped_and_counted():
    lstm_params = noh.init_proposer_params(NOH, jax.random.key(0))
    data = _quadratics(jax.random.key(1))
    data["b"] = data["b"].at[0, 0].set(jnp.nan)
    result = mt.meta_train(
        lstm_params,
        _noh_maker(),
        _quadratic_loss,
        INIT,
        data,
        key=jax.random.key(2),
        batch_size=NUM_PROBLEMS,
        horizon=6,
        unroll_length=3,
        num_meta_iterations=2,
    )
    assert result.skipped == 4
    assert not any(r["finite"] for r in result.history)
    chex.assert_trees_all_equal(result.lstm_params, lstm_params)


def test_bad_arguments_raise():
    lstm_params = noh.init_proposer_params(NOH, jax.random.key(0))
    data = _quadratics(jax.random.key(1))
    kwargs = dict(key=jax.random.key(0), batch_size=2)
    with pytest.raises(ValueError, match="horizon must be a multiple of unroll_length"):
        mt.meta_train(
            lstm_params,
            _noh_maker(),
            _quadratic_loss,
            INIT,
            data,
            horizon=10,
            unroll_length=3,
            **kwargs,
        )
    with pytest.raises(ValueError, match="unroll_length"):
        mt.meta_train(
            lstm_params,
            _noh_maker(),
            _quadratic_loss,
            INIT,
            data,
            horizon=10,
            unroll_length=0,
            **kwargs,
        )
    with pytest.raises(ValueError, match="meta_learning_rate"):
        mt.make_meta_optimizer(0.0)
    with pytest.raises(ValueError, match="batch_size"):
        mt.sample_batch_indices(jax.random.key(0), 5, 3, 6)
    with pytest.raises(ValueError, match="lstm_params do not match"):
        mt.meta_train(
            noh.init_proposer_params(lo.LSTMUpdateProposer(hidden_size=3), jax.random.key(0)),
            _noh_maker(),
            _quadratic_loss,
            INIT,
            data,
            horizon=4,
            unroll_length=2,
            **kwargs,
        )


def test_batch_indices_are_shuffled_epochs():
    indices = mt.sample_batch_indices(jax.random.key(0), 10, 7, 3)  # 3 batches per epoch
    assert indices.shape == (7, 3) and indices.dtype == np.int32
    for epoch in range(2):
        seen = indices[3 * epoch : 3 * epoch + 3].reshape(-1)
        assert len(set(seen.tolist())) == 9


def test_batch_indices_follow_the_key_rule_and_reshuffle_every_epoch():
    # Epoch e draws its order from the e-th of split(key, epochs): permutation(k_e, n), the remainder
    # (n mod B examples) dropped; the epochs concatenated and cut into batches.
    key = jax.random.key(4)
    indices = mt.sample_batch_indices(key, 10, 7, 3)  # 3 batches an epoch: 3 epochs drawn
    orders = [np.asarray(jax.random.permutation(k, 10))[:9] for k in jax.random.split(key, 3)]
    np.testing.assert_array_equal(indices, np.concatenate(orders).reshape(-1, 3)[:7])
    epoch0, epoch1 = indices[:3].reshape(-1), indices[3:6].reshape(-1)
    assert not np.array_equal(epoch0, epoch1)  # reshuffled, not the same order again
    # Another key, another order.
    assert not np.array_equal(mt.sample_batch_indices(jax.random.key(5), 10, 7, 3), indices)


def test_save_and_load_round_trip(tmp_path):
    lstm_params = noh.init_proposer_params(NOH, jax.random.key(0))
    config = {"kind": "noh", "module": {"num_layers": 2, "hidden_size": 4}, "update_every": 10}
    path = tmp_path / "sub" / "noh.msgpack"
    mt.save_lstm_params(path, lstm_params, config)
    loaded, loaded_config = mt.load_lstm_params(path)
    chex.assert_trees_all_equal(loaded, lstm_params)
    assert loaded_config == config
    noh.noh_adam(loaded, proposer=noh.LSTMRateProposer(**loaded_config["module"]))
    with pytest.raises(ValueError, match="not a learned-optimizer file"):
        mt.load_lstm_params(flax.serialization.msgpack_serialize({"x": np.zeros(2)}))
