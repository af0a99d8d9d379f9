"""Tests of tripjax.sampling: coverage, exact negatives, uniformity, padding, hardest-of-n."""

import collections

from hypothesis import given, settings, strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.sparse as sp

from tripjax import errors
from tripjax import sampling


def _real(batches):
  """Host arrays of the real (weight 1) triplets: users[T], pos[T], neg[T, n]."""
  w = np.asarray(batches.weights).ravel() > 0
  n = batches.neg.shape[-1]
  return (np.asarray(batches.users).ravel()[w], np.asarray(batches.pos).ravel()[w],
          np.asarray(batches.neg).reshape(-1, n)[w])


_MAX_USERS, _MAX_ITEMS = 12, 40


@st.composite
def _matrices(draw):
  num_users = draw(st.integers(1, _MAX_USERS))
  num_items = draw(st.integers(2, _MAX_ITEMS))
  seed = draw(st.integers(0, 2**31 - 1))
  density = draw(st.floats(0.05, 0.95))
  rng = np.random.default_rng(seed)
  dense = rng.random((num_users, num_items)) < density
  dense[np.arange(num_users), rng.integers(0, num_items, num_users)] = True
  dense[rng.integers(0, num_users), :] = False  # an empty row is allowed
  column = rng.integers(0, num_items)
  dense[0, (column + 1) % num_items] = True  # at least one positive
  dense[:, column] = False  # every row keeps a negative
  return sp.csr_matrix(dense)


@settings(max_examples=8, deadline=None)  # each example compiles (~1-2 s); exactness
# of the negatives is checked on many more matrices by the single-compile property tests below.
@given(matrix=_matrices(), batch=st.integers(1, 9), chunk=st.integers(1, 3),
       negatives=st.integers(1, 3), epoch=st.integers(0, 5),
       exponent=st.sampled_from([0.0, 0.75]))
def test_epoch_covers_each_positive_once_and_never_samples_a_positive(matrix, batch, chunk,
                                                                      negatives, epoch, exponent):
  sampler = sampling.EpochSampler(matrix, batch, chunk, negatives, seed=7,
                                  negative_exponent=exponent)
  batches = sampler.epoch(epoch)
  assert batches.users.shape == (sampler.num_chunks, chunk, batch)
  assert batches.neg.shape == (sampler.num_chunks, chunk, batch, negatives)
  users, pos, neg = _real(batches)
  dense = matrix.toarray()
  rows, cols = matrix.nonzero()
  assert collections.Counter(zip(users.tolist(), pos.tolist())) == collections.Counter(
      zip(rows.tolist(), cols.tolist()))
  assert np.all((neg >= 0) & (neg < matrix.shape[1]))
  assert not dense[users[:, None], neg].any()
  # Padding only repeats rows of the padded batch (no phantom rows for sparse optimizers).
  all_users = np.asarray(batches.users).reshape(-1, batch)
  weights = np.asarray(batches.weights).reshape(-1, batch)
  for b in np.flatnonzero((weights.min(1) == 0) & (weights.max(1) > 0)):
    assert set(all_users[b][weights[b] == 0]) <= set(all_users[b][weights[b] > 0])


# The device-side draw (accelerators' default) and the host one follow the same distribution.
@pytest.mark.parametrize("shuffle_on", ["host", "device"])
def test_negatives_are_uniform_over_missing_items(shuffle_on):
  row = np.zeros(10, bool)
  row[[1, 4, 5, 9]] = True
  matrix = sp.csr_matrix(np.stack([row, ~row]))
  sampler = sampling.EpochSampler(matrix, batch_size=4, num_negatives=6000, seed=0,
                                  shuffle_on=shuffle_on)
  users, _, neg = _real(sampler.epoch(0))
  draws = neg[users == 0].ravel()
  counts = np.bincount(draws, minlength=10)
  assert counts[row].sum() == 0
  expected = draws.size / 6
  # Chi-square with 5 degrees of freedom; 20.5 is its 0.999 quantile.
  chi2 = np.sum((counts[~row] - expected) ** 2 / expected)
  assert chi2 < 20.5, counts


