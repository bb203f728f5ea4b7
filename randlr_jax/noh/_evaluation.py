"""Meta-test of a learned optimizer: a fresh optimizee trained by the frozen optimizer, evaluated on the way.

After meta-training, a learned optimizer (NOH's rate proposer, Andrychowicz et al.'s update proposer, or any
``optax.GradientTransformation`` it is compared with) is frozen and trains a freshly initialised optimizee for
``T`` steps on minibatches of shuffled epochs (the same index stream as meta-training's,
:func:`~randlr_jax.noh._meta_training.sample_batch_indices`), each step

.. math::

    g_t = \\nabla l(w_t; B_t), \\quad (u_t, s_{t+1}) = \\mathrm{opt}(g_t, s_t), \\quad w_{t+1} = w_t + u_t.

The ``T`` steps run as ``T / E`` compiled ``lax.scan`` chunks of ``E`` steps; after each chunk the whole
train, validation and test sets are evaluated (:func:`make_split_evaluator`), and a quantity of the
optimizer state may be traced at every step (:func:`trace_learning_rates`: NOH's per-parameter rates
``alpha_t`` of a few coordinates, the "start large, then decay" schedules of Fu et al. 2017, Fig. 3).

References:
  Fu et al, Neural Optimizers with Hypergradients for Tuning Parameter-Wise Learning Rates, 2017.
  Andrychowicz et al, `Learning to learn by gradient descent by gradient descent
  <https://arxiv.org/abs/1606.04474>`_, 2016.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax

from randlr_jax import _checks as checks
from randlr_jax.noh._meta_training import sample_batch_indices
from randlr_jax.noh._noh import flatten_tree, num_coordinates
from randlr_jax.training._steps import apply_step

LogitsFn = Callable[[Any, jax.Array], jax.Array]
"""``(params, x) -> logits`` of a classifier (e.g. ``lambda p, x: model.apply({"params": p}, x)``)."""


def make_split_evaluator(
    logits_fn: LogitsFn, splits: Mapping[str, Mapping[str, Any]]
) -> Callable[[Any], dict[str, jax.Array]]:
    """A jitted ``params -> {f"{split}_loss", f"{split}_accuracy"}`` over whole splits.

    For each split ``(x, y)`` of ``n`` examples: the mean cross-entropy
    ``-1/n sum_i log softmax(f(x_i))[y_i]`` and the accuracy ``1/n sum_i [argmax f(x_i) = y_i]``.
    The splits are put on the device once, here.

    Args:
      logits_fn: ``(params, x) -> (n, classes)`` logits.
      splits: split name -> ``{"x": inputs, "y": integer labels}``.

    Raises:
      ValueError: ``logits_fn`` not callable, ``splits`` empty or a split without ``x``/``y``.
    """
    checks.function("logits_fn", logits_fn, "a function (params, x) -> logits")
    if not isinstance(splits, Mapping) or not splits:
        checks.fail("splits", "a non-empty dict of {'x', 'y'} splits", splits)
    for name, split in splits.items():
        if not isinstance(split, Mapping) or not {"x", "y"} <= set(split):
            checks.fail(f"splits[{name!r}]", "a dict with 'x' and 'y'", split)
    on_device = {
        name: {"x": jnp.asarray(split["x"]), "y": jnp.asarray(split["y"])}
        for name, split in splits.items()
    }

    @jax.jit
    def evaluate(params):
        out = {}
        for name, split in on_device.items():
            logits = logits_fn(params, split["x"])
            loss = optax.softmax_cross_entropy_with_integer_labels(logits, split["y"]).mean()
            out[f"{name}_loss"] = loss
            out[f"{name}_accuracy"] = jnp.mean(jnp.argmax(logits, -1) == split["y"])
        return out

    return evaluate


def sample_coordinates(params: Any, num: int, *, seed: int) -> np.ndarray:
    """``num`` distinct coordinates of ``params`` (flattened as :func:`flatten_tree`), sorted.

    ``np.sort(np.random.default_rng(seed).choice(N, num, replace=False))`` for ``N`` the number of
    scalars in ``params``: the coordinates whose rates :func:`trace_learning_rates` follows.

    Raises:
      ValueError: ``num`` not in ``[1, N]``, a bad ``seed``.
    """
    total = num_coordinates(params)
    checks.positive_int("num", num)
    if num > total:
        raise ValueError(f"num must be at most the {total} coordinates of params, got {num}.")
    checks.nonnegative_int("seed", seed)
    return np.sort(np.random.default_rng(seed).choice(total, num, replace=False))


def trace_learning_rates(coordinates: Any) -> Callable[[Any], jax.Array]:
    """``state -> alpha[coordinates]``: NOH's per-parameter rates (``NOHAdamState.learning_rates``).

    For :func:`meta_evaluate`'s ``trace``; the state must be :func:`~randlr_jax.noh.noh_adam`'s own
    (not inside a chain).
    """
    coordinates = np.asarray(coordinates)
    if coordinates.ndim != 1 or not np.issubdtype(coordinates.dtype, np.integer):
        checks.fail(
            "coordinates", "a 1-D array of int coordinates", coordinates,
            shown=checks.brief(coordinates),
        )  # fmt: skip

    def trace(state):
        return flatten_tree(state.learning_rates)[coordinates]

    return trace


def meta_evaluate(
    tx: optax.GradientTransformation,
    loss_fn: Callable[[Any, Any], jax.Array],
    params: Any,
    data: Mapping[str, Any],
    *,
    key: chex.PRNGKey,
    num_steps: int,
    eval_every: int,
    batch_size: int,
    evaluate: Callable[[Any], Mapping[str, jax.Array]],
    trace: Callable[[Any], jax.Array] | None = None,
    mesh: Any = None,
) -> dict[str, list]:
    """Train ``params`` with the frozen ``tx`` for ``num_steps`` steps; ``evaluate`` every ``eval_every``.

    Minibatch ``t`` is ``data`` at row ``t`` of ``sample_batch_indices(key, n, num_steps,
    batch_size)`` (shuffled epochs, remainder dropped), gathered inside the compiled chunk of
    ``eval_every`` steps (module docstring). Every optimizer given the same ``key`` and ``params``
    sees the same minibatches from the same start: the comparison of a meta-test.

    Args:
      tx: the optimizer (frozen learned optimizer or a baseline).
      loss_fn: ``(params, batch) -> scalar`` training loss.
      params: the optimizee's initial parameters.
      data: the training set, ``{name: array}`` with a common leading axis of ``n`` examples.
      key: PRNG key of the minibatch order.
      num_steps: ``T``, a multiple of ``eval_every``.
      eval_every: ``E > 0``, steps per compiled chunk and between evaluations.
      batch_size: examples per step, ``<= n``.
      evaluate: ``params -> {metric: scalar}`` (e.g. :func:`make_split_evaluator`).
      trace: ``opt_state -> 1-D array`` recorded after every step (e.g. :func:`trace_learning_rates`);
        ``None``: nothing traced.
      mesh: data parallel on this mesh (``data`` and the parameters replicated, each gathered
        minibatch split over its ``"data"`` axis); ``None``: the default device.

    Returns:
      ``{"step": [E, 2E, ..., T], metric: [value after each chunk], ...}`` (floats), and with
      ``trace`` also ``"traced"``: ``T`` lists, the traced values after each step.

    Raises:
      ValueError: non-positive sizes, ``num_steps`` not a multiple of ``eval_every``, ``batch_size``
        larger than the data; a ``tx``, ``loss_fn``, ``evaluate`` or ``trace`` of the wrong kind.
    """
    checks.transformation("tx", tx)
    checks.function("loss_fn", loss_fn, "a function (params, batch) -> scalar loss")
    checks.function("evaluate", evaluate, "a function params -> {metric: scalar}")
    checks.function("trace", trace, "a function opt_state -> 1-D array", optional=True)
    checks.prng_key("key", key)
    for name, value in (
        ("num_steps", num_steps),
        ("eval_every", eval_every),
        ("batch_size", batch_size),
    ):
        checks.positive_int(name, value)
    if num_steps % eval_every:
        raise ValueError(
            f"num_steps must be a multiple of eval_every ({eval_every}), got {num_steps}."
        )
    if not isinstance(data, Mapping) or not data:
        checks.fail("data", "a non-empty dict of arrays", data)
    sizes = {int(np.shape(leaf)[0]) for leaf in jax.tree.leaves(data)}
    if len(sizes) != 1:
        raise ValueError(
            f"data must be arrays sharing a leading axis of examples, got sizes {sorted(sizes)}."
        )
    train = jax.tree.map(jnp.asarray, dict(data))
    constrain = lambda batch: batch  # noqa: E731
    if mesh is not None:
        from randlr_jax.training._sharding import batch_sharded, replicate

        train, params = replicate((train, params), mesh)
        sharding = batch_sharded(mesh)
        constrain = lambda batch: jax.lax.with_sharding_constraint(batch, sharding)  # noqa: E731
    (num_examples,) = sizes
    indices = sample_batch_indices(key, num_examples, num_steps, batch_size).reshape(
        num_steps // eval_every, eval_every, batch_size
    )

    @jax.jit
    def run_chunk(params, state, chunk):
        def step(carry, idx):
            params, state = carry
            batch = constrain(jax.tree.map(lambda a: a[idx], train))
            grads = jax.grad(loss_fn)(params, batch)
            params, state = apply_step(tx, params, state, grads)
            traced = trace(state) if trace is not None else jnp.zeros((0,))
            return (params, state), traced

        return jax.lax.scan(step, (params, state), chunk)

    state = tx.init(params)
    curve: dict[str, list] = {"step": []}
    traces = []
    for i, chunk in enumerate(indices):
        (params, state), traced = run_chunk(params, state, chunk)
        traces.append(np.asarray(traced))
        metrics = evaluate(params)
        curve["step"].append((i + 1) * eval_every)
        for name, value in metrics.items():
            curve.setdefault(name, []).append(float(value))
    if trace is not None:
        curve["traced"] = np.concatenate(traces).tolist()
    return curve
