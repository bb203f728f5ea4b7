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

from benchmarks import common
from randlr_jax import models
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
    splits, _ = common.mnist1d_splits(validation_size=500, seed=0)  # random arrays without it
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


TITLE = "NOH: meta-step time and memory against unroll length"
SUMMARY = (
    "NOH meta-step time and memory against unroll length, first vs second order, with/without "
    "remat; frozen NOH-Adam vs Adam"
)


def _optimizer_name(row: dict) -> str:
    return "Adam" if row["optimizer"] == "adam" else f"NOH-Adam, S = {row['update_every']}"


def _update_every(row: dict) -> int | None:
    """``S`` of a frozen-step row (older files only name it: ``noh_adam_S10``)."""
    if row["optimizer"] == "adam":
        return None
    return int(row.get("update_every", row["optimizer"].rsplit("_S", 1)[-1]))


def section(result: dict) -> str:
    """This benchmark's section of ``RESULTS.md`` (also what a run alone prints): the meta-step
    table, the second / first order ratios, the frozen-step table."""
    meta = result["meta_step"]
    lines = [
        "One NOH meta-training step (`randlr_jax.noh.make_meta_step`: `T` unrolled NOH-Adam steps of the "
        f"MNIST-1D MLP 2 x 20 sigmoid at batch {result['optimizee']['batch_size']}, the meta-gradient "
        "through them, the meta-update of the 3 x 20 LSTM), first order (the optimizee's gradients as "
        "constants, the default) and second order (differentiated through), with and without "
        "rematerialisation (`jax.checkpoint` per unrolled step). **Timed region:** one call of the "
        "compiled step and `block_until_ready`; all variants interleaved. "
        f"**Statistic:** median (min) of {result['repeats']} calls. **Memory:** XLA's memory "
        "analysis of the same compiled step (`argument + output + temp - alias`).",
        "",
        "| T | order | remat | meta-step (ms) | min (ms) | memory (MiB) | compile (s) |",
        "|---:|---|---|---:|---:|---:|---:|",
    ]
    for r in sorted(meta, key=lambda r: (r["unroll"], r["order"], r["remat"])):
        lines.append(
            f"| {r['unroll']} | {r['order']} | {'yes' if r['remat'] else 'no'} "
            f"| {common.ms(r['seconds'])} | {common.ms(r['min_seconds'])} "
            f"| {common.mib(r['memory_bytes'])} | {r['compile_s']:.1f} |"
        )
    by_key = {(r["unroll"], r["order"], r["remat"]): r for r in meta}
    pairs = [
        (t, by_key[(t, "second", False)]["seconds"] / by_key[(t, "first", False)]["seconds"])
        for t in sorted({r["unroll"] for r in meta})
        if (t, "second", False) in by_key and (t, "first", False) in by_key
    ]
    if pairs:
        lines += [
            "",
            "Second / first order meta-step time (no remat): "
            + ", ".join(f"T = {t}: {x:.2f}" for t, x in pairs)
            + ".",
        ]
    lines += [
        "",
        f"Frozen NOH-Adam (the LSTM proposes rates every `S` steps) against Adam: a `lax.scan` of "
        f"{result['scan_steps']} optimizee steps, median (min) of {result['repeats']} calls, divided "
        "by the steps.",
        "",
        "| optimizer | step (us) | min (us) | ratio to Adam |",
        "|---|---:|---:|---:|",
    ]
    for r in result["step"]:
        lines.append(
            f"| {_optimizer_name(r)} | {1e6 * r['seconds']:.2f} | {1e6 * r['min_seconds']:.2f} "
            f"| {r['ratio']:.2f} |"
        )
    return "\n".join(lines)


def headline(result: dict) -> str | None:
    """The report's one-line summary: the longest unroll, first order, against second order and
    remat (``None`` when no first-order meta-step without remat was measured)."""
    meta = result["meta_step"]
    t_max = max(r["unroll"] for r in meta)
    at = {(r["order"], r["remat"]): r for r in meta if r["unroll"] == t_max}
    first = at.get(("first", False))
    if first is None:
        return None
    line = (
        f"NOH meta-step at T = {t_max}: {common.ms(first['seconds'])} ms, "
        f"{common.mib(first['memory_bytes'])} MiB (first order)"
    )
    second = at.get(("second", False))
    if second:
        line += f"; second order {second['seconds'] / first['seconds']:.2f}x the time"
    if ("first", True) in at:
        line += f"; remat: {common.mib(at[('first', True)]['memory_bytes'])} MiB"
    return line


def readme_table(result: dict) -> str:
    """The README's two tables (NOH's "Benchmark"): first-order meta-step time and compiled memory
    by unroll and remat, then the frozen step against Adam.

    Reads only ``unroll``, ``remat``, ``seconds``, ``memory_bytes`` of the meta-step rows (rows
    without ``order`` are first order, the only one older files measured) and ``optimizer``,
    ``seconds`` of the frozen-step rows, so it renders ``noh_<backend>_custom.json`` too.
    """
    lines = [
        "| unroll | remat | meta-step time (ms) | compiled memory (MiB) |",
        "|---:|---|---:|---:|",
    ]
    for r in result["meta_step"]:
        if r.get("order", "first") != "first":
            continue
        mem = r["memory_bytes"]
        lines.append(
            f"| {r['unroll']} | {r['remat']} | {1e3 * r['seconds']:.1f} "
            f"| {common.fixed(None if mem is None else mem / 2**20, 1)} |"
        )
    adam = next(r["seconds"] for r in result["step"] if r["optimizer"] == "adam")
    lines += ["", "| optimizer | step time (us) | ratio to Adam |", "|---|---:|---:|"]
    for r in result["step"]:
        name = _optimizer_name({**r, "update_every": _update_every(r)})
        lines.append(f"| {name} | {1e6 * r['seconds']:.1f} | {r['seconds'] / adam:.2f} |")
    return "\n".join(lines)


def main(argv=None) -> dict:
    return common.size_set_main(__doc__.splitlines()[0], run, section, argv)


if __name__ == "__main__":
    main()
