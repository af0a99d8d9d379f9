"""Tests of tripjax.models.ease: the closed form, its scores, the memory refusal, evaluation."""

import types

import jax
import numpy as np
import pytest
import scipy.sparse as sp

from tripjax import baselines
from tripjax import config as config_lib
from tripjax import errors
from tripjax.data import registry
from tripjax.models import ease


def _config(lam):
  # TrainConfig(ease_lambda=...) needs --model=ease, which the registry may not list yet.
  return types.SimpleNamespace(ease_lambda=lam)


def _train(seed=0, num_users=37, num_items=23):
  rng = np.random.default_rng(seed)
  dense = rng.random((num_users, num_items)) < np.linspace(0.05, 0.5, num_items)
  dense[5] = False  # an empty row
  return sp.csr_matrix(dense)


def _reference(train, lam):
  """The closed form in float64 numpy: B = -P / diag(P), diag(B) = 0, P = (X^T X + lam Id)^-1."""
  x = train.toarray().astype(np.float64)
  p = np.linalg.inv(x.T @ x + lam * np.eye(x.shape[1]))
  b = -p / np.diag(p)[None, :]
  np.fill_diagonal(b, 0.0)
  return b


@pytest.mark.parametrize("block", [1 << 24, 5, 1])  # one block; several, the last shorter; rows
def test_weights_equal_the_float64_closed_form(monkeypatch, block):
  monkeypatch.setattr(ease, "GRAM_BLOCK_ELEMENTS", block * 23)  # `block` rows of G per block
  train = _train()
  for lam in (0.5, 20.0):
    params = ease.fit(_config(lam), train)
    weights = np.asarray(params["B"])
    assert weights.dtype == np.float32 and weights.shape == (23, 23)
    want = _reference(train, lam)
    np.testing.assert_allclose(weights, want, rtol=0, atol=2e-5 * np.abs(want).max())
    np.testing.assert_array_equal(np.diag(weights), 0.0)
    # The training rows are kept for scoring.
    np.testing.assert_array_equal(np.asarray(params["indptr"]), train.indptr)
    np.testing.assert_array_equal(np.asarray(params["indices"]), train.indices)


@pytest.mark.parametrize("block_items", [None, 4, 30])
def test_gram_blocks_are_the_rows_of_x_transpose_x(block_items):
  train = _train(4)
  x = train.toarray().astype(np.int64)
  want = x.T @ x
  blocks = list(ease.gram_row_blocks(train, block_items))
  size = block_items or 23
  assert [start for start, _ in blocks] == list(range(0, 23, size))
  for start, rows in blocks:
    assert rows.dtype == np.float32 and rows.shape == (min(size, 23 - start), 23)
  np.testing.assert_array_equal(np.concatenate([rows for _, rows in blocks]), want)
  got = ease.device_gram(train, block_items)
  assert got.dtype == np.float32
  np.testing.assert_array_equal(np.asarray(got), want)


def test_scores_are_training_rows_times_weights_and_jit():
  train = _train(1)
  params = ease.fit(_config(3.0), train)
  want_b = _reference(train, 3.0)
  users = np.array([5, 0, 36, 12, 5], np.int32)  # 5 is empty
  want = train.toarray()[users].astype(np.float64) @ want_b
  tol = dict(rtol=0, atol=1e-4 * np.abs(want).max())
  want[users == 5] = baselines.item_counts(train)  # the empty row: scored by popularity
  got = np.asarray(jax.jit(ease.score)(params, users))
  assert got.shape == (5, 23) and got.dtype == np.float32
  np.testing.assert_allclose(got, want, **tol)
  np.testing.assert_array_equal(got[0], baselines.item_counts(train))
  # The model's ScoreFn (tight static row bound), with and without an item offset.
  np.testing.assert_allclose(np.asarray(ease.MODEL.score_fn(params)(users)), want, **tol)
  offset = np.linspace(-1, 1, 23).astype(np.float32)
  np.testing.assert_allclose(np.asarray(ease.MODEL.score_fn(params, offset)(users)),
                             want + offset, **tol)
  with pytest.raises(errors.InvalidInput, match=r"item_offset must be float32\[23\]"):
    ease.MODEL.score_fn(params, offset[:3])


def test_score_fn_compiles_once_per_block_size():
  train = _train(2)
  score_fn = ease.MODEL.score_fn(ease.fit(_config(1.0), train))
  score_fn(np.arange(4, dtype=np.int32))
  compiled = ease._jit_scores._cache_size()  # pylint: disable=protected-access
  score_fn(np.arange(4, 8, dtype=np.int32))
  score_fn(np.array([5, 5, 0, 1], np.int32))
  assert ease._jit_scores._cache_size() == compiled  # pylint: disable=protected-access


def test_empty_training_matrix_scores_zero():
  train = sp.csr_matrix(np.zeros((3, 4), bool))
  params = ease.fit(_config(2.0), train)
  np.testing.assert_array_equal(np.asarray(params["B"]), 0.0)
  users = np.array([0, 2], np.int32)
  np.testing.assert_array_equal(np.asarray(jax.jit(ease.score)(params, users)), 0.0)
  np.testing.assert_array_equal(np.asarray(ease.MODEL.score_fn(params)(users)), 0.0)


