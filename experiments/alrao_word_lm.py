"""Alrao on an output-heavy model: a word-level LSTM language model on Shakespeare (10,000 words).

The Alrao paper (Blier, Wolinski, Ollivier, *Learning with Random Learning Rates*, 2019,
https://arxiv.org/abs/1810.01322) trains its LSTM at the *character* level because at the
word level "10,000 classes on PTB" make the ``N`` classifier copies dominate the model (Section 4,
Appendix D: threefold). Here is that word-level model: :class:`~randlr_jax.models.WordLSTM` (2 x 200
LSTM, embeddings of 200, dropout 0.2, nothing tied) on ``shakespeare_word`` (the 77 Shakespeare texts
split by work, vocabulary capped at the most frequent training tokens, the rest ``<unk>``), trained with
Alrao-SGD (per-unit rates log-uniform on ``[1e-3, 100]`` and ``N = 6`` classifier copies averaged by the
switch: the paper's LSTM setting), plain SGD at a few rates and Adam (``1e-3``). No gradient clipping,
no learning-rate decay: the paper's protocol (best epoch on validation loss, then tested). Reports
validation and test perplexity ``exp(mean per-token cross-entropy in nats)`` (``<eol>`` and ``<unk>``
targets included, as the PTB convention) and the parameter counts of the body, one head and the Alrao
head, for the run's vocabulary and for 10,000 words.

Commands (from the repository root)::

    .venv/bin/python -m experiments.alrao_word_lm --workdir runs/alrao_word_lm                    # GPU
    .venv/bin/python -m experiments.alrao_word_lm --workdir runs/alrao_word_lm_medium --setting medium
    .venv/bin/python -m experiments.alrao_word_lm --workdir runs/alrao_word_lm_quick --quick     # < 1 min

Configurations (``--config``; ``--setting`` is the same flag): ``default`` (``shakespeare_word``, 10,000
words, 20 streams x BPTT 35, 10 epochs of the 1.96M training tokens, whole validation/test splits,
patience 3, SGD at ``{0.1, 1, 10}``); ``medium`` (a CPU budget: ``shakespeare_word/small``, 2,000 words,
the first 120,000 training tokens, 3 epochs, the first 20,000 validation/test tokens:
:func:`randlr_jax.training.apply_token_budget`). ``--quick`` shrinks either to the same path on 1,200
training tokens (400 validation/test), 4 streams x 10 steps, SGD at ``{0.1, 1}``, one epoch: finite
perplexities, not a result (on one CPU device: validation perplexity 1597.0 for SGD 0.1, 129.5 for SGD 1,
130.3 for Adam and 174.0 for Alrao-SGD; the test suite runs it).

Flags: ``--mesh`` (:mod:`randlr_jax.training`; default every device) runs every method
data parallel (the batch must be a multiple of the ``data`` axis: ``--batch-size``), and with
``--mesh data=D,copies=C`` splits Alrao's 6 copies over ``C`` devices (model parallel: ``C`` must divide
6); ``--distributed`` / ``--coordinator-address`` run it on several hosts;
``--copy-chunk-size c`` computes the Alrao copies ``c`` at a time
(:class:`~randlr_jax.AlraoHead`'s ``copy_chunk_size``: less memory, same results up to rounding);
``--time-steps K`` also times ``K`` compiled steps of each method (``--time-only``: only that and the
parameter counts, into ``timing.json``). Writes under ``--workdir``: ``seed<s>/<method>/`` (one
resumable :func:`fit` run each, with ``train_trace.jsonl``: a
:class:`randlr_jax.training.JsonLinesLog` of the minibatch loss), ``results.json``, ``table.md`` and
``learning_curves.png``. Interrupt it and run it again: it resumes.

Expected result of the second (``medium``, seed 0: V = 2,000, 3 epochs of 120,000 tokens; 2105 s
(35.1 min) on 2 heavily loaded CPU cores; every method best at epoch 3), validation / test
perplexity: SGD 0.1 129.4 / 133.0, SGD 1 (the best SGD) 114.2 / 116.6, SGD 10 diverged (about 2e10),
Adam 1e-3 80.1 / 73.8, Alrao-SGD on ``[1e-3, 100]`` with ``N = 6`` 90.1 / 95.1 (posterior 0.997 on
the copy at 0.1): Alrao-SGD beats every SGD rate without a rate search, Adam beats Alrao. Parameters
for 10,000 words: body 2,641,600, one head 2,010,000, Alrao head 12,060,000 (6 copies); model
4,651,600 -> Alrao model 14,701,600 (x 3.16, the paper's "threefold").

Measured once, outside the committed run (``--config default --time-only --time-steps 3``, one CPU
device; V = 10,000, 20 x 35 tokens)::

    seconds per step: SGD 0.33-0.49, Adam 0.29, Alrao-SGD 1.88

The full ``default`` run (10 epochs of 1.96M tokens, about 28,000 Alrao steps) was not run on this
CPU: at 1.9 s per Alrao step it needs a GPU.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import time
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from experiments import _common
from experiments._common import fmt, mean_std
from randlr_jax import alrao, models
from randlr_jax import data as rdata
from randlr_jax.alrao import _optimizers as _alrao
from randlr_jax.alrao._copies import (
    AlraoHead,
    check_copy_chunk_size,
    copy_learning_rates,
    suggest_lr,
)
from randlr_jax.alrao._step import make_alrao_train_step
from randlr_jax.training import (
    JsonLinesLog,
    LoopConfig,
    apply_token_budget,
    check_or_write,
    distributed,
    fingerprint,
    fit,
    new_figure,
    save_figure,
)
from randlr_jax.training._state import create_train_state
from randlr_jax.training._steps import make_train_step

ALL_DEVICES = distributed.MeshSpec()  # --mesh auto: every device, data parallel

PAPER_VOCAB_SIZE = 10_000


@dataclasses.dataclass(frozen=True)
class Config:
    """Data, budget and methods of one run of the study.

    Attributes:
      dataset: ``"shakespeare_word"`` (10,000 words) or ``"shakespeare_word/small"`` (2,000).
      epochs, patience: loop budget (early stopping on validation loss; ``None``: never).
      batch_size: parallel token streams ``B`` (truncated BPTT batches of ``B x seq_len`` tokens).
      seq_len: BPTT length.
      train_tokens: read only the first this many training tokens (``None``: all).
      eval_tokens: read only the first this many validation and test tokens (``None``: all).
      sgd_rates: plain SGD's learning rates.
      adam_lr: Adam's learning rate (its other hyperparameters are Optax's defaults).
      lr_min, lr_max, num_copies: Alrao's interval and classifier copies.
      eval_streams: parallel streams when evaluating.
      log_every: record the training loss every this many steps (``train_trace.jsonl``).
      model_kwargs: :class:`~randlr_jax.models.WordLSTM` attributes.
      seeds: one run of every method per seed (``--seeds``).
    """

    dataset: str = "shakespeare_word"
    epochs: int = 10
    patience: int | None = 3
    batch_size: int = 20
    seq_len: int = 35
    train_tokens: int | None = None
    eval_tokens: int | None = None
    sgd_rates: tuple[float, ...] = (0.1, 1.0, 10.0)
    adam_lr: float = 1e-3
    lr_min: float = 1e-3
    lr_max: float = 100.0
    num_copies: int = 6
    eval_streams: int = 10
    log_every: int = 20
    model_kwargs: dict = dataclasses.field(default_factory=dict)
    seeds: tuple[int, ...] = (0,)


# The former name: code rendering tables from results.json builds it from its keys.
Setting = Config

DEFAULT = Config()
CONFIGS: dict[str, Config] = {
    "default": DEFAULT,
    "medium": dataclasses.replace(
        DEFAULT,
        dataset="shakespeare_word/small",
        epochs=3,
        patience=None,
        train_tokens=120_000,
        eval_tokens=20_000,
        log_every=10,
    ),
}


def quick(config: Config) -> Config:
    """The same path at smoke-test size: 1,200 training tokens, 4 x 10 batches, one epoch."""
    return dataclasses.replace(
        config,
        dataset="shakespeare_word/small",
        epochs=1,
        patience=None,
        batch_size=4,
        seq_len=10,
        train_tokens=1_200,
        eval_tokens=400,
        sgd_rates=(0.1, 1.0),
        eval_streams=2,
        log_every=5,
    )


def load_splits(setting: Config, data_dir: str | None = None) -> dict[str, np.ndarray]:
    """The three token streams of ``setting.dataset``, cut to the setting's token budgets."""
    splits = {
        split: rdata.load_tokens(setting.dataset, split, data_dir=data_dir)
        for split in ("train", "validation", "test")
    }
    return apply_token_budget(
        splits, train_tokens=setting.train_tokens, eval_tokens=setting.eval_tokens
    )


