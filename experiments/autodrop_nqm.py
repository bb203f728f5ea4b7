"""AutoDrop on the noisy quadratic model: the AutoDrop paper's Fig. 1, Fig. 3 and Theorem 1.

Teng, Wang, Choromanska, *AutoDrop: Training Deep Learning Models with Automatic Learning Rate Drop*,
2021 (https://arxiv.org/abs/2111.15317), Section 3: on a noisy quadratic model (NQM) the angle between
consecutive gradient-descent steps rises and saturates at a level set by the learning rate, and a rule
that drops the rate when that angle stops moving reaches a low loss faster than any constant rate.

Command (from the repository root)::

    .venv/bin/python -m experiments.autodrop_nqm --workdir runs/autodrop_nqm

The NQM is ``x in R^200``, ``a_i = i / 10``, ``Sigma = A`` (``randlr_jax.autodrop._noisy_quadratic``);
the paper gives no start, we use ``x_0 = 100 * 1`` (far from the noise floor, so that the descent phase
is visible).

- Fig. 1 (``fig1_constant_rates.png``): GD at ``alpha in {0.06, 0.03, 0.01, 0.001}``: the loss
  ``1/2 sum a_i x_i^2`` and the angle between consecutive steps averaged over 20 iterations: it rises
  and saturates, later and lower for smaller rates (towards 90°).
- Fig. 3 (``fig3_autodrop.png``): GD from ``alpha_0 = 0.06`` with the per-iteration rule (AutoDrop with
  ``steps_per_period=1, window=20, drop_delay=0, threshold=max_threshold=0.01°, drop_factor=0.5,
  min_learning_rate=0.001``), against the constant rates 0.06 and 0.001.
- Table ``closed_forms``: simulated ``E<s_t, s_{t+1}>`` and mean cosine at stationarity (chains started
  from the stationary distribution) against the closed forms ``I*`` and ``C*`` (Theorem 1).

Expected (default, 20,000 iterations, 32 chains x 4,000; 80.0 s on 2 heavily loaded CPU cores): the
simulated stationary statistics within 2.43% of the closed forms (``E<s_t,s_t+1>`` -1438.7 against
``I* = -1439.1`` at ``alpha = 0.06``; saturation angles 119.8°, 104.1°, 94.6°, 90.5°); AutoDrop drops at
iterations 47, 108, 152, 227, 256, 290 and its loss at iteration 2,000 is 255.6 against 3,171 at the
constant rate 0.001; both end near the floor of rate 0.001 (mean of the last 1,000 iterations 102.2
and 109.5).

Quick (``--quick``: 600 iterations, 4 chains x 200; seconds; the test suite runs it)::

    .venv/bin/python -m experiments.autodrop_nqm --workdir /tmp/autodrop_nqm_quick --quick

gives the same drops (47, 108, ..., 290) and AutoDrop's mean loss over the last 30 iterations 359.9
against 1.207e+04 at the constant rate 0.06. Everything is recomputed on each call; ``results.json``
holds the tables' rows and the configuration.
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from experiments import _common
from randlr_jax import autodrop
from randlr_jax.autodrop import _noisy_quadratic as nqm
from randlr_jax.training import new_figure, save_figure


@dataclasses.dataclass(frozen=True)
class Config:
    """The NQM study.

    Attributes:
      rates: the constant rates of Fig. 1 (Fig. 3 compares with the first and the last).
      window: iterations the angle is averaged over (the rule's window and the figures').
      x0: every coordinate of the start ``x_0``.
      steps: GD iterations of Fig. 1 and Fig. 3.
      stationary_chains, stationary_steps: chains (iterations each) of the stationary table.
      initial_rate, drop_factor, threshold, min_learning_rate: the Fig. 3 rule (``threshold`` in
        degrees, also its ``max_threshold``).
      seed: noise of the runs (the chains use ``seed + 1``).
    """

    rates: tuple[float, ...] = (0.06, 0.03, 0.01, 0.001)
    window: int = 20
    x0: float = 100.0
    steps: int = 20_000
    stationary_chains: int = 32
    stationary_steps: int = 4000
    initial_rate: float = 0.06
    drop_factor: float = 0.5
    threshold: float = 0.01
    min_learning_rate: float = 0.001
    seed: int = 0


CONFIGS = {"default": Config()}


def quick(config: Config) -> Config:
    """The same computation at test-suite size: 600 iterations, 4 chains of 200."""
    return dataclasses.replace(config, steps=600, stationary_chains=4, stationary_steps=200)


def fig3_rule(config: Config = CONFIGS["default"]) -> optax.GradientTransformation:
    """GD with the AutoDrop paper's per-iteration drop rule of Fig. 3."""
    return optax.chain(
        optax.sgd(config.initial_rate),
        autodrop(
            config.initial_rate,
            config.drop_factor,
            steps_per_period=1,
            window=config.window,
            drop_delay=0,
            threshold=config.threshold,
            max_threshold=config.threshold,
            min_learning_rate=config.min_learning_rate,
        ),
    )


