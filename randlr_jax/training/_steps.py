"""The step skeleton: jitted training and evaluation steps, generic over the loss and the optimizer.

``train_step(state, batch) -> (state, metrics)`` and ``eval_step(state, batch) -> sums`` are pure functions of
pytrees (Flax-examples style), generic over any Optax transformation, including those that take extra
arguments at update time (``optax.GradientTransformationExtraArgs``): the step passes ``value=loss`` plus what
an optional ``extra_args_fn(state, batch, loss)`` returns.

:func:`make_train_step` is the one training step of the library: the default computes the softmax
cross-entropy of a ``Classifier`` or ``LanguageModel``, and its hooks (a loss, a gradient transform, an
update transform, an after-update transform, extra metrics) let a method change one part of the step and
keep the rest (Alrao's step, :func:`randlr_jax.alrao.make_alrao_train_step`, is built on them).
:func:`apply_step` is its optimizer step alone -- ``tx.update`` then ``optax.apply_updates``, pure and
differentiable -- for loops that step parameters without a :class:`TrainState` (the range test, the
unrolled inner loop of meta-training).

Batches are dicts: ``{"x": inputs, "y": int32 labels}``, with an optional float ``"mask"`` of shape ``(B,)``
(evaluation pads the last batch to a multiple of the device count and masks the padding out).
For language models ``x`` and ``y`` are ``(B, L)`` and the recurrent carry travels in ``state.carry``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

from randlr_jax import _checks as checks
from randlr_jax.training._nnx import adapt_model
from randlr_jax.training._state import TrainState

TASKS = ("classification", "language_model")
DEAD_METRIC = "dead"
"""A step's optional bool metric: training can no longer make progress (e.g. every Alrao copy dropped).
The loop stops on it as on a non-finite loss (``LoopConfig.on_divergence``)."""
# The tasks a step with its own ``loss_fn`` may name (the task then only decides ``bits_per_char``).
HOOK_TASKS = (*TASKS, "regression")

ExtraArgsFn = Callable[[TrainState, dict, jax.Array], dict]
LossFn = Callable[[Any, TrainState, dict, jax.Array], tuple[jax.Array, dict]]
"""``loss_fn(params, state, batch, dropout_key) -> (objective, aux)``; see :func:`make_train_step`."""
TransformFn = Callable[[Any, TrainState, dict], Any]
"""``transform_grads(grads, state, aux) -> grads`` / ``transform_updates(updates, state, aux) -> updates``."""
AfterUpdateFn = Callable[[TrainState, TrainState, dict], TrainState]
"""``after_update(state, new_state, aux) -> new_state``."""
MetricsFn = Callable[[TrainState, TrainState, dict, dict], dict]
"""``extra_metrics(state, new_state, batch, aux) -> dict``."""
EvalParamsFn = Callable[[TrainState], Any]
"""``eval_params(state) -> params``: the parameters :func:`make_eval_step` evaluates."""


def _check_task(task: str, tasks: tuple[str, ...] = TASKS) -> None:
    if task not in tasks:
        raise ValueError(f"task must be one of {tasks}, got {task!r}.")


def _apply(model, params, model_state, x, carry, *, train: bool, dropout_key=None, task: str):
    """Run the model; returns ``(logits, new_model_state, new_carry)``."""
    variables = {"params": params, **model_state}
    mutable = list(model_state.keys()) if (train and model_state) else False
    rngs = {"dropout": dropout_key} if dropout_key is not None else None
    args = (x,) if task == "classification" else (x, carry)
    out = model.apply(variables, *args, train=train, rngs=rngs, mutable=mutable)
    if mutable:
        out, new_model_state = out
    else:
        new_model_state = model_state
    if task == "classification":
        return out, new_model_state, None
    logits, new_carry = out
    return logits, new_model_state, new_carry


def apply_step(
    tx: optax.GradientTransformation,
    params: Any,
    opt_state: Any,
    grads: Any,
    extra_args: dict | None = None,
    *,
    transform_updates: Callable[[Any], Any] | None = None,
) -> tuple[Any, Any]:
    """One optimizer step: ``(params, opt_state, grads) -> (new_params, new_opt_state)``.

    ``updates, opt_state = tx.update(grads, opt_state, params, **extra_args)``, then the optional
    ``transform_updates(updates)``, then ``optax.apply_updates``. Pure JAX with no ``stop_gradient``:
    differentiable in everything it is given (meta-training differentiates through it).

    Args:
      tx: the transformation; an extra-args one if ``extra_args`` is not empty.
      params: the parameters.
      opt_state: ``tx``'s state.
      grads: the gradients, shaped like ``params``.
      extra_args: keyword arguments for ``tx.update`` (e.g. ``{"value": loss}``); ``None``: none.
      transform_updates: ``updates -> updates`` between the update and its application.
    """
    updates, opt_state = tx.update(grads, opt_state, params, **(extra_args or {}))
    if transform_updates is not None:
        updates = transform_updates(updates)
    return optax.apply_updates(params, updates), opt_state


def _cross_entropy_loss(model: Any, task: str) -> LossFn:
    """The default ``loss_fn``: mean softmax cross-entropy of integer labels, accuracy as a metric."""

    def loss_fn(params, state: TrainState, batch: dict, dropout_key):
        carry = None if state.carry is None else jax.lax.stop_gradient(state.carry)
        logits, new_model_state, new_carry = _apply(
            model,
            params,
            state.model_state,
            batch["x"],
            carry,
            train=True,
            dropout_key=dropout_key,
            task=task,
        )
        losses = optax.softmax_cross_entropy_with_integer_labels(logits, batch["y"])
        loss = losses.mean()
        accuracy = (jnp.argmax(logits, -1) == batch["y"]).mean()
        aux = {
            "model_state": new_model_state,
            "carry": new_carry,
            "metrics": {"accuracy": accuracy},
        }
        return loss, aux

    return loss_fn


def make_train_step(
    model: Any,
    tx: optax.GradientTransformation,
    *,
    task: str = "classification",
    extra_args_fn: ExtraArgsFn | None = None,
    loss_fn: LossFn | None = None,
    transform_grads: TransformFn | None = None,
    transform_updates: TransformFn | None = None,
    after_update: AfterUpdateFn | None = None,
    extra_metrics: MetricsFn | None = None,
) -> Callable[[TrainState, dict], tuple[TrainState, dict]]:
    """Build ``train_step(state, batch) -> (state, metrics)`` (not jitted: jit it, or hand it to ``fit``).

    The step, in this order (each hook is optional; without any, the mean softmax cross-entropy of integer
    labels, averaged over all ``B * L`` characters for language models):

    1. ``dropout_key, next_rng = split(state.rng)``;
    2. ``(objective, aux), grads = value_and_grad(loss_fn, has_aux=True)(state.params, state, batch,
       dropout_key)``; ``loss = aux.get("loss", objective)``;
    3. ``grads = transform_grads(grads, state, aux)``;
    4. ``extra = {"value": loss, **extra_args_fn(state, batch, loss)}``;
    5. ``updates, opt_state = tx.update(grads, state.opt_state, state.params, **extra)``;
       ``updates = transform_updates(updates, state, aux)``; ``params = apply_updates(state.params,
       updates)`` (:func:`apply_step`);
    6. ``new_state = state.replace(step=step + 1, params, model_state=aux["model_state"], opt_state,
       rng=next_rng, carry=stop_gradient(aux["carry"]))``; ``new_state = after_update(state, new_state,
       aux)``;
    7. ``metrics = {"loss": loss, **aux["metrics"]}``, ``bits_per_char = loss / ln 2`` for language
       models, updated with ``extra_metrics(state, new_state, batch, aux)``.

    Args:
      model: a Flax ``Classifier`` (``task="classification"``) or ``LanguageModel``, or an
        ``nnx.Module`` (:func:`~randlr_jax.training.adapt_model`); used only by the default
        ``loss_fn``.
      tx: any Optax transformation; plain ones are wrapped with ``optax.with_extra_args_support``.
      task: ``"classification"`` or ``"language_model"``; with a ``loss_fn``, also ``"regression"`` (the
        task then only decides whether ``bits_per_char`` is reported).
      extra_args_fn: ``(state, batch, loss) -> dict`` of extra keyword arguments for ``tx.update``.
      loss_fn: ``(params, state, batch, dropout_key) -> (objective, aux)``, replacing the forward pass and
        the loss; ``objective`` is what is differentiated (with respect to ``params``). ``aux`` is a dict
        with the optional keys ``"model_state"`` (the new ``state.model_state``; default: unchanged),
        ``"carry"`` (the new recurrent carry, gradient stopped by the step; default: unchanged),
        ``"loss"`` (the loss reported and passed as ``value=``; default: ``objective``) and
        ``"metrics"`` (a dict merged into the metrics), plus whatever the other hooks read.
      transform_grads: ``(grads, state, aux) -> grads`` before ``tx.update`` (e.g. zero the gradients of
        parameters that went non-finite).
      transform_updates: ``(updates, state, aux) -> updates`` after ``tx.update``, before the updates are
        applied (e.g. freeze some parameters: their momentum still runs, their values do not move).
      after_update: ``(state, new_state, aux) -> new_state`` once the step is taken (e.g. update a
        posterior held in ``new_state.model_state``, or reset some parameters).
      extra_metrics: ``(state, new_state, batch, aux) -> dict`` merged into the metrics (e.g. a value from
        the new optimizer state).

    Returns:
      The step function. Metrics: ``loss``, ``accuracy`` (default loss), ``bits_per_char`` for language
      models, and what the hooks add; a hook may add ``"dead"`` (:data:`DEAD_METRIC`, a bool: training
      can no longer make progress), on which :func:`~randlr_jax.training.fit` stops as on a non-finite
      loss.

    Raises:
      ValueError: an unknown ``task``, ``tx`` not a transformation, a hook that is neither callable nor
        ``None``, or (without a ``loss_fn``) a ``model`` that is not a Flax module.
    """
    model = adapt_model(model)  # an nnx.Module trains through its Linen face
    _check_task(task, TASKS if loss_fn is None else HOOK_TASKS)
    if loss_fn is None:
        checks.model("model", model)
    checks.transformation("tx", tx)
    for name, hook in (
        ("extra_args_fn", extra_args_fn),
        ("loss_fn", loss_fn),
        ("transform_grads", transform_grads),
        ("transform_updates", transform_updates),
        ("after_update", after_update),
        ("extra_metrics", extra_metrics),
    ):
        checks.function(name, hook, "a function (see make_train_step's hooks)", optional=True)
    tx = optax.with_extra_args_support(tx)
    if loss_fn is None:
        loss_fn = _cross_entropy_loss(model, task)

    def train_step(state: TrainState, batch: dict) -> tuple[TrainState, dict]:
        dropout_key, next_rng = jax.random.split(state.rng)
        grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
        (objective, aux), grads = grad_fn(state.params, state, batch, dropout_key)
        loss = aux.get("loss", objective)
        if transform_grads is not None:
            grads = transform_grads(grads, state, aux)
        extra = {"value": loss}
        if extra_args_fn is not None:
            extra.update(extra_args_fn(state, batch, loss))
        transform = None
        if transform_updates is not None:
            transform = lambda updates: transform_updates(updates, state, aux)  # noqa: E731
        params, opt_state = apply_step(
            tx, state.params, state.opt_state, grads, extra, transform_updates=transform
        )
        new_carry = aux.get("carry", state.carry)
        new_state = state.replace(
            step=optax.safe_increment(state.step),
            params=params,
            model_state=aux.get("model_state", state.model_state),
            opt_state=opt_state,
            rng=next_rng,
            carry=None if new_carry is None else jax.lax.stop_gradient(new_carry),
        )
        if after_update is not None:
            new_state = after_update(state, new_state, aux)
        metrics = {"loss": loss, **aux.get("metrics", {})}
        if task == "language_model":
            metrics["bits_per_char"] = loss / math.log(2.0)
        if extra_metrics is not None:
            metrics.update(extra_metrics(state, new_state, batch, aux))
        return new_state, metrics

    return train_step


def make_eval_step(
    model: Any, *, task: str = "classification", eval_params: EvalParamsFn | None = None
) -> Callable[..., Any]:
    """Build the evaluation step, returning sums so that batches of any size aggregate exactly.

    Classification: ``eval_step(state, batch) -> {"loss_sum", "correct", "count"}``.
    Language model: ``eval_step(state, batch, carry) -> (sums, carry)``, the carry threaded across windows.
    Entries with ``batch["mask"] == 0`` (padding) contribute nothing.

    Args:
      model: a Flax ``Classifier`` or ``LanguageModel``, or an ``nnx.Module``.
      task: ``"classification"`` or ``"language_model"``.
      eval_params: ``state -> params``, the parameters to evaluate (default: ``state.params``); e.g.
        ``lambda s: optax.contrib.schedule_free_eval_params(s.opt_state, s.params)`` for a
        schedule-free optimizer, whose averaged iterate is the one to evaluate.

    Raises:
      ValueError: an unknown ``task``, ``model`` not a Flax module, ``eval_params`` neither callable
        nor ``None``.
    """
    model = adapt_model(model)  # an nnx.Module trains through its Linen face
    _check_task(task)
    checks.model("model", model)
    checks.function("eval_params", eval_params, "a function state -> params", optional=True)

    def params_of(state: TrainState) -> Any:
        return state.params if eval_params is None else eval_params(state)

    def sums(logits, y, mask):
        losses = optax.softmax_cross_entropy_with_integer_labels(logits, y)
        correct = (jnp.argmax(logits, -1) == y).astype(jnp.float32)
        if mask is None:
            mask = jnp.ones(losses.shape[:1], jnp.float32)
        weights = jnp.broadcast_to(
            mask.reshape(mask.shape + (1,) * (losses.ndim - 1)), losses.shape
        )
        return {
            "loss_sum": jnp.sum(losses * weights),
            "correct": jnp.sum(correct * weights),
            "count": jnp.sum(weights),
        }

    if task == "classification":

        def eval_step(state: TrainState, batch: dict) -> dict:
            logits, _, _ = _apply(
                model,
                params_of(state),
                state.model_state,
                batch["x"],
                None,
                train=False,
                task=task,
            )
            return sums(logits, batch["y"], batch.get("mask"))

        return eval_step

    def lm_eval_step(state: TrainState, batch: dict, carry: Any) -> tuple[dict, Any]:
        logits, _, new_carry = _apply(
            model,
            params_of(state),
            state.model_state,
            batch["x"],
            carry,
            train=False,
            task=task,
        )
        return sums(logits, batch["y"], batch.get("mask")), new_carry

    return lm_eval_step


def summarize(totals: dict, *, task: str = "classification") -> dict:
    """Turn accumulated sums into mean ``loss``, ``accuracy`` (and ``bits_per_char``)."""
    count = max(float(totals["count"]), 1.0)
    out = {"loss": float(totals["loss_sum"]) / count, "accuracy": float(totals["correct"]) / count}
    if task == "language_model":
        out["bits_per_char"] = out["loss"] / math.log(2.0)
    return out
