"""The report's figures: training curves, AUC histogram, ROC curves, AUC against activity.

Each `plot_*` draws on a plain matplotlib `Figure` (no pyplot state, no backend chosen at
import) and writes a PNG atomically.
"""

from __future__ import annotations

import io
import pathlib
from typing import Any, Sequence

from matplotlib import figure
import matplotlib.ticker
import numpy as np

from tripjax import errors
from tripjax import files


def roc_curve(scores: np.ndarray, positives: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """The ROC curve of one ranking, tied scores taken as one threshold.

  Args:
    scores: float[N], candidate scores.
    positives: bool[N], the candidates that are positives (at least one of each class).

  Returns:
    (fpr, tpr): float64[T + 1] each, from (0, 0) to (1, 1).
  """
  scores = np.asarray(scores, np.float64)
  positives = np.asarray(positives, bool)
  num_pos, num_neg = int(positives.sum()), int((~positives).sum())
  if num_pos == 0 or num_neg == 0:
    raise errors.InvalidInput(f"roc_curve needs positives and negatives, got {num_pos} and "
                              f"{num_neg}.")
  order = np.argsort(-scores, kind="stable")
  scores, positives = scores[order], positives[order]
  last_of_threshold = np.r_[np.flatnonzero(np.diff(scores) != 0), scores.size - 1]
  tp = np.cumsum(positives)[last_of_threshold]
  fp = (last_of_threshold + 1) - tp
  return np.r_[0.0, fp / num_neg], np.r_[0.0, tp / num_pos]


def _save(fig: figure.Figure, path: pathlib.Path) -> None:
  """Writes a figure as PNG atomically (figures are plain `Figure`s: no pyplot, no backend)."""
  png = io.BytesIO()
  fig.savefig(png, format="png", dpi=110, bbox_inches="tight")
  files.write_atomic(path, png.getvalue())


def plot_training(history: Sequence[dict], path: pathlib.Path) -> None:
  """Training loss and test AUC per epoch (metrics.jsonl)."""
  epochs = [h["epoch"] for h in history]
  fig = figure.Figure(figsize=(9, 3.4))
  ax_loss, ax_auc = fig.subplots(1, 2)
  ax_loss.plot(epochs, [h["loss"] for h in history], "o-", color="tab:red")
  ax_loss.set(xlabel="epoch", ylabel="mean triplet loss", title="Training loss")
  with_auc = [h for h in history if "auc" in h]
  ax_auc.plot([h["epoch"] for h in with_auc], [h["auc"] for h in with_auc], "o-",
              color="tab:blue")
  ax_auc.set(xlabel="epoch", ylabel="mean test AUC", title="Test AUC")
  for ax in (ax_loss, ax_auc):
    ax.grid(alpha=0.3)
    ax.xaxis.get_major_locator().set_params(integer=True)
  _save(fig, path)


def plot_auc_histogram(model_auc: np.ndarray, popularity_auc: np.ndarray,
                       path: pathlib.Path) -> None:
  """Histogram of per-user AUC, model vs popularity (users with undefined AUC left out)."""
  fig = figure.Figure(figsize=(6, 3.8))
  ax = fig.subplots()
  bins = np.linspace(0, 1, 41)
  for values, label, color in ((popularity_auc, "popularity", "tab:gray"),
                               (model_auc, "model", "tab:blue")):
    values = values[~np.isnan(values)]
    ax.hist(values, bins=bins, alpha=0.6, color=color,
            label=f"{label} (mean {values.mean():.3f})")
  ax.axvline(0.5, color="k", ls=":", lw=1, label="random (0.5)")
  ax.set(xlabel="per-user ROC AUC", ylabel="users", title="Per-user AUC")
  ax.legend(loc="upper left")
  _save(fig, path)


def plot_roc(cases: Sequence[tuple[str, Any]], path: pathlib.Path) -> None:
  """ROC curves of a few users (over their unseen items)."""
  fig = figure.Figure(figsize=(4.6, 4.4))
  ax = fig.subplots()
  for (label, case), color in zip(cases, ("tab:green", "tab:red", "tab:blue", "tab:orange")):
    ax.plot(case.fpr, case.tpr, color=color,
            label=f"{label}: user {case.user_id}, AUC {case.auc:.3f}")
  ax.plot([0, 1], [0, 1], "k:", lw=1, label="random")
  ax.set(xlabel="false positive rate", ylabel="true positive rate", xlim=(0, 1), ylim=(0, 1.01),
         title="ROC of the best and the worst user")
  ax.legend(loc="lower right", fontsize=8)
  _save(fig, path)


def plot_auc_vs_positives(num_train: np.ndarray, model_auc: np.ndarray,
                          popularity_auc: np.ndarray, path: pathlib.Path) -> None:
  """Per-user AUC against the user's number of training positives (log x), with binned means."""
  num_train = np.asarray(num_train)
  fig = figure.Figure(figsize=(6, 3.8))
  ax = fig.subplots()
  edges = np.unique(np.geomspace(max(num_train.min(), 1), num_train.max() + 1, 9).round())
  for values, label, color in ((popularity_auc, "popularity", "tab:gray"),
                               (model_auc, "model", "tab:blue")):
    ok = ~np.isnan(values)
    ax.scatter(num_train[ok], values[ok], s=8, alpha=0.35, color=color, label=label)
    which = np.digitize(num_train[ok], edges)
    centers, means = [], []
    for b in np.unique(which):
      in_bin = which == b
      centers.append(np.exp(np.log(np.maximum(num_train[ok][in_bin], 1)).mean()))
      means.append(values[ok][in_bin].mean())
    ax.plot(centers, means, "o-", color=color, lw=2, ms=4, label=f"{label}, binned mean")
  ax.set_xscale("log")
  ax.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
  ax.xaxis.set_minor_formatter(matplotlib.ticker.FuncFormatter(
      lambda x, _: f"{x:g}" if f"{x:g}"[0] in "25" else ""))
  ax.set(xlabel="training positives of the user", ylabel="ROC AUC",
         title="AUC against user activity")
  ax.legend(loc="lower right")
  ax.grid(alpha=0.3)
  _save(fig, path)
