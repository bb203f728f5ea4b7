"""Shared machinery of the benchmarks: size sets, timing, compiled memory, the environment, results files.

Timing. Every figure is a wall-clock time around work that ends in ``jax.block_until_ready``, after a
warm-up call (compilation excluded). A *block* runs the work ``number`` times and is divided by
``number``; ``repeats`` blocks give the median (the reported figure) and the minimum (the least disturbed
block, for a loaded machine). Variants that are compared with each other are timed in *interleaved* blocks
(A, B, A, B, ...) so that a noisy neighbour hits all of them alike; compare their ratios, not absolute
times across runs.

Memory. :func:`compiled_memory` asks XLA for the compiled program's buffer assignment
(``jax.jit(f).lower(...).compile().memory_analysis()``) and reports
``argument + output + temp - alias`` bytes (donated arguments that become outputs counted once): the
device memory the program needs, known before it runs, on every backend. On a GPU/TPU
:func:`device_peak_bytes` also reads the runtime's ``peak_bytes_in_use`` (the process-wide peak so far);
the CPU runtime reports none.

Size sets (see ``benchmarks/run_all.py``): ``"accelerator"`` (the paper-scale models and batches, on a GPU or
TPU), ``"cpu"`` (reduced sizes so that the whole report takes ~10-15 minutes on 2 cores) and ``"quick"``
(the same code paths at toy sizes; a few minutes, mostly compilation).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax

SIZE_SETS = ("accelerator", "cpu", "quick")
RESULTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def backend() -> str:
    """The default backend's platform name: ``"cpu"``, ``"gpu"`` or ``"tpu"``."""
    return jax.default_backend()


def default_size_set(quick: bool = False) -> str:
    """``"quick"`` when asked, else ``"accelerator"`` on a GPU/TPU and ``"cpu"`` on a CPU."""
    if quick:
        return "quick"
    return "cpu" if backend() == "cpu" else "accelerator"


def check_size_set(sizes: str) -> str:
    if sizes not in SIZE_SETS:
        raise ValueError(f"sizes must be one of {SIZE_SETS}, got {sizes!r}.")
    return sizes


def summarize_times(times: Sequence[float], number: int = 1) -> dict:
    """Median and minimum of per-call times (seconds) of ``len(times)`` blocks of ``number`` calls."""
    times = [float(t) for t in times]
    return {
        "median_s": statistics.median(times),
        "min_s": min(times),
        "repeats": len(times),
        "number": int(number),
        "all_s": times,
    }


def time_call(fn: Callable, *args: Any, repeats: int = 5, number: int = 1) -> dict:
    """Time ``fn(*args)`` (a pure function, e.g. a jitted one): warm-up, then ``repeats`` blocks.

    Inside the timed region: ``number`` calls of ``fn`` and one ``block_until_ready`` on the last output.
    """
    jax.block_until_ready(fn(*args))  # compile and warm up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(number):
            out = fn(*args)
        jax.block_until_ready(out)
        times.append((time.perf_counter() - t0) / number)
    return summarize_times(times, number)


def time_calls_interleaved(
    calls: dict[str, tuple[Callable, tuple]], *, repeats: int = 5, number: int = 1
) -> dict[str, dict]:
    """:func:`time_call` for several pure calls ``name -> (fn, args)``, in interleaved rounds.

    Each is warmed up once; then ``repeats`` rounds time one block of ``number`` calls of each, in turn.
    """
    for fn, args in calls.values():
        jax.block_until_ready(fn(*args))
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(repeats):
        for name, (fn, args) in calls.items():
            t0 = time.perf_counter()
            for _ in range(number):
                out = fn(*args)
            jax.block_until_ready(out)
            times[name].append((time.perf_counter() - t0) / number)
    return {name: summarize_times(t, number) for name, t in times.items()}


