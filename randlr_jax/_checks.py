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

The structure checks (a function, a dict, a path, a mesh, devices, trees of arrays) follow the same
form; where the value is big (a tree of arrays) the message shows it in brief (:func:`brief`: arrays by
shape and dtype, long reprs cut).
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import jax
import numpy as np

__all__ = [
    "array_like",
    "boolean",
    "brief",
    "concrete",
    "devices",
    "fail",
    "finite",
    "function",
    "greater_than",
    "in_range",
    "in_unit_interval",
    "interval",
    "is_traced",
    "mapping",
    "mesh",
    "model",
    "name_string",
    "nonnegative",
    "nonnegative_int",
    "number",
    "numeric_leaves",
    "one_of",
    "path",
    "positive",
    "positive_int",
    "prng_key",
    "text",
    "transformation",
]

_STATIC_HINT = "(under optax.inject_hyperparams, name it in static_args)"


def fail(name: str, what: str, value: Any, *, shown: str | None = None) -> None:
    """Raise the one message form: ``{name} must be {what}, got {value!r}.``

    ``shown``: what to write after ``got`` instead of ``repr(value)`` (e.g. :func:`brief`).
    """
    raise ValueError(f"{name} must be {what}, got {repr(value) if shown is None else shown}.")


def brief(value: Any, limit: int = 80) -> str:
    """A short description of ``value`` for a message: an array as its shape and dtype, a long repr
    cut to ``limit`` characters."""
    if hasattr(value, "shape") and hasattr(value, "dtype") and not isinstance(value, type):
        kind = "traced array" if is_traced(value) else type(value).__name__
        return f"{kind} of shape {tuple(value.shape)} and dtype {value.dtype}"
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


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


def positive_int(name: str, value: Any, *, minimum: int = 1, optional: bool = False) -> int | None:
    """A concrete Python or numpy integer ``>= minimum`` (1 by default); returned as ``int``.

    ``optional``: ``None`` is allowed too (and returned).
    """
    what = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
    if optional:
        if value is None:
            return None
        what += " or None"
    integer = _integer(name, value, what)
    if integer < minimum:
        fail(name, what, value)
    return integer


def nonnegative_int(name: str, value: Any, *, optional: bool = False) -> int | None:
    """A concrete Python or numpy integer ``>= 0`` (``optional``: or ``None``)."""
    return positive_int(name, value, minimum=0, optional=optional)


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


def text(name: str, value: Any) -> str:
    """A ``str`` (a label; it may be empty)."""
    if not isinstance(value, str):
        fail(name, "a str", value)
    return value


def function(name: str, value: Any, what: str = "a callable", *, optional: bool = False) -> None:
    """A callable (a hook, a factory, a loss); ``optional``: or ``None``."""
    if optional and value is None:
        return
    if not callable(value):
        fail(name, f"{what} or None" if optional else what, value)


def model(name: str, value: Any) -> None:
    """A Flax module: anything with callable ``init`` and ``apply`` (e.g. ``make_model("mlp")``), or
    an ``nnx.Module`` (which the library sees through ``randlr_jax.training.adapt_model``)."""
    nnx = sys.modules.get("flax.nnx")  # not imported: no NNX module can exist
    if nnx is not None and isinstance(value, nnx.Module):
        return
    if not (callable(getattr(value, "init", None)) and callable(getattr(value, "apply", None))):
        fail(
            name,
            "a Flax module: a Linen module with init and apply (e.g. "
            "randlr_jax.models.make_model('mlp', num_classes=10)) or an nnx.Module",
            value,
            shown=brief(value),
        )


def mapping(name: str, value: Any, what: str = "a dict", *, optional: bool = False) -> None:
    """A ``Mapping`` (a dict of keyword arguments, a record); ``optional``: or ``None``."""
    if optional and value is None:
        return
    if not isinstance(value, Mapping):
        fail(name, f"{what} or None" if optional else what, value, shown=brief(value))


