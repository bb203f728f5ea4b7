"""AutoDrop's state as a training metric (``autodrop_metrics``) and the curves read back from a history."""

from __future__ import annotations

import types

import jax.numpy as jnp
import numpy as np
import optax
import pytest

from randlr_jax import autodrop


def test_metric_is_the_state_after_the_step_in_field_order():
    tx = optax.chain(optax.sgd(0.1), autodrop(0.1, 0.5, steps_per_period=1, drop_delay=0))
    opt_state = tx.init({"w": jnp.ones(3)})
    ad = autodrop.get_autodrop_state(opt_state)
    new_state = types.SimpleNamespace(opt_state=opt_state)
    (vector,) = autodrop.autodrop_metrics(None, new_state, None, None).values()
    want = [float(getattr(ad, name)) for name in autodrop.AUTODROP_FIELDS]
    np.testing.assert_allclose(vector, want)
    assert vector.dtype == jnp.float32 and autodrop.AUTODROP_FIELDS[0] == "learning_rate"


def test_curves_and_drop_epochs_from_a_history():
    history = [
        {"epoch": 1, "last_autodrop": [0.1, 90.0, 0.0, 1.0]},  # dropped in the first epoch
        {"epoch": 2, "last_autodrop": [0.1, 80.0, 1.0, 1.0]},
        {"epoch": 3, "last_autodrop": [0.02, 70.0, 0.0, 2.0]},
        {"epoch": 4, "last_autodrop": [0.004, 60.0, 0.0, 4.0]},  # two in one epoch: one entry
    ]
    curves = autodrop.autodrop_curves(history)
    assert curves == {
        "learning_rate": [0.1, 0.1, 0.02, 0.004],
        "angle": [90.0, 80.0, 70.0, 60.0],
        "drop_epochs": [1, 3, 4],
    }
    assert autodrop.autodrop_curves(history[1:2])["drop_epochs"] == [2]  # counted from 0
    with pytest.raises(ValueError, match="history"):
        autodrop.autodrop_curves([])
    with pytest.raises(ValueError, match=r"history\[0\]\['last_autodrop'\]"):
        autodrop.autodrop_curves([{"epoch": 1, "last_autodrop": [0.1, 2.0]}])
