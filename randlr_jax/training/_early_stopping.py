"""Early stopping on validation loss with patience and best-epoch selection (host-side, once per epoch),
for one run (:class:`EarlyStopping`) or per member of a population (:class:`MemberEarlyStopping`)."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np


@dataclasses.dataclass
class EarlyStopping:
    """Track the best (lowest) validation value and stop after ``patience`` epochs without improvement.

    A non-finite value never counts as an improvement. ``patience=None`` never stops.

    Example:
      >>> stopper = EarlyStopping(patience=2)
      >>> [stopper.update(v, epoch) for epoch, v in enumerate([3.0, 2.0, 2.5, 2.1], start=1)]
      [True, True, False, False]
      >>> stopper.best_epoch, stopper.should_stop
      (2, True)
    """

    patience: int | None = None
    best_value: float = math.inf
    best_epoch: int = 0
    bad_epochs: int = 0

    def __post_init__(self):
        if self.patience is not None and self.patience < 1:
            raise ValueError(f"patience must be a positive integer or None, got {self.patience!r}.")

    def update(self, value: float, epoch: int) -> bool:
        """Record the value of ``epoch``; returns whether it is the new best."""
        value = float(value)
        if math.isfinite(value) and value < self.best_value:
            self.best_value, self.best_epoch, self.bad_epochs = value, epoch, 0
            return True
        self.bad_epochs += 1
        return False

    @property
    def should_stop(self) -> bool:
        return self.patience is not None and self.bad_epochs >= self.patience

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        if not math.isfinite(d["best_value"]):
            d["best_value"] = repr(d["best_value"])
        return d

    @classmethod
    def from_dict(cls, d: dict) -> EarlyStopping:
        d = dict(d)
        d["best_value"] = float(d["best_value"])
        return cls(**d)


@dataclasses.dataclass
class MemberEarlyStopping:
    """One :class:`EarlyStopping` per member of a population, with the interface of a single one.

    A member that has stopped is no longer updated (its record stays as it stopped); the population stops
    when every member has. ``update`` takes one value per member (or one for all) and returns which
    members improved.

    Example:
      >>> stoppers = MemberEarlyStopping.create(2, patience=1)
      >>> stoppers.update([3.0, float("nan")], 1).tolist(), stoppers.active.tolist()
      ([True, False], [True, False])
      >>> stoppers.update([2.0, 1.0], 2).tolist(), stoppers.best_epoch
      ([True, False], [2, 0])
    """

    members: list[EarlyStopping]

    @classmethod
    def create(cls, num_members: int, patience: int | None = None) -> MemberEarlyStopping:
        return cls([EarlyStopping(patience=patience) for _ in range(num_members)])

    @property
    def active(self) -> np.ndarray:
        """``(K,)`` bool: the members still training."""
        return np.array([not s.should_stop for s in self.members])

    def update(self, values: float | Sequence[float], epoch: int) -> np.ndarray:
        """Record epoch ``epoch``'s value of every active member; returns ``(K,)`` "is its new best"."""
        active = self.active
        improved = np.zeros(len(self.members), bool)
        for k, stopper in enumerate(self.members):
            if active[k]:
                value = values[k] if isinstance(values, (list, tuple, np.ndarray)) else values
                improved[k] = stopper.update(value, epoch)
        return improved

    @property
    def should_stop(self) -> bool:
        return not self.active.any()

    @property
    def best_epoch(self) -> list[int]:
        return [s.best_epoch for s in self.members]

    @property
    def best_value(self) -> list[float]:
        return [s.best_value for s in self.members]

    def to_dict(self) -> list[dict]:
        """The members' :meth:`EarlyStopping.to_dict`, a list (as ``fit_population``'s checkpoints hold)."""
        return [s.to_dict() for s in self.members]

    @classmethod
    def from_dict(cls, d: list[dict]) -> MemberEarlyStopping:
        return cls([EarlyStopping.from_dict(m) for m in d])
