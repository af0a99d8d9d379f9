"""Tests of tripjax.models.itemknn: the shrunk cosine against dense numpy float64, each item's
k neighbours, scoring, evaluation."""

import types

import jax
import numpy as np
import pytest
import scipy.sparse as sp

from tripjax import config as config_lib
from tripjax import errors
from tripjax import models
from tripjax.data import registry
from tripjax.models import item_item
from tripjax.models import itemknn


def _train(seed=0, num_users=30, num_items=17):
  rng = np.random.default_rng(seed)
  dense = rng.random((num_users, num_items)) < np.linspace(0.05, 0.5, num_items)
  dense[3] = False  # a user without training items
  dense[:, 5] = False  # an item without users
  return dense


def _config(k=100, shrink=10.0):
  return types.SimpleNamespace(knn_k=k, knn_shrink=shrink)


def _knn_reference(dense, k, shrink):
  """S (shrunk cosine, no diagonal); each row's k largest kept (stable sort), transposed."""
  x = dense.astype(np.float64)
  norms = np.sqrt((x * x).sum(0))
  denominator = np.outer(norms, norms) + shrink
  s = np.where(denominator > 0, (x.T @ x) / np.where(denominator > 0, denominator, 1), 0.0)
  np.fill_diagonal(s, 0.0)
  if k < s.shape[1]:
    order = np.argsort(-s, axis=1, kind="stable")[:, :k]
    keep = np.zeros(s.shape, bool)
    np.put_along_axis(keep, order, True, axis=1)
    s = np.where(keep, s, 0.0)
  return s.T


@pytest.mark.parametrize("k,shrink", [(100, 0.0), (100, 10.0), (4, 0.0), (4, 5.0), (1, 2.0)])
def test_w_equals_the_dense_shrunk_cosine(k, shrink):
  dense = _train()
  params = itemknn.fit(_config(k, shrink), sp.csr_matrix(dense))
  got = np.asarray(params["W"])
  want = _knn_reference(dense, k, shrink)
  assert got.dtype == np.float32
  np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-9)
  assert np.all(np.diag(got) == 0)
  # Column j holds item j's neighbours: at most k of them.
  assert np.all((got != 0).sum(axis=0) <= k)
  if k >= dense.shape[1]:
    np.testing.assert_allclose(got, got.T, rtol=1e-6)  # unpruned cosine is symmetric


def test_shrink_zero_is_the_plain_cosine():
  dense = _train(1)
  params = itemknn.fit(_config(100, 0.0), sp.csr_matrix(dense))
  x = dense.astype(np.float64)
  i, j = 2, 11
  cosine = x[:, i] @ x[:, j] / np.linalg.norm(x[:, i]) / np.linalg.norm(x[:, j])
  np.testing.assert_allclose(params["W"][i, j], cosine, rtol=1e-6)
  assert np.all(np.asarray(params["W"])[5] == 0)  # the item without users


def test_each_item_keeps_exactly_k_neighbours_ties_to_the_lower_index():
  # Every pair of items co-occurs once: all similarities tie, so item j keeps the k lowest
  # other indices.
  dense = np.zeros((10, 5), bool)
  for user, (a, b) in enumerate((a, b) for a in range(5) for b in range(a + 1, 5)):
    dense[user, [a, b]] = True
  w = np.asarray(itemknn.fit(_config(2, 1.0), sp.csr_matrix(dense))["W"])
  assert np.all((w != 0).sum(axis=0) == 2)
  np.testing.assert_array_equal(np.nonzero(w[:, 0])[0], [1, 2])
  np.testing.assert_array_equal(np.nonzero(w[:, 1])[0], [0, 2])
  np.testing.assert_array_equal(np.nonzero(w[:, 4])[0], [0, 1])


def test_blocks_of_rows_give_the_same_w():
  dense = _train(2, num_items=23)
  block = itemknn.cosine_blocks(sp.csr_matrix(dense), 3.0)
  whole = item_item.build(block, 23, 5, transpose=True)
  for rows in (1, 4, 7):
    np.testing.assert_array_equal(
        item_item.build(block, 23, 5, transpose=True, block_rows=rows), whole)
  np.testing.assert_allclose(whole, _knn_reference(dense, 5, 3.0), rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("k", [100, 3])
def test_scores_are_rows_times_w_including_an_empty_row(k):
  dense = _train(3)
  params = itemknn.fit(_config(k, 2.0), sp.csr_matrix(dense))
  users = np.array([3, 0, 29, 3, 7], np.int32)
  want = dense[users].astype(np.float64) @ _knn_reference(dense, k, 2.0)
  assert np.all(want[0] == 0)
  want[users == 3] = dense.sum(0)  # the empty row: scored by popularity (training counts)
  by_fn = np.asarray(itemknn.MODEL.score_fn(params)(users))
  by_score = np.asarray(jax.jit(itemknn.MODEL.score)(params, users))
  np.testing.assert_allclose(by_fn, want, rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(by_score, want, rtol=1e-5, atol=1e-7)


def test_params_like_and_similar():
  train = sp.csr_matrix(_train(4))
  params = itemknn.fit(_config(3, 1.0), train)
  like = itemknn.MODEL.params_like(None, train)
  assert jax.tree.map(lambda x: (x.shape, x.dtype), params) == jax.tree.map(
      lambda x: (x.shape, x.dtype), like)
  neighbours = np.asarray(itemknn.similar(params, 8))
  np.testing.assert_array_equal(neighbours, np.asarray(params["W"])[:, 8])
  assert neighbours[8] == 0 and (neighbours != 0).sum() == 3
  items, scores = itemknn.MODEL.similar_items(params, 8, k=3)
  np.testing.assert_array_equal(items, np.argsort(-neighbours, kind="stable")[:3])
  np.testing.assert_array_equal(scores, neighbours[items])


def test_bad_settings_are_refused_by_the_config():
  assert "must be positive" in config_lib.check_field("knn_k", 0)
  assert "must be >= 0" in config_lib.check_field("knn_shrink", -1.0)
  assert "finite" in config_lib.check_field("knn_shrink", float("inf"))
  with pytest.raises(errors.InvalidInput, match="knn_k is a setting of --model=itemknn"):
    config_lib.TrainConfig(model="popularity", knn_k=5)


def test_registered_config_refuses_k_zero():
  with pytest.raises(errors.InvalidInput, match="knn_k must be positive"):
    config_lib.TrainConfig(model="itemknn", knn_k=0)
  assert models.get("itemknn") is itemknn.MODEL


def test_beats_popularity_on_synthetic_tiny(against_popularity):
  _, train, test = registry.prepare("synthetic-tiny")
  params = itemknn.fit(_config(50, 10.0), train)
  got, base = against_popularity(itemknn.MODEL.score_fn(params), train, test, ks=(10,))
  assert got["auc"] > base["auc"], (got, base)
  assert got["ndcg@10"] > base["ndcg@10"], (got, base)
