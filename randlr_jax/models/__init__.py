"""The model zoo: every model is a pre-classifier ``body`` plus a classifier ``head``.

``make_model(name, num_classes=...)`` returns a :class:`Classifier` (or, for ``"char_lstm"``, a
:class:`LanguageModel`) whose parameters are ``{"body": ..., "head": ...}``; the default head is
``nn.Dense(num_classes)``. All image models take NHWC inputs; BatchNorm models keep running
statistics in the ``"batch_stats"`` collection (``mutable=["batch_stats"]`` when ``train=True``);
dropout draws from the rng stream ``"dropout"`` and is off when ``train=False``.

| name | body | input | features |
| --- | --- | --- | --- |
| ``"mlp"`` | :class:`MLP` (default widths ``(100, 100)``, ReLU) | ``(B, ...)`` | ``widths[-1]`` |
| ``"noh_mlp"`` | :class:`MLP` 2 x 20 sigmoid (hypergradient paper) | ``(B, ...)`` | 20 |
| ``"cnn1d"`` | :class:`CNN1D` (MNIST-1D ``ConvBase``) | ``(B, 40)`` | 125 |
| ``"vgg19"`` | :class:`VGG` with BatchNorm | ``(B, 32, 32, 3)`` | 512 |
| ``"mobilenetv2"`` | :class:`MobileNetV2` | ``(B, 32, 32, 3)`` | 1280 |
| ``"googlenet"`` | :class:`GoogLeNet` | ``(B, 32, 32, 3)`` | 1024 |
| ``"resnet18"`` | :class:`ResNet` | ``(B, 32, 32, 3)`` | 512 |
| ``"wrn28_10"`` | :class:`WideResNet` | ``(B, 32, 32, 3)`` | 640 |
| ``"char_lstm"`` | :class:`CharLSTM` (needs ``vocab_size``) | ``(B, L)`` int tokens | 100 |
| ``"word_lstm"`` | :class:`WordLSTM` (needs ``vocab_size``) | ``(B, L)`` int tokens | 200 |
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import flax.linen as nn
import jax

from randlr_jax.models._char_lstm import CharLSTM as CharLSTM
from randlr_jax.models._cnn1d import CNN1D as CNN1D
from randlr_jax.models._common import check_positive_int
from randlr_jax.models._googlenet import GoogLeNet as GoogLeNet
from randlr_jax.models._googlenet import Inception as Inception
from randlr_jax.models._mlp import MLP as MLP
from randlr_jax.models._mobilenetv2 import InvertedResidual as InvertedResidual
from randlr_jax.models._mobilenetv2 import MobileNetV2 as MobileNetV2
from randlr_jax.models._resnet import BasicBlock as BasicBlock
from randlr_jax.models._resnet import ResNet as ResNet
from randlr_jax.models._split import Classifier as Classifier
from randlr_jax.models._split import LanguageModel as LanguageModel
from randlr_jax.models._vgg import VGG as VGG
from randlr_jax.models._vgg import VGG_CONFIGS as VGG_CONFIGS
from randlr_jax.models._word_lstm import WordLSTM as WordLSTM
from randlr_jax.models._word_lstm import make_word_lstm as make_word_lstm
from randlr_jax.models._wrn import WideBasicBlock as WideBasicBlock
from randlr_jax.models._wrn import WideResNet as WideResNet

ModelFactory = Callable[..., nn.Module]


def _head(head: nn.Module | None, num_classes: int | None) -> nn.Module:
    if num_classes is not None:
        check_positive_int("num_classes", num_classes)
    if head is not None:
        return head
    if num_classes is None:
        raise ValueError("num_classes is required (a positive integer) unless a head is given.")
    return nn.Dense(num_classes)


def _classifier_factory(body_cls: type[nn.Module], **defaults: Any) -> ModelFactory:
    def factory(
        *, num_classes: int | None = None, head: nn.Module | None = None, **kwargs: Any
    ) -> Classifier:
        body_kwargs = {**defaults, **kwargs}
        for key in ("widths", "stage_sizes", "cfg"):
            if isinstance(body_kwargs.get(key), list):
                body_kwargs[key] = tuple(body_kwargs[key])
        head_module = _head(head, num_classes)
        return Classifier(body=body_cls(**body_kwargs), head=head_module)

    factory.__name__ = f"make_{body_cls.__name__.lower()}"
    factory.__doc__ = (
        f"A :class:`Classifier` with a :class:`{body_cls.__name__}` body ({defaults})."
    )
    return factory


def _char_lstm_factory(
    *,
    vocab_size: int,
    num_classes: int | None = None,
    head: nn.Module | None = None,
    **kwargs: Any,
) -> LanguageModel:
    """A :class:`LanguageModel` with a :class:`CharLSTM` body and a ``Dense(vocab_size)`` head."""
    check_positive_int("vocab_size", vocab_size)
    if num_classes is not None and num_classes != vocab_size:
        raise ValueError(
            f"num_classes must equal vocab_size ({vocab_size}) for 'char_lstm' (the head "
            f"predicts the next symbol), got num_classes={num_classes!r}."
        )
    head_module = _head(head, vocab_size)
    return LanguageModel(body=CharLSTM(vocab_size=vocab_size, **kwargs), head=head_module)


MODELS: dict[str, ModelFactory] = {
    "mlp": _classifier_factory(MLP),
    "noh_mlp": _classifier_factory(MLP, widths=(20, 20), activation="sigmoid"),
    "cnn1d": _classifier_factory(CNN1D),
    "vgg19": _classifier_factory(VGG, cfg=VGG_CONFIGS["vgg19"]),
    "mobilenetv2": _classifier_factory(MobileNetV2),
    "googlenet": _classifier_factory(GoogLeNet),
    "resnet18": _classifier_factory(ResNet, stage_sizes=(2, 2, 2, 2)),
    "wrn28_10": _classifier_factory(WideResNet, depth=28, widen_factor=10),
    "char_lstm": _char_lstm_factory,
    "word_lstm": make_word_lstm,
}
"""Model name -> factory ``(*, num_classes=None, head=None, **body_kwargs) -> model``.

