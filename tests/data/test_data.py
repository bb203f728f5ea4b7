"""Tests of the data layer: embedded TFDS builders, loading, batching (randlr_jax.data).

Everything is built into the session's temporary TFDS data dir (``tfds_data_dir``) or into
``tmp_path``, never into the user's ``~/tensorflow_datasets``.
"""

import os
import random
import time

import chex
import numpy as np
import pytest
import tensorflow_datasets as tfds

from randlr_jax import data
from randlr_jax.data import _loading
from randlr_jax.data._digits import digits_split_indices
from randlr_jax.data._mnist1d import generate_mnist1d
from randlr_jax.data._shakespeare import (
    TEST_WORKS,
    VALIDATION_WORKS,
    corpus_vocabulary,
    document_names,
    shakespeare_split_of_works,
    work_of,
)

EMBEDDED = ("mnist1d", "digits", "shakespeare_char", "shakespeare_word")


def _rng_states():
    return np.random.get_state(), random.getstate()


def _assert_same_rng_states(before, after):
    (np_before, py_before), (np_after, py_after) = before, after
    assert np_before[0] == np_after[0]
    np.testing.assert_array_equal(np_before[1], np_after[1])
    assert np_before[2:] == np_after[2:]
    assert py_before == py_after


# ----------------------------------------------------------------------------------------------
# Embedded builders


def test_mnist1d_default_is_the_packages_dataset(tfds_data_dir):
    train = data.load_arrays("mnist1d", "train", data_dir=tfds_data_dir)
    test = data.load_arrays("mnist1d", "test", data_dir=tfds_data_dir)
    chex.assert_shape(train["x"], (4000, 40))
    chex.assert_shape(test["x"], (1000, 40))
    assert sorted(train) == sorted(test) == ["x", "y"]  # the names every step and fit read
    assert train["x"].dtype == np.float32 and train["y"].shape == (4000,)
    assert set(np.unique(train["y"])) == set(range(10))

    from mnist1d.data import get_dataset_args, make_dataset

    before = _rng_states()
    args = get_dataset_args()
    args.num_samples, args.train_split = 5000, 0.8
    reference = make_dataset(args)
    np.random.set_state(before[0])
    random.setstate(before[1])
    np.testing.assert_array_equal(train["x"], reference["x"].astype(np.float32))
    np.testing.assert_array_equal(train["y"], reference["y"])
    np.testing.assert_array_equal(test["x"], reference["x_test"].astype(np.float32))
    np.testing.assert_array_equal(test["y"], reference["y_test"])


def test_builders_are_deterministic_and_leave_global_rngs_alone(tfds_data_dir, tmp_path):
    np.random.seed(1234)
    random.seed(1234)
    before = _rng_states()
    for name in EMBEDDED:
        spec = data.get_spec(name)
        for split in spec.splits:
            fresh = data.load_arrays(name, split, data_dir=str(tmp_path))
            shared = data.load_arrays(name, split, data_dir=tfds_data_dir)
            assert fresh.keys() == shared.keys()
            for key in fresh:
                np.testing.assert_array_equal(fresh[key], shared[key], err_msg=f"{name}/{split}")
    _assert_same_rng_states(before, _rng_states())
    assert os.path.isfile(tmp_path / "mnist1d" / "default" / "1.0.0" / "dataset_info.json")


def test_second_use_reuses_the_built_files(tfds_data_dir, monkeypatch):
    data.load_arrays("digits", "test", data_dir=tfds_data_dir)
    info_file = os.path.join(
        data.get_builder("digits", data_dir=tfds_data_dir).data_dir, "dataset_info.json"
    )
    stamp = os.stat(info_file).st_mtime_ns

    def fail(*args, **kwargs):
        raise AssertionError("rebuilt")

    monkeypatch.setattr(data.Digits, "_split_generators", fail)
    assert len(data.load_arrays("digits", "test", data_dir=tfds_data_dir)["y"]) == 360
    assert os.stat(info_file).st_mtime_ns == stamp


def test_mnist1d_large_config_sizes():
    large = data.Mnist1d.builder_configs["large"]
    assert (large.num_samples, large.num_train) == (70_000, 60_000)
    default = data.Mnist1d.builder_configs["default"]
    assert (default.num_samples, default.num_train) == (5000, 4000)
    # The split boundary is exact whatever the sizes (70,000 is too slow to build here: ~30 s).
    small = generate_mnist1d(100, 70)
    chex.assert_shape((small["x_train"], small["x_test"]), ((70, 40), (30, 40)))
    assert data.get_spec("mnist1d/large") is data.DATASETS["mnist1d"]


