"""Users weighed by their triplets ** -b in the triplet loss (`--user_weight_exponent`)."""

import dataclasses
import warnings

import jax
import numpy as np
import pytest
import scipy.sparse as sp

from tripjax import errors
from tripjax import loop
from tripjax import models
from tripjax import sampling
from tripjax.config import TrainConfig
from tripjax.data import registry


def _groups(num_users=30, num_items=60, seed=0):
  """(train, strong, weak): bool CSR [U, I] with rows of very different lengths; strong a
  subset of train, weak disjoint from it."""
  rng = np.random.default_rng(seed)
  cells = rng.random((num_users, num_items))
  density = np.linspace(0.05, 0.5, num_users)[:, None]  # light users to heavy ones
  train = sp.csr_matrix(cells < density)
  strong = sp.csr_matrix(cells < density / 3)
  weak = sp.csr_matrix((cells >= density) & (cells < density + 0.1))
  return train, strong, weak


def _real(batches):
  """Host arrays of the real triplets: users[T], pos[T], weights[T], weak[T] (or None)."""
  w = np.asarray(batches.weights).ravel()
  real = w > 0
  weak = None if batches.weak is None else np.asarray(batches.weak).ravel()[real]
  return (np.asarray(batches.users).ravel()[real], np.asarray(batches.pos).ravel()[real],
          w[real], weak)


@pytest.mark.parametrize("shuffle_on", ["host", "device", "kernel"])
@pytest.mark.parametrize("exponent", [0.5, 1.0])
def test_each_users_triplets_weigh_their_count_to_the_minus_b(shuffle_on, exponent):
  train, _, _ = _groups()
  sampler = sampling.EpochSampler(train, 16, 3, 2, seed=1, shuffle_on=shuffle_on,
                                  user_weight_exponent=exponent)
  users, pos, weights, weak = _real(sampler.epoch(2))
  assert weak is None and len(users) == train.nnz
  counts = np.diff(train.indptr)
  want = counts[users] ** -exponent
  np.testing.assert_allclose(weights, want / want.mean(), rtol=1e-6)
  assert weights.mean() == pytest.approx(1.0, rel=1e-6)
  per_user = np.bincount(users, weights, minlength=train.shape[0])
  # A user's share of the loss goes as t_u ** (1 - b): every user alike at b = 1.
  np.testing.assert_allclose(per_user / per_user.sum(),
                             counts ** (1 - exponent) / np.sum(counts ** (1 - exponent)),
                             rtol=1e-5)
  assert counts.max() > 4 * counts.min()  # the fixture's users differ, so the weights do
  # The draw is the one without user weights: the same triplets in the same order.
  plain = sampling.EpochSampler(train, 16, 3, 2, seed=1, shuffle_on=shuffle_on)
  for name in ("users", "pos", "neg"):
    np.testing.assert_array_equal(np.asarray(getattr(sampler.epoch(2), name)),
                                  np.asarray(getattr(plain.epoch(2), name)))


@pytest.mark.parametrize("shuffle_on", ["host", "kernel"])
def test_user_weights_multiply_the_kinds_weights_and_keep_the_weak_mark(shuffle_on):
  train, strong, weak = _groups()
  sampler = sampling.EpochSampler(train, 16, 3, 2, seed=1, shuffle_on=shuffle_on,
                                  weak_positives=weak, weak_weight=0.5,
                                  strong_positives=strong, strong_weight=1.5,
                                  user_weight_exponent=0.5)
  users, pos, weights, marked = _real(sampler.epoch(0))
  is_weak = weak.toarray()[users, pos]
  is_strong = strong.toarray()[users, pos]
  np.testing.assert_array_equal(marked, is_weak)
  triplets_per_user = np.diff(train.indptr) + np.diff(weak.indptr)  # t_u: weak ones included
  by_user = triplets_per_user[users] ** -0.5
  kind = np.where(is_weak, 0.5, np.where(is_strong, 1.5, 1.0))
  np.testing.assert_allclose(weights, kind * by_user / by_user.mean(), rtol=1e-6)
  # A process's share of the columns is those columns of the whole draw, weights and marks.
  whole, share = sampler.epoch(1), sampler.epoch(1, columns=np.array([2, 7, 13]))
  jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a)[:, :, [2, 7, 13]], b),
               whole, share)
  assert share.weak is not None and np.asarray(share.weak).any()


