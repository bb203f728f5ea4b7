"""What only the experiment scripts share: one configuration mechanism, checked flags, the results tail.

**Configurations.** Every script describes its study with one frozen dataclass ``Config`` (plain Python, as
Flax's ``examples/*/configs`` and big_vision's ``get_config`` do) and a dict ``CONFIGS`` of named variants
built from the default with :func:`dataclasses.replace`; a variant is picked with ``--config NAME``. Every
script has one ``quick(config) -> config`` that shrinks any variant to the same code path at smoke-test
size, applied by ``--quick``. A flag whose ``dest`` is a field of ``Config`` and whose value is given
overrides that field last (flags default to ``None``, so an explicit ``0`` is kept)::

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_config_arguments(parser, CONFIGS, workdir="runs/study")
    parser.add_argument("--epochs", type=positive_int)        # overrides Config.epochs
    args = parser.parse_args(argv)
    config = resolve_config(args, CONFIGS, quick)

The resolved config is recorded in the run directory (:func:`write_json` of ``dataclasses.asdict``) so a
result says which settings produced it.

**Checked flags.** Each ``type=`` function raises :class:`argparse.ArgumentTypeError`, which argparse turns
into its own usage error naming the flag (``error: argument --epochs: must be an integer >= 1, got '0'``,
exit status 2) before anything runs.

**The tail.** :func:`finish` writes ``results.json`` and one ``<name>.md`` per table into the run directory
and prints the tables, the wall time and the paths: the same last lines for every script.

**The Alrao studies.** The six Alrao scripts (``alrao_compare``, ``alrao_appendix``,
``alrao_feature_guard``, ``alrao_interval``, ``alrao_posterior``, ``demo``) share the models of the
Table 1 analogue (:data:`ALRAO_SETTINGS`), the :class:`randlr_jax.runner.TrainConfig` of a setting
(:func:`alrao_train_config`, :func:`with_alrao`), the Table 1 protocol on one setting
(:func:`compare_setting`: the SGD grid as one vmapped population, Adam and Alrao-SGD per seed, the rate
chosen on validation, mean ± std over seeds) and its Fig. 2 figure (:func:`curves_figure`); Blier,
Wolinski, Ollivier, *Learning with Random Learning Rates* (2019). The training itself is the library's
(:mod:`randlr_jax.runner`); this part only says what to train.

Library code never imports this module (``randlr_jax`` never imports ``experiments``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from randlr_jax import runner

T = TypeVar("T")


def int_at_least(minimum: int) -> Callable[[str], int]:
    """An argparse ``type=``: an integer ``>= minimum`` (``positive_int`` is ``int_at_least(1)``)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"must be an integer >= {minimum}, got {text!r}"
            ) from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be an integer >= {minimum}, got {text!r}")
        return value

    parse.__name__ = f"integer >= {minimum}"  # argparse names the type in some messages
    return parse


positive_int = int_at_least(1)
nonnegative_int = int_at_least(0)


