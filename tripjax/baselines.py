"""Non-personalised baselines with the `ScoreFn` interface, and top-k list overlap."""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import scipy.sparse as sp

from tripjax import errors
from tripjax.metrics import ScoreFn


def random_scores(num_items: int, seed: int = 0) -> ScoreFn:
  """Uniform random scores, a fixed function of (seed, user): the same user always gets the
  same row, whatever block it comes in.

  Args:
    num_items: I.
    seed: PRNG seed.

  Returns:
    ScoreFn: int32[B] -> float32[B, I], U(0, 1) scores.
  """
  if int(num_items) < 1:
    raise errors.InvalidInput(f"random_scores: num_items must be >= 1, got {num_items}")
  key = jax.random.key(seed)
  n = int(num_items)
  return lambda users: _uniform_rows(key, jnp.asarray(users, jnp.int32), n)


# Module-level jits taking the model's arrays as arguments: every random or non-personalised
# baseline of a process (one per run evaluated) shares one compiled program per shape.
@functools.partial(jax.jit, static_argnums=2)
def _uniform_rows(key: jax.Array, users: jax.Array, num_items: int) -> jax.Array:
  row = lambda u: jax.random.uniform(jax.random.fold_in(key, u), (num_items,), jnp.float32)
  return jax.vmap(row)(users)


@jax.jit
def _same_rows(counts: jax.Array, users: jax.Array) -> jax.Array:
  return jnp.broadcast_to(counts, (users.shape[0], counts.shape[0]))


def item_counts(train) -> np.ndarray:
  """Number of training users of each item. train: bool [U, I] (sparse or dense) -> int64[I]."""
  if train is None or getattr(train, "ndim", 0) != 2:
    raise errors.InvalidInput("item_counts: train must be a 2-D [U, I] matrix")
  m = sp.csr_matrix(train, dtype=bool)
  m.sum_duplicates()
  return np.bincount(m.indices, minlength=m.shape[1]).astype(np.int64)


def popularity_scores(train) -> ScoreFn:
  """The lab's non-personalised baseline: every user scores an item by its training count.

  Args:
    train: bool CSR [U, I], training positives.

  Returns:
    ScoreFn: int32[B] -> float32[B, I], row i = count of item i in `train` (same for all users).
  """
  return same_scores(item_counts(train).astype(np.float32))


def same_scores(row) -> ScoreFn:
  """A non-personalised ScoreFn: every user gets `row` (float32[I]) as her scores."""
  row = jnp.asarray(row, jnp.float32)
  return lambda users: _same_rows(row, jnp.asarray(users))


def _top_lists(x: Any, name: str) -> np.ndarray:
  top = getattr(x, "top_items", x)
  top = np.asarray(top)
  if top.ndim != 2 or not np.issubdtype(top.dtype, np.integer):
    raise errors.InvalidInput(f"top_k_overlap: {name} must be int[U, k] top lists or an "
                              f"EvalResult, got {top.dtype}{list(top.shape)}")
  return top


def top_k_overlap(a, b, k: int = 20) -> float:
  """Mean over users of the number of items two top-k unseen lists share.

  Args:
    a: int[U, >=k] top lists (best first, -1 = empty slot) or an `EvalResult`.
    b: the same for the other model.
    k: how many items of each list to compare.

  Returns:
    The mean number of common items in [0, k].
  """
  ta, tb = _top_lists(a, "a"), _top_lists(b, "b")
  if ta.shape[0] != tb.shape[0]:
    raise errors.InvalidInput(f"top_k_overlap: a has {ta.shape[0]} users, b has {tb.shape[0]}")
  if k < 1 or k > min(ta.shape[1], tb.shape[1]):
    raise errors.InvalidInput(f"top_k_overlap: k={k} must be in [1, "
                              f"{min(ta.shape[1], tb.shape[1])}] (the lists hold {ta.shape[1]} "
                              f"and {tb.shape[1]} items)")
  if ta.shape[0] == 0:
    return float("nan")
  ta, tb = ta[:, :k], tb[:, :k]
  common = (ta[:, :, None] == tb[:, None, :]) & (ta[:, :, None] >= 0)
  return float(np.mean(np.sum(np.any(common, axis=2), axis=1)))
