"""Many steps per dispatch: the compiled programs the epoch engine calls.

A Python loop that calls a jitted step once per batch pays, every step, the dispatch of the program, the
transfer of the batch and (at each look at the metrics) a wait for the device; on a small model those cost
several times the step itself. Here a whole chunk of ``n <= capacity`` steps is one call:

* :func:`chunk_runner` builds ``run(state, data, n, *extra) -> (state, last_metrics, losses)``, one
  ``lax.fori_loop`` over the chunk on the device. ``data`` is either the chunk's batches stacked
  ``(capacity, B, ...)`` (streamed from the host) or ``(source, index)``: the training split held on the
  devices and the ``(capacity, B)`` example indices of the chunk's batches (only the indices cross from the
  host; the batch is gathered on the device and split over the mesh's data axis). ``n`` is a traced count
  (rows past it are padding): every chunk length runs the same compiled program. ``losses``
  ``(capacity, ...)`` holds each step's ``metrics["loss"]`` (the first ``n`` rows), ``last_metrics`` the
  last step's metrics, all that the engine reads.
* :func:`eval_runner` builds ``evaluate(state, batches[, carry]) -> sums``: a ``lax.scan`` of the
  evaluation step over a whole split stacked ``(num_batches, B, ...)`` (the last batch padded and masked),
  the sums accumulated on the device in the order of the batch-by-batch loop: one call per split.

Every step of every chunk is the same loop body, so a run cut into other chunks (resumed from another
step, with another ``steps_per_dispatch``) computes the same numbers.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from randlr_jax.training._sharding import batch_sharded


def chunk_runner(step: Callable, mesh: Any, resident: bool) -> Callable:
    """``jax.jit`` of ``run(state, data, n, *extra) -> (state, last_metrics, losses)`` (see the module),
    the state donated.

    Args:
      step: ``step(state, batch, *extra) -> (state, metrics)``, jitted or not (a jitted one is inlined);
        ``metrics["loss"]`` a scalar or one per member.
      mesh: the device mesh: a gathered batch is constrained to be split over its ``"data"`` axis.
      resident: ``data`` is ``(source, index)`` (the split on the devices and the chunk's example
        indices) rather than stacked batches.
    """

    def run(state: Any, data: Any, n: Any, *extra: Any) -> tuple[Any, dict, jax.Array]:
        if resident:
            source, index = data
            capacity = index.shape[0]

            def batch_at(i):
                rows = jax.lax.dynamic_index_in_dim(index, i, keepdims=False)
                batch = {key: jnp.take(value, rows, axis=0) for key, value in source.items()}
                return jax.lax.with_sharding_constraint(batch, batch_sharded(mesh))

        else:
            capacity = jax.tree.leaves(data)[0].shape[0]

            def batch_at(i):
                return jax.tree.map(
                    lambda a: jax.lax.dynamic_index_in_dim(a, i, keepdims=False), data
                )

        _, shapes = jax.eval_shape(lambda s, b: step(s, b, *extra), state, batch_at(0))
        metrics = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)
        loss = shapes["loss"]
        losses = jnp.zeros((capacity, *loss.shape), loss.dtype)

        def body(i, carry):
            state, _, losses = carry
            state, metrics = step(state, batch_at(i), *extra)
            losses = jax.lax.dynamic_update_index_in_dim(losses, metrics["loss"], i, 0)
            return state, metrics, losses

        return jax.lax.fori_loop(0, n, body, (state, metrics, losses))

    return jax.jit(run, donate_argnums=0)


def eval_runner(eval_step: Callable, language_model: bool) -> Callable:
    """``jax.jit`` of the evaluation of a whole stacked split (see the module).

    Classification: ``evaluate(state, batches) -> sums``, ``eval_step(state, batch) -> sums``.
    Language model: ``evaluate(state, batches, carry) -> sums``, ``eval_step(state, batch, carry) ->
    (sums, carry)``, the carry threaded from window to window.
    """
    if not language_model:

        def evaluate(state, batches):
            first = jax.tree.map(lambda a: a[0], batches)
            totals = eval_step(state, first)
            rest = jax.tree.map(lambda a: a[1:], batches)

            def body(totals, batch):
                sums = eval_step(state, batch)
                return jax.tree.map(jnp.add, totals, sums), None

            totals, _ = jax.lax.scan(body, totals, rest)
            return totals

    else:

        def evaluate(state, batches, carry):
            first = jax.tree.map(lambda a: a[0], batches)
            totals, carry = eval_step(state, first, carry)
            rest = jax.tree.map(lambda a: a[1:], batches)

            def body(running, batch):
                totals, carry = running
                sums, carry = eval_step(state, batch, carry)
                return (jax.tree.map(jnp.add, totals, sums), carry), None

            (totals, _), _ = jax.lax.scan(body, (totals, carry), rest)
            return totals

    return jax.jit(evaluate)


def shared(fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
    """``fn(*args, **kwargs)``, the same object again for equal (hashable) arguments.

    For pure constructors only (a step from a model and an optimizer, an optimizer from its factory,
    the compiled chunk and whole-split evaluation of a step); the newest 64 results are kept.
    Unhashable arguments: a new call every time.
    """
    key = (fn, args, tuple(sorted(kwargs.items())))
    try:
        hash(key)
    except TypeError:
        return fn(*args, **kwargs)
    return _shared(key)


@functools.lru_cache(maxsize=64)
def _shared(key: tuple) -> Any:
    fn, args, kwargs = key
    return fn(*args, **dict(kwargs))
