"""Tests of tripjax/tuning/ (behind experiments/tuning.py): the validation split, the search,
the flagfile it writes."""

import dataclasses
import json
import math

import numpy as np
import pytest
import scipy.sparse as sp

from tripjax import model
from tripjax import train as train_lib
from tripjax import tuning
from tripjax.config import TrainConfig
from tripjax.data import registry

TINY = TrainConfig(dataset="synthetic-tiny", dim=8, batch_size=256, epochs=1,
                   steps_per_dispatch=8, learning_rate=0.05)


@pytest.fixture(scope="module")
def tiny_split():
  _, train, test = registry.load_split(TINY)
  return train, test


def _overlap(a, b) -> int:
  return int(a.multiply(b).nnz)


def test_tuning_split_comes_from_train_only(tiny_split):
  train, test = tiny_split
  fit, valid = tuning.tuning_split(train, validation_per_user=5, seed=1)
  assert (fit + valid != train).nnz == 0
  assert _overlap(fit, valid) == 0
  assert _overlap(fit, test) == 0 and _overlap(valid, test) == 0
  np.testing.assert_array_equal(np.diff(valid.indptr), 5)


def test_tuning_split_names_the_flag_when_users_are_short(tiny_split):
  train, _ = tiny_split
  with pytest.raises(ValueError, match="--validation_per_user=10000"):
    tuning.tuning_split(train, validation_per_user=10000)


def test_tune_two_trials_writes_best_flagfile_and_never_sees_test(tmp_path, monkeypatch,
                                                                  tiny_split):
  _, test = tiny_split
  seen = []
  real_validate = tuning.validate

  def spy(config, fit_matrix, valid_matrix):
    seen.append((fit_matrix, valid_matrix))
    return real_validate(config, fit_matrix, valid_matrix)

  monkeypatch.setattr(tuning.validation, "validate", spy)  # where validate_mean looks it up
  out_json, out_cfg = tmp_path / "trials.json", tmp_path / "best.cfg"
  space = {"learning_rate": [0.01, 0.2], "margin": [0.3], "num_negatives": [1, 2]}
  report = tuning.tune(TINY, space, num_trials=2, initial_trials=2, seed=3,
                     out_json=out_json, out_flagfile=out_cfg)

  assert len(report["trials"]) == 2 and len(seen) == 2
  for fit_matrix, valid_matrix in seen:
    assert _overlap(fit_matrix, test) == 0 and _overlap(valid_matrix, test) == 0
  aucs = [t["metrics"]["auc"] for t in report["trials"]]
  assert all(0.0 <= a <= 1.0 for a in aucs)
  assert report["best"]["metrics"]["auc"] == max(aucs)
  assert json.loads(out_json.read_text()) == json.loads(json.dumps(report))

  parsed = TrainConfig.from_flagfile(out_cfg)
  expected = dataclasses.replace(TINY, **report["best"]["values"])
  assert parsed == expected
  for name in space:
    assert f"--{name}=" in out_cfg.read_text()


def test_fit_trains_the_same_model_as_the_driver(tmp_path, tiny_split):
  train, test = tiny_split
  config = dataclasses.replace(TINY, epochs=2, num_negatives=2, eval_every=2)
  params, seconds = tuning.fit(config, train)
  ours = train_lib.evaluate(model.score_fn(params), train, test, config.eval_block_size)
  results = train_lib.train_and_evaluate(config, tmp_path / "run")
  assert seconds > 0
  assert ours["auc"] == pytest.approx(results["model"]["auc"], abs=1e-6)


def _separable_objective(calls):
  best = {"learning_rate": 0.1, "margin": 0.5, "dim": 64}

  def objective(config):
    calls.append(config)
    miss = sum(abs(math.log(getattr(config, k) / v)) for k, v in best.items())
    return {"auc": 1.0 - miss}

  return objective


SPACE = {"learning_rate": [0.001, 0.01, 0.1, 1.0], "margin": [0.1, 0.3, 0.5, 0.7, 0.9],
         "dim": [16, 32, 64, 128]}


