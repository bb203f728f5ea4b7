"""Tests for randlr_jax.alrao: switch, Bayesian and uniform model averaging, and hard catch-up."""

import itertools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl.testing import parameterized

from randlr_jax.alrao import _switch as sw

# Posteriors computed by the Switch of the Alrao authors' PyTorch code (float32, N = 3, theta = 0.9999),
# fed these three observations directly.
_VECTOR_ELL = np.array([[-1.0, -2.0, -3.0], [-0.5, -0.1, -4.0], [-2.0, -0.2, -0.3]], np.float32)
_VECTOR_POSTERIOR = np.array(
    [
        [0.4993038, 0.2890265, 0.2116698],
        [0.4664218, 0.4179357, 0.1156425],
        [0.1797522, 0.6060558, 0.2141919],
    ],
    np.float32,
)


def _brute_force_switch_posterior(ell: np.ndarray, theta: float) -> np.ndarray:
    """Posterior of the head used at time T+1, by summing over every hidden path (float64).

    The switch distribution as a hidden Markov chain on states (row, head): row a "will switch
    again", row b "last segment". Start: (a, j) with theta/N, (b, j) with (1-theta)/N. After
    observation t, with pi = 1/(t+1), a state (a, j) keeps head j in row a with probability 1-pi and
    otherwise
    switches to a uniformly drawn head, landing in row a with probability theta and in row b with
    1-theta; row b never leaves. Independent of the log-space recursion under test.
    """
    num_steps, num_models = ell.shape
    states = [(row, j) for row in range(2) for j in range(num_models)]

    def start(state):
        row, _ = state
        return (theta if row == 0 else 1.0 - theta) / num_models

    def transition(src, dst, t):
        pi = 1.0 / (t + 1)
        (src_row, src_head), (dst_row, dst_head) = src, dst
        if src_row == 1:
            return float(dst == src)
        stay = (1.0 - pi) if (dst_row == 0 and dst_head == src_head) else 0.0
        switch_row = theta if dst_row == 0 else 1.0 - theta
        return stay + pi * switch_row / num_models

    posterior = np.zeros(num_models)
    for path in itertools.product(states, repeat=num_steps + 1):
        weight = start(path[0])
        for t in range(1, num_steps + 1):
            weight *= np.exp(ell[t - 1, path[t - 1][1]]) * transition(path[t - 1], path[t], t)
        posterior[path[-1][1]] += weight
    return posterior / posterior.sum()


def _feed(state, ell_seq, update=sw.switch_update):
    for ell in ell_seq:
        state = update(state, jnp.asarray(ell))
    return state


class SwitchUpdateTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_reference_test_vector(self):
        update = self.variant(sw.switch_update)
        state = sw.switch_init(3, theta=0.9999)
        chex.assert_trees_all_close(sw.switch_posterior(state), np.full(3, 1 / 3), atol=1e-7)
        for t, (ell, expected) in enumerate(zip(_VECTOR_ELL, _VECTOR_POSTERIOR, strict=True)):
            state = update(state, jnp.asarray(ell))
            chex.assert_trees_all_close(sw.switch_posterior(state), expected, atol=2e-6, rtol=0)
            assert int(state.step) == t + 2
        chex.assert_shape(state.log_weights, (2, 3))
        chex.assert_type([state.log_weights, state.step], [jnp.float32, jnp.int32])

    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.parameters((1, 0.7, 3), (2, 0.5, 4), (3, 0.7, 4), (3, 0.9999, 3))
    def test_matches_path_enumeration(self, num_models, theta, num_steps):
        # A small theta gives row b real mass, so swapped rows or a wrong pi_t change the answer.
        rng = np.random.default_rng(num_models * 10 + num_steps)
        ell = rng.normal(scale=1.5, size=(num_steps, num_models))
        update = self.variant(sw.switch_update)
        state = sw.switch_init(num_models, theta)
        for t in range(1, num_steps + 1):
            state = update(state, jnp.asarray(ell[t - 1], jnp.float32))
            expected = _brute_force_switch_posterior(ell[:t], theta)
            chex.assert_trees_all_close(sw.switch_posterior(state), expected, atol=2e-6, rtol=0)

    @chex.variants(with_jit=True, without_jit=True)
    def test_shift_invariance(self):
        update = self.variant(sw.switch_update)
        rng = np.random.default_rng(0)
        ell_seq = rng.normal(size=(20, 4)).astype(np.float32)
        shifts = rng.normal(scale=50.0, size=(20, 1)).astype(np.float32)
        plain = _feed(sw.switch_init(4, 0.9), ell_seq, update)
        shifted = _feed(sw.switch_init(4, 0.9), ell_seq + shifts, update)
        chex.assert_trees_all_close(
            sw.switch_posterior(shifted), sw.switch_posterior(plain), atol=1e-5
        )
        chex.assert_trees_all_equal(shifted.step, plain.step)

    @chex.variants(with_jit=True, without_jit=True)
    def test_non_finite_read_as_minus_inf(self):
        update = self.variant(sw.switch_update)
        state = _feed(sw.switch_init(4, 0.99), _VECTOR_ELL[:, [0, 1, 2, 0]])
        with_minus_inf = update(state, jnp.array([-0.3, -jnp.inf, -1.0, -jnp.inf]))
        with_nan = update(state, jnp.array([-0.3, jnp.nan, -1.0, jnp.inf]))
        chex.assert_trees_all_close(with_nan, with_minus_inf)
        chex.assert_tree_all_finite(with_nan.log_weights[0])
        # The -inf heads keep only the mass that switches into them, so they lose weight.
        before, after = sw.switch_posterior(state), sw.switch_posterior(with_nan)
        assert after[1] < before[1] and after[3] < before[3]
        assert after[0] > before[0]

    @chex.variants(with_jit=True, without_jit=True)
    def test_all_minus_inf_leaves_state_unchanged(self):
        update = self.variant(sw.switch_update)
        state = _feed(sw.switch_init(3), _VECTOR_ELL)
        for bad in ([-np.inf] * 3, [np.nan] * 3, [np.nan, np.inf, -np.inf]):
            skipped = update(state, jnp.asarray(bad, jnp.float32))
            chex.assert_trees_all_equal(skipped, state)
        # ... and the recursion then carries on as if the skipped observation never came.
        after = update(update(state, jnp.full((3,), -jnp.inf)), jnp.array([-1.0, 0.0, -1.0]))
        chex.assert_trees_all_close(after, update(state, jnp.array([-1.0, 0.0, -1.0])))

    @chex.variants(with_jit=True, without_jit=True)
    def test_always_worse_head_loses_weight(self):
        update = self.variant(sw.switch_update)
        state = sw.switch_init(3)
        previous = np.asarray(sw.switch_posterior(state))
        for _ in range(30):
            state = update(state, jnp.array([-0.5, -0.5, -5.0]))
            current = np.asarray(sw.switch_posterior(state))
            assert current[2] <= previous[2] + 1e-7
            previous = current
        # What is left is about the mass that may switch into it, pi_t theta / N = 1/(31 * 3).
        assert previous[2] < 1.2 / (31 * 3)
        np.testing.assert_allclose(previous[0], previous[1], rtol=1e-5)

    @chex.variants(with_jit=True, without_jit=True)
    def test_single_model_posterior_is_one(self):
        update = self.variant(sw.switch_update)
        state = sw.switch_init(1)
        for value in (-3.0, 0.0, -1e30, np.nan, 7.0):
            state = update(state, jnp.array([value], jnp.float32))
            chex.assert_trees_all_close(sw.switch_posterior(state), jnp.ones(1))
            chex.assert_trees_all_close(sw.switch_log_posterior(state), jnp.zeros(1))

    @chex.variants(with_jit=True, without_jit=True)
    def test_switch_follows_a_head_that_becomes_better(self):
        # The point of the switch over Bayes averaging: after 200 steps where head 0 was better,
        # head 1 becomes better and the switch hands it the weight much sooner than Bayes does.
        update = self.variant(sw.switch_update)
        ell_seq = np.concatenate(
            [np.tile([-0.1, -0.6], (200, 1)), np.tile([-0.6, -0.1], (40, 1))]
        ).astype(np.float32)
        switch_state = _feed(sw.switch_init(2, 0.9), ell_seq, update)
        bayes_state = _feed(sw.bayes_init(2), ell_seq, sw.bayes_update)
        assert sw.switch_posterior(switch_state)[1] > 0.9
        assert sw.bayes_posterior(bayes_state)[1] < 1e-3

    def test_no_retrace_across_updates(self):
        @jax.jit
        @chex.assert_max_traces(n=1)
        def update(state, ell):
            return sw.switch_update(state, ell)

        state = sw.switch_init(5, theta=0.99)
        rng = np.random.default_rng(1)
        for _ in range(6):
            state = update(state, jnp.asarray(rng.normal(size=5), jnp.float32))
        # A different theta is data in the state, not a new trace.
        other = sw.switch_init(5, theta=0.5)
        update(other, jnp.zeros(5))
        assert int(state.step) == 7

    def test_traced_theta_matches_concrete(self):
        def run(theta):
            state = sw.switch_init(3, theta)
            return sw.switch_posterior(_feed(state, _VECTOR_ELL))

        for theta in (0.9, 0.5):
            chex.assert_trees_all_close(jax.jit(run)(theta), run(theta), atol=1e-6)


