"""Data parallelism with ``jax.sharding``: a 1-D mesh over devices, batches split, everything else replicated.

With global arrays the model's reductions (mean loss, BatchNorm statistics, switch log-likelihoods) are taken
over the whole batch, so a run on ``D`` devices computes the same function as on one device (up to the
floating-point order of the sums).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

DATA_AXIS = "data"


def make_mesh(num_devices: int | None = None, devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A 1-D mesh named ``"data"`` over the first ``num_devices`` local devices (default: all of them)."""
    if devices is None:
        available = jax.local_devices()
        if num_devices is None:
            num_devices = len(available)
        if not 1 <= num_devices <= len(available):
            raise ValueError(
                f"num_devices must be between 1 and the {len(available)} local devices, got {num_devices!r}."
            )
        devices = available[:num_devices]
    return Mesh(np.asarray(devices), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def batch_sharded(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def replicate(tree: Any, mesh: Mesh) -> Any:
    """Put every leaf of ``tree`` on all devices of ``mesh``."""
    return jax.device_put(tree, replicated(mesh))


def shard_batch(batch: Any, mesh: Mesh) -> Any:
    """Split every leaf of ``batch`` along its leading axis over the mesh's data axis.

    Raises:
      ValueError: if the leading size is not a multiple of the number of devices.
    """
    size = mesh.devices.size
    for leaf in jax.tree.leaves(batch):
        if leaf.shape[0] % size:
            raise ValueError(
                f"batch size {leaf.shape[0]} is not a multiple of the {size} devices of the mesh; "
                "choose a batch size divisible by the device count (or run on fewer devices)."
            )
    return jax.device_put(batch, batch_sharded(mesh))


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
