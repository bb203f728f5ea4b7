"""Per-feature random learning rates for the body of an Alrao network.

Alrao (Blier, Wolinski and Ollivier) gives every *feature* of the network (a unit of a dense layer,
a channel of a convolution, a hidden unit of an LSTM, ...) its own learning rate, drawn once at
initialisation from a log-uniform distribution::

    eta_f = exp(U(log eta_min, log eta_max)),

and all incoming weights of the feature, its bias included, are trained with ``eta_f``. The update
of a parameter ``w`` of feature ``f`` is ``-eta_f * d_w``, where ``d`` is the direction of the base
optimizer (the gradient for SGD, ``m_hat / (sqrt(v_hat) + eps)`` for Adam).

The module has three layers:

* :func:`sample_feature_lrs` maps a parameter pytree (a Flax Linen dict, possibly wrapped in
  ``{"params": ...}``, or a Flax NNX ``nnx.State``) to a pytree of rates of the same structure. Each
  leaf stores one value per feature and broadcasts against its parameter (a Dense kernel
  ``(in, out)`` gets ``(1, out)``), so the memory cost is one float per feature, not per weight.
  What a feature is, is decided by :class:`FeatureRule` data (path pattern -> feature axes and
  sharing group), see :func:`default_feature_rules`.
* :func:`scale_by_feature_lrs` / :func:`scale_by_lr_tree`: Optax transformations that multiply the
  incoming updates by the rates, kept in their state (:class:`FeatureLRState`) so that a restored
  checkpoint continues with the same rates. Like every Optax ``scale_by_*`` they do not negate.
* :func:`alrao_base`: the optimizer of the pre-classifier part, ``chain(base, scale_by_feature_lrs,
  scale(-1))`` over any rate-free direction ``base``: ``optax.identity()`` (SGD),
  ``optax.trace(mu, nesterov)`` (momentum), ``optax.scale_by_adam(b1, b2, eps)`` (Adam). The
  classifier copies (each with its scalar rate) are optimised separately and combined through
  ``optax.partition`` (:func:`randlr_jax.alrao.alrao`, ``alrao_sgd``, ``alrao_adam``); all
  transformations here accept the ``optax.MaskedNode`` leaves that ``optax.partition`` and
  ``optax.masked`` put into the parameters.

Learning-rate schedules compose by chaining: ``optax.chain(alrao_base(optax.identity(), ...),
optax.scale_by_schedule(lambda t: 1 / (1 + t / T)))`` divides every rate by ``1 + t / T``, the
extension suggested in Section 4 of the paper.

The interval check shared by every Alrao entry point lives here: :func:`check_lr_interval` (the
bounds must be concrete); the numeric hyperparameters go through :mod:`randlr_jax._checks` (checked
when concrete and skipped when traced under ``optax.inject_hyperparams``), as everywhere in the package.

References:
  Blier, Wolinski and Ollivier, `Learning with Random Learning Rates
  <https://arxiv.org/abs/1810.01322>`_, ECML-PKDD 2019.
"""

from __future__ import annotations

import hashlib
import math
import re
import warnings
from collections.abc import Hashable, Sequence
from typing import Any, NamedTuple

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax

from randlr_jax import _checks as checks

__all__ = [
    "FeatureLRState",
    "FeatureRule",
    "UnrecognisedParameterWarning",
    "alrao_base",
    "default_feature_rules",
    "sample_feature_lrs",
    "scale_by_feature_lrs",
    "scale_by_lr_tree",
]

_PER_CHOICES = ("feature", "weight")
_LSTM_GATES_CHOICES = ("shared", "separate")


class UnrecognisedParameterWarning(UserWarning):
    """A parameter matched no feature rule and falls back to one rate per scalar weight."""


