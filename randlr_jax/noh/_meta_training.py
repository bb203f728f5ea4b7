"""Meta-training of learned optimizers by truncated backpropagation through unrolled optimizee training.

One meta-iteration is one whole optimizee training run of ``horizon`` steps from the same initial parameters,
cut into truncations of ``unroll_length`` steps. Each truncation is one compiled function: a ``lax.scan`` over
its steps of

.. math::

    g_t = \\nabla l(w_t; B_t), \\quad (u_t, s_{t+1}) = \\mathrm{opt}_\\phi(g_t, s_t),
    \\quad w_{t+1} = w_t + u_t,

and the meta-loss of the truncation is the sum of the optimizee's training losses over the unroll,

.. math::

    L(\\phi) = \\sum_{t=k}^{k+U-1} l(w_{t+1}; B_t),

the loss of each updated iterate on the minibatch that produced the update (so every update in the unroll is
scored). ``jax.grad`` of ``L`` with respect to the optimizer's parameters ``phi`` is the hypergradient chained
into the LSTM (for NOH, through ``dL/dalpha``); the meta-optimizer (Adam) takes one step per truncation, and
the optimizee parameters and optimizer state (LSTM carry included) are carried, as values, into the next
truncation.

First order (default, as Andrychowicz et al. 2016): ``g_t`` is treated as a constant (``stop_gradient``),
dropping the second derivatives of ``l``; ``second_order=True`` keeps them. ``remat=True`` wraps each unrolled
step in ``jax.checkpoint`` (activations recomputed in the backward pass: less memory, more time). The
meta-gradient is clipped by global norm; a truncation whose meta-loss or meta-gradient is not finite is
skipped (the LSTM and meta-optimizer state are left as they were) and counted.

Choices where Fu et al. leave room or where we depart from them (:func:`meta_train`):

* As the paper: meta-loss weights ``beta_t = 1`` for every step of the unroll (their Eq. 2 with
  Andrychowicz et al.'s choice), unroll (truncation) length 50, 5 meta-iterations of one whole training
  run each (2,000 steps by default, the paper's "2K iterations"), the same initial optimizee parameters in
  every meta-iteration.
* The optimizer state (LSTM carry, Adam moments) starts fresh at each meta-iteration and is carried across
  the truncations of one.
* The meta-optimizer is Adam, but at ``1e-3`` by default, not the paper's ``1e-7``: at ``1e-7`` the LSTM
  does not measurably change in 5 meta-iterations (``meta_learning_rate`` restores the paper's value).
* The meta-gradient is clipped to global norm 1 (``max_meta_grad_norm``) and a non-finite truncation is
  skipped; the paper mentions neither.
* First order by default (``stop_gradient`` on the optimizee's gradients, as Andrychowicz et al.);
  ``second_order=True`` keeps the second derivatives.

References:
  Andrychowicz et al, `Learning to learn by gradient descent by gradient descent
  <https://arxiv.org/abs/1606.04474>`_, 2016.
  Fu et al, Neural Optimizers with Hypergradients for Tuning Parameter-Wise Learning Rates, 2017.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import chex
import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np
import optax

from randlr_jax import _checks as checks
from randlr_jax.training._steps import apply_step

MakeOptimizer = Callable[[Any], optax.GradientTransformation]
"""``lstm_params -> optax.GradientTransformation`` (e.g. ``lambda p: noh_adam(p, update_every=10)``)."""

LossFn = Callable[[Any, Any], jax.Array]
"""``(optimizee_params, batch) -> scalar`` training loss; ``batch``: ``data`` at one step's indices."""


class OptimizeeState(NamedTuple):
    """The optimizee carried from one truncation to the next."""

    params: Any  # the optimizee's parameters
    opt_state: Any  # the learned optimizer's state (LSTM carry, Adam moments, ...)


class MetaState(NamedTuple):
    """The learned optimizer being meta-trained."""

    lstm_params: Any  # the learned optimizer's parameters phi
    opt_state: Any  # the meta-optimizer's state
    step: chex.Array  # () int32; truncations seen (applied or skipped)
    skipped: chex.Array  # () int32; truncations skipped for a non-finite meta-loss or meta-gradient


