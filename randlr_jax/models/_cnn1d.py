"""The MNIST-1D convolutional network (``ConvBase`` of the mnist1d package) as a body."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from randlr_jax.models._common import check_positive_int, check_width_multiplier, scale_width


class CNN1D(nn.Module):
    """Three 1D convolutions with ReLU, flattened: MNIST-1D's CNN without its linear layer.

    Layers, as the mnist1d package's ``ConvBase`` (``channels=25``):
    ``conv(k=5, s=2, p=1) -> relu -> conv(k=3, s=2, p=1) -> relu -> conv(k=3, s=2, p=1) -> relu``,
    then flatten. On length-40 signals the lengths go ``40 -> 19 -> 10 -> 5``, so the features have
    ``5 * 25 = 125`` entries (``ConvBase``'s ``linear_in=125``); with the 10-class head the model
    has 5,210 parameters, as ``ConvBase``. Every layer has ``round(channels * width_multiplier)``
    channels.

    Layout differs from PyTorch: features are flattened from ``(length, channel)`` (NWC), not
    ``(channel, length)``; this permutes the head's inputs and changes nothing else.

    Shapes: input ``(B, L)`` float (one channel) or ``(B, L, C)``; output
    ``(B, L3 * channels * width_multiplier)`` with ``L1 = (L - 3) // 2 + 1``,
    ``L2 = (L1 - 1) // 2 + 1``, ``L3 = (L2 - 1) // 2 + 1`` (``(B, 125)`` for ``L = 40``).

    Attributes:
      channels: channels of each convolution before width scaling (25 in the reference).
      width_multiplier: scales every layer's channel count (e.g. ``3.0`` for a 3x wider network).

    Example:
      >>> import jax, jax.numpy as jnp
      >>> body = CNN1D()
      >>> variables = jax.eval_shape(body.init, jax.random.key(0), jnp.zeros((2, 40)))
      >>> jax.eval_shape(body.apply, variables, jnp.zeros((2, 40))).shape
      (2, 125)

    References:
      Greydanus, Scaling down Deep Learning <https://arxiv.org/abs/2011.14439>, 2020
      (``ConvBase`` in https://github.com/greydanus/mnist1d).
    """

    channels: int = 25
    width_multiplier: float = 1.0

    def __post_init__(self) -> None:
        check_positive_int("channels", self.channels)
        check_width_multiplier(self.width_multiplier)
        super().__post_init__()

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
        del train  # no dropout / normalisation
        if x.ndim == 2:
            x = x[..., None]
        if x.ndim != 3:
            raise ValueError(f"x must have shape (B, L) or (B, L, C), got shape {x.shape}.")
        x = jnp.asarray(x, jnp.float32) if not jnp.issubdtype(x.dtype, jnp.floating) else x
        width = scale_width(self.channels, self.width_multiplier)
        for i, kernel in enumerate((5, 3, 3)):
            x = nn.Conv(width, (kernel,), strides=(2,), padding=((1, 1),), name=f"conv_{i}")(x)
            x = nn.relu(x)
        return x.reshape((x.shape[0], -1))
