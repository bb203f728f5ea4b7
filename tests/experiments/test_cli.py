"""Every experiment's command line: invalid numbers are argparse errors naming the flag, before any work."""

from __future__ import annotations

import argparse
import importlib
import pathlib

import pytest

from experiments import _common as _cli

EXPERIMENTS = sorted(
    path.stem
    for path in (pathlib.Path(__file__).resolve().parents[2] / "experiments").glob("*.py")
    if not path.stem.startswith("_")
)

# (script, arguments, the message argparse prints). Every script has one ``--epochs 0``-like case.
CASES = [
    ("demo", ["--epochs", "0"], "argument --epochs: must be an integer >= 1, got '0'"),
    ("demo", ["--seed", "-1"], "argument --seed: must be an integer >= 0, got '-1'"),
    ("alrao_compare", ["--epochs", "0"], "argument --epochs: must be an integer >= 1, got '0'"),
    ("alrao_compare", ["--seeds", "0", "-2"], "argument --seeds: must be an integer >= 0"),
    ("alrao_compare", ["--seeds", "1", "1"], "argument --seeds: values must be distinct"),
    ("alrao_compare", ["--lm-train-chars", "-5"], "argument --lm-train-chars: must be an integer"),
    ("alrao_interval", ["--epochs", "0"], "argument --epochs: must be an integer >= 1, got '0'"),
    ("alrao_interval", ["--rates", "0", "1"], "argument --rates: must be a finite number > 0"),
    ("alrao_interval", ["--rates", "0.1", "0.1"], "argument --rates: values must be distinct"),
    ("alrao_posterior", ["--epochs", "0"], "argument --epochs: must be an integer >= 1, got '0'"),
    ("alrao_posterior", ["--log-every", "0"], "argument --log-every: must be an integer >= 1"),
    ("alrao_appendix", ["all", "--epochs", "0"], "argument --epochs: must be an integer >= 1"),
    ("alrao_appendix", ["all", "--eta0", "-0.1"], "argument --eta0: must be a finite number > 0"),
    ("alrao_word_lm", ["--epochs", "0"], "argument --epochs: must be an integer >= 1, got '0'"),
    ("alrao_word_lm", ["--batch-size", "0"], "argument --batch-size: must be an integer >= 1"),
    ("alrao_word_lm", ["--sgd-rates", "nan"], "argument --sgd-rates: must be a finite number > 0"),
    ("alrao_word_lm", ["--time-steps", "-1"], "argument --time-steps: must be an integer >= 0"),
    ("alrao_word_lm", ["--setting", "huge"], "argument --setting: invalid choice: 'huge'"),
    ("autodrop_train", ["--epochs", "0"], "argument --epochs: must be an integer >= 1, got '0'"),
    ("autodrop_train", ["--seeds", "0"], "argument --seeds: must be an integer >= 1, got '0'"),
    ("autodrop_train", ["--threshold", "0"], "argument --threshold: must be a finite number > 0"),
    ("autodrop_train", ["--drop-delay", "-1"], "argument --drop-delay: must be an integer >= 0"),
    ("autodrop_train", ["--preset", "imagenet"], "argument --preset: invalid choice: 'imagenet'"),
    (
        "alrao_feature_guard",
        ["--epochs", "0"],
        "argument --epochs: must be an integer >= 1, got '0'",
    ),
    ("autodrop_nqm", ["--steps", "0"], "argument --steps: must be an integer >= 2, got '0'"),
    ("autodrop_nqm", ["--steps", "1"], "argument --steps: must be an integer >= 2, got '1'"),
    ("noh", ["--meta-learning-rate", "0"], "argument --meta-learning-rate: must be a finite"),
    (
        "alrao_model_selection",
        ["--epochs", "0"],
        "argument --epochs: must be an integer >= 1, got '0'",
    ),
    ("leaderboard", ["--epochs", "0"], "argument --epochs: must be an integer >= 1, got '0'"),
    ("leaderboard", ["--seeds", "0", "0"], "argument --seeds: values must be distinct"),
    ("leaderboard", ["--methods", "adam"], "argument --methods: invalid choice: 'adam'"),
    ("leaderboard", ["--lm-train-tokens", "0"], "argument --lm-train-tokens: must be an integer"),
    ("smith", ["--epochs", "0"], "argument --epochs: must be an integer >= 1, got '0'"),
    ("smith", ["--epochs", "two"], "argument --epochs: must be an integer >= 1, got 'two'"),
    (
        "readme_tables",
        ["record", "demo", "summary.json", "--command", "c", "--wall-time-s", "0"],
        "argument --wall-time-s: must be a finite number > 0, got '0'",
    ),
]


