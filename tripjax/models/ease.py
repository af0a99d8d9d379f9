"""EASE (Steck 2019, "Embarrassingly Shallow Autoencoders"): one regularised Gram inverse.

With X the 0/1 training matrix [U, I] and lambda = `config.ease_lambda`:
  G = X^T X + lambda Id,  P = G^-1,  B = -P / diag(P) (column j divided by P_jj), diag(B) = 0,
and a user scores the items by her training row times B. G is accumulated on the device over
fixed-size blocks of users (`user_rows.dense_rows`), then inverted by a Cholesky solve; the
params keep B and the training rows (`user_rows.csr_params`), which the scores need.

A user without training items would score 0 everywhere (her row is empty); she is scored by
popularity instead (`item_item.popularity_fallback`): her scores are the items' training counts,
the `popularity` model's scores, so her top-k lists are the most popular items.

The fit holds a few float32[I, I] matrices at once, so it is refused (`ResourceExhausted`, before
allocating anything) when they do not fit in the device's free memory (`MEMORY_LIMIT_BYTES`
when set, else what JAX reports, else `DEFAULT_MEMORY_LIMIT_BYTES`).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from tripjax import errors
from tripjax.models import base
from tripjax.models import item_item
from tripjax.models import user_rows

# float32[I, I] matrices alive at once during the fit (G or its factor, identity, P, B).
FIT_MATRICES = 4
# The memory the fit may use; None: the device's free memory, else the default below.
MEMORY_LIMIT_BYTES: int | None = None
DEFAULT_MEMORY_LIMIT_BYTES = 8 * 2**30
# Users per block when accumulating X^T X on the device.
GRAM_BLOCK_USERS = 256

_HIGHEST = jax.lax.Precision.HIGHEST


def fit_bytes(num_items: int) -> int:
  """Bytes of the `FIT_MATRICES` float32[I, I] matrices the fit holds at once."""
  return FIT_MATRICES * 4 * int(num_items) ** 2


def memory_limit() -> int:
  """The bytes the fit may use: `MEMORY_LIMIT_BYTES`, else the device's free memory, else
  `DEFAULT_MEMORY_LIMIT_BYTES` (JAX reports no memory for CPU devices)."""
  if MEMORY_LIMIT_BYTES is not None:
    return int(MEMORY_LIMIT_BYTES)
  stats = jax.devices()[0].memory_stats() or {}
  if "bytes_limit" in stats:
    return int(stats["bytes_limit"]) - int(stats.get("bytes_in_use", 0))
  return DEFAULT_MEMORY_LIMIT_BYTES


def check_memory(num_items: int) -> None:
  """Raises ResourceExhausted (one line) when the fit's matrices would exceed `memory_limit()`."""
  need, limit = fit_bytes(num_items), memory_limit()
  if need > limit:
    raise errors.ResourceExhausted(
        f"--model=ease: {num_items} items need about {need / 2**30:.3g} GiB for the item-item "
        f"matrices, over the {limit / 2**30:.3g} GiB available; keep fewer items (drop rare "
        "ones) or use another --model.")


