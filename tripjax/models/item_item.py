"""What item-item models share: W as params with the training rows, pruning, scoring.

An item-item model (RP3beta, item-kNN) scores a user by summing, over the items of her training
row, their rows of an item-item matrix: `scores = rows @ W`, W float32[I, I] dense. The params
are `{"W": float32[I, I]}` plus the training rows as CSR arrays (`user_rows.csr_params`), so a
checkpoint holds everything scoring needs.

W is built on the host (scipy.sparse / numpy float64) one block of rows at a time: a model
supplies `block(start, stop) -> float64[stop - start, I]`, the rows of its unpruned matrix, and
`build` zeroes the diagonal, keeps the k largest entries of each row and writes the block into a
float32 result. Memory is the I x I float32 result plus one block; ML-20M (27k items: 2.9 GB
dense) fits the host only just, and needs pruning to be useful.

Users without training items: `rows @ W` would give them 0 for every item (a tie broken by item
index). Instead they are scored by popularity (`popularity_fallback`): their row of scores is the
items' training counts, the `popularity` model's scores, so their top-k lists are the most popular
items. EASE uses the same fallback; the other users' scores are unchanged.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import scipy.sparse as sp

from tripjax.models import user_rows

# Elements of one float64 block of rows (64 MiB).
_BLOCK_ELEMENTS = 1 << 23

RowBlock = Callable[[int, int], np.ndarray]


def keep_top_k(block: np.ndarray, k: int) -> np.ndarray:
  """Zeroes all but the k largest entries of each row.

  Ties at the k-th largest value are broken towards the lower column index (as
  `jax.lax.top_k` and `metrics.top_k_unseen` do), so exactly k positions are kept per row
  (some may hold zeros when a row has fewer than k non-zero entries).

  Args:
    block: float[B, I].
    k: entries kept per row; k <= 0 or k >= I keeps all.

  Returns:
    float[B, I], a pruned copy.
  """
  num_cols = block.shape[1]
  if k <= 0 or k >= num_cols:
    return block.copy()
  kth = -np.partition(-block, k - 1, axis=1)[:, k - 1:k]
  greater = block > kth
  ties = block == kth
  room = k - greater.sum(axis=1, keepdims=True)
  keep = greater | (ties & (np.cumsum(ties, axis=1) <= room))
  return np.where(keep, block, 0.0)


def build(block: RowBlock, num_items: int, top_k: int, *, transpose: bool = False,
          block_rows: int | None = None) -> np.ndarray:
  """The item-item matrix, one block of rows at a time: diagonal zeroed, then pruned.

  Args:
    block: `(start, stop) -> float64[stop - start, I]`, rows start..stop of the unpruned matrix.
    num_items: I.
    top_k: entries kept per row (`keep_top_k`); 0 keeps all.
    transpose: write each pruned row block as columns (the result is the transpose: its
      columns keep the k largest entries).
    block_rows: rows per block; default about 64 MiB of float64.

  Returns:
    float32[I, I].
  """
  block_rows = block_rows or max(1, _BLOCK_ELEMENTS // max(num_items, 1))
  out = np.zeros((num_items, num_items), np.float32)
  for start in range(0, num_items, block_rows):
    stop = min(start + block_rows, num_items)
    rows = np.array(block(start, stop), np.float64)
    rows[np.arange(stop - start), np.arange(start, stop)] = 0.0
    rows = keep_top_k(rows, top_k)
    if transpose:
      out[:, start:stop] = rows.T
    else:
      out[start:stop] = rows
  return out


def params_from(w: np.ndarray, train: sp.csr_matrix) -> dict:
  """{"W": float32[I, I], "indptr": int32[U + 1], "indices": int32[nnz]}."""
  return {"W": jnp.asarray(w, jnp.float32), **user_rows.csr_params(train)}


def params_like(config, train: sp.csr_matrix) -> dict:
  """The params' abstract shapes (a checkpoint's restore target): W and the CSR arrays."""
  del config
  num_users, num_items = train.shape
  return {"W": jax.ShapeDtypeStruct((num_items, num_items), jnp.float32),
          **user_rows.csr_like(num_users, train.nnz)}


def popularity_fallback(scores: jax.Array, indptr: jax.Array, indices: jax.Array,
                        users: jax.Array) -> jax.Array:
  """Replaces the scores of users without training items by the items' training counts.

  The counts (`jnp.bincount` of the CSR column indices, on the device) are computed only when
  the block holds such a user (`lax.cond`); other rows are returned unchanged.

  Args:
    scores: float32[B, I], the model's scores of `users`.
    indptr: int32[U + 1], the training matrix's row pointers.
    indices: int32[nnz], its column indices.
    users: int32[B], the scored users.

  Returns:
    float32[B, I]: row b is float32 counts[I] (the `popularity` model's scores) where user b has
    no training item, else `scores[b]`.
  """
  empty = indptr[users + 1] == indptr[users]

  def fill(scores):
    counts = jnp.bincount(indices, length=scores.shape[1]).astype(scores.dtype)
    return jnp.where(empty[:, None], counts[None, :], scores)

  return jax.lax.cond(jnp.any(empty), fill, lambda scores: scores, scores)


def _scores(params: dict, users: jax.Array, max_length: int) -> jax.Array:
  num_items = params["W"].shape[0]
  rows = user_rows.dense_rows(params["indptr"], params["indices"], users, num_items,
                              max_length)
  scores = jnp.matmul(rows, params["W"], precision=jax.lax.Precision.HIGHEST)
  return popularity_fallback(scores, params["indptr"], params["indices"], users)


def score(params: dict, users: jax.Array) -> jax.Array:
  """`rows @ W` for a block of users, jit-able (the row bound is static: min(I, nnz)).

  Args:
    params: {"W": float32[I, I], "indptr", "indices"}.
    users: int32[B].

  Returns:
    float32[B, I]; a user without training items gets the items' training counts
    (`popularity_fallback`).
  """
  bound = min(params["W"].shape[0], params["indices"].shape[0])
  return _scores(params, users, bound)


def make_score_fn(params: dict, item_offset=None):
  """The model's ScoreFn, with the longest training row (host-side) as the static row bound.

  Args:
    params: as `score`.
    item_offset: optional float32[I] added to every row.

  Returns:
    `users: int32[B] -> float32[B, I]`, jitted; same scores as `score`.
  """
  max_length = user_rows.max_row_length(params["indptr"])
  params = jax.tree.map(jnp.asarray, params)
  offset = None if item_offset is None else jnp.asarray(item_offset, jnp.float32)

  @jax.jit
  def block_scores(params, offset, users):
    scores = _scores(params, users, max_length)
    return scores if offset is None else scores + offset[None, :]

  return lambda users: block_scores(params, offset, jnp.asarray(users, jnp.int32))


def row(params: dict, item: int) -> jax.Array:
  """float32[I]: row `item` of W."""
  return params["W"][item]


def column(params: dict, item: int) -> jax.Array:
  """float32[I]: column `item` of W."""
  return params["W"][:, item]
