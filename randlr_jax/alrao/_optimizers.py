"""Alrao as Optax optimizers and one jitted training step.

Alrao (Blier, Wolinski, Ollivier 2019) trains the pre-classifier with one random learning rate per feature
(:mod:`randlr_jax.alrao`) and ``N`` copies of the classifier layer with log-spaced rates
(:mod:`randlr_jax.alrao`), averaged by the switch posterior (:mod:`randlr_jax.alrao`).

Gradients (the paper's Section 2, "The Alrao update") come from one backward pass of the scalar

.. math::

    L = L_{mix}(\\text{features},\\ \\mathrm{sg}(\\theta^{cl}))
        + \\sum_j L_j(\\mathrm{sg}(\\text{features}),\\ \\theta^{cl}_j),
    \\qquad L_{mix} = -\\log \\sum_j a_j p_j(y|x), \\quad L_j = -\\log p_j(y|x),

so the pre-classifier receives the gradient of the averaged model's loss and each copy the gradient of its own
loss "as if it were the only output" (the ``a_j`` are constants). ``sg`` is ``stop_gradient``; XLA computes
the copies' forward pass once (``stop_gradient`` is the identity in the forward pass).

A copy whose loss or parameters are non-finite is dropped from the mixture, its update is zeroed and its
switch observation is ``-inf``; the pre-classifier's update and the output stay finite. (The paper does not
say what happens to a copy whose rate is too large to train; this is our choice, so that such a copy cannot
turn the whole model into NaN.)

Choices made where the paper leaves room (it describes SGD and says "other optimizers like Adam are
treated similarly"):

* On any base optimizer the per-feature rate multiplies the base optimizer's rate-free direction,
  ``-eta ⊙ d`` with ``d = m_hat / (sqrt(v_hat) + eps)`` for Adam, and every copy runs the same base
  optimizer with its scalar rate ``eta_j`` (:func:`alrao`, :func:`alrao_adam`).
* Momentum is ordinary heavy-ball momentum, ``m <- mu m + g``, as ``optax.sgd`` (:func:`alrao_sgd`). The
  authors' PyTorch code decays its momentum buffer by ``1 - mu * min(sqrt(eta), 1/mu)`` instead, a
  rate-dependent variant the paper does not mention; it is not reproduced.
* Learning-rate schedules compose: ``learning_rate_scale`` (a number or an Optax schedule) multiplies every
  Alrao rate, the "divide all Alrao learning rates by a time-dependent constant" of the paper's Section 4.

The objective needs only each copy's label log-likelihood ``log p_j(y|x)``: :func:`alrao_loss_chunked`
computes it over chunks of copies (``lax.scan`` with a rematerialised body), so that output-heavy models
(large ``K``) never hold the ``(N, B, ..., K)`` outputs of all copies at once. For dense copies (an
``AlraoHead``'s, what the Alrao steps train) :func:`alrao_loss_dense` goes further: one pass over the
copies computes the objective and its gradient, each copy's three products (its outputs, its kernel's
gradient and its share of the features' gradient) with its kernel in cache.

References:
  Blier, Wolinski, Ollivier, `Learning with Random Learning Rates <https://arxiv.org/abs/1810.01322>`_, 2019.
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Callable
from typing import Any, NamedTuple

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax

from randlr_jax import _checks as checks
from randlr_jax.alrao import _copies as cc
from randlr_jax.alrao import _features as features_lib

HEAD = "head"


class NoClassifierCopiesWarning(UserWarning):
    """An Alrao optimizer with classifier copies (:func:`alrao`, ``alrao_sgd``, ``alrao_adam``) was
    initialised on parameters without any under ``head_key``: it trains them with per-feature rates
    only and ``num_copies`` is unused. Use :func:`randlr_jax.alrao.alrao_base` for copy-free models."""


class ScaleByCopyLRsState(NamedTuple):
    """State of :func:`scale_by_copy_lrs`."""

    copy_lrs: chex.Array  # (N,) float32; learning rate of each classifier copy


def scale_by_copy_lrs(copy_lrs: Any) -> optax.GradientTransformation:
    """Multiply slice ``j`` (leading axis) of every update leaf by the copy's rate ``eta_j``.

    The rates are kept in the state (so checkpoints carry them). Does not negate (Optax convention).

    Args:
      copy_lrs: ``(N,)`` positive rates, e.g. :func:`randlr_jax.alrao.copy_learning_rates`.

    Raises:
      ValueError: ``copy_lrs`` (when concrete) not a non-empty 1-D array of finite rates > 0; in
        ``init``, a parameter without the copy axis of size ``N`` first, naming its path.
    """
    if not checks.is_traced(copy_lrs):
        try:
            rates = np.asarray(copy_lrs, np.float64)
        except (TypeError, ValueError):
            rates = None
        if (
            rates is None
            or rates.ndim != 1
            or rates.size == 0
            or not np.all(np.isfinite(rates) & (rates > 0))
        ):
            checks.fail("copy_lrs", "a non-empty 1-D array of finite rates > 0", copy_lrs)
    copy_lrs = jnp.asarray(copy_lrs, jnp.float32)
    if copy_lrs.ndim != 1:
        raise ValueError(f"copy_lrs must be a 1-D array of rates, got shape {copy_lrs.shape}.")

    def init_fn(params):
        is_masked = lambda x: isinstance(x, optax.MaskedNode)  # noqa: E731
        for path, leaf in jax.tree_util.tree_leaves_with_path(params, is_leaf=is_masked):
            if not is_masked(leaf) and (leaf.ndim == 0 or leaf.shape[0] != len(copy_lrs)):
                raise ValueError(
                    f"every classifier-copy parameter must have the copy axis first, of size "
                    f"{len(copy_lrs)}; got a leaf of shape {leaf.shape} at "
                    f"{features_lib._path_str(path)!r}."
                )
        # A fresh buffer: a training loop may donate the state it gets from ``init``.
        return ScaleByCopyLRsState(copy_lrs=jnp.array(copy_lrs, copy=True))

    def update_fn(updates, state, params=None):
        del params

        def scale(u):
            rates = state.copy_lrs.reshape((-1,) + (1,) * (u.ndim - 1)).astype(u.dtype)
            return u * rates

        return jax.tree.map(scale, updates), state

    return optax.GradientTransformation(init_fn, update_fn)


HeadPath = Any
"""Where the classifier copies are in a parameter tree (``head_path``): a key (``"head"``: every
parameter whose path contains that key), a key path from the root (``("decoder", "classifier")``:
every parameter under it, any depth) or a predicate ``(path: tuple[str, ...]) -> bool`` on the
parameters' key paths."""


