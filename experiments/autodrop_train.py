"""AutoDrop against a hand-set step schedule: seed 004's Table 1, Table 2, Fig. 6 and Fig. 7 analogues.

Command (from the repository root)::

    .venv/bin/python -m experiments.autodrop_train --workdir runs/autodrop_train

Default preset ``mnist1d_cnn``: the MNIST-1D CNN (``cnn1d``, 5,210 parameters) on the embedded MNIST-1D
(3,600 train / 400 validation / 1,000 test), momentum SGD (0.9), batch 128, 40 epochs (28 steps each),
4 seeds (2 for Table 2's extra initial rates). Compared, all from the same initial rate:

- *baseline*: the rate multiplied by ``rho = 0.2`` at fixed epochs (50% and 75% of the run, the shape of
  the CIFAR schedules the seed compares with);
- *AutoDrop* with ``rho in {0.1, 0.2, 0.5}`` (``randlr_jax.autodrop``, one period = one epoch),
  ``min_learning_rate = 1e-4`` (seed), ``drop_delay = 4`` epochs (the seed's 20 of 200, 10% of the run),
  ``threshold = 0.5°``, ``max_threshold = 5°``. The seed's ``0.01° / 1°`` are for 390-step CIFAR epochs:
  with 28-step epochs the per-epoch angle moves by degrees at saturation (measured: |Δω| stayed above
  0.05° over 60 epochs), so ``0.01°`` never fires; pass ``--threshold 0.01 --max-threshold 1`` to check.

Outputs under ``--workdir``: one ``fit`` run directory per (method, rate, seed) (resumable: re-running the
command continues and skips finished runs), ``results.json`` (per-run curves and the tables),
``table1.md``/``table2.md``/``fig7.md``, ``fig6_curves.png`` and ``fig7_epochs_to_best.png``.

- Table 1: final test error (last epoch) mean ± std over seeds, per method.
- Table 2: the same for the baseline and AutoDrop (``rho = 0.2``) at several initial rates.
- Fig. 7: epochs needed to reach the lowest test error (mean over seeds).
- Fig. 6: learning rate, train loss and test error per epoch (first seed).

Presets ``cifar10_resnet18`` and ``cifar10_wrn`` run the seed's own setting (200 epochs, rate 0.1, weight
decay 5e-4, baseline drops at epochs 60/120/160, the seed's AutoDrop defaults) once CIFAR-10 is prepared
(``randlr_jax.data`` prints the command); without data augmentation (the training loop has none) the
errors will be higher than the paper's. ``--quick`` shrinks the default to two runs of 3 epochs for the
test suite.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import optax

from experiments._common import nonnegative_int, positive_float, positive_int
from randlr_jax import autodrop, models
from randlr_jax import data as rdata
from randlr_jax.autodrop import get_autodrop_state
from randlr_jax.training import (
    LoopConfig,
    check_or_write,
    distributed,
    fingerprint,
    fit,
    make_train_step,
)

ALL_DEVICES = distributed.MeshSpec()  # --mesh auto: every device, data parallel


@dataclasses.dataclass(frozen=True)
class Setup:
    """One study: data, model, base optimizer, baseline schedule and AutoDrop settings."""

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


PRESETS = {
    "mnist1d_cnn": Setup(),
    "cifar10_resnet18": Setup(
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
    "cifar10_wrn": Setup(
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


def quick(setup: Setup) -> Setup:
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


def baseline_schedule(setup: Setup, learning_rate: float, steps_per_epoch: int) -> optax.Schedule:
    boundaries = {
        int(round(f * setup.epochs)) * steps_per_epoch: setup.baseline_drop_factor
        for f in setup.baseline_milestones
    }
    return optax.piecewise_constant_schedule(learning_rate, boundaries)


def make_tx(
    setup: Setup, method: str, learning_rate: float, steps_per_epoch: int
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


def logged_step(model: Any, tx: optax.GradientTransformation):
    """The standard step plus AutoDrop's state as a vector metric (the loop keeps the epoch's last one).

    ``autodrop``: ``[learning_rate, angle, drop_phase, num_drops]`` of the optimizer state after the step.
    """

    def autodrop_metrics(state, new_state, batch, aux):
        ad = get_autodrop_state(new_state.opt_state)
        return {
            "autodrop": jnp.stack(
                [
                    ad.learning_rate,
                    ad.angle,
                    ad.drop_phase.astype(jnp.float32),
                    ad.num_drops.astype(jnp.float32),
                ]
            )
        }

    return make_train_step(model, tx, extra_metrics=autodrop_metrics)


# The Setup fields a run of each kind depends on (besides data, model and loop): its run record.
_COMMON_FIELDS = ("momentum", "weight_decay")
_METHOD_FIELDS = {
    "baseline": ("baseline_drop_factor", "baseline_milestones"),
    "autodrop": ("min_learning_rate", "threshold", "max_threshold", "drop_delay"),
}


def method_info(setup: Setup, method: str, learning_rate: float) -> dict[str, Any]:
    """What a run of ``method`` trains with (recorded in its directory's ``run.json``)."""
    kind = "baseline" if method == "baseline" else "autodrop"
    info: dict[str, Any] = {"optimizer": method, "learning_rate": learning_rate}
    for name in _COMMON_FIELDS + _METHOD_FIELDS[kind]:
        info[name] = getattr(setup, name)
    return info


def run_one(
    setup: Setup,
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
    )
    train_step = None if method == "baseline" else logged_step(model, tx)
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
        logs = np.asarray([h["last_autodrop"] for h in history])
        rates, angles = logs[:, 0].tolist(), logs[:, 1].tolist()
        counts = logs[:, 3]
        drops = [
            int(history[i]["epoch"]) for i in range(len(history)) if i and counts[i] > counts[i - 1]
        ]
        drops = ([int(history[0]["epoch"])] if counts[0] > 0 else []) + drops
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


def main(argv=None) -> dict:
    matplotlib.use("Agg")  # figures go to files; the entry point, not an import, picks the backend
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default="runs/autodrop_train", help="run directory (resumes)")
    parser.add_argument("--preset", default="mnist1d_cnn", choices=sorted(PRESETS))
    parser.add_argument("--quick", action="store_true", help="2 runs of 3 epochs (smoke test)")
    parser.add_argument("--epochs", type=positive_int, default=None)
    parser.add_argument("--seeds", type=positive_int, default=None, help="number of seeds")
    parser.add_argument("--threshold", type=positive_float, default=None, help="theta_0 in degrees")
    parser.add_argument(
        "--max-threshold", type=positive_float, default=None, help="theta_max in degrees"
    )
    parser.add_argument("--drop-delay", type=nonnegative_int, default=None, help="n_d in epochs")
    distributed.add_arguments(parser)
    args = parser.parse_args(argv)
    mesh = distributed.from_args(args)
    setup = PRESETS[args.preset]
    if args.quick:
        setup = quick(setup)
    overrides = {
        "epochs": args.epochs,
        "threshold": args.threshold,
        "max_threshold": args.max_threshold,
        "drop_delay": args.drop_delay,
        "seeds": None if args.seeds is None else tuple(range(args.seeds)),
    }
    setup = dataclasses.replace(setup, **{k: v for k, v in overrides.items() if v is not None})
    os.makedirs(args.workdir, exist_ok=True)
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
        "wall_time_s": time.perf_counter() - t0,
    }
    results_path = os.path.join(args.workdir, "results.json")
    with open(results_path, "w") as f:
        json.dump(results, f, indent=2)
    for name, text in tables.items():
        with open(os.path.join(args.workdir, f"{name}.md"), "w") as f:
            f.write(text + "\n")
    figures = [
        _fig6(runs, setup, os.path.join(args.workdir, "fig6_curves.png")),
        _fig7(runs, setup, os.path.join(args.workdir, "fig7_epochs_to_best.png")),
    ]
    for text in tables.values():
        print()
        print(text)
    print(f"\nwall time {time.perf_counter() - t0:.1f} s")
    print(f"results: {os.path.abspath(results_path)}")
    print("figures: " + ", ".join(os.path.abspath(f) for f in figures))
    return results


def _label(method: str, setup: Setup) -> str:
    if method == "baseline":
        return f"Baseline (ρ = {setup.baseline_drop_factor:g})"
    return f"AutoDrop (ρ = {method.split('_')[1]})"


def _stats(runs: list[dict], key: str) -> tuple[float, float, int]:
    values = np.asarray([r[key] for r in runs], np.float64)
    std = float(values.std(ddof=1)) if len(values) > 1 else 0.0
    return float(values.mean()), std, len(values)


def _select(runs, method, rate):
    return [r for r in runs if r["method"] == method and r["learning_rate"] == rate]


def table1(runs: list[dict], setup: Setup) -> str:
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


def table2(runs: list[dict], setup: Setup) -> str:
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


def fig7_table(runs: list[dict], setup: Setup) -> str:
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


def _fig6(runs: list[dict], setup: Setup, path: str) -> str:
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
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
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _fig7(runs: list[dict], setup: Setup, path: str) -> str:
    fig, ax = plt.subplots(figsize=(5, 4))
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
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


if __name__ == "__main__":
    main()
