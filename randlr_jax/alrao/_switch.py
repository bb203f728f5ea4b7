"""Model averaging over the output heads of Alrao: the switch, Bayesian and uniform averaging.

Alrao trains ``N`` copies of the classifier layer, each with its own learning rate, and predicts
with the mixture ``sum_j a_j p_j(y|x)``. The weights ``a`` come from an online model-averaging rule
fed, after every minibatch, with the vector ``ell`` of the heads' log-likelihoods (the batch mean of
``log p_j(y|x)``). This module holds three such rules behind one interface:

* the *switch* (the Alrao default; van Erven, Grünwald and de Rooij), a Bayesian posterior over
  sequences of switches between heads, which follows a head that becomes better quickly;
* plain Bayesian model averaging, ``a_j ∝ exp(sum_t ell_{t,j})``;
* uniform averaging, ``a_j = 1/N``.

Each rule is a set of pure functions over a ``NamedTuple`` state: ``*_init``, ``*_update``,
``*_log_posterior``, ``*_posterior``; :func:`make_averager` bundles one rule into an
:class:`Averager` so that callers can pick it by name. All states carry the int32 ``step`` counter,
so a state restored from saved arrays continues exactly where it stopped.

Conventions shared by all rules (``ell`` is one observation, shape ``(N,)``):

* an entry of ``ell`` that is not finite (NaN, ``+inf``, ``-inf``) is read as ``-inf``: a head whose
  loss or parameters blew up has zero likelihood and must not poison the others;
* an observation whose entries are all ``-inf`` carries no usable information: it is skipped, the
  state is returned unchanged, ``step`` included (the authors' PyTorch code would produce NaN
  here);
* everything stays in log space and is jit-able; the shape of ``ell`` is static and checked eagerly.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax

from randlr_jax import _checks as checks

__all__ = [
    "Averager",
    "BayesState",
    "SwitchState",
    "UniformState",
    "bayes_init",
    "bayes_log_posterior",
    "bayes_posterior",
    "bayes_update",
    "catch_up",
    "make_averager",
    "switch_init",
    "switch_log_posterior",
    "switch_posterior",
    "switch_update",
    "switch_update_sequence",
    "uniform_init",
    "uniform_log_posterior",
    "uniform_posterior",
    "uniform_update",
    "update_sequence",
]

_ROW_SWITCH_AGAIN = 0  # row ``a``: "will switch again"
_ROW_LAST_SEGMENT = 1  # row ``b``: "last segment", never switches again

DEFAULT_THETA = 0.9999


class SwitchState(NamedTuple):
    """State of the switch model averaging over ``N`` heads.

    The arrays are the whole state: rebuilding the tuple from saved arrays resumes the recursion
    exactly. In particular the step counter ``t`` is saved: the authors' PyTorch code does not save
    it, so a switch reloaded there restarts the prior's ``pi_t = 1/(t+1)`` at ``t = 1``; that is not
    copied.
    """

    log_weights: chex.Array  # (2, N) float32; row 0 "will switch again", row 1 "last segment"
    step: chex.Array  # () int32; index t of the next observation, starts at 1
    log_theta: chex.Array  # () float32; log(theta)
    log1m_theta: chex.Array  # () float32; log(1 - theta)


class BayesState(NamedTuple):
    """State of Bayesian model averaging over ``N`` heads."""

    log_weights: chex.Array  # (N,) float32; normalised log-posterior, log_softmax of summed ell
    step: chex.Array  # () int32; index of the next observation, starts at 1


class UniformState(NamedTuple):
    """State of uniform averaging over ``N`` heads (the weights never move)."""

    log_weights: chex.Array  # (N,) float32; constant -log N
    step: chex.Array  # () int32; index of the next observation, starts at 1


class Averager(NamedTuple):
    """One model-averaging rule as a bundle of pure functions (see :func:`make_averager`).

    Attributes:
      init: ``() -> state``.
      update: ``(state, log_likelihoods (N,)) -> state``.
      log_posterior: ``state -> (N,)`` normalised log-weights.
      posterior: ``state -> (N,)`` weights summing to one.
      update_sequence: ``(state, (T, N)) -> (state, (T, N) posteriors after each update)``.
    """

    init: Callable[[], Any]
    update: Callable[[Any, chex.Array], Any]
    log_posterior: Callable[[Any], chex.Array]
    posterior: Callable[[Any], chex.Array]
    update_sequence: Callable[[Any, chex.Array], tuple[Any, chex.Array]]


# ------------------------------------------------------------------------------------------------
# Validation and shared helpers.


def _check_num_models(num_models: Any) -> int:
    return checks.positive_int("num_models", num_models)


def _check_theta(theta: Any) -> float | None:
    """``theta`` as a float when concrete, ``None`` when traced (a scalar either way)."""
    if checks.is_traced(theta) and np.ndim(theta) != 0:
        checks.fail("theta", "a scalar in (0, 1)", theta)
    return checks.in_unit_interval("theta", theta, closed_left=False)


def _check_log_likelihoods(log_likelihoods: chex.Array, num_models: int, name: str) -> None:
    shape = np.shape(log_likelihoods)
    if shape != (num_models,):
        raise ValueError(
            f"{name} must have shape (num_models,) = ({num_models},), one log-likelihood per head, "
            f"got shape {shape}."
        )


def _check_sequence(log_likelihoods_seq: chex.Array, num_models: int) -> None:
    shape = np.shape(log_likelihoods_seq)
    if len(shape) != 2 or shape[1] != num_models:
        raise ValueError(
            f"log_likelihoods_seq must have shape (T, num_models) = (T, {num_models}), "
            f"got shape {shape}."
        )


def _clean_observation(log_likelihoods: chex.Array, dtype: Any) -> tuple[chex.Array, chex.Array]:
    """Non-finite entries to -inf, shifted so the best head is at 0; and whether any is finite.

    The shift by the maximum is exact for every rule here (each renormalises after adding ``ell``)
    and keeps large magnitudes (``ell ~ -1e30``) from swamping the ``O(1)`` log-weights in float32.
    """
    ell = jnp.asarray(log_likelihoods).astype(dtype)
    ell = jnp.where(jnp.isfinite(ell), ell, -jnp.inf)
    is_informative = jnp.any(jnp.isfinite(ell))
    best = jnp.where(is_informative, jnp.max(ell), jnp.zeros((), dtype))
    return ell - best, is_informative


def _normalise(log_weights: chex.Array) -> chex.Array:
    return log_weights - jax.nn.logsumexp(log_weights)


# ------------------------------------------------------------------------------------------------
# Switch.


def switch_init(num_models: int, theta: chex.Numeric = DEFAULT_THETA) -> SwitchState:
    r"""Initial state of the switch model averaging: uniform posterior, step 1.

    .. math::
        \log w_a = \log\theta - \log N, \qquad \log w_b = \log(1-\theta) - \log N,

    so that the ``2N`` weights sum to one and the posterior ``a_j = w_{a,j} + w_{b,j} = 1/N``.

    Args:
      num_models: number of heads ``N >= 1``, a concrete integer.
      theta: prior probability, at each switch, of switching again later, in ``(0, 1)``. The
        default is ``0.9999``, the value of the authors' code (the Alrao paper's text says
        ``0.999``): where the two differ we follow the code that produced the paper's results. May
        be a traced
        scalar (then it is not validated and its logarithms are computed in float32).

    Raises:
      ValueError: ``num_models`` not a positive integer, ``theta`` (concrete) outside ``(0, 1)`` or
        not a scalar number.

    Returns:
      A :class:`SwitchState`.

    Example:
      >>> state = switch_init(3)
      >>> state = switch_update(state, jnp.array([-1.0, -2.0, -3.0]))
      >>> switch_posterior(state)
      Array([0.4993..., 0.2890..., 0.2116...], dtype=float32)

    References:
      Blier et al, `Learning with Random Learning Rates <https://arxiv.org/abs/1810.01322>`_, 2019
      (Appendix A); van Erven, Grünwald and de Rooij, Catching up faster in Bayesian model
      selection and model averaging, NeurIPS 2007 (Algorithm 1); van Erven, Grünwald and de Rooij,
      `Catching up faster by switching sooner <https://arxiv.org/abs/0807.1005>`_, JRSS B 2012.
    """
    num_models = _check_num_models(num_models)
    theta_value = _check_theta(theta)
    if theta_value is not None:
        # float64 logs as the reference (numpy scalars added to a float32 tensor).
        log_theta = jnp.asarray(np.float32(math.log(theta_value)))
        log1m_theta = jnp.asarray(np.float32(math.log1p(-theta_value)))
    else:
        theta_array = jnp.asarray(theta, jnp.float32)
        log_theta, log1m_theta = jnp.log(theta_array), jnp.log1p(-theta_array)
    log_n = jnp.float32(math.log(num_models))
    rows = jnp.stack([log_theta - log_n, log1m_theta - log_n])  # (2,)
    log_weights = jnp.broadcast_to(rows[:, None], (2, num_models)).astype(jnp.float32)
    return SwitchState(
        log_weights=log_weights,
        step=jnp.ones((), jnp.int32),
        log_theta=log_theta,
        log1m_theta=log1m_theta,
    )


def switch_update(state: SwitchState, log_likelihoods: chex.Array) -> SwitchState:
    r"""Feeds one observation (the heads' log-likelihoods) to the switch.

    With ``a`` the "will switch again" row, ``b`` the "last segment" row, ``t`` = ``state.step`` and
    :math:`\pi_t = 1/(t+1)`:

    .. math::
        \log w_{r,j} &\mathrel{+}= \ell_j \quad (r \in \{a, b\}) \\
        L &= \operatorname{logsumexp}_j \log w_{a,j} + \log\pi_t \\
        \log w_{a,j} &\leftarrow \operatorname{logaddexp}\big(\log w_{a,j} + \log(1-\pi_t),\;
            \log\theta + L - \log N\big) \\
        \log w_{b,j} &\leftarrow \operatorname{logaddexp}\big(\log w_{b,j},\;
            \log(1-\theta) + L - \log N\big) \\
        \log w &\mathrel{-}= \operatorname{logsumexp}(\log w), \qquad t \leftarrow t + 1.

    The resulting posterior is the predictive distribution of the head used at time ``t + 1``.
    Non-finite ``ell_j`` count as ``-inf``; if all are ``-inf`` the state is returned unchanged
    (``step`` included: the observation is skipped). ``ell`` is shifted by its maximum first, which
    changes nothing mathematically.

    Args:
      state: current :class:`SwitchState`.
      log_likelihoods: ``(N,)`` log-likelihood of the observation under each head (Alrao: the
        minibatch mean of ``log p_j(y|x)``, from the forward pass before the parameter update).

    Returns:
      The updated :class:`SwitchState`.

    Example:
      >>> state = switch_init(2)
      >>> state = jax.jit(switch_update)(state, jnp.array([-0.1, -3.0]))

    References:
      Blier et al, `Learning with Random Learning Rates <https://arxiv.org/abs/1810.01322>`_, 2019
      (Appendix A); van Erven, Grünwald and de Rooij, Catching up faster in Bayesian model
      selection and model averaging, NeurIPS 2007 (Algorithm 1); van Erven, Grünwald and de Rooij,
      `Catching up faster by switching sooner <https://arxiv.org/abs/0807.1005>`_, JRSS B 2012.
    """
    num_models = state.log_weights.shape[-1]
    _check_log_likelihoods(log_likelihoods, num_models, "log_likelihoods")
    dtype = state.log_weights.dtype
    ell, is_informative = _clean_observation(log_likelihoods, dtype)

    log_weights = state.log_weights + ell[None, :]
    t = state.step.astype(dtype)
    log1p_inv_t = jnp.log1p(1.0 / t)
    log_pi = -(jnp.log(t) + log1p_inv_t)  # log 1/(t+1)
    log1m_pi = -log1p_inv_t  # log t/(t+1), accurate for large t
    log_n = jnp.asarray(math.log(num_models), dtype)

    switch_again = log_weights[_ROW_SWITCH_AGAIN]
    last_segment = log_weights[_ROW_LAST_SEGMENT]
    log_switch_mass = jax.nn.logsumexp(switch_again) + log_pi - log_n
    switch_again = jnp.logaddexp(switch_again + log1m_pi, state.log_theta + log_switch_mass)
    last_segment = jnp.logaddexp(last_segment, state.log1m_theta + log_switch_mass)
    new_log_weights = _normalise(jnp.stack([switch_again, last_segment]))

    return SwitchState(
        log_weights=jnp.where(is_informative, new_log_weights, state.log_weights),
        step=jnp.where(is_informative, optax.safe_increment(state.step), state.step),
        log_theta=state.log_theta,
        log1m_theta=state.log1m_theta,
    )


def switch_log_posterior(state: SwitchState) -> chex.Array:
    r"""Normalised log-weights ``log a_j = logaddexp(log w_{a,j}, log w_{b,j})``, shape ``(N,)``."""
    return _normalise(
        jnp.logaddexp(state.log_weights[_ROW_SWITCH_AGAIN], state.log_weights[_ROW_LAST_SEGMENT])
    )


def switch_posterior(state: SwitchState) -> chex.Array:
    """Switch weights ``a_j`` over the heads, shape ``(N,)``, summing to one."""
    return jnp.exp(switch_log_posterior(state))


def update_sequence(
    update: Callable[[Any, chex.Array], Any],
    log_posterior: Callable[[Any], chex.Array],
    state: Any,
    log_likelihoods_seq: chex.Array,
) -> tuple[Any, chex.Array]:
    """Feeds a ``(T, N)`` sequence of observations through ``update`` with one ``lax.scan``.

    Args:
      update: ``(state, (N,)) -> state``, e.g. :func:`switch_update`.
      log_posterior: ``state -> (N,)`` log-weights, e.g. :func:`switch_log_posterior`.
      state: initial state.
      log_likelihoods_seq: ``(T, N)`` log-likelihoods, one row per observation (e.g. per sample).

    Returns:
      ``(final_state, posteriors)`` with ``posteriors[t]`` the ``(N,)`` weights after update ``t``.
    """
    num_models = log_posterior(state).shape[-1]
    _check_sequence(log_likelihoods_seq, num_models)

    def body(carry: Any, ell: chex.Array) -> tuple[Any, chex.Array]:
        carry = update(carry, ell)
        return carry, jnp.exp(log_posterior(carry))

    return lax.scan(body, state, jnp.asarray(log_likelihoods_seq))


def switch_update_sequence(
    state: SwitchState, log_likelihoods_seq: chex.Array
) -> tuple[SwitchState, chex.Array]:
    """:func:`switch_update` over a ``(T, N)`` sequence via ``lax.scan``, with the posteriors.

    Equal to calling :func:`switch_update` ``T`` times; used to feed per-sample log-likelihoods.

    Example:
      >>> state, posteriors = switch_update_sequence(switch_init(2), -jnp.ones((5, 2)))
    """
    return update_sequence(switch_update, switch_log_posterior, state, log_likelihoods_seq)


# ------------------------------------------------------------------------------------------------
# Bayesian and uniform averaging, for comparison.


def bayes_init(num_models: int) -> BayesState:
    """Initial state of Bayesian model averaging: uniform prior ``a_j = 1/N``, step 1."""
    num_models = _check_num_models(num_models)
    return BayesState(
        log_weights=jnp.full((num_models,), -math.log(num_models), jnp.float32),
        step=jnp.ones((), jnp.int32),
    )


def bayes_update(state: BayesState, log_likelihoods: chex.Array) -> BayesState:
    r"""Bayesian model averaging update, ``log a_j <- log a_j + ell_j`` then renormalised.

    After ``T`` observations ``a = softmax(sum_t ell_t)``. A head that has once had ``-inf`` keeps
    weight zero forever (unlike the switch). Non-finite ``ell_j`` count as ``-inf``; an all-``-inf``
    observation is skipped (state unchanged, ``step`` included).

    Args:
      state: current :class:`BayesState`.
      log_likelihoods: ``(N,)`` log-likelihood of the observation under each head.

    Returns:
      The updated :class:`BayesState`.
    """
    num_models = state.log_weights.shape[-1]
    _check_log_likelihoods(log_likelihoods, num_models, "log_likelihoods")
    ell, is_informative = _clean_observation(log_likelihoods, state.log_weights.dtype)
    log_weights = state.log_weights + ell
    # If the only finite heads already have weight zero, nothing is left to renormalise: skip.
    is_informative = is_informative & jnp.any(jnp.isfinite(log_weights))
    return BayesState(
        log_weights=jnp.where(is_informative, _normalise(log_weights), state.log_weights),
        step=jnp.where(is_informative, optax.safe_increment(state.step), state.step),
    )


def bayes_log_posterior(state: BayesState) -> chex.Array:
    """Normalised Bayesian log-weights, shape ``(N,)``."""
    return _normalise(state.log_weights)


def bayes_posterior(state: BayesState) -> chex.Array:
    """Bayesian weights, shape ``(N,)``, summing to one."""
    return jnp.exp(bayes_log_posterior(state))


def uniform_init(num_models: int) -> UniformState:
    """Uniform averaging ``a_j = 1/N``, step 1."""
    num_models = _check_num_models(num_models)
    return UniformState(
        log_weights=jnp.full((num_models,), -math.log(num_models), jnp.float32),
        step=jnp.ones((), jnp.int32),
    )


def uniform_update(state: UniformState, log_likelihoods: chex.Array) -> UniformState:
    """Uniform averaging ignores the values; it checks the shape and counts the observations."""
    _check_log_likelihoods(log_likelihoods, state.log_weights.shape[-1], "log_likelihoods")
    _, is_informative = _clean_observation(log_likelihoods, state.log_weights.dtype)
    return UniformState(
        log_weights=state.log_weights,
        step=jnp.where(is_informative, optax.safe_increment(state.step), state.step),
    )


def uniform_log_posterior(state: UniformState) -> chex.Array:
    """Uniform log-weights ``-log N``, shape ``(N,)``."""
    return _normalise(state.log_weights)


def uniform_posterior(state: UniformState) -> chex.Array:
    """Uniform weights ``1/N``, shape ``(N,)``."""
    return jnp.exp(uniform_log_posterior(state))


_KINDS = ("switch", "bayes", "uniform")


def make_averager(kind: str, num_models: int, theta: chex.Numeric = DEFAULT_THETA) -> Averager:
    """Bundles one averaging rule, chosen by name, into an :class:`Averager`.

    Args:
      kind: ``"switch"`` (Alrao's default), ``"bayes"`` or ``"uniform"``.
      num_models: number of heads ``N >= 1``.
      theta: switch hyperparameter in ``(0, 1)``; validated for every ``kind``, used only by
        the switch.

    Returns:
      An :class:`Averager` whose ``init`` takes no argument.

    Raises:
      ValueError: an unknown ``kind``, or as :func:`switch_init`.

    Example:
      >>> averager = make_averager("switch", num_models=4)
      >>> state = jax.jit(averager.update)(averager.init(), jnp.array([-0.5, -1.0, -1.0, -1.0]))
      >>> averager.posterior(state)
      Array([0.3023..., 0.2325..., 0.2325..., 0.2325...], dtype=float32)
    """
    checks.one_of("kind", kind, _KINDS)
    num_models = _check_num_models(num_models)
    _check_theta(theta)
    if kind == "switch":
        init = lambda: switch_init(num_models, theta)
        update, log_posterior, posterior = switch_update, switch_log_posterior, switch_posterior
    elif kind == "bayes":
        init = lambda: bayes_init(num_models)
        update, log_posterior, posterior = bayes_update, bayes_log_posterior, bayes_posterior
    else:
        init = lambda: uniform_init(num_models)
        update, log_posterior, posterior = uniform_update, uniform_log_posterior, uniform_posterior

    def sequence(state: Any, log_likelihoods_seq: chex.Array) -> tuple[Any, chex.Array]:
        return update_sequence(update, log_posterior, state, log_likelihoods_seq)

    return Averager(
        init=init,
        update=update,
        log_posterior=log_posterior,
        posterior=posterior,
        update_sequence=sequence,
    )


# ------------------------------------------------------------------------------------------------
# Hard catch-up.


def catch_up(
    head_params: chex.ArrayTree, log_posterior: chex.Array, threshold: chex.Numeric = -20.0
) -> chex.ArrayTree:
    r"""Replaces the parameters of heads with negligible weight by the posterior-weighted average.

    For every leaf ``W`` (leading axis = head axis of size ``N``) and every head ``j`` with
    ``log a_j < threshold``:

    .. math::
        W_j \leftarrow \frac{\sum_k a_k W_k}{\sum_k a_k},

    where the sums run over the heads whose entry is finite (a diverged head's NaN parameters must
    not poison the average it is reset to); an entry with no finite contribution is left as it was.
    The other heads are untouched. This is the optional ``catch_up`` flag of the authors' code (not
    described in the paper; off by default).

    Args:
      head_params: pytree whose every leaf has the head axis first, shape ``(N, ...)``.
      log_posterior: ``(N,)`` log-weights, e.g. :func:`switch_log_posterior`; normalised here.
      threshold: log-weight below which a head is reset (the authors' code: ``-20``), a scalar in
        ``[-inf, 0]`` (``-inf`` resets nothing; above 0 every head would be reset, log-weights being
        ``<= 0``). May be traced (then unchecked).

    Raises:
      ValueError: a bad ``threshold``, ``log_posterior`` not ``(N,)``, or a leaf without the head axis.

    Returns:
      A pytree like ``head_params``.

    Example:
      >>> params = {"kernel": jnp.ones((3, 4, 2)), "bias": jnp.zeros((3, 2))}
      >>> params = jax.jit(catch_up)(params, jnp.log(jnp.array([0.5, 0.5, 1e-12])))
      >>> params["kernel"][2, 0]  # head 2 (weight 1e-12) reset to the others' weighted average
      Array([1., 1.], dtype=float32)

    References:
      Blier et al, `Learning with Random Learning Rates <https://arxiv.org/abs/1810.01322>`_, 2019
      (accompanying code, ``Switch`` with ``catch_up=True``).
    """
    shape = np.shape(log_posterior)
    if len(shape) != 1:
        raise ValueError(f"log_posterior must have shape (N,), got shape {shape}.")
    num_models = shape[0]
    what = "a scalar log-weight in [-inf, 0]"
    if checks.is_traced(threshold) and np.ndim(threshold) != 0:
        checks.fail("threshold", what, threshold)
    checks.in_range("threshold", threshold, -math.inf, 0.0, what=what)
    for path, leaf in jax.tree_util.tree_leaves_with_path(head_params):
        leaf_shape = np.shape(leaf)
        if len(leaf_shape) < 1 or leaf_shape[0] != num_models:
            raise ValueError(
                f"head_params leaf {jax.tree_util.keystr(path)} must have the head axis of size "
                f"{num_models} first, got shape {leaf_shape}."
            )

    log_posterior = _normalise(jnp.where(jnp.isnan(log_posterior), -jnp.inf, log_posterior))
    weights = jnp.exp(log_posterior)  # (N,)
    replace = log_posterior < threshold  # (N,)

    def reset(leaf: chex.Array) -> chex.Array:
        expand = (num_models,) + (1,) * (leaf.ndim - 1)
        leaf_weights = weights.reshape(expand).astype(jnp.promote_types(leaf.dtype, jnp.float32))
        usable = jnp.isfinite(leaf) & (leaf_weights > 0)
        total = jnp.sum(jnp.where(usable, leaf_weights * leaf, 0), axis=0)
        mass = jnp.sum(jnp.where(usable, leaf_weights, 0), axis=0)
        has_mass = mass > 0
        average = (total / jnp.where(has_mass, mass, 1)).astype(leaf.dtype)
        return jnp.where(replace.reshape(expand) & has_mass[None], average[None], leaf)

    return jax.tree_util.tree_map(reset, head_params)