def moving_average(values: np.ndarray, window: int) -> np.ndarray:
    """Mean of the last ``window`` values (fewer at the start)."""
    cumulative = np.cumsum(np.insert(np.asarray(values, np.float64), 0, 0.0))
    counts = np.minimum(np.arange(1, len(values) + 1), window)
    return (cumulative[1:] - cumulative[np.arange(1, len(values) + 1) - counts]) / counts


def trajectories(problem, config: Config) -> dict:
    """Fig. 1 and Fig. 3 runs from ``x_0``: per-iteration loss, angle and rate (numpy)."""
    x0 = jnp.full(problem.curvature.shape, config.x0, jnp.float32)
    key = jax.random.key(config.seed)
    steps = config.steps
    # The rate is an argument: one compilation serves every constant rate.
    constant = jax.jit(lambda alpha, k: nqm.simulate(problem, optax.sgd(alpha), x0, k, steps))
    automatic = jax.jit(lambda k: nqm.simulate(problem, fig3_rule(config), x0, k, steps))
    out = {}
    for alpha in config.rates:
        records = constant(jnp.float32(alpha), key)
        out[f"constant {alpha:g}"] = {k: np.asarray(v) for k, v in records.items() if k != "x"}
    out["autodrop"] = {k: np.asarray(v) for k, v in automatic(key).items() if k != "x"}
    return out


def stationary_table(problem, rates, chains: int, steps: int, seed: int) -> list[dict]:
    """Simulated ``E<s_t, s_{t+1}>`` and mean cosine at stationarity against ``I*`` and ``C*``."""
    rows = []

    @jax.jit
    def chains_of(alpha, keys):
        def chain(key):
            start, noise = jax.random.split(key)
            x0 = nqm.stationary_sample(problem, alpha, start)
            return nqm.simulate(problem, optax.sgd(alpha), x0, noise, steps)

        return jax.vmap(chain)(keys)

    for alpha in rates:
        records = chains_of(jnp.float32(alpha), jax.random.split(jax.random.key(seed), chains))
        inner = float(jnp.mean(records["inner"][:, 1:]))
        cosine = float(jnp.mean(jnp.cos(jnp.radians(records["angle"][:, 1:]))))
        inner_star = float(nqm.stationary_inner_product(problem, alpha))
        cosine_star = float(nqm.stationary_cosine(problem, alpha))
        rows.append(
            {
                "alpha": alpha,
                "inner_simulated": inner,
                "inner_closed_form": inner_star,
                "inner_relative_error": inner / inner_star - 1.0,
                "cosine_simulated": cosine,
                "cosine_closed_form": cosine_star,
                "cosine_relative_error": cosine / cosine_star - 1.0,
                "angle_closed_form_deg": float(np.degrees(np.arccos(cosine_star))),
                "samples": chains * (steps - 1),
            }
        )
    return rows


