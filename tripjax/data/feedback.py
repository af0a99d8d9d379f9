"""The reference lab's implicit-feedback pipeline: ratings -> boolean user x item CSR matrix."""

from __future__ import annotations

import dataclasses
import types
from typing import Mapping

import numpy as np
import pandas as pd
import scipy.sparse as sp

from tripjax import errors


@dataclasses.dataclass(frozen=True)
class ImplicitDataset:
  """An immutable implicit-feedback dataset.

  Attributes:
    matrix: bool CSR [U, I] (int32 indices/indptr, sorted indices); True = positive.
    user_ids: int64[U], original user id of each row.
    item_ids: int64[I], original item id of each column.
    titles: object[I], title of each item.
    genres: tuple of I tuples of genre names.
    genre_names: sorted tuple of every genre name present.
    steps: ordered mapping step name -> (users, items, entries) after that step.
    timestamps: int64 CSR [U, I] aligned with `matrix` (same structure), or None.
    ratings: float32 CSR [U, I] of the kept users/items' ratings (all, not only positives),
      when asked for; otherwise None.
    cold_items: int32[C] sorted, the items held out whole by `registry.prepare`'s
      `cold_item_fraction` (none of their positives is in train or test; `matrix` keeps
      them), or None.
  """

  matrix: sp.csr_matrix
  user_ids: np.ndarray
  item_ids: np.ndarray
  titles: np.ndarray
  genres: tuple
  genre_names: tuple
  steps: Mapping[str, tuple[int, int, int]]
  timestamps: sp.csr_matrix | None = None
  ratings: sp.csr_matrix | None = None
  cold_items: np.ndarray | None = None

  @property
  def num_users(self) -> int:
    return self.matrix.shape[0]

  @property
  def num_items(self) -> int:
    return self.matrix.shape[1]

  @property
  def num_positives(self) -> int:
    return int(self.matrix.nnz)


STEP_NAMES = ("ratings", "deduplicated", "in_items_table", "rated_items", "positives",
              "min_user_positives", "positive_items")

_RATING_COLUMNS = {"user_id": "i", "item_id": "i", "rating": "if", "timestamp": "i"}
_ITEM_COLUMNS = ("item_id", "title", "genres")


def _check_frames(ratings: pd.DataFrame, items: pd.DataFrame) -> None:
  """Raises ValueError for a missing column or a column of the wrong type."""
  for frame, name, columns in ((ratings, "ratings", _RATING_COLUMNS),
                               (items, "items", dict.fromkeys(_ITEM_COLUMNS))):
    if not isinstance(frame, pd.DataFrame):
      raise errors.InvalidInput(f"implicit_feedback: `{name}` must be a pandas DataFrame, got "
                                f"{type(frame).__name__}")
    missing = [c for c in columns if c not in frame.columns]
    if missing:
      raise errors.InvalidInput(f"implicit_feedback: `{name}` lacks column(s) {missing}; it has "
                                f"{list(frame.columns)}")
  for column, kinds in _RATING_COLUMNS.items():
    dtype = ratings[column].dtype
    if not (isinstance(dtype, np.dtype) and dtype.kind in kinds.replace("i", "iu")):
      want = "integer" if kinds == "i" else "numeric"
      raise errors.InvalidInput(f"implicit_feedback: `ratings.{column}` must be {want}, got "
                                f"{dtype}")
  if ratings["rating"].isna().any():
    raise errors.InvalidInput("implicit_feedback: `ratings.rating` contains NaN")
  dtype = items["item_id"].dtype
  if not (isinstance(dtype, np.dtype) and dtype.kind in "iu"):
    raise errors.InvalidInput(f"implicit_feedback: `items.item_id` must be integer, got {dtype}")
  if items["item_id"].duplicated().any():
    dups = items["item_id"][items["item_id"].duplicated()].unique()[:5].tolist()
    raise errors.InvalidInput(f"implicit_feedback: `items.item_id` has duplicates, e.g. {dups}")


