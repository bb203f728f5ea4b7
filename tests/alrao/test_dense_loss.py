"""The fused objective of dense copies (``alrao_loss_dense``) against the objective on the copies' outputs.

The reference is :func:`alrao_loss` on the outputs of the copies (their non-finite parameters zeroed,
as the step did before the fused objective), differentiated by JAX: same loss, same ``aux``, same
gradients with respect to the copies and the features, for classification, per-token classification
and regression, with dropped copies (NaN parameters, an overflowing output, every copy) and chunks that
do not divide ``N``. A dropped copy's gradient is zero in the fused objective (the reference's may be
NaN there; the step zeroes it either way).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from randlr_jax.alrao import _copies as cc
from randlr_jax.alrao import _optimizers as alrao

N, D, K = 5, 6, 7
TOL = dict(rtol=1e-5, atol=1e-6)


def _reference(head, features, targets, log_posterior, task):
    finite = cc.copies_finite(head)
    safe = cc.zero_nonfinite_copies(head, finite)
    own = cc.apply_copies(safe, jax.lax.stop_gradient(features))
    mix = cc.apply_copies(jax.lax.stop_gradient(safe), features)
    return alrao.alrao_loss(own, mix, targets, log_posterior, finite, task=task)


def _dense(head, features, targets, log_posterior, task, chunk):
    return alrao.alrao_loss_dense(
        head, features, targets, log_posterior, chunk_size=chunk, task=task
    )


@functools.cache
def _grad_fn(fn, *static):
    grad = jax.value_and_grad(fn, argnums=(0, 1), has_aux=True)
    return jax.jit(grad, static_argnums=tuple(range(4, 4 + len(static))))


def _case(task, shape, dropped, seed=0):
    rng = np.random.default_rng(seed)
    kernel = rng.normal(size=(N, D, K)).astype(np.float32)
    bias = rng.normal(size=(N, K)).astype(np.float32)
    if dropped == "nan":
        kernel[1, 2, 3] = np.nan  # one weight: its whole output column is NaN
    elif dropped == "inf_bias_and_overflow":
        bias[3, 2] = np.inf
        kernel[0] *= 1e38  # finite parameters, overflowing outputs
    elif dropped == "all":
        kernel[:] = np.nan
    features = np.maximum(rng.normal(size=shape + (D,)), 0).astype(np.float32)
    if task == "classification":
        targets = jnp.asarray(rng.integers(0, K, shape), jnp.int32)
    else:
        targets = jnp.asarray(rng.normal(size=shape + (K,)), jnp.float32)
    log_posterior = jax.nn.log_softmax(jnp.asarray(rng.normal(size=N), jnp.float32))
    head = {"copies": {"kernel": jnp.asarray(kernel), "bias": jnp.asarray(bias)}}
    return head, jnp.asarray(features), targets, log_posterior


@pytest.mark.parametrize(
    "task, shape, dropped, chunks",
    [
        # Chunks of 1 (a loop over copies), 2 and 3 (strided, padded: N = 5), N (no loop).
        ("classification", (3,), None, (1, 2)),
        ("classification", (3,), "nan", (3,)),
        ("classification", (2, 4), "inf_bias_and_overflow", (1,)),
        ("classification", (3,), "all", (N,)),
        ("regression", (3,), "nan", (2,)),
        ("regression", (2, 3), "inf_bias_and_overflow", (1,)),
    ],
)
def test_fused_objective_equals_the_objective_on_outputs(task, shape, dropped, chunks):
    args = _case(task, shape, dropped)
    (ref_loss, ref_aux), (ref_head, ref_features) = _grad_fn(_reference, task)(*args, task)
    finite = np.asarray(ref_aux["finite"])
    for chunk in chunks:
        (loss, aux), (g_head, g_features) = _grad_fn(_dense, task, chunk)(*args, task, chunk)
        np.testing.assert_allclose(loss, ref_loss, **TOL)
        assert set(aux) == set(ref_aux)
        for key in ref_aux:
            np.testing.assert_allclose(aux[key], ref_aux[key], err_msg=key, **TOL)
        np.testing.assert_allclose(g_features, ref_features, **TOL)
        for name in ("kernel", "bias"):
            got, want = g_head["copies"][name], ref_head["copies"][name]
            np.testing.assert_allclose(got[finite], want[finite], err_msg=name, **TOL)
            assert not np.any(np.asarray(got)[~finite])  # a dropped copy: exactly zero
    assert (
        int(np.sum(~finite)) == {None: 0, "nan": 1, "inf_bias_and_overflow": 2, "all": N}[dropped]
    )


def test_fused_objective_value_alone_equals_its_differentiated_pass():
    # Not differentiated, the pass computes no gradient: the same loss and aux.
    args = _case("classification", (3,), "nan", seed=1)
    loss, aux = jax.jit(_dense, static_argnums=(4, 5))(*args, "classification", 2)
    (ref_loss, ref_aux), grads = _grad_fn(_dense, "classification", 2)(*args, "classification", 2)
    np.testing.assert_allclose(loss, ref_loss, **TOL)
    for key in ref_aux:
        np.testing.assert_allclose(aux[key], ref_aux[key], err_msg=key, **TOL)
    # The gradient computed in the forward pass scales with the loss's cotangent (chain rule).
    scaled = jax.jit(
        jax.grad(lambda h, f: -3.0 * _dense(h, f, *args[2:], "classification", 2)[0], (0, 1))
    )(*args[:2])
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, -3.0 * b, **TOL), scaled, grads)


def test_fused_objective_bad_inputs_raise():
    head, features, targets, log_posterior = _case("classification", (3,), None)
    with pytest.raises(ValueError, match="head_params"):
        alrao.alrao_loss_dense(
            {"kernel": head["copies"]["kernel"]}, features, targets, log_posterior
        )
    with pytest.raises(ValueError, match="features"):
        alrao.alrao_loss_dense(head, features[:, :-1], targets, log_posterior)
    with pytest.raises(ValueError, match="targets"):
        alrao.alrao_loss_dense(head, features, targets[:-1], log_posterior)
    with pytest.raises(ValueError, match="log_posterior"):
        alrao.alrao_loss_dense(head, features, targets, log_posterior[:-1])
    for chunk in (0, N + 1, 1.5):
        with pytest.raises(ValueError, match="chunk_size"):
            alrao.alrao_loss_dense(head, features, targets, log_posterior, chunk_size=chunk)


def test_default_chunk_follows_the_copy_shards():
    assert cc.default_copy_chunk(None, 8) == 1
    assert cc.default_copy_chunk(None, 8, cc.SMALL_OUTPUTS // 8) == 8  # small: all at once
    assert cc.default_copy_chunk(None, 8, cc.SMALL_OUTPUTS // 8 + 1) == 1
    assert cc.default_copy_chunk(3, 8) == 3
    with cc.copy_shards(4):
        assert cc.default_copy_chunk(None, 8) == 4  # one copy per device and iteration
        assert cc.default_copy_chunk(None, 6) == 1  # 4 does not divide 6
        assert cc.default_copy_chunk(2, 8) == 2
    assert cc.default_copy_chunk(None, 8) == 1
