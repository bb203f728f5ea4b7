"""The noisy quadratic model (NQM) of AutoDrop's Section 3, its simulation and the stationary closed forms.

.. math::

    L(x) = \\tfrac12 (x - c)^\\top A (x - c), \\quad c \\sim N(0, \\Sigma), \\quad A = \\mathrm{diag}(a),
    \\ \\Sigma = \\mathrm{diag}(\\sigma^2),

minimised by gradient descent ``x_{t+1} = x_t - alpha A (x_t - c_t)`` (or any Optax transformation). The
AutoDrop paper takes ``x in R^200`` and ``a_i = i / 10`` (:func:`seed_problem`); it does not give ``Sigma``.
We take ``Sigma = A`` (times ``noise_scale``): gradient noise whose covariance equals the curvature, the
usual choice of the noisy quadratic model of Zhang et al. (2019), which the AutoDrop paper cites; any
other diagonal ``Sigma`` can be given through :class:`NoisyQuadratic`.

Stationary closed forms. The paper's Theorem 1 is printed garbled, so these are derived again from the
recursion: per coordinate ``x_{t+1} = (1 - alpha a) x_t + alpha a c_t`` is a stable AR(1) process for
``0 < alpha a < 2``, and with ``s_t = x_{t+1} - x_t`` its stationary moments are
``Var x = alpha a sigma^2 / (2 - alpha a)``, ``E[s_t^2] = 2 alpha^2 a^2 sigma^2 / (2 - alpha a)`` and
``E[s_t s_{t+1}] = -alpha^3 a^3 sigma^2 / (2 - alpha a)``, hence (summing the independent coordinates)

.. math::

    I^* = -\\alpha^3 \\sum_i \\frac{a_i^3 \\sigma_i^2}{2 - \\alpha a_i}, \\qquad
    C^* \\approx -\\frac{\\alpha}{2}\\,
        \\frac{\\sum_i a_i^3 \\sigma_i^2 / (2 - \\alpha a_i)}{\\sum_i a_i^2 \\sigma_i^2 / (2 - \\alpha a_i)}
        \\in [-\\tfrac12, 0].

``C*`` is the ratio of the expectations ``E<s_t, s_{t+1}> / E|s_t|^2``, which stands for the expected cosine
between consecutive steps (close to it when ``d`` is large and the step norms concentrate); its angle
``arccos C*`` is the level at which the angular velocity saturates for a constant rate.

References:
  Zhang et al., `Which Algorithmic Choices Matter at Which Batch Sizes? Insights From a Noisy Quadratic
  Model <https://arxiv.org/abs/1907.04164>`_, 2019.
  Teng, Wang, Choromanska, `AutoDrop: Training Deep Learning Models with Automatic Learning Rate Drop
  <https://arxiv.org/abs/2111.15317>`_, 2021 (Section 3, the noisy quadratic model, and Theorem 1).
"""

from __future__ import annotations

from typing import NamedTuple

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax

from randlr_jax import _checks as checks
from randlr_jax.autodrop._autodrop import AutoDropState, angle_degrees


class NoisyQuadratic(NamedTuple):
    """A noisy quadratic model with diagonal curvature and noise (optimum at 0)."""

    curvature: chex.Array  # (d,) float32; a_i, the diagonal of A
    noise_variance: chex.Array  # (d,) float32; sigma_i^2, the diagonal of Sigma


def seed_problem(dim: int = 200, noise_scale: float = 1.0) -> NoisyQuadratic:
    """The AutoDrop paper's NQM: ``a_i = i / 10`` for ``i = 1..dim`` and ``Sigma = noise_scale * A``.

    The paper gives ``dim = 200`` and ``a_i = i / 10`` but not the noise covariance; ``Sigma = A`` (the
    gradient-noise covariance equal to the curvature, as in Zhang et al. 2019) is our choice.

    Raises:
      ValueError: ``dim`` not a positive integer or ``noise_scale`` not a finite number ``> 0``.
    """
    dim = checks.positive_int("dim", dim)
    checks.positive("noise_scale", noise_scale)
    curvature = jnp.arange(1, dim + 1, dtype=jnp.float32) / 10.0
    return NoisyQuadratic(curvature, noise_scale * curvature)


def loss(problem: NoisyQuadratic, x: jax.Array) -> jax.Array:
    """``L(x)`` at the mean target ``c = 0``: ``1/2 sum_i a_i x_i^2`` (the loss above the noise floor)."""
    return 0.5 * jnp.sum(problem.curvature * jnp.square(x), axis=-1)


def _check_problem(problem: NoisyQuadratic) -> tuple[int, ...]:
    """A :class:`NoisyQuadratic` of two numeric ``(d,)`` arrays (shapes checked when traced too);
    returns ``(d,)``."""
    what = "a NoisyQuadratic of two (d,) arrays (e.g. seed_problem())"
    if not isinstance(problem, NoisyQuadratic):
        checks.fail("problem", what, problem, shown=checks.brief(problem))
    shapes = {np.shape(leaf) if hasattr(leaf, "shape") else None for leaf in problem}
    if len(shapes) != 1 or None in shapes or len(next(iter(shapes))) != 1:
        checks.fail("problem", what, problem, shown=checks.brief(problem))
    checks.numeric_leaves("problem", tuple(problem), what, keys=False)
    return next(iter(shapes))


