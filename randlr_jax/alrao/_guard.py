"""The feature guard: a feature that turns non-finite is frozen and contributes zero downstream.

**Our extension, not in Blier et al. (2019)**, off by default (``make_alrao_train_step(...,
feature_guard=True)`` turns it on). Alrao with a large ``lr_max`` wants BatchNorm or bounded activations
(tanh) in the body: a ReLU feature whose rate is too large grows until its output overflows,
the ``inf``/``NaN`` reaches the classifier's input, every copy's gradient is non-finite and every copy is
dropped -- the run is dead. Alrao's copies already survive their own divergence (a non-finite copy is
dropped and frozen, :mod:`randlr_jax.alrao._copies`); the guard does the same for the features of the body.

A *feature* is an output unit of a ``nn.Dense`` layer or an output channel of a ``nn.Conv`` layer (the
last axis of its ``kernel`` and of its ``bias``), as Alrao's per-feature rates define it
(:func:`~randlr_jax.alrao.default_feature_rules`: a kernel column and its bias entry share one rate).
For a layer ``z = x W + b`` (a convolution alike) and its feature ``f``, with rate ``eta_f``:

1. **Detect, in the forward pass of the step.** A Flax method interceptor
   (``flax.linen.intercept_methods``) on the layers' ``__call__`` computes

   .. math::

       \\mathrm{bad}_f = \\exists\\, (b, \\dots):\\ z_{b,\\dots,f} \\notin \\mathbb{R}

   over the batch (and the spatial positions) and replaces the whole column by zero,
   ``z_{:, f} <- 0`` for ``bad_f``: nothing of the overflowing feature (neither its ``inf`` nor its
   huge finite values) reaches the layers above or the copies in this step, and no gradient flows into
   it (``d z'/d z = 0`` there). After the update a feature whose new parameters (``W_{:, f}``, ``b_f``)
   are non-finite is caught too: ``bad_f <- bad_f or not all_finite(W_{:, f}, b_f)``.
2. **Freeze, in the optimizer's state.** A dead feature's rate is set to zero, ``eta_f <- 0``, in the
   :class:`~randlr_jax.alrao.FeatureLRState` of the body's optimizer. Rates are drawn in
   ``[lr_min, lr_max]`` with ``lr_min > 0``, so ``eta_f = 0`` *is* the dead mark: no extra state, the
   checkpoint keeps its arrays (a run resumes as before) and the mask travels with the optimizer state
   it freezes. Every later update of its incoming weights is ``-eta_f * d = 0`` (``d`` the base
   direction: the gradient, a momentum, Adam's ratio); to stay exact even if ``d`` is not finite
   (``0 * inf``), the parameters of a feature dead before the step are put back after it,
   ``theta_f <- where(dead_f, theta_f^{old}, theta_f^{new})``: ``W_{:, f}`` and ``b_f`` never change
   again. Gradients and updates themselves are not masked: an extra ``jnp.where`` between
   ``tx.update`` and ``apply_updates`` changes XLA's fusion (the step would drift from the unguarded
   one by an ulp), and the dead feature's gradient is finite anyway (zero input weights, zero
   cotangent in the detecting step).
3. **Silence, in the parameters.** A feature found dead in this step gets ``W_{:, f} = 0`` and
   ``b_f = 0``. Its pre-activation is then ``z_f = x W_{:, f} + b_f = 0`` for any finite input, in every
   forward pass -- the training step's and a plain ``model.apply`` alike, so evaluation
   (:func:`~randlr_jax.training.make_eval_step`, method-agnostic, no interceptor) sees the guarded model.
   Its output is ``act(0)``: zero for ReLU, tanh, GELU, SiLU, ELU, leaky ReLU and the identity, so the
   feature contributes exactly zero downstream (the next layer's or the copies' input at that unit is 0).
   **Activation assumption:** with ``act(0) != 0`` (sigmoid: ``1/2``, softplus: ``log 2``) the dead
   feature emits the constant ``act(0)``, which the next layer absorbs as a bias: still finite and
   frozen, but not zero. A BatchNorm after the layer sees a constant-zero channel and outputs its bias.

When no feature is ever non-finite, the three steps are ``jnp.where`` with an all-false mask: the step is
bit for bit the unguarded one.

Scope: the layers guarded are the ``nn.Dense`` / ``nn.Conv`` modules (and subclasses) of the body whose
kernel has rates in the optimizer state with one value per output unit (or per weight). A layer called
inside a lifted transform (``nn.scan``/``nn.RNN``, ``nn.remat``, ``nn.vmap``; e.g. the gates of an LSTM
cell) is not intercepted -- its outputs live in another trace -- and only its parameters are checked
(step 1's second half; a warning names it when the step is traced). A feature whose rate is 0 for another
reason (``scale_by_lr_tree`` with a zero rate) counts as dead: frozen (its parameters put back after
every step), not zeroed. The classifier copies are not features: Alrao drops them as before.

What it does not catch: a divergence that stays finite. When many features have too large rates (on the
MNIST-1D MLP, ``[1e-3, 100]`` or ``[1e-4, 100]``), the whole body blows up together: features of
``1e6 .. 1e35`` reach the copies, whose losses grow as large and turn non-finite (every copy dropped)
in the same steps as the first features overflow -- the guard then marks a few features dead, but the
run is dead all the same (``experiments/alrao_feature_guard.py``). Only non-finite values are a
definition of "diverged" free of a threshold; the paper's remedies (BatchNorm, tanh) remain the cure.

References:
  Blier, Wolinski, Ollivier, `Learning with Random Learning Rates <https://arxiv.org/abs/1810.01322>`_, 2019.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax.core import tracers

from randlr_jax.alrao._features import FeatureLRState

__all__ = ["FeatureGuardWarning", "feature_guard_dead", "feature_guard_num_dead"]

GUARD_AUX = "feature_guard_nonfinite"
"""The ``aux`` key of the guarded loss: ``{layer: (features,) bool}``, non-finite in this batch."""
DEAD_FEATURES_METRIC = "dead_features"
"""The guarded step's metric: the number of dead features after the step (int32)."""
_HEAD = "head"  # the classifier copies (Alrao's own dropping); never features
_LAYERS = (nn.Dense, nn.Conv)


