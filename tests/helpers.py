"""Shared test helpers."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

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
