"""The method-agnostic package's one transformation in the contract suite (``tests/test_contract.py``).

``make_population_optimizer`` holds the rate in ``optax.inject_hyperparams``' state (so population
members can differ in it); alone, it runs with its placeholder rate ``1.0``, which the quadratic of the
suite tolerates with momentum.
"""

from __future__ import annotations

import optax

from randlr_jax.training import make_population_optimizer
from tests.helpers import ContractCase as Case

CASES = [
    Case(
        "population_optimizer_momentum",
        lambda: make_population_optimizer(optax.sgd, momentum=0.9),
    ),
]
