"""Liked ratings of 5 weighed more (`--high_rating_weight`): the triplet model, iALS, EASE."""

import collections
import dataclasses

import numpy as np
import pytest
import scipy.sparse as sp

from tripjax import errors
from tripjax import loop
from tripjax import models
from tripjax import sampling
from tripjax.config import TrainConfig
from tripjax.data import registry


def _groups(num_users=30, num_items=50, seed=0):
  """(train, strong, weak): random bool CSR [U, I]; strong a subset of train, weak disjoint."""
  rng = np.random.default_rng(seed)
  cells = rng.random((num_users, num_items))
  train = sp.csr_matrix(cells < 0.2)
  strong = sp.csr_matrix(cells < 0.08)
  weak = sp.csr_matrix((cells >= 0.2) & (cells < 0.3))
  return train, strong, weak


def _real(batches):
  """Host arrays of the real triplets: users[T], pos[T], weights[T]."""
  w = np.asarray(batches.weights).ravel()
  real = w > 0
  return np.asarray(batches.users).ravel()[real], np.asarray(batches.pos).ravel()[real], w[real]


@pytest.mark.parametrize("with_weak", [False, True])
@pytest.mark.parametrize("shuffle_on", ["host", "kernel"])
def test_every_strong_positive_trains_once_an_epoch_with_its_weight(shuffle_on, with_weak):
  train, strong, weak = _groups()
  extra = dict(weak_positives=weak, weak_weight=0.5) if with_weak else {}
  sampler = sampling.EpochSampler(train, 16, 3, 2, seed=1, shuffle_on=shuffle_on,
                                  strong_positives=strong, strong_weight=1.5, **extra)
  assert sampler.num_positives == train.nnz + (weak.nnz if with_weak else 0)
  users, pos, weights = _real(sampler.epoch(2))
  got = collections.Counter(zip(users.tolist(), pos.tolist(), weights.tolist()))
  want = collections.Counter()
  plain = sp.csr_matrix(train.toarray() & ~strong.toarray())
  for matrix, weight in ((plain, 1.0), (strong, 1.5)) + (((weak, 0.5),) if with_weak else ()):
    rows, cols = matrix.nonzero()
    want.update(zip(rows.tolist(), cols.tolist(), [weight] * matrix.nnz))
  assert got == want
  # The draw is the one without weights: the same triplets in the same order.
  same = sampling.EpochSampler(train, 16, 3, 2, seed=1, shuffle_on=shuffle_on, **extra)
  np.testing.assert_array_equal(np.asarray(sampler.epoch(2).neg), np.asarray(same.epoch(2).neg))
  np.testing.assert_array_equal(np.asarray(sampler.epoch(2).pos), np.asarray(same.epoch(2).pos))


@pytest.mark.parametrize("which, change, message", [
    ("outside", {}, "not training positives"),
    ("narrow", {}, "shape"),
    ("strong", dict(strong_weight=0.0), "strong_weight"),
    ("strong", dict(strong_weight=float("nan")), "strong_weight"),
    ("strong", dict(strong_weight=1e-50), "strong_weight must .* not 0 in float32"),
    ("strong", dict(draw_order="shuffled"), "draw_order='rows'"),
])
def test_rejects_strong_positives_it_cannot_weigh(which, change, message):
  train, strong, weak = _groups()
  matrix = {"outside": weak, "narrow": strong[:, :-1], "strong": strong}[which]
  with pytest.raises(errors.InvalidInput, match=message):
    sampling.EpochSampler(train, 8, **(dict(strong_positives=matrix, strong_weight=1.5) | change))


def test_high_ratings_are_the_liked_ratings_at_the_floor_or_above():
  config = TrainConfig(dataset="synthetic-tiny", threshold=4, min_user_positives=5)
  assert registry.load_high_ratings(config) is None
  high = registry.load_high_ratings(dataclasses.replace(config, high_rating_weight=1.5))
  ratings = registry._feedback(  # pylint: disable=protected-access
      "synthetic-tiny", None, False, config.data_seed, 4, 5, keep_ratings=True).ratings
  want = sp.csr_matrix(ratings.multiply(ratings >= 5), dtype=bool)
  assert high.nnz > 0 and (high != want).nnz == 0
  _, train, test = registry.load_split(config)
  liked = (train + test).astype(bool)
  assert high.multiply(liked).nnz == high.nnz < liked.nnz
  # A floor below the threshold is the threshold: every liked rating.
  every = registry.load_high_ratings(dataclasses.replace(config, high_rating_weight=1.5,
                                                         high_rating_floor=4))
  assert every.nnz == liked.nnz


