"""AutoDrop on the noisy quadratic model: seed 004's Fig. 1, Fig. 3 and Theorem 1 (ALGORITHMS.md §2).

Command (from the repository root)::

    .venv/bin/python -m experiments.autodrop_nqm --workdir runs/autodrop_nqm

Expected on CPU: well under a minute. The NQM is ``x in R^200``, ``a_i = i / 10``, ``Sigma = A``; the seed
gives no start, we use ``x_0 = 100 * 1`` (far from the noise floor, so that the descent phase is visible).

- Fig. 1 (``fig1_constant_rates.png``): GD at ``alpha in {0.06, 0.03, 0.01, 0.001}``: the loss
  ``1/2 sum a_i x_i^2`` and the angle between consecutive steps averaged over 20 iterations: it rises and
  saturates, later and lower for smaller rates (towards 90°).
- Fig. 3 (``fig3_autodrop.png``): GD from ``alpha_0 = 0.06`` with the per-iteration rule (AutoDrop with
  ``steps_per_period=1, window=20, drop_delay=0, threshold=max_threshold=0.01°, drop_factor=0.5,
  min_learning_rate=0.001``), against the constant rates 0.06 and 0.001: it ends below both.
- Table (``results.json``, printed): simulated ``E<s_t, s_{t+1}>`` and mean cosine at stationarity (chains
  started from the stationary distribution) against the closed forms ``I*`` and ``C*``.

Everything is recomputed on each call (seconds); ``--quick`` shortens the runs for the test suite.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import jax
import jax.numpy as jnp
import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import optax

from experiments._common import int_at_least, nonnegative_int, override
from randlr_jax import autodrop
from randlr_jax.autodrop import _noisy_quadratic as nqm

RATES = (0.06, 0.03, 0.01, 0.001)
WINDOW = 20


def fig3_rule(initial_rate: float = 0.06) -> optax.GradientTransformation:
    """GD with the per-iteration drop rule of the seed's Fig. 3 (ALGORITHMS.md §2)."""
    return optax.chain(
        optax.sgd(initial_rate),
        autodrop(
            initial_rate,
            0.5,
            steps_per_period=1,
            window=WINDOW,
            drop_delay=0,
            threshold=0.01,
            max_threshold=0.01,
            min_learning_rate=0.001,
        ),
    )


def moving_average(values: np.ndarray, window: int = WINDOW) -> np.ndarray:
    """Mean of the last ``window`` values (fewer at the start)."""
    cumulative = np.cumsum(np.insert(np.asarray(values, np.float64), 0, 0.0))
    counts = np.minimum(np.arange(1, len(values) + 1), window)
    return (cumulative[1:] - cumulative[np.arange(1, len(values) + 1) - counts]) / counts


def trajectories(problem, steps: int, seed: int) -> dict:
    """Fig. 1 and Fig. 3 runs from ``x_0 = 100``: per-iteration loss, angle and rate (numpy)."""
    x0 = jnp.full(problem.curvature.shape, 100.0, jnp.float32)
    key = jax.random.key(seed)
    # The rate is an argument: one compilation serves every constant rate.
    constant = jax.jit(lambda alpha, k: nqm.simulate(problem, optax.sgd(alpha), x0, k, steps))
    automatic = jax.jit(lambda k: nqm.simulate(problem, fig3_rule(), x0, k, steps))
    out = {}
    for alpha in RATES:
        records = constant(jnp.float32(alpha), key)
        out[f"constant {alpha:g}"] = {k: np.asarray(v) for k, v in records.items() if k != "x"}
    out["autodrop"] = {k: np.asarray(v) for k, v in automatic(key).items() if k != "x"}
    return out


