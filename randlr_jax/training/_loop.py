"""``fit``: the resumable, data-parallel training loop shared by every experiment.

One call trains a model with any Optax transformation on in-memory splits, evaluates every epoch, writes
metrics as JSON lines and a learning-curve PNG into ``workdir``, checkpoints with orbax (every epoch, every
``checkpoint_every_steps`` and on ``KeyboardInterrupt``), and selects the best epoch on validation loss with
early stopping (the protocol of Blier et al. 2019, Section 5). Re-running the same call with the same
``workdir`` resumes where it stopped and ends with exactly the parameters of an uninterrupted run: the
position in the data is derived from the step counter, every epoch's order is a function of ``(seed, epoch)``
and the dropout key lives in the state.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import os
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm.auto import tqdm

from randlr_jax.training import _plotting as plotting
from randlr_jax.training._checkpoint import Checkpointer
from randlr_jax.training._early_stopping import EarlyStopping
from randlr_jax.training._feed import SplitFeed, prefetch
from randlr_jax.training._records import append_jsonl, decode_record, host_metrics, write_jsonl
from randlr_jax.training._sharding import data_size, make_mesh, replicate, shard_batch, to_host
from randlr_jax.training._state import TrainState, create_train_state, unalias
from randlr_jax.training._steps import TASKS, make_eval_step, make_train_step, summarize

StepCallback = Callable[[int, dict], None]


@dataclasses.dataclass(frozen=True)
class LoopConfig:
    """Settings of :func:`fit` (the data, model and optimizer are passed separately).

    Attributes:
      epochs: number of passes over the training split.
      batch_size: global batch size (split over devices; must be a multiple of the device count).
      eval_batch_size: batch size for evaluation (the last batch is padded and masked).
      seed: seeds parameter initialisation, dropout and the data order.
      patience: stop after this many epochs without a better validation loss (``None``: never stop early).
      drop_remainder: drop the last incomplete training batch of each epoch.
      checkpoint_every_steps: also checkpoint every this many steps (``None``: only at epoch ends).
      num_devices: devices of the mesh (``None``: all devices of all processes).
      copy_shards: devices of the mesh's ``"copies"`` axis: Alrao's classifier copies are split over
        them (model parallel); the batch is split over the remaining ``num_devices // copy_shards``.
      seq_len: window length for truncated BPTT (language models only).
      eval_streams: number of parallel streams when evaluating a language model.
      prefetch: training batches gathered and placed ahead on a background thread while the step runs
        (``0``: none, each batch is loaded between steps). ``None``: 2 on GPU/TPU, 0 on CPU, where host
        and device share the cores (measured in ``benchmarks/input_pipeline.py``: prefetching does not
        pay there).
      log_every: refresh the progress bar every this many steps (each refresh waits for the device).
      progress: show a progress bar.
      description: label of the progress bar.
    """

    epochs: int = 10
    batch_size: int = 128
    eval_batch_size: int = 1000
    seed: int = 0
    patience: int | None = None
    drop_remainder: bool = True
    checkpoint_every_steps: int | None = None
    num_devices: int | None = None
    copy_shards: int = 1
    seq_len: int = 70
    eval_streams: int = 10
    prefetch: int | None = None
    log_every: int = 20
    progress: bool = True
    description: str = "train"

    def __post_init__(self):
        for name in (
            "epochs",
            "batch_size",
            "eval_batch_size",
            "seq_len",
            "eval_streams",
            "log_every",
            "copy_shards",
        ):
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}.")
        for name in ("patience", "checkpoint_every_steps", "num_devices"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, (int, np.integer)) or value < 1):
                raise ValueError(f"{name} must be a positive integer or None, got {value!r}.")
        if self.prefetch is not None and (
            isinstance(self.prefetch, bool)
            or not isinstance(self.prefetch, (int, np.integer))
            or self.prefetch < 0
        ):
            raise ValueError(f"prefetch must be an integer >= 0 or None, got {self.prefetch!r}.")


@dataclasses.dataclass
class FitResult:
    """What :func:`fit` returns (also written to ``workdir/results.json``)."""

    state: TrainState
    best_params: Any
    best_model_state: Any
    history: list[dict]
    summary: dict


def fit(
    model: Any,
    tx: optax.GradientTransformation,
    splits: dict[str, Any],
    config: LoopConfig,
    workdir: str | os.PathLike,
    *,
    task: str = "classification",
    train_step: Callable | None = None,
    callbacks: Sequence[StepCallback] = (),
    place_state: Callable[[TrainState, Any], TrainState] | None = None,
) -> FitResult:
    """Train ``model`` with ``tx`` on ``splits``, resuming from ``workdir`` if a checkpoint is there.

    Args:
      model: a Flax ``Classifier`` (classification) or ``LanguageModel`` (``task="language_model"``).
      tx: any Optax transformation (extra-args ones receive ``value=loss``).
      splits: classification: ``{"train": {"x", "y"}, "validation": {...}, "test": {...}}`` of numpy arrays;
        language model: ``{"train": tokens, "validation": tokens, "test": tokens}`` of int32 1-D arrays.
        ``"validation"`` and ``"test"`` are optional (without validation there is no early stopping and the
        last epoch is "best").
      config: loop settings.
      workdir: run directory: ``checkpoints/``, ``metrics.jsonl``, ``results.json``, ``learning_curves.png``.
      task: ``"classification"`` or ``"language_model"``.
      train_step: a replacement for :func:`make_train_step`'s step (same signature), e.g. Alrao's.
      place_state: ``place_state(state, mesh) -> state`` puts the initial state on the mesh (default:
        replicated). Model-parallel methods hand theirs in, e.g. :func:`randlr_jax.alrao.shard_state` to
        split Alrao's copies over the ``"copies"`` axis of ``LoopConfig(copy_shards=...)``.
      callbacks: called as ``callback(step, metrics)`` with host-side metrics (floats, or numpy arrays for
        vector metrics) every ``log_every`` steps and at each epoch's end; raising ``KeyboardInterrupt``
        from one checkpoints and stops (as Ctrl-C).

    Returns:
      A :class:`FitResult`.
    """
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}.")
    if "train" not in splits:
        raise ValueError(f"splits must contain 'train', got keys {sorted(splits)}.")
    workdir = os.path.abspath(os.fspath(workdir))
    os.makedirs(workdir, exist_ok=True)
    mesh = make_mesh(config.num_devices, copies=config.copy_shards)
    num_devices = mesh.devices.size
    if config.batch_size % data_size(mesh):
        raise ValueError(
            f"batch_size {config.batch_size} must be a multiple of the number of data-parallel devices "
            f"({data_size(mesh)})."
        )
    main_process = jax.process_index() == 0
    ahead = config.prefetch
    if ahead is None:
        ahead = 0 if jax.default_backend() == "cpu" else 2
    data = SplitFeed(splits, config, task)

    key = jax.random.key(config.seed)
    carry = None
    if task == "language_model":
        # Kept on the host: every epoch start puts fresh buffers on the devices (the step donates them).
        carry = jax.tree.map(np.asarray, model.initial_carry(config.batch_size))
    state = create_train_state(model, tx, key, data.sample_input(), carry=carry)
    state = (place_state or replicate_state)(state, mesh)
    if carry is not None:
        state = state.replace(carry=unalias(shard_batch(carry, mesh)))
    step_fn = jax.jit(train_step or make_train_step(model, tx, task=task), donate_argnums=0)
    eval_fn = jax.jit(make_eval_step(model, task=task))

    stopper = EarlyStopping(patience=config.patience)
    history: list[dict] = []
    best = jax.tree.map(jnp.copy, {"params": state.params, "model_state": state.model_state})
    checkpointer = Checkpointer(os.path.join(workdir, "checkpoints"))
    if checkpointer.latest_step() is not None:
        (state, best), meta = checkpointer.restore((state, best))
        history = [decode_record(h) for h in meta["history"]]
        stopper = EarlyStopping.from_dict(meta["early_stopping"])
    metrics_path = os.path.join(workdir, "metrics.jsonl")
    if main_process:
        write_jsonl(metrics_path, history)  # what is on disk matches the checkpoint we resume from

    steps_per_epoch = data.steps_per_epoch
    total_steps = steps_per_epoch * config.epochs
    start_step = int(state.step)
    progress = tqdm(
        total=total_steps,
        initial=start_step,
        unit="step",
        desc=config.description,
        disable=not config.progress or not main_process,
        dynamic_ncols=True,
        leave=True,
    )

    def save() -> None:
        meta = {"history": history, "early_stopping": stopper.to_dict(), "step": int(state.step)}
        checkpointer.save(int(state.step), (state, best), meta)

    t_start = time.perf_counter()
    steps_timed = 0
    try:
        while len(history) < config.epochs and not stopper.should_stop:
            epoch = len(history)
            epoch_end = steps_per_epoch * (epoch + 1)
            losses = []
            t_epoch = time.perf_counter()
            step = int(state.step)
            if task == "language_model" and step == steps_per_epoch * epoch:
                state = state.replace(
                    carry=unalias(shard_batch(carry, mesh))
                )  # each epoch restarts the streams
            batches = data.train_batches(epoch, start_batch=step - steps_per_epoch * epoch)
            place = functools.partial(shard_batch, mesh=mesh)
            if ahead:  # the next batches are gathered and placed while the current step runs
                batches = prefetch(batches, size=ahead, transform=place)
            else:
                batches = (place(batch) for batch in batches)
            with contextlib.closing(batches):  # stop the loader thread on interrupt
                for batch in batches:
                    state, metrics = step_fn(state, batch)
                    losses.append(metrics["loss"])
                    step += 1
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
                        progress.set_postfix(
                            epoch=epoch + 1,
                            loss=f"{host['loss']:.4f}",
                            ex_per_s=f"{rate * config.batch_size:.0f}",
                        )
                        for callback in callbacks:
                            callback(step, host)
                    progress.update(1)
            record = {
                "epoch": epoch + 1,
                "step": step,
                "epoch_time_s": time.perf_counter() - t_epoch,
            }
            if losses:  # vector metrics of the epoch's last step (e.g. Alrao's posterior)
                record.update(
                    {
                        f"last_{k}": v.tolist()
                        for k, v in host_metrics(to_host(metrics)).items()
                        if isinstance(v, np.ndarray)
                    }
                )
            if losses:
                train_losses = np.asarray(to_host(jnp.stack(losses)), np.float64)
                record["train_loss"] = float(train_losses.mean())
            for split in ("validation", "test"):
                if split in splits:
                    for name, value in _evaluate(data, split, state, eval_fn, mesh).items():
                        record[f"{split}_{name}"] = value
            improved = stopper.update(record.get("validation_loss", -float(epoch)), epoch + 1)
            if improved:  # a copy: the state's own buffers are donated to the next step
                best = jax.tree.map(
                    jnp.copy, {"params": state.params, "model_state": state.model_state}
                )
            record["best_epoch"] = stopper.best_epoch
            history.append(record)
            if main_process:
                append_jsonl(metrics_path, record)
            save()
    except KeyboardInterrupt:
        save()
        progress.close()
        checkpointer.close()
        raise
    progress.close()
    checkpointer.close()
    wall = time.perf_counter() - t_start
    summary = _summarize(history, stopper, splits, data, best, state, eval_fn, mesh)
    summary.update(
        steps_per_second=steps_timed / wall if steps_timed and wall > 0 else None,
        wall_time_s=wall,
        num_devices=num_devices,
        device_kind=jax.devices()[0].device_kind,
    )
    summary.update(copy_shards=config.copy_shards, num_processes=jax.process_count())
    if main_process:
        with open(os.path.join(workdir, "results.json"), "w") as f:
            json.dump(summary, f, indent=2)
        plotting.learning_curves(history, os.path.join(workdir, "learning_curves.png"), task=task)
    return FitResult(state, best["params"], best["model_state"], history, summary)


def replicate_state(state: TrainState, mesh: Any) -> TrainState:
    """The default placement of :func:`fit`: ``state`` replicated over ``mesh``."""
    if mesh.shape["copies"] > 1:
        raise ValueError(
            f"copy_shards={mesh.shape['copies']} splits the model over a 'copies' mesh axis: pass the "
            "placement of the state that says how, e.g. fit(..., place_state=randlr_jax.alrao.shard_state) "
            "for Alrao's classifier copies."
        )
    return replicate(state, mesh)


def _summarize(history, stopper, splits, data, best, state, eval_fn, mesh) -> dict:
    summary: dict[str, Any] = {"epochs_run": len(history), "best_epoch": stopper.best_epoch}
    if "validation" in splits:
        summary["best_validation_loss"] = stopper.best_value
    if "test" in splits:
        best_state = state.replace(params=best["params"], model_state=best["model_state"])
        for name, value in _evaluate(data, "test", best_state, eval_fn, mesh).items():
            summary[f"test_{name}"] = value
    if history:
        summary["final"] = history[-1]
    return summary


def _evaluate(feed: SplitFeed, split: str, state: TrainState, eval_fn, mesh) -> dict:
    """Mean loss and accuracy (bits per character) of ``state`` on ``split``, over the global batch."""

    def initial_carry(streams: int) -> Any:
        # The carry's structure is the training carry's, with ``streams`` rows.
        zeros = jax.tree.map(lambda c: np.zeros((streams,) + c.shape[1:], c.dtype), state.carry)
        return shard_batch(zeros, mesh)

    totals = feed.evaluation_sums(split, state, eval_fn, mesh, initial_carry)
    return {} if totals is None else summarize(totals, task=feed.task)
