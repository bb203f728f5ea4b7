"""The validation messages of ``randlr_jax._checks``, pinned on the public factories that use them.

Every bad argument is a ``ValueError`` of the form ``"<name> must be <what is allowed>, got <value>."``:
the value the caller passed must be in the message, and a choice among names must refuse a value that
is not a name (an array of names, whose ``==`` is elementwise) with that message, not with NumPy's
"truth value of an array is ambiguous".
"""

from __future__ import annotations

import re

import numpy as np
import pytest

from randlr_jax.autodrop import autodrop
from randlr_jax.cyclical import cyclic_schedule, one_cycle_schedule
from randlr_jax.noh import sgd_hd


@pytest.mark.parametrize(
    "build, name, shown",
    [
        (lambda: autodrop(0.1, drop_factor=1.5), "drop_factor", "1.5"),
        (lambda: sgd_hd(learning_rate=-0.25), "learning_rate", "-0.25"),
        (lambda: cyclic_schedule(0.1, 1.0, 4, mode="sawtooth"), "mode", "'sawtooth'"),
        (lambda: one_cycle_schedule(0, 0.1), "total_steps", "0"),
    ],
    ids=["autodrop", "sgd_hd", "cyclic_schedule", "one_cycle_schedule"],
)
def test_the_message_names_the_argument_what_is_allowed_and_the_value(build, name, shown):
    with pytest.raises(ValueError) as error:
        build()
    message = str(error.value)
    assert re.fullmatch(rf"{name} must be .+, got {re.escape(shown)}\.", message), message


@pytest.mark.parametrize(
    "build, name",
    [
        (lambda value: one_cycle_schedule(100, 0.1, anneal_strategy=value), "anneal_strategy"),
        (lambda value: cyclic_schedule(0.1, 1.0, 4, mode=value), "mode"),
        (lambda value: autodrop(0.1, criterion=value), "criterion"),
    ],
    ids=["one_cycle_schedule", "cyclic_schedule", "autodrop"],
)
def test_a_choice_refuses_an_array_of_names_naming_the_argument(build, name):
    names = np.array(["cos", "triangular", "change"])
    with pytest.raises(ValueError, match=rf"^{name} must be one of "):
        build(names)
