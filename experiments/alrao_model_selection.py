"""Model selection with one run of Alrao: does it rank architectures as tuned SGD does?

Blier, Wolinski, Ollivier, *Learning with Random Learning Rates* (2019,
https://arxiv.org/abs/1810.01322), state Alrao's purpose in their abstract and introduction: "a range
of models could be quickly assessed with Alrao, and the most promising models could then be trained
more extensively". The paper never measures it. This study does: it ranks architectures by one run of
Alrao-SGD (and of a few one-run learning-rate-free peers of ``optax.contrib``) and compares the ranking
with the ground truth of tuned SGD.

**Protocol.** Every architecture of :data:`ARCHITECTURES` on every dataset of ``Config.datasets``
(both embedded: no network) trains for a fixed number of epochs (default 12 on MNIST-1D, 20 on
digits), no early stopping, batch 32, and is tested at its best validation epoch
(``_tuning_free.tuning_free_run``). The 12 architectures: a linear classifier, MLPs (ReLU) of 1 to 6 hidden
layers and 32 to 512 units (``mlp_<depth>x<width>``), and the MNIST-1D CNN at half, once and twice its
25 channels (``cnn1d_x<multiplier>``). The zoo's ``cnn1d`` takes signals, not digits' ``8 x 8``
images: on digits the same network reads the image flattened row by row, a 64-sample signal
(:class:`FlatCNN1D`). The strategies:

- *Tuned SGD* (the ground truth): SGD at every rate of ``_common.SGD_GRID`` (``1e-5 ... 10``, one
  vmapped population) for every seed of ``Config.seeds``; the rate chosen is the one with the lowest
  mean over the seeds of the best validation loss (``runner.best_over_seeds``); the architecture's
  score is that mean, its test loss the mean test loss at that rate.
- *Alrao-SGD* and every peer of ``Config.peers``: one run each, seed ``Config.assessment_seed``; the
  score is the run's best validation loss (a diverged run scores ``+inf``).

Scores are validation losses (cross-entropy, nats); test losses are reported beside them.

**Numbers reported** (per dataset, for a strategy with scores ``s_a`` against the ground truth ``g_a``
over the ``n`` architectures ``a`` of the dataset; then averaged over the datasets, a correlation left
out where it is undefined):

- ``spearman``: Spearman's ``rho`` of ``s`` and ``g`` (the Pearson correlation of their ranks; without
  ties ``rho = 1 - 6 sum_a (r_s(a) - r_g(a))^2 / (n (n^2 - 1))``).
- ``kendall``: Kendall's ``tau-b`` (``scipy.stats.kendalltau``): with ``C`` concordant and ``D``
  discordant pairs, ``T_s`` pairs tied in ``s`` only and ``T_g`` tied in ``g`` only,
  ``tau_b = (C - D) / sqrt((C + D + T_s) (C + D + T_g))``.
- ``top1_match``: the strategy's pick ``p = argmin_a s_a`` (the first in the list on ties) is the
  ground truth's best ``b = argmin_a g_a``; averaged over datasets it is the fraction of datasets.
- ``top3_match``: ``b`` is among the strategy's 3 lowest-scoring architectures (fraction of datasets).
- ``regret``: ``g_p - g_b`` (the tuned loss given up by training the strategy's pick instead of the
  best architecture), in nats, averaged over datasets.
- ``train_steps``: the optimizer steps the strategy spends, summed over architectures and datasets:
  one run per architecture for a one-run method; every member of every seed's grid for tuned SGD
  (``len(SGD_GRID) * len(seeds)`` runs per architecture).
- ``compute_ratio``: tuned SGD's ``train_steps`` over the strategy's (over all datasets).

**Assess, then fine-tune the winner.** For each dataset the architecture Alrao ranks first is trained
once more with plain SGD at the Alrao run's ``suggest_lr`` (the posterior-weighted rate of
:func:`randlr_jax.alrao.suggest_lr`), same epochs, seed ``assessment_seed``, tested at its best
validation epoch; ``finetune`` sets it beside that architecture's tuned SGD (rate, losses and steps)
and counts the steps of the whole Alrao pipeline (every assessment run plus the fine-tune).

Every run trains in its own directory, ``<workdir>/<dataset>/<architecture>/seed<s>/<method>``
(``sgd_grid``, ``alrao_sgd``, the peers, ``sgd_suggest``), and its row is kept there (``row.json``):
interrupt the study and run it again, it resumes. Writes ``results.json``, ``table.md`` (one line per
strategy), ``architectures.md`` (one line per architecture), ``finetune.md`` and
``model_selection.png`` (per dataset, Alrao's score against tuned SGD's).

Commands (from the repository root)::

    .venv/bin/python -m experiments.alrao_model_selection --workdir runs/alrao_model_selection
    .venv/bin/python -m experiments.alrao_model_selection --workdir runs/alrao_model_selection_quick --quick

Expected result of the first (1530.7 s on 2 CPU cores, shared with other work), averaged over the two
datasets: one Alrao-SGD run per architecture ranks the 12 architectures with Spearman 0.804 and
Kendall 0.682 against tuned SGD (MNIST-1D 0.930 and 0.848, digits 0.678 and 0.515), picks tuned SGD's
best on MNIST-1D (cnn1d_x2) but not on digits (mlp_4x256: regret 0.022 nats; 0.011 averaged), for
25,488 steps against tuned SGD's 535,248 (a compute ratio of 21.0). The peers do as well or better
at the same cost: COCOB ranks closer (Spearman 0.906, Kendall 0.788), Prodigy picks the best on
both datasets (regret 0.000). Fine-tuning Alrao's MNIST-1D pick with SGD at its suggest_lr (0.0996)
reaches validation loss 0.394 (test 0.373) in 1,344 steps, where that architecture's tuned grid
spends 28,224 for 0.427 (0.424); the whole assess-then-fine-tune pipeline costs 17,472 steps.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import time
from collections.abc import Mapping, Sequence
from typing import Any

import flax.linen as nn

from experiments import _common, _tuning_free
from experiments._common import SGD_GRID
from experiments._tuning_free import TUNING_FREE_METHODS
from randlr_jax.models import CNN1D, Classifier


@dataclasses.dataclass(frozen=True)
class Architecture:
    """One candidate model: a zoo model (``randlr_jax.models``) and its body's keywords."""

    model: str
    model_kwargs: dict
    family: str  # "linear", "mlp" or "cnn1d": the figure's colours