def positive_float(text: str) -> float:
    """An argparse ``type=``: a finite number ``> 0`` (a learning rate, a threshold)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text!r}")
    return value


positive_float.__name__ = "number > 0"


def override(value: T | None, default: T) -> T:
    """``value`` unless it is ``None`` (a flag not given): unlike ``value or default``, 0 stays 0."""
    return default if value is None else value


def require_distinct(
    parser: argparse.ArgumentParser, flag: str, values: Sequence[Any] | None
) -> None:
    """``parser.error`` if ``values`` (a ``nargs="+"`` flag's) repeats one: each names a run directory."""
    if values is None:
        return
    repeated = sorted({v for v in values if list(values).count(v) > 1})
    if repeated:
        parser.error(
            f"argument {flag}: values must be distinct, got {list(values)} ({repeated} repeated)"
        )


def add_config_arguments(
    parser: argparse.ArgumentParser,
    configs: Mapping[str, Any],
    *,
    workdir: str,
    default: str = "default",
) -> None:
    """Add ``--config`` (one of ``configs``), ``--quick`` and ``--workdir`` to ``parser``."""
    if default not in configs:
        raise ValueError(f"default must be one of {sorted(configs)}, got {default!r}.")
    parser.add_argument(
        "--config",
        default=default,
        choices=sorted(configs),
        help=f"named configuration (default {default!r})",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="the same code path at smoke-test size (applies the script's quick())",
    )
    parser.add_argument(
        "--workdir", default=workdir, help=f"run directory, resumed if present (default {workdir})"
    )
    parser.add_argument(
        "--compile-cache",
        default=None,
        metavar="DIR",
        help="JAX's persistent compilation cache: compiled programs are kept there for the next run "
        "(default $RANDLR_JAX_COMPILE_CACHE, else ~/.cache/randlr_jax/jax; 'off': none)",
    )


def resolve_config(
    args: argparse.Namespace, configs: Mapping[str, Any], quick: Callable[[Any], Any]
) -> Any:
    """The named variant, then ``quick`` if ``--quick``, then every given flag named like a field.

    Also turns on JAX's persistent compilation cache (``--compile-cache``; see
    :func:`randlr_jax.training.enable_compile_cache`) before anything is compiled."""
    from randlr_jax.training import enable_compile_cache

    cache = getattr(args, "compile_cache", None)
    if cache is None or cache.strip().lower() not in ("off", "none", "0"):
        enable_compile_cache(cache)
    config = configs[args.config]
    if not dataclasses.is_dataclass(config):
        raise TypeError(f"configs[{args.config!r}] must be a dataclass instance, got {config!r}.")
    if getattr(args, "quick", False):
        config = quick(config)
    fields = {f.name for f in dataclasses.fields(config)}
    given = {
        name: value
        for name, value in vars(args).items()
        if name in fields
        and value is not None
        and name not in ("config", "quick", "workdir", "compile_cache")
    }
    return dataclasses.replace(config, **given)


def json_default(obj: Any) -> Any:
    """``json.dump(default=...)`` for results: numpy scalars and arrays, tuples, dataclasses, paths."""
    import numpy as np

    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, tuple):
        return list(obj)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.asdict(obj)
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    return repr(obj)


def write_json(path: str | os.PathLike, obj: Any) -> str:
    """Write ``obj`` as indented JSON (atomically: a temporary file renamed over ``path``); return the path."""
    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2, default=json_default)
        f.write("\n")
    os.replace(tmp, path)
    return path


def finish(
    workdir: str | os.PathLike,
    results: dict,
    *,
    tables: Mapping[str, str] = (),
    figures: Sequence[str] = (),
    started: float | None = None,
    notes: Sequence[str] = (),
    results_name: str = "results.json",
) -> dict:
    """The last lines of every script: write results and tables, print them, the wall time and the paths.

    ``results["wall_time_s"]`` is set from ``started`` (a ``time.perf_counter()`` value) when given.
    Returns ``results``.
    """
    workdir = os.fspath(workdir)
    os.makedirs(workdir, exist_ok=True)
    if started is not None:
        results["wall_time_s"] = time.perf_counter() - started
    results_path = write_json(os.path.join(workdir, results_name), results)
    for name, text in dict(tables).items():
        with open(os.path.join(workdir, f"{name}.md"), "w") as f:
            f.write(text + "\n")
        print()
        print(text)
    for line in notes:
        print(f"\n{line}")
    if "wall_time_s" in results:
        print(f"\nwall time {results['wall_time_s']:.1f} s")
    print(f"results: {os.path.abspath(results_path)}")
    for figure in figures:
        print(f"figure:  {os.path.abspath(figure)}")
    return results


mean_std = runner.mean_std  # mean and population std over seeds (the library's)


