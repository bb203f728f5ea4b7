"""The coordinatewise LSTM optimizer of Andrychowicz et al. (2016), which outputs the updates itself.

The baseline called "DMopt" by Fu et al. (2017): every step, each coordinate's gradient goes through the
preprocessing of :func:`randlr_jax.noh.preprocess_gradients` into a 2-layer, 20-unit LSTM shared by all
coordinates (one state per coordinate), and a linear read-out scaled by ``0.1`` is the update:

.. math::

    (y^k_t, c^k_{t+1}) = \\mathrm{LSTM}_\\phi(h(g^k_t), c^k_t), \\qquad
    w^k_{t+1} = w^k_t + \\mathrm{output\\_scale} \\cdot y^k_t.

It is meta-trained by the same machinery as NOH (:mod:`randlr_jax.noh`).

References:
  Andrychowicz, Denil, Gomez, Hoffman, Pfau, Schaul, Shillingford, de Freitas, `Learning to learn by
  gradient descent by gradient descent <https://arxiv.org/abs/1606.04474>`_, 2016.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from randlr_jax.noh._noh import (
    CoordinatewiseLSTM,
    LSTMCarry,
    _check_positive_float,
    _check_positive_int,
    check_preprocess_c,
    check_proposer,
    check_proposer_params,
    flatten_tree,
    num_coordinates,
    preprocess_gradients,
    unflatten_like,
    zero_carry,
)


class LSTMUpdateProposer(nn.Module):
    """Coordinatewise LSTM mapping gradients to updates (Andrychowicz et al. 2016).

    Shapes: ``gradients (N,)``, carry from :meth:`initial_carry`; returns ``updates (N,)`` float32 (added
    to the parameters) and the new carry.

    Attributes:
      num_layers: LSTM layers (paper: 2), a positive integer.
      hidden_size: units per layer (paper: 20), a positive integer.
      preprocess_c: the constant ``c`` of the gradient preprocessing, in ``(0, 80]``.
      output_scale: multiplies the linear read-out (paper: 0.1), finite and > 0.

    The fields are checked when the module is constructed (``ValueError`` naming the field).
    """

    num_layers: int = 2
    hidden_size: int = 20
    preprocess_c: float = 10.0
    output_scale: float = 0.1

    def __post_init__(self) -> None:
        _check_positive_int("num_layers", self.num_layers)
        _check_positive_int("hidden_size", self.hidden_size)
        check_preprocess_c("preprocess_c", self.preprocess_c)
        _check_positive_float("output_scale", self.output_scale)
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
        return self.output_scale * nn.Dense(1, name="readout")(hidden)[:, 0], carry


class LSTMOptimizerState(NamedTuple):
    """State of :func:`lstm_optimizer`."""

    count: chex.Array  # () int32; steps taken
    lstm_carry: LSTMCarry  # num_layers pairs (c, h), each (N, hidden_size) float32


def lstm_optimizer(
    lstm_params: Any, *, proposer: LSTMUpdateProposer | None = None
) -> optax.GradientTransformation:
    """The Andrychowicz et al. (2016) learned optimizer: the LSTM's output is the update.

    Args:
      lstm_params: the proposer's parameters (``randlr_jax.noh.init_proposer_params(proposer, key)``
        or a meta-trained set); may be traced (meta-training differentiates through them).
      proposer: the :class:`LSTMUpdateProposer` (default 2 x 20, output scale 0.1).

    Returns:
      An ``optax.GradientTransformation`` (state :class:`LSTMOptimizerState`); its updates are added to
      the parameters as they are (the LSTM learns the sign).

    Raises:
      ValueError: ``proposer`` not a Flax module, or ``lstm_params`` not matching it.

    Example:
      >>> from randlr_jax.noh import init_proposer_params
      >>> proposer = LSTMUpdateProposer()
      >>> tx = lstm_optimizer(init_proposer_params(proposer, jax.random.key(0)), proposer=proposer)

    References:
      Andrychowicz et al, `Learning to learn by gradient descent by gradient descent
      <https://arxiv.org/abs/1606.04474>`_, 2016.
    """
    proposer = LSTMUpdateProposer() if proposer is None else proposer
    check_proposer("proposer", proposer)
    check_proposer_params(proposer, lstm_params)

    def init_fn(params):
        return LSTMOptimizerState(
            count=jnp.zeros([], jnp.int32),
            lstm_carry=proposer.initial_carry(num_coordinates(params)),
        )

    def update_fn(updates, state, params=None):
        del params
        steps, carry = proposer.apply(
            {"params": lstm_params}, flatten_tree(updates), state.lstm_carry
        )
        new_updates = jax.tree.map(
            lambda s, g: s.astype(g.dtype), unflatten_like(steps, updates), updates
        )
        return new_updates, LSTMOptimizerState(optax.safe_increment(state.count), carry)

    return optax.GradientTransformation(init_fn, update_fn)
