"""Epoch triplets: every training positive once, in a fresh order, with exact uniform negatives.

The negatives of user u are drawn uniformly among the items NOT in u's training row, exactly
(never an accidental positive, no rejection loop). With the row's sorted items `idx` and their
within-row ranks `r`, `v = idx - r` is non-decreasing, and the x-th item missing from the row
(0-based, `0 <= x < I - n_u`) is `x + #{r : v_r <= x}`. The count is a binary search inside the
row's segment of `v`, vectorised over all triplets and run on the device in one jitted program
per epoch (int32 throughout, so 138k x 27k tables do not overflow).

Everything is a pure function of (seed, epoch): a resumed run sees the same triplets.
"""

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import scipy.sparse as sp

from tripjax import losses


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
    num_positives: P, triplets per epoch.
    num_batches: ceil(P / batch_size), batches per epoch.
    num_chunks: C, chunks of `batches_per_chunk` batches per epoch (the last one padded).
  """

  def __init__(self, train: sp.csr_matrix, batch_size: int, batches_per_chunk: int = 1,
               num_negatives: int = 1, seed: int = 0, shuffle_on: str | None = None):
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

    Raises:
      ValueError: on bad sizes, an empty matrix, or a user whose row holds every item
        (no negative exists).
    """
    for name, value in (("batch_size", batch_size), ("batches_per_chunk", batches_per_chunk),
                        ("num_negatives", num_negatives)):
      if int(value) <= 0:
        raise ValueError(f"EpochSampler: {name} must be positive, got {value}.")
    train = sp.csr_matrix(train)
    train.sum_duplicates()
    train.sort_indices()
    num_users, num_items = train.shape
    indptr = train.indptr.astype(np.int64)
    counts = np.diff(indptr)
    if train.nnz == 0:
      raise ValueError("EpochSampler: the training matrix has no positives.")
    full = np.flatnonzero(counts >= num_items)
    if full.size:
      raise ValueError(f"EpochSampler: user row {int(full[0])} holds all {num_items} items, so "
                       "it has no negative to sample; drop such users before training.")
    if shuffle_on is None:
      shuffle_on = default_shuffle_on()
    if shuffle_on not in ("host", "device"):
      raise ValueError(f"EpochSampler: shuffle_on must be 'host' or 'device', got {shuffle_on!r}.")
    self.shuffle_on = shuffle_on
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
    self._num_missing = jnp.asarray((num_items - counts).astype(np.int32))
    self._sizes = dict(num_chunks=self.num_chunks, batches_per_chunk=self.batches_per_chunk,
                       batch_size=self.batch_size, num_negatives=self.num_negatives,
                       search_steps=self._search_steps)

  def epoch(self, epoch: int) -> Batches:
    """The triplets of one epoch, on the device.

    Args:
      epoch: the epoch number (0-based); with the seed it fixes the draw.

    Returns:
      `Batches` with leading shape [C, S, B].
    """
    key = jax.random.fold_in(jax.random.key(self.seed), epoch)
    order_key, key = jax.random.split(key)
    if self.shuffle_on == "host":
      rng = np.random.default_rng([self.seed, epoch])
      order = jnp.asarray(rng.permutation(self.num_positives).astype(np.int32))
    else:
      order = _permutation(order_key, self.num_positives)
    return _draw_epoch(key, order, self._users, self._items, self._v, self._indptr, self._num_missing,
                       **self._sizes)


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
  return x + (lo - start)


@functools.partial(jax.jit, static_argnums=1)
def _permutation(key, size):
  return jax.random.permutation(key, size).astype(jnp.int32)


@functools.partial(jax.jit, static_argnames=("num_chunks", "batches_per_chunk", "batch_size",
                                             "num_negatives", "search_steps"))
def _draw_epoch(neg_key, order, users, items, v, indptr, num_missing, *, num_chunks,
                batches_per_chunk, batch_size, num_negatives, search_steps):
  """One epoch of padded triplets in the given order (jitted; see `EpochSampler.epoch`)."""
  num_positives = users.shape[0]
  u, p = users[order], items[order]
  x = jax.random.randint(neg_key, (num_positives, num_negatives), 0,
                         num_missing[u][:, None], dtype=jnp.int32)
  n = missing_items(v, indptr, u, x, search_steps)
  # Padding repeats the last batch's own triplets with weight 0, so a padded batch touches
  # only rows its real triplets touch (row-sparse optimizers then see no phantom rows);
  # batches past the last real one have weight 0 throughout and the step skips them.
  padded = num_chunks * batches_per_chunk * batch_size
  slot = jnp.arange(padded)
  last_start = (num_positives - 1) // batch_size * batch_size
  source = jnp.where(slot < num_positives, slot,
                     last_start + (slot - last_start) % (num_positives - last_start))
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
