"""Assemble ``RESULTS.md``: the header of the run, then every benchmark's own section, in order.

This module knows no benchmark's results: each benchmark module owns its section. A benchmark module
``benchmarks.<name>`` provides

* ``TITLE``: its section's heading, ``SUMMARY``: one line on what it measures;
* ``section(result) -> str``: the section's body (what is timed, the repeats, the statistic, the
  tables), rendered from its own results file ``benchmarks/results/<name>_<backend>.json``; a run of
  the benchmark alone prints the same text;
* ``headline(result) -> str | None``: its line of the report's headlines.

The report reads only the envelope :func:`benchmarks.common.write_result` puts around every payload
(``environment``, ``sizes``, ``path``) and the *run record* ``results/run_all_<backend>.json`` that
``run_all`` writes: the environment of the run that measured (date, load averages, command, wall
time), its size set, which benchmarks it ran and which failed. So ``python -m benchmarks.run_all
--report-only`` re-renders ``RESULTS.md`` from the results files alone, identically.
"""

from __future__ import annotations

import json
import os
import re
from types import ModuleType

from benchmarks import (
    alrao_copies,
    alrao_step,
    autodrop_step,
    common,
    input_pipeline,
    loop_engine,
    lr_grid,
    noh,
    range_test,
    switch_update,
)

# The report's sections, in order.
BENCHMARKS: dict[str, ModuleType] = {
    "alrao_step": alrao_step,
    "alrao_copies": alrao_copies,
    "switch_update": switch_update,
    "autodrop_step": autodrop_step,
    "noh": noh,
    "lr_grid": lr_grid,
    "input_pipeline": input_pipeline,
    "range_test": range_test,
    "loop_engine": loop_engine,
}
RUN_RECORD = "run_all"
# The backends whose results can sit side by side in one results directory (``<name>_<backend>.json``).
BACKENDS = ("cpu", "gpu", "tpu")
SIZE_NOTES = {
    "accelerator": "full sizes (the paper-scale models and batches)",
    "cpu": "**reduced CPU sizes** (small models and batches; see each section)",
    "quick": "**quick smoke sizes** (toy sizes: the code paths run, the figures mean little)",
    "custom": "sizes given on the command line of the single script",
    "device_check": "the accelerator models and batches, some sections with fewer epochs, unrolls "
    "or repeats so that the whole check fits a few minutes of a lent accelerator "
    "(`benchmarks/device_check.sh`; each section states its blocks)",
}


# ------------------------------------------------------------------------------------------------
# Results files and the run record.


def load_results(
    names, results_dir: str | None = None, backend: str | None = None
) -> dict[str, dict]:
    """The results files of ``backend`` (default: this process's) that exist and carry the current
    envelope."""
    out = {}
    for name in names:
        path = common.results_path(name, results_dir, backend_name=backend)
        if not os.path.exists(path):
            continue
        with open(path) as f:
            payload = json.load(f)
        if "environment" in payload:  # files of the older single scripts lack it
            out[name] = payload
    return out


def write_run_record(
    environment: dict,
    sizes: str,
    ran: list[str],
    failures: dict[str, str],
    results_dir: str | None = None,
) -> str:
    """Write ``<results_dir>/run_all_<backend>.json``: what the report's header and notes need."""
    path = common.results_path(RUN_RECORD, results_dir)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    record = {"environment": environment, "sizes": sizes, "ran": ran, "failures": failures}
    with open(path, "w") as f:
        json.dump(record, f, indent=2)
    return path


def load_run_record(results_dir: str | None = None, backend: str | None = None) -> dict | None:
    """The run record of ``backend`` (default: this process's), ``None`` if no run wrote one."""
    path = common.results_path(RUN_RECORD, results_dir, backend_name=backend)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


# ------------------------------------------------------------------------------------------------
# The report.


def headlines(results: dict[str, dict]) -> list[str]:
    """One line per benchmark with its key figure, in report order (each module's ``headline``)."""
    lines = [BENCHMARKS[name].headline(results[name]) for name in BENCHMARKS if name in results]
    return [line for line in lines if line]


def headlines_markdown(results: dict[str, dict]) -> str:
    """The report's headlines as a markdown list (what the README quotes under "Benchmark report")."""
    return "\n".join(f"- {line}" for line in headlines(results))


def readme_sections_table() -> str:
    """The README's table of the report's sections: name and what it measures (each ``SUMMARY``)."""
    lines = ["| section | what |", "|---|---|"]
    lines += [f"| `{name}` | {module.SUMMARY} |" for name, module in BENCHMARKS.items()]
    return "\n".join(lines)


