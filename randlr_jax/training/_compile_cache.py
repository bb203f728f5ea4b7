"""JAX's persistent compilation cache, for scripts that compile the same programs run after run.

XLA compiles every distinct program once per process: on a CPU a small model's training step, its
evaluation and its initialisation take seconds, more than a short run's training. With the persistent
cache the compiled programs are written to a directory and read back by the next process that builds the
same program (same code, shapes, JAX version and device), so a repeated or resumed run starts at once.
The experiments' scripts turn it on (``--compile-cache``); library calls never do by themselves.
"""

from __future__ import annotations

import os

import jax

ENV = "RANDLR_JAX_COMPILE_CACHE"
"""The environment variable naming the cache directory (``off``, ``none`` or ``0``: no cache)."""
_OFF = ("", "off", "none", "0", "false", "no")


def default_cache_dir() -> str | None:
    """``$RANDLR_JAX_COMPILE_CACHE`` if set (``None`` if it says off), else
    ``$XDG_CACHE_HOME/randlr_jax/jax`` (``~/.cache/randlr_jax/jax``)."""
    value = os.environ.get(ENV)
    if value is not None:
        return None if value.strip().lower() in _OFF else os.path.abspath(os.path.expanduser(value))
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "randlr_jax", "jax")


def enable_compile_cache(directory: str | os.PathLike | None = None) -> str | None:
    """Turn on JAX's persistent compilation cache in ``directory`` (default
    :func:`default_cache_dir`); returns the directory, or ``None`` when it is turned off.

    Every program that takes at least 0.1 s to compile is cached (JAX's default threshold of 1 s would
    skip most of a small model's programs). Call it before the first compilation of the process: JAX
    decides once whether the cache is used.

    Raises:
      ValueError: ``directory`` names a file.
    """
    if directory is None:
        directory = default_cache_dir()
        if directory is None:
            return None
    directory = os.path.abspath(os.fspath(directory))
    if os.path.isfile(directory):
        raise ValueError(
            f"directory must be a directory for the compilation cache, got the file {directory!r}."
        )
    os.makedirs(directory, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", directory)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.1)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return directory
