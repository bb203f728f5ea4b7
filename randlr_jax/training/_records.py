"""Run records: metrics on the host and JSON-lines files that survive non-finite values.

JSON has no NaN or infinity; they are written as the strings ``"nan"``, ``"inf"``, ``"-inf"`` and read back
as floats (a diverged run's loss is a result worth keeping).
"""

from __future__ import annotations

import json
import math
import os
from typing import Any

import jax
import numpy as np


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
