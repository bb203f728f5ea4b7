"""The loop engine's cost per epoch against a hand-written scanned loop, its lower limit.

Workload: the MNIST-1D MLP (40-100-100-10, ``randlr_jax.models.make_model("mlp", widths=(100, 100))``),
3,200 training and 800 validation examples, batch 32 (100 steps per epoch), ``optax.sgd(0.1)``, the
library's training step (``make_train_step``) in both loops. The data is MNIST-1D where the ``data``
extra is installed, else random arrays of its shapes (``benchmarks.common.mnist1d_splits``; the
results file says which).

* ``scanned``: the limit. The training split lives on the device; one jitted function per epoch
  shuffles it (``jax.random.permutation`` of the epoch's key) and runs ``lax.scan`` over the epoch's
  batches; after it one jitted call computes the validation loss over the whole split, fetched to the
  host (as any loop that records it must).
* ``fit``: ``randlr_jax.training.fit`` with its defaults and ``LoopConfig(progress=False,
  batch_size=32, epochs=E)``, a fresh working directory (a temporary directory) for every call. The
  timed region is the whole call, so everything it does per epoch counts: host batches, transfers,
  evaluation, checkpoints, records.

The figure is the *marginal epoch cost* of each loop: ``(wall(E2 epochs) - wall(E1 epochs)) / (E2 -
E1)``, whole runs at two lengths, so that every fixed cost (compilation, set-up, the first and last
checkpoint, plotting) cancels by construction. One round times scanned ``E1``, scanned ``E2``, ``fit
E1``, ``fit E2`` in turn (interleaved, so the machine's load hits both loops alike). The figures:
``(median wall E2 - median wall E1) / (E2 - E1)`` and the same of the minima (the least disturbed
runs); the per-round differences are kept in the results file. ``E2 - E1`` is large (60 epochs) so
that the per-epoch signal stands well above the noise of ``fit``'s fixed cost (seconds: compilation,
checkpoints, the learning-curve plot). Headline: ``fit / scanned`` marginal epoch (target ``<= 2``).
``fit``'s first call of the process (compilation included, ``E1`` epochs) is reported separately,
with its excess over the median warm ``E1`` call.

Size sets: ``accelerator``: ``E1 = 5``, ``E2 = 65``, 3 rounds (it runs inside a few-minute device
check, ``benchmarks/device_check.sh``); ``cpu``: the same with 5 rounds; ``quick``: 320 / 80 examples,
``E1 = 1``, ``E2 = 2``, 1 round.

Run alone: ``.venv/bin/python -m benchmarks.loop_engine [--sizes cpu]``; writes
``benchmarks/results/loop_engine_<backend>.json``.
"""

from __future__ import annotations

import statistics
import tempfile
import time

import jax
import jax.numpy as jnp
import optax

from benchmarks import common
from randlr_jax import models
from randlr_jax.training import (
    LoopConfig,
    create_train_state,
    fit,
    make_eval_step,
    make_train_step,
)

SIZES = {
    "accelerator": {"train": 3200, "validation": 800, "epochs": (5, 65), "repeats": 3},
    "cpu": {"train": 3200, "validation": 800, "epochs": (5, 65), "repeats": 5},
    "quick": {"train": 320, "validation": 80, "epochs": (1, 2), "repeats": 1},
}
BATCH_SIZE = 32
LEARNING_RATE = 0.1
WIDTHS = (100, 100)
TARGET_RATIO = 2.0


def load_splits(train: int, validation: int) -> tuple[dict, str]:
    """The first ``train`` / ``validation`` examples of MNIST-1D's 3,200 / 800 carve (no test split)."""
    splits, source = common.mnist1d_splits(validation_size=800, seed=0)
    for name, count in (("train", train), ("validation", validation)):
        available = len(splits[name]["y"])
        if not 0 < count <= available:
            raise ValueError(f"{name} must be in [1, {available}], got {count!r}.")
    return {
        "train": {k: v[:train] for k, v in splits["train"].items()},
        "validation": {k: v[:validation] for k, v in splits["validation"].items()},
    }, source


