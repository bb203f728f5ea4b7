"""Deterministic, resumable batching of in-memory numpy arrays (device placement is the caller's).

Shuffling depends on ``(seed, epoch)`` only, so an interrupted run that restarts at ``(epoch,
start_batch)`` sees exactly the batches it would have seen.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from randlr_jax import _checks as checks


def check_seed(seed: int, argument: str = "seed") -> None:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"{argument} must be a non-negative int, got {seed!r}.")


def _check_positive_int(value: int, argument: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise ValueError(f"{argument} must be a positive int, got {value!r}.")


def common_length(arrays: dict[str, np.ndarray]) -> int:
    """The leading dimension shared by all arrays of ``arrays``."""
    if not isinstance(arrays, dict) or not arrays:
        raise ValueError(f"arrays must be a non-empty dict of arrays, got {arrays!r:.80}.")
    for key, value in arrays.items():
        if np.ndim(value) < 1:
            checks.fail(
                f"arrays[{key!r}]", "an array with a leading example axis", value,
                shown=checks.brief(value),
            )  # fmt: skip
    lengths = {key: len(value) for key, value in arrays.items()}
    if len(set(lengths.values())) != 1:
        raise ValueError(f"arrays must share their leading dimension, got lengths {lengths}.")
    return next(iter(lengths.values()))


def num_batches(num_examples: int, batch_size: int, drop_remainder: bool) -> int:
    """Batches in one epoch: ``floor(n / B)`` when dropping the remainder, else ``ceil(n / B)``.

    Args:
      num_examples: ``n >= 0``.
      batch_size: ``B > 0``.
      drop_remainder: whether a last, smaller batch is dropped.

    Returns:
      The number of batches :func:`batch_iterator` yields per epoch.

    Example:
      >>> num_batches(10, 4, drop_remainder=False), num_batches(10, 4, drop_remainder=True)
      (3, 2)
    """
    if (
        isinstance(num_examples, bool)
        or not isinstance(num_examples, (int, np.integer))
        or (num_examples < 0)
    ):
        raise ValueError(f"num_examples must be a non-negative int, got {num_examples!r}.")
    _check_positive_int(batch_size, "batch_size")
    checks.boolean("drop_remainder", drop_remainder)
    if drop_remainder:
        return int(num_examples // batch_size)
    return int(-(-num_examples // batch_size))


def epoch_permutation(num_examples: int, *, seed: int, epoch: int) -> np.ndarray:
    """The order of the examples in an epoch: ``default_rng([seed, epoch]).permutation(n)``."""
    check_seed(num_examples, "num_examples")
    check_seed(seed)
    check_seed(epoch, "epoch")
    return np.random.default_rng([int(seed), int(epoch)]).permutation(num_examples)


def batch_iterator(
    arrays: dict[str, np.ndarray],
    batch_size: int,
    *,
    shuffle: bool,
    seed: int,
    epoch: int,
    drop_remainder: bool,
    start_batch: int = 0,
) -> Iterator[dict[str, np.ndarray]]:
    """One epoch of batches of ``arrays``, deterministic in ``(seed, epoch)`` and resumable.

    With ``shuffle``, epoch ``e`` visits the examples in the order :func:`epoch_permutation` gives
    (``default_rng([seed, e]).permutation(n)``), otherwise in stored order; batch ``b`` holds the
    examples at positions ``b*B .. (b+1)*B - 1`` of that order. Starting at ``start_batch`` yields
    exactly the tail of the full epoch, so training resumes mid-epoch without replaying or skipping
    examples. Arguments are checked when this is called, not at the first ``next``.

    Args:
      arrays: dict of arrays sharing the leading dimension ``n``.
      batch_size: ``0 < B <= n``.
      shuffle: permute the examples each epoch.
      seed: non-negative int; with ``epoch`` the only source of the order.
      epoch: non-negative int.
      drop_remainder: drop a last batch smaller than ``B``.
      start_batch: first batch to yield, in ``[0, num_batches(n, B, drop_remainder)]``.

    Returns:
      An iterator of ``{key: array[batch]}`` dicts (numpy arrays, leading dimension ``B``, the last
      one possibly smaller when ``drop_remainder`` is False).

    Raises:
      ValueError: ``batch_size`` non-positive or larger than ``n``; bad
        ``seed``/``epoch``/``start_batch``.

    Example:
      >>> arrays = {"x": np.arange(10.0), "y": np.arange(10)}
      >>> [len(b["y"]) for b in batch_iterator(arrays, 4, shuffle=True, seed=0, epoch=0,
      ...                                       drop_remainder=False)]
      [4, 4, 2]
    """
    n = common_length(arrays)
    _check_positive_int(batch_size, "batch_size")
    checks.boolean("shuffle", shuffle)
    checks.boolean("drop_remainder", drop_remainder)
    if batch_size > n:
        raise ValueError(
            f"batch_size must be at most the number of examples ({n}), got {batch_size!r}."
        )
    check_seed(seed)
    check_seed(epoch, "epoch")
    count = num_batches(n, batch_size, drop_remainder)
    if (
        isinstance(start_batch, bool)
        or not isinstance(start_batch, (int, np.integer))
        or not (0 <= start_batch <= count)
    ):
        raise ValueError(f"start_batch must be an int in [0, {count}], got {start_batch!r}.")
    order = epoch_permutation(n, seed=seed, epoch=epoch) if shuffle else np.arange(n)
    return _batches(arrays, order, batch_size, int(start_batch), count)


def _batches(arrays, order, batch_size, start_batch, count) -> Iterator[dict[str, np.ndarray]]:
    for b in range(start_batch, count):
        index = order[b * batch_size : (b + 1) * batch_size]
        yield {key: value[index] for key, value in arrays.items()}


def lm_num_batches(num_tokens: int, batch_size: int, seq_len: int) -> int:
    """Windows per epoch of :func:`lm_batch_iterator`: ``max(0, floor((floor(T / B) - 1) / L))``.

    Each of the ``B`` streams holds ``floor(T / B)`` tokens; a window needs ``L`` inputs plus one
    more token for the last target.

    Example:
      >>> lm_num_batches(1000, 4, 10)
      24
    """
    if (
        isinstance(num_tokens, bool)
        or not isinstance(num_tokens, (int, np.integer))
        or (num_tokens < 0)
    ):
        raise ValueError(f"num_tokens must be a non-negative int, got {num_tokens!r}.")
    _check_positive_int(batch_size, "batch_size")
    _check_positive_int(seq_len, "seq_len")
    return max(0, (int(num_tokens) // int(batch_size) - 1) // int(seq_len))


def lm_batch_iterator(
    tokens: np.ndarray, batch_size: int, seq_len: int, *, start_batch: int = 0
) -> Iterator[dict[str, np.ndarray]]:
    """Next-token batches read from ``B`` contiguous streams of the text, ``L`` tokens at a time.

    The text ``t`` of ``T`` tokens is cut into ``B`` streams of ``S = floor(T / B)`` consecutive
    tokens (stream ``i`` is ``t[i*S : (i+1)*S]``; the ``T - B*S`` last tokens are unused). Batch
    ``k`` holds window ``k`` of every stream: ``x[i] = stream_i[k*L : (k+1)*L]`` and
    ``y[i] = stream_i[k*L + 1 : (k+1)*L + 1]`` (the next token). Window ``k+1`` of a stream
    continues window ``k``, so a recurrent model's carry passes from one batch to the next
    (truncated backpropagation through time).

    Args:
      tokens: 1-D integer array.
      batch_size: number of streams ``B > 0``.
      seq_len: window length ``L > 0``.
      start_batch: first window to yield, in ``[0, lm_num_batches(T, B, L)]``.

    Returns:
      An iterator of ``{"x": (B, L) int32, "y": (B, L) int32}``.

    Raises:
      ValueError: non-positive ``batch_size``/``seq_len``, a text too short for one window, a bad
        ``start_batch``.

    Example:
      >>> batches = list(lm_batch_iterator(np.arange(100), 2, 10))
      >>> batches[0]["x"][1, :3], batches[0]["y"][1, :3]
      (array([50, 51, 52], dtype=int32), array([51, 52, 53], dtype=int32))
    """
    tokens = np.asarray(tokens)
    if tokens.ndim != 1 or not np.issubdtype(tokens.dtype, np.integer):
        raise ValueError(
            f"tokens must be a 1-D integer array, got shape {tokens.shape} and dtype "
            f"{tokens.dtype}."
        )
    count = lm_num_batches(len(tokens), batch_size, seq_len)
    if count == 0:
        raise ValueError(
            f"batch_size={batch_size!r} streams of seq_len={seq_len!r} do not fit in the "
            f"{len(tokens)} tokens "
            f"(at least batch_size * (seq_len + 1) = {batch_size * (seq_len + 1)} are needed)."
        )
    if (
        isinstance(start_batch, bool)
        or not isinstance(start_batch, (int, np.integer))
        or not (0 <= start_batch <= count)
    ):
        raise ValueError(f"start_batch must be an int in [0, {count}], got {start_batch!r}.")
    stream_length = len(tokens) // batch_size
    streams = tokens[: batch_size * stream_length].astype(np.int32, copy=False)
    streams = streams.reshape(batch_size, stream_length)
    return _lm_batches(streams, seq_len, int(start_batch), count)


def _lm_batches(streams, seq_len, start_batch, count) -> Iterator[dict[str, np.ndarray]]:
    for k in range(start_batch, count):
        start = k * seq_len
        yield {
            "x": np.ascontiguousarray(streams[:, start : start + seq_len]),
            "y": np.ascontiguousarray(streams[:, start + 1 : start + seq_len + 1]),
        }


def endless_batches(
    arrays: dict[str, np.ndarray],
    batch_size: int,
    *,
    seed: int,
    shuffle: bool = True,
    drop_remainder: bool = True,
    start_epoch: int = 0,
) -> Iterator[dict[str, np.ndarray]]:
    """Batches of ``arrays`` epoch after epoch, without end: for consumers that take as many as they need.

    Pass ``e = start_epoch, start_epoch + 1, ...`` is :func:`batch_iterator` at ``epoch=e``: with
    ``shuffle`` it visits the examples in the order ``epoch_permutation(n, seed=seed, epoch=e)``
    (``np.random.default_rng([seed, e]).permutation(n)``), so every pass is reshuffled and the stream
    is a pure function of ``(seed, start_epoch)``; batch ``b`` of pass ``e`` holds the examples at
    positions ``b*B .. (b+1)*B - 1`` of that order. An LR range test, or any loop counted in steps
    rather than epochs, reads the same batches as an epoch loop over the same ``(seed, epoch)``.
    Arguments are checked when this is called, not at the first ``next``.

    Args:
      arrays: dict of arrays sharing the leading dimension ``n``.
      batch_size: ``0 < B <= n`` (so every pass yields at least one batch).
      seed: non-negative int.
      shuffle: permute the examples each pass (``False``: stored order every pass).
      drop_remainder: drop each pass's last batch when it is smaller than ``B``.
      start_epoch: the first pass's epoch number (non-negative).

    Returns:
      An infinite iterator of ``{key: array[batch]}`` dicts.

    Raises:
      ValueError: as :func:`batch_iterator`.

    Example:
      >>> stream = endless_batches({"y": np.arange(5)}, 2, seed=0)
      >>> [len(next(stream)["y"]) for _ in range(5)]  # 2 batches a pass, passes without end
      [2, 2, 2, 2, 2]
    """
    check_seed(start_epoch, "start_epoch")
    first = batch_iterator(
        arrays, batch_size, shuffle=shuffle, seed=seed, epoch=start_epoch,
        drop_remainder=drop_remainder,
    )  # fmt: skip
    return _endless(first, arrays, batch_size, shuffle, seed, int(start_epoch), drop_remainder)


def _endless(first, arrays, batch_size, shuffle, seed, epoch, drop_remainder):
    yield from first
    while True:
        epoch += 1
        yield from batch_iterator(
            arrays, batch_size, shuffle=shuffle, seed=seed, epoch=epoch,
            drop_remainder=drop_remainder,
        )  # fmt: skip


def eval_token_budget(train_tokens: int, *, divisor: int = 10, minimum: int = 2000) -> int:
    """Validation and test tokens for a training budget: ``max(floor(train_tokens / divisor), minimum)``.

    A shortened language-model run (a CPU budget that reads only the first ``train_tokens`` of the
    training text) evaluates on a proportionally shortened validation and test text, never on fewer
    than ``minimum`` tokens so that its perplexity stays a mean over many targets. Integer arithmetic:
    the result does not depend on floating-point rounding.

    Example:
      >>> eval_token_budget(70_000), eval_token_budget(3_000)
      (7000, 2000)
    """
    _check_positive_int(train_tokens, "train_tokens")
    _check_positive_int(divisor, "divisor")
    check_seed(minimum, "minimum")
    return max(int(train_tokens) // int(divisor), int(minimum))


def apply_token_budget(
    splits: dict[str, np.ndarray],
    *,
    train_tokens: int | None = None,
    eval_tokens: int | None = None,
) -> dict[str, np.ndarray]:
    """Language-model splits cut to a token budget: the first tokens of each text.

    ``train`` becomes ``train[:train_tokens]`` and every other split (``validation``, ``test``)
    ``split[:eval_tokens]``; ``None`` keeps a text whole. The first tokens, not a sample: the text
    stays contiguous, as :func:`lm_batch_iterator`'s streams need, and a larger budget reads a
    superset of a smaller one's text. A budget beyond a text's length keeps the whole text (as
    slicing does). Pair with :func:`eval_token_budget` to tie the evaluation budget to the training
    one.

    Args:
      splits: split name -> 1-D token array; must hold ``"train"``.
      train_tokens: tokens of ``train`` to keep (``> 0``), or ``None``: all.
      eval_tokens: tokens of each other split to keep (``> 0``), or ``None``: all.

    Returns:
      A new dict with the same keys; the arrays are views of the inputs.

    Raises:
      ValueError: a split that is not a 1-D array, no ``"train"`` split, a budget that is not a
        positive int or ``None``.

    Example:
      >>> splits = {"train": np.arange(10), "validation": np.arange(6), "test": np.arange(4)}
      >>> {k: len(v) for k, v in apply_token_budget(splits, train_tokens=8, eval_tokens=5).items()}
      {'train': 8, 'validation': 5, 'test': 4}
    """
    if not isinstance(splits, dict) or "train" not in splits:
        checks.fail(
            "splits", "a dict of 1-D token arrays holding 'train'", splits,
            shown=checks.brief(splits),
        )  # fmt: skip
    for name, tokens in splits.items():
        if np.ndim(tokens) != 1:
            checks.fail(
                f"splits[{name!r}]", "a 1-D token array", tokens, shown=checks.brief(tokens)
            )
    for name, budget in (("train_tokens", train_tokens), ("eval_tokens", eval_tokens)):
        if budget is not None:
            _check_positive_int(budget, name)
    return {
        name: np.asarray(tokens)[: train_tokens if name == "train" else eval_tokens]
        for name, tokens in splits.items()
    }