def _mlp(*widths: int) -> Architecture:
    return Architecture("mlp", {"widths": tuple(widths)}, "linear" if not widths else "mlp")


def _cnn(width_multiplier: float) -> Architecture:
    return Architecture("cnn1d", {"width_multiplier": width_multiplier}, "cnn1d")


ARCHITECTURES: dict[str, Architecture] = {
    "linear": _mlp(),  # multinomial logistic regression
    "mlp_1x64": _mlp(64),
    "mlp_1x512": _mlp(512),
    "mlp_2x32": _mlp(32, 32),
    "mlp_2x128": _mlp(128, 128),
    "mlp_2x512": _mlp(512, 512),
    "mlp_3x64": _mlp(64, 64, 64),
    "mlp_4x256": _mlp(256, 256, 256, 256),
    "mlp_6x32": _mlp(*(32,) * 6),
    "cnn1d_x0.5": _cnn(0.5),
    "cnn1d_x1": _cnn(1.0),
    "cnn1d_x2": _cnn(2.0),
}


@dataclasses.dataclass(frozen=True)
class Dataset:
    """An embedded dataset of the study: its validation split and epoch budgets.

    ``images``: its inputs are images (digits: ``(8, 8, 1)``), which the zoo's ``cnn1d`` (signals
    ``(B, L)`` or ``(B, L, C)``) does not take: there the CNN architectures are
    :data:`FLAT_CNN1D`, the same network reading the image flattened row by row (64 samples)."""

    validation_size: int
    epochs: int  # the default budget
    quick_epochs: int = 2
    images: bool = False


DATASETS: dict[str, Dataset] = {
    # 3,600 training examples: 112 steps an epoch (batch 32, the last partial batch dropped).
    "mnist1d": Dataset(validation_size=400, epochs=12),
    # 1,257 training examples: 39 steps an epoch.
    "digits": Dataset(validation_size=180, epochs=20, images=True),
}
FLAT_CNN1D = "cnn1d_flat"  # registered in randlr_jax.models.MODELS by register_flat_cnn1d()


class FlatCNN1D(nn.Module):
    """``CNN1D`` on ``x`` flattened to ``(B, prod(x.shape[1:]))``: one channel, an image's rows end to
    end (on a ``(B, L)`` signal it is ``CNN1D`` itself)."""

    channels: int = 25
    width_multiplier: float = 1.0

    @nn.compact
    def __call__(self, x, *, train: bool = False):
        x = x.reshape((x.shape[0], -1))
        return CNN1D(self.channels, self.width_multiplier, name="cnn")(x, train=train)


def _make_flat_cnn1d(*, num_classes: int | None = None, head: Any = None, **kwargs: Any) -> Any:
    """A zoo ``Classifier``: a :class:`FlatCNN1D` body and ``head`` (default ``Dense(num_classes)``)."""
    if head is None:
        if num_classes is None:
            raise ValueError("num_classes is required unless a head is given.")
        head = nn.Dense(num_classes)
    return Classifier(body=FlatCNN1D(**kwargs), head=head)