def _last_per_pair(codes: np.ndarray, timestamps: np.ndarray) -> np.ndarray:
  """Indices of one rating per distinct code, sorted by code: the latest by timestamp.

  Among equal timestamps the row that comes last in the input wins.

  Args:
    codes: int64[N], user index * num_items + item index.
    timestamps: int64[N].

  Returns:
    int64[M] row indices, M = number of distinct codes, ordered by code.
  """
  order = np.argsort(codes)
  sorted_codes = codes[order]
  last = np.ones(len(order), dtype=bool)
  last[:-1] = sorted_codes[1:] != sorted_codes[:-1]
  if last.all():
    return order
  # Only the pairs that occur more than once need the timestamp: sort those few by (code, time).
  first = np.ones(len(order), dtype=bool)
  first[1:] = last[:-1]
  dup = ~(first & last)
  rows = np.sort(order[dup])
  rows = rows[np.lexsort((timestamps[rows], codes[rows]))]
  winner = np.ones(len(rows), dtype=bool)
  winner[:-1] = codes[rows][1:] != codes[rows][:-1]
  order[dup] = -1
  order[np.flatnonzero(dup)[np.searchsorted(sorted_codes[dup], codes[rows[winner]])]] = (
      rows[winner])
  return order[order >= 0]


def _csr(rows: np.ndarray, cols: np.ndarray, data: np.ndarray, shape: tuple[int, int],
         indptr: np.ndarray | None = None) -> sp.csr_matrix:
  """A read-only canonical CSR matrix from entries already sorted by (row, col)."""
  if indptr is None:
    indptr = np.zeros(shape[0] + 1, dtype=np.int32)
    np.cumsum(np.bincount(rows, minlength=shape[0]), out=indptr[1:])
  matrix = sp.csr_matrix((data, cols.astype(np.int32, copy=False), indptr), shape=shape,
                         copy=False)
  matrix.has_sorted_indices = True
  matrix.has_canonical_format = True
  for array in (matrix.data, matrix.indices, matrix.indptr):
    array.flags.writeable = False
  return matrix


def _readonly(array: np.ndarray) -> np.ndarray:
  array.flags.writeable = False
  return array