def time_steps_interleaved(
    variants: dict[str, tuple[Callable, Any]],
    batch: Any,
    *,
    steps: int,
    repeats: int,
    warmup_steps: int = 1,
    target_block_s: float | None = None,
) -> tuple[dict[str, dict], dict[str, Any]]:
    """Time training steps ``state, metrics = step(state, batch)`` of several variants, interleaved.

    Each variant is warmed up (compiled) with ``warmup_steps`` steps; then ``repeats`` rounds each run one
    block of ``steps`` steps per variant, in turn. Inside the timed region: ``steps`` calls of the step
    (each consuming the previous state, so donated buffers are reused) and ``block_until_ready`` on the
    final state and metrics.

    Args:
      variants: name -> ``(step, state)``; ``step`` is jitted (typically with ``donate_argnums=0``).
      batch: one device-resident batch, reused by every step.
      steps: steps per timed block.
      repeats: blocks per variant.
      warmup_steps: untimed steps before the first block.
      target_block_s: if given, each variant's block holds ``clip(target_block_s / t1, 1, steps)`` steps,
        ``t1`` the time of one untimed step after the warm-up (so cheap variants run long enough blocks
        and expensive ones do not take minutes); otherwise every block holds ``steps`` steps.

    Returns:
      ``(timings, states)``: name -> :func:`summarize_times` dict (per-step seconds, with ``compile_s``:
      the wall time of the warm-up steps, compilation included), and name -> final state.
    """
    states, timings = {}, {name: [] for name in variants}
    compile_s, block_steps = {}, {}
    for name, (step, state) in variants.items():
        t0 = time.perf_counter()
        for _ in range(warmup_steps):
            state, metrics = step(state, batch)
        jax.block_until_ready((state, metrics))
        compile_s[name] = time.perf_counter() - t0
        block_steps[name] = steps
        if target_block_s is not None:
            t0 = time.perf_counter()
            state, metrics = step(state, batch)
            jax.block_until_ready((state, metrics))
            one = max(time.perf_counter() - t0, 1e-9)
            block_steps[name] = int(min(max(round(target_block_s / one), 1), steps))
        states[name] = state
    for _ in range(repeats):
        for name, (step, _) in variants.items():
            state, count = states[name], block_steps[name]
            t0 = time.perf_counter()
            for _ in range(count):
                state, metrics = step(state, batch)
            jax.block_until_ready((state, metrics))
            timings[name].append((time.perf_counter() - t0) / count)
            states[name] = state
    out = {}
    for name, times in timings.items():
        out[name] = {**summarize_times(times, block_steps[name]), "compile_s": compile_s[name]}
    return out, states


def memory_of(compiled: Any) -> dict | None:
    """The memory analysis of a compiled program (``jax.stages.Compiled``), ``None`` if unavailable.

    Returns ``{"argument_bytes", "output_bytes", "alias_bytes", "temp_bytes", "total_bytes", "xla_peak_bytes"}``
    with ``total_bytes = argument + output + temp - alias``.
    """
    analysis = compiled.memory_analysis()
    if analysis is None:
        return None
    argument = int(analysis.argument_size_in_bytes)
    output = int(analysis.output_size_in_bytes)
    alias = int(analysis.alias_size_in_bytes)
    temp = int(analysis.temp_size_in_bytes)
    return {
        "argument_bytes": argument,
        "output_bytes": output,
        "alias_bytes": alias,
        "temp_bytes": temp,
        "total_bytes": argument + output + temp - alias,
        "xla_peak_bytes": int(getattr(analysis, "peak_memory_in_bytes", 0) or 0) or None,
    }


def compile_ahead(
    fn: Callable, *args: Any, donate_argnums: Sequence[int] = ()
) -> tuple[Callable, dict | None, float]:
    """``jax.jit(fn).lower(*args).compile()``: the compiled program, its :func:`memory_of`, compile seconds.

    One compilation serves both the timing (call the returned program with arguments of the same shapes)
    and the memory figure.
    """
    t0 = time.perf_counter()
    compiled = jax.jit(fn, donate_argnums=tuple(donate_argnums)).lower(*args).compile()
    return compiled, memory_of(compiled), time.perf_counter() - t0


