"""The reference lab's implicit-feedback pipeline: ratings -> boolean user x item CSR matrix."""

from __future__ import annotations

import dataclasses
from typing import Mapping

import numpy as np
import pandas as pd
import scipy.sparse as sp


@dataclasses.dataclass(frozen=True)
class ImplicitDataset:
  """An immutable implicit-feedback dataset.

  Attributes:
    matrix: bool CSR [U, I] (int32 indices/indptr, sorted indices); True = positive.
    user_ids: int64[U], original user id of each row.
    item_ids: int64[I], original item id of each column.
    titles: object[I], title of each item.
    genres: tuple of I tuples of genre names.
    genre_names: sorted tuple of every genre name present.
    steps: ordered mapping step name -> (users, items, entries) after that step.
    timestamps: int64 CSR [U, I] aligned with `matrix` (same structure), or None.
    ratings: float32 CSR [U, I] of the kept users/items' ratings (all, not only positives),
      when asked for; otherwise None.
  """

  matrix: sp.csr_matrix
  user_ids: np.ndarray
  item_ids: np.ndarray
  titles: np.ndarray
  genres: tuple
  genre_names: tuple
  steps: Mapping[str, tuple[int, int, int]]
  timestamps: sp.csr_matrix | None = None
  ratings: sp.csr_matrix | None = None

  @property
  def num_users(self) -> int:
    return self.matrix.shape[0]

  @property
  def num_items(self) -> int:
    return self.matrix.shape[1]

  @property
  def num_positives(self) -> int:
    return int(self.matrix.nnz)


def implicit_feedback(ratings: pd.DataFrame, items: pd.DataFrame, threshold: float = 4,
                      min_user_positives: int = 20, keep_ratings: bool = False) -> ImplicitDataset:
  """See issue 2 item 4. Implemented in a later commit."""
  raise NotImplementedError
