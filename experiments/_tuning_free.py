"""The tuning-free methods of the leaderboard and the model-selection study, each at its defaults.

:data:`TUNING_FREE_METHODS` names every method and the settings it runs at, never tuned per task:
this library's (Alrao-SGD and Alrao-Adam, AutoDrop, NOH with the shipped weights, Adam-HD and SGD-HD,
1cycle and a constant rate from the LR range test), ``optax.contrib``'s learning-rate-free
optimizers (Prodigy, D-Adapt AdamW, DoG, COCOB, Mechanic, schedule-free SGD and AdamW, the last two
evaluated at their averaged iterate) and the tuned baselines (the SGD and Adam grids, each one
vmapped population). :func:`tuning_free_run` trains one of them on one ``_common.AlraoSetting`` for
one seed: a fixed budget, no early stopping, tested at the epoch of the best validation loss,
resumable, its row kept in its directory. Where a method needs a start rate and has no default it
gets one value for every task (:data:`TUNING_FREE_SGD_LR`, :data:`TUNING_FREE_ADAM_LR`).

Used by ``experiments/leaderboard.py`` and ``experiments/alrao_model_selection.py``; library code never
imports it.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from collections.abc import Callable, Mapping
from typing import Any

from experiments._common import (
    SGD_GRID,
    AlraoSetting,
    alrao_train_config,
    with_alrao,
    write_json,
)

TUNING_FREE_SGD_LR = 0.1  # the one start rate of an SGD-like method that has no default
TUNING_FREE_ADAM_LR = 1e-3  # ... of an Adam-like one
ADAM_GRID = (1e-5, 1e-4, 1e-3, 1e-2, 1e-1)
RANGE_TEST_STEPS = 100  # the range test's default length (its steps count in the tuning budget)


@dataclasses.dataclass(frozen=True)
class TuningFreeMethod:
    """One row of the leaderboard: what it is and the defaults it runs at (never tuned per task).

    Attributes:
      name: the run directories' name (``<task>/seed<s>/<name>``).
      label: the tables' name.
      group: ``"ours"`` (this library), ``"peer"`` (``optax.contrib``) or ``"tuned"`` (a grid).
      defaults: the settings it runs at, as the README table states them.
      grid: a tuned baseline's rates, trained as one vmapped population (the best one chosen on
        validation loss over the seeds); empty for the one-run methods.
      range_test: it starts with the LR range test (whose steps count in its budget).
    """

    name: str
    label: str
    group: str
    defaults: str
    grid: tuple[float, ...] = ()
    range_test: bool = False


TUNING_FREE_METHODS: dict[str, TuningFreeMethod] = {m.name: m for m in (
    TuningFreeMethod("alrao_sgd", "Alrao-SGD", "ours",
                     "[1e-5, 10], 10 copies (LSTMs: [1e-3, 100], 6 copies; Blier et al. 2019)"),
    TuningFreeMethod("alrao_adam", "Alrao-Adam", "ours",
                     "[1e-6, 1], the setting's copies (Blier et al. 2019, Appendix)"),
    TuningFreeMethod("autodrop", "AutoDrop", "ours",
                     "SGD 0.1, momentum 0.9; drop 0.2 when the angular velocity's change < 0.01 "
                     "(one epoch a period), delay 20"),
    TuningFreeMethod("noh", "NOH (shipped weights)", "ours",
                     "Adam with the rates of the shipped noh_mnist1d LSTM, frozen"),
    TuningFreeMethod("adam_hd", "Adam-HD", "ours", "alpha_0 1e-3, beta 1e-7 (Baydin et al. 2018)"),
    TuningFreeMethod("sgd_hd", "SGD-HD", "ours", "alpha_0 1e-3, beta 1e-3 (Baydin et al. 2018)"),
    TuningFreeMethod("one_cycle", "1cycle (range test)", "ours",
                     "max_lr the top of the range test's cyclic_range, div_factor its width, "
                     "momentum 0.95-0.85, over the whole budget", range_test=True),
    TuningFreeMethod("range_constant", "SGD at range test min/10", "ours",
                     "SGD with momentum 0.9 at the range test's lr_min_div_10", range_test=True),
    TuningFreeMethod("prodigy", "Prodigy", "peer", "optax.contrib.prodigy() (learning_rate 1)"),
    TuningFreeMethod("dadapt_adamw", "D-Adapt AdamW", "peer",
                     "optax.contrib.dadapt_adamw() (learning_rate 1)"),
    TuningFreeMethod("dog", "DoG", "peer", "optax.contrib.dog() (learning_rate 1, r_eps 1e-6)"),
    TuningFreeMethod("cocob", "COCOB", "peer", "optax.contrib.cocob() (alpha 100)"),
    TuningFreeMethod("mechanic", "Mechanic over SGD", "peer",
                     "optax.contrib.mechanize(optax.sgd(0.1))"),
    TuningFreeMethod("schedule_free_sgd", "schedule-free SGD", "peer",
                     "optax.contrib.schedule_free_sgd() (learning_rate 1, b1 0.9), "
                     "evaluated at the averaged iterate"),
    TuningFreeMethod("schedule_free_adamw", "schedule-free AdamW", "peer",
                     "optax.contrib.schedule_free_adamw() (learning_rate 2.5e-3), "
                     "evaluated at the averaged iterate"),
    TuningFreeMethod("sgd_grid", "SGD, best of the grid", "tuned",
                     "SGD at 1e-5 ... 10 (7 rates), the best on validation", grid=SGD_GRID),
    TuningFreeMethod("adam_grid", "Adam, best of the grid", "tuned",
                     "Adam at 1e-5 ... 1e-1 (5 rates), the best on validation", grid=ADAM_GRID),
)}  # fmt: skip


def schedule_free_params(state: Any) -> Any:
    """A schedule-free optimizer's averaged iterate ``x`` (``fit``'s ``eval_params``)."""
    import optax

    return optax.contrib.schedule_free_eval_params(state.opt_state, state.params)


def range_test_loss(model: Any, task: str) -> Callable[[Any, dict], Any]:
    """The range test's ``loss_fn(params, batch)``: mean cross-entropy, dropout off; a language model
    reads each window from a zero carry."""
    import optax

    from randlr_jax.cyclical import classification_loss

    if task != "language_model":
        return classification_loss(model, train=False)

    def loss_fn(params, batch):
        carry = model.initial_carry(batch["x"].shape[0])
        logits, _ = model.apply({"params": params}, batch["x"], carry, train=False)
        return optax.softmax_cross_entropy_with_integer_labels(logits, batch["y"]).mean()

    return loss_fn


def run_range_test(config: Any, workdir: str, *, max_train_tokens: int | None = None) -> Any:
    """The LR range test (SGD with momentum 0.9, ``1e-7`` to ``10`` over 100 steps) from the
    parameters ``config``'s run starts from, on its training batches; read back from
    ``workdir/range_test.json`` if already run. Returns a ``RangeTestResult``."""
    import jax
    import optax

    from randlr_jax import runner
    from randlr_jax.cyclical import RangeTestResult, lr_range_test
    from randlr_jax.training import endless_batches
    from randlr_jax.training._batching import lm_batch_iterator
    from randlr_jax.training._state import create_train_state

    path = os.path.join(workdir, "range_test.json")
    if os.path.exists(path):
        with open(path) as f:
            return RangeTestResult.from_dict(json.load(f))
    splits, spec, task = runner.load_splits(config, max_train_tokens=max_train_tokens)
    model = runner.build_model(config, spec)
    loop = config.loop
    carry = None
    if task == "language_model":
        batches = list(lm_batch_iterator(splits["train"], loop.batch_size, loop.seq_len))
        sample = batches[0]["x"][:1]
        carry = model.initial_carry(1)
    else:
        batches = endless_batches(splits["train"], loop.batch_size, seed=loop.seed)
        sample = splits["train"]["x"][:1]
    state = create_train_state(
        model, optax.identity(), jax.random.key(loop.seed), sample, carry=carry
    )
    result = lr_range_test(
        range_test_loss(model, task),
        state.params,
        batches,
        lambda lr: optax.sgd(lr, momentum=0.9),
        num_iter=RANGE_TEST_STEPS,
    )
    write_json(path, result.to_dict())
    return result


def tuning_free_optimizer(
    name: str,
    *,
    total_steps: int,
    steps_per_epoch: int,
    range_result: Any = None,
) -> tuple[Any, Any, dict]:
    """``(tx, eval_params, run_info)`` of the one-run method ``name`` of :data:`TUNING_FREE_METHODS`
    (not the Alrao ones, which :func:`with_alrao` builds, nor the grids).

    ``total_steps``: the run's budget (1cycle spans it); ``steps_per_epoch``: AutoDrop's period;
    ``range_result``: the range test's ``RangeTestResult`` (``one_cycle``, ``range_constant``).
    """
    import optax

    from randlr_jax import autodrop, cyclical, noh

    contrib = optax.contrib
    sgd_lr, adam_lr = TUNING_FREE_SGD_LR, TUNING_FREE_ADAM_LR
    info: dict[str, Any] = {"optimizer": name}
    eval_params = None
    if name == "autodrop":
        tx = optax.chain(
            optax.sgd(sgd_lr, momentum=0.9),
            autodrop.autodrop(sgd_lr, steps_per_period=steps_per_epoch),
        )
        info.update(learning_rate=sgd_lr, momentum=0.9, steps_per_period=steps_per_epoch)
    elif name == "noh":
        tx = noh.pretrained_optimizer("noh_mnist1d")
        info["weights"] = "noh_mnist1d"
    elif name == "adam_hd":
        tx = noh.adam_hd(adam_lr, 1e-7)
        info.update(learning_rate=adam_lr, hypergradient_lr=1e-7)
    elif name == "sgd_hd":
        tx = noh.sgd_hd(adam_lr, 1e-3)
        info.update(learning_rate=adam_lr, hypergradient_lr=1e-3)
    elif name in ("one_cycle", "range_constant"):
        if range_result is None:
            raise ValueError(f"{name!r} needs range_result (the range test's result).")
        if name == "one_cycle":
            low, high = range_result.cyclic_range
            tx = cyclical.one_cycle_sgd(total_steps, high, div_factor=high / low)
            info.update(max_lr=high, div_factor=high / low, total_steps=total_steps)
        else:
            rate = range_result.lr_min_div_10
            tx = optax.sgd(rate, momentum=0.9)
            info.update(learning_rate=rate, momentum=0.9)
    elif name == "prodigy":
        tx = contrib.prodigy()
    elif name == "dadapt_adamw":
        tx = contrib.dadapt_adamw()
    elif name == "dog":
        tx = contrib.dog()
    elif name == "cocob":
        tx = contrib.cocob()
    elif name == "mechanic":
        tx = contrib.mechanize(optax.sgd(sgd_lr))
        info["base"] = f"sgd({sgd_lr:g})"
    elif name == "schedule_free_sgd":
        tx, eval_params = contrib.schedule_free_sgd(), schedule_free_params
    elif name == "schedule_free_adamw":
        tx, eval_params = contrib.schedule_free_adamw(), schedule_free_params
    else:
        one_run = [n for n, m in TUNING_FREE_METHODS.items() if not m.grid and "alrao" not in n]
        raise ValueError(f"name must be one of {one_run}, got {name!r}.")
    return tx, eval_params, info


def steps_per_epoch(config: Any, *, max_train_tokens: int | None = None) -> int:
    """The training steps of one epoch of ``config``'s run (its batches of the training split)."""
    from randlr_jax import data as rdata
    from randlr_jax import runner

    splits, _, task = runner.load_splits(config, max_train_tokens=max_train_tokens)
    loop = config.loop
    if task == "language_model":
        return rdata.lm_num_batches(len(splits["train"]), loop.batch_size, loop.seq_len)
    return rdata.num_batches(len(splits["train"]["y"]), loop.batch_size, loop.drop_remainder)


