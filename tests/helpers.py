"""Shared test helpers."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np
import optax


@dataclasses.dataclass(frozen=True)
class ContractCase:
    """One public transformation in the contract suite (``tests/test_contract.py``).

    Attributes:
      name: test id.
      make: builds the transformation (a descent step: updates are added to the parameters). It is
        applied to a tree ``{"body": {"Dense_0": {"kernel" (3, 4), "bias" (4,)}}, "head": {"copies":
        {"kernel" (2, 4, 3), "bias" (2, 3)}}}`` with the gradient of a quadratic.
      inject: ``(factory, static_kwargs, numeric_hyperparameter_name, value)`` for
        ``optax.inject_hyperparams``, or ``None`` when the transformation has no numeric hyperparameter.
      steps_to_converge: steps after which the quadratic must be below 1e-3 of its initial value.
    """

    name: str
    make: Callable[[], optax.GradientTransformation]
    inject: tuple | None = None
    steps_to_converge: int = 300


def blobs(n: int, seed: int, dim: int = 12, classes: int = 3) -> dict:
    """Gaussian blobs ``{"x": (n, dim) float32, "y": (n,) int32}``: a problem an MLP learns in a few steps.

    The class centres are fixed; ``seed`` draws the labels and the noise.
    """
    rng = np.random.default_rng(seed)
    centers = np.random.default_rng(1234).normal(size=(classes, dim)).astype(np.float32) * 2
    y = rng.integers(0, classes, size=n).astype(np.int32)
    x = centers[y] + rng.normal(size=(n, dim)).astype(np.float32)
    return {"x": x, "y": y}


def blob_splits() -> dict:
    """Train (96), validation (40) and test (40) splits of :func:`blobs`."""
    return {"train": blobs(96, 0), "validation": blobs(40, 1), "test": blobs(40, 2)}


def small_batches(num_classes: int = 3, count: int = 3, size: int = 8, dim: int = 5) -> list[dict]:
    """``count`` batches ``{"x": (size, dim) float32, "y": (size,) int32 in [0, num_classes)}``, the
    same ones on every call (``default_rng(0)``)."""
    rng = np.random.default_rng(0)
    return [
        {
            "x": rng.normal(size=(size, dim)).astype(np.float32),
            "y": rng.integers(0, num_classes, size).astype(np.int32),
        }
        for _ in range(count)
    ]


class RaiseAt:
    """A ``fit`` callback raising ``error`` once step ``at`` is logged: a crash (``RuntimeError``, the
    default: nothing is checkpointed) or Ctrl-C (``KeyboardInterrupt``: the loop checkpoints)."""

    def __init__(self, at: int, error: type[BaseException] = RuntimeError):
        self.at, self.error = at, error

    def __call__(self, step, metrics):
        if step >= self.at:
            raise self.error("crash")
