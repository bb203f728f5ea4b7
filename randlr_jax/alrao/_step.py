"""The jitted Alrao training step: forward, all gradients, both updates and the posterior update.

The gradients are those of :func:`randlr_jax.alrao.alrao_loss` (the pre-classifier follows the averaged
model's loss, each copy its own loss); the averaging state lives in the model's ``"alrao_switch"``
collection. The switch is fed, once per minibatch, the vector of the copies' batch-mean log-likelihoods
``mean_b log p_j(y_b|x_b)``, taken from this step's forward pass, i.e. at the parameters *before* this step's
update (the paper leaves open whether an observation is one sample or one minibatch; one minibatch with the
batch mean is the choice of the authors' code, followed here). So the forward pass of step ``t`` uses the
posterior after ``t - 1`` observations, as a sequential prediction should. Usable as
``fit(..., train_step=...)``.

The step is :func:`randlr_jax.training.make_train_step` with Alrao's hooks: the loss (features, the copies
and :func:`~randlr_jax.alrao.alrao_loss`), the gradients and updates of non-finite copies zeroed, the
posterior update (and optional catch-up) after the update, and the copies' metrics.

References:
  Blier, Wolinski, Ollivier, `Learning with Random Learning Rates <https://arxiv.org/abs/1810.01322>`_, 2019.
"""

from __future__ import annotations

import types
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from randlr_jax import _checks as checks
from randlr_jax.alrao import _copies as cc
from randlr_jax.alrao import _guard as guard_lib
from randlr_jax.alrao import _switch as switch_lib
from randlr_jax.alrao._optimizers import (
    HEAD,
    HeadPath,
    _keys,
    alrao_loss,
    alrao_loss_chunked,
    alrao_loss_dense,
    head_matcher,
)
from randlr_jax.training._state import TrainState
from randlr_jax.training._steps import DEAD_METRIC, make_train_step


def step_metrics(log_posterior: jax.Array, aux: dict, batch: dict, task: str) -> dict:
    """The metrics of an Alrao step (Linen or NNX) from the new log-posterior and the loss's ``aux``:
    ``posterior``, ``copy_losses``, ``num_dropped``, ``all_dropped`` (and its generic twin
    :data:`~randlr_jax.training._steps.DEAD_METRIC`) and, for classification, ``accuracy``."""
    finite = aux["finite"]
    all_dropped = ~jnp.any(finite)
    metrics = {
        # The weights the model predicts with: dropped copies at zero, the rest renormalised.
        "posterior": jnp.exp(cc.masked_log_weights(log_posterior, finite)),
        "copy_losses": -aux["copy_log_likelihoods"],
        "num_dropped": jnp.sum(~finite).astype(jnp.int32),
        # No copy left: the prediction is the uniform one (regression: zero) and nothing learns
        # any more; ``fit`` stops on the generic flag.
        "all_dropped": all_dropped,
        DEAD_METRIC: all_dropped,
    }
    if task == "classification":
        predictions = jnp.argmax(aux["mixture_log_probs"], axis=-1)
        metrics["accuracy"] = jnp.mean(predictions == batch["y"])
    return metrics


