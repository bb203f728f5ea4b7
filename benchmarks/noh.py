"""NOH benchmarks: meta-step time and memory against unroll length, and the frozen NOH-Adam overhead.

On the MNIST-1D MLP (2 x 20 sigmoid, batch 120) with the paper's 3 x 20 NOH LSTM:

1. One meta-training step (one truncation: ``T`` unrolled optimizee steps, the meta-gradient and the meta
   update; ``randlr_jax.noh.make_meta_step``) for each unroll length ``T``, first order (the optimizee's
   gradients treated as constants, the default) and second order (differentiated through), without and
   (at the ``remat_at`` lengths) with rematerialisation (``jax.checkpoint`` per unrolled step). Time:
   median and minimum of ``repeats`` calls of each compiled step, all variants in interleaved rounds
   (inside the timed region: one call and ``block_until_ready``).
   Memory: XLA's memory analysis of the same compiled step (``argument + output + temp - alias``; on CPU
   the runtime reports no peak, so this is the compiler's figure).
2. One optimizee step with frozen NOH-Adam (the LSTM proposes rates every ``S`` steps) against plain Adam:
   median time of a ``lax.scan`` of ``steps`` steps, divided by ``steps``, and the ratio.

Size sets: ``accelerator``: ``T in {10, 50, 200, 400}``, remat at every ``T``, ``S in {1, 10, 50}``, 200
steps, 5 repeats; ``cpu``: ``T in {5, 10, 20, 40}``, remat at ``T = 40`` only (each variant is one more
compilation of ~5-20 s on 2 shared cores), same ``S``, 200 steps, 5 repeats; ``quick``: ``T = 5`` without
remat, ``S = 10``, 50 steps, 3 repeats.

Run alone: ``.venv/bin/python -m benchmarks.noh [--sizes cpu]``; writes
``benchmarks/results/noh_<backend>.json``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from benchmarks import common, report
from randlr_jax import data, models
from randlr_jax.noh import _meta_training as mt
from randlr_jax.noh import _noh as noh

SIZES = {
    "accelerator": {
        "unrolls": (10, 50, 200, 400),
        "orders": ("first", "second"),
        "remat_at": (10, 50, 200, 400),
        "update_every": (1, 10, 50),
        "steps": 200,
        "repeats": 5,
    },
    "cpu": {
        "unrolls": (5, 10, 20, 40),
        "orders": ("first", "second"),
        "remat_at": (40,),
        "update_every": (1, 10, 50),
        "steps": 200,
        "repeats": 5,
    },
    "quick": {
        "unrolls": (5,),
        "orders": ("first", "second"),
        "remat_at": (),
        "update_every": (10,),
        "steps": 50,
        "repeats": 3,
    },
}
BATCH_SIZE = 120


def _setup():
    splits = data.train_val_test("mnist1d", validation_size=500, seed=0)
    train = {"x": jnp.asarray(splits["train"]["x"]), "y": jnp.asarray(splits["train"]["y"])}
    model = models.make_model("noh_mlp", num_classes=10)
    params = model.init(jax.random.key(0), jnp.zeros((1, 40)))["params"]

    def loss_fn(p, batch):
        logits = model.apply({"params": p}, batch["x"])
        return optax.softmax_cross_entropy_with_integer_labels(logits, batch["y"]).mean()

    proposer = noh.LSTMRateProposer()
    lstm_params = noh.init_proposer_params(proposer, jax.random.key(1))
    return train, params, loss_fn, proposer, lstm_params


def meta_step_rows(config: dict) -> list[dict]:
    train, params, loss_fn, proposer, lstm_params = _setup()
    num_examples = int(train["y"].shape[0])

    def make(p):
        return noh.noh_adam(p, proposer=proposer, update_every=10)

    meta_optimizer = mt.make_meta_optimizer(1e-2)
    calls, infos = {}, {}
    for unroll in config["unrolls"]:
        indices = jnp.asarray(
            mt.sample_batch_indices(jax.random.key(2), num_examples, unroll, BATCH_SIZE)
        )
        remats = (False, True) if unroll in config["remat_at"] else (False,)
        for order in config["orders"]:
            for remat in remats:
                step = mt.make_meta_step(
                    make, loss_fn, meta_optimizer, second_order=order == "second", remat=remat
                )
                meta = mt.MetaState(
                    lstm_params,
                    meta_optimizer.init(lstm_params),
                    jnp.zeros([], jnp.int32),
                    jnp.zeros([], jnp.int32),
                )
                optimizee = mt.OptimizeeState(params, make(lstm_params).init(params))
                args = (meta, optimizee, train, indices)
                compiled, memory, compile_s = common.compile_ahead(step, *args)
                key = (unroll, order, remat)
                calls[key] = (compiled, args)
                infos[key] = {"compile_s": compile_s, "memory": memory}
        common.log(f"noh meta-step T={unroll}: compiled")
    timings = common.time_calls_interleaved(calls, repeats=config["repeats"])
    rows = []
    for (unroll, order, remat), timing in timings.items():
        memory = infos[(unroll, order, remat)]["memory"]
        rows.append(
            {
                "unroll": unroll,
                "order": order,
                "remat": remat,
                "seconds": timing["median_s"],
                "min_seconds": timing["min_s"],
                "repeats": timing["repeats"],
                "compile_s": infos[(unroll, order, remat)]["compile_s"],
                "memory": memory,
                "memory_bytes": None if memory is None else memory["total_bytes"],
            }
        )
    return rows


def frozen_step_rows(config: dict) -> list[dict]:
    train, params, loss_fn, proposer, lstm_params = _setup()
    steps = config["steps"]
    indices = jnp.asarray(
        mt.sample_batch_indices(jax.random.key(3), int(train["y"].shape[0]), steps, BATCH_SIZE)
    )

    def timed(tx):
        @jax.jit
        def train_steps(params, indices):
            def body(carry, idx):
                p, s = carry
                batch = jax.tree.map(lambda a: a[idx], train)
                updates, s = tx.update(jax.grad(loss_fn)(p, batch), s, p)
                return (optax.apply_updates(p, updates), s), None

            return jax.lax.scan(body, (params, tx.init(params)), indices)[0][0]

        timing = common.time_call(train_steps, params, indices, repeats=config["repeats"])
        return timing["median_s"] / steps, timing["min_s"] / steps

    adam, adam_min = timed(optax.adam(1e-3))
    rows = [{"optimizer": "adam", "seconds": adam, "min_seconds": adam_min, "ratio": 1.0}]
    for s in config["update_every"]:
        seconds, min_seconds = timed(noh.noh_adam(lstm_params, proposer=proposer, update_every=s))
        rows.append(
            {
                "optimizer": f"noh_adam_S{s}",
                "update_every": s,
                "seconds": seconds,
                "min_seconds": min_seconds,
                "ratio": seconds / adam,
                "ratio_of_minima": min_seconds / adam_min,
            }
        )
    return rows


def run(sizes: str, results_dir: str | None = None) -> dict:
    """Measure the size set ``sizes`` and write ``noh_<backend>.json``."""
    config = SIZES[common.check_size_set(sizes)]
    payload = {
        "optimizee": {"model": "noh_mlp", "batch_size": BATCH_SIZE},
        "repeats": config["repeats"],
        "scan_steps": config["steps"],
        "meta_step": meta_step_rows(config),
        "step": frozen_step_rows(config),
    }
    common.log("noh: done")
    payload["path"] = common.write_result("noh", sizes, payload, results_dir)
    return payload


def main(argv=None) -> dict:
    return common.size_set_main(__doc__.splitlines()[0], run, report.noh_section, argv)


if __name__ == "__main__":
    main()
