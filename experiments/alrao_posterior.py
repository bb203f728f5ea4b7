"""Alrao's Fig. 4: the switch posterior over the classifier copies during training, per copy's rate.

Blier, Wolinski, Ollivier (2019), Appendix B / Fig. 4: with 10 copies on ``[1e-5, 10]`` the copies with the
largest rates lose their weight within a few steps, a copy with a moderately large rate leads briefly,
then one copy with a somewhat smaller rate takes nearly all the weight (model averaging turns into model
selection). Here Alrao-SGD on the MNIST-1D MLP (``--setting`` for the others); the posterior (the mixture
weights the model predicts with) is recorded every ``--log-every`` steps by a ``fit`` callback
(:class:`randlr_jax.training.JsonLinesLog`), and at every epoch's end from the history's
``last_posterior``.

Commands (from the repository root)::

    .venv/bin/python -m experiments.alrao_posterior --workdir runs/alrao_posterior           # a minute
    .venv/bin/python -m experiments.alrao_posterior --workdir runs/alrao_posterior_quick --quick

Expected result of the first (10 epochs; 51.6 s on 2 heavily loaded CPU cores): within the first
epoch the copy at 0.1 leads briefly (``posterior.jsonl``; the committed record keeps the epochs' ends),
then the copy at 0.022 takes over (0.978 at the end of epoch 1, 0.998 after 10 epochs);
``suggest_lr`` gives 0.022.

Writes ``posterior.jsonl`` (step, examples seen, posterior), ``results.json``, ``table.md`` and
``posterior.png`` under ``--workdir``; the run itself is resumable (``posterior.jsonl`` then holds one
record per logged step, as an uninterrupted run's).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import time

import numpy as np

from experiments import _common
from randlr_jax import runner
from randlr_jax.alrao import copy_learning_rates, suggest_lr
from randlr_jax.training import JsonLinesLog, distributed, new_figure, save_figure


@dataclasses.dataclass(frozen=True)
class Config:
    """The study: one Alrao-SGD run of a setting, no early stopping, the posterior every
    ``log_every`` steps. ``lm_train_chars``: a language model's training characters (``None``: the
    setting's)."""

    setting: str = "mnist1d_mlp"
    epochs: int = 10
    log_every: int = 5
    seed: int = 0
    lm_train_chars: int | None = None

    def __post_init__(self):
        if self.setting not in _common.ALRAO_SETTINGS:
            raise ValueError(
                f"setting must be one of {sorted(_common.ALRAO_SETTINGS)}, got {self.setting!r}."
            )


DEFAULT = Config()
CONFIGS: dict[str, Config] = {
    "default": DEFAULT,
    **{name: dataclasses.replace(DEFAULT, setting=name) for name in _common.ALRAO_SETTINGS},
}


def quick(config: Config) -> Config:
    """One epoch (a language model on 3,000 characters)."""
    return dataclasses.replace(config, epochs=1, lm_train_chars=_common.QUICK_LM_TOKENS)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    _common.add_config_arguments(parser, CONFIGS, workdir="runs/alrao_posterior")
    parser.add_argument("--setting", choices=sorted(_common.ALRAO_SETTINGS))
    parser.add_argument("--epochs", type=_common.positive_int)
    parser.add_argument(
        "--log-every", type=_common.positive_int, help="record the posterior every N steps"
    )
    parser.add_argument("--seed", type=_common.nonnegative_int)
    distributed.add_arguments(parser)
    args = parser.parse_args(argv)
    config = _common.resolve_config(args, CONFIGS, quick)
    mesh = distributed.from_args(args)
    setting, reason = _common.study_setting(config.setting, config.lm_train_chars)
    if reason:
        print(f"skipping {config.setting}: {reason}")
        return {"skipped": reason}
    started = time.perf_counter()
    train = _common.alrao_train_config(
        setting,
        config.seed,
        epochs=config.epochs,
        early_stopping=False,
        mesh=mesh,
        description="Alrao-SGD",
    )
    train = train.replace(loop=dataclasses.replace(train.loop, log_every=config.log_every))
    examples_per_step = setting.batch_size * (
        train.loop.seq_len if setting.task == "language_model" else 1
    )
    log = JsonLinesLog(
        os.path.join(args.workdir, "posterior.jsonl"),
        record=lambda step, metrics: {
            "examples": step * examples_per_step,
            "posterior": metrics["posterior"],
        },
    )
    run = runner.train_and_evaluate(
        _common.with_alrao(train, setting),
        os.path.join(args.workdir, "run"),
        callbacks=[log],
        max_train_tokens=setting.max_train_tokens,
    )
    rates = copy_learning_rates(setting.lr_min, setting.lr_max, setting.num_copies)
    trace = log.read()
    epochs_posterior = [r["last_posterior"] for r in run.history if "last_posterior" in r]
    final = np.asarray(epochs_posterior[-1] if epochs_posterior else trace[-1]["posterior"])
    figure = plot(trace, rates, os.path.join(args.workdir, "posterior.png"), config.setting)
    results = {
        "setting": config.setting,
        "epochs": config.epochs,
        "copy_learning_rates": rates.tolist(),
        "posterior_per_epoch": epochs_posterior,
        "final_posterior": final.tolist(),
        "argmax_learning_rate": float(rates[int(np.argmax(final))]),
        "suggested_learning_rate": float(suggest_lr(rates, final)),
        "test_loss": run.summary.get(f"test_{setting.metric}"),
        "test_accuracy": run.summary.get("test_accuracy"),
        "figure": figure,
        "config": dataclasses.asdict(config),
    }
    return _common.finish(
        args.workdir, results, tables={"table": table(results)}, figures=[figure], started=started
    )


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
    from matplotlib import colormaps

    examples = [e["examples"] for e in trace]
    posterior = np.array([e["posterior"] for e in trace])  # (T, N)
    fig = new_figure(figsize=(8, 4.5))
    ax = fig.subplots()
    colors = colormaps["viridis"](np.linspace(0, 1, len(rates)))
    for j, rate in enumerate(rates):
        ax.plot(examples, posterior[:, j], color=colors[j], label=f"{rate:.1e}")
    ax.set_xscale("log")
    ax.set_xlabel("training examples seen")
    ax.set_ylabel("model averaging weight a_j")
    ax.set_title(f"{title}: switch posterior over the classifier copies")
    ax.legend(title="copy's rate", fontsize=7, ncol=2)
    ax.grid(alpha=0.3)
    return save_figure(fig, path)


if __name__ == "__main__":
    main()
