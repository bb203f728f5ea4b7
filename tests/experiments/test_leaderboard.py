"""The tuning-free leaderboard: its bookkeeping against hand-computed cases, and one small run of the
script that goes through every kind of method (Alrao, the range test's two, a schedule-free peer
evaluated at its averaged iterate, a plain peer, both grids) and resumes without training again."""

from __future__ import annotations

import json
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from experiments import _common, _tuning_free, leaderboard
from randlr_jax import data as rdata
from randlr_jax.cyclical import RangeTestResult


def _row(method, seed, loss, validation=None, diverged=False, steps=100, wall=1.0):
    return {
        "method": method,
        "seed": seed,
        "loss": loss,
        "accuracy": None if loss is None else 0.5,
        "validation_loss": loss if validation is None else validation,
        "best_epoch": 3,
        "diverged": diverged or loss is None,  # as _tuning_free._tested marks a loss not finite
        "planned_steps": steps,
        "train_steps": steps,
        "wall_time_s": wall,
        "info": {},
    }


def _grid(method, seed, rates, losses, validations):
    members = [
        {**_row(method, seed, loss, validation), "learning_rate": rate}
        for rate, loss, validation in zip(rates, losses, validations, strict=True)
    ]
    return {
        "method": method,
        "seed": seed,
        "members": members,
        "train_steps": 100 * len(rates),
        "wall_time_s": 2.0,
    }


def _runs(rows, model="mlp"):
    return {
        "toy": {
            "setting": {"model": model},
            "metric": "loss",
            "epochs": 3,
            "seeds": [0, 1],
            "rows": rows,
        }
    }


SGD = _common.SGD_GRID
ADAM = _tuning_free.ADAM_GRID


def _tuned_rows():
    # SGD: rate 0.1 (index 4) has the lowest mean validation loss (1.0, 1.2 -> 1.1) although rate 1
    # (index 5) has the lowest validation loss of seed 0 alone (0.9): the choice is over the seeds.
    sgd_val = [[5, 4, 3, 2, 1.0, 0.9, math.inf], [5, 4, 3, 2, 1.2, 1.6, math.inf]]
    sgd_test = [[5, 4, 3, 2, 1.10, 0.95, None], [5, 4, 3, 2, 1.30, 1.70, None]]
    adam_val = [[3, 2, 1.5, 1.4, 9], [3, 2, 1.5, 1.6, 9]]
    adam_test = [[3, 2, 1.40, 1.50, 9], [3, 2, 1.60, 1.70, 9]]
    return {
        "sgd_grid": [_grid("sgd_grid", s, SGD, sgd_test[s], sgd_val[s]) for s in (0, 1)],
        "adam_grid": [_grid("adam_grid", s, ADAM, adam_test[s], adam_val[s]) for s in (0, 1)],
    }