def alrao_head(setting: Config, vocab_size: int, copy_chunk_size: int | None) -> AlraoHead:
    """The Alrao head: ``N`` copies, computed ``copy_chunk_size`` at a time (``None``: all at once)."""
    check_copy_chunk_size(copy_chunk_size, setting.num_copies)  # AlraoHead checks only in setup
    return AlraoHead(
        num_outputs=vocab_size, num_copies=setting.num_copies, copy_chunk_size=copy_chunk_size
    )


def method_names(setting: Config) -> list[str]:
    """``sgd_<lr>`` for every SGD rate, ``adam``, ``alrao_sgd``: the run directories' names."""
    return [f"sgd_{lr:g}" for lr in setting.sgd_rates] + ["adam", "alrao_sgd"]


def build(
    setting: Config, method: str, vocab_size: int, seed: int, copy_chunk_size: int | None = None
) -> tuple[Any, optax.GradientTransformation, Any]:
    """``(model, tx, train_step or None)`` of ``method`` (a name of :func:`method_names`)."""
    if method == "alrao_sgd":
        head = alrao_head(setting, vocab_size, copy_chunk_size)
        model = models.make_model(
            "word_lstm", vocab_size=vocab_size, head=head, **setting.model_kwargs
        )
        # The key derivation of ``randlr_jax.runner._runner.build_alrao``.
        key = jax.random.fold_in(jax.random.key(seed), 1)
        tx = _alrao.alrao_sgd(key, setting.lr_min, setting.lr_max, setting.num_copies)
        return model, tx, make_alrao_train_step(model, tx, task="language_model")
    model = models.make_model("word_lstm", vocab_size=vocab_size, **setting.model_kwargs)
    if method == "adam":
        return model, optax.adam(setting.adam_lr), None
    if method.startswith("sgd_"):
        return model, optax.sgd(float(method[len("sgd_") :])), None
    raise ValueError(f"method must be one of {method_names(setting)}, got {method!r}.")