@pytest.mark.parametrize("shuffle_on", ["host", "device"])
def test_weighted_negatives_follow_the_popularity_weights(shuffle_on):
  # Item i has i positives among users 1.. (user 0's row is items 1, 4, 5, 9); exponent 1 gives
  # weights proportional to 1 + i (plus user 0's own positive on 1, 4, 5, 9).
  num_items = 10
  rows = [np.isin(np.arange(num_items), [1, 4, 5, 9])]
  rows += [np.arange(num_items) >= num_items - k for k in range(1, num_items)]
  matrix = sp.csr_matrix(np.stack(rows))
  sampler = sampling.EpochSampler(matrix, batch_size=8, num_negatives=6000, seed=0,
                                  negative_exponent=1.0, shuffle_on=shuffle_on)
  counts_per_item = np.asarray(matrix.sum(0)).ravel()
  want = (1.0 + counts_per_item) / np.sum(1.0 + counts_per_item)
  np.testing.assert_allclose(sampler.negative_weights / sampler.negative_weights.sum(), want,
                             rtol=1e-6)
  users, _, neg = _real(sampler.epoch(0))
  draws = neg[users == 0].ravel()
  counts = np.bincount(draws, minlength=num_items)
  missing = ~rows[0]
  assert counts[~missing].sum() == 0
  expected = draws.size * want[missing] / want[missing].sum()
  # Chi-square with 5 degrees of freedom; 20.5 is its 0.999 quantile.
  chi2 = np.sum((counts[missing] - expected) ** 2 / expected)
  assert chi2 < 20.5, (counts, expected)
  # The uniform draw would be far from these counts (the test can tell the two apart).
  uniform = np.full(missing.sum(), draws.size / missing.sum())
  assert np.sum((counts[missing] - uniform) ** 2 / uniform) > 200


@pytest.mark.parametrize("shuffle_on", ["host", "device"])
def test_uniform_draws_are_multiply_high_ranks_drawn_in_row_order(shuffle_on):
  # The uniform draw, rebuilt in numpy from its definition: one 32-bit word per CSR entry and
  # negative (host: from the epoch's numpy generator, after its permutation; device: from the
  # epoch's JAX key), its multiply-high rank among the row's missing items, that item; then
  # the epoch's order. Runs resumed from checkpoints depend on these draws staying the same.
  matrix = sp.random(30, 50, density=0.2, format="csr", random_state=0).astype(bool)
  matrix.sort_indices()
  seed, epoch, n = 3, 1, 2
  sampler = sampling.EpochSampler(matrix, matrix.nnz, 1, n, seed=seed, shuffle_on=shuffle_on)
  assert sampler.draw_order == "rows" and sampler.negative_weights is None
  order_key, neg_key = jax.random.split(jax.random.fold_in(jax.random.key(seed), epoch))
  if shuffle_on == "host":
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(matrix.nnz)
    bits = rng.integers(0, 2**32, (matrix.nnz, n), dtype=np.uint32)
  else:
    order = np.asarray(jax.random.permutation(order_key, matrix.nnz))
    bits = np.asarray(jax.random.bits(neg_key, (matrix.nnz, n), jnp.uint32))
  rows, cols = matrix.nonzero()
  dense = matrix.toarray()
  num_missing = (~dense).sum(1)
  ranks = (bits.astype(np.uint64) * num_missing[rows][:, None].astype(np.uint64)) >> np.uint64(32)
  drawn = np.array([np.flatnonzero(~dense[u])[r] for u, r in zip(rows, ranks)])
  batches = sampler.epoch(epoch)
  np.testing.assert_array_equal(np.asarray(batches.neg).reshape(-1, n), drawn[order])
  np.testing.assert_array_equal(np.asarray(batches.users).ravel(), rows[order])
  np.testing.assert_array_equal(np.asarray(batches.pos).ravel(), cols[order])