class MetaTrainResult(NamedTuple):
    """What :func:`meta_train` returns."""

    lstm_params: Any  # the trained parameters
    history: list  # one dict per truncation: meta_iteration, truncation, meta_loss, ...
    skipped: int  # truncations skipped (non-finite)


def _check_positive_int(name: str, value: Any) -> None:
    checks.positive_int(name, value)


def _check_builders(
    make_optimizer: Any, loss_fn: Any, second_order: Any, remat: Any, mesh: Any
) -> None:
    """The arguments every meta-training entry point shares (checked before anything is traced)."""
    checks.function(
        "make_optimizer",
        make_optimizer,
        "a function lstm_params -> optax.GradientTransformation (e.g. lambda p: noh_adam(p))",
    )
    checks.function("loss_fn", loss_fn, "a function (params, batch) -> scalar loss")
    checks.boolean("second_order", second_order)
    checks.boolean("remat", remat)
    if mesh is not None:
        checks.mesh("mesh", mesh, ("data",))


def make_truncation_loss(
    make_optimizer: MakeOptimizer,
    loss_fn: LossFn,
    *,
    second_order: bool = False,
    remat: bool = False,
    mesh: Any = None,
) -> Callable[..., tuple[jax.Array, tuple[OptimizeeState, jax.Array]]]:
    """Build ``truncation_loss(lstm_params, optimizee, data, batch_indices) -> (L, (optimizee, losses))``.

    ``batch_indices`` is ``(U, B)`` int32: step ``t`` trains on ``jax.tree.map(lambda a: a[idx_t], data)``.
    ``L`` is the sum of ``l(w_{t+1}; B_t)`` over the ``U`` steps; ``losses`` ``(U,)`` are the same terms.

    Args:
      make_optimizer: ``lstm_params -> GradientTransformation``.
      loss_fn: ``(params, batch) -> scalar``.
      second_order: keep the gradient through the optimizee's gradients (default: stop it).
      remat: ``jax.checkpoint`` every unrolled step.
      mesh: a ``jax.sharding.Mesh`` (:func:`randlr_jax.training.make_mesh`): every gathered minibatch is
        split over its ``"data"`` axis (data parallel; the gradient is still the global-batch one).

    Returns:
      The truncation loss, differentiable in its first argument.

    Raises:
      ValueError: a non-callable ``make_optimizer`` or ``loss_fn``, a flag that is not a bool, or a
        ``mesh`` that is not a mesh with a ``"data"`` axis.
    """
    _check_builders(make_optimizer, loss_fn, second_order, remat, mesh)
    constrain = _batch_constraint(mesh)

    def truncation_loss(lstm_params, optimizee: OptimizeeState, data, batch_indices):
        tx = make_optimizer(lstm_params)

        def step(carry, indices):
            params, opt_state = carry
            batch = constrain(jax.tree.map(lambda a: a[indices], data))
            grads = jax.grad(loss_fn)(params, batch)
            if not second_order:
                grads = jax.lax.stop_gradient(grads)
            # The training step's optimizer step: pure, differentiated through (w.r.t. lstm_params).
            params, opt_state = apply_step(tx, params, opt_state, grads)
            return (params, opt_state), loss_fn(params, batch)

        if remat:
            step = jax.checkpoint(step)
        (params, opt_state), losses = jax.lax.scan(
            step, (optimizee.params, optimizee.opt_state), batch_indices
        )
        return jnp.sum(losses), (OptimizeeState(params, opt_state), losses)

    return truncation_loss


def _batch_constraint(mesh: Any) -> Callable[[Any], Any]:
    if mesh is None:
        return lambda batch: batch
    from randlr_jax.training._sharding import batch_sharded

    sharding = batch_sharded(mesh)
    return lambda batch: jax.lax.with_sharding_constraint(batch, sharding)


