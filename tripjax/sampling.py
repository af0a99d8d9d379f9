"""Epoch triplets: every training positive once, in a fresh order, with exact negatives.

The negatives of user u are drawn among the items NOT in u's training row, exactly (never an
accidental positive, no rejection loop): uniformly, or with probability proportional to
`(1 + n_i) ** negative_exponent` (n_i: item i's training positives; word2vec's popularity-
smoothed negatives) renormalised over the row's missing items.

Uniform: with the row's sorted items `idx` and their within-row ranks `r`, `v = idx - r` is
non-decreasing, and the x-th item missing from the row (0-based, `0 <= x < I - n_u`) is
`x + #{r : v_r <= x}`. The count is a binary search inside the row's segment of `v`, vectorised
over all triplets and run on the device in one jitted program per epoch (int32 throughout, so
138k x 27k tables do not overflow). x is `floor(R * (I - n_u) / 2**32)` for a uniform 32-bit R
(`multiply_high`; relative bias below (I - n_u) / 2**32). With the host shuffle (CPU) the words R
come from the same numpy generator as the permutation (PCG64: about 5x faster than threefry on
CPU) and are drawn ahead on a thread with it; with the device shuffle, from the epoch's JAX key.

The negatives are drawn for the positives in the matrix's row order, one per CSR entry, and
the epoch's shuffle is applied afterwards: consecutive searches then stay in one row's
segment of `v` (cache-resident), which makes the draw about 1.3-1.6x faster on CPU than
drawing in shuffled order. `draw_order="shuffled"` keeps the earlier draw (`randint` ranks,
drawn in shuffled order) for runs that started with it.

Weighted: the same in units of weight. The weights are integers (quantised to sum to about
2**30, at least 1 each), so that exclusion stays exact. With `C(i)` the weight of the items
before i and `Q_r` the weight of the row's positives before its r-th one, `v_r = C(idx_r) - Q_r`
is the missing weight before the r-th positive; for `x` uniform in [0, total - row weight),
`r = #{r : v_r <= x}` positives lie before the drawn item, which is the item whose weight
interval holds `x + Q_r` (a binary search over the items' cumulative weights).

Everything is a pure function of (seed, epoch, shuffle_on, draw_order): a resumed run sees the
same triplets (`tripjax.train` records the last two in its checkpoints). Flagfiles of runs made
before 2026-11-29 train with the row-order draw when run afresh: same distribution, other
triplets.
"""

import concurrent.futures
import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import scipy.sparse as sp

from tripjax import errors
from tripjax import losses

# The values of `EpochSampler`'s draw_order ("rows": the current draw).
DRAW_ORDERS = ("rows", "shuffled")
# One background thread draws host shuffles ahead (`EpochSampler.epoch(prefetch_next=True)`).
_PREFETCH = concurrent.futures.ThreadPoolExecutor(max_workers=1,
                                                  thread_name_prefix="tripjax-shuffle")


class Batches(NamedTuple):
  """A chunk (or an epoch of chunks) of triplet batches; padded triplets have weight 0.

  With C chunks of S batches of B triplets and n negative candidates per triplet:
  """
  users: jax.Array  # int32[C, S, B] (or [S, B] for one chunk)
  pos: jax.Array  # int32[C, S, B]: an item in the user's training row
  neg: jax.Array  # int32[C, S, B, n]: candidates NOT in the user's training row
  weights: jax.Array  # float32[C, S, B]: 1 for a real triplet, 0 for padding


def default_shuffle_on() -> str:
  """The shuffle `EpochSampler` uses when not told: "host" on CPU, "device" elsewhere.

  The two give different orders for the same seed: a run records the one it used (see
  `tripjax.train`) so that resuming on another backend does not change its trajectory.
  """
  return "host" if jax.default_backend() == "cpu" else "device"


