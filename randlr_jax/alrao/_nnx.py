"""Alrao in Flax NNX: the classifier copies as an ``nnx.Module`` and the Alrao step for NNX models.

:class:`NNXAlraoHead` is :class:`~randlr_jax.alrao.AlraoHead` as an ``nnx.Module``: the ``N`` copies'
parameters ``copies.kernel`` ``(N, D, K)`` and ``copies.bias`` ``(N, K)`` are ``nnx.Param`` (the layout of
the Linen head's ``copies/kernel`` and ``copies/bias``, so parameters copy across), and the averaging
state is an :class:`AlraoSwitch`, an ``nnx.Variable`` that is not a ``Param``: ``nnx.Optimizer(model, tx,
wrt=nnx.Param)`` never touches it, ``nnx.state(model)`` checkpoints it.

:func:`make_nnx_alrao_train_step` is :func:`~randlr_jax.alrao.make_alrao_train_step` for NNX models: one
forward pass of ``model.features``; the gradients of the Alrao objective
(:func:`~randlr_jax.alrao.alrao_loss`: copy ``j`` follows its own loss ``-log p_j(y|x)``, the features the
mixture's ``-log sum_j a_j p_j(y|x)``, through the stop-gradient pair); the gradients and updates of
dropped (non-finite) copies zeroed; the switch fed the copies' batch-mean log-likelihoods of this forward
pass, after the update; the metrics of the Linen step. ``alrao_sgd`` / ``alrao_adam`` route the head's
parameters by their path: ``nnx.state(model, nnx.Param)`` has the head's attribute name in it (``head``
by default), as the Linen parameter dicts do.

References:
  Blier, Wolinski, Ollivier, `Learning with Random Learning Rates <https://arxiv.org/abs/1810.01322>`_, 2019.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from randlr_jax import _checks as checks
from randlr_jax.alrao import _copies as cc
from randlr_jax.alrao import _switch as switch_lib
from randlr_jax.alrao._optimizers import (
    HEAD,
    HeadPath,
    alrao_loss_dense,
    head_matcher,
)
from randlr_jax.alrao._step import step_metrics
from randlr_jax.training._nnx import adapt_model

STEP_TASKS = ("classification", "regression")
# ``nn.Dense``'s and ``nnx.Linear``'s defaults, as the Linen head's.
DEFAULT_KERNEL_INIT = nnx.initializers.lecun_normal()
DEFAULT_BIAS_INIT = nnx.initializers.zeros_init()


class AlraoSwitch(nnx.Variable):
    """The averaging state of an :class:`NNXAlraoHead` (a ``SwitchState``, ``BayesState`` or
    ``UniformState``): updated by the Alrao step, never by gradient descent (not an ``nnx.Param``)."""


class DenseCopies(nnx.Module):
    """``N`` dense layers stacked on a leading copy axis: ``kernel`` ``(N, D, K)``, ``bias`` ``(N, K)``."""

    def __init__(
        self,
        in_features: int,
        num_outputs: int,
        num_copies: int,
        *,
        rngs: nnx.Rngs,
        kernel_init: Callable,
        bias_init: Callable,
    ):
        # Each copy initialised independently, as the Linen head's ``nn.vmap`` with split rngs.
        kernel_keys = jax.random.split(rngs.params(), num_copies)
        bias_keys = jax.random.split(rngs.params(), num_copies)
        self.kernel = nnx.Param(
            jax.vmap(lambda k: kernel_init(k, (in_features, num_outputs), jnp.float32))(kernel_keys)
        )
        self.bias = nnx.Param(
            jax.vmap(lambda k: bias_init(k, (num_outputs,), jnp.float32))(bias_keys)
        )


class NNXAlraoHead(nnx.Module):
    """``N`` copies of a dense classifier layer averaged by a posterior: :class:`AlraoHead` in NNX.

    ``__call__(features)`` returns, for classification, the mixture log-probabilities
    ``log sum_j a_j softmax(W_j f + b_j)`` ``(..., K)`` (usable as logits), for regression the
    posterior-weighted mean ``sum_j a_j (W_j f + b_j)``; dropped (non-finite) copies are left out, with
    none left the uniform distribution (regression: zero). Differentiating it raises
    :class:`~randlr_jax.alrao.AlraoTrainingError`: train with :func:`make_nnx_alrao_train_step`
    (``allow_gradient=True`` lets a gradient through on purpose).

    Args:
      in_features: the feature dimension ``D``.
      num_outputs: classes ``K`` (or the output dimension for regression).
      num_copies: ``N``.
      rngs: ``nnx.Rngs`` for the copies' initialisation.
      task: ``"classification"`` or ``"regression"``.
      sigma: the Gaussian likelihood's standard deviation (regression).
      averaging: ``"switch"`` (default), ``"bayes"`` or ``"uniform"``.
      theta: the switch's prior probability of switching again later, in ``(0, 1)``
        (:func:`randlr_jax.alrao.switch_init`).
      kernel_init, bias_init: each copy's initialisers (``nnx.Linear``'s and ``nn.Dense``'s defaults).
      copy_chunk_size: ``None`` or ``c`` in ``[1, N]``: evaluate the copies in chunks of ``c``.

    Raises:
      ValueError: a field outside what is allowed, naming it (as :class:`AlraoHead`).

    Example:
      >>> from flax import nnx
      >>> head = NNXAlraoHead(100, 10, num_copies=6, rngs=nnx.Rngs(0))
      >>> head.copies.kernel.shape, head.copies.bias.shape
      ((6, 100, 10), (6, 10))
    """

    def __init__(
        self,
        in_features: int,
        num_outputs: int,
        num_copies: int = 10,
        *,
        rngs: nnx.Rngs,
        task: str = "classification",
        sigma: float = 1.0,
        averaging: str = "switch",
        theta: float = switch_lib.DEFAULT_THETA,
        kernel_init: Callable = DEFAULT_KERNEL_INIT,
        bias_init: Callable = DEFAULT_BIAS_INIT,
        copy_chunk_size: int | None = None,
    ):
        checks.positive_int("in_features", in_features)
        # The Linen head's checks, messages included.
        cc.AlraoHead(
            num_outputs=num_outputs,
            num_copies=num_copies,
            task=task,
            sigma=sigma,
            averaging=averaging,
            theta=theta,
            kernel_init=kernel_init,
            bias_init=bias_init,
            copy_chunk_size=copy_chunk_size,
        )._validate()
        if not isinstance(rngs, nnx.Rngs):
            checks.fail("rngs", "an nnx.Rngs", rngs)
        self.num_outputs = int(num_outputs)
        self.num_copies = int(num_copies)
        self.task = task
        self.sigma = float(sigma)
        self.averaging = averaging
        self.theta = float(theta)
        self.copy_chunk_size = copy_chunk_size
        self.copies = DenseCopies(
            in_features,
            num_outputs,
            num_copies,
            rngs=rngs,
            kernel_init=kernel_init,
            bias_init=bias_init,
        )
        self.switch = AlraoSwitch(self.averager().init())

    def averager(self) -> switch_lib.Averager:
        return switch_lib.make_averager(self.averaging, self.num_copies, theta=self.theta)

    def head_params(self) -> dict:
        """The copies' parameters as the Linen head's: ``{"copies": {"kernel", "bias"}}``."""
        return {
            "copies": {
                "kernel": self.copies.kernel.get_value(),
                "bias": self.copies.bias.get_value(),
            }
        }

    def set_head_params(self, head_params: Any) -> None:
        """Overwrite the copies' parameters from a Linen-layout ``{"copies": {"kernel", "bias"}}``."""
        self.copies.kernel.set_value(jnp.asarray(head_params["copies"]["kernel"]))
        self.copies.bias.set_value(jnp.asarray(head_params["copies"]["bias"]))

    def copy_outputs(self, features: jax.Array) -> jax.Array:
        """The copies' logits (classification) or means (regression), ``(N, ..., K)``."""
        return cc.apply_copies(self.head_params(), features)

    def log_posterior(self) -> jax.Array:
        """The averaging log-weights ``(N,)`` (dropped copies not masked)."""
        return self.averager().log_posterior(self.switch.get_value())

    def posterior(self) -> jax.Array:
        """The weights the head predicts with ``(N,)``: dropped copies at zero, the rest renormalised."""
        finite = cc.copies_finite(self.head_params())
        return jnp.exp(cc.masked_log_weights(self.log_posterior(), finite))

    def __call__(self, features: jax.Array, *, allow_gradient: bool = False) -> jax.Array:
        output = self._mixture(features)
        return output if allow_gradient else cc.guard_training(output, "NNXAlraoHead")

    def _mixture(self, features: jax.Array) -> jax.Array:
        params = self.head_params()
        if self.copy_chunk_size is not None:
            return cc.chunked_mixture_output(
                cc.apply_copies,
                params,
                features,
                self.log_posterior(),
                chunk_size=self.copy_chunk_size,
                task=self.task,
            )
        outputs = self.copy_outputs(features)
        finite = cc.copies_finite(params) & cc.finite_per_copy(outputs)
        logw = cc.masked_log_weights(self.log_posterior(), finite)
        outputs = cc.zero_nonfinite_copies(outputs, finite)
        any_finite = jnp.any(finite)
        if self.task == "classification":
            mixture = cc.mixture_log_probs(jax.nn.log_softmax(outputs, axis=-1), logw)
            uniform = jnp.full_like(mixture, -math.log(self.num_outputs))
            return jnp.where(any_finite, mixture, uniform)
        weights = jnp.exp(jnp.where(any_finite, logw, -jnp.inf)).reshape(
            (-1,) + (1,) * (outputs.ndim - 1)
        )
        return jnp.where(any_finite, jnp.sum(jnp.where(any_finite, weights, 0.0) * outputs, 0), 0.0)


