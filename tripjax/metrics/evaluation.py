"""Blocked evaluation of a score function: every user's AUC and top-k metrics, one block at a time.

The reference lab loops over users in Python and calls `sklearn.metrics.roc_auc_score` on each
user's candidates (the items not in the user's training set; test items are the positives). Here
the same numbers are array programs: `evaluate` walks users in fixed-size blocks, asks a `ScoreFn`
for one block of scores at a time, and computes each user's metrics on the device
(`tripjax.metrics.auc`, `tripjax.metrics.ranking`).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import scipy.sparse as sp
from jax import lax

from tripjax import errors
from tripjax import sharding
from tripjax.metrics import auc
from tripjax.metrics import ranking

ScoreFn = Callable[[jax.Array], jax.Array]
"""`score_fn(user_indices: int32[B]) -> float32[B, I]`: every item's score for each user."""

_COMPARE_MAX_POSITIVES = 64  # up to this many positives per user, compare; above, sort.

# Number of times the block function has been traced (a recompile guard for tests).
trace_count = 0


def metric_names(ks: Sequence[int]) -> tuple[str, ...]:
  """Names of the per-user metrics for these k, in report order."""
  names = ["auc"]
  for k in ks:
    names += [f"precision@{k}", f"recall@{k}", f"ndcg@{k}", f"hit_rate@{k}"]
  return tuple(names)


def _user_metrics(scores, train_row, pos_idx, pos_valid, *, ks, compare):
  """Every metric of one user.

  Args:
    scores: float32[I]; train_row: bool[I]; pos_idx: int32[P] test items (padded);
    pos_valid: bool[P]; ks: static cutoffs; compare: static, AUC by comparison (else by sort).

  Returns:
    (name -> float32 scalar, NaN unless evaluated; top int32[max(ks)]).
  """
  num_items = scores.shape[0]
  test_row = jnp.zeros((num_items,), bool).at[jnp.where(pos_valid, pos_idx, num_items)].set(
      True, mode="drop")
  cand = ~train_row
  neg = cand & ~test_row
  n_neg = jnp.sum(neg, dtype=jnp.int32)
  keys = auc.sortable_keys(scores)
  if compare:
    user_auc = auc.auc_from_counts(auc.compare_counts(keys, neg, keys[pos_idx]), pos_valid,
                                   n_neg)
  else:
    counts, is_pos = auc.rank_counts(keys, test_row & cand, neg)
    user_auc = auc.auc_from_counts(counts, is_pos, n_neg)
  top = ranking.top_k_unseen(scores, cand, max(ks))
  metrics = {"auc": user_auc,
             **ranking.top_k_metrics(top, test_row, jnp.sum(pos_valid, dtype=jnp.int32), ks)}
  evaluated = ~jnp.isnan(user_auc)
  return {name: jnp.where(evaluated, v, jnp.nan) for name, v in metrics.items()}, top


@functools.partial(jax.jit, static_argnames=("ks", "max_test", "train_pad"))
def _block_metrics(scores, start, num_users, train_indptr, train_indices, train_rows,
                   test_indptr, test_indices, *, ks, max_test, train_pad):
  """Every metric for users [start, start + B), densifying their train/test rows from CSR.

  Args:
    scores: float[B, I] from the score function.
    start: int32 scalar, first user of the block.
    num_users: int32 scalar U; rows at or past U are padding.
    train_indptr: int32[U + 1]; train_indices, train_rows: int32[nnz + train_pad] (column and
      row of each train entry, padded so a slice of `train_pad` never runs off the end).
    test_indptr: int32[U + 1]; test_indices: int32[nnz_test + max_test].
    ks: static tuple of k; max_test: static P, most test items of any user;
    train_pad: static, most train entries of any block.

  Returns:
    (metrics dict name -> float32[B] (NaN for users not evaluated), top int32[B, max(ks)],
     has_nan bool scalar).
  """
  global trace_count
  trace_count += 1
  b, num_items = scores.shape
  scores = scores.astype(jnp.float32)
  users = start + jnp.arange(b, dtype=jnp.int32)
  real = users < num_users
  users = jnp.where(real, users, 0)
  has_nan = jnp.any(jnp.isnan(scores) & real[:, None])

  # Train rows: one contiguous slice of the CSR arrays covers the whole block.
  # Entries past the block belong to later rows (>= b after the shift, as do the padding's
  # rows = U), so the scatter drops them.
  lo = train_indptr[start]
  cols = lax.dynamic_slice(train_indices, (lo,), (train_pad,))
  rows = lax.dynamic_slice(train_rows, (lo,), (train_pad,)) - start
  train_dense = jnp.zeros((b, num_items), bool).at[rows, cols].set(True, mode="drop")

  # Test items: at most P per user, gathered per user (padding users get none).
  t0 = test_indptr[users]
  n_test = jnp.where(real, test_indptr[users + 1] - t0, 0)
  slots = jnp.arange(max_test, dtype=jnp.int32)
  pos_valid = slots[None, :] < n_test[:, None]
  pos_idx = jnp.where(pos_valid, test_indices[t0[:, None] + slots[None, :]], 0)

  # Users in small vmapped chunks: each chunk's rows stay in cache (several times faster on
  # CPU than whole-block passes).
  per_user = functools.partial(_user_metrics, ks=ks, compare=max_test <= _COMPARE_MAX_POSITIVES)
  metrics, top = lax.map(lambda a: per_user(*a), (scores, train_dense, pos_idx, pos_valid),
                         batch_size=min(auc.CHUNK_USERS, b))
  return metrics, top, has_nan


