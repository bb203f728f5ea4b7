"""``train_and_evaluate(config, workdir)``: whole runs from plain configs, optimizers by name.

Experiment plumbing above the method packages (it builds Alrao models by name), never imported by them.
"""

from randlr_jax.runner._aggregate import best_over_seeds as best_over_seeds
from randlr_jax.runner._aggregate import mean_std as mean_std
from randlr_jax.runner._optimizers import OPTIMIZERS as OPTIMIZERS
from randlr_jax.runner._optimizers import make_optimizer as make_optimizer
from randlr_jax.runner._population import (
    train_and_evaluate_population as train_and_evaluate_population,
)
from randlr_jax.runner._runner import TrainConfig as TrainConfig
from randlr_jax.runner._runner import build_model as build_model
from randlr_jax.runner._runner import describe_config as describe_config
from randlr_jax.runner._runner import record_run as record_run
from randlr_jax.runner._runner import train_and_evaluate as train_and_evaluate
from randlr_jax.runner._runner import write_config as write_config
from randlr_jax.runner._splits import clear_split_cache as clear_split_cache
from randlr_jax.runner._splits import load_splits as load_splits
