"""Smith's tools: the learning-rate range test, cyclical learning rates and the 1cycle policy.

References:
  Smith, `Cyclical Learning Rates for Training Neural Networks <https://arxiv.org/abs/1506.01186>`_, 2017.
  Smith, `A disciplined approach to neural network hyper-parameters <https://arxiv.org/abs/1803.09820>`_, 2018.
"""

from randlr_jax.cyclical._range_test import RangeTestResult as RangeTestResult
from randlr_jax.cyclical._range_test import classification_loss as classification_loss
from randlr_jax.cyclical._range_test import lr_range_test as lr_range_test
from randlr_jax.cyclical._schedules import cyclic_adam as cyclic_adam
from randlr_jax.cyclical._schedules import cyclic_momentum_schedule as cyclic_momentum_schedule
from randlr_jax.cyclical._schedules import cyclic_schedule as cyclic_schedule
from randlr_jax.cyclical._schedules import cyclic_sgd as cyclic_sgd
from randlr_jax.cyclical._schedules import one_cycle_adam as one_cycle_adam
from randlr_jax.cyclical._schedules import (
    one_cycle_momentum_schedule as one_cycle_momentum_schedule,
)
from randlr_jax.cyclical._schedules import one_cycle_schedule as one_cycle_schedule
from randlr_jax.cyclical._schedules import one_cycle_sgd as one_cycle_sgd
