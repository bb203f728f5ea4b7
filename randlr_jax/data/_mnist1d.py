"""MNIST-1D as a TFDS builder, generated locally by the ``mnist1d`` package (no download)."""

from __future__ import annotations

import dataclasses

import numpy as np
import tensorflow_datasets as tfds

from randlr_jax.data._embedded import EmbeddedBuilder, isolated_global_rngs


@dataclasses.dataclass
class Mnist1dConfig(tfds.core.BuilderConfig):
    """Size of the generated dataset; every other generation argument is the package's default.

    Attributes:
      num_samples: examples generated (``num_samples // 10`` per class).
      num_train: the first ``num_train`` generated examples form ``train``, the rest ``test``.
    """

    num_samples: int = 5000
    num_train: int = 4000


def generate_mnist1d(num_samples: int, num_train: int) -> dict[str, np.ndarray]:
    """MNIST-1D from ``mnist1d.data.make_dataset`` with the package's default arguments.

    The package's defaults (``get_dataset_args()``: seed 42, 5,000 samples, ``train_split=0.8``)
    give the paper's dataset; only ``num_samples`` and the train/test boundary change here. The
    global numpy and Python random states are left as they were.

    Args:
      num_samples: examples to generate (the generator makes ``num_samples // 10`` per class).
      num_train: size of the training split (the first examples of the generator's shuffled order).

    Returns:
      ``{"x_train": (num_train, 40) float32, "y_train": (num_train,) int64, "x_test", "y_test"}``.
    """
    from mnist1d.data import get_dataset_args, make_dataset  # never ``get_dataset``: it downloads

    args = get_dataset_args()
    args.num_samples = num_samples
    args.train_split = num_train / num_samples
    # mnist1d seeds and draws from numpy's and Python's global generators (``set_seed``).
    with isolated_global_rngs():
        data = make_dataset(args)
    # Split ourselves at ``num_train``: ``int(n * train_split)`` could round one example off.
    x = np.concatenate([data["x"], data["x_test"]]).astype(np.float32)
    y = np.concatenate([data["y"], data["y_test"]]).astype(np.int64)
    return {
        "x_train": x[:num_train],
        "y_train": y[:num_train],
        "x_test": x[num_train:],
        "y_test": y[num_train:],
    }


class Mnist1d(EmbeddedBuilder):
    """MNIST-1D (Greydanus & Kobak 2024): 1-D signals of length 40 in 10 classes.

    Configs: ``default`` is the paper's dataset (5,000 samples: 4,000 train / 1,000 test, exactly
    ``mnist1d``'s ``get_dataset_args()`` with ``num_samples=5000, train_split=0.8``); ``large`` is
    70,000 samples (60,000 / 10,000), the size of MNIST. Deterministic (the package's seed 42).
    Features: ``x`` float32 ``(40,)`` (standardised over the whole generated set by the package),
    ``label`` ``ClassLabel(10)``. Examples are stored in the generator's order.

    References:
      Greydanus & Kobak, Scaling Down Deep Learning with MNIST-1D
      <https://arxiv.org/abs/2011.14439>, 2024
    """

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}
    BUILDER_CONFIGS = [
        Mnist1dConfig(
            name="default",
            description="The paper's 5,000 examples (4,000 / 1,000).",
            num_samples=5000,
            num_train=4000,
        ),
        Mnist1dConfig(
            name="large",
            description="70,000 examples (60,000 / 10,000).",
            num_samples=70_000,
            num_train=60_000,
        ),
    ]

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description=self.__doc__,
            features=tfds.features.FeaturesDict(
                {
                    "x": tfds.features.Tensor(shape=(40,), dtype=np.float32),
                    "label": tfds.features.ClassLabel(num_classes=10),
                }
            ),
            supervised_keys=("x", "label"),
            homepage="https://github.com/greydanus/mnist1d",
            citation="Greydanus & Kobak, Scaling Down Deep Learning with MNIST-1D, ICML 2024.",
            metadata=tfds.core.MetadataDict(
                num_samples=self.builder_config.num_samples,
                num_train=self.builder_config.num_train,
                seed=42,
            ),
            disable_shuffling=True,
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        del dl_manager
        config = self.builder_config
        data = generate_mnist1d(config.num_samples, config.num_train)
        return {
            "train": self._generate_examples(data["x_train"], data["y_train"]),
            "test": self._generate_examples(data["x_test"], data["y_test"]),
        }

    def _generate_examples(self, x: np.ndarray, y: np.ndarray):
        for index in range(len(y)):
            yield index, {"x": x[index], "label": int(y[index])}
