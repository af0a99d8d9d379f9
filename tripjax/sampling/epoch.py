"""Epoch triplets: every training positive once, in a fresh order, with exact negatives.

The negatives (`tripjax.sampling.negatives`) are drawn for the positives in the matrix's row
order, one per CSR entry, and the epoch's shuffle is applied afterwards: consecutive searches then
stay in one row's segment of `v` (cache-resident), which makes the draw faster on CPU than drawing
in shuffled order. The draw runs on the device in one jitted program per epoch; on CPU its
searches run in a kernel (`tripjax.kernels.missing_items_from_words`, the same items, several
times faster than XLA's vectorised search).

Three shuffles: "host" (numpy's permutation), "device" (`jax.random.permutation`, the default on
accelerators) and "kernel" (CPU: a bucket shuffle in `tripjax.kernels.shuffle`, keyed from the
epoch's numpy generator, that also applies the order and pads the batches; the default on CPU for
epochs of at least `KERNEL_MIN_SEARCHES` searches). With the host and kernel shuffles the negatives' random words
come from the same numpy generator as the shuffle's (numpy's PCG64) and are drawn ahead on a
thread with them; with the device shuffle, from the epoch's JAX key.

Everything is a pure function of (seed, epoch, shuffle_on, draw_order): a resumed run sees the
same triplets (`tripjax.train` records the last two in its checkpoints). `draw_order="shuffled"`
is the draw of older runs (`tripjax.sampling.legacy`).
"""

import concurrent.futures
import functools
import math
import os
from typing import NamedTuple

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np
import scipy.sparse as sp

from tripjax import errors
from tripjax import kernels
from tripjax.sampling import legacy
from tripjax.sampling import negatives

# The values of `EpochSampler`'s draw_order ("rows": the current draw) and shuffle_on.
DRAW_ORDERS = ("rows", legacy.DRAW_ORDER)
SHUFFLES = ("host", "device", "kernel")
# By default, epochs of fewer searches than this use neither CPU kernel (their one-time build
# would cost more than they save).
KERNEL_MIN_SEARCHES = 2 ** 18
# Host bytes per negative candidate of an epoch, at least: its random words (4, or 8 for a
# weighted draw), their copy on the device, the next epoch's words drawn ahead, the drawn item
# (4) and its shuffled, padded copy (4).
BYTES_PER_CANDIDATE = {False: 24, True: 36}  # weighted draw?


