"""The triplet model's parameters and its cosine scores.

The params are a plain pytree: `{"user": float32[U, D], "item": float32[I, D]}`, plus, with side
features (LightFM-style), `"item_features"` and/or `"user_features"`, each
`{"table": float32[F, D], "ids": int32[N, K], "weights": float32[N, K]}`: a row's vector is its
own embedding plus the mean of its features' embeddings, `own[n] + sum_k weights[n, k] *
table[ids[n, k]]` (`tripjax.data.features.Features` gives `ids` and `weights`; padding has
weight 0). `ids` and `weights` are data, not trained (`trainable` leaves them out).
"""

import math
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import scipy.sparse as sp

from tripjax import errors
from tripjax import losses
from tripjax import sharding

Params = dict  # {"user": float32[U, D], "item": float32[I, D]} (+ "item_features", ...)

# Full float32 matmuls (on GPU the default may use TF32): evaluation, reports and recommendations
# rank items by the very same scores on every backend.
SCORE_PRECISION = jax.lax.Precision.HIGHEST

SIDES = ("user", "item")
_FIXED = ("ids", "weights")  # the parts of a side's features that are data, not parameters


def init_params(key: jax.Array, num_users: int, num_items: int, dim: int = 64,
                scale: float = 0.1, item_features=None, user_features=None,
                zero_items=None) -> Params:
  """Draws the user and item embedding tables.

  Args:
    key: a PRNG key.
    num_users: U, rows of the user table.
    num_items: I, rows of the item table.
    dim: D, the embedding size.
    scale: standard deviation of the normal entries (cosine ignores it, but the optimizer's
      step size is relative to it).
    item_features, user_features: optional `tripjax.data.features.Features` with I (U) rows;
      each adds a table of its F features' embeddings, drawn like the others.
    zero_items: optional int[C], items whose own embedding starts (and, never trained, stays)
      at zero: held-out cold items, scored from their features alone.

  Returns:
    {"user": float32[U, D], "item": float32[I, D]} and the features' entries (module docstring).
    Without features the draw is the same as before features existed.
  """
  for name, value in (("num_users", num_users), ("num_items", num_items), ("dim", dim)):
    if value <= 0:
      raise errors.InvalidInput(f"init_params: {name} must be positive, got {value}.")
  user_key, item_key = jax.random.split(key)
  params = {
      "user": scale * jax.random.normal(user_key, (num_users, dim), jnp.float32),
      "item": scale * jax.random.normal(item_key, (num_items, dim), jnp.float32),
  }
  if zero_items is not None and len(zero_items):
    params["item"] = params["item"].at[jnp.asarray(zero_items, jnp.int32)].set(0.0)
  for side, features, rows in (("item", item_features, num_items),
                               ("user", user_features, num_users)):
    if features is None:
      continue
    if features.num_rows != rows:
      raise errors.InvalidInput(f"init_params: {side} features have {features.num_rows} rows, "
                                f"the {side} table {rows}.")
    table_key = jax.random.fold_in(key, SIDES.index(side) + 1)
    params[f"{side}_features"] = {
        "table": scale * jax.random.normal(table_key, (features.num_features, dim), jnp.float32),
        "ids": jnp.asarray(features.ids, jnp.int32),
        "weights": jnp.asarray(features.weights, jnp.float32)}
  return params


def trainable(params: Params) -> Params:
  """The params without the features' `ids` and `weights` (what the optimizer updates)."""
  return {name: ({k: v for k, v in value.items() if k not in _FIXED}
                 if isinstance(value, dict) else value) for name, value in params.items()}


def merge(trained: Params, params: Params) -> Params:
  """`trained` (a `trainable` tree) with the features' `ids` and `weights` of `params` back."""
  return {name: ({**params[name], **value} if isinstance(value, dict) else value)
          for name, value in trained.items()}


def has_features(params: Params) -> bool:
  return any(f"{side}_features" in params for side in SIDES)


def rows(params: Params, side: str, index: jax.Array) -> jax.Array:
  """The vectors of some rows of one side: own embedding plus the mean feature embedding.

  Args:
    params: the model's params.
    side: "user" or "item".
    index: int32[...], row indices.

  Returns:
    float32[..., D].
  """
  own = params[side][index]
  features = params.get(f"{side}_features")
  if features is None:
    return own
  return own + jnp.einsum("...k,...kd->...d", features["weights"][index],
                          features["table"][features["ids"][index]], precision=SCORE_PRECISION)