def _path_keys(path: Any) -> tuple[str, ...]:
    """A module or parameter path as a tuple of ``str`` (attribute names, dict keys, indices)."""
    out = []
    for k in path:
        key = getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))
        out.append(str(key))
    return tuple(out)


def find_head(model: Any, head_path: HeadPath = HEAD) -> tuple[tuple[str, ...], NNXAlraoHead]:
    """``(path, head)``: the one :class:`NNXAlraoHead` of ``model`` that ``head_path`` names.

    ``head_path`` is read as by :func:`~randlr_jax.alrao.alrao_sgd` (:func:`head_matcher`), on the
    head module's attribute path (which starts its parameters' paths): a name (``"head"``, the
    default: a head whose path contains it), a path from the root (``("decoder", "head")``) or a
    predicate on the path.

    Raises:
      ValueError: a bad ``head_path``, or not exactly one :class:`NNXAlraoHead` matching it (the
        message lists the model's Alrao heads).
    """
    match = head_matcher(head_path)
    heads = [
        (_path_keys(path), module)
        for path, module in nnx.iter_modules(model)
        if isinstance(module, NNXAlraoHead)
    ]
    found = [(path, module) for path, module in heads if match(path)]
    if len(found) != 1:
        where = [path for path, _ in heads]
        bridged = any(
            isinstance(getattr(module, "module", None), cc.AlraoHead)
            for _, module in nnx.iter_modules(model)
        )
        hint = (
            " (a Linen AlraoHead wrapped with nnx.bridge.ToNNX trains with "
            "randlr_jax.alrao.make_alrao_train_step on the Linen model; use NNXAlraoHead in NNX)"
            if bridged
            else ""
        )
        raise ValueError(
            f"head_path={head_path!r} must name exactly one NNXAlraoHead of the "
            f"{type(model).__name__}, got {len(found)}; its NNXAlraoHeads are at {where}{hint}."
        )
    return found[0]