def memory_limit() -> int | None:
  """The bytes this process may use: the machine's memory, or its cgroup's limit (a container,
  a batch job) when lower; None where neither can be read."""
  limits = []
  try:
    limits.append(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
  except (ValueError, OSError):
    pass
  try:
    with open("/sys/fs/cgroup/memory.max") as f:  # cgroup v2; "max" when unlimited
      limits.append(int(f.read().strip()))
  except (OSError, ValueError):
    pass
  return min(limits) if limits else None


def is_weighted(negative_exponent: float, excludes_items: bool) -> bool:
  """Whether `EpochSampler` draws its negatives by weight: popularity-weighted ones
  (`negative_exponent` != 0), or some items excluded from the draw (they weigh 0)."""
  return negative_exponent != 0 or bool(excludes_items)


def check_epoch_memory(num_positives: int, num_negatives: int, weighted: bool = False,
                       memory: int | None = None) -> None:
  """Refuses an epoch whose negative candidates alone would not fit in `memory` (default:
  `memory_limit()`), before anything is drawn: the process would be killed midway instead.

  Args:
    num_positives: P, the epoch's triplets.
    num_negatives: n, candidates per triplet.
    weighted: whether negatives are drawn by weight (`is_weighted`), which takes twice the
      random words.
    memory: the bytes available; None: `memory_limit()`.

  Raises:
    InvalidInput: naming --num_negatives, the bytes needed and the memory.
  """
  memory = memory_limit() if memory is None else memory
  need = BYTES_PER_CANDIDATE[bool(weighted)] * int(num_positives) * int(num_negatives)
  if memory and need > memory:
    raise errors.InvalidInput(
        f"--num_negatives={num_negatives}: an epoch draws that many candidates for each of "
        f"{num_positives} positives, at least {need / 2**30:.1f} GiB of memory, more than the "
        f"{memory / 2**30:.1f} GiB this process may use; use fewer.")


@jax.jit
def _epoch_keys(seed: np.uint32, epoch: np.uint32) -> jax.Array:
  """split(fold_in(key(seed), epoch)): the epoch's (order key, draw key) in one dispatch (the
  eager calls took ~1.5 ms, a fortieth of an ML-1M-shaped fused epoch). Seed and epoch as
  uint32, the bits eager calls give Python ints below 2**32 (int32 would refuse 2**31 on)."""
  return jax.random.split(jax.random.fold_in(jax.random.key(seed), epoch))


@functools.cache
def _prefetch_thread() -> concurrent.futures.ThreadPoolExecutor:
  """The one background thread that draws host shuffles ahead, started on first use."""
  return concurrent.futures.ThreadPoolExecutor(max_workers=1,
                                               thread_name_prefix="tripjax-shuffle")


class Batches(NamedTuple):
  """A chunk (or an epoch of chunks) of triplet batches; padded triplets have weight 0.

  With C chunks of S batches of B triplets and n negative candidates per triplet:
  """
  users: jax.Array  # int32[C, S, B] (or [S, B] for one chunk)
  pos: jax.Array  # int32[C, S, B]: an item in the user's training row
  neg: jax.Array  # int32[C, S, B, n]: candidates NOT in the user's training row
  # float32[C, S, B]: a real triplet's weight (its kind's, times its user's with
  # user_weight_exponent; 1 by default), 0 for padding.
  weights: jax.Array
  # bool[C, S, B]: the triplets of weak positives (low ratings), whose items a step may move
  # less (`--low_rating_item_grad`); None when the sampler has none.
  weak: jax.Array | None = None


def default_shuffle_on() -> str:
  """The shuffle `EpochSampler` uses when not told and not using its CPU kernels: "host" on
  CPU, "device" elsewhere.

  The shuffles give different orders for the same seed: a run records the one it used (see
  `tripjax.train`) so that resuming on another backend does not change its trajectory.
  """
  return "host" if jax.default_backend() == "cpu" else "device"


class EpochSampler:
  """Draws one epoch of triplets at a time from a training matrix.

  Attributes:
    negative_exponent: e, the popularity exponent of the negatives (0: uniform).
    negative_weights: int64[I], the integer weights of the weighted draw; None when uniform.
    num_positives: P, triplets per epoch (weak positives included).
    num_weak: how many of them are weak positives (0 without).
    num_batches: ceil(P / batch_size), batches per epoch.
    num_chunks: C, chunks of `batches_per_chunk` batches per epoch (the last one padded).
    search_kernel: whether the negatives' searches run in the CPU kernel.
  """

  def __init__(self, train: sp.csr_matrix, batch_size: int, batches_per_chunk: int = 1,
               num_negatives: int = 1, seed: int = 0, shuffle_on: str | None = None,
               negative_exponent: float = 0.0, draw_order: str = "rows",
               excluded_items: np.ndarray | None = None, search_kernel: bool | None = None,
               weak_positives: sp.csr_matrix | None = None, weak_weight: float = 1.0,
               strong_positives: sp.csr_matrix | None = None, strong_weight: float = 1.0,
               user_weight_exponent: float = 0.0):
    """Precomputes the per-positive arrays and puts them on the device.

    Args:
      train: bool CSR [U, I], the training positives.
      batch_size: B, triplets per batch.
      batches_per_chunk: S, batches per chunk (one dispatch of the train step).
      num_negatives: n, negative candidates drawn per triplet.
      seed: the sampler's seed; epoch e uses `fold_in(key(seed), e)` (and, for a host
        shuffle, `np.random.default_rng([seed, e])`).
      shuffle_on: "host" (numpy's permutation, faster on CPU than `jax.random.permutation`'s
        sort-based shuffle), "device" or "kernel" (CPU only: `tripjax.kernels.shuffle`, a
        bucket shuffle that also applies the order, several times faster than "host"); None:
        "kernel" when the searches run in the CPU kernel (see `search_kernel`), else
        `default_shuffle_on()`, host on CPU, device elsewhere. The attribute `shuffle_on`
        holds the one used.
      negative_exponent: 0 draws negatives uniformly among the row's missing items; e > 0
        draws item i with probability proportional to `(1 + n_i) ** e` among them, n_i its
        positives in `train` (e = 0.75 is word2vec's choice). The attribute
        `negative_weights` (int64[I], or None when uniform) holds the integer weights used.
      draw_order: "rows" draws the negatives in the matrix's row order, then shuffles (see the
        module docstring); "shuffled" is the draw of runs saved before `draw_order` existed
        (`tripjax.sampling.legacy`), kept so that their checkpoints resume unchanged.
      excluded_items: optional int[C], items never drawn as negatives (held-out cold items:
        training must not see them at all). They get weight 0 in the weighted draw, which is
        then used even when `negative_exponent` is 0.
      search_kernel: where the negatives' searches run (the items drawn are the same): True in
        the CPU kernel (`tripjax.kernels`; its build errors are raised), False in XLA; None
        (the default) in the kernel on a CPU backend for epochs of at least
        `KERNEL_MIN_SEARCHES` searches, unless it cannot be built (then in XLA, with a
        warning). The "shuffled" draw searches in XLA.
      weak_positives: optional bool CSR [U, I], disjoint from `train`: more positives, each
        trained once an epoch like the others but with weight `weak_weight` in the batch's
        weighted mean (`Batches.weights`), e.g. the ratings below the positive threshold (a user
        watched the item and did not like it: `registry.load_low_ratings`). They do not change
        the negatives: those are drawn among the items missing from the `train` row alone (a
        weak positive may be a negative of another triplet), weighted by `train`'s counts; so
        a weak triplet may draw its own item as a candidate (with probability about
        1 / (I - n_u) each), whose hinge is then the margin, with no gradient.
      weak_weight: the weak positives' weight, > 0.
      strong_positives: optional bool CSR [U, I], a subset of `train` whose entries weigh
        `strong_weight` instead of 1 (e.g. the liked ratings of 5:
        `registry.load_high_ratings`); the draw is unchanged.
      strong_weight: their weight, > 0.
      user_weight_exponent: b >= 0: each of user u's triplets also weighs `t_u ** -b`, t_u the
        user's triplets in an epoch (its positives, weak ones included), scaled to a mean of 1
        over the epoch's triplets. 0 weighs users by their triplets, as the loss's plain mean
        does; 1 gives every user the same total (before the kinds' weights), as the mean over
        users of the evaluation does. A b so large that some triplets' float32 weights are 0
        is refused.

    Raises:
      ValueError: on bad sizes, an empty matrix, or a user whose row holds every item
        (no negative exists).
      kernels.Unavailable: `search_kernel=True` or `shuffle_on="kernel"` and the kernels
        cannot be built or loaded.
    """
    if not (np.isfinite(user_weight_exponent) and user_weight_exponent >= 0):
      raise errors.InvalidInput("EpochSampler: user_weight_exponent must be a finite number "
                                f">= 0, got {user_weight_exponent!r}.")
    for name, value in (("batch_size", batch_size), ("batches_per_chunk", batches_per_chunk),
                        ("num_negatives", num_negatives)):
      if int(value) <= 0:
        raise errors.InvalidInput(f"EpochSampler: {name} must be positive, got {value}.")
    train = _canonical(train)
    weak = None if weak_positives is None else _canonical(weak_positives)
    if weak is not None:
      _check_extra("weak", weak, weak_weight, train, draw_order, within_train=False)
    strong = None if strong_positives is None else _canonical(strong_positives)
    if strong is not None:
      _check_extra("strong", strong, strong_weight, train, draw_order, within_train=True)
    triplets = train
    if weak is not None or strong is not None:  # data 1: a positive, 2: a weak one, 3: strong
      triplets = train.astype(bool).astype(np.int8)
      for extra in (weak, strong):
        if extra is not None:
          triplets = triplets + 2 * extra.astype(bool).astype(np.int8)
      triplets = triplets.tocsr()
    triplets.sort_indices()
    excludes = excluded_items is not None and len(excluded_items) > 0
    check_epoch_memory(triplets.nnz, num_negatives, is_weighted(negative_exponent, excludes))
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
    if shuffle_on not in SHUFFLES + (None,):
      raise errors.InvalidInput(f"EpochSampler: shuffle_on must be one of {SHUFFLES}, got "
                                f"{shuffle_on!r}.")
    if draw_order not in DRAW_ORDERS:
      raise errors.InvalidInput(f"EpochSampler: draw_order must be one of {DRAW_ORDERS}, got "
                                f"{draw_order!r}.")
    self.search_kernel = _use_kernel(search_kernel, draw_order,
                                     int(triplets.nnz) * int(num_negatives))
    if shuffle_on is None:
      shuffle_on = "kernel" if self.search_kernel else default_shuffle_on()
    elif shuffle_on == "kernel":
      _use_kernel(True, draw_order, 0)
    if not (np.isfinite(negative_exponent) and negative_exponent >= 0):
      raise errors.InvalidInput("EpochSampler: negative_exponent must be a finite number >= 0, "
                                f"got {negative_exponent!r}.")
    self.shuffle_on = shuffle_on
    self.draw_order = draw_order
    self._next_draw = None  # (epoch, Future of its `_host_draw_on_device`) when prefetched
    self._scratch = None  # the kernel shuffle's working memory, kept from epoch to epoch
    self._weights = None  # every epoch's `Batches.weights`
    self.num_users, self.num_items = num_users, num_items
    self.num_positives = int(triplets.nnz)
    self.batch_size = int(batch_size)
    self.batches_per_chunk = int(batches_per_chunk)
    self.num_negatives = int(num_negatives)
    self.seed = int(seed)
    self.num_batches = -(-self.num_positives // self.batch_size)
    self.num_chunks = -(-self.num_batches // self.batches_per_chunk)
    self._search_steps = max(int(counts.max()).bit_length(), 1)

    # The search's arrays describe `train`'s rows; the triplets (users, items) are every entry of
    # `triplets` (train and weak positives), in row order too.
    users = np.repeat(np.arange(num_users, dtype=np.int32), counts)
    items = train.indices.astype(np.int32)
    ranks = np.arange(train.nnz, dtype=np.int64) - indptr[users]
    self._users = jnp.asarray(users if weak is None else np.repeat(
        np.arange(num_users, dtype=np.int32), np.diff(triplets.indptr)))
    self._items = jnp.asarray(triplets.indices.astype(np.int32))
    self._entries = _entries(triplets, weak is not None or strong is not None, weak_weight,
                             strong_weight, user_weight_exponent)
    if self._entries is not None and draw_order != "rows":
      raise errors.InvalidInput("EpochSampler: weighted triplets need draw_order='rows'.")
    self.num_weak = 0 if weak is None else int(weak.nnz)
    self._v = jnp.asarray((items - ranks).astype(np.int32))
    self._indptr = jnp.asarray(indptr.astype(np.int32))
    self.negative_exponent = float(negative_exponent)
    self.negative_weights = None
    excluded = (np.zeros(0, np.int64) if excluded_items is None
                else np.unique(np.asarray(excluded_items, np.int64)))
    if excluded.size and (excluded[0] < 0 or excluded[-1] >= num_items):
      raise errors.InvalidInput(f"EpochSampler: excluded_items must lie in [0, {num_items}).")
    if excluded.size and np.isin(triplets.indices, excluded).any():
      raise errors.InvalidInput("EpochSampler: an excluded item is a training positive.")
    if not is_weighted(self.negative_exponent, excluded.size):
      self._num_missing = jnp.asarray((num_items - counts).astype(np.int32))
      self._weighted = None
    else:
      self.negative_weights = negatives.negative_weights(np.bincount(items, minlength=num_items),
                                                         self.negative_exponent)
      self.negative_weights[excluded] = 0
      v, row_weight, prefix, cumulative = negatives.weighted_arrays(self.negative_weights, items,
                                                                    indptr, users)
      self._v = jnp.asarray(v)
      missing = cumulative[-1] - row_weight.astype(np.int64)  # missing weight per row
      if (missing <= 0).any():
        raise errors.InvalidInput(f"EpochSampler: user row {int(np.argmax(missing <= 0))} holds "
                                  "every item that may be drawn, so it has no negative.")
      self._num_missing = jnp.asarray(missing.astype(np.int32))
      self._weighted = tuple(map(jnp.asarray, (prefix, cumulative, row_weight)))
    self._sizes = dict(num_chunks=self.num_chunks, batches_per_chunk=self.batches_per_chunk,
                       batch_size=self.batch_size, num_negatives=self.num_negatives,
                       search_steps=self._search_steps, row_order=draw_order == "rows",
                       kernel=self.search_kernel, shuffle_kernel=shuffle_on == "kernel")

  def search_arrays(self) -> tuple:
    """The first arguments of the negatives' search for this sampler's rows:
    `(v, indptr, num_missing, weighted, users)` of `negatives.missing_items_from_words`, with
    `users` int32[P] the row of each positive (the epoch's queries, in row order)."""
    return self._v, self._indptr, self._num_missing, self._weighted, self._users

  def epoch(self, epoch: int, prefetch_next: bool = False,
            columns: np.ndarray | None = None) -> Batches:
    """The triplets of one epoch, on the device.

    Args:
      epoch: the epoch number (0-based); with the seed it fixes the draw.
      prefetch_next: with the host or kernel shuffle, start epoch + 1's host draw (its order
        or key and the negatives' random words, `_host_draw`, copied to the device) on a
        background thread (numpy releases the GIL), so that it overlaps this epoch's work.
        The triplets are the same either way.
      columns: optional sorted int[b], the batch positions (in [0, B)) to draw: a process's
        share of every batch under `jax.distributed` (`tripjax.sharding.place_epoch`). Only
        those triplets' negatives are searched; the result equals `epoch(epoch)[..., columns]`.

    Returns:
      `Batches` with leading shape [C, S, B] (or [C, S, b] with `columns`).
    """
    order_key, key = _epoch_keys(np.uint32(self.seed), np.uint32(epoch))
    words = None
    if self.shuffle_on != "device":
      pending, self._next_draw = self._next_draw, None
      if pending is not None and pending[0] == epoch:
        order, words = pending[1].result()
      else:
        if pending is not None:
          pending[1].cancel()  # drawn ahead for another epoch
        order, words = self._host_draw_on_device(epoch)
      if prefetch_next:
        self._next_draw = (epoch + 1,
                           _prefetch_thread().submit(self._host_draw_on_device, epoch + 1))
    else:
      order = _permutation(order_key, self.num_positives)
    if columns is not None and self.draw_order == "rows":
      columns = np.asarray(columns, np.int32)
      if columns.ndim != 1 or (columns.size and (columns.min() < 0
                                                 or columns.max() >= self.batch_size)):
        raise errors.InvalidInput(f"EpochSampler: columns must be positions in [0, "
                                  f"{self.batch_size}), got {columns!r}.")
      return _draw_columns(key, words, order, jnp.asarray(columns), self._users, self._items,
                           self._entries, self._v, self._indptr, self._num_missing,
                           self._weighted, **self._sizes)
    if self.shuffle_on == "kernel" and self._scratch is None:
      self._scratch = jnp.zeros(kernels.scratch_size(self.num_positives, self.num_negatives),
                                jnp.int32)
    scratch, self._scratch = self._scratch, None  # donated: gone if the draw fails
    batches, self._scratch = _draw_epoch(key, words, order, self._users, self._items,
                                         self._entries, self._v, self._indptr,
                                         self._num_missing, self._weighted, scratch,
                                         **self._sizes)
    if batches.weights is None:  # without weak positives, the same every epoch
      if self._weights is None:
        self._weights = _real_slots(self.num_positives, batches.users.shape)
      batches = batches._replace(weights=self._weights)
    if columns is None:
      return batches
    # The "shuffled" draw of older runs draws in shuffled order: all of it, then the share.
    return jax.tree.map(lambda x: x[:, :, np.asarray(columns)], batches)

  def _host_draw_on_device(self, epoch: int) -> tuple[jax.Array, jax.Array | None]:
    """`_host_draw(epoch)`, copied to the device (a copy that prefetching also overlaps)."""
    order, words = self._host_draw(epoch)
    return jax.device_put(order), None if words is None else jax.device_put(words)

  def _host_draw(self, epoch: int) -> tuple[np.ndarray, np.ndarray | None]:
    """The host or kernel shuffle's randomness, from `rng = default_rng([seed, epoch])`.

    Returns:
      order: int32[P], `rng.permutation(P)` (host); for the kernel shuffle, its key
        `rng.integers(0, 2**32, 2, uint32)` (`kernels.shuffle`).
      words: then `rng.integers(0, 2**32, shape, uint32)`, the negatives' random words: shape
        [P, n] (uniform) or [2, P, n] (weighted: 48 bits per draw); None for the "shuffled"
        draw, which draws its negatives from the epoch's JAX key.
    """
    rng = np.random.default_rng([self.seed, epoch])
    if self.shuffle_on == "kernel":
      order = rng.integers(0, 2**32, 2, dtype=np.uint32)
    else:  # shuffling an int32 arange gives permutation(P)'s order with half the traffic
      order = rng.permutation(np.arange(self.num_positives, dtype=np.int32))
    if self.draw_order == legacy.DRAW_ORDER:
      return order, None
    shape = (self.num_positives, self.num_negatives)
    if self.negative_weights is not None:
      shape = (2,) + shape
    return order, rng.integers(0, 2**32, shape, dtype=np.uint32)


def _canonical(matrix: sp.csr_matrix) -> sp.csr_matrix:
  """A CSR copy with summed duplicates and sorted indices."""
  matrix = sp.csr_matrix(matrix)
  matrix.sum_duplicates()
  matrix.sort_indices()
  return matrix


def _entries(triplets: sp.csr_matrix, kinds: bool, weak_weight: float, strong_weight: float,
             user_weight_exponent: float) -> dict | None:
  """Each triplet's weight and kind, in `triplets`' entry order, on the device; None when
  every weight is 1.

  Args:
    triplets: CSR [U, I] of the epoch's triplets; with `kinds`, int8 data 1 (a positive), 2
      (a weak one), 3 (a strong one).
    kinds: whether `triplets`' data tells the kinds (else every entry is a positive).
    weak_weight, strong_weight, user_weight_exponent: as in `EpochSampler`.

  Returns:
    {"weights": float32[P]} and, with weak positives, "weak": bool[P].
  """
  if not kinds and not user_weight_exponent:
    return None
  weights = np.ones(triplets.nnz)
  if kinds:
    weights = np.select([triplets.data == 1, triplets.data == 2], [1.0, weak_weight],
                        strong_weight)
  if user_weight_exponent:
    per_user = np.diff(triplets.indptr)
    # In logs, relative to the lightest user: t ** -b over- or underflows float64 at large b.
    log_t = np.log(np.maximum(per_user, 1).astype(np.float64))
    by_user = np.repeat(np.exp(-user_weight_exponent * (log_t - log_t[per_user > 0].min())),
                        per_user)
    weights = (weights * by_user / by_user.mean()).astype(np.float32)
    if not weights.all():
      raise errors.InvalidInput(
          f"EpochSampler: user_weight_exponent={user_weight_exponent:g} leaves some triplets "
          "a weight of 0 in float32 (their users have too many triplets against the lightest "
          "user's); use a smaller --user_weight_exponent.")
  entries = {"weights": jnp.asarray(weights, np.float32)}
  if kinds and (triplets.data == 2).any():
    entries["weak"] = jnp.asarray(triplets.data == 2)
  return entries


def _check_extra(kind: str, extra: sp.csr_matrix, weight: float, train: sp.csr_matrix,
                 draw_order: str, within_train: bool) -> None:
  """Refuses `kind` ("weak" or "strong") positives `EpochSampler` cannot train: another shape,
  entries on the wrong side of `train` (strong ones, `within_train`, reweigh training
  positives; weak ones are disjoint from them), a weight that is not a finite number > 0, or
  the draw of older runs (which had none)."""
  if extra.shape != train.shape:
    raise errors.InvalidInput(f"EpochSampler: {kind}_positives has shape {extra.shape}, the "
                              f"training matrix {train.shape}.")
  shared = extra.multiply(train).nnz
  if within_train and shared != extra.nnz:
    raise errors.InvalidInput(f"EpochSampler: {kind}_positives holds entries that are not "
                              "training positives; it reweighs some of them.")
  if not within_train and shared:
    raise errors.InvalidInput(f"EpochSampler: {kind}_positives overlaps the training "
                              "positives; an entry is one or the other.")
  if not (np.isfinite(weight) and np.float32(weight) > 0):
    raise errors.InvalidInput(f"EpochSampler: {kind}_weight must be a finite number > 0 (and "
                              f"not 0 in float32), got {weight!r}.")
  if draw_order != "rows":
    raise errors.InvalidInput(f"EpochSampler: {kind} positives need draw_order='rows'.")


def _use_kernel(requested: bool | None, draw_order: str, num_searches: int) -> bool:
  """`EpochSampler`'s `search_kernel` rule; builds and registers the kernels when used."""
  if requested is None:
    if not (draw_order == "rows" and jax.default_backend() == "cpu"
            and num_searches >= KERNEL_MIN_SEARCHES):
      return False
    try:
      kernels.register()
    except kernels.Unavailable as e:
      logging.warning("The CPU kernels are not used (the negatives are searched in XLA, the "
                      "epoch shuffled on the host): %s", e)
      return False
    return True
  if requested:
    _require_kernels(draw_order)
  return bool(requested)


def _require_kernels(draw_order: str) -> None:
  """Builds and registers the CPU kernels an explicit `search_kernel=True` or
  `shuffle_on="kernel"` asks for; raises if they cannot serve this sampler."""
  if draw_order != "rows" or jax.default_backend() != "cpu":
    raise errors.InvalidInput("EpochSampler: the CPU kernels (search_kernel=True, "
                              "shuffle_on='kernel') need a CPU backend and draw_order='rows'.")
  kernels.register()


@functools.partial(jax.jit, static_argnums=1)
def _permutation(key, size):
  return jax.random.permutation(key, size).astype(jnp.int32)


@functools.partial(jax.jit, static_argnames=("num_chunks", "batches_per_chunk", "batch_size",
                                             "num_negatives", "search_steps", "row_order",
                                             "kernel", "shuffle_kernel"),
                   donate_argnames="scratch")
def _draw_epoch(neg_key, words, order, users, items, entries, v, indptr, num_missing,
                weighted, scratch, *, num_chunks, batches_per_chunk, batch_size, num_negatives,
                search_steps, row_order, kernel, shuffle_kernel):
  """One epoch of padded triplets in the given order (jitted; see `EpochSampler.epoch`).

  Returns `Batches`, and the kernel shuffle's scratch (None for the other shuffles). Their
  weights are None (the same every epoch, see `_real_slots`) unless `entries` (`_entries`:
  each triplet's weight and kind, or None) is given: then each slot's weight and kind are its
  triplet's, weight 0 for padding.

  `words`: the negatives' random uint32 words ([P, n], or [2, P, n] when weighted), or None to
  draw them from `neg_key`. `num_missing` and `weighted` as in
  `negatives.missing_items_from_words`. `row_order`: draw for the CSR entries, then shuffle
  (else `legacy.shuffled_draw`). `kernel`: search in the CPU kernel. `shuffle_kernel`: `order`
  is the kernel shuffle's key (uint32[2]), and `kernels.shuffle` shuffles.
  """
  batch_shape = (num_chunks, batches_per_chunk, batch_size)
  if not row_order:
    triplets = legacy.shuffled_draw(neg_key, order, users, items, v, indptr, num_missing,
                                    weighted, num_negatives=num_negatives,
                                    search_steps=search_steps)
    return _padded_batches(*triplets, None, None, batch_shape), scratch
  if words is None:
    words = _device_words(neg_key, weighted, users.shape[0], num_negatives)
  neg = negatives.missing_items_from_words(v, indptr, num_missing, weighted, users, words,
                                           search_steps, kernel)
  if shuffle_kernel:
    source, *triplets, scratch = kernels.shuffle(
        order, users, items, neg, scratch, math.prod(batch_shape), batch_size,
        with_order=entries is not None)
    return _shaped(*triplets, _slot_entries(entries, source, batch_shape),
                   batch_shape), scratch
  return _padded_batches(users, items, neg, order, entries, batch_shape), scratch


@functools.partial(jax.jit, static_argnames=("num_chunks", "batches_per_chunk", "batch_size",
                                             "num_negatives", "search_steps", "row_order",
                                             "kernel", "shuffle_kernel"))
def _draw_columns(neg_key, words, order, columns, users, items, entries, v, indptr,
                  num_missing, weighted, *, num_chunks, batches_per_chunk, batch_size, num_negatives,
                  search_steps, row_order, kernel, shuffle_kernel):
  """`_draw_epoch(...)[..., columns]` (row order only), searching only those triplets'
  negatives: they are drawn in row order (sorted by CSR entry), then put back in place."""
  del row_order  # always "rows"
  batch_shape = (num_chunks, batches_per_chunk, batch_size)
  if words is None:
    words = _device_words(neg_key, weighted, users.shape[0], num_negatives)
  slot = (jnp.arange(num_chunks * batches_per_chunk)[:, None] * batch_size
          + columns[None, :]).ravel()
  if shuffle_kernel:  # the permutation alone
    size = users.shape[0]
    order = kernels.shuffle(order, users, items, jnp.zeros((size, 0), jnp.int32),
                            jnp.zeros(kernels.scratch_size(size, 0), jnp.int32), size,
                            batch_size)[0]
  held = order[_source(slot, users.shape[0], batch_size)]
  in_rows = jnp.argsort(held)
  sorted_entries = held[in_rows]
  drawn = negatives.missing_items_from_words(v, indptr, num_missing, weighted,
                                             users[sorted_entries],
                                             words[..., sorted_entries, :], search_steps,
                                             kernel)
  neg = jnp.zeros_like(drawn).at[in_rows].set(drawn)
  share_shape = batch_shape[:2] + columns.shape
  real = slot < users.shape[0]
  slots = ({"weights": real.astype(jnp.float32)} if entries is None
           else _held_entries(entries, held, real))
  shaped = {name: values.reshape(share_shape) for name, values in slots.items()}
  return Batches(users=users[held].reshape(share_shape),
                 pos=items[held].reshape(share_shape),
                 neg=neg.reshape(share_shape + (num_negatives,)),
                 weights=shaped["weights"], weak=shaped.get("weak"))


def _device_words(neg_key, weighted, num_positives, num_negatives):
  """The negatives' random words drawn from the epoch's JAX key (the device shuffle):
  uint32[P, n], or [2, P, n] for the weighted draw (48 bits per draw)."""
  shape = ((2,) if weighted is not None else ()) + (num_positives, num_negatives)
  return jax.random.bits(neg_key, shape, jnp.uint32)


def _source(slot, num_positives, batch_size):
  """The triplet (an index into the epoch's order) each batch slot holds: slot itself, or for
  padding slots past the last triplet, a triplet of the last real batch (weight 0)."""
  last_start = (num_positives - 1) // batch_size * batch_size
  return jnp.where(slot < num_positives, slot,
                   last_start + (slot - last_start) % (num_positives - last_start))


def _padded_batches(users, pos, neg, order, entries, batch_shape) -> Batches:
  """Triplets taken in `order` (None: as given) and padded to `batch_shape` = (C, S, B);
  weights and kinds as `_slot_entries` gives them.

  Padding repeats the last batch's own triplets with weight 0, so a padded batch touches only
  rows its real triplets touch (row-sparse optimizers then see no phantom rows); batches past
  the last real one have weight 0 throughout and the step skips them.
  """
  num_positives, batch_size = users.shape[0], batch_shape[-1]
  source = _source(jnp.arange(math.prod(batch_shape)), num_positives, batch_size)
  if order is not None:
    source = order[source]
  return _shaped(users[source], pos[source], neg[source],
                 _slot_entries(entries, source, batch_shape), batch_shape)


def _slot_entries(entries, source, batch_shape):
  """The padded slots' `entries` (`_entries`), T = C * S * B: the weight (float32[T]) and
  kind (bool[T]) of the triplet each slot holds (`source`: int32[T], its index in `entries`),
  weight 0 for the padding slots past the epoch's triplets; None when there are no `entries`
  (`_real_slots` gives the 1s and 0s)."""
  if entries is None:
    return None
  slot = jnp.arange(math.prod(batch_shape))
  return _held_entries(entries, source, slot < entries["weights"].shape[0])


def _held_entries(entries, held, real):
  """`entries`' values of the triplets `held` (int32[T], indices into `entries`) where `real`
  (bool[T]), zeros (weight 0, not weak) in the other slots."""
  return {name: jnp.where(real, values[held], jnp.zeros((), values.dtype))
          for name, values in entries.items()}


def _shaped(users, pos, neg, slots, batch_shape) -> Batches:
  """`Batches` of shape `batch_shape` = (C, S, B) from padded triplets: users int32[T], pos
  int32[T], neg int32[T, n], T = C * S * B, and `slots` (`_slot_entries`: weights float32[T],
  optional weak bool[T]) or None (weights set later)."""
  slots = {} if slots is None else slots
  shaped = {name: values.reshape(batch_shape) for name, values in slots.items()}
  return Batches(users=users.reshape(batch_shape), pos=pos.reshape(batch_shape),
                 neg=neg.reshape(batch_shape + neg.shape[-1:]),
                 weights=shaped.get("weights"), weak=shaped.get("weak"))


@functools.partial(jax.jit, static_argnums=(0, 1))
def _real_slots(num_positives: int, batch_shape: tuple[int, ...]) -> jax.Array:
  """float32[batch_shape]: 1 at the first `num_positives` slots (real triplets), 0 after."""
  slot = jnp.arange(math.prod(batch_shape)).reshape(batch_shape)
  return (slot < num_positives).astype(jnp.float32)
