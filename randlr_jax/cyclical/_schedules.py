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
  Morris, an article on the LR range test, cyclical rates and 1cycle (project seed 003).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import optax
from jax.typing import ArrayLike

CYCLIC_MODES = ("triangular", "triangular2", "exp_range")
ANNEAL_STRATEGIES = ("cos", "linear")

# A phase of 1cycle: ``(end_step, start_value, end_value)``; it starts where the previous one ends
# (the first at step 0), as PyTorch's ``OneCycleLR._schedule_phases``.
_Phase = tuple[float, float, float]


def _float_dtype() -> jnp.dtype:
    return jnp.result_type(float)  # float32, or float64 under jax_enable_x64


def _check_finite(name: str, value: object, *, positive: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}.")
    if positive and not value > 0:
        raise ValueError(f"{name} must be > 0, got {value!r}.")
    return float(value)


def _check_cyclic(step_size_up, step_size_down, mode, gamma) -> tuple[float, float]:
    up = _check_finite("step_size_up", step_size_up, positive=True)
    down = up if step_size_down is None else _check_finite("step_size_down", step_size_down)
    if down < 0:
        raise ValueError(f"step_size_down must be >= 0 (or None), got {step_size_down!r}.")
    if mode not in CYCLIC_MODES:
        raise ValueError(f"mode must be one of {CYCLIC_MODES}, got {mode!r}.")
    _check_finite("gamma", gamma, positive=True)
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
      base_lr: the rate at the start of each cycle (the lower bound).
      max_lr: the rate at the peak of the first cycle (the amplitude is ``max_lr - base_lr``).
      step_size_up: steps of the rising half of a cycle (> 0; PyTorch's default is 2000).
      step_size_down: steps of the falling half (>= 0); ``None``: ``step_size_up``.
      mode: ``"triangular"``, ``"triangular2"`` or ``"exp_range"``.
      gamma: the ``exp_range`` decay per step (> 0).

    Returns:
      ``schedule(step) -> rate``, valid for traced steps inside ``jax.jit``.

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
    base_lr = _check_finite("base_lr", base_lr)
    max_lr = _check_finite("max_lr", max_lr)
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
      base_momentum: momentum at the rate's peak (the lower bound).
      max_momentum: momentum at the start of each cycle.
      step_size_up: steps of the rising half of the rate's cycle (> 0).
      step_size_down: steps of the falling half (>= 0); ``None``: ``step_size_up``.
      mode: ``"triangular"``, ``"triangular2"`` or ``"exp_range"``.
      gamma: the ``exp_range`` decay per step (> 0).

    Returns:
      ``schedule(step) -> momentum``.

    Example:
      >>> schedule = cyclic_momentum_schedule(0.8, 0.9, step_size_up=4)
      >>> [round(float(schedule(i)), 5) for i in (0, 2, 4, 8)]
      [0.9, 0.85, 0.8, 0.9]

    References:
      Smith, `A disciplined approach to neural network hyper-parameters: Part 1
      <https://arxiv.org/abs/1803.09820>`_, 2018.
    """
    base_momentum = _check_finite("base_momentum", base_momentum)
    max_momentum = _check_finite("max_momentum", max_momentum)
    up, down = _check_cyclic(step_size_up, step_size_down, mode, gamma)

    def schedule(step: ArrayLike) -> jax.Array:
        return max_momentum - (max_momentum - base_momentum) * _cyclic_scale(
            step, up, down, mode, gamma
        )

    return schedule


def _check_one_cycle(total_steps, pct_start, anneal_strategy) -> None:
    if isinstance(total_steps, bool) or not isinstance(total_steps, int) or total_steps < 1:
        raise ValueError(f"total_steps must be a positive integer, got {total_steps!r}.")
    if (
        isinstance(pct_start, bool)
        or not isinstance(pct_start, (int, float))
        or not 0.0 <= pct_start <= 1.0
    ):
        raise ValueError(f"pct_start must be a number in [0, 1], got {pct_start!r}.")
    if anneal_strategy not in ANNEAL_STRATEGIES:
        raise ValueError(
            f"anneal_strategy must be one of {ANNEAL_STRATEGIES}, got {anneal_strategy!r}."
        )


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
    for end in ends:
        if end == start:  # PyTorch divides by zero here
            raise ValueError(
                f"pct_start={pct_start!r} and total_steps={total_steps!r} give a 1cycle phase of zero "
                f"length (from step {start} to step {end}); change pct_start or total_steps."
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


def _one_cycle(total_steps: int, phases: Sequence[_Phase], strategy: str) -> optax.Schedule:
    def schedule(step: ArrayLike) -> jax.Array:
        # PyTorch raises past ``total_steps``; hold the value there instead (jit cannot raise).
        step = jnp.minimum(jnp.asarray(step, _float_dtype()), float(total_steps))
        values = []
        start = 0.0
        for end, first, last in phases:
            # A phase's formula is also used past its end (the last phase at ``total_steps``), so
            # ``remaining`` may be negative there, as PyTorch's ``pct > 1``.
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

    Step ``i`` belongs to the first phase with ``i <= e_k`` (else the last). PyTorch raises after
    ``total_steps`` steps; here the value at ``total_steps`` is held.

    Args:
      total_steps: steps of the whole cycle (a positive int).
      max_lr: the peak rate.
      pct_start: fraction of the steps spent increasing the rate, in ``[0, 1]``.
      anneal_strategy: ``"cos"`` or ``"linear"``.
      div_factor: ``initial = max_lr / div_factor``.
      final_div_factor: ``min = initial / final_div_factor``.
      three_phase: use the paper's three phases instead of fastai's two.

    Returns:
      ``schedule(step) -> rate``, valid for traced steps inside ``jax.jit``.

    Raises:
      ValueError: invalid arguments, or a phase of zero length (``pct_start * total_steps == 1``,
        where PyTorch divides by zero).

    Example:
      >>> schedule = one_cycle_schedule(100, 0.1)
      >>> round(float(schedule(0)), 6), round(float(schedule(29)), 6), float(schedule(99)) < 1e-6
      (0.004, 0.1, True)

    References:
      Smith, Topin, `Super-Convergence: Very Fast Training of Neural Networks Using Large Learning
      Rates <https://arxiv.org/abs/1708.07120>`_, 2018.
    """
    _check_one_cycle(total_steps, pct_start, anneal_strategy)
    max_lr = _check_finite("max_lr", max_lr)
    div_factor = _check_finite("div_factor", div_factor, positive=True)
    final_div_factor = _check_finite("final_div_factor", final_div_factor, positive=True)
    initial = max_lr / div_factor
    minimum = initial / final_div_factor
    ends = _phase_ends(total_steps, float(pct_start), three_phase)
    if three_phase:
        values = [(initial, max_lr), (max_lr, initial), (initial, minimum)]
    else:
        values = [(initial, max_lr), (max_lr, minimum)]
    phases = [(end, a, b) for end, (a, b) in zip(ends, values, strict=True)]
    return _one_cycle(total_steps, phases, anneal_strategy)


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
    constant ``max_momentum``. With Adam this is ``b1`` (PyTorch cycles ``betas[0]``).

    Args:
      total_steps: steps of the whole cycle (a positive int).
      pct_start: fraction of the steps spent increasing the rate, in ``[0, 1]``.
      anneal_strategy: ``"cos"`` or ``"linear"``.
      base_momentum: momentum at the rate's peak.
      max_momentum: momentum at the start and the end.
      three_phase: the paper's three phases instead of fastai's two.

    Returns:
      ``schedule(step) -> momentum``.

    Example:
      >>> schedule = one_cycle_momentum_schedule(100)
      >>> [round(float(schedule(i)), 4) for i in (0, 29, 99)]
      [0.95, 0.85, 0.95]

    References:
      Smith, `A disciplined approach to neural network hyper-parameters: Part 1
      <https://arxiv.org/abs/1803.09820>`_, 2018.
    """
    _check_one_cycle(total_steps, pct_start, anneal_strategy)
    base_momentum = _check_finite("base_momentum", base_momentum)
    max_momentum = _check_finite("max_momentum", max_momentum)
    ends = _phase_ends(total_steps, float(pct_start), three_phase)
    if three_phase:
        values = [
            (max_momentum, base_momentum),
            (base_momentum, max_momentum),
            (max_momentum, max_momentum),
        ]
    else:
        values = [(max_momentum, base_momentum), (base_momentum, max_momentum)]
    phases = [(end, a, b) for end, (a, b) in zip(ends, values, strict=True)]
    return _one_cycle(total_steps, phases, anneal_strategy)


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
    _check_finite("weight_decay", weight_decay)
    return optax.inject_hyperparams(_momentum_sgd, static_args=("nesterov",))(
        learning_rate=learning_rate,
        momentum=momentum,
        weight_decay=weight_decay,
        nesterov=nesterov,
    )


def _scheduled_adam(learning_rate, b1, b2, eps):
    _check_finite("b2", b2)
    _check_finite("eps", eps, positive=True)
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
    if not cycle_momentum:
        return rate, _check_finite("max_momentum", max_momentum)
    momentum = cyclic_momentum_schedule(
        base_momentum,
        max_momentum,
        step_size_up,
        step_size_down=step_size_down,
        mode=mode,
        gamma=gamma,
    )
    return rate, momentum


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
      weight_decay: coefficient of ``wd * params`` added to the gradient.

    Returns:
      An ``optax.GradientTransformationExtraArgs``.

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
      b2, eps: Adam's.

    Returns:
      An ``optax.GradientTransformationExtraArgs``.

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
      weight_decay: coefficient of ``wd * params`` added to the gradient.

    Returns:
      An ``optax.GradientTransformationExtraArgs``.

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
    momentum = (
        one_cycle_momentum_schedule(
            total_steps, base_momentum=base_momentum, max_momentum=max_momentum, **common
        )
        if cycle_momentum
        else _check_finite("max_momentum", max_momentum)
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
      b2, eps: Adam's.

    Returns:
      An ``optax.GradientTransformationExtraArgs``.

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
    b1 = (
        one_cycle_momentum_schedule(
            total_steps, base_momentum=base_momentum, max_momentum=max_momentum, **common
        )
        if cycle_momentum
        else _check_finite("max_momentum", max_momentum)
    )
    return _scheduled_adam(rate, b1, b2, eps)
