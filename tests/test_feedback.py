"""Tests for the lab's implicit-feedback pipeline (tripjax.data.feedback)."""

import numpy as np
import pandas as pd
import pytest

from tripjax import data
from tripjax.data import feedback


def _frame(rows):
  ratings = pd.DataFrame(rows, columns=["user_id", "item_id", "rating", "timestamp"])
  return ratings.astype({"user_id": np.int64, "item_id": np.int64, "rating": np.float32,
                         "timestamp": np.int64})


def _items(ids):
  return pd.DataFrame({"item_id": np.asarray(ids, dtype=np.int64),
                       "title": [f"Film {i}" for i in ids],
                       "genres": [["Drama"] if i % 20 == 0 else ["Comedy", "War"] for i in ids]})


def _reference(ratings, items, threshold, min_user_positives):
  """A plain pandas version of the pipeline: dense bool frame (users x items) and step counts."""
  steps = {"ratings": (ratings.user_id.nunique(), ratings.item_id.nunique(), len(ratings))}
  r = ratings.reset_index(drop=True)
  r = r.loc[r.sort_values("timestamp", kind="stable").index]
  r = r.drop_duplicates(["user_id", "item_id"], keep="last")
  steps["deduplicated"] = (r.user_id.nunique(), r.item_id.nunique(), len(r))
  r = r[r.item_id.isin(items.item_id)]
  steps["in_items_table"] = (r.user_id.nunique(), items.item_id.nunique(), len(r))
  steps["rated_items"] = (r.user_id.nunique(), r.item_id.nunique(), len(r))
  pos = r[r.rating >= threshold]
  steps["positives"] = (r.user_id.nunique(), r.item_id.nunique(), len(pos))
  counts = pos.groupby("user_id").size()
  pos = pos[pos.user_id.isin(counts.index[counts >= min_user_positives])]
  steps["min_user_positives"] = (pos.user_id.nunique(), r.item_id.nunique(), len(pos))
  steps["positive_items"] = (pos.user_id.nunique(), pos.item_id.nunique(), len(pos))
  dense = pd.crosstab(pos.user_id, pos.item_id) > 0
  return dense, steps


# Filter order matters here: user 3's positives are item 99 (not in the table) and item 50, so it
# passes min_user_positives=2 only if the table filter came last; item 50 is then left with no
# positive; item 60 is rated but never positively; item 40 is never rated; user 1 rated item 20
# twice, and the latest rating (4, listed first) must win over the older 2.
_ORDER_ROWS = [
    (1, 10, 5, 100), (1, 20, 4, 500), (1, 20, 2, 100), (1, 99, 5, 100), (1, 60, 2, 100),
    (2, 10, 4, 200), (2, 30, 5, 300), (2, 99, 4, 100),
    (3, 99, 5, 100), (3, 50, 5, 100), (3, 30, 1, 100),
]
_ORDER_ITEMS = [60, 10, 20, 30, 40, 50]


def test_filter_order_and_steps():
  ratings, items = _frame(_ORDER_ROWS), _items(_ORDER_ITEMS)
  ds = data.implicit_feedback(ratings, items, threshold=4, min_user_positives=2,
                              keep_ratings=True)
  assert tuple(ds.steps) == feedback.STEP_NAMES
  assert dict(ds.steps) == {
      "ratings": (3, 6, 11), "deduplicated": (3, 6, 10), "in_items_table": (3, 6, 7),
      "rated_items": (3, 5, 7), "positives": (3, 5, 5), "min_user_positives": (2, 5, 4),
      "positive_items": (2, 3, 4)}
  assert dict(ds.steps) == _reference(ratings, items, 4, 2)[1]
  np.testing.assert_array_equal(ds.user_ids, [1, 2])
  np.testing.assert_array_equal(ds.item_ids, [10, 20, 30])
  np.testing.assert_array_equal(ds.matrix.toarray(), [[1, 1, 0], [1, 0, 1]])
  assert list(ds.titles) == ["Film 10", "Film 20", "Film 30"]
  assert ds.genres == (("Comedy", "War"), ("Drama",), ("Comedy", "War"))
  assert ds.genre_names == ("Comedy", "Drama", "War")
  np.testing.assert_array_equal(ds.timestamps.toarray(), [[100, 500, 0], [200, 0, 300]])
  np.testing.assert_array_equal(ds.ratings.toarray(), [[5, 4, 0], [4, 0, 5]])
  assert (ds.num_users, ds.num_items, ds.num_positives) == (2, 3, 4)


