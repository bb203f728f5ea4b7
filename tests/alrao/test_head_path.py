"""The classifier copies anywhere: ``head_path`` in the optimizer and the step alike.

A Linen model whose :class:`~randlr_jax.alrao.AlraoHead` sits at ``("decoder", "classifier")`` (built
in ``setup``, so the step finds it by tracing the model) trains exactly as the same model with the
head at the default name ``head`` (a ``Classifier``): same numbers, bit for bit, for a key path and a
predicate (a key selects as the 0.2 ``head_key``: the label test). And the errors: no ``features``
method, a ``head_path`` that selects no head.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from randlr_jax import alrao
from randlr_jax.models import Classifier
from randlr_jax.training import create_train_state
from tests.helpers import small_batches

K, N, D = 3, 4, 6
_BATCHES = small_batches(K)


class _Body(nn.Module):
    @nn.compact
    def __call__(self, x, *, train=False):
        return nn.relu(nn.Dense(D)(x))


class _Decoder(nn.Module):
    def setup(self):
        self.classifier = alrao.AlraoHead(num_outputs=K, num_copies=N)

    def __call__(self, h):
        return self.classifier(h)


class _Net(nn.Module):
    """The body at ``body``, the Alrao head at ``decoder/classifier``."""

    def setup(self):
        self.body = _Body()
        self.decoder = _Decoder()

    def features(self, x, *, train=False):
        return self.body(x, train=train)

    def __call__(self, x, *, train=False):
        return self.decoder(self.features(x, train=train))


class _NoFeatures(nn.Module):
    @nn.compact
    def __call__(self, x, *, train=False):
        return alrao.AlraoHead(num_outputs=K, num_copies=N, name="head")(nn.Dense(D)(x))


def _tx(**kwargs):
    return alrao.alrao_sgd(jax.random.key(1), 1e-3, 1.0, N, momentum=0.9, **kwargs)


def _train(step, state):
    metrics = []
    for batch in _BATCHES:
        state, m = step(state, batch)
        metrics.append(m)
    return state, metrics


@pytest.fixture(scope="module")
def reference():
    """The default layout: ``Classifier(body, head=AlraoHead)``, three steps."""
    model = Classifier(body=_Body(), head=alrao.AlraoHead(num_outputs=K, num_copies=N))
    tx = _tx()
    state = create_train_state(model, tx, jax.random.key(0), _BATCHES[0]["x"])
    start = state
    state, metrics = _train(jax.jit(alrao.make_alrao_train_step(model, tx)), state)
    return start, state, metrics


def _nested(tree, key):
    """``tree`` with ``tree[key]`` moved to ``tree["decoder"]["classifier"]``."""
    out = {k: v for k, v in tree.items() if k != key}
    return {**out, "decoder": {"classifier": tree[key]}}


@pytest.mark.parametrize(
    "head_path",
    [("decoder", "classifier"), lambda path: path[:2] == ("decoder", "classifier")],
    ids=["key_path", "predicate"],
)
def test_a_head_at_decoder_classifier_trains_as_the_default_head(reference, head_path):
    start, ref_state, ref_metrics = reference
    model, tx = _Net(), _tx(head_path=head_path)
    params = _nested(start.params, "head")
    switch = _nested(start.model_state[alrao.SWITCH_COLLECTION], "head")
    state = start.replace(
        params=params,
        model_state={alrao.SWITCH_COLLECTION: switch},
        opt_state=tx.init(params),
    )
    step = jax.jit(alrao.make_alrao_train_step(model, tx, head_path=head_path))
    state, metrics = _train(step, state)
    for got, want in zip(metrics, ref_metrics, strict=True):
        assert set(got) == set(want)
        for name in want:
            np.testing.assert_array_equal(got[name], want[name], err_msg=name)
    jax.tree.map(np.testing.assert_array_equal, state.params, _nested(ref_state.params, "head"))
    jax.tree.map(
        np.testing.assert_array_equal,
        state.model_state[alrao.SWITCH_COLLECTION],
        _nested(ref_state.model_state[alrao.SWITCH_COLLECTION], "head"),
    )
    # The copies moved: their update is the copies' (log-spaced rates), not the body's.
    assert not np.array_equal(
        state.params["decoder"]["classifier"]["copies"]["kernel"],
        params["decoder"]["classifier"]["copies"]["kernel"],
    )


def test_a_model_without_features_is_refused_with_what_to_add():
    with pytest.raises(
        ValueError, match=r"model \(a _NoFeatures\) has no features method"
    ) as error:
        alrao.make_alrao_train_step(_NoFeatures(), _tx())
    assert "def features(self, x, *, train=False)" in str(error.value)
    assert "method='features'" in str(error.value)


def test_a_head_path_selecting_no_head_is_refused_naming_the_heads_found():
    model, tx = _Net(), _tx(head_path=("decoder", "classifier"))
    state = create_train_state(model, tx, jax.random.key(0), _BATCHES[0]["x"])
    step = alrao.make_alrao_train_step(model, tx)  # the default "head": not in this model
    with pytest.raises(
        ValueError, match=r"head_path='head' matches no AlraoHead parameters of _Net"
    ):
        jax.eval_shape(step, state, _BATCHES[0])  # raised when the step is traced
    # A prefix of one head's path selects that head.
    jax.eval_shape(
        alrao.make_alrao_train_step(model, tx, head_path=("decoder",)), state, _BATCHES[0]
    )
    step = alrao.make_alrao_train_step(model, tx, head_path=lambda path: "kernel" in path)
    with pytest.raises(ValueError, match=r"found at: \('decoder', 'classifier'\)"):
        jax.eval_shape(step, state, _BATCHES[0])


def test_a_default_head_field_that_is_not_an_alrao_head_is_refused():
    model = Classifier(body=_Body(), head=nn.Dense(K))
    with pytest.raises(ValueError, match="must have an AlraoHead at head_path='head'.*got Dense"):
        alrao.make_alrao_train_step(model, _tx())


@pytest.mark.parametrize("head_path", [(), ("decoder", ""), ("decoder", 1), 3])
def test_a_bad_head_path_is_refused_naming_it(head_path):
    with pytest.raises(ValueError, match="head_path must be"):
        _tx(head_path=head_path)
    with pytest.raises(ValueError, match="head_path must be"):
        alrao.make_alrao_train_step(_Net(), _tx(), head_path=head_path)


def test_head_key_and_head_path_together_are_refused():
    with pytest.raises(ValueError, match="not both"):
        _tx(head_key="classifier", head_path=("decoder", "classifier"))


def test_the_optimizer_warns_when_head_path_matches_nothing():
    params = {"body": {"kernel": jnp.zeros((2, 2))}}
    with pytest.warns(alrao.NoClassifierCopiesWarning, match=r"head_path=\('decoder', 'x'\)"):
        _tx(head_path=("decoder", "x")).init(params)


def test_the_feature_guard_needs_the_default_head_path():
    with pytest.raises(ValueError, match="feature_guard must be False unless head_path is 'head'"):
        alrao.make_alrao_train_step(
            _Net(), _tx(), head_path=("decoder", "classifier"), feature_guard=True
        )


def test_head_path_forms_select_the_paths_they_say():
    params = {
        "decoder": {"classifier": {"copies": {"kernel": 1, "bias": 2}}, "norm": {"scale": 3}},
        "encoder": {"classifier": {"kernel": 4}},
    }

    def heads(**kwargs):
        labels = alrao.head_label_fn(**kwargs)(params)
        return sorted(
            "/".join(alrao._optimizers._keys(path))
            for path, label in jax.tree_util.tree_leaves_with_path(labels)
            if label == "head"
        )

    nested = ["decoder/classifier/copies/bias", "decoder/classifier/copies/kernel"]
    assert heads(head_path=("decoder", "classifier")) == nested  # a key path: from the root
    assert heads(head_path=("decoder",)) == nested + ["decoder/norm/scale"]
    assert heads(head_path="classifier") == nested + [
        "encoder/classifier/kernel"
    ]  # a key: anywhere
    assert heads(head_path=lambda path: path[-1] == "bias") == nested[:1]
    assert heads() == []  # the default "head"
