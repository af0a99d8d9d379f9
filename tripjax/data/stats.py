"""The reference lab's descriptive statistics of a ratings table, before and after filtering."""

from __future__ import annotations

import numpy as np
import pandas as pd

from tripjax.data.feedback import ImplicitDataset

COLUMNS = ("nobs", "min", "max", "mean", "variance", "skewness", "kurtosis")
QUANTITIES = ("ratings", "views per user", "views per item", "mean rating per user",
              "mean rating per item", "feedback per user", "feedback per item")


def _summary(values: np.ndarray) -> tuple:
  """scipy.stats.describe conventions: variance ddof=1, biased skewness, Fisher kurtosis."""
  values = np.asarray(values, dtype=np.float64)
  if values.size == 0:
    return (0,) + (np.nan,) * 6
  # Imported here: scipy.stats costs every script about a second at startup.
  import scipy.stats  # pylint: disable=g-import-not-at-top
  d = scipy.stats.describe(values)
  return (d.nobs, d.minmax[0], d.minmax[1], d.mean, d.variance, d.skewness, d.kurtosis)


def _quantities(users: np.ndarray, items: np.ndarray, values: np.ndarray,
                positive_users: np.ndarray, positive_items: np.ndarray) -> list[np.ndarray]:
  """The seven arrays summarised for one stage.

  Args:
    users: int[N] dense user index (0..U-1) of each rating, every index present.
    items: int[N] dense item index (0..I-1) of each rating, every index present.
    values: float[N] ratings.
    positive_users: int[U] positives of each user.
    positive_items: int[I] positives of each item.
  """
  user_views = np.bincount(users)
  item_views = np.bincount(items)
  return [values, user_views, item_views,
          np.bincount(users, weights=values) / user_views,
          np.bincount(items, weights=values) / item_views,
          positive_users, positive_items]


def describe(ratings: pd.DataFrame, dataset: ImplicitDataset, threshold: float = 4) -> pd.DataFrame:
  """The lab's tables: each quantity's nobs, min, max, mean, variance, skewness, kurtosis.

  "before" describes `ratings` as given (every user and rated item); "after" describes the
  ratings of the users and items that `dataset` kept (from `dataset.ratings` when it was built
  with `keep_ratings=True`, else from `ratings` restricted to the kept ids). Views are ratings
  counted per user or item, feedback is positives (rating >= threshold) per user or item.

  Args:
    ratings: the frame `dataset` was built from (`user_id`, `item_id`, `rating`).
    dataset: the output of `implicit_feedback(ratings, ...)`.
    threshold: the positive threshold `dataset` was built with (for the "before" feedback).

  Returns:
    DataFrame indexed by (stage in {"before", "after"}, quantity in `QUANTITIES`) with columns
    `COLUMNS`; nobs is an integer column.
  """
  users = pd.factorize(ratings["user_id"].to_numpy())[0]
  items = pd.factorize(ratings["item_id"].to_numpy())[0]
  values = ratings["rating"].to_numpy(np.float64)
  positive = values >= threshold
  before = _quantities(users, items, values,
                       np.bincount(users, weights=positive).astype(np.int64),
                       np.bincount(items, weights=positive).astype(np.int64))

  if dataset.ratings is not None:
    kept = dataset.ratings.tocoo()
    a_users, a_items, a_values = kept.row, kept.col, np.asarray(kept.data, np.float64)
  else:
    a_users = pd.Index(dataset.user_ids).get_indexer(ratings["user_id"].to_numpy())
    a_items = pd.Index(dataset.item_ids).get_indexer(ratings["item_id"].to_numpy())
    mask = (a_users >= 0) & (a_items >= 0)
    a_users, a_items, a_values = a_users[mask], a_items[mask], values[mask]
  matrix = dataset.matrix
  after = _quantities(a_users, a_items, a_values, np.diff(matrix.indptr),
                      np.bincount(matrix.indices, minlength=matrix.shape[1]))

  rows = [_summary(v) for v in before + after]
  index = pd.MultiIndex.from_product([("before", "after"), QUANTITIES],
                                     names=("stage", "quantity"))
  table = pd.DataFrame(rows, index=index, columns=list(COLUMNS))
  return table.astype({"nobs": np.int64})


def steps_table(dataset: ImplicitDataset) -> pd.DataFrame:
  """The (users, items, entries) after each pipeline step, one row per step, in order."""
  return pd.DataFrame([(name, *counts) for name, counts in dataset.steps.items()],
                      columns=["step", "users", "items", "entries"]).set_index("step")
