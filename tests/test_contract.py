"""The contract every public transformation of the library passes (after Optax's ``contrib/_common_test.py``).

Each case builds a transformation over a parameter tree shaped like a small model (a pre-classifier Dense
layer under ``body`` and ``N = 2`` stacked classifier copies under ``head``). The checks: the same updates
jitted, eager and under ``pmap`` (replicated inputs, and per-device gradients averaged with ``lax.pmean``
on 8 devices); usable inside ``optax.chain``, ``optax.masked``, ``optax.MultiSteps`` and
``optax.inject_hyperparams`` (when it has numeric hyperparameters); float32 and bfloat16 parameters keep
their dtype; no recompilation on the second call; convergence on a small quadratic.
Later issues add their transformations to ``CASES``.
"""

from __future__ import annotations

import functools
import importlib
import pathlib

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from randlr_jax.alrao import _features as features
from randlr_jax.alrao import _optimizers as alrao
from tests.helpers import ContractCase as Case

KEY = jax.random.key(0)


def alrao_base_momentum(momentum, nesterov=False):
    """``alrao_base`` over (Nesterov) momentum; ``momentum`` may be injected (traced)."""
    return features.alrao_base(optax.trace(momentum, nesterov=nesterov), KEY, 0.02, 0.2)


def alrao_base_adam(b1):
    """``alrao_base`` over Adam's direction; ``b1`` may be injected (traced)."""
    return features.alrao_base(optax.scale_by_adam(b1=b1), KEY, 0.01, 0.1)


CASES = [
    Case(
        "scale_by_feature_lrs",
        lambda: optax.chain(features.scale_by_feature_lrs(KEY, 0.05, 0.5), optax.scale(-1.0)),
    ),
    Case(
        "scale_by_copy_lrs",  # the copies' rates on the head, plain SGD on the body
        lambda: optax.partition(
            {
                "head": optax.chain(
                    alrao.scale_by_copy_lrs(jnp.array([0.1, 0.5])), optax.scale(-1.0)
                ),
                "body": optax.sgd(0.1),
            },
            alrao.head_label_fn(),
        ),
    ),
    Case(
        "alrao_sgd",
        lambda: alrao.alrao_sgd(KEY, 0.05, 0.5, 2),
        inject=(
            alrao.alrao_sgd,
            dict(key=KEY, lr_min=0.05, lr_max=0.5, num_copies=2),
            "learning_rate_scale",
            0.5,
        ),
    ),
    Case(
        "alrao_sgd_momentum",
        lambda: alrao.alrao_sgd(KEY, 0.02, 0.2, 2, momentum=0.9),
        inject=(
            alrao.alrao_sgd,
            dict(key=KEY, lr_min=0.02, lr_max=0.2, num_copies=2),
            "momentum",
            0.5,
        ),
    ),
    Case(
        "alrao_adam",
        lambda: alrao.alrao_adam(KEY, 0.01, 0.1, 2),
        inject=(alrao.alrao_adam, dict(key=KEY, lr_min=0.01, lr_max=0.1, num_copies=2), "b1", 0.5),
        steps_to_converge=600,
    ),
    Case(  # the generic form: any rate-free direction (here Adam's) under Alrao's rates
        "alrao_generic_adam_direction",
        lambda: alrao.alrao(optax.scale_by_adam(), KEY, 0.01, 0.1, 2),
        steps_to_converge=600,
    ),
    Case(
        "scale_by_lr_tree",
        lambda: optax.chain(features.scale_by_lr_tree(_rate_tree()), optax.scale(-1.0)),
    ),
    Case("alrao_base", lambda: features.alrao_base(optax.identity(), KEY, 0.05, 0.5)),
    Case(  # per-feature rates without copies over momentum (0.1's ``alrao_sgd_body``)
        "alrao_base_momentum",
        lambda: alrao_base_momentum(0.9),
        inject=(alrao_base_momentum, dict(nesterov=True), "momentum", 0.5),
    ),
    Case(  # ... and over Adam's direction (0.1's ``alrao_adam_body``)
        "alrao_base_adam",
        lambda: alrao_base_adam(0.9),
        inject=(alrao_base_adam, {}, "b1", 0.5),
        steps_to_converge=600,
    ),
]
# Later issues add their transformations in modules ``tests/contract_cases_*.py``, each defining
# ``CASES`` (a list of ``tests.helpers.ContractCase``); they are collected here.
for _path in sorted(pathlib.Path(__file__).parent.glob("contract_cases_*.py")):
    CASES += importlib.import_module(f"tests.{_path.stem}").CASES