def test_matrix_format_and_read_only():
  ratings, items = data.make_synthetic("tiny", seed=1)
  ds = data.implicit_feedback(ratings, items, keep_ratings=True)
  for m in (ds.matrix, ds.timestamps, ds.ratings):
    assert m.format == "csr" and m.indices.dtype == np.int32 and m.indptr.dtype == np.int32
    assert m.has_sorted_indices
    with pytest.raises(ValueError, match="read-only"):
      m.data[0] = m.data[0]
  assert ds.matrix.dtype == bool and ds.timestamps.dtype == np.int64
  assert ds.ratings.dtype == np.float32
  np.testing.assert_array_equal(ds.timestamps.indptr, ds.matrix.indptr)
  np.testing.assert_array_equal(ds.timestamps.indices, ds.matrix.indices)
  for array in (ds.user_ids, ds.item_ids, ds.titles):
    assert not array.flags.writeable
  # The ratings matrix holds every kept rating; its positives are exactly the matrix.
  assert ((ds.ratings >= 4) != ds.matrix).nnz == 0
  assert ds.ratings.nnz > ds.matrix.nnz
  with pytest.raises(AttributeError):
    ds.matrix = None


@pytest.mark.parametrize("seed", range(5))
def test_matches_pandas_reference_on_random_frames(seed):
  rng = np.random.default_rng(seed)
  n = 400
  ratings = _frame({"user_id": rng.integers(1, 30, n) * 7, "item_id": rng.integers(1, 60, n),
                    "rating": rng.integers(1, 6, n), "timestamp": rng.integers(0, 5, n)})
  items = _items(np.unique(rng.integers(1, 70, 50)))
  ds = data.implicit_feedback(ratings, items, threshold=3, min_user_positives=3)
  dense, steps = _reference(ratings, items, 3, 3)
  assert dict(ds.steps) == steps
  np.testing.assert_array_equal(ds.user_ids, dense.index)
  np.testing.assert_array_equal(ds.item_ids, dense.columns)
  np.testing.assert_array_equal(ds.matrix.toarray(), dense.to_numpy())


def test_duplicates_keep_latest_then_last_row():
  ratings = _frame([(1, 10, 5, 9), (1, 10, 1, 3), (1, 20, 1, 4), (1, 20, 5, 4),
                    (1, 30, 5, 4), (1, 30, 1, 4)])
  ds = data.implicit_feedback(ratings, _items([10, 20, 30]), min_user_positives=1)
  # Item 30's later row (rating 1) wins its timestamp tie, so item 30 has no positive left.
  np.testing.assert_array_equal(ds.item_ids, [10, 20])
  np.testing.assert_array_equal(ds.matrix.toarray(), [[True, True]])
  assert ds.steps["deduplicated"] == (1, 3, 3)


def test_no_user_left_reports_counts():
  ratings, items = _frame(_ORDER_ROWS), _items(_ORDER_ITEMS)
  with pytest.raises(ValueError, match=r"positives: 3 users x 5 items, 5 entries.*"
                                       r"min_user_positives: 0 users"):
    data.implicit_feedback(ratings, items, min_user_positives=3)


@pytest.mark.parametrize("mutate, message", [
    (lambda r, i: (r.drop(columns="timestamp"), i), "lacks column.*timestamp"),
    (lambda r, i: (r.astype({"user_id": str}), i), "ratings.user_id. must be integer"),
    (lambda r, i: (r.assign(rating=r.rating.astype(str)), i), "ratings.rating. must be numeric"),
    (lambda r, i: (r.assign(rating=np.where(r.index == 0, np.nan, r.rating)), i), "NaN"),
    (lambda r, i: (r, i.drop(columns="genres")), "items.*lacks column.*genres"),
    (lambda r, i: (r, pd.concat([i, i])), "duplicates"),
    (lambda r, i: (r.to_numpy(), i), "must be a pandas DataFrame"),
])
def test_bad_input(mutate, message):
  ratings, items = mutate(_frame(_ORDER_ROWS), _items(_ORDER_ITEMS))
  with pytest.raises(ValueError, match=message):
    data.implicit_feedback(ratings, items, min_user_positives=1)


@pytest.mark.parametrize("kwargs", [{"min_user_positives": 0}, {"min_user_positives": 1.5},
                                    {"threshold": float("nan")}])
def test_bad_arguments(kwargs):
  with pytest.raises(ValueError, match=next(iter(kwargs))):
    data.implicit_feedback(_frame(_ORDER_ROWS), _items(_ORDER_ITEMS), **kwargs)


def test_real_movielens_100k(data_dir):
  ratings, items = data.load_movielens("ml-100k", data_dir=data_dir, download=False)
  assert len(ratings) == 100_000
  assert int((ratings.rating >= 4).sum()) == 55_375
  ds = data.implicit_feedback(ratings, items, threshold=4, min_user_positives=20)
  dense, steps = _reference(ratings, items, 4, 20)
  assert dict(ds.steps) == steps
  assert ds.steps["positives"] == (943, 1682, 55_375)
  assert (ds.num_users, ds.num_items, ds.num_positives) == (703, 1439, 52_244)
  np.testing.assert_array_equal(ds.matrix.toarray(), dense.to_numpy())