def _keys(path: Any) -> tuple[str, ...]:
    """A JAX key path as a tuple of ``str`` keys (dict keys, attribute names, sequence indices)."""
    out = []
    for k in path:
        key = getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))
        out.append(str(key))
    return tuple(out)


def head_matcher(head_path: HeadPath, name: str = "head_path") -> Callable[[tuple[str, ...]], bool]:
    """The predicate on parameter key paths (tuples of ``str``) that ``head_path`` stands for.

    A ``str`` ``k`` matches every path containing the key ``k`` (the ``head_key`` of 0.2); a tuple of
    ``str`` matches every path that starts with it; a callable is the predicate itself.

    Raises:
      ValueError: ``head_path`` is none of these (an empty ``str``, an empty tuple or one with a
        non-``str`` or empty entry), naming ``name``.
    """
    if isinstance(head_path, str):
        checks.name_string(name, head_path)
        return lambda keys: head_path in keys
    if isinstance(head_path, tuple):
        if not head_path or not all(isinstance(k, str) and k for k in head_path):
            checks.fail(
                name, "a key (a non-empty str), a key path (a non-empty tuple of non-empty str) or "
                "a predicate on parameter paths", head_path,
            )  # fmt: skip
        n = len(head_path)
        return lambda keys: tuple(keys[:n]) == head_path
    if callable(head_path):
        return lambda keys: bool(head_path(tuple(keys)))
    checks.fail(
        name, "a key (a non-empty str), a key path (a non-empty tuple of non-empty str) or a "
        "predicate on parameter paths", head_path,
    )  # fmt: skip
    raise AssertionError  # unreachable: ``fail`` raises


def _resolve_head_path(head_key: Any, head_path: Any) -> tuple[HeadPath, str]:
    """``(head_path, how it is named in messages)`` from the two spellings (``head_key`` is 0.2's)."""
    if head_path is None:
        checks.name_string("head_key", head_key)
        return head_key, f"head_key={head_key!r}"
    if head_key != HEAD:
        raise ValueError(
            f"pass the classifier's location once: head_path={head_path!r} or "
            f"head_key={head_key!r}, not both (head_path takes a key, a key path or a predicate)."
        )
    head_matcher(head_path)
    return head_path, f"head_path={head_path!r}"


def head_label_fn(
    head_key: str = HEAD, *, head_path: HeadPath | None = None
) -> Callable[[Any], Any]:
    """Label every parameter ``"head"`` if its path matches the classifier's location, else ``"body"``.

    ``head_path`` (a key, a key path or a predicate, see :func:`head_matcher`) replaces ``head_key``
    (a key: every path containing it).
    """
    head_path, _ = _resolve_head_path(head_key, head_path)
    match = head_matcher(head_path)

    def label(params):
        def one(path, _):
            return "head" if match(_keys(path)) else "body"

        return jax.tree_util.tree_map_with_path(one, params)

    return label


def _validate(lr_min, lr_max, num_copies):
    # The interval's check is the one of ``alrao_base`` / ``scale_by_feature_lrs`` (same messages).
    features_lib.check_lr_interval(lr_min, lr_max)
    cc.check_num_copies(num_copies)


def _sgd_direction(momentum: Any, nesterov: bool) -> optax.GradientTransformation:
    """SGD's rate-free direction: the gradient, or (Nesterov) momentum; ``momentum`` may be traced."""
    checks.boolean("nesterov", nesterov)
    if momentum is None:
        if nesterov:
            checks.fail("nesterov", "False when momentum is None (Nesterov needs a momentum)", True)
        return optax.identity()
    checks.in_unit_interval("momentum", momentum)
    return optax.trace(decay=momentum, nesterov=nesterov)


def _adam_direction(b1: Any, b2: Any, eps: Any) -> optax.GradientTransformation:
    """Adam's rate-free direction ``m_hat / (sqrt(v_hat) + eps)``; the constants may be traced."""
    checks.in_unit_interval("b1", b1)
    checks.in_unit_interval("b2", b2)
    checks.nonnegative("eps", eps)
    return optax.scale_by_adam(b1=b1, b2=b2, eps=eps)


def _check_copies(params: Any, head_path: HeadPath, shown: str, num_copies: int) -> None:
    """At ``init``: the parameters at ``head_path`` (named ``shown`` in messages) are classifier
    copies (copy axis first, of size ``num_copies``); warn once when there are none."""
    is_masked = lambda x: isinstance(x, optax.MaskedNode)  # noqa: E731
    match = head_matcher(head_path)
    found = False
    for path, leaf in jax.tree_util.tree_leaves_with_path(params, is_leaf=is_masked):
        if not match(_keys(path)):
            continue
        found = True  # a copy masked out (optax.masked / partition) is still a copy
        if is_masked(leaf):
            continue
        shape = tuple(np.shape(leaf))
        if not shape or shape[0] != num_copies:
            raise ValueError(
                f"the parameter {features_lib._path_str(path)!r} is under {shown}, so "
                f"it is trained as a classifier copy, but its shape {shape} has no leading copy axis "
                f"of size num_copies={num_copies} (expected shape ({num_copies}, ...), as an "
                f"AlraoHead's 'copies/kernel' (N, D, K)). If it belongs to the body, rename the "
                f"module or pass the copies' location as head_path."
            )
    if not found:
        warnings.warn(
            f"alrao: no parameter path matches {shown}, so there are no classifier "
            f"copies: every parameter gets per-feature rates and num_copies={num_copies} is unused. "
            "For a model without copies use randlr_jax.alrao.alrao_base (e.g. "
            "alrao_base(optax.identity(), key, lr_min, lr_max)); if the copies live under another "
            "location, pass it as head_path (a key, a key path or a predicate).",
            NoClassifierCopiesWarning,
            stacklevel=3,
        )


