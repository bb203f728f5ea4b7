"""Alrao's classifier copies at scale: chunked over the copy axis, and sharded along it (model parallel).

Every test compares against the reference: the unchunked head on one device. Compiled steps and initial
states are cached across tests (compilation dominates the run time).
"""

from __future__ import annotations

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import PartitionSpec as P

from randlr_jax import models
from randlr_jax.alrao import _copies as cc
from randlr_jax.alrao import _optimizers as alrao
from randlr_jax.alrao import _sharding as copy_sharding
from randlr_jax.alrao import _step as alrao_step
from randlr_jax.training import create_train_state

K, N, D, IN = 11, 4, 6, 5
TOL = dict(rtol=1e-5, atol=1e-6)


def _data(n=16, seed=0):
    rng = np.random.default_rng(seed)
    return {
        "x": rng.normal(size=(n, IN)).astype(np.float32),
        "y": rng.integers(0, K, n).astype(np.int32),
    }


def _model(chunk=None, num_copies=N, task="classification", outputs=K):
    head = cc.AlraoHead(
        num_outputs=outputs, num_copies=num_copies, task=task, copy_chunk_size=chunk
    )
    return models.make_model("mlp", widths=(D,), head=head)


@functools.cache
def _tx(optimizer):
    if optimizer == "sgd":
        return alrao.alrao_sgd(jax.random.key(1), 1e-3, 1.0, N, momentum=0.9)
    if optimizer == "adam":
        return alrao.alrao_adam(jax.random.key(1), 1e-4, 1e-1, N)
    return optax.sgd(0.1)


def _with_posterior(state, logits):
    """A non-uniform switch posterior (as after some observations); numpy: no eager op to compile."""
    sw = cc.get_switch_state(state.model_state)
    logits = np.asarray(logits, np.float64)
    log_probs = logits - np.log(np.exp(logits - logits.max()).sum()) - logits.max()
    log_weights = jnp.asarray(np.stack([np.log(0.5) + log_probs] * 2), jnp.float32)
    return state.replace(
        model_state=cc.set_switch_state(state.model_state, sw._replace(log_weights=log_weights))
    )


@functools.cache
def _state(optimizer="plain", num_copies=N, nan_copy=None, task="classification", outputs=K):
    if nan_copy is not None:
        state = _state(optimizer, num_copies, None, task, outputs)
        head = jax.tree.map(lambda p: _nan_at(p, nan_copy), state.params["head"])
        return state.replace(params={**state.params, "head": head})
    model = _model(num_copies=num_copies, task=task, outputs=outputs)
    state = create_train_state(model, _tx(optimizer), jax.random.key(0), _data()["x"][:1])
    return _with_posterior(state, np.linspace(-1.0, 1.5, num_copies))


def _nan_at(leaf, index):
    leaf = np.array(leaf)
    leaf[index] = np.nan
    return jnp.asarray(leaf)


@functools.cache
def _jitted_step(optimizer, chunk=None):
    return jax.jit(alrao_step.make_alrao_train_step(_model(chunk), _tx(optimizer)))


@functools.cache
def _reference_run(optimizer, nan_copy=None, num_steps=3):
    """State and metrics after ``num_steps`` steps of the unchunked step on one device."""
    state, metrics = _state(optimizer, nan_copy=nan_copy), []
    for seed in range(num_steps):
        state, m = _jitted_step(optimizer)(state, _data(seed=seed))
        metrics.append(m)
    return state, metrics


def _key_data(x):
    if isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
        return jax.random.key_data(x)
    return x


def _close(a, b, rtol=1e-5, atol=1e-6):
    """Trees equal up to float rounding (NaN where the other has NaN: dropped copies)."""
    a, b = (jax.tree.map(_key_data, jax.device_get(t)) for t in (a, b))
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=rtol, atol=atol)


# ---------------------------------------------------------------- chunked head computation


