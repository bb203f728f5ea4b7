"""Every bad setting of the public API is a clear error naming the argument, never silent.

The campaign: for every public factory, schedule, module and entry point of ``alrao``, ``autodrop``,
``noh`` and ``cyclical``, and of the layers above them (``training``: the loop, the population, the
steps, the mesh and the checkpoints; ``models``; ``data``; ``runner``) -- read off each package's
``__init__.py`` -- each argument gets a *kind* (a positive number, a decay in ``[0, 1)``, a positive
integer, a flag, a callable, a path, a tree of arrays of some shape, ...) and every kind a table of bad
values: negative, zero where positive is required, NaN, infinities, ``>= 1`` for decays, non-integers
where integers are required, wrong shapes and structures, and wrong types (strings, ``None``, bools,
numpy and JAX scalars). Each ``(factory, argument, bad value)`` must raise a ``ValueError`` -- for wrong
types too, one exception type for every bad input -- whose message names the argument, raised by
randlr_jax itself (the innermost frame of the traceback is in the package), not by JAX, Optax, Flax,
orbax or TFDS deep inside. A bad path is the exception: the ``OSError`` of its kind
(``FileNotFoundError``, ``IsADirectoryError``, ...), by convention, still naming the argument and the
path (``FILE_CASES``). Hypothesis then draws more bad values of each kind over the same
``(factory, argument)`` pairs.

Everything is built eagerly and no argument error compiles anything: a check runs in microseconds to
milliseconds, and every check of ``fit``, ``meta_train``, the data loaders, ... runs before any
compilation, any file written and any dataset built.

The valid side is checked too: every factory accepts its documented defaults and typical values and
runs, and the hyperparameters the docs say can be injected with ``optax.inject_hyperparams`` still
work traced (under ``jax.jit``).
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math
import re
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import chex
import flax.linen as nn
import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import randlr_jax
from randlr_jax import alrao, autodrop, cyclical, data, models, noh, runner, training
from randlr_jax.autodrop import noisy_quadratic as nqm

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


def _loss_inputs() -> dict[str, Any]:
    """``alrao_loss``'s arrays, concrete (created outside ``eval_shape``): ``N`` copies, ``B = 5``,
    ``K = 2``."""
    own, mix, targets = _copy_outputs()
    return {
        "copy_outputs_own": own,
        "copy_outputs_mix": mix,
        "targets": targets,
        "log_posterior": jnp.full(N, -math.log(N)),
        "params_finite": jnp.ones(N, bool),
    }


def _shapes_of(function: Callable[..., Any], kwargs: dict[str, Any]) -> Any:
    """``function(**kwargs)`` under ``jax.eval_shape`` (the same Python, nothing computed), the
    arguments closed over (concrete)."""
    return jax.eval_shape(lambda: function(**kwargs))


# The layers above the methods: a linear classifier on 8 examples, its loop settings, a 1-device mesh.
TINY_X = np.linspace(-1.0, 1.0, 16, dtype=np.float32).reshape(8, 2)
TINY_Y = np.array([0, 1] * 4, np.int32)
TINY_SPLITS = {"train": {"x": TINY_X, "y": TINY_Y}, "validation": {"x": TINY_X, "y": TINY_Y}}
TINY_MODEL = models.make_model("mlp", num_classes=2, widths=())
TINY_LOOP = training.LoopConfig(epochs=1, batch_size=4, num_devices=1, progress=False)
MESH = training.make_mesh(1)
COPY_MESH = alrao.make_copy_mesh(1, 1, devices=jax.devices()[:1])
DEVICE = jax.devices()[0]
ALRAO_STATE = training.TrainState(
    step=jnp.zeros((), jnp.int32),
    params=ALRAO_PARAMS,
    model_state={},
    opt_state=optax.sgd(0.1, momentum=0.9).init(ALRAO_PARAMS),
    rng=KEY,
    carry=None,
)
POPULATION_TX = training.make_population_optimizer(optax.sgd)

# Meta-training: a learned "optimizer" of one parameter (SGD at the rate it holds), cheap to compile.
META_PARAMS = {"rate": jnp.asarray(0.1)}
META_DATA = {"x": jnp.ones((4, 3))}


def _learned_sgd(lstm_params):
    return optax.sgd(lstm_params["rate"])


def _meta_loss(params, batch):
    return 0.5 * jnp.mean(batch["x"] @ jnp.square(params["w"]))


def _blob(payload: Any) -> bytes:
    return flax.serialization.msgpack_serialize(payload)


LSTM_BLOB = _blob({"config": {"kind": "noh"}, "params": jax.tree.map(np.asarray, RATE_PARAMS)})
NQM = nqm.seed_problem(dim=3)

# Files and directories: fresh paths under a directory of the test session (set by a fixture).
_DIRECTORIES: dict[str, Path] = {}
_COUNTER = itertools.count()


@pytest.fixture(autouse=True, scope="module")
def _directories(tmp_path_factory, tfds_data_dir):
    _DIRECTORIES["scratch"] = tmp_path_factory.mktemp("bad_inputs")
    _DIRECTORIES["data"] = Path(tfds_data_dir)


def _fresh() -> Path:
    """A path that does not exist yet (its parent does)."""
    return _DIRECTORIES["scratch"] / f"path_{next(_COUNTER)}"


def _regular_file() -> Path:
    path = _fresh()
    path.write_text("not a directory")
    return path


def _directory() -> Path:
    path = _fresh()
    path.mkdir()
    return path


def _data_dir() -> str:
    return str(_DIRECTORIES["data"])


# -------------------------------------------------------------------------------------------------
# Builders: each builds one public entry point with valid values, the overrides replacing them.
# -------------------------------------------------------------------------------------------------


def _with(defaults: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    return {**defaults, **overrides}


INTERVAL = {"key": KEY, "lr_min": 1e-3, "lr_max": 1.0}
INCEPTION_FIELDS = ("n1x1", "n3x3_reduce", "n3x3", "n5x5_reduce", "n5x5", "pool_proj")

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
    "alrao.alrao_loss": lambda **kw: _shapes_of(alrao.alrao_loss, _with(_loss_inputs(), kw)),
    "alrao.alrao_loss_chunked": lambda **kw: _shapes_of(
        alrao.alrao_loss_chunked,
        _with(
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
        ),
    ),
    "alrao.suggest_lr": lambda **kw: alrao.suggest_lr(
        **_with({"copy_lrs": [1e-3, 1e-2, 1e-1], "posterior": [0.2, 0.5, 0.3]}, kw)
    ),
    "alrao.make_copy_mesh": lambda **kw: alrao.make_copy_mesh(
        **_with({"data": 1, "copies": 1, "devices": [DEVICE]}, kw)
    ),
    "alrao.state_shardings": lambda **kw: alrao.state_shardings(
        **_with({"state": ALRAO_STATE, "mesh": COPY_MESH}, kw)
    ),
    "alrao.shard_state": lambda **kw: alrao.shard_state(
        **_with({"state": ALRAO_STATE, "mesh": COPY_MESH}, kw)
    ),
    "alrao.jit_sharded_step": lambda **kw: alrao.jit_sharded_step(
        **_with({"train_step": lambda s, b: (s, {}), "state": ALRAO_STATE, "mesh": COPY_MESH}, kw)
    ),
    # autodrop
    "autodrop.autodrop": lambda **kw: autodrop.autodrop(
        **_with({"learning_rate": 0.1, "drop_factor": 0.2, "steps_per_period": 10}, kw)
    ),
    "autodrop.noisy_quadratic.seed_problem": lambda **kw: nqm.seed_problem(**kw),
    "autodrop.noisy_quadratic.simulate": lambda **kw: nqm.simulate(
        **_with(
            {"problem": NQM, "tx": optax.sgd(0.1), "x0": jnp.ones(3), "key": KEY, "steps": 2}, kw
        )
    ),
    "autodrop.noisy_quadratic.stationary_variance": lambda **kw: nqm.stationary_variance(
        **_with({"problem": NQM, "alpha": 0.1}, kw)
    ),
    "autodrop.noisy_quadratic.stationary_inner_product": lambda **kw: nqm.stationary_inner_product(
        **_with({"problem": NQM, "alpha": 0.1}, kw)
    ),
    "autodrop.noisy_quadratic.stationary_cosine": lambda **kw: nqm.stationary_cosine(
        **_with({"problem": NQM, "alpha": 0.1}, kw)
    ),
    "autodrop.noisy_quadratic.stationary_sample": lambda **kw: nqm.stationary_sample(
        **_with({"problem": NQM, "alpha": 0.1, "key": KEY}, kw)
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
    "noh.init_proposer_params": lambda **kw: noh.init_proposer_params(
        **_with({"proposer": SMALL_RATE_PROPOSER, "key": KEY}, kw)
    ),
    "noh.make_meta_optimizer": lambda **kw: noh.make_meta_optimizer(**kw),
    "noh.make_truncation_loss": lambda **kw: noh.make_truncation_loss(
        **_with({"make_optimizer": _learned_sgd, "loss_fn": _meta_loss}, kw)
    ),
    "noh.make_meta_step": lambda **kw: noh.make_meta_step(
        **_with(
            {
                "make_optimizer": _learned_sgd,
                "loss_fn": _meta_loss,
                "meta_optimizer": optax.sgd(1.0),
            },
            kw,
        )
    ),
    "noh.meta_train": lambda **kw: noh.meta_train(
        **_with(
            {
                "lstm_params": META_PARAMS,
                "make_optimizer": _learned_sgd,
                "loss_fn": _meta_loss,
                "init_params": {"w": jnp.ones(3)},
                "data": META_DATA,
                "key": KEY,
                "batch_size": 2,
                "horizon": 1,
                "unroll_length": 1,
                "num_meta_iterations": 1,
            },
            kw,
        )
    ),
    "noh.save_lstm_params": lambda **kw: noh.save_lstm_params(
        **_with({"path": _fresh(), "lstm_params": RATE_PARAMS, "config": {"kind": "noh"}}, kw)
    ),
    "noh.load_lstm_params": lambda **kw: noh.load_lstm_params(**_with({"source": LSTM_BLOB}, kw)),
    "noh.load_pretrained": lambda **kw: noh.load_pretrained(**_with({"name": "noh_mnist1d"}, kw)),
    "noh.pretrained_optimizer": lambda **kw: noh.pretrained_optimizer(
        **_with({"name": "noh_mnist1d"}, kw)
    ),
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
    # training
    "training.LoopConfig": lambda **kw: training.LoopConfig(**kw),
    "training.fit": lambda **kw: training.fit(
        **_with(
            {
                "model": TINY_MODEL,
                "tx": optax.sgd(0.1),
                "splits": TINY_SPLITS,
                "config": TINY_LOOP,
                "workdir": _fresh(),
            },
            kw,
        )
    ),
    "training.fit_population": lambda **kw: training.fit_population(
        **_with(
            {
                "model": TINY_MODEL,
                "learning_rates": (0.1, 0.5),
                "splits": TINY_SPLITS,
                "config": TINY_LOOP,
                "workdir": _fresh(),
            },
            kw,
        )
    ),
    "alrao.make_alrao_train_step": lambda **kw: alrao.make_alrao_train_step(
        **_with(
            {
                "model": models.make_model(
                    "mlp",
                    num_classes=2,
                    widths=(3,),
                    head=alrao.AlraoHead(num_outputs=2, num_copies=N),
                ),
                "tx": optax.sgd(0.1),
            },
            kw,
        )
    ),
    "training.make_train_step": lambda **kw: training.make_train_step(
        **_with({"model": TINY_MODEL, "tx": optax.sgd(0.1)}, kw)
    ),
    "training.make_eval_step": lambda **kw: training.make_eval_step(
        **_with({"model": TINY_MODEL}, kw)
    ),
    "training.make_population_optimizer": lambda **kw: training.make_population_optimizer(
        **_with({"optimizer": optax.sgd}, kw)
    ),
    "training.init_population": lambda **kw: training.init_population(
        **_with(
            {
                "model": TINY_MODEL,
                "tx": POPULATION_TX,
                "learning_rates": (0.1, 0.5),
                "key": KEY,
                "sample_input": TINY_X[:1],
            },
            kw,
        )
    ),
    "training.make_mesh": lambda **kw: training.make_mesh(**_with({"num_devices": 1}, kw)),
    "training.shard_batch": lambda **kw: training.shard_batch(
        **_with({"batch": {"x": TINY_X[:4]}, "mesh": MESH}, kw)
    ),
    "training.replicate": lambda **kw: training.replicate(
        **_with({"tree": {"w": np.ones(2, np.float32)}, "mesh": MESH}, kw)
    ),
    "training.Checkpointer": lambda **kw: training.Checkpointer(
        **_with({"directory": _fresh()}, kw)
    ),
    # models (a module checks its fields when it is constructed)
    "models.make_model": lambda **kw: models.make_model(
        **_with({"name": "mlp", "num_classes": 2}, kw)
    ),
    "models.make_word_lstm": lambda **kw: models.make_word_lstm(**_with({"vocab_size": 5}, kw)),
    "models.MLP": lambda **kw: models.MLP(**kw),
    "models.CNN1D": lambda **kw: models.CNN1D(**kw),
    "models.VGG": lambda **kw: models.VGG(**kw),
    "models.ResNet": lambda **kw: models.ResNet(**kw),
    "models.BasicBlock": lambda **kw: models.BasicBlock(**_with({"features": 4}, kw)),
    "models.WideResNet": lambda **kw: models.WideResNet(**kw),
    "models.WideBasicBlock": lambda **kw: models.WideBasicBlock(**_with({"features": 4}, kw)),
    "models.MobileNetV2": lambda **kw: models.MobileNetV2(**kw),
    "models.InvertedResidual": lambda **kw: models.InvertedResidual(
        **_with({"in_planes": 4, "out_planes": 4, "expansion": 2, "stride": 1}, kw)
    ),
    "models.GoogLeNet": lambda **kw: models.GoogLeNet(**kw),
    "models.Inception": lambda **kw: models.Inception(
        **_with(dict.fromkeys(INCEPTION_FIELDS, 2), kw)
    ),
    "models.CharLSTM": lambda **kw: models.CharLSTM(**_with({"vocab_size": 5}, kw)),
    "models.WordLSTM": lambda **kw: models.WordLSTM(**_with({"vocab_size": 5}, kw)),
    "models.Classifier": lambda **kw: models.Classifier(
        **_with({"body": models.MLP(widths=()), "head": nn.Dense(2)}, kw)
    ),
    "models.LanguageModel": lambda **kw: models.LanguageModel(
        **_with({"body": models.CharLSTM(vocab_size=5), "head": nn.Dense(5)}, kw)
    ),
    # data (every argument is checked before a dataset is built or read)
    "data.get_spec": lambda **kw: data.get_spec(**_with({"name": "digits"}, kw)),
    "data.get_builder": lambda **kw: data.get_builder(
        **_with({"name": "digits", "data_dir": _data_dir()}, kw)
    ),
    "data.load_arrays": lambda **kw: data.load_arrays(
        **_with({"name": "digits", "split": "test", "data_dir": _data_dir()}, kw)
    ),
    "data.load_supervised": lambda **kw: data.load_supervised(
        **_with({"name": "digits", "split": "test", "data_dir": _data_dir()}, kw)
    ),
    "data.train_val_test": lambda **kw: data.train_val_test(
        **_with({"name": "digits", "validation_size": 100, "data_dir": _data_dir()}, kw)
    ),
    "data.carve_validation": lambda **kw: data.carve_validation(
        **_with({"arrays": TINY_SPLITS["train"], "validation_size": 2}, kw)
    ),
    "data.batch_iterator": lambda **kw: data.batch_iterator(
        **_with(
            {
                "arrays": TINY_SPLITS["train"],
                "batch_size": 4,
                "shuffle": True,
                "seed": 0,
                "epoch": 0,
                "drop_remainder": True,
            },
            kw,
        )
    ),
    "data.epoch_permutation": lambda **kw: data.epoch_permutation(
        **_with({"num_examples": 8, "seed": 0, "epoch": 0}, kw)
    ),
    "data.num_batches": lambda **kw: data.num_batches(
        **_with({"num_examples": 8, "batch_size": 3, "drop_remainder": False}, kw)
    ),
    "data.lm_num_batches": lambda **kw: data.lm_num_batches(
        **_with({"num_tokens": 100, "batch_size": 2, "seq_len": 10}, kw)
    ),
    "data.lm_batch_iterator": lambda **kw: data.lm_batch_iterator(
        **_with({"tokens": np.arange(100), "batch_size": 2, "seq_len": 10}, kw)
    ),
    # runner
    "runner.TrainConfig": lambda **kw: runner.TrainConfig(**kw),
    "runner.make_optimizer": lambda **kw: runner.make_optimizer(
        **_with({"name": "sgd", "learning_rate": 0.1}, kw)
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
    """What an argument must be; ``bad``: the table's values, ``strategy``: hypothesis's,
    ``examples``: how many values hypothesis draws."""

    bad: tuple[Any, ...]
    strategy: st.SearchStrategy
    examples: int = 30

    def or_none(self) -> Kind:
        """The same kind where ``None`` is a valid value (a documented default)."""
        return Kind(
            tuple(v for v in self.bad if v is not None),
            self.strategy.filter(lambda v: v is not None),
            self.examples,
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
    # The layers above the methods: functions, modules, settings, paths, structures and shapes.
    "callable": Kind(  # a function (a hook, a factory, a loss)
        (None, "f", 3),
        st.one_of(st.none(), st.text(), st.integers(), st.floats(), st.lists(st.integers())),
    ),
    "model": Kind(  # a Flax module with init and apply
        (None, "mlp", 3, optax.sgd(0.1)),
        st.one_of(st.none(), st.text(), st.integers(), st.floats()),
    ),
    "module": Kind(  # a Flax module (a field of a model)
        (None, "dense", 3, optax.sgd),
        st.one_of(st.none(), st.text(), st.integers(), st.floats()),
    ),
    "loop_config": Kind(  # a LoopConfig
        (None, "loop", {"epochs": 1}, 3),
        st.one_of(st.none(), st.text(), st.integers(), st.dictionaries(st.text(), st.integers())),
    ),
    "text": Kind(  # a str (a label)
        (None, 3, True, b"train"),
        st.one_of(st.none(), st.integers(), st.floats(), st.binary()),
    ),
    "path": Kind(  # a non-empty str or os.PathLike
        (None, 3, "", True, ["runs"]),
        st.one_of(st.none(), st.integers(), st.floats(), st.booleans(), st.just("")),
    ),
    "mapping": Kind(  # a dict
        (None, "x", 3, [("a", 1)]),
        st.one_of(st.none(), st.text(), st.integers(), st.lists(st.integers())),
    ),
    "splits": Kind(  # {"train": {"x", "y"}, "validation": ..., "test": ...}
        (
            None,
            [],
            "abc",
            {},
            {"validation": TINY_SPLITS["train"]},
            {"train": {"x": TINY_X}},
            {"train": {"x": TINY_X, "y": TINY_Y[:5]}},
            {"train": (TINY_X, TINY_Y)},
            {"train": TINY_SPLITS["train"], "valid": TINY_SPLITS["train"]},
        ),
        st.one_of(st.none(), st.text(), st.integers(), st.lists(st.integers())),
    ),
    "learning_rates": Kind(  # a non-empty 1-D sequence of finite rates > 0
        ([], [-0.1], [0.0], [NAN], [INF], [[0.1]], "abc", None, 0.1, ["a"], [True]),
        st.one_of(
            st.lists(st.floats(max_value=0.0) | _NONFINITE, min_size=1, max_size=3),
            st.just([]),
            st.text(),
            st.none(),
        ),
    ),
    "callbacks": Kind(  # a sequence of callables
        (None, "f", 3, [None], [3], print),
        st.one_of(st.none(), st.text(), st.integers(), st.lists(st.integers(), min_size=1)),
    ),
    "mesh": Kind(  # a jax.sharding.Mesh
        (None, "mesh", 3, [DEVICE]),
        st.one_of(st.none(), st.text(), st.integers()),
    ),
    "devices": Kind(  # a non-empty sequence of distinct jax.Device
        ("cpu", 3, [], [0], [None], [DEVICE, DEVICE], None),
        st.one_of(st.text(), st.integers(), st.lists(st.integers(), min_size=1, max_size=2)),
    ),
    "train_state": Kind(  # a TrainState
        (None, "state", {"params": ALRAO_PARAMS}, 3),
        st.one_of(st.none(), st.text(), st.integers()),
    ),
    "batch": Kind(  # a pytree of arrays with a leading batch axis
        ({"x": 3.0}, {"x": "abc"}, {"x": np.zeros(())}, {"x": np.array(list("abcd"))}, "abc"),
        st.one_of(st.text(), st.floats(), st.integers()).map(lambda leaf: {"x": leaf}),
    ),
    "tree": Kind(  # a pytree of numeric arrays and scalars
        ({"w": "abc"}, {"w": object()}, {"w": np.array(["a"])}, "abc"),
        st.text().map(lambda leaf: {"w": leaf}),
    ),
    "nqm_problem": Kind(  # a NoisyQuadratic of two (d,) arrays
        (
            None,
            "x",
            (jnp.ones(3), jnp.ones(3)),
            nqm.NoisyQuadratic(jnp.ones(3), jnp.ones(4)),
            nqm.NoisyQuadratic(jnp.ones((3, 1)), jnp.ones((3, 1))),
            nqm.NoisyQuadratic("a", "b"),
        ),
        st.one_of(st.none(), st.text(), st.integers()),
    ),
    "nqm_x0": Kind(  # a (d,) start, d = 3
        (np.ones(4), np.ones((3, 1)), np.ones(()), "x", None),
        st.one_of(st.integers(0, 6).filter(lambda n: n != 3).map(np.ones), st.none(), st.text()),
    ),
    "copy_outputs": Kind(  # float outputs (N, B, ..., K)
        (np.zeros(5), np.zeros(()), np.zeros((N, 5, 2), np.int32), "x", None),
        st.one_of(st.integers(0, 6).map(np.zeros), st.none(), st.text()),
    ),
    # (The strategies draw numpy arrays: a JAX array of a new shape would compile its fill.)
    "copy_outputs_mix": Kind(  # the shape of copy_outputs_own, (N, 5, 2)
        (jnp.zeros((N, 4, 2)), np.zeros((N + 1, 5, 2)), np.zeros((5, 2)), "x", None),
        st.tuples(st.integers(1, 4), st.integers(1, 6), st.integers(1, 3))
        .filter(lambda shape: shape != (N, 5, 2))
        .map(np.zeros),
    ),
    "labels": Kind(  # integer labels (B,) = (5,)
        (jnp.zeros(4, jnp.int32), np.zeros((5, 1), np.int32), np.zeros(5), "x", None),
        st.lists(st.integers(1, 6), max_size=2)
        .filter(lambda shape: shape != [5])
        .map(lambda shape: np.zeros(shape, np.int32)),
    ),
    "log_posterior": Kind(  # (N,)
        (np.zeros(N + 1), np.zeros(1), np.zeros((N, 1)), np.zeros(()), "x", None),
        st.integers(0, 6).filter(lambda n: n != N).map(np.zeros),
    ),
    "params_finite": Kind(  # (N,) bool
        (np.ones(N), np.ones(N + 1, bool), np.ones(1, bool), "x", None),
        st.integers(0, 6).filter(lambda n: n != N).map(lambda n: np.ones(n, bool)),
    ),
    "head_params": Kind(  # the copies' parameters, copy axis first (N)
        (
            {"copies": {"kernel": np.ones((N, 4, 2)), "bias": np.zeros((N - 1, 2))}},
            {"copies": {"kernel": np.ones((N + 1, 4, 2)), "bias": np.zeros((N + 1, 2))}},
            {},
            "x",
            None,
        ),
        st.one_of(st.none(), st.text(), st.integers()),
    ),
    "features": Kind(  # the classifier's input (B, D) = (5, 4)
        (np.zeros((5, 3)), np.zeros(()), "x", None),
        st.one_of(
            st.integers(1, 6).filter(lambda d: d != 4).map(lambda d: np.zeros((5, d))),
            st.none(),
            st.text(),
        ),
    ),
    "posterior": Kind(  # (N,) weights >= 0 with a positive sum
        ([-0.1, 0.5, 0.6], [0.0, 0.0, 0.0], [NAN, 0.5, 0.5], [INF, 0, 0], [0.5, 0.5], "abc", None),
        st.one_of(
            st.lists(st.floats(max_value=-_TINY) | _NONFINITE, min_size=3, max_size=3),
            st.lists(st.floats(0.0, 1.0), max_size=5).filter(lambda p: len(p) != 3),
            st.text(),
        ),
    ),
    "meta_data": Kind(  # arrays sharing a leading axis of examples
        (
            {"x": jnp.ones((4, 3)), "y": jnp.ones(5)},
            {"x": jnp.ones(())},
            {},
            "abc",
            None,
            {"x": np.array(list("abcd"))},
        ),
        st.one_of(st.none(), st.text(), st.integers()),
    ),
    "lstm_tree": Kind(  # a non-empty pytree of numeric arrays
        (None, {}, {"a": "x"}, {"a": object()}, "abc"),
        st.one_of(st.none(), st.text().map(lambda leaf: {"a": leaf})),
    ),
    "lstm_config": Kind(  # a JSON-like dict: str keys, plain values
        (
            None,
            "x",
            3,
            {"a": object()},
            {"a": (1, 2)},
            {1: "a"},
            {"a": {"b": object()}},
            {"a": jnp.ones(2)},
        ),
        st.one_of(
            st.none(), st.text(), st.integers(), st.tuples(st.integers()).map(lambda t: {"a": t})
        ),
    ),
    "lstm_source": Kind(  # a path, or the bytes save_lstm_params wrote
        (
            None,
            3,
            "",
            b"garbage",
            b"",
            _blob({"a": 1}),
            _blob([1]),
            _blob({"config": {}, "params": {"w": "x"}}),
            _blob({"config": 3, "params": {"w": np.ones(2)}}),
            _blob({"config": {}, "params": {}}),
        ),
        st.one_of(st.binary(max_size=12), st.none(), st.integers()),
    ),
    "widths": Kind(  # a sequence of positive ints
        ((0,), (-1,), (2.5,), ("10",), "10", 3, None, (True,)),
        st.one_of(
            st.lists(st.integers(max_value=0), min_size=1, max_size=3).map(tuple),
            st.text(),
            st.none(),
            st.integers(),
        ),
    ),
    "stage_sizes": Kind(  # four positive ints
        ((2, 2, 2), (0, 2, 2, 2), (2.0, 2, 2, 2), "2222", None),
        st.lists(st.integers(1, 3), max_size=6).filter(lambda s: len(s) != 4).map(tuple),
    ),
    "vgg_cfg": Kind(  # positive ints and "M"
        ((64, "X"), (0, "M"), (2.5,), None, 3, (True,)),
        st.one_of(
            st.lists(st.integers(max_value=0), min_size=1, max_size=3).map(tuple),
            st.none(),
            st.integers(),
        ),
    ),
    "validation_size": Kind(  # an int count >= 0 or a float fraction in [0, 1)
        (-1, -0.5, 1.0, 1.5, NAN, INF, "0.1", True, [0.1], None),
        st.one_of(
            st.integers(max_value=-1),
            st.floats(min_value=1.0) | st.floats(max_value=-_TINY),
            _NONFINITE,
            st.text(),
            st.booleans(),
        ),
    ),
    "arrays": Kind(  # a non-empty dict of arrays sharing their leading dimension
        (None, {}, "abc", {"x": TINY_X, "y": TINY_Y[:5]}, {"x": 3.0}, [TINY_X]),
        st.one_of(st.none(), st.text(), st.integers()),
    ),
    "tokens": Kind(  # a 1-D integer array, long enough for one window
        (np.zeros((10, 10), np.int32), np.linspace(0, 1, 100), np.arange(5), "abc", None),
        st.one_of(st.none(), st.text(), st.integers(0, 21).map(np.arange)),
    ),
    "sample_input": Kind(  # an array with a leading axis
        (None, "x", jnp.zeros(())),
        st.one_of(st.none(), st.text()),
    ),
}

# Kinds whose strategy only varies the type of a wrong value (the table holds the structural cases)
# or the shape of an array: fewer draws.
for _name in (
    "callable", "model", "module", "loop_config", "text", "path", "mapping", "splits", "callbacks",
    "mesh", "devices", "train_state", "batch", "tree", "nqm_problem", "sample_input", "head_params",
    "meta_data", "lstm_tree", "lstm_config", "arrays",
):  # fmt: skip
    KINDS[_name] = dataclasses.replace(KINDS[_name], examples=10)
for _name in (
    "nqm_x0", "copy_outputs", "copy_outputs_mix", "labels", "log_posterior", "params_finite",
    "features", "posterior", "tokens", "lstm_source", "stage_sizes", "vgg_cfg",
):  # fmt: skip
    KINDS[_name] = dataclasses.replace(KINDS[_name], examples=15)
del _name

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
LOSS_ARRAYS = {"copy_outputs_own": "copy_outputs", "copy_outputs_mix": "copy_outputs_mix"}
LOSS_ARRAYS |= {"targets": "labels", "log_posterior": "log_posterior"}
LOSS_ARRAYS["params_finite"] = "params_finite"
META_OPTIMIZER_ARGS = {"meta_learning_rate": "positive", "max_meta_grad_norm": "positive?"}
TRUNCATION_ARGS = {"make_optimizer": "callable", "loss_fn": "callable", "mesh": "mesh?"}
TRUNCATION_ARGS |= {"second_order": "flag", "remat": "flag"}
LOOP_SIZES = ("epochs", "batch_size", "eval_batch_size", "seq_len", "eval_streams", "log_every")
LOOP_SIZES += ("copy_shards",)
RUN_ARGS = {"model": "model", "splits": "splits", "config": "loop_config", "workdir": "path"}
RUN_ARGS |= {"task": "choice", "run_info": "mapping?"}
STEP_HOOKS = ("extra_args_fn", "loss_fn", "transform_grads", "transform_updates", "after_update")
STEP_HOOKS += ("extra_metrics",)
LSTM_FIELDS = dict.fromkeys(
    ("vocab_size", "embed_dim", "hidden_size", "num_layers"), "positive_int"
)
LSTM_FIELDS["dropout_rate"] = "decay"

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
        "kernel_init": "callable",
        "bias_init": "callable",
    },
    "alrao.switch_init": {"num_models": "positive_int", "theta": "open_unit"},
    "alrao.bayes_init": {"num_models": "positive_int"},
    "alrao.uniform_init": {"num_models": "positive_int"},
    "alrao.make_averager": {"kind": "choice", "num_models": "positive_int", "theta": "open_unit"},
    "alrao.catch_up": {"threshold": "log_weight"},
    "alrao.alrao_loss": {**LOSS_ARRAYS, "task": "choice", "sigma": "positive"},
    "alrao.alrao_loss_chunked": {
        "apply_copies": "callable",
        "head_params": "head_params",
        "features": "features",
        **{name: kind for name, kind in LOSS_ARRAYS.items() if not name.startswith("copy_")},
        "chunk_size": "copy_chunk_size",
        "task": "choice",
        "sigma": "positive",
    },
    "alrao.suggest_lr": {"copy_lrs": "copy_lrs", "posterior": "posterior"},
    "alrao.make_copy_mesh": {
        "data": "positive_int",
        "copies": "positive_int",
        "devices": "devices?",
    },
    "alrao.state_shardings": {"state": "train_state", "mesh": "mesh", "head_key": "name"},
    "alrao.shard_state": {"state": "train_state", "mesh": "mesh", "head_key": "name"},
    "alrao.jit_sharded_step": {
        "train_step": "callable",
        "state": "train_state",
        "mesh": "mesh",
        "head_key": "name",
        "donate": "flag",
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
    "autodrop.noisy_quadratic.seed_problem": {"dim": "positive_int", "noise_scale": "positive"},
    "autodrop.noisy_quadratic.simulate": {
        "problem": "nqm_problem",
        "tx": "transformation",
        "x0": "nqm_x0",
        "key": "key",
        "steps": "positive_int",
    },
    **{
        f"autodrop.noisy_quadratic.stationary_{name}": {
            "problem": "nqm_problem",
            "alpha": "positive",
        }
        for name in ("variance", "inner_product", "cosine")
    },
    "autodrop.noisy_quadratic.stationary_sample": {
        "problem": "nqm_problem",
        "alpha": "positive",
        "key": "key",
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
    "noh.init_proposer_params": {"proposer": "proposer", "key": "key"},
    "noh.make_meta_optimizer": META_OPTIMIZER_ARGS,
    "noh.make_truncation_loss": TRUNCATION_ARGS,
    "noh.make_meta_step": {**TRUNCATION_ARGS, "meta_optimizer": "transformation"},
    "noh.meta_train": {
        **TRUNCATION_ARGS,
        **META_OPTIMIZER_ARGS,
        "data": "meta_data",
        "key": "key",
        "batch_size": "positive_int",
        "horizon": "positive_int",
        "unroll_length": "positive_int",
        "num_meta_iterations": "positive_int",
        "meta_optimizer": "transformation?",
        "callback": "callable?",
    },
    "noh.save_lstm_params": {"path": "path", "lstm_params": "lstm_tree", "config": "lstm_config"},
    "noh.load_lstm_params": {"source": "lstm_source"},
    "noh.load_pretrained": {"name": "choice"},
    "noh.pretrained_optimizer": {
        "name": "choice",
        "update_every": "positive_int",
        "b1": "decay",
        "eps": "nonnegative",
    },
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
    "training.LoopConfig": {
        **dict.fromkeys(LOOP_SIZES, "positive_int"),
        **dict.fromkeys(("patience", "checkpoint_every_steps", "num_devices"), "positive_int?"),
        "seed": "nonnegative_int",
        "prefetch": "nonnegative_int?",
        "drop_remainder": "flag",
        "progress": "flag",
        "description": "text",
        "on_divergence": "choice",
    },
    "training.fit": {
        **RUN_ARGS,
        "tx": "transformation",
        "train_step": "callable?",
        "callbacks": "callbacks",
        "place_state": "callable?",
    },
    "training.fit_population": {
        **RUN_ARGS,
        "learning_rates": "learning_rates",
        "optimizer": "callable",
        "optimizer_kwargs": "mapping?",
    },
    "training.make_train_step": {
        "model": "model",
        "tx": "transformation",
        "task": "choice",
        **dict.fromkeys(STEP_HOOKS, "callable?"),
    },
    "alrao.make_alrao_train_step": {"task": "choice", "catch_up": "flag", "feature_guard": "flag"},
    "training.make_eval_step": {"model": "model", "task": "choice", "eval_params": "callable?"},
    "training.make_population_optimizer": {"optimizer": "callable"},
    "training.init_population": {
        "model": "model",
        "tx": "transformation",
        "learning_rates": "learning_rates",
        "key": "key",
        "sample_input": "sample_input",
    },
    "training.make_mesh": {
        "num_devices": "positive_int?",
        "devices": "devices?",
        "copies": "positive_int",
    },
    "training.shard_batch": {"batch": "batch", "mesh": "mesh"},
    "training.replicate": {"tree": "tree", "mesh": "mesh"},
    "training.Checkpointer": {"directory": "path", "max_to_keep": "positive_int"},
    "models.make_model": {
        "name": "choice",
        "num_classes": "positive_int",
        "head": "module?",
        "widths": "widths",
        "width_multiplier": "positive",
        "activation": "choice",
    },
    "models.make_word_lstm": {
        "vocab_size": "positive_int",
        "head": "module?",
        "embed_dim": "positive_int",
        "dropout_rate": "decay",
    },
    "models.MLP": {"widths": "widths", "activation": "choice", "width_multiplier": "positive"},
    "models.CNN1D": {"channels": "positive_int", "width_multiplier": "positive"},
    "models.VGG": {"cfg": "vgg_cfg", "width_multiplier": "positive"},
    "models.ResNet": {"stage_sizes": "stage_sizes", "width_multiplier": "positive"},
    "models.BasicBlock": {"features": "positive_int", "stride": "positive_int"},
    "models.WideResNet": {
        "depth": "positive_int",
        "widen_factor": "positive_int",
        "dropout_rate": "decay",
    },
    "models.WideBasicBlock": {
        "features": "positive_int",
        "stride": "positive_int",
        "dropout_rate": "decay",
    },
    "models.MobileNetV2": {"width_multiplier": "positive"},
    "models.InvertedResidual": dict.fromkeys(
        ("in_planes", "out_planes", "expansion", "stride"), "positive_int"
    ),
    "models.GoogLeNet": {"width_multiplier": "positive"},
    "models.Inception": dict.fromkeys(INCEPTION_FIELDS, "positive_int"),
    "models.CharLSTM": LSTM_FIELDS,
    "models.WordLSTM": LSTM_FIELDS,
    "models.Classifier": {"body": "module", "head": "module"},
    "models.LanguageModel": {"body": "module", "head": "module"},
    "data.get_spec": {"name": "choice"},
    "data.get_builder": {"name": "choice", "data_dir": "path?"},
    "data.load_arrays": {"name": "choice", "split": "choice", "data_dir": "path?"},
    "data.load_supervised": {"name": "choice", "split": "choice", "data_dir": "path?"},
    "data.train_val_test": {
        "name": "choice",
        "validation_size": "validation_size?",
        "seed": "nonnegative_int",
        "data_dir": "path?",
    },
    "data.carve_validation": {
        "arrays": "arrays",
        "validation_size": "validation_size",
        "seed": "nonnegative_int",
    },
    "data.batch_iterator": {
        "arrays": "arrays",
        "batch_size": "positive_int",
        "shuffle": "flag",
        "seed": "nonnegative_int",
        "epoch": "nonnegative_int",
        "drop_remainder": "flag",
        "start_batch": "nonnegative_int",
    },
    "data.epoch_permutation": dict.fromkeys(("num_examples", "seed", "epoch"), "nonnegative_int"),
    "data.num_batches": {
        "num_examples": "nonnegative_int",
        "batch_size": "positive_int",
        "drop_remainder": "flag",
    },
    "data.lm_num_batches": {
        "num_tokens": "nonnegative_int",
        "batch_size": "positive_int",
        "seq_len": "positive_int",
    },
    "data.lm_batch_iterator": {
        "tokens": "tokens",
        "batch_size": "positive_int",
        "seq_len": "positive_int",
        "start_batch": "nonnegative_int",
    },
    "runner.TrainConfig": {
        "dataset": "choice",
        "model": "choice",
        "model_kwargs": "mapping",
        "optimizer": "choice",
        "learning_rate": "positive",
        "optimizer_kwargs": "mapping",
        "validation_size": "validation_size?",
        "data_dir": "path?",
        "loop": "loop_config",
    },
    "runner.make_optimizer": {"name": "choice", "learning_rate": "positive"},
}

# Bad combinations of valid values: (factory, overrides, the argument the message must name).
COMBINATIONS: list[tuple[str, dict[str, Any], str]] = [
    ("alrao.make_alrao_train_step", {"catch_up_threshold": 1.0}, "catch_up_threshold"),
    ("alrao.make_alrao_train_step", {"catch_up_threshold": float("nan")}, "catch_up_threshold"),
    ("alrao.make_alrao_train_step", {"catch_up_threshold": "x"}, "catch_up_threshold"),
    ("alrao.make_alrao_train_step", {"model": models.make_model("mlp", num_classes=2)}, "model"),
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
    # Regression targets (B, 1) against K = 2 outputs would broadcast to (B, 2) silently.
    ("alrao.alrao_loss", {"task": "regression", "targets": jnp.zeros((5, 1))}, "targets"),
    ("alrao.alrao_loss_chunked", {"task": "regression", "targets": jnp.zeros((5, 1))}, "targets"),
    ("alrao.make_copy_mesh", {"data": 2}, "data"),
    ("alrao.state_shardings", {"head_key": "classifier"}, "head_key"),
    ("alrao.shard_state", {"mesh": jax.sharding.Mesh(np.array([DEVICE]), ("data",))}, "mesh"),
    *[
        (f"autodrop.noisy_quadratic.stationary_{name}", {"alpha": 100.0}, "alpha")
        for name in ("variance", "inner_product", "cosine", "sample")
    ],
    ("noh.meta_train", {"horizon": 3, "unroll_length": 2}, "horizon"),
    ("noh.meta_train", {"batch_size": 5}, "batch_size"),  # 4 examples
    ("noh.pretrained_optimizer", {"name": "dmopt_mnist1d", "update_every": 2}, "update_every"),
    *[
        (name, {"config": dataclasses.replace(TINY_LOOP, batch_size=16)}, "batch_size")
        for name in ("training.fit", "training.fit_population")
    ],
    *[  # 3 examples a batch over 2 devices
        (
            name,
            {"config": dataclasses.replace(TINY_LOOP, batch_size=3, num_devices=2)},
            "batch_size",
        )
        for name in ("training.fit", "training.fit_population")
    ],
    *[
        (name, {"task": "language_model"}, "splits")  # classification splits
        for name in ("training.fit", "training.fit_population")
    ],
    ("training.fit_population", {"optimizer": optax.sgd(0.1)}, "optimizer"),
    ("training.fit_population", {"optimizer_kwargs": {"learning_rate": 0.1}}, "learning_rate"),
    ("training.make_train_step", {"task": "regression"}, "task"),  # needs its own loss_fn
    ("training.make_population_optimizer", {"optimizer": optax.sgd(0.1)}, "optimizer"),
    ("training.make_population_optimizer", {"optimizer": optax.identity}, "optimizer"),
    ("training.make_population_optimizer", {"learning_rate": 0.1}, "learning_rate"),
    ("training.make_population_optimizer", {"mommentum": 0.9}, "mommentum"),
    ("training.init_population", {"tx": optax.sgd(0.1)}, "tx"),
    ("training.make_mesh", {"num_devices": 99}, "num_devices"),
    ("training.make_mesh", {"num_devices": 2, "copies": 3}, "copies"),
    ("training.shard_batch", {"mesh": training.make_mesh(8)}, "batch"),  # 4 rows over 8 devices
    ("training.shard_batch", {"mesh": jax.sharding.Mesh(np.array([DEVICE]), ("x",))}, "mesh"),
    ("models.make_model", {"name": "wrn28_10", "depth": 27}, "depth"),
    ("models.make_model", {"name": "char_lstm", "num_classes": 3, "vocab_size": 5}, "num_classes"),
    ("models.make_word_lstm", {"num_classes": 3}, "num_classes"),
    ("models.WideResNet", {"depth": 27}, "depth"),
    ("models.LanguageModel", {"body": models.MLP()}, "body"),  # no initial_carry
    ("data.get_builder", {"name": "digits/huge"}, "name"),
    ("data.load_arrays", {"split": "validation"}, "split"),
    ("data.load_supervised", {"name": "shakespeare_char", "split": "train"}, "name"),
    ("data.train_val_test", {"name": "shakespeare_char", "validation_size": None}, "name"),
    ("data.carve_validation", {"validation_size": 8}, "validation_size"),  # 8 examples
    ("data.batch_iterator", {"batch_size": 9}, "batch_size"),
    ("data.batch_iterator", {"start_batch": 3}, "start_batch"),  # 2 batches
    ("data.lm_batch_iterator", {"start_batch": 5}, "start_batch"),  # 4 windows
    (
        "runner.TrainConfig",
        {"optimizer": "alrao_sgd", "optimizer_kwargs": {"lr_max": 1.0}},
        "lr_min",
    ),
    (
        "runner.TrainConfig",
        {"optimizer": "alrao_adam", "optimizer_kwargs": {"lr_min": 1e-3}},
        "lr_max",
    ),
    (
        "runner.TrainConfig",
        {"optimizer": "alrao_sgd", "optimizer_kwargs": {"lr_min": 2.0, "lr_max": 1.0}},
        "lr_min",
    ),
    ("runner.make_optimizer", {"name": "momentum", "momentum": 1.5}, "momentum"),
    ("runner.make_optimizer", {"name": "adam", "b1": 1.0}, "b1"),
    ("runner.make_optimizer", {"name": "adam", "eps": -1.0}, "eps"),
    ("runner.make_optimizer", {"name": "sgd", "momentum": 0.9}, "momentum"),  # not sgd's
    ("runner.make_optimizer", {"name": "alrao_sgd"}, "name"),  # through TrainConfig only
]

# A bad path: (factory, overrides built when the case runs, the OSError, the argument named).
FILE_CASES: list[tuple[str, Callable[[], dict[str, Any]], type[OSError], str]] = [
    ("noh.load_lstm_params", lambda: {"source": _fresh()}, FileNotFoundError, "source"),
    ("noh.load_lstm_params", lambda: {"source": _directory()}, IsADirectoryError, "source"),
    ("noh.save_lstm_params", lambda: {"path": _directory()}, IsADirectoryError, "path"),
    ("noh.save_lstm_params", lambda: {"path": _regular_file() / "p"}, FileExistsError, "path"),
    ("training.Checkpointer", lambda: {"directory": _regular_file()}, FileExistsError, "directory"),
    ("training.fit", lambda: {"workdir": _regular_file()}, FileExistsError, "workdir"),
    ("training.fit_population", lambda: {"workdir": _regular_file()}, FileExistsError, "workdir"),
    (
        "data.get_builder",
        lambda: {"data_dir": str(_regular_file())},
        NotADirectoryError,
        "data_dir",
    ),
    (
        "data.train_val_test",
        lambda: {"data_dir": str(_regular_file())},
        NotADirectoryError,
        "data_dir",
    ),
]


def _kind(spec: str) -> Kind:
    return KINDS[spec[:-1]].or_none() if spec.endswith("?") else KINDS[spec]


def _short(value: Any) -> str:
    # Test ids must be the same in every xdist worker: no memory addresses, no hash-ordered sets.
    text = re.sub(r" at 0x[0-9a-fA-F]+", "", repr(value))
    if isinstance(value, (set, frozenset)):
        text = f"{type(value).__name__}({len(value)})"
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
    return _resolved(tb.tb_frame.f_code.co_filename)


@functools.cache
def _resolved(filename: str) -> Path:
    return Path(filename).resolve()


def assert_rejected(
    name: str,
    overrides: dict[str, Any],
    argument: str,
    error_type: type[Exception] = ValueError,
) -> pytest.ExceptionInfo:
    """``BUILDERS[name](**overrides)`` raises an ``error_type`` (a ``ValueError`` unless a path is bad)
    of randlr_jax's naming ``argument``."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(error_type) as error:
            BUILDERS[name](**overrides)
    message = str(error.value)
    assert re.search(rf"(?<![\w.]){re.escape(argument)}(?!\w)", message), (
        f"{name}({overrides!r}): the message does not name {argument!r}: {message}"
    )
    where = _innermost_file(error)
    assert where.is_relative_to(PACKAGE), (
        f"{name}({overrides!r}) failed inside {where}, not in a check of randlr_jax: {message}"
    )
    return error


