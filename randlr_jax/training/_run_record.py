"""What a run directory holds a run *of*: a fingerprint of the settings, checked before resuming.

:func:`~randlr_jax.training.fit` resumes from whatever checkpoint its ``workdir`` holds. Re-run with other
settings (another optimizer, rate, model, data or epoch budget) it would continue, or simply return, the
recorded run, and its numbers would then be reported under the new settings. :func:`fingerprint` builds a
JSON-ready dict of what determines a run's numbers; :func:`check_or_write` records it in
``workdir/run.json`` on the first call and, on later calls, refuses (``ValueError`` naming the differing
keys) when the directory already holds a run of other settings. One difference is allowed: a larger
epoch budget (:data:`GROWABLE`), which continues the run exactly as an uninterrupted run of that budget.

``run.json`` holds one fingerprint per *section*: the training loop's own (``"fit"``) and those of the
layers above it (``"runner"``, ``"experiment"``), each checked on its own, so a caller can describe what
the loop cannot see (an Optax transformation's name and hyperparameters, through ``run_info``).

What the fingerprint holds:

* the :class:`~randlr_jax.training.LoopConfig` fields, except those that do not change the numbers
  (:data:`IGNORED_LOOP_FIELDS`: the progress bar, its refresh, prefetching, the checkpoint
  policy, the steps per dispatch, where the data live and whether the test split is evaluated every
  epoch, since resuming from any checkpoint ends where the uninterrupted run ends);
* the task and the model (its Flax ``repr``: the module tree with every attribute);
* the optimizer "as far as it can be described": an Optax transformation is a pair of closures, so its
  description is the functions' qualified names and the values they close over (numbers, strings,
  arrays by content hash, nested transformations and schedules), digested; plus the caller's
  ``run_info`` (e.g. ``{"optimizer": "adam", "learning_rate": 1e-3}``), the readable part;
* the training step replacing the default one (its qualified name and closure, digested);
* a population's learning rates and its optimizer's keyword arguments;
* the splits: every array's shape, dtype and a hash of its first and last 1,000 bytes (cheap, and
  enough to tell two data sets or two cuts apart).

Example:
  >>> import optax
  >>> from randlr_jax.models import make_model
  >>> from randlr_jax.training import LoopConfig
  >>> config, model, tx = LoopConfig(epochs=3), make_model("mlp", num_classes=2), optax.sgd(0.1)
  >>> splits = {"train": {"x": np.zeros((8, 4), np.float32), "y": np.zeros(8, np.int32)}}
  >>> record = fingerprint(config, task="classification", model=model, splits=splits, optimizer=tx,
  ...                      run_info={"optimizer": "sgd", "learning_rate": 0.1})
  >>> check_or_write("runs/example", record)  # first call: writes runs/example/run.json
  >>> check_or_write("runs/example", record)  # later calls compare: the same settings pass
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
import os
import re
import types
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import numpy as np

RECORD_NAME = "run.json"
FORMAT = 1

# LoopConfig fields that do not change a run's numbers.
IGNORED_LOOP_FIELDS = frozenset(
    {
        "progress",
        "description",
        "log_every",
        "prefetch",
        "checkpoint_every_steps",
        "checkpoint_every_seconds",
        "steps_per_dispatch",
        "device_data_mb",
        "test_every_epoch",
    }
)
# Keys a re-run may increase: a larger epoch budget continues the run (its data order, early stopping and
# best epoch are those of an uninterrupted run of that budget); a smaller one would return more epochs
# than asked, and is refused.
GROWABLE = ("loop.epochs",)
# Files a directory may hold without holding a run (``config.json``: written with the record).
_BOOKKEEPING = frozenset({RECORD_NAME, "config.json"})

_DATA_BYTES = 1000  # hashed at each end of every data array
_FULL_HASH_BYTES = 16 << 20  # arrays closed over by an optimizer: hashed whole up to this size
_MAX_DEPTH = 24
_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")


def fingerprint(
    config: Any,
    *,
    task: str,
    model: Any,
    splits: Mapping[str, Any],
    optimizer: Any = None,
    optimizer_kwargs: Mapping[str, Any] | None = None,
    learning_rates: Sequence[float] | None = None,
    train_step: Callable | None = None,
    run_info: Mapping[str, Any] | None = None,
    eval_params: Callable | None = None,
) -> dict[str, Any]:
    """A JSON-ready description of what determines a run's numbers (see the module's docstring).

    Args:
      config: the run's :class:`~randlr_jax.training.LoopConfig` (any dataclass: its fields are read).
      task: ``"classification"`` or ``"language_model"``.
      model: the Flax model (described by its ``repr``, memory addresses removed).
      splits: the splits handed to ``fit`` (every array leaf is hashed cheaply).
      optimizer: an Optax transformation (``fit``) or factory (``fit_population``); described by the
        functions it is made of and the values they close over, digested.
      optimizer_kwargs: a population factory's keyword arguments.
      learning_rates: a population's rates.
      train_step: a replacement training step (e.g. Alrao's), described as ``optimizer``.
      eval_params: the function giving the evaluated parameters (``fit``'s), described as
        ``optimizer``.
      run_info: what the caller knows and the loop cannot see (the optimizer's name and
        hyperparameters, the method); JSON-like values.

    Returns:
      A dict of plain JSON values: equal dicts for runs of the same settings, in any process.
    """
    if not dataclasses.is_dataclass(config):
        raise TypeError(f"config must be a LoopConfig, got {type(config).__name__}.")
    loop = {
        f.name: getattr(config, f.name)
        for f in dataclasses.fields(config)
        if f.name not in IGNORED_LOOP_FIELDS
    }
    record: dict[str, Any] = {
        "loop": loop,
        "task": task,
        "model": _ADDRESS.sub("", repr(model)),
        "data": data_fingerprint(splits),
    }
    if optimizer is not None:
        record["optimizer"] = describe(optimizer)
    if optimizer_kwargs:
        record["optimizer_kwargs"] = dict(optimizer_kwargs)
    if learning_rates is not None:
        record["learning_rates"] = [float(r) for r in np.asarray(learning_rates).reshape(-1)]
    if train_step is not None:
        record["train_step"] = describe(train_step)
    if run_info is not None:
        record["run_info"] = dict(run_info)
    if eval_params is not None:
        record["eval_params"] = describe(eval_params)
    return normalize(record)


def data_fingerprint(splits: Mapping[str, Any]) -> dict[str, Any]:
    """``{path: {"shape", "dtype", "hash"}}`` for every array leaf of ``splits`` (``"train/x"``, ...).

    The hash covers the shape, the dtype and the first and last 1,000 bytes of the array: a cheap check
    that tells data sets, splits and cuts apart, not a proof that every byte is the same.
    """
    out = {}
    leaves, _ = jax.tree_util.tree_flatten_with_path(splits)
    for path, leaf in leaves:
        name = "/".join(_key_name(k) for k in path)
        out[name] = _array_summary(leaf, _DATA_BYTES)
    return out


def describe(obj: Any) -> dict[str, str]:
    """``{"kind", "digest"}`` of an optimizer, factory or function, the same in every process.

    ``kind``: the qualified name of what ``obj`` is (for an Optax transformation, of its ``update``);
    ``digest``: a hash of the functions it is made of, recursively, and of the values they close over
    (numbers and strings by value, arrays and PRNG keys by content, other objects by type only).
    """
    tree = _walk(obj, 0, frozenset())
    text = json.dumps(tree, sort_keys=True, default=str)
    return {"kind": _kind(obj), "digest": hashlib.sha256(text.encode()).hexdigest()[:16]}


def normalize(value: Any) -> Any:
    """``value`` as it reads back from JSON: tuples as lists, string keys, numpy scalars as numbers,
    non-finite floats as strings (``"nan"``, ``"inf"``); other objects as their ``repr``."""
    if isinstance(value, Mapping):
        return {str(k): normalize(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [normalize(v) for v in value]
    if isinstance(value, np.ndarray):
        return normalize(value.tolist())
    if isinstance(value, np.generic):
        return normalize(value.item())
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if value is None or isinstance(value, (bool, int, str)):
        return value
    return _ADDRESS.sub("", repr(value))


def check_or_write(
    workdir: str | os.PathLike,
    fingerprint: Mapping[str, Any],
    *,
    section: str = "fit",
    growable: Sequence[str] = GROWABLE,
) -> None:
    """Record ``fingerprint`` in ``workdir/run.json``, or check it against the one recorded there.

    * No record of ``section`` yet: it is written (the directory is created if needed).
    * The same record: nothing to do (the run resumes).
    * Only ``growable`` numbers (the epoch budget) larger: the run continues; the record is updated.
    * A different record in a directory that holds a run (anything besides ``run.json`` and
      ``config.json``: checkpoints, metrics, results): ``ValueError`` naming the differing keys.
    * A different record in a directory that holds nothing else (nothing ran, e.g. a run that failed
      its argument checks): the new record replaces it.

    Only process 0 writes (atomically: a temporary file renamed); every process checks.

    Args:
      workdir: the run directory.
      fingerprint: from :func:`fingerprint`, or any JSON-like dict (normalised with :func:`normalize`).
      section: whose record it is: ``"fit"`` for the training loop's own, ``"runner"`` or
        ``"experiment"`` for a caller's description of the same run.
      growable: dotted keys whose integer value may increase on a re-run (default: ``loop.epochs``);
        ``()``: every key must match.

    Raises:
      ValueError: ``workdir`` holds a run of other settings.
    """
    workdir = os.path.abspath(os.fspath(workdir))
    current = normalize(dict(fingerprint))
    path = os.path.join(workdir, RECORD_NAME)
    records = _read(path)
    recorded = records.get("sections", {}).get(section)
    if recorded == current:
        return
    if recorded is not None and _holds_a_run(workdir):
        keys = differing_keys(recorded, current)
        if not all(_grew(key, recorded, current, growable) for key in keys):
            raise ValueError(_mismatch_message(workdir, section, recorded, current, growable))
    records.setdefault("format", FORMAT)
    records.setdefault("sections", {})[section] = current
    if jax.process_index() == 0:
        os.makedirs(workdir, exist_ok=True)
        temporary = os.path.join(workdir, f".{RECORD_NAME}.{os.getpid()}.tmp")
        with open(temporary, "w") as f:
            json.dump(records, f, indent=2, sort_keys=True)
        os.replace(temporary, path)


def read_record(workdir: str | os.PathLike, section: str = "fit") -> dict[str, Any] | None:
    """The fingerprint recorded for ``section`` in ``workdir/run.json`` (``None``: none)."""
    records = _read(os.path.join(os.fspath(workdir), RECORD_NAME))
    return records.get("sections", {}).get(section)


def differing_keys(recorded: Any, current: Any, prefix: str = "") -> list[str]:
    """Dotted paths where two records differ (a key on one side only counts as differing)."""
    if isinstance(recorded, dict) and isinstance(current, dict):
        out = []
        for key in sorted(set(recorded) | set(current)):
            name = f"{prefix}.{key}" if prefix else str(key)
            if key not in recorded or key not in current:
                out.append(name)
            else:
                out += differing_keys(recorded[key], current[key], name)
        return out
    return [] if recorded == current else [prefix or "(record)"]


# ------------------------------------------------------------------------------------------------


def _read(path: str) -> dict[str, Any]:
    try:
        with open(path) as f:
            records = json.load(f)
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as error:
        raise ValueError(
            f"{path} is not a readable run record ({error}); delete it (or the directory) to start "
            "afresh."
        ) from error
    if not isinstance(records, dict) or not isinstance(records.get("sections", {}), dict):
        raise ValueError(
            f"{path} is not a run record; delete it (or the directory) to start afresh."
        )
    return records


def _holds_a_run(workdir: str) -> bool:
    try:
        names = os.listdir(workdir)
    except FileNotFoundError:
        return False
    return any(name not in _BOOKKEEPING and not name.startswith(".") for name in names)


def _grew(key: str, recorded: dict, current: dict, growable: Sequence[str]) -> bool:
    before, after = _lookup(recorded, key), _lookup(current, key)
    numbers = all(isinstance(v, int) and not isinstance(v, bool) for v in (before, after))
    return key in growable and numbers and after > before


def _mismatch_message(
    workdir: str, section: str, recorded: dict, current: dict, growable: Sequence[str]
) -> str:
    keys = differing_keys(recorded, current)
    shown = []
    for key in keys[:8]:
        before, after = _lookup(recorded, key), _lookup(current, key)
        shrank = key in growable and not _grew(key, recorded, current, growable)
        note = "; it may grow, not shrink" if shrank else ""
        shown.append(f"{key} (recorded {_short(before)}, now {_short(after)}{note})")
    more = f"; and {len(keys) - 8} more" if len(keys) > 8 else ""
    return (
        f"{workdir} already holds a run of other settings; its {RECORD_NAME} ({section!r} record) "
        f"differs in: {'; '.join(shown)}{more}. Resuming would report that run's checkpoints and "
        "results under the new settings. Use another --workdir (another directory), or delete "
        f"{workdir} to start afresh."
    )


def _lookup(record: Any, dotted: str) -> Any:
    value = record
    for part in dotted.split("."):
        if not isinstance(value, dict) or part not in value:
            return "(absent)"
        value = value[part]
    return value


def _short(value: Any, limit: int = 60) -> str:
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _key_name(key: Any) -> str:
    for attr in ("key", "name", "idx"):
        if hasattr(key, attr):
            return str(getattr(key, attr))
    return str(key)


def _array_summary(leaf: Any, edge_bytes: int | None) -> dict[str, Any]:
    """Shape, dtype and a hash of the bytes (all of them, or ``edge_bytes`` at each end)."""
    if isinstance(leaf, jax.Array) and jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
        leaf = jax.random.key_data(leaf)
    if isinstance(leaf, jax.Array) and not leaf.is_fully_addressable:
        return {"shape": list(leaf.shape), "dtype": str(leaf.dtype)}  # other hosts hold parts
    array = np.asarray(leaf)
    flat = np.ravel(array)
    digest = hashlib.sha256(f"{array.shape}{array.dtype}".encode())
    if edge_bytes is None or flat.nbytes <= 2 * edge_bytes:
        digest.update(np.ascontiguousarray(flat).tobytes())
    else:
        count = max(1, -(-edge_bytes // max(flat.itemsize, 1)))
        digest.update(np.ascontiguousarray(flat[:count]).tobytes())
        digest.update(np.ascontiguousarray(flat[-count:]).tobytes())
    return {"shape": list(array.shape), "dtype": str(array.dtype), "hash": digest.hexdigest()[:16]}


def _name(fn: Any) -> str:
    module = getattr(fn, "__module__", None) or ""
    qualname = getattr(fn, "__qualname__", None) or type(fn).__qualname__
    return f"{module}.{qualname}" if module else qualname


def _kind(obj: Any) -> str:
    update = getattr(obj, "update", None)
    if isinstance(obj, tuple) and callable(update):  # an Optax GradientTransformation
        return _name(update)
    if callable(obj):
        return _name(obj)
    return _name(type(obj))


def _walk(obj: Any, depth: int, seen: frozenset) -> Any:
    """A JSON-like tree of ``obj``: deterministic (no ids, no addresses) for the same settings."""
    if obj is None or isinstance(obj, (bool, int, str)):
        return obj
    if isinstance(obj, float):
        return repr(obj)
    if depth > _MAX_DEPTH:
        return "<deep>"
    if id(obj) in seen:
        return "<cycle>"
    seen = seen | {id(obj)}
    if isinstance(obj, (np.ndarray, np.generic, jax.Array)):
        nbytes = getattr(obj, "nbytes", 0)
        return _array_summary(obj, None if nbytes <= _FULL_HASH_BYTES else _DATA_BYTES)
    if isinstance(obj, functools.partial):
        return {
            "partial": _walk(obj.func, depth + 1, seen),
            "args": _walk(obj.args, depth + 1, seen),
            "keywords": _walk(obj.keywords, depth + 1, seen),
        }
    if isinstance(obj, types.MethodType):
        return {"method": _walk(obj.__func__, depth + 1, seen), "of": _name(type(obj.__self__))}
    if isinstance(obj, types.FunctionType):
        out: dict[str, Any] = {"function": _name(obj)}
        cells = []
        for name, cell in zip(obj.__code__.co_freevars, obj.__closure__ or (), strict=True):
            try:
                contents = cell.cell_contents
            except ValueError:  # an empty cell
                continue
            cells.append([name, _walk(contents, depth + 1, seen)])
        if cells:
            out["closure"] = cells
        if obj.__defaults__:
            out["defaults"] = _walk(obj.__defaults__, depth + 1, seen)
        if obj.__kwdefaults__:
            out["kwdefaults"] = _walk(obj.__kwdefaults__, depth + 1, seen)
        return out
    if isinstance(obj, (list, tuple)):
        return [_walk(v, depth + 1, seen) for v in obj]
    if isinstance(obj, Mapping):
        items = sorted(obj.items(), key=lambda kv: repr(kv[0]))
        return {str(k): _walk(v, depth + 1, seen) for k, v in items}
    if isinstance(obj, type) or (callable(obj) and hasattr(obj, "__qualname__")):
        return _name(obj)  # classes and builtins
    return f"<{_name(type(obj))}>"  # other objects: by type only (their state is not described)