class ScannedLoop:
    """The hand-written loop: the split on the device, one ``lax.scan`` per epoch, one eval call.

    Epoch ``e``: ``order = permutation(fold_in(key, e), n)[: S * B]`` reshaped to ``(S, B)``
    (``S = n // B`` steps, the remainder dropped as ``fit`` does), ``state = scan(step, state,
    order)`` gathering each batch on the device; then ``loss_sum / count`` of ``make_eval_step`` over
    the whole validation split in one call, fetched to the host.
    """

    def __init__(self, model, tx, splits: dict, batch_size: int):
        train = splits["train"]
        self.steps_per_epoch = len(train["y"]) // batch_size
        self.train = jax.device_put({k: jnp.asarray(v) for k, v in train.items()})
        self.validation = jax.device_put(
            {k: jnp.asarray(v) for k, v in splits["validation"].items()}
        )
        self.initial = create_train_state(model, tx, jax.random.key(0), train["x"][:1])
        step = make_train_step(model, tx)
        eval_step = make_eval_step(model)
        num_examples, steps = len(train["y"]), self.steps_per_epoch

        def epoch(state, data, key):
            order = jax.random.permutation(key, num_examples)[: steps * batch_size]

            def body(state, index):
                state, metrics = step(state, jax.tree.map(lambda a: a[index], data))
                return state, metrics["loss"]

            state, losses = jax.lax.scan(body, state, order.reshape(steps, batch_size))
            return state, losses.mean()

        def validation_loss(state, data):
            sums = eval_step(state, data)
            return sums["loss_sum"] / sums["count"]

        self._epoch = jax.jit(epoch, donate_argnums=0)
        self._validation_loss = jax.jit(validation_loss)
        self._key = jax.random.key(1)

    def run(self, epochs: int) -> float:
        """Train ``epochs`` epochs from the initial state; the last validation loss."""
        state = jax.tree.map(jnp.copy, self.initial)  # the epoch function donates its state
        loss = float("nan")
        for e in range(epochs):
            state, _ = self._epoch(state, self.train, jax.random.fold_in(self._key, e))
            loss = float(self._validation_loss(state, self.validation))
        return loss


def _timed(fn, *args) -> tuple[float, object]:
    t0 = time.perf_counter()
    out = fn(*args)
    return time.perf_counter() - t0, out


def measure(config: dict) -> dict:
    """Both loops at ``E1`` and ``E2`` epochs, ``repeats`` interleaved rounds; the marginal costs."""
    short, long = config["epochs"]
    if not 0 < short < long:
        raise ValueError(f"epochs must be (E1, E2) with 0 < E1 < E2, got {config['epochs']!r}.")
    splits, source = load_splits(config["train"], config["validation"])
    model = models.make_model("mlp", num_classes=10, widths=WIDTHS)
    tx = optax.sgd(LEARNING_RATE)  # one object: fit's compiled step is reused from call to call
    scanned = ScannedLoop(model, tx, splits, BATCH_SIZE)

    def run_fit(epochs: int) -> float:
        loop = LoopConfig(progress=False, batch_size=BATCH_SIZE, epochs=epochs)
        with tempfile.TemporaryDirectory() as workdir:
            t0 = time.perf_counter()
            result = fit(model, tx, splits, loop, f"{workdir}/run")
            wall = time.perf_counter() - t0
        return wall, result.summary.get("best_validation_loss")

    scanned_compile_s, _ = _timed(scanned.run, 1)
    fit_first_call_s, _ = run_fit(short)
    walls = {name: {short: [], long: []} for name in ("scanned", "fit")}
    losses = {}
    for _ in range(config["repeats"]):
        for epochs in (short, long):
            wall, losses["scanned"] = _timed(scanned.run, epochs)
            walls["scanned"][epochs].append(wall)
        for epochs in (short, long):
            wall, losses["fit"] = run_fit(epochs)
            walls["fit"][epochs].append(wall)
    loops = {}
    for name, by_epochs in walls.items():
        a, b = by_epochs[short], by_epochs[long]
        loops[name] = {
            "wall_s": {str(short): a, str(long): b},
            "marginal_epoch": {
                "median_s": (statistics.median(b) - statistics.median(a)) / (long - short),
                "min_s": (min(b) - min(a)) / (long - short),
                "per_round_s": [(y - x) / (long - short) for x, y in zip(a, b, strict=True)],
                "repeats": config["repeats"],
            },
            "last_validation_loss": losses[name],
        }
    scan_marginal, fit_marginal = loops["scanned"]["marginal_epoch"], loops["fit"]["marginal_epoch"]
    warm_short = statistics.median(walls["fit"][short])
    return {
        "data": source,
        "model": "mlp",
        "widths": list(WIDTHS),
        "optimizer": f"optax.sgd({LEARNING_RATE})",
        "train_examples": config["train"],
        "validation_examples": config["validation"],
        "batch_size": BATCH_SIZE,
        "steps_per_epoch": scanned.steps_per_epoch,
        "epochs": [short, long],
        "repeats": config["repeats"],
        "loops": loops,
        "ratio": fit_marginal["median_s"] / scan_marginal["median_s"],
        "ratio_of_minima": fit_marginal["min_s"] / scan_marginal["min_s"],
        "target_ratio": TARGET_RATIO,
        "scanned_first_call_s": scanned_compile_s,
        "fit_first_call_s": fit_first_call_s,
        "fit_first_call_excess_s": fit_first_call_s - warm_short,
    }


