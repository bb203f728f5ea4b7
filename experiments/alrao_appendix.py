"""Alrao's appendices C-G on data that runs anywhere, one subcommand each.

Blier, Wolinski, Ollivier (2019):

* ``per_weight`` (Appendix E): per-feature vs per-weight random rates in the pre-classifier, over several
  intervals (the classifier copies unchanged).
* ``fraction`` (Appendix F): SGD at one rate ``eta0`` training only a random fraction ``p`` of the features
  (chosen at start-up; the others stay at their initial value), i.e. rates ``P(eta = eta0) = p``,
  ``P(eta = 0) = 1 - p``, one draw per feature through the per-feature rate machinery; the classifier layer
  is trained fully.
* ``adam`` (Appendix C): Alrao-Adam on ``[1e-6, 1]`` vs Adam at ``{1e-4, 1e-3, 1e-2}`` (one vmapped
  population).
* ``wider`` (Appendix G): the same network 3x wider, for the SGD grid (best rate on validation) and Alrao.
* ``params`` (Appendix D): parameter counts with and without Alrao's classifier copies (shapes only, no
  data): the paper's models and ours.
* ``all``: every one of them.

Commands (from the repository root)::

    .venv/bin/python -m experiments.alrao_appendix all --workdir runs/alrao_appendix          # minutes
    .venv/bin/python -m experiments.alrao_appendix all --workdir runs/alrao_appendix --quick  # seconds
    .venv/bin/python -m experiments.alrao_appendix fraction --setting mnist1d_cnn

Each subcommand writes ``<workdir>/<name>/results.json``, ``table.md`` and a PNG (``params``: no PNG), each
training run resumable in its own directory. Default setting: the MNIST-1D MLP, one seed, early stopping
on validation loss, the best epoch tested.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import optax

from experiments import alrao_compare as ac
from experiments._common import nonnegative_int, override, positive_float, positive_int
from randlr_jax import AlraoHead
from randlr_jax import models as rmodels
from randlr_jax.alrao import sample_feature_lrs, scale_by_lr_tree
from randlr_jax.training import distributed

COMMANDS = ("per_weight", "fraction", "adam", "wider", "params")


def _base(args, setting: ac.Setting, description: str):
    # --epochs wins over --quick's budget, as in alrao_compare and demo.
    epochs = override(args.epochs, setting.quick_epochs if args.quick else setting.epochs)
    config = ac.train_config(
        setting, args.seed, epochs=epochs, description=description, mesh=args.mesh_spec
    )
    return config


def _result(run: Any, metric: str) -> dict:
    return {
        "best_epoch": run.summary["best_epoch"],
        "best_validation_loss": run.summary.get("best_validation_loss"),
        "test_loss": run.summary.get(f"test_{metric}"),
        "test_accuracy": run.summary.get("test_accuracy"),
    }


def per_weight(args, setting: ac.Setting, workdir: str) -> dict:
    """Appendix E: ``per="feature"`` vs ``per="weight"`` over several intervals."""
    intervals = (
        [(1e-3, 1.0)] if args.quick else [(1e-5, 10.0), (1e-3, 1.0), (1e-2, 10.0), (1e-3, 100.0)]
    )
    rows = []
    for lr_min, lr_max in intervals:
        for per in ("feature", "weight"):
            name = f"{per}_{lr_min:g}_{lr_max:g}"
            run = ac.run_alrao(
                setting,
                _base(args, setting, f"per {per} [{lr_min:g}, {lr_max:g}]"),
                os.path.join(workdir, name),
                lr_min=lr_min,
                lr_max=lr_max,
                extra={"per": per},
            )
            rows.append(
                {"per": per, "lr_min": lr_min, "lr_max": lr_max, **_result(run, args.metric)}
            )
    labels = sorted({f"[{r['lr_min']:g}, {r['lr_max']:g}]" for r in rows}, key=lambda s: s)
    fig, ax = plt.subplots(figsize=(7, 4))
    x = np.arange(len(intervals))
    for offset, per in ((-0.2, "feature"), (0.2, "weight")):
        values = [_get(rows, per=per, lr_min=a, lr_max=b)["test_loss"] for a, b in intervals]
        ax.bar(x + offset, _nan(values), width=0.4, label=f"per {per}")
    labels = [f"[{a:g}, {b:g}]" for a, b in intervals]
    ax.set_xticks(x, labels)
    ax.set_xlabel("(lr_min, lr_max)")
    ax.set_ylabel("test loss at best validation epoch")
    ax.legend()
    ax.set_title("Appendix E: per-feature vs per-weight learning rates")
    return _finish(workdir, rows, fig, "per_weight.png", ("per", "lr_min", "lr_max"))


def fraction_learning_rates(key: jax.Array, params: Any, learning_rate: float, p: float) -> Any:
    """Rates ``learning_rate`` for a random fraction ``p`` of the body's features, 0 for the rest.

    One uniform draw per feature, shared by all of its weights: :func:`randlr_jax.alrao.sample_feature_lrs`
    on ``[1, e]`` gives ``log(rate) ~ U(0, 1)`` per feature, and the feature trains when that is below ``p``.
    The classifier layer (``params["head"]``) gets ``learning_rate`` everywhere.
    """
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"p must be in [0, 1], got {p!r}.")
    uniforms = jax.tree.map(jnp.log, sample_feature_lrs(key, params["body"], 1.0, math.e))
    body = jax.tree.map(
        lambda u: jnp.where(u < p, learning_rate, 0.0).astype(jnp.float32), uniforms
    )
    head = jax.tree.map(lambda _: jnp.asarray(learning_rate, jnp.float32), params["head"])
    return {"body": body, "head": head}


def fraction(args, setting: ac.Setting, workdir: str) -> dict:
    """Appendix F: SGD at ``eta0`` training a random fraction ``p`` of the features."""
    fractions = [0.25, 1.0] if args.quick else [0.1, 0.25, 0.5, 0.75, 1.0]
    rows = []
    for p in fractions:
        config = _base(args, setting, f"fraction p={p:g}")
        splits, spec, task = ac.splits_of(setting, config)
        model = ac.build_model(config, spec)
        sample = (
            np.zeros((1, 70), np.int32)
            if task == "language_model"
            else np.asarray(splits["train"]["x"][:1])
        )
        init_args = (sample, model.initial_carry(1)) if task == "language_model" else (sample,)
        shapes = jax.eval_shape(
            lambda m=model, a=init_args: m.init(jax.random.key(0), *a, train=False)
        )["params"]
        key = jax.random.fold_in(jax.random.key(args.seed), 2)
        rates = fraction_learning_rates(key, shapes, args.eta0, p)
        trained = _trained_fraction(rates["body"], shapes["body"])
        tx = optax.chain(scale_by_lr_tree(rates), optax.scale(-1.0))
        run = ac.run_single(
            setting,
            config,
            os.path.join(workdir, f"p{p:g}"),
            tx,
            run_info={"optimizer": "sgd_feature_fraction", "learning_rate": args.eta0, "p": p},
        )
        rows.append({"p": p, "trained_weight_fraction": trained, **_result(run, args.metric)})
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(fractions, _nan([r["test_loss"] for r in rows]), marker="o", label="test")
    ax.plot(
        fractions, _nan([r["best_validation_loss"] for r in rows]), marker="s", label="validation"
    )
    ax.set_xlabel("fraction p of features trained")
    ax.set_ylabel("loss at best validation epoch")
    ax.set_title(f"Appendix F: SGD lr={args.eta0:g} on a random fraction of features")
    ax.legend()
    ax.grid(alpha=0.3)
    return _finish(workdir, rows, fig, "fraction.png", ("p",))


def _trained_fraction(rates: Any, shapes: Any) -> float:
    """Fraction of the body's weights whose rate is non-zero."""
    total = trained = 0
    for rate, shape in zip(jax.tree.leaves(rates), jax.tree.leaves(shapes), strict=True):
        full = np.broadcast_to(np.asarray(rate), shape.shape)
        total += full.size
        trained += int(np.count_nonzero(full))
    return trained / max(total, 1)


