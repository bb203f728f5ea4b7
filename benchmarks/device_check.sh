#!/usr/bin/env bash
# The accelerator check: the benchmarks' GPU figures in one short, prepared run (about 5 minutes).
#
# A lent GPU (one H200, ~15 minutes with its start-up) runs this once, from the repository root,
# with the package on PYTHONPATH (it need not be installed):
#
#     bash benchmarks/device_check.sh "$OUT"           # on the device; results come back from $OUT
#     bash benchmarks/device_check.sh --smoke DIR      # here, on CPU: the tiny sizes only (~1 minute)
#
# Steps, each in its own Python process under its own time guard (`timeout`), so that one section
# that hangs or runs long costs only its guard, and the whole run stays inside --budget seconds
# (default 300; a section is cut to what is left, and skipped under 10 s):
#
#   1. smoke: every section below at tiny sizes in one process (import, shape and plumbing errors
#      show in seconds, before the minutes of the real sizes);
#   2. the accelerator sizes, in this order, each results file written as soon as its section ends
#      (DIR/results/<name>_<backend>.json), so a cut run still returns what finished:
#        alrao_step (VGG19, MobileNetV2, GoogLeNet at batch 32 and 128; one process per model)
#                                                       target: Alrao / plain SGD step <= 1.03
#        autodrop_step (MNIST-1D CNN)                   target: AutoDrop / base step <= 1.02
#        noh (unrolls 10, 50, 200; frozen step S = 1, 10, 50)
#                                                       target: NOH-Adam S = 10 / Adam <= 1.5
#        loop_engine (fit against a scanned loop)       target: fit / scanned epoch <= 2
#        lr_grid (7 rates, 10 epochs, compile included) target: sequential / vmapped >= 8
#        autodrop_step (ResNet-18 on CIFAR shapes, 1-epoch blocks, 3 repeats)
#        alrao_copies (accelerator sizes)               no target: time and memory against N, K
#   3. the report: DIR/results/run_all_<backend>.json (the run record), DIR/RESULTS_<backend>.md
#      (the report of this backend's files, as benchmarks/RESULTS.md shows them) and the figures
#      against their targets (printed, and at the end of the .md).
#
# Everything printed also goes to DIR/device_check.log. Device mode packs DIR/results into
# DIR/device_check_results.tgz at the end (the device returns at most 8 files); to add the GPU
# sections to benchmarks/RESULTS.md, next to the CPU ones:
#
#     tar -xzf device_check_results.tgz -C benchmarks/   # -> benchmarks/results/*_gpu.json
#     python -m benchmarks.run_all --report-only
#
# The device has no TensorFlow Datasets, array_record or mnist1d: the MNIST-1D sections then run
# on random arrays of MNIST-1D's shapes (benchmarks.common.mnist1d_splits; the report says so).
# --smoke blocks those packages here too, so the CPU smoke run imports what the device can.
#
# Options: --smoke (tiny sizes only, then the report), --only a,b (sections or benchmarks by name,
# e.g. alrao_step:vgg19,noh or alrao_step), --budget SECONDS, --list (the sections and their guards).
# Environment: PYTHON (default: .venv/bin/python if present, else python); the check stops at once
# (exit 3) where JAX finds no accelerator, unless DEVICE_CHECK_ALLOW_CPU=1. Exit status 0 when
# every step ran to its end (whatever the figures), 1 otherwise.

set -uo pipefail

usage() {
    sed -n '2,/^$/p' "$0" | sed 's/^# \{0,1\}//'
    exit "${1:-0}"
}

# name and time guard (seconds) of every accelerator section, in the order they run.
SECTIONS=(
    "alrao_step:vgg19 50"
    "alrao_step:mobilenetv2 50"
    "alrao_step:googlenet 60"
    "autodrop_step:cnn1d 25"
    "noh 50"
    "loop_engine 45"
    "lr_grid 60"
    "autodrop_step:resnet18 45"
    "alrao_copies 45"
)
SMOKE_GUARD=40      # on the device
SMOKE_GUARD_CPU=240 # --smoke here: ~2 minutes on 2 shared cores
REPORT_RESERVE=15

COMMAND="bash benchmarks/device_check.sh $*"
MODE=device
BUDGET=300
ONLY=""
DIR=""
while (($# > 0)); do
    case "$1" in
    --smoke) MODE=smoke ;;
    --budget) BUDGET="${2:-}"; shift ;;
    --only) ONLY="${2:-}"; shift ;;
    --list) for s in "${SECTIONS[@]}"; do echo "$s"; done; exit 0 ;;
    -h | --help) usage 0 ;;
    -*) echo "device_check.sh: unknown option $1" >&2; usage 2 ;;
    *) DIR="$1" ;;
    esac
    shift
