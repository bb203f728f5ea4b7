"""Every ```python example of README.md runs as written, so none can rot.

The examples are read from README.md at collection time: one test per fenced ```python block, named
``README.md:<line>`` after its opening fence, so a new example is covered without editing this file.
Each runs in a fresh namespace (``__name__ == "__main__"``), from a fresh temporary working directory,
with the embedded datasets built in the session's TFDS data dir rather than in ``~``. It fails on any
exception, and on any warning of one of the library's own categories (``TrainingDiverged``,
``FeatureGuardWarning``, ...), which are errors here. What an example prints is not checked: the
numbers are there to read, the docstring examples (``tests/test_doctests.py``) pin printed values.

An HTML comment on the line right before a fence says how to treat it:

- ``<!-- example: not run (REASON) -->``: the block cannot run on a one-host CPU test machine (it needs
  several hosts, a GPU, a prepared public TFDS dataset); it is skipped with ``REASON``, which must be
  given.
- ``<!-- example: continues the previous -->``: the block is a fragment that continues the previous
  ```python block; it runs concatenated after that block (and whatever that block continues).

The examples run in this process, not in one subprocess each. A fresh interpreter pays 2.2 s of CPU
(3.4 s wall on a loaded machine) to import JAX, Flax, Optax and TFDS before the first line, which for
eight blocks is more than the blocks' own work (about 14 s of CPU in all); in-process they share the
worker's imports and its compiled functions, and keep the test session's eight simulated CPU devices,
which the sharded-copies example needs.
"""

from __future__ import annotations

import dataclasses
import importlib
import os
import re
import textwrap
import warnings

import pytest

README = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.md")

_FENCE_OPEN = re.compile(r"^\s*```(\w*)\s*$")  # a fence may be indented (in a list item)
_MARKER = re.compile(r"^<!--\s*example:\s*(.*?)\s*-->\s*$")
_NOT_RUN = re.compile(r"^not run\s*\((.*)\)$")
_CONTINUES = "continues the previous"


@dataclasses.dataclass(frozen=True)
class Example:
    """One ```python block of README.md."""

    line: int  # 1-based line of the opening fence
    code: str  # the block's own lines
    skip_reason: str | None  # set by "not run (REASON)"
    continues: int | None  # the line of the block it continues, or None

    @property
    def id(self) -> str:
        return f"README.md:{self.line}"


def parse_readme(text: str) -> list[Example]:
    """The ```python blocks of ``text`` with their markers; malformed markers raise ``ValueError``.

    A marker is the last non-blank line before a fence. It must be one of the two forms in the module
    docstring, and it must stand before a ```python fence (a stale marker left before prose or a shell
    block is an error, not silently ignored).
    """
    lines = text.splitlines()
    examples: list[Example] = []
    index = 0
    while index < len(lines):
        line = lines[index]
        marker = _MARKER.match(line.strip())
        if marker is not None:
            following = index + 1
            while following < len(lines) and not lines[following].strip():
                following += 1
            fence = _FENCE_OPEN.match(lines[following]) if following < len(lines) else None
            if fence is None or fence.group(1) != "python":
                raise ValueError(
                    f"README.md:{index + 1}: the marker {line.strip()!r} must stand right before a "
                    "```python block"
                )
        fence = _FENCE_OPEN.match(line)
        if fence is None:
            index += 1
            continue
        end = index + 1
        while end < len(lines) and lines[end].strip() != "```":
            end += 1
        if end == len(lines):
            raise ValueError(f"README.md:{index + 1}: the code block is never closed")
        if fence.group(1) == "python":
            examples.append(_example(lines, index, end, examples))
        index = end + 1
    return examples


def _example(lines: list[str], start: int, end: int, previous: list[Example]) -> Example:
    """The block between the fences at 0-based ``start`` and ``end``, with the marker above it."""
    above = start - 1
    while above >= 0 and not lines[above].strip():
        above -= 1
    marker = _MARKER.match(lines[above].strip()) if above >= 0 else None
    skip_reason = continues = None
    if marker is not None:
        directive = marker.group(1)
        not_run = _NOT_RUN.match(directive)
        if not_run is not None:
            skip_reason = not_run.group(1).strip()
            if not skip_reason:
                raise ValueError(
                    f"README.md:{above + 1}: 'not run' needs a reason: not run (REASON)"
                )
        elif directive == _CONTINUES:
            if not previous:
                raise ValueError(f"README.md:{above + 1}: no earlier ```python block to continue")
            continues = previous[-1].line
        else:
            raise ValueError(
                f"README.md:{above + 1}: unknown marker {directive!r}; allowed: "
                f"'not run (REASON)' or {_CONTINUES!r}"
            )
    code = textwrap.dedent("\n".join(lines[start + 1 : end]) + "\n")
    return Example(line=start + 1, code=code, skip_reason=skip_reason, continues=continues)


