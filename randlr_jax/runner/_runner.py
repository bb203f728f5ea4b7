"""``train_and_evaluate(config, workdir)``: a whole run from a plain config (Flax-examples style).

Builds the data (``randlr_jax.data``), the model (``randlr_jax.models``) and the optimizer by name, then
calls :func:`randlr_jax.training.fit`. Re-running with the same ``workdir`` resumes.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Sequence
from typing import Any

import jax
import optax

from randlr_jax.runner._optimizers import make_optimizer
from randlr_jax.training._loop import FitResult, LoopConfig, StepCallback, fit


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """A run: data, model, optimizer and loop settings.

    Attributes:
      dataset: a name known to ``randlr_jax.data.DATASETS`` (``"mnist1d"``, ``"digits"``, ``"cifar10"``, ...).
      model: a name known to ``randlr_jax.models.MODELS``.
      model_kwargs: extra keyword arguments of the model factory.
      optimizer: a name known to ``randlr_jax.runner.OPTIMIZERS``, or ``"alrao_sgd"`` / ``"alrao_adam"``
        (the model then gets an :class:`~randlr_jax.AlraoHead` and trains with the Alrao step).
      learning_rate: the optimizer's learning rate (unused by Alrao, which takes ``lr_min``/``lr_max``).
      optimizer_kwargs: extra keyword arguments of the optimizer factory. For Alrao: ``lr_min``,
        ``lr_max``, ``num_copies`` (default 10), ``averaging``/``theta`` (of the head), and the
        optimizer's own (``momentum``, ``per``, ...).
      validation_size: examples (int) or fraction (float) carved from train for validation; ``None``: the
        dataset's own validation split if it has one, else no validation.
      data_dir: TFDS data dir (default: ``TFDS_DATA_DIR`` or TFDS's default).
      loop: the loop settings.
    """

    dataset: str = "mnist1d"
    model: str = "mlp"
    model_kwargs: dict = dataclasses.field(default_factory=dict)
    optimizer: str = "sgd"
    learning_rate: float = 0.1
    optimizer_kwargs: dict = dataclasses.field(default_factory=dict)
    validation_size: int | float | None = 0.1
    data_dir: str | None = None
    loop: LoopConfig = dataclasses.field(default_factory=LoopConfig)

    def replace(self, **changes) -> TrainConfig:
        return dataclasses.replace(self, **changes)


def load_splits(config: TrainConfig) -> tuple[dict, Any, str]:
    """The in-memory splits, the dataset spec and the task of ``config.dataset``."""
    from randlr_jax import data as rdata

    spec = rdata.get_spec(config.dataset)
    if spec.kind == "language_model":
        splits = {
            split: rdata.load_tokens(config.dataset, split, data_dir=config.data_dir)
            for split in spec.splits
        }
        return splits, spec, "language_model"
    splits = rdata.train_val_test(
        config.dataset,
        validation_size=config.validation_size,
        seed=config.loop.seed,
        data_dir=config.data_dir,
    )
    return splits, spec, "classification"


ALRAO_OPTIMIZERS = ("alrao_sgd", "alrao_adam")


def build_model(config: TrainConfig, spec: Any, head: Any = None) -> Any:
    from randlr_jax import models

    if spec.kind == "language_model":
        return models.make_model(
            config.model, vocab_size=spec.num_classes, head=head, **config.model_kwargs
        )
    return models.make_model(
        config.model, num_classes=spec.num_classes, head=head, **config.model_kwargs
    )


def build_alrao(config: TrainConfig, spec: Any, task: str) -> tuple[Any, Any, Any]:
    """Model with an Alrao head, the Alrao optimizer and its training step for ``config``."""
    from randlr_jax.alrao import _copies as classifier_copies
    from randlr_jax.alrao import _optimizers as _alrao
    from randlr_jax.alrao._step import make_alrao_train_step

    kwargs = dict(config.optimizer_kwargs)
    missing = [k for k in ("lr_min", "lr_max") if k not in kwargs]
    if missing:
        raise ValueError(
            f"optimizer {config.optimizer!r} needs optimizer_kwargs {missing} (the Alrao interval)."
        )
    num_copies = kwargs.pop("num_copies", 10)
    head_kwargs = {
        k: kwargs.pop(k) for k in ("averaging", "theta", "copy_chunk_size") if k in kwargs
    }
    head = classifier_copies.AlraoHead(
        num_outputs=spec.num_classes, num_copies=num_copies, **head_kwargs
    )
    model = build_model(config, spec, head=head)
    factory = {"alrao_sgd": _alrao.alrao_sgd, "alrao_adam": _alrao.alrao_adam}[config.optimizer]
    key = jax.random.fold_in(jax.random.key(config.loop.seed), 1)
    lr_min, lr_max = kwargs.pop("lr_min"), kwargs.pop("lr_max")
    tx = factory(key, lr_min, lr_max, num_copies, **kwargs)
    return model, tx, make_alrao_train_step(model, tx, task=task)


def write_config(workdir: str | os.PathLike, config: TrainConfig) -> None:
    """Record ``config`` as ``workdir/config.json`` (what produced the run's results)."""
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, "config.json"), "w") as f:
        json.dump(dataclasses.asdict(config), f, indent=2, default=repr)


def train_and_evaluate(
    config: TrainConfig,
    workdir: str | os.PathLike,
    *,
    tx: optax.GradientTransformation | None = None,
    callbacks: Sequence[StepCallback] = (),
) -> FitResult:
    """Run ``config`` in ``workdir`` (resuming if it holds a checkpoint); ``tx`` overrides the optimizer."""
    splits, spec, task = load_splits(config)
    train_step = place_state = None
    if config.optimizer in ALRAO_OPTIMIZERS and tx is None:
        from randlr_jax import alrao

        model, tx, train_step = build_alrao(config, spec, task)
        place_state = alrao.shard_state
    else:
        model = build_model(config, spec)
        if tx is None:
            tx = make_optimizer(config.optimizer, config.learning_rate, **config.optimizer_kwargs)
    write_config(workdir, config)
    return fit(
        model,
        tx,
        splits,
        config.loop,
        workdir,
        task=task,
        train_step=train_step,
        callbacks=callbacks,
        place_state=place_state,
    )
