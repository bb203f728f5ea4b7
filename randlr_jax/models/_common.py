"""Helpers of the model zoo: argument checks, width scaling, activations, PyTorch-style norms."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

ActivationLike = str | Callable[[jax.Array], jax.Array]

ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "relu": nn.relu,
    "sigmoid": nn.sigmoid,
    "tanh": jnp.tanh,
    "gelu": nn.gelu,
    "silu": nn.silu,
    "swish": nn.swish,
    "elu": nn.elu,
    "selu": nn.selu,
    "softplus": nn.softplus,
    "leaky_relu": nn.leaky_relu,
    "relu6": nn.relu6,
    "identity": lambda x: x,
}


def check_positive_int(name: str, value: object) -> None:
    """Raise ``ValueError`` unless ``value`` is a positive ``int`` (``bool`` is rejected)."""
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}.")


def check_positive_ints(name: str, values: object) -> None:
    """Raise ``ValueError`` unless ``values`` is a sequence of positive ``int``."""
    if not isinstance(values, Sequence) or isinstance(values, str):
        raise ValueError(f"{name} must be a sequence of positive integers, got {values!r}.")
    for value in values:
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ValueError(f"{name} must be a sequence of positive integers, got {values!r}.")


def check_width_multiplier(value: object) -> None:
    """Raise ``ValueError`` unless ``value`` is a finite number ``> 0``."""
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not (math.isfinite(value) and value > 0)
    ):
        raise ValueError(f"width_multiplier must be a finite number > 0, got {value!r}.")


def check_dropout_rate(value: object) -> None:
    """Raise ``ValueError`` unless ``0 <= value < 1``."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= value < 1.0:
        raise ValueError(f"dropout_rate must be a number in [0, 1), got {value!r}.")


def scale_width(width: int, multiplier: float) -> int:
    """``max(1, round(width * multiplier))``: a layer width after scaling the network's width."""
    return max(1, int(round(width * multiplier)))


def resolve_activation(activation: ActivationLike) -> Callable[[jax.Array], jax.Array]:
    """Turn an activation name (a key of :data:`ACTIVATIONS`) or a callable into a callable."""
    if callable(activation):
        return activation
    if isinstance(activation, str) and activation in ACTIVATIONS:
        return ACTIVATIONS[activation]
    raise ValueError(
        f"activation must be a callable or one of {sorted(ACTIVATIONS)}, got {activation!r}."
    )


def batch_norm(train: bool, name: str | None = None) -> nn.BatchNorm:
    """BatchNorm with PyTorch's defaults (running-average momentum 0.1, i.e. Flax ``momentum=0.9``;
    ``epsilon=1e-5``); batch statistics when ``train``, running averages otherwise."""
    return nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5, name=name)


def global_avg_pool(x: jax.Array) -> jax.Array:
    """``(B, H, W, C) -> (B, C)``: mean over the spatial axes."""
    return jnp.mean(x, axis=(1, 2))


conv3x3 = functools.partial(nn.Conv, kernel_size=(3, 3), padding=((1, 1), (1, 1)))