def implicit_feedback(ratings: pd.DataFrame, items: pd.DataFrame, threshold: float = 4,
                      min_user_positives: int = 20, keep_ratings: bool = False) -> ImplicitDataset:
  """The reference lab's implicit-feedback matrix, with its filters in its order.

  Steps (each recorded in `steps` as (users, items, entries) after it):
    ratings: the input (distinct users, distinct items, rows).
    deduplicated: one rating per (user, item); a pair rated several times keeps its latest
      rating by timestamp (on equal timestamps, the later row).
    in_items_table: keep ratings whose item is in `items`; items = the items table's size.
    rated_items: keep the items with at least one rating.
    positives: positives are ratings >= threshold; entries = positives, users and items as before.
    min_user_positives: keep the users with >= min_user_positives positives.
    positive_items: drop the items left with no positive.

  Users and items are indexed in increasing order of their original ids.

  Args:
    ratings: frame with `user_id`, `item_id` (integers), `rating` (numeric), `timestamp` (integer).
    items: frame with `item_id` (unique integers), `title`, `genres` (list of str).
    threshold: a rating >= threshold is a positive.
    min_user_positives: users with fewer positives are dropped.
    keep_ratings: also return every rating (not only positives) of the kept users and items.

  Returns:
    An `ImplicitDataset` whose arrays are read-only.

  Raises:
    ValueError: missing/mistyped columns, duplicated item ids in `items`, NaN ratings, or
      filters that leave no user (the message lists the counts after each step).
  """
  _check_frames(ratings, items)
  if int(min_user_positives) != min_user_positives or min_user_positives < 1:
    raise errors.InvalidInput("implicit_feedback: min_user_positives must be an integer >= 1, "
                              f"got {min_user_positives!r}")
  if not np.isfinite(threshold):
    raise errors.InvalidInput("implicit_feedback: threshold must be a finite number, got "
                              f"{threshold!r}")
  steps = {}
  user_raw = ratings["user_id"].to_numpy(np.int64)
  item_raw = ratings["item_id"].to_numpy(np.int64)
  user_codes, user_uniques = pd.factorize(user_raw, sort=True)
  item_codes, item_uniques = pd.factorize(item_raw, sort=True)
  del user_raw, item_raw
  steps["ratings"] = (len(user_uniques), len(item_uniques), len(ratings))

  timestamps = ratings["timestamp"].to_numpy(np.int64)
  keep = _last_per_pair(user_codes.astype(np.int64) * len(item_uniques) + item_codes, timestamps)
  # From here on, entries stay sorted by (user, item): every later filter is a boolean mask.
  users, item_codes = user_codes[keep], item_codes[keep]
  del user_codes
  values = ratings["rating"].to_numpy(np.float32)[keep]
  timestamps = timestamps[keep]
  del keep
  steps["deduplicated"] = (len(user_uniques), len(item_uniques), len(users))

  table = items.sort_values("item_id", kind="stable")
  table_ids = table["item_id"].to_numpy(np.int64)
  # Column of each distinct rated item in the sorted items table (-1: not in the table).
  table_col = pd.Index(table_ids).get_indexer(item_uniques)
  cols = table_col[item_codes]
  del item_codes
  mask = cols >= 0
  users, cols, values, timestamps = users[mask], cols[mask], values[mask], timestamps[mask]
  steps["in_items_table"] = (_count_distinct(users, len(user_uniques)), len(table_ids), len(users))

  rated = np.bincount(cols, minlength=len(table_ids)) > 0
  steps["rated_items"] = (steps["in_items_table"][0], int(rated.sum()), len(users))

  positive = values >= threshold
  steps["positives"] = (steps["rated_items"][0], steps["rated_items"][1], int(positive.sum()))

  per_user = np.bincount(users, weights=positive, minlength=len(user_uniques))
  kept_user = per_user >= min_user_positives
  mask = kept_user[users]
  users, cols, values, timestamps, positive = (
      users[mask], cols[mask], values[mask], timestamps[mask], positive[mask])
  num_users = int(kept_user.sum())
  steps["min_user_positives"] = (num_users, steps["rated_items"][1], int(positive.sum()))

  kept_item = np.bincount(cols[positive], minlength=len(table_ids)) > 0
  num_items = int(kept_item.sum())
  steps["positive_items"] = (num_users, num_items, int(positive.sum()))
  if num_users == 0 or num_items == 0:
    report = ", ".join(f"{name}: {u} users x {i} items, {n} entries"
                       for name, (u, i, n) in steps.items())
    raise errors.InvalidInput(f"implicit_feedback: no user has >= {min_user_positives} ratings >= "
                              f"{threshold}; counts after each step: {report}")

  new_user = np.cumsum(kept_user, dtype=np.int64) - 1
  new_item = np.cumsum(kept_item, dtype=np.int64) - 1
  shape = (num_users, num_items)
  mask = kept_item[cols]
  users, cols, values, timestamps, positive = (
      new_user[users[mask]], new_item[cols[mask]], values[mask], timestamps[mask],
      positive[mask])
  rows, pos_cols = users[positive], cols[positive]
  matrix = _csr(rows, pos_cols, np.ones(len(rows), dtype=bool), shape)
  timestamp_matrix = _csr(rows, matrix.indices, timestamps[positive], shape, matrix.indptr)
  ratings_matrix = _csr(users, cols, values, shape) if keep_ratings else None

  kept_table = table.iloc[np.flatnonzero(kept_item)]
  genres = tuple(tuple(g) for g in kept_table["genres"])
  return ImplicitDataset(
      matrix=matrix,
      user_ids=_readonly(np.asarray(user_uniques, dtype=np.int64)[kept_user]),
      item_ids=_readonly(table_ids[kept_item]),
      titles=_readonly(kept_table["title"].to_numpy(dtype=object)),
      genres=genres,
      genre_names=tuple(sorted({g for row in genres for g in row})),
      steps=types.MappingProxyType(steps),
      timestamps=timestamp_matrix,
      ratings=ratings_matrix,
  )


def _count_distinct(codes: np.ndarray, size: int) -> int:
  return int(np.count_nonzero(np.bincount(codes, minlength=size)))
