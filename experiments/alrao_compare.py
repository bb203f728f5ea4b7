"""Alrao's Table 1 and Fig. 2 on data that runs anywhere: Alrao-SGD vs the best SGD rate vs Adam.

Blier, Wolinski, Ollivier (2019), Section 3: for each model, SGD at every rate of ``{1e-5, ..., 10}`` (the
best chosen on validation loss), Adam with its defaults (``1e-3, 0.9, 0.999``) and Alrao-SGD (per-feature
rates log-uniform on ``[lr_min, lr_max]``, ``N`` classifier copies averaged by the switch). Protocol: a
validation split carved from train, early stopping on validation loss with patience, the best epoch
tested, several seeds, mean ± standard deviation (``_common.compare_setting``). The SGD grid trains as
one vmapped population (:func:`randlr_jax.runner.train_and_evaluate_population`): one compiled program
for all seven rates.

Commands (from the repository root)::

    .venv/bin/python -m experiments.alrao_compare --config paper --workdir runs/alrao_paper
    .venv/bin/python -m experiments.alrao_compare --workdir runs/alrao_compare --time-sequential
    .venv/bin/python -m experiments.alrao_compare --workdir runs/alrao_compare_quick --quick  # seconds

``--config paper`` is the paper's protocol (at most 100 epochs, patience 20, 5 seeds) on the MNIST-1D
MLP at both sizes (``mnist1d`` and ``mnist1d/large``: 60,000 training examples), the MNIST-1D CNN and
the digits MLP, the char LSTM at its reduced size; the default is 3 seeds at most 30 epochs, patience 6.

Expected result of the first (seeds 0-4; 1271 s (21.2 min) on 2 CPU cores), test loss at the best
validation epoch, mean ± std: MNIST-1D MLP: SGD's best rate 0.1 1.101 ± 0.010 (accuracy 58.5 %), Adam
1.112 ± 0.019 (58.1 %), Alrao-SGD 1.194 ± 0.046 (56.3 %); MNIST-1D large: SGD 0.1 0.326 (90.4 %), Adam
0.363 (88.7 %), Alrao 0.372 (87.6 %); MNIST-1D CNN: SGD 0.1 0.313 (90.6 %), Adam 0.461 (84.0 %), Alrao
0.366 ± 0.110 (88.8 %); digits: SGD 0.1 0.121 (97.2 %), Adam 0.103 (98.0 %), Alrao 0.120 (97.4 %); the
char LSTM (2 epochs of 70,000 characters: a smoke test) stays near 5 bits/char (4.967-5.062).

Settings (``--settings``, ``_common.ALRAO_SETTINGS``): ``mnist1d_mlp``, ``mnist1d_large_mlp``,
``mnist1d_cnn``, ``digits_mlp``,
``char_lstm`` (2-layer LSTM on ``shakespeare_char``, rates ``[1e-3, 100]``, 6 copies, bits per character,
truncated BPTT 70; on CPU it reads only the first ``--lm-train-chars`` characters of the training text),
and ``cifar10_vgg19``, ``cifar10_mobilenetv2``, ``cifar10_googlenet`` (only when CIFAR-10 is prepared in
the TFDS data dir; otherwise skipped with the reason printed). Writes under ``--workdir``: one directory
per setting, seed and method (resumable checkpoints), ``results.json``, ``table.md``,
``learning_curves_<setting>.png`` (Fig. 2 analogue) and, with ``--time-sequential``, ``timing.json`` (the
vmapped grid against seven sequential runs). Interrupt it and run it again: it resumes.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import time

import jax
import optax

from experiments import _common
from experiments._common import ALRAO_SETTINGS, SGD_GRID, fmt
from randlr_jax import runner
from randlr_jax.training import distributed

EPOCH_BUDGETS = ("epochs", "quick_epochs")


@dataclasses.dataclass(frozen=True)
class Config:
    """The study: which settings, seeds and budget.

    Attributes:
      settings: names of ``_common.ALRAO_SETTINGS``.
      seeds: one run of every method per seed (distinct).
      epochs: every setting's epochs (``None``: each setting's own, see ``epoch_budget``).
      epoch_budget: the setting field giving its epochs when ``epochs`` is ``None``: ``"epochs"``
        (the study's budget) or ``"quick_epochs"`` (its smoke-test size).
      lm_train_chars: the char LSTM's training characters (``None``: the setting's 70,000; ``0``: all).
      time_sequential: also time the grid against 7 sequential runs (the first setting, seed 0).
      timing_epochs: the epochs of that timing (``epochs`` instead, if given).
      patience: every classification setting's early-stopping patience (``None``: its own); the
        language model keeps its own budget.
    """

    settings: tuple[str, ...] = ("mnist1d_mlp", "mnist1d_cnn", "digits_mlp", "char_lstm")
    seeds: tuple[int, ...] = (0, 1, 2)
    epochs: int | None = None
    epoch_budget: str = "epochs"
    lm_train_chars: int | None = None
    time_sequential: bool = False
    timing_epochs: int = 10
    patience: int | None = None

    def __post_init__(self):
        if self.epoch_budget not in EPOCH_BUDGETS:
            raise ValueError(
                f"epoch_budget must be one of {EPOCH_BUDGETS}, got {self.epoch_budget!r}."
            )
        unknown = [name for name in self.settings if name not in ALRAO_SETTINGS]
        if unknown or not self.settings:
            raise ValueError(
                f"settings must be names of {sorted(ALRAO_SETTINGS)}, got {self.settings!r}."
            )


DEFAULT = Config()
CONFIGS: dict[str, Config] = {
    "default": DEFAULT,
    **{name: dataclasses.replace(DEFAULT, settings=(name,)) for name in ALRAO_SETTINGS},
    "cifar10": dataclasses.replace(
        DEFAULT, settings=tuple(n for n in ALRAO_SETTINGS if n.startswith("cifar10_"))
    ),
    # The larger run of the README (a GPU): the MLP with 5 seeds and 100 epochs.
    "large": dataclasses.replace(
        DEFAULT, settings=("mnist1d_mlp",), seeds=(0, 1, 2, 3, 4), epochs=100
    ),
    # The paper's protocol (Blier et al. 2019, Section 3: at most 100 epochs, patience 20), 5 seeds,
    # on the CPU: the MNIST-1D MLP at both sizes, the CNN and the digits MLP (the char LSTM at its
    # reduced size and budget).
    "paper": dataclasses.replace(
        DEFAULT,
        settings=("mnist1d_mlp", "mnist1d_large_mlp", "mnist1d_cnn", "digits_mlp", "char_lstm"),
        seeds=(0, 1, 2, 3, 4),
        epochs=100,
        patience=20,
    ),
}


def quick(config: Config) -> Config:
    """One seed, each setting's smoke-test epochs (1-2; 2 for the timing), the char LSTM on 3,000
    characters."""
    return dataclasses.replace(
        config,
        seeds=config.seeds[:1],
        epoch_budget="quick_epochs",
        timing_epochs=2,
        lm_train_chars=(
            _common.QUICK_LM_TOKENS if config.lm_train_chars is None else config.lm_train_chars
        ),
    )


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    _common.add_config_arguments(parser, CONFIGS, workdir="runs/alrao_compare")
    parser.add_argument("--settings", nargs="+", choices=sorted(ALRAO_SETTINGS))
    parser.add_argument("--seeds", nargs="+", type=_common.nonnegative_int)
    parser.add_argument(
        "--epochs", type=_common.positive_int, help="override every setting's epochs"
    )
    parser.add_argument(
        "--lm-train-chars",
        type=_common.nonnegative_int,
        help="char LSTM: training characters read (default 70,000; 0: all)",
    )
    parser.add_argument(
        "--time-sequential",
        action="store_true",
        default=None,
        help="also time the grid as 7 sequential runs (first setting, seed 0)",
    )
    distributed.add_arguments(parser)
    args = parser.parse_args(argv)
    _common.require_distinct(parser, "--seeds", args.seeds)
    for name in ("settings", "seeds"):
        if getattr(args, name) is not None:
            setattr(args, name, tuple(getattr(args, name)))
    config = _common.resolve_config(args, CONFIGS, quick)
    mesh = distributed.from_args(args)
    started = time.perf_counter()
    results, skipped = {}, {}
    for name in config.settings:
        setting = setting_of(config, name)
        reason = _common.unprepared_reason(setting)
        if reason:
            print(f"skipping {name}: {reason}")
            skipped[name] = reason
            continue
        results[name] = _common.compare_setting(
            name, setting, config.seeds, args.workdir, epochs=epochs_of(config, setting), mesh=mesh
        )
    timing = None
    if config.time_sequential and results:
        name = next(iter(results))
        epochs = config.timing_epochs if config.epochs is None else config.epochs
        timing = time_sequential(
            name, setting_of(config, name), args.workdir, epochs=epochs, mesh=mesh
        )
        _common.write_json(os.path.join(args.workdir, "timing.json"), timing)
    return _common.finish(
        args.workdir,
        {
            "results": results,
            "skipped": skipped,
            "timing": timing,
            "config": dataclasses.asdict(config),
        },
        tables={"table": report(results, timing)},
        figures=[r["figure"] for r in results.values()],
        started=started,
        notes=[f"skipped {name}: {reason}" for name, reason in skipped.items()],
    )


def setting_of(config: Config, name: str) -> _common.AlraoSetting:
    """The setting ``name`` with the config's text cut (language models)."""
    setting = ALRAO_SETTINGS[name]
    if setting.task == "language_model" and config.lm_train_chars is not None:
        setting = dataclasses.replace(setting, max_train_tokens=config.lm_train_chars or None)
    if setting.task != "language_model" and config.patience is not None:
        setting = dataclasses.replace(setting, patience=config.patience)
    return setting


