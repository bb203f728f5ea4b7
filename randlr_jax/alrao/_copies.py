"""Alrao's output layer: ``N`` copies of the classifier with log-spaced learning rates, averaged by a posterior.

The model output is the mixture (Blier et al. 2019, Eq. 5)

.. math::

    \\log p(y|x) = \\log \\sum_{j=1}^{N} a_j\\, p_j(y|x),

computed with ``logsumexp`` from the copies' log-probabilities and the averaging weights ``a`` (the switch
posterior by default, :func:`randlr_jax.alrao.switch_update`). The copies' parameters are stacked on a
leading axis of size ``N`` and evaluated with one vmapped matmul. The averaging state lives in the Flax
collection ``"alrao_switch"`` (not trained by gradient descent), so it is part of the model's variables,
checkpointed with them, and updated inside the jitted training step (:func:`randlr_jax.make_alrao_train_step`).

Copy ``j`` (``j = 0..N-1``) is trained with the learning rate

.. math::

    \\eta_j = \\exp\\left(\\log\\eta_{\\min} + \\tfrac{j}{N-1}\\log(\\eta_{\\max}/\\eta_{\\min})\\right),

which is the paper's ``log eta_j = log eta_min + (j-1)/(N-1) log(eta_max/eta_min)``, ``j = 1..N``, with
the index counted from zero. The paper's formula is undefined for ``N = 1``; then the single copy uses
``eta_min``, as the authors' code does (:func:`copy_learning_rates`).

A copy whose parameters are non-finite (its learning rate was too large) is dropped from the mixture, as if
``a_j = 0`` (the remaining weights renormalised). If no copy is finite the output is the uniform
distribution (regression: zero), never NaN. The paper does not treat diverging copies; this is our choice.

Regression (the paper: "the case of regression is similar"): each copy predicts a mean ``mu_j``; the
likelihood is Gaussian with fixed ``sigma`` (1 by default, as the authors' code; the ``sigma`` field),
the mixture loss ``-log sum_j a_j N(y; mu_j, sigma^2 I)`` (:func:`randlr_jax.alrao.alrao_loss`) and the
output is the posterior-weighted mean ``sum_j a_j mu_j``.

References:
  Blier, Wolinski, Ollivier, `Learning with Random Learning Rates <https://arxiv.org/abs/1810.01322>`_, 2019.
"""

from __future__ import annotations

import contextlib
import contextvars
import math
from collections.abc import Callable, Iterator
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from randlr_jax import _checks as checks
from randlr_jax.alrao import _switch as switch_lib
from randlr_jax.alrao._features import check_lr_interval

SWITCH_COLLECTION = "alrao_switch"
TASKS = ("classification", "regression")
AVERAGING = ("switch", "bayes", "uniform")


def check_num_copies(num_copies: Any) -> int:
    """``N``: a concrete positive integer (under ``optax.inject_hyperparams``, a ``static_args``)."""
    return checks.positive_int("num_copies", num_copies)


def check_copy_chunk_size(
    copy_chunk_size: Any, num_copies: int, name: str = "copy_chunk_size"
) -> int | None:
    """Validate a chunk size of the copy axis: ``None`` (no chunking) or an integer in ``[1, N]``."""
    if copy_chunk_size is None:
        return None
    what = f"None or an integer in [1, num_copies={num_copies}]"
    if (
        checks.is_traced(copy_chunk_size)
        or isinstance(copy_chunk_size, (bool, np.bool_))
        or not isinstance(copy_chunk_size, (int, np.integer))
        or not 1 <= copy_chunk_size <= num_copies
    ):
        checks.fail(name, what, copy_chunk_size)
    return int(copy_chunk_size)


_COPY_SHARDS = contextvars.ContextVar("alrao_copy_shards", default=1)


@contextlib.contextmanager
def copy_shards(count: int) -> Iterator[None]:
    """Within this context (while a step is traced) the copy axis is split over ``count`` devices.

    :func:`randlr_jax.alrao.jit_sharded_step` traces the step inside it, so that
    :func:`default_copy_chunk` gives every device one copy of each chunk of the fused loss
    (:func:`randlr_jax.alrao.alrao_loss_dense`) instead of gathering the copies.
    """
    token = _COPY_SHARDS.set(checks.positive_int("count", count))
    try:
        yield
    finally:
        _COPY_SHARDS.reset(token)


