"""``fit``: the resumable, data-parallel training loop shared by every experiment (one face of the epoch
engine of :mod:`randlr_jax.training._engine`; :func:`~randlr_jax.training.fit_population` is the other).

One call trains a model (Flax Linen, or NNX through :func:`~randlr_jax.training.adapt_model`) with any
Optax transformation on in-memory splits, many steps per dispatch (``LoopConfig.steps_per_dispatch``: a
compiled loop over a chunk of batches, gathered on the devices from a split held there), evaluates the
validation split every epoch (the test split once, at the best epoch, unless
``LoopConfig.test_every_epoch``), writes metrics as JSON lines and a learning-curve PNG into ``workdir``,
checkpoints with orbax (at the run's end, on ``KeyboardInterrupt``, every ``checkpoint_every_seconds`` and
every ``checkpoint_every_steps``, asynchronously), and selects the best epoch on validation loss with
early stopping (the protocol of Blier et al. 2019, Section 5). Re-running the same call with the same
``workdir`` resumes where it stopped and ends with exactly the parameters of an uninterrupted run: the
position in the data is derived from the step counter, every epoch's order is a function of ``(seed, epoch)``
and the dropout key lives in the state.
"""

from __future__ import annotations

import dataclasses
import os
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np
import optax

from randlr_jax import _checks as checks
from randlr_jax.training import _engine as engine
from randlr_jax.training import _plotting as plotting
from randlr_jax.training import _run_record as run_record
from randlr_jax.training._config import LoopConfig as LoopConfig
from randlr_jax.training._early_stopping import EarlyStopping
from randlr_jax.training._engine import StepCallback
from randlr_jax.training._feed import SplitFeed
from randlr_jax.training._nnx import adapt_model
from randlr_jax.training._records import host_metrics
from randlr_jax.training._sharding import replicate, shard_batch, to_host
from randlr_jax.training._state import TrainState, create_train_state, unalias
from randlr_jax.training._steps import make_eval_step, make_train_step, summarize


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
    run_info: dict | None = None,
    eval_params: Callable[[TrainState], Any] | None = None,
) -> FitResult:
    """Train ``model`` with ``tx`` on ``splits``, resuming from ``workdir`` if a checkpoint is there.

    Args:
      model: a Flax ``Classifier`` (classification) or ``LanguageModel`` (``task="language_model"``),
        or an ``nnx.Module`` (trained from its current values, never changed: write the result back
        with :func:`~randlr_jax.training.nnx_model`).
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
      eval_params: ``eval_params(state) -> params``, the parameters evaluated and kept instead of
        ``state.params``: every epoch's validation (and test) evaluation, the best epoch's copy
        (``best_params``) and the summary's test metrics are of them. E.g. a schedule-free
        optimizer's averaged iterate (Defazio et al. 2024, "The Road Less Scheduled"):
        ``lambda s: optax.contrib.schedule_free_eval_params(s.opt_state, s.params)``.
      run_info: what else determines the run (e.g. the optimizer's name and hyperparameters), recorded
        with the run's fingerprint in ``workdir/run.json``: re-running a started or finished ``workdir``
        with different settings raises a ``ValueError`` naming what differs (the epoch budget may grow).

    Returns:
      A :class:`FitResult`; ``summary["diverged"]`` says where a dead run was seen (see
      ``LoopConfig.on_divergence``), absent for a healthy one.

    Raises:
      ValueError: bad arguments, checked before anything is written or compiled (naming the argument:
        a ``model`` without ``init``/``apply``, a ``tx`` that is no transformation, a ``config`` that
        is no :class:`LoopConfig`, non-callable hooks or callbacks, splits of the wrong structure,
        unknown split names or a batch larger than the training split); bad splits (checked once, on
        the host, before training): classification labels that are not integers of shape ``(N,)`` in
        ``[0, K)`` (``K``: the model's outputs), language-model tokens outside ``[0, vocab)``,
        non-finite inputs.
      FileExistsError: ``workdir`` is a file.

    Warns:
      TrainingDiverged: once, when the run is seen dead (``LoopConfig.on_divergence``).
    """
    model = adapt_model(model)  # an nnx.Module trains through its Linen face
    checks.model("model", model)
    checks.transformation("tx", tx)
    check_config(config)
    checks.function(
        "train_step", train_step, "a function (state, batch) -> (state, metrics)", optional=True
    )
    if isinstance(callbacks, (str, bytes)) or not isinstance(callbacks, Sequence):
        checks.fail(
            "callbacks", "a sequence (a list) of functions callback(step, metrics)", callbacks
        )
    for index, callback in enumerate(callbacks):
        checks.function(f"callbacks[{index}]", callback, "a function callback(step, metrics)")
    checks.function("place_state", place_state, "a function (state, mesh) -> state", optional=True)
    checks.mapping("run_info", run_info, optional=True)
    checks.function("eval_params", eval_params, "a function state -> params", optional=True)
    workdir, mesh = engine.prepare(splits, config, workdir, task, copies=config.copy_shards)
    run_record.check_or_write(
        workdir,
        run_record.fingerprint(
            config,
            task=task,
            model=model,
            splits=splits,
            optimizer=tx,
            train_step=train_step,
            run_info=run_info,
            eval_params=eval_params,
        ),
    )
    data = SplitFeed(splits, config, task)
    carry = None
    if task == "language_model":
        # Kept on the host: every epoch start puts fresh buffers on the devices (the step donates them).
        carry = jax.tree.map(np.asarray, model.initial_carry(config.batch_size))
    engine.check_labels(data, model, carry)
    state = create_train_state(
        model, tx, jax.random.key(config.seed), data.sample_input(), carry=carry
    )
    state = (place_state or replicate_state)(state, mesh)
    # The same model and optimizer (or train_step) in the same process: compiled once.
    if train_step is None:
        step_fn = engine.compiled(make_train_step, model, tx, task=task, donate_argnums=0)
    else:  # run a chunk at a time by the engine's compiled loop (the same for the same function)
        step_fn = train_step
    eval_fn = engine.compiled(make_eval_step, model, task=task)  # of a state's own params
    params_fn = None
    if eval_params is not None:
        eval_fn = engine.compiled(make_eval_step, model, task=task, eval_params=eval_params)
        params_fn = engine.shared(jax.jit, eval_params)
    stopper = EarlyStopping(patience=config.patience)
    face = _Single(data, mesh, state, stopper, step_fn=step_fn, eval_fn=eval_fn, carry=carry)
    face.params_fn = params_fn
    face.best_eval_fn = engine.compiled(make_eval_step, model, task=task)

    run = engine.run(face, config, workdir, callbacks=callbacks)
    summary = _summarize(face, run)
    summary.update(
        steps_per_second=run.steps_per_second,
        wall_time_s=run.wall_time_s,
        num_devices=mesh.devices.size,
        device_kind=jax.devices()[0].device_kind,
    )
    summary.update(copy_shards=config.copy_shards, num_processes=jax.process_count())
    if run.diverged is not None:
        summary["diverged"] = run.diverged
    engine.write_results(workdir, summary)
    if jax.process_index() == 0 and run.history:  # (none: a dead run stopped in its first epoch)
        path = os.path.join(workdir, "learning_curves.png")
        try:
            plotting.learning_curves(run.history, path, task=task)
        except ImportError as error:  # matplotlib is the optional ``plotting`` extra
            warnings.warn(f"{path} not drawn: {error}", stacklevel=2)
    best = run.best
    return FitResult(run.state, best["params"], best["model_state"], run.history, summary)


