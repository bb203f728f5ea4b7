"""Each experiment's docstring states its commands and the result of the committed run.

For every ``experiments/<name>.py`` with a committed ``experiments/results/<name>.json``:

* the recorded ``command`` is one of the docstring's command lines (trailing ``# ...`` comments and
  spacing aside), and the docstring shows the ``--quick`` variant, ``python -m experiments.<name> ...
  --quick``;
* every number of the docstring's "Expected ..." paragraph(s) is a number of the committed run: a value
  of the README tables rendered from that file (``experiments.readme_tables.render_block``, provenance
  line included), or of the JSON itself, that rounds to it at the precision it is written with
  (``0.82`` matches ``0.818``, ``1e-5`` matches ``1e-05``, ``2e10`` matches ``2.07e10``, ``20,040,522``
  matches ``20040522``). Signs are ignored (``I* = -1439.1`` is written with its sign, ranges such as
  ``1.21-1.29`` are not). Numbers glued to a word are names, not results (``1cycle``, ``MNIST-1D``,
  ``VGG19``, ``s_t+1``). Lists of more than 12 numbers (the per-step and per-epoch curves) are left
  out of the JSON's values: their points would match almost any number.

Nothing trains: the tables are rendered from the committed files.
"""

from __future__ import annotations

import ast
import json
import math
import os
import re

import pytest

from experiments import readme_tables

ROOT = readme_tables.ROOT
NAMES = sorted(
    stem
    for stem in (
        f[: -len(".json")] for f in os.listdir(readme_tables.RESULTS_DIR) if f.endswith(".json")
    )
    if os.path.exists(os.path.join(ROOT, "experiments", f"{stem}.py"))
)

# A number as the docstrings write one, not glued to a word: ``1,234``, ``0.657``, ``1e-5``,
# ``1.207e+04``. The look-behind keeps ``+1`` of ``s_t+1`` and the digits of ``VGG19`` out.
_NUMBER = re.compile(
    r"(?<![\w.+])(?P<int>\d{1,3}(?:,\d{3})+|\d+)(?:\.(?P<frac>\d+))?(?:[eE](?P<exp>[-+]?\d+))?(?!\w)"
)
# Any number in rendered text or a JSON string, commas of thousands removed first.
_ANY_NUMBER = re.compile(r"\d+(?:\.\d+)?(?:[eE][-+]?\d+)?")
# Longer lists of numbers are curves; their points match too easily to count as a result.
_CURVE = 12


def module_docstring(name: str) -> str:
    """The first string literal of ``experiments/<name>.py``, read without importing it."""
    with open(os.path.join(ROOT, "experiments", f"{name}.py")) as f:
        doc = ast.get_docstring(ast.parse(f.read()), clean=True)
    assert doc, f"experiments/{name}.py has no module docstring"
    return doc


def expected_text(doc: str) -> str:
    """The docstring's paragraphs that start with ``Expected``, joined."""
    paragraphs = [p.strip() for p in re.split(r"\n\s*\n", doc)]
    return "\n\n".join(p for p in paragraphs if p.startswith("Expected"))


def stated_numbers(text: str) -> list[tuple[str, float, float]]:
    """``(as written, |value|, half a unit of its last digit)`` for each number of ``text``."""
    out = []
    for m in _NUMBER.finditer(text):
        frac = m["frac"] or ""
        exp = int(m["exp"]) if m["exp"] else 0
        value = float(f"{m['int'].replace(',', '')}.{frac or '0'}e{exp}")
        out.append((m.group(0), value, 0.5 * 10.0 ** (exp - len(frac))))
    return out


def _numbers_in_string(text: str) -> list[float]:
    text = re.sub(r"(?<=\d),(?=\d{3}\b)", "", text)
    return [float(x) for x in _ANY_NUMBER.findall(text)]


def _json_numbers(value) -> list[float]:
    if isinstance(value, bool):
        return []
    if isinstance(value, int | float):
        return [abs(float(value))] if math.isfinite(value) else []
    if isinstance(value, str):
        return _numbers_in_string(value)
    if isinstance(value, dict):
        return [x for k, v in value.items() for x in _numbers_in_string(k) + _json_numbers(v)]
    if isinstance(value, list):
        if len(value) > _CURVE and all(isinstance(v, int | float) for v in value):
            return []  # a curve (per step or epoch): a stated number is a table's, not a trace's
        return [x for v in value for x in _json_numbers(v)]
    return []


def rendered_tables(name: str) -> str:
    """Every README table of ``name``'s committed file, as ``readme_tables`` renders it."""
    blocks = []
    for stem, table in readme_tables.TABLES:
        if stem != name:
            continue
        try:
            blocks.append(readme_tables.render_block(stem, table))
        except ValueError as e:  # a part this run did not produce (``alrao_word_lm``'s step times)
            if "has no" not in str(e):
                raise
    assert blocks, f"readme_tables renders no table for {name!r}"
    return "\n\n".join(blocks)


def committed(name: str) -> dict:
    with open(os.path.join(readme_tables.RESULTS_DIR, f"{name}.json")) as f:
        return json.load(f)


def unmatched(text: str, candidates: list[float]) -> list[str]:
    """The numbers of ``text`` that no candidate rounds to."""
    tiny = 1e-9
    return [
        written
        for written, value, half_unit in stated_numbers(text)
        if not any(abs(c - value) <= half_unit * (1 + tiny) + tiny * value for c in candidates)
    ]


def test_number_parsing():
    got = [
        (w, v)
        for w, v, _ in stated_numbers("1cycle 0.657, VGG19 20,040,522 1e-5 (1.207e+04) s_t+1")
    ]
    assert got == [
        ("0.657", 0.657),
        ("20,040,522", 20040522.0),
        ("1e-5", 1e-5),
        ("1.207e+04", 12070.0),
    ]
    assert unmatched("0.82 and 2e10 and 1e-5", [0.818, 2.07e10, 1e-05]) == []
    assert unmatched("0.657", [0.658, 0.6564, 0.667]) == ["0.657"]


@pytest.mark.parametrize("name", NAMES)
def test_docstring_commands(name):
    doc = module_docstring(name)
    lines = {" ".join(line.split("#")[0].split()) for line in doc.splitlines()}
    command = " ".join(committed(name)["command"].split())
    assert command in lines, (
        f"experiments/{name}.py's docstring lacks the committed command {command!r}"
    )
    quick = re.compile(rf"python -m experiments\.{name}\b[^\n]*--quick")
    assert quick.search(doc), f"experiments/{name}.py's docstring shows no --quick command"


@pytest.mark.parametrize("name", NAMES)
def test_expected_numbers_are_the_committed_run(name):
    text = expected_text(module_docstring(name))
    assert text, f"experiments/{name}.py's docstring has no 'Expected ...' paragraph"
    doc = committed(name)
    candidates = _numbers_in_string(rendered_tables(name)) + _json_numbers(doc)
    missing = unmatched(text, [abs(c) for c in candidates])
    assert not missing, (
        f"experiments/{name}.py's Expected paragraph states {missing}, which are not numbers of "
        f"experiments/results/{name}.json (nor of its rendered README tables)"
    )
