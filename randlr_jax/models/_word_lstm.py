"""Word-level stacked LSTM language model: :class:`CharLSTM`'s body with word-sized defaults."""

from __future__ import annotations

from typing import Any

import flax.linen as nn

from randlr_jax.models._char_lstm import CharLSTM
from randlr_jax.models._common import check_positive_int
from randlr_jax.models._split import LanguageModel


class WordLSTM(CharLSTM):
    """Embedding -> dropout -> ``num_layers`` x (LSTM -> dropout), sized for a word vocabulary.

    The same module as :class:`CharLSTM` (same recurrence, dropout placement, initialisation and
    parameter paths, so Alrao's per-unit rules apply unchanged); only the defaults differ: the
    "small" word-level model of Zaremba et al. (2 layers of 200 units, embeddings of 200), with
    dropout 0.2 as the Alrao paper's LSTM. Nothing is tied: the embedding ``(V, 200)`` and the
    classifier ``(200, V)`` are separate parameters, so the head (``200 V + V``) is about as large
    as the body (``200 V + 641,600``), and Alrao's ``N`` head copies multiply the model by about
    ``(N + 1) / 2`` (3.2x for ``V = 10,000``, ``N = 6``: the paper's Appendix D limitation).

    Shapes: ``tokens`` ``(B, L)`` int; returns ``(features (B, L, hidden_size), new_carry)``.

    Attributes:
      vocab_size: number of words (rows of the embedding).
      embed_dim: embedding size (200).
      hidden_size: LSTM units per layer (200).
      num_layers: stacked LSTM layers (2).
      dropout_rate: dropout rate (0.2).

    Example:
      >>> import jax, jax.numpy as jnp
      >>> body = WordLSTM(vocab_size=10_000)
      >>> tokens = jnp.zeros((4, 35), jnp.int32)
      >>> variables = jax.eval_shape(body.init, jax.random.key(0), tokens, body.initial_carry(4))
      >>> jax.eval_shape(body.apply, variables, tokens, body.initial_carry(4))[0].shape
      (4, 35, 200)

    References:
      Zaremba, Sutskever, Vinyals, Recurrent Neural Network Regularization
      <https://arxiv.org/abs/1409.2329>, 2014; Blier et al, Learning with Random Learning Rates
      <https://arxiv.org/abs/1810.01322>, 2019 (Sec. 4 and Appendix D).
    """

    embed_dim: int = 200
    hidden_size: int = 200
    num_layers: int = 2
    dropout_rate: float = 0.2


def make_word_lstm(
    *,
    vocab_size: int,
    num_classes: int | None = None,
    head: nn.Module | None = None,
    **kwargs: Any,
) -> LanguageModel:
    """A :class:`LanguageModel` with a :class:`WordLSTM` body and a ``Dense(vocab_size)`` head.

    Args:
      vocab_size: number of words (embedding rows and, for the default head, classes).
      num_classes: must equal ``vocab_size`` if given (the head predicts the next word).
      head: replaces ``nn.Dense(vocab_size)``, e.g. an :class:`~randlr_jax.AlraoHead`.
      **kwargs: :class:`WordLSTM` attributes (``embed_dim``, ``hidden_size``, ...).

    Returns:
      The unbound model, parameters ``{"body": ..., "head": ...}``.
    """
    check_positive_int("vocab_size", vocab_size)
    if num_classes is not None and num_classes != vocab_size:
        raise ValueError(
            f"num_classes must equal vocab_size ({vocab_size}) for 'word_lstm' (the head "
            f"predicts the next word), got num_classes={num_classes!r}."
        )
    if head is None:
        head = nn.Dense(vocab_size)
    return LanguageModel(body=WordLSTM(vocab_size=vocab_size, **kwargs), head=head)