def _on_head(tree: Any, module_path: tuple[str, ...], fn: Callable[[jax.Array], jax.Array]) -> Any:
    """``fn`` applied to the leaves of ``tree`` (an ``nnx.State``) under the module at ``module_path``."""

    def one(path, leaf):
        keys = _path_keys(path)
        return fn(leaf) if keys[: len(module_path)] == module_path else leaf

    return jax.tree_util.tree_map_with_path(one, tree)


def make_nnx_alrao_train_step(
    *,
    head_path: HeadPath = HEAD,
    task: str = "classification",
    catch_up: bool = False,
    catch_up_threshold: float = -20.0,
) -> Callable[[nnx.Module, nnx.Optimizer, dict], dict]:
    """The Alrao step for Flax NNX models: ``step(model, optimizer, batch) -> metrics``.

    The model is any ``nnx.Module`` with a ``features(x)`` method (the pre-classifier's output, in the
    model's current train/eval mode) and one :class:`NNXAlraoHead` that ``head_path`` names
    (:func:`find_head`); the optimizer is ``nnx.Optimizer(model, tx, wrt=nnx.Param)`` with ``tx``
    typically :func:`~randlr_jax.alrao.alrao_sgd` / :func:`~randlr_jax.alrao.alrao_adam` given the
    same ``head_path`` (both default to ``"head"``). The step, as the Linen step
    (:func:`~randlr_jax.alrao.make_alrao_train_step`):

    1. ``f = model.features(batch["x"])``; the Alrao objective of
       :func:`~randlr_jax.alrao.alrao_loss` from the copies on ``stop_gradient(f)`` (gradients to the
       copies) and the copies with stopped parameters on ``f`` (gradients to the features), the
       log-posterior of the switch before this step;
    2. the gradients of dropped copies (non-finite parameters or outputs) zeroed,
       ``optimizer.update(model, grads)`` (with ``value=loss`` for an extra-args transformation), and
       the dropped copies' updates zeroed (their parameters kept);
    3. the switch updated with the copies' batch-mean log-likelihoods of step 1 (optionally the hard
       catch-up of :func:`randlr_jax.alrao.catch_up`).

    Mutates ``model`` and ``optimizer``; jit it with ``nnx.jit``.

    Args:
      head_path: where the head is, as the optimizers' ``head_path``: an attribute name (``"head"``,
        the default), an attribute path from the root (``("decoder", "head")``) or a predicate on
        the head module's path (:func:`find_head`).
      task: ``"classification"`` (``batch["y"]`` int ``(B, ...)``) or ``"regression"``
        (``batch["y"]`` float ``(B, K)``).
      catch_up, catch_up_threshold: as :func:`~randlr_jax.alrao.make_alrao_train_step`.

    Returns:
      ``step(model, optimizer, batch) -> metrics``: ``loss`` (the mixture's), ``accuracy``
      (classification), ``posterior`` ``(N,)`` (after the update, dropped copies at zero),
      ``copy_losses`` ``(N,)``, ``num_dropped``, ``all_dropped`` and ``dead``.

    Raises:
      ValueError: a bad argument (at construction), or a model without ``features`` or without an
        single :class:`NNXAlraoHead` matching ``head_path`` (at the first call).

    Example:
      >>> from randlr_jax.alrao import alrao_sgd
      >>> class Net(nnx.Module):
      ...     def __init__(self, rngs):
      ...         self.body = nnx.Linear(4, 8, rngs=rngs)
      ...         self.head = NNXAlraoHead(8, 3, num_copies=2, rngs=rngs)
      ...     def features(self, x):
      ...         return jax.nn.relu(self.body(x))
      >>> model = Net(nnx.Rngs(0))
      >>> tx = alrao_sgd(jax.random.key(1), 1e-3, 1.0, num_copies=2)
      >>> optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
      >>> step = nnx.jit(make_nnx_alrao_train_step())
      >>> metrics = step(model, optimizer, {"x": jnp.ones((5, 4)), "y": jnp.zeros(5, jnp.int32)})
      >>> metrics["posterior"].shape, int(model.head.switch.get_value().step)
      ((2,), 2)
    """
    head_matcher(head_path)
    checks.one_of("task", task, STEP_TASKS)
    catch_up = checks.boolean("catch_up", catch_up)
    checks.in_range(
        "catch_up_threshold", catch_up_threshold, high=0.0, what="a number <= 0 (a log-posterior)"
    )

    def loss_fn(model, batch):
        _, head = find_head(model, head_path)
        features = model.features(batch["x"])
        log_posterior = jax.lax.stop_gradient(head.log_posterior())
        # The Linen step's fused objective (one pass over the copies, the gradient included).
        return alrao_loss_dense(
            head.head_params(), features, batch["y"], log_posterior,
            chunk_size=cc.default_copy_chunk(
                head.copy_chunk_size, head.num_copies, features[..., 0].size * head.num_outputs
            ),
            task=task, sigma=head.sigma,
        )  # fmt: skip

    def step(model: nnx.Module, optimizer: nnx.Optimizer, batch: dict) -> dict:
        if not callable(getattr(model, "features", None)):
            raise ValueError(
                f"model must have a features(x) method (the pre-classifier's output) to train with "
                f"Alrao, got {type(model).__name__} without one."
            )
        module_path, head = find_head(model, head_path)
        if head.task != task:
            raise ValueError(
                f"the step's task={task!r} differs from the head's task={head.task!r} (the head "
                "predicts with its own task): build both with the same task."
            )
        averager = head.averager()
        old_switch = head.switch.get_value()
        old_head = head.head_params()
        # The gradients of what the optimizer trains (its ``wrt`` filter, ``nnx.Param`` usually).
        wrt = nnx.DiffState(0, getattr(optimizer, "wrt", nnx.Param))
        grad_fn = nnx.value_and_grad(loss_fn, argnums=wrt, has_aux=True)
        (_, aux), grads = grad_fn(model, batch)
        finite = aux["finite"]
        loss = aux["mixture_loss"]
        # A dropped copy is frozen: no gradient reaches the optimizer, no update reaches the copy.
        grads = _on_head(grads, module_path, lambda g: cc.zero_nonfinite_copies(g, finite))
        extra = (
            {"value": loss}
            if isinstance(optimizer.tx, optax.GradientTransformationExtraArgs)
            else {}
        )
        optimizer.update(model, grads, **extra)
        new_head = jax.tree.map(
            lambda new, old: jnp.where(finite.reshape((-1,) + (1,) * (new.ndim - 1)), new, old),
            head.head_params(),
            old_head,
        )
        new_switch = averager.update(old_switch, aux["copy_log_likelihoods"])
        log_posterior = averager.log_posterior(new_switch)
        if catch_up:
            new_head = switch_lib.catch_up(new_head, log_posterior, catch_up_threshold)
        head.set_head_params(new_head)
        head.switch.set_value(new_switch)
        return {"loss": loss, **step_metrics(log_posterior, aux, batch, task)}

    return step