@pytest.mark.parametrize("task", ["classification", "regression"])
def test_chunked_head_output_and_gradients_equal_unchunked(task):
    outputs, chunk = (K, 3) if task == "classification" else (3, 2)  # a partial last chunk
    weights = jnp.asarray(np.random.default_rng(1).normal(size=(16, outputs)), jnp.float32)

    @functools.partial(jax.jit, static_argnums=0)
    def output_and_grads(chunk, state, x):
        model = _model(chunk, task=task, outputs=outputs)

        def f(params):
            out = model.apply({"params": params, **state.model_state}, x)
            return jnp.sum(weights * out), out

        with cc.mixture_gradient_allowed():  # the mixture's gradient on purpose
            (_, out), grads = jax.value_and_grad(f, has_aux=True)(state.params)
        return out, grads

    x = _data()["x"]
    # Copy 1's parameters NaN: it is dropped (its gradients are NaN, as unchunked).
    for nan_copy in (None, 1):
        state = _state(nan_copy=nan_copy, task=task, outputs=outputs)
        reference = output_and_grads(None, state, x)
        _close(output_and_grads(chunk, state, x), reference, **TOL)
        chex.assert_tree_all_finite(reference[0])
    if task == "regression":
        return
    # Copies split over 4 devices, the batch over 2: the same outputs and gradients.
    state = _state()
    mesh = copy_sharding.make_copy_mesh(2, 4)
    sharded, x_sharded = (
        copy_sharding.shard_state(state, mesh),
        jax.device_put(x, copy_sharding.batch_sharding(mesh)),
    )
    kernel = sharded.params["head"]["copies"]["kernel"]
    assert kernel.sharding.shard_shape(kernel.shape) == (1, D, K)
    reference = output_and_grads(None, state, x)
    _close(output_and_grads(None, sharded, x_sharded), reference, **TOL)
    _close(output_and_grads(chunk, sharded, x_sharded), reference, **TOL)
    # No finite copy: the uniform distribution.
    all_nan = jax.tree.map(
        lambda p: jnp.asarray(np.full(p.shape, np.nan, np.float32)), state.params["head"]
    )
    out, _ = output_and_grads(chunk, state.replace(params={**state.params, "head": all_nan}), x)
    np.testing.assert_allclose(out, np.full((16, K), -np.log(K)), rtol=1e-6)


def _loss_inputs(nan_copy):
    state = _state(nan_copy=nan_copy)
    features = _model().apply({"params": state.params}, _data()["x"], method="features")
    log_post = _model().head.averager().log_posterior(cc.get_switch_state(state.model_state))
    params_finite = cc.copies_finite(state.params["head"])
    head = cc.zero_nonfinite_copies(state.params["head"], params_finite)
    return head, features, log_post, params_finite


@functools.partial(jax.jit, static_argnames=("chunk", "task", "sigma"))
def _loss_and_grads(head, features, targets, log_post, params_finite, chunk, task, sigma=1.0):
    """``alrao_loss`` (``chunk=None``) or ``alrao_loss_chunked``, with gradients to head and features."""

    def loss(head, features):
        if chunk is None:
            own = cc.apply_copies(head, jax.lax.stop_gradient(features))
            mix = cc.apply_copies(jax.lax.stop_gradient(head), features)
            return alrao.alrao_loss(
                own, mix, targets, log_post, params_finite, task=task, sigma=sigma
            )
        return alrao.alrao_loss_chunked(
            cc.apply_copies, head, features, targets, log_post, params_finite,
            chunk_size=chunk, task=task, sigma=sigma,
        )  # fmt: skip

    return jax.value_and_grad(loss, (0, 1), has_aux=True)(head, features)


@pytest.mark.parametrize("chunk, nan_copy", [(1, None), (3, 2)])
def test_chunked_loss_equals_unchunked_with_gradients(chunk, nan_copy):
    head, features, log_post, params_finite = _loss_inputs(nan_copy)
    args = (head, features, _data()["y"], log_post, params_finite)
    (loss_a, aux_a), grads_a = _loss_and_grads(*args, chunk=None, task="classification")
    (loss_b, aux_b), grads_b = _loss_and_grads(*args, chunk=chunk, task="classification")
    _close(loss_b, loss_a, **TOL)
    assert set(aux_a) == set(aux_b)
    _close(aux_b, aux_a, **TOL)  # the mixture, the copies' log-likelihoods, the flags
    _close(grads_b, grads_a, **TOL)
    assert int((~aux_b["finite"]).sum()) == (0 if nan_copy is None else 1)
    chex.assert_tree_all_finite((grads_b, aux_b["mixture_log_probs"]))


def test_chunked_regression_loss_and_language_model_shapes_equal_unchunked():
    rng = np.random.default_rng(0)
    head = {"copies": {"kernel": rng.normal(size=(5, 4, 2)), "bias": rng.normal(size=(5, 2))}}
    head = jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), head)
    log_post = jax.nn.log_softmax(jnp.arange(5.0))
    finite = jnp.ones(5, bool)
    # Regression: targets (B, K).
    features = jnp.asarray(rng.normal(size=(8, 4)), jnp.float32)
    targets = jnp.asarray(rng.normal(size=(8, 2)), jnp.float32)
    args = (head, features, targets, log_post, finite)
    reference = _loss_and_grads(*args, chunk=None, task="regression", sigma=0.5)
    _close(_loss_and_grads(*args, chunk=2, task="regression", sigma=0.5), reference, **TOL)
    # Per-token classification: features (B, L, D), labels (B, L).
    features = jnp.asarray(rng.normal(size=(3, 7, 4)), jnp.float32)
    labels = jnp.asarray(rng.integers(0, 2, (3, 7)), jnp.int32)
    args = (head, features, labels, log_post, finite)
    reference = _loss_and_grads(*args, chunk=None, task="classification")
    _close(_loss_and_grads(*args, chunk=2, task="classification"), reference, **TOL)