def test_digits_split_and_standardisation(tfds_data_dir):
    from sklearn.datasets import load_digits

    digits = load_digits()
    indices = digits_split_indices()
    assert len(np.intersect1d(indices["train"], indices["test"])) == 0
    for split, size in (("train", 1437), ("test", 360)):
        arrays = data.load_arrays("digits", split, data_dir=tfds_data_dir)
        assert sorted(arrays) == ["index", "x", "y"]  # TFDS's "image" and "label" renamed
        chex.assert_shape(arrays["x"], (size, 8, 8, 1))
        assert arrays["x"].dtype == np.uint8
        np.testing.assert_array_equal(arrays["index"], indices[split])
        np.testing.assert_array_equal(arrays["x"][..., 0], digits.images[indices[split]])
        np.testing.assert_array_equal(arrays["y"], digits.target[indices[split]])
    train = data.load_supervised("digits", "train", data_dir=tfds_data_dir)
    assert train["x"].dtype == np.float32 and train["y"].dtype == np.int32
    # The documented channel statistics are the training split's.
    np.testing.assert_allclose(train["x"].mean(), 0.0, atol=1e-3)
    np.testing.assert_allclose(train["x"].std(), 1.0, atol=1e-3)


def test_shakespeare_splits_vocabulary_and_round_trip(tfds_data_dir):
    assert shakespeare_split_of_works() == {
        "test": TEST_WORKS,
        "validation": VALIDATION_WORKS,
        "train": shakespeare_split_of_works()["train"],
    }
    assert len(document_names()) == 77
    documents = {}
    for split, size in (("train", 63), ("validation", 7), ("test", 7)):
        arrays = data.load_arrays("shakespeare_char", split, data_dir=tfds_data_dir)
        assert len(arrays["text"]) == size
        documents[split] = list(arrays["document"])
    works = {split: {work_of(d) for d in names} for split, names in documents.items()}
    assert not (works["train"] & works["test"]) and not (works["train"] & works["validation"])
    assert not (works["validation"] & works["test"])
    assert sorted(sum(documents.values(), [])) == list(document_names())

    builder = data.get_builder("shakespeare_char", data_dir=tfds_data_dir)
    vocabulary = data.load_vocabulary("shakespeare_char", data_dir=tfds_data_dir)
    assert builder.info.metadata["vocabulary"] == corpus_vocabulary() == vocabulary.characters
    assert vocabulary.size == data.get_spec("shakespeare_char").num_classes == 88
    assert list(vocabulary.characters) == sorted(set(vocabulary.characters))

    tokens = data.load_tokens("shakespeare_char", "validation", data_dir=tfds_data_dir)
    texts = data.load_arrays("shakespeare_char", "validation", data_dir=tfds_data_dir)["text"]
    assert tokens.dtype == np.int32 and tokens.ndim == 1
    assert vocabulary.decode(tokens) == "\n".join(texts)
    unknown = vocabulary.encode("a\u00e9\u4e2d")  # outside the corpus
    assert vocabulary.decode(unknown) == "a??"


def test_char_vocabulary_validates():
    with pytest.raises(ValueError, match="characters"):
        data.CharVocabulary("ba?")
    with pytest.raises(ValueError, match="unknown"):
        data.CharVocabulary("ab", unknown="?")
    with pytest.raises(ValueError, match="ids"):
        data.CharVocabulary("?ab").decode(np.array([3]))


# ----------------------------------------------------------------------------------------------
# Registry and errors


def test_registry_is_consistent():
    expected = {
        "mnist1d",
        "digits",
        "shakespeare_char",
        "shakespeare_word",
        "mnist",
        "fashion_mnist",
        "cifar10",
        "cifar100",
        "svhn_cropped",
        "tiny_shakespeare",
    }
    assert set(data.DATASETS) == expected
    for name, spec in data.DATASETS.items():
        assert spec.name == name and spec.kind in ("classification", "language_model")
        assert spec.embedded == (name in EMBEDDED)
        assert "train" in spec.splits and "test" in spec.splits
        if spec.kind == "language_model":
            assert spec.label_feature is None and spec.vocab_size == spec.num_classes
            assert spec.has_validation_split and spec.validation_size is None
        elif spec.mean is not None:
            assert len(spec.mean) == len(spec.std) == spec.input_shape[-1]


