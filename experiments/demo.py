"""The main job: Alrao-SGD vs the whole SGD grid vs Adam on MNIST-1D, in a few minutes on a CPU.

Command (from the repository root; ``make demo`` does the set-up first)::

    .venv/bin/python -m experiments.demo --workdir runs/demo

The MNIST-1D MLP (two hidden layers of 100 ReLU units, 400 validation examples carved from the 4000
training ones, batch 32, early stopping on validation loss with patience 6, at most 30 epochs) trained
three ways, as in Table 1 of Blier et al. (2019): SGD at every rate of ``{1e-5, ..., 10}`` as one vmapped
population (the best rate chosen on validation loss), Adam with its defaults, and Alrao-SGD with rates in
``[1e-5, 10]`` and 10 classifier copies; each tested at its best validation epoch. Prints the table (one
row per method and per SGD rate) and the path of the learning-curve figure (Fig. 2 analogue). Takes
under 5 minutes on 2 CPU cores; ``--quick`` (2 epochs) takes well under a minute. Interrupt it and run it
again: it resumes. The full study, with more settings and seeds, is ``experiments.alrao_compare``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time

import matplotlib

from experiments import alrao_compare
from experiments._common import nonnegative_int, override, positive_int
from randlr_jax.training import distributed


def main(argv=None) -> dict:
    matplotlib.use("Agg")  # figures go to files; the entry point, not an import, picks the backend
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default="runs/demo", help="run directory (resumes if present)")
    parser.add_argument("--quick", action="store_true", help="2 epochs instead of 30 (smoke test)")
    parser.add_argument("--seed", type=nonnegative_int, default=0)
    parser.add_argument(
        "--epochs", type=positive_int, default=None, help="override the number of epochs"
    )
    distributed.add_arguments(parser)
    args = parser.parse_args(argv)
    mesh = distributed.from_args(args)
    os.makedirs(args.workdir, exist_ok=True)
    t0 = time.perf_counter()
    setting = dataclasses.replace(alrao_compare.SETTINGS["mnist1d_mlp"], epochs=30)
    epochs = override(args.epochs, setting.quick_epochs if args.quick else setting.epochs)
    result = alrao_compare.compare_setting(
        "mnist1d_mlp", setting, [args.seed], args.workdir, epochs=epochs, mesh=mesh
    )
    summary = {"result": result, "wall_time_s": time.perf_counter() - t0}
    summary_path = os.path.join(args.workdir, "summary.json")
    with open(summary_path, "w") as f:
        json.dump(summary, f, indent=2, default=alrao_compare._json_default)
    text = demo_table(result)
    with open(os.path.join(args.workdir, "table.md"), "w") as f:
        f.write(text + "\n")
    print()
    print(text)
    print(f"\nwall time {summary['wall_time_s']:.1f} s")
    print(f"results: {os.path.abspath(summary_path)}")
    print(f"figure:  {os.path.abspath(result['figure'])}")
    return summary


def demo_table(result: dict) -> str:
    """One row per method: the SGD grid's best rate, Adam, Alrao-SGD, then every SGD rate."""
    seed = result["per_seed"][0]
    best_rate = result["rows"]["sgd_best"]["learning_rate"]
    setting = result["setting"]
    lines = [
        "| method | best epoch | best val loss | test loss | test acc |",
        "|---|---:|---:|---:|---:|",
    ]

    def row(name, best_epoch, val, test):
        lines.append(
            f"| {name} | {best_epoch} | {_num(val)} | {_num(test['loss'])} | "
            f"{_num(test['accuracy'], 3)} |"
        )

    for member in seed["sgd"]:
        if member["learning_rate"] == best_rate:
            row(
                f"**SGD, best rate {best_rate:g}**",
                member["best_epoch"],
                member["best_validation_loss"],
                member["test"],
            )
    row(
        "Adam 1e-3",
        seed["adam"]["best_epoch"],
        seed["adam"]["best_validation_loss"],
        seed["adam"]["test"],
    )
    row(
        f"Alrao-SGD [{setting['lr_min']:g}, {setting['lr_max']:g}], {setting['num_copies']} copies",
        seed["alrao_sgd"]["best_epoch"],
        seed["alrao_sgd"]["best_validation_loss"],
        seed["alrao_sgd"]["test"],
    )
    for member in seed["sgd"]:
        row(
            f"SGD {member['learning_rate']:g}",
            member["best_epoch"],
            member["best_validation_loss"],
            member["test"],
        )
    return "\n".join(lines)


def _num(value, digits: int = 4) -> str:
    return "-" if value is None else f"{float(value):.{digits}f}"


if __name__ == "__main__":
    main()
