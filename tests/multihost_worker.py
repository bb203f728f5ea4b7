"""One process of the two-process test in ``tests/training/test_distributed.py`` (not a test module itself).

Usage: ``python -m tests.multihost_worker PORT PROCESS_ID WORKDIR OUT.npz``. Each process has 4 CPU devices;
together they form one 8-device mesh through ``jax.distributed`` (gloo collectives).
"""

from __future__ import annotations

import os
import sys

os.environ["JAX_PLATFORMS"] = "cpu"
# Four CPU devices a process; no back-end optimisation passes, as in tests/conftest.py (compile-bound).
os.environ["XLA_FLAGS"] = (
    "--xla_force_host_platform_device_count=4 --xla_backend_optimization_level=0 "
    "--xla_llvm_disable_expensive_passes=true"
)

import jax  # noqa: E402

from randlr_jax.training import distributed  # noqa: E402


def main(port: str, process_id: str, workdir: str, out: str) -> None:
    distributed.initialize(f"localhost:{port}", 2, int(process_id))
    jax.config.update("jax_default_matmul_precision", "highest")
    from tests import multihost_run

    assert jax.process_count() == 2 and jax.device_count() == 8, (
        jax.process_count(),
        jax.devices(),
    )
    result = multihost_run.run(workdir)
    arrays = multihost_run.host_arrays(result)
    if distributed.is_main_process():
        import numpy as np

        np.savez(out, **arrays)
    jax.distributed.shutdown()


if __name__ == "__main__":
    main(*sys.argv[1:])
