"""Tests of tripjax.model: parameter shapes, cosine scores, the ScoreFn."""

import jax
import numpy as np
import pytest

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
