"""Tests for tripjax.report: ROC curves, figures, the analysis of a small trained model."""

import dataclasses
import types

import jax
import numpy as np
import pytest
import scipy.sparse as sp
from sklearn import metrics as sk_metrics

from tripjax import model
from tripjax import report
from tripjax import report_figures

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("decimals", [None, 1])
def test_roc_curve_matches_sklearn(decimals):
  rng = np.random.default_rng(0)
  scores = rng.normal(size=300)
  if decimals is not None:
    scores = np.round(scores, decimals)  # heavy ties
  positives = rng.random(300) < 0.2
  fpr, tpr = report_figures.roc_curve(scores, positives)
  ref_fpr, ref_tpr, _ = sk_metrics.roc_curve(positives, scores, drop_intermediate=False)
  np.testing.assert_allclose(fpr, ref_fpr)
  np.testing.assert_allclose(tpr, ref_tpr)
  np.testing.assert_allclose(np.trapezoid(tpr, fpr), sk_metrics.roc_auc_score(positives, scores))


def test_roc_curve_needs_both_classes():
  with pytest.raises(ValueError, match="positives and negatives"):
    report_figures.roc_curve(np.ones(3), np.ones(3, bool))


def _is_png(path):
  data = path.read_bytes()
  return len(data) > 1000 and data.startswith(PNG_MAGIC)


def test_plots_write_png_files(tmp_path):
  rng = np.random.default_rng(0)
  auc = rng.uniform(0.4, 1.0, 50)
  auc[3] = np.nan
  history = [{"epoch": e, "loss": 0.5 / e, "auc": 0.6 + 0.1 * e} for e in (1, 2, 3)]
  report_figures.plot_training(history, tmp_path / "t.png")
  report_figures.plot_auc_histogram(auc, auc[::-1] * 0.9, tmp_path / "h.png")
  report_figures.plot_auc_vs_positives(rng.integers(5, 300, 50), auc, auc * 0.9, tmp_path / "p.png")
  fpr, tpr = report_figures.roc_curve(rng.normal(size=40), np.arange(40) < 5)
  case = report.UserCase(0, 7, 0.8, 10, 5, np.arange(3), np.ones(3), np.ones(3, bool), fpr, tpr)
  report_figures.plot_roc([("best", case)], tmp_path / "sub" / "r.png")
  for name in ("t.png", "h.png", "p.png", "sub/r.png"):
    assert _is_png(tmp_path / name), name
  assert sorted(p.name for p in tmp_path.rglob("*")) == ["h.png", "p.png", "r.png", "sub",
                                                         "t.png"]  # no temp files left


def _planted_run(num_users=60, num_items=50, seed=0, popularity_penalty=0.0):
  """A `Run`-like namespace: planted preferences, parameters equal to the planted vectors."""
  rng = np.random.default_rng(seed)
  users = rng.normal(size=(num_users, 4)).astype(np.float32)
  items = rng.normal(size=(num_items, 4)).astype(np.float32)
  order = np.argsort(-(users @ items.T + rng.gumbel(size=(num_users, num_items))), axis=1)
  train = np.zeros((num_users, num_items), bool)
  test = np.zeros((num_users, num_items), bool)
  counts = rng.integers(6, 20, num_users)
  for u in range(num_users):
    train[u, order[u, 3:3 + counts[u]]] = True
    test[u, order[u, :3]] = True
  config = types.SimpleNamespace(model="triplet", item_features="", user_features="", seed=3, dim=4, init_scale=0.1,
                                 dataset="planted", epochs=2, optimizer="adam", learning_rate=1e-3, batch_size=64, margin=0.5,
                                 popularity_penalty=popularity_penalty)
  dataset = types.SimpleNamespace(user_ids=np.arange(num_users) + 1000,
                                  titles=np.array([f"Item {i} (2000)" for i in range(num_items)]),
                                  genres=tuple(("Drama",) for _ in range(num_items)))
  history = [{"epoch": 1, "loss": 0.3, "auc": 0.7}, {"epoch": 2, "loss": 0.2, "auc": 0.8}]
  return types.SimpleNamespace(
      config=config, dataset=dataset, train=sp.csr_matrix(train), test=sp.csr_matrix(test),
      params={"user": jax.numpy.asarray(users), "item": jax.numpy.asarray(items)},
      history=history, results=None)


@pytest.fixture(scope="module")
def planted_analysis():
  run = _planted_run()
  return run, report.analyze(run, k=5, block_size=16)


