"""Properties of AutoDrop's angle between two parameter pytrees (hypothesis).

The angle lies in ``[0, 180]`` degrees, is symmetric, does not depend on the vectors' lengths, is 0 for
parallel and 180 for antiparallel vectors (to within what float32 rounding of the vectors allows), 90
when either is zero, and agrees with a float64 ``arccos`` of the cosine away from the poles.

The trees have fixed shapes and the angle is compiled once for all examples.
"""

from __future__ import annotations

import math

import chex
import jax
import numpy as np
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from randlr_jax.autodrop import angle_degrees

SETTINGS = settings(max_examples=50, deadline=None, database=None)
SHAPES = {"kernel": (2, 3), "bias": (3,)}
SIZE = sum(math.prod(shape) for shape in SHAPES.values())
# Parallel vectors are not exactly parallel once rounded to float32: their unit vectors differ by
# ~1e-7, i.e. an angle of ~1e-5 degrees. The tolerance is a hundred times that.
POLE_TOLERANCE = 1e-3


@jax.jit
@chex.assert_max_traces(n=1)  # compiled once: only the values vary
def _angle(u, v):
    return angle_degrees(u, v)


_vector = hnp.arrays(
    np.float32,
    SIZE,
    elements=st.floats(-1e3, 1e3, width=32, allow_subnormal=False),
)
_scale = st.floats(1e-3, 1e3)


def _tree(flat: np.ndarray) -> dict:
    tree, start = {}, 0
    for name, shape in SHAPES.items():
        size = math.prod(shape)
        tree[name] = np.asarray(flat[start : start + size], np.float32).reshape(shape)
        start += size
    return tree


def _nonzero(flat: np.ndarray) -> bool:
    return float(np.linalg.norm(flat.astype(np.float64))) > 1e-3


def _degrees(u: np.ndarray, v: np.ndarray) -> float:
    return float(_angle(_tree(u), _tree(v)))


@SETTINGS
@given(u=_vector, v=_vector)
def test_angle_is_within_0_and_180_and_symmetric(u, v):
    forward, backward = _degrees(u, v), _degrees(v, u)
    assert 0.0 <= forward <= 180.0
    assert forward == backward


@SETTINGS
@given(u=_vector, a=_scale, b=_scale)
def test_parallel_is_0_and_antiparallel_is_180(u, a, b):
    assume(_nonzero(u))
    assert _degrees(a * u, b * u) <= POLE_TOLERANCE
    assert _degrees(a * u, -b * u) >= 180.0 - POLE_TOLERANCE
    assert _degrees(-a * u, b * u) >= 180.0 - POLE_TOLERANCE


@SETTINGS
@given(u=_vector, v=_vector, a=_scale, b=_scale)
def test_angle_does_not_depend_on_the_lengths_and_matches_float64_arccos(u, v, a, b):
    assume(_nonzero(u) and _nonzero(v))
    angle = _degrees(u, v)
    np.testing.assert_allclose(_degrees(a * u, b * v), angle, atol=1e-3)
    # float64 arccos is accurate away from the poles, where its derivative is bounded.
    u64, v64 = u.astype(np.float64), v.astype(np.float64)
    cosine = u64 @ v64 / (np.linalg.norm(u64) * np.linalg.norm(v64))
    if abs(cosine) < 0.999:
        np.testing.assert_allclose(angle, np.degrees(np.arccos(cosine)), atol=1e-3)
    # The supplement: reversing one vector gives 180 minus the angle.
    np.testing.assert_allclose(_degrees(u, -v), 180.0 - angle, atol=1e-3)


@SETTINGS
@given(u=_vector)
def test_a_zero_vector_gives_90_degrees(u):
    zero = np.zeros(SIZE, np.float32)
    assert _degrees(u, zero) == 90.0
    assert _degrees(zero, u) == 90.0
