"""The non-personalised popularity model: every user scores an item by its training count.

Same scores as `tripjax.baselines.popularity_scores` (float32 counts, ties kept), as params.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from tripjax import baselines
from tripjax.models import base


def fit(config, train, *, key=None) -> dict:
  """Counts the items' training users.

  Args:
    config: unused (the model has no settings).
    train: bool CSR [U, I].
    key: unused.

  Returns:
    {"counts": float32[I]}.
  """
  del config, key
  return {"counts": jnp.asarray(baselines.item_counts(train).astype(np.float32))}


def score(params: dict, users: jax.Array) -> jax.Array:
  """float32[B, I]: every row is the item counts."""
  counts = params["counts"]
  return jnp.broadcast_to(counts, (jnp.shape(users)[0], counts.shape[0]))


def params_like(config, train) -> dict:
  del config
  return {"counts": jax.ShapeDtypeStruct((train.shape[1],), jnp.float32)}


MODEL = base.Model(name="popularity", fit=fit, score=score, params_like=params_like,
                   describe=lambda config: "items ranked by their training count")
