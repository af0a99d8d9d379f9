"""RP3beta: a three-step random walk user -> item -> user -> item, penalised by popularity.

Paudel et al. 2017, "Updatable, accurate, diverse, and scalable recommendations for
interactive applications"; as in Dacrema et al. 2019's reference `RP3betaRecommender`:

  P_ui = row-normalised X (user -> item), P_iu = row-normalised X^T (item -> user), each raised
  element-wise to `rp3_alpha`;
  W = P_iu @ P_ui, column j divided by degree(j) ** rp3_beta (items without users: 0);
  the diagonal zeroed (the reference sets W[i, i] = 0 before pruning); the `rp3_top_k` largest
  entries of each row kept (0: all).

A user scores `rows @ W` (`item_item`). W is dense float32[I, I], built on the host in blocks of
rows (float64 sparse products): fine at ML-1M scale; ML-20M (27k items, 2.9 GB) needs
`--rp3_top_k` to be useful. The reference's optional row re-normalisation of W is not applied.

A user without training items (whose `rows @ W` is 0 everywhere) is scored by popularity: her
scores are the items' training counts (`item_item.popularity_fallback`). `similar` of an item
without training users is 0 everywhere (the walk cannot leave it).
"""

from __future__ import annotations

import jax
import numpy as np
import scipy.sparse as sp

from tripjax.models import base
from tripjax.models import item_item


def _row_normalised(matrix: sp.csr_matrix, alpha: float) -> sp.csr_matrix:
  """Each row divided by its sum (empty rows stay empty), then raised to `alpha`."""
  sums = np.asarray(matrix.sum(axis=1)).ravel()
  inverse = np.divide(1.0, sums, out=np.zeros_like(sums), where=sums > 0)
  out = sp.csr_matrix(sp.diags(inverse) @ matrix)
  out.data = out.data ** alpha
  return out


def walk_blocks(train: sp.csr_matrix, alpha: float, beta: float) -> item_item.RowBlock:
  """The unpruned RP3beta matrix, by blocks of rows.

  Args:
    train: bool CSR [U, I].
    alpha: exponent of the transition probabilities.
    beta: popularity penalty: column j is divided by degree(j) ** beta.

  Returns:
    `(start, stop) -> float64[stop - start, I]`, rows of P_iu @ P_ui with the penalty (the
    diagonal not yet zeroed).
  """
  x = sp.csr_matrix(train, dtype=np.float64)
  p_ui = _row_normalised(x, alpha)
  p_iu = _row_normalised(sp.csr_matrix(x.T), alpha)
  degree = np.asarray(x.sum(axis=0)).ravel()
  penalty = np.zeros_like(degree)
  np.power(degree, -beta, out=penalty, where=degree > 0)

  def block(start: int, stop: int) -> np.ndarray:
    return (p_iu[start:stop] @ p_ui).toarray() * penalty[None, :]

  return block


def fit(config, train: sp.csr_matrix, *, key=None) -> dict:
  """The RP3beta item-item matrix, with the training rows.

  Args:
    config: reads `rp3_alpha`, `rp3_beta`, `rp3_top_k`.
    train: bool CSR [U, I].
    key: unused (deterministic).

  Returns:
    {"W": float32[I, I], "indptr": int32[U + 1], "indices": int32[nnz]}.
  """
  del key
  block = walk_blocks(train, config.rp3_alpha, config.rp3_beta)
  w = item_item.build(block, train.shape[1], config.rp3_top_k)
  return item_item.params_from(w, train)


def similar(params: dict, item: int) -> jax.Array:
  """float32[I]: the walk's scores from `item` to every item (row `item` of W; itself 0)."""
  return item_item.row(params, item)


def describe(config) -> str:
  kept = f"top {config.rp3_top_k} per item" if config.rp3_top_k else "all neighbours"
  return f"RP3beta, alpha {config.rp3_alpha:g}, beta {config.rp3_beta:g}, {kept}"


MODEL = base.Model(name="rp3beta", fit=fit, score=item_item.score,
                   params_like=item_item.params_like, describe=describe,
                   make_score_fn=item_item.make_score_fn, similar=similar)