@pytest.mark.parametrize("shuffle_on", ["host", "device"])
def test_weighted_draws_are_48_bit_units_of_the_missing_weight_drawn_in_row_order(shuffle_on):
  # The weighted draw, rebuilt in Python from its definition: two 32-bit words per CSR entry
  # and negative (host: after the permutation, from the epoch's numpy generator; device: from
  # the epoch's JAX key) make R = word0 + (word1 mod 2**16) * 2**32; unit floor(M * R / 2**48)
  # of the row's missing weight M, the row's missing items laid end to end in item order with
  # their integer weights, names the item. The device draw is the host one with other words:
  # both are checked exactly, so neither can drift from the weights (a chi-square test cannot
  # see a bias of a few tenths of a percent).
  matrix = sp.random(30, 50, density=0.2, format="csr", random_state=1).astype(bool)
  matrix.sort_indices()
  seed, epoch, n = 4, 2, 3
  sampler = sampling.EpochSampler(matrix, matrix.nnz, 1, n, seed=seed, shuffle_on=shuffle_on,
                                  negative_exponent=0.7)
  weights = sampler.negative_weights
  assert sampler.draw_order == "rows" and len(set(weights.tolist())) > 5
  order_key, neg_key = jax.random.split(jax.random.fold_in(jax.random.key(seed), epoch))
  if shuffle_on == "host":
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(matrix.nnz)
    words = rng.integers(0, 2**32, (2, matrix.nnz, n), dtype=np.uint32)
  else:
    order = np.asarray(jax.random.permutation(order_key, matrix.nnz))
    words = np.asarray(jax.random.bits(neg_key, (2, matrix.nnz, n), jnp.uint32))
  rows, cols = matrix.nonzero()
  dense = matrix.toarray()
  drawn = np.zeros((matrix.nnz, n), np.int64)
  for t, u in enumerate(rows):
    missing = np.flatnonzero(~dense[u])
    ends = np.cumsum(weights[missing])
    for k in range(n):
      r = int(words[0, t, k]) + (int(words[1, t, k]) % 2**16) * 2**32
      unit = int(ends[-1]) * r >> 48
      drawn[t, k] = missing[np.searchsorted(ends, unit, side="right")]
  batches = sampler.epoch(epoch)
  np.testing.assert_array_equal(np.asarray(batches.neg).reshape(-1, n), drawn[order])
  np.testing.assert_array_equal(np.asarray(batches.users).ravel(), rows[order])


def test_multiply_high_is_exact():
  rng = np.random.default_rng(1)
  bits = rng.integers(0, 2**32, 5000, dtype=np.uint64)
  maxval = rng.integers(1, 2**31, 5000)
  bits[:4] = [0, 2**32 - 1, 2**32 - 1, 2**31]
  maxval[:4] = [2**31 - 1, 2**31 - 1, 1, 3]
  got = np.asarray(sampling.multiply_high(jnp.asarray(bits, jnp.uint32),
                                          jnp.asarray(maxval, jnp.int32)))
  np.testing.assert_array_equal(got, [int(b) * int(m) >> 32 for b, m in zip(bits, maxval)])


