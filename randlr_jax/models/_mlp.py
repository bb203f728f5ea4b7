"""Multilayer perceptron body (pre-classifier)."""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax

from randlr_jax.models._common import (
    ActivationLike,
    check_positive_ints,
    check_width_multiplier,
    resolve_activation,
    scale_width,
)


class MLP(nn.Module):
    """Fully connected pre-classifier: flatten, then ``Dense -> activation`` per hidden width.

    ``h_0 = flatten(x)``, ``h_l = act(W_l h_{l-1} + b_l)`` for ``l = 1..len(widths)``; the features
    are ``h_L``. Layer ``l`` has ``round(widths[l] * width_multiplier)`` units. The hypergradient
    paper's optimizee (2 hidden layers of 20 sigmoid units) is
    ``MLP(widths=(20, 20), activation="sigmoid")``.

    Shapes: input ``(B, ...)`` (any trailing shape, flattened), output ``(B, widths[-1] *
    width_multiplier)`` (rounded); with ``widths=()`` the flattened input itself.

    Attributes:
      widths: hidden-layer widths, each a positive int.
      activation: a callable or a name from ``randlr_jax.models._common.ACTIVATIONS`` (``"relu"``,
        ``"sigmoid"``, ``"tanh"``, ``"gelu"``, ...).
      width_multiplier: scales every hidden width (e.g. ``3.0`` for a 3x wider network).

    Example:
      >>> import jax, jax.numpy as jnp
      >>> body = MLP(widths=(20, 20), activation="sigmoid")
      >>> variables = jax.eval_shape(body.init, jax.random.key(0), jnp.zeros((4, 28, 28, 1)))
      >>> jax.eval_shape(body.apply, variables, jnp.zeros((4, 28, 28, 1))).shape
      (4, 20)

    References:
      Fu et al, Neural Optimizers with Hypergradients for Tuning Parameter-Wise Learning Rates, 2017
      (its optimizee: ``MLP(widths=(20, 20), activation="sigmoid")``, batch 120).
    """

    widths: Sequence[int] = (100, 100)
    activation: ActivationLike = "relu"
    width_multiplier: float = 1.0

    def __post_init__(self) -> None:
        check_positive_ints("widths", self.widths)
        check_width_multiplier(self.width_multiplier)
        resolve_activation(self.activation)
        super().__post_init__()

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
        del train  # no dropout / normalisation
        act = resolve_activation(self.activation)
        x = x.reshape((x.shape[0], -1))
        for i, width in enumerate(self.widths):
            x = act(nn.Dense(scale_width(width, self.width_multiplier), name=f"dense_{i}")(x))
        return x
