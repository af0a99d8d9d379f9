"""EASE (Steck 2019, "Embarrassingly Shallow Autoencoders"): one regularised Gram inverse.

With X the 0/1 training matrix [U, I] (with `--low_rating_weight=w` the low ratings are entries
of value w, with `--high_rating_weight=h` the liked ratings >= `--high_rating_floor` entries of
value h: `registry.observed`) and lambda = `config.ease_lambda`:
  G = X^T X + lambda Id,  P = G^-1,  B = -P / diag(P) (column j divided by P_jj), diag(B) = 0,
and a user scores the items by her training row times B. The params keep B and the training
rows (`user_rows.csr_params`), which the scores need.

X^T X is a sparse product: it costs sum_u n_u^2 multiply-adds (n_u: the user's training items;
1.7e9 for the ML-20M-shaped matrix of `benchmarks/item_item_fit.py`, about 40 s on one CPU core)
where dense blocks of users would cost 2 U I^2 flops (2e14 there). It is made on
the host with scipy.sparse (float32 counts, exact below 2^24 users), one block of G's rows at a
time (`gram_row_blocks`: about `GRAM_BLOCK_ELEMENTS` entries each), and each block is written
into G on the device in place (a donated `dynamic_update_slice`), so neither the host nor the
device ever holds a second [I, I] matrix while G is built. G is then inverted on the device by a
Cholesky solve.

A user without training items would score 0 everywhere (her row is empty); she is scored by
popularity instead (`item_item.popularity_fallback`): her scores are the items' training counts,
the `popularity` model's scores, so her top-k lists are the most popular items (with low ratings
they are entries too: a user with only those is scored from them, and the counts include them).

The fit holds a few float32[I, I] matrices at once (`FIT_MATRICES`), so it is refused
(`ResourceExhausted`, before allocating anything) when they do not fit in the device's free
memory (`MEMORY_LIMIT_BYTES` when set, else what JAX reports, else `DEFAULT_MEMORY_LIMIT_BYTES`).
"""

from __future__ import annotations

import functools
from typing import Iterator

import jax
import jax.numpy as jnp
import numpy as np
import scipy.sparse as sp

from tripjax import errors
from tripjax.data import registry
from tripjax.models import base
from tripjax.models import item_item
from tripjax.models import user_rows

# float32[I, I] matrices alive at once during the fit: G while it is built (the host holds only
# one block of rows, `GRAM_BLOCK_ELEMENTS`), then in the jitted closed form G (donated), its
# Cholesky factor, the identity right-hand side and P = G^-1, whose elementwise scaling into B
# XLA does in place. Measured on CPU (peak RSS over a no-fit baseline): 3.5 of them at 4,000
# items, 3.2 at 8,000, 2.9 at 26,744 (benchmarks/item_item_fit.py); 4 bounds them all.
FIT_MATRICES = 4
# The memory the fit may use; None: the device's free memory, else the default below.
MEMORY_LIMIT_BYTES: int | None = None
DEFAULT_MEMORY_LIMIT_BYTES = 8 * 2**30
# Entries of G per host-side block of its rows (2^24: 64 MiB dense float32, plus the block's
# sparse product, at most twice that).
GRAM_BLOCK_ELEMENTS = 1 << 24

_HIGHEST = jax.lax.Precision.HIGHEST


def fit_bytes(num_items: int) -> int:
  """Bytes of the `FIT_MATRICES` float32[I, I] matrices the fit holds at once."""
  return FIT_MATRICES * 4 * int(num_items) ** 2


def memory_limit() -> int:
  """The bytes the fit may use: `MEMORY_LIMIT_BYTES`, else the device's free memory, else
  `DEFAULT_MEMORY_LIMIT_BYTES` (JAX reports no memory for CPU devices)."""
  if MEMORY_LIMIT_BYTES is not None:
    return int(MEMORY_LIMIT_BYTES)
  stats = jax.local_devices()[0].memory_stats() or {}
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


