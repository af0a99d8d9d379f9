"""Ratings below the threshold as weak positives of the triplet model (`--low_rating_weight`)."""

import collections
import dataclasses
import inspect

import jax
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from tripjax import errors
from tripjax import loop
from tripjax import model
from tripjax import sampling
from tripjax import train as train_lib
from tripjax import workdir as workdir_lib
from tripjax.config import TrainConfig
from tripjax.data import feedback
from tripjax.data import registry


def _disjoint(num_users=30, num_items=50, seed=0):
  """(train, weak): disjoint random bool CSR [U, I], every row with a negative left."""
  rng = np.random.default_rng(seed)
  cells = rng.random((num_users, num_items))
  train = sp.csr_matrix(cells < 0.15)
  weak = sp.csr_matrix((cells >= 0.15) & (cells < 0.3))
  return train, weak


def _triplets(batches):
  """Host arrays of the real triplets: users[T], pos[T], neg[T, n], weights[T]."""
  w = np.asarray(batches.weights).ravel()
  real = w > 0
  n = batches.neg.shape[-1]
  return (np.asarray(batches.users).ravel()[real], np.asarray(batches.pos).ravel()[real],
          np.asarray(batches.neg).reshape(-1, n)[real], w[real])


@pytest.mark.parametrize("shuffle_on", ["host", "device", "kernel"])
@pytest.mark.parametrize("exponent", [0.0, 0.5])
def test_every_weak_positive_trains_once_an_epoch_with_its_weight(shuffle_on, exponent):
  train, weak = _disjoint()
  sampler = sampling.EpochSampler(train, 16, 3, 2, seed=1, shuffle_on=shuffle_on,
                                  negative_exponent=exponent, weak_positives=weak,
                                  weak_weight=0.25)
  assert sampler.num_positives == train.nnz + weak.nnz and sampler.num_weak == weak.nnz
  users, pos, neg, weights = _triplets(sampler.epoch(3))
  # Each entry once; the weak ones weigh 0.25, the others 1; padding slots 0.
  got = collections.Counter(zip(users.tolist(), pos.tolist(), weights.tolist()))
  want = collections.Counter()
  for matrix, weight in ((train, 1.0), (weak, 0.25)):
    rows, cols = matrix.nonzero()
    want.update(zip(rows.tolist(), cols.tolist(), [weight] * matrix.nnz))
  assert got == want
  assert np.asarray(sampler.epoch(3).weights).sum() == pytest.approx(train.nnz + 0.25 * weak.nnz)
  # Negatives: never a liked item of the row; the weak items stay among them.
  dense, weak_dense = train.toarray(), weak.toarray()
  assert not dense[users[:, None], neg].any()
  assert weak_dense[users[:, None], neg].any()


def test_the_weights_follow_the_pattern_not_the_stored_values():
  train, weak = _disjoint()
  scaled = train.astype(np.float32) * 2.0
  sampler = sampling.EpochSampler(scaled, 16, weak_positives=weak.astype(np.float32) * 0.5,
                                  weak_weight=0.25)
  _, _, _, weights = _triplets(sampler.epoch(0))
  assert (weights == 1.0).sum() == train.nnz and (weights == 0.25).sum() == weak.nnz


def test_weak_positives_leave_the_negatives_distribution_alone():
  train, weak = _disjoint()
  plain = sampling.EpochSampler(train, 16, negative_exponent=0.5)
  with_weak = sampling.EpochSampler(train, 16, negative_exponent=0.5, weak_positives=weak,
                                    weak_weight=0.5)
  np.testing.assert_array_equal(plain.negative_weights, with_weak.negative_weights)
  # The triplets of the liked positives draw from the same search arrays.
  for a, b in zip(plain.search_arrays()[:4], with_weak.search_arrays()[:4]):
    jax.tree.map(np.testing.assert_array_equal, a, b)


