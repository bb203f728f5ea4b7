"""Cost of Alrao's classifier copies against their number ``N`` and the number of classes ``K``.

The Alrao paper's stated limitation is the output layer: ``N`` copies of a ``D x K`` classifier cost
``N`` times its parameters and ``N`` times its three products (forward, the kernel's and the features'
gradients), so the step should cost about ``N`` plain steps. This measures, on a small body (an MLP on
40-d inputs),
one jitted Alrao-SGD training step (forward, all gradients, both updates, switch update; state donated)
with an ``AlraoHead`` of ``N in {1, 4, 10, 32}`` copies and ``K in {10, 1000, 10000}`` classes, next to
the plain step (``nn.Dense(K)`` head, ``optax.sgd``) at each ``K``.

Time: per ``K``, the plain step and the ``N`` Alrao steps are timed in interleaved blocks
(``benchmarks.common.time_steps_interleaved``, blocks of about ``target_block_s`` seconds), median and
minimum per step; ratios to the plain step of the same ``K`` and run. Memory: XLA's memory analysis of the
same compiled step (``argument + output + temp - alias`` bytes; see ``benchmarks.common``).

If ``AlraoHead`` has a ``copy_chunk_size`` attribute (the copies' logits computed a chunk of copies at a
time, so that the ``N x B x K`` logits are never all in memory at once), the largest ``(N, K)`` is also
measured with chunks of ``CHUNK_SIZE`` copies; otherwise the result says it was not available
(``chunked_head_available: false``).

**Bound.** At the largest ``K``, for ``N in BOUND_COPIES`` (10 and 32), the Alrao step's time over the
plain step's is checked against ``BOUND_FACTOR * N`` (1.5 N); in the same interleaved rounds the step is
also timed with the copies' loss computed from their outputs (the step before the fused objective, which
the step still takes for a head whose ``copy_outputs`` is overridden: ``OutputsHead``), for a
before / after line.

Size sets: ``accelerator``: body MLP (512, 512), batch 256; ``cpu``: body MLP (100,), batch 32;
``quick``: body MLP (32,), batch 16, ``N in {1, 32}``, ``K in {10, 1000}``.

Run alone: ``.venv/bin/python -m benchmarks.alrao_copies [--sizes cpu]``; writes
``benchmarks/results/alrao_copies_<backend>.json``.
"""

from __future__ import annotations

import dataclasses

import jax
import numpy as np
import optax

import randlr_jax
from benchmarks import common
from randlr_jax import models
from randlr_jax.alrao import make_alrao_train_step
from randlr_jax.training import create_train_state, make_train_step

CHUNK_SIZE = 8
BOUND_COPIES = (10, 32)
BOUND_FACTOR = 1.5
SIZES = {
    "accelerator": {
        "widths": (512, 512),
        "batch_size": 256,
        "num_copies": (1, 4, 10, 32),
        "num_classes": (10, 1000, 10000),
        "repeats": 5,
        "target_block_s": 0.2,
        "max_steps": 200,
    },
    "cpu": {
        "widths": (100,),
        "batch_size": 32,
        "num_copies": (1, 4, 10, 32),
        "num_classes": (10, 1000, 10000),
        "repeats": 5,
        "target_block_s": 0.15,
        "max_steps": 200,
    },
    "quick": {
        "widths": (32,),
        "batch_size": 16,
        "num_copies": (1, 32),
        "num_classes": (10, 1000),
        "repeats": 3,
        "target_block_s": 0.02,
        "max_steps": 50,
    },
}


class OutputsHead(randlr_jax.AlraoHead):
    """An ``AlraoHead`` whose ``copy_outputs`` is its own: the Alrao step computes the copies' loss
    from their ``(N, B, K)`` outputs (``alrao_loss``, the outputs computed twice under the
    stop-gradient pair) instead of the fused objective (``alrao_loss_dense``). The same numbers."""

    def copy_outputs(self, features):
        return super().copy_outputs(features)


def chunked_head_available() -> bool:
    """Whether ``randlr_jax.AlraoHead`` takes ``copy_chunk_size`` (copies computed a chunk at a time)."""
    return "copy_chunk_size" in {f.name for f in dataclasses.fields(randlr_jax.AlraoHead)}


def _batch(batch_size: int, num_classes: int) -> dict:
    rng = np.random.default_rng(0)
    return {
        "x": rng.normal(size=(batch_size, 40)).astype(np.float32),
        "y": rng.integers(0, num_classes, size=batch_size).astype(np.int32),
    }


