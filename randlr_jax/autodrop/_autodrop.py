"""AutoDrop: drop the learning rate when the angular velocity of the parameters saturates.

For a fixed learning rate, the angle between two consecutive per-period displacements of the parameters
(the *angular velocity*) first grows and then saturates; AutoDrop drops the rate at saturation, after a
delay during which it averages the parameters (the paper's Algorithm 1, spelled out in :func:`autodrop`).
The whole state machine lives in the state of one Optax transformation that scales the updates of any base
optimizer.

Where the paper is ambiguous or inconsistent, the choices made here (each stated again where it is
implemented):

* The text calls the average of the drop phase "exponential"; Algorithm 1 weights the parameters at the
  end of the phase's periods ``k = 1 .. n_d + 1`` linearly, by ``k`` (the triggering period is ``k = 1``).
  We follow the algorithm.
* The drop phase's weighted average is normalised by the sum of its weights, ``sum_{k=1}^{n_d+1} k``.
  The paper's Algorithm 1 multiplies by ``2 / ((n_d + 1) n_d)``, which does not make the weights
  ``1 .. n_d + 1`` sum to one and would scale the parameters by ``(n_d + 2) / n_d`` at every drop.
* The drop condition is not tested again while a drop phase runs: as printed, Algorithm 1 re-tests it
  during the delay, which would restart the phase (and its average) on every saturated period.
* The angle is computed in a form that is accurate in float32 near 0° and 180° (:func:`angle_degrees`);
  it equals the paper's ``arccos`` formula in exact arithmetic.
* The paper's recommended defaults are the defaults: ``alpha_min = 1e-4``, ``theta_0 = 0.01°``,
  ``theta_max = 1°``, ``n_d = 20`` periods; ``rho`` should be the drop factor of the step schedule being
  replaced (default ``0.2``).
* Algorithm 2 (the variant the paper analyses: drop whenever the finite-difference derivative of the
  angular velocity falls below ``tau``) is offered as ``criterion="derivative"``.

References:
  Teng, Wang, Choromanska, `AutoDrop: Training Deep Learning Models with Automatic Learning Rate Drop
  <https://arxiv.org/abs/2111.15317>`_, 2021. Algorithm, section and figure numbers here are those of the
  version submitted for double-blind review (anonymous authors).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import chex
import jax
import jax.numpy as jnp
import optax

from randlr_jax import _checks as checks

CRITERIA = ("change", "derivative")

_TINY = 1e-30  # below any float32 norm of a non-zero displacement worth measuring


def _sum_over_tree(fn, *trees) -> jax.Array:
    """``sum(fn(*leaves))`` over the leaves of ``trees``, accumulated in float32."""
    terms = [jnp.sum(fn(*leaves)) for leaves in zip(*map(jax.tree.leaves, trees), strict=True)]
    return sum(terms, jnp.zeros((), jnp.float32))


def _f32(x: jax.Array) -> jax.Array:
    return jnp.asarray(x).astype(jnp.promote_types(jnp.asarray(x).dtype, jnp.float32))


def angle_degrees(u: Any, v: Any) -> jax.Array:
    """The angle, in degrees, between two parameter pytrees seen as single vectors.

    .. math::

        \\angle(u, v) = \\frac{180}{\\pi} \\arccos \\frac{\\langle u, v \\rangle}{\\|u\\| \\|v\\|}
                     = \\frac{360}{\\pi} \\mathrm{atan2}(\\|\\hat u - \\hat v\\|, \\|\\hat u + \\hat v\\|),
        \\qquad \\hat u = u / \\|u\\|,

    with the inner product and norms taken over all leaves of the trees. The second form (Kahan's) is the
    one computed: it equals the first in exact arithmetic and stays accurate in float32 near 0° and 180°,
    where ``arccos`` of a rounded cosine is off by up to ~0.03°, more than AutoDrop's threshold of 0.01°.
    A zero vector has no direction: its unit vector is taken as 0, which gives 90°, the value of the
    AutoDrop paper's ``arccos(<u, v> / (|u||v| + eps))`` (a zero cosine).

    Args:
      u: a pytree of arrays.
      v: a pytree with the structure and shapes of ``u``.

    Returns:
      A float32 scalar in ``[0, 180]``.

    Example:
      >>> float(angle_degrees({"w": jnp.array([1.0, 0.0])}, {"w": jnp.array([0.0, 2.0])}))
      90.0

    References:
      Kahan, `How futile are mindless assessments of roundoff in floating-point computation?
      <https://people.eecs.berkeley.edu/~wkahan/Mindless.pdf>`_, 2006 (Section 12).
    """
    norm_u = jnp.sqrt(_sum_over_tree(lambda a: jnp.square(_f32(a)), u))
    norm_v = jnp.sqrt(_sum_over_tree(lambda b: jnp.square(_f32(b)), v))
    inv_u = jnp.where(norm_u > _TINY, 1.0 / jnp.maximum(norm_u, _TINY), 0.0)
    inv_v = jnp.where(norm_v > _TINY, 1.0 / jnp.maximum(norm_v, _TINY), 0.0)
    difference = _sum_over_tree(lambda a, b: jnp.square(_f32(a) * inv_u - _f32(b) * inv_v), u, v)
    total = _sum_over_tree(lambda a, b: jnp.square(_f32(a) * inv_u + _f32(b) * inv_v), u, v)
    angle = jnp.degrees(2.0 * jnp.arctan2(jnp.sqrt(difference), jnp.sqrt(total)))
    return jnp.where((norm_u > _TINY) & (norm_v > _TINY), angle, 90.0).astype(jnp.float32)


class AutoDropState(NamedTuple):
    """State of :func:`autodrop`: Algorithm 1's variables, readable for logging.

    ``learning_rate``, ``angles`` (or the properties ``angle`` and ``angular_velocity``), ``threshold``,
    ``drop_phase`` and ``num_drops`` are the quantities worth logging; :func:`get_autodrop_state` finds this
    state inside a chained optimizer state.
    """

    count: chex.Array  # () int32; steps taken
    period: chex.Array  # () int32; periods completed (``t`` of Algorithm 1)
    learning_rate: chex.Array  # () float32; current absolute rate alpha
    scale: chex.Array  # () float32; alpha / alpha_0, the factor applied to the incoming updates
    threshold: chex.Array  # () float32; theta (or tau, criterion "derivative"), degrees per period
    angles: chex.Array  # (window + 1,) float32; latest angles omega_t, omega_{t-1}, ... in degrees
    drop_phase: chex.Array  # () int32; k, periods into the running drop phase (0: no phase)
    num_drops: chex.Array  # () int32; drops done so far
    period_start: (
        Any  # params-shaped, float32 (at least); parameters at the start of the period (y)
    )
    displacement: Any  # params-shaped, float32 (at least); s_{t-1}, displacement of the last period
    average: (
        Any  # params-shaped, float32 (at least); weighted average of the drop phase (None if n_d=0)
    )

    @property
    def angle(self) -> jax.Array:
        """The latest angle omega_t (degrees), i.e. the angular velocity per period."""
        return self.angles[..., 0]

    @property
    def angular_velocity(self) -> jax.Array:
        """The angle averaged over the window (equal to :attr:`angle` for ``window=1``)."""
        return jnp.mean(self.angles[..., :-1], axis=-1)


def _check_args(
    learning_rate,
    drop_factor,
    min_learning_rate,
    threshold,
    max_threshold,
    drop_delay,
    steps_per_period,
    window,
    criterion,
) -> None:
    # The numeric hyperparameters may be traced under ``optax.inject_hyperparams``: checked when
    # concrete (Python or numpy numbers, concrete arrays), let through when traced. The structural
    # ones (periods, delay, window, criterion) must be concrete.
    checks.positive("learning_rate", learning_rate)
    checks.in_unit_interval("drop_factor", drop_factor, closed_left=False)
    checks.nonnegative("min_learning_rate", min_learning_rate)
    checks.interval("min_learning_rate", min_learning_rate, "learning_rate", learning_rate)
    checks.nonnegative("threshold", threshold)
    checks.nonnegative("max_threshold", max_threshold)
    checks.interval("threshold", threshold, "max_threshold", max_threshold)
    checks.nonnegative_int("drop_delay", drop_delay)
    if steps_per_period is not None:
        checks.positive_int("steps_per_period", steps_per_period)
    checks.positive_int("window", window)
    checks.one_of("criterion", criterion, CRITERIA)


def autodrop(
    learning_rate: chex.Numeric,
    drop_factor: chex.Numeric = 0.2,
    *,
    steps_per_period: int | None = None,
    min_learning_rate: chex.Numeric = 1e-4,
    threshold: chex.Numeric = 0.01,
    max_threshold: chex.Numeric = 1.0,
    drop_delay: int = 20,
    window: int = 1,
    criterion: str = "change",
) -> optax.GradientTransformationExtraArgs:
    """AutoDrop: scale a base optimizer's updates by a learning-rate factor that drops automatically.

    Chain it last, after a base optimizer that uses the initial rate ``alpha_0 = learning_rate``:
    ``optax.chain(optax.sgd(alpha_0, momentum=0.9), autodrop(alpha_0))`` or
    ``optax.chain(optax.adam(alpha_0), autodrop(alpha_0))``. It multiplies the incoming updates by
    ``alpha / alpha_0`` and runs the AutoDrop paper's Algorithm 1 at the end of each period
    (``steps_per_period`` steps, or when ``tx.update(..., end_of_period=True)``). At the end of period ``t``,
    with ``x`` the parameters after this step's update and ``y`` those at the period's start:

    .. math::

        s_t = x - y, \\qquad \\omega_t = \\angle(s_t, s_{t-1}) \\ (s_0 = 0), \\qquad
        \\bar\\omega_t = \\tfrac{1}{W} \\textstyle\\sum_{j<W} \\omega_{t-j}, \\qquad
        \\Delta_t = \\bar\\omega_t - \\bar\\omega_{t-1}.

    Once ``W + 1`` angles ``omega_2, ...`` exist, and while no drop phase runs, a drop phase starts if
    ``|Delta_t| < theta`` (``criterion="change"``, Algorithm 1) or ``Delta_t < tau``
    (``criterion="derivative"``, Algorithm 2: the finite-difference derivative of the angular velocity has
    fallen to ``tau``; ``threshold`` holds ``tau``). In the phase, at the end of its ``k``-th period
    (``k = 1`` is the triggering one) the parameters enter the weighted average
    ``z_k = sum_{j<=k} j x_j / sum_{j<=k} j``; at ``k = n_d + 1`` the parameters are set to ``z_k`` (through
    the emitted update, which replaces that step's update), then

    .. math::

        \\alpha \\leftarrow \\max(\\underline\\alpha, \\rho\\alpha), \\qquad
        \\theta \\leftarrow \\min(\\overline\\theta, \\theta / \\rho),

    and the phase ends. Two choices where the paper's Algorithm 1 cannot be followed as printed: the drop
    condition is not re-tested during a phase (re-testing it would restart the phase on every saturated
    period of the delay), and the average is normalised by ``sum_j j`` (the paper's ``2 / ((n_d + 1) n_d)``
    does not make the weights sum to one and would inflate the parameters by ``(n_d + 2) / n_d``).
    ``window=20, steps_per_period=1, drop_delay=0, drop_factor=0.5, threshold=max_threshold=0.01`` is the
    simple per-iteration rule of the paper's noisy-quadratic experiment (its Fig. 3: halve the rate when the
    change of the 20-iteration mean angle between consecutive iterations is below ``0.01°``, from
    ``alpha_0 = 0.06`` down to ``min_learning_rate = 0.001``).

    Memory: three parameter-sized buffers (float32, or the parameters' dtype if wider): the parameters at
    the period's start, the last displacement ``s_{t-1}`` and the running weighted average ``z``; two when
    ``drop_delay=0`` (no average to keep). This is the minimum for Algorithm 1: ``s_t`` needs ``y``,
    ``omega_t`` needs ``s_{t-1}``, and the average must persist across the ``n_d`` periods of the phase
    while both are still in use. Between period ends a step costs one multiplication of the updates; the
    rest runs under ``lax.cond`` once per period.

    Args:
      learning_rate: ``alpha_0``, the base optimizer's (initial) rate; only used to report the absolute rate
        ``state.learning_rate`` and to apply ``min_learning_rate``.
      drop_factor: ``rho`` in ``(0, 1)``; each drop multiplies the rate by it (the paper: the drop factor
        of the step schedule AutoDrop replaces, e.g. 0.2).
      steps_per_period: steps in one period (one epoch in the paper). ``None``: the period ends when
        ``update`` is called with ``end_of_period=True`` (a keyword argument, which also overrides the step
        count when given).
      min_learning_rate: ``alpha_min``, the rate is never dropped below it; ``<= learning_rate`` (paper's
        default ``1e-4``).
      threshold: ``theta_0`` in degrees per period (``tau`` for ``criterion="derivative"``), ``>= 0``
        (paper's default ``0.01``).
      max_threshold: ``theta_max``, ``>= threshold``; the threshold grows by ``1 / rho`` per drop up to it
        (set it to ``threshold`` for a fixed threshold; paper's default ``1``).
      drop_delay: ``n_d``, periods between the trigger and the drop, during which parameters are averaged
        (paper's default ``20``).
      window: ``W``, the angular velocity is averaged over the last ``W`` angles (1 in Algorithm 1).
      criterion: ``"change"`` (Algorithm 1) or ``"derivative"`` (Algorithm 2).

    The numeric hyperparameters (``learning_rate``, ``drop_factor``, ``min_learning_rate``, ``threshold``,
    ``max_threshold``) may be driven by ``optax.inject_hyperparams`` with
    ``static_args=("steps_per_period", "drop_delay", "window")`` (these fix the state's structure; so
    does ``criterion``, a string inject_hyperparams passes through as it is). Every argument is checked
    when concrete; a traced (injected, jitted) hyperparameter is not.

    Raises:
      ValueError: an argument out of range or of the wrong type, naming it: ``learning_rate`` not a
        finite number > 0, ``drop_factor`` outside ``(0, 1)``, ``min_learning_rate``, ``threshold`` or
        ``max_threshold`` negative or not finite, ``min_learning_rate > learning_rate``,
        ``threshold > max_threshold``, ``drop_delay`` not an integer >= 0, ``steps_per_period`` (unless
        ``None``) or ``window`` not a positive integer, an unknown ``criterion``.

    Returns:
      An ``optax.GradientTransformationExtraArgs`` whose ``update(updates, state, params, *,
      end_of_period=None, **extra_args)`` needs ``params``; other extra arguments (``value=``) are ignored.

    Example:
      >>> params = {"w": jnp.ones(3)}
      >>> tx = optax.chain(optax.sgd(0.1, momentum=0.9), autodrop(0.1, 0.2, steps_per_period=390))
      >>> state = tx.init(params)
      >>> updates, state = jax.jit(tx.update)({"w": jnp.full(3, 0.5)}, state, params)
      >>> get_autodrop_state(state).learning_rate  # the current rate, for logging
      Array(0.1, dtype=float32)

    References:
      Teng, Wang, Choromanska, `AutoDrop: Training Deep Learning Models with Automatic Learning Rate Drop
      <https://arxiv.org/abs/2111.15317>`_, 2021: Algorithm 1, Algorithm 2 and Section 3 (numbered as in
      the version submitted for double-blind review).
    """
    _check_args(
        learning_rate,
        drop_factor,
        min_learning_rate,
        threshold,
        max_threshold,
        drop_delay,
        steps_per_period,
        window,
        criterion,
    )

    def buffer(params, copy: bool):
        # Fresh arrays: a training loop may donate the state that ``init`` returns.
        def one(p):
            dtype = jnp.promote_types(p.dtype, jnp.float32)
            return jnp.array(p, dtype=dtype, copy=True) if copy else jnp.zeros(p.shape, dtype)

        return jax.tree.map(one, params)

    def init_fn(params) -> AutoDropState:
        alpha_0 = jnp.asarray(learning_rate, jnp.float32)
        return AutoDropState(
            count=jnp.zeros((), jnp.int32),
            period=jnp.zeros((), jnp.int32),
            learning_rate=alpha_0,
            scale=jnp.ones((), jnp.float32),
            threshold=jnp.asarray(threshold, jnp.float32),
            angles=jnp.zeros((window + 1,), jnp.float32),
            drop_phase=jnp.zeros((), jnp.int32),
            num_drops=jnp.zeros((), jnp.int32),
            period_start=buffer(params, copy=True),
            displacement=buffer(params, copy=False),
            average=buffer(params, copy=False) if drop_delay > 0 else None,
        )

    def end_period(updates, state: AutoDropState, params) -> tuple[Any, AutoDropState]:
        """Algorithm 1's body at the end of a period (``updates`` already scaled)."""
        x_end = jax.tree.map(
            lambda p, u, b: p.astype(b.dtype) + u.astype(b.dtype),
            params,
            updates,
            state.displacement,
        )
        displacement = jax.tree.map(jnp.subtract, x_end, state.period_start)
        angle = angle_degrees(displacement, state.displacement)
        angles = jnp.concatenate([angle[None], state.angles[:-1]])
        period = optax.safe_increment(state.period)
        # omega_1 compares with s_0 = 0; the test needs W + 1 angles omega_2, ... (t > 2 for W = 1).
        ready = period >= window + 2
        change = jnp.mean(angles[:-1]) - jnp.mean(angles[1:])
        if criterion == "change":
            saturated = jnp.abs(change) < state.threshold
        else:
            saturated = change < state.threshold
        trigger = ready & (state.drop_phase == 0) & saturated
        phase = jnp.where(trigger, 1, jnp.where(state.drop_phase > 0, state.drop_phase + 1, 0))
        phase = phase.astype(jnp.int32)
        finish = (phase > 0) & (phase > drop_delay)
        new_x = x_end
        average = state.average
        if drop_delay > 0:
            # Running form of sum_j j x_j / sum_j j: the weight of x_k in z_k is k / (k(k+1)/2).
            weight = 2.0 / (phase.astype(jnp.float32) + 1.0)
            average = jax.tree.map(
                lambda z, x: jnp.where(phase > 0, z + weight.astype(z.dtype) * (x - z), z),
                state.average,
                x_end,
            )
            new_x = jax.tree.map(lambda z, x: jnp.where(finish, z, x), average, x_end)
            updates = jax.tree.map(
                lambda u, z, p: jnp.where(finish, (z - p.astype(z.dtype)).astype(u.dtype), u),
                updates,
                average,
                params,
            )
        rho = jnp.asarray(drop_factor, jnp.float32)
        alpha = jnp.where(
            finish,
            jnp.maximum(jnp.asarray(min_learning_rate, jnp.float32), rho * state.learning_rate),
            state.learning_rate,
        )
        theta = jnp.where(
            finish,
            jnp.minimum(jnp.asarray(max_threshold, jnp.float32), state.threshold / rho),
            state.threshold,
        )
        new_state = AutoDropState(
            count=state.count,
            period=period,
            learning_rate=alpha,
            scale=alpha / jnp.asarray(learning_rate, jnp.float32),
            threshold=theta,
            angles=angles,
            drop_phase=jnp.where(finish, 0, phase).astype(jnp.int32),
            num_drops=state.num_drops + finish.astype(jnp.int32),
            period_start=new_x,
            displacement=displacement,
            average=average,
        )
        return updates, new_state

    def update_fn(
        updates, state: AutoDropState, params=None, *, end_of_period=None, **extra_args
    ) -> tuple[Any, AutoDropState]:
        del extra_args
        if params is None:
            raise ValueError("autodrop needs params: call tx.update(updates, state, params).")
        updates = jax.tree.map(lambda u: u * state.scale.astype(u.dtype), updates)
        state = state._replace(count=optax.safe_increment(state.count))
        if end_of_period is None:
            if steps_per_period is None:
                raise ValueError(
                    "autodrop was built with steps_per_period=None: pass end_of_period=<bool> to update."
                )
            is_end = state.count % steps_per_period == 0
        elif isinstance(end_of_period, bool):  # known in Python: no conditional in the graph
            return end_period(updates, state, params) if end_of_period else (updates, state)
        else:
            is_end = jnp.asarray(end_of_period).astype(bool)
        return jax.lax.cond(
            is_end,
            lambda u, s: end_period(u, s, params),
            lambda u, s: (u, s),
            updates,
            state,
        )

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def get_autodrop_state(opt_state: Any) -> AutoDropState:
    """The (single) :class:`AutoDropState` inside an optimizer state (chain, masked, inject_hyperparams).

    Raises:
      ValueError: if ``opt_state`` holds no AutoDrop state, or more than one.
    """
    found = [
        s
        for s in jax.tree.leaves(opt_state, is_leaf=lambda s: isinstance(s, AutoDropState))
        if isinstance(s, AutoDropState)
    ]
    if len(found) != 1:
        raise ValueError(f"expected exactly one AutoDropState in opt_state, found {len(found)}.")
    return found[0]


__all__ = [
    "AutoDropState",
    "CRITERIA",
    "angle_degrees",
    "autodrop",
    "get_autodrop_state",
]
