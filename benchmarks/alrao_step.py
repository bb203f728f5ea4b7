"""Step time of Alrao-SGD against plain SGD on the same model and batch.

For each model and batch size: one jitted training step of plain ``optax.sgd`` (Dense classifier head) and one
jitted Alrao-SGD step (10 classifier copies, per-feature rates, switch update), both donating their state,
timed in interleaved blocks so that machine noise hits both alike (``benchmarks.common``); the figure is the
ratio of median step times (the ratio of the fastest blocks is kept too). Target on a GPU: ratio <= 1.03 for
every CIFAR model.

Size sets (``run(sizes)``, used by ``benchmarks.run_all``):

* ``accelerator``: VGG19, MobileNetV2, GoogLeNet on CIFAR-shaped random batches of 32 and 128, blocks of 20
  steps, 5 repeats;
* ``cpu``: the MNIST-1D MLP (100-100) and CNN at batch 32 and 128, blocks of 50 steps, 7 repeats;
* ``quick``: the MLP only, blocks of 10 steps, 3 repeats.

Run alone::

    .venv/bin/python -m benchmarks.alrao_step               # GPU defaults: batch 32 and 128, all models
    .venv/bin/python -m benchmarks.alrao_step --cpu-small   # CIFAR models on this CPU: batch 8 and 32

Prints its report section (``section``: the text ``RESULTS.md`` shows) and writes
``benchmarks/results/alrao_step_<backend>_custom.json`` (``run_all``: without ``_custom``).
"""

from __future__ import annotations

import argparse

import jax
import numpy as np
import optax

import randlr_jax
from benchmarks import common
from randlr_jax import models
from randlr_jax.alrao import make_alrao_train_step
from randlr_jax.training import create_train_state, make_train_step

CIFAR_MODELS = ("vgg19", "mobilenetv2", "googlenet")
MNIST1D_MODELS = ("mlp", "cnn1d")
MODEL_KWARGS = {"mlp": {"widths": (100, 100)}}

SIZES = {
    "accelerator": {"models": CIFAR_MODELS, "batch_sizes": (32, 128), "steps": 20, "repeats": 5},
    "cpu": {"models": MNIST1D_MODELS, "batch_sizes": (32, 128), "steps": 50, "repeats": 7},
    "quick": {"models": ("mlp",), "batch_sizes": (32, 128), "steps": 10, "repeats": 3},
}


def input_shape(model_name: str) -> tuple[int, ...]:
    return (40,) if model_name in MNIST1D_MODELS else (32, 32, 3)