def _all_finite(tree: Any) -> jax.Array:
    leaves = [jnp.all(jnp.isfinite(leaf)) for leaf in jax.tree.leaves(tree)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.array(True)


def make_meta_step(
    make_optimizer: MakeOptimizer,
    loss_fn: LossFn,
    meta_optimizer: optax.GradientTransformation,
    *,
    second_order: bool = False,
    remat: bool = False,
    mesh: Any = None,
) -> Callable[..., tuple[MetaState, OptimizeeState, dict]]:
    """Build the (unjitted) ``meta_step(meta, optimizee, data, batch_indices) -> (meta, optimizee, metrics)``.

    One truncation: the meta-gradient of :func:`make_truncation_loss`'s ``L``, applied by ``meta_optimizer``
    (:func:`make_meta_optimizer`: clipping, then Adam) unless the meta-loss or the meta-gradient is
    non-finite (then skipped and counted). The optimizee is advanced either way.

    Metrics: ``meta_loss``, ``meta_grad_norm`` (before clipping), ``finite`` (bool), ``final_loss`` (the last
    step's training loss). ``mesh``: as :func:`make_truncation_loss`.

    Raises:
      ValueError: as :func:`make_truncation_loss`, or a ``meta_optimizer`` that is not an Optax
        transformation.
    """
    _check_builders(make_optimizer, loss_fn, second_order, remat, mesh)
    checks.transformation("meta_optimizer", meta_optimizer)
    truncation_loss = make_truncation_loss(
        make_optimizer, loss_fn, second_order=second_order, remat=remat, mesh=mesh
    )

    def meta_step(meta: MetaState, optimizee: OptimizeeState, data, batch_indices):
        (meta_loss, (optimizee, losses)), meta_grads = jax.value_and_grad(
            truncation_loss, has_aux=True
        )(meta.lstm_params, optimizee, data, batch_indices)
        finite = jnp.isfinite(meta_loss) & _all_finite(meta_grads)
        # Zero non-finite gradients before the meta-optimizer sees them, then keep the old state.
        safe_grads = jax.tree.map(lambda g: jnp.where(finite, g, 0.0), meta_grads)
        updates, opt_state = meta_optimizer.update(safe_grads, meta.opt_state, meta.lstm_params)
        lstm_params = optax.apply_updates(meta.lstm_params, updates)
        keep = lambda new, old: jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, old)
        meta = MetaState(
            lstm_params=keep(lstm_params, meta.lstm_params),
            opt_state=keep(opt_state, meta.opt_state),
            step=optax.safe_increment(meta.step),
            skipped=meta.skipped + jnp.where(finite, 0, 1).astype(jnp.int32),
        )
        metrics = {
            "meta_loss": meta_loss,
            "meta_grad_norm": optax.tree.norm(meta_grads),
            "finite": finite,
            "final_loss": losses[-1],
        }
        return meta, optimizee, metrics

    return meta_step


def make_meta_optimizer(
    meta_learning_rate: float = 1e-3, max_meta_grad_norm: float | None = 1.0
) -> optax.GradientTransformation:
    """Adam at ``meta_learning_rate`` after clipping the meta-gradient to global norm ``max_meta_grad_norm``.

    Raises:
      ValueError: ``meta_learning_rate`` or ``max_meta_grad_norm`` not a finite number ``> 0``
        (``None`` disables clipping).
    """
    _check_meta_optimizer_args(meta_learning_rate, max_meta_grad_norm)
    adam = optax.adam(meta_learning_rate)
    if max_meta_grad_norm is None:
        return adam
    return optax.chain(optax.clip_by_global_norm(max_meta_grad_norm), adam)


def _check_meta_optimizer_args(meta_learning_rate: Any, max_meta_grad_norm: Any) -> None:
    checks.positive("meta_learning_rate", meta_learning_rate)
    if max_meta_grad_norm is not None:
        checks.in_range(
            "max_meta_grad_norm", max_meta_grad_norm, 0.0, float("inf"), low_open=True,
            high_open=True, what="a finite number > 0 or None (no clipping)",
        )  # fmt: skip