IDS = [c.name for c in CASES]


def _rate_tree():
    """Per-feature rates shaped like :func:`_params` (a feature is the last axis)."""
    return {
        "body": {
            "Dense_0": {"kernel": jnp.linspace(0.05, 0.4, 4)[None], "bias": jnp.full((4,), 0.1)}
        },
        "head": {"copies": {"kernel": jnp.full((2, 1, 3), 0.2), "bias": jnp.full((2, 3), 0.3)}},
    }


def _traced(args) -> bool:
    """Whether ``args`` are tracers (inside ``jit``/``pmap``) rather than concrete arrays."""
    return any(isinstance(x, jax.core.Tracer) for x in jax.tree.leaves(args))


def _eager(fn):
    """Run ``fn`` really un-jitted: under ``jax.disable_jit()`` (inner ``jit``s included), checked."""

    def run(*args):
        def probed(*a):
            # Concrete inputs, and jit disabled for the update's own inner ``jax.jit`` calls too.
            assert not _traced(a) and jax.config.jax_disable_jit, "the eager variant is jitted"
            return fn(*a)

        with jax.disable_jit():
            return probed(*args)

    return run


def _jitted(fn):
    """``jax.jit(fn)``, checked to trace ``fn``."""

    def probed(*args):
        assert _traced(args), "the jitted variant did not trace the update"
        return fn(*args)

    return jax.jit(probed)


def _pmapped(fn):
    """Run ``fn`` on every device with the same inputs (pmap) and return device 0's result."""

    def run(*args):
        n = jax.local_device_count()
        stacked = jax.tree.map(lambda x: jnp.broadcast_to(x, (n,) + x.shape), args)
        out = jax.pmap(lambda a: fn(*a))(stacked)
        return jax.tree.map(lambda x: x[0], out)

    return run


_VARIANTS = {"jit": _jitted, "eager": _eager, "pmap": _pmapped}
# What each variant is compared with: a reference computed once per case in the *other* mode, never by
# the variant's own wrapper (an eager run compared with an eager run cannot fail).
_REFERENCE_MODE = {"jit": "eager", "eager": "jit", "pmap": "eager"}


@functools.cache
def _reference(name: str, mode: str):
    """``(updates, new_state)`` of case ``name``'s first update, computed once, jitted or eager."""
    case = next(c for c in CASES if c.name == name)
    tx = case.make()
    params = _params()
    state = tx.init(params)
    grads = jax.grad(_quadratic)(params)
    return _VARIANTS[mode](lambda g, s, p: tx.update(g, s, p))(grads, state, params)


def _params(dtype=jnp.float32):
    k1, k2, k3, k4 = jax.random.split(jax.random.key(42), 4)
    tree = {
        "body": {
            "Dense_0": {
                "kernel": jax.random.normal(k1, (3, 4)),
                "bias": jax.random.normal(k2, (4,)),
            }
        },
        "head": {
            "copies": {
                "kernel": jax.random.normal(k3, (2, 4, 3)),
                "bias": jax.random.normal(k4, (2, 3)),
            }
        },
    }
    return jax.tree.map(lambda x: x.astype(dtype), tree)


def _target():
    return jax.tree.map(lambda p: jnp.full_like(p, 0.3), _params())


def _quadratic(params):
    return sum(
        0.5 * jnp.sum((p.astype(jnp.float32) - t) ** 2)
        for p, t in zip(jax.tree.leaves(params), jax.tree.leaves(_target()), strict=False)
    )


def _run(tx, params, steps):
    state = tx.init(params)

    def body(carry, _):
        params, state = carry
        grads = jax.grad(_quadratic)(params)
        updates, state = tx.update(grads, state, params)
        return (optax.apply_updates(params, updates), state), None

    (params, state), _ = jax.lax.scan(body, (params, state), None, length=steps)
    return params, state


