"""``export_single_classifier``: one dense classifier, the copy the posterior ranks first.

The plain model's outputs equal that copy's outputs exactly (same features, same kernel and bias),
for a ``Classifier`` and for a head nested at ``("decoder", "classifier")``; a non-finite copy is
never exported; a head that is not a field, or a model of another framework, is refused.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from randlr_jax import alrao
from randlr_jax.models import Classifier

K, N, D = 3, 4, 6
X = np.random.default_rng(0).normal(size=(5, 7)).astype(np.float32)


class _Body(nn.Module):
    @nn.compact
    def __call__(self, x, *, train=False):
        return nn.relu(nn.Dense(D)(x))


class _Decoder(nn.Module):
    classifier: nn.Module

    def __call__(self, h):
        return self.classifier(h)


class _Net(nn.Module):
    body: nn.Module
    decoder: nn.Module

    def features(self, x, *, train=False):
        return self.body(x, train=train)

    def __call__(self, x, *, train=False):
        return self.decoder(self.features(x, train=train))


class _SetupHead(nn.Module):
    def setup(self):
        self.body = _Body()
        self.head = alrao.AlraoHead(num_outputs=K, num_copies=N)

    def __call__(self, x, *, train=False):
        return self.head(self.body(x))


_SWITCH_UPDATE = jax.jit(alrao.switch_update)


def _favour(variables, path, copy):
    """``variables`` with the switch fed observations that rank ``copy`` first."""
    switch = variables[alrao.SWITCH_COLLECTION]
    node = switch
    for key in path:
        node = node[key]
    state = node["state"]
    observation = np.full((N,), -3.0, np.float32)
    observation[copy] = -0.1
    for _ in range(3):
        state = _SWITCH_UPDATE(state, observation)
    new = {"state": state}
    for key in reversed(path):
        new = {key: new}
    return {**variables, alrao.SWITCH_COLLECTION: new}


def _check_export(model, head_path, path, copy):
    variables = _favour(dict(jax.jit(model.init)(jax.random.key(0), X)), path, copy)
    params = variables.pop("params")
    plain_model, plain_params = alrao.export_single_classifier(
        model, params, variables, head_path=head_path
    )
    node = plain_model
    for key in path:
        node = getattr(node, key)
    assert type(node) is nn.Dense
    head_params = params
    for key in path:
        head_params = head_params[key]
    features = jax.jit(lambda p: model.apply({"params": p}, X, method="features"))(params)
    copy_outputs = jax.jit(alrao.apply_copies)(head_params, features)  # (N, B, K)
    out = jax.jit(plain_model.apply)({"params": plain_params}, X)
    np.testing.assert_array_equal(out, copy_outputs[copy])
    return model, params, variables


def test_the_export_predicts_as_the_copy_the_posterior_ranks_first():
    model = Classifier(body=_Body(), head=alrao.AlraoHead(num_outputs=K, num_copies=N))
    _, params, variables = _check_export(model, "head", ("head",), copy=2)
    # A non-finite copy is never the one exported: the next in the ranking is.
    params["head"]["copies"]["bias"] = params["head"]["copies"]["bias"].at[2, 0].set(jnp.nan)
    head = model.head
    assert alrao.first_copy(head, params["head"], alrao.get_switch_state(variables)) != 2
    params["head"]["copies"]["bias"] = jnp.full((N, K), jnp.nan)
    with pytest.raises(ValueError, match="no copy to export"):
        alrao.export_single_classifier(model, params, variables)


def test_a_nested_head_is_exported_at_its_path():
    model = _Net(body=_Body(), decoder=_Decoder(alrao.AlraoHead(num_outputs=K, num_copies=N)))
    _check_export(model, ("decoder", "classifier"), ("decoder", "classifier"), copy=1)


def test_a_head_that_is_not_a_field_or_another_framework_is_refused():
    model = _SetupHead()
    variables = dict(model.init(jax.random.key(0), X))
    params = variables.pop("params")
    with pytest.raises(ValueError, match="_SetupHead, so it must be a field"):
        alrao.export_single_classifier(model, params, variables)
    with pytest.raises(TypeError, match="no exporter for a dict"):
        alrao.export_single_classifier({}, params, variables)