def test_summary_ranks_wins_divergences_and_the_five_percent_rule():
    rows = {
        **_tuned_rows(),
        "cocob": [_row("cocob", 0, 1.00), _row("cocob", 1, 1.10)],  # mean 1.05: best, a win
        "dog": [_row("dog", 0, 1.25), _row("dog", 1, 1.25)],  # 1.25 <= 1.05 * 1.2 = 1.26
        "prodigy": [_row("prodigy", 0, 1.30), _row("prodigy", 1, 1.30)],  # 1.30 > 1.26
        # One seed diverged with no finite loss: ranked last whatever its other seed did.
        "alrao_sgd": [
            _row("alrao_sgd", 0, 0.5),
            _row("alrao_sgd", 1, None, diverged=True),
        ],
    }
    for r in rows["alrao_sgd"]:
        r["info"] = {"suggest_lr": 0.1}
    config = leaderboard.Config(
        tasks=("mnist1d_mlp",), methods=("sgd_grid", "adam_grid", "cocob", "dog", "prodigy",
                                         "alrao_sgd"),
    )  # fmt: skip
    results = leaderboard.summarize(config, _runs(rows))
    task = results["tasks"]["toy"]
    methods = task["methods"]
    # Tuned SGD: rate 0.1, test 1.10 and 1.30 -> 1.2 ± 0.1; tuned Adam: 1e-3 (mean val 1.5) over
    # 1e-2 (1.5): the first of the tie, test 1.40 and 1.60 -> 1.5.
    assert methods["sgd_grid"]["learning_rate"] == 0.1
    assert methods["sgd_grid"]["loss"] == pytest.approx((1.2, 0.1))
    assert methods["adam_grid"]["learning_rate"] == 1e-3
    assert methods["adam_grid"]["loss"] == pytest.approx((1.5, 0.1))
    assert task["best_tuned_loss"] == pytest.approx(1.2)
    assert task["ranking"] == ["cocob", "sgd_grid", "dog", "prodigy", "adam_grid", "alrao_sgd"]
    assert [methods[m]["rank"] for m in task["ranking"]] == [1, 2, 3, 4, 5, 6]
    assert methods["dog"]["above_tuned"] is False and methods["prodigy"]["above_tuned"] is True
    assert methods["adam_grid"]["above_tuned"] is True and methods["cocob"]["above_tuned"] is False
    assert math.isnan(methods["alrao_sgd"]["loss"][0]) and methods["alrao_sgd"]["diverged"] == 1
    # The SGD grid's diverged member (rate 10, no finite loss) is counted, once per seed.
    assert methods["sgd_grid"]["runs_diverged"] == 2 and methods["sgd_grid"]["diverged"] == 0
    # A grid's budget is all its members; a one-run method's its own steps.
    assert methods["sgd_grid"]["tuning_steps"] == 700 and methods["cocob"]["tuning_steps"] == 100
    overall = results["overall"]
    assert overall["cocob"]["wins"] == 1 and overall["cocob"]["mean_rank"] == 1.0
    assert overall["alrao_sgd"]["seeds_diverged"] == 1
    assert overall["prodigy"]["tasks_above_tuned"] == 1 and overall["dog"]["tasks_above_tuned"] == 0
    assert results["overall_ranking"][0] == "cocob"
    table = leaderboard.report(results)
    assert "| 1 | COCOB | 1.050 ± 0.050 |" in table
    assert "| 6 | Alrao-SGD | nan |" in table
    assert "SGD, best of the grid (0.1)" in table


def test_mean_rank_and_wins_over_tasks():
    def task(order):
        rows = {m: [_row(m, 0, loss)] for m, loss in zip(order, (1.0, 2.0, 3.0), strict=True)}
        return {"setting": {"model": "mlp"}, "metric": "loss", "epochs": 1, "seeds": [0],
                "rows": rows}  # fmt: skip

    runs = {"a": task(["cocob", "dog", "prodigy"]), "b": task(["dog", "prodigy", "cocob"])}
    config = leaderboard.Config(tasks=("mnist1d_mlp",), methods=("cocob", "dog", "prodigy"))
    overall = leaderboard.summarize(config, runs)["overall"]
    # cocob ranks 1 and 3, dog 2 and 1, prodigy 3 and 2.
    assert {m: o["mean_rank"] for m, o in overall.items()} == {
        "cocob": 2.0, "dog": 1.5, "prodigy": 2.5,
    }  # fmt: skip
    assert {m: o["wins"] for m, o in overall.items()} == {"cocob": 1, "dog": 1, "prodigy": 0}


def test_word_lm_rows_report_perplexity():
    rows = {"cocob": [_row("cocob", 0, math.log(50.0)), _row("cocob", 1, math.log(150.0))]}
    config = leaderboard.Config(tasks=("word_lm",), methods=("cocob",))
    results = leaderboard.summarize(config, _runs(rows, model="word_lstm"))
    assert results["tasks"]["toy"]["methods"]["cocob"]["perplexity"] == pytest.approx((100, 50))
    assert "| 1 | COCOB |" in leaderboard.task_table(results, "toy")
    assert "perplexity" in leaderboard.task_table(results, "toy")


def _range_result():
    rates = np.geomspace(1e-4, 1.0, 40)
    losses = 2.0 - np.log10(rates / 1e-4) * 0.3  # falls steadily ...
    losses[30:] = np.linspace(losses[29], 10.0, 10)  # ... then blows up
    return RangeTestResult(rates, losses, losses, "diverged", 40)


