"""A run interrupted anywhere at an epoch's end resumes to exactly the uninterrupted run.

A trace function (``sys.settrace``, main thread) raises ``KeyboardInterrupt`` at the lines of
``randlr_jax/training/`` that a run executes from the end of an epoch's last step through that epoch's
checkpoint and the loop's next test: the step's bookkeeping and logging, the epoch record, evaluation,
early stopping, the best copy, the history, ``metrics.jsonl``, the save. The lines are enumerated by
tracing an uninterrupted call, not written down, so a changed loop is tested at its own lines. Every line
is interrupted once: ``fit`` at all of those of its epoch ends, then ``fit_population`` at the lines its
epoch ends add (its face, its per-member early stopping and evaluation, ...; the engine's lines are the
same code for both).

After each interrupt the newest checkpoint must be intact and hold one point of the uninterrupted run,
with ``metrics.jsonl`` matching it; every distinct point is resumed with the same call, which must end
with the uninterrupted run's parameters, best parameters, history and summary, exactly.

Also here: checkpoints inside an epoch resume its record exactly, a damaged newest checkpoint falls back
to the previous one, and Ctrl-C and a resume each print one line (not with ``progress=False``).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from randlr_jax.models import Classifier
from randlr_jax.training import Checkpointer, LoopConfig, _loop, _population, fit
from randlr_jax.training import _engine as engine
from randlr_jax.training._population import fit_population
from randlr_jax.training._records import encode_record
from tests.helpers import blob_splits

_LIBRARY = os.path.dirname(engine.__file__) + os.sep
_STEPS_PER_EPOCH = 96 // 16  # blob_splits' 96 training examples, batches of 16


class _Body(nn.Module):
    """A hidden layer and dropout (the dropout key is part of what a checkpoint must restore).

    Constant initialisation: no random draws to compile in ``model.init``; dropout makes the units
    differ.
    """

    @nn.compact
    def __call__(self, x, *, train=False):
        x = nn.relu(nn.Dense(16, kernel_init=nn.initializers.constant(0.1))(x))
        return nn.Dropout(0.2, deterministic=not train)(x)


_MODEL = Classifier(body=_Body(), head=nn.Dense(3, kernel_init=nn.initializers.constant(0.1)))
# Descend for one epoch, then ascend: epoch 1 improves, epochs 2 and 3 do not, and with patience 2 the
# run stops after epoch 3 of 4 (counting a bad epoch twice would stop it after epoch 2). Momentum makes
# the optimizer state matter. One object for every call: the step compiles once.
_FLIP = optax.scale_by_schedule(lambda step: jnp.where(step < _STEPS_PER_EPOCH, 1.0, -1.0))
_TX = optax.chain(optax.sgd(0.1, momentum=0.5), _FLIP)
# Member 0 improves every epoch; member 1 diverges (no finite validation loss) and, with patience 1, is
# frozen after epoch 1 (counting member 0's epoch 1 twice would freeze it too).
_RATES = (0.05, 1e4)


def _population_optimizer(learning_rate):  # one object for every call: the step compiles once
    return optax.sgd(learning_rate, momentum=0.5)


def _config(**kw) -> LoopConfig:
    base = dict(
        epochs=4, batch_size=16, eval_batch_size=24, progress=False, log_every=2, num_devices=1,
        # a checkpoint at every epoch's end (and only by step count): its lines are interrupted too
        checkpoint_every_steps=_STEPS_PER_EPOCH, checkpoint_every_seconds=None,
    )  # fmt: skip
    base.update(kw)
    return LoopConfig(**base)


def _fit(workdir, epochs: int = 4, **kw):
    return fit(_MODEL, _TX, blob_splits(), _config(epochs=epochs, patience=2), workdir, **kw)


def _fit_population(workdir, epochs: int = 3):
    config = _config(epochs=epochs, patience=1)
    return fit_population(
        _MODEL, _RATES, blob_splits(), config, workdir, optimizer=_population_optimizer
    )


@pytest.fixture(scope="module", autouse=True)
def _initial_states():
    """Each call's initial state computed once and copied: the same arrays without compiling
    ``model.init`` anew in every call (a third of an interrupted call's time)."""

    def memoized(fn):
        cache = {}

        def wrapper(*args, **kwargs):
            key = _fingerprint((args, sorted(kwargs.items())))
            if key not in cache:
                cache[key] = fn(*args, **kwargs)
            return jax.tree.map(jnp.copy, cache[key])  # the steps donate theirs

        return wrapper

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(_loop, "create_train_state", memoized(_loop.create_train_state))
        patch.setattr(_population, "init_population", memoized(_population.init_population))
        yield


def _fingerprint(x: Any) -> Any:
    if isinstance(x, (list, tuple)):
        return tuple(_fingerprint(v) for v in x)
    if isinstance(x, (np.ndarray, jax.Array)):
        data = np.asarray(_key_data(x))
        return str(x.dtype), data.shape, data.tobytes()
    return x  # models and optimizers: by their own equality


def _key_data(x):
    return jax.random.key_data(x) if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key) else x