def test_analyze_answers_the_lab_questions(planted_analysis):
  run, a = planted_analysis
  train, test = run.train.toarray(), run.test.toarray()
  scores = np.asarray(model.cosine_scores(run.params, np.arange(60)))
  reference = np.array([sk_metrics.roc_auc_score(test[u][~train[u]], scores[u][~train[u]])
                        for u in range(60)])
  np.testing.assert_allclose(a.model_auc, reference, atol=1e-6)
  assert a.model_means["auc"] == pytest.approx(reference.mean(), abs=1e-6)
  assert a.model_means["auc"] > 0.8 and a.model_means["auc"] > a.popularity_means["auc"]
  assert abs(a.random_measured_auc - 0.5) < 0.1 and abs(a.untrained_auc - 0.5) < 0.1
  untrained = model.init_params(jax.random.key(3), 60, 50, 4, 0.1)
  untrained_scores = np.asarray(model.cosine_scores(untrained, np.arange(60)))
  untrained_reference = np.mean([sk_metrics.roc_auc_score(test[u][~train[u]],
                                                          untrained_scores[u][~train[u]])
                                 for u in range(60)])
  assert a.untrained_auc == pytest.approx(untrained_reference, abs=1e-6)
  assert a.best.row == int(np.argmax(reference)) and a.worst.row == int(np.argmin(reference))
  assert a.best.user_id == 1000 + a.best.row
  np.testing.assert_array_equal(a.num_train, train.sum(1))
  # Overlap: mean shared items of the model's and popularity's top-5 unseen lists.
  popularity = train.sum(0)
  shared = []
  for u in range(60):
    unseen = np.flatnonzero(~train[u])
    mine = unseen[np.argsort(-scores[u][unseen], kind="stable")[:5]]
    pop = unseen[np.argsort(-popularity[unseen], kind="stable")[:5]]
    shared.append(len(set(mine) & set(pop)))
  assert a.overlap == pytest.approx(np.mean(shared))


def test_user_cases_list_unseen_items_and_test_hits(planted_analysis):
  run, a = planted_analysis
  train, test = run.train.toarray(), run.test.toarray()
  for case in (a.best, a.worst):
    assert len(case.items) == 5 and not train[case.row, case.items].any()
    np.testing.assert_array_equal(case.in_test, test[case.row, case.items])
    assert case.hits == test[case.row, case.items].sum()
    np.testing.assert_allclose(np.trapezoid(case.tpr, case.fpr), case.auc, atol=1e-6)


def test_write_report(planted_analysis, tmp_path):
  run, _ = planted_analysis
  path = report.write_report(run, tmp_path, k=5, block_size=16)
  text = path.read_text()
  assert path == tmp_path / "report.md"
  for file in report.FIGURES.values():
    assert f"figures/{file}" in text
    assert _is_png(tmp_path / "figures" / file), file
  assert "expected AUC is **0.5**" in text and "| model |" in text and "| popularity |" in text
  assert text.count("| 5 | Item") == 2  # the best and the worst user's fifth recommendation


def test_share_better_counts_only_users_with_both_aucs():
  nan = np.nan
  model_auc = np.array([0.9, nan, 0.4, 0.7, nan])
  other_auc = np.array([0.5, nan, 0.6, nan, 0.2])
  assert report.share_better(model_auc, other_auc) == 0.5  # users 0 (win) and 2 (loss)
  assert np.isnan(report.share_better(np.array([nan]), np.array([0.5])))


def test_report_share_skips_users_without_an_auc(planted_analysis):
  run, a = planted_analysis
  model_auc, popularity_auc = a.model_auc.copy(), a.popularity_auc.copy()
  wins = model_auc > popularity_auc
  skipped = int(np.flatnonzero(wins)[0])  # a user the model beats, now without test items
  model_auc[skipped] = popularity_auc[skipped] = np.nan
  text = report.render_markdown(
      dataclasses.replace(a, model_auc=model_auc, popularity_auc=popularity_auc), run.dataset,
      {name: name for name in report.FIGURES})
  expected = 100 * (wins.sum() - 1) / (len(wins) - 1)
  assert f"beats popularity's AUC for {expected:.1f}% of the users" in text


def test_analyze_scores_by_the_runs_popularity_penalty():
  """With a penalty the report ranks as the run's evaluation: cosine plus the offset."""
  run = _planted_run(popularity_penalty=0.3)
  a = report.analyze(run, k=5, block_size=16)
  train, test = run.train.toarray(), run.test.toarray()
  offset = model.popularity_offset(run.train, 0.3)
  scores = np.asarray(model.cosine_scores(run.params, np.arange(60))) + offset
  reference = np.array([sk_metrics.roc_auc_score(test[u][~train[u]], scores[u][~train[u]])
                        for u in range(60)])
  np.testing.assert_allclose(a.model_auc, reference, atol=1e-6)
  plain = report.analyze(_planted_run(), k=5, block_size=16)
  assert np.abs(a.model_auc - plain.model_auc).max() > 1e-3  # the offset matters here
  untrained = model.init_params(jax.random.key(3), 60, 50, 4, 0.1)
  untrained_scores = np.asarray(model.cosine_scores(untrained, np.arange(60))) + offset
  assert a.untrained_auc == pytest.approx(np.mean([
      sk_metrics.roc_auc_score(test[u][~train[u]], untrained_scores[u][~train[u]])
      for u in range(60)]), abs=1e-6)
  assert a.best.row == int(np.argmax(reference)) and a.worst.row == int(np.argmin(reference))
  for case in (a.best, a.worst):
    unseen = np.flatnonzero(~train[case.row])
    want = unseen[np.argsort(-scores[case.row][unseen], kind="stable")[:5]]
    np.testing.assert_array_equal(case.items, want)
    np.testing.assert_allclose(case.scores, scores[case.row][want], atol=1e-6)
    np.testing.assert_allclose(np.trapezoid(case.tpr, case.fpr), case.auc, atol=1e-6)
  assert "scores - 0.3 * z(log(1 + item count))" in a.title
  assert "item count" not in plain.title