def random_batch(model_name: str, batch_size: int, num_classes: int = 10, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    return {
        "x": rng.normal(size=(batch_size, *input_shape(model_name))).astype(np.float32),
        "y": rng.integers(0, num_classes, size=batch_size).astype(np.int32),
    }


def make_variants(
    model_name: str, num_copies: int, batch: dict, which: tuple[str, ...] = ("plain", "alrao")
) -> dict:
    """``{"plain": (jitted step, state), "alrao": (...)}`` for one model, both donating their state."""
    kwargs = MODEL_KWARGS.get(model_name, {})
    plain_model = models.make_model(model_name, num_classes=10, **kwargs)
    head = randlr_jax.AlraoHead(num_outputs=10, num_copies=num_copies)
    alrao_model = models.make_model(model_name, head=head, **kwargs)
    plain_tx = optax.sgd(0.01)
    alrao_tx = randlr_jax.alrao_sgd(jax.random.key(1), 1e-5, 10.0, num_copies)
    variants = {}
    for name, model, tx, step_fn in (
        ("plain", plain_model, plain_tx, make_train_step(plain_model, plain_tx)),
        ("alrao", alrao_model, alrao_tx, make_alrao_train_step(alrao_model, alrao_tx)),
    ):
        if name not in which:
            continue
        state = create_train_state(model, tx, jax.random.key(0), batch["x"][:1])
        variants[name] = (jax.jit(step_fn, donate_argnums=0), state)
    return variants


def measure(model_name: str, batch_size: int, steps: int, repeats: int, num_copies: int) -> dict:
    """One row: plain and Alrao step times (median and min, ms), their ratios, parameter counts."""
    batch = jax.device_put(random_batch(model_name, batch_size))
    variants = make_variants(model_name, num_copies, batch)
    params = {name: models.count_params(state.params) for name, (_, state) in variants.items()}
    timings, _ = common.time_steps_interleaved(variants, batch, steps=steps, repeats=repeats)
    plain, alrao = timings["plain"], timings["alrao"]
    return {
        "model": model_name,
        "batch_size": batch_size,
        "steps_per_block": steps,
        "repeats": repeats,
        "plain_step_ms": 1e3 * plain["median_s"],
        "alrao_step_ms": 1e3 * alrao["median_s"],
        "plain_step_min_ms": 1e3 * plain["min_s"],
        "alrao_step_min_ms": 1e3 * alrao["min_s"],
        "ratio": alrao["median_s"] / plain["median_s"],
        "ratio_of_minima": alrao["min_s"] / plain["min_s"],
        "plain_params": params["plain"],
        "alrao_params": params["alrao"],
        "compile_s": [plain["compile_s"], alrao["compile_s"]],
    }


TITLE = "Alrao step time against plain SGD"
SUMMARY = "Alrao-SGD step / plain SGD step, per model and batch size"
# How the README names the models in its table of this benchmark.
MODEL_NAMES = {
    "mlp": "MNIST-1D MLP 100-100",
    "cnn1d": "MNIST-1D CNN",
    "vgg19": "VGG19",
    "mobilenetv2": "MobileNetV2",
    "googlenet": "GoogLeNet",
}


def section(result: dict) -> str:
    """This benchmark's section of ``RESULTS.md`` (also what a run alone prints)."""
    rows = result["rows"]
    lines = [
        "One jitted Alrao-SGD training step (the model with an `AlraoHead` of "
        f"{result['num_copies']} copies, per-feature rates, both gradients, both updates and the switch "
        "update) against one plain `optax.sgd` step of the same model (Dense head), same random batch. "
        "**Timed region:** a block of consecutive steps (state donated, each step consumes the previous "
        "state) ending in `block_until_ready`; plain and Alrao blocks interleaved. "
        "**Statistic:** median (and minimum) per-step time over "
        f"{common.blocks_phrase(rows, 'steps_per_block', 'steps')}; the ratio is Alrao / plain from "
        "the same run. The GPU target (ratio <= 1.03 for the CIFAR models) applies to the accelerator "
        "size set.",
        "",
        "| model | batch | plain step (ms) | Alrao step (ms) | ratio (medians) | ratio (minima) "
        "| params plain | params Alrao |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['batch_size']} | {r['plain_step_ms']:.3f} | {r['alrao_step_ms']:.3f} "
            f"| {r['ratio']:.3f} | {r['ratio_of_minima']:.3f} | {r['plain_params']:,} "
            f"| {r['alrao_params']:,} |"
        )
    return "\n".join(lines)


def headline(result: dict) -> str:
    """The report's one-line summary: the ratio per model and batch."""
    return "Alrao / plain SGD step time: " + ", ".join(
        f"{r['model']} b{r['batch_size']} {r['ratio']:.2f}" for r in result["rows"]
    )


def readme_table(result: dict) -> str:
    """The README's table ("Alrao step cost"): models by name, step times, ratio of medians.

    Reads only the fields every version of this benchmark wrote (``model``, ``batch_size``,
    ``plain_step_ms``, ``alrao_step_ms``, ``ratio``, the parameter counts), so it renders the
    ``alrao_step_<backend>_custom.json`` a run alone writes.
    """
    lines = [
        "| model | batch | plain SGD step (ms) | Alrao-SGD step (ms) | ratio | params plain "
        "| params Alrao |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in result["rows"]:
        lines.append(
            f"| {MODEL_NAMES.get(r['model'], r['model'])} | {r['batch_size']} "
            f"| {r['plain_step_ms']:.2f} | {r['alrao_step_ms']:.2f} | {r['ratio']:.3f} "
            f"| {r['plain_params']:,} | {r['alrao_params']:,} |"
        )
    return "\n".join(lines)


def run(sizes: str, results_dir: str | None = None, num_copies: int = 10) -> dict:
    """Measure the size set ``sizes`` and write ``alrao_step_<backend>.json``; returns the payload."""
    config = SIZES[common.check_size_set(sizes)]
    rows = []
    for model_name in config["models"]:
        for batch_size in config["batch_sizes"]:
            rows.append(
                measure(model_name, batch_size, config["steps"], config["repeats"], num_copies)
            )
            common.log(f"alrao_step {model_name} batch {batch_size}: ratio {rows[-1]['ratio']:.3f}")
    payload = {"num_copies": num_copies, "rows": rows}
    payload["path"] = common.write_result("alrao_step", sizes, payload, results_dir)
    return payload


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
    args = parser.parse_args(argv)
    rows = []
    for model_name in args.models:
        batch_sizes, steps, repeats = args.batch_sizes, args.steps, args.repeats
        if args.cpu_small and model_name not in MNIST1D_MODELS:
            batch_sizes, steps, repeats = [8, 32], 3, 3
        for batch_size in batch_sizes:
            rows.append(measure(model_name, batch_size, steps, repeats, args.num_copies))
            common.log(f"{model_name} batch {batch_size}: ratio {rows[-1]['ratio']:.3f}")
    payload = {"num_copies": args.num_copies, "rows": rows}
    path = common.write_result("alrao_step", "custom", payload)
    print(section(payload))
    print(f"\nwrote {path}")
    return rows


if __name__ == "__main__":
    main()
