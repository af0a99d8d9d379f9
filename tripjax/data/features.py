"""Side features of items (genres) and users (age, gender, occupation) as mean-weight rows.

A model that adds features (LightFM-style) gives row r the vector `own[r] + mean of the
embeddings of r's features`. `Features` holds that mean twice, for host and device:
`matrix @ table` (float32 CSR [N, F] whose row r is 1/n_r at each of its n_r features) and the
padded `ids`/`weights` [N, K] for a jitted gather (`sum(weights[..., None] * table[ids], -2)`).

Every feature is categorical and named `<kind>=<value>`: `genre=Comedy` (an item has one per
genre it lists), `age=25-34`, `gender=F`, `occupation=writer` (a user has exactly one of each kind
asked for). Ages are put in ML-1M's brackets (`AGE_BRACKETS`), so ML-100K's ages in years and
ML-1M's bracket codes give the same features.

A row may be left with no feature (an item listed with no genre, "(no genres listed)" in the
later releases): its `matrix` row is all zero, its `weights` all 0, and its vector is its own
embedding alone, which every row has. So no item is ever left without a vector, and only a
request that no row can honour is refused: a feature kind the dataset lacks altogether (genres
of a dataset without any). Such refusals and unknown names are one-line `errors.InvalidInput`
naming the flag (`--item_features`, `--user_features`).
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp

from tripjax import errors
from tripjax.data import feedback

ITEM_FEATURES = ("genres",)
USER_FEATURES = ("age", "gender", "occupation")
ITEM_FLAG = "--item_features"
USER_FLAG = "--user_features"
# (name, lowest age) of ML-1M's age brackets, in order; an age falls in the last bracket whose
# lowest age it reaches (ML-1M's code 1, "Under 18", falls in the first).
AGE_BRACKETS = (("under 18", 0), ("18-24", 18), ("25-34", 25), ("35-44", 35), ("45-49", 45),
                ("50-55", 50), ("56+", 56))


@dataclasses.dataclass(frozen=True)
class Features:
  """The features of N rows (items or users) as mean weights over F named features.

  Attributes:
    matrix: float32 CSR [N, F] (int32 indices/indptr, sorted indices): row r holds 1/n_r at
      each of its n_r features, so it sums to 1 (0 for a row with no feature) and
      `matrix @ table` is the mean of the features' embeddings.
    names: F feature names, `<kind>=<value>` (`genre=Comedy`, `age=25-34`).
    ids: int32[N, K], row r's feature indices in increasing order, then 0 as padding; K is the
      most features of any row (at least 1).
    weights: float32[N, K], 1/n_r at row r's features and 0 at the padding, so that
      `sum(weights[..., None] * table[ids], axis=-2) == matrix @ table`.
  """

  matrix: sp.csr_matrix
  names: tuple[str, ...]
  ids: np.ndarray
  weights: np.ndarray

  @property
  def num_rows(self) -> int:
    return self.matrix.shape[0]

  @property
  def num_features(self) -> int:
    return len(self.names)


def check_feature_names(flag: str, names: str | Sequence[str] | None,
                        known: Sequence[str]) -> tuple[str, ...]:
  """The feature names a flag asks for, checked against the known ones.

  Args:
    flag: the flag's name, for messages (`--item_features`).
    names: a comma-separated string or a sequence of names (absl list flags give a list);
      blanks around names and empty names are ignored, so "" and None ask for none.
    known: the names the flag accepts.

  Returns:
    The names in the order given (empty when none is asked for).

  Raises:
    errors.InvalidInput: an unknown name (listing the known ones) or a name given twice.
  """
  if names is None:
    return ()
  if isinstance(names, str):
    names = names.split(",")
  cleaned = []
  for name in names:
    if not isinstance(name, str):
      raise errors.InvalidInput(f"{flag}: feature names must be strings, got {name!r}")
    name = name.strip()
    if not name:
      continue
    if name not in known:
      raise errors.InvalidInput(f"{flag}: unknown feature {name!r}; known: {', '.join(known)}")
    if name in cleaned:
      raise errors.InvalidInput(f"{flag}: feature {name!r} is listed twice")
    cleaned.append(name)
  return tuple(cleaned)


def _requested(flag: str, names, known: Sequence[str]) -> tuple[str, ...]:
  names = check_feature_names(flag, names, known)
  if not names:
    raise errors.InvalidInput(f"{flag}: no feature asked for; name some of {', '.join(known)}")
  return names


def from_pairs(rows: np.ndarray, cols: np.ndarray, names: Sequence[str],
               num_rows: int) -> Features:
  """Mean-weight `Features` from (row, feature) pairs; a pair given twice counts once.

  Args:
    rows: int[P], row of each pair, in [0, num_rows).
    cols: int[P], feature of each pair, in [0, len(names)).
    names: the F feature names.
    num_rows: N.

  Returns:
    `Features` with N rows and F features; its arrays are read-only.
  """
  num_features = len(names)
  codes = np.unique(np.asarray(rows, np.int64) * num_features + np.asarray(cols, np.int64))
  rows, cols = codes // max(num_features, 1), codes % max(num_features, 1)
  counts = np.bincount(rows, minlength=num_rows)
  indptr = np.zeros(num_rows + 1, dtype=np.int32)
  np.cumsum(counts, out=indptr[1:])
  row_weight = np.zeros(num_rows, dtype=np.float32)
  np.divide(1, counts, out=row_weight, where=counts > 0)
  data = row_weight[rows]
  matrix = sp.csr_matrix((data, cols.astype(np.int32), indptr), shape=(num_rows, num_features))
  matrix.has_sorted_indices = True
  # Codes are sorted by (row, feature): a pair's place within its row is its slot.
  slot = np.arange(len(codes)) - indptr[rows]
  width = max(int(counts.max(initial=0)), 1)
  ids = np.zeros((num_rows, width), dtype=np.int32)
  weights = np.zeros((num_rows, width), dtype=np.float32)
  ids[rows, slot] = cols
  weights[rows, slot] = data
  for array in (matrix.data, matrix.indices, matrix.indptr, ids, weights):
    array.flags.writeable = False
  return Features(matrix=matrix, names=tuple(names), ids=ids, weights=weights)


def item_features(dataset: feedback.ImplicitDataset, names: str | Sequence[str]) -> Features:
  """The items' features of an `ImplicitDataset`.

  Args:
    dataset: a `tripjax.data.feedback.ImplicitDataset` (its `genres` and `genre_names`).
    names: feature kinds among `ITEM_FEATURES` (`genres`), as `check_feature_names` takes them.

  Returns:
    `Features` with one row per item (dataset column order) and one feature per genre of
    `dataset.genre_names` (`genre=<name>`, in that order). An item listing no genre has no
    feature (its own embedding alone).

  Raises:
    errors.InvalidInput: no, unknown or repeated names, or `genres` asked of a dataset without
      any genre, naming `--item_features`.
  """
  _requested(ITEM_FLAG, names, ITEM_FEATURES)
  genre_names = tuple(dataset.genre_names)
  if not genre_names:
    raise errors.InvalidInput(f"{ITEM_FLAG}=genres: the dataset lists no genre for any item; "
                              f"leave {ITEM_FLAG} empty")
  index = {name: col for col, name in enumerate(genre_names)}
  rows, cols = [], []
  for row, genres in enumerate(dataset.genres):
    for genre in genres:
      rows.append(row)
      cols.append(index[genre])
  return from_pairs(np.array(rows, dtype=np.int64), np.array(cols, dtype=np.int64),
                    [f"genre={g}" for g in genre_names], len(dataset.genres))


def age_brackets(ages: np.ndarray) -> np.ndarray:
  """The index into `AGE_BRACKETS` of each age.

  Args:
    ages: int[N], ages in years (ML-100K) or ML-1M's bracket codes (1, 18, 25, ..., 56).

  Returns:
    int64[N] in [0, len(AGE_BRACKETS)).

  Raises:
    errors.InvalidInput: a negative age (naming `--user_features`).
  """
  ages = np.asarray(ages)
  if ages.size and ages.min() < 0:
    raise errors.InvalidInput(f"{USER_FLAG}=age: ages must be >= 0, got {ages.min()}")
  lowest = np.array([low for _, low in AGE_BRACKETS])
  return np.searchsorted(lowest, ages, side="right") - 1


def _categories(kind: str, values: pd.Series) -> tuple[np.ndarray, list[str]]:
  """(code[N], value names) of one categorical column."""
  if values.isna().any():
    raise errors.InvalidInput(f"{USER_FLAG}={kind}: the users table has missing values")
  if kind == "age":
    bracket = age_brackets(values.to_numpy(np.int64))
    present = np.unique(bracket)  # brackets in age order, only those some user is in
    return np.searchsorted(present, bracket), [AGE_BRACKETS[b][0] for b in present]
  codes, uniques = pd.factorize(values.astype(str), sort=True)
  return codes, [str(u) for u in uniques]


def user_features(users: pd.DataFrame, user_ids: np.ndarray,
                  names: str | Sequence[str]) -> Features:
  """The users' features, one of each kind asked for, for the given users.

  Args:
    users: a users table (`movielens_users.load_users`): `user_id` and a column per kind.
    user_ids: int64[U], the original id of each row (`ImplicitDataset.user_ids`).
    names: feature kinds among `USER_FEATURES` (`age`, `gender`, `occupation`), as
      `check_feature_names` takes them.

  Returns:
    `Features` with U rows, each with one feature per kind (weights 1/len(names)). Features
    are grouped by kind in the order of `names`; within a kind, the values some of these users
    have: ages by bracket (`age=under 18`, `age=18-24`, ...), others sorted (`gender=F`).

  Raises:
    errors.InvalidInput: no, unknown or repeated names, a kind the table lacks, a missing
      value or negative age, naming `--user_features`.
    errors.DataError: users of `user_ids` absent from the table, or listed twice in it.
  """
  names = _requested(USER_FLAG, names, USER_FEATURES)
  missing = [n for n in ("user_id",) + names if n not in users.columns]
  if missing:
    raise errors.InvalidInput(f"{USER_FLAG}: the users table lacks column(s) {missing}; it has "
                              f"{list(users.columns)}")
  table_ids = users["user_id"].to_numpy(np.int64)
  if len(np.unique(table_ids)) != len(table_ids):
    dups = pd.unique(table_ids[pd.Series(table_ids).duplicated().to_numpy()])[:5].tolist()
    raise errors.DataError(f"{USER_FLAG}: the users table lists user ids twice, e.g. {dups}")
  user_ids = np.asarray(user_ids, dtype=np.int64)
  position = pd.Index(table_ids).get_indexer(user_ids)
  if (position < 0).any():
    absent = user_ids[position < 0]
    raise errors.DataError(f"{USER_FLAG}: {absent.size} user(s) of the ratings are not in the "
                           f"users table, e.g. {absent[:5].tolist()}")
  rows, cols, feature_names = [], [], []
  num_users = len(user_ids)
  for kind in names:
    codes, values = _categories(kind, users[kind].iloc[position].reset_index(drop=True))
    rows.append(np.arange(num_users))
    cols.append(len(feature_names) + np.asarray(codes, np.int64))
    feature_names += [f"{kind}={v}" for v in values]
  return from_pairs(np.concatenate(rows), np.concatenate(cols), feature_names, num_users)
