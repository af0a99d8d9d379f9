"""Personalised PageRank (random walk with restart) on the user-item bipartite graph.

The walk moves from an item to one of its training users, and from a user to one of her
training items, uniformly. A user's walk restarts with probability `restart` at her own training
items (uniformly over them); her score for item i is the stationary probability of the walk
being at item i. On the item side, with `r` the restart vector (float[I], sums to one):

  pi = restart * r + (1 - restart) * (pi @ T + dangling(pi) * r),  T = P_iu @ P_ui,

P_iu = X^T and P_ui = X row-normalised (X the bool training matrix [U, I]). T is never formed:
`pi @ T = ((pi / deg_item) @ X^T) / deg_user @ X`, two `segment_sum`s over the CSR arrays per
power iteration, for a block of users at once, in `lax.while_loop` until the largest L1 change
over the block is below `pagerank_tol` or after `pagerank_max_iterations` iterations (from
pi = r; at least one iteration).

Dangling items (no training user) have no way out; their mass goes back to the restart vector
(`dangling(pi)` above, the mass pi holds on them), so every vector sums to one. A user's walk
never reaches one (they are in no training row), so this only matters for the global PageRank
and for `similar` started at such an item (whose walk then stays on it).

The global PageRank is the same walk restarting uniformly over all items; `fit` computes it
once. Scores are divided by global PageRank ** `pagerank_popularity` (0: the plain walk), which
ranks items the user's walk reaches more often than a random walk does.

A user without training items has no restart vector of her own; she is scored by popularity, as
in the other item-based models: her scores are the items' training counts (`item_degree`, the
`popularity` model's scores), with no division by the global PageRank (which, with
`pagerank_popularity` 1, would tie every item).

The params hold the training rows, the degrees, the global PageRank and the walk's settings
(0-d arrays), so a checkpoint holds everything scoring needs.
"""

from __future__ import annotations

import types

import jax
import jax.numpy as jnp
import numpy as np

from tripjax import errors
from tripjax.models import base
from tripjax.models import user_rows


def _settings(config) -> dict:
  """The walk's settings as 0-d arrays (they live in the params)."""
  return {"restart": jnp.float32(config.pagerank_restart),
          "tol": jnp.float32(config.pagerank_tol),
          "max_iterations": jnp.int32(config.pagerank_max_iterations),
          "popularity": jnp.float32(config.pagerank_popularity)}


def _propagate(x, row_ids, indices, inv_item, inv_user):
  """One step item -> user -> item: float32[I, B] -> float32[I, B] (`x^T @ T`, transposed)."""
  num_items, num_users = inv_item.shape[0], inv_user.shape[0]
  users = jax.ops.segment_sum((x * inv_item[:, None])[indices], row_ids, num_segments=num_users,
                              indices_are_sorted=True)
  return jax.ops.segment_sum((users * inv_user[:, None])[row_ids], indices,
                             num_segments=num_items)


def walk(params: dict, restart_vectors: jax.Array, restart, tol, max_iterations) -> jax.Array:
  """The stationary vectors of walks restarting at `restart_vectors`, by power iteration.

  Args:
    params: as `fit` returns (only the CSR arrays and the degrees are used).
    restart_vectors: float32[B, I], each row sums to one.
    restart: the restart probability, in (0, 1).
    tol: stop once the largest L1 change over the block is below this (after one iteration
      at least).
    max_iterations: most iterations (>= 1).

  Returns:
    float32[B, I], each row sums to one.
  """
  indptr, indices = params["indptr"], params["indices"]
  item_degree, user_degree = params["item_degree"], params["user_degree"]
  num_users = user_degree.shape[0]
  row_ids = jnp.repeat(jnp.arange(num_users, dtype=jnp.int32), jnp.diff(indptr),
                       total_repeat_length=indices.shape[0])
  inv_item = jnp.where(item_degree > 0, 1.0 / jnp.maximum(item_degree, 1.0), 0.0)
  inv_user = jnp.where(user_degree > 0, 1.0 / jnp.maximum(user_degree, 1.0), 0.0)
  dangling = (item_degree == 0)[:, None]
  r = jnp.asarray(restart_vectors, jnp.float32).T  # [I, B]: items lead, for segment_sum
  restart = jnp.asarray(restart, jnp.float32)

  def step(x):
    lost = jnp.sum(jnp.where(dangling, x, 0.0), axis=0, keepdims=True)
    moved = _propagate(x, row_ids, indices, inv_item, inv_user) + lost * r
    return restart * r + (1.0 - restart) * moved

  def cond(state):
    i, _, change = state
    return (i < max_iterations) & (change >= tol)

  def body(state):
    i, x, _ = state
    new = step(x)
    return i + 1, new, jnp.max(jnp.sum(jnp.abs(new - x), axis=0))

  _, x, _ = jax.lax.while_loop(cond, body, (jnp.int32(0), r, jnp.float32(jnp.inf)))
  return x.T


