"""Batching of in-memory splits for one task, shared by :func:`~randlr_jax.training.fit` and the
vmapped learning-rate population (:mod:`randlr_jax.training`).

Classification splits are ``{"x", "y"}`` arrays, read in a per-epoch order that depends only on
``(seed, epoch)`` (so a run resumes mid-epoch exactly); language-model splits are 1-D token arrays cut into
``batch_size`` contiguous streams read in windows of ``seq_len`` (truncated backprop through time).

The splits are checked once, on the host, before any training (:func:`check_splits`,
:meth:`SplitFeed.check_labels`): labels are integer class ids ``(N,)`` in ``[0, K)``, tokens in
``[0, vocab)``, inputs finite; a bad value fails here with its split and index instead of deep inside a
jitted step (or, worse, silently: JAX clamps out-of-range indices and NaN inputs poison the weights).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import jax
import numpy as np

from randlr_jax.training import _batching as batching
from randlr_jax.training._sharding import data_size, pad_batch, shard_batch, to_host

Batch = dict[str, np.ndarray]
EVAL_SPLITS = ("validation", "test")
_CHUNK_ELEMENTS = 1 << 22  # the finiteness check reads the inputs in blocks of this many values


def check_splits(splits: dict, task: str) -> None:
    """Check the structure, dtypes and values of ``splits`` that need no model (host-side numpy).

    Classification: each split a dict with inputs ``"x"`` and labels ``"y"`` (the one name of the labels
    in this library), ``y`` an integer array of shape ``(N,)``, ``N = len(x)``, ``x`` finite. Language
    model: each split a 1-D integer token array.

    Raises:
      ValueError: naming the split, the offending value or index, and what is allowed.
    """
    for split in ("train", *EVAL_SPLITS):
        if split not in splits:
            continue
        if task == "classification":
            _check_supervised(split, splits[split])
        else:
            _check_tokens(split, splits[split])


def check_supervised_keys(where: str, arrays: dict) -> None:
    """``arrays`` has inputs ``"x"`` and labels ``"y"``; the error names ``where`` and hints at TFDS's
    ``"image"``/``"label"`` names (checked by the engine's set-up and by :class:`SplitFeed`)."""
    missing = [key for key in ("x", "y") if key not in arrays]
    if missing:
        hint = ""
        if "y" in missing and "label" in arrays:
            hint = " Rename 'label' to 'y' (the library's one name for labels)."
        if "x" in missing and "image" in arrays:
            hint += " Rename 'image' to 'x'."
        raise ValueError(
            f"{where} must have inputs 'x' and labels 'y', got keys {sorted(arrays)}: "
            f"{' and '.join(map(repr, missing))} missing.{hint}"
        )


def _check_supervised(split: str, arrays: Any) -> None:
    if not isinstance(arrays, dict):
        raise ValueError(
            f"split {split!r} must be a dict {{'x': inputs, 'y': labels}} of arrays, got "
            f"{type(arrays).__name__}."
        )
    check_supervised_keys(f"split {split!r}", arrays)
    x, y = np.asarray(arrays["x"]), np.asarray(arrays["y"])
    if x.ndim < 1:
        raise ValueError(f"split {split!r}: inputs 'x' need a leading example axis, got a scalar.")
    if not np.issubdtype(y.dtype, np.integer):
        cast = " (cast them: y.astype(np.int32))" if np.issubdtype(y.dtype, np.number) else ""
        raise ValueError(
            f"split {split!r}: labels 'y' must be integer class ids, got dtype {y.dtype}{cast}."
        )
    if y.ndim == 2 and y.shape[1] == 1:
        raise ValueError(
            f"split {split!r}: labels 'y' must have shape (N,), got {y.shape}: squeeze the extra axis "
            "(y[:, 0] or np.squeeze(y, axis=1))."
        )
    if y.ndim != 1:
        raise ValueError(f"split {split!r}: labels 'y' must have shape (N,), got {y.shape}.")
    if len(y) != len(x):
        raise ValueError(
            f"split {split!r}: {len(x)} inputs 'x' but {len(y)} labels 'y'; they must match."
        )
    _check_finite(split, x)


def _check_tokens(split: str, tokens: Any) -> None:
    tokens = np.asarray(tokens)
    if tokens.ndim != 1 or not np.issubdtype(tokens.dtype, np.integer):
        raise ValueError(
            f"split {split!r}: a language model's split must be a 1-D integer token array, got "
            f"shape {tokens.shape} and dtype {tokens.dtype}."
        )


def _check_finite(split: str, x: np.ndarray) -> None:
    """Raise if the floating inputs ``x`` hold a NaN or an infinity (read in blocks of examples)."""
    if not jax.numpy.issubdtype(x.dtype, jax.numpy.inexact) or x.size == 0:
        return
    flat = x.reshape(len(x), -1)
    rows = max(1, _CHUNK_ELEMENTS // max(1, flat.shape[1]))
    for start in range(0, len(flat), rows):
        if np.isfinite(flat[start : start + rows]).all():
            continue
        bad = ~np.isfinite(flat[start:])
        first = np.unravel_index(int(np.argmax(bad)), x[start:].shape)
        first = (first[0] + start, *first[1:])
        count = int(bad.sum())
        raise ValueError(
            f"split {split!r}: the inputs 'x' hold {count} non-finite value(s) (NaN or inf), the "
            f"first x[{', '.join(map(str, first))}] = {x[first]} (example {first[0]}); inputs must "
            "be finite: fix or drop those examples before training."
        )


def check_label_range(splits: dict, task: str, num_classes: int) -> None:
    """Check that the labels (tokens) of ``splits`` lie in ``[0, num_classes)`` (a vocabulary size).

    Raises:
      ValueError: naming the split, the first offending label, its index and the count.
    """
    for split in ("train", *EVAL_SPLITS):
        if split not in splits:
            continue
        if task == "classification":
            labels, name, what = np.asarray(splits[split]["y"]), "labels 'y'", "class"
        else:
            labels, name, what = np.asarray(splits[split]), "tokens", "vocabulary"
        if labels.size == 0:
            continue
        low, high = labels.min(), labels.max()
        if 0 <= low and high < num_classes:
            continue
        bad = (labels < 0) | (labels >= num_classes)
        first = int(np.argmax(bad))
        raise ValueError(
            f"split {split!r}: {name} must lie in [0, {num_classes}) (the model has {num_classes} "
            f"outputs: one per {what} id), got {labels[first]} at index {first} "
            f"({int(bad.sum())} out of range)."
        )


class SplitFeed:
    """Training and evaluation batches of ``splits`` for ``task``, with the sizes of ``config``.

    Args:
      splits: classification: ``{"train": {"x", "y"}, ...}``; language model: ``{"train": tokens, ...}``.
      config: a :class:`~randlr_jax.training.LoopConfig` (``batch_size``, ``eval_batch_size``, ``seed``,
        ``drop_remainder``, ``seq_len``).
      task: ``"classification"`` or ``"language_model"``.

    Raises:
      ValueError: bad splits (:func:`check_splits`), a batch larger than the training split, or a text
        too short for one window.
    """

    def __init__(self, splits: dict, config: Any, task: str):
        check_splits(splits, task)
        self.splits = splits
        self.config = config
        self.task = task
        if task == "classification":
            n = len(splits["train"]["y"])
            if config.batch_size > n:
                raise ValueError(
                    f"batch_size {config.batch_size} is larger than the training split ({n} examples)."
                )
            self.steps_per_epoch = batching.num_batches(n, config.batch_size, config.drop_remainder)
        else:
            self.steps_per_epoch = batching.lm_num_batches(
                len(splits["train"]), config.batch_size, config.seq_len
            )
            if self.steps_per_epoch < 1:
                raise ValueError(
                    f"the training text ({len(splits['train'])} tokens) is too short for batch_size "
                    f"{config.batch_size} streams of seq_len {config.seq_len}."
                )

    def check_labels(self, num_classes: int) -> None:
        """Check that every split's labels (a language model's tokens) lie in ``[0, num_classes)``
        (:func:`check_label_range`), e.g. the model's output width."""
        check_label_range(self.splits, self.task, num_classes)

    def sample_input(self) -> np.ndarray:
        """One input, for ``model.init``."""
        if self.task == "classification":
            return np.asarray(self.splits["train"]["x"][:1])
        return np.zeros((1, self.config.seq_len), np.int32)

    def train_batches(self, epoch: int, start_batch: int = 0) -> Iterator[Batch]:
        """Epoch ``epoch``'s training batches from batch ``start_batch`` on."""
        if self.task == "classification":
            return batching.batch_iterator(
                self.splits["train"],
                self.config.batch_size,
                shuffle=True,
                seed=self.config.seed,
                epoch=epoch,
                drop_remainder=self.config.drop_remainder,
                start_batch=start_batch,
            )
        return batching.lm_batch_iterator(
            self.splits["train"],
            self.config.batch_size,
            self.config.seq_len,
            start_batch=start_batch,
        )

    def eval_batches(self, split: str, streams: int | None = None) -> Iterator[Batch]:
        """All of ``split`` in order: ``eval_batch_size`` examples a batch (the last one may be smaller),
        or, for a language model, ``streams`` streams read in ``seq_len`` windows."""
        if self.task == "classification":
            arrays = self.splits[split]
            return batching.batch_iterator(
                arrays,
                min(self.config.eval_batch_size, len(arrays["y"])),
                shuffle=False,
                seed=0,
                epoch=0,
                drop_remainder=False,
            )
        return batching.lm_batch_iterator(self.splits[split], streams, self.config.seq_len)

    def evaluation_sums(
        self,
        split: str,
        state: Any,
        eval_fn: Callable,
        mesh: Any,
        initial_carry: Callable[[int], Any] | None = None,
    ) -> dict | None:
        """``eval_fn``'s sums over all of ``split``, data parallel on ``mesh``, on the host (``None``: empty).

        Classification: ``eval_fn(state, batch) -> sums``, the last batch padded to a multiple of the data
        axis and masked. Language model: ``eval_fn(state, batch, carry) -> (sums, carry)`` over
        ``eval_streams`` streams (rounded down to a multiple of the data axis, at least one per device),
        starting from ``initial_carry(streams)`` (a carry placed on the mesh).
        """
        devices = data_size(mesh)
        totals = None
        if self.task == "classification":
            for batch in self.eval_batches(split):
                sums = eval_fn(state, shard_batch(pad_batch(batch, devices), mesh))
                totals = sums if totals is None else jax.tree.map(jax.numpy.add, totals, sums)
        else:
            streams = self.config.eval_streams
            streams = max(devices, streams - streams % devices)
            carry = initial_carry(streams)
            for batch in self.eval_batches(split, streams):
                sums, carry = eval_fn(state, shard_batch(batch, mesh), carry)
                totals = sums if totals is None else jax.tree.map(jax.numpy.add, totals, sums)
        return None if totals is None else to_host(totals)


class _Failure:
    def __init__(self, error: BaseException):
        self.error = error


_DONE = object()


def prefetch(
    batches: Iterable[Any], size: int = 2, transform: Callable[[Any], Any] | None = None
) -> Iterator[Any]:
    """Yield ``transform(batch)`` for each of ``batches``, prepared ``size`` ahead on a background thread.

    The next batches are gathered on the host and put on the devices (``transform``, e.g.
    :func:`~randlr_jax.training.shard_batch`: ``device_put`` is asynchronous and thread-safe) while the
    current step runs, so the loop does not wait for the loader. Same batches, same order. An exception
    of the loader is raised in the consumer; closing the generator (``break``, ``KeyboardInterrupt``)
    stops the thread.

    Raises:
      ValueError: ``size`` not a positive integer.
    """
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"size must be a positive integer, got {size!r}.")
    ready: queue.Queue = queue.Queue(maxsize=size)
    stop = threading.Event()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                ready.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def work() -> None:
        try:
            for batch in batches:
                if not put(transform(batch) if transform is not None else batch):
                    return
            put(_DONE)
        except BaseException as error:  # noqa: BLE001 -- re-raised in the consumer
            put(_Failure(error))

    thread = threading.Thread(target=work, name="randlr_jax-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item = ready.get()
            if item is _DONE:
                return
            if isinstance(item, _Failure):
                raise item.error
            yield item
    finally:
        stop.set()
        thread.join(timeout=5.0)
