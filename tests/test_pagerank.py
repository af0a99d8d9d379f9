"""Tests of `tripjax.models.pagerank` against a dense float64 power iteration."""

import types

import jax
import numpy as np
import pytest
import scipy.sparse as sp

from tripjax import baselines
from tripjax import config as config_lib
from tripjax import errors
from tripjax.data import registry
from tripjax.models import pagerank


def _config(restart=0.3, popularity=0.0, tol=1e-8, max_iterations=2000):
  # The walk reads only these fields; TrainConfig(model="pagerank") needs the registry line.
  return types.SimpleNamespace(pagerank_restart=restart, pagerank_popularity=popularity,
                               pagerank_tol=tol, pagerank_max_iterations=max_iterations)


def _train(seed=0, num_users=12, num_items=9):
  """Random bool CSR with an item nobody has (2) and a user without items (4)."""
  rng = np.random.default_rng(seed)
  matrix = rng.random((num_users, num_items)) < 0.35
  matrix[:, 2] = False
  matrix[4] = False
  matrix[0, [0, 1]] = True  # every other item and user keeps an edge
  return sp.csr_matrix(matrix)


def _dense_walk(train, restart_vectors, restart, iterations=3000):
  """float64[B, I]: pi <- restart r + (1 - restart) (pi T + dangling mass * r), T dense."""
  x = train.toarray().astype(np.float64)
  deg_item, deg_user = x.sum(0), x.sum(1)
  p_iu = np.divide(x.T, deg_item[:, None], out=np.zeros_like(x.T), where=deg_item[:, None] > 0)
  p_ui = np.divide(x, deg_user[:, None], out=np.zeros_like(x), where=deg_user[:, None] > 0)
  t = p_iu @ p_ui
  r = np.asarray(restart_vectors, np.float64)
  pi = r.copy()
  for _ in range(iterations):
    pi = restart * r + (1 - restart) * (pi @ t + pi[:, deg_item == 0].sum(1, keepdims=True) * r)
  return pi


def _dense_restarts(train):
  """float64[U, I]: uniform over each user's items, uniform over all items for an empty row."""
  x = train.toarray().astype(np.float64)
  counts = x.sum(1, keepdims=True)
  return np.where(counts > 0, x / np.maximum(counts, 1), 1.0 / x.shape[1])


def _dense_global(train, restart):
  num_items = train.shape[1]
  return _dense_walk(train, np.full((1, num_items), 1.0 / num_items), restart)[0]


def _with_popularity(train, scores):
  """float64[U, I]: `scores` with the rows of users without training items replaced by the
  items' training counts (the popularity fallback)."""
  empty = train.getnnz(axis=1) == 0
  return np.where(empty[:, None], baselines.item_counts(train)[None, :], scores)


def _scores(params, num_users):
  return np.asarray(jax.jit(pagerank.score)(params, np.arange(num_users, dtype=np.int32)))


@pytest.mark.parametrize("restart", [0.1, 0.3, 0.7])
@pytest.mark.parametrize("seed", [0, 1])
def test_scores_equal_the_dense_walk(restart, seed):
  train = _train(seed)
  params = pagerank.fit(_config(restart), train)
  want = _with_popularity(train, _dense_walk(train, _dense_restarts(train), restart))
  np.testing.assert_allclose(_scores(params, train.shape[0]), want, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(np.asarray(params["global_pagerank"]),
                             _dense_global(train, restart), rtol=1e-5, atol=1e-6)


def test_each_users_vector_sums_to_one():
  train = _train(2)
  scores = _scores(pagerank.fit(_config(0.2), train), train.shape[0])
  empty = train.getnnz(axis=1) == 0
  assert empty[4] and np.all(scores >= 0)
  np.testing.assert_allclose(scores[~empty].sum(1), 1.0, atol=1e-5)
  # The walk never reaches the item nobody has (the empty user's popularity scores it 0 too).
  assert np.all(scores[:, 2] == 0)


@pytest.mark.parametrize("popularity", [0.5, 1.0, 1.7])
def test_popularity_correction_divides_by_the_global_pagerank(popularity):
  train = _train(3)
  plain = _scores(pagerank.fit(_config(0.3), train), train.shape[0])
  got = _scores(pagerank.fit(_config(0.3, popularity), train), train.shape[0])
  want = _with_popularity(train, plain / _dense_global(train, 0.3) ** popularity)
  np.testing.assert_allclose(got, want, rtol=1e-5)
  assert not np.allclose(got, plain)


@pytest.mark.parametrize("popularity", [0.0, 0.5, 1.0])
def test_user_without_items_gets_the_item_counts(popularity):
  train = _train(4)
  assert train[4].nnz == 0
  params = pagerank.fit(_config(0.25, popularity), train)
  got = _scores(params, train.shape[0])[4]
  np.testing.assert_array_equal(got, baselines.item_counts(train).astype(np.float32))


def test_iterations_stop_at_the_tolerance_and_the_bound():
  train = _train(5)
  users = np.arange(train.shape[0], dtype=np.int32)
  r = _dense_restarts(train)
  # Every walk takes one step; nothing then changes by 3 in L1 (vectors sum to one).
  for config, steps in [(_config(0.3, tol=3.0), 1), (_config(0.3, max_iterations=1), 1),
                        (_config(0.3, max_iterations=2), 2)]:
    params = pagerank.fit(config, train)
    np.testing.assert_allclose(np.asarray(jax.jit(pagerank.score)(params, users)),
                               _with_popularity(train, _dense_walk(train, r, 0.3,
                                                                   iterations=steps)),
                               rtol=1e-5,
                               atol=1e-7)


@pytest.mark.parametrize("item", [0, 5, 8])
def test_similar_is_the_walk_restarting_at_the_item(item):
  train = _train(6)
  params = pagerank.fit(_config(0.3), train)
  want = _dense_walk(train, np.eye(train.shape[1])[[item]], 0.4)[0]
  got = np.asarray(pagerank.similar(params, item, _config(0.4)))
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
  corrected = np.asarray(pagerank.similar(params, item, _config(0.4, popularity=1.0)))
  np.testing.assert_allclose(corrected, want / _dense_global(train, 0.3), rtol=1e-5, atol=1e-5)


def test_similar_at_an_item_nobody_has_and_out_of_range():
  train = _train(6)
  params = pagerank.fit(_config(0.3), train)
  np.testing.assert_allclose(np.asarray(pagerank.similar(params, 2, _config())),
                             np.eye(train.shape[1])[2], atol=1e-7)
  with pytest.raises(errors.InvalidInput) as e:
    pagerank.similar(params, 9, _config())
  assert "\n" not in str(e.value) and "item index 9 is out of range" in str(e.value)


def test_params_like_matches_fit_and_default_config_fits():
  train = _train(7)
  config = config_lib.TrainConfig()
  params = pagerank.fit(config, train)
  shapes = lambda tree: jax.tree.map(lambda x: (x.shape, x.dtype), tree)
  assert shapes(params) == shapes(pagerank.params_like(config, train))
  assert pagerank.MODEL.name == "pagerank"
  assert "restart 0.15" in pagerank.MODEL.describe(config)


def test_synthetic_tiny_beats_popularity(against_popularity):
  _, train, test = registry.prepare("synthetic-tiny", download=False)
  params = pagerank.fit(config_lib.TrainConfig(), train)
  got, base = against_popularity(pagerank.MODEL.score_fn(params), train, test, block_size=64)
  assert got["auc"] > base["auc"], (got, base)