def make_alrao_train_step(
    model: Any,
    tx: optax.GradientTransformation,
    *,
    task: str = "classification",
    catch_up: bool = False,
    catch_up_threshold: float = -20.0,
    extra_args_fn: Callable | None = None,
    feature_guard: bool = False,
    head_path: HeadPath = HEAD,
) -> Callable[[TrainState, dict], tuple[TrainState, dict]]:
    """One compiled Alrao step: forward, all gradients, both updates and the posterior update.

    The protocol a Flax Linen model follows (a ``Classifier`` / ``LanguageModel`` of the zoo does):

    * a method ``features(x, *, train)`` (language models: ``features(tokens, carry, *, train) ->
      (features, carry)``) returning the classifier's input; the step calls
      ``model.apply(variables, x, train=True, rngs={"dropout": key}, mutable=[...],
      method="features")``, the mutable collections being those of ``state.model_state`` other than
      ``"alrao_switch"`` (e.g. ``batch_stats``);
    * one :class:`~randlr_jax.alrao.AlraoHead` applied to those features, its parameters at
      ``head_path``: any name at any depth. The step applies the copies itself
      (``AlraoHead.copy_outputs`` on the head's parameters, or :func:`~randlr_jax.alrao.apply_copies`
      when chunked) and reads and writes the head's averaging state at the same path of the
      ``"alrao_switch"`` collection. The head module is the model's field ``head`` (the default), a
      chain of fields along a key path, or else found by tracing ``model.apply(variables, x,
      train=False)`` once (abstractly, at compile time), so a head built in ``setup`` or
      ``@nn.compact`` works too.

    Example (a head at ``("decoder", "classifier")``): ``tx = alrao_sgd(key, 1e-5, 10.0, 10,
    head_path=("decoder", "classifier"))`` and ``make_alrao_train_step(model, tx,
    head_path=("decoder", "classifier"))``.

    ``model`` is a ``Classifier`` or ``LanguageModel`` whose ``head`` is an
    :class:`~randlr_jax.alrao.AlraoHead`; ``state.model_state`` holds its ``"alrao_switch"``
    collection (created by ``model.init``). Usable as ``fit(..., train_step=...)``. The head's
    own dense copies take the fused objective (:func:`randlr_jax.alrao.alrao_loss_dense`): one pass
    over the copies, ``copy_chunk_size`` at a time (default
    :func:`randlr_jax.alrao._copies.default_copy_chunk`), each copy's gradient computed with its
    kernel in cache, never the ``(N, B, ..., K)`` outputs of all copies nor a pass over all
    parameters for their finiteness; a head subclass that overrides ``copy_outputs`` takes
    :func:`randlr_jax.alrao.alrao_loss` on its outputs (``alrao_loss_chunked`` when chunked).

    Args:
      model: the model.
      tx: typically :func:`alrao_sgd` / :func:`alrao_adam` / :func:`alrao`.
      task: ``"classification"``, ``"language_model"`` (per-token classification with a carry) or
        ``"regression"`` (``batch["y"]`` float ``(B, K)``).
      catch_up: reset copies whose log-posterior is below ``catch_up_threshold`` to the posterior-weighted
        average of all copies (the optional hard catch-up of the authors' code, not in the paper; off
        by default, threshold ``-20`` as there).
      extra_args_fn: optional ``(state, batch, loss) -> dict`` of extra keyword arguments for ``tx.update``.
      feature_guard: our extension (not in the paper; off by default): a feature of the body (a unit of
        a ``nn.Dense``, a channel of a ``nn.Conv``) whose output or parameters turn non-finite is
        frozen (its rate set to zero) and silenced (its kernel column and bias entry set to zero), so a
        diverging ReLU feature no longer kills every copy (:mod:`randlr_jax.alrao._guard`, with the
        math and the activation assumption ``act(0) = 0``). Bit for bit the unguarded step while no
        feature diverges. Adds the metric ``dead_features``; :func:`randlr_jax.alrao.feature_guard_dead`
        reads the masks from a state. Needs the head at the default ``head_path="head"``.
      head_path: where the classifier copies are, as in the optimizer (same argument, same value):
        a key (every parameter path containing it; default ``"head"``), a key path from the root
        (``("decoder", "classifier")``) or a predicate ``(path: tuple[str, ...]) -> bool`` on
        parameter key paths. It must select the parameters of exactly one ``AlraoHead``
        (``.../copies/kernel`` and ``.../copies/bias``).

    Raises:
      ValueError: an argument out of range; a model without a ``features`` method (naming the
        model's class and the method to add); a ``head_path`` matching no ``AlraoHead``
        parameters (at the first trace: the paths of the heads found are listed) or a head
        there that is not an ``AlraoHead``.

    Returns:
      ``train_step(state, batch) -> (state, metrics)``; metrics: ``loss`` (the mixture's: with every
      copy dropped, the loss of the uniform prediction, ``log K`` an example), ``accuracy``
      (classification), ``posterior`` ``(N,)`` (the mixture weights after this step's update, dropped
      copies at zero), ``copy_losses`` ``(N,)``, ``num_dropped``, ``all_dropped`` (bool: no copy left)
      and its generic twin ``dead`` (:data:`randlr_jax.training._steps.DEAD_METRIC`), on which ``fit``
      stops (``LoopConfig.on_divergence``).
    """
    if task not in ("classification", "language_model", "regression"):
        raise ValueError(
            f"task must be 'classification', 'language_model' or 'regression', got {task!r}."
        )
    feature_guard = checks.boolean("feature_guard", feature_guard)
    catch_up = checks.boolean("catch_up", catch_up)
    checks.in_range(
        "catch_up_threshold", catch_up_threshold, high=0.0, what="a number <= 0 (a log-posterior)"
    )
    head_matcher(head_path)  # checks it
    if feature_guard and head_path != HEAD:
        checks.fail("feature_guard", "False unless head_path is 'head' (the guard's default)", True)
    _check_features_method(model)
    # The head module: known now when it is a field (chain), else found at the first trace.
    head_at = _static_head(model, head_path)
    # A namespace, not a dict: the run's fingerprint describes the step by what it closes over, and
    # must not change once the head is found.
    resolved = types.SimpleNamespace()

    def located(params, variables=None, args=None):
        """``(head module, its path)``, once per trace (``variables`` and ``args`` at the first)."""
        if not hasattr(resolved, "head"):
            path = _head_module_path(model, params, head_path)
            head = head_at if head_at is not None else _traced_head(model, variables, args, path)
            resolved.head, resolved.path = head, path
        return resolved.head, resolved.path

    loss_task = "regression" if task == "regression" else "classification"

    def loss_fn(params, state: TrainState, batch: dict, dropout_key):
        other_state = {k: v for k, v in state.model_state.items() if k != cc.SWITCH_COLLECTION}
        variables = {"params": params, **other_state}
        mutable = list(other_state) or False
        args = (
            (batch["x"],)
            if task != "language_model"
            else (batch["x"], jax.lax.stop_gradient(state.carry))
        )
        out = model.apply(
            variables,
            *args,
            train=True,
            rngs={"dropout": dropout_key},
            mutable=mutable,
            method="features",
        )
        features, new_other = out if mutable else (out, {})
        new_carry = None
        if task == "language_model":
            features, new_carry = features
        head, path = located(params, {"params": params, **state.model_state}, args)
        averager = head.averager()
        switch_state = _switch_at(state.model_state, path)
        head_params = _get_in(params, path)
        log_posterior = averager.log_posterior(switch_state)
        outputs = head.num_copies * features[..., 0].size * head.num_outputs  # N x B x ... x K
        if _dense_copies(head) and outputs > cc.SMALL_OUTPUTS:
            # The head's own ``nn.Dense`` copies with large outputs: the fused objective, one pass
            # over the copies (its gradient computed with each copy's kernel in cache), never the
            # (N, B, ..., K) outputs of all copies; ``copy_chunk_size`` copies per iteration. Small
            # outputs (e.g. 10 classes) are cheaper as the outputs-based loss, all copies at once.
            loss, aux = alrao_loss_dense(
                head_params, features, batch["y"], log_posterior,
                chunk_size=cc.default_copy_chunk(
                    head.copy_chunk_size, head.num_copies, features[..., 0].size * head.num_outputs
                ),
                task=loss_task, sigma=head.sigma,
            )  # fmt: skip
        else:
            loss, aux = _copy_outputs_loss(
                head, head_params, features, batch["y"], log_posterior, loss_task
            )
        # The switch collection is replaced after the update (``after_update``).
        model_state = {**state.model_state, **new_other}
        return loss, {
            **aux,
            "loss": aux["mixture_loss"],
            "model_state": model_state,
            "carry": new_carry,
        }

    def zero_dropped(tree, state: TrainState, aux: dict):
        # A dropped copy is frozen: no gradient reaches the optimizer and no update (momentum buffers
        # included) reaches the copy.
        path = resolved.path
        return _set_in(tree, path, cc.zero_nonfinite_copies(_get_in(tree, path), aux["finite"]))

    def after_update(state: TrainState, new_state: TrainState, aux: dict) -> TrainState:
        head, path = located(new_state.params)
        averager = head.averager()
        new_switch = averager.update(
            _switch_at(state.model_state, path), aux["copy_log_likelihoods"]
        )
        params = new_state.params
        if catch_up:
            log_posterior = averager.log_posterior(new_switch)
            caught = switch_lib.catch_up(_get_in(params, path), log_posterior, catch_up_threshold)
            params = _set_in(params, path, caught)
        model_state = _set_in(
            new_state.model_state, (cc.SWITCH_COLLECTION, *path, "state"), new_switch
        )
        return new_state.replace(params=params, model_state=model_state)

    def alrao_metrics(state: TrainState, new_state: TrainState, batch: dict, aux: dict) -> dict:
        head, path = located(new_state.params)
        log_posterior = head.averager().log_posterior(_switch_at(new_state.model_state, path))
        return step_metrics(log_posterior, aux, batch, loss_task)

    if feature_guard:
        loss_fn, after_update, alrao_metrics = guard_lib.guard_hooks(
            loss_fn, after_update, alrao_metrics
        )
    return make_train_step(
        model,
        tx,
        task=task,
        extra_args_fn=extra_args_fn,
        loss_fn=loss_fn,
        transform_grads=zero_dropped,
        transform_updates=zero_dropped,
        after_update=after_update,
        extra_metrics=alrao_metrics,
    )