def table(params: Params, side: str) -> jax.Array:
  """float32[N, D]: every row's vector of one side (`rows` of all of them)."""
  if f"{side}_features" not in params:
    return params[side]
  return rows(params, side, jnp.arange(params[side].shape[0]))


def tables(params: Params) -> Params:
  """{"user": float32[U, D], "item": float32[I, D]}: the vectors with the features folded in.

  What retrieval, fold-in and similar items use; the identity (same arrays) without features.
  """
  if not has_features(params):
    return params
  return {side: table(params, side) for side in SIDES}




def vector_scores(user_vecs: jax.Array, unit_items: jax.Array,
                  item_offset: jax.Array | None = None) -> jax.Array:
  """Cosine scores of raw user vectors against pre-normalised items, plus an optional offset.

  The one place the model's scores are computed (`cosine_scores`, `score_fn` and
  `tripjax.recommend` all use it).

  Args:
    user_vecs: float32[B, D], not necessarily unit length.
    unit_items: float32[I, D], unit rows (`losses.normalize(params["item"])`).
    item_offset: optional float32[I] added to every row (`popularity_offset`).

  Returns:
    float32[B, I].
  """
  scores = jnp.matmul(losses.normalize(user_vecs), unit_items.T, precision=SCORE_PRECISION)
  return scores if item_offset is None else scores + item_offset[None, :]


def _scores(user_table: jax.Array, unit_items: jax.Array, users: jax.Array,
            item_offset: jax.Array | None = None) -> jax.Array:
  """Scores of `users` against pre-normalised items (plus the offset): float32[B, I]."""
  return vector_scores(user_table[users], unit_items, item_offset)


_jit_scores = jax.jit(_scores)
_jit_normalize = jax.jit(losses.normalize)
_jit_tables = jax.jit(tables)


def cosine_scores(params: Params, users: jax.Array) -> jax.Array:
  """Cosine similarity of each given user with every item.

  Args:
    params: {"user": float32[U, D], "item": float32[I, D]}.
    users: int32[B], user rows.

  Returns:
    float32[B, I].
  """
  return vector_scores(rows(params, "user", users), losses.normalize(table(params, "item")))


def popularity_offset(train: sp.csr_matrix, penalty: float) -> np.ndarray | None:
  """A per-item score offset lowering popular items: `-penalty * z(log(1 + n_i))`.

  Args:
    train: bool CSR [U, I], the training positives (n_i: item i's count).
    penalty: finite, >= 0, in cosine units per standard deviation of log popularity.

  Returns:
    float32[I] (mean 0), to add to every user's scores (`score_fn(params, offset)`); None when
    penalty is 0 or every item is equally popular (no offset can change a ranking then).

  Raises:
    ValueError: penalty is negative or not finite.
  """
  if not (math.isfinite(penalty) and penalty >= 0):
    raise errors.InvalidInput(f"popularity penalty must be a finite number >= 0, got {penalty!r}.")
  log_counts = np.log1p(np.asarray(train.sum(axis=0), np.float64).ravel())
  spread = log_counts.std()
  if penalty == 0 or spread == 0:
    return None
  return (-penalty * (log_counts - log_counts.mean()) / spread).astype(np.float32)


def score_fn(params: Params, item_offset: np.ndarray | None = None
             ) -> Callable[[jax.Array], jax.Array]:
  """The model as a `tripjax.metrics.ScoreFn` (items normalised once, scores jitted).

  Args:
    params: {"user": float32[U, D], "item": float32[I, D]}.
    item_offset: optional float32[I] added to every user's scores (`popularity_offset`).

  Returns:
    `users: int32[B] -> float32[B, I]` cosine scores (plus the offset).
  """
  if has_features(params):
    params = _jit_tables(params)
  user_table = jnp.asarray(params["user"])
  unit_items = _jit_normalize(jnp.asarray(params["item"]))
  offset = None if item_offset is None else np.asarray(item_offset, np.float32)
  if offset is not None and offset.shape != (unit_items.shape[0],):
    raise errors.InvalidInput(f"item_offset must be float32[{unit_items.shape[0]}] (one per "
                              f"item), got shape {offset.shape}.")
  if offset is not None:  # beside the tables: on their mesh when they have one
    offset = sharding.replicate(offset, sharding.mesh_of(unit_items))

  def scores(users):
    return _jit_scores(user_table, unit_items, jnp.asarray(users, jnp.int32), offset)

  return scores