def register_flat_cnn1d() -> None:
    """Add :data:`FLAT_CNN1D` to the model zoo (``MODELS`` is a plain dict open to registration);
    idempotent. Called before any config naming it is built."""
    from randlr_jax import models

    models.MODELS.setdefault(FLAT_CNN1D, _make_flat_cnn1d)


ONE_RUN_PEERS = tuple(
    name for name, m in TUNING_FREE_METHODS.items() if not m.grid and name != "alrao_sgd"
)
GROUND_TRUTH = "tuned_sgd"
ALRAO = "alrao_sgd"
TOP_K = 3


def _default_epochs() -> dict[str, int]:
    return {name: d.epochs for name, d in DATASETS.items()}


@dataclasses.dataclass(frozen=True)
class Config:
    """The study.

    Attributes:
      architectures: names of :data:`ARCHITECTURES` (at least 2, distinct).
      datasets: names of :data:`DATASETS` (distinct).
      seeds: the ground truth's seeds (tuned SGD: the whole grid for each; distinct).
      assessment_seed: the seed of every one-run strategy (Alrao, the peers, the fine-tune).
      epochs: dataset -> epochs of every run on it (one entry for each of ``datasets``).
      peers: one-run methods of ``_tuning_free.TUNING_FREE_METHODS`` ranked beside Alrao.
    """

    architectures: tuple[str, ...] = tuple(ARCHITECTURES)
    datasets: tuple[str, ...] = tuple(DATASETS)
    seeds: tuple[int, ...] = (0, 1, 2)
    assessment_seed: int = 0
    epochs: dict = dataclasses.field(default_factory=_default_epochs)
    peers: tuple[str, ...] = ("cocob", "dog", "prodigy")

    def __post_init__(self):
        def names(field: str, values: Sequence[str], allowed: Sequence[str], least: int) -> None:
            bad = [v for v in values if v not in allowed]
            repeated = sorted({v for v in values if list(values).count(v) > 1})
            if bad or repeated or len(values) < least:
                at_least = f"at least {least} " if least else ""
                raise ValueError(
                    f"{field} must be {at_least}distinct names of {sorted(allowed)}, "
                    f"got {values!r}."
                )

        names("architectures", self.architectures, list(ARCHITECTURES), 2)
        names("datasets", self.datasets, list(DATASETS), 1)
        names("peers", self.peers, ONE_RUN_PEERS, 0)
        if (
            not self.seeds
            or len(set(self.seeds)) != len(self.seeds)
            or any(not isinstance(s, int) or s < 0 for s in self.seeds)
        ):
            raise ValueError(f"seeds must be distinct integers >= 0, got {self.seeds!r}.")
        if not isinstance(self.assessment_seed, int) or self.assessment_seed < 0:
            raise ValueError(
                f"assessment_seed must be an integer >= 0, got {self.assessment_seed!r}."
            )
        missing = [d for d in self.datasets if d not in self.epochs]
        bad = {d: e for d, e in self.epochs.items() if not isinstance(e, int) or e < 1}
        if missing or bad:
            raise ValueError(
                f"epochs must give an integer >= 1 for every dataset of {list(self.datasets)}, got "
                f"{self.epochs!r}."
            )

    def epochs_of(self, dataset: str) -> int:
        return self.epochs[dataset]


DEFAULT = Config()
CONFIGS: dict[str, Config] = {
    "default": DEFAULT,
    "mnist1d": dataclasses.replace(DEFAULT, datasets=("mnist1d",)),
    "digits": dataclasses.replace(DEFAULT, datasets=("digits",)),
}
QUICK_ARCHITECTURES = ("linear", "mlp_2x128", "mlp_6x32", "cnn1d_x0.5")


def quick(config: Config) -> Config:
    """Four architectures (a linear model, two MLPs, the half-width CNN), one seed, the first peer,
    each dataset's smoke-test epochs: the same code path in under 3 minutes."""
    kept = tuple(a for a in config.architectures if a in QUICK_ARCHITECTURES)
    return dataclasses.replace(
        config,
        architectures=kept if len(kept) >= 2 else config.architectures[:4],
        seeds=config.seeds[:1],
        peers=config.peers[:1],
        epochs={d: DATASETS[d].quick_epochs for d in DATASETS},
    )


# ----------------------------------------------------------------------------------------------
# The metrics of a ranking


