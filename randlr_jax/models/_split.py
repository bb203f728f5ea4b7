"""A model is a pre-classifier (``body``) followed by a classifier layer (``head``).

Every model of the zoo is built this way so that methods acting on the output layer only (the classifier
copies of Alrao, Blier et al. 2019, Section 2) can swap the head and route the two parameter groups by path:
the parameters of a :class:`Classifier` are ``{"body": ..., "head": ...}``.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax

from randlr_jax import _checks as checks
from randlr_jax.models._common import check_module


class Classifier(nn.Module):
    """``head(body(x))``: a feature extractor followed by a classifier layer.

    Attributes:
      body: module mapping inputs to features; called as ``body(x, train=train)``.
      head: module mapping features to outputs (logits for a plain ``nn.Dense`` head).
    """

    body: nn.Module
    head: nn.Module

    def __post_init__(self) -> None:
        check_module("body", self.body)
        check_module("head", self.head)
        super().__post_init__()

    def __call__(self, x: jax.Array, *, train: bool = False) -> Any:
        return self.head(self.body(x, train=train))

    def features(self, x: jax.Array, *, train: bool = False) -> jax.Array:
        """The pre-classifier's output (the classifier layer's input)."""
        return self.body(x, train=train)


class LanguageModel(nn.Module):
    """A recurrent body with a per-step classifier head, for truncated backprop through time.

    ``__call__(tokens, carry, train=...) -> (outputs, new_carry)`` with ``tokens`` of shape ``(B, L)`` int32;
    ``carry`` is whatever ``body.initial_carry(batch_size)`` returns.

    Attributes:
      body: recurrent module called as ``body(tokens, carry, train=train) -> (features (B, L, D), carry)`` and
        exposing ``initial_carry(batch_size)``.
      head: module mapping features ``(B, L, D)`` to outputs (logits ``(B, L, V)`` for a Dense head).
    """

    body: nn.Module
    head: nn.Module

    def __post_init__(self) -> None:
        check_module("body", self.body)
        if not callable(getattr(self.body, "initial_carry", None)):
            checks.fail(
                "body",
                "a recurrent Flax module with initial_carry(batch_size) (e.g. CharLSTM)",
                self.body,
                shown=checks.brief(self.body),
            )
        check_module("head", self.head)
        super().__post_init__()

    def __call__(self, tokens: jax.Array, carry: Any, *, train: bool = False) -> tuple[Any, Any]:
        features, carry = self.body(tokens, carry, train=train)
        return self.head(features), carry

    def features(self, tokens: jax.Array, carry: Any, *, train: bool = False):
        return self.body(tokens, carry, train=train)

    def initial_carry(self, batch_size: int) -> Any:
        return self.body.initial_carry(batch_size)
