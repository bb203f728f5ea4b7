"""The word-level language model: ``shakespeare_word``'s tokenizer and builder, ``word_lstm``, and
the ``experiments.alrao_word_lm --quick`` path."""

from __future__ import annotations

import collections
import dataclasses
import json
import math
import os

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import alrao_word_lm
from randlr_jax import data, models
from randlr_jax.alrao._copies import AlraoHead
from randlr_jax.data._shakespeare import document_names, read_document, split_of_document, work_of
from randlr_jax.data._shakespeare_word import (
    END_OF_LINE,
    UNKNOWN_TOKEN,
    WordVocabulary,
    build_vocabulary,
    detokenize,
    tokenize,
)

SENTENCE = "  To be, or not to be: that is the Question;\n\n\nWhether 'tis nobler o'er-much -- i'th' mind\n"
SENTENCE_TOKENS = [
    "to", "be", ",", "or", "not", "to", "be", ":", "that", "is", "the", "question", ";", END_OF_LINE,
    "whether", "'", "tis", "nobler", "o'er-much", "-", "-", "i'th", "'", "mind", END_OF_LINE,
]  # fmt: skip


# ----------------------------------------------------------------------------------------------
# Tokenizer and vocabulary


def test_tokenizer_on_a_known_sentence_is_deterministic_and_round_trips():
    assert tokenize(SENTENCE) == SENTENCE_TOKENS
    assert tokenize(SENTENCE) == tokenize(SENTENCE)
    assert tokenize(SENTENCE.upper()) == SENTENCE_TOKENS  # lower-cased
    text = detokenize(SENTENCE_TOKENS)
    assert text == (
        "to be , or not to be : that is the question ;\n"
        "whether ' tis nobler o'er-much - - i'th ' mind\n"
    )
    assert tokenize(text) == SENTENCE_TOKENS
    assert tokenize("") == [] and tokenize("\n \n") == []
    # A line break only separates: documents joined by "\n" tokenize as the concatenation.
    assert tokenize("a b\nc") == tokenize("a b") + tokenize("c")
    # Markup never produces the special tokens.
    assert tokenize("<eol> <unk>") == ["<", "eol", ">", "<", "unk", ">", END_OF_LINE]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_tokenize_detokenize_is_a_fixed_point_on_random_text(seed):
    rng = np.random.default_rng(seed)
    alphabet = list("ab'-\n ,.;!?Zé_<>1")
    text = "".join(rng.choice(alphabet, size=400))
    tokens = tokenize(text)
    assert tokenize(detokenize(tokens)) == tokens
    assert all(t == END_OF_LINE or (t and not any(c.isspace() for c in t)) for t in tokens)


def test_vocabulary_cap_ties_and_unknown():
    counts = {"b": 3, "a": 3, "c": 7, "d": 1, "e": 3}
    assert build_vocabulary(counts, 4) == (UNKNOWN_TOKEN, "c", "a", "b")
    assert build_vocabulary(counts, 100) == (UNKNOWN_TOKEN, "c", "a", "b", "e", "d")
    for bad in (1, 0, 2.0, True):
        with pytest.raises(ValueError, match="vocab_size"):
            build_vocabulary(counts, bad)

    vocabulary = WordVocabulary(build_vocabulary(counts, 4))
    assert vocabulary.size == len(vocabulary) == 4 and vocabulary.unknown_id == 0
    ids = vocabulary.encode("C a zebra\nB")
    assert ids.dtype == np.int32
    assert ids.tolist() == [1, 2, 0, 0, 3, 0]  # zebra and both <eol> are out of vocabulary
    assert vocabulary.decode_tokens(ids) == ["c", "a", "<unk>", "<unk>", "b", "<unk>"]
    assert vocabulary.decode(np.array([[1, 2]])) == "c a"
    with pytest.raises(ValueError, match="ids"):
        vocabulary.decode(np.array([4]))
    with pytest.raises(ValueError, match="distinct"):
        WordVocabulary(("<unk>", "a", "a"))
    with pytest.raises(ValueError, match="unknown"):
        WordVocabulary(("a", "b"))
    with pytest.raises(ValueError, match="words"):
        WordVocabulary("<unk>ab")


# ----------------------------------------------------------------------------------------------
# The TFDS builder


