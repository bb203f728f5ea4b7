"""Alrao for any JAX model: plain functions, Equinox, anything that maps parameters to features.

The model is given as ``features_fn(body_params, x) -> features`` (the pre-classifier, any pytree of
parameters) plus the classifier copies' parameters, an :class:`~randlr_jax.alrao.AlraoHead`'s layout
``{"copies": {"kernel": (N, D, K), "bias": (N, K)}}``, and the averaging state
(:func:`~randlr_jax.alrao.switch_init` and its ``bayes`` / ``uniform`` twins). :func:`functional_loss`
is the Alrao objective (Blier, Wolinski, Ollivier 2019, Section 2),

.. math::

    L = L_{mix}(\\text{features},\\ \\mathrm{sg}(\\theta^{cl}))
        + \\sum_j L_j(\\mathrm{sg}(\\text{features}),\\ \\theta^{cl}_j),

whose gradient reaches the pre-classifier through the mixture ``-log sum_j a_j p_j(y|x)`` and each
copy through its own loss ``-log p_j(y|x)`` only (:func:`~randlr_jax.alrao.alrao_loss`).
:func:`functional_step` adds the optimizer: one step of
:func:`~randlr_jax.alrao.make_alrao_train_step` (the same numbers on the same parameters) without
Flax.

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
from randlr_jax.alrao import _switch as switch_lib
from randlr_jax.alrao._optimizers import alrao_loss_dense

__all__ = ["functional_loss", "functional_step"]


def _averager_of(switch_state: Any, num_copies: int) -> switch_lib.Averager:
    """The averaging rule whose state ``switch_state`` is (the switch's ``theta`` is in its state)."""
    for state_type, kind in (
        (switch_lib.SwitchState, "switch"),
        (switch_lib.BayesState, "bayes"),
        (switch_lib.UniformState, "uniform"),
    ):
        if isinstance(switch_state, state_type):
            return switch_lib.make_averager(kind, num_copies)
    checks.fail(
        "switch_state", "an averaging state: switch_init(N), bayes_init(N) or uniform_init(N) (or an "
        "AlraoHead's variables['alrao_switch']['state'])", switch_state,
        shown=type(switch_state).__name__,
    )  # fmt: skip
    raise AssertionError  # unreachable: ``fail`` raises


def _num_copies(copies_params: Any) -> int:
    copies = copies_params.get("copies") if isinstance(copies_params, dict) else None
    kernel = copies.get("kernel") if isinstance(copies, dict) else None
    if kernel is None or getattr(kernel, "ndim", 0) != 3 or "bias" not in copies:
        checks.fail(
            "copies_params", "an AlraoHead's parameters {'copies': {'kernel': (N, D, K), "
            "'bias': (N, K)}}", copies_params, shown=checks.brief(copies_params),
        )  # fmt: skip
    return int(kernel.shape[0])


def functional_loss(
    features_fn: Callable[[Any, Any], jax.Array],
    body_params: Any,
    copies_params: Any,
    switch_state: Any,
    x: Any,
    y: jax.Array,
    *,
    task: str = "classification",
    sigma: float = 1.0,
) -> tuple[jax.Array, dict]:
    """The Alrao objective of any model given as ``features_fn(body_params, x) -> features``.

    Differentiate it with respect to ``body_params`` and ``copies_params`` (e.g.
    ``jax.value_and_grad(functional_loss, argnums=(1, 2), has_aux=True)``): the pre-classifier gets
    the gradient of the mixture's loss ``-log sum_j a_j p_j(y|x)`` (``a`` the averaging weights of
    ``switch_state``, constants), copy ``j`` the gradient of its own loss ``-log p_j(y|x)`` as if it
    were the only output. A copy with non-finite parameters or outputs is dropped (zeroed, weight
    zero, no gradient), as in :func:`~randlr_jax.alrao.alrao_loss`. The switch observes the copies'
    batch-mean log-likelihoods at these (pre-update) parameters: ``aux["switch_state"]`` is the state
    for the next step.

    Args:
      features_fn: ``(body_params, x) -> features (B, ..., D)``, the classifier's input; pure JAX
        (an Equinox model's call, a plain function).
      body_params: the pre-classifier's parameters (any pytree ``features_fn`` takes).
      copies_params: the copies, ``{"copies": {"kernel": (N, D, K), "bias": (N, K)}}`` (an
        :class:`~randlr_jax.alrao.AlraoHead`'s ``params``).
      switch_state: the averaging state (:func:`~randlr_jax.alrao.switch_init` ``(N)``,
        ``bayes_init``, ``uniform_init``, or an ``AlraoHead``'s ``variables["alrao_switch"]["state"]``).
      x: the inputs, passed to ``features_fn`` as they are.
      y: integer labels ``(B, ...)`` (classification) or float targets ``(B, ..., K)`` (regression).
      task: ``"classification"`` or ``"regression"``.
      sigma: the Gaussian likelihood's standard deviation (regression).

    Returns:
      ``(loss, aux)``: ``loss`` the objective above (what to differentiate); ``aux`` with
      ``switch_state`` (after observing this batch), ``mixture_loss`` (the model's loss),
      ``copy_losses`` ``(N,)``, ``posterior`` ``(N,)`` (the weights after the update, dropped
      copies at zero), ``finite`` ``(N,)``, ``num_dropped``, and ``accuracy`` (classification) or
      ``prediction`` (regression).

    Raises:
      ValueError: ``copies_params`` not an ``AlraoHead``'s layout, ``switch_state`` not an
        averaging state, and as :func:`~randlr_jax.alrao.alrao_loss`.

    Example:
      >>> from randlr_jax.alrao import AlraoHead, functional_loss
      >>> def features_fn(p, x):                                 # a one-layer MLP body
      ...     return jax.nn.relu(x @ p["kernel"] + p["bias"][None])
      >>> body = {"kernel": jnp.full((5, 8), 0.1), "bias": jnp.zeros(8)}
      >>> head = AlraoHead(num_outputs=3, num_copies=4).init(jax.random.key(0), jnp.zeros((1, 8)))
      >>> copies, switch = head["params"], head["alrao_switch"]["state"]
      >>> x, y = jnp.ones((2, 5)), jnp.array([0, 2])
      >>> grad_fn = jax.jit(jax.grad(functional_loss, argnums=(1, 2), has_aux=True), static_argnums=0)
      >>> (g_body, g_copies), aux = grad_fn(features_fn, body, copies, switch, x, y)
      >>> g_copies["copies"]["kernel"].shape, aux["posterior"].shape
      ((4, 8, 3), (4,))
    """
    checks.function("features_fn", features_fn, "a function (body_params, x) -> features")
    num_copies = _num_copies(copies_params)
    averager = _averager_of(switch_state, num_copies)
    checks.one_of("task", task, cc.TASKS)
    features = features_fn(body_params, x)
    log_posterior = averager.log_posterior(switch_state)
    # The step's fused objective: one pass over the copies, the gradient included.
    outputs_per_copy = features[..., 0].size * copies_params["copies"]["kernel"].shape[-1]
    loss, aux = alrao_loss_dense(
        copies_params, features, y, log_posterior, task=task, sigma=sigma,
        chunk_size=cc.default_copy_chunk(None, num_copies, outputs_per_copy),
    )  # fmt: skip
    new_switch = averager.update(switch_state, aux["copy_log_likelihoods"])
    finite = aux["finite"]
    out = {
        "switch_state": new_switch,
        "mixture_loss": aux["mixture_loss"],
        "copy_losses": -aux["copy_log_likelihoods"],
        "posterior": jnp.exp(cc.masked_log_weights(averager.log_posterior(new_switch), finite)),
        "finite": finite,
        "num_dropped": jnp.sum(~finite).astype(jnp.int32),
    }
    if task == "classification":
        predictions = jnp.argmax(aux["mixture_log_probs"], axis=-1)
        out["accuracy"] = jnp.mean(predictions == y)
    else:
        out["prediction"] = aux["prediction"]
    return loss, out


def functional_step(
    features_fn: Callable[[Any, Any], jax.Array],
    tx: optax.GradientTransformation,
    params: dict,
    opt_state: Any,
    switch_state: Any,
    x: Any,
    y: jax.Array,
    *,
    task: str = "classification",
    sigma: float = 1.0,
) -> tuple[dict, Any, Any, dict]:
    """One Alrao step of any model: gradients of :func:`functional_loss`, ``tx``, the switch update.

    ``params`` is ``{"body": body_params, "head": copies_params}`` and ``tx`` an Alrao optimizer
    over it (:func:`~randlr_jax.alrao.alrao_sgd`, ``alrao_adam``, ``alrao``, default
    ``head_path="head"``). A dropped copy (non-finite) gets no gradient and no update. The same
    numbers as :func:`~randlr_jax.alrao.make_alrao_train_step` on a Linen model with the same
    parameters (without its optional catch-up and feature guard). Not jitted: ``jax.jit`` it with
    ``static_argnums=(0, 1)`` (or close over ``features_fn`` and ``tx``).

    Returns:
      ``(params, opt_state, switch_state, metrics)``; ``metrics``: ``loss`` (the mixture's) and the
      rest of :func:`functional_loss`'s ``aux`` (but ``switch_state``).

    Example:
      >>> from randlr_jax.alrao import AlraoHead, alrao_sgd, functional_step
      >>> def features_fn(p, x):
      ...     return jax.nn.relu(x @ p["kernel"] + p["bias"][None])
      >>> head = AlraoHead(num_outputs=3, num_copies=4).init(jax.random.key(0), jnp.zeros((1, 8)))
      >>> body = {"kernel": jnp.full((5, 8), 0.1), "bias": jnp.zeros(8)}
      >>> params = {"body": body, "head": head["params"]}
      >>> switch = head["alrao_switch"]["state"]
      >>> tx = alrao_sgd(jax.random.key(1), lr_min=1e-3, lr_max=1.0, num_copies=4)
      >>> opt_state = tx.init(params)
      >>> step = jax.jit(functional_step, static_argnums=(0, 1))
      >>> x, y = jnp.ones((2, 5)), jnp.array([0, 2])
      >>> params, opt_state, switch, metrics = step(features_fn, tx, params, opt_state, switch, x, y)
      >>> metrics["posterior"].shape
      (4,)
    """
    if not (isinstance(params, dict) and set(params) == {"body", "head"}):
        checks.fail(
            "params", "{'body': body_params, 'head': copies_params}", params,
            shown=checks.brief(params),
        )  # fmt: skip

    def objective(p):
        return functional_loss(
            features_fn, p["body"], p["head"], switch_state, x, y, task=task, sigma=sigma
        )

    (_, aux), grads = jax.value_and_grad(objective, has_aux=True)(params)
    finite = aux["finite"]

    def zero_dropped(tree):
        return {**tree, "head": cc.zero_nonfinite_copies(tree["head"], finite)}

    tx = optax.with_extra_args_support(tx)
    updates, opt_state = tx.update(
        zero_dropped(grads), opt_state, params, value=aux["mixture_loss"]
    )
    params = optax.apply_updates(params, zero_dropped(updates))
    metrics = {k: v for k, v in aux.items() if k != "switch_state"}
    metrics["loss"] = aux["mixture_loss"]
    return params, opt_state, aux["switch_state"], metrics