class FeatureRule(NamedTuple):
    """Which axes of a parameter index its features, and which parameters share those features.

    A rule applies to a parameter whose path (keys joined by ``"/"``, e.g.
    ``"params/Dense_0/kernel"``; the ``.value`` of an NNX variable is dropped) fully matches
    ``pattern``. Rules are tried in order; the first that applies wins.

    Attributes:
      pattern: regular expression, matched with ``re.fullmatch`` against the path.
      feature_axes: the axes of the parameter that index its features (negative counts from the
        end), e.g. ``(-1,)`` for a Dense kernel ``(in, out)``; ``None`` declares the parameter
        per-weight (one rate per scalar, no warning).
      group: sharing group, a ``re.Match.expand`` template over ``pattern`` (e.g. ``r"\\1"``);
        ``None`` means the parent module path. Parameters of one group with the same feature index
        share one rate, so a kernel column and its bias entry share it; all members of a group
        must have the same feature shape.
      units_from: optional ``re.Match.expand`` template naming another parameter (e.g. the
        recurrent kernel of a stacked-gate cell) whose axis-0 size is the number of features; the
        last feature axis then holds ``size / units`` stacked blocks (gates) and column ``c``
        belongs to feature ``c % units``. The rule does not apply if that parameter is absent or
        the size is not a multiple (also when it is an ``optax.MaskedNode``: mask a cell whole).
      ndim: if given, the rule applies only to parameters of this rank.
    """

    pattern: str
    feature_axes: tuple[int, ...] | None = (-1,)
    group: str | None = None
    units_from: str | None = None
    ndim: int | None = None


# Gate submodules of recurrent cells stored one Dense per gate (Linen LSTMCell, OptimizedLSTMCell,
# GRUCell; NNX LSTMCell, where `if` is spelled `if_`).
_GATED_CELL = r"(?P<cell>(?:.*/)?)(?:ii|if_?|ig|io|hi|hf|hg|ho|ir|iz|in|hr|hz|hn)/(?:kernel|bias)"
# NNX OptimizedLSTMCell / GRUCell: gates stacked along the last axis of `dense_i` and `dense_h`.
_STACKED_CELL = r"(?P<cell>(?:.*/)?)dense_[ih]/(?:kernel|bias)"


def default_feature_rules(lstm_gates: str = "shared") -> tuple[FeatureRule, ...]:
    """The built-in feature rules for Flax Linen and NNX layers, in the order they are tried.

    =============================================  ========================  =====================
    parameter                                      features                  shared by
    =============================================  ========================  =====================
    LSTM/GRU cell gate kernels and biases          hidden unit               all gates of the cell
    attention ``query/key/value`` ``(in, H, D)``   ``(head, dim)``           kernel and bias
    ``kernel`` (Dense, Conv, ...), ``bias``        last axis (output unit)   kernel and bias
    ``embedding`` ``(vocab, dim)``                 ``dim``                   all tokens
    norm ``scale``, ``bias`` ``(C,)``              channel                   scale and bias
    =============================================  ========================  =====================

    The paper (Section 2) says what a feature is for three layer types: a unit of a fully connected
    layer (all its incoming weights share its rate), a filter (output channel) of a convolution, and a
    unit of an LSTM ("the vector of learning rates is the same for input gates, for forget gates,
    etc."). The other rows are our choices where it says nothing:

    * Dense and Conv: the last axis of Flax's ``(in, out)`` / ``(h, w, in, out)`` kernel, and the bias
      entry of the same unit shares its rate. (The authors' PyTorch code uses dim 0 of PyTorch's
      ``(out, in)`` layout: the same features.) Depthwise and grouped convolutions too get one rate per
      output channel.
    * Embeddings: one rate per embedding dimension, shared by all tokens, as the authors' code.
    * Normalisation layers (BatchNorm, LayerNorm, ...): one rate per channel, shared by the scale and
      the bias of that channel (the authors' code samples each of their scalars independently); the
      channel is a feature of the layer it normalises.
    * Attention ``query/key/value`` kernels ``(in, heads, head_dim)``: one rate per ``(head, dim)``
      output unit.
    * A parameter no rule matches falls back to one rate per scalar, with an
      :class:`UnrecognisedParameterWarning` naming its path (:func:`sample_feature_lrs`).

    With ``lstm_gates="separate"`` (the behaviour of the authors' PyTorch code) every gate row of a
    recurrent cell has its own rate, independently for the input and the recurrent weights; the
    default ``"shared"`` follows the paper: all gates of a hidden unit share one rate.

    Args:
      lstm_gates: ``"shared"`` or ``"separate"``.

    Returns:
      A tuple of :class:`FeatureRule`.

    Example:
      >>> rules = default_feature_rules("separate")
    """
    _check_choice("lstm_gates", lstm_gates, _LSTM_GATES_CHOICES)
    if lstm_gates == "shared":
        recurrent = (
            FeatureRule(_GATED_CELL, (-1,), group=r"\g<cell>"),
            FeatureRule(
                _STACKED_CELL, (-1,), group=r"\g<cell>", units_from=r"\g<cell>dense_h/kernel"
            ),
        )
    else:
        recurrent = (FeatureRule(_GATED_CELL, (-1,)), FeatureRule(_STACKED_CELL, (-1,)))
    return recurrent + (
        FeatureRule(r"(?:.*/)?(?:query|key|value)/kernel", (-2, -1), ndim=3),
        FeatureRule(r"(?:.*/)?(?:query|key|value)/bias", (-2, -1), ndim=2),
        FeatureRule(r"(?:.*/)?(?:kernel|bias)", (-1,)),
        FeatureRule(r"(?:.*/)?embedding", (-1,)),
        FeatureRule(r"(?:.*/)?scale", (-1,)),
    )