def alrao(
    base: optax.GradientTransformation,
    key: chex.PRNGKey,
    lr_min: float,
    lr_max: float,
    num_copies: int,
    *,
    learning_rate_scale: optax.ScalarOrSchedule = 1.0,
    per: str = "feature",
    rules: Any = None,
    lstm_gates: str = "shared",
    head_key: str = HEAD,
    head_path: HeadPath | None = None,
) -> optax.GradientTransformation:
    """Alrao over any base direction (``base`` without a learning rate, e.g. ``optax.scale_by_adam()``).

    Pre-classifier (every parameter outside ``head_key``): ``-eta_feature ⊙ base(g)``, rates sampled in
    ``init`` from ``key``, log-uniform on ``[lr_min, lr_max]``. Classifier copies (under ``head_key``, copy
    axis first): ``-eta_j * base(g)_j`` with ``eta_j`` log-spaced. Both routed with ``optax.partition``.
    ``learning_rate_scale`` multiplies every rate (a schedule, or a number ``inject_hyperparams`` can drive):
    the paper's suggested "divide all Alrao rates by a time-dependent factor" (Section 4).

    Args:
      base: the base optimizer's direction (``optax.identity()`` for SGD, ``optax.trace(mu)`` for momentum).
      key: PRNG key for the per-feature rates.
      lr_min, lr_max: the interval, ``0 < lr_min <= lr_max``.
      num_copies: classifier copies ``N >= 1``.
      learning_rate_scale: multiplier of all rates: a finite number > 0, or a schedule of the step
        (a callable, not checked).
      per: ``"feature"`` (default) or ``"weight"`` (Appendix E).
      rules: extra feature rules (see :mod:`randlr_jax.alrao`).
      lstm_gates: ``"shared"`` (paper) or ``"separate"`` (the authors' code).
      head_key: the parameter-path key of the classifier copies (a non-empty str): every parameter
        whose path contains it.
      head_path: the classifier copies' location, any name at any depth, replacing ``head_key``:
        a key, a key path from the root (``("decoder", "classifier")``) or a predicate
        ``(path: tuple[str, ...]) -> bool`` on parameter key paths (:func:`head_matcher`). Pass
        the same value to :func:`randlr_jax.alrao.make_alrao_train_step`. ``None`` (default):
        ``head_key``.

    Every argument is checked when the optimizer is built. Under ``optax.inject_hyperparams`` only
    ``learning_rate_scale`` may be injected (traced, it is not checked); ``key``, ``lr_min``,
    ``lr_max`` and ``num_copies`` must be ``static_args`` (the rates are drawn from them, ``N`` is a
    shape; a traced bound is refused), the strings and ``rules`` pass through as they are.

    ``init`` checks the parameters: every leaf under ``head_key`` must have the copy axis of size
    ``num_copies`` first (``ValueError`` naming its path otherwise, e.g. a body module that happens
    to be called ``head``); without any leaf under ``head_key`` it emits one
    :class:`NoClassifierCopiesWarning` (use :func:`randlr_jax.alrao.alrao_base` for such models).

    Returns:
      An ``optax.GradientTransformation`` over ``{"body": ..., "head": ...}``-style parameter trees.

    Raises:
      ValueError: an argument out of range or of the wrong type, naming it.

    Example:
      >>> tx = alrao(optax.identity(), jax.random.key(0), 1e-5, 10.0, num_copies=10)
    """
    checks.transformation("base", base)
    checks.prng_key("key", key)
    _validate(lr_min, lr_max, num_copies)
    head_path, shown = _resolve_head_path(head_key, head_path)
    if not callable(learning_rate_scale):
        checks.positive("learning_rate_scale", learning_rate_scale)
    body = optax.chain(
        base,
        features_lib.scale_by_feature_lrs(
            key, lr_min, lr_max, per=per, rules=rules, lstm_gates=lstm_gates
        ),
    )
    head = optax.chain(base, scale_by_copy_lrs(cc.copy_learning_rates(lr_min, lr_max, num_copies)))
    tx = optax.partition({"body": body, "head": head}, head_label_fn(head_path=head_path))
    if callable(learning_rate_scale):
        tx = optax.chain(tx, optax.scale_by_schedule(learning_rate_scale), optax.scale(-1.0))
    else:
        tx = optax.chain(tx, optax.scale(-learning_rate_scale))

    def init_fn(params):
        _check_copies(params, head_path, shown, num_copies)
        return tx.init(params)

    return tx._replace(init=init_fn)


def alrao_sgd(
    key: chex.PRNGKey,
    lr_min: float,
    lr_max: float,
    num_copies: int = 10,
    *,
    momentum: float | None = None,
    nesterov: bool = False,
    learning_rate_scale: optax.ScalarOrSchedule = 1.0,
    per: str = "feature",
    rules: Any = None,
    lstm_gates: str = "shared",
    head_key: str = HEAD,
    head_path: HeadPath | None = None,
) -> optax.GradientTransformation:
    """Alrao-SGD (the paper's main method), with optional ordinary momentum.

    The direction is the gradient, or with ``momentum`` ``mu`` heavy-ball momentum ``m <- mu m + g``
    (its Nesterov form with ``nesterov``), as ``optax.sgd``; the update of a body weight of feature ``f``
    is ``-eta_f m`` and that of copy ``j`` is ``-eta_j m_j``. This is ordinary momentum, not the
    rate-dependent decay ``1 - mu * min(sqrt(eta), 1/mu)`` of the authors' PyTorch code (module
    docstring). ``per``, ``rules``, ``lstm_gates``,
    ``head_key`` and ``head_path`` are as in :func:`alrao`. The numeric hyperparameters (``momentum``,
    ``learning_rate_scale``) can be driven by ``optax.inject_hyperparams`` with
    ``static_args=("key", "lr_min", "lr_max", "num_copies")``: a concrete ``momentum`` is checked
    (``None`` or ``[0, 1)``), a traced one is not (nor a traced ``learning_rate_scale``); ``nesterov``
    must be a bool (inject_hyperparams passes bools through). Without copies:
    :func:`randlr_jax.alrao.alrao_base` with ``optax.identity()`` or
    ``optax.trace(momentum, nesterov=nesterov)`` (on parameters without copies ``init`` warns,
    :class:`NoClassifierCopiesWarning`).

    Raises:
      ValueError: as :func:`alrao`, and ``momentum`` outside ``[0, 1)``, ``nesterov`` not a bool or
        ``True`` without a momentum.

    Example:
      >>> params = {"body": {"Dense_0": {"kernel": jnp.zeros((5, 4)), "bias": jnp.zeros(4)}},
      ...           "head": {"copies": {"kernel": jnp.zeros((3, 4, 2)), "bias": jnp.zeros((3, 2))}}}
      >>> tx = alrao_sgd(jax.random.key(0), lr_min=1e-5, lr_max=10.0, num_copies=3)
      >>> state = tx.init(params)
      >>> grads = jax.tree.map(jnp.ones_like, params)
      >>> updates, state = jax.jit(tx.update)(grads, state)
      >>> [round(float(u), 6) for u in updates["head"]["copies"]["bias"][:, 0]]  # -eta_j, log-spaced
      [-1e-05, -0.01, -10.0]
    """
    base = _sgd_direction(momentum, nesterov)
    return alrao(
        base,
        key,
        lr_min,
        lr_max,
        num_copies,
        learning_rate_scale=learning_rate_scale,
        per=per,
        rules=rules,
        lstm_gates=lstm_gates,
        head_key=head_key,
        head_path=head_path,
    )


