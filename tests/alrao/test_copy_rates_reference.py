"""Alrao-SGD's classifier copies, against the closed form of their rates.

Copy ``j`` of ``N`` has the rate ``eta_j = lr_min (lr_max / lr_min)^(j / (N - 1))`` (log-spaced, Blier et
al. 2019, Section 3) and its update is ``-eta_j g_j``: the slice ``j`` of every leaf under ``head``.

References:
  Blier et al, `Learning with Random Learning Rates <https://arxiv.org/abs/1810.01322>`_, 2019.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from randlr_jax import alrao


def test_copy_j_is_updated_by_its_log_spaced_rate():
    lr_min, lr_max, n = 1e-3, 10.0, 5
    rates = lr_min * (lr_max / lr_min) ** (np.arange(n) / (n - 1))  # 1e-3, 1e-2, ..., 10
    tx = alrao.alrao_sgd(jax.random.key(0), lr_min, lr_max, n)
    params = {
        "body": {"dense_0": {"kernel": jnp.zeros((3, 2)), "bias": jnp.zeros((2,))}},
        "head": {"copies": {"kernel": jnp.zeros((n, 2, 4)), "bias": jnp.zeros((n, 4))}},
    }
    rng = np.random.default_rng(0)
    grads = jax.tree.map(lambda p: jnp.asarray(rng.normal(size=p.shape), jnp.float32), params)
    updates, _ = tx.update(grads, tx.init(params), params)
    for name in ("kernel", "bias"):
        g = np.asarray(grads["head"]["copies"][name])
        expected = -rates.reshape((n,) + (1,) * (g.ndim - 1)) * g
        np.testing.assert_allclose(updates["head"]["copies"][name], expected, rtol=1e-5)