SMALL_OUTPUTS = 2**16
"""Outputs of all copies (``N x B x ... x K`` numbers) up to which :func:`default_copy_chunk` takes
every copy in one iteration: the loop's per-iteration cost would outweigh the copies' work (on a
2-core CPU, MLP body, batch 32: ``K = 10`` steps 1.9x faster at ``N = 32`` in one batch than one copy
at a time, ``K = 1000`` equal or slower)."""


def default_copy_chunk(
    copy_chunk_size: int | None, num_copies: int, outputs_per_copy: int = SMALL_OUTPUTS + 1
) -> int:
    """The copies per iteration of the Alrao step's fused loss (:func:`randlr_jax.alrao.alrao_loss_dense`).

    ``copy_chunk_size`` when given. Otherwise all ``N`` copies at once when their outputs are small
    (``N * outputs_per_copy <= SMALL_OUTPUTS``, ``outputs_per_copy`` the ``B x ... x K`` outputs of
    one copy); else one copy at a time, or, with the copy axis split over ``s`` devices
    (:func:`copy_shards`) and ``s`` dividing ``N``, ``s`` copies (strided chunks: one per device).
    """
    if copy_chunk_size is not None:
        return copy_chunk_size
    if num_copies * outputs_per_copy <= SMALL_OUTPUTS:
        return num_copies
    shards = _COPY_SHARDS.get()
    return shards if 1 < shards <= num_copies and num_copies % shards == 0 else 1


def copy_learning_rates(lr_min: float, lr_max: float, num_copies: int) -> np.ndarray:
    """The copies' learning rates, log-spaced from ``lr_min`` to ``lr_max`` (``(N,)`` float32).

    ``eta_j = exp(log lr_min + j / (N - 1) * log(lr_max / lr_min))`` for ``j = 0..N-1`` (the paper's
    Section 2), computed in float64 and rounded to float32; with ``N = 1``, where the paper's formula
    divides by zero, the single rate is ``lr_min`` (the authors' code's choice). The arguments in the
    order of :func:`randlr_jax.alrao.alrao_sgd` (interval, then ``N``), all concrete.

    Raises:
      ValueError: a bad interval (:func:`randlr_jax.alrao._features.check_lr_interval`) or
        ``num_copies`` not a positive integer, naming the argument.

    Example:
      >>> [round(float(lr), 6) for lr in copy_learning_rates(1e-3, 1e-1, 3)]
      [0.001, 0.01, 0.1]
    """
    lr_min, lr_max = check_lr_interval(lr_min, lr_max)
    num_copies = check_num_copies(num_copies)
    if num_copies == 1:
        return np.asarray([lr_min], np.float32)
    fractions = np.arange(num_copies, dtype=np.float64) / (num_copies - 1)
    return np.exp(math.log(lr_min) + fractions * math.log(lr_max / lr_min)).astype(np.float32)


def suggest_lr(copy_lrs: Any, posterior: Any) -> jax.Array:
    """The posterior-weighted geometric mean of the copies' rates: ``exp(sum_j a_j log eta_j)``.

    The paper's workflow (Section 4): assess a model with Alrao, then train it with plain SGD at this rate.
    Copies with zero weight do not contribute.

    Raises:
      ValueError: ``copy_lrs`` not a non-empty 1-D array of finite rates ``> 0``, or ``posterior`` not
        weights ``>= 0`` of the same shape with a positive sum (concrete values are checked; traced
        ones only by shape).
    """
    copy_lrs = _vector(
        "copy_lrs", copy_lrs, "a non-empty 1-D array of finite rates > 0",
        lambda x: x.ndim == 1 and x.size > 0 and bool(np.all(np.isfinite(x) & (x > 0))),
    )  # fmt: skip
    posterior = _vector(
        "posterior", posterior,
        f"weights >= 0 with a positive sum, of the shape of copy_lrs {tuple(copy_lrs.shape)}",
        lambda a: a.shape == copy_lrs.shape
        and bool(np.all(np.isfinite(a) & (a >= 0)) and np.sum(a) > 0),
        shape=copy_lrs.shape,
    )  # fmt: skip
    return jnp.exp(jnp.sum(posterior * jnp.log(copy_lrs)) / jnp.sum(posterior))