def alrao_adam(
    key: chex.PRNGKey,
    lr_min: float,
    lr_max: float,
    num_copies: int = 10,
    *,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    learning_rate_scale: optax.ScalarOrSchedule = 1.0,
    per: str = "feature",
    rules: Any = None,
    lstm_gates: str = "shared",
    head_key: str = HEAD,
    head_path: HeadPath | None = None,
) -> optax.GradientTransformation:
    """Alrao-Adam: ``eta ⊙ m_hat / (sqrt(v_hat) + eps)``, per-feature (and per-copy) ``eta`` (Appendix C).

    ``b1``, ``b2`` (in ``[0, 1)``) and ``eps`` (finite, ``>= 0``) are checked when concrete and may be
    driven by ``optax.inject_hyperparams`` (traced, unchecked), with
    ``static_args=("key", "lr_min", "lr_max", "num_copies")`` as :func:`alrao_sgd`. Other arguments as
    :func:`alrao_sgd`. Without copies: :func:`randlr_jax.alrao.alrao_base` with
    ``optax.scale_by_adam(b1, b2, eps)``.

    Raises:
      ValueError: as :func:`alrao`, and ``b1``/``b2`` outside ``[0, 1)`` or ``eps`` negative or not
        finite.
    """
    return alrao(
        _adam_direction(b1, b2, eps),
        key,
        lr_min,
        lr_max,
        num_copies,
        learning_rate_scale=learning_rate_scale,
        per=per,
        rules=rules,
        lstm_gates=lstm_gates,
        head_key=head_key,
        head_path=head_path,
    )


def alrao_loss(
    copy_outputs_own: jax.Array,
    copy_outputs_mix: jax.Array,
    targets: jax.Array,
    log_posterior: jax.Array,
    params_finite: jax.Array,
    *,
    task: str = "classification",
    sigma: float = 1.0,
) -> tuple[jax.Array, dict]:
    """The Alrao objective from the copies' outputs (``(N, B, ..., K)``), see the module docstring.

    ``loss = L_mix + sum_j L_j`` with, over the batch means, ``L_mix = -log sum_j a_j p_j(y|x)`` (its
    gradient reaches the features only) and ``L_j = -log p_j(y|x)`` (its gradient reaches copy ``j``
    only). Classification: ``p_j = softmax(logits_j)[y]``. Regression (the paper only says "the case of
    regression is similar"): copy ``j`` predicts a mean ``mu_j`` and ``p_j(y|x) = N(y; mu_j, sigma^2 I)``
    with a fixed ``sigma`` (1 by default, as the authors' code), so
    ``L_mix = -log sum_j a_j N(y; mu_j, sigma^2 I)`` and the prediction is ``sum_j a_j mu_j``. The
    ``a_j`` are renormalised over the finite copies; the switch observation is each finite copy's batch
    mean of ``log p_j(y|x)`` (``-inf`` for a dropped copy).

    Args:
      copy_outputs_own: the copies' outputs on ``stop_gradient(features)`` (gradients flow to the copies).
      copy_outputs_mix: the same outputs computed with ``stop_gradient(copy params)`` (gradients flow to the
        features). Numerically equal to ``copy_outputs_own``.
      targets: int labels ``(B, ...)`` (classification) or float targets ``(B, ..., K)`` (regression).
      log_posterior: ``(N,)`` averaging log-weights.
      params_finite: ``(N,)`` bool, whether each copy's parameters are finite.
      task: ``"classification"`` or ``"regression"``.
      sigma: the Gaussian likelihood's standard deviation (regression), a finite number > 0 (may be
        traced, then unchecked).

    Raises:
      ValueError: an unknown ``task``, a bad ``sigma``, or arrays of the wrong shapes (checked from
        the shapes, also when traced): ``copy_outputs_own`` a float array ``(N, B, ..., K)``,
        ``copy_outputs_mix`` of its shape, ``targets`` integer labels ``(B, ...)`` (classification)
        or ``(B, ..., K)`` (regression), ``log_posterior`` ``(N,)``, ``params_finite`` bool ``(N,)``.

    Returns:
      ``(loss, aux)``; ``aux`` has ``mixture_loss`` (the loss of the model's prediction: with every copy
      dropped, that of the uniform prediction, ``log K`` an example, or for regression that of the mean
      zero, as :class:`~randlr_jax.alrao.AlraoHead` outputs), ``copy_log_likelihoods`` ``(N,)``
      (batch means; ``-inf`` for dropped copies: the switch observation), ``finite`` ``(N,)`` and
      ``mixture_log_probs`` (classification) or ``prediction`` (regression).
    """
    checks.one_of("task", task, cc.TASKS)
    checks.positive("sigma", sigma)
    checks.array_like(
        "copy_outputs_own", copy_outputs_own, "a float array of the copies' outputs (N, B, ..., K)"
    )
    if copy_outputs_own.ndim < 2 or not jnp.issubdtype(copy_outputs_own.dtype, jnp.floating):
        checks.fail(
            "copy_outputs_own", "a float array of the copies' outputs (N, B, ..., K)",
            copy_outputs_own, shown=checks.brief(copy_outputs_own),
        )  # fmt: skip
    shape = tuple(copy_outputs_own.shape)
    if not (hasattr(copy_outputs_mix, "shape") and tuple(copy_outputs_mix.shape) == shape):
        checks.fail(
            "copy_outputs_mix", f"an array of the shape of copy_outputs_own {shape}",
            copy_outputs_mix, shown=checks.brief(copy_outputs_mix),
        )  # fmt: skip
    _check_targets(targets, shape[1:], task)
    _check_per_copy(log_posterior, params_finite, shape[0], "copy_outputs_own.shape[0]")
    n = copy_outputs_own.shape[0]
    out_finite = jnp.all(jnp.isfinite(copy_outputs_own.reshape(n, -1)), axis=1)
    finite = params_finite & out_finite
    own = cc.zero_nonfinite_copies(copy_outputs_own, finite)
    mix = cc.zero_nonfinite_copies(copy_outputs_mix, finite)
    own_ll = _copy_log_likelihoods(own, targets, task, sigma)  # (N, B, ...)
    mix_ll = _copy_log_likelihoods(mix, targets, task, sigma)
    fallback_ll = _fallback_log_likelihoods(targets, own.shape[-1], own.dtype, task, sigma)
    loss, aux, safe_logw = _objective(own_ll, mix_ll, finite, log_posterior, fallback_ll)
    if task == "classification":
        aux["mixture_log_probs"] = jax.lax.stop_gradient(
            cc.mixture_log_probs(jax.nn.log_softmax(own, axis=-1), safe_logw)
        )
    else:
        weights = jnp.exp(safe_logw).reshape((-1,) + (1,) * (own.ndim - 1))
        aux["prediction"] = jax.lax.stop_gradient(jnp.sum(weights * own, axis=0))
    return loss, aux