class _FeaturePlan(NamedTuple):
    group: str
    axes: tuple[int, ...]  # sorted, non-negative
    feature_shape: tuple[int, ...]
    blocks: int  # stacked copies along the last feature axis


def sample_feature_lrs(
    key: chex.PRNGKey,
    params: Any,
    lr_min: float,
    lr_max: float,
    *,
    per: str = "feature",
    rules: Sequence[FeatureRule] | None = None,
    lstm_gates: str = "shared",
    dtype: Any = jnp.float32,
) -> Any:
    """Samples one log-uniform learning rate per feature (or per weight) of a parameter pytree.

    Each rate is ``eta = exp(u)``, ``u ~ U(log lr_min, log lr_max)``, clipped to
    ``[lr_min, lr_max]`` against rounding; ``lr_min == lr_max`` gives that constant exactly. The
    rates of a sharing group are drawn from ``fold_in(key, hash(group))``, so they do not depend on
    the other parameters of the tree (masking a leaf out, or adding a layer, leaves the rest
    unchanged).

    With ``per="feature"`` a parameter takes the first matching rule of ``rules`` (user rules,
    tried first) then :func:`default_feature_rules`. A parameter that no rule matches, or whose
    group members disagree on the number of features, falls back to one rate per scalar and emits
    one :class:`UnrecognisedParameterWarning` naming its path. ``per="weight"`` (Appendix E of the
    paper) gives every scalar parameter its own rate.

    Args:
      key: PRNG key (``jax.random.key(seed)``; may be traced).
      params: parameter pytree (arrays or ``jax.ShapeDtypeStruct``); ``optax.MaskedNode`` leaves are
        kept as they are.
      lr_min: smallest rate, ``0 < lr_min <= lr_max``.
      lr_max: largest rate, finite.
      per: ``"feature"`` or ``"weight"``.
      rules: extra :class:`FeatureRule` s for user layers, tried before the built-in ones.
      lstm_gates: ``"shared"`` (paper) or ``"separate"`` (the authors' code), see
        :func:`default_feature_rules`.
      dtype: floating dtype of the rates.

    Raises:
      ValueError: naming the argument: a bad interval (:func:`check_lr_interval`; the bounds must be
        concrete), ``key`` not a PRNG key, an unknown ``per`` / ``lstm_gates``, malformed ``rules``,
        ``dtype`` not a floating dtype.

    Returns:
      A pytree with the structure of ``params``; each leaf has the rank of its parameter, the
      feature sizes on the feature axes and 1 elsewhere (the full shape with ``per="weight"``).

    Example:
      >>> params = {"Dense_0": {"kernel": jnp.zeros((3, 4)), "bias": jnp.zeros(4)}}
      >>> lrs = sample_feature_lrs(jax.random.key(0), params, 1e-5, 10.0)
      >>> lrs["Dense_0"]["kernel"].shape, lrs["Dense_0"]["bias"].shape
      ((1, 4), (4,))
    """
    lr_min, lr_max = check_lr_interval(lr_min, lr_max)
    checks.prng_key("key", key)
    _check_choice("per", per, _PER_CHOICES)
    all_rules = tuple(_check_rules(rules)) + default_feature_rules(lstm_gates)
    try:
        floating = jnp.issubdtype(dtype, jnp.floating)
    except TypeError:  # not a dtype at all
        floating = False
    if not floating:
        checks.fail("dtype", "a floating dtype (e.g. jnp.float32)", dtype)

    flat, _ = jax.tree_util.tree_flatten_with_path(params)
    paths = {keypath: _path_str(keypath) for keypath, _ in flat}
    shapes = {paths[keypath]: tuple(np.shape(leaf)) for keypath, leaf in flat}

    plans: dict[tuple, _FeaturePlan | None] = {}
    unrecognised: list[tuple[str, str]] = []  # (path, why)
    for keypath, leaf in flat:
        path = paths[keypath]
        plan = None
        if per == "feature":
            plan, matched = _plan_leaf(path, tuple(np.shape(leaf)), all_rules, shapes)
            if not matched:
                unrecognised.append((path, "no feature rule matches it"))
        plans[keypath] = plan

    # Members of one group must agree on the feature shape, else their rates could not be shared.
    group_shapes: dict[str, set[tuple[int, ...]]] = {}
    for plan in plans.values():
        if plan is not None:
            group_shapes.setdefault(plan.group, set()).add(plan.feature_shape)
    for keypath, plan in plans.items():
        if plan is not None and len(group_shapes[plan.group]) > 1:
            plans[keypath] = None
            why = f"its sharing group mixes feature shapes {sorted(group_shapes[plan.group])}"
            unrecognised.append((paths[keypath], why))
    for path, why in unrecognised:
        warnings.warn(
            f"sample_feature_lrs: parameter {path!r} gets one learning rate per weight: {why}. "
            "Pass a FeatureRule in `rules` to say which axes hold its features.",
            UnrecognisedParameterWarning,
            stacklevel=2,
        )

    def draw(name: str, shape: tuple[int, ...]) -> jax.Array:
        if lr_min == lr_max:
            return jnp.full(shape, lr_min, dtype)
        log_rates = jax.random.uniform(
            _named_key(key, name), shape, dtype, minval=math.log(lr_min), maxval=math.log(lr_max)
        )
        return jnp.clip(jnp.exp(log_rates), jnp.asarray(lr_min, dtype), jnp.asarray(lr_max, dtype))

    group_rates: dict[str, jax.Array] = {}
    rates_by_path: dict[tuple, jax.Array] = {}
    for keypath, leaf in flat:
        plan = plans[keypath]
        shape = tuple(np.shape(leaf))
        if plan is None:
            rates_by_path[keypath] = draw("weight:" + paths[keypath], shape)
            continue
        if plan.group not in group_rates:
            group_rates[plan.group] = draw("feature:" + plan.group, plan.feature_shape)
        rates = group_rates[plan.group]
        if plan.blocks > 1:
            rates = jnp.tile(rates, (1,) * (rates.ndim - 1) + (plan.blocks,))
        stored_shape = tuple(shape[axis] if axis in plan.axes else 1 for axis in range(len(shape)))
        # A buffer of its own per leaf: members of a group must not alias one array (a training
        # loop that donates its state would otherwise donate the same buffer twice).
        rates_by_path[keypath] = jnp.array(rates.reshape(stored_shape), copy=True)
    return jax.tree_util.tree_map_with_path(lambda keypath, _: rates_by_path[keypath], params)


