"""Learned optimizers meta-trained by ``experiments/noh.py``, shipped so they can be used without meta-training.

Each file is written by :func:`randlr_jax.noh.save_lstm_params`: the LSTM parameters plus a config
saying which module they belong to (``"kind"``: ``"noh"`` for :class:`randlr_jax.noh.LSTMRateProposer`,
``"dmopt"`` for :class:`randlr_jax.noh.LSTMUpdateProposer`), its fields, ``update_every`` (NOH)
and how it was trained (``"meta_training"``).

Example:
  >>> tx = pretrained_optimizer("noh_mnist1d")  # Adam with NOH rates, S as in meta-training
"""

from __future__ import annotations

import importlib.resources
import inspect
from typing import Any, NamedTuple

import flax.linen as nn
import optax

from randlr_jax.noh import _lstm_optimizer as lstm_optimizer_lib
from randlr_jax.noh import _meta_training as meta_training
from randlr_jax.noh import _noh as noh_lib

_MODULES = {"noh": noh_lib.LSTMRateProposer, "dmopt": lstm_optimizer_lib.LSTMUpdateProposer}


class PretrainedOptimizer(NamedTuple):
    """A shipped learned optimizer."""

    name: str
    proposer: nn.Module  # LSTMRateProposer (NOH) or LSTMUpdateProposer (DMopt)
    lstm_params: Any  # its parameters
    config: dict  # as saved: kind, module fields, update_every, meta_training details


def _weights_dir():
    return importlib.resources.files("randlr_jax.noh").joinpath("pretrained")


def available_pretrained() -> list[str]:
    """Names of the shipped learned optimizers (``"noh_mnist1d"``, ``"dmopt_mnist1d"``, ...)."""
    files = _weights_dir().iterdir()
    return sorted(f.name[: -len(".msgpack")] for f in files if f.name.endswith(".msgpack"))


def load_pretrained(name: str) -> PretrainedOptimizer:
    """Load a shipped learned optimizer by name.

    Raises:
      ValueError: unknown ``name`` (the message lists :func:`available_pretrained`).
    """
    names = available_pretrained()
    if name not in names:
        raise ValueError(f"name must be one of {names}, got {name!r}.")
    blob = _weights_dir().joinpath(f"{name}.msgpack").read_bytes()
    lstm_params, config = meta_training.load_lstm_params(blob)
    proposer = _MODULES[config["kind"]](**config["module"])
    noh_lib.check_proposer_params(proposer, lstm_params)
    return PretrainedOptimizer(name, proposer, lstm_params, config)


def pretrained_optimizer(name: str, **kwargs: Any) -> optax.GradientTransformation:
    """The Optax transformation of a shipped learned optimizer, frozen.

    ``"noh_*"``: :func:`randlr_jax.noh.noh_adam` with the saved ``update_every`` (``kwargs`` override it or set
    Adam's constants); ``"dmopt_*"``: :func:`randlr_jax.lstm_optimizer`.

    Raises:
      ValueError: unknown ``name``, a keyword argument the optimizer does not take (naming it), or a
        bad value of one it takes.
    """
    loaded = load_pretrained(name)
    if loaded.config["kind"] == "noh":
        factory = noh_lib.noh_adam
        kwargs = {"update_every": int(loaded.config["update_every"]), **kwargs}
    else:
        factory = lstm_optimizer_lib.lstm_optimizer
    allowed = [
        p for p in inspect.signature(factory).parameters if p not in ("lstm_params", "proposer")
    ]
    for key, value in kwargs.items():
        if key not in allowed:
            raise ValueError(
                f"{key}={value!r} is not an argument of {factory.__name__}, the optimizer of "
                f"{name!r} (its arguments: {', '.join(allowed) or 'none'})."
            )
    return factory(loaded.lstm_params, proposer=loaded.proposer, **kwargs)