def stationary_table(problem, chains: int, steps: int, seed: int) -> list[dict]:
    """Simulated ``E<s_t, s_{t+1}>`` and mean cosine at stationarity against ``I*`` and ``C*``."""
    rows = []

    @jax.jit
    def chains_of(alpha, keys):
        def chain(key):
            start, noise = jax.random.split(key)
            x0 = nqm.stationary_sample(problem, alpha, start)
            return nqm.simulate(problem, optax.sgd(alpha), x0, noise, steps)

        return jax.vmap(chain)(keys)

    for alpha in RATES:
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
    matplotlib.use("Agg")  # figures go to files; the entry point, not an import, picks the backend
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default="runs/autodrop_nqm", help="output directory")
    parser.add_argument("--quick", action="store_true", help="short runs (smoke test)")
    parser.add_argument(
        "--steps", type=int_at_least(2), default=None, help="iterations of Fig. 1 / Fig. 3"
    )
    parser.add_argument("--seed", type=nonnegative_int, default=0)
    args = parser.parse_args(argv)
    os.makedirs(args.workdir, exist_ok=True)
    t0 = time.perf_counter()
    problem = nqm.seed_problem()
    steps = override(args.steps, 600 if args.quick else 20_000)
    chains, chain_steps = (4, 200) if args.quick else (32, 4000)
    runs = trajectories(problem, steps, args.seed)
    table = stationary_table(problem, chains, chain_steps, args.seed + 1)
    tail = max(steps // 20, 1)
    summary = summarize(runs, tail)
    results = {
        "config": {
            "dim": 200,
            "curvature": "a_i = i / 10",
            "noise": "Sigma = A",
            "x0": 100.0,
            "steps": steps,
            "stationary_chains": chains,
            "stationary_steps": chain_steps,
            "seed": args.seed,
            "device_kind": jax.devices()[0].device_kind,
        },
        "closed_forms": table,
        "runs": summary,
        "wall_time_s": time.perf_counter() - t0,
    }
    results_path = os.path.join(args.workdir, "results.json")
    with open(results_path, "w") as f:
        json.dump(results, f, indent=2)
    fig1 = _fig1(runs, os.path.join(args.workdir, "fig1_constant_rates.png"))
    fig3 = _fig3(runs, os.path.join(args.workdir, "fig3_autodrop.png"))
    print(closed_form_table(table))
    print()
    print(run_table(summary, tail))
    print(f"\nwall time {time.perf_counter() - t0:.1f} s")
    print(f"results: {os.path.abspath(results_path)}")
    print(f"figures: {os.path.abspath(fig1)}, {os.path.abspath(fig3)}")
    return results


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


def _fig1(runs: dict, path: str) -> str:
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for alpha in RATES:
        r = runs[f"constant {alpha:g}"]
        iterations = np.arange(1, len(r["loss"]) + 1)
        axes[0].plot(iterations, r["loss"], label=f"α = {alpha:g}")
        # The first angle compares with s_{-1} = 0 (90°): left out of the average.
        axes[1].plot(iterations[1:], moving_average(r["angle"][1:]), label=f"α = {alpha:g}", lw=0.8)
    axes[0].set_yscale("log")
    axes[0].set_ylabel("loss ½ Σ a_i x_i²")
    axes[1].set_ylabel(f"angle between steps (deg, mean of {WINDOW})")
    for ax in axes:
        ax.set_xscale("log")
        ax.set_xlabel("iteration")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle("Noisy quadratic model, GD at constant rates (seed Fig. 1)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _fig3(runs: dict, path: str) -> str:
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for name in ("constant 0.06", "constant 0.001", "autodrop"):
        r = runs[name]
        iterations = np.arange(1, len(r["loss"]) + 1)
        axes[0].plot(iterations, r["loss"], label=name)
        axes[1].plot(iterations[1:], moving_average(r["angle"][1:]), label=name, lw=0.8)
        rates = (
            r["learning_rate"]
            if name == "autodrop"
            else np.full(len(iterations), float(name.split()[1]))
        )
        axes[2].plot(iterations, rates, label=name)
    axes[0].set_yscale("log")
    axes[0].set_ylabel("loss ½ Σ a_i x_i²")
    axes[1].set_ylabel(f"angle between steps (deg, mean of {WINDOW})")
    axes[2].set_yscale("log")
    axes[2].set_ylabel("learning rate")
    for ax in axes:
        ax.set_xscale("log")
        ax.set_xlabel("iteration")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle("Noisy quadratic model, GD with the automatic drop (seed Fig. 3)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


if __name__ == "__main__":
    main()