class FeatureLRState(NamedTuple):
    """State of :func:`scale_by_feature_lrs` and :func:`scale_by_lr_tree`."""

    lrs: Any  # pytree like params; leaf: float32, rank of its parameter, one value per feature


def scale_by_feature_lrs(
    key: chex.PRNGKey,
    lr_min: float,
    lr_max: float,
    *,
    per: str = "feature",
    rules: Sequence[FeatureRule] | None = None,
    lstm_gates: str = "shared",
) -> optax.GradientTransformation:
    """Multiplies each update by the random learning rate of its feature (Alrao).

    ``init`` samples the rates with :func:`sample_feature_lrs` from ``key`` (given here, so a
    rebuilt optimizer samples the same rates) and stores them in :class:`FeatureLRState`;
    ``update`` returns ``eta ⊙ u``, broadcast per feature, in the dtype of ``u``. As every Optax
    ``scale_by_*`` it does not negate: chain ``optax.scale(-1.0)`` for descent (see
    :func:`alrao_base`).

    Args:
      key: PRNG key for the rates.
      lr_min: smallest rate, ``0 < lr_min <= lr_max``.
      lr_max: largest rate, finite.
      per: ``"feature"`` (paper) or ``"weight"`` (Appendix E, one rate per scalar).
      rules: extra :class:`FeatureRule` s for user layers, tried before the built-in ones.
      lstm_gates: ``"shared"`` (paper) or ``"separate"`` (the authors' code).

    Every argument is checked when the transformation is built; all of them must be concrete (under
    ``optax.inject_hyperparams``: ``static_args``), the rates being drawn from them once in ``init``.

    Returns:
      An ``optax.GradientTransformation``.

    Raises:
      ValueError: as :func:`sample_feature_lrs`, naming the argument.

    Example:
      >>> tx = optax.chain(scale_by_feature_lrs(jax.random.key(0), 1e-5, 10.0), optax.scale(-1.0))

    References:
      Blier et al, `Learning with Random Learning Rates <https://arxiv.org/abs/1810.01322>`_, 2019.
    """
    lr_min, lr_max = check_lr_interval(lr_min, lr_max)
    checks.prng_key("key", key)
    _check_choice("per", per, _PER_CHOICES)
    _check_choice("lstm_gates", lstm_gates, _LSTM_GATES_CHOICES)
    rules = _check_rules(rules)

    def init_fn(params: optax.Params) -> FeatureLRState:
        lrs = sample_feature_lrs(
            key, params, lr_min, lr_max, per=per, rules=rules, lstm_gates=lstm_gates
        )
        return FeatureLRState(lrs=lrs)

    return optax.GradientTransformation(init_fn, _scale_update)