def method_info(setting: Config, method: str) -> dict[str, Any]:
    """What ``method`` trains with, as recorded in its run directory's ``run.json``."""
    if method == "alrao_sgd":
        return {
            "optimizer": "alrao_sgd",
            "lr_min": setting.lr_min,
            "lr_max": setting.lr_max,
            "num_copies": setting.num_copies,
        }
    if method == "adam":
        return {"optimizer": "adam", "learning_rate": setting.adam_lr}
    return {"optimizer": "sgd", "learning_rate": float(method[len("sgd_") :])}


def parameter_counts(
    setting: Config, vocab_size: int, copy_chunk_size: int | None = None
) -> dict[str, Any]:
    """Body, one head, the Alrao head (``N`` copies) and both model totals, without allocating them."""
    tokens = jnp.zeros((1, 1), jnp.int32)
    counts = {}
    for name, method in (("plain", "adam"), ("alrao", "alrao_sgd")):
        model, _, _ = build(setting, method, vocab_size, 0, copy_chunk_size)
        shapes = jax.eval_shape(
            lambda m=model: m.init(jax.random.key(0), tokens, m.initial_carry(1))
        )
        counts[name] = models.param_count_by_part(shapes["params"])
    plain, alrao = counts["plain"], counts["alrao"]
    return {
        "vocab_size": vocab_size,
        "num_copies": setting.num_copies,
        "body": plain["body"],
        "head": plain["head"],
        "alrao_head": alrao["head"],
        "model": plain["body"] + plain["head"],
        "alrao_model": alrao["body"] + alrao["head"],
        "ratio": (alrao["body"] + alrao["head"]) / (plain["body"] + plain["head"]),
    }


