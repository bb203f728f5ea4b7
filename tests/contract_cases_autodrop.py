"""AutoDrop in the contract suite (``tests/test_contract.py``): on top of SGD, momentum SGD and Adam.

The thresholds are large so that drop phases, the parameter averaging and the drops all happen within the
suite's convergence run (periods of a few steps); the floor ``min_learning_rate`` keeps the rate high
enough to converge in the suite's step budget. Momentum SGD under AutoDrop is exercised by
``tests/autodrop/test_autodrop.py`` (save/restore mid-phase).
"""

from __future__ import annotations

import optax

from randlr_jax.autodrop._autodrop import autodrop
from tests.helpers import ContractCase as Case


def sgd_autodrop(learning_rate, drop_factor, steps_per_period, drop_delay):
    """SGD with AutoDrop: ``inject_hyperparams`` drives the rate of both (AutoDrop reports it)."""
    return optax.chain(
        optax.sgd(learning_rate),
        autodrop(
            learning_rate,
            drop_factor,
            steps_per_period=steps_per_period,
            drop_delay=drop_delay,
            min_learning_rate=0.2 * learning_rate,
            threshold=30.0,
            max_threshold=90.0,
        ),
    )


CASES = [
    Case(
        "autodrop_sgd",
        lambda: sgd_autodrop(0.1, 0.5, steps_per_period=3, drop_delay=2),
        inject=(
            sgd_autodrop,
            dict(drop_factor=0.5, steps_per_period=3, drop_delay=2),
            "learning_rate",
            0.1,
        ),
    ),
    Case(
        "autodrop_adam",
        lambda: optax.chain(
            optax.adam(0.05),
            autodrop(
                0.05,
                0.5,
                steps_per_period=5,
                drop_delay=3,
                window=2,
                criterion="derivative",
                min_learning_rate=0.01,
                threshold=1.0,
                max_threshold=5.0,
            ),
        ),
        steps_to_converge=600,
    ),
]
