"""The CPU kernels of the sampler (`tripjax.kernels`: the negatives' search, the epoch's
shuffle) against their definitions, and `EpochSampler` with them."""

import functools

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.sparse as sp

from tripjax import kernels
from tripjax import sampling
from tripjax.sampling import epoch as epoch_lib

pytestmark = pytest.mark.skipif(jax.default_backend() != "cpu", reason="CPU kernels")

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def _splitmix64(key: int, index: np.ndarray) -> np.ndarray:
  """splitmix64's index-th outputs (index from 0) for the 64-bit key, as the kernel has it."""
  with np.errstate(over="ignore"):
    z = np.uint64(key) + (index.astype(np.uint64) + np.uint64(1)) * _GOLDEN
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def _bucket_shuffle(key_words: np.ndarray, size: int) -> np.ndarray:
  """The kernel shuffle's permutation, from its definition (shuffle_cpu.cc's header)."""
  key = int(key_words[0]) | (int(key_words[1]) << 32)
  h = _splitmix64(key, np.arange(size))
  bucket = (h >> np.uint64(64 - 10)).astype(np.int64)
  order = np.argsort(bucket, kind="stable")
  counts = np.bincount(bucket, minlength=1024)
  swap = (h & np.uint64(0xFFFFFFFF)).astype(np.uint64)
  for start, length in zip(np.cumsum(counts) - counts, counts):
    for j in range(length - 1, 0, -1):
      r = (int(swap[start + j]) * (j + 1)) >> 32
      order[start + j], order[start + r] = order[start + r], order[start + j]
  return order


def _shuffle(key, users, items, neg, padded_size, batch_size, with_order=True):
  scratch = jnp.zeros(kernels.scratch_size(users.shape[0], neg.shape[1]), jnp.int32)
  call = jax.jit(functools.partial(kernels.shuffle, padded_size=padded_size,
                                   batch_size=batch_size, with_order=with_order))
  return call(key, users, items, neg, scratch)


@pytest.mark.parametrize("size, padded_size, batch_size, n", [
    (5000, 5000, 100, 2),    # whole batches
    (4999, 5120, 256, 1),    # a partial last batch and padding batches
    (3, 8, 2, 3),            # fewer triplets than buckets
    (777, 800, 50, 4),       # four negatives (a layout of its own without the order)
    (5000, 5120, 100, 2),    # two negatives (another) with padding batches
    (300, 320, 32, 0),       # no negatives
])
def test_the_shuffle_is_its_definition(size, padded_size, batch_size, n):
  rng = np.random.default_rng(size)
  key = rng.integers(0, 2**32, 2, dtype=np.uint32)
  users = rng.integers(0, 1000, size).astype(np.int32)
  items = rng.integers(0, 1000, size).astype(np.int32)
  neg = rng.integers(0, 1000, (size, n)).astype(np.int32)
  order, got_users, got_items, got_neg, _ = _shuffle(key, users, items, neg, padded_size,
                                                     batch_size)
  # Padding repeats the last batch's triplets, as the XLA path's `_source` says.
  source = np.asarray(epoch_lib._source(jnp.arange(padded_size), size, batch_size))
  want = _bucket_shuffle(key, size)[source]
  np.testing.assert_array_equal(order, want)
  np.testing.assert_array_equal(got_users, users[want])
  np.testing.assert_array_equal(got_items, items[want])
  np.testing.assert_array_equal(got_neg, neg[want])
  # Without the order: the same triplets.
  none, *rest, _ = _shuffle(key, users, items, neg, padded_size, batch_size, with_order=False)
  assert none is None
  for a, b in zip(rest, (got_users, got_items, got_neg)):
    np.testing.assert_array_equal(a, b)


def test_the_shuffle_draws_every_permutation_equally_often():
  # 4 triplets (nearly always in 4 buckets: this checks the deal): 24 orders from 4800 keys.
  # Chi-square with 23 degrees of freedom: 49.7 is its 0.999 quantile.
  rng = np.random.default_rng(0)
  ids = np.arange(4, dtype=np.int32)
  call = jax.jit(functools.partial(kernels.shuffle, padded_size=4, batch_size=4))
  scratch = jnp.zeros(kernels.scratch_size(4, 0), jnp.int32)
  counts = {}
  for key in rng.integers(0, 2**32, (4800, 2), dtype=np.uint32):
    order, *_, scratch = call(key, ids, ids, np.zeros((4, 0), np.int32), scratch)
    counts[tuple(np.asarray(order))] = counts.get(tuple(np.asarray(order)), 0) + 1
  assert len(counts) == 24
  observed = np.array(list(counts.values()))
  chi2 = np.sum((observed - 200) ** 2 / 200)
  assert chi2 < 49.7, counts