def posterior_of(state: TrainState, model: Any, *, head_path: HeadPath = HEAD) -> jax.Array:
    """The averaging weights ``a`` ``(N,)`` held in ``state`` (for logging and :func:`suggest_lr`).

    ``head_path`` as in :func:`make_alrao_train_step`; the head must be a field of the model (or a
    chain of fields along the key path), as ``Classifier.head``.
    """
    head_matcher(head_path)
    head = _static_head(model, head_path)
    if head is None:
        raise ValueError(
            f"posterior_of needs the AlraoHead as a field of {type(model).__name__} along "
            f"head_path={head_path!r}; for a head built in setup or @nn.compact read the weights "
            f"from the step's metrics['posterior']."
        )
    path = _head_module_path(model, state.params, head_path)
    return head.averager().posterior(_switch_at(state.model_state, path))


# ----------------------------------------------------------------------------- locating the head


def _check_features_method(model: Any) -> None:
    """The model exposes the classifier's input as a method ``features``."""
    if not callable(getattr(model, "features", None)):
        raise ValueError(
            f"model (a {type(model).__name__}) has no features method, which "
            f"make_alrao_train_step needs: "
            f"it calls model.apply(variables, x, train=True, rngs={{'dropout': key}}, "
            f"mutable=[...], method='features') to get the input of the classifier copies. Add to "
            f"{type(model).__name__} a method `def features(self, x, *, train=False)` returning "
            f"what its AlraoHead is applied to (language models: `features(self, tokens, carry, "
            f"*, train=False) -> (features, carry)`)."
        )


