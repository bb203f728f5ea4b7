"""Each benchmark's section of ``RESULTS.md``, rendered from the committed results files.

Every benchmark module owns its section (``section(result)``); these tests render each from its
committed ``benchmarks/results/<name>_cpu.json`` (so a change of a benchmark's schema that its renderer
does not follow fails here), read the tables back and check every cell against the JSON field it shows,
to the printed precision (a dropped row, a swapped column or a wrong figure fails), and check that the
report assembled from the same files is the committed ``RESULTS.md``, byte for byte (re-rendering is
idempotent). The README's benchmark tables (``readme_table``) are checked against the JSON they quote.
Only rendering: no benchmark runs here.
"""

from __future__ import annotations

import json
import pathlib
import re
import statistics

import pytest

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
    report,
    switch_update,
)

ROOT = pathlib.Path(report.__file__).resolve().parent.parent
RESULTS_DIR = ROOT / "benchmarks" / "results"
RESULTS_MD = ROOT / "benchmarks" / "RESULTS.md"
MIB = 2**20


def committed(name: str) -> dict:
    with open(RESULTS_DIR / f"{name}.json") as f:
        return json.load(f)


# ------------------------------------------------------------------------------------------------
# Reading tables back.


def table(markdown: str, header_start: str) -> list[dict[str, str]]:
    """The rows (header -> cell) of the one markdown table whose header line starts with
    ``header_start``."""
    lines = markdown.splitlines()
    starts = [i for i, line in enumerate(lines) if line.startswith(header_start)]
    assert len(starts) == 1, f"{len(starts)} tables start with {header_start!r}"
    i = starts[0]
    header = [c.strip() for c in lines[i].strip("|").split("|")]
    assert set(lines[i + 1].replace("|", "").replace(":", "")) == {"-"}, "no separator line"
    rows = []
    for line in lines[i + 2 :]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert len(cells) == len(header), f"row {line!r} has {len(cells)} cells, header {header}"
        rows.append(dict(zip(header, cells, strict=True)))
    return rows


_NUMBER = re.compile(r"^-?[\d,]*\.?\d+(?:e[+-]?\d+)?$")


def shows(cell: str, value) -> bool:
    """Whether ``cell`` shows ``value``: a string exactly; a number to the cell's printed precision
    (``"0.215"`` shows any value within 0.0005 of 0.215; ``"2.4e-07"``, within 0.05e-07; a trailing
    ``%`` is dropped); a tuple ``(a, b)`` as ``"a (b)"``."""
    if isinstance(value, tuple):
        match = re.fullmatch(r"(\S+) \((\S+)\)", cell)
        return match is not None and all(
            shows(c, v) for c, v in zip(match.groups(), value, strict=True)
        )
    if isinstance(value, str):
        return cell == value
    text = cell.removesuffix(" %").replace(",", "")
    if not _NUMBER.match(text):
        return False
    mantissa, _, exponent = text.partition("e")
    decimals = len(mantissa.partition(".")[2])
    tolerance = 0.5 * 10.0 ** (int(exponent or 0) - decimals)
    return abs(float(text) - value) <= tolerance * (1 + 1e-9) + 1e-12


def assert_table_shows(rows: list[dict[str, str]], records: list[dict], columns: dict) -> None:
    """One table row per record, each showing ``columns[header](record)`` under every header."""
    assert len(rows) == len(records), f"{len(rows)} table rows for {len(records)} records"
    unmatched = list(rows)
    for record in records:
        expected = {header: get(record) for header, get in columns.items()}
        matches = [r for r in unmatched if all(shows(r[h], v) for h, v in expected.items())]
        assert matches, f"no table row shows {expected}; rows: {unmatched}"
        unmatched.remove(matches[0])


def _memory_mib(row: dict) -> float:
    return row["memory"]["total_bytes"] / MIB