def test_the_buckets_are_shuffled_uniformly():
  # Within its bucket a triplet keeps its dealt place with probability 1 / m: about one such
  # triplet per bucket (Poisson), 1024 in all (sd 32). A bucket left in dealt order keeps all
  # 64000; a swap range off by one (Sattolo's cycles) keeps none.
  size = 64_000
  key = np.array([12345, 678], np.uint32)
  ids = np.arange(size, dtype=np.int32)
  order = np.asarray(_shuffle(key, ids, ids, np.zeros((size, 0), np.int32), size, 64)[0])
  h = _splitmix64(int(key[0]) | (int(key[1]) << 32), np.arange(size))
  dealt = np.argsort((h >> np.uint64(54)).astype(np.int64), kind="stable")
  kept = int(np.sum(order == dealt))
  assert 1024 - 5 * 32 < kept < 1024 + 5 * 32, kept


@pytest.mark.parametrize("weights_kind", ["popularity", "few_heavy", "small_with_zeros"])
@pytest.mark.parametrize("row_order", [True, False])
def test_the_search_kernel_equals_the_xla_search_for_any_query_order(row_order, weights_kind):
  # Rows of every length from 0 up (runs of queries shorter and longer than the kernel's lanes),
  # queries in row order (the lanes) or shuffled (one at a time). The weighted draw's item table:
  # popularity weights leave one or two items per bucket; ten heavy items among light ones pile
  # hundreds of light ones into a bucket (each search then walks its own bucket); a total below
  # the table's size, with weight-0 (excluded) items in runs, one leading, makes buckets of one
  # unit whose widest holds a run (searched over that fixed width).
  rng = np.random.default_rng(3)
  num_users, num_items, n = 50, 2000, 3
  if weights_kind == "popularity":
    weights = None
  elif weights_kind == "few_heavy":
    weights = np.ones(num_items, np.int64)
    weights[rng.choice(num_items, 10, replace=False)] = 2**26
  else:
    weights = rng.integers(0, 3, num_items).astype(np.int64)
    weights[:16] = 0  # the widest bucket is the first: the lowest word draws from it
    weights[16] = 1
    weights[100:109] = 0
  dense = rng.random((num_users, num_items)) < np.linspace(0, 0.3, num_users)[:, None]
  if weights is not None:
    dense &= weights > 0  # excluded items are never positives
  matrix = sp.csr_matrix(dense)
  indptr = matrix.indptr.astype(np.int64)
  row_of = np.repeat(np.arange(num_users), np.diff(indptr)).astype(np.int32)
  users = np.repeat(np.arange(num_users, dtype=np.int32), rng.integers(0, 12, num_users))
  if not row_order:
    users = rng.permutation(users)
  if weights is None:
    weights = sampling.negative_weights(np.bincount(matrix.indices, minlength=num_items), 0.7)
  v, row_weight, prefix, cumulative = sampling.weighted_arrays(weights, matrix.indices, indptr,
                                                               row_of)
  weighted = tuple(map(jnp.asarray, (prefix, cumulative, row_weight)))
  missing = jnp.asarray(cumulative[-1] - row_weight.astype(np.int64), jnp.int32)
  words = rng.integers(0, 2**32, (2, users.size, n), dtype=np.uint32)
  words[:, :, 0] = 0  # each query's first draw: its row's first missing unit
  words = jnp.asarray(words)
  args = (jnp.asarray(v), jnp.asarray(indptr, jnp.int32), missing, weighted, jnp.asarray(users),
          words, int(np.diff(indptr).max()).bit_length())
  search = jax.jit(sampling.missing_items_from_words, static_argnums=(6, 7))
  got = np.asarray(search(*args, True))
  np.testing.assert_array_equal(got, np.asarray(search(*args, False)))
  assert not dense[users[:, None], got].any() and (weights[got] > 0).all()
  # The uniform draw, from the first words.
  ranks = np.arange(matrix.nnz) - indptr[row_of]
  args = (jnp.asarray((matrix.indices - ranks).astype(np.int32)), args[1],
          jnp.asarray(num_items - np.diff(indptr), jnp.int32), None, args[4], words[0], args[6])
  got = np.asarray(search(*args, True))
  np.testing.assert_array_equal(got, np.asarray(search(*args, False)))
  assert not dense[users[:, None], got].any()


