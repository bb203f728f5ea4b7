"""The README's result tables, rendered from committed results: one command rewrites them all.

Commands (from the repository root)::

    .venv/bin/python -m experiments.readme_tables          # rewrite README.md's marked tables
    .venv/bin/python -m experiments.readme_tables --check  # exit 1, with a diff, if README is stale
    .venv/bin/python -m experiments.readme_tables record demo runs/demo/summary.json \\
        --command ".venv/bin/python -m experiments.demo --workdir runs/demo" --wall-time-s 191.0

Each result table of README.md's "Results" section sits between two markers::

    <!-- results: <stem>/<table> -->
    ...generated: one line (command, hardware, date, wall time), then the table...
    <!-- /results -->

``<stem>`` names a results file: ``experiments/results/<stem>.json`` (one experiment run, written
by ``record``) or ``benchmarks/results/<stem>.json`` (one benchmark run, written by the
benchmark). ``<table>`` names a table of that file (:data:`TABLES`; a benchmark file has one,
``table``). The tables are rendered by the experiments' and benchmarks' own table functions
(``experiments.demo.demo_table``, ``experiments.alrao_compare.table``,
``benchmarks.alrao_step.readme_table``, ...), so the README shows what the script printed for that
run. A table of the section that is not a result (a list of scripts, a dataset's statistics) is
preceded by a ``<!-- not a result: <why> -->`` line instead; ``--check`` fails on any other table
outside the markers, with its line number.

``record`` wraps one run's ``results.json`` (``summary.json`` for ``demo``, ``noh`` and ``smith``)
as ``experiments/results/<stem>.json``: ``{"command", "hardware", "versions", "date",
"wall_time_s", "results"}``, with ``results`` the script's file as it wrote it, less the traces no
table needs that ``--drop`` names (``--drop 'runs[].curves'`` for ``autodrop_train``; the file
lists them under ``"dropped"``). ``alrao_appendix all`` writes one ``results.json`` per study:
``record alrao_appendix runs/alrao_appendix`` reads the directory. The committed files were run
from a copy of the repository (``cd <copy> && nice -n 5 .venv/bin/python -m experiments.<name>``)
and recorded with the wall time of the whole command, measured outside it.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import difflib
import importlib
import importlib.metadata
import json
import os
import platform
import re
import sys
from collections.abc import Callable, Sequence
from typing import Any

from experiments._common import positive_float

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(ROOT, "README.md")
RESULTS_DIR = os.path.join(ROOT, "experiments", "results")
BENCHMARK_RESULTS_DIR = os.path.join(ROOT, "benchmarks", "results")

OPEN = re.compile(r"^<!-- results: (?P<stem>[\w.-]+)/(?P<table>[\w.-]+) -->$")
CLOSE = "<!-- /results -->"
NOT_A_RESULT = re.compile(r"^<!-- not a result: .+ -->$")
SECTION = "## Results"
VERSION_PACKAGES = ("jax", "jaxlib", "flax", "optax", "numpy")


def _module(name: str):
    return importlib.import_module(f"experiments.{name}")


def _demote_headings(text: str) -> str:
    """``## Title`` lines as ``**Title**``: a script's own headings inside a README subsection."""
    return "\n".join(
        f"**{line[3:].strip()}**" if line.startswith("## ") else line for line in text.splitlines()
    )


# --- experiments: one renderer per table, from the recorded file's ``results`` ---------------


def _demo(results: dict) -> str:
    return _module("demo").demo_table(results["result"])


def _compare_table1(results: dict) -> str:
    return _module("alrao_compare").table(results["results"])


def _compare_grid(results: dict) -> str:
    return _module("alrao_compare").grid_table(results["results"])


def _compare_paper(results: dict) -> str:
    del results
    return _module("alrao_compare").PAPER_TABLE1


def _interval(results: dict) -> str:
    return _module("alrao_interval").table(results["cells"])


def _posterior(results: dict) -> str:
    return _module("alrao_posterior").table(results)


def _appendix(study: str) -> Callable[[dict], str]:
    def render(results: dict) -> str:
        return _module("alrao_appendix")._table(results[study]["rows"])

    return render


