"""LR range test, cyclical rates and 1cycle on MNIST-1D, and the range test's interval for Alrao.

Smith, *Cyclical Learning Rates for Training Neural Networks*, 2017 (https://arxiv.org/abs/1506.01186)
and *A disciplined approach to neural network hyper-parameters*, 2018
(https://arxiv.org/abs/1803.09820), as presented in Morris's article on learning rates: a range test
that raises the rate until the loss blows up, a triangular cyclical schedule and 1cycle over the range it
suggests, with momentum cycled inversely; and the same range test's interval handed to Alrao (Blier,
Wolinski, Ollivier, *Learning with Random Learning Rates*, 2019).

Command (from the repository root)::

    .venv/bin/python -m experiments.smith --workdir runs/smith

For the MNIST-1D MLP (100-100 ReLU) and CNN (``cnn1d``), with the embedded data (3600 train / 400
validation / 1000 test):

1. LR range tests from the initial parameters (1e-5 -> 10 over 200 steps): with SGD + momentum 0.9 (for
   the schedules) and with plain SGD (for Alrao, which uses plain SGD); figure ``range_tests.png``.
2. Training for the same budget (24 epochs of 28 steps) with SGD + momentum: constant rates
   ``{0.3, 1, 3} x`` the range test's ``min/10`` (the one with the best final validation accuracy is
   "the best constant rate"), triangular CLR over the suggested ``cyclic_range`` (4 cycles, momentum
   cycled 0.9 -> 0.8 as PyTorch's ``CyclicLR``), and 1cycle from the same minimum to the same maximum
   (momentum 0.95 -> 0.85 -> 0.95); figure ``schedules.png`` of the rates and momenta used.
3. Alrao-SGD (10 classifier copies) on the plain-SGD range test's ``alrao_range`` and on its default
   interval ``(1e-5, 10)``.

Writes under ``--workdir``: ``<model>/range_test_*.{json,png}``, one run directory per training run
(``metrics.jsonl``, ``results.json``, ``learning_curves.png``, ``checkpoints/``), ``summary.json``,
``results.md`` (the table), ``range_tests.png``, ``schedules.png`` and ``test_accuracy.png``. Running the
same command again resumes (finished range tests and runs are read back); ``--epochs N`` sets the
training budget. A workdir holding results of other settings is refused (``run.json``), not read back.

Expected (default; 324 s (5.4 min) on 2 heavily loaded CPU cores): MLP range test with SGD +
momentum: loss minimum at 0.821, cyclic range 0.0685 - 0.274; final test accuracy 0.629 at the best
constant rate (0.0821), 0.640 for triangular CLR and 0.657 for 1cycle (the highest); CNN 0.818-0.941
for the SGD + momentum runs (1cycle again the highest); Alrao-SGD on the range test's interval above
Alrao-SGD on ``(1e-5, 10)``, by less on the MLP (0.587 against 0.575) than on the CNN (0.761 against
0.732).

Quick (the MLP only: 1 epoch, 10-step range tests, one constant rate, Alrao on the range test's interval
only; the test suite runs it)::

    .venv/bin/python -m experiments.smith --workdir /tmp/smith_quick --quick

gives, on one CPU device (``--mesh data=1``), final test accuracy 0.327 at the constant rate 0.215, 0.350
for triangular CLR, 0.340 for 1cycle and 0.263 for Alrao after its one epoch: a smoke test, not a result.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import os
import time
from typing import Any

import jax
import numpy as np
import optax

from experiments import _common
from randlr_jax import data as rdata
from randlr_jax.cyclical import _range_test as rt
from randlr_jax.cyclical import _schedules as schedules
from randlr_jax.models import make_model
from randlr_jax.runner import TrainConfig, train_and_evaluate
from randlr_jax.training import (
    LoopConfig,
    check_or_write,
    create_train_state,
    distributed,
    endless_batches,
    fingerprint,
    fit,
    make_mesh,
    new_figure,
    save_figure,
)

MODELS = {"mlp": {"widths": (100, 100)}, "cnn1d": {}}
# Test accuracy whose first epoch is reported as the "time to target" (about 90% of what the best
# runs reach in the default budget).
TARGETS = {"mlp": 0.6, "cnn1d": 0.8}


@dataclasses.dataclass(frozen=True)
class Config:
    """The study.

    Attributes:
      models: of ``MODELS``.
      epochs: the training budget of every run.
      range_iters, range_start, range_end: the range tests' steps and rates.
      constant_factors: the constant rates, as multiples of the range test's ``min/10``.
      cycles: triangular CLR's cycles over the budget.
      batch_size, validation_size, seed: the loop and the data.
      momentum: SGD's momentum (runs and the first range test).
      alrao_copies: Alrao's classifier copies.
      alrao_default: also run Alrao on ``alrao_interval`` (its default interval).
      alrao_interval: Alrao's default interval ``(lr_min, lr_max)``.
    """

    models: tuple[str, ...] = tuple(MODELS)
    epochs: int = 24
    range_iters: int = 200
    constant_factors: tuple[float, ...] = (0.3, 1.0, 3.0)
    cycles: int = 4
    batch_size: int = 128
    validation_size: int = 400
    seed: int = 0
    range_start: float = 1e-5
    range_end: float = 10.0
    alrao_default: bool = True
    momentum: float = 0.9
    alrao_copies: int = 10
    alrao_interval: tuple[float, float] = (1e-5, 10.0)


# The former name: code rendering tables from summary.json builds it from its keys.
Settings = Config

CONFIGS = {"default": Config()}


def quick(config: Config) -> Config:
    """The MLP only: 1 epoch, 10-step range tests, one constant rate, one cycle, Alrao once."""
    return dataclasses.replace(
        config,
        models=("mlp",),
        epochs=1,
        range_iters=10,
        constant_factors=(1.0,),
        cycles=1,
        alrao_default=False,
    )


def range_test(
    model_name: str,
    splits: dict,
    s: Config,
    workdir: str,
    momentum: float | None,
    mesh: Any = None,
):
    """The range test from the parameters ``fit`` starts from; read back if already run."""
    tag = "momentum" if momentum else "sgd"
    path = os.path.join(workdir, f"range_test_{tag}.json")
    if os.path.exists(path):
        with open(path) as f:
            return rt.RangeTestResult.from_dict(json.load(f))
    model = make_model(model_name, num_classes=10, **MODELS[model_name])
    # The initialisation ``fit`` uses (same key), compiled as one program rather than op by op.
    init = jax.jit(functools.partial(create_train_state, model, optax.identity()))
    state = init(jax.random.key(s.seed), splits["train"]["x"][:1])
    result = rt.lr_range_test(
        rt.classification_loss(model),
        state.params,
        endless_batches(splits["train"], s.batch_size, seed=s.seed),
        lambda lr: optax.sgd(lr, momentum=momentum),
        start=s.range_start,
        end=s.range_end,
        num_iter=s.range_iters,
        mesh=mesh,
    )
    with open(path, "w") as f:
        json.dump(result.to_dict(), f, indent=2)
    optimizer = f"SGD + momentum {momentum}" if momentum else "SGD"
    result.plot(path.replace(".json", ".png"), title=f"{model_name}, {optimizer}")
    return result


def schedule_runs(result: rt.RangeTestResult, total_steps: int, s: Config) -> dict[str, dict]:
    """Constant rates, triangular CLR and 1cycle from the momentum range test's suggestions."""
    runs = {}
    for factor in s.constant_factors:
        lr = result.lr_min_div_10 * factor
        runs[f"constant x{factor:g}"] = {
            "tx": optax.sgd(lr, momentum=s.momentum),
            "rates": f"{lr:.3g}",
            "kind": "constant",
        }
    low, high = result.cyclic_range
    step_size = total_steps / (2 * s.cycles)
    runs["triangular CLR"] = {
        "tx": schedules.cyclic_sgd(low, high, step_size),
        "rates": f"{low:.3g} - {high:.3g}",
        "kind": "clr",
        "schedules": (
            schedules.cyclic_schedule(low, high, step_size),
            schedules.cyclic_momentum_schedule(0.8, 0.9, step_size),
        ),
    }
    div_factor = high / low
    runs["1cycle"] = {
        "tx": schedules.one_cycle_sgd(total_steps, high, div_factor=div_factor),
        "rates": f"{low:.3g} - {high:.3g}",
        "kind": "one_cycle",
        "schedules": (
            schedules.one_cycle_schedule(total_steps, high, div_factor=div_factor),
            schedules.one_cycle_momentum_schedule(total_steps),
        ),
    }
    return runs