def check_config(config: Any) -> None:
    if not isinstance(config, LoopConfig):
        checks.fail("config", "a LoopConfig (randlr_jax.training.LoopConfig(...))", config)


class _Single(engine.Face):
    """:func:`fit`'s face: one state, one :class:`EarlyStopping`, scalar records."""

    def __init__(self, data, mesh, state, stopper, *, step_fn, eval_fn, carry):
        super().__init__(data, mesh, state, stopper)
        self.step_fn, self.eval_fn = step_fn, eval_fn
        self.carry = carry  # on the host
        self.params_fn = None  # ``eval_params``, jitted (``None``: the state's own params)
        self.best_eval_fn = eval_fn  # evaluates a best copy's params as they are
        if carry is not None:
            self.state = state.replace(carry=self.fresh_carry())

    def fresh_carry(self) -> Any:
        return None if self.carry is None else unalias(shard_batch(self.carry, self.mesh))

    def postfix(self, epoch, metrics, examples_per_s):
        return {
            "epoch": epoch + 1,
            "loss": f"{metrics['loss']:.4f}",
            "ex_per_s": f"{examples_per_s:.0f}",
        }

    def epoch_fields(self, metrics):
        if metrics is None:
            return {}
        # vector metrics of the epoch's last step (e.g. Alrao's posterior)
        return {
            f"last_{k}": v.tolist()
            for k, v in host_metrics(to_host(metrics)).items()
            if isinstance(v, np.ndarray)
        }

    def evaluate(self, split, state):
        return _evaluate(self.data, split, state, self.eval_fn, self.mesh)

    def best_part(self, state):
        if self.params_fn is None:
            return super().best_part(state)
        return {"params": self.params_fn(state), "model_state": state.model_state}

    def merge_best(self, improved, current, best):
        return current


def replicate_state(state: TrainState, mesh: Any) -> TrainState:
    """The default placement of :func:`fit`: ``state`` replicated over ``mesh``."""
    if mesh.shape["copies"] > 1:
        raise ValueError(
            f"copy_shards={mesh.shape['copies']} splits the model over a 'copies' mesh axis: pass the "
            "placement of the state that says how, e.g. fit(..., place_state=randlr_jax.alrao.shard_state) "
            "for Alrao's classifier copies."
        )
    return replicate(state, mesh)


def _summarize(face: _Single, run: engine.Run) -> dict:
    summary: dict[str, Any] = {"epochs_run": len(run.history), "best_epoch": run.stopper.best_epoch}
    if "validation" in face.data.splits:
        summary["best_validation_loss"] = run.stopper.best_value
    if "test" in face.data.splits:
        best = run.best
        best_state = run.state.replace(params=best["params"], model_state=best["model_state"])
        evaluated = _evaluate(face.data, "test", best_state, face.best_eval_fn, face.mesh)
        for name, value in evaluated.items():
            summary[f"test_{name}"] = value
    if run.history:
        summary["final"] = run.history[-1]
    return summary


def _evaluate(feed: SplitFeed, split: str, state: TrainState, eval_fn, mesh) -> dict:
    """Mean loss and accuracy (bits per character) of ``state`` on ``split``, over the global batch."""

    def initial_carry(streams: int) -> Any:
        # The carry's structure is the training carry's, with ``streams`` rows.
        zeros = jax.tree.map(lambda c: np.zeros((streams,) + c.shape[1:], c.dtype), state.carry)
        return shard_batch(zeros, mesh)

    totals = feed.evaluation_sums(split, state, eval_fn, mesh, initial_carry)
    return {} if totals is None else summarize(totals, task=feed.task)
