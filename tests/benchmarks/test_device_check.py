"""``benchmarks/device_check.sh``, the prepared accelerator check, without running a benchmark.

The check itself runs on a lent GPU (and, at tiny sizes, here: ``bash benchmarks/device_check.sh
--smoke DIR``, about two minutes on two shared cores, too slow for the suite). These check what would
waste the device's minutes: the script parses and rejects bad options; every section it lists has its
Python side; every module it drives has the size sets, models and settings it asks for (a setting
renamed in a module fails here, not on the device); its report step writes the run record, the
report and the figures against their targets; and the report puts a GPU run's files next to this
backend's.
"""

from __future__ import annotations

import importlib.util
import inspect
import json
import pathlib
import shutil
import subprocess

import pytest

from benchmarks import alrao_step, autodrop_step, common, loop_engine, report

ROOT = pathlib.Path(report.__file__).resolve().parent.parent
SCRIPT = ROOT / "benchmarks" / "device_check.sh"
COMMITTED = ROOT / "benchmarks" / "results"
START = "cat >\"$DRIVER\" <<'EOF'\n"


def bash(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=30, cwd=ROOT
    )


@pytest.fixture(scope="module")
def driver(tmp_path_factory):
    """The script's embedded Python side, imported as a module."""
    text = SCRIPT.read_text()
    start = text.index(START) + len(START)
    path = tmp_path_factory.mktemp("driver") / "device_check_driver.py"
    path.write_text(text[start : text.index("\nEOF\n", start) + 1])
    spec = importlib.util.spec_from_file_location("device_check_driver", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_script_parses_lists_its_sections_and_rejects_bad_options():
    assert subprocess.run(["bash", "-n", str(SCRIPT)], capture_output=True).returncode == 0
    listed = bash("--list")
    assert listed.returncode == 0
    names = [line.split()[0] for line in listed.stdout.splitlines()]
    assert names[:3] == ["alrao_step:vgg19", "alrao_step:mobilenetv2", "alrao_step:googlenet"]
    assert {n.split(":")[0] for n in names} == {
        "alrao_step",
        "autodrop_step",
        "noh",
        "lr_grid",
        "loop_engine",
        "alrao_copies",
    }
    guards = [int(line.split()[1]) for line in listed.stdout.splitlines()]
    assert all(0 < g <= 120 for g in guards)
    for args, message in (
        (["--only", "nope", "/tmp/x"], "unknown section nope"),
        (["--only", "alrao", "/tmp/x"], "unknown section alrao"),
        (["--budget", "5m", "/tmp/x"], "--budget must be a whole number"),
        (["--frobnicate"], "unknown option --frobnicate"),
    ):
        result = bash(*args)
        assert result.returncode == 2 and message in result.stderr, (args, result.stderr)


def test_every_section_has_its_python_side_and_the_sizes_it_asks_for(driver):
    listed = [line.split()[0] for line in bash("--list").stdout.splitlines()]
    assert sorted(driver.SECTIONS) == sorted(listed)
    for name in {n.split(":")[0] for n in listed}:
        module = __import__(f"benchmarks.{name}", fromlist=["SIZES"])
        assert {"accelerator", "quick"} <= set(module.SIZES), name
        assert callable(module.run) and callable(module.section), name
    # The per-model sections: the paper's models at batch 32 and 128, AutoDrop's two settings.
    assert set(alrao_step.CIFAR_MODELS) == {"vgg19", "mobilenetv2", "googlenet"}
    assert tuple(alrao_step.SIZES["accelerator"]["batch_sizes"]) == (32, 128)
    assert {"steps", "repeats"} <= set(alrao_step.SIZES["accelerator"])
    assert {"cnn1d", "resnet18"} <= set(autodrop_step.SETTINGS)
    # The per-model sections call these directly, positionally.
    assert list(inspect.signature(alrao_step.measure).parameters)[:5] == [
        "model_name",
        "batch_size",
        "steps",
        "repeats",
        "num_copies",
    ]
    assert list(inspect.signature(autodrop_step.bench).parameters)[:4] == [
        "model_name",
        "batch_size",
        "epochs",
        "repeats",
    ]
    assert {"epochs", "repeats"} <= set(autodrop_step.SIZES["accelerator"])
    noh = __import__("benchmarks.noh", fromlist=["SIZES"])
    assert set(driver.NOH_TRIM) <= set(noh.SIZES["accelerator"])
    assert 10 in noh.SIZES["accelerator"]["update_every"]  # the target's S = 10
    for name, overrides in driver.SMOKE_OVERRIDES.items():
        module = __import__(f"benchmarks.{name}", fromlist=["SIZES"])
        with driver.sizes_of(module, "quick", **overrides) as config:
            assert all(config[k] == v for k, v in overrides.items())
    with pytest.raises(KeyError, match="has no"):
        with driver.sizes_of(noh, "quick", no_such_setting=1):
            pass


def test_sizes_of_puts_the_module_sizes_back(driver):
    noh = __import__("benchmarks.noh", fromlist=["SIZES"])
    before = dict(noh.SIZES["quick"])
    with pytest.raises(RuntimeError):
        with driver.sizes_of(noh, "quick", steps=3):
            assert noh.SIZES["quick"]["steps"] == 3
            raise RuntimeError
    assert noh.SIZES["quick"] == before


def test_the_report_step_writes_the_record_the_report_and_the_targets(driver, tmp_path):
    results = tmp_path / "results"
    results.mkdir()
    measured = ("alrao_step", "autodrop_step", "lr_grid", "loop_engine")
    for name in measured:
        shutil.copy(COMMITTED / f"{name}_cpu.json", results / f"{name}_cpu.json")
    status = tmp_path / "status"
    status.write_text(
        "smoke|ok|20\nalrao_step:vgg19|ok|30\nalrao_step:googlenet|cut by its 60 s guard|60\n"
        "noh|failed (exit 1)|4\n"
    )
    rc = driver.report(str(results), str(status), 1.8e9, "1.0 2.0 3.0", "device", "bash x.sh")
    assert rc == 0
    record = report.load_run_record(str(results))
    assert record["sizes"] == "device_check" and record["ran"] == [
        n for n in report.BENCHMARKS if n in measured
    ]
    assert record["failures"] == {
        "alrao_step": "alrao_step:googlenet: cut by its 60 s guard (60 s)\n",
        "noh": "noh: failed (exit 1) (4 s)\n",
    }
    assert record["environment"]["command"] == "bash x.sh"
    assert record["environment"]["load_average"] == [1.0, 2.0, 3.0]
    text = (tmp_path / "RESULTS_cpu.md").read_text()
    assert text.startswith("# Benchmark results\n") and "## Targets" in text
    loop = json.loads((results / "loop_engine_cpu.json").read_text())
    assert loop["path"] == "benchmarks/results/loop_engine_cpu.json"  # where it joins the report
    verdict = "meets" if loop["ratio"] <= 2 else "**misses**"
    row = f"| loop_engine | fit / scanned marginal epoch | {loop['ratio']:.3f} | <= 2 | {verdict} |"
    assert row in text
    rows = json.loads((results / "alrao_step_cpu.json").read_text())["rows"]
    assert sum("Alrao / SGD step" in line for line in text.splitlines()) == len(rows)
    assert "| alrao_step | alrao_step:googlenet | n/a | | cut by its 60 s guard |" in text
    assert "**Failed in this run:**" in text  # noh and the cut googlenet, in their sections


def test_the_report_adds_another_backends_run_after_this_ones(tmp_path):
    """A GPU run's files (``*_gpu.json`` and its run record) next to the CPU ones: the CPU report
    first, unchanged, then the GPU one under its own title."""
    for name in ("loop_engine", "run_all"):
        shutil.copy(COMMITTED / f"{name}_cpu.json", tmp_path / f"{name}_cpu.json")
    cpu_only = report.render_from_files(str(tmp_path))
    for name in ("loop_engine", "run_all"):
        payload = json.loads((COMMITTED / f"{name}_cpu.json").read_text())
        payload["environment"]["backend"] = "gpu"
        (tmp_path / f"{name}_gpu.json").write_text(json.dumps(payload))
    both = report.render_from_files(str(tmp_path))
    assert both.startswith(cpu_only) and "\n# Benchmark results on gpu\n" in both
    gpu_part = both[len(cpu_only) :]
    assert gpu_part.count(f". {loop_engine.TITLE}\n") == 1
    assert "Not measured: no current results file `benchmarks/results/alrao_step_gpu.json`" in (
        gpu_part
    )
    assert common.results_path("x", str(tmp_path), backend_name="gpu").endswith("x_gpu.json")