def fmt(mean: float, std: float, digits: int = 3) -> str:
    """``"mean ± std"`` with ``digits`` decimals, for tables; ``"nan"`` for a non-finite mean."""
    if not math.isfinite(mean):
        return "nan"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


# ----------------------------------------------------------------------------------------------
# The Alrao studies: settings and the Table 1 protocol

SGD_GRID = (1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0)  # Blier et al. (2019), Section 3
ADAM_LR = 1e-3  # Adam with its defaults (the paper's baseline)


@dataclasses.dataclass(frozen=True)
class AlraoSetting:
    """One model of the Alrao studies (a row of the Table 1 analogue): data, model, interval, budget.

    Attributes:
      dataset, model, model_kwargs: as :class:`randlr_jax.runner.TrainConfig`.
      lr_min, lr_max, num_copies: Alrao's interval and classifier copies.
      epochs, patience, batch_size: the loop budget (early stopping on validation loss).
      quick_epochs: the epochs of a study's ``--quick`` (its smoke-test size).
      validation_size: carved from train (classification).
      max_train_tokens: language models: read only this many training tokens (CPU budget);
        validation and test are cut to a tenth of it (:func:`randlr_jax.runner.load_splits`).
      seq_len: language models: the truncated-BPTT window.
      requires_prepared: a public TFDS dataset: the setting is skipped (with the reason) when it is
        not prepared (:func:`unprepared_reason`).
    """

    dataset: str
    model: str
    model_kwargs: dict = dataclasses.field(default_factory=dict)
    lr_min: float = 1e-5
    lr_max: float = 10.0
    num_copies: int = 10
    epochs: int = 30
    patience: int = 6
    batch_size: int = 32
    quick_epochs: int = 2
    validation_size: int | float | None = 400
    max_train_tokens: int | None = None
    requires_prepared: bool = False
    seq_len: int = 70

    @property
    def task(self) -> str:
        return "language_model" if self.model in ("char_lstm", "word_lstm") else "classification"

    @property
    def metric(self) -> str:
        """The loss the tables report: cross-entropy (nats), or bits per character (the char LSTM)."""
        return "bits_per_char" if self.model == "char_lstm" else "loss"


ALRAO_SETTINGS: dict[str, AlraoSetting] = {
    "mnist1d_mlp": AlraoSetting("mnist1d", "mlp", {"widths": (100, 100)}),
    "mnist1d_cnn": AlraoSetting("mnist1d", "cnn1d"),
    "digits_mlp": AlraoSetting("digits", "mlp", {"widths": (100, 100)}, validation_size=180),
    # MNIST-1D at the size of MNIST (60,000 / 10,000), 10 % of train for validation.
    "mnist1d_large_mlp": AlraoSetting(
        "mnist1d/large", "mlp", {"widths": (100, 100)}, validation_size=6000
    ),
    # Paper: 2-layer LSTM, 100 units, dropout 0.2, Alrao on [1e-3, 100] with 6 copies, 20 streams, BPTT 70.
    "char_lstm": AlraoSetting(
        "shakespeare_char", "char_lstm", lr_min=1e-3, lr_max=100.0, num_copies=6, epochs=2,
        patience=2, batch_size=20, quick_epochs=1, validation_size=None, max_train_tokens=70_000,
    ),
    **{
        f"cifar10_{model}": AlraoSetting(
            "cifar10", model, epochs=50, patience=20, requires_prepared=True,
            validation_size=10_000,
        )
        for model in ("vgg19", "mobilenetv2", "googlenet")
    },
}  # fmt: skip
QUICK_LM_TOKENS = 3_000  # the char LSTM's training characters under ``--quick``


def study_setting(name: str, lm_train_chars: int | None) -> tuple[AlraoSetting, str | None]:
    """``ALRAO_SETTINGS[name]`` for one study, with a language model's text cut to ``lm_train_chars``
    (``None``: the setting's own), and why it cannot run here (:func:`unprepared_reason`; ``None``: it can)."""
    setting = ALRAO_SETTINGS[name]
    if setting.task == "language_model" and lm_train_chars is not None:
        setting = dataclasses.replace(setting, max_train_tokens=lm_train_chars)
    return setting, unprepared_reason(setting)


