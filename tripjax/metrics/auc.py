"""Exact per-user ROC AUC from integer rank counts, vmapped over users.

AUC is the Mann-Whitney statistic with ties counted half, which is exactly the area sklearn
computes: for each positive candidate, count the negative candidates with a lower score (twice) and
those with an equal score (once), sum in integers, and divide by 2 * n_pos * n_neg once at the end.
Scores are compared as order-preserving int32 keys of their float32 values, so the comparison is
exact (-0.0 and 0.0 are equal, as in numpy), subnormals included: the keys are made with integer
ops only, since XLA on CPU flushes subnormal floats (|x| < 1.2e-38) to zero in float arithmetic and
comparisons.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from tripjax import errors

_INT32_MAX = np.iinfo(np.int32).max
# Counts are summed as (c >> 12, c & 4095), so the int32 sums are exact for up to ~500k items.
_LOW_BITS = 12
CHUNK_USERS = 32  # users per vmapped step of lax.map; keeps a chunk's rows in cache.


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


def auc_from_counts(counts: jax.Array, is_pos: jax.Array, n_neg: jax.Array) -> jax.Array:
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


def rank_counts(keys: jax.Array, pos: jax.Array, neg: jax.Array) -> tuple[jax.Array, jax.Array]:
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


def compare_counts(keys: jax.Array, neg: jax.Array, pos_keys: jax.Array) -> jax.Array:
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
    return compare_counts(k, n, k[pi])

  counts = lax.map(one_user, (keys, neg, pos_idx), batch_size=min(CHUNK_USERS, keys.shape[0]))
  return auc_from_counts(counts, pos_valid, jnp.sum(neg, axis=1, dtype=jnp.int32))


def _auc_rank(keys: jax.Array, pos: jax.Array, neg: jax.Array) -> jax.Array:
  """AUC per user by sorting each row (any number of positives). Shapes [B, I] -> [B]."""
  counts, is_pos = jax.vmap(rank_counts)(keys, pos, neg)
  return auc_from_counts(counts, is_pos, jnp.sum(neg, axis=1, dtype=jnp.int32))


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
