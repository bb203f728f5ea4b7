"""NOH benchmarks: meta-training step time and memory against unroll length, and the frozen NOH-Adam overhead.

Command (from the repository root)::

    .venv/bin/python -m benchmarks.noh

Two tables, on the MNIST-1D MLP (2 x 20 sigmoid, batch 120) with the paper's 3 x 20 NOH LSTM:

1. One meta-training step (one truncation: unrolled optimizee steps, the meta-gradient and the meta update)
   for unroll lengths 10, 50, 200, with and without rematerialisation (``jax.checkpoint``): median wall time
   and the compiled program's memory (XLA's memory analysis: arguments + outputs + temporaries; on CPU the
   runtime reports no peak, so this is the compiler's figure).
2. One optimizee step with frozen NOH-Adam at ``S`` in {1, 10, 50} against plain Adam: median time of a scan
   of 200 steps, divided by 200, and the ratio.

Writes ``benchmarks/results/noh_<device>.json``. Run on whatever device JAX picks (CPU here).
"""

from __future__ import annotations

import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from randlr_jax import data, models, noh
from randlr_jax import meta_training as mt


def _median_time(fn, *args, repeats=5):
    jax.block_until_ready(fn(*args))  # compile and warm up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def _memory_bytes(jitted, *args):
    analysis = jitted.lower(*args).compile().memory_analysis()
    if analysis is None:
        return None
    return int(
        analysis.argument_size_in_bytes
        + analysis.output_size_in_bytes
        + analysis.temp_size_in_bytes
    )


def main() -> dict:
    splits = data.train_val_test("mnist1d", validation_size=500, seed=0)
    train = {"x": jnp.asarray(splits["train"]["x"]), "y": jnp.asarray(splits["train"]["y"])}
    model = models.make_model("noh_mlp", num_classes=10)
    params = model.init(jax.random.key(0), jnp.zeros((1, 40)))["params"]

    def loss_fn(p, batch):
        logits = model.apply({"params": p}, batch["x"])
        return optax.softmax_cross_entropy_with_integer_labels(logits, batch["y"]).mean()

    proposer = noh.LSTMRateProposer()
    lstm_params = noh.init_proposer_params(proposer, jax.random.key(1))

    def make(p):
        return noh.noh_adam(p, proposer=proposer, update_every=10)

    meta_optimizer = mt.make_meta_optimizer(1e-2)
    device = jax.devices()[0]
    results = {
        "device": device.device_kind,
        "platform": device.platform,
        "meta_step": [],
        "step": [],
    }
    print(f"device: {device.device_kind} ({device.platform})")
    print("\n| unroll | remat | meta-step time (ms) | compiled memory (MiB) |")
    print("|---:|---|---:|---:|")
    for unroll in (10, 50, 200):
        indices = jnp.asarray(mt.sample_batch_indices(jax.random.key(2), 3500, unroll, 120))
        for remat in (False, True):
            step = jax.jit(mt.make_meta_step(make, loss_fn, meta_optimizer, remat=remat))
            meta = mt.MetaState(
                lstm_params,
                meta_optimizer.init(lstm_params),
                jnp.zeros([], jnp.int32),
                jnp.zeros([], jnp.int32),
            )
            optimizee = mt.OptimizeeState(params, make(lstm_params).init(params))
            seconds = _median_time(step, meta, optimizee, train, indices)
            memory = _memory_bytes(step, meta, optimizee, train, indices)
            results["meta_step"].append(
                {"unroll": unroll, "remat": remat, "seconds": seconds, "memory_bytes": memory}
            )
            mib = "-" if memory is None else f"{memory / 2**20:.1f}"
            print(f"| {unroll} | {remat} | {1e3 * seconds:.1f} | {mib} |")

    steps = 200
    indices = jnp.asarray(mt.sample_batch_indices(jax.random.key(3), 3500, steps, 120))

    def run(tx):
        @jax.jit
        def train_steps(params, indices):
            def body(carry, idx):
                p, s = carry
                batch = jax.tree.map(lambda a: a[idx], train)
                updates, s = tx.update(jax.grad(loss_fn)(p, batch), s, p)
                return (optax.apply_updates(p, updates), s), None

            return jax.lax.scan(body, (params, tx.init(params)), indices)[0][0]

        return _median_time(train_steps, params, indices) / steps

    adam = run(optax.adam(1e-3))
    print("\n| optimizer | step time (us) | ratio to Adam |")
    print("|---|---:|---:|")
    print(f"| Adam | {1e6 * adam:.1f} | 1.00 |")
    results["step"].append({"optimizer": "adam", "seconds": adam})
    for s in (1, 10, 50):
        seconds = run(noh.noh_adam(lstm_params, proposer=proposer, update_every=s))
        results["step"].append({"optimizer": f"noh_adam_S{s}", "seconds": seconds})
        print(f"| NOH-Adam, S = {s} | {1e6 * seconds:.1f} | {seconds / adam:.2f} |")
    os.makedirs(os.path.join("benchmarks", "results"), exist_ok=True)
    name = device.device_kind.replace(" ", "_").lower()
    path = os.path.join("benchmarks", "results", f"noh_{name}.json")
    with open(path, "w") as f:
        json.dump(results, f, indent=2)
    print(f"\nresults: {os.path.abspath(path)}")
    return results


if __name__ == "__main__":
    main()
