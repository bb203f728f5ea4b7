"""Run records: metrics on the host, JSON-lines files that survive non-finite values, and
:class:`JsonLinesLog`, the resumable JSON-lines callback of :func:`~randlr_jax.training.fit`.

JSON has no NaN or infinity; they are written as the strings ``"nan"``, ``"inf"``, ``"-inf"`` and read back
as floats (a diverged run's loss is a result worth keeping).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np

from randlr_jax import _checks as checks


def host_metrics(metrics: dict) -> dict:
    """Metrics on the host: Python floats for scalars, numpy arrays otherwise."""
    host = jax.device_get(metrics)
    return {k: float(v) if np.ndim(v) == 0 else np.asarray(v) for k, v in host.items()}


def encode_record(obj: Any) -> Any:
    """JSON-safe: non-finite floats as strings, also inside lists and dicts."""
    if isinstance(obj, dict):
        return {k: encode_record(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [encode_record(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return repr(float(obj))  # "nan", also for a numpy float (whose repr is "np.float64(nan)")
    return obj


def decode_record(obj: Any) -> Any:
    """Undo :func:`encode_record`."""
    if isinstance(obj, dict):
        return {k: decode_record(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [decode_record(v) for v in obj]
    if isinstance(obj, str) and obj in ("nan", "inf", "-inf"):
        return float(obj)
    return obj


def write_jsonl(path: str, records: list[dict]) -> None:
    """Replace ``path`` with one JSON line a record (atomically: written aside, then renamed)."""
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        for r in records:
            f.write(json.dumps(encode_record(r)) + "\n")
    os.replace(tmp, path)


def append_jsonl(path: str, record: dict) -> None:
    """Append one record to ``path``."""
    with open(path, "a") as f:
        f.write(json.dumps(encode_record(record)) + "\n")


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """The records of a JSON-lines file (:func:`decode_record`-ed); ``[]`` if there is no file.

    Blank lines are skipped, and so is a last line cut short (an append interrupted mid-write); a broken
    line anywhere else raises ``ValueError`` naming the file and the line.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        return []
    with open(path) as f:
        lines = f.read().split("\n")
    records = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            records.append(decode_record(json.loads(line)))
        except json.JSONDecodeError as error:
            if all(not rest.strip() for rest in lines[number:]):
                break  # the last line, cut short
            raise ValueError(f"{path}, line {number}: not a JSON record ({error}).") from error
    return records