@functools.partial(jax.jit, static_argnums=(3, 4, 5))
def _closed_form(indptr, indices, lam, num_items: int, max_length: int, block: int):
  """B = -P / diag(P), diag(B) = 0, with P = (X^T X + lam Id)^-1: float32[I, I]."""
  num_users = indptr.shape[0] - 1
  num_blocks = -(-num_users // block)
  # One empty row (user U) pads the last block.
  indptr = jnp.concatenate([indptr, indptr[-1:]])

  def add_block(b, gram):
    users = jnp.minimum(b * block + jnp.arange(block, dtype=jnp.int32), num_users)
    rows = user_rows.dense_rows(indptr, indices, users, num_items, max_length)
    return gram + jnp.matmul(rows.T, rows, precision=_HIGHEST)

  gram = jnp.zeros((num_items, num_items), jnp.float32)
  if indices.shape[0]:
    gram = jax.lax.fori_loop(0, num_blocks, add_block, gram)
  gram = gram + lam * jnp.eye(num_items, dtype=jnp.float32)
  factor = jax.scipy.linalg.cho_factor(gram, lower=True)
  p = jax.scipy.linalg.cho_solve(factor, jnp.eye(num_items, dtype=jnp.float32))
  weights = -p / jnp.diagonal(p)[None, :]
  return jnp.fill_diagonal(weights, 0.0, inplace=False)


def fit(config, train, *, key=None) -> dict:
  """The closed-form item-item weights.

  Args:
    config: a `TrainConfig`; `ease_lambda` is read.
    train: bool CSR [U, I].
    key: unused (the fit is deterministic).

  Returns:
    {"B": float32[I, I], "indptr": int32[U + 1], "indices": int32[nnz]}.

  Raises:
    errors.ResourceExhausted: the [I, I] matrices would not fit (`check_memory`).
  """
  del key
  num_users, num_items = train.shape
  check_memory(num_items)
  rows = user_rows.csr_params(train)
  block = max(1, min(GRAM_BLOCK_USERS, num_users))
  weights = _closed_form(rows["indptr"], rows["indices"], jnp.float32(config.ease_lambda),
                         num_items, user_rows.max_row_length(train.indptr), block)
  return {"B": weights, **rows}


def _score_rows(params: dict, users: jax.Array, max_length: int) -> jax.Array:
  """The users' training rows times B (popularity for empty rows): float32[B, I]."""
  num_items = params["B"].shape[0]
  if not params["indices"].shape[0]:  # no training entries: every row is empty, every count 0
    return jnp.zeros((users.shape[0], num_items), jnp.float32)
  rows = user_rows.dense_rows(params["indptr"], params["indices"], users, num_items, max_length)
  scores = jnp.matmul(rows, params["B"], precision=_HIGHEST)
  return item_item.popularity_fallback(scores, params["indptr"], params["indices"], users)


def score(params: dict, users: jax.Array) -> jax.Array:
  """float32[B, I] scores of `users` int32[B]; jit-able.

  A user without training items gets the items' training counts (`popularity_fallback`).

  The rows' static bound comes from the shapes (a row has at most min(I, nnz) items);
  `make_score_fn` uses the tighter host-side `max_row_length`.
  """
  return _score_rows(params, users, min(params["B"].shape[0], params["indices"].shape[0]))


@functools.partial(jax.jit, static_argnums=3)
def _jit_scores(params, users, offset, max_length: int):
  scores = _score_rows(params, users, max_length)
  return scores if offset is None else scores + offset[None, :]


def make_score_fn(params: dict, item_offset: np.ndarray | None = None):
  """The model as a `tripjax.metrics.ScoreFn` (rows bounded by the longest training row).

  Args:
    params: as `fit` returns them.
    item_offset: optional float32[I] added to every user's scores.

  Returns:
    `users: int32[B] -> float32[B, I]`, one compiled program per block size.
  """
  max_length = user_rows.max_row_length(params["indptr"])
  params = jax.tree.map(jnp.asarray, params)
  num_items = params["B"].shape[0]
  offset = None if item_offset is None else jnp.asarray(item_offset, jnp.float32)
  if offset is not None and offset.shape != (num_items,):
    raise errors.InvalidInput(f"item_offset must be float32[{num_items}] (one per item), got "
                              f"shape {offset.shape}.")
  return lambda users: _jit_scores(params, jnp.asarray(users, jnp.int32), offset, max_length)


def params_like(config, train) -> dict:
  """The params' abstract shapes (a checkpoint's restore target).

  Takes the training matrix, not only (U, I): the stored rows' length is its nnz.

  Args:
    config: unused.
    train: bool CSR [U, I], the run's training matrix.

  Returns:
    {"B": float32[I, I], "indptr": int32[U + 1], "indices": int32[nnz]} as ShapeDtypeStructs.
  """
  del config
  num_users, num_items = train.shape
  return {"B": jax.ShapeDtypeStruct((num_items, num_items), jnp.float32),
          **user_rows.csr_like(num_users, train.nnz)}


MODEL = base.Model(name="ease", fit=fit, score=score, params_like=params_like,
                   describe=lambda config: f"lambda {config.ease_lambda:g}",
                   make_score_fn=make_score_fn)
