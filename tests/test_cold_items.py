"""Tests for tripjax.data.cold_items: whole items held out, their test matrix, bad fractions."""

import numpy as np
import pytest
import scipy.sparse as sp

from tripjax import errors
from tripjax.data import cold_items
from tripjax.data import split


def _random_matrix(seed=0, shape=(40, 30), density=0.3, empty_items=(3, 17)):
  rng = np.random.default_rng(seed)
  dense = rng.random(shape) < density
  dense[:, list(empty_items)] = False
  return sp.csr_matrix(dense)


def _check_format(matrix, shape):
  assert matrix.shape == shape
  assert matrix.dtype == bool
  assert matrix.indices.dtype == np.int32 and matrix.indptr.dtype == np.int32
  assert matrix.has_sorted_indices
  for row in range(shape[0]):
    cols = matrix.indices[matrix.indptr[row]:matrix.indptr[row + 1]]
    assert np.all(np.diff(cols) > 0)


@pytest.mark.parametrize("fraction", [0.1, 0.25, 0.5, 0.9])
@pytest.mark.parametrize("seed", [0, 1])
def test_cold_items_are_whole_items(fraction, seed):
  matrix = _random_matrix(seed)
  warm, cold = cold_items.hold_out_items(matrix, fraction, seed=seed)
  cold_test = cold_items.cold_test_matrix(matrix, cold)
  _check_format(warm, matrix.shape)
  _check_format(cold_test, matrix.shape)
  assert cold.dtype == np.int32 and np.all(np.diff(cold) > 0)
  candidates = np.flatnonzero(matrix.getnnz(axis=0))
  assert len(cold) == int(np.floor(fraction * len(candidates) + 0.5))
  assert np.isin(cold, candidates).all()
  # No cold item keeps an interaction in the warm matrix; every warm item keeps all of them.
  assert warm[:, cold].nnz == 0
  warm_items = np.setdiff1d(np.arange(matrix.shape[1]), cold)
  assert (warm[:, warm_items] != matrix[:, warm_items]).nnz == 0
  # The cold test matrix holds exactly the removed interactions.
  np.testing.assert_array_equal(cold_test[:, cold].toarray(), matrix[:, cold].toarray())
  assert cold_test[:, warm_items].nnz == 0
  assert warm.multiply(cold_test).nnz == 0
  assert ((warm + cold_test) != matrix).nnz == 0
  assert warm.nnz + cold_test.nnz == matrix.nnz


def test_same_seed_same_items_other_seed_other_items():
  matrix = _random_matrix()
  first = cold_items.hold_out_items(matrix, 0.3, seed=5)[1]
  np.testing.assert_array_equal(first, cold_items.hold_out_items(matrix, 0.3, seed=5)[1])
  assert not np.array_equal(first, cold_items.hold_out_items(matrix, 0.3, seed=6)[1])


def test_draw_is_uniform_over_items_with_a_positive():
  matrix = _random_matrix(shape=(5, 10), density=0.9, empty_items=(4,))
  hits = np.zeros(10)
  for seed in range(2000):
    hits[cold_items.hold_out_items(matrix, 0.25, seed=seed)[1]] += 1  # 2 of the 9 items
  assert hits[4] == 0
  expected = 2000 * 2 / 9
  assert np.all(np.abs(np.delete(hits, 4) - expected) < 5 * np.sqrt(expected))


@pytest.mark.parametrize("fraction", [0, 0.0, np.float32(0)])
def test_fraction_zero_is_the_identity(fraction):
  matrix = _random_matrix()
  warm, cold = cold_items.hold_out_items(matrix, fraction, seed=3)
  _check_format(warm, matrix.shape)
  assert (warm != matrix).nnz == 0
  assert cold.shape == (0,) and cold.dtype == np.int32
  assert cold_items.cold_test_matrix(matrix, cold).nnz == 0


@pytest.mark.parametrize("fraction", [1, 1.0, 1.5, -0.1, float("nan"), float("inf"), True,
                                      "0.2", None])
def test_fraction_out_of_range_refused(fraction):
  with pytest.raises(errors.InvalidInput) as info:
    cold_items.hold_out_items(_random_matrix(), fraction)
  assert str(info.value) == f"--cold_item_fraction={fraction!r} must be a number in [0, 1)"


@pytest.mark.parametrize("fraction, what", [(0.01, "no item"), (0.99, "every item")])
def test_fraction_that_holds_out_nothing_or_everything(fraction, what):
  matrix = _random_matrix(shape=(10, 12), density=0.8, empty_items=(0, 1))  # 10 candidates
  with pytest.raises(errors.InvalidInput,
                     match=rf"^--cold_item_fraction={fraction:g} holds out {what} of the 10 "):
    cold_items.hold_out_items(matrix, fraction)


def test_non_canonical_input_is_accepted():
  coo = sp.coo_matrix((np.ones(4, bool), ([0, 0, 1, 1], [2, 2, 0, 1])), shape=(2, 3))
  warm, cold = cold_items.hold_out_items(coo, 0.4, seed=0)  # 1 of 3 items
  assert warm.nnz + cold_items.cold_test_matrix(coo, cold).nnz == 3
  with pytest.raises(errors.InvalidInput, match="2-D scipy.sparse"):
    cold_items.hold_out_items(np.ones((2, 2), bool), 0.5)


def test_cold_test_matrix_refuses_out_of_range_items():
  with pytest.raises(errors.InvalidInput, match=r"must be in \[0, 30\), got \[2, 30\]"):
    cold_items.cold_test_matrix(_random_matrix(), np.array([2, 30]))


def test_check_warm_users_before_leave_k_out():
  # User 0 likes items 0-4 only; once they are all cold, the split would refuse the user.
  dense = np.zeros((3, 20), bool)
  dense[0, :5] = True
  dense[1:, :] = True
  matrix = sp.csr_matrix(dense)
  cold = np.arange(5, dtype=np.int32)
  warm = sp.csr_matrix(dense * ~np.isin(np.arange(20), cold))
  assert (warm + cold_items.cold_test_matrix(matrix, cold) != matrix).nnz == 0
  with pytest.raises(errors.InvalidInput) as info:
    cold_items.check_warm_users(warm, test_per_user=3)
  assert str(info.value) == (
      "--cold_item_fraction: holding out the cold items leaves 1 user(s) with fewer than "
      "--test_per_user + 1 = 4 positives (user index 0 keeps 0); lower --cold_item_fraction or "
      "--test_per_user, or raise --min_user_positives")
  with pytest.raises(errors.InvalidInput):
    split.leave_k_out(warm, k=3)
  cold_items.check_warm_users(warm[1:], test_per_user=3)
  split.leave_k_out(warm[1:], k=3)


def test_real_ml100k_lab_split(data_dir):
  from tripjax.data import registry
  dataset, _, _ = registry.prepare("ml-100k", data_dir=data_dir, download=False)
  matrix = dataset.matrix
  warm, cold = cold_items.hold_out_items(matrix, 0.2, seed=0)
  assert len(cold) == round(0.2 * dataset.num_items)
  assert warm[:, cold].nnz == 0
  assert ((warm + cold_items.cold_test_matrix(matrix, cold)) != matrix).nnz == 0
  cold_items.check_warm_users(warm, test_per_user=10)
  train, test = split.leave_k_out(warm, k=10, seed=0)
  assert train[:, cold].nnz == 0 and test[:, cold].nnz == 0