def _vector(
    name: str, value: Any, what: str, valid: Callable[[np.ndarray], bool], shape: Any = None
) -> jax.Array:
    """``value`` as a float32 array, checked by ``valid`` when concrete (by ``shape`` when traced)."""
    if checks.is_traced(value):
        if shape is not None and value.shape != shape:
            checks.fail(name, what, value, shown=checks.brief(value))
        return jnp.asarray(value, jnp.float32)
    try:
        array = np.asarray(value, np.float64)
    except (TypeError, ValueError):
        array = None
    if array is None or not valid(array):
        checks.fail(name, what, value, shown=checks.brief(value))
    return jnp.asarray(value, jnp.float32)


def copies_finite(head_params: Any) -> jax.Array:
    """``(N,)`` bool: whether every parameter of copy ``j`` (leading axis of each leaf) is finite."""
    leaves = jax.tree.leaves(head_params)
    flags = [jnp.all(jnp.isfinite(leaf.reshape(leaf.shape[0], -1)), axis=1) for leaf in leaves]
    return jnp.stack(flags).all(axis=0)


def zero_nonfinite_copies(tree: Any, finite: jax.Array) -> Any:
    """Replace the slices ``j`` with ``finite[j] == False`` of every leaf by zeros (NaN-safe)."""

    def mask(leaf):
        keep = finite.reshape((-1,) + (1,) * (leaf.ndim - 1))
        return jnp.where(keep, leaf, jnp.zeros_like(leaf))

    return jax.tree.map(mask, tree)


def masked_log_weights(log_posterior: jax.Array, finite: jax.Array) -> jax.Array:
    """Log-weights with dropped copies at ``-inf``, renormalised over the remaining ones.

    If no copy is finite the result is all ``-inf`` (callers keep the output finite with ``jnp.where``).
    """
    logw = jnp.where(finite, log_posterior, -jnp.inf)
    total = jax.nn.logsumexp(logw)
    return jnp.where(jnp.isfinite(total), logw - total, -jnp.inf)


def mixture_log_probs(copy_log_probs: jax.Array, log_weights: jax.Array) -> jax.Array:
    """``log sum_j a_j p_j``: ``copy_log_probs`` ``(N, ..., K)``, ``log_weights`` ``(N,)`` -> ``(..., K)``."""
    logw = log_weights.reshape((-1,) + (1,) * (copy_log_probs.ndim - 1))
    return jax.nn.logsumexp(logw + copy_log_probs, axis=0)


def gaussian_log_likelihood(means: jax.Array, targets: jax.Array, sigma: float) -> jax.Array:
    """``log N(y; mu, sigma^2 I)`` summed over the last (output) axis."""
    z = (targets - means) / sigma
    return jnp.sum(-0.5 * z**2 - math.log(sigma) - 0.5 * math.log(2 * math.pi), axis=-1)


class AlraoTrainingError(RuntimeError):
    """An Alrao head's mixture output was differentiated: it is being trained outside the Alrao step.

    A plain loss on the mixture (``-log sum_j a_j p_j``) trains every copy on the mixture's gradient
    instead of its own loss and never updates the switch posterior: it runs, but it is not Alrao.
    """


_MISUSE_MESSAGE = (
    "the output of an Alrao head ({head}.__call__) was differentiated. Training an Alrao head with a "
    "plain loss on its output trains every copy on the mixture's gradient instead of its own loss and "
    "never updates the switch posterior. Train it with the Alrao step: "
    "randlr_jax.alrao.make_alrao_train_step (Flax Linen, also for a head wrapped with "
    "nnx.bridge.ToNNX) or randlr_jax.alrao.make_nnx_alrao_train_step (Flax NNX, NNXAlraoHead). To "
    "differentiate the mixture on purpose (e.g. a saliency map), call the head with "
    "allow_gradient=True or differentiate within randlr_jax.alrao.mixture_gradient_allowed()."
)


_GRADIENT_ALLOWED = contextvars.ContextVar("alrao_mixture_gradient_allowed", default=False)


@contextlib.contextmanager
def mixture_gradient_allowed() -> Iterator[None]:
    """Within this context an Alrao head's output may be differentiated (no :class:`AlraoTrainingError`).

    For a gradient of the mixture on purpose through a model that calls the head itself (e.g. the
    gradient of a ``Classifier``'s output with respect to its input, or a check of the mixture's
    gradients); calling the head with ``allow_gradient=True`` does the same for one call. The flag
    is read when the head is called (at trace time under ``jit``).

    Example:
      >>> with mixture_gradient_allowed():
      ...     pass
    """
    token = _GRADIENT_ALLOWED.set(True)
    try:
        yield
    finally:
        _GRADIENT_ALLOWED.reset(token)


