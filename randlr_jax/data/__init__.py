"""Datasets through TensorFlow Datasets, offline by default.

Four datasets are *embedded*: their TFDS builders ship here and build, without network or
TensorFlow, into the TFDS data dir on first use (``data_dir`` argument, else ``$TFDS_DATA_DIR``,
else ``~/tensorflow_datasets``): ``mnist1d`` (configs ``default``, ``large``), ``digits``,
``shakespeare_char`` and ``shakespeare_word`` (configs ``default``: 10,000 words, ``small``:
2,000). Public TFDS datasets (``mnist``, ``fashion_mnist``, ``cifar10``, ``cifar100``,
``svhn_cropped``, ``tiny_shakespeare``) are read when prepared in ``array_record`` format; otherwise
loading fails at once with the command that prepares them. All reading goes through random-access
data sources (``builder.as_data_source``).

Example:
  >>> from randlr_jax import data
  >>> splits = data.train_val_test("mnist1d", validation_size=500)
  >>> for batch in data.batch_iterator(splits["train"], 128, shuffle=True, seed=0, epoch=0,
  ...                                  drop_remainder=True):
  ...     pass

Needs the ``data`` extra (``pip install 'randlr_jax[data]'``): TensorFlow Datasets, array_record,
mnist1d and scikit-learn. ``import randlr_jax`` does not load this package; ``randlr_jax.data`` does, on
first use.
"""

try:
    import tensorflow_datasets as _tfds  # noqa: F401 -- checked first, for a message naming the extra
except ImportError as _error:
    raise ImportError(
        "randlr_jax.data needs TensorFlow Datasets (and array_record, mnist1d, scikit-learn): "
        "pip install 'randlr_jax[data]' (or 'randlr_jax[all]'). "
        f"The import failed with: {_error}"
    ) from _error

from randlr_jax.data._digits import Digits as Digits
from randlr_jax.data._loading import DatasetNotPreparedError as DatasetNotPreparedError
from randlr_jax.data._loading import carve_validation as carve_validation
from randlr_jax.data._loading import get_builder as get_builder
from randlr_jax.data._loading import load_arrays as load_arrays
from randlr_jax.data._loading import load_supervised as load_supervised
from randlr_jax.data._loading import train_val_test as train_val_test
from randlr_jax.data._mnist1d import Mnist1d as Mnist1d
from randlr_jax.data._shakespeare import ShakespeareChar as ShakespeareChar
from randlr_jax.data._shakespeare_word import ShakespeareWord as ShakespeareWord
from randlr_jax.data._shakespeare_word import WordVocabulary as WordVocabulary
from randlr_jax.data._specs import DATASETS as DATASETS
from randlr_jax.data._specs import DatasetSpec as DatasetSpec
from randlr_jax.data._specs import get_spec as get_spec
from randlr_jax.data._text import CharVocabulary as CharVocabulary
from randlr_jax.data._text import load_tokens as load_tokens
from randlr_jax.data._text import load_vocabulary as load_vocabulary
from randlr_jax.training._batching import batch_iterator as batch_iterator
from randlr_jax.training._batching import epoch_permutation as epoch_permutation
from randlr_jax.training._batching import lm_batch_iterator as lm_batch_iterator
from randlr_jax.training._batching import lm_num_batches as lm_num_batches
from randlr_jax.training._batching import num_batches as num_batches
