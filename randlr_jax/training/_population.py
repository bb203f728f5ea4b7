"""A learning-rate grid as one vmapped population: ``K`` copies of a model, one compiled program.

The baseline of Alrao's Table 1 is "SGD at every rate of ``{1e-5, ..., 10}``, the best chosen on validation
loss". Instead of ``K`` sequential runs, the ``K`` members are stacked on a leading *population axis* of the
training state (parameters, optimizer state, model state, dropout key, recurrent carry) and trained by one
``jax.vmap`` of the ordinary train step. The learning rate is not a Python constant baked into the program
but a traced value held in each member's optimizer state (``optax.inject_hyperparams``), so one
compilation serves every rate, and member ``k`` follows exactly the trajectory of a single run at rate
``eta_k``:

.. math::

    \\theta^{(k)}_{t+1} = \\theta^{(k)}_t - \\eta_k\\, d(\\nabla L_{B_t}(\\theta^{(k)}_t)),
    \\qquad k = 1..K,

with the same minibatch ``B_t`` and the same initialisation for every member (common random numbers:
the rates are compared on equal terms). Early stopping is per member: a member whose validation loss has
not improved for ``patience`` epochs is *frozen* (its state no longer changes, ``jnp.where`` on an
``active`` mask) while the others go on; the loop ends when every member has stopped or the epochs are
done. Each member keeps its best-validation parameters, which are tested at the end (the paper's
protocol, Blier et al. 2019, Section 3). A member found dead at an epoch's end (a non-finite training
loss at the epoch's last step: it diverged) is frozen the same way and marked (``diverged_epoch`` in its
summary); the run stops when every member still training is dead (``LoopConfig.on_divergence``).

:func:`fit_population` is the resumable epoch loop (the epoch engine of :func:`~randlr_jax.training.fit`,
:mod:`randlr_jax.training._engine`, with orbax checkpoints through :class:`randlr_jax.training.Checkpointer`,
``metrics.jsonl``, ``results.json``); :func:`init_population`, :func:`make_population_train_step` and
:func:`make_population_eval_step` are its pure building blocks.

References:
  Blier, Wolinski, Ollivier, `Learning with Random Learning Rates <https://arxiv.org/abs/1810.01322>`_, 2019.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import os
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from randlr_jax import _checks as checks
from randlr_jax.training import _engine as engine
from randlr_jax.training import _run_record as run_record
from randlr_jax.training._early_stopping import EarlyStopping, MemberEarlyStopping
from randlr_jax.training._feed import SplitFeed
from randlr_jax.training._loop import LoopConfig, check_config
from randlr_jax.training._nnx import adapt_model
from randlr_jax.training._records import encode_record
from randlr_jax.training._sharding import batch_sharded, put_global, replicate, to_host
from randlr_jax.training._state import TrainState, create_train_state
from randlr_jax.training._steps import make_eval_step, make_train_step, summarize

OptimizerFactory = Callable[..., optax.GradientTransformation]

__all__ = [
    "PopulationResult",
    "fit_population",
    "init_population",
    "make_population_eval_step",
    "make_population_optimizer",
    "make_population_train_step",
    "member_history",
]


def make_population_optimizer(
    optimizer: OptimizerFactory = optax.sgd, **optimizer_kwargs: Any
) -> optax.GradientTransformation:
    """``optimizer`` with its ``learning_rate`` held in the state, so members can differ in it.

    Args:
      optimizer: an Optax factory with a ``learning_rate`` argument (``optax.sgd``, ``optax.adam``, ...).
      **optimizer_kwargs: its other arguments (e.g. ``momentum=0.9``).

    Returns:
      ``optax.inject_hyperparams(optimizer)(learning_rate=1.0, **optimizer_kwargs)``; the placeholder
      rate ``1.0`` is replaced per member by :func:`init_population`.

    Raises:
      ValueError: ``optimizer`` not an Optax factory taking ``learning_rate``, or ``optimizer_kwargs``
        naming ``learning_rate`` (the members' rates replace it) or an argument ``optimizer`` does
        not take.

    Example:
      >>> tx = make_population_optimizer(optax.sgd, momentum=0.9)
    """
    _check_optimizer(optimizer, optimizer_kwargs)
    return optax.inject_hyperparams(optimizer)(learning_rate=1.0, **optimizer_kwargs)


def _check_optimizer(optimizer: Any, optimizer_kwargs: Any) -> None:
    """``optimizer`` an Optax factory with a ``learning_rate`` argument, ``optimizer_kwargs`` a dict of
    its other arguments (checked against its signature: no Optax ``TypeError`` later, inside
    ``init``)."""
    what = "an Optax factory with a learning_rate argument (e.g. optax.sgd)"
    if not callable(optimizer):
        checks.fail("optimizer", what, optimizer, shown=checks.brief(optimizer))
    checks.mapping("optimizer_kwargs", optimizer_kwargs)
    if "learning_rate" in optimizer_kwargs:
        checks.fail(
            "learning_rate", "left out of optimizer_kwargs (each member's rate replaces it)",
            optimizer_kwargs["learning_rate"],
        )  # fmt: skip
    try:
        signature = inspect.signature(optimizer)
    except (TypeError, ValueError):  # a builtin without a signature: nothing to check
        return
    parameters = signature.parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
    if "learning_rate" not in parameters and not takes_any:
        checks.fail("optimizer", what, optimizer)
    for key, value in optimizer_kwargs.items():
        if key not in parameters and not takes_any:
            raise ValueError(
                f"{key}={value!r} is not an argument of the optimizer {optimizer.__name__} (its "
                f"arguments: {', '.join(parameters)})."
            )


def _check_rates(learning_rates: Any) -> np.ndarray:
    what = "a non-empty 1-D sequence of finite rates > 0"
    if isinstance(learning_rates, (str, bytes)):
        checks.fail("learning_rates", what, learning_rates)
    try:
        rates = np.asarray(learning_rates)
        if rates.dtype == bool or not np.issubdtype(rates.dtype, np.number):
            raise TypeError
        rates = rates.astype(np.float64)
    except (TypeError, ValueError):
        checks.fail("learning_rates", what, learning_rates, shown=checks.brief(learning_rates))
    if rates.ndim != 1 or rates.size < 1:
        raise ValueError(
            f"learning_rates must be a non-empty 1-D sequence, got shape {rates.shape}."
        )
    if not np.all(np.isfinite(rates)) or np.any(rates <= 0):
        raise ValueError(f"learning_rates must be positive and finite, got {rates.tolist()!r}.")
    return rates


def init_population(
    model: Any,
    tx: optax.GradientTransformation,
    learning_rates: Sequence[float],
    key: jax.Array,
    sample_input: Any,
    *,
    carry: Any = None,
) -> TrainState:
    """``K`` identical training states stacked on a leading axis, member ``k`` with rate ``eta_k``.

    Every member is initialised from the same ``key`` (so member ``k`` starts where a single
    :func:`~randlr_jax.training.create_train_state` with ``key`` starts); only the learning rate differs.

    Args:
      model: a Flax ``Classifier`` or ``LanguageModel``.
      tx: from :func:`make_population_optimizer` (its state must have ``hyperparams["learning_rate"]``).
      learning_rates: ``(K,)`` positive rates.
      key: typed PRNG key, as for ``create_train_state``.
      sample_input: a batch of inputs with the right trailing shape.
      carry: initial recurrent state of one member (language models).

    Returns:
      A :class:`~randlr_jax.training.TrainState` whose every leaf has a leading axis of size ``K``.

    Raises:
      ValueError: a bad argument (naming it): ``model`` not a Flax module, ``tx`` not a
        transformation keeping its learning rate, bad ``learning_rates``, ``key`` not a PRNG key,
        ``sample_input`` not an array with a leading axis.
    """
    model = adapt_model(model)  # an nnx.Module trains through its Linen face
    checks.model("model", model)
    checks.transformation("tx", tx)
    rates = _check_rates(learning_rates)
    checks.prng_key("key", key)
    if not hasattr(sample_input, "shape") or len(sample_input.shape) < 1:
        checks.fail(
            "sample_input", "a batch of inputs (an array with a leading axis)", sample_input,
            shown=checks.brief(sample_input),
        )  # fmt: skip

    def member(rate):
        state = create_train_state(model, tx, key, sample_input, carry=carry)
        return state.replace(opt_state=_set_learning_rate(state.opt_state, rate))

    return jax.vmap(member)(jnp.asarray(rates, jnp.float32))


def _set_learning_rate(opt_state: Any, rate: jax.Array) -> Any:
    hyperparams = getattr(opt_state, "hyperparams", None)
    if not isinstance(hyperparams, dict) or "learning_rate" not in hyperparams:
        raise ValueError(
            "tx must keep its learning rate in its state (build it with make_population_optimizer or "
            f"optax.inject_hyperparams), got an optimizer state of type {type(opt_state).__name__}."
        )
    old = hyperparams["learning_rate"]
    return opt_state._replace(
        hyperparams={**hyperparams, "learning_rate": jnp.asarray(rate, jnp.asarray(old).dtype)}
    )


def _where_active(active: jax.Array, new: Any, old: Any) -> Any:
    """Per member: ``new`` where ``active`` else ``old`` (PRNG keys through their raw data)."""

    def select(n, o):
        if jax.dtypes.issubdtype(n.dtype, jax.dtypes.prng_key):
            data = _where_active(active, jax.random.key_data(n), jax.random.key_data(o))
            return jax.random.wrap_key_data(data, impl=jax.random.key_impl(n))
        return jnp.where(active.reshape((-1,) + (1,) * (n.ndim - 1)), n, o)

    return jax.tree.map(select, new, old)


def make_population_train_step(
    model: Any,
    tx: optax.GradientTransformation,
    *,
    task: str = "classification",
) -> Callable[[TrainState, dict, jax.Array], tuple[TrainState, dict]]:
    """``step(population, batch, active) -> (population, metrics)``: one step of every active member.

    The ordinary :func:`~randlr_jax.training.make_train_step` vmapped over the population axis, the batch
    shared; members with ``active[k] == False`` keep their state unchanged.

    Args:
      model: the model.
      tx: from :func:`make_population_optimizer`.
      task: ``"classification"`` or ``"language_model"``.

    Returns:
      The step (not jitted); metrics are the single step's, each with a leading ``(K,)`` axis.
    """
    model = adapt_model(model)  # an nnx.Module trains through its Linen face
    single = make_train_step(model, tx, task=task)
    batched = jax.vmap(single, in_axes=(0, None))

    def step(population: TrainState, batch: dict, active: jax.Array):
        new, metrics = batched(population, batch)
        return _where_active(active, new, population), metrics

    return step


def make_population_eval_step(model: Any, *, task: str = "classification") -> Callable[..., Any]:
    """The evaluation step of :func:`~randlr_jax.training.make_eval_step`, vmapped over the members.

    Classification: ``eval_step(population, batch) -> sums`` (each ``(K,)``); language model:
    ``eval_step(population, batch, carries) -> (sums, carries)``.
    """
    model = adapt_model(model)  # an nnx.Module trains through its Linen face
    single = make_eval_step(model, task=task)
    if task == "classification":
        return jax.vmap(single, in_axes=(0, None))
    return jax.vmap(single, in_axes=(0, None, 0))


@dataclasses.dataclass
class PopulationResult:
    """What :func:`fit_population` returns (the summaries are also in ``workdir/results.json``).

    Attributes:
      state: the final population state (leading axis ``K``).
      best_params: each member's parameters at its best validation epoch (leading axis ``K``).
      best_model_state: the same for the model state.
      learning_rates: ``(K,)`` the members' rates.
      history: one record per epoch, per-member values as lists of length ``K``.
      members: one :func:`~randlr_jax.training.fit`-style summary per member, with
        ``diverged_epoch``: the epoch (from 1) at whose end the member was found dead and frozen, or
        ``None``.
      summary: ``{"best_member", "best_learning_rate", "wall_time_s", ...}``; the best member is chosen on
        best validation loss (lowest), among members with a finite one; ``"diverged"`` where the whole
        population was seen dead (as ``fit``'s), absent otherwise.
    """

    state: TrainState
    best_params: Any
    best_model_state: Any
    learning_rates: np.ndarray
    history: list[dict]
    members: list[dict]
    summary: dict


def member_history(history: list[dict], member: int) -> list[dict]:
    """The :func:`~randlr_jax.training.fit`-style history of one member (epochs it was trained)."""
    out = []
    for record in history:
        if not record["trained"][member]:
            break
        out.append(
            {
                k: (v[member] if isinstance(v, list) else v)
                for k, v in record.items()
                if k != "trained"
            }
        )
    return out


def fit_population(
    model: Any,
    learning_rates: Sequence[float],
    splits: dict[str, Any],
    config: LoopConfig,
    workdir: str | os.PathLike,
    *,
    optimizer: OptimizerFactory = optax.sgd,
    optimizer_kwargs: dict | None = None,
    task: str = "classification",
    run_info: dict | None = None,
) -> PopulationResult:
    """Train one member per learning rate, all at once, resuming from ``workdir`` if possible.

    Same data order, evaluation, early stopping and best-epoch selection as
    :func:`randlr_jax.training.fit` with ``config``, per member (the same epoch engine runs both). Data
    parallel over ``config.num_devices`` devices (all by default, every process's): each batch is split
    over the devices and shared by the members; the population is replicated. Checkpoints follow ``fit``'s
    policy (the run's end, ``KeyboardInterrupt``, ``config.checkpoint_every_seconds`` and
    ``config.checkpoint_every_steps``), and the steps run a chunk per dispatch as for ``fit``;
    ``config.prefetch`` prepares the chunks ahead. ``config.copy_shards`` is ignored.

    Args:
      model: a Flax ``Classifier`` (classification) or ``LanguageModel`` (``task="language_model"``).
      learning_rates: ``(K,)`` positive rates, one member each.
      splits: as for :func:`~randlr_jax.training.fit`.
      config: loop settings (``epochs``, ``batch_size``, ``patience``, ``seed``, ...).
      workdir: run directory: ``checkpoints/``, ``metrics.jsonl``, ``results.json``.
      optimizer: an Optax factory with a ``learning_rate`` argument (default ``optax.sgd``).
      optimizer_kwargs: its other arguments.
      task: ``"classification"`` or ``"language_model"``.
      run_info: as for :func:`~randlr_jax.training.fit` (``workdir/run.json``).

    Returns:
      A :class:`PopulationResult`.

    Raises:
      ValueError: a bad argument, checked before anything is written or compiled (naming it), or
        bad splits (as :func:`~randlr_jax.training.fit`).
      FileExistsError: ``workdir`` is a file.

    Example:
      >>> from randlr_jax.models import make_model
      >>> rng = np.random.default_rng(0)
      >>> def split(n):
      ...     return {"x": rng.normal(size=(n, 4)).astype(np.float32), "y": rng.integers(0, 2, n)}
      >>> splits = {"train": split(32), "validation": split(16), "test": split(16)}
      >>> model = make_model("mlp", num_classes=2, widths=(8,))
      >>> config = LoopConfig(epochs=1, batch_size=16, progress=False, num_devices=1)
      >>> result = fit_population(model, [1e-2, 1e-1], splits, config, "runs/grid")
      >>> len(result.members), result.summary["best_learning_rate"] in (1e-2, 1e-1)
      (2, True)
    """
    model = adapt_model(model)  # an nnx.Module trains through its Linen face
    checks.model("model", model)
    rates = _check_rates(learning_rates)
    check_config(config)
    _check_optimizer(optimizer, {} if optimizer_kwargs is None else optimizer_kwargs)
    checks.mapping("run_info", run_info, optional=True)
    num_members = len(rates)
    workdir, mesh = engine.prepare(splits, config, workdir, task)
    run_record.check_or_write(
        workdir,
        run_record.fingerprint(
            config,
            task=task,
            model=model,
            splits=splits,
            optimizer=optimizer,
            optimizer_kwargs=optimizer_kwargs,
            learning_rates=rates,
            run_info=run_info,
        ),
    )
    data = _PopulationData(splits, config, task, mesh)
    # The same model and optimizer in the same process: one optimizer object, steps compiled once.
    tx = engine.shared(make_population_optimizer, optimizer, **(optimizer_kwargs or {}))

    carry = None
    if task == "language_model":
        carry = model.initial_carry(config.batch_size)
    engine.check_labels(data, model, carry)
    state = init_population(
        model, tx, rates, jax.random.key(config.seed), data.sample_input(), carry=carry
    )
    # Members replicated; the carries ``(K, B, ...)`` split along their batch axis like the batches.
    initial_carry = None if carry is None else to_host(state.carry)
    state = replicate(state.replace(carry=None), mesh)
    face = _Population(
        data,
        mesh,
        state,
        _MemberStopping.create(num_members, patience=config.patience),
        step_fn=engine.compiled(make_population_train_step, model, tx, task=task, donate_argnums=0),
        eval_fn=engine.compiled(make_population_eval_step, model, task=task),
        carry=initial_carry,
        rates=rates,
    )

    run = engine.run(face, config, workdir)
    stoppers = run.stopper.members
    history = run.history
    diverged_epochs = list(run.stopper.diverged)
    if run.diverged is not None and run.diverged["stopped"]:  # inside an epoch: its dead too
        for k, dead in enumerate(run.diverged["dead"]):
            if dead and diverged_epochs[k] is None and face.active[k]:
                diverged_epochs[k] = run.diverged["epoch"]
    members = [
        {
            "learning_rate": float(rates[k]),
            "epochs_run": sum(1 for r in history if r["trained"][k]),
            "best_epoch": stoppers[k].best_epoch,
            "diverged_epoch": diverged_epochs[k],
        }
        for k in range(num_members)
    ]
    if "validation" in splits:
        for k, stopper in enumerate(stoppers):
            members[k]["best_validation_loss"] = stopper.best_value
    if "test" in splits:
        best = run.best
        best_state = run.state.replace(params=best["params"], model_state=best["model_state"])
        for name, values in face.evaluate("test", best_state).items():
            for k in range(num_members):
                members[k][f"test_{name}"] = values[k]
    for k in range(num_members):
        trained = member_history(history, k)
        if trained:
            members[k]["final"] = trained[-1]
    summary = {
        "learning_rates": rates.tolist(),
        "wall_time_s": run.wall_time_s,
        "steps_per_second": run.steps_per_second,
        "device_kind": jax.devices()[0].device_kind,
        "num_devices": int(mesh.devices.size),
        "num_members": num_members,
    }
    scores = [m.get("best_validation_loss", math.inf) for m in members]
    if any(math.isfinite(s) for s in scores):
        best_member = int(np.nanargmin(np.where(np.isfinite(scores), scores, np.inf)))
        summary.update(best_member=best_member, best_learning_rate=float(rates[best_member]))
    else:
        summary.update(best_member=None, best_learning_rate=None)
    if run.diverged is not None:
        summary["diverged"] = run.diverged
    engine.write_results(workdir, encode_record({"summary": summary, "members": members}))
    return PopulationResult(
        run.state, run.best["params"], run.best["model_state"], rates, history, members, summary
    )


@dataclasses.dataclass
class _MemberStopping(MemberEarlyStopping):
    """:class:`MemberEarlyStopping` that also freezes the members found dead (diverged).

    Attributes:
      diverged: per member, the epoch at whose end it was found dead (then it is no longer active), or
        ``None``.
    """

    diverged: list = dataclasses.field(default_factory=list)

    def __post_init__(self):
        if not self.diverged:
            self.diverged = [None] * len(self.members)

    @classmethod
    def create(cls, num_members: int, patience: int | None = None) -> _MemberStopping:
        return cls([EarlyStopping(patience=patience) for _ in range(num_members)])

    @property
    def active(self) -> np.ndarray:
        return super().active & np.array([d is None for d in self.diverged], bool)

    def mark_diverged(self, dead: np.ndarray, epoch: int) -> None:
        """Freeze the active members that ``dead`` (``(K,)`` bool) says are dead, at ``epoch``'s end."""
        active = self.active
        for k in np.flatnonzero(np.asarray(dead, bool) & active):
            self.diverged[int(k)] = epoch

    def to_dict(self) -> dict:
        return {"members": super().to_dict(), "diverged": list(self.diverged)}

    @classmethod
    def from_dict(cls, d: dict | list) -> _MemberStopping:
        if isinstance(d, list):  # a checkpoint of before the dead were frozen
            return cls(MemberEarlyStopping.from_dict(d).members)
        return cls(MemberEarlyStopping.from_dict(d["members"]).members, list(d["diverged"]))


class _Population(engine.Face):
    """:func:`fit_population`'s face: ``K`` stacked members, one :class:`EarlyStopping` each (a stopped
    member is frozen by the step's ``active`` mask), per-member lists in the records."""

    step_key = "global_step"  # ``state.step`` is per member (and stands still for a frozen one)

    def __init__(self, data, mesh, state, stopper, *, step_fn, eval_fn, carry, rates):
        super().__init__(data, mesh, state, stopper)
        self.step_fn, self.eval_fn = step_fn, eval_fn
        self.carry = carry  # ``(K, B, ...)`` on the host
        self.rates = rates
        if carry is not None:
            self.state = state.replace(carry=self.fresh_carry())
        self.active = None

    def begin_epoch(self, stopper: MemberEarlyStopping) -> None:
        self.active = stopper.active  # fixed for the epoch: members stop at its end
        self.active_device = replicate(self.active, self.mesh)

    def fresh_carry(self) -> Any:
        return None if self.carry is None else self.data.shard_carry(self.carry)

    def step_extra(self):
        return (self.active_device,)

    def postfix(self, epoch, metrics, examples_per_s):
        return {
            "epoch": epoch + 1,
            "active": int(self.active.sum()),
            "best_loss": _min_loss(metrics),
            "ex_per_s": f"{examples_per_s:.0f}",
        }

    def epoch_fields(self, metrics):
        return {"learning_rate": self.rates.tolist(), "trained": self.active.tolist()}

    def evaluate(self, split, state):
        return self.data.evaluate(split, state, self.eval_fn)

    def merge_best(self, improved, current, best):
        return _where_active(replicate(improved, self.mesh), current, best)

    def all_dead(self, dead):
        # The population is dead when every member still training is (the others are frozen).
        return bool(self.active.any() and np.all(np.asarray(dead, bool)[self.active]))

    def mark_dead(self, stopper, dead, epoch):
        stopper.mark_diverged(dead, epoch)

    def dead_reason(self, loss, dead):
        members = [int(k) for k in np.flatnonzero(np.asarray(dead, bool) & self.active)]
        reasons = sorted({engine._reason(float(loss[k]), True) for k in members})
        return f"every member still training ({members}) is dead: {'; '.join(reasons)}"


def _min_loss(metrics: dict) -> str:
    losses = np.asarray(metrics["loss"], np.float64)
    finite = losses[np.isfinite(losses)]
    return f"{finite.min():.4f}" if finite.size else "nan"


class _PopulationData(SplitFeed):
    """The same batches for every member, as ``fit`` reads them (split over the mesh's data axis);
    evaluation per member."""

    def __init__(self, splits: dict, config: Any, task: str, mesh: Any):
        super().__init__(splits, config, task)
        self.mesh = mesh

    def shard_carry(self, carry: Any) -> Any:
        """Put population carries ``(K, B, ...)`` on the mesh, split along the batch axis ``B``."""
        spec = jax.sharding.PartitionSpec(None, *batch_sharded(self.mesh).spec)
        sharding = jax.sharding.NamedSharding(self.mesh, spec)
        return put_global(jax.tree.map(np.asarray, carry), sharding)

    def evaluate(self, split: str, state: TrainState, eval_fn) -> dict[str, list[float]]:
        def initial_carries(streams: int) -> Any:
            shape = lambda c: c.shape[:1] + (streams,) + c.shape[2:]  # noqa: E731 -- (K, streams, ...)
            return self.shard_carry(
                jax.tree.map(lambda c: np.zeros(shape(c), c.dtype), state.carry)
            )

        totals = self.evaluation_sums(split, state, eval_fn, self.mesh, initial_carries)
        if totals is None:
            return {}
        num_members = len(np.asarray(totals["count"]))
        per_member = [
            summarize({k: np.asarray(v)[k_] for k, v in totals.items()}, task=self.task)
            for k_ in range(num_members)
        ]
        return {name: [m[name] for m in per_member] for name in per_member[0]}
