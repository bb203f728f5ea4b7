"""Alrao's Fig. 4: the switch posterior over the classifier copies during training, per copy's rate.

Blier, Wolinski, Ollivier (2019), Appendix B / Fig. 4: with 10 copies on ``[1e-5, 10]`` the copies with the
largest rates lose their weight within a few steps, a copy with a moderately large rate leads briefly,
then one copy with a somewhat smaller rate takes nearly all the weight (model averaging turns into model
selection). Here Alrao-SGD on the MNIST-1D MLP (``--setting`` for the others); the posterior (the mixture
weights the model predicts with) is recorded every ``--log-every`` steps by a ``fit`` callback, and at
every epoch's end from the history's ``last_posterior``.

Commands (from the repository root)::

    .venv/bin/python -m experiments.alrao_posterior --workdir runs/alrao_posterior           # a minute
    .venv/bin/python -m experiments.alrao_posterior --workdir runs/alrao_posterior --quick   # seconds

Writes ``posterior.jsonl`` (step, examples seen, posterior), ``results.json``, ``table.md`` and
``posterior.png`` under ``--workdir``; the run itself is resumable (the trace of steps already run before
an interruption is kept in ``posterior.jsonl``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time

import matplotlib
import matplotlib.pyplot as plt
import numpy as np

from experiments import alrao_compare as ac
from experiments._common import nonnegative_int, positive_int
from randlr_jax.alrao import copy_learning_rates, suggest_lr
from randlr_jax.training import distributed


def main(argv=None) -> dict:
    matplotlib.use("Agg")  # figures go to files; the entry point, not an import, picks the backend
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default="runs/alrao_posterior")
    parser.add_argument("--setting", default="mnist1d_mlp", choices=sorted(ac.SETTINGS))
    parser.add_argument("--epochs", type=positive_int, default=10)
    parser.add_argument(
        "--log-every", type=positive_int, default=5, help="record the posterior every N steps"
    )
    parser.add_argument("--seed", type=nonnegative_int, default=0)
    parser.add_argument("--quick", action="store_true", help="one epoch")
    distributed.add_arguments(parser)
    args = parser.parse_args(argv)
    mesh = distributed.from_args(args)
    setting = ac.SETTINGS[args.setting]
    reason = ac.unavailable_reason(setting)
    if reason:
        print(f"skipping {args.setting}: {reason}")
        return {"skipped": reason}
    if setting.task == "language_model" and args.quick:
        setting = dataclasses.replace(setting, max_train_tokens=3_000)
    os.makedirs(args.workdir, exist_ok=True)
    t0 = time.perf_counter()
    epochs = 1 if args.quick else args.epochs
    config = ac.train_config(setting, args.seed, epochs=epochs, description="Alrao-SGD", mesh=mesh)
    config = config.replace(
        loop=dataclasses.replace(config.loop, patience=None, log_every=args.log_every)
    )
    trace_path = os.path.join(args.workdir, "posterior.jsonl")
    examples_per_step = setting.batch_size * (70 if setting.task == "language_model" else 1)

    def record(step: int, metrics: dict) -> None:
        with open(trace_path, "a") as f:
            entry = {
                "step": step,
                "examples": step * examples_per_step,
                "posterior": np.asarray(metrics["posterior"]).tolist(),
            }
            f.write(json.dumps(entry) + "\n")

    run = ac.run_alrao(setting, config, os.path.join(args.workdir, "run"), callbacks=[record])
    rates = copy_learning_rates(setting.lr_min, setting.lr_max, setting.num_copies)
    trace = _read_trace(trace_path)
    epochs_posterior = [r["last_posterior"] for r in run.history if "last_posterior" in r]
    final = (
        np.asarray(epochs_posterior[-1]) if epochs_posterior else np.asarray(trace[-1]["posterior"])
    )
    figure = plot(trace, rates, os.path.join(args.workdir, "posterior.png"), args.setting)
    out = {
        "setting": args.setting,
        "epochs": epochs,
        "copy_learning_rates": rates.tolist(),
        "posterior_per_epoch": epochs_posterior,
        "final_posterior": final.tolist(),
        "argmax_learning_rate": float(rates[int(np.argmax(final))]),
        "suggested_learning_rate": float(suggest_lr(rates, final)),
        "test_loss": run.summary.get(f"test_{ac.metric_name(setting)}"),
        "test_accuracy": run.summary.get("test_accuracy"),
        "figure": figure,
        "wall_time_s": time.perf_counter() - t0,
    }
    ac.write_results(args.workdir, out, table(out), figure)
    return out


def _read_trace(path: str) -> list[dict]:
    """The recorded posteriors, one per step (a resumed run re-records nothing twice: last wins)."""
    by_step = {}
    with open(path) as f:
        for line in f:
            entry = json.loads(line)
            by_step[entry["step"]] = entry
    return [by_step[s] for s in sorted(by_step)]


def table(out: dict) -> str:
    lines = ["| copy | learning rate | " + " | ".join(
        f"epoch {i + 1}" for i in range(len(out["posterior_per_epoch"]))
    ) + " |"]  # fmt: skip
    lines.append("|---:|---:|" + "---:|" * len(out["posterior_per_epoch"]))
    for j, rate in enumerate(out["copy_learning_rates"]):
        values = " | ".join(f"{p[j]:.3f}" for p in out["posterior_per_epoch"])
        lines.append(f"| {j} | {rate:.2g} | {values} |")
    lines.append("")
    lines.append(
        f"Final posterior mode: rate {out['argmax_learning_rate']:.2g}; posterior-weighted geometric "
        f"mean (`suggest_lr`): {out['suggested_learning_rate']:.2g}."
    )
    return "\n".join(lines)


def plot(trace: list[dict], rates: np.ndarray, path: str, title: str) -> str:
    """One line per copy: its posterior weight against the number of training examples seen."""
    examples = [e["examples"] for e in trace]
    posterior = np.array([e["posterior"] for e in trace])  # (T, N)
    fig, ax = plt.subplots(figsize=(8, 4.5))
    colors = plt.cm.viridis(np.linspace(0, 1, len(rates)))
    for j, rate in enumerate(rates):
        ax.plot(examples, posterior[:, j], color=colors[j], label=f"{rate:.1e}")
    ax.set_xscale("log")
    ax.set_xlabel("training examples seen")
    ax.set_ylabel("model averaging weight a_j")
    ax.set_title(f"{title}: switch posterior over the classifier copies")
    ax.legend(title="copy's rate", fontsize=7, ncol=2)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


if __name__ == "__main__":
    main()