def alrao_loss_chunked(
    apply_copies: Callable[[Any, jax.Array], jax.Array],
    head_params: Any,
    features: jax.Array,
    targets: jax.Array,
    log_posterior: jax.Array,
    params_finite: jax.Array,
    *,
    chunk_size: int,
    task: str = "classification",
    sigma: float = 1.0,
) -> tuple[jax.Array, dict]:
    """:func:`alrao_loss` computed over chunks of ``chunk_size`` copies, never holding ``(N, B, ..., K)``.

    A ``lax.scan`` over chunks of the copy axis (:func:`randlr_jax.alrao._copies.to_copy_chunks`);
    each chunk's body, under ``jax.checkpoint``, computes its ``c`` copies' outputs ``(c, B, ..., K)`` and
    reduces them to what the objective needs: the label log-likelihoods ``log p_j(y|x)`` ``(c, B, ...)``
    (twice: on ``stop_gradient(features)`` for the copies' gradients and with ``stop_gradient`` copy
    parameters for the features' gradient), the finiteness flags and, without gradient, the running
    ``log sum_j a_j p_j`` ``(B, ..., K)``. The backward pass recomputes one chunk at a time. Same value,
    gradients and ``aux`` as :func:`alrao_loss` on the full outputs, up to float rounding.

    Args:
      apply_copies: ``(head_params_chunk, features) -> (c, B, ..., K)`` outputs of the copies whose
        parameters are given (copy axis first), e.g. :func:`randlr_jax.alrao.apply_copies`.
      head_params: the copies' parameters, copy axis first (size ``N``); non-finite copies should be
        zeroed (:func:`randlr_jax.alrao.zero_nonfinite_copies`) as for :func:`alrao_loss`.
      features: the classifier's input ``(B, ..., D)``; gradients reach it through the mixture only.
      targets, log_posterior, params_finite, task, sigma: as :func:`alrao_loss`.
      chunk_size: copies per chunk, an integer in ``[1, N]`` (need not divide ``N``).

    Returns:
      ``(loss, aux)`` as :func:`alrao_loss`.

    Raises:
      ValueError: as :func:`alrao_loss` (``targets`` checked against the outputs ``apply_copies``
        gives, from shapes only), a non-callable ``apply_copies``, ``head_params`` without a copy
        axis of size ``N`` (``log_posterior``'s length), ``features`` that ``apply_copies`` cannot
        take with ``head_params``, a ``chunk_size`` outside ``[1, N]``.
    """
    checks.function(
        "apply_copies", apply_copies, "a function (head_params, features) -> (c, B, ..., K)"
    )
    checks.array_like("log_posterior", log_posterior, "the averaging log-weights (N,)")
    if log_posterior.ndim != 1:
        checks.fail(
            "log_posterior", "the averaging log-weights (N,)", log_posterior,
            shown=checks.brief(log_posterior),
        )  # fmt: skip
    n = log_posterior.shape[0]
    _check_head_params(head_params, n)
    _check_per_copy(log_posterior, params_finite, n, "the copies of head_params")
    if cc.check_copy_chunk_size(chunk_size, n, "chunk_size") is None:
        checks.fail("chunk_size", f"an integer in [1, N={n}]", None)
    checks.one_of("task", task, cc.TASKS)
    checks.positive("sigma", sigma)
    checks.array_like("features", features, "the classifier's input (B, ..., D)")
    try:
        one_copy = jax.eval_shape(
            apply_copies, jax.tree.map(lambda x: x[:1], head_params), features
        )
    except Exception as error:  # the shapes do not fit (JAX's or Flax's error, kept as the cause)
        raise ValueError(
            f"features must be the classifier's input (B, ..., D) that apply_copies takes with "
            f"head_params, got {checks.brief(features)}: {type(error).__name__}: {error}"
        ) from error
    _check_targets(targets, tuple(one_copy.shape[1:]), task)

    def chunk(params, features, log_post, finite_params):
        def log_likelihoods(params, features):
            outputs = apply_copies(params, features)
            keep = finite_params & cc.finite_per_copy(outputs)
            outputs = cc.zero_nonfinite_copies(outputs, keep)
            return _copy_log_likelihoods(outputs, targets, task, sigma), keep, outputs

        own_ll, keep, outputs = log_likelihoods(params, jax.lax.stop_gradient(features))
        mix_ll, _, _ = log_likelihoods(jax.lax.stop_gradient(params), features)
        # The copy's final flag (as ``_objective``): its batch-mean log-likelihood must be finite too.
        kept = keep & jnp.isfinite(own_ll.reshape(own_ll.shape[0], -1).mean(axis=1))
        log_weights = jnp.where(kept, log_post, -jnp.inf)
        part = cc.mixture_chunk(task, jax.lax.stop_gradient(outputs), log_weights)
        return own_ll, mix_ll, keep, jax.lax.stop_gradient(part)

    chunk = jax.checkpoint(chunk, prevent_cse=False)  # a scan already keeps chunks apart

    def body(running, xs):
        params, log_post, finite_params = xs
        own_ll, mix_ll, keep, part = chunk(params, features, log_post, finite_params)
        return cc.mixture_combine(task, running, part), (own_ll, mix_ll, keep)

    running = cc.mixture_init(task, one_copy.shape[1:], one_copy.dtype)
    xs = cc.to_copy_chunks((head_params, log_posterior, params_finite), chunk_size)
    running, per_copy = jax.lax.scan(body, running, xs)
    own_ll, mix_ll, keep = cc.from_copy_chunks(per_copy, n)
    fallback_ll = _fallback_log_likelihoods(
        targets, one_copy.shape[-1], one_copy.dtype, task, sigma
    )
    loss, aux, _ = _objective(own_ll, mix_ll, keep, log_posterior, fallback_ll)
    mixture = jax.lax.stop_gradient(
        cc.mixture_finish(
            task, running, jnp.where(aux["finite"], log_posterior, -jnp.inf), one_copy.shape[-1]
        )
    )
    aux["mixture_log_probs" if task == "classification" else "prediction"] = mixture
    return loss, aux


def _check_targets(targets: Any, output_shape: tuple[int, ...], task: str) -> None:
    """``targets`` against one copy's outputs ``(B, ..., K)``: integer labels ``(B, ...)``
    (classification) or numeric targets ``(B, ..., K)`` (regression: ``(B, 1)`` against ``K = 2``
    would broadcast silently)."""
    if task == "classification":
        shape, what = output_shape[:-1], "integer labels"
        ok = hasattr(targets, "dtype") and jnp.issubdtype(targets.dtype, jnp.integer)
    else:
        shape, what = output_shape, "targets"
        ok = hasattr(targets, "dtype") and jnp.issubdtype(targets.dtype, jnp.number)
    if not (ok and tuple(targets.shape) == shape):
        checks.fail(
            "targets", f"{what} of shape {shape} (the outputs' (B, ..., K) = {output_shape}, "
            f"task={task!r})", targets, shown=checks.brief(targets),
        )  # fmt: skip


