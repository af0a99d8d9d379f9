"""Item-kNN: cosine item-item similarity with shrinkage, each item's k nearest neighbours.

As Dacrema et al. 2019's `ItemKNNCFRecommender` (cosine):

  S_ij = <x_i, x_j> / (|x_i| |x_j| + knn_shrink), x_i item i's column of the training matrix
  (0 where the denominator is 0); the diagonal zeroed; for each item j its `knn_k` most similar
  items kept (the largest entries of S's row j, ties to the lower index).

Scoring is the classic item-based rule: `score_uj = sum over i in u's row of W[i, j]`, i.e.
`rows @ W` with W[:, j] holding j's neighbours (W is the row-pruned S, transposed; the
reference prunes W by column in the same way). W is dense float32[I, I], built on the host in
blocks of rows (float64): fine at ML-1M scale; ML-20M (27k items, 2.9 GB) needs a small k.

A user without training items (whose `rows @ W` is 0 everywhere) is scored by popularity: her
scores are the items' training counts (`item_item.popularity_fallback`). `similar` of an item
without training users is 0 everywhere (it has no neighbours).
"""

from __future__ import annotations

import jax
import numpy as np
import scipy.sparse as sp

from tripjax.models import base
from tripjax.models import item_item


def cosine_blocks(train: sp.csr_matrix, shrink: float) -> item_item.RowBlock:
  """The unpruned shrunk cosine similarity, by blocks of rows.

  Args:
    train: bool CSR [U, I].
    shrink: added to the product of the norms.

  Returns:
    `(start, stop) -> float64[stop - start, I]`, rows of S (the diagonal not yet zeroed).
  """
  x = sp.csr_matrix(train, dtype=np.float64)
  xt = sp.csr_matrix(x.T)
  norms = np.sqrt(np.asarray(x.sum(axis=0)).ravel())  # binary: |x_i|^2 = degree

  def block(start: int, stop: int) -> np.ndarray:
    dots = (xt[start:stop] @ x).toarray()
    denominator = norms[start:stop, None] * norms[None, :] + shrink
    return np.divide(dots, denominator, out=np.zeros_like(dots), where=denominator > 0)

  return block


def fit(config, train: sp.csr_matrix, *, key=None) -> dict:
  """The pruned item-kNN matrix, with the training rows.

  Args:
    config: reads `knn_k`, `knn_shrink`.
    train: bool CSR [U, I].
    key: unused (deterministic).

  Returns:
    {"W": float32[I, I] (column j: item j's `knn_k` neighbours), "indptr": int32[U + 1],
    "indices": int32[nnz]}.
  """
  del key
  block = cosine_blocks(train, config.knn_shrink)
  w = item_item.build(block, train.shape[1], config.knn_k, transpose=True)
  return item_item.params_from(w, train)


def similar(params: dict, item: int) -> jax.Array:
  """float32[I]: `item`'s shrunk cosine to its `knn_k` neighbours, 0 elsewhere (column of W)."""
  return item_item.column(params, item)


def describe(config) -> str:
  return f"item-kNN, cosine, {config.knn_k} neighbours, shrink {config.knn_shrink:g}"


MODEL = base.Model(name="itemknn", fit=fit, score=item_item.score,
                   params_like=item_item.params_like, describe=describe,
                   make_score_fn=item_item.make_score_fn, similar=similar)
