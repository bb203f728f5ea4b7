"""The epoch engine under :func:`~randlr_jax.training.fit` and
:func:`~randlr_jax.training.fit_population`: one resumable, data-parallel loop, two faces.

The engine owns what every run does the same way: the input checks and the mesh (:func:`prepare`), then
(:func:`run`) the restore from ``workdir/checkpoints``, ``metrics.jsonl`` rewritten to match the checkpoint
resumed from, the progress bar, the epochs (fresh recurrent carries at an epoch's start; the steps run a
chunk per dispatch, :func:`~randlr_jax.training._dispatch.chunk_runner`, the chunks cut by
:func:`_chunk_sizes` at the logging points, the step-count checkpoints and the epoch's end, their batches
gathered on the devices from a split held there or streamed from the host, optionally prefetched; the
step counter, logging and callbacks every ``log_every`` steps), the epoch record (train loss, validation
evaluation, the test split too with ``test_every_epoch``), early stopping and the best-epoch copy, the
history, the checkpoint policy (every ``checkpoint_every_steps`` and ``checkpoint_every_seconds``,
asynchronous; at the run's end and on ``KeyboardInterrupt``, then re-raised, waited for), the status lines
(the step resumed from, where an interrupted run was checkpointed: on stderr, off with ``progress=False``)
and the wall-clock; and it watches for a dead run (:class:`TrainingDiverged`).

A :class:`Face` says what differs: the placed state and its stopper (one :class:`EarlyStopping` for
``fit``, one per member for the population), how a step is called, how evaluation values are summarised
(scalars or per-member lists), what the record and the progress bar add, and how an improved epoch
becomes the best state. Each caller builds its own summary from the :class:`Run` the engine returns.

The position in the data is the step counter (saved in the checkpoint meta under ``Face.step_key``) and
every epoch's order is a function of ``(seed, epoch)``, so a resumed run ends exactly where an
uninterrupted one does. What the loop carries between steps and epochs is one immutable run point
(:class:`_Point`: step, state, early stopping, best state, history, the epoch's losses so far), replaced in
single assignments: wherever a ``KeyboardInterrupt`` lands, the point it saves is one the uninterrupted run
passes through (``tests/training/test_interrupts.py`` interrupts every line of an epoch's end).

A dead run is seen where the loop already has the metrics on the host, never with a transfer of its own
inside the steps: at each logging point (``log_every``) and at each epoch's end, a non-finite ``loss`` or
a true ``"dead"`` metric (:data:`~randlr_jax.training._steps.DEAD_METRIC`, e.g. every Alrao copy dropped)
marks the run dead (a population: the members, each). ``LoopConfig.on_divergence`` says what follows:
``"stop"`` (default) warns once (:class:`TrainingDiverged`) and stops, the point checkpointed (at a logging
point inside an epoch: that point; at the epoch's end: after the epoch's record); ``"warn"`` warns once and
trains on; ``"continue"`` looks at nothing. A population freezes its dead members at the epoch's end
(:meth:`Face.mark_dead`) and stops when every member still training is dead (:meth:`Face.all_dead`).
The epoch's end decides from the point alone (its last step's metrics, or the mask a checkpoint written
after that step holds), so a resumed run stops where the uninterrupted one does.
"""

from __future__ import annotations

import abc
import contextlib
import copy
import dataclasses
import functools
import json
import math
import os
import time
import warnings
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from randlr_jax import _checks as checks
from randlr_jax.training import _dispatch as dispatch
from randlr_jax.training._checkpoint import Checkpointer
from randlr_jax.training._config import LoopConfig
from randlr_jax.training._dispatch import shared as shared
from randlr_jax.training._feed import SplitFeed, check_supervised_keys, prefetch
from randlr_jax.training._progress import progress_bar, write_status
from randlr_jax.training._records import (
    append_jsonl,
    decode_record,
    encode_record,
    host_metrics,
    write_jsonl,
)
from randlr_jax.training._sharding import data_size, make_mesh, to_host
from randlr_jax.training._state import TrainState
from randlr_jax.training._steps import DEAD_METRIC, TASKS

StepCallback = Callable[[int, dict], None]


