"""Input-pipeline throughput against training-step throughput: the loader must not be the bottleneck.

For the MNIST-1D MLP (100-100, batch 128, ``randlr_jax.data.batch_iterator`` shuffling the in-memory
split, as ``fit`` reads it through ``randlr_jax.training._feed.SplitFeed``) and the character LSTM
(2 x 100 LSTM on ``shakespeare_char``, 20 streams of 70 characters, ``lm_batch_iterator``), three rates,
each the median (and best) of ``repeats`` blocks:

* ``loader``: batches per second of the feed alone (host numpy batches, then ``jax.device_put`` onto the
  device the step runs on, blocked on): a block is ``batches`` batches;
* ``step``: training steps per second of the jitted step (donated state) on one device-resident batch:
  a block is ``steps`` steps and ``block_until_ready``;
* ``end_to_end``: steps per second of a loop that loads each next batch between steps (next batch from
  the feed, ``device_put``, step), a block of ``steps`` steps and ``block_until_ready``;
* ``end_to_end_prefetch``: the same with the loader running ahead on a background thread
  (:func:`randlr_jax.training._feed.prefetch`: ``fit`` with ``LoopConfig(prefetch=k)``, its default on
  GPU/TPU; on CPU, where host and device share the cores, its default is to load in line).

The verdict: the loader is *not* the bottleneck when it delivers batches faster than the step consumes
them (``loader / step > 1``); the report adds the share of an end-to-end step spent loading
(``(1 / loader) / (1 / end_to_end)``).

Size sets: ``accelerator`` and ``cpu``: blocks of 200 batches / 50 steps (MLP) and 100 batches / 10 steps
(LSTM), 5 repeats; ``quick``: 50 / 10 and 20 / 3, 3 repeats. The LSTM reads the first 2,000,000 training
characters.

Run alone: ``.venv/bin/python -m benchmarks.input_pipeline [--sizes cpu]``; writes
``benchmarks/results/input_pipeline_<backend>.json``.
"""

from __future__ import annotations

import itertools
import statistics
import time

import jax
import optax

from benchmarks import common
from randlr_jax import models
from randlr_jax.training import LoopConfig, create_train_state, make_train_step
from randlr_jax.training._feed import SplitFeed, prefetch

SIZES = {
    "accelerator": {
        "mlp": {"batches": 200, "steps": 50},
        "char_lstm": {"batches": 100, "steps": 10},
        "repeats": 5,
    },
    "cpu": {
        "mlp": {"batches": 200, "steps": 50},
        "char_lstm": {"batches": 100, "steps": 10},
        "repeats": 5,
    },
    "quick": {
        "mlp": {"batches": 50, "steps": 10},
        "char_lstm": {"batches": 20, "steps": 3},
        "repeats": 3,
    },
}
LSTM_CHARACTERS = 2_000_000


def _endless(feed: SplitFeed):
    """The feed's training batches, epoch after epoch (as ``fit`` reads them)."""
    for epoch in itertools.count():
        yield from feed.train_batches(epoch)


def _setting(name: str):
    """``(feed, model, task, carry)`` of one setting."""
    from randlr_jax import data  # TensorFlow Datasets: only where a setting is built

    if name == "mlp":
        splits = data.train_val_test("mnist1d", validation_size=500, seed=0)
        config = LoopConfig(batch_size=128, num_devices=1, progress=False)
        model = models.make_model("mlp", num_classes=10, widths=(100, 100))
        return SplitFeed(splits, config, "classification"), model, "classification", None
    tokens = data.load_tokens("shakespeare_char", "train")[:LSTM_CHARACTERS]
    vocab = data.load_vocabulary("shakespeare_char")
    config = LoopConfig(batch_size=20, seq_len=70, num_devices=1, progress=False)
    model = models.make_model("char_lstm", vocab_size=vocab.size)
    carry = model.initial_carry(config.batch_size)
    return SplitFeed({"train": tokens}, config, "language_model"), model, "language_model", carry


def _rate(times: list[float], count: int) -> dict:
    """Items per second from block times of ``count`` items: median and best block."""
    return {
        "median_per_s": count / statistics.median(times),
        "max_per_s": count / min(times),
        "repeats": len(times),
        "per_block": count,
    }


def measure(name: str, sizes: dict, repeats: int) -> dict:
    feed, model, task, carry = _setting(name)
    device = jax.devices()[0]
    batches = _endless(feed)
    first = next(batches)
    tx = optax.sgd(0.01)
    state = create_train_state(model, tx, jax.random.key(0), feed.sample_input(), carry=carry)
    step = jax.jit(make_train_step(model, tx, task=task), donate_argnums=0)
    resident = jax.device_put(first, device)
    state, metrics = step(state, resident)  # compile
    jax.block_until_ready((state, metrics))
    loader_times, step_times, e2e_times, prefetch_times = [], [], [], []
    # Its own stream of the same batches: a generator must not be read from two threads.
    ahead = prefetch(_endless(feed), size=2, transform=lambda b: jax.device_put(b, device))
    for _ in range(repeats):  # interleaved: noise hits all three alike
        t0 = time.perf_counter()
        for _ in range(sizes["batches"]):
            batch = jax.device_put(next(batches), device)
        jax.block_until_ready(batch)
        loader_times.append(time.perf_counter() - t0)

        t0 = time.perf_counter()
        for _ in range(sizes["steps"]):
            state, metrics = step(state, resident)
        jax.block_until_ready((state, metrics))
        step_times.append(time.perf_counter() - t0)

        t0 = time.perf_counter()
        for _ in range(sizes["steps"]):
            state, metrics = step(state, jax.device_put(next(batches), device))
        jax.block_until_ready((state, metrics))
        e2e_times.append(time.perf_counter() - t0)

        t0 = time.perf_counter()
        for _ in range(sizes["steps"]):
            state, metrics = step(state, next(ahead))
        jax.block_until_ready((state, metrics))
        prefetch_times.append(time.perf_counter() - t0)
    ahead.close()
    loader = _rate(loader_times, sizes["batches"])
    train = _rate(step_times, sizes["steps"])
    end_to_end = _rate(e2e_times, sizes["steps"])
    end_to_end_prefetch = _rate(prefetch_times, sizes["steps"])
    ratio = loader["median_per_s"] / train["median_per_s"]
    return {
        "setting": name,
        "batch_shape": {k: list(v.shape) for k, v in first.items()},
        "loader": loader,
        "step": train,
        "end_to_end": end_to_end,
        "end_to_end_prefetch": end_to_end_prefetch,
        "loader_to_step_ratio": ratio,
        "end_to_end_to_step_ratio": end_to_end["median_per_s"] / train["median_per_s"],
        "prefetch_to_step_ratio": end_to_end_prefetch["median_per_s"] / train["median_per_s"],
        "loading_share_of_end_to_end_step": end_to_end["median_per_s"] / loader["median_per_s"],
        "loader_is_bottleneck": bool(ratio <= 1.0),
    }