class _Trace:
    """A ``sys.settrace`` hook: the line events of ``randlr_jax/training/`` around a call's epoch ends.

    Window ``n`` opens when the call's chunk of steps (``Face.run_chunk``) that ends after its ``n``-th
    step returns and closes at the next call of ``Face.begin_epoch`` or ``Face.run_chunk``, or when the
    engine's ``run`` returns; ``lines[n]`` are its events (``(file, line)``). With ``target=(n, line)``
    the first event of ``line`` in window ``n`` raises ``KeyboardInterrupt`` (Python then unsets the
    hook). ``before_step(n)`` is called before the chunk that starts after the call's ``n``-th step.
    """

    def __init__(self, windows, target=None, before_step=None):
        self.lines: dict[int, list[tuple[str, int]]] = {n: [] for n in windows}
        self.target, self.before_step = target, before_step
        self.steps = 0
        self.window: list | None = None  # the open window's events
        self.closed: set[int] = set()
        self.fired = False
        self._library: dict[Any, bool] = {}  # code object: in randlr_jax/training/

    def __call__(self, frame, event, arg):
        code = frame.f_code
        library = self._library.get(code)
        if library is None:
            library = self._library[code] = code.co_filename.startswith(_LIBRARY)
        if not library:
            return None
        if _is_face(frame, ("run_chunk", "begin_epoch")):
            self._close()
            if code.co_name == "run_chunk" and self.before_step is not None:
                self.before_step(self.steps)
        return self._local

    def _local(self, frame, event, arg):
        if event == "line":
            if self.window is not None:
                line = (frame.f_code.co_filename[len(_LIBRARY) :], frame.f_lineno)
                self.window.append(line)
                if (self.steps, line) == self.target and not self.fired:
                    self.fired = True
                    raise KeyboardInterrupt
        elif event == "return":
            if _is_face(frame, ("run_chunk",)):
                self.steps += frame.f_locals["n"]
                self.window = self.lines.get(self.steps)
            elif frame.f_code.co_name == "run" and frame.f_globals is vars(engine):
                self._close()
        return self._local

    def _close(self) -> None:
        if self.window is not None:
            self.closed.add(self.steps)
            self.window = None

    def call(self, fn: Callable, *args, **kwargs) -> Any:
        sys.settrace(self)
        try:
            return fn(*args, **kwargs)
        finally:
            sys.settrace(None)


def _wait_for_saves(directory: Path, timeout_s: float = 60.0) -> None:
    """Wait until no asynchronous save is being written under ``directory`` (orbax writes each into a
    temporary directory and renames it when done)."""
    deadline = time.monotonic() + timeout_s
    while any("tmp" in p.name for p in directory.iterdir()) if directory.exists() else False:
        if time.monotonic() > deadline:
            raise TimeoutError(f"a checkpoint under {directory} is still being written")
        time.sleep(0.005)


def _is_face(frame, names) -> bool:
    return frame.f_code.co_name in names and isinstance(frame.f_locals.get("self"), engine.Face)


def _strip_times(records: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "epoch_time_s"} for r in records]


def _json(obj: Any) -> str:
    """JSON without the records' times (there NaN equals NaN: a diverged member has them)."""

    def strip(x):
        if isinstance(x, dict):
            return {k: strip(v) for k, v in x.items() if k != "epoch_time_s"}
        return [strip(v) for v in x] if isinstance(x, (list, tuple)) else x

    return json.dumps(encode_record(strip(obj)), sort_keys=True)


