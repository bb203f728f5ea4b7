"""No file a user receives points at material the user does not have.

The project was written from notes that are not shipped with it. A user reading the README, a docstring, an
experiment or a test must find the algorithm and its source there (the paper, the authors' code, a closed
form), never a pointer to an internal note, to a folder beside the checkout, to a numbered internal source
document or to an issue tracker entry. This test scans every text file of the project that is tracked or
about to be (``git ls-files --cached --others --exclude-standard``; without git, a walk of the project's
folders) and names ``file:line`` for each such pointer.

The patterns are assembled from pieces so that this file does not match them itself.
"""

from __future__ import annotations

import os
import pathlib
import re
import shutil
import subprocess

ROOT = pathlib.Path(__file__).resolve().parents[1]

# What a user receives: the package, its docs, the experiments, benchmarks and tests, the build files.
SCANNED_FILES = ("README.md", "pyproject.toml", "Makefile")
SCANNED_DIRS = ("randlr_jax", "experiments", "benchmarks", "tests", ".ci")
# Never part of the project's text, even if present on disk (only used when walking without git).
SKIPPED_DIRS = {
    ".git",
    ".venv",
    "__pycache__",
    ".pytest_cache",
    ".ruff_cache",
    ".hypothesis",
    "runs",
}

_NOTES = "ALGO" + "RITHMS" + r"\.md"
_SIBLING_FOLDER = r"\.\./" + "sha" + "red"
_NUMBERED_SOURCE = r"\bse" + r"ed\s+00\d"
_PROJECT_SOURCE = r"\bproj" + r"ect\s+se" + "ed"
_TRACKER = r"\biss" + r"ue\s*#?\s*\d+"
FORBIDDEN = re.compile(
    "|".join(
        f"(?:{p})" for p in (_NOTES, _SIBLING_FOLDER, _NUMBERED_SOURCE, _PROJECT_SOURCE, _TRACKER)
    ),
    re.IGNORECASE,
)


def _in_scope(relative: str) -> bool:
    first = relative.split("/", 1)[0]
    return relative in SCANNED_FILES or (first in SCANNED_DIRS and "/" in relative)


def _git_files() -> list[str] | None:
    """The project's files as git sees them (tracked, plus untracked ones not ignored); ``None`` without
    a usable git."""
    git = shutil.which("git")
    if git is None or not (ROOT / ".git").exists():
        return None
    try:
        out = subprocess.run(
            [git, "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
            cwd=ROOT,
            capture_output=True,
            check=True,
            timeout=60,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return [name for name in out.decode("utf-8", "surrogateescape").split("\0") if name]


def _walked_files() -> list[str]:
    names = [name for name in SCANNED_FILES if (ROOT / name).is_file()]
    for folder in SCANNED_DIRS:
        for directory, subdirs, files in os.walk(ROOT / folder):
            subdirs[:] = [
                d for d in subdirs if d not in SKIPPED_DIRS and not d.endswith(".egg-info")
            ]
            for name in files:
                names.append((pathlib.Path(directory) / name).relative_to(ROOT).as_posix())
    return names


def project_text_files() -> list[pathlib.Path]:
    """Every text file in scope (binary files, e.g. the shipped msgpack weights, are left out)."""
    names = _git_files()
    if names is None:
        names = _walked_files()
    paths = []
    for name in sorted(set(names)):
        path = ROOT / name
        if not _in_scope(name) or not path.is_file():
            continue
        data = path.read_bytes()
        if b"\0" in data:
            continue
        try:
            data.decode("utf-8")
        except UnicodeDecodeError:
            continue
        paths.append(path)
    return paths


def find_internal_references(paths: list[pathlib.Path]) -> list[str]:
    """``file:line: match`` for every forbidden pointer in ``paths``."""
    found = []
    for path in paths:
        text = path.read_text("utf-8")
        if FORBIDDEN.search(text) is None:  # the common case: one pass over the file
            continue
        for number, line in enumerate(text.splitlines(), start=1):
            for match in FORBIDDEN.finditer(line):
                found.append(f"{path.relative_to(ROOT).as_posix()}:{number}: {match.group(0)!r}")
    return found


def test_the_scan_sees_the_project():
    paths = {p.relative_to(ROOT).as_posix() for p in project_text_files()}
    for expected in (
        "README.md",
        "pyproject.toml",
        "randlr_jax/__init__.py",
        pathlib.Path(__file__).name,
    ):
        assert any(p == expected or p.endswith("/" + expected) for p in paths), expected
    # The check itself catches each kind of pointer, whatever its case.
    for sample in (
        "see " + "ALGO" + "RITHMS.md §2",
        "../" + "shared/seeds",
        "Se" + "ed 004, Fig. 3",
        "the proj" + "ect seed",
        "fixes Iss" + "ue #12",
        "iss" + "ue 5",
    ):
        assert FORBIDDEN.search(sample), sample
    for fine in ("random seed 0", "seed 42", "an issue with the data", "tissue 3"):
        assert not FORBIDDEN.search(fine), fine


def test_no_internal_references():
    found = find_internal_references(project_text_files())
    assert not found, (
        f"{len(found)} pointer(s) to material users do not have; state the content instead (the paper, "
        "the authors' code, a closed form):\n" + "\n".join(found)
    )