class SwitchPropertyTest(chex.TestCase):
    @parameterized.parameters(
        *itertools.product(range(3), (1, 2, 7), (1.0, 1e4)),
        (3, 7, 1e30),
    )
    def test_posterior_normalised_and_finite(self, seed, num_models, scale):
        key_values, key_mask = jax.random.split(jax.random.key(seed))
        num_steps = 400
        ell = scale * jax.random.normal(key_values, (num_steps, num_models))
        # Sprinkle non-finite entries (a diverged head) through the sequence.
        bad = jax.random.bernoulli(key_mask, 0.05, (num_steps, num_models))
        ell = jnp.where(bad, jnp.nan, ell)
        state, posteriors = jax.jit(sw.switch_update_sequence)(sw.switch_init(num_models), ell)
        chex.assert_shape(posteriors, (num_steps, num_models))
        chex.assert_tree_all_finite((state.log_weights[0], posteriors))
        chex.assert_trees_all_close(posteriors.sum(axis=-1), jnp.ones(num_steps), atol=1e-5)
        assert np.all(np.asarray(posteriors) >= 0)
        chex.assert_trees_all_close(
            jnp.exp(jax.nn.logsumexp(state.log_weights)), jnp.ones(()), atol=1e-5
        )

    def test_large_step_stays_accurate(self):
        state = sw.switch_init(3)._replace(step=jnp.asarray(2**31 - 1, jnp.int32))
        state = sw.switch_update(state, jnp.array([-1.0, -2.0, -3.0]))
        chex.assert_tree_all_finite(state.log_weights[0])
        assert int(state.step) == 2**31 - 1  # saturates instead of overflowing

    def test_sequence_equals_repeated_updates(self):
        rng = np.random.default_rng(2)
        ell_seq = rng.normal(scale=2.0, size=(25, 4)).astype(np.float32)
        ell_seq[3] = -np.inf  # a skipped observation inside the scan
        ell_seq[7, 1] = np.nan
        state, posteriors = sw.switch_update_sequence(sw.switch_init(4, 0.95), ell_seq)
        manual = sw.switch_init(4, 0.95)
        for t, ell in enumerate(ell_seq):
            manual = sw.switch_update(manual, jnp.asarray(ell))
            chex.assert_trees_all_close(posteriors[t], sw.switch_posterior(manual), atol=1e-6)
        chex.assert_trees_all_close(state, manual, atol=1e-6)
        assert int(state.step) == 25  # 24 informative observations after step 1

    def test_step_is_saved_state(self):
        rng = np.random.default_rng(3)
        ell_seq = rng.normal(size=(12, 3)).astype(np.float32)
        uninterrupted = _feed(sw.switch_init(3, 0.8), ell_seq)
        halfway = _feed(sw.switch_init(3, 0.8), ell_seq[:6])
        saved = {name: np.asarray(value) for name, value in halfway._asdict().items()}
        restored = sw.SwitchState(**{name: jnp.asarray(value) for name, value in saved.items()})
        resumed = _feed(restored, ell_seq[6:])
        chex.assert_trees_all_equal(resumed, uninterrupted)
        # Losing the counter on reload (the reference's bug) gives a different posterior.
        reset = _feed(restored._replace(step=jnp.ones((), jnp.int32)), ell_seq[6:])
        assert not np.allclose(sw.switch_posterior(reset), sw.switch_posterior(uninterrupted))


class OtherAveragersTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_bayes_is_softmax_of_cumulative_sum(self):
        update = self.variant(sw.bayes_update)
        rng = np.random.default_rng(4)
        ell_seq = rng.normal(scale=3.0, size=(15, 5)).astype(np.float32)
        state = sw.bayes_init(5)
        for t, ell in enumerate(ell_seq):
            state = update(state, jnp.asarray(ell))
            expected = jax.nn.softmax(jnp.sum(ell_seq[: t + 1], axis=0))
            chex.assert_trees_all_close(sw.bayes_posterior(state), expected, atol=1e-6)
        assert int(state.step) == 16

    @chex.variants(with_jit=True, without_jit=True)
    def test_bayes_non_finite(self):
        update = self.variant(sw.bayes_update)
        state = update(sw.bayes_init(3), jnp.array([-1.0, jnp.nan, -2.0]))
        chex.assert_trees_all_close(
            sw.bayes_posterior(state), jax.nn.softmax(jnp.array([-1.0, -jnp.inf, -2.0]))
        )
        chex.assert_trees_all_equal(update(state, jnp.full((3,), jnp.nan)), state)
        # Only the dead head is finite: nothing to renormalise, skipped as well.
        chex.assert_trees_all_equal(update(state, jnp.array([-jnp.inf, 0.0, -jnp.inf])), state)

    @chex.variants(with_jit=True, without_jit=True)
    def test_uniform_stays_uniform(self):
        update = self.variant(sw.uniform_update)
        state = sw.uniform_init(4)
        for ell in np.random.default_rng(5).normal(scale=10.0, size=(5, 4)):
            state = update(state, jnp.asarray(ell, jnp.float32))
        chex.assert_trees_all_close(sw.uniform_posterior(state), jnp.full((4,), 0.25))
        assert int(state.step) == 6

    @parameterized.parameters("switch", "bayes", "uniform")
    def test_make_averager(self, kind):
        functions = {
            "switch": (sw.switch_update, sw.switch_posterior, lambda: sw.switch_init(3, 0.9)),
            "bayes": (sw.bayes_update, sw.bayes_posterior, lambda: sw.bayes_init(3)),
            "uniform": (sw.uniform_update, sw.uniform_posterior, lambda: sw.uniform_init(3)),
        }
        update, posterior, init = functions[kind]
        averager = sw.make_averager(kind, 3, theta=0.9)
        chex.assert_trees_all_equal(averager.init(), init())
        state, posteriors = jax.jit(averager.update_sequence)(averager.init(), _VECTOR_ELL)
        expected = _feed(init(), _VECTOR_ELL, update)
        chex.assert_trees_all_close(state, expected, atol=1e-6)
        chex.assert_trees_all_close(posteriors[-1], posterior(expected), atol=1e-6)
        chex.assert_trees_all_close(averager.posterior(state), posterior(expected), atol=1e-6)


class CatchUpTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_replaces_exactly_the_heads_under_threshold(self):
        rng = np.random.default_rng(6)
        params = {
            "kernel": jnp.asarray(rng.normal(size=(4, 3, 2)), jnp.float32),
            "bias": jnp.asarray(rng.normal(size=(4, 2)), jnp.float32),
        }
        posterior = np.array([0.6, 1e-12, 0.4 - 2e-12, 1e-12])
        log_posterior = jnp.asarray(np.log(posterior), jnp.float32)
        new = self.variant(sw.catch_up)(params, log_posterior, -20.0)
        for name, leaf in params.items():
            leaf, new_leaf = np.asarray(leaf), np.asarray(new[name])
            average = np.tensordot(posterior, leaf, axes=1)
            np.testing.assert_allclose(new_leaf[[1, 3]], np.stack([average, average]), atol=1e-5)
            np.testing.assert_array_equal(new_leaf[[0, 2]], leaf[[0, 2]])

    def test_diverged_head_is_revived(self):
        params = jnp.array([[1.0, 2.0], [3.0, 4.0], [jnp.nan, jnp.inf]])
        log_posterior = jnp.log(jnp.array([0.25, 0.75, 0.0]))
        new = jax.jit(sw.catch_up)(params, log_posterior)
        chex.assert_trees_all_close(new[2], jnp.array([2.5, 3.5]))
        chex.assert_trees_all_equal(new[:2], params[:2])

    def test_nothing_under_threshold_is_identity(self):
        params = {"w": jnp.arange(6.0).reshape(3, 2)}
        new = sw.catch_up(params, jnp.log(jnp.array([0.2, 0.3, 0.5])), threshold=-20.0)
        chex.assert_trees_all_equal(new, params)


class ValidationTest(chex.TestCase):
    @parameterized.parameters(0, -2, 2.0, True, "3")
    def test_bad_num_models(self, num_models):
        for make in (sw.switch_init, sw.bayes_init, sw.uniform_init):
            with pytest.raises(ValueError, match="num_models"):
                make(num_models)
        with pytest.raises(ValueError, match="num_models"):
            sw.make_averager("switch", num_models)

    @parameterized.parameters(0.0, 1.0, -0.5, 1.5, float("nan"), float("inf"))
    def test_bad_theta(self, theta):
        with pytest.raises(ValueError, match="theta") as error:
            sw.switch_init(3, theta)
        assert str(theta) in str(error.value)
        with pytest.raises(ValueError, match="theta"):
            sw.make_averager("bayes", 3, theta=theta)
        with pytest.raises(ValueError, match="theta"):
            sw.switch_init(3, np.array([0.5, 0.5]))

    def test_bad_kind(self):
        with pytest.raises(ValueError, match="kind.*'median'"):
            sw.make_averager("median", 3)

    def test_bad_log_likelihood_shapes(self):
        for state, update in (
            (sw.switch_init(3), sw.switch_update),
            (sw.bayes_init(3), sw.bayes_update),
            (sw.uniform_init(3), sw.uniform_update),
        ):
            for shape in ((2,), (3, 1), (), (1, 3)):
                with pytest.raises(ValueError, match=r"log_likelihoods.*\(3,\)"):
                    update(state, jnp.zeros(shape))
        with pytest.raises(ValueError, match="log_likelihoods_seq"):
            sw.switch_update_sequence(sw.switch_init(3), jnp.zeros((5, 2)))
        with pytest.raises(ValueError, match="log_likelihoods_seq"):
            sw.switch_update_sequence(sw.switch_init(3), jnp.zeros((3,)))

    def test_bad_catch_up_arguments(self):
        with pytest.raises(ValueError, match=r"head_params.*\['w'\]"):
            sw.catch_up({"w": jnp.zeros((2, 4))}, jnp.zeros(3))
        with pytest.raises(ValueError, match="log_posterior"):
            sw.catch_up({"w": jnp.zeros((3, 4))}, jnp.zeros((3, 1)))
        with pytest.raises(ValueError, match="threshold"):
            sw.catch_up({"w": jnp.zeros((3, 4))}, jnp.zeros(3), threshold=float("nan"))