class _StateOptimizer:
    """What :func:`make_nnx_alrao_train_step` uses of an ``nnx.Optimizer`` (``tx``, ``wrt``,
    ``update``), over an optimizer state held outside the module (a ``TrainState``'s): ``tx`` runs on
    the plain parameter dicts the state's ``opt_state`` was initialised on."""

    def __init__(self, tx: optax.GradientTransformation, opt_state: Any):
        self.tx, self.opt_state, self.wrt = tx, opt_state, nnx.Param

    def update(self, model: nnx.Module, grads: Any, **extra: Any) -> None:
        params = nnx.state(model, nnx.Param)
        values = nnx.to_pure_dict(params)
        updates, self.opt_state = self.tx.update(
            nnx.to_pure_dict(grads), self.opt_state, values, **extra
        )
        nnx.replace_by_pure_dict(params, optax.apply_updates(values, updates))
        nnx.update(model, params)


def make_nnx_alrao_fit_step(
    model: nnx.Module,
    tx: optax.GradientTransformation,
    *,
    head_path: HeadPath = HEAD,
    task: str = "classification",
    catch_up: bool = False,
    catch_up_threshold: float = -20.0,
) -> Callable[[Any, dict], tuple[Any, dict]]:
    """:func:`make_nnx_alrao_train_step` as ``fit``'s ``train_step(state, batch) -> (state, metrics)``.

    ``fit`` sees an NNX model through :func:`randlr_jax.training.adapt_model` (parameters and the
    other collections, the switch's ``"alrao_switch"`` among them, as plain dicts in a
    ``TrainState``). This step merges them into a module (training mode, its random streams reseeded
    from the state's dropout key, as ``fit``'s own step), runs the NNX Alrao step on it with ``tx``
    on the state's optimizer state, and splits the result back: the same numbers as
    ``make_nnx_alrao_train_step`` with ``nnx.Optimizer(model, tx, wrt=nnx.Param)``, resumable and
    data parallel as any ``fit`` run.

    Args:
      model: the ``nnx.Module`` handed to ``fit`` (a ``features(x)`` method and one
        :class:`NNXAlraoHead` that ``head_path`` names).
      tx: the transformation handed to ``fit`` (typically :func:`~randlr_jax.alrao.alrao_sgd`
        with the same ``head_path``).
      head_path, task, catch_up, catch_up_threshold: as :func:`make_nnx_alrao_train_step`.

    Example:
      >>> from randlr_jax.alrao import alrao_sgd
      >>> from randlr_jax.training import create_train_state
      >>> class Net(nnx.Module):
      ...     def __init__(self, rngs):
      ...         self.body = nnx.Linear(4, 8, rngs=rngs)
      ...         self.head = NNXAlraoHead(8, 3, num_copies=2, rngs=rngs)
      ...     def features(self, x):
      ...         return jax.nn.relu(self.body(x))
      ...     def __call__(self, x):
      ...         return self.head(self.features(x))
      >>> model = Net(nnx.Rngs(0))
      >>> tx = alrao_sgd(jax.random.key(1), 1e-3, 1.0, num_copies=2)
      >>> step = jax.jit(make_nnx_alrao_fit_step(model, tx))
      >>> state = create_train_state(model, tx, jax.random.key(0), jnp.ones((1, 4)))
      >>> state, metrics = step(state, {"x": jnp.ones((5, 4)), "y": jnp.zeros(5, jnp.int32)})
      >>> metrics["posterior"].shape, int(state.model_state["alrao_switch"]["head"]["switch"].step)
      ((2,), 2)

    Raises:
      ValueError: ``model`` not an ``nnx.Module``, without ``features`` or without one
        :class:`NNXAlraoHead` matching ``head_path``; ``tx`` not a transformation; a bad argument
        of :func:`make_nnx_alrao_train_step`.
    """
    if not isinstance(model, nnx.Module):
        checks.fail(
            "model",
            "an nnx.Module with an NNXAlraoHead (a Linen model trains with make_alrao_train_step)",
            model,
            shown=checks.brief(model),
        )
    if not callable(getattr(model, "features", None)):
        raise ValueError(
            f"model must have a features(x) method (the pre-classifier's output) to train with "
            f"Alrao, got {type(model).__name__} without one."
        )
    find_head(model, head_path)
    checks.transformation("tx", tx)
    nnx_step = make_nnx_alrao_train_step(
        head_path=head_path, task=task, catch_up=catch_up, catch_up_threshold=catch_up_threshold
    )
    adapted = adapt_model(model)

    def train_step(state: Any, batch: dict) -> tuple[Any, dict]:
        dropout_key, next_rng = jax.random.split(state.rng)
        module = adapted.merge(
            {"params": state.params, **state.model_state}, train=True, key=dropout_key
        )
        optimizer = _StateOptimizer(tx, state.opt_state)
        metrics = nnx_step(module, optimizer, batch)
        new_state = state.replace(
            step=optax.safe_increment(state.step),
            params=nnx.to_pure_dict(nnx.state(module, nnx.Param)),
            model_state=adapted.collections_of(module),
            opt_state=optimizer.opt_state,
            rng=next_rng,
        )
        return new_state, metrics

    return train_step