def test_search_refines_to_the_optimum_within_budget():
  calls = []
  trials = tuning.search(TrainConfig(), SPACE, _separable_objective(calls), num_trials=40,
                       initial_trials=3, seed=0)
  assert len(trials) == len(calls) <= 40
  assert [t["stage"] for t in trials[:3]] == ["random"] * 3
  assert tuning.best_trial(trials)["values"] == {"learning_rate": 0.1, "margin": 0.5, "dim": 64}
  points = [tuple(sorted(t["values"].items())) for t in trials]
  assert len(set(points)) == len(points)  # no point is trained twice


def test_search_is_deterministic_and_respects_the_budget():
  runs = [tuning.search(TrainConfig(), SPACE, _separable_objective([]), num_trials=5,
                      initial_trials=4, seed=7) for _ in range(2)]
  assert runs[0] == runs[1] and len(runs[0]) == 5
  other = tuning.search(TrainConfig(), SPACE, _separable_objective([]), num_trials=5,
                      initial_trials=4, seed=8)
  assert [t["values"] for t in other] != [t["values"] for t in runs[0]]


def test_best_trial_skips_diverged_trials():
  trials = [{"trial": 0, "metrics": {"auc": float("nan")}},
            {"trial": 1, "metrics": {"auc": 0.7}}, {"trial": 2, "metrics": {"auc": 0.7}}]
  assert tuning.best_trial(trials)["trial"] == 1
  with pytest.raises(ValueError, match="diverged; lower the learning rates"):
    tuning.best_trial(trials[:1])


def test_a_search_of_refused_settings_says_why_not_that_it_diverged():
  # A setting the base model does not take (iALS has no triplet weights) refuses every trial.
  trials = tuning.search(TrainConfig(model="ials"), {"user_weight_exponent": [0.5, 1.0]},
                         _separable_objective([]), num_trials=2, initial_trials=2, seed=0)
  assert all("setting of --model=triplet" in t["metrics"]["refused"] for t in trials)
  with pytest.raises(ValueError, match="every trial was refused; the first: .*--model=triplet"):
    tuning.best_trial(trials)
  mixed = trials[:1] + [{"trial": 1, "metrics": {"auc": float("nan"), "diverged": "x"}}]
  with pytest.raises(ValueError, match=r"diverged or was refused \(1 of 2"):
    tuning.best_trial(mixed)


@pytest.mark.parametrize("space, message", [
    ({"colour": [1]}, "unknown field 'colour'"),
    ({"margin": []}, "margin has no values"),
    ({"dim": [8, 8]}, "dim repeats"),
    ({"dim": [0]}, "dim=0 is not a valid setting"),
    ({"optimizer": ["rmsprop"]}, "optimizer='rmsprop'"),
])
def test_check_space_rejects_bad_spaces(space, message):
  with pytest.raises(ValueError, match=message):
    tuning.check_space(space)


def test_parse_space_names_the_flag():
  assert tuning.parse_space({"dim": ["8", "16"], "optimizer": ["adam"]}) == {
      "dim": (8, 16), "optimizer": ("adam",)}
  with pytest.raises(ValueError, match="--search_dim=8,x"):
    tuning.parse_space({"dim": ["8", "x"]})
  with pytest.raises(ValueError, match="unknown field 'colour'"):
    tuning.parse_space({"colour": ["red"]})


def test_search_reuses_previous_trials_without_training_again():
  first = tuning.search(TrainConfig(), SPACE, _separable_objective([]), num_trials=6,
                      initial_trials=4, seed=2)
  calls = []
  again = tuning.search(TrainConfig(), SPACE, _separable_objective(calls), num_trials=9,
                      initial_trials=4, seed=2, previous=first[:5])
  assert again[:6] == first
  assert len(calls) == len(again) - 5


def test_ablation_reverts_one_field_at_a_time():
  calls = []
  objective = _separable_objective(calls)
  best = dataclasses.replace(TrainConfig(), learning_rate=0.1, margin=0.5, dim=64)
  reference = dataclasses.replace(best, learning_rate=0.001, margin=0.5, dim=16)
  rows = tuning.ablation(best, reference, ["learning_rate", "margin", "dim"], objective, 1.0)
  assert [r["field"] for r in rows] == ["learning_rate", "dim"]  # margin is the same in both
  assert [(c.learning_rate, c.dim) for c in calls] == [(0.001, 64), (0.1, 16)]
  assert rows[0]["delta"] == pytest.approx(math.log(100))
  assert rows[1]["delta"] == pytest.approx(math.log(4))