def _variant(model, tx, step_fn, batch) -> tuple:
    state = create_train_state(model, tx, jax.random.key(0), batch["x"][:1])
    compiled, memory, compile_s = common.compile_ahead(step_fn, state, batch, donate_argnums=(0,))
    info = {
        "memory": memory,
        "compile_s": compile_s,
        "param_bytes": common.tree_bytes(state.params),
        "opt_state_bytes": common.tree_bytes(state.opt_state),
    }
    return (compiled, state), info


def measure_classes(
    num_classes: int, config: dict, with_chunked: bool = False, outputs_copies: tuple = ()
) -> list[dict]:
    """Rows for one ``K``: the plain step, one Alrao step per ``N``, (``with_chunked``) the chunked
    head at the largest ``N`` and (``outputs_copies``) the step on the copies' outputs
    (:class:`OutputsHead`, variant ``"alrao_outputs"``) for those ``N``, all timed in the same
    interleaved rounds."""
    batch = jax.device_put(_batch(config["batch_size"], num_classes))
    widths = config["widths"]
    variants, infos, labels = {}, {}, {}
    model = models.make_model("mlp", num_classes=num_classes, widths=widths)
    tx = optax.sgd(0.01)
    variants["plain"], infos["plain"] = _variant(model, tx, make_train_step(model, tx), batch)
    labels["plain"] = ("plain", 0, None)
    heads = [(n, None, "alrao") for n in config["num_copies"]]
    if with_chunked:
        heads.append((config["num_copies"][-1], CHUNK_SIZE, "alrao_chunked"))
    heads += [(n, None, "alrao_outputs") for n in outputs_copies]
    for n, chunk_size, variant in heads:
        kwargs = {} if chunk_size is None else {"copy_chunk_size": chunk_size}
        head_type = OutputsHead if variant == "alrao_outputs" else randlr_jax.AlraoHead
        head = head_type(num_outputs=num_classes, num_copies=n, **kwargs)
        model = models.make_model("mlp", head=head, widths=widths)
        tx = randlr_jax.alrao_sgd(jax.random.key(1), 1e-5, 10.0, n)
        name = f"{variant}_{n}"
        labels[name] = (variant, n, chunk_size)
        variants[name], infos[name] = _variant(model, tx, make_alrao_train_step(model, tx), batch)
    timings, _ = common.time_steps_interleaved(
        variants,
        batch,
        steps=config["max_steps"],
        repeats=config["repeats"],
        target_block_s=config["target_block_s"],
    )
    rows = []
    for name, timing in timings.items():
        memory = infos[name]["memory"]
        variant, num_copies, chunk_size = labels[name]
        rows.append(
            {
                "variant": variant,
                "num_copies": num_copies,
                "num_classes": num_classes,
                "copy_chunk_size": chunk_size,
                "step_ms": 1e3 * timing["median_s"],
                "step_min_ms": 1e3 * timing["min_s"],
                "steps_per_block": timing["number"],
                "repeats": timing["repeats"],
                "compile_s": infos[name]["compile_s"],
                "memory": memory,
                "memory_mib": None if memory is None else memory["total_bytes"] / 2**20,
                "param_bytes": infos[name]["param_bytes"],
                "opt_state_bytes": infos[name]["opt_state_bytes"],
            }
        )
    return rows


def _add_ratios(rows: list[dict]) -> None:
    plain = {r["num_classes"]: r for r in rows if r["variant"] == "plain"}
    for r in rows:
        base = plain.get(r["num_classes"])
        if base is None:
            continue
        r["time_ratio_to_plain"] = r["step_ms"] / base["step_ms"]
        r["time_ratio_of_minima"] = r["step_min_ms"] / base["step_min_ms"]
        if r["memory"] is not None and base["memory"] is not None:
            r["memory_ratio_to_plain"] = r["memory"]["total_bytes"] / base["memory"]["total_bytes"]