class TrainingDiverged(UserWarning):
    """A run (or every member of a population still training) is dead: a non-finite training loss, or
    a train step reporting ``metrics["dead"]`` (e.g. every Alrao copy dropped). Issued once per run;
    ``LoopConfig(on_divergence=...)`` says whether the run stops (the default), or trains on."""


def prepare(
    splits: dict[str, Any],
    config: LoopConfig,
    workdir: str | os.PathLike,
    task: str,
    *,
    copies: int = 1,
) -> tuple[str, jax.sharding.Mesh]:
    """Check the inputs, create ``workdir`` and build the mesh; returns ``(absolute workdir, mesh)``.

    Everything is checked before ``workdir`` is created: the task, the loop settings, the path, the
    structure of the splits (known split names, a ``"train"`` split, classification splits
    ``{"x", "y"}`` of matching lengths, language-model splits 1-D token arrays), a batch that fits the
    training split and divides over the mesh's data axis.

    Raises:
      ValueError: naming the argument (``task``, ``config``, ``workdir``, ``splits``, ``batch_size``).
      FileExistsError: ``workdir`` is a file.
    """
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}.")
    if not isinstance(config, LoopConfig):
        checks.fail("config", "a LoopConfig (randlr_jax.training.LoopConfig(...))", config)
    workdir = os.path.abspath(checks.path("workdir", workdir))
    _check_split_structure(splits, task)
    if task == "classification" and config.batch_size > len(splits["train"]["y"]):
        raise ValueError(
            f"batch_size {config.batch_size} is larger than the training split "
            f"({len(splits['train']['y'])} examples)."
        )
    mesh = make_mesh(config.num_devices, copies=copies)
    if config.batch_size % data_size(mesh):
        raise ValueError(
            f"batch_size {config.batch_size} must be a multiple of the number of data-parallel devices "
            f"({data_size(mesh)})."
        )
    try:
        os.makedirs(workdir, exist_ok=True)
    except OSError as error:
        raise type(error)(
            f"workdir must be a directory (or a path where one can be made), got {workdir!r}: "
            f"{error.strerror or error}."
        ) from error
    return workdir, mesh


_SPLIT_NAMES = ("train", "validation", "test")


def _check_split_structure(splits: Any, task: str) -> None:
    """The structure of ``splits`` (:func:`prepare`); the dtypes, shapes and values of the arrays are
    checked by :class:`~randlr_jax.training._feed.SplitFeed`."""
    what = "a dict of splits {'train': ..., 'validation': ..., 'test': ...}"
    if not isinstance(splits, dict):
        checks.fail("splits", what, splits, shown=checks.brief(splits))
    unknown = [name for name in splits if name not in _SPLIT_NAMES]
    if unknown:
        checks.fail(
            "splits", f"{what} (only those names: another one would be ignored)", splits,
            shown=f"the split(s) {', '.join(map(repr, unknown))}",
        )  # fmt: skip
    if "train" not in splits:
        raise ValueError(f"splits must contain 'train', got keys {sorted(splits)}.")
    for name, split in splits.items():
        where = f"splits[{name!r}]"
        if task != "classification":
            if isinstance(split, dict) or np.ndim(split) != 1:
                checks.fail(
                    where, f"a 1-D integer token array for task={task!r}", split,
                    shown=checks.brief(split),
                )  # fmt: skip
            continue
        if not isinstance(split, dict):
            checks.fail(
                where, "a dict {'x': inputs, 'y': labels} of arrays", split,
                shown=type(split).__name__,
            )  # fmt: skip
        check_supervised_keys(where, split)
        x, y = split["x"], split["y"]
        if np.ndim(x) < 1 or np.ndim(y) < 1:
            checks.fail(
                where, "inputs 'x' and labels 'y' with a leading example axis", split,
                shown=f"shapes {np.shape(x)} and {np.shape(y)}",
            )  # fmt: skip
        if len(x) != len(y):
            raise ValueError(
                f"{where}: {len(x)} inputs 'x' but {len(y)} labels 'y'; they must match."
            )