@dataclasses.dataclass(frozen=True)
class EvalResult:
  """What `evaluate` returns.

  Attributes:
    per_user: name -> float32[U] ("auc", "precision@k", "recall@k", "ndcg@k", "hit_rate@k");
      NaN for users not evaluated.
    top_items: int32[U, max(ks)], each user's top unseen items, best first (-1: fewer candidates).
    means: name -> mean over evaluated users (NaN skipped; NaN when none was evaluated).
    users_evaluated: users with at least one test item and one negative candidate.
    users_skipped: the other users (their metrics are NaN).
    ks: the k values.
  """

  per_user: Mapping[str, np.ndarray]
  top_items: np.ndarray
  means: Mapping[str, float]
  users_evaluated: int
  users_skipped: int
  ks: tuple[int, ...]

  @property
  def auc(self) -> np.ndarray:
    return self.per_user["auc"]

  def to_dict(self, per_user: bool = False) -> dict[str, Any]:
    """A JSON-ready dict: means, counts, ks (and the per-user arrays as lists if asked)."""
    out = {"means": {k: _json_float(v) for k, v in self.means.items()},
           "users_evaluated": int(self.users_evaluated),
           "users_skipped": int(self.users_skipped),
           "ks": list(self.ks)}
    if per_user:
      out["per_user"] = {k: [_json_float(x) for x in v] for k, v in self.per_user.items()}
    return out


def _json_float(x) -> float | None:
  x = float(x)
  return None if math.isnan(x) else x


def _as_csr(matrix, name: str) -> sp.csr_matrix:
  if not (sp.issparse(matrix) or isinstance(matrix, np.ndarray)):
    raise errors.InvalidInput(f"evaluate: {name} must be a scipy sparse [U, I] matrix, got "
                              f"{type(matrix)}")
  m = sp.csr_matrix(matrix, dtype=bool)
  if m.ndim != 2:
    raise errors.InvalidInput(f"evaluate: {name} must be 2-D [U, I], got shape {m.shape}")
  m.sum_duplicates()
  m.eliminate_zeros()
  m.sort_indices()
  return m


def _check_inputs(train, test, ks, block_size):
  train, test = _as_csr(train, "train"), _as_csr(test, "test")
  if train.shape != test.shape:
    raise errors.InvalidInput(f"evaluate: train shape {train.shape} != test shape {test.shape}")
  leak = train.multiply(test).tocsr()
  if leak.nnz:
    user = int(np.flatnonzero(np.diff(leak.indptr))[0])
    raise errors.InvalidInput(f"evaluate: {leak.nnz} test items are also train items (leakage), "
                              f"e.g. user {user}, items {leak[user].indices[:5].tolist()}")
  try:
    ks = tuple(int(k) for k in ks)
  except TypeError:
    ks = (int(ks),)
  num_items = train.shape[1]
  if not ks or any(k < 1 or k > num_items for k in ks):
    raise errors.InvalidInput(f"evaluate: every k in ks={ks} must be in [1, {num_items}] (the "
                              "number of items)")
  if int(block_size) < 1:
    raise errors.InvalidInput(f"evaluate: block_size must be >= 1, got {block_size}")
  return train, test, ks