def run(sizes: str, results_dir: str | None = None) -> dict:
    """Measure the ``N x K`` grid of the size set and write ``alrao_copies_<backend>.json``."""
    config = SIZES[common.check_size_set(sizes)]
    available = chunked_head_available()
    rows = []
    largest = config["num_classes"][-1]
    bound_copies = tuple(n for n in BOUND_COPIES if n in config["num_copies"])
    for num_classes in config["num_classes"]:
        last = num_classes == largest
        rows.extend(
            measure_classes(num_classes, config, available and last, bound_copies if last else ())
        )
        common.log(f"alrao_copies K={num_classes}: done")
    _add_ratios(rows)
    outputs_rows = [r for r in rows if r["variant"] == "alrao_outputs"]
    rows = [r for r in rows if r["variant"] != "alrao_outputs"]
    payload = {
        "body": {"model": "mlp", "widths": list(config["widths"]), "input": [40]},
        "batch_size": config["batch_size"],
        "num_copies": list(config["num_copies"]),
        "num_classes": list(config["num_classes"]),
        "chunked_head_available": available,
        "chunk_size": CHUNK_SIZE,
        "target_block_s": config["target_block_s"],
        "max_steps": config["max_steps"],
        "rows": rows,
        "outputs_rows": outputs_rows,
        "bound_factor": BOUND_FACTOR,
        "bound": bound_rows(rows, outputs_rows, largest, bound_copies),
    }
    payload["path"] = common.write_result("alrao_copies", sizes, payload, results_dir)
    return payload


def bound_rows(
    rows: list[dict], outputs_rows: list[dict], num_classes: int, copies: tuple
) -> list[dict]:
    """Per ``N`` in ``copies`` at ``num_classes``: the Alrao step / plain step (medians and minima)
    against ``BOUND_FACTOR * N``, and the step on the copies' outputs (before the fused objective)
    / plain, all from the same interleaved rounds."""
    outputs = {r["num_copies"]: r for r in outputs_rows}
    plain = next(r for r in rows if r["variant"] == "plain" and r["num_classes"] == num_classes)
    out = []
    for n in copies:
        fused = next(
            r
            for r in rows
            if r["variant"] == "alrao" and r["num_copies"] == n and r["num_classes"] == num_classes
        )
        before = outputs.get(n)
        out.append(
            {
                "num_copies": n,
                "num_classes": num_classes,
                "plain_step_ms": plain["step_ms"],
                "ratio": fused["time_ratio_to_plain"],
                "ratio_of_minima": fused["time_ratio_of_minima"],
                "bound": BOUND_FACTOR * n,
                "within": bool(fused["time_ratio_to_plain"] <= BOUND_FACTOR * n),
                "outputs_ratio": None if before is None else before["time_ratio_to_plain"],
                "speedup": None if before is None else before["step_ms"] / fused["step_ms"],
            }
        )
    return out


TITLE = "Alrao's classifier copies: cost against N copies and K classes"
SUMMARY = (
    "one Alrao step with `N ∈ {1, 4, 10, 32}` copies and `K ∈ {10, 1000, 10000}` classes: time and "
    "memory against the plain Dense step; the chunked head (`copy_chunk_size=8`) at the largest `N, K`"
)
HEAD_NAMES = {"plain": "Dense", "alrao": "AlraoHead", "alrao_chunked": "AlraoHead, chunks of {}"}


def _total_bytes(row: dict) -> int | None:
    return None if row["memory"] is None else row["memory"]["total_bytes"]


