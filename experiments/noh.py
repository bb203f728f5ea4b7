"""NOH (seed 002): meta-train an LSTM that sets Adam's per-parameter rates, freeze it, compare with baselines.

Command (from the repository root)::

    .venv/bin/python -m experiments.noh --workdir runs/noh

What it does: meta-trains, on the MNIST-1D MLP (2 x 20 sigmoid, batch 120, the same initial parameters
every meta-iteration), (a) NOH with the meta learning rate used here, (b) NOH with the paper's meta learning
rate ``1e-7`` and (c) the Andrychowicz et al. LSTM optimizer ("DMopt"), each for 5 meta-iterations of 2,000
steps unrolled 50 at a time; then freezes them and trains fresh MLPs (new initialisation) for 6,000 steps on
MNIST-1D and on the digits data set (and MNIST / SVHN / CIFAR-10 when prepared in TFDS), against Adam at its
best rate of the grid ``1e-1 ... 1e-10`` (chosen by final validation loss) and Adam-HD (``alpha_0 = 1e-3``,
``beta = 1e-7``). Measured: 893 s wall on 2 shared CPU cores (5.6 min of CPU time); NOH at meta-lr
``1e-2`` reaches MNIST-1D test accuracy ~0.41 against ~0.49 for Adam at its best rate ``1e-2``, and the paper's
``1e-7`` leaves the LSTM unchanged. The full table is in the README.

Writes under ``--workdir``: ``<name>_lstm.msgpack`` (trained parameters, loadable with
``randlr_jax.noh.load_lstm_params``), ``meta_history.json``, ``eval_<dataset>.json`` (learning
curves), ``summary.json``, ``table.md``, ``learning_curves.png``, ``noh_rates.png`` (randomly picked
per-parameter rate schedules, seed 002 Fig. 3). Phases already done are loaded, so an interrupted run resumes.
``--quick`` shrinks every size (seconds; used by the test suite).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import math
import os
import time

import jax
import jax.numpy as jnp
import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import optax

import randlr_jax
from experiments._common import positive_float
from randlr_jax import data, models
from randlr_jax.noh import _hypergradient as hd
from randlr_jax.noh import _meta_training as mt
from randlr_jax.noh import _noh as noh
from randlr_jax.training import apply_step, check_or_write, distributed, make_mesh
from randlr_jax.training._sharding import batch_sharded, replicate

PAPER_META_LR = 1e-7


@dataclasses.dataclass(frozen=True)
class Config:
    """Sizes of the study (defaults: seed 002's, except the meta learning rate; see the README)."""

    meta_iterations: int = 5
    meta_horizon: int = 2000
    unroll_length: int = 50
    update_every: int = 10  # S: not given by the paper
    batch_size: int = 120
    meta_learning_rate: float = 1e-2
    eval_horizon: int = 6000
    eval_every: int = 100
    adam_grid: tuple = tuple(10.0**-k for k in range(1, 11))
    datasets: tuple = ("mnist1d", "digits", "mnist", "svhn_cropped", "cifar10")
    num_traced_rates: int = 6
    noh_layers: int = 3  # paper: 3 x 20
    dmopt_layers: int = 2  # Andrychowicz et al.: 2 x 20
    hidden_size: int = 20
    seed: int = 0


QUICK = Config(
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

VALIDATION_SIZE = {"mnist1d": 500, "digits": 200}


def _loss_fn(model):
    def loss_fn(params, batch):
        logits = model.apply({"params": params}, batch["x"])
        return optax.softmax_cross_entropy_with_integer_labels(logits, batch["y"]).mean()

    return loss_fn


def _flat(split):
    return {"x": split["x"].reshape(len(split["x"]), -1).astype(np.float32), "y": split["y"]}


def _learned(config: Config):
    """name -> (proposer module, make_optimizer, meta learning rate)."""
    rate = noh.LSTMRateProposer(num_layers=config.noh_layers, hidden_size=config.hidden_size)
    update = randlr_jax.noh.LSTMUpdateProposer(
        num_layers=config.dmopt_layers, hidden_size=config.hidden_size
    )

    def make_noh(p):
        return noh.noh_adam(p, proposer=rate, update_every=config.update_every)

    def make_dmopt(p):
        return randlr_jax.lstm_optimizer(p, proposer=update)

    return {
        "noh": (rate, make_noh, config.meta_learning_rate),
        "noh_paper_meta_lr": (rate, make_noh, PAPER_META_LR),
        "dmopt": (update, make_dmopt, config.meta_learning_rate),
    }


def meta_train_all(config: Config, workdir: str, log=print, mesh=None) -> dict:
    """Meta-train (or load) every learned optimizer; returns name -> trained parameters.

    ``mesh``: data parallel over this mesh (each minibatch split over its ``"data"`` axis).
    """
    splits = data.train_val_test("mnist1d", validation_size=VALIDATION_SIZE["mnist1d"], seed=0)
    train = _flat(splits["train"])
    model = models.make_model("noh_mlp", num_classes=10)
    init = model.init(jax.random.key(config.seed), jnp.zeros((1, 40)))["params"]
    history_path = os.path.join(workdir, "meta_history.json")
    histories = json.load(open(history_path)) if os.path.exists(history_path) else {}
    trained = {}
    for name, (proposer, make, meta_lr) in _learned(config).items():
        path = os.path.join(workdir, f"{name}_lstm.msgpack")
        if os.path.exists(path):
            trained[name], _ = mt.load_lstm_params(path)
            log(f"[meta] {name}: loaded {path}")
            continue
        t0 = time.perf_counter()
        result = mt.meta_train(
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
        mt.save_lstm_params(
            path,
            result.lstm_params,
            {
                "kind": "dmopt" if name == "dmopt" else "noh",
                "module": module,
                "update_every": config.update_every,
                "meta_training": {
                    "optimizee": "noh_mlp on mnist1d, batch 120",
                    "meta_iterations": config.meta_iterations,
                    "horizon": config.meta_horizon,
                    "unroll_length": config.unroll_length,
                    "meta_learning_rate": meta_lr,
                },
            },
        )
        trained[name] = result.lstm_params
        with open(history_path, "w") as f:
            json.dump(histories, f)
    return trained


def _evaluator(model, splits):
    """A jitted ``params -> {split_loss, split_accuracy}`` over the whole train, validation, test sets."""
    evals = {
        k: jax.tree.map(jnp.asarray, _flat(splits[k])) for k in ("train", "validation", "test")
    }

    @jax.jit
    def evaluate(params):
        out = {}
        for name, split in evals.items():
            logits = model.apply({"params": params}, split["x"])
            loss = optax.softmax_cross_entropy_with_integer_labels(logits, split["y"]).mean()
            out[f"{name}_loss"] = loss
            out[f"{name}_accuracy"] = jnp.mean(jnp.argmax(logits, -1) == split["y"])
        return out

    return evaluate


def _train_curve(tx, model, params, splits, config, key, evaluate, trace_fn=None, mesh=None):
    """Train from ``params`` for ``eval_horizon`` steps; ``evaluate`` every ``eval_every`` steps.

    ``mesh``: data parallel (the training set and the parameters replicated, each gathered minibatch
    split over the mesh's ``"data"`` axis).
    """
    train = jax.tree.map(jnp.asarray, _flat(splits["train"]))
    constrain = lambda batch: batch  # noqa: E731
    if mesh is not None:
        train, params = replicate((train, params), mesh)
        sharding = batch_sharded(mesh)
        constrain = lambda batch: jax.lax.with_sharding_constraint(batch, sharding)  # noqa: E731
    loss_fn = _loss_fn(model)
    chunks = config.eval_horizon // config.eval_every
    indices = mt.sample_batch_indices(
        key, len(train["y"]), config.eval_horizon, config.batch_size
    ).reshape(chunks, config.eval_every, config.batch_size)

    @jax.jit
    def run_chunk(params, state, chunk):
        def step(carry, idx):
            params, state = carry
            batch = constrain(jax.tree.map(lambda a: a[idx], train))
            grads = jax.grad(loss_fn)(params, batch)
            params, state = apply_step(tx, params, state, grads)
            traced = trace_fn(state) if trace_fn is not None else jnp.zeros((0,))
            return (params, state), traced

        return jax.lax.scan(step, (params, state), chunk)

    state = tx.init(params)
    curve = {"step": []}
    traces = []
    for i, chunk in enumerate(indices):
        (params, state), traced = run_chunk(params, state, chunk)
        traces.append(np.asarray(traced))
        metrics = evaluate(params)
        curve["step"].append((i + 1) * config.eval_every)
        for k, v in metrics.items():
            curve.setdefault(k, []).append(float(v))
    if trace_fn is not None:
        curve["traced_rates"] = np.concatenate(traces).tolist()
    return curve


def evaluate_dataset(name: str, config: Config, trained: dict, log=print, mesh=None) -> dict | None:
    """Train fresh optimizees on ``name`` with every optimizer; ``None`` if the dataset is not prepared.

    ``mesh``: as :func:`_train_curve`.
    """
    try:
        splits = data.train_val_test(name, validation_size=VALIDATION_SIZE.get(name), seed=0)
    except data.DatasetNotPreparedError:
        log(f"[eval] {name}: not prepared in TFDS, skipped")
        return None
    num_classes = int(max(splits["train"]["y"].max(), splits["test"]["y"].max())) + 1
    model = models.make_model("noh_mlp", num_classes=num_classes)
    in_dim = int(np.prod(splits["train"]["x"].shape[1:]))
    # A fresh optimizee: not the initialisation used in meta-training.
    params = model.init(jax.random.key(config.seed + 100), jnp.zeros((1, in_dim)))["params"]
    key = jax.random.key(config.seed + 200)
    learned = _learned(config)
    coords = np.sort(
        np.random.default_rng(config.seed).choice(
            noh.num_coordinates(params), config.num_traced_rates, replace=False
        )
    )
    runs = {}
    t0 = time.perf_counter()
    evaluate = _evaluator(model, splits)
    grid = {}
    curve = functools.partial(_train_curve, mesh=mesh)
    for rate in config.adam_grid:
        grid[rate] = curve(optax.adam(rate), model, params, splits, config, key, evaluate)
    final = {r: c["validation_loss"][-1] for r, c in grid.items()}
    best = min((r for r in final if math.isfinite(final[r])), key=final.get)
    runs["adam_best"] = {**grid[best], "learning_rate": best}
    runs["adam_hd"] = curve(hd.adam_hd(1e-3, 1e-7), model, params, splits, config, key, evaluate)
    runs["dmopt"] = curve(
        learned["dmopt"][1](trained["dmopt"]), model, params, splits, config, key, evaluate
    )
    for noh_name in ("noh", "noh_paper_meta_lr"):
        runs[noh_name] = curve(
            learned[noh_name][1](trained[noh_name]),
            model,
            params,
            splits,
            config,
            key,
            evaluate,
            trace_fn=lambda s: noh.flatten_tree(s.learning_rates)[coords],
        )
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
    fig, axes = plt.subplots(2, n, figsize=(5 * n, 7), squeeze=False)
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
    fig.tight_layout()
    curves_path = os.path.join(workdir, "learning_curves.png")
    fig.savefig(curves_path, dpi=110)
    plt.close(fig)
    fig, axes = plt.subplots(1, n, figsize=(5 * n, 3.5), squeeze=False)
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
    fig.tight_layout()
    rates_path = os.path.join(workdir, "noh_rates.png")
    fig.savefig(rates_path, dpi=110)
    plt.close(fig)
    return curves_path, rates_path


def main(argv=None) -> dict:
    matplotlib.use("Agg")  # figures go to files; the entry point, not an import, picks the backend
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default="runs/noh", help="run directory (resumes if present)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes (smoke test, seconds)")
    parser.add_argument(
        "--meta-learning-rate",
        type=positive_float,
        default=None,
        help="override the meta learning rate",
    )
    distributed.add_arguments(parser)
    args = parser.parse_args(argv)
    mesh_spec = distributed.from_args(args)
    if mesh_spec.copies != 1:
        parser.error(f"--mesh copies=... is for Alrao's classifier copies; got {args.mesh!r} here.")
    mesh = make_mesh(mesh_spec.num_devices)
    config = QUICK if args.quick else Config()
    if args.meta_learning_rate is not None:
        config = dataclasses.replace(config, meta_learning_rate=args.meta_learning_rate)
    os.makedirs(args.workdir, exist_ok=True)
    # Phases already done are loaded: a workdir holding them for other settings is refused instead.
    check_or_write(args.workdir, {"config": dataclasses.asdict(config)}, section="experiment")
    t0 = time.perf_counter()
    trained = meta_train_all(config, args.workdir, mesh=mesh)
    results = {}
    for name in config.datasets:
        path = os.path.join(args.workdir, f"eval_{name}.json")
        if os.path.exists(path):
            results[name] = json.load(open(path))
            continue
        result = evaluate_dataset(name, config, trained, mesh=mesh)
        if result is not None:
            with open(path, "w") as f:
                json.dump(result, f)
            results[name] = result
    table = _table(results)
    curves_path, rates_path = _figures(results, config, args.workdir)
    meta = json.load(open(os.path.join(args.workdir, "meta_history.json")))
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
    with open(os.path.join(args.workdir, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
    with open(os.path.join(args.workdir, "table.md"), "w") as f:
        f.write(table + "\n")
    print()
    print(table)
    print(f"\nwall time {summary['wall_seconds']:.1f} s")
    print(f"results: {os.path.abspath(os.path.join(args.workdir, 'summary.json'))}")
    print(f"figures: {os.path.abspath(curves_path)}, {os.path.abspath(rates_path)}")
    return summary


if __name__ == "__main__":
    main()
