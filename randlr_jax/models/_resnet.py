"""CIFAR ResNet with basic blocks (kuangliu/pytorch-cifar's ResNet-18) as a body."""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax

from randlr_jax.models._common import (
    batch_norm,
    check_positive_int,
    check_positive_ints,
    check_width_multiplier,
    conv3x3,
    global_avg_pool,
    scale_width,
)


class BasicBlock(nn.Module):
    """``conv3x3(stride) -> BN -> ReLU -> conv3x3 -> BN``, plus the shortcut, then ReLU.

    The shortcut is the identity, or ``conv1x1(stride) -> BN`` when the stride or width changes.

    Shapes: ``(B, H, W, C) -> (B, H / stride, W / stride, features)``.
    """

    features: int
    stride: int = 1

    def __post_init__(self) -> None:
        check_positive_int("features", self.features)
        check_positive_int("stride", self.stride)
        super().__post_init__()

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
        strides = (self.stride, self.stride)
        out = conv3x3(self.features, strides=strides, use_bias=False, name="conv_0")(x)
        out = nn.relu(batch_norm(train, name="bn_0")(out))
        out = conv3x3(self.features, use_bias=False, name="conv_1")(out)
        out = batch_norm(train, name="bn_1")(out)
        shortcut = x
        if self.stride != 1 or x.shape[-1] != self.features:
            shortcut = nn.Conv(
                self.features, (1, 1), strides=strides, use_bias=False, name="shortcut_conv"
            )(x)
            shortcut = batch_norm(train, name="shortcut_bn")(shortcut)
        return nn.relu(out + shortcut)


class ResNet(nn.Module):
    """CIFAR ResNet pre-classifier with basic blocks; the default ``stage_sizes`` give ResNet-18.

    ``conv3x3(64, stride 1) -> BN -> ReLU -> 4 stages of BasicBlocks (widths 64, 128, 256, 512; the
    first block of stages 2-4 has stride 2) -> global average pool``. No ImageNet 7x7 stem or
    max-pool: a 32x32 input ends at 4x4 (kuangliu's ``avg_pool2d(out, 4)``; here a global mean,
    identical on 32x32). With the 10-class head ResNet-18 has 11,173,962 parameters.
    ``stage_sizes=(3, 4, 6, 3)`` gives ResNet-34.

    Shapes: input ``(B, H, W, 3)`` NHWC float; output ``(B, 512 * width_multiplier)``.

    Attributes:
      stage_sizes: number of basic blocks per stage (4 stages).
      width_multiplier: scales every layer's width.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> shapes = jax.eval_shape(ResNet().init, jax.random.key(0), jnp.zeros((2, 32, 32, 3)))

    References:
      He et al, Deep Residual Learning for Image Recognition <https://arxiv.org/abs/1512.03385>,
      2015; CIFAR variant of https://github.com/kuangliu/pytorch-cifar.
    """

    stage_sizes: Sequence[int] = (2, 2, 2, 2)
    width_multiplier: float = 1.0

    def __post_init__(self) -> None:
        check_positive_ints("stage_sizes", self.stage_sizes)
        if len(self.stage_sizes) != 4:
            raise ValueError(
                f"stage_sizes must have 4 entries (one per stage), got {self.stage_sizes!r}."
            )
        check_width_multiplier(self.width_multiplier)
        super().__post_init__()

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
        x = conv3x3(scale_width(64, self.width_multiplier), use_bias=False, name="stem")(x)
        x = nn.relu(batch_norm(train, name="bn_stem")(x))
        stage_widths = (64, 128, 256, 512)
        for stage, num_blocks in enumerate(self.stage_sizes):
            width = stage_widths[stage]
            for block in range(num_blocks):
                stride = 2 if stage > 0 and block == 0 else 1
                x = BasicBlock(
                    scale_width(width, self.width_multiplier),
                    stride,
                    name=f"stage_{stage}_block_{block}",
                )(x, train=train)
        return global_avg_pool(x)