@pytest.mark.parametrize("shuffle_on", ["host", "kernel"])
def test_a_share_of_the_columns_keeps_the_weak_weights(shuffle_on):
  train, weak = _disjoint()
  sampler = sampling.EpochSampler(train, 16, 3, 2, seed=3, shuffle_on=shuffle_on,
                                  weak_positives=weak, weak_weight=0.3)
  whole = sampler.epoch(1)
  share = sampler.epoch(1, columns=np.array([1, 5, 9]))
  jax.tree.map(  # the same fields, None (no weak positives) in both or neither
      lambda all_of_it, part: np.testing.assert_array_equal(
          np.asarray(all_of_it)[:, :, [1, 5, 9]], part), whole, share)
  assert np.isclose(np.asarray(share.weights), 0.3).any()


@pytest.mark.parametrize("change, message", [
    (lambda train, weak: (train, weak[:, :-1]), "shape"),
    (lambda train, weak: (train, weak + train), "overlaps"),
])
def test_rejects_weak_positives_it_cannot_train(change, message):
  train, weak = change(*_disjoint())
  with pytest.raises(errors.InvalidInput, match=message):
    sampling.EpochSampler(train, 8, weak_positives=weak, weak_weight=0.5)


@pytest.mark.parametrize("weight", [0.0, -1.0, float("nan"), float("inf"), 1e-50])
def test_rejects_weak_weights_that_are_not_positive_numbers(weight):
  train, weak = _disjoint()
  with pytest.raises(errors.InvalidInput, match="weak_weight"):
    sampling.EpochSampler(train, 8, weak_positives=weak, weak_weight=weight)


def test_the_older_draw_order_has_no_weak_positives():
  train, weak = _disjoint()
  with pytest.raises(errors.InvalidInput, match="draw_order"):
    sampling.EpochSampler(train, 8, draw_order="shuffled", weak_positives=weak)


def _frames():
  ratings = pd.DataFrame({
      "user_id": np.array([1, 1, 1, 1, 2, 2, 2, 3], np.int64),
      "item_id": np.array([10, 11, 12, 13, 10, 12, 14, 11], np.int64),
      "rating": np.array([5, 3, 4, 1, 2, 5, 4, 5], np.float32),
      "timestamp": np.arange(8, dtype=np.int64)})
  items = pd.DataFrame({"item_id": np.arange(10, 16, dtype=np.int64),
                        "title": [f"m{i}" for i in range(6)], "genres": [[] for _ in range(6)]})
  return ratings, items


def test_low_ratings_are_the_kept_users_ratings_below_the_threshold():
  dataset = feedback.implicit_feedback(*_frames(), threshold=4, min_user_positives=2,
                                       keep_ratings=True)
  # Kept: users 1 and 2 (two positives each); items with a positive: 10, 12, 14 (11's only
  # positive is user 3's, dropped; 13 has none).
  assert dataset.user_ids.tolist() == [1, 2] and dataset.item_ids.tolist() == [10, 12, 14]
  low = registry.low_ratings(dataset, 4)
  assert low.dtype == bool and low.toarray().tolist() == [[False, False, False],
                                                          [True, False, False]]
  assert not low.multiply(dataset.matrix).nnz
  assert registry.low_ratings(dataset, 4, floor=2).nnz == 1  # user 2's 2 stays
  assert registry.low_ratings(dataset, 4, floor=3).nnz == 0
  cold = dataclasses.replace(dataset, cold_items=np.array([0], np.int32))
  assert registry.low_ratings(cold, 4).nnz == 0  # a cold item is never trained


def test_load_low_ratings_only_when_asked_and_without_cold_items():
  config = TrainConfig(dataset="synthetic-tiny", threshold=4, min_user_positives=5)
  assert registry.load_low_ratings(config) is None
  low = registry.load_low_ratings(dataclasses.replace(config, low_rating_weight=0.5))
  _, train, test = registry.load_split(config)
  assert low.shape == train.shape and low.nnz > 0
  assert not low.multiply(train).nnz and not low.multiply(test).nnz
  cold_config = dataclasses.replace(config, low_rating_weight=0.5, cold_item_fraction=0.2)
  dataset, cold_train, _ = registry.load_split(cold_config)
  cold_low = registry.load_low_ratings(cold_config)
  assert cold_low[:, dataset.cold_items].nnz == 0 and 0 < cold_low.nnz < low.nnz


