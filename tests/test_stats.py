"""Tests for the lab's statistics tables (tripjax.data.stats)."""

import numpy as np
import pandas as pd
import pytest
import scipy.stats

from tripjax import data
from tripjax.data import stats


def _frame(rows):
  ratings = pd.DataFrame(rows, columns=["user_id", "item_id", "rating", "timestamp"])
  return ratings.astype({"user_id": np.int64, "item_id": np.int64, "rating": np.float32,
                         "timestamp": np.int64})


_ROWS = [(1, 10, 5, 0), (1, 20, 4, 0), (1, 30, 1, 0), (1, 40, 4, 0),
         (2, 10, 4, 0), (2, 30, 5, 0), (2, 20, 2, 0),
         (3, 10, 3, 0), (3, 20, 5, 0),
         (4, 40, 2, 0)]
_ITEMS = pd.DataFrame({"item_id": np.array([10, 20, 30, 40], dtype=np.int64),
                       "title": list("abcd"), "genres": [["Drama"]] * 4})


def _expected(values):
  d = scipy.stats.describe(np.asarray(values, dtype=np.float64))
  return [d.nobs, d.minmax[0], d.minmax[1], d.mean, d.variance, d.skewness, d.kurtosis]


@pytest.mark.parametrize("keep_ratings", [False, True])
def test_describe_matches_scipy(keep_ratings):
  ratings = _frame(_ROWS)
  ds = data.implicit_feedback(ratings, _ITEMS, threshold=4, min_user_positives=2,
                              keep_ratings=keep_ratings)
  # Kept: users 1, 2 (2 positives each); items 10, 20, 30, 40 all have a positive from them.
  assert list(ds.user_ids) == [1, 2] and list(ds.item_ids) == [10, 20, 30, 40]
  table = data.describe(ratings, ds, threshold=4)
  assert list(table.columns) == list(stats.COLUMNS)
  expected = {
      ("before", "ratings"): [5, 4, 1, 4, 4, 5, 2, 3, 5, 2],
      ("before", "views per user"): [4, 3, 2, 1],
      ("before", "views per item"): [3, 3, 2, 2],  # items 10, 20, 30, 40
      ("before", "mean rating per user"): [14 / 4, 11 / 3, 4, 2],
      ("before", "mean rating per item"): [4, 11 / 3, 3, 3],
      ("before", "feedback per user"): [3, 2, 1, 0],
      ("before", "feedback per item"): [2, 2, 1, 1],
      ("after", "ratings"): [5, 4, 1, 4, 4, 5, 2],
      ("after", "views per user"): [4, 3],
      ("after", "views per item"): [2, 2, 2, 1],
      ("after", "mean rating per user"): [14 / 4, 11 / 3],
      ("after", "mean rating per item"): [4.5, 3, 3, 4],
      ("after", "feedback per user"): [3, 2],
      ("after", "feedback per item"): [2, 1, 1, 1],
  }
  assert set(table.index) == set(expected)
  for key, values in expected.items():
    np.testing.assert_allclose(table.loc[key].to_numpy(dtype=np.float64), _expected(values),
                               rtol=1e-12, err_msg=str(key))
  assert table["nobs"].dtype == np.int64


def test_describe_on_synthetic_matches_direct_computation():
  ratings, items = data.make_synthetic("tiny", min_positives=10)
  ds = data.implicit_feedback(ratings, items, keep_ratings=True)
  assert ds.num_users < ratings.user_id.nunique()  # the filter dropped someone
  table = data.describe(ratings, ds)
  kept = ratings[ratings.user_id.isin(ds.user_ids) & ratings.item_id.isin(ds.item_ids)]
  np.testing.assert_allclose(table.loc[("after", "mean rating per item")],
                             _expected(kept.rating.astype(np.float64).groupby(kept.item_id).mean()),
                             rtol=1e-9)
  np.testing.assert_allclose(table.loc[("before", "feedback per user")],
                             _expected((ratings.rating >= 4).groupby(ratings.user_id).sum()),
                             rtol=1e-12)
  np.testing.assert_allclose(table.loc[("after", "feedback per item")],
                             _expected(np.asarray(ds.matrix.sum(axis=0)).ravel()), rtol=1e-12)


def test_steps_table():
  ds = data.implicit_feedback(_frame(_ROWS), _ITEMS, min_user_positives=2)
  table = data.steps_table(ds)
  assert list(table.index) == list(ds.steps)
  assert table.loc["positive_items"].tolist() == [2, 4, 5]
  assert table.loc["positives"].tolist() == [4, 4, 6]