def check_labels(data: SplitFeed, model: Any, carry: Any = None) -> None:
    """Check the splits' labels (tokens) against the model's output width ``K``: every one in
    ``[0, K)`` (:meth:`SplitFeed.check_labels`). ``K`` comes from a shape-only evaluation of the model
    on the sample input (``jax.eval_shape``: nothing computed), the same for equal models.

    Raises:
      ValueError: a label (token) out of range, with its split and index.
    """
    sample = data.sample_input()
    spec = jax.ShapeDtypeStruct(sample.shape, sample.dtype)
    if carry is None:
        try:
            width = _cached_output_width(model, spec)
        except TypeError:  # an unhashable model
            width = _output_width(model, spec)
    else:
        carry = jax.tree.map(lambda c: jax.ShapeDtypeStruct(np.shape(c), c.dtype), carry)
        width = _output_width(model, spec, carry)
    data.check_labels(width)


@functools.lru_cache(maxsize=32)
def _cached_output_width(model: Any, sample: Any) -> int:
    return _output_width(model, sample)


def _output_width(model: Any, sample: Any, carry: Any = None) -> int:
    """The size of the last axis of ``model``'s output (the logits) on ``sample``, by shapes only."""

    def init(x, carry):
        rngs = {"params": jax.random.key(0), "dropout": jax.random.key(1)}
        args = (x,) if carry is None else (x, carry)
        out, _ = model.init_with_output(rngs, *args, train=False)
        return out[0] if isinstance(out, tuple) else out  # a language model: (logits, carry)

    return int(jax.eval_shape(init, sample, carry).shape[-1])