def scale_by_lr_tree(lrs: Any) -> optax.GradientTransformation:
    """Multiplies each update by a given pytree of learning rates.

    The precomputed counterpart of :func:`scale_by_feature_lrs` (e.g. rates from
    :func:`sample_feature_lrs`, or restored from elsewhere). ``init`` checks that ``lrs`` has the
    structure of the parameters and that each rate leaf broadcasts against its parameter with the
    same rank (or is a scalar), and raises ``ValueError`` naming what differs. Parameters that are
    ``optax.MaskedNode`` (inside ``optax.masked``/``optax.partition``) drop their rates.

    Args:
      lrs: pytree of rates with the structure of the parameters.

    Returns:
      An ``optax.GradientTransformation`` with state :class:`FeatureLRState`.

    Example:
      >>> params = {"w": jnp.zeros((2, 3))}
      >>> tx = scale_by_lr_tree({"w": jnp.full((1, 3), 0.1)})
      >>> state = tx.init(params)
    """

    def init_fn(params: optax.Params) -> FeatureLRState:
        return FeatureLRState(lrs=_match_lr_tree(lrs, params))

    return optax.GradientTransformation(init_fn, _scale_update)


def alrao_base(
    base: optax.GradientTransformation,
    key: chex.PRNGKey,
    lr_min: float,
    lr_max: float,
    *,
    per: str = "feature",
    rules: Sequence[FeatureRule] | None = None,
    lstm_gates: str = "shared",
) -> optax.GradientTransformation:
    """Alrao on any base optimizer: the feature's rate times the base direction, descending.

    ``update = -eta ⊙ d``, where ``d`` is the output of ``base`` (which must not apply its own
    learning rate: pass e.g. ``optax.scale_by_adam()``, not ``optax.adam(lr)``). This is Alrao for
    parameters without classifier copies (the pre-classifier part, or a whole model trained with
    per-feature rates); :func:`randlr_jax.alrao.alrao_sgd` / ``alrao_adam`` add the copies. With
    ``lr_min == lr_max == eta``: ``alrao_base(optax.identity(), key, eta, eta)`` is
    ``optax.sgd(eta)``; with ``base = optax.trace(mu, nesterov=nesterov)`` it is
    ``optax.sgd(eta, mu, nesterov)``; with ``base = optax.scale_by_adam(b1, b2, eps)`` it is
    ``optax.adam(eta, b1, b2, eps)``.

    Numeric hyperparameters of ``base`` may be driven by ``optax.inject_hyperparams`` (build ``base``
    inside the injected factory); the interval is checked by :func:`check_lr_interval`, as in
    :func:`randlr_jax.alrao.alrao`: ``key``, ``lr_min`` and ``lr_max`` must then be concrete (in
    ``static_args`` when they are arguments of the injected factory).

    Args:
      base: the direction, e.g. ``optax.identity()``, ``optax.trace(0.9)``,
        ``optax.scale_by_adam()``.
      key: PRNG key for the rates.
      lr_min: smallest rate, ``0 < lr_min <= lr_max``.
      lr_max: largest rate, finite.
      per: ``"feature"`` or ``"weight"``.
      rules: extra :class:`FeatureRule` s, tried before the built-in ones.
      lstm_gates: ``"shared"`` or ``"separate"``.

    Returns:
      ``optax.chain(base, scale_by_feature_lrs(...), optax.scale(-1.0))``.

    Raises:
      ValueError: ``base`` not a GradientTransformation, or as :func:`scale_by_feature_lrs`.

    Example:
      >>> tx = alrao_base(optax.trace(0.9), jax.random.key(0), 1e-5, 10.0)  # momentum SGD
      >>> tx = alrao_base(optax.scale_by_adam(), jax.random.key(0), 1e-6, 1e-2)  # Adam
    """
    checks.transformation("base", base)
    return optax.chain(
        base,
        scale_by_feature_lrs(key, lr_min, lr_max, per=per, rules=rules, lstm_gates=lstm_gates),
        optax.scale(-1.0),
    )


