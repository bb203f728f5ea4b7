"""Cost of the LR range test: one compilation with a traced rate, against re-jitting per rate.

``randlr_jax.range_test.lr_range_test`` compiles one step that takes the rate as an argument. The naive
alternative closes over each rate (``jax.jit(step_with(optax.sgd(lr)))``), so every one of the
``num_iter`` rates compiles a new program. For the MNIST-1D MLP and CNN on random batches, this measures
the whole range test (wall time, compilations counted by tracing the loss) and the naive loop on its
first ``--naive-iters`` rates (wall time per step, extrapolated to ``num_iter``).

Run::

    .venv/bin/python -m benchmarks.range_test

Prints a table and writes ``benchmarks/results/range_test_<device>.json``. No GPU in the session that
wrote it: measured on CPU (2 shared cores), sizes chosen to take about a minute.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import jax
import numpy as np
import optax

from randlr_jax import range_test as rt
from randlr_jax.models import make_model

MODELS = {"mlp": {"widths": (100, 100)}, "cnn1d": {}}


def _batches(num: int, batch_size: int, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    return [
        {
            "x": rng.normal(size=(batch_size, 40)).astype(np.float32),
            "y": rng.integers(0, 10, size=batch_size).astype(np.int32),
        }
        for _ in range(num)
    ]


def _counted(loss_fn, counter: list):
    def counted(params, batch):
        counter.append(1)  # once per trace
        return loss_fn(params, batch)

    return counted


def measure(model_name: str, num_iter: int, naive_iters: int, batch_size: int) -> dict:
    model = make_model(model_name, num_classes=10, **MODELS[model_name])
    batches = _batches(num_iter, batch_size)
    params = jax.jit(model.init)(jax.random.key(0), batches[0]["x"][:1])["params"]
    factory = lambda lr: optax.sgd(lr, momentum=0.9)  # noqa: E731
    loss_fn = rt.classification_loss(model)

    traces: list = []
    t0 = time.perf_counter()
    result = rt.lr_range_test(
        _counted(loss_fn, traces),
        params,
        batches,
        factory,
        start=1e-5,
        end=10.0,
        num_iter=num_iter,
        diverge_threshold=1e9,  # run every step
    )
    traced_wall = time.perf_counter() - t0

    naive_traces: list = []
    rates = rt.range_test_learning_rates(1e-5, 10.0, num_iter)[:naive_iters]
    current, opt_state = params, factory(1e-5).init(params)
    t0 = time.perf_counter()
    for lr, batch in zip(rates, batches, strict=False):
        fixed = float(lr)  # a Python constant: each rate is a new program
        step = jax.jit(
            rt.make_range_test_step(
                _counted(loss_fn, naive_traces), lambda _, fixed=fixed: factory(fixed)
            )
        )
        current, opt_state, loss = step(current, opt_state, np.float32(lr), batch)
        float(loss)
    naive_wall = time.perf_counter() - t0
    return {
        "model": model_name,
        "num_iter": num_iter,
        "steps_run": len(result.losses),
        "traced_compilations": len(traces),
        "traced_wall_s": traced_wall,
        "naive_iters_measured": naive_iters,
        "naive_compilations": len(naive_traces),
        "naive_wall_s_per_step": naive_wall / naive_iters,
        "naive_wall_s_extrapolated": naive_wall / naive_iters * num_iter,
    }


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-iter", type=int, default=200)
    parser.add_argument("--naive-iters", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=128)
    args = parser.parse_args(argv)
    rows = [measure(name, args.num_iter, args.naive_iters, args.batch_size) for name in MODELS]
    device = jax.devices()[0]
    print(f"device: {device.device_kind} ({platform.processor() or platform.machine()})")
    print(
        "| model | steps | compilations (traced rate) | wall s (traced rate) | "
        "compilations (re-jit per rate) | wall s (re-jit, extrapolated) |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['model']} | {r['steps_run']} | {r['traced_compilations']} | "
            f"{r['traced_wall_s']:.2f} | {r['naive_compilations']} per {r['naive_iters_measured']} | "
            f"{r['naive_wall_s_extrapolated']:.1f} |"
        )
    os.makedirs(os.path.join(os.path.dirname(__file__), "results"), exist_ok=True)
    path = os.path.join(os.path.dirname(__file__), "results", f"range_test_{device.platform}.json")
    with open(path, "w") as f:
        json.dump(
            {
                "device_kind": device.device_kind,
                "platform": device.platform,
                "note": "CPU only in the session that measured this (2 shared cores)",
                "rows": rows,
            },
            f,
            indent=2,
        )
    print(f"results: {os.path.abspath(path)}")
    return rows


if __name__ == "__main__":
    main()
