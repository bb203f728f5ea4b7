"""Over seeds: mean and standard deviation, and the member (rate) a study selects on validation."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from randlr_jax import _checks as checks


def mean_std(values: Sequence[float | None]) -> tuple[float, float]:
    """``(mean, std)`` of ``values`` (the population standard deviation, ``ddof=0``).

    ``None`` (a metric a run did not produce) counts as NaN; an empty sequence gives ``(nan, nan)``.
    A non-finite value propagates: a diverged seed's ``inf`` makes the mean ``inf`` and the std NaN.

    Example:
      >>> mean_std([1.0, 2.0, 3.0])
      (2.0, 0.816496580927726)
    """
    if isinstance(values, (str, bytes)):
        checks.fail("values", "a sequence of numbers", values)
    array = np.asarray([math.nan if v is None else float(v) for v in values], np.float64)
    if array.size == 0:
        return math.nan, math.nan
    with np.errstate(invalid="ignore"):  # inf - inf for a diverged run: the std is NaN
        return float(array.mean()), float(array.std())


def best_over_seeds(validation_losses: Sequence[Sequence[float | None]]) -> int:
    """The member with the lowest mean best validation loss over seeds (one rate for every seed).

    Blier et al. (2019), Section 3: the SGD rate reported is the one chosen on validation loss. With
    several seeds, one rate is chosen for all of them: the member ``k`` minimising
    ``mean_s validation_losses[s][k]``. A member whose loss is missing (``None``) or non-finite in any
    seed (it diverged there) is never chosen, unless every member is; then member 0 is returned.

    Args:
      validation_losses: ``(seeds, K)``: each seed's best validation loss per member.

    Returns:
      The index ``k`` of the chosen member.

    Raises:
      ValueError: no seed, no member, or seeds with different numbers of members.

    Example:
      >>> best_over_seeds([[2.0, 1.1, float("nan")], [2.1, 1.2, 0.5]])
      1
    """
    rows = [list(row) for row in validation_losses]
    if not rows or not rows[0]:
        checks.fail(
            "validation_losses", "a (seeds, members) table with at least one of each",
            validation_losses,
        )  # fmt: skip
    if any(len(row) != len(rows[0]) for row in rows):
        raise ValueError(
            f"validation_losses must have one loss per member in every seed, got rows of lengths "
            f"{[len(row) for row in rows]}."
        )
    losses = np.asarray(
        [[math.inf if v is None else float(v) for v in row] for row in rows], np.float64
    )
    losses = np.where(np.isfinite(losses), losses, np.inf)
    mean = np.where(np.isfinite(losses).all(axis=0), losses.mean(axis=0), np.inf)
    return int(np.argmin(mean))
