"""Flax NNX models in the loop engine: an ``nnx.Module`` seen through the Linen surface the library uses.

The training state, the steps, the range test and the checkpoints are pure functions of pytrees: a Linen
model is a pure function ``apply(variables, x, train=..., rngs=..., mutable=...)`` of its variables, an
NNX model a mutable object holding them. :func:`adapt_model` turns the second into the first, with
``nnx.split`` / ``nnx.merge``:

* ``nnx.split(module, nnx.Param, nnx.RngState, ...)`` gives the module's structure (the ``GraphDef``,
  static) and three groups of variables. The ``nnx.Param`` are the ``"params"`` collection; every other
  variable (``nnx.BatchStat``, a custom ``nnx.Variable``) joins a non-param collection named after its
  type (``nnx.BatchStat``: ``"batch_stats"``, as Linen's ``BatchNorm``; otherwise the type's name in
  snake case, e.g. ``AlraoSwitch``: ``"alrao_switch"``), which the steps carry as
  ``TrainState.model_state`` and write back when ``train=True``; the random-number streams
  (``nnx.RngState``) are not state of the run.
* Every collection is a plain nested dict of arrays (``nnx.to_pure_dict``: attribute names, and the
  integer positions of an ``nnx.List``), as Linen's variables are, so optimizers route parameters by
  path (``alrao_sgd``'s ``"head"``) and checkpoints restore them by structure.
* ``apply`` merges the structure with the variables it is given into a fresh module (the caller's is
  never touched), puts it in training or evaluation mode (``Module.train()`` / ``Module.eval()``: the
  ``deterministic`` of ``nnx.Dropout``, the ``use_running_average`` of ``nnx.BatchNorm``), reseeds
  every random stream from the key of ``rngs={"dropout": key}`` and calls it. The dropout key is thus
  the step's (``TrainState.rng``, split every step), so a run is reproducible and resumes exactly.
  Stream ``i`` in the module's graph order gets ``fold_in(key, i)`` (``nnx.reseed``): two dropout
  layers never share a mask. Without a key (evaluation) the streams are reseeded from
  ``jax.random.key(0)``.
* ``init`` returns the module's current variables (copies): training starts from the module as the
  caller built it (NNX modules are initialised when constructed; the init key is not used), and every
  member of a population starts there too.

Two adapters of modules with the same structure are equal (and hash alike), whatever the values, so
the engine's cache of compiled steps (keyed by the model) reuses a step across runs of such modules.
The ``repr`` (what a run's fingerprint records) holds the structure and a digest of the initial values:
resuming a run directory with another module, or the same module from other values, is refused.

:func:`nnx_model` writes trained variables (``FitResult.best_params`` / ``best_model_state``) back
into the module.

References:
  Flax NNX, `nnx.split / nnx.merge (the functional API)
  <https://flax.readthedocs.io/en/latest/nnx_basics.html>`_.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from flax.nnx import traversals

PARAMS = "params"
# Linen's name for BatchNorm statistics, so that an NNX model's state reads like the Linen model's.
_COLLECTION_NAMES = {nnx.BatchStat: "batch_stats"}
# Produced by a call (``sow``), never state of the run.
_REST = nnx.Not(nnx.Any(nnx.Param, nnx.RngState, nnx.Intermediate))
_EVAL_KEY_SEED = 0


def _collection(variable_type: type) -> str:
    """The collection a non-param variable type joins: ``BatchStat`` -> ``"batch_stats"``, else the
    type's name in snake case (``AlraoSwitch`` -> ``"alrao_switch"``)."""
    for base in variable_type.__mro__:
        if base in _COLLECTION_NAMES:
            return _COLLECTION_NAMES[base]
    return re.sub(r"(?<!^)(?=[A-Z])", "_", variable_type.__name__).lower()


def _shapes(value: Any) -> tuple:
    """A variable's value (an array, or a pytree of them: e.g. a switch's state) by structure."""
    leaves, treedef = jax.tree.flatten(value)
    return treedef, tuple((tuple(np.shape(a)), str(a.dtype)) for a in leaves)


def _abstract(variable: nnx.Variable) -> nnx.Variable:
    value = jax.tree.map(lambda a: jax.ShapeDtypeStruct(np.shape(a), a.dtype), variable.get_value())
    return variable.replace(value)


def _signature(flat: list) -> tuple:
    return tuple((path, type(v).__name__, _shapes(v.get_value())) for path, v in flat)


def _host_bytes(leaf: Any) -> bytes:
    if jax.dtypes.issubdtype(getattr(leaf, "dtype", None), jax.dtypes.prng_key):
        leaf = jax.random.key_data(leaf)
    array = np.ascontiguousarray(np.asarray(leaf))
    return f"{array.shape}{array.dtype}".encode() + array.tobytes()