def perplexity(loss: float | None) -> float:
    """``exp(loss)``; NaN for a missing or non-finite loss, ``inf`` on overflow."""
    if loss is None or not math.isfinite(float(loss)):
        return math.nan
    return math.exp(loss) if loss < 700 else math.inf


def run_method(
    setting: Config,
    method: str,
    splits: dict[str, np.ndarray],
    vocab_size: int,
    seed: int,
    workdir: str,
    *,
    mesh: distributed.MeshSpec = ALL_DEVICES,
    copy_chunk_size: int | None = None,
    progress: bool = True,
) -> dict:
    """Train ``method`` once (resuming from ``workdir``); its summary, history and loss trace."""
    model, tx, step = build(setting, method, vocab_size, seed, copy_chunk_size)
    loop = LoopConfig(
        epochs=setting.epochs,
        batch_size=setting.batch_size,
        patience=setting.patience,
        seed=seed,
        seq_len=setting.seq_len,
        eval_streams=setting.eval_streams,
        num_devices=mesh.num_devices,
        # Model parallelism over the copies applies to the Alrao run only (the others have one head).
        copy_shards=mesh.copies if method == "alrao_sgd" else 1,
        log_every=setting.log_every,
        progress=progress,
        description=f"s{seed} {method}",
    )
    os.makedirs(workdir, exist_ok=True)
    # A workdir holding a run of other settings is refused (not resumed under the new ones).
    record = fingerprint(
        loop,
        task="language_model",
        model=model,
        splits=splits,
        optimizer=tx,
        train_step=step,
        run_info={"method": method, **method_info(setting, method)},
    )
    check_or_write(workdir, record, section="experiment")
    trace = JsonLinesLog(os.path.join(workdir, "train_trace.jsonl"), keys=["loss"])
    result = fit(
        model,
        tx,
        splits,
        loop,
        workdir,
        task="language_model",
        train_step=step,
        callbacks=[trace],
        place_state=alrao.shard_state if method == "alrao_sgd" else None,
    )
    summary = result.summary
    out = {
        "best_epoch": summary["best_epoch"],
        "best_validation_loss": summary.get("best_validation_loss"),
        "validation_perplexity": perplexity(summary.get("best_validation_loss")),
        "test_loss": summary.get("test_loss"),
        "test_perplexity": perplexity(summary.get("test_loss")),
        "test_accuracy": summary.get("test_accuracy"),
        "steps_per_second": summary.get("steps_per_second"),
        "wall_time_s": summary.get("wall_time_s"),
        "num_devices": summary.get("num_devices"),
        "copy_shards": summary.get("copy_shards"),
        "history": result.history,
        "trace": trace.read(),
    }
    if method == "alrao_sgd":
        last = result.history[-1] if result.history else {}  # none when dead in its first epoch
        posterior = np.asarray(last.get("last_posterior", []), np.float64)
        rates = copy_learning_rates(setting.lr_min, setting.lr_max, setting.num_copies)
        out["copy_learning_rates"] = rates.tolist()
        out["final_posterior"] = posterior.tolist()
        if posterior.size == rates.size and posterior.sum() > 0:
            out["suggested_lr"] = float(suggest_lr(rates, posterior))
    return out