def adam(args, setting: ac.Setting, workdir: str) -> dict:
    """Appendix C: Alrao-Adam on ``[1e-6, 1]`` vs Adam at several rates."""
    rates = [1e-4, 1e-3, 1e-2]
    grid = ac.run_grid(
        setting,
        _base(args, setting, "Adam grid"),
        os.path.join(workdir, "adam_grid"),
        rates,
        optax.adam,
    )
    alrao = ac.run_alrao(
        setting,
        _base(args, setting, "Alrao-Adam [1e-6, 1]"),
        os.path.join(workdir, "alrao_adam"),
        optimizer="alrao_adam",
        lr_min=1e-6,
        lr_max=1.0,
    )
    rows = [
        {
            "method": f"Adam {m['learning_rate']:g}",
            "best_epoch": m["best_epoch"],
            "best_validation_loss": m.get("best_validation_loss"),
            "test_loss": m.get(f"test_{args.metric}"),
            "test_accuracy": m.get("test_accuracy"),
        }
        for m in grid.members
    ]
    rows.append({"method": "Alrao-Adam [1e-6, 1]", **_result(alrao, args.metric)})
    from randlr_jax.training._population import member_history

    curves = {f"Adam {lr:g}": member_history(grid.history, k) for k, lr in enumerate(rates)}
    curves["Alrao-Adam [1e-6, 1]"] = alrao.history
    fig = _curves(curves, "Appendix C: Alrao-Adam vs Adam", args.metric)
    return _finish(workdir, rows, fig, "adam.png", ("method",))


