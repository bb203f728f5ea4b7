"""Optimizers by name, for configs and command lines (library code builds its own Optax chains)."""

from __future__ import annotations

import inspect
from collections.abc import Callable

import optax

from randlr_jax import _checks as checks

OptimizerFactory = Callable[..., optax.GradientTransformation]


def _sgd(learning_rate):
    return optax.sgd(learning_rate)


def _momentum(learning_rate, momentum=0.9, nesterov=False):
    checks.in_unit_interval("momentum", momentum)
    checks.boolean("nesterov", nesterov)
    return optax.sgd(learning_rate, momentum=momentum, nesterov=nesterov)


def _adam(learning_rate=1e-3, b1=0.9, b2=0.999, eps=1e-8):
    checks.in_unit_interval("b1", b1)
    checks.in_unit_interval("b2", b2)
    checks.nonnegative("eps", eps)
    return optax.adam(learning_rate, b1=b1, b2=b2, eps=eps)


OPTIMIZERS: dict[str, OptimizerFactory] = {
    "sgd": _sgd,
    "momentum": _momentum,
    "adam": _adam,
}


def register_optimizer(name: str, factory: OptimizerFactory) -> None:
    """Make ``make_optimizer(name, ...)`` call ``factory(learning_rate, **kwargs)``."""
    OPTIMIZERS[name] = factory


def make_optimizer(name: str, learning_rate: float, **kwargs) -> optax.GradientTransformation:
    """Build a registered optimizer: ``"sgd"``, ``"momentum"``, ``"adam"`` (and those registered later).

    Raises:
      ValueError: unknown name (the message lists the known ones), a learning rate that is not a
        finite number ``> 0``, a keyword argument the optimizer does not take (naming it) or a bad
        value of one it takes (``momentum``, ``b1``, ``b2`` in ``[0, 1)``, ``eps >= 0``).
    """
    if not isinstance(name, str) or name not in OPTIMIZERS:
        raise ValueError(
            f"name must be one of {sorted(OPTIMIZERS)} (or 'alrao_sgd'/'alrao_adam' through "
            f"TrainConfig), got {name!r}."
        )
    checks.positive("learning_rate", learning_rate)
    factory = OPTIMIZERS[name]
    try:
        parameters = inspect.signature(factory).parameters
    except (TypeError, ValueError):  # no signature to check against
        parameters = None
    if parameters is not None and not any(
        p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()
    ):
        allowed = [p for p in parameters if p != "learning_rate"]
        for key, value in kwargs.items():
            if key not in allowed:
                raise ValueError(
                    f"{key}={value!r} is not an argument of the optimizer {name!r} (its arguments: "
                    f"{', '.join(allowed) or 'none besides learning_rate'})."
                )
    return factory(learning_rate, **kwargs)