_walk = jax.jit(walk)


def fit(config, train, *, key=None) -> dict:
  """The degrees, the global PageRank and the walk's settings; the walks run when scoring.

  Args:
    config: TrainConfig (`pagerank_*` fields).
    train: bool CSR [U, I].
    key: unused.

  Returns:
    {"indptr": int32[U + 1], "indices": int32[nnz], "item_degree": float32[I],
     "user_degree": float32[U], "global_pagerank": float32[I], "restart", "tol",
     "popularity": float32[], "max_iterations": int32[]}.
  """
  del key
  num_items = train.shape[1]
  params = {**user_rows.csr_params(train),
            "item_degree": jnp.asarray(np.bincount(train.indices, minlength=num_items),
                                       jnp.float32),
            "user_degree": jnp.asarray(np.diff(train.indptr), jnp.float32),
            **_settings(config)}
  uniform = jnp.full((1, num_items), 1.0 / num_items, jnp.float32)
  global_pagerank = _walk(params, uniform, params["restart"], params["tol"],
                          params["max_iterations"])[0]
  return {**params, "global_pagerank": global_pagerank}


def _correction(params: dict, exponent) -> jax.Array:
  """float32[I]: global PageRank ** -exponent (all ones for 0)."""
  return jnp.power(params["global_pagerank"], -jnp.asarray(exponent, jnp.float32))


def score(params: dict, users: jax.Array) -> jax.Array:
  """Each user's walk, divided by global PageRank ** popularity; jit-able.

  Args:
    params: as `fit` returns.
    users: int32[B].

  Returns:
    float32[B, I]; a user without training items gets the items' training counts
    (`item_degree`, the popularity fallback).
  """
  num_items = params["item_degree"].shape[0]
  bound = min(num_items, params["indices"].shape[0])
  rows = user_rows.dense_rows(params["indptr"], params["indices"], users, num_items, bound)
  counts = jnp.sum(rows, axis=1, keepdims=True)
  # An empty row walks from the uniform vector (any valid restart); its scores are replaced.
  r = jnp.where(counts > 0, rows / jnp.maximum(counts, 1.0), 1.0 / num_items)
  pi = walk(params, r, params["restart"], params["tol"], params["max_iterations"])
  scores = pi * _correction(params, params["popularity"])[None, :]
  return jnp.where(counts > 0, scores, params["item_degree"][None, :])


def similar(params: dict, item: int, config) -> jax.Array:
  """Items like `item`: the walk restarting at it, divided by global PageRank ** popularity.

  Args:
    params: as `fit` returns.
    item: the item index.
    config: TrainConfig; its `pagerank_*` settings are used (not those in the params).

  Returns:
    float32[I] (with popularity 0, the stationary vector; it sums to one).
  """
  num_items = params["item_degree"].shape[0]
  if not 0 <= item < num_items:
    raise errors.InvalidInput(f"item index {item} is out of range [0, {num_items}).")
  settings = _settings(config)
  r = jax.nn.one_hot(jnp.array([item]), num_items, dtype=jnp.float32)
  pi = _walk(params, r, settings["restart"], settings["tol"], settings["max_iterations"])[0]
  return pi * _correction(params, settings["popularity"])


def params_like(config, train) -> dict:
  """The params' abstract shapes (a checkpoint's restore target)."""
  del config
  num_users, num_items = train.shape
  scalar = jax.ShapeDtypeStruct((), jnp.float32)
  return {**user_rows.csr_like(num_users, train.nnz),
          "item_degree": jax.ShapeDtypeStruct((num_items,), jnp.float32),
          "user_degree": jax.ShapeDtypeStruct((num_users,), jnp.float32),
          "global_pagerank": jax.ShapeDtypeStruct((num_items,), jnp.float32),
          "restart": scalar, "tol": scalar, "popularity": scalar,
          "max_iterations": jax.ShapeDtypeStruct((), jnp.int32)}


def _describe(config) -> str:
  text = f"personalised PageRank, restart {config.pagerank_restart:g}"
  if config.pagerank_popularity:
    text += f", / global PageRank ** {config.pagerank_popularity:g}"
  return text


def _similar_as_fitted(params: dict, item: int) -> jax.Array:
  """`similar` with the settings the params were fitted with (`Model.similar`)."""
  fitted = types.SimpleNamespace(
      pagerank_restart=float(params["restart"]), pagerank_tol=float(params["tol"]),
      pagerank_max_iterations=int(params["max_iterations"]),
      pagerank_popularity=float(params["popularity"]))
  return similar(params, item, fitted)


MODEL = base.Model(name="pagerank", fit=fit, score=score, params_like=params_like,
                   describe=_describe, similar=_similar_as_fitted)