def record(history: list[dict], summary: dict, target: float, steps_per_epoch: int) -> dict:
    reached = [h["epoch"] for h in history if h.get("test_accuracy", 0.0) >= target]
    epoch = reached[0] if reached else None
    last = history[-1] if history else {}  # a run dead in its first epoch has no record
    return {
        "final_test_accuracy": last.get("test_accuracy"),
        "final_validation_accuracy": last.get("validation_accuracy"),
        "best_val_test_accuracy": summary.get("test_accuracy"),
        "best_validation_loss": summary.get("best_validation_loss"),
        "epochs_to_target": epoch,
        "steps_to_target": None if epoch is None else epoch * steps_per_epoch,
        "seconds_to_target": None
        if epoch is None
        else sum(h["epoch_time_s"] for h in history[:epoch]),
        "test_accuracy_curve": [h["test_accuracy"] for h in history],
    }


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    _common.add_config_arguments(parser, CONFIGS, workdir="runs/smith")
    parser.add_argument("--epochs", type=_common.positive_int, help="the training budget")
    distributed.add_arguments(parser)
    args = parser.parse_args(argv)
    mesh = distributed.from_args(args)
    s = _common.resolve_config(args, CONFIGS, quick)
    os.makedirs(args.workdir, exist_ok=True)
    # Finished range tests and runs are read back: a workdir holding them for other settings (e.g. a
    # --quick one) is refused instead.
    check_or_write(args.workdir, {"settings": dataclasses.asdict(s)}, section="experiment")
    t0 = time.perf_counter()
    loop = LoopConfig(
        epochs=s.epochs,
        batch_size=s.batch_size,
        seed=s.seed,
        patience=None,
        num_devices=mesh.num_devices,
        copy_shards=mesh.copies,
        test_every_epoch=True,  # the epochs to reach the target test accuracy, and its figure
    )
    base = TrainConfig(dataset="mnist1d", validation_size=s.validation_size, loop=loop)
    splits = rdata.train_val_test("mnist1d", validation_size=s.validation_size, seed=s.seed)
    steps_per_epoch = rdata.num_batches(len(splits["train"]["y"]), s.batch_size, True)
    total_steps = steps_per_epoch * s.epochs

    summary: dict = {"settings": dataclasses.asdict(s), "device": jax.devices()[0].device_kind}
    range_results: dict = {}
    schedule_curves: dict = {}
    for model_name in s.models:
        model_dir = os.path.join(args.workdir, model_name)
        os.makedirs(model_dir, exist_ok=True)
        device_mesh = make_mesh(mesh.num_devices)
        with_momentum = range_test(model_name, splits, s, model_dir, s.momentum, device_mesh)
        plain = range_test(model_name, splits, s, model_dir, None, device_mesh)
        range_results[model_name] = (with_momentum, plain)
        target = TARGETS[model_name]
        model = make_model(model_name, num_classes=10, **MODELS[model_name])
        rows = {}
        for run_name, run in schedule_runs(with_momentum, total_steps, s).items():
            config = dataclasses.replace(loop, description=f"{model_name} {run_name}")
            run_dir = os.path.join(model_dir, _slug(run_name))
            run_record = fingerprint(
                config,
                task="classification",
                model=model,
                splits=splits,
                optimizer=run["tx"],
                run_info={"optimizer": run["kind"], "rates": run["rates"]},
            )
            check_or_write(run_dir, run_record, section="experiment")
            result = fit(model, run["tx"], splits, config, run_dir)
            rows[run_name] = {
                "rates": run["rates"],
                "kind": run["kind"],
                **record(result.history, result.summary, target, steps_per_epoch),
            }
            if "schedules" in run:
                steps = np.arange(total_steps)
                rate, momentum = run["schedules"]
                schedule_curves[(model_name, run_name)] = (
                    np.asarray(jax.vmap(rate)(steps)),
                    np.asarray(jax.vmap(momentum)(steps)),
                )
        alrao_runs = {"Alrao (range test)": plain.alrao_range}
        if s.alrao_default:
            alrao_runs["Alrao (default)"] = s.alrao_interval
        for run_name, (lr_min, lr_max) in alrao_runs.items():
            config = base.replace(
                model=model_name,
                model_kwargs=MODELS[model_name],
                optimizer="alrao_sgd",
                optimizer_kwargs={"lr_min": lr_min, "lr_max": lr_max, "num_copies": s.alrao_copies},
                loop=dataclasses.replace(loop, description=f"{model_name} {run_name}"),
            )
            result = train_and_evaluate(config, os.path.join(model_dir, _slug(run_name)))
            rows[run_name] = {
                "rates": f"{lr_min:.3g} - {lr_max:.3g}",
                "kind": "alrao",
                **record(result.history, result.summary, target, steps_per_epoch),
            }
        constants = [name for name, row in rows.items() if row["kind"] == "constant"]
        # Compared on the final epoch's accuracy, as the table: choose on validation, likewise.
        best = max(constants, key=lambda name: rows[name]["final_validation_accuracy"])
        rows[best]["best_constant"] = True
        summary[model_name] = {
            "target_accuracy": target,
            "range_test_momentum": with_momentum.suggestions(),
            "range_test_sgd": plain.suggestions(),
            "runs": rows,
        }

    figures = [
        _range_figure(range_results, s, os.path.join(args.workdir, "range_tests.png")),
        _schedule_figure(schedule_curves, os.path.join(args.workdir, "schedules.png")),
        _accuracy_figure(summary, s, os.path.join(args.workdir, "test_accuracy.png")),
    ]
    return _common.finish(
        args.workdir, summary, tables={"results": _table(summary, s, steps_per_epoch)},
        figures=figures, started=t0, results_name="summary.json",
    )  # fmt: skip


