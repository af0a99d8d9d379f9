"""Per-user hold-out splits of a boolean user x item matrix (vectorised, no loop over users)."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from tripjax import errors


def _check_matrix(matrix, name: str = "matrix", drop_zeros: bool = True) -> sp.csr_matrix:
  """A canonical CSR view of `matrix` (sorted indices, no duplicates); raises ValueError."""
  if not sp.issparse(matrix) or matrix.ndim != 2:
    raise errors.InvalidInput(f"{name} must be a 2-D scipy.sparse matrix, got "
                              f"{type(matrix).__name__}")
  matrix = sp.csr_matrix(matrix)
  if not matrix.has_canonical_format or (drop_zeros and not np.all(matrix.data)):
    matrix = matrix.copy()
    matrix.sum_duplicates()
    if drop_zeros:
      matrix.eliminate_zeros()
  return matrix


def _check_k(k) -> int:
  if isinstance(k, bool) or int(k) != k or k < 1:
    raise errors.InvalidInput(f"k must be an integer >= 1, got {k!r}")
  return int(k)


def _check_counts(counts: np.ndarray, k: int) -> None:
  short = np.flatnonzero(counts < k + 1)
  if short.size:
    u = int(short[0])
    raise errors.InvalidInput(f"user index {u} has {int(counts[u])} positives, fewer than k + 1 = "
                              f"{k + 1} needed to hold out k = {k}; {short.size} user(s) are "
                              f"short (first indices: {short[:10].tolist()})")


def split_by_mask(matrix: sp.csr_matrix, test: np.ndarray) -> tuple[sp.csr_matrix,
                                                                     sp.csr_matrix]:
  """Splits the stored entries of `matrix` into (entries where ~test, entries where test)."""
  rows = np.repeat(np.arange(matrix.shape[0]), np.diff(matrix.indptr))
  out = []
  for mask in (~test, test):
    indptr = np.zeros(matrix.shape[0] + 1, dtype=np.int32)
    np.cumsum(np.bincount(rows[mask], minlength=matrix.shape[0]), out=indptr[1:])
    indices = matrix.indices[mask].astype(np.int32)
    part = sp.csr_matrix((np.ones(indices.size, dtype=bool), indices, indptr),
                         shape=matrix.shape, copy=False)
    part.has_sorted_indices = True
    out.append(part)
  return out[0], out[1]


def leave_k_out(matrix: sp.csr_matrix, k: int = 10,
                seed: int = 0) -> tuple[sp.csr_matrix, sp.csr_matrix]:
  """Moves k uniformly chosen positives of every user to a test matrix.

  Each stored entry draws one random key from `np.random.default_rng(seed)`; a user's k entries
  with the smallest keys go to test. The result depends only on (matrix, k, seed).

  Args:
    matrix: bool CSR [U, I] of positives (any sparse matrix is converted; stored entries count).
    k: test positives per user.
    seed: seed of the numpy Generator.

  Returns:
    (train, test): disjoint bool CSR [U, I] (int32 indices/indptr, sorted indices) with
    train + test == matrix and exactly k entries in every row of test.

  Raises:
    ValueError: a user has fewer than k + 1 positives (names the first such user index and its
      count), or k is not a positive integer.
  """
  matrix = _check_matrix(matrix)
  k = _check_k(k)
  counts = np.diff(matrix.indptr)
  _check_counts(counts, k)
  rng = np.random.default_rng(seed)
  keys = rng.integers(0, 2**32, size=matrix.nnz, dtype=np.uint64).astype(np.int64)
  rows = np.repeat(np.arange(matrix.shape[0], dtype=np.int64), counts)
  # Sorting by (row, key) keeps each row's block where it was; position - row start = rank.
  order = np.argsort((rows << 32) | keys)
  rank = np.arange(matrix.nnz) - matrix.indptr[rows]
  test = np.zeros(matrix.nnz, dtype=bool)
  test[order[rank < k]] = True
  return split_by_mask(matrix, test)


def leave_last_k_out(matrix: sp.csr_matrix, timestamps: sp.csr_matrix,
                     k: int = 10) -> tuple[sp.csr_matrix, sp.csr_matrix]:
  """Moves every user's last k positives by timestamp to a test matrix.

  Ties in time are broken by item index: among equal timestamps the larger item index counts
  as later.

  Args:
    matrix: bool CSR [U, I] of positives.
    timestamps: int CSR [U, I] with exactly the structure of `matrix` (e.g.
      `ImplicitDataset.timestamps`).
    k: test positives per user.

  Returns:
    (train, test) as in `leave_k_out`.

  Raises:
    ValueError: shapes or structures differ, k is invalid, or a user has fewer than k + 1
      positives.
  """
  matrix = _check_matrix(matrix)
  timestamps = _check_matrix(timestamps, "timestamps", drop_zeros=False)
  k = _check_k(k)
  if (timestamps.shape != matrix.shape or not np.array_equal(timestamps.indptr, matrix.indptr)
      or not np.array_equal(timestamps.indices, matrix.indices)):
    raise errors.InvalidInput(f"timestamps (shape {timestamps.shape}, {timestamps.nnz} entries) "
                              f"must have the same structure as matrix (shape {matrix.shape}, "
                              f"{matrix.nnz} entries)")
  counts = np.diff(matrix.indptr)
  _check_counts(counts, k)
  rows = np.repeat(np.arange(matrix.shape[0]), counts)
  # Entries are sorted by item within a row, so a stable sort by (row, time) breaks time ties by
  # item index.
  order = np.lexsort((np.asarray(timestamps.data), rows))
  rank_from_end = matrix.indptr[rows + 1] - 1 - np.arange(matrix.nnz)
  test = np.zeros(matrix.nnz, dtype=bool)
  test[order[rank_from_end < k]] = True
  return split_by_mask(matrix, test)