def export_nnx_single_classifier(model: nnx.Module, head_path: HeadPath = HEAD) -> nnx.Module:
    """A copy of ``model`` whose :class:`NNXAlraoHead` is replaced by one ``nnx.Linear``: the copy the
    posterior ranks first (among the finite ones), for deployment without the copies.

    The paper's workflow keeps the copy the switch prefers; its predictions are that copy's
    (classification: its logits, whose softmax is ``p_j``). ``model`` is not changed.

    Raises:
      ValueError: not one :class:`NNXAlraoHead` matching ``head_path``, or no finite copy left.
    """
    module_path, _ = find_head(model, head_path)
    exported = nnx.clone(model)
    parent = exported
    for key in module_path[:-1]:
        parent = (
            parent[int(key)]
            if isinstance(parent, nnx.List)
            else (parent[key] if isinstance(parent, nnx.Dict) else getattr(parent, key))
        )
    _, head = find_head(exported, module_path)
    finite = cc.copies_finite(head.head_params())
    if not bool(jnp.any(finite)):
        raise ValueError("export_nnx_single_classifier: every copy is non-finite, none to export.")
    best = int(jnp.argmax(cc.masked_log_weights(head.log_posterior(), finite)))
    kernel, bias = head.copies.kernel.get_value()[best], head.copies.bias.get_value()[best]
    linear = nnx.Linear(kernel.shape[0], kernel.shape[1], rngs=nnx.Rngs(0))
    linear.kernel.set_value(kernel)
    linear.bias.set_value(bias)
    last = module_path[-1]
    if isinstance(parent, nnx.List):
        parent[int(last)] = linear
    elif isinstance(parent, nnx.Dict):
        parent[last] = linear
    else:
        setattr(parent, last, linear)
    return exported
