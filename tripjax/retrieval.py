"""Top-k recommendations and similar items from a trained model's embeddings, on the device.

Everything here is a pure function over the parameter pytree `{"user": float32[U, D],
"item": float32[I, D]}` (score = cosine of the two embeddings) and, where seen items are filtered
out, a boolean CSR matrix [U, I]. Scores are computed one block of users at a time, so the full
U x I score matrix never exists.

`top_k` and `top_k_for_vectors` take the run's `item_offset` (`model.popularity_offset(train,
config.popularity_penalty)`), so they rank exactly as the run's evaluation does;
`similar_items` is item-item cosine and takes none.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import scipy.sparse as sp

from tripjax import errors
from tripjax import losses
from tripjax import metrics
from tripjax import model


_unit = losses.normalize  # the model's own normalisation, so scores equal model.cosine_scores


@functools.partial(jax.jit, static_argnames=("k",))
def _masked_top_k(user_vecs: jax.Array, item_unit: jax.Array, exclude: jax.Array,
                  k: int, item_offset: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
  """Top-k of one block, with the model's scores and evaluation's top-k (`metrics.top_k_unseen`).

  Args:
    user_vecs: float32[B, D].
    item_unit: float32[I, D], unit rows.
    exclude: bool[B, I], items never to recommend.
    k: static number of items.
    item_offset: optional float32[I] added to every row's scores (as `model.score_fn` does).

  Returns:
    (int32[B, k] items, -1 where a user has fewer than k candidates; float32[B, k] their scores,
    offset included, -inf in those slots).
  """
  return _top_k_of_scores(model.vector_scores(user_vecs, item_unit, item_offset), exclude, k)


@functools.partial(jax.jit, static_argnames=("k",))
def _top_k_of_scores(scores: jax.Array, exclude: jax.Array, k: int
                     ) -> tuple[jax.Array, jax.Array]:
  """Evaluation's top-k unseen (`metrics.top_k_unseen`) of a block of scores.

  Args:
    scores: float32[B, I].
    exclude: bool[B, I], items never to recommend.
    k: static number of items.

  Returns:
    (int32[B, k] items, -1 where a user has fewer than k candidates; float32[B, k] their
    scores, -inf in those slots).
  """
  items = metrics.top_k_unseen(scores, ~exclude, k)
  top_scores = jnp.take_along_axis(scores, jnp.maximum(items, 0), axis=1)
  return items, jnp.where(items >= 0, top_scores, -jnp.inf)


def check_k(k: int, num_candidates: int, what: str = "catalogue") -> int:
  """Validates a number of items to list.

  Args:
    k: the requested number of items.
    num_candidates: how many items there are to choose from.
    what: what the candidates are, for the error message.

  Returns:
    k as an int.

  Raises:
    ValueError: k is not a positive integer or exceeds `num_candidates`.
  """
  if isinstance(k, bool) or int(k) != k or k <= 0:
    raise errors.InvalidInput(f"k must be a positive integer, got k={k!r}.")
  if k > num_candidates:
    raise errors.InvalidInput(f"k={k} is larger than the {what} ({num_candidates} items).")
  return int(k)


def item_mask(item_indices, num_items: int) -> np.ndarray:
  """bool[I], True at the given item indices.

  Args:
    item_indices: int[P] item indices (duplicates allowed).
    num_items: I.

  Returns:
    bool[I].

  Raises:
    ValueError: the indices are not a 1-D sequence of ints, or one is out of range.
  """
  items = np.asarray(item_indices)
  if items.ndim != 1 or (items.size and not np.issubdtype(items.dtype, np.integer)):
    raise errors.InvalidInput(f"item indices must be a 1-D sequence of ints, got {item_indices!r}.")
  items = items.astype(np.int64)
  bad = (items < 0) | (items >= num_items)
  if bad.any():
    raise errors.InvalidInput(f"item index {int(items[bad][0])} is out of range: the model has "
                              f"{num_items} items (0..{num_items - 1}).")
  mask = np.zeros(num_items, bool)
  mask[items] = True
  return mask


def _exclude_rows(exclude, rows: slice, batch_size: int, num_items: int) -> np.ndarray:
  """Dense bool[batch_size, I] of `exclude[rows]`, zero-padded to the block size."""
  block = np.zeros((batch_size, num_items), dtype=bool)
  if exclude is None:
    return block
  part = exclude[rows]
  if sp.issparse(part):
    part = sp.csr_matrix(part)
    lengths = np.diff(part.indptr)
    block[np.repeat(np.arange(part.shape[0]), lengths), part.indices] = True
  else:
    block[:part.shape[0]] = np.asarray(part, dtype=bool)
  return block


def top_k_for_vectors(params: model.Params, user_vecs, k: int = 20, exclude=None,
                      batch_size: int = 1024, item_offset=None) -> tuple[np.ndarray, np.ndarray]:
  """The k best items for raw user embeddings (e.g. fold-in users), by cosine (plus offset).

  Args:
    params: `{"item": float32[I, D], ...}`; only the item table is used.
    user_vecs: float32[D] (one user) or float32[B, D].
    k: items per user, 1 <= k <= I.
    exclude: items never to recommend: None, bool CSR or dense bool [B, I] (row b for user b),
      or, for a single float32[D] vector, a sequence of item indices.
    batch_size: users scored per block; the score matrix held at once is [batch_size, I].
    item_offset: optional float32[I] added to every user's scores, e.g. the run's
      `model.popularity_offset(train, config.popularity_penalty)`; None: the cosine alone.

  Returns:
    `(items, scores)`: int32[B, k] and float32[B, k] (or [k] for a single vector), best first, ties
    broken by the lower item index. A user with fewer than k candidates gets index -1 and score
    -inf in the slots beyond them.
  """
  item_table = jnp.asarray(params["item"], jnp.float32)
  num_items, dim = item_table.shape
  vecs = np.asarray(user_vecs, dtype=np.float32)
  single = vecs.ndim == 1
  if single:
    vecs = vecs[None]
    if exclude is not None and not (sp.issparse(exclude) or np.ndim(exclude) == 2):
      exclude = item_mask(exclude, num_items)[None]
  if vecs.ndim != 2 or vecs.shape[1] != dim:
    raise errors.InvalidInput(f"user_vecs must be float32[{dim}] or float32[B, {dim}] to match "
                              f"the item table, got shape {np.shape(user_vecs)}.")
  if exclude is not None and not sp.issparse(exclude):
    exclude = np.asarray(exclude, bool)
  if exclude is not None and tuple(exclude.shape) != (vecs.shape[0], num_items):
    raise errors.InvalidInput(f"exclude must have shape {(vecs.shape[0], num_items)} (one row per "
                              f"user), got {tuple(exclude.shape)}.")
  items, scores = _blocked_top_k(vecs, item_table, k, exclude, batch_size, item_offset)
  return (items[0], scores[0]) if single else (items, scores)


def _check_offset(item_offset, num_items: int) -> jax.Array | None:
  """The offset as float32[I] on device, or None; raises ValueError on a bad shape or value."""
  if item_offset is None:
    return None
  offset = np.asarray(item_offset, np.float32)
  if offset.shape != (num_items,):
    raise errors.InvalidInput(f"item_offset must be float32[{num_items}] (one per item), got "
                              f"shape {offset.shape}.")
  if not np.all(np.isfinite(offset)):
    raise errors.InvalidInput("item_offset holds NaN or Inf.")
  return jnp.asarray(offset)


def _blocked_top_k(vecs: np.ndarray, item_table: jax.Array, k: int, exclude,
                   batch_size: int, item_offset=None) -> tuple[np.ndarray, np.ndarray]:
  num_items = item_table.shape[0]
  k = check_k(k, num_items)
  if batch_size <= 0:
    raise errors.InvalidInput(f"batch_size must be positive, got {batch_size}.")
  offset = _check_offset(item_offset, num_items)
  num = vecs.shape[0]
  batch_size = min(batch_size, max(num, 1))
  item_unit = jax.jit(_unit)(item_table)
  out_items = np.empty((num, k), np.int32)
  out_scores = np.empty((num, k), np.float32)
  for start in range(0, num, batch_size):
    rows = slice(start, min(start + batch_size, num))
    size = rows.stop - rows.start
    block = np.zeros((batch_size, vecs.shape[1]), np.float32)  # padded: one compile for all blocks
    block[:size] = vecs[rows]
    mask = _exclude_rows(exclude, rows, batch_size, num_items)
    items, scores = _masked_top_k(block, item_unit, mask, k, offset)
    out_items[rows] = np.asarray(items)[:size]
    out_scores[rows] = np.asarray(scores)[:size]
  return out_items, out_scores


def top_k(params: model.Params, users, k: int = 20, exclude: sp.csr_matrix | None = None,
          batch_size: int = 1024, item_offset=None) -> tuple[np.ndarray, np.ndarray]:
  """The k best items per user by cosine score, optionally leaving out items the user has seen.

  With the run's `item_offset` the lists are exactly evaluation's top-k unseen items
  (`metrics.evaluate(model.score_fn(params, item_offset), ...).top_items`).

  Args:
    params: `{"user": float32[U, D], "item": float32[I, D]}`.
    users: int[B] user indices (rows of `params["user"]`), or raw embeddings float32[D] /
      float32[B, D] (then see `top_k_for_vectors`).
    k: items per user, 1 <= k <= I.
    exclude: bool CSR [U, I] (usually the training matrix) of items never to recommend, or None.
    batch_size: users scored per block; the score matrix held at once is [batch_size, I].
    item_offset: optional float32[I] added to every user's scores (`model.popularity_offset`);
      None: the cosine alone.

  Returns:
    `(items, scores)`: int32[B, k] and float32[B, k] (scores include the offset), best first,
    ties broken by the lower item index; index -1 and score -inf where a user has fewer than k
    unseen items.
  """
  users = np.asarray(users)
  if np.issubdtype(users.dtype, np.floating):
    if exclude is not None:
      raise errors.InvalidInput("exclude for raw user vectors is per vector: use "
                                "top_k_for_vectors.")
    return top_k_for_vectors(params, users, k, None, batch_size, item_offset)
  num_users = params["user"].shape[0]
  if users.ndim != 1 or not np.issubdtype(users.dtype, np.integer):
    raise errors.InvalidInput(f"users must be int[B] user indices, got dtype {users.dtype} shape "
                              f"{users.shape}.")
  bad = (users < 0) | (users >= num_users)
  if bad.any():
    raise errors.InvalidInput(f"user index {int(users[bad][0])} is out of range: the model has "
                              f"{num_users} users (0..{num_users - 1}).")
  if exclude is not None:
    if tuple(exclude.shape) != (num_users, params["item"].shape[0]):
      raise errors.InvalidInput(f"exclude has shape {tuple(exclude.shape)} but the model has "
                                f"{num_users} users x {params['item'].shape[0]} items.")
    exclude = sp.csr_matrix(exclude)[users]
  vecs = np.asarray(params["user"], np.float32)[users]
  return _blocked_top_k(vecs, jnp.asarray(params["item"], jnp.float32), k, exclude, batch_size,
                        item_offset)


def top_k_scored(score_fn, users, k: int = 20, exclude: sp.csr_matrix | None = None, *,
                 num_users: int | None = None, batch_size: int = 1024
                 ) -> tuple[np.ndarray, np.ndarray]:
  """The k best items per user of any model's `ScoreFn` (`models.Model.score_fn`).

  With the run's score function the lists are exactly evaluation's top-k unseen items.

  Args:
    score_fn: `users: int32[B] -> float32[B, I]`.
    users: int[B] user indices.
    k: items per user, 1 <= k <= I.
    exclude: bool CSR [U, I] (usually the training matrix) of items never to recommend, or None.
    num_users: U, when `exclude` is None (to check the indices); else exclude's rows.
    batch_size: users scored per block.

  Returns:
    `(items, scores)`: int32[B, k] and float32[B, k], best first, ties broken by the lower item
    index; index -1 and score -inf where a user has fewer than k unseen items.
  """
  users = np.asarray(users)
  if users.ndim != 1 or not np.issubdtype(users.dtype, np.integer):
    raise errors.InvalidInput(f"users must be int[B] user indices, got dtype {users.dtype} shape "
                              f"{users.shape}.")
  num_users = exclude.shape[0] if exclude is not None else num_users
  if num_users is not None:
    bad = (users < 0) | (users >= num_users)
    if bad.any():
      raise errors.InvalidInput(f"user index {int(users[bad][0])} is out of range: the model "
                                f"has {num_users} users (0..{num_users - 1}).")
  if batch_size <= 0:
    raise errors.InvalidInput(f"batch_size must be positive, got {batch_size}.")
  if exclude is not None:
    exclude = sp.csr_matrix(exclude)[users]
  batch_size = min(batch_size, max(users.size, 1))
  blocks = []
  for start in range(0, users.size, batch_size):
    rows = slice(start, min(start + batch_size, users.size))
    size = rows.stop - rows.start
    block = np.zeros(batch_size, np.int32)  # padded: one compile for all blocks
    block[:size] = users[rows]
    scores = score_fn(jnp.asarray(block))
    num_items = scores.shape[1]
    check_k(k, num_items)
    items, top = _top_k_of_scores(scores, _exclude_rows(exclude, rows, batch_size, num_items),
                                  int(k))
    blocks.append((np.asarray(items)[:size], np.asarray(top)[:size]))
  if not blocks:
    return np.empty((0, int(k)), np.int32), np.empty((0, int(k)), np.float32)
  return np.concatenate([b[0] for b in blocks]), np.concatenate([b[1] for b in blocks])


def _check_item(item, num_items: int) -> int:
  if isinstance(item, bool) or int(item) != item or not 0 <= item < num_items:
    raise errors.InvalidInput(f"item index {item!r} is out of range: the model has {num_items} "
                              f"items (0..{num_items - 1}).")
  return int(item)


def top_k_of_row(scores, item: int, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
  """The k best items of one item-item score row, the item itself left out.

  Args:
    scores: float32[I], e.g. a model's item-item similarities of `item`.
    item: the row's item, 0 <= item < I (never returned).
    k: 1 <= k <= I - 1.

  Returns:
    `(items, scores)`: int32[k] and float32[k], best first, ties by lower index.
  """
  scores = jnp.asarray(scores, jnp.float32)
  num_items = scores.shape[0]
  item = _check_item(item, num_items)
  k = check_k(k, num_items - 1, "catalogue without the item itself")
  candidates = np.ones((1, num_items), bool)
  candidates[0, item] = False
  top = np.asarray(metrics.top_k_unseen(scores[None], jnp.asarray(candidates), k))[0]
  return top.astype(np.int32), np.asarray(scores)[top]


def similar_items(params: model.Params, item: int, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
  """The k items nearest to `item` by cosine of item embeddings, the item itself left out.

  Pure item-item cosine: a run's popularity offset (`model.popularity_offset`) ranks items for a
  user and is not applied here.

  Args:
    params: `{"item": float32[I, D], ...}`.
    item: an item index, 0 <= item < I.
    k: 1 <= k <= I - 1.

  Returns:
    `(items, scores)`: int32[k] and float32[k], most similar first, ties by lower index.
  """
  item_table = jnp.asarray(params["item"], jnp.float32)
  num_items = item_table.shape[0]
  item = _check_item(item, num_items)
  k = check_k(k, num_items - 1, "catalogue without the item itself")
  mask = np.zeros((1, num_items), bool)
  mask[0, int(item)] = True
  items, scores = _masked_top_k(item_table[int(item)][None], jax.jit(_unit)(item_table), mask, k)
  return np.asarray(items[0]), np.asarray(scores[0])
