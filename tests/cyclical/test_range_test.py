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


def test_step_is_the_optimizer_step_at_the_given_rate_with_the_loss_as_value():
    # Momentum SGD on 0.5 |w - xi|^2 (gradient w - xi), by hand; an extra-args optimizer gets value=loss.
    def loss_fn(params, xi):
        return 0.5 * jnp.sum((params["w"] - xi) ** 2)

    def optimizer(lr):
        sgd = optax.sgd(lr, momentum=0.9)

        def init(params):
            return sgd.init(params), jnp.zeros(())

        def update(grads, state, params=None, *, value):
            updates, sgd_state = sgd.update(grads, state[0], params)
            return updates, (sgd_state, value)

        return optax.GradientTransformationExtraArgs(init, update)

    step = jax.jit(rt.make_range_test_step(loss_fn, optimizer))
    xis = [np.array([1.0, -2.0], np.float32), np.array([0.5, 0.0], np.float32)]
    rates = [0.1, 0.3]
    params = {"w": jnp.array([2.0, 1.0])}
    opt_state = optimizer(jnp.float32(rates[0])).init(params)
    w, m = np.array([2.0, 1.0]), np.zeros(2)
    for xi, lr in zip(xis, rates, strict=True):
        params, opt_state, loss = step(params, opt_state, np.float32(lr), xi)
        expected_loss = 0.5 * np.sum((w - xi) ** 2)
        m = 0.9 * m + (w - xi)
        w = w - lr * m
        np.testing.assert_allclose(loss, expected_loss, rtol=1e-6)
        np.testing.assert_allclose(opt_state[1], expected_loss, rtol=1e-6)
        np.testing.assert_allclose(params["w"], w, rtol=1e-6)


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


# ----------------------------------------------------------------------------------------------
# A curve that suggests nothing: no finite loss, or flat


SUGGESTIONS = ("min_index", "lr_min_loss", "lr_min_div_10", "lr_steepest", "cyclic_range",
               "alrao_range")  # fmt: skip


def _curve(smoothed, stop_reason="num_iter"):
    smoothed = np.asarray(smoothed, np.float64)
    rates = rt.range_test_learning_rates(1e-4, 1.0, max(len(smoothed), 2))[: len(smoothed)]
    return rt.RangeTestResult(rates, smoothed.copy(), smoothed, stop_reason, len(smoothed))


def _assert_no_suggestion(result, match):
    assert not result.valid and match in result.invalid_reason
    for name in SUGGESTIONS:
        with pytest.raises(ValueError, match=f"suggests no rate: .*{match}"):
            getattr(result, name)
    with pytest.raises(ValueError, match=match):
        result.suggestions()


@pytest.mark.parametrize(
    "smoothed, stop_reason, match",
    [
        ([np.nan], "diverged", "no finite loss"),
        ([np.inf], "diverged", "no finite loss"),
        ([2.3, np.nan], "diverged", "only one finite loss"),
        ([2.3], "data_exhausted", "only one finite loss"),
        ([2.0] * 50, "num_iter", "flat"),
        (2.0 + 0.9e-3 * np.sin(np.arange(50)), "num_iter", "flat"),  # spread 1.8e-3 < 2e-3
        ([-1.0, -1.0005, -1.0], "num_iter", "flat"),  # a negative loss: |mean|
        ([0.0, 0.0, 0.0], "num_iter", "flat"),
        ([2.0, 2.0, 2.0, np.inf], "diverged", "flat"),  # flat, then diverged
    ],
)
def test_hand_made_curves_that_suggest_nothing_raise(smoothed, stop_reason, match):
    _assert_no_suggestion(_curve(smoothed, stop_reason), match)