def unprepared_reason(setting: AlraoSetting) -> str | None:
    """Why ``setting`` cannot run here (its public dataset is not prepared), or ``None``."""
    if not setting.requires_prepared:
        return None
    from randlr_jax import data

    try:
        data.get_builder(setting.dataset)
    except data.DatasetNotPreparedError as error:
        return f"{setting.dataset} is not prepared: {' '.join(str(error).split())}"
    return None


def alrao_train_config(
    setting: AlraoSetting,
    seed: int,
    *,
    epochs: int,
    early_stopping: bool = True,
    mesh: Any = None,
    progress: bool = True,
    description: str = "",
) -> Any:
    """The :class:`randlr_jax.runner.TrainConfig` of ``setting`` (its optimizer still the default).

    ``early_stopping``: with the setting's patience (else none: every epoch runs). ``mesh`` (a
    ``distributed.MeshSpec`` from the ``--mesh`` flag): the devices every run is data parallel over
    (and the Alrao copies' model-parallel axis); ``None``: all devices.
    """
    from randlr_jax.runner import TrainConfig
    from randlr_jax.training import LoopConfig

    loop = LoopConfig(
        epochs=epochs,
        batch_size=setting.batch_size,
        patience=setting.patience if early_stopping else None,
        seed=seed,
        seq_len=setting.seq_len,
        eval_streams=10,
        num_devices=None if mesh is None else mesh.num_devices,
        copy_shards=1 if mesh is None else mesh.copies,
        progress=progress,
        description=description,
        test_every_epoch=True,  # the studies' figures plot per-epoch test curves
    )
    return TrainConfig(
        dataset=setting.dataset,
        model=setting.model,
        model_kwargs=dict(setting.model_kwargs),
        validation_size=setting.validation_size,
        loop=loop,
    )


def with_alrao(
    config: Any,
    setting: AlraoSetting,
    *,
    optimizer: str = "alrao_sgd",
    lr_min: float | None = None,
    lr_max: float | None = None,
    num_copies: int | None = None,
    **extra: Any,
) -> Any:
    """``config`` trained with Alrao (``optimizer``), the setting's interval and copies unless given;
    ``extra``: more Alrao arguments (``per="weight"``, ``feature_guard=True``, ...)."""
    return config.replace(
        optimizer=optimizer,
        optimizer_kwargs={
            "lr_min": setting.lr_min if lr_min is None else lr_min,
            "lr_max": setting.lr_max if lr_max is None else lr_max,
            "num_copies": setting.num_copies if num_copies is None else num_copies,
            **extra,
        },
    )


def describe(config: Any, text: str) -> Any:
    """``config`` with the progress bar labelled ``text``."""
    return config.replace(loop=dataclasses.replace(config.loop, description=text))


def tested_at_best(summary: Mapping[str, Any], metric: str) -> dict:
    """``{"loss", "accuracy"}`` of a run's (or a population member's) summary, tested at its best
    epoch (``loss``: ``test_<metric>``; ``None`` where the run has none)."""
    return {"loss": summary.get(f"test_{metric}"), "accuracy": summary.get("test_accuracy")}


def best_epoch_result(summary: Mapping[str, Any], metric: str) -> dict:
    """``{"best_epoch", "best_validation_loss", "test": tested_at_best(...)}`` of a run's summary."""
    return {
        "best_epoch": summary["best_epoch"],
        "best_validation_loss": summary.get("best_validation_loss"),
        "test": tested_at_best(summary, metric),
    }