def guard_training(output: Any, head: str) -> Any:
    """``output`` unchanged, but differentiating it raises :class:`AlraoTrainingError`.

    The Alrao steps never differentiate a head's ``__call__`` (they use its copies' outputs); a
    gradient through it means the head is trained by a plain loss. The check costs nothing in the
    forward pass (an identity with a custom VJP whose backward pass raises when it is traced).
    """

    @jax.custom_vjp
    def identity(x):
        return x

    def forward(x):
        return x, None

    def backward(_, cotangent):
        del cotangent
        raise AlraoTrainingError(_MISUSE_MESSAGE.format(head=head))

    if _GRADIENT_ALLOWED.get():
        return output
    identity.defvjp(forward, backward)
    return identity(output)


class AlraoHead(nn.Module):
    """``N`` copies of a dense classifier layer, averaged by a posterior over the copies.

    Parameters: ``copies/kernel`` ``(N, D, K)`` and ``copies/bias`` ``(N, K)``, each copy initialised
    independently. Collection ``"alrao_switch"``: the averaging state (``randlr_jax.alrao``).

    ``__call__(features)`` returns, for classification, the mixture log-probabilities ``(..., K)`` (usable as
    logits: they are already normalised); for regression, the posterior-weighted mean ``(..., K)``.
    ``copy_outputs(features)`` returns the copies' logits (or means) ``(N, ..., K)``. Differentiating
    ``__call__``'s output raises :class:`AlraoTrainingError` (a plain loss on the mixture is not
    Alrao: train with :func:`randlr_jax.alrao.make_alrao_train_step`); ``allow_gradient=True`` (or
    the context :func:`mixture_gradient_allowed`) lets a gradient through on purpose.

    Attributes:
      num_outputs: classes ``K`` (or output dimension for regression).
      num_copies: ``N``.
      task: ``"classification"`` or ``"regression"``.
      sigma: standard deviation of the Gaussian likelihood (regression).
      averaging: ``"switch"`` (default), ``"bayes"`` or ``"uniform"``.
      theta: the switch's prior probability, at each switch, of switching again later, in ``(0, 1)``
        (default ``0.9999``, the authors' code; the paper's text says ``0.999``), see
        :func:`randlr_jax.alrao.switch_init`.
      kernel_init, bias_init: initialisers of each copy (as ``nn.Dense``'s defaults).
      copy_chunk_size: ``None`` (default) or ``c`` in ``[1, N]``: ``__call__`` and the Alrao step
        loop over chunks of ``c`` copies and never hold the ``(N, ..., K)`` outputs, only one chunk's
        ``(c, ..., K)`` (forward and backward pass). Same results up to float rounding. With
        ``None``, ``__call__`` takes all copies at once and the Alrao step's fused objective
        (:func:`randlr_jax.alrao.alrao_loss_dense`) picks the chunk (:func:`default_copy_chunk`:
        all copies when their outputs are small, else one at a time, or one per copy shard).

    The fields are checked when the module is set up (``init`` / ``apply``): ``ValueError`` naming the
    field for ``num_outputs`` / ``num_copies`` not positive integers, an unknown ``task`` or
    ``averaging``, ``sigma`` not a finite number > 0, ``theta`` outside ``(0, 1)``, a ``copy_chunk_size``
    outside ``[1, N]``, ``kernel_init`` / ``bias_init`` not callable.

    Example:
      >>> from randlr_jax.models import make_model
      >>> head = AlraoHead(num_outputs=10, num_copies=6)
      >>> model = make_model("mlp", head=head)
      >>> variables = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((2, 784)))
      >>> jax.tree.map(lambda leaf: leaf.shape, variables["params"]["head"]["copies"])
      {'bias': (6, 10), 'kernel': (6, 100, 10)}
    """

    num_outputs: int
    num_copies: int = 10
    task: str = "classification"
    sigma: float = 1.0
    averaging: str = "switch"
    theta: float = switch_lib.DEFAULT_THETA
    kernel_init: Callable = nn.initializers.lecun_normal()
    bias_init: Callable = nn.initializers.zeros_init()
    copy_chunk_size: int | None = None

    def _validate(self) -> None:
        check_num_copies(self.num_copies)
        check_copy_chunk_size(self.copy_chunk_size, self.num_copies)
        checks.positive_int("num_outputs", self.num_outputs)
        checks.one_of("task", self.task, TASKS)
        checks.one_of("averaging", self.averaging, AVERAGING)
        checks.positive("sigma", self.sigma)
        checks.in_unit_interval("theta", self.theta, closed_left=False)
        for name in ("kernel_init", "bias_init"):
            checks.function(
                name, getattr(self, name), "an initializer (e.g. nn.initializers.zeros)"
            )

    def averager(self) -> switch_lib.Averager:
        return switch_lib.make_averager(self.averaging, self.num_copies, theta=self.theta)

    def setup(self):
        self._validate()
        self.copies = nn.vmap(
            nn.Dense,
            variable_axes={"params": 0},
            split_rngs={"params": True},
            in_axes=None,
            out_axes=0,
            axis_size=self.num_copies,
        )(self.num_outputs, kernel_init=self.kernel_init, bias_init=self.bias_init, name="copies")
        # ``copy_outputs`` may be applied with the parameters alone (as the Alrao step does).
        if self.is_initializing() or self.has_variable(SWITCH_COLLECTION, "state"):
            self.switch_state = self.variable(SWITCH_COLLECTION, "state", self.averager().init)

    def copy_outputs(self, features: jax.Array) -> jax.Array:
        """The copies' logits (classification) or means (regression), ``(N, ..., K)``."""
        return self.copies(features)

    def log_weights(self, head_params: Any | None = None) -> jax.Array:
        """The averaging log-weights, with non-finite copies dropped (``(N,)``)."""
        log_posterior = self.averager().log_posterior(self.switch_state.value)
        params = self.variables["params"] if head_params is None else head_params
        return masked_log_weights(log_posterior, copies_finite(params))

    def __call__(self, features: jax.Array, *, allow_gradient: bool = False) -> jax.Array:
        output = self._mixture(features)
        if allow_gradient or self.is_initializing():
            return output
        return guard_training(output, "AlraoHead")

    def _mixture(self, features: jax.Array) -> jax.Array:
        # ``init`` takes the unchunked path: it creates the parameters (on a small sample input).
        if self.copy_chunk_size is not None and not self.is_initializing():
            return chunked_mixture_output(
                apply_copies,
                self.variables["params"],
                features,
                self.averager().log_posterior(self.switch_state.value),
                chunk_size=self.copy_chunk_size,
                task=self.task,
            )
        outputs = self.copy_outputs(features)
        finite = copies_finite(self.variables["params"]) & finite_per_copy(outputs)
        logw = masked_log_weights(self.averager().log_posterior(self.switch_state.value), finite)
        # Zero the dropped copies' outputs so that NaNs never meet their (zero) weights.
        outputs = zero_nonfinite_copies(outputs, finite)
        # With no finite copy left there is no prediction to average: fall back to the uniform
        # distribution (regression: zero) rather than return NaN.
        any_finite = jnp.any(finite)
        if self.task == "classification":
            mixture = mixture_log_probs(jax.nn.log_softmax(outputs, axis=-1), logw)
            uniform = jnp.full_like(mixture, -math.log(self.num_outputs))
            return jnp.where(any_finite, mixture, uniform)
        weights = jnp.exp(logw).reshape((-1,) + (1,) * (outputs.ndim - 1))
        return jnp.where(
            any_finite, jnp.sum(jnp.where(any_finite, weights, 0.0) * outputs, axis=0), 0.0
        )


