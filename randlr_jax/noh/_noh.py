"""Neural optimizer with hypergradients (NOH): an LSTM proposes Adam's per-parameter learning rates.

A coordinatewise LSTM (weights shared by all coordinates, one hidden state per coordinate) reads each
parameter's gradient averaged over the last ``S`` steps and proposes that parameter's learning rate; Adam
then runs with those rates, held fixed for ``S`` steps (Fu et al. 2017, Sections 2.2-2.3):

.. math::

    \\bar g^k = \\frac{1}{S} \\sum_{s \\in \\text{last } S} g^k_s, \\qquad
    (\\alpha^k, c^k) = \\mathrm{LSTM}_\\phi(h(\\bar g^k), c^k), \\qquad
    w^k \\leftarrow w^k - \\alpha^k \\frac{\\hat m^k}{\\sqrt{\\hat v^k} + \\epsilon},

with the preprocessing of Andrychowicz et al. (2016), which the paper adopts:

.. math::

    h(g) = (\\log|g| / c,\\ \\mathrm{sign}\\, g) \\text{ if } |g| \\ge e^{-c},
    \\quad (-1,\\ e^{c} g) \\text{ otherwise}.

The paper writes ``log(g)`` and leaves ``c > 0`` open; we take ``log|g|`` and ``c = 10``, Andrychowicz et
al.'s value (``preprocess_c``). It writes the rule with SGD's gradient but trains with Adam: the rate
multiplies Adam's direction ``m_hat / (sqrt(v_hat) + eps)``, as above.

The paper does not say how the LSTM output becomes a rate. Our choice: it is produced in log space, so that
it is positive and can move over orders of magnitude,
``alpha = exp(clip(log(alpha_init) + output_scale * linear(h), log(alpha_min), log(alpha_max)))``
(:class:`LSTMRateProposer`), with ``alpha_init = 1e-3`` (the read-out's bias starts at zero, so an
untrained proposer starts around Adam's usual rate), ``output_scale = 1`` and
``[alpha_min, alpha_max] = [1e-8, 1]``. Where the clip is active the rate receives no gradient.
``output_scale = 0.1`` (Andrychowicz et al.'s value) was tried first: the log-rate can then move by only
about ``0.1 x`` the read-out's change, and 5 meta-iterations of Adam at ``1e-2`` barely moved the rates; an
untrained proposer with scale 1 spreads the rates by a factor of about ``e^{±0.5}``.

Proposals happen at steps ``0, S, 2S, ...`` (``lax.cond`` on the step count, no host branching): at step 0
from the first gradient, at step ``kS`` from the mean of the ``S`` gradients of steps ``(k-1)S + 1 .. kS``.
(The paper does not say which rates are used before the first ``S`` gradients exist; proposing at step 0
from the first gradient alone is our choice. It does not give ``S`` either: :func:`noh_adam` defaults to
``update_every=10``.)
The LSTM parameters are an argument of :func:`noh_adam`, so the same transformation is differentiated
through during meta-training (:mod:`randlr_jax.noh`) and used with frozen, trained parameters.

References:
  Fu, Ng, Chen, Ilievski, Pal, Chua, Neural Optimizers with Hypergradients for Tuning Parameter-Wise
  Learning Rates, 2017 (ICML 2017 AutoML workshop).
  Andrychowicz et al, `Learning to learn by gradient descent by gradient descent
  <https://arxiv.org/abs/1606.04474>`_, 2016.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.typing import ArrayLike

from randlr_jax import _checks as checks

LSTMCarry = tuple  # one (c, h) pair per layer, each (num_coordinates, hidden_size) float32


def preprocess_gradients(gradients: jax.Array, c: float = 10.0) -> jax.Array:
    """Andrychowicz et al.'s gradient preprocessing, ``(N,) -> (N, 2)`` float32.

    ``(log|g| / c, sign g)`` where ``|g| >= e^-c``, ``(-1, e^c g)`` elsewhere. Differentiable (the log is
    taken of ``max(|g|, e^-c)``, so no NaN reaches a gradient).

    Raises:
      ValueError: ``c`` not a concrete number in ``(0, 80]`` (``e^c`` must stay finite in float32).
    """
    check_preprocess_c("c", c)
    g = gradients.astype(jnp.float32)
    threshold = math.exp(-c)
    large = jnp.abs(g) >= threshold
    log_part = jnp.where(large, jnp.log(jnp.maximum(jnp.abs(g), threshold)) / c, -1.0)
    sign_part = jnp.where(large, jnp.sign(g), math.exp(c) * g)
    return jnp.stack([log_part, sign_part], axis=-1)


class CoordinatewiseLSTM(nn.Module):
    """A stack of LSTM cells applied to every coordinate independently (shared weights).

    Shapes: inputs ``(N, F)``, carry: ``num_layers`` pairs ``(c, h)`` of ``(N, hidden_size)``; returns the
    top layer's ``h`` ``(N, hidden_size)`` and the new carry.
    """

    num_layers: int = 3
    hidden_size: int = 20

    @nn.compact
    def __call__(self, inputs: jax.Array, carry: LSTMCarry) -> tuple[jax.Array, LSTMCarry]:
        x = inputs
        new_carry = []
        for layer in range(self.num_layers):
            layer_carry, x = nn.LSTMCell(self.hidden_size, name=f"lstm_{layer}")(carry[layer], x)
            new_carry.append(layer_carry)
        return x, tuple(new_carry)


def zero_carry(num_layers: int, hidden_size: int, num_coordinates: int) -> LSTMCarry:
    """The initial LSTM state: zeros, ``num_layers`` pairs ``(c, h)`` of ``(N, hidden_size)`` float32."""
    zeros = jnp.zeros((num_coordinates, hidden_size), jnp.float32)
    return tuple((zeros, zeros) for _ in range(num_layers))


_MAX_PREPROCESS_C = 80.0  # e^c * g must stay finite in float32 (e^88.7 overflows)


def _check_positive_int(name: str, value: Any) -> None:
    checks.positive_int(name, value)


def _check_positive_float(name: str, value: Any) -> None:
    # Module fields and Python constants of the proposers: concrete, finite, > 0.
    checks.positive(name, value, static=True)


def check_preprocess_c(name: str, value: Any) -> None:
    """The constant ``c`` of :func:`preprocess_gradients`: a concrete number in ``(0, 80]``."""
    checks.in_range(
        name, value, 0.0, _MAX_PREPROCESS_C, low_open=True,
        what=f"a finite number in (0, {_MAX_PREPROCESS_C:g}]", static=True,
    )  # fmt: skip


def check_proposer(name: str, proposer: Any) -> None:
    if not isinstance(proposer, nn.Module):
        checks.fail(name, "a Flax module (e.g. LSTMRateProposer()) or None", proposer)


class LSTMRateProposer(nn.Module):
    """Coordinatewise LSTM mapping averaged gradients to positive learning rates (NOH).

    ``rates = exp(clip(log(initial_learning_rate) + output_scale * Dense(1)(LSTM(h(g))), log(min), log(max)))``.

    Shapes: ``gradients (N,)``, carry from :meth:`initial_carry`; returns ``rates (N,)`` float32 and the
    new carry.

    Attributes:
      num_layers: LSTM layers (paper: 3), a positive integer.
      hidden_size: units per layer (paper: 20), a positive integer.
      preprocess_c: the constant ``c`` of :func:`preprocess_gradients`, in ``(0, 80]``.
      initial_learning_rate: the rate where the output layer's contribution is zero.
      output_scale: multiplies the linear read-out in log space (module docstring).
      min_learning_rate, max_learning_rate: the clip of the proposed rates; all four finite, > 0,
        with ``min_learning_rate <= initial_learning_rate <= max_learning_rate``. Checked when the
        module is constructed (``ValueError`` naming the field).

    Example:
      >>> proposer = LSTMRateProposer()
      >>> lstm_params = init_proposer_params(proposer, jax.random.key(0))
      >>> rates, carry = proposer.apply({"params": lstm_params}, jnp.ones(5), proposer.initial_carry(5))
    """

    num_layers: int = 3
    hidden_size: int = 20
    preprocess_c: float = 10.0
    initial_learning_rate: float = 1e-3
    output_scale: float = 1.0
    min_learning_rate: float = 1e-8
    max_learning_rate: float = 1.0

    def __post_init__(self) -> None:
        _check_positive_int("num_layers", self.num_layers)
        _check_positive_int("hidden_size", self.hidden_size)
        check_preprocess_c("preprocess_c", self.preprocess_c)
        _check_positive_float("initial_learning_rate", self.initial_learning_rate)
        _check_positive_float("output_scale", self.output_scale)
        _check_positive_float("min_learning_rate", self.min_learning_rate)
        _check_positive_float("max_learning_rate", self.max_learning_rate)
        checks.interval(
            "min_learning_rate", self.min_learning_rate,
            "initial_learning_rate", self.initial_learning_rate,
        )  # fmt: skip
        checks.interval(
            "initial_learning_rate", self.initial_learning_rate,
            "max_learning_rate", self.max_learning_rate,
        )  # fmt: skip
        super().__post_init__()

    def initial_carry(self, num_coordinates: int) -> LSTMCarry:
        """Zero LSTM state for ``num_coordinates`` coordinates."""
        return zero_carry(self.num_layers, self.hidden_size, num_coordinates)

    @nn.compact
    def __call__(self, gradients: jax.Array, carry: LSTMCarry) -> tuple[jax.Array, LSTMCarry]:
        features = preprocess_gradients(gradients, self.preprocess_c)
        hidden, carry = CoordinatewiseLSTM(self.num_layers, self.hidden_size, name="lstm")(
            features, carry
        )
        readout = nn.Dense(1, name="readout")(hidden)[:, 0]
        log_rate = math.log(self.initial_learning_rate) + self.output_scale * readout
        log_rate = jnp.clip(
            log_rate, math.log(self.min_learning_rate), math.log(self.max_learning_rate)
        )
        return jnp.exp(log_rate), carry


def init_proposer_params(proposer: nn.Module, key: chex.PRNGKey) -> Any:
    """Fresh parameters (the ``"params"`` collection) of a coordinatewise proposer module.

    Raises:
      ValueError: ``proposer`` is not a proposer module (one with ``initial_carry``), or ``key`` is
        not a PRNG key.
    """
    if not isinstance(proposer, nn.Module) or not callable(
        getattr(proposer, "initial_carry", None)
    ):
        checks.fail(
            "proposer", "a coordinatewise proposer module (LSTMRateProposer() or LSTMUpdateProposer())",
            proposer,
        )  # fmt: skip
    checks.prng_key("key", key)
    return proposer.init(key, jnp.zeros((1,), jnp.float32), proposer.initial_carry(1))["params"]


def check_proposer_params(proposer: nn.Module, lstm_params: Any) -> None:
    """Raise ``ValueError`` unless ``lstm_params`` has the structure and shapes ``proposer`` expects."""
    expected = jax.eval_shape(lambda: init_proposer_params(proposer, jax.random.key(0)))
    expected_shapes = jax.tree.map(lambda x: tuple(x.shape), expected)
    try:
        got_shapes = jax.tree.map(lambda x: tuple(jnp.shape(x)), lstm_params)
    except Exception as error:  # not a pytree of arrays
        raise ValueError(f"lstm_params must be a pytree of arrays, got {lstm_params!r}.") from error
    if jax.tree.structure(expected_shapes) != jax.tree.structure(got_shapes) or any(
        a != b
        for a, b in zip(jax.tree.leaves(expected_shapes), jax.tree.leaves(got_shapes), strict=True)
    ):
        raise ValueError(
            f"lstm_params do not match {type(proposer).__name__}(num_layers="
            f"{proposer.num_layers}, hidden_size={proposer.hidden_size}): expected shapes "
            f"{expected_shapes}, got {got_shapes}."
        )


def flatten_tree(tree: Any) -> jax.Array:
    """All leaves of ``tree`` raveled and concatenated into one float32 vector ``(N,)``."""
    leaves = jax.tree.leaves(tree)
    if not leaves:
        return jnp.zeros((0,), jnp.float32)
    return jnp.concatenate([leaf.astype(jnp.float32).reshape(-1) for leaf in leaves])


def unflatten_like(vector: jax.Array, like: Any) -> Any:
    """Inverse of :func:`flatten_tree`: split ``vector`` into leaves shaped like ``like``'s (float32)."""
    leaves, treedef = jax.tree.flatten(like)
    sizes = [int(np.prod(leaf.shape)) for leaf in leaves]
    pieces = jnp.split(vector, np.cumsum(sizes)[:-1]) if leaves else []
    return treedef.unflatten(
        [piece.reshape(leaf.shape) for piece, leaf in zip(pieces, leaves, strict=True)]
    )