def evaluate(score_fn: ScoreFn, train, test, ks: Sequence[int] = (10, 20),
             block_size: int = 1024, mesh=None) -> EvalResult:
  """Evaluates a score function on held-out items, one block of users at a time.

  For each user the candidates are the items not in `train`; the test items are the positives.
  Metrics (binary relevance, top-k over candidates only, ties to the lower item index):
    auc: ROC AUC over the candidates, ties counted half (= sklearn's roc_auc_score).
    precision@k = hits / k; recall@k = hits / n_test (the lab's definition, so recall@k < 1
    when n_test > k); ndcg@k = DCG / ideal DCG, with log2(rank + 2) discounts and the ideal over
    min(k, n_test) hits; hit_rate@k = 1 if any hit.
  A user is evaluated when it has a test item and a negative candidate; the others get NaN.

  Users are walked in fixed blocks of `block_size` (the last one padded, so the block function
  compiles once); `score_fn` receives int32[block_size] user indices, where the padding slots of
  the last block repeat user 0 (their results are dropped). Only one block of scores exists at a
  time; the CSR arrays go to the device once and each block's rows are densified there.

  Args:
    score_fn: `ScoreFn`, int32[B] -> float[B, I]. Called outside jit (it may jit itself).
    train: bool CSR [U, I], training items (excluded from the candidates).
    test: bool CSR [U, I], held-out items; must not overlap `train`.
    ks: cutoffs for the top-k metrics, each in [1, I].
    block_size: users per block (memory is O(block_size * I)).
    mesh: optional `jax.sharding.Mesh` (`tripjax.sharding.make_mesh`): each block's users are
      split over its `data` axis (the block rounded up to a multiple of it); the metrics are
      the same as on one device. Under `jax.distributed` with a mesh over every process's
      devices, every process calls `evaluate` (with the same arguments) and gets the result.

  Returns:
    EvalResult.

  Raises:
    ValueError: shape mismatch, test/train overlap, k out of range, bad block size, a score
      function that returns the wrong shape, or NaN scores.
  """
  train, test, ks = _check_inputs(train, test, ks, block_size)
  num_users, num_items = train.shape
  b = sharding.users_per_block(max(1, min(int(block_size), num_users)), mesh)
  starts = np.arange(0, num_users, b)
  ends = np.minimum(starts + b, num_users)
  train_pad = max(1, int(np.max(train.indptr[ends] - train.indptr[starts], initial=0)))
  max_test = max(1, int(np.max(np.diff(test.indptr), initial=0)))

  rows = np.repeat(np.arange(num_users, dtype=np.int32), np.diff(train.indptr))
  dev = jax.tree.map(functools.partial(sharding.replicate, mesh=mesh), dict(
      train_indptr=train.indptr.astype(np.int32),
      train_indices=np.concatenate([train.indices.astype(np.int32),
                                    np.zeros(train_pad, np.int32)]),
      train_rows=np.concatenate([rows, np.full(train_pad, num_users, np.int32)]),
      test_indptr=test.indptr.astype(np.int32),
      test_indices=np.concatenate([test.indices.astype(np.int32),
                                   np.zeros(max_test, np.int32)]),
  ))
  outs = []
  for start in starts:
    users = np.arange(start, start + b, dtype=np.int32)
    users[users >= num_users] = 0
    scores = score_fn(sharding.place_users(jnp.asarray(users), mesh))
    if tuple(scores.shape) != (b, num_items):
      raise errors.InvalidInput(f"evaluate: score_fn returned shape {tuple(scores.shape)}, "
                                f"expected ({b}, {num_items}) = (len(user_indices), num_items of "
                                "train)")
    outs.append(_block_metrics(scores, jnp.int32(start), jnp.int32(num_users), **dev, ks=ks,
                               max_test=max_test, train_pad=train_pad))
  if mesh is None:
    per_user, top_items, has_nan = jax.tree.map(lambda *x: np.stack(x), *jax.device_get(outs))
  else:  # joined on the devices, then gathered (from every process under jax.distributed)
    per_user, top_items, has_nan = sharding.host_copy(
        jax.tree.map(lambda *x: jnp.stack(x), *outs))
  if has_nan.any():
    raise errors.InvalidInput("evaluate: score_fn returned NaN scores")
  # [blocks, b, ...] -> [users, ...]
  per_user = {name: per_user[name].reshape(-1)[:num_users] for name in metric_names(ks)}
  top_items = top_items.reshape(-1, *top_items.shape[2:])[:num_users]
  evaluated = int(np.sum(~np.isnan(per_user["auc"])))
  means = {name: (float(np.nanmean(v.astype(np.float64))) if evaluated else float("nan"))
           for name, v in per_user.items()}
  return EvalResult(per_user=per_user, top_items=top_items, means=means,
                    users_evaluated=evaluated, users_skipped=num_users - evaluated, ks=ks)
