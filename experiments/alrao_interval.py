"""Alrao's Fig. 3: sensitivity to the interval ``(lr_min, lr_max)``, as a heat map of final losses.

Blier, Wolinski, Ollivier (2019), Fig. 3: every point ``(lr_min, lr_max)`` above the diagonal is Alrao-SGD
with that interval; the diagonal ``(eta, eta)`` is plain SGD at rate ``eta``. Here on the MNIST-1D MLP
(``--setting`` for the others), a fixed number of epochs, no early stopping, final train loss (mean over
the last epoch's minibatches) and final test loss. The diagonal is one vmapped SGD population.

Commands (from the repository root)::

    .venv/bin/python -m experiments.alrao_interval --workdir runs/alrao_interval           # minutes
    .venv/bin/python -m experiments.alrao_interval --workdir runs/alrao_interval_quick --quick  # seconds

Expected result of the first (rates 1e-5, 1e-3, 0.1, 10; 15 epochs; 256 s (4.3 min) on 2 heavily
loaded CPU cores): final test loss 1.1264 for SGD at 0.1 and NaN at 10 (diverged); Alrao-SGD
1.21-1.29 on every interval that contains 0.1 (1.2820 on ``[1e-5, 10]``, 1.2921 on ``[0.1, 10]``),
2.2172 on ``[1e-5, 1e-3]`` (below the good rates).

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

import numpy as np

from experiments import _common
from randlr_jax import runner
from randlr_jax.training import distributed, new_figure, save_figure


@dataclasses.dataclass(frozen=True)
class Config:
    """The study: one setting, the interval end points (each pair ``lr_min < lr_max`` one Alrao run,
    each point one SGD member), a fixed number of epochs, one seed.

    ``lm_train_chars``: a language model's training characters (``None``: the setting's).
    """

    setting: str = "mnist1d_mlp"
    rates: tuple[float, ...] = (1e-5, 1e-3, 1e-1, 10.0)
    epochs: int = 15
    seed: int = 0
    lm_train_chars: int | None = None

    def __post_init__(self):
        if self.setting not in _common.ALRAO_SETTINGS:
            raise ValueError(
                f"setting must be one of {sorted(_common.ALRAO_SETTINGS)}, got {self.setting!r}."
            )
        if len(set(self.rates)) != len(self.rates) or not self.rates:
            raise ValueError(f"rates must be distinct (at least one), got {self.rates!r}.")


DEFAULT = Config()
CONFIGS: dict[str, Config] = {
    "default": DEFAULT,
    **{name: dataclasses.replace(DEFAULT, setting=name) for name in _common.ALRAO_SETTINGS},
}


def quick(config: Config) -> Config:
    """Two rates (1e-2, 1: one Alrao run, two SGD members), one epoch, a language model on 3,000
    characters."""
    return dataclasses.replace(
        config, rates=(1e-2, 1.0), epochs=1, lm_train_chars=_common.QUICK_LM_TOKENS
    )


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    _common.add_config_arguments(parser, CONFIGS, workdir="runs/alrao_interval")
    parser.add_argument("--setting", choices=sorted(_common.ALRAO_SETTINGS))
    parser.add_argument(
        "--rates",
        nargs="+",
        type=_common.positive_float,
        help="interval end points (each pair lr_min < lr_max is one run)",
    )
    parser.add_argument("--epochs", type=_common.positive_int)
    parser.add_argument("--seed", type=_common.nonnegative_int)
    distributed.add_arguments(parser)
    args = parser.parse_args(argv)
    _common.require_distinct(parser, "--rates", args.rates)
    if args.rates is not None:
        args.rates = tuple(args.rates)
    config = _common.resolve_config(args, CONFIGS, quick)
    mesh = distributed.from_args(args)
    setting, reason = _common.study_setting(config.setting, config.lm_train_chars)
    if reason:
        print(f"skipping {config.setting}: {reason}")
        return {"skipped": reason}
    started = time.perf_counter()
    rates = sorted(config.rates)
    cells = run_cells(
        setting, rates, args.workdir, epochs=config.epochs, seed=config.seed, mesh=mesh
    )
    figure = heatmap(
        cells, rates, os.path.join(args.workdir, "interval_heatmap.png"), config.epochs
    )
    results = {
        "setting": config.setting,
        "epochs": config.epochs,
        "rates": rates,
        "cells": cells,
        "figure": figure,
        "config": dataclasses.asdict(config),
    }
    return _common.finish(
        args.workdir, results, tables={"table": table(cells)}, figures=[figure], started=started
    )


def run_cells(
    setting: _common.AlraoSetting,
    rates: list[float],
    workdir: str,
    *,
    epochs: int,
    seed: int,
    mesh: distributed.MeshSpec | None = None,
) -> list[dict]:
    """The diagonal (one SGD population over ``rates``) and one Alrao-SGD run per pair of rates."""
    base = _common.alrao_train_config(setting, seed, epochs=epochs, early_stopping=False, mesh=mesh)
    metric, cut = setting.metric, setting.max_train_tokens
    grid = runner.train_and_evaluate_population(
        _common.describe(base, "SGD diagonal"),
        os.path.join(workdir, "sgd_diagonal"),
        rates,
        max_train_tokens=cut,
    )
    cells = [
        _cell(rate, rate, "sgd", grid.members[k].get("final", {}), metric)
        for k, rate in enumerate(rates)
    ]
    for lr_min, lr_max in itertools.combinations(rates, 2):
        run = runner.train_and_evaluate(
            _common.with_alrao(
                _common.describe(base, f"Alrao [{lr_min:g}, {lr_max:g}]"),
                setting,
                lr_min=lr_min,
                lr_max=lr_max,
            ),
            os.path.join(workdir, f"alrao_{lr_min:g}_{lr_max:g}"),
            max_train_tokens=cut,
        )
        final = run.history[-1] if run.history else {}  # a run dead in its first epoch has none
        cells.append(_cell(lr_min, lr_max, "alrao_sgd", final, metric))
    return cells


def _cell(lr_min: float, lr_max: float, method: str, final: dict, metric: str) -> dict:
    return {
        "lr_min": lr_min,
        "lr_max": lr_max,
        "method": method,
        "train_loss": final.get("train_loss"),
        "test_loss": final.get(f"test_{metric}"),
    }


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
    fig = new_figure(figsize=(10, 4.3))
    axes = fig.subplots(1, 2)
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
    return save_figure(fig, path)


if __name__ == "__main__":
    main()
