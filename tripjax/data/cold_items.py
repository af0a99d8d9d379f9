"""Cold-start items: whole items held out of training, to be scored from their features alone.

`hold_out_items` draws the cold items and removes every interaction they have; the matrix keeps
its shape, so user and item indices (and the features' rows) stay aligned with the dataset, and a
cold item is simply a column with no training positive. `cold_test_matrix` holds the removed
interactions, the cold-item evaluation's positives.

Users keep their rows. Holding items out takes positives from users (possibly all of them), so
the per-user split that follows (`split.leave_k_out(warm, k)`, which needs k + 1 positives in
every row) may be refused for some user; `check_warm_users` says so in one line naming the flags
to change, before that split. Users are not dropped here: dropping rows would renumber them
and part the matrices from the dataset's `user_ids` and the user features. On real ML-100K (lab
pipeline, k = 10) fractions up to 0.2 leave every user enough positives for seeds 0-2; at 0.3 a
few users fall short.
"""

from __future__ import annotations

import math
import numbers

import numpy as np
import scipy.sparse as sp

from tripjax import errors
from tripjax.data import split

FRACTION_FLAG = "--cold_item_fraction"


def _csr(matrix) -> sp.csr_matrix:
  """`matrix` as canonical CSR (sorted indices, no duplicates or explicit zeros)."""
  if not sp.issparse(matrix) or matrix.ndim != 2:
    raise errors.InvalidInput(f"matrix must be a 2-D scipy.sparse matrix, got "
                              f"{type(matrix).__name__}")
  matrix = sp.csr_matrix(matrix)
  if not matrix.has_canonical_format or not np.all(matrix.data):
    matrix = matrix.copy()
    matrix.sum_duplicates()
    matrix.eliminate_zeros()
  return matrix


def _check_fraction(fraction) -> float:
  if (isinstance(fraction, bool) or not isinstance(fraction, numbers.Real)
      or not 0 <= fraction < 1):
    raise errors.InvalidInput(f"{FRACTION_FLAG}={fraction!r} must be a number in [0, 1)")
  return float(fraction)


def _columns(matrix: sp.csr_matrix, keep: np.ndarray) -> sp.csr_matrix:
  """The entries of `matrix` in the columns where `keep`: bool CSR of the same shape."""
  return split.split_by_mask(matrix, ~keep[matrix.indices])[0]


def _column_mask(num_items: int, items: np.ndarray) -> np.ndarray:
  mask = np.zeros(num_items, dtype=bool)
  mask[items] = True
  return mask


def hold_out_items(matrix: sp.csr_matrix, fraction: float,
                   seed: int = 0) -> tuple[sp.csr_matrix, np.ndarray]:
  """Holds out a random fraction of the items with all their interactions.

  The cold items are `round(fraction * C)` (half up) of the C items with at least one positive,
  drawn uniformly without replacement by `np.random.default_rng(seed)`; the result depends only
  on (matrix, fraction, seed).

  Args:
    matrix: bool CSR [U, I] of positives (any sparse matrix is converted; stored entries count).
    fraction: share of the items to hold out, in [0, 1); 0 holds out none.
    seed: seed of the numpy Generator.

  Returns:
    (warm, cold_items): warm is bool CSR [U, I] (int32 indices/indptr, sorted indices) with
    every entry of `matrix` but those in the cold items' columns (the same shape: no index
    moves; a user may be left with fewer positives, or none, see `check_warm_users`);
    cold_items is int32[n], sorted. With fraction 0, warm equals `matrix` and cold_items is
    empty.

  Raises:
    errors.InvalidInput: fraction outside [0, 1) or not a number, or one that holds out no
      item or every item with a positive, naming `--cold_item_fraction`; a matrix that is not
      2-D sparse.
  """
  fraction = _check_fraction(fraction)
  matrix = _csr(matrix)
  num_items = matrix.shape[1]
  if fraction == 0:
    return _columns(matrix, np.ones(num_items, dtype=bool)), np.zeros(0, dtype=np.int32)
  candidates = np.flatnonzero(np.bincount(matrix.indices, minlength=num_items))
  count = math.floor(fraction * candidates.size + 0.5)
  if not 0 < count < candidates.size:
    what = "no item" if count == 0 else "every item"
    raise errors.InvalidInput(
        f"{FRACTION_FLAG}={fraction:g} holds out {what} of the {candidates.size} items with a "
        f"positive; choose a fraction that leaves some items on each side")
  rng = np.random.default_rng(seed)
  cold = np.sort(rng.choice(candidates, size=count, replace=False)).astype(np.int32)
  return _columns(matrix, ~_column_mask(num_items, cold)), cold


def cold_test_matrix(matrix: sp.csr_matrix, cold_items: np.ndarray) -> sp.csr_matrix:
  """The interactions of the cold items: the positives of the cold-item evaluation.

  Args:
    matrix: bool CSR [U, I], the matrix `hold_out_items` was given.
    cold_items: int[n], item indices in [0, I) (`hold_out_items`' second result).

  Returns:
    bool CSR [U, I] (int32 indices/indptr, sorted indices) with the entries of `matrix` in the
    cold items' columns; with `warm`, `warm + cold_test == matrix` and the two are disjoint.

  Raises:
    errors.InvalidInput: a cold item index outside [0, I).
  """
  matrix = _csr(matrix)
  cold_items = np.asarray(cold_items, dtype=np.int64)
  num_items = matrix.shape[1]
  if cold_items.size and not (0 <= cold_items.min() and cold_items.max() < num_items):
    raise errors.InvalidInput(f"cold item indices must be in [0, {num_items}), got "
                              f"[{cold_items.min()}, {cold_items.max()}]")
  return _columns(matrix, _column_mask(num_items, cold_items))


def check_warm_users(warm: sp.csr_matrix, test_per_user: int) -> None:
  """Refuses a warm matrix in which some user has too few positives for the per-user split.

  Call it between `hold_out_items` and `split.leave_k_out(warm, test_per_user)`, which needs
  test_per_user + 1 positives in every row.

  Args:
    warm: bool CSR [U, I], `hold_out_items`' first result.
    test_per_user: k, the per-user test positives of the split that follows.

  Raises:
    errors.InvalidInput: some user has fewer than k + 1 warm positives; the one-line message
      counts them, names the first and the flags to change (`--cold_item_fraction`,
      `--test_per_user`, `--min_user_positives`).
  """
  counts = np.diff(_csr(warm).indptr)
  short = np.flatnonzero(counts < test_per_user + 1)
  if short.size:
    u = int(short[0])
    raise errors.InvalidInput(
        f"{FRACTION_FLAG}: holding out the cold items leaves {short.size} user(s) with fewer "
        f"than --test_per_user + 1 = {test_per_user + 1} positives (user index {u} keeps "
        f"{int(counts[u])}); lower {FRACTION_FLAG} or --test_per_user, or raise "
        f"--min_user_positives")