def wider(args, setting: ac.Setting, workdir: str) -> dict:
    """Appendix G: width multiplier 1 and 3, for the SGD grid (best on validation) and Alrao-SGD."""
    rows = []
    for multiplier in (1.0, 3.0):
        wide = dataclasses.replace(
            setting, model_kwargs={**setting.model_kwargs, "width_multiplier": multiplier}
        )
        grid = ac.run_grid(
            wide,
            _base(args, wide, f"SGD grid x{multiplier:g}"),
            os.path.join(workdir, f"sgd_x{multiplier:g}"),
        )
        best = grid.summary["best_member"]
        member = grid.members[best] if best is not None else {}
        rows.append(
            {
                "width": multiplier,
                "method": f"SGD best ({grid.summary['best_learning_rate']})",
                "best_epoch": member.get("best_epoch"),
                "best_validation_loss": member.get("best_validation_loss"),
                "test_loss": member.get(f"test_{args.metric}"),
                "test_accuracy": member.get("test_accuracy"),
            }
        )
        alrao = ac.run_alrao(
            wide,
            _base(args, wide, f"Alrao x{multiplier:g}"),
            os.path.join(workdir, f"alrao_x{multiplier:g}"),
        )
        rows.append({"width": multiplier, "method": "Alrao-SGD", **_result(alrao, args.metric)})
    fig, ax = plt.subplots(figsize=(6, 4))
    for method in ("SGD", "Alrao"):
        values = [r["test_loss"] for r in rows if r["method"].startswith(method)]
        ax.plot([1, 3], _nan(values), marker="o", label=method)
    ax.set_xlabel("width multiplier")
    ax.set_ylabel("test loss at best validation epoch")
    ax.set_title("Appendix G: 3x wider network")
    ax.legend()
    ax.grid(alpha=0.3)
    return _finish(workdir, rows, fig, "wider.png", ("width", "method"))


# The paper's Table 2 (millions of parameters, without / with Alrao).
PAPER_TABLE2 = {
    "googlenet": (6.166, 6.258),
    "vgg19": (20.041, 20.087),
    "mobilenetv2": (2.297, 2.412),
    "char_lstm": (0.172, 0.197),
}


def params(args, setting: ac.Setting, workdir: str) -> dict:
    """Appendix D: parameter counts without / with Alrao (10 copies; 6 for the LSTM), from shapes."""
    del setting
    cases = [
        ("mlp (MNIST-1D)", "mlp", {"widths": (100, 100)}, 10, (40,), 10),
        ("cnn1d (MNIST-1D)", "cnn1d", {}, 10, (40,), 10),
        ("char_lstm (shakespeare_char, 88 symbols)", "char_lstm", {}, 88, None, 6),
        ("char_lstm (PTB chars, 50 symbols)", "char_lstm", {}, 50, None, 6),
        ("vgg19 (CIFAR-10)", "vgg19", {}, 10, (32, 32, 3), 10),
        ("mobilenetv2 (CIFAR-10)", "mobilenetv2", {}, 10, (32, 32, 3), 10),
        ("googlenet (CIFAR-10)", "googlenet", {}, 10, (32, 32, 3), 10),
    ]
    if args.quick:
        cases = cases[:3]
    rows = []
    for label, name, kwargs, classes, input_shape, copies in cases:
        counts = []
        for head in (None, AlraoHead(num_outputs=classes, num_copies=copies)):
            if name == "char_lstm":
                model = rmodels.make_model(name, vocab_size=classes, head=head, **kwargs)
                init_args = (jnp.zeros((1, 5), jnp.int32), model.initial_carry(1))
            else:
                model = rmodels.make_model(name, num_classes=classes, head=head, **kwargs)
                init_args = (jnp.zeros((1, *input_shape), jnp.float32),)
            shapes = jax.eval_shape(
                lambda m=model, a=init_args: m.init(jax.random.key(0), *a, train=False)
            )
            counts.append(rmodels.count_params(shapes["params"]))
        paper = PAPER_TABLE2.get(name) if "PTB" in label or name != "char_lstm" else None
        rows.append(
            {
                "model": label,
                "copies": copies,
                "without_alrao": counts[0],
                "with_alrao": counts[1],
                "increase_pct": 100.0 * (counts[1] - counts[0]) / counts[0],
                "paper_without_M": None if paper is None else paper[0],
                "paper_with_M": None if paper is None else paper[1],
            }
        )
    return _finish(workdir, rows, None, None, ("model",))


