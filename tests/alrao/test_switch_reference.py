"""The switch's default prior, written out in closed form.

The authors' code uses ``theta = 0.9999`` (the paper's text says ``0.999``): the prior puts
``theta / N`` on "will switch again" and ``(1 - theta) / N`` on "last segment" for every head, and after
one observation ``ell`` (``t = 1``, ``pi_1 = 1/2``) the recursion of van Erven, Grünwald and de Rooij
gives, with ``A = sum_j theta e^{ell_j} / N`` the mass that may switch,

    w_a,j ∝ (theta / N) e^{ell_j} / 2 + theta A / (2 N),    w_b,j ∝ ((1 - theta) / N) e^{ell_j}
                                                               + (1 - theta) A / (2 N).

References:
  Blier et al, `Learning with Random Learning Rates <https://arxiv.org/abs/1810.01322>`_, 2019
  (Appendix A, and the authors' code); van Erven, Grünwald and de Rooij, Catching up faster in Bayesian
  model selection and model averaging, NeurIPS 2007.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from randlr_jax.alrao import _switch as sw

THETA = 0.9999  # the authors' code


def _first_update_by_hand(ell, theta):
    n = len(ell)
    likelihood = np.exp(np.asarray(ell, np.float64))
    switch_mass = np.sum(theta / n * likelihood)  # A
    a = theta / n * likelihood * 0.5 + theta * switch_mass * 0.5 / n
    b = (1 - theta) / n * likelihood + (1 - theta) * switch_mass * 0.5 / n
    total = a.sum() + b.sum()
    return np.stack([a, b]) / total


def test_default_prior_is_the_authors_theta():
    for state in (sw.switch_init(4), sw.make_averager("switch", 4).init()):
        expected = np.log(np.array([[THETA / 4] * 4, [(1 - THETA) / 4] * 4]))
        np.testing.assert_allclose(state.log_weights, expected, rtol=1e-6)
        np.testing.assert_allclose(state.log1m_theta, math.log(1 - THETA), rtol=1e-6)


def test_first_update_with_the_default_prior_by_hand():
    ell = [-0.3, -1.7, -4.0]
    state = jax.jit(sw.switch_update)(sw.switch_init(3), jnp.asarray(ell))
    weights = _first_update_by_hand(ell, THETA)
    np.testing.assert_allclose(np.exp(state.log_weights), weights, rtol=2e-5)
    np.testing.assert_allclose(sw.switch_posterior(state), weights.sum(axis=0), rtol=2e-5)
