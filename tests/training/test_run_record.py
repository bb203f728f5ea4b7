"""``run.json``: the fingerprint of what a run directory holds a run of, checked before resuming."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import textwrap

import jax
import numpy as np
import optax
import pytest

from randlr_jax import models
from randlr_jax.training import LoopConfig, check_or_write, fingerprint
from randlr_jax.training import _run_record as rr


def _splits(n=300, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 40)).astype(np.float32)
    y = rng.integers(0, 10, size=n).astype(np.int32)
    return {"train": {"x": x, "y": y}, "validation": {"x": x[:50], "y": y[:50]}}


def _record(**changes):
    args = dict(
        config=LoopConfig(epochs=2, batch_size=32, progress=False),
        task="classification",
        model=models.make_model("mlp", num_classes=10, widths=(16,)),
        splits=_splits(),
        optimizer=optax.sgd(0.1, momentum=0.9),
        run_info={"optimizer": "sgd", "learning_rate": 0.1, "momentum": 0.9},
    )
    args.update(changes)
    config = args.pop("config")
    return fingerprint(config, **args)


def test_fingerprint_is_deterministic_and_reads_back_from_json():
    record = _record()
    assert record == _record()
    assert json.loads(json.dumps(record)) == record
    assert record["loop"]["epochs"] == 2 and "progress" not in record["loop"]
    assert record["data"]["train/x"]["shape"] == [300, 40]
    assert record["data"]["train/y"]["dtype"] == "int32"
    assert record["optimizer"]["kind"].endswith("chain.<locals>.update_fn")
    assert "0x" not in json.dumps(record)  # no memory address anywhere


@pytest.mark.parametrize(
    "changes, key",
    [
        (dict(optimizer=optax.sgd(0.5, momentum=0.9)), "optimizer"),  # a closed-over rate
        (dict(optimizer=optax.adam(0.1)), "optimizer"),
        (dict(model=models.make_model("mlp", num_classes=10, widths=(17,))), "model"),
        (dict(config=LoopConfig(epochs=3, batch_size=32)), "loop"),
        (dict(config=LoopConfig(epochs=2, batch_size=32, seed=1)), "loop"),
        (dict(splits=_splits(seed=1)), "data"),
        (dict(splits=_splits(n=299)), "data"),  # a cut
        (dict(run_info={"optimizer": "sgd", "learning_rate": 0.5}), "run_info"),
        (dict(task="language_model"), "task"),
        (dict(learning_rates=[0.1, 1.0]), "learning_rates"),
        (dict(train_step=lambda state, batch: (state, {})), "train_step"),
    ],
)
def test_what_determines_the_numbers_changes_the_fingerprint(changes, key):
    before, after = _record(), _record(**changes)
    assert before != after
    assert {k.split(".")[0] for k in rr.differing_keys(before, after)} == {key}


def test_cosmetic_loop_fields_do_not():
    cosmetic = dict(
        progress=True, description="x", log_every=3, prefetch=2, checkpoint_every_steps=5,
        checkpoint_every_seconds=1.0, steps_per_dispatch=4, device_data_mb=0.0,
        test_every_epoch=True,
    )  # fmt: skip
    config = LoopConfig(epochs=2, batch_size=32, **cosmetic)
    assert _record(config=config) == _record()
    assert set(cosmetic) == rr.IGNORED_LOOP_FIELDS


def test_data_hash_sees_both_ends_of_an_array():
    splits = _splits()
    for index in (0, -1):
        changed = _splits()
        changed["train"]["x"].reshape(-1)[index] += 1.0
        assert rr.data_fingerprint(changed) != rr.data_fingerprint(splits)
    tokens = {"train": np.arange(10, dtype=np.int32)}  # a language model's 1-D token stream
    assert rr.data_fingerprint(tokens)["train"]["shape"] == [10]


def test_optimizer_description_is_the_same_in_another_process():
    # Nothing process-specific (ids, addresses, hash seeds) may reach the digest: a resumed run in a new
    # process must match its record.
    code = textwrap.dedent(
        """
        import jax, optax
        from randlr_jax.training import _run_record as rr
        schedule = optax.piecewise_constant_schedule(0.1, {10: 0.2})
        print(rr.describe(optax.chain(optax.add_decayed_weights(1e-4), optax.sgd(schedule, 0.9)))["digest"])
        print(rr.describe(optax.sgd)["digest"])
        """
    )
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONHASHSEED": "123"}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env
    )
    schedule = optax.piecewise_constant_schedule(0.1, {10: 0.2})
    here = rr.describe(optax.chain(optax.add_decayed_weights(1e-4), optax.sgd(schedule, 0.9)))
    assert out.stdout.split() == [here["digest"], rr.describe(optax.sgd)["digest"]]
    other = optax.piecewise_constant_schedule(0.1, {11: 0.2})
    assert rr.describe(optax.sgd(other, 0.9)) != rr.describe(optax.sgd(schedule, 0.9))


def test_arrays_and_keys_in_a_closure_are_described_by_content():
    def rates(value):
        return optax.scale_by_learning_rate(1.0), {"w": np.full((3,), value, np.float32)}

    assert rr.describe(rates(0.1)) == rr.describe(rates(0.1))
    assert rr.describe(rates(0.1)) != rr.describe(rates(0.2))

    def keyed(seed):
        key = jax.random.key(seed)
        return lambda: key

    assert rr.describe(keyed(0)) == rr.describe(keyed(0)) != rr.describe(keyed(1))


def test_check_or_write_records_then_accepts_the_same_run(tmp_path):
    record = _record()
    check_or_write(tmp_path / "run", record)
    saved = json.loads((tmp_path / "run" / "run.json").read_text())
    assert saved["sections"]["fit"] == record and saved["format"] == rr.FORMAT
    (tmp_path / "run" / "metrics.jsonl").write_text("")  # the run started
    check_or_write(tmp_path / "run", record)  # the same settings: resume
    assert rr.read_record(tmp_path / "run") == record


def test_other_settings_in_a_directory_that_holds_a_run_are_refused(tmp_path):
    check_or_write(tmp_path, _record())
    os.makedirs(tmp_path / "checkpoints" / "30")
    other = _record(
        optimizer=optax.adam(1e-3),
        run_info={"optimizer": "adam", "learning_rate": 1e-3},
        config=LoopConfig(epochs=5, batch_size=32),
    )
    with pytest.raises(ValueError) as error:
        check_or_write(tmp_path, other)
    message = str(error.value)
    for key in ("loop.epochs", "optimizer.digest", "run_info.optimizer", "run_info.learning_rate"):
        assert key in message, (key, message)
    assert (
        "recorded 2, now 5" in message
        and "run_info.momentum (recorded 0.9, now (absent))" in message
    )
    assert "another --workdir" in message and "delete" in message
    assert "model" not in rr.differing_keys(_record(), other)  # only what differs is named
    assert rr.read_record(tmp_path) == _record()  # the record is left alone


def test_a_larger_epoch_budget_continues_a_smaller_one_is_refused(tmp_path):
    check_or_write(tmp_path, _record())
    (tmp_path / "metrics.jsonl").write_text("")
    longer = _record(config=LoopConfig(epochs=6, batch_size=32))
    check_or_write(tmp_path, longer)  # continues the run
    assert rr.read_record(tmp_path)["loop"]["epochs"] == 6
    with pytest.raises(
        ValueError, match=r"loop\.epochs \(recorded 6, now 2; it may grow, not shrink\)"
    ):
        check_or_write(tmp_path, _record())
    with pytest.raises(ValueError, match=r"loop\.epochs \(recorded 6, now 8\); loop\.seed"):
        check_or_write(tmp_path, _record(config=LoopConfig(epochs=8, batch_size=32, seed=1)))
    with pytest.raises(ValueError, match=r"loop\.epochs"):  # strict when asked
        check_or_write(tmp_path, _record(config=LoopConfig(epochs=7, batch_size=32)), growable=())


def test_a_record_with_nothing_run_is_replaced(tmp_path):
    # A run that failed before training (e.g. its batch size): nothing to protect.
    check_or_write(tmp_path, _record())
    (tmp_path / "config.json").write_text("{}")
    other = _record(optimizer=optax.adam(1e-3))
    check_or_write(tmp_path, other)
    assert rr.read_record(tmp_path) == other
    assert sorted(os.listdir(tmp_path)) == ["config.json", "run.json"]  # no temporary file left


def test_sections_are_checked_each_on_its_own(tmp_path):
    check_or_write(tmp_path, {"what": "runner's view"}, section="runner")
    (tmp_path / "results.json").write_text("{}")
    check_or_write(tmp_path, _record())  # a first "fit" record next to the runner's
    check_or_write(tmp_path, {"what": "runner's view"}, section="runner")
    with pytest.raises(ValueError, match=r"'runner' record.*differs in: what \(recorded"):
        check_or_write(tmp_path, {"what": "another"}, section="runner")
    assert rr.read_record(tmp_path, "fit") == _record()


def test_values_are_normalized_as_json_reads_them(tmp_path):
    record = {"rates": (0.1, np.float32(0.5)), "missing": float("nan"), 3: np.int64(4)}
    check_or_write(tmp_path, record)
    (tmp_path / "results.json").write_text("{}")
    check_or_write(tmp_path, record)  # NaN and tuples compare equal after a round trip
    assert rr.read_record(tmp_path) == {"rates": [0.1, 0.5], "missing": "nan", "3": 4}


def test_a_damaged_record_is_an_error_that_says_what_to_do(tmp_path):
    (tmp_path / "run.json").write_text("{not json")
    with pytest.raises(ValueError, match="not a readable run record.*delete"):
        check_or_write(tmp_path, _record())


def test_loop_config_is_required():
    with pytest.raises(TypeError, match="LoopConfig"):
        fingerprint({"epochs": 2}, task="classification", model=None, splits={})
    assert dataclasses.is_dataclass(LoopConfig())