def section(result: dict) -> str:
    """This benchmark's section of ``RESULTS.md`` (also what a run alone prints): one row per step
    measured, then the time and memory ratios pivoted by ``N`` and ``K``."""
    rows = result["rows"]
    body = result["body"]
    lines = [
        f"One jitted training step of a small body (MLP {tuple(body['widths'])} on 40-d inputs, batch "
        f"{result['batch_size']}) with an `AlraoHead` of `N` copies and `K` classes (Alrao-SGD: forward, "
        "the copies' and the mixture's gradients, both updates, switch update), next to the plain step "
        "(`nn.Dense(K)` head, `optax.sgd`). **Timed region:** a block of consecutive steps (state "
        "donated) and `block_until_ready`; per `K`, the plain step and every `N` interleaved; block "
        f"length calibrated to ~{result['target_block_s']} s (at most {result['max_steps']} steps). "
        f"**Statistic:** median and minimum per-step time over {rows[0]['repeats']} blocks; ratios to "
        "the plain step of the same `K`, same run. **Memory:** XLA's memory analysis of the same "
        "compiled step, `argument + output + temp - alias` bytes (the donated state counted once).",
        "",
        "| K | head | N | step (ms) | min (ms) | time / plain | memory (MiB) | memory / plain "
        "| parameters (MiB) |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        head = HEAD_NAMES[r["variant"]].format(r["copy_chunk_size"])
        n = "-" if r["variant"] == "plain" else str(r["num_copies"])
        lines.append(
            f"| {r['num_classes']:,} | {head} | {n} | {r['step_ms']:.3f} | {r['step_min_ms']:.3f} "
            f"| {common.fixed(r.get('time_ratio_to_plain'), 2)} | {common.mib(_total_bytes(r))} "
            f"| {common.fixed(r.get('memory_ratio_to_plain'), 2)} | {common.mib(r['param_bytes'])} |"
        )
    lines.append("")
    if result["chunked_head_available"]:
        lines.append(
            f"The chunked head (`AlraoHead(copy_chunk_size={result['chunk_size']})`) is measured at the "
            "largest `N` and `K`, in the same interleaved rounds as the unchunked one."
        )
    else:
        lines.append(
            "`AlraoHead` has no `copy_chunk_size` in this version: the chunked-head row "
            "(`benchmarks.alrao_copies.CHUNK_SIZE`) was not measured."
        )
    unchunked = {(r["num_copies"], r["num_classes"]): r for r in rows if r["variant"] == "alrao"}
    ks = result["num_classes"]
    lines += [
        "",
        "Step time / plain step, and compiled memory / plain (in brackets), by `N` (rows) and `K` "
        "(columns):",
        "",
        "| N | " + " | ".join(f"K = {k:,}" for k in ks) + " |",
        "|---:|" + "---:|" * len(ks),
    ]
    for n in result["num_copies"]:
        cells = []
        for k in ks:
            r = unchunked.get((n, k), {})
            cells.append(
                f"{common.fixed(r.get('time_ratio_to_plain'), 2)} "
                f"({common.fixed(r.get('memory_ratio_to_plain'), 2)})"
            )
        lines.append(f"| {n} | " + " | ".join(cells) + " |")
    lines += bound_section(result)
    return "\n".join(lines)


def bound_section(result: dict) -> list[str]:
    """The bound's lines: per ``N``, the step / plain against ``1.5 N``, and before / after."""
    bound = result.get("bound") or []
    if not bound:
        return []
    k = bound[0]["num_classes"]
    lines = [
        "",
        f"**Bound** (K = {k:,}, plain step {bound[0]['plain_step_ms']:.3f} ms): the whole Alrao "
        f"step within {result['bound_factor']} x N plain steps; *before*: the same step with the "
        "copies' loss computed from their `(N, B, K)` outputs (`OutputsHead`), *after*: the fused "
        "objective (`alrao_loss_dense`), same interleaved rounds.",
        "",
        "| N | after / plain | minima | bound | within | before / plain | after speed-up |",
        "|---:|---:|---:|---:|---|---:|---:|",
    ]
    for b in bound:
        lines.append(
            f"| {b['num_copies']} | {b['ratio']:.2f} | {b['ratio_of_minima']:.2f} "
            f"| {b['bound']:.1f} | {'yes' if b['within'] else '**no**'} "
            f"| {common.fixed(b['outputs_ratio'], 2)} | {common.fixed(b['speedup'], 2)}x |"
        )
    return lines


def headline(result: dict) -> str:
    """The report's one-line summary: the largest ``(N, K)`` against the plain step, and the chunked
    head's memory next to the unchunked one's."""
    rows = result["rows"]
    largest = max(
        (r for r in rows if r["variant"] == "alrao"),
        key=lambda r: (r["num_classes"], r["num_copies"]),
    )
    line = (
        f"Copies: N = {largest['num_copies']}, K = {largest['num_classes']:,}: step "
        f"{common.fixed(largest.get('time_ratio_to_plain'), 1)}x and compiled memory "
        f"{common.fixed(largest.get('memory_ratio_to_plain'), 1)}x the plain Dense step"
    )
    for b in result.get("bound") or []:
        line += (
            f"; N = {b['num_copies']}, K = {b['num_classes']:,}: {b['ratio']:.1f}x the plain step "
            f"(bound {b['bound']:.0f}x: {'within' if b['within'] else 'over'}; "
            f"{common.fixed(b['outputs_ratio'], 1)}x before the fused objective)"
        )
    chunked = [r for r in rows if r["variant"] == "alrao_chunked"]
    if chunked:
        c = chunked[0]
        line += (
            f"; chunks of {c['copy_chunk_size']}: "
            f"{common.fixed(c.get('time_ratio_to_plain'), 1)}x time, memory "
            f"{common.mib(_total_bytes(c))} MiB vs {common.mib(_total_bytes(largest))} MiB unchunked"
        )
    return line


def main(argv=None) -> dict:
    return common.size_set_main(__doc__.splitlines()[0], run, section, argv)


if __name__ == "__main__":
    main()
