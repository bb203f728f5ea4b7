"""Many hosts and the device mesh of a run: ``jax.distributed`` start-up and the ``--mesh`` flags.

Every experiment accepts the same flags (:func:`add_arguments`) and turns them into the
:class:`~randlr_jax.training.LoopConfig` fields ``num_devices`` and ``copy_shards`` (:func:`from_args`):

- ``--mesh auto`` (default): all devices of all processes, data parallel;
  ``--mesh data=8``: 8 devices, data parallel; ``--mesh data=4,copies=2``: 4-way data parallel times
  2-way model parallel over Alrao's classifier copies (8 devices).
- ``--distributed``: call ``jax.distributed.initialize()`` with the cluster detected from the environment
  (Cloud TPU pods, SLURM, Open MPI, Kubernetes); or name it with ``--coordinator-address host:port
  --num-processes P --process-id I``. Run the same command on every host.

Example (two hosts, each with its GPUs)::

    # host 0                                                 # host 1
    python -m experiments.alrao_compare --coordinator-address 10.0.0.1:1234 \\
        --num-processes 2 --process-id 0                     ... --process-id 1
"""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any

import jax


@dataclasses.dataclass(frozen=True)
class MeshSpec:
    """A mesh request: ``data`` devices (``None``: all that remain) times ``copies`` devices."""

    data: int | None = None
    copies: int = 1

    @property
    def num_devices(self) -> int | None:
        """Devices in all (``None``: every device)."""
        return None if self.data is None else self.data * self.copies


def parse_mesh(spec: str) -> MeshSpec:
    """Parse ``"auto"``, ``"8"``, ``"data=8"``, ``"copies=2"`` or ``"data=4,copies=2"``.

    Raises:
      ValueError: naming the flag value and the allowed forms.
    """
    allowed = "'auto', 'N', 'data=N', 'copies=C' or 'data=N,copies=C' with positive integers"
    text = str(spec).strip().lower()
    if text in ("", "auto"):
        return MeshSpec()
    if text.isdigit():
        return _checked(MeshSpec(data=int(text)), spec, allowed)
    fields: dict[str, int] = {}
    for part in text.split(","):
        name, sep, value = part.partition("=")
        name = name.strip()
        if not sep or name not in ("data", "copies") or name in fields:
            raise ValueError(f"mesh must be {allowed}, got {spec!r}.")
        try:
            fields[name] = int(value)
        except ValueError:
            raise ValueError(f"mesh must be {allowed}, got {spec!r}.") from None
    return _checked(
        MeshSpec(data=fields.get("data"), copies=fields.get("copies", 1)), spec, allowed
    )


def _checked(mesh: MeshSpec, spec: str, allowed: str) -> MeshSpec:
    if (mesh.data is not None and mesh.data < 1) or mesh.copies < 1:
        raise ValueError(f"mesh must be {allowed}, got {spec!r}.")
    return mesh


def initialize(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    *,
    local_device_ids: Any = None,
) -> None:
    """Start JAX's multi-process runtime (``jax.distributed.initialize``), once.

    With no arguments the cluster is detected from the environment (TPU pods, SLURM, Open MPI, ...).
    On CPU the cross-process collectives use gloo. Call it before any other JAX call that touches devices.

    Raises:
      ValueError: an address without ``num_processes``/``process_id`` or a process id out of range.
    """
    if coordinator_address is not None:
        if num_processes is None or process_id is None:
            raise ValueError(
                "coordinator_address needs num_processes and process_id too, got "
                f"num_processes={num_processes!r}, process_id={process_id!r}."
            )
        if not 0 <= process_id < num_processes:
            raise ValueError(
                f"process_id must be in [0, num_processes={num_processes}), got {process_id!r}."
            )
    if _initialized():
        return
    # Cross-process collectives between CPU devices; GPU and TPU backends have their own.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
        coordinator_address=coordinator_address,
        num_processes=num_processes,
        process_id=process_id,
        local_device_ids=local_device_ids,
    )


def _initialized() -> bool:
    try:
        from jax._src import distributed as _distributed

        return _distributed.global_state.client is not None
    except (ImportError, AttributeError):  # the private layout moved: let initialize() decide
        return False


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add ``--mesh``, ``--distributed``, ``--coordinator-address``, ``--num-processes``, ``--process-id``."""
    group = parser.add_argument_group("devices and hosts")
    group.add_argument(
        "--mesh",
        default="auto",
        help="devices of the run: 'auto' (all, data parallel), 'data=N', or 'data=N,copies=C' "
        "(C-way model parallelism over Alrao's classifier copies).",
    )
    group.add_argument(
        "--distributed",
        action="store_true",
        help="multi-host: jax.distributed.initialize() with the cluster detected from the environment.",
    )
    group.add_argument(
        "--coordinator-address", default=None, help="multi-host: host:port of process 0."
    )
    group.add_argument(
        "--num-processes", type=int, default=None, help="multi-host: number of processes."
    )
    group.add_argument(
        "--process-id", type=int, default=None, help="multi-host: this process's index."
    )
    return parser


def from_args(args: argparse.Namespace) -> MeshSpec:
    """Start the multi-process runtime if the flags ask for it, and return the requested mesh."""
    mesh = parse_mesh(args.mesh)
    if args.distributed or args.coordinator_address is not None:
        initialize(args.coordinator_address, args.num_processes, args.process_id)
    return mesh


def is_main_process() -> bool:
    """True on process 0 (the one that writes tables, figures and JSON results)."""
    return jax.process_index() == 0