def time_steps(
    setting: Config,
    vocab_size: int,
    num_steps: int,
    *,
    copy_chunk_size: int | None = None,
) -> dict[str, float]:
    """Seconds per compiled training step of each method (one device, random tokens, after compiling)."""
    rng = np.random.default_rng(0)
    shape = (setting.batch_size, setting.seq_len)
    batch = {
        "x": jnp.asarray(rng.integers(0, vocab_size, shape), jnp.int32),
        "y": jnp.asarray(rng.integers(0, vocab_size, shape), jnp.int32),
    }
    out = {}
    for method in method_names(setting):
        model, tx, step = build(setting, method, vocab_size, 0, copy_chunk_size)
        step = step or make_train_step(model, tx, task="language_model")
        carry = model.initial_carry(setting.batch_size)
        state = create_train_state(model, tx, jax.random.key(0), batch["x"], carry=carry)
        step_fn = jax.jit(step, donate_argnums=0)
        state, metrics = step_fn(state, batch)  # compile
        jax.block_until_ready(metrics)
        t0 = time.perf_counter()
        for _ in range(num_steps):
            state, metrics = step_fn(state, batch)
        jax.block_until_ready(metrics)
        out[method] = (time.perf_counter() - t0) / num_steps
    return out


def label(setting: Config, method: str) -> str:
    if method == "adam":
        return f"Adam {setting.adam_lr:g}"
    if method == "alrao_sgd":
        return f"Alrao-SGD [{setting.lr_min:g}, {setting.lr_max:g}], N={setting.num_copies}"
    return f"SGD {method[len('sgd_') :]}"


def aggregate(runs: Sequence[dict]) -> dict:
    """Mean ± std over seeds of the perplexities."""
    return {
        "validation_perplexity": mean_std([r["validation_perplexity"] for r in runs]),
        "test_perplexity": mean_std([r["test_perplexity"] for r in runs]),
        "best_epoch": [r["best_epoch"] for r in runs],
    }


def best_sgd(setting: Config, methods: dict) -> str | None:
    """The SGD rate with the lowest mean validation perplexity (finite only), or ``None``."""
    scores = {
        m: methods[m]["validation_perplexity"][0]
        for m in method_names(setting)
        if m.startswith("sgd_")
    }
    finite = {m: s for m, s in scores.items() if math.isfinite(s)}
    return min(finite, key=finite.get) if finite else None


