"""The feature guard (our extension, not in Blier et al. 2019): Alrao-SGD with ``lr_max = 100`` on a ReLU MLP.

The paper says Alrao needs BatchNorm or tanh when ``lr_max`` is large: a ReLU feature with a too large
rate overflows, the ``inf`` reaches every classifier copy and the run dies (every copy dropped).
``make_alrao_train_step(..., feature_guard=True)`` freezes and silences such features instead
(:mod:`randlr_jax.alrao._guard`). This script trains the MNIST-1D MLP of the demo (two hidden layers of
100 ReLU units, batch 32, at most 30 epochs, early stopping with patience 6, seed 0; ``experiments.demo``,
``experiments.alrao_compare.SETTINGS["mnist1d_mlp"]``) with Alrao-SGD (10 copies) on

* ``[1e-5, 100]`` and ``[1e-3, 100]``, guard off and on;
* ``[1e-5, 10]`` (the demo's Alrao), guard on and, as the reference, off: nothing diverges there, and the
  guarded run must be bit for bit the unguarded one (``identical to off``: every final parameter equal).

A run that dies stops (``LoopConfig(on_divergence="stop")``, a ``TrainingDiverged`` warning): its row says
``died at step N`` and reports the test loss of its best epoch before that.

Command (from the repository root)::

    .venv/bin/python -m experiments.alrao_feature_guard --workdir runs/alrao_feature_guard
    .venv/bin/python -m experiments.alrao_feature_guard --workdir runs/alrao_feature_guard_quick --quick

Writes under ``--workdir``: one resumable run directory per row, ``results.json`` and ``table.md``; prints
the table. Interrupt it and run it again: it resumes.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time
from typing import Any

import jax
import matplotlib
import numpy as np

from experiments import alrao_compare
from experiments._common import nonnegative_int, override, positive_int
from randlr_jax import alrao
from randlr_jax.training import distributed

# (name, lr_min, lr_max, feature_guard); the last is the reference of the one before.
RUNS: tuple[tuple[str, float, float, bool], ...] = (
    ("lr1e-5_100_off", 1e-5, 100.0, False),
    ("lr1e-5_100_on", 1e-5, 100.0, True),
    ("lr1e-3_100_off", 1e-3, 100.0, False),
    ("lr1e-3_100_on", 1e-3, 100.0, True),
    ("lr1e-5_10_on", 1e-5, 10.0, True),
    ("lr1e-5_10_off", 1e-5, 10.0, False),
)
CLASSIFICATION = tuple(n for n, s in alrao_compare.SETTINGS.items() if s.task == "classification")


def run_one(
    setting: alrao_compare.Setting,
    workdir: str,
    *,
    lr_min: float,
    lr_max: float,
    feature_guard: bool,
    seed: int,
    epochs: int,
    mesh: distributed.MeshSpec,
    description: str,
) -> tuple[dict, Any]:
    """One Alrao-SGD run; returns its row and its final parameters."""
    config = alrao_compare.train_config(setting, seed, epochs=epochs, mesh=mesh)
    config = config.replace(loop=dataclasses.replace(config.loop, description=description))
    # A run that dies warns (TrainingDiverged) and stops: that is its result.
    result = alrao_compare.run_alrao(
        setting,
        config,
        workdir,
        lr_min=lr_min,
        lr_max=lr_max,
        extra={"feature_guard": feature_guard},
    )
    summary = result.summary
    diverged = summary.get("diverged")
    dead = alrao.feature_guard_dead(result.state)
    row = {
        "lr_min": lr_min,
        "lr_max": lr_max,
        "feature_guard": feature_guard,
        "test_loss": summary.get("test_loss"),
        "test_accuracy": summary.get("test_accuracy"),
        "best_epoch": summary["best_epoch"],
        "best_validation_loss": summary.get("best_validation_loss"),
        "epochs_run": summary["epochs_run"],
        "died_at_step": None if diverged is None else int(diverged["step"]),
        "died_reason": None if diverged is None else diverged["reason"],
        "dead_features": int(sum(int(np.sum(m)) for m in dead.values())),
        "dead_features_per_layer": {k: int(np.sum(m)) for k, m in dead.items()},
        "wall_time_s": summary.get("wall_time_s"),
    }
    return row, jax.device_get(result.state.params)


def run_all(
    setting: alrao_compare.Setting,
    workdir: str,
    *,
    seed: int = 0,
    epochs: int,
    mesh: distributed.MeshSpec = alrao_compare.ALL_DEVICES,
    runs: tuple[tuple[str, float, float, bool], ...] = RUNS,
) -> dict[str, dict]:
    """Every run of ``runs``; the guarded ``[1e-5, 10]`` row is compared with its unguarded twin."""
    rows, params = {}, {}
    for name, lr_min, lr_max, guard in runs:
        rows[name], params[name] = run_one(
            setting,
            os.path.join(workdir, name),
            lr_min=lr_min,
            lr_max=lr_max,
            feature_guard=guard,
            seed=seed,
            epochs=epochs,
            mesh=mesh,
            description=name,
        )
    for name, lr_min, lr_max, guard in runs:
        twin = next(
            (n for n, lo, hi, g in runs if (lo, hi) == (lr_min, lr_max) and g != guard), None
        )
        if guard and twin is not None:
            same = jax.tree.all(
                jax.tree.map(
                    lambda a, b: bool(np.array_equal(a, b, equal_nan=True)),
                    params[name],
                    params[twin],
                )
            )
            rows[name]["identical_to_off"] = bool(same)
    return rows


def table(rows: dict[str, dict]) -> str:
    """The markdown table: one row per run."""
    lines = [
        "| interval | guard | test loss | test acc | best epoch | epochs run | dead features "
        "| died | identical to off |",
        "|---|---|---:|---:|---:|---:|---:|---|---|",
    ]
    for row in rows.values():
        died = "no" if row["died_at_step"] is None else f"died at step {row['died_at_step']}"
        same = row.get("identical_to_off")
        lines.append(
            f"| [{row['lr_min']:g}, {row['lr_max']:g}] | {'on' if row['feature_guard'] else 'off'} "
            f"| {_num(row['test_loss'])} | {_num(row['test_accuracy'], 3)} | {row['best_epoch']} "
            f"| {row['epochs_run']} | {row['dead_features']} | {died} "
            f"| {'-' if same is None else ('yes' if same else 'NO')} |"
        )
    return "\n".join(lines)


def _num(value: Any, digits: int = 4) -> str:
    return "-" if value is None else f"{float(value):.{digits}f}"


def main(argv=None) -> dict:
    matplotlib.use("Agg")  # fit draws each run's learning curves to a file
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default="runs/alrao_feature_guard", help="resumes if present")
    parser.add_argument("--quick", action="store_true", help="2 epochs instead of 30 (smoke test)")
    parser.add_argument("--setting", default="mnist1d_mlp", choices=CLASSIFICATION)
    parser.add_argument("--seed", type=nonnegative_int, default=0)
    parser.add_argument("--epochs", type=positive_int, default=None, help="override the epochs")
    distributed.add_arguments(parser)
    args = parser.parse_args(argv)
    mesh = distributed.from_args(args)
    os.makedirs(args.workdir, exist_ok=True)
    setting = alrao_compare.SETTINGS[args.setting]
    epochs = override(args.epochs, setting.quick_epochs if args.quick else setting.epochs)
    t0 = time.perf_counter()
    rows = run_all(setting, args.workdir, seed=args.seed, epochs=epochs, mesh=mesh, runs=RUNS)
    out = {
        "setting": args.setting,
        "seed": args.seed,
        "epochs": epochs,
        "runs": rows,
        "wall_time_s": time.perf_counter() - t0,
    }
    text = table(rows)
    with open(os.path.join(args.workdir, "results.json"), "w") as f:
        json.dump(out, f, indent=2)
    with open(os.path.join(args.workdir, "table.md"), "w") as f:
        f.write(text + "\n")
    print()
    print(text)
    print(f"\nwall time {out['wall_time_s']:.1f} s")
    print(f"results: {os.path.abspath(os.path.join(args.workdir, 'results.json'))}")
    return out


if __name__ == "__main__":
    main()