def _source(example: Example, by_line: dict[int, Example]) -> tuple[str, Example | None]:
    """The code to run (the chain of continued blocks, then this one) and a skipped block in the chain."""
    chain = [example]
    while chain[-1].continues is not None:
        chain.append(by_line[chain[-1].continues])
    chain.reverse()
    skipped = next((block for block in chain if block.skip_reason is not None), None)
    # Each block keeps its README line numbers in tracebacks: blank lines pad it to its place.
    source, at = "", 0
    for block in chain:
        source += "\n" * (block.line - at) + block.code
        at = block.line + block.code.count("\n")
    return source, skipped


with open(README, encoding="utf-8") as _readme:
    EXAMPLES = parse_readme(_readme.read())
_BY_LINE = {example.line: example for example in EXAMPLES}


def _library_warning_categories() -> tuple[type[Warning], ...]:
    """Every warning class the library defines (found in its public packages, not listed by hand)."""
    categories = set()
    for package in ("training", "models", "alrao", "autodrop", "noh", "cyclical"):
        module = importlib.import_module(f"randlr_jax.{package}")
        for value in vars(module).values():
            if (
                isinstance(value, type)
                and issubclass(value, Warning)
                and value.__module__.startswith("randlr_jax")
            ):
                categories.add(value)
    return tuple(sorted(categories, key=lambda category: category.__qualname__))


def test_readme_has_examples():
    assert len(EXAMPLES) >= 5, [example.id for example in EXAMPLES]
    assert [example.line for example in EXAMPLES] == sorted(_BY_LINE)


def test_library_warning_categories_found():
    names = {category.__name__ for category in _library_warning_categories()}
    assert {"TrainingDiverged", "FeatureGuardWarning"} <= names, names


def test_markers_are_checked():
    def readme(marker: str) -> str:
        return f"text\n\n```python\nx = 1\n```\n\n{marker}\n```python\ny = x\n```\n"

    (_, skipped) = parse_readme(readme("<!-- example: not run (needs two hosts) -->"))
    assert skipped.skip_reason == "needs two hosts"
    (first, continued) = parse_readme(readme("<!-- example: continues the previous -->"))
    assert continued.continues == first.line == 3
    assert _source(continued, {3: first})[0] == "\n\n\nx = 1\n\n\n\n\ny = x\n"
    for bad in ("<!-- example: not run () -->", "<!-- example: skip -->"):
        with pytest.raises(ValueError, match="README.md:7"):
            parse_readme(readme(bad))
    (indented,) = parse_readme(
        "- a list item:\n\n  ```python\n  z = 1\n  ```\n\n  ```\n  x\n  ```\n"
    )
    assert (indented.line, indented.code) == (3, "z = 1\n")
    with pytest.raises(ValueError, match="must stand right before"):
        parse_readme("<!-- example: not run (GPU) -->\n```bash\nls\n```\n")


def _run(source: str) -> None:
    """Run ``source`` as a script from README.md, the library's warnings raised as errors."""
    code = compile(source, README, "exec")
    with warnings.catch_warnings():
        for category in _library_warning_categories():
            warnings.simplefilter("error", category)
        exec(code, {"__name__": "__main__"})


def test_library_warnings_fail_an_example():
    # A diverged run must not pass silently, whatever the session's warning filters are; other
    # warnings (JAX's, Flax's) are left to them.
    with pytest.raises(UserWarning, match="diverged") as raised:
        _run(
            "import warnings\nfrom randlr_jax.training import TrainingDiverged\n"
            "warnings.warn('loss diverged', TrainingDiverged)\n"
        )
    assert type(raised.value).__name__ == "TrainingDiverged"
    (traceback_entry,) = [entry for entry in raised.traceback if str(entry.path) == README]
    assert traceback_entry.lineno + 1 == 3


@pytest.mark.parametrize("example", EXAMPLES, ids=[example.id for example in EXAMPLES])
def test_readme_example(example, tmp_path, monkeypatch, tfds_data_dir):
    source, skipped = _source(example, _BY_LINE)
    if skipped is not None:
        pytest.skip(f"{skipped.id}: {skipped.skip_reason}")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TFDS_DATA_DIR", tfds_data_dir)
    _run(source)