def _slug(name: str) -> str:
    """``"Alrao (range test)"`` -> ``"alrao_range_test"``."""
    kept = "".join(c if c.isalnum() or c in ".-" else " " for c in name.lower())
    return "_".join(kept.split())


def _table(summary: dict, s: Config, steps_per_epoch: int) -> str:
    lines = []
    for model_name in s.models:
        model = summary[model_name]
        m, p = model["range_test_momentum"], model["range_test_sgd"]
        lines += [
            f"**{model_name}** — range test (SGD+momentum 0.9): steepest {m['lr_steepest']:.3g}, "
            f"loss minimum {m['lr_min_loss']:.3g}, min/10 {m['lr_min_div_10']:.3g}, cyclic range "
            f"{m['cyclic_range'][0]:.3g} - {m['cyclic_range'][1]:.3g}; range test (plain SGD): "
            f"Alrao interval {p['alrao_range'][0]:.3g} - {p['alrao_range'][1]:.3g}. "
            f"Budget {s.epochs} epochs x {steps_per_epoch} steps; target test accuracy "
            f"{model['target_accuracy']:.2f}.",
            "",
            "| run | rates | final test acc | test acc (best val epoch) | epochs to target | "
            "steps to target |",
            "|---|---|---:|---:|---:|---:|",
        ]
        for name, row in model["runs"].items():
            label = f"{name} (best constant)" if row.get("best_constant") else name
            epochs = row["epochs_to_target"]
            lines.append(
                f"| {label} | {row['rates']} | {row['final_test_accuracy']:.3f} | "
                f"{row['best_val_test_accuracy']:.3f} | {'-' if epochs is None else epochs} | "
                f"{'-' if epochs is None else row['steps_to_target']} |"
            )
        lines.append("")
    return "\n".join(lines).rstrip()