# ----------------------------------------------------------------------------- helpers


def _scale_update(
    updates: optax.Updates, state: FeatureLRState, params: optax.Params | None = None
) -> tuple[optax.Updates, FeatureLRState]:
    del params
    # Multiply in the wider dtype, hand back the update's own (bf16 stays bf16).
    scaled = jax.tree.map(lambda u, lr: (u * lr).astype(u.dtype), updates, state.lrs)
    return scaled, state


def _path_str(keypath: Sequence[Any]) -> str:
    parts = []
    for entry in keypath:
        if isinstance(entry, jax.tree_util.DictKey):
            parts.append(str(entry.key))
        elif isinstance(entry, jax.tree_util.GetAttrKey):
            parts.append(entry.name)
        elif isinstance(entry, jax.tree_util.SequenceKey):
            parts.append(str(entry.idx))
        elif isinstance(entry, jax.tree_util.FlattenedIndexKey):
            parts.append(str(entry.key))
        else:
            parts.append(str(entry))
    # An NNX variable is a pytree node whose array sits under `.value`.
    is_variable_value = isinstance(keypath[-1], jax.tree_util.GetAttrKey) if keypath else False
    if is_variable_value and parts[-1] in ("value", "raw_value"):
        parts.pop()
    return "/".join(parts)


