"""Tests of tripjax.models.rp3beta (and the shared item_item): W against a dense numpy
float64 statement of the walk, pruning, scoring, evaluation."""

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
from tripjax.models import rp3beta


def _train(seed=0, num_users=30, num_items=17):
  rng = np.random.default_rng(seed)
  dense = rng.random((num_users, num_items)) < np.linspace(0.05, 0.5, num_items)
  dense[3] = False  # a user without training items
  dense[:, 5] = False  # an item without users
  return dense


def _config(alpha=1.0, beta=0.5, top_k=0):
  return types.SimpleNamespace(rp3_alpha=alpha, rp3_beta=beta, rp3_top_k=top_k)


def _top_k_reference(w, k):
  """Keeps the k largest per row, ties to the lower index (a stable sort)."""
  if k == 0 or k >= w.shape[1]:
    return w
  order = np.argsort(-w, axis=1, kind="stable")[:, :k]
  keep = np.zeros(w.shape, bool)
  np.put_along_axis(keep, order, True, axis=1)
  return np.where(keep, w, 0.0)


def _power(p, alpha):
  return np.where(p > 0, np.abs(p) ** alpha, 0.0)


def _rp3_reference(dense, alpha, beta, top_k):
  x = dense.astype(np.float64)
  user_degree, item_degree = x.sum(1), x.sum(0)
  p_ui = _power(x / np.maximum(user_degree, 1)[:, None], alpha)
  p_iu = _power(x.T / np.maximum(item_degree, 1)[:, None], alpha)
  w = p_iu @ p_ui
  w *= np.where(item_degree > 0, np.maximum(item_degree, 1) ** -beta, 0.0)[None, :]
  np.fill_diagonal(w, 0.0)
  return _top_k_reference(w, top_k)


@pytest.mark.parametrize("alpha,beta,top_k", [
    (1.0, 0.0, 0), (1.0, 0.5, 0), (0.5, 0.7, 0), (0.0, 0.3, 0), (1.0, 0.5, 4), (0.7, 0.2, 1)])
def test_w_equals_the_dense_walk(alpha, beta, top_k):
  dense = _train()
  params = rp3beta.fit(_config(alpha, beta, top_k), sp.csr_matrix(dense))
  want = _rp3_reference(dense, alpha, beta, top_k)
  got = np.asarray(params["W"])
  assert got.dtype == np.float32
  np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-9)
  assert np.all(np.diag(got) == 0)
  if top_k:
    assert np.all((got != 0).sum(axis=1) <= top_k)


def test_w_without_penalty_or_pruning_is_a_transition_matrix():
  dense = _train(1)
  dense[:, 5] = True  # every user has item 5: rows without any other item keep mass on it
  params = rp3beta.fit(_config(1.0, 0.0, 0), sp.csr_matrix(dense))
  w = np.asarray(params["W"], np.float64)
  x = dense.astype(np.float64)
  p_iu = x.T / x.sum(0)[:, None]
  p_ui = x / np.maximum(x.sum(1), 1)[:, None]
  # The walk i -> u -> j sums to 1 over j, before the diagonal is removed.
  np.testing.assert_allclose(w.sum(1) + np.diag(p_iu @ p_ui), 1.0, rtol=1e-6)


def test_blocks_of_rows_give_the_same_w():
  dense = _train(2, num_items=23)
  block = rp3beta.walk_blocks(sp.csr_matrix(dense), 0.8, 0.4)
  whole = item_item.build(block, 23, 5)
  for rows in (1, 4, 7):
    np.testing.assert_array_equal(item_item.build(block, 23, 5, block_rows=rows), whole)
  np.testing.assert_allclose(whole, _rp3_reference(dense, 0.8, 0.4, 5), rtol=1e-6, atol=1e-9)


