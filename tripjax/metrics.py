"""Exact rank-based evaluation: per-user ROC AUC and top-k metrics, in blocks of users.

The reference lab loops over users in Python and calls `sklearn.metrics.roc_auc_score` on each
user's candidates (the items not in the user's training set; test items are the positives). Here
the same numbers are array programs: `roc_auc` is vmapped over users, and `evaluate` walks users in
fixed-size blocks, asking a `ScoreFn` for one block of scores at a time.

AUC is the Mann-Whitney statistic with ties counted half, which is exactly the area sklearn
computes: for each positive candidate, count the negative candidates with a lower score (twice) and
those with an equal score (once), sum in integers, and divide by 2 * n_pos * n_neg once at the end.
Scores are compared as order-preserving int32 keys of their float32 values, so the comparison is
exact (-0.0 and 0.0 are equal, as in numpy), subnormals included: the keys are made with integer
ops only, since XLA on CPU flushes subnormal floats (|x| < 1.2e-38) to zero in float arithmetic and
comparisons.
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

ScoreFn = Callable[[jax.Array], jax.Array]
"""`score_fn(user_indices: int32[B]) -> float32[B, I]`: every item's score for each user."""

_INT32_MAX = np.iinfo(np.int32).max
_SIGN_BIT = np.int32(np.iinfo(np.int32).min)  # the bits of -0.0
_NEG_INF_BITS = np.float32(-np.inf).view(np.int32)
_LOWEST_BITS = np.finfo(np.float32).min.view(np.int32)  # -3.4e38, the lowest finite float32
# Counts are summed as (c >> 12, c & 4095), so the int32 sums are exact for up to ~500k items.
_LOW_BITS = 12
_COMPARE_MAX_POSITIVES = 64  # up to this many positives per user, compare; above, sort.
_CHUNK_USERS = 32  # users per vmapped step of lax.map; keeps a chunk's rows in cache.

# Number of times the block function has been traced (a recompile guard for tests).
trace_count = 0


def sortable_keys(scores: jax.Array) -> jax.Array:
  """Maps float32 scores to int32 keys with the same order; -0.0 and 0.0 get the same key.

  Integer ops only (no float comparison), so subnormal scores keep their order on XLA's CPU
  backend, which flushes them to zero in float ops: the key of a negative float is minus its
  magnitude bits, that of a non-negative one its bits.

  Args:
    scores: float[...] (cast to float32); NaN gives a key outside the range of real numbers.

  Returns:
    int32[...] keys: `a < b` iff `key(a) < key(b)` and `a == b` iff `key(a) == key(b)` for
    non-NaN a, b (infinities included); below INT32_MAX except for one NaN bit pattern.
  """
  s = jnp.asarray(scores).astype(jnp.float32)
  bits = lax.bitcast_convert_type(s, jnp.int32)
  return jnp.where(bits < 0, -(bits & jnp.int32(0x7FFFFFFF)), bits)


def _auc_from_counts(counts: jax.Array, is_pos: jax.Array, n_neg: jax.Array) -> jax.Array:
  """AUC from doubled per-positive counts.

  Args:
    counts: int32[..., P], 2 * (#negatives below) + (#negatives equal) for each positive.
    is_pos: bool[..., P], which entries of `counts` are positives.
    n_neg: int32[...], negative candidates per user.

  Returns:
    float32[...]: the AUC, NaN where there is no positive or no negative.
  """
  c = jnp.where(is_pos, counts, 0)
  hi = jnp.sum(c >> _LOW_BITS, axis=-1)
  lo = jnp.sum(c & ((1 << _LOW_BITS) - 1), axis=-1)
  n_pos = jnp.sum(is_pos, axis=-1)
  num = hi.astype(jnp.float32) * float(1 << _LOW_BITS) + lo.astype(jnp.float32)
  den = 2.0 * n_pos.astype(jnp.float32) * n_neg.astype(jnp.float32)
  ok = (n_pos > 0) & (n_neg > 0)
  return jnp.where(ok, num / jnp.where(ok, den, 1.0), jnp.nan)


