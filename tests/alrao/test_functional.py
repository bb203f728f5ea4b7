"""Alrao without Flax: ``functional_loss`` / ``functional_step`` against the Linen step.

An MLP written as plain functions, given the parameters of the same Linen model, takes the same
Alrao steps (several, with momentum) as :func:`~randlr_jax.alrao.make_alrao_train_step`: parameters,
switch state and metrics equal to float tolerance.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from randlr_jax import alrao
from randlr_jax.models import Classifier
from randlr_jax.training import create_train_state
from tests.helpers import small_batches

K, N, D = 3, 4, 6
_BATCHES = small_batches(K)


class _MLP(nn.Module):
    @nn.compact
    def __call__(self, x, *, train=False):
        h = nn.relu(nn.Dense(D)(x))
        return nn.relu(nn.Dense(D)(h))


def _features_fn(p, x):
    """The same MLP as plain JAX on the Linen parameters."""
    h = jax.nn.relu(x @ p["Dense_0"]["kernel"] + p["Dense_0"]["bias"][None])
    return jax.nn.relu(h @ p["Dense_1"]["kernel"] + p["Dense_1"]["bias"][None])


def _tx():
    return alrao.alrao_sgd(jax.random.key(1), 1e-3, 3.0, N, momentum=0.9)


def test_functional_step_takes_the_linen_steps():
    model = Classifier(body=_MLP(), head=alrao.AlraoHead(num_outputs=K, num_copies=N))
    tx = _tx()
    state = create_train_state(model, tx, jax.random.key(0), _BATCHES[0]["x"])
    params, opt_state = state.params, state.opt_state
    switch = alrao.get_switch_state(state.model_state)
    linen_step = jax.jit(alrao.make_alrao_train_step(model, tx))
    step = jax.jit(alrao.functional_step, static_argnums=(0, 1))
    for batch in _BATCHES:
        state, want = linen_step(state, batch)
        params, opt_state, switch, got = step(
            _features_fn, tx, params, opt_state, switch, batch["x"], batch["y"]
        )
        for name in ("loss", "accuracy", "posterior", "copy_losses", "num_dropped"):
            np.testing.assert_allclose(got[name], want[name], rtol=1e-6, atol=1e-7, err_msg=name)
        close = lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)  # noqa: E731
        jax.tree.map(close, params, state.params)
        jax.tree.map(close, switch, alrao.get_switch_state(state.model_state))
    # The switch moved and the copies trained: the comparison is not between two idle models.
    assert not np.allclose(want["posterior"], 1.0 / N)


def test_functional_loss_gradients_are_alrao_s():
    """Features follow the mixture, each copy its own loss (as ``alrao_loss``)."""
    head = alrao.AlraoHead(num_outputs=K, num_copies=N)
    variables = head.init(jax.random.key(0), jnp.zeros((1, D)))
    copies, switch = variables["params"], variables["alrao_switch"]["state"]
    body = _MLP().init(jax.random.key(1), jnp.zeros((1, 5)))["params"]
    x, y = _BATCHES[0]["x"], _BATCHES[0]["y"]
    grad_fn = jax.jit(
        jax.grad(alrao.functional_loss, argnums=(1, 2), has_aux=True), static_argnums=0
    )
    (g_body, g_copies), aux = grad_fn(_features_fn, body, copies, switch, x, y)

    def mixture_loss(b):
        logp = jax.nn.log_softmax(alrao.apply_copies(copies, _features_fn(b, x)), axis=-1)
        log_mix = jax.nn.logsumexp(logp + jnp.log(alrao.switch_posterior(switch))[:, None, None], 0)
        return -jnp.mean(jnp.take_along_axis(log_mix, y[:, None], axis=-1))

    def copies_loss(c):
        logp = jax.nn.log_softmax(alrao.apply_copies(c, _features_fn(body, x)), axis=-1)
        labels = jnp.broadcast_to(y[None, :, None], (N, len(y), 1))
        return -jnp.sum(jnp.mean(jnp.take_along_axis(logp, labels, axis=-1), axis=(1, 2)))

    close = lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)  # noqa: E731
    jax.tree.map(close, g_body, jax.jit(jax.grad(mixture_loss))(body))
    jax.tree.map(close, g_copies, jax.jit(jax.grad(copies_loss))(copies))
    assert isinstance(aux["switch_state"], alrao.SwitchState)


def test_bad_inputs_are_refused_naming_them():
    head = alrao.AlraoHead(num_outputs=K, num_copies=N)
    variables = head.init(jax.random.key(0), jnp.zeros((1, D)))
    copies, switch = variables["params"], variables["alrao_switch"]["state"]
    x, y = _BATCHES[0]["x"][:, :D], _BATCHES[0]["y"]
    ident = lambda p, x: x  # noqa: E731
    with pytest.raises(ValueError, match="copies_params must be an AlraoHead's parameters"):
        alrao.functional_loss(ident, {}, copies["copies"], switch, x, y)
    with pytest.raises(ValueError, match="switch_state must be an averaging state"):
        alrao.functional_loss(ident, {}, copies, {"state": switch}, x, y)
    with pytest.raises(ValueError, match="features_fn must be a function"):
        alrao.functional_loss(None, {}, copies, switch, x, y)
    with pytest.raises(ValueError, match=r"params must be \{'body'"):
        alrao.functional_step(ident, _tx(), {"head": copies}, None, switch, x, y)
