"""Whole splits in memory, through TFDS random-access data sources (``builder.as_data_source``).

Embedded datasets are built into the TFDS data dir on first use; public ones must have been prepared
there in the ``array_record`` format, which is checked locally (no GCS lookups, no downloads) so
that a missing dataset fails at once with instructions.
"""

from __future__ import annotations

import os

import numpy as np
import tensorflow_datasets as tfds
from tensorflow_datasets.core import file_adapters

from randlr_jax import _checks as checks
from randlr_jax.data._digits import Digits
from randlr_jax.data._embedded import FILE_FORMAT, prepared_builder
from randlr_jax.data._mnist1d import Mnist1d
from randlr_jax.data._shakespeare import ShakespeareChar
from randlr_jax.data._shakespeare_word import ShakespeareWord
from randlr_jax.data._specs import DatasetSpec, check_split, parse_name
from randlr_jax.training._batching import check_seed, common_length

_EMBEDDED_BUILDERS = {
    "mnist1d": Mnist1d,
    "digits": Digits,
    "shakespeare_char": ShakespeareChar,
    "shakespeare_word": ShakespeareWord,
}


class DatasetNotPreparedError(FileNotFoundError):
    """A public TFDS dataset is not prepared (in ``array_record`` format) in the TFDS data dir."""


def _check_data_dir(data_dir: str | os.PathLike | None) -> str | None:
    """``None`` or a non-empty path that is not a file (checked before TFDS sees it); as ``str``."""
    data_dir = checks.path("data_dir", data_dir, optional=True)
    if data_dir is not None and os.path.exists(data_dir) and not os.path.isdir(data_dir):
        raise NotADirectoryError(
            f"data_dir must be a TFDS data directory (or a path where one can be made), got "
            f"{data_dir!r}: a file."
        )
    return data_dir


def _resolved_data_dir(data_dir: str | None) -> str:
    if data_dir is not None:
        return os.fspath(data_dir)
    return os.environ.get("TFDS_DATA_DIR") or tfds.core.constants.DATA_DIR


def _require_prepared(builder: tfds.core.DatasetBuilder, name: str, data_dir: str | None) -> None:
    """Raise :class:`DatasetNotPreparedError` unless ``builder`` has random-access files on disk.

    Only local files are looked at (``dataset_info.json`` in the builder's version directory).
    """
    root = _resolved_data_dir(data_dir)
    prepare = (
        f"On a machine with internet access: pip install 'randlr_jax[tf]', then\n"
        f"  tfds build {name} --data_dir {root} --file_format {FILE_FORMAT}\n"
        f"(or tfds.builder({name!r}, data_dir={root!r}, file_format={FILE_FORMAT!r})"
        f".download_and_prepare()), and copy {os.path.join(root, name.split('/')[0])} here."
    )
    if not builder.is_prepared():
        raise DatasetNotPreparedError(
            f"dataset {name!r} is not prepared in the TFDS data dir {root!r} (no "
            f"{os.path.join(os.fspath(builder.data_dir), 'dataset_info.json')}). {prepare}"
        )
    formats = set(builder.info.available_file_formats())
    if builder.info.file_format is not None:
        formats.add(builder.info.file_format)
    if not formats & file_adapters.FileFormat.with_random_access():
        formats = sorted(getattr(f, "value", str(f)) for f in formats)
        raise DatasetNotPreparedError(
            f"dataset {name!r} in the TFDS data dir {root!r} is stored as {formats}, "
            f"but random access needs {FILE_FORMAT!r}. Convert it with\n"
            f"  tfds convert_format --dataset_dir {builder.data_dir} --out_file_format "
            f"{FILE_FORMAT}\nor rebuild it. {prepare}"
        )


def get_builder(name: str, *, data_dir: str | None = None) -> tfds.core.DatasetBuilder:
    """The prepared TFDS builder of ``name``, building an embedded dataset on first use.

    Args:
      name: a key of :data:`DATASETS`, optionally with a config (``"mnist1d/large"``).
      data_dir: TFDS data dir; ``None`` for ``$TFDS_DATA_DIR``, else TFDS's default
        (``~/tensorflow_datasets``).

    Returns:
      A builder whose files are on disk (``builder.as_data_source()`` works).

    Raises:
      ValueError: unknown dataset or config, a ``data_dir`` that is not a path.
      NotADirectoryError: ``data_dir`` is a file.
      DatasetNotPreparedError: a public dataset that is not prepared in ``data_dir``.
    """
    spec, config = parse_name(name)
    data_dir = _check_data_dir(data_dir)
    if spec.embedded:
        return prepared_builder(_EMBEDDED_BUILDERS[spec.name], config, data_dir)
    builder = tfds.builder(name, data_dir=data_dir, try_gcs=False)
    _require_prepared(builder, name, data_dir)
    return builder


