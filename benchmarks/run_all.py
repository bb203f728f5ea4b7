"""Run every benchmark of the library and write ``benchmarks/RESULTS.md`` (``make bench``).

The backend decides the sizes: on a GPU or TPU the ``accelerator`` size set (the paper's models and
batches), on a CPU the ``cpu`` set (small models and batches: 14 minutes on 2 cores shared with other
jobs, load average ~8), and the report
says which. Each benchmark writes its JSON to ``<out-dir>/results/<name>_<backend>.json``; the report is
generated from those files (sections not run by this command are taken from earlier results files, and
say so) and from ``<out-dir>/results/run_all_<backend>.json``, the record of the measuring run (its
environment, size set, the benchmarks it ran and those that failed): ``--report-only`` re-renders the
report of the last measuring run from the files alone, header included.

Commands (from the repository root)::

    python -m benchmarks.run_all                        # everything; writes benchmarks/RESULTS.md
    python -m benchmarks.run_all --only noh,lr_grid     # a subset; the report keeps the other sections
    python -m benchmarks.run_all --quick                # every code path at toy sizes (a few minutes,
                                                        # mostly compilation); writes runs/bench_quick/
    python -m benchmarks.run_all --report-only          # regenerate RESULTS.md from the JSON files
    python -m benchmarks.run_all --list                 # the benchmark names

Benchmarks: ``alrao_step``, ``alrao_copies``, ``switch_update``, ``autodrop_step``, ``noh``, ``lr_grid``,
``input_pipeline``, ``range_test``, ``loop_engine`` (each also runs alone: ``python -m
benchmarks.<name>``). A lent GPU's few minutes: ``benchmarks/device_check.sh`` (its header says how);
its results files, unpacked into ``benchmarks/results/``, join the report (``--report-only``) as a
part of their own after this backend's.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import traceback

from benchmarks import common, report

# name -> the benchmark's ``run(sizes, results_dir)``, in report order.
BENCHMARKS = {name: module.run for name, module in report.BENCHMARKS.items()}
DEFAULT_OUT_DIR = os.path.dirname(os.path.abspath(__file__))
QUICK_OUT_DIR = os.path.join("runs", "bench_quick")
SHARED_NOTE = (
    "The host's cores were shared with other jobs while this ran (see the load averages above): "
    "absolute times are pessimistic and noisy; the ratios are measured within one run."
)


def parse_only(value: str | None) -> list[str]:
    """``"a,b"`` -> ``["a", "b"]`` in report order, every name checked against :data:`BENCHMARKS`."""
    if value is None:
        return list(BENCHMARKS)
    names = [n.strip() for n in value.split(",") if n.strip()]
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown or not names:
        raise SystemExit(
            f"--only must be a comma-separated list of {sorted(BENCHMARKS)}, got {value!r}."
        )
    return [n for n in BENCHMARKS if n in names]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="toy sizes, every code path")
    parser.add_argument("--only", default=None, help="comma-separated benchmark names")
    parser.add_argument(
        "--sizes",
        choices=common.SIZE_SETS,
        default=None,
        help="override the size set (default: accelerator on GPU/TPU, cpu on CPU, quick with --quick)",
    )
    parser.add_argument(
        "--out-dir",
        default=None,
        help=f"where RESULTS.md and results/ go (default {DEFAULT_OUT_DIR}; with --quick "
        f"{QUICK_OUT_DIR})",
    )
    parser.add_argument(
        "--report-only", action="store_true", help="only regenerate RESULTS.md from results/"
    )
    parser.add_argument("--list", action="store_true", help="print the benchmark names and exit")
    args = parser.parse_args(argv)
    if args.list:
        print("\n".join(BENCHMARKS))
        return 0
    names = parse_only(args.only)
    sizes = args.sizes or common.default_size_set(args.quick)
    out_dir = args.out_dir or (QUICK_OUT_DIR if sizes == "quick" else DEFAULT_OUT_DIR)
    results_dir = os.path.join(out_dir, "results")
    environment = common.environment()
    started = time.perf_counter()
    failures: dict[str, str] = {}
    ran: list[str] = []
    if not args.report_only:
        common.log(
            f"benchmarks on {environment['device_count']} x {environment['device_kind']}, "
            f"sizes {sizes!r}: {', '.join(names)}"
        )
        for name in names:
            t0 = time.perf_counter()
            try:
                BENCHMARKS[name](sizes, results_dir)
                ran.append(name)
            except Exception:  # noqa: BLE001 - one failure must not lose the other sections
                failures[name] = traceback.format_exc()
                common.log(f"{name} FAILED:\n{failures[name]}")
            common.log(f"{name}: {time.perf_counter() - t0:.0f} s")
    environment["load_average_end"] = common.load_average()
    environment["wall_time_s"] = time.perf_counter() - started
    if environment["backend"] == "cpu":
        environment["shared_machine_note"] = SHARED_NOTE
    record = report.load_run_record(results_dir) if args.report_only else None
    if record is None:  # a measuring run (or no run recorded yet): this run is the header
        record = {
            "environment": environment,
            "sizes": sizes,
            "ran": None if args.report_only else ran,
            "failures": failures,
        }
        if not args.report_only:
            report.write_run_record(environment, sizes, ran, failures, results_dir)
    text = report.render(
        report.load_results(BENCHMARKS, results_dir),
        record["environment"],
        record["sizes"],
        failures=record["failures"],
        ran=record["ran"],
    )
    text = report.with_other_backends(text, results_dir)  # e.g. a GPU run's files next to these
    path = os.path.join(out_dir, "RESULTS.md")
    os.makedirs(out_dir, exist_ok=True)
    with open(path, "w") as f:
        f.write(text)
    print(text)
    common.log(f"wrote {path} ({environment['wall_time_s']:.0f} s)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
