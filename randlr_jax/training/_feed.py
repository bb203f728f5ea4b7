"""Batching of in-memory splits for one task, shared by :func:`~randlr_jax.training.fit` and the
vmapped learning-rate population (:mod:`randlr_jax.training`).

Classification splits are ``{"x", "y"}`` arrays, read in a per-epoch order that depends only on
``(seed, epoch)`` (so a run resumes mid-epoch exactly); language-model splits are 1-D token arrays cut into
``batch_size`` contiguous streams read in windows of ``seq_len`` (truncated backprop through time).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import jax
import numpy as np

from randlr_jax.training._sharding import data_size, pad_batch, shard_batch, to_host

Batch = dict[str, np.ndarray]


class SplitFeed:
    """Training and evaluation batches of ``splits`` for ``task``, with the sizes of ``config``.

    Args:
      splits: classification: ``{"train": {"x", "y"}, ...}``; language model: ``{"train": tokens, ...}``.
      config: a :class:`~randlr_jax.training.LoopConfig` (``batch_size``, ``eval_batch_size``, ``seed``,
        ``drop_remainder``, ``seq_len``).
      task: ``"classification"`` or ``"language_model"``.

    Raises:
      ValueError: a batch larger than the training split, or a text too short for one window.
    """

    def __init__(self, splits: dict, config: Any, task: str):
        from randlr_jax import data as rdata  # the data layer is heavy (TFDS); import it on use

        self._rdata = rdata
        self.splits = splits
        self.config = config
        self.task = task
        if task == "classification":
            n = len(splits["train"]["y"])
            if config.batch_size > n:
                raise ValueError(
                    f"batch_size {config.batch_size} is larger than the training split ({n} examples)."
                )
            self.steps_per_epoch = rdata.num_batches(n, config.batch_size, config.drop_remainder)
        else:
            self.steps_per_epoch = rdata.lm_num_batches(
                len(splits["train"]), config.batch_size, config.seq_len
            )
            if self.steps_per_epoch < 1:
                raise ValueError(
                    f"the training text ({len(splits['train'])} tokens) is too short for batch_size "
                    f"{config.batch_size} streams of seq_len {config.seq_len}."
                )

    def sample_input(self) -> np.ndarray:
        """One input, for ``model.init``."""
        if self.task == "classification":
            return np.asarray(self.splits["train"]["x"][:1])
        return np.zeros((1, self.config.seq_len), np.int32)

    def train_batches(self, epoch: int, start_batch: int = 0) -> Iterator[Batch]:
        """Epoch ``epoch``'s training batches from batch ``start_batch`` on."""
        if self.task == "classification":
            return self._rdata.batch_iterator(
                self.splits["train"],
                self.config.batch_size,
                shuffle=True,
                seed=self.config.seed,
                epoch=epoch,
                drop_remainder=self.config.drop_remainder,
                start_batch=start_batch,
            )
        return self._rdata.lm_batch_iterator(
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
            return self._rdata.batch_iterator(
                arrays,
                min(self.config.eval_batch_size, len(arrays["y"])),
                shuffle=False,
                seed=0,
                epoch=0,
                drop_remainder=False,
            )
        return self._rdata.lm_batch_iterator(self.splits[split], streams, self.config.seq_len)

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
