"""Alrao's Table 1 and Fig. 2 on data that runs anywhere: Alrao-SGD vs the best SGD rate vs Adam.

Blier, Wolinski, Ollivier (2019), Section 3: for each model, SGD at every rate of ``{1e-5, ..., 10}`` (the
best chosen on validation loss), Adam with its defaults (``1e-3, 0.9, 0.999``) and Alrao-SGD (per-feature
rates log-uniform on ``[lr_min, lr_max]``, ``N`` classifier copies averaged by the switch). Protocol: a
validation split carved from train, early stopping on validation loss with patience, the best epoch
tested, several seeds, mean ± standard deviation. The SGD grid trains as one vmapped population
(:func:`randlr_jax.training.fit_population`): one compiled program for all seven rates.

Commands (from the repository root)::

    .venv/bin/python -m experiments.alrao_compare --workdir runs/alrao_compare            # default
    .venv/bin/python -m experiments.alrao_compare --workdir runs/alrao_compare --quick    # seconds
    .venv/bin/python -m experiments.alrao_compare --settings mnist1d_mlp --seeds 0 1 2 3 4 --epochs 100

Settings (``--settings``): ``mnist1d_mlp``, ``mnist1d_cnn``, ``digits_mlp``, ``char_lstm`` (2-layer LSTM on
``shakespeare_char``, rates ``[1e-3, 100]``, 6 copies, bits per character, truncated BPTT 70, 20 streams;
on CPU the default run reads only the first ``--lm-train-chars`` characters of the training text), and
``cifar10_vgg19``, ``cifar10_mobilenetv2``, ``cifar10_googlenet`` (only when CIFAR-10 is prepared in the
TFDS data dir; otherwise skipped with the reason printed). Writes under ``--workdir``: one directory per
setting, seed and method (resumable checkpoints), ``results.json``, ``table.md``,
``learning_curves_<setting>.png`` (Fig. 2 analogue) and, with ``--time-sequential``, ``timing.json`` (the
vmapped grid against seven sequential runs). Interrupt it and run it again: it resumes.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import time
from collections.abc import Sequence
from typing import Any

import jax
import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import optax

from experiments._common import nonnegative_int, override, positive_int, require_distinct
from randlr_jax import alrao
from randlr_jax.runner import TrainConfig
from randlr_jax.runner._runner import build_model, load_splits, record_run
from randlr_jax.training import LoopConfig, distributed, fit
from randlr_jax.training._population import fit_population, member_history

SGD_GRID = (1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0)
ADAM_LR = 1e-3  # Adam with its defaults (the paper's baseline)


@dataclasses.dataclass(frozen=True)
class Setting:
    """One row of the Table 1 analogue: data, model, Alrao interval and loop budget.

    Attributes:
      dataset, model, model_kwargs: as :class:`randlr_jax.runner.TrainConfig`.
      lr_min, lr_max, num_copies: Alrao's interval and classifier copies.
      epochs, patience, batch_size: loop budget (early stopping on validation loss).
      quick_epochs: epochs of ``--quick``.
      validation_size: carved from train (classification).
      max_train_tokens: language models: read only this many training characters (CPU budget);
        validation and test are cut to a tenth of it.
      requires_prepared: a public TFDS dataset: skip the setting (with the reason) when not prepared.
    """

    dataset: str
    model: str
    model_kwargs: dict = dataclasses.field(default_factory=dict)
    lr_min: float = 1e-5
    lr_max: float = 10.0
    num_copies: int = 10
    epochs: int = 30
    patience: int = 6
    batch_size: int = 32
    quick_epochs: int = 2
    validation_size: int | float | None = 400
    max_train_tokens: int | None = None
    requires_prepared: bool = False

    @property
    def task(self) -> str:
        return "language_model" if self.model == "char_lstm" else "classification"


SETTINGS: dict[str, Setting] = {
    "mnist1d_mlp": Setting("mnist1d", "mlp", {"widths": (100, 100)}),
    "mnist1d_cnn": Setting("mnist1d", "cnn1d"),
    "digits_mlp": Setting("digits", "mlp", {"widths": (100, 100)}, validation_size=180),
    # Paper: 2-layer LSTM, 100 units, dropout 0.2, Alrao on [1e-3, 100] with 6 copies, 20 streams, BPTT 70.
    "char_lstm": Setting(
        "shakespeare_char",
        "char_lstm",
        lr_min=1e-3,
        lr_max=100.0,
        num_copies=6,
        epochs=2,
        patience=2,
        batch_size=20,
        quick_epochs=1,
        validation_size=None,
        max_train_tokens=70_000,
    ),
    "cifar10_vgg19": Setting("cifar10", "vgg19", epochs=50, patience=20, requires_prepared=True,
                             validation_size=10_000),
    "cifar10_mobilenetv2": Setting("cifar10", "mobilenetv2", epochs=50, patience=20,
                                   requires_prepared=True, validation_size=10_000),
    "cifar10_googlenet": Setting("cifar10", "googlenet", epochs=50, patience=20,
                                 requires_prepared=True, validation_size=10_000),
}  # fmt: skip
DEFAULT_SETTINGS = ("mnist1d_mlp", "mnist1d_cnn", "digits_mlp", "char_lstm")

# The paper's Table 1 (test loss, accuracy %; mean ± std over 10 runs, 5 for the LSTM; PTB in bits/char).
_PAPER_ROWS = (
    ("MobileNet (CIFAR-10)", "1e-1", "0.37 ± 0.01", "90.2 ± 0.3", "1.01 ± 0.95", "78 ± 11",
     "0.42 ± 0.02", "88.1 ± 0.6"),
    ("GoogLeNet (CIFAR-10)", "1e-2", "0.45 ± 0.05", "89.6 ± 1.0", "0.47 ± 0.04", "89.8 ± 0.4",
     "0.47 ± 0.03", "88.9 ± 0.8"),
    ("VGG19 (CIFAR-10)", "1e-1", "0.42 ± 0.02", "89.5 ± 0.2", "0.43 ± 0.02", "88.9 ± 0.4",
     "0.45 ± 0.03", "87.5 ± 0.4"),
    ("LSTM (PTB, bits/char)", "1", "1.566 ± 0.003", "66.1 ± 0.1", "1.587 ± 0.005", "65.6 ± 0.1",
     "1.67 ± 0.01", "64.1 ± 0.2"),
)  # fmt: skip
PAPER_TABLE1 = "\n".join(
    [
        "| model | SGD best LR | SGD loss | SGD acc (%) | Adam loss | Adam acc (%) | Alrao loss "
        "| Alrao acc (%) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    + ["| " + " | ".join(row) + " |" for row in _PAPER_ROWS]
)


def unavailable_reason(setting: Setting) -> str | None:
    """Why ``setting`` cannot run here (its public dataset is not prepared), or ``None``."""
    if not setting.requires_prepared:
        return None
    from randlr_jax import data as rdata

    try:
        rdata.get_builder(setting.dataset)
    except rdata.DatasetNotPreparedError as e:
        return f"{setting.dataset} is not prepared: {' '.join(str(e).split())}"
    return None


def write_results(workdir: str, out: dict, text: str, figure: str, *, json_default=None) -> None:
    """Write ``results.json`` and ``table.md`` into ``workdir``, then print the table, wall time and figure."""
    with open(os.path.join(workdir, "results.json"), "w") as f:
        json.dump(out, f, indent=2, default=json_default)
    with open(os.path.join(workdir, "table.md"), "w") as f:
        f.write(text + "\n")
    print()
    print(text)
    print(f"\nwall time {out['wall_time_s']:.1f} s")
    print(f"figure:  {os.path.abspath(figure)}")


ALL_DEVICES = distributed.MeshSpec()  # --mesh auto: every device, data parallel


def train_config(
    setting: Setting,
    seed: int,
    *,
    epochs: int,
    progress: bool = True,
    description: str = "",
    mesh: distributed.MeshSpec = ALL_DEVICES,
) -> TrainConfig:
    """The :class:`TrainConfig` of ``setting`` (optimizer still the default; replace it).

    ``mesh`` (the ``--mesh`` flag): the devices every run of the experiment is data parallel over (and
    the Alrao copies' model-parallel axis); all devices by default.
    """
    loop = LoopConfig(
        epochs=epochs,
        batch_size=setting.batch_size,
        patience=setting.patience,
        seed=seed,
        seq_len=70,
        eval_streams=10,
        num_devices=mesh.num_devices,
        copy_shards=mesh.copies,
        progress=progress,
        description=description,
    )
    return TrainConfig(
        dataset=setting.dataset,
        model=setting.model,
        model_kwargs=dict(setting.model_kwargs),
        validation_size=setting.validation_size,
        loop=loop,
    )


_SPLITS_CACHE: dict[tuple, tuple[dict, Any, str]] = {}


def splits_of(setting: Setting, config: TrainConfig) -> tuple[dict, Any, str]:
    """Load the splits (language models cut to ``max_train_tokens``) with the spec and task (cached)."""
    cache_key = (config.dataset, config.validation_size, config.loop.seed, setting.max_train_tokens)
    if cache_key not in _SPLITS_CACHE:
        _SPLITS_CACHE[cache_key] = _load_splits(setting, config)
    return _SPLITS_CACHE[cache_key]


def _load_splits(setting: Setting, config: TrainConfig) -> tuple[dict, Any, str]:
    splits, spec, task = load_splits(config)
    if task == "language_model" and setting.max_train_tokens:
        n = setting.max_train_tokens
        splits = {
            "train": splits["train"][:n],
            "validation": splits["validation"][: max(n // 10, 2000)],
            "test": splits["test"][: max(n // 10, 2000)],
        }
    return splits, spec, task


def run_alrao(
    setting: Setting,
    config: TrainConfig,
    workdir: str,
    *,
    optimizer: str = "alrao_sgd",
    lr_min: float | None = None,
    lr_max: float | None = None,
    num_copies: int | None = None,
    extra: dict | None = None,
    callbacks: Sequence[Any] = (),
):
    """Alrao on ``setting`` through :func:`train_and_evaluate` (its splits cut as :func:`splits_of`)."""
    from randlr_jax.runner._runner import build_alrao

    config = config.replace(
        optimizer=optimizer,
        optimizer_kwargs={
            "lr_min": setting.lr_min if lr_min is None else lr_min,
            "lr_max": setting.lr_max if lr_max is None else lr_max,
            "num_copies": setting.num_copies if num_copies is None else num_copies,
            **(extra or {}),
        },
    )
    splits, spec, task = splits_of(setting, config)
    model, tx, step = build_alrao(config, spec, task)
    # Refuses a workdir holding a run of other settings; config.json says what runs.
    record_run(workdir, config, model=model, tx=tx, splits=splits, task=task, train_step=step)
    return fit(
        model,
        tx,
        splits,
        config.loop,
        workdir,
        task=task,
        train_step=step,
        callbacks=callbacks,
        place_state=alrao.shard_state,
    )


def run_single(
    setting: Setting,
    config: TrainConfig,
    workdir: str,
    tx: optax.GradientTransformation,
    *,
    run_info: dict,
):
    """One plain run of ``setting`` with ``tx`` (the splits cut as :func:`splits_of`).

    ``run_info`` says what ``tx`` is (``{"optimizer": "adam", "learning_rate": 1e-3}``): ``config.json``
    records it instead of ``config``'s optimizer, and the run directory's record includes it.
    """
    splits, spec, task = splits_of(setting, config)
    model = build_model(config, spec)
    record_run(
        workdir,
        config,
        model=model,
        tx=tx,
        splits=splits,
        task=task,
        run_info=run_info,
        overridden=True,
    )
    return fit(model, tx, splits, config.loop, workdir, task=task)


def run_grid(
    setting: Setting,
    config: TrainConfig,
    workdir: str,
    rates: Sequence[float] = SGD_GRID,
    optimizer: Any = optax.sgd,
):
    """The SGD grid (or another optimizer's rates) as one vmapped population."""
    splits, spec, task = splits_of(setting, config)
    model = build_model(config, spec)
    name = getattr(optimizer, "__name__", None) or repr(optimizer)
    record_run(
        workdir,
        config,
        model=model,
        tx=optimizer,
        splits=splits,
        task=task,
        learning_rates=rates,
        run_info={"optimizer": name, "learning_rates": [float(r) for r in rates]},
        overridden=True,
    )
    return fit_population(
        model, rates, splits, config.loop, workdir, task=task, optimizer=optimizer
    )


def metric_name(setting: Setting) -> str:
    """The loss reported in the table: cross-entropy (nats), or bits per character."""
    return "bits_per_char" if setting.task == "language_model" else "loss"


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and (population) standard deviation; NaN if empty."""
    values = np.asarray(list(values), np.float64)
    if values.size == 0:
        return math.nan, math.nan
    with np.errstate(invalid="ignore"):  # inf - inf for a diverged rate: the std is NaN
        return float(values.mean()), float(values.std())


def fmt(mean: float, std: float, digits: int = 3) -> str:
    if not math.isfinite(mean):
        return "nan"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def compare_setting(
    name: str,
    setting: Setting,
    seeds: Sequence[int],
    workdir: str,
    *,
    epochs: int,
    mesh: distributed.MeshSpec = ALL_DEVICES,
) -> dict:
    """Every seed of the grid, Adam and Alrao-SGD on ``setting``; returns the per-method results."""
    per_seed = []
    curves = {}
    metric = metric_name(setting)
    for seed in seeds:
        base = train_config(setting, seed, epochs=epochs, mesh=mesh)
        root = os.path.join(workdir, name, f"seed{seed}")
        grid = run_grid(
            setting,
            base.replace(
                loop=dataclasses.replace(base.loop, description=f"{name} s{seed} SGD grid")
            ),
            os.path.join(root, "sgd_grid"),
        )
        adam = run_single(
            setting,
            base.replace(loop=dataclasses.replace(base.loop, description=f"{name} s{seed} Adam")),
            os.path.join(root, "adam"),
            optax.adam(ADAM_LR),
            run_info={"optimizer": "adam", "learning_rate": ADAM_LR},
        )
        alrao = run_alrao(
            setting,
            base.replace(loop=dataclasses.replace(base.loop, description=f"{name} s{seed} Alrao")),
            os.path.join(root, "alrao_sgd"),
        )
        per_seed.append(
            {
                "seed": seed,
                "sgd": [
                    {
                        "learning_rate": m["learning_rate"],
                        "best_validation_loss": m.get("best_validation_loss"),
                        "best_epoch": m["best_epoch"],
                        "test": _test(m, metric),
                    }
                    for m in grid.members
                ],
                "sgd_wall_time_s": grid.summary["wall_time_s"],
                "adam": _single(adam.summary, metric),
                "alrao_sgd": _single(alrao.summary, metric),
            }
        )
        if seed == seeds[0]:
            curves = {
                f"SGD {lr:g}": member_history(grid.history, k) for k, lr in enumerate(SGD_GRID)
            }
            curves["Adam 1e-3"] = adam.history
            curves[f"Alrao-SGD [{setting.lr_min:g}, {setting.lr_max:g}]"] = alrao.history
    # The rate chosen on validation: lowest mean (over seeds) best validation loss, as one rate per model.
    val = np.array(
        [[_finite(m["best_validation_loss"]) for m in s["sgd"]] for s in per_seed]
    )  # (seeds, rates)
    mean_val = np.where(np.isfinite(val).all(axis=0), val.mean(axis=0), np.inf)
    best = int(np.argmin(mean_val))
    rows = {
        "sgd_best": {
            "learning_rate": SGD_GRID[best],
            **_aggregate([s["sgd"][best]["test"] for s in per_seed]),
        },
        "adam": _aggregate([s["adam"]["test"] for s in per_seed]),
        "alrao_sgd": _aggregate([s["alrao_sgd"]["test"] for s in per_seed]),
    }
    grid_rows = [
        {
            "learning_rate": lr,
            "validation_loss": mean_std(
                [_finite(s["sgd"][k]["best_validation_loss"]) for s in per_seed]
            ),
            **_aggregate([s["sgd"][k]["test"] for s in per_seed]),
        }
        for k, lr in enumerate(SGD_GRID)
    ]
    figure = learning_curves_figure(
        curves, os.path.join(workdir, f"learning_curves_{name}.png"), title=name, task=setting.task
    )
    return {
        "setting": dataclasses.asdict(setting),
        "metric": metric,
        "seeds": list(seeds),
        "epochs": epochs,
        "rows": rows,
        "sgd_grid": grid_rows,
        "per_seed": per_seed,
        "figure": figure,
    }


def _finite(value: Any) -> float:
    value = math.inf if value is None else float(value)
    return value if math.isfinite(value) else math.inf


def _test(summary: dict, metric: str) -> dict:
    return {"loss": summary.get(f"test_{metric}"), "accuracy": summary.get("test_accuracy")}


def _single(summary: dict, metric: str) -> dict:
    return {
        "best_epoch": summary["best_epoch"],
        "best_validation_loss": summary.get("best_validation_loss"),
        "test": _test(summary, metric),
    }


def _aggregate(tests: list[dict]) -> dict:
    return {
        "loss": mean_std([t["loss"] for t in tests]),
        "accuracy": mean_std([t["accuracy"] for t in tests]),
    }


def table(results: dict) -> str:
    """The Table 1 analogue: one line per setting, test loss and accuracy (%), mean ± std over seeds."""
    lines = [
        "| setting | seeds | SGD best LR | SGD loss | SGD acc (%) | Adam loss | Adam acc (%) | "
        "Alrao loss | Alrao acc (%) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in results.items():
        rows = r["rows"]
        unit = " (bits/char)" if r["metric"] == "bits_per_char" else ""

        def acc(row):
            m, s = row["accuracy"]
            return fmt(100 * m, 100 * s, 1)

        lines.append(
            f"| {name}{unit} | {len(r['seeds'])} | {rows['sgd_best']['learning_rate']:g} | "
            f"{fmt(*rows['sgd_best']['loss'])} | {acc(rows['sgd_best'])} | "
            f"{fmt(*rows['adam']['loss'])} | {acc(rows['adam'])} | "
            f"{fmt(*rows['alrao_sgd']['loss'])} | {acc(rows['alrao_sgd'])} |"
        )
    return "\n".join(lines)


def grid_table(results: dict) -> str:
    """Every SGD rate: mean best validation loss and test loss (the selection's evidence)."""
    lines = [
        "| setting | SGD LR | best val loss | test loss | test acc (%) |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, r in results.items():
        for row in r["sgd_grid"]:
            m, s = row["accuracy"]
            lines.append(
                f"| {name} | {row['learning_rate']:g} | {fmt(*row['validation_loss'])} | "
                f"{fmt(*row['loss'])} | {fmt(100 * m, 100 * s, 1)} |"
            )
    return "\n".join(lines)


def learning_curves_figure(curves: dict, path: str, *, title: str, task: str) -> str:
    """Fig. 2 analogue: train loss (left) and test loss (right) per epoch, one line per method."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    key = "bits_per_char" if task == "language_model" else "loss"
    for label, history in curves.items():
        if not history:
            continue
        epochs = [r["epoch"] for r in history]
        style = {"lw": 2.5, "color": "k"} if label.startswith("Alrao") else {}
        if label.startswith("Adam"):
            style = {"lw": 2.0, "ls": "--", "color": "tab:red"}
        train = [r.get("train_loss", math.nan) for r in history]
        if task == "language_model":
            train = [v / math.log(2.0) for v in train]
        axes[0].plot(epochs, train, label=label, **style)
        axes[1].plot(
            epochs, [r.get(f"test_{key}", math.nan) for r in history], label=label, **style
        )
    ylabel = "bits per character" if task == "language_model" else "cross-entropy loss"
    for ax, split in zip(axes, ("train", "test"), strict=True):
        ax.set_xlabel("epoch")
        ax.set_ylabel(f"{split} {ylabel}")
        ax.set_yscale("log")
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=8, loc="upper right")
    fig.suptitle(f"{title}: SGD grid, Adam, Alrao-SGD (seed 0)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def time_sequential(
    name: str,
    setting: Setting,
    workdir: str,
    *,
    epochs: int,
    mesh: distributed.MeshSpec = ALL_DEVICES,
) -> dict:
    """Wall-clock of the seven SGD rates as one vmapped population vs seven sequential ``fit`` runs.

    Both from scratch (compilation included), same data, same epochs, no early stopping, seed 0.
    """
    base = train_config(setting, 0, epochs=epochs, progress=False, mesh=mesh)
    base = base.replace(loop=dataclasses.replace(base.loop, patience=None))
    root = os.path.join(workdir, "timing", name)
    t0 = time.perf_counter()
    run_grid(setting, base, os.path.join(root, f"vmapped_{time.time_ns()}"))
    vmapped = time.perf_counter() - t0
    t0 = time.perf_counter()
    for lr in SGD_GRID:
        run_single(
            setting,
            base,
            os.path.join(root, f"sgd_{lr:g}_{time.time_ns()}"),
            optax.sgd(lr),
            run_info={"optimizer": "sgd", "learning_rate": lr},
        )
    sequential = time.perf_counter() - t0
    return {
        "setting": name,
        "epochs": epochs,
        "rates": list(SGD_GRID),
        "vmapped_s": vmapped,
        "sequential_s": sequential,
        "speedup": sequential / vmapped,
        "device_kind": jax.devices()[0].device_kind,
        "cpu_count": os.cpu_count(),
    }


def main(argv=None) -> dict:
    matplotlib.use("Agg")  # figures go to files; the entry point, not an import, picks the backend
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default="runs/alrao_compare")
    parser.add_argument(
        "--settings", nargs="+", default=list(DEFAULT_SETTINGS), choices=sorted(SETTINGS)
    )
    parser.add_argument("--seeds", nargs="+", type=nonnegative_int, default=[0, 1, 2])
    parser.add_argument(
        "--epochs", type=positive_int, default=None, help="override every setting's epochs"
    )
    parser.add_argument(
        "--lm-train-chars",
        type=nonnegative_int,
        default=None,
        help="char LSTM: training characters read (default 70,000; 0: all)",
    )
    parser.add_argument(
        "--time-sequential",
        action="store_true",
        help="also time the grid as 7 sequential runs (first setting, seed 0)",
    )
    parser.add_argument("--quick", action="store_true", help="one seed, 1-2 epochs, tiny LM text")
    distributed.add_arguments(parser)
    args = parser.parse_args(argv)  # fmt: skip
    require_distinct(parser, "--seeds", args.seeds)
    mesh = distributed.from_args(args)
    os.makedirs(args.workdir, exist_ok=True)
    seeds = args.seeds[:1] if args.quick else args.seeds
    t_start = time.perf_counter()
    results, skipped = {}, {}
    for name in args.settings:
        setting = SETTINGS[name]
        reason = unavailable_reason(setting)
        if reason:
            print(f"skipping {name}: {reason}")
            skipped[name] = reason
            continue
        if setting.task == "language_model":
            chars = args.lm_train_chars
            if args.quick:
                chars = 3_000 if chars is None else chars
            if chars is not None:
                setting = dataclasses.replace(setting, max_train_tokens=chars or None)
        epochs = override(args.epochs, setting.quick_epochs if args.quick else setting.epochs)
        results[name] = compare_setting(
            name, setting, seeds, args.workdir, epochs=epochs, mesh=mesh
        )
    timing = None
    if args.time_sequential and results:
        name = next(iter(results))
        setting = SETTINGS[name]
        epochs = override(args.epochs, setting.quick_epochs if args.quick else 10)
        timing = time_sequential(name, setting, args.workdir, epochs=epochs, mesh=mesh)
        with open(os.path.join(args.workdir, "timing.json"), "w") as f:
            json.dump(timing, f, indent=2)
    out = {"results": results, "skipped": skipped, "timing": timing,
           "wall_time_s": time.perf_counter() - t_start}  # fmt: skip
    with open(os.path.join(args.workdir, "results.json"), "w") as f:
        json.dump(out, f, indent=2, default=_json_default)
    text = "## Table 1 analogue (test metrics at the best validation epoch)\n\n" + table(results)
    text += "\n\n## Every SGD rate\n\n" + grid_table(results)
    if timing:
        text += (
            f"\n\n## Vmapped grid vs sequential runs ({timing['setting']}, {timing['epochs']} epochs, "
            f"{timing['device_kind']})\n\nvmapped: {timing['vmapped_s']:.1f} s, sequential: "
            f"{timing['sequential_s']:.1f} s, speed-up x{timing['speedup']:.2f}"
        )
    text += "\n\n## The paper's Table 1 (CIFAR-10 and PTB)\n\n" + PAPER_TABLE1
    with open(os.path.join(args.workdir, "table.md"), "w") as f:
        f.write(text + "\n")
    print()
    print(text)
    for name, reason in skipped.items():
        print(f"\nskipped {name}: {reason}")
    print(f"\nwall time {out['wall_time_s']:.1f} s")
    print(f"results: {os.path.abspath(os.path.join(args.workdir, 'results.json'))}")
    for r in results.values():
        print(f"figure:  {os.path.abspath(r['figure'])}")
    return out


def _json_default(obj: Any) -> Any:
    if isinstance(obj, (np.generic,)):
        return obj.item()
    if isinstance(obj, tuple):
        return list(obj)
    return repr(obj)


if __name__ == "__main__":
    main()