@pytest.mark.parametrize(
    "name",
    [n for n, m in _tuning_free.TUNING_FREE_METHODS.items() if not m.grid and "alrao" not in n],
)
def test_every_one_run_method_builds_and_steps(name):
    params = {"w": jnp.ones((3, 2)), "b": jnp.zeros(2)}
    tx, eval_params, info = _tuning_free.tuning_free_optimizer(
        name, total_steps=10, steps_per_epoch=5, range_result=_range_result()
    )
    assert info["optimizer"] == name
    state, new = tx.init(params), params
    for k in range(3):  # a few steps (schedule-free's averaged iterate equals y after the first)
        grads = jax.tree.map(lambda p, k=k: (0.1 + k) * jnp.ones_like(p) + 0.01 * p, new)
        updates, state = tx.update(grads, state, new)
        new = optax.apply_updates(new, updates)
    assert all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree.leaves(new))
    schedule_free = name.startswith("schedule_free")
    assert (eval_params is not None) == schedule_free
    if schedule_free:  # the averaged iterate, optax's
        fake = type("S", (), {"opt_state": state, "params": new})
        expected = optax.contrib.schedule_free_eval_params(state, new)
        for a, b in zip(jax.tree.leaves(eval_params(fake)), jax.tree.leaves(expected), strict=True):
            np.testing.assert_array_equal(a, b)


def test_range_test_methods_take_the_suggested_rates():
    result = _range_result()
    _, _, info = _tuning_free.tuning_free_optimizer(
        "one_cycle", total_steps=100, steps_per_epoch=10, range_result=result
    )
    low, high = result.cyclic_range
    assert info["max_lr"] == high and info["div_factor"] == pytest.approx(high / low)
    assert info["total_steps"] == 100
    _, _, info = _tuning_free.tuning_free_optimizer(
        "range_constant", total_steps=100, steps_per_epoch=10, range_result=result
    )
    assert info["learning_rate"] == result.lr_min_div_10
    with pytest.raises(ValueError, match="needs range_result"):
        _tuning_free.tuning_free_optimizer("one_cycle", total_steps=1, steps_per_epoch=1)
    with pytest.raises(ValueError, match="name must be one of"):
        _tuning_free.tuning_free_optimizer("adam", total_steps=1, steps_per_epoch=1)


def test_bad_configs_are_refused():
    with pytest.raises(ValueError, match="tasks must be distinct names"):
        leaderboard.Config(tasks=("mnist1d_mlp", "mnist1d_mlp"))
    with pytest.raises(ValueError, match="methods must be distinct names"):
        leaderboard.Config(methods=("sgd",))
    with pytest.raises(ValueError, match="seeds must be distinct integers"):
        leaderboard.Config(seeds=(0, 0))


# One of each kind (range_constant shares one_cycle's path and range test, adam_grid sgd_grid's
# population): the suite's budget.
SMOKE_METHODS = ("alrao_sgd", "one_cycle", "schedule_free_sgd", "cocob", "sgd_grid")


