"""Alrao's Fig. 3: sensitivity to the interval ``(lr_min, lr_max)``, as a heat map of final losses.

Blier, Wolinski, Ollivier (2019), Fig. 3: every point ``(lr_min, lr_max)`` above the diagonal is Alrao-SGD
with that interval; the diagonal ``(eta, eta)`` is plain SGD at rate ``eta``. Here on the MNIST-1D MLP
(``--setting`` for the others), a fixed number of epochs, no early stopping, final train loss (mean over
the last epoch's minibatches) and final test loss. The diagonal is one vmapped SGD population.

Commands (from the repository root)::

    .venv/bin/python -m experiments.alrao_interval --workdir runs/alrao_interval           # minutes
    .venv/bin/python -m experiments.alrao_interval --workdir runs/alrao_interval --quick   # seconds

Writes ``results.json``, ``table.md`` and ``interval_heatmap.png`` under ``--workdir`` (each run
resumable in its own directory).
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import math
import os
import time

import matplotlib
import matplotlib.pyplot as plt
import numpy as np

from experiments import alrao_compare as ac
from experiments._common import nonnegative_int, positive_float, positive_int, require_distinct
from randlr_jax.training import distributed


def main(argv=None) -> dict:
    matplotlib.use("Agg")  # figures go to files; the entry point, not an import, picks the backend
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default="runs/alrao_interval")
    parser.add_argument("--setting", default="mnist1d_mlp", choices=sorted(ac.SETTINGS))
    parser.add_argument(
        "--rates",
        nargs="+",
        type=positive_float,
        default=[1e-5, 1e-3, 1e-1, 10.0],
        help="interval end points (each pair lr_min <= lr_max is one run)",
    )
    parser.add_argument("--epochs", type=positive_int, default=15)
    parser.add_argument("--seed", type=nonnegative_int, default=0)
    parser.add_argument("--quick", action="store_true", help="rates 1e-2 1, one epoch")
    distributed.add_arguments(parser)
    args = parser.parse_args(argv)
    require_distinct(parser, "--rates", args.rates)
    mesh = distributed.from_args(args)
    rates = sorted([1e-2, 1.0] if args.quick else args.rates)
    epochs = 1 if args.quick else args.epochs
    setting = ac.SETTINGS[args.setting]
    reason = ac.unavailable_reason(setting)
    if reason:
        print(f"skipping {args.setting}: {reason}")
        return {"skipped": reason}
    os.makedirs(args.workdir, exist_ok=True)
    t0 = time.perf_counter()
    base = ac.train_config(setting, args.seed, epochs=epochs, mesh=mesh)
    base = base.replace(loop=dataclasses.replace(base.loop, patience=None))
    metric = ac.metric_name(setting)

    grid = ac.run_grid(
        setting,
        base.replace(loop=dataclasses.replace(base.loop, description="SGD diagonal")),
        os.path.join(args.workdir, "sgd_diagonal"),
        rates,
    )
    cells = []
    for k, rate in enumerate(rates):
        final = grid.members[k].get("final", {})
        cells.append(
            {
                "lr_min": rate,
                "lr_max": rate,
                "method": "sgd",
                "train_loss": final.get("train_loss"),
                "test_loss": final.get(f"test_{metric}"),
            }
        )
    for lr_min, lr_max in itertools.combinations(rates, 2):
        run = ac.run_alrao(
            setting,
            base.replace(
                loop=dataclasses.replace(base.loop, description=f"Alrao [{lr_min:g}, {lr_max:g}]")
            ),
            os.path.join(args.workdir, f"alrao_{lr_min:g}_{lr_max:g}"),
            lr_min=lr_min,
            lr_max=lr_max,
        )
        final = run.history[-1] if run.history else {}  # a run dead in its first epoch has none
        cells.append(
            {
                "lr_min": lr_min,
                "lr_max": lr_max,
                "method": "alrao_sgd",
                "train_loss": final.get("train_loss"),
                "test_loss": final.get(f"test_{metric}"),
            }
        )
    figure = heatmap(cells, rates, os.path.join(args.workdir, "interval_heatmap.png"), epochs)
    out = {
        "setting": args.setting,
        "epochs": epochs,
        "rates": rates,
        "cells": cells,
        "figure": figure,
        "wall_time_s": time.perf_counter() - t0,
    }
    ac.write_results(args.workdir, out, table(cells), figure, json_default=repr)
    return out


def table(cells: list[dict]) -> str:
    lines = ["| lr_min | lr_max | method | final train loss | final test loss |"]
    lines.append("|---:|---:|---|---:|---:|")
    for c in cells:
        lines.append(
            f"| {c['lr_min']:g} | {c['lr_max']:g} | {c['method']} | {_num(c['train_loss'])} | "
            f"{_num(c['test_loss'])} |"
        )
    return "\n".join(lines)


def _num(value) -> str:
    return "nan" if value is None or not math.isfinite(float(value)) else f"{float(value):.4f}"


def heatmap(cells: list[dict], rates: list[float], path: str, epochs: int) -> str:
    """Train (left) and test (right) loss for every ``(lr_min, lr_max)``; the diagonal is plain SGD."""
    n = len(rates)
    index = {r: i for i, r in enumerate(rates)}
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.3))
    for ax, key in zip(axes, ("train_loss", "test_loss"), strict=True):
        grid = np.full((n, n), np.nan)
        for c in cells:
            value = c[key]
            if value is not None and math.isfinite(float(value)):
                grid[index[c["lr_max"]], index[c["lr_min"]]] = float(value)
        image = ax.imshow(grid, origin="lower", cmap="viridis_r")
        for i in range(n):
            for j in range(n):
                if np.isfinite(grid[i, j]):
                    ax.text(
                        j, i, f"{grid[i, j]:.2f}", ha="center", va="center", color="w", fontsize=8
                    )
        labels = [f"{r:g}" for r in rates]
        ax.set_xticks(range(n), labels)
        ax.set_yticks(range(n), labels)
        ax.set_xlabel("lr_min")
        ax.set_ylabel("lr_max")
        ax.set_title(f"{key.replace('_', ' ')} after {epochs} epochs")
        fig.colorbar(image, ax=ax, shrink=0.8)
    fig.suptitle("Alrao-SGD by interval (diagonal: plain SGD; blank: diverged)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


if __name__ == "__main__":
    main()
