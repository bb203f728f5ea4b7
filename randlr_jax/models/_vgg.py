"""CIFAR VGG with BatchNorm (kuangliu/pytorch-cifar, the Alrao paper's VGG19) as a body."""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax

from randlr_jax.models._common import batch_norm, check_width_multiplier, conv3x3, scale_width

# "M" is a 2x2 max-pool with stride 2; an int is conv3x3(int) + BatchNorm + ReLU.
# fmt: off
VGG_CONFIGS: dict[str, tuple[int | str, ...]] = {
    "vgg11": (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    "vgg13": (64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    "vgg16": (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M",
              512, 512, 512, "M"),
    "vgg19": (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M",
              512, 512, 512, 512, "M", 512, 512, 512, 512, "M"),
}
# fmt: on


class VGG(nn.Module):
    """VGG pre-classifier for 32x32 images: ``conv3x3 -> BN -> ReLU`` blocks, max-pools, flatten.

    The default ``cfg`` is VGG19 (16 convolutions, 5 pools); on a 32x32 input the last feature map
    is ``1x1x512``, so the features have 512 entries, and with the 10-class head the model has
    20,040,522 parameters (the Alrao paper's Table 2: 20.041M). Convolutions carry a bias (as the
    reference) and every int in ``cfg`` is scaled by ``width_multiplier``.

    Shapes: input ``(B, H, W, 3)`` NHWC float with ``H, W`` divisible by 32; output
    ``(B, (H/32) * (W/32) * cfg[-2] * width_multiplier)`` (``(B, 512)`` on CIFAR).

    Attributes:
      cfg: layer list, ints for conv widths and ``"M"`` for a max-pool (see ``VGG_CONFIGS``).
      width_multiplier: scales every convolution's width.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> body = VGG()
      >>> shapes = jax.eval_shape(body.init, jax.random.key(0), jnp.zeros((2, 32, 32, 3)))

    References:
      Simonyan & Zisserman, Very Deep Convolutional Networks for Large-Scale Image Recognition
      <https://arxiv.org/abs/1409.1556>, 2014; CIFAR variant of
      https://github.com/kuangliu/pytorch-cifar as used by Blier et al, Learning with Random
      Learning Rates <https://arxiv.org/abs/1810.01322>, 2018.
    """

    cfg: Sequence[int | str] = VGG_CONFIGS["vgg19"]
    width_multiplier: float = 1.0

    def __post_init__(self) -> None:
        if isinstance(self.cfg, str) or not isinstance(self.cfg, Sequence):
            raise ValueError(f"cfg must be a sequence of positive ints and 'M', got {self.cfg!r}.")
        for item in self.cfg:
            if item != "M" and (isinstance(item, bool) or not isinstance(item, int) or item <= 0):
                raise ValueError(
                    f"cfg must hold positive ints and 'M', got {item!r} in cfg={self.cfg!r}."
                )
        check_width_multiplier(self.width_multiplier)
        super().__post_init__()

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
        conv_index = 0
        for item in self.cfg:
            if item == "M":
                x = nn.max_pool(x, (2, 2), strides=(2, 2))
            else:
                width = scale_width(int(item), self.width_multiplier)
                x = conv3x3(width, name=f"conv_{conv_index}")(x)
                x = nn.relu(batch_norm(train, name=f"bn_{conv_index}")(x))
                conv_index += 1
        # The reference's AvgPool2d(kernel_size=1, stride=1) is the identity.
        return x.reshape((x.shape[0], -1))