def _point(workdir: Path, like: Any) -> tuple:
    """The newest checkpoint of ``workdir`` (which must be intact, and ``metrics.jsonl`` match it):
    ``(step, meta without times, arrays)``."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # falling back to an older checkpoint fails here
        with Checkpointer(workdir / "checkpoints") as checkpointer:
            step = checkpointer.latest_step()
            tree, meta = checkpointer.restore(like)
    meta["history"] = _strip_times(meta["history"])
    records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    assert _strip_times(records) == meta["history"]
    arrays = [np.asarray(_key_data(x)) for x in jax.tree.leaves(tree)]
    return step, json.dumps(meta, sort_keys=True), arrays


def _same_point(a: tuple, b: tuple) -> bool:
    return a[:2] == b[:2] and all(np.array_equal(x, y) for x, y in zip(a[2], b[2], strict=True))


def _assert_same_run(resumed, straight, summary_keys) -> None:
    chex.assert_trees_all_equal(resumed.state, straight.state)
    chex.assert_trees_all_equal(resumed.best_params, straight.best_params)
    chex.assert_trees_all_equal(resumed.best_model_state, straight.best_model_state)
    assert _json(resumed.history) == _json(straight.history)
    for key in summary_keys:
        assert _json(resumed.summary[key]) == _json(straight.summary[key]), key


@dataclasses.dataclass
class _Case:
    """A kind of run: ``call(workdir)``, its uninterrupted result and, per epoch it ran, the lines of the
    epoch's end and a workdir as the epoch before left it."""

    call: Callable[..., Any]
    straight: Any
    windows: list[tuple[int, Path, list[tuple[str, int]]]]

    @classmethod
    def enumerate(cls, call, tmp: Path) -> _Case:
        """Run ``call`` (compiling what it compiles), then again, traced, for the lines and workdirs."""
        straight = call(tmp / "straight")
        epochs = len(straight.history)
        ends = [_STEPS_PER_EPOCH * epoch for epoch in range(1, epochs + 1)]
        (tmp / "start_0").mkdir()

        def snapshot(steps):  # the previous epoch's checkpoint is written, the next step not taken
            if steps in ends:
                _wait_for_saves(tmp / "traced" / "checkpoints")
                shutil.copytree(tmp / "traced", tmp / f"start_{steps}")

        trace = _Trace(ends, before_step=snapshot)
        trace.call(call, tmp / "traced")
        assert trace.closed == set(ends), "windows did not close: did Face or engine.run change?"
        windows = [
            (
                n // _STEPS_PER_EPOCH,
                tmp / f"start_{n - _STEPS_PER_EPOCH}",
                list(dict.fromkeys(lines)),
            )
            for n, lines in trace.lines.items()
        ]
        return cls(call, straight, windows)

    @property
    def lines(self) -> set[tuple[str, int]]:
        return {line for _, _, lines in self.windows for line in lines}

    def interrupt_everywhere(self, tmp: Path, check, skip=frozenset()) -> int:
        """Interrupt at each line (but ``skip``) in the first epoch's end that runs it; resume every
        distinct checkpoint left and ``check(resumed, where)``. Returns the number of interrupts."""
        like = (
            self.straight.state,
            {
                "params": self.straight.best_params,
                "model_state": self.straight.best_model_state,
            },
        )
        points: list[tuple] = []
        done = set(skip)
        for epoch, start, lines in self.windows:
            for line in lines:
                if line in done:
                    continue
                done.add(line)
                workdir = tmp / f"interrupted_{len(done)}"
                shutil.copytree(start, workdir)
                trace = _Trace([_STEPS_PER_EPOCH], target=(_STEPS_PER_EPOCH, line))
                with pytest.raises(KeyboardInterrupt):
                    trace.call(self.call, workdir)
                where = f"interrupted at {line[0]}:{line[1]} at the end of epoch {epoch}"
                assert trace.fired, f"not {where}: the line did not run again"
                point = _point(workdir, like)
                if not any(_same_point(point, p) for p in points):
                    points.append(point)
                    check(self.call(workdir), where)
                shutil.rmtree(workdir)
        assert len(points) >= 2  # before the epoch's record (after its last step) and after
        return len(done) - len(skip)


@pytest.fixture(scope="module")
def fit_case(tmp_path_factory) -> _Case:
    return _Case.enumerate(_fit, tmp_path_factory.mktemp("fit"))


