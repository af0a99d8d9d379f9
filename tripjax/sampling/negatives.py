"""Exact negatives: items drawn among those NOT in a user's training row, with no rejection loop.

Uniformly, or with probability proportional to `(1 + n_i) ** negative_exponent` (n_i: item i's
training positives; word2vec's popularity-smoothed negatives) renormalised over the row's missing
items.

Uniform: with the row's sorted items `idx` and their within-row ranks `r`, `v = idx - r` is
non-decreasing, and the x-th item missing from the row (0-based, `0 <= x < I - n_u`) is
`x + #{r : v_r <= x}`. The count is a binary search inside the row's segment of `v`, vectorised
over all queries (int32 throughout, so 138k x 27k tables do not overflow). x is
`floor(R * (I - n_u) / 2**32)` for a uniform 32-bit R (`integers.multiply_high`; relative bias
below (I - n_u) / 2**32).

Weighted: the same in units of weight. The weights are integers (quantised to sum to about
2**30, at least 1 each), so that exclusion stays exact. With `C(i)` the weight of the items
before i and `Q_r` the weight of the row's positives before its r-th one, `v_r = C(idx_r) - Q_r`
is the missing weight before the r-th positive; for `x` uniform in [0, total - row weight),
`r = #{r : v_r <= x}` positives lie before the drawn item, which is the item whose weight
interval holds `x + Q_r` (a binary search over the items' cumulative weights).
"""

import jax
import jax.numpy as jnp
import numpy as np

from tripjax import kernels
from tripjax import losses
from tripjax.sampling import integers

# Integer negative weights sum to about this (int32 sums stay exact).
_WEIGHT_TOTAL = 2 ** 30


def negative_weights(item_counts: np.ndarray, exponent: float) -> np.ndarray:
  """Integer sampling weights proportional to `(1 + count) ** exponent`, each at least 1.

  Args:
    item_counts: int[I], each item's training positives.
    exponent: >= 0.

  Returns:
    int64[I], summing to at most `2**30 + I` (below 2**31, so int32 cumulative sums are exact).
  """
  # In log space relative to the largest weight: (1 + n) ** e overflows for large e.
  log_raw = exponent * np.log1p(np.asarray(item_counts, np.float64))
  raw = np.exp(log_raw - log_raw.max())
  return np.maximum(1, np.floor(raw / raw.sum() * _WEIGHT_TOTAL)).astype(np.int64)


def weighted_arrays(weights, items, indptr, users):
  """The per-positive arrays of the weighted draw (see the module docstring).

  Args:
    weights: int64[I], the items' integer weights (each >= 1, summing below 2**31).
    items: int[P], the CSR column indices, sorted within each row.
    indptr: int64[U + 1], the CSR row pointers.
    users: int[P], the row of each positive.

  Returns:
    v int32[P] (missing weight before each positive), row_weight int32[U], prefix int32[P]
    (weight of the row's positives before each one), cumulative int32[I] (inclusive).
  """
  cumulative = np.cumsum(weights)
  w = weights[items]
  row_weight = np.bincount(users, weights=w, minlength=indptr.size - 1).astype(np.int64)
  before_all = np.cumsum(w) - w
  prefix = before_all - before_all[indptr[users]]
  v = cumulative[items] - w - prefix
  return (v.astype(np.int32), row_weight.astype(np.int32), prefix.astype(np.int32),
          cumulative.astype(np.int32))


def missing_items(v: jax.Array, indptr: jax.Array, users: jax.Array, x: jax.Array,
                  search_steps: int) -> jax.Array:
  """The x-th (0-based) item absent from each user's row.

  Args:
    v: int32[P], `indices - within-row rank` of the CSR matrix (non-decreasing per row).
    indptr: int32[U + 1], the CSR row pointers.
    users: int32[T], a row per query.
    x: int32[T, ...], ranks among the row's missing items (`0 <= x < I - n_u`).
    search_steps: static, at least `max_row_length.bit_length()`.

  Returns:
    int32[T, ...], item ids not in the rows.
  """
  return x + positives_before(v, indptr, users, x, search_steps)


def positives_before(v: jax.Array, indptr: jax.Array, users: jax.Array, x: jax.Array,
                     search_steps: int) -> jax.Array:
  """`#{r : v[indptr[u] + r] <= x}` within each query's row (v non-decreasing per row).

  Args and shapes as `missing_items` (in the weighted draw, `v` and `x` count weight units
  instead of items); returns int32[T, ...].
  """
  extra = (1,) * (x.ndim - 1)
  lo = jnp.broadcast_to(indptr[users].reshape(-1, *extra), x.shape)
  start = lo
  hi = jnp.broadcast_to(indptr[users + 1].reshape(-1, *extra), x.shape)
  last = v.shape[0] - 1

  def body(_, bounds):
    lo, hi = bounds
    active = lo < hi
    mid = (lo + hi) // 2
    right = active & (v[jnp.minimum(mid, last)] <= x)
    left = active & ~right
    return jnp.where(right, mid + 1, lo), jnp.where(left, mid, hi)

  lo, _ = jax.lax.fori_loop(0, search_steps, body, (lo, hi))
  return lo - start


