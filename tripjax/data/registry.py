"""One name space for every dataset: MovieLens releases and synthetic presets."""

from __future__ import annotations

import dataclasses
import functools
import os

import numpy as np
import pandas as pd
import scipy.sparse as sp

from tripjax import errors
from tripjax.data import cold_items as cold_items_lib
from tripjax.data import features as features_lib
from tripjax.data import feedback
from tripjax.data import movielens_users
from tripjax.data import split
from tripjax.data import synthetic
from tripjax.data.movielens import DATASETS, load_movielens

SYNTHETIC_PREFIX = "synthetic-"
MIN_COLD_ITEMS = 20  # the cold-item metrics rank the top 20 of them
DATASET_NAMES = tuple(sorted(DATASETS)) + tuple(
    SYNTHETIC_PREFIX + preset for preset in synthetic.PRESETS)


def load_dataset(name: str, data_dir: str | os.PathLike | None = None, download: bool = True,
                 seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
  """Loads a dataset by name.

  Args:
    name: a MovieLens release (`ml-100k`, `ml-1m`, ...; delegated to `load_movielens`) or
      `synthetic-<preset>` (`synthetic-tiny`, `synthetic-ml-100k`, `synthetic-ml-1m`,
      `synthetic-ml-20m`).
    data_dir: where MovieLens files are (see `load_movielens`: when given, the release is read
      from there or not at all); ignored for synthetic data.
    download: whether MovieLens may be downloaded; ignored for synthetic data and with
      `data_dir`.
    seed: seed of the synthetic generator; ignored for MovieLens.

  Returns:
    (ratings, items) frames (see docs/DESIGN.md).

  Raises:
    errors.InvalidInput: unknown name (the message lists the known names).
    errors.DataError, download.DownloadError: as in `load_movielens`.
  """
  if not isinstance(name, str):
    raise errors.InvalidInput(f"dataset name must be a string, got {name!r}")
  if name.startswith(SYNTHETIC_PREFIX) and name[len(SYNTHETIC_PREFIX):] in synthetic.PRESETS:
    return synthetic.make_synthetic(name[len(SYNTHETIC_PREFIX):], seed=seed)
  if name in DATASETS:
    return load_movielens(name, data_dir=data_dir, download=download)
  raise errors.InvalidInput(
      f"Unknown dataset {name!r}; known datasets: {', '.join(DATASET_NAMES)}")


def prepare(name: str, data_dir: str | os.PathLike | None = None, download: bool = True,
            seed: int = 0, threshold: float = 4, min_user_positives: int = 20,
            test_per_user: int = 10, split_seed: int = 0, temporal: bool = False,
            keep_ratings: bool = False, cold_item_fraction: float = 0.0):
  """Loads a dataset, applies the lab's implicit-feedback pipeline and splits it.

  Args:
    name, data_dir, download, seed: as in `load_dataset`.
    threshold, min_user_positives, keep_ratings: as in `implicit_feedback`.
    test_per_user: positives per user held out for test (k).
    split_seed: seed of `leave_k_out` (unused when `temporal`).
    temporal: hold out each user's last k positives (`leave_last_k_out`) instead of random ones.
    cold_item_fraction: share of items held out whole first (`cold_items.hold_out_items` with
      `split_seed`); they are in neither train nor test, and `dataset.cold_items` names them
      (`cold_items.cold_test_matrix(dataset.matrix, dataset.cold_items)` is their test).

  Returns:
    (dataset: ImplicitDataset, train: bool CSR [U, I], test: bool CSR [U, I]).
  """
  ratings, items = load_dataset(name, data_dir=data_dir, download=download, seed=seed)
  dataset = feedback.implicit_feedback(ratings, items, threshold=threshold,
                                       min_user_positives=min_user_positives,
                                       keep_ratings=keep_ratings)
  del ratings, items
  matrix = dataset.matrix
  if cold_item_fraction:
    if temporal:
      raise errors.InvalidInput("--cold_item_fraction does not combine with a temporal split.")
    matrix, cold = cold_items_lib.hold_out_items(matrix, cold_item_fraction, seed=split_seed)
    if cold.size < MIN_COLD_ITEMS:
      raise errors.InvalidInput(f"--cold_item_fraction={cold_item_fraction:g} holds out "
                                f"{cold.size} of {name}'s items; the cold-item metrics (top "
                                f"{MIN_COLD_ITEMS}) need at least {MIN_COLD_ITEMS}: raise it.")
    cold_items_lib.check_warm_users(matrix, test_per_user)
    dataset = dataclasses.replace(dataset, cold_items=cold)
  try:
    if temporal:
      train, test = split.leave_last_k_out(matrix, dataset.timestamps, k=test_per_user)
    else:
      train, test = split.leave_k_out(matrix, k=test_per_user, seed=split_seed)
  except errors.InvalidInput as e:
    raise errors.InvalidInput(f"--test_per_user={test_per_user} does not fit {name}: {e}; lower "
                              "--test_per_user, or keep only users with more positives "
                              "(--min_user_positives).") from e
  return dataset, train, test


def load_split(config):
  """The dataset of a run's config through the lab pipeline, and its leave-k-out split.

  Args:
    config: a `tripjax.config.TrainConfig` (its data fields are read).

  Returns:
    (dataset: ImplicitDataset, train: bool CSR [U, I], test: bool CSR [U, I]).
  """
  return prepare(config.dataset, data_dir=config.data_dir, download=config.download,
                 seed=config.data_seed, threshold=config.threshold,
                 min_user_positives=config.min_user_positives,
                 test_per_user=config.test_per_user, split_seed=config.split_seed,
                 cold_item_fraction=config.cold_item_fraction)


@functools.lru_cache(maxsize=2)
def _feedback(name, data_dir, download, seed, threshold, min_user_positives,
              keep_ratings=False):
  ratings, items = load_dataset(name, data_dir=data_dir, download=download, seed=seed)
  return feedback.implicit_feedback(ratings, items, threshold=threshold,
                                    min_user_positives=min_user_positives,
                                    keep_ratings=keep_ratings)


def low_ratings(dataset: feedback.ImplicitDataset, threshold: float,
                floor: float = 0.0) -> sp.csr_matrix:
  """The ratings in [floor, threshold) of a dataset's users and items, as a matrix.

  Args:
    dataset: an `ImplicitDataset` made with `keep_ratings=True` and this `threshold`.
    threshold: its positive threshold.
    floor: the lowest rating kept (0: every rating below the threshold).

  Returns:
    bool CSR [U, I] (sorted indices), disjoint from `dataset.matrix`; the columns of
    `dataset.cold_items`, held out whole, are empty.
  """
  ratings = dataset.ratings
  warm = np.ones(ratings.shape[1], bool)
  if dataset.cold_items is not None:
    warm[dataset.cold_items] = False
  keep = (ratings.data < threshold) & (ratings.data >= floor) & warm[ratings.indices]
  low = sp.csr_matrix((keep, ratings.indices.copy(), ratings.indptr.copy()),
                      shape=ratings.shape)
  low.eliminate_zeros()
  low.sort_indices()
  return low


def load_low_ratings(config) -> sp.csr_matrix | None:
  """A run's ratings in [`low_rating_floor`, `threshold`) (`low_ratings`), when
  `config.low_rating_weight` > 0 asks for them (the triplet model's weak positives); None
  otherwise.

  Reads the run's dataset again (cached per process), as `load_features` does.

  Args:
    config: a `TrainConfig` (its data fields and `low_rating_weight`).

  Returns:
    bool CSR [U, I] or None.
  """
  if not getattr(config, "low_rating_weight", 0.0):
    return None
  return _low_ratings(config.dataset, config.data_dir, config.download, config.data_seed,
                      config.threshold, config.min_user_positives, config.cold_item_fraction,
                      config.split_seed, config.low_rating_floor)


def load_high_ratings(config) -> sp.csr_matrix | None:
  """A run's liked ratings >= `high_rating_floor` (and the threshold), when
  `config.high_rating_weight` is not 1 (the triplet model's strong positives; iALS's and
  EASE's observations of that value); None otherwise.

  Covers every liked rating of the run's users and items, test ones included: intersect it
  with the training matrix (`loop.prepare_training` does).

  Args:
    config: a `TrainConfig` (its data fields and the high ratings' settings).

  Returns:
    bool CSR [U, I] (sorted indices, read-only) or None.
  """
  if np.float32(getattr(config, "high_rating_weight", 1.0)) == np.float32(1.0):
    return None
  return _high_ratings(config.dataset, config.data_dir, config.download, config.data_seed,
                       config.threshold, config.min_user_positives,
                       max(config.high_rating_floor, config.threshold))


def training_high_ratings(config, train: sp.csr_matrix) -> sp.csr_matrix | None:
  """The run's high ratings (`load_high_ratings`) among `train`'s cells: bool CSR [U, I] with
  sorted indices, or None when the run does not weigh them."""
  high = load_high_ratings(config)
  if high is None:
    return None
  strong = sp.csr_matrix(sp.csr_matrix(train).multiply(high), dtype=bool)
  strong.eliminate_zeros()
  strong.sort_indices()
  return strong


@functools.lru_cache(maxsize=2)
def _high_ratings(name, data_dir, download, seed, threshold, min_user_positives,
                  floor) -> sp.csr_matrix:
  """`load_high_ratings`' matrix, made once per process for its settings."""
  ratings = _feedback(name, data_dir, download, seed, threshold, min_user_positives,
                      keep_ratings=True).ratings
  high = sp.csr_matrix((ratings.data >= floor, ratings.indices.copy(), ratings.indptr.copy()),
                       shape=ratings.shape)
  high.eliminate_zeros()
  high.sort_indices()
  for array in (high.data, high.indices, high.indptr):
    array.flags.writeable = False
  return high


def observations(train: sp.csr_matrix, low: sp.csr_matrix | None, weight: float,
                 high: sp.csr_matrix | None = None, high_weight: float = 1.0) -> sp.csr_matrix:
  """The liked training ratings at value 1 (those in `high` at `high_weight`) and the low ones
  at `weight`, as models that take observations of several values (iALS, EASE) fit them.

  Args:
    train: bool CSR [U, I], the liked training ratings.
    low: bool CSR [U, I] or None, the low ratings (disjoint from train: below the threshold).
    weight: their value r > 0 (iALS: confidence 1 + alpha r; EASE: X's entry).
    high: bool CSR [U, I] or None, the high liked ratings; only those in `train` count (it may
      cover test ratings too, as `load_high_ratings`' does).
    high_weight: their value (1: as every liked rating).

  Returns:
    float32 CSR [U, I] with sorted indices; `train` itself (as CSR) when there is no `low`
    and no `high` of a weight other than 1.
  """
  train = sp.csr_matrix(train)
  use_low = low is not None and bool(weight)
  use_high = high is not None and np.float32(high_weight) != np.float32(1.0)
  if not (use_low or use_high):
    return train
  both = sp.csr_matrix(train, dtype=np.float32)
  if use_high:
    strong = both.multiply(sp.csr_matrix(high, dtype=np.float32)).tocsr()
    both = both + np.float32(high_weight - 1.0) * strong
  if use_low:
    low = sp.csr_matrix(low, dtype=np.float32)
    if train.multiply(low).nnz:
      raise ValueError("the low ratings overlap the liked training ratings.")
    both = both + np.float32(weight) * low
  both = sp.csr_matrix(both, dtype=np.float32)
  both.sort_indices()
  return both


def observed(config, train: sp.csr_matrix) -> sp.csr_matrix:
  """`observations` of the run's training matrix with its low ratings
  (`load_low_ratings`, at `low_rating_weight`) and its high ones (`load_high_ratings`, at
  `high_rating_weight`) when it asks for them, else `train` (as CSR)."""
  return observations(train, load_low_ratings(config), getattr(config, "low_rating_weight", 0.0),
                      load_high_ratings(config), getattr(config, "high_rating_weight", 1.0))


@functools.lru_cache(maxsize=2)
def _low_ratings(name, data_dir, download, seed, threshold, min_user_positives,
                 cold_item_fraction, split_seed, floor) -> sp.csr_matrix:
  """`load_low_ratings`' matrix, read-only, made once per process for its settings (a run asks
  for it when it starts, trains, writes its results and is read back)."""
  dataset = _feedback(name, data_dir, download, seed, threshold, min_user_positives,
                      keep_ratings=True)
  if cold_item_fraction:
    dataset = dataclasses.replace(dataset, cold_items=cold_items_lib.hold_out_items(
        dataset.matrix, cold_item_fraction, seed=split_seed)[1])
  low = low_ratings(dataset, threshold, floor)
  for array in (low.data, low.indices, low.indptr):
    array.flags.writeable = False
  return low


def load_features(config) -> dict:
  """What a run's model needs besides its training matrix: side features and cold items.

  Reads the run's dataset again (cached per process), so that a model's `fit(config, train)`
  needs nothing else.

  Args:
    config: a `TrainConfig` (its data fields, `item_features`, `user_features`; a config
      object without the feature fields asks for none).

  Returns:
    `model.init_params` keywords: `item_features` / `user_features`
    (`tripjax.data.features.Features`) when asked for, and `zero_items` (int32[C], the cold
    items) when `cold_item_fraction` > 0; empty when none applies.

  Raises:
    errors.InvalidInput: a feature the dataset does not have (naming the flag).
  """
  item_names = features_lib.check_feature_names(
      "--item_features", getattr(config, "item_features", ""), features_lib.ITEM_FEATURES)
  user_names = features_lib.check_feature_names(
      "--user_features", getattr(config, "user_features", ""), features_lib.USER_FEATURES)
  if not (item_names or user_names or getattr(config, "cold_item_fraction", 0.0)):
    return {}
  dataset = _feedback(config.dataset, config.data_dir, config.download, config.data_seed,
                      config.threshold, config.min_user_positives)
  out = {}
  if item_names:
    out["item_features"] = features_lib.item_features(dataset, item_names)
  if user_names:
    users = movielens_users.load_users(config.dataset, data_dir=config.data_dir,
                                       download=config.download)
    out["user_features"] = features_lib.user_features(users, dataset.user_ids, user_names)
  if config.cold_item_fraction:
    out["zero_items"] = cold_items_lib.hold_out_items(dataset.matrix, config.cold_item_fraction,
                                                      seed=config.split_seed)[1]
  return out