done
DIR="${DIR:-${OUT:-}}"
if [[ -z "$DIR" ]]; then
    echo "device_check.sh: give the output directory (or set OUT)" >&2
    exit 2
fi
if ! [[ "$BUDGET" =~ ^[0-9]+$ ]]; then
    echo "device_check.sh: --budget must be a whole number of seconds, got $BUDGET" >&2
    exit 2
fi
if [[ -n "$ONLY" ]]; then
    for name in ${ONLY//,/ }; do
        if [[ " $(printf '%s ' "${SECTIONS[@]%% *}") " != *" $name"[\ :]* ]]; then
            echo "device_check.sh: --only: unknown section $name (see --list)" >&2
            exit 2
        fi
    done
fi

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT" || exit 2
if [[ -z "${PYTHON:-}" ]]; then
    if [[ -x .venv/bin/python ]]; then
        PYTHON=.venv/bin/python
    else
        PYTHON="$(command -v python || command -v python3)"
    fi
fi
mkdir -p "$DIR/results"
DIR="$(cd "$DIR" && pwd)"
RESULTS="$DIR/results"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
if [[ "$MODE" == smoke ]]; then
    # What the device lacks, missing here too (imports fail as they would there).
    mkdir -p "$WORK/block"
    cat >"$WORK/block/sitecustomize.py" <<'EOF'
import sys

BLOCKED = ("tensorflow_datasets", "array_record", "mnist1d", "tensorflow")


class _Hidden:
    """A finder of ``sys.meta_path`` that finds nothing of ``BLOCKED``: absent, as on the device."""

    def __init__(self, finder):
        self.finder = finder

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            return None
        find = getattr(self.finder, "find_spec", None)
        return None if find is None else find(name, path, target)

    def __getattr__(self, attribute):
        return getattr(self.finder, attribute)


sys.meta_path[:] = [_Hidden(finder) for finder in sys.meta_path]
EOF
    export PYTHONPATH="$WORK/block:$PYTHONPATH"
    export JAX_PLATFORMS="${JAX_PLATFORMS:-cpu}"
fi
exec > >(tee -a "$DIR/device_check.log") 2>&1

DRIVER="$WORK/device_check_driver.py"
cat >"$DRIVER" <<'EOF'
"""device_check.sh's Python side: one section per call (``smoke``, ``section NAME``, ``report``)."""

import contextlib
import json
import os
import sys
import time

from benchmarks import common


@contextlib.contextmanager
def sizes_of(module, sizes, **overrides):
    """``module.SIZES[sizes]`` with ``overrides`` (only keys it has) for the duration."""
    config = module.SIZES[sizes]
    unknown = sorted(set(overrides) - set(config))
    if unknown:  # a renamed setting must fail here, not be ignored
        raise KeyError(
            f"{module.__name__}.SIZES[{sizes!r}] has no {unknown}; it has {sorted(config)}"
        )
    saved = dict(config)
    config.update(overrides)
    try:
        yield config
    finally:
        config.clear()
        config.update(saved)


def relabel(name, results_dir, sizes):
    """Set the size-set label of a results file written by a module's ``run``."""
    path = common.results_path(name, results_dir)
    with open(path) as f:
        payload = json.load(f)
    payload["sizes"] = sizes
    with open(path, "w") as f:
        json.dump(payload, f, indent=2)


def merged_rows(name, results_dir, rows, key, order):
    """The rows of ``name``'s results file in ``results_dir`` with ``rows`` replacing those of the
    same ``key`` (one process per model adds its rows to what the earlier ones wrote)."""
    path = common.results_path(name, results_dir)
    old = []
    if os.path.exists(path):
        with open(path) as f:
            old = json.load(f)["rows"]
    new_keys = {r[key] for r in rows}
    kept = [r for r in old if r[key] not in new_keys] + rows
    return sorted(kept, key=lambda r: (order.index(r[key]), r.get("batch_size", 0)))


def alrao_step_model(model, results_dir, steps, repeats, batch_sizes, sizes):
    from benchmarks import alrao_step

    rows = []
    for batch_size in batch_sizes:
        rows.append(alrao_step.measure(model, batch_size, steps, repeats, 10))
        common.log(f"alrao_step {model} batch {batch_size}: ratio {rows[-1]['ratio']:.3f}")
    order = list(alrao_step.CIFAR_MODELS + alrao_step.MNIST1D_MODELS)
    rows = merged_rows("alrao_step", results_dir, rows, "model", order)
    common.write_result("alrao_step", sizes, {"num_copies": 10, "rows": rows}, results_dir)


def autodrop_model(model, results_dir, epochs, repeats, sizes):
    from benchmarks import autodrop_step

    row = autodrop_step.bench(model, 128, epochs, repeats)
    rows = merged_rows("autodrop_step", results_dir, [row], "model", ["cnn1d", "resnet18"])
    accelerator = autodrop_step.SIZES["accelerator"]
    if sizes != "quick" and any(
        (r["epochs_per_block"], r["repeats"]) != (accelerator["epochs"], accelerator["repeats"])
        for r in rows
    ):
        sizes = "device_check"
    common.write_result("autodrop_step", sizes, {"rows": rows}, results_dir)


# The device check's sections at accelerator sizes: name -> function(results_dir).
NOH_TRIM = {"unrolls": (10, 50, 200), "remat_at": (200,)}


def _noh(results_dir):
    from benchmarks import noh

    with sizes_of(noh, "accelerator", **NOH_TRIM):
        noh.run("accelerator", results_dir)
    relabel("noh", results_dir, "device_check")


def _module(name):
    def run(results_dir):
        __import__(f"benchmarks.{name}", fromlist=["run"]).run("accelerator", results_dir)

    return run


def _alrao_step(model):
    def run(results_dir):
        from benchmarks import alrao_step

        config = alrao_step.SIZES["accelerator"]
        alrao_step_model(
            model,
            results_dir,
            config["steps"],
            config["repeats"],
            config["batch_sizes"],
            "accelerator",
        )

    return run


def _autodrop(model, epochs=None, repeats=None):
    """AutoDrop for one model at the accelerator sizes, or with ``epochs`` per block and ``repeats``
    (the results file is then labelled ``device_check``)."""

    def run(results_dir):
        from benchmarks import autodrop_step

        config = autodrop_step.SIZES["accelerator"]
        autodrop_model(
            model,
            results_dir,
            epochs or config["epochs"],
            repeats or config["repeats"],
            "accelerator",
        )

    return run


SECTIONS = {
    **{f"alrao_step:{m}": _alrao_step(m) for m in ("vgg19", "mobilenetv2", "googlenet")},
    "autodrop_step:cnn1d": _autodrop("cnn1d"),
    "autodrop_step:resnet18": _autodrop("resnet18", epochs=1, repeats=3),
    "noh": _noh,
    "lr_grid": _module("lr_grid"),
    "loop_engine": _module("loop_engine"),
    "alrao_copies": _module("alrao_copies"),
}


# The smoke run's sizes: each module's ``quick`` set with these settings changed.
SMOKE_OVERRIDES = {
    "noh": {"orders": ("first",), "steps": 10, "repeats": 2},
    "lr_grid": {"num_rates": 2, "epochs": 1},
    "loop_engine": {"train": 64, "validation": 32},
    "alrao_copies": {
        "num_copies": (16,),
        "num_classes": (10,),
        "repeats": 2,
        "target_block_s": 0.005,
        "max_steps": 5,
    },
}


def smoke(results_dir, only="", failed_file=None):
    """Every section (of ``only``, comma-separated, if given) at tiny sizes, in one process, in
    turn; the names of those that failed go to ``failed_file``; exit status 1 if any failed."""

    def quick(name):
        module = __import__(f"benchmarks.{name}", fromlist=["run"])
        with sizes_of(module, "quick", **SMOKE_OVERRIDES[name]):
            module.run("quick", results_dir)

    steps = {
        "alrao_step": lambda: alrao_step_model("mlp", results_dir, 3, 2, (32,), "quick"),
        "autodrop_step": lambda: autodrop_model("cnn1d", results_dir, 1, 2, "quick"),
        **{name: (lambda name=name: quick(name)) for name in SMOKE_OVERRIDES},
    }
    wanted = {name.split(":")[0] for name in only.split(",") if name}
    failed = []
    for name, step in steps.items():
        if wanted and name not in wanted:
            continue
        t0 = time.perf_counter()
        try:
            step()
            common.log(f"smoke {name}: ok ({time.perf_counter() - t0:.1f} s)")
        except Exception as error:  # noqa: BLE001 - report every section, then fail
            import traceback

            traceback.print_exc()
            common.log(f"smoke {name}: FAILED ({type(error).__name__}: {error})")
            failed.append(name)
            if failed_file:
                with open(failed_file, "a") as f:
                    f.write(name + "\n")
    return 1 if failed else 0


# figure -> (results file, value(s) of the payload, comparison, target)
def targets(results):
    out = []

    def add(section, figure, value, op, target):
        ok = value <= target if op == "<=" else value >= target
        out.append((section, figure, value, op, target, ok))

    for r in results.get("alrao_step", {}).get("rows", []):
        add(
            "alrao_step",
            f"{r['model']} b{r['batch_size']} Alrao / SGD step",
            r["ratio"],
            "<=",
            1.03,
        )
    for r in results.get("autodrop_step", {}).get("rows", []):
        add("autodrop_step", f"{r['model']} AutoDrop / base step", r["ratio"], "<=", 1.02)
    for r in results.get("noh", {}).get("step", []):
        if r.get("update_every") == 10:
            add("noh", "NOH-Adam S = 10 / Adam step", r["ratio"], "<=", 1.5)
    for r in results.get("lr_grid", {}).get("rows", []):
        add("lr_grid", "sequential / vmapped grid", r["ratio_sequential_to_population"], ">=", 8.0)
    if "loop_engine" in results:
        add(
            "loop_engine",
            "fit / scanned marginal epoch",
            results["loop_engine"]["ratio"],
            "<=",
            2.0,
        )
    return out


def report(results_dir, status_file, started, load_start, mode, command):
    from benchmarks import report as report_module

    statuses = []
    if os.path.exists(status_file):
        with open(status_file) as f:
            statuses = [line.rstrip("\n").split("|") for line in f if line.strip()]
    failures = {}
    for name, status, seconds in statuses:
        section = name.split(":")[0]
        if status != "ok" and section in report_module.BENCHMARKS:  # not the smoke run's line
            failures[section] = failures.get(section, "") + f"{name}: {status} ({seconds} s)\n"
    ran = [
        n for n in report_module.BENCHMARKS if os.path.exists(common.results_path(n, results_dir))
    ]
    env = common.environment()
    env["date"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(started))
    env["load_average"] = [float(x) for x in load_start.split()[:3]]
    env["load_average_end"] = common.load_average()
    env["wall_time_s"] = time.time() - started
    env["command"] = command
    try:
        import randlr_jax.data  # noqa: F401
    except ImportError:
        env["data_note"] = (
            "MNIST-1D (the `data` extra) was not installed on this host: the MNIST-1D sections "
            "(lr_grid, noh, loop_engine) ran on random arrays of MNIST-1D's shapes (timings depend "
            "on the shapes only)."
        )
    sizes = "quick" if mode == "smoke" else "device_check"
    # Each file named where it joins the report once unpacked into benchmarks/results/.
    for name in os.listdir(results_dir):
        if name.endswith(".json") and not name.startswith("run_all_"):
            path = os.path.join(results_dir, name)
            with open(path) as f:
                payload = json.load(f)
            payload["path"] = f"benchmarks/results/{name}"
            with open(path, "w") as f:
                json.dump(payload, f, indent=2)
    report_module.write_run_record(env, sizes, ran, failures, results_dir)
    results = report_module.load_results(report_module.BENCHMARKS, results_dir)
    text = report_module.render(results, env, sizes, failures=failures, ran=ran)
    rows = targets(results)
    lines = ["", "## Targets", ""]
    lines += ["| section | figure | value | target | verdict |", "|---|---|---:|---|---|"]
    if mode == "smoke":
        lines[1] += " (smoke run: tiny sizes, the figures mean nothing)"
    for section, figure, value, op, target, ok in rows:
        verdict = "meets" if ok else "**misses**"
        if value <= 0:  # a marginal cost below the noise of the fixed costs
            verdict = "not resolved (noise)"
        lines.append(f"| {section} | {figure} | {value:.3f} | {op} {target:g} | {verdict} |")
    for name, status, _ in statuses:
        if status != "ok":
            lines.append(f"| {name.split(':')[0]} | {name} | n/a | | {status} |")
    text = text + "\n".join(lines) + "\n"
    path = os.path.join(os.path.dirname(results_dir), f"RESULTS_{common.backend()}.md")
    with open(path, "w") as f:
        f.write(text)
    print("\n".join(lines[2:]))
    print("\nsections:", ", ".join(f"{n} {s} ({t} s)" for n, s, t in statuses))
    common.log(f"wrote {path}")
    return 0


if __name__ == "__main__":
    command, results_dir = sys.argv[1], sys.argv[2]
    if command == "smoke":
        sys.exit(smoke(results_dir, *sys.argv[3:5]))
    if command == "section":
        SECTIONS[sys.argv[3]](results_dir)
        sys.exit(0)
    if command == "report":
        status_file, started, load_start, mode, line = sys.argv[3:8]
        sys.exit(report(results_dir, status_file, float(started), load_start, mode, line))
    raise SystemExit(f"unknown command {command!r}")
EOF

STARTED="$(date +%s)"
LOAD_START="$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo '0 0 0')"
STATUS="$WORK/status"
SMOKE_FAILED="$WORK/smoke_failed"
: >"$STATUS"
: >"$SMOKE_FAILED"

# run_section NAME GUARD ARGS...: the driver under `timeout`, its outcome appended to $STATUS.
run_section() {
    local name="$1" guard="$2" left rc status t0
    shift 2
    left=$((STARTED + BUDGET - REPORT_RESERVE - $(date +%s)))
    if ((left < 10)); then
        echo "=== $name: skipped (the budget of $BUDGET s is spent)"
        echo "$name|skipped: budget spent|0" >>"$STATUS"
        return
    fi
    if [[ -s "$SMOKE_FAILED" ]] && grep -qx "${name%%:*}" "$SMOKE_FAILED"; then
        echo "=== $name: skipped (its smoke run failed: see above)"
        echo "$name|skipped: its smoke run failed|0" >>"$STATUS"
        return
    fi
    ((guard > left)) && guard=$left
    echo "=== $name (guard $guard s, $((left)) s left of the budget)"
    t0="$(date +%s)"
    timeout --kill-after=5 "$guard" "$PYTHON" "$DRIVER" "$@"
    rc=$?
    case $rc in
    0) status=ok ;;
    124 | 137) status="cut by its ${guard} s guard" ;;
    *) status="failed (exit $rc)" ;;
    esac
    echo "=== $name: $status ($(($(date +%s) - t0)) s)"
    echo "$name|$status|$(($(date +%s) - t0))" >>"$STATUS"
}

