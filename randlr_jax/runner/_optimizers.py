"""Optimizers by name, for configs and command lines (library code builds its own Optax chains)."""

from __future__ import annotations

from collections.abc import Callable

import optax

OptimizerFactory = Callable[..., optax.GradientTransformation]


def _sgd(learning_rate):
    return optax.sgd(learning_rate)


def _momentum(learning_rate, momentum=0.9, nesterov=False):
    return optax.sgd(learning_rate, momentum=momentum, nesterov=nesterov)


def _adam(learning_rate=1e-3, b1=0.9, b2=0.999, eps=1e-8):
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
      ValueError: unknown name (the message lists the known ones) or a non-positive learning rate.
    """
    if name not in OPTIMIZERS:
        raise ValueError(
            f"optimizer must be one of {sorted(OPTIMIZERS)} (or 'alrao_sgd'/'alrao_adam' through "
            f"TrainConfig), got {name!r}."
        )
    if not (learning_rate > 0):
        raise ValueError(f"learning_rate must be > 0, got {learning_rate!r}.")
    return OPTIMIZERS[name](learning_rate, **kwargs)