def test_unknown_names_splits_and_configs_are_rejected(tfds_data_dir):
    with pytest.raises(ValueError, match="known datasets.*cifar10"):
        data.load_arrays("imagenet", "train", data_dir=tfds_data_dir)
    with pytest.raises(ValueError, match="split 'validation'.*allowed"):
        data.load_arrays("mnist1d", "validation", data_dir=tfds_data_dir)
    with pytest.raises(ValueError, match="config 'huge'"):
        data.load_arrays("mnist1d/huge", "train", data_dir=tfds_data_dir)
    with pytest.raises(ValueError, match="language"):
        data.load_supervised("shakespeare_char", "train", data_dir=tfds_data_dir)
    with pytest.raises(ValueError, match="classification"):
        data.load_tokens("digits", "train", data_dir=tfds_data_dir)


@pytest.mark.parametrize("name", ["mnist", "cifar10"])
def test_unprepared_public_dataset_fails_fast_with_instructions(tmp_path, name):
    start = time.monotonic()
    with pytest.raises(data.DatasetNotPreparedError) as error:
        data.train_val_test(name, data_dir=str(tmp_path))
    assert time.monotonic() - start < 10.0
    message = str(error.value)
    assert repr(name) in message and str(tmp_path) in message and f"tfds build {name}" in message


