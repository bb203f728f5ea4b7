"""Training helpers: state, jitted steps, data-parallel sharding, checkpoints and the resumable loop."""

from randlr_jax.training import copy_sharding as copy_sharding
from randlr_jax.training import distributed as distributed
from randlr_jax.training.alrao_step import make_alrao_train_step as make_alrao_train_step
from randlr_jax.training.checkpoint import Checkpointer as Checkpointer
from randlr_jax.training.early_stopping import EarlyStopping as EarlyStopping
from randlr_jax.training.loop import FitResult as FitResult
from randlr_jax.training.loop import LoopConfig as LoopConfig
from randlr_jax.training.loop import fit as fit
from randlr_jax.training.optimizers import OPTIMIZERS as OPTIMIZERS
from randlr_jax.training.optimizers import make_optimizer as make_optimizer
from randlr_jax.training.optimizers import register_optimizer as register_optimizer
from randlr_jax.training.runner import TrainConfig as TrainConfig
from randlr_jax.training.runner import train_and_evaluate as train_and_evaluate
from randlr_jax.training.sharding import make_mesh as make_mesh
from randlr_jax.training.sharding import put_global as put_global
from randlr_jax.training.sharding import replicate as replicate
from randlr_jax.training.sharding import shard_batch as shard_batch
from randlr_jax.training.sharding import to_host as to_host
from randlr_jax.training.state import TrainState as TrainState
from randlr_jax.training.state import create_train_state as create_train_state
from randlr_jax.training.steps import make_eval_step as make_eval_step
from randlr_jax.training.steps import make_train_step as make_train_step
