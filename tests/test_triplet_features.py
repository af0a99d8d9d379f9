"""Side features (LightFM-style) and cold items in the triplet model."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.sparse as sp

from tripjax import loop
from tripjax import model
from tripjax import report
from tripjax import retrieval
from tripjax import sampling
from tripjax.config import TrainConfig
from tripjax.data import cold_items
from tripjax.data import features
from tripjax.data import registry
from tripjax.metrics import cold
from tripjax.models import triplet

_GENRES = 6


def _genre_world(num_users=240, num_items=300, liked=25, seed=0):
  """Users like random items of one favourite genre; item i has genre i % 6 (and i % 5 == 0
  items a second one). Returns (matrix bool CSR [U, I], item Features)."""
  rng = np.random.default_rng(seed)
  genre = np.arange(num_items) % _GENRES
  rows, cols = [], []
  for u in range(num_users):
    pool = np.flatnonzero(genre == u % _GENRES)
    chosen = rng.choice(pool, size=liked, replace=False)
    rows += [u] * liked
    cols += list(chosen)
  matrix = sp.csr_matrix((np.ones(len(rows), bool), (rows, cols)), shape=(num_users, num_items))
  pairs_rows = list(range(num_items)) + list(range(0, num_items, 5))
  pairs_cols = list(genre) + [(g + 1) % _GENRES for g in genre[::5]]
  names = tuple(f"genre={g}" for g in range(_GENRES))
  item_features = features.from_pairs(np.array(pairs_rows), np.array(pairs_cols), names,
                                      num_items)
  return matrix, item_features


def _config(**overrides):
  values = dict(dataset="synthetic-tiny", dim=16, epochs=8, batch_size=256, optimizer="adam",
                learning_rate=0.1, margin=0.5, num_negatives=2, steps_per_dispatch=8, seed=0)
  values.update(overrides)
  return TrainConfig(**values)


@pytest.fixture(scope="module")
def genre_runs():
  matrix, item_features = _genre_world()
  warm, cold_set = cold_items.hold_out_items(matrix, 0.2, seed=0)
  runs = {}
  for name, side in (("features", {"item_features": item_features, "zero_items": cold_set}),
                     ("plain", {"zero_items": cold_set})):
    runs[name] = loop.fit(_config(), warm, side=side).state.params
  return matrix, warm, cold_set, item_features, runs


def test_genres_score_cold_items_the_plain_model_cannot(genre_runs):
  matrix, _, cold_set, _, runs = genre_runs
  with_features = cold.evaluate_cold(model.score_fn(runs["features"]), matrix, cold_set)
  plain = cold.evaluate_cold(model.score_fn(runs["plain"]), matrix, cold_set)
  assert with_features["auc"] > 0.9, with_features
  assert with_features["recall@20"] > 0.3, with_features
  # Cold items have no vector in the plain model: every one scores 0, a tie (AUC 1/2).
  assert plain["auc"] == pytest.approx(0.5), plain
  assert with_features["users"] == plain["users"] > 0


def test_cold_items_are_never_trained(genre_runs):
  _, _, cold_set, _, runs = genre_runs
  for params in runs.values():
    np.testing.assert_array_equal(params["item"][cold_set], 0.0)
  assert not np.any(np.asarray(runs["features"]["item"])[np.setdiff1d(np.arange(300),
                                                                       cold_set)] == 0.0)


def test_excluded_items_are_never_negatives():
  matrix, _ = _genre_world(num_users=60, num_items=90, liked=10)
  warm, excluded = cold_items.hold_out_items(matrix, 0.3, seed=1)
  for exponent in (0.0, 0.5):
    sampler = sampling.EpochSampler(warm, 64, num_negatives=4, negative_exponent=exponent,
                                    excluded_items=excluded)
    negatives = np.concatenate([np.asarray(sampler.epoch(e).neg).ravel() for e in range(5)])
    weights = np.asarray(sampler.epoch(0).weights).ravel()
    assert not np.isin(negatives, excluded).any()
    assert np.unique(negatives).size > 40  # the other items are still drawn.
    assert weights.sum() == warm.nnz
  with pytest.raises(ValueError, match="excluded item is a training positive"):
    sampling.EpochSampler(matrix, 64, excluded_items=excluded)


def test_features_flow_through_scores_top_k_similar_items_and_fold_in(genre_runs):
  _, warm, _, item_features, runs = genre_runs
  params = runs["features"]
  feature_rows = np.asarray(item_features.matrix @ np.asarray(
      params["item_features"]["table"], np.float64))
  items = np.asarray(params["item"], np.float64) + feature_rows
  users = np.asarray(params["user"], np.float64)
  np.testing.assert_allclose(model.table(params, "item"), items, rtol=1e-5, atol=1e-6)
  unit = lambda x: x / np.linalg.norm(x, axis=-1, keepdims=True)
  want = unit(users[[0, 7]]) @ unit(items).T
  np.testing.assert_allclose(model.score_fn(params)(jnp.array([0, 7])), want, atol=1e-5)
  np.testing.assert_allclose(model.cosine_scores(params, jnp.array([0, 7])), want, atol=1e-5)
  # Top-k and similar items read the same vectors through the model interface.
  top, _ = retrieval.top_k_scored(triplet.MODEL.score_fn(params), np.array([0]), k=5,
                                  exclude=warm)
  assert list(top[0]) == list(np.argsort(-np.where(warm[0].toarray()[0], -np.inf, want[0]),
                                         kind="stable")[:5])
  similar, scores = triplet.MODEL.similar_items(params, 3, k=5)
  item_cos = unit(items) @ unit(items)[3]
  item_cos[3] = -np.inf
  assert list(similar) == list(np.argsort(-item_cos, kind="stable")[:5])
  np.testing.assert_allclose(scores, item_cos[similar], atol=1e-5)
  # Fold-in starts from the mean of the liked items' unit vectors, features included.
  vec = triplet.MODEL.fold_in_user(params, [3, 9], jax.random.key(0), steps=0, margin=0.5)
  np.testing.assert_allclose(vec, unit(items[[3, 9]]).mean(0), atol=1e-5)


def test_without_features_params_are_the_two_tables():
  params = model.init_params(jax.random.key(0), 5, 7, 4)
  assert set(params) == {"user", "item"}
  assert model.tables(params) is params and model.trainable(params) == params


def test_feature_params_keep_ids_out_of_the_optimizer():
  _, item_features = _genre_world(num_users=12, num_items=30, liked=3)
  params = model.init_params(jax.random.key(0), 12, 30, 4, item_features=item_features)
  trained = model.trainable(params)
  assert set(trained["item_features"]) == {"table"}
  assert model.merge(trained, params)["item_features"]["ids"] is params["item_features"]["ids"]
  like = triplet.params_like(_config(), sp.csr_matrix((12, 30), dtype=bool))
  assert "item_features" not in like  # the config asks for none


def test_the_cold_split_holds_out_whole_items(data_dir):
  dataset, train, test = registry.prepare("ml-100k", data_dir=data_dir, download=False,
                                          cold_item_fraction=0.2, split_seed=1)
  held = dataset.cold_items
  assert held.size == round(0.2 * dataset.num_items)
  assert train[:, held].nnz == 0 and test[:, held].nnz == 0
  assert (train + test + cold_items.cold_test_matrix(dataset.matrix, held)).nnz == \
      dataset.matrix.nnz
  again, _, _ = registry.prepare("ml-100k", data_dir=data_dir, download=False,
                                 cold_item_fraction=0.2, split_seed=1)
  np.testing.assert_array_equal(again.cold_items, held)
  plain, _, _ = registry.prepare("ml-100k", data_dir=data_dir, download=False)
  assert plain.cold_items is None


def test_genre_popularity_scores_mean_warm_popularity_of_genres():
  _, item_features = _genre_world(num_users=12, num_items=30, liked=3)
  train = sp.csr_matrix(np.eye(12, 30, dtype=bool) | np.eye(12, 30, k=6, dtype=bool))
  held = np.array([0, 1])
  scores = np.asarray(cold.genre_popularity_scores(train, item_features, held)(jnp.array([0])))[0]
  counts = np.asarray(train.sum(0)).ravel().astype(float)
  member = item_features.matrix.toarray() > 0
  warm = np.ones(30, bool)
  warm[held] = False
  genre_pop = np.array([counts[member[:, g] & warm].mean() for g in range(_GENRES)])
  want = np.array([genre_pop[member[i]].mean() for i in range(30)])
  np.testing.assert_allclose(scores, want, rtol=1e-6)


@pytest.mark.parametrize("overrides,needle", [
    (dict(item_features="colour"), "--item_features"),
    (dict(user_features="age,age"), "listed twice"),
    (dict(item_features="genres", optimizer="sparse_adam"), "dense optimizer"),
    (dict(item_features="genres", model="ease"), "--model=triplet"),
    (dict(cold_item_fraction=1.0), "cold_item_fraction"),
])
def test_bad_feature_settings_are_refused(overrides, needle):
  with pytest.raises(ValueError, match=needle):
    _config(**overrides)


def test_user_features_need_a_dataset_that_has_them():
  with pytest.raises(ValueError, match="--user_features"):
    registry.load_features(_config(user_features="age"))


def test_a_run_with_genres_and_cold_items_reports_them(tmp_path):
  from tripjax import train  # pylint: disable=g-import-not-at-top
  config = _config(item_features="genres", cold_item_fraction=0.2, epochs=2, test_per_user=5,
                   batch_size=128, eval_every=2)
  results = train.train_and_evaluate(config, tmp_path / "run")
  held = results["cold_items"]
  assert held["items"] == 40 and held["model"]["users"] > 0
  assert held["random"]["auc"] == pytest.approx(0.5, abs=0.1)
  assert held["popularity_by_genre"] is not None
  run = train.restore_run(tmp_path / "run")
  assert "item_features" in run.params and run.dataset.cold_items.size == 40
  np.testing.assert_array_equal(np.asarray(run.params["item"])[run.dataset.cold_items], 0.0)
  analysis = report.analyze(run)
  assert analysis.cold["model"]["auc"] == pytest.approx(held["model"]["auc"], abs=1e-6)
  text = report.render_markdown(analysis, run.dataset, dict.fromkeys(report.FIGURES, "f.png"))
  assert "## Cold items" in text
  assert f"| model | {held['model']['auc']:.4f} |" in text