def test_previous_trials_refuses_a_report_of_another_search(tmp_path):
  path = tmp_path / "trials.json"
  assert tuning.previous_trials(path, TINY, {"dim": [8]}, 5, [1]) == []
  trials = [{"trial": 0, "stage": "random", "values": {"dim": 8}, "metrics": {"auc": 0.6}}]
  path.write_text(json.dumps({"base_config": dataclasses.asdict(TINY), "space": {"dim": [8]},
                              "split": {"validation_per_user": 5, "validation_seeds": [1, 2]},
                              "trials": trials}))
  assert tuning.previous_trials(path, TINY, {"dim": [8]}, 5, [1, 2]) == trials
  for space, k, seeds in (({"dim": [8, 16]}, 5, [1, 2]), ({"dim": [8]}, 4, [1, 2]),
                          ({"dim": [8]}, 5, [1]), ({"dim": [8]}, 5, [2, 1])):
    with pytest.raises(ValueError, match="another base config, space or validation split"):
      tuning.previous_trials(path, TINY, space, k, seeds)
  with pytest.raises(ValueError, match="--resume"):
    tuning.previous_trials(path, dataclasses.replace(TINY, dim=9), {"dim": [8]}, 5, [1, 2])


def test_previous_trials_reads_a_report_with_one_validation_seed(tmp_path):
  path = tmp_path / "trials.json"
  trials = [{"trial": 0, "stage": "random", "values": {"dim": 8}, "metrics": {"auc": 0.6}}]
  path.write_text(json.dumps({"base_config": dataclasses.asdict(TINY), "space": {"dim": [8]},
                              "split": {"validation_per_user": 5, "validation_seed": 1},
                              "trials": trials}))
  assert tuning.previous_trials(path, TINY, {"dim": [8]}, 5, [1]) == trials
  with pytest.raises(ValueError, match="validation split"):
    tuning.previous_trials(path, TINY, {"dim": [8]}, 5, [2])


def test_tune_averages_the_objective_over_validation_seeds(tmp_path, monkeypatch, tiny_split):
  train, test = tiny_split
  seen = []
  real_validate = tuning.validate

  def spy(config, fit_matrix, valid_matrix):
    metrics = real_validate(config, fit_matrix, valid_matrix)
    seen.append((fit_matrix, valid_matrix, metrics["auc"]))
    return metrics

  monkeypatch.setattr(tuning.validation, "validate", spy)  # where validate_mean looks it up
  report = tuning.tune(TINY, {"margin": [0.3]}, num_trials=1, initial_trials=1,
                       validation_seeds=(1, 2), out_json=tmp_path / "trials.json")
  assert len(seen) == 2  # one fit per validation split
  (fit1, valid1, auc1), (fit2, valid2, auc2) = seen
  assert (valid1 != valid2).nnz > 0  # two different splits of the same train
  for fit_matrix, valid_matrix in ((fit1, valid1), (fit2, valid2)):
    assert (fit_matrix + valid_matrix != train).nnz == 0
    assert _overlap(valid_matrix, test) == 0
  metrics = report["trials"][0]["metrics"]
  assert metrics["auc_per_split"] == [auc1, auc2]
  assert metrics["auc"] == pytest.approx((auc1 + auc2) / 2, abs=1e-12)
  assert report["split"]["validation_seeds"] == [1, 2]


@pytest.mark.parametrize("seeds, message", [((), "at least one seed"), ((1, 1), "repeats")])
def test_tune_rejects_bad_validation_seeds(seeds, message):
  with pytest.raises(ValueError, match=message):
    tuning.tune(TINY, {"margin": [0.3]}, num_trials=1, initial_trials=1,
                validation_seeds=seeds)


def test_popularity_offset_lowers_popular_items_by_standardised_log_counts():
  counts = np.array([0, 1, 3, 7, 7])  # positives per item
  rows = np.concatenate([np.arange(c) for c in counts])
  cols = np.repeat(np.arange(5), counts)
  matrix = sp.csr_matrix((np.ones(rows.size, bool), (rows, cols)), shape=(8, 5))
  offset = tuning.popularity_offset(matrix, 0.5)
  z = np.log1p(counts)
  z = (z - z.mean()) / z.std()
  np.testing.assert_allclose(offset, -0.5 * z, rtol=1e-6)
  assert offset.dtype == np.float32
  assert offset[3] == offset[4] and np.all(np.diff(offset[:4]) < 0)
  np.testing.assert_array_equal(tuning.popularity_offset(matrix, 0.0), np.zeros(5))
  for bad in (-0.1, float("nan"), float("inf")):
    with pytest.raises(ValueError, match="popularity penalty"):
      tuning.popularity_offset(matrix, bad)


