"""The epoch engine under :func:`~randlr_jax.training.fit` and
:func:`~randlr_jax.training.fit_population`: one resumable, data-parallel loop, two faces.

The engine owns what every run does the same way: the input checks and the mesh (:func:`prepare`), then
(:func:`run`) the restore from ``workdir/checkpoints``, ``metrics.jsonl`` rewritten to match the checkpoint
resumed from, the progress bar, the epochs (fresh recurrent carries at an epoch's start, the training
batches placed on the mesh, optionally prefetched, the step counter, logging and callbacks every
``log_every`` steps, checkpoints every ``checkpoint_every_steps``), the epoch record (train loss, validation
and test evaluation), early stopping and the best-epoch copy, the history, a checkpoint at every epoch's
end and on ``KeyboardInterrupt`` (then re-raised), and the wall-clock.

A :class:`Face` says what differs: the placed state and its stopper (one :class:`EarlyStopping` for
``fit``, one per member for the population), how a step is called, how evaluation values are summarised
(scalars or per-member lists), what the record and the progress bar add, and how an improved epoch
becomes the best state. Each caller builds its own summary from the :class:`Run` the engine returns.

The position in the data is the step counter (saved in the checkpoint meta under ``Face.step_key``) and
every epoch's order is a function of ``(seed, epoch)``, so a resumed run ends exactly where an
uninterrupted one does.
"""

from __future__ import annotations

import abc
import contextlib
import dataclasses
import functools
import json
import os
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from randlr_jax.training._checkpoint import Checkpointer
from randlr_jax.training._feed import SplitFeed, prefetch
from randlr_jax.training._records import (
    append_jsonl,
    decode_record,
    encode_record,
    host_metrics,
    write_jsonl,
)
from randlr_jax.training._sharding import data_size, make_mesh, shard_batch, to_host
from randlr_jax.training._state import TrainState
from randlr_jax.training._steps import TASKS

if TYPE_CHECKING:
    from randlr_jax.training._loop import LoopConfig

StepCallback = Callable[[int, dict], None]


def prepare(
    splits: dict[str, Any],
    config: LoopConfig,
    workdir: str | os.PathLike,
    task: str,
    *,
    copies: int = 1,
) -> tuple[str, jax.sharding.Mesh]:
    """Check the inputs, create ``workdir`` and build the mesh; returns ``(absolute workdir, mesh)``.

    Raises:
      ValueError: an unknown ``task``, no ``"train"`` split, or a batch size that is not a multiple of the
        mesh's data axis.
    """
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}.")
    if "train" not in splits:
        raise ValueError(f"splits must contain 'train', got keys {sorted(splits)}.")
    workdir = os.path.abspath(os.fspath(workdir))
    os.makedirs(workdir, exist_ok=True)
    mesh = make_mesh(config.num_devices, copies=copies)
    if config.batch_size % data_size(mesh):
        raise ValueError(
            f"batch_size {config.batch_size} must be a multiple of the number of data-parallel devices "
            f"({data_size(mesh)})."
        )
    return workdir, mesh


class Face(abc.ABC):
    """What one kind of run hands the engine.

    Attributes:
      data: the batches (``data.splits`` says which evaluation splits there are).
      mesh: the device mesh.
      state: the initial state, placed on the mesh (the engine takes it over: the steps donate it).
      stopper: the initial early stopping (a resumed run continues the checkpoint's; the final one is
        :attr:`Run.stopper`): ``update(validation_loss, epoch) -> improved`` (a bool or a
        per-member mask), ``should_stop``, ``best_epoch``, ``to_dict()`` and ``from_dict`` (checkpoint meta).
      step_key: the key of the step counter in the checkpoint meta.
    """

    step_key = "step"

    def __init__(self, data: SplitFeed, mesh: Any, state: TrainState, stopper: Any):
        self.data = data
        self.mesh = mesh
        self.state = state
        self.stopper = stopper

    def begin_epoch(self, stopper: Any) -> None:  # noqa: B027 -- a hook: nothing by default
        """Called before every epoch's steps (also a resumed epoch's) with the current stopper."""

    def fresh_carry(self) -> Any:
        """The recurrent carry an epoch starts from, placed on the mesh (``None``: there is none)."""
        return None

    @abc.abstractmethod
    def train_step(self, state: TrainState, batch: dict) -> tuple[TrainState, dict]:
        """One jitted step (the batch already on the mesh)."""

    @abc.abstractmethod
    def postfix(self, epoch: int, metrics: dict, examples_per_s: float) -> dict:
        """The progress bar's fields at a logged step (``metrics`` on the host, ``epoch`` from 0)."""

    @abc.abstractmethod
    def epoch_fields(self, metrics: dict | None) -> dict:
        """Fields of the epoch record before ``train_loss``; ``metrics``: the epoch's last step's (on the
        devices), ``None`` if the epoch ran no step."""

    @abc.abstractmethod
    def evaluate(self, split: str, state: TrainState) -> dict:
        """``{name: value}`` of ``state`` on ``split`` (``loss``, ``accuracy``, ...)."""

    @abc.abstractmethod
    def merge_best(self, improved: Any, current: dict, best: dict) -> dict:
        """The new best ``{"params", "model_state"}`` after an epoch where ``improved`` (the stopper's
        answer) is true somewhere; the engine copies it."""


@dataclasses.dataclass
class Run:
    """What :func:`run` returns: the final state, the best ``{"params", "model_state"}``, the history,
    the final stopper, the wall-clock of the loop and the number of steps it ran (not counting resumed
    ones)."""

    state: TrainState
    best: dict
    history: list[dict]
    stopper: Any
    wall_time_s: float
    steps_timed: int

    @property
    def steps_per_second(self) -> float | None:
        if self.steps_timed and self.wall_time_s > 0:
            return self.steps_timed / self.wall_time_s
        return None


