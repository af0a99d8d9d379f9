"""Tests for tripjax.data.features: mean-weight rows, padded ids, names, ages, bad input."""

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

from tripjax import errors
from tripjax.data import feedback
from tripjax.data import features
from tripjax.data import movielens
from tripjax.data import movielens_users


def _dataset(genres):
  """An ImplicitDataset with one user who likes every item; item i lists genres[i]."""
  num_items = len(genres)
  ratings = pd.DataFrame({
      "user_id": np.zeros(num_items, dtype=np.int64),
      "item_id": np.arange(num_items, dtype=np.int64),
      "rating": np.full(num_items, 5, dtype=np.float32),
      "timestamp": np.zeros(num_items, dtype=np.int64)})
  items = pd.DataFrame({"item_id": np.arange(num_items, dtype=np.int64),
                        "title": [f"t{i}" for i in range(num_items)],
                        "genres": pd.Series([list(g) for g in genres], dtype=object)})
  return feedback.implicit_feedback(ratings, items, min_user_positives=1)


def _check_consistent(feats: features.Features):
  """Rows sum to 1 (or 0 when empty) and the padded ids/weights state the same rows."""
  matrix = feats.matrix
  assert matrix.dtype == np.float32
  assert matrix.indices.dtype == np.int32 and matrix.indptr.dtype == np.int32
  assert matrix.shape == (feats.num_rows, feats.num_features)
  assert matrix.shape == (len(feats.ids), len(feats.names))
  counts = np.diff(matrix.indptr)
  sums = np.asarray(matrix.sum(axis=1)).ravel()
  np.testing.assert_allclose(sums, (counts > 0).astype(np.float32), rtol=1e-6)
  assert feats.ids.dtype == np.int32 and feats.weights.dtype == np.float32
  assert feats.ids.shape == feats.weights.shape == (feats.num_rows, max(counts.max(), 1))
  dense = np.zeros(matrix.shape, dtype=np.float32)
  np.add.at(dense, (np.arange(feats.num_rows)[:, None], feats.ids), feats.weights)
  np.testing.assert_array_equal(dense, matrix.toarray())
  for row in range(feats.num_rows):
    n = counts[row]
    np.testing.assert_array_equal(feats.ids[row, :n], matrix.indices[matrix.indptr[row]:][:n])
    np.testing.assert_array_equal(feats.weights[row, :n], np.float32(1 / n) if n else [])
    assert not feats.weights[row, n:].any() and not feats.ids[row, n:].any()


def _row_names(feats, row):
  n = np.count_nonzero(feats.weights[row])
  return [feats.names[i] for i in feats.ids[row, :n]]


# --- check_feature_names -------------------------------------------------------------------

@pytest.mark.parametrize("names, expected", [
    ("age,gender", ("age", "gender")),
    (["occupation", " age "], ("occupation", "age")),
    ("", ()),
    (None, ()),
    ([], ()),
    ("gender,", ("gender",)),
])
def test_check_feature_names_accepts(names, expected):
  assert features.check_feature_names("--user_features", names,
                                      features.USER_FEATURES) == expected


@pytest.mark.parametrize("names, message", [
    ("age,zip", "--user_features: unknown feature 'zip'; known: age, gender, occupation"),
    (["age", "age"], "--user_features: feature 'age' is listed twice"),
    ([3], "--user_features: feature names must be strings, got 3"),
])
def test_check_feature_names_refuses(names, message):
  with pytest.raises(errors.InvalidInput) as info:
    features.check_feature_names("--user_features", names, features.USER_FEATURES)
  assert str(info.value) == message


# --- from_pairs ----------------------------------------------------------------------------

def test_from_pairs_mean_rows_padding_and_duplicates():
  feats = features.from_pairs(np.array([2, 0, 2, 0, 2, 0]), np.array([3, 1, 0, 1, 2, 3]),
                              ["a", "b", "c", "d"], num_rows=4)
  _check_consistent(feats)
  np.testing.assert_allclose(feats.matrix.toarray(), [
      [0, .5, 0, .5], [0, 0, 0, 0], [1 / 3, 0, 1 / 3, 1 / 3], [0, 0, 0, 0]], rtol=1e-6)
  assert feats.ids.shape == (4, 3)
  np.testing.assert_array_equal(feats.ids[2], [0, 2, 3])
  np.testing.assert_array_equal(feats.weights[0], [.5, .5, 0])
  assert feats.names == ("a", "b", "c", "d")
  assert not feats.ids.flags.writeable and not feats.matrix.data.flags.writeable


