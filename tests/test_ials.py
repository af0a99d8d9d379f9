"""Tests of tripjax.models.ials against dense float64 numpy solves of the normal equations."""

import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.sparse as sp

from tripjax.data import registry
from tripjax.models import ials


def _config(**overrides):
  values = dict(ials_factors=6, ials_alpha=10.0, ials_reg=0.1, ials_iterations=3, seed=0,
                ials_solver="cholesky", ials_cg_steps=3)
  values.update(overrides)
  return types.SimpleNamespace(**values)


def _random_train(num_users=23, num_items=17, density=0.25, seed=0):
  """A random bool CSR, with one empty user row and one empty item column."""
  rng = np.random.default_rng(seed)
  dense = rng.random((num_users, num_items)) < density
  dense[3] = False
  dense[:, 5] = False
  dense[7] = True  # a full row: the widest bucket.
  dense[7, 5] = False
  return sp.csr_matrix(dense)


def _dense_solve(other, dense, alpha, reg):
  """float64 reference: rows' exact solves with the dense confidence matrix, one by one.

  `dense` holds each observation's value r: confidence 1 + alpha r, preference 1 where r > 0.
  """
  other = np.asarray(other, np.float64)
  conf = 1.0 + alpha * dense
  out = np.zeros((dense.shape[0], other.shape[1]))
  for r in range(dense.shape[0]):
    a = other.T @ (conf[r][:, None] * other) + reg * np.eye(other.shape[1])
    out[r] = np.linalg.solve(a, other.T @ (conf[r] * (dense[r] > 0)))
  return out


def _weighted_train(seed=0):
  """`_random_train`'s pattern with a third of its entries at value 0.3 (low ratings)."""
  train = sp.csr_matrix(_random_train(seed=seed), dtype=np.float32)
  rng = np.random.default_rng(seed + 1)
  train.data[rng.random(train.nnz) < 1 / 3] = 0.3
  return train


def _dense_loss(params, dense, alpha, reg):
  x, y = (np.asarray(params[k], np.float64) for k in ("user", "item"))
  conf = 1.0 + alpha * dense
  return np.sum(conf * (dense - x @ y.T) ** 2) + reg * (np.sum(x * x) + np.sum(y * y))


@pytest.mark.parametrize("alpha,reg", [(0.0, 0.1), (10.0, 0.1), (40.0, 1.0)])
def test_user_and_item_sweeps_match_dense_solves(alpha, reg):
  train = _random_train()
  dense = train.toarray().astype(np.float64)
  params = ials.init(_config(ials_alpha=alpha, ials_reg=reg), *train.shape, jax.random.key(1))
  params["item"] = params["item"] * 30  # away from the tiny init, so the Gramian matters.
  sweep = jax.jit(ials.sweep, static_argnums=5)
  users = sweep(params["item"], ials.buckets(train), params["user"], params["alpha"],
                params["reg"])
  want = _dense_solve(params["item"], dense, alpha, reg)
  np.testing.assert_allclose(users, want, rtol=1e-4, atol=1e-5)
  np.testing.assert_array_equal(users[3], 0.0)  # empty row.
  items = sweep(users, ials.buckets(train.T.tocsr()), params["item"], params["alpha"],
                params["reg"])
  np.testing.assert_allclose(items, _dense_solve(users, dense.T, alpha, reg), rtol=1e-4,
                             atol=1e-5)


def _dense_cg(other, dense, start, alpha, reg, steps):
  """float64 reference: implicit's conjugate gradient (`_least_squares_cg`), row by row."""
  other = np.asarray(other, np.float64)
  out = np.array(start, np.float64)
  for r in range(dense.shape[0]):
    a = other.T @ ((1.0 + alpha * dense[r])[:, None] * other) + reg * np.eye(other.shape[1])
    x = out[r]
    res = other.T @ ((1.0 + alpha * dense[r]) * (dense[r] > 0)) - a @ x
    p, rr = res.copy(), res @ res
    for _ in range(steps):
      if rr < 1e-20:
        break
      ap = a @ p
      step = rr / (p @ ap)
      x = x + step * p
      res = res - step * ap
      rr_new = res @ res
      p = res + rr_new / rr * p
      rr = rr_new
    out[r] = x
  return out


