"""CIFAR GoogLeNet (kuangliu/pytorch-cifar, the Alrao paper's GoogLeNet) as a body."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from randlr_jax.models._common import (
    batch_norm,
    check_positive_int,
    check_width_multiplier,
    global_avg_pool,
    scale_width,
)

# Inception widths: (n1x1, n3x3_reduce, n3x3, n5x5_reduce, n5x5, pool_proj); the output width is
# n1x1 + n3x3 + n5x5 + pool_proj.
GOOGLENET_CIFAR_CFG: dict[str, tuple[int, int, int, int, int, int]] = {
    "a3": (64, 96, 128, 16, 32, 32),
    "b3": (128, 128, 192, 32, 96, 64),
    "a4": (192, 96, 208, 16, 48, 64),
    "b4": (160, 112, 224, 24, 64, 64),
    "c4": (128, 128, 256, 24, 64, 64),
    "d4": (112, 144, 288, 32, 64, 64),
    "e4": (256, 160, 320, 32, 128, 128),
    "a5": (256, 160, 320, 32, 128, 128),
    "b5": (384, 192, 384, 48, 128, 128),
}


class _ConvBNReLU(nn.Module):
    features: int
    kernel: int

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        pad = self.kernel // 2
        x = nn.Conv(self.features, (self.kernel, self.kernel), padding=((pad, pad), (pad, pad)))(x)
        return nn.relu(batch_norm(train)(x))


class Inception(nn.Module):
    """Four parallel branches concatenated on channels (kuangliu's variant).

    ``b1: 1x1``; ``b2: 1x1 -> 3x3``; ``b3: 1x1 -> 3x3 -> 3x3`` (two 3x3 in place of the paper's
    5x5); ``b4: maxpool3x3(stride 1) -> 1x1``. Each conv (with bias) is followed by BatchNorm and
    ReLU.

    Shapes: ``(B, H, W, C) -> (B, H, W, n1x1 + n3x3 + n5x5 + pool_proj)``.
    """

    n1x1: int
    n3x3_reduce: int
    n3x3: int
    n5x5_reduce: int
    n5x5: int
    pool_proj: int

    def __post_init__(self) -> None:
        for name in ("n1x1", "n3x3_reduce", "n3x3", "n5x5_reduce", "n5x5", "pool_proj"):
            check_positive_int(name, getattr(self, name))
        super().__post_init__()

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
        b1 = _ConvBNReLU(self.n1x1, 1, name="b1_0")(x, train=train)
        b2 = _ConvBNReLU(self.n3x3_reduce, 1, name="b2_0")(x, train=train)
        b2 = _ConvBNReLU(self.n3x3, 3, name="b2_1")(b2, train=train)
        b3 = _ConvBNReLU(self.n5x5_reduce, 1, name="b3_0")(x, train=train)
        b3 = _ConvBNReLU(self.n5x5, 3, name="b3_1")(b3, train=train)
        b3 = _ConvBNReLU(self.n5x5, 3, name="b3_2")(b3, train=train)
        # Flax pads max-pool windows with -inf, as PyTorch's MaxPool2d(3, stride=1, padding=1).
        b4 = nn.max_pool(x, (3, 3), strides=(1, 1), padding=((1, 1), (1, 1)))
        b4 = _ConvBNReLU(self.pool_proj, 1, name="b4_1")(b4, train=train)
        return jnp.concatenate([b1, b2, b3, b4], axis=-1)


class GoogLeNet(nn.Module):
    """GoogLeNet pre-classifier for 32x32 images (kuangliu's CIFAR variant, no auxiliary heads).

    ``conv3x3(192) -> BN -> ReLU -> a3, b3 -> maxpool(3, s2) -> a4..e4 -> maxpool(3, s2) -> a5, b5
    -> global average pool`` (the reference's ``AvgPool2d(8)`` on the final 8x8 map; identical on
    32x32). With the 10-class head the model has 6,166,250 parameters (Alrao paper's Table 2:
    6.166M). Every width is scaled by ``width_multiplier`` (Alrao's ``gamma``, 3 in its Fig. 8).

    Shapes: input ``(B, H, W, 3)`` NHWC float; output ``(B, 1024 * width_multiplier)``.

    Attributes:
      width_multiplier: scales every layer's width.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> shapes = jax.eval_shape(GoogLeNet().init, jax.random.key(0), jnp.zeros((2, 32, 32, 3)))

    References:
      Szegedy et al, Going Deeper with Convolutions <https://arxiv.org/abs/1409.4842>, 2014; CIFAR
      variant of https://github.com/kuangliu/pytorch-cifar as used by Blier et al, Learning with
      Random Learning Rates <https://arxiv.org/abs/1810.01322>, 2018.
    """

    width_multiplier: float = 1.0

    def __post_init__(self) -> None:
        check_width_multiplier(self.width_multiplier)
        super().__post_init__()

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
        def inception(name: str) -> Inception:
            widths = (scale_width(w, self.width_multiplier) for w in GOOGLENET_CIFAR_CFG[name])
            return Inception(*widths, name=name)

        def maxpool(y: jax.Array) -> jax.Array:
            return nn.max_pool(y, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))

        x = _ConvBNReLU(scale_width(192, self.width_multiplier), 3, name="stem")(x, train=train)
        for name in ("a3", "b3"):
            x = inception(name)(x, train=train)
        x = maxpool(x)
        for name in ("a4", "b4", "c4", "d4", "e4"):
            x = inception(name)(x, train=train)
        x = maxpool(x)
        for name in ("a5", "b5"):
            x = inception(name)(x, train=train)
        return global_avg_pool(x)