def test_from_pairs_no_pairs_keeps_one_padding_column():
  feats = features.from_pairs(np.zeros(0, np.int64), np.zeros(0, np.int64), ["a"], num_rows=3)
  _check_consistent(feats)
  assert feats.ids.shape == (3, 1) and not feats.weights.any()


def test_jitted_gather_mean_equals_matrix_product():
  rng = np.random.default_rng(0)
  rows, cols = rng.integers(0, 50, size=300), rng.integers(0, 12, size=300)
  feats = features.from_pairs(rows, cols, [f"f{i}" for i in range(12)], num_rows=60)
  table = rng.standard_normal((12, 8)).astype(np.float32)

  @jax.jit
  def gather_mean(ids, weights, table):
    return jnp.sum(weights[..., None] * table[ids], axis=-2)

  got = gather_mean(feats.ids, feats.weights, table)
  np.testing.assert_allclose(np.asarray(got), feats.matrix @ table, rtol=1e-5, atol=1e-6)
  assert not np.asarray(got)[np.diff(feats.matrix.indptr) == 0].any()


# --- items ---------------------------------------------------------------------------------

def test_item_features_genres():
  dataset = _dataset([("Comedy", "Drama"), (), ("Drama",), ("Action", "Comedy", "Drama")])
  feats = features.item_features(dataset, ("genres",))
  _check_consistent(feats)
  assert feats.names == ("genre=Action", "genre=Comedy", "genre=Drama")
  assert [_row_names(feats, i) for i in range(4)] == [
      ["genre=Comedy", "genre=Drama"], [], ["genre=Drama"],
      ["genre=Action", "genre=Comedy", "genre=Drama"]]
  # The item with no genre keeps an all-zero row: its own embedding alone.
  assert feats.matrix[1].nnz == 0


def test_item_features_of_a_dataset_without_genres():
  dataset = _dataset([(), ()])
  with pytest.raises(errors.InvalidInput,
                     match=r"^--item_features=genres: the dataset lists no genre for any item"):
    features.item_features(dataset, "genres")


@pytest.mark.parametrize("names, message", [
    ("tags", "--item_features: unknown feature 'tags'; known: genres"),
    ("", "--item_features: no feature asked for; name some of genres"),
    (["genres", "genres"], "--item_features: feature 'genres' is listed twice"),
])
def test_item_features_bad_names(names, message):
  with pytest.raises(errors.InvalidInput) as info:
    features.item_features(_dataset([("Drama",)]), names)
  assert str(info.value) == message


# --- users ---------------------------------------------------------------------------------

@pytest.mark.parametrize("age, bracket", [
    (0, "under 18"), (1, "under 18"), (17, "under 18"), (18, "18-24"), (24, "18-24"),
    (25, "25-34"), (34, "25-34"), (35, "35-44"), (44, "35-44"), (45, "45-49"), (49, "45-49"),
    (50, "50-55"), (55, "50-55"), (56, "56+"), (73, "56+")])
def test_age_brackets(age, bracket):
  index = features.age_brackets(np.array([age]))[0]
  assert features.AGE_BRACKETS[index][0] == bracket


def test_ml1m_age_codes_are_their_own_brackets():
  codes = np.array(movielens_users.ML_1M_AGES)
  np.testing.assert_array_equal(features.age_brackets(codes), np.arange(len(codes)))


def test_negative_age_refused():
  with pytest.raises(errors.InvalidInput, match=r"^--user_features=age: ages must be >= 0"):
    features.age_brackets(np.array([20, -1]))


USERS = pd.DataFrame({"user_id": np.array([10, 11, 12, 13], dtype=np.int64),
                      "age": np.array([24, 60, 1, 30], dtype=np.int64),
                      "gender": ["M", "F", "F", "M"],
                      "occupation": ["writer", "artist", "K-12 student", "writer"]})


