"""Users without training items: every model that scores from a user's training row (EASE,
item-kNN, RP3beta, PageRank) scores them by popularity; the other users' scores are unchanged
(numpy float64 references)."""

import types

import jax
import numpy as np
import pytest
import scipy.sparse as sp

from tripjax import retrieval
from tripjax.models import ease
from tripjax.models import itemknn
from tripjax.models import pagerank
from tripjax.models import popularity
from tripjax.models import rp3beta

EMPTY = 4  # the user without training items


def _train(num_users=20, num_items=12, seed=0):
  """bool CSR [U, I], long-tailed item popularity, user EMPTY empty, item 7 without users."""
  rng = np.random.default_rng(seed)
  dense = rng.random((num_users, num_items)) < np.linspace(0.6, 0.1, num_items)
  dense[:, 7] = False
  dense[EMPTY] = False
  dense[EMPTY + 1:, 0] = True  # every other user keeps an item
  return sp.csr_matrix(dense)


def _config():
  return types.SimpleNamespace(
      ease_lambda=2.0, knn_k=100, knn_shrink=1.0, rp3_alpha=0.8, rp3_beta=0.4, rp3_top_k=0,
      pagerank_restart=0.3, pagerank_popularity=1.0, pagerank_tol=1e-8,
      pagerank_max_iterations=2000)


def _ease_reference(x, config):
  """float64[I, I]: B = -P / diag(P), diag(B) = 0, P = (X^T X + lambda Id)^-1."""
  p = np.linalg.inv(x.T @ x + config.ease_lambda * np.eye(x.shape[1]))
  b = -p / np.diag(p)[None, :]
  np.fill_diagonal(b, 0.0)
  return x @ b


def _knn_reference(x, config):
  """float64[U, I]: rows times the shrunk cosine (no diagonal; k covers every item)."""
  norms = np.sqrt(x.sum(0))
  s = (x.T @ x) / (np.outer(norms, norms) + config.knn_shrink)
  np.fill_diagonal(s, 0.0)
  return x @ s.T


def _rp3_reference(x, config):
  """float64[U, I]: rows times the three-step walk, column j / degree_j ** beta."""
  user_degree, item_degree = x.sum(1), x.sum(0)
  p_ui = (x / np.maximum(user_degree, 1)[:, None]) ** config.rp3_alpha
  p_iu = (x.T / np.maximum(item_degree, 1)[:, None]) ** config.rp3_alpha
  penalty = np.where(item_degree > 0, np.maximum(item_degree, 1) ** -config.rp3_beta, 0.0)
  w = (p_iu @ p_ui) * penalty[None, :]
  np.fill_diagonal(w, 0.0)
  return x @ w


def _pagerank_reference(x, config):
  """float64[U, I]: the dense walk restarting at each row (rows with items only are used),
  divided by the global PageRank ** popularity."""
  deg_item, deg_user = x.sum(0), x.sum(1)
  t = (x.T / np.maximum(deg_item, 1)[:, None]) @ (x / np.maximum(deg_user, 1)[:, None])
  restart = config.pagerank_restart

  def walk(r):
    pi = r.copy()
    for _ in range(2000):
      lost = pi[:, deg_item == 0].sum(1, keepdims=True)
      pi = restart * r + (1 - restart) * (pi @ t + lost * r)
    return pi

  num_items = x.shape[1]
  personal = walk(np.where(deg_user[:, None] > 0, x / np.maximum(deg_user, 1)[:, None],
                           1.0 / num_items))
  global_pagerank = walk(np.full((1, num_items), 1.0 / num_items))[0]
  return personal / global_pagerank[None, :] ** config.pagerank_popularity


MODELS = {"ease": (ease.MODEL, _ease_reference), "itemknn": (itemknn.MODEL, _knn_reference),
          "rp3beta": (rp3beta.MODEL, _rp3_reference),
          "pagerank": (pagerank.MODEL, _pagerank_reference)}


def _fitted(name):
  train = _train()
  model, reference = MODELS[name]
  params = model.fit(_config(), train)
  return train, model, params, reference(train.toarray().astype(np.float64), _config())


def _both_scorers(model, params, users):
  """float32[B, I] twice: `jax.jit(model.score)` and the model's ScoreFn."""
  users = np.asarray(users, np.int32)
  return (np.asarray(jax.jit(model.score)(params, users)),
          np.asarray(model.score_fn(params)(users)))


@pytest.mark.parametrize("name", sorted(MODELS))
def test_an_empty_user_is_scored_by_popularity(name):
  train, model, params, _ = _fitted(name)
  counts = np.asarray(popularity.fit(None, train)["counts"])
  assert train[EMPTY].nnz == 0 and len(np.unique(counts)) > 2
  for scores in _both_scorers(model, params, [0, EMPTY, 9, EMPTY]):
    assert np.all(np.isfinite(scores))
    np.testing.assert_array_equal(scores[[1, 3]], np.stack([counts, counts]))


@pytest.mark.parametrize("name", sorted(MODELS))
def test_an_empty_users_top_k_is_populars(name):
  train, model, params, _ = _fitted(name)
  num_items = train.shape[1]
  popular = popularity.MODEL.score_fn(popularity.fit(None, train))
  want, _ = retrieval.top_k_scored(popular, [EMPTY], num_items, train)
  got, _ = retrieval.top_k_scored(model.score_fn(params), [EMPTY], num_items, train)
  np.testing.assert_array_equal(got, want)
  # Not merely the item order: with all-equal scores ties would give 0, 1, 2, ...
  assert not np.array_equal(want[0], np.arange(num_items))


@pytest.mark.parametrize("name", sorted(MODELS))
def test_other_users_keep_their_scores(name):
  train, model, params, want = _fitted(name)
  others = np.flatnonzero(train.getnnz(axis=1) > 0)
  assert EMPTY not in others
  # Blocks with the empty user (the fallback fills one row) and without it.
  for users in ([EMPTY, *others], others):
    users = np.asarray(users)
    for scores in _both_scorers(model, params, users):
      rows = users != EMPTY
      np.testing.assert_allclose(scores[rows], want[users[rows]], rtol=1e-4,
                                 atol=1e-5 * np.abs(want).max())
