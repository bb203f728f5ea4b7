"""``endless_batches`` (passes reshuffled by ``default_rng([seed, epoch])``) and the token budgets."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from randlr_jax.training import apply_token_budget, endless_batches, eval_token_budget


def _take(iterator, count):
    return list(itertools.islice(iterator, count))


@pytest.mark.parametrize("seed", [0, 7])
def test_first_two_passes_follow_the_epoch_permutation_rule(seed):
    n, batch_size = 10, 3  # 3 batches a pass, one example dropped each pass
    arrays = {"x": np.arange(n) * 10.0, "y": np.arange(n)}
    batches = _take(endless_batches(arrays, batch_size, seed=seed), 7)
    # The rule, by hand: pass e visits default_rng([seed, e]).permutation(n), cut in batches of 3.
    expected = []
    for epoch in (0, 1):
        order = np.random.default_rng([seed, epoch]).permutation(n)
        expected += [order[b * batch_size : (b + 1) * batch_size] for b in range(3)]
    expected.append(np.random.default_rng([seed, 2]).permutation(n)[:batch_size])
    for got, want in zip(batches, expected, strict=True):
        np.testing.assert_array_equal(got["y"], want)
        np.testing.assert_array_equal(got["x"], want * 10.0)
    assert not np.array_equal(batches[0]["y"], batches[3]["y"])  # reshuffled, not repeated


def test_start_epoch_no_shuffle_and_the_remainder():
    arrays = {"y": np.arange(5)}
    resumed = _take(endless_batches(arrays, 2, seed=3, start_epoch=4), 2)
    order = np.random.default_rng([3, 4]).permutation(5)
    np.testing.assert_array_equal(np.concatenate([b["y"] for b in resumed]), order[:4])
    plain = _take(endless_batches(arrays, 2, seed=0, shuffle=False, drop_remainder=False), 4)
    assert [b["y"].tolist() for b in plain] == [[0, 1], [2, 3], [4], [0, 1]]


@pytest.mark.parametrize(
    "kwargs, argument",
    [
        ({"batch_size": 0}, "batch_size"),
        ({"batch_size": 6}, "batch_size"),  # more than the 5 examples: a pass would be empty
        ({"seed": -1}, "seed"),
        ({"start_epoch": -1}, "start_epoch"),
        ({"shuffle": 1}, "shuffle"),
    ],
)
def test_bad_arguments_raise_when_called(kwargs, argument):
    arguments = {"arrays": {"y": np.arange(5)}, "batch_size": 2, "seed": 0, **kwargs}
    with pytest.raises(ValueError, match=argument):
        endless_batches(**arguments)  # before any next()


def test_token_budget_keeps_the_first_tokens():
    splits = {"train": np.arange(100), "validation": np.arange(50) + 1000, "test": np.arange(7)}
    cut = apply_token_budget(splits, train_tokens=30, eval_tokens=20)
    np.testing.assert_array_equal(cut["train"], np.arange(30))
    np.testing.assert_array_equal(cut["validation"], np.arange(20) + 1000)
    np.testing.assert_array_equal(cut["test"], np.arange(7))  # shorter than the budget: whole
    assert all(len(a) == len(splits[k]) for k, a in apply_token_budget(splits).items())
    assert apply_token_budget(splits, eval_tokens=5)["train"].size == 100
    assert (eval_token_budget(70_000), eval_token_budget(3_000)) == (7_000, 2_000)
    assert eval_token_budget(99, divisor=10, minimum=0) == 9
    for kwargs, argument in (
        ({"train_tokens": 0}, "train_tokens"),
        ({"eval_tokens": 2.5}, "eval_tokens"),
    ):
        with pytest.raises(ValueError, match=argument):
            apply_token_budget(splits, **kwargs)
    with pytest.raises(ValueError, match="splits"):
        apply_token_budget({"validation": np.arange(3)})
    with pytest.raises(ValueError, match=r"splits\['train'\]"):
        apply_token_budget({"train": np.zeros((2, 3))})
    with pytest.raises(ValueError, match="divisor"):
        eval_token_budget(10, divisor=0)
