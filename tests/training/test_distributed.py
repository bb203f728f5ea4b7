"""Many devices and hosts: the same seed gives the same run on 1 and 8 devices, and on 2 processes.

Alrao's switch posterior (the copies' log-likelihoods are global-batch means), AutoDrop's angles (taken on the
full parameters) and NOH's proposals (from the full gradient) must not depend on how the batch is split.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys

import chex
import jax
import numpy as np
import optax
import pytest

from randlr_jax import alrao, models
from randlr_jax.alrao import _copies as cc
from randlr_jax.alrao import _optimizers as _alrao
from randlr_jax.alrao import make_alrao_train_step
from randlr_jax.autodrop import _autodrop as _autodrop
from randlr_jax.noh import _noh as noh
from randlr_jax.training import LoopConfig, distributed, fit
from tests import multihost_run
from tests.helpers import blob_splits

RTOL = 1e-5


def _config(num_devices, **kw):
    base = dict(
        epochs=2, batch_size=16, eval_batch_size=24, progress=False, num_devices=num_devices
    )
    return LoopConfig(**{**base, **kw})


def _assert_close(a, b, rtol=RTOL, atol=1e-6):
    chex.assert_trees_all_close(jax.device_get(a), jax.device_get(b), rtol=rtol, atol=atol)


@pytest.mark.parametrize(
    "spec, expected",
    [
        ("auto", distributed.MeshSpec()),
        ("8", distributed.MeshSpec(data=8)),
        ("data=4", distributed.MeshSpec(data=4)),
        ("data=4,copies=2", distributed.MeshSpec(data=4, copies=2)),
        ("copies=2", distributed.MeshSpec(copies=2)),
    ],
)
def test_parse_mesh(spec, expected):
    assert distributed.parse_mesh(spec) == expected


@pytest.mark.parametrize(
    "spec", ["data=0", "gpus=2", "data=4,data=2", "data=x", "copies=-1", "4x2"]
)
def test_parse_mesh_rejects(spec):
    with pytest.raises(ValueError, match="mesh must be"):
        distributed.parse_mesh(spec)


def test_flags_round_trip():
    parser = distributed.add_arguments(argparse.ArgumentParser())
    args = parser.parse_args(["--mesh", "data=4,copies=2"])
    spec = distributed.from_args(args)
    assert (spec.num_devices, spec.copies) == (8, 2)
    assert args.distributed is False and args.coordinator_address is None


def test_initialize_rejects_incomplete_cluster():
    with pytest.raises(ValueError, match="num_processes"):
        distributed.initialize("localhost:1234")
    with pytest.raises(ValueError, match="process_id"):
        distributed.initialize("localhost:1234", 2, 2)


def test_alrao_same_on_one_and_eight_devices(tmp_path):
    head = cc.AlraoHead(num_outputs=3, num_copies=4)
    model = models.make_model("mlp", widths=(16,), head=head)
    tx = _alrao.alrao_sgd(jax.random.key(3), 0.01, 2.0, 4, momentum=0.5)
    runs = {
        n: fit(
            model,
            tx,
            blob_splits(),
            _config(n),
            tmp_path / str(n),
            train_step=make_alrao_train_step(model, tx),
        )
        for n in (1, 8)
    }
    one, eight = runs[1], runs[8]
    assert eight.summary["num_devices"] == 8
    _assert_close(one.state.params, eight.state.params)
    switch_one = cc.get_switch_state(one.state.model_state)
    switch_eight = cc.get_switch_state(eight.state.model_state)
    _assert_close(switch_one, switch_eight)
    # The posterior moved away from uniform, so the comparison is not vacuous.
    posterior = np.asarray(one.history[-1]["last_posterior"])
    assert np.abs(posterior - 0.25).max() > 1e-3
    np.testing.assert_allclose(
        one.history[-1]["last_posterior"], eight.history[-1]["last_posterior"], rtol=RTOL, atol=1e-6
    )


def test_autodrop_same_on_one_and_eight_devices(tmp_path):
    model = models.make_model("mlp", widths=(16,), num_classes=3)
    # Periods of 2 steps and a loose threshold: angles are measured and a drop happens in 12 steps.
    tx = optax.chain(
        optax.sgd(0.3, momentum=0.9),
        _autodrop.autodrop(
            0.3, steps_per_period=2, threshold=45.0, max_threshold=90.0, drop_delay=1
        ),
    )
    runs = {n: fit(model, tx, blob_splits(), _config(n), tmp_path / str(n)) for n in (1, 8)}
    states = {n: _autodrop.get_autodrop_state(r.state.opt_state) for n, r in runs.items()}
    assert int(states[1].num_drops) >= 1 and float(states[1].angle) > 0
    _assert_close(states[1].angles, states[8].angles, rtol=1e-4, atol=1e-3)
    assert int(states[1].num_drops) == int(states[8].num_drops)
    _assert_close(states[1].learning_rate, states[8].learning_rate)
    _assert_close(runs[1].state.params, runs[8].state.params)


def test_noh_same_on_one_and_eight_devices(tmp_path):
    model = models.make_model("mlp", widths=(16,), num_classes=3)
    proposer = noh.LSTMRateProposer()
    tx = noh.noh_adam(noh.init_proposer_params(proposer, jax.random.key(5)), update_every=3)
    runs = {n: fit(model, tx, blob_splits(), _config(n), tmp_path / str(n)) for n in (1, 8)}
    rates = {n: r.state.opt_state.learning_rates for n, r in runs.items()}
    leaves = np.concatenate([np.ravel(x) for x in jax.tree.leaves(jax.device_get(rates[1]))])
    assert leaves.std() > 0  # parameter-wise proposals, not one constant
    _assert_close(rates[1], rates[8])
    _assert_close(runs[1].state.opt_state.lstm_carry, runs[8].state.opt_state.lstm_carry)
    _assert_close(runs[1].state.params, runs[8].state.params)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def test_two_processes_match_one_process(tmp_path):
    """Two processes of 4 CPU devices each (``jax.distributed``, gloo) == one process of 8 devices."""
    port = _free_port()
    out = tmp_path / "two_processes.npz"
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "JAX_PLATFORMS")}
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    workers = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.multihost_worker",
                str(port),
                str(i),
                str(tmp_path / "mh"),
                str(out),
            ],
            cwd=root,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for i in range(2)
    ]
    logs = []
    for worker in workers:
        try:
            logs.append(worker.communicate(timeout=300)[0])
        except subprocess.TimeoutExpired:
            for w in workers:
                w.kill()
            raise
    for worker, log in zip(workers, logs, strict=True):
        assert worker.returncode == 0, log[-4000:]
    two = dict(np.load(out))
    one = multihost_run.host_arrays(multihost_run.run(str(tmp_path / "one"), num_devices=8))
    assert sorted(two) == sorted(one)
    for name in one:
        np.testing.assert_allclose(two[name], one[name], rtol=RTOL, atol=1e-6, err_msg=name)
    # Only process 0 wrote the run's files; both wrote (and restored from) the shared checkpoints.
    assert (tmp_path / "mh" / "results.json").exists()


@pytest.mark.parametrize("task", ["classification", "language_model"])
def test_population_same_on_one_and_eight_devices(task, tmp_path):
    from randlr_jax.training._population import fit_population

    if task == "classification":
        model, splits = models.make_model("mlp", widths=(16,), num_classes=3), blob_splits()
        kw = {}
    else:
        tokens = np.random.default_rng(0).integers(0, 7, size=700).astype(np.int32)
        splits = {"train": tokens, "validation": tokens[:250], "test": tokens[250:500]}
        model = models.make_model(
            "char_lstm", vocab_size=7, embed_dim=8, hidden_size=8, num_layers=1, dropout_rate=0.0
        )
        kw = dict(batch_size=8, seq_len=10, eval_streams=8)
    runs = {
        n: fit_population(
            model, [0.05, 0.5], splits, _config(n, **kw), tmp_path / str(n), task=task
        )
        for n in (1, 8)
    }
    assert runs[8].summary["num_devices"] == 8
    _assert_close(runs[1].state.params, runs[8].state.params)
    np.testing.assert_allclose(
        runs[1].history[-1]["validation_loss"], runs[8].history[-1]["validation_loss"], rtol=RTOL
    )


def test_noh_meta_training_same_on_one_and_eight_devices():
    """NOH's meta-gradient through an unrolled optimizee run, minibatches split over 8 devices."""
    from randlr_jax.noh import _meta_training as mt
    from randlr_jax.training import make_mesh

    proposer = noh.LSTMRateProposer(num_layers=1, hidden_size=4)
    rng = np.random.default_rng(0)
    data = {"x": rng.normal(size=(64, 5)).astype(np.float32)}
    data["y"] = (data["x"] @ rng.normal(size=(5,)).astype(np.float32)).astype(np.float32)

    def loss_fn(params, batch):
        return 0.5 * jax.numpy.mean((batch["x"] @ params["w"] - batch["y"]) ** 2)

    def run(mesh):
        return mt.meta_train(
            noh.init_proposer_params(proposer, jax.random.key(0)),
            lambda p: noh.noh_adam(p, proposer=proposer, update_every=2),
            loss_fn,
            {"w": np.zeros((5,), np.float32)},
            data,
            key=jax.random.key(1),
            batch_size=16,
            horizon=12,
            unroll_length=6,
            num_meta_iterations=2,
            meta_learning_rate=1e-2,
            mesh=mesh,
        )

    one, eight = run(None), run(make_mesh(8))
    before = noh.init_proposer_params(proposer, jax.random.key(0))
    moved = jax.tree.map(
        lambda a, b: float(np.abs(np.asarray(a) - np.asarray(b)).max()), one.lstm_params, before
    )
    assert max(jax.tree.leaves(moved)) > 1e-4
    _assert_close(one.lstm_params, eight.lstm_params, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(
        [r["meta_loss"] for r in one.history], [r["meta_loss"] for r in eight.history], rtol=1e-5
    )


def test_range_test_same_on_one_and_eight_devices():
    from randlr_jax.cyclical import _range_test as rt
    from randlr_jax.training import make_mesh

    model = models.make_model("mlp", widths=(16,), num_classes=3)
    params = model.init(jax.random.key(0), np.zeros((1, 12), np.float32))["params"]
    data = blob_splits()["train"]
    batches = [{k: v[i : i + 16] for k, v in data.items()} for i in range(0, 96, 16)]

    def run(mesh):
        return rt.lr_range_test(
            rt.classification_loss(model),
            params,
            batches,
            lambda lr: optax.sgd(lr, momentum=0.9),
            start=1e-3,
            end=10.0,
            num_iter=30,
            mesh=mesh,
        )

    one, eight = run(None), run(make_mesh(8))
    assert one.stop_reason == eight.stop_reason
    np.testing.assert_allclose(one.losses, eight.losses, rtol=1e-4)


def test_alrao_fit_with_copies_split_over_devices(tmp_path):
    """``LoopConfig(copy_shards=2)``: a (data 4, copies 2) mesh; same run as one device, copies stay split."""
    head = cc.AlraoHead(num_outputs=3, num_copies=4)
    model = models.make_model("mlp", widths=(16,), head=head)
    tx = _alrao.alrao_sgd(jax.random.key(3), 0.01, 2.0, 4, momentum=0.5)
    step = make_alrao_train_step(model, tx)
    one = fit(model, tx, blob_splits(), _config(1), tmp_path / "one", train_step=step)
    split = fit(
        model,
        tx,
        blob_splits(),
        _config(8, copy_shards=2),
        tmp_path / "split",
        train_step=step,
        place_state=alrao.shard_state,
    )
    kernel = split.state.params["head"]["copies"]["kernel"]
    assert kernel.sharding.spec[0] == "copies"
    assert kernel.addressable_shards[0].data.shape[0] == 2  # 4 copies over 2 devices
    assert split.summary["copy_shards"] == 2
    _assert_close(one.state.params, split.state.params)
    _assert_close(
        cc.get_switch_state(one.state.model_state), cc.get_switch_state(split.state.model_state)
    )
    np.testing.assert_allclose(
        one.history[-1]["validation_loss"], split.history[-1]["validation_loss"], rtol=RTOL
    )
    # The checkpoint restores into the split layout.
    again = fit(
        model,
        tx,
        blob_splits(),
        _config(8, copy_shards=2),
        tmp_path / "split",
        train_step=step,
        place_state=alrao.shard_state,
    )
    assert again.state.params["head"]["copies"]["kernel"].sharding.spec[0] == "copies"
    chex.assert_trees_all_equal(jax.device_get(again.state), jax.device_get(split.state))
