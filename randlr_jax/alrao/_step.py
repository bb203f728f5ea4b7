"""The jitted Alrao training step: forward, all gradients, both updates and the posterior update.

The gradients are those of :func:`randlr_jax.alrao.alrao_loss` (ALGORITHMS.md §1.2); the averaging state lives
in the model's ``"alrao_switch"`` collection and is updated with the copies' batch-mean log-likelihoods from
the forward pass, before the parameter update (ALGORITHMS.md §1.3). Usable as ``fit(..., train_step=...)``.

References:
  Blier, Wolinski, Ollivier, `Learning with Random Learning Rates <https://arxiv.org/abs/1810.01322>`_, 2019.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

from randlr_jax.alrao import _copies as cc
from randlr_jax.alrao import _switch as switch_lib
from randlr_jax.alrao._optimizers import HEAD, alrao_loss, alrao_loss_chunked
from randlr_jax.training._state import TrainState


def make_alrao_train_step(
    model: Any,
    tx: optax.GradientTransformation,
    *,
    task: str = "classification",
    catch_up: bool = False,
    catch_up_threshold: float = -20.0,
    extra_args_fn: Callable | None = None,
) -> Callable[[TrainState, dict], tuple[TrainState, dict]]:
    """One compiled Alrao step: forward, all gradients, both updates and the posterior update.

    ``model`` is a ``Classifier`` or ``LanguageModel`` whose ``head`` is an
    :class:`~randlr_jax.alrao.AlraoHead`; ``state.model_state`` holds its ``"alrao_switch"``
    collection (created by ``model.init``). Usable as ``fit(..., train_step=...)``. With the head's
    ``copy_chunk_size`` set, the copies are evaluated in chunks (:func:`randlr_jax.alrao.alrao_loss_chunked`)
    and the step never holds the ``(N, B, ..., K)`` outputs of all copies.

    Args:
      model: the model.
      tx: typically :func:`alrao_sgd` / :func:`alrao_adam` / :func:`alrao`.
      task: ``"classification"``, ``"language_model"`` (per-token classification with a carry) or
        ``"regression"`` (``batch["y"]`` float ``(B, K)``).
      catch_up: reset copies whose log-posterior is below ``catch_up_threshold`` to the posterior-weighted
        average of all copies (the reference code's ``catch_up``; off by default).
      extra_args_fn: optional ``(state, batch, loss) -> dict`` of extra keyword arguments for ``tx.update``.

    Returns:
      ``train_step(state, batch) -> (state, metrics)``; metrics: ``loss`` (mixture), ``accuracy``
      (classification), ``posterior`` ``(N,)`` (the mixture weights after this step's update, dropped
      copies at zero), ``copy_losses`` ``(N,)`` and ``num_dropped``.
    """
    if task not in ("classification", "language_model", "regression"):
        raise ValueError(
            f"task must be 'classification', 'language_model' or 'regression', got {task!r}."
        )
    head = model.head
    if not isinstance(head, cc.AlraoHead):
        raise ValueError(
            f"model.head must be an AlraoHead to train with Alrao, got {type(head).__name__}."
        )
    averager = head.averager()
    loss_task = "regression" if task == "regression" else "classification"
    tx = optax.with_extra_args_support(tx)

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
        switch_state = cc.get_switch_state(state.model_state)
        head_params = params[HEAD]
        params_finite = cc.copies_finite(head_params)
        safe_head = cc.zero_nonfinite_copies(head_params, params_finite)

        log_posterior = averager.log_posterior(switch_state)
        if head.copy_chunk_size is not None:
            loss, aux = alrao_loss_chunked(
                cc.apply_copies,
                safe_head,
                features,
                batch["y"],
                log_posterior,
                params_finite,
                chunk_size=head.copy_chunk_size,
                task=loss_task,
                sigma=head.sigma,
            )
            return loss, (aux, new_other, new_carry)

        def copies(p, f):
            return head.apply({"params": p}, f, method="copy_outputs")

        own = copies(safe_head, jax.lax.stop_gradient(features))
        mix = copies(jax.lax.stop_gradient(safe_head), features)
        loss, aux = alrao_loss(
            own, mix, batch["y"], log_posterior, params_finite, task=loss_task, sigma=head.sigma
        )
        return loss, (aux, new_other, new_carry)

    def train_step(state: TrainState, batch: dict) -> tuple[TrainState, dict]:
        dropout_key, next_rng = jax.random.split(state.rng)
        (_, (aux, new_other, new_carry)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            state.params, state, batch, dropout_key
        )
        finite = aux["finite"]
        grads = {**grads, HEAD: cc.zero_nonfinite_copies(grads[HEAD], finite)}
        extra = {"value": aux["mixture_loss"]}
        if extra_args_fn is not None:
            extra.update(extra_args_fn(state, batch, aux["mixture_loss"]))
        updates, opt_state = tx.update(grads, state.opt_state, state.params, **extra)
        # A dropped copy is frozen: no update (momentum buffers included) reaches it.
        updates = {**updates, HEAD: cc.zero_nonfinite_copies(updates[HEAD], finite)}
        params = optax.apply_updates(state.params, updates)
        new_switch = averager.update(
            cc.get_switch_state(state.model_state), aux["copy_log_likelihoods"]
        )
        log_posterior = averager.log_posterior(new_switch)
        if catch_up:
            params = {
                **params,
                HEAD: switch_lib.catch_up(params[HEAD], log_posterior, catch_up_threshold),
            }
        model_state = cc.set_switch_state({**state.model_state, **new_other}, new_switch)
        new_state = state.replace(
            step=optax.safe_increment(state.step),
            params=params,
            model_state=model_state,
            opt_state=opt_state,
            rng=next_rng,
            carry=None if new_carry is None else jax.lax.stop_gradient(new_carry),
        )
        metrics = {
            "loss": aux["mixture_loss"],
            # The weights the model predicts with: dropped copies at zero, the rest renormalised.
            "posterior": jnp.exp(cc.masked_log_weights(log_posterior, finite)),
            "copy_losses": -aux["copy_log_likelihoods"],
            "num_dropped": jnp.sum(~finite).astype(jnp.int32),
        }
        if loss_task == "classification":
            predictions = jnp.argmax(aux["mixture_log_probs"], axis=-1)
            metrics["accuracy"] = jnp.mean(predictions == batch["y"])
        if task == "language_model":
            metrics["bits_per_char"] = aux["mixture_loss"] / math.log(2.0)
        return new_state, metrics

    return train_step


def posterior_of(state: TrainState, model: Any) -> jax.Array:
    """The averaging weights ``a`` ``(N,)`` held in ``state`` (for logging and :func:`suggest_lr`)."""
    averager = model.head.averager()
    return averager.posterior(cc.get_switch_state(state.model_state))
