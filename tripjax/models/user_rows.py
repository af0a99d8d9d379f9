"""The training rows of a block of users, on the device, for models that score from them.

Item-item models (EASE, RP3beta, item-kNN) and graph walks score a user from the items in her
training row: `scores = rows @ W`. The rows live in the params as the CSR arrays of the training
matrix (with its values when they are not all 1: EASE on the low or high ratings), and `dense_rows`
expands a block of them into a float32[B, I] matrix inside jit.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import scipy.sparse as sp


def csr_params(train: sp.csr_matrix, valued: bool = False) -> dict:
  """The training matrix as params: {"indptr": int32[U + 1], "indices": int32[nnz]}, and
  with `valued` "values": float32[nnz], its entries' values (EASE on the low or high
  ratings)."""
  params = {"indptr": jnp.asarray(train.indptr, jnp.int32),
            "indices": jnp.asarray(train.indices, jnp.int32)}
  if valued:
    params["values"] = jnp.asarray(train.data, jnp.float32)
  return params


def csr_like(num_users: int, nnz: int, valued: bool = False) -> dict:
  """The abstract shapes of `csr_params(train, valued)` (a checkpoint's restore target)."""
  like = {"indptr": jax.ShapeDtypeStruct((num_users + 1,), jnp.int32),
          "indices": jax.ShapeDtypeStruct((nnz,), jnp.int32)}
  if valued:
    like["values"] = jax.ShapeDtypeStruct((nnz,), jnp.float32)
  return like


def max_row_length(indptr) -> int:
  """The longest training row (a static bound for `dense_rows`); host-side."""
  indptr = np.asarray(indptr)
  return int(np.max(np.diff(indptr))) if indptr.size > 1 else 0


def dense_rows(indptr: jax.Array, indices: jax.Array, users: jax.Array, num_items: int,
               max_length: int, values: jax.Array | None = None) -> jax.Array:
  """The training rows of `users` as a dense matrix: 0/1, or the entries' `values`.

  Args:
    indptr: int32[U + 1], the CSR row pointers.
    indices: int32[nnz], the CSR column indices.
    users: int32[B], row indices.
    num_items: I (static).
    max_length: the longest row, `max_row_length(indptr)` (static).
    values: optional float32[nnz], the entries' values (default 1).

  Returns:
    float32[B, I], the entry's value (1 without `values`) where the user has the item in
    training, else 0.
  """
  start, stop = indptr[users], indptr[users + 1]
  slots = start[:, None] + jnp.arange(max(max_length, 1), dtype=jnp.int32)[None, :]
  valid = slots < stop[:, None]
  clipped = jnp.minimum(slots, indices.shape[0] - 1)
  items = jnp.where(valid, indices[clipped], num_items)
  rows = jnp.zeros((users.shape[0], num_items + 1), jnp.float32)
  rows = rows.at[jnp.arange(users.shape[0])[:, None], items].set(
      1.0 if values is None else values[clipped])
  return rows[:, :num_items]
