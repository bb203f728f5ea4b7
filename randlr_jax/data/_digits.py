"""scikit-learn's 8x8 handwritten digits as a TFDS builder (the data ships with scikit-learn)."""

from __future__ import annotations

import numpy as np
import tensorflow_datasets as tfds

from randlr_jax.data._embedded import EmbeddedBuilder

NUM_TEST = 360
SPLIT_SEED = 0


def digits_split_indices() -> dict[str, np.ndarray]:
    """The fixed train/test assignment of the 1,797 digits.

    ``np.random.RandomState(0).permutation(1797)``: its first 360 entries are ``test``, the other
    1,437 ``train``; each split is kept in the original order. ``RandomState`` streams are frozen by
    NumPy's compatibility policy (NEP 19), so the split does not move across NumPy versions.

    Returns:
      ``{"train": (1437,) int64, "test": (360,) int64}`` indices into
      ``sklearn.datasets.load_digits()``.
    """
    permutation = np.random.RandomState(SPLIT_SEED).permutation(1797)
    return {"train": np.sort(permutation[NUM_TEST:]), "test": np.sort(permutation[:NUM_TEST])}


class Digits(EmbeddedBuilder):
    """The UCI optical-recognition digits shipped with scikit-learn: 1,797 8x8 images in 10 classes.

    Split: 1,437 train / 360 test, fixed (see :func:`digits_split_indices`). Features: ``image``
    uint8 ``(8, 8, 1)`` holding the original 4-bit counts ``0..16`` (divide by 16 for ``[0, 1]``),
    ``label`` ``ClassLabel(10)``, ``index`` int64 (row in ``sklearn.datasets.load_digits()``).

    References:
      Alpaydin & Kaynak, Optical Recognition of Handwritten Digits
      <https://archive.ics.uci.edu/dataset/80>, 1998
    """

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description=self.__doc__,
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Tensor(shape=(8, 8, 1), dtype=np.uint8),
                    "label": tfds.features.ClassLabel(num_classes=10),
                    "index": np.int64,
                }
            ),
            supervised_keys=("image", "label"),
            homepage=(
                "https://scikit-learn.org/stable/modules/generated/sklearn.datasets.load_digits.html"
            ),
            metadata=tfds.core.MetadataDict(split_seed=SPLIT_SEED, num_test=NUM_TEST, max_value=16),
            disable_shuffling=True,
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        del dl_manager
        from sklearn.datasets import load_digits

        digits = load_digits()
        images = digits.images.astype(np.uint8)[..., None]
        labels = digits.target
        return {
            split: self._generate_examples(images, labels, indices)
            for split, indices in digits_split_indices().items()
        }

    def _generate_examples(self, images: np.ndarray, labels: np.ndarray, indices: np.ndarray):
        for index in indices:
            yield (
                int(index),
                {"image": images[index], "label": int(labels[index]), "index": int(index)},
            )
