"""``load_splits(config)``: the in-memory splits of a :class:`~randlr_jax.runner.TrainConfig`, cached.

A study trains many runs on the same data (an SGD grid, Adam and Alrao per seed; a dozen intervals): the
splits are loaded once and shared. The cache is keyed by everything that determines them -- the
dataset, the data directory (``config.data_dir``, else ``$TFDS_DATA_DIR`` as it is at the call), the
validation size, the seed of the carve and the language-model cut -- and holds the few most recent.
The cached arrays are read-only: a caller that changes one in place gets an error, not a silently
different data set for the next run.
"""

from __future__ import annotations

import collections
import os
import threading
from typing import Any

import numpy as np

from randlr_jax import _checks as checks

# The newest few: a study's settings one after the other (the char LSTM's text is the big one).
CACHE_SIZE = 4
_CACHE: collections.OrderedDict[tuple, tuple[dict, Any, str]] = collections.OrderedDict()
_LOCK = threading.Lock()


def load_splits(
    config: Any, *, max_train_tokens: int | None = None, cache: bool = True
) -> tuple[dict, Any, str]:
    """The splits, the dataset spec and the task of ``config.dataset``.

    Classification: ``randlr_jax.data.train_val_test`` (validation carved from train by
    ``config.validation_size`` with ``config.loop.seed``). Language model: the token streams of every
    split of the dataset; with ``max_train_tokens = n``, only the first ``n`` training tokens and the
    first ``max(n // 10, 2000)`` validation and test tokens are kept (a CPU-sized budget of the same
    data; the cut is part of what a run's fingerprint hashes).

    Args:
      config: a :class:`~randlr_jax.runner.TrainConfig`.
      max_train_tokens: language models only: the training tokens kept (``None``: all of them).
      cache: reuse (and keep) the splits of an earlier call with the same data settings (see the
        module's docstring); ``False``: load afresh, nothing kept.

    Returns:
      ``(splits, spec, task)``: ``splits`` as :func:`~randlr_jax.training.fit` takes them (numpy,
      read-only when cached), the ``randlr_jax.data`` spec, and ``"classification"`` or
      ``"language_model"``.

    Raises:
      ValueError: ``max_train_tokens`` not a positive int or ``None``; a ``max_train_tokens`` for a
        classification dataset; and whatever ``randlr_jax.data`` raises for the dataset.
    """
    checks.positive_int("max_train_tokens", max_train_tokens, optional=True)
    checks.boolean("cache", cache)
    if not cache:
        return _load(config, max_train_tokens)
    data_dir = config.data_dir or os.environ.get("TFDS_DATA_DIR")
    size = config.validation_size
    key = (
        config.dataset,
        None if data_dir is None else os.path.abspath(data_dir),
        (type(size).__name__, size),  # 400 examples and a fraction 0.4 are different carves
        config.loop.seed,
        max_train_tokens,
    )
    with _LOCK:
        if key in _CACHE:
            _CACHE.move_to_end(key)
            return _CACHE[key]
    loaded = _load(config, max_train_tokens)
    splits, spec, task = loaded
    for array in _arrays(splits):
        array.setflags(write=False)
    with _LOCK:
        _CACHE[key] = loaded
        while len(_CACHE) > CACHE_SIZE:
            _CACHE.popitem(last=False)
    return loaded


def clear_split_cache() -> None:
    """Forget every cached split (e.g. after the data on disk changed)."""
    with _LOCK:
        _CACHE.clear()


def _load(config: Any, max_train_tokens: int | None) -> tuple[dict, Any, str]:
    from randlr_jax import data as rdata

    spec = rdata.get_spec(config.dataset)
    if spec.kind == "language_model":
        splits = {
            split: rdata.load_tokens(config.dataset, split, data_dir=config.data_dir)
            for split in spec.splits
        }
        if max_train_tokens is not None:
            held_out = max(max_train_tokens // 10, 2000)
            splits = {
                split: tokens[: max_train_tokens if split == "train" else held_out]
                for split, tokens in splits.items()
            }
        return splits, spec, "language_model"
    if max_train_tokens is not None:
        raise ValueError(
            f"max_train_tokens cuts a language model's text; {config.dataset!r} is a "
            f"classification dataset, got max_train_tokens={max_train_tokens!r}."
        )
    splits = rdata.train_val_test(
        config.dataset,
        validation_size=config.validation_size,
        seed=config.loop.seed,
        data_dir=config.data_dir,
    )
    return splits, spec, "classification"


def _arrays(splits: dict) -> list[np.ndarray]:
    out = []
    for split in splits.values():
        for array in split.values() if isinstance(split, dict) else (split,):
            if isinstance(array, np.ndarray):
                out.append(array)
    return out