def _check_per_copy(log_posterior: Any, params_finite: Any, n: int, source: str) -> None:
    """``log_posterior`` ``(N,)`` and ``params_finite`` bool ``(N,)``, ``N`` from ``source``."""
    if not (hasattr(log_posterior, "shape") and tuple(log_posterior.shape) == (n,)):
        checks.fail(
            "log_posterior", f"the averaging log-weights of shape (N,) = ({n},) (N: {source})",
            log_posterior, shown=checks.brief(log_posterior),
        )  # fmt: skip
    if not (
        hasattr(params_finite, "dtype")
        and params_finite.dtype == jnp.bool_
        and tuple(params_finite.shape) == (n,)
    ):
        checks.fail(
            "params_finite", f"a bool array of shape (N,) = ({n},) (N: {source})",
            params_finite, shown=checks.brief(params_finite),
        )  # fmt: skip


def _check_head_params(head_params: Any, n: int) -> None:
    """The copies' parameters: a non-empty pytree of arrays, each with the copy axis first, of size
    ``N`` (``log_posterior``'s length)."""
    leaves = jax.tree.leaves(head_params)
    sizes = sorted({tuple(getattr(leaf, "shape", ()))[:1] for leaf in leaves})
    if not leaves or sizes != [(n,)] or not all(hasattr(leaf, "dtype") for leaf in leaves):
        checks.fail(
            "head_params", f"the copies' parameters, every array with the copy axis first of size "
            f"N = {n} (log_posterior's length)", head_params,
            shown=f"leading sizes {[s[0] if s else None for s in sizes]}" if leaves else None,
        )  # fmt: skip


def _copy_log_likelihoods(
    outputs: jax.Array, targets: jax.Array, task: str, sigma: float
) -> jax.Array:
    """``log p_j(y|x)`` ``(N, B, ...)`` of each copy from its (finite) outputs ``(N, B, ..., K)``."""
    if task == "classification":
        return _label_log_probs(jax.nn.log_softmax(outputs, axis=-1), targets)
    return cc.gaussian_log_likelihood(outputs, targets[None], sigma)


def _fallback_log_likelihoods(
    targets: jax.Array, num_outputs: int, dtype: Any, task: str, sigma: float
) -> jax.Array:
    """``log p(y|x)`` ``(B, ...)`` of the prediction made when every copy is dropped (as
    :class:`~randlr_jax.alrao.AlraoHead` outputs it): the uniform distribution over the ``K`` classes
    (``-log K``), or, for regression, the Gaussian likelihood of the mean zero."""
    if task == "classification":
        return jnp.full(targets.shape, -math.log(num_outputs), dtype)
    targets = jax.lax.stop_gradient(targets)
    return cc.gaussian_log_likelihood(jnp.zeros_like(targets), targets, sigma).astype(dtype)


def _objective(
    own_ll: jax.Array,
    mix_ll: jax.Array,
    finite: jax.Array,
    log_posterior: jax.Array,
    fallback_ll: jax.Array,
) -> tuple[jax.Array, dict, jax.Array]:
    """The Alrao objective from the copies' label log-likelihoods ``(N, B, ...)`` (module docstring).

    ``own_ll`` carries the gradients to the copies, ``mix_ll`` (same values) those to the features;
    ``finite`` ``(N,)`` flags the copies whose parameters and outputs are finite; ``fallback_ll``
    ``(B, ...)`` is the label log-likelihood of the prediction made when every copy is dropped
    (:func:`_fallback_log_likelihoods`): the mixture's loss is then the loss of that prediction, a
    constant (no gradient), never a ``-0.0`` that would look like a perfect fit. Returns
    ``(loss, aux, safe_log_weights)``: the mixture's log-weights, uniform when every copy is dropped.
    """
    n = own_ll.shape[0]
    copy_ll = own_ll.reshape(n, -1).mean(axis=1)  # (N,)
    finite = finite & jnp.isfinite(copy_ll)
    copy_ll = jnp.where(finite, copy_ll, -jnp.inf)
    copies_loss = -jnp.sum(jnp.where(finite, own_ll.reshape(n, -1).mean(axis=1), 0.0))
    logw = cc.masked_log_weights(log_posterior, finite)
    safe_logw = jnp.where(
        jnp.any(finite), logw, -math.log(n)
    )  # all dropped: keep the output finite
    mixture_ll = jax.nn.logsumexp(
        safe_logw.reshape((-1,) + (1,) * (mix_ll.ndim - 1))
        + jnp.where(finite.reshape((-1,) + (1,) * (mix_ll.ndim - 1)), mix_ll, -jnp.inf),
        axis=0,
    )
    # Every copy dropped: the prediction made is the fallback (uniform / zero), so is its loss.
    mixture_ll = jnp.where(jnp.isfinite(mixture_ll), mixture_ll, fallback_ll)
    mixture_loss = -jnp.mean(mixture_ll)
    aux = {"mixture_loss": mixture_loss, "copy_log_likelihoods": copy_ll, "finite": finite}
    return mixture_loss + copies_loss, aux, safe_logw


def _label_log_probs(log_probs: jax.Array, labels: jax.Array) -> jax.Array:
    """``log_probs[j, b, ..., labels[b, ...]]`` for every copy ``j``."""
    labels = jnp.broadcast_to(labels[None], log_probs.shape[:-1])
    return jnp.take_along_axis(log_probs, labels[..., None], axis=-1)[..., 0]


# ------------------------------------------------------------------ the dense copies, fused


DEFAULT_FUSED_CHUNK = 1
"""Copies per iteration of :func:`alrao_loss_dense` when the head sets no ``copy_chunk_size``."""