def _range_figure(results: dict, s: Config, path: str) -> str:
    fig = new_figure(figsize=(11, 3.8 * len(results)))
    axes = fig.subplots(len(results), 2, squeeze=False)
    for row, (model_name, (with_momentum, plain)) in enumerate(results.items()):
        with_momentum.plot(ax=axes[row, 0], title=f"{model_name}: SGD + momentum {s.momentum}")
        plain.plot(ax=axes[row, 1], title=f"{model_name}: plain SGD (for Alrao)")
    fig.suptitle("LR range tests on MNIST-1D")
    return save_figure(fig, path)


def _schedule_figure(curves: dict, path: str) -> str:
    fig = new_figure(figsize=(11, 3.8))
    axes = fig.subplots(1, 2)
    for (model_name, run_name), (rate, momentum) in curves.items():
        label = f"{model_name}: {run_name}"
        axes[0].plot(rate, label=label)
        axes[1].plot(momentum, label=label)
    axes[0].set_ylabel("learning rate")
    axes[1].set_ylabel("momentum")
    for ax in axes:
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle("Schedules used: the rate and the inversely cycled momentum")
    return save_figure(fig, path)


def _accuracy_figure(summary: dict, s: Config, path: str) -> str:
    fig = new_figure(figsize=(5.5 * len(s.models), 3.8))
    axes = fig.subplots(1, len(s.models), squeeze=False)
    for ax, model_name in zip(axes[0], s.models, strict=True):
        for name, row in summary[model_name]["runs"].items():
            curve = row["test_accuracy_curve"]
            ax.plot(np.arange(1, len(curve) + 1), curve, label=name)
        ax.axhline(summary[model_name]["target_accuracy"], color="k", ls=":", lw=1)
        ax.set_title(model_name)
        ax.set_xlabel("epoch")
        ax.set_ylabel("test accuracy")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return save_figure(fig, path)


if __name__ == "__main__":
    main()