class FeatureGuardWarning(UserWarning):
    """A guarded layer could not be intercepted (called inside a lifted transform): only its parameters
    are checked for non-finite values."""


# ----------------------------------------------------------------------------- layers and rates


def _is_lr_state(x: Any) -> bool:
    return isinstance(x, FeatureLRState)


def _dict_path(keypath: Any) -> tuple[str, ...] | None:
    keys = []
    for entry in keypath:
        if not isinstance(entry, jax.tree_util.DictKey):
            return None
        keys.append(str(entry.key))
    return tuple(keys)


def _lr_states(opt_state: Any) -> list[FeatureLRState]:
    return [s for s in jax.tree.leaves(opt_state, is_leaf=_is_lr_state) if _is_lr_state(s)]


def _subtree(tree: Any, path: tuple[str, ...]) -> Any:
    for key in path:
        if not isinstance(tree, Mapping) or key not in tree:
            return None
        tree = tree[key]
    return tree


def _per_output_unit(rate: Any, kernel_shape: tuple[int, ...]) -> bool:
    """Whether a kernel's rate leaf holds one value per output unit (``(1, ..., 1, out)``) or per weight."""
    shape = tuple(np.shape(rate))
    if len(shape) != len(kernel_shape) or not shape or shape[-1] != kernel_shape[-1]:
        return False
    return shape == kernel_shape or all(size == 1 for size in shape[:-1])


def guarded_layers(params: Any, opt_state: Any) -> dict[str, tuple[tuple[str, ...], int]]:
    """The layers the guard watches: ``{"body/dense_0": (path, num_features)}``.

    A layer is a subtree of ``params`` (outside the head) with a ``kernel`` whose every rate leaf in a
    :class:`FeatureLRState` of ``opt_state`` holds one rate per output unit (or per weight). Static: only
    shapes are read (usable under ``jit``).
    """
    layers: dict[str, tuple[tuple[str, ...], int]] = {}
    refused: set[tuple[str, ...]] = set()
    for lr_state in _lr_states(opt_state):
        flat, _ = jax.tree_util.tree_flatten_with_path(lr_state.lrs)
        for keypath, rate in flat:
            path = _dict_path(keypath)
            if path is None or len(path) < 2 or path[-1] != "kernel" or path[0] == _HEAD:
                continue
            layer = path[:-1]
            kernel = _subtree(params, path)
            if kernel is None or not hasattr(kernel, "shape") or not np.ndim(kernel):
                continue
            if not _per_output_unit(rate, tuple(kernel.shape)):
                refused.add(layer)
                continue
            layers["/".join(layer)] = (layer, int(kernel.shape[-1]))
    for layer in refused:
        layers.pop("/".join(layer), None)
    return layers


def _expand(mask: jax.Array, ndim: int) -> jax.Array:
    """``(F,)`` -> ``(1, ..., 1, F)`` of rank ``ndim`` (explicit: no rank promotion)."""
    return mask.reshape((1,) * (ndim - 1) + mask.shape) if ndim else mask