def test_a_curve_just_above_the_flat_tolerance_suggests_as_before():
    smoothed = np.array([2.0, 1.999, 1.997, 1.9975, 2.5])  # spread 0.503, the minimum at index 2
    result = _curve(smoothed, "diverged")
    assert result.valid and result.invalid_reason is None
    assert result.min_index == 2 and result.lr_min_loss == result.learning_rates[2]
    assert result.best_loss == 1.997
    barely = _curve([2.0, 2.0025, 2.0], "num_iter")  # spread 2.5e-3 > 1e-3 x 2.0017
    assert barely.valid and barely.lr_min_loss == barely.learning_rates[0]


def test_a_constant_loss_is_flat_end_to_end(tmp_path):
    def loss_fn(params, batch):
        return 0.0 * jnp.sum(params["w"] * batch) + 2.0  # no gradient: nothing moves

    result = rt.lr_range_test(
        loss_fn, {"w": jnp.ones(3)}, [jnp.ones(3)], optax.sgd, start=1e-3, end=10.0, num_iter=20
    )
    assert result.stop_reason == "num_iter" and result.best_loss == pytest.approx(2.0)
    _assert_no_suggestion(result, "flat")
    assert "widen the range" in result.invalid_reason
    record = result.to_dict()
    assert record["valid"] is False and record["lr_min_div_10"] is None
    assert record["cyclic_range"] is None and "flat" in record["invalid_reason"]
    restored = rt.RangeTestResult.from_dict(record)
    assert not restored.valid
    assert result.plot(tmp_path / "flat.png").endswith("flat.png")  # drawn, without suggestions


def test_an_all_nan_loss_suggests_nothing(tmp_path):
    def loss_fn(params, batch):
        return jnp.nan * jnp.sum(params["w"] * batch)

    result = rt.lr_range_test(
        loss_fn, {"w": jnp.ones(3)}, [jnp.ones(3)], optax.sgd, start=1e-3, end=10.0, num_iter=20
    )
    assert result.stop_reason == "diverged" and len(result.losses) == 1
    _assert_no_suggestion(result, "no finite loss")
    assert "check the data" in result.invalid_reason
    record = result.to_dict()
    assert record["best_loss"] is None and record["alrao_range"] is None
    assert record["smoothed_losses"] == [None]
    result.plot(tmp_path / "nan.png")


def test_a_valid_curve_records_that_it_is():
    loss_fn, batches = noisy_quadratic(10.0, 0, 300)
    result = rt.lr_range_test(
        loss_fn, {"w": jnp.ones(3)}, batches, optax.sgd, start=1e-4, end=10.0, num_iter=300
    )
    record = result.to_dict()
    assert record["valid"] is True and record["invalid_reason"] is None
    assert record["lr_min_div_10"] == result.lr_min_div_10


