"""Contract cases of the NOH package: SGD-HD, Adam-HD, the generic hypergradient descent, Adam with NOH
rates, the Andrychowicz LSTM optimizer and the shipped (pretrained) learned optimizers."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from randlr_jax.noh import _hypergradient as hypergradient
from randlr_jax.noh import _lstm_optimizer as lstm_optimizer
from randlr_jax.noh import _noh as noh
from randlr_jax.noh import _pretrained as pretrained
from tests.helpers import ContractCase as Case

# An untrained proposer starts at its initial rate; 0.02 lets Adam reach the quadratic's minimum in time.
NOH_PROPOSER = noh.LSTMRateProposer(num_layers=2, hidden_size=8, initial_learning_rate=0.02)
NOH_PARAMS = noh.init_proposer_params(NOH_PROPOSER, jax.random.key(3))

SIGN_PROPOSER = lstm_optimizer.LSTMUpdateProposer(num_layers=1, hidden_size=2, output_scale=0.1)


def sign_descent_params(step: float = 0.01, gain: float = 20.0):
    """Hand-set weights that make the 1-layer LSTM optimizer a (smooth) sign-descent rule.

    Forget gate shut, input and output gates open, cell input ``tanh(gain * sign g)``, so
    ``h = tanh(tanh(gain * sign g)) ≈ 0.76 sign g`` and the read-out maps it to ``-step * sign g``. The
    untrained LSTM optimizer cannot converge on anything; these weights make the contract's convergence
    check meaningful for the transformation's plumbing.
    """
    params = jax.tree.map(
        jnp.zeros_like, noh.init_proposer_params(SIGN_PROPOSER, jax.random.key(0))
    )
    cell = params["lstm"]["lstm_0"]
    hidden = SIGN_PROPOSER.hidden_size
    cell["hf"]["bias"] = jnp.full((hidden,), -30.0)
    cell["hi"]["bias"] = jnp.full((hidden,), 30.0)
    cell["ho"]["bias"] = jnp.full((hidden,), 30.0)
    cell["ig"]["kernel"] = jnp.zeros((2, hidden)).at[1].set(gain)  # row 1: the sign feature
    h_of_one = float(jnp.tanh(jnp.tanh(gain)))
    readout = -step / (SIGN_PROPOSER.output_scale * h_of_one * hidden)
    params["readout"]["kernel"] = jnp.full((hidden, 1), readout)
    return params


SIGN_PARAMS = sign_descent_params()  # built once, eagerly (make() may be called under jit)


def _noh(update_every=3, b1=0.9):
    return noh.noh_adam(NOH_PARAMS, proposer=NOH_PROPOSER, update_every=update_every, b1=b1)


def _hypergradient_momentum(hypergradient_lr, learning_rate=0.05):
    """The generic form over a direction of its own (heavy-ball momentum)."""
    return hypergradient.hypergradient_descent(optax.trace(0.5), learning_rate, hypergradient_lr)


def _pretrained_noh(b1=0.9):
    return pretrained.pretrained_optimizer("noh_mnist1d", b1=b1)


CASES = [
    Case(
        "noh_sgd_hd",
        lambda: hypergradient.sgd_hd(0.1, 1e-3),
        inject=(hypergradient.sgd_hd, dict(learning_rate=0.1), "hypergradient_lr", 1e-2),
    ),
    Case(
        "noh_adam_hd",
        lambda: hypergradient.adam_hd(0.02, 1e-4),
        inject=(hypergradient.adam_hd, dict(learning_rate=0.02), "hypergradient_lr", 1e-2),
        steps_to_converge=600,
    ),
    Case(
        "noh_hypergradient_descent_momentum",
        lambda: _hypergradient_momentum(1e-3),
        inject=(_hypergradient_momentum, dict(learning_rate=0.05), "hypergradient_lr", 1e-2),
    ),
    Case(
        "noh_adam_s3",
        _noh,
        inject=(_noh, dict(update_every=3), "b1", 0.5),
        steps_to_converge=600,
    ),
    Case(
        "noh_lstm_optimizer_sign_descent",
        lambda: lstm_optimizer.lstm_optimizer(SIGN_PARAMS, proposer=SIGN_PROPOSER),
        steps_to_converge=600,
    ),
    Case(  # the shipped NOH weights (kind "noh": Adam with the LSTM's rates)
        "noh_pretrained_noh_mnist1d",
        _pretrained_noh,
        inject=(_pretrained_noh, {}, "b1", 0.5),
    ),
    Case(  # the shipped LSTM-optimizer weights (kind "dmopt")
        "noh_pretrained_dmopt_mnist1d",
        lambda: pretrained.pretrained_optimizer("dmopt_mnist1d"),
    ),
]
