"""Early stopping on validation loss with patience and best-epoch selection (host-side, once per epoch)."""

from __future__ import annotations

import dataclasses
import math


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