@pytest.mark.slow  # ~190 interrupted calls: ~15 s on one core
def test_fit_interrupted_at_every_line_of_its_epoch_ends_resumes_exactly(fit_case, tmp_path):
    straight = fit_case.straight
    assert [r["best_epoch"] for r in straight.history] == [1, 1, 1]  # stopped after 3 of 4 epochs
    summary = ("epochs_run", "best_epoch", "best_validation_loss", "test_loss", "test_accuracy")

    def check(resumed, where):
        try:
            _assert_same_run(resumed, straight, summary)
        except AssertionError as error:
            raise AssertionError(f"{where}: {error}") from error

    assert fit_case.interrupt_everywhere(tmp_path, check) > 100


@pytest.mark.slow
def test_population_interrupted_at_the_lines_it_adds_resumes_exactly(fit_case, tmp_path):
    case = _Case.enumerate(_fit_population, tmp_path / "enumerate")
    straight = case.straight
    assert [r["trained"] for r in straight.history] == [[True, True], [True, False], [True, False]]

    def check(resumed, where):
        try:
            _assert_same_run(resumed, straight, ("best_member", "best_learning_rate"))
            assert _json(resumed.members) == _json(straight.members)
        except AssertionError as error:
            raise AssertionError(f"{where}: {error}") from error

    assert case.interrupt_everywhere(tmp_path, check, skip=fit_case.lines) > 10


class _Stop:
    """A callback raising ``error`` at step ``at``: ``KeyboardInterrupt`` as Ctrl-C, or a crash."""

    def __init__(self, at: int, error: type[BaseException] = KeyboardInterrupt):
        self.at, self.error = at, error

    def __call__(self, step, metrics):
        if step == self.at:
            raise self.error


@pytest.mark.parametrize(
    ("error", "resumed_at"),
    [(KeyboardInterrupt, 10), (RuntimeError, 8)],  # Ctrl-C saves step 10; a crash leaves step 8's
)
def test_checkpoints_inside_an_epoch_resume_its_record_exactly(
    fit_case, tmp_path, error, resumed_at
):
    config = _config(epochs=4, patience=2, checkpoint_every_steps=4)
    with pytest.raises(error):
        fit(_MODEL, _TX, blob_splits(), config, tmp_path / "run", callbacks=[_Stop(10, error)])
    with Checkpointer(tmp_path / "run" / "checkpoints") as checkpointer:
        assert checkpointer.latest_step() == resumed_at  # inside epoch 2
    resumed = fit(_MODEL, _TX, blob_splits(), config, tmp_path / "run")
    # The epoch's train loss is the mean over all its steps, those before the checkpoint included.
    _assert_same_run(resumed, fit_case.straight, ("epochs_run", "best_epoch", "test_loss"))


def _corrupt(step_dir: Path, how: str) -> None:
    if how == "meta deleted":
        (step_dir / "meta" / "metadata").unlink()
    elif how == "arrays garbled":
        for path in (step_dir / "state").rglob("d/*"):
            path.write_bytes(b"\x00 not an array")
    elif how == "array metadata truncated":
        path = step_dir / "state" / "_METADATA"
        path.write_bytes(path.read_bytes()[:10])
    else:
        raise ValueError(how)


@pytest.mark.parametrize("how", ["meta deleted", "arrays garbled", "array metadata truncated"])
def test_a_damaged_checkpoint_falls_back_to_the_previous_one(tmp_path, how):
    tree = {"w": jnp.arange(6.0).reshape(2, 3), "key": jax.random.key(3)}
    with Checkpointer(tmp_path) as checkpointer:
        for step in (1, 2):
            checkpointer.save(
                step, jax.tree.map(lambda x, s=step: x + s, {"w": tree["w"]}), {"s": step}
            )
    _corrupt(tmp_path / "2", how)
    with Checkpointer(tmp_path) as checkpointer:
        assert checkpointer.latest_step() == 2
        with pytest.warns(UserWarning, match=f"{tmp_path / '2'}") as caught:
            restored, meta = checkpointer.restore({"w": tree["w"]})
    assert len(caught) == 1
    assert meta == {"s": 1}
    np.testing.assert_array_equal(restored["w"], tree["w"] + 1)

    _corrupt(tmp_path / "1", how)
    with Checkpointer(tmp_path) as checkpointer, pytest.raises(RuntimeError) as error:
        checkpointer.restore({"w": tree["w"]})
    message = str(error.value)
    assert str(tmp_path) in message and f"{tmp_path / '1'}" in message and "\n" not in message
    assert error.value.__cause__ is None and error.value.__suppress_context__  # no orbax traceback