def _score(value: Any) -> float:
    """A loss as a ranking score: ``None`` or non-finite (a diverged run) is ``+inf``."""
    if value is None:
        return math.inf
    value = float(value)
    return value if math.isfinite(value) else math.inf


def _defined(value: float) -> float | None:
    """A correlation for JSON: ``None`` where undefined (a constant ranking)."""
    value = float(value)
    return value if math.isfinite(value) else None


def spearman(scores: Sequence[float], truth: Sequence[float]) -> float | None:
    """Spearman's rank correlation of ``scores`` and ``truth`` (average ranks on ties; ``+inf``
    ranks last); ``None`` where undefined (fewer than 2 items, or one side constant)."""
    import warnings

    from scipy import stats

    _check_pair(scores, truth)
    if len(scores) < 2:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a constant input: scipy warns and returns nan
        return _defined(stats.spearmanr(_ranks(scores), _ranks(truth)).statistic)


def kendall(scores: Sequence[float], truth: Sequence[float]) -> float | None:
    """Kendall's ``tau-b`` of ``scores`` and ``truth``; ``None`` where undefined."""
    import warnings

    from scipy import stats

    _check_pair(scores, truth)
    if len(scores) < 2:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return _defined(stats.kendalltau(_ranks(scores), _ranks(truth)).statistic)


def _ranks(values: Sequence[float]) -> list[float]:
    """Average ranks (1 = lowest), ``+inf`` last: correlations never see an infinite value."""
    from scipy import stats

    return [float(r) for r in stats.rankdata([_score(v) for v in values])]


def _check_pair(scores: Sequence[float], truth: Sequence[float]) -> None:
    if len(scores) != len(truth):
        raise ValueError(
            f"scores and truth must have one value per architecture, got {len(scores)} and "
            f"{len(truth)}."
        )


def pick(scores: Sequence[float]) -> int:
    """The index of the lowest score (the first on ties)."""
    if not scores:
        raise ValueError("scores must not be empty.")
    values = [_score(v) for v in scores]
    return values.index(min(values))


def top_k(scores: Sequence[float], k: int) -> list[int]:
    """The indices of the ``k`` lowest scores (ties in list order)."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k!r}.")
    values = [_score(v) for v in scores]
    return sorted(range(len(values)), key=lambda i: (values[i], i))[:k]


def top1_match(scores: Sequence[float], truth: Sequence[float]) -> bool:
    """The strategy's pick is the ground truth's best architecture."""
    _check_pair(scores, truth)
    return pick(scores) == pick(truth)


def topk_match(scores: Sequence[float], truth: Sequence[float], k: int = TOP_K) -> bool:
    """The ground truth's best architecture is among the strategy's ``k`` lowest-scoring ones."""
    _check_pair(scores, truth)
    return pick(truth) in top_k(scores, k)


def regret(scores: Sequence[float], truth: Sequence[float]) -> float:
    """``truth[pick(scores)] - min(truth)``: the tuned loss given up by the strategy's pick."""
    _check_pair(scores, truth)
    return _score(truth[pick(scores)]) - _score(truth[pick(truth)])


def compute_ratio(tuned_steps: float, strategy_steps: float) -> float:
    """Tuned SGD's training steps over the strategy's."""
    if strategy_steps <= 0:
        raise ValueError(f"strategy_steps must be > 0, got {strategy_steps!r}.")
    return float(tuned_steps) / float(strategy_steps)


def ranking_metrics(
    scores: Sequence[float], truth: Sequence[float], steps: float, tuned_steps: float
) -> dict:
    """Every number of one strategy on one dataset."""
    return {
        "spearman": spearman(scores, truth),
        "kendall": kendall(scores, truth),
        "top1_match": top1_match(scores, truth),
        "top3_match": topk_match(scores, truth, TOP_K),
        "regret": regret(scores, truth),
        "train_steps": steps,
        "compute_ratio": compute_ratio(tuned_steps, steps),
    }


def average_metrics(per_dataset: Sequence[Mapping[str, Any]]) -> dict:
    """The datasets' metrics combined: correlations, matches (as fractions of datasets) and regret
    averaged (an undefined correlation is left out); steps summed; ``compute_ratio`` of the sums."""

    def mean(key: str) -> float | None:
        values = [float(m[key]) for m in per_dataset if m[key] is not None]
        return sum(values) / len(values) if values else None

    steps = sum(m["train_steps"] for m in per_dataset)
    tuned = sum(m["train_steps"] * m["compute_ratio"] for m in per_dataset)
    return {
        "spearman": mean("spearman"),
        "kendall": mean("kendall"),
        "top1_match": mean("top1_match"),
        "top3_match": mean("top3_match"),
        "regret": mean("regret"),
        "train_steps": steps,
        "compute_ratio": compute_ratio(tuned, steps),
        "datasets": len(per_dataset),
    }