def run(sizes: str, results_dir: str | None = None) -> dict:
    """Measure the size set ``sizes`` and write ``input_pipeline_<backend>.json``."""
    config = SIZES[common.check_size_set(sizes)]
    rows = [measure(name, config[name], config["repeats"]) for name in ("mlp", "char_lstm")]
    common.log("input_pipeline: done")
    payload = {"lstm_characters": LSTM_CHARACTERS, "rows": rows}
    payload["path"] = common.write_result("input_pipeline", sizes, payload, results_dir)
    return payload


TITLE = "Input pipeline against step time"
SUMMARY = (
    "loader batches/s against train steps/s (MNIST-1D MLP, char LSTM), with a verdict: is the "
    "loader the bottleneck?"
)


def _prefetch_rate(row: dict) -> str:
    rate = row.get("end_to_end_prefetch")
    return "-" if rate is None else f"{rate['median_per_s']:.1f}"


def section(result: dict) -> str:
    """This benchmark's section of ``RESULTS.md`` (also what a run alone prints): the rates per
    setting, then one verdict per setting."""
    rows = result["rows"]
    lines = [
        "The training feed `fit` uses (`SplitFeed`: `batch_iterator` over the shuffled in-memory "
        "MNIST-1D split; `lm_batch_iterator` over the first "
        f"{result['lstm_characters']:,} `shakespeare_char` training characters) against the jitted "
        "training step. **Timed regions** (interleaved, each ending in `block_until_ready`): *loader*: "
        "a block of batches taken from the feed and `jax.device_put` on the device; *step*: a block of "
        "steps on one device-resident batch (state donated); *end to end*: a block of steps each "
        "fed its own next batch loaded between steps; *with prefetch*: the same with the loader running "
        "ahead on a background thread (`randlr_jax.training._feed.prefetch`: `fit` with "
        "`LoopConfig(prefetch=k)`, its default on GPU/TPU; on CPU `fit` loads in line). "
        "**Statistic:** median over "
        f"{rows[0]['loader']['repeats']} blocks (best block in the JSON).",
        "",
        "| setting | batch | loader (batches/s) | step (steps/s) | end to end (steps/s) "
        "| with prefetch (steps/s) | loader / step | loading share of an end-to-end step | verdict |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        shape = "x".join(str(d) for d in r["batch_shape"]["x"])
        verdict = "**bottleneck**" if r["loader_is_bottleneck"] else "not the bottleneck"
        lines.append(
            f"| {r['setting']} | {shape} | {r['loader']['median_per_s']:.0f} "
            f"| {r['step']['median_per_s']:.1f} | {r['end_to_end']['median_per_s']:.1f} "
            f"| {_prefetch_rate(r)} | {r['loader_to_step_ratio']:.1f} "
            f"| {100 * r['loading_share_of_end_to_end_step']:.1f} % | {verdict} |"
        )
    lines.append("")
    for r in rows:
        verb = "is" if r["loader_is_bottleneck"] else "is not"
        lines.append(
            f"- **{r['setting']}: the loader {verb} the bottleneck**: it delivers "
            f"{r['loader_to_step_ratio']:.1f}x the batches the step consumes; loading takes "
            f"{100 * r['loading_share_of_end_to_end_step']:.1f} % of an end-to-end step when it runs "
            "between steps; with a prefetching loop, "
            + (
                f"{r['prefetch_to_step_ratio']:.2f}x the step-only rate."
                if "prefetch_to_step_ratio" in r
                else "not measured in this run."
            )
        )
    return "\n".join(lines)


def headline(result: dict) -> str:
    """The report's one-line summary: the loader's rate against the step's, per setting."""
    return "Input pipeline: " + "; ".join(
        f"{r['setting']}: loader {r['loader_to_step_ratio']:.1f}x the step rate, "
        f"{'IS' if r['loader_is_bottleneck'] else 'not'} the bottleneck"
        + (
            f"; with prefetch {r['prefetch_to_step_ratio']:.2f}x the step-only rate"
            if "prefetch_to_step_ratio" in r
            else ""
        )
        for r in result["rows"]
    )


def main(argv=None) -> dict:
    return common.size_set_main(__doc__.splitlines()[0], run, section, argv)


if __name__ == "__main__":
    main()