def run(sizes: str, results_dir: str | None = None) -> dict:
    """Measure the size set ``sizes`` and write ``loop_engine_<backend>.json``."""
    config = SIZES[common.check_size_set(sizes)]
    payload = measure(config)
    common.log(f"loop_engine: fit / scanned marginal epoch {payload['ratio']:.2f}")
    payload["path"] = common.write_result("loop_engine", sizes, payload, results_dir)
    return payload


TITLE = "The loop engine against a hand-written scanned loop"
SUMMARY = (
    "`fit`'s marginal cost per epoch against a hand-written loop (`lax.scan` per epoch, data on the "
    "device), MNIST-1D MLP, batch 32"
)
LOOP_NAMES = {"scanned": "hand-written `lax.scan` per epoch", "fit": "`randlr_jax.training.fit`"}


def section(result: dict) -> str:
    """This benchmark's section of ``RESULTS.md`` (also what a run alone prints)."""
    short, long = result["epochs"]
    steps = result["steps_per_epoch"]
    data = "MNIST-1D" if result["data"] == "mnist1d" else "random arrays of MNIST-1D's shapes"
    lines = [
        f"The MNIST-1D MLP ({', '.join(map(str, result['widths']))}) on {data}, "
        f"{result['train_examples']:,} training / {result['validation_examples']:,} validation "
        f"examples, batch {result['batch_size']} ({steps} steps per epoch), "
        f"`{result['optimizer']}`, the library's training step in both loops. **Scanned:** the "
        "training split on the device, one jitted function per epoch (a per-epoch shuffle, "
        "`lax.scan` over the batches), then the validation loss in one jitted call, fetched to the "
        "host. **fit:** `randlr_jax.training.fit` with its defaults, `LoopConfig(progress=False, "
        f"batch_size={result['batch_size']}, epochs=E)`, a fresh working directory per call. "
        f"**Timed region:** whole runs of E1 = {short} and E2 = {long} epochs; the marginal epoch "
        f"cost is (wall E2 - wall E1) / {long - short}, so compilation and every fixed cost cancel. "
        f"**Statistic:** median (min) over {result['repeats']} interleaved rounds "
        "(scanned E1, scanned E2, fit E1, fit E2): the marginal cost from the median walls (from "
        "the minimum walls).",
        "",
        "| loop | wall E1 (s) | wall E2 (s) | marginal epoch (ms) | min (ms) | per step (us) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name in ("scanned", "fit"):
        loop = result["loops"][name]
        marginal = loop["marginal_epoch"]
        lines.append(
            f"| {LOOP_NAMES[name]} | {statistics.median(loop['wall_s'][str(short)]):.3f} "
            f"| {statistics.median(loop['wall_s'][str(long)]):.3f} "
            f"| {common.ms(marginal['median_s'])} | {common.ms(marginal['min_s'])} "
            f"| {1e6 * marginal['median_s'] / steps:.1f} |"
        )
    verdict = "meets" if result["ratio"] <= result["target_ratio"] else "misses"
    lines += [
        "",
        f"**fit / scanned marginal epoch: {result['ratio']:.2f}x** (minima "
        f"{result['ratio_of_minima']:.2f}x); target <= {result['target_ratio']:g}x: {verdict} it. "
        f"fit's first call of the process ({short} epochs, compilation included): "
        f"{result['fit_first_call_s']:.2f} s, {result['fit_first_call_excess_s']:.2f} s more than a "
        f"warm call; the scanned loop's first epoch (compilation included): "
        f"{result['scanned_first_call_s']:.2f} s.",
    ]
    return "\n".join(lines)


def headline(result: dict) -> str:
    """The report's one-line summary: fit's marginal epoch against the scanned limit."""
    marginal = {
        name: result["loops"][name]["marginal_epoch"]["median_s"] for name in result["loops"]
    }
    return (
        f"Loop engine: fit's marginal epoch {result['ratio']:.1f}x the hand-written scanned loop's "
        f"({common.ms(marginal['fit'])} ms vs {common.ms(marginal['scanned'])} ms; "
        f"target <= {result['target_ratio']:g}x)"
    )


def main(argv=None) -> dict:
    return common.size_set_main(__doc__.splitlines()[0], run, section, argv)


if __name__ == "__main__":
    main()