# ----------------------------------------------------------------------------------------------
# The runs


def setting_of(dataset: str, architecture: str, epochs: int) -> _common.AlraoSetting:
    """The ``_common.AlraoSetting`` of one architecture on one dataset (Alrao's interval and copies
    the defaults: ``[1e-5, 10]``, 10 copies; an image dataset's CNN is :data:`FLAT_CNN1D`)."""
    arch = ARCHITECTURES[architecture]
    model = arch.model
    if model == "cnn1d" and DATASETS[dataset].images:
        register_flat_cnn1d()
        model = FLAT_CNN1D
    return _common.AlraoSetting(
        dataset,
        model,
        dict(arch.model_kwargs),
        epochs=epochs,
        validation_size=DATASETS[dataset].validation_size,
    )


def parameter_count(setting: _common.AlraoSetting) -> int:
    """The parameters of the plain model (one classifier head, not Alrao's copies)."""
    import jax

    from randlr_jax import models, runner

    config = _common.alrao_train_config(setting, 0, epochs=1, progress=False)
    splits, spec, _ = runner.load_splits(config)
    model = runner.build_model(config, spec)
    variables = jax.eval_shape(model.init, jax.random.key(0), splits["train"]["x"][:1])
    return models.count_params(variables["params"])


def tuned_sgd(grid_rows: Sequence[Mapping[str, Any]]) -> dict:
    """The ground truth of one architecture from its grid rows (one per seed): the rate with the
    lowest mean best validation loss, that mean, the mean test loss at that rate, and the steps of
    every member of every seed."""
    from randlr_jax import runner

    best = runner.best_over_seeds(
        [[m["validation_loss"] for m in row["members"]] for row in grid_rows]
    )
    chosen = [row["members"][best] for row in grid_rows]
    return {
        "learning_rate": SGD_GRID[best],
        "validation_loss": _mean_or_none([m["validation_loss"] for m in chosen]),
        "loss": _mean_or_none([m["loss"] for m in chosen]),
        "accuracy": _mean_or_none([m["accuracy"] for m in chosen]),
        "train_steps": sum(row["train_steps"] for row in grid_rows),
        "runs": sum(len(row["members"]) for row in grid_rows),
        "per_rate_validation_loss": [
            _mean_or_none([row["members"][k]["validation_loss"] for row in grid_rows])
            for k in range(len(SGD_GRID))
        ],
    }


def _mean_or_none(values: Sequence[Any]) -> float | None:
    """The mean, or ``None`` if a value is missing or not finite (a diverged run)."""
    scores = [_score(v) for v in values]
    return None if math.inf in scores else sum(scores) / len(scores)


def _one_run(row: Mapping[str, Any]) -> dict:
    return {
        "validation_loss": row["validation_loss"],  # None: diverged (scores +inf)
        "loss": row["loss"],
        "accuracy": row["accuracy"],
        "diverged": row["diverged"],
        "best_epoch": row["best_epoch"],
        "train_steps": row["train_steps"],
    }


def finetune_at_suggested_rate(
    setting: _common.AlraoSetting, seed: int, epochs: int, learning_rate: float, workdir: str
) -> dict:
    """Plain SGD at ``learning_rate`` for ``epochs`` (no early stopping), tested at its best
    validation epoch; resumable (its row is ``workdir/row.json``)."""
    import optax

    from randlr_jax import runner

    path = os.path.join(workdir, "row.json")
    ran = {
        **_tuning_free.run_description("sgd_suggest", setting, seed, epochs),
        "lr": learning_rate,
    }
    if os.path.exists(path):
        with open(path) as f:
            row = json.load(f)
        _tuning_free.check_row(path, row, ran)  # a row of other settings is refused
        return row
    base = _common.alrao_train_config(setting, seed, epochs=epochs, early_stopping=False,
                                      progress=False)  # fmt: skip
    base = base.replace(
        loop=dataclasses.replace(base.loop, test_every_epoch=False, description="sgd_suggest")
    )
    planned = epochs * _tuning_free.steps_per_epoch(base)
    started = time.perf_counter()
    result = runner.train_and_evaluate(
        base,
        workdir,
        tx=optax.sgd(learning_rate),
        run_info={"optimizer": "sgd", "learning_rate": learning_rate, "from": "alrao suggest_lr"},
    )
    row = {
        "method": "sgd_suggest",
        "seed": seed,
        "ran": ran,
        "learning_rate": learning_rate,
        **_tuning_free._tested(result.summary, setting.metric, planned),
        "train_steps": planned,
        "wall_time_s": time.perf_counter() - started,
    }
    _common.write_json(path, row)
    return row