@pytest.mark.parametrize("name, shape", [("mnist", (28, 28, 1)), ("cifar10", (32, 32, 3))])
def test_public_datasets_through_mocked_tfds(tmp_path, monkeypatch, name, shape):
    # mock_data fakes the records, not the files that mark a dataset prepared.
    monkeypatch.setattr(_loading, "_require_prepared", lambda *args, **kwargs: None)
    spec = data.get_spec(name)
    with tfds.testing.mock_data(num_examples=6):
        raw = data.load_arrays(name, "train", data_dir=str(tmp_path))
        supervised = data.load_supervised(name, "train", data_dir=str(tmp_path))
        splits = data.train_val_test(name, validation_size=2, data_dir=str(tmp_path))
    chex.assert_shape(supervised["x"], (6, *shape))
    chex.assert_shape(supervised["y"], (6,))
    assert supervised["x"].dtype == np.float32 and supervised["y"].dtype == np.int32
    assert {"x", "y"} <= set(raw) and "image" not in raw and "label" not in raw
    expected = (raw["x"] / np.float32(255) - np.float32(spec.mean)) / np.float32(spec.std)
    np.testing.assert_allclose(supervised["x"], expected, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(supervised["y"], raw["y"])
    assert [len(splits[s]["y"]) for s in ("train", "validation", "test")] == [4, 2, 6]


# ----------------------------------------------------------------------------------------------
# Validation carve


def test_train_val_test_carve(tfds_data_dir):
    full = data.load_supervised("mnist1d", "train", data_dir=tfds_data_dir)
    splits = data.train_val_test("mnist1d", validation_size=500, seed=3, data_dir=tfds_data_dir)
    train, validation = splits["train"], splits["validation"]
    assert [len(splits[s]["y"]) for s in ("train", "validation", "test")] == [3500, 500, 1000]
    rows = lambda x: {r.tobytes() for r in x}  # noqa: E731
    assert len(rows(full["x"])) == 4000  # the rows identify the examples
    assert not rows(train["x"]) & rows(validation["x"])
    assert rows(train["x"]) | rows(validation["x"]) == rows(full["x"])
    # The carve is a pure function of (arrays, size, seed).
    chex.assert_trees_all_equal(data.carve_validation(full, 500, seed=3), (train, validation))
    other_train, other_validation = data.carve_validation(full, 0.1, seed=4)
    assert (len(other_train["y"]), len(other_validation["y"])) == (3600, 400)
    assert rows(other_validation["x"]) != rows(validation["x"])
    for bad in (4000, -1, 1.5, "10", True):
        with pytest.raises(ValueError, match="validation_size"):
            data.carve_validation(full, bad)
    with pytest.raises(ValueError, match="language"):
        data.train_val_test("shakespeare_char", data_dir=tfds_data_dir)


# ----------------------------------------------------------------------------------------------
# Batching


def _arrays(n):
    return {"x": np.arange(n * 3, dtype=np.float32).reshape(n, 3), "y": np.arange(n)}


@pytest.mark.parametrize(
    "n, batch_size, drop",
    [(10, 3, False), (10, 3, True), (12, 4, False), (7, 7, True), (1, 1, False)],
)
def test_batch_iterator_epochs(n, batch_size, drop):
    arrays = _arrays(n)
    kwargs = dict(shuffle=True, seed=5, drop_remainder=drop)
    epoch0 = list(data.batch_iterator(arrays, batch_size, epoch=0, **kwargs))
    assert len(epoch0) == data.num_batches(n, batch_size, drop)
    seen = np.concatenate([b["y"] for b in epoch0])
    assert len(seen) == (n - n % batch_size if drop else n)
    assert len(np.unique(seen)) == len(seen)  # each example at most once, all when not dropping
    for batch in epoch0:
        np.testing.assert_array_equal(batch["x"][:, 0], 3 * batch["y"])  # rows stay together
    chex.assert_trees_all_equal(
        epoch0, list(data.batch_iterator(arrays, batch_size, epoch=0, **kwargs))
    )
    for start in range(len(epoch0) + 1):
        resumed = list(
            data.batch_iterator(arrays, batch_size, epoch=0, start_batch=start, **kwargs)
        )
        chex.assert_trees_all_equal(resumed, epoch0[start:])


def test_batch_iterator_order_depends_on_seed_and_epoch_only():
    arrays = _arrays(50)

    def order(**kwargs):
        batches = data.batch_iterator(arrays, 10, drop_remainder=False, **kwargs)
        return np.concatenate([b["y"] for b in batches])

    base = order(shuffle=True, seed=0, epoch=0)
    assert sorted(base) == list(range(50))
    assert not np.array_equal(base, order(shuffle=True, seed=0, epoch=1))
    assert not np.array_equal(base, order(shuffle=True, seed=1, epoch=0))
    np.testing.assert_array_equal(order(shuffle=False, seed=0, epoch=3), np.arange(50))


def test_batch_iterator_rejects_bad_arguments():
    arrays = _arrays(8)
    common = dict(shuffle=True, seed=0, epoch=0, drop_remainder=False)
    for bad in (0, -2, 9, 2.0):
        with pytest.raises(ValueError, match="batch_size"):
            data.batch_iterator(arrays, bad, **common)
    with pytest.raises(ValueError, match="start_batch"):
        data.batch_iterator(arrays, 3, start_batch=4, **common)
    with pytest.raises(ValueError, match="seed"):
        data.batch_iterator(arrays, 3, **{**common, "seed": -1})
    with pytest.raises(ValueError, match="leading dimension"):
        data.batch_iterator({"x": np.zeros(3), "y": np.zeros(4)}, 2, **common)
    with pytest.raises(ValueError, match="batch_size"):
        data.num_batches(8, 0, False)


@pytest.mark.parametrize(
    "num_tokens, batch_size, seq_len", [(100, 2, 10), (1000, 7, 13), (33, 4, 7), (50, 1, 48)]
)
def test_lm_batches_are_contiguous_streams(num_tokens, batch_size, seq_len):
    rng = np.random.default_rng(num_tokens)
    tokens = rng.integers(0, 50, num_tokens).astype(np.int32)
    batches = list(data.lm_batch_iterator(tokens, batch_size, seq_len))
    count = data.lm_num_batches(num_tokens, batch_size, seq_len)
    assert len(batches) == count == (num_tokens // batch_size - 1) // seq_len
    stream_length = num_tokens // batch_size
    streams = tokens[: batch_size * stream_length].reshape(batch_size, stream_length)
    for batch in batches:
        chex.assert_shape((batch["x"], batch["y"]), ((batch_size, seq_len),) * 2)
        assert batch["x"].dtype == batch["y"].dtype == np.int32
        np.testing.assert_array_equal(batch["y"][:, :-1], batch["x"][:, 1:])
    # Windows of a stream, concatenated, are the stream itself; y is x shifted by one token.
    xs = np.concatenate([b["x"] for b in batches], axis=1)
    ys = np.concatenate([b["y"] for b in batches], axis=1)
    np.testing.assert_array_equal(xs, streams[:, : count * seq_len])
    np.testing.assert_array_equal(ys, streams[:, 1 : count * seq_len + 1])
    for start in (0, count // 2, count):
        resumed = list(data.lm_batch_iterator(tokens, batch_size, seq_len, start_batch=start))
        chex.assert_trees_all_equal(resumed, batches[start:])


def test_lm_batch_iterator_rejects_bad_arguments():
    tokens = np.arange(20, dtype=np.int32)
    assert data.lm_num_batches(20, 4, 5) == 0
    with pytest.raises(ValueError, match="batch_size"):
        data.lm_batch_iterator(tokens, 4, 5)
    with pytest.raises(ValueError, match="batch_size"):
        data.lm_batch_iterator(tokens, 0, 5)
    with pytest.raises(ValueError, match="seq_len"):
        data.lm_batch_iterator(tokens, 2, -1)
    with pytest.raises(ValueError, match="start_batch"):
        data.lm_batch_iterator(tokens, 2, 3, start_batch=4)
    with pytest.raises(ValueError, match="1-D integer"):
        data.lm_batch_iterator(tokens.astype(np.float32), 2, 3)