def compiled_memory(fn: Callable, *args: Any, donate_argnums: Sequence[int] = ()) -> dict | None:
    """:func:`memory_of` the program ``jax.jit(fn)`` compiles for ``args``."""
    return compile_ahead(fn, *args, donate_argnums=donate_argnums)[1]


def device_peak_bytes() -> int | None:
    """The runtime's ``peak_bytes_in_use`` of the first device (process-wide), ``None`` on CPU."""
    stats = jax.devices()[0].memory_stats()
    if not stats:
        return None
    peak = stats.get("peak_bytes_in_use")
    return None if peak is None else int(peak)


def tree_bytes(tree: Any) -> int:
    return sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(tree))


# MNIST-1D's default configuration: 4,000 training and 1,000 test examples of 40 floats, 10 classes.
MNIST1D_SHAPES = {"train": 4000, "test": 1000, "features": 40, "classes": 10}


def mnist1d_splits(validation_size: int, seed: int = 0) -> tuple[dict, str]:
    """MNIST-1D's train / validation / test splits, or random arrays of the same shapes.

    ``randlr_jax.data.train_val_test("mnist1d", ...)`` where the ``data`` extra (TensorFlow Datasets,
    the ``mnist1d`` package) is installed; otherwise (an accelerator host without it) standard-normal
    float32 inputs ``(n, 40)`` and uniform int32 labels in ``[0, 10)``, the validation set carved from
    the 4,000 training examples by the same seeded permutation. Timings depend on the shapes only,
    so either serves a benchmark; the second item says which one it got (``"mnist1d"`` or
    ``"synthetic"``) for the results file.
    """
    try:
        from randlr_jax import data

        return data.train_val_test("mnist1d", validation_size=validation_size, seed=seed), "mnist1d"
    except ImportError:
        pass
    import numpy as np

    if not 0 <= validation_size < MNIST1D_SHAPES["train"]:
        raise ValueError(
            f"validation_size must be in [0, {MNIST1D_SHAPES['train']}), got {validation_size!r}."
        )
    rng = np.random.default_rng(seed)

    def split(n: int) -> dict:
        return {
            "x": rng.normal(size=(n, MNIST1D_SHAPES["features"])).astype(np.float32),
            "y": rng.integers(0, MNIST1D_SHAPES["classes"], size=n).astype(np.int32),
        }

    train, test = split(MNIST1D_SHAPES["train"]), split(MNIST1D_SHAPES["test"])
    order = np.random.default_rng(seed).permutation(MNIST1D_SHAPES["train"])
    held, kept = np.sort(order[:validation_size]), np.sort(order[validation_size:])
    splits = {
        "train": {k: v[kept] for k, v in train.items()},
        "validation": {k: v[held] for k, v in train.items()},
        "test": test,
    }
    return splits, "synthetic"


def _version(name: str) -> str | None:
    try:
        from importlib.metadata import version

        return version(name)
    except Exception:  # noqa: BLE001 - a missing package is reported as None
        return None


def load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def environment() -> dict:
    """The device, software and host facts every results file and the report's header carry."""
    devices = jax.devices()
    return {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "backend": backend(),
        "device_kind": devices[0].device_kind,
        "device_count": len(devices),
        "process_count": jax.process_count(),
        "python": platform.python_version(),
        "jax": jax.__version__,
        "jaxlib": _version("jaxlib"),
        "flax": _version("flax"),
        "optax": _version("optax"),
        "numpy": _version("numpy"),
        "cpu_count": os.cpu_count(),
        "host": platform.processor() or platform.machine(),
        "load_average": load_average(),
        "command": command_line(),
    }