def test_shuffled_draw_order_keeps_the_earlier_randint_draws():
  # draw_order="shuffled", the draw of runs started before draw_order existed: the epoch key,
  # the host order, one `randint` rank per negative and the rank-th item missing from the row.
  matrix = sp.random(30, 50, density=0.2, format="csr", random_state=0).astype(bool)
  matrix.sort_indices()
  seed, epoch, n = 3, 1, 2
  sampler = sampling.EpochSampler(matrix, matrix.nnz, 1, n, seed=seed, shuffle_on="host",
                                  negative_exponent=0.0, draw_order="shuffled")
  assert sampler.negative_weights is None
  _, neg_key = jax.random.split(jax.random.fold_in(jax.random.key(seed), epoch))
  order = np.random.default_rng([seed, epoch]).permutation(matrix.nnz)
  users = matrix.nonzero()[0][order]
  dense = matrix.toarray()
  num_missing = (~dense).sum(1)
  ranks = np.asarray(jax.random.randint(neg_key, (matrix.nnz, n), 0,
                                        jnp.asarray(num_missing[users][:, None], jnp.int32)))
  want = [np.flatnonzero(~dense[u])[r] for u, r in zip(users, ranks)]
  np.testing.assert_array_equal(np.asarray(sampler.epoch(epoch).neg).reshape(-1, n), want)
  weighted = sampling.EpochSampler(matrix, matrix.nnz, 1, n, seed=seed, shuffle_on="host",
                                   negative_exponent=0.5, draw_order="shuffled")
  assert not np.array_equal(np.asarray(weighted.epoch(epoch).neg).reshape(-1, n), want)


@pytest.mark.parametrize("exponent", [0.0, 0.5])
def test_prefetched_host_orders_give_the_same_epochs(exponent):
  matrix = sp.random(40, 60, density=0.2, format="csr", random_state=2).astype(bool)
  plain = sampling.EpochSampler(matrix, 16, 2, seed=5, shuffle_on="host",
                                negative_exponent=exponent)
  ahead = sampling.EpochSampler(matrix, 16, 2, seed=5, shuffle_on="host",
                                negative_exponent=exponent)
  draws = []
  host_draw = ahead._host_draw
  ahead._host_draw = lambda epoch: draws.append(epoch) or host_draw(epoch)
  # Epoch 1's draw is prefetched and used; then epoch 3 is asked for out of turn.
  for epoch in (0, 1, 3, 4):
    got = ahead.epoch(epoch, prefetch_next=True)
    want = plain.epoch(epoch)
    for a, b in zip(got, want):
      np.testing.assert_array_equal(a, b)
  ahead._next_draw[1].result()
  # The prefetched draws were used, not drawn again (2 was drawn ahead for nothing, or cancelled).
  assert draws.count(1) == draws.count(4) == 1 and {0, 3, 5} <= set(draws)


def test_rejects_unknown_draw_orders():
  matrix = sp.random(10, 20, density=0.2, format="csr", random_state=0).astype(bool)
  with pytest.raises(ValueError, match="draw_order"):
    sampling.EpochSampler(matrix, 4, draw_order="sorted")