def test_the_fingerprint_covers_the_low_ratings_only_when_trained_on():
  train, weak = _disjoint()
  test = sp.csr_matrix(train.shape, dtype=bool)
  plain = workdir_lib.data_fingerprint(train, test)
  assert "low_ratings" not in plain
  with_low = workdir_lib.data_fingerprint(train, test, weak)
  assert with_low["low_ratings"] == weak.nnz and with_low["sha256"] != plain["sha256"]
  other = weak.tolil()
  row, col = other.nonzero()
  other[row[0], col[0]] = False
  other[row[0], (col[0] + 1) % train.shape[1]] = not train[row[0], (col[0] + 1) % train.shape[1]]
  other = sp.csr_matrix(other)
  other.eliminate_zeros()
  assert workdir_lib.data_fingerprint(train, test, other)["sha256"] != with_low["sha256"]


def test_the_setting_belongs_to_the_triplet_model_ials_and_ease():
  with pytest.raises(errors.InvalidInput, match="setting of --model=triplet or ials or ease"):
    TrainConfig(model="rp3beta", low_rating_weight=0.5)
  TrainConfig(model="ease", low_rating_weight=0.5, low_rating_floor=3)
  with pytest.raises(errors.InvalidInput, match="low_rating_weight"):
    TrainConfig(low_rating_weight=-0.5)
  TrainConfig(model="ials", low_rating_weight=0.5, low_rating_floor=3)
  with pytest.raises(errors.InvalidInput, match="low_rating_item_grad"):
    TrainConfig(model="ials", low_rating_weight=0.5, low_rating_item_grad=0.5)


def _watched_groups(num_users=200, num_items=40, seed=0):
  """Two groups of users and items; a user's 3 liked training items are random (no signal),
  their 2 test items and 8 low-rated ("watched") items are of their own group."""
  rng = np.random.default_rng(seed)
  user_group = np.arange(num_users) % 2
  item_group = np.arange(num_items) % 2
  train = np.zeros((num_users, num_items), bool)
  test = np.zeros_like(train)
  low = np.zeros_like(train)
  for u in range(num_users):
    picks = rng.permutation(np.flatnonzero(item_group == user_group[u]))
    test[u, picks[:2]] = True
    low[u, picks[2:10]] = True
    free = np.flatnonzero(~test[u] & ~low[u])
    train[u, rng.choice(free, 3, replace=False)] = True
  return sp.csr_matrix(train), sp.csr_matrix(test), sp.csr_matrix(low)


def test_the_model_learns_what_the_low_ratings_say(monkeypatch):
  # The liked training items carry no group signal; the low-rated ones do. Trained on them,
  # the model ranks each user's held-out items (of their group) above the unseen items of the
  # other group; without, it cannot.
  train, test, low = _watched_groups()
  monkeypatch.setattr(registry, "load_low_ratings",
                      lambda config: low if config.low_rating_weight else None)
  base = TrainConfig(dim=4, epochs=40, batch_size=64, learning_rate=0.05, margin=0.5,
                     num_negatives=2, seed=0)
  seen = (train + low).astype(bool).tocsr()
  aucs = {}
  for weight in (0.0, 1.0):
    params = loop.fit(dataclasses.replace(base, low_rating_weight=weight), train).state.params
    aucs[weight] = train_lib.evaluate(model.score_fn(params), seen, test, 1024)["auc"]
  assert aucs[0.0] < 0.6 and aucs[1.0] > 0.72, aucs


def test_observations_put_low_ratings_at_their_weight():
  train = sp.csr_matrix(np.random.default_rng(0).random((23, 17)) < 0.25)
  low = sp.csr_matrix(~train.toarray() & (np.arange(17)[None, :] % 4 == 0))
  both = registry.observations(train, low, 0.25)
  np.testing.assert_array_equal(both.toarray(), train.toarray() + 0.25 * low.toarray())
  np.testing.assert_array_equal(registry.observations(train, None, 0.25).toarray(),
                                train.toarray())
  np.testing.assert_array_equal(registry.observations(train, low, 0.0).toarray(), train.toarray())
  with pytest.raises(ValueError, match="overlap"):
    registry.observations(train, train, 0.25)


