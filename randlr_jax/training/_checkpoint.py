"""Resumable checkpoints with orbax-checkpoint: the training state plus a small JSON of loop bookkeeping.

A checkpoint holds everything needed to continue a run bit-for-bit: parameters, optimizer state (which for
our transformations includes sampled learning rates and switch posteriors), model state (BatchNorm statistics,
recurrent carries), the dropout key, and the loop's position (epoch, batch within the epoch, early-stopping
record, metric history). Writes are atomic (orbax writes to a temporary directory and renames), so an
interruption during a save leaves the previous checkpoint intact; a newest checkpoint damaged otherwise (a
truncated or deleted file) is skipped on restore, with a warning, for the previous intact one.
"""

from __future__ import annotations

import os
import warnings
from typing import Any

import jax
import numpy as np

from randlr_jax import _checks as checks


def _orbax() -> Any:
    try:
        import orbax.checkpoint  # imported on use: ``import randlr_jax`` stays light
    except ImportError as error:
        raise ImportError(
            "randlr_jax.training.Checkpointer (used by fit and fit_population) needs orbax-checkpoint: "
            "pip install 'randlr_jax[checkpointing]' (or 'randlr_jax[all]')."
        ) from error
    return orbax.checkpoint


class Checkpointer:
    """Save and restore ``(state, meta)`` pairs under ``directory``, keeping the newest ``max_to_keep``.

    Args:
      directory: where the checkpoints live (created if missing); made absolute.
      max_to_keep: how many checkpoints to keep (older ones are deleted), a positive integer.

    Raises:
      ValueError: ``directory`` not a path or ``max_to_keep`` not a positive integer (checked before
        anything is created).
      FileExistsError: ``directory`` is a file.
    """

    def __init__(self, directory: str | os.PathLike, max_to_keep: int = 2):
        directory = checks.path("directory", directory)
        max_to_keep = checks.positive_int("max_to_keep", max_to_keep)
        ocp = _orbax()
        self.directory = os.path.abspath(directory)
        try:
            os.makedirs(self.directory, exist_ok=True)
        except OSError as error:
            raise type(error)(
                f"directory must be a directory (or a path where one can be made), got "
                f"{self.directory!r}: {error.strerror or error}."
            ) from error
        options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True)
        self._manager = ocp.CheckpointManager(
            self.directory, options=options, item_names=("state", "meta")
        )

    def latest_step(self) -> int | None:
        """The newest checkpoint's step (``None``: none). It may be damaged: :meth:`restore` then falls
        back to the previous intact one."""
        return self._manager.latest_step()

    def save(self, step: int, state: Any, meta: dict, *, wait: bool = True) -> None:
        """Write checkpoint ``step`` (replacing one of the same step); with ``wait``, return once it is
        on disk, otherwise once the arrays are copied off the devices (orbax's asynchronous save: the
        files are written in the background while training goes on, and the state's buffers may be
        donated at once). A save waits for the previous one first; :meth:`wait` and :meth:`close`
        wait for the last."""
        ocp = _orbax()
        self._manager.wait_until_finished()  # a save an interrupt left running
        if int(step) in self._manager.all_steps():
            self._manager.delete(int(step))
        args = ocp.args.Composite(
            state=ocp.args.StandardSave(_flatten(state)), meta=ocp.args.JsonSave(_jsonable(meta))
        )
        self._manager.save(int(step), args=args, force=True)
        if wait:
            self._manager.wait_until_finished()

    def wait(self) -> None:
        """Wait until the last save is on disk."""
        self._manager.wait_until_finished()

    def restore(self, target: Any, step: int | None = None) -> tuple[Any, dict]:
        """Restore checkpoint ``step`` into the structure and shardings of ``target``.

        Default: the newest intact checkpoint. A newer one that cannot be read (a damaged file, a missing
        part) is skipped with a warning naming its directory.

        Raises:
          FileNotFoundError: there is no checkpoint.
          RuntimeError: no checkpoint (or not ``step``) could be restored; the message names the
            directories and why, in one line.
        """
        ocp = _orbax()
        steps = [int(step)] if step is not None else sorted(self._manager.all_steps(), reverse=True)
        if not steps:
            raise FileNotFoundError(f"No checkpoint under {self.directory!r}.")
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, _flatten(target))
        failures = []
        for candidate in steps:
            try:
                restored = self._manager.restore(
                    candidate,
                    args=ocp.args.Composite(
                        state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()
                    ),
                )
                result = _unflatten(target, restored["state"]), dict(restored["meta"])
            except Exception as error:  # noqa: BLE001 -- orbax and tensorstore raise many kinds
                failures.append(f"{self._step_dir(candidate)} ({_first_line(error)})")
                continue
            for failure in failures:
                warnings.warn(
                    f"Skipped the unreadable checkpoint {failure}; restored "
                    f"{self._step_dir(candidate)} instead.",
                    stacklevel=2,
                )
            return result
        raise RuntimeError(
            f"No checkpoint under {self.directory!r} could be restored: {'; '.join(failures)}. Delete "
            "the directory (or use another workdir) to start afresh; if the model or optimizer "
            "changed since they were written, that is why."
        ) from None

    def _step_dir(self, step: int) -> str:
        return os.path.join(self.directory, str(step))

    def close(self) -> None:
        """Wait for the last save, then stop the manager's threads."""
        try:
            self._manager.wait_until_finished()
        finally:
            self._manager.close()

    def __enter__(self) -> Checkpointer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _first_line(error: BaseException, limit: int = 300) -> str:
    """``"Type: the first line of the message"``, at most ``limit`` characters."""
    lines = str(error).strip().splitlines()
    text = f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _flatten(tree: Any) -> dict[str, Any]:
    """Leaves keyed by position: orbax then never has to reproduce our NamedTuples and dataclasses.

    Typed PRNG keys are stored as their raw ``key_data``.
    """
    leaves = jax.tree.leaves(tree)
    return {f"{i:05d}": _key_data(leaf) for i, leaf in enumerate(leaves)}


def _unflatten(target: Any, flat: dict[str, Any]) -> Any:
    leaves, treedef = jax.tree.flatten(target)
    if len(flat) != len(leaves):
        raise ValueError(
            f"Checkpoint has {len(flat)} arrays but the target state has {len(leaves)}: the model or "
            "optimizer changed since the checkpoint was written. Use another workdir or delete it."
        )
    restored = []
    for i, like in enumerate(leaves):
        value = flat[f"{i:05d}"]
        if _is_typed_key(like):
            value = jax.random.wrap_key_data(value, impl=jax.random.key_impl(like))
        restored.append(value)
    return jax.tree.unflatten(treedef, restored)


def _is_typed_key(x: Any) -> bool:
    return isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)


def _key_data(x: Any) -> Any:
    return jax.random.key_data(x) if _is_typed_key(x) else x


def _jsonable(obj: Any) -> Any:
    """Make numpy scalars/arrays JSON-serialisable (the loop's bookkeeping is small)."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (np.generic,)):
        return obj.item()
    if isinstance(obj, (np.ndarray, jax.Array)):
        return np.asarray(obj).tolist()
    if isinstance(obj, float) and not np.isfinite(obj):
        return repr(obj)  # JSON has no inf/nan; keep it readable.
    return obj
