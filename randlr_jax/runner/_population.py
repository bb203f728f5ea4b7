"""``train_and_evaluate_population``: a learning-rate grid as one vmapped run, from a plain config."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

import optax

from randlr_jax import _checks as checks
from randlr_jax.runner._runner import TrainConfig, build_model, record_run
from randlr_jax.runner._splits import load_splits
from randlr_jax.training._population import PopulationResult, fit_population


def train_and_evaluate_population(
    config: TrainConfig,
    workdir: str | os.PathLike,
    learning_rates: Sequence[float],
    *,
    optimizer: Callable[..., optax.GradientTransformation] = optax.sgd,
    max_train_tokens: int | None = None,
) -> PopulationResult:
    """One member per rate of ``learning_rates``, trained at once, resuming from ``workdir``.

    The population counterpart of :func:`~randlr_jax.runner.train_and_evaluate`: the data and model
    of ``config`` (splits from :func:`load_splits`, cached), the rates as one vmapped population
    (:func:`~randlr_jax.training.fit_population`: one compiled program, the same batches and the same
    initialisation for every member, early stopping and best-epoch selection per member), ``config.loop``
    for the loop. ``workdir/config.json`` records the optimizer's name and the rates in place of
    ``config``'s optimizer (unused), and ``workdir/run.json`` refuses a directory holding a run of
    other settings.

    Args:
      config: the data, model and loop settings.
      workdir: the run directory.
      learning_rates: ``(K,)`` rates, one member each (positive, finite).
      optimizer: an Optax factory taking ``learning_rate`` (default ``optax.sgd``: the SGD grid).
      max_train_tokens: language models: the training tokens kept (:func:`load_splits`).

    Returns:
      The :class:`~randlr_jax.training.PopulationResult`: ``summary["best_member"]`` and
      ``summary["best_learning_rate"]`` (the lowest best validation loss), ``members`` (one summary per
      rate, tested at its best epoch), ``history``.

    Raises:
      ValueError: a bad argument (naming it), checked before anything is written; a ``workdir``
        holding a run of other settings.

    Example::

      config = TrainConfig(dataset="mnist1d", loop=LoopConfig(epochs=5))
      result = train_and_evaluate_population(config, "runs/grid", [1e-3, 1e-2, 1e-1])
      result.summary["best_learning_rate"]
    """
    if not isinstance(config, TrainConfig):
        checks.fail("config", "a TrainConfig", config, shown=checks.brief(config))
    workdir = checks.path("workdir", workdir)
    if isinstance(learning_rates, (str, bytes)) or not isinstance(learning_rates, Sequence):
        checks.fail("learning_rates", "a non-empty sequence of rates > 0", learning_rates)
    if not learning_rates:
        checks.fail("learning_rates", "a non-empty sequence of rates > 0", learning_rates)
    rates = [checks.positive(f"learning_rates[{k}]", r) for k, r in enumerate(learning_rates)]
    for k, rate in enumerate(rates):
        checks.finite(f"learning_rates[{k}]", rate)
    checks.function("optimizer", optimizer, "an Optax factory optimizer(learning_rate, ...)")
    splits, spec, task = load_splits(config, max_train_tokens=max_train_tokens)
    model = build_model(config, spec)
    name = getattr(optimizer, "__name__", None) or repr(optimizer)
    record_run(
        workdir,
        config,
        model=model,
        tx=optimizer,
        splits=splits,
        task=task,
        learning_rates=learning_rates,
        run_info={"optimizer": name, "learning_rates": rates},
        overridden=True,
    )
    return fit_population(
        model, learning_rates, splits, config.loop, workdir, task=task, optimizer=optimizer
    )