def alrao_loss_dense(
    head_params: Any,
    features: jax.Array,
    targets: jax.Array,
    log_posterior: jax.Array,
    *,
    chunk_size: int = DEFAULT_FUSED_CHUNK,
    task: str = "classification",
    sigma: float = 1.0,
) -> tuple[jax.Array, dict]:
    """:func:`alrao_loss` of dense classifier copies in one pass over the copies, gradient included.

    The copies are an :class:`~randlr_jax.alrao.AlraoHead`'s: ``{"copies": {"kernel": (N, D, K),
    "bias": (N, K)}}``, copy ``j``'s outputs ``z_j = features @ kernel_j + bias_j``. Same value,
    ``aux`` and gradients with respect to ``head_params`` and ``features`` as :func:`alrao_loss` on
    the copies' outputs (with ``params_finite = copies_finite(head_params)``), up to float
    rounding; but the program never holds the outputs of all copies, nor any ``(N, ..., K)`` or
    ``(N, D, K)`` array but the copies' gradient, and reads each copy's kernel once.

    One ``lax.scan`` visits ``chunk_size`` copies at a time and computes, for each copy, ``z_j``, its
    finiteness, ``log p_j(y|x)`` (classification ``z_{j,y} - logsumexp(z_j)``, regression the
    Gaussian log-density), its share of the mixture (:func:`randlr_jax.alrao._copies.mixture_chunk`)
    and, when differentiated (a ``jax.custom_vjp`` whose forward pass computes the gradient), the
    output gradient of ``log p_j``, ``e_j = onehot(y) - softmax(z_j)`` (regression
    ``(y - z_j) / sigma^2``), with the kernel in cache: the copy's own loss
    ``L_j = -mean_b log p_j(y_b|x_b)`` gives ``d kernel_j = -features^T e_j / M`` and
    ``d bias_j = -sum_b e_j / M`` at once (``M`` the number of examples), and ``v_j = e_j kernel_j^T``
    ``(M, D)`` is kept. The mixture's loss ``L_mix = -mean_b log sum_j a_j p_j(y_b|x_b)`` reaches
    the features through the responsibilities ``r_{jb} = a_j p_j(y_b|x_b) / sum_i a_i p_i(y_b|x_b)``,
    known after the pass: ``d features_b = -sum_j r_{jb} v_{jb} / M``.

    A copy is dropped when one of its outputs or its batch-mean log-likelihood is not finite. That
    covers non-finite parameters without a pass over all ``N D K`` of them: a non-finite weight or
    bias makes its whole output column non-finite (``0 * inf`` is NaN). A dropped copy gets a zero
    gradient, and its (maybe NaN) kernel's products are discarded, never summed.

    Only the loss carries a gradient (to ``head_params`` and ``features``); ``log_posterior``,
    ``targets`` and ``aux`` do not.

    Args:
      head_params: ``{"copies": {"kernel": (N, D, K), "bias": (N, K)}}``, float.
      features: the classifier's input ``(B, ..., D)``.
      targets: int labels ``(B, ...)`` (classification) or float targets ``(B, ..., K)``.
      log_posterior: ``(N,)`` averaging log-weights.
      chunk_size: copies per iteration, in ``[1, N]`` (need not divide ``N``); chunks are strided
        over the copy axis as :func:`randlr_jax.alrao._copies.to_copy_chunks` (with the copy axis
        sharded over ``s`` devices and ``s`` dividing ``chunk_size``, every chunk is spread over
        all of them).
      task, sigma: as :func:`alrao_loss`.

    Returns:
      ``(loss, aux)`` as :func:`alrao_loss`.

    Raises:
      ValueError: ``head_params`` not that layout, ``features`` not ``(B, ..., D)``, bad
        ``targets``, ``log_posterior``, ``task``, ``sigma`` or ``chunk_size``.
    """
    checks.one_of("task", task, cc.TASKS)
    checks.positive("sigma", sigma)
    kernel, bias = _dense_copies(head_params)
    n, d, k = kernel.shape
    checks.array_like("log_posterior", log_posterior, "the averaging log-weights (N,)")
    if tuple(getattr(log_posterior, "shape", ())) != (n,):
        checks.fail(
            "log_posterior", f"the averaging log-weights of shape (N,) = ({n},) (N: the copies "
            "of head_params)", log_posterior, shown=checks.brief(log_posterior),
        )  # fmt: skip
    if cc.check_copy_chunk_size(chunk_size, n, "chunk_size") is None:
        checks.fail("chunk_size", f"an integer in [1, N={n}]", None)
    checks.array_like("features", features, "the classifier's input (B, ..., D)")
    if features.ndim < 2 or features.shape[-1] != d:
        checks.fail(
            "features", f"the classifier's input (B, ..., D) with D = {d} (the copies' kernels "
            f"(N, D, K) = {(n, d, k)})", features, shown=checks.brief(features),
        )  # fmt: skip
    output_shape = tuple(features.shape[:-1]) + (k,)
    _check_targets(targets, output_shape, task)
    rows = math.prod(features.shape[:-1])
    flat_targets = targets.reshape((rows, k) if task == "regression" else (rows,))
    loss, aux = _dense_objective(
        (chunk_size, task, float(sigma)), kernel, bias, features.reshape(rows, d),
        flat_targets, jax.lax.stop_gradient(log_posterior),
    )  # fmt: skip
    aux = dict(aux)
    if task == "classification":
        aux["mixture_log_probs"] = aux["mixture_log_probs"].reshape(output_shape)
    else:
        aux["prediction"] = aux["prediction"].reshape(output_shape)
    return loss, aux


def _dense_copies(head_params: Any) -> tuple[jax.Array, jax.Array]:
    """``(kernel (N, D, K), bias (N, K))`` of an ``AlraoHead``'s parameters, checked."""
    copies = head_params.get("copies") if isinstance(head_params, dict) else None
    kernel = copies.get("kernel") if isinstance(copies, dict) else None
    bias = copies.get("bias") if isinstance(copies, dict) else None
    if (
        getattr(kernel, "ndim", 0) != 3
        or getattr(bias, "ndim", 0) != 2
        or tuple(bias.shape) != (kernel.shape[0], kernel.shape[2])
        or not jnp.issubdtype(kernel.dtype, jnp.floating)
    ):
        checks.fail(
            "head_params", "an AlraoHead's parameters {'copies': {'kernel': (N, D, K), "
            "'bias': (N, K)}} (float)", head_params, shown=checks.brief(head_params),
        )  # fmt: skip
    return kernel, bias


def _mixture_part(log_probs: jax.Array, log_weights: jax.Array) -> jax.Array:
    """:func:`randlr_jax.alrao._copies.mixture_chunk` (classification) from the chunk's
    log-probabilities ``(c, M, K)``: ``log sum_j w_j p_j``, ``-inf`` when the chunk keeps no copy."""
    terms = log_weights[:, None, None] + log_probs
    if log_probs.shape[0] == 1:
        return jnp.where(jnp.isfinite(log_weights[0]), terms[0], -jnp.inf)
    any_kept = jnp.any(jnp.isfinite(log_weights))
    return jnp.where(any_kept, jax.nn.logsumexp(jnp.where(any_kept, terms, 0.0), axis=0), -jnp.inf)


def _copies_matmul(features: jax.Array, kernel_c: jax.Array) -> jax.Array:
    """``features @ kernel_j`` for each copy of a chunk: ``(M, D), (c, D, K) -> (c, M, K)``."""
    if kernel_c.shape[0] == 1:  # a plain matmul: XLA keeps the kernel's layout (no transpose)
        return (features @ kernel_c[0])[None]
    batched = jnp.broadcast_to(features, (kernel_c.shape[0],) + features.shape)
    return jax.lax.dot_general(batched, kernel_c, (((2,), (1,)), ((0,), (0,))))