def _rate_dead(opt_state: Any, layers: Mapping[str, Any]) -> dict[str, jax.Array]:
    """``{layer: (F,) bool}``: features whose kernel rate is zero (in any rate state covering them)."""
    dead = {name: jnp.zeros((num,), bool) for name, (_, num) in layers.items()}
    for lr_state in _lr_states(opt_state):
        for name, (path, _) in layers.items():
            rate = _subtree(lr_state.lrs, path + ("kernel",))
            if rate is None or not hasattr(rate, "shape"):
                continue
            zero = jnp.all(rate == 0, axis=tuple(range(rate.ndim - 1)))
            dead[name] = dead[name] | zero
    return dead


def _params_nonfinite(params: Any, layers: Mapping[str, Any]) -> dict[str, jax.Array]:
    """``{layer: (F,) bool}``: features with a non-finite kernel column or bias entry."""
    out = {}
    for name, (path, num) in layers.items():
        layer = _subtree(params, path)
        bad = jnp.zeros((num,), bool)
        for key in ("kernel", "bias"):
            leaf = layer.get(key) if isinstance(layer, Mapping) else None
            if leaf is not None and hasattr(leaf, "shape") and leaf.shape[-1:] == (num,):
                bad = bad | ~jnp.all(jnp.isfinite(leaf), axis=tuple(range(leaf.ndim - 1)))
        out[name] = bad
    return out


def _map_features(tree: Any, layers: Mapping[str, Any], fn: Callable) -> Any:
    """``tree`` with each guarded layer's ``kernel`` and ``bias`` leaf replaced by ``fn(name, key,
    leaf)`` (leaves whose last axis is not the layer's features, e.g. masked ones, left alone)."""

    def replace(node: Any, path: tuple[str, ...], name: str, num: int) -> Any:
        if not isinstance(node, Mapping):
            return node
        new = dict(node)
        if path:
            if path[0] not in node:
                return node
            new[path[0]] = replace(node[path[0]], path[1:], name, num)
        else:
            for key in ("kernel", "bias"):
                leaf = node.get(key)
                if leaf is not None and hasattr(leaf, "shape") and leaf.shape[-1:] == (num,):
                    new[key] = fn(name, key, leaf)
        return new if isinstance(node, dict) else type(node)(new)

    for name, (path, num) in layers.items():
        tree = replace(tree, path, name, num)
    return tree


def _zero_features(tree: Any, layers: Mapping[str, Any], masks: Mapping[str, jax.Array]) -> Any:
    """``tree`` with the masked features' kernel column and bias entry set to zero (``jnp.where``:
    NaN-safe, and exactly ``tree`` where the mask is false)."""

    def zero(name: str, key: str, leaf: jax.Array) -> jax.Array:
        return jnp.where(_expand(masks[name], leaf.ndim), jnp.zeros((), leaf.dtype), leaf)

    return _map_features(tree, layers, zero)


def _select_features(
    params: Any,
    layers: Mapping[str, Any],
    zero: Mapping[str, jax.Array],
    keep: Mapping[str, jax.Array],
    *,
    frozen: Any,
) -> Any:
    """``params`` with the ``keep`` features as in ``frozen`` and the other ``zero`` features zeroed."""

    def select(name: str, key: str, leaf: jax.Array) -> jax.Array:
        old = _subtree(frozen, layers[name][0] + (key,))
        zeroed = jnp.where(_expand(zero[name], leaf.ndim), jnp.zeros((), leaf.dtype), leaf)
        return jnp.where(_expand(keep[name], leaf.ndim), old, zeroed)

    return _map_features(params, layers, select)


def _zero_rates(opt_state: Any, layers: Mapping[str, Any], masks: Mapping[str, jax.Array]) -> Any:
    def one(node: Any) -> Any:
        if _is_lr_state(node):
            return node._replace(lrs=_zero_features(node.lrs, layers, masks))
        return node

    return jax.tree.map(one, opt_state, is_leaf=_is_lr_state)


def _or(a: Mapping[str, jax.Array], b: Mapping[str, jax.Array]) -> dict[str, jax.Array]:
    return {name: a[name] | b[name] for name in a}


def _count(masks: Mapping[str, jax.Array]) -> jax.Array:
    return sum((jnp.sum(m, dtype=jnp.int32) for m in masks.values()), jnp.zeros((), jnp.int32))


# ----------------------------------------------------------------------------- public helpers