def test_builder_builds_offline_with_the_char_split_and_a_capped_vocabulary(tfds_data_dir):
    small = data.get_builder("shakespeare_word/small", data_dir=tfds_data_dir)
    default = data.get_builder("shakespeare_word", data_dir=tfds_data_dir)
    assert data.get_spec("shakespeare_word/small").num_classes == 2_000
    assert data.get_spec("shakespeare_word").num_classes == 10_000

    # Same documents in the same splits as shakespeare_char; splits disjoint by work.
    documents = {}
    for split in ("train", "validation", "test"):
        names = list(
            data.load_arrays("shakespeare_word/small", split, data_dir=tfds_data_dir)["document"]
        )
        assert names == sorted(names)
        assert all(split_of_document(name) == split for name in names)
        documents[split] = names
    assert sorted(sum(documents.values(), [])) == list(document_names())
    works = {split: {work_of(d) for d in names} for split, names in documents.items()}
    assert not works["train"] & works["validation"] and not works["train"] & works["test"]
    assert not works["validation"] & works["test"]
    assert small.info.metadata["documents"] == documents

    # The vocabulary is recomputed from the training texts: the most frequent tokens, ties by name.
    counts = collections.Counter(tokenize("\n".join(read_document(d) for d in documents["train"])))
    for builder, size, name in ((small, 2_000, "shakespeare_word/small"),
                                (default, 10_000, "shakespeare_word")):  # fmt: skip
        words = list(builder.info.metadata["vocabulary"])
        assert len(words) == size == data.get_spec(name).num_classes
        assert words == list(build_vocabulary(counts, size))
        assert words[0] == UNKNOWN_TOKEN and END_OF_LINE in words
        vocabulary = data.load_vocabulary(name, data_dir=tfds_data_dir)
        assert isinstance(vocabulary, WordVocabulary) and vocabulary.words == tuple(words)
        for split in ("train", "validation", "test"):
            tokens = data.load_tokens(name, split, data_dir=tfds_data_dir)
            assert tokens.dtype == np.int32 and tokens.ndim == 1
            assert 0 <= tokens.min() and tokens.max() < size
            assert tokens.size == builder.info.metadata["num_tokens"][split]
            np.testing.assert_allclose(
                np.mean(tokens == 0), builder.info.metadata["unknown_rate"][split], rtol=1e-12
            )
    assert list(default.info.metadata["vocabulary"])[:2_000] == list(
        small.info.metadata["vocabulary"]
    )
    rates = small.info.metadata["unknown_rate"], default.info.metadata["unknown_rate"]
    for split in ("train", "validation", "test"):
        assert rates[1][split] < rates[0][split]
    # Unseen in training -> <unk>, in the validation stream as in any text.
    unseen = [w for w in tokenize("\n".join(read_document(d) for d in documents["validation"]))
              if w not in counts]  # fmt: skip
    assert unseen and set(vocabulary.encode_tokens(unseen).tolist()) == {0}


# ----------------------------------------------------------------------------------------------
# The model


def test_word_lstm_shapes_defaults_and_parameter_counts():
    vocab, batch, length, copies = 37, 3, 5, 4
    tokens = jax.random.randint(jax.random.key(1), (batch, length), 0, vocab)
    model = models.make_model("word_lstm", vocab_size=vocab)
    body = model.body
    assert (body.embed_dim, body.hidden_size, body.num_layers, body.dropout_rate) == (
        200,
        200,
        2,
        0.2,
    )
    carry = model.initial_carry(batch)
    # Shapes and counts by abstract evaluation (compiling two LSTM scans costs seconds on CPU).
    variables = jax.eval_shape(lambda: model.init(jax.random.key(0), tokens, carry))
    logits, new_carry = jax.eval_shape(lambda v: model.apply(v, tokens, carry), variables)
    chex.assert_shape(logits, (batch, length, vocab))
    chex.assert_trees_all_equal_shapes(new_carry, carry)
    lstm = 2 * 4 * (200 * 200 + 200 * 200 + 200)
    counts = models.param_count_by_part(variables["params"])
    assert counts == {"body": vocab * 200 + lstm, "head": 200 * vocab + vocab}

    alrao = models.make_model(
        "word_lstm", vocab_size=vocab, head=AlraoHead(num_outputs=vocab, num_copies=copies),
        embed_dim=8, hidden_size=6, num_layers=1, dropout_rate=0.0,
    )  # fmt: skip
    carry = alrao.initial_carry(batch)

    @jax.jit
    def init_and_apply(tokens, carry):
        variables = alrao.init(jax.random.key(0), tokens, carry)
        return variables, alrao.apply(variables, tokens, carry)

    variables, (log_probs, _) = init_and_apply(tokens, carry)
    chex.assert_shape(log_probs, (batch, length, vocab))
    chex.assert_tree_all_finite(log_probs)
    np.testing.assert_allclose(jnp.exp(log_probs).sum(-1), 1.0, rtol=1e-5)
    assert models.param_count_by_part(variables)["head"] == copies * (6 * vocab + vocab)
    with pytest.raises(ValueError, match=r"num_classes.*10"):
        models.make_model("word_lstm", vocab_size=37, num_classes=10)
    with pytest.raises(ValueError, match=r"vocab_size.*0"):
        models.make_model("word_lstm", vocab_size=0)


