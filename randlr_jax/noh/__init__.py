"""NOH and its baselines: learned and hypergradient learning rates.

:func:`noh_adam` (an LSTM proposes parameter-wise Adam rates, meta-trained by hypergradients through
unrolls: :func:`meta_train`), Adam-HD and SGD-HD (:func:`adam_hd`, :func:`sgd_hd`, Baydin et al. 2018), the
Andrychowicz et al. (2016) LSTM optimizer (:func:`lstm_optimizer`) and the shipped meta-trained weights
(:func:`pretrained_optimizer`, read and written by :func:`load_lstm_params` / :func:`save_lstm_params`), and
the meta-test of a frozen learned optimizer on a fresh optimizee (:func:`meta_evaluate`).
"""

from randlr_jax.noh._evaluation import make_split_evaluator as make_split_evaluator
from randlr_jax.noh._evaluation import meta_evaluate as meta_evaluate
from randlr_jax.noh._evaluation import sample_coordinates as sample_coordinates
from randlr_jax.noh._evaluation import trace_learning_rates as trace_learning_rates
from randlr_jax.noh._hypergradient import HypergradientState as HypergradientState
from randlr_jax.noh._hypergradient import adam_hd as adam_hd
from randlr_jax.noh._hypergradient import hypergradient_descent as hypergradient_descent
from randlr_jax.noh._hypergradient import sgd_hd as sgd_hd
from randlr_jax.noh._lstm_optimizer import LSTMOptimizerState as LSTMOptimizerState
from randlr_jax.noh._lstm_optimizer import LSTMUpdateProposer as LSTMUpdateProposer
from randlr_jax.noh._lstm_optimizer import lstm_optimizer as lstm_optimizer
from randlr_jax.noh._meta_training import MetaTrainResult as MetaTrainResult
from randlr_jax.noh._meta_training import load_lstm_params as load_lstm_params
from randlr_jax.noh._meta_training import make_meta_optimizer as make_meta_optimizer
from randlr_jax.noh._meta_training import make_meta_step as make_meta_step
from randlr_jax.noh._meta_training import make_truncation_loss as make_truncation_loss
from randlr_jax.noh._meta_training import meta_train as meta_train
from randlr_jax.noh._meta_training import save_lstm_params as save_lstm_params
from randlr_jax.noh._noh import LSTMRateProposer as LSTMRateProposer
from randlr_jax.noh._noh import NOHAdamState as NOHAdamState
from randlr_jax.noh._noh import init_proposer_params as init_proposer_params
from randlr_jax.noh._noh import noh_adam as noh_adam
from randlr_jax.noh._noh import preprocess_gradients as preprocess_gradients
from randlr_jax.noh._pretrained import PretrainedOptimizer as PretrainedOptimizer
from randlr_jax.noh._pretrained import available_pretrained as available_pretrained
from randlr_jax.noh._pretrained import load_pretrained as load_pretrained
from randlr_jax.noh._pretrained import pretrained_optimizer as pretrained_optimizer