def _finite_or_none(value: Any) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _tested(summary: Mapping[str, Any], metric: str, planned_steps: int) -> dict:
    """A run's (or a population member's) row: tested at its best validation epoch."""
    diverged = bool(summary.get("diverged")) or summary.get("diverged_epoch") is not None
    loss = _finite_or_none(summary.get(f"test_{metric}"))
    validation = _finite_or_none(summary.get("best_validation_loss"))
    return {
        "loss": loss,
        "accuracy": _finite_or_none(summary.get("test_accuracy")),
        "validation_loss": validation,
        "best_epoch": summary.get("best_epoch"),
        # Dead (a non-finite loss seen), or never better than its initial parameters.
        "diverged": diverged or loss is None or validation is None,
        "planned_steps": planned_steps,
    }


def run_description(name: str, setting: AlraoSetting, seed: int, epochs: int) -> dict:
    """What a row was trained with (kept in it as ``"ran"``): method, seed, epochs and setting."""
    described = {
        "method": name,
        "seed": seed,
        "epochs": epochs,
        "setting": dataclasses.asdict(setting),
    }
    return json.loads(json.dumps(described, default=list))  # tuples as JSON keeps them: lists


def check_row(path: str, row: Mapping[str, Any], ran: Mapping[str, Any]) -> None:
    """Refuse a finished row of other settings (a changed ``--epochs``, setting or seed): reading it
    back would report a run that is not the one asked for.

    Raises:
      ValueError: naming the differing entries and the way out (another run directory).
    """
    held = row.get("ran")
    if held == ran:
        return
    if held is None:
        differing = ["ran (the row does not say what it was trained with)"]
    else:
        keys = sorted(set(held) | set(ran))
        differing = [f"{k}: {held.get(k)!r} there, {ran.get(k)!r} asked" for k in keys
                     if held.get(k) != ran.get(k)]  # fmt: skip
    raise ValueError(
        f"{path} holds a finished run of other settings ({'; '.join(differing)}); use another "
        "--workdir (or delete that directory) to train this one."
    )