def test_a_run_weighs_its_training_high_ratings(monkeypatch):
  # prepare_training gives the sampler the high ratings that are training positives.
  train, strong, weak = _groups()
  high = (strong + weak).astype(bool).tocsr()  # weak entries are not in train: left out
  monkeypatch.setattr(registry, "load_high_ratings",
                      lambda config: high if config.high_rating_weight != 1 else None)
  config = TrainConfig(dim=4, epochs=1, batch_size=64, high_rating_weight=2.0)
  sampler, _, _ = loop.prepare_training(config, train)
  weights = np.asarray(sampler.epoch(0).weights)
  assert weights.sum() == pytest.approx(train.nnz + strong.nnz)
  plain, _, _ = loop.prepare_training(dataclasses.replace(config, high_rating_weight=1.0), train)
  assert np.asarray(plain.epoch(0).weights).sum() == pytest.approx(train.nnz)


@pytest.mark.parametrize("settings, message", [
    (dict(high_rating_weight=1.5, high_rating_floor=3), "below --threshold=4"),
    (dict(high_rating_weight=1e-50), "is 0 in float32"),
    (dict(high_rating_weight=-1.0), "must be positive"),
    (dict(model="rp3beta", high_rating_weight=1.5), "setting of --model=triplet or ials or ease"),
])
def test_the_config_refuses_weights_it_cannot_train(settings, message):
  with pytest.raises(errors.InvalidInput, match=message):
    TrainConfig(**settings)
  TrainConfig(high_rating_weight=1.5, low_rating_weight=0.5, low_rating_item_grad=0.5)
  # The step tells low ratings by the sampler's mark, not by weight: equal weights are fine.
  TrainConfig(high_rating_weight=0.5, low_rating_weight=0.5, low_rating_item_grad=0.5)
  TrainConfig(high_rating_floor=3)  # unused at weight 1
  TrainConfig(model="ials", high_rating_weight=1.5)
  TrainConfig(model="ease", high_rating_weight=1.5, low_rating_weight=0.5, low_rating_floor=3)


def test_describe_names_the_weight_only_when_not_one():
  describe = models.get("triplet").describe
  assert "liked ratings" not in describe(TrainConfig())
  assert describe(TrainConfig(high_rating_weight=1.5)).endswith(
      "liked ratings >= 5 as positives of weight 1.5")
  ials = models.get("ials").describe
  assert "liked ratings" not in ials(TrainConfig(model="ials"))
  assert ials(TrainConfig(model="ials", high_rating_weight=2.0, low_rating_weight=0.5,
                          low_rating_floor=3)).endswith(
      "liked ratings >= 5 as observations of value 2, ratings in [3, 4) as observations of "
      "value 0.5")
  assert models.get("ease").describe(TrainConfig(model="ease", high_rating_weight=2.0)).endswith(
      "liked ratings >= 5 as entries of value 2")


def test_observations_put_high_ratings_at_their_weight():
  train, strong, weak = _groups()
  beyond = sp.csr_matrix(np.ones(train.shape, bool))  # covers test cells too: only train counts
  want = train.toarray() + 1.5 * strong.toarray()
  np.testing.assert_allclose(registry.observations(train, None, 0.0, strong, 2.5).toarray(), want)
  np.testing.assert_allclose(
      registry.observations(train, None, 0.0, beyond, 2.5).toarray(), 2.5 * train.toarray())
  np.testing.assert_allclose(registry.observations(train, weak, 0.25, strong, 2.5).toarray(),
                             want + 0.25 * weak.toarray())
  assert registry.observations(train, None, 0.0, strong, 2.5).dtype == np.float32
  assert registry.observations(train, None, 0.0, strong, 1.0).dtype == bool


def _liked_groups(num_users=200, num_items=40, seed=0):
  """(train, test, high): two groups of users and items (by parity); a user's 4 training
  ratings of 5 and 2 test items are of her own group, her 4 other training ratings (of 4) of
  the other group."""
  rng = np.random.default_rng(seed)
  own = np.stack([rng.permutation(np.arange(u % 2, num_items, 2)) for u in range(num_users)])
  other = np.stack([rng.permutation(np.arange(1 - u % 2, num_items, 2))
                    for u in range(num_users)])

  def cells(columns):
    matrix = np.zeros((num_users, num_items), bool)
    np.put_along_axis(matrix, columns, True, axis=1)
    return matrix

  test, high = cells(own[:, :2]), cells(own[:, 2:6])
  train = high | cells(other[:, :4])
  return sp.csr_matrix(train), sp.csr_matrix(test), sp.csr_matrix(high)


def test_ease_learns_what_the_high_ratings_say(monkeypatch):
  # Half of each user's liked training items are of her group (rated 5), half of the other
  # (rated 4); her test items are of her group. Weighing the 5s ten times more, EASE ranks them
  # above the other group's unseen items; weighing all alike, it cannot tell the groups.
  from tripjax import train as train_lib  # pylint: disable=g-import-not-at-top
  train, test, high = _liked_groups()
  monkeypatch.setattr(registry, "load_high_ratings",
                      lambda config: high if config.high_rating_weight != 1 else None)
  spec = models.get("ease")
  aucs = {}
  for weight in (1.0, 10.0):
    params = spec.fit(TrainConfig(model="ease", ease_lambda=50.0, high_rating_weight=weight),
                      train)
    aucs[weight] = train_lib.evaluate(spec.score_fn(params), train, test, 1024)["auc"]
  assert aucs[1.0] < 0.55 and aucs[10.0] > 0.6, aucs