def num_coordinates(tree: Any) -> int:
    """Number of scalars in ``tree``: the number of LSTM states a coordinatewise optimizer keeps."""
    return sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(tree))


class NOHAdamState(NamedTuple):
    """State of :func:`noh_adam`."""

    count: chex.Array  # () int32; steps taken
    gradient_sum: Any  # tree like params, float32; gradients summed since the last proposal
    learning_rates: Any  # tree like params, float32; the rates in use (zeros before step 0)
    lstm_carry: LSTMCarry  # num_layers pairs (c, h), each (N, hidden_size) float32
    adam: optax.ScaleByAdamState  # Adam's moments


def noh_adam(
    lstm_params: Any,
    *,
    proposer: LSTMRateProposer | None = None,
    update_every: int = 10,
    b1: ArrayLike = 0.9,
    b2: ArrayLike = 0.999,
    eps: ArrayLike = 1e-8,
) -> optax.GradientTransformation:
    """Adam with per-parameter learning rates proposed by a (frozen or trained) NOH LSTM every ``S`` steps.

    ``updates = -alpha ⊙ m_hat / (sqrt(v_hat) + eps)`` with ``alpha`` from ``proposer`` applied to the
    gradient averaged since the last proposal (module docstring). Differentiable in ``lstm_params``.

    Args:
      lstm_params: the proposer's parameters (``init_proposer_params(proposer, key)``, a meta-trained
        set, or :func:`randlr_jax.noh.load_pretrained`'s); may be traced.
      proposer: the :class:`LSTMRateProposer` (default: the paper's 3 x 20).
      update_every: ``S >= 1``, steps between proposals.
      b1, b2, eps: Adam's constants: ``b1``, ``b2`` in ``[0, 1)``, ``eps`` finite and ``>= 0``.

    ``b1``, ``b2`` and ``eps`` may be driven by ``optax.inject_hyperparams`` (traced, they are not
    checked) with ``static_args=("lstm_params", "proposer", "update_every")``: ``update_every`` is
    used in Python and ``lstm_params`` is a pytree (inject_hyperparams injects numbers only).

    Returns:
      An ``optax.GradientTransformation`` (state :class:`NOHAdamState`).

    Raises:
      ValueError: ``update_every`` not a positive integer, ``b1``/``b2`` outside ``[0, 1)``, ``eps``
        negative or not finite (when concrete), ``proposer`` not a Flax module, or ``lstm_params`` not
        matching ``proposer``.

    Example:
      >>> proposer = LSTMRateProposer()
      >>> tx = noh_adam(init_proposer_params(proposer, jax.random.key(0)), update_every=10)

    References:
      Fu et al, Neural Optimizers with Hypergradients for Tuning Parameter-Wise Learning Rates, 2017.
    """
    _check_positive_int("update_every", update_every)
    checks.in_unit_interval("b1", b1)
    checks.in_unit_interval("b2", b2)
    checks.nonnegative("eps", eps)
    proposer = LSTMRateProposer() if proposer is None else proposer
    check_proposer("proposer", proposer)
    check_proposer_params(proposer, lstm_params)
    adam = optax.scale_by_adam(b1=b1, b2=b2, eps=eps)

    def init_fn(params):
        zeros = jax.tree.map(lambda p: jnp.zeros(p.shape, jnp.float32), params)
        return NOHAdamState(
            count=jnp.zeros([], jnp.int32),
            gradient_sum=zeros,
            learning_rates=zeros,
            lstm_carry=proposer.initial_carry(num_coordinates(params)),
            adam=adam.init(params),
        )

    def update_fn(updates, state, params=None):
        gradients = updates
        gradient_sum = jax.tree.map(
            lambda s, g: s + g.astype(jnp.float32), state.gradient_sum, gradients
        )

        def propose(operand):
            gradient_sum, _, carry = operand
            steps_averaged = jnp.where(state.count == 0, 1.0, float(update_every))
            mean_gradient = flatten_tree(gradient_sum) / steps_averaged
            rates, carry = proposer.apply({"params": lstm_params}, mean_gradient, carry)
            zeros = jax.tree.map(jnp.zeros_like, gradient_sum)
            return zeros, unflatten_like(rates, gradient_sum), carry

        def keep(operand):
            return operand

        gradient_sum, rates, carry = jax.lax.cond(
            state.count % update_every == 0,
            propose,
            keep,
            (gradient_sum, state.learning_rates, state.lstm_carry),
        )
        direction, adam_state = adam.update(gradients, state.adam, params)
        new_updates = jax.tree.map(lambda r, u: (-r * u).astype(u.dtype), rates, direction)
        new_state = NOHAdamState(
            count=optax.safe_increment(state.count),
            gradient_sum=gradient_sum,
            learning_rates=rates,
            lstm_carry=carry,
            adam=adam_state,
        )
        return new_updates, new_state

    return optax.GradientTransformation(init_fn, update_fn)
