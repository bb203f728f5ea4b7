"""Figures of a run (PNG files drawn on a ``matplotlib.figure.Figure``: no pyplot, no backend change)."""

from __future__ import annotations

import os
from typing import Any


def _figure_class() -> Any:
    """``matplotlib.figure.Figure``, imported on use (``import randlr_jax`` stays light)."""
    try:
        from matplotlib.figure import Figure
    except ImportError as error:
        raise ImportError(
            "randlr_jax's figures need matplotlib: pip install 'randlr_jax[plotting]' "
            "(or 'randlr_jax[all]')."
        ) from error
    return Figure


def learning_curves(
    history: list[dict],
    path: str | os.PathLike,
    *,
    task: str = "classification",
    title: str | None = None,
) -> str:
    """Loss (train / validation / test) and accuracy or bits per character against the epoch."""
    epochs = [r["epoch"] for r in history]
    fig = _figure_class()(figsize=(10, 4))
    axes = fig.subplots(1, 2)
    for key, label in (
        ("train_loss", "train"),
        ("validation_loss", "validation"),
        ("test_loss", "test"),
    ):
        values = [r.get(key) for r in history]
        if any(v is not None for v in values):
            axes[0].plot(
                epochs, [float("nan") if v is None else v for v in values], marker="o", label=label
            )
    axes[0].set_xlabel("epoch")
    axes[0].set_ylabel("cross-entropy loss")
    axes[0].legend()
    axes[0].grid(alpha=0.3)
    second = "bits_per_char" if task == "language_model" else "accuracy"
    for split in ("validation", "test"):
        values = [r.get(f"{split}_{second}") for r in history]
        if any(v is not None for v in values):
            axes[1].plot(
                epochs, [float("nan") if v is None else v for v in values], marker="o", label=split
            )
    axes[1].set_xlabel("epoch")
    axes[1].set_ylabel(second.replace("_", " "))
    axes[1].legend()
    axes[1].grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = os.fspath(path)
    fig.savefig(path, dpi=110)
    return path
