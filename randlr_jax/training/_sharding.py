"""Data (and copy) parallelism with ``jax.sharding``: a 2-D mesh ``("data", "copies")`` over all devices.

The batch is split along ``"data"``; parameters and optimizer state are replicated, except, when the copy
axis has more than one device, the Alrao classifier copies (sharded along ``"copies"``, model parallel, see
:mod:`randlr_jax.alrao`). With global arrays every reduction the model takes (mean loss,
BatchNorm statistics, the copies' log-likelihoods that feed the switch, AutoDrop's angles) is over the
whole global batch and the full parameters, so a run on ``D`` devices computes the same function as on one
device, up to the floating-point order of the sums.

Several hosts (processes): call :func:`randlr_jax.training._distributed.initialize` first; the mesh then
spans every device of every process. Each process computes the same global batch (the order is a function of
the run's random seed and the epoch) and places only the rows its own devices hold (:func:`shard_batch`);
what comes back to the host (metrics, evaluation sums) is replicated or gathered across processes
(:func:`to_host`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from randlr_jax import _checks as checks

DATA_AXIS = "data"
COPY_AXIS = "copies"


def _check_positive_int(name: str, value: Any) -> int:
    return checks.positive_int(name, value)


def make_mesh(
    num_devices: int | None = None,
    devices: Sequence[jax.Device] | None = None,
    *,
    copies: int = 1,
) -> Mesh:
    """A ``(data, copies)`` mesh over ``num_devices`` devices (default: all devices of all processes).

    Args:
      num_devices: how many devices to use (``None``: all). With one process, the first ``num_devices``
        local devices; with several processes it must be ``None`` or the global device count.
      devices: explicit devices (overrides ``num_devices``).
      copies: size of the ``"copies"`` axis (model parallelism over Alrao's classifier copies); the
        ``"data"`` axis gets the remaining ``num_devices // copies`` devices.

    Raises:
      ValueError: ``num_devices`` out of range, or not a multiple of ``copies``; ``devices`` not a
        sequence of distinct devices.
    """
    copies = _check_positive_int("copies", copies)
    if devices is None:
        available = jax.devices()
        if num_devices is None:
            num_devices = len(available)
        if (
            isinstance(num_devices, (bool, np.bool_))
            or not isinstance(num_devices, (int, np.integer))
            or not 1 <= num_devices <= len(available)
        ):
            raise ValueError(
                f"num_devices must be between 1 and the {len(available)} devices, got {num_devices!r}."
            )
        if jax.process_count() > 1 and num_devices != len(available):
            raise ValueError(
                f"num_devices must be None or {len(available)} (every device of the "
                f"{jax.process_count()} processes) in a multi-process run, got {num_devices!r}."
            )
        devices = available[:num_devices]
    devices = checks.devices("devices", devices)
    if len(devices) % copies:
        raise ValueError(
            f"copies={copies} must divide the number of devices ({len(devices)}): the mesh is "
            "(data, copies) with data * copies devices."
        )
    grid = np.asarray(devices, dtype=object).reshape(len(devices) // copies, copies)
    return Mesh(grid, (DATA_AXIS, COPY_AXIS))


def data_size(mesh: Mesh) -> int:
    """The number of batch shards: the size of the mesh's ``"data"`` axis."""
    return int(mesh.shape[DATA_AXIS])


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def batch_sharded(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def replicate(tree: Any, mesh: Mesh) -> Any:
    """Put every leaf of ``tree`` on all devices of ``mesh`` (every process passes the same values).

    Raises:
      ValueError: ``mesh`` not a mesh, or a leaf of ``tree`` that is not a numeric array or scalar
        (or a PRNG key), naming its path.
    """
    checks.mesh("mesh", mesh)
    checks.numeric_leaves("tree", tree, "a numeric array or scalar (or a PRNG key)")
    return put_global(tree, replicated(mesh))


def put_global(tree: Any, sharding: Any) -> Any:
    """``jax.device_put`` of global values, also when ``sharding`` spans devices of other processes.

    Every process passes the same (global) values; each places only the shards of its own devices.
    ``sharding`` is one sharding for every leaf.
    """
    if jax.process_count() == 1:
        return jax.device_put(tree, sharding)
    return jax.tree.map(lambda leaf: _global_array(leaf, sharding), tree)


def shard_batch(batch: Any, mesh: Mesh) -> Any:
    """Split every leaf of the global ``batch`` along its leading axis over the mesh's ``"data"`` axis.

    Every process passes the same global batch; each places only the rows of its own devices.

    Raises:
      ValueError: ``mesh`` not a mesh with a ``"data"`` axis, a leaf that is not a numeric array with a
        leading axis (naming its path), or a leading size that is not a multiple of the ``"data"``
        axis size.
    """
    checks.mesh("mesh", mesh, (DATA_AXIS,))
    checks.numeric_leaves(
        "batch", batch, "a numeric array with a leading batch axis", leading_axis=True
    )
    size = data_size(mesh)
    for leaf in jax.tree.leaves(batch):
        if leaf.shape[0] % size:
            raise ValueError(
                f"batch size {leaf.shape[0]} is not a multiple of the {size} data-parallel devices of "
                "the mesh; choose a batch size divisible by the device count (or run on fewer devices)."
            )
    return put_global(batch, batch_sharded(mesh))


def _global_array(value: Any, sharding: NamedSharding) -> jax.Array:
    if isinstance(value, jax.Array) and not value.is_fully_addressable:
        return jax.device_put(value, sharding)
    if isinstance(value, jax.Array) and jax.dtypes.issubdtype(value.dtype, jax.dtypes.prng_key):
        data = np.asarray(jax.random.key_data(value))
        impl = jax.random.key_impl(value)
        raw = jax.make_array_from_callback(data.shape, sharding, lambda index: data[index])
        return jax.random.wrap_key_data(raw, impl=impl)
    value = np.asarray(value)
    return jax.make_array_from_callback(value.shape, sharding, lambda index: value[index])


def to_host(tree: Any) -> Any:
    """Numpy copies of ``tree``'s arrays, gathered across processes when a process holds only part."""

    def get(leaf):
        if isinstance(leaf, jax.Array) and not leaf.is_fully_addressable:
            if leaf.sharding.is_fully_replicated:
                return np.asarray(leaf.addressable_data(0))
            return np.asarray(multihost_utils.process_allgather(leaf, tiled=True))
        return jax.device_get(leaf)

    return jax.tree.map(get, tree)


def pad_batch(batch: dict, multiple: int) -> dict:
    """Pad a numpy batch to a multiple of ``multiple`` rows, adding a ``"mask"`` (1 real, 0 padding)."""
    n = len(next(iter(batch.values())))
    padded_n = -(-n // multiple) * multiple
    out = {}
    for k, v in batch.items():
        v = np.asarray(v)
        pad = np.zeros((padded_n - n,) + v.shape[1:], v.dtype)
        out[k] = np.concatenate([v, pad]) if padded_n > n else v
    mask = np.zeros((padded_n,), np.float32)
    mask[:n] = 1.0
    out["mask"] = mask if "mask" not in batch else out["mask"] * mask
    return out
