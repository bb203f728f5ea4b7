"""Model parallelism over Alrao's classifier copies: the copy axis sharded along a mesh axis ``"copies"``.

Alrao's stated limitation (Blier et al. 2019, Section 5) is output-heavy models: with ``N`` copies of a
``D x K`` classifier, a word-level language model's head (``K = 10^4``) outgrows the rest of the model.
The copies are independent given the features, so their parameters ``(N, D, K)``, their optimizer state
and their outputs ``(N, B, ..., K)`` can be split over devices along the copy axis: on a mesh
``("data", "copies")`` of ``data x copies`` devices, device ``(d, s)`` holds copies
``s N/copies .. (s+1) N/copies - 1`` and the batch rows of data shard ``d``. Everything else is
replicated (data parallel over ``"data"``). The jitted step is unchanged: GSPMD partitions it from the
shardings of its inputs; the mixture over copies and the features' gradient become all-reductions over
``"copies"``, the copies' gradients all-reductions over ``"data"``. The results equal a one-device run up to
the floating-point order of the sums.

Combine with ``AlraoHead(copy_chunk_size=c)`` when even ``N/copies`` copies' outputs do not fit: chunks
are strided over the copy axis (:func:`randlr_jax.alrao._copies.to_copy_chunks`) so that, when the
``"copies"`` axis size divides ``c``, each chunk is spread over all copy shards.

Example:
  >>> import jax.numpy as jnp
  >>> from randlr_jax.alrao import AlraoHead, alrao_sgd, make_alrao_train_step
  >>> from randlr_jax.models import make_model
  >>> from randlr_jax.training import create_train_state
  >>> model = make_model("mlp", widths=(8,), head=AlraoHead(num_outputs=3, num_copies=4))
  >>> tx = alrao_sgd(jax.random.key(0), 1e-3, 1.0, num_copies=4)
  >>> state = create_train_state(model, tx, jax.random.key(1), jnp.zeros((1, 5)))
  >>> mesh = make_copy_mesh(data=4, copies=2)  # 8 devices: 4-way data, 2-way copies
  >>> state = shard_state(state, mesh)
  >>> step = jit_sharded_step(make_alrao_train_step(model, tx), state, mesh)
  >>> batch = {"x": jnp.zeros((8, 5)), "y": jnp.zeros(8, jnp.int32)}
  >>> state, metrics = step(state, jax.device_put(batch, batch_sharding(mesh)))
  >>> state.params["head"]["copies"]["kernel"].sharding.spec  # (4, 8, 3): two copies per shard
  P('copies',)

References:
  Blier, Wolinski, Ollivier, `Learning with Random Learning Rates <https://arxiv.org/abs/1810.01322>`_, 2019.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np
from jax.experimental import mesh_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from randlr_jax import _checks as checks
from randlr_jax.alrao import _copies as cc
from randlr_jax.training._sharding import COPY_AXIS, DATA_AXIS, put_global
from randlr_jax.training._state import TrainState

HEAD = "head"


def _check_positive_int(name: str, value: Any) -> int:
    return checks.positive_int(name, value)


def _check_state_and_mesh(state: Any, mesh: Any, head_key: Any) -> None:
    if not isinstance(state, TrainState):
        checks.fail(
            "state",
            "a TrainState (randlr_jax.training.create_train_state, or its jax.eval_shape)",
            state,
            shown=checks.brief(state),
        )
    checks.mesh("mesh", mesh)
    checks.name_string("head_key", head_key)


def make_copy_mesh(data: int, copies: int, devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A ``(data, copies)`` mesh with axes ``("data", "copies")``.

    Args:
      data: size of the ``"data"`` axis (the batch is split over it).
      copies: size of the ``"copies"`` axis (the classifier copies are split over it).
      devices: the devices to use, ``data * copies`` of them; default: every device of every process
        (laid out by ``mesh_utils.create_device_mesh``, which keeps the ``"copies"`` axis on
        neighbouring devices).

    Raises:
      ValueError: ``data`` or ``copies`` not a positive integer, ``devices`` not a sequence of distinct
        devices, or ``data * copies`` not the number of devices.
    """
    data = _check_positive_int("data", data)
    copies = _check_positive_int("copies", copies)
    given = devices is not None
    devices = jax.devices() if devices is None else checks.devices("devices", devices)
    if data * copies != len(devices):
        raise ValueError(
            f"data * copies must equal the number of devices ({len(devices)}), got data={data} * "
            f"copies={copies} = {data * copies}"
            + ("." if given else f"; pass devices=jax.devices()[:{data * copies}] to use fewer.")
        )
    if given:
        grid = np.asarray(devices, dtype=object).reshape(data, copies)
    else:
        grid = mesh_utils.create_device_mesh((data, copies), devices=devices)
    return Mesh(grid, (DATA_AXIS, COPY_AXIS))


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Batches split along their leading axis over ``"data"`` (replicated over ``"copies"``)."""
    return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def num_copies_of(params: Any, head_key: str = HEAD) -> int:
    """``N``: the common leading size of the parameters under ``params[head_key]``.

    Raises:
      ValueError: no ``head_key`` entry, or leaves with different leading sizes.
    """
    if not hasattr(params, "keys") or head_key not in params:
        keys = list(params.keys()) if hasattr(params, "keys") else type(params).__name__
        raise ValueError(
            f"head_key={head_key!r} is not a top-level entry of the parameters (got {keys})."
        )
    sizes = {leaf.shape[0] if leaf.ndim else None for leaf in jax.tree.leaves(params[head_key])}
    if len(sizes) != 1 or None in sizes:
        raise ValueError(
            f"every parameter under params[{head_key!r}] must have the copy axis first, of one "
            f"size N; got leading sizes {sorted(map(str, sizes))}."
        )
    return int(sizes.pop())


def _path_keys(path: tuple) -> list:
    return [getattr(k, "key", getattr(k, "name", getattr(k, "idx", None))) for k in path]


def state_shardings(state: TrainState, mesh: Mesh, head_key: str = HEAD) -> TrainState:
    """The shardings of ``state`` on ``mesh``: the classifier copies along ``"copies"``, the rest replicated.

    A leaf is a copy leaf when its path holds the key ``head_key`` and its leading size is ``N``: the
    head's parameters (``params[head_key]``) and the matching optimizer-state leaves (momentum, Adam's
    moments, the per-copy rates of :func:`randlr_jax.alrao.scale_by_copy_lrs`: ``optax.partition`` /
    ``masked`` / ``chain`` states hold the parameters' tree). Copy leaves get ``PartitionSpec("copies")``.
    The recurrent ``carry`` (batch first) is split over ``"data"`` when its leading size allows, as the
    batch. Everything else is replicated, the averaging state in ``model_state["alrao_switch"]``
    included: it is ``O(N)`` numbers that every update reduces over all copies, so splitting it would add
    communication and save no memory.

    Args:
      state: a :class:`~randlr_jax.training.TrainState` (arrays or ``jax.ShapeDtypeStruct``).
      mesh: a mesh with a ``"copies"`` axis (e.g. :func:`make_copy_mesh`).
      head_key: the parameters' key of the :class:`~randlr_jax.alrao.AlraoHead`.

    Returns:
      A ``TrainState`` of ``NamedSharding`` (usable as ``jax.jit``'s ``in_shardings``/``out_shardings``).

    Raises:
      ValueError: ``state`` not a ``TrainState``, ``mesh`` not a mesh or without a ``"copies"`` axis,
        ``params[head_key]`` missing or without a common copy axis, or ``N`` not divisible by the
        ``"copies"`` axis size.
    """
    _check_state_and_mesh(state, mesh, head_key)
    if COPY_AXIS not in mesh.axis_names:
        raise ValueError(
            f"mesh must have a {COPY_AXIS!r} axis (see make_copy_mesh), got axes {mesh.axis_names}."
        )
    num_copies = num_copies_of(state.params, head_key)
    shards = int(mesh.shape[COPY_AXIS])
    if num_copies % shards:
        raise ValueError(
            f"the number of classifier copies N={num_copies} (params[{head_key!r}]) must be divisible "
            f"by the mesh's {COPY_AXIS!r} axis size, got {shards}."
        )
    copy = NamedSharding(mesh, PartitionSpec(COPY_AXIS))
    replicated = NamedSharding(mesh, PartitionSpec())

    def by_path(path, leaf):
        shape = np.shape(leaf)
        if head_key in _path_keys(path) and len(shape) >= 1 and shape[0] == num_copies:
            return copy
        return replicated

    data_size = int(mesh.shape[DATA_AXIS]) if DATA_AXIS in mesh.axis_names else 1

    def carry_sharding(leaf):
        shape = np.shape(leaf)
        if DATA_AXIS in mesh.axis_names and len(shape) >= 1 and shape[0] % data_size == 0:
            return NamedSharding(mesh, PartitionSpec(DATA_AXIS))
        return replicated

    return state.replace(
        step=replicated,
        params=jax.tree_util.tree_map_with_path(by_path, state.params),
        model_state=jax.tree.map(lambda _: replicated, state.model_state),
        opt_state=jax.tree_util.tree_map_with_path(by_path, state.opt_state),
        rng=replicated,
        carry=jax.tree.map(carry_sharding, state.carry),
    )


def shard_state(state: TrainState, mesh: Mesh, head_key: str = HEAD) -> TrainState:
    """``state`` placed on ``mesh`` with :func:`state_shardings` (every process passes the same values)."""
    shardings = state_shardings(state, mesh, head_key)
    if jax.process_count() == 1:
        return jax.device_put(state, shardings)
    return jax.tree.map(put_global, state, shardings)


def jit_sharded_step(
    train_step: Callable[[TrainState, Any], tuple[TrainState, Any]],
    state: TrainState,
    mesh: Mesh,
    *,
    head_key: str = HEAD,
    donate: bool = True,
) -> Callable[[TrainState, Any], tuple[TrainState, Any]]:
    """``jax.jit(train_step)`` with the state sharded as :func:`state_shardings` in and out.

    The batch is split over ``"data"`` (:func:`batch_sharding`), the metrics are replicated. Fixing the
    output shardings keeps the copies split step after step (GSPMD would otherwise be free to pick
    another layout for the new state).

    Args:
      train_step: ``(state, batch) -> (state, metrics)``, e.g. :func:`randlr_jax.make_alrao_train_step`.
      state: a state (or its ``jax.eval_shape``) with the structure the step takes and returns.
      mesh: the mesh (:func:`make_copy_mesh`).
      head_key: as :func:`state_shardings`.
      donate: donate the input state's buffers (the step returns a new one).

    Raises:
      ValueError: ``train_step`` not callable, ``donate`` not a bool, or the arguments of
        :func:`state_shardings`.
    """
    checks.function("train_step", train_step, "a function (state, batch) -> (state, metrics)")
    donate = checks.boolean("donate", donate)
    shardings = state_shardings(state, mesh, head_key)
    replicated = NamedSharding(mesh, PartitionSpec())
    shards = int(mesh.shape[COPY_AXIS])

    @functools.wraps(train_step)
    def sharded_step(state, batch):
        # Traced knowing the copy shards: the fused Alrao loss then visits one copy per device at a
        # time (``randlr_jax.alrao._copies.default_copy_chunk``) and never gathers the copies.
        with cc.copy_shards(shards):
            return train_step(state, batch)

    return jax.jit(
        sharded_step,
        in_shardings=(shardings, batch_sharding(mesh)),
        out_shardings=(shardings, replicated),
        donate_argnums=(0,) if donate else (),
    )
