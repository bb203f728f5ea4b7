"""Method-agnostic training: state, step skeleton, one loop engine, checkpoints and sharding.

Nothing here knows a method: Alrao's step and its state sharding come from :mod:`randlr_jax.alrao` and are
handed to :func:`fit` (``train_step=``, ``place_state=``).
"""

from randlr_jax.training import _distributed as distributed  # noqa: F401 -- a namespace
from randlr_jax.training._batching import apply_token_budget as apply_token_budget
from randlr_jax.training._batching import endless_batches as endless_batches
from randlr_jax.training._batching import eval_token_budget as eval_token_budget
from randlr_jax.training._checkpoint import Checkpointer as Checkpointer
from randlr_jax.training._compile_cache import enable_compile_cache as enable_compile_cache
from randlr_jax.training._config import LoopConfig as LoopConfig
from randlr_jax.training._early_stopping import EarlyStopping as EarlyStopping
from randlr_jax.training._engine import TrainingDiverged as TrainingDiverged
from randlr_jax.training._loop import FitResult as FitResult
from randlr_jax.training._loop import fit as fit
from randlr_jax.training._nnx import NNXModel as NNXModel
from randlr_jax.training._nnx import adapt_model as adapt_model
from randlr_jax.training._nnx import nnx_model as nnx_model
from randlr_jax.training._plotting import learning_curves as learning_curves
from randlr_jax.training._plotting import new_figure as new_figure
from randlr_jax.training._plotting import save_figure as save_figure
from randlr_jax.training._population import PopulationResult as PopulationResult
from randlr_jax.training._population import fit_population as fit_population
from randlr_jax.training._population import init_population as init_population
from randlr_jax.training._population import make_population_eval_step as make_population_eval_step
from randlr_jax.training._population import make_population_optimizer as make_population_optimizer
from randlr_jax.training._population import make_population_train_step as make_population_train_step
from randlr_jax.training._population import member_history as member_history
from randlr_jax.training._records import JsonLinesLog as JsonLinesLog
from randlr_jax.training._records import read_jsonl as read_jsonl
from randlr_jax.training._run_record import check_or_write as check_or_write
from randlr_jax.training._run_record import fingerprint as fingerprint
from randlr_jax.training._sharding import make_mesh as make_mesh
from randlr_jax.training._sharding import put_global as put_global
from randlr_jax.training._sharding import replicate as replicate
from randlr_jax.training._sharding import shard_batch as shard_batch
from randlr_jax.training._sharding import to_host as to_host
from randlr_jax.training._state import TrainState as TrainState
from randlr_jax.training._state import create_train_state as create_train_state
from randlr_jax.training._steps import apply_step as apply_step
from randlr_jax.training._steps import make_eval_step as make_eval_step
from randlr_jax.training._steps import make_train_step as make_train_step