@pytest.mark.parametrize("exponent, excluded", [(0.0, None), (0.7, None), (0.0, [3, 17])])
def test_the_search_kernel_draws_the_xla_search_items(exponent, excluded):
  # An empty row, a row holding all but one item, repeated users, several negatives each.
  rng = np.random.default_rng(1)
  dense = rng.random((40, 60)) < 0.2
  dense[5] = False
  dense[7] = True
  dense[7, 11] = False
  if excluded:
    dense[:, excluded] = False
  matrix = sp.csr_matrix(dense)
  draws = {}
  for kernel in (False, True):
    sampler = sampling.EpochSampler(matrix, 32, 2, 3, seed=4, negative_exponent=exponent,
                                    excluded_items=excluded, search_kernel=kernel,
                                    shuffle_on="host")
    assert sampler.search_kernel is kernel
    draws[kernel] = sampler.epoch(2)
  for a, b in zip(draws[False], draws[True]):
    np.testing.assert_array_equal(a, b)
  users, neg = np.asarray(draws[True].users).ravel(), np.asarray(draws[True].neg)
  assert not dense[users[:, None], neg.reshape(users.size, -1)].any()
  if excluded:
    assert not np.isin(neg, excluded).any()


@pytest.mark.parametrize("exponent", [0.0, 0.5])
def test_the_kernel_shuffle_epoch(exponent):
  """Every positive once with valid negatives, the same from the same seed, a share of the
  columns equal to those columns of the whole draw."""
  matrix = sp.random(60, 80, density=0.15, format="csr", random_state=2).astype(bool)
  make = lambda seed: sampling.EpochSampler(matrix, 32, 3, 2, seed=seed, shuffle_on="kernel",
                                            negative_exponent=exponent)
  sampler = make(3)
  assert sampler.shuffle_on == "kernel"
  whole = sampler.epoch(1)
  weights = np.asarray(whole.weights).ravel() > 0
  users = np.asarray(whole.users).ravel()[weights]
  pos = np.asarray(whole.pos).ravel()[weights]
  neg = np.asarray(whole.neg).reshape(weights.size, -1)[weights]
  assert sorted(zip(users, pos)) == sorted(zip(*matrix.nonzero()))
  assert not matrix.toarray()[users[:, None], neg].any()
  for a, b in zip(whole, make(3).epoch(1)):
    np.testing.assert_array_equal(a, b)
  assert not np.array_equal(whole.users, sampler.epoch(2).users)
  for columns in ([0, 1, 2, 3], [5, 31]):
    share = sampler.epoch(1, columns=np.array(columns))
    jax.tree.map(  # the same fields, None (no weak positives) in both or neither
        lambda all_of_it, part: np.testing.assert_array_equal(
            np.asarray(all_of_it)[:, :, columns], part), whole, share)
  # The order is the kernel's permutation of the CSR entries, keyed from the epoch's generator.
  key = np.random.default_rng([3, 1]).integers(0, 2**32, 2, dtype=np.uint32)
  rows, cols = matrix.nonzero()
  order = _bucket_shuffle(key, matrix.nnz)
  np.testing.assert_array_equal(users, rows[order])
  np.testing.assert_array_equal(pos, cols[order])


def test_large_epochs_use_the_kernels_by_default_and_fall_back_with_a_warning(monkeypatch):
  matrix = sp.random(50, 40, density=0.3, format="csr", random_state=0).astype(bool)
  small = sampling.EpochSampler(matrix, 16)
  assert (small.search_kernel, small.shuffle_on) == (False, "host")
  monkeypatch.setattr(epoch_lib, "KERNEL_MIN_SEARCHES", 2 * matrix.nnz)
  assert sampling.EpochSampler(matrix, 16, num_negatives=1).shuffle_on == "host"
  large = sampling.EpochSampler(matrix, 16, num_negatives=2)
  assert (large.search_kernel, large.shuffle_on) == (True, "kernel")

  def unavailable():
    raise kernels.KernelBuildError("no compiler here")

  monkeypatch.setattr(kernels, "register", unavailable)
  warnings = []
  monkeypatch.setattr(logging, "warning", lambda *args: warnings.append(args))
  fallback = sampling.EpochSampler(matrix, 16, num_negatives=2)
  assert (fallback.search_kernel, fallback.shuffle_on) == (False, "host")
  assert "no compiler here" in str(warnings)
  with pytest.raises(kernels.KernelBuildError, match="no compiler here"):
    sampling.EpochSampler(matrix, 16, shuffle_on="kernel")


def test_the_kernels_need_the_row_draw():
  matrix = sp.csr_matrix(np.eye(4, dtype=bool))
  for kwargs in ({"search_kernel": True}, {"shuffle_on": "kernel"}):
    with pytest.raises(ValueError, match="draw_order='rows'"):
      sampling.EpochSampler(matrix, 2, draw_order="shuffled", **kwargs)
