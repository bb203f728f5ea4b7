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
from randlr_jax.training import _dispatch as dispatch
from randlr_jax.training._sharding import (
    DATA_AXIS,
    data_size,
    pad_batch,
    put_global,
    replicated,
    shard_batch,
    to_host,
)

Batch = dict[str, np.ndarray]
EVAL_SPLITS = ("validation", "test")
_CHUNK_ELEMENTS = 1 << 22  # the finiteness check reads the inputs in blocks of this many values
_MIB = 1 << 20
_AUTO_DISPATCH = 64  # steps per dispatch by default
_STREAMED_CHUNK_BYTES = 64 * _MIB  # a streamed chunk of batches stays under this


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

    def place_on(self, mesh: Any, config: Any) -> None:
        """Decide where the batches come from, for a run on ``mesh`` (called by the engine once).

        The training split lives on the devices (:attr:`resident`) for classification in one process
        when its inputs and labels take at most ``config.device_data_mb``; otherwise chunks of batches
        are streamed from the host. :attr:`capacity` is the most steps one dispatch runs
        (``config.steps_per_dispatch``, by default 64, for streamed batches fewer so that a chunk stays
        under 64 MiB); the engine cuts chunks shorter at logging points, step-count checkpoints and the
        epoch's end.
        """
        self.mesh = mesh
        self.limit_bytes = float(config.device_data_mb) * _MIB
        self._eval_stacks: dict = {}
        self._source = None
        self.resident = bool(
            self.task == "classification"
            and jax.process_count() == 1
            and _nbytes(self.splits["train"]) <= self.limit_bytes
        )
        capacity = config.steps_per_dispatch
        if capacity is None:
            capacity = _AUTO_DISPATCH
            if not self.resident:
                batch = next(iter(self.train_batches(0)))
                capacity = max(1, min(capacity, _STREAMED_CHUNK_BYTES // max(1, _nbytes(batch))))
        self.capacity = int(capacity)
        for split in EVAL_SPLITS:  # put on the devices now, at the run's start
            if split in self.splits:
                self._eval_stack(split, mesh, self.eval_stream_count(mesh))

    def ragged_batch(self) -> int | None:
        """The index of an epoch's last batch when it is smaller than the others (``None``: none)."""
        if self.task != "classification" or self.config.drop_remainder:
            return None
        if len(self.splits["train"]["y"]) % self.config.batch_size == 0:
            return None
        return self.steps_per_epoch - 1

    def train_chunks(self, epoch: int, start_batch: int, sizes: list[int]) -> Iterator[Any]:
        """Epoch ``epoch``'s batches from ``start_batch`` on, in chunks of ``sizes`` batches (host
        values, placed by :meth:`place_chunk`): the ``(capacity, B)`` example indices of a chunk
        (:attr:`resident`), or its batches stacked ``(capacity, B, ...)``; rows past the chunk's
        size are zero padding. A ragged last batch is a chunk of its own (capacity 1)."""
        ragged = self.ragged_batch()
        if self.resident:
            n, size = len(self.splits["train"]["y"]), self.config.batch_size
            order = batching.epoch_permutation(n, seed=self.config.seed, epoch=epoch)
            batch = start_batch
            for count in sizes:
                if batch == ragged:
                    yield order[batch * size :][None].astype(np.int32)
                else:
                    rows = np.zeros((self.capacity, size), np.int32)
                    rows[:count] = order[batch * size : (batch + count) * size].reshape(count, size)
                    yield rows
                batch += count
            return
        batches = self.train_batches(epoch, start_batch=start_batch)
        batch = start_batch
        for count in sizes:
            group = [next(batches) for _ in range(count)]
            capacity = 1 if batch == ragged else self.capacity
            yield {key: _stack([b[key] for b in group], capacity) for key in group[0]}
            batch += count

    def place_chunk(self, chunk: Any) -> Any:
        """A chunk of :meth:`train_chunks` on the mesh: ``(source, indices)`` with the training split
        on the devices (put there once), or the stacked batches split along their batch axis."""
        if self.resident:
            if self._source is None:
                train = self.splits["train"]
                source = {"x": np.asarray(train["x"]), "y": np.asarray(train["y"], np.int32)}
                self._source = put_global(source, replicated(self.mesh))
            return self._source, jax.device_put(chunk, replicated(self.mesh))
        return put_global(chunk, _stacked_sharding(self.mesh))

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
        streams = self.eval_stream_count(mesh)
        stacked = self._eval_stack(split, mesh, streams)
        if stacked is not None:  # the whole split in one compiled call
            language_model = self.task != "classification"
            runner = dispatch.shared(dispatch.eval_runner, eval_fn, language_model)
            if language_model:
                return to_host(runner(state, stacked, initial_carry(streams)))
            return to_host(runner(state, stacked))
        totals = None
        if self.task == "classification":
            for batch in self.eval_batches(split):
                sums = eval_fn(state, shard_batch(pad_batch(batch, devices), mesh))
                totals = sums if totals is None else jax.tree.map(jax.numpy.add, totals, sums)
        else:
            carry = initial_carry(streams)
            for batch in self.eval_batches(split, streams):
                sums, carry = eval_fn(state, shard_batch(batch, mesh), carry)
                totals = sums if totals is None else jax.tree.map(jax.numpy.add, totals, sums)
        return None if totals is None else to_host(totals)

    def eval_stream_count(self, mesh: Any) -> int:
        """A language model's evaluation streams: ``eval_streams`` rounded down to a multiple of the
        data axis, at least one per device."""
        devices = data_size(mesh)
        streams = self.config.eval_streams
        return max(devices, streams - streams % devices)

    def _eval_stack(self, split: str, mesh: Any, streams: int) -> Any:
        """``split``'s evaluation batches stacked ``(num_batches, B, ...)`` on ``mesh`` (put there at
        the first call, then reused), the last classification batch padded to ``B`` and masked;
        ``None`` if the split takes more than ``device_data_mb`` (then it is evaluated batch by batch
        from the host) or has no batch."""
        key = (split, streams)
        cache = getattr(self, "_eval_stacks", None)
        if cache is None:  # a feed the engine did not place
            cache = self._eval_stacks = {}
            self.limit_bytes = float(self.config.device_data_mb) * _MIB
        if key in cache:
            return cache[key]
        stacked = None
        if _nbytes(self.splits[split]) <= self.limit_bytes:
            if self.task == "classification":
                arrays = self.splits[split]
                size = min(self.config.eval_batch_size, len(arrays["y"]))
                size = -(-size // data_size(mesh)) * data_size(mesh)
                batches = [pad_batch(b, size) for b in self.eval_batches(split)]
            else:
                batches = list(self.eval_batches(split, streams))
            if batches:
                host = {key: np.stack([b[key] for b in batches]) for key in batches[0]}
                stacked = put_global(host, _stacked_sharding(mesh))
        cache[key] = stacked
        return stacked


def _nbytes(tree: Any) -> int:
    return int(sum(np.asarray(leaf).nbytes for leaf in jax.tree.leaves(tree)))


def _stack(rows: list[np.ndarray], capacity: int) -> np.ndarray:
    """``rows`` stacked, zero-padded to ``capacity`` rows."""
    first = np.asarray(rows[0])
    out = np.zeros((capacity, *first.shape), first.dtype)
    out[: len(rows)] = np.stack(rows)
    return out


def _stacked_sharding(mesh: Any) -> jax.sharding.NamedSharding:
    """Stacked batches ``(steps, B, ...)``: split along the batch axis (the second)."""
    return jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(None, DATA_AXIS))


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
