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
    .venv/bin/python -m experiments.alrao_appendix all --workdir runs/alrao_appendix_quick --quick
    .venv/bin/python -m experiments.alrao_appendix fraction --setting mnist1d_cnn

Expected result of the first (MNIST-1D MLP, seed 0; 554 s (9.2 min) on 2 heavily loaded CPU cores),
test loss at the best validation epoch: E: per feature 1.231 / per weight 1.094 on ``[1e-5, 10]``,
both diverge on ``[1e-3, 100]``; F: ``p = 0.5`` (1.113) about as good as ``p = 1`` (1.110),
``p = 0.1`` 1.311; C: Adam 1e-3 1.100, Alrao-Adam 1.203; G: width 3 improves both (SGD best 1.081,
Alrao 1.098); D: VGG19 20,040,522 -> 20,086,692 parameters with Alrao (the paper's 20.041 -> 20.087 M).

Each subcommand writes ``<workdir>/<name>/results.json``, ``table.md`` and a PNG (``params``: no PNG), each
training run resumable in its own directory; ``<workdir>/results.json`` holds them all. Default setting:
the MNIST-1D MLP, one seed, early stopping on validation loss, the best epoch tested.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from experiments import _common
from experiments._common import finite_or_nan
from randlr_jax import AlraoHead, runner
from randlr_jax import models as rmodels
from randlr_jax.alrao import sample_feature_lrs, scale_by_lr_tree
from randlr_jax.training import distributed, member_history, new_figure, save_figure

COMMANDS = ("per_weight", "fraction", "adam", "wider", "params")

# Appendix D's models: label -> (model, kwargs, classes, input shape (None: characters), copies).
PARAM_CASES: dict[str, tuple[str, dict, int, tuple | None, int]] = {
    "mlp (MNIST-1D)": ("mlp", {"widths": (100, 100)}, 10, (40,), 10),
    "cnn1d (MNIST-1D)": ("cnn1d", {}, 10, (40,), 10),
    "char_lstm (shakespeare_char, 88 symbols)": ("char_lstm", {}, 88, None, 6),
    "char_lstm (PTB chars, 50 symbols)": ("char_lstm", {}, 50, None, 6),
    "vgg19 (CIFAR-10)": ("vgg19", {}, 10, (32, 32, 3), 10),
    "mobilenetv2 (CIFAR-10)": ("mobilenetv2", {}, 10, (32, 32, 3), 10),
    "googlenet (CIFAR-10)": ("googlenet", {}, 10, (32, 32, 3), 10),
}
# The paper's Table 2 (millions of parameters, without / with Alrao).
PAPER_TABLE2 = {
    "googlenet": (6.166, 6.258),
    "vgg19": (20.041, 20.087),
    "mobilenetv2": (2.297, 2.412),
    "char_lstm": (0.172, 0.197),
}


@dataclasses.dataclass(frozen=True)
class Config:
    """Every knob of the appendices.

    Attributes:
      commands: the studies run (of :data:`COMMANDS`).
      setting: the model of ``_common.ALRAO_SETTINGS`` (``params`` counts its own models).
      seed: one seed.
      epochs: ``None``: the setting's (early stopping with its patience).
      lm_train_chars: a language model's training characters (``None``: the setting's).
      intervals: Appendix E's ``(lr_min, lr_max)``.
      fractions: Appendix F's ``p``; ``eta0``: its SGD rate.
      adam_rates: Appendix C's Adam grid; ``alrao_adam_interval``: its Alrao-Adam interval.
      widths: Appendix G's width multipliers.
      param_cases: Appendix D's models (labels of :data:`PARAM_CASES`).
    """

    commands: tuple[str, ...] = COMMANDS
    setting: str = "mnist1d_mlp"
    seed: int = 0
    epochs: int | None = None
    lm_train_chars: int | None = None
    intervals: tuple[tuple[float, float], ...] = (
        (1e-5, 10.0),
        (1e-3, 1.0),
        (1e-2, 10.0),
        (1e-3, 100.0),
    )
    fractions: tuple[float, ...] = (0.1, 0.25, 0.5, 0.75, 1.0)
    eta0: float = 0.1
    adam_rates: tuple[float, ...] = (1e-4, 1e-3, 1e-2)
    alrao_adam_interval: tuple[float, float] = (1e-6, 1.0)
    widths: tuple[float, ...] = (1.0, 3.0)
    param_cases: tuple[str, ...] = tuple(PARAM_CASES)

    def __post_init__(self):
        if self.setting not in _common.ALRAO_SETTINGS:
            raise ValueError(
                f"setting must be one of {sorted(_common.ALRAO_SETTINGS)}, got {self.setting!r}."
            )
        for name, allowed in (("commands", COMMANDS), ("param_cases", tuple(PARAM_CASES))):
            unknown = [v for v in getattr(self, name) if v not in allowed]
            if unknown:
                raise ValueError(f"{name} must be among {allowed}, got {unknown}.")


DEFAULT = Config()
CONFIGS: dict[str, Config] = {
    "default": DEFAULT,
    **{name: dataclasses.replace(DEFAULT, setting=name) for name in _common.ALRAO_SETTINGS},
}


def quick(config: Config) -> Config:
    """One interval, two fractions, the first three parameter counts, the setting's smoke-test epochs
    (1-2), a language model on 3,000 characters."""
    return dataclasses.replace(
        config,
        epochs=_common.ALRAO_SETTINGS[config.setting].quick_epochs,
        lm_train_chars=_common.QUICK_LM_TOKENS,
        intervals=((1e-3, 1.0),),
        fractions=(0.25, 1.0),
        param_cases=tuple(PARAM_CASES)[:3],
    )


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=COMMANDS + ("all",))
    _common.add_config_arguments(parser, CONFIGS, workdir="runs/alrao_appendix")
    parser.add_argument("--setting", choices=sorted(_common.ALRAO_SETTINGS))
    parser.add_argument("--epochs", type=_common.positive_int, help="override the setting's")
    parser.add_argument(
        "--eta0", type=_common.positive_float, help="SGD rate of the fraction study"
    )
    parser.add_argument("--seed", type=_common.nonnegative_int)
    distributed.add_arguments(parser)
    args = parser.parse_args(argv)
    config = _common.resolve_config(args, CONFIGS, quick)
    if args.command != "all":
        config = dataclasses.replace(config, commands=(args.command,))
    mesh = distributed.from_args(args)
    setting, reason = _common.study_setting(config.setting, config.lm_train_chars)
    if reason:
        print(f"skipping {config.setting}: {reason}")
        return {"skipped": reason}
    started = time.perf_counter()
    out = {}
    for command in config.commands:
        workdir = os.path.join(args.workdir, command)
        rows, fig = STUDIES[command](config, setting, workdir, mesh)
        figure = None if fig is None else save_figure(fig, os.path.join(workdir, f"{command}.png"))
        print(f"\n## {command}")
        out[command] = _common.finish(
            workdir,
            {"rows": rows, "figure": figure},
            tables={"table": table(rows)},
            figures=[figure] if figure else [],
        )
    return _common.finish(
        args.workdir, {**out, "config": dataclasses.asdict(config)}, started=started
    )