def epochs_of(config: Config, setting: _common.AlraoSetting) -> int:
    """``config.epochs`` (a language model: only when ``patience`` is not set, i.e. outside the
    paper's protocol, where it keeps its reduced budget), else the setting's ``config.epoch_budget``
    field."""
    own = getattr(setting, config.epoch_budget)
    if config.epochs is None:
        return own
    if setting.task == "language_model" and config.patience is not None:
        return own
    return config.epochs


def time_sequential(
    name: str, setting: _common.AlraoSetting, workdir: str, *, epochs: int, mesh=None
) -> dict:
    """Wall-clock of the seven SGD rates as one vmapped population vs seven sequential runs.

    Both from scratch (compilation included, fresh directories), same data, same epochs, no early
    stopping, seed 0.
    """
    base = _common.alrao_train_config(
        setting, 0, epochs=epochs, early_stopping=False, progress=False, mesh=mesh
    )
    root = os.path.join(workdir, "timing", name)
    cut = setting.max_train_tokens
    t0 = time.perf_counter()
    runner.train_and_evaluate_population(
        base, os.path.join(root, f"vmapped_{time.time_ns()}"), SGD_GRID, max_train_tokens=cut
    )
    vmapped = time.perf_counter() - t0
    t0 = time.perf_counter()
    for lr in SGD_GRID:
        runner.train_and_evaluate(
            base,
            os.path.join(root, f"sgd_{lr:g}_{time.time_ns()}"),
            tx=optax.sgd(lr),
            run_info={"optimizer": "sgd", "learning_rate": lr},
            max_train_tokens=cut,
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


def report(results: dict, timing: dict | None) -> str:
    """``table.md``: the Table 1 analogue, every SGD rate, the timing and the paper's Table 1."""
    text = "## Table 1 analogue (test metrics at the best validation epoch)\n\n" + table(results)
    text += "\n\n## Every SGD rate\n\n" + grid_table(results)
    if timing:
        text += (
            f"\n\n## Vmapped grid vs sequential runs ({timing['setting']}, {timing['epochs']} epochs, "
            f"{timing['device_kind']})\n\nvmapped: {timing['vmapped_s']:.1f} s, sequential: "
            f"{timing['sequential_s']:.1f} s, speed-up x{timing['speedup']:.2f}"
        )
    return text + "\n\n## The paper's Table 1 (CIFAR-10 and PTB)\n\n" + PAPER_TABLE1


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


if __name__ == "__main__":
    main()
