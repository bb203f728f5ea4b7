"""AutoDrop's state as a training metric, and what a run's history says about its drops.

``make_train_step(model, tx, extra_metrics=autodrop_metrics)`` adds one vector metric, ``"autodrop"``:
``[alpha, omega, drop_phase, num_drops]`` of the optimizer state *after* the step (the rate in force
for the next step, the last measured angle in degrees, 1 during a drop phase, the drops so far). The
training loop keeps each epoch's last value as ``history[e]["last_autodrop"]``; :func:`autodrop_curves`
turns those into per-epoch curves and the epochs at which the rate dropped.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax.numpy as jnp
import numpy as np

from randlr_jax import _checks as checks
from randlr_jax.autodrop._autodrop import get_autodrop_state

AUTODROP_FIELDS = ("learning_rate", "angle", "drop_phase", "num_drops")
"""The entries of the ``"autodrop"`` metric, in order."""


def autodrop_metrics(state: Any, new_state: Any, batch: Any, aux: Any) -> dict[str, jnp.ndarray]:
    """An ``extra_metrics`` hook: ``{"autodrop": [alpha, omega, drop_phase, num_drops]}`` (float32).

    Read from ``new_state.opt_state`` with :func:`get_autodrop_state` (one AutoDrop inside any chain).
    """
    del state, batch, aux
    ad = get_autodrop_state(new_state.opt_state)
    return {
        "autodrop": jnp.stack(
            [
                ad.learning_rate,
                ad.angle,
                ad.drop_phase.astype(jnp.float32),
                ad.num_drops.astype(jnp.float32),
            ]
        )
    }


def autodrop_curves(history: Sequence[dict], key: str = "last_autodrop") -> dict[str, list]:
    """Per-epoch rate and angle, and the drop epochs, from a history logged with :func:`autodrop_metrics`.

    Epoch ``e`` (``history[i]["epoch"]``) is a drop epoch when ``num_drops`` at its end exceeds the
    previous epoch's (for the first record: exceeds 0).

    Args:
      history: ``fit``'s per-epoch records, each holding ``key`` (the epoch's last ``"autodrop"``).
      key: the record's field.

    Returns:
      ``{"learning_rate": [...], "angle": [...], "drop_epochs": [...]}`` (Python floats and ints).

    Raises:
      ValueError: an empty history, or a record without ``key`` of length 4.

    Example:
      >>> history = [{"epoch": 1, "last_autodrop": [0.1, 80.0, 0.0, 0.0]},
      ...            {"epoch": 2, "last_autodrop": [0.02, 85.0, 0.0, 1.0]}]
      >>> autodrop_curves(history)["drop_epochs"]
      [2]
    """
    if isinstance(history, (str, bytes)) or not isinstance(history, Sequence) or not history:
        checks.fail("history", "a non-empty list of per-epoch records", history)
    for index, record in enumerate(history):
        value = record.get(key) if isinstance(record, dict) else None
        if value is None or np.shape(value) != (len(AUTODROP_FIELDS),):
            checks.fail(
                f"history[{index}][{key!r}]", f"a vector {list(AUTODROP_FIELDS)}", value,
                shown=checks.brief(value),
            )  # fmt: skip
    logs = np.asarray([record[key] for record in history], np.float64)
    counts = logs[:, AUTODROP_FIELDS.index("num_drops")]
    previous = np.concatenate([[0.0], counts[:-1]])
    drops = [int(history[i]["epoch"]) for i in range(len(history)) if counts[i] > previous[i]]
    return {
        "learning_rate": logs[:, 0].tolist(),
        "angle": logs[:, 1].tolist(),
        "drop_epochs": drops,
    }
