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

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

from randlr_jax import _checks as checks
from randlr_jax.alrao import _copies as cc
from randlr_jax.alrao import _guard as guard_lib
from randlr_jax.alrao import _switch as switch_lib
from randlr_jax.alrao._optimizers import HEAD, alrao_loss, alrao_loss_chunked
from randlr_jax.training._state import TrainState
from randlr_jax.training._steps import DEAD_METRIC, make_train_step


def make_alrao_train_step(
    model: Any,
    tx: optax.GradientTransformation,
    *,
    task: str = "classification",
    catch_up: bool = False,
    catch_up_threshold: float = -20.0,
    extra_args_fn: Callable | None = None,
    feature_guard: bool = False,
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
        average of all copies (the optional hard catch-up of the authors' code, not in the paper; off
        by default, threshold ``-20`` as there).
      extra_args_fn: optional ``(state, batch, loss) -> dict`` of extra keyword arguments for ``tx.update``.
      feature_guard: our extension (not in the paper; off by default): a feature of the body (a unit of
        a ``nn.Dense``, a channel of a ``nn.Conv``) whose output or parameters turn non-finite is
        frozen (its rate set to zero) and silenced (its kernel column and bias entry set to zero), so a
        diverging ReLU feature no longer kills every copy (:mod:`randlr_jax.alrao._guard`, with the
        math and the activation assumption ``act(0) = 0``). Bit for bit the unguarded step while no
        feature diverges. Adds the metric ``dead_features``; :func:`randlr_jax.alrao.feature_guard_dead`
        reads the masks from a state.

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
    head = getattr(model, "head", None)
    if head is None:
        raise ValueError(
            f"model must have a head (an AlraoHead) and a features(x, train) method to train with Alrao, "
            f"got {type(model).__name__} without a head."
        )
    if not isinstance(head, cc.AlraoHead):
        raise ValueError(
            f"model.head must be an AlraoHead to train with Alrao, got {type(head).__name__}."
        )
    averager = head.averager()
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
        else:

            def copies(p, f):
                return head.apply({"params": p}, f, method="copy_outputs")

            own = copies(safe_head, jax.lax.stop_gradient(features))
            mix = copies(jax.lax.stop_gradient(safe_head), features)
            loss, aux = alrao_loss(
                own, mix, batch["y"], log_posterior, params_finite, task=loss_task, sigma=head.sigma
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
        return {**tree, HEAD: cc.zero_nonfinite_copies(tree[HEAD], aux["finite"])}

    def after_update(state: TrainState, new_state: TrainState, aux: dict) -> TrainState:
        new_switch = averager.update(
            cc.get_switch_state(state.model_state), aux["copy_log_likelihoods"]
        )
        params = new_state.params
        if catch_up:
            log_posterior = averager.log_posterior(new_switch)
            params = {
                **params,
                HEAD: switch_lib.catch_up(params[HEAD], log_posterior, catch_up_threshold),
            }
        model_state = cc.set_switch_state(new_state.model_state, new_switch)
        return new_state.replace(params=params, model_state=model_state)

    def alrao_metrics(state: TrainState, new_state: TrainState, batch: dict, aux: dict) -> dict:
        finite = aux["finite"]
        log_posterior = averager.log_posterior(cc.get_switch_state(new_state.model_state))
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
        if loss_task == "classification":
            predictions = jnp.argmax(aux["mixture_log_probs"], axis=-1)
            metrics["accuracy"] = jnp.mean(predictions == batch["y"])
        return metrics

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


def posterior_of(state: TrainState, model: Any) -> jax.Array:
    """The averaging weights ``a`` ``(N,)`` held in ``state`` (for logging and :func:`suggest_lr`)."""
    averager = model.head.averager()
    return averager.posterior(cc.get_switch_state(state.model_state))