def run_dataset(config: Config, dataset: str, workdir: str) -> dict:
    """Every run of one dataset, then its rankings, metrics and fine-tune."""
    epochs = config.epochs_of(dataset)
    strategies = (ALRAO, *config.peers)
    rows = []
    for name in config.architectures:
        started = time.perf_counter()
        setting = setting_of(dataset, name, epochs)
        root = os.path.join(workdir, dataset, name)
        grid = [
            _tuning_free.tuning_free_run(
                "sgd_grid",
                setting,
                seed,
                os.path.join(root, f"seed{seed}", "sgd_grid"),
                epochs=epochs,
            )  # fmt: skip
            for seed in config.seeds
        ]
        seed_dir = os.path.join(root, f"seed{config.assessment_seed}")
        one_runs = {
            method: _tuning_free.tuning_free_run(
                method,
                setting,
                config.assessment_seed,
                os.path.join(seed_dir, method),
                epochs=epochs,
            )  # fmt: skip
            for method in strategies
        }
        arch = ARCHITECTURES[name]
        rows.append(
            {
                "name": name,
                "dataset": dataset,
                "family": arch.family,
                "model": setting.model,
                "model_kwargs": arch.model_kwargs,
                "parameters": parameter_count(setting),
                "epochs": epochs,
                "scores": {
                    GROUND_TRUTH: tuned_sgd(grid),
                    **{m: _one_run(r) for m, r in one_runs.items()},
                },
                "suggest_lr": one_runs[ALRAO]["info"]["suggest_lr"],
            }
        )
        print(f"{dataset}/{name}: done ({time.perf_counter() - started:.1f} s)", flush=True)
    truth = [r["scores"][GROUND_TRUTH]["validation_loss"] for r in rows]
    tuned_steps = sum(r["scores"][GROUND_TRUTH]["train_steps"] for r in rows)
    metrics = {}
    for method in (GROUND_TRUTH, *strategies):
        scores = [r["scores"][method]["validation_loss"] for r in rows]
        steps = sum(r["scores"][method]["train_steps"] for r in rows)
        metrics[method] = ranking_metrics(scores, truth, steps, tuned_steps)
    alrao_scores = [r["scores"][ALRAO]["validation_loss"] for r in rows]
    for method in (GROUND_TRUTH, *strategies):
        scores = [r["scores"][method]["validation_loss"] for r in rows]
        for row, rank in zip(rows, _ranks(scores), strict=True):
            row["scores"][method]["rank"] = rank
    winner = rows[pick(alrao_scores)]
    setting = setting_of(dataset, winner["name"], epochs)
    sgd = finetune_at_suggested_rate(
        setting,
        config.assessment_seed,
        epochs,
        winner["suggest_lr"],
        os.path.join(workdir, dataset, winner["name"], f"seed{config.assessment_seed}",
                     "sgd_suggest"),
    )  # fmt: skip
    tuned = winner["scores"][GROUND_TRUTH]
    assessment_steps = metrics[ALRAO]["train_steps"]
    finetune = {
        "dataset": dataset,
        "architecture": winner["name"],
        "is_tuned_best": winner["name"] == rows[pick(truth)]["name"],
        "suggest_lr": winner["suggest_lr"],
        "sgd_at_suggest_lr": {
            "validation_loss": sgd["validation_loss"],
            "loss": sgd["loss"],
            "accuracy": sgd["accuracy"],
            "diverged": sgd["diverged"],
            "train_steps": sgd["train_steps"],
        },
        "tuned_sgd": {
            k: tuned[k]
            for k in ("learning_rate", "validation_loss", "loss", "accuracy", "train_steps")
        },  # fmt: skip
        "alrao": {k: winner["scores"][ALRAO][k] for k in ("validation_loss", "loss", "accuracy")},
        # The whole pipeline: every architecture's Alrao run, then the winner's SGD run.
        "pipeline_train_steps": assessment_steps + sgd["train_steps"],
        "tuned_grid_train_steps": tuned["train_steps"],
        "tuned_all_architectures_train_steps": tuned_steps,
    }
    return {"rows": rows, "metrics": metrics, "finetune": finetune}


# ----------------------------------------------------------------------------------------------
# Reports


