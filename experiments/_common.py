"""What only the experiment scripts share: one configuration mechanism, checked flags, the results tail.

**Configurations.** Every script describes its study with one frozen dataclass ``Config`` (plain Python, as
Flax's ``examples/*/configs`` and big_vision's ``get_config`` do) and a dict ``CONFIGS`` of named variants
built from the default with :func:`dataclasses.replace`; a variant is picked with ``--config NAME``. Every
script has one ``quick(config) -> config`` that shrinks any variant to the same code path at smoke-test
size, applied by ``--quick``. A flag whose ``dest`` is a field of ``Config`` and whose value is given
overrides that field last (flags default to ``None``, so an explicit ``0`` is kept)::

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_config_arguments(parser, CONFIGS, workdir="runs/study")
    parser.add_argument("--epochs", type=positive_int)        # overrides Config.epochs
    args = parser.parse_args(argv)
    config = resolve_config(args, CONFIGS, quick)

The resolved config is recorded in the run directory (:func:`write_json` of ``dataclasses.asdict``) so a
result says which settings produced it.

**Checked flags.** Each ``type=`` function raises :class:`argparse.ArgumentTypeError`, which argparse turns
into its own usage error naming the flag (``error: argument --epochs: must be an integer >= 1, got '0'``,
exit status 2) before anything runs.

**The tail.** :func:`finish` writes ``results.json`` and one ``<name>.md`` per table into the run directory
and prints the tables, the wall time and the paths: the same last lines for every script.

Library code never imports this module (``randlr_jax`` never imports ``experiments``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

T = TypeVar("T")


def int_at_least(minimum: int) -> Callable[[str], int]:
    """An argparse ``type=``: an integer ``>= minimum`` (``positive_int`` is ``int_at_least(1)``)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"must be an integer >= {minimum}, got {text!r}"
            ) from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be an integer >= {minimum}, got {text!r}")
        return value

    parse.__name__ = f"integer >= {minimum}"  # argparse names the type in some messages
    return parse


positive_int = int_at_least(1)
nonnegative_int = int_at_least(0)


def positive_float(text: str) -> float:
    """An argparse ``type=``: a finite number ``> 0`` (a learning rate, a threshold)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text!r}")
    return value


positive_float.__name__ = "number > 0"


def override(value: T | None, default: T) -> T:
    """``value`` unless it is ``None`` (a flag not given): unlike ``value or default``, 0 stays 0."""
    return default if value is None else value


def require_distinct(
    parser: argparse.ArgumentParser, flag: str, values: Sequence[Any] | None
) -> None:
    """``parser.error`` if ``values`` (a ``nargs="+"`` flag's) repeats one: each names a run directory."""
    if values is None:
        return
    repeated = sorted({v for v in values if list(values).count(v) > 1})
    if repeated:
        parser.error(
            f"argument {flag}: values must be distinct, got {list(values)} ({repeated} repeated)"
        )


def add_config_arguments(
    parser: argparse.ArgumentParser,
    configs: Mapping[str, Any],
    *,
    workdir: str,
    default: str = "default",
) -> None:
    """Add ``--config`` (one of ``configs``), ``--quick`` and ``--workdir`` to ``parser``."""
    if default not in configs:
        raise ValueError(f"default must be one of {sorted(configs)}, got {default!r}.")
    parser.add_argument(
        "--config",
        default=default,
        choices=sorted(configs),
        help=f"named configuration (default {default!r})",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="the same code path at smoke-test size (applies the script's quick())",
    )
    parser.add_argument(
        "--workdir", default=workdir, help=f"run directory, resumed if present (default {workdir})"
    )


def resolve_config(
    args: argparse.Namespace, configs: Mapping[str, Any], quick: Callable[[Any], Any]
) -> Any:
    """The named variant, then ``quick`` if ``--quick``, then every given flag named like a field."""
    config = configs[args.config]
    if not dataclasses.is_dataclass(config):
        raise TypeError(f"configs[{args.config!r}] must be a dataclass instance, got {config!r}.")
    if getattr(args, "quick", False):
        config = quick(config)
    fields = {f.name for f in dataclasses.fields(config)}
    given = {
        name: value
        for name, value in vars(args).items()
        if name in fields and value is not None and name not in ("config", "quick", "workdir")
    }
    return dataclasses.replace(config, **given)


def json_default(obj: Any) -> Any:
    """``json.dump(default=...)`` for results: numpy scalars and arrays, tuples, dataclasses, paths."""
    import numpy as np

    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, tuple):
        return list(obj)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.asdict(obj)
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    return repr(obj)


def write_json(path: str | os.PathLike, obj: Any) -> str:
    """Write ``obj`` as indented JSON (atomically: a temporary file renamed over ``path``); return the path."""
    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2, default=json_default)
        f.write("\n")
    os.replace(tmp, path)
    return path


def finish(
    workdir: str | os.PathLike,
    results: dict,
    *,
    tables: Mapping[str, str] = (),
    figures: Sequence[str] = (),
    started: float | None = None,
    notes: Sequence[str] = (),
    results_name: str = "results.json",
) -> dict:
    """The last lines of every script: write results and tables, print them, the wall time and the paths.

    ``results["wall_time_s"]`` is set from ``started`` (a ``time.perf_counter()`` value) when given.
    Returns ``results``.
    """
    workdir = os.fspath(workdir)
    os.makedirs(workdir, exist_ok=True)
    if started is not None:
        results["wall_time_s"] = time.perf_counter() - started
    results_path = write_json(os.path.join(workdir, results_name), results)
    for name, text in dict(tables).items():
        with open(os.path.join(workdir, f"{name}.md"), "w") as f:
            f.write(text + "\n")
        print()
        print(text)
    for line in notes:
        print(f"\n{line}")
    if "wall_time_s" in results:
        print(f"\nwall time {results['wall_time_s']:.1f} s")
    print(f"results: {os.path.abspath(results_path)}")
    for figure in figures:
        print(f"figure:  {os.path.abspath(figure)}")
    return results


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and population standard deviation (``ddof=0``) over seeds; ``(nan, nan)`` if empty.

    A diverged seed (``inf``) makes the mean ``inf`` and the std NaN (``inf - inf``), without warning.
    """
    import numpy as np

    array = np.asarray(list(values), np.float64)
    if array.size == 0:
        return math.nan, math.nan
    with np.errstate(invalid="ignore"):
        return float(array.mean()), float(array.std())


def fmt(mean: float, std: float, digits: int = 3) -> str:
    """``"mean ± std"`` with ``digits`` decimals, for tables; ``"nan"`` for a non-finite mean."""
    if not math.isfinite(mean):
        return "nan"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"
