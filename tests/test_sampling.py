"""Tests of tripjax.sampling: coverage, exact negatives, uniformity, padding, hardest-of-n."""

import collections

from hypothesis import given, settings, strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.sparse as sp

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


@settings(max_examples=6, deadline=None)  # each example compiles (~1-2 s); exactness
# of the negatives is checked on many more matrices by the single-compile property test below.
@given(matrix=_matrices(), batch=st.integers(1, 9), chunk=st.integers(1, 3),
       negatives=st.integers(1, 3), epoch=st.integers(0, 5))
def test_epoch_covers_each_positive_once_and_never_samples_a_positive(matrix, batch, chunk,
                                                                      negatives, epoch):
  sampler = sampling.EpochSampler(matrix, batch, chunk, negatives, seed=7)
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


def test_negatives_are_uniform_over_missing_items():
  row = np.zeros(10, bool)
  row[[1, 4, 5, 9]] = True
  matrix = sp.csr_matrix(np.stack([row, ~row]))
  sampler = sampling.EpochSampler(matrix, batch_size=4, num_negatives=6000, seed=0)
  users, _, neg = _real(sampler.epoch(0))
  draws = neg[users == 0].ravel()
  counts = np.bincount(draws, minlength=10)
  assert counts[row].sum() == 0
  expected = draws.size / 6
  # Chi-square with 5 degrees of freedom; 20.5 is its 0.999 quantile.
  chi2 = np.sum((counts[~row] - expected) ** 2 / expected)
  assert chi2 < 20.5, counts


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