def _path_str(path: tuple) -> str:
    return "/".join(str(k) for k in path)


class NNXModel:
    """An ``nnx.Module`` with the Linen surface of :mod:`randlr_jax.training` (made by
    :func:`adapt_model`; see the module's docstring for the mapping).

    Attributes:
      module: the NNX module it was made from (read by :meth:`init`; never modified by the steps).
      graphdef: the module's structure (``nnx.split``).
      collections: the names of the non-param collections (e.g. ``("batch_stats",)``).
    """

    def __init__(self, module: nnx.Module):
        graphdef, params, rng_state, sown, rest = nnx.split(
            module, nnx.Param, nnx.RngState, nnx.Intermediate, ...
        )
        if jax.tree.leaves(sown):
            raise ValueError(
                f"model holds sown intermediates (nnx.Intermediate) from an earlier call; remove "
                f"them first with nnx.pop(model, nnx.Intermediate) (the {type(module).__name__} "
                "then trains as it is)."
            )
        param_flat = list(nnx.to_flat_state(params))
        if not param_flat:
            raise ValueError(
                f"model must have parameters to train (nnx.Param variables), got the "
                f"{type(module).__name__} without any (a Linen module wrapped with "
                "nnx.bridge.ToNNX is initialised first: nnx.bridge.lazy_init(model, x))."
            )
        rest_flat = list(nnx.to_flat_state(rest))
        self.module = module
        self.graphdef = graphdef
        self._params = [(p, _abstract(v)) for p, v in param_flat]
        self._rest: dict[str, list] = {}
        for path, variable in rest_flat:
            self._rest.setdefault(_collection(type(variable)), []).append(
                (path, _abstract(variable))
            )
        if PARAMS in self._rest:
            raise ValueError(
                f"model has a non-param variable type named like the parameters ({PARAMS!r}): "
                "rename that nnx.Variable subclass."
            )
        self.collections = tuple(sorted(self._rest))
        # The streams' values are overwritten at every call (reseeded); only their structure counts.
        self._rng_flat = list(nnx.to_flat_state(rng_state))
        self._rng_tags = tuple(
            sorted(
                {
                    v.tag
                    for _, v in self._rng_flat
                    if isinstance(v, nnx.RngKey) and getattr(v, "tag", None)
                }
            )
        )
        self._key = (
            graphdef,
            _signature(param_flat),
            _signature(rest_flat),
            _signature(self._rng_flat),
        )
        self._repr: str | None = None

    # -- equality: by structure, so equal modules share compiled steps ---------------------------
    def __eq__(self, other: Any) -> bool:
        if not isinstance(other, NNXModel):
            return NotImplemented
        return self._key == other._key

    def __hash__(self) -> int:
        return hash(self._key)

    def __repr__(self) -> str:
        # The structure (static attributes included) and a digest of the initial values; computed
        # once (it reads every array to the host).
        if self._repr is None:
            digest = hashlib.sha256()
            for leaf in jax.tree.leaves(self.variables()):
                digest.update(_host_bytes(leaf))
            self._repr = (
                f"NNXModel({type(self.module).__name__}, {self.graphdef!r}, "
                f"values_sha256={digest.hexdigest()[:16]})"
            )
        return self._repr

    # -- variables <-> State ----------------------------------------------------------------------
    def variables(self) -> dict:
        """The module's current variables: ``{"params": ..., **collections}`` of plain nested dicts."""
        params = nnx.state(self.module, nnx.Param)
        values = dict(nnx.to_flat_state(nnx.state(self.module, _REST)))
        out = {PARAMS: nnx.to_pure_dict(params)}
        for name, template in self._rest.items():
            out[name] = traversals.unflatten_mapping(
                {path: values[path].get_value() for path, _ in template}
            )
        return out

    def _state(self, name: str, template: list, values: Any, *, where: str) -> list:
        """``template``'s variables holding ``values`` (a nested dict of the same paths and shapes)."""
        if isinstance(values, nnx.State):
            values = nnx.to_pure_dict(values)
        if not isinstance(values, dict):
            raise ValueError(
                f"{where}: the {name!r} collection must be a nested dict of arrays (as "
                f"adapt_model(model).init(...) returns), got {type(values).__name__}."
            )
        expected = [path for path, _ in template]
        # A variable's value may itself be a dict: flatten down to the variables' paths only.
        paths = set(expected)
        flat = traversals.flatten_mapping(values, is_leaf=lambda path, _: tuple(path) in paths)
        if set(flat) != set(expected):
            missing = sorted(_path_str(p) for p in set(expected) - set(flat))
            extra = sorted(_path_str(p) for p in set(flat) - set(expected))
            raise ValueError(
                f"{where}: the {name!r} collection does not match the model's variables: missing "
                f"{missing}, unexpected {extra}."
            )
        out = []
        for path, variable in template:
            value = flat[path]
            got, expected = _shapes(value), _shapes(variable.get_value())
            if got != expected:
                shown = [s for s, _ in got[1]] if got[0] == expected[0] else got[0]
                raise ValueError(
                    f"{where}: {name}/{_path_str(path)} has shape {shown}, the model's has "
                    f"{[s for s, _ in expected[1]]} (for a population's result, take one member: "
                    "jax.tree.map(lambda a: a[k], params))."
                )
            out.append((path, variable.replace(value)))
        return out

    def merge(self, variables: dict, *, train: bool = False, key: jax.Array | None = None):
        """A fresh module holding ``variables``, in training (``train``) or evaluation mode, its
        random streams reseeded from ``key`` (``None``: ``jax.random.key(0)``)."""
        if not isinstance(variables, dict) or PARAMS not in variables:
            raise ValueError(
                "variables must be a dict with a 'params' collection (as "
                f"adapt_model(model).init(...) returns), got {type(variables).__name__}."
            )
        missing = [c for c in self.collections if c not in variables]
        if missing:
            raise ValueError(
                f"the NNX model's non-param variables {missing} are missing from the variables "
                f"(got {sorted(variables)}); pass them as the Linen model's collections."
            )
        flat = self._state(PARAMS, self._params, variables[PARAMS], where="apply")
        for name, template in self._rest.items():
            flat += self._state(name, template, variables[name], where="apply")
        # Fresh variables (of this trace: a merged module is mutated by reseed, train and eval).
        flat += [(path, v.replace(v.get_value())) for path, v in self._rng_flat]
        module = nnx.merge(self.graphdef, nnx.from_flat_state(flat))
        if train:
            module.train()
        else:
            module.eval()
        if self._rng_tags:
            if key is None:
                key = jax.random.key(_EVAL_KEY_SEED)
            nnx.reseed(module, policy="match_shape", **dict.fromkeys(self._rng_tags, key))
        return module

    def collections_of(self, module: nnx.Module) -> dict:
        """The non-param collections of a module made by :meth:`merge` (after a call)."""
        values = dict(nnx.to_flat_state(nnx.state(module, _REST)))
        return {
            name: traversals.unflatten_mapping(
                {path: values[path].get_value() for path, _ in template}
            )
            for name, template in self._rest.items()
        }

    # -- the Linen surface ------------------------------------------------------------------------
    def init(self, rngs: Any, *args: Any, train: bool = False, **kwargs: Any) -> dict:
        """The module's current variables (copies), ``{"params": ..., **collections}``; ``rngs`` and
        the inputs are not used (an NNX module is initialised when constructed)."""
        del rngs, args, train, kwargs
        return jax.tree.map(lambda a: jnp.array(a, copy=True), self.variables())

    def init_with_output(
        self, rngs: Any, *args: Any, train: bool = False, **kwargs: Any
    ) -> tuple[Any, dict]:
        """``(apply(variables, *args), variables)`` with the module's current variables."""
        variables = self.init(rngs)
        return self.apply(variables, *args, train=train, rngs=rngs, **kwargs), variables

    def apply(
        self,
        variables: dict,
        *args: Any,
        train: bool = False,
        rngs: Any = None,
        mutable: Any = False,
        method: str | None = None,
        **kwargs: Any,
    ) -> Any:
        """Call the module (or its ``method``) on ``args`` with ``variables``, as Linen's ``apply``.

        Args:
          variables: ``{"params": ..., **collections}`` (every collection of the model).
          train: training mode (``Module.train()``) or evaluation mode (``Module.eval()``).
          rngs: ``None``, a key, or ``{"dropout": key}`` (a dict's other entries are ignored): the key
            every random stream of the module is reseeded from.
          mutable: ``False`` (return the output), ``True`` (also every non-param collection after the
            call) or a list of collection names.
          method: a method name of the module (default: ``__call__``).

        Returns:
          The output, or ``(output, collections)`` when ``mutable``.
        """
        key = rngs.get("dropout") if isinstance(rngs, dict) else rngs
        module = self.merge(variables, train=train, key=key)
        if method is None:
            fn = module
        else:
            if not isinstance(method, str) or not callable(getattr(module, method, None)):
                raise ValueError(
                    f"method must name a method of the {type(self.module).__name__}, got "
                    f"{method!r}."
                )
            fn = getattr(module, method)
        # Training without a key: a stream drawn from would give the same dropout mask at every
        # step, silently; refused (as Linen refuses a dropout without a "dropout" rng). Seen at trace
        # time: a stream that draws gets a new count.
        watched = []
        if train and key is None:
            watched = [
                (stream, stream.count.get_value())
                for _, stream in nnx.iter_graph(module)
                if isinstance(stream, nnx.RngStream)
            ]
        out = fn(*args, **kwargs)
        if any(stream.count.get_value() is not count for stream, count in watched):
            raise ValueError(
                f"the {type(self.module).__name__} draws random numbers (e.g. nnx.Dropout) in "
                "training mode, and no key was given: pass one, apply(..., train=True, "
                "rngs={'dropout': key}), run it with train=False "
                "(classification_loss(model, train=False) for the range test), or write a "
                "loss_fn that takes a key."
            )
        if mutable is False or mutable is None:
            return out
        collections = self.collections_of(module)
        if mutable is not True:
            names = [mutable] if isinstance(mutable, str) else list(mutable)
            collections = {k: v for k, v in collections.items() if k in names}
        return out, collections

    def initial_carry(self, batch_size: int) -> Any:
        """The module's ``initial_carry(batch_size)`` (an NNX language model's recurrent state)."""
        fn = getattr(self.module, "initial_carry", None)
        if not callable(fn):
            raise ValueError(
                f"task='language_model' needs a model with initial_carry(batch_size) (the recurrent "
                f"state it starts from) and __call__(tokens, carry) -> (logits, carry); the "
                f"{type(self.module).__name__} has no initial_carry."
            )
        return fn(batch_size)

    def into(self, params: Any, model_state: dict | None = None) -> nnx.Module:
        """Write ``params`` (and ``model_state``'s collections) into :attr:`module`; returns it."""
        flat = self._state(PARAMS, self._params, params, where="nnx_model")
        for name, values in (model_state or {}).items():
            if name not in self._rest:
                raise ValueError(
                    f"nnx_model: model_state has a collection {name!r} the model does not have "
                    f"(it has {list(self.collections)})."
                )
            flat += self._state(name, self._rest[name], values, where="nnx_model")
        nnx.update(self.module, nnx.from_flat_state(flat))
        self._repr = None
        return self.module