# The columns of each section's main table(s): header -> the JSON value it shows.
ALRAO_STEP = {
    "model": lambda r: r["model"],
    "batch": lambda r: r["batch_size"],
    "plain step (ms)": lambda r: r["plain_step_ms"],
    "Alrao step (ms)": lambda r: r["alrao_step_ms"],
    "ratio (medians)": lambda r: r["ratio"],
    "ratio (minima)": lambda r: r["ratio_of_minima"],
    "params plain": lambda r: r["plain_params"],
    "params Alrao": lambda r: r["alrao_params"],
}
ALRAO_COPIES = {
    "K": lambda r: r["num_classes"],
    "head": lambda r: {"plain": "Dense", "alrao": "AlraoHead"}.get(
        r["variant"], f"AlraoHead, chunks of {r['copy_chunk_size']}"
    ),
    "N": lambda r: "-" if r["variant"] == "plain" else r["num_copies"],
    "step (ms)": lambda r: r["step_ms"],
    "min (ms)": lambda r: r["step_min_ms"],
    "time / plain": lambda r: r["time_ratio_to_plain"],
    "memory (MiB)": _memory_mib,
    "memory / plain": lambda r: r["memory_ratio_to_plain"],
    "parameters (MiB)": lambda r: r["param_bytes"] / MIB,
}
SWITCH_UPDATE = {
    "N": lambda r: r["num_copies"],
    "dispatched (us)": lambda r: (r["dispatched_us"], r["dispatched_min_us"]),
    "in a scan (us/update)": lambda r: (r["in_scan_us"], r["in_scan_min_us"]),
    "Alrao step (us)": lambda r: (r["alrao_step_us"], r["alrao_step_min_us"]),
    "in-scan / step": lambda r: 100 * r["fraction_in_scan"],
    "dispatched / step": lambda r: 100 * r["fraction_dispatched"],
}
AUTODROP_STEP = {
    "model": lambda r: r["model"],
    "batch": lambda r: r["batch_size"],
    "steps/epoch": lambda r: r["steps_per_epoch"],
    "base step (ms)": lambda r: r["base_step_ms"],
    "with AutoDrop (ms)": lambda r: r["autodrop_step_ms"],
    "ratio (medians)": lambda r: r["ratio"],
    "ratio (minima)": lambda r: r["ratio_of_minima"],
    "extra memory (param. copies)": lambda r: r["extra_memory_parameter_copies"],
}
NOH_META = {
    "T": lambda r: r["unroll"],
    "order": lambda r: r["order"],
    "remat": lambda r: "yes" if r["remat"] else "no",
    "meta-step (ms)": lambda r: 1e3 * r["seconds"],
    "min (ms)": lambda r: 1e3 * r["min_seconds"],
    "memory (MiB)": lambda r: r["memory_bytes"] / MIB,
    "compile (s)": lambda r: r["compile_s"],
}
NOH_FROZEN = {
    "optimizer": lambda r: (
        "Adam" if r["optimizer"] == "adam" else f"NOH-Adam, S = {r['update_every']}"
    ),
    "step (us)": lambda r: 1e6 * r["seconds"],
    "min (us)": lambda r: 1e6 * r["min_seconds"],
    "ratio to Adam": lambda r: r["ratio"],
}
LR_GRID = {
    "rates G": lambda r: len(r["learning_rates"]),
    "epochs": lambda r: r["epochs"],
    "steps/epoch": lambda r: r["steps_per_epoch"],
    "population (s)": lambda r: r["population_wall_s"],
    "sequential (s)": lambda r: r["sequential_wall_s"],
    "sequential / population": lambda r: r["sequential_wall_s"] / r["population_wall_s"],
    "member-steps/s population": lambda r: r["population_member_steps_per_s"],
    "member-steps/s sequential": lambda r: r["sequential_member_steps_per_s"],
    "max abs. diff. best val. loss": lambda r: r["max_abs_validation_loss_difference"],
}
INPUT_PIPELINE = {
    "setting": lambda r: r["setting"],
    "batch": lambda r: "x".join(map(str, r["batch_shape"]["x"])),
    "loader (batches/s)": lambda r: r["loader"]["median_per_s"],
    "step (steps/s)": lambda r: r["step"]["median_per_s"],
    "end to end (steps/s)": lambda r: r["end_to_end"]["median_per_s"],
    "with prefetch (steps/s)": lambda r: r["end_to_end_prefetch"]["median_per_s"],
    "loader / step": lambda r: r["loader"]["median_per_s"] / r["step"]["median_per_s"],
    "loading share of an end-to-end step": lambda r: (
        100 * r["end_to_end"]["median_per_s"] / r["loader"]["median_per_s"]
    ),
    "verdict": lambda r: (
        "not the bottleneck"
        if r["loader"]["median_per_s"] > r["step"]["median_per_s"]
        else "**bottleneck**"
    ),
}
RANGE_TEST = {
    "model": lambda r: r["model"],
    "steps": lambda r: r["steps_run"],
    "compilations (traced rate)": lambda r: r["traced_compilations"],
    "wall s (traced rate)": lambda r: r["traced_wall_s"],
    "compilations (re-jit per rate)": lambda r: (
        f"{r['naive_compilations']} per {r['naive_iters_measured']}"
    ),
    "wall s (re-jit, extrapolated)": lambda r: r["naive_wall_s_extrapolated"],
    "re-jit / traced": lambda r: r["naive_wall_s_extrapolated"] / r["traced_wall_s"],
}
LOOP_ENGINE = {  # one record per loop: the payload with ``loop`` naming the row
    "loop": lambda r: loop_engine.LOOP_NAMES[r["loop"]],
    "wall E1 (s)": lambda r: statistics.median(
        r["loops"][r["loop"]]["wall_s"][str(r["epochs"][0])]
    ),
    "wall E2 (s)": lambda r: statistics.median(
        r["loops"][r["loop"]]["wall_s"][str(r["epochs"][1])]
    ),
    "marginal epoch (ms)": lambda r: 1e3 * r["loops"][r["loop"]]["marginal_epoch"]["median_s"],
    "min (ms)": lambda r: 1e3 * r["loops"][r["loop"]]["marginal_epoch"]["min_s"],
    "per step (us)": lambda r: (
        1e6 * r["loops"][r["loop"]]["marginal_epoch"]["median_s"] / r["steps_per_epoch"]
    ),
}

