"""The feature guard's check after the update covers a feature's bias as well as its kernel column.

A feature is its kernel column and its bias entry (``features @ kernel[:, f] + bias[f]``): an update that
makes only the bias entry non-finite (here through an infinite rate on that entry alone, the kernel column
staying finite) must mark the feature dead at that very step, zero its kernel column and bias entry, and
leave every parameter finite -- the expected state written out by hand, not another run of the guard.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from randlr_jax import alrao, models
from randlr_jax.alrao import _step as alrao_step
from randlr_jax.alrao._features import FeatureLRState
from randlr_jax.training import create_train_state

K, N, DIM, WIDTH, UNIT = 3, 2, 4, (5,), 2


def _infinite_bias_rate(node):
    if not isinstance(node, FeatureLRState):
        return node
    layer = node.lrs["body"]["dense_0"]
    new = {"kernel": layer["kernel"], "bias": layer["bias"].at[UNIT].set(jnp.inf)}
    return node._replace(lrs={**node.lrs, "body": {**node.lrs["body"], "dense_0": new}})


def test_a_feature_whose_bias_alone_becomes_non_finite_is_caught_after_the_update():
    model = models.make_model("mlp", widths=WIDTH, head=alrao.AlraoHead(K, num_copies=N))
    tx = alrao.alrao_sgd(jax.random.key(1), 1e-3, 1.0, N)
    state = create_train_state(model, tx, jax.random.key(0), jnp.zeros((1, DIM)))
    is_lr = lambda s: isinstance(s, FeatureLRState)  # noqa: E731
    state = state.replace(
        opt_state=jax.tree.map(_infinite_bias_rate, state.opt_state, is_leaf=is_lr)
    )
    rng = np.random.default_rng(0)
    batch = {
        "x": jnp.asarray(rng.normal(size=(8, DIM)), jnp.float32),
        "y": jnp.asarray(rng.integers(0, K, 8), jnp.int32),
    }
    step = jax.jit(alrao_step.make_alrao_train_step(model, tx, feature_guard=True))
    new_state, metrics = step(state, batch)

    expected_dead = np.arange(WIDTH[0]) == UNIT
    np.testing.assert_array_equal(
        np.asarray(alrao.feature_guard_dead(new_state)["body/dense_0"]), expected_dead
    )
    layer = new_state.params["body"]["dense_0"]
    np.testing.assert_array_equal(np.asarray(layer["kernel"])[:, UNIT], 0.0)
    assert float(layer["bias"][UNIT]) == 0.0
    assert int(metrics["dead_features"]) == 1
    assert jax.tree.all(jax.tree.map(lambda p: bool(jnp.isfinite(p).all()), new_state.params))
