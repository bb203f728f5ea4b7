"""Step time of Alrao-SGD against plain SGD on the same model and batch (issue 3's benchmark).

For each model and batch size: one jitted training step of plain ``optax.sgd`` (Dense classifier head) and one
jitted Alrao-SGD step (10 classifier copies, per-feature rates, switch update), both donating their state,
timed in interleaved blocks so that machine noise hits both alike; the figure is the ratio of median step
times. Target on a GPU: ratio <= 1.03 for every model.

Run::

    .venv/bin/python -m benchmarks.alrao_step            # GPU defaults: batch 32 and 128, all models
    .venv/bin/python -m benchmarks.alrao_step --cpu-small  # this CPU: small batches, few steps

Prints a table and writes ``benchmarks/results/alrao_step_<device>.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time

import jax
import numpy as np
import optax

import randlr_jax
from randlr_jax import models
from randlr_jax.training import create_train_state, make_alrao_train_step, make_train_step

CIFAR_MODELS = ("vgg19", "mobilenetv2", "googlenet")


def _batch(model_name: str, batch_size: int, rng: np.random.Generator) -> dict:
    shape = (batch_size, 40) if model_name == "mlp" else (batch_size, 32, 32, 3)
    return {
        "x": rng.normal(size=shape).astype(np.float32),
        "y": rng.integers(0, 10, size=batch_size).astype(np.int32),
    }


def _steps(model_name: str, num_copies: int):
    kwargs = {"widths": (100, 100)} if model_name == "mlp" else {}
    plain_model = models.make_model(model_name, num_classes=10, **kwargs)
    head = randlr_jax.AlraoHead(num_outputs=10, num_copies=num_copies)
    alrao_model = models.make_model(model_name, head=head, **kwargs)
    plain_tx = optax.sgd(0.01)
    alrao_tx = randlr_jax.alrao_sgd(jax.random.key(1), 1e-5, 10.0, num_copies)
    return (
        (plain_model, plain_tx, make_train_step(plain_model, plain_tx)),
        (alrao_model, alrao_tx, make_alrao_train_step(alrao_model, alrao_tx)),
    )


def _time_block(step, state, batch, steps: int):
    t0 = time.perf_counter()
    for _ in range(steps):
        state, metrics = step(state, batch)
    jax.block_until_ready(metrics["loss"])
    return state, (time.perf_counter() - t0) / steps


def measure(model_name: str, batch_size: int, steps: int, repeats: int, num_copies: int) -> dict:
    rng = np.random.default_rng(0)
    batch = jax.device_put(_batch(model_name, batch_size, rng))
    runs = []
    for model, tx, step_fn in _steps(model_name, num_copies):
        state = create_train_state(model, tx, jax.random.key(0), batch["x"][:1])
        step = jax.jit(step_fn, donate_argnums=0)
        t0 = time.perf_counter()
        state, _ = step(state, batch)  # compile
        jax.block_until_ready(state.params)
        runs.append(
            {
                "step": step,
                "state": state,
                "compile_s": time.perf_counter() - t0,
                "times": [],
                "params": randlr_jax.models.count_params(state.params),
            }
        )
    for _ in range(repeats):  # interleaved blocks: noise hits both alike
        for run in runs:
            run["state"], t = _time_block(run["step"], run["state"], batch, steps)
            run["times"].append(t)
    plain, alrao = (statistics.median(r["times"]) for r in runs)
    return {
        "model": model_name,
        "batch_size": batch_size,
        "plain_step_ms": 1e3 * plain,
        "alrao_step_ms": 1e3 * alrao,
        "ratio": alrao / plain,
        "plain_params": runs[0]["params"],
        "alrao_params": runs[1]["params"],
        "compile_s": [r["compile_s"] for r in runs],
    }


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["mlp", *CIFAR_MODELS])
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=[32, 128])
    parser.add_argument("--steps", type=int, default=20, help="steps per timed block")
    parser.add_argument("--repeats", type=int, default=5, help="interleaved blocks per variant")
    parser.add_argument("--num-copies", type=int, default=10)
    parser.add_argument(
        "--cpu-small",
        action="store_true",
        help="CPU-sized run: CIFAR models at batch 8 and 32, 3 steps x 3 repeats",
    )
    parser.add_argument("--out", default=None, help="JSON path (default benchmarks/results/...)")
    args = parser.parse_args(argv)
    device = jax.devices()[0]
    rows = []
    for model_name in args.models:
        batch_sizes, steps, repeats = args.batch_sizes, args.steps, args.repeats
        if args.cpu_small and model_name != "mlp":
            batch_sizes, steps, repeats = [8, 32], 3, 3
        for batch_size in batch_sizes:
            row = measure(model_name, batch_size, steps, repeats, args.num_copies)
            rows.append(row)
            print(
                f"{model_name:12s} batch {batch_size:4d}: plain {row['plain_step_ms']:9.2f} ms, "
                f"alrao {row['alrao_step_ms']:9.2f} ms, ratio {row['ratio']:.3f}",
                flush=True,
            )
    print()
    print(
        "| model | batch | plain SGD step (ms) | Alrao-SGD step (ms) | ratio | params plain | params Alrao |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['model']} | {r['batch_size']} | {r['plain_step_ms']:.2f} | {r['alrao_step_ms']:.2f} | "
            f"{r['ratio']:.3f} | {r['plain_params']:,} | {r['alrao_params']:,} |"
        )
    result = {
        "benchmark": "alrao_step",
        "device": str(device),
        "device_kind": device.device_kind,
        "platform": device.platform,
        "num_devices": jax.device_count(),
        "host": platform.processor() or platform.machine(),
        "jax": jax.__version__,
        "num_copies": args.num_copies,
        "note": "CPU run with reduced sizes; the <= 1.03 target is for a GPU"
        if device.platform == "cpu"
        else "",
        "rows": rows,
    }
    out = args.out or os.path.join(
        os.path.dirname(__file__), "results", f"alrao_step_{device.platform}.json"
    )
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w") as f:
        json.dump(result, f, indent=2)
    print(f"\nwrote {out} ({device.device_kind})")
    return rows


if __name__ == "__main__":
    main()