def tuning_free_run(
    name: str,
    setting: AlraoSetting,
    seed: int,
    workdir: str,
    *,
    epochs: int,
    range_dir: str | None = None,
    progress: bool = False,
    description: str = "",
) -> dict:
    """One method of :data:`TUNING_FREE_METHODS` on ``setting`` for ``seed``: ``epochs`` epochs, no
    early stopping, tested at the epoch of the best validation loss.

    Resumable: the run trains in ``workdir`` (resumed where it stopped) and, once finished, its row is
    ``workdir/row.json``, read back on the next call. ``range_dir``: where the range test of this
    setting and seed is kept (shared by the methods that use it; default ``workdir``).

    Returns:
      One-run methods: ``{"method", "seed", "loss", "accuracy", "validation_loss", "best_epoch",
      "diverged", "planned_steps", "train_steps", "wall_time_s", "info"}`` (``loss`` in the setting's
      metric, ``None`` where not finite; ``train_steps`` adds the range test's steps; Alrao adds
      ``info["suggest_lr"]``, the posterior-weighted rate of :func:`randlr_jax.alrao.suggest_lr`).
      Grids: ``{"method", "seed", "members": [one row per rate, with "learning_rate"],
      "train_steps", "wall_time_s"}`` (``train_steps``: every member's). Every row holds ``"ran"``
      (:func:`run_description`); a finished row of other settings is refused (:func:`check_row`).
    """
    import optax

    from randlr_jax import alrao, runner
    from randlr_jax.runner._runner import build_alrao

    path = os.path.join(workdir, "row.json")
    ran = run_description(name, setting, seed, epochs)
    if os.path.exists(path):
        with open(path) as f:
            row = json.load(f)
        check_row(path, row, ran)
        return row
    method = TUNING_FREE_METHODS[name]
    cut = setting.max_train_tokens
    base = alrao_train_config(setting, seed, epochs=epochs, early_stopping=False, progress=progress)
    base = base.replace(
        loop=dataclasses.replace(base.loop, test_every_epoch=False, description=description or name)
    )
    per_epoch = steps_per_epoch(base, max_train_tokens=cut)
    planned = epochs * per_epoch
    started = time.perf_counter()
    row: dict[str, Any] = {"method": name, "seed": seed, "ran": ran}
    if method.grid:
        factory = optax.sgd if name == "sgd_grid" else optax.adam
        result = runner.train_and_evaluate_population(
            base, workdir, method.grid, optimizer=factory, max_train_tokens=cut
        )
        row["members"] = [
            {"learning_rate": rate, **_tested(member, setting.metric, planned)}
            for rate, member in zip(method.grid, result.members, strict=True)
        ]
        row["train_steps"] = planned * len(method.grid)
    elif name in ("alrao_sgd", "alrao_adam"):
        if name == "alrao_sgd":
            config = with_alrao(base, setting)
        else:
            config = with_alrao(base, setting, optimizer="alrao_adam", lr_min=1e-6, lr_max=1.0)
        result = runner.train_and_evaluate(config, workdir, max_train_tokens=cut)
        kwargs = config.optimizer_kwargs
        _, spec, task = runner.load_splits(config, max_train_tokens=cut)
        model, _, _ = build_alrao(config, spec, task)
        posterior = alrao.posterior_of(result.state, model)
        rates = alrao.copy_learning_rates(kwargs["lr_min"], kwargs["lr_max"], kwargs["num_copies"])
        row.update(_tested(result.summary, setting.metric, planned))
        row["train_steps"] = planned
        row["info"] = {
            "optimizer": name,
            "lr_min": kwargs["lr_min"],
            "lr_max": kwargs["lr_max"],
            "num_copies": kwargs["num_copies"],
            "posterior": [float(a) for a in posterior],
            "suggest_lr": float(alrao.suggest_lr(rates, posterior)),
        }
    else:
        range_result, extra_steps = None, 0
        if method.range_test:
            range_result = run_range_test(base, range_dir or workdir, max_train_tokens=cut)
            extra_steps = len(range_result.losses)
            if not range_result.valid:  # it suggests no rate: the method cannot start
                row.update(
                    loss=None, accuracy=None, validation_loss=None, best_epoch=None,
                    diverged=True, planned_steps=planned, train_steps=extra_steps,
                    info={"optimizer": name, "error": range_result.invalid_reason},
                )  # fmt: skip
                row["wall_time_s"] = time.perf_counter() - started
                write_json(path, row)
                return row
        tx, eval_params, info = tuning_free_optimizer(
            name, total_steps=planned, steps_per_epoch=per_epoch, range_result=range_result
        )
        result = runner.train_and_evaluate(
            base, workdir, tx=tx, run_info=info, max_train_tokens=cut, eval_params=eval_params
        )
        row.update(_tested(result.summary, setting.metric, planned))
        row["train_steps"] = planned + extra_steps
        row["info"] = info
    row["wall_time_s"] = time.perf_counter() - started
    write_json(path, row)
    return row
