"""``train_and_evaluate(config, workdir)``: whole runs from plain configs, optimizers by name.

Experiment plumbing above the method packages (it builds Alrao models by name), never imported by them.
"""

from randlr_jax.runner._optimizers import OPTIMIZERS as OPTIMIZERS
from randlr_jax.runner._optimizers import make_optimizer as make_optimizer
from randlr_jax.runner._runner import TrainConfig as TrainConfig
from randlr_jax.runner._runner import describe_config as describe_config
from randlr_jax.runner._runner import record_run as record_run
from randlr_jax.runner._runner import train_and_evaluate as train_and_evaluate
from randlr_jax.runner._runner import write_config as write_config
