"""Deploying an Alrao model: one classifier instead of ``N`` copies.

After training, the copy the averaging posterior ranks first (Blier, Wolinski, Ollivier 2019: the
switch concentrates on the copies whose rate works best) can replace the whole
:class:`~randlr_jax.alrao.AlraoHead`: a plain model of the same architecture with one dense
classifier holding that copy's weights costs at inference what the model without Alrao costs (one
``(D, K)`` matmul instead of ``N`` of them and the mixture).

:func:`export_single_classifier` dispatches on the model's framework (:data:`EXPORTERS`: Flax Linen
here; another framework adds its ``(is_model, export)`` pair).

References:
  Blier, Wolinski, Ollivier, `Learning with Random Learning Rates <https://arxiv.org/abs/1810.01322>`_, 2019.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from randlr_jax.alrao import _copies as cc
from randlr_jax.alrao import _step as step_lib
from randlr_jax.alrao._optimizers import HEAD, HeadPath, head_matcher

__all__ = ["EXPORTERS", "export_single_classifier", "first_copy"]


def first_copy(head: cc.AlraoHead, head_params: Any, switch_state: Any) -> int:
    """The index of the copy the averaging posterior ranks first among the finite copies.

    ``argmax_j`` of the log-weights with non-finite copies dropped
    (:func:`~randlr_jax.alrao.masked_log_weights`); the lowest index on a tie.

    Raises:
      ValueError: every copy is non-finite (nothing to export).
    """
    finite = cc.copies_finite(head_params)
    if not bool(jnp.any(finite)):
        raise ValueError(
            "every classifier copy has non-finite parameters: there is no copy to export."
        )
    log_weights = cc.masked_log_weights(head.averager().log_posterior(switch_state), finite)
    return int(np.argmax(np.asarray(log_weights)))


def _replace_field(module: nn.Module, keys: tuple[str, ...], new: nn.Module) -> nn.Module:
    """A clone of ``module`` with the submodule field at the chain ``keys`` replaced by ``new``."""
    if len(keys) == 1:
        return module.clone(**{keys[0]: new})
    return module.clone(**{keys[0]: _replace_field(getattr(module, keys[0]), keys[1:], new)})


def _export_linen(
    model: nn.Module, params: Any, model_state: Any, *, head_path: HeadPath
) -> tuple[nn.Module, Any]:
    head = step_lib._static_head(model, head_path)
    keys = (head_path,) if isinstance(head_path, str) else head_path
    if head is None:
        raise ValueError(
            f"export_single_classifier replaces the AlraoHead of {type(model).__name__}, so it must "
            f"be a field of the model (or a chain of fields) at head_path={head_path!r}, e.g. "
            f"Classifier(body, head=AlraoHead(...)); a head built in setup or @nn.compact cannot be "
            f"swapped: make it a field."
        )
    path = step_lib._head_module_path(model, params, head_path)
    if path != keys:
        raise ValueError(
            f"head_path={head_path!r} names the field chain {keys!r} but the AlraoHead parameters "
            f"it selects are at {path!r}; pass the field chain {path!r} as head_path."
        )
    head_params = step_lib._get_in(params, path)
    j = first_copy(head, head_params, step_lib._switch_at(model_state, path))
    classifier = nn.Dense(head.num_outputs, kernel_init=head.kernel_init, bias_init=head.bias_init)
    plain_model = _replace_field(model, keys, classifier)
    copies = head_params["copies"]
    plain_params = step_lib._set_in(
        params, path, {"kernel": copies["kernel"][j], "bias": copies["bias"][j]}
    )
    return plain_model, plain_params


EXPORTERS: list[tuple[Callable[[Any], bool], Callable[..., tuple[Any, Any]]]] = [
    (lambda model: isinstance(model, nn.Module), _export_linen),
]
"""``(is_model, export)`` pairs tried in order by :func:`export_single_classifier`; ``export(model,
params, model_state, *, head_path) -> (plain_model, plain_params)``."""


def export_single_classifier(
    model: Any, params: Any, model_state: Any, *, head_path: HeadPath = HEAD
) -> tuple[Any, Any]:
    """A plain model with one dense classifier: the copy the posterior ranks first.

    The :class:`~randlr_jax.alrao.AlraoHead` at ``head_path`` is replaced by a plain dense layer
    (``nn.Dense(num_outputs)`` for Linen) whose kernel and bias are those of copy
    ``j* = argmax_j a_j``, ``a`` the averaging posterior held in ``model_state["alrao_switch"]``
    with non-finite copies dropped (:func:`first_copy`); every other parameter is kept. The plain
    model's output is that copy's output, i.e. its logits (the ``AlraoHead`` returned the mixture's
    log-probabilities) or, for regression, its means; the inference cost is that of the model
    without Alrao. Apply it with ``{"params": plain_params, **other collections of model_state}``
    (e.g. ``batch_stats``; the ``"alrao_switch"`` collection is no longer needed).

    Args:
      model: a Flax Linen model whose ``AlraoHead`` is a field (``Classifier.head``) or a chain
        of fields along ``head_path`` (a key or a key path).
      params: its trained parameters (``state.params``).
      model_state: its other collections (``state.model_state``), holding the averaging state.
      head_path: where the head is, as for :func:`~randlr_jax.alrao.make_alrao_train_step`.

    Returns:
      ``(plain_model, plain_params)``.

    Raises:
      ValueError: a bad ``head_path``, no ``AlraoHead`` field there, every copy non-finite.
      TypeError: a model of a framework no exporter handles (:data:`EXPORTERS`).

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from randlr_jax.alrao import AlraoHead, export_single_classifier
      >>> from randlr_jax.models import make_model
      >>> model = make_model("mlp", head=AlraoHead(num_outputs=10, num_copies=4))
      >>> variables = dict(model.init(jax.random.key(0), jnp.zeros((1, 784))))
      >>> params, state = variables.pop("params"), variables
      >>> plain_model, plain_params = export_single_classifier(model, params, state)
      >>> type(plain_model.head).__name__, plain_params["head"]["kernel"].shape
      ('Dense', (100, 10))
    """
    head_matcher(head_path)
    for is_model, export in EXPORTERS:
        if is_model(model):
            return export(model, params, model_state, head_path=head_path)
    raise TypeError(
        f"export_single_classifier: no exporter for a {type(model).__name__} (supported: Flax "
        f"Linen modules)."
    )
