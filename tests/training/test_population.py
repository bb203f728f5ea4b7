"""The vmapped learning-rate population: same trajectory per member as a single run, early stopping per
member, resumption, language models and bad input."""

from __future__ import annotations

import chex
import jax
import numpy as np
import optax
import pytest

from randlr_jax import models
from randlr_jax.data import lm_batch_iterator
from randlr_jax.training import LoopConfig, _population, create_train_state, fit, make_train_step
from randlr_jax.training import _engine as engine
from randlr_jax.training._population import (
    fit_population,
    init_population,
    make_population_optimizer,
    member_history,
)
from tests.helpers import blob_splits


def _model():
    return models.make_model("mlp", num_classes=3, widths=(16,))


def _config(**kw):
    base = dict(
        epochs=3, batch_size=16, eval_batch_size=24, progress=False, log_every=2, num_devices=1
    )
    base.update(kw)
    return LoopConfig(**base)


RATES = (0.01, 0.1, 0.5)


def test_each_member_follows_the_single_run_at_its_rate(tmp_path):
    splits, model, config = blob_splits(), _model(), _config()
    pop = fit_population(model, RATES, splits, config, tmp_path / "pop")
    assert len(pop.members) == len(RATES)
    for k, rate in enumerate(RATES):
        single = fit(model, optax.sgd(rate), splits, config, tmp_path / f"single{k}")
        member_params = jax.tree.map(lambda x, k=k: x[k], pop.state.params)
        chex.assert_trees_all_close(member_params, single.state.params, atol=1e-5, rtol=1e-5)
        best = jax.tree.map(lambda x, k=k: x[k], pop.best_params)
        chex.assert_trees_all_close(best, single.best_params, atol=1e-5, rtol=1e-5)
        m = pop.members[k]
        assert m["best_epoch"] == single.summary["best_epoch"]
        np.testing.assert_allclose(m["test_loss"], single.summary["test_loss"], rtol=1e-5)
        np.testing.assert_allclose(
            [r["validation_loss"] for r in member_history(pop.history, k)],
            [r["validation_loss"] for r in single.history],
            rtol=1e-5,
        )
    # The rates differ, so the members must too (a population that ignored the rate would not).
    assert len({round(m["best_validation_loss"], 6) for m in pop.members}) == len(RATES)
    scores = [m["best_validation_loss"] for m in pop.members]
    assert pop.summary["best_member"] == int(np.argmin(scores))
    assert pop.summary["best_learning_rate"] == RATES[int(np.argmin(scores))]


def test_early_stopping_is_per_member_and_freezes_the_stopped(tmp_path):
    splits, model = blob_splits(), _model()
    config = _config(epochs=6, patience=1)
    rates = (0.1, 1e4)  # the second diverges: no finite validation loss, stops after one epoch
    pop = fit_population(model, rates, splits, config, tmp_path / "pop")
    diverged = pop.members[1]
    assert diverged["epochs_run"] == 1
    assert diverged["best_epoch"] == 0
    assert pop.members[0]["epochs_run"] > 1
    assert pop.summary["best_member"] == 0
    single = fit(model, optax.sgd(1e4), splits, config, tmp_path / "single")
    assert single.summary["epochs_run"] == diverged["epochs_run"]
    # Frozen after its last epoch. Its parameters are NaN (and NaN == NaN for a tree comparison), so the
    # step counter shows it: 96 examples / 16 = 6 steps, epoch 1's only; the other member's go on.
    assert not np.isfinite(np.asarray(jax.tree.leaves(pop.state.params)[0][1])).all()
    assert np.asarray(pop.state.step).tolist() == [6 * pop.members[0]["epochs_run"], 6]
    assert [r["trained"] for r in pop.history][1] == [True, False]


@pytest.fixture(scope="module")
def after_epochs(tmp_path_factory):
    """The population of ``RATES`` after 1 and after 2 epochs (nothing frozen): the references."""
    splits, model, root = blob_splits(), _model(), tmp_path_factory.mktemp("after")
    return {
        epochs: fit_population(model, RATES, splits, _config(epochs=epochs), root / str(epochs))
        for epochs in (1, 2)
    }


def _member(tree, k):
    return jax.tree.map(lambda x: np.asarray(x[k]), tree)


def _declare_dead(patch, member):
    """From now on the engine sees ``member``'s steps as dead (its parameters stay finite: a member
    that really diverges has NaN parameters, which a comparison cannot tell apart)."""
    real = engine.dead_mask

    def dead_mask(metrics):
        dead = np.array(real(metrics), bool)
        dead[member] = True
        return dead

    patch.setattr(engine, "dead_mask", dead_mask)


