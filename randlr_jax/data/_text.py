"""Character vocabularies and token streams of the language-model datasets."""

from __future__ import annotations

import dataclasses

import numpy as np

from randlr_jax.data._loading import get_builder, load_arrays
from randlr_jax.data._shakespeare import UNKNOWN_CHARACTER
from randlr_jax.data._shakespeare_word import WordVocabulary
from randlr_jax.data._specs import check_split, parse_name

DOCUMENT_SEPARATOR = "\n"


@dataclasses.dataclass(frozen=True)
class CharVocabulary:
    """A character vocabulary: token id ``i`` is ``characters[i]``.

    Attributes:
      characters: the vocabulary as one string of distinct characters in sorted (code point) order.
      unknown: a character of the vocabulary that encodes every character outside it.

    Example:
      >>> vocabulary = CharVocabulary("\\n !?ab")
      >>> vocabulary.encode("ab!z").tolist(), vocabulary.decode(vocabulary.encode("ab!"))
      ([4, 5, 2, 3], 'ab!')
    """

    characters: str
    unknown: str = UNKNOWN_CHARACTER

    def __post_init__(self):
        if not isinstance(self.characters, str) or not self.characters:
            raise ValueError(f"characters must be a non-empty string, got {self.characters!r:.80}.")
        if list(self.characters) != sorted(set(self.characters)):
            raise ValueError(
                f"characters must be distinct and sorted, got {self.characters!r:.80}."
            )
        if len(self.unknown) != 1 or self.unknown not in self.characters:
            raise ValueError(
                f"unknown must be one character of the vocabulary, got {self.unknown!r}."
            )

    @property
    def size(self) -> int:
        return len(self.characters)

    def __len__(self) -> int:
        return len(self.characters)

    def _code_points(self) -> np.ndarray:
        return np.frombuffer(self.characters.encode("utf-32-le"), dtype="<u4")

    def encode(self, text: str) -> np.ndarray:
        """Token ids of ``text``, int32, one per character (unknown ones map to ``unknown``)."""
        codes = np.frombuffer(text.encode("utf-32-le"), dtype="<u4")
        table = self._code_points()
        ids = np.minimum(np.searchsorted(table, codes), len(table) - 1)
        known = table[ids] == codes
        return np.where(known, ids, self.characters.index(self.unknown)).astype(np.int32)

    def decode(self, ids: np.ndarray) -> str:
        """The text of token ids (any integer array; flattened)."""
        ids = np.asarray(ids).reshape(-1)
        if ids.size and (ids.min() < 0 or ids.max() >= self.size):
            raise ValueError(
                f"ids must lie in [0, {self.size}), got values in [{ids.min()}, {ids.max()}]."
            )
        return self._code_points()[ids].astype("<u4").tobytes().decode("utf-32-le")


def _joined_text(name: str, split: str, data_dir: str | None) -> str:
    return DOCUMENT_SEPARATOR.join(load_arrays(name, split, data_dir=data_dir)["text"])


def _check_language_model(name: str):
    spec, _ = parse_name(name)
    if spec.kind != "language_model":
        raise ValueError(
            f"dataset {name!r} is a {spec.kind} dataset; token streams exist only for "
            "language-model datasets (use load_supervised for classification)."
        )
    return spec


def load_vocabulary(name: str, *, data_dir: str | None = None) -> CharVocabulary | WordVocabulary:
    """The character (or, for ``shakespeare_word``, word) vocabulary of a language-model dataset.

    ``shakespeare_char`` stores it in its TFDS metadata (the sorted set of characters of the whole
    corpus); for ``tiny_shakespeare`` it is the sorted set of characters of its three splits (65
    characters, the char-rnn vocabulary). Characters outside the vocabulary encode as ``"?"`` (as
    the first character if a vocabulary lacks ``"?"``). ``shakespeare_word`` gives a
    :class:`WordVocabulary` (its capped word list from the TFDS metadata, ``<unk>`` for the rest).

    Args:
      name: a language-model dataset of :data:`DATASETS`.
      data_dir: TFDS data dir (``None``: ``$TFDS_DATA_DIR``, else TFDS's default).

    Returns:
      The :class:`CharVocabulary` (:class:`WordVocabulary` for a word-level dataset).

    Example:
      >>> load_vocabulary("shakespeare_char").size
      88
    """
    spec = _check_language_model(name)
    if spec.embedded:
        metadata = get_builder(name, data_dir=data_dir).info.metadata
        if "unknown_token" in metadata:  # a word-level dataset
            return WordVocabulary(tuple(metadata["vocabulary"]), metadata["unknown_token"])
        unknown = metadata.get("unknown_character", UNKNOWN_CHARACTER)
        return CharVocabulary(metadata["vocabulary"], unknown)
    seen: set[str] = set()
    for split in spec.splits:
        seen.update(_joined_text(name, split, data_dir))
    characters = "".join(sorted(seen))
    unknown = UNKNOWN_CHARACTER if UNKNOWN_CHARACTER in characters else characters[0]
    return CharVocabulary(characters, unknown)


def load_tokens(name: str, split: str, *, data_dir: str | None = None) -> np.ndarray:
    """A split of a language-model dataset as one int32 token stream.

    The split's documents, in stored order, are joined with ``"\\n"`` and encoded with
    :func:`load_vocabulary`'s vocabulary (``vocabulary.decode(tokens)`` gives the text back).

    Args:
      name: a language-model dataset of :data:`DATASETS`.
      split: one of ``"train"``, ``"validation"``, ``"test"``.
      data_dir: TFDS data dir (``None``: ``$TFDS_DATA_DIR``, else TFDS's default).

    Returns:
      ``(T,)`` int32 token ids.

    Example:
      >>> tokens = load_tokens("shakespeare_char", "validation")
      >>> tokens.dtype, tokens.ndim
      (dtype('int32'), 1)
    """
    spec = _check_language_model(name)
    check_split(spec, split)
    return load_vocabulary(name, data_dir=data_dir).encode(_joined_text(name, split, data_dir))
