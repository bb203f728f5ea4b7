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