@pytest.mark.parametrize("settings, bar", [
    (dict(model="ials", ials_factors=4, ials_alpha=10.0, ials_reg=1.0, ials_iterations=10), 0.72),
    # EASE scores a user's row, where the 3 random liked items weigh twice a low rating.
    (dict(model="ease", ease_lambda=200.0), 0.65),
])
def test_ials_and_ease_learn_what_the_low_ratings_say(monkeypatch, settings, bar):
  # As the triplet model above: fitted with the low ratings as observations of value 0.5 they
  # rank each user's held-out items above the other group's; on the liked ratings alone not.
  from tripjax import models  # pylint: disable=g-import-not-at-top
  train, test, low = _watched_groups()
  monkeypatch.setattr(registry, "load_low_ratings",
                      lambda config: low if config.low_rating_weight else None)
  base = TrainConfig(low_rating_floor=3, **settings)
  spec = models.get(base.model)
  seen = (train + low).astype(bool).tocsr()
  aucs = {}
  for weight in (0.0, 0.5):
    params = spec.fit(dataclasses.replace(base, low_rating_weight=weight), train)
    aucs[weight] = train_lib.evaluate(spec.score_fn(params), seen, test, 1024)["auc"]
  assert aucs[0.0] < 0.6 and aucs[0.5] > bar, aucs


def test_describe_names_the_low_ratings_only_when_trained_on():
  from tripjax import models  # pylint: disable=g-import-not-at-top
  triplet = models.get("triplet")
  assert "ratings" not in triplet.describe(TrainConfig())
  described = triplet.describe(TrainConfig(low_rating_weight=0.2, low_rating_floor=3))
  assert described.endswith("ratings in [3, 4) as positives of weight 0.2")
  ials = models.get("ials")
  assert "ratings" not in ials.describe(TrainConfig(model="ials"))
  assert ials.describe(TrainConfig(model="ials", low_rating_weight=0.5, low_rating_floor=3)
                       ).endswith("ratings in [3, 4) as observations of value 0.5")
  ease = models.get("ease")
  assert "ratings" not in ease.describe(TrainConfig(model="ease"))
  assert ease.describe(TrainConfig(model="ease", low_rating_weight=0.5, low_rating_floor=3)
                       ).endswith("ratings in [3, 4) as entries of value 0.5")


def test_a_floor_needs_room_below_the_threshold_when_used():
  with pytest.raises(errors.InvalidInput, match="leaves no rating"):
    TrainConfig(low_rating_weight=0.2, low_rating_floor=4.0)
  TrainConfig(low_rating_floor=4.0)  # unused without a weight: an ablation turns the weight off
  assert registry.load_low_ratings(TrainConfig(low_rating_floor=3.0)) is None


def test_a_search_and_its_ablation_survive_combinations_the_config_refuses():
  from tripjax import tuning  # pylint: disable=g-import-not-at-top
  calls = []

  def objective(config):
    calls.append(config)
    return {"auc": config.low_rating_weight + config.low_rating_floor / 10}

  space = {"low_rating_weight": (0.2, 0.5), "low_rating_floor": (3.0, 4.0)}
  trials = tuning.search(TrainConfig(), space, objective, num_trials=4, initial_trials=4)
  refused = [t for t in trials if "refused" in t["metrics"]]
  assert {tuple(t["values"].values()) for t in refused} == {(0.2, 4.0), (0.5, 4.0)}
  assert all(np.isnan(t["metrics"]["auc"]) for t in refused) and len(calls) == 2
  best = tuning.best_trial(trials)
  assert best["values"] == {"low_rating_weight": 0.5, "low_rating_floor": 3.0}
  tuned = TrainConfig(low_rating_weight=0.5, low_rating_floor=3.0)
  # Against a reference without low ratings: the weight off alone is valid, the floor alone not.
  rows = tuning.ablation(tuned, TrainConfig(low_rating_floor=4.0),
                         ["low_rating_weight", "low_rating_floor"], objective, 0.8)
  assert rows[0]["auc"] == pytest.approx(0.3) and np.isnan(rows[1]["auc"])