def weighted_missing_items(v: jax.Array, prefix: jax.Array, cumulative: jax.Array,
                           row_weight: jax.Array, indptr: jax.Array, users: jax.Array,
                           x: jax.Array, search_steps: int) -> jax.Array:
  """The item absent from each user's row that holds unit x of the row's missing weight.

  With integer item weights w, a row's missing items laid end to end (in item order) cover
  [0, total - row weight); unit x falls in exactly one of them.

  Args:
    v: int32[P], the weight of the items missing from the row before each positive.
    prefix: int32[P], the weight of the row's positives before each positive.
    cumulative: int32[I], the inclusive cumulative sum of w.
    row_weight: int32[U], the weight of each row's positives.
    indptr, users, search_steps: as in `missing_items`.
    x: int32[T, ...], `0 <= x < cumulative[-1] - row_weight[users]`.

  Returns:
    int32[T, ...], item ids not in the rows.
  """
  r = positives_before(v, indptr, users, x, search_steps)
  extra = (1,) * (x.ndim - 1)
  start = indptr[users].reshape(-1, *extra)
  length = (indptr[users + 1] - indptr[users]).reshape(-1, *extra)
  before = jnp.where(r < length, prefix[jnp.minimum(start + r, prefix.shape[0] - 1)],
                     row_weight[users].reshape(-1, *extra))
  return jnp.searchsorted(cumulative, x + before, side="right").astype(jnp.int32)


def missing_items_from_words(v: jax.Array, indptr: jax.Array, num_missing: jax.Array, weighted,
                             users: jax.Array, words: jax.Array, search_steps: int,
                             kernel: bool = False) -> jax.Array:
  """Negatives for each query's row from uniform random words, uniform or weighted.

  Args:
    v, indptr, users, search_steps: as in `missing_items` (weighted: as in
      `weighted_missing_items`).
    num_missing: int32[U], each row's missing items (uniform) or missing weight (weighted).
    weighted: None, or (prefix int32[P], cumulative int32[I], row_weight int32[U]) as
      `weighted_arrays` makes them.
    words: uint32[T, n] (uniform: `integers.multiply_high`) or uint32[2, T, n] (weighted:
      `integers.multiply_high48`).
    kernel: static; True computes the same items in the CPU kernel
      (`tripjax.kernels.missing_items_from_words`; CPU only, registered beforehand).

  Returns:
    int32[T, n], item ids not in the rows.
  """
  if kernel:
    return kernels.missing_items_from_words(v, indptr, num_missing, weighted, users, words)
  maxval = num_missing[users][:, None]
  if weighted is None:
    return missing_items(v, indptr, users, integers.multiply_high(words, maxval), search_steps)
  x = integers.multiply_high48(words, maxval)
  return weighted_missing_items(v, *weighted, indptr, users, x, search_steps)


def hardest_negatives(user_vecs: jax.Array, candidate_vecs: jax.Array,
                      candidates: jax.Array) -> jax.Array:
  """Picks, per triplet, the candidate negative the model scores highest (cosine).

  Args:
    user_vecs: float32[B, D].
    candidate_vecs: float32[B, n, D], the embeddings of `candidates`.
    candidates: int32[B, n], item ids.

  Returns:
    int32[B], the highest-scoring candidate of each row (the first on ties).
  """
  scores = losses.cosine(user_vecs[:, None, :], candidate_vecs)
  best = jnp.argmax(jax.lax.stop_gradient(scores), axis=1)
  return jnp.take_along_axis(candidates, best[:, None], axis=1)[:, 0]


def warp_negatives(user_vecs: jax.Array, pos_vecs: jax.Array, candidate_vecs: jax.Array,
                   candidates: jax.Array, margin: float, num_items: int
                   ) -> tuple[jax.Array, jax.Array]:
  """WARP's negative and rank weight (Weston et al., 2011; LightFM's `loss="warp"`).

  The candidates stand for WARP's draws, in order: the negative is the first candidate that
  violates the margin (`cos(u, n) > cos(u, p) - margin`), found at draw t (1-based), and the
  positive's rank among the items is estimated as floor((num_items - 1) / t), so the triplet's
  loss is weighted by log(max(1, that rank)): a positive that many items beat (a violation at the
  first draws) weighs more than one that few beat. A row with no violating candidate weighs 0
  (its hinge is 0 at every candidate anyway).

  Args:
    user_vecs: float32[B, D].
    pos_vecs: float32[B, D].
    candidate_vecs: float32[B, n, D], the embeddings of `candidates`.
    candidates: int32[B, n], item ids in draw order.
    margin: the triplet margin.
    num_items: I, the number of items.

  Returns:
    (int32[B] negatives, float32[B] rank weights); no gradient flows through either.
  """
  user_vecs, pos_vecs, candidate_vecs = jax.lax.stop_gradient(
      (user_vecs, pos_vecs, candidate_vecs))
  cos_p = losses.cosine(user_vecs, pos_vecs)
  cos_n = losses.cosine(user_vecs[:, None, :], candidate_vecs)
  violates = cos_n > (cos_p - margin)[:, None]
  first = jnp.argmax(violates, axis=1)  # the first True; 0 where none
  rank = (num_items - 1) // (first + 1)
  weight = jnp.where(jnp.any(violates, axis=1),
                     jnp.log(jnp.maximum(rank, 1).astype(jnp.float32)), 0.0)
  return jnp.take_along_axis(candidates, first[:, None], axis=1)[:, 0], weight