def _stack(values: list, feature: tfds.features.FeatureConnector) -> np.ndarray:
    if isinstance(feature, tfds.features.Text):
        texts = [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in values]
        array = np.empty(len(texts), dtype=object)
        array[:] = texts
        return array
    if not values:
        return np.zeros((0, *feature.shape), dtype=feature.np_dtype)
    return np.stack([np.asarray(v) for v in values]).astype(feature.np_dtype, copy=False)


def load_arrays(name: str, split: str, *, data_dir: str | None = None) -> dict[str, np.ndarray]:
    """A whole split in memory, one array per TFDS feature, examples in stored order.

    Numeric features keep their TFDS dtype and shape (``(num_examples, *feature_shape)``); text
    features are object arrays of Python ``str``. The split is read one example at a time from the
    random-access source. A classification dataset's input and label features (TFDS's own names,
    e.g. ``"image"`` and ``"label"``: ``spec.input_feature``, ``spec.label_feature``) are returned as
    ``"x"`` and ``"y"``, the names every step and :func:`~randlr_jax.training.fit` read (raw: see
    :func:`load_supervised` for model-ready arrays); other features keep their names.

    Args:
      name: a key of :data:`DATASETS`, optionally with a config (``"mnist1d/large"``).
      split: one of the dataset's ``spec.splits``.
      data_dir: TFDS data dir (``None``: ``$TFDS_DATA_DIR``, else TFDS's default).

    Returns:
      ``{feature_name: array}``, with ``"x"`` and ``"y"`` for a classification dataset.

    Raises:
      ValueError: unknown dataset, config or split.
      DatasetNotPreparedError: a public dataset that is not prepared in ``data_dir``.

    Example:
      >>> sorted(load_arrays("digits", "test"))
      ['index', 'x', 'y']
    """
    spec, _ = parse_name(name)
    check_split(spec, split)
    data_dir = _check_data_dir(data_dir)
    builder = get_builder(name, data_dir=data_dir)
    source = builder.as_data_source(split=split)
    # One at a time: decoding dominates either way, and the source that tfds.testing.mock_data puts
    # in place has a broken batched ``__getitems__``.
    examples = [source[i] for i in range(len(source))]
    features = builder.info.features
    names = _canonical_names(spec)
    return {
        names.get(key, key): _stack([ex[key] for ex in examples], features[key])
        for key in features.keys()
    }


def _canonical_names(spec: DatasetSpec) -> dict[str, str]:
    """TFDS feature name -> the library's name: a classification dataset's input ``"x"``, label ``"y"``."""
    if spec.kind != "classification":
        return {}
    return {spec.input_feature: "x", spec.label_feature: "y"}


def supervised_from_arrays(
    spec: DatasetSpec, arrays: dict[str, np.ndarray]
) -> dict[str, np.ndarray]:
    """Model-ready ``{"x": float32, "y": int32}`` from the raw ``{"x", "y"}`` of :func:`load_arrays`.

    ``x = (raw / spec.scale - spec.mean) / spec.std`` per channel (last axis) for image datasets;
    inputs with ``spec.scale is None`` (``mnist1d``) are only cast to float32.
    """
    if spec.kind != "classification":
        raise ValueError(
            f"name must be a classification dataset, got {spec.name!r}: a {spec.kind} dataset; "
            "supervised arrays exist only for classification datasets (use load_tokens for language "
            "models)."
        )
    x = np.asarray(arrays["x"], dtype=np.float32)
    if spec.scale is not None:
        x = x / np.float32(spec.scale)
    if spec.mean is not None and spec.std is not None:
        x = (x - np.asarray(spec.mean, np.float32)) / np.asarray(spec.std, np.float32)
    y = np.asarray(arrays["y"], dtype=np.int32)
    return {"x": x.astype(np.float32, copy=False), "y": y}


def load_supervised(name: str, split: str, *, data_dir: str | None = None) -> dict[str, np.ndarray]:
    """A split of a classification dataset as model-ready arrays.

    Images are scaled to ``[0, 1]`` and standardised per channel with the dataset's training
    statistics (``spec.mean``, ``spec.std`` in :data:`DATASETS`): ``x = (raw / scale - mean) /
    std``. ``mnist1d`` is used as generated (the package standardises it already).

    Args:
      name: a classification dataset of :data:`DATASETS`, optionally with a config.
      split: one of the dataset's splits.
      data_dir: TFDS data dir (``None``: ``$TFDS_DATA_DIR``, else TFDS's default).

    Returns:
      ``{"x": (n, *spec.input_shape) float32, "y": (n,) int32}``.

    Raises:
      ValueError: unknown dataset/split, or a language-model dataset.
      DatasetNotPreparedError: a public dataset that is not prepared in ``data_dir``.

    Example:
      >>> load_supervised("digits", "test")["x"].shape
      (360, 8, 8, 1)
    """
    spec, _ = parse_name(name)
    if spec.kind != "classification":
        supervised_from_arrays(spec, {})  # raises the message for language models
    return supervised_from_arrays(spec, load_arrays(name, split, data_dir=data_dir))