def test_chunked_train_steps_equal_unchunked_with_a_dropped_copy():
    state, metrics = _state("sgd", nan_copy=0), []
    for seed in range(3):
        state, m = _jitted_step("sgd", chunk=3)(state, _data(seed=seed))
        metrics.append(m)
    ref_state, ref_metrics = _reference_run("sgd", nan_copy=0)
    assert int(metrics[-1]["num_dropped"]) == 1
    _close(metrics, ref_metrics, **TOL)
    _close(state, ref_state, **TOL)


def test_chunked_language_model_step_equals_unchunked():
    vocab, batch_size, length = 13, 4, 6

    def lm(chunk):
        head = cc.AlraoHead(num_outputs=vocab, num_copies=5, copy_chunk_size=chunk)
        return models.make_model(
            "char_lstm", vocab_size=vocab, embed_dim=4, hidden_size=4, num_layers=1, head=head
        )

    ref, chunked = lm(None), lm(2)
    tx = alrao.alrao_sgd(jax.random.key(0), 1e-3, 1.0, 5)
    carry = ref.initial_carry(batch_size)
    tokens = np.random.default_rng(0).integers(0, vocab, (batch_size, length + 1))
    batch = {"x": tokens[:, :-1].astype(np.int32), "y": tokens[:, 1:].astype(np.int32)}
    state = create_train_state(ref, tx, jax.random.key(0), batch["x"][:1], carry=carry)
    state = _with_posterior(state, np.linspace(1.0, -1.0, 5))
    step_ref = jax.jit(alrao_step.make_alrao_train_step(ref, tx, task="language_model"))
    step_chunked = jax.jit(alrao_step.make_alrao_train_step(chunked, tx, task="language_model"))
    s_ref, m_ref = step_ref(state, batch)
    s_chunked, m_chunked = step_chunked(state, batch)
    _close(m_chunked, m_ref, **TOL)
    _close(s_chunked, s_ref, **TOL)


def _step_temp_bytes(chunk, num_copies=4, classes=2000, batch_size=128, width=16):
    head = cc.AlraoHead(num_outputs=classes, num_copies=num_copies, copy_chunk_size=chunk)
    model = models.make_model("mlp", widths=(width,), head=head)
    tx = alrao.alrao_sgd(jax.random.key(0), 1e-3, 1.0, num_copies)
    state = jax.eval_shape(
        lambda: create_train_state(model, tx, jax.random.key(0), jnp.zeros((1, IN)))
    )
    batch = {
        "x": jax.ShapeDtypeStruct((batch_size, IN), jnp.float32),
        "y": jax.ShapeDtypeStruct((batch_size,), jnp.int32),
    }
    step = jax.jit(alrao_step.make_alrao_train_step(model, tx))
    return step.lower(state, batch).compile().memory_analysis().temp_size_in_bytes


def test_the_step_holds_one_chunk_of_outputs_never_all_copies():
    # One copy's logits: 128 x 2000 floats = 1 MB. The step's fused objective holds a few arrays of
    # one copy's outputs and the copies' gradient (8 x 16 x 2000 floats = 1 MB), never the
    # (N, B, K) outputs of all copies (8 MB).
    logits, n = 4 * 128 * 2000, 8
    one, default = (_step_temp_bytes(chunk, num_copies=n) for chunk in (1, None))
    assert default == one  # large outputs: one copy at a time
    assert one < 7 * logits < n * logits


@pytest.mark.parametrize("chunk", [0, N + 1, 1.5, True])
def test_bad_chunk_size_raises(chunk):
    with pytest.raises(ValueError, match="copy_chunk_size"):
        _model(chunk).init(jax.random.key(0), jnp.zeros((2, IN)))


# ---------------------------------------------------------------- copies sharded over devices


