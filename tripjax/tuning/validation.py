"""One tuning trial: a validation split carved out of train, a fit, and its validation score.

The test positives of the lab split are never looked at: `tuning_split` moves
`validation_per_user` more positives of every user out of TRAIN, `fit` trains on the rest
exactly as `tripjax.train.train_and_evaluate` does (no workdir), and `validate` scores the fit by
the mean AUC of the held-out positives against all items not in the fitted matrix.
`penalty_scan` scores one fit under several popularity penalties (`popularity_offset`).
"""

from __future__ import annotations

import math
import time
from typing import Any, Sequence

import jax
import numpy as np
import scipy.sparse as sp

from tripjax import errors
from tripjax import loop
from tripjax import model
from tripjax import models
from tripjax import train as train_lib
from tripjax.config import TrainConfig
from tripjax.data import split


def tuning_split(train: sp.csr_matrix, validation_per_user: int = 5,
                 seed: int = 1) -> tuple[sp.csr_matrix, sp.csr_matrix]:
  """Carves a validation split out of the training positives only.

  Args:
    train: bool CSR [U, I], the lab split's training positives (test already removed).
    validation_per_user: positives per user moved to validation.
    seed: seed of the hold-out (`tripjax.data.split.leave_k_out`).

  Returns:
    (fit, valid): disjoint bool CSR [U, I] with fit + valid == train.

  Raises:
    ValueError: a user has fewer than validation_per_user + 1 training positives.
  """
  try:
    return split.leave_k_out(train, k=validation_per_user, seed=seed)
  except ValueError as e:
    raise errors.InvalidInput(f"--validation_per_user={validation_per_user}: {e}") from e


def fit(config: TrainConfig, matrix: sp.csr_matrix) -> tuple[Any, float]:
  """Fits `config.model` on `matrix` as `train_and_evaluate` does, without a workdir.

  The triplet model runs the same loop (`loop.fit`: sampler, optimizer, initialisation and
  jitted step, epoch by epoch); every model is fitted by its own `fit`; no checkpoints and no
  evaluation.

  Args:
    config: the run's settings (the data is `matrix`; its data fields choose only the side
      features and low and high ratings the model also trains on, `registry.load_features`,
      `registry.load_low_ratings` and `registry.load_high_ratings`).
    matrix: bool CSR [U, I], the positives to train on.

  Returns:
    (the model's params, fitting seconds).

  Raises:
    loop.TrainingDiverged: the loss or the parameters became NaN/Inf.
  """
  started = time.perf_counter()
  params = models.get(config.model).fit(config, matrix, key=jax.random.key(config.seed))
  params = jax.block_until_ready(params)
  return params, time.perf_counter() - started


def validate(config: TrainConfig, fit_matrix: sp.csr_matrix,
             valid_matrix: sp.csr_matrix) -> dict[str, float]:
  """Fits on `fit_matrix` and returns the validation means (auc, ndcg@20, ...) and seconds.

  Scored as `train_and_evaluate` scores: the model's score plus
  `model.popularity_offset(fit_matrix, config.popularity_penalty)` (the popularity counted on
  the fitted positives).
  """
  params, seconds = fit(config, fit_matrix)
  offset = model.popularity_offset(fit_matrix, config.popularity_penalty)
  metrics = train_lib.evaluate(models.get(config.model).score_fn(params, offset), fit_matrix,
                               valid_matrix, config.eval_block_size)
  metrics["train_seconds"] = seconds
  return metrics


def validate_mean(config: TrainConfig,
                  splits: Sequence[tuple[sp.csr_matrix, sp.csr_matrix]]) -> dict[str, Any]:
  """`validate` on each (fit, valid) split; the mean of every metric over the splits.

  Averaging over validation splits drawn with different seeds lowers the noise of the
  objective (each split is fitted from scratch), at one fit per split.

  Args:
    config: the run's settings.
    splits: one or more (fit bool CSR [U, I], valid bool CSR [U, I]) pairs.

  Returns:
    the mean metrics (train_seconds: their sum) and `auc_per_split`, a list of the AUCs.
  """
  if not splits:
    raise errors.InvalidInput("validate_mean: no validation split given.")
  runs = [validate(config, fit_matrix, valid_matrix) for fit_matrix, valid_matrix in splits]
  metrics = {k: float(np.mean([r[k] for r in runs])) for k in runs[0]}
  metrics["train_seconds"] = float(sum(r["train_seconds"] for r in runs))
  if len(runs) > 1:
    metrics["auc_per_split"] = [r["auc"] for r in runs]
  return metrics



def popularity_offset(matrix: sp.csr_matrix, penalty: float) -> np.ndarray:
  """`model.popularity_offset(matrix, penalty)` as an array: zeros where that gives None.

  The offset is `-penalty * z(log(1 + count))`, `count` each item's positives in `matrix`, z
  standardised over the items (mean 0, std 1).

  Args:
    matrix: bool CSR [U, I], the training positives the model saw.
    penalty: >= 0; 0 gives zeros.

  Returns:
    float32[I], to add to every user's scores.

  Raises:
    ValueError: penalty is negative or not finite.
  """
  check_penalties([penalty])
  offset = model.popularity_offset(matrix, penalty)
  return np.zeros(matrix.shape[1], np.float32) if offset is None else offset


def check_penalties(penalties: Sequence[float]) -> tuple[float, ...]:
  """Popularity penalties as floats; raises ValueError on a negative or non-finite one."""
  penalties = tuple(float(p) for p in penalties)
  for p in penalties:
    if not (math.isfinite(p) and p >= 0):
      raise errors.InvalidInput(f"popularity penalty must be a finite number >= 0, got {p!r}.")
  return penalties


def penalty_scan(config: TrainConfig, splits: Sequence[tuple[sp.csr_matrix, sp.csr_matrix]],
                 penalties: Sequence[float]) -> list[dict]:
  """Validation AUC of one fitted model per split under each popularity penalty.

  Fits `config` once per (fit, valid) split, then scores it with `popularity_offset(fit, p)`
  for every penalty p (post hoc: the training is the same for every p).

  Returns:
    [{"penalty", "auc" (mean over the splits), "auc_per_split"}], in the order of `penalties`.
  """
  penalties = check_penalties(penalties)
  if not penalties:
    raise errors.InvalidInput("penalty_scan: no penalty given.")
  aucs = np.zeros((len(penalties), len(splits)))
  for j, (fit_matrix, valid_matrix) in enumerate(splits):
    params, _ = fit(config, fit_matrix)
    for i, p in enumerate(penalties):
      score = models.get(config.model).score_fn(params, popularity_offset(fit_matrix, p))
      aucs[i, j] = train_lib.evaluate(score, fit_matrix, valid_matrix,
                                      config.eval_block_size)["auc"]
  return [{"penalty": p, "auc": float(aucs[i].mean()), "auc_per_split": aucs[i].tolist()}
          for i, p in enumerate(penalties)]
