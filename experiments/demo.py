"""The main job: Alrao-SGD vs the whole SGD grid vs Adam on MNIST-1D, in a few minutes on a CPU.

Commands (from the repository root; ``make demo`` does the set-up first)::

    .venv/bin/python -m experiments.demo --workdir runs/demo            # under 5 minutes on 2 cores
    .venv/bin/python -m experiments.demo --workdir runs/demo_quick --quick   # 2 epochs: seconds

The MNIST-1D MLP (two hidden layers of 100 ReLU units, 400 validation examples carved from the 4000
training ones, batch 32, early stopping on validation loss with patience 6, at most 30 epochs) trained
three ways, as in Table 1 of Blier et al. (2019): SGD at every rate of ``{1e-5, ..., 10}`` as one vmapped
population (the best rate chosen on validation loss), Adam with its defaults, and Alrao-SGD with rates in
``[1e-5, 10]`` and 10 classifier copies; each tested at its best validation epoch. Prints the table (one
row per method and per SGD rate) and the path of the learning-curve figure (Fig. 2 analogue); writes
``summary.json`` and ``table.md``. Interrupt it and run it again: it resumes. The full study, with more
settings and seeds, is ``experiments.alrao_compare``.

Expected result of the default run (seed 0; 21.0 s on 2 CPU cores with an empty compilation cache;
a second run, its programs cached, is quicker): the best SGD rate 0.1 (test loss 1.1073, accuracy
0.584), Adam 1e-3 test loss 1.0962 (0.593), Alrao-SGD test loss 1.2405 (0.541); SGD at 10 diverges.
"""

from __future__ import annotations

import argparse
import dataclasses
import time

from experiments import _common
from randlr_jax.training import distributed


@dataclasses.dataclass(frozen=True)
class Config:
    """The demo: one setting of the Alrao studies (``_common.ALRAO_SETTINGS``), one seed."""

    setting: str = "mnist1d_mlp"
    seed: int = 0
    epochs: int = 30


DEFAULT = Config()
CONFIGS: dict[str, Config] = {
    "default": DEFAULT,
    "digits_mlp": dataclasses.replace(DEFAULT, setting="digits_mlp"),  # the same on scikit's digits
}


def quick(config: Config) -> Config:
    """The same three methods for the setting's smoke-test epochs (2)."""
    return dataclasses.replace(config, epochs=_common.ALRAO_SETTINGS[config.setting].quick_epochs)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    _common.add_config_arguments(parser, CONFIGS, workdir="runs/demo")
    parser.add_argument("--seed", type=_common.nonnegative_int)
    parser.add_argument("--epochs", type=_common.positive_int, help="override the epochs")
    distributed.add_arguments(parser)
    args = parser.parse_args(argv)
    config = _common.resolve_config(args, CONFIGS, quick)
    mesh = distributed.from_args(args)
    started = time.perf_counter()
    setting = _common.ALRAO_SETTINGS[config.setting]
    result = _common.compare_setting(
        config.setting, setting, [config.seed], args.workdir, epochs=config.epochs, mesh=mesh
    )
    return _common.finish(
        args.workdir,
        {"result": result, "config": dataclasses.asdict(config)},
        tables={"table": demo_table(result)},
        figures=[result["figure"]],
        started=started,
        results_name="summary.json",
    )


def demo_table(result: dict) -> str:
    """One row per method: the SGD grid's best rate, Adam, Alrao-SGD, then every SGD rate."""
    seed = result["per_seed"][0]
    best_rate = result["rows"]["sgd_best"]["learning_rate"]
    setting = result["setting"]
    lines = [
        "| method | best epoch | best val loss | test loss | test acc |",
        "|---|---:|---:|---:|---:|",
    ]

    def row(name, run):
        test = run["test"]
        lines.append(
            f"| {name} | {run['best_epoch']} | {_num(run['best_validation_loss'])} | "
            f"{_num(test['loss'])} | {_num(test['accuracy'], 3)} |"
        )

    for member in seed["sgd"]:
        if member["learning_rate"] == best_rate:
            row(f"**SGD, best rate {best_rate:g}**", member)
    row("Adam 1e-3", seed["adam"])
    interval = f"[{setting['lr_min']:g}, {setting['lr_max']:g}]"
    row(f"Alrao-SGD {interval}, {setting['num_copies']} copies", seed["alrao_sgd"])
    for member in seed["sgd"]:
        row(f"SGD {member['learning_rate']:g}", member)
    return "\n".join(lines)


def _num(value, digits: int = 4) -> str:
    return "-" if value is None else f"{float(value):.{digits}f}"


if __name__ == "__main__":
    main()
