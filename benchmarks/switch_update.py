"""Cost of the switch update (Alrao's posterior over the copies) per training step.

For ``N in {1, 4, 10, 32}`` copies, three timings, all after a warm-up:

* ``dispatched``: one jitted ``randlr_jax.alrao.switch_update(state, log_likelihoods)`` call on its own, timed
  in blocks of ``calls`` calls (what it costs as a separate program: launch overhead included);
* ``in_scan``: ``T`` updates inside one ``lax.scan`` program, divided by ``T`` (the update's own compute,
  which is what it adds when fused into the training step, as ``make_alrao_train_step`` does);
* ``alrao_step``: one jitted Alrao-SGD step (MNIST-1D MLP 100-100, ``N`` copies, 10 classes, the
  switch update included, state donated), for the fraction ``in_scan / alrao_step`` (and
  ``dispatched / alrao_step``, an upper bound), both measured in this run.

Median and minimum of ``repeats`` blocks. Size sets: ``accelerator`` and ``cpu``: ``T = 1000``, blocks of
200 calls, 7 repeats, Alrao step at batch 128; ``quick``: ``N in {1, 32}``, ``T = 100``, blocks of 50
calls, 3 repeats.

Run alone: ``.venv/bin/python -m benchmarks.switch_update``; writes
``benchmarks/results/switch_update_<backend>.json``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

import randlr_jax
from benchmarks import alrao_step, common

SIZES = {
    "accelerator": {
        "num_copies": (1, 4, 10, 32),
        "scan_length": 1000,
        "calls": 200,
        "repeats": 7,
        "batch_size": 128,
        "steps": 50,
    },
    "cpu": {
        "num_copies": (1, 4, 10, 32),
        "scan_length": 1000,
        "calls": 200,
        "repeats": 7,
        "batch_size": 128,
        "steps": 50,
    },
    "quick": {
        "num_copies": (1, 32),
        "scan_length": 100,
        "calls": 50,
        "repeats": 3,
        "batch_size": 128,
        "steps": 10,
    },
}


def _scan_updates(state, log_likelihoods_seq):
    def body(carry, ell):
        return randlr_jax.alrao.switch_update(carry, ell), None

    return jax.lax.scan(body, state, log_likelihoods_seq)[0]


def measure(num_copies: int, config: dict) -> dict:
    rng = np.random.default_rng(0)
    state = randlr_jax.alrao.switch_init(num_copies)
    ell = jnp.asarray(-rng.exponential(size=num_copies).astype(np.float32))
    dispatched = common.time_call(
        jax.jit(randlr_jax.alrao.switch_update),
        state,
        ell,
        repeats=config["repeats"],
        number=config["calls"],
    )
    seq = jnp.asarray(-rng.exponential(size=(config["scan_length"], num_copies)).astype(np.float32))
    scanned = common.time_call(jax.jit(_scan_updates), state, seq, repeats=config["repeats"])
    in_scan = common.summarize_times([t / config["scan_length"] for t in scanned["all_s"]])

    batch = jax.device_put(alrao_step.random_batch("mlp", config["batch_size"]))
    variants = alrao_step.make_variants("mlp", num_copies, batch, which=("alrao",))
    timings, _ = common.time_steps_interleaved(
        {"alrao": variants["alrao"]}, batch, steps=config["steps"], repeats=config["repeats"]
    )
    step = timings["alrao"]
    return {
        "num_copies": num_copies,
        "dispatched_us": 1e6 * dispatched["median_s"],
        "dispatched_min_us": 1e6 * dispatched["min_s"],
        "in_scan_us": 1e6 * in_scan["median_s"],
        "in_scan_min_us": 1e6 * in_scan["min_s"],
        "alrao_step_us": 1e6 * step["median_s"],
        "alrao_step_min_us": 1e6 * step["min_s"],
        "fraction_in_scan": in_scan["median_s"] / step["median_s"],
        "fraction_dispatched": dispatched["median_s"] / step["median_s"],
        "repeats": config["repeats"],
    }


def run(sizes: str, results_dir: str | None = None) -> dict:
    """Measure the size set ``sizes`` and write ``switch_update_<backend>.json``."""
    config = SIZES[common.check_size_set(sizes)]
    rows = [measure(n, config) for n in config["num_copies"]]
    common.log("switch_update: done")
    payload = {
        "scan_length": config["scan_length"],
        "calls_per_block": config["calls"],
        "alrao_step": {"model": "mlp", "widths": [100, 100], "batch_size": config["batch_size"]},
        "rows": rows,
    }
    payload["path"] = common.write_result("switch_update", sizes, payload, results_dir)
    return payload


TITLE = "The switch update's cost per step"
SUMMARY = "the switch update per step (alone, fused in a scan) and as a fraction of the Alrao step"


def section(result: dict) -> str:
    """This benchmark's section of ``RESULTS.md`` (also what a run alone prints)."""
    rows = result["rows"]
    step = result["alrao_step"]
    lines = [
        "`randlr_jax.alrao.switch_update` (Alrao's posterior over the copies) for `N` copies. **Timed "
        f"regions:** *dispatched*: blocks of {result['calls_per_block']} calls of the jitted update "
        "on its own, then `block_until_ready` (launch overhead included); *in a scan*: "
        f"{result['scan_length']} updates inside one `lax.scan` program, divided by "
        f"{result['scan_length']} (the update's own compute: what it adds when fused into the "
        "training step, as `make_alrao_train_step` does); *Alrao step*: blocks of the whole jitted "
        f"Alrao-SGD step (MLP {tuple(step['widths'])}, batch {step['batch_size']}, 10 classes, `N` "
        f"copies). **Statistic:** median (min) over {rows[0]['repeats']} blocks; fractions from the "
        "same run.",
        "",
        "| N | dispatched (us) | in a scan (us/update) | Alrao step (us) | in-scan / step "
        "| dispatched / step |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['num_copies']} | {r['dispatched_us']:.2f} ({r['dispatched_min_us']:.2f}) "
            f"| {r['in_scan_us']:.3f} ({r['in_scan_min_us']:.3f}) "
            f"| {r['alrao_step_us']:.1f} ({r['alrao_step_min_us']:.1f}) "
            f"| {100 * r['fraction_in_scan']:.2f} % | {100 * r['fraction_dispatched']:.2f} % |"
        )
    return "\n".join(lines)


def headline(result: dict) -> str:
    """The report's one-line summary: the largest fused share of an Alrao step over ``N``."""
    worst = max(result["rows"], key=lambda r: r["fraction_in_scan"])
    return (
        f"Switch update: at most {100 * worst['fraction_in_scan']:.2f} % of an Alrao step "
        f"(N = {worst['num_copies']}, fused cost {worst['in_scan_us']:.2f} us/update)"
    )


def main(argv=None) -> dict:
    return common.size_set_main(__doc__.splitlines()[0], run, section, argv)


if __name__ == "__main__":
    main()
