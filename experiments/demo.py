"""The main job: train the MNIST-1D MLP with a few optimizers on embedded data and compare them.

Command (from the repository root; ``make demo`` does the set-up first)::

    .venv/bin/python -m experiments.demo --workdir runs/demo

Expected on 2 CPU cores: a few minutes in all; SGD at rate 0.1 and Adam reach test accuracy around 0.6-0.8
after 30 epochs, SGD at rate 1e-3 stays near chance. Writes, under ``--workdir``: one run directory per
optimizer (``metrics.jsonl``, ``results.json``, ``learning_curves.png``, ``checkpoints/``), plus
``summary.json``
and ``comparison.png``. Interrupt it and run the same command again: it resumes.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from randlr_jax.training import LoopConfig, TrainConfig, train_and_evaluate  # noqa: E402


def runs(quick: bool) -> dict[str, TrainConfig]:
    """The compared runs: one config per optimizer, sharing data, model and loop settings."""
    loop = LoopConfig(epochs=3 if quick else 30, batch_size=128, patience=None, seed=0)
    base = TrainConfig(
        dataset="mnist1d",
        model="mlp",
        model_kwargs={"widths": (100, 100)},
        validation_size=400,
        loop=loop,
    )
    return {
        "sgd_lr1e-3": base.replace(optimizer="sgd", learning_rate=1e-3),
        "sgd_lr1e-1": base.replace(optimizer="sgd", learning_rate=1e-1),
        "sgd_lr1": base.replace(optimizer="sgd", learning_rate=1.0),
        "adam_lr1e-3": base.replace(optimizer="adam", learning_rate=1e-3),
        # Alrao-SGD over the whole grid's span, 10 classifier copies (Blier et al. 2019, Table 1 setting).
        "alrao_sgd_1e-5_10": base.replace(
            optimizer="alrao_sgd",
            optimizer_kwargs={"lr_min": 1e-5, "lr_max": 10.0, "num_copies": 10},
        ),
    }


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default="runs/demo", help="run directory (resumes if present)")
    parser.add_argument("--quick", action="store_true", help="3 epochs instead of 30 (smoke test)")
    args = parser.parse_args(argv)
    os.makedirs(args.workdir, exist_ok=True)
    t0 = time.perf_counter()
    summary = {}
    curves = {}
    for name, config in runs(args.quick).items():
        config = config.replace(loop=dataclasses.replace(config.loop, description=name))
        result = train_and_evaluate(config, os.path.join(args.workdir, name))
        summary[name] = {
            "best_epoch": result.summary["best_epoch"],
            "best_validation_loss": result.summary.get("best_validation_loss"),
            "test_loss": result.summary.get("test_loss"),
            "test_accuracy": result.summary.get("test_accuracy"),
            "steps_per_second": result.summary.get("steps_per_second"),
        }
        curves[name] = result.history
    summary_path = os.path.join(args.workdir, "summary.json")
    with open(summary_path, "w") as f:
        json.dump(summary, f, indent=2)
    figure = _comparison_figure(curves, os.path.join(args.workdir, "comparison.png"))
    print()
    print(_table(summary))
    print(f"\nwall time {time.perf_counter() - t0:.1f} s")
    print(f"results: {os.path.abspath(summary_path)}")
    print(f"figure:  {os.path.abspath(figure)}")
    return summary


def _table(summary: dict) -> str:
    header = "| run | best epoch | best val loss | test loss | test acc | steps/s |"
    lines = [header, "|---|---:|---:|---:|---:|---:|"]
    for name, s in summary.items():
        sps = s["steps_per_second"]
        lines.append(
            f"| {name} | {s['best_epoch']} | {s['best_validation_loss']:.4f} | {s['test_loss']:.4f} | "
            f"{s['test_accuracy']:.3f} | {'-' if sps is None else f'{sps:.0f}'} |"
        )
    return "\n".join(lines)


def _comparison_figure(curves: dict, path: str) -> str:
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for name, history in curves.items():
        epochs = [r["epoch"] for r in history]
        axes[0].plot(epochs, [r["train_loss"] for r in history], label=name)
        axes[1].plot(epochs, [r["test_loss"] for r in history], label=name)
    for ax, title in zip(axes, ("train loss", "test loss"), strict=False):
        ax.set_xlabel("epoch")
        ax.set_ylabel(title)
        ax.set_yscale("log")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle("MNIST-1D MLP")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


if __name__ == "__main__":
    main()