def test_a_lambda_too_small_for_float32_is_one_error_naming_it():
  train = _train(3)  # and a copy of an item's column: X^T X is singular
  train = sp.hstack([train, train[:, [10]]]).tocsr()
  with pytest.raises(errors.InvalidInput, match="--ease_lambda=1e-30"):
    ease.fit(_config(1e-30), train)
  assert np.isfinite(np.asarray(ease.fit(_config(1.0), train)["B"])).all()


def test_params_like_matches_the_fit():
  train = _train(3)
  params = ease.fit(_config(1.0), train)
  like = ease.params_like(None, train)
  assert jax.tree.map(lambda x: (x.shape, x.dtype), params) == jax.tree.map(
      lambda x: (x.shape, x.dtype), like)


def test_too_many_items_is_refused_before_allocating(monkeypatch):
  monkeypatch.setattr(ease, "MEMORY_LIMIT_BYTES", 2**20)

  def must_not_run(*args, **kwargs):
    raise AssertionError("the fit ran past the memory check")

  monkeypatch.setattr(ease, "_closed_form", must_not_run)
  monkeypatch.setattr(ease, "device_gram", must_not_run)
  train = sp.csr_matrix((np.ones(3, bool), ([0, 1, 1], [0, 5, 999])), shape=(2, 1000))
  with pytest.raises(errors.ResourceExhausted) as raised:
    ease.fit(_config(1.0), train)
  message = str(raised.value)
  assert "\n" not in message
  # 4 float32[1000, 1000] matrices: 16e6 bytes.
  assert "1000 items need about 0.0149 GiB" in message
  assert "another --model" in message
  assert isinstance(raised.value, MemoryError)
  # At the limit, the same catalogue passes the check.
  monkeypatch.setattr(ease, "MEMORY_LIMIT_BYTES", 16_000_000)
  ease.check_memory(1000)


def test_memory_limit_is_the_devices_free_memory_else_the_default(monkeypatch):
  device = types.SimpleNamespace(memory_stats=lambda: {"bytes_limit": 10 * 2**30,
                                                       "bytes_in_use": 2**30})
  monkeypatch.setattr(ease.jax, "local_devices", lambda: [device])
  assert ease.memory_limit() == 9 * 2**30
  device.memory_stats = lambda: None  # CPU devices report nothing
  assert ease.memory_limit() == ease.DEFAULT_MEMORY_LIMIT_BYTES
  monkeypatch.setattr(ease, "MEMORY_LIMIT_BYTES", 123)
  assert ease.memory_limit() == 123


def test_trains_and_beats_popularity_on_synthetic_tiny(against_popularity):
  _, train, test = registry.prepare("synthetic-tiny")
  config = config_lib.TrainConfig()  # the default ease_lambda (500)
  assert ease.MODEL.describe(config) == "lambda 500"
  params = ease.MODEL.fit(config, train, key=jax.random.key(0))
  got, base = against_popularity(ease.MODEL.score_fn(params), train, test, block_size=32)
  assert got["auc"] > base["auc"] + 0.03, (got, base)
  # The blocked evaluation saw the scores of the closed form.
  users = np.arange(train.shape[0], dtype=np.int32)
  want = train.toarray()[users].astype(np.float64) @ _reference(train, 500.0)
  np.testing.assert_allclose(np.asarray(ease.MODEL.score_fn(params)(users)), want, rtol=0,
                             atol=1e-4 * np.abs(want).max())


def test_low_ratings_are_entries_of_their_weight_in_the_fit_and_the_scores(monkeypatch):
  train = _train(6)
  rng = np.random.default_rng(7)
  low = sp.csr_matrix(~train.toarray() & (rng.random(train.shape) < 0.15))
  monkeypatch.setattr(registry, "load_low_ratings",
                      lambda config: low if getattr(config, "low_rating_weight", 0.0) else None)
  config = types.SimpleNamespace(ease_lambda=3.0, low_rating_weight=0.4)
  params = ease.fit(config, train)
  x = sp.csr_matrix(train.toarray() + 0.4 * low.toarray())
  want_b = _reference(x, 3.0)
  np.testing.assert_allclose(np.asarray(params["B"]), want_b, rtol=0,
                             atol=2e-5 * np.abs(want_b).max())
  assert not np.allclose(want_b, _reference(train, 3.0), atol=1e-3)
  users = np.array([0, 12, 36, 3], np.int32)
  want = x.toarray()[users] @ want_b
  tol = dict(rtol=0, atol=1e-4 * np.abs(want).max())
  np.testing.assert_allclose(np.asarray(jax.jit(ease.score)(params, users)), want, **tol)
  np.testing.assert_allclose(np.asarray(ease.MODEL.score_fn(params)(users)), want, **tol)
  like = ease.params_like(config, train)
  assert jax.tree.map(lambda a: (a.shape, a.dtype), params) == jax.tree.map(
      lambda a: (a.shape, a.dtype), like)
  assert like["values"].shape == (train.nnz + low.nnz,)
