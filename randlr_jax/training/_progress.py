"""Progress bars through tqdm when it is installed (the ``progress`` extra), a silent stand-in otherwise.

tqdm is imported on first use, so ``import randlr_jax`` neither needs nor loads it.
"""

from __future__ import annotations

import sys
from typing import Any


class _NoProgressBar:
    """What the loops call on a tqdm bar (``update``, ``set_postfix``, ``close``, ...), doing nothing."""

    n = 0

    def update(self, n: float = 1) -> None:
        del n

    def set_postfix(self, *args: Any, **kwargs: Any) -> None:
        del args, kwargs

    def set_description(self, *args: Any, **kwargs: Any) -> None:
        del args, kwargs

    def refresh(self) -> None:
        pass

    def close(self) -> None:
        pass

    def __enter__(self) -> _NoProgressBar:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        del exc_info


def progress_bar(**kwargs: Any) -> Any:
    """``tqdm.auto.tqdm(**kwargs)``, or a bar that does nothing when ``disable`` is set or tqdm is missing.

    Args:
      **kwargs: tqdm's keyword arguments (``total``, ``initial``, ``unit``, ``desc``, ``disable``, ...).

    Returns:
      An object with tqdm's ``update``, ``set_postfix``, ``set_description``, ``refresh`` and ``close``.
    """
    if kwargs.get("disable"):
        return _NoProgressBar()
    try:
        from tqdm.auto import tqdm  # imported on use: tqdm is the optional ``progress`` extra
    except ImportError:
        return _NoProgressBar()
    return tqdm(**kwargs)


def write_status(line: str) -> None:
    """One status line on stderr, above a tqdm bar when tqdm is installed (it redraws the bar below)."""
    try:
        from tqdm.auto import tqdm
    except ImportError:
        print(line, file=sys.stderr, flush=True)
        return
    tqdm.write(line, file=sys.stderr)
