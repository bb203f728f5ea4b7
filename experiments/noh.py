"""NOH: meta-train an LSTM that sets Adam's per-parameter rates, freeze it, compare it with baselines.

Fu, Ng, Chen, Ilievski, Pal, Chua, *Neural Optimizers with Hypergradients for Tuning Parameter-Wise
Learning Rates*, 2017: a coordinatewise LSTM proposes every parameter's Adam learning rate each ``S``
steps, meta-trained by hypergradients through unrolled training; compared with Adam, Adam-HD (Baydin et
al., *Online Learning Rate Adaptation with Hypergradient Descent*, 2018) and the LSTM optimizer of
Andrychowicz et al., *Learning to learn by gradient descent by gradient descent*, 2016 ("DMopt").

Command (from the repository root)::

    .venv/bin/python -m experiments.noh --workdir runs/noh

What it does: meta-trains, on the MNIST-1D MLP (2 x 20 sigmoid, batch 120, the same initial parameters
every meta-iteration), (a) NOH with the meta learning rate used here (``1e-2``), (b) NOH with the paper's
meta learning rate ``1e-7`` and (c) DMopt, each for 5 meta-iterations of 2,000 steps unrolled 50 at a time
(``randlr_jax.noh.meta_train``); then freezes them and trains fresh MLPs (new initialisation) for 6,000
steps on MNIST-1D and on the digits data set (and MNIST / SVHN / CIFAR-10 when prepared in TFDS)
(``randlr_jax.noh.meta_evaluate``), against Adam at its best rate of the grid ``1e-1 ... 1e-10`` (chosen
by final validation loss) and Adam-HD (``alpha_0 = 1e-3``, ``beta = 1e-7``).

Expected (default; 1082 s (18.0 min) on 2 heavily loaded CPU cores): MNIST-1D final test accuracy
0.478 for NOH at meta-lr ``1e-2`` and 0.371 for DMopt, against 0.487 for Adam at its best rate
``1e-2``, 0.361 for Adam-HD and 0.345 for NOH at the paper's ``1e-7`` (which leaves the LSTM
practically unchanged: its meta-loss stays between 3,519 and 3,521 per meta-iteration); on digits
0.942 for NOH against 0.969 for Adam (and 0.972 for NOH at ``1e-7``).

Writes under ``--workdir``: ``<name>_lstm.msgpack`` (trained parameters, loadable with
``randlr_jax.noh.load_lstm_params``), ``meta_history.json``, ``eval_<dataset>.json`` (learning
curves), ``summary.json``, ``table.md``, ``learning_curves.png``, ``noh_rates.png`` (randomly picked
per-parameter rate schedules, the paper's Fig. 3). Phases already done are loaded, so an interrupted run
resumes; a directory holding phases of other settings is refused.

Quick (every size shrunk, MNIST-1D only; the test suite runs it)::

    .venv/bin/python -m experiments.noh --workdir /tmp/noh_quick --quick

gives, on one CPU device, MNIST-1D test accuracy 0.227 for Adam at 1e-2 and about 0.1 (chance) for the
others after 40 steps: a smoke test of every phase, not a result.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from experiments import _common
from randlr_jax import data, models, noh
from randlr_jax.training import check_or_write, distributed, make_mesh, new_figure, save_figure


@dataclasses.dataclass(frozen=True)
class Config:
    """Sizes of the study (defaults: the paper's, except the meta learning rate; see the README).

    Attributes:
      meta_iterations, meta_horizon, unroll_length: meta-training: optimizee runs of ``meta_horizon``
        steps, one meta-step per ``unroll_length`` steps.
      update_every: NOH's ``S`` (steps between rate proposals; the paper does not give it).
      batch_size: optimizee minibatch, in meta-training and evaluation.
      meta_learning_rate: Adam's rate of the meta-optimizer (``--meta-learning-rate``).
      paper_meta_learning_rate: the paper's, for the ``noh_paper_meta_lr`` run.
      eval_horizon, eval_every: evaluation runs of ``eval_horizon`` steps, evaluated every
        ``eval_every``.
      adam_grid: Adam's rates; the best by final validation loss is reported.
      adam_hd_learning_rate, adam_hd_hypergradient_lr: Adam-HD's ``alpha_0`` and ``beta``.
      datasets: evaluation data sets (those not prepared in TFDS are skipped).
      validation_sizes: examples carved from train for validation, per data set (else its own split).
      num_traced_rates: NOH rates traced per evaluation (``noh_rates.png``).
      noh_layers, dmopt_layers, hidden_size: the LSTMs (paper: 3 x 20; Andrychowicz et al.: 2 x 20).
      seed: initialisations and minibatch orders.
    """

    meta_iterations: int = 5
    meta_horizon: int = 2000
    unroll_length: int = 50
    update_every: int = 10
    batch_size: int = 120
    meta_learning_rate: float = 1e-2
    paper_meta_learning_rate: float = 1e-7
    eval_horizon: int = 6000
    eval_every: int = 100
    adam_grid: tuple = tuple(10.0**-k for k in range(1, 11))
    adam_hd_learning_rate: float = 1e-3
    adam_hd_hypergradient_lr: float = 1e-7
    datasets: tuple = ("mnist1d", "digits", "mnist", "svhn_cropped", "cifar10")
    validation_sizes: dict = dataclasses.field(
        default_factory=lambda: {"mnist1d": 500, "digits": 200}
    )
    num_traced_rates: int = 6
    noh_layers: int = 3
    dmopt_layers: int = 2
    hidden_size: int = 20
    seed: int = 0


CONFIGS = {"default": Config()}


def quick(config: Config) -> Config:
    """Every phase at smoke-test size: one meta-iteration of 20 steps, 40 evaluation steps, MNIST-1D."""
    return dataclasses.replace(
        config,
        meta_iterations=1,
        meta_horizon=20,
        unroll_length=10,
        update_every=5,
        eval_horizon=40,
        eval_every=20,
        adam_grid=(1e-2,),
        datasets=("mnist1d",),
        num_traced_rates=3,
        noh_layers=1,
        dmopt_layers=1,
        hidden_size=4,
    )


def _logits_fn(model):
    return lambda params, x: model.apply({"params": params}, x)


def _loss_fn(model):
    def loss_fn(params, batch):
        logits = model.apply({"params": params}, batch["x"])
        return optax.softmax_cross_entropy_with_integer_labels(logits, batch["y"]).mean()

    return loss_fn


def _flat(split):
    return {"x": split["x"].reshape(len(split["x"]), -1).astype(np.float32), "y": split["y"]}


def _read_json(path: str):
    with open(path) as f:
        return json.load(f)


def _learned(config: Config):
    """name -> (proposer module, make_optimizer, meta learning rate)."""
    rate = noh.LSTMRateProposer(num_layers=config.noh_layers, hidden_size=config.hidden_size)
    update = noh.LSTMUpdateProposer(num_layers=config.dmopt_layers, hidden_size=config.hidden_size)

    def make_noh(p):
        return noh.noh_adam(p, proposer=rate, update_every=config.update_every)

    def make_dmopt(p):
        return noh.lstm_optimizer(p, proposer=update)

    return {
        "noh": (rate, make_noh, config.meta_learning_rate),
        "noh_paper_meta_lr": (rate, make_noh, config.paper_meta_learning_rate),
        "dmopt": (update, make_dmopt, config.meta_learning_rate),
    }


def meta_train_all(config: Config, workdir: str, log=print, mesh=None) -> dict:
    """Meta-train (or load) every learned optimizer; returns name -> trained parameters.

    ``mesh``: data parallel over this mesh (each minibatch split over its ``"data"`` axis).
    """
    validation_size = config.validation_sizes["mnist1d"]
    splits = data.train_val_test("mnist1d", validation_size=validation_size, seed=0)
    train = _flat(splits["train"])
    model = models.make_model("noh_mlp", num_classes=10)
    init = model.init(jax.random.key(config.seed), jnp.zeros((1, 40)))["params"]
    history_path = os.path.join(workdir, "meta_history.json")
    histories = _read_json(history_path) if os.path.exists(history_path) else {}
    trained = {}
    for name, (proposer, make, meta_lr) in _learned(config).items():
        path = os.path.join(workdir, f"{name}_lstm.msgpack")
        if os.path.exists(path):
            trained[name], _ = noh.load_lstm_params(path)
            log(f"[meta] {name}: loaded {path}")
            continue
        t0 = time.perf_counter()
        result = noh.meta_train(
            noh.init_proposer_params(proposer, jax.random.key(config.seed + 1)),
            make,
            _loss_fn(model),
            init,
            train,
            key=jax.random.key(config.seed + 2),
            batch_size=config.batch_size,
            horizon=config.meta_horizon,
            unroll_length=config.unroll_length,
            num_meta_iterations=config.meta_iterations,
            meta_learning_rate=meta_lr,
            mesh=mesh,
        )
        seconds = time.perf_counter() - t0
        per_iteration = [
            sum(r["meta_loss"] for r in result.history if r["meta_iteration"] == i)
            for i in range(config.meta_iterations)
        ]
        log(
            f"[meta] {name}: meta-lr {meta_lr:g}, total meta-loss per meta-iteration "
            f"{[round(v, 1) for v in per_iteration]}, skipped {result.skipped}, {seconds:.0f} s"
        )
        histories[name] = {
            "meta_learning_rate": meta_lr,
            "meta_loss_per_iteration": per_iteration,
            "skipped": result.skipped,
            "seconds": seconds,
            "history": result.history,
        }
        module = {f.name: getattr(proposer, f.name) for f in dataclasses.fields(proposer)}
        module = {k: v for k, v in module.items() if k not in ("parent", "name")}
        noh.save_lstm_params(
            path,
            result.lstm_params,
            {
                "kind": "dmopt" if name == "dmopt" else "noh",
                "module": module,
                "update_every": config.update_every,
                "meta_training": {
                    "optimizee": f"noh_mlp on mnist1d, batch {config.batch_size}",
                    "meta_iterations": config.meta_iterations,
                    "horizon": config.meta_horizon,
                    "unroll_length": config.unroll_length,
                    "meta_learning_rate": meta_lr,
                },
            },
        )
        trained[name] = result.lstm_params
        _common.write_json(history_path, histories)
    return trained


def evaluate_dataset(name: str, config: Config, trained: dict, log=print, mesh=None) -> dict | None:
    """Train fresh optimizees on ``name`` with every optimizer; ``None`` if the dataset is not prepared.

    ``mesh``: data parallel (as :func:`randlr_jax.noh.meta_evaluate`).
    """
    try:
        splits = data.train_val_test(
            name, validation_size=config.validation_sizes.get(name), seed=0
        )
    except data.DatasetNotPreparedError:
        log(f"[eval] {name}: not prepared in TFDS, skipped")
        return None
    num_classes = int(max(splits["train"]["y"].max(), splits["test"]["y"].max())) + 1
    model = models.make_model("noh_mlp", num_classes=num_classes)
    in_dim = int(np.prod(splits["train"]["x"].shape[1:]))
    # A fresh optimizee: not the initialisation used in meta-training.
    params = model.init(jax.random.key(config.seed + 100), jnp.zeros((1, in_dim)))["params"]
    learned = _learned(config)
    coords = noh.sample_coordinates(params, config.num_traced_rates, seed=config.seed)
    evaluate = noh.make_split_evaluator(
        _logits_fn(model), {k: _flat(splits[k]) for k in ("train", "validation", "test")}
    )

    def curve(tx, trace=None):
        return noh.meta_evaluate(
            tx, _loss_fn(model), params, _flat(splits["train"]),
            key=jax.random.key(config.seed + 200), num_steps=config.eval_horizon,
            eval_every=config.eval_every, batch_size=config.batch_size, evaluate=evaluate,
            trace=trace, mesh=mesh,
        )  # fmt: skip

    t0 = time.perf_counter()
    grid = {rate: curve(optax.adam(rate)) for rate in config.adam_grid}
    final = {r: c["validation_loss"][-1] for r, c in grid.items()}
    best = min((r for r in final if math.isfinite(final[r])), key=final.get)
    runs = {"adam_best": {**grid[best], "learning_rate": best}}
    runs["adam_hd"] = curve(
        noh.adam_hd(config.adam_hd_learning_rate, config.adam_hd_hypergradient_lr)
    )
    runs["dmopt"] = curve(learned["dmopt"][1](trained["dmopt"]))
    for noh_name in ("noh", "noh_paper_meta_lr"):
        run = curve(learned[noh_name][1](trained[noh_name]), noh.trace_learning_rates(coords))
        run["traced_rates"] = run.pop("traced")
        runs[noh_name] = run
    log(f"[eval] {name}: {time.perf_counter() - t0:.0f} s, best Adam rate {best:g}")
    return {
        "dataset": name,
        "runs": runs,
        "adam_grid_final_validation_loss": {f"{r:g}": v for r, v in final.items()},
        "traced_coordinates": coords.tolist(),
    }


LABELS = {
    "adam_best": "Adam (best of grid)",
    "adam_hd": "Adam-HD",
    "dmopt": "DMopt (Andrychowicz)",
    "noh": "NOH",
    "noh_paper_meta_lr": "NOH, meta-lr 1e-7",
}


def _table(results: dict) -> str:
    lines = [
        "| dataset | optimizer | final train loss | final val acc | final test acc |",
        "|---|---|---:|---:|---:|",
    ]
    for name, result in results.items():
        for run, curve in result["runs"].items():
            label = LABELS[run]
            if run == "adam_best":
                label += f", rate {curve['learning_rate']:g}"
            lines.append(
                f"| {name} | {label} | {curve['train_loss'][-1]:.4f} | "
                f"{curve['validation_accuracy'][-1]:.3f} | {curve['test_accuracy'][-1]:.3f} |"
            )
    return "\n".join(lines)


def _figures(results: dict, config: Config, workdir: str) -> tuple[str, str]:
    n = len(results)
    fig = new_figure(figsize=(5 * n, 7))
    axes = fig.subplots(2, n, squeeze=False)
    for j, (name, result) in enumerate(results.items()):
        for run, curve in result["runs"].items():
            axes[0, j].plot(curve["step"], curve["train_loss"], label=LABELS[run])
            axes[1, j].plot(curve["step"], curve["test_accuracy"], label=LABELS[run])
        axes[0, j].set_yscale("log")
        axes[0, j].set_title(f"{name}: train loss")
        axes[1, j].set_title(f"{name}: test accuracy")
        for ax in axes[:, j]:
            ax.set_xlabel("step")
            ax.grid(alpha=0.3)
        axes[0, j].legend(fontsize=8)
    curves_path = save_figure(fig, os.path.join(workdir, "learning_curves.png"))
    fig = new_figure(figsize=(5 * n, 3.5))
    axes = fig.subplots(1, n, squeeze=False)
    for j, (name, result) in enumerate(results.items()):
        rates = np.asarray(result["runs"]["noh"]["traced_rates"])
        steps = np.arange(1, len(rates) + 1)
        for k, coord in enumerate(result["traced_coordinates"]):
            axes[0, j].plot(steps, rates[:, k], label=f"parameter {coord}")
        axes[0, j].set_yscale("log")
        axes[0, j].set_xlabel("step")
        axes[0, j].set_title(f"{name}: NOH rates (S = {config.update_every})")
        axes[0, j].grid(alpha=0.3)
        axes[0, j].legend(fontsize=7)
    rates_path = save_figure(fig, os.path.join(workdir, "noh_rates.png"))
    return curves_path, rates_path


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    _common.add_config_arguments(parser, CONFIGS, workdir="runs/noh")
    parser.add_argument(
        "--meta-learning-rate", type=_common.positive_float, help="the meta-optimizer's rate"
    )
    distributed.add_arguments(parser)
    args = parser.parse_args(argv)
    mesh_spec = distributed.from_args(args)
    if mesh_spec.copies != 1:
        parser.error(f"--mesh copies=... is for Alrao's classifier copies; got {args.mesh!r} here.")
    mesh = make_mesh(mesh_spec.num_devices)
    config = _common.resolve_config(args, CONFIGS, quick)
    os.makedirs(args.workdir, exist_ok=True)
    # Phases already done are loaded: a workdir holding them for other settings is refused instead.
    check_or_write(args.workdir, {"config": dataclasses.asdict(config)}, section="experiment")
    t0 = time.perf_counter()
    trained = meta_train_all(config, args.workdir, mesh=mesh)
    results = {}
    for name in config.datasets:
        path = os.path.join(args.workdir, f"eval_{name}.json")
        if os.path.exists(path):
            results[name] = _read_json(path)
            continue
        result = evaluate_dataset(name, config, trained, mesh=mesh)
        if result is not None:
            _common.write_json(path, result)
            results[name] = result
    figures = _figures(results, config, args.workdir)
    meta = _read_json(os.path.join(args.workdir, "meta_history.json"))
    summary = {
        "config": dataclasses.asdict(config),
        "device": jax.devices()[0].device_kind,
        "meta": {k: {kk: vv for kk, vv in v.items() if kk != "history"} for k, v in meta.items()},
        "final": {
            name: {
                run: {
                    "train_loss": c["train_loss"][-1],
                    "validation_accuracy": c["validation_accuracy"][-1],
                    "test_accuracy": c["test_accuracy"][-1],
                    **({"learning_rate": c["learning_rate"]} if "learning_rate" in c else {}),
                }
                for run, c in result["runs"].items()
            }
            for name, result in results.items()
        },
        "wall_seconds": time.perf_counter() - t0,
    }
    return _common.finish(
        args.workdir, summary, tables={"table": _table(results)}, figures=figures, started=t0,
        results_name="summary.json",
    )  # fmt: skip


if __name__ == "__main__":
    main()
