"""Render ``RESULTS.md`` from the benchmarks' JSON results (one section per benchmark).

Every section states what its timed region holds, the repeats and the statistic; the numbers come from
the results files only, so a report can be regenerated without re-measuring
(``python -m benchmarks.run_all --report-only``).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable

from benchmarks import common

SIZE_NOTES = {
    "accelerator": "full sizes (the paper-scale models and batches)",
    "cpu": "**reduced CPU sizes** (small models and batches; see each section)",
    "quick": "**quick smoke sizes** (toy sizes: the code paths run, the figures mean little)",
    "custom": "sizes given on the command line of the single script",
}


def _ms(seconds: float) -> str:
    return f"{1e3 * seconds:.3f}"


def _mib(num_bytes: float | None) -> str:
    return "n/a" if num_bytes is None else f"{num_bytes / 2**20:.2f}"


def _f(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _measured(payload: dict) -> str:
    env = payload.get("environment", {})
    return (
        f"Measured {env.get('date', '?')} with the `{payload.get('sizes', '?')}` size set "
        f"({env.get('device_kind', '?')}, load average {env.get('load_average')}); "
        f"results file `{payload.get('path', '?')}`."
    )


# ------------------------------------------------------------------------------------------------
# Sections.


def alrao_step_section(payload: dict) -> str:
    rows = payload["rows"]
    lines = [
        "One jitted Alrao-SGD training step (the model with an `AlraoHead` of "
        f"{payload['num_copies']} copies, per-feature rates, both gradients, both updates and the switch "
        "update) against one plain `optax.sgd` step of the same model (Dense head), same random batch. "
        "**Timed region:** a block of consecutive steps (state donated, each step consumes the previous "
        "state) ending in `block_until_ready`; plain and Alrao blocks interleaved. "
        f"**Statistic:** median (and minimum) per-step time over {rows[0]['repeats']} blocks of "
        f"{rows[0]['steps_per_block']} steps; the ratio is Alrao / plain from the same run. "
        "The GPU target (ratio <= 1.03 for the CIFAR models) applies to the accelerator size set.",
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


def alrao_copies_section(payload: dict) -> str:
    rows = payload["rows"]
    body = payload["body"]
    lines = [
        f"One jitted training step of a small body (MLP {tuple(body['widths'])} on 40-d inputs, batch "
        f"{payload['batch_size']}) with an `AlraoHead` of `N` copies and `K` classes (Alrao-SGD: forward, "
        "the copies' and the mixture's gradients, both updates, switch update), next to the plain step "
        "(`nn.Dense(K)` head, `optax.sgd`). **Timed region:** a block of consecutive steps (state "
        "donated) and `block_until_ready`; per `K`, the plain step and every `N` interleaved; block "
        f"length calibrated to ~{payload['target_block_s']} s (at most {payload['max_steps']} steps). "
        f"**Statistic:** median and minimum per-step time over {rows[0]['repeats']} blocks; ratios to "
        "the plain step of the same `K`, same run. **Memory:** XLA's memory analysis of the same "
        "compiled step, `argument + output + temp - alias` bytes (the donated state counted once).",
        "",
        "| K | head | N | step (ms) | min (ms) | time / plain | memory (MiB) | memory / plain "
        "| parameters (MiB) |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        head = {
            "plain": "Dense",
            "alrao": "AlraoHead",
            "alrao_chunked": f"AlraoHead, chunks of {r['copy_chunk_size']}",
        }[r["variant"]]
        n = "-" if r["variant"] == "plain" else str(r["num_copies"])
        memory = None if r["memory"] is None else r["memory"]["total_bytes"]
        lines.append(
            f"| {r['num_classes']:,} | {head} | {n} | {r['step_ms']:.3f} | {r['step_min_ms']:.3f} "
            f"| {_f(r.get('time_ratio_to_plain'), 2)} | {_mib(memory)} "
            f"| {_f(r.get('memory_ratio_to_plain'), 2)} | {_mib(r['param_bytes'])} |"
        )
    lines.append("")
    if payload["chunked_head_available"]:
        lines.append(
            f"The chunked head (`AlraoHead(copy_chunk_size={payload['chunk_size']})`) is measured at the "
            "largest `N` and `K`, in the same interleaved rounds as the unchunked one."
        )
    else:
        lines.append(
            "`AlraoHead` has no `copy_chunk_size` in this version: the chunked-head row "
            "(`benchmarks.alrao_copies.CHUNK_SIZE`) was not measured."
        )
    # Pivot: time ratio per (N, K).
    ks = payload["num_classes"]
    ns = payload["num_copies"]
    ratio = {
        (r["num_copies"], r["num_classes"]): r.get("time_ratio_to_plain")
        for r in rows
        if r["variant"] == "alrao"
    }
    memory_ratio = {
        (r["num_copies"], r["num_classes"]): r.get("memory_ratio_to_plain")
        for r in rows
        if r["variant"] == "alrao"
    }
    lines += [
        "",
        "Step time / plain step, and compiled memory / plain (in brackets), by `N` (rows) and `K` "
        "(columns):",
        "",
        "| N | " + " | ".join(f"K = {k:,}" for k in ks) + " |",
        "|---:|" + "---:|" * len(ks),
    ]
    for n in ns:
        cells = [f"{_f(ratio.get((n, k)), 2)} ({_f(memory_ratio.get((n, k)), 2)})" for k in ks]
        lines.append(f"| {n} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def switch_update_section(payload: dict) -> str:
    rows = payload["rows"]
    step = payload["alrao_step"]
    lines = [
        "`randlr_jax.alrao.switch_update` (Alrao's posterior over the copies) for `N` copies. **Timed "
        f"regions:** *dispatched*: blocks of {payload['calls_per_block']} calls of the jitted update "
        "on its own, then `block_until_ready` (launch overhead included); *in a scan*: "
        f"{payload['scan_length']} updates inside one `lax.scan` program, divided by "
        f"{payload['scan_length']} (the update's own compute: what it adds when fused into the "
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


def autodrop_step_section(payload: dict) -> str:
    rows = payload["rows"]
    lines = [
        "Momentum SGD with and without `randlr_jax.autodrop` chained after it (one AutoDrop period = "
        "one epoch, so each block holds the period-end work once per epoch). **Timed region:** a "
        "block of whole epochs of jitted steps (state donated) on one device-resident batch, then "
        "`block_until_ready`; base and AutoDrop blocks interleaved. "
        f"**Statistic:** median (and minimum) per-step time over {rows[0]['repeats']} blocks of "
        f"{rows[0]['epochs_per_block']} epoch(s); ratio AutoDrop / base (target <= 1.02). Extra "
        "memory: the optimizer-state bytes AutoDrop adds, in copies of the parameters.",
        "",
        "| model | batch | steps/epoch | base step (ms) | with AutoDrop (ms) | ratio (medians) "
        "| ratio (minima) | extra memory (param. copies) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['batch_size']} | {r['steps_per_epoch']} | {r['base_step_ms']:.3f} "
            f"| {r['autodrop_step_ms']:.3f} | {r['ratio']:.3f} | {r['ratio_of_minima']:.3f} "
            f"| {r['extra_memory_parameter_copies']:.2f} |"
        )
    return "\n".join(lines)


def noh_section(payload: dict) -> str:
    meta = payload["meta_step"]
    lines = [
        "One NOH meta-training step (`randlr_jax.noh.make_meta_step`: `T` unrolled NOH-Adam steps of the "
        f"MNIST-1D MLP 2 x 20 sigmoid at batch {payload['optimizee']['batch_size']}, the meta-gradient "
        "through them, the meta-update of the 3 x 20 LSTM), first order (the optimizee's gradients as "
        "constants, the default) and second order (differentiated through), with and without "
        "rematerialisation (`jax.checkpoint` per unrolled step). **Timed region:** one call of the "
        "compiled step and `block_until_ready`; all variants interleaved. "
        f"**Statistic:** median (min) of {payload['repeats']} calls. **Memory:** XLA's memory "
        "analysis of the same compiled step (`argument + output + temp - alias`).",
        "",
        "| T | order | remat | meta-step (ms) | min (ms) | memory (MiB) | compile (s) |",
        "|---:|---|---|---:|---:|---:|---:|",
    ]
    for r in sorted(meta, key=lambda r: (r["unroll"], r["order"], r["remat"])):
        lines.append(
            f"| {r['unroll']} | {r['order']} | {'yes' if r['remat'] else 'no'} "
            f"| {_ms(r['seconds'])} | {_ms(r['min_seconds'])} | {_mib(r['memory_bytes'])} "
            f"| {r['compile_s']:.1f} |"
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
        f"{payload['scan_steps']} optimizee steps, median (min) of {payload['repeats']} calls, divided "
        "by the steps.",
        "",
        "| optimizer | step (us) | min (us) | ratio to Adam |",
        "|---|---:|---:|---:|",
    ]
    for r in payload["step"]:
        name = "Adam" if r["optimizer"] == "adam" else f"NOH-Adam, S = {r['update_every']}"
        lines.append(
            f"| {name} | {1e6 * r['seconds']:.2f} | {1e6 * r['min_seconds']:.2f} "
            f"| {r['ratio']:.2f} |"
        )
    return "\n".join(lines)


def lr_grid_section(payload: dict) -> str:
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
    for r in payload["rows"]:
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


def input_pipeline_section(payload: dict) -> str:
    rows = payload["rows"]
    lines = [
        "The training feed `fit` uses (`SplitFeed`: `batch_iterator` over the shuffled in-memory "
        "MNIST-1D split; `lm_batch_iterator` over the first "
        f"{payload['lstm_characters']:,} `shakespeare_char` training characters) against the jitted "
        "training step. **Timed regions** (interleaved, each ending in `block_until_ready`): *loader*: "
        "a block of batches taken from the feed and `jax.device_put` on the device; *step*: a block of "
        "steps on one device-resident batch (state donated); *end to end*: a block of steps each "
        "fed its own next batch loaded between steps; *with prefetch*: the same with the loader running "
        "ahead on a background thread (`randlr_jax.training._feed.prefetch`: `fit` with "
        "`LoopConfig(prefetch=k)`, its default on GPU/TPU; on CPU `fit` loads in line). "
        "**Statistic:** median over "
        f"{rows[0]['loader']['repeats']} blocks (best block in the JSON).",
        "",
        "| setting | batch | loader (batches/s) | step (steps/s) | end to end (steps/s) "
        "| with prefetch (steps/s) | loader / step | loading share of an end-to-end step | verdict |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        shape = "x".join(str(d) for d in r["batch_shape"]["x"])
        verdict = "**bottleneck**" if r["loader_is_bottleneck"] else "not the bottleneck"
        lines.append(
            f"| {r['setting']} | {shape} | {r['loader']['median_per_s']:.0f} "
            f"| {r['step']['median_per_s']:.1f} | {r['end_to_end']['median_per_s']:.1f} "
            f"| {_prefetch_rate(r)} | {r['loader_to_step_ratio']:.1f} "
            f"| {100 * r['loading_share_of_end_to_end_step']:.1f} % | {verdict} |"
        )
    lines.append("")
    for r in rows:
        verb = "is" if r["loader_is_bottleneck"] else "is not"
        lines.append(
            f"- **{r['setting']}: the loader {verb} the bottleneck**: it delivers "
            f"{r['loader_to_step_ratio']:.1f}x the batches the step consumes; loading takes "
            f"{100 * r['loading_share_of_end_to_end_step']:.1f} % of an end-to-end step when it runs "
            "between steps; with a prefetching loop, "
            + (
                f"{r['prefetch_to_step_ratio']:.2f}x the step-only rate."
                if "prefetch_to_step_ratio" in r
                else "not measured in this run."
            )
        )
    return "\n".join(lines)


def _prefetch_rate(row: dict) -> str:
    rate = row.get("end_to_end_prefetch")
    return "-" if rate is None else f"{rate['median_per_s']:.1f}"


def range_test_section(payload: dict) -> str:
    rows = payload["rows"]
    lines = [
        "`randlr_jax.lr_range_test` (one compiled step with the rate as a traced argument) against "
        "re-jitting a step per rate (`jax.jit` of a step closing over `optax.sgd(rate)`). **Timed "
        "region:** the whole range test (compilation included), and the re-jit loop over its first "
        "rates, extrapolated to all of them. **Statistic:** one run of each; compilations counted by "
        "tracing the loss.",
        "",
        "| model | steps | compilations (traced rate) | wall s (traced rate) "
        "| compilations (re-jit per rate) | wall s (re-jit, extrapolated) | re-jit / traced |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['steps_run']} | {r['traced_compilations']} "
            f"| {r['traced_wall_s']:.2f} | {r['naive_compilations']} per "
            f"{r['naive_iters_measured']} | {r['naive_wall_s_extrapolated']:.1f} "
            f"| {r['naive_wall_s_extrapolated'] / r['traced_wall_s']:.1f} |"
        )
    return "\n".join(lines)


SECTIONS: dict[str, tuple[str, Callable[[dict], str]]] = {
    "alrao_step": ("Alrao step time against plain SGD", alrao_step_section),
    "alrao_copies": (
        "Alrao's classifier copies: cost against N copies and K classes",
        alrao_copies_section,
    ),
    "switch_update": ("The switch update's cost per step", switch_update_section),
    "autodrop_step": ("AutoDrop's step-time ratio", autodrop_step_section),
    "noh": ("NOH: meta-step time and memory against unroll length", noh_section),
    "lr_grid": ("The vmapped learning-rate grid against sequential runs", lr_grid_section),
    "input_pipeline": ("Input pipeline against step time", input_pipeline_section),
    "range_test": (
        "LR range test: one compilation against re-jitting per rate",
        range_test_section,
    ),
}


# ------------------------------------------------------------------------------------------------
# Headlines and the whole report.


def headlines(results: dict[str, dict]) -> list[str]:
    """One line per benchmark with its key figure (ratios from one run each)."""
    out = []
    if "alrao_step" in results:
        rows = results["alrao_step"]["rows"]
        out.append(
            "Alrao / plain SGD step time: "
            + ", ".join(f"{r['model']} b{r['batch_size']} {r['ratio']:.2f}" for r in rows)
        )
    if "alrao_copies" in results:
        rows = [r for r in results["alrao_copies"]["rows"] if r["variant"] == "alrao"]
        largest = max(rows, key=lambda r: (r["num_classes"], r["num_copies"]))
        chunked = [r for r in results["alrao_copies"]["rows"] if r["variant"] == "alrao_chunked"]
        line = (
            f"Copies: N = {largest['num_copies']}, K = {largest['num_classes']:,}: step "
            f"{_f(largest.get('time_ratio_to_plain'), 1)}x and compiled memory "
            f"{_f(largest.get('memory_ratio_to_plain'), 1)}x the plain Dense step"
        )
        if chunked:
            c = chunked[0]
            memory = c["memory"]["total_bytes"] if c["memory"] else None
            base = largest["memory"]["total_bytes"] if largest["memory"] else None
            line += (
                f"; chunks of {c['copy_chunk_size']}: {_f(c.get('time_ratio_to_plain'), 1)}x time, "
                f"memory {_mib(memory)} MiB vs {_mib(base)} MiB unchunked"
            )
        out.append(line)
    if "switch_update" in results:
        rows = results["switch_update"]["rows"]
        worst = max(rows, key=lambda r: r["fraction_in_scan"])
        out.append(
            f"Switch update: at most {100 * worst['fraction_in_scan']:.2f} % of an Alrao step "
            f"(N = {worst['num_copies']}, fused cost {worst['in_scan_us']:.2f} us/update)"
        )
    if "autodrop_step" in results:
        rows = results["autodrop_step"]["rows"]
        out.append(
            "AutoDrop / base step time: "
            + ", ".join(
                f"{r['model']} {r['ratio']:.3f} (minima {r['ratio_of_minima']:.3f})" for r in rows
            )
        )
    if "noh" in results:
        meta = results["noh"]["meta_step"]
        t_max = max(r["unroll"] for r in meta)
        at = {(r["order"], r["remat"]): r for r in meta if r["unroll"] == t_max}
        first = at.get(("first", False))
        second = at.get(("second", False))
        if first:
            line = (
                f"NOH meta-step at T = {t_max}: {_ms(first['seconds'])} ms, "
                f"{_mib(first['memory_bytes'])} MiB (first order)"
            )
            if second:
                line += f"; second order {second['seconds'] / first['seconds']:.2f}x the time"
            if ("first", True) in at:
                line += f"; remat: {_mib(at[('first', True)]['memory_bytes'])} MiB"
            out.append(line)
    if "lr_grid" in results:
        r = results["lr_grid"]["rows"][0]
        out.append(
            f"LR grid of {len(r['learning_rates'])} rates: vmapped population "
            f"{r['ratio_sequential_to_population']:.1f}x faster than sequential fits "
            f"({r['population_wall_s']:.1f} s vs {r['sequential_wall_s']:.1f} s)"
        )
    if "input_pipeline" in results:
        rows = results["input_pipeline"]["rows"]
        out.append(
            "Input pipeline: "
            + "; ".join(
                f"{r['setting']}: loader {r['loader_to_step_ratio']:.1f}x the step rate, "
                f"{'IS' if r['loader_is_bottleneck'] else 'not'} the bottleneck"
                + (
                    f"; with prefetch {r['prefetch_to_step_ratio']:.2f}x the step-only rate"
                    if "prefetch_to_step_ratio" in r
                    else ""
                )
                for r in rows
            )
        )
    if "range_test" in results:
        rows = results["range_test"]["rows"]
        out.append(
            "Range test: re-jitting per rate "
            + ", ".join(
                f"{r['model']} {r['naive_wall_s_extrapolated'] / r['traced_wall_s']:.0f}x"
                for r in rows
            )
            + " slower than one traced-rate compilation"
        )
    return out


def load_results(names, results_dir: str | None = None) -> dict[str, dict]:
    """The results files of this backend that exist and carry the current format."""
    out = {}
    for name in names:
        path = common.results_path(name, results_dir)
        if not os.path.exists(path):
            continue
        with open(path) as f:
            payload = json.load(f)
        if "environment" in payload:  # files of the older single scripts lack it
            out[name] = payload
    return out


def render(
    results: dict[str, dict],
    environment: dict,
    sizes: str,
    *,
    failures: dict[str, str] | None = None,
    ran: list[str] | None = None,
) -> str:
    """The whole ``RESULTS.md``."""
    failures = failures or {}
    env = environment
    lines = ["# Benchmark results", ""]
    if env["backend"] == "cpu":
        lines += [
            f"> **Run on CPU with reduced sizes** (size set `{sizes}`: {SIZE_NOTES.get(sizes, sizes)}). "
            "No GPU or TPU was available to this run, so the paper-scale settings (VGG19, "
            "MobileNetV2, GoogLeNet at batch 32 and 128, ResNet-18, longer NOH unrolls) were not "
            "measured: run `python -m benchmarks.run_all` on an accelerator for them. CPU timings "
            "carry the noise of the machine: compare the ratios (measured in the same run), not "
            "absolute times.",
            "",
        ]
    else:
        lines += [f"> Size set `{sizes}`: {SIZE_NOTES.get(sizes, sizes)}.", ""]
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
    if env.get("shared_machine_note"):
        lines += [env["shared_machine_note"], ""]
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
    summary = headlines(results)
    if summary:
        lines += ["## Headlines", ""] + [f"- {line}" for line in summary] + [""]
    for number, (name, (title, section)) in enumerate(SECTIONS.items(), start=1):
        lines += [f"## {number}. {title}", ""]
        if name in failures:
            lines += ["**Failed in this run:**", "", "```", failures[name].strip(), "```", ""]
        if name not in results:
            lines += [
                f"Not measured: no current results file `benchmarks/results/{name}_"
                f"{env['backend']}.json` (run `python -m benchmarks.run_all --only {name}`).",
                "",
            ]
            continue
        payload = results[name]
        note = ""
        if ran is not None and name not in ran:
            note = " (from an earlier run, not re-measured by this command)"
        lines += [section(payload), "", _measured(payload) + note, ""]
    return "\n".join(lines).rstrip() + "\n"


def finite_numbers_in_tables(markdown: str) -> list[float]:
    """Every number in the report's table cells (for tests: all must be finite)."""
    numbers = []
    for line in markdown.splitlines():
        if line.startswith("|") and not line.startswith("|---"):
            for token in re.findall(r"-?\d[\d,]*\.?\d*(?:e[+-]?\d+)?|nan|inf", line):
                numbers.append(float(token.replace(",", "")))
    return numbers


__all__ = ["SECTIONS", "finite_numbers_in_tables", "headlines", "load_results", "render"]