def test_parameter_counts_reproduce_the_papers_threefold():
    counts = alrao_word_lm.parameter_counts(alrao_word_lm.CONFIGS["default"], 10_000)
    assert counts["body"] == 10_000 * 200 + 2 * 4 * (200 * 200 + 200 * 200 + 200)
    assert counts["head"] == 200 * 10_000 + 10_000
    assert counts["alrao_head"] == 6 * counts["head"]
    assert counts["alrao_model"] == counts["body"] + 6 * counts["head"]
    assert 3.0 < counts["ratio"] < 3.3


# ----------------------------------------------------------------------------------------------
# The experiment


def test_quick_experiment_writes_finite_results(tmp_path, tfds_data_dir, capsys):
    workdir = str(tmp_path / "run")
    argv = ["--workdir", workdir, "--quick", "--sgd-rates", "1", "--data-dir", tfds_data_dir,
            "--no-progress", "--mesh", "data=2,copies=2", "--copy-chunk-size", "4"]  # fmt: skip
    out = alrao_word_lm.main(argv)
    setting = dataclasses.replace(
        alrao_word_lm.quick(alrao_word_lm.CONFIGS["default"]), sgd_rates=(1.0,)
    )
    assert set(out["methods"]) == {"sgd_1", "adam", "alrao_sgd"}
    for method, row in out["methods"].items():
        for key in ("validation_perplexity", "test_perplexity"):
            mean, _ = row[key]
            assert math.isfinite(mean) and 1.0 < mean < 10 * 2_000, (method, key, mean)
    assert out["sgd_best"] == "sgd_1"
    (alrao_run,) = out["runs"]["alrao_sgd"]
    np.testing.assert_allclose(sum(alrao_run["final_posterior"]), 1.0, rtol=1e-4)
    assert len(alrao_run["copy_learning_rates"]) == setting.num_copies == 6
    assert alrao_run["trace"] and all(math.isfinite(r["loss"]) for r in alrao_run["trace"])
    assert out["parameters"]["run"]["vocab_size"] == 2_000
    assert out["parameters"]["paper"]["alrao_head"] == 6 * out["parameters"]["paper"]["head"]
    assert out["copy_chunk_size"] == 4 and out["mesh"] == "data=2,copies=2"
    assert (out["runs"]["alrao_sgd"][0]["copy_shards"], out["runs"]["adam"][0]["copy_shards"]) == (
        2,
        1,
    )
    assert out["data"]["num_tokens_used"] == {"train": 1_200, "validation": 400, "test": 400}

    with open(os.path.join(workdir, "results.json")) as f:
        saved = json.load(f)
    assert saved["methods"]["alrao_sgd"]["test_perplexity"][0] == pytest.approx(
        out["methods"]["alrao_sgd"]["test_perplexity"][0]
    )
    table = (tmp_path / "run" / "table.md").read_text()
    assert table.count("| SGD 1") == 1 and "Alrao-SGD [0.001, 100], N=6" in table
    assert "| 10,000 | 2,641,600 | 2,010,000 | 12,060,000 (6 copies) |" in table
    with open(os.path.join(workdir, "learning_curves.png"), "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    for method in out["methods"]:
        assert os.path.exists(os.path.join(workdir, "seed0", method, "metrics.jsonl"))
    assert "figure:" in capsys.readouterr().out
    with pytest.raises(ValueError, match=r"loop\.batch_size \(recorded 4, now 2\)"):
        alrao_word_lm.main([*argv, "--batch-size", "2"])


def test_copy_chunk_size_reaches_the_head_and_is_validated_eagerly(tmp_path):
    setting = alrao_word_lm.quick(alrao_word_lm.CONFIGS["default"])
    assert alrao_word_lm.alrao_head(setting, 7, 2).copy_chunk_size == 2
    assert alrao_word_lm.alrao_head(setting, 7, None).copy_chunk_size is None
    for bad in (0, 7, 2.5):
        with pytest.raises(ValueError, match="copy_chunk_size"):
            alrao_word_lm.alrao_head(setting, 7, bad)
    with pytest.raises(ValueError, match=r"copy_chunk_size.*7"):  # before any training
        alrao_word_lm.main(["--workdir", str(tmp_path), "--quick", "--copy-chunk-size", "7"])
    assert not os.listdir(tmp_path)