def test_penalty_scan_zero_is_the_plain_validation_auc(tiny_split):
  train, _ = tiny_split
  splits = [tuning.tuning_split(train, 5, seed) for seed in (1, 2)]
  config = dataclasses.replace(TINY, epochs=2)
  scan = tuning.penalty_scan(config, splits, [0.0, 0.3])
  plain = [tuning.validate(config, f, v)["auc"] for f, v in splits]
  assert [row["penalty"] for row in scan] == [0.0, 0.3]
  np.testing.assert_allclose(scan[0]["auc_per_split"], plain, atol=1e-6)
  assert scan[0]["auc"] == pytest.approx(np.mean(plain), abs=1e-6)
  # A large penalty ranks by inverse popularity, which changes the AUC.
  assert abs(scan[1]["auc"] - scan[0]["auc"]) > 1e-4
  with pytest.raises(ValueError, match="no penalty"):
    tuning.penalty_scan(config, splits, [])


def test_tune_reports_the_penalty_scan_and_rejects_bad_penalties(tmp_path):
  out_cfg = tmp_path / "best.cfg"
  report = tuning.tune(TINY, {"margin": [0.3]}, num_trials=1, initial_trials=1,
                       popularity_penalties=(0.0, 0.1), out_flagfile=out_cfg)
  scan = report["popularity_penalty"]["scan"]
  assert [row["penalty"] for row in scan] == [0.0, 0.1]
  assert scan[0]["auc"] == pytest.approx(report["best"]["metrics"]["auc"], abs=1e-6)
  best = max(scan, key=lambda row: row["auc"])
  assert report["popularity_penalty"]["best"] == best["penalty"]
  assert f"best popularity penalty (scores - p * z(log(1 + item count))): {best['penalty']:g}" \
      in out_cfg.read_text()
  TrainConfig.from_flagfile(out_cfg)  # the note is a comment: the flagfile still parses
  with pytest.raises(ValueError, match="popularity penalty"):
    tuning.tune(TINY, {"margin": [0.3]}, num_trials=1, initial_trials=1,
                popularity_penalties=(-1.0,))


def test_validate_scores_with_the_configs_popularity_penalty(tiny_split):
  train, _ = tiny_split
  fit_matrix, valid_matrix = tuning.tuning_split(train, 5, 1)
  config = dataclasses.replace(TINY, epochs=2, popularity_penalty=0.3)
  params, _ = tuning.fit(config, fit_matrix)
  offset = model.popularity_offset(fit_matrix, 0.3)
  want = train_lib.evaluate(model.score_fn(params, offset), fit_matrix, valid_matrix,
                            config.eval_block_size)["auc"]
  cosine = train_lib.evaluate(model.score_fn(params), fit_matrix, valid_matrix,
                              config.eval_block_size)["auc"]
  got = tuning.validate(config, fit_matrix, valid_matrix)["auc"]
  assert got == pytest.approx(want, abs=1e-6) and abs(got - cosine) > 1e-4


def test_any_registered_model_is_tuned_and_selected_by_the_chosen_metric(tmp_path):
  base = TrainConfig(dataset="synthetic-tiny", model="ease")
  report = tuning.tune(base, {"ease_lambda": (5.0, 50.0, 5000.0)}, num_trials=3,
                       initial_trials=3, select_metric="ndcg@20",
                       out_flagfile=tmp_path / "best.cfg")
  ndcgs = [t["metrics"]["ndcg@20"] for t in report["trials"]]
  assert report["select_metric"] == "ndcg@20"
  assert report["best"]["metrics"]["ndcg@20"] == max(ndcgs)
  chosen = TrainConfig.from_flagfile(tmp_path / "best.cfg")
  assert chosen.model == "ease" and chosen.ease_lambda == report["best"]["values"]["ease_lambda"]
  with pytest.raises(ValueError, match="--select_metric='mrr'"):
    tuning.tune(base, {"ease_lambda": (5.0,)}, 1, 1, select_metric="mrr")