def _static_head(model: Any, head_path: HeadPath) -> cc.AlraoHead | None:
    """The head module when it is a field of the model (``head_path`` a key naming a field, or a
    key path of fields); ``None`` when it cannot be read from the (unbound) model.

    Raises:
      ValueError: the field exists but is not an :class:`~randlr_jax.alrao.AlraoHead`.
    """
    keys = (head_path,) if isinstance(head_path, str) else head_path
    if not isinstance(keys, tuple):
        return None
    module = model
    for key in keys:
        module = getattr(module, key, None) if isinstance(module, nn.Module) else None
        if module is None:
            return None
    if not isinstance(module, cc.AlraoHead):
        raise ValueError(
            f"model (a {type(model).__name__}) must have an AlraoHead at head_path={head_path!r} "
            f"to train with Alrao, got {type(module).__name__} there; put an AlraoHead there, or "
            f"point head_path at it."
        )
    return module


def _head_module_path(model: Any, params: Any, head_path: HeadPath) -> tuple[str, ...]:
    """The key path of the one ``AlraoHead`` whose parameters ``head_path`` selects (the prefix of
    its ``copies/kernel`` and ``copies/bias``)."""
    match = head_matcher(head_path)
    flat = jax.tree_util.tree_leaves_with_path(params)
    all_paths = [_keys(path) for path, _ in flat]
    heads = sorted(
        {keys[:-2] for keys in all_paths if keys[-2:] == ("copies", "kernel") and len(keys) > 2}
    )
    matched = [keys for keys in all_paths if match(keys)]
    prefixes = sorted({keys[: keys.index("copies")] for keys in matched if "copies" in keys[1:]})
    heads_text = ", ".join(repr(h) for h in heads) or "none"
    if len(prefixes) != 1 or not all(keys[: len(prefixes[0])] == prefixes[0] for keys in matched):
        what = "matches no" if not matched else "does not select exactly one set of"
        raise ValueError(
            f"head_path={head_path!r} {what} AlraoHead parameters of {type(model).__name__} "
            f"(copies/kernel, copies/bias under one module; matched {len(matched)} parameters). "
            f"AlraoHead parameters found at: {heads_text}. Pass one of these as head_path, to "
            f"the optimizer and to make_alrao_train_step alike."
        )
    return prefixes[0]


