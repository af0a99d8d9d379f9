"""The lab's analysis of a trained run: numbers, figures and a markdown report.

`analyze(run)` answers the lab's questions for a `tripjax.train.Run`: the AUC a random scorer is
expected to get (and gets), the untrained model's AUC, model vs popularity, and a close look at
the best and the worst user, for any model of `tripjax.models` (the run's `--model`). The model is
scored by the run's own rule, its `score_fn` plus `model.popularity_offset(train,
config.popularity_penalty)` (as its evaluation, so the report's model AUC is results.json's);
a model with an untrained state (`Model.init`) gets it scored with the same offset, so the
untrained line shows what training adds to that rule. `write_report(workdir)` writes them to
`workdir/report.md` with PNG figures under `workdir/figures/` (`tripjax.report_figures`; every
file written atomically).
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
from typing import Sequence

import numpy as np
import scipy.sparse as sp

from tripjax import baselines
from tripjax import errors
from tripjax import files
from tripjax import metrics
from tripjax import model
from tripjax import models
from tripjax import recommend
from tripjax import report_figures
from tripjax.metrics import cold

REPORT_FILE = "report.md"
FIGURES_DIR = "figures"
FIGURES = {
    "training": "training_curves.png",
    "histogram": "auc_histogram.png",
    "roc": "roc_best_worst.png",
    "positives": "auc_vs_train_positives.png",
}


@dataclasses.dataclass(frozen=True)
class UserCase:
  """One user looked at closely.

  Attributes:
    row: the user's row in the matrices.
    user_id: the original user id.
    auc: the model's AUC for this user.
    num_train: training positives.
    num_test: held-out positives.
    items: int32[k], the model's top-k unseen items.
    scores: float32[k], their scores.
    in_test: bool[k], whether each item is one of the user's test items.
    fpr, tpr: float64[T], the user's ROC curve (over the unseen items).
  """
  row: int
  user_id: int
  auc: float
  num_train: int
  num_test: int
  items: np.ndarray
  scores: np.ndarray
  in_test: np.ndarray
  fpr: np.ndarray
  tpr: np.ndarray

  @property
  def hits(self) -> int:
    return int(self.in_test.sum())


@dataclasses.dataclass(frozen=True)
class Analysis:
  """The lab's questions, answered for one run.

  Attributes:
    title: what was analysed (dataset, dims, epochs).
    k: the cut-off of the @k metrics and top-k lists.
    random_measured_auc: mean AUC of the seeded random scorer (expected: 0.5).
    untrained_auc: mean AUC of the model at its initial parameters (the run's seed), scored
      with the run's popularity offset like the trained model; None for a model without an
      untrained state (`Model.init`).
    model_means, popularity_means: the @k metrics' means ({"auc", "precision", "recall",
      "ndcg"}).
    model_auc, popularity_auc: float[U], per-user AUC (NaN where undefined).
    num_train: int[U], training positives per user.
    overlap: mean number of items the model's and popularity's top-k unseen lists share.
    best, worst: the users with the highest and the lowest model AUC.
    history: the run's metrics.jsonl entries.
    cold: the cold items' metrics (`metrics.cold.cold_report`) when the run held items out
      (`--cold_item_fraction`), else None.
  """
  title: str
  k: int
  random_measured_auc: float
  untrained_auc: float | None
  model_means: dict
  popularity_means: dict
  model_auc: np.ndarray
  popularity_auc: np.ndarray
  num_train: np.ndarray
  overlap: float
  best: UserCase
  worst: UserCase
  history: list
  cold: dict | None = None

  random_expected_auc: float = 0.5


def _mean_metrics(result, k: int) -> dict:
  means = result.means
  return {"auc": float(means["auc"]), "precision": float(means[f"precision@{k}"]),
          "recall": float(means[f"recall@{k}"]), "ndcg": float(means[f"ndcg@{k}"])}


def _user_case(score_fn, row: int, user_id: int, auc: float, train: sp.csr_matrix,
               test: sp.csr_matrix, k: int) -> UserCase:
  items, scores = recommend.top_k_scored(score_fn, np.array([row]), k=k, exclude=train)
  items, scores = items[0], scores[0]
  test_row = np.zeros(train.shape[1], bool)
  test_row[test[row].indices] = True
  unseen = np.ones(train.shape[1], bool)
  unseen[train[row].indices] = False
  all_scores = np.asarray(score_fn(np.array([row], np.int32)))[0]
  fpr, tpr = report_figures.roc_curve(all_scores[unseen], test_row[unseen])
  kept = items >= 0
  return UserCase(row, int(user_id), float(auc), int(train[row].nnz), int(test[row].nnz),
                  items[kept], scores[kept], test_row[items[kept]], fpr, tpr)


def analyze(run, k: int = 20, block_size: int = 1024, random_seed: int = 0) -> Analysis:
  """Answers the lab's questions for a run.

  Args:
    run: a `tripjax.train.Run` (config, dataset, train, test, params, history).
    k: cut-off of the @k metrics, the top-k lists and their overlap.
    block_size: users per evaluation block.
    random_seed: seed of the random scorer.

  Returns:
    An `Analysis`.
  """
  train, test, params, config = run.train, run.test, run.params, run.config
  num_users, num_items = train.shape
  k = recommend.check_k(k, num_items)

  def evaluate(score_fn):
    return metrics.evaluate(score_fn, train, test, ks=(k,), block_size=block_size)

  the_model = models.get(config.model)
  offset = model.popularity_offset(train, config.popularity_penalty)
  score_fn = the_model.score_fn(params, offset)
  model_result = evaluate(score_fn)
  popularity_result = evaluate(baselines.popularity_scores(train))
  random_result = evaluate(baselines.random_scores(num_items, random_seed))
  untrained_auc = None
  if the_model.init is not None:
    untrained = the_model.init(config, num_users, num_items)
    untrained_auc = float(evaluate(the_model.score_fn(untrained, offset)).means["auc"])

  model_auc = np.asarray(model_result.auc, np.float64)
  if np.all(np.isnan(model_auc)):
    raise errors.InvalidInput("no user has a defined AUC (every user needs test items and unseen "
                              "non-test items).")
  best, worst = int(np.nanargmax(model_auc)), int(np.nanargmin(model_auc))
  user_ids = run.dataset.user_ids
  cases = [_user_case(score_fn, row, user_ids[row], model_auc[row], train, test, k)
           for row in (best, worst)]
  model_top = np.asarray(model_result.top_items)  # int32[U, k]
  popularity_top = np.asarray(popularity_result.top_items)
  return Analysis(
      title=(f"{config.dataset}: {num_users} users x {num_items} items, {the_model.name} "
             f"model: {the_model.describe(config)}"
             + (f"; scores - {config.popularity_penalty:g} * z(log(1 + item count))"
                if offset is not None else "")),
      k=k,
      random_measured_auc=float(random_result.means["auc"]),
      untrained_auc=untrained_auc,
      model_means=_mean_metrics(model_result, k),
      popularity_means=_mean_metrics(popularity_result, k),
      model_auc=model_auc,
      popularity_auc=np.asarray(popularity_result.auc, np.float64),
      num_train=np.diff(train.indptr),
      overlap=float(baselines.top_k_overlap(model_top, popularity_top, k)),
      best=cases[0], worst=cases[1], history=list(run.history),
      cold=(cold.cold_report(score_fn, run.dataset, train, block_size, random_seed)
            if getattr(run.dataset, "cold_items", None) is not None else None))


def _fmt(x: float) -> str:
  return f"{x:.4f}"


def share_better(model_auc: np.ndarray, other_auc: np.ndarray) -> float:
  """The share of users whose model AUC beats another scorer's.

  Args:
    model_auc: float[U], per-user AUC (NaN where undefined).
    other_auc: float[U], the other scorer's.

  Returns:
    Among the users where both AUCs are defined, the share with model_auc > other_auc (NaN if
    there are none).
  """
  both = np.isfinite(model_auc) & np.isfinite(other_auc)
  return float(np.mean(model_auc[both] > other_auc[both])) if both.any() else float("nan")


def _case_section(name: str, case: UserCase, dataset, k: int) -> list[str]:
  lines = [f"### {name}: user {case.user_id} (AUC {case.auc:.4f})", "",
           f"{case.num_train} training positives, {case.num_test} test items; "
           f"**{case.hits} of the top {len(case.items)} unseen recommendations are test items** "
           "(marked ✓).", "",
           "| rank | title | genres | score | in test |", "| --- | --- | --- | --- | --- |"]
  for rank, (item, score, hit) in enumerate(zip(case.items, case.scores, case.in_test), 1):
    title = str(dataset.titles[item]).replace("|", "\\|")
    genres = ", ".join(dataset.genres[item])
    lines.append(f"| {rank} | {title} | {genres} | {score:.3f} | {'✓' if hit else ''} |")
  return lines + [""]


def _cold_section(cold_metrics: dict | None) -> list[str]:
  """The cold items' table (model, popularity by genre, random), or nothing."""
  if cold_metrics is None:
    return []
  lines = ["## Cold items", "",
           f"{cold_metrics['items']} items were held out whole: none of their positives was "
           "trained on, and each user's cold positives are ranked among the cold items only "
           f"({cold_metrics['model']['users']} users have one). The model scores them from "
           "their features alone (without features it has no vector for them: a tie, AUC 0.5).",
           "", "| scorer | AUC | recall@20 | NDCG@20 |", "| --- | --- | --- | --- |"]
  for name, key in (("model", "model"), ("popularity by genre", "popularity_by_genre"),
                    ("random", "random")):
    m = cold_metrics[key]
    if m is not None:
      lines.append(f"| {name} | {_fmt(m['auc'])} | {_fmt(m['recall@20'])} | "
                   f"{_fmt(m['ndcg@20'])} |")
  return lines + [""]