def table(setting: Config, result: dict) -> str:
    """Perplexities (mean ± std over seeds) and parameter counts, as markdown."""
    lines = [
        f"## Word-level LSTM on {setting.dataset} (V = {result['data']['vocab_size']:,}), "
        f"seeds {result['seeds']}",
        "",
        "| method | validation perplexity | test perplexity | best epoch (per seed) |",
        "|---|---:|---:|---:|",
    ]
    for method in method_names(setting):
        row = result["methods"][method]
        star = " (best SGD)" if method == result["sgd_best"] else ""
        epochs = ", ".join(map(str, row["best_epoch"]))
        lines.append(
            f"| {label(setting, method)}{star} | {fmt(*row['validation_perplexity'], 1)} | "
            f"{fmt(*row['test_perplexity'], 1)} | {epochs} |"
        )
    lines += [
        "",
        "## Parameters (Alrao: the classifier layer times the number of copies)",
        "",
        "| vocabulary | body | one head | Alrao head | model | Alrao model | ratio |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for counts in result["parameters"].values():
        lines.append(
            f"| {counts['vocab_size']:,} | {counts['body']:,} | {counts['head']:,} | "
            f"{counts['alrao_head']:,} ({counts['num_copies']} copies) | {counts['model']:,} | "
            f"{counts['alrao_model']:,} | x{counts['ratio']:.2f} |"
        )
    if result.get("step_time_s"):
        times = result["step_time_s"]
        lines += [
            "",
            f"## Seconds per training step ({setting.batch_size} x {setting.seq_len} tokens, "
            f"{result['device_kind']})",
            "",
            "| " + " | ".join(label(setting, m) for m in times) + " |",
            "|" + "---:|" * len(times),
            "| " + " | ".join(f"{t:.3f}" for t in times.values()) + " |",
        ]
    return "\n".join(lines)


def learning_curves_figure(setting: Config, runs: dict, path: str, vocab_size: int) -> str:
    """Training perplexity against the step (left), validation perplexity per epoch (right).

    The axes stop at ``2 V`` (twice the uniform model's perplexity): a diverged rate leaves the plot
    instead of squashing the others.
    """
    fig = new_figure(figsize=(11, 4.2))
    axes = fig.subplots(1, 2)
    for method, run in runs.items():
        style = {"lw": 2.5, "color": "k"} if method == "alrao_sgd" else {}
        if method == "adam":
            style = {"lw": 2.0, "ls": "--", "color": "tab:red"}
        trace = run["trace"]
        train = [perplexity(r["loss"]) for r in trace]
        axes[0].plot([r["step"] for r in trace], train, label=label(setting, method), **style)
        history = run["history"]
        validation = [perplexity(r.get("validation_loss")) for r in history]
        axes[1].plot(
            [r["step"] for r in history],
            validation,
            marker="o",
            label=label(setting, method),
            **style,
        )
    for ax, what in zip(axes, ("training (minibatch)", "validation"), strict=True):
        ax.set_xlabel("step")
        ax.set_ylabel(f"{what} perplexity")
        ax.set_yscale("log")
        shown = [y for line in ax.get_lines() for y in line.get_ydata() if 0 < y < 2 * vocab_size]
        ax.set_ylim(min(shown, default=1.0) / 1.5, 2 * vocab_size)
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=8, loc="upper right")
    fig.suptitle(f"Word-level LSTM on {setting.dataset}: SGD, Adam, Alrao-SGD (seed 0)")
    return save_figure(fig, path)


