"""randlr_jax: learning rates you do not tune, for JAX and Optax.

The public surface is re-exported explicitly here; private modules hold one concept each. Subpackages:
``randlr_jax.data`` (TFDS datasets, offline builders, batching), ``randlr_jax.models`` (the Flax model zoo),
``randlr_jax.training`` (jitted steps, data-parallel loop, checkpoints).
"""

from randlr_jax import models as models
from randlr_jax import noisy_quadratic as noisy_quadratic
from randlr_jax import population as population
from randlr_jax import pretrained as pretrained
from randlr_jax import training as training
from randlr_jax._alrao import alrao as alrao
from randlr_jax._alrao import alrao_adam as alrao_adam
from randlr_jax._alrao import alrao_loss as alrao_loss
from randlr_jax._alrao import alrao_loss_chunked as alrao_loss_chunked
from randlr_jax._alrao import alrao_sgd as alrao_sgd
from randlr_jax._alrao import head_label_fn as head_label_fn
from randlr_jax._alrao import scale_by_copy_lrs as scale_by_copy_lrs
from randlr_jax._autodrop import AutoDropState as AutoDropState
from randlr_jax._autodrop import angle_degrees as angle_degrees
from randlr_jax._autodrop import autodrop as autodrop
from randlr_jax._autodrop import get_autodrop_state as get_autodrop_state
from randlr_jax._lstm_optimizer import LSTMOptimizerState as LSTMOptimizerState
from randlr_jax._lstm_optimizer import LSTMUpdateProposer as LSTMUpdateProposer
from randlr_jax._lstm_optimizer import lstm_optimizer as lstm_optimizer
from randlr_jax.classifier_copies import AlraoHead as AlraoHead
from randlr_jax.classifier_copies import copy_learning_rates as copy_learning_rates
from randlr_jax.classifier_copies import suggest_lr as suggest_lr
from randlr_jax.features import FeatureLRState as FeatureLRState
from randlr_jax.features import FeatureRule as FeatureRule
from randlr_jax.features import UnrecognisedParameterWarning as UnrecognisedParameterWarning
from randlr_jax.features import alrao_adam_body as alrao_adam_body
from randlr_jax.features import alrao_base as alrao_base
from randlr_jax.features import alrao_sgd_body as alrao_sgd_body
from randlr_jax.features import default_feature_rules as default_feature_rules
from randlr_jax.features import sample_feature_lrs as sample_feature_lrs
from randlr_jax.features import scale_by_feature_lrs as scale_by_feature_lrs
from randlr_jax.features import scale_by_lr_tree as scale_by_lr_tree
from randlr_jax.hypergradient import HypergradientState as HypergradientState
from randlr_jax.hypergradient import adam_hd as adam_hd
from randlr_jax.hypergradient import hypergradient_descent as hypergradient_descent
from randlr_jax.hypergradient import sgd_hd as sgd_hd
from randlr_jax.meta_training import MetaTrainResult as MetaTrainResult
from randlr_jax.meta_training import load_lstm_params as load_lstm_params
from randlr_jax.meta_training import make_meta_optimizer as make_meta_optimizer
from randlr_jax.meta_training import make_meta_step as make_meta_step
from randlr_jax.meta_training import make_truncation_loss as make_truncation_loss
from randlr_jax.meta_training import meta_train as meta_train
from randlr_jax.meta_training import save_lstm_params as save_lstm_params
from randlr_jax.noh import LSTMRateProposer as LSTMRateProposer
from randlr_jax.noh import NOHAdamState as NOHAdamState
from randlr_jax.noh import init_proposer_params as init_proposer_params
from randlr_jax.noh import noh_adam as noh_adam
from randlr_jax.noh import preprocess_gradients as preprocess_gradients
from randlr_jax.population import fit_population as fit_population
from randlr_jax.range_test import RangeTestResult as RangeTestResult
from randlr_jax.range_test import classification_loss as classification_loss
from randlr_jax.range_test import lr_range_test as lr_range_test
from randlr_jax.schedules import cyclic_adam as cyclic_adam
from randlr_jax.schedules import cyclic_momentum_schedule as cyclic_momentum_schedule
from randlr_jax.schedules import cyclic_schedule as cyclic_schedule
from randlr_jax.schedules import cyclic_sgd as cyclic_sgd
from randlr_jax.schedules import one_cycle_adam as one_cycle_adam
from randlr_jax.schedules import one_cycle_momentum_schedule as one_cycle_momentum_schedule
from randlr_jax.schedules import one_cycle_schedule as one_cycle_schedule
from randlr_jax.schedules import one_cycle_sgd as one_cycle_sgd
from randlr_jax.switch import Averager as Averager
from randlr_jax.switch import SwitchState as SwitchState
from randlr_jax.switch import bayes_init as bayes_init
from randlr_jax.switch import bayes_posterior as bayes_posterior
from randlr_jax.switch import bayes_update as bayes_update
from randlr_jax.switch import catch_up as catch_up
from randlr_jax.switch import make_averager as make_averager
from randlr_jax.switch import switch_init as switch_init
from randlr_jax.switch import switch_log_posterior as switch_log_posterior
from randlr_jax.switch import switch_posterior as switch_posterior
from randlr_jax.switch import switch_update as switch_update
from randlr_jax.switch import switch_update_sequence as switch_update_sequence
from randlr_jax.switch import uniform_init as uniform_init
from randlr_jax.switch import uniform_posterior as uniform_posterior
from randlr_jax.switch import uniform_update as uniform_update
from randlr_jax.training.alrao_step import make_alrao_train_step as make_alrao_train_step
from randlr_jax.training.alrao_step import posterior_of as posterior_of

__version__ = "0.1.0"