def _copies_matmul_t(grads: jax.Array, kernel_c: jax.Array) -> jax.Array:
    """``grads_j @ kernel_j^T`` for each copy: ``(c, M, K), (c, D, K) -> (c, M, D)``."""
    if kernel_c.shape[0] == 1:
        return (grads[0] @ kernel_c[0].T)[None]
    return jax.lax.dot_general(grads, kernel_c, (((2,), (2,)), ((0,), (0,))))


def _copies_outer(features: jax.Array, grads: jax.Array) -> jax.Array:
    """``features^T @ grads_j`` for each copy: ``(M, D), (c, M, K) -> (c, D, K)``."""
    if grads.shape[0] == 1:
        return (features.T @ grads[0])[None]
    batched = jnp.broadcast_to(features, (grads.shape[0],) + features.shape)
    return jax.lax.dot_general(batched, grads, (((1,), (1,)), ((0,), (0,))))


def _dense_pass(static, kernel, bias, features, targets, log_posterior, *, with_grads):
    """The scan of :func:`alrao_loss_dense`: ``(loss, aux)`` and, ``with_grads``, the gradient of
    ``loss`` with respect to ``(kernel, bias, features)``."""
    chunk_size, task, sigma = static
    n, _, k = kernel.shape
    rows = features.shape[0]
    dtype = jnp.result_type(kernel.dtype, features.dtype)

    def body(running, xs):
        if chunk_size == 1 < n:  # copy ``xs``: sliced in the loop, the kernels are never copied
            valid = jnp.ones(1, bool)
            kernel_c, bias_c, log_post_c = (
                jax.lax.dynamic_slice_in_dim(x, xs, 1) for x in (kernel, bias, log_posterior)
            )
        else:
            kernel_c, bias_c, log_post_c, valid = xs
        outputs = _copies_matmul(features, kernel_c) + bias_c[:, None, :]
        finite = valid & jnp.all(jnp.isfinite(outputs), axis=(1, 2))
        outputs = jnp.where(finite[:, None, None], outputs, 0.0)
        if task == "classification":
            lse = jax.nn.logsumexp(outputs, axis=-1)
            label = jnp.take_along_axis(outputs, targets[None, :, None], axis=-1)[..., 0]
            ll = label - lse
        else:
            ll = cc.gaussian_log_likelihood(outputs, targets[None], sigma)
        kept = finite & jnp.isfinite(ll.mean(axis=1))
        log_weights = jnp.where(kept, log_post_c, -jnp.inf)
        if task == "classification":  # log_softmax from ``lse``: no second pass of exponentials
            part = _mixture_part(outputs - lse[..., None], log_weights)
        else:
            part = cc.mixture_chunk(task, outputs, log_weights)
        running = cc.mixture_combine(task, running, part)
        if not with_grads:
            return running, (ll, finite, None, None, None)
        # d log p_j(y|x) / d z_j, zero for a dropped copy.
        if task == "classification":
            onehot = jnp.arange(k)[None, :] == targets[:, None]
            residual = onehot[None] - jnp.exp(outputs - lse[..., None])
        else:
            residual = (targets[None] - outputs) / sigma**2
        residual = jnp.where(kept[:, None, None], residual, 0.0)
        # The copy's own loss -mean_b log p_j(y_b|x_b): the copy's gradient, kernel in cache.
        dk = _copies_outer(features, residual) * (-1.0 / rows)
        db = residual.sum(axis=1) * (-1.0 / rows)
        # The features' direction, weighted by the responsibilities after the pass; a dropped
        # copy's (maybe NaN) kernel product is discarded.
        v = jnp.where(kept[:, None, None], _copies_matmul_t(residual, kernel_c), 0.0)
        return running, (ll, finite, v, dk, db)

    # Strided chunks (``to_copy_chunks``): a sharded copy axis stays split, no gather. Padding
    # copies (``N`` not a multiple of the chunk) are marked invalid and never kept.
    running = cc.mixture_init(task, (rows, k), dtype)
    if chunk_size == n:  # one chunk: no loop, no slicing
        running, ys = body(running, (kernel, bias, log_posterior, jnp.ones(n, bool)))
    elif chunk_size == 1:
        running, ys = jax.lax.scan(body, running, jnp.arange(n))
        ys = tuple(None if y is None else y[:, 0] for y in ys)
    else:
        xs = cc.to_copy_chunks((kernel, bias, log_posterior), chunk_size)
        xs = (*xs, cc.to_copy_chunks(jnp.ones(n, bool), chunk_size, fill=False))
        running, ys = jax.lax.scan(body, running, xs)
        ys = tuple(None if y is None else cc.from_copy_chunks(y, n) for y in ys)
    ll, finite, v, d_kernel, d_bias = ys
    fallback_ll = _fallback_log_likelihoods(targets, k, dtype, task, sigma)
    if task == "regression":
        fallback_ll = fallback_ll.reshape(rows)
    loss, aux, safe_logw = _objective(ll, ll, finite, log_posterior, fallback_ll)
    mixture = cc.mixture_finish(task, running, jnp.where(aux["finite"], log_posterior, -jnp.inf), k)
    aux["mixture_log_probs" if task == "classification" else "prediction"] = mixture
    if not with_grads:
        return loss, aux
    # The responsibilities r_jb (zero for dropped copies and for examples whose mixture
    # log-likelihood fell back to the constant of the all-dropped prediction).
    kept = aux["finite"]
    terms = safe_logw[:, None] + jnp.where(kept[:, None], ll, -jnp.inf)
    mixture_ll = jax.nn.logsumexp(terms, axis=0)
    ok = jnp.isfinite(mixture_ll)
    resp = jnp.where(
        ok[None] & kept[:, None], jnp.exp(terms - jnp.where(ok, mixture_ll, 0.0)[None]), 0
    )
    d_features = jnp.einsum("nm,nmd->md", resp, v) * (-1.0 / rows)
    return (loss, aux), (d_kernel, d_bias, d_features.astype(features.dtype))


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _dense_objective(static, kernel, bias, features, targets, log_posterior):
    return _dense_pass(static, kernel, bias, features, targets, log_posterior, with_grads=False)


def _dense_objective_fwd(static, kernel, bias, features, targets, log_posterior):
    out, grads = _dense_pass(
        static, kernel, bias, features, targets, log_posterior, with_grads=True
    )
    return out, grads


def _dense_objective_bwd(static, grads, cotangents):
    del static
    g = cotangents[0]  # the loss's; ``aux`` carries no gradient
    d_kernel, d_bias, d_features = grads
    return g * d_kernel, g * d_bias, g * d_features, None, None


_dense_objective.defvjp(_dense_objective_fwd, _dense_objective_bwd)