def test_a_run_with_low_ratings_records_them_and_resumes_exactly(tmp_path):
  import json  # pylint: disable=g-import-not-at-top
  config = TrainConfig(dataset="synthetic-tiny", dim=8, learning_rate=0.02, batch_size=64,
                       epochs=2, num_negatives=2, steps_per_dispatch=8, low_rating_weight=0.3,
                       low_rating_floor=2)
  low = registry.load_low_ratings(config)
  whole = train_lib.train_and_evaluate(config, tmp_path / "whole")
  assert json.loads((tmp_path / "whole" / workdir_lib.RESULTS_FILE).read_text())[
      "dataset"]["low_ratings"] == low.nnz > 0
  recorded = json.loads((tmp_path / "whole" / workdir_lib.DATA_FILE).read_text())
  assert recorded["low_ratings"] == low.nnz
  assert train_lib.train_and_evaluate(config, tmp_path / "split", stop_after_epoch=1) == {
      "finished": False, "epoch": 1}
  resumed = train_lib.train_and_evaluate(config, tmp_path / "split")
  assert resumed["model"] == whole["model"]


@pytest.mark.parametrize("ratings", [dict(low_rating_weight=0.5, low_rating_floor=3),
                                     dict(high_rating_weight=2.0)])
@pytest.mark.parametrize("settings", [dict(model="ease", ease_lambda=10.0),
                                      dict(model="ials", ials_factors=4, ials_iterations=3)])
def test_an_ease_or_ials_run_on_low_or_high_ratings_restores_what_it_scored(tmp_path, settings,
                                                                             ratings):
  from tripjax import models  # pylint: disable=g-import-not-at-top
  config = TrainConfig(dataset="synthetic-tiny", **ratings, **settings)
  results = train_lib.train_and_evaluate(config, tmp_path / "run")
  run = train_lib.restore_run(tmp_path / "run")
  low, high = registry.load_low_ratings(config), registry.load_high_ratings(config)
  strong = 0 if high is None else run.train.multiply(high).nnz  # the 5s in train
  assert results["dataset"].get("high_ratings", 0) == strong
  if config.model == "ease":  # the scored rows hold the ratings at their values
    values = np.asarray(run.params["values"])
    assert values.shape == (run.train.nnz + (0 if low is None else low.nnz),)
    assert sorted(set(values)) == ([0.5, 1.0] if low is not None else [1.0, 2.0])
    assert (values == 2.0).sum() == strong
  score_fn = models.get(config.model).score_fn(run.params)
  again = train_lib.evaluate(score_fn, run.train, run.test, 1024)
  assert again["auc"] == pytest.approx(results["model"]["auc"], abs=1e-6)
  plain = train_lib.train_and_evaluate(
      dataclasses.replace(config, low_rating_weight=0.0, high_rating_weight=1.0),
      tmp_path / "plain")
  assert "high_ratings" not in plain["dataset"] and "low_ratings" not in plain["dataset"]
  assert plain["model"]["auc"] != pytest.approx(results["model"]["auc"], abs=1e-4)


def test_an_epochs_statistics_count_every_triplet_and_weigh_the_loss(monkeypatch):
  train, _, low = _watched_groups()
  monkeypatch.setattr(registry, "load_low_ratings", lambda config: low)
  config = TrainConfig(dim=4, epochs=1, batch_size=64, num_negatives=2, low_rating_weight=0.25)
  seen = []
  loop.fit(config, train, on_epoch=lambda state, stats: seen.append(stats))
  stats = seen[0]
  assert stats["triplets_per_sec"] * stats["epoch_seconds"] == pytest.approx(
      train.nnz + low.nnz)
  assert 0.0 < stats["active_fraction"] <= 1.0 and 0.0 < stats["loss"] < 2.0