The model is a ``Classifier`` (a ``LanguageModel`` for ``"char_lstm"``).
A plain dict: register a model of your own with ``MODELS["name"] = factory``."""


def make_model(
    name: str, *, num_classes: int | None = None, head: nn.Module | None = None, **kwargs: Any
) -> nn.Module:
    """Build a zoo model by name: ``Classifier(body, head)`` or ``LanguageModel(body, head)``.

    Args:
      name: a key of :data:`MODELS` (``"mlp"``, ``"noh_mlp"``, ``"cnn1d"``, ``"vgg19"``,
        ``"mobilenetv2"``, ``"googlenet"``, ``"resnet18"``, ``"wrn28_10"``, ``"char_lstm"``,
        ``"word_lstm"``).
      num_classes: outputs of the default head ``nn.Dense(num_classes)``; required unless ``head``
        is given. For ``"char_lstm"`` it defaults to ``vocab_size`` (and must equal it if given).
      head: a module to use as the classifier layer instead of ``nn.Dense(num_classes)`` (e.g.
        Alrao's classifier copies).
      **kwargs: passed to the body (``widths``, ``activation``, ``width_multiplier``,
        ``dropout_rate``, ``vocab_size`` for ``"char_lstm"``, ...).

    Returns:
      An unbound Flax module with parameters ``{"body": ..., "head": ...}``, called as
      ``model.apply(variables, x, train=...)`` (classifiers) or
      ``model.apply(variables, tokens, carry, train=...)`` (``"char_lstm"``).

    Raises:
      ValueError: unknown ``name``, a non-positive size (``num_classes``, ``widths``,
        ``vocab_size``, ...), a ``head`` that is not a Flax module, or another bad field of the
        model, naming the argument and its value.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> model = make_model("noh_mlp", num_classes=10)
      >>> variables = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((2, 784)))
      >>> param_count_by_part(variables["params"])  # shapes suffice: nothing is allocated
      {'body': 16120, 'head': 210}
    """
    if not isinstance(name, str) or name not in MODELS:
        raise ValueError(f"name must be one of {sorted(MODELS)}, got {name!r}.")
    return MODELS[name](num_classes=num_classes, head=head, **kwargs)


def count_params(params: Any) -> int:
    """Total number of scalars in a pytree of arrays.

    Leaves may also be ``jax.ShapeDtypeStruct`` (from ``jax.eval_shape``), so big models can be
    counted without allocating them.
    Pass ``variables["params"]``: every leaf is counted, so a whole variables dict would also count
    ``batch_stats``.
    """
    return sum(math.prod(leaf.shape) for leaf in jax.tree_util.tree_leaves(params))


def param_count_by_part(params: Mapping[str, Any]) -> dict[str, int]:
    """``{"body": n_body, "head": n_head}`` for the parameters of a zoo model.

    Args:
      params: ``{"body": ..., "head": ...}`` (``variables["params"]``), or the variables dict
        itself.

    Returns:
      Number of scalars in the pre-classifier and in the classifier layer.
    """
    if "body" not in params and "params" in params:
        params = params["params"]
    if "body" not in params or "head" not in params:
        raise ValueError(
            f"params must have 'body' and 'head' entries (a zoo model's params), got keys "
            f"{sorted(params)}."
        )
    return {"body": count_params(params["body"]), "head": count_params(params["head"])}