@pytest.mark.parametrize("case", CASES, ids=IDS)
class TestContract:
    @pytest.mark.parametrize("variant", ["jit", "eager", "pmap"])
    def test_same_updates_jitted_eager_and_pmapped(self, case, variant):
        tx = case.make()  # a fresh instance: the reference's is another one
        params = _params()
        state = tx.init(params)
        grads = jax.grad(_quadratic)(params)
        updates, new_state = _VARIANTS[variant](lambda g, s, p: tx.update(g, s, p))(
            grads, state, params
        )
        reference, ref_state = _reference(case.name, _REFERENCE_MODE[variant])
        chex.assert_trees_all_close(updates, reference, rtol=1e-6, atol=1e-7)
        chex.assert_trees_all_close(new_state, ref_state, rtol=1e-6, atol=1e-7)
        if variant == "pmap":  # also against the jitted run
            reference, ref_state = _reference(case.name, "jit")
            chex.assert_trees_all_close(updates, reference, rtol=1e-6, atol=1e-7)
            chex.assert_trees_all_close(new_state, ref_state, rtol=1e-6, atol=1e-7)

    def test_inside_chain(self, case):
        """Between an elementwise clip and a negation, over two steps, with the ``value=`` a train step
        passes: the chain's updates are minus the case's own updates of the clipped gradients (the clip
        and the negation applied by hand), and the case's state is the chain's second entry, threaded
        from one step to the next."""
        tx = optax.chain(optax.clip(0.5), case.make(), optax.scale(-1.0))
        alone = optax.with_extra_args_support(case.make())
        params = _params()
        state, alone_state = tx.init(params), alone.init(params)
        update, alone_update = jax.jit(tx.update), jax.jit(alone.update)
        for _ in range(2):
            grads = jax.grad(_quadratic)(params)
            value = _quadratic(params)
            clipped = jax.tree.map(lambda g: jnp.minimum(jnp.maximum(g, -0.5), 0.5), grads)
            assert any(bool(jnp.any(jnp.abs(g) > 0.5)) for g in jax.tree.leaves(grads))
            updates, state = update(grads, state, params, value=value)
            expected, alone_state = alone_update(clipped, alone_state, params, value=value)
            negated = jax.tree.map(lambda u: -u, expected)
            chex.assert_trees_all_close(updates, negated, rtol=1e-6, atol=1e-7)
            assert len(state) == 3
            assert isinstance(state[0], optax.EmptyState) and isinstance(state[2], optax.EmptyState)
            chex.assert_trees_all_close(state[1], alone_state, rtol=1e-6, atol=1e-7)
            params = optax.apply_updates(params, expected)  # descend with the case's own step

    def test_inside_masked(self, case):
        # The head is masked off: its gradients must pass through untouched.
        params = _params()
        mask = {
            "body": jax.tree.map(lambda _: True, params["body"]),
            "head": jax.tree.map(lambda _: False, params["head"]),
        }
        tx = optax.masked(case.make(), mask)
        grads = jax.grad(_quadratic)(params)
        updates, _ = jax.jit(tx.update)(grads, tx.init(params), params)
        chex.assert_trees_all_equal(updates["head"], grads["head"])
        moved = jax.tree.map(lambda u, g: bool(jnp.any(u != g)), updates["body"], grads["body"])
        assert all(jax.tree.leaves(moved))

    def test_inside_multisteps(self, case):
        params = _params()
        tx = optax.MultiSteps(case.make(), every_k_schedule=2)
        state = tx.init(params)
        grads = jax.grad(_quadratic)(params)
        update = jax.jit(tx.update)
        first, state = update(grads, state, params)
        assert all(float(jnp.abs(u).max()) == 0.0 for u in jax.tree.leaves(first))
        second, state = update(grads, state, params)
        expected, _ = case.make().update(grads, case.make().init(params), params)
        chex.assert_trees_all_close(second, expected, rtol=1e-5, atol=1e-7)

    @pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
    def test_dtype_preserved(self, case, dtype):
        tx = case.make()
        params = _params(dtype)
        state = tx.init(params)
        grads = jax.tree.map(lambda g: g.astype(dtype), jax.grad(_quadratic)(params))
        updates, _ = jax.jit(tx.update)(grads, state, params)
        new_params = optax.apply_updates(params, updates)
        for p, u in zip(jax.tree.leaves(new_params), jax.tree.leaves(updates), strict=False):
            assert p.dtype == dtype and u.dtype == dtype

    def test_no_recompilation(self, case):
        chex.clear_trace_counter()  # the counter is keyed by the function's code, shared by the cases
        tx = case.make()
        params = _params()

        @jax.jit
        @chex.assert_max_traces(n=1)
        def step(params, state):
            updates, state = tx.update(jax.grad(_quadratic)(params), state, params)
            return optax.apply_updates(params, updates), state

        state = tx.init(params)
        for _ in range(3):
            params, state = step(params, state)

    def test_converges_on_quadratic(self, case):
        params = _params()
        final, _ = jax.jit(lambda p: _run(case.make(), p, case.steps_to_converge))(params)
        assert float(_quadratic(final)) < 1e-3 * float(_quadratic(params))


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_pmap_with_pmean_gradients(case):
    """The older data-parallel style: each device its own gradient, averaged with ``lax.pmean``.

    Two steps on 8 devices with different per-device gradients must keep the replicas identical and equal
    one device stepping with the mean gradient.
    """
    devices = jax.local_device_count()
    tx = case.make()
    params = _params()
    state = tx.init(params)
    keys = jax.random.split(jax.random.key(11), len(jax.tree.leaves(params)))
    noise = jax.tree.unflatten(
        jax.tree.structure(params),
        [
            jax.random.normal(k, (devices,) + p.shape)
            for k, p in zip(keys, jax.tree.leaves(params), strict=True)
        ],
    )

    def two_steps(params, state, noise, reduce):
        def step(carry, scale):
            params, state = carry
            grads = jax.tree.map(lambda g, e: g + scale * e, jax.grad(_quadratic)(params), noise)
            updates, state = tx.update(reduce(grads), state, params)
            return (optax.apply_updates(params, updates), state), None

        return jax.lax.scan(step, (params, state), jnp.array([1.0, -0.5]))[0]

    def replicate(tree):
        return jax.tree.map(lambda x: jnp.broadcast_to(x, (devices,) + x.shape), tree)

    per_device = jax.pmap(
        lambda p, s, e: two_steps(p, s, e, lambda g: jax.lax.pmean(g, "devices")),
        axis_name="devices",
    )(replicate(params), replicate(state), noise)
    mean_noise = jax.tree.map(lambda e: e.mean(axis=0), noise)
    reference = jax.jit(lambda p, s, e: two_steps(p, s, e, lambda g: g))(params, state, mean_noise)
    for device in range(devices):
        chex.assert_trees_all_close(
            jax.tree.map(lambda x, d=device: x[d], per_device), reference, rtol=1e-5, atol=1e-6
        )
    moved = jax.tree.map(lambda a, b: bool(jnp.any(a != b)), reference[0], params)
    assert any(jax.tree.leaves(moved))


@pytest.mark.parametrize(
    "case", [c for c in CASES if c.inject], ids=[c.name for c in CASES if c.inject]
)
def test_inject_hyperparams(case):
    factory, static, name, value = case.inject
    injected = optax.inject_hyperparams(factory, static_args=tuple(static))(
        **static, **{name: value}
    )
    params = _params()
    state = injected.init(params)
    assert float(state.hyperparams[name]) == pytest.approx(value)
    grads = jax.grad(_quadratic)(params)
    update = jax.jit(injected.update)
    updates, state = update(grads, state, params)
    direct = factory(**static, **{name: value})
    expected, _ = direct.update(grads, direct.init(params), params)
    chex.assert_trees_all_close(updates, expected, rtol=1e-5, atol=1e-7)
    # The injected value is really used: from the same state, another value gives other updates.
    same, _ = update(grads, state, params)
    state.hyperparams[name] = jnp.asarray(value * 0.5, jnp.float32)
    changed, _ = update(grads, state, params)
    assert not all(
        np.allclose(np.asarray(a, np.float32), np.asarray(b, np.float32))
        for a, b in zip(jax.tree.leaves(same), jax.tree.leaves(changed), strict=False)
    )