def compare_setting(
    name: str,
    setting: AlraoSetting,
    seeds: Sequence[int],
    workdir: str,
    *,
    epochs: int,
    mesh: Any = None,
) -> dict:
    """Alrao's Table 1 protocol on ``setting``: per seed the SGD grid (one vmapped population), Adam
    and Alrao-SGD, each tested at its best validation epoch; then one SGD rate for every seed (the
    lowest mean best validation loss, :func:`randlr_jax.runner.best_over_seeds`) and mean ± std over
    the seeds; the Fig. 2 figure of seed ``seeds[0]``. Each run resumes from its own directory,
    ``<workdir>/<name>/seed<s>/{sgd_grid,adam,alrao_sgd}``.

    Returns:
      ``{"setting", "metric", "seeds", "epochs", "rows": {"sgd_best", "adam", "alrao_sgd"},
      "sgd_grid": [one row per rate], "per_seed": [...], "figure"}`` (what ``results.json`` holds).
    """
    import optax

    from randlr_jax import runner
    from randlr_jax.training import member_history, save_figure

    metric = setting.metric
    cut = setting.max_train_tokens
    per_seed, curves = [], {}
    adam_label, alrao_label = "Adam 1e-3", f"Alrao-SGD [{setting.lr_min:g}, {setting.lr_max:g}]"
    for seed in seeds:
        base = alrao_train_config(setting, seed, epochs=epochs, mesh=mesh)
        root = os.path.join(workdir, name, f"seed{seed}")
        label = f"{name} s{seed}"
        grid = runner.train_and_evaluate_population(
            describe(base, f"{label} SGD grid"), os.path.join(root, "sgd_grid"), SGD_GRID,
            max_train_tokens=cut,
        )  # fmt: skip
        adam = runner.train_and_evaluate(
            describe(base, f"{label} Adam"), os.path.join(root, "adam"), tx=optax.adam(ADAM_LR),
            run_info={"optimizer": "adam", "learning_rate": ADAM_LR}, max_train_tokens=cut,
        )  # fmt: skip
        alrao = runner.train_and_evaluate(
            with_alrao(describe(base, f"{label} Alrao"), setting),
            os.path.join(root, "alrao_sgd"),
            max_train_tokens=cut,
        )
        per_seed.append(
            {
                "seed": seed,
                "sgd": [
                    {
                        "learning_rate": m["learning_rate"],
                        "best_validation_loss": m.get("best_validation_loss"),
                        "best_epoch": m["best_epoch"],
                        "test": tested_at_best(m, metric),
                    }
                    for m in grid.members
                ],
                "sgd_wall_time_s": grid.summary["wall_time_s"],
                "adam": best_epoch_result(adam.summary, metric),
                "alrao_sgd": best_epoch_result(alrao.summary, metric),
            }
        )
        if seed == seeds[0]:
            curves = {
                f"SGD {lr:g}": member_history(grid.history, k) for k, lr in enumerate(SGD_GRID)
            }
            curves[adam_label] = adam.history
            curves[alrao_label] = alrao.history
    best = runner.best_over_seeds([[m["best_validation_loss"] for m in s["sgd"]] for s in per_seed])

    def aggregate(tests: list[dict]) -> dict:
        return {
            "loss": runner.mean_std([t["loss"] for t in tests]),
            "accuracy": runner.mean_std([t["accuracy"] for t in tests]),
        }

    def finite(value: Any) -> float:  # a diverged rate's validation loss counts as inf
        value = math.inf if value is None else float(value)
        return value if math.isfinite(value) else math.inf

    rows = {
        "sgd_best": {
            "learning_rate": SGD_GRID[best],
            **aggregate([s["sgd"][best]["test"] for s in per_seed]),
        },
        "adam": aggregate([s["adam"]["test"] for s in per_seed]),
        "alrao_sgd": aggregate([s["alrao_sgd"]["test"] for s in per_seed]),
    }
    grid_rows = [
        {
            "learning_rate": lr,
            "validation_loss": runner.mean_std(
                [finite(s["sgd"][k]["best_validation_loss"]) for s in per_seed]
            ),
            **aggregate([s["sgd"][k]["test"] for s in per_seed]),
        }
        for k, lr in enumerate(SGD_GRID)
    ]
    fig = curves_figure(
        curves,
        title=f"{name}: SGD grid, Adam, Alrao-SGD (seed {seeds[0]})",
        task=setting.task,
        styles={
            alrao_label: {"lw": 2.5, "color": "k"},
            adam_label: {"lw": 2.0, "ls": "--", "color": "tab:red"},
        },
    )
    figure = save_figure(fig, os.path.join(workdir, f"learning_curves_{name}.png"))
    return {
        "setting": dataclasses.asdict(setting),
        "metric": metric,
        "seeds": list(seeds),
        "epochs": epochs,
        "rows": rows,
        "sgd_grid": grid_rows,
        "per_seed": per_seed,
        "figure": figure,
    }