def test_smoke_run_every_kind_of_method_and_resume(tmp_path, capsys):
    argv = [
        "--workdir", str(tmp_path), "--tasks", "digits_mlp", "--seeds", "0", "--epochs", "1",
        "--methods", *SMOKE_METHODS, "--no-progress",
    ]  # fmt: skip
    out = leaderboard.main(argv)
    task = out["tasks"]["digits_mlp"]
    assert sorted(task["ranking"]) == sorted(SMOKE_METHODS)
    losses = [task["methods"][m]["loss"][0] for m in task["ranking"]]
    assert all(math.isfinite(v) for v in losses) and losses == sorted(losses)
    for m in SMOKE_METHODS:
        assert task["methods"][m]["diverged"] == 0
    # One epoch is every full batch of 32 of the training split (the remainder dropped).
    train = rdata.train_val_test("digits", validation_size=180, seed=0)["train"]
    steps = len(train["y"]) // 32
    assert task["methods"]["cocob"]["tuning_steps"] == steps
    assert task["methods"]["sgd_grid"]["tuning_steps"] == 7 * steps
    root = tmp_path / "digits_mlp" / "seed0"
    range_steps = len(json.loads((root / "range_test.json").read_text())["losses"])
    assert task["methods"]["one_cycle"]["tuning_steps"] == steps + range_steps
    # The schedule-free run was evaluated at its averaged iterate (recorded in its run.json).
    record = json.loads((root / "schedule_free_sgd" / "run.json").read_text())
    assert record["sections"]["runner"]["eval_params"]["kind"].endswith("schedule_free_params")
    assert "suggest_lr" in task["methods"]["alrao_sgd"]
    assert os.path.exists(out["figure"])
    assert (tmp_path / "table.md").read_text().startswith("## Overall")
    # Run again: every row is read back, nothing trains (the rows' files are untouched).
    stamps = {m: os.stat(root / m / "row.json").st_mtime_ns for m in SMOKE_METHODS}
    capsys.readouterr()
    again = leaderboard.main(argv)
    assert {m: os.stat(root / m / "row.json").st_mtime_ns for m in SMOKE_METHODS} == stamps
    assert again["tasks"]["digits_mlp"]["ranking"] == task["ranking"]


def test_unprepared_public_tasks_are_skipped_with_the_reason(tmp_path, monkeypatch, capsys):
    from randlr_jax import data

    def unprepared(name, *args, **kwargs):
        raise data.DatasetNotPreparedError(f"{name} is not prepared in the data dir")

    monkeypatch.setattr(data, "get_builder", unprepared)
    out = leaderboard.main(["--config", "cifar10", "--workdir", str(tmp_path), "--no-progress"])
    assert out["tasks"] == {} and set(out["skipped"]) == set(leaderboard.CONFIGS["cifar10"].tasks)
    assert "skipped cifar10_vgg19: cifar10 is not prepared" in capsys.readouterr().out


def test_report_only_reads_finished_rows_and_trains_nothing(tmp_path):
    root = tmp_path / "digits_mlp" / "seed1" / "cocob"
    root.mkdir(parents=True)
    setting, epochs, _ = leaderboard.task_setting(leaderboard.DEFAULT, "digits_mlp")
    ran = _tuning_free.run_description("cocob", setting, 1, epochs)
    (root / "row.json").write_text(json.dumps({**_row("cocob", 1, 0.25), "ran": ran}))
    argv = ["--workdir", str(tmp_path), "--tasks", "digits_mlp", "mnist1d_mlp", "--no-progress"]
    out = leaderboard.main([*argv, "--methods", "cocob", "dog", "--report-only"])
    assert list(out["tasks"]) == ["digits_mlp"]
    methods = out["tasks"]["digits_mlp"]["methods"]
    assert list(methods) == ["cocob"] and methods["cocob"]["loss"] == (0.25, 0.0)
    assert methods["cocob"]["seeds"] == [1]
    assert sorted(os.listdir(tmp_path / "digits_mlp")) == ["seed1"]  # nothing else ran


def test_a_finished_row_of_other_settings_is_refused(tmp_path):
    setting = leaderboard.TASKS["digits_mlp"].setting
    ran = _tuning_free.run_description("cocob", setting, 0, 1)
    (tmp_path / "row.json").write_text(json.dumps({**_row("cocob", 0, 0.25), "ran": ran}))
    assert (
        _tuning_free.tuning_free_run("cocob", setting, 0, str(tmp_path), epochs=1)["loss"] == 0.25
    )
    with pytest.raises(ValueError, match=r"other settings \(epochs: 1 there, 2 asked\)"):
        _tuning_free.tuning_free_run("cocob", setting, 0, str(tmp_path), epochs=2)
    with pytest.raises(ValueError, match="seed: 0 there, 3 asked"):
        _tuning_free.tuning_free_run("cocob", setting, 3, str(tmp_path), epochs=1)
    (tmp_path / "row.json").write_text(json.dumps(_row("cocob", 0, 0.25)))  # says nothing
    with pytest.raises(ValueError, match="does not say what it was trained with"):
        _tuning_free.tuning_free_run("cocob", setting, 0, str(tmp_path), epochs=1)
