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


def new_figure(*, figsize: tuple[float, float] = (6.0, 4.0), **kwargs: Any) -> Any:
    """A ``matplotlib.figure.Figure`` not attached to pyplot (no backend needed, nothing to close).

    Draw on it with ``fig.subplots()`` and write it with :func:`save_figure`. Scripts and servers can
    call this under any matplotlib backend: the figure is rendered by its own Agg canvas on save.
    """
    return _figure_class()(figsize=figsize, **kwargs)


def save_figure(fig: Any, path: str | os.PathLike, *, dpi: int = 110, tight: bool = True) -> str:
    """Write ``fig`` to ``path`` (parent directories created), laid out tightly; return the path.

    Args:
      fig: a ``matplotlib.figure.Figure`` (from :func:`new_figure`, or pyplot's).
      path: the file to write; the format follows the extension (``.png``, ``.pdf``, ``.svg``).
      dpi: resolution of raster formats.
      tight: call ``fig.tight_layout()`` first.
    """
    path = os.fspath(path)
    if not path:
        raise ValueError(f"path must be a non-empty file name, got {path!r}.")
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    if tight:
        fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    return path


def learning_curves(
    history: list[dict],
    path: str | os.PathLike,
    *,
    task: str = "classification",
    title: str | None = None,
) -> str:
    """Loss (train / validation / test) and accuracy or bits per character against the epoch."""
    epochs = [r["epoch"] for r in history]
    fig = new_figure(figsize=(10, 4))
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
    return save_figure(fig, path)
