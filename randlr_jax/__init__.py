"""randlr_jax: learning rates you do not tune, for JAX and Optax.

One namespace per line of work, over a method-agnostic base:

* :mod:`randlr_jax.alrao` -- Alrao (Blier et al. 2019): random per-feature rates, classifier copies,
  switch averaging;
* :mod:`randlr_jax.autodrop` -- AutoDrop: drop the rate when the angular velocity saturates;
* :mod:`randlr_jax.noh` -- NOH, Adam-HD/SGD-HD, the LSTM optimizer, meta-training, shipped weights;
* :mod:`randlr_jax.cyclical` -- Smith's range test, cyclical rates and 1cycle;
* :mod:`randlr_jax.training` -- state, steps, the loop engine (``fit``, ``fit_population``), checkpoints,
  sharding;
* :mod:`randlr_jax.models` (Flax models), :mod:`randlr_jax.data` (datasets; imported on first use),
  :mod:`randlr_jax.runner` (whole runs from configs).

The headline names are re-exported here. Importing the package loads neither matplotlib, TensorFlow
Datasets, orbax nor scikit-learn, and changes no global setting.
"""

from randlr_jax import alrao as alrao
from randlr_jax import autodrop as autodrop
from randlr_jax import cyclical as cyclical
from randlr_jax import models as models
from randlr_jax import noh as noh
from randlr_jax import runner as runner
from randlr_jax import training as training
from randlr_jax.alrao import AlraoHead as AlraoHead
from randlr_jax.alrao import alrao_adam as alrao_adam
from randlr_jax.alrao import alrao_sgd as alrao_sgd
from randlr_jax.alrao import make_alrao_train_step as make_alrao_train_step
from randlr_jax.cyclical import cyclic_adam as cyclic_adam
from randlr_jax.cyclical import cyclic_sgd as cyclic_sgd
from randlr_jax.cyclical import lr_range_test as lr_range_test
from randlr_jax.cyclical import one_cycle_adam as one_cycle_adam
from randlr_jax.cyclical import one_cycle_sgd as one_cycle_sgd
from randlr_jax.noh import adam_hd as adam_hd
from randlr_jax.noh import lstm_optimizer as lstm_optimizer
from randlr_jax.noh import noh_adam as noh_adam
from randlr_jax.noh import pretrained_optimizer as pretrained_optimizer
from randlr_jax.noh import sgd_hd as sgd_hd
from randlr_jax.training import LoopConfig as LoopConfig
from randlr_jax.training import fit as fit
from randlr_jax.training import fit_population as fit_population

__version__ = "0.2.0"


def __getattr__(name: str):
    # ``randlr_jax.data`` pulls in TensorFlow Datasets: imported on first use only.
    if name == "data":
        import importlib

        return importlib.import_module("randlr_jax.data")
    raise AttributeError(f"module 'randlr_jax' has no attribute {name!r}")
