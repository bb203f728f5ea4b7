"""``LoopConfig``: the settings of the loop engine (:func:`~randlr_jax.training.fit`,
:func:`~randlr_jax.training.fit_population`), in a module of its own so the engine and both faces import it
without a cycle."""

from __future__ import annotations

import dataclasses

from randlr_jax import _checks as checks

# What the engine does when a run is seen dead (a non-finite loss, or a step's ``dead`` flag).
ON_DIVERGENCE = ("stop", "warn", "continue")


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
      checkpoint_every_steps: checkpoint every this many steps (``None``: not by step count). A
        checkpoint is always written at the run's end (the last epoch, an early stop, a divergence stop)
        and on ``KeyboardInterrupt``; in between the run checkpoints by this count and/or by
        ``checkpoint_every_seconds``, with orbax's asynchronous save (the loop goes on while the files
        are written). Set it to the steps of an epoch to checkpoint at every epoch's end.
      checkpoint_every_seconds: also checkpoint when this many seconds of wall-clock have passed since
        the last checkpoint (checked after each dispatch of steps and at each epoch's end; ``None``:
        not by time). A crash that is no ``KeyboardInterrupt`` (a killed process) loses at most this
        much training.
      num_devices: devices of the mesh (``None``: all devices of all processes).
      copy_shards: devices of the mesh's ``"copies"`` axis: Alrao's classifier copies are split over
        them (model parallel); the batch is split over the remaining ``num_devices // copy_shards``.
      seq_len: window length for truncated BPTT (language models only).
      eval_streams: number of parallel streams when evaluating a language model.
      prefetch: training batches gathered and placed ahead on a background thread while the step runs
        (``0``: none, each batch is loaded between steps). ``None``: 2 on GPU/TPU, 0 on CPU, where host
        and device share the cores (measured in ``benchmarks/input_pipeline.py``: prefetching does not
        pay there).
      log_every: refresh the progress bar, call the callbacks and look for divergence every this many
        steps (each of those waits for the device).
      steps_per_dispatch: training steps run by one call of the compiled program (a loop on the
        device over a chunk of batches: one dispatch and one host round trip per chunk instead of per
        step; same batches, same order, same numbers). A chunk also ends at every logging point
        (``log_every``), every ``checkpoint_every_steps`` and the epoch's end. ``None``: 64 (fewer when
        batches are streamed from the host, so that a chunk of them stays under 64 MiB).
      device_data_mb: a classification training split up to this many MiB (inputs and labels) is put
        on the devices once and each chunk of steps gathers its batches there from indices (only the
        indices cross from the host); the evaluation splits up to this size each are put there once
        too and evaluated by one compiled call. Larger splits (and several processes, and language
        models' training text) are streamed from the host, a chunk of batches at a time. ``0``: always
        stream.
      test_every_epoch: evaluate the test split at every epoch's end (``test_*`` keys in every
        record, for per-epoch test curves); by default the test split is evaluated once, at the best
        epoch's parameters (the summary's ``test_*``).
      progress: show a progress bar.
      description: label of the progress bar.
      on_divergence: what a dead run does, seen at the logging points (``log_every``) and the epochs'
        ends (a non-finite training loss, or the step's ``"dead"`` metric, e.g. every Alrao copy
        dropped): ``"stop"`` (default) warns once (:class:`~randlr_jax.training.TrainingDiverged`) and
        stops, the point checkpointed and ``summary["diverged"]`` set; ``"warn"`` warns once and trains
        on; ``"continue"`` trains on without looking. A population (``fit_population``) freezes each
        dead member at the epoch's end (except with ``"continue"``) and stops when every member still
        training is dead.
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
    steps_per_dispatch: int | None = None
    checkpoint_every_seconds: float | None = 60.0
    device_data_mb: float = 1024.0
    test_every_epoch: bool = False
    progress: bool = True
    description: str = "train"
    on_divergence: str = "stop"

    def __post_init__(self):
        """Every field checked when the config is made (``ValueError`` naming the field)."""
        for name in (
            "epochs",
            "batch_size",
            "eval_batch_size",
            "seq_len",
            "eval_streams",
            "log_every",
            "copy_shards",
        ):
            checks.positive_int(name, getattr(self, name))
        for name in ("patience", "checkpoint_every_steps", "num_devices", "steps_per_dispatch"):
            checks.positive_int(name, getattr(self, name), optional=True)
        checks.nonnegative_int("seed", self.seed)
        checks.nonnegative_int("prefetch", self.prefetch, optional=True)
        checks.boolean("drop_remainder", self.drop_remainder)
        checks.boolean("test_every_epoch", self.test_every_epoch)
        if self.checkpoint_every_seconds is not None:
            checks.positive("checkpoint_every_seconds", self.checkpoint_every_seconds, static=True)
        checks.nonnegative("device_data_mb", self.device_data_mb, static=True)
        checks.boolean("progress", self.progress)
        checks.text("description", self.description)
        checks.one_of("on_divergence", self.on_divergence, ON_DIVERGENCE)