def get_switch_state(model_state: Any, head_key: str = "head") -> Any:
    """The averaging state of the head named ``head_key`` from a model's non-parameter collections."""
    return model_state[SWITCH_COLLECTION][head_key]["state"]


def set_switch_state(model_state: Any, new_state: Any, head_key: str = "head") -> dict:
    """A copy of ``model_state`` with the head's averaging state replaced."""
    switch = dict(model_state[SWITCH_COLLECTION])
    switch[head_key] = {**switch[head_key], "state": new_state}
    return {**model_state, SWITCH_COLLECTION: switch}


def finite_per_copy(outputs: jax.Array) -> jax.Array:
    """``(N,)`` bool: whether every output of copy ``j`` (leading axis) is finite."""
    return jnp.all(jnp.isfinite(outputs.reshape(outputs.shape[0], -1)), axis=1)


def apply_copies(head_params: Any, features: jax.Array) -> jax.Array:
    """The outputs ``(c, ..., K)`` of the dense copies in ``head_params`` (leaves with leading size ``c``).

    The function :meth:`AlraoHead.copy_outputs` computes, for any number ``c`` of copies (e.g. a chunk
    of the copy axis): ``features @ kernel_j + bias_j`` for each ``j``, as ``nn.Dense``.

    Args:
      head_params: ``{"copies": {"kernel": (c, D, K), "bias": (c, K)}}`` (an :class:`AlraoHead`'s
        parameters, or a slice of them along the copy axis).
      features: ``(..., D)``.
    """
    copies = head_params["copies"]
    # A detached module (``parent=None``): inside a bound module it must not become a submodule.
    dense = nn.Dense(copies["kernel"].shape[-1], parent=None)
    return jax.vmap(lambda p: dense.apply({"params": p}, features))(copies)


