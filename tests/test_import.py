"""What ``import randlr_jax`` costs, what the core needs, and the package's import graph.

* The core (``pip install randlr_jax``, no extras) imports and trains: checked in a subprocess where
  matplotlib, TensorFlow Datasets, orbax, scikit-learn and tqdm cannot be imported. What needs an extra
  fails with an ImportError that names it.
* ``import randlr_jax`` loads none of them and leaves matplotlib's backend alone.
* The layering: ``training/``, ``models/`` and ``data/`` never import a method package or ``runner/``;
  method packages never import each other or ``runner/``; no module imports ``experiments``; the
  module-level imports have no cycle. Read from the sources with :mod:`ast`, and the checks are tested
  on synthetic sources that break each rule.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterable, Mapping
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "randlr_jax"

OPTIONAL = ("matplotlib", "tensorflow_datasets", "orbax", "sklearn", "tqdm")
BASE = ("training", "models", "data")
METHODS = ("alrao", "autodrop", "noh", "cyclical")
ABOVE = ("runner",)
OUTSIDE = ("experiments", "benchmarks", "tests")


# --------------------------------------------------------------------------------------------------
# The core without its extras, and what ``import randlr_jax`` leaves behind (subprocesses)
# --------------------------------------------------------------------------------------------------

_BLOCKER = f"""
import importlib.abc
import sys

BLOCKED = {OPTIONAL!r}


class _NotInstalled(importlib.abc.MetaPathFinder):
    # As if the extras were not installed: ``import matplotlib`` (or any submodule) fails.
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {{name!r}} (blocked by the test)", name=name)
        return None