def figure(results: Mapping[str, Any], path: str) -> str:
    """Per dataset, Alrao's score (y) against tuned SGD's (x) for every architecture."""
    from randlr_jax.training import new_figure, save_figure

    datasets = list(results["per_dataset"])
    fig = new_figure(figsize=(5.4 * len(datasets), 4.8))
    axes = fig.subplots(1, len(datasets), squeeze=False)[0]
    colours = {"linear": "tab:gray", "mlp": "tab:blue", "cnn1d": "tab:orange"}
    for ax, dataset in zip(axes, datasets, strict=True):
        rows = [r for r in results["architectures"] if r["dataset"] == dataset]
        xs = [_score(r["scores"][GROUND_TRUTH]["validation_loss"]) for r in rows]
        ys = [_score(r["scores"][ALRAO]["validation_loss"]) for r in rows]
        finite = [v for v in xs + ys if math.isfinite(v)]
        for family, colour in colours.items():
            points = [(x, y) for r, x, y in zip(rows, xs, ys, strict=True)
                      if r["family"] == family and math.isfinite(x) and math.isfinite(y)]  # fmt: skip
            if points:
                ax.scatter(*zip(*points, strict=True), color=colour, label=family, s=36, zorder=3)
        best = pick(xs)
        if math.isfinite(ys[best]):
            ax.scatter([xs[best]], [ys[best]], s=160, facecolors="none", edgecolors="k", zorder=4,
                       label="tuned SGD's best")  # fmt: skip
        for r, x, y in zip(rows, xs, ys, strict=True):
            if math.isfinite(x) and math.isfinite(y):
                ax.annotate(r["name"], (x, y), fontsize=7, xytext=(3, 3),
                            textcoords="offset points")  # fmt: skip
        if finite:
            low, high = min(finite), max(finite)
            ax.plot([low, high], [low, high], color="k", lw=0.8, ls=":", label="y = x")
        m = results["per_dataset"][dataset][ALRAO]
        ax.set_title(
            f"{dataset}: Spearman {_num(m['spearman'], 2)}, Kendall {_num(m['kendall'], 2)}",
            fontsize=10,
        )
        ax.set_xlabel("tuned SGD: best validation loss (mean over seeds)")
        ax.set_ylabel("Alrao-SGD, one run: best validation loss")
        if finite:
            _log_axes(ax, min(finite), max(finite))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="upper left")
    fig.suptitle("Ranking architectures with one Alrao run vs tuned SGD")
    return save_figure(fig, path)


def _log_axes(ax: Any, low: float, high: float) -> None:
    """Both axes logarithmic over ``[low, high]`` with 5 plainly labelled ticks (no minor ticks)."""
    ticks = [low * (high / low) ** (i / 4) for i in range(5)] if high > low else [low]
    labels = [f"{t:.3g}" for t in ticks]
    for axis in ("x", "y"):
        getattr(ax, f"set_{axis}scale")("log")
        getattr(ax, f"set_{axis}ticks")(ticks, labels=labels)
    ax.minorticks_off()


def _num(value: Any, digits: int = 3) -> str:
    if value is None or not math.isfinite(float(value)):
        return "n/a"
    return f"{float(value):.{digits}f}"


def _label(method: str) -> str:
    if method == GROUND_TRUTH:
        return "SGD, tuned (ground truth)"
    return TUNING_FREE_METHODS[method].label