def _base(config: Config, setting: _common.AlraoSetting, description: str, mesh) -> Any:
    epochs = setting.epochs if config.epochs is None else config.epochs
    return _common.alrao_train_config(
        setting, config.seed, epochs=epochs, description=description, mesh=mesh
    )


def _result(summary: dict, metric: str) -> dict:
    return {
        "best_epoch": summary["best_epoch"],
        "best_validation_loss": summary.get("best_validation_loss"),
        "test_loss": summary.get(f"test_{metric}"),
        "test_accuracy": summary.get("test_accuracy"),
    }


def per_weight(config: Config, setting: _common.AlraoSetting, workdir: str, mesh=None):
    """Appendix E: ``per="feature"`` vs ``per="weight"`` over several intervals."""
    rows = []
    for lr_min, lr_max in config.intervals:
        for per in ("feature", "weight"):
            base = _base(config, setting, f"per {per} [{lr_min:g}, {lr_max:g}]", mesh)
            run = runner.train_and_evaluate(
                _common.with_alrao(base, setting, lr_min=lr_min, lr_max=lr_max, per=per),
                os.path.join(workdir, f"{per}_{lr_min:g}_{lr_max:g}"),
                max_train_tokens=setting.max_train_tokens,
            )
            rows.append(
                {
                    "per": per,
                    "lr_min": lr_min,
                    "lr_max": lr_max,
                    **_result(run.summary, setting.metric),
                }
            )
    fig = new_figure(figsize=(7, 4))
    ax = fig.subplots()
    x = np.arange(len(config.intervals))
    for offset, per in ((-0.2, "feature"), (0.2, "weight")):
        values = [r["test_loss"] for r in rows if r["per"] == per]
        ax.bar(x + offset, finite_or_nan(values), width=0.4, label=f"per {per}")
    ax.set_xticks(x, [f"[{a:g}, {b:g}]" for a, b in config.intervals])
    ax.set_xlabel("(lr_min, lr_max)")
    ax.set_ylabel("test loss at best validation epoch")
    ax.legend()
    ax.set_title("Appendix E: per-feature vs per-weight learning rates")
    return rows, fig


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


