"""Alrao (Blier, Wolinski and Ollivier, 2019): all learning rates at once.

Everything of the paper lives here: the per-feature log-uniform rates of the body (``alrao_base``,
``sample_feature_lrs``, :class:`FeatureRule`), the classifier copies with log-spaced rates
(:class:`AlraoHead`, ``copy_learning_rates``), the switch, Bayesian and uniform model averaging of the
copies (``switch_*``, ``bayes_*``, ``uniform_*``, :class:`Averager`), the optimizers (``alrao_sgd``,
``alrao_adam``, the generic ``alrao``; their ``init`` warns with :class:`NoClassifierCopiesWarning` on
parameters without copies), the loss (``alrao_loss``, ``alrao_loss_chunked``;
``alrao_loss_dense``, the step's fused objective of dense copies), the compiled
train step (``make_alrao_train_step``, handed to :func:`randlr_jax.training.fit` as ``train_step=``) and the
copy sharding over a ``"copies"`` mesh axis (``shard_state``, handed to ``fit`` as ``place_state=``). Flax NNX:
:class:`NNXAlraoHead` (the copies as ``nnx.Param``, the switch as an :class:`AlraoSwitch` variable),
``make_nnx_alrao_train_step`` (``make_nnx_alrao_fit_step``: the same step as ``fit``'s ``train_step=``)
and ``export_nnx_single_classifier``. Differentiating a head's output
outside the Alrao steps raises :class:`AlraoTrainingError`.
The classifier may sit anywhere in a Linen model: ``head_path`` (a key, a key path or a predicate on
parameter paths, :func:`head_matcher`) tells the optimizers and the step where. Without Flax, any JAX
model given as ``features_fn(body_params, x)`` trains with ``functional_loss`` / ``functional_step``;
``export_single_classifier`` turns a trained Linen model into one with a single dense classifier, the
copy the posterior ranks first.

One argument order throughout: the base direction (where there is one), the key, the interval
``lr_min, lr_max``, then the number of copies: ``alrao(base, key, lr_min, lr_max, num_copies)``,
``alrao_sgd(key, lr_min, lr_max, num_copies)``, ``alrao_base(base, key, lr_min, lr_max)``,
``copy_learning_rates(lr_min, lr_max, num_copies)``. Parameters without classifier copies take
``alrao_base`` with ``optax.identity()``, ``optax.trace(mu, nesterov=...)`` or
``optax.scale_by_adam(b1, b2, eps)`` (0.1's ``alrao_sgd_body`` / ``alrao_adam_body``).

References:
  Blier, Wolinski, Ollivier, `Learning with Random Learning Rates <https://arxiv.org/abs/1810.01322>`_, 2019.
"""

import sys as _sys
import types as _types

