"""Tests for tripjax.baselines: random and popularity score functions, top-k overlap, ML-100K."""

import logging

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.sparse as sp

from tripjax import baselines
from tripjax import data
from tripjax import metrics


def test_random_scores_deterministic_per_user_and_seed():
  fn = baselines.random_scores(50, seed=3)
  a = np.asarray(fn(jnp.array([0, 1, 2, 7], jnp.int32)))
  b = np.asarray(fn(jnp.array([7, 2], jnp.int32)))  # same users in another block
  assert a.shape == (4, 50) and a.dtype == np.float32
  np.testing.assert_array_equal(a[[3, 2]], b)
  np.testing.assert_array_equal(a, np.asarray(baselines.random_scores(50, 3)(jnp.array(
      [0, 1, 2, 7]))))
  assert not np.array_equal(a, np.asarray(baselines.random_scores(50, 4)(jnp.array([0, 1, 2, 7]))))
  assert not np.array_equal(a[0], a[1])
  assert 0 <= a.min() and a.max() < 1


def test_popularity_scores_equal_train_counts():
  rng = np.random.default_rng(0)
  dense = rng.random((30, 12)) < 0.3
  fn = baselines.popularity_scores(sp.csr_matrix(dense))
  got = np.asarray(fn(jnp.array([4, 0, 29], jnp.int32)))
  np.testing.assert_array_equal(got, np.tile(dense.sum(0), (3, 1)))


def _set_overlap(a, b, k):
  return np.mean([len(set(x[:k]) - {-1} & set(y[:k])) for x, y in zip(a, b)])


def test_baselines_of_the_same_shape_share_one_compiled_program(caplog):
  # One popularity (and random) baseline per evaluated run: their item counts are arguments,
  # not constants baked into a new program each time.
  rng = np.random.default_rng(3)
  trains = [sp.csr_matrix(rng.random((9, 23)) < p) for p in (0.3, 0.6)]
  users = jnp.arange(4)
  first = baselines.popularity_scores(trains[0])(users)
  baselines.random_scores(23, seed=0)(users)
  with jax.log_compiles(True), caplog.at_level(logging.WARNING):
    second = baselines.popularity_scores(trains[1])(users)
    other_seed = baselines.random_scores(23, seed=1)(users)
  assert not [r for r in caplog.records if "Finished XLA compilation" in r.getMessage()]
  np.testing.assert_array_equal(second[0], baselines.item_counts(trains[1]))
  assert not np.array_equal(first, second)
  assert not np.array_equal(other_seed, baselines.random_scores(23, seed=0)(users))


def test_top_k_overlap_matches_sets():
  rng = np.random.default_rng(1)
  a = np.stack([rng.permutation(40)[:25] for _ in range(17)]).astype(np.int32)
  b = np.stack([rng.permutation(40)[:25] for _ in range(17)]).astype(np.int32)
  a[2, 20:] = -1
  b[2, 18:] = -1  # empty slots never count as common items
  for k in (1, 5, 20):
    assert baselines.top_k_overlap(a, b, k) == pytest.approx(_set_overlap(a, b, k))
  assert baselines.top_k_overlap(a, a, 20) == pytest.approx(np.mean((a[:, :20] >= 0).sum(1)))
  with pytest.raises(ValueError, match="k=26"):
    baselines.top_k_overlap(a, b, 26)
  with pytest.raises(ValueError, match="users"):
    baselines.top_k_overlap(a, b[:3], 5)


def test_top_k_overlap_accepts_eval_results():
  rng = np.random.default_rng(2)
  train = sp.csr_matrix(rng.random((20, 30)) < 0.2)
  test = sp.csr_matrix((rng.random((20, 30)) < 0.2) & ~train.toarray())
  pop = metrics.evaluate(baselines.popularity_scores(train), train, test, ks=(5,))
  rnd = metrics.evaluate(baselines.random_scores(30, 0), train, test, ks=(5,))
  assert baselines.top_k_overlap(pop, rnd, 5) == pytest.approx(
      _set_overlap(pop.top_items, rnd.top_items, 5))


def test_ml100k_random_near_half_popularity_clearly_above(data_dir):
  _, train, test = data.prepare("ml-100k", data_dir=data_dir, download=False, threshold=4,
                                min_user_positives=20, test_per_user=10, split_seed=0)
  rnd = metrics.evaluate(baselines.random_scores(train.shape[1], 0), train, test, ks=(20,))
  pop = metrics.evaluate(baselines.popularity_scores(train), train, test, ks=(20,))
  assert abs(rnd.means["auc"] - 0.5) < 0.02
  assert pop.means["auc"] > 0.8  # the lab reports ~0.85
  assert pop.means["precision@20"] > 3 * rnd.means["precision@20"]
  assert rnd.users_skipped == pop.users_skipped == 0