def fraction(config: Config, setting: _common.AlraoSetting, workdir: str, mesh=None):
    """Appendix F: SGD at ``eta0`` training a random fraction ``p`` of the features."""
    rows = []
    for p in config.fractions:
        base = _base(config, setting, f"fraction p={p:g}", mesh)
        shapes = _parameter_shapes(base, setting)
        key = jax.random.fold_in(jax.random.key(config.seed), 2)
        rates = fraction_learning_rates(key, shapes, config.eta0, p)
        trained = _trained_fraction(rates["body"], shapes["body"])  # (training donates the rates)
        run = runner.train_and_evaluate(
            base,
            os.path.join(workdir, f"p{p:g}"),
            tx=optax.chain(scale_by_lr_tree(rates), optax.scale(-1.0)),
            run_info={"optimizer": "sgd_feature_fraction", "learning_rate": config.eta0, "p": p},
            max_train_tokens=setting.max_train_tokens,
        )
        rows.append(
            {
                "p": p,
                "trained_weight_fraction": trained,
                **_result(run.summary, setting.metric),
            }
        )
    fig = new_figure(figsize=(6, 4))
    ax = fig.subplots()
    ax.plot(
        config.fractions, finite_or_nan([r["test_loss"] for r in rows]), marker="o", label="test"
    )
    validation = finite_or_nan([r["best_validation_loss"] for r in rows])
    ax.plot(config.fractions, validation, marker="s", label="validation")
    ax.set_xlabel("fraction p of features trained")
    ax.set_ylabel("loss at best validation epoch")
    ax.set_title(f"Appendix F: SGD lr={config.eta0:g} on a random fraction of features")
    ax.legend()
    ax.grid(alpha=0.3)
    return rows, fig


def _parameter_shapes(config: Any, setting: _common.AlraoSetting) -> Any:
    """The model's parameters as shapes (``jax.eval_shape``: nothing computed)."""
    splits, spec, task = runner.load_splits(config, max_train_tokens=setting.max_train_tokens)
    model = runner.build_model(config, spec)
    if task == "language_model":
        init_args = (np.zeros((1, 70), np.int32), model.initial_carry(1))
    else:
        init_args = (np.asarray(splits["train"]["x"][:1]),)
    return jax.eval_shape(lambda: model.init(jax.random.key(0), *init_args, train=False))["params"]


def _trained_fraction(rates: Any, shapes: Any) -> float:
    """Fraction of the body's weights whose rate is non-zero."""
    total = trained = 0
    for rate, shape in zip(jax.tree.leaves(rates), jax.tree.leaves(shapes), strict=True):
        full = np.broadcast_to(np.asarray(rate), shape.shape)
        total += full.size
        trained += int(np.count_nonzero(full))
    return trained / max(total, 1)


