"""``train_and_evaluate(config, workdir)``: a whole run from a plain config (Flax-examples style).

Builds the data (``randlr_jax.data``), the model (``randlr_jax.models``) and the optimizer by name, then
calls :func:`randlr_jax.training.fit`. Re-running with the same ``workdir`` and the same settings resumes
(a larger ``loop.epochs`` continues the run); with other settings it refuses (the ``workdir/run.json``
record, :func:`record_run`). ``config.json`` records what ran, the optimizer included when ``tx=``
replaces the config's.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import numpy as np
import optax

from randlr_jax import _checks as checks
from randlr_jax.runner._optimizers import OPTIMIZERS, make_optimizer
from randlr_jax.runner._splits import load_splits
from randlr_jax.training import _run_record as run_record
from randlr_jax.training._loop import FitResult, LoopConfig, StepCallback, fit
from randlr_jax.training._nnx import adapt_model


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

    Every field is checked when the config is made (``ValueError`` naming it): the dataset (when the
    ``data`` extra is installed), model and optimizer names, the rate, the keyword dicts (Alrao needs
    ``lr_min <= lr_max``), ``validation_size``, ``data_dir`` and ``loop``.
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

    def __post_init__(self) -> None:
        _check_dataset(self.dataset)
        from randlr_jax import models

        if not isinstance(self.model, str) or self.model not in models.MODELS:
            checks.fail("model", f"one of {sorted(models.MODELS)}", self.model)
        checks.mapping("model_kwargs", self.model_kwargs, "a dict of the model's keyword arguments")
        known = sorted(OPTIMIZERS) + list(ALRAO_OPTIMIZERS)
        if not isinstance(self.optimizer, str) or self.optimizer not in known:
            checks.fail("optimizer", f"one of {known}", self.optimizer)
        checks.mapping(
            "optimizer_kwargs", self.optimizer_kwargs, "a dict of the optimizer's keyword arguments"
        )
        if self.optimizer in ALRAO_OPTIMIZERS:
            missing = [k for k in ("lr_min", "lr_max") if k not in self.optimizer_kwargs]
            if missing:
                raise ValueError(
                    f"optimizer {self.optimizer!r} needs optimizer_kwargs {missing} (the Alrao "
                    "interval)."
                )
            from randlr_jax.alrao._features import check_lr_interval

            check_lr_interval(self.optimizer_kwargs["lr_min"], self.optimizer_kwargs["lr_max"])
        else:
            checks.positive("learning_rate", self.learning_rate)
        _check_validation_size(self.validation_size)
        checks.path("data_dir", self.data_dir, optional=True)
        if not isinstance(self.loop, LoopConfig):
            checks.fail("loop", "a LoopConfig", self.loop, shown=checks.brief(self.loop))

    def replace(self, **changes) -> TrainConfig:
        return dataclasses.replace(self, **changes)


def _check_dataset(dataset: Any) -> None:
    """A dataset name (``"mnist1d"``, ``"mnist1d/large"``); against ``randlr_jax.data.DATASETS`` when
    the ``data`` extra is installed (else ``train_and_evaluate`` says it is missing)."""
    if not isinstance(dataset, str) or not dataset:
        checks.fail("dataset", "a dataset name (e.g. 'mnist1d')", dataset)
    try:
        from randlr_jax.data._specs import parse_name
    except ImportError:
        return
    try:
        parse_name(dataset)
    except ValueError as error:
        raise ValueError(f"dataset must be a known dataset name: {error}") from None


def _check_validation_size(validation_size: Any) -> None:
    """``None``, an int count ``>= 0`` or a float fraction in ``[0, 1)`` (as ``train_val_test``)."""
    if validation_size is None:
        return
    what = "None, an int count >= 0 or a float fraction in [0, 1)"
    if isinstance(validation_size, (bool, np.bool_)) or not isinstance(
        validation_size, (int, float, np.integer, np.floating)
    ):
        checks.fail("validation_size", what, validation_size)
    if isinstance(validation_size, (float, np.floating)):
        ok = 0.0 <= validation_size < 1.0
    else:
        ok = validation_size >= 0
    if not ok:
        checks.fail("validation_size", what, validation_size)


ALRAO_OPTIMIZERS = ("alrao_sgd", "alrao_adam")


def build_model(config: TrainConfig, spec: Any, head: Any = None) -> Any:
    """The model of ``config`` (``config.model`` with ``config.model_kwargs``) for the dataset ``spec``.

    Args:
      config: the run's config.
      spec: the dataset's ``randlr_jax.data`` spec (:func:`load_splits` returns it): a classifier
        gets ``num_classes=spec.num_classes``, a language model ``vocab_size=spec.num_classes``.
      head: the output layer (``None``: the model's own), e.g. an :class:`~randlr_jax.AlraoHead`.
    """
    from randlr_jax import models

    if spec.kind == "language_model":
        return models.make_model(
            config.model, vocab_size=spec.num_classes, head=head, **config.model_kwargs
        )
    return models.make_model(
        config.model, num_classes=spec.num_classes, head=head, **config.model_kwargs
    )


def build_alrao(config: TrainConfig, spec: Any, task: str) -> tuple[Any, Any, Any]:
    """Model with an Alrao head, the Alrao optimizer and its training step for ``config``.

    ``optimizer_kwargs["feature_guard"]`` (default ``False``) goes to the step
    (:func:`~randlr_jax.alrao.make_alrao_train_step`), not to the optimizer.
    """
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
    feature_guard = kwargs.pop("feature_guard", False)
    tx = factory(key, lr_min, lr_max, num_copies, **kwargs)
    return model, tx, make_alrao_train_step(model, tx, task=task, feature_guard=feature_guard)


# ``run_info`` keys kept at the top of ``config.json`` (the others describe the optimizer's arguments).
_TOP_LEVEL_INFO = ("optimizer", "learning_rate", "learning_rates")


def describe_config(
    config: TrainConfig,
    *,
    run_info: Mapping[str, Any] | None = None,
    tx: Any = None,
) -> dict[str, Any]:
    """``config`` as a JSON-ready dict that says which optimizer ran.

    Args:
      config: the run's config.
      run_info: what ran instead of ``config.optimizer`` (a ``tx=`` override): ``"optimizer"`` (its
        name, required), ``"learning_rate"``, a population's ``"learning_rates"``, and its other
        hyperparameters (recorded as ``optimizer_kwargs``).
      tx: the transformation that replaced the config's optimizer, when ``run_info`` does not describe
        it: recorded as ``"custom (tx=<its kind>)"`` with its digest (what can be known of it).

    Returns:
      ``dataclasses.asdict(config)`` with ``optimizer``, ``learning_rate`` and ``optimizer_kwargs``
      replaced by what ``run_info`` (or ``tx``) says ran.
    """
    record = dataclasses.asdict(config)
    if run_info is not None:
        run_info = dict(run_info)
        if not isinstance(run_info.get("optimizer"), str):
            raise ValueError(
                f"run_info must name the optimizer that ran (run_info['optimizer']), got {run_info!r}."
            )
        record["optimizer"] = run_info["optimizer"]
        record["learning_rate"] = run_info.get("learning_rate")
        if "learning_rates" in run_info:
            record["learning_rates"] = run_info["learning_rates"]
        record["optimizer_kwargs"] = {k: v for k, v in run_info.items() if k not in _TOP_LEVEL_INFO}
    elif tx is not None:
        description = run_record.describe(tx)
        record["optimizer"] = f"custom (tx={description['kind']})"
        record["learning_rate"] = None
        record["optimizer_kwargs"] = {}
        record["optimizer_digest"] = description["digest"]
    return run_record.normalize(record)


def write_config(
    workdir: str | os.PathLike,
    config: TrainConfig,
    *,
    run_info: Mapping[str, Any] | None = None,
    tx: Any = None,
) -> None:
    """Record what ran as ``workdir/config.json``: ``config``, its optimizer replaced by what ``run_info``
    (or a ``tx`` override) says ran (:func:`describe_config`)."""
    record = describe_config(config, run_info=run_info, tx=tx)
    os.makedirs(workdir, exist_ok=True)
    if jax.process_index() == 0:
        with open(os.path.join(workdir, "config.json"), "w") as f:
            json.dump(record, f, indent=2, default=repr)


def record_run(
    workdir: str | os.PathLike,
    config: TrainConfig,
    *,
    model: Any,
    tx: Any,
    splits: Mapping[str, Any],
    task: str,
    train_step: Any = None,
    learning_rates: Sequence[float] | None = None,
    run_info: Mapping[str, Any] | None = None,
    overridden: bool = False,
    eval_params: Any = None,
) -> None:
    """Check ``workdir`` holds no run of other settings (else ``ValueError``), then write ``config.json``.

    The ``"runner"`` record of ``workdir/run.json``
    (:func:`randlr_jax.training.check_or_write`) holds the loop settings, the task, the model, the
    optimizer (``tx``: a transformation, or a population's factory), the training step, the
    population's rates, a hash of the splits and ``config`` itself as :func:`describe_config` writes
    it (its optimizer as ``run_info`` says, the data directory left out).

    Args:
      workdir: the run directory.
      config: the run's config.
      model, tx, splits, task, train_step, learning_rates: what is handed to ``fit`` or
        ``fit_population``.
      run_info: the optimizer that ran, when not ``config.optimizer`` (:func:`describe_config`).
      overridden: ``tx`` replaces the config's optimizer (described by ``run_info`` if given).
      eval_params: ``fit``'s evaluation-parameters function (recorded: another one is another run).

    Raises:
      ValueError: ``workdir`` holds a run of other settings (the message names the differing keys).
    """
    model = adapt_model(model)  # an nnx.Module is recorded as fit records it
    described = describe_config(config, run_info=run_info, tx=tx if overridden else None)
    described = {k: v for k, v in described.items() if k not in ("loop", "data_dir")}
    record = run_record.fingerprint(
        config.loop,
        task=task,
        model=model,
        splits=splits,
        optimizer=tx,
        learning_rates=learning_rates,
        train_step=train_step,
        run_info=described,
        eval_params=eval_params,
    )
    run_record.check_or_write(workdir, record, section="runner")
    write_config(workdir, config, run_info=run_info, tx=tx if overridden else None)


def train_and_evaluate(
    config: TrainConfig,
    workdir: str | os.PathLike,
    *,
    tx: optax.GradientTransformation | None = None,
    callbacks: Sequence[StepCallback] = (),
    run_info: Mapping[str, Any] | None = None,
    max_train_tokens: int | None = None,
    eval_params: Callable[[Any], Any] | None = None,
) -> FitResult:
    """Run ``config`` in ``workdir`` (resuming if it holds a checkpoint of the same settings).

    Args:
      config: the run.
      workdir: the run directory: ``config.json`` (what ran), ``run.json`` (the record checked on
        resume) and :func:`~randlr_jax.training.fit`'s files.
      tx: replaces ``config``'s optimizer; describe it with ``run_info`` (else ``config.json`` records
        ``"custom (tx=...)"``).
      callbacks: handed to ``fit``.
      run_info: the optimizer ``tx`` is: ``{"optimizer": name, "learning_rate": rate, ...}``.
      max_train_tokens: language models: train on the first this many tokens only (and a tenth as
        many, at least 2,000, validation and test tokens; :func:`load_splits`).
      eval_params: ``state -> params``, the parameters evaluated and kept (``fit``'s), e.g.
        ``lambda s: optax.contrib.schedule_free_eval_params(s.opt_state, s.params)`` for a
        schedule-free optimizer's averaged iterate.

    Raises:
      ValueError: ``workdir`` holds a run of other settings (another optimizer, rate, model, data or
        budget; the message names them), or a bad config.
    """
    if run_info is not None and tx is None:
        raise ValueError(
            "run_info describes a tx= override; without tx the config's optimizer "
            f"({config.optimizer!r}) runs and config.json records it."
        )
    splits, spec, task = load_splits(config, max_train_tokens=max_train_tokens)
    train_step = place_state = None
    overridden = tx is not None
    if config.optimizer in ALRAO_OPTIMIZERS and tx is None:
        from randlr_jax import alrao

        model, tx, train_step = build_alrao(config, spec, task)
        place_state = alrao.shard_state
    else:
        model = build_model(config, spec)
        if tx is None:
            tx = make_optimizer(config.optimizer, config.learning_rate, **config.optimizer_kwargs)
    record_run(
        workdir,
        config,
        model=model,
        tx=tx,
        splits=splits,
        task=task,
        train_step=train_step,
        run_info=run_info,
        overridden=overridden,
        eval_params=eval_params,
    )
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
        eval_params=eval_params,
    )