def _rank_counts(keys: jax.Array, pos: jax.Array, neg: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Doubled counts for every positive of one user, by one sort (average ranks).

  Args:
    keys: int32[I] sortable keys.
    pos: bool[I] positive candidates.
    neg: bool[I] negative candidates (disjoint from `pos`).

  Returns:
    (counts int32[I], is_pos bool[I]) in sorted order.
  """
  n = keys.shape[0]
  k = jnp.where(pos | neg, keys, _INT32_MAX)  # non-candidates: one group after every candidate
  ks, negs, poss = lax.sort((k, neg.astype(jnp.int32), pos), num_keys=1)
  idx = jnp.arange(n, dtype=jnp.int32)
  differs = ks[1:] != ks[:-1]
  is_start = jnp.concatenate([jnp.ones((1,), bool), differs])
  is_end = jnp.concatenate([differs, jnp.ones((1,), bool)])
  start = lax.cummax(jnp.where(is_start, idx, 0))
  end = lax.cummin(jnp.where(is_end, idx, n - 1), reverse=True)
  below = jnp.concatenate([jnp.zeros((1,), jnp.int32), jnp.cumsum(negs, dtype=jnp.int32)])
  less = below[start]
  equal = below[end + 1] - less
  return 2 * less + equal, poss


def _compare_counts(keys: jax.Array, neg: jax.Array, pos_keys: jax.Array) -> jax.Array:
  """Doubled counts for one user by comparing each positive with every negative.

  Args:
    keys: int32[I] sortable keys.
    neg: bool[I] negative candidates.
    pos_keys: int32[P] keys of the (padded) positives.

  Returns:
    int32[P]: 2 * (#negatives below) + (#negatives equal) for each positive slot.
  """
  kneg = jnp.where(neg, keys, _INT32_MAX)[None, :]
  kp = pos_keys[:, None]
  return jnp.sum((kneg < kp).astype(jnp.int8) + (kneg <= kp).astype(jnp.int8), axis=-1,
                 dtype=jnp.int32)


def _auc_compare(keys: jax.Array, neg: jax.Array, pos_idx: jax.Array,
                 pos_valid: jax.Array) -> jax.Array:
  """AUC per user from padded positive lists; O(P * I) comparisons per user.

  Args:
    keys: int32[B, I]; neg: bool[B, I]; pos_idx: int32[B, P]; pos_valid: bool[B, P].

  Returns:
    float32[B].
  """
  def one_user(args):
    k, n, pi = args
    return _compare_counts(k, n, k[pi])

  counts = lax.map(one_user, (keys, neg, pos_idx), batch_size=min(_CHUNK_USERS, keys.shape[0]))
  return _auc_from_counts(counts, pos_valid, jnp.sum(neg, axis=1, dtype=jnp.int32))


def _auc_rank(keys: jax.Array, pos: jax.Array, neg: jax.Array) -> jax.Array:
  """AUC per user by sorting each row (any number of positives). Shapes [B, I] -> [B]."""
  counts, is_pos = jax.vmap(_rank_counts)(keys, pos, neg)
  return _auc_from_counts(counts, is_pos, jnp.sum(neg, axis=1, dtype=jnp.int32))


def roc_auc(scores: jax.Array, positives: jax.Array, exclude: jax.Array,
            max_positives: int | None = None) -> jax.Array:
  """Per-user ROC AUC over the candidates (items not excluded), ties counted half.

  Equal to `sklearn.metrics.roc_auc_score(positives[u, c], scores[u, c])` with
  `c = ~exclude[u]` (within ~2e-7 in float32). jit-able; no Python loop over users.

  Args:
    scores: float[U, I] (float16/bfloat16/float32; compared as float32).
    positives: bool[U, I], the held-out test items. Positives that are excluded are not candidates.
    exclude: bool[U, I], the training items.
    max_positives: static. None sorts each row (O(I log I) per user, any number of positives).
      An int P compares every positive with every candidate (O(P * I) per user, faster for the
      ~10 test items of a leave-k-out split); a user with more than P positives gets NaN.

  Returns:
    float32[U]: NaN for users with no positive or no negative candidate, or a NaN candidate score.

  Raises:
    ValueError: if the three shapes differ or are not 2-D.
  """
  scores, positives, exclude = jnp.asarray(scores), jnp.asarray(positives), jnp.asarray(exclude)
  if scores.ndim != 2 or scores.shape != positives.shape or scores.shape != exclude.shape:
    raise errors.InvalidInput(f"roc_auc: scores {scores.shape}, positives {positives.shape} and "
                              f"exclude {exclude.shape} must be the same [U, I] shape")
  cand = ~exclude.astype(bool)
  pos = positives.astype(bool) & cand
  neg = cand & ~pos
  keys = sortable_keys(scores)
  bad = jnp.any(jnp.isnan(scores.astype(jnp.float32)) & cand, axis=1)
  if max_positives is None:
    auc = _auc_rank(keys, pos, neg)
  else:
    p = int(max_positives)
    if p < 1:
      raise errors.InvalidInput(f"roc_auc: max_positives must be >= 1, got {max_positives}")
    p = min(p, scores.shape[1])
    idx = jax.vmap(lambda r: jnp.nonzero(r, size=p, fill_value=0)[0])(pos).astype(jnp.int32)
    n_pos = jnp.sum(pos, axis=1)
    valid = jnp.arange(p)[None, :] < n_pos[:, None]
    auc = _auc_compare(keys, neg, idx, valid)
    bad = bad | (n_pos > p)
  return jnp.where(bad, jnp.nan, auc)


def top_k_unseen(scores: jax.Array, candidates: jax.Array, k: int) -> jax.Array:
  """Each user's k best candidate items, best first, ties to the lower item index.

  Args:
    scores: float[B, I]. A candidate scored -inf ranks with the lowest finite score; -0.0 ties
      0.0; subnormal scores rank exactly (the two rewrites are integer ops on the bits, and
      `lax.top_k` on float32 orders by the bits on CPU, where float ops would flush them to 0).
    candidates: bool[B, I], the items that may be recommended (not in train).
    k: static number of items.

  Returns:
    int32[B, k] item indices; -1 where a user has fewer than k candidates.
  """
  s = jnp.asarray(scores).astype(jnp.float32)
  bits = lax.bitcast_convert_type(s, jnp.int32)
  bits = jnp.where(bits == _SIGN_BIT, 0, bits)  # -0.0 -> 0.0 (top_k puts -0.0 below 0.0)
  bits = jnp.where(bits == _NEG_INF_BITS, _LOWEST_BITS, bits)  # -inf candidates beat the rest
  s = lax.bitcast_convert_type(bits, jnp.float32)
  vals, idx = lax.top_k(jnp.where(candidates, s, -jnp.inf), k)
  return jnp.where(vals > -jnp.inf, idx, -1).astype(jnp.int32)


def metric_names(ks: Sequence[int]) -> tuple[str, ...]:
  """Names of the per-user metrics for these k, in report order."""
  names = ["auc"]
  for k in ks:
    names += [f"precision@{k}", f"recall@{k}", f"ndcg@{k}", f"hit_rate@{k}"]
  return tuple(names)


def _top_k_metrics(top: jax.Array, test_row: jax.Array, n_test: jax.Array,
                   ks: tuple[int, ...]) -> dict[str, jax.Array]:
  """precision/recall/NDCG/hit rate @k for one user.

  Args:
    top: int32[K], the user's top unseen items (-1 = none).
    test_row: bool[I], the user's test items.
    n_test: int32 scalar, number of test items.
    ks: static cutoffs, each <= K.

  Returns:
    name -> float32 scalar.
  """
  kmax = top.shape[0]
  hits = test_row[jnp.maximum(top, 0)] & (top >= 0)
  disc = 1.0 / jnp.log2(jnp.arange(kmax, dtype=jnp.float32) + 2.0)
  ideal = jnp.cumsum(disc)
  out = {}
  for k in ks:
    h = jnp.sum(hits[:k], dtype=jnp.int32).astype(jnp.float32)
    dcg = jnp.sum(jnp.where(hits[:k], disc[:k], 0.0))
    idcg = ideal[jnp.clip(jnp.minimum(n_test, k) - 1, 0, kmax - 1)]
    out[f"precision@{k}"] = h / k
    out[f"recall@{k}"] = h / jnp.maximum(n_test, 1).astype(jnp.float32)
    out[f"ndcg@{k}"] = dcg / idcg
    out[f"hit_rate@{k}"] = (h > 0).astype(jnp.float32)
  return out


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
  keys = sortable_keys(scores)
  if compare:
    auc = _auc_from_counts(_compare_counts(keys, neg, keys[pos_idx]), pos_valid, n_neg)
  else:
    counts, is_pos = _rank_counts(keys, test_row & cand, neg)
    auc = _auc_from_counts(counts, is_pos, n_neg)
  top = top_k_unseen(scores, cand, max(ks))
  metrics = {"auc": auc,
             **_top_k_metrics(top, test_row, jnp.sum(pos_valid, dtype=jnp.int32), ks)}
  evaluated = ~jnp.isnan(auc)
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
                         batch_size=min(_CHUNK_USERS, b))
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
             block_size: int = 1024) -> EvalResult:
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

  Returns:
    EvalResult.

  Raises:
    ValueError: shape mismatch, test/train overlap, k out of range, bad block size, a score
      function that returns the wrong shape, or NaN scores.
  """
  train, test, ks = _check_inputs(train, test, ks, block_size)
  num_users, num_items = train.shape
  b = max(1, min(int(block_size), num_users))
  starts = np.arange(0, num_users, b)
  ends = np.minimum(starts + b, num_users)
  train_pad = max(1, int(np.max(train.indptr[ends] - train.indptr[starts], initial=0)))
  max_test = max(1, int(np.max(np.diff(test.indptr), initial=0)))

  rows = np.repeat(np.arange(num_users, dtype=np.int32), np.diff(train.indptr))
  dev = dict(
      train_indptr=jnp.asarray(train.indptr.astype(np.int32)),
      train_indices=jnp.asarray(np.concatenate(
          [train.indices.astype(np.int32), np.zeros(train_pad, np.int32)])),
      train_rows=jnp.asarray(np.concatenate([rows, np.full(train_pad, num_users, np.int32)])),
      test_indptr=jnp.asarray(test.indptr.astype(np.int32)),
      test_indices=jnp.asarray(np.concatenate(
          [test.indices.astype(np.int32), np.zeros(max_test, np.int32)])),
  )
  outs = []
  for start in starts:
    users = np.arange(start, start + b, dtype=np.int32)
    users[users >= num_users] = 0
    scores = score_fn(jnp.asarray(users))
    if tuple(scores.shape) != (b, num_items):
      raise errors.InvalidInput(f"evaluate: score_fn returned shape {tuple(scores.shape)}, "
                                f"expected ({b}, {num_items}) = (len(user_indices), num_items of "
                                "train)")
    outs.append(_block_metrics(scores, jnp.int32(start), jnp.int32(num_users), **dev, ks=ks,
                               max_test=max_test, train_pad=train_pad))
  outs = jax.device_get(outs)
  if any(bool(o[2]) for o in outs):
    raise errors.InvalidInput("evaluate: score_fn returned NaN scores")
  per_user = {name: np.concatenate([o[0][name] for o in outs])[:num_users]
              for name in metric_names(ks)}
  top_items = np.concatenate([o[1] for o in outs])[:num_users]
  evaluated = int(np.sum(~np.isnan(per_user["auc"])))
  means = {name: (float(np.nanmean(v.astype(np.float64))) if evaluated else float("nan"))
           for name, v in per_user.items()}
  return EvalResult(per_user=per_user, top_items=top_items, means=means,
                    users_evaluated=evaluated, users_skipped=num_users - evaluated, ks=ks)