def test_a_dead_member_keeps_its_params_of_when_it_died_also_across_a_mid_epoch_resume(
    tmp_path, monkeypatch, after_epochs
):
    """Member 1, seen dead at epoch 1's end, is frozen: after 3 epochs its parameters and optimizer
    state are bit for bit those after epoch 1 (finite), its step counter 6; the others train on. A run
    that crashes inside epoch 2 and resumes from its step-8 checkpoint ends the same, still frozen."""
    from randlr_jax.training._feed import SplitFeed

    splits, model = blob_splits(), _model()
    with monkeypatch.context() as patch:
        _declare_dead(patch, 1)
        straight = fit_population(model, RATES, splits, _config(), tmp_path / "straight")
        config = _config(checkpoint_every_steps=4)
        load = SplitFeed.train_chunks

        def crashing(self, epoch, start_batch, sizes):
            first = start_batch
            for size, chunk in zip(sizes, load(self, epoch, start_batch, sizes), strict=True):
                if epoch == 1 and first >= 4:  # after step 10, past the step-8 checkpoint
                    raise RuntimeError("loader crashed")
                yield chunk
                first += size

        with monkeypatch.context() as crash:
            crash.setattr(SplitFeed, "train_chunks", crashing)
            with pytest.raises(RuntimeError, match="loader crashed"):
                fit_population(model, RATES, splits, config, tmp_path / "crashed")
        resumed = fit_population(model, RATES, splits, config, tmp_path / "crashed")
    at_death = after_epochs[1].state
    for run in (straight, resumed):
        assert [m["diverged_epoch"] for m in run.members] == [None, 1, None]
        assert [r["trained"] for r in run.history] == [[True] * 3] + [[True, False, True]] * 2
        assert np.asarray(run.state.step).tolist() == [18, 6, 18]
        frozen = _member(run.state.params, 1)
        chex.assert_tree_all_finite(frozen)
        chex.assert_trees_all_equal(frozen, _member(at_death.params, 1))
        chex.assert_trees_all_equal(_member(run.state.opt_state, 1), _member(at_death.opt_state, 1))
        moved = _member(run.state.params, 0)
        assert not np.array_equal(jax.tree.leaves(moved)[0], jax.tree.leaves(at_death.params)[0][0])
    chex.assert_trees_all_equal(resumed.state.params, straight.state.params)
    for a, b in zip(resumed.history, straight.history, strict=True):
        assert a["train_loss"] == b["train_loss"] and a["validation_loss"] == b["validation_loss"]


def test_each_member_keeps_the_params_of_its_own_best_epoch(tmp_path, monkeypatch, after_epochs):
    """Hand-made validation losses give the members different best epochs (2, 1 and 3): each member's
    best parameters are exactly its parameters after that epoch."""
    curves = {0: [3.0, 2.0, 2.5], 1: [1.0, 2.0, 3.0], 2: [3.0, 2.0, 1.5]}
    real = _population._Population.evaluate
    epoch = iter(range(3))

    def hand_made(self, split, state):
        values = real(self, split, state)
        if split != "validation":
            return values
        e = next(epoch)
        return {**values, "loss": [curves[k][e] for k in range(len(RATES))]}

    with monkeypatch.context() as patch:
        patch.setattr(_population._Population, "evaluate", hand_made)
        pop = fit_population(_model(), RATES, blob_splits(), _config(), tmp_path / "best")
    assert [m["best_epoch"] for m in pop.members] == [2, 1, 3]
    assert [m["best_validation_loss"] for m in pop.members] == [2.0, 1.0, 1.5]
    assert pop.summary["best_member"] == 1
    for k, best_epoch in enumerate((2, 1, 3)):
        reference = pop.state if best_epoch == 3 else after_epochs[best_epoch].state
        chex.assert_trees_all_equal(_member(pop.best_params, k), _member(reference.params, k))
    # Not the final parameters, where the best epoch was earlier.
    assert not np.array_equal(
        jax.tree.leaves(_member(pop.best_params, 1))[0],
        jax.tree.leaves(_member(pop.state.params, 1))[0],
    )


def test_resume_continues_exactly(tmp_path):
    splits, model = blob_splits(), _model()
    fit_population(model, RATES, splits, _config(epochs=2), tmp_path / "run")
    resumed = fit_population(model, RATES, splits, _config(epochs=3), tmp_path / "run")
    scratch = fit_population(model, RATES, splits, _config(epochs=3), tmp_path / "scratch")
    assert len(resumed.history) == 3
    chex.assert_trees_all_close(resumed.state.params, scratch.state.params, atol=1e-6)
    assert [m["best_epoch"] for m in resumed.members] == [m["best_epoch"] for m in scratch.members]


def test_other_optimizers_take_the_rate_per_member(tmp_path):
    splits, model, config = blob_splits(), _model(), _config(epochs=2)
    pop = fit_population(model, (1e-3, 1e-2), splits, config, tmp_path / "p", optimizer=optax.adam)
    single = fit(model, optax.adam(1e-2), splits, config, tmp_path / "s")
    chex.assert_trees_all_close(
        jax.tree.map(lambda x: x[1], pop.state.params), single.state.params, atol=1e-5, rtol=1e-5
    )


