"""A learning-rate grid as one vmapped population against the same grid run one rate at a time.

The baseline of Alrao's Table 1 is SGD at every rate of a grid. ``randlr_jax.fit_population`` trains the
``G`` rates as one ``jax.vmap``-ed program (one compilation, the rate a traced value in each member's
optimizer state); the sequential alternative calls ``randlr_jax.training.fit`` once per rate
(``optax.sgd(rate)``: one compilation per rate). Both on the MNIST-1D MLP (100-100), batch 128, the same
epochs, no early stopping (every member trains every epoch), one device, evaluation of the validation and
test splits after every epoch, checkpoints (a temporary directory) as in real use.

Timed region: the whole call (``fit_population`` once; the ``G`` ``fit`` calls back to back), so
compilation, evaluation, checkpointing and plotting are included: what a user waits for. Each side runs
once (a whole training run is its own average over many steps); the figure is the ratio
``sequential / population`` of wall times, and member-steps per second
(``G * epochs * steps_per_epoch / wall``).

Size sets: ``accelerator``: ``G = 7`` rates ``1e-5 .. 10``, 10 epochs; ``cpu``: ``G = 7``, 3 epochs;
``quick``: ``G = 2``, 1 epoch.

Run alone: ``.venv/bin/python -m benchmarks.lr_grid [--sizes cpu]``; writes
``benchmarks/results/lr_grid_<backend>.json``.
"""

from __future__ import annotations

import tempfile
import time

import numpy as np
import optax

from benchmarks import common
from randlr_jax import models
from randlr_jax.training import LoopConfig, fit
from randlr_jax.training._batching import num_batches
from randlr_jax.training._population import fit_population

SIZES = {
    "accelerator": {"num_rates": 7, "epochs": 10, "batch_size": 128},
    "cpu": {"num_rates": 7, "epochs": 3, "batch_size": 128},
    "quick": {"num_rates": 2, "epochs": 1, "batch_size": 128},
}


def grid(num_rates: int) -> list[float]:
    """``num_rates`` rates log-spaced over ``[1e-5, 10]`` (7 rates: the paper's ``{1e-5, ..., 10}``)."""
    return np.logspace(-5, 1, num_rates).tolist()


def measure(config: dict) -> dict:
    splits, _ = common.mnist1d_splits(validation_size=500, seed=0)  # random arrays without it
    model = models.make_model("mlp", num_classes=10, widths=(100, 100))
    loop = LoopConfig(
        epochs=config["epochs"],
        batch_size=config["batch_size"],
        patience=None,
        num_devices=1,
        progress=False,
    )
    rates = grid(config["num_rates"])
    steps_per_epoch = num_batches(len(splits["train"]["y"]), loop.batch_size, True)
    member_steps = len(rates) * loop.epochs * steps_per_epoch
    with tempfile.TemporaryDirectory() as workdir:
        t0 = time.perf_counter()
        population = fit_population(model, rates, splits, loop, f"{workdir}/population")
        population_wall = time.perf_counter() - t0
        t0 = time.perf_counter()
        sequential = [
            fit(model, optax.sgd(rate), splits, loop, f"{workdir}/rate_{k}")
            for k, rate in enumerate(rates)
        ]
        sequential_wall = time.perf_counter() - t0
    population_losses = [m.get("best_validation_loss") for m in population.members]
    sequential_losses = [r.summary.get("best_validation_loss") for r in sequential]
    return {
        "model": "mlp",
        "widths": [100, 100],
        "learning_rates": rates,
        "epochs": loop.epochs,
        "batch_size": loop.batch_size,
        "steps_per_epoch": steps_per_epoch,
        "population_wall_s": population_wall,
        "sequential_wall_s": sequential_wall,
        "sequential_wall_s_per_rate": [r.summary["wall_time_s"] for r in sequential],
        "ratio_sequential_to_population": sequential_wall / population_wall,
        "population_member_steps_per_s": member_steps / population_wall,
        "sequential_member_steps_per_s": member_steps / sequential_wall,
        "population_best_validation_loss": population_losses,
        "sequential_best_validation_loss": sequential_losses,
        "max_abs_validation_loss_difference": _max_abs_difference(
            population_losses, sequential_losses
        ),
    }


def _max_abs_difference(a: list, b: list) -> float | None:
    pairs = [(x, y) for x, y in zip(a, b, strict=True) if x is not None and y is not None]
    finite = [abs(x - y) for x, y in pairs if np.isfinite(x) and np.isfinite(y)]
    return max(finite) if finite else None


def run(sizes: str, results_dir: str | None = None) -> dict:
    """Measure the size set ``sizes`` and write ``lr_grid_<backend>.json``."""
    config = SIZES[common.check_size_set(sizes)]
    payload = {"rows": [measure(config)]}
    common.log("lr_grid: done")
    payload["path"] = common.write_result("lr_grid", sizes, payload, results_dir)
    return payload


TITLE = "The vmapped learning-rate grid against sequential runs"
SUMMARY = (
    "the vmapped learning-rate grid (`fit_population`) against the same rates as sequential "
    "`fit` runs"
)


def section(result: dict) -> str:
    """This benchmark's section of ``RESULTS.md`` (also what a run alone prints)."""
    lines = [
        "The SGD learning-rate grid as one vmapped population (`randlr_jax.fit_population`: one "
        "compiled program, the rate a traced per-member value) against the same rates trained one "
        "after another (`randlr_jax.training.fit` with `optax.sgd(rate)`, one compilation per rate). "
        "MNIST-1D MLP (100, 100), no early stopping, one device, validation and test evaluated every "
        "epoch, checkpoints written as in real use. **Timed region:** the whole call(s): "
        "compilation, training, evaluation, checkpointing, plotting. **Statistic:** one run of each "
        "(a whole training run); ratio sequential / population from the same run.",
        "",
        "| rates G | epochs | steps/epoch | population (s) | sequential (s) | sequential / population "
        "| member-steps/s population | member-steps/s sequential | max abs. diff. best val. loss |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in result["rows"]:
        diff = r["max_abs_validation_loss_difference"]
        lines.append(
            f"| {len(r['learning_rates'])} | {r['epochs']} | {r['steps_per_epoch']} "
            f"| {r['population_wall_s']:.2f} | {r['sequential_wall_s']:.2f} "
            f"| {r['ratio_sequential_to_population']:.2f} "
            f"| {r['population_member_steps_per_s']:.0f} | {r['sequential_member_steps_per_s']:.0f} "
            f"| {'n/a' if diff is None else f'{diff:.1e}'} |"
        )
    lines += [
        "",
        "The last column checks that member `k` of the population reproduces the single run at rate "
        "`k` (best validation loss over the finite members).",
    ]
    return "\n".join(lines)


def headline(result: dict) -> str:
    """The report's one-line summary: how much faster the population is than sequential fits."""
    r = result["rows"][0]
    return (
        f"LR grid of {len(r['learning_rates'])} rates: vmapped population "
        f"{r['ratio_sequential_to_population']:.1f}x faster than sequential fits "
        f"({r['population_wall_s']:.1f} s vs {r['sequential_wall_s']:.1f} s)"
    )


def main(argv=None) -> dict:
    return common.size_set_main(__doc__.splitlines()[0], run, section, argv)


if __name__ == "__main__":
    main()