def to_copy_chunks(tree: Any, chunk_size: int, fill: Any = 0) -> Any:
    """Split the copy axis (leading, size ``N``) of every leaf into ``ceil(N/c)`` chunks of ``c`` copies.

    Leaves ``(N, ...)`` become ``(ceil(N/c), c, ...)``; the axis is padded with ``fill`` to a multiple of
    ``c``. Chunk ``i`` holds the copies ``i, i + ceil(N/c), i + 2 ceil(N/c), ...`` (strided): when the copy
    axis is sharded over ``s`` devices and ``s`` divides ``c``, every chunk is spread over all of them
    (each device computes ``c/s`` copies of every chunk) instead of living on one device.
    """

    def one(x):
        n = x.shape[0]
        num_chunks = -(-n // chunk_size)
        pad = num_chunks * chunk_size - n
        if pad:
            x = jnp.concatenate([x, jnp.full((pad,) + x.shape[1:], fill, x.dtype)])
        return jnp.swapaxes(x.reshape((chunk_size, num_chunks) + x.shape[1:]), 0, 1)

    return jax.tree.map(one, tree)


def from_copy_chunks(tree: Any, num_copies: int) -> Any:
    """Inverse of :func:`to_copy_chunks`: ``(ceil(N/c), c, ...)`` back to ``(N, ...)`` in copy order."""

    def one(y):
        y = jnp.swapaxes(y, 0, 1)
        return y.reshape((-1,) + y.shape[2:])[:num_copies]

    return jax.tree.map(one, tree)


def mixture_init(task: str, output_shape: tuple[int, ...], dtype: Any = jnp.float32) -> Any:
    """The empty running mixture of :func:`mixture_chunk` / :func:`mixture_combine` (no copy yet)."""
    if task == "classification":
        return jnp.full(output_shape, -jnp.inf, dtype)
    return (jnp.full((), -jnp.inf, dtype), jnp.zeros(output_shape, dtype), jnp.zeros((), dtype))


def mixture_chunk(task: str, outputs: jax.Array, log_weights: jax.Array) -> Any:
    """The share of ``c`` copies in the mixture: ``outputs`` ``(c, ..., K)``, ``log_weights`` ``(c,)``.

    Dropped copies have ``log_weights = -inf`` (and finite, e.g. zeroed, outputs). Classification: the
    unnormalised ``log sum_j w_j p_j`` ``(..., K)``; regression: ``(m, sum_j e^{lw_j - m} mu_j,
    sum_j e^{lw_j - m})`` with ``m = max_j lw_j``. Differentiable, also when every copy is dropped.
    """
    keep = jnp.isfinite(log_weights)
    any_kept = jnp.any(keep)
    shape = (-1,) + (1,) * (outputs.ndim - 1)
    if task == "classification":
        terms = log_weights.reshape(shape) + jax.nn.log_softmax(outputs, axis=-1)
        # All dropped: take the logsumexp of zeros (finite gradient), then discard it.
        terms = jnp.where(any_kept, terms, 0.0)
        return jnp.where(any_kept, jax.nn.logsumexp(terms, axis=0), -jnp.inf)
    top = jnp.max(log_weights)
    scaled = jnp.exp(log_weights - jnp.where(any_kept, top, 0.0))
    return (
        jnp.where(any_kept, top, -jnp.inf),
        jnp.sum(scaled.reshape(shape) * outputs, axis=0),
        jnp.sum(scaled),
    )


def mixture_combine(task: str, running: Any, part: Any) -> Any:
    """Merge two shares of the mixture (outputs of :func:`mixture_chunk` or :func:`mixture_init`)."""
    if task == "classification":
        return jnp.logaddexp(running, part)
    (top_a, num_a, den_a), (top_b, num_b, den_b) = running, part
    top = jnp.maximum(top_a, top_b)
    ref = jnp.where(jnp.isfinite(top), top, 0.0)
    scale_a, scale_b = jnp.exp(top_a - ref), jnp.exp(top_b - ref)
    return (top, num_a * scale_a + num_b * scale_b, den_a * scale_a + den_b * scale_b)


def mixture_finish(task: str, running: Any, log_weights: jax.Array, num_outputs: int) -> jax.Array:
    """The normalised mixture from the merged shares and all ``N`` log-weights (``-inf``: dropped).

    Classification: ``log sum_j a_j p_j`` with ``a = softmax(log_weights)`` (uniform ``-log K`` when no copy
    is kept); regression: ``sum_j a_j mu_j`` (zero when no copy is kept), as :class:`AlraoHead`.
    """
    any_kept = jnp.any(jnp.isfinite(log_weights))
    if task == "classification":
        total = jax.nn.logsumexp(log_weights)
        mixture = jnp.where(
            jnp.isfinite(total), running - jnp.where(jnp.isfinite(total), total, 0.0), -jnp.inf
        )
        return jnp.where(any_kept, mixture, -math.log(num_outputs))
    _, num, den = running
    ok = any_kept & (den > 0)
    return jnp.where(ok, num / jnp.where(ok, den, 1.0), 0.0)


def chunked_mixture_output(
    apply_fn: Callable[[Any, jax.Array], jax.Array],
    head_params: Any,
    features: jax.Array,
    log_posterior: jax.Array,
    *,
    chunk_size: int,
    task: str = "classification",
) -> jax.Array:
    """:class:`AlraoHead`'s output computed over chunks of ``chunk_size`` copies (``lax.scan``).

    Equal to the unchunked output (up to float rounding): copies whose parameters or outputs are
    non-finite are dropped, the mixture is taken over the rest. Each chunk's body is under
    ``jax.checkpoint``: the forward and backward passes hold one chunk's ``(c, ..., K)`` outputs, not
    the ``(N, ..., K)`` of all copies (a gradient keeps one ``(..., K)`` running mixture per chunk).

    Args:
      apply_fn: ``(head_params_chunk, features) -> (c, ..., K)``, e.g. :func:`apply_copies`.
      head_params: the copies' parameters, copy axis first (size ``N``).
      features: ``(..., D)``.
      log_posterior: ``(N,)`` averaging log-weights.
      chunk_size: copies per chunk, in ``[1, N]``.
      task: ``"classification"`` or ``"regression"``.

    Returns:
      ``(..., K)``: mixture log-probabilities (classification) or the weighted mean (regression).
    """
    num_copies = log_posterior.shape[0]
    chunk_size = check_copy_chunk_size(chunk_size, num_copies, "chunk_size")
    if chunk_size is None:
        checks.fail("chunk_size", f"an integer in [1, N={num_copies}]", None)
    params_finite = copies_finite(head_params)

    def chunk(params, features, log_post, finite_params):
        outputs = apply_fn(params, features)
        keep = finite_params & finite_per_copy(outputs)
        outputs = zero_nonfinite_copies(outputs, keep)
        return mixture_chunk(task, outputs, jnp.where(keep, log_post, -jnp.inf)), keep

    chunk = jax.checkpoint(chunk, prevent_cse=False)  # a scan already keeps chunks apart

    def body(running, xs):
        params, log_post, finite_params = xs
        part, keep = chunk(params, features, log_post, finite_params)
        return mixture_combine(task, running, part), keep

    one_copy = jax.eval_shape(apply_fn, jax.tree.map(lambda x: x[:1], head_params), features)
    running = mixture_init(task, one_copy.shape[1:], one_copy.dtype)
    xs = to_copy_chunks((head_params, log_posterior, params_finite), chunk_size)
    running, keep = jax.lax.scan(body, running, xs)
    keep = from_copy_chunks(keep, num_copies)
    log_weights = jnp.where(keep, log_posterior, -jnp.inf)
    return mixture_finish(task, running, log_weights, one_copy.shape[-1])