def test_every_experiment_script_has_a_case():
    assert {script for script, _, _ in CASES} == set(EXPERIMENTS)


@pytest.mark.parametrize(
    "script, argv, message", CASES, ids=[" ".join([c[0], *c[1]]) for c in CASES]
)
def test_invalid_values_are_usage_errors_before_any_work(script, argv, message, tmp_path, capsys):
    module = importlib.import_module(f"experiments.{script}")
    workdir = tmp_path / "run"
    with pytest.raises(SystemExit) as exit_info:
        module.main([*argv, "--workdir", str(workdir)])
    assert exit_info.value.code == 2  # argparse's usage error
    err = capsys.readouterr().err
    assert message in err, err
    assert "usage:" in err
    assert not workdir.exists()  # nothing ran


def test_override_keeps_a_zero_and_falls_back_on_none():
    assert _cli.override(0, 30) == 0 and _cli.override(None, 30) == 30
    assert _cli.override(5, 30) == 5


@pytest.mark.parametrize(
    "parse, text, value",
    [
        (_cli.positive_int, "3", 3),
        (_cli.nonnegative_int, "0", 0),
        (_cli.int_at_least(2), "2", 2),
        (_cli.positive_float, "1e-3", 1e-3),
    ],
)
def test_valid_values_parse(parse, text, value):
    assert parse(text) == value


@pytest.mark.parametrize(
    "parse, text",
    [
        (_cli.positive_int, "0"),
        (_cli.positive_int, "1.5"),
        (_cli.nonnegative_int, "-1"),
        (_cli.positive_float, "0"),
        (_cli.positive_float, "inf"),
        (_cli.positive_float, "-1e-3"),
        (_cli.positive_float, "x"),
    ],
)
def test_invalid_values_raise_argparse_errors(parse, text):
    with pytest.raises(argparse.ArgumentTypeError, match=repr(text)):
        parse(text)


STUDIES = [name for name in EXPERIMENTS if name != "readme_tables"]  # readme_tables trains nothing


@pytest.mark.parametrize("script", STUDIES)
def test_every_study_has_the_one_configuration_mechanism(script):
    import ast
    import dataclasses

    module = importlib.import_module(f"experiments.{script}")
    config_class = module.Config
    assert dataclasses.is_dataclass(config_class) and config_class.__dataclass_params__.frozen
    assert "default" in module.CONFIGS
    assert all(type(c) is config_class for c in module.CONFIGS.values())
    default = module.CONFIGS["default"]
    smaller = module.quick(default)
    assert type(smaller) is config_class and smaller != default
    # Helper modules only (private, ``_common``, ``_tuning_free``): a study imports no other study,
    # and draws no figure through pyplot.
    tree = ast.parse(pathlib.Path(module.__file__).read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == "experiments":
            imported |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("experiments."):
            imported.add(node.module.split(".", 1)[1])
        elif isinstance(node, ast.Import):
            imported |= {
                a.name for a in node.names if a.name.startswith(("experiments", "matplotlib"))
            }
    assert all(name.startswith("_") for name in imported), imported
    source = pathlib.Path(module.__file__).read_text()
    assert "pyplot" not in source and "matplotlib.use" not in source
