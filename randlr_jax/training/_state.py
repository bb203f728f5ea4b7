"""The training state carried through jitted steps and checkpoints."""

from __future__ import annotations

import functools
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax

from randlr_jax.training._nnx import adapt_model


class TrainState(flax.struct.PyTreeNode):
    """Everything a step reads and writes; a pytree, so it can be jitted, sharded and checkpointed.

    Attributes:
      step: int32 scalar, number of optimizer steps taken.
      params: the model's ``"params"`` collection.
      model_state: the model's other mutable collections (e.g. ``{"batch_stats": ...}``); ``{}`` if none.
      opt_state: the optimizer's state.
      rng: typed PRNG key for dropout, split every step.
      carry: recurrent state carried across truncated-BPTT windows (language models); ``None`` otherwise.
    """

    step: jax.Array
    params: Any
    model_state: Any
    opt_state: Any
    rng: jax.Array
    carry: Any = None


def create_train_state(
    model: Any,
    tx: optax.GradientTransformation,
    key: jax.Array,
    sample_input: jax.Array,
    *,
    carry: Any = None,
) -> TrainState:
    """Initialise parameters from ``key`` and the optimizer state from them.

    Args:
      model: a Flax linen module (``Classifier`` or ``LanguageModel``), or an ``nnx.Module``: its
        current variables are the initial ones (:func:`~randlr_jax.training.adapt_model`).
      tx: any Optax transformation.
      key: typed PRNG key; split into the init key and the dropout key.
      sample_input: a batch of inputs with the right trailing shape (its leading size does not matter).
      carry: for language models, the initial recurrent state (``model.initial_carry(batch_size)``).
    """
    model = adapt_model(model)  # an nnx.Module: starts from its current variables
    init_key, dropout_key, rng = jax.random.split(key, 3)
    rngs = {"params": init_key, "dropout": dropout_key}
    # Compiled once: an eager ``init`` dispatches (and compiles) every small op of a deep model.
    init = _jitted_init(model)
    if carry is None:
        variables = init(rngs, sample_input)
    else:
        variables = init(rngs, sample_input, carry)
    variables = dict(variables)
    params = variables.pop("params")
    state = TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        model_state=variables,
        opt_state=tx.init(params),
        rng=rng,
        carry=carry,
    )
    return unalias(state)


def unalias(tree: Any) -> Any:
    """Copy leaves that are the same array object as an earlier leaf.

    A transformation's ``init`` may put one array in several places of its state (or return an array it
    also holds elsewhere); a step that donates its state would then donate one buffer twice, which XLA
    rejects. After this, every leaf owns its buffer.
    """
    seen: set[int] = set()

    def own(leaf):
        if isinstance(leaf, jax.Array):
            if id(leaf) in seen:
                return jnp.copy(leaf)
            seen.add(id(leaf))
        return leaf

    return jax.tree.map(own, tree)


def _jitted_init(model: Any) -> Any:
    """``jax.jit(partial(model.init, train=False))``, the same jitted function for equal models: a run
    repeated in the same process (a seed, a learning rate of a sweep) compiles ``init`` once."""
    try:
        return _cached_init(model)
    except TypeError:  # an unhashable model
        return jax.jit(functools.partial(model.init, train=False))


@functools.lru_cache(maxsize=16)
def _cached_init(model: Any) -> Any:
    return jax.jit(functools.partial(model.init, train=False))