sys.meta_path.insert(0, _NotInstalled())
"""


def _run_python(code: str, **env: str) -> subprocess.CompletedProcess:
    environment = {**os.environ, **env}
    environment.setdefault("JAX_PLATFORMS", "cpu")
    # One CPU device is enough; the test session's 8 simulated devices only cost start-up time here.
    environment["XLA_FLAGS"] = ""
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    return result


def test_core_imports_and_trains_without_the_extras(tmp_path):
    code = _BLOCKER + textwrap.dedent(
        f"""
        import jax
        import jax.numpy as jnp
        import numpy as np

        import randlr_jax

        loaded = [m for m in BLOCKED if m in sys.modules]
        assert not loaded, loaded

        # Alrao-SGD builds and updates a small body + copies tree.
        tx = randlr_jax.alrao_sgd(jax.random.key(0), 1e-5, 10.0, 3)
        params = {{
            "body": {{"Dense_0": {{"kernel": jnp.ones((5, 4)), "bias": jnp.zeros(4)}}}},
            "head": {{"copies": {{"kernel": jnp.ones((3, 4, 2)), "bias": jnp.zeros((3, 2))}}}},
        }}
        opt_state = tx.init(params)
        grads = jax.tree.map(jnp.ones_like, params)
        updates, opt_state = jax.jit(tx.update)(grads, opt_state, params)
        new_params = jax.tree.map(lambda p, u: p + u, params, updates)
        assert all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree.leaves(new_params))
        assert not np.allclose(new_params["body"]["Dense_0"]["kernel"], 1.0)

        # A model and one compiled Alrao step, as in the README.
        head = randlr_jax.AlraoHead(num_outputs=2, num_copies=3)
        model = randlr_jax.models.make_model("mlp", widths=(4,), head=head)
        x = np.ones((6, 5), np.float32)
        state = randlr_jax.training.create_train_state(model, tx, jax.random.key(1), sample_input=x)
        step = jax.jit(randlr_jax.make_alrao_train_step(model, tx))
        state, metrics = step(state, {{"x": x, "y": np.zeros(6, np.int32)}})
        assert np.isfinite(float(metrics["loss"]))

        # The namespaces resolve.
        assert callable(randlr_jax.alrao.switch_update)
        assert callable(randlr_jax.noh.adam_hd)
        assert callable(randlr_jax.cyclical.one_cycle_sgd)
        assert callable(randlr_jax.autodrop.autodrop)
        assert callable(randlr_jax.alrao) and callable(randlr_jax.autodrop)
        randlr_jax.noh.adam_hd(1e-3)
        randlr_jax.cyclical.one_cycle_sgd(100, 0.1)
        randlr_jax.autodrop(0.1, steps_per_period=10)

        # Progress bars without tqdm: silent, not an error.
        from randlr_jax.training._progress import progress_bar

        bar = progress_bar(total=3, desc="x")
        bar.update(1)
        bar.set_postfix(loss=1.0)
        bar.close()

        loaded = [m for m in BLOCKED if m in sys.modules]
        assert not loaded, loaded


        def import_error(f):
            try:
                f()
            except ImportError as error:
                return str(error)
            raise AssertionError(f"{{f}} did not raise ImportError")


        message = import_error(lambda: randlr_jax.data)
        assert "randlr_jax[data]" in message, message
        message = import_error(lambda: randlr_jax.training.Checkpointer({str(tmp_path)!r}))
        assert "randlr_jax[checkpointing]" in message, message
        from randlr_jax.training import _plotting

        history = [{{"epoch": 0, "train_loss": 1.0}}]
        path = {str(tmp_path / "curves.png")!r}
        message = import_error(lambda: _plotting.learning_curves(history, path))
        assert "randlr_jax[plotting]" in message, message
        curve = np.concatenate([np.linspace(2.0, 1.0, 15), np.linspace(1.0, 3.0, 5)])
        result = randlr_jax.cyclical.RangeTestResult(
            learning_rates=np.geomspace(1e-3, 1.0, 20),
            losses=curve,
            smoothed_losses=curve,
            stop_reason="num_iter",
            num_iter=20,
        )
        for target in (path, None):  # a file (a bare Figure) or a pyplot figure
            message = import_error(lambda: result.plot(target))
            assert "randlr_jax[plotting]" in message, message
        print("ok")
        """
    )
    assert _run_python(code).stdout.strip().endswith("ok")


def test_import_leaves_the_matplotlib_backend_alone():
    pytest.importorskip("matplotlib")
    code = textwrap.dedent(
        """
        import sys

        import matplotlib

        assert matplotlib.get_backend().lower() == "svg", matplotlib.get_backend()
        import randlr_jax
        import randlr_jax.training._plotting

        assert matplotlib.get_backend().lower() == "svg", matplotlib.get_backend()
        assert "matplotlib.pyplot" not in sys.modules
        loaded = [m for m in ("tensorflow_datasets", "orbax", "sklearn") if m in sys.modules]
        assert not loaded, loaded
        print("ok")
        """
    )
    assert _run_python(code, MPLBACKEND="svg").stdout.strip().endswith("ok")


def test_importing_an_experiment_leaves_the_matplotlib_backend_alone():
    # Experiments pick the Agg backend in ``main()``: importing one (the tests do) changes nothing.
    pytest.importorskip("matplotlib")
    pytest.importorskip("tensorflow_datasets")
    names = sorted(
        path.stem for path in (ROOT / "experiments").glob("*.py") if not path.stem.startswith("_")
    )
    code = textwrap.dedent(
        f"""
        import importlib

        import matplotlib

        changed = []
        for name in {names!r}:
            importlib.import_module("experiments." + name)
            if matplotlib.get_backend().lower() != "svg":
                changed.append((name, matplotlib.get_backend()))
                matplotlib.use("svg")
        assert not changed, f"importing these switched the backend: {{changed}}"
        print("ok")
        """
    )
    assert _run_python(code, MPLBACKEND="svg").stdout.strip().endswith("ok")


# --------------------------------------------------------------------------------------------------
# The import graph, from the sources
# --------------------------------------------------------------------------------------------------


def _module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def library_sources(root: Path = PACKAGE) -> dict[str, tuple[str, bool]]:
    """``{module name: (source, is_package)}`` for every ``.py`` file under ``root``."""
    return {
        _module_name(path, root): (path.read_text(encoding="utf-8"), path.name == "__init__.py")
        for path in sorted(root.rglob("*.py"))
    }


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(node: ast.AST, module: str, is_package: bool, modules: Iterable[str]):
    """``(target, line, module_level)`` for every import under ``node``.

    ``from a import b`` counts as importing ``a.b`` when that is a module, else ``a``. Relative imports
    are resolved; ``importlib.import_module("...")`` with a constant name counts too.
    """
    modules = set(modules)
    package = module if is_package else module.rpartition(".")[0]

    def visit(node: ast.AST, module_level: bool):
        for child in ast.iter_child_nodes(node):
            inner = module_level and not isinstance(
                child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)
            )
            if isinstance(child, ast.If) and _is_type_checking(child.test):
                # ``if TYPE_CHECKING:`` imports never run: no cycle, but the layering still holds.
                for statement in child.body:
                    yield from visit(ast.Module(body=[statement], type_ignores=[]), False)
                for statement in child.orelse:
                    yield from visit(ast.Module(body=[statement], type_ignores=[]), module_level)
                continue
            if isinstance(child, ast.Import):
                for alias in child.names:
                    yield alias.name, child.lineno, module_level
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = package.split(".")
                    base = base[: len(base) - (child.level - 1)]
                    source = ".".join(base + ([child.module] if child.module else []))
                else:
                    source = child.module or ""
                if source == "__future__":
                    continue
                for alias in child.names:
                    candidate = f"{source}.{alias.name}"
                    target = candidate if candidate in modules else source
                    yield target, child.lineno, module_level
            elif (
                isinstance(child, ast.Call)
                and isinstance(child.func, ast.Attribute)
                and child.func.attr == "import_module"
                and child.args
                and isinstance(child.args[0], ast.Constant)
                and isinstance(child.args[0].value, str)
            ):
                yield child.args[0].value, child.lineno, module_level
            yield from visit(child, inner)

    yield from visit(node, True)


def import_table(sources: Mapping[str, tuple[str, bool]]) -> list[tuple[str, str, int, bool]]:
    """``(importer, imported, line, module_level)`` for every import in ``sources``."""
    table = []
    for module, (source, is_package) in sources.items():
        tree = ast.parse(source, filename=module)
        for target, line, module_level in _imports(tree, module, is_package, sources):
            table.append((module, target, line, module_level))
    return table


def _part(module: str, root: str = "randlr_jax") -> str | None:
    """``randlr_jax.alrao._step`` -> ``alrao``; ``randlr_jax`` itself -> ``""``; outside -> ``None``."""
    if module == root:
        return ""
    if module.startswith(root + "."):
        return module.split(".")[1]
    return None


def layering_violations(table, root: str = "randlr_jax") -> list[str]:
    """Imports that break the layering rules (any import, lazy ones included)."""
    found = []
    for importer, target, line, _ in table:
        where = f"{importer}:{line} imports {target}"
        mine, theirs = _part(importer, root), _part(target, root)
        if target.partition(".")[0] in OUTSIDE:
            found.append(f"{where}: the library never imports {target.partition('.')[0]}/")
        if theirs is None or theirs == mine:
            continue
        if mine in BASE and (theirs in METHODS or theirs in ABOVE):
            found.append(f"{where}: training/, models/, data/ never import a method or runner/")
        if mine in METHODS and (theirs in METHODS or theirs in ABOVE):
            found.append(f"{where}: a method package never imports another method or runner/")
        if mine != "" and theirs == "":
            found.append(f"{where}: the top-level package imports every namespace")
    return found


def import_cycles(table, root: str = "randlr_jax") -> list[list[str]]:
    """Cycles among the module-level imports within ``root`` (each one once, as a closed path)."""
    graph: dict[str, set[str]] = {}
    for importer, target, _, module_level in table:
        graph.setdefault(importer, set())
        if module_level and _part(target, root) is not None and target != importer:
            graph[importer].add(target)
    cycles, state, stack = [], {}, []

    def visit(node: str):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                cycles.append(stack[stack.index(nxt) :] + [nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node)
    return cycles


@pytest.fixture(scope="module")
def table():
    return import_table(library_sources())


def test_import_table_sees_the_packages(table):
    importers = {importer for importer, *_ in table}
    assert {"randlr_jax", "randlr_jax.alrao", "randlr_jax.training._loop"} <= importers
    assert ("randlr_jax", "randlr_jax.alrao") in {(a, b) for a, b, *_ in table}


def test_layering(table):
    assert layering_violations(table) == []


def test_no_import_cycles(table):
    assert import_cycles(table) == []


def test_implementation_modules_are_private():
    for module, (_, is_package) in library_sources().items():
        if not is_package:
            assert module.rpartition(".")[2].startswith("_"), f"{module}: a public module file"


def _synthetic(**modules: str) -> dict[str, tuple[str, bool]]:
    sources = {
        "randlr_jax": ("", True),
        **{f"randlr_jax.{name}": ("", True) for name in BASE + METHODS + ABOVE},
    }
    for name, source in modules.items():
        dotted = "randlr_jax." + name.replace("__", ".")
        sources[dotted] = (textwrap.dedent(source), False)
    return sources


@pytest.mark.parametrize(
    "name, source",
    [
        ("training___loop", "from randlr_jax.alrao import _step\n"),
        ("models___mlp", "def f():\n    import randlr_jax.noh\n"),
        ("data___specs", "from randlr_jax import runner\n"),
        ("alrao___step", "from randlr_jax.cyclical import one_cycle_sgd\n"),
        ("noh___noh", "import randlr_jax.runner._runner\n"),
        ("cyclical___schedules", "from experiments import smith\n"),
        ("training___loop", "from randlr_jax import fit\n"),
        ("training___loop", "import importlib\nimportlib.import_module('randlr_jax.autodrop')\n"),
    ],
)
def test_layering_check_catches(name, source):
    assert layering_violations(import_table(_synthetic(**{name: source})))


def test_layering_check_allows_the_rules():
    sources = _synthetic(
        alrao___step="from randlr_jax.training import _state\nfrom randlr_jax import models\n",
        runner___runner="from randlr_jax import alrao, noh, data\n",
        training___loop="from . import _state\nfrom randlr_jax.models import _mlp\n",
    )
    assert layering_violations(import_table(sources)) == []


def test_cycle_check_catches():
    sources = _synthetic(
        training___a="from randlr_jax.training import _b\n",
        training___b="from . import _c\n",
        training___c="import randlr_jax.training._a\n",
    )
    assert import_cycles(import_table(sources)) == [
        ["randlr_jax.training._a", "randlr_jax.training._b", "randlr_jax.training._c"]
        + ["randlr_jax.training._a"]
    ]
    # Imports inside functions run later, ``if TYPE_CHECKING:`` ones never: not a cycle.
    sources["randlr_jax.training._c"] = ("def f():\n    import randlr_jax.training._a\n", False)
    assert import_cycles(import_table(sources)) == []
    sources["randlr_jax.training._c"] = (
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import randlr_jax.training._a\n",
        False,
    )
    assert import_cycles(import_table(sources)) == []
    layered = _synthetic(training___c="if TYPE_CHECKING:\n    from randlr_jax.alrao import _step\n")
    assert layering_violations(import_table(layered))