def run(
    face: Face, config: LoopConfig, workdir: str, *, callbacks: Sequence[StepCallback] = ()
) -> Run:
    """Train ``face`` for ``config.epochs`` epochs (or until it stops early), resuming from ``workdir``.

    Args:
      face: what differs between the kinds of run.
      config: the loop settings.
      workdir: the run directory (from :func:`prepare`): ``checkpoints/`` and ``metrics.jsonl``.
      callbacks: ``callback(step, metrics)`` with host-side metrics every ``log_every`` steps and at each
        epoch's end; raising ``KeyboardInterrupt`` from one checkpoints and stops (as Ctrl-C).
    """
    data, mesh = face.data, face.mesh
    main_process = jax.process_index() == 0
    ahead = config.prefetch
    if ahead is None:
        ahead = 0 if jax.default_backend() == "cpu" else 2
    place = functools.partial(shard_batch, mesh=mesh)

    state, stopper = face.state, face.stopper
    history: list[dict] = []
    step = 0
    best = _copy_best(_best_part(state))
    checkpointer = Checkpointer(os.path.join(workdir, "checkpoints"))
    if checkpointer.latest_step() is not None:
        (state, best), meta = checkpointer.restore((state, best))
        history = [decode_record(h) for h in meta["history"]]
        stopper = type(stopper).from_dict(meta["early_stopping"])
        step = int(meta[face.step_key])
    metrics_path = os.path.join(workdir, "metrics.jsonl")
    if main_process:
        write_jsonl(metrics_path, history)  # what is on disk matches the checkpoint we resume from

    steps_per_epoch = data.steps_per_epoch
    progress = _progress_bar(config, steps_per_epoch * config.epochs, step, main_process)

    def save() -> None:
        meta = {
            "history": [encode_record(h) for h in history],
            "early_stopping": stopper.to_dict(),
            face.step_key: step,
        }
        checkpointer.save(step, (state, best), meta)

    t_start = time.perf_counter()
    steps_timed = 0
    try:
        while len(history) < config.epochs and not stopper.should_stop:
            epoch = len(history)
            epoch_end = steps_per_epoch * (epoch + 1)
            start_batch = step - steps_per_epoch * epoch
            t_epoch = time.perf_counter()
            face.begin_epoch(stopper)
            if start_batch == 0:  # each epoch restarts the streams (a resumed one has its carry)
                carry = face.fresh_carry()
                if carry is not None:
                    state = state.replace(carry=carry)
            batches = data.train_batches(epoch, start_batch=start_batch)
            if ahead:  # the next batches are gathered and placed while the current step runs
                batches = prefetch(batches, size=ahead, transform=place)
            else:
                batches = (place(batch) for batch in batches)
            losses = []
            metrics = None
            with contextlib.closing(batches):  # stop the loader thread on interrupt
                for batch in batches:
                    # One statement: a Ctrl-C cannot fall between the new state and its count.
                    (state, metrics), step = face.train_step(state, batch), step + 1
                    losses.append(metrics["loss"])
                    steps_timed += 1
                    if (
                        config.checkpoint_every_steps
                        and step % config.checkpoint_every_steps == 0
                        and step != epoch_end
                    ):  # the epoch end saves anyway, with its metrics
                        save()
                    if step % config.log_every == 0 or step == epoch_end:
                        host = host_metrics(to_host(metrics))
                        rate = steps_timed / max(time.perf_counter() - t_start, 1e-9)
                        progress.set_postfix(**face.postfix(epoch, host, rate * config.batch_size))
                        for callback in callbacks:
                            callback(step, host)
                    progress.update(1)
            record: dict[str, Any] = {
                "epoch": epoch + 1,
                "step": step,
                "epoch_time_s": time.perf_counter() - t_epoch,
            }
            record.update(face.epoch_fields(metrics if losses else None))
            if losses:  # the mean over the epoch's steps (per member: over the first axis)
                train_losses = np.asarray(to_host(jnp.stack(losses)), np.float64)
                record["train_loss"] = train_losses.mean(axis=0).tolist()
            for split in ("validation", "test"):
                if split in data.splits:
                    for name, value in face.evaluate(split, state).items():
                        record[f"{split}_{name}"] = value
            improved = stopper.update(record.get("validation_loss", -float(epoch)), epoch + 1)
            if np.any(improved):  # a copy: the state's own buffers are donated to the next step
                best = _copy_best(face.merge_best(improved, _best_part(state), best))
            record["best_epoch"] = stopper.best_epoch
            history.append(record)
            if main_process:
                append_jsonl(metrics_path, record)
            save()
    except KeyboardInterrupt:
        save()
        raise
    finally:
        progress.close()
        checkpointer.close()
    wall = time.perf_counter() - t_start
    return Run(state, best, history, stopper, wall, steps_timed)


def write_results(workdir: str, results: dict) -> None:
    """``workdir/results.json`` (on the main process only)."""
    if jax.process_index() == 0:
        with open(os.path.join(workdir, "results.json"), "w") as f:
            json.dump(results, f, indent=2)


def _best_part(state: TrainState) -> dict:
    return {"params": state.params, "model_state": state.model_state}


def _copy_best(tree: dict) -> dict:
    return jax.tree.map(jnp.copy, tree)


def _progress_bar(config: LoopConfig, total: int, initial: int, main_process: bool) -> Any:
    """The run's only output besides its files; ``config.progress=False`` turns it off."""
    return tqdm(
        total=total,
        initial=initial,
        unit="step",
        desc=config.description,
        disable=not config.progress or not main_process,
        dynamic_ncols=True,
        leave=True,
    )