@pytest.mark.parametrize("exponent", [0.75, 80.0])
def test_negative_weights_are_positive_integers_that_fit_int32(exponent):
  counts = np.array([0, 1, 10, 1000, 10**6])
  weights = sampling.negative_weights(counts, exponent)
  assert weights.dtype == np.int64 and weights.min() >= 1
  assert weights.sum() <= 2**30 + counts.size < 2**31
  # (1 + n) ** 80 overflows float64 for n = 10**6; the weights are computed in log space.
  log_raw = exponent * np.log1p(counts)
  want = np.exp(log_raw - log_raw.max())
  np.testing.assert_allclose(weights / weights.sum(), want / want.sum(), rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("exponent", [-0.5, float("nan"), float("inf")])
def test_rejects_bad_exponents(exponent):
  with pytest.raises(ValueError, match="negative_exponent"):
    sampling.EpochSampler(sp.csr_matrix(np.eye(3, dtype=bool)), 2, negative_exponent=exponent)


@pytest.mark.parametrize("shuffle_on", ["host", "device"])
def test_reproducible_from_seed_and_epoch(shuffle_on):
  matrix = sp.random(30, 50, density=0.2, format="csr", random_state=0).astype(bool)
  a = sampling.EpochSampler(matrix, 16, 2, 2, seed=3, shuffle_on=shuffle_on)
  b = sampling.EpochSampler(matrix, 16, 2, 2, seed=3, shuffle_on=shuffle_on)
  for x, y in zip(a.epoch(1), b.epoch(1)):
    np.testing.assert_array_equal(x, y)
  assert not np.array_equal(a.epoch(1).users, a.epoch(2).users)  # a fresh order per epoch
  c = sampling.EpochSampler(matrix, 16, 2, 2, seed=4, shuffle_on=shuffle_on)
  assert not np.array_equal(a.epoch(1).neg, c.epoch(1).neg)
  users, pos, neg = _real(a.epoch(1))
  assert sorted(zip(users, pos)) == sorted(zip(*matrix.nonzero()))
  assert not matrix.toarray()[users[:, None], neg].any()


_jit_missing = jax.jit(sampling.missing_items, static_argnums=4)


@settings(max_examples=60, deadline=None)
@given(matrix=_matrices())
def test_missing_items_is_the_xth_item_outside_the_row(matrix):
  # Fixed padded shapes: one compilation for every example. Padding v past indptr[-1] is never
  # read, and padded users repeat the last row pointer (empty rows).
  num_users = matrix.shape[0]
  counts = np.diff(matrix.indptr)
  ranks = np.arange(matrix.nnz) - np.repeat(matrix.indptr[:-1], counts)
  v = np.full(_MAX_USERS * _MAX_ITEMS, 10**6, np.int32)
  v[:matrix.nnz] = matrix.indices - ranks
  indptr = np.full(_MAX_USERS + 1, matrix.nnz, np.int32)
  indptr[:num_users + 1] = matrix.indptr
  users, x, want = [], [], []
  dense = matrix.toarray()
  for u in range(num_users):
    missing = np.flatnonzero(~dense[u])
    users += [u] * missing.size
    x += list(range(missing.size))
    want += list(missing)
  size = _MAX_USERS * _MAX_ITEMS
  pad = size - len(x)
  got = _jit_missing(jnp.asarray(v), jnp.asarray(indptr),
                     jnp.asarray(np.pad(users, (0, pad)), jnp.int32),
                     jnp.asarray(np.pad(x, (0, pad)), jnp.int32), _MAX_ITEMS.bit_length())
  got = np.asarray(got)[:len(x)]
  np.testing.assert_array_equal(got, want)
  assert not dense[np.asarray(users, int), got].any()


def test_uniform_below_is_the_exact_48_bit_multiply_high():
  rng = np.random.default_rng(0)
  maxval = rng.integers(1, 2**31 - 1, 2000)
  maxval[:4] = [1, 2, 2**16, 2**31 - 1]
  key = jax.random.key(3)
  got = np.asarray(sampling.uniform_below(key, jnp.asarray(maxval, jnp.int32), (2000,)))
  bits = np.asarray(jax.random.bits(key, (2, 2000), jnp.uint32)).astype(object)
  r = bits[0] + (bits[1] % 2**16) * 2**32  # the 48 random bits
  np.testing.assert_array_equal(got, [int(m) * int(b) >> 48 for m, b in zip(maxval, r)])
  assert np.all((got >= 0) & (got < maxval))


def test_uniform_below_is_uniform_over_a_large_span():
  # jax.random.randint over 0.6 * 2**30 gives the lower 2/3 of the range 7/6 of the mass.
  span = 644_245_094
  x = np.asarray(sampling.uniform_below(jax.random.key(0), jnp.int32(span), (200_000,)))
  counts = np.histogram(x, bins=10, range=(0, span))[0]
  expected = x.size / 10
  chi2 = np.sum((counts - expected) ** 2 / expected)
  assert chi2 < 27.9, counts  # 0.999 quantile, 9 degrees of freedom


_jit_weighted = jax.jit(sampling.weighted_missing_items, static_argnums=7)


@settings(max_examples=60, deadline=None)
@given(matrix=_matrices(), data=st.data())
def test_weighted_missing_items_maps_each_weight_unit_to_its_item(matrix, data):
  # Small integer weights, and every unit x of each row's missing weight: the answer is the
  # x-th entry of the row's missing items, each repeated by its weight. Shapes are padded to
  # fixed sizes (one compilation): padded positives are never read, padded items get weight 1.
  num_users, num_items = matrix.shape
  weights = np.ones(_MAX_ITEMS, np.int64)
  weights[:num_items] = data.draw(st.lists(st.integers(1, 4), min_size=num_items,
                                           max_size=num_items))
  indptr = matrix.indptr.astype(np.int64)
  row_of = np.repeat(np.arange(num_users), np.diff(indptr))
  v, row_weight, prefix, cumulative = sampling.weighted_arrays(
      weights[:num_items], matrix.indices.astype(np.int64), indptr, row_of)
  size = _MAX_USERS * _MAX_ITEMS * 4
  pad = lambda a, n, fill: np.concatenate([a, np.full(n - a.size, fill, a.dtype)])
  dense = matrix.toarray()
  users, x, want = [], [], []
  for u in range(num_users):
    missing = np.flatnonzero(~dense[u])
    units = np.repeat(missing, weights[missing])
    users += [u] * units.size
    x += list(range(units.size))
    want += list(units)
  got = _jit_weighted(
      jnp.asarray(pad(v, size, 10**6)), jnp.asarray(pad(prefix, size, 0)),
      jnp.asarray(np.concatenate([cumulative, cumulative[-1] + np.cumsum(
          weights[num_items:])]).astype(np.int32)),
      jnp.asarray(pad(row_weight, _MAX_USERS, 0)),
      jnp.asarray(pad(matrix.indptr.astype(np.int32), _MAX_USERS + 1, matrix.nnz)),
      jnp.asarray(pad(np.asarray(users, np.int32), size, 0)),
      jnp.asarray(pad(np.asarray(x, np.int32), size, 0)), _MAX_ITEMS.bit_length())
  np.testing.assert_array_equal(np.asarray(got)[:len(x)], want)


def test_weighted_missing_items_at_real_weight_scale():
  # Weights summing to about 2**30: the units at each boundary of every missing item's
  # interval map to it, checked against numpy on the expanded cumulative weights.
  rng = np.random.default_rng(1)
  num_items = 300
  dense = rng.random((4, num_items)) < 0.3
  matrix = sp.csr_matrix(dense)
  weights = sampling.negative_weights(rng.integers(0, 5000, num_items), 0.75)
  indptr = matrix.indptr.astype(np.int64)
  row_of = np.repeat(np.arange(4), np.diff(indptr))
  v, row_weight, prefix, cumulative = sampling.weighted_arrays(
      weights, matrix.indices.astype(np.int64), indptr, row_of)
  users, x, want = [], [], []
  for u in range(4):
    missing = np.flatnonzero(~dense[u])
    ends = np.cumsum(weights[missing])  # each missing item's interval is [end - w, end)
    for item, end, w in zip(missing, ends, weights[missing]):
      for unit in (end - w, end - w + 1, end - 1):
        users.append(u), x.append(unit), want.append(item)
    assert ends[-1] == cumulative[-1] - row_weight[u]
  got = sampling.weighted_missing_items(
      *map(jnp.asarray, (v, prefix, cumulative, row_weight, matrix.indptr.astype(np.int32))),
      jnp.asarray(users, jnp.int32), jnp.asarray(x, jnp.int32), num_items.bit_length())
  np.testing.assert_array_equal(np.asarray(got), want)


@pytest.mark.parametrize("exponent", [0.0, 0.75])
def test_missing_items_from_words_spans_each_rows_missing_items(exponent):
  # The lowest word draws a row's first missing item, the highest its last; none is in the row.
  rng = np.random.default_rng(2)
  dense = rng.random((5, 30)) < 0.4
  dense[:, [0, 29]] = [[True, False]] * 5  # first missing item >= 1, last missing item 29
  matrix = sp.csr_matrix(dense)
  indptr = matrix.indptr.astype(np.int64)
  users = np.repeat(np.arange(5), np.diff(indptr)).astype(np.int32)
  ranks = np.arange(matrix.nnz) - indptr[users]
  v, weighted = (matrix.indices - ranks).astype(np.int32), None
  num_missing = (30 - np.diff(indptr)).astype(np.int32)
  words_shape = (5, 3)
  if exponent:
    weights = sampling.negative_weights(np.bincount(matrix.indices, minlength=30), exponent)
    v, row_weight, prefix, cumulative = sampling.weighted_arrays(weights, matrix.indices,
                                                                 indptr, users)
    weighted = tuple(map(jnp.asarray, (prefix, cumulative, row_weight)))
    num_missing = cumulative[-1] - row_weight
    words_shape = (2,) + words_shape
  words = np.zeros(words_shape, np.uint32)
  words[..., 1] = 2**32 - 1
  words[..., 2] = rng.integers(0, 2**32, words_shape[:-1], dtype=np.uint32)
  got = np.asarray(sampling.missing_items_from_words(
      jnp.asarray(v), jnp.asarray(matrix.indptr.astype(np.int32)), jnp.asarray(num_missing),
      weighted, jnp.arange(5, dtype=jnp.int32), jnp.asarray(words), 5))
  first_missing = np.argmax(~dense, axis=1)
  np.testing.assert_array_equal(got[:, 0], first_missing)
  np.testing.assert_array_equal(got[:, 1], 29)
  assert not dense[np.arange(5)[:, None], got].any()


@pytest.mark.parametrize("dense, message", [
    (np.ones((2, 3), bool), "holds all 3 items"),
    (np.zeros((2, 3), bool), "no positives"),
])
def test_rejects_matrices_without_triplets(dense, message):
  with pytest.raises(ValueError, match=message):
    sampling.EpochSampler(sp.csr_matrix(dense), batch_size=2)


def test_rejects_bad_sizes():
  with pytest.raises(ValueError, match="batch_size"):
    sampling.EpochSampler(sp.csr_matrix(np.eye(3, dtype=bool)), batch_size=0)


def test_hardest_negative_is_the_highest_cosine():
  rng = np.random.default_rng(0)
  user_vecs = rng.normal(size=(8, 4)).astype(np.float32)
  candidates = rng.integers(0, 100, size=(8, 5)).astype(np.int32)
  cand_vecs = rng.normal(size=(8, 5, 4)).astype(np.float32)
  cos = np.einsum("bd,bnd->bn", user_vecs, cand_vecs) / (
      np.linalg.norm(user_vecs, axis=-1)[:, None] * np.linalg.norm(cand_vecs, axis=-1))
  want = candidates[np.arange(8), cos.argmax(1)]
  got = jax.jit(sampling.hardest_negatives)(user_vecs, cand_vecs, candidates)
  np.testing.assert_array_equal(got, want)
  # Scaling a candidate's vector does not change its cosine, so not the choice either.
  np.testing.assert_array_equal(
      sampling.hardest_negatives(user_vecs, cand_vecs * 100.0, candidates), want)


def test_host_shuffle_is_numpys_permutation_of_the_positives():
  # The host order is pinned to `default_rng([seed, epoch]).permutation(P)` of the CSR positives:
  # runs written by earlier versions resume with the same triplets.
  matrix = sp.random(30, 50, density=0.2, format="csr", random_state=0).astype(bool)
  matrix.sort_indices()
  sampler = sampling.EpochSampler(matrix, matrix.nnz, shuffle_on="host", seed=3)
  order = np.random.default_rng([3, 2]).permutation(matrix.nnz)
  rows, cols = matrix.nonzero()
  batches = sampler.epoch(2)
  np.testing.assert_array_equal(np.asarray(batches.users).ravel(), rows[order])
  np.testing.assert_array_equal(np.asarray(batches.pos).ravel(), cols[order])


@pytest.mark.parametrize("shuffle_on", ["host", "device"])
@pytest.mark.parametrize("exponent", [0.0, 0.5])
def test_a_share_of_the_columns_is_those_columns_of_the_whole_draw(shuffle_on, exponent):
  # A process of a jax.distributed job draws only its devices' batch positions (padding
  # slots of the last batch included); they must be exactly the whole epoch's.
  matrix = sp.random(40, 60, density=0.2, format="csr", random_state=0).astype(bool)
  sampler = sampling.EpochSampler(matrix, 16, 3, 2, seed=3, shuffle_on=shuffle_on,
                                  negative_exponent=exponent)
  whole = sampler.epoch(1)
  for columns in ([0, 1, 2, 3, 4, 5, 6, 7], [8, 9, 10, 11, 12, 13, 14, 15], [3, 11]):
    share = sampler.epoch(1, columns=np.array(columns))
    jax.tree.map(  # the same fields, None (no weak positives) in both or neither
        lambda all_of_it, part: np.testing.assert_array_equal(
            np.asarray(all_of_it)[:, :, columns], part), whole, share)
  with pytest.raises(ValueError, match="columns"):
    sampler.epoch(1, columns=np.array([16]))


def test_an_epoch_of_more_candidates_than_memory_holds_is_refused_before_drawing():
  sampling.check_epoch_memory(10, 3, memory=24 * 30)  # 24 bytes a candidate: fits
  with pytest.raises(errors.InvalidInput, match=r"^--num_negatives=4: .* each of 10 positives"):
    sampling.check_epoch_memory(10, 4, memory=24 * 30)
  with pytest.raises(errors.InvalidInput, match="--num_negatives=3"):  # 36 bytes weighted
    sampling.check_epoch_memory(10, 3, weighted=True, memory=24 * 30)
  matrix = sp.csr_matrix(np.eye(4, 6, dtype=bool))
  with pytest.raises(errors.InvalidInput, match="more than the"):
    sampling.EpochSampler(matrix, batch_size=2, num_negatives=10**15)


@pytest.mark.parametrize("seed,epoch", [(0, 0), (7, 3), (2**31, 2**31 - 1), (2**32 - 1, 2**31),
                                        (5, 2**32 - 1)])
def test_epoch_keys_are_fold_in_then_split(seed, epoch):
  """The sampler's jitted key derivation gives the bits of the eager fold_in / split it
  replaced (so earlier runs' draws stand), for the largest seeds and epochs too."""
  from tripjax.sampling import epoch as epoch_lib  # pylint: disable=g-import-not-at-top
  order_key, key = epoch_lib._epoch_keys(np.uint32(seed), np.uint32(epoch))
  want_order, want = jax.random.split(jax.random.fold_in(jax.random.key(seed), epoch))
  np.testing.assert_array_equal(jax.random.key_data(order_key), jax.random.key_data(want_order))
  np.testing.assert_array_equal(jax.random.key_data(key), jax.random.key_data(want))


@pytest.mark.parametrize("exponent, excluded, weighted", [
    (0.0, None, False), (0.0, [], False), (0.3, None, True), (0.0, [5], True)])
def test_is_weighted_is_the_samplers_rule(exponent, excluded, weighted):
  # The run's memory check (tripjax.train) and the sampler's draw share this rule.
  assert sampling.is_weighted(exponent, bool(excluded)) is weighted
  sampler = sampling.EpochSampler(sp.csr_matrix(np.eye(4, 6, dtype=bool)), batch_size=2,
                                  negative_exponent=exponent, excluded_items=excluded)
  assert (sampler.negative_weights is not None) is weighted
