"""Tests of tripjax.model: parameter shapes, cosine scores, the ScoreFn."""

import jax
import numpy as np
import pytest
import scipy.sparse as sp

from tripjax import model


def test_init_params_shapes_and_determinism():
  params = model.init_params(jax.random.key(0), 7, 11, dim=5)
  assert params["user"].shape == (7, 5) and params["item"].shape == (11, 5)
  assert params["user"].dtype == np.float32
  again = model.init_params(jax.random.key(0), 7, 11, dim=5)
  np.testing.assert_array_equal(params["item"], again["item"])
  other = model.init_params(jax.random.key(1), 7, 11, dim=5)
  assert not np.allclose(params["item"], other["item"])


@pytest.mark.parametrize("bad", [dict(num_users=0), dict(num_items=-1), dict(dim=0)])
def test_init_params_rejects_bad_sizes(bad):
  kwargs = dict(num_users=3, num_items=4, dim=2) | bad
  with pytest.raises(ValueError, match=next(iter(bad))):
    model.init_params(jax.random.key(0), **kwargs)


def test_cosine_scores_and_score_fn_match_numpy():
  params = model.init_params(jax.random.key(0), 9, 13, dim=6)
  users = np.array([0, 4, 8, 4], np.int32)
  u = np.asarray(params["user"])[users]
  i = np.asarray(params["item"])
  want = (u / np.linalg.norm(u, axis=1, keepdims=True)) @ (
      i / np.linalg.norm(i, axis=1, keepdims=True)).T
  np.testing.assert_allclose(model.cosine_scores(params, users), want, atol=1e-5)
  scores = model.score_fn(params)(users)
  assert scores.shape == (4, 13)
  np.testing.assert_allclose(scores, want, atol=1e-5)


def _counts_matrix(counts, num_users=8):
  """bool CSR [num_users, len(counts)] whose item i has counts[i] positives."""
  rows = np.concatenate([np.arange(c) for c in counts])
  cols = np.repeat(np.arange(len(counts)), counts)
  return sp.csr_matrix((np.ones(rows.size, bool), (rows, cols)),
                       shape=(num_users, len(counts)))


def test_popularity_offset_is_minus_penalty_times_standardised_log_counts():
  counts = np.array([0, 1, 3, 7, 7])
  offset = model.popularity_offset(_counts_matrix(counts), 0.5)
  z = np.log1p(counts)
  z = (z - z.mean()) / z.std()
  np.testing.assert_allclose(offset, -0.5 * z, rtol=1e-6)
  assert offset.dtype == np.float32 and offset.shape == (5,)
  assert offset[3] == offset[4] and np.all(np.diff(offset[:4]) < 0)  # decreasing in the count
  assert model.popularity_offset(_counts_matrix(counts), 0.0) is None
  assert model.popularity_offset(_counts_matrix([2, 2, 2]), 0.5) is None  # nothing to rank by


@pytest.mark.parametrize("bad", [-0.1, float("nan"), float("inf")])
def test_popularity_offset_rejects_bad_penalties(bad):
  with pytest.raises(ValueError, match="popularity penalty must be a finite number >= 0"):
    model.popularity_offset(_counts_matrix([0, 1, 3]), bad)


def test_score_fn_adds_the_item_offset_to_every_user():
  params = model.init_params(jax.random.key(1), 9, 13, dim=6)
  users = np.array([0, 4, 8, 4], np.int32)
  offset = np.linspace(-0.5, 0.5, 13).astype(np.float32)
  plain = np.asarray(model.score_fn(params)(users))
  shifted = np.asarray(model.score_fn(params, offset)(users))
  np.testing.assert_allclose(shifted, plain + offset[None, :], atol=1e-6)
  np.testing.assert_array_equal(np.asarray(model.score_fn(params, None)(users)), plain)
  with pytest.raises(ValueError, match=r"item_offset must be float32\[13\]"):
    model.score_fn(params, offset[:12])
