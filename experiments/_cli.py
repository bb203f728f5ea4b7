"""Argparse helpers shared by the experiment scripts: checked numbers, overrides that keep a 0.

Each ``type=`` function raises :class:`argparse.ArgumentTypeError`, which argparse turns into its own
usage error naming the flag (``error: argument --epochs: must be an integer >= 1, got '0'``, exit status
2) before anything runs. Library code never imports this module (``randlr_jax`` never imports
``experiments``).
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

T = TypeVar("T")


def int_at_least(minimum: int) -> Callable[[str], int]:
    """An argparse ``type=``: an integer ``>= minimum`` (``positive_int`` is ``int_at_least(1)``)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"must be an integer >= {minimum}, got {text!r}"
            ) from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be an integer >= {minimum}, got {text!r}")
        return value

    parse.__name__ = f"integer >= {minimum}"  # argparse names the type in some messages
    return parse


positive_int = int_at_least(1)
nonnegative_int = int_at_least(0)


def positive_float(text: str) -> float:
    """An argparse ``type=``: a finite number ``> 0`` (a learning rate, a threshold)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text!r}")
    return value


positive_float.__name__ = "number > 0"


def override(value: T | None, default: T) -> T:
    """``value`` unless it is ``None`` (a flag not given): unlike ``value or default``, 0 stays 0."""
    return default if value is None else value


def require_distinct(
    parser: argparse.ArgumentParser, flag: str, values: Sequence[Any] | None
) -> None:
    """``parser.error`` if ``values`` (a ``nargs="+"`` flag's) repeats one: each names a run directory."""
    if values is None:
        return
    repeated = sorted({v for v in values if list(values).count(v) > 1})
    if repeated:
        parser.error(
            f"argument {flag}: values must be distinct, got {list(values)} ({repeated} repeated)"
        )