def _check_validation_size(validation_size: int | float, *, optional: bool = False) -> None:
    """What can be checked without the data: an int count ``>= 0`` or a float fraction in
    ``[0, 1)`` (``optional``: or ``None``)."""
    if optional and validation_size is None:
        return
    if isinstance(validation_size, (bool, np.bool_)) or not isinstance(
        validation_size, (int, float, np.integer, np.floating)
    ):
        raise ValueError(
            f"validation_size must be {'None, ' if optional else ''}an int count or a float "
            f"fraction, got {validation_size!r}."
        )
    if isinstance(validation_size, (float, np.floating)):
        if not 0.0 <= validation_size < 1.0:
            raise ValueError(
                f"validation_size as a fraction must lie in [0, 1), got {validation_size!r}."
            )
    elif validation_size < 0:
        raise ValueError(f"validation_size as a count must be >= 0, got {validation_size!r}.")


def _validation_count(validation_size: int | float, num_train: int) -> int:
    _check_validation_size(validation_size)
    if isinstance(validation_size, (float, np.floating)):
        return int(round(float(validation_size) * num_train))
    if not 0 <= validation_size < num_train:
        raise ValueError(
            f"validation_size as a count must lie in [0, {num_train}) (the training split has "
            f"{num_train} examples), got {validation_size!r}."
        )
    return int(validation_size)


def carve_validation(
    arrays: dict[str, np.ndarray], validation_size: int | float, *, seed: int = 0
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Split ``arrays`` into (train, validation) by a seeded permutation of the examples.

    The first ``validation_size`` entries of ``np.random.default_rng(seed).permutation(n)`` form the
    validation set, the rest the training set; both keep the original order of the examples.

    Args:
      arrays: a dict of arrays with a common leading dimension ``n``.
      validation_size: an int count in ``[0, n)`` or a float fraction in ``[0, 1)`` (rounded).
      seed: non-negative int seeding the permutation.

    Returns:
      ``(train, validation)`` dicts with the keys of ``arrays``.
    """
    num_examples = common_length(arrays)
    count = _validation_count(validation_size, num_examples)
    check_seed(seed)
    permutation = np.random.default_rng(seed).permutation(num_examples)
    validation_index = np.sort(permutation[:count])
    train_index = np.sort(permutation[count:])
    return (
        {k: v[train_index] for k, v in arrays.items()},
        {k: v[validation_index] for k, v in arrays.items()},
    )


def train_val_test(
    name: str,
    *,
    validation_size: int | float | None = None,
    seed: int = 0,
    data_dir: str | None = None,
) -> dict[str, dict[str, np.ndarray]]:
    """Model-ready train / validation / test splits of a classification dataset.

    The validation set is carved from ``train`` by :func:`carve_validation` (seeded permutation);
    the papers' CIFAR-10 protocol of 40,000 / 10,000 is ``validation_size=10_000``. A dataset with
    its own ``validation`` split uses it.

    Args:
      name: a classification dataset of :data:`DATASETS`, optionally with a config.
      validation_size: examples moved from train to validation: an int count, a float fraction of
        train, or ``None`` for the dataset's default ``spec.validation_size`` (10,000 for MNIST,
        Fashion-MNIST and CIFAR; 10% otherwise). Must be ``None`` for a dataset with its own
        validation split.
      seed: non-negative int seeding the carve.
      data_dir: TFDS data dir (``None``: ``$TFDS_DATA_DIR``, else TFDS's default).

    Returns:
      ``{"train": {"x", "y"}, "validation": {"x", "y"}, "test": {"x", "y"}}`` as in
      :func:`load_supervised`.

    Raises:
      ValueError: unknown dataset, a language-model dataset, or an invalid
        ``validation_size``/``seed``/``data_dir``: all but a count larger than the training split
        checked before any dataset is built or read.
      NotADirectoryError: ``data_dir`` is a file.

    Example:
      >>> splits = train_val_test("mnist1d", validation_size=500)
      >>> len(splits["train"]["y"]), len(splits["validation"]["y"]), len(splits["test"]["y"])
      (3500, 500, 1000)
    """
    spec, _ = parse_name(name)
    if spec.kind != "classification":
        supervised_from_arrays(spec, {})  # raises the message for language models
    _check_validation_size(validation_size, optional=True)
    if spec.has_validation_split and validation_size is not None:
        raise ValueError(
            f"validation_size must be None for {spec.name!r}, which has its own validation "
            f"split; got {validation_size!r}."
        )
    check_seed(seed)
    data_dir = _check_data_dir(data_dir)
    test = load_supervised(name, "test", data_dir=data_dir)
    train = load_supervised(name, "train", data_dir=data_dir)
    if spec.has_validation_split:
        validation = load_supervised(name, "validation", data_dir=data_dir)
        return {"train": train, "validation": validation, "test": test}
    if validation_size is None:
        validation_size = spec.validation_size
    train, validation = carve_validation(train, validation_size, seed=seed)
    return {"train": train, "validation": validation, "test": test}
