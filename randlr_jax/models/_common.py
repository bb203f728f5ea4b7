"""Helpers of the model zoo: argument checks, width scaling, activations, PyTorch-style norms."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from randlr_jax import _checks as checks

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
    """Raise ``ValueError`` unless ``value`` is a positive Python or numpy integer (``bool`` is
    rejected)."""
    checks.positive_int(name, value)


def _is_positive_int(value: object) -> bool:
    return (
        not isinstance(value, (bool, np.bool_))
        and isinstance(value, (int, np.integer))
        and value > 0
    )


def check_positive_ints(name: str, values: object) -> None:
    """Raise ``ValueError`` unless ``values`` is a sequence of positive integers."""
    if (
        not isinstance(values, Sequence)
        or isinstance(values, str)
        or not all(_is_positive_int(value) for value in values)
    ):
        raise ValueError(f"{name} must be a sequence of positive integers, got {values!r}.")


def check_width_multiplier(value: object) -> None:
    """Raise ``ValueError`` unless ``value`` is a concrete finite number ``> 0``."""
    checks.positive("width_multiplier", value, static=True)


def check_dropout_rate(value: object) -> None:
    """Raise ``ValueError`` unless ``value`` is a concrete number with ``0 <= value < 1``."""
    checks.in_unit_interval("dropout_rate", value, static=True)


def check_module(name: str, value: object, what: str = "a Flax module (e.g. nn.Dense(10))") -> None:
    """Raise ``ValueError`` unless ``value`` is a Flax module (a field of a model)."""
    if not isinstance(value, nn.Module):
        checks.fail(name, what, value, shown=checks.brief(value))


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