def test_the_campaign_covers_every_entry_point_and_at_least_2800_bad_inputs():
    assert set(ARGUMENTS) == set(BUILDERS)
    distinct = {(c.values[0], c.values[1], repr(c.values[2])) for c in CASES}
    distinct |= {(name, repr(sorted(kw.items())), "") for name, kw, _ in COMBINATIONS}
    distinct |= {(name, argument, error.__name__) for name, _, error, argument in FILE_CASES}
    assert len(distinct) >= 2800, len(distinct)


@pytest.mark.parametrize(("name", "argument", "value"), CASES)
def test_a_bad_value_raises_naming_the_argument(name, argument, value):
    assert_rejected(name, {argument: value}, argument)


@pytest.mark.parametrize(
    ("name", "overrides", "argument"),
    COMBINATIONS,
    ids=[f"{name}-{_short(sorted(kw.items()))}" for name, kw, _ in COMBINATIONS],
)
def test_a_bad_combination_raises_naming_the_argument(name, overrides, argument):
    assert_rejected(name, overrides, argument)


@pytest.mark.parametrize(
    ("name", "overrides", "error_type", "argument"),
    FILE_CASES,
    ids=[f"{name}-{argument}-{error.__name__}" for name, _, error, argument in FILE_CASES],
)
def test_a_bad_path_raises_its_os_error_naming_the_argument_and_the_path(
    name, overrides, error_type, argument
):
    overrides = overrides()
    error = assert_rejected(name, overrides, argument, error_type)
    assert str(overrides[argument]) in str(error.value), str(error.value)


