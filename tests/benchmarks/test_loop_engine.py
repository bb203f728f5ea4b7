"""The loop-engine benchmark: its scanned limit is the library's step, its figures are marginal costs.

``benchmarks.loop_engine`` compares ``fit`` with a hand-written loop; these check, without timing
anything real, that (1) the hand-written epoch is exactly the library's training step applied to the
epoch's shuffled batches (an eager reference), and (2) ``measure`` turns whole-run wall times into
marginal epoch costs, interleaves the loops, gives ``fit`` a fresh working directory and the
benchmark's loop settings per call, and writes a results file that its section renders (a fake clock
and fake loops make every figure exact).
"""

from __future__ import annotations

import json
import os
import types

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from benchmarks import loop_engine
from randlr_jax import models
from randlr_jax.training import make_eval_step, make_train_step


def tiny_splits(train: int = 70, validation: int = 12, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)

    def split(n):
        return {
            "x": rng.normal(size=(n, 40)).astype(np.float32),
            "y": rng.integers(0, 10, size=n).astype(np.int32),
        }

    return {"train": split(train), "validation": split(validation)}


def test_scanned_epoch_is_the_library_step_over_the_epochs_shuffled_batches():
    splits = tiny_splits()  # 70 examples, batch 16: 4 steps, the last 6 of the shuffle dropped
    model = models.make_model("mlp", num_classes=10, widths=(8,))
    tx = optax.sgd(0.1)
    loop = loop_engine.ScannedLoop(model, tx, splits, batch_size=16)
    assert loop.steps_per_epoch == 4
    key = jax.random.key(7)
    # The epoch donates its state: hand it a copy, keep the initial state for the reference.
    scanned, mean_loss = loop._epoch(jax.tree.map(jnp.copy, loop.initial), loop.train, key)

    step = jax.jit(make_train_step(model, tx))
    order = np.asarray(jax.random.permutation(key, 70))[:64].reshape(4, 16)
    reference, losses = loop.initial, []
    for index in order:
        batch = {k: v[index] for k, v in splits["train"].items()}
        reference, metrics = step(reference, batch)
        losses.append(float(metrics["loss"]))
    chex.assert_trees_all_close(scanned.params, reference.params, rtol=1e-5, atol=1e-6)
    assert int(scanned.step) == 4
    np.testing.assert_allclose(float(mean_loss), np.mean(losses), rtol=1e-5)

    sums = jax.jit(make_eval_step(model))(reference, splits["validation"])
    expected = float(sums["loss_sum"]) / 12
    np.testing.assert_allclose(
        float(loop._validation_loss(scanned, loop.validation)), expected, 1e-5
    )


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def perf_counter(self):
        return self.now


def test_measure_reports_marginal_epoch_costs_of_interleaved_whole_runs(tmp_path, monkeypatch):
    clock, calls, workdirs = FakeClock(), [], []
    monkeypatch.setattr(loop_engine, "time", types.SimpleNamespace(perf_counter=clock.perf_counter))
    monkeypatch.setattr(loop_engine, "load_splits", lambda train, validation: (tiny_splits(), "x"))

    class FakeScannedLoop:  # 0.3 s fixed + 10 ms per epoch
        def __init__(self, model, tx, splits, batch_size):
            assert batch_size == loop_engine.BATCH_SIZE
            self.steps_per_epoch = 100

        def run(self, epochs):
            calls.append(("scanned", epochs))
            clock.now += 0.3 + 0.01 * epochs
            return 2.0

    def fake_fit(
        model, tx, splits, config, workdir
    ):  # 2 s fixed (3 s the first time) + 40 ms/epoch
        calls.append(("fit", config.epochs))
        assert (config.progress, config.batch_size) == (False, loop_engine.BATCH_SIZE)
        assert not os.path.exists(workdir) and workdir not in workdirs
        workdirs.append(workdir)
        clock.now += (3.0 if len(workdirs) == 1 else 2.0) + 0.04 * config.epochs
        return types.SimpleNamespace(summary={"best_validation_loss": 1.5})

    monkeypatch.setattr(loop_engine, "ScannedLoop", FakeScannedLoop)
    monkeypatch.setattr(loop_engine, "fit", fake_fit)
    monkeypatch.setitem(loop_engine.SIZES["quick"], "epochs", (5, 25))
    monkeypatch.setitem(loop_engine.SIZES["quick"], "repeats", 2)
    payload = loop_engine.run("quick", str(tmp_path))

    round_ = [("scanned", 5), ("scanned", 25), ("fit", 5), ("fit", 25)]
    assert calls == [("scanned", 1), ("fit", 5), *round_, *round_]
    scanned, fit = (payload["loops"][n]["marginal_epoch"] for n in ("scanned", "fit"))
    assert scanned["repeats"] == fit["repeats"] == 2
    np.testing.assert_allclose([scanned["median_s"], scanned["min_s"]], [0.01, 0.01])
    np.testing.assert_allclose([fit["median_s"], fit["min_s"]], [0.04, 0.04])
    np.testing.assert_allclose([payload["ratio"], payload["ratio_of_minima"]], [4.0, 4.0])
    np.testing.assert_allclose(payload["fit_first_call_s"], 3.2)
    np.testing.assert_allclose(payload["fit_first_call_excess_s"], 1.0)
    assert payload["loops"]["fit"]["wall_s"]["25"] == pytest.approx([3.0, 3.0])

    with open(tmp_path / "loop_engine_cpu.json") as f:
        written = json.load(f)
    assert written["sizes"] == "quick" and written["ratio"] == pytest.approx(4.0)
    text = loop_engine.section(written)
    assert "| `randlr_jax.training.fit` | 2.200 | 3.000 | 40.000 | 40.000 | 400.0 |" in text
    assert "**fit / scanned marginal epoch: 4.00x**" in text and "misses it" in text
    assert loop_engine.headline(written).startswith("Loop engine: fit's marginal epoch 4.0x")


def test_epochs_must_grow():
    with pytest.raises(ValueError, match="0 < E1 < E2"):
        loop_engine.measure({**loop_engine.SIZES["quick"], "epochs": (3, 3)})
