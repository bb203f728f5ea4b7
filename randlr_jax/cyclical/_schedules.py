"""Cyclical learning rates and 1cycle, with momentum cycled inversely, as Optax schedules.

Each schedule is a pure function of the step count (a Python int or a traced integer array), usable
anywhere Optax takes a schedule. The values equal, to float precision, what PyTorch's
``torch.optim.lr_scheduler.CyclicLR`` and ``OneCycleLR`` set after ``step`` calls of
``scheduler.step()`` with the same arguments, so a PyTorch recipe migrates unchanged; in an Optax
optimizer the ``n``-th update uses the value at step ``n - 1`` (``optax.inject_hyperparams`` evaluates
the schedule at the count before incrementing it), exactly as PyTorch's ``optimizer.step()`` before
``scheduler.step()``.

The optimizer helpers (:func:`cyclic_sgd`, :func:`cyclic_adam`, :func:`one_cycle_sgd`,
:func:`one_cycle_adam`) inject both the rate and the momentum (SGD's ``momentum`` or Adam's ``b1``)
through ``optax.inject_hyperparams``, so the current values are in ``state.hyperparams``.

References:
  Smith, `Cyclical Learning Rates for Training Neural Networks <https://arxiv.org/abs/1506.01186>`_, 2017.
  Smith, Topin, `Super-Convergence: Very Fast Training of Neural Networks Using Large Learning Rates
  <https://arxiv.org/abs/1708.07120>`_, 2018.
  Morris (Arizona State University), a tutorial article on the LR range test, cyclical learning rates and
  the 1cycle policy, after the fast.ai course.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import optax
from jax.typing import ArrayLike

from randlr_jax import _checks as checks

CYCLIC_MODES = ("triangular", "triangular2", "exp_range")
ANNEAL_STRATEGIES = ("cos", "linear")

# A phase of 1cycle: ``(end_step, start_value, end_value)``; it starts where the previous one ends
# (the first at step 0), as PyTorch's ``OneCycleLR._schedule_phases``.
_Phase = tuple[float, float, float]


def _float_dtype() -> jnp.dtype:
    return jnp.result_type(float)  # float32, or float64 under jax_enable_x64


# Every argument of a schedule is used in Python (float64) arithmetic: it must be concrete, and a
# traced one is refused naming ``static_args`` (``static=True``).


def _rate(name: str, value: object, *, zero: bool = False) -> float:
    """A learning rate: a finite number > 0 (``zero``: >= 0)."""
    check = checks.nonnegative if zero else checks.positive
    return check(name, value, static=True)


def _momentum(name: str, value: object) -> float:
    """A momentum (SGD's, or Adam's ``b1``): a number in ``[0, 1)``."""
    return checks.in_unit_interval(name, value, static=True)


def _check_cyclic(step_size_up, step_size_down, mode, gamma) -> tuple[float, float]:
    up = checks.positive("step_size_up", step_size_up, static=True)
    down = (
        up
        if step_size_down is None
        else checks.nonnegative("step_size_down", step_size_down, static=True)
    )
    checks.one_of("mode", mode, CYCLIC_MODES)
    # A decay per step: gamma > 1 would grow the rate without bound (gamma^i).
    checks.in_range(
        "gamma", gamma, 0.0, 1.0, low_open=True, what="a decay factor in (0, 1]", static=True
    )
    return up, down


def _cyclic_scale(
    step: ArrayLike, step_size_up: float, step_size_down: float, mode: str, gamma: float
) -> jax.Array:
    """``scale_factor * scale_fn``: the fraction of the amplitude reached at ``step`` (in ``[0, 1]``).

    PyTorch: ``cycle = floor(1 + i / total)``, ``x = 1 + i / total - cycle``, ``scale_factor = x / r`` if
    ``x <= r`` else ``(x - 1) / (r - 1)`` with ``r = up / total``; ``x`` is computed as
    ``(i mod total) / total``, the same number with no cancellation for large ``i``.
    """
    dtype = _float_dtype()
    step = jnp.asarray(step, dtype)
    total = step_size_up + step_size_down
    ratio = step_size_up / total
    cycle = jnp.floor(step / total) + 1.0
    x = jnp.mod(step, total) / total
    rising = x <= ratio
    # Both branches are evaluated; keep the unused one finite (ratio == 1 when step_size_down == 0).
    falling_denominator = ratio - 1.0 if ratio < 1.0 else -1.0
    scale_factor = jnp.where(rising, x / ratio, (x - 1.0) / falling_denominator)
    if mode == "triangular":
        return scale_factor
    if mode == "triangular2":  # 2^-(c - 1), exactly
        return jnp.ldexp(scale_factor, -(cycle - 1.0).astype(jnp.int32))
    # exp_range (scale_mode "iterations"): gamma^i as exp(i log gamma), with log gamma taken in float64
    # (gamma rounded to float32 first would be off by ~i * 3e-8 relatively).
    return scale_factor * jnp.exp(step * math.log(gamma))


def cyclic_schedule(
    base_lr: float,
    max_lr: float,
    step_size_up: float,
    *,
    step_size_down: float | None = None,
    mode: str = "triangular",
    gamma: float = 1.0,
) -> optax.Schedule:
    r"""Cyclical learning rate (Smith 2017), as PyTorch's ``CyclicLR``.

    With ``T = step_size_up + step_size_down`` and ``r = step_size_up / T``, at step ``i``:

    .. math::
      c = \lfloor 1 + i / T \rfloor,\quad x = 1 + i/T - c,\quad
      s = \begin{cases} x / r & x \le r \\ (x - 1)/(r - 1) & x > r \end{cases},\quad
      \eta_i = \eta_{base} + (\eta_{max} - \eta_{base})\, s\, \mathrm{scale}

    with ``scale = 1`` (``triangular``), ``1 / 2^(c - 1)`` (``triangular2``: the amplitude halves each
    cycle) or ``gamma^i`` (``exp_range``). With ``step_size_down == step_size_up`` this is Smith's
    ``x = |i / step_size - 2c + 1|``, ``eta = base + (max - base) max(0, 1 - x) scale``.

    Args:
      base_lr: the rate at the start of each cycle (the lower bound, finite, ``>= 0``).
      max_lr: the rate at the peak of the first cycle (finite, ``>= base_lr`` and ``> 0``; the
        amplitude is ``max_lr - base_lr``).
      step_size_up: steps of the rising half of a cycle (> 0; PyTorch's default is 2000).
      step_size_down: steps of the falling half (>= 0); ``None``: ``step_size_up``.
      mode: ``"triangular"``, ``"triangular2"`` or ``"exp_range"``.
      gamma: the ``exp_range`` decay per step, in ``(0, 1]`` (checked whatever the mode).

    Returns:
      ``schedule(step) -> rate``, valid for traced steps inside ``jax.jit``.

    Raises:
      ValueError: an argument out of range or of the wrong type, naming it. Every argument is used
        in Python arithmetic and must be concrete (a traced one is refused); only ``step`` may be
        traced.

    Example:
      >>> import optax
      >>> schedule = cyclic_schedule(1e-3, 1e-2, step_size_up=4)
      >>> [round(float(schedule(i)), 5) for i in (0, 2, 4, 6, 8)]
      [0.001, 0.0055, 0.01, 0.0055, 0.001]
      >>> tx = optax.sgd(schedule)

    References:
      Smith, `Cyclical Learning Rates for Training Neural Networks <https://arxiv.org/abs/1506.01186>`_,
      2017.
    """
    base_lr = _rate("base_lr", base_lr, zero=True)
    max_lr = _rate("max_lr", max_lr)
    checks.interval("base_lr", base_lr, "max_lr", max_lr)
    up, down = _check_cyclic(step_size_up, step_size_down, mode, gamma)

    def schedule(step: ArrayLike) -> jax.Array:
        return base_lr + (max_lr - base_lr) * _cyclic_scale(step, up, down, mode, gamma)

    return schedule


def cyclic_momentum_schedule(
    base_momentum: float,
    max_momentum: float,
    step_size_up: float,
    *,
    step_size_down: float | None = None,
    mode: str = "triangular",
    gamma: float = 1.0,
) -> optax.Schedule:
    r"""Momentum cycled inversely to :func:`cyclic_schedule`, as ``CyclicLR(cycle_momentum=True)``.

    .. math:: m_i = m_{max} - (m_{max} - m_{base})\, s\, \mathrm{scale}

    with ``s`` and ``scale`` those of :func:`cyclic_schedule` for the same ``step_size_up``,
    ``step_size_down``, ``mode`` and ``gamma``: momentum is ``max_momentum`` when the rate is at its base
    and ``base_momentum`` at the rate's peak. PyTorch's defaults are ``0.8`` and ``0.9``.

    Args:
      base_momentum: momentum at the rate's peak (the lower bound), in ``[0, 1)``.
      max_momentum: momentum at the start of each cycle, in ``[base_momentum, 1)``.
      step_size_up: steps of the rising half of the rate's cycle (> 0).
      step_size_down: steps of the falling half (>= 0); ``None``: ``step_size_up``.
      mode: ``"triangular"``, ``"triangular2"`` or ``"exp_range"``.
      gamma: the ``exp_range`` decay per step, in ``(0, 1]``.

    Returns:
      ``schedule(step) -> momentum``.

    Raises:
      ValueError: an argument out of range or of the wrong type, naming it (all must be concrete).

    Example:
      >>> schedule = cyclic_momentum_schedule(0.8, 0.9, step_size_up=4)
      >>> [round(float(schedule(i)), 5) for i in (0, 2, 4, 8)]
      [0.9, 0.85, 0.8, 0.9]

    References:
      Smith, `A disciplined approach to neural network hyper-parameters: Part 1
      <https://arxiv.org/abs/1803.09820>`_, 2018.
    """
    base_momentum = _momentum("base_momentum", base_momentum)
    max_momentum = _momentum("max_momentum", max_momentum)
    checks.interval("base_momentum", base_momentum, "max_momentum", max_momentum)
    up, down = _check_cyclic(step_size_up, step_size_down, mode, gamma)

    def schedule(step: ArrayLike) -> jax.Array:
        return max_momentum - (max_momentum - base_momentum) * _cyclic_scale(
            step, up, down, mode, gamma
        )

    return schedule


def _check_one_cycle(total_steps, pct_start, anneal_strategy, three_phase) -> tuple[int, float]:
    total_steps = checks.positive_int("total_steps", total_steps)
    pct_start = checks.in_unit_interval("pct_start", pct_start, closed_right=True, static=True)
    checks.one_of("anneal_strategy", anneal_strategy, ANNEAL_STRATEGIES)
    checks.boolean("three_phase", three_phase)
    return total_steps, pct_start


def _phase_ends(total_steps: int, pct_start: float, three_phase: bool) -> list[float]:
    """PyTorch's phase boundaries (floats, as ``OneCycleLR`` computes them)."""
    if three_phase:
        ends = [
            float(pct_start * total_steps) - 1,
            float(2 * pct_start * total_steps) - 2,
            float(total_steps - 1),
        ]
    else:
        ends = [float(pct_start * total_steps) - 1, float(total_steps - 1)]
    start = 0.0
    for k, end in enumerate(ends):
        if end == start:  # PyTorch divides by zero here
            raise ValueError(
                f"pct_start={pct_start!r} and total_steps={total_steps!r} give a 1cycle phase of zero "
                f"length (from step {start} to step {end}); change pct_start or total_steps."
            )
        if k > 0 and end < start:  # three phases, pct_start > ~1/2: the second ends after the cycle
            checks.fail(
                "pct_start",
                f"< (total_steps + 1) / (2 total_steps) = {(total_steps + 1) / (2 * total_steps):g} "
                f"with three_phase=True and total_steps={total_steps} (the second phase would end "
                f"after the cycle, at step {start:g})",
                pct_start,
            )
        start = end
    return ends


def _anneal(start: float, end: float, remaining: jax.Array, length: float, strategy: str):
    """Anneal from ``start`` to ``end``; ``pct = 1 - remaining / length`` of the phase.

    ``cos``: PyTorch's ``end + (start - end) / 2 * (1 + cos(pi * pct))``, evaluated as
    ``end + (start - end) * sin(pi / 2 * (1 - pct))^2`` (the same number) so that the tail near
    ``end = min_lr`` keeps its relative precision in float32. ``linear``: ``start + (end - start) * pct``
    evaluated as ``end + (start - end) * (1 - pct)``.
    """
    left = remaining / length  # 1 - pct, without cancellation near the phase's end
    if strategy == "cos":
        return end + (start - end) * jnp.square(jnp.sin(0.5 * math.pi * left))
    return end + (start - end) * left


def _one_cycle(phases: Sequence[_Phase], strategy: str) -> optax.Schedule:
    final_step = phases[-1][0]  # total_steps - 1, where the last phase ends

    def schedule(step: ArrayLike) -> jax.Array:
        # Past its end the schedule holds its final value exactly: the step is clamped to the last
        # phase's end, where ``remaining = 0`` gives the phase's end value (``min`` for the rate,
        # ``max_momentum`` for the momentum) for either strategy. PyTorch raises after
        # ``total_steps`` steps, and at ``total_steps`` itself it already evaluates the last phase
        # at ``pct > 1`` (cos rises back from its minimum, linear overshoots it, below zero for the
        # rate); jit cannot raise, so the value is held instead.
        step = jnp.minimum(jnp.asarray(step, _float_dtype()), final_step)
        values = []
        start = 0.0
        for end, first, last in phases:
            values.append(_anneal(first, last, end - step, end - start, strategy))
            start = end
        value = values[-1]
        for (end, _, _), phase_value in zip(phases[-2::-1], values[-2::-1], strict=True):
            value = jnp.where(step <= end, phase_value, value)  # the first phase with step <= end
        return value

    return schedule


def one_cycle_schedule(
    total_steps: int,
    max_lr: float,
    *,
    pct_start: float = 0.3,
    anneal_strategy: str = "cos",
    div_factor: float = 25.0,
    final_div_factor: float = 1e4,
    three_phase: bool = False,
) -> optax.Schedule:
    r"""The 1cycle learning rate (Smith & Topin 2018), as PyTorch's ``OneCycleLR``.

    With ``initial = max_lr / div_factor``, ``min = initial / final_div_factor`` and
    ``p = pct_start * total_steps``, the rate anneals over phases ``[s_k, e_k]``:

    - two phases (default, fastai's): ``initial -> max_lr`` until ``e_0 = p - 1``, then
      ``max_lr -> min`` until ``e_1 = total_steps - 1``;
    - three phases (the paper's): ``initial -> max_lr`` until ``p - 1``, ``max_lr -> initial`` until
      ``2p - 2``, then ``initial -> min`` until ``total_steps - 1``.

    Within a phase, with ``pct = (i - s_k) / (e_k - s_k)`` (``s_0 = 0``, ``s_k = e_{k-1}``):

    .. math::
      \mathrm{cos}:\ \eta_i = \eta_{end} + \tfrac{\eta_{start} - \eta_{end}}{2} (1 + \cos \pi\,
      \mathrm{pct}),\qquad \mathrm{linear}:\ \eta_i = \eta_{start} + (\eta_{end} - \eta_{start})\,
      \mathrm{pct}.

    Step ``i`` belongs to the first phase with ``i <= e_k`` (else the last). Every step from
    ``total_steps - 1`` on gives the final value ``min`` exactly, for either strategy (PyTorch raises
    after ``total_steps`` steps, and its value at ``total_steps`` already overshoots ``min``).

    Args:
      total_steps: steps of the whole cycle (a positive int).
      max_lr: the peak rate (finite, > 0).
      pct_start: fraction of the steps spent increasing the rate, in ``[0, 1]``.
      anneal_strategy: ``"cos"`` or ``"linear"``.
      div_factor: ``initial = max_lr / div_factor`` (finite, > 0).
      final_div_factor: ``min = initial / final_div_factor`` (finite, > 0).
      three_phase: use the paper's three phases instead of fastai's two (a bool).

    Returns:
      ``schedule(step) -> rate``, valid for traced steps inside ``jax.jit``.

    Raises:
      ValueError: an argument out of range or of the wrong type, naming it (all must be concrete);
        a phase of zero length (``pct_start * total_steps == 1``, where PyTorch divides by zero), or
        with ``three_phase`` a second phase ending after the cycle (``pct_start`` above about 1/2).

    Example:
      >>> schedule = one_cycle_schedule(100, 0.1)
      >>> round(float(schedule(0)), 6), round(float(schedule(29)), 6), float(schedule(99)) < 1e-6
      (0.004, 0.1, True)

    References:
      Smith, Topin, `Super-Convergence: Very Fast Training of Neural Networks Using Large Learning
      Rates <https://arxiv.org/abs/1708.07120>`_, 2018.
    """
    total_steps, pct_start = _check_one_cycle(total_steps, pct_start, anneal_strategy, three_phase)
    max_lr = _rate("max_lr", max_lr)
    div_factor = checks.positive("div_factor", div_factor, static=True)
    final_div_factor = checks.positive("final_div_factor", final_div_factor, static=True)
    initial = max_lr / div_factor
    minimum = initial / final_div_factor
    ends = _phase_ends(total_steps, pct_start, three_phase)
    if three_phase:
        values = [(initial, max_lr), (max_lr, initial), (initial, minimum)]
    else:
        values = [(initial, max_lr), (max_lr, minimum)]
    phases = [(end, a, b) for end, (a, b) in zip(ends, values, strict=True)]
    return _one_cycle(phases, anneal_strategy)


def one_cycle_momentum_schedule(
    total_steps: int,
    *,
    pct_start: float = 0.3,
    anneal_strategy: str = "cos",
    base_momentum: float = 0.85,
    max_momentum: float = 0.95,
    three_phase: bool = False,
) -> optax.Schedule:
    """Momentum cycled inversely to :func:`one_cycle_schedule`, as ``OneCycleLR(cycle_momentum=True)``.

    Same phases and annealing as the rate: two phases ``max_momentum -> base_momentum`` (while the rate
    rises) then ``base_momentum -> max_momentum``; three phases ``max -> base``, ``base -> max``, then
    constant ``max_momentum``. With Adam this is ``b1`` (PyTorch cycles ``betas[0]``). Every step from
    ``total_steps - 1`` on gives ``max_momentum`` exactly.

    Args:
      total_steps: steps of the whole cycle (a positive int).
      pct_start: fraction of the steps spent increasing the rate, in ``[0, 1]``.
      anneal_strategy: ``"cos"`` or ``"linear"``.
      base_momentum: momentum at the rate's peak, in ``[0, 1)``.
      max_momentum: momentum at the start and the end, in ``[base_momentum, 1)``.
      three_phase: the paper's three phases instead of fastai's two (a bool).

    Returns:
      ``schedule(step) -> momentum``.

    Raises:
      ValueError: as :func:`one_cycle_schedule`, and a momentum out of ``[0, 1)`` or
        ``base_momentum > max_momentum``.

    Example:
      >>> schedule = one_cycle_momentum_schedule(100)
      >>> [round(float(schedule(i)), 4) for i in (0, 29, 99)]
      [0.95, 0.85, 0.95]

    References:
      Smith, `A disciplined approach to neural network hyper-parameters: Part 1
      <https://arxiv.org/abs/1803.09820>`_, 2018.
    """
    total_steps, pct_start = _check_one_cycle(total_steps, pct_start, anneal_strategy, three_phase)
    base_momentum = _momentum("base_momentum", base_momentum)
    max_momentum = _momentum("max_momentum", max_momentum)
    checks.interval("base_momentum", base_momentum, "max_momentum", max_momentum)
    ends = _phase_ends(total_steps, pct_start, three_phase)
    if three_phase:
        values = [
            (max_momentum, base_momentum),
            (base_momentum, max_momentum),
            (max_momentum, max_momentum),
        ]
    else:
        values = [(max_momentum, base_momentum), (base_momentum, max_momentum)]
    phases = [(end, a, b) for end, (a, b) in zip(ends, values, strict=True)]
    return _one_cycle(phases, anneal_strategy)


def _in_updates_dtype(factory, **hyperparameters) -> optax.GradientTransformation:
    """``factory(**hyperparameters)`` with its float hyperparameters cast to the updates' dtype.

    ``optax.inject_hyperparams`` casts constant hyperparameters to the parameters' dtype but passes a
    schedule's float32 value through; cast here so that bfloat16 parameters keep bfloat16 updates and
    optimizer state.
    """

    def init_fn(params):
        return factory(**hyperparameters).init(params)

    def update_fn(updates, state, params=None):
        dtype = optax.tree.dtype(updates, "highest")
        cast = {
            name: jnp.asarray(value, dtype)
            if jnp.issubdtype(jnp.result_type(value), jnp.floating)
            else value
            for name, value in hyperparameters.items()
        }
        return factory(**cast).update(updates, state, params)

    return optax.GradientTransformation(init_fn, update_fn)


def _torch_sgd(learning_rate, momentum, weight_decay, nesterov):
    """PyTorch's SGD: ``d = g + wd * p``, ``buf = m * buf + d``, ``p -= lr * buf`` (or Nesterov)."""
    return optax.chain(
        optax.add_decayed_weights(weight_decay),
        optax.sgd(learning_rate, momentum=momentum, nesterov=nesterov),
    )


def _momentum_sgd(
    learning_rate: ArrayLike, momentum: ArrayLike, weight_decay: ArrayLike, nesterov: bool = False
) -> optax.GradientTransformation:
    return _in_updates_dtype(
        _torch_sgd,
        learning_rate=learning_rate,
        momentum=momentum,
        weight_decay=weight_decay,
        nesterov=nesterov,
    )


def _adam(
    learning_rate: ArrayLike, b1: ArrayLike, b2: ArrayLike, eps: ArrayLike
) -> optax.GradientTransformation:
    return _in_updates_dtype(optax.adam, learning_rate=learning_rate, b1=b1, b2=b2, eps=eps)


def _scheduled_sgd(learning_rate, momentum, weight_decay, nesterov):
    checks.nonnegative("weight_decay", weight_decay, static=True)
    checks.boolean("nesterov", nesterov)
    return optax.inject_hyperparams(_momentum_sgd, static_args=("nesterov",))(
        learning_rate=learning_rate,
        momentum=momentum,
        weight_decay=weight_decay,
        nesterov=nesterov,
    )


def _scheduled_adam(learning_rate, b1, b2, eps):
    _momentum("b2", b2)
    checks.positive("eps", eps, static=True)
    return optax.inject_hyperparams(_adam)(learning_rate=learning_rate, b1=b1, b2=b2, eps=eps)


def _cyclic_rate_and_momentum(
    base_lr,
    max_lr,
    step_size_up,
    step_size_down,
    mode,
    gamma,
    cycle_momentum,
    base_momentum,
    max_momentum,
):
    """The rate schedule and the (inversely cycled, or constant ``max_momentum``) momentum of the
    cyclic optimizer helpers."""
    rate = cyclic_schedule(
        base_lr, max_lr, step_size_up, step_size_down=step_size_down, mode=mode, gamma=gamma
    )
    return rate, _momentum_schedule(
        cycle_momentum,
        base_momentum,
        max_momentum,
        lambda: cyclic_momentum_schedule(
            base_momentum,
            max_momentum,
            step_size_up,
            step_size_down=step_size_down,
            mode=mode,
            gamma=gamma,
        ),
    )


def _momentum_schedule(cycle_momentum, base_momentum, max_momentum, make_schedule):
    """``make_schedule()`` when cycling, else the constant ``max_momentum``; both bounds are checked
    (their order only when cycling: a constant momentum may lie below the default ``base_momentum``)."""
    checks.boolean("cycle_momentum", cycle_momentum)
    _momentum("base_momentum", base_momentum)
    max_momentum = _momentum("max_momentum", max_momentum)
    return make_schedule() if cycle_momentum else max_momentum


def cyclic_sgd(
    base_lr: float,
    max_lr: float,
    step_size_up: float,
    *,
    step_size_down: float | None = None,
    mode: str = "triangular",
    gamma: float = 1.0,
    cycle_momentum: bool = True,
    base_momentum: float = 0.8,
    max_momentum: float = 0.9,
    nesterov: bool = False,
    weight_decay: float = 0.0,
) -> optax.GradientTransformation:
    """SGD with a cyclical rate and inversely cycled momentum (PyTorch's ``SGD`` + ``CyclicLR``).

    The rate is :func:`cyclic_schedule`; the momentum is :func:`cyclic_momentum_schedule` (or constant
    ``max_momentum`` when ``cycle_momentum`` is false). Both are injected with
    ``optax.inject_hyperparams``: ``state.hyperparams["learning_rate"]`` and ``["momentum"]`` hold the
    values of the last update. ``weight_decay`` is PyTorch's coupled L2 term (added to the gradient).

    Args:
      base_lr, max_lr, step_size_up, step_size_down, mode, gamma: see :func:`cyclic_schedule`.
      cycle_momentum: cycle the momentum inversely to the rate.
      base_momentum, max_momentum: see :func:`cyclic_momentum_schedule` (PyTorch's defaults).
      nesterov: Nesterov momentum.
      weight_decay: coefficient of ``wd * params`` added to the gradient (``>= 0``).

    Returns:
      An ``optax.GradientTransformationExtraArgs``.

    Raises:
      ValueError: an argument out of range or of the wrong type, naming it: those of the schedules,
        ``base_momentum``/``max_momentum`` outside ``[0, 1)`` (their order is checked when cycling),
        ``weight_decay`` negative or not finite, ``nesterov``/``cycle_momentum`` not bools. Every
        argument must be concrete: the helper injects the scheduled values itself, so it is not
        itself wrapped in ``optax.inject_hyperparams``.

    Example:
      >>> import jax.numpy as jnp
      >>> tx = cyclic_sgd(1e-3, 1e-2, step_size_up=100)
      >>> state = tx.init({"w": jnp.zeros(3)})
      >>> round(float(state.hyperparams["momentum"]), 6)
      0.9

    References:
      Smith, `Cyclical Learning Rates for Training Neural Networks <https://arxiv.org/abs/1506.01186>`_,
      2017.
    """
    rate, momentum = _cyclic_rate_and_momentum(
        base_lr,
        max_lr,
        step_size_up,
        step_size_down,
        mode,
        gamma,
        cycle_momentum,
        base_momentum,
        max_momentum,
    )
    return _scheduled_sgd(rate, momentum, weight_decay, nesterov)


def cyclic_adam(
    base_lr: float,
    max_lr: float,
    step_size_up: float,
    *,
    step_size_down: float | None = None,
    mode: str = "triangular",
    gamma: float = 1.0,
    cycle_momentum: bool = True,
    base_momentum: float = 0.8,
    max_momentum: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
) -> optax.GradientTransformation:
    """Adam with a cyclical rate and inversely cycled ``b1`` (PyTorch's ``Adam`` + ``CyclicLR``).

    As :func:`cyclic_sgd`, with the momentum schedule driving Adam's ``b1``
    (``state.hyperparams["b1"]``); without ``cycle_momentum``, ``b1 = max_momentum``.

    Args:
      base_lr, max_lr, step_size_up, step_size_down, mode, gamma: see :func:`cyclic_schedule`.
      cycle_momentum: cycle ``b1`` inversely to the rate.
      base_momentum, max_momentum: the bounds of ``b1``.
      b2, eps: Adam's (``b2`` in ``[0, 1)``, ``eps > 0``).

    Returns:
      An ``optax.GradientTransformationExtraArgs``.

    Raises:
      ValueError: an argument out of range or of the wrong type, naming it: those of the schedules,
        ``base_momentum``/``max_momentum`` (``b1``) or ``b2`` outside ``[0, 1)``, ``eps`` not a finite
        number > 0, ``cycle_momentum`` not a bool. Every argument must be concrete (the helper
        injects the scheduled values itself).

    Example:
      >>> import jax.numpy as jnp
      >>> tx = cyclic_adam(1e-4, 1e-3, step_size_up=100)
      >>> round(float(tx.init({"w": jnp.zeros(3)}).hyperparams["b1"]), 6)
      0.9

    References:
      Smith, `Cyclical Learning Rates for Training Neural Networks <https://arxiv.org/abs/1506.01186>`_,
      2017.
    """
    rate, b1 = _cyclic_rate_and_momentum(
        base_lr,
        max_lr,
        step_size_up,
        step_size_down,
        mode,
        gamma,
        cycle_momentum,
        base_momentum,
        max_momentum,
    )
    return _scheduled_adam(rate, b1, b2, eps)


def one_cycle_sgd(
    total_steps: int,
    max_lr: float,
    *,
    pct_start: float = 0.3,
    anneal_strategy: str = "cos",
    div_factor: float = 25.0,
    final_div_factor: float = 1e4,
    three_phase: bool = False,
    cycle_momentum: bool = True,
    base_momentum: float = 0.85,
    max_momentum: float = 0.95,
    nesterov: bool = False,
    weight_decay: float = 0.0,
) -> optax.GradientTransformation:
    """SGD with the 1cycle rate and inversely cycled momentum (PyTorch's ``SGD`` + ``OneCycleLR``).

    The rate is :func:`one_cycle_schedule`, the momentum :func:`one_cycle_momentum_schedule` (constant
    ``max_momentum`` without ``cycle_momentum``), both injected with ``optax.inject_hyperparams``
    (``state.hyperparams["learning_rate"]``, ``["momentum"]``). ``weight_decay`` is PyTorch's coupled L2.

    Args:
      total_steps, max_lr, pct_start, anneal_strategy, div_factor, final_div_factor, three_phase: see
        :func:`one_cycle_schedule`.
      cycle_momentum: cycle the momentum inversely to the rate.
      base_momentum, max_momentum: see :func:`one_cycle_momentum_schedule`.
      nesterov: Nesterov momentum.
      weight_decay: coefficient of ``wd * params`` added to the gradient (``>= 0``).

    Returns:
      An ``optax.GradientTransformationExtraArgs``.

    Raises:
      ValueError: an argument out of range or of the wrong type, naming it: those of the schedules,
        ``base_momentum``/``max_momentum`` outside ``[0, 1)`` (their order is checked when cycling),
        ``weight_decay`` negative or not finite, ``nesterov``/``cycle_momentum`` not bools. Every
        argument must be concrete: the helper injects the scheduled values itself, so it is not
        itself wrapped in ``optax.inject_hyperparams``.

    Example:
      >>> import jax.numpy as jnp
      >>> tx = one_cycle_sgd(1000, 0.1)
      >>> hyperparams = tx.init({"w": jnp.zeros(3)}).hyperparams
      >>> round(float(hyperparams["learning_rate"]), 6), round(float(hyperparams["momentum"]), 6)
      (0.004, 0.95)

    References:
      Smith, Topin, `Super-Convergence: Very Fast Training of Neural Networks Using Large Learning
      Rates <https://arxiv.org/abs/1708.07120>`_, 2018.
    """
    common = dict(pct_start=pct_start, anneal_strategy=anneal_strategy, three_phase=three_phase)
    rate = one_cycle_schedule(
        total_steps, max_lr, div_factor=div_factor, final_div_factor=final_div_factor, **common
    )
    momentum = _momentum_schedule(
        cycle_momentum,
        base_momentum,
        max_momentum,
        lambda: one_cycle_momentum_schedule(
            total_steps, base_momentum=base_momentum, max_momentum=max_momentum, **common
        ),
    )
    return _scheduled_sgd(rate, momentum, weight_decay, nesterov)


def one_cycle_adam(
    total_steps: int,
    max_lr: float,
    *,
    pct_start: float = 0.3,
    anneal_strategy: str = "cos",
    div_factor: float = 25.0,
    final_div_factor: float = 1e4,
    three_phase: bool = False,
    cycle_momentum: bool = True,
    base_momentum: float = 0.85,
    max_momentum: float = 0.95,
    b2: float = 0.999,
    eps: float = 1e-8,
) -> optax.GradientTransformation:
    """Adam with the 1cycle rate and inversely cycled ``b1`` (PyTorch's ``Adam`` + ``OneCycleLR``).

    As :func:`one_cycle_sgd`, with the momentum schedule driving Adam's ``b1``
    (``state.hyperparams["b1"]``); PyTorch's bias correction uses the current ``beta1`` too.

    Args:
      total_steps, max_lr, pct_start, anneal_strategy, div_factor, final_div_factor, three_phase: see
        :func:`one_cycle_schedule`.
      cycle_momentum: cycle ``b1`` inversely to the rate.
      base_momentum, max_momentum: the bounds of ``b1``.
      b2, eps: Adam's (``b2`` in ``[0, 1)``, ``eps > 0``).

    Returns:
      An ``optax.GradientTransformationExtraArgs``.

    Raises:
      ValueError: an argument out of range or of the wrong type, naming it: those of the schedules,
        ``base_momentum``/``max_momentum`` (``b1``) or ``b2`` outside ``[0, 1)``, ``eps`` not a finite
        number > 0, ``cycle_momentum`` not a bool. Every argument must be concrete (the helper
        injects the scheduled values itself).

    Example:
      >>> import jax.numpy as jnp
      >>> tx = one_cycle_adam(1000, 1e-3)
      >>> round(float(tx.init({"w": jnp.zeros(3)}).hyperparams["b1"]), 6)
      0.95

    References:
      Smith, Topin, `Super-Convergence: Very Fast Training of Neural Networks Using Large Learning
      Rates <https://arxiv.org/abs/1708.07120>`_, 2018.
    """
    common = dict(pct_start=pct_start, anneal_strategy=anneal_strategy, three_phase=three_phase)
    rate = one_cycle_schedule(
        total_steps, max_lr, div_factor=div_factor, final_div_factor=final_div_factor, **common
    )
    b1 = _momentum_schedule(
        cycle_momentum,
        base_momentum,
        max_momentum,
        lambda: one_cycle_momentum_schedule(
            total_steps, base_momentum=base_momentum, max_momentum=max_momentum, **common
        ),
    )
    return _scheduled_adam(rate, b1, b2, eps)