from randlr_jax.alrao._copies import SWITCH_COLLECTION as SWITCH_COLLECTION
from randlr_jax.alrao._copies import AlraoHead as AlraoHead
from randlr_jax.alrao._copies import AlraoTrainingError as AlraoTrainingError
from randlr_jax.alrao._copies import apply_copies as apply_copies
from randlr_jax.alrao._copies import copies_finite as copies_finite
from randlr_jax.alrao._copies import copy_learning_rates as copy_learning_rates
from randlr_jax.alrao._copies import get_switch_state as get_switch_state
from randlr_jax.alrao._copies import masked_log_weights as masked_log_weights
from randlr_jax.alrao._copies import mixture_gradient_allowed as mixture_gradient_allowed
from randlr_jax.alrao._copies import set_switch_state as set_switch_state
from randlr_jax.alrao._copies import suggest_lr as suggest_lr
from randlr_jax.alrao._copies import zero_nonfinite_copies as zero_nonfinite_copies
from randlr_jax.alrao._export import export_single_classifier as export_single_classifier
from randlr_jax.alrao._export import first_copy as first_copy
from randlr_jax.alrao._features import FeatureLRState as FeatureLRState
from randlr_jax.alrao._features import FeatureRule as FeatureRule
from randlr_jax.alrao._features import UnrecognisedParameterWarning as UnrecognisedParameterWarning
from randlr_jax.alrao._features import alrao_base as alrao_base
from randlr_jax.alrao._features import default_feature_rules as default_feature_rules
from randlr_jax.alrao._features import sample_feature_lrs as sample_feature_lrs
from randlr_jax.alrao._features import scale_by_feature_lrs as scale_by_feature_lrs
from randlr_jax.alrao._features import scale_by_lr_tree as scale_by_lr_tree
from randlr_jax.alrao._functional import functional_loss as functional_loss
from randlr_jax.alrao._functional import functional_step as functional_step
from randlr_jax.alrao._guard import FeatureGuardWarning as FeatureGuardWarning
from randlr_jax.alrao._guard import feature_guard_dead as feature_guard_dead
from randlr_jax.alrao._guard import feature_guard_num_dead as feature_guard_num_dead
from randlr_jax.alrao._nnx import AlraoSwitch as AlraoSwitch
from randlr_jax.alrao._nnx import NNXAlraoHead as NNXAlraoHead
from randlr_jax.alrao._nnx import export_nnx_single_classifier as export_nnx_single_classifier
from randlr_jax.alrao._nnx import make_nnx_alrao_fit_step as make_nnx_alrao_fit_step
from randlr_jax.alrao._nnx import make_nnx_alrao_train_step as make_nnx_alrao_train_step
from randlr_jax.alrao._optimizers import NoClassifierCopiesWarning as NoClassifierCopiesWarning
from randlr_jax.alrao._optimizers import alrao as alrao
from randlr_jax.alrao._optimizers import alrao_adam as alrao_adam
from randlr_jax.alrao._optimizers import alrao_loss as alrao_loss
from randlr_jax.alrao._optimizers import alrao_loss_chunked as alrao_loss_chunked
from randlr_jax.alrao._optimizers import alrao_loss_dense as alrao_loss_dense
from randlr_jax.alrao._optimizers import alrao_sgd as alrao_sgd
from randlr_jax.alrao._optimizers import head_label_fn as head_label_fn
from randlr_jax.alrao._optimizers import head_matcher as head_matcher
from randlr_jax.alrao._optimizers import scale_by_copy_lrs as scale_by_copy_lrs
from randlr_jax.alrao._sharding import jit_sharded_step as jit_sharded_step
from randlr_jax.alrao._sharding import make_copy_mesh as make_copy_mesh
from randlr_jax.alrao._sharding import shard_state as shard_state
from randlr_jax.alrao._sharding import state_shardings as state_shardings
from randlr_jax.alrao._step import make_alrao_train_step as make_alrao_train_step
from randlr_jax.alrao._step import posterior_of as posterior_of
from randlr_jax.alrao._switch import Averager as Averager
from randlr_jax.alrao._switch import BayesState as BayesState
from randlr_jax.alrao._switch import SwitchState as SwitchState
from randlr_jax.alrao._switch import UniformState as UniformState
from randlr_jax.alrao._switch import bayes_init as bayes_init
from randlr_jax.alrao._switch import bayes_log_posterior as bayes_log_posterior
from randlr_jax.alrao._switch import bayes_posterior as bayes_posterior
from randlr_jax.alrao._switch import bayes_update as bayes_update
from randlr_jax.alrao._switch import catch_up as catch_up
from randlr_jax.alrao._switch import make_averager as make_averager
from randlr_jax.alrao._switch import switch_init as switch_init
from randlr_jax.alrao._switch import switch_log_posterior as switch_log_posterior
from randlr_jax.alrao._switch import switch_posterior as switch_posterior
from randlr_jax.alrao._switch import switch_update as switch_update
from randlr_jax.alrao._switch import switch_update_sequence as switch_update_sequence
from randlr_jax.alrao._switch import uniform_init as uniform_init
from randlr_jax.alrao._switch import uniform_log_posterior as uniform_log_posterior
from randlr_jax.alrao._switch import uniform_posterior as uniform_posterior
from randlr_jax.alrao._switch import uniform_update as uniform_update


class _CallableNamespace(_types.ModuleType):
    # ``randlr_jax.alrao`` is this namespace and, called, its main transformation :func:`alrao` (as in 0.1,
    # where it was a top-level function): ``randlr_jax.alrao(...)`` is ``randlr_jax.alrao.alrao(...)``.
    def __call__(self, *args, **kwargs):
        return alrao(*args, **kwargs)


_sys.modules[__name__].__class__ = _CallableNamespace