def render_markdown(analysis: Analysis, dataset, figures: dict[str, str]) -> str:
  """The report as markdown; `figures` maps FIGURES keys to paths relative to the report."""
  a, k = analysis, analysis.k
  rows = [("model", a.model_means), ("popularity", a.popularity_means)]
  lines = [
      "# Analysis of a tripjax run", "", a.title, "",
      "## Random and untrained scores" if a.untrained_auc is not None else "## Random scores",
      "",
      f"- A random scorer ranks a test item above a non-test item half the time: its expected "
      f"AUC is **{a.random_expected_auc:.1f}**. Measured with the seeded random baseline: "
      f"**{_fmt(a.random_measured_auc)}**."]
  if a.untrained_auc is not None:
    lines.append(f"- The untrained model (initial parameters from the run's seed) scores "
                 f"**{_fmt(a.untrained_auc)}** (trained: {_fmt(a.model_means['auc'])}).")
  lines += [
      "", "## Model vs popularity", "",
      f"| scorer | mean AUC | precision@{k} | recall@{k} | NDCG@{k} |",
      "| --- | --- | --- | --- | --- |"]
  lines += [f"| {name} | {_fmt(m['auc'])} | {_fmt(m['precision'])} | {_fmt(m['recall'])} | "
            f"{_fmt(m['ndcg'])} |" for name, m in rows]
  better = share_better(a.model_auc, a.popularity_auc)
  lines += [
      "",
      f"On average the model's and popularity's top-{k} unseen lists share **{a.overlap:.2f}** "
      f"of {k} items. The model beats popularity's AUC for {100 * better:.1f}% of the users "
      "(of those with a defined AUC).", "",
      f"![Per-user AUC]({figures['histogram']})", "",
      f"![AUC against training positives]({figures['positives']})", "",
      "## The best and the worst user", ""]
  lines += _case_section("Highest AUC", a.best, dataset, k)
  lines += _case_section("Lowest AUC", a.worst, dataset, k)
  lines += [f"![ROC curves]({figures['roc']})", ""]
  lines += _cold_section(a.cold)
  lines += ["## Training", ""]
  if a.history:
    lines += ["| epoch | loss | AUC |", "| --- | --- | --- |"]
    lines += [f"| {h['epoch']} | {h['loss']:.4f} | {h['auc']:.4f} |" if "auc" in h else
              f"| {h['epoch']} | {h['loss']:.4f} | |" for h in a.history]
    lines += ["", f"![Training curves]({figures['training']})", ""]
  else:
    lines += ["No training history (metrics.jsonl) was found.", ""]
  return "\n".join(lines)