def _traced_head(model: Any, variables: Any, args: tuple, path: tuple[str, ...]) -> cc.AlraoHead:
    """The ``AlraoHead`` module at ``path``, found by tracing the model's forward pass abstractly."""
    found: dict = {}

    def record(next_fun, call_args, call_kwargs, context):
        if isinstance(context.module, cc.AlraoHead):
            found[tuple(context.module.path)] = context.module.clone(parent=None)
        return next_fun(*call_args, **call_kwargs)

    shapes = jax.tree.map(
        lambda a: jax.ShapeDtypeStruct(jnp.shape(a), jnp.result_type(a)), variables
    )
    arg_shapes = jax.tree.map(
        lambda a: jax.ShapeDtypeStruct(jnp.shape(a), jnp.result_type(a)), args
    )
    with nn.intercept_methods(record):
        jax.eval_shape(
            lambda v, a: model.apply(v, *a, train=False, mutable=True), shapes, arg_shapes
        )
    if path not in found:
        raise ValueError(
            f"{type(model).__name__}.__call__(x, train=False) does not apply an AlraoHead at "
            f"{path!r} (the module of the parameters head_path selects); AlraoHeads applied: "
            f"{sorted(found) or 'none'}."
        )
    return found[path]


def _dense_copies(head: cc.AlraoHead) -> bool:
    """Whether the head's copies are its own ``nn.Dense`` layers (``copy_outputs`` not overridden):
    then the step uses the fused :func:`~randlr_jax.alrao.alrao_loss_dense`."""
    return type(head).copy_outputs is cc.AlraoHead.copy_outputs


def _copy_outputs_loss(head, head_params, features, targets, log_posterior, task):
    """:func:`~randlr_jax.alrao.alrao_loss` (or its chunked twin) on the copies' outputs, for a head
    subclass whose ``copy_outputs`` is its own: the copies with non-finite parameters zeroed, their
    outputs on ``stop_gradient(features)`` and with ``stop_gradient`` parameters."""
    params_finite = cc.copies_finite(head_params)
    safe_head = cc.zero_nonfinite_copies(head_params, params_finite)
    if head.copy_chunk_size is not None:
        return alrao_loss_chunked(
            cc.apply_copies, safe_head, features, targets, log_posterior, params_finite,
            chunk_size=head.copy_chunk_size, task=task, sigma=head.sigma,
        )  # fmt: skip

    def copies(p, f):
        return head.apply({"params": p}, f, method="copy_outputs")

    own = copies(safe_head, jax.lax.stop_gradient(features))
    mix = copies(jax.lax.stop_gradient(safe_head), features)
    return alrao_loss(own, mix, targets, log_posterior, params_finite, task=task, sigma=head.sigma)


def _get_in(tree: Any, path: tuple[str, ...]) -> Any:
    for key in path:
        tree = tree[key]
    return tree


def _set_in(tree: Any, path: tuple[str, ...], value: Any) -> Any:
    """A copy of the nested mapping ``tree`` with ``tree[path]`` replaced (the rest shared)."""
    if not path:
        return value
    return {**tree, path[0]: _set_in(tree[path[0]], path[1:], value)}


def _switch_at(model_state: Any, path: tuple[str, ...]) -> Any:
    """The averaging state of the head at ``path`` (``model_state["alrao_switch"][*path]["state"]``)."""
    return _get_in(model_state, (cc.SWITCH_COLLECTION, *path, "state"))
