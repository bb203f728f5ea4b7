"""Cost of the LR range test: one compilation with a traced rate, against re-jitting per rate.

``randlr_jax.cyclical.lr_range_test`` compiles one step that takes the rate as an argument. The naive
alternative closes over each rate (``jax.jit(step_with(optax.sgd(lr)))``), so every one of the
``num_iter`` rates compiles a new program. For the MNIST-1D MLP and CNN on random batches, this measures
the whole range test (wall time, compilations counted by tracing the loss) and the naive loop on its
first ``--naive-iters`` rates (wall time per step, extrapolated to ``num_iter``).

Run::

    .venv/bin/python -m benchmarks.range_test

Size sets (``run(sizes)``, used by ``benchmarks.run_all``): ``accelerator``: 200 rates, the re-jit loop on
its first 10; ``cpu``: 100 and 5; ``quick``: the MLP only, 10 and 2; batch 128. Each side runs once
(its wall time is a sum over many steps, compilation included: that is the point of the comparison).

Prints its report section (``section``: the text ``RESULTS.md`` shows) and writes
``benchmarks/results/range_test_<backend>_custom.json`` (``run_all``: without ``_custom``).
"""

from __future__ import annotations

import argparse
import time

import jax
import numpy as np
import optax

from benchmarks import common
from randlr_jax.cyclical import _range_test as rt
from randlr_jax.models import make_model

MODELS = {"mlp": {"widths": (100, 100)}, "cnn1d": {}}
SIZES = {
    "accelerator": {
        "models": ("mlp", "cnn1d"),
        "num_iter": 200,
        "naive_iters": 10,
        "batch_size": 128,
    },
    "cpu": {"models": ("mlp", "cnn1d"), "num_iter": 100, "naive_iters": 5, "batch_size": 128},
    "quick": {"models": ("mlp",), "num_iter": 10, "naive_iters": 2, "batch_size": 128},
}


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


TITLE = "LR range test: one compilation against re-jitting per rate"
SUMMARY = "the LR range test's one compilation against re-jitting per rate"
_COLUMNS = (
    "| model | steps | compilations (traced rate) | wall s (traced rate) "
    "| compilations (re-jit per rate) | wall s (re-jit, extrapolated) |"
)


def _table(rows: list[dict], with_ratio: bool) -> str:
    """One row per model; ``with_ratio`` adds the column re-jit / traced (the report has it, the
    README does not)."""
    lines = [
        _COLUMNS + (" re-jit / traced |" if with_ratio else ""),
        "|---|---:|---:|---:|---:|---:|" + ("---:|" if with_ratio else ""),
    ]
    for r in rows:
        line = (
            f"| {r['model']} | {r['steps_run']} | {r['traced_compilations']} "
            f"| {r['traced_wall_s']:.2f} | {r['naive_compilations']} per "
            f"{r['naive_iters_measured']} | {r['naive_wall_s_extrapolated']:.1f} |"
        )
        if with_ratio:
            line += f" {r['naive_wall_s_extrapolated'] / r['traced_wall_s']:.1f} |"
        lines.append(line)
    return "\n".join(lines)


def section(result: dict) -> str:
    """This benchmark's section of ``RESULTS.md`` (also what a run alone prints)."""
    return "\n".join(
        [
            "`randlr_jax.lr_range_test` (one compiled step with the rate as a traced argument) "
            "against re-jitting a step per rate (`jax.jit` of a step closing over "
            "`optax.sgd(rate)`). **Timed region:** the whole range test (compilation included), and "
            "the re-jit loop over its first rates, extrapolated to all of them. **Statistic:** one "
            "run of each; compilations counted by tracing the loss.",
            "",
            _table(result["rows"], with_ratio=True),
        ]
    )


def headline(result: dict) -> str:
    """The report's one-line summary: how many times slower re-jitting is, per model."""
    return (
        "Range test: re-jitting per rate "
        + ", ".join(
            f"{r['model']} {r['naive_wall_s_extrapolated'] / r['traced_wall_s']:.0f}x"
            for r in result["rows"]
        )
        + " slower than one traced-rate compilation"
    )


def readme_table(result: dict) -> str:
    """The README's table (the range test's "Benchmark"): the report's table without the ratio."""
    return _table(result["rows"], with_ratio=False)


def run(sizes: str, results_dir: str | None = None) -> dict:
    """Measure the size set ``sizes`` and write ``range_test_<backend>.json``."""
    config = SIZES[common.check_size_set(sizes)]
    rows = [
        measure(name, config["num_iter"], config["naive_iters"], config["batch_size"])
        for name in config["models"]
    ]
    common.log("range_test: done")
    payload = {"rows": rows}
    payload["path"] = common.write_result("range_test", sizes, payload, results_dir)
    return payload


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-iter", type=int, default=200)
    parser.add_argument("--naive-iters", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=128)
    args = parser.parse_args(argv)
    rows = [measure(name, args.num_iter, args.naive_iters, args.batch_size) for name in MODELS]
    payload = {"rows": rows}
    path = common.write_result("range_test", "custom", payload)
    print(section(payload))
    print(f"results: {path}")
    return rows


if __name__ == "__main__":
    main()