# name -> [(table header start, the JSON rows, columns)], and phrases the section must contain.
TABLES = {
    "alrao_step": [("| model | batch | plain step", lambda p: p["rows"], ALRAO_STEP)],
    "alrao_copies": [("| K | head |", lambda p: p["rows"], ALRAO_COPIES)],
    "switch_update": [("| N | dispatched", lambda p: p["rows"], SWITCH_UPDATE)],
    "autodrop_step": [("| model | batch | steps/epoch", lambda p: p["rows"], AUTODROP_STEP)],
    "noh": [
        ("| T | order |", lambda p: p["meta_step"], NOH_META),
        ("| optimizer | step (us)", lambda p: p["step"], NOH_FROZEN),
    ],
    "lr_grid": [("| rates G", lambda p: p["rows"], LR_GRID)],
    "input_pipeline": [("| setting |", lambda p: p["rows"], INPUT_PIPELINE)],
    "range_test": [("| model | steps |", lambda p: p["rows"], RANGE_TEST)],
    "loop_engine": [
        ("| loop |", lambda p: [{**p, "loop": n} for n in ("scanned", "fit")], LOOP_ENGINE)
    ],
}
PHRASES = {  # what is timed and how often, as each section must state it
    "alrao_step": lambda p: [
        f"over {p['rows'][0]['repeats']} blocks of {p['rows'][0]['steps_per_block']} steps",
        f"`AlraoHead` of {p['num_copies']} copies",
    ],
    "alrao_copies": lambda p: [f"over {p['rows'][0]['repeats']} blocks", "**Timed region:**"],
    "switch_update": lambda p: [
        f"blocks of {p['calls_per_block']} calls",
        f"{p['scan_length']} updates inside one `lax.scan`",
        f"over {p['rows'][0]['repeats']} blocks",
    ],
    "autodrop_step": lambda p: [
        f"over {p['rows'][0]['repeats']} blocks of {p['rows'][0]['epochs_per_block']} epoch(s)"
    ],
    "noh": lambda p: [
        f"**Statistic:** median (min) of {p['repeats']} calls",
        f"a `lax.scan` of {p['scan_steps']} optimizee steps, median (min) of {p['repeats']} calls",
    ],
    "lr_grid": lambda p: ["**Timed region:** the whole call(s)", "one run of each"],
    "input_pipeline": lambda p: [f"median over {p['rows'][0]['loader']['repeats']} blocks"],
    "range_test": lambda p: ["**Timed region:** the whole range test", "one run of each"],
    "loop_engine": lambda p: [
        f"**Statistic:** median (min) over {p['repeats']} interleaved rounds",
        f"(wall E2 - wall E1) / {p['epochs'][1] - p['epochs'][0]}",
        f"**fit / scanned marginal epoch: {p['ratio']:.2f}x** (minima {p['ratio_of_minima']:.2f}x)",
    ],
}