def _word_lm(part: str) -> Callable[[dict], str]:
    """One ``## ...`` part of the script's table: ``perplexity``, ``parameters``, ``step_time``."""

    def render(results: dict) -> str:
        module = _module("alrao_word_lm")
        setting = module.Setting(**results["setting"])
        text = module.table(setting, results)
        parts = re.split(r"^(?=## )", text, flags=re.M)
        parts = [p.strip() for p in parts if p.strip()]
        index = WORD_LM_PARTS.index(part)
        if index >= len(parts):
            raise ValueError(f"alrao_word_lm's table has no {part!r} part in this run")
        return _demote_headings(parts[index])

    return render


WORD_LM_PARTS = ("perplexity", "parameters", "step_time")


def _nqm_closed_form(results: dict) -> str:
    return _module("autodrop_nqm").closed_form_table(results["closed_forms"])


def _nqm_runs(results: dict) -> str:
    # The script's tail: the last twentieth of the iterations (at least one).
    tail = max(results["config"]["steps"] // 20, 1)
    return _module("autodrop_nqm").run_table(results["runs"], tail)


def _autodrop_train(name: str) -> Callable[[dict], str]:
    def render(results: dict) -> str:
        module = _module("autodrop_train")
        setup = module.Setup(**results["setup"])
        return getattr(module, name)(results["runs"], setup)

    return render


def _noh(results: dict) -> str:
    # The table reads the last point of each curve; summary.json keeps exactly those points.
    final = {
        dataset: {
            "runs": {
                run: {
                    **({"learning_rate": v["learning_rate"]} if "learning_rate" in v else {}),
                    "train_loss": [v["train_loss"]],
                    "validation_accuracy": [v["validation_accuracy"]],
                    "test_accuracy": [v["test_accuracy"]],
                }
                for run, v in runs.items()
            }
        }
        for dataset, runs in results["final"].items()
    }
    return _module("noh")._table(final)


def _smith(doc: dict) -> str:
    module = _module("smith")
    results = doc["results"]
    settings = module.Settings(
        **{k: tuple(v) if isinstance(v, list) else v for k, v in results["settings"].items()}
    )
    return module._table(results, settings, doc["table_args"]["steps_per_epoch"])


def _leaderboard(part: str) -> Callable[[dict], str]:
    """``overall``, ``tasks`` (every task's table, each under its name) or ``defaults``."""

    def render(results: dict) -> str:
        module = _module("leaderboard")
        if part == "overall":
            return module.overall_table(results)
        if part == "defaults":
            return module.defaults_table(results)
        return "\n\n".join(
            f"**{name}**\n\n{module.task_table(results, name)}" for name in results["tasks"]
        )

    return render


def _model_selection(name: str) -> Callable[[dict], str]:
    """``table`` (one line per strategy), ``architectures_table`` or ``finetune_table``."""

    def render(results: dict) -> str:
        return getattr(_module("alrao_model_selection"), name)(results)

    return render


@dataclasses.dataclass(frozen=True)
class Table:
    """How one marked table is rendered.

    Attributes:
      render: the recorded file's ``results`` (or, with ``whole_file``, the whole file) -> Markdown.
      provenance: start the block with the run's command, hardware, date and wall time
        (``False`` for a table that is no measurement, such as the paper's numbers).
      whole_file: ``render`` takes the whole recorded file (it needs ``table_args``).
    """

    render: Callable[[dict], str]
    provenance: bool = True
    whole_file: bool = False


TABLES: dict[tuple[str, str], Table] = {
    ("demo", "table"): Table(_demo),
    ("alrao_compare", "table1"): Table(_compare_table1),
    ("alrao_compare", "grid"): Table(_compare_grid),
    ("alrao_compare", "paper_table1"): Table(_compare_paper, provenance=False),
    ("alrao_interval", "table"): Table(_interval),
    ("alrao_posterior", "table"): Table(_posterior),
    **{
        ("alrao_appendix", study): Table(_appendix(study))
        for study in ("per_weight", "fraction", "adam", "wider", "params")
    },
    **{("alrao_word_lm", part): Table(_word_lm(part)) for part in WORD_LM_PARTS},
    ("autodrop_nqm", "closed_form"): Table(_nqm_closed_form),
    ("autodrop_nqm", "runs"): Table(_nqm_runs),
    ("autodrop_train", "table1"): Table(_autodrop_train("table1")),
    ("autodrop_train", "table2"): Table(_autodrop_train("table2")),
    ("autodrop_train", "fig7"): Table(_autodrop_train("fig7_table")),
    ("noh", "table"): Table(_noh),
    ("smith", "table"): Table(_smith, whole_file=True),
    ("leaderboard", "overall"): Table(_leaderboard("overall")),
    ("leaderboard", "tasks"): Table(_leaderboard("tasks")),
    ("leaderboard", "defaults"): Table(_leaderboard("defaults"), provenance=False),
    ("alrao_model_selection", "table"): Table(_model_selection("table")),
    ("alrao_model_selection", "architectures"): Table(_model_selection("architectures_table")),
    ("alrao_model_selection", "finetune"): Table(_model_selection("finetune_table")),
}

# Benchmarks: ``benchmarks/results/<name>_<backend>[_custom].json`` rendered by
# ``benchmarks.<name>.readme_table``; the table name is always ``table``.
_BENCHMARK_STEM = re.compile(r"^(?P<name>\w+?)_(cpu|gpu|tpu)(_custom)?$")


def benchmark_renderer(stem: str) -> Callable[[dict], str]:
    match = _BENCHMARK_STEM.match(stem)
    if match is None:
        raise ValueError(
            f"benchmark results file {stem!r}: expected <benchmark>_<cpu|gpu|tpu>[_custom]"
        )
    module = importlib.import_module(f"benchmarks.{match['name']}")
    if not hasattr(module, "readme_table"):
        raise ValueError(f"benchmarks.{match['name']} has no readme_table(result) function")
    return module.readme_table


# --- provenance lines ---------------------------------------------------------------------------


def _seconds(value: float) -> str:
    if value < 120:
        return f"{value:.1f} s"
    return f"{value:.0f} s ({value / 60:.1f} min)"


def provenance(doc: dict) -> str:
    """The line above a table: the exact command, the hardware, the date and the wall time."""
    return (
        f"Command: `{doc['command']}`. Hardware: {doc['hardware']}. Date: {doc['date']}. "
        f"Wall time: {_seconds(doc['wall_time_s'])}."
    )


def benchmark_provenance(stem: str, result: dict) -> str:
    """What a benchmark's file says about its run (files written by a run alone say less)."""
    env = result.get("environment") or {}
    parts = [f"From `benchmarks/results/{stem}.json`"]
    if env.get("command"):
        parts.append(f"command `{env['command']}`")
    device = env.get("device_kind") or result.get("device_kind") or result.get("device")
    if device:
        parts.append(f"device {device}")
    if env.get("cpu_count"):
        parts.append(f"{env['cpu_count']} CPUs")
    if env.get("load_average"):
        parts.append("load average " + ", ".join(f"{x:.2f}" for x in env["load_average"]))
    if env.get("date"):
        parts.append(env["date"])
    if env.get("jax") or result.get("jax"):
        parts.append(f"jax {env.get('jax') or result.get('jax')}")
    line = "; ".join(parts) + "."
    if result.get("note"):
        line += f" Note: {result['note'].rstrip('.')}."
    return line


# --- rendering the README -----------------------------------------------------------------------


def _load(path: str) -> dict:
    with open(path) as f:
        return json.load(f)


def render_block(
    stem: str,
    table: str,
    *,
    results_dir: str = RESULTS_DIR,
    benchmark_results_dir: str = BENCHMARK_RESULTS_DIR,
) -> str:
    """The generated text between the markers of ``<stem>/<table>`` (without the markers)."""
    experiment = os.path.join(results_dir, f"{stem}.json")
    if os.path.exists(experiment):
        spec = TABLES.get((stem, table))
        if spec is None:
            known = sorted(f"{s}/{t}" for s, t in TABLES if s == stem)
            raise ValueError(f"no table {table!r} for {stem!r}; known: {', '.join(known)}")
        doc = _load(experiment)
        text = spec.render(doc if spec.whole_file else doc["results"])
        return (provenance(doc) + "\n\n" + text) if spec.provenance else text
    benchmark = os.path.join(benchmark_results_dir, f"{stem}.json")
    if os.path.exists(benchmark):
        if table != "table":
            raise ValueError(f"benchmark {stem!r}: the table is called 'table', got {table!r}")
        result = _load(benchmark)
        return benchmark_provenance(stem, result) + "\n\n" + benchmark_renderer(stem)(result)
    raise FileNotFoundError(
        f"results file for {stem!r} not found: neither {experiment} nor {benchmark}"
    )


def rewrite(text: str, **dirs: str) -> str:
    """``text`` with every marked block regenerated; everything outside the markers unchanged."""
    lines = text.split("\n")
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        out.append(line)
        match = OPEN.match(line.strip())
        if match is None:
            if line.strip().startswith("<!-- results:"):
                raise ValueError(f"line {i + 1}: malformed marker {line.strip()!r}")
            i += 1
            continue
        end = i + 1
        while end < len(lines) and lines[end].strip() != CLOSE:
            if OPEN.match(lines[end].strip()):
                raise ValueError(f"line {i + 1}: marker opened again at line {end + 1}")
            end += 1
        if end == len(lines):
            raise ValueError(f"line {i + 1}: {line.strip()!r} has no closing {CLOSE!r}")
        out.append(render_block(match["stem"], match["table"], **dirs))
        out.append("")
        out.append(lines[end])
        i = end + 1
    return "\n".join(out)


def _results_section(lines: Sequence[str]) -> tuple[int, int]:
    """First and one-past-last line index of the Results section (its heading to the next)."""
    start = next((k for k, line in enumerate(lines) if line.strip() == SECTION), None)
    if start is None:
        raise ValueError(f"README has no {SECTION!r} heading")
    fenced = False
    for k in range(start + 1, len(lines)):
        if lines[k].strip().startswith("```"):
            fenced = not fenced
        elif not fenced and (lines[k].startswith("## ") or lines[k].startswith("# ")):
            return start, k
    return start, len(lines)


def unmarked_tables(text: str) -> list[int]:
    """1-based line numbers of the Results section's tables outside the markers.

    A table is a run of lines starting with ``|`` outside fenced code; one preceded by a
    ``<!-- not a result: ... -->`` line is allowed.
    """
    lines = text.split("\n")
    start, end = _results_section(lines)
    found, inside, fenced, previous = [], False, False, ""
    in_table = False
    for k in range(start, end):
        stripped = lines[k].strip()
        if stripped.startswith("```"):
            fenced = not fenced
        if OPEN.match(stripped):
            inside = True
        elif stripped == CLOSE:
            inside = False
        is_row = not fenced and stripped.startswith("|")
        if is_row and not in_table and not inside and not NOT_A_RESULT.match(previous):
            found.append(k + 1)
        in_table = is_row
        if stripped:
            previous = stripped
    return found


def _diff(old: str, new: str, path: str) -> str:
    return "".join(
        difflib.unified_diff(
            old.splitlines(keepends=True),
            new.splitlines(keepends=True),
            fromfile=f"{path} (committed)",
            tofile=f"{path} (from the results files)",
        )
    )


def check(path: str = README, **dirs: str) -> tuple[bool, str]:
    """Whether ``path`` is what :func:`rewrite` writes and has no unmarked table; and why not."""
    with open(path) as f:
        old = f.read()
    new = rewrite(old, **dirs)
    problems = []
    if new != old:
        problems.append(_diff(old, new, os.path.relpath(path, ROOT)))
    unmarked = unmarked_tables(old)
    if unmarked:
        problems.append(
            f"{path}: tables outside <!-- results: ... --> markers at line(s) "
            + ", ".join(map(str, unmarked))
            + " (mark them, or precede a table that is not a result with "
            "'<!-- not a result: <why> -->')"
        )
    return not problems, "\n".join(problems)


# --- recording a run ------------------------------------------------------------------------------


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in VERSION_PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _read_results(stem: str, path: str) -> dict:
    if os.path.isdir(path):  # alrao_appendix all: <dir>/<study>/results.json
        studies = {}
        for name in sorted(os.listdir(path)):
            study = os.path.join(path, name, "results.json")
            if os.path.exists(study):
                with open(study) as f:
                    studies[name] = json.load(f)
        if not studies:
            raise FileNotFoundError(f"{stem}: no <study>/results.json under {path}")
        return studies
    with open(path) as f:
        return json.load(f)


def drop_keys(results: Any, path: str) -> int:
    """Delete ``path`` from ``results`` in place; return how many entries went.

    ``path`` is dotted; ``[]`` after a name walks every element of that list:
    ``"runs[].curves"`` drops each run's per-epoch curves.
    """
    head, _, rest = path.partition(".")
    each = head.endswith("[]")
    name = head[:-2] if each else head
    if not isinstance(results, dict) or name not in results:
        return 0
    if not rest:
        del results[name]
        return 1
    children = results[name] if each else [results[name]]
    return sum(drop_keys(child, rest) for child in children)


def _smith_table_args(results: dict) -> dict:
    from randlr_jax import data as rdata

    s = results["settings"]
    splits = rdata.train_val_test("mnist1d", validation_size=s["validation_size"], seed=s["seed"])
    return {"steps_per_epoch": rdata.num_batches(len(splits["train"]["y"]), s["batch_size"], True)}


# What a table needs besides the script's file, computed when the run is recorded.
TABLE_ARGS: dict[str, Callable[[dict], dict]] = {"smith": _smith_table_args}


def record(
    stem: str,
    path: str,
    *,
    command: str,
    wall_time_s: float,
    date: str | None = None,
    hardware: str | None = None,
    load_note: str | None = None,
    drop: Sequence[str] = (),
    results_dir: str = RESULTS_DIR,
) -> str:
    """Write ``<results_dir>/<stem>.json`` from a run's results file; return its path.

    ``drop``: paths (:func:`drop_keys`) of large traces no table needs; the file lists them under
    ``"dropped"``.
    """
    if wall_time_s <= 0:
        raise ValueError(f"wall_time_s must be positive, got {wall_time_s!r}")
    results = _read_results(stem, path)
    for key in drop:
        if drop_keys(results, key) == 0:
            raise ValueError(f"{stem}: nothing at {key!r} to drop")
    if hardware is None:
        hardware = f"{cpu_model()}, {os.cpu_count()} CPU cores"
        hardware += f" ({load_note})" if load_note else ""
    doc: dict[str, Any] = {
        "command": command,
        "hardware": hardware,
        "versions": versions(),
        "date": date or datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "wall_time_s": round(float(wall_time_s), 1),
        "results": results,
    }
    if drop:
        doc["dropped"] = list(drop)
    if stem in TABLE_ARGS:
        doc["table_args"] = TABLE_ARGS[stem](results)
    os.makedirs(results_dir, exist_ok=True)
    out = os.path.join(results_dir, f"{stem}.json")
    with open(out, "w") as f:
        json.dump(doc, f, indent=1)
        f.write("\n")
    return out


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["record"]:
        parser = argparse.ArgumentParser(
            prog="python -m experiments.readme_tables record",
            description="wrap one run's results as experiments/results/<stem>.json",
        )
        parser.add_argument("stem", help="results file name, e.g. alrao_compare")
        parser.add_argument("path", help="the run's results.json / summary.json (or directory)")
        parser.add_argument("--command", required=True, help="the exact command that was run")
        parser.add_argument("--wall-time-s", type=positive_float, required=True)
        parser.add_argument("--date", default=None, help="when it ran (default: now, UTC)")
        parser.add_argument("--hardware", default=None, help="default: CPU model and core count")
        parser.add_argument("--load-note", default=None, help="appended to the default hardware")
        parser.add_argument(
            "--drop",
            action="append",
            default=[],
            help="a trace no table needs, e.g. 'runs[].curves' (repeatable)",
        )
        parser.add_argument("--results-dir", default=RESULTS_DIR)
        args = parser.parse_args(argv[1:])
        print(
            record(
                args.stem,
                args.path,
                command=args.command,
                wall_time_s=args.wall_time_s,
                date=args.date,
                hardware=args.hardware,
                load_note=args.load_note,
                drop=args.drop,
                results_dir=args.results_dir,
            )
        )
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 (with a diff) if stale")
    parser.add_argument("--readme", default=README)
    parser.add_argument("--results-dir", default=RESULTS_DIR)
    parser.add_argument("--benchmark-results-dir", default=BENCHMARK_RESULTS_DIR)
    args = parser.parse_args(argv)
    dirs = {"results_dir": args.results_dir, "benchmark_results_dir": args.benchmark_results_dir}
    if args.check:
        ok, why = check(args.readme, **dirs)
        if not ok:
            print(why)
            return 1
        print(f"{args.readme}: every result table is up to date")
        return 0
    with open(args.readme) as f:
        old = f.read()
    new = rewrite(old, **dirs)
    if new != old:
        with open(args.readme, "w") as f:
            f.write(new)
    unmarked = unmarked_tables(new)
    if unmarked:
        print(f"warning: tables outside markers at line(s) {', '.join(map(str, unmarked))}")
    print(f"{args.readme}: {'rewritten' if new != old else 'unchanged'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