def feature_guard_dead(state: Any) -> dict[str, jax.Array]:
    """The dead features of a guarded run: ``{"body/dense_0": (F,) bool, ...}``, one mask per layer.

    Read from ``state``'s optimizer state (a dead feature has rate zero, see :mod:`randlr_jax.alrao._guard`).

    Args:
      state: a :class:`~randlr_jax.training.TrainState` trained by ``make_alrao_train_step(...,
        feature_guard=True)`` (any Alrao state: without the guard no feature is ever marked dead).
    """
    layers = guarded_layers(state.params, state.opt_state)
    return _rate_dead(state.opt_state, layers)


def feature_guard_num_dead(state: Any) -> jax.Array:
    """The number of dead features of ``state`` (int32 scalar), see :func:`feature_guard_dead`."""
    return _count(feature_guard_dead(state))


# ----------------------------------------------------------------------------- the step's hooks


def _interceptor(layers: Mapping[str, Any], records: dict, seen: dict, base: Any) -> Callable:
    """Zero and record the non-finite output columns of the guarded layers called in trace ``base``."""
    by_path = {path: (name, num) for name, (path, num) in layers.items()}

    def intercept(next_fun, args, kwargs, context):
        module = context.module
        if context.method_name != "__call__" or not isinstance(module, _LAYERS):
            return next_fun(*args, **kwargs)
        found = by_path.get(tuple(module.path))
        out = next_fun(*args, **kwargs)
        if found is None:
            return out
        name, num = found
        # Another trace (a lifted transform): its values cannot leave it, the layer is not guarded here.
        same_trace = tracers.current_trace() == base
        seen[name] = seen.get(name, False) or same_trace
        if not same_trace or not hasattr(out, "shape") or out.shape[-1:] != (num,):
            return out
        bad = ~jnp.all(jnp.isfinite(out), axis=tuple(range(out.ndim - 1)))
        records[name] = bad if name not in records else records[name] | bad
        return jnp.where(_expand(bad, out.ndim), jnp.zeros((), out.dtype), out)

    return intercept


def guard_hooks(
    loss_fn: Callable, after_update: Callable, extra_metrics: Callable
) -> tuple[Callable, Callable, Callable]:
    """The Alrao step's hooks with the guard: ``(loss_fn, after_update, extra_metrics)``.

    The gradients and updates are left alone (an extra ``jnp.where`` between ``tx.update`` and
    ``apply_updates`` changes XLA's fusion, and the guarded step would no longer be bit for bit the
    unguarded one): the freeze is the zero rate, made NaN-safe by restoring a dead feature's parameters
    after the update. ``after_update`` runs the guard's part first, then Alrao's (switch, catch-up).
    See the module docstring.
    """

    def layers_of(params: Any, opt_state: Any) -> dict[str, Any]:
        layers = guarded_layers(params, opt_state)
        if not layers:
            raise ValueError(
                "feature_guard=True needs per-feature rates for the body's Dense/Conv layers in the "
                "optimizer state (alrao_sgd, alrao_adam, alrao or alrao_base); found none."
            )
        return layers

    def guarded_loss(params, state, batch, dropout_key):
        layers = layers_of(params, state.opt_state)
        records: dict[str, jax.Array] = {}
        seen: dict[str, bool] = {}
        base = tracers.current_trace()
        with nn.intercept_methods(_interceptor(layers, records, seen, base)):
            objective, aux = loss_fn(params, state, batch, dropout_key)
        missed = sorted(name for name in layers if not seen.get(name, False))
        if missed:
            warnings.warn(
                f"feature guard: the layers {missed} were not intercepted (not nn.Dense/nn.Conv, or "
                "called inside a lifted transform such as nn.scan or nn.remat): only their parameters "
                "are checked for non-finite values.",
                FeatureGuardWarning,
                stacklevel=2,
            )
        nonfinite = {
            name: records.get(name, jnp.zeros((num,), bool)) for name, (_, num) in layers.items()
        }
        return objective, {**aux, GUARD_AUX: nonfinite}

    def guarded_after_update(state, new_state, aux):
        layers = layers_of(state.params, state.opt_state)
        dead_before = _rate_dead(state.opt_state, layers)
        newly = _or(aux[GUARD_AUX], _params_nonfinite(new_state.params, layers))
        params = _select_features(new_state.params, layers, newly, dead_before, frozen=state.params)
        dead = _or(dead_before, newly)
        new_state = new_state.replace(
            params=params, opt_state=_zero_rates(new_state.opt_state, layers, dead)
        )
        return after_update(state, new_state, aux)

    def guarded_metrics(state, new_state, batch, aux):
        metrics = extra_metrics(state, new_state, batch, aux)
        layers = layers_of(new_state.params, new_state.opt_state)
        metrics[DEAD_FEATURES_METRIC] = _count(_rate_dead(new_state.opt_state, layers))
        return metrics

    return guarded_loss, guarded_after_update, guarded_metrics