def adam(config: Config, setting: _common.AlraoSetting, workdir: str, mesh=None):
    """Appendix C: Alrao-Adam vs Adam at several rates (one vmapped population)."""
    lr_min, lr_max = config.alrao_adam_interval
    label = f"Alrao-Adam [{_rate(lr_min)}, {_rate(lr_max)}]"
    grid = runner.train_and_evaluate_population(
        _base(config, setting, "Adam grid", mesh),
        os.path.join(workdir, "adam_grid"),
        config.adam_rates,
        optimizer=optax.adam,
        max_train_tokens=setting.max_train_tokens,
    )
    alrao = runner.train_and_evaluate(
        _common.with_alrao(
            _base(config, setting, label, mesh),
            setting,
            optimizer="alrao_adam",
            lr_min=lr_min,
            lr_max=lr_max,
        ),
        os.path.join(workdir, "alrao_adam"),
        max_train_tokens=setting.max_train_tokens,
    )
    rows = [
        {"method": f"Adam {m['learning_rate']:g}", **_result(m, setting.metric)}
        for m in grid.members
    ]
    rows.append({"method": label, **_result(alrao.summary, setting.metric)})
    curves = {
        f"Adam {lr:g}": member_history(grid.history, k) for k, lr in enumerate(config.adam_rates)
    }
    curves[label] = alrao.history
    return rows, _common.curves_figure(
        curves, title="Appendix C: Alrao-Adam vs Adam", task=setting.task
    )


def _rate(value: float) -> str:
    """``1e-6``, ``0.1``, ``1``: a rate as the tables write it."""
    return f"{value:g}".replace("e-0", "e-")


def wider(config: Config, setting: _common.AlraoSetting, workdir: str, mesh=None):
    """Appendix G: width multipliers (1 and 3), for the SGD grid (best on validation) and Alrao-SGD."""
    rows = []
    for multiplier in config.widths:
        wide = dataclasses.replace(
            setting, model_kwargs={**setting.model_kwargs, "width_multiplier": multiplier}
        )
        grid = runner.train_and_evaluate_population(
            _base(config, wide, f"SGD grid x{multiplier:g}", mesh),
            os.path.join(workdir, f"sgd_x{multiplier:g}"),
            _common.SGD_GRID,
            max_train_tokens=setting.max_train_tokens,
        )
        best = grid.summary["best_member"]
        member = grid.members[best] if best is not None else {}
        rows.append(
            {
                "width": multiplier,
                "method": f"SGD best ({grid.summary['best_learning_rate']})",
                "best_epoch": member.get("best_epoch"),
                "best_validation_loss": member.get("best_validation_loss"),
                "test_loss": member.get(f"test_{setting.metric}"),
                "test_accuracy": member.get("test_accuracy"),
            }
        )
        alrao = runner.train_and_evaluate(
            _common.with_alrao(_base(config, wide, f"Alrao x{multiplier:g}", mesh), wide),
            os.path.join(workdir, f"alrao_x{multiplier:g}"),
            max_train_tokens=setting.max_train_tokens,
        )
        rows.append(
            {"width": multiplier, "method": "Alrao-SGD", **_result(alrao.summary, setting.metric)}
        )
    fig = new_figure(figsize=(6, 4))
    ax = fig.subplots()
    for method in ("SGD", "Alrao"):
        values = [r["test_loss"] for r in rows if r["method"].startswith(method)]
        ax.plot(list(config.widths), finite_or_nan(values), marker="o", label=method)
    ax.set_xlabel("width multiplier")
    ax.set_ylabel("test loss at best validation epoch")
    ax.set_title("Appendix G: a wider network")
    ax.legend()
    ax.grid(alpha=0.3)
    return rows, fig


def params(config: Config, setting: _common.AlraoSetting | None = None, workdir=None, mesh=None):
    """Appendix D: parameter counts without / with Alrao (10 copies; 6 for the LSTM), from shapes."""
    del setting, workdir, mesh  # the models are the paper's, not the setting's; nothing is trained
    rows = []
    for label in config.param_cases:
        name, kwargs, classes, input_shape, copies = PARAM_CASES[label]
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
    return rows, None


STUDIES = {
    "per_weight": per_weight,
    "fraction": fraction,
    "adam": adam,
    "wider": wider,
    "params": params,
}


def table(rows: list[dict]) -> str:
    """A study's rows as a markdown table (one column per key of the first row)."""
    columns = list(rows[0])
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for r in rows:
        lines.append("| " + " | ".join(_cell(r[c]) for c in columns) + " |")
    return "\n".join(lines)


_table = table  # the name other tools know


def _cell(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


if __name__ == "__main__":
    main()
