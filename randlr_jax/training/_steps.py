"""Jitted training and evaluation steps for classification and character language modelling.

``train_step(state, batch) -> (state, metrics)`` and ``eval_step(state, batch) -> sums`` are pure functions of
pytrees (Flax-examples style), generic over any Optax transformation, including those that take extra
arguments at update time (``optax.GradientTransformationExtraArgs``): the step passes ``value=loss`` plus what
an optional ``extra_args_fn(state, batch, loss)`` returns.

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

from randlr_jax.training._state import TrainState

TASKS = ("classification", "language_model")

ExtraArgsFn = Callable[[TrainState, dict, jax.Array], dict]


def _check_task(task: str) -> None:
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}.")


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


def make_train_step(
    model: Any,
    tx: optax.GradientTransformation,
    *,
    task: str = "classification",
    extra_args_fn: ExtraArgsFn | None = None,
) -> Callable[[TrainState, dict], tuple[TrainState, dict]]:
    """Build ``train_step(state, batch) -> (state, metrics)`` (not yet jitted; see :func:`jit_train_step`).

    The loss is the mean softmax cross-entropy of integer labels; for language models it is averaged over
    all ``B * L`` characters and ``bits_per_char = loss / ln 2`` is reported too.

    Args:
      model: a Flax ``Classifier`` (``task="classification"``) or ``LanguageModel``.
      tx: any Optax transformation; plain ones are wrapped with ``optax.with_extra_args_support``.
      task: ``"classification"`` or ``"language_model"``.
      extra_args_fn: optional ``(state, batch, loss) -> dict`` of extra keyword arguments for ``tx.update``.

    Returns:
      The step function. Metrics: ``loss``, ``accuracy`` (and ``bits_per_char`` for language models), scalars.
    """
    _check_task(task)
    tx = optax.with_extra_args_support(tx)

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
        return loss, (accuracy, new_model_state, new_carry)

    def train_step(state: TrainState, batch: dict) -> tuple[TrainState, dict]:
        dropout_key, next_rng = jax.random.split(state.rng)
        grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
        (loss, (accuracy, new_model_state, new_carry)), grads = grad_fn(
            state.params, state, batch, dropout_key
        )
        extra = {"value": loss}
        if extra_args_fn is not None:
            extra.update(extra_args_fn(state, batch, loss))
        updates, opt_state = tx.update(grads, state.opt_state, state.params, **extra)
        params = optax.apply_updates(state.params, updates)
        new_state = state.replace(
            step=optax.safe_increment(state.step),
            params=params,
            model_state=new_model_state,
            opt_state=opt_state,
            rng=next_rng,
            carry=None if new_carry is None else jax.lax.stop_gradient(new_carry),
        )
        metrics = {"loss": loss, "accuracy": accuracy}
        if task == "language_model":
            metrics["bits_per_char"] = loss / math.log(2.0)
        return new_state, metrics

    return train_step


def make_eval_step(model: Any, *, task: str = "classification") -> Callable[..., Any]:
    """Build the evaluation step, returning sums so that batches of any size aggregate exactly.

    Classification: ``eval_step(state, batch) -> {"loss_sum", "correct", "count"}``.
    Language model: ``eval_step(state, batch, carry) -> (sums, carry)``, the carry threaded across windows.
    Entries with ``batch["mask"] == 0`` (padding) contribute nothing.
    """
    _check_task(task)

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
                state.params,
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
            state.params,
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
