"""Every bad setting of the public API is a clear error naming the argument, never silent.

The campaign: for every public factory, schedule and module of ``alrao``, ``autodrop``, ``noh`` and
``cyclical`` (read off each package's ``__init__.py``), each numeric (and choice, flag, key) argument
gets a *kind* (a positive number, a decay in ``[0, 1)``, a positive integer, ...) and every kind a
table of out-of-range values: negative, zero where positive is required, NaN, infinities, ``>= 1`` for
decays, non-integers where integers are required, and wrong types (strings, ``None``, bools, numpy and
JAX scalars). Each ``(factory, argument, bad value)`` must raise a ``ValueError`` -- for wrong types too,
one exception type for every bad input -- whose message names the argument, raised by randlr_jax
itself (the innermost frame of the traceback is in the package), not by JAX, Optax or Flax deep inside.
Hypothesis then draws more bad values of each kind over the same ``(factory, argument)`` pairs.

Everything is built eagerly (no ``jit``): a check runs in microseconds, the file in a few seconds.

The valid side is checked too: every factory accepts its documented defaults and typical values and
runs, and the hyperparameters the docs say can be injected with ``optax.inject_hyperparams`` still
work traced (under ``jax.jit``).
"""

from __future__ import annotations

import dataclasses
import math
import re
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import randlr_jax
from randlr_jax import alrao, autodrop, cyclical, noh

PACKAGE = Path(randlr_jax.__file__).resolve().parent

KEY = jax.random.key(0)
N = 3  # classifier copies in the Alrao cases

BODY = {"Dense_0": {"kernel": jnp.ones((2, 4)), "bias": jnp.zeros(4)}}
HEAD = {"copies": {"kernel": jnp.ones((N, 4, 2)), "bias": jnp.zeros((N, 2))}}
ALRAO_PARAMS = {"body": BODY, "head": HEAD}

SMALL_RATE_PROPOSER = noh.LSTMRateProposer(num_layers=1, hidden_size=2)
SMALL_UPDATE_PROPOSER = noh.LSTMUpdateProposer(num_layers=1, hidden_size=2)
RATE_PARAMS = noh.init_proposer_params(SMALL_RATE_PROPOSER, KEY)
UPDATE_PARAMS = noh.init_proposer_params(SMALL_UPDATE_PROPOSER, KEY)


def _quadratic(params, batch):
    return 0.5 * jnp.sum(batch * params["w"] ** 2)


def _copy_outputs():
    return jnp.zeros((N, 5, 2)), jnp.zeros((N, 5, 2)), jnp.zeros(5, jnp.int32)


# -------------------------------------------------------------------------------------------------
# Builders: each builds one public entry point with valid values, the overrides replacing them.
# -------------------------------------------------------------------------------------------------


