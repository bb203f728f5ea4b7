"""CIFAR MobileNetV2 (kuangliu/pytorch-cifar, the Alrao paper's MobileNet) as a body."""

from __future__ import annotations

import flax.linen as nn
import jax

from randlr_jax.models._common import (
    batch_norm,
    check_positive_int,
    check_width_multiplier,
    global_avg_pool,
    scale_width,
)

# (expansion, out_planes, num_blocks, stride); the second stage's stride is 1 (2 on ImageNet).
MOBILENETV2_CIFAR_CFG: tuple[tuple[int, int, int, int], ...] = (
    (1, 16, 1, 1),
    (6, 24, 2, 1),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)


class InvertedResidual(nn.Module):
    """Expand (1x1) -> depthwise 3x3 -> project (1x1), each + BatchNorm; ReLU after the first two.

    With stride 1 a shortcut is added (a 1x1 conv + BN when ``in_planes != out_planes``, as the
    reference); with stride 2 there is none.

    Shapes: ``(B, H, W, in_planes) -> (B, H / stride, W / stride, out_planes)``.
    """

    in_planes: int
    out_planes: int
    expansion: int
    stride: int

    def __post_init__(self) -> None:
        for name in ("in_planes", "out_planes", "expansion", "stride"):
            check_positive_int(name, getattr(self, name))
        super().__post_init__()

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
        planes = self.expansion * self.in_planes
        out = nn.Conv(planes, (1, 1), use_bias=False, name="expand")(x)
        out = nn.relu(batch_norm(train, name="bn_expand")(out))
        out = nn.Conv(
            planes,
            (3, 3),
            strides=(self.stride, self.stride),
            padding=((1, 1), (1, 1)),
            feature_group_count=planes,
            use_bias=False,
            name="depthwise",
        )(out)
        out = nn.relu(batch_norm(train, name="bn_depthwise")(out))
        out = nn.Conv(self.out_planes, (1, 1), use_bias=False, name="project")(out)
        out = batch_norm(train, name="bn_project")(out)
        if self.stride != 1:
            return out
        shortcut = x
        if self.in_planes != self.out_planes:
            shortcut = nn.Conv(self.out_planes, (1, 1), use_bias=False, name="shortcut_conv")(x)
            shortcut = batch_norm(train, name="shortcut_bn")(shortcut)
        return out + shortcut


class MobileNetV2(nn.Module):
    """MobileNetV2 pre-classifier for 32x32 images, with the CIFAR stride changes.

    ``conv3x3(32, stride 1) -> BN -> ReLU -> 17 inverted residual blocks -> conv1x1(1280) -> BN ->
    ReLU -> global average pool``. Against ImageNet MobileNetV2 the first convolution and the second
    stage use stride 1 (so a 32x32 input ends at 4x4, which kuangliu's ``avg_pool2d(out, 4)``
    reduces; here a global mean, identical on 32x32). With the 10-class head the model has 2,296,922
    parameters (Alrao paper's Table 2: 2.297M). Every width is scaled by ``width_multiplier``
    (Alrao's ``gamma``, used with 3 for Fig. 8's "3 times as many units").

    Shapes: input ``(B, H, W, 3)`` NHWC float; output ``(B, 1280 * width_multiplier)``.

    Attributes:
      width_multiplier: scales every layer's width.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> shapes = jax.eval_shape(MobileNetV2().init, jax.random.key(0), jnp.zeros((2, 32, 32, 3)))

    References:
      Sandler et al, MobileNetV2: Inverted Residuals and Linear Bottlenecks
      <https://arxiv.org/abs/1801.04381>, 2018; CIFAR variant of
      https://github.com/kuangliu/pytorch-cifar as used by Blier et al, Learning with Random
      Learning Rates <https://arxiv.org/abs/1810.01322>, 2018.
    """

    width_multiplier: float = 1.0

    def __post_init__(self) -> None:
        check_width_multiplier(self.width_multiplier)
        super().__post_init__()

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
        def scale(width: int) -> int:
            return scale_width(width, self.width_multiplier)

        in_planes = scale(32)
        x = nn.Conv(in_planes, (3, 3), padding=((1, 1), (1, 1)), use_bias=False, name="stem")(x)
        x = nn.relu(batch_norm(train, name="bn_stem")(x))
        block = 0
        for expansion, out_planes, num_blocks, stride in MOBILENETV2_CIFAR_CFG:
            for block_stride in (stride,) + (1,) * (num_blocks - 1):
                x = InvertedResidual(
                    in_planes, scale(out_planes), expansion, block_stride, name=f"block_{block}"
                )(x, train=train)
                in_planes = scale(out_planes)
                block += 1
        x = nn.Conv(scale(1280), (1, 1), use_bias=False, name="conv_last")(x)
        x = nn.relu(batch_norm(train, name="bn_last")(x))
        return global_avg_pool(x)