def test_fit_resumes_from_the_previous_checkpoint_when_the_newest_is_damaged(fit_case, tmp_path):
    _fit(tmp_path, epochs=2)  # checkpoints of steps 6 and 12
    _corrupt(tmp_path / "checkpoints" / "12", "meta deleted")
    with pytest.warns(UserWarning, match=os.path.join("checkpoints", "12")):
        resumed = _fit(tmp_path)
    _assert_same_run(resumed, fit_case.straight, ("epochs_run", "best_epoch", "test_loss"))

    for step in (12, 18):  # both kept checkpoints (of epochs 2 and 3)
        _corrupt(tmp_path / "checkpoints" / str(step), "meta deleted")
    with pytest.raises(RuntimeError, match="No checkpoint under .*checkpoints.* could be restored"):
        _fit(tmp_path)


def test_ctrl_c_and_resume_print_one_line_each_unless_progress_is_off(fit_case, tmp_path, capsys):
    workdir = tmp_path / "run"
    config = _config(epochs=4, patience=2, progress=True, description="demo")
    with pytest.raises(KeyboardInterrupt):
        fit(_MODEL, _TX, blob_splits(), config, workdir, callbacks=[_Stop(8)])
    checkpoints = str(workdir / "checkpoints")
    lines = _status_lines(capsys.readouterr().err)
    assert lines == [
        f"demo: interrupted: checkpointed step 8 (epoch 2, 2 of 6 steps done) in {checkpoints}; "
        "run the same command to resume."
    ]
    fit(_MODEL, _TX, blob_splits(), config, workdir)
    lines = _status_lines(capsys.readouterr().err)
    assert lines == [f"demo: resuming at step 8 (epoch 2, 2 of 6 steps done) from {checkpoints}."]

    quiet = _config(epochs=4, patience=2)  # progress=False: not a character
    with pytest.raises(KeyboardInterrupt):
        fit(_MODEL, _TX, blob_splits(), quiet, tmp_path / "quiet", callbacks=[_Stop(8)])
    fit(_MODEL, _TX, blob_splits(), quiet, tmp_path / "quiet")
    assert capsys.readouterr() == ("", "")


def _status_lines(err: str) -> list[str]:
    """The status lines in ``err`` (between the progress bar's, which ``\r`` separates)."""
    return [line for line in err.splitlines() if line.startswith(("demo: i", "demo: r"))]


def test_ctrl_c_inside_a_step_keeps_the_last_checkpoint(fit_case, tmp_path, monkeypatch, capsys):
    """An interrupt after a step took the state's buffers and before its point: nothing to save, the
    epoch's checkpoint stands (a Ctrl-C inside jax's dispatch)."""
    run_chunk = _loop._Single.run_chunk
    calls = []

    def interrupted(self, state, chunk, n):
        out = run_chunk(self, state, chunk, n)
        calls.append(n)
        if sum(calls) == 10:  # the chunk of steps 9 and 10 (log_every=2)
            raise KeyboardInterrupt
        return out

    workdir = tmp_path / "run"
    config = _config(epochs=4, patience=2, progress=True, description="demo")
    with monkeypatch.context() as patch:
        patch.setattr(_loop._Single, "run_chunk", interrupted)
        with pytest.raises(KeyboardInterrupt):
            fit(_MODEL, _TX, blob_splits(), config, workdir)
    assert _status_lines(capsys.readouterr().err) == [
        "demo: interrupted at step 8, not checkpointed (interrupted inside a step); "
        f"{workdir / 'checkpoints'} holds step 6: run the same command to resume."
    ]
    assert len((workdir / "metrics.jsonl").read_text().splitlines()) == 1
    resumed = fit(_MODEL, _TX, blob_splits(), _config(epochs=4, patience=2), workdir)
    _assert_same_run(resumed, fit_case.straight, ("epochs_run", "best_epoch", "test_loss"))