def _one_step(optimizer, weak_item_grad, weak=(False, True, True), l2=0.0, skip_empty=True):
  """One batch of three triplets (a liked one of weight 1, two of weight 0.3, by default the
  two weak ones; every row its own) trained from the same start: (tables before, tables after,
  metrics). skip_empty=False: the step's path for full chunks."""
  from tripjax import train_step  # pylint: disable=g-import-not-at-top
  state = train_step.init_state(jax.random.key(0), optimizer, 3, 9, 4, scale=1.0)
  before = jax.tree.map(np.array, state.params)
  batch = sampling.Batches(
      users=np.arange(3, dtype=np.int32)[None], pos=np.array([[0, 1, 2]], np.int32),
      neg=np.array([[[3, 4], [5, 6], [7, 8]]], np.int32),
      weights=np.array([[1.0, 0.3, 0.3]], np.float32), weak=np.array([weak]))
  step = train_step.make_train_step(optimizer, margin=2.0, l2=l2, negative_temperature=0.5,
                                    weak_item_grad=weak_item_grad)
  state, metrics = step(state, batch, skip_empty=skip_empty)
  return before, jax.tree.map(np.array, state.params), metrics


@pytest.mark.parametrize("skip_empty", [True, False])
@pytest.mark.parametrize("share", [0.0, 0.5])
@pytest.mark.parametrize("optimizer", ["sparse_sgd", "sgd"])
def test_a_low_ratings_item_gets_its_share_of_the_gradient(optimizer, share, skip_empty):
  # Plain SGD moves a row by its gradient: a weak triplet's positive moves `share` as far as
  # with the whole gradient; every other row (the liked triplet's positive, the users, the
  # negatives) and the loss are as with the whole gradient.
  import optax  # pylint: disable=g-import-not-at-top
  from tripjax import sparse_optim  # pylint: disable=g-import-not-at-top
  opt = sparse_optim.sparse_sgd(1.0) if optimizer == "sparse_sgd" else optax.sgd(1.0)
  start, whole, whole_metrics = _one_step(opt, 1.0, skip_empty=skip_empty)
  _, part, metrics = _one_step(opt, share, skip_empty=skip_empty)
  moved = lambda tables, rows: tables["item"][rows] - start["item"][rows]
  assert np.abs(moved(whole, [1, 2])).min() > 1e-3, moved(whole, [1, 2])
  np.testing.assert_allclose(moved(part, [1, 2]), share * moved(whole, [1, 2]), atol=2e-6)
  np.testing.assert_allclose(part["item"][[0, 3, 4, 5, 6, 7, 8]],
                             whole["item"][[0, 3, 4, 5, 6, 7, 8]], atol=1e-6)
  np.testing.assert_allclose(part["user"], whole["user"], atol=1e-6)
  assert float(metrics["loss"]) == pytest.approx(float(whole_metrics["loss"]), rel=1e-6)


@pytest.mark.parametrize("share", [0.0, 0.5])
def test_the_share_leaves_the_l2_gradient_whole(share):
  # With plain SGD at rate 1 the l2 term moves a weak positive's row by
  # -2 * l2 * weight * row / sum(weights), whatever the share; the share scales the rest.
  import optax  # pylint: disable=g-import-not-at-top
  l2 = 0.1
  start, whole, _ = _one_step(optax.sgd(1.0), 1.0, l2=l2)
  _, part, _ = _one_step(optax.sgd(1.0), share, l2=l2)
  by_l2 = -2.0 * l2 * 0.3 * start["item"][[1, 2]] / 1.6
  by_hinge = whole["item"][[1, 2]] - start["item"][[1, 2]] - by_l2
  assert np.abs(by_hinge).min() > 1e-3 and np.abs(by_l2).min() > 1e-4
  np.testing.assert_allclose(part["item"][[1, 2]] - start["item"][[1, 2]],
                             by_l2 + share * by_hinge, atol=2e-6)