class JsonLinesLog:
    """A :func:`~randlr_jax.training.fit` callback: one JSON line a call, ``{"step": step, ...}``.

    ``fit`` calls its callbacks as ``callback(step, metrics)`` (host-side metrics: floats, numpy arrays
    for vector metrics such as Alrao's ``posterior``) every ``LoopConfig.log_every`` steps and at each
    epoch's end. Each call appends one record to ``path``: ``step``, then the fields ``record(step,
    metrics)`` returns (default: the metrics named in ``keys``, or every metric), arrays as lists and
    non-finite floats as the strings ``"nan"``/``"inf"`` (read back as floats by :meth:`read`).

    **Resuming.** A resumed ``fit`` calls its callbacks again from the first logging point after the
    checkpoint it resumed from, so the first call a log receives tells where the run stands: before
    appending it, the log drops every record of ``path`` at that step or later (the lines an
    interrupted run wrote past its last checkpoint, which the resumed run writes again), and it does
    the same whenever a call's step is not past the last one written (the log handed to a run started
    over). The file then holds one record per logged step, in order, with no duplicate, as an
    uninterrupted run's would (resuming is exact: the records kept are the uninterrupted run's). A
    record on a step the interrupted run logged and the resumed one does not (``log_every`` changed
    in between) is kept: it is a true value of the same run. A fresh run (no checkpoint) in a
    directory holding an old file drops all of it at its first call. Only the main process
    (``jax.process_index() == 0``) writes, as for ``fit``'s own ``metrics.jsonl``.

    Args:
      path: the JSON-lines file (its directory is created if missing).
      keys: the metric names to write (each must be among the metrics of every call); ``None``:
        every metric. Not with ``record``.
      record: ``record(step, metrics) -> dict`` of the fields to write (e.g. also the number of
        examples seen); not with ``keys``, and no ``"step"`` key (the log writes it).

    Raises:
      ValueError: a bad argument (naming it); at a call, a metric of ``keys`` missing or a ``record``
        that returns no dict or one with ``"step"``.

    Example (``fit(..., callbacks=[log])`` makes these calls; a run resumed from step 10 makes a new
    log whose first call is step 10 again)::

      >>> log = JsonLinesLog("trace.jsonl", keys=["loss"])
      >>> for step in (5, 10, 15):
      ...     log(step, {"loss": 1.0 / step, "accuracy": 0.5})
      >>> resumed = JsonLinesLog("trace.jsonl", keys=["loss"])
      >>> resumed(10, {"loss": 0.1, "accuracy": 0.5})
      >>> [record["step"] for record in resumed.read()]
      [5, 10]
      >>> resumed.read()[0]
      {'step': 5, 'loss': 0.2}
    """

    def __init__(
        self,
        path: str | os.PathLike,
        keys: Sequence[str] | None = None,
        *,
        record: Callable[[int, dict], dict] | None = None,
    ):
        self.path = checks.path("path", path)
        if keys is not None:
            if isinstance(keys, str) or not isinstance(keys, Sequence) or not keys:
                checks.fail("keys", "a non-empty sequence of metric names, or None", keys)
            for index, key in enumerate(keys):
                if not isinstance(key, str) or not key:
                    checks.fail(f"keys[{index}]", "a non-empty str (a metric's name)", key)
            if record is not None:
                raise ValueError("keys and record exclude each other: pass one (or neither).")
            keys = tuple(keys)
        checks.function("record", record, "a function record(step, metrics) -> dict", optional=True)
        self.keys = keys
        self.record = record
        self._last_step: int | None = None  # the last step in the file (None: not read yet)

    def __call__(self, step: int, metrics: dict) -> None:
        step = int(step)
        fields = self._fields(step, metrics)
        if jax.process_index() != 0:
            return
        if self._last_step is None or step <= self._last_step:
            self._drop_from(step)
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        append_jsonl(self.path, {"step": step, **fields})
        self._last_step = step

    def read(self) -> list[dict]:
        """The records written so far, in order (:func:`read_jsonl`)."""
        return read_jsonl(self.path)

    def _fields(self, step: int, metrics: dict) -> dict:
        if self.record is not None:
            fields = self.record(step, metrics)
            if not isinstance(fields, dict):
                checks.fail("record(step, metrics)", "a dict of fields", fields)
            if "step" in fields:
                raise ValueError(
                    "record(step, metrics) must not return a 'step' field (the log writes it), "
                    f"got keys {sorted(fields)}."
                )
        elif self.keys is not None:
            missing = [key for key in self.keys if key not in metrics]
            if missing:
                raise ValueError(
                    f"keys {missing} are not among the metrics of step {step} "
                    f"(metrics: {sorted(metrics)})."
                )
            fields = {key: metrics[key] for key in self.keys}
        else:
            fields = dict(metrics)
        return {name: _jsonable(value) for name, value in fields.items()}

    def _drop_from(self, step: int) -> None:
        """Keep only the records of ``path`` before ``step`` (the file rewritten only if one goes, or
        if its last line was cut short: the next append must start on a line of its own)."""
        kept = []
        if os.path.exists(self.path):
            records = read_jsonl(self.path)
            kept = [r for r in records if int(r["step"]) < step]
            if len(kept) != len(records) or _cut_short(self.path):
                write_jsonl(self.path, kept)
        self._last_step = int(kept[-1]["step"]) if kept else -1


def _cut_short(path: str) -> bool:
    """Whether ``path`` does not end with a newline (its last append was interrupted)."""
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        if f.tell() == 0:
            return False
        f.seek(-1, os.SEEK_END)
        return f.read(1) != b"\n"


def _jsonable(value: Any) -> Any:
    """Host values as JSON: numpy arrays as (nested) lists, numpy scalars as Python numbers."""
    if isinstance(value, (np.ndarray, jax.Array)):
        return np.asarray(value).tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value