def gram_row_blocks(train: sp.csr_matrix,
                    block_items: int | None = None) -> Iterator[tuple[int, np.ndarray]]:
  """X^T X one block of rows at a time, as sparse products on the host.

  Rows start..stop of X^T X are X[:, start:stop]^T X: each block costs the sum, over the
  block's items, of their users' training counts, so all blocks together cost sum_u n_u^2.

  Args:
    train: CSR [U, I], the training matrix X (bool, or float: its values).
    block_items: rows per block; default about `GRAM_BLOCK_ELEMENTS` entries.

  Yields:
    (start, float32[stop - start, I]) for start = 0, block_items, ...: rows start..stop of
    X^T X (co-occurrence counts, exact in float32 below 2^24 users).
  """
  num_items = train.shape[1]
  block_items = block_items or max(1, GRAM_BLOCK_ELEMENTS // max(num_items, 1))
  x = sp.csr_matrix(train, dtype=np.float32)  # [U, I]
  xt = x.T.tocsr()  # [I, U]: row i lists item i's users
  for start in range(0, num_items, block_items):
    stop = min(start + block_items, num_items)
    yield start, (xt[start:stop] @ x).toarray()


@functools.partial(jax.jit, donate_argnums=0)
def _set_rows(gram, rows, start):
  """gram float32[I, I] with rows start.. replaced by `rows` float32[b, I] (in place)."""
  return jax.lax.dynamic_update_slice(gram, rows, (start, jnp.int32(0)))


def device_gram(train: sp.csr_matrix, block_items: int | None = None) -> jax.Array:
  """X^T X on the device, float32[I, I], written one host-made block of rows at a time."""
  num_items = train.shape[1]
  gram = jnp.zeros((num_items, num_items), jnp.float32)
  for start, rows in gram_row_blocks(train, block_items):
    gram = _set_rows(gram, rows, jnp.int32(start))
  return gram


@functools.partial(jax.jit, donate_argnums=0)
def _closed_form(gram, lam):
  """B = -P / diag(P), diag(B) = 0, with P = (gram + lam Id)^-1: float32[I, I] (gram donated)."""
  num_items = gram.shape[0]
  eye = jnp.eye(num_items, dtype=jnp.float32)
  factor = jax.scipy.linalg.cho_factor(gram + lam * eye, lower=True)
  p = jax.scipy.linalg.cho_solve(factor, eye)
  weights = -p / jnp.diagonal(p)[None, :]
  return jnp.fill_diagonal(weights, 0.0, inplace=False)


def fit(config, train, *, key=None) -> dict:
  """The closed-form item-item weights.

  Args:
    config: a `TrainConfig`; `ease_lambda` is read, and `low_rating_weight`: when > 0 the
      run's low ratings are entries of X of that value, and `high_rating_weight` its high
      ones' (`registry.observed`).
    train: bool CSR [U, I].
    key: unused (the fit is deterministic).

  Returns:
    {"B": float32[I, I], "indptr": int32[U + 1], "indices": int32[nnz]}, and "values":
    float32[nnz] with low or high ratings (X's rows, which the scores need; nnz counts the low
    ones too).

  Raises:
    errors.ResourceExhausted: the [I, I] matrices would not fit (`check_memory`).
    errors.InvalidInput: `ease_lambda` too small for the Cholesky factorisation in float32
      (an item none of the rows holds leaves X^T X singular).
  """
  del key
  check_memory(train.shape[1])
  train = registry.observed(config, train)
  weights = _closed_form(device_gram(train), jnp.float32(config.ease_lambda))
  if not bool(jnp.isfinite(weights).all()):
    raise errors.InvalidInput(
        f"--ease_lambda={config.ease_lambda:g} leaves X^T X + lambda I too close to singular "
        "for float32 (the weights are not finite); raise it (ml100k_ease.cfg uses 1000).")
  return {"B": weights, **user_rows.csr_params(train, valued=train.dtype != bool)}


def _score_rows(params: dict, users: jax.Array, max_length: int) -> jax.Array:
  """The users' training rows times B (popularity for empty rows): float32[B, I]."""
  num_items = params["B"].shape[0]
  if not params["indices"].shape[0]:  # no training entries: every row is empty, every count 0
    return jnp.zeros((users.shape[0], num_items), jnp.float32)
  rows = user_rows.dense_rows(params["indptr"], params["indices"], users, num_items, max_length,
                              params.get("values"))
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

  Takes the training matrix, not only (U, I): the stored rows' length is its nnz (with the
  run's low ratings when it trains on them; "values" with low or high ratings).

  Args:
    config: a `TrainConfig` (its low and high ratings' settings).
    train: bool CSR [U, I], the run's training matrix.

  Returns:
    `fit`'s params as ShapeDtypeStructs.
  """
  train = registry.observed(config, train)
  num_users, num_items = train.shape
  return {"B": jax.ShapeDtypeStruct((num_items, num_items), jnp.float32),
          **user_rows.csr_like(num_users, train.nnz, valued=train.dtype != bool)}


def describe(config) -> str:
  return f"lambda {config.ease_lambda:g}" + base.describe_ratings(config, "entries", "value")


MODEL = base.Model(name="ease", fit=fit, score=score, params_like=params_like,
                   describe=describe,
                   make_score_fn=make_score_fn)
