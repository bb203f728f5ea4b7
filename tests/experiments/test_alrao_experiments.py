"""The Alrao experiment scripts: each ``--quick`` path runs on a tiny budget and writes well-formed outputs."""

from __future__ import annotations

import dataclasses
import json
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import (
    _common,
    alrao_appendix,
    alrao_compare,
    alrao_feature_guard,
    alrao_interval,
    alrao_posterior,
    demo,
)
from randlr_jax import models
from randlr_jax.training import read_jsonl

SGD_GRID = _common.SGD_GRID


def _finite(*values):
    return all(v is not None and math.isfinite(float(v)) for v in values)


def _png(path):
    assert os.path.exists(path), path
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_compare_quick_writes_a_row_for_every_method(tmp_path, capsys):
    out = alrao_compare.main(
        ["--workdir", str(tmp_path), "--settings", "digits_mlp", "--quick", "--epochs", "1"]
    )
    result = out["results"]["digits_mlp"]
    assert set(result["rows"]) == {"sgd_best", "adam", "alrao_sgd"}
    for row in result["rows"].values():
        assert _finite(*row["loss"], *row["accuracy"])
    assert [r["learning_rate"] for r in result["sgd_grid"]] == list(SGD_GRID)
    assert result["rows"]["sgd_best"]["learning_rate"] in SGD_GRID
    table = (tmp_path / "table.md").read_text()
    assert "| digits_mlp | 1 |" in table
    assert table.count("| digits_mlp | ") == 1 + len(SGD_GRID)
    with open(tmp_path / "results.json") as f:
        assert "digits_mlp" in json.load(f)["results"]
    _png(result["figure"])
    assert "figure:" in capsys.readouterr().out
    # Every run's config.json says what ran: Adam at its rate, the grid's rates, Alrao's interval.
    root = tmp_path / "digits_mlp" / "seed0"
    adam = json.loads((root / "adam" / "config.json").read_text())
    assert (adam["optimizer"], adam["learning_rate"]) == ("adam", 1e-3)
    grid = json.loads((root / "sgd_grid" / "config.json").read_text())
    assert grid["optimizer"] == "sgd" and grid["learning_rate"] is None
    assert grid["learning_rates"] == list(SGD_GRID)
    alrao = json.loads((root / "alrao_sgd" / "config.json").read_text())
    assert alrao["optimizer"] == "alrao_sgd" and alrao["optimizer_kwargs"]["lr_max"] == 10.0
    assert all(c["loop"]["epochs"] == 1 for c in (adam, grid, alrao))
    # The same directory with other settings (one device, not eight): refused, not resumed under the
    # new labels.
    with pytest.raises(ValueError, match=r"loop\.num_devices \(recorded null, now 1\).*--workdir"):
        alrao_compare.main(
            ["--workdir", str(tmp_path), "--settings", "digits_mlp", "--quick", "--epochs", "1"]
            + ["--mesh", "data=1"]
        )


def test_demo_quick_prints_the_table_and_the_figure(tmp_path, capsys):
    summary = demo.main(
        ["--workdir", str(tmp_path), "--quick", "--epochs", "1", "--mesh", "data=1"]
    )
    printed = capsys.readouterr().out
    assert "Alrao-SGD" in printed and "Adam" in printed and "SGD, best rate" in printed
    assert printed.count("| SGD ") == len(SGD_GRID)
    _png(summary["result"]["figure"])
    assert os.path.abspath(summary["result"]["figure"]) in printed


def test_interval_quick_writes_the_heatmap(tmp_path):
    out = alrao_interval.main(
        ["--workdir", str(tmp_path), "--quick", "--setting", "digits_mlp", "--mesh", "data=1"]
    )
    cells = out["cells"]
    assert {(c["lr_min"], c["lr_max"], c["method"]) for c in cells} == {
        (1e-2, 1e-2, "sgd"),
        (1.0, 1.0, "sgd"),
        (1e-2, 1.0, "alrao_sgd"),
    }
    assert all(_finite(c["train_loss"], c["test_loss"]) for c in cells)
    _png(out["figure"])


def test_posterior_quick_records_a_distribution_over_the_copies(tmp_path):
    out = alrao_posterior.main(["--workdir", str(tmp_path), "--quick", "--setting", "digits_mlp"])
    assert len(out["copy_learning_rates"]) == _common.ALRAO_SETTINGS["digits_mlp"].num_copies
    np.testing.assert_allclose(sum(out["final_posterior"]), 1.0, rtol=1e-4)
    trace = read_jsonl(os.path.join(tmp_path, "posterior.jsonl"))
    assert len(trace) >= 2
    assert [e["step"] for e in trace] == sorted({e["step"] for e in trace})  # one record a step
    for entry in trace:
        np.testing.assert_allclose(sum(entry["posterior"]), 1.0, rtol=1e-4)
    assert out["argmax_learning_rate"] in [pytest.approx(r) for r in out["copy_learning_rates"]]
    _png(out["figure"])