def test_keep_top_k_keeps_exactly_k_per_row_ties_to_the_lower_index():
  block = np.array([[3.0, 1.0, 3.0, 2.0, 3.0],
                    [1.0, 1.0, 1.0, 1.0, 1.0],
                    [0.0, 5.0, 4.0, 4.0, 0.0]])
  got = item_item.keep_top_k(block, 2)
  np.testing.assert_array_equal(got, [[3, 0, 3, 0, 0], [1, 1, 0, 0, 0], [0, 5, 4, 0, 0]])
  rng = np.random.default_rng(0)
  ties = rng.integers(1, 4, size=(50, 20)).astype(np.float64)  # positive, many ties
  for k in (1, 3, 19):
    pruned = item_item.keep_top_k(ties, k)
    assert np.all((pruned != 0).sum(axis=1) == k)
    np.testing.assert_array_equal(pruned, _top_k_reference(ties, k))
  np.testing.assert_array_equal(item_item.keep_top_k(ties, 0), ties)
  np.testing.assert_array_equal(item_item.keep_top_k(ties, 20), ties)


@pytest.mark.parametrize("top_k", [0, 3])
def test_scores_are_rows_times_w_including_an_empty_row(top_k):
  dense = _train(3)
  train = sp.csr_matrix(dense)
  params = rp3beta.fit(_config(0.9, 0.4, top_k), train)
  want_w = _rp3_reference(dense, 0.9, 0.4, top_k)
  users = np.array([3, 0, 29, 3, 7], np.int32)
  want = dense[users].astype(np.float64) @ want_w
  assert np.all(want[0] == 0)
  want[users == 3] = dense.sum(0)  # the empty row: scored by popularity (training counts)
  by_fn = np.asarray(rp3beta.MODEL.score_fn(params)(users))
  by_score = np.asarray(jax.jit(rp3beta.MODEL.score)(params, users))
  np.testing.assert_allclose(by_fn, want, rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(by_score, want, rtol=1e-5, atol=1e-7)
  offset = np.linspace(0, 1, dense.shape[1]).astype(np.float32)
  np.testing.assert_allclose(np.asarray(rp3beta.MODEL.score_fn(params, offset)(users)),
                             want + offset, rtol=1e-5, atol=1e-6)


def test_params_like_and_similar():
  train = sp.csr_matrix(_train(4))
  params = rp3beta.fit(_config(), train)
  like = rp3beta.MODEL.params_like(None, train)
  assert jax.tree.map(lambda x: (x.shape, x.dtype), params) == jax.tree.map(
      lambda x: (x.shape, x.dtype), like)
  np.testing.assert_array_equal(np.asarray(rp3beta.similar(params, 2)),
                                np.asarray(params["W"])[2])
  assert rp3beta.similar(params, 2)[2] == 0
  items, scores = rp3beta.MODEL.similar_items(params, 2, k=4)
  row = np.asarray(params["W"])[2]
  np.testing.assert_array_equal(items, np.argsort(-row, kind="stable")[:4])
  np.testing.assert_array_equal(scores, row[items])


def test_bad_settings_are_refused_by_the_config():
  assert "must be >= 0" in config_lib.check_field("rp3_alpha", -0.5)
  assert "must be >= 0" in config_lib.check_field("rp3_beta", -1.0)
  assert "must be >= 0" in config_lib.check_field("rp3_top_k", -1)
  assert "finite" in config_lib.check_field("rp3_beta", float("nan"))
  with pytest.raises(errors.InvalidInput, match="rp3_top_k is a setting of --model=rp3beta"):
    config_lib.TrainConfig(model="popularity", rp3_top_k=10)


def test_registered_config_refuses_a_negative_top_k():
  with pytest.raises(errors.InvalidInput, match="rp3_top_k must be >= 0"):
    config_lib.TrainConfig(model="rp3beta", rp3_top_k=-1)
  assert models.get("rp3beta") is rp3beta.MODEL


def test_beats_popularity_on_synthetic_tiny(against_popularity):
  _, train, test = registry.prepare("synthetic-tiny")
  params = rp3beta.fit(_config(1.0, 0.5, 0), train)
  got, base = against_popularity(rp3beta.MODEL.score_fn(params), train, test, ks=(10,))
  assert got["auc"] > base["auc"], (got, base)
  assert got["ndcg@10"] > base["ndcg@10"], (got, base)