def _plan_leaf(
    path: str,
    shape: tuple[int, ...],
    rules: Sequence[FeatureRule],
    shapes: dict[str, tuple[int, ...]],
) -> tuple[_FeaturePlan | None, bool]:
    """The plan of the first rule that applies, and whether any rule applied."""
    ndim = len(shape)
    for rule in rules:
        match = re.fullmatch(rule.pattern, path)
        if match is None or (rule.ndim is not None and rule.ndim != ndim):
            continue
        if rule.feature_axes is None:
            return None, True
        if not all(-ndim <= axis < ndim for axis in rule.feature_axes):
            continue
        axes = sorted({axis % ndim for axis in rule.feature_axes})
        if len(axes) != len(rule.feature_axes):
            continue
        feature_shape = [shape[axis] for axis in axes]
        blocks = 1
        if rule.units_from is not None:
            reference = shapes.get(match.expand(rule.units_from))
            if not reference or reference[0] == 0 or feature_shape[-1] % reference[0]:
                continue
            blocks = feature_shape[-1] // reference[0]
            feature_shape[-1] = reference[0]
        group = match.expand(rule.group) if rule.group is not None else path.rpartition("/")[0]
        return _FeaturePlan(group, tuple(axes), tuple(feature_shape), blocks), True
    return None, False


def _named_key(key: chex.PRNGKey, name: str) -> chex.PRNGKey:
    """A key for ``name`` that depends on nothing else (stable across processes, unlike hash)."""
    digest = hashlib.blake2b(name.encode(), digest_size=8).digest()
    for start in (0, 4):
        key = jax.random.fold_in(key, int.from_bytes(digest[start : start + 4], "little"))
    return key


def _is_masked(x: Any) -> bool:
    return isinstance(x, optax.MaskedNode)


def _match_lr_tree(lrs: Any, params: Any) -> Any:
    """``lrs`` restricted to the unmasked leaves of ``params``; ValueError naming what differs."""

    def combine(keypath: Sequence[Any], param: Any, rate: Any) -> Any:
        if _is_masked(param):
            return optax.MaskedNode()
        path = _path_str(keypath)
        if not hasattr(rate, "shape") or _is_masked(rate):
            raise ValueError(
                f"lrs does not match params at {path!r}: expected an array of rates, got "
                f"{type(rate).__name__}."
            )
        p_shape, r_shape = tuple(np.shape(param)), tuple(np.shape(rate))
        ok = len(r_shape) == 0 or (
            len(r_shape) == len(p_shape)
            and all(r in (1, p) for r, p in zip(r_shape, p_shape, strict=True))
        )
        if not ok:
            raise ValueError(
                f"lrs does not match params at {path!r}: rate shape {r_shape} does not broadcast "
                f"against parameter shape {p_shape} (need the same rank with sizes 1 or equal, or "
                "a scalar)."
            )
        return jnp.asarray(rate)

    try:
        return jax.tree_util.tree_map_with_path(combine, params, lrs, is_leaf=_is_masked)
    except ValueError as error:
        if str(error).startswith("lrs does not match"):
            raise
        param_paths = _leaf_paths(params)
        rate_paths = _leaf_paths(lrs)
        missing = sorted(param_paths - rate_paths)
        extra = sorted(rate_paths - param_paths)
        detail = (
            f"missing in lrs: {missing[:5]}; not in params: {extra[:5]}"
            if missing or extra
            else f"same paths, other containers: params {jax.tree.structure(params)} vs lrs "
            f"{jax.tree.structure(lrs)}"
        )
        raise ValueError(f"lrs does not have the structure of params ({detail}).") from error


