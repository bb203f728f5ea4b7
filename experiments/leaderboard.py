"""The tuning-free leaderboard: this library's methods against Optax's learning-rate-free optimizers.

A user who wants to stop tuning the learning rate in JAX reaches first for ``optax.contrib``: Prodigy
(Mishchenko & Defazio 2024), D-Adaptation (Defazio & Mishchenko 2023), DoG (Ivgi, Hinder & Carmon
2023), COCOB (Orabona & Tommasi 2017), Mechanic (Cutkosky, Defazio & Mehta 2023), schedule-free SGD
and AdamW (Defazio et al. 2024). This study puts every tuning-free method of the library next to them
and next to the tuned baselines, on one protocol:

* **Ours**: Alrao-SGD (``[1e-5, 10]``, 10 copies; the LSTMs ``[1e-3, 100]``, 6 copies, as Blier et
  al. 2019), Alrao-Adam (``[1e-6, 1]``), AutoDrop over SGD with momentum 0.9, NOH with the shipped
  ``noh_mnist1d`` weights, Adam-HD and SGD-HD (Baydin et al. 2018: ``alpha_0 = 1e-3``, ``beta = 1e-7``
  and ``1e-3``), 1cycle with ``max_lr`` the top of the LR range test's ``cyclic_range`` over the whole
  budget, and SGD with momentum at the range test's ``lr_min_div_10`` (Smith 2017, 2018).
* **Peers**: ``optax.contrib``'s Prodigy, D-Adapt AdamW, DoG, COCOB, Mechanic over SGD, schedule-free
  SGD and AdamW, each at its authors' defaults; the schedule-free ones are evaluated at their averaged
  iterate ``x`` (``fit``'s ``eval_params``).
* **Tuned baselines**: the best of the SGD grid ``1e-5 ... 10`` (7 rates) and of the Adam grid
  ``1e-5 ... 1e-1`` (5 rates), each grid one vmapped population; the rate with the lowest mean best
  validation loss over the seeds is the row.

No method is tuned per task: where one needs a start rate and has no default it gets one value for
every task (0.1 SGD-like, 1e-3 Adam-like); ``_tuning_free.TUNING_FREE_METHODS`` states each method's
settings. Protocol: per task a fixed epoch budget for every method, no early stopping (schedules and
drop phases run their course), the epoch with the best validation loss tested.

Reported per task: test loss (nats; the char LSTM in bits per character, the word LM also as
perplexity ``exp(loss)``) and accuracy, mean ± std over seeds; the rank of the mean test loss; the
wall-clock per seed; the tuning budget in training steps (a grid costs all its members, the range
test methods add its steps). Overall: the mean rank over the tasks, the wins (rank 1), the runs that
diverged (a non-finite loss, or never better than the initial parameters on validation), and the tasks
where a method's mean test loss ends more than 5 % above the best tuned baseline's (the better of tuned
SGD and tuned Adam).

Commands (from the repository root)::

    .venv/bin/python -m experiments.leaderboard --workdir runs/leaderboard
    .venv/bin/python -m experiments.leaderboard --workdir runs/leaderboard_quick --quick  # ~1 min
    .venv/bin/python -m experiments.leaderboard --tasks digits_mlp --seeds 0 1 2 --workdir runs/lb

Expected result of the first (3856 s on 2 CPU cores, shared with other work), mean rank over the six
tasks among the 17 methods: COCOB 3.33 (within 5 % of the best tuned baseline on all tasks but 1),
Prodigy 5.33, DoG 7.00, tuned Adam 7.17, Adam-HD 7.50 (the best of ours; it wins digits_mlp at test
loss 0.098), schedule-free SGD 7.67 (it wins both MNIST-1D MLPs, 1.053 and 0.307), tuned SGD 8.33,
1cycle 8.83 (it wins the word LM, perplexity 74.5 against tuned Adam's 97.2), Alrao-SGD 10.00 (more
than 5 % above the best tuned baseline on 5 of the 6 tasks; on the MNIST-1D MLP 1.194 against tuned
SGD's 1.101), NOH 12.67, AutoDrop 14.33, SGD-HD 16.33.

Tasks (``--tasks``): ``mnist1d_mlp`` (40-100-100-10, 3,600 / 400 / 1,000), ``mnist1d_large_mlp``
(MNIST-1D at MNIST's size), ``mnist1d_cnn``, ``digits_mlp`` (5 seeds each), ``char_lstm`` (2-layer
LSTM on the first 70,000 characters of ``shakespeare_char``) and ``word_lm`` (the word LSTM on
``shakespeare_word/small``, 2,000 words), 3 seeds each; ``--config cifar10``: VGG19, MobileNetV2
and GoogLeNet on CIFAR-10 (50 epochs, 3 seeds) where it is prepared in the TFDS data dir (skipped
with the reason otherwise). Every (task, seed, method) trains in its own
directory, ``<workdir>/<task>/seed<s>/<method>``, and is read back once finished (``row.json``):
interrupt the study and run it again, it goes on where it stopped, so the full run (a few CPU-hours)
can be completed over several sittings. Writes ``results.json``, ``table.md`` and ``leaderboard.png``
(per task, every method's test loss with its seeds) in ``--workdir``.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from experiments import _common, _tuning_free
from experiments._common import ALRAO_SETTINGS, AlraoSetting, fmt
from experiments._tuning_free import TUNING_FREE_METHODS
from randlr_jax import runner
from randlr_jax.training import new_figure, save_figure
from randlr_jax.training._progress import progress_bar, write_status

TUNED = ("sgd_grid", "adam_grid")


@dataclasses.dataclass(frozen=True)
class Task:
    """One task of the leaderboard: its setting (data, model, Alrao's interval) and budget.

    Attributes:
      setting: the data and model (``_common.AlraoSetting``; its patience is not used).
      epochs: every method's epochs (no early stopping).
      seeds: how many seeds (``0 .. seeds - 1``).
    """

    setting: AlraoSetting
    epochs: int
    seeds: int


# The word LM at its small size: 2,000 words, 35-token windows, 20 streams, 60,000 training tokens.
WORD_LM = AlraoSetting(
    "shakespeare_word/small", "word_lstm", lr_min=1e-3, lr_max=100.0, num_copies=6,
    batch_size=20, validation_size=None, max_train_tokens=60_000, seq_len=35,
)  # fmt: skip

TASKS: dict[str, Task] = {
    "mnist1d_mlp": Task(ALRAO_SETTINGS["mnist1d_mlp"], epochs=50, seeds=5),
    "mnist1d_large_mlp": Task(ALRAO_SETTINGS["mnist1d_large_mlp"], epochs=15, seeds=5),
    "mnist1d_cnn": Task(ALRAO_SETTINGS["mnist1d_cnn"], epochs=30, seeds=5),
    "digits_mlp": Task(ALRAO_SETTINGS["digits_mlp"], epochs=50, seeds=5),
    "char_lstm": Task(ALRAO_SETTINGS["char_lstm"], epochs=2, seeds=3),
    "word_lm": Task(WORD_LM, epochs=3, seeds=3),
    # Public datasets, run only where prepared in the TFDS data dir (skipped with the reason
    # otherwise): a GPU's budget, 3 seeds.
    **{
        f"cifar10_{model}": Task(ALRAO_SETTINGS[f"cifar10_{model}"], epochs=50, seeds=3)
        for model in ("vgg19", "mobilenetv2", "googlenet")
    },
}
EMBEDDED_TASKS = tuple(name for name, task in TASKS.items() if not task.setting.requires_prepared)


@dataclasses.dataclass(frozen=True)
class Config:
    """The study: which tasks, methods, seeds and budgets.

    Attributes:
      tasks: names of :data:`TASKS`.
      methods: names of ``_tuning_free.TUNING_FREE_METHODS`` (the tuned grids among them).
      seeds: the seeds of every task (``None``: each task's own, ``0 .. Task.seeds - 1``).
      epochs: every task's epochs (``None``: each task's own).
      lm_train_tokens: the language models' training tokens (``None``: each task's own).
    """

    tasks: tuple[str, ...] = EMBEDDED_TASKS
    methods: tuple[str, ...] = tuple(TUNING_FREE_METHODS)
    seeds: tuple[int, ...] | None = None
    epochs: int | None = None
    lm_train_tokens: int | None = None

    def __post_init__(self):
        for field, names, allowed in (
            ("tasks", self.tasks, TASKS),
            ("methods", self.methods, TUNING_FREE_METHODS),
        ):
            unknown = [n for n in names if n not in allowed]
            if unknown or not names or len(set(names)) != len(names):
                raise ValueError(
                    f"{field} must be distinct names of {sorted(allowed)}, got {names!r}."
                )
        if self.seeds is not None and (
            not self.seeds or len(set(self.seeds)) != len(self.seeds) or min(self.seeds) < 0
        ):
            raise ValueError(f"seeds must be distinct integers >= 0, got {self.seeds!r}.")


DEFAULT = Config()
CONFIGS: dict[str, Config] = {
    "default": DEFAULT,
    # The classification tasks only (about an hour on 2 CPU cores).
    "classification": dataclasses.replace(
        DEFAULT, tasks=("mnist1d_mlp", "mnist1d_large_mlp", "mnist1d_cnn", "digits_mlp")
    ),
    # CIFAR-10 with VGG19, MobileNetV2 and GoogLeNet (prepare it first; a GPU's work).
    "cifar10": dataclasses.replace(
        DEFAULT, tasks=tuple(name for name in TASKS if name not in EMBEDDED_TASKS)
    ),
}


def quick(config: Config) -> Config:
    """One small task (the digits MLP), one seed, 3 epochs, every method."""
    return dataclasses.replace(config, tasks=("digits_mlp",), seeds=(0,), epochs=3)


def task_setting(config: Config, name: str) -> tuple[AlraoSetting, int, tuple[int, ...]]:
    """``(setting, epochs, seeds)`` of task ``name`` under ``config``."""
    task = TASKS[name]
    setting = task.setting
    if setting.task == "language_model" and config.lm_train_tokens is not None:
        setting = dataclasses.replace(setting, max_train_tokens=config.lm_train_tokens)
    epochs = task.epochs if config.epochs is None else config.epochs
    seeds = tuple(range(task.seeds)) if config.seeds is None else config.seeds
    return setting, epochs, seeds


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    _common.add_config_arguments(parser, CONFIGS, workdir="runs/leaderboard")
    parser.add_argument("--tasks", nargs="+", choices=sorted(TASKS))
    parser.add_argument("--methods", nargs="+", choices=sorted(TUNING_FREE_METHODS))
    parser.add_argument("--seeds", nargs="+", type=_common.nonnegative_int)
    parser.add_argument("--epochs", type=_common.positive_int, help="every task's epochs")
    parser.add_argument(
        "--lm-train-tokens",
        type=_common.positive_int,
        help="the language models' training tokens (default: each task's own)",
    )
    parser.add_argument(
        "--no-progress", action="store_true", help="no progress bar (one line per run instead)"
    )
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="train nothing: the tables of the runs already finished in --workdir",
    )
    args = parser.parse_args(argv)
    for flag, values in (("--tasks", args.tasks), ("--methods", args.methods)):
        _common.require_distinct(parser, flag, values)
    _common.require_distinct(parser, "--seeds", args.seeds)
    for name in ("tasks", "methods", "seeds"):
        if getattr(args, name) is not None:
            setattr(args, name, tuple(getattr(args, name)))
    config = _common.resolve_config(args, CONFIGS, quick)
    started = time.perf_counter()
    runs, skipped = run_all(
        config, args.workdir, progress=not args.no_progress, report_only=args.report_only
    )
    results = summarize(config, runs)
    results["skipped"] = skipped
    figure = dot_plot(results, os.path.join(args.workdir, "leaderboard.png"))
    results["figure"] = figure
    results["config"] = dataclasses.asdict(config)
    return _common.finish(
        args.workdir,
        results,
        tables={"table": report(results)},
        figures=[figure],
        started=started,
        notes=[f"skipped {name}: {reason}" for name, reason in skipped.items()],
    )


def run_all(
    config: Config, workdir: str, *, progress: bool = True, report_only: bool = False
) -> dict:
    """Every (task, seed, method) of ``config``, each resumable in its own directory.

    ``report_only``: train nothing, read the rows of the runs already finished (a study completed
    over several sittings reports what it has so far; a method then has only its finished seeds).

    Returns ``({task: {"setting", "epochs", "seeds", "rows": {method: [one row per seed]}}}``
    (rows as ``_tuning_free.tuning_free_run`` returns them), ``{skipped task: why}``)."""
    plan, skipped = [], {}
    for name in config.tasks:
        setting, epochs, seeds = task_setting(config, name)
        reason = _common.unprepared_reason(setting)
        if reason:
            print(f"skipping {name}: {reason}")
            skipped[name] = reason
            continue
        plan += [(name, setting, epochs, seed, m) for seed in seeds for m in config.methods]
    if report_only:
        plan = [
            p for p in plan
            if os.path.exists(os.path.join(workdir, p[0], f"seed{p[3]}", p[4], "row.json"))
        ]  # fmt: skip
    out: dict[str, Any] = {}
    bar = progress_bar(total=len(plan), unit="run", desc="leaderboard", disable=not progress)
    try:
        for name, setting, epochs, seed, method in plan:
            task = out.setdefault(
                name,
                {
                    "setting": dataclasses.asdict(setting),
                    "metric": setting.metric,
                    "epochs": epochs,
                    "seeds": [],
                    "rows": {m: [] for m in config.methods},
                },
            )
            if seed not in task["seeds"]:
                task["seeds"].append(seed)
            root = os.path.join(workdir, name, f"seed{seed}")
            bar.set_description(f"{name} s{seed} {method}")
            row = _tuning_free.tuning_free_run(
                method,
                setting,
                seed,
                os.path.join(root, method),
                epochs=epochs,
                range_dir=root,
                description=f"{name} s{seed} {method}",
            )
            task["rows"][method].append(row)
            line = f"{name} seed {seed} {method}: {_row_line(row)} ({row['wall_time_s']:.1f} s)"
            write_status(line) if progress else print(line, flush=True)
            bar.update(1)
    finally:
        bar.close()
    return out, skipped


def _row_line(row: Mapping[str, Any]) -> str:
    if "members" in row:
        best = min(row["members"], key=lambda m: _inf(m["validation_loss"]))
        return f"best rate {best['learning_rate']:g}, test loss {_show(best['loss'])}"
    return f"test loss {_show(row['loss'])}" + (" (diverged)" if row["diverged"] else "")


def _show(value: float | None) -> str:
    return "nan" if value is None else f"{value:.4g}"


def _inf(value: float | None) -> float:
    return math.inf if value is None else float(value)


def _stats(values: Sequence[float | None]) -> tuple[float, float]:
    """Mean and population std; NaN when any value is missing (a diverged seed's loss)."""
    if not values or any(v is None for v in values):
        return math.nan, math.nan
    return _common.mean_std(values)


def method_result(method: str, rows: Sequence[dict]) -> dict[str, Any]:
    """One method's row of a task: its seeds' test results, mean ± std, wall time and budget.

    A grid (tuned baseline) is reduced to its best rate first: the lowest mean over the seeds of the
    members' best validation losses (``runner.best_over_seeds``)."""
    spec = TUNING_FREE_METHODS[method]
    out: dict[str, Any] = {"label": spec.label, "group": spec.group}
    if spec.grid:
        best = runner.best_over_seeds([[m["validation_loss"] for m in r["members"]] for r in rows])
        out["learning_rate"] = spec.grid[best]
        out["label"] = f"{spec.label} ({spec.grid[best]:g})"
        picked = [r["members"][best] for r in rows]
    else:
        picked = list(rows)
    losses = [p["loss"] for p in picked]
    out["test_losses"] = losses
    out["loss"] = _stats(losses)
    out["accuracy"] = _stats([p["accuracy"] for p in picked])
    out["diverged"] = sum(bool(p["diverged"]) for p in picked)
    out["runs_diverged"] = sum(
        bool(m["diverged"]) for r in rows for m in (r["members"] if spec.grid else [r])
    )
    out["seeds"] = [r["seed"] for r in rows]
    out["wall_time_s"] = float(np.mean([r["wall_time_s"] for r in rows]))
    out["tuning_steps"] = int(rows[0]["train_steps"]) if rows else 0
    out["best_epoch"] = [p["best_epoch"] for p in picked]
    if method.startswith("alrao"):
        out["suggest_lr"] = [r["info"]["suggest_lr"] for r in rows]
    return out


def summarize(config: Config, runs: Mapping[str, dict]) -> dict:
    """Per task: every method's result and rank; overall: mean rank, wins, divergences, the tasks
    where a method ends more than 5 % above the best tuned baseline."""
    tasks: dict[str, Any] = {}
    for name, task in runs.items():
        metric = task["metric"]
        methods = {m: method_result(m, rows) for m, rows in task["rows"].items() if rows}
        ranked = sorted(methods, key=lambda m: _rank_key(methods[m]))
        for k, m in enumerate(ranked):
            methods[m]["rank"] = k + 1
        tuned = [methods[m]["loss"][0] for m in TUNED if m in methods]
        tuned = [v for v in tuned if math.isfinite(v)]
        reference = min(tuned) if tuned else math.nan
        for m in methods.values():
            mean = m["loss"][0]
            m["above_tuned"] = (
                None if not math.isfinite(reference) else not (mean <= 1.05 * reference)
            )
        if task["setting"]["model"] == "word_lstm":
            for m in methods.values():
                m["perplexity"] = _stats(
                    [None if v is None else math.exp(v) for v in m["test_losses"]]
                )
        tasks[name] = {
            "metric": metric,
            "epochs": task["epochs"],
            "seeds": task["seeds"],
            "setting": task["setting"],
            "best_tuned_loss": reference,
            "ranking": ranked,
            "methods": methods,
        }
    overall = {}
    for m in config.methods:
        present = [t["methods"][m] for t in tasks.values() if m in t["methods"]]
        if not present:
            continue
        overall[m] = {
            "label": TUNING_FREE_METHODS[m].label,
            "group": TUNING_FREE_METHODS[m].group,
            "tasks": len(present),
            "mean_rank": float(np.mean([p["rank"] for p in present])),
            "wins": sum(p["rank"] == 1 for p in present),
            "runs_diverged": sum(p["runs_diverged"] for p in present),
            "seeds_diverged": sum(p["diverged"] for p in present),
            "tasks_above_tuned": sum(bool(p["above_tuned"]) for p in present),
        }
    order = sorted(overall, key=lambda m: (overall[m]["mean_rank"], -overall[m]["wins"]))
    return {"tasks": tasks, "overall": overall, "overall_ranking": order}


def _rank_key(result: Mapping[str, Any]) -> tuple[float, float]:
    """Lower mean test loss first; a method with a non-finite seed after every finite one."""
    mean = result["loss"][0]
    return (0.0, mean) if math.isfinite(mean) else (1.0, 0.0)


def report(results: Mapping[str, Any]) -> str:
    """``table.md``: the overall table, then one table per task, then every method's defaults."""
    text = "## Overall\n\n" + overall_table(results)
    for name in results["tasks"]:
        text += f"\n\n## {name}\n\n" + task_table(results, name)
    return text + "\n\n## The methods and their defaults\n\n" + defaults_table(results)


def overall_table(results: Mapping[str, Any]) -> str:
    """Mean rank, wins, divergences and the tasks more than 5 % above the best tuned baseline."""
    lines = [
        "| method | kind | mean rank | wins | tasks | diverged runs | tasks > 5 % above tuned |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for m in results["overall_ranking"]:
        o = results["overall"][m]
        lines.append(
            f"| {o['label']} | {o['group']} | {o['mean_rank']:.2f} | {o['wins']} | {o['tasks']} | "
            f"{o['runs_diverged']} | {o['tasks_above_tuned']} |"
        )
    return "\n".join(lines)


def task_table(results: Mapping[str, Any], name: str) -> str:
    """One task: every method by rank, test loss (and accuracy, bits or perplexity), wall time and
    tuning budget."""
    task = results["tasks"][name]
    metric = task["metric"]
    word = task["setting"]["model"] == "word_lstm"
    unit = "test bits/char" if metric == "bits_per_char" else "test loss"
    second = "test perplexity" if word else "test accuracy (%)"
    lines = [
        f"| rank | method | {unit} | {second} | wall-clock per seed (s) | tuning budget (steps) "
        "| diverged seeds |",
        "|---:|---|---:|---:|---:|---:|---:|",
    ]
    for m in task["ranking"]:
        r = task["methods"][m]
        if word:
            extra = fmt(*r["perplexity"], 1)
        else:
            mean, std = r["accuracy"]
            extra = fmt(100 * mean, 100 * std, 1)
        lines.append(
            f"| {r['rank']} | {r['label']} | {fmt(*r['loss'])} | {extra} | "
            f"{r['wall_time_s']:.1f} | {r['tuning_steps']:,} | {r['diverged']} |"
        )
    seeds = len(task["seeds"])
    lines.append(
        f"\n{task['epochs']} epochs, {seeds} seed{'s' * (seeds > 1)}, mean ± std over seeds, tested "
        "at the best validation epoch."
    )
    return "\n".join(lines)


def defaults_table(results: Mapping[str, Any] | None = None) -> str:
    """Every method of the study and the settings it runs at (the same on every task)."""
    names = list(results["overall"]) if results else list(TUNING_FREE_METHODS)
    lines = ["| method | kind | settings (never tuned per task) |", "|---|---|---|"]
    for m in names:
        spec = TUNING_FREE_METHODS[m]
        lines.append(f"| {spec.label} | {spec.group} | {spec.defaults} |")
    return "\n".join(lines)


_COLORS = {"ours": "tab:blue", "peer": "tab:orange", "tuned": "tab:gray"}


def dot_plot(results: Mapping[str, Any], path: str) -> str:
    """Per task, every method's test loss: one dot per seed, a bar at the mean, ranked top down."""
    tasks = results["tasks"]
    count = max(len(tasks), 1)
    cols = min(count, 3)
    rows = math.ceil(count / cols)
    height = max(len(t["methods"]) for t in tasks.values()) if tasks else 1
    fig = new_figure(figsize=(5.2 * cols, 0.28 * height * rows + 1.2 * rows))
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).ravel()
    for ax, (name, task) in zip(axes, tasks.items(), strict=False):
        ranking = task["ranking"]
        for y, m in enumerate(reversed(ranking)):
            r = task["methods"][m]
            color = _COLORS[r["group"]]
            values = [v for v in r["test_losses"] if v is not None]
            ax.scatter(values, [y] * len(values), s=14, color=color, alpha=0.6, zorder=3)
            mean = r["loss"][0]
            if math.isfinite(mean):
                ax.plot([mean, mean], [y - 0.3, y + 0.3], color=color, lw=2.2, zorder=4)
        ax.set_yticks(range(len(ranking)))
        ax.set_yticklabels([task["methods"][m]["label"] for m in reversed(ranking)], fontsize=7)
        reference = task["best_tuned_loss"]
        if math.isfinite(reference):
            ax.axvline(reference, color="k", lw=0.8, ls=":")
            ax.axvline(1.05 * reference, color="tab:red", lw=0.8, ls=":")
        ax.set_xlabel("test bits/char" if task["metric"] == "bits_per_char" else "test loss")
        ax.set_title(f"{name} ({task['epochs']} epochs, {len(task['seeds'])} seeds)", fontsize=9)
        ax.grid(alpha=0.3, axis="x")
    for ax in axes[len(tasks) :]:
        ax.set_visible(False)
    fig.suptitle(
        "Tuning-free leaderboard\nblue: ours, orange: optax.contrib, grey: tuned grids; "
        "dotted: the best tuned, +5 %",
        fontsize=9,
    )
    return save_figure(fig, path)


if __name__ == "__main__":
    main()
