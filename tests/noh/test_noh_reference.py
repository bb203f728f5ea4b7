"""NOH's rate proposer, Adam with NOH rates and the Andrychowicz LSTM optimizer against a NumPy reference.

The reference is written out here in float64 from the papers' formulas and Flax's documented LSTM cell
equations, not from the library's modules:

* gradient preprocessing (Andrychowicz et al. 2016, Appendix A): ``(log|g| / c, sign g)`` when
  ``|g| >= e^-c``, else ``(-1, e^c g)``;
* one LSTM cell per layer, ``i, f, o = sigmoid(x W_i* + h W_h* + b_h*)``, ``g = tanh(...)``,
  ``c' = f c + i g``, ``h' = o tanh(c')`` (Flax ``LSTMCell``: the input kernels carry no bias);
* the read-out ``r = h W + b``; NOH's rate ``exp(clip(log eta_0 + s r, log eta_min, log eta_max))``
  (Fu et al. 2017: rates parametrised in log space), the LSTM optimizer's update ``s r``;
* Adam's bias-corrected moments (Kingma and Ba 2015), with NOH's rates proposed every ``S`` steps from
  the gradient averaged since the last proposal (the first one from the first gradient).

References:
  Fu, Ng, Chen, Ilievski, Pal, Chua, Neural Optimizers with Hypergradients for Tuning Parameter-Wise
  Learning Rates, 2017. Andrychowicz et al, Learning to learn by gradient descent by gradient descent,
  2016. Kingma and Ba, Adam: A Method for Stochastic Optimization, 2015.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from randlr_jax.noh import _lstm_optimizer as lo
from randlr_jax.noh import _noh as noh

# ----------------------------------------------------------------------------- the NumPy reference


def _np_preprocess(g: np.ndarray, c: float) -> np.ndarray:
    g = np.asarray(g, np.float64)
    large = np.abs(g) >= np.exp(-c)
    log_part = np.where(large, np.log(np.maximum(np.abs(g), np.exp(-c))) / c, -1.0)
    sign_part = np.where(large, np.sign(g), np.exp(c) * g)
    return np.stack([log_part, sign_part], axis=-1)


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _np_cell(p, carry, x):
    c, h = carry

    def pre(gate):
        hidden = p["h" + gate]
        return x @ p["i" + gate]["kernel"] + h @ hidden["kernel"] + hidden["bias"]

    i, f, g, o = _sigmoid(pre("i")), _sigmoid(pre("f")), np.tanh(pre("g")), _sigmoid(pre("o"))
    c = f * c + i * g
    h = o * np.tanh(c)
    return (c, h), h


def _np_readout(params, carry, gradients, c, num_layers):
    """The read-out ``r`` ``(N,)`` and the new carry of the coordinatewise LSTM."""
    params = jax.tree.map(lambda x: np.asarray(x, np.float64), params)
    x = _np_preprocess(gradients, c)
    new_carry = []
    for layer in range(num_layers):
        layer_carry, x = _np_cell(params["lstm"][f"lstm_{layer}"], carry[layer], x)
        new_carry.append(layer_carry)
    readout = x @ params["readout"]["kernel"] + params["readout"]["bias"]
    return readout[:, 0], new_carry


def _np_zero_carry(num_layers, hidden, n):
    return [(np.zeros((n, hidden)), np.zeros((n, hidden))) for _ in range(num_layers)]


def _gradients(seed: int, n: int, c: float) -> np.ndarray:
    """Gradients over many magnitudes, none within 5% of the preprocessing's switch ``e^-c``."""
    rng = np.random.default_rng(seed)
    g = np.exp(rng.uniform(-3 * c, 2.0, n)) * rng.choice([-1.0, 1.0], n)
    near = np.abs(np.log(np.abs(g)) + c) < 0.05
    return np.where(near, g * 3.0, g).astype(np.float32)


# --------------------------------------------------------------------------------------- the tests


@pytest.mark.parametrize("c", [3.0, 6.5])
def test_preprocessing_with_a_non_default_constant(c):
    g = _gradients(0, 64, c)
    assert np.any(np.abs(g) < np.exp(-c)) and np.any(np.abs(g) > np.exp(-c))
    np.testing.assert_allclose(noh.preprocess_gradients(jnp.asarray(g), c), _np_preprocess(g, c),
                               rtol=1e-5, atol=1e-6)  # fmt: skip