def main(argv: Sequence[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    _common.add_config_arguments(parser, CONFIGS, workdir="runs/alrao_word_lm")
    parser.add_argument(
        "--setting", dest="config", choices=sorted(CONFIGS), default=argparse.SUPPRESS,
        help="the same as --config",
    )  # fmt: skip
    parser.add_argument("--seeds", nargs="+", type=_common.nonnegative_int)
    parser.add_argument("--epochs", type=_common.positive_int, help="override the epochs")
    parser.add_argument("--batch-size", type=_common.positive_int, help="token streams")
    parser.add_argument("--sgd-rates", nargs="+", type=_common.positive_float)
    parser.add_argument(
        "--copy-chunk-size",
        type=_common.positive_int,
        default=None,
        help="compute the Alrao copies this many at a time (less memory)",
    )
    parser.add_argument(
        "--time-steps",
        type=_common.nonnegative_int,
        default=0,
        help="also time this many compiled steps of each method",
    )
    parser.add_argument(
        "--time-only",
        action="store_true",
        help="only count parameters and time the steps (no training)",
    )
    parser.add_argument("--data-dir", default=None, help="TFDS data dir")
    parser.add_argument("--no-progress", action="store_true")
    distributed.add_arguments(parser)
    args = parser.parse_args(argv)  # fmt: skip
    _common.require_distinct(parser, "--seeds", args.seeds)
    _common.require_distinct(parser, "--sgd-rates", args.sgd_rates)
    mesh = distributed.from_args(args)
    setting = _common.resolve_config(args, CONFIGS, quick)
    setting = dataclasses.replace(
        setting, seeds=tuple(setting.seeds), sgd_rates=tuple(setting.sgd_rates)
    )  # nargs="+" flags give lists
    if args.copy_chunk_size is not None:
        alrao_head(setting, 2, args.copy_chunk_size)  # fail now, not after the baselines
    os.makedirs(args.workdir, exist_ok=True)
    t_start = time.perf_counter()

    splits = load_splits(setting, args.data_dir)
    builder = rdata.get_builder(setting.dataset, data_dir=args.data_dir)
    vocab_size = rdata.load_vocabulary(setting.dataset, data_dir=args.data_dir).size
    parameters = {"run": parameter_counts(setting, vocab_size, args.copy_chunk_size)}
    if vocab_size != PAPER_VOCAB_SIZE:
        parameters["paper"] = parameter_counts(setting, PAPER_VOCAB_SIZE, args.copy_chunk_size)
    for counts in parameters.values():
        print(
            f"V={counts['vocab_size']:,}: body {counts['body']:,}, one head {counts['head']:,}, "
            f"Alrao head {counts['alrao_head']:,}; model {counts['model']:,} -> Alrao model "
            f"{counts['alrao_model']:,} (x{counts['ratio']:.2f})"
        )

    if args.time_only:
        return _time_only(args, setting, vocab_size, parameters, t_start)
    per_seed: dict[str, list[dict]] = {m: [] for m in method_names(setting)}
    for seed in setting.seeds:
        for method in method_names(setting):
            per_seed[method].append(
                run_method(
                    setting,
                    method,
                    splits,
                    vocab_size,
                    seed,
                    os.path.join(args.workdir, f"seed{seed}", method),
                    mesh=mesh,
                    copy_chunk_size=args.copy_chunk_size,
                    progress=not args.no_progress,
                )
            )
    methods = {m: aggregate(runs) for m, runs in per_seed.items()}
    step_time = None
    if args.time_steps > 0:
        step_time = time_steps(
            setting, vocab_size, args.time_steps, copy_chunk_size=args.copy_chunk_size
        )
    figure = learning_curves_figure(
        setting,
        {m: runs[0] for m, runs in per_seed.items()},
        os.path.join(args.workdir, "learning_curves.png"),
        vocab_size,
    )
    metadata = builder.info.metadata
    out = {
        "setting": dataclasses.asdict(setting),
        "seeds": list(setting.seeds),
        "mesh": args.mesh,
        "copy_chunk_size": args.copy_chunk_size,
        "data": {
            "vocab_size": vocab_size,
            "num_tokens_used": {s: int(t.size) for s, t in splits.items()},
            "num_tokens": dict(metadata["num_tokens"]),
            "unknown_rate": dict(metadata["unknown_rate"]),
        },
        "parameters": parameters,
        "methods": methods,
        "sgd_best": best_sgd(setting, methods),
        "runs": {m: [{k: v for k, v in r.items() if k != "history"} for r in runs]
                 for m, runs in per_seed.items()},
        "step_time_s": step_time,
        "device_kind": jax.devices()[0].device_kind,
        "figure": figure,
    }  # fmt: skip
    return _common.finish(
        args.workdir, out, tables={"table": table(setting, out)}, figures=[figure], started=t_start
    )


def _time_only(args, setting: Config, vocab_size: int, parameters: dict, t_start: float) -> dict:
    step_time = time_steps(
        setting, vocab_size, max(args.time_steps, 1), copy_chunk_size=args.copy_chunk_size
    )
    out = {
        "setting": dataclasses.asdict(setting),
        "parameters": parameters,
        "step_time_s": step_time,
        "device_kind": jax.devices()[0].device_kind,
    }
    notes = [f"{label(setting, m)}: {seconds:.3f} s/step" for m, seconds in step_time.items()]
    return _common.finish(
        args.workdir, out, notes=notes, started=t_start, results_name="timing.json"
    )


if __name__ == "__main__":
    main()
