"""Tests for per-user hold-out splits (tripjax.data.split)."""

import numpy as np
import pytest
import scipy.sparse as sp

from tripjax import data


def _random_matrix(seed, users=60, items=40, density=0.4):
  rng = np.random.default_rng(seed)
  dense = rng.random((users, items)) < density
  dense[:, :12] = True  # every user has >= 12 positives
  return sp.csr_matrix(dense)


def _check_split(matrix, train, test, k):
  for part in (train, test):
    assert part.format == "csr" and part.dtype == bool and part.shape == matrix.shape
    assert part.indices.dtype == np.int32 and part.indptr.dtype == np.int32
    for u in range(part.shape[0]):
      row = part.indices[part.indptr[u]:part.indptr[u + 1]]
      assert np.all(np.diff(row) > 0)
  assert train.multiply(test).nnz == 0
  np.testing.assert_array_equal((train.astype(np.int8) + test.astype(np.int8)).toarray(),
                                matrix.toarray().astype(np.int8))
  np.testing.assert_array_equal(np.diff(test.indptr), np.full(matrix.shape[0], k))


@pytest.mark.parametrize("k", [1, 3, 10])
def test_leave_k_out_invariants(k):
  matrix = _random_matrix(k)
  train, test = data.leave_k_out(matrix, k=k, seed=5)
  _check_split(matrix, train, test, k)


def test_leave_k_out_on_dataset_with_read_only_arrays():
  ratings, items = data.make_synthetic("tiny")
  ds = data.implicit_feedback(ratings, items)
  train, test = data.leave_k_out(ds.matrix, k=10, seed=0)
  _check_split(ds.matrix, train, test, 10)


def test_leave_k_out_deterministic_by_seed():
  matrix = _random_matrix(0)
  a = data.leave_k_out(matrix, k=5, seed=3)
  b = data.leave_k_out(matrix, k=5, seed=3)
  c = data.leave_k_out(matrix, k=5, seed=4)
  assert (a[1] != b[1]).nnz == 0 and (a[0] != b[0]).nnz == 0
  assert (a[1] != c[1]).nnz > 0


def test_leave_k_out_is_uniform_within_a_row():
  # 4000 identical rows of 5 positives, k=2: each item should be held out 40% of the time.
  matrix = sp.csr_matrix(np.ones((4000, 5), dtype=bool))
  _, test = data.leave_k_out(matrix, k=2, seed=0)
  freq = np.asarray(test.sum(axis=0)).ravel() / 4000
  np.testing.assert_allclose(freq, 0.4, atol=0.03)
  # Pairs are uniform too (10 pairs, 10% each), so the choice is not e.g. two adjacent items.
  pair_counts = np.unique(test.indices.reshape(-1, 2), axis=0, return_counts=True)[1]
  assert len(pair_counts) == 10
  np.testing.assert_allclose(pair_counts / 4000, 0.1, atol=0.025)


def test_leave_last_k_out_takes_latest_and_breaks_ties_by_item():
  matrix = sp.csr_matrix(np.array([[1, 1, 1, 1, 1, 0], [1, 0, 1, 1, 1, 1]], dtype=bool))
  times = sp.csr_matrix((np.array([50, 10, 40, 30, 20, 7, 9, 9, 9, 1]), matrix.indices,
                         matrix.indptr), shape=matrix.shape)
  train, test = data.leave_last_k_out(matrix, times, k=2)
  _check_split(matrix, train, test, 2)
  # Row 0: latest are item 0 (50) and item 2 (40). Row 1: items 2, 3, 4 tie at 9; the larger
  # item indices (3, 4) count as later.
  np.testing.assert_array_equal(test.toarray(), [[1, 0, 1, 0, 0, 0], [0, 0, 0, 1, 1, 0]])


def test_leave_last_k_out_matches_loop_on_dataset():
  ratings, items = data.make_synthetic("tiny", seed=2)
  ds = data.implicit_feedback(ratings, items)
  train, test = data.leave_last_k_out(ds.matrix, ds.timestamps, k=10)
  _check_split(ds.matrix, train, test, 10)
  for u in range(ds.num_users):
    lo, hi = ds.matrix.indptr[u], ds.matrix.indptr[u + 1]
    cols, times = ds.matrix.indices[lo:hi], ds.timestamps.data[lo:hi]
    latest = sorted(zip(times, cols))[-10:]
    assert set(test.indices[test.indptr[u]:test.indptr[u + 1]]) == {c for _, c in latest}


def test_too_few_positives_names_user_and_count():
  dense = np.ones((4, 8), dtype=bool)
  dense[2, 3:] = False  # user 2 has 3 positives
  for split in (lambda m: data.leave_k_out(m, k=3),
                lambda m: data.leave_last_k_out(m, m.astype(np.int64), k=3)):
    with pytest.raises(ValueError, match="user index 2 has 3 positives"):
      split(sp.csr_matrix(dense))


@pytest.mark.parametrize("k", [0, -1, 2.5, True])
def test_bad_k(k):
  with pytest.raises(ValueError, match="k must be"):
    data.leave_k_out(_random_matrix(0), k=k)


def test_bad_matrix_and_timestamps():
  with pytest.raises(ValueError, match="scipy.sparse"):
    data.leave_k_out(np.ones((3, 3), dtype=bool), k=1)
  matrix = _random_matrix(0)
  other = _random_matrix(1).astype(np.int64)
  with pytest.raises(ValueError, match="same structure"):
    data.leave_last_k_out(matrix, other, k=1)