def test_language_model_member_matches_a_manual_loop(tmp_path):
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, 7, size=600).astype(np.int32)
    splits = {"train": tokens, "validation": tokens[:200], "test": tokens[200:400]}
    model = models.make_model(
        "char_lstm", vocab_size=7, embed_dim=8, hidden_size=8, num_layers=1, dropout_rate=0.0
    )
    config = _config(epochs=1, batch_size=4, seq_len=10, eval_streams=2)
    rates = (0.5, 2.0)
    pop = fit_population(model, rates, splits, config, tmp_path / "lm", task="language_model")
    assert all(np.isfinite(m["test_bits_per_char"]) for m in pop.members)
    tx = optax.sgd(rates[1])
    state = create_train_state(
        model, tx, jax.random.key(config.seed), np.zeros((1, 10), np.int32),
        carry=model.initial_carry(4),
    )  # fmt: skip
    step = jax.jit(make_train_step(model, tx, task="language_model"))
    for batch in lm_batch_iterator(tokens, 4, 10):
        state, _ = step(state, batch)
    chex.assert_trees_all_close(
        jax.tree.map(lambda x: x[1], pop.state.params), state.params, atol=1e-5, rtol=1e-5
    )


def test_init_population_stacks_members_with_their_rates():
    model = _model()
    tx = make_population_optimizer(optax.sgd)
    state = init_population(model, tx, RATES, jax.random.key(0), np.zeros((1, 12), np.float32))
    np.testing.assert_allclose(state.opt_state.hyperparams["learning_rate"], RATES, rtol=1e-7)
    leaves = jax.tree.leaves(state.params)
    assert all(leaf.shape[0] == len(RATES) for leaf in leaves)
    np.testing.assert_array_equal(leaves[0][0], leaves[0][2])  # same initialisation


@pytest.mark.parametrize("rates", [(), (0.1, -1.0), (0.1, float("nan")), ((0.1, 0.2),)])
def test_bad_rates_raise(rates, tmp_path):
    with pytest.raises(ValueError, match="learning_rates"):
        fit_population(_model(), rates, blob_splits(), _config(), tmp_path)


def test_optimizer_without_injected_rate_raises():
    with pytest.raises(ValueError, match="tx must keep its learning rate"):
        init_population(_model(), optax.sgd(0.1), RATES, jax.random.key(0), np.zeros((1, 12)))


def test_step_checkpoints_and_prefetch_resume_a_crash_exactly(tmp_path, monkeypatch):
    """The engine gives the population ``fit``'s ``checkpoint_every_steps`` and ``prefetch``: a run that
    crashes mid-epoch resumes from its last step checkpoint (a frozen member included) to the
    uninterrupted run."""
    from randlr_jax.training import Checkpointer
    from randlr_jax.training._feed import SplitFeed

    splits, model = blob_splits(), _model()
    rates = (0.1, 0.5, 1e4)  # the last diverges: frozen from epoch 2 on (patience=1)
    straight = fit_population(model, rates, splits, _config(patience=1), tmp_path / "straight")
    config = _config(patience=1, checkpoint_every_steps=4, prefetch=2)
    load = SplitFeed.train_chunks

    def crashing(self, epoch, start_batch, sizes):
        first = start_batch
        for size, chunk in zip(sizes, load(self, epoch, start_batch, sizes), strict=True):
            if epoch == 1 and first >= 4:  # 6 steps an epoch: after step 10, past the step-8 one
                raise RuntimeError("loader crashed")
            yield chunk
            first += size

    with monkeypatch.context() as patch:
        patch.setattr(SplitFeed, "train_chunks", crashing)
        with pytest.raises(RuntimeError, match="loader crashed"):
            fit_population(model, rates, splits, config, tmp_path / "crashed")
    with Checkpointer(tmp_path / "crashed" / "checkpoints") as ckpt:
        assert ckpt.latest_step() == 8
    assert len((tmp_path / "crashed" / "metrics.jsonl").read_text().splitlines()) == 1
    resumed = fit_population(model, rates, splits, config, tmp_path / "crashed")
    chex.assert_trees_all_equal(resumed.state.params, straight.state.params)
    chex.assert_trees_all_equal(resumed.best_params, straight.best_params)
    assert [r["trained"] for r in resumed.history] == [r["trained"] for r in straight.history]
    assert [r["trained"][2] for r in resumed.history][:2] == [True, False]
    for key in ("epochs_run", "best_epoch", "best_validation_loss", "test_loss"):
        assert [m[key] for m in resumed.members] == [m[key] for m in straight.members], key
