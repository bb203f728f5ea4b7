"""Wide ResNet (WRN-depth-k, pre-activation, CIFAR) as a body."""

from __future__ import annotations

import flax.linen as nn
import jax

from randlr_jax.models._common import (
    batch_norm,
    check_dropout_rate,
    check_positive_int,
    global_avg_pool,
)

# He-normal with fan-out, as the authors' implementation initialises its convolutions.
_conv_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")


class WideBasicBlock(nn.Module):
    """Pre-activation block: ``BN -> ReLU -> conv3x3(stride) -> BN -> ReLU -> dropout -> conv3x3``.

    The shortcut is the identity, or (when the width or stride changes) a ``conv1x1(stride)``
    applied to the pre-activated input ``relu(bn(x))``, as in the authors' implementation.

    Shapes: ``(B, H, W, C) -> (B, H / stride, W / stride, features)``.
    """

    features: int
    stride: int = 1
    dropout_rate: float = 0.0

    def __post_init__(self) -> None:
        check_positive_int("features", self.features)
        check_positive_int("stride", self.stride)
        check_dropout_rate(self.dropout_rate)
        super().__post_init__()

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
        strides = (self.stride, self.stride)
        preact = nn.relu(batch_norm(train, name="bn_0")(x))
        out = nn.Conv(
            self.features, (3, 3), strides=strides, padding=((1, 1), (1, 1)), use_bias=False,
            kernel_init=_conv_init, name="conv_0",
        )(preact)  # fmt: skip
        out = nn.relu(batch_norm(train, name="bn_1")(out))
        out = nn.Dropout(self.dropout_rate, deterministic=not train)(out)
        out = nn.Conv(
            self.features, (3, 3), padding=((1, 1), (1, 1)), use_bias=False,
            kernel_init=_conv_init, name="conv_1",
        )(out)  # fmt: skip
        if self.stride == 1 and x.shape[-1] == self.features:
            return x + out
        shortcut = nn.Conv(
            self.features, (1, 1), strides=strides, use_bias=False, kernel_init=_conv_init,
            name="shortcut_conv",
        )(preact)  # fmt: skip
        return shortcut + out


class WideResNet(nn.Module):
    """Wide ResNet pre-classifier WRN-``depth``-``widen_factor``; the defaults give WRN-28-10.

    ``conv3x3(16) -> 3 groups of n = (depth - 4) / 6 pre-activation blocks with widths 16k, 32k, 64k
    (strides 1, 2, 2) -> BN -> ReLU -> global average pool``. WRN-28-10 has 640 features and, with
    the 10-class head, 36,479,194 parameters (the paper's 36.5M). Dropout between the two
    convolutions of each block (the paper uses 0.3 in some runs; default off).

    Shapes: input ``(B, H, W, 3)`` NHWC float; output ``(B, 64 * widen_factor)``.

    Attributes:
      depth: total depth, ``6 n + 4``.
      widen_factor: ``k``, the width multiplier of the three groups.
      dropout_rate: dropout inside each block (rng name ``"dropout"``, off when ``train=False``).

    Example:
      >>> import jax, jax.numpy as jnp
      >>> shapes = jax.eval_shape(WideResNet().init, jax.random.key(0), jnp.zeros((2, 32, 32, 3)))

    References:
      Zagoruyko & Komodakis, Wide Residual Networks <https://arxiv.org/abs/1605.07146>, 2016.
    """

    depth: int = 28
    widen_factor: int = 10
    dropout_rate: float = 0.0

    def __post_init__(self) -> None:
        check_positive_int("depth", self.depth)
        if (self.depth - 4) % 6 != 0 or self.depth < 10:
            raise ValueError(
                f"depth must be 6n + 4 with n >= 1 (10, 16, 22, 28, ...), got {self.depth}."
            )
        check_positive_int("widen_factor", self.widen_factor)
        check_dropout_rate(self.dropout_rate)
        super().__post_init__()

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
        blocks_per_group = (self.depth - 4) // 6
        x = nn.Conv(
            16,
            (3, 3),
            padding=((1, 1), (1, 1)),
            use_bias=False,
            kernel_init=_conv_init,
            name="stem",
        )(x)
        for group, (width, stride) in enumerate(((16, 1), (32, 2), (64, 2))):
            for block in range(blocks_per_group):
                x = WideBasicBlock(
                    width * self.widen_factor,
                    stride if block == 0 else 1,
                    self.dropout_rate,
                    name=f"group_{group}_block_{block}",
                )(x, train=train)
        x = nn.relu(batch_norm(train, name="bn_final")(x))
        return global_avg_pool(x)
