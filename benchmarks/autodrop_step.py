"""Step time of a base optimizer with and without AutoDrop, averaged over whole epochs.

For each model: one jitted training step of momentum SGD, and one of momentum SGD chained with
``randlr_jax.autodrop`` (one period = one epoch of ``steps_per_epoch`` steps, so every timed block contains
the period-end work once per epoch), both donating their state, timed in interleaved blocks of whole
epochs so that machine noise hits both alike. Inside the timed region: ``epochs * steps_per_epoch`` steps on
one device-resident batch and ``block_until_ready`` on the state. Figures: the ratio of median epoch times
(target <= 1.02), the ratio of the fastest blocks (less sensitive to a loaded machine) and AutoDrop's
extra memory in parameter copies (the optimizer-state bytes it adds over the parameters' bytes).

Size sets: ``accelerator``: the MNIST-1D CNN and ResNet-18 on CIFAR-shaped data, batch 128, blocks of 5
epochs, 5 repeats; ``cpu``: the CNN, blocks of 3 epochs, 5 repeats; ``quick``: the CNN, 1 epoch, 3 repeats.

Run alone::

    .venv/bin/python -m benchmarks.autodrop_step             # the MNIST-1D CNN (CPU default)
    .venv/bin/python -m benchmarks.autodrop_step --gpu       # + ResNet-18 on CIFAR-shaped random data

Prints its report section (``section``: the text ``RESULTS.md`` shows) and writes
``benchmarks/results/autodrop_step_<backend>_custom.json`` (``run_all``: without ``_custom``).
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import numpy as np
import optax

from benchmarks import common
from randlr_jax import autodrop, models
from randlr_jax.training import create_train_state, make_train_step

# model name -> (input shape without batch, steps per epoch of its dataset at batch 128)
SETTINGS = {
    "cnn1d": ((40,), 28),  # MNIST-1D: 3,600 training examples
    "resnet18": ((32, 32, 3), 312),  # CIFAR-10: 40,000 training examples
}
SIZES = {
    "accelerator": {"models": ("cnn1d", "resnet18"), "batch_size": 128, "epochs": 5, "repeats": 5},
    "cpu": {"models": ("cnn1d",), "batch_size": 128, "epochs": 3, "repeats": 5},
    "quick": {"models": ("cnn1d",), "batch_size": 128, "epochs": 1, "repeats": 3},
}


def _epoch_time(step, state, batch, steps: int):
    t0 = time.perf_counter()
    for _ in range(steps):
        state, metrics = step(state, batch)
    jax.block_until_ready((state, metrics))
    return time.perf_counter() - t0, state


def bench(model_name: str, batch_size: int, epochs: int, repeats: int) -> dict:
    shape, steps_per_epoch = SETTINGS[model_name]
    rng = np.random.default_rng(0)
    batch = jax.device_put(
        {
            "x": rng.normal(size=(batch_size, *shape)).astype(np.float32),
            "y": rng.integers(0, 10, size=batch_size).astype(np.int32),
        }
    )
    model = models.make_model(model_name, num_classes=10)
    base = optax.sgd(0.05, momentum=0.9)
    with_autodrop = optax.chain(
        optax.sgd(0.05, momentum=0.9), autodrop(0.05, 0.2, steps_per_period=steps_per_epoch)
    )
    variants = {}
    for name, tx in (("base", base), ("autodrop", with_autodrop)):
        state = create_train_state(model, tx, jax.random.key(0), batch["x"][:1])
        step = jax.jit(make_train_step(model, tx), donate_argnums=0)
        _, state = _epoch_time(step, state, batch, steps_per_epoch)  # compile + one warm-up epoch
        variants[name] = {
            "step": step,
            "state": state,
            "times": [],
            "opt_state_bytes": common.tree_bytes(state.opt_state),
            "param_bytes": common.tree_bytes(state.params),
        }
    for _ in range(repeats):
        for v in variants.values():
            elapsed, v["state"] = _epoch_time(
                v["step"], v["state"], batch, epochs * steps_per_epoch
            )
            v["times"].append(elapsed / (epochs * steps_per_epoch))
    base_time = statistics.median(variants["base"]["times"])
    auto_time = statistics.median(variants["autodrop"]["times"])
    param_bytes = variants["base"]["param_bytes"]
    extra = variants["autodrop"]["opt_state_bytes"] - variants["base"]["opt_state_bytes"]
    return {
        "model": model_name,
        "batch_size": batch_size,
        "steps_per_epoch": steps_per_epoch,
        "epochs_per_block": epochs,
        "repeats": repeats,
        "parameters": param_bytes // 4,
        "base_step_ms": 1e3 * base_time,
        "autodrop_step_ms": 1e3 * auto_time,
        "base_step_min_ms": 1e3 * min(variants["base"]["times"]),
        "autodrop_step_min_ms": 1e3 * min(variants["autodrop"]["times"]),
        "ratio": auto_time / base_time,
        "ratio_of_minima": min(variants["autodrop"]["times"]) / min(variants["base"]["times"]),
        "base_step_ms_all": [1e3 * t for t in variants["base"]["times"]],
        "autodrop_step_ms_all": [1e3 * t for t in variants["autodrop"]["times"]],
        "extra_memory_parameter_copies": extra / param_bytes,
    }


TITLE = "AutoDrop's step-time ratio"
SUMMARY = "AutoDrop's step-time ratio and its extra memory"
_COLUMNS = (
    "| model | batch | steps/epoch | base step {ms} | with AutoDrop {ms} | ratio (medians) "
    "| ratio (minima) | extra memory {copies} |"
)


def _table(rows: list[dict], units: str) -> str:
    """The per-model table; ``units`` the brackets around the units in the header (``"()"`` in the
    report, ``"[]"`` in the README)."""
    opening, closing = units
    lines = [
        _COLUMNS.format(ms=f"{opening}ms{closing}", copies=f"{opening}param. copies{closing}"),
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['batch_size']} | {r['steps_per_epoch']} | {r['base_step_ms']:.3f} "
            f"| {r['autodrop_step_ms']:.3f} | {r['ratio']:.3f} | {r['ratio_of_minima']:.3f} "
            f"| {r['extra_memory_parameter_copies']:.2f} |"
        )
    return "\n".join(lines)


def section(result: dict) -> str:
    """This benchmark's section of ``RESULTS.md`` (also what a run alone prints)."""
    rows = result["rows"]
    return "\n".join(
        [
            "Momentum SGD with and without `randlr_jax.autodrop` chained after it (one AutoDrop "
            "period = one epoch, so each block holds the period-end work once per epoch). **Timed "
            "region:** a block of whole epochs of jitted steps (state donated) on one "
            "device-resident batch, then `block_until_ready`; base and AutoDrop blocks interleaved. "
            "**Statistic:** median (and minimum) per-step time over "
            f"{common.blocks_phrase(rows, 'epochs_per_block', 'epoch(s)')}; ratio AutoDrop / base "
            "(target <= 1.02). Extra memory: the optimizer-state bytes AutoDrop adds, in copies of "
            "the parameters.",
            "",
            _table(rows, "()"),
        ]
    )