def table(results: Mapping[str, Any]) -> str:
    """One line per strategy: its ranking's agreement with tuned SGD, averaged over the datasets,
    and the training steps it spends."""
    datasets = len(results["per_dataset"])
    lines = [
        f"| strategy | runs per architecture | Spearman | Kendall tau-b | top-1 (of {datasets}) "
        f"| top-3 (of {datasets}) | regret (nats) | training steps | compute ratio |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    runs = len(SGD_GRID) * len(results["config"]["seeds"])
    for method, m in results["strategies"].items():
        lines.append(
            f"| {_label(method)} | {runs if method == GROUND_TRUTH else 1} | "
            f"{_num(m['spearman'])} | {_num(m['kendall'])} | "
            f"{round(m['top1_match'] * datasets)} | {round(m['top3_match'] * datasets)} | "
            f"{_num(m['regret'])} | {m['train_steps']:,} | {m['compute_ratio']:.1f} |"
        )
    return "\n".join(lines)


def architectures_table(results: Mapping[str, Any]) -> str:
    """One line per architecture and dataset: every strategy's validation loss and its rank; test
    losses of tuned SGD and Alrao."""
    methods = list(results["strategies"])
    head = (
        "| dataset | architecture | parameters | SGD rate | "
        + " | ".join(f"{_label(m)} val (rank)" for m in methods)
        + " | tuned SGD test | Alrao test |"
    )
    lines = [head, "|---|---|---:|---:|" + "---:|" * (len(methods) + 2)]
    for r in results["architectures"]:
        s = r["scores"]
        cells = [f"{_num(s[m]['validation_loss'])} ({s[m]['rank']:g})" for m in methods]
        lines.append(
            f"| {r['dataset']} | {r['name']} | {r['parameters']:,} | "
            f"{s[GROUND_TRUTH]['learning_rate']:g} | "
            + " | ".join(cells)
            + f" | {_num(s[GROUND_TRUTH]['loss'])} | {_num(s[ALRAO]['loss'])} |"
        )
    return "\n".join(lines)


def finetune_table(results: Mapping[str, Any]) -> str:
    """Per dataset: Alrao's pick trained with SGD at ``suggest_lr`` against its tuned grid."""
    lines = [
        "| dataset | Alrao's pick | tuned best? | suggest_lr | SGD at suggest_lr: val / test "
        "| steps | tuned SGD rate | tuned SGD: val / test | steps | Alrao pipeline steps |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for f in results["finetune"].values():
        sgd, tuned = f["sgd_at_suggest_lr"], f["tuned_sgd"]
        lines.append(
            f"| {f['dataset']} | {f['architecture']} | {'yes' if f['is_tuned_best'] else 'no'} | "
            f"{f['suggest_lr']:.3g} | {_num(sgd['validation_loss'])} / {_num(sgd['loss'])} | "
            f"{sgd['train_steps']:,} | {tuned['learning_rate']:g} | "
            f"{_num(tuned['validation_loss'])} / {_num(tuned['loss'])} | "
            f"{tuned['train_steps']:,} | {f['pipeline_train_steps']:,} |"
        )
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------
# The command line


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    _common.add_config_arguments(parser, CONFIGS, workdir="runs/alrao_model_selection")
    parser.add_argument("--architectures", nargs="+", choices=list(ARCHITECTURES))
    parser.add_argument("--datasets", nargs="+", choices=list(DATASETS))
    parser.add_argument(
        "--seeds", nargs="+", type=_common.nonnegative_int, help="tuned SGD's seeds"
    )
    parser.add_argument(
        "--assessment-seed",
        type=_common.nonnegative_int,
        help="the seed of the one-run strategies (default 0)",
    )
    parser.add_argument(
        "--epochs",
        dest="all_epochs",
        type=_common.positive_int,
        help="every dataset's epochs (default: each dataset's own)",
    )
    parser.add_argument("--peers", nargs="+", choices=list(ONE_RUN_PEERS))
    args = parser.parse_args(argv)
    for flag in ("architectures", "datasets", "seeds", "peers"):
        _common.require_distinct(parser, f"--{flag}", getattr(args, flag))
        if getattr(args, flag) is not None:
            setattr(args, flag, tuple(getattr(args, flag)))
    if args.architectures is not None and len(args.architectures) < 2:
        parser.error("argument --architectures: a ranking needs at least 2 architectures")
    config = _common.resolve_config(args, CONFIGS, quick)
    if args.all_epochs is not None:
        config = dataclasses.replace(config, epochs={d: args.all_epochs for d in config.datasets})
    started = time.perf_counter()
    per_dataset = {d: run_dataset(config, d, args.workdir) for d in config.datasets}
    results = summarize(config, per_dataset)
    results["figure"] = figure(results, os.path.join(args.workdir, "model_selection.png"))
    return _common.finish(
        args.workdir,
        results,
        tables={
            "table": table(results),
            "architectures": architectures_table(results),
            "finetune": finetune_table(results),
        },
        figures=[results["figure"]],
        started=started,
    )


# What results.json holds for Alrao (at the top) and for each peer (under ``peers``).
REPORTED = (
    "spearman", "kendall", "top1_match", "top3_match", "regret", "train_steps", "compute_ratio",
)  # fmt: skip


def summarize(config: Config, per_dataset: Mapping[str, Mapping[str, Any]]) -> dict:
    """``results.json`` from the datasets' runs: Alrao's numbers at the top, the peers' under
    ``peers``, every strategy's under ``strategies``, per dataset under ``per_dataset``."""
    methods = (GROUND_TRUTH, ALRAO, *config.peers)
    strategies = {
        m: average_metrics([per_dataset[d]["metrics"][m] for d in per_dataset]) for m in methods
    }
    alrao = strategies[ALRAO]
    return {
        "architectures": [row for d in per_dataset for row in per_dataset[d]["rows"]],
        **{k: alrao[k] for k in REPORTED},
        "peers": {m: {k: strategies[m][k] for k in REPORTED} for m in config.peers},  # fmt: skip
        "strategies": strategies,
        "per_dataset": {d: dict(per_dataset[d]["metrics"]) for d in per_dataset},
        "finetune": {d: per_dataset[d]["finetune"] for d in per_dataset},
        "config": dataclasses.asdict(config),
    }


if __name__ == "__main__":
    main()