def write_report(run, workdir: str | os.PathLike, k: int = 20,
                 block_size: int = 1024) -> pathlib.Path:
  """Analyses `run` and writes `workdir/report.md` and its figures.

  Args:
    run: a `tripjax.train.Run` (`tripjax.train.restore_run(workdir)`).
    workdir: folder to write into (normally the run's own).
    k: cut-off of the @k metrics and the top-k lists.
    block_size: users per evaluation block.

  Returns:
    The path of report.md.
  """
  workdir = pathlib.Path(workdir)
  analysis = analyze(run, k=k, block_size=block_size)
  figures_dir = workdir / FIGURES_DIR
  paths = {name: figures_dir / file for name, file in FIGURES.items()}
  if analysis.history:
    report_figures.plot_training(analysis.history, paths["training"])
  report_figures.plot_auc_histogram(analysis.model_auc, analysis.popularity_auc, paths["histogram"])
  report_figures.plot_roc([("best", analysis.best), ("worst", analysis.worst)], paths["roc"])
  report_figures.plot_auc_vs_positives(analysis.num_train, analysis.model_auc, analysis.popularity_auc,
                        paths["positives"])
  relative = {name: f"{FIGURES_DIR}/{file}" for name, file in FIGURES.items()}
  report = workdir / REPORT_FILE
  files.write_atomic(report, render_markdown(analysis, run.dataset, relative))
  return report