@pytest.mark.parametrize("exponent", [-0.5, float("nan"), float("inf")])
def test_the_sampler_refuses_an_exponent_that_is_not_a_number_at_least_0(exponent):
  train, _, _ = _groups()
  with pytest.raises(errors.InvalidInput, match="user_weight_exponent"):
    sampling.EpochSampler(train, 8, user_weight_exponent=exponent)


def test_large_exponents_weigh_in_logs_and_an_empty_row_weighs_nothing():
  # Users from 1 to ~30 triplets and one with none: b = 2 gives t ** -2 / mean without a
  # warning (t ** -b of an empty row divides by 0); b = 300 would leave the heavy users a
  # float32 weight of 0 (and t ** -300 underflows float64 to NaN weights): refused.
  train, _, _ = _groups()
  train = sp.csr_matrix(sp.vstack([train, sp.csr_matrix((1, train.shape[1]), dtype=bool)]))
  with warnings.catch_warnings():
    warnings.simplefilter("error")
    sampler = sampling.EpochSampler(train, 16, 3, 2, seed=1, user_weight_exponent=2.0)
  users, _, weights, _ = _real(sampler.epoch(0))
  want = np.diff(train.indptr)[users] ** -2.0
  np.testing.assert_allclose(weights, want / want.mean(), rtol=1e-5)
  with pytest.raises(errors.InvalidInput, match="smaller --user_weight_exponent"):
    sampling.EpochSampler(train, 16, 3, 2, seed=1, user_weight_exponent=300.0)


def test_the_draw_of_older_runs_has_no_user_weights():
  train, _, _ = _groups()
  with pytest.raises(errors.InvalidInput, match="draw_order='rows'"):
    sampling.EpochSampler(train, 8, draw_order="shuffled", user_weight_exponent=0.5)


@pytest.mark.parametrize("settings, message", [
    (dict(user_weight_exponent=-0.1), "must be >= 0"),
    (dict(user_weight_exponent=2.5), "must be <= 2"),
    (dict(model="ials", user_weight_exponent=0.5), "setting of --model=triplet"),
])
def test_the_config_refuses_exponents_it_cannot_train(settings, message):
  with pytest.raises(errors.InvalidInput, match=message):
    TrainConfig(**settings)
  TrainConfig(user_weight_exponent=0.5, optimizer="sparse_sgd", fused_cpu_step=True)


def test_a_run_trains_with_its_users_weights(monkeypatch):
  # loop.prepare_training hands the exponent to the sampler; a fit with it differs from one
  # without, and the same flags and seed give the same tables.
  train, _, weak = _groups(num_users=40, num_items=50)
  monkeypatch.setattr(registry, "load_low_ratings",
                      lambda config: weak if config.low_rating_weight else None)
  config = TrainConfig(dim=8, epochs=2, batch_size=32, learning_rate=0.05, seed=3,
                       low_rating_weight=0.5, low_rating_item_grad=0.5,
                       user_weight_exponent=1.0)
  sampler, _, _ = loop.prepare_training(config, train)
  users, _, weights, marked = _real(sampler.epoch(0))
  per_user = np.bincount(users, weights / np.where(marked, 0.5, 1.0))
  np.testing.assert_allclose(per_user, per_user.mean(), rtol=1e-5)  # b = 1: users alike
  tables = lambda c: jax.tree.map(np.asarray, loop.fit(c, train).state.params)
  weighted, again = tables(config), tables(config)
  plain = tables(dataclasses.replace(config, user_weight_exponent=0.0))
  jax.tree.map(np.testing.assert_array_equal, weighted, again)
  assert np.abs(weighted["user"] - plain["user"]).max() > 1e-3


def test_describe_names_the_exponent():
  describe = models.get("triplet").describe
  assert "users weighted" not in describe(TrainConfig())
  assert describe(TrainConfig(user_weight_exponent=0.25)).endswith(
      "users weighted by their triplets ** -0.25")
