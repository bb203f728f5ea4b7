"""The run the two-process test compares with a one-process run: a short Alrao ``fit`` on blobs."""

from __future__ import annotations

import jax
import numpy as np

from randlr_jax import models
from randlr_jax.alrao import _copies as cc
from randlr_jax.alrao import _optimizers as _alrao
from randlr_jax.alrao import make_alrao_train_step
from randlr_jax.training import LoopConfig, fit
from randlr_jax.training._sharding import to_host
from tests.helpers import blob_splits


def run(workdir: str, num_devices: int | None = None):
    head = cc.AlraoHead(num_outputs=3, num_copies=4)
    model = models.make_model("mlp", widths=(16,), head=head)
    tx = _alrao.alrao_sgd(jax.random.key(3), 0.01, 2.0, 4, momentum=0.5)
    config = LoopConfig(
        epochs=2, batch_size=16, eval_batch_size=24, progress=False, num_devices=num_devices
    )
    return fit(
        model, tx, blob_splits(), config, workdir, train_step=make_alrao_train_step(model, tx)
    )


def host_arrays(result) -> dict:
    """Flat numpy arrays of the final parameters, the switch state and the metrics history."""
    params = jax.tree_util.tree_flatten_with_path(to_host(result.state.params))[0]
    switch = jax.tree.leaves(to_host(cc.get_switch_state(result.state.model_state)))
    out = {jax.tree_util.keystr(path): np.asarray(leaf) for path, leaf in params}
    out.update({f"switch_{i}": np.asarray(leaf) for i, leaf in enumerate(switch)})
    out["validation_loss"] = np.asarray([h["validation_loss"] for h in result.history])
    out["last_posterior"] = np.asarray(result.history[-1]["last_posterior"])
    return out