def test_rate_proposer_is_the_log_space_lstm_read_out_with_its_scale_and_clip():
    proposer = noh.LSTMRateProposer(
        num_layers=2, hidden_size=4, preprocess_c=4.0, initial_learning_rate=1e-2,
        output_scale=0.6, min_learning_rate=2e-3, max_learning_rate=5e-2,
    )  # fmt: skip
    params = noh.init_proposer_params(proposer, jax.random.key(3))
    apply = jax.jit(proposer.apply)
    n = 40
    for scale, expect_clipped in ((1.0, False), (12.0, True)):
        lstm_params = jax.tree.map(lambda x, s=scale: x * s, params)
        carry, np_carry = proposer.initial_carry(n), _np_zero_carry(2, 4, n)
        for step in range(2):
            g = _gradients(10 + step, n, 4.0)
            rates, carry = apply({"params": lstm_params}, jnp.asarray(g), carry)
            readout, np_carry = _np_readout(lstm_params, np_carry, g, 4.0, 2)
            log_rate = np.clip(np.log(1e-2) + 0.6 * readout, np.log(2e-3), np.log(5e-2))
            np.testing.assert_allclose(rates, np.exp(log_rate), rtol=2e-4)
        clipped = np.isclose(np.exp(log_rate), 2e-3) | np.isclose(np.exp(log_rate), 5e-2)
        assert np.any(clipped) == expect_clipped
        if expect_clipped:  # both ends of the clip are reached
            assert np.any(np.isclose(np.exp(log_rate), 2e-3))
            assert np.any(np.isclose(np.exp(log_rate), 5e-2))


def test_lstm_optimizer_update_is_the_scaled_read_out():
    proposer = lo.LSTMUpdateProposer(
        num_layers=2, hidden_size=4, preprocess_c=3.0, output_scale=0.3
    )
    lstm_params = noh.init_proposer_params(proposer, jax.random.key(5))
    tx = lo.lstm_optimizer(lstm_params, proposer=proposer)
    params = {"w": jnp.zeros((4, 5)), "b": jnp.zeros((3,))}
    state, update = tx.init(params), jax.jit(tx.update)
    np_carry = _np_zero_carry(2, 4, 23)
    for step in range(3):
        g = _gradients(20 + step, 23, 3.0)
        grads = {"b": jnp.asarray(g[:3]), "w": jnp.asarray(g[3:]).reshape(4, 5)}  # leaf order: b, w
        updates, state = update(grads, state, params)
        readout, np_carry = _np_readout(lstm_params, np_carry, g, 3.0, 2)
        np.testing.assert_allclose(noh.flatten_tree(updates), 0.3 * readout, rtol=2e-4, atol=1e-7)


def test_noh_adam_against_adam_with_rates_held_for_s_steps():
    s, steps, n = 3, 8, 6
    b1, b2, eps = 0.8, 0.95, 1e-6
    proposer = noh.LSTMRateProposer(
        num_layers=1, hidden_size=3, preprocess_c=5.0, initial_learning_rate=1e-2, output_scale=0.8
    )
    lstm_params = jax.tree.map(
        lambda x: 3.0 * x, noh.init_proposer_params(proposer, jax.random.key(7))
    )
    tx = noh.noh_adam(lstm_params, proposer=proposer, update_every=s, b1=b1, b2=b2, eps=eps)
    params = jnp.zeros((n,))
    state, update = tx.init(params), jax.jit(tx.update)
    gradients = [_gradients(30 + t, n, 5.0) * (1.0 + t) for t in range(steps)]

    m, v, np_carry = np.zeros(n), np.zeros(n), _np_zero_carry(1, 3, n)
    since_proposal, rates = [], None
    for t, g in enumerate(gradients):
        updates, state = update(jnp.asarray(g), state, params)
        since_proposal.append(np.asarray(g, np.float64))
        if t % s == 0:  # step 0 proposes from g_0; step kS from the mean of g_{(k-1)S+1 .. kS}
            mean = np.mean(since_proposal, axis=0)
            readout, np_carry = _np_readout(lstm_params, np_carry, mean, 5.0, 1)
            rates = np.exp(np.clip(np.log(1e-2) + 0.8 * readout, np.log(1e-8), 0.0))
            since_proposal = []
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * np.square(g.astype(np.float64))
        m_hat, v_hat = m / (1 - b1 ** (t + 1)), v / (1 - b2 ** (t + 1))
        expected = -rates * m_hat / (np.sqrt(v_hat) + eps)
        np.testing.assert_allclose(state.learning_rates, rates, rtol=2e-4, err_msg=f"step {t}")
        np.testing.assert_allclose(updates, expected, rtol=5e-4, err_msg=f"step {t}")
