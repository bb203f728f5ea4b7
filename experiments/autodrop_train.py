"""AutoDrop against a hand-set step schedule: the AutoDrop paper's Table 1, Table 2, Fig. 6 and Fig. 7.

Teng, Wang, Choromanska, *AutoDrop: Training Deep Learning Models with Automatic Learning Rate Drop*,
2021 (https://arxiv.org/abs/2111.15317), Section 5: the rate dropped when the angular velocity of the
parameters saturates, against the usual schedule that drops it at fixed epochs.

Command (from the repository root)::

    .venv/bin/python -m experiments.autodrop_train --workdir runs/autodrop_train

Default configuration ``mnist1d_cnn``: the MNIST-1D CNN (``cnn1d``, 5,210 parameters) on the embedded
MNIST-1D (3,600 train / 400 validation / 1,000 test), momentum SGD (0.9), batch 128, 40 epochs (28 steps
each), 4 seeds (2 for Table 2's extra initial rates). Compared, all from the same initial rate:

- *baseline*: the rate multiplied by ``rho = 0.2`` at fixed epochs (50% and 75% of the run, the shape of
  the CIFAR schedules the paper compares with);
- *AutoDrop* with ``rho in {0.1, 0.2, 0.5}`` (``randlr_jax.autodrop``, one period = one epoch),
  ``min_learning_rate = 1e-4`` (the paper's), ``drop_delay = 4`` epochs (the paper's 20 of 200, 10% of
  the run), ``threshold = 0.5°``, ``max_threshold = 5°``. The paper's ``0.01° / 1°`` are for 390-step
  CIFAR epochs: with 28-step epochs the per-epoch angle moves by degrees at saturation (measured: |Δω|
  stayed above 0.05° over 60 epochs), so ``0.01°`` never fires; pass
  ``--threshold 0.01 --max-threshold 1`` to check.

Outputs under ``--workdir``: one ``fit`` run directory per (method, rate, seed) (resumable: re-running the
command continues and skips finished runs), ``results.json`` (per-run curves and the tables),
``table1.md``/``table2.md``/``fig7.md``, ``fig6_curves.png`` and ``fig7_epochs_to_best.png``.

- Table 1: final test error (last epoch) mean ± std over seeds, per method.
- Table 2: the same for the baseline and AutoDrop (``rho = 0.2``) at several initial rates.
- Fig. 7: epochs needed to reach the lowest test error (mean over seeds).
- Fig. 6: learning rate, train loss and test error per epoch (first seed).

Expected (default; 533 s (8.9 min) on 2 heavily loaded CPU cores): final test error 9.92 ± 1.33% for
the baseline against 16.07 ± 6.94%, 15.25 ± 5.91% and 12.45 ± 3.05% for AutoDrop at
``rho = 0.1, 0.2, 0.5`` (n = 4): on this small problem AutoDrop does not beat the step schedule; at
the initial rate 0.1 AutoDrop is slightly ahead (6.05 ± 0.07% against the baseline's 6.80 ± 1.41%,
n = 2: within the baseline's spread).

Configurations ``cifar10_resnet18`` and ``cifar10_wrn`` (``--config``; ``--preset`` is the same flag)
run the paper's own setting (200 epochs, rate 0.1, weight decay 5e-4, baseline drops at epochs
60/120/160, the paper's AutoDrop defaults) once CIFAR-10 is prepared (``randlr_jax.data`` prints the
command); without data augmentation (the training loop has none) the errors will be higher than the
paper's.

Quick (two runs of 3 epochs, a drop forced by a huge threshold; the test suite runs it)::

    .venv/bin/python -m experiments.autodrop_train --workdir /tmp/autodrop_train_quick --quick

gives final test errors 58.50% (baseline, dropped after epoch 2) and 56.10% (AutoDrop, dropped at
epoch 3) on one CPU device.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import time
from typing import Any

import jax
import numpy as np
import optax

from experiments import _common
from randlr_jax import autodrop, models
from randlr_jax import data as rdata
from randlr_jax.training import (
    LoopConfig,
    check_or_write,
    distributed,
    fingerprint,
    fit,
    make_train_step,
    new_figure,
    save_figure,
)

ALL_DEVICES = distributed.MeshSpec()  # --mesh auto: every device, data parallel


@dataclasses.dataclass(frozen=True)
class Config:
    """One study: data, model, base optimizer, baseline schedule and AutoDrop settings.

    Attributes:
      dataset, model, model_kwargs, validation_size: the data and the network.
      epochs, batch_size: the loop's budget (one AutoDrop period is one epoch).
      learning_rate: the initial rate of Table 1, Fig. 6 and Fig. 7.
      learning_rates: Table 2's initial rates (those besides ``learning_rate`` run the baseline and
        AutoDrop at ``rho = 0.2`` only, on the first ``table2_seeds`` seeds).
      momentum, weight_decay: the base optimizer (momentum SGD, decoupled weight decay if non-zero).
      baseline_drop_factor, baseline_milestones: the baseline's factor and its drop epochs as fractions
        of ``epochs``.
      drop_factors: AutoDrop's ``rho`` of Table 1.
      min_learning_rate, threshold, max_threshold, drop_delay: AutoDrop's ``alpha_min``, ``theta_0``
        and ``theta_max`` (degrees) and ``n_d`` (epochs).
      seeds: the seeds of Table 1 (``--seeds N``: ``0 .. N - 1``).
    """

    dataset: str = "mnist1d"
    model: str = "cnn1d"
    model_kwargs: dict = dataclasses.field(default_factory=dict)
    validation_size: int | float | None = 400
    epochs: int = 40
    batch_size: int = 128
    learning_rate: float = 0.05
    learning_rates: tuple[float, ...] = (0.1, 0.05, 0.02)  # Table 2
    momentum: float = 0.9
    weight_decay: float = 0.0
    baseline_drop_factor: float = 0.2
    baseline_milestones: tuple[float, ...] = (0.5, 0.75)  # fractions of the epochs
    drop_factors: tuple[float, ...] = (0.1, 0.2, 0.5)  # Table 1
    min_learning_rate: float = 1e-4
    threshold: float = 0.5
    max_threshold: float = 5.0
    drop_delay: int = 4
    seeds: tuple[int, ...] = (0, 1, 2, 3)
    table2_seeds: int = 2  # seeds of the extra initial rates (the first ones of ``seeds``)


# The former name: code rendering tables from results.json builds it from its keys.
Setup = Config

DEFAULT = Config()
CONFIGS = {
    "default": DEFAULT,  # = mnist1d_cnn, the study on data that runs anywhere
    "mnist1d_cnn": DEFAULT,
    "cifar10_resnet18": dataclasses.replace(
        DEFAULT,
        dataset="cifar10",
        model="resnet18",
        validation_size=5000,
        epochs=200,
        learning_rate=0.1,
        learning_rates=(0.15, 0.1, 0.05, 0.03),
        weight_decay=5e-4,
        baseline_milestones=(0.3, 0.6, 0.8),
        threshold=0.01,
        max_threshold=1.0,
        drop_delay=20,
    ),
    "cifar10_wrn": dataclasses.replace(
        DEFAULT,
        dataset="cifar10",
        model="wrn28_10",
        validation_size=5000,
        epochs=200,
        learning_rate=0.1,
        learning_rates=(0.1,),
        weight_decay=5e-4,
        baseline_milestones=(0.3, 0.6, 0.8),
        threshold=0.01,
        max_threshold=1.0,
        drop_delay=20,
    ),
}


def quick(setup: Config) -> Config:
    """The same code path at test-suite size: one seed, 3 epochs, a drop forced by a huge threshold."""
    return dataclasses.replace(
        setup,
        epochs=3,
        learning_rates=(setup.learning_rate,),
        drop_factors=(0.2,),
        threshold=90.0,
        max_threshold=90.0,
        drop_delay=0,
        seeds=(0,),
    )


def baseline_schedule(setup: Config, learning_rate: float, steps_per_epoch: int) -> optax.Schedule:
    boundaries = {
        int(round(f * setup.epochs)) * steps_per_epoch: setup.baseline_drop_factor
        for f in setup.baseline_milestones
    }
    return optax.piecewise_constant_schedule(learning_rate, boundaries)


def make_tx(
    setup: Config, method: str, learning_rate: float, steps_per_epoch: int
) -> optax.GradientTransformation:
    """``"baseline"`` or ``"autodrop_<rho>"`` on top of (weight decay +) momentum SGD."""
    decay = [optax.add_decayed_weights(setup.weight_decay)] if setup.weight_decay else []
    if method == "baseline":
        schedule = baseline_schedule(setup, learning_rate, steps_per_epoch)
        return optax.chain(*decay, optax.sgd(schedule, momentum=setup.momentum))
    rho = float(method.split("_")[1])
    return optax.chain(
        *decay,
        optax.sgd(learning_rate, momentum=setup.momentum),
        autodrop(
            learning_rate,
            rho,
            steps_per_period=steps_per_epoch,
            min_learning_rate=setup.min_learning_rate,
            threshold=setup.threshold,
            max_threshold=setup.max_threshold,
            drop_delay=setup.drop_delay,
        ),
    )


# The Config fields a run of each kind depends on (besides data, model and loop): its run record.
_COMMON_FIELDS = ("momentum", "weight_decay")
_METHOD_FIELDS = {
    "baseline": ("baseline_drop_factor", "baseline_milestones"),
    "autodrop": ("min_learning_rate", "threshold", "max_threshold", "drop_delay"),
}


def method_info(setup: Config, method: str, learning_rate: float) -> dict[str, Any]:
    """What a run of ``method`` trains with (recorded in its directory's ``run.json``)."""
    kind = "baseline" if method == "baseline" else "autodrop"
    info: dict[str, Any] = {"optimizer": method, "learning_rate": learning_rate}
    for name in _COMMON_FIELDS + _METHOD_FIELDS[kind]:
        info[name] = getattr(setup, name)
    return info


def run_one(
    setup: Config,
    method: str,
    learning_rate: float,
    seed: int,
    workdir: str,
    mesh: distributed.MeshSpec = ALL_DEVICES,
) -> dict:
    splits = rdata.train_val_test(setup.dataset, validation_size=setup.validation_size, seed=seed)
    num_classes = rdata.get_spec(setup.dataset).num_classes
    model = models.make_model(setup.model, num_classes=num_classes, **setup.model_kwargs)
    steps_per_epoch = rdata.num_batches(len(splits["train"]["y"]), setup.batch_size, True)
    tx = make_tx(setup, method, learning_rate, steps_per_epoch)
    name = f"{method}_lr{learning_rate:g}_seed{seed}"
    config = LoopConfig(
        epochs=setup.epochs,
        batch_size=setup.batch_size,
        seed=seed,
        progress=False,
        description=name,
        log_every=steps_per_epoch,
        num_devices=mesh.num_devices,
        copy_shards=mesh.copies,
        test_every_epoch=True,  # the per-epoch test error curves
    )
    train_step = (
        None
        if method == "baseline"
        else make_train_step(model, tx, extra_metrics=autodrop.autodrop_metrics)
    )
    run_dir = os.path.join(workdir, name)
    # A directory holding a run of other settings (e.g. another --threshold) is refused, not resumed.
    record = fingerprint(
        config,
        task="classification",
        model=model,
        splits=splits,
        optimizer=tx,
        train_step=train_step,
        run_info=method_info(setup, method, learning_rate),
    )
    check_or_write(run_dir, record, section="experiment")
    result = fit(model, tx, splits, config, run_dir, train_step=train_step)
    history = result.history
    if method == "baseline":
        schedule = baseline_schedule(setup, learning_rate, steps_per_epoch)
        # The rate of the epoch's last step (the one the next epoch starts with after a boundary).
        rates = [float(schedule(h["step"])) for h in history]
        angles, drops = [], []
    else:
        # The rate and angle logged by ``autodrop_metrics`` at each epoch's last step.
        curves = autodrop.autodrop_curves(history)
        rates, angles, drops = curves["learning_rate"], curves["angle"], curves["drop_epochs"]
    test_error = [1.0 - h["test_accuracy"] for h in history]
    return {
        "method": method,
        "learning_rate": learning_rate,
        "seed": seed,
        "final_test_error": test_error[-1],
        "best_test_error": min(test_error),
        "epochs_to_best": int(np.argmin(test_error)) + 1,
        "drop_epochs": drops,
        "curves": {
            "learning_rate": rates,
            "angle": angles,
            "train_loss": [h["train_loss"] for h in history],
            "test_error": test_error,
        },
        "steps_per_second": result.summary.get("steps_per_second"),
    }


def seed_count(text: str) -> tuple[int, ...]:
    """An argparse ``type=``: ``--seeds N`` (``N >= 1``) is the seeds ``0 .. N - 1``."""
    return tuple(range(_common.positive_int(text)))


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    _common.add_config_arguments(
        parser, CONFIGS, workdir="runs/autodrop_train", default="mnist1d_cnn"
    )
    parser.add_argument(
        "--preset", dest="config", choices=sorted(CONFIGS), default=argparse.SUPPRESS,
        help="the same as --config",
    )  # fmt: skip
    parser.add_argument("--epochs", type=_common.positive_int)
    parser.add_argument("--seeds", type=seed_count, help="number of seeds (0 .. N - 1)")
    parser.add_argument("--threshold", type=_common.positive_float, help="theta_0 in degrees")
    parser.add_argument("--max-threshold", type=_common.positive_float, help="theta_max in degrees")
    parser.add_argument("--drop-delay", type=_common.nonnegative_int, help="n_d in epochs")
    distributed.add_arguments(parser)
    args = parser.parse_args(argv)
    mesh = distributed.from_args(args)
    setup = _common.resolve_config(args, CONFIGS, quick)
    t0 = time.perf_counter()

    jobs = [("baseline", setup.learning_rate)]
    jobs += [(f"autodrop_{rho:g}", setup.learning_rate) for rho in setup.drop_factors]
    for rate in setup.learning_rates:
        if rate != setup.learning_rate:
            jobs += [("baseline", rate), ("autodrop_0.2", rate)]
    runs = []
    for method, rate in jobs:
        seeds = setup.seeds if rate == setup.learning_rate else setup.seeds[: setup.table2_seeds]
        for seed in seeds:
            runs.append(run_one(setup, method, rate, seed, args.workdir, mesh))

    tables = {
        "table1": table1(runs, setup),
        "table2": table2(runs, setup),
        "fig7": fig7_table(runs, setup),
    }
    results = {
        "setup": dataclasses.asdict(setup),
        "device_kind": jax.devices()[0].device_kind,
        "runs": runs,
        "tables": tables,
    }
    figures = [
        _fig6(runs, setup, os.path.join(args.workdir, "fig6_curves.png")),
        _fig7(runs, setup, os.path.join(args.workdir, "fig7_epochs_to_best.png")),
    ]
    return _common.finish(args.workdir, results, tables=tables, figures=figures, started=t0)


def _label(method: str, setup: Config) -> str:
    if method == "baseline":
        return f"Baseline (ρ = {setup.baseline_drop_factor:g})"
    return f"AutoDrop (ρ = {method.split('_')[1]})"


def _stats(runs: list[dict], key: str) -> tuple[float, float, int]:
    values = np.asarray([r[key] for r in runs], np.float64)
    std = float(values.std(ddof=1)) if len(values) > 1 else 0.0
    return float(values.mean()), std, len(values)


def _select(runs, method, rate):
    return [r for r in runs if r["method"] == method and r["learning_rate"] == rate]


def table1(runs: list[dict], setup: Config) -> str:
    lines = [
        f"| method ({setup.model}, {setup.dataset}, rate {setup.learning_rate:g}) | final test error [%] "
        "| best test error [%] | drops at epoch (first seed) |",
        "|---|---:|---:|---|",
    ]
    methods = ["baseline"] + [f"autodrop_{rho:g}" for rho in setup.drop_factors]
    for method in methods:
        selected = _select(runs, method, setup.learning_rate)
        mean, std, n = _stats(selected, "final_test_error")
        best, best_std, _ = _stats(selected, "best_test_error")
        if method == "baseline":
            epochs = sorted({int(round(f * setup.epochs)) for f in setup.baseline_milestones})
        else:
            epochs = selected[0]["drop_epochs"]
        drops = ", ".join(map(str, epochs))
        lines.append(
            f"| {_label(method, setup)} | {100 * mean:.2f} ± {100 * std:.2f} (n={n}) | "
            f"{100 * best:.2f} ± {100 * best_std:.2f} | {drops or '-'} |"
        )
    return "\n".join(lines)


def table2(runs: list[dict], setup: Config) -> str:
    lines = [
        "| initial rate | Baseline (ρ = 0.2) final test error [%] | AutoDrop (ρ = 0.2) final test error [%] |",
        "|---:|---:|---:|",
    ]
    for rate in setup.learning_rates:
        cells = []
        for method in ("baseline", "autodrop_0.2"):
            selected = _select(runs, method, rate)
            if not selected:
                cells.append("-")
                continue
            mean, std, n = _stats(selected, "final_test_error")
            cells.append(f"{100 * mean:.2f} ± {100 * std:.2f} (n={n})")
        lines.append(f"| {rate:g} | {cells[0]} | {cells[1]} |")
    return "\n".join(lines)


def fig7_table(runs: list[dict], setup: Config) -> str:
    lines = [
        "| method (rate "
        + f"{setup.learning_rate:g}) | epochs to the lowest test error (mean ± std) |",
        "|---|---:|",
    ]
    for method in ("baseline", "autodrop_0.2"):
        selected = _select(runs, method, setup.learning_rate)
        if selected:
            mean, std, n = _stats(selected, "epochs_to_best")
            lines.append(f"| {_label(method, setup)} | {mean:.1f} ± {std:.1f} (n={n}) |")
    return "\n".join(lines)


def _fig6(runs: list[dict], setup: Config, path: str) -> str:
    fig = new_figure(figsize=(15, 4))
    axes = fig.subplots(1, 3)
    methods = ["baseline"] + [f"autodrop_{rho:g}" for rho in setup.drop_factors]
    for method in methods:
        selected = _select(runs, method, setup.learning_rate)
        if not selected:
            continue
        curves = selected[0]["curves"]
        epochs = np.arange(1, len(curves["test_error"]) + 1)
        axes[0].plot(epochs, curves["learning_rate"], label=_label(method, setup))
        axes[1].plot(epochs, curves["train_loss"], label=_label(method, setup))
        axes[2].plot(epochs, 100 * np.asarray(curves["test_error"]), label=_label(method, setup))
    axes[0].set_yscale("log")
    axes[0].set_ylabel("learning rate")
    axes[1].set_yscale("log")
    axes[1].set_ylabel("train loss")
    axes[2].set_ylabel("test error [%]")
    for ax in axes:
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(f"{setup.model} on {setup.dataset} (seed {setup.seeds[0]})")
    return save_figure(fig, path)


def _fig7(runs: list[dict], setup: Config, path: str) -> str:
    fig = new_figure(figsize=(5, 4))
    ax = fig.subplots()
    names, means, stds = [], [], []
    for method in ("baseline", "autodrop_0.2"):
        selected = _select(runs, method, setup.learning_rate)
        if selected:
            mean, std, _ = _stats(selected, "epochs_to_best")
            names.append(_label(method, setup))
            means.append(mean)
            stds.append(std)
    ax.bar(names, means, yerr=stds, capsize=6)
    ax.set_ylabel("epochs to the lowest test error")
    ax.grid(alpha=0.3, axis="y")
    return save_figure(fig, path)


if __name__ == "__main__":
    main()