def test_user_features_one_of_each_kind_in_the_order_asked():
  feats = features.user_features(USERS, np.array([12, 10, 11]), ["occupation", "age", "gender"])
  _check_consistent(feats)
  assert feats.names == ("occupation=K-12 student", "occupation=artist", "occupation=writer",
                         "age=under 18", "age=18-24", "age=56+", "gender=F", "gender=M")
  assert [_row_names(feats, r) for r in range(3)] == [
      ["occupation=K-12 student", "age=under 18", "gender=F"],
      ["occupation=writer", "age=18-24", "gender=M"],
      ["occupation=artist", "age=56+", "gender=F"]]
  np.testing.assert_allclose(feats.weights, np.float32(1 / 3))


def test_user_features_one_kind():
  feats = features.user_features(USERS, USERS["user_id"].to_numpy(), "gender")
  _check_consistent(feats)
  assert feats.names == ("gender=F", "gender=M")
  np.testing.assert_array_equal(feats.ids[:, 0], [1, 0, 0, 1])
  np.testing.assert_array_equal(feats.weights, np.ones((4, 1), np.float32))


def test_ml100k_and_ml1m_ages_give_the_same_features(tmp_path):
  path = tmp_path / "users.dat"
  path.write_text("1::F::1::10::1\n2::M::18::4::1\n3::M::56::13::1\n")
  ml1m = movielens_users.read_users(path, "dat")
  ml100k = ml1m.assign(age=[12, 20, 70])
  got = [features.user_features(f, np.array([1, 2, 3]), "age") for f in (ml1m, ml100k)]
  assert got[0].names == got[1].names == ("age=under 18", "age=18-24", "age=56+")
  np.testing.assert_array_equal(got[0].ids, got[1].ids)


@pytest.mark.parametrize("users, user_ids, error, message", [
    (USERS, [10, 99, 98], errors.DataError,
     "--user_features: 2 user(s) of the ratings are not in the users table, e.g. [99, 98]"),
    (pd.concat([USERS, USERS.iloc[:1]]), [10], errors.DataError,
     "--user_features: the users table lists user ids twice, e.g. [10]"),
    (USERS.drop(columns="gender"), [10], errors.InvalidInput,
     "--user_features: the users table lacks column(s) ['gender']; it has "
     "['user_id', 'age', 'occupation']"),
    (USERS.assign(gender=["M", None, "F", "M"]), [10, 11], errors.InvalidInput,
     "--user_features=gender: the users table has missing values"),
])
def test_user_features_bad_tables(users, user_ids, error, message):
  with pytest.raises(error) as info:
    features.user_features(users, np.array(user_ids), ["age", "gender"])
  assert str(info.value) == message


@pytest.mark.parametrize("names", ["genres", "", "age,age"])
def test_user_features_bad_names(names):
  with pytest.raises(errors.InvalidInput, match="^--user_features: "):
    features.user_features(USERS, np.array([10]), names)


# --- real ML-100K ---------------------------------------------------------------------------

def test_real_ml100k(data_dir):
  ratings, items = movielens.load_movielens("ml-100k", data_dir=data_dir, download=False)
  dataset = feedback.implicit_feedback(ratings, items)
  item_feats = features.item_features(dataset, ["genres"])
  _check_consistent(item_feats)
  assert item_feats.matrix.shape == (dataset.num_items, 19)
  assert "genre=unknown" in item_feats.names
  toy_story = int(np.flatnonzero(dataset.item_ids == 1)[0])
  assert _row_names(item_feats, toy_story) == ["genre=Animation", "genre=Children's",
                                                "genre=Comedy"]

  users = movielens_users.load_users("ml-100k", data_dir=data_dir, download=False)
  user_feats = features.user_features(users, dataset.user_ids, features.USER_FEATURES)
  _check_consistent(user_feats)
  assert user_feats.num_rows == dataset.num_users
  assert dataset.user_ids[0] == 1
  assert _row_names(user_feats, 0) == ["age=18-24", "gender=M", "occupation=technician"]
  assert np.diff(user_feats.matrix.indptr).tolist() == [3] * dataset.num_users