def command_line() -> str:
    """The command that started this process, as typed from the repository root."""
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    args = sys.argv[1:]
    if spec is not None and spec.name:
        return " ".join(["python", "-m", spec.name.removesuffix(".__main__"), *args])
    return " ".join(["python", *sys.argv])


def results_path(
    name: str,
    results_dir: str | None = None,
    sizes: str | None = None,
    backend_name: str | None = None,
) -> str:
    """``<results_dir>/<name>_<backend>.json`` (default ``benchmarks/results``).

    Runs of a single script with sizes given on its command line (``sizes="custom"``) go to
    ``<name>_<backend>_custom.json``, so they never replace the report's inputs. ``backend_name``:
    another backend's file (the report reads a GPU run's files next to the CPU ones); default: this
    process's backend.
    """
    suffix = "_custom" if sizes == "custom" else ""
    platform_name = backend_name or backend()
    return os.path.join(results_dir or RESULTS_DIR, f"{name}_{platform_name}{suffix}.json")


def write_result(name: str, sizes: str, payload: dict, results_dir: str | None = None) -> str:
    """Write one benchmark's results with the environment and the size set; returns the path."""
    path = results_path(name, results_dir, sizes)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    record = {"benchmark": name, "sizes": sizes, "environment": environment(), **payload}
    record["path"] = os.path.relpath(path)
    with open(path, "w") as f:
        json.dump(record, f, indent=2)
    return path


def describe_measurement(payload: dict) -> str:
    """The line under a report section: when, with which size set, on what, from which file.

    Reads only the envelope :func:`write_result` puts around every benchmark's payload.
    """
    env = payload.get("environment", {})
    return (
        f"Measured {env.get('date', '?')} with the `{payload.get('sizes', '?')}` size set "
        f"({env.get('device_kind', '?')}, load average {env.get('load_average')}); "
        f"results file `{payload.get('path', '?')}`."
    )


# ------------------------------------------------------------------------------------------------
# Number formats shared by the benchmarks' sections.


def ms(seconds: float) -> str:
    """Seconds as milliseconds with 3 decimals."""
    return f"{1e3 * seconds:.3f}"


def mib(num_bytes: float | None) -> str:
    """Bytes as MiB with 2 decimals (``n/a`` when the backend gave no figure)."""
    return "n/a" if num_bytes is None else f"{num_bytes / 2**20:.2f}"


def fixed(value: float | None, digits: int = 3) -> str:
    """``value`` with ``digits`` decimals (``n/a`` for a missing value)."""
    return "n/a" if value is None else f"{value:.{digits}f}"


def blocks_phrase(rows: Sequence[dict], count_key: str, unit: str) -> str:
    """``"7 blocks of 50 steps"`` when every row shares its repeats and block length, else one
    such phrase per distinct pair (a single script may time its models with different blocks)."""
    pairs = sorted({(r["repeats"], r[count_key]) for r in rows})
    return " / ".join(f"{repeats} blocks of {count} {unit}" for repeats, count in pairs)


def log(message: str) -> None:
    """Progress on stderr (the benchmarks' stdout carries their tables)."""
    print(message, file=sys.stderr, flush=True)


def size_set_main(
    description: str,
    run: Callable[[str, str | None], dict],
    section: Callable[[dict], str],
    argv: Sequence[str] | None,
) -> dict:
    """The command line of a benchmark that measures one size set: ``--sizes``, then print its section.

    ``section`` is the benchmark's own renderer (its module's ``section``), the one
    :mod:`benchmarks.report` calls for ``RESULTS.md``: a run alone prints exactly the report's
    section. A ``quick`` run writes under ``runs/bench_quick/results`` (as ``run_all --quick``), never
    over the report's inputs.
    """
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--sizes", choices=SIZE_SETS, default=default_size_set())
    args = parser.parse_args(argv)
    results_dir = os.path.join("runs", "bench_quick", "results") if args.sizes == "quick" else None
    payload = run(args.sizes, results_dir)
    print(section(payload))
    return payload