def is_nnx_module(model: Any) -> bool:
    """Whether ``model`` is a Flax NNX module."""
    return isinstance(model, nnx.Module)


def adapt_model(model: Any) -> Any:
    """``model`` with the Linen surface the library uses: an ``nnx.Module`` becomes an
    :class:`NNXModel`; anything else (a Linen module, an :class:`NNXModel`) is returned unchanged.

    The entry of every public function that takes a model calls it, so an NNX module trains with
    :func:`~randlr_jax.training.fit`, :func:`~randlr_jax.training.fit_population` and
    :func:`~randlr_jax.cyclical.classification_loss` as a Linen one does.

    Example:
      >>> from flax import nnx
      >>> linear = adapt_model(nnx.Linear(3, 2, rngs=nnx.Rngs(0)))
      >>> variables = linear.init(None, jnp.zeros((1, 3)))
      >>> sorted(variables["params"]), linear.apply(variables, jnp.ones((4, 3))).shape
      (['bias', 'kernel'], (4, 2))

    Raises:
      ValueError: an NNX module without ``nnx.Param``.
    """
    if isinstance(model, nnx.Module):
        return NNXModel(model)
    return model


def nnx_model(model: nnx.Module, params: Any, model_state: dict | None = None) -> nnx.Module:
    """Write trained variables into the NNX ``model`` (in place) and return it.

    ``params`` and ``model_state`` are what :func:`~randlr_jax.training.fit` trained on the adapted
    ``model`` (``FitResult.best_params`` / ``best_model_state``, or ``state.params`` /
    ``state.model_state``): plain nested dicts of the paths of ``nnx.state(model, nnx.Param)`` (and of
    the non-param collections, e.g. ``"batch_stats"``). The module's mode and random streams are kept.

    Example:
      >>> from flax import nnx
      >>> model = nnx.Linear(3, 2, rngs=nnx.Rngs(0))
      >>> params = {"kernel": jnp.ones((3, 2)), "bias": jnp.zeros(2)}
      >>> nnx_model(model, params).kernel.get_value().sum().item()
      6.0

    Raises:
      TypeError: ``model`` is not an ``nnx.Module``.
      ValueError: ``params`` / ``model_state`` not of the model's paths and shapes (e.g. a
        population's result not indexed by member).
    """
    if not isinstance(model, nnx.Module):
        raise TypeError(
            f"model must be the nnx.Module that was trained, got {type(model).__name__} (a Linen "
            "model's trained variables are {'params': params, **model_state})."
        )
    return NNXModel(model).into(params, model_state)
