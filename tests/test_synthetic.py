"""Tests for the synthetic generator (tripjax.data.synthetic) and the dataset registry."""

import re

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from tripjax import data
from tripjax.data import synthetic


def _affinity(ratings, preset="tiny", seed=0, **overrides):
  users, items = data.planted_factors(preset, seed, **overrides)
  u = ratings.user_id.to_numpy() - 1
  i = ratings.item_id.to_numpy() - 1
  return np.einsum("nd,nd->n", users[u], items[i]) / np.sqrt(users.shape[1])


def test_frames_dtypes_and_shapes():
  ratings, items = data.make_synthetic("tiny")
  c = synthetic.PRESETS["tiny"]
  assert list(ratings.columns) == ["user_id", "item_id", "rating", "timestamp"]
  assert ratings.dtypes.tolist() == [np.int64, np.int64, np.float32, np.int64]
  assert list(items.columns) == ["item_id", "title", "genres"]
  assert items.item_id.dtype == np.int64
  np.testing.assert_array_equal(items.item_id, np.arange(1, c.num_items + 1))
  assert ratings.user_id.nunique() == c.num_users
  assert ratings.item_id.between(1, c.num_items).all()
  assert 0.95 * c.num_ratings <= len(ratings) <= c.num_ratings
  assert not ratings.duplicated(["user_id", "item_id"]).any()
  assert set(np.unique(ratings.rating)) == {1.0, 2.0, 3.0, 4.0, 5.0}
  start, end = (pd.Timestamp(f"{y}-01-01").value // 10**9 for y in (c.start_year, c.end_year))
  assert ratings.timestamp.between(start, end).all()
  for title, genres in zip(items.title, items.genres):
    assert re.fullmatch(r"Synthetic Film \d+ \(\d{4}\)", title)
    assert isinstance(genres, list) and genres and set(genres) <= set(synthetic.GENRE_NAMES)


def test_deterministic_by_seed():
  a = data.make_synthetic("tiny", seed=3)
  b = data.make_synthetic("tiny", seed=3)
  c = data.make_synthetic("tiny", seed=4)
  pd.testing.assert_frame_equal(a[0], b[0])
  pd.testing.assert_frame_equal(a[1], b[1])
  assert not a[0].equals(c[0])


def test_minimums_per_user():
  ratings, _ = data.make_synthetic("tiny", min_ratings=30, min_positives=22)
  assert ratings.groupby("user_id").size().min() >= 30
  assert (ratings.rating >= 4).groupby(ratings.user_id).sum().min() >= 22


def test_ml100k_preset_size_and_rating_distribution():
  ratings, items = data.make_synthetic("ml-100k")
  assert ratings.user_id.nunique() == 943 and len(items) == 1682
  assert 97_000 <= len(ratings) <= 100_000
  share = (ratings.rating >= 4).mean()
  assert 0.5 < share < 0.6  # MovieLens 100K: 55%
  assert ratings.groupby("user_id").size().min() >= 20


def test_popularity_is_skewed():
  ratings, items = data.make_synthetic("ml-100k")
  counts = np.sort(ratings.item_id.value_counts().to_numpy())[::-1]
  assert counts[: len(items) // 10].sum() > 0.3 * len(ratings)  # a heavy head
  assert counts.max() > 10 * np.median(counts)


def test_positives_follow_planted_affinity():
  ratings, _ = data.make_synthetic("ml-100k", seed=1)
  affinity = _affinity(ratings, "ml-100k", 1)
  # Among rated items, affinity separates likes from the rest.
  assert roc_auc_score(ratings.rating >= 4, affinity) > 0.75
  # And users rate (hence like) items they have affinity with more than random items.
  users, items = data.planted_factors("ml-100k", 1)
  rng = np.random.default_rng(0)
  random_affinity = np.einsum("nd,nd->n", users[rng.integers(0, 943, 20_000)],
                              items[rng.integers(0, 1682, 20_000)]) / 4
  assert affinity[ratings.rating >= 4].mean() > random_affinity.mean() + 0.8


def test_factor_scores_beat_popularity_on_held_out_positives():
  """The planted factors rank a user's held-out likes better than item popularity does."""
  ds, train, test = data.prepare("synthetic-ml-100k", test_per_user=10)
  users, items = data.planted_factors("ml-100k")
  factor = users[ds.user_ids - 1] @ items[ds.item_ids - 1].T
  popularity = np.asarray(train.sum(axis=0), dtype=np.float64).ravel()
  unseen = ~train.toarray()
  labels = test.toarray()
  factor_auc, pop_auc = [], []
  for u in range(0, ds.num_users, 4):
    factor_auc.append(roc_auc_score(labels[u, unseen[u]], factor[u, unseen[u]]))
    pop_auc.append(roc_auc_score(labels[u, unseen[u]], popularity[unseen[u]]))
  assert np.mean(factor_auc) > np.mean(pop_auc) + 0.03


def test_genres_follow_item_factors():
  _, items = data.make_synthetic("ml-100k")
  _, factors = data.planted_factors("ml-100k")
  unit = factors / np.linalg.norm(factors, axis=1, keepdims=True)
  half = len(items) // 2
  for genre in ("Drama", "Comedy", "Action"):
    member = np.array([genre in g for g in items.genres])
    direction = unit[:half][member[:half]].mean(0) - unit[:half][~member[:half]].mean(0)
    assert roc_auc_score(member[half:], unit[half:] @ direction) > 0.8, genre
  shares = pd.Series([g for gs in items.genres for g in gs]).value_counts() / len(items)
  target = pd.Series(synthetic.GENRE_FREQUENCIES)
  # Items in no genre join their closest one, so shares run a little above MovieLens'.
  np.testing.assert_allclose(shares[target.index], target, atol=0.05)


def test_overrides_and_errors():
  ratings, items = data.make_synthetic("tiny", num_users=30, num_items=50, num_ratings=1000,
                                       min_ratings=21, min_positives=5)
  assert ratings.user_id.nunique() == 30 and len(items) == 50
  with pytest.raises(ValueError, match="Unknown synthetic preset 'huge'.*tiny"):
    data.make_synthetic("huge")
  with pytest.raises(ValueError, match="Unknown make_synthetic override.*num_userz"):
    data.make_synthetic("tiny", num_userz=3)
  with pytest.raises(ValueError, match="min_positives"):
    data.make_synthetic("tiny", min_positives=30)
  with pytest.raises(ValueError, match="num_ratings"):
    data.make_synthetic("tiny", num_ratings=10)


def test_registry_names_and_dispatch():
  assert {"ml-100k", "ml-1m", "ml-20m", "synthetic-tiny", "synthetic-ml-100k",
          "synthetic-ml-1m", "synthetic-ml-20m"} <= set(data.DATASET_NAMES)
  ratings, items = data.load_dataset("synthetic-tiny", seed=7)
  expected = data.make_synthetic("tiny", seed=7)
  pd.testing.assert_frame_equal(ratings, expected[0])
  pd.testing.assert_frame_equal(items, expected[1])
  with pytest.raises(ValueError, match="Unknown dataset 'ml-2k'.*synthetic-tiny"):
    data.load_dataset("ml-2k")
  with pytest.raises(ValueError, match="Unknown dataset 'synthetic-huge'"):
    data.load_dataset("synthetic-huge")


def test_registry_loads_movielens(data_dir):
  ratings, items = data.load_dataset("ml-100k", data_dir=data_dir, download=False)
  assert len(ratings) == 100_000 and len(items) == 1682


def test_prepare_on_tiny():
  ds, train, test = data.prepare("synthetic-tiny", test_per_user=5, split_seed=1)
  assert ds.num_users == synthetic.PRESETS["tiny"].num_users  # min_positives=20 keeps all
  np.testing.assert_array_equal(np.diff(test.indptr), 5)
  assert (train + test != ds.matrix).nnz == 0
  _, _, again = data.prepare("synthetic-tiny", test_per_user=5, split_seed=1)
  assert (again != test).nnz == 0
  _, _, temporal = data.prepare("synthetic-tiny", test_per_user=5, temporal=True)
  assert (temporal != test).nnz > 0
