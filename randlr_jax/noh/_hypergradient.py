"""Hypergradient descent on the learning rate (Baydin et al. 2018): SGD-HD and Adam-HD.

A base optimizer proposes a direction ``u_t`` (``g_t`` for SGD, ``m_hat_t / (sqrt(v_hat_t) + eps)`` for
Adam) and the step is ``w_t = w_{t-1} - alpha_t u_t``. The derivative of the loss after the previous step
with respect to the rate that made it is

.. math::

    \\frac{\\partial l(w_{t-1})}{\\partial \\alpha_{t-1}}
        = \\nabla l(w_{t-1}) \\cdot \\frac{\\partial w_{t-1}}{\\partial \\alpha_{t-1}}
        = -\\langle g_t, u_{t-1} \\rangle,

so one step of gradient descent on the scalar rate, with the hypergradient learning rate ``beta``, is

.. math::

    \\alpha_t = \\alpha_{t-1} + \\beta \\langle g_t, u_{t-1} \\rangle,

the inner product taken over the whole parameter tree (one scalar rate for the whole model, as in Baydin
et al.'s algorithms). At the first step there is no previous direction (it is stored as zero), so the rate
is unchanged and the first step uses ``alpha_0``. The rate is not clipped (as in the paper): a ``beta``
that is too large can drive it negative.

The rate lives in the state (``HypergradientState.learning_rate``) and can be read for logging, e.g.
``optax.tree_utils.tree_get(opt_state, "learning_rate")``.

References:
  Baydin, Cornish, Martinez Rubio, Schmidt, Wood, `Online Learning Rate Adaptation with Hypergradient
  Descent <https://arxiv.org/abs/1703.04782>`_, 2018.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import chex
import jax
import jax.numpy as jnp
import optax
from jax.typing import ArrayLike

from randlr_jax import _checks as checks


class HypergradientState(NamedTuple):
    """State of :func:`hypergradient_descent`."""

    count: chex.Array  # () int32; steps taken
    learning_rate: chex.Array  # () float32; the current rate alpha_t
    previous_direction: Any  # tree like params (params' dtypes); u_{t-1}, zeros before step 1
    base_state: Any  # the base direction's state


def hypergradient_descent(
    base: optax.GradientTransformation,
    learning_rate: ArrayLike = 1e-3,
    hypergradient_lr: ArrayLike = 1e-7,
) -> optax.GradientTransformation:
    """Descend along ``base``'s direction with a scalar rate adapted by its hypergradient.

    ``alpha_t = alpha_{t-1} + beta <g_t, u_{t-1}>`` then ``updates = -alpha_t u_t`` (a descent step: add
    the updates to the parameters), with ``u_t = base(g_t)``.

    Args:
      base: the direction without a rate (``optax.identity()`` for SGD-HD,
        ``optax.scale_by_adam()`` for Adam-HD).
      learning_rate: the initial rate ``alpha_0 > 0`` (finite).
      hypergradient_lr: ``beta >= 0`` (finite); ``0`` gives the base optimizer with a constant rate.

    Both numbers are checked when concrete (Python, numpy, concrete JAX scalars) and may be driven by
    ``optax.inject_hyperparams`` (traced, unchecked; build ``base`` inside the injected factory).

    Returns:
      An ``optax.GradientTransformation`` whose state is a :class:`HypergradientState`.

    Raises:
      ValueError: ``base`` not a GradientTransformation, ``learning_rate`` not a finite number > 0,
        ``hypergradient_lr`` not a finite number >= 0, naming the argument.

    Example:
      >>> tx = hypergradient_descent(optax.scale_by_adam(), 1e-3, 1e-7)

    References:
      Baydin et al, `Online Learning Rate Adaptation with Hypergradient Descent
      <https://arxiv.org/abs/1703.04782>`_, 2018.
    """
    checks.transformation("base", base)
    checks.positive("learning_rate", learning_rate)
    checks.nonnegative("hypergradient_lr", hypergradient_lr)

    def init_fn(params):
        return HypergradientState(
            count=jnp.zeros([], jnp.int32),
            learning_rate=jnp.asarray(learning_rate, jnp.float32),
            previous_direction=optax.tree.zeros_like(params),
            base_state=base.init(params),
        )

    def update_fn(updates, state, params=None):
        gradients = updates
        direction, base_state = base.update(gradients, state.base_state, params)
        inner = sum(
            jnp.vdot(g.astype(jnp.float32), u.astype(jnp.float32))
            for g, u in zip(
                jax.tree.leaves(gradients), jax.tree.leaves(state.previous_direction), strict=True
            )
        )
        rate = state.learning_rate + jnp.asarray(hypergradient_lr, jnp.float32) * inner
        new_updates = jax.tree.map(lambda u: (-rate * u).astype(u.dtype), direction)
        previous = jax.tree.map(lambda u, p: u.astype(p.dtype), direction, state.previous_direction)
        new_state = HypergradientState(
            count=optax.safe_increment(state.count),
            learning_rate=rate,
            previous_direction=previous,
            base_state=base_state,
        )
        return new_updates, new_state

    return optax.GradientTransformation(init_fn, update_fn)


def sgd_hd(
    learning_rate: ArrayLike = 1e-3, hypergradient_lr: ArrayLike = 1e-7
) -> optax.GradientTransformation:
    """SGD-HD: ``alpha_t = alpha_{t-1} + beta <g_t, g_{t-1}>``, ``w_t = w_{t-1} - alpha_t g_t``.

    Args:
      learning_rate: initial rate ``alpha_0 > 0``.
      hypergradient_lr: ``beta >= 0``.

    Both may be driven by ``optax.inject_hyperparams`` (no ``static_args`` needed); traced, they are
    not checked.

    Returns:
      An ``optax.GradientTransformation`` (state: :class:`HypergradientState`).

    Raises:
      ValueError: as :func:`hypergradient_descent`.

    Example:
      >>> tx = sgd_hd(0.01, 1e-4)

    References:
      Baydin et al, `Online Learning Rate Adaptation with Hypergradient Descent
      <https://arxiv.org/abs/1703.04782>`_, 2018 (Algorithm 2).
    """
    return hypergradient_descent(optax.identity(), learning_rate, hypergradient_lr)


def adam_hd(
    learning_rate: ArrayLike = 1e-3,
    hypergradient_lr: ArrayLike = 1e-7,
    b1: ArrayLike = 0.9,
    b2: ArrayLike = 0.999,
    eps: ArrayLike = 1e-8,
) -> optax.GradientTransformation:
    """Adam-HD: Adam's direction ``u_t = m_hat_t / (sqrt(v_hat_t) + eps)`` with a hypergradient rate.

    ``alpha_t = alpha_{t-1} + beta <g_t, u_{t-1}>``, ``w_t = w_{t-1} - alpha_t u_t``. The paper's values for
    MLPs: ``alpha_0 = 1e-3``, ``beta = 1e-7``.

    Args:
      learning_rate: initial rate ``alpha_0 > 0``.
      hypergradient_lr: ``beta >= 0``.
      b1, b2, eps: Adam's constants (``optax.scale_by_adam``): ``b1``, ``b2`` in ``[0, 1)``, ``eps``
        finite and ``>= 0``.

    Every argument may be driven by ``optax.inject_hyperparams`` (no ``static_args`` needed); traced,
    it is not checked.

    Returns:
      An ``optax.GradientTransformation`` (state: :class:`HypergradientState`).

    Raises:
      ValueError: as :func:`hypergradient_descent`, and ``b1``/``b2`` outside ``[0, 1)`` or ``eps``
        negative or not finite.

    Example:
      >>> tx = adam_hd(1e-3, 1e-7)

    References:
      Baydin et al, `Online Learning Rate Adaptation with Hypergradient Descent
      <https://arxiv.org/abs/1703.04782>`_, 2018 (Algorithm 6).
    """
    checks.in_unit_interval("b1", b1)
    checks.in_unit_interval("b2", b2)
    checks.nonnegative("eps", eps)
    return hypergradient_descent(
        optax.scale_by_adam(b1=b1, b2=b2, eps=eps), learning_rate, hypergradient_lr
    )
