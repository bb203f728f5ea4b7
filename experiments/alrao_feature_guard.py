"""The feature guard (our extension, not in Blier et al. 2019): Alrao-SGD with ``lr_max = 100`` on a ReLU MLP.

The paper says Alrao needs BatchNorm or tanh when ``lr_max`` is large: a ReLU feature with a too large
rate overflows, the ``inf`` reaches every classifier copy and the run dies (every copy dropped).
``make_alrao_train_step(..., feature_guard=True)`` freezes and silences such features instead
(:mod:`randlr_jax.alrao._guard`). This script trains the MNIST-1D MLP of the demo (two hidden layers of
100 ReLU units, batch 32, at most 30 epochs, early stopping with patience 6, seed 0;
``_common.ALRAO_SETTINGS["mnist1d_mlp"]``) with Alrao-SGD (10 copies) on

* ``[1e-5, 100]`` and ``[1e-3, 100]``, guard off and on;
* ``[1e-5, 10]`` (the demo's Alrao), guard on and, as the reference, off: nothing diverges there, and the
  guarded run must be bit for bit the unguarded one (``identical to off``: every final parameter equal).

A run that dies stops (``LoopConfig(on_divergence="stop")``, a ``TrainingDiverged`` warning): its row says
``died at step N`` and reports the test loss of its best epoch before that.

Commands (from the repository root)::

    .venv/bin/python -m experiments.alrao_feature_guard --workdir runs/alrao_feature_guard
    .venv/bin/python -m experiments.alrao_feature_guard --workdir runs/alrao_feature_guard_quick --quick

Expected result of the first (24 s on 2 shared CPU cores): ``[1e-5, 100]`` test loss 1.3065 (accuracy
0.497) with the guard off and on (no feature overflows at this seed); ``[1e-3, 100]`` dies at step 20
either way (4 dead features with the guard on); ``[1e-5, 10]`` test loss 1.2313 (0.537), the guarded run
identical to the unguarded one.

Writes under ``--workdir``: one resumable run directory per row, ``results.json`` and ``table.md``;
prints the table. Interrupt it and run it again: it resumes.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import time
from typing import Any

import jax
import numpy as np

from experiments import _common
from randlr_jax import alrao, runner
from randlr_jax.training import distributed

# name -> (lr_min, lr_max, feature_guard); a guarded run is compared with its unguarded twin.
RUNS: dict[str, tuple[float, float, bool]] = {
    "lr1e-5_100_off": (1e-5, 100.0, False),
    "lr1e-5_100_on": (1e-5, 100.0, True),
    "lr1e-3_100_off": (1e-3, 100.0, False),
    "lr1e-3_100_on": (1e-3, 100.0, True),
    "lr1e-5_10_on": (1e-5, 10.0, True),
    "lr1e-5_10_off": (1e-5, 10.0, False),
}
CLASSIFICATION = tuple(
    name for name, s in _common.ALRAO_SETTINGS.items() if s.task == "classification"
)


@dataclasses.dataclass(frozen=True)
class Config:
    """The study: one setting, one seed, the runs of :data:`RUNS` (by name).

    ``epochs``: ``None`` for the setting's (30, early stopping with its patience).
    """

    setting: str = "mnist1d_mlp"
    seed: int = 0
    epochs: int | None = None
    runs: tuple[str, ...] = tuple(RUNS)

    def __post_init__(self):
        if self.setting not in CLASSIFICATION:
            raise ValueError(f"setting must be one of {CLASSIFICATION}, got {self.setting!r}.")
        unknown = [name for name in self.runs if name not in RUNS]
        if unknown or not self.runs:
            raise ValueError(f"runs must be names of {list(RUNS)}, got {self.runs!r}.")


DEFAULT = Config()
CONFIGS: dict[str, Config] = {
    "default": DEFAULT,
    **{name: dataclasses.replace(DEFAULT, setting=name) for name in CLASSIFICATION},
}


def quick(config: Config) -> Config:
    """Every run for the setting's smoke-test epochs (2)."""
    return dataclasses.replace(config, epochs=_common.ALRAO_SETTINGS[config.setting].quick_epochs)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    _common.add_config_arguments(parser, CONFIGS, workdir="runs/alrao_feature_guard")
    parser.add_argument("--setting", choices=CLASSIFICATION)
    parser.add_argument("--seed", type=_common.nonnegative_int)
    parser.add_argument("--epochs", type=_common.positive_int, help="override the epochs")
    parser.add_argument("--runs", nargs="+", choices=list(RUNS), help="only these runs")
    distributed.add_arguments(parser)
    args = parser.parse_args(argv)
    _common.require_distinct(parser, "--runs", args.runs)
    if args.runs is not None:
        args.runs = tuple(args.runs)
    config = _common.resolve_config(args, CONFIGS, quick)
    mesh = distributed.from_args(args)
    setting = _common.ALRAO_SETTINGS[config.setting]
    epochs = setting.epochs if config.epochs is None else config.epochs
    started = time.perf_counter()
    rows = run_all(
        setting, args.workdir, seed=config.seed, epochs=epochs, mesh=mesh, runs=config.runs
    )
    results = {
        "setting": config.setting,
        "seed": config.seed,
        "epochs": epochs,
        "runs": rows,
        "config": dataclasses.asdict(config),
    }
    return _common.finish(args.workdir, results, tables={"table": table(rows)}, started=started)


def run_one(
    setting: _common.AlraoSetting,
    workdir: str,
    *,
    lr_min: float,
    lr_max: float,
    feature_guard: bool,
    seed: int,
    epochs: int,
    mesh: distributed.MeshSpec | None = None,
    description: str = "",
) -> tuple[dict, Any]:
    """One Alrao-SGD run; returns its row and its final parameters."""
    config = _common.alrao_train_config(
        setting, seed, epochs=epochs, mesh=mesh, description=description
    )
    # A run that dies warns (TrainingDiverged) and stops: that is its result.
    result = runner.train_and_evaluate(
        _common.with_alrao(
            config, setting, lr_min=lr_min, lr_max=lr_max, feature_guard=feature_guard
        ),
        workdir,
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
    setting: _common.AlraoSetting,
    workdir: str,
    *,
    seed: int = 0,
    epochs: int,
    mesh: distributed.MeshSpec | None = None,
    runs: tuple[str, ...] = tuple(RUNS),
) -> dict[str, dict]:
    """Every run named in ``runs``; a guarded row is compared with its unguarded twin if it ran."""
    rows, params = {}, {}
    for name in runs:
        lr_min, lr_max, guard = RUNS[name]
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
    for name in runs:
        lr_min, lr_max, guard = RUNS[name]
        twin = next((n for n in runs if RUNS[n] == (lr_min, lr_max, not guard)), None)
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


if __name__ == "__main__":
    main()
