"""The argument checks of every public factory: one message form, traced values let through.

A base layer: it imports nothing from randlr_jax, and every package may import it. Each check raises
``ValueError`` -- for a wrong type too (a string, ``None`` or a bool where a number is required), one
exception type for every bad argument -- with one message form::

    f"{name} must be {what is allowed}, got {value!r}."

Number checks accept Python numbers, numpy scalars and 0-d arrays, and concrete (not traced) 0-d JAX
arrays; a ``jax.core.Tracer`` (a hyperparameter driven by ``optax.inject_hyperparams`` inside ``jit``)
cannot be tested in Python and passes unchecked, unless the check is told the value must be concrete
(``static=True``: it fixes a shape or is used in Python arithmetic), in which case the message says to
name it in ``static_args``. Integer checks (sizes, counts, periods) always need a Python or numpy
integer: a JAX array, which is what ``optax.inject_hyperparams`` makes of an int it injects, is refused
with the same ``static_args`` hint.

Each number check returns the value as a Python ``float`` (``None`` for a traced one), for callers that
compute with it in Python; callers that hand the value on to Optax keep their own (so a float32
hyperparameter is not rounded through float64).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import jax
import numpy as np

__all__ = [
    "boolean",
    "concrete",
    "fail",
    "finite",
    "greater_than",
    "in_range",
    "in_unit_interval",
    "interval",
    "is_traced",
    "name_string",
    "nonnegative",
    "nonnegative_int",
    "number",
    "one_of",
    "positive",
    "positive_int",
    "prng_key",
    "transformation",
]

_STATIC_HINT = "(under optax.inject_hyperparams, name it in static_args)"


def fail(name: str, what: str, value: Any) -> None:
    """Raise the one message form: ``{name} must be {what}, got {value!r}.``"""
    raise ValueError(f"{name} must be {what}, got {value!r}.")


def is_traced(value: Any) -> bool:
    return isinstance(value, jax.core.Tracer)


def _float(value: Any) -> float:
    try:
        return float(value)
    except OverflowError:  # an int beyond float64: as far as a bound goes, infinite
        return math.inf if value > 0 else -math.inf


def concrete(name: str, value: Any, what: str = "a concrete value") -> None:
    """Refuse a traced value (an argument that fixes a shape, a key, an interval...)."""
    if is_traced(value):
        fail(name, f"{what} {_STATIC_HINT}", value)


def _is_bool(value: Any) -> bool:
    return isinstance(value, (bool, np.bool_)) or (
        isinstance(value, (np.ndarray, jax.Array)) and value.dtype == bool
    )


def number(name: str, value: Any, what: str = "a number", *, static: bool = False) -> float | None:
    """``float(value)`` for a concrete real scalar, ``None`` for a traced one; ValueError otherwise.

    ``static``: a traced value is refused too (the message points to ``static_args``).
    """
    if is_traced(value):
        if static:
            fail(name, f"{what} {_STATIC_HINT}", value)
        return None
    if _is_bool(value):
        fail(name, what, value)
    if isinstance(value, (int, float, np.integer, np.floating)):
        return _float(value)
    if isinstance(value, (np.ndarray, jax.Array)):
        if value.ndim == 0 and (
            np.issubdtype(value.dtype, np.integer) or np.issubdtype(value.dtype, np.floating)
        ):
            return _float(value)
    fail(name, what, value)
    raise AssertionError  # unreachable


def in_range(
    name: str,
    value: Any,
    low: float = -math.inf,
    high: float = math.inf,
    *,
    low_open: bool = False,
    high_open: bool = False,
    what: str | None = None,
    static: bool = False,
) -> float | None:
    """A real number in the interval from ``low`` to ``high`` (NaN never is); ``None`` if traced.

    ``what`` names the allowed set in the message (default: the interval written out).
    """
    if what is None:
        left, right = "(" if low_open else "[", ")" if high_open else "]"
        what = f"a number in {left}{low:g}, {high:g}{right}"
    x = number(name, value, what, static=static)
    if x is None:
        return None
    above = x > low if low_open else x >= low
    below = x < high if high_open else x <= high
    if not (above and below):  # False for NaN
        fail(name, what, value)
    return x


def finite(name: str, value: Any, *, static: bool = False) -> float | None:
    """A finite real number."""
    return in_range(
        name, value, -math.inf, math.inf, low_open=True, high_open=True,
        what="a finite number", static=static,
    )  # fmt: skip


def positive(name: str, value: Any, *, static: bool = False) -> float | None:
    """A finite number ``> 0`` (an infinite rate is never usable)."""
    return in_range(
        name, value, 0.0, math.inf, low_open=True, high_open=True,
        what="a finite number > 0", static=static,
    )  # fmt: skip


def nonnegative(name: str, value: Any, *, static: bool = False) -> float | None:
    """A finite number ``>= 0``."""
    return in_range(
        name, value, 0.0, math.inf, high_open=True, what="a finite number >= 0", static=static
    )


def greater_than(name: str, value: Any, bound: float, *, static: bool = False) -> float | None:
    """A finite number ``> bound``."""
    return in_range(
        name, value, bound, math.inf, low_open=True, high_open=True,
        what=f"a finite number > {bound:g}", static=static,
    )  # fmt: skip


def in_unit_interval(
    name: str,
    value: Any,
    *,
    closed_right: bool = False,
    closed_left: bool = True,
    static: bool = False,
) -> float | None:
    """A number in ``[0, 1)`` (a decay: momentum, Adam's ``b1``/``b2``); ``closed_right``: ``[0, 1]``;
    ``closed_left=False``: open at 0."""
    return in_range(
        name, value, 0.0, 1.0, low_open=not closed_left, high_open=not closed_right,
        static=static,
    )  # fmt: skip


def _integer(name: str, value: Any, what: str) -> int:
    # A JAX array (traced or not) is what optax.inject_hyperparams makes of an int it injects.
    if isinstance(value, jax.Array):
        fail(name, f"{what} {_STATIC_HINT}", value)
    if _is_bool(value) or not isinstance(value, (int, np.integer)):
        fail(name, what, value)
    return int(value)


def positive_int(name: str, value: Any, *, minimum: int = 1) -> int:
    """A concrete Python or numpy integer ``>= minimum`` (1 by default); returned as ``int``."""
    what = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
    integer = _integer(name, value, what)
    if integer < minimum:
        fail(name, what, value)
    return integer


def nonnegative_int(name: str, value: Any) -> int:
    """A concrete Python or numpy integer ``>= 0``."""
    return positive_int(name, value, minimum=0)


def one_of(name: str, value: Any, allowed: Iterable[Any]) -> Any:
    """One of ``allowed`` (compared by type and equality: ``1`` is not ``True``, nor an array)."""
    allowed = tuple(allowed)
    if not any(type(value) is type(choice) and value == choice for choice in allowed):
        fail(name, f"one of {allowed}", value)
    return value


def boolean(name: str, value: Any) -> bool:
    """A Python or numpy bool (a flag; ``"yes"``, ``None``, ``1`` are refused)."""
    if not isinstance(value, (bool, np.bool_)):
        fail(name, "a bool (True or False)", value)
    return bool(value)


def name_string(name: str, value: Any) -> str:
    """A non-empty ``str`` (a parameter-path key)."""
    if not isinstance(value, str) or not value:
        fail(name, "a non-empty str", value)
    return value


def prng_key(name: str, value: Any) -> None:
    """A JAX PRNG key: ``jax.random.key(seed)``, or a raw ``uint32[2]`` one (``PRNGKey(seed)``)."""
    if is_traced(value):
        return
    if isinstance(value, jax.Array) and jax.dtypes.issubdtype(value.dtype, jax.dtypes.prng_key):
        if value.ndim == 0:
            return
    elif isinstance(value, (jax.Array, np.ndarray)):
        if value.dtype == np.uint32 and value.shape == (2,):
            return
    fail(name, "a PRNG key (jax.random.key(seed))", value)


def transformation(name: str, value: Any) -> None:
    """An ``optax.GradientTransformation`` (anything with callable ``init`` and ``update``)."""
    if not (callable(getattr(value, "init", None)) and callable(getattr(value, "update", None))):
        fail(name, "an optax.GradientTransformation (e.g. optax.scale_by_adam())", value)


def interval(lo_name: str, lo: Any, hi_name: str, hi: Any, *, strict: bool = False) -> None:
    """``lo <= hi`` (``strict``: ``lo < hi``), checked when both are concrete numbers.

    Each bound is checked on its own first (by the caller); the message names both.
    """
    if lo is None or hi is None or is_traced(lo) or is_traced(hi):
        return
    low, high = _float(lo), _float(hi)
    if (low >= high) if strict else (low > high):
        fail(lo_name, f"{'<' if strict else '<='} {hi_name}={hi!r}", lo)
