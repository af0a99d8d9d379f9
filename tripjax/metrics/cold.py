"""Cold-item evaluation: how well held-out items (no training positive) are ranked.

The candidates of a user are the cold items alone and her positives are the cold items she
liked (`tripjax.data.cold_items`); users with no cold positive are skipped. The metrics are
`evaluate`'s (AUC over the cold items, recall@k among them), for the model and two references:
popularity by genre (an item scores the mean training popularity of its genres' warm items)
and random scores.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import scipy.sparse as sp

from tripjax import baselines
from tripjax.data import cold_items as cold_items_lib
from tripjax.data import features as features_lib
from tripjax.metrics import evaluation

KS = (20,)
METRICS = ("auc", "recall@20", "ndcg@20")


def restricted(score_fn: evaluation.ScoreFn, items: np.ndarray) -> evaluation.ScoreFn:
  """`score_fn` on some items only: int32[B] -> float32[B, C], C = len(items)."""
  columns = jnp.asarray(items, jnp.int32)
  return lambda users: jnp.take(score_fn(users), columns, axis=1)


def genre_popularity_scores(train: sp.csr_matrix, genres: features_lib.Features,
                            cold_items: np.ndarray) -> evaluation.ScoreFn:
  """Popularity by genre: an item's score is the mean over its genres of the genre's popularity.

  A genre's popularity is the mean training count of its warm items (cold items, with no
  training positive by construction, are left out of the mean). An item with no genre scores 0.

  Args:
    train: bool CSR [U, I].
    genres: item `Features` (`features.item_features(dataset, ("genres",))`), [I, G].
    cold_items: int[C].

  Returns:
    ScoreFn: int32[B] -> float32[B, I] (the same row for every user).
  """
  counts = baselines.item_counts(train).astype(np.float64)
  warm = np.ones(train.shape[1], bool)
  warm[np.asarray(cold_items, np.int64)] = False
  membership = sp.csr_matrix(genres.matrix > 0, dtype=np.float64)  # [I, G]
  in_genre = membership.T @ warm.astype(np.float64)
  genre_pop = (membership.T @ (counts * warm)) / np.maximum(in_genre, 1.0)
  return baselines.same_scores((genres.matrix @ genre_pop).astype(np.float32))


def evaluate_cold(score_fn: evaluation.ScoreFn, matrix: sp.csr_matrix, cold_items: np.ndarray,
                  block_size: int = 1024) -> dict:
  """Mean cold-item metrics of a score function.

  Args:
    score_fn: int32[B] -> float32[B, I], over every item.
    matrix: bool CSR [U, I], every positive (`dataset.matrix`; its cold columns are the test).
    cold_items: int[C], the held-out items (C >= 20).
    block_size: users per block.

  Returns:
    {"auc", "recall@20", "ndcg@20", "users"}: means over users with a cold positive.
  """
  cold_items = np.asarray(cold_items, np.int64)
  test = sp.csr_matrix(cold_items_lib.cold_test_matrix(matrix, cold_items)[:, cold_items])
  no_train = sp.csr_matrix(test.shape, dtype=bool)
  result = evaluation.evaluate(restricted(score_fn, cold_items), no_train, test, ks=KS,
                               block_size=block_size)
  out = {name: float(result.means[name]) for name in METRICS}
  out["users"] = int(result.users_evaluated)
  return out


def cold_report(score_fn: evaluation.ScoreFn, dataset, train: sp.csr_matrix,
                block_size: int = 1024, seed: int = 0) -> dict:
  """results.json's `cold_items`: the model beside popularity by genre and random.

  Args:
    score_fn: the model's ScoreFn over every item.
    dataset: the run's `ImplicitDataset` (`cold_items` set).
    train: bool CSR [U, I] (no cold item in it).
    block_size: users per block.
    seed: seed of the random scores.

  Returns:
    {"items": C, "model": metrics, "popularity_by_genre": metrics or None (no genres),
     "random": metrics}, each metrics as `evaluate_cold`'s.
  """
  cold = dataset.cold_items
  out = {"items": int(len(cold)),
         "model": evaluate_cold(score_fn, dataset.matrix, cold, block_size),
         "random": evaluate_cold(baselines.random_scores(train.shape[1], seed), dataset.matrix,
                                 cold, block_size),
         "popularity_by_genre": None}
  if dataset.genre_names:
    genres = features_lib.item_features(dataset, ("genres",))
    out["popularity_by_genre"] = evaluate_cold(genre_popularity_scores(train, genres, cold),
                                               dataset.matrix, cold, block_size)
  return out
