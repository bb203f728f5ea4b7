"""Character-level stacked LSTM body (the Alrao paper's Penn Treebank model) for truncated BPTT."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from randlr_jax.models._common import check_dropout_rate, check_positive_int

# One (c, h) pair per layer, each (B, hidden_size) float32.
LSTMCarry = tuple[tuple[jax.Array, jax.Array], ...]


def _symmetric_uniform(scale: float) -> nn.initializers.Initializer:
    def init(key: jax.Array, shape: tuple[int, ...], dtype: Any = jnp.float32) -> jax.Array:
        return jax.random.uniform(key, shape, dtype, -scale, scale)

    return init


class CharLSTM(nn.Module):
    """Embedding -> dropout -> ``num_layers`` x (LSTM -> dropout): a recurrent pre-classifier.

    Per layer ``l`` and step ``t`` (one LSTM cell, Flax's gate layout):
    ``i, f, o = sigmoid(W_{i,f,o} x_t + U_{i,f,o} h_{t-1} + b)``, ``g = tanh(W_g x_t + U_g h_{t-1} +
    b_g)``, ``c_t = f * c_{t-1} + i * g``, ``h_t = o * tanh(c_t)``. Dropout (rate ``dropout_rate``,
    rng name ``"dropout"``, only when ``train``) is applied to the embeddings, between layers and to
    the last layer's outputs, as the reference (``nn.Dropout`` on the embeddings and outputs plus
    ``nn.LSTM``'s inter-layer dropout). The embedding is initialised ``U(-0.1, 0.1)`` as the
    reference; the LSTM uses Flax's default initialisers.

    The recurrence runs with ``nn.RNN`` (a ``lax.scan`` over time). Layer ``l`` is the submodule
    ``lstm_{l}`` and its cell's parameters live under ``lstm_{l}/cell/{ii,if,ig,io,hi,hf,hg,ho}``
    (kernels ``(in, hidden)``: the last axis is the hidden unit), which is how per-unit
    learning-rate rules recognise an LSTM cell. With ``vocab_size=50``, the defaults and a Dense
    head the model has 170,850 parameters (Alrao paper's Table 2: 0.172M, counting PyTorch's second
    LSTM bias vector).

    Shapes: ``tokens`` ``(B, L)`` int; ``carry`` as returned by :meth:`initial_carry`; returns
    ``(features (B, L, hidden_size), new_carry)`` with ``new_carry`` of the same structure as
    ``carry``.

    Attributes:
      vocab_size: number of symbols (rows of the embedding).
      embed_dim: embedding size (100 in the paper).
      hidden_size: LSTM units per layer (100 in the paper).
      num_layers: stacked LSTM layers (2 in the paper).
      dropout_rate: dropout rate (0.2 in the paper).

    Example:
      >>> import jax, jax.numpy as jnp
      >>> body = CharLSTM(vocab_size=50)
      >>> carry = body.initial_carry(4)
      >>> tokens = jnp.zeros((4, 70), jnp.int32)
      >>> variables = jax.eval_shape(body.init, jax.random.key(0), tokens, carry)  # shapes only
      >>> features, carry = jax.eval_shape(body.apply, variables, tokens, carry)
      >>> features.shape
      (4, 70, 100)

    References:
      Hochreiter & Schmidhuber, Long Short-Term Memory <https://doi.org/10.1162/neco.1997.9.8.1735>,
      1997; Blier et al, Learning with Random Learning Rates <https://arxiv.org/abs/1810.01322>,
      2018 (Sec. 5).
    """

    vocab_size: int
    embed_dim: int = 100
    hidden_size: int = 100
    num_layers: int = 2
    dropout_rate: float = 0.2

    def __post_init__(self) -> None:
        check_positive_int("vocab_size", self.vocab_size)
        check_positive_int("embed_dim", self.embed_dim)
        check_positive_int("hidden_size", self.hidden_size)
        check_positive_int("num_layers", self.num_layers)
        check_dropout_rate(self.dropout_rate)
        super().__post_init__()

    @nn.compact
    def __call__(
        self, tokens: jax.Array, carry: LSTMCarry, *, train: bool = False
    ) -> tuple[jax.Array, LSTMCarry]:
        if len(carry) != self.num_layers:
            raise ValueError(
                f"carry must hold one (c, h) pair per layer ({self.num_layers}), got {len(carry)}."
            )
        dropout = nn.Dropout(self.dropout_rate, deterministic=not train)
        x = nn.Embed(
            self.vocab_size, self.embed_dim, embedding_init=_symmetric_uniform(0.1), name="embed"
        )(tokens)
        x = dropout(x)
        new_carry = []
        for layer in range(self.num_layers):
            rnn = nn.RNN(
                nn.OptimizedLSTMCell(self.hidden_size, parent=None),
                return_carry=True,
                name=f"lstm_{layer}",
            )
            layer_carry, x = rnn(x, initial_carry=tuple(carry[layer]))
            x = dropout(x)
            new_carry.append(layer_carry)
        return x, tuple(new_carry)

    @nn.nowrap
    def initial_carry(self, batch_size: int) -> LSTMCarry:
        """Zero ``(c, h)`` states, ``(batch_size, hidden_size)`` float32 each, one pair per layer.

        Needs no parameters: callable on an unbound module.
        """
        check_positive_int("batch_size", batch_size)
        shape = (batch_size, self.hidden_size)
        # Distinct arrays: a training step that donates its state must not see one buffer twice.
        return tuple(
            (jnp.zeros(shape, jnp.float32), jnp.zeros(shape, jnp.float32))
            for _ in range(self.num_layers)
        )