def _check_stable(problem: NoisyQuadratic, alpha: float) -> None:
    _check_problem(problem)
    if checks.positive("alpha", alpha) is None or checks.is_traced(problem.curvature):
        return  # traced values are not checked
    alpha = float(alpha)
    largest = float(np.max(np.asarray(problem.curvature)))
    if not 0 < alpha * largest < 2:
        raise ValueError(
            f"alpha must be in (0, 2 / max(a)) = (0, {2 / largest:.4g}) for gradient descent to have a "
            f"stationary distribution, got {alpha!r}."
        )


def stationary_variance(problem: NoisyQuadratic, alpha: float) -> jax.Array:
    """``Var x_i = alpha a_i sigma_i^2 / (2 - alpha a_i)`` of GD at stationarity, shape ``(d,)``."""
    _check_stable(problem, alpha)
    a, s2 = problem.curvature, problem.noise_variance
    return alpha * a * s2 / (2.0 - alpha * a)


def stationary_inner_product(problem: NoisyQuadratic, alpha: float) -> jax.Array:
    """``I* = E<s_t, s_{t+1}> = -alpha^3 sum_i a_i^3 sigma_i^2 / (2 - alpha a_i)`` (module docstring)."""
    _check_stable(problem, alpha)
    a, s2 = problem.curvature, problem.noise_variance
    return -(alpha**3) * jnp.sum(a**3 * s2 / (2.0 - alpha * a))


def stationary_cosine(problem: NoisyQuadratic, alpha: float) -> jax.Array:
    """``C* = E<s_t, s_{t+1}> / E|s_t|^2`` (the ratio standing for the expected cosine), in ``[-1/2, 0]``."""
    _check_stable(problem, alpha)
    a, s2 = problem.curvature, problem.noise_variance
    weights = a**2 * s2 / (2.0 - alpha * a)
    return -0.5 * alpha * jnp.sum(a * weights) / jnp.sum(weights)


def stationary_sample(problem: NoisyQuadratic, alpha: float, key: chex.PRNGKey) -> jax.Array:
    """A draw of ``x`` from GD's stationary distribution (Gaussian, independent coordinates)."""
    checks.prng_key("key", key)
    std = jnp.sqrt(stationary_variance(problem, alpha))
    return std * jax.random.normal(key, std.shape, jnp.float32)


def simulate(
    problem: NoisyQuadratic,
    tx: optax.GradientTransformation,
    x0: jax.Array,
    key: chex.PRNGKey,
    steps: int,
) -> dict[str, jax.Array]:
    """Run ``tx`` on the NQM for ``steps`` iterations from ``x0``, one noise draw ``c_t`` per iteration.

    The gradient is ``A (x_t - c_t)``; ``tx`` receives ``x_t`` as ``params`` (AutoDrop needs them). Jittable
    (``steps`` static).

    Args:
      problem: the model.
      tx: e.g. ``optax.sgd(alpha)``, or with :func:`randlr_jax.autodrop` chained.
      x0: ``(d,)`` start.
      key: PRNG key of the noise.
      steps: iterations.

    Returns:
      Per iteration ``t = 0 .. steps-1`` (arrays of shape ``(steps,)``): ``loss`` (of ``x_{t+1}``),
      ``angle`` (degrees between ``s_t`` and ``s_{t-1}``; 90 at ``t = 0``, where ``s_{-1} = 0``), ``inner``
      (``<s_t, s_{t-1}>``), ``learning_rate`` (AutoDrop's current rate when ``tx`` holds its state, else
      NaN) and the final ``x`` of shape ``(d,)``.

    Raises:
      ValueError: a bad ``problem``, ``tx`` not an Optax transformation, ``x0`` not a ``(d,)`` array,
        ``key`` not a PRNG key or ``steps`` not a positive integer (shapes checked when traced too).
    """
    shape = _check_problem(problem)
    checks.transformation("tx", tx)
    if not checks.is_traced(x0):
        try:
            x0 = np.asarray(x0, np.float32) if not hasattr(x0, "shape") else x0
        except (TypeError, ValueError):
            checks.fail("x0", f"a start of shape {shape} (the problem's)", x0)
    if not hasattr(x0, "shape") or tuple(x0.shape) != shape:
        checks.fail("x0", f"a start of shape {shape} (the problem's)", x0, shown=checks.brief(x0))
    checks.prng_key("key", key)
    steps = checks.positive_int("steps", steps)
    a, std = problem.curvature, jnp.sqrt(problem.noise_variance)

    def body(carry, step_key):
        x, state, previous = carry
        c = std * jax.random.normal(step_key, x.shape, x.dtype)
        updates, state = tx.update(a * (x - c), state, x)
        new_x = optax.apply_updates(x, updates)
        displacement = new_x - x
        autodrop_states = [
            s
            for s in jax.tree.leaves(state, is_leaf=lambda s: isinstance(s, AutoDropState))
            if isinstance(s, AutoDropState)
        ]
        rate = autodrop_states[0].learning_rate if autodrop_states else jnp.float32(jnp.nan)
        record = {
            "loss": loss(problem, new_x),
            "angle": angle_degrees(displacement, previous),
            "inner": jnp.vdot(displacement, previous),
            "learning_rate": rate,
        }
        return (new_x, state, displacement), record

    x0 = jnp.asarray(x0, jnp.float32)
    init = (x0, tx.init(x0), jnp.zeros_like(x0))
    (x, _, _), records = jax.lax.scan(body, init, jax.random.split(key, steps))
    records["x"] = x
    return records


__all__ = [
    "NoisyQuadratic",
    "loss",
    "seed_problem",
    "simulate",
    "stationary_cosine",
    "stationary_inner_product",
    "stationary_sample",
    "stationary_variance",
]
