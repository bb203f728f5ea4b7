"""What the Alrao scripts share: the paper's settings on data that runs anywhere, and one way to run them.

Blier, Wolinski, Ollivier, *Learning with Random Learning Rates* (2019). Used by ``alrao_compare``,
``alrao_appendix``, ``alrao_feature_guard``, ``alrao_interval``, ``alrao_posterior`` and ``demo``: the
models of the Table 1 analogue (:data:`ALRAO_SETTINGS`), the :class:`randlr_jax.runner.TrainConfig` of a
setting (:func:`alrao_train_config`, :func:`with_alrao`), the Table 1 protocol on one setting
(:func:`compare_setting`: the SGD grid as one vmapped population, Adam and Alrao-SGD per seed, the rate
chosen on validation, mean ± std over seeds) and its Fig. 2 figure (:func:`curves_figure`). The training
itself is the library's (:mod:`randlr_jax.runner`); this module only says what to train.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

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
      max_train_tokens: language models: read only this many training characters (CPU budget);
        validation and test are cut to a tenth of it (:func:`randlr_jax.runner.load_splits`).
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

    @property
    def task(self) -> str:
        return "language_model" if self.model == "char_lstm" else "classification"

    @property
    def metric(self) -> str:
        """The loss the tables report: cross-entropy (nats), or bits per character."""
        return "bits_per_char" if self.task == "language_model" else "loss"


ALRAO_SETTINGS: dict[str, AlraoSetting] = {
    "mnist1d_mlp": AlraoSetting("mnist1d", "mlp", {"widths": (100, 100)}),
    "mnist1d_cnn": AlraoSetting("mnist1d", "cnn1d"),
    "digits_mlp": AlraoSetting("digits", "mlp", {"widths": (100, 100)}, validation_size=180),
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
        seq_len=70,
        eval_streams=10,
        num_devices=None if mesh is None else mesh.num_devices,
        copy_shards=1 if mesh is None else mesh.copies,
        progress=progress,
        description=description,
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
