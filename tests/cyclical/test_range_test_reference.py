"""The LR range test's smoothing and stopping rule on scripted loss curves, against a hand computation.

The loss of step ``i`` is scripted (it ignores the parameters), so the curve the test sees is known in
advance and the rule can be replayed in plain Python: the debiased moving average
``a_i = beta a_{i-1} + (1 - beta) l_i``, ``s_i = a_i / (1 - beta^(i+1))`` (Smith 2017; fastai's
``lr_find``), and a stop after the first step ``i >= 1`` whose smoothed loss exceeds
``diverge_threshold`` times the best *smoothed* loss before it, or is not finite.

References:
  Smith, `Cyclical Learning Rates for Training Neural Networks <https://arxiv.org/abs/1506.01186>`_,
  2017 (Section 3.3).
"""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np
import optax
import pytest

from randlr_jax.cyclical import _range_test as rt


def _scripted(losses):
    """``(loss_fn, batches)``: batch ``i`` carries the loss of step ``i`` (the params get no gradient)."""
    batches = [{"loss": np.float32(v)} for v in losses]

    def loss_fn(params, batch):
        return batch["loss"] + 0.0 * jnp.sum(params["w"])

    return loss_fn, batches


def _by_hand(losses, beta, threshold):
    """The smoothed curve and the stop reason, replayed in float64."""
    average, best, smoothed = 0.0, math.inf, []
    for i, loss in enumerate(np.asarray(losses, np.float32).astype(np.float64)):
        average = beta * average + (1 - beta) * loss
        value = average / (1 - beta ** (i + 1))
        smoothed.append(value)
        if not math.isfinite(value) or (i > 0 and value > threshold * best):
            return smoothed, "diverged"
        best = min(best, value)
    return smoothed, "num_iter"


def _run(losses, beta, threshold):
    loss_fn, batches = _scripted(losses)
    return rt.lr_range_test(
        loss_fn, {"w": jnp.zeros(2)}, batches, optax.sgd, start=1e-3, end=1.0,
        num_iter=len(losses), smoothing=beta, diverge_threshold=threshold,
    )  # fmt: skip


# A single low outlier at step 2 (raw loss 0.01) among losses near 1, then a rise: the best smoothed loss
# is 0.434 (step 2), so the test runs until the smoothed loss passes 4 x 0.434 (step 8); a rule on the raw
# best would stop as soon as it passes 4 x 0.01 (step 3).
_OUTLIER = [1.0, 1.0, 0.01, 1.0, 1.0, 1.2, 1.5, 2.0, 3.0, 5.0, 8.0, 13.0, 21.0, 34.0]


def test_stop_compares_with_the_best_smoothed_loss_not_the_best_raw_loss():
    beta, threshold = 0.5, 4.0
    expected, reason = _by_hand(_OUTLIER, beta, threshold)
    assert reason == "diverged" and len(expected) == 9  # hand check of the script itself
    assert expected[3] > threshold * 0.01  # a rule on the raw best would stop at step 3
    result = _run(_OUTLIER, beta, threshold)
    assert result.stop_reason == "diverged"
    np.testing.assert_allclose(result.smoothed_losses, expected, rtol=1e-12)
    np.testing.assert_allclose(result.losses, np.asarray(_OUTLIER[:9], np.float32), rtol=0)


def test_debiasing_makes_the_first_smoothed_loss_the_first_loss():
    losses = [2.0, 2.0, 2.0, 1.0, 1.0]
    result = _run(losses, 0.9, 4.0)
    expected, reason = _by_hand(losses, 0.9, 4.0)
    assert reason == "num_iter" and result.stop_reason == "num_iter"
    assert result.smoothed_losses[0] == pytest.approx(2.0, rel=1e-12)
    # A constant loss is smoothed to itself: 0.9 a + 0.1 l debiased by 1 - 0.9^(i+1).
    np.testing.assert_allclose(result.smoothed_losses[:3], 2.0, rtol=1e-12)
    np.testing.assert_allclose(result.smoothed_losses, expected, rtol=1e-12)


def test_a_non_finite_loss_stops_the_test_at_that_step():
    losses = [1.0, 0.9, float("nan"), 0.5, 0.4]
    result = _run(losses, 0.5, 4.0)
    assert result.stop_reason == "diverged"
    assert len(result.losses) == 3 and math.isnan(result.smoothed_losses[-1])