# wanted NAME: NAME (alrao_step:vgg19) or its benchmark (alrao_step) is in --only, or no --only.
wanted() { [[ -z "$ONLY" || ",$ONLY," == *",$1,"* || ",$ONLY," == *",${1%%:*},"* ]]; }

echo "device_check.sh: mode $MODE, budget $BUDGET s, results in $RESULTS"
backend="$("$PYTHON" -c 'import jax; print(jax.default_backend(), jax.__version__, jax.devices())')"
echo "jax: $backend"
if [[ "$MODE" == device && "$backend" == cpu* && -z "${DEVICE_CHECK_ALLOW_CPU:-}" ]]; then
    # The accelerator sizes would run for hours on a CPU: a JAX without its CUDA plugin, say.
    echo "device_check.sh: JAX found no accelerator (set DEVICE_CHECK_ALLOW_CPU=1 to run anyway)"
    exit 3
fi
if [[ "$MODE" == smoke ]]; then
    run_section smoke "$SMOKE_GUARD_CPU" smoke "$RESULTS" "$ONLY"
else
    SMOKE_DIR="$WORK/smoke"
    mkdir -p "$SMOKE_DIR"
    run_section smoke "$SMOKE_GUARD" smoke "$SMOKE_DIR" "$ONLY" "$SMOKE_FAILED"
    for entry in "${SECTIONS[@]}"; do
        read -r name guard <<<"$entry"
        wanted "$name" && run_section "$name" "$guard" section "$RESULTS" "$name"
    done
fi
echo "=== report"
timeout 60 "$PYTHON" "$DRIVER" report "$RESULTS" "$STATUS" "$STARTED" "$LOAD_START" "$MODE" \
    "$COMMAND"
report_rc=$?
echo "=== device_check.sh: $(($(date +%s) - STARTED)) s in all"
if [[ "$MODE" == device ]]; then
    tar -czf "$DIR/device_check_results.tgz" -C "$DIR" results && rm -rf "$RESULTS"
fi
failed="$(grep -cv '|ok|' "$STATUS" || true)"
[[ "$report_rc" == 0 && "$failed" == 0 ]]
