"""The learning-rate range test (Smith 2017; fastai's ``lr_find``) with any Optax optimizer.

From given parameters, train for at most ``num_iter`` steps while the rate grows exponentially (or
linearly) from ``start`` to ``end``; smooth the loss with a debiased exponential moving average and stop
once it exceeds ``diverge_threshold`` times its best. The loss-versus-rate curve then suggests rates:
where the smoothed loss falls fastest (steepest descent w.r.t. ``log lr``), the rate of its minimum
divided by 10, a ``(min, max)`` range for cyclical schedules and an interval for Alrao.

Choices where the sources leave room (Smith's paper describes the test; Morris's article and fastai's
``lr_find`` fix the practice): the defaults ``start = 1e-7``, ``end = 10``, ``num_iter = 100``, exponential
growth, EMA ``beta = 0.98`` with bias correction and the stop at 4x the best smoothed loss are fastai's. The
article reads the curve as: the maximum of a cycle "a little below" the rate of the loss minimum, where the
loss still falls fast, and the minimum "the maximum divided by a factor such as 3 or 10".
:attr:`RangeTestResult.cyclic_range` takes ``max = lr_min_loss / 3`` and ``min = max / 4`` (Smith's "a
third or a quarter"). For Alrao, which samples log-uniformly and is harmed only by rates that diverge,
:attr:`RangeTestResult.alrao_range` takes every rate at which the test made progress instead: from the
rate where 5% of the descent was made (at most ``max / 10``) to ``lr_min_loss``.

One jitted step serves the whole test: the rate is an argument (a traced value), and the optimizer is
rebuilt from it inside the step, so the test compiles once for batches of one shape. The caller's
parameters are never modified (nothing is donated).

References:
  Smith, `Cyclical Learning Rates for Training Neural Networks <https://arxiv.org/abs/1506.01186>`_, 2017
  (Section 3.3, the "LR range test").
  Morris (Arizona State University), a tutorial article on the LR range test, cyclical learning rates and
  the 1cycle policy, after the fast.ai course: the source of the reading of the curve used here.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable, Iterable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from randlr_jax.training import _dispatch as dispatch
from randlr_jax.training._nnx import adapt_model
from randlr_jax.training._plotting import new_figure, save_figure
from randlr_jax.training._steps import apply_step

MODES = ("exponential", "linear")
STOP_REASONS = ("diverged", "num_iter", "data_exhausted")

LossFn = Callable[[Any, Any], jax.Array]
OptimizerFactory = Callable[[jax.Array], optax.GradientTransformation]

# How the suggestions are read off the curve (the article: the maximum "a little below" the minimum,
# the minimum "the maximum divided by a factor such as 3 or 10").
CYCLIC_MAX_BELOW_MIN = 3.0
CYCLIC_RATIO = 4.0
ALRAO_DESCENT_FRACTION = 0.05
ALRAO_MIN_SPAN = 10.0
# A curve is flat (suggests nothing) when its finite smoothed losses spread over less than this
# fraction of their mean: ``max - min <= FLAT_TOLERANCE * |mean|``.
FLAT_TOLERANCE = 1e-3


@dataclasses.dataclass(frozen=True)
class RangeTestResult:
    """The curve of a range test and the rates it suggests.

    Attributes:
      learning_rates: ``(n,)`` float64, the rate of each step taken (``n <= num_iter``).
      losses: ``(n,)`` float64, the loss of each step's batch at the parameters before that step.
      smoothed_losses: ``(n,)`` float64, the debiased moving average of ``losses``.
      stop_reason: ``"diverged"`` (smoothed loss above the threshold, or not finite), ``"num_iter"``
        or ``"data_exhausted"`` (a one-shot iterator ran out).
      num_iter: the requested number of steps.

    A curve suggests nothing when it has fewer than two finite smoothed losses or is flat (their spread
    at most :data:`FLAT_TOLERANCE` of their mean): :attr:`valid` is then ``False``, :attr:`invalid_reason`
    says why, and the suggestions (:attr:`lr_steepest`, :attr:`lr_min_loss`, :attr:`lr_min_div_10`,
    :attr:`cyclic_range`, :attr:`alrao_range`, :meth:`suggestions`) raise ``ValueError`` with it.
    """

    learning_rates: np.ndarray
    losses: np.ndarray
    smoothed_losses: np.ndarray
    stop_reason: str
    num_iter: int

    @property
    def _valid(self) -> np.ndarray:
        return np.isfinite(self.smoothed_losses)

    @property
    def invalid_reason(self) -> str | None:
        """Why the curve suggests no rate (``None``: it does): no finite loss, or a flat curve."""
        finite = self.smoothed_losses[self._valid]
        steps = len(self.smoothed_losses)
        if finite.size == 0:
            first = self.losses[0] if steps else math.nan
            return (
                f"no finite loss (the first batch's loss was {first}): check the data and the loss "
                "function, or start from a smaller rate"
            )
        if finite.size == 1:
            if self.stop_reason == "diverged":
                return (
                    "only one finite loss (it diverged at its second step, rate "
                    f"{self.learning_rates[-1]:.3g}): start from a smaller rate, or check the data "
                    "and the loss function"
                )
            return (
                f"only one finite loss (it stopped after {steps} step: {self.stop_reason}): run more "
                "iterations, or give it more batches"
            )
        spread = float(finite.max() - finite.min())
        mean = float(finite.mean())
        if spread <= FLAT_TOLERANCE * abs(mean):
            return (
                f"the smoothed loss is flat (it spread over {spread:.3g}, at most {FLAT_TOLERANCE:g} of "
                f"its mean {mean:.4g}, for rates {self.learning_rates[0]:.3g} to "
                f"{self.learning_rates[-1]:.3g}): widen the range (a larger end), run more iterations, "
                "or check the data and that the gradients reach the parameters"
            )
        return None

    @property
    def valid(self) -> bool:
        """Whether the curve suggests rates (see :attr:`invalid_reason`)."""
        return self.invalid_reason is None

    def _check_valid(self) -> None:
        reason = self.invalid_reason
        if reason is not None:
            raise ValueError(f"The LR range test suggests no rate: {reason}.")

    @property
    def min_index(self) -> int:
        """Index of the smallest finite smoothed loss (``ValueError`` for a curve that is not
        :attr:`valid`)."""
        self._check_valid()
        smoothed = np.where(self._valid, self.smoothed_losses, np.inf)
        return int(np.argmin(smoothed))

    @property
    def best_loss(self) -> float:
        """The smallest finite smoothed loss (NaN if none)."""
        finite = self.smoothed_losses[self._valid]
        return float(finite.min()) if finite.size else math.nan

    @property
    def lr_min_loss(self) -> float:
        """The rate at the smallest smoothed loss (too large to train with: the loss stops falling)."""
        return float(self.learning_rates[self.min_index])

    @property
    def lr_min_div_10(self) -> float:
        """``lr_min_loss / 10``: fastai's classic suggestion for a constant rate."""
        return self.lr_min_loss / 10.0

    @property
    def lr_steepest(self) -> float:
        """The rate where the smoothed loss falls fastest w.r.t. ``log lr``, before its minimum.

        ``argmin_i d smoothed / d log(lr)`` (central differences, ``np.gradient``) over the steps up to the
        minimum; the first rate if the loss never fell.
        """
        stop = self.min_index + 1
        if stop < 2:
            return float(self.learning_rates[0])
        slopes = np.gradient(self.smoothed_losses[:stop], np.log(self.learning_rates[:stop]))
        return float(self.learning_rates[int(np.argmin(slopes))])

    @property
    def cyclic_range(self) -> tuple[float, float]:
        """``(base_lr, max_lr)`` for a cyclical schedule or 1cycle.

        ``max_lr = lr_min_loss / 3``, a little below the loss minimum where the loss still falls fast;
        ``base_lr = max_lr / 4`` (Smith 2017: a third or a quarter of the maximum).
        """
        high = self.lr_min_loss / CYCLIC_MAX_BELOW_MIN
        return high / CYCLIC_RATIO, high

    @property
    def alrao_range(self) -> tuple[float, float]:
        """``(lr_min, lr_max)`` for Alrao: every rate at which the range test made progress.

        ``lr_max = lr_min_loss``; ``lr_min`` is the last rate before the smoothed loss had made 5% of its
        total descent (from the first smoothed loss to the minimum), at most ``lr_max / 10``. Alrao
        samples rates log-uniformly in this interval: rates too slow are harmless to it, rates that
        diverge waste copies and features.
        """
        high = self.lr_min_loss
        stop = self.min_index + 1
        drop = self.smoothed_losses[0] - self.smoothed_losses[:stop]
        total = drop[-1]
        low = float(self.learning_rates[0])
        if total > 0:
            before = np.flatnonzero(drop < ALRAO_DESCENT_FRACTION * total)
            low = float(self.learning_rates[before[-1]])
        return min(low, high / ALRAO_MIN_SPAN), high

    def suggestions(self) -> dict[str, Any]:
        """All suggestions as plain Python numbers (``ValueError`` for a curve that is not :attr:`valid`)."""
        return {
            "lr_steepest": self.lr_steepest,
            "lr_min_loss": self.lr_min_loss,
            "lr_min_div_10": self.lr_min_div_10,
            "cyclic_range": list(self.cyclic_range),
            "alrao_range": list(self.alrao_range),
        }

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: the curve, the stop reason and the suggestions (non-finite losses as ``None``;
        a curve that is not :attr:`valid` has its suggestions ``None`` and its ``invalid_reason``)."""

        def floats(a: np.ndarray) -> list:
            return [float(v) if np.isfinite(v) else None for v in a]

        reason = self.invalid_reason
        if reason is None:
            suggested = self.suggestions()
        else:
            keys = ("lr_steepest", "lr_min_loss", "lr_min_div_10", "cyclic_range", "alrao_range")
            suggested = dict.fromkeys(keys)
        best = self.best_loss
        return {
            "learning_rates": floats(self.learning_rates),
            "losses": floats(self.losses),
            "smoothed_losses": floats(self.smoothed_losses),
            "stop_reason": self.stop_reason,
            "num_iter": self.num_iter,
            "best_loss": best if math.isfinite(best) else None,
            "valid": reason is None,
            "invalid_reason": reason,
            **suggested,
        }

    @classmethod
    def from_dict(cls, record: dict[str, Any]) -> RangeTestResult:
        """Inverse of :meth:`to_dict`."""

        def array(values: list) -> np.ndarray:
            return np.array([np.nan if v is None else v for v in values], np.float64)

        return cls(
            learning_rates=array(record["learning_rates"]),
            losses=array(record["losses"]),
            smoothed_losses=array(record["smoothed_losses"]),
            stop_reason=record["stop_reason"],
            num_iter=int(record["num_iter"]),
        )

    def plot(
        self, path: str | os.PathLike | None = None, *, ax: Any = None, title: str = ""
    ) -> Any:
        """Draw loss against rate (log axis) with the suggestions marked; save to ``path`` if given.

        Args:
          path: where to save a PNG (the figure is then closed); ``None``: do not save.
          ax: a matplotlib axis to draw on (a new figure otherwise).
          title: the axis title.

        Returns:
          ``path`` when saved, else the axis.
        """
        own_figure = ax is None
        if own_figure and path is not None:
            # A file only: a figure outside pyplot, whatever backend the user has chosen.
            fig = new_figure(figsize=(6, 4))
            ax = fig.subplots()
        elif own_figure:
            try:
                import matplotlib.pyplot as plt
            except ImportError as error:
                raise ImportError(
                    "RangeTestResult.plot needs matplotlib: pip install 'randlr_jax[plotting]'."
                ) from error

            fig, ax = plt.subplots(figsize=(6, 4))
        lrs = self.learning_rates
        ax.plot(lrs, self.losses, color="0.75", lw=0.8, label="loss")
        ax.plot(lrs, self.smoothed_losses, color="C0", lw=1.8, label="smoothed loss")
        if self.valid:
            self._plot_suggestions(ax)
        else:  # nothing to suggest: say so on the figure
            ax.text(
                0.5,
                0.5,
                "no suggestion: " + self.invalid_reason.split(" (")[0].split(":")[0],
                transform=ax.transAxes,
                ha="center",
                va="center",
                color="C3",
                fontsize=8,
                wrap=True,
            )
        finite = self.smoothed_losses[self._valid]
        if finite.size:
            top = max(finite[0], np.nanmin(finite)) * 1.3
            bottom = np.nanmin(finite)
            ax.set_ylim(bottom - 0.1 * (top - bottom), top)
        ax.set_xscale("log")
        ax.set_xlabel("learning rate")
        ax.set_ylabel("loss")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7)
        if title:
            ax.set_title(title)
        if path is None:
            return ax
        # The caller's axis keeps the caller's layout; a figure of our own is laid out tightly.
        return save_figure(ax.figure, path, tight=own_figure)

    def _plot_suggestions(self, ax: Any) -> None:
        lrs = self.learning_rates
        low, high = self.cyclic_range
        ax.axvspan(low, high, color="C2", alpha=0.2, label=f"cyclic range [{low:.2g}, {high:.2g}]")
        a_low, a_high = self.alrao_range
        ax.axvline(a_low, color="C1", ls=":", lw=1.2)
        ax.axvline(a_high, color="C1", ls=":", lw=1.2, label=f"Alrao [{a_low:.2g}, {a_high:.2g}]")
        steep = self.lr_steepest
        ax.plot(
            [steep],
            [np.interp(np.log(steep), np.log(lrs), self.smoothed_losses)],
            "o",
            color="C3",
            label=f"steepest {steep:.2g}",
        )
        ax.axvline(
            self.lr_min_div_10, color="k", ls="--", lw=1, label=f"min/10 {self.lr_min_div_10:.2g}"
        )


def range_test_learning_rates(
    start: float, end: float, num_iter: int, mode: str = "exponential"
) -> np.ndarray:
    """The ``num_iter`` rates of a range test: ``start * (end / start)^(i / (num_iter - 1))`` or linear.

    Raises:
      ValueError: non-positive or non-finite rates, ``start >= end``, ``num_iter < 2``, unknown ``mode``.
    """
    for name, value in (("start", start), ("end", end)):
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or not math.isfinite(value)
            or value <= 0
        ):
            raise ValueError(f"{name} must be a positive finite rate, got {value!r}.")
    if start >= end:
        raise ValueError(f"start must be < end, got start={start!r} and end={end!r}.")
    if isinstance(num_iter, bool) or not isinstance(num_iter, (int, np.integer)) or num_iter < 2:
        raise ValueError(f"num_iter must be an integer >= 2, got {num_iter!r}.")
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}.")
    fraction = np.arange(num_iter, dtype=np.float64) / (num_iter - 1)
    if mode == "exponential":
        return start * (end / start) ** fraction
    return start + (end - start) * fraction


def make_range_test_step(
    loss_fn: LossFn, optimizer: OptimizerFactory
) -> Callable[..., tuple[Any, Any, jax.Array]]:
    """``step(params, opt_state, learning_rate, batch) -> (params, opt_state, loss)``, not jitted.

    The optimizer is rebuilt from the (traced) rate inside the step; extra-args transformations get
    ``value=loss``. The update is the training step's (:func:`randlr_jax.training.apply_step`).
    """

    def step(params, opt_state, learning_rate, batch):
        loss, grads = jax.value_and_grad(loss_fn)(params, batch)
        opt_state = _set_injected_rate(opt_state, learning_rate)
        tx = optax.with_extra_args_support(optimizer(learning_rate))
        params, opt_state = apply_step(tx, params, opt_state, grads, {"value": loss})
        return params, opt_state, loss

    return step


_CHUNK = 32  # range-test steps per dispatch


def _padded(rows: np.ndarray) -> np.ndarray:
    """``rows`` zero-padded to ``_CHUNK`` along the first axis."""
    out = np.zeros((_CHUNK, *rows.shape[1:]), rows.dtype)
    out[: len(rows)] = rows
    return out


def _shapes(batch: Any) -> Any:
    return jax.tree.map(lambda leaf: (np.shape(leaf), np.asarray(leaf).dtype), batch)


def _chunk_runner(loss_fn: LossFn, optimizer: OptimizerFactory) -> Callable:
    """``jax.jit`` of ``run(params, opt_state, rates, batches, n) -> (params, opt_state, losses)``: the
    range test's first ``n`` steps over a chunk (``rates`` ``(_CHUNK,)``, ``batches`` stacked
    ``(_CHUNK, B, ...)``, zero-padded past ``n``) as one loop on the device, one dispatch and one
    compiled program for every ``n`` (the test's stopping rule reads the losses afterwards). The same
    for the same ``(loss_fn, optimizer)`` through :func:`randlr_jax.training._dispatch.shared`."""
    step = make_range_test_step(loss_fn, optimizer)

    def run(params, opt_state, rates, batches, n):
        def body(i, carry):
            params, opt_state, losses = carry
            batch = jax.tree.map(
                lambda a: jax.lax.dynamic_index_in_dim(a, i, keepdims=False), batches
            )
            params, opt_state, loss = step(params, opt_state, rates[i], batch)
            return params, opt_state, losses.at[i].set(loss.astype(jnp.float32))

        losses = jnp.zeros(rates.shape, jnp.float32)
        return jax.lax.fori_loop(0, n, body, (params, opt_state, losses))

    return jax.jit(run)


def _strongly_typed(tree: Any) -> Any:
    def strong(leaf):
        if isinstance(leaf, (jax.Array, np.ndarray, np.generic)):
            return jnp.asarray(leaf, dtype=leaf.dtype)
        return leaf

    return jax.tree.map(strong, tree)


def _set_injected_rate(opt_state: Any, learning_rate: jax.Array) -> Any:
    """Write the rate into an ``optax.inject_hyperparams`` state, which reads it from there, not from
    the factory's argument, at update time."""
    injected = (optax.InjectHyperparamsState, optax.InjectStatefulHyperparamsState)
    if isinstance(opt_state, injected) and "learning_rate" in opt_state.hyperparams:
        old = opt_state.hyperparams["learning_rate"]
        hyperparams = {**opt_state.hyperparams, "learning_rate": learning_rate.astype(old.dtype)}
        return opt_state._replace(hyperparams=hyperparams)
    return opt_state


def lr_range_test(
    loss_fn: LossFn,
    params: Any,
    batches: Iterable[Any],
    optimizer: OptimizerFactory,
    *,
    start: float = 1e-7,
    end: float = 10.0,
    num_iter: int = 100,
    mode: str = "exponential",
    smoothing: float = 0.98,
    diverge_threshold: float = 4.0,
    mesh: Any = None,
) -> RangeTestResult:
    r"""Run the LR range test from ``params`` (left untouched) and return the curve and suggestions.

    Step ``i`` (``0 <= i < num_iter``) evaluates the loss of batch ``i`` and its gradient at the current
    parameters, then updates them with ``optimizer(lr_i)``:

    .. math::
      \mathrm{lr}_i = \mathrm{start} \cdot (\mathrm{end}/\mathrm{start})^{i/(n-1)}
      \ \text{(or linear)},\qquad
      a_i = \beta a_{i-1} + (1 - \beta) \ell_i,\quad \bar\ell_i = a_i / (1 - \beta^{i+1})

    with ``a_{-1} = 0``; the test stops after step ``i >= 1`` once ``\bar\ell_i > `` ``diverge_threshold``
    ``* min_{j<=i} \bar\ell_j`` or the loss is not finite. The optimizer state is initialised with
    ``optimizer(start).init(params)`` and the step is compiled once (``lr`` is a traced argument); batches
    must therefore all have the same shapes (another shape compiles again). The steps run up to 32 per
    dispatch (a loop on the device over a chunk of batches, one host round trip per chunk); the stopping
    rule then reads the chunk's losses in order, and the steps computed past a stop are discarded.

    Args:
      loss_fn: ``loss_fn(params, batch) -> scalar`` (e.g. :func:`classification_loss`).
      params: the starting parameters (a pytree); not modified.
      batches: an iterable of batches. A re-iterable one (a list, a ``Sequence``) is restarted when it
        runs out before ``num_iter`` steps; a one-shot iterator ending early stops the test
        (``stop_reason="data_exhausted"``).
      optimizer: ``learning_rate -> optax.GradientTransformation``, e.g.
        ``lambda lr: optax.sgd(lr, momentum=0.9)``; called with a traced scalar. A top-level
        ``optax.inject_hyperparams`` transformation gets the rate written into its state's
        ``hyperparams["learning_rate"]``; the optimizer state must not otherwise depend on the rate.
      start: first rate (> 0).
      end: last rate (> ``start``).
      num_iter: maximum number of steps (>= 2).
      mode: ``"exponential"`` or ``"linear"`` growth of the rate.
      smoothing: ``beta`` of the moving average, in ``[0, 1)``.
      diverge_threshold: stop when the smoothed loss exceeds this multiple of its best (> 1).
      mesh: a ``jax.sharding.Mesh`` from :func:`randlr_jax.training.make_mesh` to run data parallel
        (every batch split over its ``"data"`` axis, parameters replicated); ``None``: default device.

    Returns:
      A :class:`RangeTestResult`.

    Raises:
      ValueError: ``start >= end``, non-positive rates, ``num_iter < 2``, an unknown ``mode``, bad
        ``smoothing``/``diverge_threshold``, or no batch at all.

    Example:
      >>> import jax.numpy as jnp, optax
      >>> loss_fn = lambda p, batch: 0.5 * jnp.sum(batch * p["w"] ** 2)
      >>> result = lr_range_test(
      ...     loss_fn, {"w": jnp.ones(3)}, [jnp.array([1.0, 2.0, 4.0])], optax.sgd,
      ...     start=1e-3, end=10.0, num_iter=200)
      >>> result.stop_reason, result.lr_min_div_10 < 2 / 4.0
      ('diverged', True)

    References:
      Smith, `Cyclical Learning Rates for Training Neural Networks <https://arxiv.org/abs/1506.01186>`_,
      2017.
    """
    from randlr_jax import _checks as checks  # the package's one set of checks

    for name, value in (("start", start), ("end", end)):
        checks.in_range(
            name, value, 0.0, math.inf, low_open=True, high_open=True,
            what="a positive finite rate", static=True,
        )  # fmt: skip
    checks.interval("start", start, "end", end, strict=True)
    checks.positive_int("num_iter", num_iter, minimum=2)
    checks.one_of("mode", mode, MODES)
    checks.in_unit_interval("smoothing", smoothing, static=True)
    checks.greater_than("diverge_threshold", diverge_threshold, 1.0, static=True)
    learning_rates = range_test_learning_rates(start, end, num_iter, mode)
    iterator = iter(batches)
    restartable = iterator is not batches
    try:
        batch = next(iterator)
    except StopIteration:
        raise ValueError("batches is empty: the range test needs at least one batch.") from None

    # Weakly typed leaves (e.g. from ``jnp.full(shape, 3.0)``) come back strongly typed from the step,
    # which would compile it a second time: start from strongly typed copies.
    current = _strongly_typed(params)
    opt_state = _strongly_typed(optimizer(jnp.asarray(start, jnp.float32)).init(current))
    place = lambda chunk: jax.tree.map(jnp.asarray, chunk)  # noqa: E731
    if mesh is not None:
        from jax.sharding import NamedSharding, PartitionSpec

        from randlr_jax.training._sharding import DATA_AXIS, put_global, replicate

        current, opt_state = replicate((current, opt_state), mesh)
        stacked = NamedSharding(mesh, PartitionSpec(None, DATA_AXIS))  # (steps, batch, ...)
        place = lambda chunk: put_global(chunk, stacked)  # noqa: E731
    run = dispatch.shared(_chunk_runner, loss_fn, optimizer)
    losses: list[float] = []
    smoothed: list[float] = []
    average, best = 0.0, math.inf
    stop_reason = "num_iter"
    i = 0
    pending = [batch]  # the batches of the next chunk (the first one already read)
    exhausted = False
    while i < len(learning_rates) and stop_reason == "num_iter":
        # Up to _CHUNK steps of equal batch shapes in one dispatch; the stopping rule then reads
        # their losses in order (the steps past a stop are computed and discarded: the result holds
        # no parameters).
        size = min(_CHUNK, len(learning_rates) - i)
        while len(pending) < size and not exhausted:
            try:
                pending.append(next(iterator))
            except StopIteration:
                if not restartable:
                    exhausted = True
                    break
                iterator = iter(batches)
                pending.append(next(iterator))
        shapes = [_shapes(b) for b in pending]
        count = next((k for k, shape in enumerate(shapes) if shape != shapes[0]), len(pending))
        count = min(count, size)
        chunk = jax.tree.map(lambda *leaves: _padded(np.stack(leaves)), *pending[:count])
        rates = _padded(np.asarray(learning_rates[i : i + count], np.float32))
        current, opt_state, chunk_losses = run(current, opt_state, rates, place(chunk), count)
        pending = pending[count:]
        for loss in np.asarray(chunk_losses, np.float64)[:count].tolist():
            average = smoothing * average + (1.0 - smoothing) * loss
            value = average / (1.0 - smoothing ** (i + 1))
            losses.append(loss)
            smoothed.append(value)
            i += 1
            if not math.isfinite(value) or (i > 1 and value > diverge_threshold * best):
                stop_reason = "diverged"
                break
            best = min(best, value)
        if stop_reason == "num_iter" and exhausted and not pending and i < len(learning_rates):
            stop_reason = "data_exhausted"
    n = len(losses)
    return RangeTestResult(
        learning_rates=np.asarray(learning_rates[:n], np.float64),
        losses=np.asarray(losses, np.float64),
        smoothed_losses=np.asarray(smoothed, np.float64),
        stop_reason=stop_reason,
        num_iter=int(num_iter),
    )


def classification_loss(model: Any, *, train: bool = True) -> LossFn:
    """``loss_fn(params, batch)``: mean softmax cross-entropy of ``model`` on ``{"x", "y"}`` batches.

    For Flax models whose only variables are ``"params"`` and that need no random key (no dropout);
    other models take their own ``loss_fn``. An ``nnx.Module`` works as its Linen face
    (:func:`randlr_jax.training.adapt_model`): ``params`` is then
    ``adapt_model(model).init(None)["params"]``, a plain dict of the paths of
    ``nnx.state(model, nnx.Param)`` (that ``nnx.State`` itself is accepted too).

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from randlr_jax.models import make_model
      >>> model = make_model("mlp", num_classes=3, widths=(8,))
      >>> params = model.init(jax.random.key(0), jnp.zeros((1, 5)))["params"]
      >>> loss_fn = classification_loss(model)
      >>> float(jax.jit(loss_fn)(params, {"x": jnp.zeros((4, 5)), "y": jnp.zeros(4, jnp.int32)})) > 0
      True
    """

    model = adapt_model(model)  # an nnx.Module: its Linen face

    def loss_fn(params, batch):
        logits = model.apply({"params": params}, batch["x"], train=train)
        return optax.softmax_cross_entropy_with_integer_labels(logits, batch["y"]).mean()

    return loss_fn
