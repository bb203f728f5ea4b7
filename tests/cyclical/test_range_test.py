"""The LR range test: analytic divergence on a noisy quadratic, one compilation, untouched parameters."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from randlr_jax.cyclical import _range_test as rt
from randlr_jax.models import make_model


def noisy_quadratic(lambda_max: float, seed: int, num_batches: int):
    """``loss(w, xi) = 1/2 sum_j lambda_j (w_j - xi_j)^2`` with fresh targets ``xi ~ N(0, 0.1^2)``.

    SGD's iterate is ``w <- (1 - lr lambda_j) w + lr lambda_j xi``: its variance stays bounded iff
    ``lr < 2 / lambda_j``, so the test must diverge just past ``2 / lambda_max``, whatever the noise.
    """
    curvatures = jnp.asarray([lambda_max / 20, lambda_max / 4, lambda_max], jnp.float32)
    rng = np.random.default_rng(seed)
    batches = [(0.1 * rng.normal(size=3)).astype(np.float32) for _ in range(num_batches)]

    def loss_fn(params, xi):
        return 0.5 * jnp.sum(curvatures * (params["w"] - xi) ** 2)

    return loss_fn, batches


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sgd_diverges_near_two_over_lambda_max_and_suggests_below_it(seed):
    lambda_max = float(10 ** np.random.default_rng(seed).uniform(-1, 2))
    critical = 2.0 / lambda_max
    loss_fn, batches = noisy_quadratic(lambda_max, seed, 400)
    result = rt.lr_range_test(
        loss_fn,
        {"w": jnp.full((3,), 3.0)},
        batches,
        optax.sgd,
        start=critical * 5e-5,
        end=critical * 50,
        num_iter=400,
    )
    assert result.stop_reason == "diverged"
    stop = result.learning_rates[-1]
    assert critical <= stop <= 2.5 * critical, (stop, critical)
    assert result.lr_min_div_10 < critical
    assert result.lr_steepest < critical
    low, high = result.cyclic_range
    assert low < high < critical
    a_low, a_high = result.alrao_range
    assert a_low <= a_high / 10 and a_high == result.lr_min_loss


def test_the_step_is_traced_once_and_params_are_untouched():
    traces = []
    loss_quadratic, batches = noisy_quadratic(4.0, 0, 50)

    def loss_fn(params, batch):
        traces.append(1)  # runs at trace time only
        return loss_quadratic(params, batch)

    params = {"w": jnp.full((3,), 3.0)}
    before = np.asarray(params["w"]).copy()
    for factory in (optax.sgd, lambda lr: optax.sgd(lr, momentum=0.9), optax.adam):
        traces.clear()
        result = rt.lr_range_test(
            loss_fn, params, batches, factory, start=1e-4, end=1.0, num_iter=50
        )
        assert len(result.losses) > 2
        assert len(traces) == 1
    np.testing.assert_array_equal(np.asarray(params["w"]), before)  # still alive and unchanged


def test_injected_learning_rate_is_driven_by_the_test():
    # inject_hyperparams reads its rate from its state; the test writes each step's rate there.
    loss_fn, batches = noisy_quadratic(10.0, 0, 300)
    plain = rt.lr_range_test(
        loss_fn, {"w": jnp.ones(3)}, batches, optax.sgd, start=1e-4, end=10.0, num_iter=300
    )
    injected = rt.lr_range_test(
        loss_fn,
        {"w": jnp.ones(3)},
        batches,
        lambda lr: optax.inject_hyperparams(optax.sgd)(learning_rate=lr),
        start=1e-4,
        end=10.0,
        num_iter=300,
    )
    np.testing.assert_allclose(injected.losses, plain.losses, rtol=1e-5)
    assert injected.stop_reason == "diverged"


def test_smoothing_and_stopping_rule():
    loss_fn, batches = noisy_quadratic(10.0, 3, 300)
    beta = 0.9
    result = rt.lr_range_test(
        loss_fn,
        {"w": jnp.ones(3)},
        batches,
        optax.sgd,
        start=1e-4,
        end=10.0,
        num_iter=300,
        smoothing=beta,
        diverge_threshold=3.0,
    )
    average, expected = 0.0, []
    for i, loss in enumerate(result.losses):
        average = beta * average + (1 - beta) * loss
        expected.append(average / (1 - beta ** (i + 1)))
    np.testing.assert_allclose(result.smoothed_losses, expected, rtol=1e-12)
    smoothed = result.smoothed_losses
    running_best = np.minimum.accumulate(smoothed)
    # Stopped at the first step whose smoothed loss exceeds 3x the best before it, not earlier.
    assert smoothed[-1] > 3.0 * running_best[-2]
    assert np.all(smoothed[1:-1] <= 3.0 * running_best[:-2])
    np.testing.assert_allclose(
        result.learning_rates, rt.range_test_learning_rates(1e-4, 10.0, 300)[: len(smoothed)]
    )


def test_learning_rate_grids():
    np.testing.assert_allclose(
        rt.range_test_learning_rates(1e-3, 10.0, 5), [1e-3, 1e-2, 1e-1, 1, 10]
    )
    np.testing.assert_allclose(
        rt.range_test_learning_rates(0.5, 2.5, 5, mode="linear"), [0.5, 1.0, 1.5, 2.0, 2.5]
    )


def test_reiterable_batches_restart_and_iterators_run_out():
    loss_fn, batches = noisy_quadratic(1.0, 0, 5)
    kwargs = dict(start=1e-6, end=1e-5, num_iter=12)  # far below divergence
    result = rt.lr_range_test(loss_fn, {"w": jnp.ones(3)}, batches, optax.sgd, **kwargs)
    assert result.stop_reason == "num_iter" and len(result.losses) == 12
    result = rt.lr_range_test(loss_fn, {"w": jnp.ones(3)}, iter(batches), optax.sgd, **kwargs)
    assert result.stop_reason == "data_exhausted" and len(result.losses) == 5


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(start=1.0, end=1.0), "start must be < end"),
        (dict(start=0.0, end=1.0), "start must be a positive"),
        (dict(start=1e-3, end=-1.0), "end must be a positive"),
        (dict(num_iter=1), "num_iter"),
        (dict(mode="log"), "mode"),
        (dict(smoothing=1.0), "smoothing"),
        (dict(diverge_threshold=1.0), "diverge_threshold"),
    ],
)
def test_bad_arguments(kwargs, match):
    loss_fn, batches = noisy_quadratic(1.0, 0, 3)
    with pytest.raises(ValueError, match=match):
        rt.lr_range_test(loss_fn, {"w": jnp.ones(3)}, batches, optax.sgd, **kwargs)


def test_empty_batches():
    loss_fn, _ = noisy_quadratic(1.0, 0, 3)
    with pytest.raises(ValueError, match="batches is empty"):
        rt.lr_range_test(loss_fn, {"w": jnp.ones(3)}, [], optax.sgd)
    with pytest.raises(ValueError, match="batches is empty"):
        rt.lr_range_test(loss_fn, {"w": jnp.ones(3)}, iter(()), optax.sgd)


def test_classification_model_result_round_trip_and_plot(tmp_path):
    model = make_model("mlp", num_classes=3, widths=(16,))
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 5)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int32) + (x[:, 1] > 0).astype(np.int32)
    batches = [{"x": x[i : i + 16], "y": y[i : i + 16]} for i in range(0, 64, 16)]
    params = model.init(jax.random.key(0), x[:1])["params"]
    result = rt.lr_range_test(
        rt.classification_loss(model),
        params,
        batches,
        optax.sgd,
        start=1e-4,
        end=100.0,
        num_iter=60,
    )
    assert np.all(np.diff(result.learning_rates) > 0)
    restored = rt.RangeTestResult.from_dict(result.to_dict())
    assert restored.suggestions() == result.suggestions()
    path = result.plot(tmp_path / "range_test.png", title="MLP")
    assert (tmp_path / "range_test.png").stat().st_size > 1000 and path.endswith(".png")