def test_suggestions_on_a_hand_made_curve_are_the_hand_computed_rates():
    """Every suggestion of a seven-point curve, worked out by hand from the documented rules.

    Rates ``10^-4 .. 10^2`` (one decade apart, so ``log lr`` is evenly spaced by ``h = ln 10``) and the
    smoothed losses ``3.0, 2.90, 2.35, 2.30, 1.85, 1.45, 5.0``: the minimum is at index 5 (rate 10).
    The steepest descent is read over indices 0..5 with central differences (one-sided at the ends):
    ``h * slope = -0.10, -0.325, -0.30, -0.25, -0.425, -0.40``, the most negative at index 4 (rate 1).
    The curve is built so that a forward difference (index 1), a backward one (index 2) or a slope in
    ``lr`` instead of ``log lr`` would each pick another rate. The Alrao low end: the descent from the
    first loss, ``0, 0.10, 0.65, 0.70, 1.15, 1.55``, is below 5% of its total ``1.55`` (0.0775) at
    index 0 only (rate 1e-4; a 10% rule would take index 1), below ``lr_max / 10 = 1``.
    """
    rates = 10.0 ** np.arange(-4, 3)
    smoothed = np.array([3.0, 2.90, 2.35, 2.30, 1.85, 1.45, 5.0])
    result = rt.RangeTestResult(rates, smoothed.copy(), smoothed, "diverged", 7)
    assert result.min_index == 5
    assert result.lr_min_loss == pytest.approx(10.0, rel=1e-12)
    assert result.lr_min_div_10 == pytest.approx(1.0, rel=1e-12)
    assert result.lr_steepest == pytest.approx(1.0, rel=1e-12)
    low, high = result.cyclic_range  # max_lr = lr_min_loss / 3, base_lr = max_lr / 4
    assert (low, high) == pytest.approx((10.0 / 12.0, 10.0 / 3.0), rel=1e-12)
    assert result.alrao_range == pytest.approx((1e-4, 10.0), rel=1e-12)
    # A low end capped at lr_max / 10: losses 2.0, 1.999, 1.998, 1.997, 1.0 at rates 1e-4, 1e-3, 1e-2,
    # 0.05, 0.1 descend by 0, 0.001, 0.002, 0.003, 1.0: below 5% of 1.0 up to index 3 (rate 0.05),
    # above lr_max / 10 = 0.01, so the low end is 0.01.
    capped_smoothed = np.array([2.0, 1.999, 1.998, 1.997, 1.0])
    capped = rt.RangeTestResult(
        np.array([1e-4, 1e-3, 1e-2, 0.05, 0.1]),
        capped_smoothed.copy(),
        capped_smoothed,
        "num_iter",
        5,
    )
    assert capped.alrao_range == pytest.approx((0.01, 0.1), rel=1e-12)
    assert result.suggestions() == {
        "lr_steepest": result.lr_steepest,
        "lr_min_loss": result.lr_min_loss,
        "lr_min_div_10": result.lr_min_div_10,
        "cyclic_range": list(result.cyclic_range),
        "alrao_range": list(result.alrao_range),
    }


def test_losses_are_the_per_step_loop_across_chunks_restarts_and_exhaustion():
    """Against SGD's closed-form step on the quadratic, written out step by step: the loss at step ``i``
    is taken at the rate of step ``i`` on batch ``i`` (a re-iterable list restarts; a generator runs
    dry), across the steps-per-dispatch chunks (32) and a ragged chunk."""
    lambda_max = 0.5
    curvatures = np.asarray([lambda_max / 20, lambda_max / 4, lambda_max], np.float64)
    loss_fn, batches = noisy_quadratic(lambda_max, 3, 20)
    start, end, num_iter = 1e-3, 1.0, 75
    rates = rt.range_test_learning_rates(start, end, num_iter)

    def reference(count, rates=rates):
        w, losses = np.full(3, 3.0), []
        for i in range(count):
            xi = batches[i % len(batches)].astype(np.float64)
            losses.append(0.5 * np.sum(curvatures * (w - xi) ** 2))
            w = w - rates[i] * curvatures * (w - xi)  # SGD: w - lr * grad
        return np.asarray(losses)

    params = {"w": jnp.full((3,), 3.0)}
    listed = rt.lr_range_test(
        loss_fn, params, batches, optax.sgd, start=start, end=end, num_iter=num_iter,
        diverge_threshold=1e9,
    )  # fmt: skip
    assert listed.stop_reason == "num_iter"
    np.testing.assert_allclose(listed.losses, reference(num_iter), rtol=2e-5)
    dry = rt.lr_range_test(
        loss_fn, params, (b for b in batches * 2 + batches[:5]), optax.sgd, start=start, end=end,
        num_iter=num_iter, diverge_threshold=1e9,
    )  # fmt: skip
    assert dry.stop_reason == "data_exhausted" and len(dry.losses) == 45
    np.testing.assert_allclose(dry.losses, reference(45), rtol=2e-5)
    # A batch of another shape (one target, broadcast) cuts its chunk: every step still in order.
    batches[7] = batches[7][:1]
    ragged = rt.lr_range_test(
        loss_fn, params, batches, optax.sgd, start=start, end=end, num_iter=40,
        diverge_threshold=1e9,
    )  # fmt: skip
    rates_40 = rt.range_test_learning_rates(start, end, 40)
    np.testing.assert_allclose(ragged.losses, reference(40, rates_40), rtol=2e-5)