@pytest.mark.parametrize("name", list(report.BENCHMARKS))
def test_each_section_shows_its_results_file(name):
    payload = committed(f"{name}_cpu")
    text = report.BENCHMARKS[name].section(payload)
    for header_start, records, columns in TABLES[name]:
        assert_table_shows(table(text, header_start), records(payload), columns)
    for phrase in PHRASES[name](payload):
        assert phrase in text, f"{name}'s section does not say {phrase!r}"


def test_alrao_copies_pivot_shows_every_ratio():
    payload = committed("alrao_copies_cpu")
    rows = table(alrao_copies.section(payload), "| N | K = ")
    assert [r["N"] for r in rows] == [str(n) for n in payload["num_copies"]]
    by_n = {r["N"]: r for r in rows}
    alrao = [r for r in payload["rows"] if r["variant"] == "alrao"]
    assert len(alrao) == len(payload["num_copies"]) * len(payload["num_classes"])
    for r in alrao:
        cell = by_n[str(r["num_copies"])][f"K = {r['num_classes']:,}"]
        assert shows(cell, (r["time_ratio_to_plain"], r["memory_ratio_to_plain"])), (r, cell)


def test_noh_states_second_to_first_order_ratios():
    payload = committed("noh_cpu")
    text = noh.section(payload)
    at = {(r["unroll"], r["order"], r["remat"]): r["seconds"] for r in payload["meta_step"]}
    line = next(x for x in text.splitlines() if x.startswith("Second / first order"))
    shown = dict(re.findall(r"T = (\d+): (\d+\.\d+)", line))
    unrolls = sorted({r["unroll"] for r in payload["meta_step"]})
    assert sorted(map(int, shown)) == unrolls
    for t in unrolls:
        assert shows(shown[str(t)], at[(t, "second", False)] / at[(t, "first", False)])


def test_the_report_is_the_committed_results_md():
    """``run_all --report-only`` over the committed files gives the committed ``RESULTS.md`` (every
    number, and every word): re-rendering is idempotent."""
    text = report.render_from_files(str(RESULTS_DIR))
    expected = RESULTS_MD.read_text()
    assert report.finite_numbers_in_tables(text) == report.finite_numbers_in_tables(expected)
    assert text == expected


def test_the_report_holds_every_section_in_order():
    """Independent of the committed file: a heading per benchmark, in order, each followed by that
    benchmark's own section and the line saying where its figures come from; the headlines."""
    results = report.load_results(report.BENCHMARKS, str(RESULTS_DIR))
    assert set(results) == set(report.BENCHMARKS)
    record = report.load_run_record(str(RESULTS_DIR))
    text = report.render(results, record["environment"], record["sizes"])
    position = 0
    for number, (name, module) in enumerate(report.BENCHMARKS.items(), start=1):
        body = (
            f"## {number}. {module.TITLE}\n\n{module.section(results[name])}\n\n"
            f"{common.describe_measurement(results[name])}\n"
        )
        found = text.find(body, position)
        assert found >= 0, f"section {number} ({name}) missing or out of order"
        position = found + len(body)
    headlines = text[text.index("## Headlines") : text.index("## 1. ")]
    for name, module in report.BENCHMARKS.items():
        assert f"- {module.headline(results[name])}\n" in headlines, name
    env = record["environment"]
    for fact in (env["date"], env["command"], f"jax {env['jax']}", f"{env['cpu_count']} CPU cores"):
        assert fact in text