def _get(rows: list[dict], **match) -> dict:
    return next(r for r in rows if all(r[k] == v for k, v in match.items()))


def _nan(values) -> list[float]:
    return [math.nan if v is None or not math.isfinite(float(v)) else float(v) for v in values]


def _curves(curves: dict, title: str, metric: str):
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for label, history in curves.items():
        epochs = [r["epoch"] for r in history]
        axes[0].plot(epochs, _nan([r.get("train_loss") for r in history]), label=label)
        axes[1].plot(epochs, _nan([r.get(f"test_{metric}") for r in history]), label=label)
    for ax, split in zip(axes, ("train", "test"), strict=True):
        ax.set_xlabel("epoch")
        ax.set_ylabel(f"{split} loss")
        ax.set_yscale("log")
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def _finish(workdir: str, rows: list[dict], fig, figure_name: str | None, keys: tuple) -> dict:
    figure = None
    if fig is not None:
        figure = os.path.join(workdir, figure_name)
        fig.tight_layout()
        fig.savefig(figure, dpi=110)
        plt.close(fig)
    text = _table(rows)
    with open(os.path.join(workdir, "table.md"), "w") as f:
        f.write(text + "\n")
    out = {"rows": rows, "figure": figure}
    with open(os.path.join(workdir, "results.json"), "w") as f:
        json.dump(out, f, indent=2, default=repr)
    return out


def _table(rows: list[dict]) -> str:
    columns = list(rows[0])
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for r in rows:
        lines.append("| " + " | ".join(_cell(r[c]) for c in columns) + " |")
    return "\n".join(lines)


def _cell(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def main(argv=None) -> dict:
    matplotlib.use("Agg")  # figures go to files; the entry point, not an import, picks the backend
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=COMMANDS + ("all",))
    parser.add_argument("--workdir", default="runs/alrao_appendix")
    parser.add_argument("--setting", default="mnist1d_mlp", choices=sorted(ac.SETTINGS))
    parser.add_argument(
        "--epochs", type=positive_int, default=None, help="override the setting's epochs"
    )
    parser.add_argument(
        "--eta0", type=positive_float, default=0.1, help="SGD rate of the fraction study"
    )
    parser.add_argument("--seed", type=nonnegative_int, default=0)
    parser.add_argument("--quick", action="store_true", help="fewer cases, 1-2 epochs")
    distributed.add_arguments(parser)
    args = parser.parse_args(argv)
    args.mesh_spec = distributed.from_args(args)
    setting = ac.SETTINGS[args.setting]
    reason = ac.unavailable_reason(setting)
    if reason:
        print(f"skipping {args.setting}: {reason}")
        return {"skipped": reason}
    if setting.task == "language_model" and args.quick:
        setting = dataclasses.replace(setting, max_train_tokens=3_000)
    args.metric = ac.metric_name(setting)
    commands = COMMANDS if args.command == "all" else (args.command,)
    t0 = time.perf_counter()
    out = {}
    for command in commands:
        workdir = os.path.join(args.workdir, command)
        os.makedirs(workdir, exist_ok=True)
        out[command] = globals()[command](args, setting, workdir)
        print(f"\n## {command}\n")
        print(_table(out[command]["rows"]))
        if out[command]["figure"]:
            print(f"figure:  {os.path.abspath(out[command]['figure'])}")
    print(f"\nwall time {time.perf_counter() - t0:.1f} s")
    return out


if __name__ == "__main__":
    main()