def finite_or_nan(values: Sequence[Any]) -> list[float]:
    """Floats for a plot: ``None`` and non-finite values as NaN (a gap in the line)."""
    return [math.nan if v is None or not math.isfinite(float(v)) else float(v) for v in values]


def curves_figure(
    curves: Mapping[str, Sequence[dict]],
    *,
    title: str,
    task: str = "classification",
    styles: Mapping[str, dict] | None = None,
) -> Any:
    """Fig. 2 analogue: train loss (left) and test loss (right) per epoch, one line per run.

    ``curves``: label -> a run's history (``fit``'s records, or a population member's); a language
    model's losses are drawn in bits per character. ``styles``: label -> matplotlib line keywords.
    Returns the figure (:func:`randlr_jax.training.new_figure`; write it with ``save_figure``).
    """
    from randlr_jax.training import new_figure

    fig = new_figure(figsize=(11, 4.2))
    axes = fig.subplots(1, 2)
    language_model = task == "language_model"
    key = "bits_per_char" if language_model else "loss"
    for label, history in curves.items():
        if not history:
            continue
        epochs = [r["epoch"] for r in history]
        train = finite_or_nan([r.get("train_loss") for r in history])
        if language_model:
            train = [v / math.log(2.0) for v in train]
        style = dict((styles or {}).get(label, {}))
        axes[0].plot(epochs, train, label=label, **style)
        axes[1].plot(epochs, finite_or_nan([r.get(f"test_{key}") for r in history]), label=label,
                     **style)  # fmt: skip
    ylabel = "bits per character" if language_model else "cross-entropy loss"
    for ax, split in zip(axes, ("train", "test"), strict=True):
        ax.set_xlabel("epoch")
        ax.set_ylabel(f"{split} {ylabel}")
        ax.set_yscale("log")
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=8, loc="upper right")
    fig.suptitle(title)
    return fig


# ----------------------------------------------------------------------------------------------
# The tuning-free methods: ours, Optax's learning-rate-free optimizers and the tuned baselines, each
# at its authors' defaults (``leaderboard`` and ``alrao_model_selection``)

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
      "train_steps", "wall_time_s"}`` (``train_steps``: every member's).
    """
    import optax

    from randlr_jax import alrao, runner
    from randlr_jax.runner._runner import build_alrao

    path = os.path.join(workdir, "row.json")
    if os.path.exists(path):
        with open(path) as f:
            return json.load(f)
    method = TUNING_FREE_METHODS[name]
    cut = setting.max_train_tokens
    base = alrao_train_config(setting, seed, epochs=epochs, early_stopping=False, progress=progress)
    base = base.replace(
        loop=dataclasses.replace(base.loop, test_every_epoch=False, description=description or name)
    )
    per_epoch = steps_per_epoch(base, max_train_tokens=cut)
    planned = epochs * per_epoch
    started = time.perf_counter()
    row: dict[str, Any] = {"method": name, "seed": seed}
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