def sample_batch_indices(
    key: chex.PRNGKey, num_examples: int, num_steps: int, batch_size: int
) -> np.ndarray:
    """``(num_steps, batch_size)`` int32 minibatch indices: epochs of shuffled examples, remainder dropped.

    Raises:
      ValueError: a non-positive size, or ``batch_size > num_examples``.
    """
    _check_positive_int("num_examples", num_examples)
    _check_positive_int("num_steps", num_steps)
    _check_positive_int("batch_size", batch_size)
    if batch_size > num_examples:
        raise ValueError(
            f"batch_size must be <= the number of examples ({num_examples}), got {batch_size}."
        )
    per_epoch = num_examples // batch_size
    epochs = -(-num_steps // per_epoch)
    keys = jax.random.split(key, epochs)
    perms = [
        np.asarray(jax.random.permutation(k, num_examples))[: per_epoch * batch_size] for k in keys
    ]
    return np.concatenate(perms).reshape(-1, batch_size)[:num_steps].astype(np.int32)


def meta_train(
    lstm_params: Any,
    make_optimizer: MakeOptimizer,
    loss_fn: LossFn,
    init_params: Any,
    data: Any,
    *,
    key: chex.PRNGKey,
    batch_size: int,
    horizon: int = 2000,
    unroll_length: int = 50,
    num_meta_iterations: int = 5,
    meta_learning_rate: float = 1e-3,
    meta_optimizer: optax.GradientTransformation | None = None,
    second_order: bool = False,
    remat: bool = False,
    max_meta_grad_norm: float | None = 1.0,
    callback: Callable[[dict], None] | None = None,
    mesh: Any = None,
) -> MetaTrainResult:
    """Meta-train a learned optimizer on one optimizee (same initial parameters every meta-iteration).

    Meta-iteration ``i`` trains the optimizee from ``init_params`` for ``horizon`` steps on minibatches drawn
    (shuffled epochs) with ``fold_in(key, i)``; every ``unroll_length`` steps the meta-optimizer updates the
    learned optimizer (module docstring). The optimizer state starts fresh each meta-iteration.

    Args:
      lstm_params: initial parameters of the learned optimizer.
      make_optimizer: ``lstm_params -> GradientTransformation``, e.g.
        ``lambda p: randlr_jax.noh.noh_adam(p, update_every=10)``.
      loss_fn: ``(params, batch) -> scalar`` optimizee training loss (pure: ``model.apply`` + loss).
      init_params: the optimizee's initial parameters.
      data: a pytree of arrays with a common leading axis of examples (e.g. ``{"x": ..., "y": ...}``); kept
        in device memory, minibatches are gathered inside the compiled unroll.
      key: PRNG key for the minibatch order.
      batch_size: examples per optimizee step.
      horizon: optimizee steps per meta-iteration; must be a multiple of ``unroll_length``.
      unroll_length: steps per truncation (paper: 50).
      num_meta_iterations: optimizee runs (paper: 5).
      meta_learning_rate: Adam's rate for the meta-optimizer (ignored if ``meta_optimizer`` is given). The
        paper's ``1e-7`` leaves the LSTM practically unchanged in 5 meta-iterations (see the README).
      meta_optimizer: overrides ``make_meta_optimizer(meta_learning_rate, max_meta_grad_norm)``.
      second_order: differentiate through the optimizee's gradients too.
      remat: rematerialise each unrolled step (``jax.checkpoint``).
      max_meta_grad_norm: clip the meta-gradient's global norm (``None``: no clipping; ignored if
        ``meta_optimizer`` is given).
      callback: called on the host after each truncation with that truncation's record.
      mesh: run data parallel on this ``jax.sharding.Mesh`` (:func:`randlr_jax.training.make_mesh`):
        ``data`` and the parameters replicated, each gathered minibatch split over the ``"data"`` axis
        (``batch_size`` must be a multiple of its size). ``None``: the default device.

    Returns:
      :class:`MetaTrainResult`: trained parameters, per-truncation history (``meta_iteration``,
      ``truncation``, ``meta_loss``, ``meta_grad_norm``, ``finite``, ``final_loss``) and the skipped count.

    Raises:
      ValueError: non-positive sizes, ``horizon`` not a multiple of ``unroll_length``, data whose
        leaves are not numeric arrays sharing a leading axis, ``batch_size`` larger than that axis, a
        bad key, flag, callable, mesh or meta-optimizer setting: all checked before anything is
        compiled.

    Example:
      >>> from randlr_jax.noh import LSTMRateProposer, init_proposer_params, noh_adam
      >>> def loss_fn(params, batch):  # least squares
      ...     return jnp.mean((batch["x"] @ params["w"] - batch["y"]) ** 2)
      >>> key = jax.random.key(0)
      >>> x = jax.random.normal(key, (32, 3))
      >>> data = {"x": x, "y": x @ jnp.array([1.0, -2.0, 0.5])}
      >>> proposer = LSTMRateProposer(num_layers=1, hidden_size=4)  # paper: 3 x 20
      >>> result = meta_train(
      ...     init_proposer_params(proposer, key), lambda p: noh_adam(p, proposer=proposer),
      ...     loss_fn, {"w": jnp.zeros(3)}, data, key=key, batch_size=8,
      ...     horizon=4, unroll_length=2, num_meta_iterations=1)  # paper: 2000, 50, 5
      >>> len(result.history), result.skipped  # one record per truncation, none skipped
      (2, 0)
    """
    _check_builders(make_optimizer, loss_fn, second_order, remat, mesh)
    checks.prng_key("key", key)
    for name, value in (
        ("batch_size", batch_size),
        ("horizon", horizon),
        ("unroll_length", unroll_length),
        ("num_meta_iterations", num_meta_iterations),
    ):
        _check_positive_int(name, value)
    if horizon % unroll_length:
        raise ValueError(
            f"horizon must be a multiple of unroll_length ({unroll_length}), got {horizon}."
        )
    checks.numeric_leaves(
        "data", data, "a pytree of numeric arrays sharing a leading axis of examples",
        non_empty=True, leading_axis=True, keys=False,
    )  # fmt: skip
    sizes = {int(np.shape(leaf)[0]) for leaf in jax.tree.leaves(data)}
    if len(sizes) != 1:
        raise ValueError(
            f"data must be a pytree of arrays sharing a leading axis of examples, got leading sizes "
            f"{sorted(sizes)}."
        )
    (num_examples,) = sizes
    if batch_size > num_examples:
        raise ValueError(
            f"batch_size must be <= the number of examples ({num_examples}) in data, got "
            f"{batch_size}."
        )
    checks.function("callback", callback, "a function of each truncation's record", optional=True)
    if meta_optimizer is None:
        meta_optimizer = make_meta_optimizer(meta_learning_rate, max_meta_grad_norm)
    else:
        checks.transformation("meta_optimizer", meta_optimizer)
    meta_step = jax.jit(
        make_meta_step(
            make_optimizer,
            loss_fn,
            meta_optimizer,
            second_order=second_order,
            remat=remat,
            mesh=mesh,
        )
    )
    data = jax.tree.map(jnp.asarray, data)
    if mesh is not None:
        from randlr_jax.training._sharding import data_size, replicate

        if batch_size % data_size(mesh):
            raise ValueError(
                f"batch_size {batch_size} must be a multiple of the mesh's {data_size(mesh)} "
                "data-parallel devices."
            )
        data, lstm_params, init_params = replicate((data, lstm_params, init_params), mesh)
    meta = MetaState(
        lstm_params=lstm_params,
        opt_state=meta_optimizer.init(lstm_params),
        step=jnp.zeros([], jnp.int32),
        skipped=jnp.zeros([], jnp.int32),
    )
    history = []
    for iteration in range(num_meta_iterations):
        indices = sample_batch_indices(
            jax.random.fold_in(key, iteration), num_examples, horizon, batch_size
        ).reshape(horizon // unroll_length, unroll_length, batch_size)
        optimizee = OptimizeeState(init_params, make_optimizer(meta.lstm_params).init(init_params))
        for truncation, chunk in enumerate(indices):
            meta, optimizee, metrics = meta_step(meta, optimizee, data, chunk)
            record = {
                "meta_iteration": iteration,
                "truncation": truncation,
                **{k: float(v) if k != "finite" else bool(v) for k, v in metrics.items()},
            }
            history.append(record)
            if callback is not None:
                callback(record)
    return MetaTrainResult(meta.lstm_params, history, int(meta.skipped))


def save_lstm_params(path: str | os.PathLike, lstm_params: Any, config: Mapping[str, Any]) -> None:
    """Write ``lstm_params`` and a JSON-like ``config`` (how to rebuild the module) as msgpack.

    Everything is checked and serialised before the file is opened: a bad argument leaves no file.

    Args:
      path: the file to write (parent directories are created).
      lstm_params: the learned optimizer's parameters (a non-empty pytree of numeric arrays).
      config: plain numbers / strings / bools / ``None`` / lists / nested dicts with ``str`` keys, e.g.
        ``{"kind": "noh", "module": {...}, "update_every": 10}``.

    Raises:
      ValueError: a ``path`` that is not a path, ``lstm_params`` that are not numeric arrays, a
        ``config`` that is not such a dict (the message names the offending entry).
      OSError: ``path`` cannot be written (e.g. ``IsADirectoryError``), naming it.
    """
    path = checks.path("path", path)
    checks.numeric_leaves(
        "lstm_params", lstm_params, "a non-empty pytree of numeric arrays (the learned optimizer's "
        "parameters)", non_empty=True, keys=False,
    )  # fmt: skip
    checks.mapping("config", config, "a dict of plain values (str keys)")
    _check_plain("config", config)
    payload = {"config": dict(config), "params": jax.tree.map(np.asarray, lstm_params)}
    blob = flax.serialization.msgpack_serialize(payload)
    try:
        directory = os.path.dirname(path)
        if directory:
            os.makedirs(directory, exist_ok=True)
        with open(path, "wb") as f:
            f.write(blob)
    except OSError as error:
        raise type(error)(
            f"path must be a file that can be written, got {path!r}: {error.strerror or error}."
        ) from error


_PLAIN = (str, bool, int, float, type(None))
_PLAIN_WHAT = "a plain value (a number, str, bool, None, a list of them or a dict with str keys)"


def _check_plain(where: str, value: Any) -> None:
    """``value`` is JSON-like: msgpack writes it and reads it back as it was (tuples would come back
    as lists, arrays belong in ``lstm_params``)."""
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                checks.fail(f"{where}'s keys", "str", key)
            _check_plain(f"{where}[{key!r}]", item)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _check_plain(f"{where}[{index}]", item)
    elif not isinstance(value, _PLAIN) and not (
        isinstance(value, np.generic) and value.dtype.kind in "biuf"
    ):
        checks.fail(where, _PLAIN_WHAT, value, shown=checks.brief(value))


_NOT_A_FILE = "a file written by save_lstm_params (or its bytes)"


def load_lstm_params(source: str | os.PathLike | bytes) -> tuple[Any, dict]:
    """Read what :func:`save_lstm_params` wrote: ``(lstm_params, config)``.

    Args:
      source: a path or the file's bytes.

    Raises:
      FileNotFoundError, IsADirectoryError, ...: ``source`` is a path that cannot be read, naming it.
      ValueError: ``source`` is neither a path nor bytes, or not a learned-optimizer file (not
        msgpack, or not the ``{"config", "params"}`` that ``save_lstm_params`` writes).
    """
    shown = None
    if isinstance(source, (bytes, bytearray, memoryview)):
        blob = bytes(source)
    else:
        if isinstance(source, os.PathLike):
            source = os.fspath(source)
        if not isinstance(source, str) or not source:
            checks.fail(
                "source", f"a path (a non-empty str or os.PathLike) or {_NOT_A_FILE}", source
            )
        shown = repr(source)
        try:
            with open(source, "rb") as f:
                blob = f.read()
        except OSError as error:
            raise type(error)(
                f"source must be {_NOT_A_FILE}, got {source!r}: {error.strerror or error}."
            ) from error
    shown = shown or checks.brief(blob)
    try:
        payload = flax.serialization.msgpack_restore(blob)
    except Exception as error:  # msgpack's own errors: ExtraData, ValueError, ...
        raise ValueError(
            f"source must be {_NOT_A_FILE}, got {shown}: not a learned-optimizer file (not msgpack: "
            f"{error})."
        ) from error
    if not isinstance(payload, dict) or set(payload) != {"config", "params"}:
        raise ValueError(
            f"source must be {_NOT_A_FILE}, got {shown}: not a learned-optimizer file (no "
            "'config' and 'params')."
        )
    if not isinstance(payload["config"], dict):
        raise ValueError(
            f"source must be {_NOT_A_FILE}, got {shown}: not a learned-optimizer file (its config "
            f"is {checks.brief(payload['config'])}, not a dict)."
        )
    try:
        checks.numeric_leaves(
            "params", payload["params"], "numeric arrays", non_empty=True, keys=False
        )
    except ValueError as error:
        raise ValueError(
            f"source must be {_NOT_A_FILE}, got {shown}: not a learned-optimizer file ({error})"
        ) from None
    params = jax.tree.map(jnp.asarray, payload["params"])
    return params, payload["config"]