def _with(defaults: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    return {**defaults, **overrides}


INTERVAL = {"key": KEY, "lr_min": 1e-3, "lr_max": 1.0}

BUILDERS: dict[str, Callable[..., Any]] = {
    # alrao
    "alrao.alrao": lambda **kw: alrao.alrao(
        **_with({"base": optax.identity(), **INTERVAL, "num_copies": N}, kw)
    ),
    "alrao.alrao_sgd": lambda **kw: alrao.alrao_sgd(
        **_with({**INTERVAL, "num_copies": N, "momentum": 0.9}, kw)
    ),
    "alrao.alrao_adam": lambda **kw: alrao.alrao_adam(**_with({**INTERVAL, "num_copies": N}, kw)),
    "alrao.alrao_base": lambda **kw: alrao.alrao_base(
        **_with({"base": optax.identity(), **INTERVAL}, kw)
    ),
    "alrao.scale_by_feature_lrs": lambda **kw: alrao.scale_by_feature_lrs(**_with(INTERVAL, kw)),
    "alrao.sample_feature_lrs": lambda **kw: alrao.sample_feature_lrs(
        **_with({**INTERVAL, "params": BODY}, kw)
    ),
    "alrao.copy_learning_rates": lambda **kw: alrao.copy_learning_rates(
        **_with({"lr_min": 1e-3, "lr_max": 1.0, "num_copies": N}, kw)
    ),
    "alrao.scale_by_copy_lrs": lambda **kw: alrao.scale_by_copy_lrs(
        **_with({"copy_lrs": [0.1, 1.0]}, kw)
    ),
    "alrao.FeatureRule": lambda **kw: alrao.scale_by_feature_lrs(
        KEY, 1e-3, 1.0, rules=[alrao.FeatureRule(**_with({"pattern": "w"}, kw))]
    ),
    "alrao.default_feature_rules": lambda **kw: alrao.default_feature_rules(**kw),
    "alrao.head_label_fn": lambda **kw: alrao.head_label_fn(**kw),
    # A Flax module checks its fields when it is set up (``init``); ``eval_shape``: the same Python,
    # nothing computed. So for the functions of arrays below.
    "alrao.AlraoHead": lambda **kw: jax.eval_shape(
        alrao.AlraoHead(**_with({"num_outputs": 2, "num_copies": N}, kw)).init,
        KEY,
        jnp.zeros((1, 4)),
    ),
    "alrao.switch_init": lambda **kw: alrao.switch_init(**_with({"num_models": N}, kw)),
    "alrao.bayes_init": lambda **kw: alrao.bayes_init(**_with({"num_models": N}, kw)),
    "alrao.uniform_init": lambda **kw: alrao.uniform_init(**_with({"num_models": N}, kw)),
    "alrao.make_averager": lambda **kw: alrao.make_averager(
        **_with({"kind": "switch", "num_models": N}, kw)
    ),
    "alrao.catch_up": lambda **kw: jax.eval_shape(
        lambda: alrao.catch_up(
            **_with({"head_params": HEAD, "log_posterior": jnp.full(N, -math.log(N))}, kw)
        )
    ),
    "alrao.alrao_loss": lambda **kw: jax.eval_shape(
        lambda: alrao.alrao_loss(
            *_copy_outputs(), jnp.full(N, -math.log(N)), jnp.ones(N, bool), **kw
        )
    ),
    "alrao.alrao_loss_chunked": lambda **kw: jax.eval_shape(
        lambda: alrao.alrao_loss_chunked(
            **_with(
                {
                    "apply_copies": alrao.apply_copies,
                    "head_params": HEAD,
                    "features": jnp.zeros((5, 4)),
                    "targets": jnp.zeros(5, jnp.int32),
                    "log_posterior": jnp.full(N, -math.log(N)),
                    "params_finite": jnp.ones(N, bool),
                    "chunk_size": 2,
                },
                kw,
            )
        )
    ),
    # autodrop
    "autodrop.autodrop": lambda **kw: autodrop.autodrop(
        **_with({"learning_rate": 0.1, "drop_factor": 0.2, "steps_per_period": 10}, kw)
    ),
    # noh
    "noh.noh_adam": lambda **kw: noh.noh_adam(
        **_with({"lstm_params": RATE_PARAMS, "proposer": SMALL_RATE_PROPOSER}, kw)
    ),
    "noh.adam_hd": lambda **kw: noh.adam_hd(**kw),
    "noh.sgd_hd": lambda **kw: noh.sgd_hd(**kw),
    "noh.hypergradient_descent": lambda **kw: noh.hypergradient_descent(
        **_with({"base": optax.identity()}, kw)
    ),
    "noh.lstm_optimizer": lambda **kw: noh.lstm_optimizer(
        **_with({"lstm_params": UPDATE_PARAMS, "proposer": SMALL_UPDATE_PROPOSER}, kw)
    ),
    "noh.LSTMRateProposer": lambda **kw: noh.LSTMRateProposer(**kw),
    "noh.LSTMUpdateProposer": lambda **kw: noh.LSTMUpdateProposer(**kw),
    "noh.preprocess_gradients": lambda **kw: noh.preprocess_gradients(jnp.ones(3), **kw),
    # cyclical
    "cyclical.cyclic_schedule": lambda **kw: cyclical.cyclic_schedule(
        **_with({"base_lr": 0.01, "max_lr": 0.1, "step_size_up": 4}, kw)
    ),
    "cyclical.cyclic_momentum_schedule": lambda **kw: cyclical.cyclic_momentum_schedule(
        **_with({"base_momentum": 0.8, "max_momentum": 0.9, "step_size_up": 4}, kw)
    ),
    "cyclical.one_cycle_schedule": lambda **kw: cyclical.one_cycle_schedule(
        **_with({"total_steps": 100, "max_lr": 0.1}, kw)
    ),
    "cyclical.one_cycle_momentum_schedule": lambda **kw: cyclical.one_cycle_momentum_schedule(
        **_with({"total_steps": 100}, kw)
    ),
    "cyclical.cyclic_sgd": lambda **kw: cyclical.cyclic_sgd(
        **_with({"base_lr": 0.01, "max_lr": 0.1, "step_size_up": 4}, kw)
    ),
    "cyclical.cyclic_adam": lambda **kw: cyclical.cyclic_adam(
        **_with({"base_lr": 1e-4, "max_lr": 1e-3, "step_size_up": 4}, kw)
    ),
    "cyclical.one_cycle_sgd": lambda **kw: cyclical.one_cycle_sgd(
        **_with({"total_steps": 100, "max_lr": 0.1}, kw)
    ),
    "cyclical.one_cycle_adam": lambda **kw: cyclical.one_cycle_adam(
        **_with({"total_steps": 100, "max_lr": 1e-3}, kw)
    ),
    "cyclical.lr_range_test": lambda **kw: cyclical.lr_range_test(
        **_with(
            {
                "loss_fn": _quadratic,
                "params": {"w": jnp.ones(3)},
                "batches": [jnp.ones(3)],
                "optimizer": optax.sgd,
                "num_iter": 3,
            },
            kw,
        )
    ),
}


# -------------------------------------------------------------------------------------------------
# Kinds of argument: their bad values (the table) and a strategy drawing more (hypothesis).
# -------------------------------------------------------------------------------------------------

_TINY = np.finfo(np.float64).tiny
NAN, INF = float("nan"), float("inf")


def _wrong_types(*, none: bool = True) -> st.SearchStrategy:
    values = ["0.5", "", True, False, [0.5], (1,), {"a": 1}] + ([None] if none else [])
    return st.sampled_from(values)


def _numpy(strategy: st.SearchStrategy) -> st.SearchStrategy:
    """The same floats as numpy scalars and 0-d arrays (float64: no rounding across the bound)."""
    return st.one_of(strategy, strategy.map(np.float64), strategy.map(np.asarray))


_NEGATIVE = st.floats(max_value=-_TINY)  # -inf included
_NONFINITE = st.sampled_from([NAN, INF, -INF])
_NON_INTEGERS = st.floats(allow_nan=True, allow_infinity=True)  # every float, 3.0 included


@dataclasses.dataclass(frozen=True)
class Kind:
    """What an argument must be; ``bad``: the table's values, ``strategy``: hypothesis's."""

    bad: tuple[Any, ...]
    strategy: st.SearchStrategy

    def or_none(self) -> Kind:
        """The same kind where ``None`` is a valid value (a documented default)."""
        return Kind(
            tuple(v for v in self.bad if v is not None),
            self.strategy.filter(lambda v: v is not None),
        )


KINDS: dict[str, Kind] = {
    "positive": Kind(  # a finite number > 0
        (0.0, -1e-3, -INF, NAN, INF, "0.1", None, True, np.float32(-1.0), jnp.asarray(-2.0)),
        st.one_of(
            _numpy(st.floats(max_value=0.0)), _NONFINITE, st.integers(max_value=0), _wrong_types()
        ),
    ),
    "nonnegative": Kind(  # a finite number >= 0
        (-1e-3, -INF, NAN, INF, "0", None, True, np.float64(-1.0)),
        st.one_of(_numpy(_NEGATIVE), _NONFINITE, st.integers(max_value=-1), _wrong_types()),
    ),
    "decay": Kind(  # a number in [0, 1)
        (-0.1, 1.0, 1.5, NAN, INF, "0.9", None, True, np.float32(1.0)),
        st.one_of(
            _numpy(_NEGATIVE | st.floats(min_value=1.0)),
            _NONFINITE,
            st.integers().filter(lambda i: i != 0),
            _wrong_types(),
        ),
    ),
    "open_unit": Kind(  # a number in (0, 1)
        (0.0, 1.0, -0.5, 1.5, NAN, "0.5", None, True),
        st.one_of(
            _numpy(st.floats(max_value=0.0) | st.floats(min_value=1.0)),
            _NONFINITE,
            st.integers(),
            _wrong_types(),
        ),
    ),
    "fraction": Kind(  # a number in [0, 1]
        (-0.1, 1.5, NAN, INF, "0.3", None, True),
        st.one_of(
            _numpy(_NEGATIVE | st.floats(min_value=1.0, exclude_min=True)),
            _NONFINITE,
            st.integers(min_value=2),
            _wrong_types(),
        ),
    ),
    "gamma": Kind(  # a decay factor in (0, 1]
        (0.0, -0.5, 1.5, NAN, INF, "0.9", None, True),
        st.one_of(
            _numpy(st.floats(max_value=0.0) | st.floats(min_value=1.0, exclude_min=True)),
            _NONFINITE,
            _wrong_types(),
        ),
    ),
    "greater_than_one": Kind(  # a finite number > 1
        (1.0, 0.5, -2.0, NAN, INF, "4", None, True),
        st.one_of(
            _numpy(st.floats(max_value=1.0)), _NONFINITE, st.integers(max_value=1), _wrong_types()
        ),
    ),
    "log_weight": Kind(  # a log-weight in [-inf, 0]
        (NAN, 1.0, INF, "x", None, [1.0, 2.0], True),
        st.one_of(
            _numpy(st.floats(min_value=_TINY)), st.integers(min_value=1), _wrong_types(none=True)
        ),
    ),
    "positive_int": Kind(  # an integer >= 1
        (0, -1, 2.5, 3.0, "3", None, True, np.float64(3.0), jnp.asarray(3)),
        st.one_of(st.integers(max_value=0), _numpy(_NON_INTEGERS), _wrong_types()),
    ),
    "nonnegative_int": Kind(  # an integer >= 0
        (-1, 2.5, "3", None, True),
        st.one_of(st.integers(max_value=-1), _numpy(_NON_INTEGERS), _wrong_types()),
    ),
    "range_test_num_iter": Kind(  # an integer >= 2
        (1, 0, -5, 2.5, "10", None, True),
        st.one_of(st.integers(max_value=1), _numpy(_NON_INTEGERS), _wrong_types()),
    ),
    "choice": Kind(  # one of a few names (none starts with "~")
        ("nope", None, 3),
        st.one_of(st.text().map(lambda s: "~" + s), st.integers(), st.none()),
    ),
    "flag": Kind(  # a bool
        ("yes", None, 2),
        st.one_of(st.text(), st.integers(), st.floats(), st.none()),
    ),
    "name": Kind(  # a non-empty str
        (3, None, ""),
        st.one_of(st.integers(), st.just(""), st.none(), st.floats()),
    ),
    "key": Kind(  # a PRNG key
        (0, None, "key", jnp.zeros(3)),
        st.one_of(st.integers(), st.none(), st.text()),
    ),
    "transformation": Kind(  # an optax.GradientTransformation
        (None, "adam", 0.1),
        st.one_of(st.none(), st.text(), st.floats()),
    ),
    "copy_lrs": Kind(  # a 1-D array of positive finite rates
        ([-1.0, 1.0], [0.0, 1.0], [NAN], [INF], [[1.0]], "abc", None, []),
        st.lists(st.floats(max_value=0.0) | _NONFINITE, min_size=1, max_size=4),
    ),
    "copy_chunk_size": Kind(  # None or an integer in [1, N]
        (0, N + 1, -1, 2.5, "2", True),
        st.one_of(st.integers(max_value=0), st.integers(min_value=N + 1), _numpy(_NON_INTEGERS)),
    ),
    "dtype": Kind(  # a floating dtype
        (jnp.int32, "int32", "nope", jnp.bool_),
        st.sampled_from([jnp.int8, jnp.uint32, "int64", "complex64", "not a dtype"]),
    ),
    "feature_axes": Kind(  # None or a non-empty tuple of ints
        ((), (1.5,), "x", 3),
        st.one_of(st.just(()), st.tuples(st.floats()), st.text(), st.integers()),
    ),
    "rule_ndim": Kind(  # None or an int >= 0
        (-1, 1.5, "2", True),
        st.one_of(st.integers(max_value=-1), st.floats(), st.text(min_size=1), st.booleans()),
    ),
    "proposer": Kind(("x", 3), st.one_of(st.text(), st.integers(), st.floats())),
}

SCHEDULE_ARGS = {"step_size_up": "positive", "step_size_down": "nonnegative?", "mode": "choice"}
SCHEDULE_ARGS["gamma"] = "gamma"
ONE_CYCLE_ARGS = {"total_steps": "positive_int", "pct_start": "fraction"}
ONE_CYCLE_ARGS |= {"anneal_strategy": "choice", "three_phase": "flag"}
RATE_ARGS = {"max_lr": "positive", "div_factor": "positive", "final_div_factor": "positive"}
MOMENTUM_ARGS = {"base_momentum": "decay", "max_momentum": "decay"}
ADAM_ARGS = {"b1": "decay", "b2": "decay", "eps": "nonnegative"}
ALRAO_INTERVAL = {"lr_min": "positive", "lr_max": "positive", "key": "key"}
ALRAO_FEATURES = {**ALRAO_INTERVAL, "per": "choice", "lstm_gates": "choice"}
ALRAO_OPTIMIZER = {**ALRAO_FEATURES, "num_copies": "positive_int", "head_key": "name"}
ALRAO_OPTIMIZER["learning_rate_scale"] = "positive"
PROPOSER_ARGS = {"num_layers": "positive_int", "hidden_size": "positive_int"}
PROPOSER_ARGS |= {"preprocess_c": "positive", "output_scale": "positive"}

# factory -> {argument: kind}; a trailing "?" marks an argument for which None is valid.
ARGUMENTS: dict[str, dict[str, str]] = {
    "alrao.alrao": {**ALRAO_OPTIMIZER, "base": "transformation"},
    "alrao.alrao_sgd": {**ALRAO_OPTIMIZER, "momentum": "decay?", "nesterov": "flag"},
    "alrao.alrao_adam": {**ALRAO_OPTIMIZER, **ADAM_ARGS},
    "alrao.alrao_base": {**ALRAO_FEATURES, "base": "transformation"},
    "alrao.scale_by_feature_lrs": ALRAO_FEATURES,
    "alrao.sample_feature_lrs": {**ALRAO_FEATURES, "dtype": "dtype"},
    "alrao.copy_learning_rates": {
        "lr_min": "positive",
        "lr_max": "positive",
        "num_copies": "positive_int",
    },
    "alrao.scale_by_copy_lrs": {"copy_lrs": "copy_lrs"},
    "alrao.FeatureRule": {"feature_axes": "feature_axes", "ndim": "rule_ndim"},
    "alrao.default_feature_rules": {"lstm_gates": "choice"},
    "alrao.head_label_fn": {"head_key": "name"},
    "alrao.AlraoHead": {
        "num_outputs": "positive_int",
        "num_copies": "positive_int",
        "task": "choice",
        "sigma": "positive",
        "averaging": "choice",
        "theta": "open_unit",
        "copy_chunk_size": "copy_chunk_size",
    },
    "alrao.switch_init": {"num_models": "positive_int", "theta": "open_unit"},
    "alrao.bayes_init": {"num_models": "positive_int"},
    "alrao.uniform_init": {"num_models": "positive_int"},
    "alrao.make_averager": {"kind": "choice", "num_models": "positive_int", "theta": "open_unit"},
    "alrao.catch_up": {"threshold": "log_weight"},
    "alrao.alrao_loss": {"task": "choice", "sigma": "positive"},
    "alrao.alrao_loss_chunked": {
        "chunk_size": "copy_chunk_size",
        "task": "choice",
        "sigma": "positive",
    },
    "autodrop.autodrop": {
        "learning_rate": "positive",
        "drop_factor": "open_unit",
        "steps_per_period": "positive_int?",
        "min_learning_rate": "nonnegative",
        "threshold": "nonnegative",
        "max_threshold": "nonnegative",
        "drop_delay": "nonnegative_int",
        "window": "positive_int",
        "criterion": "choice",
    },
    "noh.noh_adam": {"update_every": "positive_int", "proposer": "proposer", **ADAM_ARGS},
    "noh.adam_hd": {"learning_rate": "positive", "hypergradient_lr": "nonnegative", **ADAM_ARGS},
    "noh.sgd_hd": {"learning_rate": "positive", "hypergradient_lr": "nonnegative"},
    "noh.hypergradient_descent": {
        "base": "transformation",
        "learning_rate": "positive",
        "hypergradient_lr": "nonnegative",
    },
    "noh.lstm_optimizer": {"proposer": "proposer"},
    "noh.LSTMRateProposer": {
        **PROPOSER_ARGS,
        "initial_learning_rate": "positive",
        "min_learning_rate": "positive",
        "max_learning_rate": "positive",
    },
    "noh.LSTMUpdateProposer": PROPOSER_ARGS,
    "noh.preprocess_gradients": {"c": "positive"},
    "cyclical.cyclic_schedule": {"base_lr": "nonnegative", "max_lr": "positive", **SCHEDULE_ARGS},
    "cyclical.cyclic_momentum_schedule": {**MOMENTUM_ARGS, **SCHEDULE_ARGS},
    "cyclical.one_cycle_schedule": {**ONE_CYCLE_ARGS, **RATE_ARGS},
    "cyclical.one_cycle_momentum_schedule": {**ONE_CYCLE_ARGS, **MOMENTUM_ARGS},
    "cyclical.cyclic_sgd": {
        "base_lr": "nonnegative",
        "max_lr": "positive",
        **SCHEDULE_ARGS,
        **MOMENTUM_ARGS,
        "cycle_momentum": "flag",
        "nesterov": "flag",
        "weight_decay": "nonnegative",
    },
    "cyclical.cyclic_adam": {
        "base_lr": "nonnegative",
        "max_lr": "positive",
        **SCHEDULE_ARGS,
        **MOMENTUM_ARGS,
        "cycle_momentum": "flag",
        "b2": "decay",
        "eps": "nonnegative",
    },
    "cyclical.one_cycle_sgd": {
        **ONE_CYCLE_ARGS,
        **RATE_ARGS,
        **MOMENTUM_ARGS,
        "cycle_momentum": "flag",
        "nesterov": "flag",
        "weight_decay": "nonnegative",
    },
    "cyclical.one_cycle_adam": {
        **ONE_CYCLE_ARGS,
        **RATE_ARGS,
        **MOMENTUM_ARGS,
        "cycle_momentum": "flag",
        "b2": "decay",
        "eps": "nonnegative",
    },
    "cyclical.lr_range_test": {
        "start": "positive",
        "end": "positive",
        "num_iter": "range_test_num_iter",
        "mode": "choice",
        "smoothing": "decay",
        "diverge_threshold": "greater_than_one",
    },
}

# Bad combinations of valid values: (factory, overrides, the argument the message must name).
COMBINATIONS: list[tuple[str, dict[str, Any], str]] = [
    *[
        (name, {"lr_min": 2.0, "lr_max": 1.0}, "lr_min")
        for name in (
            "alrao.alrao",
            "alrao.alrao_sgd",
            "alrao.alrao_adam",
            "alrao.alrao_base",
            "alrao.scale_by_feature_lrs",
            "alrao.sample_feature_lrs",
            "alrao.copy_learning_rates",
        )
    ],
    *[
        (name, {"base_lr": 0.2, "max_lr": 0.1}, "base_lr")
        for name in ("cyclical.cyclic_schedule", "cyclical.cyclic_sgd", "cyclical.cyclic_adam")
    ],
    *[
        (name, {"base_momentum": 0.95, "max_momentum": 0.9}, "base_momentum")
        for name in (
            "cyclical.cyclic_momentum_schedule",
            "cyclical.cyclic_sgd",
            "cyclical.cyclic_adam",
            "cyclical.one_cycle_momentum_schedule",
            "cyclical.one_cycle_sgd",
            "cyclical.one_cycle_adam",
        )
    ],
    ("cyclical.one_cycle_schedule", {"total_steps": 10, "pct_start": 0.1}, "pct_start"),
    ("cyclical.one_cycle_sgd", {"total_steps": 10, "pct_start": 0.1}, "pct_start"),
    ("autodrop.autodrop", {"min_learning_rate": 0.5}, "min_learning_rate"),
    ("autodrop.autodrop", {"threshold": 2.0, "max_threshold": 1.0}, "max_threshold"),
    ("noh.LSTMRateProposer", {"initial_learning_rate": 10.0}, "initial_learning_rate"),
    ("noh.LSTMRateProposer", {"min_learning_rate": 1e-2}, "min_learning_rate"),
    ("noh.LSTMRateProposer", {"max_learning_rate": 1e-4}, "max_learning_rate"),
    ("cyclical.lr_range_test", {"start": 1.0, "end": 1.0}, "start"),
    ("cyclical.lr_range_test", {"start": 1.0, "end": 0.1}, "end"),
    ("alrao.alrao_sgd", {"momentum": None, "nesterov": True}, "nesterov"),
    # Three phases whose second one would end after the cycle (2 * 0.8 * 100 - 2 > 99).
    ("cyclical.one_cycle_schedule", {"three_phase": True, "pct_start": 0.8}, "pct_start"),
    ("cyclical.one_cycle_momentum_schedule", {"three_phase": True, "pct_start": 0.6}, "pct_start"),
]


def _kind(spec: str) -> Kind:
    return KINDS[spec[:-1]].or_none() if spec.endswith("?") else KINDS[spec]


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 24 else text[:21] + "..."


CASES = [
    pytest.param(name, argument, value, id=f"{name}-{argument}={_short(value)}")
    for name, arguments in ARGUMENTS.items()
    for argument, spec in arguments.items()
    for value in _kind(spec).bad
]

PAIRS_BY_KIND: dict[str, list[tuple[str, str]]] = {}
for _name, _arguments in ARGUMENTS.items():
    for _argument, _spec in _arguments.items():
        PAIRS_BY_KIND.setdefault(_spec, []).append((_name, _argument))


def _innermost_file(error: pytest.ExceptionInfo) -> Path:
    tb = error.tb
    while tb.tb_next is not None:
        tb = tb.tb_next
    return Path(tb.tb_frame.f_code.co_filename).resolve()


def assert_rejected(name: str, overrides: dict[str, Any], argument: str) -> None:
    """``BUILDERS[name](**overrides)`` raises a ValueError of randlr_jax's naming ``argument``."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ValueError) as error:
            BUILDERS[name](**overrides)
    message = str(error.value)
    assert re.search(rf"(?<![\w.]){re.escape(argument)}(?!\w)", message), (
        f"{name}({overrides!r}): the message does not name {argument!r}: {message}"
    )
    where = _innermost_file(error)
    assert where.is_relative_to(PACKAGE), (
        f"{name}({overrides!r}) failed inside {where}, not in a check of randlr_jax: {message}"
    )


def test_the_campaign_covers_every_entry_point_and_at_least_150_bad_inputs():
    assert set(ARGUMENTS) == set(BUILDERS)
    distinct = {(c.values[0], c.values[1], repr(c.values[2])) for c in CASES}
    distinct |= {(name, repr(sorted(kw.items())), "") for name, kw, _ in COMBINATIONS}
    assert len(distinct) >= 150, len(distinct)


@pytest.mark.parametrize(("name", "argument", "value"), CASES)
def test_a_bad_value_raises_naming_the_argument(name, argument, value):
    assert_rejected(name, {argument: value}, argument)


@pytest.mark.parametrize(
    ("name", "overrides", "argument"),
    COMBINATIONS,
    ids=[f"{name}-{sorted(kw.items())}" for name, kw, _ in COMBINATIONS],
)
def test_a_bad_combination_raises_naming_the_argument(name, overrides, argument):
    assert_rejected(name, overrides, argument)


_SETTINGS = settings(
    max_examples=30,
    deadline=None,
    database=None,  # no example database written into the checkout
    suppress_health_check=[HealthCheck.filter_too_much],
)


def _hypothesis_test(spec: str):
    @_SETTINGS
    @given(pair=st.sampled_from(PAIRS_BY_KIND[spec]), value=_kind(spec).strategy)
    def test(pair, value):
        name, argument = pair
        assert_rejected(name, {argument: value}, argument)

    test.__name__ = f"test_hypothesis_{spec.rstrip('?')}{'_or_none' if spec.endswith('?') else ''}"
    return test


for _spec in PAIRS_BY_KIND:
    _test = _hypothesis_test(_spec)
    globals()[_test.__name__] = _test
del _test, _spec, _name, _arguments, _argument


# -------------------------------------------------------------------------------------------------
# What init checks: classifier copies under head_key
# -------------------------------------------------------------------------------------------------

COPY_OPTIMIZERS = ("alrao.alrao", "alrao.alrao_sgd", "alrao.alrao_adam")


def _copy_warnings(caught) -> list[warnings.WarningMessage]:
    return [w for w in caught if issubclass(w.category, alrao.NoClassifierCopiesWarning)]


@pytest.mark.parametrize("name", COPY_OPTIMIZERS)
def test_no_classifier_copies_warns_once_per_init_pointing_to_alrao_base(name):
    tx = BUILDERS[name]()
    for _ in range(2):  # once per init
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            state = tx.init(BODY)
        (warning,) = _copy_warnings(caught)
        message = str(warning.message)
        assert "head_key='head'" in message and "alrao_base" in message, message
    # It still trains (per-feature rates only), as the warning says.
    updates, _ = tx.update(jax.tree.map(jnp.ones_like, BODY), state, BODY)
    chex.assert_tree_all_finite(updates)
    assert issubclass(alrao.NoClassifierCopiesWarning, UserWarning)


@pytest.mark.parametrize("name", COPY_OPTIMIZERS)
def test_copies_present_no_warning(name):
    with warnings.catch_warnings():
        warnings.simplefilter("error", alrao.NoClassifierCopiesWarning)
        BUILDERS[name]().init(ALRAO_PARAMS)
        BUILDERS[name](head_key="classifier").init({"body": BODY, "classifier": HEAD})
        # Copies masked out (another optimizer trains them) are still copies.
        optax.masked(BUILDERS[name](), {"body": True, "head": False}).init(ALRAO_PARAMS)


@pytest.mark.parametrize("name", COPY_OPTIMIZERS)
def test_a_body_module_called_head_without_a_copy_axis_raises_naming_its_path(name):
    # The body holds a module named "head" (e.g. an attention head): its leaves have no leading
    # axis of size num_copies, so routing them to the copies would be wrong.
    params = {"body": {"head": {"kernel": jnp.ones((2, 4)), "bias": jnp.zeros(4)}}, "head": HEAD}
    with pytest.raises(ValueError, match=r"'body/head/(kernel|bias)'.*num_copies=3") as error:
        BUILDERS[name]().init(params)
    assert "head_key='head'" in str(error.value)
    scalar = {"body": BODY, "head": {"scale": jnp.ones(())}}
    with pytest.raises(ValueError, match=r"'head/scale'.*shape \(\).*num_copies=3"):
        BUILDERS[name]().init(scalar)


def test_scale_by_copy_lrs_names_the_path_of_a_leaf_without_the_copy_axis():
    tx = alrao.scale_by_copy_lrs([0.1, 1.0])
    with pytest.raises(ValueError, match=r"copy axis first, of size 2.*'b/w'"):
        tx.init({"a": jnp.ones((2, 3)), "b": {"w": jnp.ones((3, 3))}})


# -------------------------------------------------------------------------------------------------
# The valid side: documented defaults and typical values are accepted and run
# -------------------------------------------------------------------------------------------------

VALID: list[tuple[str, dict[str, Any]]] = [
    ("alrao.alrao", {}),
    ("alrao.alrao", {"learning_rate_scale": lambda count: 1.0 / (1.0 + count)}),
    ("alrao.alrao", {"learning_rate_scale": jnp.asarray(0.5), "per": "weight"}),
    ("alrao.alrao", {"key": jax.random.PRNGKey(1), "lstm_gates": "separate"}),
    ("alrao.alrao_sgd", {}),
    ("alrao.alrao_sgd", {"momentum": None}),
    ("alrao.alrao_sgd", {"momentum": 0.0, "nesterov": True}),
    ("alrao.alrao_sgd", {"momentum": np.float32(0.5), "num_copies": np.int64(N)}),
    ("alrao.alrao_sgd", {"lr_min": 0.1, "lr_max": 0.1, "num_copies": N}),
    ("alrao.alrao_adam", {}),
    ("alrao.alrao_adam", {"b1": 0.0, "b2": 0.0, "eps": 0.0}),
    ("alrao.alrao_base", {}),
    ("alrao.alrao_base", {"base": optax.scale_by_adam(), "per": "weight"}),
    ("alrao.scale_by_feature_lrs", {"lr_min": np.float64(1e-5), "lr_max": jnp.asarray(10.0)}),
    ("alrao.sample_feature_lrs", {"dtype": jnp.bfloat16}),
    ("alrao.copy_learning_rates", {"num_copies": 1}),
    ("alrao.scale_by_copy_lrs", {"copy_lrs": np.array([1e-5, 10.0])}),
    ("alrao.FeatureRule", {"feature_axes": None, "ndim": 1}),
    ("alrao.default_feature_rules", {}),
    ("alrao.head_label_fn", {"head_key": "classifier"}),
    ("alrao.AlraoHead", {}),
    ("alrao.AlraoHead", {"task": "regression", "sigma": 0.5, "averaging": "bayes"}),
    ("alrao.AlraoHead", {"theta": 0.999, "copy_chunk_size": 2, "averaging": "uniform"}),
    ("alrao.switch_init", {}),
    ("alrao.switch_init", {"theta": np.float32(0.9)}),
    ("alrao.bayes_init", {"num_models": 1}),
    ("alrao.uniform_init", {}),
    ("alrao.make_averager", {"kind": "uniform", "theta": 0.5}),
    ("alrao.catch_up", {}),
    ("alrao.catch_up", {"threshold": -math.inf}),
    ("alrao.catch_up", {"threshold": 0.0}),
    ("alrao.alrao_loss", {}),
    ("alrao.alrao_loss", {"sigma": 2.0}),
    ("alrao.alrao_loss_chunked", {"chunk_size": 1}),
    ("alrao.alrao_loss_chunked", {"chunk_size": N, "sigma": 0.5}),
    ("autodrop.autodrop", {}),
    ("autodrop.autodrop", {"steps_per_period": None, "drop_delay": 0, "window": 20}),
    ("autodrop.autodrop", {"min_learning_rate": 0.0, "threshold": 0.0, "max_threshold": 0.0}),
    ("autodrop.autodrop", {"learning_rate": jnp.asarray(0.1), "drop_factor": np.float32(0.5)}),
    ("autodrop.autodrop", {"criterion": "derivative", "min_learning_rate": 0.1}),
    ("noh.noh_adam", {}),
    ("noh.noh_adam", {"update_every": 1, "b1": 0.0, "b2": 0.5, "eps": 0.0}),
    ("noh.adam_hd", {}),
    ("noh.adam_hd", {"learning_rate": 1e-2, "hypergradient_lr": 0.0, "b1": np.float32(0.8)}),
    ("noh.sgd_hd", {}),
    ("noh.sgd_hd", {"learning_rate": jnp.asarray(0.01), "hypergradient_lr": 1e-4}),
    ("noh.hypergradient_descent", {"base": optax.scale_by_adam()}),
    ("noh.lstm_optimizer", {}),
    ("noh.LSTMRateProposer", {}),
    ("noh.LSTMRateProposer", {"min_learning_rate": 1e-3, "max_learning_rate": 1e-3}),
    ("noh.LSTMUpdateProposer", {}),
    ("noh.LSTMUpdateProposer", {"preprocess_c": 80.0, "num_layers": np.int32(1)}),
    ("noh.preprocess_gradients", {}),
    ("noh.preprocess_gradients", {"c": 1}),
    ("cyclical.cyclic_schedule", {}),
    ("cyclical.cyclic_schedule", {"base_lr": 0.0, "step_size_down": 0, "mode": "triangular2"}),
    ("cyclical.cyclic_schedule", {"base_lr": 0.1, "mode": "exp_range", "gamma": 0.99}),
    ("cyclical.cyclic_schedule", {"step_size_up": 2.5, "step_size_down": 1.5, "gamma": 1}),
    ("cyclical.cyclic_momentum_schedule", {}),
    ("cyclical.cyclic_momentum_schedule", {"base_momentum": 0.9, "max_momentum": 0.9}),
    ("cyclical.one_cycle_schedule", {}),
    ("cyclical.one_cycle_schedule", {"anneal_strategy": "linear", "three_phase": True}),
    ("cyclical.one_cycle_schedule", {"total_steps": np.int64(1000), "pct_start": 0.0}),
    ("cyclical.one_cycle_schedule", {"div_factor": 1, "final_div_factor": 0.5}),
    ("cyclical.one_cycle_momentum_schedule", {}),
    ("cyclical.one_cycle_momentum_schedule", {"pct_start": 0.5, "three_phase": True}),
    ("cyclical.cyclic_sgd", {}),
    ("cyclical.cyclic_sgd", {"cycle_momentum": False, "max_momentum": 0.5, "nesterov": True}),
    ("cyclical.cyclic_sgd", {"weight_decay": 5e-4, "max_momentum": 0.0, "base_momentum": 0.0}),
    ("cyclical.cyclic_adam", {}),
    ("cyclical.cyclic_adam", {"b2": 0.99, "eps": 1e-6, "cycle_momentum": np.bool_(False)}),
    ("cyclical.one_cycle_sgd", {}),
    ("cyclical.one_cycle_sgd", {"three_phase": True, "weight_decay": 5e-4, "nesterov": True}),
    ("cyclical.one_cycle_adam", {}),
    ("cyclical.one_cycle_adam", {"cycle_momentum": False, "max_momentum": 0.8}),
    ("cyclical.lr_range_test", {"mode": "linear", "smoothing": 0.0, "diverge_threshold": 1.5}),
]


def _use(name: str, result: Any) -> list[Any]:
    """Run what was built: ``init`` and one ``update`` (eager), a schedule's values, a module's
    ``apply``; returns the numbers it gave."""
    if isinstance(result, optax.GradientTransformation):
        if name in COPY_OPTIMIZERS:
            params = ALRAO_PARAMS
        elif name in ("alrao.alrao_base", "alrao.scale_by_feature_lrs"):
            params = BODY
        elif name == "alrao.scale_by_copy_lrs":
            params = {"w": jnp.ones((2, 3))}
        else:
            params = {"w": jnp.array([1.0, -2.0, 0.5])}
        state = result.init(params)
        extra = {"end_of_period": True} if name == "autodrop.autodrop" else {}
        updates, _ = result.update(jax.tree.map(jnp.ones_like, params), state, params, **extra)
        return jax.tree.leaves(updates)
    if isinstance(result, (noh.LSTMRateProposer, noh.LSTMUpdateProposer)):
        lstm_params = jax.eval_shape(lambda: noh.init_proposer_params(result, KEY))
        out, _ = jax.eval_shape(
            result.apply, {"params": lstm_params}, jnp.ones(3), result.initial_carry(3)
        )
        assert out.shape == (3,)
        return []
    if name.startswith("cyclical.") and callable(result):
        return [result(step) for step in (0, 1, 3, 50, 99, 100, 1000)]
    if isinstance(result, cyclical.RangeTestResult):
        return [result.losses]
    if isinstance(result, alrao.Averager):
        return jax.tree.leaves(result.update(result.init(), jnp.zeros(N)))
    if name.startswith("alrao.") and name.endswith(("_loss", "_chunked", "catch_up", "Head")):
        assert jax.tree.leaves(result)  # shapes only (built with eval_shape)
        return []
    if name == "alrao.default_feature_rules":
        return [len(result)]
    if name == "alrao.head_label_fn":
        return [float(result(ALRAO_PARAMS)["head"]["copies"]["kernel"] == "head")]
    return [leaf for leaf in jax.tree.leaves(result) if jnp.issubdtype(leaf.dtype, jnp.floating)]


@pytest.mark.parametrize(
    ("name", "overrides"), VALID, ids=[f"{name}-{_short(kw)}" for name, kw in VALID]
)
def test_defaults_and_typical_values_are_accepted_and_run(name, overrides):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning either, for these documented uses
        result = BUILDERS[name](**overrides)
        for value in _use(name, result):
            assert np.all(np.isfinite(np.asarray(value, np.float64))), (name, overrides, value)


def test_every_entry_point_has_a_valid_case():
    assert {name for name, _ in VALID} == set(BUILDERS)


# -------------------------------------------------------------------------------------------------
# Traced hyperparameters under optax.inject_hyperparams, as documented
# -------------------------------------------------------------------------------------------------


def _run(tx, params, steps=3):
    """``steps`` jitted updates from ``init``; the updates of each step."""
    state = tx.init(params)
    update = jax.jit(tx.update)
    grads = jax.tree.map(
        lambda p: jnp.cos(jnp.arange(p.size, dtype=p.dtype)).reshape(p.shape), params
    )
    out = []
    for _ in range(steps):
        updates, state = update(grads, state, params)
        out.append(updates)
    return out, state


def _same(injected, plain, params, rtol=1e-6):
    got, _ = _run(injected, params)
    want, _ = _run(plain, params)
    chex.assert_trees_all_close(got, want, rtol=rtol, atol=1e-12)


ALRAO_STATIC = ("key", "lr_min", "lr_max", "num_copies")
TEN_COPIES = {
    "body": BODY,
    "head": {"copies": {"kernel": jnp.ones((10, 4, 2)), "bias": jnp.zeros((10, 2))}},
}


def test_injected_alrao_sgd_momentum_as_documented():
    injected = optax.inject_hyperparams(alrao.alrao_sgd, static_args=ALRAO_STATIC)(
        KEY, 1e-5, 10.0, 10, momentum=0.9
    )
    state = injected.init(TEN_COPIES)
    assert set(state.hyperparams) == {"momentum", "learning_rate_scale"}
    _same(injected, alrao.alrao_sgd(KEY, 1e-5, 10.0, 10, momentum=0.9), TEN_COPIES)


def test_injected_alrao_adam_and_alrao_hyperparameters():
    injected = optax.inject_hyperparams(alrao.alrao_adam, static_args=ALRAO_STATIC)(
        KEY, 1e-4, 1e-1, 10, b1=0.8, b2=0.99, eps=1e-6, learning_rate_scale=0.5
    )
    assert set(injected.init(TEN_COPIES).hyperparams) == {"b1", "b2", "eps", "learning_rate_scale"}
    plain = alrao.alrao_adam(
        KEY, 1e-4, 1e-1, 10, b1=0.8, b2=0.99, eps=1e-6, learning_rate_scale=0.5
    )
    _same(injected, plain, TEN_COPIES, rtol=1e-5)
    generic = optax.inject_hyperparams(alrao.alrao, static_args=ALRAO_STATIC)(
        optax.identity(), KEY, 1e-3, 1.0, 10, learning_rate_scale=0.25
    )
    _same(generic, alrao.alrao(optax.identity(), KEY, 1e-3, 1.0, 10, learning_rate_scale=0.25),
          TEN_COPIES)  # fmt: skip


def test_a_static_argument_left_to_injection_is_refused_naming_static_args():
    # num_copies (an int) would be injected as a JAX array: a shape cannot be traced.
    injected = optax.inject_hyperparams(alrao.alrao_sgd, static_args=("key", "lr_min", "lr_max"))(
        KEY, 1e-3, 1.0, 10
    )
    with pytest.raises(ValueError, match="num_copies must be a positive integer.*static_args"):
        injected.init(TEN_COPIES)
    injected = optax.inject_hyperparams(autodrop.autodrop, static_args=("steps_per_period",))(
        0.1, steps_per_period=5
    )
    with pytest.raises(ValueError, match="drop_delay must be an integer >= 0.*static_args"):
        injected.init({"w": jnp.ones(3)})


def test_injected_autodrop_hyperparameters_as_documented():
    static = ("steps_per_period", "drop_delay", "window")
    kwargs = dict(
        learning_rate=0.1, drop_factor=0.5, steps_per_period=1, min_learning_rate=1e-3,
        threshold=0.01, max_threshold=1.0, drop_delay=1, window=1,
    )  # fmt: skip
    injected = optax.chain(
        optax.sgd(0.1), optax.inject_hyperparams(autodrop.autodrop, static_args=static)(**kwargs)
    )
    plain = optax.chain(optax.sgd(0.1), autodrop.autodrop(**kwargs))
    params = {"w": jnp.array([1.0, -2.0, 0.5])}
    got, state = _run(injected, params, steps=6)
    want, _ = _run(plain, params, steps=6)
    chex.assert_trees_all_close(got, want, rtol=1e-6)
    assert autodrop.get_autodrop_state(state).period == 6


@pytest.mark.parametrize(
    ("factory", "kwargs"),
    [
        (noh.adam_hd, dict(learning_rate=1e-2, hypergradient_lr=1e-4, b1=0.8, b2=0.99, eps=1e-6)),
        (noh.sgd_hd, dict(learning_rate=1e-2, hypergradient_lr=1e-4)),
    ],
)
def test_injected_hypergradient_hyperparameters_as_documented(factory, kwargs):
    injected = optax.inject_hyperparams(factory)(**kwargs)
    assert set(injected.init({"w": jnp.ones(3)}).hyperparams) == set(kwargs)
    _same(injected, factory(**kwargs), {"w": jnp.array([1.0, -2.0, 0.5])}, rtol=1e-5)
    base = optax.inject_hyperparams(
        lambda learning_rate, hypergradient_lr: noh.hypergradient_descent(
            optax.identity(), learning_rate, hypergradient_lr
        )
    )(learning_rate=1e-2, hypergradient_lr=1e-4)
    _same(base, noh.sgd_hd(1e-2, 1e-4), {"w": jnp.array([1.0, -2.0, 0.5])})


def test_injected_noh_adam_constants_as_documented():
    kwargs = dict(proposer=SMALL_RATE_PROPOSER, update_every=2, b1=0.8, b2=0.99, eps=1e-6)
    injected = optax.inject_hyperparams(
        noh.noh_adam, static_args=("lstm_params", "proposer", "update_every")
    )(RATE_PARAMS, **kwargs)
    assert set(injected.init({"w": jnp.ones(3)}).hyperparams) == {"b1", "b2", "eps"}
    _same(injected, noh.noh_adam(RATE_PARAMS, **kwargs), {"w": jnp.array([1.0, -2.0, 0.5])})


def test_traced_values_where_the_docs_allow_them():
    # The switch's theta, catch_up's threshold and the loss's sigma may be traced (unchecked).
    state = jax.jit(lambda theta: alrao.switch_init(N, theta))(0.9)
    np.testing.assert_allclose(float(state.log_theta), math.log(0.9), rtol=1e-6)
    reset = jax.jit(lambda t: alrao.catch_up(HEAD, jnp.log(jnp.array([0.5, 0.5, 1e-12])), t))
    chex.assert_tree_all_finite(reset(-20.0))
    loss = jax.jit(lambda sigma: alrao.alrao_loss(
        *_copy_outputs(), jnp.full(N, -math.log(N)), jnp.ones(N, bool), sigma=sigma
    )[0])(1.0)  # fmt: skip
    assert np.isfinite(float(loss))