def test_a_benchmark_run_alone_prints_its_report_section(monkeypatch, capsys):
    """One renderer per benchmark: what ``python -m benchmarks.<name>`` prints is ``section``."""
    for name in ("alrao_copies", "switch_update", "noh", "lr_grid", "input_pipeline"):
        module, payload = report.BENCHMARKS[name], committed(f"{name}_cpu")
        monkeypatch.setattr(module, "run", lambda sizes, results_dir, payload=payload: payload)
        module.main(["--sizes", "cpu"])
        assert capsys.readouterr().out == module.section(payload) + "\n", name
    monkeypatch.setattr(common, "write_result", lambda *args, **kwargs: "nowhere.json")
    for name, measure, argv in (
        ("alrao_step", "measure", ["--models", "mlp", "cnn1d"]),
        ("autodrop_step", "bench", []),
        ("range_test", "measure", []),
    ):
        module, payload = report.BENCHMARKS[name], committed(f"{name}_cpu")
        rows = iter(payload["rows"])
        monkeypatch.setattr(module, measure, lambda *args, rows=rows: next(rows))
        module.main(argv)
        printed = capsys.readouterr().out
        assert printed.startswith(module.section(payload) + "\n"), name


# ------------------------------------------------------------------------------------------------
# The README's tables.

README = ROOT / "README.md"
README_MODELS = {
    "mlp": "MNIST-1D MLP 100-100",
    "vgg19": "VGG19",
    "mobilenetv2": "MobileNetV2",
    "googlenet": "GoogLeNet",
}
README_TABLES = {  # module -> (its results file, [(header start, records, columns)])
    alrao_step: (
        "alrao_step_cpu_custom",
        [
            (
                "| model | batch | plain SGD step",
                lambda p: p["rows"],
                {
                    "model": lambda r: README_MODELS[r["model"]],
                    "batch": lambda r: r["batch_size"],
                    "plain SGD step (ms)": lambda r: r["plain_step_ms"],
                    "Alrao-SGD step (ms)": lambda r: r["alrao_step_ms"],
                    "ratio": lambda r: r["alrao_step_ms"] / r["plain_step_ms"],
                    "params plain": lambda r: r["plain_params"],
                    "params Alrao": lambda r: r["alrao_params"],
                },
            )
        ],
    ),
    autodrop_step: (
        "autodrop_step_cpu_custom",
        [
            (
                "| model | batch | steps/epoch",
                lambda p: p["rows"],
                {
                    h.replace("(", "[").replace(")", "]") if "ms" in h or "copies" in h else h: get
                    for h, get in AUTODROP_STEP.items()
                },
            )
        ],
    ),
    noh: (
        "noh_cpu_custom",
        [
            (
                "| unroll | remat |",
                lambda p: p["meta_step"],
                {
                    "unroll": lambda r: r["unroll"],
                    "remat": lambda r: str(r["remat"]),
                    "meta-step time (ms)": lambda r: 1e3 * r["seconds"],
                    "compiled memory (MiB)": lambda r: r["memory_bytes"] / MIB,
                },
            ),
            (
                "| optimizer | step time (us)",
                lambda p: [{**r, "adam": p["step"][0]["seconds"]} for r in p["step"]],
                {
                    "optimizer": lambda r: {"adam": "Adam"}.get(
                        r["optimizer"], f"NOH-Adam, S = {r['optimizer'].split('_S')[-1]}"
                    ),
                    "step time (us)": lambda r: 1e6 * r["seconds"],
                    "ratio to Adam": lambda r: r["seconds"] / r["adam"],
                },
            ),
        ],
    ),
    range_test: (
        "range_test_cpu_custom",
        [
            (
                "| model | steps |",
                lambda p: p["rows"],
                {h: get for h, get in RANGE_TEST.items() if h != "re-jit / traced"},
            )
        ],
    ),
}


@pytest.mark.parametrize("module", list(README_TABLES), ids=lambda m: m.__name__)
def test_readme_table_shows_its_results_file(module):
    name, tables = README_TABLES[module]
    payload = committed(name)
    text = module.readme_table(payload)
    for header_start, records, columns in tables:
        assert_table_shows(table(text, header_start), records(payload), columns)


def test_the_readme_quotes_the_readme_tables():
    """The README shows each ``readme_table`` (and the report's table of sections) verbatim."""
    readme = README.read_text()
    for module, (name, _) in README_TABLES.items():
        assert module.readme_table(committed(name)) in readme, module.__name__
    assert report.readme_sections_table() in readme
    for module in (alrao_copies, switch_update, lr_grid, input_pipeline):
        assert not hasattr(module, "readme_table")  # the README shows no table of theirs
