"""``JsonLinesLog``: the resumable JSON-lines callback of ``fit``, and ``read_jsonl``.

The property that matters: a run that dies past its last checkpoint and is resumed leaves the same file
as the uninterrupted run (no duplicate and no orphan line), checked with ``fit`` itself; the rest are
the log's own rules (what a record holds, where it drops, a line cut short, bad arguments).
"""

from __future__ import annotations

import json
import math

import numpy as np
import optax
import pytest

from randlr_jax import models
from randlr_jax.training import JsonLinesLog, LoopConfig, fit, read_jsonl
from tests.helpers import RaiseAt, blob_splits

# blob_splits: 96 training examples, batches of 16: 6 steps an epoch; logged at steps 2, 4, 6, ...
# A checkpoint at every epoch's end (step 6, 12).
_CONFIG = LoopConfig(
    epochs=2, batch_size=16, eval_batch_size=24, progress=False, log_every=2,
    checkpoint_every_steps=6,
)  # fmt: skip
_MODEL = models.make_model("mlp", num_classes=3, widths=(8,))
_TX = optax.sgd(0.1, momentum=0.9)  # one object for every call: the step compiles once


def test_a_run_resumed_after_a_crash_keeps_one_record_per_logged_step(tmp_path):
    splits = blob_splits()
    path = tmp_path / "log.jsonl"
    with pytest.raises(RuntimeError, match="crash"):
        # The log comes first: it writes steps 8 and 10, past the epoch-end checkpoint at step 6.
        fit(
            _MODEL,
            _TX,
            splits,
            _CONFIG,
            tmp_path / "run",
            callbacks=[JsonLinesLog(path), RaiseAt(10)],
        )
    before = read_jsonl(path)
    assert [r["step"] for r in before] == [2, 4, 6, 8, 10]
    resumed = JsonLinesLog(path, keys=["loss"])
    fit(_MODEL, _TX, splits, _CONFIG, tmp_path / "run", callbacks=[resumed])
    records = resumed.read()
    assert [r["step"] for r in records] == [2, 4, 6, 8, 10, 12]
    # Steps 2-6 are the crashed run's lines (every metric), 8-12 the resumed run's (its keys only):
    # the lines past the checkpoint were dropped, not kept beside the new ones.
    assert records[:3] == before[:3] and all("accuracy" in r for r in records[:3])
    assert all(set(r) == {"step", "loss"} for r in records[3:])
    # Resuming is exact: the step-8 loss written again is the one the crashed run wrote.
    assert records[3]["loss"] == pytest.approx(before[3]["loss"], rel=1e-6)


def test_records_hold_the_step_and_the_chosen_fields(tmp_path):
    metrics = {"loss": float("nan"), "posterior": np.array([0.25, 0.75]), "accuracy": np.float32(1)}
    every = JsonLinesLog(tmp_path / "every.jsonl")
    every(3, metrics)
    (record,) = every.read()
    assert record["step"] == 3 and math.isnan(record["loss"])
    assert record["posterior"] == [0.25, 0.75] and record["accuracy"] == 1.0
    assert json.loads((tmp_path / "every.jsonl").read_text())["loss"] == "nan"  # valid JSON
    chosen = JsonLinesLog(tmp_path / "chosen.jsonl", keys=["posterior"])
    chosen(3, metrics)
    assert chosen.read() == [{"step": 3, "posterior": [0.25, 0.75]}]
    computed = JsonLinesLog(tmp_path / "sub" / "computed.jsonl", record=lambda s, m: {"n": 16 * s})
    computed(3, metrics)  # the directory is made
    assert computed.read() == [{"step": 3, "n": 48}]


def test_drops_from_the_first_step_and_from_any_step_not_past_the_last(tmp_path):
    path = tmp_path / "log.jsonl"
    log = JsonLinesLog(path, keys=["loss"])
    for step in (2, 4, 6, 8):
        log(step, {"loss": float(step)})
    again = JsonLinesLog(path, keys=["loss"])  # a resumed run's first call
    again(6, {"loss": -6.0})
    assert again.read() == [
        {"step": 2, "loss": 2.0},
        {"step": 4, "loss": 4.0},
        {"step": 6, "loss": -6.0},
    ]
    again(8, {"loss": -8.0})
    again(2, {"loss": -2.0})  # the same log handed to a run started over
    assert again.read() == [{"step": 2, "loss": -2.0}]
    fresh = JsonLinesLog(path, keys=["loss"])  # a fresh run over an old file: all of it goes
    fresh(2, {"loss": 0.5})
    assert fresh.read() == [{"step": 2, "loss": 0.5}]


def test_a_last_line_cut_short_is_dropped_and_a_broken_one_elsewhere_is_an_error(tmp_path):
    path = tmp_path / "log.jsonl"
    path.write_text('{"step": 2, "loss": 1.0}\n{"step": 4, "lo')  # an append cut short
    assert read_jsonl(path) == [{"step": 2, "loss": 1.0}]
    log = JsonLinesLog(path, keys=["loss"])
    log(4, {"loss": 0.5})
    assert log.read() == [{"step": 2, "loss": 1.0}, {"step": 4, "loss": 0.5}]
    assert read_jsonl(tmp_path / "absent.jsonl") == []
    path.write_text('{"step": 2\n{"step": 4}\n')
    with pytest.raises(ValueError, match="line 1"):
        read_jsonl(path)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"path": ""}, "path must be"),
        ({"path": None}, "path must be"),
        ({"path": "a.jsonl", "keys": "loss"}, "keys must be"),
        ({"path": "a.jsonl", "keys": []}, "keys must be"),
        ({"path": "a.jsonl", "keys": ["loss", 3]}, r"keys\[1\] must be"),
        ({"path": "a.jsonl", "record": "loss"}, "record must be"),
        ({"path": "a.jsonl", "keys": ["loss"], "record": lambda s, m: {}}, "exclude each other"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        JsonLinesLog(**kwargs)


def test_bad_calls(tmp_path):
    with pytest.raises(ValueError, match=r"keys \['posterior'\] are not among the metrics"):
        JsonLinesLog(tmp_path / "a.jsonl", keys=["posterior"])(2, {"loss": 1.0})
    with pytest.raises(ValueError, match="a dict of fields"):
        JsonLinesLog(tmp_path / "b.jsonl", record=lambda s, m: [s])(2, {})
    with pytest.raises(ValueError, match="must not return a 'step'"):
        JsonLinesLog(tmp_path / "c.jsonl", record=lambda s, m: {"step": s})(2, {})
    assert not (tmp_path / "a.jsonl").exists()