@pytest.mark.parametrize("steps", [1, 3])
def test_cg_sweep_matches_reference_cg(steps):
  train = _random_train()
  dense = train.toarray().astype(np.float64)
  params = ials.init(_config(), *train.shape, jax.random.key(2))
  params["item"] = params["item"] * 30
  start = params["user"] * 30
  users = ials.sweep(params["item"], ials.buckets(train), start, params["alpha"],
                     params["reg"], cg_steps=steps)
  want = _dense_cg(params["item"], dense, start, 10.0, 0.1, steps)
  np.testing.assert_allclose(users, want, rtol=2e-3, atol=2e-4)
  exact = _dense_solve(params["item"], dense, 10.0, 0.1)
  assert not np.allclose(users, exact, atol=1e-3)  # a few steps are not the solve...
  many = ials.sweep(params["item"], ials.buckets(train), start, params["alpha"], params["reg"],
                    cg_steps=12)
  np.testing.assert_allclose(many, exact, rtol=1e-3, atol=1e-4)  # ...2 D steps are.


@pytest.mark.parametrize("cg_steps", [0, 2])
def test_sweeps_weigh_each_observation_by_its_value(cg_steps):
  # Observations of value r (low ratings) get confidence 1 + alpha r and preference 1; the
  # same sweep with every value 1 is a different solve.
  train = _weighted_train()
  dense = train.toarray().astype(np.float64)
  params = ials.init(_config(), *train.shape, jax.random.key(1))
  other, start = params["item"] * 30, params["user"] * 30
  for matrix in (train, train.T.tocsr()):
    got = ials.sweep(other, ials.buckets(matrix), start, params["alpha"], params["reg"],
                     cg_steps=cg_steps)
    want = (_dense_cg(other, matrix.toarray().astype(np.float64), start, 10.0, 0.1, cg_steps)
            if cg_steps else _dense_solve(other, matrix.toarray().astype(np.float64), 10.0, 0.1))
    np.testing.assert_allclose(got, want, rtol=2e-3, atol=2e-4)
    flat = _dense_solve(other, (matrix.toarray() > 0).astype(np.float64), 10.0, 0.1)
    assert not np.allclose(got, flat, atol=1e-2)
    other, start = got, params["item"] * 30
  rows, cols = train.nonzero()
  values = np.asarray(train[rows, cols]).ravel().astype(np.float32)
  np.testing.assert_allclose(float(ials.loss(params, rows, cols, values)),
                             _dense_loss_weighted(params, dense, 10.0, 0.1), rtol=1e-5)


def _dense_loss_weighted(params, dense, alpha, reg):
  x, y = (np.asarray(params[k], np.float64) for k in ("user", "item"))
  conf = 1.0 + alpha * dense
  return np.sum(conf * ((dense > 0) - x @ y.T) ** 2) + reg * (np.sum(x * x) + np.sum(y * y))


def test_cg_fit_reaches_the_exact_fit_loss():
  train = _random_train()
  rows, cols = train.nonzero()
  exact = ials.fit(_config(ials_iterations=30, ials_solver="cholesky", ials_cg_steps=3), train)
  cg = ials.fit(_config(ials_iterations=30, ials_solver="cg", ials_cg_steps=3), train)
  first = ials.fit(_config(ials_iterations=1, ials_solver="cg", ials_cg_steps=3), train)
  want = float(ials.loss(exact, rows, cols))
  assert float(ials.loss(first, rows, cols)) > 3 * want
  # Both are still descending slowly from the small init (at 300 sweeps: 40.3 and 41.3).
  np.testing.assert_allclose(float(ials.loss(cg, rows, cols)), want, rtol=0.1)


def test_buckets_cover_every_row_once_with_its_items():
  train = _random_train(num_users=40, num_items=30, density=0.3, seed=3)
  seen = {}
  for rows, items, mask in ials.buckets(train):
    assert items.shape == mask.shape and items.shape[0] == rows.shape[0]
    assert np.asarray(mask).sum(1).max() > items.shape[1] // 2 or items.shape[1] == 1
    for r, it, m in zip(np.asarray(rows), np.asarray(items), np.asarray(mask)):
      if r == train.shape[0]:  # padding of a bucket's last block
        assert not m.any()
        continue
      assert r not in seen
      seen[r] = sorted(it[m > 0])
  assert sorted(seen) == list(range(train.shape[0]))
  for r, its in seen.items():
    assert its == sorted(train[r].indices)


def test_small_blocks_pad_to_one_shape_per_width(monkeypatch):
  monkeypatch.setattr(ials, "_SLOTS_PER_BLOCK", 16)
  train = _random_train(num_users=40, num_items=30, density=0.3, seed=3)
  blocks = ials.buckets(train)
  shapes = {}
  for rows, items, _ in blocks:
    shapes.setdefault(items.shape[1], set()).add(items.shape)
  assert all(len(s) == 1 for s in shapes.values()) and len(blocks) > len(shapes)
  params = ials.init(_config(), *train.shape, jax.random.key(1))
  params["item"] = params["item"] * 30
  users = ials.sweep(params["item"], blocks, params["user"], params["alpha"], params["reg"])
  np.testing.assert_allclose(users, _dense_solve(params["item"], train.toarray().astype(float),
                                                 10.0, 0.1), rtol=1e-4, atol=1e-5)