def summarize(runs: dict, tail: int) -> list[dict]:
    """Per run: the loss at iteration ``2 * tail`` and averaged over the last ``tail`` iterations, the final
    rate and the iterations of the drops."""
    rows = []
    for name, r in runs.items():
        rates = r["learning_rate"]
        drops = (np.nonzero(np.diff(rates) < 0)[0] + 1).tolist() if name == "autodrop" else []
        rows.append(
            {
                "run": name,
                "early_loss": float(r["loss"][2 * tail - 1]),
                "final_loss_mean": float(np.mean(r["loss"][-tail:])),
                "final_angle_mean": float(np.mean(r["angle"][-tail:])),
                "final_learning_rate": float(rates[-1])
                if name == "autodrop"
                else float(name.split()[1]),
                "drop_iterations": drops,
            }
        )
    return rows


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    _common.add_config_arguments(parser, CONFIGS, workdir="runs/autodrop_nqm")
    parser.add_argument(
        "--steps", type=_common.int_at_least(2), help="iterations of Fig. 1 / Fig. 3"
    )
    parser.add_argument("--seed", type=_common.nonnegative_int)
    args = parser.parse_args(argv)
    config = _common.resolve_config(args, CONFIGS, quick)
    t0 = time.perf_counter()
    problem = nqm.seed_problem()
    runs = trajectories(problem, config)
    table = stationary_table(
        problem, config.rates, config.stationary_chains, config.stationary_steps, config.seed + 1
    )
    tail = max(config.steps // 20, 1)
    summary = summarize(runs, tail)
    results = {
        "config": {
            "dim": 200,
            "curvature": "a_i = i / 10",
            "noise": "Sigma = A",
            **dataclasses.asdict(config),
            "device_kind": jax.devices()[0].device_kind,
        },
        "closed_forms": table,
        "runs": summary,
    }
    figures = [
        _fig1(runs, config, f"{args.workdir}/fig1_constant_rates.png"),
        _fig3(runs, config, f"{args.workdir}/fig3_autodrop.png"),
    ]
    tables = {"closed_forms": closed_form_table(table), "runs": run_table(summary, tail)}
    return _common.finish(args.workdir, results, tables=tables, figures=figures, started=t0)


def closed_form_table(rows: list[dict]) -> str:
    lines = [
        "| alpha | E<s_t,s_t+1> simulated | I* | rel. diff | mean cos simulated | C* | rel. diff "
        "| angle from C* |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['alpha']:g} | {r['inner_simulated']:.5g} | {r['inner_closed_form']:.5g} | "
            f"{100 * r['inner_relative_error']:+.2f}% | {r['cosine_simulated']:.4f} | "
            f"{r['cosine_closed_form']:.4f} | {100 * r['cosine_relative_error']:+.2f}% | "
            f"{r['angle_closed_form_deg']:.2f}° |"
        )
    return "\n".join(lines)


def run_table(rows: list[dict], tail: int) -> str:
    lines = [
        f"| run | loss at it. {2 * tail} | loss (mean of last {tail} it.) | angle (mean of last {tail}, "
        "deg) | final rate | drops at iteration |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        drops = ", ".join(map(str, r["drop_iterations"])) or "-"
        lines.append(
            f"| {r['run']} | {r['early_loss']:.4g} | {r['final_loss_mean']:.4g} | "
            f"{r['final_angle_mean']:.2f} | "
            f"{r['final_learning_rate']:g} | {drops} |"
        )
    return "\n".join(lines)


def _rate_axes(axes, window: int) -> None:
    axes[0].set_yscale("log")
    axes[0].set_ylabel("loss ½ Σ a_i x_i²")
    axes[1].set_ylabel(f"angle between steps (deg, mean of {window})")
    for ax in axes:
        ax.set_xscale("log")
        ax.set_xlabel("iteration")
        ax.grid(alpha=0.3)
        ax.legend()


def _fig1(runs: dict, config: Config, path: str) -> str:
    fig = new_figure(figsize=(11, 4))
    axes = fig.subplots(1, 2)
    for alpha in config.rates:
        r = runs[f"constant {alpha:g}"]
        iterations = np.arange(1, len(r["loss"]) + 1)
        axes[0].plot(iterations, r["loss"], label=f"α = {alpha:g}")
        # The first angle compares with s_{-1} = 0 (90°): left out of the average.
        angles = moving_average(r["angle"][1:], config.window)
        axes[1].plot(iterations[1:], angles, label=f"α = {alpha:g}", lw=0.8)
    _rate_axes(axes, config.window)
    fig.suptitle("Noisy quadratic model, GD at constant rates (AutoDrop paper, Fig. 1)")
    return save_figure(fig, path)


def _fig3(runs: dict, config: Config, path: str) -> str:
    fig = new_figure(figsize=(15, 4))
    axes = fig.subplots(1, 3)
    names = (f"constant {config.rates[0]:g}", f"constant {config.rates[-1]:g}", "autodrop")
    for name in names:
        r = runs[name]
        iterations = np.arange(1, len(r["loss"]) + 1)
        axes[0].plot(iterations, r["loss"], label=name)
        angles = moving_average(r["angle"][1:], config.window)
        axes[1].plot(iterations[1:], angles, label=name, lw=0.8)
        rates = (
            r["learning_rate"]
            if name == "autodrop"
            else np.full(len(iterations), float(name.split()[1]))
        )
        axes[2].plot(iterations, rates, label=name)
    axes[2].set_yscale("log")
    axes[2].set_ylabel("learning rate")
    _rate_axes(axes, config.window)
    fig.suptitle("Noisy quadratic model, GD with the automatic drop (AutoDrop paper, Fig. 3)")
    return save_figure(fig, path)


if __name__ == "__main__":
    main()