def test_ials_fits_the_high_ratings_at_their_confidence(monkeypatch):
  # iALS's high ratings only change their confidence, which this fixture's ranking barely
  # shows; the fit must be the one on the matrix with the 5s at value h.
  train, _, high = _liked_groups()
  monkeypatch.setattr(registry, "load_high_ratings",
                      lambda config: high if config.high_rating_weight != 1 else None)
  spec = models.get("ials")
  plain = TrainConfig(model="ials", ials_factors=4, ials_alpha=2.0, ials_reg=1.0,
                      ials_iterations=3)
  weighted = spec.fit(dataclasses.replace(plain, high_rating_weight=3.0), train)
  valued = spec.fit(plain, registry.observations(train, None, 0.0, high, 3.0))
  for name in ("user", "item"):
    np.testing.assert_allclose(weighted[name], valued[name], rtol=1e-5, atol=1e-6)
  assert not np.allclose(weighted["item"], spec.fit(plain, train)["item"], atol=1e-3)



def test_the_fingerprint_covers_the_high_ratings_only_when_weighed():
  from tripjax import workdir as workdir_lib  # pylint: disable=g-import-not-at-top
  train, strong, weak = _groups()
  test = sp.csr_matrix(train.shape, dtype=bool)
  plain = workdir_lib.data_fingerprint(train, test)
  with_high = workdir_lib.data_fingerprint(train, test, None, strong)
  assert "high_ratings" not in plain and with_high["high_ratings"] == strong.nnz
  assert with_high["sha256"] != plain["sha256"]
  # The same cells as low ratings or as high ones are different runs.
  assert workdir_lib.data_fingerprint(train, test, strong)["sha256"] != with_high["sha256"]
  fewer = strong.tolil()
  fewer[strong.nonzero()[0][0], strong.nonzero()[1][0]] = False
  fewer = sp.csr_matrix(fewer)
  fewer.eliminate_zeros()
  assert workdir_lib.data_fingerprint(train, test, None, fewer)["sha256"] != with_high["sha256"]
  assert workdir_lib.data_fingerprint(train, test, weak, strong)["sha256"] not in {
      with_high["sha256"], workdir_lib.data_fingerprint(train, test, weak)["sha256"]}


def test_resuming_on_other_high_ratings_is_refused(tmp_path, monkeypatch):
  from tripjax import train as train_lib  # pylint: disable=g-import-not-at-top
  config = TrainConfig(dataset="synthetic-tiny", dim=8, batch_size=64, epochs=2,
                       num_negatives=2, steps_per_dispatch=8, high_rating_weight=2.0)
  assert train_lib.train_and_evaluate(config, tmp_path / "run", stop_after_epoch=1) == {
      "finished": False, "epoch": 1}
  high = registry.load_high_ratings(config).tolil()
  row, col = registry.training_high_ratings(config, registry.load_split(config)[1]).nonzero()
  high[row[0], col[0]] = False  # a 5 of the training data became a 4
  high = sp.csr_matrix(high)
  high.eliminate_zeros()
  monkeypatch.setattr(registry, "load_high_ratings", lambda config: high)
  with pytest.raises(errors.WorkdirError, match="changed since it trained.*high_ratings"):
    train_lib.train_and_evaluate(config, tmp_path / "run")


def test_a_run_recorded_before_the_fingerprint_covered_high_ratings_resumes(tmp_path):
  import json  # pylint: disable=g-import-not-at-top
  from tripjax import train as train_lib  # pylint: disable=g-import-not-at-top
  from tripjax import workdir as workdir_lib  # pylint: disable=g-import-not-at-top
  config = TrainConfig(dataset="synthetic-tiny", dim=8, batch_size=64, epochs=2,
                       num_negatives=2, steps_per_dispatch=8, high_rating_weight=2.0)
  whole = train_lib.train_and_evaluate(config, tmp_path / "whole")
  train_lib.train_and_evaluate(config, tmp_path / "run", stop_after_epoch=1)
  data_file = tmp_path / "run" / workdir_lib.DATA_FILE
  recorded = json.loads(data_file.read_text())
  _, train, test = registry.load_split(config)
  older = workdir_lib.data_fingerprint(train, test)  # what such a run wrote
  assert recorded["high_ratings"] > 0 and older != recorded
  data_file.write_text(json.dumps(older))
  assert train_lib.train_and_evaluate(config, tmp_path / "run")["model"] == whole["model"]
  # Only its own data: an older record of other positives is still refused.
  other = dict(older, sha256="0" * 64)
  data_file.write_text(json.dumps(other))
  with pytest.raises(errors.WorkdirError, match="changed since it trained"):
    train_lib.restore_run(tmp_path / "run")