def test_loss_matches_dense_and_does_not_increase():
  train = _random_train()
  dense = train.toarray().astype(np.float64)
  config = _config(ials_iterations=1)
  rows, cols = train.nonzero()
  params = ials.init(config, *train.shape)
  losses = [float(ials.loss(params, rows, cols))]
  np.testing.assert_allclose(losses[0], _dense_loss(params, dense, 10.0, 0.1), rtol=1e-5)
  for _ in range(6):
    params = ials.fit(config, train, params=params)
    losses.append(float(ials.loss(params, rows, cols)))
    np.testing.assert_allclose(losses[-1], _dense_loss(params, dense, 10.0, 0.1), rtol=1e-4)
  assert all(b <= a * (1 + 1e-5) for a, b in zip(losses, losses[1:])), losses
  assert losses[-1] < 0.5 * losses[1], losses


def test_fit_is_the_sweeps_and_deterministic():
  train = _random_train()
  config = _config(ials_iterations=2)
  params = ials.fit(config, train, key=jax.random.key(4))
  again = ials.fit(config, train, key=jax.random.key(4))
  np.testing.assert_array_equal(params["user"], again["user"])
  start = ials.init(config, *train.shape, jax.random.key(4))
  x, y = start["user"], start["item"]
  for _ in range(2):
    x = ials.sweep(y, ials.buckets(train), x, start["alpha"], start["reg"])
    y = ials.sweep(x, ials.buckets(train.T.tocsr()), y, start["alpha"], start["reg"])
  np.testing.assert_allclose(params["user"], x, rtol=1e-4, atol=1e-4)  # jit vs eager f32.
  np.testing.assert_allclose(params["item"], y, rtol=1e-4, atol=1e-4)
  assert params["user"].shape == (23, 6) and params["item"].shape == (17, 6)
  like = ials.MODEL.params_like(config, train)
  assert jax.tree.map(lambda a: (a.shape, a.dtype), like) == jax.tree.map(
      lambda a: (a.shape, a.dtype), params)


def test_fold_in_of_a_known_user_is_her_own_solve():
  train = _random_train()
  params = ials.fit(_config(), train)
  user = 2
  liked = list(train[user].indices) + [int(train[user].indices[0])]  # a duplicate is ignored.
  vec = ials.MODEL.fold_in_user(params, liked, jax.random.key(0), steps=10, margin=0.5)
  want = _dense_solve(params["item"], train[user].toarray().astype(np.float64), 10.0, 0.1)[0]
  np.testing.assert_allclose(vec, want, rtol=1e-4, atol=1e-5)
  # The next user sweep would give the same row.
  np.testing.assert_allclose(
      vec, ials.sweep(params["item"], ials.buckets(train), params["user"], params["alpha"],
                      params["reg"])[user], rtol=1e-5, atol=1e-6)
  with pytest.raises(ValueError, match="at least one liked item"):
    ials.fold_in(params, [], jax.random.key(0))


def test_score_and_item_vectors():
  train = _random_train()
  params = ials.fit(_config(), train)
  users = jnp.array([0, 5, 2], jnp.int32)
  scores = jax.jit(ials.score)(params, users)
  np.testing.assert_allclose(
      scores, np.asarray(params["user"], np.float64)[[0, 5, 2]] @ np.asarray(params["item"]).T,
      rtol=1e-5, atol=1e-6)
  assert ials.MODEL.item_vectors(params) is params["item"]
  assert "alpha 10" in ials.MODEL.describe(_config())


def test_beats_popularity_on_synthetic_tiny(against_popularity):
  _, train, test = registry.prepare("synthetic-tiny")
  # Few factors and a strong L2 suit 100 users (16 factors, reg 0.1 overfit: AUC 0.742 vs 0.737).
  config = _config(ials_factors=8, ials_alpha=1.0, ials_reg=10.0, ials_iterations=10)
  params = ials.MODEL.fit(config, train, key=jax.random.key(0))
  got, base = against_popularity(ials.MODEL.score_fn(params), train, test)
  assert got["auc"] > base["auc"] + 0.05, (got, base)  # 0.843, 0.737
  assert got["ndcg@10"] > base["ndcg@10"], (got, base)  # 0.452, 0.314