@pytest.mark.parametrize("skip_empty", [True, False])
def test_the_share_goes_by_the_samplers_mark_not_by_weight(skip_empty):
  # Triplet 1 weighs what a weak one does but is not marked weak: its item keeps its whole
  # gradient (per-user weights make weights no guide to a triplet's kind).
  from tripjax import sparse_optim  # pylint: disable=g-import-not-at-top
  opt = sparse_optim.sparse_sgd(1.0)
  start, whole, _ = _one_step(opt, 1.0, weak=(False, False, True), skip_empty=skip_empty)
  _, part, _ = _one_step(opt, 0.0, weak=(False, False, True), skip_empty=skip_empty)
  np.testing.assert_allclose(part["item"][[0, 1]], whole["item"][[0, 1]], atol=1e-6)
  np.testing.assert_allclose(part["item"][2], start["item"][2], atol=1e-7)
  assert np.abs(whole["item"][2] - start["item"][2]).min() > 1e-3


@pytest.mark.parametrize("settings, message", [
    (dict(weak_item_grad=1.5), "must be in \\[0, 1\\]"),
    (dict(weak_item_grad=-0.5), "must be in \\[0, 1\\]"),
    (dict(weak_item_grad=0.5, fused_cpu=True), "--fused_cpu_step"),
])
def test_the_step_refuses_a_share_it_cannot_apply(settings, message):
  from tripjax import sparse_optim  # pylint: disable=g-import-not-at-top
  from tripjax import train_step  # pylint: disable=g-import-not-at-top
  with pytest.raises(errors.InvalidInput, match=message):
    train_step.make_train_step(sparse_optim.sparse_sgd(0.1), **settings)


@pytest.mark.parametrize("settings, message", [
    (dict(low_rating_weight=0.2, low_rating_item_grad=1.5), "must be <= 1"),
    (dict(low_rating_weight=0.2, low_rating_item_grad=-0.5), "must be >= 0"),
    (dict(low_rating_weight=1e-50), "is 0 in float32"),
    (dict(low_rating_weight=0.2, low_rating_item_grad=0.5, optimizer="sparse_sgd",
          fused_cpu_step=True), "drop one of them"),
    (dict(model="ease", low_rating_item_grad=0.5), "low_rating_item_grad"),
])
def test_the_config_refuses_a_share_it_cannot_train(settings, message):
  with pytest.raises(errors.InvalidInput, match=message):
    TrainConfig(**settings)
  # Unused without a weight: an ablation can turn the weight off alone.
  TrainConfig(low_rating_weight=0.0, low_rating_item_grad=0.5)
  # A low rating as heavy as a liked one keeps its share (the sampler marks it).
  TrainConfig(low_rating_weight=1.0, low_rating_item_grad=0.5)


def test_a_run_passes_the_share_to_its_step(monkeypatch):
  # loop.fit hands the step the share when it trains on low ratings, and 1 without them (the
  # share is unused there).
  train, _, low = _watched_groups(num_users=40, num_items=40)
  monkeypatch.setattr(registry, "load_low_ratings",
                      lambda config: low if config.low_rating_weight else None)
  made = []
  real = loop.make_train_step
  def spy(*args, **kwargs):
    bound = inspect.signature(real).bind(*args, **kwargs).arguments
    made.append(bound.get("weak_item_grad", 1.0))
    return real(*args, **kwargs)
  monkeypatch.setattr(loop, "make_train_step", spy)
  base = TrainConfig(dim=4, epochs=1, batch_size=64, learning_rate=0.05, low_rating_item_grad=0.5)
  loop.fit(dataclasses.replace(base, low_rating_weight=0.3), train)
  loop.fit(base, train)
  assert made == [0.5, 1.0]


def test_describe_names_the_share_below_one():
  from tripjax import models  # pylint: disable=g-import-not-at-top
  describe = models.get("triplet").describe
  low = TrainConfig(low_rating_weight=0.2, low_rating_floor=3)
  assert "gradient" not in describe(low)
  assert describe(dataclasses.replace(low, low_rating_item_grad=0.0)).endswith(
      "weight 0.2 (0 of their gradient to their items)")