def _leaf_paths(tree: Any) -> set[str]:
    flat, _ = jax.tree_util.tree_flatten_with_path(tree, is_leaf=_is_masked)
    return {_path_str(keypath) for keypath, _ in flat}


def check_lr_interval(lr_min: Any, lr_max: Any) -> tuple[float, float]:
    """Validate an Alrao interval ``0 < lr_min <= lr_max < inf``; returns it as floats.

    The one check of the interval behind every Alrao entry point (:func:`sample_feature_lrs`,
    :func:`scale_by_feature_lrs`, :func:`alrao_base`, :func:`randlr_jax.alrao.alrao`, ``alrao_sgd``,
    ``alrao_adam``, :func:`randlr_jax.alrao.copy_learning_rates`). The rates are drawn once from the
    bounds, so they must be concrete: under ``optax.inject_hyperparams`` name them in ``static_args``.

    Raises:
      ValueError: naming the bound that is traced, not a number, not finite, ``<= 0``, or out of order.
    """
    bounds = []
    for name, value in (("lr_min", lr_min), ("lr_max", lr_max)):
        checks.concrete(name, value, "a concrete number")
        bounds.append(checks.positive(name, value))
    checks.interval("lr_min", lr_min, "lr_max", lr_max)
    return bounds[0], bounds[1]


def check_decay(name: str, value: Any) -> None:
    """Validate a decay (momentum, Adam's ``b1`` / ``b2``) in ``[0, 1)``, when it is concrete.

    A traced value (the hyperparameter driven by ``optax.inject_hyperparams``) cannot be tested in
    Python and passes unchecked.
    """
    checks.in_unit_interval(name, value)


def check_nonnegative(name: str, value: Any) -> None:
    """Validate a finite number ``>= 0`` (Adam's ``eps``), when concrete; a traced value passes."""
    checks.nonnegative(name, value)


def _check_choice(name: str, value: Hashable, allowed: tuple[str, ...]) -> None:
    checks.one_of(name, value, allowed)


def _check_rules(rules: Sequence[FeatureRule] | None) -> tuple[FeatureRule, ...]:
    if rules is None:
        return ()
    if isinstance(rules, FeatureRule) or not isinstance(rules, Sequence):
        checks.fail("rules", "a sequence of FeatureRule (or None)", rules)
    for rule in rules:
        if not isinstance(rule, FeatureRule):
            checks.fail("rules", "a sequence of FeatureRule instances", rules)
        where = f"(in rules, the rule of pattern {rule.pattern!r})"
        try:
            re.compile(rule.pattern)
        except (re.error, TypeError) as error:
            raise ValueError(
                f"pattern must be a regular expression {where}, got {rule.pattern!r} ({error})."
            ) from error
        axes = rule.feature_axes
        if axes is not None and (
            not isinstance(axes, tuple)
            or not axes
            or not all(isinstance(axis, int) and not isinstance(axis, bool) for axis in axes)
        ):
            checks.fail("feature_axes", f"None or a non-empty tuple of ints {where}", axes)
        for field in ("group", "units_from"):
            template = getattr(rule, field)
            if template is None:
                continue
            if not isinstance(template, str):
                checks.fail(field, f"None or a str {where}", template)
            try:
                # An empty match of `pattern|` has all of pattern's groups: expanding checks them.
                re.compile(rule.pattern + "|").fullmatch("").expand(template)  # type: ignore[union-attr]
            except (re.error, IndexError) as error:
                raise ValueError(
                    f"{field} must be a valid template for the pattern {where}, got {template!r} "
                    f"({error})."
                ) from error
        if rule.ndim is not None:
            checks.nonnegative_int("ndim", rule.ndim)
    return tuple(rules)