def _header(env: dict, sizes: str) -> list[str]:
    if env["backend"] == "cpu":
        lines = [
            f"> **Run on CPU with reduced sizes** (size set `{sizes}`: {SIZE_NOTES.get(sizes, sizes)}). "
            "No GPU or TPU was available to this run, so the paper-scale settings (VGG19, "
            "MobileNetV2, GoogLeNet at batch 32 and 128, ResNet-18, longer NOH unrolls) were not "
            "measured: run `python -m benchmarks.run_all` on an accelerator for them. CPU timings "
            "carry the noise of the machine: compare the ratios (measured in the same run), not "
            "absolute times.",
            "",
        ]
    else:
        lines = [f"> Size set `{sizes}`: {SIZE_NOTES.get(sizes, sizes)}.", ""]
    lines += [
        "| | |",
        "|---|---|",
        f"| date | {env['date']} |",
        f"| device | {env['device_count']} x {env['device_kind']} ({env['backend']}), "
        f"{env['process_count']} process(es) |",
        f"| host | {env['cpu_count']} CPU cores ({env['host']}); load average at start "
        f"{env['load_average']}, at end {env.get('load_average_end')} (1, 5, 15 min) |",
        f"| software | Python {env['python']}, jax {env['jax']}, jaxlib {env['jaxlib']}, "
        f"flax {env['flax']}, optax {env['optax']}, numpy {env['numpy']} |",
        f"| command | `{env['command']}` |",
        f"| wall time | {env.get('wall_time_s', float('nan')):.0f} s |",
        "",
    ]
    for note in ("shared_machine_note", "data_note"):
        if env.get(note):
            lines += [env[note], ""]
    lines += [
        "**Conventions.** Every time is wall-clock around work ending in `jax.block_until_ready`, "
        "after a warm-up call (compilation excluded unless a section says otherwise). A *block* runs "
        "the work several times and is divided by their number; the figure is the **median** over "
        "the blocks, the minimum (the least disturbed block) is given next to it. Variants that are "
        "compared are timed in interleaved blocks (A, B, A, B, ...) so that a noisy neighbour hits "
        "them alike. **Memory** is XLA's memory analysis of the compiled program "
        "(`jax.jit(f).lower(...).compile().memory_analysis()`): `argument + output + temp - alias` "
        "bytes, the device memory the program needs"
        + (
            "; the CPU runtime reports no measured peak."
            if env["backend"] == "cpu"
            else "; the runtime's `peak_bytes_in_use` is recorded in the JSON files."
        ),
        "",
    ]
    return lines


def render(
    results: dict[str, dict],
    environment: dict,
    sizes: str,
    *,
    failures: dict[str, str] | None = None,
    ran: list[str] | None = None,
    title: str = "# Benchmark results",
) -> str:
    """The whole ``RESULTS.md`` of one backend.

    Args:
      results: name -> payload of each results file found (:func:`load_results`).
      environment: the run's :func:`benchmarks.common.environment`, with ``load_average_end``,
        ``wall_time_s`` and (optionally) ``shared_machine_note``.
      sizes: the run's size set.
      failures: name -> traceback of the benchmarks that failed in the run.
      ran: the benchmarks the run measured; the other sections are marked as earlier results.
        ``None``: no marks.
      title: the first line (:func:`with_other_backends` names the backend of each further part).
    """
    failures = failures or {}
    lines = [title, "", *_header(environment, sizes)]
    if headlines(results):
        lines += ["## Headlines", "", headlines_markdown(results), ""]
    for number, (name, module) in enumerate(BENCHMARKS.items(), start=1):
        lines += [f"## {number}. {module.TITLE}", ""]
        if name in failures:
            lines += ["**Failed in this run:**", "", "```", failures[name].strip(), "```", ""]
        if name not in results:
            lines += [
                f"Not measured: no current results file `benchmarks/results/{name}_"
                f"{environment['backend']}.json` (run `python -m benchmarks.run_all --only {name}`).",
                "",
            ]
            continue
        payload = results[name]
        note = ""
        if ran is not None and name not in ran:
            note = " (from an earlier run, not re-measured by this command)"
        lines += [module.section(payload), "", common.describe_measurement(payload) + note, ""]
    return "\n".join(lines).rstrip() + "\n"


def render_backend(
    backend: str | None = None, results_dir: str | None = None, title: str = "# Benchmark results"
) -> str | None:
    """One backend's report from its results files and run record alone (``None`` without a record)."""
    record = load_run_record(results_dir, backend)
    if record is None:
        return None
    return render(
        load_results(BENCHMARKS, results_dir, backend),
        record["environment"],
        record["sizes"],
        failures=record["failures"],
        ran=record["ran"],
        title=title,
    )


def with_other_backends(text: str, results_dir: str | None = None) -> str:
    """``text`` (this backend's report) followed by the report of every other backend whose run record
    is in ``results_dir``, e.g. a GPU run's files (``benchmarks/device_check.sh``) next to the CPU ones,
    each under its own title (``# Benchmark results on gpu``) and header."""
    parts = [text]
    for backend in BACKENDS:
        if backend == common.backend():
            continue
        other = render_backend(backend, results_dir, title=f"# Benchmark results on {backend}")
        if other is not None:
            parts.append(other)
    return "\n".join(parts)


def render_from_files(results_dir: str | None = None) -> str | None:
    """``RESULTS.md`` from the results files and the run records alone (``None`` without a record of
    this backend): this backend's report, then any other backend's (:func:`with_other_backends`)."""
    text = render_backend(None, results_dir)
    return None if text is None else with_other_backends(text, results_dir)


def finite_numbers_in_tables(markdown: str) -> list[float]:
    """Every number in the report's table cells (for tests: all must be finite)."""
    numbers = []
    for line in markdown.splitlines():
        if line.startswith("|") and not line.startswith("|---"):
            for token in re.findall(r"-?\d[\d,]*\.?\d*(?:e[+-]?\d+)?|nan|inf", line):
                numbers.append(float(token.replace(",", "")))
    return numbers


__all__ = [
    "BENCHMARKS",
    "finite_numbers_in_tables",
    "headlines",
    "headlines_markdown",
    "load_results",
    "load_run_record",
    "readme_sections_table",
    "render",
    "render_backend",
    "render_from_files",
    "with_other_backends",
    "write_run_record",
]