def path(name: str, value: Any, *, optional: bool = False) -> str | None:
    """A non-empty ``str`` or ``os.PathLike`` (a file or a directory); returned as ``str``.

    ``""`` is refused: it would silently mean the current directory. ``optional``: or ``None``.
    """
    what = "a non-empty str or os.PathLike path"
    if optional:
        if value is None:
            return None
        what += " or None"
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if not isinstance(value, str) or not value:
        fail(name, what, value)
    return value


def mesh(name: str, value: Any, axes: Iterable[str] = ()) -> None:
    """A ``jax.sharding.Mesh`` with (at least) the axes ``axes``."""
    axes = tuple(axes)
    what = "a jax.sharding.Mesh" + (f" with the axes {axes}" if axes else "")
    if not isinstance(value, jax.sharding.Mesh):
        fail(name, f"{what} (e.g. randlr_jax.training.make_mesh())", value, shown=brief(value))
    if any(axis not in value.axis_names for axis in axes):
        fail(name, what, value, shown=f"a mesh of axes {value.axis_names}")


def devices(name: str, value: Any) -> list:
    """A non-empty sequence of distinct ``jax.Device`` (e.g. ``jax.devices()[:4]``); as a list."""
    what = "a non-empty sequence of distinct jax devices (e.g. jax.devices()[:4])"
    if isinstance(value, (str, bytes)) or not isinstance(value, (Sequence, np.ndarray)):
        fail(name, what, value, shown=brief(value))
    listed = list(value.ravel()) if isinstance(value, np.ndarray) else list(value)
    if (
        not listed
        or not all(isinstance(device, jax.Device) for device in listed)
        or len({id(device) for device in listed}) != len(listed)
    ):
        fail(name, what, value, shown=brief(value))
    return listed


def array_like(name: str, value: Any, what: str) -> Any:
    """``value`` if it has a ``shape`` and a ``dtype`` (a JAX or numpy array, traced or not)."""
    if not (hasattr(value, "shape") and hasattr(value, "dtype")) or isinstance(value, type):
        fail(name, what, value, shown=brief(value))
    return value


def _numeric_dtype(dtype: Any) -> bool:
    """A bool, integer, float (bfloat16 too) or complex dtype, or a PRNG key's."""
    return any(
        jax.numpy.issubdtype(dtype, kind)
        for kind in (jax.numpy.number, jax.numpy.bool_, jax.dtypes.prng_key)
    )


def numeric_leaves(
    name: str,
    tree: Any,
    what: str,
    *,
    non_empty: bool = False,
    leading_axis: bool = False,
    keys: bool = True,
) -> list:
    """Check every leaf of ``tree``: a numeric (bool, integer, float) array or scalar -- a PRNG key too
    unless ``keys=False`` --, with a leading axis if ``leading_axis``; ``non_empty``: at least one leaf.

    The message names the leaf's path (``name['w']``). Returns the leaves.
    """
    leaves = jax.tree_util.tree_leaves_with_path(tree)
    if non_empty and not leaves:
        fail(name, what, tree, shown=brief(tree))
    for key_path, leaf in leaves:
        where = name + jax.tree_util.keystr(key_path)
        if is_traced(leaf):
            continue
        if isinstance(leaf, (bool, int, float, complex, np.generic)) and not leading_axis:
            if isinstance(leaf, np.generic) and not _numeric_dtype(leaf.dtype):
                fail(where, what, leaf, shown=brief(leaf))
            continue
        if not (hasattr(leaf, "shape") and hasattr(leaf, "dtype")) or isinstance(leaf, type):
            fail(where, what, leaf, shown=brief(leaf))
        is_key = jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key)
        if (is_key and not keys) or not _numeric_dtype(leaf.dtype):
            fail(where, what, leaf, shown=brief(leaf))
        if leading_axis and len(leaf.shape) < 1:
            fail(where, what, leaf, shown=brief(leaf))
    return [leaf for _, leaf in leaves]


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