class EpochSampler:
  """Draws one epoch of triplets at a time from a training matrix.

  Attributes:
    negative_exponent: e, the popularity exponent of the negatives (0: uniform).
    negative_weights: int64[I], the integer weights of the weighted draw; None when uniform.
    num_positives: P, triplets per epoch.
    num_batches: ceil(P / batch_size), batches per epoch.
    num_chunks: C, chunks of `batches_per_chunk` batches per epoch (the last one padded).
  """

  def __init__(self, train: sp.csr_matrix, batch_size: int, batches_per_chunk: int = 1,
               num_negatives: int = 1, seed: int = 0, shuffle_on: str | None = None,
               negative_exponent: float = 0.0, draw_order: str = "rows"):
    """Precomputes the per-positive arrays and puts them on the device.

    Args:
      train: bool CSR [U, I], the training positives.
      batch_size: B, triplets per batch.
      batches_per_chunk: S, batches per chunk (one dispatch of the train step).
      num_negatives: n, negative candidates drawn per triplet.
      seed: the sampler's seed; epoch e uses `fold_in(key(seed), e)` (and, for a host
        shuffle, `np.random.default_rng([seed, e])`).
      shuffle_on: "host" (numpy's permutation: ~40x faster than `jax.random.permutation`'s
        sort-based shuffle on CPU) or "device"; None: `default_shuffle_on()`, host on CPU,
        device elsewhere. The attribute `shuffle_on` holds the one used.
      negative_exponent: 0 draws negatives uniformly among the row's missing items; e > 0
        draws item i with probability proportional to `(1 + n_i) ** e` among them, n_i its
        positives in `train` (e = 0.75 is word2vec's choice). The attribute
        `negative_weights` (int64[I], or None when uniform) holds the integer weights used.
      draw_order: "rows" draws the negatives in the matrix's row order, then shuffles (see the
        module docstring); "shuffled" is the draw of runs started before 2026-11-29 (shuffle,
        then draw in that order from the epoch's JAX key: `randint` ranks, or
        `uniform_below` when weighted), kept so that their checkpoints resume unchanged.

    Raises:
      ValueError: on bad sizes, an empty matrix, or a user whose row holds every item
        (no negative exists).
    """
    for name, value in (("batch_size", batch_size), ("batches_per_chunk", batches_per_chunk),
                        ("num_negatives", num_negatives)):
      if int(value) <= 0:
        raise errors.InvalidInput(f"EpochSampler: {name} must be positive, got {value}.")
    train = sp.csr_matrix(train)
    train.sum_duplicates()
    train.sort_indices()
    num_users, num_items = train.shape
    indptr = train.indptr.astype(np.int64)
    counts = np.diff(indptr)
    if train.nnz == 0:
      raise errors.InvalidInput("EpochSampler: the training matrix has no positives.")
    full = np.flatnonzero(counts >= num_items)
    if full.size:
      raise errors.InvalidInput(f"EpochSampler: user row {int(full[0])} holds all {num_items} "
                                "items, so it has no negative to sample; drop such users before "
                                "training.")
    if shuffle_on is None:
      shuffle_on = default_shuffle_on()
    if shuffle_on not in ("host", "device"):
      raise errors.InvalidInput("EpochSampler: shuffle_on must be 'host' or 'device', got "
                                f"{shuffle_on!r}.")
    if draw_order not in DRAW_ORDERS:
      raise errors.InvalidInput(f"EpochSampler: draw_order must be one of {DRAW_ORDERS}, got "
                                f"{draw_order!r}.")
    if not (np.isfinite(negative_exponent) and negative_exponent >= 0):
      raise errors.InvalidInput("EpochSampler: negative_exponent must be a finite number >= 0, "
                                f"got {negative_exponent!r}.")
    self.shuffle_on = shuffle_on
    self.draw_order = draw_order
    self._next_draw = None  # (epoch, Future of its `_host_draw`) when prefetched
    self.num_users, self.num_items = num_users, num_items
    self.num_positives = int(train.nnz)
    self.batch_size = int(batch_size)
    self.batches_per_chunk = int(batches_per_chunk)
    self.num_negatives = int(num_negatives)
    self.seed = int(seed)
    self.num_batches = -(-self.num_positives // self.batch_size)
    self.num_chunks = -(-self.num_batches // self.batches_per_chunk)
    self._search_steps = max(int(counts.max()).bit_length(), 1)

    users = np.repeat(np.arange(num_users, dtype=np.int32), counts)
    items = train.indices.astype(np.int32)
    ranks = np.arange(self.num_positives, dtype=np.int64) - indptr[users]
    self._users = jnp.asarray(users)
    self._items = jnp.asarray(items)
    self._v = jnp.asarray((items - ranks).astype(np.int32))
    self._indptr = jnp.asarray(indptr.astype(np.int32))
    self.negative_exponent = float(negative_exponent)
    self.negative_weights = None
    if self.negative_exponent == 0:
      self._num_missing = jnp.asarray((num_items - counts).astype(np.int32))
      self._weighted = None
    else:
      self.negative_weights = negative_weights(np.bincount(items, minlength=num_items),
                                               self.negative_exponent)
      v, row_weight, prefix, cumulative = weighted_arrays(self.negative_weights, items, indptr,
                                                           users)
      self._v = jnp.asarray(v)
      self._num_missing = jnp.asarray(cumulative[-1] - row_weight)  # missing weight per row
      self._weighted = tuple(map(jnp.asarray, (prefix, cumulative, row_weight)))
    self._sizes = dict(num_chunks=self.num_chunks, batches_per_chunk=self.batches_per_chunk,
                       batch_size=self.batch_size, num_negatives=self.num_negatives,
                       search_steps=self._search_steps, row_order=draw_order == "rows")

  def epoch(self, epoch: int, prefetch_next: bool = False) -> Batches:
    """The triplets of one epoch, on the device.

    Args:
      epoch: the epoch number (0-based); with the seed it fixes the draw.
      prefetch_next: with the host shuffle, start epoch + 1's host draw (its order and the
        negatives' random words, `_host_draw`) on a background thread (numpy releases the
        GIL), so that it overlaps this epoch's work. The triplets are the same either way.

    Returns:
      `Batches` with leading shape [C, S, B].
    """
    key = jax.random.fold_in(jax.random.key(self.seed), epoch)
    order_key, key = jax.random.split(key)
    words = None
    if self.shuffle_on == "host":
      pending, self._next_draw = self._next_draw, None
      if pending is not None and pending[0] == epoch:
        order, words = pending[1].result()
      else:
        if pending is not None:
          pending[1].cancel()  # drawn ahead for another epoch
        order, words = self._host_draw(epoch)
      if prefetch_next:
        self._next_draw = (epoch + 1, _PREFETCH.submit(self._host_draw, epoch + 1))
      order = jnp.asarray(order)
      words = None if words is None else jnp.asarray(words)
    else:
      order = _permutation(order_key, self.num_positives)
    return _draw_epoch(key, words, order, self._users, self._items, self._v, self._indptr,
                       self._num_missing, self._weighted, **self._sizes)

  def _host_draw(self, epoch: int) -> tuple[np.ndarray, np.ndarray | None]:
    """The host shuffle's randomness, from `rng = default_rng([seed, epoch])`.

    Returns:
      order: int32[P], `rng.permutation(P)`.
      words: then `rng.integers(0, 2**32, shape, uint32)`, the negatives' random words: shape
        [P, n] (uniform) or [2, P, n] (weighted: 48 bits per draw); None for the "shuffled"
        draw, which draws `randint` ranks from the epoch's JAX key.
    """
    rng = np.random.default_rng([self.seed, epoch])
    # Shuffling an int32 arange gives permutation(P)'s order with half the memory traffic.
    order = rng.permutation(np.arange(self.num_positives, dtype=np.int32))
    if self.draw_order == "shuffled":
      return order, None
    shape = (self.num_positives, self.num_negatives)
    if self.negative_weights is not None:
      shape = (2,) + shape
    return order, rng.integers(0, 2**32, shape, dtype=np.uint32)


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


def multiply_high(bits: jax.Array, maxval: jax.Array) -> jax.Array:
  """`floor(bits * maxval / 2**32)`: uniform 32-bit words mapped onto [0, maxval).

  Each value in [0, maxval) is hit by floor or ceil of 2**32 / maxval words, so the relative
  bias is below maxval / 2**32 (2**-15 for 131,072 items). Computed in 16-bit limbs (no
  64-bit integers without x64).

  Args:
    bits: uint32[...], uniform random words.
    maxval: int32, broadcastable to `bits`, each in [1, 2**31).

  Returns:
    int32[...] in [0, maxval).
  """
  lo16 = lambda a: a & 0xFFFF
  hi16 = lambda a: a >> 16
  m = jnp.broadcast_to(maxval, bits.shape).astype(jnp.uint32)
  r_low, r_high, m_low, m_high = lo16(bits), hi16(bits), lo16(m), hi16(m)
  middle = hi16(r_low * m_low) + lo16(r_high * m_low) + lo16(r_low * m_high)  # < 3 * 2**16
  return (r_high * m_high + hi16(r_high * m_low) + hi16(r_low * m_high)
          + hi16(middle)).astype(jnp.int32)


def uniform_below(key: jax.Array, maxval: jax.Array, shape: tuple[int, ...]) -> jax.Array:
  """Integers uniform in [0, maxval), for maxval up to 2**31 - 1, with a relative bias < 2**-17.

  `jax.random.randint` multiplies in 32 bits: for a span beyond 2**16 that does not divide
  2**32 it gives the low values up to 1 + 1 / floor(2**32 / span) times the mass of the high
  ones (7/6 at 0.6 * 2**30). Here x = floor(maxval * R / 2**48) for a uniform 48-bit R,
  computed exactly in 16-bit limbs: each x is hit by floor or ceil of 2**48 / maxval values
  of R.

  Args:
    key: a PRNG key.
    maxval: int32, broadcastable to `shape`, each >= 1.
    shape: the output shape.

  Returns:
    int32[shape].
  """
  return multiply_high48(jax.random.bits(key, (2,) + tuple(shape), jnp.uint32), maxval)


def multiply_high48(bits: jax.Array, maxval: jax.Array) -> jax.Array:
  """`floor(maxval * R / 2**48)` for the 48-bit R = bits[0] + (bits[1] mod 2**16) * 2**32.

  Args:
    bits: uint32[2, ...], uniform random words.
    maxval: int32, broadcastable to `bits[0]`, each in [1, 2**31).

  Returns:
    int32[...] in [0, maxval) (see `uniform_below`).
  """
  shape = bits.shape[1:]
  lo16 = lambda a: a & 0xFFFF
  hi16 = lambda a: a >> 16
  r_low, r_mid, r_high = lo16(bits[0]), hi16(bits[0]), lo16(bits[1])
  m = jnp.broadcast_to(maxval, shape).astype(jnp.uint32)
  m_low, m_high = lo16(m), hi16(m)  # m_high < 2**15: every product below fits in 32 bits
  p00, p01, p02 = m_low * r_low, m_low * r_mid, m_low * r_high
  p10, p11, p12 = m_high * r_low, m_high * r_mid, m_high * r_high
  # Columns of 16 bits (each sum < 5 * 2**16), carries propagated upwards.
  c1 = hi16(p00) + lo16(p01) + lo16(p10)
  c2 = hi16(p01) + hi16(p10) + lo16(p02) + lo16(p11) + hi16(c1)
  c3 = hi16(p02) + hi16(p11) + lo16(p12) + hi16(c2)
  return (lo16(c3) + ((hi16(p12) + hi16(c3)) << 16)).astype(jnp.int32)


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


@functools.partial(jax.jit, static_argnums=1)
def _permutation(key, size):
  return jax.random.permutation(key, size).astype(jnp.int32)


@functools.partial(jax.jit, static_argnames=("num_chunks", "batches_per_chunk", "batch_size",
                                             "num_negatives", "search_steps", "row_order"))
def _draw_epoch(neg_key, words, order, users, items, v, indptr, num_missing, weighted, *,
                num_chunks, batches_per_chunk, batch_size, num_negatives, search_steps,
                row_order):
  """One epoch of padded triplets in the given order (jitted; see `EpochSampler.epoch`).

  `words`: the negatives' random uint32 words ([P, n], or [2, P, n] when weighted), or None to
  draw them from `neg_key`. `num_missing` int32[U] counts (uniform) or weighs (weighted) each
  row's missing items; `weighted` is None or (prefix int32[P], cumulative int32[I],
  row_weight int32[U]), as `weighted_arrays` makes them. `row_order`: draw for the CSR
  entries, then shuffle (else the "shuffled" draw: shuffle, then draw with `randint` ranks
  from `neg_key`).
  """
  num_positives = users.shape[0]
  if row_order:
    u, p = users, items
  else:
    u, p = users[order], items[order]
  draw_shape = (num_positives, num_negatives)
  if words is None and (row_order or weighted is not None):
    words = jax.random.bits(neg_key, ((2,) if weighted is not None else ()) + draw_shape,
                            jnp.uint32)
  if weighted is not None:
    x = multiply_high48(words, num_missing[u][:, None])
    n = weighted_missing_items(v, *weighted, indptr, u, x, search_steps)
  elif row_order:
    x = multiply_high(words, num_missing[u][:, None])
    n = missing_items(v, indptr, u, x, search_steps)
  else:
    # randint's excess mass is below 2**-16 while I < 2**16.
    x = jax.random.randint(neg_key, draw_shape, 0, num_missing[u][:, None], dtype=jnp.int32)
    n = missing_items(v, indptr, u, x, search_steps)
  # Padding repeats the last batch's own triplets with weight 0, so a padded batch touches
  # only rows its real triplets touch (row-sparse optimizers then see no phantom rows);
  # batches past the last real one have weight 0 throughout and the step skips them.
  padded = num_chunks * batches_per_chunk * batch_size
  slot = jnp.arange(padded)
  last_start = (num_positives - 1) // batch_size * batch_size
  source = jnp.where(slot < num_positives, slot,
                     last_start + (slot - last_start) % (num_positives - last_start))
  if row_order:
    source = order[source]
  shape = (num_chunks, batches_per_chunk, batch_size)
  return Batches(
      users=u[source].reshape(shape),
      pos=p[source].reshape(shape),
      neg=n[source].reshape(shape + (num_negatives,)),
      weights=(slot < num_positives).astype(jnp.float32).reshape(shape))


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