def headline(result: dict) -> str:
    """The report's one-line summary: the ratio per model."""
    return "AutoDrop / base step time: " + ", ".join(
        f"{r['model']} {r['ratio']:.3f} (minima {r['ratio_of_minima']:.3f})" for r in result["rows"]
    )


def readme_table(result: dict) -> str:
    """The README's table (AutoDrop's "Benchmark"): the report's table, units in square brackets."""
    return _table(result["rows"], "[]")


def run(sizes: str, results_dir: str | None = None) -> dict:
    """Measure the size set ``sizes`` and write ``autodrop_step_<backend>.json``."""
    config = SIZES[common.check_size_set(sizes)]
    rows = [
        bench(m, config["batch_size"], config["epochs"], config["repeats"])
        for m in config["models"]
    ]
    common.log("autodrop_step: done")
    payload = {"rows": rows}
    payload["path"] = common.write_result("autodrop_step", sizes, payload, results_dir)
    return payload


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gpu", action="store_true", help="also ResNet-18 on CIFAR-shaped data")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=5, help="epochs per timed block")
    parser.add_argument("--repeats", type=int, default=5, help="interleaved blocks per variant")
    args = parser.parse_args(argv)
    model_names = ["cnn1d"] + (["resnet18"] if args.gpu else [])
    rows = [bench(m, args.batch_size, args.epochs, args.repeats) for m in model_names]
    payload = {"rows": rows}
    path = common.write_result("autodrop_step", "custom", payload)
    print(section(payload))
    print(f"results: {path}")
    return rows


if __name__ == "__main__":
    main()