def test_appendix_quick_runs_every_study(tmp_path):
    out = alrao_appendix.main(
        ["all", "--workdir", str(tmp_path), "--quick", "--setting", "digits_mlp", "--epochs", "1"]
        + ["--mesh", "data=1"]  # one device: the 8-device path is covered by the compare test
    )
    assert set(out) == {*alrao_appendix.COMMANDS, "config", "wall_time_s"}
    assert json.loads((tmp_path / "results.json").read_text())["params"] == json.loads(
        json.dumps(out["params"])
    )
    assert {(r["per"]) for r in out["per_weight"]["rows"]} == {"feature", "weight"}
    assert [r["p"] for r in out["fraction"]["rows"]] == [0.25, 1.0]
    assert out["fraction"]["rows"][1]["trained_weight_fraction"] == 1.0
    assert 0.0 < out["fraction"]["rows"][0]["trained_weight_fraction"] < 0.6
    assert [r["width"] for r in out["wider"]["rows"]] == [1.0, 1.0, 3.0, 3.0]
    for name in ("per_weight", "fraction", "adam", "wider"):
        for row in out[name]["rows"]:
            assert _finite(row["test_loss"], row["test_accuracy"]), (name, row)
        _png(out[name]["figure"])
        assert (tmp_path / name / "table.md").read_text().count("\n") == 2 + len(out[name]["rows"])


def test_parameter_counts_add_the_copies_of_the_classifier():
    rows, figure = alrao_appendix.params(alrao_appendix.quick(alrao_appendix.DEFAULT))
    assert figure is None
    for row, (classes, features, copies) in zip(
        rows, [(10, 100, 10), (10, 125, 10), (88, 100, 6)], strict=True
    ):
        assert row["with_alrao"] - row["without_alrao"] == (copies - 1) * (features + 1) * classes


def test_fraction_rates_share_a_feature_and_hit_the_fraction():
    model = models.make_model("mlp", num_classes=10, widths=(400, 400))
    params = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 40))))["params"]
    rates = alrao_appendix.fraction_learning_rates(jax.random.key(1), params, 0.1, 0.3)
    kernel = np.asarray(rates["body"]["dense_0"]["kernel"])[0]
    bias = np.asarray(rates["body"]["dense_0"]["bias"])
    np.testing.assert_array_equal(kernel, bias)  # a feature's weights and bias train together
    assert np.all((kernel == 0.0) | np.isclose(kernel, 0.1))
    assert abs(np.mean(kernel > 0) - 0.3) < 0.08
    assert all(float(r) == pytest.approx(0.1) for r in jax.tree.leaves(rates["head"]))
    none = alrao_appendix.fraction_learning_rates(jax.random.key(1), params, 0.1, 0.0)
    assert all(not np.any(np.asarray(r)) for r in jax.tree.leaves(none["body"]))
    with pytest.raises(ValueError, match="p must be in"):
        alrao_appendix.fraction_learning_rates(jax.random.key(1), params, 0.1, 1.5)


@pytest.mark.parametrize(
    "module",
    [demo, alrao_compare, alrao_appendix, alrao_feature_guard, alrao_interval, alrao_posterior],
    ids=lambda m: m.__name__.rpartition(".")[2],
)
def test_every_script_has_one_configuration_mechanism(module):
    # Config, CONFIGS made from the default, quick(config) -> Config: nothing else decides the study.
    assert module.CONFIGS["default"] == module.Config()
    for name, config in module.CONFIGS.items():
        assert isinstance(config, module.Config), name
        assert isinstance(module.quick(config), module.Config) and module.quick(config) != config
    assert dataclasses.asdict(module.quick(module.Config()))  # plain values, recorded in results


def test_quick_shrinks_the_compare_study_to_one_seed_and_the_smoke_epochs():
    config = alrao_compare.quick(alrao_compare.CONFIGS["large"])
    assert config.seeds == (0,) and config.epochs == 100  # an explicit budget stays
    default = alrao_compare.quick(alrao_compare.DEFAULT)
    assert [alrao_compare.epochs_of(default, _common.ALRAO_SETTINGS[n]) for n in default.settings] == [
        2, 2, 2, 1
    ]  # fmt: skip
    assert (
        alrao_compare.setting_of(default, "char_lstm").max_train_tokens == _common.QUICK_LM_TOKENS
    )
    with pytest.raises(ValueError, match="epoch_budget must be"):
        alrao_compare.Config(epoch_budget="all")
