"""Contract cases for the cyclical / 1cycle optimizer helpers (``randlr_jax.cyclical``).

Their rate and momentum are already injected with ``optax.inject_hyperparams`` (a second injection
around them would be read once at init), so they carry no ``inject`` entry; ``tests/cyclical/test_schedules.py``
checks the values in ``state.hyperparams`` step by step.
"""

from __future__ import annotations

from randlr_jax.cyclical import _schedules as schedules
from tests.helpers import ContractCase as Case

CASES = [
    Case(
        "one_cycle_sgd",
        lambda: schedules.one_cycle_sgd(
            300, 0.3, three_phase=True, nesterov=True, weight_decay=1e-4
        ),
    ),
    Case("one_cycle_adam", lambda: schedules.one_cycle_adam(600, 0.1), steps_to_converge=600),
    Case("cyclic_sgd", lambda: schedules.cyclic_sgd(0.05, 0.3, 20, mode="triangular2")),
    Case("cyclic_adam", lambda: schedules.cyclic_adam(0.01, 0.1, 50), steps_to_converge=600),
]