class Face(abc.ABC):
    """What one kind of run hands the engine.

    Attributes:
      data: the batches (``data.splits`` says which evaluation splits there are).
      mesh: the device mesh.
      state: the initial state, placed on the mesh (the engine takes it over: the steps donate it).
      stopper: the initial early stopping (a resumed run continues the checkpoint's; the final one is
        :attr:`Run.stopper`): ``update(validation_loss, epoch) -> improved`` (a bool or a
        per-member mask), ``should_stop``, ``best_epoch``, ``to_dict()`` and ``from_dict`` (checkpoint meta).
        The engine updates a copy (``copy.deepcopy``) and swaps it in with the epoch's record.
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

    step_fn: Callable
    """``step_fn(state, batch, *self.step_extra()) -> (state, metrics)``: one step (jitted or not), run
    ``n`` at a time by the engine (:func:`~randlr_jax.training._dispatch.chunk_runner`)."""

    def step_extra(self) -> tuple:
        """The arguments ``step_fn`` takes after ``(state, batch)`` (e.g. the members still training)."""
        return ()

    def train_step(self, state: TrainState, batch: dict) -> tuple[TrainState, dict]:
        """One step (the batch already on the mesh)."""
        return self.step_fn(state, batch, *self.step_extra())

    def run_chunk(self, state: TrainState, chunk: Any, n: int) -> tuple[TrainState, dict, Any, int]:
        """``n`` steps from ``state`` over a placed chunk of batches, one dispatch:
        ``(state, the last step's metrics, the chunk's losses, n)`` (the engine sets ``chunk_fn``)."""
        return (*self.chunk_fn(state, chunk, n, *self.step_extra()), n)

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

    def best_part(self, state: TrainState) -> dict:
        """What an improved epoch keeps of ``state``: ``{"params", "model_state"}``."""
        return _best_part(state)

    @abc.abstractmethod
    def merge_best(self, improved: Any, current: dict, best: dict) -> dict:
        """The new best ``{"params", "model_state"}`` after an epoch where ``improved`` (the stopper's
        answer) is true somewhere; the engine copies it."""

    def all_dead(self, dead: np.ndarray) -> bool:
        """Whether the run is dead, from ``dead`` (:func:`dead_mask` of a step's metrics: a bool, or one
        per member): by default, when everything is."""
        return bool(np.all(dead))

    def mark_dead(self, stopper: Any, dead: np.ndarray, epoch: int) -> None:  # noqa: B027 -- a hook
        """At epoch ``epoch``'s end (from 1), before its commit: record in ``stopper`` (a copy) what
        ``dead`` (its last step's :func:`dead_mask`) says, e.g. freeze the dead members."""

    def dead_reason(self, loss: np.ndarray, dead: np.ndarray) -> str:
        """What happened, for the warning: ``loss`` and ``dead`` of the step that showed it."""
        return _reason(float(loss), bool(dead))


@dataclasses.dataclass
class Run:
    """What :func:`run` returns: the final state, the best ``{"params", "model_state"}``, the history,
    the final stopper, the wall-clock of the loop and the number of steps it ran (not counting resumed
    ones), and whether (and where) it was seen dead."""

    state: TrainState
    best: dict
    history: list[dict]
    stopper: Any
    wall_time_s: float
    steps_timed: int
    diverged: dict | None = None
    """``None``, or where the run was first seen dead: ``{"step", "epoch" (from 1), "reason",
    "stopped", "dead"}`` (``dead``: the mask, one bool per member for a population)."""

    @property
    def steps_per_second(self) -> float | None:
        if self.steps_timed and self.wall_time_s > 0:
            return self.steps_timed / self.wall_time_s
        return None


class _Point(NamedTuple):
    """One consistent point of a run: what a checkpoint holds.

    The loop never changes a point, it replaces it: every change is one assignment of a new point, so
    whatever line a ``KeyboardInterrupt`` hits, the point is the one before the change or the one after,
    and the interrupt saves it. A step is one line (``_replace(..., out=face.train_step(...))``): no Python
    line of the library runs between the step, which donates the old state's buffers, and the new point.

    Attributes:
      step: the steps done.
      out: ``(state, metrics, losses, count)``: the state after ``step`` steps, the metrics of the step
        that made it, the losses of the chunk of ``count`` steps that ended with it (``(capacity,
        ...)``, the first ``count`` rows) (``None, None, 0`` before the epoch's first chunk, after a
        restore and once :meth:`settled`).
      stopper: the early stopping after the epochs of ``history``.
      best: the best ``{"params", "model_state"}`` of those epochs (a copy: not donated).
      history: one record per finished epoch.
      losses: the current epoch's step losses not counted in ``out`` (device arrays; host values restored
        from a checkpoint first).
      fields: :meth:`Face.epoch_fields` of the epoch's last step, as restored from a checkpoint written
        after it (``None``: none restored).
      dead: :func:`dead_mask` of the epoch's last step, restored like ``fields`` (``None``: none).
    """

    step: int
    out: tuple[TrainState, dict | None, Any, int]
    stopper: Any
    best: dict
    history: tuple[dict, ...]
    losses: tuple = ()
    fields: dict | None = None
    dead: Any = None

    @property
    def state(self) -> TrainState:
        return self.out[0]

    @property
    def metrics(self) -> dict | None:
        return self.out[1]

    @property
    def epoch_losses(self) -> tuple:
        """All the current epoch's step losses so far, in order: host arrays ``(steps, ...)`` and
        ``(device losses, count)`` pairs of chunks."""
        if self.metrics is None:
            return self.losses
        return self.losses + ((self.out[2], self.out[3]),)

    def settled(self) -> _Point:
        """The same point with the last chunk's losses moved to :attr:`losses` (before the next)."""
        return self._replace(out=(self.state, None, None, 0), losses=self.epoch_losses)


def run(
    face: Face, config: LoopConfig, workdir: str, *, callbacks: Sequence[StepCallback] = ()
) -> Run:
    """Train ``face`` for ``config.epochs`` epochs (or until it stops early), resuming from ``workdir``.

    Every checkpoint written (at an epoch's end, every ``checkpoint_every_steps``, on ``KeyboardInterrupt``)
    holds one consistent point of the run (:class:`_Point`), so resuming from any of them ends exactly
    where the uninterrupted run ends, the history (train losses included) the same.

    Args:
      face: what differs between the kinds of run.
      config: the loop settings.
      workdir: the run directory (from :func:`prepare`): ``checkpoints/`` and ``metrics.jsonl``.
      callbacks: ``callback(step, metrics)`` with host-side metrics every ``log_every`` steps and at each
        epoch's end; raising ``KeyboardInterrupt`` from one checkpoints and stops (as Ctrl-C).

    Warns:
      TrainingDiverged: once, when the run is seen dead (unless ``on_divergence="continue"``).
    """
    data, mesh = face.data, face.mesh
    watch = config.on_divergence != "continue"
    diverged: dict | None = None  # where the run was first seen dead (the warning is issued once)
    main_process = jax.process_index() == 0
    ahead = config.prefetch
    if ahead is None:
        ahead = 0 if jax.default_backend() == "cpu" else 2
    data.place_on(mesh, config)
    steps_per_epoch = data.steps_per_epoch
    status = functools.partial(_status, config, main_process)
    capacity = min(
        data.capacity, steps_per_epoch, config.log_every, config.checkpoint_every_steps or math.inf
    )
    data.capacity = int(capacity)
    face.chunk_fn = shared(dispatch.chunk_runner, face.step_fn, mesh, data.resident)
    splits_every_epoch = [s for s in ("validation", "test") if s in data.splits]
    if not config.test_every_epoch and "test" in splits_every_epoch:
        splits_every_epoch.remove("test")  # evaluated once, at the best epoch, by the caller

    checkpointer = Checkpointer(os.path.join(workdir, "checkpoints"))
    point = _Point(
        0, (face.state, None, None, 0), face.stopper, _copy_best(face.best_part(face.state)), ()
    )
    saved = None  # the point of the newest checkpoint (``None``: none of this run)
    if checkpointer.latest_step() is not None:
        try:
            point, diverged = _restore(checkpointer, face, point)
            saved = point
        except BaseException:  # e.g. no intact checkpoint: the manager's threads go too
            checkpointer.close()
            raise
        status(f"resuming at {_where(point, steps_per_epoch)} from {checkpointer.directory}.")
    metrics_path = os.path.join(workdir, "metrics.jsonl")
    if main_process:
        # What is on disk matches the checkpoint we resume from.
        write_jsonl(metrics_path, point.history)
    progress = _progress_bar(config, steps_per_epoch * config.epochs, point.step, main_process)

    def report(p: _Point, loss: Any, dead: np.ndarray, stop: bool) -> dict:
        """The divergence seen at ``p`` (``loss``, ``dead``: its step's), warned about (once)."""
        where = _where(p, steps_per_epoch)
        loss = np.nan if loss is None else loss
        reason = face.dead_reason(np.asarray(loss, np.float64), np.asarray(dead, bool))
        seen = {
            "step": p.step,
            "epoch": len(p.history) + (p.step > steps_per_epoch * len(p.history)),
            "reason": reason,
            "stopped": stop,
            "dead": _listed(dead),
        }
        if stop:
            then = f"stopped; checkpointed {where} in {checkpointer.directory}"
        else:
            then = "training on (on_divergence='warn')"
        message = (
            f"{config.description}: training diverged at step {p.step}: {reason}; {then}. "
            "LoopConfig(on_divergence='continue') trains on without looking."
        )
        warnings.warn(message, TrainingDiverged, stacklevel=4)  # at the call of fit(_population)
        return seen

    def save(p: _Point, wait: bool = True) -> None:
        meta = {
            "history": [encode_record(h) for h in p.history],
            "early_stopping": p.stopper.to_dict(),
            face.step_key: p.step,
        }
        if diverged is not None:  # a re-run of a stopped run stops here again (and a warned one
            meta["diverged"] = diverged  # is not warned twice)
        if p.step > steps_per_epoch * len(p.history):  # inside an epoch: what its record needs
            fields = p.fields if p.metrics is None else face.epoch_fields(p.metrics)
            losses = _host_losses(p.epoch_losses).tolist()
            dead = p.dead if p.metrics is None else dead_mask(host_metrics(to_host(p.metrics)))
            meta["epoch"] = encode_record(
                {"train_losses": losses, "fields": fields, "dead": _listed(dead)}
            )
        checkpointer.save(p.step, (p.state, p.best), meta, wait=wait)
        last_save[0] = time.perf_counter()

    last_save = [time.perf_counter()]

    def due(step: int) -> bool:
        """Whether the checkpoint policy asks for a checkpoint after ``step``."""
        if config.checkpoint_every_steps and step % config.checkpoint_every_steps == 0:
            return True
        seconds = config.checkpoint_every_seconds
        return seconds is not None and time.perf_counter() - last_save[0] >= seconds

    def finished(p: _Point) -> bool:
        return (
            len(p.history) >= config.epochs
            or p.stopper.should_stop
            or (diverged is not None and diverged["stopped"])
        )

    t_start = time.perf_counter()
    steps_timed = 0
    try:
        if diverged is not None and diverged["stopped"]:  # it stopped there: say so again
            _warn_again(config, diverged, checkpointer.directory)
        while (
            len(point.history) < config.epochs
            and not point.stopper.should_stop
            and not (diverged is not None and diverged["stopped"])
        ):
            epoch = len(point.history)
            epoch_end = steps_per_epoch * (epoch + 1)
            start_batch = point.step - steps_per_epoch * epoch
            t_epoch = time.perf_counter()
            face.begin_epoch(point.stopper)
            if start_batch == 0:  # each epoch restarts the streams (a resumed one has its carry)
                carry = face.fresh_carry()
                if carry is not None:
                    point = point._replace(out=(point.state.replace(carry=carry), None, None, 0))
            ragged = data.ragged_batch() is not None
            sizes = _chunk_sizes(point.step, epoch_end, capacity, config, ragged)
            chunks = data.train_chunks(epoch, start_batch, sizes)
            if ahead:  # the next chunks are gathered and placed while the current one runs
                chunks = prefetch(chunks, size=ahead, transform=data.place_chunk)
            else:
                chunks = (data.place_chunk(chunk) for chunk in chunks)
            run = face.run_chunk
            with contextlib.closing(chunks):  # stop the loader thread on interrupt
                for n, chunk in zip(sizes, chunks, strict=False):
                    point = point.settled()
                    # One line (keep it under the formatter's 100 columns): nothing runs between the
                    # steps (they donate the old state) and their point.
                    point = point._replace(step=point.step + n, out=run(point.state, chunk, n))
                    steps_timed += n
                    step = point.step
                    if step != epoch_end and due(step):  # the epoch end saves with its record
                        save(point, wait=False)
                        saved = point
                    dead = None
                    if step % config.log_every == 0 or step == epoch_end:
                        host = host_metrics(to_host(point.metrics))
                        rate = steps_timed / max(time.perf_counter() - t_start, 1e-9)
                        progress.set_postfix(**face.postfix(epoch, host, rate * config.batch_size))
                        for callback in callbacks:
                            callback(step, host)
                        if watch and step != epoch_end:  # the epoch's end looks at its last step
                            dead = dead_mask(host)
                    progress.update(n)
                    if dead is not None and diverged is None and face.all_dead(dead):
                        stop = config.on_divergence == "stop"
                        diverged = report(point, host["loss"], dead, stop)
                        if stop:  # the checkpoint records the divergence (a re-run stops here)
                            save(point)
                            saved = point
                            break
            if diverged is not None and diverged["stopped"]:
                break
            # The epoch's end is computed aside and committed in one assignment (the stopper's update
            # included): an interrupt before it saves the point after the last step, one after it the
            # finished epoch, never a mix.
            record: dict[str, Any] = {
                "epoch": epoch + 1,
                "step": point.step,
                "epoch_time_s": time.perf_counter() - t_epoch,
            }
            if point.metrics is not None:
                record.update(face.epoch_fields(point.metrics))
            elif point.fields is not None:
                record.update(point.fields)
            else:
                record.update(face.epoch_fields(None))
            last_loss = None
            if point.epoch_losses:  # the mean over the epoch's steps (per member: over axis 0)
                losses = _host_losses(point.epoch_losses)
                record["train_loss"] = losses.mean(axis=0).tolist()
                last_loss = losses[-1]
            dead = None
            if watch:  # from the point alone: its last step's metrics, or as restored
                dead = point.dead
                if point.metrics is not None:
                    dead = dead_mask(host_metrics(to_host(point.metrics)))
            for split in splits_every_epoch:
                for name, value in face.evaluate(split, point.state).items():
                    record[f"{split}_{name}"] = value
            stopper = copy.deepcopy(point.stopper)
            improved = stopper.update(record.get("validation_loss", -float(epoch)), epoch + 1)
            if dead is not None:
                face.mark_dead(stopper, np.asarray(dead, bool), epoch + 1)
            best = point.best
            if np.any(improved):  # a copy: the state's own buffers are donated to the next step
                best = _copy_best(face.merge_best(improved, face.best_part(point.state), best))
            record["best_epoch"] = stopper.best_epoch
            point = _Point(
                point.step, (point.state, None, None, 0), stopper, best, (*point.history, record)
            )
            if main_process:
                append_jsonl(metrics_path, record)
            if dead is not None and diverged is None and face.all_dead(np.asarray(dead, bool)):
                diverged = report(point, last_loss, dead, config.on_divergence == "stop")
                save(point)  # with the divergence (a re-run stops here)
                saved = point
            elif finished(point):  # the run's end: waited for
                save(point)
                saved = point
            elif due(point.step):
                save(point, wait=False)
                saved = point
            if diverged is not None and diverged["stopped"]:
                break
    except KeyboardInterrupt:
        why = ""
        if point is not saved:
            saved, why = _save_on_interrupt(save, point)
        if saved is not None:
            if main_process:  # the records of the checkpoint (an append may have been cut short)
                write_jsonl(metrics_path, saved.history)
            status(
                f"interrupted: checkpointed {_where(saved, steps_per_epoch)} in "
                f"{checkpointer.directory}; run the same command to resume."
            )
        else:
            newest = checkpointer.latest_step()
            status(
                f"interrupted at step {point.step}, not checkpointed ({why}); "
                + (
                    f"{checkpointer.directory} holds step {newest}: run the same command to resume."
                    if newest is not None
                    else "no checkpoint yet: the same command starts afresh."
                )
            )
        raise
    finally:
        try:
            progress.close()
            checkpointer.wait()
        finally:  # the checkpointer's threads stop even if an interrupt hits the bar's close
            checkpointer.close()
    wall = time.perf_counter() - t_start
    history = list(point.history)
    return Run(point.state, point.best, history, point.stopper, wall, steps_timed, diverged)


def _chunk_sizes(
    step: int, epoch_end: int, capacity: int, config: LoopConfig, ragged: bool
) -> list[int]:
    """The chunks of steps from ``step`` to ``epoch_end``: each at most ``capacity``, ending at every
    logging point (``log_every``), every ``checkpoint_every_steps``, and (``ragged``: the epoch's last
    batch is smaller than the others) before the last step, whose batch is a chunk of its own."""
    stops = {epoch_end}
    for every in (config.log_every, config.checkpoint_every_steps):
        if every:
            first = (step // every + 1) * every
            stops.update(range(first, epoch_end, every))
    if ragged:
        stops.add(epoch_end - 1)
    sizes = []
    for stop in sorted(x for x in stops if x > step):
        while step < stop:
            n = min(capacity, stop - step)
            sizes.append(n)
            step += n
    return sizes


def write_results(workdir: str, results: dict) -> None:
    """``workdir/results.json`` (on the main process only)."""
    if jax.process_index() == 0:
        with open(os.path.join(workdir, "results.json"), "w") as f:
            json.dump(results, f, indent=2)


def compiled(
    make: Callable[..., Callable], /, *args: Any, donate_argnums=(), **kwargs: Any
) -> Callable:
    """``jax.jit(make(*args, **kwargs), donate_argnums=donate_argnums)``, the same jitted function for
    equal arguments (see :func:`shared`): a run repeated or resumed in the same process, with the same
    model and optimizer, reuses the compiled program instead of compiling it again."""
    return shared(_jit, make, *args, donate_argnums=donate_argnums, **kwargs)


def _jit(
    make: Callable[..., Callable], /, *args: Any, donate_argnums=(), **kwargs: Any
) -> Callable:
    return jax.jit(make(*args, **kwargs), donate_argnums=donate_argnums)


def dead_mask(metrics: dict) -> np.ndarray:
    """Whether a step's (host) metrics say the run is dead: its ``loss`` is non-finite or its
    ``"dead"`` metric (:data:`~randlr_jax.training._steps.DEAD_METRIC`) is true. A bool array of the
    loss's shape (one per member for a population)."""
    dead = ~np.isfinite(np.asarray(metrics["loss"], np.float64))
    if DEAD_METRIC in metrics:
        dead = dead | (np.asarray(metrics[DEAD_METRIC]) != 0)
    return dead


def _reason(loss: float, dead: bool) -> str:
    """What a dead step shows: its non-finite loss, or the step's own flag."""
    if not np.isfinite(loss):
        return f"the training loss is {loss}"
    return f"the train step reports it dead (metrics[{DEAD_METRIC!r}] is true; loss {loss:.6g})"


def _listed(dead: Any) -> Any:
    """A dead mask as JSON (a bool, or a list of them); ``None`` stays."""
    return None if dead is None else np.asarray(dead, bool).tolist()


def _warn_again(config: LoopConfig, diverged: dict, directory: str) -> None:
    """A re-run of a run that stopped on divergence: the same warning, and no training."""
    warnings.warn(
        f"{config.description}: training diverged at step {diverged['step']}: {diverged['reason']}; "
        f"stopped there (as recorded in {directory}): nothing to resume. Use another run directory "
        "to train again.",
        TrainingDiverged,
        stacklevel=4,
    )


def _restore(checkpointer: Checkpointer, face: Face, initial: _Point) -> tuple[_Point, dict | None]:
    """The point of the newest intact checkpoint (the structure and placement of ``initial``) and the
    divergence it records (``None``: none seen before it)."""
    (state, best), meta = checkpointer.restore((initial.state, initial.best))
    epoch = decode_record(meta.get("epoch") or {})  # a checkpoint inside an epoch
    losses = ()
    if epoch.get("train_losses"):
        losses = (np.asarray(epoch["train_losses"], np.float64),)
    return _Point(
        step=int(meta[face.step_key]),
        out=(state, None, None, 0),
        stopper=type(initial.stopper).from_dict(meta["early_stopping"]),
        best=best,
        history=tuple(decode_record(h) for h in meta["history"]),
        losses=losses,
        fields=epoch.get("fields"),
        dead=None if epoch.get("dead") is None else np.asarray(epoch["dead"], bool),
    ), meta.get("diverged")


def _host_losses(losses: tuple) -> np.ndarray:
    """``(steps,)`` (per member ``(steps, K)``) float64: the step losses on the host, in order (the
    restored host values ``(steps, ...)`` come first; the chunks' device ones, ``(losses, count)``
    pairs, come back in one transfer)."""
    host = [np.asarray(loss, np.float64) for loss in losses if not isinstance(loss, tuple)]
    chunks = [loss for loss in losses if isinstance(loss, tuple)]
    if chunks:
        values = to_host([loss for loss, _ in chunks])
        host.extend(
            np.asarray(v[:count], np.float64) for v, (_, count) in zip(values, chunks, strict=True)
        )
    host = [h for h in host if h.size or h.ndim > 1]
    return np.concatenate(host) if host else np.zeros((0,))


def _save_on_interrupt(save: Callable[[_Point], None], point: _Point) -> tuple[_Point | None, str]:
    """Save ``point``; returns ``(point, "")``, or ``(None, why not)`` (the newest checkpoint stands)."""
    if any(isinstance(x, jax.Array) and x.is_deleted() for x in jax.tree.leaves(point.state)):
        # Interrupted inside a step, after it took the state's buffers: the point is gone.
        return None, "interrupted inside a step"
    try:
        save(point)
    except Exception as error:  # noqa: BLE001 -- e.g. a save the interrupt broke: the last one stands
        return None, f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
    return point, ""


def _where(point: _Point, steps_per_epoch: int) -> str:
    """``"step 8 (epoch 2, 2 of 6 steps done)"``, ``"step 12 (after epoch 2)"``."""
    epochs = len(point.history)
    done = point.step - steps_per_epoch * epochs
    if done == 0:
        return f"step {point.step} (after epoch {epochs})"
    return f"step {point.step} (epoch {epochs + 1}, {done} of {steps_per_epoch} steps done)"


def _status(config: LoopConfig, main_process: bool, message: str) -> None:
    """A line of the loop's status (on stderr, above the progress bar); off with ``progress=False``."""
    if config.progress and main_process:
        write_status(f"{config.description}: {message}")


def _best_part(state: TrainState) -> dict:
    return {"params": state.params, "model_state": state.model_state}


def _copy_best(tree: dict) -> dict:
    return jax.tree.map(jnp.copy, tree)


def _progress_bar(config: LoopConfig, total: int, initial: int, main_process: bool) -> Any:
    """The progress bar (with :func:`_status`, the run's only output besides its files); off with
    ``config.progress=False``."""
    return progress_bar(
        total=total,
        initial=initial,
        unit="step",
        desc=config.description,
        disable=not config.progress or not main_process,
        dynamic_ncols=True,
        leave=True,
    )