def _sharded_run(optimizer, mesh, chunk=None, num_steps=3):
    state = copy_sharding.shard_state(_state(optimizer), mesh)
    step = alrao_step.make_alrao_train_step(_model(chunk), _tx(optimizer))
    # No donation: the unsharded initial state is cached and may share buffers with ``state``.
    step = copy_sharding.jit_sharded_step(step, state, mesh, donate=False)
    metrics = []
    for seed in range(num_steps):
        state, m = step(state, jax.device_put(_data(seed=seed), copy_sharding.batch_sharding(mesh)))
        metrics.append(m)
    return state, metrics


def _assert_copies_sharded(state, mesh):
    copies = int(mesh.shape["copies"])
    for leaf in jax.tree.leaves(state.params["head"]):
        assert leaf.sharding.spec == P("copies")
        assert leaf.sharding.shard_shape(leaf.shape) == (N // copies,) + leaf.shape[1:]
    for leaf in jax.tree.leaves(state.params["body"]):
        assert leaf.sharding.is_fully_replicated


@pytest.mark.parametrize("data, copies, optimizer", [(4, 2, "sgd"), (2, 4, "adam")])
def test_sharded_steps_equal_one_device(data, copies, optimizer):
    mesh = copy_sharding.make_copy_mesh(data, copies, jax.devices()[: data * copies])
    state, metrics = _sharded_run(optimizer, mesh)
    ref_state, ref_metrics = _reference_run(optimizer)
    _close(metrics, ref_metrics, **TOL)
    _close(state, ref_state, **TOL)
    _assert_copies_sharded(state, mesh)
    # The optimizer's per-copy leaves (momentum or moments, the copies' rates) stay split as well.
    head_opt = [
        leaf
        for path, leaf in jax.tree_util.tree_leaves_with_path(state.opt_state)
        if "'head'" in jax.tree_util.keystr(path) and leaf.ndim
    ]
    assert len(head_opt) == (3 if optimizer == "sgd" else 5)  # trace or (mu, nu) x 2, rates
    assert all(leaf.sharding.spec == P("copies") for leaf in head_opt)


def test_chunked_and_sharded_steps_equal_one_device():
    mesh = copy_sharding.make_copy_mesh(4, 2)
    state, metrics = _sharded_run("sgd", mesh, chunk=2)
    ref_state, ref_metrics = _reference_run("sgd")
    _close(metrics, ref_metrics, **TOL)
    _close(state, ref_state, **TOL)
    _assert_copies_sharded(state, mesh)


def test_state_shardings_layout():
    mesh = copy_sharding.make_copy_mesh(4, 2)
    specs = jax.tree.map(lambda s: s.spec, copy_sharding.state_shardings(_state("adam"), mesh))
    assert specs.params["head"] == {"copies": {"kernel": P("copies"), "bias": P("copies")}}
    assert all(s == P() for s in jax.tree.leaves(specs.params["body"]))
    assert all(s == P() for s in jax.tree.leaves(specs.model_state))  # the switch: O(N), replicated
    by_path = {jax.tree_util.keystr(p): s for p, s in jax.tree_util.tree_leaves_with_path(specs)}
    assert [s for path, s in by_path.items() if "copy_lrs" in path] == [P("copies")]
    kernels = {path: s for path, s in by_path.items() if "opt_state" in path and "kernel" in path}
    head_kernels = [s for path, s in kernels.items() if "['head']['copies']" in path]
    assert head_kernels == [P("copies")] * 2  # Adam's mu and nu of the copies' kernel
    assert all(s == P() for path, s in kernels.items() if "['body']" in path)  # mu, nu, rates
    assert copy_sharding.batch_sharding(mesh).spec == P("data")


def test_bad_mesh_and_sharding_arguments_raise():
    with pytest.raises(ValueError, match="data \\* copies"):
        copy_sharding.make_copy_mesh(3, 2)
    with pytest.raises(ValueError, match="data \\* copies"):
        copy_sharding.make_copy_mesh(2, 2, jax.devices()[:8])
    with pytest.raises(ValueError, match="copies"):
        copy_sharding.make_copy_mesh(8, 0)
    with pytest.raises(ValueError, match="data"):
        copy_sharding.make_copy_mesh(1.5, 2)
    state = _state(num_copies=6)
    with pytest.raises(ValueError, match="N=6.*'copies' axis size, got 4"):
        copy_sharding.state_shardings(state, copy_sharding.make_copy_mesh(2, 4))
    with pytest.raises(ValueError, match="head_key='classifier'"):
        copy_sharding.state_shardings(state, copy_sharding.make_copy_mesh(4, 2), "classifier")
    data_only = jax.sharding.Mesh(np.asarray(jax.devices()), ("data",))
    with pytest.raises(ValueError, match="'copies' axis"):
        copy_sharding.state_shardings(state, data_only)
