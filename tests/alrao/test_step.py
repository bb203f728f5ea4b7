"""The Alrao train step's dropout key: split from the state's key as the train step documents.

``make_alrao_train_step`` is ``make_train_step`` with Alrao's hooks, whose step 1 is ``dropout_key,
next_rng = split(state.rng)``: the forward pass draws its dropout masks from ``dropout_key`` and the
state carries ``next_rng`` to the next step. A body that records the mask it applied (in a mutable
collection of the model state) lets the test compare it with the mask drawn by hand from that key.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from randlr_jax.alrao import _copies as cc
from randlr_jax.alrao import _optimizers as alrao
from randlr_jax.alrao import _step as alrao_step
from randlr_jax.models import Classifier
from randlr_jax.training import create_train_state

K, N, D = 3, 2, 8


class _MaskRecordingBody(nn.Module):
    """A dense layer and dropout at rate 1/2 whose mask (``0`` or ``2`` per unit) is kept in the
    ``"probe"`` collection: the features are ``relu(h) * mask``, i.e. dropout of ``relu(h)``."""

    @nn.compact
    def __call__(self, x, *, train=False):
        h = nn.relu(nn.Dense(D)(x))
        mask = nn.Dropout(0.5, deterministic=not train)(jnp.ones_like(h))
        recorded = self.variable("probe", "mask", jnp.zeros_like, h)
        if train:
            recorded.value = mask
        return h * mask


_BATCH = {
    "x": np.random.default_rng(0).normal(size=(16, 5)).astype(np.float32),
    "y": np.random.default_rng(1).integers(0, K, 16).astype(np.int32),
}


def _mask_by_hand(model, state, key):
    """The mask ``model``'s features draw from dropout key ``key`` at ``state``'s parameters."""
    others = {k: v for k, v in state.model_state.items() if k != cc.SWITCH_COLLECTION}
    _, updated = model.apply(
        {"params": state.params, **others},
        _BATCH["x"],
        train=True,
        rngs={"dropout": key},
        method="features",
        mutable=["probe"],
    )
    return np.asarray(updated["probe"]["body"]["mask"])


def test_the_dropout_mask_comes_from_the_split_key_and_changes_every_step():
    model = Classifier(body=_MaskRecordingBody(), head=cc.AlraoHead(num_outputs=K, num_copies=N))
    tx = alrao.alrao_sgd(jax.random.key(0), 1e-2, 1.0, N)
    state = create_train_state(model, tx, jax.random.key(3), _BATCH["x"])
    step = jax.jit(alrao_step.make_alrao_train_step(model, tx))
    masks = []
    for _ in range(2):
        dropout_key, next_rng = jax.random.split(state.rng)  # the documented key rule
        expected = _mask_by_hand(model, state, dropout_key)
        state, _ = step(state, _BATCH)
        used = np.asarray(state.model_state["probe"]["body"]["mask"])
        np.testing.assert_array_equal(used, expected)
        assert set(np.unique(used).tolist()) == {0.0, 2.0}  # a real mask: some units dropped
        assert jax.random.key_data(state.rng).tolist() == jax.random.key_data(next_rng).tolist()
        masks.append(used)
    assert not np.array_equal(masks[0], masks[1])  # a new mask every step
