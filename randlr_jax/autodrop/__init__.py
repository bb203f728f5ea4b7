"""AutoDrop: drop the learning rate when the angular velocity of the parameters saturates.

:func:`autodrop` wraps any Optax optimizer with a state machine held in its optimizer state;
``noisy_quadratic`` is the noisy quadratic model whose closed-form stationary angles motivate the rule;
:func:`autodrop_metrics` logs the state machine during training and :func:`autodrop_curves` reads it back.
"""

import sys as _sys
import types as _types

from randlr_jax.autodrop import _noisy_quadratic as noisy_quadratic  # noqa: F401 -- a namespace
from randlr_jax.autodrop._autodrop import AutoDropState as AutoDropState
from randlr_jax.autodrop._autodrop import angle_degrees as angle_degrees
from randlr_jax.autodrop._autodrop import autodrop as autodrop
from randlr_jax.autodrop._autodrop import get_autodrop_state as get_autodrop_state
from randlr_jax.autodrop._logging import AUTODROP_FIELDS as AUTODROP_FIELDS
from randlr_jax.autodrop._logging import autodrop_curves as autodrop_curves
from randlr_jax.autodrop._logging import autodrop_metrics as autodrop_metrics


class _CallableNamespace(_types.ModuleType):
    # ``randlr_jax.autodrop`` is this namespace and, called, its main transformation :func:`autodrop`
    # (as in 0.1, where it was a top-level function): ``randlr_jax.autodrop(...)`` is
    # ``randlr_jax.autodrop.autodrop(...)``.
    def __call__(self, *args, **kwargs):
        return autodrop(*args, **kwargs)


_sys.modules[__name__].__class__ = _CallableNamespace