_SETTINGS = settings(
    max_examples=30,
    deadline=None,
    database=None,  # no example database written into the checkout
    suppress_health_check=[HealthCheck.filter_too_much],
)


def _hypothesis_test(spec: str):
    @settings(_SETTINGS, max_examples=_kind(spec).examples)
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
    (
        "alrao.AlraoHead",
        {"kernel_init": nn.initializers.zeros_init(), "bias_init": nn.initializers.ones},
    ),
    ("alrao.alrao_loss", {"task": "regression", "targets": jnp.zeros((5, 2))}),
    (
        "alrao.alrao_loss_chunked",
        {"task": "regression", "targets": jnp.zeros((5, 2)), "chunk_size": 3},
    ),
    ("alrao.suggest_lr", {}),
    (
        "alrao.suggest_lr",
        {"copy_lrs": np.array([0.1, 1.0, 10.0]), "posterior": jnp.array([0, 1, 0])},
    ),
    ("alrao.make_copy_mesh", {}),
    ("alrao.make_copy_mesh", {"data": 4, "copies": 2, "devices": None}),
    ("alrao.state_shardings", {}),
    ("alrao.state_shardings", {"state": jax.eval_shape(lambda: ALRAO_STATE)}),
    ("alrao.shard_state", {}),
    ("alrao.jit_sharded_step", {"donate": False}),
    ("autodrop.noisy_quadratic.seed_problem", {}),
    ("autodrop.noisy_quadratic.seed_problem", {"dim": np.int64(3), "noise_scale": 0.5}),
    ("autodrop.noisy_quadratic.simulate", {}),
    ("autodrop.noisy_quadratic.stationary_variance", {}),
    ("autodrop.noisy_quadratic.stationary_variance", {"alpha": np.float32(0.5)}),
    ("autodrop.noisy_quadratic.stationary_inner_product", {}),
    ("autodrop.noisy_quadratic.stationary_cosine", {"alpha": jnp.asarray(0.2)}),
    ("autodrop.noisy_quadratic.stationary_sample", {}),
    ("noh.init_proposer_params", {}),
    ("noh.init_proposer_params", {"proposer": SMALL_UPDATE_PROPOSER, "key": jax.random.PRNGKey(1)}),
    ("noh.make_meta_optimizer", {}),
    ("noh.make_meta_optimizer", {"meta_learning_rate": 1e-7, "max_meta_grad_norm": None}),
    ("noh.make_truncation_loss", {}),
    ("noh.make_truncation_loss", {"second_order": True, "remat": True, "mesh": MESH}),
    ("noh.make_meta_step", {}),
    ("noh.meta_train", {}),
    ("noh.save_lstm_params", {}),
    (
        "noh.save_lstm_params",
        {
            "config": {
                "kind": "noh",
                "module": {"num_layers": 1},
                "c": np.float32(0.5),
                "x": [1, None],
            }
        },
    ),
    ("noh.load_lstm_params", {}),
    ("noh.load_pretrained", {}),
    (
        "noh.pretrained_optimizer",
        {},
    ),  # (dmopt_mnist1d: through the same dispatch, see COMBINATIONS)
    ("training.LoopConfig", {}),
    (
        "training.LoopConfig",
        {"patience": 3, "prefetch": 0, "seed": np.int64(2), "num_devices": None, "description": ""},
    ),
    ("training.LoopConfig", {"on_divergence": "warn", "progress": np.bool_(False)}),
    ("training.fit", {}),
    ("training.fit_population", {}),
    ("training.make_train_step", {}),
    (
        "training.make_train_step",
        {"model": None, "loss_fn": lambda p, s, b, k: (0.0, {}), "task": "regression"},
    ),
    ("training.make_eval_step", {}),
    ("alrao.make_alrao_train_step", {}),
    ("alrao.make_alrao_train_step", {"catch_up": True, "catch_up_threshold": -10.0}),
    ("training.make_eval_step", {"task": "language_model", "eval_params": lambda s: s.params}),
    ("training.make_population_optimizer", {}),
    ("training.make_population_optimizer", {"optimizer": optax.adam, "b1": 0.8}),
    ("training.init_population", {}),
    ("training.make_mesh", {}),
    ("training.make_mesh", {"num_devices": None, "copies": 2}),
    ("training.make_mesh", {"devices": jax.devices()[:2], "copies": 2}),
    ("training.shard_batch", {}),
    ("training.replicate", {}),
    ("training.replicate", {"tree": {"w": 1.0, "k": KEY, "n": None}}),
    ("training.Checkpointer", {}),
    ("training.Checkpointer", {"max_to_keep": np.int64(1)}),
    ("models.make_model", {}),
    ("models.make_model", {"head": nn.Dense(2), "widths": [3], "width_multiplier": 0.5}),
    ("models.make_model", {"name": "char_lstm", "num_classes": None, "vocab_size": 5}),
    ("models.make_word_lstm", {}),
    ("models.MLP", {}),
    ("models.MLP", {"widths": (), "activation": jnp.tanh}),
    ("models.CNN1D", {}),
    ("models.VGG", {}),
    ("models.ResNet", {}),
    ("models.BasicBlock", {"stride": 2}),
    ("models.WideResNet", {"depth": 10, "dropout_rate": 0.3}),
    ("models.WideBasicBlock", {}),
    ("models.MobileNetV2", {"width_multiplier": np.float32(0.5)}),
    ("models.InvertedResidual", {}),
    ("models.GoogLeNet", {}),
    ("models.Inception", {}),
    ("models.CharLSTM", {}),
    ("models.WordLSTM", {"dropout_rate": 0.0}),
    ("models.Classifier", {}),
    ("models.LanguageModel", {}),
    ("data.get_spec", {}),
    ("data.get_spec", {"name": "mnist1d/large"}),
    ("data.get_builder", {}),
    ("data.load_arrays", {}),
    ("data.load_supervised", {}),
    ("data.train_val_test", {}),
    ("data.train_val_test", {"validation_size": 0.1, "seed": 3}),
    ("data.carve_validation", {}),
    ("data.carve_validation", {"validation_size": 0.25, "seed": np.int64(1)}),
    ("data.batch_iterator", {}),
    ("data.batch_iterator", {"shuffle": False, "drop_remainder": False, "start_batch": 2}),
    ("data.epoch_permutation", {}),
    ("data.num_batches", {}),
    ("data.num_batches", {"num_examples": 0, "drop_remainder": np.bool_(True)}),
    ("data.lm_num_batches", {}),
    ("data.lm_batch_iterator", {}),
    ("runner.TrainConfig", {}),
    (
        "runner.TrainConfig",
        {
            "optimizer": "alrao_sgd",
            "optimizer_kwargs": {"lr_min": 1e-3, "lr_max": 1.0},
            "validation_size": None,
        },
    ),
    ("runner.TrainConfig", {"dataset": "cifar10", "model": "resnet18", "validation_size": 5000}),
    ("runner.make_optimizer", {}),
    ("runner.make_optimizer", {"name": "adam", "learning_rate": 1e-3, "b1": 0.8}),
    ("runner.make_optimizer", {"name": "momentum", "momentum": 0.0, "nesterov": True}),
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
    if isinstance(result, training.FitResult):
        assert result.summary["epochs_run"] == 1
        return [record["train_loss"] for record in result.history]
    if isinstance(result, training.PopulationResult):
        return [loss for record in result.history for loss in record["train_loss"]]
    if isinstance(result, noh.MetaTrainResult):
        return [record["meta_loss"] for record in result.history]
    if name == "autodrop.noisy_quadratic.simulate":
        assert np.isnan(result.pop("learning_rate")).all()  # no AutoDrop state: NaN, as documented
        return jax.tree.leaves(result)
    if name == "noh.load_lstm_params":
        params, config = result
        assert config == {"kind": "noh"}
        return jax.tree.leaves(params)
    if isinstance(result, (jax.sharding.Mesh, training.Checkpointer, nn.Module, str)):
        return []  # built and checked (a module checks its fields when it is constructed)
    if dataclasses.is_dataclass(result) or isinstance(result, noh.PretrainedOptimizer):
        return []  # settings: LoopConfig, TrainConfig, a DatasetSpec, ...
    if isinstance(result, int):
        return [float(result)]
    if callable(result):
        return []  # a step, a loss: built, not compiled
    if hasattr(result, "__next__"):  # a batch iterator: run it
        return [leaf for batch in result for leaf in jax.tree.leaves(batch)]
    return [
        leaf
        for leaf in jax.tree.leaves(result)
        if hasattr(leaf, "dtype") and jnp.issubdtype(leaf.dtype, jnp.floating)
    ]


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
